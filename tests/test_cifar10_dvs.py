"""CIFAR10-DVS: AEDAT 2.0 reading/writing, malformed files, frames vs a per-event loop, split, cache, augmentation."""
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn.data import cifar10_dvs as dvs
from minisnn.data.cifar10 import DatasetError

HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"


def random_events(rng, n, t_max=1_300_000):
    t = np.sort(rng.integers(0, t_max, n))
    x, y = rng.integers(0, 128, (2, n))
    p = rng.integers(0, 2, n)
    return t, x, y, p


# ------------------------------------------------------------------ reading and writing
def test_round_trip_is_exact(tmp_path):
    events = random_events(np.random.default_rng(0), 5000, t_max=2 ** 32)
    events[0][-1] = 2 ** 32 - 1  # the largest timestamp a record can hold
    path = tmp_path / "rec.aedat"
    dvs.write_aedat(path, *events)
    assert path.read_bytes().startswith(b"#!AER-DAT2.0\r\n")
    back = dvs.read_aedat(path)
    for a, b in zip(back, events):
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, b)


def test_reader_follows_the_documented_bit_layout(tmp_path):
    """Records built byte by byte: bit 0 = OFF flag, bits 1..7 = 127 - y, bits 8..14 = 127 - x, big-endian."""
    records = [(5 << 8) | (10 << 1) | 0, 123, (0 << 8) | (127 << 1) | 1, 456, (127 << 8) | (0 << 1) | 0, 2 ** 31 + 7]
    path = tmp_path / "hand.aedat"
    path.write_bytes(HEADER + struct.pack(">6I", *records))
    t, x, y, p = dvs.read_aedat(path)
    np.testing.assert_array_equal(t, [123, 456, 2 ** 31 + 7])
    np.testing.assert_array_equal(x, [122, 127, 0])
    np.testing.assert_array_equal(y, [117, 0, 127])
    np.testing.assert_array_equal(p, [1, 0, 1])


def test_header_only_file_has_no_events(tmp_path):
    path = tmp_path / "empty.aedat"
    path.write_bytes(HEADER)
    assert all(a.size == 0 for a in dvs.read_aedat(path))


@pytest.mark.parametrize("content, message", [
    (HEADER + b"\x00" * 8 * 3 + b"\x00\x01\x02", "truncated or corrupt"),       # last record cut short
    (struct.pack(">4I", 2, 10, 4, 20), "not an AEDAT file"),                      # records, no header
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not an AEDAT file"),             # another format
    (b"", "not an AEDAT file"),                                                     # empty file
    (b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + b"\x00" * 28, "version '3.1'"),       # AEDAT 3.1
    (b"#!AER-DAT4.0\r\n" + b"\x00" * 16, "version '4.0'"),                        # AEDAT 4
    (b"#!AER-DAT2.0\r\n# a header cut in the mid", "truncated header"),
    (HEADER + struct.pack(">4I", 2, 10, 1 << 15, 20), r"record 1 \(byte"),         # bit 15 set
    (HEADER + struct.pack(">2I", 0x01000000, 5), "not a DVS128 pixel event"),     # high byte set
])
def test_malformed_files_raise_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.aedat"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        dvs.read_aedat(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="nothere.aedat"):
        dvs.read_aedat(tmp_path / "nothere.aedat")


def test_writer_rejects_out_of_range_events(tmp_path):
    with pytest.raises(ValueError, match="x must lie in 0..127"):
        dvs.write_aedat(tmp_path / "w.aedat", [0], [128], [0], [0])
    with pytest.raises(ValueError, match="p must lie"):
        dvs.write_aedat(tmp_path / "w.aedat", [0], [0], [0], [2])
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        dvs.write_aedat(tmp_path / "w.aedat", [0, 1], [0], [0], [0])


# ------------------------------------------------------------------ frames against a per-event loop
def frames_by_loop(t, x, y, p, T, split_by, size):
    """The definition, one event at a time: find the slice and the downsampled cell by search."""
    n = len(t)
    frames = np.zeros((T, 2, size, size), np.float32)
    bounds = np.cumsum([len(c) for c in np.array_split(np.arange(n), T)])  # run k ends before bounds[k]
    t0 = min(t) if n else 0
    span = (max(t) - t0 + 1) if n else 1
    for i in range(n):
        if split_by == "number":
            k = next(k for k in range(T) if i < bounds[k])
        else:
            k = next(k for k in range(T) if k * span <= (t[i] - t0) * T < (k + 1) * span)
        cx = next(c for c in range(size) if c * 128 <= x[i] * size < (c + 1) * 128)
        cy = next(c for c in range(size) if c * 128 <= y[i] * size < (c + 1) * 128)
        frames[k, p[i], cy, cx] += 1
    return frames


@settings(max_examples=40)
@given(n=st.integers(0, 300), T=st.integers(1, 12), size=st.sampled_from([1, 7, 32, 42, 48, 128]),
       split_by=st.sampled_from(["number", "time"]), seed=st.integers(0, 2 ** 16), clustered=st.booleans())
def test_frames_match_the_per_event_loop(n, T, size, split_by, seed, clustered):
    rng = np.random.default_rng(seed)
    t, x, y, p = random_events(rng, n, t_max=50 if clustered else 10 ** 6)  # clustered: many equal timestamps
    frames = dvs.events_to_frames(t, x, y, p, T, split_by, size)
    assert frames.dtype == np.float32 and frames.shape == (T, 2, size, size)
    np.testing.assert_array_equal(frames, frames_by_loop(t, x, y, p, T, split_by, size))


def test_frame_splits_on_a_worked_example():
    t = np.array([0, 1, 2, 3, 100, 101])
    x = y = np.zeros(6, int)
    p = np.array([1, 1, 0, 1, 0, 1])
    by_number = dvs.events_to_frames(t, x, y, p, 4, "number", 1)[:, :, 0, 0]  # runs of 2, 2, 1, 1 events
    np.testing.assert_array_equal(by_number, [[0, 2], [1, 1], [1, 0], [0, 1]])
    by_time = dvs.events_to_frames(t, x, y, p, 4, "time", 1)[:, :, 0, 0]  # windows of 102 / 4 us
    np.testing.assert_array_equal(by_time, [[1, 3], [0, 0], [0, 0], [1, 1]])


def test_events_to_frames_rejects_bad_arguments():
    t, x, y, p = [0, 1], [0, 1], [0, 1], [0, 1]
    with pytest.raises(ValueError, match="split_by"):
        dvs.events_to_frames(t, x, y, p, 2, "count")
    with pytest.raises(ValueError, match="T must be a positive int"):
        dvs.events_to_frames(t, x, y, p, 0)
    with pytest.raises(ValueError, match="size must be an int in 1..128"):
        dvs.events_to_frames(t, x, y, p, 2, size=129)
    with pytest.raises(ValueError, match="0 <= x, y < 128"):
        dvs.events_to_frames(t, [0, 128], y, p, 2)
    with pytest.raises(TypeError, match="x must be integers"):
        dvs.events_to_frames(t, [0.5, 1.0], y, p, 2)


# ------------------------------------------------------------------ data set: split, cache, loading
def make_root(tmp_path, per_class=10, n_events=64, seed=0):
    rng = np.random.default_rng(seed)
    root = tmp_path / "CIFAR10-DVS"
    for name in dvs.CIFAR10_DVS_CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            dvs.write_aedat(root / name / f"cifar10_{name}_{i}.aedat", *random_events(rng, n_events))
    return root


def test_split_is_9_to_1_per_class_disjoint_and_seeded(tmp_path):
    root = make_root(tmp_path, per_class=20, n_events=4)
    for i in range(20, 25):  # 25 cat recordings: ceil(25 / 10) = 3 go to the test split
        dvs.write_aedat(root / "cat" / f"cifar10_cat_{i}.aedat", [0], [0], [0], [0])
    train = dvs.CIFAR10DVS(root, T=2, size=8, train=True, seed=3)
    test = dvs.CIFAR10DVS(root, T=2, size=8, train=False, seed=3)
    np.testing.assert_array_equal(np.bincount(train.labels), [18, 18, 18, 22, 18, 18, 18, 18, 18, 18])
    np.testing.assert_array_equal(np.bincount(test.labels), [2, 2, 2, 3, 2, 2, 2, 2, 2, 2])
    assert set(train.files).isdisjoint(test.files) and len(set(train.files) | set(test.files)) == 205
    for files, labels in ((train.files, train.labels), (test.files, test.labels)):
        assert all(f.parent.name == dvs.CIFAR10_DVS_CLASSES[k] for f, k in zip(files, labels))
    assert dvs.CIFAR10DVS(root, T=2, size=8, train=False, seed=3).files == test.files
    assert dvs.CIFAR10DVS(root, T=2, size=8, train=False, seed=4).files != test.files


def test_dataset_items_are_the_frames_of_their_file(tmp_path):
    root = make_root(tmp_path, per_class=10)
    ds = dvs.CIFAR10DVS(root, T=5, split_by="time", size=42, train=False, seed=0, cache_dir=tmp_path / "c")
    frames, label = ds[3]
    assert label == 3 and frames.shape == (5, 2, 42, 42)
    np.testing.assert_array_equal(frames, dvs.events_to_frames(*dvs.read_aedat(ds.files[3]), 5, "time", 42))
    x, y = ds.load_all()
    assert x.shape == (10, 5, 2, 42, 42) and x.dtype == np.float32
    np.testing.assert_array_equal(y, np.arange(10))
    np.testing.assert_array_equal(x[3], frames)


def test_cache_is_used_and_keyed_by_frame_settings(tmp_path, monkeypatch):
    root = make_root(tmp_path, per_class=10)
    first = dvs.CIFAR10DVS(root, T=4, size=16, train=False).load_all()[0]
    cached = sorted((root / "frames_cache").rglob("*.npz"))
    assert len(cached) == 10 and not list((root / "frames_cache").rglob("*.tmp"))

    def broken_reader(path):
        raise AssertionError(f"{path} was parsed again although its frames are cached")
    monkeypatch.setattr(dvs, "read_aedat", broken_reader)
    np.testing.assert_array_equal(dvs.CIFAR10DVS(root, T=4, size=16, train=False).load_all()[0], first)
    with pytest.raises(AssertionError, match="parsed again"):  # other settings, other cache entry
        dvs.CIFAR10DVS(root, T=5, size=16, train=False)[0]


def test_cache_is_rebuilt_when_the_recording_is_newer(tmp_path):
    root = make_root(tmp_path, per_class=10)
    ds = dvs.CIFAR10DVS(root, T=2, size=4, train=False)
    old = ds[0][0]
    dvs.write_aedat(ds.files[0], [0, 1, 2], [0, 0, 0], [0, 0, 0], [1, 1, 1])
    cache_time = next((root / "frames_cache").rglob(ds.files[0].stem + ".npz")).stat().st_mtime_ns
    os.utime(ds.files[0], ns=(cache_time + 10 ** 9, cache_time + 10 ** 9))  # newer, even on coarse clocks
    new = ds[0][0]
    assert new.sum() == 3 and new[:, 1, 0, 0].sum() == 3 and not np.array_equal(new, old)


def test_dataset_errors_name_the_problem(tmp_path):
    root = make_root(tmp_path, per_class=10, n_events=2)
    for f in (root / "ship").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="ship: no .aedat recordings"):
        dvs.CIFAR10DVS(root)
    (root / "ship").rmdir()
    with pytest.raises(DatasetError, match="class folder .*ship not found"):
        dvs.CIFAR10DVS(root)
    bad = make_root(tmp_path / "b", per_class=10, n_events=2)
    victim = dvs.CIFAR10DVS(bad, train=False).files[2]
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(DatasetError, match=f"{victim.name}: truncated"):
        dvs.CIFAR10DVS(bad, train=False).load_all()


# ------------------------------------------------------------------ augmentation
def test_shift_and_flip_moves_every_time_step_alike():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 3, (6, 4, 2, 9, 9)).astype(np.float32)
    out = dvs.shift_and_flip(batch, np.random.default_rng(1), max_shift=2)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    padded = np.pad(batch, ((0, 0), (0, 0), (0, 0), (2, 2), (2, 2)))
    for original, augmented, pad in zip(batch, out, padded):
        candidates = [window[..., ::-1] if flip else window
                      for dy in range(5) for dx in range(5) for flip in (False, True)
                      for window in [pad[..., dy:dy + 9, dx:dx + 9]]]
        assert any(np.array_equal(augmented, c) for c in candidates)
    assert not np.array_equal(out, batch)
    np.testing.assert_array_equal(out, dvs.shift_and_flip(batch, np.random.default_rng(1), max_shift=2))
    with pytest.raises(ValueError, match=r"\[N, T, 2, H, W\]"):
        dvs.shift_and_flip(batch[0], rng)
