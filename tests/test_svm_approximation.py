"""The RBF SVM at every size: exact up to max_rbf_samples rows, a Nystroem approximation past it."""

import numpy as np
import pytest
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import RidgeClassifier

from classifiers import svm
from classifiers.svm import FeatureSVM, least_squares_svm, rbf_gamma
from plumbing.errors import FeatpipeError


def rings(n, seed):
    """Two classes no line separates: points near the origin and points on a ring around them, in 6-D."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    directions = rng.normal(size=(n, 6))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radius = np.where(labels == 1, 3.0, 1.0) + rng.normal(0.0, 0.35, size=n)
    return (directions * radius[:, None]).astype(np.float32), labels


@pytest.fixture(scope="module")
def data():
    return rings(400, 0), rings(400, 1)


def test_at_or_below_the_limit_the_exact_svc_runs_unchanged(data):
    (X, y), (X_test, _) = data
    model = FeatureSVM(C=10.0, max_rbf_samples=len(X), seed=0).fit(X, y)
    # The exact pipeline written out plainly: what `train` has always fitted.
    reference = Pipeline([("scale", StandardScaler()), ("svc", SVC(kernel="rbf", C=10.0, gamma="scale", random_state=0))])
    reference.fit(X, y)
    assert [name for name, _ in model.pipeline_.steps] == ["scale", "svc"]
    np.testing.assert_array_equal(model.decision_function(X_test), reference.decision_function(X_test))
    assert model.fit_details_ is None and model.check_fit(y) is None


def test_past_the_limit_the_kernel_is_approximated_and_said(data):
    (X, y), _ = data
    model = FeatureSVM(max_rbf_samples=len(X) - 1, nystroem_components=50, seed=3)
    assert model.check_fit(y) == (
        f"svm: {len(X)} training rows are more than max_rbf_samples={len(X) - 1}: the RBF kernel is approximated "
        "(Nystroem, 50 components, then a least-squares linear SVM)"
    )
    model.fit(X, y)
    assert [name for name, _ in model.pipeline_.steps] == ["scale", "nystroem", "svc"]
    assert type(model.pipeline_.named_steps["svc"]).__name__ == "RidgeClassifier"
    scaled = StandardScaler().fit_transform(X)
    assert model.fit_details_ == {
        "kernel": "rbf", "approximation": "nystroem", "n_components": 50,
        "gamma": pytest.approx(1.0 / (X.shape[1] * scaled.var())), "solver": "least squares",
        "max_rbf_samples": len(X) - 1,
    }
    np.testing.assert_array_equal(model.classes_, [0, 1])
    # More components than rows: one per row, and the record says so.
    assert FeatureSVM(max_rbf_samples=10, nystroem_components=5000).fit(X, y).fit_details_["n_components"] == len(X)
    assert FeatureSVM(kernel="linear", max_rbf_samples=10).fit(X, y).fit_details_ is None


def test_the_nystroem_map_is_scikit_learns():
    X, _ = rings(300, 4)
    ours = svm.fit_nystroem(X, gamma=0.4, n_components=120, seed=7)
    reference = Nystroem(kernel="rbf", gamma=0.4, n_components=120, random_state=7).fit(X)
    np.testing.assert_array_equal(ours.component_indices_, reference.component_indices_)
    np.testing.assert_array_equal(ours.components_, reference.components_)
    assert ours.normalization_.dtype == reference.normalization_.dtype
    np.testing.assert_allclose(ours.normalization_, reference.normalization_, rtol=1e-3, atol=1e-4)
    X_new, _ = rings(50, 5)
    np.testing.assert_allclose(ours.transform(X_new), reference.transform(X_new), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_least_squares_svm_is_ridge_classifier_on_the_mapped_rows(monkeypatch, n_classes):
    X, _ = rings(500, 2)
    y = np.arange(len(X)) % n_classes
    nystroem = Nystroem(gamma=0.2, n_components=60, random_state=0).fit(X)
    monkeypatch.setattr(svm, "MAP_BLOCK", 128)  # several blocks, the last one short
    head = least_squares_svm(nystroem, X, y, C=4.0, n_jobs=1)
    # The rows mapped block by block, as the fit maps them (float32 sums differ in the last digits by block size).
    mapped = np.concatenate([nystroem.transform(X[start : start + 128]) for start in range(0, len(X), 128)])
    reference = RidgeClassifier(alpha=1.0 / 8.0).fit(mapped.astype(np.float64), y)
    assert head.coef_.shape == reference.coef_.shape
    np.testing.assert_allclose(head.coef_, reference.coef_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(head.intercept_, reference.intercept_, rtol=1e-9, atol=1e-9)
    X_new, _ = rings(100, 3)
    np.testing.assert_array_equal(head.predict(nystroem.transform(X_new)), reference.predict(nystroem.transform(X_new)))


@pytest.mark.parametrize("gamma", ["scale", "auto", 0.3])
def test_the_approximation_approximates_the_kernel_the_exact_svc_uses(data, gamma):
    (X, y), _ = data
    X, y = X[:150], y[:150]
    model = FeatureSVM(gamma=gamma, max_rbf_samples=1, nystroem_components=len(X), seed=0).fit(X, y)
    scaled = StandardScaler().fit_transform(X)
    # SVC's gamma, from scikit-learn's documentation: "scale" is 1 / (n_features * X.var()), "auto" 1 / n_features.
    expected_gamma = {"scale": 1.0 / (X.shape[1] * scaled.var()), "auto": 1.0 / X.shape[1]}.get(gamma, gamma)
    assert rbf_gamma(gamma, scaled) == pytest.approx(expected_gamma)
    mapped = model.pipeline_[:-1].transform(X)
    # With one component per row, the Nystroem map reproduces the exact kernel matrix.
    np.testing.assert_allclose(mapped @ mapped.T, rbf_kernel(scaled, gamma=expected_gamma), atol=2e-4)


def test_the_approximation_keeps_rbf_quality_where_a_linear_svm_fails(data):
    (X, y), (X_test, y_test) = data
    exact = FeatureSVM(max_rbf_samples=len(X), seed=0).fit(X, y).score(X_test, y_test)
    approximate = FeatureSVM(max_rbf_samples=len(X) - 1, nystroem_components=100, seed=0).fit(X, y).score(X_test, y_test)
    linear = FeatureSVM(kernel="linear").fit(X, y).score(X_test, y_test)
    assert linear < 0.7 < exact, "the rings should need a kernel"
    assert approximate >= exact - 0.02, (approximate, exact)


def test_pca_wider_than_the_data_is_refused(data):
    (X, y), _ = data
    with pytest.raises(FeatpipeError, match=r"pca_components=20 is more than the data allows \(at most min\(rows, features\) = 6\)"):
        FeatureSVM(pca_components=20, max_rbf_samples=1).fit(X, y)
    approximated = FeatureSVM(pca_components=3, max_rbf_samples=1, nystroem_components=20).fit(X, y)
    assert [name for name, _ in approximated.pipeline_.steps] == ["scale", "pca", "nystroem", "svc"]
