"""Learning curves over the number of labels.

The few-labels question as a curve: for each size in ``per_class`` and each
repeat, one stratified draw of exactly ``size`` training rows of every class;
every model (a classifier on a feature matrix, or the pixel forest on pixels)
is fitted on the same draws and scored on the whole test split::

    plan = draw_subsets(y_train, per_class=[5, 10, 20], repeats=5, seed=42)
    results = fit_curves(models, y_train, y_test, plan.draws)
    summary = summarise_curves(models, plan, results)   # JSON-ready, with summary["sentence"]
    rows = curve_table(results)                         # long form, for the CSV

**Draws are nested within a repeat**: each class's rows are shuffled once per
repeat and a size takes the first ``size`` of them, so the 10-per-class set
holds the 5-per-class set. One repeat is then one labelling campaign that
grows, and the step from one size to the next shows what the added labels
bring rather than a fresh draw's luck (common random numbers: the curve's
shape is less noisy). Repeats are independent, so the bands still show how
much the choice of images matters.

Every model of repeat ``r`` is seeded with ``seed + r``: the spread over
repeats holds the model's own randomness (forest bootstrap, a dense head's
initial weights) as well as the draw's, as a user who reruns would see it.

**The CNNs**: a model may be a CNN that learns from the images themselves
(``cnn=True``: the CNN from scratch, a fine-tuned backbone), fitted on the
same draws; the summary then says at which size it first matches the best
feature model (:func:`find_crossovers`), the course's question.

**The whole split**: ``per_class`` may hold :data:`ALL` (``"all"``), one more
point at the end of the curve: every training row, one draw (repeat 0,
seeded with ``seed``), so that a curve ends at the full-data accuracy and
the summary can say what share of it the few labels reach.

Nothing here reads params or writes files; the ``curves`` stage does both.
"""

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from plumbing.errors import FeatpipeError
from reporting.sentences import ALL, crossover_sentence, is_whole_split, match_sentence, share_sentence
from sources.subsets import nested_class_draws

# A per_class entry standing for the whole training split (the params file's word for it too).


@dataclasses.dataclass(frozen=True)
class CurveModel:
    """One line of the curve: a classifier on one feature matrix.

    Parameters
    ----------
    name : str, unique, e.g. ``vgg16-fc2-svm`` or ``pixel_rf``
    features : str, what the columns are, e.g. ``vgg16-fc2`` or ``pixels``
    classifier : str, e.g. ``svm`` or ``pixel_rf``
    build : callable ``build(seed) -> estimator``, a fresh unfitted scikit-learn style estimator
        (e.g. ``functools.partial(classifiers.build, "svm", **options)``); it travels to
        joblib's workers, so it must pickle (cloudpickle takes lambdas too)
    X_train : ndarray of shape (n_train, n_features), rows in the order of ``y_train``
    X_test : ndarray of shape (n_test, n_features), rows in the order of ``y_test``
        (a CNN's: the images, (n_samples, height, width, channels) uint8)
    baseline : bool, the pixel forest every feature model is measured against
    cnn : bool, a CNN on the images (not a feature model): its curve is compared with the best feature model's
    random_weights : bool, its features (or a fine-tuned CNN's backbone) come from random weights
    """

    name: str
    features: str
    classifier: str
    build: Callable
    X_train: np.ndarray
    X_test: np.ndarray
    baseline: bool = False
    cnn: bool = False
    random_weights: bool = False


@dataclasses.dataclass(frozen=True)
class Draw:
    """The training rows of one (size, repeat).

    per_class : int, rows of every class, or :data:`ALL` (every training row)
    repeat : int, from 0
    model_seed : int, the seed every model of this repeat is built with
    rows : ndarray of shape (per_class * n_classes,) (every row for :data:`ALL`), sorted row
        indices into the training split
    """

    per_class: int
    repeat: int
    model_seed: int
    rows: np.ndarray


@dataclasses.dataclass(frozen=True)
class DrawPlan:
    """What :func:`draw_subsets` decided.

    per_class : list of int, the sizes kept, ascending, then :data:`ALL` when asked for
    repeats : int
    seed : int
    draws : list of Draw, repeats outer, sizes inner; the :data:`ALL` draw last
    left_out : list of dict ``{"per_class": int, "reason": str}``, sizes the split cannot supply
    n_classes : int
    """

    per_class: list
    repeats: int
    seed: int
    draws: list
    left_out: list
    n_classes: int = 0


class FitResult(NamedTuple):
    """One fit of one model on one draw, scored on the whole test split."""

    model: str
    per_class: int
    repeat: int
    accuracy: float
    fit_seconds: float


def _is_count(value):
    # YAML's true/false are ints to Python; a size of True is a mistake, not 1.
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_settings(per_class, repeats):
    """Refuse sizes below 1 and fewer than one repeat; return the sizes sorted, without duplicates.

    Parameters
    ----------
    per_class : sequence of int or :data:`ALL`, labelled training images per class
    repeats : int, draws per size

    Returns
    -------
    list of int, then :data:`ALL` when ``per_class`` holds it
    """
    sizes = list(per_class) if isinstance(per_class, (list, tuple, np.ndarray)) else None
    if not sizes or not all((_is_count(size) and size >= 1) or is_whole_split(size) for size in sizes):
        raise FeatpipeError(
            f"per_class: expected a non-empty list of integers >= 1 (images per class) or {ALL!r} "
            f"(the whole training split), got {per_class!r}"
        )
    if not _is_count(repeats) or repeats < 1:
        raise FeatpipeError(f"repeats: expected an integer >= 1 (draws per size), got {repeats!r}")
    counts = sorted({int(size) for size in sizes if not is_whole_split(size)})
    return counts + ([ALL] if any(is_whole_split(size) for size in sizes) else [])


def size_order(per_class):
    """A sort key for a size: the counts ascending, :data:`ALL` after every one."""
    return math.inf if is_whole_split(per_class) else per_class


def draw_subsets(labels, per_class, repeats, seed, class_names=None):
    """Stratified, nested draws of the training rows for every size and repeat.

    Parameters
    ----------
    labels : ndarray of shape (n_train,), the training split's class indices
    per_class : sequence of int, rows of every class in a draw, or :data:`ALL` for every row (one draw)
    repeats : int, draws per size
    seed : int; repeat ``r`` shuffles with ``numpy.random.default_rng([seed, r])``
        (:func:`sources.subsets.nested_class_draws`)
    class_names : list of str, optional, names the short class in a left-out note

    Returns
    -------
    DrawPlan

    Raises
    ------
    FeatpipeError
        A bad setting, no size the split can supply, or a size the split
        can't supply next to :data:`ALL` (the curve would not end at the
        largest training set).
    """
    sizes = check_settings(per_class, repeats)
    whole = sizes[-1] == ALL
    counts_asked = [size for size in sizes if size != ALL]
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    smallest = int(classes[np.argmin(counts)])
    name = class_names[smallest] if class_names is not None else smallest
    kept = [size for size in counts_asked if size <= counts.min()]
    too_many = [size for size in counts_asked if size > counts.min()]
    if whole and too_many:
        raise FeatpipeError(
            f"per_class: {too_many} next to {ALL!r}: more images per class than the training split holds of "
            f"class {name!r} ({counts.min()} rows); {ALL!r} already ends the curve at the whole split"
        )
    left_out = [
        {"per_class": size, "reason": f"class {name!r} has only {int(counts.min())} training rows"}
        for size in too_many
    ]
    if not kept and not whole:
        raise FeatpipeError(
            f"per_class: every size is more than the training split holds of class {name!r} "
            f"({counts.min()} rows), got {list(per_class)!r}"
        )
    draws = []
    for repeat in range(repeats):
        for size, rows in zip(kept, nested_class_draws(labels, kept, seed, repeat)):
            draws.append(Draw(size, repeat, int(seed) + repeat, rows))
    if whole:
        draws.append(Draw(ALL, 0, int(seed), np.arange(len(labels))))
    return DrawPlan(kept + ([ALL] if whole else []), int(repeats), int(seed), draws, left_out, len(classes))


def fit_one(build, model_seed, X_train, y_train, X_test, y_test):
    """Fit ``build(model_seed)`` and return ``(accuracy on the test split, fit seconds)``.

    Runs wherever joblib sends it (this process, a loky worker, a Dask worker).
    """
    from sklearn.metrics import accuracy_score

    estimator = build(model_seed)
    start = time.perf_counter()
    estimator.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - start
    accuracy = accuracy_score(y_test, estimator.predict(X_test))
    # Rounded as classifiers.evaluation.score rounds, so curves and train report the same digits.
    return round(float(accuracy), 6), round(fit_seconds, 3)


def check_models(models, n_train, n_test):
    """Refuse duplicate names and matrices whose rows are not the splits' rows."""
    names = [model.name for model in models]
    if not models or len(set(names)) != len(names):
        raise FeatpipeError(f"models: expected at least one model and unique names, got {names}")
    baselines = [model.name for model in models if model.baseline]
    if len(baselines) > 1:
        raise FeatpipeError(f"models: expected at most one baseline (the pixel forest), got {baselines}")
    for model in models:
        if len(model.X_train) != n_train or len(model.X_test) != n_test:
            raise FeatpipeError(
                f"{model.name}: expected {n_train} training and {n_test} test rows (the labels'), "
                f"got {len(model.X_train)} and {len(model.X_test)}"
            )


def fit_curves(models, y_train, y_test, draws, *, progress=True, n_jobs=-1):
    """Fit every model on every draw and score it on the whole test split.

    The scikit-learn fits are pieces of :func:`classifiers.cores.run_pieces`:
    each on one thread, ``n_jobs`` at once, so that every core works and the
    numbers do not depend on how many there are; inside
    :func:`classifiers.fanout.joblib_backend` with a scheduler they become
    Dask tasks on every worker. The Keras heads and CNNs are fitted after
    them, in this process, one at a time (:func:`classifiers.cores.fits_in_this_process`).

    Parameters
    ----------
    models : list of CurveModel
    y_train : ndarray of shape (n_train,), class indices
    y_test : ndarray of shape (n_test,), class indices
    draws : list of Draw, from :func:`draw_subsets`
    progress : bool, a bar over fits on stderr
    n_jobs : int, scikit-learn fits at once (joblib's ``n_jobs``; -1: every core or every Dask worker)

    Returns
    -------
    list of FitResult, models outer, draws inner; the same numbers on every run but ``fit_seconds``
    """
    from tqdm.auto import tqdm

    from classifiers.cores import fits_in_this_process, run_pieces, shared

    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    check_models(models, len(y_train), len(y_test))
    here = {model.name: fits_in_this_process(model.build(0)) for model in models}
    plan = [(model, draw) for model in models for draw in draws]
    outcomes = {}
    with tqdm(total=len(plan), unit="fit", desc="curves", file=sys.stderr, disable=not progress) as bar, \
            contextlib.ExitStack() as stack:
        in_pieces = [index for index, (model, _) in enumerate(plan) if not here[model.name]]
        # Every piece of a model scores the same test rows: sent to the workers once.
        tests = {model.name: stack.enter_context(shared(model.X_test)) for model in models if not here[model.name]}
        pieces = ((model.build, draw.model_seed, model.X_train[draw.rows], y_train[draw.rows], tests[model.name], y_test)
                  for model, draw in (plan[index] for index in in_pieces))
        # The generator first: zip then reads it to its end, and joblib sees every result collected.
        for outcome, index in zip(run_pieces(fit_one, pieces, n_jobs, as_generator=True), in_pieces):
            outcomes[index] = outcome
            bar.update()
        for index in (index for index, (model, _) in enumerate(plan) if here[model.name]):
            model, draw = plan[index]
            bar.set_postfix_str(f"{model.name} {draw.per_class}/class", refresh=False)
            outcomes[index] = fit_one(model.build, draw.model_seed, model.X_train[draw.rows], y_train[draw.rows],
                                      model.X_test, y_test)
            bar.update()
    return [FitResult(model.name, draw.per_class, draw.repeat, *outcomes[index])
            for index, (model, draw) in enumerate(plan)]


def size_summary(per_class, n_train, n_classes, fits):
    """One size of one model: every repeat's accuracy, their mean and sample standard deviation.

    ``images_per_class`` is where the size sits on the curve's axis: ``per_class``
    itself, or the whole split's rows per class (on average) for :data:`ALL`.
    """
    fits = sorted(fits, key=lambda fit: fit.repeat)
    accuracies = [fit.accuracy for fit in fits]
    spread = float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0
    return {
        "per_class": per_class,
        "n_train": int(n_train),
        "images_per_class": round(n_train / n_classes, 3),
        "accuracy": accuracies,
        "mean": round(float(np.mean(accuracies)), 6),
        "std": round(spread, 6),
        "fit_seconds": [fit.fit_seconds for fit in fits],
    }


def summarise_curves(models, plan, results):
    """The JSON-ready record of a run: every model's curve, the draws, and the sentences.

    Parameters
    ----------
    models : list of CurveModel
    plan : DrawPlan
    results : list of FitResult, from :func:`fit_curves`

    Returns
    -------
    dict with ``per_class``, ``repeats``, ``seed``, ``left_out``, ``std_ddof`` (1: sample standard deviation),
    ``models`` (``{name: {"features", "classifier", "baseline", "sizes": [{"per_class", "n_train",
    "images_per_class", "accuracy" (one per repeat), "mean", "std", "fit_seconds" (one per repeat)}]}}``),
    ``draws`` (``[{"per_class", "repeat", "model_seed", "rows"}]``, once for all models),
    ``match`` (see :func:`find_match`) and ``sentence``, ``share`` (see :func:`find_share`)
    and ``share_sentence``, ``crossovers`` (see :func:`find_crossovers`) and ``crossover_sentence``.
    Each model's entry also says ``cnn`` and ``random_weights``.
    """
    n_train = {draw.per_class: len(draw.rows) for draw in plan.draws}
    curves = {}
    for model in models:
        fits = [fit for fit in results if fit.model == model.name]
        sizes = [size_summary(size, n_train[size], plan.n_classes, [fit for fit in fits if fit.per_class == size])
                 for size in plan.per_class]
        curves[model.name] = {"features": model.features, "classifier": model.classifier,
                              "baseline": model.baseline, "cnn": model.cnn, "random_weights": model.random_weights,
                              "sizes": sizes}
    match = find_match(curves)
    share = find_share(curves)
    crossovers = find_crossovers(curves)
    return {
        "per_class": list(plan.per_class),
        "repeats": plan.repeats,
        "seed": plan.seed,
        "left_out": list(plan.left_out),
        "std_ddof": 1,  # sample standard deviation over the repeats (0 with one repeat)
        "models": curves,
        "draws": [{"per_class": draw.per_class, "repeat": draw.repeat, "model_seed": draw.model_seed,
                   "rows": draw.rows.tolist()} for draw in plan.draws],
        "match": match,
        "sentence": match_sentence(match, plan.repeats),
        "share": share,
        "share_sentence": share_sentence(share),
        "crossovers": crossovers,
        "crossover_sentence": crossover_sentence(crossovers, plan.repeats),
    }


def curve_table(results, whole_split_per_class=None):
    """Long form for ``curves.csv``: one dict ``{model, per_class, repeat, accuracy}`` per fit.

    Parameters
    ----------
    results : list of FitResult
    whole_split_per_class : float or None
        What ``per_class`` says for the fits on the whole split (:data:`ALL`):
        its rows per class (``images_per_class`` of the summary), a number,
        so that the plot's axis stays one of numbers.
    """
    if whole_split_per_class is None and any(is_whole_split(fit.per_class) for fit in results):
        raise ValueError("curve_table: fits on the whole split need whole_split_per_class")
    return [{"model": fit.model, "per_class": whole_split_per_class if is_whole_split(fit.per_class) else fit.per_class,
             "repeat": fit.repeat, "accuracy": fit.accuracy}
            for fit in results]


def feature_curves(curves):
    """The curves of the feature models: neither the pixel forest nor a CNN on the images."""
    return {name: curve for name, curve in curves.items() if not curve["baseline"] and not curve.get("cnn")}


def find_match(curves):
    """The fewest images per class at which a feature model matches the pixel forest at its largest size.

    A model *matches* at a size when its mean test accuracy over the repeats
    is at least the pixel forest's mean at the largest size (the whole split
    when :data:`ALL` was asked for). Among the models that match at the
    fewest images, the one with the higher mean there wins. When none
    matches, the closest is the feature model with the highest mean at any
    size.

    Parameters
    ----------
    curves : dict, ``summarise_curves(...)["models"]``

    Returns
    -------
    dict ``{"baseline", "target_per_class", "target", "matched", "model", "per_class", "mean"}``,
    or None without a baseline or without a feature model.
    """
    baselines = [name for name, curve in curves.items() if curve["baseline"]]
    features = feature_curves(curves)
    if len(baselines) != 1 or not features:
        return None
    target = curves[baselines[0]]["sizes"][-1]
    points = [(size_order(size["per_class"]), -size["mean"], name, size["per_class"])
              for name, curve in features.items() for size in curve["sizes"]]
    matching = [point for point in points if -point[1] >= target["mean"]]
    # Fewest images first, then the higher mean, then the name (a stable tie-break).
    _, negative_mean, name, per_class = min(matching) if matching else min(points, key=lambda p: (p[1], p[0], p[2]))
    return {
        "baseline": baselines[0],
        "target_per_class": target["per_class"],
        "target": target["mean"],
        "matched": bool(matching),
        "model": name,
        "per_class": per_class,
        "mean": -negative_mean,
    }


def find_share(curves):
    """What share of its whole-split accuracy the best feature model reaches with few labels.

    The best feature model is the one with the highest accuracy on the whole
    training split (:data:`ALL`); its share at a size is its mean accuracy
    there over that accuracy.

    Parameters
    ----------
    curves : dict, ``summarise_curves(...)["models"]``

    Returns
    -------
    dict ``{"model", "full", "n_train", "shares": [{"per_class", "mean", "share"}]}``, or None
    without a whole-split point or without a feature model.
    """
    features = feature_curves(curves)
    if not features or not is_whole_split(next(iter(features.values()))["sizes"][-1]["per_class"]):
        return None
    name = min(features, key=lambda name: (-features[name]["sizes"][-1]["mean"], name))
    *few, whole = features[name]["sizes"]
    shares = [{"per_class": size["per_class"], "mean": size["mean"],
               "share": round(size["mean"] / whole["mean"], 6) if whole["mean"] > 0 else None} for size in few]
    return {"model": name, "full": whole["mean"], "n_train": whole["n_train"], "shares": shares}


def find_crossovers(curves):
    """For every CNN: the fewest images per class at which it matches or beats the best feature model.

    At each size the best feature model is the one with the highest mean
    test accuracy there; the CNN *matches* it when its own mean is at least
    as high.

    Parameters
    ----------
    curves : dict, ``summarise_curves(...)["models"]``

    Returns
    -------
    list of dict, one per CNN: ``{"model", "classifier", "crossed", "per_class", "mean", "std",
    "best_model", "best_mean", "best_std", "first_per_class", "random_weights"}``, at the first size
    where it matches (``crossed``) or else at the largest size; ``random_weights`` names every model
    of the comparison whose weights are random. Empty without a CNN or a feature model.
    """
    features = feature_curves(curves)
    cnns = {name: curve for name, curve in curves.items() if curve.get("cnn")}
    if not features or not cnns:
        return []
    crossovers = []
    for name, curve in cnns.items():
        points = []
        for index, size in enumerate(curve["sizes"]):
            best = min(features, key=lambda feature: (-features[feature]["sizes"][index]["mean"], feature))
            points.append((size, best, features[best]["sizes"][index]))
        matched = [point for point in points if point[0]["mean"] >= point[2]["mean"]]
        size, best, best_size = matched[0] if matched else points[-1]
        random = sorted(other for other, entry in {**features, name: curve}.items() if entry.get("random_weights"))
        crossovers.append({
            "model": name, "classifier": curve["classifier"], "crossed": bool(matched),
            "per_class": size["per_class"], "mean": size["mean"], "std": size["std"],
            "best_model": best, "best_mean": best_size["mean"], "best_std": best_size["std"],
            "first_per_class": curve["sizes"][0]["per_class"], "random_weights": random,
        })
    return crossovers
