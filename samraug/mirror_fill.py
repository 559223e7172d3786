"""Healthy-tissue inpainting guided by the other hemisphere (the ``healthy="mirror"`` fill of local painting).

A smooth fill (:func:`samraug.seam.spline_fill`) continues the values and slopes of the brain around a region, but
cannot know the structure inside it: a sulcus, the edge of a ventricle, the grey-white boundary that runs through.
The brain is nearly symmetric about its mid-sagittal plane, so the other hemisphere holds that structure at the
mirrored place. :func:`mirror_guided_fill` uses it as a guide:

1. the guide ``g`` is the subject's image reflected about the plane (world ``x = plane``; :func:`reflect_x`),
   resampled onto the painting grid with ``search`` voxels of padding, lightly smoothed over its healthy voxels
   (``sigma``: the guide's own acquisition noise would otherwise be copied into the region);
2. a shift of the guide by up to ``search`` voxels along each axis is chosen where it best predicts the real image
   on a ring of ``ring`` voxels of healthy brain around the region (the largest mean over sequences of the squared
   positive correlation: the share of the ring's variance a gain per sequence explains): a real head is not placed
   exactly on the plane and its two hemispheres differ by a smooth deformation, which a local shift absorbs (the
   search is coarse to fine, :func:`_search_shifts`: the shifts with even coordinates, then a descent from the
   best of them);
3. per sequence a gain ``a`` (least squares on the ring, clipped to ``[0, MAX_GAIN]``: a guide that does not
   predict the ring is faded out rather than copied) scales the guide. A region wider than a ``cell`` (8 voxels)
   follows the deformation piecewise: its bounding box is cut into cells (at most :data:`MAX_CELLS_PER_AXIS` per
   axis), each cell's shift (within :data:`CELL_SEARCH` of the whole ring's) and gains are fitted the same way on
   the share :data:`CELL_RING_SHARE` of the ring nearest its centre (kept at the whole ring's unless clearly better
   there, by :data:`CELL_MARGIN`), and the cells' scaled guides are blended with Gaussian weights half a cell wide
   around their centres;
4. the difference ``image - a * g`` --
   smooth where the guide is right: bias field, hemispheric differences -- is filled by the spline
   (:func:`~samraug.seam.spline_fill`) from the real brain around the region, so the result meets the real image at
   the region's border and carries the mirrored structure inside. Where the mirrored place is not healthy brain
   (a lesion, the region's own mirror image near the midline, outside the brain) the guide is continued there by
   the harmonic fill of its healthy part.

When no shift finds enough healthy guide voxels on the ring, the plain spline fill is returned and ``info`` says why.

On the local quality benchmark's held-out phantom regions (2 mm; README, Results, Local synthesis quality) this
scores 0.7-2.4 dB and 0.03-0.06 SSIM above the spline fill on t1n, t1c, T2w and FLAIR (0.3-1.1 dB and 0.02-0.04
on 12 regions of 6 other held-out subjects); the cells add 0.15-0.5 dB to one shift per region on both sets.

Example:
    >>> import numpy as np
    >>> x, y, z = np.meshgrid(np.arange(16.0), np.arange(12.0), np.arange(12.0), indexing="ij")
    >>> image = np.cos(np.abs(x - 7.5) / 1.5) + np.sin(y / 2) * np.cos(z / 3)  # symmetric about x = 7.5
    >>> region = np.zeros(image.shape, bool); region[2:5, 4:8, 4:8] = True
    >>> guide = np.pad(image[::-1], 2, mode="edge")[None]     # the reflection, padded by search = 2 voxels
    >>> known = ~region
    >>> fill, info = mirror_guided_fill(image[None], region, known, guide, np.pad(known[::-1], 2), search=2, sigma=0)
    >>> info["guided"], info["shift"], bool(np.abs(fill[0][region] - image[region]).max() < 1e-4)
    (True, [0, 0, 0], True)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from samraug.seam import SPLINE_TENSION, check_tolerance, fill_inputs, harmonic_fill, spline_fill

__all__ = [
    "CELL_MARGIN",
    "CELL_RING_SHARE",
    "CELL_SEARCH",
    "MAX_CELLS_PER_AXIS",
    "MAX_GAIN",
    "MIN_CELL_RING",
    "MIN_RING_COVER",
    "MIRROR_CELL",
    "MIRROR_RING",
    "MIRROR_SEARCH",
    "MIRROR_SIGMA",
    "MIRROR_TOLERANCE",
    "SEARCH_STARTS",
    "brain_midplane",
    "mirror_guided_fill",
    "reflect_x",
]

#: Largest shift (voxels of the painting grid, per axis) of the mirrored guide tried by :func:`mirror_guided_fill`.
#: On the local quality benchmark's 2 mm phantom regions: 0 (the plane alone) +0.1-0.3 dB over the spline fill,
#: 3 voxels +0.4-0.9 dB, 4 voxels +0.6-1.9 dB, 5 no further gain.
MIRROR_SEARCH = 4
#: Width (voxels) of the ring of healthy brain around the region on which the shift and gains are fitted.
MIRROR_RING = 3
#: Gaussian smoothing (voxels) of the guide before use: 0.7 scored best of 0, 0.5, 0.7, 1.0, 1.2 on those regions.
MIRROR_SIGMA = 0.7
#: Upper clip of a sequence's guide gain.
MAX_GAIN = 2.0
#: Fraction of the ring whose mirrored voxel must be healthy brain for a shift to be considered.
MIN_RING_COVER = 0.8
#: Size (voxels of the painting grid) of the cells of a region's bounding box that get their own guide shift and
#: gains (the two hemispheres differ by a smooth deformation, which one shift per region cannot follow). On the local
#: quality benchmark's 2 mm regions 8 scored best of 6, 8 and 12; the cells add 0.15-0.5 dB to one shift per region
#: there and on 12 regions of 6 other held-out subjects. 0 turns the cells off.
MIRROR_CELL = 8
#: Most cells per axis: a large region's cells grow rather than multiply (3 scored the same on the benchmark's regions;
#: their 27 cells' shift search alone took 0.29 s on the throughput benchmark's 31k-voxel region).
MAX_CELLS_PER_AXIS = 2
#: Share of the ring, nearest a cell's centre, on which the cell's shift and gains are fitted (0.15-0.25 within
#: 0.05 dB of each other).
CELL_RING_SHARE = 0.2
#: Fewest ring voxels a cell's share may hold: below it the region keeps one shift.
MIN_CELL_RING = 50
#: Largest difference (voxels, per axis) between a cell's shift and the whole ring's (1 lost 0.1-0.2 dB on the
#: other held-out regions).
CELL_SEARCH = 2
#: How much more of its share of the ring's variance (mean over sequences) a cell's own shift must explain than the
#: whole ring's shift before the cell uses it.
CELL_MARGIN = 0.01
#: Relative residual at which the spline solve of the difference ``image - a * g`` stops (the plain spline fill's
#: :data:`~samraug.seam.SPLINE_TOLERANCE` is 1e-6). On 8 regions of 3 phantom subjects (2 mm, 7.7k-35k voxels,
#: normalised intensities, brain range ~0.6) the difference's fill then strays from the 1e-6 solve by at most
#: 0.3-2.1e-3, a tenth of the phantom's noise, in 10-11 conjugate-gradient iterations instead of 15-18 (~0.2 s less
#: per 30k-voxel region).
MIRROR_TOLERANCE = 1e-4


def reflect_x(plane: float) -> np.ndarray:
    """The 4x4 world transform of the reflection about the plane ``x = plane`` (RAS mm: left-right).

    Example:
        >>> (reflect_x(2.0) @ [5.0, 1.0, 1.0, 1.0]).tolist()
        [-1.0, 1.0, 1.0, 1.0]
    """
    m = np.eye(4)
    m[0, 0] = -1.0
    m[0, 3] = 2.0 * float(plane)
    return m


def brain_midplane(brain: np.ndarray, affine: np.ndarray) -> float:
    """World ``x`` (RAS mm) of the brain mask's centroid: the mid-sagittal plane the guide is reflected about.

    Example:
        >>> b = np.zeros((10, 4, 4), bool); b[2:8] = True
        >>> brain_midplane(b, np.diag([2.0, 1.0, 1.0, 1.0]))
        9.0
    """
    idx = np.argwhere(np.asarray(brain, dtype=bool))
    if not len(idx):
        raise ValueError("brain mask is empty: no mid-sagittal plane to mirror about; pass the subject's brain mask")
    centre = np.asarray(affine, dtype=np.float64)[:3, :3] @ idx.mean(axis=0) + np.asarray(affine)[:3, 3]
    return float(centre[0])


def _masked_smooth(images: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each image over ``mask`` only (values outside it neither read nor changed)."""
    if sigma <= 0:
        return images.astype(np.float64)
    w = ndimage.gaussian_filter(mask.astype(np.float64), sigma)
    out = images.astype(np.float64)
    for i, img in enumerate(out):
        v = ndimage.gaussian_filter(np.where(mask, img, 0.0), sigma)
        out[i] = np.where(mask, v / np.maximum(w, 1e-12), img)
    return out


def _shift_errors(
    real: np.ndarray,
    base: np.ndarray,
    flat_guide: np.ndarray,
    flat_known: np.ndarray,
    strides: np.ndarray,
    shifts: Sequence[tuple[int, ...]],
    weights: np.ndarray,
) -> np.ndarray:
    """``(len(shifts), P)``: for each shift and each column of ``weights`` (``(N, P)``, 0/1: which ring voxels a fit
    reads), how badly the shifted guide predicts the ring -- the mean over sequences of ``1 - r**2``, ``r`` the
    positive part of the correlation; inf where fewer than :data:`MIN_RING_COVER` of the column's voxels have a
    healthy mirrored voxel. ``real`` ``(S, N)`` is the ring's values minus a constant per sequence, ``base`` their
    flat indices into the padded guide at shift 0. The sums come from flat gathers and products with ``weights``, not
    masked copies; both sides are centred first (by the caller, and ``flat_guide`` over its healthy voxels), which
    leaves every correlation unchanged and keeps the sums free of cancellation."""
    real_sq = real * real
    size = weights.sum(axis=0)
    errors = np.full((len(shifts), weights.shape[1]), np.inf)
    for row, shift in enumerate(shifts):
        index = base + int(np.dot(shift, strides))
        ok = flat_known[index]
        okw = weights * ok[:, None]  # (N, P)
        count = okw.sum(axis=0)
        usable = count >= MIN_RING_COVER * size
        if not usable.any():
            continue
        g = flat_guide[:, index] * ok  # (S, N), 0 where the mirrored voxel is not healthy brain
        n = np.maximum(count, 1.0)
        sum_a, sum_aa = real @ okw, real_sq @ okw  # (S, P)
        sum_g, sum_gg, sum_ag = g @ weights, (g * g) @ weights, (g * real) @ weights
        cov = sum_ag - sum_a * sum_g / n
        var = np.maximum(sum_aa - sum_a**2 / n, 0.0) * np.maximum(sum_gg - sum_g**2 / n, 0.0)
        r = cov / np.sqrt(np.maximum(var, 1e-24))
        errors[row] = np.where(usable, (1.0 - np.maximum(r, 0.0) ** 2).mean(axis=0), np.inf)  # what a gain leaves
    return errors


#: How many of the best lattice shifts :func:`_search_shifts` descends from.
SEARCH_STARTS = 3


def _search_shifts(
    errors: Callable[[list[tuple[int, ...]]], np.ndarray], search: int
) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The shifts (integer, ``-search..search`` per axis) a coarse-to-fine search evaluates, in lexicographic order,
    and their ``errors`` (``errors(shifts)`` -> ``(len(shifts),)``; lower is better, inf: unusable).

    It evaluates the shifts with even coordinates first, then descends from the :data:`SEARCH_STARTS` best of them:
    the unevaluated face, edge and corner neighbours of the best shift so far, until they are all evaluated. The best
    (the first of equal bests in the returned order) is then a local minimum over all the shifts, and never worse
    than the best even shift. With no usable even shift, every shift is evaluated (one usable off the lattice is
    still found). The guide's errors vary smoothly with the shift (the guide is smoothed, each error a correlation
    over thousands of ring voxels), so at ``search = 4`` this takes 145-215 evaluations instead of 729. On 65 regions
    (the local quality benchmark's, those grown by 6 voxels, and the throughput benchmark's edits) it found the
    exhaustive search's shift 63 times; the other two guides explain 22 % and 0.03 % of their ring's variance, and
    the shift found there leaves 0.001 and 0.0001 more of it unexplained than the best.

    Example:
        >>> target = np.array([3, -1, 2])
        >>> cost = lambda shifts: ((np.array(shifts) - target) ** 2).sum(axis=1).astype(float)
        >>> shifts, errs = _search_shifts(cost, 4)
        >>> shifts[int(np.argmin(errs))], len(shifts) < 729 // 3
        ((3, -1, 2), True)
    """
    everywhere = list(itertools.product(range(-search, search + 1), repeat=3))
    seen: dict[tuple[int, ...], float] = {}

    def evaluate(shifts: Iterable[tuple[int, ...]]) -> None:
        new = sorted(set(shifts) - seen.keys())
        if new:
            seen.update(zip(new, np.asarray(errors(new), dtype=np.float64).tolist(), strict=True))

    def order(shift: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
        return seen[shift], shift  # ties: the first in lexicographic order

    def around(shift: tuple[int, ...]) -> set[tuple[int, ...]]:
        """The shift's face, edge and corner neighbours inside the search box."""
        ranges = [range(max(-search, x - 1), min(search, x + 1) + 1) for x in shift]
        return set(itertools.product(*ranges)) - {shift}

    evaluate(s for s in everywhere if all(x % 2 == 0 for x in s))
    if not np.isfinite(list(seen.values())).any():
        evaluate(everywhere)
    todo = set().union(*(around(s) for s in sorted(seen, key=order)[:SEARCH_STARTS]))
    while todo - seen.keys():
        evaluate(todo)
        todo = around(min(seen, key=order))
    shifts = sorted(seen)
    return shifts, np.array([seen[s] for s in shifts])


def _cell_centres(region: np.ndarray, cell: int) -> np.ndarray:
    """Centres ``(P, 3)`` (voxels) of the cells the region's bounding box is divided into: about ``cell`` voxels
    along each axis, at most :data:`MAX_CELLS_PER_AXIS` per axis (one cell: the box's centre)."""
    idx = np.argwhere(region)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    counts = np.clip(np.round((hi - lo + 1) / cell).astype(np.int64), 1, MAX_CELLS_PER_AXIS)
    axes = [lo[a] + (hi[a] - lo[a]) * (np.arange(n) + 0.5) / n for a, n in enumerate(counts)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def mirror_guided_fill(
    images: np.ndarray,
    region: np.ndarray,
    known: np.ndarray,
    guide: np.ndarray,
    guide_known: np.ndarray,
    *,
    search: int = MIRROR_SEARCH,
    ring: int = MIRROR_RING,
    sigma: float = MIRROR_SIGMA,
    cell: int = MIRROR_CELL,
    tension: float = SPLINE_TENSION,
    tolerance: float = MIRROR_TOLERANCE,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fill ``region`` from the brain around it, guided by the mirrored hemisphere (see the module docstring).

    Args:
        images: ``(S, X, Y, Z)`` images on the painting grid.
        region: ``(X, Y, Z)`` bool, the voxels to fill.
        known: ``(X, Y, Z)`` bool, healthy voxels whose values may anchor the fill and fit the guide.
        guide: ``(S, X + 2 * search, Y + 2 * search, Z + 2 * search)``: the images reflected about the mid-sagittal
            plane, on the painting grid padded by ``search`` voxels on every side (same scale as ``images``).
        guide_known: bool, the guide's shape without ``S``: where the reflected voxel is healthy brain.
        search: Largest shift (voxels, per axis) of the guide tried.
        ring: Width (voxels) of the ring of ``known`` voxels around the region the shift and gains are fitted on.
        sigma: Gaussian smoothing (voxels) of the guide over its healthy voxels; 0: none.
        cell: Size (voxels) of the cells of the region's bounding box that get their own shift and gains (at most
            :data:`MAX_CELLS_PER_AXIS` per axis); 0: one shift for the whole region.
        tension: The spline's tension (:func:`~samraug.seam.spline_fill`).
        tolerance: The spline solve's relative residual for the difference ``image - a * g``
            (:data:`MIRROR_TOLERANCE`); the plain spline fill it falls back to uses the spline's own.

    Returns:
        ``(fill, info)``: ``(S, X, Y, Z)`` float32, the fill inside ``region`` (0 outside it), and a JSON-able dict:
        ``guided`` (bool), ``shift`` and ``gain`` (the whole ring's fit, or None), ``cells`` (one entry per cell:
        ``centre``, ``shift``, ``gain``; empty with one cell), ``reason`` (None, or why the plain spline fill was
        used).
    """
    images, region, known = fill_inputs(images, region, known)
    search, ring, sigma, cell = int(search), int(ring), float(sigma), int(cell)
    if search < 0 or ring < 1 or cell < 0 or not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(
            f"need search >= 0, ring >= 1, cell >= 0 and sigma >= 0, got search={search}, ring={ring}, cell={cell},"
            f" sigma={sigma}"
        )
    tolerance = check_tolerance(tolerance)
    guide = np.asarray(guide)
    guide_known = np.asarray(guide_known, dtype=bool)
    padded = tuple(n + 2 * search for n in region.shape)
    if guide.shape != (images.shape[0], *padded) or guide_known.shape != padded:
        raise ValueError(
            f"guide must be {(images.shape[0], *padded)} and guide_known {padded} (the grid padded by search={search}),"
            f" got {guide.shape} and {guide_known.shape}"
        )
    info: dict[str, Any] = {"guided": False, "shift": None, "gain": None, "cells": [], "reason": None}
    if not region.any():
        return np.zeros(images.shape, dtype=np.float32), info
    band = ndimage.binary_dilation(region, iterations=ring) & known
    points = np.argwhere(band)
    if not len(points):
        info["reason"] = "no healthy brain around the region"
        return spline_fill(images, region, known, tension), info
    smooth = _masked_smooth(guide, guide_known, sigma)
    real = images[(slice(None), *points.T)].astype(np.float64)  # (S, N)
    real = real - real.mean(axis=1, keepdims=True)
    flat_known = guide_known.ravel()
    flat_guide = smooth.reshape(smooth.shape[0], -1)
    if flat_known.any():
        flat_guide = flat_guide - flat_guide[:, flat_known].mean(axis=1, keepdims=True)
    strides = np.array([padded[1] * padded[2], padded[2], 1])
    base = (points + search) @ strides
    whole = np.ones((len(points), 1))
    shifts, errors = _search_shifts(
        lambda near: _shift_errors(real, base, flat_guide, flat_known, strides, near, whole)[:, 0], search
    )
    if not np.isfinite(errors).any():
        info["reason"] = f"the mirrored ring is healthy brain on less than {MIN_RING_COVER:.0%} of it at every shift"
        return spline_fill(images, region, known, tension), info
    shift = shifts[int(np.argmin(errors))]  # the first of equal bests

    # each cell: its own shift near the whole ring's and its own gains, fitted on the ring voxels nearest its centre
    centres = _cell_centres(region, cell) if cell > 0 else np.zeros((1, 3))
    cells: list[tuple[np.ndarray, tuple[int, ...], np.ndarray | None]] = []  # (centre, shift, its ring share)
    nearest = int(np.ceil(CELL_RING_SHARE * len(points)))
    if len(centres) > 1 and nearest >= MIN_CELL_RING:  # (a correlation over a few voxels would pick any shift)
        distance = np.linalg.norm(points[:, None, :] - centres[None], axis=-1)  # (N, P)
        weights = np.zeros(distance.shape)
        np.put_along_axis(weights, np.argsort(distance, axis=0)[:nearest], 1.0, axis=0)
        # (every shift of the cells' small box: one fit per cell, on a fifth of the ring each, is noisier than the
        # whole ring's, and its descents from the lattice would evaluate most of the box anyway)
        span = [range(max(-search, x - CELL_SEARCH), min(search, x + CELL_SEARCH) + 1) for x in shift]
        near = list(itertools.product(*span))
        errors = _shift_errors(real, base, flat_guide, flat_known, strides, near, weights)  # (shifts, P)
        best = np.argmin(errors, axis=0)
        own_err, shared_err = errors[best, np.arange(len(centres))], errors[near.index(shift)]
        for p, centre in enumerate(centres):
            if not np.isfinite(own_err[p]):
                continue
            # a cell's own shift must explain clearly more of its share of the ring than the whole ring's shift
            # (fitted on fewer voxels, it would otherwise follow noise, or break a tie where the guide is uniform),
            # and the whole ring's shift must see enough healthy mirrored voxels there to be compared at all (near
            # the midline or a lesion's mirror image the other shifts see just as little; the guide's holes are
            # continued instead, as with one shift)
            seen = bool(np.isfinite(shared_err[p]))
            own = near[best[p]] if seen and own_err[p] < shared_err[p] - CELL_MARGIN else shift
            cells.append((centre, own, weights[:, p] > 0 if seen else None))  # unseen: the whole ring's gains

    # continue the guide where its mirrored voxel is not healthy brain, wherever a window in use puts the voxels the
    # fill reads: the region and the known voxels the spline's stencils reach (two face steps; the gains read only
    # healthy guide voxels). One harmonic fill serves every shift in use.
    def window(at: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(search + s, search + s + n) for s, n in zip(at, region.shape, strict=True))

    read = region | (known & ndimage.binary_dilation(region, iterations=2))
    reach = np.zeros(padded, dtype=bool)
    for at in {shift, *(c[1] for c in cells)}:
        reach[window(at)] |= read
    holes = ~guide_known & reach
    if holes.any():
        smooth = np.where(holes, harmonic_fill(smooth, holes, guide_known & reach), smooth)

    def window_at(at: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The (continued) guide and its healthy mask at a shift."""
        sl = window(at)
        return smooth[(slice(None), *sl)], guide_known[sl]

    def gain_on(at: tuple[int, ...], fit_ring: np.ndarray) -> np.ndarray:
        """Per-sequence least-squares gain of the guide at ``at`` on the ``fit_ring`` voxels it knows, clipped."""
        g, g_known = window_at(at)
        fit = fit_ring & g_known
        a = images[:, fit] - images[:, fit].mean(axis=1, keepdims=True)
        b = g[:, fit] - g[:, fit].mean(axis=1, keepdims=True)
        return np.clip((a * b).sum(axis=1) / np.maximum((b * b).sum(axis=1), 1e-12), 0.0, MAX_GAIN)

    gain = gain_on(shift, band)
    info.update(guided=True, shift=[int(s) for s in shift], gain=[round(float(x), 4) for x in gain])
    if len(cells) > 1:
        # the cells' scaled guides blended with Gaussian weights (half a cell wide) around their centres, each
        # voxel's weights divided by its nearest centre's first (the same blend, no underflow far from every centre)
        grid = np.indices(region.shape, dtype=np.float64).reshape(3, -1).T
        exponents = np.stack([-0.5 * (((grid - c[0]) ** 2).sum(axis=1)) / (0.5 * cell) ** 2 for c in cells])
        blend = np.exp(exponents - exponents.max(axis=0)).reshape(len(cells), *region.shape)
        total = np.zeros(images.shape)
        for w, (centre, at, members) in zip(blend, cells, strict=True):
            cell_gain = gain
            if members is not None:
                ring_mask = np.zeros(region.shape, dtype=bool)
                ring_mask[tuple(points[members].T)] = True
                cell_gain = gain_on(at, ring_mask)
            total += w * window_at(at)[0] * cell_gain[:, None, None, None]
            info["cells"].append(
                {
                    "centre": [round(float(c), 2) for c in centre],
                    "shift": [int(s) for s in at],
                    "gain": [round(float(x), 4) for x in cell_gain],
                }
            )
        g = total / blend.sum(axis=0)
    else:
        g = window_at(shift)[0] * gain[:, None, None, None]
    residual = spline_fill(images - g, region, known, tension, tolerance)
    fill = np.zeros(images.shape, dtype=np.float32)
    fill[:, region] = (g[:, region] + residual[:, region]).astype(np.float32)
    return fill, info
