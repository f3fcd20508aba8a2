"""The ``knn`` classifier: k nearest neighbours by cosine distance, votes weighted by closeness.

The other standard probe of frozen features (the weighted kNN of DINO, Caron
et al. 2021): rows L2-normalised, neighbours by cosine distance, each
neighbour's vote weighted by the inverse of its distance, and ``k`` chosen by
stratified k-fold cross-validation on the training rows only.

Choosing ``k`` costs one neighbour search per fold, not one per candidate:
every candidate's votes are read off the same sorted neighbours, exactly as
:class:`~sklearn.neighbors.KNeighborsClassifier` would vote with that ``k``.
"""

import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from classifiers.cores import run_pieces, shared
from classifiers.model_files import save_pipeline
from classifiers.pipeline_head import PipelineHead
from classifiers.registry import register
from classifiers.search import candidates, folds_note, probe_folds
from plumbing.errors import FeatpipeError

# Held-out rows searched in one piece: enough for BLAS to run at speed, few enough that a fold splits over the cores.
QUERY_BLOCK = 2000


def knn_pipeline(k):
    """The unfitted pipeline: L2 normalisation + distance-weighted kNN by cosine distance."""
    return Pipeline([
        ("normalise", Normalizer(norm="l2")),
        ("knn", KNeighborsClassifier(n_neighbors=k, weights="distance", metric="cosine", algorithm="brute")),
    ])


def vote_weights(distances):
    """Inverse distances, as scikit-learn's ``weights="distance"`` takes them.

    A query with neighbours at distance 0 (duplicates) gives those weight 1
    and the others 0, as scikit-learn does.

    Parameters
    ----------
    distances : ndarray of shape (n_queries, k)
    """
    with np.errstate(divide="ignore"):
        weights = 1.0 / distances
    exact = np.isinf(weights)
    rows = exact.any(axis=1)
    weights[rows] = exact[rows]
    return weights


def votes_for_every_k(distances, neighbour_labels, ks, n_classes):
    """Each candidate ``k``'s predictions from the sorted neighbours of every query.

    Parameters
    ----------
    distances : ndarray of shape (n_queries, max_k), nearest first
    neighbour_labels : ndarray of shape (n_queries, max_k), class indices
    ks : sorted list of int, each at most ``max_k``
    n_classes : int

    Returns
    -------
    dict of int to ndarray of shape (n_queries,): the predicted class index per ``k``
    """
    n_queries = len(distances)
    cells = np.arange(n_queries)[:, None] * n_classes + neighbour_labels  # (query, class) as one index
    predicted = {}
    for k in ks:
        votes = np.bincount(cells[:, :k].ravel(), weights=vote_weights(distances[:, :k]).ravel(),
                            minlength=n_queries * n_classes).reshape(n_queries, n_classes)
        predicted[k] = votes.argmax(axis=1)  # ties go to the first class, as scikit-learn's vote does
    return predicted


def fold_hits(X, encoded, fit_rows, queries, ks, n_classes):
    """How many of ``queries`` (held-out rows of one fold) each candidate of ``ks`` gets right, in its order.

    ``ks`` are at most the fold's training rows.
    """
    search = knn_pipeline(max(ks)).fit(X[fit_rows], encoded[fit_rows])
    normalised = search.named_steps["normalise"].transform(X[queries])
    distances, neighbours = search.named_steps["knn"].kneighbors(normalised, n_neighbors=max(ks))
    predicted = votes_for_every_k(distances, encoded[fit_rows][neighbours], ks, n_classes)
    return [int(np.sum(predicted[k] == encoded[queries])) for k in ks]


def query_blocks(held_out, size=QUERY_BLOCK):
    """``held_out`` cut into blocks of ``size`` rows: pieces for the cores that don't depend on their number."""
    return [held_out[start : start + size] for start in range(0, len(held_out), size)]


class CosineKNN(PipelineHead):
    """Distance-weighted kNN by cosine distance on L2-normalised rows, ``k`` chosen by cross-validation.

    Parameters
    ----------
    k : sequence of int >= 1
        The candidates. Those larger than a fold's training rows are not
        tried (``fit_details_`` lists those that were); ties in
        cross-validated accuracy go to the smallest.
    cv : int, stratified folds (fewer when a class has fewer training rows)
    n_jobs : int, blocks of held-out rows searched at once (joblib), each on one thread; -1: every core
    seed : int, shuffles the rows before the folds are cut

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        Normalizer + KNeighborsClassifier with the chosen ``k`` on every
        training row; it is what gets saved.
    classes_ : ndarray of shape (n_classes,)
    fit_details_ : dict
        ``selected`` (``{"k": value}``), ``cv`` (folds that ran) and
        ``cv_accuracy`` (mean over folds, per candidate tried).
    """

    def __init__(self, k=(1, 5, 10, 20, 50), cv=3, n_jobs=-1, seed=0):
        self.k = k
        self.cv = cv
        self.n_jobs = n_jobs
        self.seed = seed

    def check_fit(self, y):
        """Refuse labels ``y`` with a single row of a class; the line saying fewer folds than ``cv`` will run, or None."""
        probe_folds(y, self.cv, self.seed, "knn")
        return folds_note("knn", y, self.cv)

    def fit(self, X, y):
        """Choose ``k`` on ``X`` (ndarray of shape (n_samples, n_features)) and ``y``, then refit."""
        folds = probe_folds(y, self.cv, self.seed, "knn")
        classes, encoded = np.unique(y, return_inverse=True)
        splits = list(folds.split(X, encoded))
        fewest = min(len(fit_rows) for fit_rows, _ in splits)
        ks = [k for k in candidates(self.k) if k <= fewest]
        if not ks:
            raise FeatpipeError(f"knn: every k of {list(self.k)} is more than the {fewest} rows a fold trains on")
        blocks = [(fold, block) for fold, (_, held_out) in enumerate(splits) for block in query_blocks(held_out)]
        hits = np.zeros((len(splits), len(ks)))
        with shared(X) as rows:
            pieces = [(rows, encoded, splits[fold][0], block, ks, len(classes)) for fold, block in blocks]
            for (fold, _), block_hits in zip(blocks, run_pieces(fold_hits, pieces, self.n_jobs)):
                hits[fold] += block_hits
        accuracy = hits / np.array([[len(held_out)] for _, held_out in splits])
        means = {k: float(mean) for k, mean in zip(ks, accuracy.mean(axis=0))}
        best = max(ks, key=lambda k: (means[k], -k))
        self.pipeline_ = knn_pipeline(best).fit(X, y)
        self.classes_ = self.pipeline_.classes_
        self.fit_details_ = {
            "selected": {"k": int(best)},
            "cv": len(splits),
            "cv_accuracy": {str(k): round(means[k], 6) for k in ks},
        }
        return self


@register("knn", save=save_pipeline)
def nearest_neighbours(seed, **options):
    """Cosine kNN on L2-normalised features, distance-weighted, k chosen by cross-validation (defaults: :class:`CosineKNN`)."""
    return CosineKNN(seed=seed, **options)
