"""Noise matching: give a repainted region the acquisition noise of the tissue around it.

A painter trained for in-region fidelity predicts the *expected* tissue (PSNR and SSIM reward the mean), which is
smoother than a real scan: left as it is, the region would stand out by its missing noise (and a segmenter could
learn "smooth = edited"). :func:`match_noise` measures the noise of the real image in a ring around the region and
of the painted region, and returns Gaussian noise that tops the region up to the ring's level -- none where the
painting already carries as much texture as its surroundings (e.g. a GAN that paints its own texture).

The noise level is measured with a 6-neighbour high-pass filter, ``h(x) = x - mean(6 face neighbours)``, whose
output variance is ``7/6`` of white noise's (:data:`HIGH_PASS_GAIN`), as the median absolute deviation of ``h`` (so
anatomical edges in the ring do not count as noise), on voxels whose 6 neighbours lie in the same set (no
brain/background or region/ring border inside the filter). Added noise has standard deviation
``sqrt(max(0, sd_ring^2 - sd_painted^2) / (7/6))``, independent per voxel, drawn from a ``torch.Generator`` (the
same seed gives the same voxels).

Example:
    >>> import numpy as np, torch
    >>> rng = np.random.default_rng(0)
    >>> image = 100 + rng.normal(0, 5, (24, 24, 24))
    >>> region = np.zeros(image.shape, bool); region[8:16, 8:16, 8:16] = True
    >>> painted = np.full((1, int(region.sum())), 100.0)              # a flat (noise-free) painting
    >>> brain = np.ones(image.shape, bool)
    >>> noise, infos = match_noise([image], painted, region, brain, (1.0,) * 3, torch.Generator().manual_seed(0))
    >>> noise.shape == (1, int(region.sum())), 4.0 < infos[0]["sd"] < 6.0
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from samraug.grid import bounding_box
from samraug.region import dilate_mm

__all__ = ["HIGH_PASS_GAIN", "MIN_VOXELS", "NOISE_MODES", "high_pass", "match_noise", "robust_sd"]

#: Variance of ``h(n)`` for white noise ``n`` of unit variance: ``1 + 6 / 36``.
HIGH_PASS_GAIN = 7.0 / 6.0
#: Fewest filter-valid voxels (ring or region) to measure a noise level on; fewer: no noise added.
MIN_VOXELS = 20
#: The painters' ``noise`` options: top the region's noise up to its surroundings', or leave the painting as is.
NOISE_MODES = ("match", "none")


def high_pass(volume: np.ndarray) -> np.ndarray:
    """``x - mean(6 face neighbours)`` (float64); 0 on the volume's outer faces (no full neighbourhood there).

    Example:
        >>> v = np.zeros((3, 3, 3)); v[1, 1, 1] = 6.0
        >>> float(high_pass(v)[1, 1, 1])
        6.0
    """
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"high_pass needs a 3D volume, got shape {v.shape}")
    out = np.zeros(v.shape, dtype=np.float64)
    if min(v.shape) < 3:
        return out
    c = v[1:-1, 1:-1, 1:-1]
    neighbours = (
        v[:-2, 1:-1, 1:-1] + v[2:, 1:-1, 1:-1] + v[1:-1, :-2, 1:-1] + v[1:-1, 2:, 1:-1] + v[1:-1, 1:-1, :-2]
    ) + v[1:-1, 1:-1, 2:]
    out[1:-1, 1:-1, 1:-1] = c - neighbours / 6.0
    return out


def robust_sd(values: np.ndarray) -> float:
    """``1.4826 * median(|v - median(v)|)``: the standard deviation of Gaussian values, robust to a minority of
    outliers (edges).

    Example:
        >>> round(robust_sd(np.random.default_rng(0).normal(0, 2.0, 100_000)), 1)
        2.0
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _filter_valid(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose 6 face neighbours are in ``mask`` too (not on the volume's faces)."""
    return ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def match_noise(
    images: Sequence[np.ndarray | torch.Tensor],
    painted: np.ndarray,
    region: np.ndarray,
    brain: np.ndarray,
    spacing: Sequence[float],
    generator: torch.Generator,
    *,
    ring_mm: float = 6.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Noise for the ``region`` voxels of each painting that gives it the noise level of its real image around the
    region. The ring and the filter-valid voxels are found once for all images.

    Args:
        images: The real images, each ``(X, Y, Z)`` (the ring's noise is measured on them; only the region's
            surroundings are read).
        painted: ``(len(images), region.sum())``: the painted values of the region voxels, in
            ``np.flatnonzero(region)`` order (their own texture is measured).
        region: Boolean ``(X, Y, Z)``, the repainted voxels.
        brain: Boolean ``(X, Y, Z)`` brain mask (the ring is brain outside the region).
        spacing: Voxel size in mm (the ring is ``ring_mm`` wide, Euclidean).
        generator: The ``torch.Generator`` the noise is drawn from (``region.sum()`` normal draws, float64, per image
            that gets noise, in the images' order).
        ring_mm: Width of the ring around the region the noise level is measured in.

    Returns:
        ``(noise, infos)``: ``noise`` float64 ``(len(images), region.sum())`` (a row of zeros where nothing is to
        add), and per image ``{"sd", "sd_ring", "sd_painted"}`` (standard deviations in the image's units; ``sd``
        is the added noise's) with ``"reason"`` when no level could be measured.

    Example:
        >>> noise, infos = match_noise([t1n, t2f], painted, region, brain, (2.0,) * 3, gen)  # doctest: +SKIP
    """
    region = np.asarray(region, dtype=bool)
    shape = region.shape
    for k, image in enumerate(images):
        if tuple(image.shape) != shape:
            raise ValueError(f"images[{k}] has shape {tuple(image.shape)}, region {shape}; pass them on one grid")
    if np.shape(brain) != shape:
        raise ValueError(f"brain has shape {np.shape(brain)}, image {shape}; pass them on one grid")
    n = int(region.sum())
    values = np.asarray(painted, dtype=np.float64).reshape(len(images), -1)
    if values.shape[1] != n:
        raise ValueError(
            f"painted holds {values.shape[1]} values per image but the region {n} voxels; pass the region's values"
        )
    if not np.isfinite(values).all():
        raise ValueError("painted values contain NaN/inf; replace them (np.nan_to_num) first")
    noise = np.zeros((len(images), n))
    blank: dict[str, Any] = {"sd": 0.0, "sd_ring": 0.0, "sd_painted": 0.0}
    if n == 0:
        return noise, [blank | {"reason": "empty region"} for _ in images]
    outer = dilate_mm(region, spacing, ring_mm)
    box = bounding_box(outer)
    assert box is not None  # the region is not empty
    sl = tuple(slice(max(lo - 1, 0), min(hi + 1, size)) for (lo, hi), size in zip(box, shape, strict=True))
    reg, br = region[sl], np.asarray(brain, dtype=bool)[sl]
    ring = _filter_valid(br & ~reg) & outer[sl]
    inside = _filter_valid(reg)
    if int(ring.sum()) < MIN_VOXELS or int(inside.sum()) < MIN_VOXELS:
        reason = f"fewer than {MIN_VOXELS} filter-valid voxels in the ring or region"
        return noise, [blank | {"reason": reason} for _ in images]
    infos = []
    for k, image in enumerate(images):
        crop = image[sl]
        crop = crop.detach().cpu().numpy() if isinstance(crop, torch.Tensor) else np.asarray(crop)
        crop = crop.astype(np.float64)  # a copy: the caller's image is never written
        if not np.isfinite(crop[ring]).all():
            raise ValueError(f"images[{k}] contains NaN/inf around the region; replace them (np.nan_to_num) first")
        sd_ring = robust_sd(high_pass(crop)[ring])
        crop[reg] = values[k]  # the box keeps the region's C order
        sd_painted = robust_sd(high_pass(crop)[inside])
        sd = float(np.sqrt(max(0.0, sd_ring**2 - sd_painted**2) / HIGH_PASS_GAIN))
        gain = np.sqrt(HIGH_PASS_GAIN)
        infos.append({"sd": sd, "sd_ring": sd_ring / gain, "sd_painted": sd_painted / gain})
        if sd > 0.0:
            noise[k] = sd * torch.randn(n, generator=generator, dtype=torch.float64).numpy()
    return noise, infos
