"""Lesson 07's experiment over learning rates, depths and seeds: tdBN vs plain BN vs no normalisation.

One run trains lesson 07's deep plain spiking net on digits (default width 8, T = 2; batch 32) with the
lesson's own ``train`` function and reports its held-out accuracy after the budget. This script repeats
it over a grid and prints, per (depth, learning rate, norm), the mean and spread over seeds, and how
often tdBN beats plain BN on the same seed. JSON lines of every run go to --out.

    python benchmarks/tdbn_sweep.py --depth 20 40 --lr 0.01 0.02 0.05 --seeds 0 1 2 --out runs/sweep.jsonl
"""
import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

LESSONS = Path(__file__).resolve().parents[1] / "lessons"


def load_lesson():
    sys.path.insert(0, str(LESSONS))
    spec = importlib.util.spec_from_file_location("lesson07", LESSONS / "07_tdbn_vs_bn_deep.py")
    lesson = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lesson)
    return lesson


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

    lesson = load_lesson()
    from minisnn.data import get_dataset
    data = get_dataset("digits")
    acc = {}
    for depth in args.depth:
        for lr in args.lr:
            for seed in args.seeds:
                for norm in args.norms:
                    start = time.perf_counter()
                    r = lesson.train(norm, data, lr=lr, depth=depth, seed=seed, epochs=args.epochs,
                                     optimizer_name=args.optimizer, width=args.width, timesteps=args.timesteps)
                    row = {"optimizer": args.optimizer, "width": args.width, "T": args.timesteps, "depth": depth,
                           "lr": lr, "seed": seed, "norm": norm, "epochs": args.epochs,
                           "test_acc": r["accs"][-1], "accs": r["accs"],
                           "grad_ratio": float(r["grads"][0] / r["grads"][-1]),
                           "seconds": round(time.perf_counter() - start, 1)}
                    acc[depth, lr, norm, seed] = r["accs"][-1]
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
