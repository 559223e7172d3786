"""augment_view (the one plan -> edit -> paint path) and the item readers of samraug.augment.views."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torchio as tio
from tiny_model import AFFINE, SEQS, SHAPE, tiny_brain

from samraug.augment import (
    CarveEdit,
    CopyPastePainter,
    Donor,
    PendingSample,
    augment_view,
    plain_view,
    subject_view,
)
from samraug.augment.batched import synthesize_pending
from samraug.augment.views import output_item
from samraug.dataset import SAMRAugmentedDataset
from samraug.editing import EditPolicy, LesionEditor
from samraug.synthesis import Synthesizer
from samraug.transforms import SAMRSynthesize, SAMRSynthesizeFixed

#: Every sample edits (a move), so the edited label map differs from the real one.
MOVE = EditPolicy(p_remove=0, p_swap=0, p_mirror=0, p_scale=0, p_rotate=0, p_perturb=0, p_move=1.0, max_shift=0.2)
STACK = {s: i for i, s in enumerate(SEQS)}


@pytest.fixture(scope="module")
def synth(tiny_weights: str) -> Synthesizer:
    return Synthesizer(tiny_weights, device="cpu")


def _arrays(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, X, Y, Z) images (0 outside a two-slice brain) and a brats2021 label map on the tiny atlas grid."""
    g = torch.Generator().manual_seed(seed)
    brain = tiny_brain(slice(3, 5))
    seg = torch.zeros(SHAPE, dtype=torch.uint8)
    seg[9:19, 10:19, 3:5] = 2
    seg[11:17, 12:17, 3:5] = 4
    seg[13:15, 13:16, 3:5] = 1
    images = torch.stack(
        [torch.where(brain, 40.0 * (i + 1) + 30 * torch.rand(SHAPE, generator=g), 0.0) for i in range(4)]
    )
    return images, seg


def _dict_item(seed: int = 0) -> dict:
    images, seg = _arrays(seed)
    return {"image": images, "label": seg[None].clone(), "id": seed}


def _view(item: dict, synth: Synthesizer):
    return plain_view(item, label_key="label", image_key="image", mapping=STACK, sequences=synth.sequences)


def test_augment_view_equals_the_transform(synth: Synthesizer) -> None:
    """A dict item through augment_view gives the TorchIO transform's sample (same seed, same editor)."""
    images, seg = _arrays()
    subject = tio.Subject(
        **{k: tio.ScalarImage(tensor=images[i][None].clone(), affine=AFFINE) for i, k in enumerate(SEQS)},
        seg=tio.LabelMap(tensor=seg[None].clone(), affine=AFFINE),
    )
    editor = LesionEditor("brats2021", policy=MOVE)
    torch.manual_seed(11)
    out = SAMRSynthesize(ratio=1.0, weights=synth, scheme="brats2021", editor=editor)(subject)
    fixed = next(t for t in out.history if isinstance(t, SAMRSynthesizeFixed))
    assert fixed.edit["applied"]

    item = _dict_item()
    before = item["image"].clone()
    view = _view(item, synth)
    done = augment_view(
        view,
        item=output_item(item, view),
        scheme="brats2021",
        synthesizer=synth,
        editor=editor,
        generator=torch.Generator().manual_seed(fixed.seed),
    )
    assert done.record == {"edit": fixed.edit}
    assert not np.array_equal(done.label, seg.numpy())  # the lesion moved
    assert torch.equal(done.item["label"][0], out["seg"].data[0])
    for i, key in enumerate(SEQS):
        torch.testing.assert_close(done.item["image"][i], out[key].data[0], atol=1e-5, rtol=0)
    assert torch.equal(item["image"], before)  # the input item is never written to
    assert done.item["id"] == 0 and done.item["label"].dtype == torch.uint8


def test_subject_and_dict_readers_agree(synth: Synthesizer) -> None:
    images, seg = _arrays(3)
    subject = tio.Subject(
        **{k: tio.ScalarImage(tensor=images[i][None], affine=AFFINE) for i, k in enumerate(SEQS)},
        seg=tio.LabelMap(tensor=seg[None], affine=AFFINE),
    )
    a = subject_view(subject, label_key="seg", brain_key=None, mapping={s: s for s in SEQS}, sequences=synth.sequences)
    b = plain_view(
        {"image": images, "label": seg}, label_key="label", image_key="image", mapping=STACK, sequences=synth.sequences
    )
    assert np.array_equal(a.label, b.label) and np.array_equal(a.brain, b.brain)
    assert sorted(a.images) == sorted(b.images) == [0, 1, 2, 3]
    for k in a.images:
        assert torch.equal(a.images[k][2], b.images[k][2])
    assert a.images[0][:2] == ("t1n", None) and b.images[0][:2] == ("image", 0)
    assert (a.label_key, b.label_key) == ("seg", "label")


def test_record_replays_to_the_same_sample(synth: Synthesizer) -> None:
    item = _dict_item(1)
    view = _view(item, synth)
    editor = LesionEditor("brats2021", policy=MOVE)
    done = augment_view(
        view,
        item=output_item(item, view),
        scheme="brats2021",
        synthesizer=synth,
        editor=editor,
        generator=torch.Generator().manual_seed(5),
        record={"seed": np.int64(5)},
    )
    record = json.loads(json.dumps(done.record))  # plain values only
    assert record == done.record and record["seed"] == 5 and record["edit"]["applied"]
    again = editor.replay(view.label, view.brain, record["edit"]).label
    assert np.array_equal(np.asarray(again), done.label)
    replayed = augment_view(
        view, item=output_item(item, view), scheme="brats2021", synthesizer=synth, editor=editor, replay=record["edit"]
    )
    assert torch.equal(replayed.item["label"], done.item["label"])
    assert torch.equal(replayed.item["image"], done.item["image"])  # voxel-exact


def test_deferred_and_batched_equal_in_process(synth: Synthesizer) -> None:
    items = [_dict_item(s) for s in (0, 1)]
    editor = LesionEditor("brats2021", policy=MOVE)

    def run(item: dict, seed: int, defer: bool):
        view = _view(item, synth)
        return augment_view(
            view,
            item=output_item(item, view),
            scheme="brats2021",
            synthesizer=synth,
            editor=editor,
            generator=torch.Generator().manual_seed(seed),
            defer=defer,
        )

    direct = [run(item, 7 + k, False) for k, item in enumerate(items)]
    deferred = [run(item, 7 + k, True) for k, item in enumerate(items)]
    assert all(d.item is None and isinstance(d.pending, PendingSample) for d in deferred)
    assert [d.record for d in deferred] == [d.record for d in direct]
    with pytest.raises(dataclasses.FrozenInstanceError):  # set at construction, never after
        deferred[0].pending.record = {}  # type: ignore[misc, union-attr]
    batched = synthesize_pending([d.pending for d in deferred], synth)  # one generator call for both
    for b, d in zip(batched, direct, strict=True):
        assert torch.equal(b["label"], d.item["label"])
        torch.testing.assert_close(b["image"], d.item["image"], atol=1e-5, rtol=0)


def test_bad_arguments_are_refused_before_anything_is_written(synth: Synthesizer) -> None:
    item = _dict_item()
    view = _view(item, synth)
    out = output_item(item, view)
    before = {k: v.clone() for k, v in out.items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError, match="belongs to the SAMR painter"):
        augment_view(view, item=out, scheme="brats2021", synthesizer=synth, painter="labels-to-image", mode="local")
    with pytest.raises(ValueError, match="belongs to the SAMR painter"):
        augment_view(view, item=out, scheme="brats2021", synthesizer=synth, painter=CopyPastePainter(), mode="whole")
    with pytest.raises(ValueError, match="intensity must be 'match'"):
        augment_view(view, item=out, scheme="brats2021", synthesizer=synth, intensity="subject")
    with pytest.raises(ValueError, match="replay= needs the editor="):
        augment_view(view, item=out, scheme="brats2021", synthesizer=synth, replay={"op": "mirror"})
    for k, v in before.items():
        assert torch.equal(out[k], v), k


def test_painter_record_and_seed(synth: Synthesizer) -> None:
    """Another painter: its record under "paint", the same paint_seed gives the same images; no item: a dict."""
    item = _dict_item(2)
    view = _view(item, synth)
    editor = LesionEditor("brats2021", policy=MOVE)

    def run(paint_seed: int):
        return augment_view(
            view,
            scheme="brats2021",
            synthesizer=synth,
            editor=editor,
            generator=torch.Generator().manual_seed(1),
            painter="labels-to-image",
            paint_seed=paint_seed,
        )

    a, b, c = run(3), run(3), run(4)
    assert a.record["paint"]["painter"] == "labels-to-image"
    assert set(a.item) == {"label", "image"} and a.item["image"].shape == item["image"].shape
    assert torch.equal(a.item["image"], b.item["image"]) and not torch.equal(a.item["image"], c.item["image"])
    changed = torch.from_numpy(a.label != view.label)
    assert changed.any()
    far = ~torch.from_numpy(np.asarray(view.brain))  # outside the brain the painter leaves the real image
    assert torch.equal(a.item["image"][:, far], item["image"][:, far].float())


def test_carve_edit_with_the_copy_paste_painter(synth: Synthesizer) -> None:
    item = _dict_item(0)
    view = _view(item, synth)
    donor_images, donor_seg = _arrays(4)
    donor_seg = torch.roll(donor_seg, 6, dims=0)  # a lesion elsewhere
    donor = Donor({s: donor_images[i] for i, s in enumerate(SEQS)}, donor_seg.numpy(), tiny_brain(slice(3, 5)).numpy())
    done = augment_view(
        view,
        item=output_item(item, view),
        scheme="brats2021",
        synthesizer=synth,
        editor=CarveEdit(donor_seg.numpy(), 2),
        painter="copy-paste",
        donor=donor,
    )
    lesion = donor_seg.numpy() != 0
    assert done.record["edit"] == {"op": "carve", "donor": 2} and done.record["paint"]["pasted_voxels"] > 0
    assert np.array_equal(done.label[lesion], donor_seg.numpy()[lesion])
    assert np.array_equal(done.label[~lesion], view.label[~lesion])
    with pytest.raises(ValueError, match=r"donor #7 has shape \(4, 4\)"):
        CarveEdit(np.zeros((4, 4), np.uint8), 7, "donor #7").random_edit(view.label, view.brain)


def test_plain_view_refuses_misaligned_images(synth: Synthesizer) -> None:
    images, seg = _arrays()
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    item = {
        "t1n": tio.ScalarImage(tensor=images[:1], affine=shifted),
        "label": tio.LabelMap(tensor=seg[None], affine=AFFINE),
    }
    with pytest.raises(ValueError, match=r"image 't1n' has affine .* but the label map 'label'"):
        plain_view(item, label_key="label", image_key=None, mapping={"t1n": "t1n"}, sequences=synth.sequences)
    small = {"t1n": images[0, :16], "label": seg}
    with pytest.raises(ValueError, match=r"image 't1n' has spatial shape \(16, 32, 8\)"):
        plain_view(small, label_key="label", image_key=None, mapping={"t1n": "t1n"}, sequences=synth.sequences)
    with pytest.raises(ValueError, match="empty brain"):
        plain_view(
            {"t1n": torch.zeros(SHAPE), "label": torch.zeros(SHAPE, dtype=torch.uint8)},
            label_key="label",
            image_key=None,
            mapping={"t1n": "t1n"},
            sequences=synth.sequences,
        )


def test_a_pending_sample_carries_its_painter(synth: Synthesizer) -> None:
    """The dataset's pending sample for another painter is painted by synthesize_pending as by __getitem__."""

    class Items:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            images, seg = _arrays(i)
            return images, seg

    mixed = SAMRAugmentedDataset(Items(), 0.5, weights=synth, scheme="brats2021", painter="labels-to-image", seed=4)
    i = len(mixed) - 1
    pending = mixed.prepare(i)
    assert pending.painter is mixed.painter and pending.paint_seed == pending.record["seed"] + 1
    (done,) = synthesize_pending([pending], synth)
    ref = mixed[i]
    assert isinstance(done, tuple) and torch.equal(done[1], ref[1]) and torch.equal(done[0], ref[0])
