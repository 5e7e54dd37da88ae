"""Image folders in ImageNet's layout, decoded with Pillow in worker processes ahead of the step.

    root/train/<class>/<name>.JPEG        root/val/<class>/<name>.JPEG

The classes are the sorted names of the sub-folders of ``train`` (label i is the i-th name), each holding
images; ``val`` uses the same names. A file in a class folder must be an image (by its extension: .jpeg .jpg .png .bmp .ppm
.webp); anything else is an error naming the file, found when the folder is listed. A file that Pillow
cannot decode is an error naming it, found when its batch is decoded.

Every image becomes an S x S RGB array (S = ``size``, 224 for ImageNet):

* training: a random-resized crop -- a box covering 8-100 % of the image's area with aspect ratio
  between 3/4 and 4/3 (ten tries, else the largest centred box in that range), resized to S x S -- then
  mirrored with probability 1/2;
* evaluation: the image scaled so that its shorter side is round(S / 0.875) (256 for S = 224), then its
  central S x S square -- done as one resize of the matching box of the original image.

The randomness of image i in epoch e comes from ``default_rng([seed, e, 1, i])``: an image's crop does not
depend on the batch size, on which worker decodes it, or on how many data-parallel ranks share the batch.

``workers`` processes (started with 'spawn': no copy of the trainer's threads or MPI state) decode one
batch each, and up to 2 x workers batches are in flight, so decoding keeps ahead of the training step.
With ``workers=0`` the batches are decoded in the calling process. The workers never see a Ctrl-C (the
trainer stops after its step), and one that dies is an error saying so. Needs Pillow (``.[imagenet]``).
"""
import contextlib
import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .loader import Batches, Dataset
from .shards import shard_rows
from .transforms import normalize

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per-channel mean and std of ImageNet's training pixels / 255
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.08, 1.0)         # random-resized crop: share of the image's area
CROP_RATIO = (3 / 4, 4 / 3)      # ... and aspect ratio (width / height) of the box
EVAL_CROP_SHARE = 0.875          # evaluation: the centre crop is this share of the resized shorter side


def _pillow():
    try:
        from PIL import Image
    except ImportError as err:
        raise DatasetError(f"image folders need Pillow: pip install -e '.[imagenet]' (import failed: {err})") from err
    return Image


# ------------------------------------------------------------------------------- listing the files
def list_split(folder, classes=None):
    """(paths as an object array, labels int64) of ``folder/<class>/*``, sorted by class then name.

    classes: the class names to expect (the train split's); None takes the sorted sub-folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder split not found: {folder} (expected {folder}/<class>/<image>)")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not found:  # e.g. ImageNet's validation images as distributed: one flat folder
        raise DatasetError(f"{folder}: no class folders (expected {folder}/<class>/<image>); sort its images into "
                           "one folder per class")
    training = classes is None
    if training:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DatasetError(f"{folder}: class folders {unknown[:5]} are not among the {len(classes)} training "
                           "classes; val must use the class names of train")
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        count = len(paths)
        for entry in sorted(class_dir.iterdir()):
            if entry.is_symlink() and not entry.exists():
                raise DatasetError(f"{entry}: a link to {os.readlink(entry)}, which does not exist; mend the link "
                                   "or move it out of the data set")
            if not entry.name.lower().endswith(IMAGE_EXTENSIONS) or not entry.is_file():
                raise DatasetError(f"{entry}: not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)} "
                                   "in a class folder); move it out of the data set")
            paths.append(str(entry))
            labels.append(label)
        if training and len(paths) == count:
            raise DatasetError(f"{class_dir}: a training class folder without images (its class could never be "
                               "learnt); put its images in it or remove the folder")
    if not paths:
        raise DatasetError(f"{folder}: no images in its class folders")
    return np.array(paths, dtype=object), np.array(labels, dtype=np.int64), tuple(classes)


# ------------------------------------------------------------------------------- one image
def read_image(path):
    """The image at ``path`` as an RGB Pillow image, fully decoded; DatasetError naming it if it cannot be."""
    Image = _pillow()
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I"):  # 16-bit grey (PNG, PGM): its top 8 bits, not every value > 255 white
                image = Image.fromarray((np.asarray(image, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8))
            return image.convert("RGB")  # converting decodes every pixel: a truncated file fails here
    except Exception as err:  # Pillow raises many kinds on bad files; report them all the same way
        raise DatasetError(f"{path}: cannot decode this image ({type(err).__name__}: {err}); "
                           "replace or remove the file") from None


def random_resized_box(width, height, rng):
    """(left, top, right, bottom) of a random box with CROP_SCALE of the area and CROP_RATIO aspect."""
    area = width * height
    log_ratio = np.log(CROP_RATIO)
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = np.exp(rng.uniform(*log_ratio))
        w, h = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    ratio = np.clip(width / height, *CROP_RATIO)  # ten misses: the largest centred box in the ratio range
    w, h = (width, int(round(width / ratio))) if width / height <= ratio else (int(round(height * ratio)), height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_box(width, height, size):
    """The box of the original image that becomes the central size x size square after scaling its
    shorter side to round(size / EVAL_CROP_SHARE)."""
    side = min(width, height) * size / round(size / EVAL_CROP_SHARE)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def load_image(path, size, rng=None):
    """Image ``path`` as uint8 [3, size, size]: training transform when ``rng`` is given, else evaluation."""
    Image = _pillow()
    image = read_image(path)
    if rng is None:
        box = centre_box(*image.size, size)
        flip = False
    else:
        box = random_resized_box(*image.size, rng)
        flip = rng.random() < 0.5
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def decode_batch(paths, indices, size, seed, epoch, train):
    """uint8 [n, 3, size, size] of the images ``paths`` (data-set indices ``indices``). Runs in a worker."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for row, (path, index) in enumerate(zip(paths, indices)):
        rng = np.random.default_rng([seed, epoch, 1, int(index)]) if train else None
        out[row] = load_image(path, size, rng)
    return out


# ------------------------------------------------------------------------------- batches
@contextlib.contextmanager
def sigint_blocked():
    """SIGINT blocked in this thread: processes started inside inherit the block for life (a Ctrl-C in a
    terminal reaches every process of the job; the trainer answers it after its step, and its decoding
    workers must go on meanwhile). A SIGINT that comes meanwhile waits, and this process gets it after."""
    if not hasattr(signal, "pthread_sigmask"):  # (not POSIX)
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ImageBatches(Batches):
    """Mini-batches (x float32 [B, 3, S, S], y int64 [B]) of one split of an image folder, for any
    (epoch, step): ``Batches``'s order and steps, each batch decoded from its files.

    paths: [N] file paths; size: S; train: random-resized crops and mirrors (else centre crops);
    workers: decoding processes (0: decode in the calling process).
    """

    def __init__(self, paths, labels, batch_size, *, size, train, shuffle=False, seed=0, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, workers=0, drop_last=False):
        super().__init__(labels, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        if not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ValueError(f"ImageBatches: workers must be a non-negative int, got {workers!r}")
        self.paths, self.size, self.train = paths, int(size), train
        self.mean, self.std, self.workers = mean, std, int(workers)

    def batches(self, epoch=0, start=0, shard=(0, 1)):
        """Yield the batches of ``epoch`` from step ``start`` on; with shard=(rank, size) only that rank's
        rows of each. Decoding runs ``workers`` batches ahead in worker processes."""
        jobs = [index[shard_rows(len(index), *shard)] for _, index in self.steps(epoch, start)]
        if self.workers == 0:
            for index in jobs:
                yield self._finish(decode_batch(*self._job(index, epoch)), index)
            return
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            pending, queued = deque(), iter(jobs)
            with sigint_blocked():  # the workers, started here, inherit it: a Ctrl-C is the trainer's alone
                for index in queued:  # fill the pipeline: 2 batches per worker in flight
                    pending.append((pool.submit(decode_batch, *self._job(index, epoch)), index))
                    if len(pending) >= 2 * self.workers:
                        break
            while pending:
                future, index = pending.popleft()
                images = future.result()
                following = next(queued, None)
                if following is not None:
                    pending.append((pool.submit(decode_batch, *self._job(following, epoch)), following))
                yield self._finish(images, index)
        except BrokenProcessPool:  # a worker was killed: its result and any new job are lost
            raise DatasetError(f"a process decoding the images of {Path(self.paths[0]).parent.parent} died (killed, "
                               "or out of memory?); try again with fewer --workers") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _job(self, index, epoch):
        """The arguments of ``decode_batch`` for the data-set indices ``index``."""
        return self.paths[index], index, self.size, self.seed, epoch, self.train

    def _finish(self, images, index):
        return normalize(images, self.mean, self.std), self.labels[index]


@dataclass(frozen=True, eq=False)
class ImageFolder(Dataset):
    """An image folder as the trainer sees it: a ``Dataset`` whose train_x/test_x hold file paths.

    augment: "crop-and-flip" (random-resized crop and mirror for training) or None (the evaluation
    transform for training too). size: the side S of the square images. workers: decoding processes.
    """

    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    augment: object = "crop-and-flip"
    size: int = 224
    workers: int = 2

    in_channels = property(lambda self: 3)
    image_size = property(lambda self: (self.size, self.size))

    def loader(self, split, batch_size, seed=0, drop_last=False):
        """ImageBatches for 'train' (shuffled, augmented) or 'test' (the val images in order, centre crops)."""
        if split not in ("train", "test"):
            raise ValueError(f"ImageFolder.loader: split must be 'train' or 'test', got {split!r}")
        train = split == "train"
        paths, labels = (self.train_x, self.train_y) if train else (self.test_x, self.test_y)
        return ImageBatches(paths, labels, batch_size, size=self.size, train=train and self.augment is not None,
                            shuffle=train, seed=seed, mean=self.mean, std=self.std, workers=self.workers,
                            drop_last=drop_last)


def load_image_folder(data_dir, size=224, workers=2):
    """The ImageFolder at ``data_dir`` (``train/`` and ``val/`` inside)."""
    if data_dir is None:
        raise DatasetError("the image folder data set needs --data-dir: a folder with train/<class>/<image> "
                           "and val/<class>/<image> (ImageNet's layout)")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"image folder: the image size must be a positive int, got {size!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"image folder: workers must be a non-negative int, got {workers!r}")
    _pillow()
    root = Path(data_dir)
    train_x, train_y, classes = list_split(root / "train")
    test_x, test_y, _ = list_split(root / "val", classes)
    return ImageFolder("imagefolder", train_x, train_y, test_x, test_y, classes, size=int(size), workers=int(workers))
