"""The data sets by name: ``get_dataset("cifar10")`` and the builders behind it."""
from .cifar10 import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from .cifar10_dvs import CIFAR10_DVS_CLASSES, load_cifar10_dvs, shift_and_flip
from .digits import DIGITS_CLASSES, DIGITS_MEAN, DIGITS_STD, load_digits
from .errors import DatasetError
from .imagefolder import load_image_folder
from .loader import Dataset
from .transforms import crop_and_flip


def _cifar10(data_dir, download):  # options: none
    arrays = load_cifar10(data_dir, download)
    return Dataset("cifar10", *arrays, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, augment=crop_and_flip)


def _digits(data_dir, download):  # bundled with scikit-learn: nothing to find or download
    return Dataset("digits", *load_digits(), DIGITS_CLASSES, DIGITS_MEAN, DIGITS_STD)


def _cifar10_dvs(data_dir, download, T=10, size=48, split_by="number", split_rule="even", resize="sum",
                 progress=True):
    """Event frames [N, T, 2, size, size] (no normalisation), shifted and flipped for training.

    split_by "number" | "time", split_rule "even" | "spikingjelly", resize "sum" | "bilinear": see
    ``minisnn.data.cifar10_dvs``. progress: a progress bar while the frames are made or read.
    """
    if download or data_dir is None:
        raise DatasetError(
            "CIFAR10-DVS is not downloaded automatically (about 7 GB of AEDAT files). Get the recordings "
            "from the data set's official figshare page (Li et al. 2017, 'CIFAR10-DVS'), unpack the ten class "
            "folders (airplane ... truck) into one folder and pass it with --data-dir.")
    arrays = load_cifar10_dvs(data_dir, T=T, split_by=split_by, size=size, split_rule=split_rule, resize=resize,
                              progress=progress)
    return Dataset("cifar10-dvs", *arrays, CIFAR10_DVS_CLASSES, (0.0, 0.0), (1.0, 1.0), augment=shift_and_flip)


def _imagefolder(data_dir, download, image_size=224, workers=2):
    """train/<class>/* and val/<class>/* (ImageNet's layout), decoded with Pillow in ``workers`` processes."""
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
