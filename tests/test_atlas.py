"""The atlas: lesion-free voxel-wise mean of normalised subjects, the 3-slice stack, grid checks, files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from safetensors.torch import save_file

from samraug.atlas import Atlas, build_atlas
from samraug.intensity import Normalization

SHAPE = (10, 12, 6)
AFFINE = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, -12], [0, 0, 2.0, -6], [0, 0, 0, 1]])
SEQS = ("t1", "t2")


def _subject_arrays(seed: int) -> dict[str, np.ndarray]:
    """Images, brain and a BraTS-2021 label map for one synthetic subject (lesion inside the brain)."""
    rng = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, dtype=bool)
    brain[1 + seed % 2 : 9, 2 : 11 - seed % 2, 1:5] = True
    seg = np.zeros(SHAPE, dtype=np.int64)
    c = 3 + seed % 3
    seg[c : c + 2, 4:6, 2:4] = 2
    seg[c, 4, 2] = 4
    out = {"brain": brain, "seg": seg}
    for k, s in enumerate(SEQS):
        img = rng.uniform(50, 150, SHAPE) * (k + 1)
        img[seg > 0] += 500.0  # lesions are very bright: they must not leak into the atlas
        out[s] = np.where(brain, img, 0.0).astype(np.float32)
    return out


def _tio_subject(arrays: dict[str, np.ndarray], sid: str, affine: np.ndarray = AFFINE) -> tio.Subject:
    return tio.Subject(
        t1=tio.ScalarImage(tensor=arrays["t1"][None], affine=affine),
        t2=tio.ScalarImage(tensor=arrays["t2"][None], affine=affine),
        seg=tio.LabelMap(tensor=arrays["seg"][None], affine=affine),
        brain=tio.LabelMap(tensor=arrays["brain"][None].astype(np.uint8), affine=affine),
        subject_id=sid,
        scheme="brats2021",
    )


def _normalised(img: np.ndarray, brain: np.ndarray, normal: np.ndarray | None = None) -> np.ndarray:
    """Independent re-implementation of the contract. Default: p0.5 / p99.5 of the normal-appearing brain
    (``normal``) -> -0.8 / -0.2; legacy (``normal=None``): of the whole brain -> -1 / +1. Clip, background -1."""
    if normal is None:
        lo, hi = np.percentile(img[brain].astype(np.float64), [0.5, 99.5])
        return np.where(brain, np.clip((img - lo) / (hi - lo) * 2 - 1, -1, 1), -1.0)
    lo, hi = np.percentile(img[normal].astype(np.float64), [0.5, 99.5])
    return np.where(brain, np.clip((img - lo) / (hi - lo) * 0.6 - 0.8, -1, 1), -1.0)


def _golden(
    subjects: list[dict[str, np.ndarray]], min_fraction: float = 0.5, legacy: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    n = len(subjects)
    total = np.zeros((len(SEQS), *SHAPE))
    count = np.zeros(SHAPE)
    brain_count = np.zeros(SHAPE)
    for a in subjects:
        healthy = a["brain"] & (a["seg"] == 0)
        for k, s in enumerate(SEQS):
            norm = _normalised(a[s], a["brain"], None if legacy else healthy)
            total[k] += np.where(healthy, norm, 0.0)
        count += healthy
        brain_count += a["brain"]
    with np.errstate(invalid="ignore"):
        mean = total / count
    atlas_brain = brain_count >= min_fraction * n
    return mean, atlas_brain


@pytest.fixture(scope="module")
def inputs() -> list[dict[str, np.ndarray]]:
    return [_subject_arrays(s) for s in range(4)]


@pytest.fixture(scope="module")
def atlas(inputs: list[dict[str, np.ndarray]]) -> Atlas:
    return build_atlas([_tio_subject(a, f"s{i}") for i, a in enumerate(inputs)], SEQS)


def test_atlas_is_the_mean_of_its_inputs_where_no_lesion_is(atlas: Atlas, inputs: list[dict[str, np.ndarray]]) -> None:
    mean, atlas_brain = _golden(inputs)
    assert atlas.data.shape == (2, *SHAPE) and atlas.data.dtype == torch.float32
    assert atlas.sequences == SEQS
    np.testing.assert_allclose(atlas.affine, AFFINE)
    np.testing.assert_array_equal(atlas.brain.numpy(), atlas_brain)
    defined = atlas_brain & np.isfinite(mean[0])
    assert defined.sum() > 100
    np.testing.assert_allclose(atlas.data.numpy()[:, defined], mean[:, defined], atol=1e-5)
    assert torch.all(atlas.data[:, ~atlas.brain] == -1.0)
    assert atlas.data.min() >= -1 and atlas.data.max() <= 1
    assert atlas.info["n_subjects"] == 4 and atlas.info["normalization"]["high"] == 99.5
    assert atlas.info["normalization"]["region"] == "normal-brain"


def test_atlas_with_the_legacy_normalisation_matches_the_old_contract(inputs: list[dict[str, np.ndarray]]) -> None:
    legacy = build_atlas(
        [_tio_subject(a, f"s{i}") for i, a in enumerate(inputs)], SEQS, normalization=Normalization.legacy()
    )
    mean, atlas_brain = _golden(inputs, legacy=True)
    defined = atlas_brain & np.isfinite(mean[0])
    np.testing.assert_allclose(legacy.data.numpy()[:, defined], mean[:, defined], atol=1e-5)
    assert legacy.info["normalization"]["region"] == "brain"


def test_lesion_voxels_are_excluded(atlas: Atlas, inputs: list[dict[str, np.ndarray]]) -> None:
    # voxel (3, 4, 2): lesion in subject 0 (and 3), healthy brain in subjects 1 and 2
    v = (3, 4, 2)
    assert inputs[0]["seg"][v] > 0 and inputs[1]["seg"][v] == 0 and inputs[2]["seg"][v] == 0
    healthy = [a for a in inputs if a["seg"][v] == 0 and a["brain"][v]]
    expected = np.mean([_normalised(a["t1"], a["brain"], a["brain"] & (a["seg"] == 0))[v] for a in healthy])
    with_lesion = np.mean([_normalised(a["t1"], a["brain"], a["brain"] & (a["seg"] == 0))[v] for a in inputs])
    assert float(atlas.data[0][v]) == pytest.approx(expected, abs=1e-5)
    assert abs(with_lesion - expected) > 0.1  # the lesions are bright: including them would show


def test_voxels_without_a_healthy_sample_take_the_nearest_healthy_value() -> None:
    subjects = [_subject_arrays(s) for s in range(2)]
    hole = (5, 7, 3)
    for a in subjects:
        a["seg"][:] = 0
        a["seg"][hole] = 1  # lesion in every subject, nowhere else
    atlas = build_atlas([_tio_subject(a, f"s{i}") for i, a in enumerate(subjects)], SEQS)
    assert atlas.info["n_filled_voxels"] == 1
    neighbours = [tuple(np.add(hole, d)) for d in np.vstack([np.eye(3, dtype=int), -np.eye(3, dtype=int)])]
    values = [atlas.data[(slice(None), *n)] for n in neighbours]
    filled = atlas.data[(slice(None), *hole)]
    assert any(torch.equal(filled, v) for v in values)
    assert len({tuple(v.tolist()) for v in values}) > 1  # the test can tell the neighbours apart


def test_build_from_plain_dicts_equals_build_from_subjects(atlas: Atlas, inputs: list[dict[str, np.ndarray]]) -> None:
    dicts = ({**a, "subject_id": f"s{i}", "affine": AFFINE} for i, a in enumerate(inputs))  # a generator
    other = build_atlas(dicts, SEQS, scheme="brats2021")
    torch.testing.assert_close(other.data, atlas.data)
    assert torch.equal(other.brain, atlas.brain)


def test_min_brain_fraction(inputs: list[dict[str, np.ndarray]]) -> None:
    strict = build_atlas([_tio_subject(a, f"s{i}") for i, a in enumerate(inputs)], SEQS, min_brain_fraction=1.0)
    np.testing.assert_array_equal(strict.brain.numpy(), np.logical_and.reduce([a["brain"] for a in inputs]))


def test_streaming_does_not_keep_subjects_loaded(tmp_path: Path, inputs: list[dict[str, np.ndarray]]) -> None:
    subjects = []
    for i, a in enumerate(inputs[:2]):
        paths = {}
        for key in (*SEQS, "seg"):
            paths[key] = tmp_path / f"s{i}_{key}.nii.gz"
            nib.save(nib.Nifti1Image(a[key].astype(np.float32), AFFINE), str(paths[key]))
        subjects.append(
            tio.Subject(
                t1=tio.ScalarImage(paths["t1"]),
                t2=tio.ScalarImage(paths["t2"]),
                seg=tio.LabelMap(paths["seg"]),
                subject_id=f"s{i}",
                scheme="brats2021",
            )
        )
    atlas = build_atlas(subjects, SEQS)
    assert not any(s[k]._loaded for s in subjects for k in (*SEQS, "seg"))
    np.testing.assert_allclose(atlas.affine, AFFINE, atol=1e-5)


def test_off_grid_subject_is_an_error(inputs: list[dict[str, np.ndarray]]) -> None:
    good = [_tio_subject(inputs[0], "s0")]
    shifted = AFFINE.copy()
    shifted[1, 3] += 1.0
    with pytest.raises(ValueError, match=r"subject 'moved' is not on the atlas grid: affine.*resample/register"):
        build_atlas([*good, _tio_subject(inputs[1], "moved", shifted)], SEQS)
    small = {k: v[:, :, :5] for k, v in inputs[1].items()}
    with pytest.raises(ValueError, match=r"subject 'small'.*shape \(10, 12, 5\) vs atlas shape \(10, 12, 6\)"):
        build_atlas([*good, _tio_subject(small, "small")], SEQS)


def test_build_errors(inputs: list[dict[str, np.ndarray]]) -> None:
    with pytest.raises(ValueError, match="no subjects"):
        build_atlas([], SEQS)
    with pytest.raises(ValueError, match="pass build_atlas"):
        build_atlas([{**inputs[0], "subject_id": "x"}], SEQS)  # labels but no scheme
    bad = dict(inputs[0], seg=inputs[0]["seg"].copy())
    bad["seg"][5, 5, 2] = 3
    with pytest.raises(ValueError, match=r"labels \{3\} not in scheme 'brats2021'"):
        build_atlas([bad], SEQS, scheme="brats2021")


# ---------------------------------------------------------------------------------------------- the Atlas object
def _ramp_atlas(depth: int = 5) -> Atlas:
    data = torch.zeros(3, 4, 3, depth)
    for s in range(3):
        for z in range(depth):
            data[s, :, :, z] = 10 * s + z
    return Atlas(data / 100, np.eye(4), ("a", "b", "c"), torch.ones(4, 3, depth, dtype=torch.bool))


def test_stack_channel_order_and_clamping() -> None:
    atlas = _ramp_atlas()
    got = (atlas.stack(2)[:, 0, 0] * 100).round().tolist()
    assert got == [1, 2, 3, 11, 12, 13, 21, 22, 23]
    assert (atlas.stack(0)[:, 0, 0] * 100).round().tolist() == [0, 0, 1, 10, 10, 11, 20, 20, 21]
    assert (atlas.stack(4)[:, 0, 0] * 100).round().tolist() == [3, 4, 4, 13, 14, 14, 23, 24, 24]
    assert atlas.stack(np.int64(2)).shape == (9, 4, 3)
    batch = atlas.stack(torch.tensor([0, 2, 4]))
    assert batch.shape == (3, 9, 4, 3)
    for i, z in enumerate((0, 2, 4)):
        assert torch.equal(batch[i], atlas.stack(z))
    assert torch.equal(atlas.stack([1, 3]), torch.stack([atlas.stack(1), atlas.stack(3)]))
    with pytest.raises(IndexError, match="out of range"):
        atlas.stack(5)
    with pytest.raises(IndexError, match="out of range"):
        atlas.stack([-1])


def test_select_reorders_channels() -> None:
    atlas = _ramp_atlas()
    sel = atlas.select(["c", "a"])
    assert sel.sequences == ("c", "a")
    assert torch.equal(sel.data[0], atlas.data[2]) and torch.equal(sel.data[1], atlas.data[0])
    with pytest.raises(ValueError, match=r"no sequence \['x'\]"):
        atlas.select(["x"])


def test_check_grid() -> None:
    atlas = _ramp_atlas()
    atlas.check_grid((4, 3, 5), np.eye(4) + 1e-6)
    atlas.check_grid((1, 4, 3, 5), np.eye(4))  # a TorchIO (C, X, Y, Z) shape
    with pytest.raises(ValueError, match=r"case 7 is not on the atlas grid: shape \(4, 3, 6\) vs atlas shape"):
        atlas.check_grid((4, 3, 6), np.eye(4), "case 7")
    with pytest.raises(ValueError, match="affine"):
        atlas.check_grid((4, 3, 5), np.diag([1.0, 1.0, 2.0, 1.0]))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="channels but sequences"):
        Atlas(torch.zeros(2, 3, 3, 3), np.eye(4), ("a",), torch.ones(3, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="brain shape"):
        Atlas(torch.zeros(1, 3, 3, 3), np.eye(4), ("a",), torch.ones(3, 3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        Atlas(torch.full((1, 3, 3, 3), float("nan")), np.eye(4), ("a",), torch.ones(3, 3, 3, dtype=torch.bool))


def test_save_load_round_trip(tmp_path: Path, atlas: Atlas) -> None:
    path = atlas.save(tmp_path / "atlas_dir")
    assert path == tmp_path / "atlas_dir" / "atlas.safetensors"
    loaded = Atlas.load(tmp_path / "atlas_dir")
    assert torch.equal(loaded.data, atlas.data) and torch.equal(loaded.brain, atlas.brain)
    assert loaded.brain.dtype == torch.bool and loaded.affine.dtype == np.float64
    np.testing.assert_array_equal(loaded.affine, atlas.affine)
    assert loaded.sequences == atlas.sequences and loaded.info == atlas.info
    assert torch.equal(Atlas.load(path).data, atlas.data)  # the file itself works too
    image = loaded.image()
    assert image.shape == (2, *SHAPE)
    np.testing.assert_allclose(image.affine, AFFINE)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="build_atlas"):
        Atlas.load(tmp_path)
    save_file(
        {"data": torch.zeros(1, 2, 2, 2), "affine": torch.eye(4, dtype=torch.float64), "extra": torch.zeros(1)},
        str(tmp_path / "atlas.safetensors"),
        metadata={"sequences": '["a"]'},
    )
    with pytest.raises(ValueError, match=r"missing \['brain'\], unexpected \['extra'\]"):
        Atlas.load(tmp_path)
