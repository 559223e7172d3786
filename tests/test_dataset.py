"""SAMRAugmentedDataset and the main-process batched path (SynthesizingLoader)."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchio as tio
from tiny_model import AFFINE, SEQS, SHAPE, subject_range, tiny_brain
from torch.utils.data import DataLoader

from samraug.atlas import Atlas
from samraug.dataset import PendingBatch, PendingCollate, SAMRAugmentedDataset, SynthesizingLoader
from samraug.labels import one_hot
from samraug.synthesis import Synthesizer
from samraug.transforms import PendingSample


def _brain() -> torch.Tensor:
    return tiny_brain()


@pytest.fixture(scope="module")
def synth(tiny_weights: str) -> Synthesizer:
    """The tiny test model, loaded through the real resolver."""
    return Synthesizer(tiny_weights, device="cpu")


def _case(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (4, X, Y, Z) in a raw scale with background 0, brats2021 label uint8, brain)."""
    g = torch.Generator().manual_seed(i)
    brain = _brain()
    o = i % 3
    seg = torch.zeros(SHAPE, dtype=torch.uint8)
    seg[9 + o : 19 + o, 10:19, 2:6] = 2
    seg[11 + o : 17 + o, 12:17, 2:6] = 4
    seg[13 + o : 15 + o, 13:16, 3:5] = 1
    scale = torch.tensor([100.0, 300.0, 50.0, 1000.0])[:, None, None, None]
    images = torch.where(brain, scale * (1 + torch.rand(4, *SHAPE, generator=g)), 0.0)
    return images, seg, brain


class TupleDS:
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        images, seg, _ = _case(i)
        return images, seg


class Dict2D:
    """2D items with the axial slice they come from."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        images, seg, brain = _case(i)
        return {"image": images[..., 3], "label": seg[..., 3].long(), "brain": brain[..., 3], "z": 3, "id": f"c{i}"}


class DictPerKey:
    """3D dict items with one key per sequence (named differently from the model's)."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        images, seg, _ = _case(i)
        return {"T1": images[0:1], "FLAIR": images[3:4], "seg": seg, "affine": torch.as_tensor(AFFINE)}


class SubjectDS:
    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        images, seg, _ = _case(i)
        kw = {s: tio.ScalarImage(tensor=images[k : k + 1], affine=AFFINE) for k, s in enumerate(SEQS)}
        return tio.Subject(**kw, seg=tio.LabelMap(tensor=seg[None], affine=AFFINE), scheme="brats2021")


class InstanceDS:
    """samraug 2D training instances (normalised images, SAMR labels, one-hot mask, stats, own atlas stack)."""

    def __init__(self, atlas: Atlas) -> None:
        self.atlas = atlas

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        _, seg, brain = _case(i)
        lab = torch.where(brain[..., 3], 1, 0)
        s = seg[..., 3].long()
        lab = torch.where(s == 2, 2, torch.where(s > 0, 4, lab))
        img = torch.where(brain[..., 3], torch.rand(4, 32, 32) * 2 - 1, -1.0)
        return {
            "mask": one_hot(lab),
            "label": lab,
            "atlas": self.atlas.stack(3),
            "image": img,
            "brain": brain[..., 3],
            "z": 3,
            "stats": torch.tensor([[0.0, 1.0]] * 4),
        }


def test_length_and_real_passthrough(synth: Synthesizer) -> None:
    real = TupleDS()
    for ratio, length in [(0.0, 4), (0.25, 5), (0.5, 8), (0.6, 10)]:
        ds = SAMRAugmentedDataset(real, ratio, weights=synth, scheme="brats2021")
        assert len(ds) == length
        n_synth = sum(ds.is_synthetic(i) for i in range(len(ds)))
        assert n_synth == length - 4 and abs(n_synth / length - ratio) <= 1 / length
    ds = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021")
    for i in range(4):
        a, b = ds[i], real[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
            SAMRAugmentedDataset(real, bad, weights=synth, scheme="brats2021")


def test_tuple_items_format_scale_and_seed(synth: Synthesizer) -> None:
    real = TupleDS()
    ds = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", seed=7)
    item = ds[6]
    assert isinstance(item, tuple) and len(item) == 2
    img, seg = item
    src_img, src_seg = real[ds.source_of(6)]
    assert img.shape == src_img.shape and img.dtype == torch.float32
    assert seg.shape == src_seg.shape and seg.dtype == torch.uint8
    assert set(torch.unique(seg).tolist()) <= {0, 1, 2, 4}
    brain = _brain()
    for c in range(4):  # each sequence in the real item's scale (the weights' normalisation inverted), background 0
        low, high = subject_range(src_img[c].numpy(), brain.numpy(), src_seg.numpy() > 0)
        assert low - 1e-2 <= float(img[c][brain].min()) and float(img[c][brain].max()) <= high + 1e-2
        assert torch.all(img[c][~brain] == 0)
    again = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", seed=7)[6]
    assert torch.equal(again[0], img) and torch.equal(again[1], seg)
    records = [ds.describe(i) for i in range(4, 8)]
    assert all(r["synthetic"] for r in records)
    assert len({str(r["edit"]) + str(r["source"]) for r in records}) > 1  # items differ
    other = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", seed=8)
    assert [other.describe(i) for i in range(4, 8)] != records


def test_dict_2d_items(synth: Synthesizer) -> None:
    real = Dict2D()
    ds = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021")
    item = ds[5]
    src = real[ds.source_of(5)]
    assert set(item) == set(src) and item["id"] == src["id"] and item["z"] == 3
    assert item["image"].shape == (4, 32, 32) and item["label"].dtype == torch.int64
    assert torch.equal(item["brain"], src["brain"])
    with pytest.raises(ValueError, match="2D items need the axial atlas slice"):
        SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", z=None)
    fixed_z = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", z=lambda it: 3)
    assert torch.equal(fixed_z[5]["image"], item["image"])


def test_samraug_instances_stay_normalised(synth: Synthesizer) -> None:
    real = InstanceDS(synth.atlas)
    ds = SAMRAugmentedDataset(real, 0.5, weights=synth)  # scheme 'samr' and model range detected
    item = ds[4]
    assert float(item["image"].min()) >= -1 and float(item["image"].max()) <= 1
    assert torch.all(item["image"][:, ~item["brain"]] == -1)
    torch.testing.assert_close(item["mask"], one_hot(item["label"]))  # the one-hot follows the edit
    assert torch.equal(item["stats"], real[0]["stats"])


def test_per_key_dicts_and_sequence_map(synth: Synthesizer) -> None:
    real = DictPerKey()
    with pytest.raises(ValueError, match=r"none of the model's sequences.*sequence_map="):
        SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", label_key="seg")
    ds = SAMRAugmentedDataset(
        real, 0.5, weights=synth, scheme="brats2021", label_key="seg", sequence_map={"t1n": "T1", "t2f": "FLAIR"}
    )
    item = ds[4]
    src = real[ds.source_of(4)]
    assert item["T1"].shape == (1, *SHAPE) and not torch.equal(item["T1"], src["T1"])
    assert torch.equal(item["affine"], src["affine"])
    with pytest.raises(ValueError, match="images have 3 channels"):
        SAMRAugmentedDataset([(torch.zeros(3, *SHAPE), torch.zeros(SHAPE))], 0.5, weights=synth, scheme="brats2021")
    with pytest.raises(ValueError, match="pass scheme="):
        SAMRAugmentedDataset(TupleDS(), 0.5, weights=synth)


def test_subject_items_record_history(synth: Synthesizer) -> None:
    real = SubjectDS()
    ds = SAMRAugmentedDataset(real, 0.5, weights=synth)
    item = ds[4]
    assert isinstance(item, tio.Subject)
    history = item.get_composed_history()
    assert [t.name for t in history] == ["SAMRSynthesizeFixed"]
    again = history(real[ds.source_of(4)])
    for key in [*SEQS, "seg"]:
        assert torch.equal(again[key].data, item[key].data)


def test_not_on_grid_error(synth: Synthesizer) -> None:
    items = [(torch.ones(4, 30, 32, 8), torch.zeros(30, 32, 8, dtype=torch.uint8))]
    with pytest.raises(ValueError, match="not on the atlas grid"):
        SAMRAugmentedDataset(items, 0.5, weights=synth, scheme="brats2021")


def test_workers_and_batched_path_give_the_same_samples(synth: Synthesizer) -> None:
    """Unbatched in-process, unbatched with 2 workers, and batched (workers edit, main synthesizes): equal."""
    real = Dict2D()
    plain = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", seed=3)
    ref = next(iter(DataLoader(plain, batch_size=8, num_workers=0)))
    workers = next(iter(DataLoader(plain, batch_size=8, num_workers=2)))
    batched_ds = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", seed=3, batched=True)
    assert isinstance(batched_ds[6], PendingSample)
    loader = SynthesizingLoader(DataLoader(batched_ds, batch_size=8, num_workers=2))
    batched = next(iter(loader))
    for other in (workers, batched):
        assert torch.equal(other["label"], ref["label"])
        torch.testing.assert_close(other["image"], ref["image"], atol=1e-5, rtol=1e-6)  # float32 rounding
    assert other["id"] == ref["id"]


def test_batched_volumes_with_user_collate(synth: Synthesizer) -> None:
    calls = []

    def collate(items):
        calls.append(len(items))
        return [tuple(x) for x in items]

    real = TupleDS()
    batched_ds = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021", batched=True)
    plain = SAMRAugmentedDataset(real, 0.5, weights=synth, scheme="brats2021")
    loader = SynthesizingLoader(DataLoader(batched_ds, batch_size=4, collate_fn=collate))
    batches = list(loader)
    assert calls == [4, 4]
    for j, (img, seg) in enumerate(batches[1]):
        ref_img, ref_seg = plain[4 + j]
        assert torch.equal(seg, ref_seg)
        torch.testing.assert_close(img, ref_img, atol=1e-3, rtol=1e-5)


def test_pending_collate_passthrough() -> None:
    collate = PendingCollate()
    out = collate([torch.zeros(2), torch.ones(2)])
    assert torch.equal(out, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    pending = PendingSample(None, torch.zeros(0, 4, 4, dtype=torch.uint8), None, None, torch.zeros(4, 4).bool(), None)
    assert isinstance(collate([pending, torch.zeros(2)]), PendingBatch)


def test_cuda_in_worker_guard(synth: Synthesizer, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = SAMRAugmentedDataset(TupleDS(), 0.5, weights=synth.key, scheme="brats2021", device="cuda")
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    with pytest.raises(RuntimeError, match=r"batched=True.*SynthesizingLoader"):
        ds[5]
    batched = SAMRAugmentedDataset(TupleDS(), 0.5, weights=synth.key, scheme="brats2021", device="cuda", batched=True)
    assert isinstance(batched[5], PendingSample)  # workers only edit masks: no CUDA needed


def test_pickles_for_spawned_workers(synth: Synthesizer) -> None:
    ds = SAMRAugmentedDataset(TupleDS(), 0.5, weights=synth, scheme="brats2021", seed=1)
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[5][1], ds[5][1])
    torch.testing.assert_close(copy[5][0], ds[5][0])
