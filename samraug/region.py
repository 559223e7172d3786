"""The region local synthesis repaints, and the feather weights of its seam.

The region is every voxel whose label changed between the real and the edited mask, plus the old and the new
lesion, dilated by a margin in millimetres (Euclidean distance with the voxel spacing, so anisotropic grids are
fine). With ``seed="changed"`` it is the changed voxels alone, dilated: lesion voxels the edit left as they were
(e.g. the subject's own lesion beside an inserted one, ``EditPolicy(p_insert=...)``) keep their real intensities
unless they lie within the margin of a change. Only region voxels are repainted; the feather map is 1 deep inside
the region, falls smoothly (smoothstep of the distance to the region's outside) to 0 at its border and is 0
outside, so the seam is invisible.

Distances are computed on the region's bounding box only (plus the margin), so a lesion in a 240x240x155 volume
costs a small distance transform, not a whole-volume one.

Example:
    >>> import numpy as np
    >>> before = np.zeros((20, 20, 20), np.int64); before[8:12, 8:12, 8:12] = 2
    >>> after = np.zeros_like(before)
    >>> region = edit_region(before, after, lesion_values=(1, 2, 3), spacing=(1.0, 1.0, 1.0), margin_mm=2.0)
    >>> int(region.sum()) > int((before > 0).sum())
    True
    >>> w = feather_weights(region, spacing=(1.0, 1.0, 1.0), feather_mm=2.0)
    >>> float(w[10, 10, 10]), float(w[0, 0, 0])
    (1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from samraug.grid import bounding_box

__all__ = ["REGION_SEEDS", "check_mm", "dilate_mm", "edit_region", "feather_weights"]

#: What seeds the repainted region before the margin: the changed voxels plus the old and new lesion (``"lesions"``,
#: the default), or the changed voxels alone (``"changed"``).
REGION_SEEDS = ("lesions", "changed")


def _spacing(spacing: Sequence[float]) -> np.ndarray:
    s = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if s.size != 3 or not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"spacing must be 3 positive voxel sizes in mm, got {list(np.ravel(spacing))}")
    return s


def check_mm(value: Any, name: str) -> float:
    """A length in mm as a float; a ``ValueError`` naming ``name`` unless it is a finite number >= 0.

    Example:
        >>> check_mm(2, "margin_mm")
        2.0
        >>> check_mm(-1, "feather_mm")
        Traceback (most recent call last):
        ...
        ValueError: feather_mm must be a finite number of mm >= 0, got -1
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number of mm >= 0, got {value!r}") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number of mm >= 0, got {value!r}")
    return v


def dilate_mm(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` (Euclidean, voxel centres, spacing-aware) of a True voxel of ``mask``.

    Example:
        >>> m = np.zeros((1, 1, 9), bool); m[0, 0, 4] = True
        >>> dilate_mm(m, (1.0, 1.0, 2.0), 4.0)[0, 0].astype(int).tolist()
        [0, 0, 1, 1, 1, 1, 1, 0, 0]
    """
    s = _spacing(spacing)
    margin = check_mm(margin_mm, "margin_mm")
    m = np.asarray(mask, dtype=bool)
    out = np.zeros(m.shape, dtype=bool)
    box = bounding_box(m)
    if box is None:
        return out
    pad = np.floor(margin / s + 1e-9).astype(np.int64)
    sl = tuple(
        slice(max(0, lo - int(p)), min(n, hi + int(p))) for (lo, hi), p, n in zip(box, pad, m.shape, strict=True)
    )
    sub = m[sl]
    if margin == 0:
        out[sl] = sub
        return out
    dist = ndimage.distance_transform_edt(~sub, sampling=s)
    out[sl] = dist <= margin + 1e-6
    return out


def edit_region(
    label_before: np.ndarray,
    label_after: np.ndarray,
    *,
    lesion_values: Sequence[int],
    spacing: Sequence[float],
    margin_mm: float = 8.0,
    seed: str = "lesions",
) -> np.ndarray:
    """The repainted region: changed voxels plus the old and new lesion, dilated by ``margin_mm``.

    Args:
        label_before, label_after: Label maps of the same shape (any integer scheme).
        lesion_values: The label values that are lesion (e.g. ``scheme.lesion_values``).
        spacing: Voxel size in mm along each axis.
        margin_mm: Dilation in mm (0: no dilation).
        seed: ``"lesions"`` (default): the changed voxels plus the old and the new lesion; ``"changed"``: the
            changed voxels alone (unchanged lesion voxels farther than ``margin_mm`` from a change stay real).

    Returns:
        Boolean mask of the label maps' shape.
    """
    before, after = np.asarray(label_before), np.asarray(label_after)
    if before.shape != after.shape:
        raise ValueError(
            f"label_before {before.shape} and label_after {after.shape} differ in shape; pass both on one grid"
        )
    if seed not in REGION_SEEDS:
        raise ValueError(f"seed must be one of {REGION_SEEDS}, got {seed!r}")
    core = before != after
    if seed == "lesions":
        values = np.asarray(sorted(int(v) for v in lesion_values), dtype=np.int64)
        core |= np.isin(before, values) | np.isin(after, values)
    return dilate_mm(core, spacing, margin_mm)


def feather_weights(region: np.ndarray, spacing: Sequence[float], feather_mm: float = 3.0) -> np.ndarray:
    """Blend weights (float32): ``smoothstep(d / feather_mm)`` with ``d`` the distance (mm) from a region voxel to
    the nearest voxel outside the region; 0 outside the region, 1 where ``d >= feather_mm`` (``feather_mm=0``: 1 in
    the whole region).

    Example:
        >>> r = np.zeros((1, 1, 9), bool); r[0, 0, 1:8] = True
        >>> feather_weights(r, (1.0, 1.0, 1.0), 3.0)[0, 0].astype(float).round(3).tolist()
        [0.0, 0.259, 0.741, 1.0, 1.0, 1.0, 0.741, 0.259, 0.0]
    """
    s = _spacing(spacing)
    feather = check_mm(feather_mm, "feather_mm")
    r = np.asarray(region, dtype=bool)
    w = np.zeros(r.shape, dtype=np.float32)
    box = bounding_box(r)
    if box is None:
        return w
    if feather == 0:
        w[r] = 1.0
        return w
    # One voxel of padding so the box's own faces count as outside only where the volume ends.
    sl = tuple(slice(max(0, lo - 1), min(n, hi + 1)) for (lo, hi), n in zip(box, r.shape, strict=True))
    sub = r[sl]
    padded = np.pad(sub, 1, mode="constant", constant_values=False)
    # The volume's own faces are not "outside": replicate there so a region touching the edge is not feathered.
    for axis, (s_, n) in enumerate(zip(sl, r.shape, strict=True)):
        idx_lo = [slice(None)] * 3
        idx_hi = [slice(None)] * 3
        if s_.start == 0:
            idx_lo[axis] = slice(0, 1)
            src = [slice(None)] * 3
            src[axis] = slice(1, 2)
            padded[tuple(idx_lo)] = padded[tuple(src)]
        if s_.stop == n:
            idx_hi[axis] = slice(-1, None)
            src = [slice(None)] * 3
            src[axis] = slice(-2, -1)
            padded[tuple(idx_hi)] = padded[tuple(src)]
    dist = ndimage.distance_transform_edt(padded, sampling=s)[1:-1, 1:-1, 1:-1]
    t = np.clip(dist / feather, 0.0, 1.0)
    w_sub = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    w[sl] = np.where(sub, w_sub, np.float32(0.0))
    return w
