"""Stratified seeded subsets and splits: proportions, reproducibility, edge cases."""

import numpy as np
import pytest

from plumbing.errors import FeatpipeError
from sources import Dataset, get_source, list_sources, take_subset
from sources.subsets import allocate, stratified_split, stratified_subset
from storage.image_store import ImageSplit


def unbalanced_labels():
    """600 rows: class 0 has 300, class 1 has 200, class 2 has 100, shuffled."""
    labels = np.repeat([0, 1, 2], [300, 200, 100])
    return np.random.default_rng(7).permutation(labels)


def test_allocate_is_proportional_and_sums_to_size():
    assert allocate(np.array([300, 200, 100]), 60).tolist() == [30, 20, 10]
    quota = allocate(np.array([5, 5, 5]), 10)
    assert quota.sum() == 10 and quota.tolist() == [4, 3, 3]


def test_allocate_gives_every_class_at_least_one():
    quota = allocate(np.array([1000, 1, 1]), 3)
    assert quota.tolist() == [1, 1, 1]


def test_allocate_refuses_sizes_out_of_range():
    with pytest.raises(ValueError):
        allocate(np.array([2, 2]), 5)
    with pytest.raises(ValueError):
        allocate(np.array([2, 2, 2]), 2)


def test_subset_keeps_class_proportions_and_source_order():
    labels = unbalanced_labels()
    rows = stratified_subset(labels, 60, seed=1, stream="train_subset")
    assert np.bincount(labels[rows]).tolist() == [30, 20, 10]
    assert np.all(np.diff(rows) > 0), "rows should keep the source's order"


def test_subset_is_reproducible_bit_for_bit_and_depends_on_seed_and_stream():
    labels = unbalanced_labels()
    first = stratified_subset(labels, 60, seed=1, stream="train_subset")
    again = stratified_subset(labels, 60, seed=1, stream="train_subset")
    assert np.array_equal(first, again)
    assert not np.array_equal(first, stratified_subset(labels, 60, seed=2, stream="train_subset"))
    assert not np.array_equal(first, stratified_subset(labels, 60, seed=1, stream="test_subset"))


def test_subset_of_everything_is_every_row():
    labels = unbalanced_labels()
    assert np.array_equal(stratified_subset(labels, 600, seed=0, stream="s"), np.arange(600))


def test_split_holds_out_the_fraction_of_every_class_without_overlap():
    labels = unbalanced_labels()
    train, test = stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[test]).tolist() == [60, 40, 20]
    assert np.bincount(labels[train]).tolist() == [240, 160, 80]
    assert not set(train) & set(test)
    assert np.array_equal(test, stratified_split(labels, 0.2, seed=3)[1])


def test_split_keeps_one_image_on_each_side_of_tiny_classes():
    labels = np.array([0, 0, 1, 1, 1])
    train, test = stratified_split(labels, 0.01, seed=0)
    assert np.bincount(labels[test]).tolist() == [1, 1]
    train, test = stratified_split(labels, 0.99, seed=0)
    assert np.bincount(labels[train]).tolist() == [1, 1]


def tiny_dataset():
    labels = np.arange(12) % 3
    images = np.zeros((12, 4, 4, 1), dtype=np.uint8)
    split = ImageSplit(images, labels, [f"tiny:{i}" for i in range(12)])
    return Dataset("tiny", ["a", "b", "c"], {"train": split, "test": split})


def test_take_subset_names_the_key_when_too_large():
    with pytest.raises(FeatpipeError, match=r"train_size=13 is more than the 12 train images of tiny"):
        take_subset(tiny_dataset(), "train", 13, seed=0)


def test_take_subset_refuses_fewer_rows_than_classes():
    with pytest.raises(FeatpipeError, match=r"test_size=2 is fewer than the 3 classes"):
        take_subset(tiny_dataset(), "test", 2, seed=0)


def test_take_subset_none_keeps_everything():
    dataset = tiny_dataset()
    assert take_subset(dataset, "train", None, seed=0) is dataset.splits["train"]


def test_registry_lists_sources_and_refuses_unknown_names():
    assert list_sources() == ["cifar10", "fashion_mnist", "folder"]
    with pytest.raises(FeatpipeError, match=r"unknown source 'mnist'; expected one of: cifar10, fashion_mnist, folder"):
        get_source("mnist")


def test_nested_draws_hold_every_smaller_draw_and_take_size_rows_of_each_class():
    from sources.subsets import nested_class_draws

    labels = np.arange(30) % 3
    small, large = nested_class_draws(labels, [2, 5], seed=4, repeat=1)
    assert np.bincount(labels[small]).tolist() == [2, 2, 2] and np.bincount(labels[large]).tolist() == [5, 5, 5]
    assert set(small) <= set(large) and list(large) == sorted(large)
    assert not np.array_equal(nested_class_draws(labels, [5], seed=4, repeat=2)[0], large)


def test_explain_and_the_learning_curves_draw_their_images_alike():
    # One home for sampling: explain's sample is the curves' first draw of that size.
    from learning_curves.curves import draw_subsets
    from sources.subsets import per_class_sample

    labels = np.random.default_rng(0).permutation(np.arange(40) % 4)
    np.testing.assert_array_equal(per_class_sample(labels, 3, seed=7), draw_subsets(labels, [3], 1, 7).draws[0].rows)
    assert np.bincount(labels[per_class_sample(labels, 50, seed=7)]).tolist() == [10, 10, 10, 10]  # capped by the class
