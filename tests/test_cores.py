"""The scikit-learn heads fit the same model whatever ``n_jobs`` and the threads BLAS may use.

The number of cores reaches a fit in two ways: how many pieces joblib runs
at once (``n_jobs``, and ``-1`` means as many as there are cores) and how
many threads BLAS and OpenMP split each sum over (``threadpool_limits``
here; the machine's cores otherwise).
"""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from threadpoolctl import threadpool_limits

import classifiers

HEADS = {
    "logreg": {"C": [0.01, 0.1, 1.0]},
    "knn": {"k": [1, 5, 15]},
    "svm": {"max_rbf_samples": 100, "nystroem_components": 200},  # past the limit: the approximation
    "rf": {"n_estimators": 30},
}


@pytest.fixture(scope="module")
def hard_problem():
    """Classes that overlap (accuracy near 0.7), and wide enough that BLAS splits its sums over threads."""
    X, y = make_classification(n_samples=1600, n_features=256, n_informative=24, n_classes=4, class_sep=0.6,
                               random_state=0)
    X = X.astype(np.float32)
    return (X[:1200], y[:1200]), (X[1200:], y[1200:])


def fit(name, n_jobs, threads, problem):
    """What the fit chose, and the model's scores of the test rows (always computed on one thread)."""
    (X, y), (X_test, _) = problem
    with threadpool_limits(limits=threads):
        model = classifiers.build(name, 0, **HEADS[name], n_jobs=n_jobs).fit(X, y)
    with threadpool_limits(limits=1):
        scores = model.decision_function(X_test) if hasattr(model, "decision_function") else model.predict_proba(X_test)
    return getattr(model, "fit_details_", None), scores


@pytest.mark.parametrize("name", HEADS)
def test_neither_n_jobs_nor_blas_threads_change_the_model(name, hard_problem):
    details, scores = fit(name, n_jobs=1, threads=1, problem=hard_problem)
    for n_jobs, threads in [(1, 2), (2, 1), (2, 2)]:
        other_details, other_scores = fit(name, n_jobs, threads, hard_problem)
        assert other_details == details, f"n_jobs={n_jobs}, {threads} BLAS threads"
        np.testing.assert_array_equal(other_scores, scores, err_msg=f"n_jobs={n_jobs}, {threads} BLAS threads")

