"""get_dataset: each data set's options reach its reader, with the documented defaults."""
import numpy as np

from minisnn.data import registry


def test_cifar10_dvs_options_reach_the_reader_and_default_to_ten_frames_of_48_by_48(tmp_path, monkeypatch):
    asked = []

    def reader(root, **options):  # stands in for load_cifar10_dvs: records what get_dataset asks it for
        asked.append(options)
        frames = np.zeros((2, options["T"], 2, options["size"], options["size"]), np.float32)
        return frames, np.arange(2), frames, np.arange(2)

    monkeypatch.setattr(registry, "load_cifar10_dvs", reader)
    data = registry.get_dataset("cifar10-dvs", data_dir=tmp_path)
    assert asked[-1] == {"T": 10, "size": 48, "split_by": "number", "split_rule": "even", "resize": "sum",
                         "progress": True}
    assert data.train_x.shape == (2, 10, 2, 48, 48)
    options = {"T": 4, "size": 16, "split_by": "time", "split_rule": "spikingjelly", "resize": "bilinear",
               "progress": False}
    registry.get_dataset("cifar10-dvs", data_dir=tmp_path, **options)
    assert asked[-1] == options
