"""Seeded mini-batches and the uniform data-set description the trainer uses.

Reproducibility without replay: the order of epoch ``e`` comes from ``default_rng([seed, e, 0])`` and the
augmentation of its batch ``s`` from ``default_rng([seed, e, 1, s])``. So batch (e, s) is a function of
(seed, e, s) alone, and a run resumed at (e, s) sees exactly the batches an uninterrupted run would.

Data-parallel training (``minisnn/dist``) gives rank k of K the rows ``shard_rows(n, k, K)`` of every
batch of n rows: ``batches(..., shard=(k, K))``. The K shards of a batch together are that batch, the
same rows augmented the same way, whatever K is.
"""
from dataclasses import dataclass

import numpy as np

from .shards import shard_rows
from .transforms import normalize


class Batches:
    """What every split's mini-batches share: the epoch's seeded order and the batch indices of each step.

    labels: [N] integers. shuffle: a new permutation ``default_rng([seed, epoch, 0])`` every epoch, else
    the stored order. drop_last: drop a last batch smaller than batch_size. Subclasses turn the indices of
    a step into the batch (x, y) in ``batches``.
    """

    def __init__(self, labels, batch_size, *, shuffle=False, seed=0, drop_last=False):
        name = type(self).__name__
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"{name}: labels must be integers [N], got {labels.dtype} {labels.shape}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"{name}: batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{name}: seed must be a non-negative int, got {seed!r}")
        self.labels = labels.astype(np.int64)
        self.batch_size, self.shuffle, self.seed, self.drop_last = int(batch_size), shuffle, int(seed), drop_last

    def __len__(self):
        """Batches per epoch."""
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch):
        """The sample indices of ``epoch`` in the order they are served."""
        n = len(self.labels)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch, 0]).permutation(n)

    def steps(self, epoch, start):
        """(step, sample indices of that step's whole batch) for the steps of ``epoch`` from ``start`` on."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0 or not isinstance(start, (int, np.integer)) \
                or start < 0:
            raise ValueError(f"{type(self).__name__}.batches: epoch and start must be non-negative ints, got "
                             f"{epoch!r}, {start!r}")
        order = self.order(epoch)
        for step in range(start, len(self)):
            yield step, order[step * self.batch_size:(step + 1) * self.batch_size]


class BatchIterator(Batches):
    """Mini-batches (x float32 [B, ...], y int64 [B]) of one split of in-memory images, for any (epoch, step).

    images: [N, ...] uint8 (0..255) or float (0..1); labels: [N] integers.
    augment: ``augment(batch, rng) -> batch`` applied to the raw batch before normalisation, or None.
    mean, std: per-channel statistics for ``normalize``; None keeps the values (cast to float32).
    shuffle, seed, drop_last: see ``Batches``.
    """

    def __init__(self, images, labels, batch_size, *, shuffle=False, seed=0, augment=None, mean=None, std=None,
                 drop_last=False):
        super().__init__(labels, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        images = np.asarray(images)
        if images.ndim < 2 or self.labels.shape != images.shape[:1]:
            raise ValueError(f"BatchIterator: need images [N, ...] and labels [N], got images {images.shape} and "
                             f"labels {self.labels.shape}")
        if (mean is None) != (std is None):
            raise ValueError("BatchIterator: give both mean and std, or neither")
        self.images, self.augment, self.mean, self.std = images, augment, mean, std

    def batches(self, epoch=0, start=0, shard=(0, 1)):
        """Yield the batches of ``epoch`` from step ``start`` on (steps before it are skipped, not drawn).

        shard: (rank, size) -- yield only the rows ``shard_rows(n, rank, size)`` of each batch, augmented
        as in the whole batch."""
        for step, index in self.steps(epoch, start):
            x = self.images[index]
            if self.augment is not None:
                x = self.augment(x, np.random.default_rng([self.seed, epoch, 1, step]))
            rows = shard_rows(len(index), *shard)
            x, index = x[rows], index[rows]
            x = normalize(x, self.mean, self.std) if self.mean is not None else x.astype(np.float32)
            yield x, self.labels[index]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set as the trainer sees it: arrays, classes, normalisation and augmentation policy.

    train_x/test_x: [N, C, H, W] (uint8 0..255 or float 0..1); train_y/test_y: int64 [N].
    augment: ``augment(batch, rng)`` for training batches (crop + flip for CIFAR-10), or None.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple
    mean: tuple
    std: tuple
    augment: object = None

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def in_channels(self):
        return self.train_x.shape[-3]

    @property
    def image_size(self):
        return tuple(self.train_x.shape[-2:])

    def loader(self, split, batch_size, seed=0, drop_last=False):
        """BatchIterator for 'train' (shuffled, augmented) or 'test' (stored order, no augmentation)."""
        if split == "train":
            return BatchIterator(self.train_x, self.train_y, batch_size, shuffle=True, seed=seed,
                                 augment=self.augment, mean=self.mean, std=self.std, drop_last=drop_last)
        if split == "test":
            return BatchIterator(self.test_x, self.test_y, batch_size, mean=self.mean, std=self.std,
                                 drop_last=drop_last)
        raise ValueError(f"Dataset.loader: split must be 'train' or 'test', got {split!r}")
