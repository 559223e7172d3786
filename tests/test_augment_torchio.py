"""TorchIO pipelines: load_brats lists as items, tio.Queue over SAMRAugmentedDataset, deforming-history refusal."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from test_dataset import SubjectDS
from test_transforms import NO_EDIT, make_subject
from tiny_model import AFFINE, SEQS, SHAPE, tiny_brain
from torch.utils.data import DataLoader

from samraug.data.brats import load_brats
from samraug.dataset import SAMRAugmentedDataset, SynthesizingQueue
from samraug.synthesis import Synthesizer
from samraug.transforms import SAMRSynthesize


@pytest.fixture(scope="module")
def synth(tiny_weights: str) -> Synthesizer:
    return Synthesizer(tiny_weights, device="cpu")


def _write_cases(root: Path, n: int = 2) -> None:
    brain = tiny_brain().numpy()
    for i in range(n):
        cid = f"BraTS-GLI-0000{i}-000"
        d = root / cid
        d.mkdir(parents=True)
        rng = np.random.default_rng(i)
        for k, s in enumerate(SEQS):
            img = np.where(brain, rng.uniform(10, 100, SHAPE) * (k + 1), 0.0).astype(np.float32)
            nib.save(nib.Nifti1Image(img, AFFINE), str(d / f"{cid}-{s}.nii.gz"))
        seg = np.zeros(SHAPE, np.uint8)
        seg[10 + i : 18 + i, 10:18, 2:6] = 2
        seg[12 + i : 16 + i, 12:16, 3:5] = 3
        nib.save(nib.Nifti1Image(seg, AFFINE), str(d / f"{cid}-seg.nii.gz"))


def test_load_brats_list_works_as_items(synth: Synthesizer, tmp_path: Path) -> None:
    _write_cases(tmp_path)
    subjects = load_brats(tmp_path)
    mixed = SAMRAugmentedDataset(subjects, n_synthetic=2, weights=synth)
    real, fake = mixed[0], mixed[2]
    assert isinstance(fake, tio.Subject) and isinstance(real, tio.Subject)
    for key in SEQS:
        assert fake[key].data.shape == (1, *SHAPE) and fake[key].data.dtype == torch.float32
        assert np.allclose(fake[key].affine, AFFINE)
    src = subjects[mixed.source_of(2)]
    assert set(torch.unique(fake["seg"].data).tolist()) <= {0, 1, 2, 3}
    assert not torch.equal(fake["t1n"].data, src["t1n"].data)  # painted
    again = fake.get_composed_history()(subjects[mixed.source_of(2)])  # the record replays voxel-exactly
    assert torch.equal(again["t2f"].data, fake["t2f"].data) and torch.equal(again["seg"].data, fake["seg"].data)


@pytest.mark.parametrize("batched", [False, True])
def test_queue_draws_patches_from_the_dataset(synth: Synthesizer, batched: bool) -> None:
    mixed = SAMRAugmentedDataset(SubjectDS(), n_synthetic=2, weights=synth, batched=batched)
    kind = SynthesizingQueue if batched else tio.Queue
    queue = kind(
        mixed,
        max_length=6,
        samples_per_volume=2,
        sampler=tio.data.UniformSampler((16, 16, 4)),
        num_workers=0,
        shuffle_subjects=False,
        shuffle_patches=False,
    )
    assert len(queue) == 2 * len(mixed)
    patches = list(DataLoader(queue, batch_size=2, num_workers=0, collate_fn=lambda b: b))
    flat = [p for b in patches for p in b]
    assert len(flat) == 2 * len(mixed)
    for patch in flat:
        assert patch["t1n"].shape == (1, 16, 16, 4) and patch["seg"].shape == (1, 16, 16, 4)
    synthetic = [p for p in flat if any(t.name == "SAMRSynthesizeFixed" for t in p.history)]
    assert len(synthetic) == 4  # 2 synthetic subjects x 2 patches


def test_plain_queue_refuses_the_batched_path(synth: Synthesizer) -> None:
    mixed = SAMRAugmentedDataset(SubjectDS(), n_synthetic=1, weights=synth, batched=True)
    with pytest.raises(TypeError, match="SynthesizingQueue"):
        mixed.dry_iter()


@pytest.mark.parametrize(
    "deform",
    [tio.RandomAffine(degrees=10), tio.RandomElasticDeformation(max_displacement=2), tio.RandomMotion()],
)
def test_deforming_transform_before_whole_image_synthesis_is_refused(synth: Synthesizer, deform) -> None:
    transform = tio.Compose([deform, SAMRSynthesize(ratio=1.0, weights=synth, policy=NO_EDIT)])
    with pytest.raises(ValueError, match="after SAMRSynthesize"):
        transform(make_subject(thin=True))


def test_flips_and_grid_keeping_transforms_before_synthesis_are_fine(synth: Synthesizer) -> None:
    transform = tio.Compose(
        [tio.RandomFlip(axes=("LR",), flip_probability=1.0), SAMRSynthesize(ratio=1.0, weights=synth, policy=NO_EDIT)]
    )
    out = transform(make_subject(thin=True))
    assert [t.name for t in out.history] == ["Flip", "SAMRSynthesizeFixed"]


def test_transform_with_another_painter_and_mode_rules(synth: Synthesizer) -> None:
    t = SAMRSynthesize(ratio=1.0, weights=synth, painter="labels-to-image")
    subject = make_subject(thin=True)
    torch.manual_seed(1)
    a = t(subject)
    torch.manual_seed(1)
    b = t(subject)
    assert torch.equal(a["t1n"].data, b["t1n"].data) and not torch.equal(a["t1n"].data, subject["t1n"].data)
    with pytest.raises(ValueError, match="belongs to the SAMR painter"):
        SAMRSynthesize(weights=synth, painter="labels-to-image", mode="whole")
    with pytest.raises(ValueError, match="SAMRAugmentedDataset"):
        SAMRSynthesize(weights=synth, painter="copy-paste")
    # a painter that keeps the subject's anatomy accepts a deforming transform before it
    deformed = tio.Compose([tio.RandomAffine(degrees=5), t])(make_subject(thin=True))
    assert deformed["t1n"].data.shape == subject["t1n"].data.shape
