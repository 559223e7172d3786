"""How many slices one generator call should take, per device: a pure function of measured numbers.

Batching slices into one generator call pays on a GPU, but not necessarily on a CPU: on a 2-core CPU with the tiny
preset at 128x128 (idle machine, 2 torch threads, ``benchmarks/throughput.py --quick --only slices``), a per-slice
eager call ran 34.3 slices/s, a batch of 8 49.4 (1.4x) and a batch of 32 25.4 (0.7x, slower than one slice at a
time: the activations of 32 slices no longer fit the CPU caches). The tables below hold the fastest measured batch
size per device and preset at 128x128; other slice sizes scale it by the pixel count (a 256x256 slice holds four
128x128 ones), rounded down to a power of two, at least 1.

Provenance of the table: CPU ``tiny`` is measured (above). CPU ``lite`` and ``paper`` are NOT measured yet: they
assume the optimum shrinks with the activation memory per slice (lite's activations are about twice tiny's, the
paper preset's far larger), giving 4 and 1. CUDA rows are the previous default (32) for lite, doubled for tiny and
divided by four for paper's memory, also NOT measured. ``benchmarks/throughput.py`` (the ``fastest`` and
``default`` columns of its slice table) and ``benchmarks/gpu_check.py`` (its ``throughput`` check) measure the
fastest batch next to this function's choice; update the table from them.

Example:
    >>> default_batch_size("cpu", "tiny", (128, 128))
    8
    >>> default_batch_size("cpu", "tiny", (256, 256))
    2
    >>> default_batch_size("cuda", "lite", (128, 128))
    32
    >>> preset_of({"base_channels": 16, "max_channels": 64, "n_down": 4, "n_res_blocks": 3})
    'tiny'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from samraug.models.generator import GENERATOR_PRESETS

__all__ = ["BEST_BATCH_128", "default_batch_size", "preset_of"]

#: Fastest slices per generator call at 128x128, per device type and generator preset (see the module docstring).
BEST_BATCH_128: dict[str, dict[str, int]] = {
    "cpu": {"tiny": 8, "lite": 4, "paper": 1},
    "cuda": {"tiny": 64, "lite": 32, "paper": 8},
}


def default_batch_size(device: str | torch.device, preset: str, slice_shape: Sequence[int]) -> int:
    """Slices per generator call for ``preset`` on ``device`` at ``slice_shape`` (H, W).

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``, or ``"auto"`` (CUDA when available).
        preset: Generator preset: ``tiny``, ``lite`` or ``paper``.
        slice_shape: ``(H, W)`` of the slices (after padding).

    Returns:
        The measured best batch size at 128x128 scaled by ``128 * 128 / (H * W)``, rounded down to a power of two,
        at least 1.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    table = BEST_BATCH_128.get(kind)
    if table is None:
        raise ValueError(f"no measured batch sizes for device type {kind!r}; known: {sorted(BEST_BATCH_128)}")
    if preset not in table:
        raise ValueError(f"unknown generator preset {preset!r}; choose from {sorted(table)}")
    shape = tuple(int(s) for s in slice_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"slice_shape must be (H, W) with positive sizes, got {tuple(slice_shape)}")
    scaled = table[preset] * (128 * 128) / (shape[0] * shape[1])
    return 1 if scaled < 1 else 2 ** math.floor(math.log2(scaled))


_ARCH_KEYS = ("base_channels", "max_channels", "n_down", "n_res_blocks")


def preset_of(config: Mapping[str, Any]) -> str:
    """The generator preset (``tiny``, ``lite``, ``paper``) whose batch sizes apply to weights with ``config``.

    A config whose architecture (``base_channels``, ``max_channels``, ``n_down``, ``n_res_blocks``) equals a preset's
    is that preset. Any other architecture gets the smallest preset at least as wide (``base_channels`` and
    ``max_channels`` both >= the config's; missing keys count as 0), so the batch never exceeds what a model of its
    size was measured to run fastest with; wider than every preset: ``paper``.

    Example:
        >>> preset_of({"base_channels": 8, "max_channels": 16}), preset_of({"base_channels": 128})
        ('tiny', 'paper')
    """
    arch = {k: config.get(k) for k in _ARCH_KEYS}
    for name, preset in GENERATOR_PRESETS.items():
        if all(arch[k] == preset[k] for k in _ARCH_KEYS):
            return name
    base, cap = int(config.get("base_channels") or 0), int(config.get("max_channels") or 0)
    fits = [
        (p["base_channels"], p["max_channels"], name)
        for name, p in GENERATOR_PRESETS.items()
        if p["base_channels"] >= base and p["max_channels"] >= cap
    ]
    return min(fits)[2] if fits else "paper"
