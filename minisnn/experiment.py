"""The run configuration: what an experiment is, how each value is checked, and how it becomes data and a model.

One source of truth for ``train``, ``eval``, ``export`` and the command line: the defaults (``DEFAULTS``),
the choices (``MODELS``, ``DATASETS``, ``OPTIMIZERS``, the per-model and per-data-set options), the range
of every value (``CHECKS``), the command-line flag that sets each key (``FLAGS``) and which keys a resumed
run may change (``RESUMABLE``). ``make_config`` checks a whole configuration and raises ``ConfigError``
naming the flag and what to do; the CLI's argparse types call the same checks.
"""
import argparse
import dataclasses
import inspect
import math
import os

from .backend import ENV_VAR, DeviceError, get_device, xp_for
from .data import DATASETS, Dataset, get_dataset
from .data.cifar10 import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, TEST_FILE, cifar10_folder,
                           read_batch)
from .data.cifar10_dvs import RESIZE_MODES, SPLIT_RULES
from .data.transforms import crop_and_flip
from .models import MODELS, build_model
from .models.plain import NORMS

OPTIMIZERS = ("sgd", "adam")
DVS_SPLITS = ("number", "time")
# The options (keyword arguments of the builder) each model and data set takes from the command line.
MODEL_OPTIONS = {"resnet19": (), "resnet34": (), "resnet50": (), "resnet34_imagenet": (),
                 "resnet_small": ("width", "blocks", "strides"),
                 "plain": ("width", "depth", "norm")}
DATASET_OPTIONS = {"cifar10": (), "digits": (), "cifar10-dvs": ("size", "split_by", "split_rule", "resize"),
                   "imagefolder": ("image_size", "workers")}
DOWNLOADABLE = ("cifar10",)

DEFAULTS = {
    "model": "resnet19", "model_args": {}, "dataset": "cifar10", "dataset_args": {}, "data_dir": None,
    "download": False, "T": 2, "batch_size": 64, "eval_batch_size": 256, "epochs": 1, "optimizer": "sgd",
    "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "warmup_epochs": 0, "min_lr": 0.0, "seed": 0,
    "device": None, "out": "runs/default", "augment": True, "limit_train": None, "limit_test": None,
    "progress": True, "sync_norm": False,
}
# Keys a resumed run may change: where it runs and is written, how it is shown, and how long it trains.
RESUMABLE = ("out", "device", "progress", "epochs", "data_dir", "download", "eval_batch_size")

# The flag that sets each configuration key (model and data-set options by their own names).
FLAGS = {
    "model": "--model", "dataset": "--dataset", "data_dir": "--data-dir", "download": "--download", "T": "-T",
    "batch_size": "--batch-size", "eval_batch_size": "--eval-batch-size", "epochs": "--epochs",
    "optimizer": "--optimizer", "lr": "--lr", "momentum": "--momentum", "weight_decay": "--weight-decay",
    "warmup_epochs": "--warmup-epochs", "min_lr": "--min-lr", "seed": "--seed", "device": "--device",
    "out": "--out", "augment": "--no-augment", "limit_train": "--limit-train", "limit_test": "--limit-test",
    "progress": "--no-progress",
    "width": "--width", "blocks": "--blocks", "strides": "--strides", "depth": "--depth", "norm": "--norm",
    "size": "--dvs-size", "split_by": "--dvs-split", "split_rule": "--dvs-split-rule", "resize": "--dvs-resize",
    "image_size": "--image-size", "workers": "--workers", "sync_norm": "--sync-norm",
}


class ConfigError(ValueError):
    """A configuration value, or a combination of them, that cannot make a run."""


# ------------------------------------------------------------------------------ checking values
def integer(low, high=None):
    """A check for an integer in [low, high] (high None: no upper bound); accepts int or its text."""
    where = f">= {low}" if high is None else f"in {low}..{high}"

    def check(value):
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"must be an integer {where}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
            raise ValueError(f"must be an integer {where}, got {value!r}")
        value = int(value)
        if value < low or high is not None and value > high:
            raise ValueError(f"must be an integer {where}, got {value}")
        return value
    return check


def number(low, high=None, low_open=False, high_open=False):
    """A check for a finite real number in the interval from low to high (open ends as asked)."""
    where = f"{'>' if low_open else '>='} {low:g}" if high is None else \
        f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(value):
        if isinstance(value, bool):
            raise ValueError(f"must be a number {where}, got {value!r}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number {where}, got {value!r}") from None
        if not math.isfinite(value) or value < low or low_open and value == low or \
                high is not None and (value > high or high_open and value == high):
            raise ValueError(f"must be a number {where}, got {value:g}")
        return value
    return check


def choice(options):
    """A check for one of ``options``."""
    def check(value):
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return value
    return check


def optional(check):
    """``check``, or None."""
    return lambda value: None if value is None else check(value)


def sequence(check):
    """A non-empty list of values that each pass ``check`` (kept as ``.each`` for parsers that read one
    value at a time)."""
    def check_all(values):
        if isinstance(values, str) or not hasattr(values, "__iter__") or len(values) == 0:
            raise ValueError(f"must be a non-empty list, got {values!r}")
        return [check(v) for v in values]
    check_all.each = check
    return check_all


def flag(value):
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {value!r}")
    return value


def text(value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def as_type(check, name):
    """An argparse type from a check that raises ValueError with the reason (shown in argparse's error)."""
    def parse(text):
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = name
    return parse


def device_name(value):
    """The device asked for (None: $MINISNN_DEVICE, whose bad value is the variable's error, not --device's)."""
    if value is None:
        return get_device(None)
    try:
        return get_device(value)
    except DeviceError as err:
        raise ValueError(str(err)) from None


CHECKS = {
    "model": choice(tuple(MODELS)), "dataset": choice(tuple(DATASETS)), "data_dir": optional(text),
    "download": flag, "T": integer(1), "batch_size": integer(1), "eval_batch_size": integer(1),
    "epochs": integer(1), "optimizer": choice(OPTIMIZERS), "lr": number(0, low_open=True),
    "momentum": number(0, 1, high_open=True), "weight_decay": number(0), "warmup_epochs": integer(0),
    "min_lr": number(0), "seed": integer(0), "device": device_name, "out": text, "augment": flag,
    "limit_train": optional(integer(1)), "limit_test": optional(integer(1)), "progress": flag,
    "sync_norm": flag,
}
OPTION_CHECKS = {
    "width": integer(1), "blocks": sequence(integer(1)), "strides": sequence(integer(1)), "depth": integer(1),
    "norm": choice(NORMS), "size": integer(1, 128), "split_by": choice(DVS_SPLITS),
    "split_rule": choice(SPLIT_RULES), "resize": choice(RESIZE_MODES), "image_size": integer(8, 4096),
    "workers": integer(0, 64),
}


def option_default(builder, name):
    """The default of option ``name`` of a model or data-set builder, read from its signature (a tuple
    as a list, the form a checked config holds)."""
    default = inspect.signature(builder).parameters[name].default
    return list(default) if isinstance(default, tuple) else default


def _checked(key, value):
    try:
        return (CHECKS[key] if key in CHECKS else OPTION_CHECKS[key])(value)
    except ValueError as err:
        raise ConfigError(f"{FLAGS[key]} {err}") from None


def _options(kind, name, given, table):
    """Check the model or data-set options ``given`` for builder ``name``: known and applicable."""
    if not isinstance(given, dict):
        raise ConfigError(f"{kind}_args must be a dict of options, got {given!r}")
    unknown = sorted(set(given) - set(OPTION_CHECKS))
    if unknown:
        known = sorted(set().union(*table.values()))
        raise ConfigError(f"unknown {kind} options {unknown}; the {kind}s take {', '.join(known)}")
    misplaced = [key for key in given if key not in table[name]]
    if misplaced:
        users = {key: [n for n, keys in table.items() if key in keys] for key in misplaced}
        raise ConfigError("; ".join(f"{FLAGS[key]} applies to --{kind} {' or '.join(users[key])}, not {name}"
                                    for key in misplaced) +
                          f"; drop {'it' if len(misplaced) == 1 else 'them'} or choose another --{kind}")
    return {key: _checked(key, value) for key, value in given.items()}


def _check(config, given):
    """Check every value of a full config, then the rules that tie values together."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known: {sorted(DEFAULTS)}")
    config = {key: value if key.endswith("_args") else _checked(key, value) for key, value in config.items()}
    config["model_args"] = _options("model", config["model"], config["model_args"], MODEL_OPTIONS)
    config["dataset_args"] = _options("dataset", config["dataset"], config["dataset_args"], DATASET_OPTIONS)
    if config["warmup_epochs"] >= config["epochs"]:
        raise ConfigError(f"--warmup-epochs ({config['warmup_epochs']}) must be less than --epochs "
                          f"({config['epochs']}); lower --warmup-epochs or raise --epochs")
    if config["min_lr"] > config["lr"]:
        raise ConfigError(f"--min-lr ({config['min_lr']:g}) must not exceed --lr ({config['lr']:g}); lower --min-lr")
    if "momentum" in given and config["optimizer"] != "sgd":
        raise ConfigError(f"--momentum applies to --optimizer sgd, not {config['optimizer']}; drop it")
    if config["download"] and config["dataset"] not in DOWNLOADABLE:
        raise ConfigError(f"--download applies to --dataset {' or '.join(DOWNLOADABLE)}, not "
                          f"{config['dataset']} (digits come with scikit-learn; CIFAR10-DVS is fetched by hand, "
                          "see the README); drop --download")
    options = config["model_args"]
    if "strides" in options:
        blocks = options.get("blocks", option_default(MODELS[config["model"]], "blocks"))
        if len(options["strides"]) != len(blocks):
            raise ConfigError(f"--strides gives {len(options['strides'])} strides for {len(blocks)} stages "
                              f"(--blocks {' '.join(map(str, blocks))}); give one stride per stage")
    return config


def make_config(**overrides):
    """A checked run configuration: ``DEFAULTS`` updated with ``overrides``.

    Raises ConfigError (naming the flag) for an unknown key, a value out of range, an option that does
    not apply to the chosen model or data set, or values that contradict each other.
    """
    return _check(dict(DEFAULTS, **overrides), overrides)


def saved_config(config):
    """A configuration stored in a checkpoint, completed with today's defaults and checked."""
    return _check(dict(DEFAULTS, **config), {})


def changed_keys(saved, config):
    """The keys outside ``RESUMABLE`` on which two checked configs differ."""
    return [key for key in DEFAULTS if key not in RESUMABLE and saved[key] != config[key]]


def resumed_config(saved, given):
    """The configuration of a resumed run: the checked ``saved`` config with the keys of ``given``.

    Keys in ``RESUMABLE`` take the given value. Any other key may be given only with the value the run
    already has (a model or data-set option left out of the run has its builder's default); otherwise
    ConfigError names every flag that would change the experiment and what the run has.
    """
    changed = []
    for key, value in given.items():
        if key in ("model_args", "dataset_args"):
            chosen = "model" if key == "model_args" else "dataset"
            table, builder = (MODEL_OPTIONS, MODELS) if key == "model_args" else (DATASET_OPTIONS, DATASETS)
            for option, option_value in value.items():
                if option not in table[saved[chosen]]:
                    changed.append(f"{FLAGS[option]} (not an option of the run's {saved[chosen]})")
                    continue
                has = saved[key].get(option, option_default(builder[saved[chosen]], option))
                if _checked(option, option_value) != has:
                    changed.append(f"{FLAGS[option]} (the run has {option} = {has})")
        elif key not in RESUMABLE and _checked(key, value) != saved[key]:
            changed.append(f"{FLAGS[key]} (the run has {key} = {saved[key]})")
    if changed:
        raise ConfigError(f"--resume continues the run as it was set up, but {', '.join(changed)} would "
                          f"change it; drop {'this flag' if len(changed) == 1 else 'these flags'}, or start "
                          "a new run in another --out")
    merged = dict(saved, **given)
    for key in ("model_args", "dataset_args"):
        merged[key] = dict(saved[key], **given.get(key, {}))
    return _check(merged, given)


def usable_device(requested, saved):
    """The device to run a saved run on: ``requested``, else ``$MINISNN_DEVICE``, else the saved one.

    Raises DeviceError; when the saved device is the one that cannot be used here, the message says to
    run on the CPU with --device cpu.
    """
    asked = requested if requested is not None else os.environ.get(ENV_VAR)
    device = get_device(asked if asked is not None else saved)
    try:
        xp_for(device)
    except DeviceError as err:
        if asked is not None:
            raise
        reason = " ".join(str(err).split()).split(". ")[0]  # the first sentence: what is missing
        raise DeviceError(f"this run was saved on {device}, which this machine cannot use ({reason}); run it "
                          "on the CPU with --device cpu, or see minisnn doctor for what the GPU needs") from None
    return device


# ------------------------------------------------------------------------------ data and model
def limit(data, limit_train=None, limit_test=None):
    """The data set cut to its first ``limit_train`` / ``limit_test`` examples (for quick runs)."""
    return dataclasses.replace(data, train_x=data.train_x[:limit_train], train_y=data.train_y[:limit_train],
                               test_x=data.test_x[:limit_test], test_y=data.test_y[:limit_test])


def _cifar10_test_split(data_dir, download):
    """CIFAR-10 with only its test batch read (an empty training split): what eval and export need."""
    test_x, test_y = read_batch(cifar10_folder(data_dir, download) / TEST_FILE)
    return Dataset("cifar10", test_x[:0], test_y[:0], test_x, test_y, CIFAR10_CLASSES, CIFAR10_MEAN,
                   CIFAR10_STD, augment=crop_and_flip)


def load_data(config):
    """The config's data set, cut to ``limit_train`` / ``limit_test`` examples. Event data sets take
    their number of frames from the config's T. With ``limit_train`` 0, CIFAR-10's training batches are
    not read at all, so ``eval`` and ``export`` need only ``test_batch``."""
    if config["dataset"] == "cifar10" and config["limit_train"] == 0:
        data = _cifar10_test_split(config["data_dir"], config["download"])
    else:
        options = dict(config["dataset_args"])
        if config["dataset"] == "cifar10-dvs":
            options.update(T=config["T"], progress=config["progress"])
        data = get_dataset(config["dataset"], data_dir=config["data_dir"], download=config["download"],
                           **options)
    return limit(data, config["limit_train"], config["limit_test"])


def model_for(config, data):
    """The model a config describes, shaped for the data set, on the config's device."""
    model_args = dict(config["model_args"], num_classes=data.num_classes, in_channels=data.in_channels,
                      T=config["T"], seed=config["seed"])
    return build_model(config["model"], **model_args).to(config["device"])


def model_input(images, xp):
    """A host batch on the device, in the model's layout: images [N, C, H, W] as they are, event
    frames [N, T, C, H, W] turned time-major to [T, N, C, H, W]."""
    x = xp.asarray(images)
    return xp.ascontiguousarray(x.transpose(1, 0, 2, 3, 4)) if x.ndim == 5 else x
