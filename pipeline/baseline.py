"""The `baseline` stage: a random forest on the image store's raw pixels.

It is the number CNN features have to beat. Writes::

    reports/metrics/pixel_rf.json
    reports/plots/pixel_rf-confusion.csv   (DVC confusion plot)
    reports/plots/pixel_rf-confusion.png

The forest itself is not kept: at full Fashion-MNIST size it is hundreds of
megabytes, and only its scores are compared.
"""

import click

from pipeline import paths
from pipeline.options import images_option, params_option, read_params
from pipeline.params import override

NAME = "pixel_rf"


def load_pixels(images):
    """Both splits of the image store as pixel matrices in [0, 1], with what the store says of itself.

    Returns
    -------
    splits : dict of split name to ``(X, y)``; X ndarray of shape
        (n_samples, height * width * channels), float32; y ndarray of shape (n_samples,)
    class_names : list of str
    data : dict, :func:`~classifiers.evaluation.data_record` of the store
    """
    from classifiers.evaluation import data_record
    from classifiers.pixels import pixel_matrix
    from features.image_store import ImageStore

    with ImageStore(images) as store:
        splits = {split: (pixel_matrix(store.images(split)), store.labels(split)) for split in ("train", "test")}
        return splits, store.class_names, data_record(store.attrs)


@click.command()
@params_option
@images_option
@click.option("--n-jobs", type=int, default=None, help="Trees grown in parallel; -1 = every core. Default: baseline.n_jobs.")
def baseline(params_path, images, n_jobs):
    """Random forest on raw pixels: the baseline CNN features are compared with."""
    # Imported here, not at the top, so that `featpipe --help` does not pay for scikit-learn.
    from classifiers.evaluation import check_training_data, fit_and_evaluate, write_evaluation
    from classifiers.pixels import pixel_forest

    params = override(read_params(params_path), "baseline", n_jobs=n_jobs)
    options = params["baseline"]
    data, class_names, description = load_pixels(images)
    check_training_data(*data["train"], f"{images} train")
    X_train = data["train"][0]
    click.echo(f"baseline: random forest, {options['n_estimators']} trees, on {X_train.shape[0]} x {X_train.shape[1]} pixels", err=True)
    forest = pixel_forest(params["seed"], **options)
    _, predicted, metrics = fit_and_evaluate(forest, *data["train"], *data["test"], class_names)
    record = {
        "model": NAME,
        "classifier": "rf",
        **metrics,
        "features": "pixels",
        "backbone": "pixels",
        "layer": None,
        "weights": None,
        "random_weights": False,
        "params": options,
        "seed": params["seed"],
        "data": description,
    }
    csv_path, png_path = paths.confusion_files(NAME)
    write_evaluation(record, data["test"][1], predicted, class_names,
                     metrics_path=paths.BASELINE_METRICS, confusion_csv=csv_path, confusion_png=png_path)
    click.echo(f"{NAME}: accuracy {record['accuracy']:.4f} (fit {record['fit_seconds']:.1f} s) -> {paths.BASELINE_METRICS}")
