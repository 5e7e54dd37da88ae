"""The training loop: data -> spiking model -> cross-entropy on the mean over T -> STBP -> update.

``train(config)`` runs a whole job: it builds the data set and the model from the config, trains with
a tqdm progress bar (loss, accuracy, mean firing rate, images/s), evaluates every epoch, appends the
epoch's metrics to ``metrics.jsonl``, plots ``curves.png`` and writes ``last.npz`` (model, optimizer,
schedule, epoch, step, config) atomically after every epoch. ``resume=True`` continues from
``last.npz`` bit for bit on the CPU: the batch order and the augmentation of step s of epoch e come
from a generator seeded with (seed, e, s), so nothing needs replaying.

Under ``mpiexec -n K`` the K processes train one model data-parallel (``minisnn/dist``, the lines marked
[dist]): each takes its rows of every batch, one allreduce per step sums the gradients, rank 0 alone
writes files; ``sync_norm`` takes tdBN's statistics over all ranks. K = 1 is the ordinary run.

A NaN or Inf loss stops training with ``TrainingDiverged`` and leaves the last good checkpoint alone.
Ctrl-C finishes the step in flight, saves the position reached (``interrupted`` in the meta) and
raises KeyboardInterrupt; a second Ctrl-C stops at once and keeps the last checkpoint as it was.
"""
import dataclasses
import json
import math
import signal
import threading
import time
from pathlib import Path

from tqdm import tqdm

from .backend import get_device, xp_for
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint, scalars
from .core import Tensor, no_grad
from .data import get_dataset
from .dist import DataParallel
from .functions.loss import softmax_cross_entropy
from .models import build_model
from .monitor import FiringRates
from .optim import SGD, Adam, CosineSchedule

DEFAULTS = {
    "model": "resnet19", "model_args": {}, "dataset": "cifar10", "dataset_args": {}, "data_dir": None,
    "download": False,
    "T": 2, "batch_size": 64, "epochs": 1, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
    "weight_decay": 5e-4, "warmup_epochs": 0, "min_lr": 0.0, "seed": 0, "device": None,
    "out": "runs/default", "augment": True, "limit_train": None, "limit_test": None,
    "eval_batch_size": 256, "progress": True, "sync_norm": False,
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def make_config(**overrides):
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    config = dict(DEFAULTS, **overrides)
    config["device"] = get_device(config["device"])
    return config


# ---------------------------------------------------------------------------------------- data
def limit(data, limit_train=None, limit_test=None):
    """The data set cut to its first ``limit_train`` / ``limit_test`` examples (for quick runs)."""
    return dataclasses.replace(data, train_x=data.train_x[:limit_train], train_y=data.train_y[:limit_train],
                               test_x=data.test_x[:limit_test], test_y=data.test_y[:limit_test])


def load_data(config):
    """The config's data set, cut to ``limit_train`` / ``limit_test`` examples. Event data sets take
    their number of frames from the config's T."""
    options = dict(config["dataset_args"])
    if config["dataset"] == "cifar10-dvs":
        options["T"] = config["T"]
    data = get_dataset(config["dataset"], data_dir=config["data_dir"], download=config["download"], **options)
    return limit(data, config["limit_train"], config["limit_test"])


def model_input(images, xp):
    """A host batch on the device, in the model's layout: images [N, C, H, W] as they are, event
    frames [N, T, C, H, W] turned time-major to [T, N, C, H, W]."""
    x = xp.asarray(images)
    return xp.ascontiguousarray(x.transpose(1, 0, 2, 3, 4)) if x.ndim == 5 else x


# ---------------------------------------------------------------------------------- evaluation
def evaluate(model, loader, xp):
    """Mean loss and accuracy of ``model`` (in eval mode, no graph) over the batches of ``loader``."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with no_grad():
        for images, labels in loader.batches():
            x, y = model_input(images, xp), xp.asarray(labels)
            logits = model(Tensor(x))
            total_loss += float(softmax_cross_entropy(logits, y).item()) * len(y)
            correct += int((logits.data.argmax(axis=1) == y).sum())
            seen += len(y)
    model.train()
    seen = max(seen, 1)
    return total_loss / seen, correct / seen


def model_for(config, data):
    """The model a config describes, shaped for the data set, on the config's device."""
    model_args = dict(config["model_args"], num_classes=data.num_classes, in_channels=data.in_channels,
                      T=config["T"], seed=config["seed"])
    return build_model(config["model"], **model_args).to(config["device"])


# ------------------------------------------------------------------------------------- the job
class Trainer:
    """Holds what a run needs: config, data, model, optimizer, schedule, position and history."""

    def __init__(self, config, resume=False):
        self.dp = DataParallel.launch(config)                                    # [dist] K ranks or one
        config = self.dp.local_config(config)                                   # [dist] this rank's GPU
        self.config = config
        self.out = Path(config["out"])
        self.xp = xp_for(config["device"])
        self.data = load_data(config)
        if not config["augment"]:
            self.data = dataclasses.replace(self.data, augment=None)
        self.train_loader = self.dp.shard(self.data.loader("train", config["batch_size"], seed=config["seed"]),
                                          training=True)                         # [dist] this rank's rows
        self.test_loader = self.dp.shard(self.data.loader("test", config["eval_batch_size"]))  # [dist]
        self.model = self.dp.prepare(model_for(config, self.data))              # [dist] sync-norm, checks
        params = self.model.parameters()
        if config["optimizer"] == "sgd":
            self.optimizer = SGD(params, lr=config["lr"], momentum=config["momentum"],
                                 weight_decay=config["weight_decay"])
        elif config["optimizer"] == "adam":
            self.optimizer = Adam(params, lr=config["lr"], weight_decay=config["weight_decay"])
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config['optimizer']!r}")
        self.steps_per_epoch = len(self.train_loader)
        self.schedule = CosineSchedule(self.optimizer, total_steps=self.steps_per_epoch * config["epochs"],
                                       warmup_steps=self.steps_per_epoch * config["warmup_epochs"],
                                       min_lr=config["min_lr"])
        self.epoch, self.step, self.history = 0, 0, []
        self.stop_requested, self.mid_step = False, False
        if resume:
            self.load(self.out / "last.npz")

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, path, interrupted=False):
        if not self.dp.is_writer:                                                # [dist] rank 0 writes
            return
        meta = {"config": self.config, "epoch": self.epoch, "step": self.step, "history": self.history,
                "interrupted": interrupted, "format": "minisnn-checkpoint-1"}
        save_checkpoint(path, meta, model=self.model.state_dict(), optim=self.optimizer.state_dict(),
                        sched=self.schedule.state_dict())

    def load(self, path):
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(scalars(state["optim"]))
        self.schedule.load_state_dict(scalars(state["sched"]))
        meta = state["meta"]
        self.epoch, self.step, self.history = meta["epoch"], meta["step"], meta["history"]

    def write_metrics(self):
        if not self.dp.is_writer:                                                # [dist] rank 0 writes
            return
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write(self.out / "metrics.jsonl", lambda f: f.write(text.encode()))

    # -- the loop -------------------------------------------------------------------------------
    def train_epoch(self):
        """Train from (self.epoch, self.step) to the end of the epoch. Returns loss, accuracy, rate."""
        cfg, xp = self.config, self.xp
        bar = tqdm(total=self.steps_per_epoch, initial=self.step, desc=f"epoch {self.epoch + 1}/{cfg['epochs']}",
                   disable=not cfg["progress"], leave=False, dynamic_ncols=True)
        seen, loss_sum, correct, rate_sum, start = 0, 0.0, 0, 0.0, time.perf_counter()
        self.model.train()
        with bar, FiringRates(self.model) as rates:
            for images, labels in self.train_loader.batches(self.epoch, start=self.step):
                self.mid_step = True
                x, y = model_input(images, xp), xp.asarray(labels)
                logits = self.model(Tensor(x))
                loss = softmax_cross_entropy(logits, y)
                self.optimizer.zero_grad()
                # [dist] backward, then one allreduce: the whole batch's gradient and mean loss on every rank
                loss_value, self.stop_requested = self.dp.backward(loss, len(labels), self.stop_requested)
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss became {loss_value} at epoch {self.epoch + 1}, step {self.step + 1} "
                        f"(lr {self.optimizer.lr:.3g}); the last good checkpoint is kept at {self.out / 'last.npz'}. "
                        "Lower the learning rate or check the input data.")
                self.optimizer.step()
                self.schedule.step()
                self.step += 1
                self.mid_step = False
                if self.stop_requested:
                    raise KeyboardInterrupt
                n = len(labels)
                seen += n
                loss_sum += loss_value * n
                correct += int((logits.data.argmax(axis=1) == y).sum())
                rate_sum += float(rates.mean()) * n
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                                rate=f"{rate_sum / seen:.3f}", img_s=f"{seen / elapsed:.0f}")
                bar.update(1)
        seen = max(seen, 1)
        return loss_sum / seen, correct / seen, rate_sum / seen, time.perf_counter() - start

    def request_stop(self, signum=None, frame=None):
        """SIGINT handler: the first Ctrl-C stops after the current step, a second one at once."""
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        tqdm.write("Ctrl-C: stopping after this step (press again to stop at once, without saving)")

    def fit(self):
        """Train to the configured number of epochs. Returns the history (one dict per epoch)."""
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self.request_stop) if in_main_thread else None
        try:
            return self._fit()
        finally:
            if in_main_thread:
                signal.signal(signal.SIGINT, previous)

    def _fit(self):
        cfg = self.config
        if self.dp.is_writer:                                                    # [dist] rank 0 writes
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg, indent=2))
        try:
            while self.epoch < cfg["epochs"]:
                train_loss, train_acc, rate, seconds = self.train_epoch()
                # [dist] metrics over all ranks' rows; running statistics agreed, weights checked equal
                train_loss, train_acc, rate = self.dp.mean_over_ranks((train_loss, train_acc, rate), self.train_loader)
                self.dp.synchronise(self.model)
                test_loss, test_acc = self.dp.mean_over_ranks(evaluate(self.model, self.test_loader, self.xp),
                                                              self.test_loader)
                row = {"epoch": self.epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                       "test_loss": test_loss, "test_acc": test_acc, "firing_rate": rate,
                       "lr": self.optimizer.lr, "seconds": seconds}
                self.history.append(row)
                self.epoch, self.step = self.epoch + 1, 0
                self.save(self.out / "last.npz")
                self.write_metrics()
                if cfg["progress"]:
                    tqdm.write(f"epoch {row['epoch']}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                               f"test loss {test_loss:.4f} acc {test_acc:.4f} | rate {rate:.3f} | {seconds:.1f}s")
        except KeyboardInterrupt:
            if self.mid_step:  # stopped inside a step: weights and position may disagree
                tqdm.write(f"stopped mid-step; the last checkpoint {self.out / 'last.npz'} is unchanged")
            else:
                self.dp.synchronise(self.model)                                  # [dist] all ranks stop here
                self.save(self.out / "last.npz", interrupted=True)
                if self.dp.is_writer:                                            # [dist] rank 0 saved it
                    tqdm.write(f"interrupted: position (epoch {self.epoch + 1}, step {self.step}) saved to "
                               f"{self.out / 'last.npz'}; continue with --resume")
            raise
        if self.dp.is_writer:                                                    # [dist] rank 0 writes
            plot_history(self.history, self.out / "curves.png")
        return self.history


def plot_history(history, path):
    """Loss and accuracy per epoch, train and test, as one PNG."""
    if not history:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("train", "test"):
        ax_loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
        ax_acc.plot(epochs, [row[f"{split}_acc"] for row in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def train(resume=False, **overrides):
    """Run a whole training job; see ``DEFAULTS`` for the keys."""
    if resume:
        out = Path(overrides.get("out", DEFAULTS["out"]))
        saved = load_checkpoint(out / "last.npz")["meta"]["config"]
        config = dict(saved, **{k: v for k, v in overrides.items() if k in ("device", "progress")})
        config["device"] = get_device(config["device"])
    else:
        config = make_config(**overrides)
    return Trainer(config, resume=resume).fit()
