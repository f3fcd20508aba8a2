"""The ``logreg`` classifier: the linear probe, standardised features and an L2 logistic regression.

The standard way to score frozen features (Kornblith, Shlens & Le 2019, "Do
Better ImageNet Models Transfer Better?"; the linear probes of CLIP): the
inverse regularisation strength ``C`` is chosen by stratified k-fold
cross-validation on the training rows only, the scaler refitted inside every
fold, and the best pipeline refitted on every training row.
"""

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from classifiers.registry import register, save_joblib
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


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Standardise, then an L2 logistic regression whose ``C`` is chosen by cross-validation.

    Parameters
    ----------
    C : sequence of float > 0
        The candidates; ties in cross-validated accuracy go to the smallest
        (the most regularised).
    cv : int, stratified folds (fewer when a class has fewer training rows)
    max_iter : int, Newton-CG iterations at most
    n_jobs : int, fits run at once (joblib; one by default, since BLAS already uses every core)
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

    def __init__(self, C=(0.001, 0.01, 0.1, 1.0), cv=3, max_iter=1000, n_jobs=1, seed=0):
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
        """Choose ``C`` on ``X`` (ndarray of shape (n_samples, n_features)) and ``y``, then refit."""
        folds = probe_folds(y, self.cv, self.seed, "logreg")
        grid = candidates(self.C)
        search = GridSearchCV(
            probe_pipeline(max_iter=self.max_iter, seed=self.seed), {"logreg__C": grid}, scoring="accuracy",
            cv=folds, n_jobs=self.n_jobs, refit=True, error_score="raise",
        ).fit(X, y)
        self.pipeline_ = search.best_estimator_
        self.classes_ = self.pipeline_.classes_
        scores = search.cv_results_["mean_test_score"]
        self.fit_details_ = {
            "selected": {"C": float(search.best_params_["logreg__C"])},
            "cv": folds.get_n_splits(),
            "cv_accuracy": {str(value): round(float(score), 6) for value, score in zip(grid, scores)},
        }
        return self

    def predict_proba(self, X):
        """Class probabilities, ndarray of shape (n_samples, n_classes)."""
        return self.pipeline_.predict_proba(X)

    def decision_function(self, X):
        """Decision values, ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes."""
        return self.pipeline_.decision_function(X)

    def predict(self, X):
        """Labels for ``X``, ndarray of shape (n_samples,)."""
        return self.pipeline_.predict(X)


def save_probe(model, path):
    """Save the plain scikit-learn pipeline inside ``model`` (needs only scikit-learn to load)."""
    save_joblib(model.pipeline_, path)


@register("logreg", save=save_probe)
def linear_probe(seed, **options):
    """Standardise + L2 logistic regression, C chosen by cross-validation on the training rows (defaults: :class:`LinearProbe`)."""
    return LinearProbe(seed=seed, **options)
