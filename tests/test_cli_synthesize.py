"""``samraug synthesize`` and ``samraug info``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from tiny_model import AFFINE, SEQS, SHAPE, tiny_brain

from samraug.cli import main
from samraug.models.generator import build_generator


def _brain() -> np.ndarray:
    return tiny_brain().numpy()


@pytest.fixture(scope="module")
def weights(tiny_weights: str) -> str:
    return tiny_weights


def _seg(shift: int = 0) -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[9 + shift : 19 + shift, 10:19, 2:6] = 2
    seg[11 + shift : 17 + shift, 12:17, 2:6] = 4
    seg[13 + shift : 15 + shift, 13:16, 3:5] = 1
    return seg


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_synthesize_brats_tree(weights: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "masks"
    rng = np.random.default_rng(0)
    brain = _brain()
    for i, case in enumerate(["BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]):
        _save(root / case / f"{case}-seg.nii.gz", _seg(shift=2 * i))
        if i == 0:  # the first case has its own images: output in their scale, brain from them
            for k, seq in enumerate(SEQS):
                vol = np.where(brain, 100.0 * (k + 1) * (1 + rng.random(SHAPE)), 0.0).astype(np.float32)
                _save(root / case / f"{case}-{seq}.nii.gz", vol)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="atlas brain"):
        code = main(
            [
                "synthesize",
                "--masks",
                str(root),
                "--out",
                str(out),
                "--n",
                "2",
                "--weights",
                weights,
                "--scheme",
                "brats2021",
                "--seed",
                "3",
                "--preview",
                "--force-scheme",  # 2023-style names with brats2021 labels: a contradiction unless forced
            ]
        )
    assert code == 0
    assert "wrote 4 synthetic samples" in capsys.readouterr().out
    folders = sorted(p.name for p in out.iterdir())
    assert folders == [f"BraTS-GLI-0000{i}-000-synth{j}" for i in (1, 2) for j in (0, 1)]
    case = out / "BraTS-GLI-00001-000-synth1"
    seg_img = nib.load(str(case / "BraTS-GLI-00001-000-synth1-seg.nii.gz"))
    np.testing.assert_allclose(seg_img.affine, AFFINE)
    seg = np.asanyarray(seg_img.dataobj)
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2, 4}
    for k, seq in enumerate(SEQS):
        img = nib.load(str(case / f"BraTS-GLI-00001-000-synth1-{seq}.nii.gz"))
        vol = np.asanyarray(img.dataobj)
        np.testing.assert_allclose(img.affine, AFFINE)
        assert vol.shape == SHAPE and np.all(vol[~brain] == 0)
        assert vol[brain].min() >= 100.0 * (k + 1) * 0.99  # in the case's own scale (its brain p0.5..p99.5)
    meta = json.loads((case / "edit.json").read_text())
    assert meta["intensity"]["t1n"] == "subject" and meta["edit"]["applied"] in (True, False)
    assert (case / "BraTS-GLI-00001-000-synth1-preview.png").stat().st_size > 1000
    other = np.asanyarray(
        nib.load(str(out / "BraTS-GLI-00002-000-synth0" / "BraTS-GLI-00002-000-synth0-t2f.nii.gz")).dataobj
    )
    assert other.min() >= -1 and other.max() <= 1  # no images for that case: model range


def test_synthesize_single_file_with_brain(weights: str, tmp_path: Path) -> None:
    mask, brain = tmp_path / "case_seg.nii.gz", tmp_path / "brain.nii.gz"
    _save(mask, _seg())
    _save(brain, _brain().astype(np.uint8))
    out = tmp_path / "out"
    args = ["synthesize", "--masks", str(mask), "--out", str(out), "--weights", weights, "--scheme", "brats2021"]
    assert main([*args, "--brain", str(brain), "--no-edit"]) == 0
    seg = np.asanyarray(nib.load(str(out / "case-synth0" / "case-synth0-seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(seg, _seg())  # --no-edit keeps the mask


def test_synthesize_errors(weights: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mask = tmp_path / "off_seg.nii.gz"
    _save(mask, _seg()[:30])
    base = ["synthesize", "--out", str(tmp_path / "o"), "--weights", weights]
    assert main([*base, "--masks", str(mask), "--scheme", "brats2021"]) == 1
    assert "not on the atlas grid" in capsys.readouterr().err
    bad = tmp_path / "bad_seg.nii.gz"
    _save(bad, np.where(_seg() == 1, 3, _seg()).astype(np.uint8))
    assert main([*base, "--masks", str(bad), "--scheme", "brats2021"]) == 1
    assert "not in scheme 'brats2021'" in capsys.readouterr().err
    assert main([*base, "--masks", str(tmp_path / "missing"), "--scheme", "brats2021"]) == 1
    with pytest.raises(SystemExit):  # --scheme is required: never guessed
        main([*base, "--masks", str(mask)])


def test_info(weights: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", weights]) == 0
    out = capsys.readouterr().out
    assert "t1n, t1c, t2w, t2f" in out and "brats2021" in out and "samr" in out
    n_params = sum(
        p.numel()
        for p in build_generator(
            "tiny", sequences=SEQS, base_channels=8, max_channels=16, n_res_blocks=1, n_down=3
        ).parameters()
    )
    assert f"{n_params:,}" in out
    assert "shape [32, 32, 8], spacing [2.0, 2.0, 2.0] mm" in out
    assert "data: unit test" in out


def test_synthesize_local_mode_on_another_grid(tiny_local_weights: str, tmp_path: Path, capsys) -> None:
    """Local weights repaint only the lesion's neighbourhood inside the case's own images, on a 1 mm grid that is
    not the atlas grid; voxels far from the lesion are bit-identical to the input."""
    shape, affine = (40, 40, 24), np.diag([1.0, 1.0, 1.0, 1.0])
    brain = np.zeros(shape, dtype=bool)
    brain[4:36, 4:36, 2:22] = True
    seg = np.zeros(shape, dtype=np.uint8)
    seg[16:24, 16:24, 10:14] = 2
    seg[18:22, 18:22, 11:13] = 3  # BraTS 2023 ET: translated to the weights' brats2021 (ET = 4)
    root, rng = tmp_path / "masks" / "case7", np.random.default_rng(1)
    _save(root / "case7-seg.nii.gz", seg, affine)
    inputs = {}
    for k, seq in enumerate(SEQS):
        inputs[seq] = np.where(brain, 100.0 * (k + 1) * (1 + rng.random(shape)), 0.0).astype(np.float32)
        _save(root / f"case7-{seq}.nii.gz", inputs[seq], affine)
    out = tmp_path / "out"
    argv = ["synthesize", "--masks", str(root / "case7-seg.nii.gz"), "--out", str(out), "--weights"]
    argv += [tiny_local_weights, "--scheme", "brats2023", "--no-edit", "--margin-mm", "2"]
    assert main(argv) == 0
    assert "wrote 1 synthetic samples" in capsys.readouterr().out
    sample = out / "case7-synth0"
    meta = json.loads((sample / "edit.json").read_text())
    assert meta["mode"] == "local" and meta["edit"]["paint"]["mode"] == "local"
    far = np.ones(shape, dtype=bool)
    far[10:30, 10:30, 4:20] = False  # the lesion dilated by margin + feather + one 2 mm model voxel
    for seq in SEQS:
        img = nib.load(str(sample / f"case7-synth0-{seq}.nii.gz"))
        vol = np.asanyarray(img.dataobj)
        np.testing.assert_allclose(img.affine, affine)
        assert np.array_equal(vol[far], inputs[seq][far])  # untouched, bit for bit
        assert not np.array_equal(vol[seg > 0], inputs[seq][seg > 0])  # the lesion was repainted
    # the mode must match the weights, and local mode needs the case's images
    assert main([*argv[:4], str(tmp_path / "o2"), *argv[5:], "--mode", "whole"]) == 1
    assert "trained for mode 'local'" in capsys.readouterr().err
    (root / "case7-t2f.nii.gz").unlink()
    assert main([*argv[:4], str(tmp_path / "o3"), *argv[5:]]) == 1
    assert "t2f is missing next to it" in capsys.readouterr().err


def _local_case(tmp_path: Path) -> tuple[np.ndarray, Path]:
    """A 1 mm case (48x48x40, a BraTS 2023 lesion, random intensities) written as case3-*.nii.gz: its label map
    and folder."""
    shape, affine = (48, 48, 40), np.diag([1.0, 1.0, 1.0, 1.0])
    brain = np.zeros(shape, dtype=bool)
    brain[4:44, 4:44, 6:34] = True
    seg = np.zeros(shape, dtype=np.uint8)
    seg[12:20, 20:28, 18:22] = 2
    seg[14:18, 22:26, 19:21] = 3
    root, rng = tmp_path / "masks" / "case3", np.random.default_rng(2)
    _save(root / "case3-seg.nii.gz", seg, affine)
    for k, seq in enumerate(SEQS):
        vol = np.where(brain, 100.0 * (k + 1) * (1 + rng.random(shape)), 0.0).astype(np.float32)
        _save(root / f"case3-{seq}.nii.gz", vol, affine)
    return seg, root


@pytest.mark.parametrize("healthy", ["harmonic", "spline", "mirror"])
def test_synthesize_local_classical_healthy_fill(tiny_local_weights: str, tmp_path: Path, healthy: str) -> None:
    """--healthy harmonic / spline / mirror: the same edits as the model's painting (same seeds), recorded with the
    fill that painted their healthy voxels; both paintings change the images only around the old and new lesion, and the
    fill changes the healthy voxels only: the new lesion's core is the model's painting in both."""
    seg, root = _local_case(tmp_path)
    argv = ["synthesize", "--masks", str(root / "case3-seg.nii.gz"), "--weights", tiny_local_weights]
    argv += ["--scheme", "brats2023", "--margin-mm", "2", "--n", "2", "--noise", "none"]
    assert main([*argv, "--out", str(tmp_path / "model")]) == 0
    assert main([*argv, "--out", str(tmp_path / healthy), "--healthy", healthy]) == 0
    samples = sorted((tmp_path / healthy).glob("case3-synth*"))
    assert samples
    differs, cores = False, 0
    for sample in samples:
        meta = json.loads((sample / "edit.json").read_text())
        other = tmp_path / "model" / sample.name
        assert meta["edit"]["paint"]["healthy"] == healthy
        assert json.loads((other / "edit.json").read_text())["edit"]["paint"]["healthy"] == "model"
        edited = np.asanyarray(nib.load(str(sample / f"{sample.name}-seg.nii.gz")).dataobj)
        np.testing.assert_array_equal(edited, nib.load(str(other / f"{sample.name}-seg.nii.gz")).dataobj)
        near = ndimage.binary_dilation((seg > 0) | (edited > 0), iterations=4)
        core = ndimage.binary_erosion(edited > 0, iterations=2)
        cores += int(core.sum())
        for seq in SEQS:
            real = np.asanyarray(nib.load(str(root / f"case3-{seq}.nii.gz")).dataobj)
            a = np.asanyarray(nib.load(str(sample / f"{sample.name}-{seq}.nii.gz")).dataobj)
            b = np.asanyarray(nib.load(str(other / f"{sample.name}-{seq}.nii.gz")).dataobj)
            assert not ((a != real) & ~near).any() and not ((b != real) & ~near).any()
            np.testing.assert_array_equal(a[core], b[core])
            differs |= bool((a != b).any())
    assert differs and cores > 0


def test_synthesize_local_insertion_keeps_the_real_lesion(tiny_local_weights: str, tmp_path: Path, capsys) -> None:
    """--insert 1 --region changed: the edited lesion is added beside the case's own, whose labels are kept, and the
    region grows only from the changed voxels; a probability outside [0, 1] is refused before anything is written."""
    seg, root = _local_case(tmp_path)
    argv = ["synthesize", "--masks", str(root / "case3-seg.nii.gz"), "--weights", tiny_local_weights]
    argv += ["--scheme", "brats2023", "--margin-mm", "2", "--n", "3"]
    bad = tmp_path / "bad"
    assert main([*argv, "--out", str(bad), "--insert", "1.5"]) == 1
    assert "--insert must be a probability in [0, 1]" in capsys.readouterr().err and not bad.exists()
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--insert", "1", "--region", "changed"]) == 0
    inserted = 0
    for sample in sorted(out.glob("case3-synth*")):  # (a sample whose region cannot be painted is not written)
        meta = json.loads((sample / "edit.json").read_text())
        assert meta["edit"]["paint"]["region"] == "changed"
        edited = np.asanyarray(nib.load(str(sample / f"{sample.name}-seg.nii.gz")).dataobj)
        assert np.array_equal(edited[seg > 0], seg[seg > 0])  # the real lesion's labels, kept
        if meta["edit"].get("applied"):
            assert meta["edit"]["insert"] is True and (edited > 0).sum() > (seg > 0).sum()
            inserted += 1
    assert inserted >= 1
    for flags, message in (
        (["--insert", "1", "--n-insert", "0"], "--n-insert must be an integer in [1, 8]"),
        (["--n-insert", "2"], "--n-insert=2 adds lesions only to inserting edits"),
    ):
        assert main([*argv, "--out", str(bad), *flags]) == 1
        assert message in capsys.readouterr().err and not bad.exists()
    two = tmp_path / "two"
    assert main([*argv, "--out", str(two), "--insert", "1", "--n-insert", "2", "--region", "changed"]) == 0
    records = [json.loads((p / "edit.json").read_text())["edit"] for p in sorted(two.glob("case3-synth*"))]
    applied = [r for r in records if r.get("applied")]
    assert applied and all(len(r["more"]) == 1 for r in applied)


def _local_cases(tmp_path: Path, shifts: tuple[int, ...] = (0, 14)) -> tuple[list[np.ndarray], Path]:
    """1 mm cases like _local_case's (case0, case1, ...), on one grid, their lesions ``shifts`` voxels apart along x:
    their label maps and the folder of the cases."""
    shape, affine = (48, 48, 40), np.diag([1.0, 1.0, 1.0, 1.0])
    brain = np.zeros(shape, dtype=bool)
    brain[4:44, 4:44, 6:34] = True
    segs, root = [], tmp_path / "masks"
    for i, dx in enumerate(shifts):
        seg = np.zeros(shape, dtype=np.uint8)
        seg[12 + dx : 20 + dx, 20:28, 18:22] = 2
        seg[14 + dx : 18 + dx, 22:26, 19:21] = 3
        rng = np.random.default_rng(10 + i)
        _save(root / f"case{i}" / f"case{i}-seg.nii.gz", seg, affine)
        for k, seq in enumerate(SEQS):
            vol = np.where(brain, 100.0 * (k + 1) * (1 + rng.random(shape)), 0.0).astype(np.float32)
            _save(root / f"case{i}" / f"case{i}-{seq}.nii.gz", vol, affine)
        segs.append(seg)
    return segs, root


def test_synthesize_carve_edits_add_another_masks_lesion(tiny_local_weights: str, tmp_path: Path, capsys) -> None:
    """--edits carve+random: each sample is the --edits random sample of the same seed with another mask's lesion
    added on top where it lies; edit.json names that mask. Bad combinations are refused before anything is written."""
    segs, root = _local_cases(tmp_path)
    argv = ["synthesize", "--masks", str(root), "--weights", tiny_local_weights, "--scheme", "brats2023"]
    argv += ["--margin-mm", "2", "--n", "2", "--insert", "1", "--region", "changed"]
    assert main([*argv, "--out", str(tmp_path / "random")]) == 0
    assert main([*argv, "--out", str(tmp_path / "both"), "--edits", "carve+random"]) == 0
    checked = 0
    for sample in sorted((tmp_path / "both").glob("case*-synth*")):
        meta = json.loads((sample / "edit.json").read_text())
        source = int(sample.name[4])
        assert meta["edit"]["op"] == "carve+random" and meta["edit"]["outside_brain"] == 0
        assert meta["donor_mask"] == str(root / f"case{1 - source}" / f"case{1 - source}-seg.nii.gz")
        other = tmp_path / "random" / sample.name
        if not other.exists():  # the random sample alone could not be painted
            continue
        rand_meta = json.loads((other / "edit.json").read_text())
        assert meta["edit"]["random"] == {k: v for k, v in rand_meta["edit"].items() if k != "paint"}
        rand_seg = np.asanyarray(nib.load(str(other / f"{sample.name}-seg.nii.gz")).dataobj)
        edited = np.asanyarray(nib.load(str(sample / f"{sample.name}-seg.nii.gz")).dataobj)
        donor = segs[1 - source]
        np.testing.assert_array_equal(edited, np.where(donor != 0, donor, rand_seg))
        checked += 1
    assert checked
    capsys.readouterr()
    bad = tmp_path / "bad"
    for flags, message in (
        (["--edits", "carve"], "--edits carve adds another mask's lesion as it lies and draws no random edit"),
        (["--edits", "paste"], "--edits must be one of"),
        (["--edits", "carve+random", "--no-edit"], "--no-edit synthesizes the masks as they are"),
    ):
        assert main([*argv, "--out", str(bad), *flags]) == 1
        assert message in capsys.readouterr().err and not bad.exists()
    one = ["synthesize", "--masks", str(root / "case0"), "--weights", tiny_local_weights, "--scheme", "brats2023"]
    assert main([*one, "--out", str(bad), "--edits", "carve"]) == 1
    assert "holds 1 mask with a lesion" in capsys.readouterr().err and not bad.exists()
    # --max-region-mm: a region wider than it is not written, the run says why and how to paint it
    small = tmp_path / "small"
    assert main([*argv, "--out", str(small), "--edits", "carve+random", "--max-region-mm", "10"]) == 0
    out = capsys.readouterr().out
    assert "wrote 0 synthetic samples" in out and "above max_region_mm=10 (raise max_region_mm" in out, out
    assert main([*argv, "--out", str(bad), "--max-region-mm", "0"]) == 1
    assert "--max-region-mm must be a finite length in mm > 0" in capsys.readouterr().err and not bad.exists()
    for path in (root / "case1").glob("*.nii.gz"):  # case1 on another grid (1.2 mm slices)
        _save(path, np.asanyarray(nib.load(str(path)).dataobj), np.diag([1.0, 1.0, 1.2, 1.0]))
    assert main(["synthesize", "--masks", str(root), "--weights", tiny_local_weights, "--scheme", "brats2023",
                 "--out", str(bad), "--edits", "carve"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "are not on one grid" in err and not bad.exists(), err


def test_synthesize_swaps_a_mask_on_another_affine_to_a_random_place(tiny_local_weights: str, tmp_path: Path) -> None:
    """A swap drawn at the donor's place keeps another mask's lesion there only when that mask shares this one's grid
    (shape and affine): masks of one shape on other affines have the donor lesion placed at random instead."""

    def swaps(root: Path, out: Path) -> list[str]:
        argv = ["synthesize", "--masks", str(root), "--weights", tiny_local_weights, "--scheme", "brats2023"]
        assert main([*argv, "--margin-mm", "2", "--n", "8", "--seed", "1", "--out", str(out)]) == 0
        records = [json.loads(p.read_text())["edit"] for p in sorted(out.glob("case*-synth*/edit.json"))]
        return [r["swap"]["at"] for r in records if r.get("swap")]

    _, root = _local_cases(tmp_path)
    on_grid = swaps(root, tmp_path / "same")
    assert "donor" in on_grid, on_grid
    moved = np.diag([1.0, 1.0, 1.0, 1.0])
    moved[:3, 3] = 7.0  # the same voxels 7 mm away
    for path in (root / "case1").glob("*.nii.gz"):
        _save(path, np.asanyarray(nib.load(str(path)).dataobj), moved)
    off_grid = swaps(root, tmp_path / "moved")
    assert off_grid and set(off_grid) == {"random"}, off_grid
