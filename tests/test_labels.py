"""Label schemes: every mapping both ways, sub-label preservation, errors, numpy and torch, one-hot and ROIs."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samraug.labels import (
    BACKGROUND,
    BRAIN,
    CAVITY,
    EDEMA,
    LESION_CLASSES,
    N_CLASSES,
    ROI_GROUPS,
    SAMR_CLASSES,
    SCHEMES,
    TUMOR,
    LabelScheme,
    get_scheme,
    one_hot,
    roi_masks,
)

# value -> SAMR class of every lesion label, written out by hand from the BraTS label definitions
EXPECTED_TO_SAMR = {
    "brats2021": {1: TUMOR, 2: EDEMA, 4: TUMOR},  # 1 NCR/NET, 2 ED, 4 ET
    "brats2023": {1: TUMOR, 2: EDEMA, 3: TUMOR},  # 1 NCR, 2 ED, 3 ET
    "brats2024": {1: TUMOR, 2: EDEMA, 3: TUMOR, 4: CAVITY},  # 1 NETC, 2 SNFH, 3 ET, 4 RC
}
# SAMR class -> label value when no original is given (smallest value of the class; normal brain -> 0)
EXPECTED_FROM_SAMR = {
    "brats2021": [0, 0, 2, 0, 1],
    "brats2023": [0, 0, 2, 0, 1],
    "brats2024": [0, 0, 2, 4, 1],
    "samr": [0, 1, 2, 3, 4],
}


def _every_value(scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """A 2 x n label map with every lesion value, inside and (row 0 col 0) outside the brain, plus its brain."""
    values = sorted(EXPECTED_TO_SAMR[scheme])
    seg = np.array([[0, 0, *values], [0, 0, *values]])
    brain = np.ones_like(seg, dtype=bool)
    brain[0, 0] = False
    brain[1, 2:] = False  # lesion outside the brain mask still counts as lesion (and brain)
    return seg, brain


# ---------------------------------------------------------------------------------------------- to / from SAMR
@pytest.mark.parametrize("name", ["brats2021", "brats2023", "brats2024"])
def test_to_samr_every_value(name: str) -> None:
    scheme = get_scheme(name)
    seg, brain = _every_value(name)
    out = scheme.to_samr(seg, brain)
    assert out.dtype == np.int64 and out.shape == seg.shape
    assert out[0, 0] == BACKGROUND and out[0, 1] == BRAIN and out[1, 0] == BRAIN and out[1, 1] == BRAIN
    for col, value in enumerate(sorted(EXPECTED_TO_SAMR[name]), start=2):
        assert out[0, col] == EXPECTED_TO_SAMR[name][value]
        assert out[1, col] == EXPECTED_TO_SAMR[name][value]
    for value, cls in EXPECTED_TO_SAMR[name].items():
        assert scheme.samr_of(value) == cls
        assert value in scheme.values_of(cls)


@pytest.mark.parametrize("name", ["brats2021", "brats2023", "brats2024", "samr"])
def test_from_samr_without_original_gives_the_defaults(name: str) -> None:
    scheme = get_scheme(name)
    samr = np.arange(N_CLASSES)
    np.testing.assert_array_equal(scheme.from_samr(samr), EXPECTED_FROM_SAMR[name])


@pytest.mark.parametrize("name", ["brats2021", "brats2023", "brats2024"])
def test_round_trip_with_original_keeps_every_sub_label(name: str) -> None:
    scheme = get_scheme(name)
    seg, brain = _every_value(name)
    for s, b in ((seg, brain), (torch.from_numpy(seg), torch.from_numpy(brain))):
        back = scheme.from_samr(scheme.to_samr(s, b), original=s)
        assert type(back) is type(s)
        np.testing.assert_array_equal(np.asarray(back), seg)


def test_samr_scheme_is_the_identity_and_needs_no_brain() -> None:
    samr = get_scheme("samr")
    x = np.array([[0, 1, 2], [3, 4, 1]])
    assert samr.has_brain_label
    np.testing.assert_array_equal(samr.to_samr(x), x)
    np.testing.assert_array_equal(samr.from_samr(x), x)
    # with a brain mask, normal brain / background follow the mask
    brain = np.array([[1, 0, 1], [1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(samr.to_samr(x, brain), [[1, 0, 2], [3, 4, 1]])


@given(
    hnp.arrays(
        np.int64, hnp.array_shapes(min_dims=2, max_dims=3, max_side=6), elements=st.sampled_from([0, 1, 2, 3, 4])
    )
)
def test_round_trip_property_brats2024(seg: np.ndarray) -> None:
    scheme = get_scheme("brats2024")
    brain = np.ones(seg.shape, dtype=bool)
    back = scheme.from_samr(scheme.to_samr(seg, brain), original=seg)
    np.testing.assert_array_equal(back, seg)


# ---------------------------------------------------------------------------------------------- edits
def test_sub_labels_preserved_and_new_voxels_take_the_nearest_sub_label() -> None:
    scheme = get_scheme("brats2021")
    original = np.array([[0, 1, 1, 4, 4, 0, 0, 0]])
    brain = np.ones_like(original, dtype=bool)
    samr = scheme.to_samr(original, brain)
    edited = samr.copy()
    edited[0, 0] = TUMOR  # grown on the NCR side
    edited[0, 5] = TUMOR  # grown on the ET side
    edited[0, 6] = EDEMA
    edited[0, 2] = BRAIN  # shrunk: removed
    back = scheme.from_samr(edited, original=original)
    np.testing.assert_array_equal(back, [[1, 1, 0, 4, 4, 4, 2, 0]])


def test_moved_lesion_takes_sub_labels_from_the_nearest_original_voxels() -> None:
    scheme = get_scheme("brats2023")
    original = np.zeros((1, 12), dtype=np.int64)
    original[0, 0:2] = [1, 3]  # NCR at 0, ET at 1
    samr = np.ones((1, 12), dtype=np.int64)
    samr[0, 9:12] = TUMOR  # moved far away: nearest original tumor voxel is ET (index 1)
    samr[0, 0:2] = BRAIN
    back = scheme.from_samr(samr, original=original)
    np.testing.assert_array_equal(back[0, 9:], [3, 3, 3])
    assert np.all(back[0, :9] == 0)


def test_new_class_absent_from_the_original_takes_the_default() -> None:
    scheme = get_scheme("brats2024")
    original = np.array([[0, 1, 3, 0]])
    samr = np.array([[CAVITY, TUMOR, TUMOR, EDEMA]])
    np.testing.assert_array_equal(scheme.from_samr(samr, original=original), [[4, 1, 3, 2]])


def test_from_samr_torch_keeps_type_and_device() -> None:
    scheme = get_scheme("brats2021")
    samr = torch.tensor([[0, 1, 2, 4]])
    out = scheme.from_samr(samr, original=torch.tensor([[0, 0, 2, 4]]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64 and out.device == samr.device
    assert out.tolist() == [[0, 0, 2, 4]]


def test_to_samr_torch_and_numpy_agree() -> None:
    scheme = get_scheme("brats2024")
    seg = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.uint8)
    brain = np.array([[1, 1, 1], [1, 1, 0]], dtype=bool)
    n = scheme.to_samr(seg, brain)
    t = scheme.to_samr(torch.from_numpy(seg), torch.from_numpy(brain))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64
    np.testing.assert_array_equal(t.numpy(), n)
    # a float label map with integral values is accepted
    np.testing.assert_array_equal(scheme.to_samr(seg.astype(np.float64), brain), n)


# ---------------------------------------------------------------------------------------------- errors
def test_unknown_values_name_values_and_scheme() -> None:
    with pytest.raises(ValueError, match=r"labels \{5\} not in scheme 'brats2021' \(allowed: \[0, 1, 2, 4\]\)"):
        get_scheme("brats2021").to_samr(np.array([0, 5, 1]), np.ones(3, bool))
    with pytest.raises(ValueError, match=r"labels \{3\} not in scheme 'brats2021'.*scheme="):
        get_scheme("brats2021").validate(torch.tensor([3, 3]))
    with pytest.raises(ValueError, match=r"my seg has labels \{4\} not in scheme 'brats2023'.*brats2024"):
        get_scheme("brats2023").validate(np.array([4]), what="my seg")
    with pytest.raises(ValueError, match=r"labels \{-1\}"):
        get_scheme("brats2024").validate(np.array([-1, 0]))
    with pytest.raises(ValueError, match="label 7 is not in scheme 'brats2024'"):
        get_scheme("brats2024").samr_of(7)


def test_nan_and_non_integer_labels() -> None:
    scheme = get_scheme("brats2021")
    with pytest.raises(ValueError, match="NaN or inf"):
        scheme.to_samr(np.array([0.0, np.nan]), np.ones(2, bool))
    with pytest.raises(ValueError, match="NaN or inf"):
        scheme.validate(torch.tensor([0.0, float("inf")]))
    with pytest.raises(ValueError, match=r"non-integer values \[1.5\]"):
        scheme.validate(np.array([0.0, 1.5, 2.0]))


def test_brain_mask_required_and_shape_checked() -> None:
    scheme = get_scheme("brats2024")
    with pytest.raises(ValueError, match="does not encode normal brain: pass brain="):
        scheme.to_samr(np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"brain mask shape \(2,\) does not match label map shape \(2, 2\)"):
        scheme.to_samr(np.zeros((2, 2), int), np.ones(2, bool))
    with pytest.raises(ValueError, match="does not match"):
        scheme.to_samr(torch.zeros(2, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.bool))


def test_from_samr_errors() -> None:
    scheme = get_scheme("brats2021")
    with pytest.raises(ValueError, match=r"SAMR class map has values \{5\}"):
        scheme.from_samr(np.array([0, 5]))
    with pytest.raises(ValueError, match=r"original label map shape \(3,\) does not match \(2,\)"):
        scheme.from_samr(np.array([0, 4]), original=np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"original label map has labels \{3\}"):
        scheme.from_samr(np.array([0, 4]), original=np.array([0, 3]))


# ---------------------------------------------------------------------------------------------- custom schemes
def test_custom_scheme_both_ways() -> None:
    mine = LabelScheme.custom(
        "mine", {0: "bg", 1: "core", 2: "oedema", 5: "active", 9: "cyst"}, {1: "tumor", 2: "edema", 5: 4, 9: "cavity"}
    )
    assert mine.samr_of(1) == TUMOR and mine.samr_of(5) == TUMOR and mine.samr_of(9) == CAVITY
    assert mine.regions == {"edema": (2,), "cavity": (9,), "tumor": (1, 5)}
    assert mine.values == (0, 1, 2, 5, 9) and mine.defaults[TUMOR] == 1
    seg = np.array([[0, 1, 5], [2, 9, 0]])
    brain = np.array([[1, 1, 1], [1, 1, 0]], dtype=bool)
    samr = mine.to_samr(seg, brain)
    np.testing.assert_array_equal(samr, [[BRAIN, TUMOR, TUMOR], [EDEMA, CAVITY, BACKGROUND]])
    np.testing.assert_array_equal(mine.from_samr(samr, original=seg), seg)
    np.testing.assert_array_equal(mine.from_samr(samr), [[0, 1, 1], [2, 9, 0]])
    with_default = LabelScheme.custom("d", {0: "bg", 1: "a", 2: "b"}, {1: "tumor", 2: "tumor"}, defaults={"tumor": 2})
    assert with_default.from_samr(np.array([TUMOR])).tolist() == [2]
    with pytest.raises(ValueError, match=r"labels \{3\} not in scheme 'mine'"):
        mine.validate(np.array([3]))


def test_custom_scheme_with_a_normal_brain_label_needs_no_mask() -> None:
    s = LabelScheme.custom("tissue", {0: "bg", 1: "brain", 2: "lesion"}, {1: "normal_brain", 2: "tumor"})
    assert s.has_brain_label
    np.testing.assert_array_equal(s.to_samr(np.array([0, 1, 2])), [BACKGROUND, BRAIN, TUMOR])
    np.testing.assert_array_equal(s.from_samr(np.array([0, 1, 4])), [0, 1, 2])


def test_scheme_construction_errors() -> None:
    with pytest.raises(ValueError, match="must define label 0"):
        LabelScheme.custom("x", {1: "a"}, {1: "tumor"})
    with pytest.raises(ValueError, match="negative label values"):
        LabelScheme.custom("x", {0: "bg", -1: "a"}, {-1: "tumor"})
    with pytest.raises(ValueError, match=r"no SAMR class given for label values \[2\]"):
        LabelScheme.custom("x", {0: "bg", 1: "a", 2: "b"}, {1: "tumor"})
    with pytest.raises(ValueError, match=r"SAMR classes given for undefined values \[3\]"):
        LabelScheme.custom("x", {0: "bg", 1: "a"}, {1: "tumor", 3: "edema"})
    with pytest.raises(ValueError, match="unknown SAMR class 'tumour'"):
        LabelScheme.custom("x", {0: "bg", 1: "a"}, {1: "tumour"})
    with pytest.raises(ValueError, match="out of range"):
        LabelScheme.custom("x", {0: "bg", 1: "a"}, {1: 7})
    with pytest.raises(ValueError, match="default 2 is not of class"):
        LabelScheme.custom("x", {0: "bg", 1: "a", 2: "b"}, {1: "tumor", 2: "edema"}, defaults={"tumor": 2})
    with pytest.raises(ValueError, match=r"region 'WT' uses undefined values \[7\]"):
        LabelScheme.custom("x", {0: "bg", 1: "a"}, {1: "tumor"}, regions={"WT": (1, 7)})


def test_get_scheme() -> None:
    assert get_scheme("BraTS2021") is SCHEMES["brats2021"]
    mine = LabelScheme.custom("m", {0: "bg", 1: "a"}, {1: "edema"})
    assert get_scheme(mine) is mine
    with pytest.raises(ValueError, match=r"unknown label scheme 'brats2019'; use one of \['brats2021'"):
        get_scheme("brats2019")
    assert set(SCHEMES) == {"samr", "brats2021", "brats2023", "brats2024"}
    assert SCHEMES["brats2021"].regions == {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
    assert SCHEMES["brats2024"].regions["RC"] == (4,)


# ---------------------------------------------------------------------------------------------- one-hot and ROIs
def test_one_hot_and_roi_masks() -> None:
    samr = torch.tensor([[0, 1, 2], [3, 4, 1]])
    oh = one_hot(samr)
    assert oh.shape == (5, 2, 3) and oh.dtype == torch.float32
    assert torch.equal(oh.argmax(0), samr) and torch.all(oh.sum(0) == 1)
    batch = one_hot(samr[None].repeat(2, 1, 1))
    assert batch.shape == (2, 5, 2, 3)
    assert one_hot(torch.zeros(2, 3, 4, dtype=torch.long), channel_dim=0).shape == (5, 2, 3, 4)
    with pytest.raises(ValueError, match=r"outside 0\.\.4"):
        one_hot(torch.tensor([[5]]))
    roi = roi_masks(oh)
    assert roi.shape == (3, 2, 3)
    assert roi[0].tolist() == [[1, 0, 0], [0, 0, 0]]
    assert roi[1].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert roi[2].tolist() == [[0, 0, 1], [1, 1, 0]]
    assert torch.equal(roi_masks(batch)[1], roi)
    with pytest.raises(ValueError, match="one-hot"):
        roi_masks(torch.zeros(2, 2, 2))
    assert list(ROI_GROUPS) == ["background", "brain", "lesion"] and ROI_GROUPS["lesion"] == LESION_CLASSES
    assert SAMR_CLASSES == ("background", "normal_brain", "edema", "cavity", "tumor")


# ---------------------------------------------------------------------------------------------- known gaps
def test_scheme_pickles_and_deep_copies() -> None:
    scheme = get_scheme("brats2024")
    assert pickle.loads(pickle.dumps(scheme)) == scheme
    assert copy.deepcopy(scheme) == scheme


def test_from_samr_rejects_nan_and_non_integer_classes() -> None:
    scheme = get_scheme("brats2021")
    with pytest.raises(ValueError, match="NaN"):
        scheme.from_samr(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="non-integer"):
        scheme.from_samr(np.array([2.7]))


# ---------------------------------------------------------------- scheme-native conditioning


@pytest.mark.parametrize("name", ["samr", "brats2021", "brats2023", "brats2024"])
def test_native_classes_encode_decode_round_trip(name):
    s = get_scheme(name)
    classes = s.classes()
    assert classes[:2] == ("background", "normal_brain")
    assert len(classes) == 2 + len(s.lesion_values)
    rng = np.random.default_rng(0)
    label = rng.choice(np.array(s.values), size=(7, 9))
    brain = rng.random((7, 9)) > 0.3
    enc = s.encode(label, brain)
    assert enc.dtype == np.int64 and enc.min() >= 0 and enc.max() < len(classes)
    lesion = np.isin(label, s.lesion_values)
    # lesion voxels keep their own value; every other voxel is background outside the brain, normal brain inside
    assert np.array_equal(s.decode(enc)[lesion], label[lesion])
    assert np.array_equal(enc[~lesion], np.where(brain, 1, 0)[~lesion])
    # each lesion value gets its own class, named after it
    for i, v in enumerate(s.lesion_values):
        assert classes[2 + i] == s.names[v]
        assert set(np.unique(enc[label == v])) <= {2 + i}
    # torch in, torch out, same values
    t = s.encode(torch.from_numpy(label), torch.from_numpy(brain))
    assert isinstance(t, torch.Tensor) and np.array_equal(t.numpy(), enc)
    assert np.array_equal(s.decode(t).numpy(), s.decode(enc))


def test_native_classes_separate_et_from_necrosis():
    s = get_scheme("brats2024")
    enc = s.encode(np.array([1, 2, 3, 4]), brain=np.ones(4, bool))
    assert enc.tolist() == [2, 3, 4, 5]  # NETC, SNFH, ET, RC: four distinct classes
    assert s.encode(np.array([1, 3]), np.ones(2, bool), conditioning="samr").tolist() == [4, 4]  # legacy: both tumor
    assert get_scheme("samr").classes() == SAMR_CLASSES


def test_decode_rejects_out_of_range_and_unknown_conditioning():
    s = get_scheme("brats2021")
    with pytest.raises(ValueError, match=r"classes 0\.\.4"):
        s.decode(np.array([5]))
    with pytest.raises(ValueError, match="conditioning"):
        s.classes("paper")


def test_translate_known_and_explicit():
    from samraug.labels import translate

    lab = np.array([0, 1, 2, 4])
    assert translate(lab, "brats2021", "brats2024").tolist() == [0, 1, 2, 3]
    assert translate(translate(lab, "brats2021", "brats2023"), "brats2023", "brats2021").tolist() == lab.tolist()
    with pytest.raises(ValueError, match="no counterpart"):
        translate(np.array([0, 4]), "brats2024", "brats2021")  # resection cavity has no 2021 label
    with pytest.raises(ValueError, match="mapping="):
        translate(np.array([0, 2]), "samr", "brats2021")
    assert translate(np.array([0, 2, 4]), "samr", "brats2021", {0: 0, 2: 2, 4: 1}).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="not in scheme"):
        translate(np.array([0, 3]), "brats2021", "brats2024")


def test_roi_masks_native_six_classes():
    oh = one_hot(torch.tensor([[0, 1, 2, 3, 4, 5]]), n_classes=6)
    roi = roi_masks(oh)
    assert roi[:, 0].tolist() == [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1]]
