"""MONAI: SAMRSynthesized keeps MetaTensors, is Randomizable (never cached), and a mixed real/synthetic batch trains
one step of a MONAI UNet after ConvertToMultiChannelBasedOnBratsClassesd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_dataset import _case
from tiny_model import AFFINE, SEQS, SHAPE

monai = pytest.importorskip("monai")
from monai.data import CacheDataset, DataLoader, MetaTensor, list_data_collate  # noqa: E402
from monai.networks.nets import UNet  # noqa: E402
from monai.transforms import Compose, ConvertToMultiChannelBasedOnBratsClassesd, Randomizable  # noqa: E402

from samraug.dataset import SAMRAugmentedDataset  # noqa: E402
from samraug.editing import EditPolicy  # noqa: E402
from samraug.monai import SAMRSynthesized  # noqa: E402
from samraug.synthesis import Synthesizer  # noqa: E402

NO_EDIT = EditPolicy(p_remove=0, p_swap=0, p_mirror=0, p_scale=0, p_rotate=0, p_perturb=0, p_move=0)


@pytest.fixture(scope="module")
def synth(tiny_weights: str) -> Synthesizer:
    return Synthesizer(tiny_weights, device="cpu")


def _item(i: int) -> dict:
    images, seg, _ = _case(i)
    aff = torch.as_tensor(AFFINE)
    return {
        "image": MetaTensor(images, affine=aff, meta={"filename_or_obj": f"case{i}"}),
        "label": MetaTensor(seg[None], affine=aff, meta={"filename_or_obj": f"case{i}-seg"}),
    }


def test_keeps_meta_tensors_and_affine(synth: Synthesizer) -> None:
    t = SAMRSynthesized(keys="image", label_key="label", ratio=1.0, weights=synth, scheme="brats2021")
    t.set_random_state(seed=0)
    item = _item(0)
    out = t(item)
    for key in ("image", "label"):
        assert isinstance(out[key], MetaTensor), key
        assert np.allclose(np.asarray(out[key].affine), AFFINE)
        assert out[key].meta["filename_or_obj"] == item[key].meta["filename_or_obj"]
        assert out[key].shape == item[key].shape and out[key].dtype == item[key].dtype
    assert not torch.equal(out["image"].as_tensor(), item["image"].as_tensor())  # painted
    assert torch.equal(item["image"].as_tensor(), _item(0)["image"].as_tensor())  # input untouched
    assert t.last_record is not None and "edit" in t.last_record


def test_per_sequence_keys_and_same_seed_same_sample(synth: Synthesizer) -> None:
    def split(i: int) -> dict:
        d = _item(i)
        return {s: d["image"][k : k + 1] for k, s in enumerate(SEQS)} | {"label": d["label"]}

    a = SAMRSynthesized(keys=SEQS, ratio=1.0, weights=synth, scheme="brats2021")
    b = SAMRSynthesized(keys=SEQS, ratio=1.0, weights=synth, scheme="brats2021")
    a.set_random_state(seed=3)
    b.set_random_state(seed=3)
    x, y = a(split(1)), b(split(1))
    for key in (*SEQS, "label"):
        assert isinstance(x[key], MetaTensor) and torch.equal(x[key].as_tensor(), y[key].as_tensor())


def test_randomizable_so_cache_dataset_never_caches_it(synth: Synthesizer) -> None:
    t = SAMRSynthesized(keys="image", ratio=1.0, weights=synth, scheme="brats2021")
    assert isinstance(t, Randomizable)
    data = [_item(0)]
    ds = CacheDataset(data, transform=Compose([t]), cache_rate=1.0, progress=False)
    assert torch.equal(ds._cache[0]["image"].as_tensor(), data[0]["image"].as_tensor())  # cached before synthesis
    seeds = set()
    for _ in range(3):
        ds[0]
        seeds.add(t.last_record["seed"])  # a new draw per access: the output is never served from the cache
    assert len(seeds) == 3


def test_mismatched_affine_is_refused(synth: Synthesizer) -> None:
    item = _item(0)
    shifted = AFFINE.copy()
    shifted[0, 3] += 10
    item["image"] = MetaTensor(item["image"].as_tensor(), affine=torch.as_tensor(shifted))
    t = SAMRSynthesized(keys="image", ratio=1.0, weights=synth, scheme="brats2021")
    with pytest.raises(ValueError, match=r"'image'.*affine"):
        t(item)


def test_mixed_batch_collates_and_trains_one_unet_step(synth: Synthesizer) -> None:
    real = [_item(i) for i in range(2)]
    post = Compose([ConvertToMultiChannelBasedOnBratsClassesd(keys="label")])
    mixed = SAMRAugmentedDataset(real, n_synthetic=2, weights=synth, scheme="brats2021", transform=post, policy=NO_EDIT)
    loader = DataLoader(mixed, batch_size=4, shuffle=False, num_workers=0, collate_fn=list_data_collate)
    batch = next(iter(loader))
    assert isinstance(batch["image"], MetaTensor) and isinstance(batch["label"], MetaTensor)
    assert batch["image"].shape == (4, len(SEQS), *SHAPE) and batch["label"].shape == (4, 3, *SHAPE)
    assert [mixed.is_synthetic(i) for i in range(4)] == [False, False, True, True]
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=len(SEQS), out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = batch["image"].as_tensor() / 1000.0
    y = batch["label"].as_tensor().float()
    before = [p.detach().clone() for p in net.parameters()]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
