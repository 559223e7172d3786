"""Tests for samraug.metrics: hand-computed cases, edge conventions, scheme regions, brute-force agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from samraug.labels import LabelScheme
from samraug.metrics import (
    EdgeConvention,
    aggregate,
    compute_metrics,
    dice,
    hd95,
    hd95_bruteforce,
    image_diagonal,
    lesion_wise_metrics,
    sensitivity,
    specificity,
    surface_distances,
)


def cube(shape, lo, size) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, a + size) for a in lo)] = True
    return m


# ------------------------------------------------------------------------------------------------ overlap metrics
def test_offset_cubes_overlap_metrics():
    a = cube((20, 20, 20), (0, 0, 0), 10)
    b = cube((20, 20, 20), (2, 0, 0), 10)  # overlap 8 * 10 * 10 = 800
    assert dice(a, b) == pytest.approx(2 * 800 / 2000)
    assert sensitivity(a, b) == pytest.approx(800 / 1000)
    # negatives of the ground truth: 8000 - 1000 = 7000; false positives: 200
    assert specificity(a, b) == pytest.approx(6800 / 7000)


def test_spheres_overlap_dice_matches_voxel_count():
    grid = np.indices((32, 32, 32)).astype(float)
    a = ((grid - 15.5) ** 2).sum(0) <= 8**2
    b = ((grid - np.array([18.5, 15.5, 15.5])[:, None, None, None]) ** 2).sum(0) <= 8**2
    inter = np.count_nonzero(a & b)
    assert 0 < inter < a.sum()
    assert dice(a, b) == pytest.approx(2 * inter / (a.sum() + b.sum()))


# ------------------------------------------------------------------------------------------------ surface distances
def test_offset_cubes_hd95_isotropic():
    a = cube((20, 20, 20), (5, 5, 5), 10)
    b = cube((20, 20, 20), (7, 5, 5), 10)
    # The 100 face voxels at x=5 of `a` are 2 mm from `b`'s surface (the x=7 face), more than 5 % of the
    # 10^3 - 8^3 = 488 surface voxels; no surface voxel is farther -> both directed 95th percentiles are 2.
    assert hd95(a, b) == pytest.approx(2.0)
    d_ab, d_ba = surface_distances(a, b)
    assert d_ab.size == 488 and d_ba.size == 488
    assert d_ab.max() == pytest.approx(2.0) and np.count_nonzero(np.isclose(d_ab, 2.0)) >= 100


@pytest.mark.parametrize(
    ("spacing", "axis", "expected"),
    [((1, 1, 3), 2, 6.0), ((1, 1, 3), 0, 2.0), ((2.0, 1, 1), 0, 4.0), ((0.5, 0.5, 0.5), 1, 1.0)],
)
def test_offset_cubes_hd95_anisotropic(spacing, axis, expected):
    a = cube((20, 20, 20), (5, 5, 5), 10)
    b = np.roll(a, 2, axis=axis)  # shift by 2 voxels = 2 * spacing[axis] mm
    assert hd95(a, b, spacing=spacing) == pytest.approx(expected)
    assert hd95_bruteforce(a, b, spacing=spacing) == pytest.approx(expected)


def test_single_voxels_distance():
    a = np.zeros((6, 6, 3), bool)
    b = np.zeros((6, 6, 3), bool)
    a[0, 0, 0] = True
    b[3, 4, 0] = True
    assert hd95(a, b) == pytest.approx(5.0)
    assert hd95(a, b, spacing=(2, 1, 1)) == pytest.approx(math.sqrt(36 + 16))


def test_concentric_spheres_hd95():
    grid = np.indices((32, 32, 32)).astype(float)
    r2 = ((grid - 15.5) ** 2).sum(0)
    outer, inner = r2 <= 10**2, r2 <= 6**2
    value = hd95(outer, inner)
    assert abs(value - 4.0) <= 1.0  # discrete spheres: close to R1 - R2 = 4
    assert value == pytest.approx(hd95_bruteforce(outer, inner))
    assert hd95(outer, inner) == pytest.approx(hd95(inner, outer))  # symmetric


def test_surface_is_face_connected_and_border_counts():
    # a full 3x3x3 block touching the image border on one side: every voxel but the centre is surface
    a = np.zeros((3, 3, 4), bool)
    a[:, :, :3] = True
    b = np.zeros_like(a)
    b[1, 1, 1] = True
    d_ab, d_ba = surface_distances(a, b)
    assert d_ab.size == 26 and d_ba.size == 1
    # a plus sign: its centre has all 4 face neighbours inside (interior), though its diagonals are outside
    plus = np.zeros((5, 5), bool)
    plus[2, 1:4] = True
    plus[1:4, 2] = True
    d_plus, _ = surface_distances(plus, plus)
    assert d_plus.size == 4


def test_hd95_percentile_is_linear_interpolation():
    # 2D: a is a 1x21 bar, b a single pixel at the bar's left end: distances a->b are 0..20;
    # np.percentile(0..20, 95, linear) = 19.0 ; b->a = 0.
    a = np.zeros((3, 25), bool)
    a[1, 0:21] = True
    b = np.zeros_like(a)
    b[1, 0] = True
    assert hd95(a, b) == pytest.approx(19.0)
    assert hd95(a, b, percentile=100) == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------------ edge conventions
def test_edge_conventions_brats_legacy_defaults():
    shape = (240, 240, 155)
    empty = np.zeros(shape, bool)
    some = empty.copy()
    some[100:110, 100:110, 70:80] = True
    assert image_diagonal(shape) == pytest.approx(373.13, abs=0.005)
    # both empty
    assert dice(empty, empty) == 1.0 and hd95(empty, empty) == 0.0
    assert sensitivity(empty, empty) == 1.0 and specificity(empty, empty) == 1.0
    # prediction empty
    assert dice(empty, some) == 0.0 and hd95(empty, some) == pytest.approx(373.13, abs=0.005)
    assert sensitivity(empty, some) == 0.0 and specificity(empty, some) == 1.0
    # ground truth empty
    assert dice(some, empty) == 0.0 and hd95(some, empty) == pytest.approx(373.13, abs=0.005)
    assert sensitivity(some, empty) == 0.0
    assert specificity(some, empty) == pytest.approx(1 - 1000 / empty.size)


def test_edge_conventions_spacing_custom_and_nan():
    empty = np.zeros((10, 10, 10), bool)
    some = cube((10, 10, 10), (2, 2, 2), 3)
    assert hd95(empty, some, spacing=(1, 2, 2)) == pytest.approx(30.0)  # sqrt(10^2 + 20^2 + 20^2)
    assert hd95(empty, some, convention=EdgeConvention(hd95_one_empty=374)) == 374.0
    full = np.ones((4, 4), bool)
    assert specificity(full, full) == 0.0  # legacy: tn / (tn + fp + eps) with no negatives
    nan = EdgeConvention.undefined_as_nan()
    assert math.isnan(dice(empty, empty, convention=nan))
    assert math.isnan(hd95(empty, empty, convention=nan))
    assert math.isnan(hd95(empty, some, convention=nan))
    assert math.isnan(sensitivity(empty, empty, convention=nan))
    assert math.isnan(sensitivity(some, empty, convention=nan))
    assert math.isnan(specificity(full, full, convention=nan))
    assert dice(some, some, convention=nan) == 1.0  # defined values are unaffected
    custom = EdgeConvention(dice_both_empty=0.5, hd95_both_empty=7.0, sensitivity_both_empty=0.25)
    assert dice(empty, empty, convention=custom) == 0.5
    assert hd95(empty, empty, convention=custom) == 7.0
    assert sensitivity(empty, empty, convention=custom) == 0.25
    assert sensitivity(some, empty, convention=EdgeConvention(sensitivity_gt_empty=0.75)) == 0.75
    with pytest.raises(ValueError, match="diagonal"):
        EdgeConvention(hd95_one_empty="corner")


# ------------------------------------------------------------------------------------------------ brute force
@st.composite
def mask_pairs(draw, ndim: int, max_side: int):
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(ndim))
    a = draw(arrays(np.bool_, shape))
    b = draw(arrays(np.bool_, shape))
    spacing = tuple(draw(st.sampled_from([0.5, 1.0, 1.5, 3.0])) for _ in range(ndim))
    return a, b, spacing


@given(mask_pairs(ndim=2, max_side=12))
def test_hd95_matches_bruteforce_2d(case):
    a, b, spacing = case
    if a.any() and b.any():
        assert hd95(a, b, spacing=spacing) == pytest.approx(hd95_bruteforce(a, b, spacing=spacing), abs=1e-9)
    else:
        assert hd95(a, b, spacing=spacing) in (0.0, pytest.approx(image_diagonal(a.shape, spacing)))


@given(mask_pairs(ndim=3, max_side=7))
def test_hd95_matches_bruteforce_3d(case):
    a, b, spacing = case
    if a.any() and b.any():
        assert hd95(a, b, spacing=spacing) == pytest.approx(hd95_bruteforce(a, b, spacing=spacing), abs=1e-9)
        assert hd95(a, b, spacing=spacing) == pytest.approx(hd95(b, a, spacing=spacing))
    d = dice(a, b)
    assert 0.0 <= d <= 1.0 and d == dice(b, a)


@given(mask_pairs(ndim=3, max_side=6))
def test_overlap_metrics_match_counts(case):
    a, b, _ = case
    tp, fp = np.sum(a & b), np.sum(a & ~b)
    fn, tn = np.sum(~a & b), np.sum(~a & ~b)
    if b.any():
        assert sensitivity(a, b) == pytest.approx(tp / (tp + fn))
    if (~b).any():
        assert specificity(a, b) == pytest.approx(tn / (tn + fp))
    if a.any() or b.any():
        assert dice(a, b) == pytest.approx(2 * tp / (2 * tp + fp + fn))


# ---------------------------------------------------------------------------------------- label maps and regions
EXPECTED_REGIONS = {
    "samr": {1: set(), 2: {"edema", "lesion"}, 3: {"cavity", "lesion"}, 4: {"tumor", "lesion"}},
    "brats2021": {1: {"WT", "TC"}, 2: {"WT"}, 4: {"WT", "TC", "ET"}},
    "brats2023": {1: {"WT", "TC"}, 2: {"WT"}, 3: {"WT", "TC", "ET"}},
    "brats2024": {1: {"NETC", "TC", "WT"}, 2: {"SNFH", "WT"}, 3: {"ET", "TC", "WT"}, 4: {"RC"}},
}


@pytest.mark.parametrize("scheme", sorted(EXPECTED_REGIONS))
def test_region_definitions_per_scheme(scheme):
    for value, regions in EXPECTED_REGIONS[scheme].items():
        gt = np.zeros((6, 6), dtype=np.int64)
        gt[2, 3] = value
        res = compute_metrics(np.zeros_like(gt), gt, scheme=scheme)
        missed = {r for r, m in res.items() if m["dice"] == 0.0}
        assert missed == regions, (scheme, value)


def test_compute_metrics_brats2021_hand_computed():
    gt = np.zeros((4, 6), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[0, :3] = [1, 2, 4]
    pred[0, :3] = [4, 2, 4]  # NCR predicted as ET: ET gains a voxel, TC and WT unchanged
    res = compute_metrics(pred, gt, scheme="brats2021")
    assert set(res) == {"WT", "TC", "ET"}
    assert res["WT"]["dice"] == 1.0 and res["TC"]["dice"] == 1.0
    assert res["ET"]["dice"] == pytest.approx(2 / 3)
    assert res["ET"]["sensitivity"] == 1.0 and res["ET"]["specificity"] == pytest.approx(22 / 23)
    assert res["ET"]["hd95"] == pytest.approx(np.percentile([2.0, 0.0], 95))
    assert set(res["WT"]) == {"dice", "hd95", "sensitivity", "specificity"}


def test_compute_metrics_specificity_counts_the_whole_image():
    gt = np.zeros((30, 30, 30), dtype=np.uint8)
    gt[10:15, 10:15, 10:15] = 2
    pred = np.zeros_like(gt)
    pred[11:16, 10:15, 10:15] = 2
    res = compute_metrics(pred, gt, scheme="brats2023")["WT"]
    tn = np.sum((pred == 0) & (gt == 0))
    fp = np.sum((pred > 0) & (gt == 0))
    assert res["specificity"] == pytest.approx(tn / (tn + fp))
    assert res["dice"] == pytest.approx(dice(pred > 0, gt > 0))
    assert res["hd95"] == pytest.approx(hd95(pred > 0, gt > 0))


def test_compute_metrics_inputs_torch_float_2d_and_regions():
    rng = np.random.default_rng(0)
    gt = rng.choice([0, 1, 2, 3, 4], size=(12, 12, 6))
    pred = rng.choice([0, 1, 2, 3, 4], size=(12, 12, 6))
    ref = compute_metrics(pred, gt, scheme="brats2024", spacing=(1, 1, 2.5))
    assert set(ref) == {"NETC", "SNFH", "ET", "RC", "TC", "WT"}
    assert compute_metrics(torch.from_numpy(pred), torch.from_numpy(gt), scheme="brats2024", spacing=(1, 1, 2.5)) == ref
    assert (
        compute_metrics(pred.astype(np.float64), gt.astype(np.float32), scheme="brats2024", spacing=(1, 1, 2.5)) == ref
    )
    sub = compute_metrics(pred, gt, scheme="brats2024", regions=["RC"], spacing=(1, 1, 2.5))
    assert sub == {"RC": ref["RC"]}
    custom = compute_metrics(pred, gt, scheme="brats2024", regions={"core": (1, 3)}, spacing=(1, 1, 2.5))
    assert custom["core"] == ref["TC"]
    two_d = compute_metrics(pred[:, :, 0], gt[:, :, 0], scheme="brats2024")
    assert two_d["WT"]["dice"] == pytest.approx(
        dice(np.isin(pred[:, :, 0], (1, 2, 3)), np.isin(gt[:, :, 0], (1, 2, 3)))
    )
    scheme = LabelScheme.custom("mine", {0: "bg", 7: "lesion"}, {7: "tumor"})
    assert compute_metrics(np.full((3, 3), 7), np.full((3, 3), 7), scheme=scheme)["tumor"]["dice"] == 1.0


def test_compute_metrics_empty_maps_and_background_region():
    zeros = np.zeros((10, 10, 10), dtype=np.int64)
    res = compute_metrics(zeros, zeros, scheme="brats2021", lesion_wise=True)
    assert res["WT"] == {
        "dice": 1.0,
        "hd95": 0.0,
        "sensitivity": 1.0,
        "specificity": 1.0,
        "lesion_dice": 1.0,
        "lesion_hd95": 0.0,
    }
    gt = zeros.copy()
    gt[2:5, 2:5, 2:5] = 2
    missed = compute_metrics(zeros, gt, scheme="brats2021")["WT"]
    assert missed["dice"] == 0.0 and missed["hd95"] == pytest.approx(image_diagonal(gt.shape))
    # a region containing label 0 takes the full-image path
    bg = compute_metrics(zeros, gt, scheme="brats2021", regions={"background": (0,)})["background"]
    assert bg["dice"] == pytest.approx(2 * 973 / (1000 + 973))


def test_compute_metrics_errors():
    gt = np.zeros((8, 8, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"\{5\}.*brats2021"):
        compute_metrics(np.full_like(gt, 5), gt, scheme="brats2021")
    with pytest.raises(ValueError, match=r"\{3\}.*brats2021"):
        compute_metrics(gt, np.full_like(gt, 3), scheme="brats2021")
    with pytest.raises(ValueError, match=r"\{-1\}"):
        compute_metrics(gt - 1, gt, scheme="brats2021")
    with pytest.raises(ValueError, match="non-integer"):
        compute_metrics(gt + 0.5, gt, scheme="brats2021")
    with pytest.raises(ValueError, match="does not match"):
        compute_metrics(gt[:4], gt, scheme="brats2021")
    with pytest.raises(ValueError, match="unknown regions"):
        compute_metrics(gt, gt, scheme="brats2021", regions=["RC"])
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(gt, gt, scheme="brats2021", spacing=(1, 1))
    with pytest.raises(ValueError, match="label scheme"):
        compute_metrics(gt, gt, scheme="brats2019")
    with pytest.raises(ValueError, match="not binary"):
        dice(np.full((3, 3), 2), np.ones((3, 3)))
    with pytest.raises(ValueError, match="2D or 3D"):
        dice(np.ones(4, bool), np.ones(4, bool))


# ------------------------------------------------------------------------------------------------ lesion-wise
def test_lesion_wise_constructed_case():
    shape = (40, 40, 40)
    gt = cube(shape, (2, 2, 2), 6) | cube(shape, (20, 20, 20), 6)
    pred = cube(shape, (3, 2, 2), 6) | cube(shape, (30, 2, 30), 6)  # lesion 1 found (shifted by 1), FP far away
    res = lesion_wise_metrics(pred, gt)
    diag = math.sqrt(3 * 40**2)
    assert (res.n_tp, res.n_fn, res.n_fp) == (1, 1, 1)
    found = 2 * 5 * 6 * 6 / (216 + 216)  # overlap 5 x 6 x 6
    assert res.dice == pytest.approx((found + 0 + 0) / 3)
    assert res.hd95 == pytest.approx((1.0 + diag + diag) / 3)
    assert [s.matched for s in res.lesions] == [(1,), ()]
    assert res.lesions[0].volume == 216.0


def test_lesion_wise_dilation_merges_nearby_fragments():
    shape = (30, 30, 30)
    gt = cube(shape, (5, 5, 5), 5) | cube(shape, (12, 5, 5), 5)  # 2 voxels apart
    pred = cube(shape, (5, 5, 5), 5)
    merged = lesion_wise_metrics(pred, gt, min_volume=0)
    assert len(merged.lesions) == 1 and (merged.n_tp, merged.n_fn, merged.n_fp) == (1, 0, 0)
    assert merged.dice == pytest.approx(2 * 125 / (125 + 250))
    separate = lesion_wise_metrics(pred, gt, dilation=0, min_volume=0)
    assert len(separate.lesions) == 2 and (separate.n_tp, separate.n_fn) == (1, 1)


def test_lesion_wise_prediction_near_lesion_is_matched_not_fp():
    shape = (30, 30, 30)
    gt = cube(shape, (10, 10, 10), 5)
    pred = cube(shape, (17, 10, 10), 3)  # 2 voxels from the lesion: inside its 3-voxel dilation
    res = lesion_wise_metrics(pred, gt)
    assert (res.n_tp, res.n_fn, res.n_fp) == (1, 0, 0) and res.dice == 0.0
    assert res.hd95 == pytest.approx(hd95(pred, gt))


def test_lesion_wise_one_component_on_two_lesions_and_min_volume():
    shape = (40, 40, 20)
    gt = cube(shape, (2, 2, 2), 5) | cube(shape, (20, 2, 2), 5)
    pred = np.zeros(shape, bool)
    pred[2:25, 2:7, 2:7] = True  # one component spanning both lesions
    res = lesion_wise_metrics(pred, gt)
    assert (res.n_tp, res.n_fn, res.n_fp) == (2, 0, 0)
    assert [s.matched for s in res.lesions] == [(1,), (1,)]
    small = cube(shape, (30, 30, 10), 2)  # 8 voxels <= 50 mm^3: ignored, and so is its detection
    res2 = lesion_wise_metrics(pred | small, gt | small)
    assert (res2.n_tp, res2.n_fn, res2.n_fp) == (2, 0, 0) and res2.dice == pytest.approx(res.dice)
    assert len(res2.lesions) == 3 and not res2.lesions[2].counted
    counted = lesion_wise_metrics(pred | small, gt | small, spacing=(3, 3, 3))  # 8 * 27 = 216 mm^3
    assert counted.n_tp == 3


def test_lesion_wise_empty_cases():
    empty = np.zeros((10, 10, 10), bool)
    some = cube((10, 10, 10), (2, 2, 2), 4)
    both = lesion_wise_metrics(empty, empty)
    assert (both.dice, both.hd95) == (1.0, 0.0)
    only_fp = lesion_wise_metrics(some, empty)
    assert only_fp.n_fp == 1 and only_fp.dice == 0.0 and only_fp.hd95 == pytest.approx(image_diagonal((10, 10, 10)))
    only_fn = lesion_wise_metrics(empty, some)
    assert only_fn.n_fn == 1 and only_fn.dice == 0.0


def test_compute_metrics_lesion_wise_keys():
    gt = np.zeros((30, 30, 30), dtype=np.int64)
    gt[2:8, 2:8, 2:8] = 2
    gt[20:26, 20:26, 20:26] = 4
    pred = gt.copy()
    pred[20:26, 20:26, 20:26] = 0
    res = compute_metrics(pred, gt, scheme="samr", lesion_wise=True)
    lw = lesion_wise_metrics(pred > 1, gt > 1)
    assert res["lesion"]["lesion_dice"] == pytest.approx(lw.dice) == pytest.approx(0.5)
    assert res["lesion"]["lesion_hd95"] == pytest.approx(lw.hd95)
    assert res["edema"]["lesion_dice"] == 1.0


# ------------------------------------------------------------------------------------------------ aggregate
def test_aggregate_nan_aware():
    cases = [
        {"WT": {"dice": 0.8, "hd95": 2.0}},
        {"WT": {"dice": 0.6, "hd95": float("nan")}},
        {"WT": {"dice": 1.0, "hd95": 4.0}},
    ]
    agg = aggregate(cases)
    assert agg["WT"]["dice"]["mean"] == pytest.approx(0.8)
    assert agg["WT"]["dice"]["std"] == pytest.approx(np.std([0.8, 0.6, 1.0]))
    assert agg["WT"]["hd95"] == {"mean": 3.0, "std": 1.0, "n": 2}
    assert aggregate(cases, ddof=1)["WT"]["hd95"]["std"] == pytest.approx(math.sqrt(2))
    none = aggregate([{"ET": {"dice": float("nan")}}])["ET"]["dice"]
    assert none["n"] == 0 and math.isnan(none["mean"]) and math.isnan(none["std"])
