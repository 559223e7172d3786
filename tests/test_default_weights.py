"""``weights=None`` everywhere is the bundled LOCAL weights: the default transform, painter and synthesizer paint
only the edited lesion's neighbourhood inside the subject's own images, on any grid (here the phantom at 1 mm,
which is not the whole-image weights' 2 mm atlas grid)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchio as tio
from scipy import ndimage

from samraug import hub
from samraug.augment.painters import SAMRPainter, get_painter
from samraug.data.phantom import dataset_subject
from samraug.synthesis import Synthesizer, get_synthesizer
from samraug.transforms import SAMRSynthesize

MARGIN_MM = 8.0  # SAMRPainter's default margin around the edit


@pytest.fixture(scope="module")
def phantom_1mm() -> tio.Subject:
    p = dataset_subject(3, seed=11, resolution=1.0)
    assert np.allclose(np.abs(np.diag(p.affine)[:3]), 1.0) and (p.seg > 0).any()
    images = {k: tio.ScalarImage(tensor=torch.from_numpy(v)[None], affine=p.affine) for k, v in p.images.items()}
    seg = tio.LabelMap(tensor=torch.from_numpy(p.seg.astype(np.int64))[None], affine=p.affine)
    return tio.Subject(**images, seg=seg, scheme="brats2024")


def _quiet_default(factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the bundled weights say they are simulated
        return factory()


def test_default_synthesizer_painter_and_transform_are_local() -> None:
    synth = _quiet_default(lambda: get_synthesizer(None, device="cpu"))
    assert synth.key is None and synth.config["mode"] == "local"
    with pytest.raises(ValueError, match=r"local-mode weights: they carry no atlas.*BUNDLED_WHOLE_WEIGHTS"):
        synth.atlas  # noqa: B018
    assert _quiet_default(lambda: Synthesizer(device="cpu")).config["mode"] == "local"
    assert _quiet_default(lambda: SAMRPainter(device="cpu")).mode == "local"
    assert _quiet_default(lambda: get_painter("samr", device="cpu")).mode == "local"
    with pytest.raises(ValueError, match="trained for mode 'local'"):  # the default cannot be forced to whole
        _quiet_default(lambda: SAMRPainter(mode="whole", device="cpu"))
    whole = SAMRPainter(hub.BUNDLED_WHOLE_WEIGHTS, device="cpu")  # the old default, by name
    assert whole.mode == "whole" and tuple(whole.synthesizer.atlas.shape) == (99, 117, 95)


@pytest.mark.slow  # ~11 s: a whole 1 mm phantom subject is generated and painted
def test_default_transform_paints_only_the_edited_region_on_a_1mm_grid(phantom_1mm: tio.Subject) -> None:
    transform = _quiet_default(lambda: SAMRSynthesize(ratio=1.0, scheme="brats2024", device="cpu"))
    torch.manual_seed(0)
    out = transform(phantom_1mm)
    before, after = phantom_1mm["seg"].data[0].numpy(), out["seg"].data[0].numpy()
    brain = phantom_1mm["t1n"].data[0].numpy() != 0
    assert out["seg"].affine.tolist() == phantom_1mm["seg"].affine.tolist()
    # the region: changed labels plus the old and the new lesion, dilated by the margin (1 mm voxels: mm = voxels);
    # computed here independently with a whole-volume Euclidean distance transform, +1 voxel for rounding
    core = (before != after) | (before > 0) | (after > 0)
    near = ndimage.distance_transform_edt(~core) <= MARGIN_MM + 1.0
    changed_any = np.zeros(before.shape, bool)
    for key in ("t1n", "t1c", "t2w", "t2f", "aptw"):
        real, synth = phantom_1mm[key].data[0].numpy(), out[key].data[0].numpy()
        assert synth.shape == real.shape and np.isfinite(synth).all()
        changed = synth != real
        assert not (changed & ~near).any(), f"{key}: voxels painted outside the edit's neighbourhood"
        assert not (changed & ~brain).any(), f"{key}: voxels painted outside the brain"
        changed_any |= changed
    assert changed_any.sum() > 100  # it did paint (not skipped)
    # the check above has teeth: most of the brain lies outside the neighbourhood and kept its real values
    assert (brain & ~near).sum() > 0.5 * brain.sum()


# ------------------------------------------------------------------ every front-end, on the 2 mm phantom
SEQS = ("t1n", "t1c", "t2w", "t2f", "aptw")


@pytest.fixture(scope="module")
def phantom_2mm():
    p = dataset_subject(1, seed=11, resolution=2.0)
    assert (p.seg > 0).any()
    return p


def _assert_local_paint(before: np.ndarray, after: np.ndarray, real: np.ndarray, out: np.ndarray, mm: float) -> None:
    """``out`` differs from ``real`` (channel-first) only within the margin of the edit, computed independently."""
    core = (before != after) | (before > 0) | (after > 0)
    near = ndimage.distance_transform_edt(~core, sampling=(mm, mm, mm)) <= MARGIN_MM + mm
    changed = (out != real).any(axis=0)
    assert changed.sum() > 10 and not (changed & ~near).any()
    assert (~near & (real != 0).any(axis=0)).any()  # there was brain outside the neighbourhood to keep


def test_default_monai_transform_and_dataset_paint_locally(phantom_2mm) -> None:
    from monai.data import MetaTensor

    from samraug.dataset import SAMRAugmentedDataset
    from samraug.monai import SAMRSynthesized

    p = phantom_2mm
    stack = torch.from_numpy(np.stack([p.images[s] for s in SEQS]))
    label = torch.from_numpy(p.seg.astype(np.int64))
    affine = torch.from_numpy(p.affine)
    t = _quiet_default(lambda: SAMRSynthesized(keys="image", label_key="label", ratio=1.0, scheme="brats2024"))
    t.set_random_state(seed=3)
    out = t({"image": MetaTensor(stack, affine=affine), "label": MetaTensor(label[None], affine=affine)})
    _assert_local_paint(p.seg, np.asarray(out["label"][0]), stack.numpy(), np.asarray(out["image"]), 2.0)

    item = {"image": stack, "label": label, "affine": affine}
    mixed = _quiet_default(lambda: SAMRAugmentedDataset([item, item], n_synthetic=1, scheme="brats2024", seed=1))
    assert mixed.painter is not None and mixed.painter.mode == "local"
    made = mixed[2]
    _assert_local_paint(p.seg, made["label"].numpy(), stack.numpy(), made["image"].numpy(), 2.0)
    with pytest.raises(ValueError, match=r"without an affine cannot be painted with local-mode weights.*'affine'"):
        _quiet_default(lambda: SAMRAugmentedDataset([(stack, label)] * 2, n_synthetic=1, scheme="brats2024"))


def test_batched_local_items_are_painted_in_the_main_process(phantom_2mm, monkeypatch: pytest.MonkeyPatch) -> None:
    """``batched=True`` with local weights: a DataLoader worker only edits (no CUDA touched there, so the worker
    guard is not hit); SynthesizingLoader paints in the main process, exactly as the unbatched dataset does."""
    from torch.utils.data import DataLoader

    from samraug.augment.core import PendingSample
    from samraug.dataset import SAMRAugmentedDataset, SynthesizingLoader

    p = phantom_2mm
    stack = torch.from_numpy(np.stack([p.images[s] for s in SEQS]))
    item = {"image": stack, "label": torch.from_numpy(p.seg.astype(np.int64)), "affine": torch.from_numpy(p.affine)}
    kw = {"n_synthetic": 2, "scheme": "brats2024", "seed": 4}
    plain = _quiet_default(lambda: SAMRAugmentedDataset([item, item], **kw))
    batched = _quiet_default(lambda: SAMRAugmentedDataset([item, item], batched=True, **kw))
    loader = SynthesizingLoader(DataLoader(batched, batch_size=2, num_workers=1, collate_fn=list))
    made = [x for batch in loader for x in batch][2:]
    for j, got in enumerate(made):
        ref = plain[2 + j]
        assert torch.equal(got["label"], ref["label"]) and torch.equal(got["image"], ref["image"])
    _assert_local_paint(p.seg, made[0]["label"].numpy(), stack.numpy(), made[0]["image"].numpy(), 2.0)

    on_gpu = _quiet_default(lambda: SAMRAugmentedDataset([item, item], batched=True, device="cuda", **kw))
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as if inside a worker
    pending = on_gpu[3]
    assert isinstance(pending, PendingSample) and pending.painter is not None


def test_cli_info_names_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    from samraug.cli import main

    assert _quiet_default(lambda: main(["info"])) == 0
    out = capsys.readouterr().out
    assert "the default: bundled demo weights samr-tiny-local, local mode" in out
    assert any(line.split() == ["mode", "local"] for line in out.splitlines())
    assert "atlas" in out and "none (local mode" in out
    assert main(["info", str(hub.BUNDLED_WHOLE_WEIGHTS)]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["mode", "whole"] for line in out.splitlines()) and "the default" not in out
    assert "shape [99, 117, 95]" in out


def test_default_transform_records_a_replay_that_repaints_the_sample_exactly(phantom_2mm) -> None:
    p = phantom_2mm
    images = {k: tio.ScalarImage(tensor=torch.from_numpy(p.images[k])[None], affine=p.affine) for k in SEQS}
    seg = tio.LabelMap(tensor=torch.from_numpy(p.seg.astype(np.int64))[None], affine=p.affine)
    subject = tio.Subject(**images, seg=seg, scheme="brats2024")
    transform = _quiet_default(lambda: SAMRSynthesize(ratio=1.0, device="cpu"))
    torch.manual_seed(5)
    sample = transform(subject)
    assert [t.name for t in sample.history] == ["SAMRSynthesizeFixed"] and sample.history[0].weights is None
    assert not torch.equal(sample["t1n"].data, subject["t1n"].data)  # painted
    again = sample.get_composed_history()(subject)
    for key in (*SEQS, "seg"):
        assert torch.equal(again[key].data, sample[key].data), key
    # a local painter of its own on the same weights: the record carries its settings and replays it exactly
    other = SAMRSynthesize(ratio=1.0, device="cpu", painter=SAMRPainter(device="cpu", margin_mm=2.0))
    torch.manual_seed(5)
    sample = _quiet_default(lambda: other(subject))
    assert [t.name for t in sample.history] == ["SAMRSynthesizeFixed"] and sample.history[0].painter["margin_mm"] == 2.0
    again = sample.get_composed_history()(subject)
    for key in (*SEQS, "seg"):
        assert torch.equal(again[key].data, sample[key].data), key
