"""BraTS folder discovery and loading from tiny NIfTI trees written here; patient-level splits."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio

from samraug.data.brats import discover_brats, load_brats, subject_arrays, validate_subject
from samraug.data.splits import (
    SPLIT_NAMES,
    check_split,
    load_split,
    patient_id,
    patient_split,
    save_split,
    select_subjects,
)

SHAPE = (8, 8, 6)
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])
SEQ_2021 = ("t1", "t1ce", "t2", "flair")
SEQ_GLI = ("t1n", "t1c", "t2w", "t2f")


def _brain() -> np.ndarray:
    b = np.zeros(SHAPE, dtype=bool)
    b[1:7, 2:7, 1:5] = True
    return b


def _seg(labels: tuple[int, ...]) -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint8)
    for k, lab in enumerate(labels):
        seg[2 + k, 3:5, 2] = lab
    return seg


def _write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(data, affine), str(path))


def write_case(
    root: Path,
    case_id: str,
    layout: str,
    *,
    labels: tuple[int, ...] = (1, 2),
    extra: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    seed: int = 0,
    ext: str = ".nii.gz",
) -> Path:
    sep, seqs = ("_", SEQ_2021) if layout == "brats2021" else ("-", SEQ_GLI)
    d = root / case_id
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    brain = _brain()
    for k, s in enumerate((*seqs, *extra)):
        if s in skip:
            continue
        img = np.where(brain, rng.uniform(10, 100, SHAPE) * (k + 1), 0.0).astype(np.float32)
        _write(d / f"{case_id}{sep}{s}{ext}", img)
    if "seg" not in skip:
        _write(d / f"{case_id}{sep}seg{ext}", _seg(labels))
    return d


@pytest.fixture
def tree2021(tmp_path: Path) -> Path:
    for i, seed in ((0, 0), (1, 1)):
        write_case(tmp_path, f"BraTS2021_{i:05d}", "brats2021", labels=(1, 2, 4), seed=seed)
    return tmp_path


@pytest.fixture
def tree_gli(tmp_path: Path) -> Path:
    write_case(tmp_path, "BraTS-GLI-00001-000", "gli", labels=(1, 2, 3), extra=("aptw",))
    write_case(tmp_path, "BraTS-GLI-00001-001", "gli", labels=(3,), extra=("aptw",), seed=2, ext=".nii")
    write_case(tmp_path, "BraTS-GLI-00002-000", "gli", labels=(2,), extra=("aptw",), seed=3)
    return tmp_path


# ---------------------------------------------------------------------------------------------- layouts
def test_load_2021_layout(tree2021: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="samraug.data.brats"):
        subjects = load_brats(tree2021)
    assert [s["subject_id"] for s in subjects] == ["BraTS2021_00000", "BraTS2021_00001"]
    s = subjects[0]
    assert s["scheme"] == "brats2021" and s["layout"] == "brats2021" and s["patient_id"] == "BraTS2021_00000"
    assert "brats2021" in caplog.text
    for k in SEQ_2021:
        assert isinstance(s[k], tio.ScalarImage)
    assert isinstance(s["seg"], tio.LabelMap) and isinstance(s["brain"], tio.LabelMap)
    assert "aptw" not in s
    # lazily loaded; the images read back exactly what was written
    written = nib.load(str(tree2021 / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz")).get_fdata()
    np.testing.assert_allclose(s["t1ce"].data[0].numpy(), written, rtol=1e-6)
    np.testing.assert_array_equal(s["seg"].data[0].numpy(), _seg((1, 2, 4)))
    # the brain is the non-zero voxels of the sequences, on the same grid
    np.testing.assert_array_equal(s["brain"].data[0].numpy().astype(bool), _brain())
    np.testing.assert_allclose(s["brain"].affine, s["t1"].affine)


def test_load_gli_layout_with_aptw_and_patients(tree_gli: Path) -> None:
    subjects = load_brats(tree_gli)
    assert [s["subject_id"] for s in subjects] == ["BraTS-GLI-00001-000", "BraTS-GLI-00001-001", "BraTS-GLI-00002-000"]
    assert all(s["scheme"] == "brats2023" and s["layout"] == "brats2023" for s in subjects)
    assert [s["patient_id"] for s in subjects] == ["BraTS-GLI-00001"] * 2 + ["BraTS-GLI-00002"]
    keys = [k for k, v in subjects[0].items() if isinstance(v, tio.ScalarImage)]
    assert keys == [*SEQ_GLI, "aptw"]
    # the .nii case reads like the .nii.gz ones
    assert subjects[1]["t2f"].data.shape == (1, *SHAPE)


def test_extra_sequence_only_in_some_cases_is_dropped_with_a_warning(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS-GLI-00001-000", "gli", extra=("aptw",))
    write_case(tmp_path, "BraTS-GLI-00002-000", "gli")
    with pytest.warns(UserWarning, match=r"'aptw' exists in 1 of 2 cases.*BraTS-GLI-00002-000"):
        subjects = load_brats(tmp_path)
    assert all("aptw" not in s for s in subjects)
    # requiring it names the case without it
    with pytest.raises(FileNotFoundError, match=r"BraTS-GLI-00002-000.*missing \['aptw'\]"):
        load_brats(tmp_path, sequences=(*SEQ_GLI, "aptw"))


def test_custom_sequences_and_unlabelled(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS2021_00007", "brats2021", skip=("seg",))
    with pytest.raises(FileNotFoundError, match=r"missing \['seg'\]"):
        load_brats(tmp_path)
    (s,) = load_brats(tmp_path, sequences=("flair", "t1"), require_seg=False)
    assert "seg" not in s and "t2" not in s
    assert [k for k, v in s.items() if isinstance(v, tio.ScalarImage)] == ["flair", "t1"]


def test_explicit_scheme_overrides_the_default(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS-GLI-00003-000", "gli", labels=(1, 2, 3, 4))
    (s,) = load_brats(tmp_path, scheme="brats2024")
    assert s["scheme"] == "brats2024"


def test_scheme_declared_by_the_phantom_metadata(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS-GLI-00000-000", "gli", labels=(1, 2, 3, 4))
    (tmp_path / "phantom.json").write_text(json.dumps({"label_scheme": "brats2024"}))
    (s,) = load_brats(tmp_path)
    assert s["scheme"] == "brats2024"


# ---------------------------------------------------------------------------------------------- errors
def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_brats(tmp_path / "nope")
    (tmp_path / "random_folder").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no BraTS case folders.*random_folder"):
        load_brats(tmp_path)


def test_case_folder_instead_of_root_is_explained(tmp_path: Path) -> None:
    case = write_case(tmp_path, "BraTS2021_00000", "brats2021")
    with pytest.raises(FileNotFoundError, match="pass its parent"):
        load_brats(case)


def test_missing_file_names_case_sequences_and_found_files(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS2021_00000", "brats2021")
    write_case(tmp_path, "BraTS2021_00001", "brats2021", skip=("t2", "flair"))
    with pytest.raises(FileNotFoundError) as e:
        load_brats(tmp_path)
    msg = str(e.value)
    assert "BraTS2021_00001" in msg and "['t2', 'flair']" in msg and "BraTS2021_00001_t1ce.nii.gz" in msg


def test_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    d = write_case(tmp_path, "BraTS2021_00000", "brats2021")
    _write(d / "BraTS2021_00000_t2.nii.gz", np.ones((8, 8, 5), np.float32))
    with pytest.raises(ValueError, match=r"BraTS2021_00000.*\(8, 8, 5\) of BraTS2021_00000_t2.*\(8, 8, 6\) of BraTS"):
        discover_brats(tmp_path)


def test_affine_mismatch_names_both_files(tmp_path: Path) -> None:
    d = write_case(tmp_path, "BraTS-GLI-00000-000", "gli")
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5
    _write(d / "BraTS-GLI-00000-000-seg.nii.gz", _seg((1,)), shifted)
    with pytest.raises(ValueError, match=r"BraTS-GLI-00000-000.*affine of BraTS-GLI-00000-000-seg.*0\.5.*t1n"):
        load_brats(tmp_path)


def test_tiny_affine_differences_are_tolerated(tmp_path: Path) -> None:
    d = write_case(tmp_path, "BraTS-GLI-00000-000", "gli")
    jitter = AFFINE.copy()
    jitter[0, 3] = 1e-5
    _write(d / "BraTS-GLI-00000-000-seg.nii.gz", _seg((1,)), jitter)
    assert len(load_brats(tmp_path)) == 1


def test_2021_label_3_is_outside_the_scheme(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS2021_00000", "brats2021", labels=(1, 2, 4))
    write_case(tmp_path, "BraTS2021_00001", "brats2021", labels=(1, 3))
    with pytest.raises(ValueError) as e:
        load_brats(tmp_path)
    msg = str(e.value)
    assert "BraTS2021_00001" in msg and "BraTS2021_00001_seg.nii.gz" in msg
    assert "{3}" in msg and "'brats2021'" in msg and "brats2023" in msg


def test_gli_label_4_under_brats2023_asks_for_brats2024(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS-GLI-00005-001", "gli", labels=(1, 4))
    with pytest.raises(ValueError) as e:
        load_brats(tmp_path)
    msg = str(e.value)
    assert "BraTS-GLI-00005-001" in msg and "BraTS-GLI-00005-001-seg.nii.gz" in msg
    assert "{4}" in msg and "'brats2023'" in msg and "scheme='brats2024'" in msg
    # without validation loading is lazy, and validate_subject raises the same error later
    (s,) = load_brats(tmp_path, validate=False)
    with pytest.raises(ValueError, match="scheme='brats2024'"):
        validate_subject(s)
    validate_subject(s, scheme="brats2024")


def test_nan_in_an_image_names_case_and_file(tmp_path: Path) -> None:
    d = write_case(tmp_path, "BraTS2021_00000", "brats2021")
    bad = np.where(_brain(), 5.0, 0.0).astype(np.float32)
    bad[3, 3, 3] = np.nan
    _write(d / "BraTS2021_00000_flair.nii.gz", bad)
    (s,) = load_brats(tmp_path)  # labels are fine; images are checked when read
    with pytest.raises(ValueError, match=r"BraTS2021_00000.*BraTS2021_00000_flair.nii.gz has 1 NaN/inf"):
        validate_subject(s, images=True)
    with pytest.raises(ValueError, match=r"BraTS2021_00000.*flair.nii.gz has 1 NaN/inf"):
        s["brain"].load()
    with pytest.raises(ValueError, match=r"BraTS2021_00000.*flair.nii.gz has 1 NaN/inf"):
        subject_arrays(s, SEQ_2021)


def test_mixed_layouts_and_duplicate_files(tmp_path: Path) -> None:
    write_case(tmp_path / "a", "BraTS2021_00000", "brats2021")
    write_case(tmp_path / "a", "BraTS-GLI-00000-000", "gli")
    with pytest.raises(ValueError, match="mixes BraTS layouts"):
        load_brats(tmp_path / "a")
    d = write_case(tmp_path / "b", "BraTS2021_00000", "brats2021")
    _write(d / "BraTS2021_00000_t1.nii", np.ones(SHAPE, np.float32))
    with pytest.raises(ValueError, match=r"several files for one sequence.*t1"):
        load_brats(tmp_path / "b")


def test_subject_arrays_does_not_cache_and_reads_dicts(tree2021: Path) -> None:
    s = load_brats(tree2021)[0]
    arrays = subject_arrays(s, ("t1", "flair"))
    assert arrays.images.shape == (2, *SHAPE) and arrays.images.dtype == np.float32
    assert arrays.seg is not None and arrays.seg.dtype == np.int64
    np.testing.assert_array_equal(arrays.brain, _brain())
    np.testing.assert_allclose(arrays.affine, AFFINE, atol=1e-6)
    assert not s["t1"]._loaded and not s["brain"]._loaded  # nothing kept in the subject
    # the brain covers every sequence of the case, also those not asked for
    t2 = tree2021 / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz"
    extra = nib.load(str(t2)).get_fdata().astype(np.float32)
    extra[0, 0, 0] = 3.0
    _write(t2, extra)
    s = load_brats(tree2021)[0]
    expected = _brain()
    expected[0, 0, 0] = True
    np.testing.assert_array_equal(subject_arrays(s, ("t1", "flair")).brain, expected)
    np.testing.assert_array_equal(s["brain"].data[0].numpy().astype(bool), expected)
    d = {"subject_id": "x", "a": torch.ones(SHAPE), "b": np.ones((1, *SHAPE))}
    arr = subject_arrays(d, ("a", "b"))
    assert arr.seg is None and arr.brain.all() and arr.subject_id == "x"
    with pytest.raises(ValueError, match=r"subject 'x' has no image \['c'\]"):
        subject_arrays(d, ("a", "c"))
    with pytest.raises(ValueError, match=r"subject 'x'.*shape \(8, 8, 5\)"):
        subject_arrays({**d, "c": np.ones((8, 8, 5))}, ("a", "c"))


# ---------------------------------------------------------------------------------------------- splits
def _gli_ids() -> list[str]:
    return [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(20) for t in range(1 + p % 3)]


def test_patient_id() -> None:
    assert patient_id("BraTS-GLI-00042-001") == "BraTS-GLI-00042"
    assert patient_id("BraTS-MEN-00042-000") == "BraTS-MEN-00042"
    assert patient_id("BraTS2021_00042") == "BraTS2021_00042"


def test_split_is_deterministic_disjoint_complete_and_by_patient() -> None:
    ids = _gli_ids()
    a = patient_split(ids, test_fraction=0.2, val_fraction=0.1, seed=3)
    b = patient_split(list(reversed(ids)), test_fraction=0.2, val_fraction=0.1, seed=3)
    assert a == b
    assert list(a) == list(SPLIT_NAMES)
    parts = [set(a[k]) for k in SPLIT_NAMES]
    assert sum(map(len, parts)) == len(ids) and set().union(*parts) == set(ids)
    owner = {patient_id(c): k for k in SPLIT_NAMES for c in a[k]}
    for k in SPLIT_NAMES:
        assert all(owner[patient_id(c)] == k for c in a[k])
    patients = {k: {patient_id(c) for c in a[k]} for k in SPLIT_NAMES}
    assert [len(patients[k]) for k in SPLIT_NAMES] == [14, 2, 4]  # fractions are of the 20 patients
    assert patient_split(ids, test_fraction=0.2, val_fraction=0.1, seed=4) != a
    check_split(a)


def test_split_errors() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        patient_split(["a", "a", "b"])
    with pytest.raises(ValueError, match="non-empty train"):
        patient_split(["a", "b"], test_fraction=0.5, val_fraction=0.4)
    with pytest.raises(ValueError, match="test_fraction"):
        patient_split(["a", "b"], test_fraction=1.0)
    with pytest.raises(ValueError, match="both 'train' and 'test'"):
        check_split({"train": ["a"], "test": ["a"]})
    with pytest.raises(ValueError, match="patient 'BraTS-GLI-00001'"):
        check_split({"train": ["BraTS-GLI-00001-000"], "test": ["BraTS-GLI-00001-001"]})


def test_split_json_round_trip(tmp_path: Path) -> None:
    split = patient_split(_gli_ids(), test_fraction=0.25, seed=0)
    path = save_split(split, tmp_path / "sub" / "split.json")
    assert load_split(path) == split
    assert json.loads(path.read_text()) == split
    path.write_text(json.dumps({"train": ["BraTS-GLI-00001-000"], "val": ["BraTS-GLI-00001-001"]}))
    with pytest.raises(ValueError, match=r"split.json: patient"):
        load_split(path)
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path / "missing.json")


def test_select_subjects_by_split(tree_gli: Path) -> None:
    subjects = load_brats(tree_gli)
    split = patient_split([s["subject_id"] for s in subjects], test_fraction=0.5, seed=0)
    test = select_subjects(subjects, split["test"])
    assert [s["subject_id"] for s in test] == split["test"]
    with pytest.raises(ValueError, match="not among the subjects"):
        select_subjects(subjects, ["BraTS-GLI-09999-000"])


def test_no_warning_when_every_case_has_the_extra(tree_gli: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_brats(tree_gli)) == 3
