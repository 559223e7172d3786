"""Shared test configuration: deterministic torch, a CI hypothesis profile, small thread counts."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Test models are tiny: one thread avoids oversubscription overhead (OMP_NUM_THREADS overrides).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or 1)

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of a random-initialised tiny generator and a 32x32x8 atlas (see tests/tiny_model.py)."""
    from tiny_model import save_tiny_weights

    return save_tiny_weights(tmp_path_factory.mktemp("weights"), card={"data": "unit test", "steps": 0})


@pytest.fixture(scope="session")
def tiny_local_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of a random-initialised tiny local-mode generator (see tests/tiny_model.py)."""
    from tiny_model import save_tiny_local_weights

    return save_tiny_local_weights(tmp_path_factory.mktemp("local_weights"))
