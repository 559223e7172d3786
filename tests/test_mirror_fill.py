"""The mirror-guided healthy fill (samraug.mirror_fill): exact recovery from a shifted, scaled guide, its fall-backs,
its errors, and the plane helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from samraug.mirror_fill import (
    MAX_GAIN,
    MIRROR_TOLERANCE,
    _search_shifts,
    brain_midplane,
    mirror_guided_fill,
    reflect_x,
)
from samraug.seam import SPLINE_TOLERANCE, spline_fill

SHAPE = (18, 16, 14)


def field(seed: int, n: int = 2) -> np.ndarray:
    """``n`` smooth random images with structure at a few voxels' scale (no two shifts of one look alike)."""
    rng = np.random.default_rng(seed)
    return np.stack([ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.5) * 40.0 for _ in range(n)])


def region_known() -> tuple[np.ndarray, np.ndarray]:
    region = np.zeros(SHAPE, bool)
    region[6:11, 5:10, 5:9] = True
    return region, ~region


def placed(values: np.ndarray, known: np.ndarray, shift, search: int) -> tuple[np.ndarray, np.ndarray]:
    """A guide padded by ``search`` whose window at ``shift`` holds ``values`` (known where ``known``); the rest of
    the padded grid unknown."""
    padded = tuple(n + 2 * search for n in SHAPE)
    guide = np.zeros((values.shape[0], *padded))
    guide_known = np.zeros(padded, bool)
    window = tuple(slice(search + s, search + s + n) for s, n in zip(shift, SHAPE, strict=True))
    guide[(slice(None), *window)] = values
    guide_known[window] = known
    return guide, guide_known


@settings(max_examples=15, deadline=None)
@given(
    shift=st.tuples(*[st.integers(-2, 2)] * 3),
    gain=st.tuples(st.floats(0.2, 1.9), st.floats(0.2, 1.9)),
    offset=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
    seed=st.integers(0, 2**16),
)
def test_recovers_an_image_that_is_its_shifted_scaled_guide_plus_a_level(shift, gain, offset, seed):
    """images = gain * guide + offset: the search finds the guide's shift, the fit its gain, the spline the level --
    the region is filled exactly, whatever the region's own (hidden) values."""
    m = field(seed)
    images = np.asarray(gain)[:, None, None, None] * m + np.asarray(offset)[:, None, None, None]
    region, known = region_known()
    guide, guide_known = placed(m, np.ones(SHAPE, bool), shift, 2)
    hidden = images.copy()
    hidden[:, region] = 1e3  # the region's values are never read
    fill, info = mirror_guided_fill(hidden, region, known, guide, guide_known, search=2, sigma=0)
    assert info["guided"] and info["shift"] == list(shift) and info["reason"] is None
    np.testing.assert_allclose(info["gain"], gain, atol=1e-3)
    np.testing.assert_allclose(fill[:, region], images[:, region], atol=1e-3 * np.ptp(images))
    assert not fill[:, ~region].any()


def test_holes_in_the_guide_are_continued_and_a_useless_guide_is_faded_out():
    """Where the mirrored voxel is not healthy brain the guide is continued smoothly (finite, close); a guide that
    anti-correlates with the ring gets gain 0: the plain spline fill; no healthy mirrored ring: the spline fill with
    the reason."""
    m = field(3)
    region, known = region_known()
    hole = np.zeros(SHAPE, bool)
    hole[7:9, 6:8, 6:8] = True
    guide, guide_known = placed(m, ~hole, (0, 0, 0), 1)
    fill, info = mirror_guided_fill(m, region, known, guide, guide_known, search=1, sigma=0)
    assert info["guided"] and np.isfinite(fill).all()
    err = np.abs(fill[:, region] - m[:, region])
    spline_err = np.abs(spline_fill(m, region, known)[:, region] - m[:, region])
    assert err[:, ~hole[region]].max() < 0.2 * np.ptp(m) and err.mean() < 0.5 * spline_err.mean()
    anti, anti_known = placed(-m, np.ones(SHAPE, bool), (0, 0, 0), 1)
    fill, info = mirror_guided_fill(m, region, known, anti, anti_known, search=1, sigma=0)
    assert info["gain"] == [0.0, 0.0]
    np.testing.assert_allclose(fill, spline_fill(m, region, known), atol=1e-4 * np.ptp(m))
    none = np.zeros_like(anti_known)
    fill, info = mirror_guided_fill(m, region, known, anti, none, search=1)
    assert not info["guided"] and "healthy brain on less than 80%" in info["reason"]
    np.testing.assert_array_equal(fill, spline_fill(m, region, known))
    assert MAX_GAIN >= 1.0


def test_smoothing_reads_only_the_guides_healthy_voxels():
    """sigma > 0 smooths the guide over its healthy voxels only: a wild value in an unhealthy mirrored voxel (a
    lesion) does not leak into the fill."""
    m = field(5, n=1)
    region, known = region_known()
    guide, guide_known = placed(m, np.ones(SHAPE, bool), (0, 0, 0), 1)
    lesion = np.zeros(guide_known.shape, bool)
    lesion[8:10, 7:9, 7:9] = True
    wild = guide.copy()
    wild[:, lesion] = 1e6
    a, _ = mirror_guided_fill(m, region, known, guide, guide_known & ~lesion, search=1, sigma=0.7)
    b, _ = mirror_guided_fill(m, region, known, wild, guide_known & ~lesion, search=1, sigma=0.7)
    np.testing.assert_allclose(a, b, atol=1e-6 * np.ptp(m))


def test_the_looser_tolerance_of_the_difference_costs_nothing_visible():
    """The spline solve of ``image - a * g`` stops at :data:`MIRROR_TOLERANCE` (the plain spline at 1e-6): on an
    image that differs from its guide by a smooth field the fill stays within 1e-3 of the image range of the tight
    solve's."""
    m = field(4)
    x = np.indices(SHAPE)[0] / SHAPE[0]
    images = 1.3 * m + 25.0 * np.sin(2.0 * x)[None]  # a smooth hemispheric difference for the spline to carry
    region, known = region_known()
    guide, guide_known = placed(m, np.ones(SHAPE, bool), (1, 0, -1), 2)
    loose, _ = mirror_guided_fill(images, region, known, guide, guide_known, search=2, sigma=0)
    tight, _ = mirror_guided_fill(images, region, known, guide, guide_known, search=2, sigma=0, tolerance=1e-10)
    assert MIRROR_TOLERANCE > SPLINE_TOLERANCE
    np.testing.assert_allclose(loose, tight, atol=1e-3 * np.ptp(images))
    np.testing.assert_allclose(tight[:, region], images[:, region], atol=2e-2 * np.ptp(images))


def _table_cost(table: dict, calls: list):
    """``errors(shifts)`` reading a table of every shift's error, recording each call's shifts."""

    def errors(shifts):
        calls.append(list(shifts))
        return np.array([table[s] for s in shifts])

    return errors


@settings(max_examples=40, deadline=None)
@given(
    search=st.integers(0, 5),
    target=st.tuples(*[st.floats(-5.5, 5.5)] * 3),
    scales=st.tuples(*[st.floats(0.2, 5.0)] * 3),
    level=st.floats(-1.0, 1.0),
)
def test_shift_search_finds_the_minimum_of_a_smooth_error_with_few_evaluations(search, target, scales, level):
    """On a convex, axis-anisotropic error (a quadratic bowl centred anywhere, in or out of the box) the coarse-to-fine
    search returns the exhaustive search's shift, evaluating each shift once and, for search >= 3, fewer than a third
    of them."""
    box = list(itertools.product(range(-search, search + 1), repeat=3))
    table = {s: level + sum(w * (x - t) ** 2 for x, t, w in zip(s, target, scales, strict=True)) for s in box}
    calls: list = []
    shifts, errors = _search_shifts(_table_cost(table, calls), search)
    assert shifts == sorted(shifts) and errors.tolist() == [table[s] for s in shifts]
    evaluated = [s for call in calls for s in call]
    assert len(evaluated) == len(set(evaluated)) == len(shifts)
    assert shifts[int(np.argmin(errors))] == min(box, key=lambda s: (table[s], s))
    if search >= 3:
        assert len(shifts) < len(box) / 3


@settings(max_examples=40, deadline=None)
@given(search=st.integers(1, 4), seed=st.integers(0, 2**16), unusable=st.floats(0.0, 0.9))
def test_shift_search_ends_at_a_local_minimum_no_worse_than_every_even_shift(search, seed, unusable):
    """On arbitrary (rough, partly unusable) errors the search's best has every neighbour evaluated and no better, and
    beats or ties every even shift; with no usable even shift all shifts are evaluated, so a usable one is found."""
    rng = np.random.default_rng(seed)
    box = list(itertools.product(range(-search, search + 1), repeat=3))
    values = np.where(rng.random(len(box)) < unusable, np.inf, rng.random(len(box)))
    table = dict(zip(box, values.tolist(), strict=True))
    shifts, errors = _search_shifts(_table_cost(table, []), search)
    seen = dict(zip(shifts, errors.tolist(), strict=True))
    best = shifts[int(np.argmin(errors))]
    even = [s for s in box if all(x % 2 == 0 for x in s)]
    assert all(s in seen for s in even)
    assert seen[best] <= min(table[s] for s in even)
    if not np.isfinite([table[s] for s in even]).any():
        assert len(shifts) == len(box)
    for step in itertools.product((-1, 0, 1), repeat=3):
        near = tuple(x + d for x, d in zip(best, step, strict=True))
        if max(map(abs, near)) <= search:
            assert near in seen and seen[near] >= seen[best]
    if np.isfinite(values).any():
        assert np.isfinite(seen[best])


def test_shift_search_finds_a_usable_shift_off_the_lattice():
    """Every shift unusable but one with an odd coordinate, far from the search's starts: it is still found."""
    box = list(itertools.product(range(-4, 5), repeat=3))
    table = {s: np.inf for s in box} | {(3, -1, 2): 0.5}
    shifts, errors = _search_shifts(_table_cost(table, []), 4)
    assert shifts[int(np.argmin(errors))] == (3, -1, 2)


def test_errors_name_the_argument():
    m = field(1)
    region, known = region_known()
    guide, guide_known = placed(m, np.ones(SHAPE, bool), (0, 0, 0), 2)
    with pytest.raises(ValueError, match="padded by search=1"):
        mirror_guided_fill(m, region, known, guide, guide_known, search=1)
    with pytest.raises(ValueError, match="search >= 0"):
        mirror_guided_fill(m, region, known, guide, guide_known, search=-1)
    with pytest.raises(ValueError, match="cell >= 0"):
        mirror_guided_fill(m, region, known, guide, guide_known, search=2, cell=-1)
    with pytest.raises(ValueError, match="sigma >= 0"):
        mirror_guided_fill(m, region, known, guide, guide_known, search=2, sigma=float("nan"))
    with pytest.raises(ValueError, match="tolerance"):
        mirror_guided_fill(m, region, known, guide, guide_known, search=2, tolerance=0.0)
    with pytest.raises(ValueError, match="brain mask is empty"):
        brain_midplane(np.zeros(SHAPE, bool), np.eye(4))


def test_reflection_and_midplane():
    """reflect_x is an involution fixing its plane; the midplane is the brain centroid's world x under any affine."""
    r = reflect_x(3.5)
    np.testing.assert_allclose(r @ r, np.eye(4))
    np.testing.assert_allclose(r @ [3.5, 7.0, -2.0, 1.0], [3.5, 7.0, -2.0, 1.0])
    brain = np.zeros(SHAPE, bool)
    brain[4:12, 2:10, 3:13] = True
    c, s = np.cos(0.4), np.sin(0.4)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([1.0, 2.0, 3.0])
    aff[:3, 3] = [-30.0, 5.0, 1.0]
    centre = aff[:3, :3] @ np.argwhere(brain).mean(0) + aff[:3, 3]
    assert brain_midplane(brain, aff) == pytest.approx(centre[0])


BIG = (36, 22, 20)


def big_region() -> tuple[np.ndarray, np.ndarray]:
    region = np.zeros(BIG, bool)
    region[8:28, 7:15, 7:13] = True  # 20 voxels along x: two cells of MIRROR_CELL = 8
    return region, ~region


def big_field(seed: int, search: int) -> np.ndarray:
    """Two smooth random images on the grid padded by ``search``."""
    rng = np.random.default_rng(seed)
    shape = tuple(n + 2 * search for n in BIG)
    return np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 40.0 for _ in range(2)])


def at(padded: np.ndarray, shift, search: int) -> np.ndarray:
    return padded[(slice(None), *[slice(search + s, search + s + n) for s, n in zip(shift, BIG, strict=True)])]


def test_cells_follow_a_guide_whose_shift_changes_across_the_region():
    """The real image is the guide at one shift on the region's left and at another on its right (a smooth
    deformation between the hemispheres): each cell finds its own side's shift, and the fill's error is far below
    one shift for the whole region's; with a guide at one shift everywhere the cells recover the image exactly."""
    search = 3
    m = big_field(7, search)
    left, right = (0, 1, 0), (2, -1, 1)
    w = 1.0 / (1.0 + np.exp(-(np.arange(BIG[0]) - 18.0) / 1.5))[:, None, None]
    images = (1.0 - w) * at(m, left, search) + w * at(m, right, search)
    region, known = big_region()
    guide_known = np.ones(m.shape[1:], bool)
    fill, info = mirror_guided_fill(images, region, known, m, guide_known, search=search, sigma=0)
    single, single_info = mirror_guided_fill(images, region, known, m, guide_known, search=search, sigma=0, cell=0)
    assert len(info["cells"]) == 2 and single_info["cells"] == []
    by_x = sorted(info["cells"], key=lambda c: c["centre"][0])
    assert [c["shift"] for c in by_x] == [list(left), list(right)]
    err = np.abs(fill[:, region] - images[:, region]).mean()
    single_err = np.abs(single[:, region] - images[:, region]).mean()
    assert err < 0.5 * single_err
    # one shift everywhere: every cell finds it and its gain, and the blend is the guide itself
    images = 1.5 * at(m, left, search) + 3.0
    fill, info = mirror_guided_fill(images, region, known, m, guide_known, search=search, sigma=0)
    assert [c["shift"] for c in info["cells"]] == [list(left)] * 2
    np.testing.assert_allclose(fill[:, region], images[:, region], atol=1e-3 * np.ptp(images))


def test_a_region_with_a_small_ring_keeps_one_shift():
    """Cells need enough ring voxels each (MIN_CELL_RING): with healthy brain on one face of the region only, the
    region is filled with the whole ring's shift (no cells), still guided."""
    search = 2
    m = big_field(3, search)
    region, _ = big_region()
    known = np.zeros(BIG, bool)
    known[8:28, 6, 7:13] = True  # 120 voxels beside one face: a share of 24 per cell
    images = at(m, (1, 0, 0), search)
    fill, info = mirror_guided_fill(images, region, known, m, np.ones(m.shape[1:], bool), search=search, sigma=0)
    assert info["guided"] and info["cells"] == [] and np.isfinite(fill).all()
    big, _ = big_region()
    fill, info = mirror_guided_fill(images, big, ~big, m, np.ones(m.shape[1:], bool), search=search, sigma=0)
    assert len(info["cells"]) == 2  # the same region with brain all around it: cells
