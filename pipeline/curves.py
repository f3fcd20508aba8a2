"""The `curves` stage: what are the features worth with 5, 10, ... 200 labels per class?

For every size in ``curves.per_class`` and every repeat, one stratified draw
of the training split (``all``: the whole split, one draw); the pixel forest (``baseline`` settings) and every
classifier of ``curves.classifiers`` (default ``train.classifiers``, each with
its ``train.<name>`` settings) on every feature file are fitted on the same
draws and scored on the whole test split; with ``curves.cnn`` (on by default)
so are the CNN from scratch (``scratch`` settings) and every fine-tuned
backbone of ``finetune.backbones`` (``finetune`` settings, ``extract.weights``),
and the sentences say at which size the CNN first matches the best feature
model. It reuses the extracted features and the image store: nothing is
extracted again. Writes ``reports/curves/``::

    curves.json                 every model's accuracies per size and repeat, mean, std,
                                fit seconds, the rows of every draw, and the sentences
    curves.csv                  long form (model, per_class, repeat, accuracy): a DVC plot
    curves.png                  accuracy against images per class, +-1 std bands
    embedding-<features>.png    2-D t-SNE of up to 2,000 test rows, coloured by class
    embedding-pixels.png
"""

import contextlib
import functools

import click

from pipeline import paths
from pipeline.inputs import checked_feature_file, load_pixels, store_description
from pipeline.options import features_option, images_option, params_option, scheduler_option
from pipeline.stage import params_key, stage_params
from plumbing.errors import FeatpipeError


@contextlib.contextmanager
def curves_settings():
    """A library error about ``per_class`` or ``repeats`` names its key: ``params: curves.per_class: ...``."""
    try:
        yield
    except FeatpipeError as error:
        raise FeatpipeError(f"params: curves.{error}") from None


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
    from storage.feature_store import load_features

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
                                     train.features, test.features, random_weights=weights[features] == "none"))
    return models, weights


def cnn_models(params, images, n_classes):
    """The CNN from scratch and every ``finetune.backbones`` entry, as CNN curve models on the stored images."""
    from classifiers.cnn.estimators import FinetuneClassifier, ScratchCNNClassifier
    from classifiers.cnn.finetune import finetunable_backbone
    from learning_curves.curves import CurveModel
    from pipeline.finetune_params import check_finetune_settings, finetune_settings
    from pipeline.image_models import load_images
    from pipeline.scratch_params import scratch_settings

    (train, _), (test, _), _, _ = load_images(images)
    models = [CurveModel(paths.SCRATCH_MODEL, "images", "scratch",
                         functools.partial(ScratchCNNClassifier, n_classes, scratch_settings(params)),
                         train, test, cnn=True)]
    weights = params["extract"]["weights"]
    for backbone in params["finetune"]["backbones"]:
        with params_key("finetune.backbones"):
            finetunable_backbone(backbone)
        check_finetune_settings(backbone, params["finetune"])
        settings = {**finetune_settings(params["finetune"]), "backbone": backbone, "weights": weights}
        models.append(CurveModel(paths.finetuned_model(backbone), "images", "finetune",
                                 functools.partial(FinetuneClassifier, n_classes, settings), train, test, cnn=True,
                                 random_weights=str(weights) == "none"))
    return models


def check_fits(models, plan, y_train, params):
    """Before any fit: every classifier can fit every size's draw; the lines they have to say, once each."""
    from classifiers.training import check_fit
    from reporting.sentences import size_phrase

    notes = []
    one_draw_per_size = {draw.per_class: draw for draw in plan.draws}  # a size's draws hold the same class counts
    for model in (model for model in models if not model.cnn):  # a CNN's settings were checked when it was made
        options = params["baseline"] if model.baseline else params["train"][model.classifier]
        for size, draw in one_draw_per_size.items():
            try:
                notes.append(check_fit(model.classifier, options, draw.model_seed, y_train[draw.rows]))
            except FeatpipeError as error:
                raise FeatpipeError(f"params: curves.per_class: {size_phrase(size)}: {error}") from None
    return list(dict.fromkeys(note for note in notes if note))


def left_out_line(left_out):
    """One line for every size the split can't supply (they share the reason: the smallest class)."""
    if not left_out:
        return None
    sizes = ", ".join(str(note["per_class"]) for note in left_out)
    return f"{sizes} images per class left out: {left_out[0]['reason']}"


def write_curves(summary, results, weights):
    """curves.json, curves.csv and curves.png."""
    from learning_curves.curves import ALL, curve_table
    from classifiers.evaluation import write_csv, write_json
    from reporting.plots import save_curves_png

    summary = {**summary, "weights": weights, "random_weights": sorted(name for name, w in weights.items() if w == "none")}
    whole = next((size["images_per_class"] for curve in summary["models"].values() for size in curve["sizes"]
                  if size["per_class"] == ALL), None)
    write_json(paths.CURVES_JSON, summary, compact=("draws",))
    write_csv(paths.CURVES_CSV, ["model", "per_class", "repeat", "accuracy"], curve_table(results, whole))
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
    for model in (model for model in models if not model.cnn):  # a CNN's inputs are the pixels, drawn already
        shown.setdefault(model.features, model.X_test)
    for features, X_test in shown.items():
        click.echo(f"curves: t-SNE of {len(rows)} test rows of {features}", err=True)
        random = " (random weights: not ImageNet features)" if weights.get(features) == "none" else ""
        save_embedding_png(paths.embedding_png(features), tsne_embedding(X_test[rows], seed), y_test[rows],
                           class_names, f"{features}: t-SNE of {len(rows)} test images{random}")


@click.command()
@params_option
@images_option
@features_option
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
    if params["curves"]["cnn"]:
        models += cnn_models(params, images, len(class_names))
    y_train, y_test = pixels["train"][1], pixels["test"][1]
    with curves_settings():
        plan = draw_subsets(y_train, params["curves"]["per_class"], params["curves"]["repeats"], params["seed"],
                            class_names)
    for line in [left_out_line(plan.left_out), *check_fits(models, plan, y_train, params)]:
        if line:
            click.echo(f"curves: {line}", err=True)
    click.echo(f"curves: {len(models)} models x {len(plan.draws)} draws ({len(plan.per_class)} sizes x "
               f"{plan.repeats} repeats)", err=True)
    with joblib_backend(scheduler or params["train"]["scheduler"]):
        results = fit_curves(models, y_train, y_test, plan.draws)
    summary = summarise_curves(models, plan, results)
    write_curves(summary, results, weights)
    draw_embeddings(models, y_test, class_names, params["seed"], weights)
    for sentence in (summary["sentence"], summary["share_sentence"], summary["crossover_sentence"]):
        if sentence:
            click.echo(sentence)
    click.echo(f"curves: {len(results)} fits -> {paths.CURVES_DIR}/")
