"""The synthesis-quality report: SSIM / PSNR / MAE on known inputs, and a small end-to-end run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

from benchmarks import quality
from samraug.image_stats import slice_change_rms


def _brain(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool)


def test_ssim_of_an_image_with_itself_is_one() -> None:
    x = torch.rand(20, 18, 4) * 2 - 1
    assert quality.ssim(x, x, _brain(x.shape)) == pytest.approx(1.0, abs=1e-6)
    assert quality.ssim(x[..., 0], x[..., 0], _brain(x.shape[:2])) == pytest.approx(1.0, abs=1e-6)


def test_ssim_of_constant_images_is_the_luminance_term() -> None:
    # Constant images: zero variances and covariance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 2)^2.
    a, b = 0.5, 0.3
    c1 = (0.01 * 2.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = quality.ssim(torch.full((16, 16, 2), a), torch.full((16, 16, 2), b), _brain((16, 16, 2)))
    assert got == pytest.approx(expected, rel=5e-5)  # 0.88249... (float32 arithmetic)


def test_ssim_falls_with_noise_and_is_symmetric() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 24, 3, generator=g) * 2 - 1
    small = x + 0.05 * torch.randn(x.shape, generator=g)
    large = x + 0.5 * torch.randn(x.shape, generator=g)
    brain = _brain(x.shape)
    assert 1.0 > quality.ssim(small, x, brain) > quality.ssim(large, x, brain)
    assert quality.ssim(small, x, brain) == pytest.approx(quality.ssim(x, small, brain), abs=1e-6)


def test_psnr_of_a_known_mse() -> None:
    brain = _brain((8, 8, 2))
    real = torch.zeros(8, 8, 2)
    fake = torch.full((8, 8, 2), 0.1)  # MSE 0.01 -> 10 log10(4 / 0.01) = 26.0206 dB
    assert quality.psnr(fake, real, brain) == pytest.approx(10 * math.log10(400.0), rel=1e-6)  # float32 MSE
    assert quality.psnr(fake, real, brain, data_range=1.0) == pytest.approx(20.0, rel=1e-6)
    assert quality.psnr(real, real, brain) == math.inf


def test_mae_and_the_brain_restriction() -> None:
    real = torch.zeros(4, 4, 1)
    fake = torch.zeros(4, 4, 1)
    fake[0, 0, 0] = 0.8  # inside the brain
    fake[3, 3, 0] = -2.0  # outside: ignored
    brain = torch.zeros(4, 4, 1, dtype=torch.bool)
    brain[:2, :2] = True
    assert quality.mae(fake, real, brain) == pytest.approx(0.8 / 4)
    assert quality.psnr(fake, real, brain) == pytest.approx(10 * math.log10(4 / (0.64 / 4)))
    # SSIM is averaged over brain voxels only: changing the image far outside the brain barely matters
    x = torch.rand(16, 16, 1)
    y = x.clone()
    y[12:, 12:] = -1
    inner = torch.zeros(16, 16, 1, dtype=torch.bool)
    inner[:4, :4] = True
    assert quality.ssim(y, x, inner) == pytest.approx(1.0, abs=1e-6)


def test_image_similarity_per_sequence() -> None:
    real = torch.rand(2, 10, 10, 3) * 2 - 1
    fake = real.clone()
    fake[1] += 0.1
    out = quality.image_similarity(fake, real, _brain((10, 10, 3)), ("t1n", "t2f"))
    assert sorted(out) == ["t1n", "t2f"] and sorted(out["t1n"]) == ["mae", "psnr", "ssim"]
    assert out["t1n"]["mae"] == 0 and out["t1n"]["psnr"] == math.inf
    assert out["t2f"]["mae"] == pytest.approx(0.1, rel=1e-5)
    assert out["t2f"]["psnr"] == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-4)


def test_metric_errors() -> None:
    x = torch.zeros(4, 4, 2)
    with pytest.raises(ValueError, match="differ in shape"):
        quality.mae(x, torch.zeros(4, 4, 3), _brain((4, 4, 2)))
    with pytest.raises(ValueError, match="empty"):
        quality.psnr(x, x, torch.zeros(4, 4, 2, dtype=torch.bool))
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        quality.ssim(bad, x, _brain((4, 4, 2)))
    with pytest.raises(ValueError, match="channels"):
        quality.image_similarity(torch.zeros(2, 4, 4, 2), torch.zeros(2, 4, 4, 2), _brain((4, 4, 2)), ("t1n",))


@pytest.mark.slow
def test_quality_end_to_end_on_the_phantom(tmp_path: Path) -> None:
    from benchmarks import augmentation as bench
    from samraug.data.phantom import ensure_phantom_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_benchmark_augmentation import _random_painter

    ensure_phantom_dataset(4, seed=78, resolution=2.0, cache_dir=tmp_path)
    config = bench.BenchmarkConfig.from_preset(
        "quick",
        n_subjects=4,
        n_test=1,
        phantom_seed=78,
        cache_dir=str(tmp_path),
        arms=("real",),
        seeds=(0,),
        steps=3,
        batch_size=4,
        depth=2,
        base_channels=4,
        crop_size=32,
        selection="lesion",
        device="cpu",
    )
    painter = _random_painter(tmp_path / "2mm-seed78-n4")
    grid = tmp_path / "quality.png"
    results = quality.run_quality(config, ("samr",), log=lambda m: None, painters={"samr": painter}, grid_path=grid)
    paths = quality.write_outputs(results, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    res = data["variants"]["samr"]
    assert sorted(res["label_fidelity"]) == ["cavity", "edema", "tumor"]
    assert sorted(res["image_similarity"]) == sorted(data["data"]["sequences"])
    for m in res["image_similarity"].values():
        assert -1 <= m["ssim"] <= 1 and m["mae"] >= 0 and math.isfinite(m["psnr"])
    md = paths["md"].read_text()
    assert "| Edema |" in md and "atlas alone" in md and "Checkerboard" in md
    assert sorted(res["atlas_alone"]) == sorted(data["data"]["sequences"])
    for m in res["structure"].values():
        assert 0 <= m["checkerboard"] <= 1 and 0 <= m["checkerboard_real"] <= 1 and m["dz_real"] > 0
    # the phantom rendered without noise: the anatomy's own RMS change is below the noisy image's
    for m in res["structure"].values():
        assert 0 <= m["dz_rms_real_signal"] < m["dz_rms_real"] and m["dz_rms"] >= 0
        assert m["dz_rms_signal_ratio"] == pytest.approx(m["dz_rms"] / m["dz_rms_real_signal"])
    assert "RMS inter-slice change" in md and "synthetic, matched" in md
    assert sorted(res["image_similarity_matched"]) == sorted(data["data"]["sequences"])
    assert set(res["contrast_sd"]) <= {"NETC", "SNFH", "ET", "RC"} and res["contrast_sd"]  # the phantom: brats2024
    for per in res["contrast_sd"].values():
        for c in per.values():
            assert math.isfinite(c["real"]) and math.isfinite(c["synthetic"])
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atlas_alone_matches_each_sequence_to_the_subject() -> None:
    g = torch.Generator().manual_seed(1)
    real = torch.rand(2, 8, 8, 3, generator=g) * 2 - 1
    atlas = torch.rand(2, 8, 8, 3, generator=g) * 5 + 3
    brain = torch.zeros(8, 8, 3, dtype=torch.bool)
    brain[1:7, 2:6] = True
    out = quality.atlas_alone(atlas, real, brain)
    assert (out[:, ~brain] == -1).all()
    for i in range(2):
        assert float(out[i][brain].mean()) == pytest.approx(float(real[i][brain].mean()), abs=1e-5)
        assert float(out[i][brain].std(unbiased=False)) == pytest.approx(
            float(real[i][brain].std(unbiased=False)), rel=1e-4
        )
    with pytest.raises(ValueError, match="atlas grid"):
        quality.atlas_alone(atlas[:1], real, brain)


def test_matched_gives_the_synthetic_images_the_subjects_mean_and_sd() -> None:
    g = torch.Generator().manual_seed(2)
    real = torch.rand(2, 8, 8, 3, generator=g) * 2 - 1
    fake = torch.rand(2, 8, 8, 3, generator=g) * 0.3 - 0.9
    brain = torch.zeros(8, 8, 3, dtype=torch.bool)
    brain[2:7, 1:6] = True
    out = quality.matched(fake, real, brain)
    assert (out[:, ~brain] == -1).all()
    for i in range(2):
        assert float(out[i][brain].mean()) == pytest.approx(float(real[i][brain].mean()), abs=1e-5)
        # a linear map: the structure (correlation with the real image) is unchanged
        r0 = torch.corrcoef(torch.stack([fake[i][brain], real[i][brain]]))[0, 1]
        r1 = torch.corrcoef(torch.stack([out[i][brain], real[i][brain]]))[0, 1]
        assert float(r1) == pytest.approx(float(r0), abs=1e-5)
    with pytest.raises(ValueError, match="differ"):
        quality.matched(fake[:1], real, brain)
    with pytest.raises(ValueError, match="differ"):
        quality.matched(fake, real, brain[:-1])


def test_anatomy_reference_is_the_noise_free_phantom_subject_in_its_normalisation(tmp_path: Path) -> None:
    from benchmarks import augmentation as bench
    from samraug.data.phantom import dataset_subject

    config = bench.BenchmarkConfig.from_preset("quick", phantom_seed=78, resolution=2.0, arms=("real",), seeds=(0,))
    subject = dataset_subject(1, seed=78, resolution=2.0)
    mapping = {q: subject.images[q] for q in ("t1n", "aptw")} | {"seg": subject.seg, "brain": subject.brain}
    vol, _ = bench.prepare_volume(mapping | {"subject_id": subject.subject_id}, ("t1n", "aptw"), "brats2024")
    ref = quality.anatomy_reference(config, vol, ("t1n", "aptw"), "brats2024")
    brain = vol.label > 0
    assert ref.shape == vol.image.shape and torch.equal(ref[:, ~brain], vol.image[:, ~brain])
    diff = (vol.image - ref)[:, brain]
    assert abs(float(diff[0].mean())) < 0.01 and abs(float(diff[1].mean())) < 0.01  # noise: zero-mean
    # the noisy image is the reference plus noise: its RMS slice change exceeds the reference's, for APTw by far
    t1n_noisy, t1n_clean = (slice_change_rms(v[0], brain.numpy()) for v in (vol.image, ref))
    aptw_noisy, aptw_clean = (slice_change_rms(v[1], brain.numpy()) for v in (vol.image, ref))
    assert t1n_clean < t1n_noisy and aptw_clean < 0.2 * aptw_noisy
    # independently: the noise-free APTw, normalised by hand with the noisy image's own percentiles
    raw = subject.images["aptw"].astype(np.float64)
    clean = dataset_subject(1, seed=78, resolution=2.0, noise_free=True).images["aptw"].astype(np.float64)
    b = brain.numpy()
    norm = vol.image[1].numpy()
    sel = b & (np.abs(norm) < 0.999)
    lo, hi = raw[sel].min(), raw[sel].max()
    k = (norm[sel].max() - norm[sel].min()) / (hi - lo)
    expected = np.clip(norm[sel].min() + k * (clean - lo), -1, 1)
    np.testing.assert_allclose(ref[1].numpy()[b], expected[b], atol=2e-3)
    other = bench.EvalVolume("BraTS-GLI-00002-000", vol.image, vol.label, vol.spacing)
    with pytest.raises(RuntimeError, match="differs"):
        quality.anatomy_reference(config, other, ("t1n", "aptw"), "brats2024")


def test_image_structure_of_a_checkerboard_and_of_a_ramp() -> None:
    board = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2 - 1).float()[..., None].expand(8, 8, 4)
    ramp = (torch.arange(4).float() * 0.25).expand(8, 8, 4)  # +0.25 per axial slice, smooth in-plane
    wave = torch.cos(torch.arange(8) * 2 * math.pi / 8)
    ramp = ramp + wave[:, None, None] * wave[None, :, None]  # smooth and orthogonal to planes: index 0
    out = quality.image_structure(torch.stack([board]), torch.stack([ramp]), _brain((8, 8, 4)), ("t1n",))["t1n"]
    assert out["checkerboard"] == pytest.approx(1.0, abs=1e-6) and out["checkerboard_real"] == pytest.approx(
        0, abs=1e-6
    )
    assert out["dz"] == pytest.approx(0.0) and out["dz_real"] == pytest.approx(0.25)


def test_model_classes_follow_the_conditioning() -> None:
    assert quality.model_classes("samr", "samr") == {"edema": (2,), "cavity": (3,), "tumor": (4,)}
    assert quality.model_classes("brats2024", "native") == {"NETC": (2,), "SNFH": (3,), "ET": (4,), "RC": (5,)}


def test_local_mode_repaints_only_the_lesion_neighbourhood(tmp_path: Path) -> None:
    """quality.py with local weights: G(test mask) is the real volume with the lesion's neighbourhood repainted;
    every voxel farther than the margin + blending from the lesion keeps its real value."""
    import numpy as np
    from tiny_model import SEQS, save_tiny_local_weights

    from benchmarks.augmentation import Painter
    from samraug.region import dilate_mm
    from samraug.synthesis import Synthesizer
    from samraug.training.segmentation import EvalVolume

    synth = Synthesizer(save_tiny_local_weights(tmp_path / "local", scheme="brats2024"), device="cpu")
    painter = Painter("samr_local", synth, "random init (test)", set())
    assert quality.is_local(painter)
    shape = (40, 44, 36)
    native = np.zeros(shape, np.int64)
    native[6:34, 6:38, 6:30] = 1  # normal brain
    native[16:24, 18:26, 14:20] = 3  # SNFH (brats2024 class 2 -> model class 3)
    native[18:22, 20:24, 16:18] = 4  # ET
    gen = torch.Generator().manual_seed(0)
    image = torch.where(torch.from_numpy(native > 0), torch.rand((len(SEQS), *shape), generator=gen) * 1.6 - 0.8, -1.0)
    vol = EvalVolume("s", image, torch.from_numpy(native.clip(max=4)), (2.0, 2.0, 2.0))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fake = quality.synthesize_test_volume(painter, vol, affine, native, "brats2024")
    assert fake.shape == image.shape
    near = dilate_mm(native >= 2, (2.0, 2.0, 2.0), 8.0 + 3.0 + 2.0)  # margin + feather + one voxel
    far = torch.from_numpy(~near)
    assert torch.equal(fake[:, far], image[:, far])
    assert bool((fake[:, torch.from_numpy(native >= 2)] != image[:, torch.from_numpy(native >= 2)]).any())
    assert bool((fake[:, torch.from_numpy(native == 0)] == -1).all())
    with pytest.raises(ValueError, match="native labels"):
        quality.synthesize_test_volume(painter, vol, affine, None, None)
