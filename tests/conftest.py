"""Shared test settings: Hypothesis profiles and the path to the real data sample."""
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "cifar10-sample"


@pytest.fixture
def cifar_sample():
    """Path to ../shared/data/cifar10-sample (the real CIFAR-10 sample); fail loudly if absent."""
    if not (SAMPLE / "cifar-10-batches-py").is_dir():
        pytest.fail(f"real CIFAR-10 sample not found at {SAMPLE}: tests expect ../shared beside the repo")
    return SAMPLE


def _real_cupy():
    """CuPy, if it is installed and a GPU runs a kernel; else None."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        (cupy.arange(4, dtype=cupy.float32) * 2).sum().item()
        return cupy
    except Exception:
        return None


REAL_CUPY = _real_cupy()


@pytest.fixture
def gpu(monkeypatch):
    """The GPU's array module: real CuPy where it works, else the strict CPU stand-in (tests/fakecupy),
    installed as ``cupy`` for the test. Tests that read the stand-in's counters skip on real CuPy."""
    if REAL_CUPY is not None:
        yield REAL_CUPY
        return
    import fakecupy
    monkeypatch.setitem(sys.modules, "cupy", fakecupy)
    fakecupy._state.device = 0
    fakecupy.reset_counters()
    yield fakecupy


@pytest.fixture
def stand_in(gpu):
    """The CPU stand-in for CuPy (tests that count launches, synchronisations or bytes need it)."""
    if not hasattr(gpu, "counters"):
        pytest.skip("counts kernel launches and synchronisations, which only the CPU stand-in for CuPy records")
    return gpu
