"""Speed and memory of one spiking ResNet training step, minisnn against a plain-PyTorch peer.

    python benchmarks/bench.py                                   # ResNet-19, T = 2 4 6, batch 8 32
    python benchmarks/bench.py -T 2 --batch 8 --repeats 3 --results benchmarks/RESULTS.md
    python benchmarks/bench.py --model resnet_small -T 2 --batch 64 --no-peer
    python benchmarks/bench.py -T 2 --batch 8 --phases --results benchmarks/RESULTS.md   # where the time goes

minisnn's step is measured by ``minisnn.bench`` (see there for what is measured and how). Where PyTorch
is importable, the same network, built in plain PyTorch with the same equations by peer_torch.py beside
this file, runs in its own fresh process right after (or before: the order alternates between repeats)
each minisnn run, with the same thread count, and the ratio of step times is printed, with the share
of this machine's GEMM rate each reaches. ``--results`` appends a Markdown section (command, machine,
date, table) to a file such as benchmarks/RESULTS.md. ``--phases`` adds, per configuration, the time
of each phase of one step on one core: minisnn's from its phase marks (``minisnn.fast.phases``, CPU
time), PyTorch's from torch.profiler (peer_torch.py --profile, wall time of one thread).
"""
import argparse
import datetime
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from minisnn.bench import THREAD_VARS, add_arguments, configs, machine_info, run_isolated, small_net_args

PEER = Path(__file__).resolve().parent / "peer_torch.py"


def peer_available():
    """True when PyTorch is importable (peer_torch.py sits beside this script)."""
    return importlib.util.find_spec("torch") is not None


def cuda_torch():
    """True when the installed PyTorch can use a GPU (checked in a fresh process: torch is heavy)."""
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                          capture_output=True, text=True)
    return done.stdout.strip() == "True"


def run_peer(config, threads=2, timeout=3600):
    """The PyTorch peer on one configuration, in a fresh process; returns its JSON row. A config with
    phases runs under torch.profiler on one thread."""
    if config.get("phases"):
        threads = 1
    env = dict(os.environ, **{var: str(threads) for var in THREAD_VARS})
    args = config.get("model_args") or {}
    cmd = [sys.executable, str(PEER), "--model", config["model"], "-T", str(config["T"]),
           "--batch", str(config["batch"]), "--steps", str(config["steps"]),
           "--warmup", str(config["warmup"]), "--threads", str(threads),
           "--width", str(args.get("width", 32)), "--blocks", *map(str, args.get("blocks", (1, 1, 1))),
           *(["--strides", *map(str, args["strides"])] if args.get("strides") else []),
           "--device", config.get("device", "cpu")] + (["--profile"] if config.get("phases") else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"torch benchmark failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
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
            run = run_isolated if framework == "minisnn" else run_peer
            runs[framework].append(run(config, threads))
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
        row["torch_gemm_fraction"] = 6 * row["forward_macs"] / row["torch_step_s"] / 1e9 / row["gemm_gflops"]
    return row


def compare_phases(config, peer=True):
    """minisnn's phases (one worker, one BLAS thread) and, with ``peer``, PyTorch's (torch.profiler, one
    thread) for one configuration: (minisnn row, torch row or None)."""
    config = dict(config, phases=True)
    return run_isolated(config), (run_peer(config) if peer else None)


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value):
    return "-" if value is None else f"{value:.0%}"


MINISNN_PHASES = ("im2col", "dx columns", "GEMM", "layout", "allocation", "tdBN", "LIF", "optimizer", "other")
TORCH_PHASES = ("convolution", "tdBN", "LIF", "optimizer", "other")


def phases_markdown(pairs, command, machine):
    """A Markdown section: per configuration, minisnn's CPU seconds per phase beside PyTorch's."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"## Where a training step's time goes: minisnn's phases beside PyTorch's profile ({now})", "",
             f"Command: `{command}`  ", machine_line(machine, [], 1),
             "minisnn: CPU seconds per step of each phase its fast code marks (`minisnn.fast.phases`), over the "
             "timed steps of one process with `MINISNN_THREADS=1` and one BLAS thread; \"other\" is the rest of "
             "the process's CPU time (the graph, Python, small ops). PyTorch: the same steps under torch.profiler "
             "on one thread, seconds per step of each top-level event (wall time, so it includes waiting on a "
             "busy machine); backward nodes count in the phase of the forward op they differentiate; its "
             "convolution holds oneDNN's own im2col, GEMM and col2im.", ""]
    for ours, theirs in pairs:
        lines += [f"{_model_name(ours)}, T={ours['T']}, batch {ours['batch']}:", "",
                  "| minisnn phase | s/step | share | | PyTorch phase | s/step | share |",
                  "|---|---|---|---|---|---|---|"]
        left = [(n, ours["phases"].get(n, 0.0)) for n in MINISNN_PHASES] + [("step (CPU)", ours["step_cpu_s"])]
        right = []
        if theirs is not None:
            total = sum(theirs["phases"].values())
            right = [(n, theirs["phases"].get(n, 0.0)) for n in TORCH_PHASES] + [("step (profiled)", total)]
        for i in range(max(len(left), len(right))):
            cells = []
            for side, whole in ((left, ours["step_cpu_s"]), (right, total if right else None)):
                name, seconds = side[i] if i < len(side) else ("", None)
                cells.append(f"{name} | {_fmt(seconds)} | {_percent(seconds / whole)}" if name else " | |")
            lines.append(f"| {cells[0]} | | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def machine_line(machine, rows, threads):
    """The Machine: line of a section."""
    return (f"Machine: {machine['cpu']} ({machine['vector']}), {machine['cores']} cores, {machine['memory_gb']} GB; "
            f"Python {machine['python']}, NumPy {machine['numpy']} ({machine['blas']})"
            + (f", PyTorch {rows[0]['torch_version']}" if rows and "torch_version" in rows[0] else "")
            + f"; {threads} thread{'' if threads == 1 else 's'} for both.  ")


def markdown(rows, command, machine, threads):
    """A Markdown section: the command, machine and date, one table row per configuration, and the
    growth of step time and memory with T and with depth."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"## Training step: minisnn vs PyTorch ({now})", "",
             f"Command: `{command}`  ",
             machine_line(machine, rows, threads),
             "Each time is the median of the timed steps (after warm-up) of each fresh process, then the median "
             "over the processes; minisnn and PyTorch processes alternate. \"of GEMM peak\": the share of this "
             "machine's float32 GEMM rate (2048^3, measured in minisnn's processes) that 6 x forward MACs per step "
             "reach.",
             "", "| model | T | batch | s/step | images/s | fwd GMAC | GFLOP/s | of GEMM peak | peak RSS MB "
             "| step RSS MB | torch s/step | torch of GEMM peak | torch peak RSS MB | torch step RSS MB | ratio "
             "| peak RSS ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {_model_name(r)} | {r['T']} | {r['batch']} | {_fmt(r['step_s'])} | {_fmt(r['images_per_s'], 1)} "
            f"| {_fmt(r['forward_macs'] / 1e9)} | {_fmt(r['gflops'], 1)} | {r['gemm_fraction']:.0%} of "
            f"{r['gemm_gflops']:.0f} | {r['peak_rss_mb']:.0f} | {r['step_rss_mb']:.0f} "
            f"| {_fmt(r.get('torch_step_s'))} | {_percent(r.get('torch_gemm_fraction'))} "
            f"| {_fmt(r.get('torch_peak_rss_mb'), 0)} | {_fmt(r.get('torch_step_rss_mb'), 0)} | {_fmt(r.get('ratio'))} "
            f"| {_fmt(r['peak_rss_mb'] / r['torch_peak_rss_mb'] if r.get('torch_peak_rss_mb') else None)} |")
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
        name = f"resnet_small w{args.get('width', 32)} b{''.join(map(str, args.get('blocks', (1, 1, 1))))}"
        return name + (f" s{''.join(map(str, args['strides']))}" if args.get("strides") else "")
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
        command=None, emit=print, phases=False):
    """The whole benchmark: every (model, T, batch), then resnet_small with n BasicBlocks per stage for
    n in ``depths`` (T = the first of Ts, batch ``depth_batch``). Emits JSON lines; appends a Markdown
    table to ``results`` when given (and, with ``phases``, the phase tables of every configuration).
    Returns the rows."""
    peer = peer and peer_available() and (device == "cpu" or cuda_torch())
    todo = configs(models, Ts, batches, model_args, steps, warmup, device, gemm_size)
    for n in depths:
        todo += configs(["resnet_small"], Ts[:1], [depth_batch], dict(model_args or {}, blocks=(n, n, n)),
                        steps, warmup, device, gemm_size)
    rows = []
    for config in todo:
        row = compare(config, repeats=repeats, threads=threads, peer=peer)
        emit(json.dumps(row))
        rows.append(row)
    pairs = []
    if phases and device == "cpu":
        for config in todo:
            pairs.append(compare_phases(config, peer))
            emit(json.dumps({"phases": pairs[-1][0]["phases"], "torch_phases": (pairs[-1][1] or {}).get("phases")}))
    if results:
        section = markdown(rows, command or "python benchmarks/bench.py", machine_info(), threads)
        if pairs:
            section += "\n" + phases_markdown(pairs, command or "python benchmarks/bench.py", machine_info())
        with open(results, "a") as f:
            f.write("\n" + section)
    return rows


# -------------------------------------------------------------------------------------- CLI
def command_line(args):
    """The full command that reproduces ``args`` (every option spelled out)."""
    parts = ["python benchmarks/bench.py", "--model", *args.model, "-T", *map(str, args.T),
             "--batch", *map(str, args.batch)]
    if "resnet_small" in args.model or args.depth:
        parts += ["--width", str(args.width), "--blocks", *map(str, args.blocks)]
        if args.strides:
            parts += ["--strides", *map(str, args.strides)]
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
    if args.phases:
        parts.append("--phases")
    if args.results:
        parts += ["--results", args.results]
    return " ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(T=[2, 4, 6], batch=[8, 32])
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration, interleaved")
    parser.add_argument("--no-peer", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--depth", type=int, nargs="*", default=[],
                        help="also resnet_small with n blocks per stage for each n given (e.g. --depth 1 2 3)")
    parser.add_argument("--depth-batch", type=int, default=32)
    parser.add_argument("--results", help="append a Markdown table to this file (e.g. benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    run(models=args.model, Ts=args.T, batches=args.batch, steps=args.steps, warmup=args.warmup,
        repeats=args.repeats, threads=args.threads, peer=not args.no_peer, depths=args.depth,
        depth_batch=args.depth_batch, model_args=small_net_args(args),
        device=args.device, gemm_size=args.gemm_size, results=args.results, command=command_line(args),
        phases=args.phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
