"""Speed of the CIFAR10-DVS reader and event binning on a synthetic recording in the official format.

    python benchmarks/bench_dvs.py [--events 200000] [--repeats 7] [--T 10] [--size 48]

Writes one AEDAT 2.0 file to a temporary folder (uniform pixels and polarities, sorted timestamps over
1.3 s, about the length of a CIFAR10-DVS recording), then times ``read_aedat`` (file to (t, x, y, p)),
``events_to_frames`` for both split modes, and a whole ``cached_frames`` miss (read + bin + compressed,
atomic write) and hit (load from the cache). Prints one JSON line; figures are the median of the repeats.
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


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--T", type=int, default=10)
    parser.add_argument("--size", type=int, default=48)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.events
    events = (np.sort(rng.integers(0, 1_300_000, n)), *rng.integers(0, 128, (2, n)), rng.integers(0, 2, n))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cifar10_airplane_0.aedat"
        write_aedat(path, *events)
        cache = Path(tmp) / "cache.npz"

        def miss():
            cache.unlink(missing_ok=True)
            cached_frames(path, cache, args.T, "number", args.size)

        read_s = median_seconds(lambda: read_aedat(path), args.repeats)
        number_s = median_seconds(lambda: events_to_frames(*events, args.T, "number", args.size), args.repeats)
        time_s = median_seconds(lambda: events_to_frames(*events, args.T, "time", args.size), args.repeats)
        miss_s = median_seconds(miss, args.repeats)
        hit_s = median_seconds(lambda: cached_frames(path, cache, args.T, "number", args.size), args.repeats)
        file_bytes = path.stat().st_size
        cache_bytes = cache.stat().st_size

    print(json.dumps({
        "bench": "cifar10_dvs", "events": n, "T": args.T, "size": args.size, "file_bytes": file_bytes,
        "cache_bytes": cache_bytes,
        "read_aedat_ms": round(read_s * 1e3, 2), "read_events_per_s": round(n / read_s),
        "frames_number_ms": round(number_s * 1e3, 2), "frames_number_events_per_s": round(n / number_s),
        "frames_time_ms": round(time_s * 1e3, 2), "frames_time_events_per_s": round(n / time_s),
        "cache_miss_ms": round(miss_s * 1e3, 2), "cache_hit_ms": round(hit_s * 1e3, 2),
        "numpy": np.__version__, "python": platform.python_version(), "machine": platform.processor() or
        platform.machine(),
    }))


if __name__ == "__main__":
    main()
