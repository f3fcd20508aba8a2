"""The two probes of frozen features, ``logreg`` and ``knn``: manners, cross-validation on training rows only, reruns."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

import classifiers
from classifiers.knn import CosineKNN, vote_weights
from classifiers.model_files import load_skops
from classifiers.training import train_and_score
from plumbing.errors import FeatpipeError

NAMES = ["a", "b", "c"]
PROBES = {
    "logreg": ({"C": [0.01, 0.1, 1.0], "cv": 3}, "C"),
    "knn": ({"k": [1, 3, 7, 15], "cv": 3}, "k"),
}


def overlapping(n, seed, shift=1.2, n_features=12):
    """Three classes that overlap (accuracy well below 1, so a setting matters), with a few duplicated rows."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    features = rng.normal(size=(n, n_features)).astype(np.float32)
    features[np.arange(n), labels] += shift
    features[1::25] = features[0::25][: len(features[1::25])]  # duplicates: kNN distances of 0
    return features, labels


@pytest.fixture(scope="module")
def data():
    return overlapping(240, 0), overlapping(300, 1)


def reference_search(name, X, y, seed):
    """The same choice made by scikit-learn's own GridSearchCV: the pipeline the probe describes, one fit per candidate."""
    options, key = PROBES[name]
    if name == "logreg":
        pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(solver="newton-cg", max_iter=1000, random_state=seed))])
        grid = {"model__C": options["C"]}
    else:
        pipeline = Pipeline([("normalise", Normalizer()),
                             ("model", KNeighborsClassifier(weights="distance", metric="cosine", algorithm="brute"))])
        grid = {"model__n_neighbors": options["k"]}
    folds = StratifiedKFold(n_splits=options["cv"], shuffle=True, random_state=seed)
    return GridSearchCV(pipeline, grid, cv=folds, scoring="accuracy").fit(X, y)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probes_have_scikit_learn_manners(data, name):
    (X, y), (X_test, _) = data
    options, _ = PROBES[name]
    probe = classifiers.build(name, 4, **options)
    copy = clone(probe)
    assert copy.get_params() == probe.get_params() and copy is not probe
    assert set(probe.get_params()) >= {"cv", "seed", "n_jobs", PROBES[name][1]}
    labels = np.array(NAMES)[y]  # classes_ and predictions keep the labels as given
    assert probe.fit(X, labels) is probe
    np.testing.assert_array_equal(probe.classes_, NAMES)
    assert set(probe.predict(X_test)) <= set(NAMES)
    probabilities = probe.predict_proba(X_test)
    assert probabilities.shape == (len(X_test), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probe.predict(X_test), probe.classes_[probabilities.argmax(axis=1)])


@pytest.mark.parametrize("name", sorted(PROBES))
def test_the_choice_is_scikit_learns_cross_validation_on_the_training_rows(data, name):
    (X, y), _ = data
    options, key = PROBES[name]
    probe = classifiers.build(name, 4, **options).fit(X, y)
    reference = reference_search(name, X, y, seed=4)
    expected = {str(value): round(float(score), 6)
                for value, score in zip(options[key], reference.cv_results_["mean_test_score"])}
    assert probe.fit_details_["cv_accuracy"] == expected
    assert probe.fit_details_["selected"] == {key: list(reference.best_params_.values())[0]}
    assert probe.fit_details_["cv"] == 3
    assert len(set(expected.values())) > 1, "every candidate scores alike: the data can't tell a choice from another"


@pytest.mark.parametrize("name", sorted(PROBES))
def test_test_rows_never_reach_the_choice(data, name):
    """The choice and its scores depend on the training rows only, whatever the test split holds."""
    (X, y), (X_test, y_test) = data
    options, _ = PROBES[name]
    rng = np.random.default_rng(5)
    # A test split built to pull the choice elsewhere if it leaked in: the training rows themselves, labels shuffled.
    decoy = np.concatenate([X, X_test]), rng.permutation(np.concatenate([y, y_test]))
    _, _, honest = train_and_score(name, options, 4, (X, y), (X_test, y_test), NAMES)
    _, _, decoyed = train_and_score(name, options, 4, (X, y), decoy, NAMES)
    assert honest["training"] == decoyed["training"]
    reference = reference_search(name, X, y, seed=4)
    assert max(honest["training"]["cv_accuracy"].values()) == pytest.approx(reference.best_score_, abs=1e-6)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_a_rerun_gives_the_same_numbers_and_the_saved_pipeline_predicts_alike(data, name, tmp_path):
    (X, y), (X_test, _) = data
    options, _ = PROBES[name]
    first = classifiers.build(name, 4, **options).fit(X, y)
    again = classifiers.build(name, 4, **options).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X_test), again.predict_proba(X_test))
    assert first.fit_details_ == again.fit_details_
    other_folds = classifiers.build(name, 5, **options).fit(X, y)
    assert other_folds.fit_details_["cv_accuracy"] != first.fit_details_["cv_accuracy"], "the seed should cut the folds"
    classifiers.get(name).save(first, tmp_path / "model.skops")
    saved = load_skops(tmp_path / "model.skops")
    assert isinstance(saved, Pipeline), "the model file should need only scikit-learn"
    np.testing.assert_array_equal(saved.predict_proba(X_test), first.predict_proba(X_test))


def test_knn_predicts_as_scikit_learns_weighted_knn_and_a_duplicate_takes_every_vote(data):
    (X, y), (X_test, _) = data
    probe = CosineKNN(k=[2, 4, 6], cv=2, seed=0).fit(X, y)
    chosen = probe.fit_details_["selected"]["k"]
    plain = Pipeline([("normalise", Normalizer()), ("knn", KNeighborsClassifier(
        chosen, weights="distance", metric="cosine", algorithm="brute"))]).fit(X, y)
    np.testing.assert_array_equal(probe.predict_proba(X_test), plain.predict_proba(X_test))
    # scikit-learn's rule for weights="distance": a neighbour at distance 0 takes the whole vote.
    weights = vote_weights(np.array([[0.0, 0.5, 1.0], [0.25, 0.5, 1.0]]))
    np.testing.assert_array_equal(weights, [[1.0, 0.0, 0.0], [4.0, 2.0, 1.0]])


def test_folds_shrink_to_the_smallest_class_and_say_so_and_one_row_is_refused():
    X, y = overlapping(12, 2)[0][:8], np.array([0, 0, 1, 1, 2, 2, 2, 2])
    for name in PROBES:
        probe = classifiers.build(name, 0, cv=3)
        assert probe.check_fit(y) == f"{name}: 2-fold cross-validation instead of cv=3: class 0 has only 2 training rows"
        assert probe.fit(X, y).fit_details_["cv"] == 2
        assert classifiers.build(name, 0, cv=2).check_fit(y) is None
        with pytest.raises(FeatpipeError, match=rf"^{name}: choosing its setting by cross-validation needs at least 2 "
                                                r"training rows of every class; class 1 has 1$"):
            probe.fit(X[[0, 1, 2, 4, 5]], y[[0, 1, 2, 4, 5]])


def test_knn_tries_only_the_ks_a_fold_can_hold():
    X, y = overlapping(12, 3)
    probe = CosineKNN(k=[1, 5, 50], cv=2, seed=0).fit(X, y)
    assert set(probe.fit_details_["cv_accuracy"]) == {"1", "5"}
    with pytest.raises(FeatpipeError, match=r"^knn: every k of \[50, 60\] is more than the 6 rows a fold trains on$"):
        CosineKNN(k=[50, 60], cv=2).fit(X, y)
