"""CIFAR10-DVS: AEDAT 2.0 reading/writing, special records, timestamp wrap, frames vs a per-event loop and vs
SpikingJelly, resizing, split, cache, augmentation."""
import json
import os
import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn.data import cifar10_dvs as dvs
from minisnn.data import DatasetError

HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"


def random_events(rng, n, t_max=1_300_000):
    t = np.sort(rng.integers(0, t_max, n))
    x, y = rng.integers(0, 128, (2, n))
    p = rng.integers(0, 2, n)
    return t, x, y, p


def jaer_address(x_jaer, y_jaer, on):
    """A DVS128 pixel address laid out as jAER's DVS128 extractor reads it: bit 0 = 0 for ON,
    jAER x = 127 - bits 1..7, jAER y = bits 8..14 (written here from that layout, not with write_aedat)."""
    return (y_jaer << 8) | ((127 - x_jaer) << 1) | (0 if on else 1)


def aedat_bytes(records):
    """An AEDAT 2.0 file: the header, then big-endian (uint32 address, uint32 timestamp) per record."""
    return HEADER + b"".join(struct.pack(">II", address, t) for address, t in records)


# ------------------------------------------------------------------ reading and writing
def test_round_trip_is_exact(tmp_path):
    events = random_events(np.random.default_rng(0), 5000, t_max=2 ** 32)
    events[0][-1] = 2 ** 32 - 1  # the largest timestamp a record can hold
    path = tmp_path / "rec.aedat"
    dvs.write_aedat(path, *events)
    assert path.read_bytes().startswith(b"#!AER-DAT2.0\r\n")
    back = dvs.read_aedat(path)
    assert back.skipped == 0 and back.t.dtype == np.int64
    for a, b in zip(back[:4], events):
        assert a.dtype.kind == "i"
        np.testing.assert_array_equal(a, b)


def test_reader_follows_the_documented_bit_layout(tmp_path):
    """Records built byte by byte: bit 0 = OFF flag, bits 1..7 = 127 - y, bits 8..14 = 127 - x, big-endian."""
    records = [(5 << 8) | (10 << 1) | 0, 123, (0 << 8) | (127 << 1) | 1, 456, (127 << 8) | (0 << 1) | 0, 2 ** 31 + 7]
    path = tmp_path / "hand.aedat"
    path.write_bytes(HEADER + struct.pack(">6I", *records))
    t, x, y, p, skipped = dvs.read_aedat(path)
    assert skipped == 0
    np.testing.assert_array_equal(t, [123, 456, 2 ** 31 + 7])
    np.testing.assert_array_equal(x, [122, 127, 0])
    np.testing.assert_array_equal(y, [117, 0, 127])
    np.testing.assert_array_equal(p, [1, 0, 1])


def test_special_and_sync_records_are_skipped_as_jaer_does(tmp_path):
    """jAER skips a record with bit 15 (sync) or bit 31 (special) set and masks bits 16..30 away."""
    pixels = [(3, 120, True), (127, 0, False), (0, 127, True), (64, 5, False)]  # jAER (x, y, ON?)
    records = [
        (jaer_address(*pixels[0]), 10),
        (0x8000, 11),                                    # sync event, nothing else set
        (jaer_address(*pixels[1]) | 0x8000, 12),         # sync bit on a pixel-looking address
        (jaer_address(*pixels[1]), 13),
        (0x80000000 | jaer_address(*pixels[2]), 14),     # special event
        (0xFFFFFFFF, 15),                                # every bit set
        (jaer_address(*pixels[2]), 2 ** 32 - 1),
        (jaer_address(*pixels[3]) | 0x7FFF0000, 16),     # bits 16..30 set, 15 and 31 clear: still a pixel
    ]
    path = tmp_path / "special.aedat"
    path.write_bytes(aedat_bytes(records))
    t, x, y, p, skipped = dvs.read_aedat(path)
    assert skipped == 4
    np.testing.assert_array_equal(t, [10, 13, 2 ** 32 - 1, 16])
    np.testing.assert_array_equal(x, [127 - yj for _, yj, _ in pixels])  # x = 127 - y_jAER
    np.testing.assert_array_equal(y, [xj for xj, _, _ in pixels])        # y = x_jAER
    np.testing.assert_array_equal(p, [int(on) for _, _, on in pixels])


def test_header_only_file_has_no_events(tmp_path):
    path = tmp_path / "empty.aedat"
    path.write_bytes(HEADER)
    assert all(a.size == 0 for a in dvs.read_aedat(path)[:4])
    path.write_bytes(aedat_bytes([(0x8000, 1), (0x80000000, 2)]))  # only special records
    recording = dvs.read_aedat(path)
    assert recording.skipped == 2 and recording.t.size == 0
    assert dvs.events_to_frames(*recording[:4], 3, "time", 4).sum() == 0


@pytest.mark.parametrize("content, message", [
    (HEADER + b"\x00" * 8 * 3 + b"\x00\x01\x02", "truncated or corrupt"),       # last record cut short
    (struct.pack(">4I", 2, 10, 4, 20), "not an AEDAT file"),                      # records, no header
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not an AEDAT file"),             # another format
    (b"", "not an AEDAT file"),                                                     # empty file
    (b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + b"\x00" * 28, "version '3.1'"),       # AEDAT 3.1
    (b"#!AER-DAT4.0\r\n" + b"\x00" * 16, "version '4.0'"),                        # AEDAT 4
    (b"#!AER-DAT2.0\r\n# a header cut in the mid", "truncated header"),
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


@pytest.mark.parametrize("t, x, y, p, says", [
    (-1, 0, 0, 0, "t must lie in 0..4294967295"), (2 ** 32, 0, 0, 0, "t must lie in 0..4294967295"),
    (0, -1, 0, 0, "x must lie in 0..127"), (0, 128, 0, 0, "x must lie in 0..127"),
    (0, 0, -1, 0, "y must lie in 0..127"), (0, 0, 128, 0, "y must lie in 0..127"),
    (0, 0, 0, -1, "p must lie in 0..1"), (0, 0, 0, 2, "p must lie in 0..1")])
def test_writer_rejects_each_value_outside_the_sensor_and_format(tmp_path, t, x, y, p, says):
    # an address field overflowing into its neighbour would write a different event, silently
    with pytest.raises(ValueError, match=says):
        dvs.write_aedat(tmp_path / "w.aedat", [t], [x], [y], [p])
    with pytest.raises(ValueError, match=says):  # one bad event after a good one (0 is in range for each field)
        dvs.write_aedat(tmp_path / "w.aedat", [0, t], [0, x], [0, y], [0, p])
    assert not (tmp_path / "w.aedat").exists()
    dvs.write_aedat(tmp_path / "w.aedat", [min(max(t, 0), 2 ** 32 - 1)], [min(max(x, 0), 127)],
                    [min(max(y, 0), 127)], [min(max(p, 0), 1)])  # the nearest valid event is written


def test_writer_rejects_events_of_different_lengths(tmp_path):
    with pytest.raises(ValueError, match=r"1-D arrays of one length, got x of shape \(1,\) and t of shape \(2,\)"):
        dvs.write_aedat(tmp_path / "w.aedat", [0, 1], [0], [0], [0])


def test_events_in_any_integer_type_are_written_and_counted_alike(tmp_path):
    """Events kept compactly (uint8 coordinates, bool or unsigned polarities) give the same file and frames as int64."""
    t, x, y, p = random_events(np.random.default_rng(4), 300)
    dvs.write_aedat(tmp_path / "wide.aedat", t, x, y, p)
    dvs.write_aedat(tmp_path / "narrow.aedat", t.astype(np.uint32), x.astype(np.uint8), y.astype(np.uint8),
                    p.astype(np.uint8))
    assert (tmp_path / "narrow.aedat").read_bytes() == (tmp_path / "wide.aedat").read_bytes()
    frames = dvs.events_to_frames(t, x, y, p, 3, size=16)
    for polarity in (p.astype(bool), p.astype(np.uint64)):
        np.testing.assert_array_equal(dvs.events_to_frames(t, x.astype(np.uint8), y.astype(np.uint16), polarity, 3,
                                                           size=16), frames)


def test_reading_and_splitting_take_paths_given_as_text(tmp_path):
    events = random_events(np.random.default_rng(2), 20)
    dvs.write_aedat(str(tmp_path / "rec.aedat"), *events)
    for a, b in zip(dvs.read_aedat(str(tmp_path / "rec.aedat"))[:4], events):
        np.testing.assert_array_equal(a, b)
    root = make_root(tmp_path, per_class=2, n_events=1)
    assert dvs.split_files(str(root), train=False)[0] == dvs.split_files(root, train=False)[0]


# ------------------------------------------------------------------ timestamps
PERIOD = 2 ** 32


def monotonic_by_loop(t):
    """The definition, one event at a time: steps read modulo 2**32 as the smallest, summed, then a running max."""
    out = []
    for i, ti in enumerate(int(v) for v in t):
        if i == 0:
            raw = ti
        else:
            step = (ti - int(t[i - 1])) % PERIOD
            raw += step - PERIOD if step >= PERIOD // 2 else step
        out.append(raw if not out else max(out[-1], raw))
    return out


def recorded_timestamps(rng, n, start, backward=0.0):
    """Timestamps as a sensor would store them: from ``start``, mostly forward steps (some zero), a fraction
    ``backward`` of steps going back, all taken modulo 2**32 (so they wrap when the clock passes 2**32 - 1)."""
    steps = rng.integers(0, 40, n)
    back = rng.random(n) < backward
    steps[back] = -rng.integers(1, 100, back.sum())
    steps[:1] = 0
    return (start + np.cumsum(steps)) % PERIOD


def test_monotonic_timestamps_unwrap_and_lift_backward_steps():
    wrapped = np.array([PERIOD - 3, PERIOD - 1, 0, 2, PERIOD - 2, 5])  # wraps after 2**32 - 1; one stray event
    np.testing.assert_array_equal(dvs.monotonic_timestamps(wrapped),
                                  [PERIOD - 3, PERIOD - 1, PERIOD, PERIOD + 2, PERIOD + 2, PERIOD + 5])
    np.testing.assert_array_equal(dvs.monotonic_timestamps([100, 50, 120, 120, 90]), [100, 100, 120, 120, 120])
    assert dvs.monotonic_timestamps(np.array([], dtype=np.uint32)).dtype == np.int64
    with pytest.raises(TypeError, match="timestamps must be integers"):
        dvs.monotonic_timestamps([1.0, 2.5])
    twice = (np.arange(0, 3 * PERIOD, PERIOD // 4 + 1)) % PERIOD  # three wraps, steps just under 2**31
    np.testing.assert_array_equal(dvs.monotonic_timestamps(twice), np.arange(0, 3 * PERIOD, PERIOD // 4 + 1))


@settings(max_examples=30)
@given(n=st.integers(1, 200), seed=st.integers(0, 2 ** 16), near_wrap=st.booleans(),
       backward=st.sampled_from([0.0, 0.1, 0.5]))
def test_monotonic_timestamps_match_the_per_event_loop(n, seed, near_wrap, backward):
    rng = np.random.default_rng(seed)
    start = PERIOD - int(rng.integers(0, 2000)) if near_wrap else int(rng.integers(0, PERIOD))
    t = recorded_timestamps(rng, n, start, backward)
    u = dvs.monotonic_timestamps(t)
    assert u.dtype == np.int64 and np.all(np.diff(u) >= 0)
    np.testing.assert_array_equal(u, monotonic_by_loop(t))


@pytest.mark.parametrize("split_rule", dvs.SPLIT_RULES)
@pytest.mark.parametrize("split_by", dvs.SPLIT_MODES)
def test_a_wrapped_recording_gives_the_frames_of_the_unwrapped_one(tmp_path, split_by, split_rule):
    rng = np.random.default_rng(1)
    t, x, y, p = random_events(rng, 5000)  # 1.3 s
    offset = PERIOD - 400_000  # the clock wraps 0.4 s into the recording
    path = tmp_path / "wrapped.aedat"
    dvs.write_aedat(path, (t + offset) % PERIOD, x, y, p)
    recording = dvs.read_aedat(path)
    assert recording.t.min() < 400_000 < 2 ** 31 < recording.t.max()  # the stored timestamps did wrap
    frames = dvs.events_to_frames(*recording[:4], 10, split_by, 32, split_rule)
    np.testing.assert_array_equal(frames, dvs.events_to_frames(t, x, y, p, 10, split_by, 32, split_rule))
    assert (frames.sum(axis=(1, 2, 3)) > 0).all()  # not all in one frame, as the stored timestamps would give
    np.testing.assert_array_equal(dvs.monotonic_timestamps(recording.t), t + offset)


def test_a_timestamp_going_backwards_stays_in_the_window_of_the_event_before_it():
    t = np.array([0, 30, 60, 95, 5, 96, 99])  # the event stamped 5 arrives after the one stamped 95
    x = y = np.zeros(7, int)
    p = np.ones(7, int)
    frames = dvs.events_to_frames(t, x, y, p, 4, "time", 1)[:, 1, 0, 0]  # windows of 100 / 4 us
    np.testing.assert_array_equal(frames, [1, 1, 1, 4])  # counted at 95, not in the first window


# ------------------------------------------------------------------ frames against a per-event loop
def frames_by_loop(t, x, y, p, T, split_by, size, split_rule):
    """The definition, one event at a time: find the slice and the sum-pooled cell by search."""
    n = len(t)
    frames = np.zeros((T, 2, size, size), np.float32)
    u = monotonic_by_loop(t)
    bounds = np.cumsum([len(c) for c in np.array_split(np.arange(n), T)])  # even run k ends before bounds[k]
    run = n // T
    t0 = u[0] if n else 0
    duration = (u[-1] - t0) if n else 0
    window = duration // T
    for i in range(n):
        if (split_by, split_rule) == ("number", "even"):
            k = next(k for k in range(T) if i < bounds[k])
        elif (split_by, split_rule) == ("number", "spikingjelly"):
            k = next((k for k in range(T - 1) if k * run <= i < (k + 1) * run), T - 1)
        elif split_rule == "even":
            k = next(k for k in range(T) if k * (duration + 1) <= (u[i] - t0) * T < (k + 1) * (duration + 1))
        else:
            k = next((k for k in range(T - 1) if t0 + k * window <= u[i] < t0 + (k + 1) * window), T - 1)
        cx = next(c for c in range(size) if c * 128 <= x[i] * size < (c + 1) * 128)
        cy = next(c for c in range(size) if c * 128 <= y[i] * size < (c + 1) * 128)
        frames[k, p[i], cy, cx] += 1
    return frames


@settings(max_examples=40)
@given(n=st.integers(0, 300), T=st.integers(1, 12), size=st.sampled_from([1, 7, 32, 42, 48, 128]),
       split_by=st.sampled_from(dvs.SPLIT_MODES), split_rule=st.sampled_from(dvs.SPLIT_RULES),
       seed=st.integers(0, 2 ** 16), clustered=st.booleans(), near_wrap=st.booleans(),
       backward=st.sampled_from([0.0, 0.2]))
def test_frames_match_the_per_event_loop(n, T, size, split_by, split_rule, seed, clustered, near_wrap, backward):
    rng = np.random.default_rng(seed)
    _, x, y, p = random_events(rng, n)
    if clustered:  # many equal timestamps
        t = np.sort(rng.integers(0, 50, n))
    else:
        t = recorded_timestamps(rng, n, PERIOD - 300 if near_wrap else 1000, backward)
    frames = dvs.events_to_frames(t, x, y, p, T, split_by, size, split_rule)
    assert frames.dtype == np.float32 and frames.shape == (T, 2, size, size)
    np.testing.assert_array_equal(frames, frames_by_loop(t, x, y, p, T, split_by, size, split_rule))


def test_frame_splits_on_worked_examples():
    t = np.array([0, 1, 2, 3, 100, 101])
    x = y = np.zeros(6, int)
    p = np.array([1, 1, 0, 1, 0, 1])
    by_number = dvs.events_to_frames(t, x, y, p, 4, "number", 1)[:, :, 0, 0]  # runs of 2, 2, 1, 1 events
    np.testing.assert_array_equal(by_number, [[0, 2], [1, 1], [1, 0], [0, 1]])
    by_time = dvs.events_to_frames(t, x, y, p, 4, "time", 1)[:, :, 0, 0]  # windows of 102 / 4 us
    np.testing.assert_array_equal(by_time, [[1, 3], [0, 0], [0, 0], [1, 1]])
    by_number = dvs.events_to_frames(t, x, y, p, 4, "number", 1, "spikingjelly")[:, :, 0, 0]  # runs 1, 1, 1, 3
    np.testing.assert_array_equal(by_number, [[0, 1], [0, 1], [1, 0], [1, 2]])

    t = np.array([0, 10, 20, 30, 40, 50, 60])  # 7 events, T = 3, D = 60
    x = y = np.zeros(7, int)
    p = np.ones(7, int)
    def counts(split_by, rule):
        return dvs.events_to_frames(t, x, y, p, 3, split_by, 1, rule)[:, 1, 0, 0]
    np.testing.assert_array_equal(counts("number", "even"), [3, 2, 2])          # first N mod T runs longer
    np.testing.assert_array_equal(counts("number", "spikingjelly"), [2, 2, 3])  # the last run takes the rest
    np.testing.assert_array_equal(counts("time", "even"), [3, 2, 2])            # windows of 61 / 3 us
    np.testing.assert_array_equal(counts("time", "spikingjelly"), [2, 2, 3])    # windows of 60 // 3 = 20 us
    short = dvs.events_to_frames([0, 1], [0, 0], [0, 0], [1, 1], 3, "time", 1, "spikingjelly")[:, 1, 0, 0]
    np.testing.assert_array_equal(short, [0, 0, 2])  # D // T = 0: everything in the last frame
    few = dvs.events_to_frames([0, 1], [0, 0], [0, 0], [1, 1], 3, "number", 1, "spikingjelly")[:, 1, 0, 0]
    np.testing.assert_array_equal(few, [0, 0, 2])  # N // T = 0: everything in the last frame


# ------------------------------------------------------------------ resizing
def test_bilinear_weights_on_a_worked_example():
    """4 -> 2 pixels: s = 2, centres 1 and 3, triangle half-width 2, weights 0.75 0.75 0.25 normalised."""
    np.testing.assert_allclose(dvs.bilinear_weights(2, in_size=4),
                               [[3 / 7, 3 / 7, 1 / 7, 0], [0, 1 / 7, 3 / 7, 3 / 7]], rtol=1e-12)
    np.testing.assert_array_equal(dvs.bilinear_weights(128), np.eye(128))  # the same size: unchanged
    events = random_events(np.random.default_rng(3), 500)
    np.testing.assert_array_equal(dvs.events_to_frames(*events, 2, size=128, resize="bilinear"),
                                  dvs.events_to_frames(*events, 2, size=128, resize="sum"))


def test_bilinear_weights_enlarging_keep_the_triangle_one_input_pixel_wide():
    """2 -> 4 pixels: s = 1/2, centres 1/4, 3/4, 5/4, 7/4 in input pixels; the half-width is max(s, 1) = 1."""
    np.testing.assert_allclose(dvs.bilinear_weights(4, in_size=2),
                               [[1, 0], [3 / 4, 1 / 4], [1 / 4, 3 / 4], [0, 1]], rtol=1e-12)


@pytest.mark.parametrize("size", [1, 42, 48, 100])
def test_resizing_keeps_the_events(size):
    rng = np.random.default_rng(size)
    events = random_events(rng, 3000)
    counts = dvs.events_to_frames(*events, 3, "number", 128)
    summed = dvs.events_to_frames(*events, 3, "number", size, resize="sum")
    np.testing.assert_array_equal(summed.sum(axis=(2, 3)), counts.sum(axis=(2, 3)))  # every event once
    bilinear = dvs.events_to_frames(*events, 3, "number", size, resize="bilinear")
    scale = (128 / size) ** 2  # each output pixel is a weighted mean of about scale input pixels
    np.testing.assert_allclose(bilinear.sum(axis=(2, 3)) * scale, counts.sum(axis=(2, 3)), rtol=0.05)
    flat = dvs.events_to_frames([0] * 128 * 128, *np.divmod(np.arange(128 * 128), 128)[::-1], [1] * 128 * 128,
                                1, "number", size, resize="bilinear")
    np.testing.assert_allclose(flat[0, 1], 1.0, rtol=1e-6)  # a uniform frame stays uniform
    assert flat[0, 0].sum() == 0


@pytest.mark.parametrize("size", [1, 42, 48, 127])
def test_bilinear_resize_matches_torch_antialiased_interpolation(size):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: nothing to compare the resize with")
    rng = np.random.default_rng(size)
    events = random_events(rng, 20_000)
    full = dvs.events_to_frames(*events, 4, "number", 128)
    theirs = torch.nn.functional.interpolate(torch.from_numpy(full.astype(np.float64)), size=(size, size),
                                             mode="bilinear", align_corners=False, antialias=True).numpy()
    ours = dvs.events_to_frames(*events, 4, "number", size, resize="bilinear")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_events_to_frames_rejects_bad_arguments():
    t, x, y, p = [0, 1], [0, 1], [0, 1], [0, 1]
    with pytest.raises(ValueError, match="split_by"):
        dvs.events_to_frames(t, x, y, p, 2, "count")
    with pytest.raises(ValueError, match="T must be a positive int"):
        dvs.events_to_frames(t, x, y, p, 0)
    for size in (0, 129):
        with pytest.raises(ValueError, match="size must be an int in 1..128"):
            dvs.events_to_frames(t, x, y, p, 2, size=size)
    with pytest.raises(ValueError, match="p in {0, 1}"):
        dvs.events_to_frames(t, x, y, [0, 2], 2)
    with pytest.raises(ValueError, match="split_rule must be one of"):
        dvs.events_to_frames(t, x, y, p, 2, split_rule="tonic")
    with pytest.raises(ValueError, match="resize must be one of"):
        dvs.events_to_frames(t, x, y, p, 2, resize="nearest")
    with pytest.raises(ValueError, match="0 <= x, y < 128"):
        dvs.events_to_frames(t, [0, 128], y, p, 2)
    with pytest.raises(TypeError, match="x must be integers"):
        dvs.events_to_frames(t, [0.5, 1.0], y, p, 2)


# ------------------------------------------------------------------ SpikingJelly
def spikingjelly_functions():
    """SpikingJelly's own CIFAR10-DVS reader and frame integration (names of SpikingJelly 2.0.0), or a skip."""
    try:
        from spikingjelly.datasets.cifar10_dvs import _load_origin_data
        from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number
    except (ImportError, RuntimeError, OSError) as err:  # absent, or torch/torchvision failing to load
        pytest.skip(f"SpikingJelly's CIFAR10-DVS functions cannot be imported here: {type(err).__name__}: {err}")
    return _load_origin_data, integrate_events_by_fixed_frames_number


@pytest.mark.parametrize("split_by", dvs.SPLIT_MODES)
def test_spikingjelly_rule_gives_spikingjelly_frames(tmp_path, split_by):
    load_origin_data, integrate = spikingjelly_functions()
    import torch
    n = 200_003  # N mod T = 3 events left over
    events = random_events(np.random.default_rng(7), n)
    path = tmp_path / "cifar10_cat_0.aedat"
    dvs.write_aedat(path, *events)
    recording, theirs = dvs.read_aedat(path), load_origin_data(path)
    for name, ours in zip("txyp", recording[:4]):
        np.testing.assert_array_equal(ours, theirs[name])
    their_frames = integrate(theirs, split_by, 10, 128, 128)
    ours = dvs.events_to_frames(*recording[:4], 10, split_by, 128, "spikingjelly")
    np.testing.assert_array_equal(ours, their_frames)
    assert not np.array_equal(dvs.events_to_frames(*recording[:4], 10, split_by, 128, "even"), their_frames)
    pool = (np.arange(128) * 48 // 128 == np.arange(48)[:, None]).astype(np.float64)  # sum pooling to 48 x 48
    np.testing.assert_array_equal(dvs.events_to_frames(*recording[:4], 10, split_by, 48, "spikingjelly"),
                                  pool @ their_frames @ pool.T)
    resized = torch.nn.functional.interpolate(torch.from_numpy(their_frames), size=(48, 48), mode="bilinear",
                                              antialias=True).numpy()  # SpikingJelly's frames resized to 48 x 48
    ours = dvs.events_to_frames(*recording[:4], 10, split_by, 48, "spikingjelly", "bilinear")
    np.testing.assert_allclose(ours, resized, rtol=1e-5, atol=1e-5)


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
    dvs.write_aedat(root / "cat" / "cifar10_cat_20.aedat", [0], [0], [0], [0])  # 21 cats: ceil(21 / 10) = 3 test
    train = dvs.CIFAR10DVS(root, T=2, size=8, train=True, seed=3)
    test = dvs.CIFAR10DVS(root, T=2, size=8, train=False, seed=3)
    np.testing.assert_array_equal(np.bincount(train.labels), [18] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [2, 2, 2, 3, 2, 2, 2, 2, 2, 2])
    assert set(train.files).isdisjoint(test.files) and len(set(train.files) | set(test.files)) == 201
    for ds in (train, test):  # a label names its recording's class folder, through the data set's own classes
        assert all(f.parent.name == ds.classes[k] for f, k in zip(ds.files, ds.labels))
    assert dvs.CIFAR10DVS(root, T=2, size=8, train=False, seed=3).files == test.files
    assert dvs.CIFAR10DVS(root, T=2, size=8, train=False, seed=4).files != test.files


def test_the_defaults_are_the_papers_ten_steps_of_48_by_48_the_seed_0_split_and_progress_when_loading(tmp_path,
                                                                                                       capsys):
    root = make_root(tmp_path, per_class=10, n_events=8)
    train_x, train_y, test_x, test_y = dvs.load_cifar10_dvs(root)
    shown = capsys.readouterr().err  # what the user sees while the frames are made
    assert "CIFAR10-DVS frames: 100%" in shown and "| 90/90 [" in shown and "| 10/10 [" in shown
    assert train_x.shape == (90, 10, 2, 48, 48) and test_x.shape == (10, 10, 2, 48, 48)
    test = dvs.CIFAR10DVS(root, train=False)
    assert test.cache_dir.name == "T10_number_even_sum48px" and test.files == dvs.split_files(root, False, 0)[0]
    np.testing.assert_array_equal(test.load_all()[0], test_x)  # the same split and frames: seed 0 throughout
    assert capsys.readouterr() == ("", "")  # the data set itself shows no progress unless asked
    dvs.load_cifar10_dvs(root, progress=False)
    assert capsys.readouterr() == ("", "")
    assert dvs.split_files(root)[0] == dvs.split_files(root, train=True, seed=0)[0]
    t, x, y, p = random_events(np.random.default_rng(0), 50)
    dvs.write_aedat(tmp_path / "rec.aedat", t, x, y, p)
    assert dvs.events_to_frames(t, x, y, p, 2).shape == (2, 2, 48, 48)
    assert dvs.cached_frames(tmp_path / "rec.aedat", tmp_path / "rec.npz", 2)[0].shape == (2, 2, 48, 48)


def test_the_data_set_checks_its_frame_settings_before_looking_for_files(tmp_path):
    for bad, says in (({"T": 0}, "T must be a positive int"), ({"size": 0}, "size must be an int in 1..128"),
                      ({"split_by": "count"}, "split_by must be one of")):
        with pytest.raises(ValueError, match=f"CIFAR10DVS: {says}"):
            dvs.CIFAR10DVS(tmp_path / "nowhere", **bad)


def test_the_cifar10_dvs_data_set_needs_its_folder_and_is_never_downloaded(tmp_path):
    from minisnn.data import get_dataset
    root = make_root(tmp_path, per_class=10, n_events=8)
    data = get_dataset("cifar10-dvs", data_dir=root, T=2, size=8)
    assert data.classes == dvs.CIFAR10_DVS_CLASSES and data.augment is dvs.shift_and_flip
    assert data.train_x.shape == (90, 2, 2, 8, 8) and data.image_size == (8, 8)
    x, _ = next(data.loader("test", 4).batches())
    np.testing.assert_array_equal(x, data.test_x[:4])  # event counts go in as they are: no normalisation
    bilinear = get_dataset("cifar10-dvs", data_dir=root, T=2, size=8, resize="bilinear")
    assert not np.array_equal(bilinear.train_x, data.train_x)  # --dvs-resize reaches the frames
    for kwargs in ({"data_dir": None}, {"data_dir": root, "download": True}):
        with pytest.raises(DatasetError, match="not downloaded automatically"):
            get_dataset("cifar10-dvs", T=2, size=8, **kwargs)


def test_a_frame_cache_that_is_not_ours_is_named_and_never_used(tmp_path):
    source = tmp_path / "rec.aedat"
    dvs.write_aedat(source, *random_events(np.random.default_rng(0), 50))
    cache = tmp_path / "cache.npz"
    frames, _ = dvs.cached_frames(source, cache, 2, size=8)
    assert frames.dtype == np.float32 and frames.shape == (2, 2, 8, 8)
    with np.load(cache) as archive:
        made_from = archive["source"]  # the recording's size and time: the cache claims to be of it
    for wrong in (frames.astype(np.float64), frames[:, :, :4]):  # another dtype, another size
        np.savez(cache, frames=wrong, skipped=np.int64(0), source=made_from)
        with pytest.raises(DatasetError, match=f"{cache}: cached frames are .*expected float32.*delete it"):
            dvs.cached_frames(source, cache, 2, size=8)
    poisoned = frames.copy()
    poisoned[0, 0, 0, 0] = np.nan
    np.savez(cache, frames=poisoned, skipped=np.int64(0), source=made_from)
    with pytest.raises(DatasetError, match=f"{cache}: cached frames hold NaN or infinity .*delete it"):
        dvs.cached_frames(source, cache, 2, size=8)
    cache.write_bytes(b"not an npz")
    with pytest.raises(DatasetError, match="unreadable frame cache"):
        dvs.cached_frames(source, cache, 2, size=8)


def test_dataset_items_are_the_frames_of_their_file(tmp_path):
    root = make_root(tmp_path, per_class=10)
    ds = dvs.CIFAR10DVS(root, T=5, split_by="time", size=42, train=False, seed=0, cache_dir=tmp_path / "c")
    frames, label = ds[3]
    assert label == 3 and frames.shape == (5, 2, 42, 42)
    np.testing.assert_array_equal(frames, dvs.events_to_frames(*dvs.read_aedat(ds.files[3])[:4], 5, "time", 42))
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
    for other in ({"T": 5}, {"size": 8}, {"split_by": "time"}, {"split_rule": "spikingjelly"},
                  {"resize": "bilinear"}):  # other settings, other cache entry
        with pytest.raises(AssertionError, match="parsed again"):
            dvs.CIFAR10DVS(root, **{"T": 4, "size": 16, "train": False, **other})[0]


def test_a_cache_exactly_as_new_as_its_recording_is_used(tmp_path, monkeypatch):
    # e.g. a recording copied together with its cache by cp -p or rsync, which keep the times
    source, cache = tmp_path / "rec.aedat", tmp_path / "rec.npz"
    dvs.write_aedat(source, *random_events(np.random.default_rng(0), 50))
    frames, _ = dvs.cached_frames(source, cache, 2, size=8)
    stamp = source.stat().st_mtime_ns
    os.utime(cache, ns=(stamp, stamp))

    def broken_reader(path):
        raise AssertionError(f"{path} was parsed again although its cache is as new as it")
    monkeypatch.setattr(dvs, "read_aedat", broken_reader)
    np.testing.assert_array_equal(dvs.cached_frames(source, cache, 2, size=8)[0], frames)


def test_cache_is_rebuilt_when_the_recording_is_replaced_even_by_an_older_file(tmp_path):
    # e.g. a corrected data set extracted over the old one: unzip and tar restore the archive's (older) times
    source, cache = tmp_path / "rec.aedat", tmp_path / "rec.npz"
    dvs.write_aedat(source, *random_events(np.random.default_rng(0), 50))
    old = dvs.cached_frames(source, cache, 2, size=8)[0]
    stamp = cache.stat().st_mtime_ns - 10 ** 10
    dvs.write_aedat(source, [0, 1, 2], [0, 0, 0], [0, 0, 0], [1, 1, 1])
    os.utime(source, ns=(stamp, stamp))  # the replacement is older than the cache
    new = dvs.cached_frames(source, cache, 2, size=8)[0]
    assert new.sum() == 3 and not np.array_equal(new, old)
    np.savez(cache, frames=old, skipped=np.int64(0))  # a cache of an earlier minisnn, without the recording's stamp
    np.testing.assert_array_equal(dvs.cached_frames(source, cache, 2, size=8)[0], new)


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


def write_with_special_records(path, n_special, rng):
    """Rewrite recording ``path`` with ``n_special`` sync/special records slipped in among its events."""
    t, x, y, p, _ = dvs.read_aedat(path)
    records = [(((127 - xi) << 8) | ((127 - yi) << 1) | (1 - pi), ti) for ti, xi, yi, pi in zip(t, x, y, p)]
    for j in range(n_special):
        records.insert(int(rng.integers(0, len(records) + 1)), (0x8000 if j % 2 else 0x80000000, int(t[0])))
    path.write_bytes(aedat_bytes(records))
    return t, x, y, p


def test_skipped_records_are_reported_once_for_the_data_set(tmp_path):
    root = make_root(tmp_path, per_class=10)
    rng = np.random.default_rng(5)
    events = {}
    for name, n_special in (("cat", 3), ("ship", 2)):  # one file in each split
        for split in (True, False):
            victim = dvs.CIFAR10DVS(root, train=split).files[dvs.CIFAR10_DVS_CLASSES.index(name) * (9 if split else 1)]
            events[victim] = write_with_special_records(victim, n_special, rng)
    for attempt in ("made", "cached"):
        with pytest.warns(UserWarning) as caught:
            train_x, _, test_x, _ = dvs.load_cifar10_dvs(root, T=3, size=8, progress=False)
        assert len(caught) == 1, f"{attempt}: {[str(w.message) for w in caught]}"
        message = str(caught[0].message)
        assert "skipped 10 special/sync records" in message and "in 4 of 100 recordings" in message
        report = json.loads((root / "frames_cache" / "T3_number_even_sum8px" / "skipped_records.json").read_text())
        assert report["skipped_records"] == 10 and sorted(report["recordings"].values()) == [2, 2, 3, 3]
        assert str(root / "frames_cache" / "T3_number_even_sum8px" / "skipped_records.json") in message
        assert caught[0].filename == __file__  # the warning points at the user's call of load_cifar10_dvs
    train = dvs.CIFAR10DVS(root, T=3, size=8)
    train.load_all()
    assert train.skipped.sum() == 5 and np.count_nonzero(train.skipped) == 2 and train.skipped.dtype == np.int64
    with pytest.warns(UserWarning, match="skipped 5 special/sync records .* in 2 of 90 recordings"):
        path = dvs.report_skipped([train])  # one split alone is reported too, and the report's path returned
    assert path == train.cache_dir / "skipped_records.json"
    lines = path.read_text().splitlines()  # one count per line, indented under "recordings", for a person to read
    assert len(lines) == 7 and sum(f"cifar10_{name}_" in line for line in lines for name in ("cat", "ship")) == 2
    depth = [(len(line) - len(line.lstrip()), line.strip()) for line in lines]
    outer = next(d for d, text in depth if text.startswith('"recordings"'))
    assert all(d > outer > 0 for d, text in depth if ".aedat" in text)
    for victim, kept in events.items():  # the frames of a file are those of its pixel events alone
        split = train if victim in train.files else dvs.CIFAR10DVS(root, T=3, size=8, train=False)
        np.testing.assert_array_equal(split[split.files.index(victim)][0], dvs.events_to_frames(*kept, 3, "number", 8))


def test_nothing_is_reported_without_skipped_records(tmp_path):
    root = make_root(tmp_path, per_class=10, n_events=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dvs.load_cifar10_dvs(root, T=2, size=4, progress=False)
    assert not list((root / "frames_cache").rglob("skipped_records.json"))


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


def test_the_training_augmentation_shifts_by_up_to_5_pixels_each_way():
    """The default shift_and_flip (the one training uses) moves a lone centred event by every dy in -5..5 and
    every |dx| in 0..5 (the mirror hides the sign of dx), and never further."""
    batch = np.zeros((300, 1, 2, 15, 15), np.float32)
    batch[:, :, :, 7, 7] = 1
    rows, cols = np.nonzero(dvs.shift_and_flip(batch, np.random.default_rng(0))[:, 0, 0])[1:]
    assert sorted(set(rows - 7)) == list(range(-5, 6)) and sorted(set(abs(cols - 7))) == list(range(6))


@pytest.mark.parametrize("x, y, p", [(-1, 0, 0), (128, 0, 0), (0, -1, 0), (0, 128, 0), (0, 0, -1), (0, 0, 2)])
def test_frames_refuse_an_event_outside_the_sensor_naming_it(x, y, p):
    with pytest.raises(ValueError, match=r"events_to_frames: need 0 <= x, y < 128 and p in \{0, 1\}"):
        dvs.events_to_frames([0, 1], [0, x], [0, y], [0, p], T=1)


def test_cached_frames_checks_its_settings_before_touching_any_file(tmp_path):
    for bad, says in (({"T": 0}, "T must be a positive int"), ({"size": 129}, "size must be an int in 1..128")):
        frame_args = dict(dict(T=2, size=8), **bad)
        with pytest.raises(ValueError, match=f"cached_frames: {says}"):
            dvs.cached_frames(tmp_path / "missing.aedat", tmp_path / "cache" / "missing.npz", **frame_args)
    assert list(tmp_path.iterdir()) == []


def test_cached_frames_take_text_paths_and_are_the_recordings_frames(tmp_path):
    events = random_events(np.random.default_rng(1), 80)
    dvs.write_aedat(tmp_path / "rec.aedat", *events)
    frames, skipped = dvs.cached_frames(str(tmp_path / "rec.aedat"), str(tmp_path / "rec.npz"), 3, size=16)
    assert skipped == 0 and (tmp_path / "rec.npz").exists()
    assert np.array_equal(frames, dvs.events_to_frames(*events, T=3, size=16))
