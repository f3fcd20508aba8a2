"""The ``svm`` classifier: standardise, optionally PCA, then an RBF SVC or a linear SVM.

An exact RBF SVC's fit time grows with the square of the training rows or
worse (about 11 minutes at 10,000 rows of 4,096 features on 2 cores), so past
``max_rbf_samples`` rows the RBF kernel is approximated instead: a Nystroem
map onto ``nystroem_components`` landmark rows, then a linear SVM on the
mapped rows, whose fit time grows about linearly with the rows. At or below
the limit the exact SVC runs, exactly as it always has.
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import Nystroem
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from classifiers.registry import register, save_joblib
from plumbing.errors import FeatpipeError


def preprocessing_steps(pca_components=None, seed=0):
    """The unfitted steps before the SVM: StandardScaler [+ PCA].

    Standardising matters for SVMs (unlike trees): the RBF kernel and the
    linear SVM's regulariser both see raw distances between feature vectors.
    """
    steps = [("scale", StandardScaler())]
    if pca_components is not None:
        steps.append(("pca", PCA(n_components=pca_components, random_state=seed)))
    return steps


def svm_pipeline(kernel="rbf", C=10.0, gamma="scale", pca_components=None, seed=0):
    """The unfitted exact pipeline: StandardScaler [+ PCA] + SVC (RBF) or LinearSVC."""
    steps = preprocessing_steps(pca_components, seed)
    if kernel == "linear":
        svc = LinearSVC(C=C, dual="auto", random_state=seed)
    else:
        svc = SVC(kernel="rbf", C=C, gamma=gamma, random_state=seed)
    steps.append(("svc", svc))
    return Pipeline(steps)


def rbf_gamma(gamma, X):
    """The number SVC's ``gamma`` stands for on ``X`` (ndarray of shape (n_samples, n_features)).

    ``"scale"`` is ``1 / (n_features * X.var())`` and ``"auto"`` is
    ``1 / n_features``, as :class:`sklearn.svm.SVC` defines them, so the
    approximation approximates the kernel the exact SVC would use.
    """
    if gamma == "scale":
        variance = float(X.var(dtype=np.float64))
        return 1.0 / (X.shape[1] * variance) if variance > 0 else 1.0
    if gamma == "auto":
        return 1.0 / X.shape[1]
    return float(gamma)


def approximate_rbf_fit(X, y, C=10.0, gamma="scale", pca_components=None, n_components=4000, seed=0):
    """Fit StandardScaler [+ PCA] + Nystroem (RBF) + LinearSVC on ``X`` and ``y``.

    The steps are fitted one by one, so that ``gamma="scale"`` can be
    resolved on the standardised rows, as the exact SVC resolves it, and
    then put in one fitted scikit-learn pipeline (what gets saved).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    n_components : int, landmark rows of the Nystroem map (at most ``n_samples``)

    Returns
    -------
    pipeline : fitted sklearn.pipeline.Pipeline
    details : dict, what ran: ``kernel``, ``approximation``, ``n_components``, ``gamma``
    """
    steps = preprocessing_steps(pca_components, seed)
    mapped = Pipeline(steps).fit_transform(X)
    gamma_value = rbf_gamma(gamma, mapped)
    components = min(n_components, len(X))
    nystroem = Nystroem(kernel="rbf", gamma=gamma_value, n_components=components, random_state=seed)
    mapped = nystroem.fit_transform(mapped)
    svc = LinearSVC(C=C, dual="auto", random_state=seed).fit(mapped, y)
    details = {"kernel": "rbf", "approximation": "nystroem", "n_components": components, "gamma": gamma_value}
    return Pipeline([*steps, ("nystroem", nystroem), ("svc", svc)]), details


class FeatureSVM(ClassifierMixin, BaseEstimator):
    """An SVM on feature vectors, with params named as in ``train.svm``.

    Parameters
    ----------
    kernel : {"rbf", "linear"}
        ``linear`` uses LinearSVC (liblinear), which scales to large N.
    C : float
    gamma : "scale", "auto" or float, RBF only
    pca_components : int or None
        Reduce the standardised features with PCA first.
    max_rbf_samples : int
        Up to this many training rows the RBF SVC is exact; past it the
        kernel is approximated (:func:`approximate_rbf_fit`).
    nystroem_components : int
        Landmark rows of the approximation.
    seed : int

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        The fitted pipeline; it is what gets saved, so the model file needs
        only scikit-learn to load.
    classes_ : ndarray of shape (n_classes,)
    fit_details_ : dict or None
        What ran when it was not the plain SVC or LinearSVC: the approximation,
        its components and gamma.
    """

    def __init__(self, kernel="rbf", C=10.0, gamma="scale", pca_components=None, max_rbf_samples=10000,
                 nystroem_components=4000, seed=0):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.pca_components = pca_components
        self.max_rbf_samples = max_rbf_samples
        self.nystroem_components = nystroem_components
        self.seed = seed

    def approximates(self, n_rows):
        """Whether a fit on ``n_rows`` training rows approximates the RBF kernel."""
        return self.kernel == "rbf" and n_rows > self.max_rbf_samples

    def check_fit(self, y):
        """The line to say before a fit on labels ``y`` (ndarray of shape (n_samples,)) that is not what the settings name, or None."""
        n_rows = len(y)
        if not self.approximates(n_rows):
            return None
        return (f"svm: {n_rows} training rows are more than max_rbf_samples={self.max_rbf_samples}: the RBF kernel "
                f"is approximated (Nystroem, {min(self.nystroem_components, n_rows)} components, then a linear SVM)")

    def fit(self, X, y):
        """Fit on ``X`` (ndarray of shape (n_samples, n_features)) and labels ``y``."""
        if self.pca_components is not None and self.pca_components > min(X.shape):
            raise FeatpipeError(
                f"svm: pca_components={self.pca_components} is more than the data allows "
                f"(at most min(rows, features) = {min(X.shape)})"
            )
        if self.approximates(len(X)):
            self.pipeline_, details = approximate_rbf_fit(
                X, y, self.C, self.gamma, self.pca_components, self.nystroem_components, self.seed)
            self.fit_details_ = {**details, "max_rbf_samples": self.max_rbf_samples}
        else:
            self.pipeline_ = svm_pipeline(self.kernel, self.C, self.gamma, self.pca_components, self.seed).fit(X, y)
            self.fit_details_ = None
        self.classes_ = self.pipeline_.classes_
        return self

    def decision_function(self, X):
        """Decision values, ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes."""
        return self.pipeline_.decision_function(X)

    def predict(self, X):
        """Labels for ``X``, ndarray of shape (n_samples,)."""
        return self.pipeline_.predict(X)


def save_svm(model, path):
    """Save the plain scikit-learn pipeline inside ``model``."""
    save_joblib(model.pipeline_, path)


@register("svm", save=save_svm)
def support_vector_machine(seed, **options):
    """Standardise [+ PCA] + SVC (RBF, approximated past max_rbf_samples rows) or LinearSVC (defaults: :class:`FeatureSVM`)."""
    return FeatureSVM(seed=seed, **options)
