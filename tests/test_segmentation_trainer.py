"""The benchmark's segmentation trainer: it learns, it is reproducible, it predicts and scores volumes."""

from __future__ import annotations

import math

import pytest
import torch

from samraug.training.segmentation import (
    EvalVolume,
    SegmentationConfig,
    _random_crops,
    evaluate_segmenter,
    predict_volume,
    segmentation_loss,
    train_segmenter,
)


def _toy_item(g: torch.Generator, size: int = 32) -> dict[str, torch.Tensor]:
    """A trivially separable slice: brain (label 1, intensity 0), a square lesion (label 4, intensity +1),
    background (label 0, intensity -1)."""
    label = torch.zeros(size, size, dtype=torch.long)
    label[4:-4, 4:-4] = 1
    s = int(torch.randint(4, 10, (1,), generator=g))
    y, x = (int(v) for v in torch.randint(5, size - 5 - s, (2,), generator=g))
    label[y : y + s, x : x + s] = 4
    image = torch.full((1, size, size), -1.0)
    image[0][label == 1] = 0.0
    image[0][label == 4] = 1.0
    image = image + 0.05 * torch.randn(image.shape, generator=g)
    return {"image": image, "label": label}


def _toy_set(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [_toy_item(g) for _ in range(n)]


def _dice(pred: torch.Tensor, gt: torch.Tensor) -> float:
    inter = (pred & gt).sum().item()
    return 2 * inter / max(1, pred.sum().item() + gt.sum().item())


def test_trainer_learns_a_separable_task() -> None:
    torch.manual_seed(0)
    train = _toy_set(32, seed=0)
    cfg = SegmentationConfig(steps=60, batch_size=8, lr=3e-3, depth=2, base_channels=8, device="cpu", seed=0)
    result = train_segmenter(train, cfg)
    assert len(result.losses) == 60 and all(math.isfinite(v) for v in result.losses)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.6 * first
    test = _toy_set(8, seed=1)
    image = torch.stack([t["image"] for t in test], dim=-1)  # (1, H, W, Z): the slices as a volume
    label = torch.stack([t["label"] for t in test], dim=-1)
    pred = predict_volume(result.model, image)
    lesion_fraction = (label == 4).float().mean().item()
    dice = _dice(pred == 4, label == 4)
    assert dice > 0.7 > 2 * lesion_fraction  # far above what a chance guess of that size would give
    assert not result.model.training


def test_same_seed_same_training_and_different_seed_differs() -> None:
    data = _toy_set(8, seed=2)
    cfg = SegmentationConfig(steps=3, batch_size=4, depth=1, base_channels=4, device="cpu", seed=5)
    a, b = train_segmenter(data, cfg), train_segmenter(data, cfg)
    assert a.losses == b.losses
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = train_segmenter(data, SegmentationConfig(steps=3, batch_size=4, depth=1, base_channels=4, device="cpu", seed=6))
    assert c.losses != a.losses


def test_schedule_is_constant_then_linear_decay() -> None:
    cfg = SegmentationConfig(steps=4, batch_size=2, depth=1, base_channels=2, device="cpu", lr=1e-3)
    result = train_segmenter(_toy_set(4, seed=3), cfg)
    # 4 steps, decay from step 2: factors 1, 1, (4 - 2) / 2, (4 - 3) / 2
    assert result.lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])


def test_loss_is_cross_entropy_plus_gdl() -> None:
    logits = torch.zeros(2, 5, 4, 4)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    assert float(segmentation_loss(logits, target, dice_weight=0.0)) == pytest.approx(math.log(5))
    # a confident correct prediction: CE ~ 0 and GDL ~ 0
    perfect = torch.full((2, 5, 4, 4), -20.0)
    perfect[:, 0] = 20.0
    assert float(segmentation_loss(perfect, target)) < 1e-3


def test_random_crops_hold_lesion_when_asked() -> None:
    g = torch.Generator().manual_seed(0)
    items = _toy_set(6, seed=4)
    images = torch.stack([i["image"] for i in items])
    labels = torch.stack([i["label"] for i in items])
    ci, cl = _random_crops(images, labels, 16, foreground_fraction=1.0, generator=g)
    assert ci.shape == (6, 1, 16, 16) and cl.shape == (6, 16, 16)
    assert all(bool((c == 4).any()) for c in cl)
    # crops are consistent: the lesion intensity sits on the lesion label
    assert torch.all(ci[:, 0][cl == 4] > 0.5)


def test_crop_training_predicts_whole_slices() -> None:
    data = _toy_set(4, seed=5)
    cfg = SegmentationConfig(steps=2, batch_size=2, depth=2, base_channels=4, device="cpu", crop_size=16)
    result = train_segmenter(data, cfg)
    assert predict_volume(result.model, torch.randn(1, 30, 26, 3)).shape == (30, 26, 3)


def test_predict_volume_skips_background_slices() -> None:
    from samraug.models.unet import UNet

    model = UNet(in_channels=2, out_channels=5, depth=2, base_channels=4)
    with torch.no_grad():  # bias the head towards class 3 everywhere
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0, 0.0]))
    vol = torch.full((2, 12, 10, 4), -1.0)
    vol[:, :, :, 1] = 0.5
    pred = predict_volume(model.eval(), vol)
    assert pred.shape == (12, 10, 4)
    assert (pred[..., 1] == 3).all() and (pred[..., [0, 2, 3]] == 0).all()


def test_evaluate_segmenter_scores_each_subject_and_region() -> None:
    from samraug.models.unet import UNet

    model = UNet(in_channels=1, out_channels=5, depth=1, base_channels=2).eval()
    label = torch.zeros(8, 8, 4, dtype=torch.long)
    label[2:6, 2:6, 1:3] = 2
    vols = [
        EvalVolume("a", torch.randn(1, 8, 8, 4), label, (1.0, 1.0, 2.0)),
        EvalVolume("b", torch.randn(1, 8, 8, 4), label),
    ]
    scores = evaluate_segmenter(model, vols, regions=("edema", "tumor"))
    assert sorted(scores) == ["a", "b"]
    assert sorted(scores["a"]) == ["edema", "tumor"]
    assert set(scores["a"]["edema"]) >= {"dice", "hd95", "sensitivity", "specificity"}
    assert all(math.isfinite(v) for s in scores.values() for r in s.values() for v in r.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"decay_start": 1.5}, "decay_start"),
        ({"crop_size": 20, "depth": 3}, "crop_size"),
        ({"lr": -1.0}, "lr"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmentationConfig(**kwargs)


def test_bad_data_raise_clear_errors() -> None:
    cfg = SegmentationConfig(steps=1, batch_size=1, depth=2, base_channels=2, device="cpu")
    with pytest.raises(ValueError, match="empty"):
        train_segmenter([], cfg)
    with pytest.raises(KeyError, match="image_key"):
        train_segmenter([{"img": torch.zeros(1, 8, 8), "label": torch.zeros(8, 8, dtype=torch.long)}], cfg)
    with pytest.raises(ValueError, match="divisible"):
        train_segmenter([{"image": torch.zeros(1, 6, 6), "label": torch.zeros(6, 6, dtype=torch.long)}], cfg)
    bad = torch.zeros(1, 8, 8)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_segmenter([{"image": bad, "label": torch.zeros(8, 8, dtype=torch.long)}], cfg)
    with pytest.raises(ValueError, match="labels range"):
        train_segmenter([{"image": torch.zeros(1, 8, 8), "label": torch.full((8, 8), 7)}], cfg)
    with pytest.raises(ValueError, match=r"\(n, X, Y, Z\)"):
        EvalVolume("x", torch.zeros(8, 8, 4), torch.zeros(8, 8, 4, dtype=torch.long))


def test_class_foreground_sampling_sees_a_small_class_as_often_as_a_large_one() -> None:
    """foreground_sampling="class" (nnU-Net v2's way): a slice with a large and a tiny lesion class gives patches
    centred on each about half the time; "voxel" almost never centres on the tiny one; anything else is refused."""
    labels = torch.ones(1, 64, 64, dtype=torch.long)
    labels[0, 4:60, 4:40] = 2  # a large class
    labels[0, 56:60, 56:60] = 3  # a tiny one, far from it: a 16-pixel patch holding it cannot hold much of class 2
    images = labels[:, None].float()
    batch_i, batch_l = images.repeat(400, 1, 1, 1), labels.repeat(400, 1, 1)
    counts = {}
    for sampling in ("voxel", "class"):
        g = torch.Generator().manual_seed(0)
        _, cl = _random_crops(batch_i, batch_l, 16, foreground_fraction=1.0, generator=g, sampling=sampling)
        counts[sampling] = sum(bool((c == 3).any()) for c in cl) / len(cl)
    assert counts["voxel"] < 0.1 and 0.35 < counts["class"] < 0.65
    with pytest.raises(ValueError, match="foreground_sampling must be one of"):
        SegmentationConfig(foreground_sampling="balanced")
