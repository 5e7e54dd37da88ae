"""The trainer end to end on real CIFAR-10 images: learning, exact resume, NaN stop, checkpoints, CLI."""
import json
import signal

import numpy as np
import pytest

from minisnn import Tensor, cli
from minisnn import train as train_module
from minisnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.optim import Adam
from minisnn.train import Trainer, TrainingDiverged, make_config


def tiny_config(sample, out, **overrides):
    config = dict(model="resnet_small", model_args={"width": 4, "blocks": (1, 1)}, dataset="cifar10",
                  data_dir=str(sample), T=2, batch_size=16, epochs=2, optimizer="sgd", lr=0.05,
                  limit_train=48, limit_test=32, out=str(out), progress=False, seed=7)
    config.update(overrides)
    return make_config(**config)


def test_small_spiking_resnet_learns_on_real_cifar(cifar_sample, tmp_path):
    trainer = Trainer(tiny_config(cifar_sample, tmp_path, model_args={"width": 8, "blocks": (1, 1)}, limit_train=32))
    images, labels = next(trainer.data.loader("train", 32, seed=0).batches())
    model = trainer.model
    optimizer = Adam(model.parameters(), lr=1e-2)

    def loss_now():
        return float(softmax_cross_entropy(model(Tensor(images)), labels).item())

    before = loss_now()
    for _ in range(20):
        loss = softmax_cross_entropy(model(Tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = loss_now()
    assert after < 0.8 * before, (before, after)  # 2.34 -> about 1.7 on these 32 real images


def test_fit_writes_checkpoint_metrics_and_plot(cifar_sample, tmp_path):
    history = Trainer(tiny_config(cifar_sample, tmp_path)).fit()
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) and 0 <= row["test_acc"] <= 1 for row in history)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == history
    assert (tmp_path / "curves.png").stat().st_size > 1000
    meta = load_checkpoint(tmp_path / "last.npz")["meta"]
    assert meta["epoch"] == 2 and meta["config"]["model"] == "resnet_small"
    assert not list(tmp_path.glob("*.tmp"))


def weights(trainer):
    return {name: p.data.copy() for name, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("stop_after_steps", [2, 3])  # mid-epoch, and exactly at an epoch boundary
def test_ctrl_c_then_resume_is_bit_exact(cifar_sample, tmp_path, monkeypatch, stop_after_steps):
    straight = Trainer(tiny_config(cifar_sample, tmp_path / "straight"))
    straight.fit()

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
    final, expected = weights(resumed), weights(straight)
    for name in expected:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)
    assert history[-1]["epoch"] == 2


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(cifar_sample, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(cifar_sample, tmp_path))
    real_loss, calls = train_module.softmax_cross_entropy, []

    def loss_that_explodes_in_epoch_two(logits, labels):
        calls.append(1)
        loss = real_loss(logits, labels)
        return loss * float("nan") if len(calls) > trainer.steps_per_epoch else loss

    monkeypatch.setattr(train_module, "softmax_cross_entropy", loss_that_explodes_in_epoch_two)
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 2, step 1"):
        trainer.fit()
    meta = load_checkpoint(tmp_path / "last.npz")["meta"]
    assert meta["epoch"] == 1 and not meta["interrupted"]


def test_checkpoints_refuse_pickles_and_report_corruption(tmp_path):
    bad = tmp_path / "object.npz"
    np.savez(bad, meta=np.array("{}"), **{"model/w": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="object.npz"):
        load_checkpoint(bad)
    good = tmp_path / "good.npz"
    save_checkpoint(good, {"epoch": 1}, model={"w": np.ones(3, np.float32)})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.npz")


def test_cli_train_then_eval(cifar_sample, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "cifar10", "--data-dir", str(cifar_sample), "--model", "resnet_small",
                     "--width", "4", "--blocks", "1", "-T", "2", "--epochs", "1", "--batch-size", "16",
                     "--limit-train", "32", "--limit-test", "16", "--out", str(out), "--no-progress"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epoch"] == 1
    assert cli.main(["eval", str(out / "last.npz"), "--data-dir", str(cifar_sample)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "SOPs" in printed and "stem.1" in printed
    assert (out / "raster.png").stat().st_size > 1000


def test_cli_reports_missing_data_clearly(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--no-progress",
                     "--out", str(tmp_path / "run")])
    assert code == 2
    assert "cifar-10" in capsys.readouterr().err.lower()
