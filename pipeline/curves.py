"""The `curves` stage: what are the features worth with 5, 10, ... 200 labels per class?

For every size in ``curves.per_class`` and every repeat, one stratified draw
of the training split; the pixel forest (``baseline`` settings) and every
classifier of ``curves.classifiers`` (default ``train.classifiers``, each with
its ``train.<name>`` settings) on every feature file are fitted on the same
draws and scored on the whole test split. It reuses the extracted features
and the image store: nothing is extracted again. Writes ``reports/curves/``::

    curves.json                 every model's accuracies per size and repeat, mean, std,
                                fit seconds, the rows of every draw, and the one sentence
    curves.csv                  long form (model, per_class, repeat, accuracy): a DVC plot
    curves.png                  accuracy against images per class, +-1 std bands
    embedding-<features>.png    2-D t-SNE of up to 2,000 test rows, coloured by class
    embedding-pixels.png
"""

import functools

import click

from pipeline import paths
from pipeline.inputs import checked_feature_file, load_pixels, store_description
from pipeline.options import images_option, params_option, scheduler_option
from pipeline.stage import params_key, stage_params

def classifier_names(params):
    """``curves.classifiers``, or ``train.classifiers`` when it is null; an unknown name names the key."""
    from classifiers import check_names

    names = params["curves"]["classifiers"] or params["train"]["classifiers"]
    with params_key("curves.classifiers" if params["curves"]["classifiers"] else "train.classifiers"):
        return check_names(list(dict.fromkeys(names)))


def curve_models(params, feature_paths, names, pixels, store):
    """The pixel forest and every classifier on every feature file, as :class:`~learning_curves.curves.CurveModel`."""
    from classifiers import build
    from learning_curves.curves import CurveModel
    from features.feature_store import load_features

    models = [CurveModel(paths.BASELINE_MODEL, "pixels", "rf", functools.partial(build, "rf", **params["baseline"]),
                         pixels["train"][0], pixels["test"][0], baseline=True)]
    weights = {}
    for path in feature_paths:
        metadata, _ = checked_feature_file(path, store)
        train, test = load_features(path, "train"), load_features(path, "test")
        features = paths.feature_name(path)
        weights[features] = metadata.get("weights")
        for name in names:
            models.append(CurveModel(paths.model_name(path, name), features, name,
                                     functools.partial(build, name, **params["train"][name]),
                                     train.features, test.features))
    return models, weights


def write_curves(summary, results, weights):
    """curves.json, curves.csv and curves.png."""
    from learning_curves.curves import curve_table
    from classifiers.evaluation import write_csv, write_json
    from reporting.plots import save_curves_png

    summary = {**summary, "weights": weights, "random_weights": sorted(name for name, w in weights.items() if w == "none")}
    write_json(paths.CURVES_JSON, summary, compact=("draws",))
    write_csv(paths.CURVES_CSV, ["model", "per_class", "repeat", "accuracy"], curve_table(results))
    title = "Test accuracy against labelled images per class"
    if summary["random_weights"]:
        title += f"\nWARNING: random weights ({', '.join(summary['random_weights'])}): not ImageNet features"
    save_curves_png(paths.CURVES_PNG, summary, title=title)


def draw_embeddings(models, y_test, class_names, seed, weights):
    """A t-SNE picture of the test rows of the pixels and of every feature file."""
    from learning_curves.embeddings import embedding_rows, tsne_embedding
    from reporting.plots import save_embedding_png

    rows = embedding_rows(y_test, seed=seed)
    shown = {}
    for model in models:
        shown.setdefault(model.features, model.X_test)
    for features, X_test in shown.items():
        click.echo(f"curves: t-SNE of {len(rows)} test rows of {features}", err=True)
        random = " (random weights: not ImageNet features)" if weights.get(features) == "none" else ""
        save_embedding_png(paths.embedding_png(features), tsne_embedding(X_test[rows], seed), y_test[rows],
                           class_names, f"{features}: t-SNE of {len(rows)} test images{random}")


@click.command()
@params_option
@images_option
@click.option(
    "--features", "feature_paths", multiple=True, type=click.Path(dir_okay=False),
    help="Feature file (repeatable); default: one per extract.backbones entry.",
)
@click.option("--repeats", type=int, default=None, help="Draws per size  [curves.repeats]")
@scheduler_option
def curves(params_path, images, feature_paths, repeats, scheduler):
    """Learning curves: test accuracy against labelled images per class, for the pixel forest and every model."""
    from learning_curves.curves import draw_subsets, fit_curves, summarise_curves
    from classifiers.fanout import joblib_backend

    params = stage_params(params_path, section="curves", repeats=repeats)
    names = classifier_names(params)
    feature_paths = list(feature_paths) or paths.feature_files(params["extract"]["backbones"])
    store = store_description(images)
    pixels, class_names, _ = load_pixels(images)
    models, weights = curve_models(params, feature_paths, names, pixels, store)
    y_train, y_test = pixels["train"][1], pixels["test"][1]
    plan = draw_subsets(y_train, params["curves"]["per_class"], params["curves"]["repeats"], params["seed"], class_names)
    for note in plan.left_out:
        click.echo(f"curves: {note['per_class']} images per class left out: {note['reason']}", err=True)
    click.echo(f"curves: {len(models)} models x {len(plan.draws)} draws ({len(plan.per_class)} sizes x "
               f"{plan.repeats} repeats)", err=True)
    with joblib_backend(scheduler or params["train"]["scheduler"]):
        results = fit_curves(models, y_train, y_test, plan.draws)
    summary = summarise_curves(models, plan, results)
    write_curves(summary, results, weights)
    draw_embeddings(models, y_test, class_names, params["seed"], weights)
    if summary["sentence"]:
        click.echo(summary["sentence"])
    click.echo(f"curves: {len(results)} fits -> {paths.CURVES_DIR}/")
