"""Image sources: read a labelled set into memory, take seeded stratified subsets.

>>> from sources import prepare_dataset
>>> dataset = prepare_dataset("fashion_mnist", seed=42, train_size=2000, test_size=1000)

Sources register themselves by name (:func:`register_source`); importing this
package imports the built-in ones: ``fashion_mnist``, ``cifar10``, ``folder``.
"""

from plumbing.errors import FeatpipeError
from sources import cifar10, fashion_mnist, folder  # noqa: F401 - they register themselves
from sources.dataset import SPLITS, Dataset, SourceSettings, split_from_rows
from sources.registry import get_source, list_sources, register_source
from sources.subsets import stratified_subset

__all__ = [
    "Dataset",
    "SourceSettings",
    "check_every_class_present",
    "get_source",
    "list_sources",
    "prepare_dataset",
    "register_source",
    "take_subset",
]

STREAMS = {"train": "train_subset", "test": "test_subset"}


def prepare_dataset(
    source,
    path=None,
    *,
    seed=0,
    train_size=None,
    test_size=None,
    image_size=64,
    test_fraction=0.2,
    max_bad_fraction=0.05,
    progress=False,
    workers=None,
):
    """Load ``source`` and cut it to the subset sizes: what ``featpipe prepare`` stores.

    Parameters
    ----------
    source : str
        A registered name, see :func:`list_sources`.
    path : path-like or None
        Local copy of the source; None looks in the usual places.
    seed : int
        Seed of the subsets and of the folder source's split and order.
    train_size, test_size : int or None
        Stratified subset sizes; None keeps every image.
    image_size, test_fraction, max_bad_fraction, progress, workers
        See :class:`SourceSettings`.

    Returns
    -------
    Dataset
    """
    settings = SourceSettings(image_size, test_fraction, max_bad_fraction, seed, progress, workers)
    dataset = get_source(source)(path, settings)
    for split, size in (("train", train_size), ("test", test_size)):
        dataset.splits[split] = take_subset(dataset, split, size, seed)
    check_every_class_present(dataset)
    return dataset


def take_subset(dataset, split, size, seed):
    """A stratified, seeded subset of ``size`` rows of ``dataset.splits[split]`` (None: all of it).

    The rows keep their order in the source; the same seed and size give the
    same rows, bit for bit.
    """
    whole = dataset.splits[split]
    if size is None:
        return whole
    key = f"{split}_size"
    available = len(whole.labels)
    if size > available:
        raise FeatpipeError(f"{key}={size} is more than the {available} {split} images of {dataset.source}")
    classes = int((dataset.class_counts(split) > 0).sum())
    if size < classes:
        raise FeatpipeError(f"{key}={size} is fewer than the {classes} classes; a stratified subset needs one of each")
    rows = stratified_subset(whole.labels, size, seed, STREAMS[split])
    return split_from_rows(whole.images, whole.labels, whole.ids, rows)


def check_every_class_present(dataset):
    """Stop if a class has no image in a split: a classifier could neither learn nor be scored on it."""
    for split in SPLITS:
        empty = [name for name, count in zip(dataset.class_names, dataset.class_counts(split)) if count == 0]
        if empty:
            raise FeatpipeError(
                f"{dataset.source}: no {split} images of class(es) {', '.join(map(repr, empty))}; "
                f"every class needs at least one image in each split"
            )
