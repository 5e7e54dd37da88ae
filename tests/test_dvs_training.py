"""The whole CIFAR10-DVS path: event files in the official format -> frames -> spiking ResNet -> eval."""
import json
import struct

import numpy as np
import pytest

from minisnn import cli
from minisnn.data import get_dataset
from minisnn.data.cifar10_dvs import CIFAR10_DVS_CLASSES, events_to_frames, read_aedat, split_files, write_aedat


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
    out_text, err_text = capsys.readouterr()
    assert "CIFAR10-DVS frames" not in err_text  # --no-progress: no bar while the frames are made either
    last = json.loads(out_text.strip().splitlines()[-1])
    assert last["epoch"] == 2 and np.isfinite(last["train_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["dataset_args"] == {"size": 16}
    assert list((root / "frames_cache").rglob("*.npz")), "frames were not cached"
    assert cli.main(["eval", str(out / "last.npz")]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_frame_options_reach_the_data_set_and_skipped_records_are_reported(tmp_path):
    """split_rule and resize pass through get_dataset; a special record in one file gives one warning."""
    root = tmp_path / "CIFAR10-DVS"
    write_recordings(root, per_class=2, events=300)
    victim = root / "dog" / "cifar10_dog_1.aedat"
    victim.write_bytes(victim.read_bytes() + struct.pack(">II", 0x80008000, 999_999))  # a special record at the end
    options = dict(T=3, size=12, split_by="time", split_rule="spikingjelly", resize="bilinear")
    with pytest.warns(UserWarning, match="skipped 1 special/sync records .* in 1 of 20 recordings") as caught:
        dataset = get_dataset("cifar10-dvs", root, **options)
    assert len(caught) == 1
    assert dataset.train_x.shape == (10, 3, 2, 12, 12) and dataset.test_x.shape == (10, 3, 2, 12, 12)
    train_files, _ = split_files(root, train=True)
    recording = read_aedat(train_files[0])
    np.testing.assert_array_equal(dataset.train_x[0], events_to_frames(*recording[:4], 3, "time", 12, "spikingjelly",
                                                                       "bilinear"))
    assert not np.array_equal(dataset.train_x[0], events_to_frames(*recording[:4], 3, "time", 12))


def test_cli_dvs_options_reach_the_frames(tmp_path, monkeypatch):
    """--dvs-split-rule and --dvs-resize are checked where they are parsed and reach the data set."""
    from minisnn import cli, experiment
    from minisnn.data import DatasetError
    seen = {}

    def get_dataset(name, **options):                  # record what the CLI asked for, then stop the run
        seen.update(options)
        raise DatasetError("recorded")
    monkeypatch.setattr(experiment, "get_dataset", get_dataset)
    code = cli.main(["train", "--dataset", "cifar10-dvs", "--data-dir", str(tmp_path), "--dvs-split-rule",
                     "spikingjelly", "--dvs-resize", "bilinear", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2 and seen["split_rule"] == "spikingjelly" and seen["resize"] == "bilinear"
