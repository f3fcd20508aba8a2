"""The ``logreg`` classifier: the linear probe, standardised features and an L2 logistic regression.

The standard way to score frozen features (Kornblith, Shlens & Le 2019, "Do
Better ImageNet Models Transfer Better?"; the linear probes of CLIP): the
inverse regularisation strength ``C`` is chosen by stratified k-fold
cross-validation on the training rows only, the scaler refitted inside every
fold, and the best pipeline refitted on every training row.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from classifiers.cores import on_one_thread, run_pieces, shared
from classifiers.model_files import save_pipeline
from classifiers.pipeline_head import PipelineHead
from classifiers.registry import register
from classifiers.search import candidates, folds_note, probe_folds


def probe_pipeline(C=1.0, max_iter=1000, seed=0):
    """The unfitted pipeline: StandardScaler + LogisticRegression (L2, multinomial, Newton-CG).

    Newton-CG rather than scikit-learn's default lbfgs: on thousands of
    standardised features it reaches the same optimum several times faster
    (docs/learners.md has the measurement).
    """
    return Pipeline([
        ("scale", StandardScaler()),
        ("logreg", LogisticRegression(C=C, solver="newton-cg", max_iter=max_iter, random_state=seed)),
    ])


def fold_accuracy(X, y, fit_rows, held_out, C, max_iter, seed):
    """Accuracy on one fold's held-out rows of the pipeline with ``C`` fitted on its other rows."""
    model = probe_pipeline(C, max_iter, seed).fit(X[fit_rows], y[fit_rows])
    return float(np.mean(model.predict(X[held_out]) == y[held_out]))


class LinearProbe(PipelineHead):
    """Standardise, then an L2 logistic regression whose ``C`` is chosen by cross-validation.

    Parameters
    ----------
    C : sequence of float > 0
        The candidates; ties in cross-validated accuracy go to the smallest
        (the most regularised).
    cv : int, stratified folds (fewer when a class has fewer training rows)
    max_iter : int, Newton-CG iterations at most
    n_jobs : int, fits at once (joblib), each on one thread (:mod:`classifiers.cores`); -1: every core
    seed : int, shuffles the rows before the folds are cut

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        StandardScaler + LogisticRegression refitted on every training row
        with the chosen ``C``; it is what gets saved.
    classes_ : ndarray of shape (n_classes,)
    fit_details_ : dict
        ``selected`` (``{"C": value}``), ``cv`` (folds that ran) and
        ``cv_accuracy`` (mean over folds, per candidate).
    """

    def __init__(self, C=(0.001, 0.01, 0.1, 1.0), cv=3, max_iter=1000, n_jobs=-1, seed=0):
        self.C = C
        self.cv = cv
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.seed = seed

    def check_fit(self, y):
        """Refuse labels ``y`` with a single row of a class; the line saying fewer folds than ``cv`` will run, or None."""
        probe_folds(y, self.cv, self.seed, "logreg")
        return folds_note("logreg", y, self.cv)

    def fit(self, X, y):
        """Choose ``C`` on ``X`` (ndarray of shape (n_samples, n_features)) and ``y``, then refit.

        Every (candidate, fold) fit is a piece of :func:`classifiers.cores.run_pieces`,
        and the refit runs on one thread too, so the model is the same on any number of cores.
        """
        splits = list(probe_folds(y, self.cv, self.seed, "logreg").split(X, y))
        grid = candidates(self.C)
        with shared(X) as rows:
            pieces = [(rows, y, fit_rows, held_out, C, self.max_iter, self.seed) for C in grid for fit_rows, held_out in splits]
            scores = np.reshape(run_pieces(fold_accuracy, pieces, self.n_jobs), (len(grid), len(splits)))
        means = scores.mean(axis=1)
        best = grid[int(np.argmax(means))]  # the first of the best: ties go to the smallest C
        self.pipeline_ = on_one_thread(probe_pipeline(best, self.max_iter, self.seed).fit, X, y)
        self.classes_ = self.pipeline_.classes_
        self.fit_details_ = {
            "selected": {"C": float(best)},
            "cv": len(splits),
            "cv_accuracy": {str(value): round(float(score), 6) for value, score in zip(grid, means)},
        }
        return self


@register("logreg", save=save_pipeline)
def linear_probe(seed, **options):
    """Standardise + L2 logistic regression, C chosen by cross-validation on the training rows (defaults: :class:`LinearProbe`)."""
    return LinearProbe(seed=seed, **options)
