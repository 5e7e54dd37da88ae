"""How fast one training step is, and how much memory it needs: ``minisnn bench``.

One step = forward on random 32x32x3 images (direct encoding over T), cross-entropy on the mean over
T, backward, SGD update (momentum 0.9, weight decay 5e-4). For each configuration it reports:

* ``step_s``: the median seconds of ``steps`` steps after ``warmup`` steps; ``images_per_s``;
* ``forward_macs``: multiply-accumulates of every Conv2d and Linear layer in one forward pass, counted
  from the shapes the layers really produced (``monitor.count_macs``; so the stem conv, computed once
  under direct encoding, counts once); ``gflops`` = 3 x 2 x forward_macs / step_s (backward costs
  about twice the forward);
* ``gemm_gflops``: this machine's own float32 GEMM rate (a 2048^3 matrix product), measured in the
  same process just before the steps; ``gemm_fraction`` = gflops / gemm_gflops;
* ``peak_rss_mb``: the peak resident memory of the process, and ``step_rss_mb`` = peak minus the
  resident memory after the model and data were built (what the steps themselves added);
* with ``phases``: ``step_cpu_s``, the CPU seconds of the process per step, and ``phases``, the CPU
  seconds per step of each phase the fast code marks (``minisnn.fast.phases``: im2col, GEMM, ...),
  plus the optimizer's update; ``other`` is the rest of the step (the graph, Python, small ops).

Every measurement runs in a fresh subprocess (``python -m minisnn.bench --one CONFIG``) that does
nothing else, so ``ru_maxrss`` is that benchmark's own peak -- NumPy's buffers, OpenBLAS's and the
allocator's included, which tracemalloc would miss.

The comparison with the same network written in plain PyTorch, and the Markdown tables of
benchmarks/RESULTS.md, are in ``benchmarks/bench.py`` (a script of the source checkout, built on this
module); PyTorch is never a dependency of minisnn.
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .backend import get_device, xp_for
from .core import Tensor
from .experiment import ConfigError, as_type, choice, device_name, integer
from .functions.loss import softmax_cross_entropy
from .models import MODELS, build_model
from .monitor import count_macs
from .fast import phases as phase_marks
from .fast import version_of
from .optim import SGD

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------------------------ measurements
def gemm_gflops(xp, size=2048, repeats=3):
    """The best float32 rate (GFLOP/s) of a size x size x size matrix product on this machine."""
    a = xp.ones((size, size), dtype=xp.float32)
    b = xp.ones((size, size), dtype=xp.float32)
    best = float("inf")
    for _ in range(repeats + 1):  # the first product warms the BLAS threads up
        start = time.perf_counter()
        c = a @ b
        _synchronize(xp, c)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def _synchronize(xp, array):
    """Wait for the device (CuPy runs asynchronously); a no-op for NumPy."""
    if xp.__name__ != "numpy":
        xp.cuda.get_current_stream().synchronize()


def _rss_mb():
    """The resident memory of this process now (Linux), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def measure_step(model="resnet19", T=2, batch=8, steps=3, warmup=1, device="cpu", model_args=None, seed=0,
                 gemm_size=2048, phases=False):
    """Time ``steps`` training steps after ``warmup`` ones in this process; return a dict of figures.

    gemm_size: the matrix size of the GEMM that measures the machine's rate. phases: also record the
    CPU time of each phase over the timed steps."""
    device = get_device(device)
    xp = xp_for(device)
    net = build_model(model, T=T, seed=seed, **(model_args or {})).to(device)
    params = net.parameters()
    optimizer = version_of(SGD, params[0].data)(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    images = xp.asarray(rng.random((batch, 3, 32, 32), dtype=np.float32))
    labels = xp.asarray(rng.integers(0, 10, batch))
    gemm = gemm_gflops(xp, gemm_size)
    base_rss = _rss_mb()

    def step():
        loss = softmax_cross_entropy(net(Tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        with phase_marks.timed("optimizer"):
            optimizer.step()
        _synchronize(xp, loss.data)
        return loss

    with count_macs(net) as macs:
        for _ in range(max(warmup, 1)):
            loss = step()
            forward_macs, macs.total = macs.total, 0
    times = []
    with phase_marks.recording() if phases else contextlib.nullcontext() as seconds:
        cpu_start = time.process_time()
        for _ in range(steps):
            start = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - start)
        cpu = (time.process_time() - cpu_start) / steps
    median = statistics.median(times)
    gflops = 6 * forward_macs / median / 1e9
    row = {"framework": "minisnn", "model": model, "model_args": model_args or {}, "T": T, "batch": batch,
           "device": device, "step_s": median, "step_s_all": times, "images_per_s": batch / median,
           "forward_macs": forward_macs, "gflops": gflops, "gemm_gflops": gemm, "gemm_fraction": gflops / gemm,
           "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base_rss, "loss": float(loss.item())}
    row["step_rss_mb"] = row["peak_rss_mb"] - base_rss
    if phases:
        row["step_cpu_s"] = cpu
        row["phases"] = {name: total / steps for name, total in sorted(seconds.items())}
        row["phases"]["other"] = cpu - sum(row["phases"].values())
    if device != "cpu":  # CuPy's pool keeps what it once took, so what it holds is the high-water mark
        row["device_pool_mb"] = xp.get_default_memory_pool().total_bytes() / 2 ** 20
        row["device_name"] = gpu_name(xp, int(device.split(":")[1]))
    return row


def gpu_name(cp, index):
    """The name CUDA gives GPU ``index``."""
    name = cp.cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else name


class BenchmarkFailed(RuntimeError):
    """A benchmark process that ended without its figures (its error, out of memory, a timeout)."""


def run_isolated(config, threads=2, timeout=3600):
    """Run ``measure_step(**config)`` in a fresh Python process with ``threads`` BLAS/OpenMP threads and
    return its row. A config with phases runs on one worker and one BLAS thread (``MINISNN_THREADS=1``),
    so that every phase is timed on the one core that runs it. Raises BenchmarkFailed, in one line."""
    if config.get("phases"):
        threads = 1
    env = dict(os.environ, **{var: str(threads) for var in THREAD_VARS})
    if config.get("phases"):
        env["MINISNN_THREADS"] = "1"
    cmd = [sys.executable, "-m", "minisnn.bench", "--one", json.dumps(config)]
    what = f"the benchmark process of {config.get('model')}, T={config.get('T')}, batch {config.get('batch')}"
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchmarkFailed(f"{what} ran past {timeout} s; try a smaller --batch or -T") from None
    if done.returncode != 0:
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no error output")
        killed = " (killed: out of memory?)" if done.returncode < 0 else ""
        raise BenchmarkFailed(f"{what} failed with exit status {done.returncode}{killed}: {last.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# the vector extensions that decide how fast float32 GEMMs and elementwise loops can run, by their
# /proc/cpuinfo names (x86: SSE ... AVX-512, AMX; Arm: NEON = asimd, SVE)
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                     "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def machine_info():
    """CPU model, its vector extensions, cores, memory, Python, NumPy and its BLAS, as one dict."""
    fields = {}  # the first value of each /proc/cpuinfo field (Linux; elsewhere none)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    blas = "?"
    with contextlib.suppress(Exception):
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info['name']} {info['version']}"
    vector = " ".join(name for name in VECTOR_EXTENSIONS if name in flags) or "unknown"
    return {"cpu": cpu, "vector": vector, "cores": os.cpu_count(), "memory_gb": round(memory_gb, 1),
            "python": platform.python_version(), "numpy": np.__version__, "blas": blas}


def configs(models, Ts, batches, model_args=None, steps=3, warmup=1, device="cpu", gemm_size=2048):
    """One ``measure_step`` config per (model, T, batch); ``model_args`` apply to resnet_small."""
    return [dict(model=m, T=T, batch=b, model_args=dict(model_args or {}) if m == "resnet_small" else {},
                 steps=steps, warmup=warmup, device=device, gemm_size=gemm_size)
            for m in models for T in Ts for b in batches]


PHASES = ("im2col", "GEMM", "dx columns", "layout", "allocation", "tdBN", "LIF", "optimizer", "other")


def phase_table(rows):
    """CPU seconds per step of each phase (one worker, one BLAS thread), one column per row, as text."""
    names = [n for n in PHASES if any(n in r["phases"] for r in rows)]
    names += sorted({n for r in rows for n in r["phases"]} - set(names))
    header = "".join(f"{_label(r):>16}" for r in rows)
    lines = [f"{'CPU s per step':<16}{header}"]
    for name in names + ["step"]:
        cells = "".join(f"{(r['step_cpu_s'] if name == 'step' else r['phases'].get(name, 0.0)):>16.3f}" for r in rows)
        lines.append(f"{name:<16}{cells}")
    return "\n".join(lines)


def _label(row):
    return f"{row['model']} T{row['T']} b{row['batch']}"


def table(rows):
    """The rows as aligned text: configuration, time, rate and memory (the GPU pool's high-water on CUDA,
    the process's peak resident memory on the CPU)."""
    lines = [f"{'model':<14} {'T':>2} {'batch':>5} {'s/step':>8} {'img/s':>7} {'fwd GMAC':>9} {'GFLOP/s':>8} "
             f"{'of GEMM':>8} {'peak MB':>8}"]
    for r in rows:
        memory = r.get("device_pool_mb", r["peak_rss_mb"])
        lines.append(f"{r['model']:<14} {r['T']:>2} {r['batch']:>5} {r['step_s']:>8.3f} {r['images_per_s']:>7.1f} "
                     f"{r['forward_macs'] / 1e9:>9.3f} {r['gflops']:>8.1f} {r['gemm_fraction']:>8.0%} "
                     f"{memory:>8.0f}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- CLI
def add_arguments(p):
    """The benchmark's flags, each checked where it is parsed (``minisnn.experiment``'s checks)."""
    positive, counts = as_type(integer(1), "positive"), as_type(integer(0), "count")
    p.add_argument("--model", nargs="+", default=["resnet19"], type=as_type(choice(tuple(MODELS)), "model"),
                   help="resnet19 | resnet_small | ... (default resnet19)")
    p.add_argument("-T", "--timesteps", dest="T", type=positive, nargs="+", default=[2], help="timesteps T (default 2)")
    p.add_argument("--batch", type=positive, nargs="+", default=[8], help="batch sizes (default 8)")
    p.add_argument("--width", type=positive, default=32, help="resnet_small: channels of the first stage")
    p.add_argument("--blocks", type=positive, nargs="+", default=[1, 1, 1], help="resnet_small: blocks per stage")
    p.add_argument("--strides", type=positive, nargs="+", help="resnet_small: stride of each stage's first block "
                                                               "(default 1 2 2 ...)")
    p.add_argument("--steps", type=positive, default=3, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=counts, default=1, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=positive, default=2, help="BLAS/OpenMP threads")
    p.add_argument("--device", default="cpu", type=as_type(device_name, "device"), help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--gemm-size", type=positive, default=2048, help="n of the n x n x n GEMM giving the machine's rate")
    p.add_argument("--phases", action="store_true",
                   help="also time each phase (im2col, GEMM, tdBN, LIF, optimizer, ...) in one more process per "
                        "configuration, on one core")


def small_net_args(args):
    """resnet_small's arguments from the command line: width, blocks and (when given) strides."""
    model_args = {"width": args.width, "blocks": tuple(args.blocks)}
    if args.strides:
        model_args["strides"] = tuple(args.strides)
    return model_args


def bench_command(args):
    """``minisnn bench``: every configuration in a fresh process; JSON lines, then a table."""
    if args.strides and len(args.strides) != len(args.blocks):  # what no process should find out
        raise ConfigError(f"--strides gives {len(args.strides)} strides for {len(args.blocks)} stages (--blocks "
                          f"{' '.join(map(str, args.blocks))}); give one stride per stage")
    xp_for(args.device)  # DeviceError now, not a traceback from the first benchmark process
    rows = []
    for config in configs(args.model, args.T, args.batch, small_net_args(args), args.steps, args.warmup, args.device,
                          args.gemm_size):
        rows.append(run_isolated(config, args.threads))
        print(json.dumps(rows[-1]), flush=True)
    machine = machine_info()
    where = rows[0].get("device_name") or f"{machine['cpu']} ({machine['vector']}), {machine['cores']} cores"
    print(f"\n{where}; NumPy {machine['numpy']} ({machine['blas']}), {args.threads} threads")
    print(table(rows))
    if args.phases:
        profiled = [run_isolated(dict(config, phases=True)) for config in configs(
            args.model, args.T, args.batch, small_net_args(args), args.steps, args.warmup, args.device,
            args.gemm_size)]
        print("\nWhere the time goes: CPU seconds per step on one core (MINISNN_THREADS=1, one BLAS thread)")
        print(phase_table(profiled))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minisnn.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--one", help="internal: measure one JSON config in this process and print its row")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.one:
        config = json.loads(args.one)
        for name in ("blocks", "strides"):
            if name in config.get("model_args", {}):
                config["model_args"][name] = tuple(config["model_args"][name])
        print(json.dumps(measure_step(**config)))
        return 0
    return bench_command(args)


if __name__ == "__main__":
    sys.exit(main())
