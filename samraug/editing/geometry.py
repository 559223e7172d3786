"""Resampling of lesion crops: affine maps, smooth displacement fields and the boxes they land in.

A lesion crop is an ``int64`` array holding label values where there is lesion and ``-1`` elsewhere, plus the
integer position of its first voxel in the volume (``origin``). :func:`warp` returns a new crop and origin, in
volume coordinates; nothing here looks at the rest of the volume, so the cost scales with the lesion.

Resampling is categorical: each label value is resampled as its own indicator with linear interpolation, the
SAMR class of an output voxel is the class whose summed indicators win over "no lesion" (ties: no lesion),
and its value the most likely value of that class. This keeps class volumes unbiased (a tumour of ET and NETC
is resampled as one tumour) and is exact wherever the map lands on integer coordinates.

Example:
    >>> import numpy as np
    >>> crop = np.array([[2, 2], [2, 4]])
    >>> lut = np.array([-1, 4, 2, -1, 4, -1])  # brats2021 value -> SAMR class (last entry: the -1 sentinel)
    >>> out, origin = warp(crop, np.array([10, 10]), np.eye(2), np.zeros(2), lut)  # identity
    >>> origin.tolist(), out[3:5, 3:5].tolist()
    ([7, 7], [[2, 2], [2, 4]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = ["rotation_matrix", "smooth_field", "warp"]


def rotation_matrix(angles_deg: Sequence[float], ndim: int) -> np.ndarray:
    """Rotation matrix for ``ndim`` 2 (one angle, in the plane of axes 0 and 1) or 3 (angles about axes 0, 1, 2,
    applied in that order; the angle about axis 2 rotates within axial slices). Degrees, right-handed."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if ndim == 2:
        c, s = np.cos(a[0]), np.sin(a[0])
        return np.array([[c, -s], [s, c]])
    mats = []
    for axis, ang in enumerate(a):
        c, s = np.cos(ang), np.sin(ang)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        mats.append(m)
    return mats[2] @ mats[1] @ mats[0]


def _forward_box(lo: np.ndarray, hi: np.ndarray, fwd: np.ndarray, fwd_off: np.ndarray, margin: int):
    """Integer box containing the image of the voxel box ``[lo, hi)`` under ``p -> fwd @ p + fwd_off``."""
    ndim = len(lo)
    corners = np.array(np.meshgrid(*[[lo[d] - 0.5, hi[d] - 0.5] for d in range(ndim)], indexing="ij"))
    corners = corners.reshape(ndim, -1)
    moved = fwd @ corners + fwd_off[:, None]
    out_lo = np.floor(moved.min(axis=1)).astype(np.int64) - margin
    out_hi = np.ceil(moved.max(axis=1)).astype(np.int64) + 1 + margin
    return out_lo, out_hi


def _bspline(t: np.ndarray) -> np.ndarray:
    """The uniform cubic B-spline kernel."""
    t = np.abs(t)
    return np.where(t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - np.minimum(t, 2)) ** 3 / 6, 0.0))


def _box_slices(lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _channels(crop: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """One float32 indicator per label value, each on its own bounding box padded by one voxel of zeros:
    ``(value, local_lo, indicator)`` with ``local_lo`` the crop coordinates of the indicator's first voxel."""
    out = []
    for v, box in enumerate(ndimage.find_objects(crop + 1)):  # one pass: the box of every value (label v + 1)
        if box is not None:
            lo = np.array([b.start for b in box])
            out.append((v, lo - 1, np.pad((crop[box] == v).astype(np.float32), 1)))
    return out


def _categorical(
    pieces: list[tuple[int, np.ndarray, np.ndarray]], shape: tuple[int, ...], lut: np.ndarray
) -> np.ndarray:
    """Decide each output voxel from resampled indicators ``(value, box_lo, weights)``: class first, then value."""
    total = np.zeros(shape, dtype=np.float32)
    for _, lo, w in pieces:
        total[_box_slices(lo, lo + w.shape)] += w
    best = 1.0 - total  # "no lesion" wins ties
    out = np.full(shape, -1, dtype=np.int64)
    classes = np.array([lut[v] for v, _, _ in pieces])
    for cls in np.unique(classes):
        members = [pieces[i] for i in np.flatnonzero(classes == cls)]
        lo = np.min([p[1] for p in members], axis=0)
        hi = np.max([p[1] + p[2].shape for p in members], axis=0)
        box = _box_slices(lo, hi)
        cls_p = np.zeros(tuple(hi - lo), dtype=np.float32)
        val = np.full(cls_p.shape, members[0][0], dtype=np.int64)
        val_p = np.zeros(cls_p.shape, dtype=np.float32)
        for v, plo, w in members:
            sub = _box_slices(plo - lo, plo - lo + w.shape)
            cls_p[sub] += w
            better = w > val_p[sub]
            val[sub][better] = v
            val_p[sub][better] = w[better]
        win = cls_p > best[box]
        out[box][win] = val[win]
        best[box][win] = cls_p[win]
    return out


def warp(
    crop: np.ndarray,
    origin: np.ndarray,
    matrix: np.ndarray,
    offset: np.ndarray,
    lut: np.ndarray,
    perturb: tuple[float, float, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a lesion crop under ``p_src = matrix @ (p_out + d(p_out)) + offset`` (volume coordinates).

    Args:
        crop: ``int64`` label values, ``-1`` where there is no lesion.
        origin: Volume coordinates of ``crop[0, ...]``.
        matrix, offset: The inverse affine map (output voxel -> source voxel), as for
            ``scipy.ndimage.affine_transform``.
        lut: Value -> SAMR class table (``samraug.editing.validity.class_lut``).
        perturb: ``(strength, smoothness, seed)`` of a smooth displacement field ``d`` (:func:`smooth_field`) on
            the output box; ``None`` for ``d = 0``.

    Returns:
        The resampled crop and its origin (may lie partly outside the volume; the caller clips).
    """
    ndim = crop.ndim
    fwd = np.linalg.inv(matrix)
    fwd_off = -fwd @ offset
    lo = np.asarray(origin, dtype=np.int64)
    reach = 0 if perturb is None else int(np.ceil(perturb[0])) + 1
    margin = 1 + int(np.ceil(0.5 * np.linalg.norm(fwd, 2)))
    out_lo, out_hi = _forward_box(lo, lo + crop.shape, fwd, fwd_off, margin + reach)
    shape = tuple(int(x) for x in out_hi - out_lo)
    field = None if perturb is None else smooth_field(shape, perturb[1], perturb[0], perturb[2])
    # a diagonal matrix (scaling, mirroring, moving) takes scipy's much faster separable path
    diag = np.diag(matrix).copy() if np.array_equal(matrix, np.diag(np.diag(matrix))) else None
    pieces = []
    for v, clo, ind in _channels(crop):
        src_lo = lo + clo  # volume coordinates of the indicator's first voxel
        plo, phi = _forward_box(src_lo + 1, src_lo + np.array(ind.shape) - 1, fwd, fwd_off, margin + reach)
        plo, phi = np.maximum(plo, out_lo), np.minimum(phi, out_hi)
        local_off = matrix @ plo + offset - src_lo  # q_src (indicator) = matrix @ q_out + local_off
        out_shape = tuple(int(x) for x in phi - plo)
        if field is None:
            w = ndimage.affine_transform(
                ind,
                diag if diag is not None else matrix,
                offset=local_off,
                output_shape=out_shape,
                order=1,
                mode="constant",
                cval=0.0,
            )
        else:
            q = np.indices(out_shape, dtype=np.float64) + field[(slice(None), *_box_slices(plo - out_lo, phi - out_lo))]
            coords = np.tensordot(matrix, q, axes=1) + local_off.reshape((ndim,) + (1,) * ndim)
            w = ndimage.map_coordinates(ind, coords, order=1, mode="constant", cval=0.0)
        pieces.append((v, plo - out_lo, w))
    if not pieces:
        return np.full(shape, -1, dtype=np.int64), out_lo
    return _categorical(pieces, shape, lut), out_lo


def smooth_field(shape: Sequence[int], spacing: float, strength: float, seed: int) -> np.ndarray:
    """A smooth random displacement field ``(ndim, *shape)`` whose largest vector has length ``strength``.

    Standard-normal control vectors on a grid of ``spacing`` voxels (drawn from a ``torch.Generator`` seeded
    with ``seed``) are combined with uniform cubic B-splines (separable, so the cost is a few matrix products).
    Same seed and shape, same field.
    """
    ndim = len(shape)
    coarse = tuple(int(np.floor((s - 1) / spacing)) + 4 for s in shape)
    gen = torch.Generator().manual_seed(int(seed))
    field = torch.randn((ndim, *coarse), generator=gen, dtype=torch.float64).numpy()
    for s, n in zip(shape, coarse, strict=True):
        basis = _bspline(np.arange(s)[:, None] / spacing + 1.0 - np.arange(n)[None, :])  # (s, n)
        field = np.moveaxis(field, 1, -1) @ basis.T  # contracts the first spatial axis, appends the new one
    norm = np.sqrt((field**2).sum(axis=0)).max()
    if norm > 0:
        field *= strength / norm
    return np.ascontiguousarray(field)
