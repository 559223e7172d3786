"""Image statistics for synthesis-quality reports: per-class contrast, checkerboard index, inter-slice change, and
the intensity match that turns an atlas into an "atlas alone" baseline.

All functions take numpy arrays or torch tensors on one voxel grid ``(X, Y, Z)`` (axial slices along the last axis)
and boolean masks of the same shape; they return plain floats (or a new array) and raise ``ValueError`` on empty
masks, shape mismatches or non-finite values.

* :func:`contrast` - ``(mean of a class - mean of normal brain) / SD of normal brain`` ("SD of normal brain").
* :func:`contrast_table` - that contrast for every lesion class of a label scheme and every sequence.
* :func:`checkerboard_index` - the share of in-brain spectral energy at the Nyquist frequencies of the axial
  slices: each slice is cut into 8 x 8 squares, and over the squares wholly inside the brain (plane removed) the
  energy of the 2D DFT's row and column at index 4 (the period-2 patterns ``(-1)^i``, ``(-1)^j``, ``(-1)^(i+j)``)
  is divided by the total energy. A pure period-2 checkerboard has index 1 (on any grid), a smooth image about 0,
  white noise 15/64. A synthetic image is compared with real images of the same grid by the ratio of the indices.
* :func:`slice_consistency` - mean ``|v[..., z+1] - v[..., z]|`` over voxel pairs both inside the brain.
* :func:`slice_change_rms` - the root-mean-square of that change; given a second acquisition of the same anatomy
  with independent noise (a noise reference), the noise's share is removed, leaving the anatomy's own change.
* :func:`match_intensity` - a linear map ``a x + b`` that gives an image the subject's brain mean and SD.

Example:
    >>> import numpy as np
    >>> x = np.indices((8, 8, 2)).sum(0) % 2 * 2.0 - 1.0  # period-2 checkerboard in every axial slice
    >>> round(checkerboard_index(x, np.ones(x.shape, bool)), 6)
    1.0
    >>> ramp = np.broadcast_to(np.arange(4.0) * 0.5, (3, 3, 4))  # +0.5 per slice
    >>> slice_consistency(ramp, np.ones(ramp.shape, bool))
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "checkerboard_index",
    "contrast",
    "contrast_table",
    "match_intensity",
    "slice_change_rms",
    "slice_consistency",
]


def _array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == bool:
        raise ValueError(f"{what} is boolean; expected intensities")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf; replace them (e.g. np.nan_to_num) first")
    return a


def _mask(m: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    b = np.asarray(m).astype(bool, copy=False)
    if b.shape != shape:
        raise ValueError(f"{what} has shape {b.shape} but the image {shape}; pass a mask on the image's grid")
    return b


def contrast(image: Any, cls: Any, normal: Any, *, min_voxels: int = 2) -> float:
    """``(mean(image[cls]) - mean(image[normal])) / std(image[normal])``: a class's contrast in SD of normal brain.

    Args:
        image: Intensities ``(X, Y, Z)`` (any shape; the masks must match it).
        cls: Mask of the class.
        normal: Mask of normal brain (brain without lesion).
        min_voxels: Fewest voxels each mask must hold.

    Example:
        >>> import numpy as np
        >>> img = np.array([0.0, 2.0, 0.0, 2.0, 7.0, 7.0])  # normal brain mean 1, SD 1; the class at 7: +6 SD
        >>> contrast(img, img == 7, img < 7)
        6.0
    """
    a = _array(image, "image")
    c, n = _mask(cls, a.shape, "class mask"), _mask(normal, a.shape, "normal-brain mask")
    for what, m in (("class mask", c), ("normal-brain mask", n)):
        if int(m.sum()) < min_voxels:
            raise ValueError(f"{what} holds {int(m.sum())} voxels, fewer than min_voxels={min_voxels}")
    ref = a[n]
    return float((a[c].mean() - ref.mean()) / max(float(ref.std()), 1e-12))


def contrast_table(
    images: Mapping[str, Any],
    label: Any,
    brain: Any,
    classes: Mapping[str, Sequence[int]],
    *,
    exclude: Any = None,
    normal_values: Sequence[int] = (0,),
    min_voxels: int = 10,
) -> dict[str, dict[str, float]]:
    """``{class: {sequence: contrast}}`` for the classes present (at least ``min_voxels`` voxels) in ``label``.

    Args:
        images: ``{sequence: (X, Y, Z)}``.
        label: Label map ``(X, Y, Z)``.
        brain: Brain mask; normal brain is ``brain`` where ``label`` is one of ``normal_values``, minus ``exclude``.
        classes: ``{name: label values}`` (e.g. ``{"ET": (3,)}``).
        exclude: Optional mask removed from normal brain (e.g. an edited region).
        normal_values: Label values of normal brain: ``(0,)`` for a dataset's label scheme, ``(1,)`` for model
            classes (0 background, 1 normal brain).
        min_voxels: Fewest voxels a class needs to be reported.

    Example:
        >>> import numpy as np
        >>> lab = np.zeros((4, 4, 1), int); lab[0, :2] = 3
        >>> img = np.where(lab == 3, 5.0, np.indices(lab.shape)[1] % 2)  # normal brain 0/1: mean .5, SD .5
        >>> contrast_table({"t1c": img}, lab, np.ones(lab.shape, bool), {"ET": (3,), "NETC": (1,)}, min_voxels=2)
        {'ET': {'t1c': 9.0}}
    """
    lab = np.asarray(label.detach().cpu().numpy() if hasattr(label, "detach") else label)
    b = _mask(brain, lab.shape, "brain mask")
    normal = b & np.isin(lab, np.asarray(list(normal_values)))
    if exclude is not None:
        normal &= ~_mask(exclude, lab.shape, "exclude mask")
    out: dict[str, dict[str, float]] = {}
    for name, values in classes.items():
        cls = np.isin(lab, np.asarray(list(values))) & b
        if int(cls.sum()) < min_voxels or int(normal.sum()) < 2:
            continue
        out[name] = {seq: contrast(img, cls, normal) for seq, img in images.items()}
    return out


def checkerboard_index(image: Any, brain: Any, *, tile: int = 8) -> float:
    """Share of in-brain spectral energy at the Nyquist frequencies of the axial slices (see the module docstring).

    Every axial slice ``image[..., z]`` is cut into non-overlapping ``tile x tile`` squares (from the corner); the
    squares lying wholly inside the brain have their best-fitting plane (mean and linear trend) removed and their
    2D power spectrum taken; the index is the energy on the Nyquist row and column (frequency index ``tile / 2``:
    the period-2 patterns) over the total energy, summed over all those squares. In-brain squares keep the brain
    outline and the grid's parity out of the spectrum, and removing the plane keeps a smooth gradient's edge
    leakage out of it: a period-2 checkerboard ``(-1)^(i+j)`` (orthogonal to planes) has index exactly 1 on any
    grid, period-2 stripes 0.95 (tile 8), a constant or planar image 0, a smooth one about 0 (a Gaussian blob of
    sigma 12 voxels: 0.04, the curvature left in each square), white noise about ``(2 tile - 1) / tile^2`` (15/64
    for 8).

    Args:
        image: A slice ``(X, Y)`` or a volume ``(X, Y, Z)``.
        brain: Brain mask of the same shape.
        tile: Even side of the squares, in voxels (>= 2).

    Example:
        >>> import numpy as np
        >>> ramp = np.broadcast_to(np.linspace(0, 1, 16)[:, None, None], (16, 16, 2))
        >>> round(checkerboard_index(ramp, np.ones(ramp.shape, bool)), 6)  # a plane in every square
        0.0
    """
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 2 or tile % 2:
        raise ValueError(f"tile must be an even number of voxels >= 2, got {tile!r}")
    a = _array(image, "image")
    if a.ndim not in (2, 3):
        raise ValueError(f"checkerboard_index expects a slice (X, Y) or a volume (X, Y, Z), got {a.shape}")
    b = _mask(brain, a.shape, "brain mask")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    nx, ny, nz = a.shape[0] // tile, a.shape[1] // tile, a.shape[2]

    def tiles(x: np.ndarray) -> np.ndarray:  # (nx, ny, Z, tile, tile)
        x = x[: nx * tile, : ny * tile]
        return x.reshape(nx, tile, ny, tile, nz).transpose(0, 2, 4, 1, 3)

    inside = tiles(b).all(axis=(-2, -1))
    if not inside.any():
        raise ValueError(
            f"no {tile}x{tile} square of an axial slice lies wholly inside the brain mask: nothing to measure "
            "(pass a smaller tile= or a larger brain)"
        )
    t = tiles(a)[inside]
    c = np.arange(tile) - (tile - 1) / 2.0  # 1, x and y are orthogonal on the square: remove each projection
    t = t - t.mean(axis=(-2, -1), keepdims=True)
    before = float((t**2).sum())
    t = t - (t * c[:, None]).sum(axis=(-2, -1), keepdims=True) / (tile * (c**2).sum()) * c[:, None]
    t = t - (t * c[None, :]).sum(axis=(-2, -1), keepdims=True) / (tile * (c**2).sum()) * c[None, :]
    power = np.abs(np.fft.fft2(t)) ** 2
    half = tile // 2
    nyquist = power[:, half, :].sum() + power[:, :, half].sum() - power[:, half, half].sum()
    total = float(power.sum())
    if total <= 1e-20 * tile * tile * before or total == 0:  # planes only (rounding left): no pattern at all
        return 0.0
    return float(nyquist) / total


def _axial_pairs(volume: Any, brain: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The checked volume ``(X, Y, Z)`` and the mask ``(X, Y, Z-1)`` of axially adjacent voxel pairs both in the
    brain (``what`` names the caller in the errors)."""
    a = _array(volume, "volume")
    if a.ndim != 3:
        raise ValueError(f"{what} expects a volume (X, Y, Z), got {a.shape}")
    b = _mask(brain, a.shape, "brain mask")
    pairs = b[..., 1:] & b[..., :-1]
    if not pairs.any():
        raise ValueError("no two axially adjacent brain voxels: the brain mask is empty or a single slice")
    return a, pairs


def slice_consistency(volume: Any, brain: Any) -> float:
    """Mean ``|v[x, y, z+1] - v[x, y, z]|`` over the pairs of axially adjacent voxels that are both in the brain.

    Example:
        >>> import numpy as np
        >>> v = np.zeros((2, 2, 3)); v[..., 1] = 1.0  # 0 -> 1 -> 0: every step is 1
        >>> slice_consistency(v, np.ones(v.shape, bool))
        1.0
    """
    a, pairs = _axial_pairs(volume, brain, "slice_consistency")
    return float(np.abs(np.diff(a, axis=2))[pairs].mean())


def slice_change_rms(volume: Any, brain: Any, noise_reference: Any | None = None) -> float:
    """Root-mean-square ``v[x, y, z+1] - v[x, y, z]`` over axially adjacent brain voxel pairs.

    With ``noise_reference`` (the same anatomy with independent, zero-mean noise of the same level: e.g. the
    phantom with another ``noise_seed``), the noise's share is removed: for ``v = s + n`` the mean square change is
    ``E[(ds)^2] + 2 sigma^2`` and ``E[(v - ref)^2] = 2 sigma^2`` on the same voxel pairs, so the result is
    ``sqrt(max(0, mean (dv)^2 - mean (v - ref)^2))``, the change of the noise-free signal. A generator paints no
    acquisition noise, so its slice-to-slice change is compared with this one, not with the noisy image's.

    Example:
        >>> import numpy as np
        >>> ramp = np.broadcast_to(np.arange(4.0) * 0.5, (3, 3, 4))  # +0.5 per slice
        >>> slice_change_rms(ramp, np.ones(ramp.shape, bool))
        0.5
        >>> slice_change_rms(ramp, np.ones(ramp.shape, bool), noise_reference=ramp)  # no noise: nothing removed
        0.5
    """
    a, pairs = _axial_pairs(volume, brain, "slice_change_rms")
    change = float((np.diff(a, axis=2)[pairs] ** 2).mean())
    if noise_reference is not None:
        r = _array(noise_reference, "noise reference")
        if r.shape != a.shape:
            raise ValueError(f"noise reference {r.shape} and volume {a.shape} differ: pass the same grid")
        d2 = (a - r) ** 2
        change -= float(((d2[..., 1:] + d2[..., :-1]) / 2.0)[pairs].mean())
    return float(np.sqrt(max(change, 0.0)))


def match_intensity(source: Any, target: Any, source_mask: Any, target_mask: Any | None = None) -> np.ndarray:
    """``source`` mapped linearly so that its mean and SD inside ``source_mask`` equal ``target``'s inside
    ``target_mask`` (default: the same mask). Used to intensity-match an atlas to a subject.

    Example:
        >>> import numpy as np
        >>> m = np.ones(4, bool)
        >>> match_intensity(np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 5.0, 5.0, 1.0]), m).tolist()
        [1.0, 5.0, 1.0, 5.0]
    """
    s, t = _array(source, "source"), _array(target, "target")
    sm = _mask(source_mask, s.shape, "source mask")
    tm = _mask(source_mask if target_mask is None else target_mask, t.shape, "target mask")
    if sm.sum() < 2 or tm.sum() < 2:
        raise ValueError("match_intensity needs at least 2 voxels in each mask")
    s_sd = float(s[sm].std())
    scale = float(t[tm].std()) / s_sd if s_sd > 1e-12 else 0.0
    return (s - s[sm].mean()) * scale + t[tm].mean()
