"""Speed of the CIFAR10-DVS reader and event binning, beside SpikingJelly's, on a synthetic recording.

    python benchmarks/bench_dvs.py [--events 200000] [--runs 5] [--repeats 7] [--T 10] [--size 48]

Writes one AEDAT 2.0 file to a temporary folder (uniform pixels and polarities, sorted timestamps over
1.3 s, about the length of a CIFAR10-DVS recording) and times, in ``--runs`` rounds that take turns:

* ``read_aedat`` (file to events) and, where SpikingJelly imports, its reader ``_load_origin_data``;
* frames at 128 x 128 under the "spikingjelly" split rule and SpikingJelly's
  ``integrate_events_by_fixed_frames_number``, for both split modes (the same frames; see the tests);
* minisnn's frames at ``--size`` (sum and bilinear), and a ``cached_frames`` miss and hit.

Each figure of a round is the median of ``--repeats`` calls; the JSON line printed gives every round's
figure, their median, and the median over rounds of SpikingJelly's time divided by minisnn's (the ratio
of two figures measured side by side, which a shared machine disturbs less than either figure).
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


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


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

        tasks = {"read_aedat": lambda: read_aedat(path)}
        for split_by in ("number", "time"):
            tasks[f"frames_{split_by}_128px_spikingjelly_rule"] = (
                lambda s=split_by: events_to_frames(*recording, T, s, 128, "spikingjelly"))
        if sj:
            load_origin_data, integrate = sj
            sj_events = load_origin_data(path)
            tasks["sj_read"] = lambda: load_origin_data(path)
            for split_by in ("number", "time"):
                tasks[f"sj_frames_{split_by}_128px"] = lambda s=split_by: integrate(sj_events, s, T, 128, 128)
        for split_by in ("number", "time"):
            for resize in ("sum", "bilinear"):
                tasks[f"frames_{split_by}_{size}px_{resize}"] = (
                    lambda s=split_by, r=resize: events_to_frames(*recording, T, s, size, resize=r))
        tasks["cache_miss"] = miss
        tasks["cache_hit"] = lambda: cached_frames(path, cache, T, "number", size)

        rounds = {name: [] for name in tasks}
        for _ in range(args.runs):
            for name, fn in tasks.items():
                rounds[name].append(median_ms(fn, args.repeats))
        file_bytes = path.stat().st_size

    result = {"bench": "cifar10_dvs", "events": n, "T": T, "size": size, "file_bytes": file_bytes,
              "runs": args.runs, "repeats": args.repeats, "spikingjelly": sj_note}
    for name, ms in rounds.items():
        result[f"{name}_ms"] = round(float(np.median(ms)), 3)
        result[f"{name}_ms_runs"] = [round(m, 3) for m in ms]
    if sj:
        pairs = {"read": ("sj_read", "read_aedat")}
        pairs.update({f"frames_{s}": (f"sj_frames_{s}_128px", f"frames_{s}_128px_spikingjelly_rule")
                      for s in ("number", "time")})
        for label, (theirs, ours) in pairs.items():
            ratios = np.array(rounds[theirs]) / np.array(rounds[ours])
            result[f"sj_over_minisnn_{label}"] = round(float(np.median(ratios)), 2)
            result[f"sj_over_minisnn_{label}_runs"] = [round(r, 2) for r in ratios]
    result.update({"numpy": np.__version__, "python": platform.python_version(),
                   "machine": platform.processor() or platform.machine()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
