"""2-D pictures of a feature space: a seeded t-SNE of (a stratified sample of) its test rows."""

import numpy as np

from plumbing.errors import FeatpipeError

EMBEDDING_ROWS = 2000
EMBEDDING_PCA = 50


def embedding_rows(labels, max_rows=EMBEDDING_ROWS, seed=0):
    """Which rows to embed: all of them, or a seeded stratified sample of ``max_rows``.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
    max_rows : int
    seed : int

    Returns
    -------
    ndarray of shape (min(n_samples, max_rows),), sorted row indices
    """
    labels = np.asarray(labels)
    if len(labels) <= max_rows:
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    # Stratifying needs two rows of every class; a rarer class is then left to chance.
    counts = np.unique(labels, return_counts=True)[1]
    stratify = labels if counts.min() >= 2 and len(counts) <= max_rows else None
    rows, _ = train_test_split(np.arange(len(labels)), train_size=max_rows, random_state=seed, stratify=stratify)
    return np.sort(rows)


def tsne_embedding(X, seed, pca_components=EMBEDDING_PCA):
    """A seeded 2-D t-SNE of ``X``: standardised, reduced by PCA, then embedded.

    Standardising keeps a few large feature columns (or bright pixels) from
    deciding every distance; PCA to ``pca_components`` first is the usual
    t-SNE recipe: it drops noise and makes the neighbour search cheap on
    4,096 columns.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), n_samples >= 4
    seed : int
    pca_components : int, kept when ``n_features`` and ``n_samples`` allow it

    Returns
    -------
    ndarray of shape (n_samples, 2), float32
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) < 4:
        raise FeatpipeError(f"embedding: expected features [N, D] with N >= 4, got shape {X.shape}")
    scaled = StandardScaler().fit_transform(X)
    components = min(pca_components, *scaled.shape)
    if components < scaled.shape[1]:
        scaled = PCA(n_components=components, svd_solver="randomized", random_state=seed).fit_transform(scaled)
    # sklearn requires perplexity < n_samples; 30 is its default for real sizes.
    perplexity = min(30.0, (len(X) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(scaled).astype(np.float32)
