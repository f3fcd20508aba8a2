"""The `train` stage: every classifier on every feature file, scored on the test split.

For each feature file (default: one per ``extract.backbones`` entry) and each
classifier (default: ``train.classifiers``) it writes::

    data/models/<features>-<classifier>/model.skops     (model.keras for the dense head)
    reports/metrics/<features>-<classifier>.json
    reports/plots/<features>-<classifier>-confusion.csv   (DVC confusion plot)
    reports/plots/<features>-<classifier>-confusion.png

``<features>`` is the feature file's stem, e.g. ``vgg16-fc2``. Everything is
checked before the first fit: the files are complete, made from the current
image store, and fit for every classifier asked for.
"""

import click

from pipeline import paths
from pipeline.inputs import checked_feature_file, store_description
from pipeline.options import features_option, images_option, params_option, scheduler_option
from pipeline.stage import stage_params
from plumbing.errors import FeatpipeError

# scikit-learn, h5py and the classifiers are imported where they are used, so
# that `featpipe --help` does not pay for them.


def check_plan(feature_paths, names, settings, seed, store):
    """Everything that can be checked before the first fit; returns each file's metadata.

    Refuses unknown classifiers, missing, incomplete or mismatched feature
    files, single-class training sets, training sets a classifier can't fit
    (a probe's cross-validation with one row of a class) and bad search
    grids or folds.
    """
    from classifiers import build, check_names
    from classifiers.evaluation import check_labels
    from classifiers.search import check_folds, check_grid
    from classifiers.training import check_fit

    check_names(names)
    search = settings["search"]
    plans = []
    for path in feature_paths:
        metadata, labels = checked_feature_file(path, store)
        check_labels(labels, f"{path} train")
        for name in names:
            estimator = build(name, seed, **settings.get(name, {}))
            try:
                check_fit(name, settings.get(name, {}), seed, labels)
            except FeatpipeError as error:
                raise FeatpipeError(f"{path}: {error}") from None
            grid = search_grid(search, name)
            if grid:
                check_grid(estimator, grid, name)
                check_folds(labels, search["cv"])
        plans.append((path, metadata))
    return plans


def search_grid(search, name):
    """The grid for classifier ``name`` when the search is on, else ``None``."""
    return search["grids"].get(name) if search["enabled"] else None


def train_feature_file(path, metadata, names, settings, seed, store):
    """Fit every classifier in ``names`` on one feature file and write its outputs."""
    from classifiers import get, train_and_score
    from classifiers.evaluation import check_finite, check_training_data
    from classifiers.training import check_fit
    from classifiers.records import write_model_outputs
    from storage.feature_store import extractor_settings, load_features

    train, test = load_features(path, "train"), load_features(path, "test")
    check_training_data(train.features, train.labels, f"{path} train")
    check_finite(test.features, f"{path} test")
    for name in names:
        grid = search_grid(settings["search"], name)
        model_id = paths.model_name(path, name)
        click.echo(f"train: {model_id} on {train.features.shape[0]} x {train.features.shape[1]} features"
                   + (" (grid search)" if grid else ""), err=True)
        note = check_fit(name, settings.get(name, {}), seed, train.labels)
        if note:
            click.echo(f"train: {note}", err=True)
        model, predicted, metrics = train_and_score(
            name, settings.get(name, {}), seed, (train.features, train.labels), (test.features, test.labels),
            store["class_names"], grid=grid, cv=settings["search"]["cv"],
        )
        record = model_record(model_id, name, settings.get(name, {}), seed, path, metadata, store, metrics)
        entry = get(name)
        click.echo(write_model_outputs(
            record, paths.model_files(model_id, entry.suffix), y_true=test.labels, y_pred=predicted,
            class_names=store["class_names"], model=model, save=entry.save, image_shape=store["image_shape"],
            extractor=extractor_settings(metadata),
        ))


def model_record(model_id, classifier, options, seed, path, metadata, store, metrics):
    """The :class:`~classifiers.records.ModelRecord` of one model on one feature file."""
    from classifiers.records import ModelRecord

    weights = metadata.get("weights")
    return ModelRecord(
        model=model_id, classifier=classifier, input="features", **metrics,
        features=paths.feature_name(path), feature_file=str(path), backbone=metadata.get("backbone"),
        layer=metadata.get("layer"), weights=weights, random_weights=weights == "none",
        params=dict(options), seed=seed,
        data={key: value for key, value in store.items() if key not in ("path", "class_names", "image_shape")},
    )


def record_names(params):
    """The models this stage trains: every feature file of ``extract.backbones`` x ``train.classifiers``."""
    return [
        paths.model_name(features, classifier)
        for features in paths.feature_files(params["extract"]["backbones"])
        for classifier in params["train"]["classifiers"]
    ]


@click.command()
@params_option
@images_option
@features_option
@click.option(
    "--classifier", "classifier_names", multiple=True, metavar="NAME",
    help="Classifier to train (repeatable): dense, knn, logreg, rf, svm; default: train.classifiers.",
)
@scheduler_option
def train(params_path, images, feature_paths, classifier_names, scheduler):
    """Train shallow learners on CNN features; write models, metrics and confusion matrices."""
    from classifiers.fanout import joblib_backend

    params = stage_params(params_path)
    settings = params["train"]
    names = list(dict.fromkeys(classifier_names or settings["classifiers"]))
    feature_paths = list(feature_paths) or paths.feature_files(params["extract"]["backbones"])
    store = store_description(images)
    plans = check_plan(feature_paths, names, settings, params["seed"], store)
    with joblib_backend(scheduler or settings["scheduler"]) as client:
        if client is not None:
            click.echo(f"train: scikit-learn work goes to the Dask scheduler at {client.scheduler.address}", err=True)
        for path, metadata in plans:
            train_feature_file(path, metadata, names, settings, params["seed"], store)
