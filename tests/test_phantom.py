"""The digital phantom: anatomy, lesions, MR contrast physics, determinism, writing and the cache."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

pytest.importorskip("nilearn", reason="the digital phantom needs nilearn's MNI152 template (pip install nilearn)")
nib = pytest.importorskip("nibabel")

from samraug.data import phantom as P  # noqa: E402
from samraug.labels import get_scheme  # noqa: E402

SHAPE_2MM = (99, 117, 95)
# nilearn's 2 mm MNI152 grid (voxel size 2 mm, origin at (-98, -134, -72) mm).
AFFINE_2MM = np.array([[2.0, 0, 0, -98.0], [0, 2.0, 0, -134.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1.0]])


@pytest.fixture(scope="module")
def s0() -> P.PhantomSubject:
    return P.generate_subject(0)


@pytest.fixture(scope="module")
def s1() -> P.PhantomSubject:
    return P.generate_subject(1)


@pytest.fixture(params=["s0", "s1"])
def subject(request: pytest.FixtureRequest) -> P.PhantomSubject:
    return request.getfixturevalue(request.param)


def _normal(s: P.PhantomSubject, tissue: str, threshold: float = 0.9) -> np.ndarray:
    """Voxels of (almost) pure normal ``tissue`` away from lesion labels."""
    return (s.fractions[tissue] > threshold) & (s.seg == 0)


def _mean(image: np.ndarray, mask: np.ndarray) -> float:
    assert mask.sum() >= 20, "too few voxels to measure a contrast"
    return float(image[mask].mean())


# ---------------------------------------------------------------------------------------------------- structure
def test_grid_dtypes_and_keys(subject: P.PhantomSubject) -> None:
    assert subject.shape == SHAPE_2MM
    assert tuple(subject.images) == P.PHANTOM_SEQUENCES == ("t1n", "t1c", "t2w", "t2f", "aptw")
    assert all(img.dtype == np.float32 and img.shape == SHAPE_2MM for img in subject.images.values())
    assert subject.seg.dtype == np.uint8 and subject.seg.shape == SHAPE_2MM
    assert subject.brain.dtype == bool
    np.testing.assert_array_equal(subject.affine, AFFINE_2MM)
    assert tuple(subject.fractions) == P.TISSUES
    assert subject.parameters["simulation"] is True


def test_fractions_partition_the_brain(subject: P.PhantomSubject) -> None:
    stack = np.stack([subject.fractions[t] for t in P.TISSUES])
    assert stack.min() >= 0.0 and stack.max() <= 1.0 + 1e-6
    total = stack.sum(axis=0)
    np.testing.assert_allclose(total[subject.brain], 1.0, atol=1e-5)
    assert np.all(total[~subject.brain] == 0.0)
    # Lesion compartments replace normal tissue where they are labelled.
    for name, value in P.LABELS.items():
        labelled = subject.seg == value
        if labelled.any():
            assert subject.fractions[name][labelled].mean() > 0.5, name
            assert subject.fractions[name][subject.seg == 0].mean() < 0.01, name


def test_anatomy_is_plausible(subject: P.PhantomSubject) -> None:
    volume_ml = subject.brain.sum() * 8.0 / 1000.0  # 2 mm voxels
    assert 1500 < volume_ml < 2300  # the MNI152 mask (~1900 ml) after mild scaling
    ml = {t: float(subject.fractions[t].sum()) * 8.0 / 1000.0 for t in ("gm", "wm", "csf")}
    assert ml["gm"] > ml["wm"] > ml["csf"] > 50


def test_labels_brats2024_and_inside_brain(subject: P.PhantomSubject) -> None:
    get_scheme("brats2024").validate(subject.seg)
    assert set(np.unique(subject.seg).tolist()) <= {0, 1, 2, 3, 4}
    assert not subject.seg[~subject.brain].any()
    # These seeds were chosen so every compartment occurs (tumour with rim, necrosis, edema and a cavity).
    assert {1, 2, 3, 4} <= set(np.unique(subject.seg).tolist())
    assert 1 <= len(subject.parameters["lesions"]) <= 3
    # Lesions sit in the cerebral hemispheres' white matter, not in the background.
    for lesion in subject.parameters["lesions"]:
        centre = tuple(round(c) for c in lesion["centre_voxel"])
        assert subject.brain[centre]
        assert subject.seg[centre] in (1, 3, 4)  # tumour or cavity at the centre


def test_edema_surrounds_the_tumour(s0: P.PhantomSubject) -> None:
    from scipy import ndimage

    tumour = np.isin(s0.seg, (1, 3, 4))
    edema = s0.seg == 2
    near = ndimage.binary_dilation(tumour, iterations=2) & ~tumour
    assert edema[near & s0.brain].mean() > 0.5  # most of the tumour's surroundings are edema
    assert edema.sum() > tumour.sum()
    # Edema spreads along white matter: the normal tissue left in edema voxels is mostly white matter.
    normal = {t: s0.fractions[t] for t in ("gm", "wm", "csf")}
    share_edema = normal["wm"][edema].sum() / sum(f[edema].sum() for f in normal.values())
    share_brain = normal["wm"][s0.brain].sum() / sum(f[s0.brain].sum() for f in normal.values())
    assert share_edema > share_brain + 0.1


def test_skull_stripped(subject: P.PhantomSubject) -> None:
    for name, img in subject.images.items():
        assert np.all(np.isfinite(img)), name
        np.testing.assert_array_equal(img != 0, subject.brain, err_msg=name)
    for name in ("t1n", "t1c", "t2w", "t2f"):
        inside = subject.images[name][subject.brain]
        assert inside.min() > 0 and 500 < np.percentile(inside, 99) < 3000, name
    assert subject.images["aptw"][subject.brain].min() < 0  # APTw is signed (MTRasym %)


# ---------------------------------------------------------------------------------------------------- physics
def test_t1w_contrast(subject: P.PhantomSubject) -> None:
    # GM vs WM differ by ~10 %: divide by the (smooth, stored) bias field so the comparison is local.
    t1 = subject.images["t1n"] / subject.bias
    wm, gm, csf = (_mean(t1, _normal(subject, t)) for t in ("wm", "gm", "csf"))
    assert csf < 0.7 * gm and gm < wm  # CSF dark, white matter brightest


def test_t2w_and_flair_contrast(subject: P.PhantomSubject) -> None:
    t2, flair = subject.images["t2w"], subject.images["t2f"]
    wm, gm, csf = _normal(subject, "wm"), _normal(subject, "gm"), _normal(subject, "csf")
    edema = subject.seg == 2
    assert _mean(t2, csf) > 1.5 * _mean(t2, gm) > 1.5 * _mean(t2, wm)  # CSF bright on T2w
    assert _mean(flair, csf) < 0.5 * _mean(flair, wm)  # CSF nulled on FLAIR
    assert _mean(flair, edema) > 1.2 * _mean(flair, wm)  # edema bright on FLAIR
    assert _mean(t2, edema) > 1.3 * _mean(t2, wm)


def test_gadolinium_enhances_the_rim(subject: P.PhantomSubject) -> None:
    et, wm = subject.seg == 3, _normal(subject, "wm")
    ratio_pre = _mean(subject.images["t1n"], et) / _mean(subject.images["t1n"], wm)
    ratio_post = _mean(subject.images["t1c"], et) / _mean(subject.images["t1c"], wm)
    assert ratio_post > 1.3 * ratio_pre
    assert ratio_post > 1.2  # the rim is brighter than white matter on Gd-T1w
    # Non-enhancing compartments stay at or below white matter.
    assert _mean(subject.images["t1c"], subject.seg == 4) < _mean(subject.images["t1c"], wm)


def test_cavity_is_fluid(subject: P.PhantomSubject) -> None:
    cavity, wm = subject.seg == 4, _normal(subject, "wm")
    assert _mean(subject.images["t1n"], cavity) < _mean(subject.images["t1n"], wm)
    assert _mean(subject.images["t2w"], cavity) > 2.0 * _mean(subject.images["t2w"], wm)
    assert _mean(subject.images["t2f"], cavity) < _mean(subject.images["t2f"], wm)


def test_aptw_higher_in_tumour(subject: P.PhantomSubject) -> None:
    apt = subject.images["aptw"]
    tumour = np.isin(subject.seg, (1, 3))
    normal = subject.brain & (subject.seg == 0)
    assert _mean(apt, tumour) > _mean(apt, normal) + 1.0  # percent
    assert -0.5 < _mean(apt, normal) < 1.5
    # 0.5 % noise on a smooth coarse map: voxel-to-voxel differences in pure white matter are noise-sized.
    wm = _normal(subject, "wm", 0.95)
    assert 0.3 < float(np.std(apt[wm])) < 1.0


def test_partial_volume_signal_model(subject: P.PhantomSubject) -> None:
    """Regressing each sequence (bias removed) on the tissue fractions recovers the textbook tissue signals."""
    tissues = subject.parameters["tissues"]
    pd, t1, t2 = (np.array([tissues[t][k] for t in P.TISSUES]) for k in ("pd", "t1_ms", "t2_ms"))
    gd = np.array([tissues[t]["gd_mM"] for t in P.TISSUES])
    t1_post = 1.0 / (1.0 / t1 + 3.8e-3 * gd)  # r1 = 3.8 /mM/s
    ti = 4250.0 * np.log(2.0 / (1.0 + np.exp(-9000.0 / 4250.0)))  # nulls nominal CSF
    expected = {
        "t1n": pd * (1 - np.exp(-550 / t1)) * np.exp(-12 / t2),
        "t1c": pd * (1 - np.exp(-550 / t1_post)) * np.exp(-12 / t2),
        "t2w": pd * (1 - np.exp(-5000 / t1)) * np.exp(-100 / t2),
        "t2f": pd * np.abs(1 - 2 * np.exp(-ti / t1) + np.exp(-9000 / t1)) * np.exp(-120 / t2),
    }
    brain = subject.brain
    design = np.stack([subject.fractions[t][brain] for t in P.TISSUES], axis=1).astype(np.float64)
    wm = P.TISSUES.index("wm")
    for name, signal in expected.items():
        y = (subject.images[name] / subject.bias)[brain].astype(np.float64)
        fitted, *_ = np.linalg.lstsq(design, y, rcond=None)
        for tissue in ("gm", "csf", "snfh", "netc", "et", "rc"):
            k = P.TISSUES.index(tissue)
            if name == "t2f" and tissue == "csf":  # nulled: Rician noise floor dominates
                assert fitted[k] / fitted[wm] < 0.35
                continue
            np.testing.assert_allclose(
                fitted[k] / fitted[wm], signal[k] / signal[wm], rtol=0.05, err_msg=f"{name} {tissue}/wm"
            )


# ---------------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_subject_and_different_seeds_differ(s0: P.PhantomSubject, s1: P.PhantomSubject) -> None:
    again = P.generate_subject(0)
    for name in P.PHANTOM_SEQUENCES:
        np.testing.assert_array_equal(again.images[name], s0.images[name])
    np.testing.assert_array_equal(again.seg, s0.seg)
    np.testing.assert_array_equal(again.brain, s0.brain)
    for t in P.TISSUES:
        np.testing.assert_array_equal(again.fractions[t], s0.fractions[t])
    assert again.parameters == s0.parameters
    assert not np.array_equal(s0.seg, s1.seg)
    assert not np.array_equal(s0.brain, s1.brain)  # the anatomy is deformed differently
    assert not np.array_equal(s0.images["t1n"], s1.images["t1n"])


def test_subject_seeds_and_case_ids() -> None:
    seeds = {P.subject_seed(s, i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150
    assert P.subject_seed(7, 3) == P.subject_seed(7, 3)
    assert P.case_id(0) == "BraTS-GLI-00000-000" and P.case_id(12345) == "BraTS-GLI-12345-000"
    with pytest.raises(ValueError, match=r"0\.\.99999"):
        P.case_id(100_000)


def test_healthy_subject() -> None:
    s = P.generate_subject(5, n_lesions=0)
    assert not s.seg.any() and s.parameters["lesions"] == []
    np.testing.assert_array_equal(s.images["t2f"] != 0, s.brain)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolution": 3.0}, "resolution"),
        ({"cavity_probability": 1.5}, "cavity_probability"),
        ({"n_lesions": (3, 1)}, "n_lesions"),
        ({"n_lesions": -1}, "n_lesions"),
        ({"lesion_radius_mm": (10.0, 5.0)}, "lesion_radius_mm"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        P.generate_subject(0, **kwargs)


def test_bad_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        P.generate_subject(-1)


# ---------------------------------------------------------------------------------------------------- writing
def _case_files(root, case: str) -> list[str]:
    return sorted(p.name for p in (root / case).iterdir())


def test_write_subject_round_trip(s0: P.PhantomSubject, tmp_path) -> None:
    subject = dataclasses.replace(s0, subject_id="BraTS-GLI-00007-000")
    case = P.write_subject(subject, tmp_path)
    assert case == tmp_path / "BraTS-GLI-00007-000"
    assert _case_files(tmp_path, case.name) == sorted(
        f"BraTS-GLI-00007-000-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f", "aptw", "seg")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BraTS-GLI-00007-000"]  # no temporary left behind
    for name in (*P.PHANTOM_SEQUENCES, "seg"):
        img = nib.load(case / f"BraTS-GLI-00007-000-{name}.nii.gz")
        assert img.shape == SHAPE_2MM
        np.testing.assert_array_equal(img.affine, s0.affine)
        data = np.asanyarray(img.dataobj)
        expected = s0.seg if name == "seg" else s0.images[name]
        assert data.dtype == expected.dtype
        np.testing.assert_array_equal(data, expected)
    # Writing again replaces the case.
    P.write_subject(subject, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BraTS-GLI-00007-000"]


@pytest.fixture
def fake_generation(s0: P.PhantomSubject, s1: P.PhantomSubject, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace subject generation by the module's two subjects (fast); returns the list of generated indices."""
    calls: list[int] = []

    def fake(index: int, *, seed: int = 0, resolution: float = 2.0, **kwargs) -> P.PhantomSubject:
        calls.append(index)
        return dataclasses.replace((s0, s1)[index % 2], subject_id=P.case_id(index))

    monkeypatch.setattr(P, "dataset_subject", fake)
    return calls


def test_write_dataset_layout_and_resume(fake_generation: list[int], tmp_path) -> None:
    root = tmp_path / "ds"
    assert P.write_phantom_dataset(root, 2, seed=3) == root
    assert fake_generation == [0, 1]
    cases = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert cases == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    meta = json.loads((root / "phantom.json").read_text())
    assert meta["label_scheme"] == "brats2024" and meta["n"] == 2 and meta["seed"] == 3
    assert "SIMULATED" in meta["description"]
    assert meta["subjects"]["BraTS-GLI-00001-000"] == P.subject_seed(3, 1)
    mtime = (root / cases[0] / f"{cases[0]}-t1n.nii.gz").stat().st_mtime_ns

    # A complete case is skipped; an incomplete one is regenerated; a larger n extends the data set.
    (root / cases[1] / f"{cases[1]}-aptw.nii.gz").unlink()
    P.write_phantom_dataset(root, 3, seed=3)
    assert fake_generation == [0, 1, 1, 2]
    assert (root / cases[0] / f"{cases[0]}-t1n.nii.gz").stat().st_mtime_ns == mtime
    assert json.loads((root / "phantom.json").read_text())["n"] == 3
    P.write_phantom_dataset(root, 2, seed=3)
    assert fake_generation == [0, 1, 1, 2]
    assert json.loads((root / "phantom.json").read_text())["n"] == 3

    with pytest.raises(ValueError, match="another folder"):
        P.write_phantom_dataset(root, 2, seed=4)
    foreign = tmp_path / "foreign"
    (foreign / "BraTS-GLI-00000-000").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a phantom data set"):
        P.write_phantom_dataset(foreign, 1)
    with pytest.raises(ValueError, match="positive"):
        P.write_phantom_dataset(root, 0)


def test_ensure_dataset_reuses_the_cache(fake_generation: list[int], tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SAMRAUG_CACHE", str(tmp_path / "cache"))
    root = P.ensure_phantom_dataset(2, seed=5)
    assert root == tmp_path / "cache" / "phantom" / "2mm-seed5-n2"
    assert fake_generation == [0, 1]
    files = sorted(root.rglob("*.nii.gz"))
    assert len(files) == 12
    mtimes = [p.stat().st_mtime_ns for p in files]
    assert P.ensure_phantom_dataset(2, seed=5) == root
    assert fake_generation == [0, 1]  # not regenerated
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert sorted(p.name for p in root.parent.iterdir()) == ["2mm-seed5-n2"]  # no temporary left behind
    # An explicit cache_dir holds the data-set folders directly.
    assert P.ensure_phantom_dataset(1, cache_dir=tmp_path / "other") == tmp_path / "other" / "2mm-seed0-n1"


def test_ensure_dataset_is_atomic(s0: P.PhantomSubject, monkeypatch, tmp_path) -> None:
    def failing(index: int, **kwargs) -> P.PhantomSubject:
        if index == 1:
            raise RuntimeError("interrupted")
        return dataclasses.replace(s0, subject_id=P.case_id(index))

    monkeypatch.setattr(P, "dataset_subject", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        P.ensure_phantom_dataset(3, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither a half data set nor a temporary folder
    monkeypatch.setattr(P, "dataset_subject", lambda index, **kw: dataclasses.replace(s0, subject_id=P.case_id(index)))
    root = P.ensure_phantom_dataset(3, cache_dir=tmp_path)
    assert (root / "phantom.json").is_file() and len(list(root.rglob("*.nii.gz"))) == 18
    # A folder of that name that is not a complete data set is reported, not silently reused.
    (root / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-seg.nii.gz").unlink()
    with pytest.raises(FileExistsError, match="delete it"):
        P.ensure_phantom_dataset(3, cache_dir=tmp_path)


def test_brats_loader_reads_the_phantom(fake_generation: list[int], s0: P.PhantomSubject, tmp_path) -> None:
    brats = pytest.importorskip("samraug.data.brats", reason="samraug.data.brats (the BraTS loader) is not there yet")
    root = P.write_phantom_dataset(tmp_path / "ds", 2)
    subjects = brats.load_brats(root, scheme="brats2024")
    assert [s["subject_id"] for s in subjects] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    first = subjects[0]
    assert first["scheme"] == "brats2024"
    for name in P.PHANTOM_SEQUENCES:
        np.testing.assert_array_equal(first[name].data[0].numpy(), s0.images[name])
        np.testing.assert_allclose(first[name].affine, s0.affine)
    np.testing.assert_array_equal(first["seg"].data[0].numpy(), s0.seg)
    np.testing.assert_array_equal(first["brain"].data[0].numpy().astype(bool), s0.brain)
    # phantom.json declares the scheme, so the default needs no argument.
    assert brats.load_brats(root)[0]["scheme"] == "brats2024"


# ---------------------------------------------------------------------------------------------------- montage
def test_montage(s0: P.PhantomSubject, tmp_path) -> None:
    import matplotlib.image as mpimg

    z = s0.lesion_slice()
    assert np.isin(s0.seg[:, :, z], (1, 3, 4)).any()
    path = P.montage(s0, tmp_path / "sub" / "montage.png")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[1] > 3 * pixels.shape[0]  # one row of panels
    assert pixels[..., :3].std() > 0.05
    with pytest.raises(ValueError, match="outside the volume"):
        P.montage(s0, tmp_path / "x.png", z=500)
    assert not os.path.exists(tmp_path / "x.png")


def test_noise_seed_changes_only_the_noise(s0: P.PhantomSubject) -> None:
    """A second noise seed: same anatomy, lesions, bias and scale; the difference is noise of the recorded size."""
    other = P.generate_subject(0, noise_seed=1)
    np.testing.assert_array_equal(other.seg, s0.seg)
    np.testing.assert_array_equal(other.brain, s0.brain)
    np.testing.assert_array_equal(other.bias, s0.bias)
    for t in P.TISSUES:
        np.testing.assert_array_equal(other.fractions[t], s0.fractions[t])
    assert {**other.parameters, "noise_seed": None} == s0.parameters and other.parameters["noise_seed"] == 1
    brain = s0.brain & (s0.seg == 0)
    for name in P.PHANTOM_SEQUENCES:
        a, b = s0.images[name][brain].astype(np.float64), other.images[name][brain].astype(np.float64)
        assert not np.array_equal(a, b)
        assert np.array_equal(s0.images[name] != 0, other.images[name] != 0)  # skull stripping kept
        diff = a - b
        if name == "aptw":  # additive Gaussian noise of _APT_NOISE %
            assert abs(diff.std() / np.sqrt(2) - P._APT_NOISE) < 0.1 * P._APT_NOISE
            continue
        # Rician at high SNR ~ Gaussian: std(a - b) ~ sqrt(2) sigma, sigma = median clean signal / snr
        bright = a > np.median(a)
        sigma = diff[bright].std() / np.sqrt(2)
        expected = np.median(a) / other.parameters["snr"][name]
        assert 0.6 * expected < sigma < 1.6 * expected, (name, sigma, expected)
        assert abs(diff.mean()) < 0.1 * sigma
    again = P.generate_subject(0, noise_seed=1)
    np.testing.assert_array_equal(again.images["t1c"], other.images["t1c"])
    with pytest.raises(ValueError, match="noise_seed"):
        P.generate_subject(0, noise_seed=-1)


def test_noise_free_rendering_is_the_expected_image(s0: P.PhantomSubject) -> None:
    """noise_free=True: the same subject and scale without acquisition noise. The noisy image minus it is zero-mean
    noise of the recorded size (APTw: _APT_NOISE; magnitudes at high SNR: sigma = median clean signal / snr), and
    the residuals of two noise realisations against it are uncorrelated."""
    clean = P.generate_subject(0, noise_free=True)
    other = P.generate_subject(0, noise_seed=1)
    np.testing.assert_array_equal(clean.seg, s0.seg)
    np.testing.assert_array_equal(clean.bias, s0.bias)
    assert {**clean.parameters} == {**s0.parameters, "noise_free": True}
    brain = s0.brain & (s0.seg == 0)
    for name in P.PHANTOM_SEQUENCES:
        c = clean.images[name][brain].astype(np.float64)
        a, b = s0.images[name][brain].astype(np.float64), other.images[name][brain].astype(np.float64)
        assert np.array_equal(clean.images[name] != 0, s0.images[name] != 0)
        diff = a - c
        if name == "aptw":
            assert abs(diff.std() - P._APT_NOISE) < 0.1 * P._APT_NOISE and abs(diff.mean()) < 0.05 * P._APT_NOISE
        else:
            bright = c > np.median(c)  # chosen on the noise-free image: no selection bias on the noise
            sigma, expected = diff[bright].std(), np.median(a) / s0.parameters["snr"][name]
            assert 0.6 * expected < sigma < 1.6 * expected, (name, sigma, expected)
            assert abs(diff[bright].mean()) < 0.1 * sigma
        # what the two noisy realisations share is the noise-free image: their residuals are uncorrelated
        assert abs(np.corrcoef(a - c, b - c)[0, 1]) < 0.05
    with pytest.raises(ValueError, match="noise_free=True renders no noise"):
        P.generate_subject(0, noise_free=True, noise_seed=1)
    with pytest.raises(ValueError, match="noise_free must be True or False"):
        P.generate_subject(0, noise_free="yes")
