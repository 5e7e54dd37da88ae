"""Host-side image transforms on whole batches [N, C, H, W] (NumPy: this is input data, not model math).

Randomness always comes from an explicit ``numpy.random.Generator``, so a batch is reproducible from
the generator's seed alone.
"""
import numpy as np


def _check_batch(batch, where):
    if not isinstance(batch, np.ndarray) or batch.ndim != 4:
        shape = getattr(batch, "shape", type(batch).__name__)
        raise ValueError(f"{where}: expected a NumPy batch [N, C, H, W], got {shape}")


def _check_rng(rng, where):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{where}: rng must be a numpy.random.Generator, got {type(rng).__name__}")


def normalize(images, mean, std):
    """Per-channel standardisation: x_c = (v_c - mean_c) / std_c, returned as float32.

    ``v`` is the pixel value in [0, 1]: uint8 images are divided by 255, floating images are taken as
    already in [0, 1]. The channel axis is the third from the end (``[..., C, H, W]``), so batches of
    sequences ``[N, T, C, H, W]`` work too.
    """
    images = np.asarray(images)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if images.ndim < 3 or mean.shape != (images.shape[-3],) or std.shape != mean.shape:
        raise ValueError(f"normalize: images {images.shape} need one mean and std per channel (axis -3), "
                         f"got mean {mean.shape} and std {std.shape}")
    if images.dtype == np.uint8:
        scale = np.float32(1 / 255)
    elif images.dtype.kind == "f":
        scale = np.float32(1)
    else:
        raise TypeError(f"normalize: images must be uint8 (0..255) or floating (0..1), got {images.dtype}")
    gain = (scale / std)[:, None, None]
    shift = (mean / std)[:, None, None]
    return images.astype(np.float32) * gain - shift


def random_crop(batch, padding, rng):
    """Pad every image by ``padding`` zeros on each side, then cut a random H x W window from each.

    Each image gets its own offsets (dy, dx) drawn uniformly from 0..2*padding; one fancy-indexing
    gather does the whole batch.
    """
    _check_batch(batch, "random_crop")
    _check_rng(rng, "random_crop")
    if not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"random_crop: padding must be a non-negative int, got {padding!r}")
    n, c, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dy, dx = rng.integers(0, 2 * padding + 1, size=(2, n))
    rows = (dy[:, None] + np.arange(h))[:, None, :, None]  # [N, 1, H, 1]
    cols = (dx[:, None] + np.arange(w))[:, None, None, :]  # [N, 1, 1, W]
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]


def random_flip(batch, rng):
    """Mirror each image left-right with probability 1/2."""
    _check_batch(batch, "random_flip")
    _check_rng(rng, "random_flip")
    flip = rng.random(batch.shape[0]) < 0.5
    return np.where(flip[:, None, None, None], batch[..., ::-1], batch)


def crop_and_flip(batch, rng):
    """The standard CIFAR augmentation: ``random_crop`` with 4 pixels of padding, then ``random_flip``."""
    return random_flip(random_crop(batch, 4, rng), rng)
