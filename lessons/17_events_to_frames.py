"""Lesson 17 -- event cameras: from a stream of events to the frames a spiking net takes.

What you will learn: what the data of CIFAR10-DVS (the paper's neuromorphic benchmark) is, and how it
becomes the [T, N, C, H, W] input of lesson 08. An event camera (a DVS) has no frames: each pixel
reports, on its own, the moment its brightness changes, as an event

    (t, x, y, p)      t in microseconds, pixel column x and row y (0..127 on a DVS128),
                      polarity p = 1 (ON, brighter) or 0 (OFF, darker).

To feed a network we cut the recording into T slices and count the events of each slice per
polarity and pixel, on a grid of size x size cells (sum pooling of the 128 x 128 sensor):

    slice k of event i:   split by number:  T runs of consecutive events, sizes differing by at most one
                          split by time:    k = floor((t_i - t_0) T / (t_max - t_0 + 1))
    cell of event i:      X = floor(x_i size / 128),   Y = floor(y_i size / 128)
    frames[k, p, Y, X] = number of events with that slice, polarity and cell           -> [T, 2, size, size]

Each slice is one timestep: unlike direct encoding (lesson 08) the input changes from step to step.

What you will see:

1. A recording generated here: a bright bar sweeping across the sensor, faster and faster -- ON events
   on its leading edge, OFF events on its trailing edge, and background noise (``17_events.png``).
2. The frames binned by hand, with a plain loop over the events, for both ways of splitting, and the
   engine's ``events_to_frames`` giving exactly the same counts (``17_frames.png``). Split by time,
   the later (faster) slices hold more events; split by number, every slice holds the same number.
3. The recording written as an official-format AEDAT 2.0 file (``write_aedat``) and read back
   (``read_aedat``): the same events; one record decoded by hand from its address bits.
4. The frames as the input of a spiking ResNet: [T, N, 2, size, size] -> logits.

Run:  python lessons/17_events_to_frames.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, output_dir, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import events_to_frames, read_aedat, write_aedat
from minisnn.models import resnet_small

INTRODUCES = ("minisnn.data.events_to_frames", "minisnn.data.read_aedat", "minisnn.data.write_aedat")

SENSOR = 128


def bar_recording(rng, duration_us=100_000, rows=(32, 96), width=12, noise=2000):
    """Events of a bar sweeping left to right with x_edge(t) = 128 (t / duration)^2 (it accelerates).

    Each pixel of the bar's rows fires an ON event when the leading edge reaches its column and an OFF
    event when the trailing edge, ``width`` pixels behind, does (with a little timing jitter); plus
    ``noise`` background events at random places and times. Returns (t, x, y, p), sorted by time."""
    columns = np.arange(SENSOR)
    ys = np.arange(*rows)
    crossing = duration_us * np.sqrt(columns / SENSOR)                  # when the leading edge reaches column x
    crossing_off = duration_us * np.sqrt(np.clip(columns + width, 0, None) / SENSOR)
    parts = []
    for times, polarity in ((crossing, 1), (crossing_off, 0)):
        keep = times < duration_us
        t = np.repeat(times[keep], len(ys)) + rng.normal(0, 150, keep.sum() * len(ys))
        parts.append((t, np.repeat(columns[keep], len(ys)), np.tile(ys, keep.sum()), np.full(t.size, polarity)))
    parts.append((rng.uniform(0, duration_us, noise), rng.integers(0, SENSOR, noise), rng.integers(0, SENSOR, noise),
                  rng.integers(0, 2, noise)))
    t, x, y, p = (np.concatenate(a) for a in zip(*parts))
    t = np.clip(np.round(t), 0, None).astype(np.int64)
    order = np.argsort(t, kind="stable")
    return t[order], x[order].astype(np.int64), y[order].astype(np.int64), p[order].astype(np.int64)


def frames_by_hand(t, x, y, p, T, split_by, size):
    """The binning rule of the docstring, one event at a time."""
    n = len(t)
    if split_by == "number":
        sizes = [n // T + (1 if k < n % T else 0) for k in range(T)]        # earlier slices take the extra events
        slice_of = np.repeat(np.arange(T), sizes)
    else:
        t0, span = t.min(), t.max() - t.min() + 1
        slice_of = [(ti - t0) * T // span for ti in t]
    frames = np.zeros((T, 2, size, size), dtype=np.float32)
    for k, xi, yi, pi in zip(slice_of, x, y, p):
        frames[k, pi, yi * size // SENSOR, xi * size // SENSOR] += 1
    return frames


def main(argv=None):
    title("Lesson 17: events to frames")
    rng = np.random.default_rng(0)
    T, size = (4, 16) if FAST else (10, 48)

    section("1. a generated recording")
    t, x, y, p = bar_recording(rng, noise=300 if FAST else 2000)
    print(f"{len(t):,} events over {(t.max() - t.min()) / 1000:.1f} ms: {int(p.sum()):,} ON, {int((1 - p).sum()):,} OFF; "
          f"x and y in 0..{SENSOR - 1}")
    print("the first five (t us, x, y, p):", list(zip(t[:5].tolist(), x[:5].tolist(), y[:5].tolist(), p[:5].tolist())))

    fig, ax = plt.subplots(figsize=(7, 3.6))
    sample = rng.choice(len(t), size=min(len(t), 6000), replace=False)
    for polarity, color, label in ((1, "C3", "ON"), (0, "C0", "OFF")):
        chosen = sample[p[sample] == polarity]
        ax.scatter(t[chosen] / 1000, x[chosen], s=1, color=color, label=label)
    ax.set(xlabel="t (ms)", ylabel="pixel column x", title="events of an accelerating bar (a sample of them)")
    ax.legend(markerscale=8)
    save_figure(fig, "17_events.png")

    section(f"2. binning into T = {T} frames of {size} x {size}, by hand and by the engine")
    frames, gaps = {}, {}
    for split_by in ("number", "time"):
        hand = frames_by_hand(t, x, y, p, T, split_by, size)
        engine = events_to_frames(t, x, y, p, T, split_by=split_by, size=size)
        frames[split_by] = engine
        gaps[split_by] = float(np.abs(hand - engine).max())
        per_slice = engine.sum(axis=(1, 2, 3)).astype(int)
        print(f"split by {split_by:<6}: events per frame {per_slice.tolist()}; every event counted once: "
              f"{int(per_slice.sum()) == len(t)}; max |by hand - events_to_frames| = {gaps[split_by]:.0f}")
    spread = frames["number"].sum(axis=(1, 2, 3))
    print("(split by time, the frames of the fast end of the sweep hold more events; by number, each holds the same)")

    fig, axes = plt.subplots(4, T, figsize=(1.3 * T, 5.6))
    for row, (split_by, polarity) in enumerate([("time", 1), ("time", 0), ("number", 1), ("number", 0)]):
        for k in range(T):
            ax = axes[row, k]
            ax.imshow(frames[split_by][k, polarity], cmap="Reds" if polarity else "Blues")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t-slice {k}", fontsize=7)
        axes[row, 0].set_ylabel(f"{split_by}, {'ON' if polarity else 'OFF'}", fontsize=7)
    fig.suptitle("frames[k, p]: event counts per cell (rows: split by time / by number; ON and OFF)", fontsize=9)
    save_figure(fig, "17_frames.png")

    section("3. the AEDAT 2.0 file: written and read back")
    path = output_dir() / "17_bar.aedat"
    write_aedat(path, t, x, y, p)
    raw = path.read_bytes()
    header_end = len(raw) - 8 * len(t)                      # the records are the last 8 bytes per event
    print(f"{path.name}: {len(raw):,} bytes = a {header_end}-byte text header + {len(t):,} records of 8 bytes")
    print("header:", raw[:header_end].decode().splitlines()[:2], "...")
    back = read_aedat(path)
    round_trip = all(np.array_equal(a, b) for a, b in zip(back, (t, x, y, p)))
    print(f"read_aedat gives back the same (t, x, y, p): {round_trip}")
    address, stamp = (int(v) for v in np.frombuffer(raw[header_end:header_end + 8], dtype=">u4"))
    decoded = (stamp, 127 - ((address >> 8) & 0x7F), 127 - ((address >> 1) & 0x7F), 1 - (address & 1))
    print(f"the first record by hand: address 0x{address:08x}, timestamp {stamp} -> x = 127 - bits 8..14, "
          f"y = 127 - bits 1..7, p = 1 - bit 0 -> (t, x, y, p) = {decoded}  (event 0: "
          f"{(int(t[0]), int(x[0]), int(y[0]), int(p[0]))})")

    section("4. the frames as a network's input")
    batch = np.stack([frames["number"], frames["time"]], axis=1)               # [T, N = 2, 2, size, size]
    model = resnet_small(num_classes=10, in_channels=2, T=T, width=4, blocks=(1, 1), seed=0)
    with no_grad():
        logits = model(Tensor(batch))
    print(f"frames {batch.shape} = [T, N, ON/OFF, H, W] -> resnet_small(in_channels=2) -> logits {logits.shape}")
    print("(CIFAR10-DVS: 10,000 such recordings of the CIFAR-10 classes; minisnn reads, bins and caches them -- see the\n"
          " README's DVS section; the paper trains ResNet-19 on T = 10 frames)")

    return finish({"hand_equals_engine": gaps, "events": len(t), "events_per_frame_by_number": spread.astype(int).tolist(),
                   "events_per_frame_by_time": frames["time"].sum(axis=(1, 2, 3)).astype(int).tolist(),
                   "aedat_round_trip": round_trip, "first_record_decoded": decoded == (int(t[0]), int(x[0]), int(y[0]),
                                                                                       int(p[0])),
                   "logits_shape": list(logits.shape)},
                  "lesson 18 -- the anatomy of the paper's ResNet-19: shapes, parameters, MACs and spikes.")


if __name__ == "__main__":
    main()
