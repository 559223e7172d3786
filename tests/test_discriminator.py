"""LabelWiseDiscriminators: output format, ROI invariance, no in-place modification."""

from __future__ import annotations

import pytest
import torch

from samraug.labels import ROI_GROUPS, one_hot, roi_masks
from samraug.models.discriminator import LabelWiseDiscriminators, PatchDiscriminator


def _batch(size: int = 32, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    labels[:, 4:-4, 4:-4] = 1  # brain
    labels[:, 10:18, 10:16] = 2  # edema
    labels[:, 12:16, 12:14] = 4  # tumor
    labels[:, 20:24, 8:12] = 3  # cavity
    images = torch.rand(batch, 5, size, size, generator=g) * 2 - 1
    return one_hot(labels), images


def _small(**kwargs) -> LabelWiseDiscriminators:
    torch.manual_seed(0)
    return LabelWiseDiscriminators(base_channels=8, **kwargs)


def test_output_structure_label_wise() -> None:
    d = _small()
    mask, images = _batch()
    out = d(mask, images)
    assert d.names == ("background s1", "background s2", "brain s1", "brain s2", "lesion s1", "lesion s2")
    assert len(out) == 6
    for feats in out:
        assert isinstance(feats, list) and len(feats) == 3 + 2  # n_layers + 2, last = prediction
        assert feats[-1].shape[:2] == (2, 1)
    # scale 1: 32 -> 17 -> 9 -> 5 -> 6 -> 7; scale 2 (AvgPool2d(3, 2, 1): 32 -> 16): 16 -> 9 -> 5 -> 3 -> 4 -> 5
    assert [f[-1].shape[-1] for f in out] == [7, 5, 7, 5, 7, 5]


def test_output_structure_global() -> None:
    d = _small(label_wise=False, n_layers=2)
    mask, images = _batch()
    out = d(mask, images)
    assert d.names == ("global s1", "global s2") and len(out) == 2
    assert all(len(f) == 4 for f in out)


def test_patch_feature_shapes_by_hand() -> None:
    # 4x4 kernels with padding 2: stride 2 -> floor((n + 4 - 4) / 2) + 1, stride 1 -> n + 1
    d = PatchDiscriminator(10, base_channels=4, n_layers=3)
    feats = d(torch.zeros(1, 10, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 33, 33), (8, 17, 17), (16, 9, 9), (32, 10, 10), (1, 11, 11)]


@pytest.mark.parametrize("roi", range(3))
def test_roi_discriminators_blind_outside_their_roi(roi: int) -> None:
    d = _small()
    mask, images = _batch()
    outside = 1 - roi_masks(mask)[:, roi : roi + 1]
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    changed = images + outside * noise
    assert not torch.equal(changed, images)
    with torch.no_grad():
        a, b = d(mask, images), d(mask, changed)
    for k in range(6):
        same = all(torch.equal(x, y) for x, y in zip(a[k], b[k], strict=True))
        if k // 2 == roi:
            assert same, f"discriminator {d.names[k]} changed when only pixels outside its ROI changed"
        else:
            assert not same, f"discriminator {d.names[k]} should see the change"


def test_global_discriminators_see_everything() -> None:
    d = _small(label_wise=False)
    mask, images = _batch()
    changed = images.clone()
    changed[:, :, 0, 0] += 1  # a background pixel
    with torch.no_grad():
        a, b = d(mask, images), d(mask, changed)
    assert not torch.equal(a[0][-1], b[0][-1]) and not torch.equal(a[1][-1], b[1][-1])


def test_inputs_not_modified_in_place() -> None:
    d = _small()
    mask, images = _batch()
    images.requires_grad_(True)
    mask_before, images_before = mask.clone(), images.detach().clone()
    out = d(mask, images)
    sum(f[-1].mean() for f in out).backward()
    assert torch.equal(mask, mask_before)
    assert torch.equal(images.detach(), images_before)
    assert images.grad is not None and float(images.grad.abs().sum()) > 0


def test_gradients_reach_every_parameter() -> None:
    d = _small(norm="instance")
    mask, images = _batch()
    out = d(mask, images)
    sum((f[-1] * torch.randn_like(f[-1])).sum() for f in out).backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_masking_uses_label_roi_groups() -> None:
    # a mask that is all lesion: the background and brain discriminators see only zeros
    d = _small(norm="none")
    mask = one_hot(torch.full((1, 32, 32), ROI_GROUPS["lesion"][0]))
    images = torch.rand(1, 5, 32, 32)
    with torch.no_grad():
        out = d(mask, images)
        zeros = d(mask * 0, images * 0)
    for k in range(4):
        assert torch.equal(out[k][-1], zeros[k][-1])
    assert not torch.equal(out[4][-1], zeros[4][-1])


def test_bad_inputs_raise() -> None:
    d = _small()
    mask, images = _batch()
    with pytest.raises(ValueError, match=r"mask_onehot must be \(B, 5, H, W\)"):
        d(mask[:, :3], images)
    with pytest.raises(ValueError, match=r"images must be \(B, 5, H, W\)"):
        d(mask, images[:, :4])
    with pytest.raises(ValueError, match=r"differ in batch or size"):
        d(mask, images[:, :, :16, :16])
    with pytest.raises(ValueError, match=r"n_labels >= 3, got 2.*label_wise=False"):
        LabelWiseDiscriminators(n_labels=2)
    with pytest.raises(ValueError, match=r"n_layers must be >= 1"):
        PatchDiscriminator(3, n_layers=0)


@pytest.mark.parametrize("roi", range(3))
def test_native_classes_rois_blind_outside_their_roi(roi: int) -> None:
    # brats2024 native conditioning: 6 classes (background, brain, NETC, SNFH, ET, RC); every lesion class
    # (channels 2..5) belongs to the lesion ROI
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, 4:-4, 4:-4] = 1
    labels[:, 8:12, 8:12] = 2
    labels[:, 14:18, 8:12] = 3
    labels[:, 20:24, 8:12] = 4
    labels[:, 8:12, 20:24] = 5
    mask = one_hot(labels, 6)
    torch.manual_seed(0)
    d = LabelWiseDiscriminators(n_labels=6, n_sequences=2, base_channels=8)
    images = torch.rand(1, 2, 32, 32) * 2 - 1
    inside = roi_masks(mask)[:, roi : roi + 1]
    assert roi != 2 or bool(inside[0, 0, 8:12, 20:24].all())  # RC (channel 5) is lesion
    changed = images + (1 - inside) * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = d(mask, images), d(mask, changed)
    for k in range(6):
        same = all(torch.equal(x, y) for x, y in zip(a[k], b[k], strict=True))
        assert same == (k // 2 == roi), d.names[k]
