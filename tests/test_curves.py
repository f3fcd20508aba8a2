"""Learning curves over the number of labels: draws, fits, summaries, the sentence, t-SNE and plots."""

import functools
import json
from typing import ClassVar

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

import classifiers
from learning_curves import curves, embeddings
from plumbing.errors import FeatpipeError
from reporting import plots
from reporting.sentences import match_sentence
from tests.conftest import separable_features

N_CLASSES = 3
TRAIN_PER_CLASS = 60


def noisy_features(labels, seed, noise=1.5, n_features=8):
    """Class centres on the first coordinates, with enough noise that accuracy stays below 1. float32 [N, D]."""
    rng = np.random.default_rng(seed)
    features = rng.normal(0.0, noise, size=(len(labels), n_features)).astype(np.float32)
    features[np.arange(len(labels)), labels] += 2.5
    return features


@pytest.fixture(scope="module")
def splits():
    """180 training rows (60 per class) and 300 test rows, as class indices."""
    return np.arange(N_CLASSES * TRAIN_PER_CLASS) % N_CLASSES, np.arange(300) % N_CLASSES


@pytest.fixture(scope="module")
def models(splits):
    """A forest and an SVM on features, and the baseline forest on noisier "pixels"."""
    y_train, y_test = splits
    features = noisy_features(y_train, 0), noisy_features(y_test, 1)
    pixels = noisy_features(y_train, 2, noise=2.0), noisy_features(y_test, 3, noise=2.0)
    forest = functools.partial(classifiers.build, "rf", n_estimators=30, n_jobs=1)
    return [
        curves.CurveModel("toy-rf", "toy", "rf", forest, *features),
        curves.CurveModel("toy-svm", "toy", "svm", functools.partial(classifiers.build, "svm", C=1.0), *features),
        curves.CurveModel("pixel_rf", "pixels", "rf", forest, *pixels, baseline=True),
    ]


def run(models, splits, per_class, repeats=5, seed=0, **options):
    y_train, y_test = splits
    plan = curves.draw_subsets(y_train, per_class, repeats, seed)
    results = curves.fit_curves(models, y_train, y_test, plan.draws, progress=False, **options)
    return plan, results, curves.summarise_curves(models, plan, results)


def scores(results):
    """Everything a fit gives but its timing, which is allowed to differ."""
    return [(fit.model, fit.per_class, fit.repeat, fit.accuracy) for fit in results]


def test_accuracy_rises_bands_shrink_and_a_rerun_one_fit_at_a_time_is_identical(models, splits):
    # 8 repeats: a standard deviation from 5 is itself too noisy to compare reliably (tried on 16 seeds).
    _, results, summary = run(models, splits, [2, 6, 50], repeats=8)
    for name, curve in summary["models"].items():
        smallest, largest = curve["sizes"][0], curve["sizes"][-1]
        assert len(largest["accuracy"]) == 8 and largest["n_train"] == 50 * N_CLASSES
        assert largest["mean"] > smallest["mean"] + 0.05, f"{name}: accuracy does not rise with size"
        assert largest["std"] < smallest["std"], f"{name}: the band does not shrink"
        assert largest["mean"] < 1.0, "the data is too easy to show anything"
        assert largest["mean"] == pytest.approx(np.mean(largest["accuracy"]), abs=1e-6)
        assert largest["std"] == pytest.approx(np.std(largest["accuracy"], ddof=1), abs=1e-6)
    _, again, _ = run(models, splits, [2, 6, 50], repeats=8, n_jobs=1)  # in this process: every core or one, the same numbers
    assert scores(again) == scores(results)


class RowSpy(ClassifierMixin, BaseEstimator):
    """Remembers which training rows (column 0 holds the row index) and seed each fit got."""

    seen: ClassVar[list] = []

    def __init__(self, model, seed=0):
        self.model = model
        self.seed = seed

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        RowSpy.seen.append((self.model, self.seed, tuple(X[:, 0].astype(int)), in_dask_worker()))
        return self

    def predict(self, X):
        return np.zeros(len(X), dtype=int)


def in_dask_worker():
    from distributed import get_worker

    try:
        get_worker()
        return True
    except ValueError:
        return False


def spies(splits):
    """Two models on different matrices whose first column is the row index."""
    y_train, y_test = splits

    def with_row_index(features):
        return np.column_stack([np.arange(len(features)), features]).astype(np.float32)

    return [
        curves.CurveModel(name, name, "spy", functools.partial(RowSpy, name),
                          with_row_index(noisy_features(y_train, seed)), with_row_index(noisy_features(y_test, seed)))
        for seed, name in enumerate(["features", "pixels"])
    ]


def test_every_model_saw_the_rows_the_summary_records(splits, capsys):
    RowSpy.seen.clear()
    y_train, y_test = splits
    models = spies(splits)
    plan = curves.draw_subsets(y_train, [2, 5], repeats=3, seed=9)
    # n_jobs=1: the fits run in this process, where the spy sees them.
    summary = curves.summarise_curves(models, plan, curves.fit_curves(models, y_train, y_test, plan.draws, n_jobs=1))
    recorded = {(draw["model_seed"], tuple(draw["rows"])) for draw in summary["draws"]}
    assert len(recorded) == 2 * 3, "draws of different sizes or repeats should differ"
    for model in models:
        assert {(seed, rows) for name, seed, rows, _ in RowSpy.seen if name == model.name} == recorded
    assert len(RowSpy.seen) == len(models) * len(recorded)
    assert "curves: 100%" in capsys.readouterr().err, "no progress bar on stderr"


def test_draws_are_stratified_nested_in_a_repeat_and_seeded():
    labels = np.repeat([0, 1, 2], [7, 9, 12])
    plan = curves.draw_subsets(labels, [4, 2, 7, 4], repeats=3, seed=5)
    assert plan.per_class == [2, 4, 7] and plan.left_out == []
    assert [(draw.per_class, draw.repeat, draw.model_seed) for draw in plan.draws] == [
        (size, repeat, 5 + repeat) for repeat in range(3) for size in (2, 4, 7)
    ]
    for draw in plan.draws:
        assert np.bincount(labels[draw.rows], minlength=3).tolist() == [draw.per_class] * 3
        assert np.all(np.diff(draw.rows) > 0), "rows should be sorted and distinct"
    by_repeat = [[set(draw.rows) for draw in plan.draws if draw.repeat == repeat] for repeat in range(3)]
    for sizes in by_repeat:
        assert sizes[0] < sizes[1] < sizes[2], "a repeat's draws should be nested"
    firsts = [frozenset(sizes[0]) for sizes in by_repeat]
    assert len(set(firsts)) == 3, "every repeat should draw other rows than every other"
    again = curves.draw_subsets(labels, [2, 4, 7], repeats=3, seed=5)
    other = curves.draw_subsets(labels, [2, 4, 7], repeats=3, seed=6)
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(plan.draws, again.draws))
    assert not all(np.array_equal(a.rows, b.rows) for a, b in zip(plan.draws, other.draws))


def test_sizes_the_split_cannot_supply_are_left_out_with_a_note():
    labels = np.repeat([0, 1, 2], [5, 3, 5])
    plan = curves.draw_subsets(labels, [2, 3, 4, 10], repeats=2, seed=0, class_names=["cat", "dog", "owl"])
    assert plan.per_class == [2, 3]
    assert plan.left_out == [
        {"per_class": 4, "reason": "class 'dog' has only 3 training rows"},
        {"per_class": 10, "reason": "class 'dog' has only 3 training rows"},
    ]
    assert {draw.per_class for draw in plan.draws} == {2, 3}
    short = r"^per_class: every size is more than .* class 'dog' \(3 rows\), got \[4, 10\]$"
    with pytest.raises(FeatpipeError, match=short):
        curves.draw_subsets(labels, [4, 10], repeats=2, seed=0, class_names=["cat", "dog", "owl"])


@pytest.mark.parametrize(
    "per_class, repeats, message",
    [
        ([0, 5], 5, r"^per_class: expected a non-empty list of integers >= 1 \(images per class\) or 'all' "
                    r"\(the whole training split\), got \[0, 5\]$"),
        (["every"], 5, r"^per_class: .* got \['every'\]$"),
        ([5, -2], 5, r"^per_class: .* got \[5, -2\]$"),
        ([], 5, r"^per_class: .* got \[\]$"),
        ([2.5], 5, r"^per_class: .* got \[2\.5\]$"),
        ([True], 5, r"^per_class: .* got \[True\]$"),
        (5, 5, r"^per_class: .* got 5$"),
        ([5], 0, r"^repeats: expected an integer >= 1 \(draws per size\), got 0$"),
        ([5], -1, r"^repeats: .* got -1$"),
        ([5], 2.0, r"^repeats: .* got 2\.0$"),
    ],
)
def test_bad_settings_name_the_setting(per_class, repeats, message):
    with pytest.raises(FeatpipeError, match=message):
        curves.draw_subsets(np.arange(30) % 3, per_class, repeats, seed=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda models: [models[0], models[0]], r"^models: expected at least one model and unique names"),
        (lambda models: [], r"^models: expected at least one model"),
        (lambda models: [models[0], models[2], curves.CurveModel(**{**vars(models[2]), "name": "other"})],
         r"^models: expected at most one baseline \(the pixel forest\), got \['pixel_rf', 'other'\]$"),
        (lambda models: [curves.CurveModel(**{**vars(models[0]), "X_test": models[0].X_test[:-1]})],
         r"^toy-rf: expected 180 training and 300 test rows \(the labels'\), got 180 and 299$"),
    ],
)
def test_models_that_do_not_fit_the_splits_are_refused(models, splits, change, message):
    plan = curves.draw_subsets(splits[0], [2], repeats=1, seed=0)
    with pytest.raises(FeatpipeError, match=message):
        curves.fit_curves(change(models), *splits, plan.draws, progress=False)


def curve(means, baseline=False, sizes=(5, 10, 20)):
    return {"features": "x", "classifier": "y", "baseline": baseline,
            "sizes": [{"per_class": size, "mean": mean} for size, mean in zip(sizes, means)]}


def test_the_sentence_names_the_fewest_labels_that_match_the_pixel_forest():
    matched = curves.find_match({
        "pixel_rf": curve([0.60, 0.70, 0.80], baseline=True),
        "vgg-rf": curve([0.70, 0.80, 0.85]),
        "vgg-svm": curve([0.75, 0.81, 0.90]),   # matches at 10 like vgg-rf, higher there: the best
        "vgg-dense": curve([0.79, 0.95, 0.97]),  # 0.79 at 5 is short of 0.80
    })
    assert matched == {"baseline": "pixel_rf", "target_per_class": 20, "target": 0.80, "matched": True,
                       "model": "vgg-dense", "per_class": 10, "mean": 0.95}
    assert match_sentence(matched, 5) == (
        "The best feature model, vgg-dense, first matches the pixel forest's accuracy at its largest size "
        "(0.800 at 20 images per class) with 10 images per class (mean 0.950 over 5 draws), "
        "\"matches\" meaning a mean test accuracy at least that high."
    )
    tie = curves.find_match({"pixel_rf": curve([0.6, 0.7, 0.8], True), "a": curve([0.8, 0.8, 0.8]),
                             "b": curve([0.85, 0.8, 0.8])})
    assert (tie["model"], tie["per_class"]) == ("b", 5), "the higher mean should win a tie on size"


def test_the_sentence_says_when_no_feature_model_ever_matches():
    never = curves.find_match({"pixel_rf": curve([0.7, 0.8, 0.9], True), "a": curve([0.5, 0.6, 0.7]),
                               "b": curve([0.6, 0.85, 0.8])})
    assert never["matched"] is False and (never["model"], never["per_class"], never["mean"]) == ("b", 10, 0.85)
    assert match_sentence(never, 1) == (
        "No feature model matches the pixel forest's accuracy at its largest size (0.900 at 20 images per class) "
        "at any size, \"matches\" meaning a mean test accuracy over 1 draw at least that high; "
        "the closest is b, 0.850 at 10 images per class."
    )
    assert curves.find_match({"a": curve([0.5, 0.6, 0.7])}) is None
    assert match_sentence(None, 5) is None


def test_summary_and_table_hold_every_fit_once(models, splits):
    _, results, summary = run(models, splits, [2, 6, 100], repeats=2)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary, "the summary should be plain JSON"
    assert summary["per_class"] == [2, 6] and summary["left_out"][0]["per_class"] == 100
    assert list(summary["models"]) == ["toy-rf", "toy-svm", "pixel_rf"]
    assert summary["models"]["pixel_rf"]["baseline"] is True
    assert summary["sentence"] == match_sentence(summary["match"], 2)
    assert [(d["per_class"], d["repeat"], len(d["rows"])) for d in summary["draws"]] == [
        (2, 0, 6), (6, 0, 18), (2, 1, 6), (6, 1, 18)]
    table = curves.curve_table(results)
    assert list(table[0]) == ["model", "per_class", "repeat", "accuracy"]
    assert sorted((row["model"], row["per_class"], row["repeat"]) for row in table) == sorted(
        (model.name, size, repeat) for model in models for size in (2, 6) for repeat in (0, 1))
    for row in table:
        size = next(s for s in summary["models"][row["model"]]["sizes"] if s["per_class"] == row["per_class"])
        assert size["accuracy"][row["repeat"]] == row["accuracy"]


def test_fits_go_to_dask_workers_under_joblib_backend_with_the_same_numbers(models, splits):
    from distributed import LocalCluster

    from classifiers.fanout import joblib_backend

    RowSpy.seen.clear()
    local = run(models + spies(splits), splits, [2, 6], repeats=2)[1]
    assert not any(on_worker for *_, on_worker in RowSpy.seen)
    RowSpy.seen.clear()
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            joblib_backend(cluster.scheduler_address):
        remote = run(models + spies(splits), splits, [2, 6], repeats=2)[1]
    assert len(RowSpy.seen) == 2 * 4 and all(on_worker for *_, on_worker in RowSpy.seen), "fits stayed local"
    assert scores(remote) == scores(local)


@pytest.mark.slow  # Keras' start-up and a traced function per fit: ~15 s here
def test_dense_head_curves_repeat_exactly(splits):
    import dataclasses

    y_train, y_test = splits
    head = functools.partial(classifiers.build, "dense", hidden_units=[8], epochs=3, batch_size=16, patience=2)
    model = curves.CurveModel("toy-dense", "toy", "dense", head, noisy_features(y_train, 0), noisy_features(y_test, 1))
    draws = curves.draw_subsets(y_train, [2, 20], repeats=1, seed=1).draws
    first = curves.fit_curves([model], y_train, y_test, draws, progress=False)
    again = curves.fit_curves([model], y_train, y_test, draws, progress=False)
    assert scores(again) == scores(first)
    reseeded = [dataclasses.replace(draw, model_seed=draw.model_seed + 100) for draw in draws]
    other = curves.fit_curves([model], y_train, y_test, reseeded, progress=False)
    assert scores(other) != scores(first), "the head's numbers do not depend on its seed: the rerun proves nothing"


def test_embedding_rows_are_a_seeded_stratified_sample():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    rows = embeddings.embedding_rows(labels, max_rows=100, seed=3)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [50, 30, 20]
    assert np.array_equal(rows, embeddings.embedding_rows(labels, max_rows=100, seed=3))
    assert not np.array_equal(rows, embeddings.embedding_rows(labels, max_rows=100, seed=4))
    assert np.array_equal(embeddings.embedding_rows(labels[:80], max_rows=100), np.arange(80))


def test_tsne_keeps_separable_classes_apart_and_repeats_with_the_seed():
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.arange(90) % N_CLASSES
    # Class signal in 3 columns, noise in 5 columns 10 to 1,000 times wider: unstandardised, the noise
    # decides every distance and a t-SNE mixes the classes (k-NN score about 0.5).
    features = separable_features(labels, 0, n_features=8)
    features[:, N_CLASSES:] *= np.logspace(1, 3, 5, dtype=np.float32)
    embedded = embeddings.tsne_embedding(features, seed=2, pca_components=4)
    assert embedded.shape == (90, 2) and embedded.dtype == np.float32 and np.isfinite(embedded).all()
    neighbours = KNeighborsClassifier(5).fit(embedded, labels)
    assert neighbours.score(embedded, labels) > 0.9, "classes separable in the features are mixed in the picture"
    np.testing.assert_array_equal(embeddings.tsne_embedding(features, seed=2, pca_components=4), embedded)
    with pytest.raises(FeatpipeError, match=r"^embedding: expected features \[N, D\] with N >= 4, got shape \(3, 8\)$"):
        embeddings.tsne_embedding(features[:3], seed=0)


def test_plots_are_whole_pngs(models, splits, tmp_path):
    summary = run(models, splits, [2, 6], repeats=2)[2]
    plots.save_curves_png(tmp_path / "curves.png", summary)
    labels = np.arange(30) % N_CLASSES
    plots.save_embedding_png(tmp_path / "embedding-toy.png", np.random.default_rng(0).normal(size=(30, 2)), labels,
                             ["circle", "square", "cross"], "t-SNE of toy")
    for name in ("curves.png", "embedding-toy.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curves.png", "embedding-toy.png"]
