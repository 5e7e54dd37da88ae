"""The training loop: data -> spiking model -> cross-entropy on the mean over T -> STBP -> update.

``train(...)`` runs a whole job in the run folder ``out``: it builds the data set and the model from the
config (``minisnn.experiment``), trains with a tqdm progress bar (loss, accuracy, mean firing rate,
images/s), evaluates every epoch, and after every epoch writes ``last.npz`` (model, optimizer, schedule,
position, config, history) and ``metrics.jsonl``, each atomically; ``curves.png`` when it stops.

The run folder is the run. ``train(...)`` refuses to start a new run in a folder that holds one unless
``overwrite=True``; ``train(resume=True, out=...)`` continues the run in ``out`` from ``out/last.npz``,
whatever folder it was trained in before, and writes only there. A resumed run keeps its experiment
(``experiment.RESUMABLE`` lists what may change); a larger ``epochs`` extends it, and the cosine schedule
is then the one a run of that many epochs has: from the current step on, the learning rate follows the
longer curve (so a finished run's learning rate rises again to that curve's value). Resuming is bit for
bit on the CPU: batch order and augmentation of step s of epoch e come from a generator seeded with
(seed, e, s), and the running sums of an interrupted epoch are saved, so its metrics equal an
uninterrupted run's.

A non-finite loss or parameter after a step (read with the step's other figures), or a NaN or infinity
in any parameter, buffer or optimizer slot before a checkpoint is written, stops training with
``TrainingDiverged``: the message names what went wrong and which checkpoint, if any, is the last good
one, which is left alone. Ctrl-C finishes the step in flight, saves the position reached
(``interrupted`` in the meta) and raises KeyboardInterrupt; a second Ctrl-C stops at once and keeps the
last checkpoint as it was.

Under ``mpiexec -n K`` the K processes train one model data-parallel (``minisnn/dist``, the lines marked
[dist]): each takes its rows of every batch, one allreduce per step sums the gradients, rank 0 alone
writes files; ``sync_norm`` takes tdBN's statistics over all ranks. K = 1 is the ordinary run.
"""
import dataclasses
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

from tqdm import tqdm

from .backend import as_numpy, xp_for
from .checkpoint import (CheckpointError, atomic_write, finite_flags, load_checkpoint, nearest_existing,
                         read_meta, remove_stale_temps, save_checkpoint, scalars)
from .core import Tensor
from .dist import DataParallel, world
from .evaluate import EVAL_FILES, EVAL_FOLDER, evaluate
from .experiment import (DEFAULTS, ConfigError, changed_keys, load_data, make_config, model_for, model_input,
                         resumed_config, saved_config, usable_device)
from .fast import version_of
from .functions.loss import softmax_cross_entropy
from .monitor import FiringRates
from .optim import SGD, Adam, CosineSchedule

CHECKPOINT = "last.npz"
RUN_FILES = (CHECKPOINT, "metrics.jsonl", "config.json", "curves.png")  # what a run writes into its folder


class TrainingDiverged(RuntimeError):
    """The loss, a parameter, a buffer or an optimizer slot became NaN or infinite."""


def state_arrays(model, optimizer):
    """(name, array) of everything a checkpoint keeps that a step changes: parameters, buffers and
    optimizer slots (named after their parameter, e.g. ``m of stem.0.conv.weight``)."""
    names = [name for name, _ in model.named_parameters()]
    named = [(name, p.data) for name, p in model.named_parameters()]
    named += [(name, getattr(module, attr)) for name, module, attr in model.named_buffers()]
    for slot in optimizer.slot_names():
        named += [(f"{slot} of {names[i]}", array) for i, array in enumerate(getattr(optimizer, slot))
                  if array is not None]
    return named


def saved_position(path, meta, steps_per_epoch=None):
    """Where a checkpoint's run stands, checked: (epoch, step, history, sums) from its meta; the step must
    lie within an epoch of ``steps_per_epoch`` steps (a Ctrl-C after an epoch's last step saves step =
    steps_per_epoch, before its evaluation). Raises CheckpointError for anything else."""
    epoch, step, history, sums = meta.get("epoch"), meta.get("step"), meta.get("history"), meta.get("sums", {})
    counts = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (epoch, step))
    if not (counts and isinstance(history, list) and isinstance(sums, dict)) or \
            steps_per_epoch is not None and step > steps_per_epoch:
        raise CheckpointError(f"{path}: its meta does not say where the run stands (epoch {epoch!r}, step {step!r}"
                              f"{f' of {steps_per_epoch}' if steps_per_epoch else ''}, history a "
                              f"{type(history).__name__}, sums a {type(sums).__name__}); it was not written by "
                              "minisnn train or was edited: use another copy of the run")
    return epoch, step, history, sums


# ------------------------------------------------------------------------------------- the job
class Trainer:
    """Holds what a run needs: config, data, model, optimizer, schedule, position and history.

    It writes into ``config["out"]`` as told; ``train()`` is the job that guards the folder (no new run
    over an old one, resume only from the folder's own checkpoint).
    """

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
        if config["optimizer"] == "sgd":  # version_of: the fused update kernels on the GPU
            self.optimizer = version_of(SGD, params[0].data)(params, lr=config["lr"], momentum=config["momentum"],
                                                             weight_decay=config["weight_decay"])
        else:
            self.optimizer = version_of(Adam, params[0].data)(params, lr=config["lr"],
                                                              weight_decay=config["weight_decay"])
        self.steps_per_epoch = len(self.train_loader)
        self.schedule = CosineSchedule(self.optimizer, total_steps=self.steps_per_epoch * config["epochs"],
                                       warmup_steps=self.steps_per_epoch * config["warmup_epochs"],
                                       min_lr=config["min_lr"])
        self.epoch, self.step, self.history = 0, 0, []
        self.sums = self.empty_sums()
        self.last_good = None  # what the folder's checkpoint of this run holds, in words; None: none yet
        self.stop_requested, self.mid_step = False, False
        if resume:
            self.load(self.out / CHECKPOINT)

    @staticmethod
    def empty_sums():
        """Running sums of the epoch in progress: images, loss x images, correct answers, rate x images."""
        return {"seen": 0, "loss_sum": 0.0, "correct": 0, "rate_sum": 0.0, "seconds": 0.0}

    # -- checkpoints ----------------------------------------------------------------------------
    def position(self):
        """Where training stands, in words."""
        if self.step == 0:
            return f"end of epoch {self.epoch}" if self.epoch else "the start, before the first step"
        return f"epoch {self.epoch + 1}, step {self.step} of {self.steps_per_epoch}"

    def save(self, interrupted=False):
        self.check_state()
        sums = dict(self.dp.sum_over_ranks(self.sums), seconds=self.sums["seconds"])  # [dist] all ranks' rows
        if not self.dp.is_writer:                                                # [dist] rank 0 writes
            self.last_good = self.position() + (" (saved at Ctrl-C)" if interrupted else "")
            return
        path = self.out / CHECKPOINT
        meta = {"config": self.config, "epoch": self.epoch, "step": self.step, "sums": sums,
                "history": self.history, "interrupted": interrupted, "format": "minisnn-checkpoint-1",
                "train_images": len(self.data.train_y)}
        try:
            save_checkpoint(path, meta, model=self.model.state_dict(), optim=self.optimizer.state_dict(),
                            sched=self.schedule.state_dict())
        except OSError as err:
            raise CheckpointError(f"cannot write {path}: {err.strerror or err}; {self.last_good_words()}. "
                                  "Free disk space or fix the folder's permissions, then continue with "
                                  "--resume") from err
        self.last_good = self.position() + (" (saved at Ctrl-C)" if interrupted else "")

    def load(self, path):
        state = load_checkpoint(path)
        meta = state["meta"]
        saved = saved_config(meta["config"])
        changed = changed_keys(saved, self.config)
        if changed:
            raise CheckpointError(f"{path} was saved by a run with other settings ({', '.join(changed)}); "
                                  "resume it with its own settings")
        images = meta.get("train_images", len(self.data.train_y))  # (checkpoints before it: not checked)
        if images != len(self.data.train_y):
            where = self.config["data_dir"] or "the default data folder"
            raise CheckpointError(f"{path} was trained on {images} training images, but the data in {where} "
                                  f"gives {len(self.data.train_y)}; give the --data-dir of the run's own data")
        epoch, step, history, sums = saved_position(path, meta, self.steps_per_epoch)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(scalars(state["optim"]))
            self.schedule.load_state_dict(scalars(state["sched"]))
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path} does not fit the run its config describes (model, optimizer and "
                                  f"schedule state): {type(err).__name__}: {err}") from err
        self.epoch, self.step, self.history = epoch, step, history
        if self.dp.is_writer:                              # [dist] the saved sums are all ranks': rank 0 keeps them
            self.sums = dict(self.empty_sums(), **sums)
        self.last_good = self.position() + (" (saved at Ctrl-C)" if meta.get("interrupted") else "")

    def last_good_words(self):
        """Which checkpoint of this run is the last good one, in words, for messages."""
        if self.last_good is None:
            return "no checkpoint of this run has been written yet (the first one comes at the end of epoch 1)"
        return f"the last good checkpoint is {self.out / CHECKPOINT} ({self.last_good}), left as it was"

    def write_metrics(self):
        if not self.dp.is_writer:                                                # [dist] rank 0 writes
            return
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write(self.out / "metrics.jsonl", lambda f: f.write(text.encode()))

    # -- the loop -------------------------------------------------------------------------------
    def read_step(self, loss, logits, labels, rates, lr, batch_loss=None):
        """Every read from the device that a training step makes, in one place, as one transfer.

        The loss, the number of correct answers, the mean firing rate (``rates``, a ``FiringRates``
        monitor) and the optimizer's flag for a NaN or infinity in the updated parameters
        (``optimizer.nonfinite()``; on the GPU the fused update kernels raise it at no extra launch)
        come back together. ``batch_loss``: under mpiexec, the whole batch's mean loss over all ranks,
        used in place of this rank's (so that every rank stops together). Raises TrainingDiverged if the
        loss or a parameter is not finite. Returns (loss, correct, rate).
        """
        dtype = loss.data.dtype  # float32 figures on the float32 path: no float64 array on the device
        correct = (logits.data.argmax(axis=1) == labels).sum()
        figures = self.xp.stack([loss.data, correct.astype(dtype), rates.mean().astype(dtype),
                                 self.optimizer.nonfinite().astype(dtype)])
        loss_value, correct_count, rate, nonfinite = as_numpy(figures).tolist()
        if batch_loss is not None:                                               # [dist]
            loss_value = batch_loss
        if not math.isfinite(loss_value) or nonfinite:
            what = f"the loss became {loss_value}" if not math.isfinite(loss_value) else self.nonfinite_words()
            raise self.diverged(f"at epoch {self.epoch + 1}, step {self.step + 1} (lr {lr:.3g}): {what}")
        return loss_value, int(correct_count), rate

    def check_state(self):
        """Before a checkpoint is written: every parameter, buffer and optimizer slot must be finite
        (``finite_flags``, read once), so that no checkpoint ever holds NaN or infinity."""
        if not as_numpy(finite_flags([array for _, array in state_arrays(self.model, self.optimizer)])).all():
            raise self.diverged(f"before its checkpoint at {self.position()}: {self.nonfinite_words()}")

    def nonfinite_words(self):
        """The parameters, buffers and optimizer slots that hold NaN or infinity, in words."""
        named = state_arrays(self.model, self.optimizer)
        flags = as_numpy(finite_flags([array for _, array in named]))
        bad = [name for (name, _), ok in zip(named, flags) if not ok] or ["a parameter"]
        return f"{', '.join(bad[:3])}{f' and {len(bad) - 3} more' if len(bad) > 3 else ''} became NaN or infinite"

    def diverged(self, where_and_what):
        return TrainingDiverged(
            f"training diverged {where_and_what}; {self.last_good_words()}. Resuming would repeat the same steps: "
            "start again with a lower --lr (--overwrite replaces this run), or check the input data")

    def train_epoch(self):
        """Train from (self.epoch, self.step) to the end of the epoch, then move to the next one.

        Returns the epoch's mean loss, accuracy and firing rate over all its images (those before a
        resume included) and its training seconds.
        """
        cfg, xp, sums = self.config, self.xp, self.sums
        bar = tqdm(total=self.steps_per_epoch, initial=self.step, desc=f"epoch {self.epoch + 1}/{cfg['epochs']}",
                   disable=not cfg["progress"], leave=False, dynamic_ncols=True)
        start, seconds_before = time.perf_counter(), sums["seconds"]
        self.model.train()
        with bar, FiringRates(self.model) as rates:
            for images, labels in self.train_loader.batches(self.epoch, start=self.step):
                self.mid_step = True
                x, y = model_input(images, xp), xp.asarray(labels)
                logits = self.model(Tensor(x))
                loss = softmax_cross_entropy(logits, y)
                lr = self.optimizer.lr
                self.optimizer.zero_grad()
                # [dist] backward, then one allreduce: the whole batch's gradient and mean loss on every rank,
                # and whether any rank had been asked to stop by then. Every rank stops after the step that
                # agreed on it: a Ctrl-C that comes later counts at the next step's allreduce, or else this
                # rank would leave while the others wait in that allreduce. Alone, a Ctrl-C stops after this step.
                batch_loss, any_stop = self.dp.backward(loss, len(labels), self.stop_requested)
                self.stop_requested = self.stop_requested or any_stop
                self.optimizer.step()
                self.schedule.step()
                loss_value, correct, rate = self.read_step(loss, logits, y, rates, lr, batch_loss)
                n = len(labels)
                sums["seen"] += n
                sums["loss_sum"] += loss_value * n
                sums["correct"] += correct
                sums["rate_sum"] += rate * n
                sums["seconds"] = seconds_before + time.perf_counter() - start
                self.step += 1
                self.mid_step = False
                if any_stop if self.dp.size > 1 else self.stop_requested:      # [dist] as agreed (above)
                    raise KeyboardInterrupt
                seen = sums["seen"]
                bar.set_postfix(loss=f"{sums['loss_sum'] / seen:.3f}", acc=f"{sums['correct'] / seen:.3f}",
                                rate=f"{sums['rate_sum'] / seen:.3f}",
                                img_s=f"{seen / max(sums['seconds'], 1e-9):.0f}")
                bar.update(1)
        totals = self.dp.sum_over_ranks(sums)                                    # [dist] all ranks' rows
        seen = totals["seen"]
        result = totals["loss_sum"] / seen, totals["correct"] / seen, totals["rate_sum"] / seen, sums["seconds"]
        self.epoch, self.step, self.sums = self.epoch + 1, 0, self.empty_sums()
        return result

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
            atomic_write(self.out / "config.json", lambda f: f.write(json.dumps(cfg, indent=2).encode()))
        try:
            while self.epoch < cfg["epochs"]:
                train_loss, train_acc, rate, seconds = self.train_epoch()
                self.dp.synchronise(self.model)          # [dist] running statistics agreed, weights checked equal
                test_loss, test_acc = self.dp.mean_over_ranks(evaluate(self.model, self.test_loader, self.xp),
                                                              self.test_loader)  # [dist] over all ranks' rows
                row = {"epoch": self.epoch, "train_loss": train_loss, "train_acc": train_acc,
                       "test_loss": test_loss, "test_acc": test_acc, "firing_rate": rate,
                       "lr": self.optimizer.lr, "seconds": seconds}
                self.history.append(row)
                self.save()
                self.write_metrics()
                if cfg["progress"]:
                    tqdm.write(f"epoch {row['epoch']}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                               f"test loss {test_loss:.4f} acc {test_acc:.4f} | rate {rate:.3f} | {seconds:.1f}s")
        except KeyboardInterrupt:
            if self.mid_step:  # stopped inside a step: weights and position may disagree
                tqdm.write(f"stopped mid-step; {self.last_good_words()}")
            else:
                self.dp.synchronise(self.model)                                  # [dist] all ranks stop here
                self.save(interrupted=True)
                if self.dp.is_writer:                                            # [dist] rank 0 saved it
                    plot_history(self.history, self.out / "curves.png")
                    tqdm.write(f"interrupted: {self.position()} saved to {self.out / CHECKPOINT}; continue with "
                               f"minisnn train --resume --out {self.out}")
            raise
        if self.dp.is_writer:                                                    # [dist] rank 0 writes
            plot_history(self.history, self.out / "curves.png")
        return self.history


def plot_history(history, path):
    """Loss and accuracy per epoch, train and test, as one PNG (drawn without pyplot: any backend);
    nothing while the history is empty."""
    if not history:
        return
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.5))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "test"):
        ax_loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
        ax_acc.plot(epochs, [row[f"{split}_acc"] for row in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend()
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.9, wspace=0.25)  # fixed: cheaper than tight
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


# ------------------------------------------------------------------------------- the run folder
def run_folder(out, resume, overwrite):
    """Check the run folder ``out`` for the job asked, and remove what a killed write left in it.

    A new run needs a folder that holds no run (or ``overwrite``); ``resume`` needs the folder's own
    checkpoint; both need a folder they can write. Raises ConfigError saying what to do. Returns the old
    run's files that ``overwrite`` replaces -- what ``minisnn eval`` wrote into ``eval/`` included, so that no
    evaluation of the old run is left beside the new one: ``train`` deletes them once the new run has its
    data and model, so that a new run that cannot start leaves the old one as it was.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a run folder; give a folder name")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues the run in "
                          "--out, --overwrite replaces it; give one")
    if resume and not (out / CHECKPOINT).exists():
        raise ConfigError(f"--resume: no run to continue in {out} (no {CHECKPOINT}); give the run's folder "
                          "with --out, or start the run without --resume")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not resume and not overwrite:
        raise ConfigError(f"--out {out} already holds a run ({', '.join(held)}); continue it with --resume, "
                          "replace it with --overwrite, or choose another --out")
    existing = nearest_existing(out)
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"--out {out}: {existing} cannot be written (permission denied or not a folder); "
                          "choose another --out or fix its permissions")
    if out.is_dir():
        remove_stale_temps(out, RUN_FILES)
    if not overwrite:
        return []
    return held + [f"{EVAL_FOLDER}/{name}" for name in EVAL_FILES if (out / EVAL_FOLDER / name).exists()]


def train(resume=False, overwrite=False, **given):
    """Run a whole training job in the run folder ``given["out"]`` (see ``experiment.DEFAULTS``).

    New run: ``given`` are the config keys to set. ``resume=True``: continue the run saved in
    ``out/last.npz``; ``given`` may hold the keys ``experiment.RESUMABLE`` allows (others only with
    the run's own values), and ``epochs`` larger than the epochs done extends the run.
    """
    out = Path(given.get("out", DEFAULTS["out"]))
    writer = world().rank == 0                               # [dist] under mpiexec, rank 0 alone keeps the folder
    if not resume:
        config = make_config(**given)
        replaced = run_folder(out, resume, overwrite) if writer else []
        trainer = Trainer(config)
        for name in replaced:                                # --overwrite: the new run has started
            (out / name).unlink()
        return trainer.fit()
    if writer:
        run_folder(out, resume, overwrite)
    meta = read_meta(out / CHECKPOINT)
    try:
        saved = saved_config(meta["config"])
    except ConfigError as err:
        raise CheckpointError(f"{out / CHECKPOINT}: its config is not valid today: {err}") from None
    device = usable_device(given.get("device"), saved["device"])
    config = resumed_config(saved, dict(given, out=str(out), device=device))
    done, _, _, _ = saved_position(out / CHECKPOINT, meta)
    if config["epochs"] <= done:
        if "epochs" in given:
            raise ConfigError(f"--epochs {config['epochs']}: the run in {out} has done {done} epochs already; "
                              f"give more than {done} to train on")
        raise ConfigError(f"the run in {out} has finished its {done} epochs; to train on, give --epochs N with "
                          f"N > {done} (the cosine schedule is then recomputed over N epochs)")
    return Trainer(config, resume=True).fit()
