"""scikit-learn's bundled 8x8 handwritten digits: a tiny data set that trains in seconds on a CPU.

1,797 grey images with pixel values 0..16, scaled here to [0, 1]. A fixed seeded permutation splits them
into 1,437 training and 360 test images, so every run sees the same split. Needs the optional extra:
``pip install -e '.[digits]'`` (scikit-learn); it is bundled with the package, no download.
"""
import numpy as np

from .errors import DatasetError

TEST_SIZE = 360
SPLIT_SEED = 0
DIGITS_CLASSES = tuple(str(d) for d in range(10))
# Mean and standard deviation of the [0, 1] pixel values over the 1,437 training images of the split.
DIGITS_MEAN = (0.3049,)
DIGITS_STD = (0.3759,)


def load_digits():
    """The digits as (train_x, train_y, test_x, test_y): float32 [N, 1, 8, 8] in [0, 1], int64 [N]."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:
        raise DatasetError("the digits data set needs scikit-learn: pip install -e '.[digits]'  "
                           f"(import failed: {err})") from err
    bunch = sklearn_digits()
    images = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return images[train], labels[train], images[test], labels[test]
