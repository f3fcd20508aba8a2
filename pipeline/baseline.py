"""The `baseline` stage: a random forest on the image store's raw pixels.

It is the number CNN features have to beat: the registry's ``rf`` with the
setting published for Fashion-MNIST (``baseline`` in params.yaml). Writes the
files of every model record (:mod:`classifiers.records`)::

    data/models/pixel_rf/model.skops, model.json
    reports/metrics/pixel_rf.json
    reports/plots/pixel_rf-confusion.csv   (DVC confusion plot)
    reports/plots/pixel_rf-confusion.png
"""

import click

from pipeline import paths
from pipeline.inputs import load_pixels, store_description
from pipeline.options import images_option, params_option
from pipeline.stage import stage_params

NAME = paths.BASELINE_MODEL


def record_names(params):
    """The model this stage trains."""
    return [NAME]


def forest_options(params):
    """The ``rf`` builder's options for the pixel forest (``baseline`` in params)."""
    return dict(params["baseline"])


@click.command()
@params_option
@images_option
@click.option("--n-jobs", type=int, default=None, help="Trees grown in parallel; -1 = every core. Default: baseline.n_jobs.")
def baseline(params_path, images, n_jobs):
    """Random forest on raw pixels: the baseline CNN features are compared with."""
    # Imported here, not at the top, so that `featpipe --help` does not pay for scikit-learn.
    from classifiers import build, get
    from classifiers.evaluation import check_training_data, fit_and_evaluate
    from classifiers.records import ModelRecord, write_model_outputs

    params = stage_params(params_path, section="baseline", n_jobs=n_jobs)
    options = forest_options(params)
    data, class_names, description = load_pixels(images)
    check_training_data(*data["train"], f"{images} train")
    X_train = data["train"][0]
    click.echo(f"baseline: random forest, {options['n_estimators']} trees, on {X_train.shape[0]} x {X_train.shape[1]} pixels", err=True)
    forest = build("rf", params["seed"], **options)
    forest, predicted, metrics = fit_and_evaluate(forest, *data["train"], *data["test"], class_names)
    record = ModelRecord(
        model=NAME, classifier="rf", input="pixels", **metrics, features="pixels", backbone="pixels",
        params=options, seed=params["seed"], data=description,
    )
    entry = get("rf")
    click.echo(write_model_outputs(
        record, paths.model_files(NAME, entry.suffix), y_true=data["test"][1], y_pred=predicted,
        class_names=class_names, model=forest, save=entry.save, image_shape=store_description(images)["image_shape"],
    ))
