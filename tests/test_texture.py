"""Noise matching (samraug.texture) and its use by local painting: levels against known noise, determinism, and
the bit-identical outside."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samraug.augment.painters import SAMRPainter
from samraug.local_synthesis import paint_local
from samraug.region import edit_region, feather_weights
from samraug.seam import poisson_correction
from samraug.texture import HIGH_PASS_GAIN, high_pass, match_noise, robust_sd
from tests.test_local_synthesis import SCHEME, SEQS, make_synth, subject


def _noisy(sd: float, shape=(28, 28, 28), seed=0):
    rng = np.random.default_rng(seed)
    image = 300.0 + rng.normal(0.0, sd, shape)
    region = np.zeros(shape, bool)
    region[9:19, 9:19, 9:19] = True
    return image, region, np.ones(shape, bool)


@given(
    a=st.floats(-5, 5),
    b=st.floats(-5, 5),
    c=st.floats(-5, 5),
    d=st.floats(-100, 100),
    shape=st.sampled_from([(3, 4, 5), (6, 3, 3)]),
)
@settings(max_examples=30, deadline=None)
def test_high_pass_removes_linear_ramps(a, b, c, d, shape):
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    out = high_pass(a * x + b * y + c * z + d)
    np.testing.assert_allclose(out, 0.0, atol=1e-9)


def test_high_pass_gain_on_white_noise_and_robust_sd():
    noise = np.random.default_rng(1).normal(0.0, 3.0, (60, 60, 60))
    inner = high_pass(noise)[1:-1, 1:-1, 1:-1]
    assert inner.var() / 9.0 == pytest.approx(HIGH_PASS_GAIN, rel=0.02)
    assert robust_sd(inner) / np.sqrt(HIGH_PASS_GAIN) == pytest.approx(3.0, rel=0.03)
    outliers = np.concatenate([np.random.default_rng(2).normal(0, 1.0, 10_000), np.full(500, 1e6)])
    assert robust_sd(outliers) == pytest.approx(1.0, rel=0.1)  # 5 % edges do not count


def _match_one(image, painted, region, brain, spacing, generator):
    """match_noise for one image: its noise row and its info."""
    noise, infos = match_noise([image], np.asarray(painted)[None], region, brain, spacing, generator)
    return noise[0], infos[0]


@pytest.mark.parametrize("sd", [2.0, 10.0])
def test_flat_painting_gets_the_ring_noise_level(sd):
    image, region, brain = _noisy(sd)
    before = image.copy()
    painted = np.full(int(region.sum()), 300.0)
    noise, info = _match_one(image, painted, region, brain, (1.0, 1.0, 1.0), torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(image, before)  # the input is not written
    assert info["sd"] == pytest.approx(sd, rel=0.1) and info["sd_ring"] == pytest.approx(sd, rel=0.1)
    assert noise.std() == pytest.approx(info["sd"], rel=0.05)
    # the region then carries the ring's level
    out = image.copy()
    out[region] = painted + noise
    inner = high_pass(out)[11:17, 11:17, 11:17]
    assert robust_sd(inner) / np.sqrt(HIGH_PASS_GAIN) == pytest.approx(sd, rel=0.15)


def test_textured_painting_gets_little_and_noisier_painting_nothing():
    image, region, brain = _noisy(5.0)
    rng = np.random.default_rng(9)
    same = 300.0 + rng.normal(0.0, 5.0, int(region.sum()))
    _, info = _match_one(image, same, region, brain, (1.0, 1.0, 1.0), torch.Generator())
    assert info["sd"] < 2.0  # sqrt of a difference of two estimates of one level
    noisier = 300.0 + rng.normal(0.0, 8.0, int(region.sum()))
    noise, info = _match_one(image, noisier, region, brain, (1.0, 1.0, 1.0), torch.Generator())
    assert info["sd"] == 0.0 and not noise.any()


def test_seeded_draws_and_bad_input():
    image, region, brain = _noisy(4.0)
    flat = np.full(int(region.sum()), 300.0)
    a, _ = _match_one(image, flat, region, brain, (1.0, 1.0, 1.0), torch.Generator().manual_seed(3))
    b, _ = _match_one(image, flat, region, brain, (1.0, 1.0, 1.0), torch.Generator().manual_seed(3))
    c, _ = _match_one(image, flat, region, brain, (1.0, 1.0, 1.0), torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="region's values"):
        _match_one(image, flat[:-1], region, brain, (1.0, 1.0, 1.0), torch.Generator())
    with pytest.raises(ValueError, match="brain has shape"):
        _match_one(image, flat, region, brain[:-1], (1.0, 1.0, 1.0), torch.Generator())
    empty = np.zeros_like(region)
    noise, info = _match_one(image, np.zeros(0), empty, brain, (1.0, 1.0, 1.0), torch.Generator())
    assert noise.size == 0 and info["reason"] == "empty region"
    tiny = np.zeros_like(region)
    tiny[5, 5, 5] = True  # no filter-valid voxel inside: nothing measured, nothing added
    noise, info = _match_one(image, np.zeros(1), tiny, brain, (1.0, 1.0, 1.0), torch.Generator())
    assert not noise.any() and "filter-valid" in info["reason"]


def test_several_images_in_one_call_get_their_own_levels_in_order():
    """One call for several sequences measures each image's own level on the same ring and draws their noise in
    the images' order, as one call per image with the same generator would."""
    (quiet, region, brain), (loud, _, _) = _noisy(2.0), _noisy(10.0, seed=1)
    flat = np.full((2, int(region.sum())), 300.0)
    both, infos = match_noise([quiet, loud], flat, region, brain, (1.0, 1.0, 1.0), torch.Generator().manual_seed(7))
    assert infos[0]["sd"] == pytest.approx(2.0, rel=0.1) and infos[1]["sd"] == pytest.approx(10.0, rel=0.1)
    g = torch.Generator().manual_seed(7)
    one = [_match_one(img, flat[k], region, brain, (1.0, 1.0, 1.0), g)[0] for k, img in enumerate((quiet, loud))]
    np.testing.assert_array_equal(both, np.stack(one))
    with pytest.raises(ValueError, match=r"images\[1\] has shape"):
        match_noise([quiet, loud[:-1]], flat, region, brain, (1.0, 1.0, 1.0), torch.Generator())


def _deep_region(seg, edited, brain, spacing, feather):
    region = edit_region(seg, edited, lesion_values=SCHEME.lesion_values, spacing=spacing) & (brain | (seg > 0))
    return region, feather_weights(region, spacing, feather + 2 * max(spacing)) == 1.0


def test_paint_local_matches_the_subject_noise_and_keeps_the_outside():
    """A constant painter (no texture at all) in a subject with noise of SD 50: with noise='match' the deep region
    has the subject's noise level, every voxel outside the region is bit-identical, a seed reproduces the voxels."""
    spacing = (2.0, 2.0, 2.0)
    images, seg, edited, brain, affine = subject((40, 44, 36), spacing, shift=(6, 0, 0))
    synth = make_synth("const")
    kw = {"feather_mm": 2.0}
    flat, rec0 = paint_local(images, seg, edited, brain, affine, SCHEME, synth, noise="none", **kw)
    a, rec = paint_local(
        images, seg, edited, brain, affine, SCHEME, synth, generator=torch.Generator().manual_seed(5), **kw
    )
    b, _ = paint_local(
        images, seg, edited, brain, affine, SCHEME, synth, generator=torch.Generator().manual_seed(5), **kw
    )
    c, _ = paint_local(
        images, seg, edited, brain, affine, SCHEME, synth, generator=torch.Generator().manual_seed(6), **kw
    )
    assert rec0["noise"] == "none" and "noise_sd" not in rec0 and rec["noise"] == "match"
    region, deep = _deep_region(seg, edited, brain, spacing, 2.0)
    outside = torch.from_numpy(~region)
    for name in SEQS:
        assert torch.equal(a[name][outside], images[name][outside])
        assert torch.equal(a[name], b[name])
        assert not torch.equal(a[name], c[name]) and torch.equal(c[name][outside], images[name][outside])
        assert rec["noise_sd"][name] == pytest.approx(50.0, rel=0.15)  # the subject's noise (the fixture's SD 50)
        residual = (a[name].double() - flat[name].double()).numpy()
        assert deep.sum() > 30 and residual[deep].std() == pytest.approx(rec["noise_sd"][name], rel=0.2)


def test_painter_noise_option():
    with pytest.raises(ValueError, match="noise must be one of"):
        SAMRPainter(make_synth(), noise="gaussian")
    images, seg, edited, brain, affine = subject()
    with pytest.raises(ValueError, match="noise must be one of"):
        paint_local(images, seg, edited, brain, affine, SCHEME, make_synth(), noise="white")
    painter = SAMRPainter(make_synth("const"), noise="match")
    g = torch.Generator().manual_seed(11)
    a, rec = painter.paint(images, seg, edited, brain, affine, SCHEME, generator=g)
    b, _ = painter.paint(images, seg, edited, brain, affine, SCHEME, generator=torch.Generator().manual_seed(11))
    assert rec["noise"] == "match" and all(torch.equal(a[k], b[k]) for k in SEQS)
    quiet, rec = SAMRPainter(make_synth("const"), noise="none").paint(images, seg, edited, brain, affine, SCHEME)
    assert rec["noise"] == "none" and not all(torch.equal(a[k], quiet[k]) for k in SEQS)


# ---------------------------------------------------------------------------------------------- seam correction
def test_poisson_correction_removes_offsets_exactly_and_drifts_mostly():
    """A constant offset is corrected exactly; a linear drift across the region mostly (the correction is the
    smoothest field that meets the anchors, not an extrapolation)."""
    shape = (16, 15, 14)
    x, y, z = np.indices(shape, dtype=np.float64)
    ramp = 0.2 * x - 0.05 * y + 0.1 * z + 7.0
    painted_mask = np.zeros(shape, bool)
    painted_mask[2:13, 3:12, 2:12] = True
    core = np.zeros(shape, bool)
    core[3:12, 4:11, 3:11] = True
    core[7, 7, 11] = False  # not a box
    anchor = painted_mask & ~core
    real = np.stack([ramp, ramp])
    painted = np.stack([ramp - 3.0, np.zeros(shape)])
    c = poisson_correction(painted, real, painted_mask, anchor)
    np.testing.assert_allclose(c[0], 3.0, atol=1e-5)
    inside = core[painted_mask]
    before = np.abs(ramp[painted_mask][inside]).mean()
    after = np.abs(ramp[painted_mask][inside] - c[1][inside]).mean()
    assert after < 0.05 * before
    # the real values of the core are never read
    scrambled = real.copy()
    scrambled[:, core] = 1e6
    np.testing.assert_array_equal(poisson_correction(painted, scrambled, painted_mask, anchor), c)


def test_poisson_correction_minimises_the_stated_energy_for_each_image():
    """Golden values computed independently: the minimiser of the module docstring's energy, built here as a dense
    least-squares problem (face-neighbour differences + weighted anchor residuals) and solved with numpy's lstsq,
    for three images solved together (the block conjugate gradients share one sparse product per iteration)."""
    from samraug.seam import ANCHOR_WEIGHT, REGULARISATION

    rng = np.random.default_rng(3)
    shape = (7, 6, 5)
    region = np.zeros(shape, bool)
    region[1:6, 1:5, 1:4] = True
    region[3, 2, 1] = False  # not a box
    core = np.zeros(shape, bool)
    core[2:5, 2:4, 2:3] = True
    anchor = region & ~core
    real = rng.normal(size=(3, *shape))
    painted = real + rng.normal(size=real.shape) + np.array([0.0, 2.0, -5.0])[:, None, None, None]
    got = poisson_correction(painted, real, region, anchor)

    coords = [tuple(c) for c in np.argwhere(region)]
    index = {c: i for i, c in enumerate(coords)}
    rows = []
    for c in coords:  # one row per face-neighbour pair inside the region: c_i - c_j
        for axis in range(3):
            nb = list(c)
            nb[axis] += 1
            if tuple(nb) in index:
                row = np.zeros(len(coords))
                row[index[c]], row[index[tuple(nb)]] = 1.0, -1.0
                rows.append(row)
    pairs = np.array(rows)
    is_anchor = np.array([anchor[c] for c in coords])
    for k in range(3):
        residual = np.array([real[k][c] - painted[k][c] for c in coords])
        a_rows = np.sqrt(ANCHOR_WEIGHT) * np.eye(len(coords))[is_anchor]
        system = np.vstack([pairs, a_rows, np.sqrt(REGULARISATION) * np.eye(len(coords))])
        target = np.concatenate(
            [np.zeros(len(pairs)), np.sqrt(ANCHOR_WEIGHT) * residual[is_anchor], np.zeros(len(coords))]
        )
        want = np.linalg.lstsq(system, target, rcond=None)[0]
        # the solver stops at a relative residual of 1e-5; with the anchor weight that is ~1e-4 of the values
        np.testing.assert_allclose(got[k], want, atol=1e-3)
        assert np.abs(got[k] - want).mean() < 1e-4


def test_poisson_correction_without_anchors_and_bad_shapes():
    shape = (10, 10, 10)
    region = np.zeros(shape, bool)
    region[3:7, 3:7, 3:7] = True
    anchor = np.zeros(shape, bool)
    anchor[0, 0, 0] = True  # outside the region: ignored
    c = poisson_correction(np.zeros((1, *shape)), np.full((1, *shape), 4.0), region, anchor)
    assert np.abs(c).max() < 1e-9  # nothing known: no correction
    empty = poisson_correction(np.zeros((2, *shape)), np.zeros((2, *shape)), np.zeros(shape, bool), anchor)
    assert empty.shape == (2, 0)
    with pytest.raises(ValueError, match="must be"):
        poisson_correction(np.zeros((1, 3, 3, 3)), np.zeros((1, 3, 3, 3)), region, anchor)
    with pytest.raises(ValueError, match="anchor_weight must be > 0"):
        poisson_correction(np.zeros((1, *shape)), np.zeros((1, *shape)), region, anchor, anchor_weight=0.0)


def test_paint_local_seam_continues_the_surroundings():
    """A constant painter whose value lies far from the subject's tissue: with the seam correction the painted
    region's level meets its surroundings (and its outside stays bit-identical); without it, it keeps the model's
    value."""
    spacing = (2.0, 2.0, 2.0)
    images, seg, edited, brain, affine = subject((40, 44, 36), spacing, shift=(6, 0, 0))
    synth = make_synth("const")
    kw = {"feather_mm": 0.0, "noise": "none"}
    raw, r0 = paint_local(images, seg, edited, brain, affine, SCHEME, synth, seam="none", **kw)
    fixed, r1 = paint_local(images, seg, edited, brain, affine, SCHEME, synth, **kw)
    assert r0["seam"] == "none" and r1["seam"] == "poisson" and r1["parts"][0]["seam_offset"] is not None
    region, _ = _deep_region(seg, edited, brain, spacing, 0.0)
    from samraug.region import dilate_mm

    ring = dilate_mm(region, spacing, 4.0) & ~region & brain & (seg == 0)
    outside = torch.from_numpy(~region)
    for name in SEQS:
        real = images[name].double().numpy()
        level = real[ring].mean()
        spread = real[brain].std()
        healthy = region & (edited == 0)  # the healed part: healthy tissue continues there
        assert abs(fixed[name].double().numpy()[healthy].mean() - level) < 0.25 * spread
        assert abs(raw[name].double().numpy()[healthy].mean() - level) > 1.0 * spread
        assert torch.equal(fixed[name][outside], images[name][outside])
    with pytest.raises(ValueError, match="seam must be one of"):
        paint_local(images, seg, edited, brain, affine, SCHEME, synth, seam="feather")
    with pytest.raises(ValueError, match="seam must be one of"):
        SAMRPainter(synth, seam="laplace")


def test_nan_inputs_are_refused_with_the_fix():
    image, region, brain = _noisy(4.0)
    flat = np.full((1, int(region.sum())), 300.0)
    bad = image.copy()
    bad[7, 12, 12] = np.nan  # in the ring
    with pytest.raises(ValueError, match=r"images\[0\] contains NaN/inf around the region; replace them"):
        match_noise([bad], flat, region, brain, (1.0, 1.0, 1.0), torch.Generator())
    with pytest.raises(ValueError, match="painted values contain NaN/inf"):
        match_noise([image], flat * np.nan, region, brain, (1.0, 1.0, 1.0), torch.Generator())
    from scipy import ndimage

    band = region & ~ndimage.binary_erosion(region)
    with pytest.raises(ValueError, match="contain NaN/inf; replace them"):
        poisson_correction(np.zeros((1, *image.shape)), bad[None] * 0 + np.nan, region, band)
    from samraug.seam import harmonic_fill

    with pytest.raises(ValueError, match="contain NaN/inf"):
        harmonic_fill(np.full((1, *image.shape), np.nan), region, ~region)
