"""Command line: ``minisnn train | eval | bench | export``.

    minisnn train --dataset digits --model resnet_small --width 16 --epochs 5      # offline, a minute
    minisnn train --dataset cifar10 --download --model resnet19 -T 2 --device cuda  # the paper's job
    mpiexec -n 2 minisnn train --dataset digits --sync-norm ...                     # 2 data-parallel ranks
    minisnn eval runs/default/last.npz                                              # accuracy + per-layer table
    minisnn export runs/default/last.npz net.nir                                    # tdBN folded, NIR file
    minisnn bench -T 2 --batch 8                                                    # step time vs PyTorch
"""
import argparse
import json
import sys

from .backend import DeviceError
from .bench import add_arguments as add_bench_args
from .checkpoint import CheckpointError
from .data import DatasetError
from .dist import DistError, abort_other_ranks


def add_train_args(p):
    p.add_argument("--model", default="resnet19",
                   help="resnet19 | resnet34 | resnet50 | resnet34_imagenet | resnet_small | plain")
    p.add_argument("--width", type=int, help="resnet_small/plain: channels of the first stage")
    p.add_argument("--blocks", type=int, nargs="+", help="resnet_small: BasicBlocks per stage, e.g. 1 1 1")
    p.add_argument("--strides", type=int, nargs="+",
                   help="resnet_small: stride of each stage's first block (default 1 2 2)")
    p.add_argument("--depth", type=int, help="plain: number of conv layers")
    p.add_argument("--norm", choices=["tdbn", "bn", "none"], help="plain: normalisation")
    p.add_argument("--dataset", default="cifar10", help="cifar10 | digits | cifar10-dvs | imagefolder")
    p.add_argument("--data-dir", help="folder holding the data set (e.g. an existing cifar-10-batches-py)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 (md5-checked) if not cached")
    p.add_argument("--dvs-size", type=int, help="cifar10-dvs: frame size after downsampling the 128x128 sensor")
    p.add_argument("--dvs-split", choices=["number", "time"], help="cifar10-dvs: cut recordings into T frames "
                   "of equal event count or equal duration")
    p.add_argument("--image-size", type=int, help="imagefolder: side of the square training images (default 224)")
    p.add_argument("--workers", type=int, help="imagefolder: processes decoding images ahead of the step "
                   "(default 2; 0 decodes in the training process)")
    p.add_argument("--sync-norm", action="store_true", help="under mpiexec: tdBN statistics over the whole "
                   "batch of all ranks (default: each rank's own rows)")
    p.add_argument("-T", "--timesteps", dest="T", type=int, default=2, help="timesteps (default 2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: $MINISNN_DEVICE or cpu)")
    p.add_argument("--out", default="runs/default", help="run folder: checkpoints, metrics, plots")
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--limit-train", type=int, help="use only the first N training images")
    p.add_argument("--limit-test", type=int, help="use only the first N test images")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def train_command(args):
    from .train import TrainingDiverged, train
    model_args = {key: getattr(args, key) for key in ("width", "depth", "norm") if getattr(args, key) is not None}
    if args.blocks:
        model_args["blocks"] = tuple(args.blocks)
    if args.strides:
        model_args["strides"] = tuple(args.strides)
    dataset_args = {key: value for key, value in (("size", args.dvs_size), ("split_by", args.dvs_split),
                                                  ("size", args.image_size), ("workers", args.workers))
                    if value is not None}
    overrides = dict(model=args.model, model_args=model_args, dataset=args.dataset, dataset_args=dataset_args,
                     data_dir=args.data_dir,
                     download=args.download, T=args.T, batch_size=args.batch_size, epochs=args.epochs,
                     optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                     weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, seed=args.seed,
                     device=args.device, out=args.out, augment=not args.no_augment,
                     limit_train=args.limit_train, limit_test=args.limit_test, progress=not args.no_progress,
                     sync_norm=args.sync_norm)
    if args.resume:
        overrides = {k: overrides[k] for k in ("out", "device", "progress")}
    try:
        history = train(resume=args.resume, **overrides)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    if history:
        print(json.dumps(history[-1]))
    return 0


def eval_command(args):
    from .evaluate import evaluate_checkpoint
    evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, device=args.device,
                        limit_test=args.limit_test, out=args.out)
    return 0


def export_command(args):
    from .nir_export import export_checkpoint
    export_checkpoint(args.checkpoint, args.out, dt=args.dt, data_dir=args.data_dir)
    return 0


def bench_command(args):
    from .bench import bench_command as run_bench
    return run_bench(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minisnn", description="Train and inspect spiking networks (STBP-tdBN).")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_args(sub.add_parser("train", help="train a model"))
    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy, per-layer firing rates and SOPs, raster plot")
    p.add_argument("checkpoint")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.add_argument("--limit-test", type=int)
    p.add_argument("--out", help="folder for plots (default: the checkpoint's folder)")
    p = sub.add_parser("export", help="write a checkpoint's network, tdBN folded, as a NIR graph (needs the nir extra)")
    p.add_argument("checkpoint")
    p.add_argument("out", help="the .nir file to write")
    p.add_argument("--dt", type=float, default=1e-4, help="NIR time step: tau = dt / (1 - tau_decay) (default 1e-4)")
    p.add_argument("--data-dir", help="folder of the checkpoint's data set (gives the input shape)")
    add_bench_args(sub.add_parser("bench", help="time a training step and its peak memory, against a PyTorch peer"))
    args = parser.parse_args(argv)
    commands = {"train": train_command, "eval": eval_command, "export": export_command, "bench": bench_command}
    try:
        return commands[args.command](args)
    except (DeviceError, DatasetError, CheckpointError, FileNotFoundError, ValueError, ImportError,
            NotImplementedError, DistError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        abort_other_ranks(2)  # [dist] under mpiexec the other ranks would wait for this one
        return 2


if __name__ == "__main__":
    sys.exit(main())
