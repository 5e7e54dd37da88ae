"""Shared test settings: Hypothesis profiles and the path to the real data sample."""
import os
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
