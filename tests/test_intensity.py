"""Robust percentile normalisation and its inverse, numpy and torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from samraug.intensity import (
    DEFAULT_NORMALIZATION,
    IntensityStats,
    Normalization,
    denormalize,
    denormalize_sequences,
    normalize_with,
    robust_normalize,
    robust_normalize_sequences,
    stats_to_array,
)


def _volume(seed: int = 0, shape: tuple[int, ...] = (12, 10, 8)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    brain = np.zeros(shape, dtype=bool)
    brain[2:-2, 2:-2, 1:-1] = True
    vol = np.where(brain, rng.gamma(4.0, 50.0, shape), 0.0).astype(np.float32)
    return vol, brain


def test_default_normalization_is_json_and_matches_the_contract() -> None:
    assert json.loads(json.dumps(DEFAULT_NORMALIZATION)) == {
        "method": "percentile",
        "region": "normal-brain",
        "low": 0.5,
        "high": 99.5,
        "maps_to": [-0.8, -0.2],
        "range": [-1.0, 1.0],
        "background": -1.0,
    }
    assert Normalization().to_config() == DEFAULT_NORMALIZATION
    assert Normalization.from_config(DEFAULT_NORMALIZATION) == Normalization()


def test_configs_without_region_are_the_legacy_whole_brain_normalisation() -> None:
    old = {"method": "percentile", "low": 0.5, "high": 99.5, "range": [-1.0, 1.0], "background": -1.0}
    spec = Normalization.from_config(old)
    assert spec == Normalization.legacy() == Normalization.named("brain")
    assert spec.region == "brain" and spec.maps_to == (-1.0, 1.0)
    assert Normalization.from_config(None) == spec
    vol, brain = _volume(3)
    x_old, s_old = robust_normalize(vol, brain)  # the function every earlier weights folder was trained with
    x_new, s_new = spec.normalize(vol, brain, lesion=vol > 300)  # a "lesion" changes nothing for legacy
    np.testing.assert_array_equal(x_new, x_old)
    assert s_new == s_old


def _golden_normal_brain(vol: np.ndarray, brain: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """Independent re-implementation: p0.5 / p99.5 of brain & ~lesion -> -0.8 / -0.2, clip, background -1."""
    lo, hi = np.percentile(vol[brain & ~lesion].astype(np.float64), [0.5, 99.5])
    return np.where(brain, np.clip(-0.8 + 0.6 * (vol - lo) / (hi - lo), -1, 1), -1.0)


@pytest.mark.parametrize("as_torch", [False, True])
def test_normal_brain_normalisation_ignores_the_lesion_and_keeps_bright_lesions(as_torch: bool) -> None:
    vol, brain = _volume(4)
    lesion = np.zeros_like(brain)
    lesion[3:6, 3:6, 2:5] = True
    vol = np.where(lesion, vol + 600.0, vol).astype(np.float32)  # a bright lesion, above the brain's range
    spec = Normalization()
    v, b, le = (torch.from_numpy(a) for a in (vol, brain, lesion)) if as_torch else (vol, brain, lesion)
    x, stats = spec.normalize(v, b, le)
    x = x.numpy() if as_torch else x
    np.testing.assert_allclose(x, _golden_normal_brain(vol, brain, lesion), atol=1e-5)
    # the lesion does not move the brain: same stats as the image without it
    clean = np.where(lesion, vol - 600.0, vol).astype(np.float32)
    _, clean_stats = spec.normalize(clean, brain, lesion)
    assert stats == clean_stats
    # round trip inside [-1, 1]: denormalize gives the intensities back
    inside = brain & (np.abs(x) < 1)
    back = denormalize(x, stats, brain)
    np.testing.assert_allclose(back[inside], vol[inside], rtol=1e-4)
    # the normal tissue's p0.5 / p99.5 sit at -0.8 / -0.2, the lesion is not clipped away; background -1
    normal = brain & ~lesion
    np.testing.assert_allclose(np.percentile(x[normal], [0.5, 99.5]), [-0.8, -0.2], atol=1e-4)
    assert x[lesion].mean() > 0.0 and (x[lesion] < 1.0).mean() > 0.9
    assert np.all(x[~brain] == -1.0)


def test_normal_brain_normalisation_falls_back_to_the_brain_when_little_is_left() -> None:
    vol, brain = _volume(5)
    lesion = brain.copy()
    lesion[2, 2, 1] = False  # one normal voxel: below min_normal_fraction, the whole brain is used
    spec = Normalization()
    assert spec.stats(vol, brain, lesion) == spec.stats(vol, brain, None)
    with pytest.raises(ValueError, match="maps_to"):
        Normalization(maps_to=(0.5, 0.0))
    with pytest.raises(ValueError, match="region"):
        Normalization(region="white-matter")
    with pytest.raises(ValueError, match="not known"):
        Normalization.from_config({"method": "zscore"})
    with pytest.raises(ValueError, match="unknown normalization"):
        Normalization.named("zscore")
    with pytest.raises(ValueError, match="lesion mask shape"):
        spec.stats(vol, brain, lesion[..., :2])


def test_percentiles_map_to_minus_one_and_one() -> None:
    vol, brain = _volume()
    x, stats = robust_normalize(vol, brain)
    lo, hi = np.percentile(vol[brain].astype(np.float64), [0.5, 99.5])
    assert stats.low == pytest.approx(lo) and stats.high == pytest.approx(hi)
    assert x.dtype == np.float32 and x.shape == vol.shape
    assert np.all(x[~brain] == -1.0)
    assert x.min() >= -1.0 and x.max() <= 1.0
    # linear in between: golden value by hand for every brain voxel
    expected = np.clip((vol[brain] - lo) / (hi - lo) * 2 - 1, -1, 1)
    np.testing.assert_allclose(x[brain], expected, atol=1e-5)
    # the clipped share is about 0.5 % at each end
    assert 0 < np.mean(x[brain] == 1.0) < 0.02 and 0 < np.mean(x[brain] == -1.0) < 0.02


def test_torch_matches_numpy_and_keeps_type() -> None:
    vol, brain = _volume(1)
    xn, sn = robust_normalize(vol, brain)
    xt, st_ = robust_normalize(torch.from_numpy(vol), torch.from_numpy(brain))
    assert isinstance(xt, torch.Tensor) and xt.dtype == torch.float32
    assert sn.low == pytest.approx(st_.low) and sn.high == pytest.approx(st_.high)
    np.testing.assert_allclose(xt.numpy(), xn, atol=1e-6)
    # a numpy brain mask with a torch volume works too
    xt2, _ = robust_normalize(torch.from_numpy(vol), brain)
    torch.testing.assert_close(xt2, xt)


def test_round_trip_inside_the_brain_for_unclipped_voxels() -> None:
    vol, brain = _volume(2)
    for v, b in ((vol, brain), (torch.from_numpy(vol), torch.from_numpy(brain))):
        x, stats = robust_normalize(v, b)
        back = denormalize(x, stats, b)
        xa, ba, va, bb = (np.asarray(t) for t in (x, back, v, b))
        unclipped = bb & (np.abs(xa) < 1)
        np.testing.assert_allclose(ba[unclipped], va[unclipped], rtol=1e-5, atol=1e-3)
        assert np.all(ba[~bb] == 0.0)
        # clipped voxels come back as the percentiles
        np.testing.assert_allclose(ba[bb & (xa == 1)], stats.high, rtol=1e-6)
        np.testing.assert_allclose(ba[bb & (xa == -1)], stats.low, rtol=1e-6)


@given(
    st.floats(-1e3, 1e3),
    st.floats(1e-2, 1e4),
    st.integers(0, 10_000),
)
def test_round_trip_property(offset: float, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vals = (offset + scale * rng.uniform(0, 1, 400)).astype(np.float64)
    brain = np.ones(400, dtype=bool)
    x, stats = robust_normalize(vals, brain)
    back = denormalize(x, stats, brain)
    inside = np.abs(x) < 1
    np.testing.assert_allclose(back[inside], vals[inside], rtol=1e-9, atol=1e-9 * (abs(offset) + scale))


def test_brain_none_means_nonzero_voxels() -> None:
    vol, _ = _volume(3)
    x1, s1 = robust_normalize(vol, None)
    x2, s2 = robust_normalize(vol, vol != 0)
    np.testing.assert_array_equal(x1, x2)
    assert s1 == s2


def test_constant_image_maps_to_zero_and_back() -> None:
    brain = np.zeros((4, 4), dtype=bool)
    brain[1:3, 1:3] = True
    vol = np.where(brain, 7.0, 0.0)
    x, stats = robust_normalize(vol, brain)
    assert stats == IntensityStats(7.0, 7.0)
    assert np.all(x[brain] == 0.0) and np.all(x[~brain] == -1.0)
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(denormalize(x, stats, brain), vol)
    xt, _ = robust_normalize(torch.from_numpy(vol), torch.from_numpy(brain))
    assert torch.all(xt[torch.from_numpy(brain)] == 0)


def test_errors() -> None:
    vol, brain = _volume(4)
    with pytest.raises(ValueError, match=r"brain mask is empty.*pass brain=.*skull-stripped"):
        robust_normalize(vol, np.zeros_like(brain))
    with pytest.raises(ValueError, match="brain mask is empty"):
        robust_normalize(torch.zeros(3, 3), None)
    with pytest.raises(ValueError, match=r"brain mask shape \(12, 10\) does not match.*\(12, 10, 8\)"):
        robust_normalize(vol, brain[..., 0])
    bad = vol.copy()
    bad[5, 5, 4] = np.nan
    with pytest.raises(ValueError, match="1 NaN/inf voxels inside the brain"):
        robust_normalize(bad, brain)
    with pytest.raises(ValueError, match="NaN/inf"):
        robust_normalize(torch.from_numpy(np.where(brain, np.inf, 0.0)), torch.from_numpy(brain))
    # NaN outside the brain is background anyway
    outside = vol.copy()
    outside[0, 0, 0] = np.nan
    x, _ = robust_normalize(outside, brain)
    assert x[0, 0, 0] == -1.0
    with pytest.raises(ValueError, match="percentiles"):
        robust_normalize(vol, brain, low=60, high=40)
    with pytest.raises(ValueError, match="high >= low"):
        IntensityStats(2.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        IntensityStats(float("nan"), 1.0)


def test_normalize_with_given_stats() -> None:
    x = normalize_with(np.array([0.0, 1.0, 2.0, 3.0, 5.0, 9.0]), IntensityStats(1.0, 5.0))
    np.testing.assert_allclose(x, [-1.0, -1.0, -0.5, 0.0, 1.0, 1.0])
    xt = normalize_with(torch.tensor([2.0, 3.0]), IntensityStats(1.0, 5.0), torch.tensor([True, False]))
    assert xt.tolist() == [-0.5, -1.0]


def test_sequences_have_their_own_stats_and_round_trip() -> None:
    v1, brain = _volume(5)
    v2 = (3.0 * v1 + 100.0 * brain).astype(np.float32)
    vols = np.stack([v1, v2])
    x, stats = robust_normalize_sequences(vols, brain)
    assert x.shape == vols.shape and len(stats) == 2
    for i, v in enumerate((v1, v2)):
        xi, si = robust_normalize(v, brain)
        np.testing.assert_array_equal(x[i], xi)
        assert stats[i] == si
    arr = stats_to_array(stats)
    assert arr.shape == (2, 2) and arr.dtype == np.float32
    for s in (stats, arr, torch.from_numpy(arr)):
        back = denormalize_sequences(x, s, brain)
        unclipped = brain[None] & (np.abs(x) < 1)
        np.testing.assert_allclose(back[unclipped], vols[unclipped], rtol=1e-5, atol=1e-2)
        assert np.all(back[:, ~brain] == 0.0)
    xt, st_ = robust_normalize_sequences(torch.from_numpy(vols), torch.from_numpy(brain))
    assert isinstance(xt, torch.Tensor)
    np.testing.assert_allclose(stats_to_array(st_), arr, rtol=1e-6)
    with pytest.raises(ValueError, match=r"sequence 1: brain mask is empty"):
        robust_normalize_sequences(np.stack([v1, np.zeros_like(v1)]), None)
    with pytest.raises(ValueError, match="spatial shape"):
        robust_normalize_sequences(vols, brain[0])


def test_denormalize_sequences_batched_broadcast() -> None:
    x = torch.zeros(2, 3, 4, 5)  # (B, n, H, W): 0 maps to the middle of each (low, high)
    stats = torch.tensor([[[0.0, 2.0], [10.0, 20.0], [-4.0, 0.0]], [[1.0, 1.0], [0.0, 100.0], [5.0, 7.0]]])
    brain = torch.ones(2, 4, 5, dtype=torch.bool)
    brain[1, 0, 0] = False
    y = denormalize_sequences(x, stats, brain)
    expected = stats.mean(-1)
    torch.testing.assert_close(y[:, :, 1, 1], expected)
    assert torch.all(y[1, :, 0, 0] == 0.0) and torch.all(y[0, :, 0, 0] == expected[0])
    with pytest.raises(ValueError, match="do not fit"):
        denormalize_sequences(x, stats[0], brain)
    with pytest.raises(ValueError, match="brain mask shape"):
        denormalize_sequences(x, stats, brain[0])
