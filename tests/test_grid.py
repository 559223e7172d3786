"""Grid geometry: spacings, boxes, RAS grids, resampling (labels nearest, images trilinear) and point sampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from samraug.grid import (
    _lattice_indices,
    bounding_box,
    check_affine,
    crop_affine,
    ras_grid,
    resample,
    sample_points,
    voxel_spacing,
    world_corners,
)


def rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_spacing_of_flipped_rotated_anisotropic():
    a = np.eye(4)
    a[:3, :3] = rotation(0.3) @ np.diag([-1.0, 1.0, 3.0])
    np.testing.assert_allclose(voxel_spacing(a), [1.0, 1.0, 3.0])


@pytest.mark.parametrize(
    "bad,match",
    [(np.eye(3), "4x4"), (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"), (np.full((4, 4), np.nan), "finite")],
)
def test_bad_affines(bad, match):
    with pytest.raises(ValueError, match=match):
        check_affine(bad)


def test_bounding_box_and_crop_affine_agree():
    m = np.zeros((10, 11, 12), bool)
    m[2:5, 3, 7:9] = True
    box = bounding_box(m)
    assert box == ((2, 5), (3, 4), (7, 9))
    assert bounding_box(np.zeros((3, 3, 3), bool)) is None
    a = np.diag([2.0, -1.0, 3.0, 1.0])
    a[:3, 3] = [5.0, 6.0, 7.0]
    start = [b[0] for b in box]
    ca = crop_affine(a, start)
    np.testing.assert_allclose(ca @ [0, 0, 0, 1], a @ [*start, 1])


@given(
    vs=st.tuples(*[st.sampled_from([0.7, 1.0, 2.0, 3.0])] * 3),
    lo=st.tuples(*[st.floats(-50, 50)] * 3),
    size=st.tuples(*[st.floats(0, 40)] * 3),
    mult=st.sampled_from([1, 4, 8]),
)
@example(vs=(0.7, 2.0, 0.7), lo=(0.0, 1e-6, 0.0), size=(0.0, 1e-6, 0.0), mult=1)  # edge 2e-6 mm past a grid point
def test_ras_grid_covers_the_box_and_is_snapped(vs, lo, size, mult):
    lo = np.array(lo)
    hi = lo + np.array(size)
    shape, a = ras_grid(lo, hi, vs, multiple=mult)
    assert shape[0] % mult == 0 and shape[1] % mult == 0
    np.testing.assert_allclose(np.diag(a)[:3], vs)
    origin = a[:3, 3]
    np.testing.assert_allclose(origin / vs, np.round(origin / vs), atol=1e-9)
    end = origin + (np.array(shape) - 1) * vs
    assert np.all(origin <= lo + 1e-6) and np.all(end >= hi - 1e-6)  # covers the box
    assert np.all(origin > lo - np.array(vs) * (1 + (np.array(shape) - 1) // 2))


def test_resample_identity_and_flip_are_exact():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((6, 7, 5)).astype(np.float32)
    lab = rng.integers(0, 5, (6, 7, 5)).astype(np.uint8)
    a = np.diag([2.0, 2.0, 3.0, 1.0])
    assert np.array_equal(resample(v, a, v.shape, a, order=1), v)
    out = resample(lab, a, lab.shape, a, order=0)
    assert out.dtype == np.uint8 and np.array_equal(out, lab)
    # the same data stored flipped along x (LPS-style) resampled onto the RAS grid gives the original back
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = v.shape[0] - 1
    a_flipped = a @ flip
    assert np.array_equal(resample(v[::-1].copy(), a_flipped, v.shape, a, order=1), v)
    assert np.array_equal(resample(lab[::-1].copy(), a_flipped, v.shape, a, order=0), lab)
    b = lab > 2
    assert np.array_equal(resample(b[::-1].copy(), a_flipped, v.shape, a, order=0), b)


def test_trilinear_reproduces_linear_fields_and_nearest_keeps_labels():
    """A linear intensity field is reproduced exactly by trilinear resampling (inside the source), whatever the
    target spacing and orientation; nearest neighbour only ever returns existing labels."""
    shape = (20, 22, 18)
    a = np.eye(4)
    a[:3, :3] = rotation(0.2) @ np.diag([1.0, 1.2, 2.5])
    a[:3, 3] = [3.0, -4.0, 2.0]
    idx = np.indices(shape).reshape(3, -1).T
    world = idx @ a[:3, :3].T + a[:3, 3]
    coef = np.array([0.5, -1.5, 2.0])
    field = (world @ coef + 10.0).reshape(shape).astype(np.float32)
    corners = world_corners(shape, a)
    centre = corners.mean(0)
    gshape, g = ras_grid(centre - 5, centre + 5, (2.0, 2.0, 2.0))
    out = resample(field, a, gshape, g, order=1, cval=np.nan)
    gw = np.indices(gshape).reshape(3, -1).T @ g[:3, :3].T + g[:3, 3]
    np.testing.assert_allclose(out.reshape(-1), gw @ coef + 10.0, rtol=1e-4, atol=1e-3)
    lab = (np.arange(np.prod(shape)) % 7).reshape(shape).astype(np.int16) * 3
    lab_out = resample(lab, a, gshape, g, order=0)
    assert set(np.unique(lab_out)) <= set(np.unique(lab))


def test_sample_points_matches_resample_at_grid_points():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((10, 9, 8)).astype(np.float32)
    a = np.diag([2.0, 2.0, 2.0, 1.0])
    gshape, g = ras_grid(np.array([3.0, 3.0, 3.0]), np.array([12.0, 11.0, 9.0]), (1.0, 1.5, 1.0))
    full = resample(v, a, gshape, g, order=1)
    pts = np.argwhere(np.ones(gshape, bool))[::7]
    got = sample_points(v, a, pts, g, order=1)
    np.testing.assert_allclose(got, full[tuple(pts.T)], rtol=1e-6, atol=1e-6)


def _scipy_resample(v, src, shape, dst, order, cval):
    """The interpolation itself, without resample's voxel-copy path: the reference the copy must equal bit for bit."""
    m = np.linalg.inv(src) @ dst
    if v.dtype == bool:
        out = ndimage.affine_transform(v.view(np.uint8), m[:3, :3], m[:3, 3], shape, order=0, cval=int(bool(cval)))
        return out.astype(bool)
    v = v if order == 0 else v.astype(np.float32)
    return ndimage.affine_transform(v, m[:3, :3], m[:3, 3], shape, order=order, cval=cval)


@settings(max_examples=200, deadline=None)
@given(
    perm=st.permutations([0, 1, 2]),
    steps=st.tuples(*[st.sampled_from([1, -1, 2, -2, 3]) for _ in range(3)]),
    shift=st.tuples(*[st.integers(-9, 9) for _ in range(3)]),
    shape=st.tuples(*[st.integers(1, 8) for _ in range(3)]),
    kind=st.sampled_from(["float32", "float64", "uint8", "int16", "bool"]),
    order=st.sampled_from([0, 1]),
    cval=st.sampled_from([0.0, 3.0, -1.0]),
    frac=st.sampled_from([0.0, 0.25, 0.5, 0.731, 0.999]),
    frac_axis=st.integers(0, 2),
)
@example(
    perm=[0, 1, 2],
    steps=(1, 1, 1),
    shift=(0, 0, 0),
    shape=(4, 5, 3),
    kind="float32",
    order=1,
    cval=0.0,
    frac=0.0,
    frac_axis=0,
)
@example(
    perm=[0, 1, 2],
    steps=(-1, 1, 1),
    shift=(6, 0, 0),
    shape=(6, 7, 5),
    kind="float32",
    order=1,
    cval=0.0,
    frac=0.48,
    frac_axis=0,
)  # a reflection about a plane between voxels
def test_resample_on_a_voxel_lattice_equals_interpolation_bit_for_bit(
    perm, steps, shift, shape, kind, order, cval, frac, frac_axis
):
    """Crops, flips, axis permutations and integer subsampling (target voxels on source voxels) are copied rather than
    interpolated, and a fractional offset along one axis (trilinear only) interpolated along that axis alone: the
    result equals scipy's interpolation exactly, dtype included, with ``cval`` outside."""
    if kind == "bool" and order == 1:
        order = 0
    if order == 0:
        frac = 0.0
    rng = np.random.default_rng(sum(shape) + 7 * order)
    v = rng.standard_normal((6, 7, 5)) * 10
    v = v > 0 if kind == "bool" else v.astype(kind)
    if kind == "uint8" and cval < 0:
        cval = 0.0
    src = np.diag([2.0, 2.0, 2.0, 1.0])
    src[:3, 3] = [4.0, -6.0, 2.0]
    step = np.zeros((4, 4))
    for d, a in enumerate(perm):  # target axis d reads source axis a
        step[a, d] = steps[d]
    step[:3, 3] = shift
    step[frac_axis, 3] += frac
    step[3, 3] = 1.0
    dst = src @ step
    assert _lattice_indices(step[:3, :3], step[:3, 3], v.shape, shape, order) is not None  # the copy path is taken
    got = resample(v, src, shape, dst, order=order, cval=cval)
    want = _scipy_resample(v, src, shape, dst, order, cval)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_resample_interpolates_off_the_lattice_and_around_non_finite_values():
    """Two fractional axes and non-integer scales are interpolated by scipy; a non-finite image value spreads into its
    neighbours' interpolation exactly as before (the copy path is not taken for such an image)."""
    v = np.random.default_rng(3).standard_normal((6, 7, 5)).astype(np.float32)
    src = np.eye(4)
    half = np.eye(4)
    half[:3, 3] = [0.5, 0.25, 0.0]  # two fractional axes
    assert _lattice_indices(half[:3, :3], half[:3, 3], v.shape, v.shape, 1) is None
    assert _lattice_indices(half[:3, :3], [0.5, 0.0, 0.0], v.shape, v.shape, 0) is None  # nearest: never fractional
    scaled = np.diag([1.5, 1.0, 1.0, 1.0])  # a non-integer scale
    assert _lattice_indices(scaled[:3, :3], np.zeros(3), v.shape, v.shape, 1) is None
    for target in (half, scaled):
        np.testing.assert_array_equal(
            resample(v, src, v.shape, target, order=1), _scipy_resample(v, src, v.shape, target, 1, 0.0)
        )
    v[2, 3, 1] = np.nan
    np.testing.assert_array_equal(
        resample(v, src, v.shape, src, order=1), _scipy_resample(v, src, v.shape, src, 1, 0.0)
    )
    assert np.isnan(resample(v, src, v.shape, src, order=1)).sum() > 1  # spread by the zero-weight neighbours


def test_resample_rejects_other_orders():
    with pytest.raises(ValueError, match="order"):
        resample(np.zeros((2, 2, 2)), np.eye(4), (2, 2, 2), np.eye(4), order=3)
