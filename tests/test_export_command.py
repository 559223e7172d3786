"""``samraug export-nnunet``: export from a BraTS 2021 folder, predictions back to BraTS, usage errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from export_data import tiny_subject

from samraug.cli import build_parser
from samraug.cli import main as cli_main
from samraug.export.command import add_parser
from samraug.export.predictions import predictions_to_scheme

NAMES = ("t1", "t1ce", "t2", "flair")


def _main(argv: list[str]) -> int:
    """Through the real ``samraug`` command: the sub-command must be wired into samraug.cli."""
    return cli_main(argv)


def test_export_nnunet_is_a_samraug_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="samraug")
    add_parser(parser.add_subparsers(dest="command", required=True))
    assert "export-nnunet" in build_parser().format_help()


def _brats2021(root: Path, n: int = 3) -> Path:
    for i in range(n):
        s = tiny_subject(i, keys=NAMES)
        case = f"BraTS2021_{i:05d}"
        (root / case).mkdir(parents=True)
        for k in (*NAMES, "seg"):
            arr = s[k].data[0].numpy().astype(np.uint8 if k == "seg" else np.float32)
            nib.save(nib.Nifti1Image(arr, s[k].affine), str(root / case / f"{case}_{k}.nii.gz"))
    return root


def test_export_then_predictions_back_to_brats(tmp_path: Path, tiny_weights: str, capsys) -> None:
    src = _brats2021(tmp_path / "brats21")
    argv = ["export-nnunet", "--data", str(src), "--out", str(tmp_path / "raw"), "--dataset-id", "21", "--name",
            "B21", "--per-case", "1", "--folds", "3", "--weights", tiny_weights, "--device", "cpu",
            "--preprocessed-dir", str(tmp_path / "pre"), "--no-progress"]  # fmt: skip
    assert _main(argv) == 0
    out = capsys.readouterr().out
    root = tmp_path / "raw" / "Dataset021_B21"
    assert f"splits_final.json: {tmp_path / 'pre' / 'Dataset021_B21' / 'splits_final.json'}" in out
    assert json.loads((root / "dataset.json").read_text())["samraug"]["label_scheme"] == "brats2021"
    assert _main(argv) == 0 and "0 written now, 6 already done" in capsys.readouterr().out  # resumed: nothing redone
    # nnU-Net-style predictions (consecutive labels) of the real cases, mapped back: the original BraTS labels
    preds = tmp_path / "preds"
    preds.mkdir()
    for i in range(3):
        case = f"BraTS2021_{i:05d}"
        (preds / f"{case}.nii.gz").write_bytes((root / "labelsTr" / f"{case}.nii.gz").read_bytes())
    sub = tmp_path / "submission"
    assert _main(["export-nnunet", "--to-brats", str(preds), "--out", str(sub), "--scheme", "brats2021"]) == 0
    for i in range(3):
        case = f"BraTS2021_{i:05d}"
        got = nib.load(str(sub / f"{case}.nii.gz"))
        want = nib.load(str(src / case / f"{case}_seg.nii.gz"))
        np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))
        np.testing.assert_allclose(got.affine, want.affine)
        assert 4 in np.unique(np.asarray(got.dataobj))
    with pytest.raises(FileExistsError, match="overwrite"):
        predictions_to_scheme(preds, sub, "brats2021")


def test_bad_predictions_write_nothing(tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    preds.mkdir()
    affine = np.eye(4)
    nib.save(nib.Nifti1Image(np.array([[[0, 3]]], np.uint8), affine), str(preds / "a.nii.gz"))
    nib.save(nib.Nifti1Image(np.array([[[0, 4]]], np.uint8), affine), str(preds / "b.nii.gz"))
    with pytest.raises(ValueError, match=r"b.nii.gz.*values \[4\]"):
        predictions_to_scheme(preds, tmp_path / "out", "brats2021")
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*\.nii\.gz"):
        predictions_to_scheme(tmp_path / "empty", tmp_path / "x", "brats2021")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        predictions_to_scheme(tmp_path / "missing", tmp_path / "x", "brats2021")


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        _main(["export-nnunet", "--to-brats", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        _main(["export-nnunet", "--data", str(tmp_path), "--out", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # modes are exclusive
        _main(["export-nnunet", "--data", str(tmp_path), "--install-trainer"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        _main(["export-nnunet", "--data", "x", "--per-case", "1", "--n-synthetic", "2"])
    assert e.value.code == 2
