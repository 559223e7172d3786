"""2D training instances: shapes, one-hot validity, padding and its inverse, normalisation round trip, selection."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from samraug.atlas import Atlas, build_atlas
from samraug.data import load_brats
from samraug.data.slices import (
    SliceDataset,
    pad_or_crop,
    padded_size,
    paste_slices,
    select_slices,
    slice_instances,
    to_subject_scale,
    unpad,
)
from samraug.intensity import Normalization
from samraug.labels import get_scheme

SHAPE = (10, 12, 7)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SEQS = ("t1n", "t2f")
SCHEME = get_scheme("brats2024")


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, dtype=bool)
    brain[1:9, 2:11, 1:6] = True  # slices 0 and 6 have no brain
    seg = np.zeros(SHAPE, dtype=np.int64)
    seg[3:6, 4:7, 2:4] = 2  # lesion on slices 2 and 3
    seg[4, 5, 2:4] = 3
    seg[3, 4, 2] = 4
    out: dict[str, np.ndarray] = {"seg": seg, "brain": brain}
    for k, s in enumerate(SEQS):
        # smooth values without outliers, so few voxels clip
        img = 100.0 * (k + 1) + 20.0 * rng.standard_normal(SHAPE)
        out[s] = np.where(brain, img, 0.0).astype(np.float32)
    return out


def _subject(seed: int, sid: str | None = None) -> tio.Subject:
    a = _arrays(seed)
    return tio.Subject(
        **{s: tio.ScalarImage(tensor=a[s][None], affine=AFFINE) for s in SEQS},
        seg=tio.LabelMap(tensor=a["seg"][None], affine=AFFINE),
        brain=tio.LabelMap(tensor=a["brain"][None].astype(np.uint8), affine=AFFINE),
        subject_id=sid or f"s{seed}",
        scheme="brats2024",
    )


@pytest.fixture(scope="module")
def atlas() -> Atlas:
    return build_atlas([_subject(s) for s in range(3)], SEQS)


# ---------------------------------------------------------------------------------------------- padding
def test_padded_size() -> None:
    assert padded_size((240, 240), 32) == (256, 256)
    assert padded_size((99, 117), 32) == (128, 128)
    assert padded_size((256, 64), 32) == (256, 64)
    assert padded_size((10, 12), 8) == (16, 16)
    with pytest.raises(ValueError, match="positive"):
        padded_size((10, 10), 0)


def test_pad_or_crop_is_centred_and_unpad_inverts_it() -> None:
    x = torch.arange(6.0).reshape(1, 2, 3)
    y = pad_or_crop(x, (4, 6), value=-1.0)
    assert y.shape == (1, 4, 6)
    assert torch.equal(y[0, 1:3, 1:4], x[0]) and (y == -1).sum() == 24 - 6
    assert torch.equal(unpad(y, (2, 3)), x)
    n = np.arange(20).reshape(4, 5)
    c = pad_or_crop(n, (2, 3))
    np.testing.assert_array_equal(c, n[1:3, 1:4])
    back = unpad(c, (4, 5), value=-7)
    np.testing.assert_array_equal(back[1:3, 1:4], c)
    assert (back == -7).sum() == 20 - 6
    assert pad_or_crop(x, (2, 3)) is x  # nothing to do


@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 24), st.integers(1, 24))
def test_unpad_inverts_padding_property(h: int, w: int, th: int, tw: int) -> None:
    x = torch.randn(2, h, w)
    y = pad_or_crop(x, (th, tw), value=-1.0)
    assert y.shape == (2, th, tw)
    if th >= h and tw >= w:
        assert torch.equal(unpad(y, (h, w)), x)
    # cropping then padding back keeps the kept centre
    z = unpad(y, (h, w), value=-1.0)
    kept = z != -1.0
    assert torch.equal(z[kept], x[kept])


# ---------------------------------------------------------------------------------------------- instances
def test_select_slices() -> None:
    samr = SCHEME.to_samr(_arrays(0)["seg"], _arrays(0)["brain"])
    assert select_slices(samr, "brain") == [1, 2, 3, 4, 5]
    assert select_slices(samr, "lesion") == [2, 3]
    assert select_slices(samr, "all") == list(range(7))
    assert select_slices(samr, "brain", min_brain_voxels=73) == []  # 8 x 9 = 72 brain voxels per slice
    assert select_slices(samr, "lesion", min_lesion_voxels=10) == []  # 9 lesion voxels per slice
    with pytest.raises(ValueError, match="selection must be"):
        select_slices(samr, "tumour")  # type: ignore[arg-type]


def test_instance_shapes_one_hot_and_padding(atlas: Atlas) -> None:
    inst = slice_instances(_subject(0), atlas, sequences=SEQS, multiple=8)
    assert [i["z"] for i in inst] == [1, 2, 3, 4, 5]
    i = inst[1]
    assert i["mask"].shape == (5, 16, 16) and i["mask"].dtype == torch.float32
    assert i["label"].shape == (16, 16) and i["label"].dtype == torch.int64
    assert i["atlas"].shape == (6, 16, 16) and i["atlas"].dtype == torch.float32
    assert i["image"].shape == (2, 16, 16) and i["image"].dtype == torch.float32
    assert i["brain"].shape == (16, 16) and i["brain"].dtype == torch.bool
    assert i["stats"].shape == (2, 2) and i["stats"].dtype == torch.float32
    assert i["subject_id"] == "s0" and isinstance(i["z"], int)
    assert i["orig_size"].tolist() == [10, 12]
    # one-hot: one class per pixel, consistent with the label map
    assert torch.all(i["mask"].sum(0) == 1) and torch.equal(i["mask"].argmax(0), i["label"])
    # the label is the SAMR map of the subject's slice, centred in the padded frame (offsets 3 and 2)
    a = _arrays(0)
    samr = SCHEME.to_samr(a["seg"], a["brain"])
    np.testing.assert_array_equal(i["label"][3:13, 2:14].numpy(), samr[..., 2])
    assert set(i["label"].unique().tolist()) == {0, 1, 2, 3, 4}
    # padding: image and atlas -1, mask background, brain False
    pad = torch.ones(16, 16, dtype=torch.bool)
    pad[3:13, 2:14] = False
    assert torch.all(i["image"][:, pad] == -1) and torch.all(i["atlas"][:, pad] == -1)
    assert torch.all(i["mask"][0, pad] == 1) and not i["brain"][pad].any()
    assert torch.equal(i["brain"], i["label"] > 0)
    assert i["image"].min() >= -1 and i["image"].max() <= 1
    # the atlas channels are the atlas stack of this z
    assert torch.equal(i["atlas"][:, 3:13, 2:14], atlas.stack(2))
    # multiple=32 (the default) pads to 32 x 32
    assert slice_instances(_subject(0), atlas, sequences=SEQS)[0]["image"].shape == (2, 32, 32)
    assert slice_instances(_subject(0), atlas, sequences=SEQS, size=(8, 8))[0]["image"].shape == (2, 8, 8)


def test_default_stats_leave_the_lesion_out() -> None:
    a = _arrays(1)
    inst = slice_instances(_subject(1), None, sequences=SEQS, multiple=16)
    normal = a["brain"] & (a["seg"] == 0)
    for k, s in enumerate(SEQS):  # p0.5 / p99.5 of the normal-appearing brain -> -0.8 / -0.2
        lo, hi = np.percentile(a[s][normal].astype(np.float64), [0.5, 99.5])
        unit = (hi - lo) / 0.6
        np.testing.assert_allclose(inst[0]["stats"][k].numpy(), [lo - 0.2 * unit, lo + 1.8 * unit], rtol=1e-5)


def test_stats_are_the_whole_brain_percentiles_and_round_trip() -> None:
    a = _arrays(1)
    inst = slice_instances(_subject(1), None, sequences=SEQS, multiple=16, normalization=Normalization.legacy())
    assert "atlas" not in inst[0]
    for k, s in enumerate(SEQS):
        lo, hi = np.percentile(a[s][a["brain"]].astype(np.float64), [0.5, 99.5])
        np.testing.assert_allclose(inst[0]["stats"][k].numpy(), [lo, hi], rtol=1e-6)
    for i in inst:
        real = to_subject_scale(i["image"], i["stats"], brain=i["brain"], orig_size=i["orig_size"])
        assert real.shape == (2, 10, 12)
        orig = np.stack([a[s][..., i["z"]] for s in SEQS])
        brain = a["brain"][..., i["z"]]
        unclipped = brain[None] & (np.abs(unpad(i["image"], (10, 12)).numpy()) < 1)
        assert unclipped.sum() > 0.9 * 2 * brain.sum()
        np.testing.assert_allclose(real.numpy()[unclipped], orig[unclipped], rtol=1e-5, atol=1e-3)
        assert torch.all(real[:, torch.from_numpy(~brain)] == 0)


def test_selection_and_z_indices(atlas: Atlas) -> None:
    s = _subject(2)
    assert [i["z"] for i in slice_instances(s, atlas, sequences=SEQS, selection="lesion")] == [2, 3]
    allz = slice_instances(s, atlas, sequences=SEQS, selection="all")
    assert [i["z"] for i in allz] == list(range(7))
    assert torch.all(allz[0]["image"] == -1) and torch.all(allz[0]["mask"][0] == 1)
    assert torch.equal(allz[0]["atlas"], pad_or_crop(atlas.stack(0), (32, 32), value=-1.0))
    assert [i["z"] for i in slice_instances(s, atlas, sequences=SEQS, z_indices=[6, 0])] == [6, 0]
    assert slice_instances(s, atlas, sequences=SEQS, min_brain_voxels=1000) == []
    with pytest.raises(IndexError, match="out of range"):
        slice_instances(s, atlas, sequences=SEQS, z_indices=[7])


def test_atlas_channels_follow_the_requested_sequence_order(atlas: Atlas) -> None:
    inst = slice_instances(_subject(0), atlas, sequences=("t2f", "t1n"), multiple=8, z_indices=[3])[0]
    stack = atlas.stack(3)
    assert torch.equal(inst["atlas"][:3, 3:13, 2:14], stack[3:]) and torch.equal(
        inst["atlas"][3:, 3:13, 2:14], stack[:3]
    )


def test_errors(atlas: Atlas) -> None:
    moved = _subject(0, "moved")
    moved["t1n"].affine = np.diag([2.0, 2.0, 2.5, 1.0])
    with pytest.raises(ValueError, match=r"subject 'moved'.*affine"):
        slice_instances(moved, atlas, sequences=SEQS)
    with pytest.raises(ValueError, match=r"has no image \['aptw'\]"):
        slice_instances(_subject(0), None, sequences=(*SEQS, "aptw"))
    with pytest.raises(ValueError, match=r"atlas has no sequence \['t1c'\]"):
        slice_instances(_subject(0), atlas, sequences=("t1c",))
    plain = {**_arrays(0), "subject_id": "plain"}
    with pytest.raises(ValueError, match="pass scheme="):
        slice_instances(plain, None, sequences=SEQS)
    bad = dict(plain, seg=plain["seg"] * 2)  # 6 and 8 are not BraTS 2024 labels
    with pytest.raises(ValueError, match=r"not in scheme 'brats2024'"):
        slice_instances(bad, None, sequences=SEQS, scheme="brats2024")


# ---------------------------------------------------------------------------------------------- dataset
def test_dataset_matches_slice_instances_and_collates(atlas: Atlas) -> None:
    subjects = [_subject(s) for s in range(2)]
    ds = SliceDataset(subjects, atlas, sequences=SEQS, multiple=8)
    assert len(ds) == 10 and ds.index[:2] == [(0, 1), (0, 2)]
    expected = slice_instances(subjects[1], atlas, sequences=SEQS, multiple=8)
    for k in ("mask", "label", "atlas", "image", "brain", "stats"):
        assert torch.equal(ds[7][k], expected[2][k])
    assert ds[7]["z"] == 3 and ds[7]["subject_id"] == "s1"
    lazy = SliceDataset(subjects, atlas, sequences=SEQS, multiple=8, cache=False)
    for j in (7, 0, 9):
        assert torch.equal(lazy[j]["image"], ds[j]["image"]) and torch.equal(lazy[j]["mask"], ds[j]["mask"])
    # the dataset pickles (DataLoader workers with the spawn start method), also given a LabelScheme object
    again = pickle.loads(pickle.dumps(SliceDataset(subjects, atlas, sequences=SEQS, multiple=8, scheme=SCHEME)))
    assert torch.equal(again[7]["image"], ds[7]["image"])
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["mask"].shape == (4, 5, 16, 16) and batch["atlas"].shape == (4, 6, 16, 16)
    assert batch["stats"].shape == (4, 2, 2) and batch["z"].tolist() == [1, 2, 3, 4]
    assert batch["subject_id"] == ["s0"] * 4
    real = to_subject_scale(batch["image"], batch["stats"], brain=batch["brain"], orig_size=batch["orig_size"])
    assert real.shape == (4, 2, 10, 12)


def test_instances_do_not_share_memory_with_the_cache(atlas: Atlas) -> None:
    ds = SliceDataset([_subject(0)], atlas, sequences=SEQS, size=(10, 12))  # no padding needed
    first = ds[0]
    for key in ("image", "label", "mask", "atlas", "stats"):
        first[key].fill_(7)
    again = ds[0]
    assert again["image"].max() <= 1 and again["label"].max() <= 4 and again["stats"].min() != 7
    assert again["atlas"].max() <= 1 and again["mask"].sum(0).eq(1).all()


def test_dataset_lesion_selection_transform_and_errors(atlas: Atlas) -> None:
    ds = SliceDataset([_subject(0)], atlas, sequences=SEQS, selection="lesion", transform=lambda d: {**d, "seen": 1})
    assert [ds[i]["z"] for i in range(len(ds))] == [2, 3] and ds[0]["seen"] == 1
    with pytest.raises(ValueError, match="no slices selected"):
        SliceDataset([_subject(0)], atlas, sequences=SEQS, min_brain_voxels=10_000)
    small = {k: v[:, :10] for k, v in _arrays(1).items()}
    with pytest.raises(ValueError, match="different in-plane shapes"):
        SliceDataset([_subject(0), {**small, "subject_id": "x"}], None, sequences=SEQS, scheme="brats2024")


def test_paste_slices_puts_instances_back_in_place() -> None:
    a = _arrays(0)
    inst = slice_instances(_subject(0), None, sequences=SEQS, multiple=16)
    images = torch.stack([to_subject_scale(i["image"], i["stats"], brain=i["brain"]) for i in inst])
    vol = torch.zeros(2, *SHAPE)
    out = paste_slices(vol, images, [i["z"] for i in inst])
    assert torch.all(vol == 0)  # not modified in place
    orig = torch.from_numpy(np.stack([a[s] for s in SEQS]))
    for i in inst:
        z = i["z"]
        unclipped = torch.from_numpy(a["brain"][..., z])[None] & (unpad(i["image"], (10, 12)).abs() < 1)
        torch.testing.assert_close(out[..., z][unclipped], orig[..., z][unclipped], rtol=1e-5, atol=1e-3)
    assert torch.all(out[..., 0] == 0) and torch.all(out[..., 6] == 0)
    np_out = paste_slices(np.zeros(SHAPE), np.ones((1, 16, 16)), np.array([2]))
    assert np_out[..., 2].sum() == 120 and np_out.sum() == 120
    with pytest.raises(ValueError, match="z indices"):
        paste_slices(vol, images, [1])


def test_from_a_brats_tree_with_aptw(tmp_path: Path) -> None:
    a = _arrays(3)
    case = "BraTS-GLI-00000-000"
    d = tmp_path / case
    d.mkdir()
    for s in ("t1n", "t1c", "t2w", "t2f", "aptw"):
        img = a["t2f"] if s in ("t2f", "t2w") else a["t1n"]
        nib.save(nib.Nifti1Image(img, AFFINE), str(d / f"{case}-{s}.nii.gz"))
    nib.save(nib.Nifti1Image(a["seg"].astype(np.uint8), AFFINE), str(d / f"{case}-seg.nii.gz"))
    (subject,) = load_brats(tmp_path, scheme="brats2024")
    seqs = ("t1n", "t1c", "t2w", "t2f", "aptw")
    atlas = build_atlas([subject], seqs)
    ds = SliceDataset([subject], atlas, sequences=seqs, selection="lesion")
    assert len(ds) == 2 and ds[0]["atlas"].shape == (15, 32, 32) and ds[0]["image"].shape == (5, 32, 32)
    samr = get_scheme("brats2024").to_samr(a["seg"], a["brain"])
    np.testing.assert_array_equal(unpad(ds[0]["label"], (10, 12)).numpy(), samr[..., 2])


def test_native_conditioning_masks_hold_the_scheme_classes(atlas: Atlas) -> None:
    inst = slice_instances(_subject(0), atlas, sequences=SEQS, multiple=8, conditioning="native")
    i = inst[1]  # z = 2: labels 2 (SNFH), 3 (ET) and 4 (RC) of brats2024
    assert i["mask"].shape == (len(SCHEME.classes("native")), 16, 16) == (6, 16, 16)
    assert torch.all(i["mask"].sum(0) == 1) and torch.equal(i["mask"].argmax(0), i["label"])
    a = _arrays(0)
    native = SCHEME.encode(a["seg"], a["brain"], "native")
    np.testing.assert_array_equal(i["label"][3:13, 2:14].numpy(), native[..., 2])
    # decoding gives back the subject's labels inside the lesion (no information lost, unlike SAMR: ET -> tumor)
    lesion = a["seg"][..., 2] > 0
    decoded = SCHEME.decode(i["label"][3:13, 2:14].numpy(), "native")
    np.testing.assert_array_equal(decoded[lesion], a["seg"][..., 2][lesion])
    ds = SliceDataset([_subject(0)], atlas, sequences=SEQS, multiple=8, conditioning="native")
    assert torch.equal(ds[1]["mask"], i["mask"])
    with pytest.raises(ValueError, match="unknown conditioning"):
        slice_instances(_subject(0), atlas, sequences=SEQS, conditioning="brats")
