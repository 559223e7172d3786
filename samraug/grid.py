"""Voxel-grid geometry: spacings, crop boxes, RAS model grids and resampling between grids.

A grid is a ``(shape, affine)`` pair: the 4x4 affine maps voxel indices ``(i, j, k, 1)`` to world millimetres (RAS,
as in NIfTI). Local synthesis crops a box around the region, resamples it to the model's own grid (axes along the
world's R, A and S directions, the model's voxel size, slices along S) and maps the painted result back. All the
work is done by :func:`scipy.ndimage.affine_transform` / :func:`scipy.ndimage.map_coordinates` (no Python loop over
voxels): labels and masks with nearest neighbour (``order=0``), images trilinearly (``order=1``). Where every target
voxel falls exactly on a source voxel (a crop, flip, axis permutation or integer subsampling: a 2 mm subject on the
2 mm model grid) :func:`resample` copies the voxels instead, which is what the interpolation returns, ~10x faster;
where only one axis's offset is fractional (a subject reflected about its mid-sagittal plane) it interpolates along
that axis alone, which is again what the trilinear interpolation returns there.

Example:
    >>> import numpy as np
    >>> affine = np.diag([-1.0, -1.0, 3.0, 1.0])  # LPS-like, 1 x 1 x 3 mm
    >>> voxel_spacing(affine).tolist()
    [1.0, 1.0, 3.0]
    >>> shape, grid = ras_grid(np.zeros(3), np.array([10.0, 10.0, 9.0]), (2.0, 2.0, 2.0), multiple=4)
    >>> shape
    (8, 8, 6)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "bounding_box",
    "check_affine",
    "crop_affine",
    "ras_grid",
    "resample",
    "sample_points",
    "voxel_spacing",
    "world_corners",
]


def check_affine(affine: np.ndarray, what: str = "affine") -> np.ndarray:
    """The affine as a float64 4x4 array; ``ValueError`` naming ``what`` if it is not a finite invertible 4x4.

    Example:
        >>> check_affine(np.eye(4)).shape
        (4, 4)
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ValueError(f"{what} must be a finite 4x4 matrix (voxel -> world mm), got shape {a.shape}")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{what} must have last row [0, 0, 0, 1], got {a[3].tolist()}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise ValueError(f"{what} is singular (zero voxel size along some axis); pass the image's real affine")
    return a


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each voxel axis (the column norms of the affine's 3x3 part).

    Example:
        >>> voxel_spacing(np.diag([2.0, -2.0, 3.0, 1.0])).tolist()
        [2.0, 2.0, 3.0]
    """
    return np.linalg.norm(check_affine(affine)[:3, :3], axis=0)


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """``((lo, hi), ...)`` per axis (``hi`` exclusive) of the True voxels of ``mask``, or None when it is empty.

    Example:
        >>> m = np.zeros((4, 5, 6), bool); m[1, 2:4, 5] = True
        >>> bounding_box(m)
        ((1, 2), (2, 4), (5, 6))
    """
    m = np.asarray(mask, dtype=bool)
    box = []
    for axis in range(m.ndim):
        other = tuple(a for a in range(m.ndim) if a != axis)
        hit = np.flatnonzero(m.any(axis=other))
        if hit.size == 0:
            return None
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def crop_affine(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
    """The affine of a crop starting at voxel ``start`` (same orientation and spacing).

    Example:
        >>> crop_affine(np.diag([2.0, 2.0, 2.0, 1.0]), (1, 2, 3))[:3, 3].tolist()
        [2.0, 4.0, 6.0]
    """
    a = check_affine(affine).copy()
    a[:3, 3] = a[:3, :3] @ np.asarray(start, dtype=np.float64) + a[:3, 3]
    return a


def world_corners(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates ``(8, 3)`` of the centres of the 8 corner voxels of a grid.

    Example:
        >>> world_corners((2, 2, 2), np.eye(4)).max(0).tolist()
        [1.0, 1.0, 1.0]
    """
    hi = np.asarray(shape, dtype=np.float64) - 1.0
    idx = np.array([[x, y, z] for x in (0.0, hi[0]) for y in (0.0, hi[1]) for z in (0.0, hi[2])])
    a = check_affine(affine)
    return idx @ a[:3, :3].T + a[:3, 3]


#: Distance (mm) within which a box edge counts as lying on a grid point of :func:`ras_grid`.
_SNAP_MM = 5e-7


def ras_grid(
    world_min: np.ndarray,
    world_max: np.ndarray,
    voxel_size: Sequence[float],
    *,
    multiple: int = 1,
    min_shape: Sequence[int] = (1, 1, 1),
) -> tuple[tuple[int, int, int], np.ndarray]:
    """A RAS-aligned grid of voxel size ``voxel_size`` covering the world box ``[world_min, world_max]``.

    The in-plane sizes (first two axes) are rounded up to a multiple of ``multiple`` and to at least
    ``min_shape`` (extra voxels split on both sides); grid points lie on multiples of the voxel size, so a world
    point's place on the grid never depends on the box or the subject's orientation. Returns ``(shape, affine)``.

    Example:
        >>> shape, a = ras_grid(np.zeros(3), np.ones(3) * 3, (1.0, 1.0, 1.0), multiple=8)
        >>> shape, a[:3, 3].tolist()
        ((8, 8, 4), [-2.0, -2.0, 0.0])
    """
    vs = np.asarray(voxel_size, dtype=np.float64).reshape(3)
    if not (np.isfinite(vs).all() and (vs > 0).all()):
        raise ValueError(f"voxel_size must be 3 positive numbers (mm), got {list(voxel_size)}")
    lo, hi = np.asarray(world_min, dtype=np.float64), np.asarray(world_max, dtype=np.float64)
    # Origin on the world lattice of the voxel size: the grid depends on the box only, never on the subject's
    # orientation (an LPS and a RAS copy of one subject sample the same points).
    # A box edge within _SNAP_MM of a lattice point counts as on it (absorbs rounding in world coordinates); the
    # tolerance is in mm, so the grid covers the box to within it whatever the voxel size.
    first = np.floor((lo + _SNAP_MM) / vs)
    n = (np.ceil((hi - _SNAP_MM) / vs) - first).astype(np.int64) + 1
    want = np.maximum(n, np.asarray(min_shape, dtype=np.int64))
    m = max(1, int(multiple))
    want[:2] = -(-want[:2] // m) * m
    origin = (first - (want - n) // 2) * vs  # extra voxels split around the box
    n = want
    affine = np.eye(4)
    affine[:3, :3] = np.diag(vs)
    affine[:3, 3] = origin
    return (int(n[0]), int(n[1]), int(n[2])), affine


def _index_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset taking destination voxel indices to source voxel indices."""
    m = np.linalg.inv(check_affine(src_affine, "source affine")) @ check_affine(dst_affine, "target affine")
    return m[:3, :3], m[:3, 3]


def resample(
    volume: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: Sequence[int],
    dst_affine: np.ndarray,
    *,
    order: int,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample ``volume`` (on ``src_affine``) onto the grid ``(dst_shape, dst_affine)``.

    ``order=0`` (nearest: labels, masks; the dtype is kept) or ``order=1`` (trilinear: images, float32). Points
    outside the source take ``cval``.

    Example:
        >>> v = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
        >>> resample(v, np.eye(4), (2, 2, 2), np.eye(4), order=1).tolist() == v.tolist()
        True
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (labels) or 1 (images), got {order}")
    v = np.asarray(volume)
    matrix, offset = _index_map(src_affine, dst_affine)
    shape = tuple(int(s) for s in dst_shape)
    lattice = _lattice_indices(matrix, offset, v.shape, shape, order) if v.ndim == 3 else None
    if lattice is not None and (order == 0 or np.isfinite(v).all()):
        return _gather(v if order == 0 else v.astype(np.float32, copy=False), *lattice, cval)
    if order == 0:
        if v.dtype == bool:
            out = ndimage.affine_transform(v.view(np.uint8), matrix, offset, shape, order=0, cval=int(bool(cval)))
            return out.astype(bool)
        return ndimage.affine_transform(v, matrix, offset, shape, order=0, cval=cval)
    return ndimage.affine_transform(v.astype(np.float32, copy=False), matrix, offset, shape, order=1, cval=cval)


def _lattice_indices(
    matrix: np.ndarray, offset: np.ndarray, src_shape: Sequence[int], dst_shape: Sequence[int], order: int = 0
) -> tuple[list[int], list[np.ndarray], list[np.ndarray | None], list[np.ndarray]] | None:
    """Where every target voxel falls on a source voxel -- ``matrix`` (target to source indices) has one integer
    entry per row and column and ``offset`` is integral, exactly: a crop, flip, axis permutation or integer
    subsampling between grids -- or, for ``order=1``, on a line of source voxels along one axis, whose offset alone
    is fractional (the mid-sagittal reflection of a subject on its own grid): the source axis read along each target
    axis, the source index of each target position along it (the lower neighbour on the fractional axis), the weight
    of the upper neighbour (None on the other axes) and whether the position lies inside the source; ``None``
    otherwise."""
    if not np.array_equal(matrix, np.round(matrix)):
        return None
    nonzero = matrix != 0
    if not (nonzero.sum(axis=0) == 1).all() or not (nonzero.sum(axis=1) == 1).all():
        return None
    fractional = offset != np.round(offset)
    if fractional.any() and (order == 0 or fractional.sum() > 1):
        return None
    axes = [int(np.flatnonzero(nonzero[:, d])[0]) for d in range(3)]  # the source axis of target axis d
    index, upper, inside = [], [], []
    for d, a in enumerate(axes):
        x = matrix[a, d] * np.arange(int(dst_shape[d]), dtype=np.float64) + offset[a]
        low = np.floor(x)
        index.append(low.astype(np.int64))
        upper.append(x - low if fractional[a] else None)
        inside.append((x >= 0) & (x <= int(src_shape[a]) - 1))
    return axes, index, upper, inside


def _gather(
    volume: np.ndarray,
    axes: list[int],
    index: list[np.ndarray],
    upper: list[np.ndarray | None],
    inside: list[np.ndarray],
    cval: float,
) -> np.ndarray:
    """:func:`resample` on a :func:`_lattice_indices` map: the source voxels copied, or on a fractional axis the
    two neighbours weighted ``1 - w`` and ``w`` in float64 -- what the interpolation returns there, bit for bit --
    and ``cval`` where a target voxel falls outside the source."""
    source = volume.transpose(axes)
    fill = bool(cval) if volume.dtype == bool else cval
    if not source.size:
        return np.full([len(i) for i in index], fill, dtype=volume.dtype)
    clipped = [np.clip(i, 0, n - 1) for i, n in zip(index, source.shape, strict=True)]
    out = source[np.ix_(*clipped)]
    for d, w in enumerate(upper):
        if w is not None:
            above = list(clipped)
            above[d] = np.minimum(clipped[d] + 1, source.shape[d] - 1)
            shape = [1, 1, 1]
            shape[d] = -1
            w = w.reshape(shape)
            out = ((1.0 - w) * out + w * source[np.ix_(*above)]).astype(volume.dtype)
    if not all(ok.all() for ok in inside):
        out[~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])] = fill
    return out


def sample_points(
    volume: np.ndarray,
    volume_affine: np.ndarray,
    points: np.ndarray,
    points_affine: np.ndarray,
    *,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Sample ``volume`` at voxel indices ``points`` ``(N, 3)`` of another grid (affine ``points_affine``).

    Used to map a painted model-grid volume back onto exactly the region voxels of the subject.

    Example:
        >>> v = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
        >>> sample_points(v, np.eye(4), np.array([[1, 1, 1]]), np.eye(4)).tolist()
        [7.0]
    """
    matrix, offset = _index_map(volume_affine, points_affine)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    coords = (p @ matrix.T + offset).T
    v = np.asarray(volume)
    if order == 1:
        v = v.astype(np.float32, copy=False)
    return ndimage.map_coordinates(v, coords, order=order, cval=cval, mode="constant")
