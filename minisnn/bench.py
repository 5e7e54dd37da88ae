"""How fast one training step is, and how much memory it needs: ``minisnn bench``.

One step = forward on random 32x32x3 images (direct encoding over T), cross-entropy on the mean over
T, backward, SGD update (momentum 0.9, weight decay 5e-4). For each configuration it reports:

* ``step_s``: the median seconds of ``steps`` steps after ``warmup`` steps; ``images_per_s``;
* ``forward_macs``: multiply-accumulates of every Conv2d and Linear layer in one forward pass, counted
  from the shapes the layers really produced (so the stem conv, computed once under direct encoding,
  counts once); ``gflops`` = 3 x 2 x forward_macs / step_s (backward costs about twice the forward);
* ``gemm_gflops``: this machine's own float32 GEMM rate (a 2048^3 matrix product), measured in the
  same process just before the steps; ``gemm_fraction`` = gflops / gemm_gflops;
* ``peak_rss_mb``: the peak resident memory of the process, and ``step_rss_mb`` = peak minus the
  resident memory after the model and data were built (what the steps themselves added).

Every measurement runs in a fresh subprocess (``python -m minisnn.bench --one CONFIG``) that does
nothing else, so ``ru_maxrss`` is that benchmark's own peak -- NumPy's buffers, OpenBLAS's and the
allocator's included, which tracemalloc would miss. Where PyTorch is importable the same network,
built in plain PyTorch with the same equations by ``benchmarks/peer_torch.py``, runs in its own
subprocess right after (or before: the order alternates between repeats) each minisnn run, with the
same thread count, and the ratio of step times is printed. PyTorch is only a benchmark peer, never a
dependency of minisnn.

Results are JSON lines on stdout; ``results`` appends a Markdown table (command, machine, date) to a
file such as benchmarks/RESULTS.md.
"""
import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PEER = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_torch.py"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------------------------ measurements
@contextlib.contextmanager
def count_macs(model):
    """Count, inside ``with count_macs(model) as macs:``, the multiply-accumulates of every Conv2d and
    Linear layer that runs: outputs produced x fan-in (C_in kh kw, or in_features). ``macs[0]`` holds
    the running total."""
    from .nn.layers import Conv2d, Linear
    total = [0]
    wrapped = [m for _, m in model.named_modules() if isinstance(m, (Conv2d, Linear))]

    def wrap(module):
        original = module.forward
        fan_in = module.weight.size // module.weight.shape[0]

        def forward(x):
            y = original(x)
            total[0] += y.size * fan_in
            return y
        module.forward = forward

    for module in wrapped:
        wrap(module)
    try:
        yield total
    finally:
        for module in wrapped:
            del module.forward  # back to the class's forward


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
                 gemm_size=2048):
    """Time ``steps`` training steps after ``warmup`` ones in this process; return a dict of figures.

    gemm_size: the matrix size of the GEMM that measures the machine's rate."""
    import numpy as np

    from .backend import get_device, xp_for
    from .core import Tensor
    from .functions.loss import softmax_cross_entropy
    from .models import build_model
    from .optim import SGD

    device = get_device(device)
    xp = xp_for(device)
    net = build_model(model, T=T, seed=seed, **(model_args or {})).to(device)
    optimizer = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    images = xp.asarray(rng.random((batch, 3, 32, 32), dtype=np.float32))
    labels = xp.asarray(rng.integers(0, 10, batch))
    gemm = gemm_gflops(xp, gemm_size)
    base_rss = _rss_mb()

    def step():
        loss = softmax_cross_entropy(net(Tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _synchronize(xp, loss.data)
        return loss

    with count_macs(net) as macs:
        for _ in range(max(warmup, 1)):
            loss = step()
            forward_macs, macs[0] = macs[0], 0
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    gflops = 6 * forward_macs / median / 1e9
    row = {"framework": "minisnn", "model": model, "model_args": model_args or {}, "T": T, "batch": batch,
           "device": device, "step_s": median, "step_s_all": times, "images_per_s": batch / median,
           "forward_macs": forward_macs, "gflops": gflops, "gemm_gflops": gemm, "gemm_fraction": gflops / gemm,
           "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base_rss, "loss": float(loss.item())}
    row["step_rss_mb"] = row["peak_rss_mb"] - base_rss
    if device != "cpu":
        row["device_pool_mb"] = xp.get_default_memory_pool().total_bytes() / 2 ** 20  # cached = high-water
    return row


# --------------------------------------------------------------------------- isolated runs
def peer_available():
    """True when benchmarks/peer_torch.py is beside the package and PyTorch is importable."""
    return PEER.is_file() and importlib.util.find_spec("torch") is not None


def run_isolated(framework, config, threads=2, timeout=3600):
    """Run one measurement in a fresh Python process and return its JSON row.

    framework: "minisnn" (``measure_step`` via ``python -m minisnn.bench --one``) or "torch" (the peer).
    config: keyword arguments of ``measure_step``. Both get ``threads`` BLAS/OpenMP threads.
    """
    env = dict(os.environ, **{var: str(threads) for var in THREAD_VARS})
    if framework == "minisnn":
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "minisnn.bench", "--one", json.dumps(config)]
    elif framework == "torch":
        args = config.get("model_args") or {}
        cmd = [sys.executable, str(PEER), "--model", config["model"], "-T", str(config["T"]),
               "--batch", str(config["batch"]), "--steps", str(config["steps"]),
               "--warmup", str(config["warmup"]), "--threads", str(threads),
               "--width", str(args.get("width", 32)), "--blocks", *map(str, args.get("blocks", (1, 1, 1)))]
    else:
        raise ValueError(f"run_isolated: framework must be 'minisnn' or 'torch', got {framework!r}")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} benchmark failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(config, repeats=1, threads=2, peer=True):
    """minisnn (and the torch peer) on one configuration, interleaved ``repeats`` times.

    Returns one row: minisnn's figures (medians over the repeats) plus ``torch_step_s``,
    ``torch_peak_rss_mb``, ``torch_step_rss_mb`` and ``ratio`` = minisnn / torch step time.
    """
    runs = {"minisnn": [], "torch": []}
    order = ["minisnn", "torch"] if peer else ["minisnn"]
    for r in range(repeats):
        for framework in (order if r % 2 == 0 else order[::-1]):
            runs[framework].append(run_isolated(framework, config, threads))
    ours = runs["minisnn"]
    row = dict(ours[-1], threads=threads, repeats=repeats)
    for key in ("step_s", "gflops", "gemm_gflops", "peak_rss_mb", "step_rss_mb"):
        row[key] = statistics.median(r[key] for r in ours)
    row["gemm_fraction"] = row["gflops"] / row["gemm_gflops"]
    row["images_per_s"] = row["batch"] / row["step_s"]
    row["step_s_runs"] = [r["step_s"] for r in ours]
    if runs["torch"]:
        theirs = runs["torch"]
        row["torch_version"] = theirs[0]["torch"]
        for key in ("step_s", "peak_rss_mb", "step_rss_mb"):
            row[f"torch_{key}"] = statistics.median(r[key] for r in theirs)
        row["torch_step_s_runs"] = [r["step_s"] for r in theirs]
        row["ratio"] = row["step_s"] / row["torch_step_s"]
    return row


# ---------------------------------------------------------------------------------- reports
def machine_info():
    """CPU model, cores, memory, Python, NumPy and its BLAS, as one dict."""
    import numpy as np
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    blas = "?"
    with contextlib.suppress(Exception):
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info['name']} {info['version']}"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory_gb, 1),
            "python": platform.python_version(), "numpy": np.__version__, "blas": blas}


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows, command, machine, threads):
    """A Markdown section: the command, machine and date, one table row per configuration, and the
    growth of step time and memory with T and with depth."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"## Training step: minisnn vs PyTorch ({now})", "",
             f"Command: `{command}`  ",
             f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; Python "
             f"{machine['python']}, NumPy {machine['numpy']} ({machine['blas']})"
             + (f", PyTorch {rows[0]['torch_version']}" if rows and "torch_version" in rows[0] else "")
             + f"; {threads} threads for both.  ",
             "Each time is the median of the timed steps (after warm-up) of each fresh process, then the median "
             "over the processes; minisnn and PyTorch processes alternate.",
             "", "| model | T | batch | s/step | images/s | fwd GMAC | GFLOP/s | of GEMM peak | peak RSS MB "
             "| step RSS MB | torch s/step | torch peak RSS MB | torch step RSS MB | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {_model_name(r)} | {r['T']} | {r['batch']} | {_fmt(r['step_s'])} | {_fmt(r['images_per_s'], 1)} "
            f"| {_fmt(r['forward_macs'] / 1e9)} | {_fmt(r['gflops'], 1)} | {r['gemm_fraction']:.0%} of "
            f"{r['gemm_gflops']:.0f} | {r['peak_rss_mb']:.0f} | {r['step_rss_mb']:.0f} "
            f"| {_fmt(r.get('torch_step_s'))} | {_fmt(r.get('torch_peak_rss_mb'), 0)} "
            f"| {_fmt(r.get('torch_step_rss_mb'), 0)} | {_fmt(r.get('ratio'))} |")
    lines += [""] + growth(rows)
    lines += [f"- {_model_name(r)}, T={r['T']}, batch {r['batch']}: seconds per step in each process: minisnn "
              + ", ".join(f"{t:.2f}" for t in r.get("step_s_runs", [r["step_s"]]))
              + ("; torch " + ", ".join(f"{t:.2f}" for t in r["torch_step_s_runs"]) if "torch_step_s_runs" in r else "")
              + "." for r in rows]
    lines.append("")
    return "\n".join(lines)


def _model_name(row):
    args = row.get("model_args") or {}
    if row["model"] == "resnet_small":
        return f"resnet_small w{args.get('width', 32)} b{''.join(map(str, args.get('blocks', (1, 1, 1))))}"
    return row["model"]


def growth(rows):
    """Sentences: step time and step memory relative to the smallest T (per model and batch), and, for
    resnet_small, relative to the fewest blocks (per width, T and batch)."""
    def ratios(group, key, label):
        group = sorted(group, key=key)
        first = group[0]
        return "; ".join(f"{label(r)}: {r['step_s'] / first['step_s']:.2f}x time, "
                         f"{r['step_rss_mb'] / first['step_rss_mb']:.2f}x memory" for r in group[1:]), first

    by_T, by_depth = {}, {}
    for r in rows:
        by_T.setdefault((_model_name(r), r["batch"]), []).append(r)
        if r["model"] == "resnet_small":
            blocks = tuple(r["model_args"].get("blocks", (1, 1, 1)))
            r = dict(r, depth=2 * sum(blocks) + 2)  # weight layers on the main path: stem, 2 per block, FC
            by_depth.setdefault((r["model_args"].get("width", 32), r["T"], r["batch"]), []).append(r)
    out = []
    for (name, batch), group in by_T.items():
        if len({r["T"] for r in group}) > 1:
            text, first = ratios(group, lambda r: r["T"], lambda r: f"T={r['T']}")
            out.append(f"- {name}, batch {batch}, relative to T={first['T']}: {text}.")
    for (width, T, batch), group in by_depth.items():
        if len({r["depth"] for r in group}) > 1:
            text, first = ratios(group, lambda r: r["depth"], lambda r: f"{r['depth']} layers")
            out.append(f"- resnet_small width {width}, T={T}, batch {batch}, relative to {first['depth']} "
                       f"layers: {text}.")
    return out


def run(models=("resnet19",), Ts=(2, 4, 6), batches=(8, 32), steps=3, warmup=1, repeats=1, threads=2,
        peer=True, depths=(), depth_batch=32, model_args=None, device="cpu", gemm_size=2048, results=None,
        command=None, emit=print):
    """The whole benchmark: every (model, T, batch), then resnet_small with n BasicBlocks per stage for
    n in ``depths`` (T = the first of Ts, batch ``depth_batch``). Emits JSON lines; appends a Markdown
    table to ``results`` when given. Returns the rows."""
    peer = peer and device == "cpu" and peer_available()
    configs = [dict(model=m, T=T, batch=b, model_args=dict(model_args or {}) if m == "resnet_small" else {})
               for m in models for T in Ts for b in batches]
    configs += [dict(model="resnet_small", T=Ts[0], batch=depth_batch,
                     model_args=dict(model_args or {}, blocks=(n, n, n))) for n in depths]
    rows = []
    for config in configs:
        config.update(steps=steps, warmup=warmup, device=device, gemm_size=gemm_size)
        row = compare(config, repeats=repeats, threads=threads, peer=peer)
        emit(json.dumps(row))
        rows.append(row)
    if results:
        section = markdown(rows, command or "minisnn bench", machine_info(), threads)
        with open(results, "a") as f:
            f.write("\n" + section)
    return rows


# -------------------------------------------------------------------------------------- CLI
def add_arguments(p):
    p.add_argument("--model", nargs="+", default=["resnet19"], help="resnet19 | resnet_small | ... (default resnet19)")
    p.add_argument("-T", "--timesteps", dest="T", type=int, nargs="+", default=[2, 4, 6])
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--width", type=int, default=32, help="resnet_small: channels of the first stage")
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 1, 1], help="resnet_small: blocks per stage")
    p.add_argument("--steps", type=int, default=3, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration, interleaved")
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads for both frameworks")
    p.add_argument("--no-peer", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--depth", type=int, nargs="*", default=[],
                   help="also resnet_small with n blocks per stage for each n given (e.g. --depth 1 2 3)")
    p.add_argument("--depth-batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--gemm-size", type=int, default=2048, help="n of the n x n x n GEMM giving the machine's rate")
    p.add_argument("--results", help="append a Markdown table to this file (e.g. benchmarks/RESULTS.md)")


def command_line(args):
    """The full ``minisnn bench`` command that reproduces ``args`` (every option spelled out)."""
    parts = ["minisnn bench", "--model", *args.model, "-T", *map(str, args.T), "--batch", *map(str, args.batch)]
    if "resnet_small" in args.model or args.depth:
        parts += ["--width", str(args.width), "--blocks", *map(str, args.blocks)]
    parts += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
              "--threads", str(args.threads)]
    if args.no_peer:
        parts.append("--no-peer")
    if args.depth:
        parts += ["--depth", *map(str, args.depth), "--depth-batch", str(args.depth_batch)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.gemm_size != 2048:
        parts += ["--gemm-size", str(args.gemm_size)]
    if args.results:
        parts += ["--results", args.results]
    return " ".join(parts)


def bench_command(args):
    """Run the benchmark from parsed arguments (``minisnn bench`` and benchmarks/bench.py)."""
    run(models=args.model, Ts=args.T, batches=args.batch, steps=args.steps, warmup=args.warmup,
        repeats=args.repeats, threads=args.threads, peer=not args.no_peer, depths=args.depth,
        depth_batch=args.depth_batch, model_args={"width": args.width, "blocks": tuple(args.blocks)},
        device=args.device, gemm_size=args.gemm_size, results=args.results, command=command_line(args))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minisnn.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--one", help="internal: measure one JSON config in this process and print its row")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.one:
        config = json.loads(args.one)
        if "blocks" in config.get("model_args", {}):
            config["model_args"]["blocks"] = tuple(config["model_args"]["blocks"])
        print(json.dumps(measure_step(**config)))
        return 0
    return bench_command(args)


if __name__ == "__main__":
    sys.exit(main())
