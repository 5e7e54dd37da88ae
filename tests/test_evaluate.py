"""Scoring: ``evaluate`` gives the mean loss and accuracy over every image, and ``minisnn eval``'s
``evaluate_checkpoint`` reports what it computed -- the accuracy, the layer table of an eval-mode pass, the
totals and the files written."""
import json

import numpy as np
import pytest

from minisnn.checkpoint import load_checkpoint
from minisnn.core import Tensor, no_grad
from minisnn.evaluate import evaluate, evaluate_checkpoint
from minisnn.experiment import load_data, model_for, model_input, saved_config
from minisnn.functions.linear import linear
from minisnn.monitor import Recorder
from minisnn.nn.module import Module, Parameter
from minisnn.train import CHECKPOINT, Trainer

from test_train import tiny_config


class Batches:
    """A loader over fixed arrays in batches of the given sizes."""

    def __init__(self, x, y, sizes):
        self.x, self.y, self.sizes = x, y, sizes

    def batches(self):
        start = 0
        for size in self.sizes:
            yield self.x[start:start + size], self.y[start:start + size]
            start += size


class Scorer(Module):
    """A linear classifier over [N, features] that remembers the mode it ran in."""

    def __init__(self, features, classes, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.weight = Parameter(rng.normal(size=(classes, features)))
        self.bias = Parameter(rng.normal(size=classes))

    def forward(self, x):
        self.ran_training = self.training
        return linear(x, self.weight, self.bias)


def cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]


def test_evaluate_gives_the_mean_loss_and_the_accuracy_over_every_image_of_uneven_batches():
    rng = np.random.default_rng(3)
    model = Scorer(5, 4, seed=0)
    x = rng.normal(size=(7, 5))
    logits = x @ model.weight.data.T + model.bias.data
    y = logits.argmax(axis=1)
    y[[1, 4]] = (y[[1, 4]] + 1) % 4  # 5 of 7 right
    loss, accuracy = evaluate(model, Batches(x, y, [3, 3, 1]), np)
    assert loss == pytest.approx(cross_entropy(logits, y).mean(), rel=1e-6)
    assert accuracy == 5 / 7
    assert not model.ran_training and model.training  # scored in eval mode, left in the mode it had
    model.eval()
    evaluate(model, Batches(x, y, [7]), np)
    assert not model.training


def test_one_image_is_scored_and_no_images_is_an_error_naming_it():
    model = Scorer(2, 3, seed=1)
    x, y = np.ones((1, 2)), np.array([2])
    logits = x @ model.weight.data.T + model.bias.data
    loss, accuracy = evaluate(model, Batches(x, y, [1]), np)
    assert loss == pytest.approx(cross_entropy(logits, y)[0], rel=1e-6)
    assert accuracy == float(logits.argmax() == 2)
    with pytest.raises(ValueError, match="no images"):
        evaluate(model, Batches(x, y, []), np)


def test_eval_of_a_checkpoint_reports_its_accuracy_the_eval_mode_layer_table_and_its_files(cifar_sample, tmp_path,
                                                                                           capsys):
    config = tiny_config(cifar_sample, tmp_path / "run", epochs=1)
    Trainer(config).fit()
    capsys.readouterr()
    out = tmp_path / "look"
    accuracy, rows = evaluate_checkpoint(tmp_path / "run" / CHECKPOINT, out=out, sample_batch=8)
    printed = capsys.readouterr().out.splitlines()

    # what it should have found, computed here from the checkpoint the same documented way
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    saved = saved_config(state["meta"]["config"])
    data = load_data(dict(saved, download=False, limit_train=0))
    model = model_for(saved, data)
    model.load_state_dict(state["model"])
    loss, expected_accuracy = evaluate(model, data.loader("test", saved["eval_batch_size"]), np)
    images, _ = next(data.loader("test", 8).batches())
    model.eval()
    with no_grad(), Recorder(model) as rec:
        model(Tensor(model_input(images, np)))
    assert accuracy == expected_accuracy
    assert any(f"test loss {loss:.4f}, accuracy {expected_accuracy:.4f}" in line for line in printed)
    assert rows == rec.layer_table()
    assert json.loads((out / "layers.json").read_text()) == rows
    totals = json.loads(next(line for line in printed if line.startswith("{")))
    assert totals == {k: round(v, 3) for k, v in rec.totals().items()}
    written = [out / name for name in ("layers.json", "raster.png", "firing_rates.png", "membrane.png")]
    assert printed[-1] == f"written: {', '.join(map(str, written))}"
    assert all(path.is_file() for path in written)
