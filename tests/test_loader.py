"""The seeded mini-batches every data set shares (minisnn/data/loader.py): defaults, checks, documented streams."""
import numpy as np
import pytest

from minisnn.data import BatchIterator
from minisnn.data.loader import Batches, Dataset


def test_batches_made_without_options_keep_the_stored_order_and_every_sample_and_shuffle_with_seed_0():
    plain = Batches([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], 4)  # labels as a list
    assert len(plain) == 3 and list(plain.order(0)) == list(range(10)) == list(plain.order(5))
    assert [list(index) for _, index in plain.steps(0, 0)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for epoch in (0, 1):
        np.testing.assert_array_equal(Batches(np.arange(10), 4, shuffle=True).order(epoch),
                                      Batches(np.arange(10), 4, shuffle=True, seed=0).order(epoch))
    images = np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2)
    for epoch in (0, 1):
        told = BatchIterator(images, np.arange(10), 4, shuffle=True, seed=0).batches(epoch)
        for (x, y), (x2, y2) in zip(BatchIterator(images, np.arange(10), 4, shuffle=True).batches(epoch), told):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)


def test_the_order_and_augmentation_come_from_the_documented_generators():
    # the module's promise: epoch e's order is default_rng([seed, e, 0]).permutation(n) and its batch s is
    # augmented by default_rng([seed, e, 1, s]), so what a step saw can be worked out from (seed, e, s) alone
    for seed, epoch in ((0, 0), (7, 3)):
        np.testing.assert_array_equal(Batches(np.arange(30), 8, shuffle=True, seed=seed).order(epoch),
                                      np.random.default_rng([seed, epoch, 0]).permutation(30))
    draws = []
    augment = lambda batch, rng: draws.append(rng.random()) or batch  # noqa: E731
    list(BatchIterator(np.zeros((30, 1, 2, 2)), np.arange(30), 8, shuffle=True, seed=7, augment=augment).batches(3))
    assert draws == [np.random.default_rng([7, 3, 1, step]).random() for step in range(4)]


def test_images_and_labels_may_be_nested_lists():
    images = [[[[0.0, 0.5]]], [[[1.0, 0.25]]], [[[0.75, 0.0]]]]
    x, y = next(BatchIterator(images, [2, 0, 1], 3).batches())
    np.testing.assert_array_equal(x, np.array(images, np.float32))
    assert y.tolist() == [2, 0, 1] and y.dtype == np.int64


def test_labels_must_be_integers_of_one_axis_and_the_seed_a_non_negative_int():
    for labels in (np.arange(4.0), np.arange(4).reshape(2, 2), np.array(["a", "b"])):
        with pytest.raises(ValueError, match=r"Batches: labels must be integers \[N\]"):
            Batches(labels, 2)
    for seed in (-1, 1.5, "3"):
        with pytest.raises(ValueError, match="BatchIterator: seed must be a non-negative int"):
            BatchIterator(np.zeros((4, 1, 2, 2)), np.arange(4), 2, seed=seed)


def mirrored(batch, rng):
    return batch[..., ::-1]


def toy_data_set(augment=mirrored):
    images = np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2) / 24
    return Dataset("toy", images, np.arange(6), images, np.arange(6), ("only",), (0.0,), (1.0,), augment=augment)


def test_a_data_sets_training_batches_are_augmented_and_its_test_batches_not_and_seed_0_is_the_default():
    data = toy_data_set()
    for x, y in data.loader("train", 4).batches(0):
        np.testing.assert_array_equal(x, data.train_x[y][..., ::-1])  # labels 0..5 name the rows
    for x, y in data.loader("test", 4).batches(0):
        np.testing.assert_array_equal(x, data.test_x[y])
    for epoch in (0, 1):  # the training order without a seed is seed 0's
        np.testing.assert_array_equal(data.loader("train", 4).order(epoch),
                                      data.loader("train", 4, seed=0).order(epoch))


def test_data_sets_compare_and_hash_by_identity():
    # their arrays cannot be compared as a whole: two data sets are equal only when they are the same one, and
    # either can key a dict (of models, of results) without NumPy's "truth value is ambiguous"
    data, copy = toy_data_set(), toy_data_set()
    assert data == data and data != copy and len({data: 1, copy: 2}) == 2


def test_batches_without_an_epoch_are_epoch_0s():
    images = np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2)
    loader = BatchIterator(images, np.arange(10), 4, shuffle=True, seed=3)
    first = [y.tolist() for _, y in loader.batches()]
    assert first == [y.tolist() for _, y in loader.batches(0)] != [y.tolist() for _, y in loader.batches(1)]
