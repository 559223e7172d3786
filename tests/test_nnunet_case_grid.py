"""nnU-Net cases its preprocessing resampled (a target spacing other than the data's): their own grid's affine,
checked against nnU-Net's own cropping and resampling, and local-mode weights painting them where they lie."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("nnunetv2")

from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.resampling.default_resampling import (
    compute_new_shape,
    resample_data_or_seg_to_shape,
)
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from samraug.data.phantom import generate_subject
from samraug.export.labels import NnunetLabels
from samraug.export.trainer import SAMRCaseSynthesizer, case_affine, case_to_grid, training_donors

CHANNELS = {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"}
#: an LPS-like, slightly oblique file geometry (the phantom's arrays are put on it)
ANGLE = np.deg2rad(10.0)
AFFINE = np.array(
    [
        [-2.0 * np.cos(ANGLE), 2.0 * np.sin(ANGLE), 0.0, 90.0],
        [-2.0 * np.sin(ANGLE), -2.0 * np.cos(ANGLE), 0.0, 110.0],
        [0.0, 0.0, 2.0, -60.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _properties(affine: np.ndarray) -> dict:
    """What nnU-Net's SimpleITKIO reader records for a file with this (RAS) affine: ITK's LPS geometry."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    flip = np.diag([-1.0, -1.0, 1.0])
    direction = flip @ affine[:3, :3] @ np.diag(1.0 / spacing)
    return {
        "spacing": [float(s) for s in spacing[::-1]],  # the reader's (Z, Y, X) order
        "sitk_stuff": {
            "spacing": tuple(float(s) for s in spacing),
            "origin": tuple(float(v) for v in flip @ affine[:3, 3]),
            "direction": tuple(float(v) for v in direction.ravel()),
        },
    }


def _preprocess(data: np.ndarray, seg: np.ndarray, transpose: list[int], target: list[float]):
    """``data`` ``(C, X, Y, Z)`` and ``seg`` ``(X, Y, Z)`` on ``AFFINE`` through DefaultPreprocessor.run_case_npy's
    geometric steps, with nnU-Net's own functions: the reader's (Z, Y, X) order, ``transpose_forward``, the crop to
    the non-zero mask, the resampling to the target spacing (``target``: transposed, as the plans hold it)."""
    props = _properties(AFFINE)
    d = data.transpose(0, 3, 2, 1).transpose([0, *[i + 1 for i in transpose]]).astype(np.float32)
    s = seg.T[None].transpose([0, *[i + 1 for i in transpose]]).astype(np.int16)
    spacing = [props["spacing"][i] for i in transpose]
    props["shape_before_cropping"] = d.shape[1:]
    d, s, bbox = crop_to_nonzero(d, s)
    props["bbox_used_for_cropping"] = bbox
    props["shape_after_cropping_and_before_resampling"] = d.shape[1:]
    new_shape = compute_new_shape(d.shape[1:], spacing, target)
    d = resample_data_or_seg_to_shape(d, new_shape, spacing, target, is_seg=False, order=1)
    s = resample_data_or_seg_to_shape(s, new_shape, spacing, target, is_seg=True, order=1)
    return d.astype(np.float32), s, props


@pytest.fixture(scope="module")
def phantom():
    return generate_subject(7, n_lesions=1, cavity_probability=0.0)


@pytest.mark.parametrize(
    ("transpose", "target"),
    [
        ([0, 1, 2], [2.0, 2.0, 2.0]),  # not resampled: the crop alone
        ([0, 1, 2], [3.0, 2.5, 2.5]),
        ([2, 0, 1], [2.5, 3.0, 1.5]),  # transposed, coarser and finer
        ([1, 2, 0], [2.0, 4.0, 2.0]),
    ],
)
def test_case_affine_places_nnunets_resampled_voxels(phantom, transpose: list[int], target: list[float]) -> None:
    """A field linear in world space, cropped and resampled by nnU-Net (linear interpolation), has at each case
    voxel the value the field takes at that voxel's world position under case_affine."""
    index = np.indices(phantom.brain.shape).reshape(3, -1)
    world = (AFFINE[:3, :3] @ index + AFFINE[:3, 3:]).reshape(3, *phantom.brain.shape)
    field = 1000.0 + 3.0 * world[0] - 2.0 * world[1] + 5.0 * world[2]
    head = ndimage.binary_fill_holes(phantom.brain)  # nnU-Net's non-zero mask fills holes: no zeros inside
    data, seg, props = _preprocess(np.where(head, field, 0.0)[None], phantom.seg, transpose, target)
    affine = case_affine(props, transpose, data.shape[1:])
    inside = ndimage.binary_erosion(seg[0] >= 0, iterations=3)  # all interpolation neighbours in the brain
    assert inside.sum() > 1000
    idx = np.argwhere(inside).T
    where = affine[:3, :3] @ idx + affine[:3, 3:]
    expected = 1000.0 + 3.0 * where[0] - 2.0 * where[1] + 5.0 * where[2]
    np.testing.assert_allclose(data[0][inside], expected, atol=2e-3 * np.ptp(field[head]))
    # the voxel size is the resampled one: nnU-Net's target up to its rounding of the shape
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(sizes, target, rtol=0.05)


def test_case_affine_without_resampling_is_case_to_grid(phantom) -> None:
    """Not resampled, case voxel i and the voxel case_to_grid puts it at are the same world point."""
    transpose = [2, 0, 1]
    data, seg, props = _preprocess(phantom.images["t1n"][None], phantom.seg, transpose, [2.0, 2.0, 2.0])
    full, _, full_affine = case_to_grid(data, seg, props, transpose)
    affine = case_affine(props, transpose, data.shape[1:])
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, n, 50) for n in data.shape[1:]])
    to_full = np.linalg.inv(full_affine) @ affine
    at = np.rint(to_full[:3, :3] @ idx + to_full[:3, 3:]).astype(int)
    np.testing.assert_allclose(to_full[:3, :3] @ idx + to_full[:3, 3:], at, atol=1e-6)  # lands on a voxel
    np.testing.assert_array_equal(full[0][tuple(at)], data[0][tuple(idx)])


def _manager() -> LabelManager:
    entries = NnunetLabels.from_scheme("brats2024", region_based=False).dataset_json_entries()
    return LabelManager(entries["labels"], regions_class_order=None)


def _case(phantom, transpose: list[int], target: list[float]):
    data = np.stack([phantom.images[c] for c in CHANNELS.values()])
    labels = NnunetLabels.from_scheme("brats2024", region_based=False)
    return _preprocess(data, labels.to_consecutive(phantom.seg), transpose, target)


def test_local_weights_paint_a_resampled_case_where_it_lies(phantom, tmp_path) -> None:
    from tiny_model import save_tiny_local_weights

    weights = save_tiny_local_weights(tmp_path / "local", scheme="brats2024")
    transpose, target = [2, 0, 1], [3.0, 2.5, 2.5]
    data, seg, props = _case(phantom, transpose, target)
    assert data.shape[1:] != tuple(props["shape_after_cropping_and_before_resampling"])  # resampled
    with pytest.raises(ValueError, match="no exact way back"):
        case_to_grid(data, seg, props, transpose)
    make = SAMRCaseSynthesizer(CHANNELS, "brats2024", transpose, _manager(), weights=weights)
    painted = 0
    for seed in range(4):
        new_data, new_seg, new_props = make(data, seg, props, seed=seed)
        assert new_data.shape == data.shape and new_data.dtype == np.float32 and np.isfinite(new_data).all()
        assert new_seg.shape == seg.shape
        outside = seg[0] < 0
        assert (new_seg[0][outside] == -1).all() and (new_seg[0][~outside] >= 0).all()
        np.testing.assert_array_equal(new_data[:, outside], data[:, outside])  # outside the brain: untouched
        assert set(new_props["class_locations"]) == set(_manager().foreground_labels)
        painted += bool((new_data != data).any())
        again = make(data, seg, props, seed=seed)  # one seed, one case
        assert np.array_equal(again[0], new_data) and np.array_equal(again[1], new_seg)
    assert painted >= 2  # (an edit whose region reaches the crop's edge leaves the case as it was)


def test_whole_image_weights_keep_a_resampled_case_real(phantom, tiny_weights: str) -> None:
    """Whole-image weights paint on the original (atlas) grid, which a resampled case has no exact way back to: the
    error the trainer's dataset turns into keeping the case real."""
    transpose = [0, 1, 2]
    data, seg, props = _case(phantom, transpose, [3.0, 2.5, 2.5])
    make = SAMRCaseSynthesizer(CHANNELS, "brats2024", transpose, _manager(), weights=tiny_weights)
    with pytest.raises(ValueError, match=r"the case was resampled .* whole-image SAMR weights paint on"):
        make(data, seg, props, seed=0)


class _Cases:
    """What the trainer reads of nnU-Net's training dataset (``identifiers``, ``load_case``), over prepared cases."""

    def __init__(self, cases: dict) -> None:
        self.cases, self.identifiers = cases, sorted(cases)

    def load_case(self, key: str):
        data, seg, props = self.cases[key]
        return data, seg, None, props


def test_training_donors_take_resampled_cases_on_their_own_grid_for_local_weights(phantom, tmp_path) -> None:
    """Whole-image weights take donors only from cases with a way back to the original grid; local weights also
    take a resampled case's label map, on its own grid, and paint with such donors."""
    from tiny_model import save_tiny_local_weights

    labels = NnunetLabels.from_scheme("brats2024", region_based=False)
    transpose = [2, 0, 1]
    cases = {
        "kept": _case(phantom, transpose, [2.0, 2.0, 2.0]),
        "resampled": _case(phantom, transpose, [3.0, 2.5, 2.5]),
    }
    dataset = _Cases(cases)

    def in_scheme(label: np.ndarray) -> np.ndarray:
        return labels.to_scheme(np.where(label >= 0, label, 0))

    on_grid = in_scheme(case_to_grid(*cases["kept"], transpose)[1])
    own = in_scheme(cases["resampled"][1][0])
    assert on_grid.shape == phantom.seg.shape and own.shape != on_grid.shape
    np.testing.assert_array_equal(on_grid, phantom.seg)  # the way back is exact
    whole = training_donors(dataset, 4, labels, transpose, own_grid=False, seed=0)
    assert len(whole) == 1 and np.array_equal(whole[0], on_grid)
    local = training_donors(dataset, 4, labels, transpose, own_grid=True, seed=0)
    assert len(local) == 2 and sorted(d.shape for d in local) == sorted([on_grid.shape, own.shape])
    assert any(np.array_equal(d, own) for d in local) and (own > 0).any()
    assert training_donors(dataset, 0, labels, transpose, own_grid=True, seed=0) == []
    one = [training_donors(dataset, 1, labels, transpose, own_grid=True, seed=s)[0].shape for s in range(8)]
    assert len(set(one)) == 2  # the seed draws which case

    weights = save_tiny_local_weights(tmp_path / "local", scheme="brats2024")
    make = SAMRCaseSynthesizer(CHANNELS, "brats2024", transpose, _manager(), weights=weights, donors=local)
    data, seg, props = cases["resampled"]
    for seed in range(3):
        new_data, new_seg, _ = make(data, seg, props, seed=seed)
        assert new_data.shape == data.shape and new_seg.shape == seg.shape and np.isfinite(new_data).all()


def test_case_affine_refuses_what_it_cannot_place(phantom) -> None:
    data, _, props = _case(phantom, [0, 1, 2], [3.0, 2.5, 2.5])
    with pytest.raises(ValueError, match=r"one entry per axis .* pass data.shape\[1:\]"):
        case_affine(props, [0, 1, 2], data.shape)  # the channel axis left in
    with pytest.raises(ValueError, match="the plans' transpose_forward"):
        case_affine(props, [0, 1], data.shape[1:])
    partial = {k: v for k, v in props.items() if k != "bbox_used_for_cropping"}
    with pytest.raises(ValueError, match=r"lack \['bbox_used_for_cropping'\]: pass the properties"):
        case_affine(partial, [0, 1, 2], data.shape[1:])
