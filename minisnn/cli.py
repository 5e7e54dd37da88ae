"""Command line: ``minisnn train | eval | export | bench | doctor``.

    minisnn train --dataset digits --model resnet_small --width 16 --epochs 5 --out runs/digits  # offline
    minisnn train --dataset cifar10 --download --model resnet19 -T 2 --device cuda --out runs/r19
    minisnn train --resume --out runs/r19                  # continue the run in runs/r19
    minisnn train --resume --out runs/r19 --epochs 300     # ... and extend it
    minisnn eval runs/r19/last.npz                         # accuracy, per-layer table, pictures in runs/r19/eval
    minisnn export runs/r19/last.npz net.nir               # tdBN folded, NIR file
    minisnn bench -T 2 --batch 8                           # step time and memory of a training step
    minisnn doctor                                         # versions, threads, the GPU and a kernel on it
    mpiexec -n 2 minisnn train --dataset digits --sync-norm ...   # 2 data-parallel ranks (the dist extra)

Choices, defaults and ranges come from ``minisnn.experiment``; every number is checked where it is parsed.
Every error a user can cause is one line, ``error: what, where, what to do``, with exit status 2 (3: the
training diverged; 130: stopped by Ctrl-C); none prints a Python traceback.
"""
import argparse
import json
import os
import sys

from . import __version__
from .backend import DeviceError
from .bench import BenchmarkFailed
from .bench import add_arguments as add_bench_args
from .checkpoint import CheckpointError
from .data import DatasetError
from .data.cifar10_dvs import RESIZE_MODES, SPLIT_RULES
from .dist import DistError, abort_other_ranks, world
from .experiment import (CHECKS, DATASET_OPTIONS, DATASETS, DEFAULTS, DVS_SPLITS, FLAGS, MODEL_OPTIONS, MODELS,
                         OPTIMIZERS, OPTION_CHECKS, RESUMABLE, ConfigError, as_type, number, option_default)
from .fast.parallel import check_settings
from .models.plain import NORMS

EXIT_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: minisnn train: argument --lr: must be ...; see --help``."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def checked(key):
    """An argparse type that runs the experiment's check for ``key`` on the flag's text (for a list
    option, on each of its values)."""
    check = CHECKS[key] if key in CHECKS else OPTION_CHECKS[key]
    return as_type(getattr(check, "each", check), key)


def default(key):
    return f"(default: {DEFAULTS[key]})"


def option_help(name, what, none_means=None):
    """Help for a model/data-set option: what it does, and its default for each builder that takes it."""
    owners = [(model, MODELS[model]) for model, keys in MODEL_OPTIONS.items() if name in keys]
    owners += [(dataset, DATASETS[dataset]) for dataset, keys in DATASET_OPTIONS.items() if name in keys]

    def shown(value):
        if value is None:
            return none_means
        return " ".join(map(str, value)) if isinstance(value, list) else value
    defaults = ", ".join(f"{owner} {shown(option_default(builder, name))}" for owner, builder in owners)
    return f"{'/'.join(owner for owner, _ in owners)} only: {what} (default: {defaults})"


def add_train_args(p):
    g = p.add_argument_group("the model")
    g.add_argument("--model", type=checked("model"), metavar="{" + ",".join(MODELS) + "}",
                   help=f"the network {default('model')}")
    g.add_argument("--width", type=checked("width"), help=option_help("width", "channels of the first stage"))
    g.add_argument("--blocks", type=checked("blocks"), nargs="+",
                   help=option_help("blocks", "BasicBlocks per stage, e.g. 1 1 1"))
    g.add_argument("--strides", type=checked("strides"), nargs="+",
                   help=option_help("strides", "stride of each stage's first block", "1, then 2 for each later stage"))
    g.add_argument("--depth", type=checked("depth"), help=option_help("depth", "number of conv layers"))
    g.add_argument("--norm", type=checked("norm"), metavar="{" + ",".join(NORMS) + "}",
                   help=option_help("norm", "normalisation"))
    g.add_argument("-T", "--timesteps", dest="T", type=checked("T"), help=f"timesteps {default('T')}")
    g = p.add_argument_group("the data")
    g.add_argument("--dataset", type=checked("dataset"), metavar="{" + ",".join(DATASETS) + "}",
                   help=f"{default('dataset')}")
    g.add_argument("--data-dir", dest="data_dir", type=checked("data_dir"),
                   help="folder holding the data set, e.g. one containing cifar-10-batches-py (default: "
                        "$MINISNN_DATA or ~/.cache/minisnn)")
    g.add_argument("--download", action="store_true", help="cifar10: download it (md5-checked) if not cached")
    g.add_argument("--dvs-size", dest="size", type=checked("size"),
                   help=option_help("size", "frame size after sum-pooling the 128x128 sensor"))
    g.add_argument("--dvs-split", dest="split_by", type=checked("split_by"),
                   metavar="{" + ",".join(DVS_SPLITS) + "}",
                   help=option_help("split_by", "cut recordings into T frames of equal event count or duration"))
    g.add_argument("--dvs-split-rule", dest="split_rule", type=checked("split_rule"),
                   metavar="{" + ",".join(SPLIT_RULES) + "}",
                   help=option_help("split_rule", "where the leftover events and time go: spread over the first "
                                                  "frames (even), or SpikingJelly's rule, to compare with papers "
                                                  "that used it"))
    g.add_argument("--dvs-resize", dest="resize", type=checked("resize"), metavar="{" + ",".join(RESIZE_MODES) + "}",
                   help=option_help("resize", "how the 128x128 sensor becomes --dvs-size pixels: sum-pooling, or "
                                              "bilinear interpolation as several later papers do"))
    g.add_argument("--image-size", dest="image_size", type=checked("image_size"),
                   help=option_help("image_size", "side of the square images, in pixels"))
    g.add_argument("--workers", type=checked("workers"),
                   help=option_help("workers", "processes decoding images ahead of the step (0: in the training "
                                               "process)"))
    g.add_argument("--no-augment", dest="augment", action="store_false", help="no random crop / flip")
    g.add_argument("--limit-train", dest="limit_train", type=checked("limit_train"),
                   help="use only the first N training images (default: all)")
    g.add_argument("--limit-test", dest="limit_test", type=checked("limit_test"),
                   help="use only the first N test images (default: all)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=checked("epochs"),
                   help=f"epochs {default('epochs')}; with --resume, more than the run has done extends it, "
                        "and the cosine schedule is recomputed over the new total from the current step on")
    g.add_argument("--batch-size", dest="batch_size", type=checked("batch_size"), help=default("batch_size"))
    g.add_argument("--eval-batch-size", dest="eval_batch_size", type=checked("eval_batch_size"),
                   help=f"batch size of the test pass {default('eval_batch_size')}")
    g.add_argument("--optimizer", type=checked("optimizer"), metavar="{" + ",".join(OPTIMIZERS) + "}",
                   help=default("optimizer"))
    g.add_argument("--lr", type=checked("lr"), help=f"peak learning rate, > 0 {default('lr')}")
    g.add_argument("--min-lr", dest="min_lr", type=checked("min_lr"),
                   help=f"learning rate at the end of the cosine decay {default('min_lr')}")
    g.add_argument("--momentum", type=checked("momentum"), help=f"sgd only, in [0, 1) {default('momentum')}")
    g.add_argument("--weight-decay", dest="weight_decay", type=checked("weight_decay"),
                   help=f"L2 weight decay, >= 0 {default('weight_decay')}")
    g.add_argument("--warmup-epochs", dest="warmup_epochs", type=checked("warmup_epochs"),
                   help=f"linear warm-up before the cosine decay {default('warmup_epochs')}")
    g.add_argument("--sync-norm", dest="sync_norm", action="store_true",
                   help="under mpiexec: tdBN statistics over the whole batch of all ranks (default: each rank's "
                        "own rows)")
    g.add_argument("--seed", type=checked("seed"), help=f"initialisation, batch order and augmentation "
                                                        f"{default('seed')}")
    g = p.add_argument_group("the run")
    g.add_argument("--out", type=checked("out"), help=f"the run folder: checkpoint, metrics, pictures "
                                                      f"{default('out')}")
    g.add_argument("--resume", action="store_true", default=False,
                   help="continue the run in --out from its last.npz, writing only there; flags that would "
                        "change the experiment are refused (allowed: "
                        + ", ".join(FLAGS[key] for key in RESUMABLE) + ")")
    g.add_argument("--overwrite", action="store_true", default=False,
                   help="start a new run in an --out that holds one, deleting the old run's files")
    g.add_argument("--device", type=checked("device"),
                   help="cpu | cuda | cuda:N (default: $MINISNN_DEVICE, else cpu; with --resume the run's own)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def train_command(args):
    from .train import train
    given = {key: value for key, value in vars(args).items() if key not in ("command", "resume", "overwrite")}
    for group, table in (("model_args", MODEL_OPTIONS), ("dataset_args", DATASET_OPTIONS)):
        options = {key: given.pop(key) for key in sorted(set().union(*table.values())) if key in given}
        if options:
            given[group] = options
    history = train(resume=args.resume, overwrite=args.overwrite, **given)
    if world().rank == 0:                                  # [dist] one summary line for the job
        print(json.dumps(history[-1]))
    return 0


def eval_command(args):
    from .evaluate import evaluate_checkpoint
    evaluate_checkpoint(args.checkpoint, data_dir=getattr(args, "data_dir", None),
                        device=getattr(args, "device", None), limit_test=getattr(args, "limit_test", None),
                        eval_batch_size=getattr(args, "eval_batch_size", None), out=getattr(args, "out", None))
    return 0


def export_command(args):
    from .nir_export import export_checkpoint
    export_checkpoint(args.checkpoint, args.out, dt=args.dt, data_dir=args.data_dir, input_gain=args.input_gain)
    return 0


def doctor_command(args):
    """Print what minisnn finds on this machine; exit status 1 when a setting is bad or a device asked for
    does not work."""
    from .doctor import report
    lines, ok = report()
    print("\n".join(lines))
    return 0 if ok else 1


def bench_command(args):
    from .bench import bench_command as run_bench
    return run_bench(args)


def build_parser():
    parser = Parser(prog="minisnn", description="Train and inspect spiking networks (STBP-tdBN).")
    parser.add_argument("--version", action="version", version=f"minisnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train_args(sub.add_parser("train", help="train a model, or continue a run (--resume)",
                                  argument_default=argparse.SUPPRESS))
    p = sub.add_parser("eval", argument_default=argparse.SUPPRESS,
                       help="score a checkpoint on its test split: accuracy, per-layer firing rates and SOPs, "
                            "pictures")
    p.add_argument("checkpoint", help="a run's last.npz")
    p.add_argument("--data-dir", dest="data_dir", type=checked("data_dir"), help="(default: the run's)")
    p.add_argument("--device", type=checked("device"),
                   help="cpu | cuda | cuda:N (default: $MINISNN_DEVICE, else the run's)")
    p.add_argument("--limit-test", dest="limit_test", type=checked("limit_test"),
                   help="score only the first N test images (default: the run's limit)")
    p.add_argument("--eval-batch-size", dest="eval_batch_size", type=checked("eval_batch_size"),
                   help="(default: the run's)")
    p.add_argument("--out", type=checked("out"),
                   help="folder for layers.json and the pictures (default: eval/ beside the checkpoint)")
    p = sub.add_parser("export", help="write a checkpoint's network, tdBN folded, as a NIR graph (needs the nir extra)")
    p.add_argument("checkpoint")
    p.add_argument("out", help="the .nir file to write")
    p.add_argument("--dt", type=as_type(number(0, low_open=True), "dt"), default=1e-4,
                   help="NIR time step: tau = dt / (1 - tau_decay) (default: 1e-4)")
    p.add_argument("--data-dir", help="folder of the checkpoint's data set (gives the input shape)")
    p.add_argument("--input-gain", choices=("r", "weights"), default="r",
                   help="where the LIF's input gain 1/(1 - tau_decay) goes: NIR's r (default; snnTorch) or the "
                        "weights feeding each LIF, with r = 1 (Norse, which ignores r)")
    add_bench_args(sub.add_parser("bench", help="time a training step and its peak memory, against a PyTorch peer"))
    sub.add_parser("doctor", help="versions, BLAS and threads, the device, and a kernel run on each GPU")
    return parser


def one_line(err):
    """An exception as the one line the user sees."""
    if isinstance(err, OSError) and not isinstance(err, (DatasetError, CheckpointError)):
        path = err.filename2 or err.filename  # a rename's target, not the temporary file beside it
        what = f"cannot access {path}" if path else "a file operation failed"
        return f"{what}: {err.strerror or err}; check the path, its permissions and the free disk space"
    return " ".join(str(err).split())


def main(argv=None):
    """Run the command line; returns the exit status (argparse's too: 0 for --help, 2 for a bad flag)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:
        return done.code
    commands = {"train": train_command, "eval": eval_command, "export": export_command, "bench": bench_command,
                "doctor": doctor_command}
    from .train import TrainingDiverged
    try:
        if args.command != "doctor":  # the doctor reports a bad setting instead
            check_settings()
        return commands[args.command](args)
    except TrainingDiverged as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (minisnn eval ... | head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (ConfigError, DeviceError, DatasetError, CheckpointError, OSError, ImportError, ValueError,
            NotImplementedError, DistError, BenchmarkFailed) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        abort_other_ranks(EXIT_ERROR)  # [dist] under mpiexec the other ranks would wait for this one
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
