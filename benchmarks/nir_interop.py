"""minisnn's NIR files run unchanged in snnTorch and Norse: how many predictions and spikes differ.

    pip install -e ".[interop]" torch==2.13.0        # snnTorch, Norse (pin the torch you have)
    python benchmarks/nir_interop.py --out runs/nir_interop --results benchmarks/RESULTS.md

Trains two nets on the digits with the command line, as a user would (a finished run in --out is
reused): the README's spiking ResNet (resnet_small, width 16, blocks 1 1, T = 4) and a plain tdBN net
(8 conv layers, width 16). Writes each with ``minisnn export`` twice -- the default file (r carries the
LIF's input gain) and ``--input-gain weights`` (r = 1, the gain in the weights) -- and runs the 360
digits test images as one batch for T steps:

* in minisnn, the checkpoint's own model: the reference predictions and spikes of every LIF layer;
* in snnTorch 1.0: ``import_from_nir(nir.read(path))`` (``from snntorch.import_nir import import_from_nir``),
  which assumes dt = 1e-4; also on the default file edited to v_threshold = V_th, the rule before this
  exporter wrote the largest float32 below V_th;
* in Norse: ``norse.torch.from_nir(nir.read(path), dt=1e-4)`` on both files (Norse ignores r), and, for
  the residual net, Norse's own node mapping run by ``nirtorch.nir_to_torch``: Norse's ``from_nir`` uses
  nirtorch's older loader, which orders the nodes depth-first and so runs a residual join before its
  shortcut.

Each row counts the test images whose prediction differs from minisnn's and the spike entries
(T x images x neurons, summed over the LIF layers) that differ.
"""
import argparse
import contextlib
import datetime
import io
import os
import platform
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from minisnn import Tensor, no_grad
from minisnn.checkpoint import load_checkpoint
from minisnn.data import get_dataset
from minisnn.models import build_model
from minisnn.monitor import Recorder

NETS = {
    "resnet": ["--model", "resnet_small", "--width", "16", "--blocks", "1", "1"],
    "plain": ["--model", "plain", "--depth", "8", "--width", "16", "--norm", "tdbn"],
}
TRAIN = ["--dataset", "digits", "--optimizer", "adam", "--lr", "0.003", "-T", "4", "--batch-size", "32"]
DT = 1e-4


def minisnn_cli(*args):
    print("$ minisnn " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "minisnn.cli", *args], check=True)


def prepare(out, epochs):
    """{net: (checkpoint, default file, --input-gain weights file)}, training and exporting as needed."""
    files = {}
    for name, args in NETS.items():
        run = out / name
        checkpoint = run / "last.npz"
        if not checkpoint.exists():
            minisnn_cli("train", *args, *TRAIN, "--epochs", str(epochs), "--out", str(run), "--no-progress")
        default, weights = run / "net.nir", run / "net_r1.nir"
        minisnn_cli("export", str(checkpoint), str(default))
        minisnn_cli("export", str(checkpoint), str(weights), "--input-gain", "weights")
        files[name] = checkpoint, default, weights
    return files


def minisnn_run(checkpoint, x):
    """The checkpoint's model on x: (logits [N, K], {LIF layer: spikes [T, N, ...]}), T."""
    state = load_checkpoint(checkpoint)
    config = state["meta"]["config"]
    model_args = dict(config["model_args"], num_classes=10, in_channels=1, T=config["T"], seed=config["seed"])
    model = build_model(config["model"], **model_args)
    model.load_state_dict(state["model"])
    model.eval()
    with no_grad(), Recorder(model) as rec:
        logits = model(Tensor(x)).data
    return logits, {name: rec.spikes[name] for name in rec.order_of_lif()}, config["T"]


def torch_run(net, neuron_type, x, T):
    """An imported torch net, T steps on the static batch x: (mean output, {layer: spikes [T, N, ...]})."""
    import torch
    spikes = {}
    for name, module in net.named_modules():
        if isinstance(module, neuron_type):
            module.register_forward_hook(
                lambda m, i, out, name=name: spikes.setdefault(name, []).append(
                    (out[0] if isinstance(out, tuple) else out).numpy().copy()))
    outputs, state = [], None
    with torch.no_grad():
        for _ in range(T):
            out, state = net(torch.from_numpy(x), state)
            outputs.append(out.numpy())
    return np.mean(outputs, axis=0), {name: np.stack(s) for name, s in spikes.items()}


def snntorch_net(graph):
    import snntorch
    from snntorch.import_nir import import_from_nir
    return import_from_nir(graph), snntorch.Leaky


def norse_net(graph):
    import norse.torch
    from norse.torch.module.lif_box import LIFBoxCell
    return norse.torch.from_nir(graph, dt=DT), LIFBoxCell


def norse_nodes_by_nir_to_torch(graph):
    import nir
    import nirtorch
    from norse.torch.module.lif_box import LIFBoxCell
    from norse.torch.utils.import_nir import _import_norse_module  # Norse's per-node mapping
    mapping = partial(_import_norse_module, dt=DT)
    node_map = {kind: mapping for kind in (nir.LIF, nir.Conv2d, nir.Affine, nir.SumPool2d, nir.Flatten)}
    return nirtorch.nir_to_torch(graph, node_map), LIFBoxCell


def at_v_th(graph):
    """The graph with v_threshold = V_th (the smallest float32 above what the file holds)."""
    import nir
    from minisnn.nir_export import minisnn_threshold
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            node.v_threshold = np.full_like(node.v_threshold, minisnn_threshold(float(node.v_threshold.flat[0])))
    return graph


def compare(ref, out, spikes, y):
    ref_logits, ref_spikes = ref
    if out.shape != ref_logits.shape:
        raise ValueError(f"the output has shape {out.shape}, not {ref_logits.shape}")
    differing = {name: int((spikes[name.replace(".", "_")] != s).sum()) for name, s in ref_spikes.items()}
    return {"same": int((out.argmax(1) == ref_logits.argmax(1)).sum()), "acc": float((out.argmax(1) == y).mean()),
            "differing": sum(differing.values()), "entries": sum(s.size for s in ref_spikes.values()),
            "layers": {name: n for name, n in differing.items() if n}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/nir_interop", help="run folders and NIR files")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--results", help="append the table to this Markdown file")
    args = parser.parse_args(argv)
    import nir
    warnings.simplefilter("ignore", DeprecationWarning)  # Norse's from_nir uses nirtorch's older loader
    files = prepare(Path(args.out), args.epochs)
    data = get_dataset("digits")
    x, y = next(iter(data.loader("test", batch_size=len(data.test_y)).batches()))  # normalised as in training
    runs = [("snnTorch", "default", snntorch_net, lambda g: g),
            ("snnTorch", "default, v_threshold = V_th", snntorch_net, at_v_th),
            ("snnTorch", "--input-gain weights", snntorch_net, lambda g: g),
            ("Norse from_nir", "--input-gain weights", norse_net, lambda g: g),
            ("Norse from_nir", "default (r ignored)", norse_net, lambda g: g),
            ("Norse nodes, nirtorch.nir_to_torch", "--input-gain weights", norse_nodes_by_nir_to_torch, lambda g: g)]
    rows = []
    for net_name, (checkpoint, default, weights) in files.items():
        logits, spikes, T = minisnn_run(checkpoint, x)
        rows.append((net_name, "minisnn", "(the checkpoint)", {
            "same": len(y), "acc": float((logits.argmax(1) == y).mean()), "differing": 0,
            "entries": sum(s.size for s in spikes.values()), "layers": {}}))
        for library, which, build, edit in runs:
            path = weights if "weights" in which else default
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # snnTorch's importer prints as it goes
                    net, neuron = build(edit(nir.read(path)))
                    out, got = torch_run(net, neuron, x, T)
                result = compare((logits, spikes), out, got, y)
            except Exception as err:  # a library that cannot run the file: its error goes into the table
                result = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            rows.append((net_name, library, which, result))
            print(net_name, library, which, result, flush=True)
    table = ["| net | run in | file | same predictions | accuracy | differing spike entries | layers that differ |",
             "|---|---|---|---|---|---|---|"]
    for net_name, library, which, r in rows:
        if "error" in r:
            table.append(f"| {net_name} | {library} | {which} | fails: {r['error']} | | | |")
            continue
        layers = ", ".join(f"{name}: {n}" for name, n in r["layers"].items()) or "none"
        table.append(f"| {net_name} | {library} | {which} | {r['same']}/{len(y)} | {100 * r['acc']:.1f} % | "
                     f"{r['differing']:,} of {r['entries']:,} | {layers} |")
    import norse
    import snntorch
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = (f"Machine: {cpu}, {os.cpu_count()} cores (shared with other jobs; nothing here is timed); Python {platform.python_version()}, NumPy {np.__version__}, nir {nir.__version__}, "
                f"torch {torch.__version__}, snnTorch {snntorch.__version__}, Norse {norse.__version__}")
    print("\n".join(table))
    print(versions)
    if args.results:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        text = (f"\n## NIR files in snnTorch and Norse: predictions and spikes against minisnn ({now})\n\n"
                f"Command: `python benchmarks/nir_interop.py --out {args.out} --epochs {args.epochs} "
                f"--results {args.results}`  \n{versions}.  \n"
                "The 360 digits test images as one batch, T = 4 steps; nets trained with `minisnn train "
                f"{' '.join(TRAIN)} --epochs {args.epochs}` and {{{'; '.join(' '.join(a) for a in NETS.values())}}}.\n\n"
                + "\n".join(table) + "\n")
        with open(args.results, "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
