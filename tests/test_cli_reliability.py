"""``samraug synthesize`` on bad input, faults and misuse (issue 12) and on every BraTS layout (issue 13).

Every refusal must name the file or argument, exit with status 1 and leave ``--out`` untouched (not even an empty
folder); outputs are replaced only as a whole with ``--overwrite``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_model import AFFINE, SEQS, SHAPE, subject_range, tiny_brain

from samraug.cli import main

NAMES_2021 = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}


def _seg(et: int = 4) -> np.ndarray:
    """A brats2021 lesion (ET = 4) inside the tiny atlas brain; ``et=3`` gives the 2023/2024 code."""
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[9:19, 10:19, 2:6] = 2
    seg[11:17, 12:17, 2:6] = et
    seg[13:15, 13:16, 3:5] = 1
    return seg


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _image(k: int, seed: int = 0) -> np.ndarray:
    """Sequence ``k`` of a case: 100 (k + 1) x [1, 2) inside the atlas brain, 0 outside."""
    rng = np.random.default_rng(seed + k)
    brain = tiny_brain().numpy()
    return np.where(brain, 100.0 * (k + 1) * (1 + rng.random(SHAPE)), 0.0).astype(np.float32)


def _case(root: Path, case: str, sep: str = "_", names: dict[str, str] | None = None, et: int = 4) -> Path:
    """A case folder ``root/case`` with its seg and four images named ``names[model sequence]`` (default: the BraTS
    2021 names, which go with the brats2021 labels of :func:`_seg`; ``{}`` for the model's 2023 names)."""
    names = NAMES_2021 if names is None else names
    seg = _save(root / case / f"{case}{sep}seg.nii.gz", _seg(et))
    for k, seq in enumerate(SEQS):
        _save(root / case / f"{case}{sep}{names.get(seq, seq)}.nii.gz", _image(k))
    return seg


def _run(weights: str, masks: Path, out: Path, *extra: str, scheme: str = "brats2021") -> int:
    return main(
        ["synthesize", "--masks", str(masks), "--out", str(out), "--weights", weights, "--scheme", scheme, *extra]
    )


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _refused(code: int, capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err
    assert code == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".samraug-")]  # no staging folder left


# ------------------------------------------------------------------------------------------------ issue 12
def test_float_mask_with_fractional_labels_is_refused(tiny_weights: str, tmp_path: Path, capsys) -> None:
    """Item 1: ET stored as 2.4 (linear resampling) must not be rounded into edema."""
    seg = _seg().astype(np.float32)
    seg[seg == 4] = 2.4
    mask = _save(tmp_path / "case_seg.nii.gz", seg)
    out = tmp_path / "out"
    _refused(_run(tiny_weights, mask, out), capsys, str(mask), "non-integer")
    _no_output(out)
    # integral floats are fine
    _save(mask, _seg().astype(np.float32))
    assert _run(tiny_weights, mask, out, "--no-edit") == 0


def test_out_of_an_earlier_run_is_refused_and_overwrite_replaces_it_whole(tiny_weights: str, tmp_path: Path, capsys):
    """Item 4: never mix two runs in one --out."""
    mask = _save(tmp_path / "in" / "case_seg.nii.gz", _seg())
    out = tmp_path / "out"
    assert _run(tiny_weights, mask, out, "--n", "2") == 0
    first = (out / "case-synth0" / "case-synth0-t1n.nii.gz").read_bytes()
    capsys.readouterr()
    _refused(_run(tiny_weights, mask, out, "--n", "1", "--seed", "5"), capsys, str(out), "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["case-synth0", "case-synth1"]
    assert (out / "case-synth0" / "case-synth0-t1n.nii.gz").read_bytes() == first  # untouched
    assert _run(tiny_weights, mask, out, "--n", "1", "--seed", "5", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["case-synth0"]  # the old synth1 is gone with the old run
    assert json.loads((out / "case-synth0" / "edit.json").read_text())["seed"] == 5


def test_masks_pointing_at_a_case_folder_uses_only_its_seg(tiny_weights: str, tmp_path: Path, capsys) -> None:
    """Item 5: the images of a case folder are never read as masks, even with small integer values."""
    case_dir = tmp_path / "BraTS-GLI-00001-000"
    _save(case_dir / "BraTS-GLI-00001-000-seg.nii.gz", _seg(et=3))
    for k, seq in enumerate(SEQS):  # small integer values: valid labels by content
        _save(case_dir / f"BraTS-GLI-00001-000-{seq}.nii.gz", np.where(tiny_brain().numpy(), k + 1, 0).astype(np.int16))
    out = tmp_path / "out"
    assert _run(tiny_weights, case_dir, out, "--n", "2", scheme="brats2023") == 0
    assert "wrote 2 synthetic samples" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["BraTS-GLI-00001-000-synth0", "BraTS-GLI-00001-000-synth1"]
    # a folder of images without the seg, or an image passed as the mask: refused, naming the file
    (case_dir / "BraTS-GLI-00001-000-seg.nii.gz").unlink()
    _refused(_run(tiny_weights, case_dir, tmp_path / "o2", scheme="brats2023"), capsys, "BraTS-GLI-00001-000-t1n")
    image = case_dir / "BraTS-GLI-00001-000-t2f.nii.gz"
    _refused(_run(tiny_weights, image, tmp_path / "o3", scheme="brats2023"), capsys, str(image), "not a mask")
    # by content: an image with many values is called an image
    noisy = _save(tmp_path / "noisy_seg.nii.gz", _image(0).astype(np.int16))
    _refused(_run(tiny_weights, noisy, tmp_path / "o4"), capsys, str(noisy), "image rather than a mask")


@pytest.mark.parametrize("fault", ["flipped", "shifted", "shape"])
def test_case_image_off_the_mask_grid_is_refused(tiny_weights: str, tmp_path: Path, capsys, fault: str) -> None:
    """Items 6 and 13: the images next to a mask must share its grid; the error names both files."""
    root = tmp_path / "tree"
    seg = _case(root, "case")
    bad = root / "case" / "case_t2.nii.gz"
    if fault == "flipped":
        _save(bad, _image(2), np.diag([-2.0, 2.0, 2.0, 1.0]))
    elif fault == "shifted":
        shifted = AFFINE.copy()
        shifted[0, 3] = 198.0
        _save(bad, _image(2), shifted)
    else:
        _save(bad, _image(2)[:30])
    out = tmp_path / "out"
    _refused(_run(tiny_weights, root, out), capsys, str(bad), str(seg), "shape" if fault == "shape" else "affine")
    _no_output(out)


def test_lesion_entirely_outside_the_brain_is_refused(tiny_weights: str, tmp_path: Path, capsys) -> None:
    """Item 8: a lesion where the case's images are 0 is never painted outside the head."""
    root = tmp_path / "tree"
    seg = _case(root, "case")
    for k, seq in enumerate(SEQS):  # the head moved away from the lesion
        vol = np.zeros(SHAPE, np.float32)
        vol[24:30, 24:30, :] = 100.0 * (k + 1)
        _save(root / "case" / f"case_{NAMES_2021[seq]}.nii.gz", vol)
    out = tmp_path / "out"
    _refused(_run(tiny_weights, root, out), capsys, str(seg), "entirely outside the brain")
    _no_output(out)


def test_nan_in_a_later_case_is_refused_before_anything_is_written(tiny_weights: str, tmp_path: Path, capsys):
    """Item 9: name the case and the file; validate all inputs before the first sample is written."""
    root = tmp_path / "tree"
    _case(root, "a")
    _case(root, "b")
    bad = root / "b" / "b_t1ce.nii.gz"
    vol = _image(1)
    vol[10, 10, 3] = np.nan
    _save(bad, vol)
    out = tmp_path / "out"
    _refused(_run(tiny_weights, root, out), capsys, "'b'", str(bad), "NaN")
    _no_output(out)


@pytest.mark.parametrize("which", ["mask", "image", "brain"])
def test_truncated_nifti_is_named(tiny_weights: str, tmp_path: Path, capsys, which: str) -> None:
    """Item 10: a truncated .nii.gz gives an error naming the file, not an EOFError traceback."""
    root = tmp_path / "tree"
    seg = _case(root, "case")
    brain = _save(tmp_path / "brain.nii.gz", tiny_brain().numpy().astype(np.uint8))
    bad = {"mask": seg, "image": root / "case" / "case_flair.nii.gz", "brain": brain}[which]
    _truncate(bad)
    with pytest.raises(EOFError):  # what a plain read does
        with gzip.open(bad) as f:
            f.read()
    out = tmp_path / "out"
    extra = ["--brain", str(brain)] if which == "brain" else []
    _refused(_run(tiny_weights, seg if which == "brain" else root, out, *extra), capsys, str(bad), "truncated")
    _no_output(out)


def test_ctrl_c_leaves_no_partial_output(tiny_weights: str, tmp_path: Path, capsys, monkeypatch) -> None:
    """Item 11: Ctrl-C in the middle of writing a sample leaves neither a 0-byte file nor a half sample folder."""
    mask = _save(tmp_path / "in" / "case_seg.nii.gz", _seg())
    out = tmp_path / "out"
    assert _run(tiny_weights, mask, out) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = {"n": 0}
    real_save = nib.save

    def interrupted_save(img, filename):  # Ctrl-C arrives while the 2nd sample's 3rd file is being written
        calls["n"] += 1
        if calls["n"] == 8:
            Path(filename).write_bytes(b"")  # what an interrupted gzip write leaves: an empty file
            raise KeyboardInterrupt
        return real_save(img, filename)

    monkeypatch.setattr(nib, "save", interrupted_save)
    code = _run(tiny_weights, mask, out, "--n", "3", "--overwrite")
    monkeypatch.undo()
    assert code == 130 and calls["n"] == 8
    assert "interrupted" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the earlier run is intact, nothing of the interrupted one is visible
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".samraug-")]


def test_truncated_atlas_gives_the_clean_weights_error(tiny_weights: str, tmp_path: Path, capsys) -> None:
    """Item 15: the same clean message as ``samraug info``."""
    import shutil

    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    _truncate(weights / "atlas.safetensors")
    assert main(["info", str(weights)]) == 1
    info_err = capsys.readouterr().err
    mask = _save(tmp_path / "case_seg.nii.gz", _seg())
    out = tmp_path / "out"
    err = _refused(_run(str(weights), mask, out), capsys, str(weights / "atlas.safetensors"), "truncated")
    assert err.split("error: ", 1)[1] == info_err.split("error: ", 1)[1]
    _no_output(out)


def test_bad_out_and_device_arguments(tiny_weights: str, tmp_path: Path, capsys) -> None:
    """Item 16: --out a file, under a file, not writable; --device cuda without CUDA: clean errors naming them."""
    mask = _save(tmp_path / "in" / "case_seg.nii.gz", _seg())
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    _refused(_run(tiny_weights, mask, a_file), capsys, "--out", str(a_file), "is a file")
    _refused(_run(tiny_weights, mask, a_file / "sub"), capsys, "--out", "under the file")
    _refused(_run(tiny_weights, mask, Path("/proc/samraug-out")), capsys, "--out", "/proc/samraug-out")
    if not torch.cuda.is_available():
        _refused(_run(tiny_weights, mask, tmp_path / "o", "--device", "cuda"), capsys, "--device", "CUDA")
    _refused(_run(tiny_weights, mask, tmp_path / "o", "--device", "tpu9"), capsys, "--device 'tpu9'")
    assert not (tmp_path / "o").exists()


def test_out_inside_the_input_tree_is_refused(tiny_weights: str, tmp_path: Path, capsys) -> None:
    """Item 17: outputs inside --masks would be read back as input by the next run; errors leave no empty --out."""
    root = tmp_path / "tree"
    _case(root, "case")
    _refused(_run(tiny_weights, root, root / "synth"), capsys, "--out", "inside the input folder")
    assert not (root / "synth").exists()
    out = tmp_path / "deep" / "er" / "out"
    _refused(_run(tiny_weights, root, out, scheme="brats2023"), capsys, "contradicts")  # 2021 names under 2023
    assert not (tmp_path / "deep").exists()


def test_all_background_masks_are_reported_as_skipped(tiny_weights: str, tmp_path: Path, capsys) -> None:
    """Item 18: a mask without lesion is listed as skipped, never counted as a written sample."""
    masks = tmp_path / "masks"
    _save(masks / "a_seg.nii.gz", _seg())
    empty = _save(masks / "b_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    out = tmp_path / "out"
    assert _run(tiny_weights, masks, out, "--n", "2") == 0
    printed = capsys.readouterr().out
    assert "wrote 2 synthetic samples" in printed and f"skipped 1 masks without any lesion (all background): {empty}"
    assert f"skipped 1 masks without any lesion (all background): {empty}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["a-synth0", "a-synth1"]
    only_empty = tmp_path / "only"
    _save(only_empty / "b_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    _refused(_run(tiny_weights, only_empty, tmp_path / "o2"), capsys, "all background")


# ------------------------------------------------------------------------------------------------ issue 13
def test_brats2021_tree_synthesizes_in_its_own_scale(tiny_weights: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "BraTS2021"
    for case in ("BraTS2021_00001", "BraTS2021_00002"):
        _case(root, case, "_", NAMES_2021)
    out = tmp_path / "out"
    assert _run(tiny_weights, root, out, "--n", "1") == 0
    assert "2 of 2 cases in their own images' scale" in capsys.readouterr().out
    brain = tiny_brain().numpy()
    sample = out / "BraTS2021_00002-synth0"
    meta = json.loads((sample / "edit.json").read_text())
    assert set(meta["intensity"].values()) == {"subject"}
    for k, seq in enumerate(SEQS):  # written under the tree's own names, in the case's own scale
        name = NAMES_2021[seq]
        assert meta["files"][seq] == f"BraTS2021_00002-synth0-{name}.nii.gz"
        vol = np.asanyarray(nib.load(str(sample / meta["files"][seq])).dataobj)
        assert np.all(vol[~brain] == 0)
        lo, hi = subject_range(_image(k), brain, _seg(4) > 0)
        assert vol[brain].min() >= lo - 1e-3 and vol[brain].max() <= hi + 1e-3
        assert vol[brain].max() > 1.5  # not the model's [-1, 1]


def test_brats2024_tree_under_brats2021_scheme_is_refused(tiny_weights: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "BraTS2024"
    _case(root, "BraTS-GLI-00001-000", "-", {}, et=3)
    seg = _case(root, "BraTS-GLI-00002-000", "-", {}, et=3)
    seg_data = _seg(et=3)
    seg_data[20:22, 20:22, 3] = 4  # a resection cavity: valid in brats2021 (as ET) and in brats2024
    _save(seg, seg_data)
    out = tmp_path / "out"
    code = _run(tiny_weights, root, out)
    _refused(code, capsys, "contradicts the BraTS 2023/2024 naming", "BraTS-GLI-00001-000", "--force-scheme")
    _no_output(out)
    # the labels check as well: label 3 is not in brats2021 -- with --force-scheme the scheme is used and refused
    _refused(_run(tiny_weights, root, out, "--force-scheme"), capsys, "not in scheme 'brats2021'")
    assert _run(tiny_weights, root, out, scheme="brats2024") == 0


def test_brats2021_names_under_a_2023_scheme_are_refused(tiny_weights: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "tree"
    _case(root, "patient1", "_", NAMES_2021, et=3)  # no BraTS case id: the t1ce/flair names tell the convention
    _refused(_run(tiny_weights, root, tmp_path / "o", scheme="brats2024"), capsys, "BraTS 2021 naming", "patient1")
    assert _run(tiny_weights, root, tmp_path / "o", "--force-scheme", scheme="brats2023") == 0


def test_sequence_map(tiny_weights: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "tree"
    names = {"t1n": "T1", "t1c": "T1GD", "t2w": "T2", "t2f": "FLAIR"}
    _case(root, "p7", "_", names)
    out = tmp_path / "out"
    spec = ",".join(f"{k}={v}" for k, v in names.items())
    assert _run(tiny_weights, root, out, "--sequence-map", spec) == 0
    assert "1 of 1 cases in their own images' scale" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "p7-synth0").glob("*.nii.gz")) == sorted(
        [f"p7-synth0-{v}.nii.gz" for v in names.values()] + ["p7-synth0-seg.nii.gz"]
    )
    _refused(_run(tiny_weights, root, tmp_path / "o", "--sequence-map", "t1c"), capsys, "--sequence-map", "SEQ=SUFFIX")
    _refused(_run(tiny_weights, root, tmp_path / "o", "--sequence-map", "adc=ADC"), capsys, "--sequence-map", "adc")
    _refused(_run(tiny_weights, root, tmp_path / "o", "--sequence-map", "t1c=seg"), capsys, "--sequence-map", "seg")
    assert not (tmp_path / "o").exists()
