"""Speed of the CIFAR10-DVS reader and event binning, beside SpikingJelly's, on a synthetic recording.

    python benchmarks/bench_dvs.py [--events 200000] [--runs 5] [--repeats 7] [--T 10] [--size 48]

Writes one AEDAT 2.0 file to a temporary folder (uniform pixels and polarities, sorted timestamps over
1.3 s, about the length of a CIFAR10-DVS recording) and times, in each of ``--runs`` rounds:

* side by side with SpikingJelly where it imports (calls taking turns, minisnn first): ``read_aedat``
  against SpikingJelly's reader ``_load_origin_data``, and frames at 128 x 128 under the "spikingjelly"
  split rule against SpikingJelly's ``integrate_events_by_fixed_frames_number`` (the same frames; see
  the tests), for both split modes;
* minisnn alone: frames at ``--size`` (sum and bilinear, both split modes), a ``cached_frames`` miss
  (read + frames + compressed atomic write) and hit.

A round's figure is the median of ``--repeats`` calls. The JSON line printed gives every round's figure,
the median over rounds, and for each pair the median over rounds of SpikingJelly's time divided by
minisnn's: a ratio of figures measured in turns, which a shared machine disturbs less than either one.
"""
import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minisnn.data.cifar10_dvs import cached_frames, events_to_frames, read_aedat, write_aedat


def median_ms(*fns, repeats):
    """Median milliseconds of each of ``fns`` over ``repeats`` calls, the functions taking turns."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [float(np.median(spent)) * 1e3 for spent in times]


def spikingjelly():
    """SpikingJelly's reader and frame integration, or the reason they cannot be imported."""
    try:
        from spikingjelly.datasets.cifar10_dvs import _load_origin_data
        from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number
        from importlib.metadata import version
    except (ImportError, RuntimeError, OSError) as err:
        return None, f"{type(err).__name__}: {err}"
    return (_load_origin_data, integrate_events_by_fixed_frames_number), version("spikingjelly")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--T", type=int, default=10)
    parser.add_argument("--size", type=int, default=48)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n, T, size = args.events, args.T, args.size
    events = (np.sort(rng.integers(0, 1_300_000, n)), *rng.integers(0, 128, (2, n)), rng.integers(0, 2, n))
    sj, sj_note = spikingjelly()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cifar10_airplane_0.aedat"
        write_aedat(path, *events)
        cache = Path(tmp) / "cache.npz"
        recording = read_aedat(path)[:4]

        def miss():
            cache.unlink(missing_ok=True)
            cached_frames(path, cache, T, "number", size)

        ours = {"read": lambda: read_aedat(path)}  # timed in turns with ``theirs`` of the same label
        for split_by in ("number", "time"):
            ours[f"frames_{split_by}_128px"] = lambda s=split_by: events_to_frames(*recording, T, s, 128,
                                                                                  "spikingjelly")
        theirs = {}
        if sj:
            load_origin_data, integrate = sj
            sj_events = load_origin_data(path)
            theirs["read"] = lambda: load_origin_data(path)
            for split_by in ("number", "time"):
                theirs[f"frames_{split_by}_128px"] = lambda s=split_by: integrate(sj_events, s, T, 128, 128)
        alone = {}
        for split_by in ("number", "time"):
            for resize in ("sum", "bilinear"):
                alone[f"frames_{split_by}_{size}px_{resize}"] = (
                    lambda s=split_by, r=resize: events_to_frames(*recording, T, s, size, resize=r))
        alone["cache_miss"] = miss
        alone["cache_hit"] = lambda: cached_frames(path, cache, T, "number", size)

        rounds = {}
        for _ in range(args.runs):
            for label, fn in ours.items():
                figures = median_ms(fn, *[theirs[label]] if sj else [], repeats=args.repeats)
                for who, ms in zip(("minisnn", "sj"), figures):
                    rounds.setdefault(f"{label}_{who}", []).append(ms)
            for label, fn in alone.items():
                rounds.setdefault(label, []).extend(median_ms(fn, repeats=args.repeats))
        file_bytes = path.stat().st_size

    result = {"bench": "cifar10_dvs", "events": n, "T": T, "size": size, "file_bytes": file_bytes,
              "runs": args.runs, "repeats": args.repeats, "spikingjelly": sj_note}
    for name, ms in rounds.items():
        result[f"{name}_ms"] = round(float(np.median(ms)), 3)
        result[f"{name}_ms_runs"] = [round(m, 3) for m in ms]
    for label in theirs:
        ratios = np.array(rounds[f"{label}_sj"]) / np.array(rounds[f"{label}_minisnn"])
        result[f"{label}_sj_over_minisnn"] = round(float(np.median(ratios)), 2)
        result[f"{label}_sj_over_minisnn_runs"] = [round(r, 2) for r in ratios]
    result.update({"numpy": np.__version__, "python": platform.python_version(),
                   "machine": platform.processor() or platform.machine()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
