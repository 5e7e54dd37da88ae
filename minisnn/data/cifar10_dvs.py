"""CIFAR10-DVS (Li et al., 2017): read the official recordings, bin their events into T frames, cache them.

The file format (AEDAT 2.0, the jAER "raw AE data" format)
----------------------------------------------------------
The official recordings (figshare "CIFAR10-DVS", one zip per class, ``<class>/cifar10_<class>_<i>.aedat``)
were made with a 128 x 128 DVS128 and are jAER AEDAT 2.0 files:

* an ASCII header of lines that start with ``#`` and end with CR LF; the first line is ``#!AER-DAT2.0``
  (version 1.0 had 16-bit addresses and 6-byte records; 3.x and 4.x are other, packet-based formats);
* then one 8-byte record per event, **big-endian**: a uint32 address, then a uint32 timestamp in us.

The address of a DVS128 event (jAER Tmpdiff128/DVS128; IMSE ``dat2mat.m``/``mat2dat.m``, which the
data set's README recommends)::

    bit 0       polarity: raw 0 = ON (brighter), raw 1 = OFF
    bits 1..7   jAER x, stored mirrored (jAER shows x = 127 - field)
    bits 8..14  jAER y
    bits 15..31 zero for a DVS128 pixel event

Pixel coordinates (x = column, y = row) follow SpikingJelly's and tonic's CIFAR10-DVS readers, which the
published SNN results on this data set use, so frames here match theirs::

    x = 127 - bits 8..14,   y = 127 - bits 1..7,   p = 1 - bit 0   (p = 1: ON, p = 0: OFF)

From events to frames
---------------------
``events_to_frames`` cuts a recording into T slices, either by event count (``"number"``: T runs of
consecutive events whose sizes differ by at most one, earlier slices taking the extra events) or by time
(``"time"``: with t0 = min t and D = max t - t0, event t goes to slice k when
k (D + 1) <= (t - t0) T < (k + 1)(D + 1), i.e. T equal windows of (D + 1) / T us). It then counts the events
of each slice per polarity channel (channel p: 0 = OFF, 1 = ON) and pixel of a ``size x size`` grid, where
sensor pixel x falls in cell X when X * 128 <= x * size < (X + 1) * 128 (sum pooling of the 128 x 128
sensor; every event is counted exactly once). Output: float32 counts [T, 2, size, size].

Resolution: STBP-tdBN (Zheng et al., 2021) trains ResNet-19 on T = 10 frames. Its input size is not
settled here: the DVS-CIFAR10 protocol of the same group (Wu et al., 2019, NeuNorm) downsamples to 42 x 42,
later work (TET, TEBN) uses 48 x 48. ``size`` is an argument; the default is 48, ``size=42`` follows NeuNorm.

Split: no official split exists; the usual one takes 9/10 of every class for training and 1/10 for
testing, here drawn with a fixed seed (see ``split_files``).
"""
import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cifar10 import DatasetError
from .transforms import random_crop, random_flip

CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SENSOR_SIZE = 128
AEDAT_MAGIC = b"#!AER-DAT"
AEDAT_VERSION = b"2.0"
RECORD_BYTES = 8  # uint32 address + uint32 timestamp, big-endian
SPLIT_MODES = ("number", "time")

HEADER_LINES = (
    b"#!AER-DAT2.0",
    b"# This is a raw AE data file - do not edit",
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
    b"# Timestamps tick is 1 us",
    b"# created by minisnn.data.cifar10_dvs.write_aedat (DVS128 addresses)",
)


# ------------------------------------------------------------------ reading and writing AEDAT 2.0
def _header_end(data, path):
    """Byte offset where the records start, after checking the ``#!AER-DAT2.0`` header."""
    if not data.startswith(AEDAT_MAGIC):
        raise DatasetError(f"{path}: not an AEDAT file: it must begin with {AEDAT_MAGIC.decode()!r}, "
                           f"but begins with {bytes(data[:16])!r}")
    first_end = data.find(b"\n")
    version = data[len(AEDAT_MAGIC):first_end if first_end >= 0 else None].strip()
    if version != AEDAT_VERSION:
        raise DatasetError(f"{path}: AEDAT version {version.decode(errors='replace')!r} is not supported: "
                           "CIFAR10-DVS recordings are AEDAT 2.0 (32-bit address + 32-bit timestamp)")
    pos = 0
    while data[pos:pos + 1] == b"#":  # one Python step per header line, not per event
        end = data.find(b"\n", pos)
        if end < 0:
            raise DatasetError(f"{path}: truncated header: the line at byte {pos} has no line end")
        pos = end + 1
    return pos


def read_aedat(path):
    """Events of one CIFAR10-DVS recording: (t, x, y, p) as int64 arrays of equal length.

    t: timestamps in us as stored; x, y: pixel column and row 0..127; p: 1 = ON, 0 = OFF.
    Raises DatasetError naming the file if it is not an AEDAT 2.0 file, if its records are truncated,
    or if an address is not a DVS128 pixel event.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read: {err.strerror or err}") from err
    start = _header_end(data, path)
    n_bytes = len(data) - start
    if n_bytes % RECORD_BYTES:
        raise DatasetError(f"{path}: truncated or corrupt: the {n_bytes} bytes after the {start}-byte header are "
                           f"{n_bytes // RECORD_BYTES} whole {RECORD_BYTES}-byte records plus "
                           f"{n_bytes % RECORD_BYTES} stray bytes")
    records = np.frombuffer(data, dtype=">u4", offset=start).reshape(-1, 2).astype(np.int64)
    address, t = records[:, 0], records[:, 1]
    foreign = address >> 15
    if foreign.any():
        i = int(np.argmax(foreign != 0))
        raise DatasetError(f"{path}: record {i} (byte {start + RECORD_BYTES * i}) has address "
                           f"0x{int(address[i]):08x}, which is not a DVS128 pixel event (bits 15..31 must be 0)")
    x = (SENSOR_SIZE - 1) - ((address >> 8) & 0x7F)
    y = (SENSOR_SIZE - 1) - ((address >> 1) & 0x7F)
    p = 1 - (address & 1)
    return t, x, y, p


def _as_events(t, x, y, p, where):
    """Check and return (t, x, y, p) as int64 arrays: 1-D, equal length, integer-valued."""
    arrays = [np.asarray(a) for a in (t, x, y, p)]
    for name, a in zip("txyp", arrays):
        if a.ndim != 1 or a.shape != arrays[0].shape:
            raise ValueError(f"{where}: t, x, y, p must be 1-D arrays of one length, got {name} of shape {a.shape} "
                             f"and t of shape {arrays[0].shape}")
        if a.size and a.dtype.kind not in "iub":
            raise TypeError(f"{where}: {name} must be integers, got {a.dtype}")
    return [a.astype(np.int64, copy=False) for a in arrays]


def write_aedat(path, t, x, y, p):
    """Write events as an official-format CIFAR10-DVS file (AEDAT 2.0 header, DVS128 addresses).

    The exact inverse of ``read_aedat``: t in 0..2**32-1 (us), x and y in 0..127, p in {0, 1}.
    """
    t, x, y, p = _as_events(t, x, y, p, "write_aedat")
    for name, a, hi in (("t", t, 2 ** 32 - 1), ("x", x, SENSOR_SIZE - 1), ("y", y, SENSOR_SIZE - 1), ("p", p, 1)):
        if a.size and (a.min() < 0 or a.max() > hi):
            raise ValueError(f"write_aedat: {name} must lie in 0..{hi}, got {a.min()}..{a.max()}")
    records = np.empty((t.size, 2), dtype=">u4")
    records[:, 0] = ((SENSOR_SIZE - 1 - x) << 8) | ((SENSOR_SIZE - 1 - y) << 1) | (1 - p)
    records[:, 1] = t
    Path(path).write_bytes(b"".join(line + b"\r\n" for line in HEADER_LINES) + records.tobytes())


# ------------------------------------------------------------------ events to frames
def _check_frame_args(T, split_by, size, where):
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"{where}: T must be a positive int, got {T!r}")
    if split_by not in SPLIT_MODES:
        raise ValueError(f"{where}: split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= SENSOR_SIZE:
        raise ValueError(f"{where}: size must be an int in 1..{SENSOR_SIZE}, got {size!r}")


def events_to_frames(t, x, y, p, T, split_by="number", size=48):
    """Event counts float32 [T, 2, size, size]: slice k, channel p (0 OFF, 1 ON), downsampled pixel (Y, X).

    Slices by ``split_by="number"`` (T runs of consecutive events, sizes differing by at most one) or
    ``"time"`` (T equal time windows between the first and last timestamp); pixels are sum-pooled from
    128 x 128 to size x size with X = x * size // 128 (see the module docstring for the exact rules).
    """
    _check_frame_args(T, split_by, size, "events_to_frames")
    t, x, y, p = _as_events(t, x, y, p, "events_to_frames")
    n = t.size
    if n and (x.min() < 0 or y.min() < 0 or max(x.max(), y.max()) >= SENSOR_SIZE or p.min() < 0 or p.max() > 1):
        raise ValueError(f"events_to_frames: need 0 <= x, y < {SENSOR_SIZE} and p in {{0, 1}}, got x "
                         f"{x.min()}..{x.max()}, y {y.min()}..{y.max()}, p {p.min()}..{p.max()}")
    if split_by == "number":
        runs = n // T + (np.arange(T) < n % T)  # np.array_split sizes
        k = np.repeat(np.arange(T), runs)
    else:
        t0 = t.min() if n else 0
        k = (t - t0) * T // ((t.max() - t0 + 1) if n else 1)
    cell = ((k * 2 + p) * size + y * size // SENSOR_SIZE) * size + x * size // SENSOR_SIZE
    counts = np.bincount(cell, minlength=T * 2 * size * size)
    return counts.astype(np.float32).reshape(T, 2, size, size)


# ------------------------------------------------------------------ cache
def _save_atomic(path, frames):
    """Write ``frames`` to the .npz ``path`` via a temporary file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, frames=frames)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def cached_frames(source, cache_file, T, split_by="number", size=48):
    """``events_to_frames(*read_aedat(source), T, split_by, size)``, computed once and kept in ``cache_file``.

    The cache is reused while it is at least as new as ``source``; it is written atomically, so an
    interrupted run never leaves a half-written cache behind.
    """
    source, cache_file = Path(source), Path(cache_file)
    _check_frame_args(T, split_by, size, "cached_frames")
    shape = (T, 2, size, size)
    if cache_file.exists() and cache_file.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        try:
            with np.load(cache_file) as archive:
                frames = archive["frames"]
        except Exception as err:  # zipfile, pickle and key errors alike: the file is not our cache
            raise DatasetError(f"{cache_file}: unreadable frame cache ({type(err).__name__}: {err}); "
                               "delete it to rebuild") from err
        if frames.shape != shape or frames.dtype != np.float32:
            raise DatasetError(f"{cache_file}: cached frames are {frames.dtype} {frames.shape}, expected float32 "
                               f"{shape}; delete it to rebuild")
        return frames
    frames = events_to_frames(*read_aedat(source), T, split_by, size)
    _save_atomic(cache_file, frames)
    return frames


# ------------------------------------------------------------------ the data set
def split_files(root, train=True, seed=0):
    """The files and labels of one split: (list of Path, int64 labels), classes in CIFAR10_DVS_CLASSES order.

    Each class folder ``root/<class>`` contributes its ``*.aedat`` files (sorted by name); a permutation
    drawn from ``default_rng(seed)`` (one per class, in class order) puts the first ceil(n / 10) of them in
    the test split and the rest in the training split: 900 / 100 per class for the full data set.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    files, labels = [], []
    for label, name in enumerate(CIFAR10_DVS_CLASSES):
        folder = root / name
        if not folder.is_dir():
            raise DatasetError(f"CIFAR10-DVS class folder {folder} not found: {root} must hold one folder per class "
                               f"({', '.join(CIFAR10_DVS_CLASSES)}) with the official .aedat recordings")
        class_files = sorted(folder.glob("*.aedat"))
        if not class_files:
            raise DatasetError(f"{folder}: no .aedat recordings (AEDAT 4 '.aedat4' conversions are not supported)")
        order = rng.permutation(len(class_files))
        n_test = -(-len(class_files) // 10)
        chosen = np.sort(order[n_test:] if train else order[:n_test])
        files += [class_files[i] for i in chosen]
        labels += [label] * len(chosen)
    return files, np.array(labels, dtype=np.int64)


class CIFAR10DVS:
    """One split of CIFAR10-DVS as frames: ``ds[i]`` is (float32 [T, 2, size, size] event counts, label).

    root: folder with the ten class folders of ``.aedat`` files. Frames are made lazily, once per file,
    and cached in ``cache_dir`` (default ``root/frames_cache``) under a folder named after (T, split_by,
    size). See ``split_files`` for the seeded 9:1 split, ``events_to_frames`` for the frames.
    """

    classes = CIFAR10_DVS_CLASSES

    def __init__(self, root, T=10, split_by="number", size=48, train=True, seed=0, cache_dir=None):
        _check_frame_args(T, split_by, size, "CIFAR10DVS")
        self.root = Path(root)
        self.T, self.split_by, self.size = int(T), split_by, int(size)
        self.files, self.labels = split_files(self.root, train, seed)
        cache_root = Path(cache_dir) if cache_dir is not None else self.root / "frames_cache"
        self.cache_dir = cache_root / f"T{self.T}_{split_by}_{self.size}px"

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        source = self.files[i]
        cache_file = self.cache_dir / source.parent.name / (source.stem + ".npz")
        return cached_frames(source, cache_file, self.T, self.split_by, self.size), int(self.labels[i])

    def load_all(self, progress=False):
        """All frames and labels as arrays: float32 [N, T, 2, size, size] and int64 [N]."""
        frames = np.empty((len(self), self.T, 2, self.size, self.size), dtype=np.float32)
        for i in tqdm(range(len(self)), desc="CIFAR10-DVS frames", disable=not progress):
            frames[i] = self[i][0]
        return frames, self.labels.copy()


def shift_and_flip(batch, rng, max_shift=5):
    """Augment event frames [N, T, 2, H, W]: per sample, one random translation and one mirror for all T.

    Each sample is shifted by (dy, dx), both uniform in -max_shift..max_shift, with zeros filling the
    uncovered border (events pushed off the sensor are lost), then mirrored left-right with probability
    1/2. The same (dy, dx, flip) applies to every time step and both polarities of a sample.
    """
    if not isinstance(batch, np.ndarray) or batch.ndim != 5:
        shape = getattr(batch, "shape", type(batch).__name__)
        raise ValueError(f"shift_and_flip: expected a NumPy batch of event frames [N, T, 2, H, W], got {shape}")
    n, steps, channels, h, w = batch.shape
    images = batch.reshape(n, steps * channels, h, w)
    return random_flip(random_crop(images, max_shift, rng), rng).reshape(batch.shape)


def load_cifar10_dvs(root, T=10, split_by="number", size=48, seed=0, cache_dir=None, progress=True):
    """(train_x, train_y, test_x, test_y): float32 [N, T, 2, size, size] frames and int64 labels."""
    splits = [CIFAR10DVS(root, T, split_by, size, train, seed, cache_dir) for train in (True, False)]
    (train_x, train_y), (test_x, test_y) = (s.load_all(progress) for s in splits)
    return train_x, train_y, test_x, test_y
