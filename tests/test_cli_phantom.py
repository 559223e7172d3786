"""The ``samraug phantom`` command."""

from __future__ import annotations

import json
import runpy
import sys

import numpy as np
import pytest

pytest.importorskip("nilearn", reason="the digital phantom needs nilearn's MNI152 template (pip install nilearn)")
nib = pytest.importorskip("nibabel")

from samraug.cli import build_parser, main  # noqa: E402
from samraug.data import phantom as P  # noqa: E402
from samraug.labels import get_scheme  # noqa: E402


def test_phantom_command_writes_dataset_and_montage(tmp_path, capsys) -> None:
    import matplotlib.image as mpimg

    out = tmp_path / "phantom"
    assert main(["phantom", "--out", str(out), "--n", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    cases = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert cases == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    for case in cases:
        names = sorted(p.name for p in (out / case).iterdir())
        assert names == sorted(f"{case}-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f", "aptw", "seg"))
        seg = nib.load(out / case / f"{case}-seg.nii.gz")
        t2f = nib.load(out / case / f"{case}-t2f.nii.gz")
        np.testing.assert_array_equal(seg.affine, t2f.affine)
        labels = np.asanyarray(seg.dataobj)
        get_scheme("brats2024").validate(labels)
        assert labels.any()
        assert not labels[np.asanyarray(t2f.dataobj) == 0].any()  # lesions inside the (non-zero) brain
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["n"] == 2 and meta["resolution_mm"] == 2.0 and meta["label_scheme"] == "brats2024"
    montage = out / "montage.png"
    assert montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(montage)
    assert pixels.ndim == 3 and pixels.shape[1] > 3 * pixels.shape[0] and pixels[..., :3].std() > 0.05

    # Running again keeps the complete cases; other settings into the same folder are an error (exit 1).
    mtime = (out / cases[0] / f"{cases[0]}-t1n.nii.gz").stat().st_mtime_ns
    assert main(["phantom", "--out", str(out), "--n", "2", "--no-montage"]) == 0
    assert (out / cases[0] / f"{cases[0]}-t1n.nii.gz").stat().st_mtime_ns == mtime
    assert main(["phantom", "--out", str(out), "--n", "2", "--seed", "1", "--no-montage"]) == 1
    assert "another folder" in capsys.readouterr().err


def test_phantom_command_without_montage(tmp_path, monkeypatch) -> None:
    written = []
    monkeypatch.setattr(P, "write_phantom_dataset", lambda root, n, **kw: written.append((n, kw)) or root)
    out = tmp_path / "x"
    assert main(["phantom", "--out", str(out), "--n", "3", "--seed", "4", "--resolution", "1", "--no-montage"]) == 0
    assert written == [(3, {"seed": 4, "resolution": 1.0, "workers": 1, "progress": True})]
    assert not (out / "montage.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["phantom", "--n", "2"],  # --out missing
        ["phantom", "--out", "x", "--n", "0"],
        ["phantom", "--out", "x", "--n", "2", "--resolution", "3"],
        ["phantom", "--out", "x", "--n", "2", "--seed", "-1"],
    ],
)
def test_phantom_command_usage_errors(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "samraug phantom" in capsys.readouterr().err


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 2
    assert "phantom" in capsys.readouterr().err
    assert "phantom" in build_parser().format_help()


def test_python_dash_m(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["samraug", "--version"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("samraug", run_name="__main__")
    assert exc.value.code == 0
    assert "samraug" in capsys.readouterr().out
