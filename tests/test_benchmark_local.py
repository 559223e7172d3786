"""The local-quality benchmark's regions and metrics (benchmarks/quality_local.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("nilearn", reason="the digital phantom needs nilearn")

from benchmarks.quality_local import donor_shapes, main, mirror_region, place_region, region_metrics
from samraug.data.phantom import generate_subject
from samraug.grid import bounding_box
from samraug.region import dilate_mm


@pytest.fixture(scope="module")
def subjects():
    return [generate_subject(s, n_lesions=1) for s in (3, 4)]


def test_region_metrics_golden():
    """A shift of 0.1 on the [0, 1] scale inside the region: MSE 0.01, PSNR 20 dB."""
    rng = np.random.default_rng(0)
    truth = (rng.random((20, 20, 6)) * 100 + 50).astype(np.float64)
    brain = np.ones(truth.shape, bool)
    lo, hi = np.percentile(truth, [0.5, 99.5])
    scaled = (truth - lo) / (hi - lo)
    region = np.zeros(truth.shape, bool)
    region[5:15, 5:15, 2:4] = True
    region &= (scaled > 0.05) & (scaled < 0.85)  # no clipping after the shift
    pred = np.where(region, truth + 0.1 * (hi - lo), truth)
    m = region_metrics(pred, truth, region, brain)
    assert m["mse"] == pytest.approx(0.01, rel=1e-4)
    assert m["psnr"] == pytest.approx(20.0, rel=1e-4)
    assert m["ssim"] < 1.0
    # inter-slice change inside the region: a constant shift keeps it; computed here from the region's z pairs
    pairs = region[..., 1:] & region[..., :-1]
    assert m["dz_real"] == pytest.approx(np.abs(np.diff(scaled, axis=2))[pairs].mean(), rel=1e-5)
    assert m["dz"] == pytest.approx(m["dz_real"], rel=1e-5)
    flat = np.where(region, lo + 0.5 * (hi - lo), truth)  # constant inside the region: no change along z
    assert region_metrics(flat, truth, region, brain)["dz"] == pytest.approx(0.0, abs=1e-7)
    same = region_metrics(truth, truth, region, brain)
    assert same["mse"] == 0 and same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_regions_are_lesion_shaped_healthy_and_seeded(subjects):
    shapes = donor_shapes(subjects)
    assert shapes
    for _, shape in shapes:
        extent = max(hi - lo for lo, hi in bounding_box(shape)) * 2.0
        assert 10.0 <= extent <= 40.0
    target = subjects[0]
    a = place_region(target, shapes[-1][1], np.random.default_rng(5))
    b = place_region(target, shapes[-1][1], np.random.default_rng(5))
    assert a is not None and np.array_equal(a, b)
    assert a.sum() == shapes[-1][1].sum()
    assert target.brain[a].all()
    assert not (a & dilate_mm(target.seg > 0, (2.0, 2.0, 2.0), 4.0)).any()
    mirrored = mirror_region(target, a)
    if mirrored is not None:
        sel = tuple(mirrored.T)
        assert target.brain[sel].all() and not (target.seg[sel] > 0).any()


@pytest.mark.slow
def test_quality_local_smoke(tmp_path):
    res = main(["--standin", "--n-subjects", "2", "--regions", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "quality_local.json").read_text())
    summary = saved["summary"]["inpainting"]
    assert summary["noise reference"] and summary["local model + matched noise"]
    for seq, m in summary["noise-free ceiling"].items():  # the noise-free render beats another noise draw
        assert m["psnr"]["mean"] > summary["noise reference"][seq]["psnr"]["mean"]
    assert res["data"]["subjects"] == saved["data"]["subjects"]
    assert (tmp_path / "quality_local.png").is_file() and (tmp_path / "quality_local.md").is_file()
    with pytest.raises(SystemExit):  # never overwrite without the flag
        main(["--standin", "--n-subjects", "2", "--out", str(tmp_path)])
