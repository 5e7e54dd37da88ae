"""CIFAR10-DVS (Li et al., 2017): read the official recordings, bin their events into T frames, cache them.

The file format (AEDAT 2.0, the jAER "raw AE data" format)
----------------------------------------------------------
The official recordings (figshare "CIFAR10-DVS", one zip per class, ``<class>/cifar10_<class>_<i>.aedat``)
were made with a 128 x 128 DVS128 and are jAER AEDAT 2.0 files:

* an ASCII header of lines that start with ``#`` and end with CR LF; the first line is ``#!AER-DAT2.0``
  (version 1.0 had 16-bit addresses and 6-byte records; 3.x and 4.x are other, packet-based formats);
* then one 8-byte record per event, **big-endian**: a uint32 address, then a uint32 timestamp in us.

The address of a DVS128 event (jAER ``DVS128`` and its extractor; IMSE ``dat2mat.m``/``mat2dat.m``, which
the data set's README recommends)::

    bit 0       polarity: raw 0 = ON (brighter), raw 1 = OFF
    bits 1..7   jAER x, stored mirrored (jAER shows x = 127 - field)
    bits 8..14  jAER y
    bit 15      sync event (an external pulse, no pixel)
    bit 31      jAER special event (no pixel)

Records with bit 15 or bit 31 set are skipped and counted, as jAER skips them; bits 16..30 are ignored,
as jAER's masks ignore them. Pixel coordinates (x = column, y = row) follow SpikingJelly's CIFAR10-DVS
reader, which most published SNN results on this data set used::

    x = 127 - bits 8..14,   y = 127 - bits 1..7,   p = 1 - bit 0   (p = 1: ON, p = 0: OFF)

that is, in jAER's coordinates, x = 127 - y_jAER and y = x_jAER.

Timestamps: monotonic, unwrapped
--------------------------------
A uint32 timestamp wraps to 0 after 2**32 - 1 us (71.6 minutes of the sensor's clock), which may happen
inside a recording. ``monotonic_timestamps`` reads each step between consecutive records modulo 2**32 as
the step of smallest size, -2**31 <= step < 2**31 (so a wrap is a step of a few us forward, as long as
consecutive events are less than 2**31 us, 36 minutes, apart), adds the steps up from the first
timestamp, and then lifts every timestamp that goes backwards to the largest one before it: such an
event keeps its place in the stream and counts as happening at the time of the event before it.
Frames are made from these timestamps, so a wrapped recording gives the frames of the unwrapped one.

From events to frames
---------------------
``events_to_frames`` cuts a recording of N events into T slices, by event count (``split_by="number"``)
or by time (``"time"``), with one of two rules. With t0 the first and t1 the last (monotonic) timestamp,
D = t1 - t0, and i the index of an event in the stream:

=================  ==========================================  ============================================
split_rule         ``"number"``: event i goes to slice ...      ``"time"``: event t goes to slice ...
=================  ==========================================  ============================================
``"even"``         T runs whose sizes differ by at most one,   k with k (D + 1) <= (t - t0) T < (k + 1)(D + 1):
(default)          the first N mod T runs one event longer     T equal windows of (D + 1) / T us covering
                   (``np.array_split``)                        t0..t1
``"spikingjelly"`` min(i // (N // T), T - 1): runs of N // T,  min((t - t0) // (D // T), T - 1): windows of
                   the last run also takes the N mod T left    D // T us, the last one also takes the events
                   over (all N events if N < T)                past t0 + T (D // T) (all if D < T)
=================  ==========================================  ============================================

``"spikingjelly"`` reproduces SpikingJelly 2.0.0's ``integrate_events_by_fixed_frames_number`` (its
``cal_fixed_frames_number_segment_index``): with ``size=128``, frames equal SpikingJelly's on a file
without special records whose timestamps neither wrap nor go backwards, wherever SpikingJelly's own split
succeeds (its time split raises IndexError when one of its windows holds no event; here that window is
simply empty). At other sizes, ``resize="sum"`` gives the sum pooling of SpikingJelly's frames and
``"bilinear"`` their resize by ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` (to
float rounding). SpikingJelly keeps special records as pixel events, so on a file with special records
its frames differ from these by exactly those records. tonic's CIFAR10DVS reads an AEDAT 4 conversion of the
data set, not these files, and is not compared here.

Each slice is counted per polarity channel (0 = OFF, 1 = ON) on a ``size x size`` grid, by one of two
``resize`` rules:

* ``"sum"`` (default): sum pooling of the 128 x 128 sensor: pixel (x, y) falls in cell (X, Y) when
  X * 128 <= x * size < (X + 1) * 128, and likewise for Y; every event is counted exactly once.
* ``"bilinear"``: the counts F of the 128 x 128 sensor, resized by bilinear interpolation with
  antialiasing to W F W^T, where with s = 128 / size the [size, 128] matrix W has W[Y, y] proportional to
  max(0, 1 - |y + 1/2 - (Y + 1/2) s| / max(s, 1)), each row summing to 1 (``bilinear_weights``): the
  filter of PIL's bilinear ``resize``, torchvision's ``Resize`` and
  ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``. A frame then holds local event
  densities (about counts / s**2), not counts. Later work such as TET resizes 128 x 128 frames to
  48 x 48 this way (through an 8-bit PIL image; here the float counts are resized).

Output: float32 [T, 2, size, size].

Resolution: STBP-tdBN (Zheng et al., 2021) trains ResNet-19 on T = 10 frames. Its input size is not
settled here: the DVS-CIFAR10 protocol of the same group (Wu et al., 2019, NeuNorm) downsamples to 42 x 42,
later work (TET, TEBN) uses 48 x 48. ``size`` is an argument; the default is 48, ``size=42`` follows NeuNorm.

Split: no official split exists; the usual one takes 9/10 of every class for training and 1/10 for
testing, here drawn with a fixed seed (see ``split_files``).
"""
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..checkpoint import atomic_write
from .cifar10 import CIFAR10_CLASSES
from .errors import DatasetError
from .transforms import random_crop, random_flip

CIFAR10_DVS_CLASSES = CIFAR10_CLASSES  # the same ten classes, in the same order
SENSOR_SIZE = 128
AEDAT_MAGIC = b"#!AER-DAT"
AEDAT_VERSION = b"2.0"
RECORD = np.dtype([("address", ">u4"), ("t", ">u4")])  # one 8-byte big-endian record
SPECIAL_BITS = (1 << 31) | (1 << 15)  # jAER's special-event bit and the DVS128 sync bit: not a pixel
TIMESTAMP_PERIOD = 2 ** 32
SPLIT_MODES = ("number", "time")
SPLIT_RULES = ("even", "spikingjelly")
RESIZE_MODES = ("sum", "bilinear")

HEADER_LINES = (
    b"#!AER-DAT2.0",
    b"# This is a raw AE data file - do not edit",
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
    b"# Timestamps tick is 1 us",
    b"# created by minisnn.data.cifar10_dvs.write_aedat (DVS128 addresses)",
)


# ------------------------------------------------------------------ reading and writing AEDAT 2.0
class Recording(NamedTuple):
    """The pixel events of one file and the number of special/sync records skipped while reading it."""
    t: np.ndarray  # int64 timestamps in us, as stored (0..2**32 - 1)
    x: np.ndarray  # int32 pixel column 0..127
    y: np.ndarray  # int32 pixel row 0..127
    p: np.ndarray  # int32 polarity: 1 = ON, 0 = OFF
    skipped: int


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
    """The events of one CIFAR10-DVS recording as a ``Recording`` (t, x, y, p, skipped), in file order.

    Records with address bit 15 (sync) or bit 31 (special) set are left out and counted in ``skipped``;
    the others are decoded as in the module docstring. Raises DatasetError naming the file if it is not
    an AEDAT 2.0 file or if its records are truncated.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read: {err.strerror or err}") from err
    start = _header_end(data, path)
    n_bytes = len(data) - start
    if n_bytes % RECORD.itemsize:
        raise DatasetError(f"{path}: truncated or corrupt: the {n_bytes} bytes after the {start}-byte header are "
                           f"{n_bytes // RECORD.itemsize} whole {RECORD.itemsize}-byte records plus "
                           f"{n_bytes % RECORD.itemsize} stray bytes")
    records = np.frombuffer(data, dtype=RECORD, offset=start)
    address = records["address"].astype(np.uint32)  # one contiguous, native-order copy: cheap bit arithmetic
    t = records["t"].astype(np.int64)
    pixel = (address & SPECIAL_BITS) == 0
    skipped = int(address.size - np.count_nonzero(pixel))
    if skipped:
        address, t = address[pixel], t[pixel]
    inverted = np.invert(address, out=address).view(np.int32)  # 127 - v = v XOR 127 for 7 bits, 1 - b = b XOR 1
    x = _bit_field(inverted, 8, 0x7F)  # 127 - bits 8..14
    y = _bit_field(inverted, 1, 0x7F)  # 127 - bits 1..7
    p = _bit_field(inverted, 0, 1)     # 1 - bit 0
    return Recording(t, x, y, p, skipped)


def _bit_field(words, shift, mask):
    """(words >> shift) & mask, in one new array."""
    field = words >> shift
    field &= mask
    return field


def _as_events(t, x, y, p, where):
    """Check and return (t, x, y, p) as arrays: 1-D, equal length, integer-valued."""
    arrays = [np.asarray(a) for a in (t, x, y, p)]
    for name, a in zip("txyp", arrays):
        if a.ndim != 1 or a.shape != arrays[0].shape:
            raise ValueError(f"{where}: t, x, y, p must be 1-D arrays of one length, got {name} of shape {a.shape} "
                             f"and t of shape {arrays[0].shape}")
        if a.size and a.dtype.kind not in "iub":
            raise TypeError(f"{where}: {name} must be integers, got {a.dtype}")
    return arrays


def write_aedat(path, t, x, y, p):
    """Write pixel events as an official-format CIFAR10-DVS file (AEDAT 2.0 header, DVS128 addresses).

    The exact inverse of ``read_aedat`` for files without special records: t in 0..2**32-1 (us), x and y
    in 0..127, p in {0, 1}.
    """
    t, x, y, p = _as_events(t, x, y, p, "write_aedat")
    for name, a, hi in (("t", t, TIMESTAMP_PERIOD - 1), ("x", x, SENSOR_SIZE - 1), ("y", y, SENSOR_SIZE - 1),
                        ("p", p, 1)):
        if a.size and (a.min() < 0 or a.max() > hi):
            raise ValueError(f"write_aedat: {name} must lie in 0..{hi}, got {a.min()}..{a.max()}")
    records = np.empty(t.size, dtype=RECORD)
    x, y, p = (a.astype(np.int64) for a in (x, y, p))
    records["address"] = ((SENSOR_SIZE - 1 - x) << 8) | ((SENSOR_SIZE - 1 - y) << 1) | (1 - p)
    records["t"] = t
    Path(path).write_bytes(b"".join(line + b"\r\n" for line in HEADER_LINES) + records.tobytes())


# ------------------------------------------------------------------ events to frames
def monotonic_timestamps(t):
    """Recorded timestamps (stream order) unwrapped past 2**32 and made non-decreasing: int64 us.

    The step from t[i-1] to t[i] is their difference in 32-bit arithmetic read as a signed 32-bit int
    (the difference modulo 2**32 in -2**31..2**31-1); u = t[0] + the running sum of the steps, and then
    each u[i] is lifted to max(u[0..i]) (see the module docstring).
    """
    t = np.asarray(t)
    if t.size and t.dtype.kind not in "iu":
        raise TypeError(f"monotonic_timestamps: timestamps must be integers (us), got {t.dtype}")
    if t.size == 0:
        return t.astype(np.int64)
    steps = np.diff(t.astype(np.uint32)).view(np.int32)  # wraps modulo 2**32 by itself
    unwrapped = np.cumsum(np.concatenate(([np.int64(t[0])], steps)))
    return np.maximum.accumulate(unwrapped, out=unwrapped)


def _slice_starts(t, T, split_by, split_rule):
    """The index of the first event of slices 1..T-1 (events in stream order, so every slice is a run).

    The rules of the module docstring as run boundaries: event i is in slice k when
    starts[k - 1] <= i < starts[k], with starts[-1] = 0 and starts[T - 1] = N.
    """
    n, k = len(t), np.arange(1, T)
    if split_by == "number":
        if split_rule == "even":
            return k * (n // T) + np.minimum(k, n % T)  # the first N mod T runs one event longer
        return k * (n // T)  # the last run takes what is left
    if n == 0:
        return np.zeros(T - 1, dtype=np.int64)
    elapsed = monotonic_timestamps(t)
    elapsed -= elapsed[0]
    duration = int(elapsed[-1])
    if split_rule == "even":
        first_time = -(-k * (duration + 1) // T)  # the least e with k (D + 1) <= e T
    else:
        first_time = k * (duration // T)
    return np.searchsorted(elapsed, first_time, side="left")


def bilinear_weights(size, in_size=SENSOR_SIZE):
    """The float64 [size, in_size] matrix W that resizes one axis by antialiased bilinear interpolation.

    With s = in_size / size, W[Y, y] is proportional to max(0, 1 - |y + 1/2 - (Y + 1/2) s| / max(s, 1)),
    each row summing to 1; a frame F [in_size, in_size] becomes W F W^T.
    """
    scale = in_size / size
    centre = (np.arange(size)[:, None] + 0.5) * scale
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(in_size) + 0.5 - centre) / max(scale, 1.0))
    return weights / weights.sum(axis=1, keepdims=True)


def _check_frame_args(T, split_by, size, split_rule, resize, where):
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"{where}: T must be a positive int, got {T!r}")
    if split_by not in SPLIT_MODES:
        raise ValueError(f"{where}: split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= SENSOR_SIZE:
        raise ValueError(f"{where}: size must be an int in 1..{SENSOR_SIZE}, got {size!r}")
    if split_rule not in SPLIT_RULES:
        raise ValueError(f"{where}: split_rule must be one of {SPLIT_RULES}, got {split_rule!r}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"{where}: resize must be one of {RESIZE_MODES}, got {resize!r}")


def events_to_frames(t, x, y, p, T, split_by="number", size=48, split_rule="even", resize="sum"):
    """Frames float32 [T, 2, size, size] of one recording: slice k, channel p (0 OFF, 1 ON), pixel (Y, X).

    Events (in stream order, timestamps as recorded) are split into T slices by ``split_by`` ("number" or
    "time") under ``split_rule`` ("even" or "spikingjelly"), counted per channel and sensor pixel, and
    brought from 128 x 128 to size x size by ``resize`` ("sum" pooling or antialiased "bilinear"); the
    module docstring gives the exact rules.
    """
    _check_frame_args(T, split_by, size, split_rule, resize, "events_to_frames")
    t, x, y, p = _as_events(t, x, y, p, "events_to_frames")
    if t.size and (x.min() < 0 or y.min() < 0 or max(x.max(), y.max()) >= SENSOR_SIZE or p.min() < 0
                   or p.max() > 1):
        raise ValueError(f"events_to_frames: need 0 <= x, y < {SENSOR_SIZE} and p in {{0, 1}}, got x "
                         f"{x.min()}..{x.max()}, y {y.min()}..{y.max()}, p {p.min()}..{p.max()}")
    x, y, p = (a.astype(np.int32, copy=False) for a in (x, y, p))  # indices, not masks, even if bool
    run_lengths = np.diff(_slice_starts(t, T, split_by, split_rule), prepend=0, append=t.size)
    k = np.repeat(np.arange(T, dtype=np.int32), run_lengths)
    cells = size if resize == "sum" else SENSOR_SIZE  # sum pooling counts straight into the size x size cells
    cell_of = np.arange(SENSOR_SIZE, dtype=np.int32) * cells // SENSOR_SIZE  # the cell of each sensor row/column
    cell = ((k * 2 + p) * cells + cell_of[y]) * cells + cell_of[x]
    counts = np.bincount(cell, minlength=T * 2 * cells * cells).reshape(T, 2, cells, cells)
    if resize == "bilinear":
        weights = bilinear_weights(size)
        counts = weights @ counts @ weights.T
    return counts.astype(np.float32)


# ------------------------------------------------------------------ cache
def cached_frames(source, cache_file, T, split_by="number", size=48, split_rule="even", resize="sum"):
    """(frames, skipped) of ``source``: ``events_to_frames`` of ``read_aedat(source)`` and its skipped-record
    count, computed once and kept in the .npz ``cache_file``.

    The cache records the size and modification time of the recording it was made from, and is reused
    only while the recording still has both: a recording replaced by another -- newer, or older, as
    unzip restores an archive's times -- is read again. It is written atomically, so an interrupted run
    never leaves a half-written cache behind.
    """
    source, cache_file = Path(source), Path(cache_file)
    _check_frame_args(T, split_by, size, split_rule, resize, "cached_frames")
    shape = (T, 2, size, size)
    made = source.stat()
    made_from = np.array([made.st_size, made.st_mtime_ns], dtype=np.int64)  # the recording, as it is now
    if cache_file.exists():
        try:
            with np.load(cache_file) as archive:
                current = "source" in archive.files and np.array_equal(archive["source"], made_from)
                if current:
                    frames, skipped = archive["frames"], int(archive["skipped"])
        except Exception as err:  # zipfile, pickle, key and type errors alike: the file is not our cache
            raise DatasetError(f"{cache_file}: unreadable frame cache ({type(err).__name__}: {err}); "
                               "delete it to rebuild") from err
        if current:
            if frames.shape != shape or frames.dtype != np.float32:
                raise DatasetError(f"{cache_file}: cached frames are {frames.dtype} {frames.shape}, expected "
                                   f"float32 {shape}; delete it to rebuild")
            if not np.isfinite(frames).all():
                raise DatasetError(f"{cache_file}: cached frames hold NaN or infinity (event counts never do); "
                                   "delete it to rebuild")
            return frames, skipped
    t, x, y, p, skipped = read_aedat(source)
    frames = events_to_frames(t, x, y, p, T, split_by, size, split_rule, resize)
    atomic_write(cache_file, lambda f: np.savez_compressed(f, frames=frames, skipped=np.int64(skipped),
                                                           source=made_from))
    return frames, skipped


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
    """One split of CIFAR10-DVS as frames: ``ds[i]`` is (float32 [T, 2, size, size] frames, label).

    root: folder with the ten class folders of ``.aedat`` files. Frames are made lazily, once per file,
    and cached in ``cache_dir`` (default ``root/frames_cache``) under a folder named after the frame
    settings. See ``split_files`` for the seeded 9:1 split, ``events_to_frames`` for T, split_by, size,
    split_rule and resize. ``skipped[i]`` is the number of special/sync records skipped in file i
    (filled by ``load_all``).
    """

    classes = CIFAR10_DVS_CLASSES

    def __init__(self, root, T=10, split_by="number", size=48, train=True, seed=0, cache_dir=None,
                 split_rule="even", resize="sum"):
        _check_frame_args(T, split_by, size, split_rule, resize, "CIFAR10DVS")
        self.root = Path(root)
        self.T, self.split_by, self.size, self.split_rule, self.resize = int(T), split_by, int(size), split_rule, resize
        self.files, self.labels = split_files(self.root, train, seed)
        self.skipped = np.zeros(len(self.files), dtype=np.int64)
        cache_root = Path(cache_dir) if cache_dir is not None else self.root / "frames_cache"
        self.cache_dir = cache_root / f"T{self.T}_{split_by}_{split_rule}_{resize}{self.size}px"

    def __len__(self):
        return len(self.files)

    def _frames(self, i):
        """(frames, skipped records) of file i, from the cache or made and cached now."""
        source = self.files[i]
        cache_file = self.cache_dir / source.parent.name / (source.stem + ".npz")
        return cached_frames(source, cache_file, self.T, self.split_by, self.size, self.split_rule, self.resize)

    def __getitem__(self, i):
        return self._frames(i)[0], int(self.labels[i])

    def load_all(self, progress=False):
        """All frames and labels as arrays: float32 [N, T, 2, size, size] and int64 [N]; fills ``skipped``."""
        frames = np.empty((len(self), self.T, 2, self.size, self.size), dtype=np.float32)
        for i in tqdm(range(len(self)), desc="CIFAR10-DVS frames", disable=not progress):
            frames[i], self.skipped[i] = self._frames(i)
        return frames, self.labels.copy()


def report_skipped(splits):
    """Warn once, for the whole data set, about special/sync records skipped in any file of ``splits``.

    The per-file counts go to ``skipped_records.json`` in the cache folder (written atomically), which the
    warning names; nothing is written or said when no record was skipped.
    """
    counts = {f"{f.parent.name}/{f.name}": int(n) for s in splits for f, n in zip(s.files, s.skipped) if n}
    if not counts:
        return None
    path = splits[0].cache_dir / "skipped_records.json"
    text = json.dumps({"skipped_records": sum(counts.values()), "recordings": counts}, indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))
    warnings.warn(f"CIFAR10-DVS: skipped {sum(counts.values())} special/sync records (address bit 15 or 31 set; "
                  f"jAER skips them too) in {len(counts)} of {sum(len(s) for s in splits)} recordings under "
                  f"{splits[0].root}; counts per file in {path}", stacklevel=3)
    return path


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


def load_cifar10_dvs(root, T=10, split_by="number", size=48, seed=0, cache_dir=None, progress=True,
                     split_rule="even", resize="sum"):
    """(train_x, train_y, test_x, test_y): float32 [N, T, 2, size, size] frames and int64 labels.

    Skipped special/sync records are reported once for both splits (see ``report_skipped``).
    """
    splits = [CIFAR10DVS(root, T, split_by, size, train, seed, cache_dir, split_rule, resize)
              for train in (True, False)]
    (train_x, train_y), (test_x, test_y) = (s.load_all(progress) for s in splits)
    report_skipped(splits)
    return train_x, train_y, test_x, test_y
