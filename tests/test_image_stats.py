"""Image statistics of the quality reports: golden values on constructed images, and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samraug.image_stats import (
    checkerboard_index,
    contrast,
    contrast_table,
    match_intensity,
    slice_change_rms,
    slice_consistency,
)


def _ones(shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape, dtype=bool)


def test_pure_checkerboard_has_index_one_in_every_orientation_and_on_odd_grids() -> None:
    for shape in ((16, 24), (99, 117)):
        i, j = np.indices(shape)
        board = np.repeat((((i + j) % 2) * 2.0 - 1.0)[..., None], 3, axis=2)  # (-1)^(i+j): orthogonal to planes
        assert checkerboard_index(board, _ones(board.shape)) == pytest.approx(1.0, abs=1e-12)
        # stripes (-1)^i: the plane fit takes (4/42)^2 * 42 of the 8 units of energy per row; what is left of the
        # Nyquist bin: (8 - 16/42)^2 of 8 * (8 - 16/42) -> (8 - 16/42) / 8 = 0.952
        for pattern in (i % 2, j % 2):
            vol = np.repeat((pattern * 2.0 - 1.0)[..., None], 3, axis=2)
            assert checkerboard_index(vol, _ones(vol.shape)) == pytest.approx((8 - 16 / 42) / 8, abs=1e-12)


def test_smooth_image_has_index_zero_and_noise_the_nyquist_share_of_bins() -> None:
    x = np.arange(32)
    smooth = np.cos(2 * np.pi * x / 8)[:, None] * np.cos(2 * np.pi * 2 * x / 8)[None, :]
    assert checkerboard_index(smooth, _ones(smooth.shape)) == pytest.approx(0.0, abs=1e-12)
    plane = 0.3 * np.indices((40, 24))[0] - 0.7 * np.indices((40, 24))[1]
    assert checkerboard_index(plane, _ones(plane.shape)) == pytest.approx(0.0, abs=1e-12)
    # a smooth Gaussian blob (sigma 1.5 squares): only its curvature's edge leakage is left (measured 0.043)
    blob = np.exp(-((np.indices((64, 64)) - 31.5) ** 2).sum(0) / (2 * 12.0**2))
    assert checkerboard_index(blob, _ones(blob.shape)) < 0.05
    # white noise: E|F(k)|^2 = f_k^H P f_k with P the projector removing the plane (1, i, j) from a square
    noise = np.random.default_rng(0).standard_normal((64, 64, 40))
    for tile in (8, 4):
        i, j = (x.ravel() - (tile - 1) / 2 for x in np.indices((tile, tile)))
        basis = np.stack([np.ones(tile * tile), i, j], 1)
        proj = np.eye(tile * tile) - basis @ np.linalg.pinv(basis)
        ki, kj = np.indices((tile, tile)).reshape(2, -1)
        f = np.exp(-2j * np.pi * (np.outer(ki, i + (tile - 1) / 2) + np.outer(kj, j + (tile - 1) / 2)) / tile)
        power = np.real(np.einsum("kv,vw,kw->k", f.conj(), proj, f))
        nyq = (ki == tile // 2) | (kj == tile // 2)
        expected = power[nyq].sum() / power.sum()
        assert checkerboard_index(noise, _ones(noise.shape), tile=tile) == pytest.approx(expected, rel=0.03)
    assert expected != pytest.approx(7 / 16, rel=0.001)  # the plane removal matters for small squares
    with pytest.raises(ValueError, match="even"):
        checkerboard_index(noise, _ones(noise.shape), tile=5)


def test_checkerboard_added_to_a_smooth_image_gives_its_energy_share() -> None:
    x = np.arange(16)
    smooth = np.cos(2 * np.pi * x / 8)[:, None] * np.cos(2 * np.pi * x / 8)[None, :]  # energy/pixel 0.25, no plane
    board = 0.25 * ((np.indices((16, 16)).sum(0) % 2) * 2.0 - 1.0)  # energy per pixel 0.0625, orthogonal
    assert checkerboard_index(smooth + board, _ones((16, 16))) == pytest.approx(0.0625 / 0.3125, abs=1e-12)


def test_checkerboard_index_uses_only_squares_inside_the_brain() -> None:
    board = (np.indices((24, 24, 2)).sum(0) % 2) * 2.0 - 1.0
    brain = np.zeros(board.shape, bool)
    brain[3:21, 2:22] = True  # wholly holds only the square x 8:16, y 8:16 (others get noise)
    outside = np.where(brain, board, 123.0 * np.random.default_rng(1).standard_normal(board.shape))
    assert checkerboard_index(outside, brain) == pytest.approx(1.0)
    assert checkerboard_index(np.ones((8, 8, 2)), _ones((8, 8, 2))) == 0.0  # constant: no pattern
    with pytest.raises(ValueError, match="wholly inside the brain"):
        checkerboard_index(board, np.zeros(board.shape, bool))
    with pytest.raises(ValueError, match="brain mask has shape"):
        checkerboard_index(board, _ones((24, 24, 3)))


def test_slice_consistency_of_a_constant_gradient_volume() -> None:
    # v = 0.3 x + 0.7 z: every axial step changes by exactly 0.7, whatever the in-plane gradient
    x, _, z = np.indices((5, 4, 6), dtype=float)
    vol = 0.3 * x + 0.7 * z
    assert slice_consistency(vol, _ones(vol.shape)) == pytest.approx(0.7)
    assert slice_consistency(vol * -2.0, _ones(vol.shape)) == pytest.approx(1.4)


def test_slice_consistency_counts_only_pairs_inside_the_brain() -> None:
    vol = np.zeros((3, 3, 4))
    vol[..., 2] = 5.0
    brain = _ones(vol.shape)
    brain[..., 2] = False  # the only changes touch slice 2: no brain pair sees them
    assert slice_consistency(vol, brain) == 0.0
    brain[0, 0, 2] = True  # pairs (1,2) and (2,3) at (0, 0) now count: |5 - 0| twice
    n_pairs = int((brain[..., 1:] & brain[..., :-1]).sum())
    assert slice_consistency(vol, brain) == pytest.approx(10.0 / n_pairs)
    with pytest.raises(ValueError, match="adjacent"):
        slice_consistency(vol, np.zeros(vol.shape, bool))


def test_slice_change_rms_golden_and_noise_removal() -> None:
    x, _, z = np.indices((5, 4, 6), dtype=float)
    steps = np.where(z % 2 == 0, 0.0, 1.0) * 0.6 + 0.3 * x  # alternating 0 / 0.6: every step is 0.6
    assert slice_change_rms(steps, _ones(steps.shape)) == pytest.approx(0.6)
    # a rising then flat profile: steps 2, 0 -> RMS sqrt(2) (mean |dz| would be 1)
    v = np.zeros((2, 2, 3))
    v[..., 1:] = 2.0
    assert slice_change_rms(v, _ones(v.shape)) == pytest.approx(np.sqrt(2.0))
    assert slice_consistency(v, _ones(v.shape)) == pytest.approx(1.0)
    # the same anatomy with independent noise twice: the reference removes the noise's 2 sigma^2
    rng = np.random.default_rng(1)
    anatomy = np.broadcast_to(np.sin(np.arange(40) / 3.0), (40, 40, 40)).transpose(1, 2, 0) * 0.5
    true = slice_change_rms(anatomy, _ones(anatomy.shape))
    noisy = [anatomy + rng.normal(0.0, 0.2, anatomy.shape) for _ in range(2)]
    assert slice_change_rms(noisy[0], _ones(anatomy.shape)) > 1.5 * true  # the noise dominates the raw change
    assert slice_change_rms(noisy[0], _ones(anatomy.shape), noisy[1]) == pytest.approx(true, rel=0.05)
    # the reference of a noise-free image is itself: nothing is removed
    assert slice_change_rms(anatomy, _ones(anatomy.shape), anatomy) == pytest.approx(true)
    with pytest.raises(ValueError, match="noise reference"):
        slice_change_rms(anatomy, _ones(anatomy.shape), anatomy[:-1])
    with pytest.raises(ValueError, match="adjacent"):
        slice_change_rms(anatomy, np.zeros(anatomy.shape, bool))


def test_contrast_golden_and_errors() -> None:
    img = np.array([0.0, 2.0, 0.0, 2.0, 7.0, 7.0, -3.0, -3.0])
    normal = np.arange(8) < 4  # mean 1, SD 1
    assert contrast(img, img == 7, normal) == pytest.approx(6.0)
    assert contrast(img, img == -3, normal) == pytest.approx(-4.0)
    with pytest.raises(ValueError, match="class mask holds 0 voxels"):
        contrast(img, img == 99, normal)
    with pytest.raises(ValueError, match="NaN"):
        contrast(np.where(normal, np.nan, img), img == 7, normal)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.1, 10.0), st.floats(-5.0, 5.0), st.integers(0, 2**31 - 1))
def test_contrast_is_invariant_to_positive_linear_maps(scale: float, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((6, 6, 3))
    cls = rng.random(img.shape) < 0.3
    normal = ~cls
    assert contrast(img * scale + shift, cls, normal) == pytest.approx(contrast(img, cls, normal), rel=1e-6, abs=1e-9)
    assert contrast(-img, cls, normal) == pytest.approx(-contrast(img, cls, normal), rel=1e-6, abs=1e-9)


def test_contrast_table_per_class_and_sequence() -> None:
    label = np.zeros((6, 6, 2), int)
    label[:2, :2] = 3  # 8 voxels of class 3
    label[5, 5, 0] = 1  # 1 voxel of class 1: below min_voxels, left out
    brain = _ones(label.shape)
    checker = (np.indices(label.shape).sum(0) % 2).astype(float)  # normal brain mean ~0.5, SD ~0.5
    images = {"t1c": np.where(label == 3, 4.0, checker), "t2f": np.where(label == 3, -4.0, checker)}
    table = contrast_table(images, label, brain, {"ET": (3,), "NETC": (1,)}, min_voxels=5)
    assert list(table) == ["ET"] and list(table["ET"]) == ["t1c", "t2f"]
    normal = brain & (label == 0)
    for seq, img in images.items():
        ref = img[normal]
        assert table["ET"][seq] == pytest.approx((img[label == 3].mean() - ref.mean()) / ref.std())
    assert table["ET"]["t1c"] > 5 and table["ET"]["t2f"] < -5
    # model classes: 0 background, 1 normal brain -> the same table with normal_values=(1,)
    model = np.where(label == 0, 1, label + 1)
    again = contrast_table(images, model, brain, {"ET": (4,)}, normal_values=(1,), min_voxels=5)
    assert again["ET"] == pytest.approx(table["ET"])


def test_match_intensity_gives_the_target_moments() -> None:
    rng = np.random.default_rng(3)
    src, dst = rng.standard_normal((8, 8, 4)) * 3 + 10, rng.standard_normal((8, 8, 4)) * 0.2 - 0.4
    mask = rng.random(src.shape) < 0.5
    out = match_intensity(src, dst, mask)
    assert out[mask].mean() == pytest.approx(dst[mask].mean()) and out[mask].std() == pytest.approx(dst[mask].std())
    assert np.corrcoef(out.ravel(), src.ravel())[0, 1] == pytest.approx(1.0)
    flat = match_intensity(np.full(src.shape, 2.0), dst, mask)  # a constant source becomes the target's mean
    assert np.allclose(flat, dst[mask].mean())
