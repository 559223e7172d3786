"""Shared test configuration: deterministic torch, a CI hypothesis profile, small thread counts."""

from __future__ import annotations

import os

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
