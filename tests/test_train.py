"""The Trainer keeps its promises, on real CIFAR-10 images: its step learns, it uses the schedule's learning
rates, evaluation changes nothing, reported metrics are the means over the epoch's images, Ctrl-C and resume
are bit-exact (metrics included), and divergence stops training with the truth about the last checkpoint."""
import json
import math
import os
import signal
import stat
import struct
import time
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from minisnn import train as train_module
from minisnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minisnn.core import Config
from minisnn.data import crop_and_flip
from minisnn.evaluate import evaluate
from minisnn.experiment import ConfigError, make_config
from minisnn.train import Trainer, TrainingDiverged

from conftest import SAMPLE


def tiny_config(sample, out, **overrides):
    config = dict(model="resnet_small", model_args={"width": 4, "blocks": (1, 1)}, dataset="cifar10",
                  data_dir=str(sample), T=2, batch_size=16, epochs=2, optimizer="sgd", lr=0.05,
                  limit_train=48, limit_test=32, out=str(out), progress=False, seed=7)
    config.update(overrides)
    return make_config(**config)


def weights(trainer):
    return {name: p.data.copy() for name, p in trainer.model.named_parameters()}


def test_a_step_changes_every_weight_and_lowers_a_fixed_batchs_loss(cifar_sample, tmp_path):
    # one batch of 16 real images, no augmentation: every epoch is one step on the same batch, and the
    # epoch's train loss is that batch's loss just before the step
    trainer = Trainer(tiny_config(cifar_sample, tmp_path, model_args={"width": 8, "blocks": (1, 1)}, limit_train=16,
                                  augment=False, optimizer="adam", lr=0.01, epochs=12))
    before = weights(trainer)
    losses = [trainer.train_epoch()[0]]
    after = weights(trainer)
    unchanged = [name for name in before if np.array_equal(before[name], after[name])]
    assert not unchanged, f"one step left these parameters as they were: {unchanged}"
    losses += [trainer.train_epoch()[0] for _ in range(11)]
    assert losses[-1] < 0.9 * losses[0], losses  # about 2.3 -> 1.9


def test_the_learning_rates_used_are_the_schedules_and_an_extension_follows_the_longer_curve(cifar_sample, tmp_path):
    base, floor, steps, warmup = 0.05, 0.001, 3, 3  # 3 steps per epoch, 1 warm-up epoch

    def scheduled(s, epochs):  # the docstring's equation, written out again
        if s < warmup:
            return base * (s + 1) / warmup
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps * epochs - warmup)))

    def record_lrs(trainer):
        used, real_step = [], trainer.optimizer.step

        def step():
            used.append(trainer.optimizer.lr)
            real_step()
        trainer.optimizer.step = step
        return used

    config = tiny_config(cifar_sample, tmp_path, lr=base, min_lr=floor, warmup_epochs=1, epochs=3)
    trainer = Trainer(config)
    used = record_lrs(trainer)
    for _ in range(3):
        trainer.train_epoch()
    assert used == pytest.approx([scheduled(s, 3) for s in range(9)], rel=1e-12)
    trainer.save()
    longer = Trainer(dict(config, epochs=5), resume=True)
    used = record_lrs(longer)
    for _ in range(2):
        longer.train_epoch()
    assert used == pytest.approx([scheduled(s, 5) for s in range(9, 15)], rel=1e-12)


def test_evaluation_leaves_every_buffer_unchanged_and_is_repeatable(cifar_sample, tmp_path):
    trainer = Trainer(tiny_config(cifar_sample, tmp_path))
    trainer.train_epoch()  # running statistics away from their initial values
    buffers = {name: getattr(module, attr).copy() for name, module, attr in trainer.model.named_buffers()}
    assert buffers and trainer.model.training
    first = evaluate(trainer.model, trainer.test_loader, np)
    second = evaluate(trainer.model, trainer.test_loader, np)
    assert first == second
    for name, module, attr in trainer.model.named_buffers():
        np.testing.assert_array_equal(getattr(module, attr), buffers[name], err_msg=name)
    assert trainer.model.training  # the mode it had


def test_an_epochs_reported_loss_and_accuracy_are_the_means_over_its_images(cifar_sample, tmp_path, monkeypatch):
    steps, real_loss = [], train_module.softmax_cross_entropy

    def recording_loss(logits, labels):
        loss = real_loss(logits, labels)
        correct = int((logits.data.argmax(axis=1) == labels).sum())
        steps.append((float(loss.item()), correct, len(labels)))
        return loss

    monkeypatch.setattr(train_module, "softmax_cross_entropy", recording_loss)
    trainer = Trainer(tiny_config(cifar_sample, tmp_path, limit_train=40))  # batches of 16, 16 and 8 images
    rates, real_read = [], trainer.read_step

    def recording_read(*args):
        figures = real_read(*args)
        rates.append(figures[2])
        return figures

    trainer.read_step = recording_read
    start = time.perf_counter()
    train_loss, train_acc, rate, seconds = trainer.train_epoch()
    assert 0 < seconds < time.perf_counter() - start
    assert [n for _, _, n in steps] == [16, 16, 8]
    assert train_loss == pytest.approx(sum(loss * n for loss, _, n in steps) / 40, rel=1e-12)
    assert train_acc == sum(c for _, c, _ in steps) / 40
    assert 0 < rate < 1 and rate == pytest.approx(sum(r * n for r, (_, _, n) in zip(rates, steps)) / 40, rel=1e-12)


def test_the_trainer_builds_what_its_config_says(cifar_sample, tmp_path):
    sgd = Trainer(tiny_config(cifar_sample, tmp_path, optimizer="sgd", lr=0.05, momentum=0.8, weight_decay=3e-4,
                              augment=False, seed=11, eval_batch_size=8, warmup_epochs=1, min_lr=0.001))
    assert isinstance(sgd.optimizer, train_module.SGD)  # on the CPU its chunked version, fast/optim.py
    assert (sgd.optimizer.momentum, sgd.optimizer.weight_decay) == (0.8, 3e-4)
    assert (sgd.schedule.base_lr, sgd.schedule.total_steps, sgd.schedule.warmup_steps, sgd.schedule.min_lr) == (
        0.05, 6, 3, 0.001)
    assert sgd.data.augment is None and sgd.train_loader.augment is None
    assert (sgd.train_loader.seed, sgd.train_loader.batch_size, sgd.test_loader.batch_size) == (11, 16, 8)
    adam = Trainer(tiny_config(cifar_sample, tmp_path, optimizer="adam", lr=0.002, weight_decay=1e-4))
    assert isinstance(adam.optimizer, train_module.Adam) and (adam.optimizer.lr, adam.optimizer.weight_decay) == (
        0.002, 1e-4)
    assert adam.data.augment is crop_and_flip and adam.train_loader.augment is crop_and_flip


def test_resuming_refuses_a_checkpoint_of_another_experiment_or_model(cifar_sample, tmp_path):
    config = tiny_config(cifar_sample, tmp_path)
    Trainer(config).save()
    with pytest.raises(CheckpointError, match=r"was saved by a run with other settings \(lr\)"):
        Trainer(dict(config, lr=0.01), resume=True)
    state = load_checkpoint(tmp_path / "last.npz")
    state["model"]["stem.0.conv.weight"] = state["model"]["stem.0.conv.weight"][:2]
    save_checkpoint(tmp_path / "last.npz", state["meta"], model=state["model"], optim=state["optim"],
                    sched=state["sched"])
    with pytest.raises(CheckpointError, match=r"does not fit the run its config describes \(model, optimizer and "
                                              r"schedule state\): ValueError"):
        Trainer(config, resume=True)


def test_resuming_on_training_data_of_another_size_is_refused_naming_both_sizes(cifar_sample, tmp_path):
    # --data-dir may change on --resume (the data moved), but other data would change the epoch and the schedule:
    # such a run went on silently at lr 0 (its position past the new, shorter schedule's end)
    import pickle
    trainer = Trainer(tiny_config(cifar_sample, tmp_path / "run"))
    trainer.step = 2
    trainer.save(interrupted=True)
    other = tmp_path / "other" / "cifar-10-batches-py"
    other.mkdir(parents=True)
    for name in ("batches.meta", "test_batch"):
        (other / name).write_bytes((cifar_sample / "cifar-10-batches-py" / name).read_bytes())
    for i in range(1, 6):
        with open(cifar_sample / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        (other / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": batch[b"data"][:5],
                                                              b"labels": batch[b"labels"][:5]}))
    before = (tmp_path / "run" / "last.npz").read_bytes()
    with pytest.raises(CheckpointError, match=rf"trained on 48 training images, but the data in {other.parent} gives "
                                              r"25; give the --data-dir of the run's own data"):
        train_module.train(resume=True, out=str(tmp_path / "run"), data_dir=str(other.parent))
    assert (tmp_path / "run" / "last.npz").read_bytes() == before


def test_a_resumed_trainer_knows_which_checkpoint_is_the_last_good_one(cifar_sample, tmp_path):
    trainer = Trainer(tiny_config(cifar_sample, tmp_path))
    assert "no checkpoint of this run has been written yet" in trainer.last_good_words()
    trainer.step = 2
    trainer.save(interrupted=True)
    resumed = Trainer(trainer.config, resume=True)
    assert resumed.last_good_words().endswith("(epoch 1, step 2 of 3 (saved at Ctrl-C)), left as it was")
    resumed.epoch, resumed.step = 1, 0
    resumed.save()
    again = Trainer(trainer.config, resume=True)
    assert again.last_good_words().endswith("(end of epoch 1), left as it was")


def test_a_second_ctrl_c_inside_a_step_keeps_the_last_checkpoint_as_it_was(cifar_sample, tmp_path, monkeypatch):
    monkeypatch.setattr(RecordingBar, "written", [])
    monkeypatch.setattr(train_module, "tqdm", RecordingBar)
    trainer = Trainer(tiny_config(cifar_sample, tmp_path))
    trainer.model.eval()  # whatever mode the model is in, an epoch trains in training mode
    real_step, calls = trainer.optimizer.step, []

    def step():
        calls.append(1)
        if len(calls) == 5:  # epoch 2, step 2: Ctrl-C twice before the update is done
            trainer.request_stop()
            trainer.request_stop()
        real_step()

    trainer.optimizer.step = step
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.model.training
    assert RecordingBar.written == [
        "Ctrl-C: stopping after this step (press again to stop at once, without saving)",
        f"stopped mid-step; the last good checkpoint is {tmp_path / 'last.npz'} (end of epoch 1), left as it was"]
    meta = load_checkpoint(tmp_path / "last.npz")["meta"]
    assert (meta["epoch"], meta["step"], meta["interrupted"]) == (1, 0, False)
    assert signal.getsignal(signal.SIGINT) is handler  # fit put the Ctrl-C handler back


def test_ctrl_c_between_steps_saves_the_position_and_draws_the_curves(cifar_sample, tmp_path):
    trainer = Trainer(tiny_config(cifar_sample, tmp_path, epochs=3))
    trainer.epoch, trainer.history = 1, [{"epoch": 1, "train_loss": 2.3, "test_loss": 2.2, "train_acc": 0.1,
                                          "test_acc": 0.2}]  # as if resumed after its first epoch

    def interrupted(mode=True):
        raise KeyboardInterrupt

    trainer.model.train = interrupted  # the second Ctrl-C arrives as the epoch begins, before its first step
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    meta = load_checkpoint(tmp_path / "last.npz")["meta"]
    assert meta["interrupted"] and (meta["epoch"], meta["step"]) == (1, 0)
    assert (tmp_path / "curves.png").stat().st_size > 1000


class RecordingBar:
    """Stands in for tqdm: records how the trainer drives its progress bar and what it writes beside it."""
    made, written = [], []

    def __init__(self, **settings):
        self.settings, self.postfixes, self.n = settings, [], settings.get("initial", 0)
        RecordingBar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def set_postfix(self, **figures):
        self.postfixes.append(figures)

    def update(self, n):
        self.n += n

    @classmethod
    def write(cls, text):
        cls.written.append(text)


def test_the_progress_bar_counts_the_steps_and_shows_the_running_figures(cifar_sample, tmp_path, monkeypatch):
    monkeypatch.setattr(RecordingBar, "made", [])
    monkeypatch.setattr(RecordingBar, "written", [])
    monkeypatch.setattr(train_module, "tqdm", RecordingBar)
    trainer = Trainer(tiny_config(cifar_sample, tmp_path, progress=True))  # 3 steps of 16 images per epoch
    trainer.step, trainer.sums["seconds"] = 1, 100.0  # as a run resumed after its first step, 100 s into the epoch
    start = time.perf_counter()
    loss, accuracy, rate, seconds = trainer.train_epoch()
    assert 100 < seconds < 100 + time.perf_counter() - start
    (bar,) = RecordingBar.made
    assert bar.settings["total"] == 3 and bar.settings["initial"] == 1 and bar.n == 3
    assert bar.settings["desc"] == "epoch 1/2" and not bar.settings["disable"]
    # the finished bar goes away (the epoch's line of figures takes its place), and it follows a resized terminal
    assert bar.settings.get("leave") is False and bar.settings.get("dynamic_ncols") is True
    assert len(bar.postfixes) == 2 and bar.postfixes[-1] == {
        "loss": f"{loss:.3f}", "acc": f"{accuracy:.3f}", "rate": f"{rate:.3f}", "img_s": f"{32 / seconds:.0f}"}
    history = trainer.fit()  # the second epoch, with its line of figures
    row = history[0]
    assert RecordingBar.made[-1].settings["desc"] == "epoch 2/2"
    assert RecordingBar.written == [
        f"epoch 2: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | test loss {row['test_loss']:.4f} "
        f"acc {row['test_acc']:.4f} | rate {row['firing_rate']:.3f} | {row['seconds']:.1f}s"]
    trainer.config["progress"] = False
    trainer.train_epoch()
    assert RecordingBar.made[-1].settings["disable"]


def test_the_curves_show_loss_and_accuracy_per_epoch_for_train_and_test(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    drawn, real_savefig = [], Figure.savefig

    def savefig(figure, *args, **kwargs):
        drawn.append(figure)
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    history = [{"epoch": e, "train_loss": 2 / e, "test_loss": 2.5 / e, "train_acc": 0.2 * e, "test_acc": 0.1 * e}
               for e in (1, 2, 3)]
    with matplotlib.rc_context({"savefig.format": "svg", "savefig.dpi": 50}):  # a user's own defaults do not matter
        train_module.plot_history(history, tmp_path / "curves.png")
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (900, 350)  # 9 x 3.5 in, 100 dpi
    (figure,) = drawn
    loss_axes, accuracy_axes = figure.axes
    for axes, key, title, ylabel in ((loss_axes, "loss", "loss", "cross-entropy"),
                                     (accuracy_axes, "acc", "accuracy", "accuracy")):
        assert (axes.get_title(), axes.get_xlabel(), axes.get_ylabel()) == (title, "epoch", ylabel)
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert sorted(lines) == ["test", "train"]
        for split, line in lines.items():
            assert list(line.get_xdata()) == [1, 2, 3] and line.get_marker() == "o"
            assert list(line.get_ydata()) == [row[f"{split}_{key}"] for row in history]
        assert all(tick == int(tick) for tick in axes.get_xticks())  # whole epochs only
    assert [text.get_text() for text in accuracy_axes.get_legend().get_texts()] == ["train", "test"]
    assert loss_axes.get_position().x1 < accuracy_axes.get_position().x0  # side by side
    for axes in figure.axes:  # both panels inside the picture
        box = axes.get_position()
        assert 0 < box.x0 < box.x1 < 1 and 0 < box.y0 < box.y1 < 1
    # every title, label and tick label is whole, none reaches into the other panel, the picture has no wide empty
    # margins (its content comes within 5 % of each edge), and the panels themselves take 3/4 of its width
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(figure).draw()
    width, height = figure.bbox.width, figure.bbox.height
    loss_box, accuracy_box = (axes.get_tightbbox(figure.canvas.get_renderer()) for axes in figure.axes)
    for box in (loss_box, accuracy_box):
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, box
    assert loss_box.x1 < accuracy_box.x0
    assert loss_box.x0 < 0.05 * width and accuracy_box.x1 > 0.95 * width, (loss_box, accuracy_box)
    assert min(loss_box.y0, accuracy_box.y0) < 0.05 * height and max(loss_box.y1, accuracy_box.y1) > 0.95 * height
    assert sum(axes.get_position().width for axes in figure.axes) >= 0.75
    train_module.plot_history([], tmp_path / "empty.png")  # nothing to draw: no file
    assert not (tmp_path / "empty.png").exists()


def test_fit_writes_checkpoint_metrics_and_plot_with_the_usual_permissions(cifar_sample, tmp_path):
    history = Trainer(tiny_config(cifar_sample, tmp_path)).fit()
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) and 0 <= row["test_acc"] <= 1 for row in history)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == history
    config = json.loads((tmp_path / "config.json").read_text())
    assert (tmp_path / "config.json").read_text() == json.dumps(config, indent=2)  # readable, one key a line
    assert (tmp_path / "curves.png").stat().st_size > 1000
    meta = load_checkpoint(tmp_path / "last.npz")["meta"]
    assert meta["epoch"] == 2 and meta["config"]["model"] == "resnet_small"
    umask = os.umask(0)
    os.umask(umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "curves.png", "last.npz", "metrics.jsonl"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o666 & ~umask}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Weights and history of the tiny run trained without a break (made once for both cases)."""
    straight = Trainer(tiny_config(SAMPLE, tmp_path_factory.mktemp("straight")))
    history = straight.fit()
    return weights(straight), history


@pytest.mark.parametrize("stop_after_steps", [2, 3])  # mid-epoch, and exactly at an epoch boundary
def test_ctrl_c_then_resume_is_bit_exact_metrics_included(cifar_sample, tmp_path, monkeypatch, stop_after_steps,
                                                          uninterrupted):
    expected, expected_history = uninterrupted

    interrupted = Trainer(tiny_config(cifar_sample, tmp_path / "resumed"))
    real_step, calls = interrupted.optimizer.step, []

    def step_then_interrupt():  # Ctrl-C arrives in the middle of a step
        calls.append(1)
        if len(calls) == stop_after_steps:
            signal.raise_signal(signal.SIGINT)
        real_step()

    monkeypatch.setattr(interrupted.optimizer, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert load_checkpoint(tmp_path / "resumed" / "last.npz")["meta"]["interrupted"]

    resumed = Trainer(interrupted.config, resume=True)
    assert resumed.epoch * resumed.steps_per_epoch + resumed.step == stop_after_steps
    history = resumed.fit()
    final = weights(resumed)
    for name in expected:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)
    drop_time = [{k: v for k, v in row.items() if k != "seconds"} for row in history]
    assert drop_time == [{k: v for k, v in row.items() if k != "seconds"} for row in expected_history]


@pytest.mark.parametrize("explode_at_step, truth", [
    (1, "no checkpoint of this run has been written yet"),
    (4, r"the last good checkpoint is .*last\.npz \(end of epoch 1\)"),
])
def test_a_nan_loss_stops_training_and_tells_which_checkpoint_is_good(cifar_sample, tmp_path, monkeypatch,
                                                                     explode_at_step, truth):
    trainer = Trainer(tiny_config(cifar_sample, tmp_path))  # 3 steps per epoch
    real_loss, calls = train_module.softmax_cross_entropy, []

    def loss_that_explodes(logits, labels):
        calls.append(1)
        loss = real_loss(logits, labels)
        return loss * float("nan") if len(calls) == explode_at_step else loss

    monkeypatch.setattr(train_module, "softmax_cross_entropy", loss_that_explodes)
    with pytest.raises(TrainingDiverged, match="the loss became nan") as err:
        trainer.fit()
    assert f"step {(explode_at_step - 1) % 3 + 1}" in str(err.value)
    assert __import__("re").search(truth, str(err.value)), str(err.value)
    if explode_at_step == 1:
        assert not (tmp_path / "last.npz").exists()
    else:
        meta = load_checkpoint(tmp_path / "last.npz")["meta"]  # loads: it holds no NaN
        assert meta["epoch"] == 1 and not meta["interrupted"]


@pytest.mark.parametrize("where, caught", [
    ("parameter", "at epoch 2, step 2"),  # by the step's own read
    ("optimizer slot", "before its checkpoint at end of epoch 2"),  # by the check before every save
    ("buffer", "before its checkpoint at end of epoch 2"),
])
def test_a_non_finite_value_after_an_update_stops_training_naming_it(cifar_sample, tmp_path, where, caught):
    trainer = Trainer(tiny_config(cifar_sample, tmp_path, optimizer="adam", lr=0.01))
    real_step, calls = trainer.optimizer.step, []
    conv = trainer.model.stem[0].conv
    bn = trainer.model.stem[0].bn

    def step_that_spoils_one_value():  # the loss stays finite: a NaN membrane never spikes
        real_step()
        calls.append(1)
        if len(calls) == 5:
            if where == "parameter":
                conv.weight.data[0, 0, 1, 1] = np.nan
            elif where == "optimizer slot":
                trainer.optimizer.v[0][0, 0, 0, 0] = np.inf
            else:
                bn.running_var[2] = np.inf

    trainer.optimizer.step = step_that_spoils_one_value
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    name = {"parameter": "stem.0.conv.weight", "optimizer slot": "v of stem.0.conv.weight",
            "buffer": "stem.0.bn.running_var"}[where]
    message = str(err.value)
    assert f"{name} became NaN or infinite" in message and caught in message
    assert "(end of epoch 1)" in message and "lower --lr" in message
    assert load_checkpoint(tmp_path / "last.npz")["meta"]["epoch"] == 1


def test_a_gpu_step_reads_the_device_once(stand_in, cifar_sample, tmp_path):
    """On the strict CuPy stand-in: the fused optimizer is chosen, and each step's figures (loss, correct
    answers, firing rate, non-finite flag) come back in one synchronisation, none of them implicit."""
    trainer = Trainer(tiny_config(cifar_sample, tmp_path, device="cuda:0", batch_size=4, limit_train=8))
    assert type(trainer.optimizer).__name__ == "FusedSGD"
    stand_in.reset_counters()
    loss, accuracy, rate, _ = trainer.train_epoch()  # two steps
    assert len(stand_in.counters.syncs) == 2, stand_in.counters.syncs
    assert all(s.startswith("get") for s in stand_in.counters.syncs)
    assert np.dtype(np.float64) not in stand_in.counters.dtypes  # the float32 path stays float32
    assert np.isfinite(loss) and 0 <= accuracy <= 1 and 0 < rate < 1


# ------------------------------------------------------------------------------- the run folder
def test_the_run_folder_is_checked_before_any_work(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    with pytest.raises(ConfigError, match="--lr must be"):  # a new run by default: its flags are checked first
        train_module.train(out=str(fresh), lr=-1)
    with pytest.raises(ConfigError, match="--resume: no run to continue in"):
        train_module.train(resume=True, out=str(fresh))
    assert not fresh.exists()
    held = tmp_path / "held"
    held.mkdir()
    (held / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"already holds a run \(metrics\.jsonl\)"):
        train_module.train(out=str(held))  # no overwrite unless asked
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(ConfigError, match="a_file cannot be written"):
        train_module.run_folder(tmp_path / "a_file" / "run", False, False)  # a file where a folder should be
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(train_module.os, "access", lambda path, mode: Path(path) != locked)  # (root writes anywhere)
    with pytest.raises(ConfigError, match="locked cannot be written"):
        train_module.run_folder(locked / "run", False, False)
    assert not (locked / "run").exists()


def test_overwrite_removes_the_old_runs_files_and_every_job_removes_stale_temps(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval").mkdir()
    for name in ("last.npz", "metrics.jsonl", "curves.png", ".last.npz.k2j4.tmp", "notes.txt", "eval/layers.json",
                 "eval/raster.png", "eval/mine.txt"):
        (run / name).write_text("old")
    replaced = train_module.run_folder(str(run), False, True)  # the folder as text, as --out gives it
    # train deletes them once it can start: the old run's files and what minisnn eval wrote for it
    assert sorted(replaced) == ["curves.png", "eval/layers.json", "eval/raster.png", "last.npz", "metrics.jsonl"]
    for name in replaced:
        (run / name).unlink()
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["eval", "eval/mine.txt", "notes.txt"]
    (run / "eval" / "mine.txt").unlink()
    (run / "eval").rmdir()
    (run / "eval").mkdir()
    (run / "eval" / "layers.json").write_text("an evaluation of a run deleted by hand")
    assert train_module.run_folder(run, False, False) == []  # a new run without --overwrite deletes nothing
    (run / ".metrics.jsonl.a1b2.tmp").write_text("cut off")
    (run / "last.npz").write_text("a checkpoint")
    with pytest.raises(ConfigError, match="--resume and --overwrite contradict each other"):
        train_module.run_folder(run, True, True)
    (run / "eval" / "layers.json").unlink()
    (run / "eval").rmdir()
    train_module.run_folder(run, True, False)  # resume: the checkpoint stays, the stale temp goes
    assert sorted(p.name for p in run.iterdir()) == ["last.npz", "notes.txt"]


def test_every_rank_of_a_data_parallel_run_names_the_same_last_good_checkpoint(cifar_sample, tmp_path, monkeypatch):
    # only rank 0 writes the checkpoint, but a divergence or Ctrl-C message may come from any rank
    import threading

    from minisnn.dist import DataParallel, ThreadGroup
    here = threading.local()
    monkeypatch.setattr(DataParallel, "launch", classmethod(lambda cls, config: cls(here.group)))

    def rank_program(group):
        here.group = group
        trainer = Trainer(tiny_config(cifar_sample, tmp_path, limit_train=32, epochs=1))
        words = [trainer.last_good_words()]
        trainer.train_epoch()
        trainer.save()
        words.append(trainer.last_good_words())
        trainer.save(interrupted=True)
        return words + [trainer.last_good_words()]

    rank0, rank1 = ThreadGroup(2).run(rank_program)
    assert rank1 == rank0
    assert "no checkpoint of this run has been written yet" in rank0[0]
    assert "(end of epoch 1)" in rank0[1] and "(end of epoch 1 (saved at Ctrl-C))" in rank0[2]


def test_a_stop_asked_on_another_rank_stops_this_one_after_the_same_step(cifar_sample, tmp_path, monkeypatch):
    # [dist] a Ctrl-C reaches one rank of an mpiexec job; the allreduce tells the others, which must stop too
    from minisnn.dist import DataParallel
    one_rank = DataParallel.backward

    def another_rank_was_stopped(self, loss, count, stop=False):
        batch_loss, _ = one_rank(self, loss, count, stop)
        return batch_loss, True

    monkeypatch.setattr(DataParallel, "backward", another_rank_was_stopped)
    trainer = Trainer(tiny_config(cifar_sample, tmp_path))
    assert not trainer.stop_requested
    with pytest.raises(KeyboardInterrupt):
        trainer.train_epoch()
    assert trainer.step == 1 and trainer.stop_requested


def data_parallel(monkeypatch):
    """Make every Trainer of this test a rank of the ThreadGroup that runs it; returns ThreadGroup(2).run."""
    import threading

    from minisnn.dist import DataParallel, ThreadGroup
    here = threading.local()
    monkeypatch.setattr(DataParallel, "launch", classmethod(lambda cls, config: cls(here.group)))

    def run(rank_program):
        def as_rank(group):
            here.group = group
            return rank_program(group.rank)
        try:
            return ThreadGroup(2).run(as_rank)
        finally:
            assert Config.enable_backprop, "the ranks left gradients switched off for every later test"
    return run


def test_a_data_parallel_run_shows_one_progress_bar_and_agrees_on_its_running_statistics(cifar_sample, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setattr(RecordingBar, "made", [])
    monkeypatch.setattr(RecordingBar, "written", [])
    monkeypatch.setattr(train_module, "tqdm", RecordingBar)
    monkeypatch.setattr(train_module, "plot_history", lambda history, path: None)  # (time: curves not needed)
    def rank_program(rank):
        trainer = Trainer(tiny_config(cifar_sample, tmp_path, limit_train=32, limit_test=16, epochs=1, progress=True))
        trainer.fit()
        return {name: getattr(module, attr).copy() for name, module, attr in trainer.model.named_buffers()}

    rank0, rank1 = data_parallel(monkeypatch)(rank_program)
    assert [bar.settings["disable"] for bar in RecordingBar.made].count(False) == 1  # rank 0's bar alone
    assert len(RecordingBar.written) == 1 and RecordingBar.written[0].startswith("epoch 1: train loss")
    saved = load_checkpoint(tmp_path / "last.npz")["model"]
    for name in rank0:  # each rank normalised its own rows; evaluation and checkpoint use the mean of both
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
        np.testing.assert_array_equal(saved[name], rank0[name], err_msg=name)


def test_ctrl_c_in_a_data_parallel_run_saves_all_ranks_rows_the_epochs_own_seconds_and_agreed_statistics(
        cifar_sample, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "plot_history", lambda history, path: None)  # (time: curves not needed)

    def rank_program(rank):
        trainer = Trainer(tiny_config(cifar_sample, tmp_path, limit_train=32, epochs=1))
        trainer.stop_requested = True  # Ctrl-C before the first step: every rank stops after it
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        return dict(trainer.sums), {name: getattr(module, attr).copy()
                                    for name, module, attr in trainer.model.named_buffers()}

    (sums0, buffers0), (sums1, buffers1) = data_parallel(monkeypatch)(rank_program)
    saved = load_checkpoint(tmp_path / "last.npz")
    sums = saved["meta"]["sums"]
    assert saved["meta"]["interrupted"] and (saved["meta"]["epoch"], saved["meta"]["step"]) == (0, 1)
    assert sums0["seen"] == sums1["seen"] == 8 and sums["seen"] == 16  # each rank's half of the first batch
    assert sums["correct"] == sums0["correct"] + sums1["correct"]
    assert 0 < sums["seconds"] == sums0["seconds"]  # the wall time of the epoch so far, not the ranks' times added
    for name in buffers0:  # the ranks' running statistics, averaged before the save
        np.testing.assert_array_equal(buffers0[name], buffers1[name], err_msg=name)
        np.testing.assert_array_equal(saved["model"][name], buffers0[name], err_msg=name)


def test_a_ctrl_c_after_a_steps_allreduce_stops_every_rank_after_the_next_step(cifar_sample, tmp_path, monkeypatch):
    # the stop is agreed at each step's allreduce: a rank whose Ctrl-C comes later in the step must not leave
    # after it alone, while the other rank waits for it in the next step's allreduce
    monkeypatch.setattr(train_module, "plot_history", lambda history, path: None)  # (time: curves not needed)

    def rank_program(rank):
        trainer = Trainer(tiny_config(cifar_sample, tmp_path, limit_train=48, epochs=1))
        real_step = trainer.optimizer.step

        def step():  # on rank 1, the Ctrl-C arrives during the first step's update, after its allreduce
            real_step()
            if rank == 1 and trainer.step == 0:
                trainer.request_stop()

        trainer.optimizer.step = step
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        return trainer.step

    assert data_parallel(monkeypatch)(rank_program) == [2, 2]
    meta = load_checkpoint(tmp_path / "last.npz")["meta"]
    assert (meta["epoch"], meta["step"], meta["interrupted"]) == (0, 2, True)


def test_a_nan_loss_on_one_rank_stops_every_rank_after_the_same_step_saying_so(cifar_sample, tmp_path, monkeypatch):
    import threading
    real_loss, calls = train_module.softmax_cross_entropy, []

    def loss_that_explodes_on_rank_1(logits, labels):
        loss = real_loss(logits, labels)
        if threading.current_thread().name == "rank-1":
            calls.append(1)
            if len(calls) == 2:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module, "softmax_cross_entropy", loss_that_explodes_on_rank_1)

    def rank_program(rank):
        trainer = Trainer(tiny_config(cifar_sample, tmp_path))
        with pytest.raises(TrainingDiverged) as err:
            trainer.train_epoch()
        return str(err.value)

    rank0, rank1 = data_parallel(monkeypatch)(rank_program)
    assert rank0 == rank1 and "at epoch 1, step 2" in rank0 and "the loss became nan" in rank0


def test_a_data_parallel_run_whose_last_batch_leaves_a_rank_without_rows_is_refused_before_training(
        cifar_sample, tmp_path, monkeypatch):
    from minisnn.dist import DistError

    def rank_program(rank):
        Trainer(tiny_config(cifar_sample, tmp_path, limit_train=33))  # batches of 16, 16 and 1 rows

    with pytest.raises(DistError, match="a training batch of 1 rows cannot be split over 2 ranks"):
        data_parallel(monkeypatch)(rank_program)


def test_evaluation_scores_the_mean_loss_and_accuracy_over_every_test_image(cifar_sample, tmp_path):
    from dataclasses import replace

    from minisnn.core import Tensor, no_grad
    from minisnn.functions.loss import softmax_cross_entropy
    trainer = Trainer(tiny_config(cifar_sample, tmp_path, limit_test=40, eval_batch_size=16))  # 16, 16 and 8 images
    trainer.train_epoch()
    images, labels = next(trainer.data.loader("test", 40).batches())
    trainer.model.eval()
    with no_grad():  # all 40 at once, by hand
        logits = trainer.model(Tensor(images))
        loss = float(softmax_cross_entropy(logits, labels).item())
        accuracy = float(np.mean(logits.data.argmax(axis=1) == labels))
    trainer.model.train()
    assert 0 < accuracy < 1
    assert evaluate(trainer.model, trainer.test_loader, np) == pytest.approx((loss, accuracy), rel=1e-5)
    one = replace(trainer.data, test_x=trainer.data.test_x[:1], test_y=trainer.data.test_y[:1])
    assert evaluate(trainer.model, one.loader("test", 16), np)[1] == float(logits.data[0].argmax() == labels[0])
    empty = replace(trainer.data, test_x=trainer.data.test_x[:0], test_y=trainer.data.test_y[:0])
    with pytest.raises(ValueError, match="the loader gave no images to score"):
        evaluate(trainer.model, empty.loader("test", 16), np)


def test_resuming_without_out_continues_the_default_folder_and_writes_only_there(cifar_sample, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "plot_history", lambda history, path: None)  # (time: curves not needed)
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first"
    first.mkdir()
    Trainer(tiny_config(cifar_sample, first, limit_train=16, limit_test=16, epochs=1)).save()  # saved at the start
    (tmp_path / "runs").mkdir()
    first.rename(tmp_path / "runs" / "default")  # the run moved to where train() looks by default
    history = train_module.train(resume=True)
    assert [row["epoch"] for row in history] == [1] and not first.exists()
    assert load_checkpoint(tmp_path / "runs" / "default" / "last.npz")["meta"]["config"]["out"] == "runs/default"



def test_a_run_shows_its_progress_and_keeps_per_rank_statistics_unless_told_otherwise():
    # the documented defaults of a config made in Python (the CLI's --no-progress and --sync-norm switch them)
    config = make_config()
    assert config["progress"] is True and config["sync_norm"] is False
