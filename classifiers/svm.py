"""The ``svm`` classifier: standardise, optionally PCA, then an RBF SVC or a linear SVM.

An exact RBF SVC's fit time grows with the square of the training rows or
worse (about 11 minutes at 10,000 rows of 4,096 features on 2 cores), so past
``max_rbf_samples`` rows the RBF kernel is approximated instead: a Nystroem
map onto ``nystroem_components`` landmark rows, then a linear SVM on the
mapped rows, whose fit time grows about linearly with the rows. At or below
the limit the exact SVC runs, exactly as it always has.

The linear SVM of the approximation is a least-squares SVM (Suykens &
Vandewalle 1999): the squared hinge loss of scikit-learn's LinearSVC
replaced by the squared error against +-1 targets, one class against the
rest, which is scikit-learn's RidgeClassifier. Its fit is one pass over the
mapped rows, in blocks that run on every core, and a linear solve, where
LinearSVC iterates on one core: at 60,000 rows a fraction of the time, at
the same accuracy (docs/learners.md has the measurement).
"""

import copy

import numpy as np
import scipy.linalg
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelBinarizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from classifiers.cores import on_one_thread, run_pieces, shared
from classifiers.model_files import save_pipeline
from classifiers.pipeline_head import PipelineHead
from classifiers.registry import register
from plumbing.errors import FeatpipeError

# Training rows mapped and added to the normal equations in one piece: a fixed size, so that
# the sums, and the model, do not depend on how many cores share the pieces.
MAP_BLOCK = 2000


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


def approximate_rbf_fit(X, y, C=10.0, gamma="scale", pca_components=None, n_components=4000, seed=0, n_jobs=-1):
    """Fit StandardScaler [+ PCA] + Nystroem (RBF) + a least-squares linear SVM on ``X`` and ``y``.

    The steps are fitted one by one, so that ``gamma="scale"`` can be
    resolved on the standardised rows, as the exact SVC resolves it, and
    then put in one fitted scikit-learn pipeline (what gets saved). Every
    step runs on one thread, or in pieces on one thread each
    (:mod:`classifiers.cores`): the model is the same on any number of cores.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    n_components : int, landmark rows of the Nystroem map (at most ``n_samples``)
    n_jobs : int, pieces of the linear fit at once (joblib); -1: every core

    Returns
    -------
    pipeline : fitted sklearn.pipeline.Pipeline
    details : dict, what ran: ``kernel``, ``approximation``, ``n_components``, ``gamma``, ``solver``
    """
    steps = preprocessing_steps(pca_components, seed)
    mapped = on_one_thread(Pipeline(steps).fit_transform, X)
    gamma_value = rbf_gamma(gamma, mapped)
    components = min(n_components, len(X))
    nystroem = on_one_thread(fit_nystroem, mapped, gamma_value, components, seed)
    head = least_squares_svm(nystroem, mapped, y, C, n_jobs)
    details = {"kernel": "rbf", "approximation": "nystroem", "n_components": components, "gamma": gamma_value,
               "solver": "least squares"}
    return Pipeline([*steps, ("nystroem", nystroem), ("svc", head)]), details


def fit_nystroem(X, gamma, n_components, seed):
    """``Nystroem(kernel="rbf", gamma=gamma, n_components=n_components, random_state=seed).fit(X)``, sooner.

    The same landmarks, kernel and map as scikit-learn's ``fit``, but the
    inverse square root of the landmarks' kernel K comes from its symmetric
    eigendecomposition (``eigh``) rather than its SVD, several times faster
    at 4,000 landmarks. scikit-learn's SVD of the symmetric K has U = sign(l) q,
    S = |l| and V = q for each eigenpair (l, q), so its ``U / sqrt(S) @ V``
    is the sum of sign(l) q q' / sqrt(|l|) written here (S clipped at 1e-12,
    as there). The result is a plain fitted ``Nystroem``: model files still
    need only scikit-learn, and a test holds it to scikit-learn's own fit.
    """
    from sklearn.metrics.pairwise import rbf_kernel
    from sklearn.utils import check_random_state

    nystroem = Nystroem(kernel="rbf", gamma=gamma, n_components=n_components, random_state=seed)
    landmarks = check_random_state(seed).permutation(len(X))[:n_components]
    basis = X[landmarks]
    values, vectors = np.linalg.eigh(rbf_kernel(basis, gamma=gamma))
    scale = np.where(values < 0, -1.0, 1.0) / np.sqrt(np.maximum(np.abs(values), 1e-12))
    nystroem.normalization_ = (vectors * scale.astype(vectors.dtype)) @ vectors.T
    nystroem.components_, nystroem.component_indices_ = basis, landmarks
    nystroem.n_features_in_, nystroem._n_features_out = X.shape[1], n_components
    return nystroem


def normal_equations_piece(nystroem, X, Y):
    """One block's share of the normal equations: mapped rows Phi, then Phi'Phi, Phi'Y and Phi's column sums (float64)."""
    mapped = nystroem.transform(X).astype(np.float64)
    return mapped.T @ mapped, mapped.T @ Y, mapped.sum(axis=0)


def least_squares_svm(nystroem, X, y, C, n_jobs):
    """scikit-learn's ``RidgeClassifier(alpha=1 / (2 * C))`` on ``nystroem``'s map of ``X``, fitted blockwise.

    ``alpha = 1 / (2C)`` weighs the squared errors as LinearSVC weighs its
    squared hinge losses with the same ``C``. The fit solves the ridge
    normal equations, with the intercept left unpenalised as RidgeClassifier
    leaves it, from sums over blocks of :data:`MAP_BLOCK` mapped rows: the
    mapped matrix is never held whole, and the blocks run on every core.

    Returns
    -------
    sklearn.linear_model.RidgeClassifier, fitted: it predicts as if
    ``RidgeClassifier(alpha=1 / (2 * C)).fit(nystroem.transform(X), y)`` had run
    """
    binarizer = LabelBinarizer(pos_label=1, neg_label=-1)
    Y = binarizer.fit_transform(y).astype(np.float64)
    starts = range(0, len(X), MAP_BLOCK)
    # The map's two large arrays (130 MB at 4,000 x 4,096) go to the workers once, not once a block.
    with shared(nystroem.components_) as components, shared(nystroem.normalization_) as normalization:
        mapper = copy.copy(nystroem)
        mapper.components_, mapper.normalization_ = components, normalization
        pieces = ((mapper, X[start : start + MAP_BLOCK], Y[start : start + MAP_BLOCK]) for start in starts)
        gram = cross = total = 0.0
        # Added in the blocks' order as they come, so that a few 4,000 x 4,000 sums are held at a time, not all.
        for block_gram, block_cross, block_total in run_pieces(normal_equations_piece, pieces, n_jobs, as_generator=True):
            gram, cross, total = gram + block_gram, cross + block_cross, total + block_total
    mean, target_mean = total / len(X), Y.mean(axis=0)
    gram -= len(X) * np.outer(mean, mean)  # centred: the intercept is not penalised
    cross -= len(X) * np.outer(mean, target_mean)
    gram[np.diag_indices_from(gram)] += 1.0 / (2.0 * C)
    coef = on_one_thread(scipy.linalg.solve, gram, cross, assume_a="pos")
    intercept = target_mean - mean @ coef
    if coef.shape[1] == 1:  # two classes: one column, which RidgeClassifier keeps flat
        coef, intercept = coef[:, 0], intercept[0]
    head = RidgeClassifier(alpha=1.0 / (2.0 * C))
    head.coef_, head.intercept_ = coef.T, intercept
    head._label_binarizer, head.classes_, head.n_features_in_ = binarizer, binarizer.classes_, gram.shape[0]
    return head


class FeatureSVM(PipelineHead):
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
    n_jobs : int
        Pieces of the approximation's fit at once (joblib), each on one
        thread; -1: every core. The exact SVC and LinearSVC run on one core.
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
                 nystroem_components=4000, n_jobs=-1, seed=0):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.pca_components = pca_components
        self.max_rbf_samples = max_rbf_samples
        self.nystroem_components = nystroem_components
        self.n_jobs = n_jobs
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
                f"is approximated (Nystroem, {min(self.nystroem_components, n_rows)} components, "
                f"then a least-squares linear SVM)")

    def fit(self, X, y):
        """Fit on ``X`` (ndarray of shape (n_samples, n_features)) and labels ``y``."""
        if self.pca_components is not None and self.pca_components > min(X.shape):
            raise FeatpipeError(
                f"svm: pca_components={self.pca_components} is more than the data allows "
                f"(at most min(rows, features) = {min(X.shape)})"
            )
        if self.approximates(len(X)):
            self.pipeline_, details = approximate_rbf_fit(
                X, y, self.C, self.gamma, self.pca_components, self.nystroem_components, self.seed, self.n_jobs)
            self.fit_details_ = {**details, "max_rbf_samples": self.max_rbf_samples}
        else:
            self.pipeline_ = svm_pipeline(self.kernel, self.C, self.gamma, self.pca_components, self.seed).fit(X, y)
            self.fit_details_ = None
        self.classes_ = self.pipeline_.classes_
        return self


@register("svm", save=save_pipeline)
def support_vector_machine(seed, **options):
    """Standardise [+ PCA] + SVC (RBF, approximated past max_rbf_samples rows) or LinearSVC (defaults: :class:`FeatureSVM`)."""
    return FeatureSVM(seed=seed, **options)
