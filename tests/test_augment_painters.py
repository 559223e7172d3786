"""Painters behind one interface: SAMR (whole / local), copy-paste (CarveMix-style), labels-to-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_dataset import _case
from tiny_model import AFFINE, SEQS, subject_range

from samraug.augment.painters import (
    CopyPastePainter,
    Donor,
    LabelsToImagePainter,
    SAMRPainter,
    get_painter,
)
from samraug.labels import get_scheme
from samraug.synthesis import Synthesizer

SCHEME = get_scheme("brats2021")


@pytest.fixture(scope="module")
def synth(tiny_weights: str) -> Synthesizer:
    return Synthesizer(tiny_weights, device="cpu")


def _subject(i: int) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    images, seg, brain = _case(i)
    return {s: images[k] for k, s in enumerate(SEQS)}, seg.numpy(), brain.numpy()


def _moved(label: np.ndarray, dx: int) -> np.ndarray:
    return np.roll(label, dx, axis=0)


def test_by_name_and_mode_rules(synth: Synthesizer) -> None:
    assert isinstance(get_painter("copy-paste"), CopyPastePainter)
    assert isinstance(get_painter("labels-to-image"), LabelsToImagePainter)
    samr = get_painter("samr", synthesizer=synth)
    assert isinstance(samr, SAMRPainter) and samr.mode == "whole"  # the tiny weights' config has no mode
    assert samr.synthesizer is not synth
    with pytest.raises(ValueError, match="belongs to the SAMR painter"):
        get_painter("copy-paste", mode="whole")
    with pytest.raises(ValueError, match="belongs to the SAMR painter"):
        get_painter(CopyPastePainter(), mode="local")
    with pytest.raises(ValueError, match="unknown painter"):
        get_painter("gan")
    with pytest.raises(ValueError, match="mode must be"):
        SAMRPainter(synth, mode="partial")


def test_copy_paste_from_itself_is_the_identity_and_only_touches_the_region() -> None:
    images, label, brain = _subject(0)
    after = np.where(_moved(label, 3) != 0, _moved(label, 3), label)
    donor = Donor({k: torch.roll(v, 3, dims=0) for k, v in images.items()}, _moved(label, 3), np.roll(brain, 3, 0))
    out, record = CopyPastePainter().paint(images, label, after, brain, AFFINE, SCHEME, donor=donor)
    region = (after != label) & (after != 0)
    assert record["pasted_voxels"] == int(region.sum()) > 0
    for k in SEQS:
        assert out[k].dtype == images[k].dtype and out[k].shape == images[k].shape
        assert torch.equal(out[k][~torch.from_numpy(region)], images[k][~torch.from_numpy(region)])
        # the donor's lesion voxels, intensity-matched: the donor is the subject moved, so its normal-brain stats
        # differ only by the voxels the move takes in or out; the pasted values follow the donor's
        r = torch.from_numpy(region)
        assert torch.corrcoef(torch.stack([out[k][r].double(), donor.images[k][r].double()]))[0, 1] > 0.999


def test_copy_paste_needs_a_donor_on_the_grid() -> None:
    images, label, brain = _subject(0)
    with pytest.raises(ValueError, match="needs a donor"):
        CopyPastePainter().paint(images, label, label, brain, AFFINE, SCHEME)
    bad = Donor(images, label[:10], brain)
    with pytest.raises(ValueError, match="not on the subject's grid"):
        CopyPastePainter().paint(images, label, label, brain, AFFINE, SCHEME, donor=bad)


def test_labels_to_image_paints_near_the_edit_only_and_replays() -> None:
    images, label, brain = _subject(1)
    after = _moved(label, 2)
    painter = LabelsToImagePainter(dilation_mm=2.0)
    a, rec = painter.paint(images, label, after, brain, AFFINE, SCHEME, generator=torch.Generator().manual_seed(4))
    b, _ = painter.paint(images, label, after, brain, AFFINE, SCHEME, generator=torch.Generator().manual_seed(4))
    changed = torch.from_numpy(after != label)
    assert rec["painted_voxels"] >= int(changed.sum()) > 0
    for k in SEQS:
        assert torch.equal(a[k], b[k])  # same generator, same image
        assert not torch.equal(a[k][changed], images[k][changed])
    # outside the brain and far from the edit: untouched
    outside = torch.from_numpy(~brain)
    assert all(torch.equal(a[k][outside], images[k][outside]) for k in SEQS)


def test_samr_whole_paints_in_the_subject_scale(synth: Synthesizer) -> None:
    images, label, brain = _subject(2)
    out, rec = SAMRPainter(synth).paint(images, label, _moved(label, 1), brain, AFFINE, SCHEME)
    assert rec == {"painter": "samr", "mode": "whole"}
    b = torch.from_numpy(brain)
    for k in SEQS:
        assert out[k].shape == images[k].shape and out[k].dtype == images[k].dtype
        assert torch.equal(out[k][~b], images[k][~b])  # background: the real background value (0 here)
        lo, hi = subject_range(images[k].numpy(), brain, label > 0)  # the real lesion is left out
        assert float(out[k][b].min()) >= lo - 1e-3 and float(out[k][b].max()) <= hi + 1e-3


def test_samr_local_goes_through_paint_local(tiny_local_weights: str) -> None:
    images, label, brain = _subject(2)
    after = _moved(label, 1)
    # the tiny case is 8 slices deep: a small margin leaves the region the context it needs
    painter = SAMRPainter(Synthesizer(tiny_local_weights, device="cpu"), margin_mm=0.5, feather_mm=1.0)
    assert painter.mode == "local"  # the default mode comes from the weights
    out, rec = painter.paint(images, label, after, brain, AFFINE, SCHEME)
    again, _ = painter.paint(images, label, after, brain, AFFINE, SCHEME)
    assert rec["painter"] == "samr" and rec["mode"] == "local" and rec.get("skipped") is None
    assert rec["seam"] == "poisson" and "seam_skipped" not in rec
    assert set(out) == set(images)
    changed = torch.from_numpy(after != label)
    for k in SEQS:
        assert torch.equal(out[k], again[k])  # deterministic: replay is voxel-exact
        assert not torch.equal(out[k][changed], images[k][changed])


def test_samr_local_max_region_leaves_wider_regions_unpainted(tiny_local_weights: str) -> None:
    images, label, brain = _subject(2)
    after = _moved(label, 1)
    synth = Synthesizer(tiny_local_weights, device="cpu")
    narrow = SAMRPainter(synth, margin_mm=0.5, feather_mm=1.0, max_region_mm=4.0)
    out, rec = narrow.paint(images, label, after, brain, AFFINE, SCHEME)
    assert "above max_region_mm=4 (raise max_region_mm" in rec["skipped"]
    assert all(out[k] is images[k] or torch.equal(out[k], images[k]) for k in SEQS)  # left as it was
    wide = SAMRPainter(synth, margin_mm=0.5, feather_mm=1.0, max_region_mm=1000.0)
    assert wide.paint(images, label, after, brain, AFFINE, SCHEME)[1]["skipped"] is None
    for bad in (0, -1.0, float("nan"), float("inf"), True, "160"):
        with pytest.raises(ValueError, match="max_region_mm must be a finite length in mm > 0"):
            SAMRPainter(synth, max_region_mm=bad)


def test_samr_painter_refuses_bad_lengths_when_built(tiny_local_weights: str) -> None:
    """A negative or non-finite margin or feather is refused by the constructor, naming the argument (before: by
    the first paint)."""
    synth = Synthesizer(tiny_local_weights, device="cpu")
    for name in ("margin_mm", "feather_mm"):
        for bad in (-0.5, float("nan"), float("inf"), "wide"):
            with pytest.raises(ValueError, match=f"{name} must be a finite number of mm >= 0"):
                SAMRPainter(synth, **{name: bad})
    painter = SAMRPainter(synth, margin_mm=0, feather_mm=2)
    assert (painter.margin_mm, painter.feather_mm) == (0.0, 2.0)


def test_residual_local_weights_record_that_no_seam_correction_ran(tmp_path) -> None:
    """Residual weights paint over a fill that already meets the real image: the Poisson seam correction is not
    applied to them, and the record says so instead of naming the requested one."""
    from tiny_model import save_tiny_local_weights

    images, label, brain = _subject(2)
    after = _moved(label, 1)
    weights = save_tiny_local_weights(tmp_path / "res", residual=True)
    painter = SAMRPainter(Synthesizer(weights, device="cpu"), margin_mm=0.5, feather_mm=1.0)
    out, rec = painter.paint(images, label, after, brain, AFFINE, SCHEME)
    assert rec.get("skipped") is None and rec["seam"] == "none" and "residual" in rec["seam_skipped"]
    assert all(p["seam_offset"] is None for p in rec["parts"])
    changed = torch.from_numpy(after != label)
    assert any(not torch.equal(out[k][changed], images[k][changed]) for k in SEQS)


def test_samr_mode_must_match_the_weights(synth: Synthesizer, tiny_local_weights: str) -> None:
    with pytest.raises(ValueError, match="trained for mode 'whole'"):
        SAMRPainter(synth, mode="local")
    with pytest.raises(ValueError, match="trained for mode 'local'"):
        SAMRPainter(Synthesizer(tiny_local_weights, device="cpu"), mode="whole")


# ------------------------------------------------------------------ through the dataset (the benchmark arms)
@pytest.mark.parametrize("painter", ["copy-paste", "labels-to-image"])
def test_dataset_with_another_painter(synth: Synthesizer, painter: str) -> None:
    from test_dataset import SubjectDS, TupleDS

    from samraug.dataset import SAMRAugmentedDataset

    for real in (TupleDS(), SubjectDS()):
        mixed = SAMRAugmentedDataset(real, n_synthetic=2, weights=synth, scheme="brats2021", painter=painter)
        item, again = mixed[len(mixed) - 1], mixed[len(mixed) - 1]
        src = real[mixed.source_of(len(mixed) - 1)]
        if isinstance(item, tuple):
            assert item[0].shape == src[0].shape and item[0].dtype == torch.float32
            assert torch.equal(item[0], again[0]) and torch.equal(item[1], again[1])  # seeded by index
            assert not torch.equal(item[0], src[0].float())
        else:
            assert not item.history  # no SAMR replay record for another painter
            assert torch.equal(item["t1n"].data, again["t1n"].data)
        assert mixed.describe(len(mixed) - 1)["synthetic"]


def test_dataset_mode_rules(synth: Synthesizer) -> None:
    from test_dataset import TupleDS

    from samraug.dataset import SAMRAugmentedDataset

    with pytest.raises(ValueError, match="belongs to the SAMR painter"):
        SAMRAugmentedDataset(TupleDS(), weights=synth, scheme="brats2021", painter="copy-paste", mode="whole")
    mixed = SAMRAugmentedDataset(TupleDS(), weights=synth, scheme="brats2021", mode="whole")
    assert mixed.painter is None  # whole-image SAMR: the batched generator path
