"""The classifier library: registry, each classifier's fit and seed, refusals, scores, search."""

import subprocess
import sys

import numpy as np
import pytest

import classifiers
from classifiers.dense import save_dense, validation_split
from classifiers.evaluation import check_training_data, confusion_counts, score, write_confusion_csv
from classifiers.search import check_folds, make_search, summarise
from plumbing.errors import FeatpipeError
from tests.conftest import separable_features

NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def data():
    """60 training and 30 test rows of 8 separable features in 3 classes."""
    y_train, y_test = np.arange(60) % 3, np.arange(30) % 3
    return separable_features(y_train, 0), y_train, separable_features(y_test, 1), y_test


def test_registry_lists_builds_and_refuses_unknown_names():
    assert classifiers.available() == ["dense", "knn", "logreg", "rf", "svm"]
    assert classifiers.get("dense").suffix == ".keras" and classifiers.get("rf").suffix == ".skops"
    with pytest.raises(FeatpipeError, match=r"^unknown classifier 'nosuch'; expected one of: dense, knn, logreg, rf, svm$"):
        classifiers.build("nosuch", seed=0)
    with pytest.raises(ValueError, match="already registered"):
        classifiers.register("rf")(lambda seed: None)


def test_importing_classifiers_leaves_keras_unloaded():
    code = "import sys, classifiers, pipeline.train; print('keras' in sys.modules or 'tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize(
    "name, options",
    [
        ("rf", {"n_estimators": 20, "n_jobs": 1}),
        ("svm", {}),
        ("svm", {"kernel": "linear", "C": 0.1}),
        ("svm", {"pca_components": 4}),
    ],
)
def test_sklearn_classifiers_fit_predict_and_repeat_with_the_seed(data, name, options):
    X_train, y_train, X_test, y_test = data
    first = classifiers.build(name, 3, **options).fit(X_train, y_train).predict(X_test)
    again = classifiers.build(name, 3, **options).fit(X_train, y_train).predict(X_test)
    assert np.mean(first == y_test) >= 0.9
    np.testing.assert_array_equal(first, again)


def test_dense_head_learns_repeats_with_the_seed_and_saves_a_standalone_model(data, tmp_path):
    from plumbing.backend import load_keras

    X_train, y_train, X_test, y_test = data
    # 15 epochs of 4 steps: at Adam's default 1e-3 whether the head learns in time
    # depends on the initial weights (2 seeds in 8 did, on JAX and on TensorFlow alike), at 1e-2 every seed does.
    options = {"hidden_units": [16], "epochs": 15, "batch_size": 16, "patience": 3, "dropout": 0.2, "learning_rate": 1e-2}
    head = classifiers.build("dense", 5, **options).fit(X_train, y_train)
    again = classifiers.build("dense", 5, **options).fit(X_train, y_train)
    assert np.mean(head.predict(X_test) == y_test) >= 0.8
    np.testing.assert_allclose(head.predict_proba(X_test), again.predict_proba(X_test), rtol=1e-5, atol=1e-6)
    assert 1 <= head.best_epoch_ <= head.epochs_run_ <= 15
    save_dense(head, tmp_path / "model.keras")
    assert [path.name for path in tmp_path.iterdir()] == ["model.keras"]
    loaded = load_keras().saving.load_model(tmp_path / "model.keras")
    # The saved model standardises by itself: raw features in, the same probabilities out.
    np.testing.assert_allclose(loaded.predict(X_test, verbose=0), head.predict_proba(X_test), rtol=1e-5, atol=1e-6)


def test_dense_validation_split_is_stratified_and_optional():
    X, y = np.zeros((40, 2), np.float32), np.arange(40) % 4
    X_fit, y_fit, (X_val, y_val) = validation_split(X, y, 0.1, seed=0)
    assert len(y_val) == 4 and sorted(y_val) == [0, 1, 2, 3] and len(y_fit) == 36
    assert validation_split(X, y, 0.0, seed=0)[2] is None


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda X, y: (X, np.zeros_like(y)), r"holds a single class \(0\); a classifier needs at least two"),
        (lambda X, y: (X[:0], y[:0]), "is empty"),
        (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 13, np.nan, X), y), r"NaN or infinite values \(first at row 1, column 5\)"),
        (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 0, np.inf, X), y), "NaN or infinite"),
        (lambda X, y: (X[:, 0], y), r"expected features \[N, D\]"),
    ],
)
def test_training_data_refusals_say_what_is_wrong(data, mutate, message):
    X, y = mutate(data[0], data[1])
    with pytest.raises(FeatpipeError, match=message):
        check_training_data(X, y, "tiny train")


def test_scores_and_confusion_rows_use_class_names(tmp_path):
    y_true, y_pred = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])
    metrics = score(y_true, y_pred, NAMES)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3, abs=1e-6)
    assert metrics["per_class"]["b"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert 0 < metrics["macro_f1"] < 1
    np.testing.assert_array_equal(confusion_counts(y_true, y_pred, 3), [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    write_confusion_csv(tmp_path / "c.csv", y_true, y_pred, NAMES)
    assert (tmp_path / "c.csv").read_text().splitlines()[:3] == ["actual,predicted", "a,a", "a,b"]


def test_grid_search_summary_and_bad_grids(data):
    X_train, y_train, *_ = data
    search = make_search(classifiers.build("svm", 0), {"C": [0.01, 1.0]}, cv=3, seed=0, name="svm", n_jobs=1)
    summary = summarise(search.fit(X_train, y_train))
    assert summary["best_params"] == {"C": 1.0} and summary["cv"] == 3
    assert set(summary) == {"cv", "grid", "best_params", "cv_accuracy", "cv_accuracy_std", "refit_seconds"}
    with pytest.raises(FeatpipeError, match=r"search grid for svm: unknown parameter 'c'; expected one of: C, gamma"):
        make_search(classifiers.build("svm", 0), {"c": [1.0]}, cv=3, seed=0, name="svm")
    with pytest.raises(FeatpipeError, match="needs at least 5 training rows of every class; class 2 has 1"):
        check_folds(np.array([0] * 6 + [1] * 6 + [2]), cv=5)


def test_dense_head_standardises_like_standard_scaler_keeping_constant_features_at_scale_one():
    from sklearn.preprocessing import StandardScaler

    from classifiers.dense import standardising_variance

    rng = np.random.default_rng(0)
    # ReLU-like columns: the first is 0 on every training row, as dead units are with a few labels per class.
    X = np.maximum(rng.normal(size=(15, 6)), 0).astype(np.float32)
    X[:, 0], X[:, 1] = 0.0, 2.5
    np.testing.assert_allclose(standardising_variance(X), StandardScaler().fit(X).scale_ ** 2, rtol=1e-6)
    assert standardising_variance(X)[:2].tolist() == [1.0, 1.0]


def test_dense_head_stays_sane_on_a_test_row_where_a_dead_training_feature_fires(data):
    X_train, y_train, X_test, _ = data
    X_train, X_test = X_train.copy(), X_test.copy()
    X_train[:, -1], X_test[:, -1] = 0.0, 3.0  # never on in training, on in every test row
    options = {"hidden_units": [16], "epochs": 15, "batch_size": 16, "patience": 3, "dropout": 0.2, "learning_rate": 1e-2}
    head = classifiers.build("dense", 5, **options).fit(X_train, y_train)
    X_quiet = X_test.copy()
    X_quiet[:, -1] = 0.0
    # Scaled by 1, the unit moves the logits a little; divided by Keras' epsilon it would swamp every other feature.
    assert np.mean(head.predict(X_test) == head.predict(X_quiet)) >= 0.9
