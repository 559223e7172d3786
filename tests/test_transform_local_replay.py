"""SAMRSynthesize and SAMRAugmentedDataset (tio.Subject items) record a replay for any local SAMR painter on their
weights (the painter's settings in the record) that repaints the sample exactly, also after a deforming transform,
which local mode accepts; painters on other weights record none."""

from __future__ import annotations

import json

import pytest
import torch
import torchio as tio
from test_local_skip import MIRROR, _subject
from test_local_skip import _same as _same_keys
from tiny_model import SEQS, save_tiny_local_weights

from samraug.augment.painters import LOCAL_SETTINGS, SAMRPainter, check_local_settings
from samraug.synthesis import Synthesizer
from samraug.transforms import SAMRSynthesize, SAMRSynthesizeFixed

KEYS = (*SEQS, "seg")


@pytest.fixture(scope="module")
def synth(tiny_local_weights: str) -> Synthesizer:
    return Synthesizer(tiny_local_weights, device="cpu")


def _transform(synth: Synthesizer, painter) -> SAMRSynthesize:
    return SAMRSynthesize(ratio=1.0, weights=synth, scheme="brats2021", policy=MIRROR, label_key="seg", painter=painter)


def _same(a: tio.Subject, b: tio.Subject) -> bool:
    return _same_keys(a, b, KEYS)


@pytest.mark.parametrize("healthy", ["model", "mirror"])
def test_a_local_painter_with_its_own_settings_is_recorded_and_replayed_exactly(synth: Synthesizer, healthy) -> None:
    # (the tiny case needs a margin below the default's to leave the region room to the image edge)
    painter = SAMRPainter(synth, margin_mm=0.5, feather_mm=1.0, healthy=healthy)
    subject = _subject(1)
    torch.manual_seed(0)
    out = _transform(synth, painter)(subject)
    fixed = out.history[-1]
    assert isinstance(fixed, SAMRSynthesizeFixed) and fixed.synthesize
    assert fixed.painter == painter.local_settings() and set(fixed.painter) == set(LOCAL_SETTINGS)
    assert fixed.painter["healthy"] == healthy and fixed.painter["margin_mm"] == 0.5
    json.dumps(fixed._get_reproducing_arguments()["painter"])  # plain values
    assert not torch.equal(out["t1n"].data, subject["t1n"].data)  # painted
    assert _same(out.get_composed_history()(subject), out)
    # the settings matter: replayed with the weights' default painter instead, the sample differs
    default = SAMRSynthesizeFixed(**{**fixed._get_reproducing_arguments(), "painter": None})
    assert not _same(default(subject), out)


def test_the_transforms_own_painter_records_no_settings(synth: Synthesizer) -> None:
    out = _transform(synth, "samr")(_subject(1))  # default margins: this case is skipped, recorded as such
    assert out.history[-1].painter is None and not out.history[-1].synthesize


# in-plane only: the tiny case is 8 slices deep, and a deformation along z would take its region to the image edge
DEFORMS = [
    tio.RandomAffine(degrees=(0, 0, 0, 0, -5, 5), scales=0),
    tio.RandomElasticDeformation(max_displacement=(2, 2, 0)),
]


@pytest.mark.parametrize("deform", DEFORMS)
def test_a_deforming_transform_before_local_synthesis_is_fine_and_replays(synth: Synthesizer, deform) -> None:
    painter = SAMRPainter(synth, margin_mm=0.5, feather_mm=1.0)
    subject = _subject(1)
    torch.manual_seed(1)
    out = tio.Compose([deform, _transform(synth, painter)])(subject)
    assert [t.name for t in out.history] == [deform.name.removeprefix("Random"), "SAMRSynthesizeFixed"]
    assert out.history[-1].synthesize
    assert _same(out.get_composed_history()(subject), out)


def test_a_painter_on_other_weights_leaves_no_record(synth: Synthesizer, tmp_path) -> None:
    other = Synthesizer(save_tiny_local_weights(tmp_path / "other"), device="cpu")
    out = _transform(synth, SAMRPainter(other, margin_mm=0.5, feather_mm=1.0))(_subject(1))
    assert not out.history
    assert not torch.equal(out["t1n"].data, _subject(1)["t1n"].data)


def test_fixed_refuses_unknown_painter_settings() -> None:
    with pytest.raises(ValueError, match=r"\['margin'\] are not local SAMR painter settings"):
        SAMRSynthesizeFixed(painter={"margin": 2.0})
    with pytest.raises(TypeError, match="mapping of local painter settings"):
        SAMRSynthesizeFixed(painter="mirror")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"healthy": "bogus"}, r"healthy must be one of \('model'"),
        ({"seam": "feather"}, "seam must be one of"),
        ({"noise": None}, "noise must be one of"),
        ({"region": "brain"}, "region must be one of"),
        ({"margin_mm": -1.0}, "margin_mm must be a finite number of mm >= 0, got -1.0"),
        ({"feather_mm": float("nan")}, "feather_mm must be a finite number of mm >= 0"),
        ({"feather_mm": "wide"}, "feather_mm must be a finite number of mm >= 0, got 'wide'"),
        ({"max_region_mm": 0}, "max_region_mm must be a finite length in mm > 0"),
    ],
)
def test_fixed_refuses_bad_painter_values_when_built(settings: dict, message: str) -> None:
    """A replay record's painter settings are checked when the transform is built (before: when the replay first
    built the painter, i.e. at the first subject), with the same errors as SAMRPainter's own."""
    with pytest.raises(ValueError, match=message):
        SAMRSynthesizeFixed(painter=settings)
    with pytest.raises(ValueError, match=message):
        check_local_settings(settings)


def test_check_local_settings_keeps_good_values() -> None:
    good = {"margin_mm": 4, "feather_mm": 0, "healthy": "mirror", "seam": "none", "noise": "none"}
    assert check_local_settings(good) == {**good, "margin_mm": 4.0, "feather_mm": 0.0}
    assert check_local_settings({}) == {}
    fixed = SAMRSynthesizeFixed(painter={"margin_mm": 4, "region": "changed"})
    assert fixed.painter == {"margin_mm": 4.0, "region": "changed"}


@pytest.mark.parametrize("own", [True, False])
def test_dataset_subjects_of_a_local_painter_carry_a_replay(synth: Synthesizer, own: bool) -> None:
    from samraug.dataset import SAMRAugmentedDataset

    subjects = [_subject(i) for i in (0, 1, 3)]
    painter = "samr" if own else SAMRPainter(synth, margin_mm=0.5, feather_mm=1.0, healthy="spline")
    ds = SAMRAugmentedDataset(
        subjects, n_synthetic=3, weights=synth, scheme="brats2021", policy=MIRROR, painter=painter
    )
    painted = 0
    for i in range(ds.n_real, len(ds)):
        item, src = ds[i], subjects[ds.source_of(i)]
        fixed = item.history[-1]
        assert isinstance(fixed, SAMRSynthesizeFixed)
        assert fixed.painter == (None if own else painter.local_settings())
        assert _same(item.get_composed_history()(src), item), i
        painted += not torch.equal(item["t1n"].data, src["t1n"].data)
    assert painted == (0 if own else 3)  # the weights' own margins leave the tiny cases real (skipped at the edge)


def test_batched_dataset_subjects_replay_exactly(synth: Synthesizer) -> None:
    """Through SynthesizingLoader (the main process paints): the same records, the same exact replays."""
    from torch.utils.data import DataLoader

    from samraug.dataset import SAMRAugmentedDataset, SynthesizingLoader

    subjects = [_subject(i) for i in (0, 1, 3)]
    painter = SAMRPainter(synth, margin_mm=0.5, feather_mm=1.0, healthy="mirror")
    ds = SAMRAugmentedDataset(
        subjects, n_synthetic=3, weights=synth, scheme="brats2021", policy=MIRROR, painter=painter, batched=True
    )
    batch = next(iter(SynthesizingLoader(DataLoader(ds, batch_size=len(ds), collate_fn=list))))
    for i in range(ds.n_real, len(ds)):
        item, src = batch[i], subjects[ds.source_of(i)]
        assert item.history[-1].painter == painter.local_settings()
        assert not torch.equal(item["t1n"].data, src["t1n"].data)
        assert _same(item.get_composed_history()(src), item), i
