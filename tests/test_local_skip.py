"""A local painter that skips a sample (its region has too little room to the image edge) leaves the item real in
every front-end: the images *and* the label map, with the reason recorded. Never an edited lesion label over
unpainted tissue (the augmentation benchmark found such volumes in its pools before this was fixed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchio as tio
from test_dataset import _case
from tiny_model import AFFINE, SEQS

from samraug.augment import augment_view, subject_view
from samraug.augment.painters import SAMRPainter
from samraug.dataset import SAMRAugmentedDataset
from samraug.editing import EditPolicy, LesionEditor
from samraug.labels import get_scheme
from samraug.synthesis import Synthesizer
from samraug.transforms import SAMRSynthesize, SAMRSynthesizeFixed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

SCHEME = get_scheme("brats2021")
#: Every sample edits (a left-right mirror: it keeps the lesion's slices), so the edited label map differs from the
#: real one.
MIRROR = EditPolicy(p_remove=0, p_swap=0, p_mirror=1.0, p_scale=0, p_rotate=0, p_perturb=0, p_move=0)


@pytest.fixture(scope="module")
def synth(tiny_local_weights: str) -> Synthesizer:
    return Synthesizer(tiny_local_weights, device="cpu")


def _subject(i: int) -> tio.Subject:
    images, seg, brain = _case(i)
    return tio.Subject(
        **{s: tio.ScalarImage(tensor=images[k : k + 1], affine=AFFINE) for k, s in enumerate(SEQS)},
        seg=tio.LabelMap(tensor=seg[None], affine=AFFINE),
        brain=tio.LabelMap(tensor=brain[None].to(torch.uint8), affine=AFFINE),
    )


def _painters(synth: Synthesizer) -> dict[str, SAMRPainter]:
    # The tiny case is 8 slices deep and its lesion spans 4 of them: the default margin takes the region to the
    # image edge (skipped), a 0.5 mm margin leaves it the room it needs (painted).
    return {"skips": SAMRPainter(synth), "paints": SAMRPainter(synth, margin_mm=0.5, feather_mm=1.0)}


def _same(a: tio.Subject, b: tio.Subject, keys: tuple[str, ...]) -> bool:
    return all(torch.equal(a[k].data, b[k].data) for k in keys)


@pytest.mark.parametrize("which", ["skips", "paints"])
def test_augment_view_keeps_the_real_label_when_the_painter_skips(synth: Synthesizer, which: str) -> None:
    painter = _painters(synth)[which]
    subject = _subject(0)
    view = subject_view(
        subject, label_key="seg", brain_key="brain", mapping={s: s for s in SEQS}, sequences=synth.sequences
    )
    item = _subject(0)
    done = augment_view(
        view,
        item=item,
        scheme=SCHEME,
        synthesizer=synth,
        editor=LesionEditor(SCHEME, policy=MIRROR),
        generator=torch.Generator().manual_seed(3),
        painter=painter,
        paint_seed=4,
    )
    real_label = subject["seg"].data[0].numpy()
    if which == "skips":
        assert "edge" in done.record["paint"]["skipped"] and done.record["paint"]["label"] == "unedited"
        assert done.record["edit"]["applied"]  # the edit was drawn; the painter could not paint it
        assert _same(done.item, subject, (*SEQS, "seg"))
        assert np.array_equal(done.label, real_label)
    else:  # the counterpart: a painted sample carries the edited label and repainted images
        assert done.record["paint"]["skipped"] is None
        assert not np.array_equal(done.item["seg"].data[0].numpy(), real_label)
        assert np.array_equal(done.item["seg"].data[0].numpy(), done.label)
        assert not _same(done.item, subject, SEQS)


def test_torchio_transform_records_the_skip_and_replays_it(synth: Synthesizer) -> None:
    subject = _subject(1)
    t = SAMRSynthesize(ratio=1.0, weights=synth, scheme="brats2021", policy=MIRROR, label_key="seg")
    out = t(subject)
    assert _same(out, subject, (*SEQS, "seg"))
    fixed = out.history[-1]
    assert isinstance(fixed, SAMRSynthesizeFixed) and not fixed.synthesize and "edge" in fixed.skipped
    again = out.get_composed_history()(subject)
    assert _same(again, out, (*SEQS, "seg"))
    with pytest.raises(ValueError, match="needs synthesize=False"):
        SAMRSynthesizeFixed(synthesize=True, skipped="why")
    # the same transform with room to paint: an edited, painted, replayable sample
    painted = SAMRSynthesize(
        ratio=1.0, weights=synth, scheme="brats2021", policy=MIRROR, label_key="seg", painter=_painters(synth)["paints"]
    )(subject)
    assert not torch.equal(painted["seg"].data, subject["seg"].data)


@pytest.mark.parametrize("which", ["skips", "paints"])
def test_dataset_items_stay_real_when_the_painter_skips(synth: Synthesizer, which: str) -> None:
    subjects = [_subject(i) for i in (0, 1, 3)]  # (case 2's lesion is its own mirror image: no edit)
    ds = SAMRAugmentedDataset(
        subjects,
        n_synthetic=4,
        weights=synth,
        scheme="brats2021",
        policy=MIRROR,
        painter=_painters(synth)[which],
        seed=5,
    )
    for i in range(ds.n_real, len(ds)):
        item, src = ds[i], subjects[ds.source_of(i)]
        if which == "skips":
            assert _same(item, src, (*SEQS, "seg")), i
        else:
            assert not torch.equal(item["seg"].data, src["seg"].data), i
            assert not _same(item, src, SEQS), i


def test_monai_transform_records_the_skip(synth: Synthesizer) -> None:
    pytest.importorskip("monai")
    from monai.data import MetaTensor

    from samraug.monai import SAMRSynthesized

    images, seg, _ = _case(2)
    aff = torch.as_tensor(AFFINE)
    item = {"image": MetaTensor(images, affine=aff), "label": MetaTensor(seg[None], affine=aff)}
    t = SAMRSynthesized(keys="image", label_key="label", ratio=1.0, weights=synth, scheme="brats2021")
    t.set_random_state(seed=0)
    out = t(item)
    assert t.last_record is not None and "edge" in t.last_record["paint"]["skipped"]
    assert torch.equal(out["label"].as_tensor(), item["label"].as_tensor())
    assert torch.equal(out["image"].as_tensor(), item["image"].as_tensor())


def test_benchmark_pool_counts_the_volumes_left_real(synth: Synthesizer) -> None:
    """The augmentation benchmark's pools take slices whose labels the edit changed: a volume the painter left real
    adds none, and is counted (here every volume: the default margin cannot be painted on the tiny case)."""
    from benchmarks.arms import SliceSet, painted_pool

    subjects = [_subject(i) for i in (0, 1, 3)]
    for i, s in enumerate(subjects):
        s["subject_id"] = f"case{i}"
    real = SliceSet(
        torch.zeros(1, len(SEQS), 32, 32), torch.zeros(1, 32, 32, dtype=torch.long), torch.zeros(1, 32, 32) > 0,
        torch.zeros(1, dtype=torch.long), ["case0"], SEQS,
    )  # fmt: skip
    kw = dict(painter="samr", synthesizer=synth, scheme="brats2021", seed=0, mode="local", max_volumes=3)
    with pytest.raises(ValueError, match=r"only 0 slices in 3 synthetic volumes \(3 of them left real by the painter"):
        painted_pool(subjects, real, 4, region="lesions", **kw)
