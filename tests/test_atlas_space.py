"""Whole-image painting of subjects in the atlas's space on another grid (1 mm, cropped): resampled to the atlas
grid, painted and resampled back; subjects of unknown or another space refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_dataset import _case
from tiny_model import AFFINE, SEQS, save_tiny_weights

from samraug.atlas_space import check_space, normalize_space, weights_space
from samraug.augment.painters import SAMRPainter
from samraug.grid import crop_affine, resample
from samraug.hub import BUNDLED_LOCAL_WEIGHTS, BUNDLED_WEIGHTS, BUNDLED_WHOLE_WEIGHTS, read_config
from samraug.labels import get_scheme
from samraug.synthesis import Synthesizer

SCHEME = get_scheme("brats2021")
AFFINE_1MM = np.eye(4)  # 1 mm voxel 2i is exactly the 2 mm atlas voxel i (both grids start at the origin)


@pytest.fixture(scope="module")
def mni(tmp_path_factory: pytest.TempPathFactory) -> Synthesizer:
    folder = save_tiny_weights(tmp_path_factory.mktemp("mni_weights"), atlas_space="mni152")
    return Synthesizer(folder, device="cpu")


def _subject(i: int) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray, np.ndarray]:
    images, seg, brain = _case(i)
    label = seg.numpy()
    return {s: images[k] for k, s in enumerate(SEQS)}, label, np.roll(label, 1, axis=0), brain.numpy()


def _to_1mm(images, before, after, brain):
    shape = (64, 64, 16)

    def img(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(resample(x.numpy(), AFFINE, shape, AFFINE_1MM, order=1))

    def lab(x: np.ndarray) -> np.ndarray:
        return resample(x, AFFINE, shape, AFFINE_1MM, order=0)

    return {k: img(v) for k, v in images.items()}, lab(before), lab(after), lab(brain)


def test_config_names_the_space_and_legacy_folders_are_unknown(mni: Synthesizer, tiny_weights) -> None:
    assert read_config(mni.weights)["atlas_space"] == "MNI152"
    assert weights_space(mni.config) == "MNI152"
    assert "atlas_space" not in read_config(tiny_weights)
    assert weights_space(read_config(tiny_weights)) is None
    # the bundled whole-image folder names its space; the default (local weights) has no atlas, so no space
    assert weights_space(read_config(BUNDLED_WHOLE_WEIGHTS)) == "MNI152"
    assert BUNDLED_WEIGHTS == BUNDLED_LOCAL_WEIGHTS
    assert weights_space(read_config(BUNDLED_LOCAL_WEIGHTS)) is None and weights_space({}) is None
    assert normalize_space(" sri24") == "SRI24"
    with pytest.raises(ValueError, match="non-empty string"):
        normalize_space("  ")


def test_a_1mm_subject_is_painted_on_the_atlas_grid_and_mapped_back(mni: Synthesizer) -> None:
    images, before, after, brain = _subject(2)
    ref, ref_rec = SAMRPainter(mni).paint(images, before, after, brain, AFFINE, SCHEME)  # on the atlas grid
    assert "resampled" not in ref_rec
    images1, before1, after1, brain1 = _to_1mm(images, before, after, brain)
    kept = (before1.copy(), after1.copy(), brain1.copy())
    out, rec = SAMRPainter(mni, space="MNI152").paint(images1, before1, after1, brain1, AFFINE_1MM, SCHEME)
    assert rec["resampled"] == {"space": "MNI152", "shape": [64, 64, 16], "atlas_shape": [32, 32, 8]}
    for a, b in zip(kept, (before1, after1, brain1), strict=True):
        assert np.array_equal(a, b)  # the label maps and the brain are the caller's, untouched
    b1 = torch.from_numpy(brain1)
    for k in SEQS:
        assert out[k].shape == images1[k].shape and out[k].dtype == images1[k].dtype
        assert torch.equal(out[k][~b1], images1[k][~b1])  # outside the brain: real
        assert not torch.equal(out[k][b1], images1[k][b1])  # the whole brain is repainted
        # the 1 mm voxels that are atlas voxels hold exactly the on-grid painting (brain voxels)
        sub, sub_brain = out[k][::2, ::2, ::2], torch.from_numpy(brain1[::2, ::2, ::2])
        assert torch.allclose(sub[sub_brain], ref[k][sub_brain], atol=1e-4)


def test_a_cropped_subject_is_painted_like_the_full_one(mni: Synthesizer) -> None:
    images, before, after, brain = _subject(1)
    ref, _ = SAMRPainter(mni).paint(images, before, after, brain, AFFINE, SCHEME)
    box = (slice(2, 30), slice(3, 29), slice(1, 8))  # the whole brain box, cropped tightly
    crop = {k: v[box].clone() for k, v in images.items()}
    affine = crop_affine(AFFINE, (2, 3, 1))
    out, rec = SAMRPainter(mni, space="MNI152").paint(crop, before[box], after[box], brain[box], affine, SCHEME)
    assert rec["resampled"]["shape"] == [28, 26, 7]
    for k in SEQS:
        assert out[k].shape == crop[k].shape
        assert torch.allclose(out[k], ref[k][box], atol=1e-4)


def test_unknown_or_other_space_is_refused_with_the_way_out(mni: Synthesizer, tiny_weights: str) -> None:
    images, before, after, brain = _subject(0)
    args = (*_to_1mm(images, before, after, brain)[:4],)
    imgs, b, a, br = args
    with pytest.raises(ValueError, match=r"space is unknown.*pass space='MNI152'.*local mode.*register"):
        SAMRPainter(mni).paint(imgs, b, a, br, AFFINE_1MM, SCHEME)
    with pytest.raises(ValueError, match=r"declared in space 'SRI24'.*'MNI152'.*local mode"):
        SAMRPainter(mni, space="SRI24").paint(imgs, b, a, br, AFFINE_1MM, SCHEME)
    legacy = Synthesizer(tiny_weights, device="cpu")
    with pytest.raises(ValueError, match=r"do not name their atlas's space.*local mode"):
        SAMRPainter(legacy, space="MNI152").paint(imgs, b, a, br, AFFINE_1MM, SCHEME)
    with pytest.raises(ValueError, match="SRI24"):
        check_space("sri24", "MNI152")
    assert check_space("mni152", "MNI152") == "MNI152"


def test_a_subject_far_outside_the_atlas_is_refused(mni: Synthesizer) -> None:
    images, before, after, brain = _subject(0)
    moved = AFFINE.copy()
    moved[:3, 3] = 500.0  # declared MNI152 but nowhere near the atlas: not really in that space
    with pytest.raises(ValueError, match="does not overlap the atlas grid"):
        SAMRPainter(mni, space="MNI152").paint(images, before, after, brain, moved, SCHEME)


def test_save_weights_checks_atlas_space(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="template name"):
        save_tiny_weights(tmp_path / "bad", atlas_space=" ")
    folder = save_tiny_weights(tmp_path / "ok", atlas_space="SRI24")
    assert json.loads((Path(folder) / "config.json").read_text())["atlas_space"] == "SRI24"


def _tio_1mm(seed: int):
    import torchio as tio

    images, before, _, brain = _subject(seed)
    images1, before1, _, brain1 = _to_1mm(images, before, before, brain)
    tio_images = {k: tio.ScalarImage(tensor=v[None], affine=AFFINE_1MM) for k, v in images1.items()}
    seg = tio.LabelMap(tensor=torch.from_numpy(before1.astype(np.uint8))[None], affine=AFFINE_1MM)
    return tio.Subject(**tio_images, seg=seg, scheme="brats2021"), brain1


def test_the_transform_paints_a_1mm_subject_declared_in_the_atlas_space(mni: Synthesizer) -> None:
    from samraug.transforms import SAMRSynthesize

    subject, brain1 = _tio_1mm(0)
    real = {k: subject[k].data.clone() for k in SEQS}
    torch.manual_seed(0)
    out = SAMRSynthesize(ratio=1.0, weights=mni, scheme="brats2021", space="MNI152", device="cpu")(subject)
    b = torch.from_numpy(brain1)
    for k in SEQS:
        assert out[k].data.shape == real[k].shape and np.allclose(out[k].affine, AFFINE_1MM)
        assert torch.equal(out[k].data[0][~b], real[k][0][~b]) and not torch.equal(out[k].data, real[k])
    seg = out["seg"]
    assert seg.data.shape == (1, 64, 64, 16) and np.allclose(seg.affine, AFFINE_1MM)
    assert set(np.unique(seg.data.numpy())) <= {0, 1, 2, 4}  # a brats2021 label map on the subject's own grid
    assert (seg.data[0] != 0).sum() > 0
    subject, _ = _tio_1mm(0)
    with pytest.raises(ValueError, match=r"space is unknown.*local mode"):
        SAMRSynthesize(ratio=1.0, weights=mni, scheme="brats2021", device="cpu")(subject)


def test_the_dataset_paints_1mm_items_declared_in_the_atlas_space(mni: Synthesizer) -> None:
    from samraug.dataset import SAMRAugmentedDataset

    items = [_tio_1mm(1), _tio_1mm(2)]
    mixed = SAMRAugmentedDataset([subj for subj, _ in items], n_synthetic=1, weights=mni, space="MNI152")
    out = mixed[2]
    source, brain1 = items[mixed.source_of(2)]
    b = torch.from_numpy(brain1)
    for k in SEQS:
        assert out[k].data.shape == (1, 64, 64, 16) and np.allclose(out[k].affine, AFFINE_1MM)
        assert torch.equal(out[k].data[0][~b], source[k].data[0][~b]) and not torch.equal(out[k].data, source[k].data)
    assert out["seg"].data.shape == (1, 64, 64, 16) and np.allclose(out["seg"].affine, AFFINE_1MM)
    # dict items with an affine, and their refusals
    images, before, _, brain = _subject(0)
    images1, before1, _, _ = _to_1mm(images, before, before, brain)
    item = {"image": torch.stack([images1[k] for k in SEQS]), "label": torch.from_numpy(before1), "affine": AFFINE_1MM}
    kw = {
        "n_synthetic": 1,
        "weights": mni,
        "scheme": "brats2021",
        "sequence_map": dict(zip(SEQS, range(4), strict=True)),
    }
    made = SAMRAugmentedDataset([item], space="MNI152", **kw)[1]
    assert made["image"].shape == item["image"].shape and made["label"].shape == item["label"].shape
    assert not torch.equal(made["image"], item["image"])
    with pytest.raises(ValueError, match=r"space is unknown.*local mode"):
        SAMRAugmentedDataset([item], **kw)
    with pytest.raises(ValueError, match="no affine"):
        SAMRAugmentedDataset([(item["image"], item["label"])], space="MNI152", **kw)
