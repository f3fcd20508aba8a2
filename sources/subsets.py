"""Stratified, seeded choices of rows: subsets, train/test splits, and the nested draws of curves and explain.

Every choice draws from its own NumPy generator, seeded with ``[seed,
crc32(stream)]``, so the train subset does not change when the test size
does, and the same seed gives the same rows bit for bit.
"""

import zlib

import numpy as np


def generator(seed, stream):
    """A NumPy generator for one named use (``"train_subset"``, ``"split"``, ...) of ``seed``."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def allocate(counts, size):
    """Share ``size`` rows among classes in proportion to ``counts``, each present class getting one or more.

    Largest remainders decide the rows that proportion leaves over; ties go to
    the lower class index, so the result depends on nothing but the inputs.

    Parameters
    ----------
    counts : ndarray of shape (n_classes,)
        Rows available per class.
    size : int
        Rows wanted, at most ``counts.sum()`` and at least the number of classes with rows.

    Returns
    -------
    ndarray of shape (n_classes,), rows to take per class.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    present = counts > 0
    if not int(present.sum()) <= size <= total:
        raise ValueError(f"size {size} must lie between {int(present.sum())} classes and {total} rows")
    # Integer arithmetic: the shares are exact, never at the mercy of rounding.
    quota, remainder = np.divmod(counts * size, total)
    left_over = size - int(quota.sum())
    order = np.lexsort((np.arange(len(counts)), -remainder))
    quota[order[:left_over]] += 1
    for label in np.flatnonzero(present & (quota == 0)):
        quota[np.argmax(quota)] -= 1
        quota[label] = 1
    return quota


def stratified_subset(labels, size, seed, stream):
    """Choose ``size`` rows with the class proportions of ``labels``.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Integer class of each row.
    size : int
        Rows to keep.
    seed : int
    stream : str
        Name of this choice, so that two subsets of one seed differ.

    Returns
    -------
    ndarray of shape (size,), the chosen row indices in increasing order
    (the source's own order is kept).
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    quota = allocate(counts, size)
    rng = generator(seed, stream)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:take] for label, take in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def stratified_split(labels, test_fraction, seed):
    """Hold out about ``test_fraction`` of every class, at least one row each side.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Integer class of each row; every class needs two rows or more.
    test_fraction : float
        In (0, 1).
    seed : int

    Returns
    -------
    (train_rows, test_rows) : two ndarrays of row indices, each in a seeded
    random order so that no class sits in one block.
    """
    labels = np.asarray(labels)
    rng = generator(seed, "split")
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise ValueError(f"class {label} has {len(members)} row; a split needs two")
        held_out = int(np.floor(len(members) * test_fraction + 0.5))
        held_out = min(max(held_out, 1), len(members) - 1)
        test.append(members[:held_out])
        train.append(members[held_out:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def shuffled(count, seed, stream):
    """ndarray of shape (count,): the rows 0..count-1 in a seeded random order."""
    return generator(seed, stream).permutation(count)


def nested_class_draws(labels, sizes, seed, repeat=0):
    """Stratified draws of ``size`` rows of every class, nested: each larger draw holds the smaller ones.

    Each class's rows are shuffled once, by ``numpy.random.default_rng([seed,
    repeat])``, and a size takes the first ``size`` of them: one labelling
    campaign that grows (the learning curves' draws, and the images
    ``explain`` shows).

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), the class of each row
    sizes : sequence of int, rows of every class in each draw, each at most the smallest class's count
    seed : int
    repeat : int, which of the seed's independent campaigns

    Returns
    -------
    list of ndarray, one per size: the chosen row indices, sorted
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, repeat])
    shuffled = [rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)]
    return [np.sort(np.concatenate([order[:size] for order in shuffled])) for size in sizes]


def per_class_sample(labels, per_class, seed):
    """``per_class`` rows of every class (fewer when a class has fewer), chosen by ``seed``: sorted row indices."""
    labels = np.asarray(labels)
    fewest = int(np.unique(labels, return_counts=True)[1].min())
    return nested_class_draws(labels, [min(per_class, fewest)], seed)[0]
