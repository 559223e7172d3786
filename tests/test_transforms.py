"""SAMRSynthesize / SAMRSynthesizeFixed: ratio, history replay, schemes, geometry, scales, loaders, errors."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torchio as tio
from tiny_model import AFFINE, SEQS, SHAPE, subject_range, tiny_brain
from torch.utils.data import DataLoader

from samraug.editing import EditPolicy, LesionEditor
from samraug.synthesis import Synthesizer
from samraug.transforms import SAMRSynthesize, SAMRSynthesizeFixed

NO_EDIT = EditPolicy(p_remove=0, p_swap=0, p_mirror=0, p_scale=0, p_rotate=0, p_perturb=0, p_move=0)


def _brain(z: slice = slice(1, 7)) -> torch.Tensor:
    return tiny_brain(z)


@pytest.fixture(scope="module")
def synth(tiny_weights: str) -> Synthesizer:
    """The tiny test model, loaded through the real resolver."""
    return Synthesizer(tiny_weights, device="cpu")


def make_subject(
    seed: int = 0,
    shift: int = 0,
    keys: tuple[str, ...] = SEQS,
    scheme: str | None = "brats2021",
    thin: bool = False,
):
    """A brats2021 subject on the atlas grid: NCR (1) core, ET (4) rim, edema (2); images 0 outside the brain.

    ``thin``: brain and lesion in slices 3 and 4 only (two slices to synthesize: fast).
    """
    g = torch.Generator().manual_seed(seed)
    brain = _brain(slice(3, 5) if thin else slice(1, 7))
    seg = torch.zeros(SHAPE, dtype=torch.uint8)
    zl = slice(3, 5) if thin else slice(2, 6)
    seg[9 + shift : 19 + shift, 10:19, zl] = 2
    seg[11 + shift : 17 + shift, 12:17, zl] = 4
    seg[13 + shift : 15 + shift, 13:16, 3:5] = 1
    images = {
        k: tio.ScalarImage(
            tensor=torch.where(brain, 40.0 * (i + 1) + 30 * torch.rand(SHAPE, generator=g), 0.0)[None], affine=AFFINE
        )
        for i, k in enumerate(keys)
    }
    extra = {"scheme": scheme} if scheme is not None else {}
    return tio.Subject(**images, seg=tio.LabelMap(tensor=seg[None], affine=AFFINE), **extra)


def _applied(subject: tio.Subject) -> list[bool]:
    return [t.synthesize for t in subject.history if isinstance(t, SAMRSynthesizeFixed)]


def test_fraction_matches_ratio(synth: Synthesizer) -> None:
    """400 draws with ratio 0.25: the synthetic count is within 4 binomial standard deviations."""
    torch.manual_seed(0)
    transform = SAMRSynthesize(ratio=0.25, weights=synth, policy=NO_EDIT)
    subject = make_subject(thin=True)
    n, hits = 400, 0
    for _ in range(n):
        out = transform(subject)
        flags = _applied(out)
        assert len(flags) == 1
        hits += flags[0]
        if not flags[0]:  # not applied: the subject is unchanged
            assert torch.equal(out["t1n"].data, subject["t1n"].data)
    sigma = math.sqrt(n * 0.25 * 0.75)
    assert abs(hits - 0.25 * n) <= 4 * sigma, hits


def test_history_reproduces_sample_exactly(synth: Synthesizer) -> None:
    torch.manual_seed(5)
    subject = make_subject()
    transform = tio.Compose([tio.RandomFlip(axes=(1,), flip_probability=1.0), SAMRSynthesize(ratio=1.0, weights=synth)])
    out = transform(subject)
    history = out.get_composed_history()
    assert [t.name for t in history] == ["Flip", "SAMRSynthesizeFixed"]
    fixed = history[1]
    for name in fixed.args_names:  # recorded arguments are plain values
        assert isinstance(getattr(fixed, name), (dict, list, str, int, float, bool, type(None)))
    assert fixed.edit["applied"]
    again = history(subject)
    for key in [*SEQS, "seg"]:
        assert torch.equal(again[key].data, out[key].data), key
    assert not torch.equal(out["t1n"].data, subject["t1n"].data)


def test_scheme_dtype_geometry_and_sublabels(synth: Synthesizer) -> None:
    subject = make_subject()
    torch.manual_seed(1)
    out = SAMRSynthesize(ratio=1.0, weights=synth, policy=NO_EDIT)(subject)
    assert torch.equal(out["seg"].data, subject["seg"].data)  # unedited: ET (4) and NCR (1) kept exactly
    torch.manual_seed(2)
    edited = SAMRSynthesize(ratio=1.0, weights=synth, policy=EditPolicy(p_move=1.0, p_swap=0, p_remove=0))(subject)
    seg = edited["seg"].data
    assert seg.dtype == torch.uint8
    assert set(torch.unique(seg).tolist()) <= {0, 1, 2, 4}
    assert {1, 4} <= set(torch.unique(seg).tolist())  # sub-labels travel with the lesion
    assert not torch.equal(seg, subject["seg"].data)
    for key in [*SEQS, "seg"]:
        assert edited[key].shape == subject[key].shape
        np.testing.assert_array_equal(edited[key].affine, subject[key].affine)
        assert edited[key].spacing == subject[key].spacing


def test_intensities_in_subject_scale(synth: Synthesizer) -> None:
    """Each synthetic sequence is the model output mapped with the real sequence's brain p0.5 / p99.5."""
    subject = make_subject()
    torch.manual_seed(3)
    out = SAMRSynthesize(ratio=1.0, weights=synth, policy=NO_EDIT)(subject)
    brain = _brain() | (subject["seg"].data[0] > 0)
    samr = torch.where(brain, 1, 0)
    seg = subject["seg"].data[0].long()
    samr = torch.where(seg == 2, 2, torch.where(seg > 0, 4, samr))
    model = synth.synthesize_volume(samr, affine=AFFINE, output="model")
    for key in SEQS:
        real = subject[key].data[0].numpy()
        low, high = subject_range(real, brain.numpy(), seg.numpy() > 0)
        got = out[key].data[0]
        expected = (model[key] + 1) / 2 * (high - low) + low
        torch.testing.assert_close(got[brain], expected[brain].float(), rtol=1e-4, atol=1e-3)
        assert torch.all(got[~brain] == 0)
        assert low - 1e-3 <= float(got[brain].min()) and float(got[brain].max()) <= high + 1e-3


def test_not_applied_is_unchanged(synth: Synthesizer) -> None:
    subject = make_subject()
    out = SAMRSynthesize(ratio=0.0, weights=synth)(subject)
    assert _applied(out) == [False]
    for key in [*SEQS, "seg"]:
        assert torch.equal(out[key].data, subject[key].data)
    assert torch.equal(out.get_composed_history()(subject)["t2f"].data, subject["t2f"].data)


def test_sequence_map_and_partial_subjects(synth: Synthesizer) -> None:
    keys = ("T1", "T1GD", "T2", "FLAIR")
    subject = make_subject(keys=keys)
    with pytest.raises(ValueError, match=r"none of the model's sequences.*'T1'.*sequence_map="):
        SAMRSynthesize(ratio=1.0, weights=synth)(subject)
    mapping = {"t1n": "T1", "t2f": "FLAIR"}
    torch.manual_seed(4)
    with pytest.warns(UserWarning, match="leaves the images"):
        out = SAMRSynthesize(ratio=1.0, weights=synth, sequence_map=mapping, policy=NO_EDIT)(subject)
    assert not torch.equal(out["T1"].data, subject["T1"].data)
    assert not torch.equal(out["FLAIR"].data, subject["FLAIR"].data)
    assert torch.equal(out["T2"].data, subject["T2"].data)  # only mapped keys are replaced
    again = out.get_composed_history()(subject)
    assert torch.equal(again["FLAIR"].data, out["FLAIR"].data)


def test_clear_errors(synth: Synthesizer) -> None:
    t = SAMRSynthesize(ratio=1.0, weights=synth)
    no_label = tio.Subject(t1n=make_subject()["t1n"], scheme="brats2021")
    with pytest.raises(ValueError, match="no label map 'seg'"):
        t(no_label)
    with pytest.raises(ValueError, match="cannot tell which label map"):
        SAMRSynthesize(ratio=1.0, weights=synth, label_key=None)(no_label)
    bad = make_subject()
    bad["seg"].set_data(torch.where(bad["seg"].data == 1, 3, bad["seg"].data))  # 3 is not a brats2021 label
    with pytest.raises(ValueError, match=r"labels \{3\} not in scheme 'brats2021'"):
        t(bad)
    with pytest.raises(ValueError, match="label scheme is unknown"):
        t(make_subject(scheme=None))
    off = make_subject()
    for key in [*SEQS, "seg"]:
        off[key] = type(off[key])(tensor=off[key].data[:, :30], affine=AFFINE)
    with pytest.raises(ValueError, match="not on the atlas grid"):
        t(off)
    with pytest.raises(ValueError, match="ratio"):
        SAMRSynthesize(ratio=1.5, weights=synth)


def test_donor_swap_replays(synth: Synthesizer) -> None:
    donor = make_subject(shift=6)["seg"]
    torch.manual_seed(6)
    t = SAMRSynthesize(ratio=1.0, weights=synth, donors=[donor], policy=EditPolicy(p_swap=1.0, p_remove=0.0))
    subject = make_subject()
    out = t(subject)
    fixed = out.get_composed_history()[0]
    assert fixed.donors.startswith("donors:")
    assert "swap" in str(fixed.edit)
    assert torch.equal(out.get_composed_history()(subject)["seg"].data, out["seg"].data)


def test_workers_differ_and_run_reproduces(synth: Synthesizer) -> None:
    """SubjectsDataset under a DataLoader with 2 workers: edits differ per item, the run repeats from the seed."""
    subjects = [make_subject() for _ in range(4)]
    ds = tio.SubjectsDataset(subjects, transform=SAMRSynthesize(ratio=1.0, weights=synth))

    def run() -> list[torch.Tensor]:
        torch.manual_seed(123)
        loader = tio.SubjectsLoader(ds, batch_size=1, num_workers=2)
        return [(b["seg"]["data"][0], b["t2w"]["data"][0]) for b in loader]

    first, second = run(), run()
    for (s1, i1), (s2, i2) in zip(first, second, strict=True):
        assert torch.equal(s1, s2) and torch.equal(i1, i2)
    segs = [s for s, _ in first]
    assert any(not torch.equal(segs[0], s) for s in segs[1:])  # same input subject, different edits


def test_before_patch_sampling_in_queue(synth: Synthesizer) -> None:
    subjects = [make_subject(seed=i) for i in range(2)]
    ds = tio.SubjectsDataset(subjects, transform=SAMRSynthesize(ratio=0.5, weights=synth))
    torch.manual_seed(0)
    queue = tio.Queue(
        ds,
        max_length=4,
        samples_per_volume=2,
        sampler=tio.data.UniformSampler((16, 16, 4)),
        num_workers=2,
        shuffle_subjects=False,
    )
    patches = list(DataLoader(queue, batch_size=2, num_workers=0, collate_fn=lambda b: b))
    assert sum(len(b) for b in patches) == 4
    for batch in patches:
        for patch in batch:
            assert patch["t1n"].shape == (1, 16, 16, 4) and patch["seg"].shape == (1, 16, 16, 4)
            assert set(torch.unique(patch["seg"].data).tolist()) <= {0, 1, 2, 4}


def test_pickles_for_spawned_workers(synth: Synthesizer) -> None:
    """Spawned DataLoader workers receive the transform pickled (label schemes and editors included)."""
    editor = LesionEditor("brats2021", min_fragment=4, policy=EditPolicy(p_mirror=1.0))
    for t in (
        SAMRSynthesize(ratio=1.0, weights=synth, scheme="brats2021", policy=NO_EDIT),
        SAMRSynthesize(ratio=1.0, weights=synth, editor=editor, donors=[make_subject(shift=4)["seg"]]),
    ):
        copy = pickle.loads(pickle.dumps(t))
        torch.manual_seed(0)
        a = t(make_subject())
        torch.manual_seed(0)
        b = copy(make_subject())
        assert torch.equal(a["seg"].data, b["seg"].data) and torch.equal(a["t1c"].data, b["t1c"].data)
