"""Data sets (CIFAR-10, sklearn digits), transforms and seeded batch iteration -- host-side NumPy."""
from .errors import DatasetError
from .cifar10 import (CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_MEAN, CIFAR10_STD, CIFAR10_URL, cifar10_folder,
                      default_data_dir, download_file, load_cifar10, read_batch)
from .digits import DIGITS_MEAN, DIGITS_STD, load_digits
from .loader import BatchIterator, Dataset
from .registry import DATASETS, get_dataset
from .transforms import crop_and_flip, normalize, random_crop, random_flip
from .cifar10_dvs import (CIFAR10_DVS_CLASSES, CIFAR10DVS, events_to_frames, load_cifar10_dvs, read_aedat,
                          shift_and_flip, write_aedat)
