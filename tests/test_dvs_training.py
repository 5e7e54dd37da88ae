"""The whole CIFAR10-DVS path: event files in the official format -> frames -> spiking ResNet -> eval."""
import json

import numpy as np

from minisnn import cli
from minisnn.data.cifar10_dvs import CIFAR10_DVS_CLASSES, write_aedat


def write_recordings(root, per_class=4, events=600, seed=0):
    """Recordings whose classes differ in where on the sensor their events fall."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CIFAR10_DVS_CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            t = np.sort(rng.integers(0, 1_000_000, events))
            x = np.clip(rng.normal(12 * label + 10, 6, events), 0, 127).astype(np.int64)
            y = rng.integers(0, 128, events)
            write_aedat(folder / f"cifar10_{name}_{i}.aedat", t, x, y, rng.integers(0, 2, events))


def test_train_and_eval_on_event_files(tmp_path, capsys):
    root = tmp_path / "CIFAR10-DVS"
    write_recordings(root)
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "cifar10-dvs", "--data-dir", str(root), "--dvs-size", "16",
                     "--model", "resnet_small", "--width", "4", "--blocks", "1", "-T", "4", "--epochs", "2",
                     "--batch-size", "8", "--optimizer", "adam", "--lr", "0.01", "--out", str(out),
                     "--no-progress"])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["epoch"] == 2 and np.isfinite(last["train_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["dataset_args"] == {"size": 16}
    assert list((root / "frames_cache").rglob("*.npz")), "frames were not cached"
    assert cli.main(["eval", str(out / "last.npz")]) == 0
    assert "accuracy" in capsys.readouterr().out
