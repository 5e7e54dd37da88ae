"""Lesson 14's experiment over learning rates, depths and seeds: tdBN vs plain BN vs no normalisation.

One run trains a deep plain spiking net (``PlainSpikingNet``) on digits (default width 8, T = 2; batch 32,
the lesson's setting) and reports its held-out accuracy after the budget, and how much larger the first
conv layer's gradient norm is than the last one's, averaged over the steps. This script repeats it over
a grid and prints, per (depth, learning rate, norm), the mean and spread over seeds, and how often tdBN
beats plain BN on the same seed. JSON lines of every run go to --out.

    python benchmarks/tdbn_sweep.py --depth 20 40 --lr 0.01 0.02 0.05 --seeds 0 1 2 --out runs/sweep.jsonl
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from minisnn import Tensor, no_grad
from minisnn.data import get_dataset
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import PlainSpikingNet
from minisnn.nn import Conv2d
from minisnn.optim import SGD, Adam

BATCH = 32


def train_plain(norm, data, lr, depth, seed, epochs, optimizer, width, T):
    """Train one plain net; return (test accuracy after each epoch, mean over steps of ||dW_1|| / ||dW_depth||)."""
    model = PlainSpikingNet(depth=depth, width=width, norm=norm, in_channels=data.in_channels,
                            num_classes=data.num_classes, T=T, seed=seed)
    convs = [m for _, m in model.named_modules() if isinstance(m, Conv2d)]
    opt = Adam(model.parameters(), lr=lr) if optimizer == "adam" else SGD(model.parameters(), lr=lr, momentum=0.9)
    test_x, test_y = next(data.loader("test", len(data.test_y)).batches())
    accs, ratios = [], []
    for epoch in range(epochs):
        for images, labels in data.loader("train", BATCH, seed=seed).batches(epoch):
            opt.zero_grad()
            softmax_cross_entropy(model(Tensor(images)), labels).backward()
            ratios.append(np.linalg.norm(convs[0].weight.grad) / np.linalg.norm(convs[-1].weight.grad))
            opt.step()
        model.eval()
        with no_grad():
            accs.append(float((model(Tensor(test_x)).data.argmax(axis=1) == test_y).mean()))
        model.train()
    return accs, float(np.mean(ratios))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, nargs="+", default=[20])
    p.add_argument("--lr", type=float, nargs="+", default=[0.01, 0.02, 0.05])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--norms", nargs="+", default=["tdbn", "bn", "none"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--width", type=int, default=8, help="channels of every conv layer")
    p.add_argument("-T", "--timesteps", type=int, default=2)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="sgd: momentum 0.9")
    p.add_argument("--out", type=Path, help="append one JSON line per run here")
    args = p.parse_args(argv)

    data = get_dataset("digits")
    acc = {}
    for depth in args.depth:
        for lr in args.lr:
            for seed in args.seeds:
                for norm in args.norms:
                    start = time.perf_counter()
                    accs, grad_ratio = train_plain(norm, data, lr, depth, seed, args.epochs, args.optimizer,
                                                   args.width, args.timesteps)
                    row = {"optimizer": args.optimizer, "width": args.width, "T": args.timesteps, "depth": depth,
                           "lr": lr, "seed": seed, "norm": norm, "epochs": args.epochs,
                           "test_acc": accs[-1], "accs": accs, "grad_ratio": grad_ratio,
                           "seconds": round(time.perf_counter() - start, 1)}
                    acc[depth, lr, norm, seed] = accs[-1]
                    print(json.dumps(row), flush=True)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps(row) + "\n")

    print(f"\n| depth | lr | " + " | ".join(args.norms) + " | tdBN > BN on seeds |")
    print("|---|---|" + "---|" * len(args.norms) + "---|")
    for depth in args.depth:
        for lr in args.lr:
            cells = []
            for norm in args.norms:
                a = np.array([acc[depth, lr, norm, s] for s in args.seeds]) * 100
                cells.append(f"{a.mean():.1f} ± {a.std():.1f}")
            wins = "-"
            if "tdbn" in args.norms and "bn" in args.norms:
                wins = f"{sum(acc[depth, lr, 'tdbn', s] > acc[depth, lr, 'bn', s] for s in args.seeds)}/{len(args.seeds)}"
            print(f"| {depth} | {lr} | " + " | ".join(cells) + f" | {wins} |")


if __name__ == "__main__":
    main()
