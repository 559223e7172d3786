"""Tests for samraug.losses: golden values computed by hand, gradients, and the eq. 5 composition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samraug.losses import (
    adversarial_loss,
    discriminator_objective,
    feature_matching_loss,
    generalized_dice_loss,
    generator_objective,
    shape_consistency_loss,
    smooth_channels,
)


def _two_class_case() -> tuple[torch.Tensor, torch.Tensor]:
    """4 pixels (2x2), 2 classes. Target: class 0 on pixels 0-2, class 1 on pixel 3."""
    target = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]).reshape(1, 2, 2, 2)
    probs = torch.tensor([[0.9, 0.8, 0.6, 0.3], [0.1, 0.2, 0.4, 0.7]]).reshape(1, 2, 2, 2)
    return probs, target


# ------------------------------------------------------------------------------------------------ GDL
def test_gdl_sudre_hand_computed():
    probs, target = _two_class_case()
    # r0 = 3, r1 = 1 -> w0 = 1/9, w1 = 1.  I0 = 0.9 + 0.8 + 0.6 = 2.3, I1 = 0.7.  S0 = 2.6, S1 = 1.4.
    # num = 2 (2.3/9 + 0.7) = 17.2/9 ; den = (3 + 2.6)/9 + (1 + 1.4) = 27.2/9 ; GDL = 1 - 17.2/27.2 = 10/27.2
    loss = generalized_dice_loss(probs, target)
    assert loss.item() == pytest.approx(10 / 27.2, abs=1e-6)


def test_gdl_uniform_hand_computed():
    probs, target = _two_class_case()
    # num = 2 (2.3 + 0.7) = 6 ; den = (3 + 2.6) + (1 + 1.4) = 8 ; GDL = 1 - 6/8 = 0.25
    loss = generalized_dice_loss(probs, target, weighting="uniform")
    assert loss.item() == pytest.approx(0.25, abs=1e-6)


def test_gdl_empty_class_gets_largest_weight_hand_computed():
    probs, target = _two_class_case()
    target = torch.cat([target, torch.zeros(1, 1, 2, 2)], 1)  # class 2 absent from the target
    extra = torch.tensor([0.0, 0.0, 0.0, 0.5]).reshape(1, 1, 2, 2)
    probs = torch.cat([probs, extra], 1)
    # w = (1/9, 1, 1): class 2 gets the largest weight.  num = 17.2/9 ; den = 27.2/9 + 1 * 0.5 = 31.7/9
    loss = generalized_dice_loss(probs, target)
    assert loss.item() == pytest.approx(1 - 17.2 / 31.7, abs=1e-6)
    # probability on the absent class is penalised (weight 0 would leave the loss unchanged)
    assert loss.item() > generalized_dice_loss(probs[:, :2], target[:, :2]).item()


def test_gdl_weights_match_raw_sudre_formula():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(3, 4, 8, 8, dtype=torch.float64), 1)
    target = torch.nn.functional.one_hot(torch.randint(0, 4, (3, 8, 8)), 4).movedim(-1, 1).double()
    r = target.sum((2, 3))
    w = 1 / r**2
    num = 2 * (w * (probs * target).sum((2, 3))).sum(1)
    den = (w * (target + probs).sum((2, 3))).sum(1)
    expected = 1 - num / den
    got = generalized_dice_loss(probs, target, reduction="none")
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert generalized_dice_loss(probs, target).item() == pytest.approx(expected.mean().item(), abs=1e-6)
    assert generalized_dice_loss(probs, target, reduction="sum").item() == pytest.approx(
        expected.sum().item(), abs=1e-6
    )


def test_gdl_single_class_is_eq3():
    torch.manual_seed(1)
    s = torch.rand(2, 1, 6, 6)
    r = (torch.rand(2, 1, 6, 6) > 0.5).float()
    eq3 = 1 - 2 * (r * s).sum((1, 2, 3)) / (r.sum((1, 2, 3)) + s.sum((1, 2, 3)))
    torch.testing.assert_close(generalized_dice_loss(s, r, reduction="none"), eq3, atol=1e-6, rtol=0)


@pytest.mark.parametrize("weighting", ["sudre", "uniform"])
def test_gdl_perfect_and_disjoint(weighting):
    labels = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    assert generalized_dice_loss(onehot, onehot, weighting=weighting).item() == pytest.approx(0.0, abs=1e-6)
    wrong = onehot.roll(1, dims=1)  # every pixel predicts another class
    assert generalized_dice_loss(wrong, onehot, weighting=weighting).item() == pytest.approx(1.0, abs=1e-6)


def test_gdl_sudre_differs_from_uniform_on_imbalance():
    probs, target = _two_class_case()
    assert generalized_dice_loss(probs, target).item() != pytest.approx(
        generalized_dice_loss(probs, target, weighting="uniform").item(), abs=1e-3
    )


def test_gdl_all_empty_target_finite_values_and_gradients():
    target = torch.zeros(2, 3, 4, 4)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = generalized_dice_loss(torch.sigmoid(logits), target)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1.0, abs=1e-4)
    assert torch.isfinite(logits.grad).all()
    assert generalized_dice_loss(torch.zeros(2, 3, 4, 4), target).item() == 0.0  # empty vs empty: perfect


def test_gdl_empty_class_gradients_finite_3d():
    target = torch.zeros(1, 3, 4, 4, 4)
    target[:, 0] = 1  # classes 1 and 2 empty
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    loss = generalized_dice_loss(torch.softmax(logits, 1), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_gdl_label_map_target_equals_one_hot():
    probs, target = _two_class_case()
    labels = target.argmax(1)
    assert generalized_dice_loss(probs, labels).item() == pytest.approx(generalized_dice_loss(probs, target).item())


def test_gdl_half_precision_is_computed_in_float32():
    probs, target = _two_class_case()
    loss = generalized_dice_loss(probs.bfloat16(), target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(10 / 27.2, abs=1e-2)


def test_gdl_errors():
    probs, target = _two_class_case()
    with pytest.raises(ValueError, match="softmax"):
        generalized_dice_loss(probs * 5 - 2, target)
    with pytest.raises(ValueError, match="does not match"):
        generalized_dice_loss(probs, target[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        generalized_dice_loss(probs.clone().fill_(float("nan")), target)
    with pytest.raises(ValueError, match="weighting"):
        generalized_dice_loss(probs, target, weighting="inverse")
    with pytest.raises(ValueError, match="outside"):
        generalized_dice_loss(probs, torch.full((1, 2, 2), 3))


# ------------------------------------------------------------------------------------------------ LC (eq. 4)
def test_shape_consistency_is_sum_of_two_gdl_terms():
    torch.manual_seed(2)
    x = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 8, 8)), 5).movedim(-1, 1).float()
    u_y = torch.softmax(torch.randn(2, 5, 8, 8), 1)
    u_gx = torch.softmax(torch.randn(2, 5, 8, 8), 1)
    both = shape_consistency_loss(x, u_y, u_gx)
    expected = generalized_dice_loss(u_y, x) + generalized_dice_loss(u_gx, x)
    assert both.item() == pytest.approx(expected.item())
    assert shape_consistency_loss(x, None, u_gx).item() == pytest.approx(generalized_dice_loss(u_gx, x).item())
    with pytest.raises(ValueError, match="seg_real"):
        shape_consistency_loss(x, None, None)


# ------------------------------------------------------------------------------------------------ feature matching
def _fm_case(requires_grad: bool = False):
    real = [
        [torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 100.0)],
        [torch.ones(1, 2, 1, 1), torch.zeros(1, 1, 1, 1)],
    ]
    fake = [
        [torch.tensor([[[[1.0, 0.0], [3.0, 8.0]]]]), torch.full((1, 1, 1, 1), 3.0), torch.full((1, 1, 1, 1), -50.0)],
        [torch.tensor([2.0, 3.0]).reshape(1, 2, 1, 1), torch.full((1, 1, 1, 1), 7.0)],
    ]
    if requires_grad:
        for group in (real, fake):
            for feats in group:
                for f in feats:
                    f.requires_grad_(True)
    return real, fake


def test_feature_matching_hand_computed():
    real, fake = _fm_case()
    # D1 layer 0: diffs (0, -2, 0, 4) -> MSE 20/4 = 5, L1 6/4 = 1.5; layer 1: diff 3 -> MSE 9, L1 3;
    # D2 layer 0: diffs (1, 2) -> MSE 5/2 = 2.5, L1 1.5. The prediction maps (last) are excluded.
    assert feature_matching_loss(real, fake).item() == pytest.approx(5 + 9 + 2.5)
    assert feature_matching_loss(real, fake, norm="l1").item() == pytest.approx(1.5 + 3 + 1.5)


def test_feature_matching_gradients_reach_fake_only():
    real, fake = _fm_case(requires_grad=True)
    feature_matching_loss(real, fake).backward()
    assert all(f.grad is None for feats in real for f in feats)
    assert fake[0][0].grad is not None and fake[0][0].grad.abs().sum() > 0
    assert fake[0][-1].grad is None  # the prediction map does not enter feature matching


def test_feature_matching_errors():
    real, fake = _fm_case()
    with pytest.raises(ValueError, match="discriminator outputs"):
        feature_matching_loss(real, fake[:1])
    with pytest.raises(ValueError, match="feature tensors"):
        feature_matching_loss(real, [fake[0][:2], fake[1]])
    with pytest.raises(ValueError, match="norm"):
        feature_matching_loss(real, fake, norm="l3")


# ------------------------------------------------------------------------------------------------ adversarial
X = torch.tensor([[[[-2.0, 0.5], [1.0, 3.0]]]])
VALUES = (-2.0, 0.5, 1.0, 3.0)


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.mark.parametrize(
    ("mode", "real", "for_d", "expected"),
    [
        ("lsgan", True, True, (9 + 0.25 + 0 + 4) / 4),
        ("lsgan", False, True, (4 + 0.25 + 1 + 9) / 4),
        ("lsgan", True, False, (9 + 0.25 + 0 + 4) / 4),
        ("bce", True, True, sum(_softplus(-v) for v in VALUES) / 4),
        ("bce", False, True, sum(_softplus(v) for v in VALUES) / 4),
        ("hinge", True, True, (3 + 0.5 + 0 + 0) / 4),
        ("hinge", False, True, (0 + 1.5 + 2 + 4) / 4),
        ("hinge", True, False, -(-2 + 0.5 + 1 + 3) / 4),
    ],
)
def test_adversarial_loss_known_inputs(mode, real, for_d, expected):
    one = adversarial_loss([[torch.zeros(1, 3, 2, 2), X]], target_is_real=real, mode=mode, for_discriminator=for_d)
    assert one.item() == pytest.approx(expected, abs=1e-6)
    # summed over discriminators; a bare prediction tensor per discriminator is accepted too
    two = adversarial_loss([[X], X], target_is_real=real, mode=mode, for_discriminator=for_d)
    assert two.item() == pytest.approx(2 * expected, abs=1e-6)


def test_adversarial_loss_errors():
    with pytest.raises(ValueError, match="target_is_real=True"):
        adversarial_loss([[X]], target_is_real=False, mode="hinge", for_discriminator=False)
    with pytest.raises(ValueError, match="GAN mode"):
        adversarial_loss([[X]], target_is_real=True, mode="wgan")
    with pytest.raises(ValueError, match="non-empty list"):
        adversarial_loss([], target_is_real=True)


# ------------------------------------------------------------------------------------------------ objectives
def _d_outputs(seed: int, requires_grad: bool):
    g = torch.Generator().manual_seed(seed)
    return [
        [torch.randn(2, 4, 8, 8, generator=g).requires_grad_(requires_grad), torch.randn(2, 1, 6, 6, generator=g)]
        for _ in range(6)
    ]


@pytest.mark.parametrize("gan_mode", ["lsgan", "bce", "hinge"])
def test_generator_objective_total_is_eq5(gan_mode):
    d_fake, d_real = _d_outputs(0, True), _d_outputs(1, True)
    x = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 8, 8)), 5).movedim(-1, 1).float()
    u_gx = torch.softmax(torch.randn(2, 5, 8, 8), 1)
    out = generator_objective(d_fake, d_real, seg_fake=u_gx, mask_onehot=x, gan_mode=gan_mode)
    assert set(out) == {"gan", "fm", "lc", "total"}
    assert out["gan"].item() == pytest.approx(
        adversarial_loss(d_fake, True, mode=gan_mode, for_discriminator=False).item()
    )
    assert out["fm"].item() == pytest.approx(feature_matching_loss(d_real, d_fake).item())
    assert out["lc"].item() == pytest.approx(generalized_dice_loss(u_gx, x).item())
    assert out["total"].item() == pytest.approx(out["gan"].item() + 5 * out["fm"].item() + out["lc"].item(), rel=1e-6)
    custom = generator_objective(d_fake, d_real, seg_fake=u_gx, mask_onehot=x, lambda_fm=2.0, lambda_lc=0.5)
    assert custom["total"].item() == pytest.approx(
        custom["gan"].item() + 2 * custom["fm"].item() + 0.5 * custom["lc"].item(), rel=1e-6
    )


def test_generator_objective_gradients_and_ablations():
    d_fake, d_real = _d_outputs(0, True), _d_outputs(1, True)
    out = generator_objective(d_fake, d_real)
    assert out["lc"].item() == 0.0  # no-LC ablation
    out["total"].backward()
    assert all(f.grad is None for feats in d_real for f in feats)  # real branch detached
    assert d_fake[0][0].grad is not None and d_fake[0][0].grad.abs().sum() > 0
    no_fm = generator_objective(_d_outputs(0, False), None)
    assert no_fm["fm"].item() == 0.0 and no_fm["total"].item() == pytest.approx(no_fm["gan"].item())
    with pytest.raises(ValueError, match="mask_onehot"):
        generator_objective(d_fake, d_real, seg_fake=torch.rand(2, 5, 8, 8))


def test_generator_objective_seg_real_gives_full_eq4():
    x = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 8, 8)), 5).movedim(-1, 1).float()
    u_y, u_gx = torch.softmax(torch.randn(2, 5, 8, 8), 1), torch.softmax(torch.randn(2, 5, 8, 8), 1)
    out = generator_objective(_d_outputs(0, False), None, seg_fake=u_gx, seg_real=u_y, mask_onehot=x)
    assert out["lc"].item() == pytest.approx(shape_consistency_loss(x, u_y, u_gx).item())


def test_discriminator_objective_is_half_sum():
    real_pred = [[torch.full((1, 1, 2, 2), 1.0)], [torch.full((1, 1, 2, 2), 0.5)]]
    fake_pred = [[torch.full((1, 1, 2, 2), 0.0)], [torch.full((1, 1, 2, 2), 1.0)]]
    out = discriminator_objective(real_pred, fake_pred)
    # lsgan real: (1-1)^2 + (0.5-1)^2 = 0.25 ; fake: 0^2 + 1^2 = 1 ; total = 0.5 * 1.25
    assert out["real"].item() == pytest.approx(0.25)
    assert out["fake"].item() == pytest.approx(1.0)
    assert out["total"].item() == pytest.approx(0.625)
    hinge = discriminator_objective(real_pred, fake_pred, gan_mode="hinge")
    # real: relu(1-1) + relu(1-0.5) = 0.5 ; fake: relu(1+0) + relu(1+1) = 3
    assert hinge["total"].item() == pytest.approx(0.5 * (0.5 + 3.0))


# ------------------------------------------------------------------------------------------------ smoothing
@pytest.mark.parametrize("sigma", [0.7, 1.0, 1.5, 2.2])
def test_smooth_channels_matches_scipy_gaussian_filter(sigma: float) -> None:
    """Golden values from scipy: an in-plane Gaussian truncated at 3 sigma, whole-sample reflection ('mirror');
    channels not named are returned bit-identical."""
    from scipy import ndimage

    torch.manual_seed(0)
    x = torch.randn(2, 4, 17, 23, dtype=torch.float64)
    y = smooth_channels(x, [1, 3], sigma)
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0)
    assert ndimage.gaussian_filter(x.numpy()[0, 1], sigma, mode="mirror", truncate=3.0).shape == (17, 23)
    for c in (1, 3):
        np.testing.assert_allclose(y[:, c].numpy(), ref[:, c], atol=1e-12)
    for c in (0, 2):
        assert torch.equal(y[:, c], x[:, c])


def test_smooth_channels_properties_and_errors() -> None:
    x = torch.full((1, 3, 8, 8), 0.25, requires_grad=True)
    y = smooth_channels(x, [2], 1.5)
    torch.testing.assert_close(y, torch.full_like(y, 0.25))  # a constant image stays constant
    y[:, 2].sum().backward()
    assert float(x.grad[:, :2].abs().sum()) == 0.0 and float(x.grad[:, 2].sum()) == pytest.approx(64.0)
    assert smooth_channels(x, [], 1.0) is x
    with pytest.raises(ValueError, match="out of range"):
        smooth_channels(x, [3], 1.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        smooth_channels(x, [0], 0.0)
