"""Region (dilation in mm, anisotropic) and feather weights, checked against brute-force distances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from samraug.region import dilate_mm, edit_region, feather_weights

SPACINGS = st.tuples(*[st.sampled_from([0.5, 1.0, 2.0, 3.0])] * 3)


def brute_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest True voxel, by comparing every pair."""
    pts = np.argwhere(mask) * np.asarray(spacing)
    grid = np.argwhere(np.ones(mask.shape, bool)) * np.asarray(spacing)
    if len(pts) == 0:
        return np.full(mask.shape, np.inf)
    d = np.sqrt(((grid[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).min(1)
    return d.reshape(mask.shape)


@given(
    mask=arrays(bool, (6, 7, 5), elements=st.sampled_from([False] * 9 + [True])),
    spacing=SPACINGS,
    margin=st.sampled_from([0.0, 1.0, 2.5, 4.0]),
)
def test_dilate_matches_brute_force(mask, spacing, margin):
    expected = brute_distance(mask, spacing) <= margin + 1e-6
    assert np.array_equal(dilate_mm(mask, spacing, margin), expected)


def test_dilate_is_anisotropic():
    m = np.zeros((9, 9, 9), bool)
    m[4, 4, 4] = True
    d = dilate_mm(m, (1.0, 1.0, 3.0), 3.0)
    assert d[:, 4, 4].sum() == 7 and d[4, 4, :].sum() == 3


def test_edit_region_is_changed_plus_lesions_dilated():
    before = np.zeros((12, 12, 12), np.int64)
    after = np.zeros_like(before)
    before[2:4, 2:4, 2:4] = 2  # removed lesion
    after[8:10, 8:10, 8:10] = 1  # new lesion
    before[6, 6, 6] = after[6, 6, 6] = 3  # unchanged lesion
    r0 = edit_region(before, after, lesion_values=(1, 2, 3), spacing=(1.0, 1.0, 1.0), margin_mm=0.0)
    assert np.array_equal(r0, (before > 0) | (after > 0))
    r2 = edit_region(before, after, lesion_values=(1, 2, 3), spacing=(1.0, 1.0, 1.0), margin_mm=2.0)
    assert np.array_equal(r2, brute_distance(r0, (1.0, 1.0, 1.0)) <= 2.0 + 1e-6)
    # a change between two non-lesion values (e.g. brain label edits) counts too
    after2 = before.copy()
    after2[0, 0, 0] = 5
    r = edit_region(before, after2, lesion_values=(1, 2, 3), spacing=(1.0, 1.0, 1.0), margin_mm=0.0)
    assert r[0, 0, 0]
    with pytest.raises(ValueError, match="differ in shape"):
        edit_region(before, after[:-1], lesion_values=(1,), spacing=(1.0, 1.0, 1.0))


@given(
    mask=arrays(bool, (8, 9, 7), elements=st.sampled_from([False, True, True])),
    spacing=SPACINGS,
    feather=st.sampled_from([0.0, 1.0, 3.0, 6.0]),
)
def test_feather_weights_properties(mask, spacing, feather):
    w = feather_weights(mask, spacing, feather)
    assert w.dtype == np.float32 and w.shape == mask.shape
    assert np.all(w[~mask] == 0.0)
    assert np.all((w >= 0) & (w <= 1))
    if mask.any():
        assert np.all(w[mask] > 0)  # every region voxel gets some of the painting
    # golden: smoothstep of the distance to the nearest outside voxel (the volume's faces are not outside)
    padded = np.pad(mask, 1, mode="edge")
    d = brute_distance(~padded, spacing)[1:-1, 1:-1, 1:-1]
    if feather == 0:
        expected = mask.astype(np.float32)
    else:
        t = np.clip(d / feather, 0, 1)
        expected = np.where(mask, t * t * (3 - 2 * t), 0.0)
    if (~padded).any():
        np.testing.assert_allclose(w, expected, atol=1e-6)


def test_feather_ramps_from_border_to_one():
    r = np.zeros((21, 21, 21), bool)
    r[3:18, 3:18, 3:18] = True
    w = feather_weights(r, (1.0, 1.0, 1.0), 4.0)
    line = w[10, 10, :]
    assert line[10] == 1.0 and line[0] == 0.0
    assert np.all(np.diff(line[:11]) >= 0)  # rising towards the centre
    assert 0 < line[3] < 0.2


@pytest.mark.parametrize("bad", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0)])
def test_bad_spacing_and_margin_rejected(bad):
    m = np.ones((2, 2, 2), bool)
    with pytest.raises(ValueError, match="spacing"):
        dilate_mm(m, bad, 1.0)
    with pytest.raises(ValueError, match="margin_mm"):
        dilate_mm(m, (1.0, 1.0, 1.0), -1.0)
    with pytest.raises(ValueError, match="feather_mm"):
        feather_weights(m, (1.0, 1.0, 1.0), float("inf"))


def test_edit_region_changed_seed_keeps_unchanged_lesions_out():
    """seed="changed": only the changed voxels, dilated; an unchanged lesion away from the change is not repainted,
    one within the margin of it is (partly)."""
    before = np.zeros((16, 16, 16), np.int64)
    before[2:5, 2:5, 2:5] = 3  # the kept real lesion, far from the change
    after = before.copy()
    after[10:13, 10:13, 10:13] = 1  # an inserted lesion
    spacing = (1.0, 1.0, 1.5)
    changed = before != after
    for margin in (0.0, 2.0):
        r = edit_region(before, after, lesion_values=(1, 2, 3), spacing=spacing, margin_mm=margin, seed="changed")
        assert np.array_equal(r, brute_distance(changed, spacing) <= margin + 1e-6)
        assert not r[before > 0].any()
        full = edit_region(before, after, lesion_values=(1, 2, 3), spacing=spacing, margin_mm=margin)
        assert full[before > 0].all() and np.array_equal(r & full, r)  # "changed" is a subset of the default
    near = before.copy()
    near[5, 2:5, 2:5] = 1  # a change touching the kept lesion: its face within the margin is repainted
    r = edit_region(before, near, lesion_values=(1, 2, 3), spacing=spacing, margin_mm=1.0, seed="changed")
    assert r[4, 3, 3] and not r[2, 3, 3]
    assert not edit_region(before, before, lesion_values=(1, 2, 3), spacing=spacing, seed="changed").any()
    with pytest.raises(ValueError, match="seed must be one of"):
        edit_region(before, after, lesion_values=(1,), spacing=spacing, seed="lesion")
