"""The ``svm`` classifier: standardise, optionally PCA, then an RBF SVC or a linear SVM."""

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from classifiers.registry import register, save_joblib
from plumbing.errors import FeatpipeError


def check_rbf_size(n_rows, max_rbf_samples):
    """Refuse an RBF fit on more rows than ``max_rbf_samples``.

    An RBF SVC's fit time grows with the square of the rows or worse (about
    a minute at 10,000 rows of 4,096 features here, hours at 60,000); past
    the limit a linear SVM is the one that finishes.
    """
    if n_rows > max_rbf_samples:
        raise FeatpipeError(
            f"svm: an RBF SVC on {n_rows} training rows is more than max_rbf_samples={max_rbf_samples} "
            f"(its fit time grows with the square of the rows); set train.svm.kernel: linear, "
            f"or shrink the features with train.svm.pca_components and raise train.svm.max_rbf_samples"
        )


def svm_pipeline(kernel="rbf", C=10.0, gamma="scale", pca_components=None, seed=0):
    """The unfitted scikit-learn pipeline: StandardScaler [+ PCA] + SVC or LinearSVC.

    Standardising matters for SVMs (unlike trees): the RBF kernel and the
    linear SVM's regulariser both see raw distances between feature vectors.
    """
    steps = [("scale", StandardScaler())]
    if pca_components is not None:
        steps.append(("pca", PCA(n_components=pca_components, random_state=seed)))
    if kernel == "linear":
        svc = LinearSVC(C=C, dual="auto", random_state=seed)
    else:
        svc = SVC(kernel="rbf", C=C, gamma=gamma, random_state=seed)
    steps.append(("svc", svc))
    return Pipeline(steps)


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
        Refuse an RBF fit on more training rows than this.
    seed : int

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        The fitted pipeline; it is what gets saved, so the model file needs
        only scikit-learn to load.
    classes_ : ndarray of shape (n_classes,)
    """

    def __init__(self, kernel="rbf", C=10.0, gamma="scale", pca_components=None, max_rbf_samples=10000, seed=0):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.pca_components = pca_components
        self.max_rbf_samples = max_rbf_samples
        self.seed = seed

    def check_size(self, n_rows):
        """Refuse, before any work, a training set this SVM should not fit (RBF past its limit)."""
        if self.kernel == "rbf":
            check_rbf_size(n_rows, self.max_rbf_samples)

    def fit(self, X, y):
        """Fit on ``X`` (ndarray of shape (n_samples, n_features)) and labels ``y``."""
        self.check_size(len(X))
        if self.pca_components is not None and self.pca_components > min(X.shape):
            raise FeatpipeError(
                f"svm: pca_components={self.pca_components} is more than the data allows "
                f"(at most min(rows, features) = {min(X.shape)})"
            )
        self.pipeline_ = svm_pipeline(self.kernel, self.C, self.gamma, self.pca_components, self.seed).fit(X, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict(self, X):
        """Labels for ``X``, ndarray of shape (n_samples,)."""
        return self.pipeline_.predict(X)


def save_svm(model, path):
    """Save the plain scikit-learn pipeline inside ``model``."""
    save_joblib(model.pipeline_, path)


@register("svm", save=save_svm)
def support_vector_machine(seed, **options):
    """Standardise [+ PCA] + SVC (RBF) or LinearSVC (defaults: :class:`FeatureSVM`)."""
    return FeatureSVM(seed=seed, **options)
