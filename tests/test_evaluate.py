"""Scoring: ``evaluate`` gives the mean loss and accuracy over every image, and ``minisnn eval``'s
``evaluate_checkpoint`` reports what it computed -- the accuracy, the layer table of an eval-mode pass, the
totals and the files written."""
import json

import numpy as np
import pytest

from minisnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minisnn.data import DatasetError
from minisnn.core import Tensor, no_grad
from minisnn.evaluate import evaluate, evaluate_checkpoint
from minisnn.experiment import ConfigError, load_data, model_for, model_input, saved_config
from minisnn.functions.linear import linear
from minisnn.monitor import Recorder
from minisnn.nn.module import Module, Parameter
from minisnn.train import CHECKPOINT, Trainer

from conftest import SAMPLE
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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A run of one epoch of a tiny net on the CIFAR-10 sample (32 test images); its checkpoint's path (the
    sample's absence fails here, loudly)."""
    run = tmp_path_factory.mktemp("evaluate") / "run"
    Trainer(tiny_config(SAMPLE, run, epochs=1)).fit()
    return run / CHECKPOINT


def test_eval_of_a_checkpoint_reports_its_accuracy_the_eval_mode_layer_table_and_its_files(checkpoint, tmp_path,
                                                                                           capsys):
    out = tmp_path / "a" / "look"  # a folder that does not exist yet, two levels deep
    accuracy, rows = evaluate_checkpoint(checkpoint, out=out)
    printed = capsys.readouterr().out.splitlines()

    # what it should have found, computed here from the checkpoint the documented way: the trained weights,
    # the whole test split, and one eval-mode pass over the first 16 test images
    state = load_checkpoint(checkpoint)
    saved = saved_config(state["meta"]["config"])
    data = load_data(dict(saved, download=False, limit_train=0))
    model = model_for(saved, data)
    model.load_state_dict(state["model"])
    loss, expected_accuracy = evaluate(model, data.loader("test", saved["eval_batch_size"]), np)
    images, _ = next(data.loader("test", 16).batches())
    model.eval()
    with no_grad(), Recorder(model) as rec:
        model(Tensor(model_input(images, np)))
    assert accuracy == expected_accuracy
    assert any(f"test loss {loss:.4f}, accuracy {expected_accuracy:.4f} on 32 images" in line for line in printed)
    assert rows == rec.layer_table()
    assert json.loads((out / "layers.json").read_text()) == rows
    totals = json.loads(next(line for line in printed if line.startswith("{")))
    assert totals == {k: round(v, 3) for k, v in rec.totals().items()}
    written = [out / name for name in ("layers.json", "raster.png", "firing_rates.png", "membrane.png")]
    assert printed[-1] == f"written: {', '.join(map(str, written))}"
    assert all(path.is_file() for path in written)

    assert evaluate_checkpoint(checkpoint, out=out) == (accuracy, rows)  # again, into the same folder


def test_eval_takes_the_data_folder_and_batch_size_it_is_given_and_never_downloads(checkpoint, tmp_path,
                                                                                   monkeypatch):
    import minisnn.data.cifar10 as cifar10
    from minisnn.data import Dataset

    def no_download(*args, **kwargs):
        raise AssertionError("eval tried to download")
    monkeypatch.setattr(cifar10, "download_file", no_download)
    state = load_checkpoint(checkpoint)  # a run that was allowed to download
    downloading = dict(state["meta"], config=dict(state["meta"]["config"], download=True))
    save_checkpoint(tmp_path / "downloading.npz", downloading, model=state["model"])
    for path in (checkpoint, tmp_path / "downloading.npz"):
        with pytest.raises(DatasetError, match=str(tmp_path / "empty")):
            evaluate_checkpoint(path, data_dir=tmp_path / "empty", out=tmp_path / "look")

    sizes = []
    loader = Dataset.loader

    def recording_loader(self, split, batch_size, *args, **kwargs):
        sizes.append(batch_size)
        return loader(self, split, batch_size, *args, **kwargs)
    monkeypatch.setattr(Dataset, "loader", recording_loader)
    evaluate_checkpoint(checkpoint, eval_batch_size=5, out=tmp_path / "look")
    assert sizes[0] == 5


def test_eval_refuses_an_out_that_is_a_file_and_checkpoints_that_no_longer_fit(checkpoint, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        evaluate_checkpoint(checkpoint, out=tmp_path / "file")
    state = load_checkpoint(checkpoint)
    bad_config = dict(state["meta"], config=dict(state["meta"]["config"], model="no_such_model"))
    save_checkpoint(tmp_path / "old.npz", bad_config, model=state["model"])
    with pytest.raises(CheckpointError, match="its config is not valid today"):
        evaluate_checkpoint(tmp_path / "old.npz", out=tmp_path / "look")
    first = next(iter(state["model"]))
    wrong = dict(state["model"], **{first: np.zeros(3, dtype=np.float32)})
    save_checkpoint(tmp_path / "wrong.npz", state["meta"], model=wrong)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        evaluate_checkpoint(tmp_path / "wrong.npz", out=tmp_path / "look")
