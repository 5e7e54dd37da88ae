"""The array-module switch: device names, the environment variable, and clear errors without CuPy."""
import importlib.util

import numpy as np
import pytest

from minisnn import backend

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def test_numpy_arrays_select_numpy():
    assert backend.get_array_module(np.ones(2), np.zeros(1)) is np


@pytest.mark.parametrize("name, expected", [("cpu", "cpu"), ("CUDA", "cuda:0"), ("gpu", "cuda:0"), ("cuda:1", "cuda:1")])
def test_device_names(name, expected):
    assert backend.get_device(name) == expected


def test_device_from_environment(monkeypatch):
    monkeypatch.setenv("MINISNN_DEVICE", "cuda")
    assert backend.get_device() == "cuda:0"
    monkeypatch.delenv("MINISNN_DEVICE")
    assert backend.get_device() == "cpu"


def test_unknown_device_is_an_error_naming_its_source(monkeypatch):
    monkeypatch.setenv("MINISNN_DEVICE", "tpu")
    with pytest.raises(backend.DeviceError, match="MINISNN_DEVICE"):
        backend.get_device()


@pytest.mark.skipif(HAS_CUPY, reason="checks the error raised when CuPy is absent")
def test_asking_for_cuda_without_cupy_says_why_and_how_to_fix():
    with pytest.raises(backend.DeviceError, match=r"pip install"):
        backend.xp_for("cuda")


def test_cpu_round_trip():
    x = np.arange(3.0)
    assert backend.to_device(x, "cpu") is not None
    np.testing.assert_array_equal(backend.as_numpy(x), x)
    assert backend.device_of(x) == "cpu"
