"""Training steps of a spiking ResNet on the real CIFAR-10 sample, on any device: the loss must fall.

    python benchmarks/gpu_steps.py --device cuda                    # ResNet-19, T = 2, batch 64, 30 steps
    python benchmarks/gpu_steps.py --device cpu --model resnet_small --width 8 --steps 4 --batch 8

Prints one JSON line per step (loss, seconds) and a summary line: the mean loss of the first and the last
third of the steps, the median step time after the first two (which compile CuPy's kernels), and on a
GPU its name and the memory pool's high-water mark. Exits 1 if the loss did not fall. Adam (lr 1e-3) is
used because it needs no warm-up to make progress in 30 steps; the step is the trainer's.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from minisnn import Tensor, as_numpy, get_device, xp_for
from minisnn.bench import gpu_name
from minisnn.data import get_dataset
from minisnn.fast import version_of
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import build_model
from minisnn.optim import Adam

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-sample"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="resnet19", choices=["resnet19", "resnet_small"])
    p.add_argument("--width", type=int, default=32, help="resnet_small: channels of the first stage")
    p.add_argument("-T", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--data-dir", default=str(SAMPLE))
    args = p.parse_args(argv)

    device = get_device(args.device)
    xp = xp_for(device)
    data = get_dataset("cifar10", data_dir=args.data_dir)
    model_args = {"width": args.width} if args.model == "resnet_small" else {}
    model = build_model(args.model, num_classes=10, T=args.T, seed=0, **model_args).to(device)
    params = model.parameters()
    optimizer = version_of(Adam, params[0].data)(params, lr=1e-3)
    losses, seconds = [], []
    batches = data.loader("train", args.batch, seed=0).batches(0)
    for step in range(args.steps):
        images, labels = next(batches)
        start = time.perf_counter()
        loss = softmax_cross_entropy(model(Tensor(xp.asarray(images))), xp.asarray(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(as_numpy(loss.data)))          # the step's one synchronisation
        seconds.append(time.perf_counter() - start)
        print(json.dumps({"step": step + 1, "loss": losses[-1], "seconds": round(seconds[-1], 4)}), flush=True)
    third = max(1, args.steps // 3)
    first, last = float(np.mean(losses[:third])), float(np.mean(losses[-third:]))
    summary = {"model": args.model, "T": args.T, "batch": args.batch, "steps": args.steps, "device": device,
               "first_loss": first, "last_loss": last, "loss_fell": last < first,
               "median_step_s": statistics.median(seconds[2:] or seconds)}
    if device != "cpu":
        summary["device_name"] = gpu_name(xp, int(device.split(":")[1]))
        summary["device_pool_mb"] = xp.get_default_memory_pool().total_bytes() / 2 ** 20
    print(json.dumps(summary))
    return 0 if summary["loss_fell"] else 1


if __name__ == "__main__":
    sys.exit(main())
