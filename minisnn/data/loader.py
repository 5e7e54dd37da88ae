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

from .cifar10 import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from .errors import DatasetError
from .cifar10_dvs import CIFAR10_DVS_CLASSES, load_cifar10_dvs, shift_and_flip
from .digits import DIGITS_CLASSES, DIGITS_MEAN, DIGITS_STD, load_digits
from .shards import shard_rows
from .transforms import crop_and_flip, normalize


class BatchIterator:
    """Mini-batches (x float32 [B, ...], y int64 [B]) of one split, for any (epoch, step).

    images: [N, ...] uint8 (0..255) or float (0..1); labels: [N] integers.
    shuffle: a new seeded permutation every epoch (else the stored order).
    augment: ``augment(batch, rng) -> batch`` applied to the raw batch before normalisation, or None.
    mean, std: per-channel statistics for ``normalize``; None keeps the values (cast to float32).
    drop_last: drop a last batch smaller than batch_size.
    """

    def __init__(self, images, labels, batch_size, *, shuffle=False, seed=0, augment=None, mean=None, std=None,
                 drop_last=False):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim < 2 or labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            raise ValueError(f"BatchIterator: need images [N, ...] and integer labels [N], got images "
                             f"{images.shape} and labels {labels.dtype} {labels.shape}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"BatchIterator: batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"BatchIterator: seed must be a non-negative int, got {seed!r}")
        if (mean is None) != (std is None):
            raise ValueError("BatchIterator: give both mean and std, or neither")
        self.images, self.labels = images, labels.astype(np.int64)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.augment, self.mean, self.std, self.drop_last = augment, mean, std, drop_last

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

    def batches(self, epoch=0, start=0, shard=(0, 1)):
        """Yield the batches of ``epoch`` from step ``start`` on (steps before it are skipped, not drawn).

        shard: (rank, size) -- yield only the rows ``shard_rows(n, rank, size)`` of each batch, augmented
        as in the whole batch."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0 or not isinstance(start, (int, np.integer)) \
                or start < 0:
            raise ValueError(f"BatchIterator.batches: epoch and start must be non-negative ints, got {epoch!r}, "
                             f"{start!r}")
        order = self.order(epoch)
        for step in range(start, len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
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


def _cifar10(data_dir, download):  # options: none
    arrays = load_cifar10(data_dir, download)
    return Dataset("cifar10", *arrays, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, augment=crop_and_flip)


def _digits(data_dir, download):  # bundled with scikit-learn: nothing to find or download
    return Dataset("digits", *load_digits(), DIGITS_CLASSES, DIGITS_MEAN, DIGITS_STD)


def _cifar10_dvs(data_dir, download, T=10, size=48, split_by="number", split_rule="even", resize="sum"):
    """Event frames [N, T, 2, size, size] (no normalisation), shifted and flipped for training.

    split_by "number" | "time", split_rule "even" | "spikingjelly", resize "sum" | "bilinear": see
    ``minisnn.data.cifar10_dvs``.
    """
    if download or data_dir is None:
        raise DatasetError(
            "CIFAR10-DVS is not downloaded automatically (about 7 GB of AEDAT files). Get the recordings "
            "from the data set's official figshare page (Li et al. 2017, 'CIFAR10-DVS'), unpack the ten class "
            "folders (airplane ... truck) into one folder and pass it with --data-dir.")
    arrays = load_cifar10_dvs(data_dir, T=T, split_by=split_by, size=size, split_rule=split_rule, resize=resize)
    return Dataset("cifar10-dvs", *arrays, CIFAR10_DVS_CLASSES, (0.0, 0.0), (1.0, 1.0), augment=shift_and_flip)


def _imagefolder(data_dir, download, image_size=224, workers=2):
    """train/<class>/* and val/<class>/* (ImageNet's layout), decoded with Pillow in ``workers`` processes."""
    from .imagefolder import load_image_folder
    if download:
        raise DatasetError("an image folder is not downloaded: pass the folder holding train/ and val/ with "
                           "--data-dir (for ImageNet, the ILSVRC-2012 images sorted into class folders)")
    return load_image_folder(data_dir, size=image_size, workers=workers)


# name -> builder(data_dir, download, **options) returning a Dataset (an ImageFolder for "imagefolder").
DATASETS = {"cifar10": _cifar10, "digits": _digits, "cifar10-dvs": _cifar10_dvs, "imagefolder": _imagefolder}


def get_dataset(name, data_dir=None, download=False, **options):
    """The Dataset called ``name`` (see DATASETS), read from ``data_dir`` (default: the cache folder).

    options go to the builder: for cifar10-dvs ``T``, ``size``, ``split_by``, ``split_rule`` and ``resize``
    of the event frames; for imagefolder ``image_size`` (side of the square images) and ``workers``
    (decoding processes).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](data_dir, download, **options)
