"""SAMR training losses (paper section 2, eqs. 1-5).

Every function consumes the discriminator output format of :class:`~samraug.models.discriminator.
LabelWiseDiscriminators`: a list with one entry per discriminator, each entry the list of that discriminator's
intermediate feature tensors whose LAST element is the PatchGAN prediction map.

- :func:`adversarial_loss` -- ``L_GAN`` (eq. 1) in ``lsgan`` (default, least squares), ``bce`` (eq. 1 literally,
  on logits) or ``hinge`` form, summed over discriminators, averaged over batch and patch positions.
- :func:`feature_matching_loss` -- ``L_FM`` (eq. 2): per discriminator and layer (the prediction excluded)
  ``1/N_i ||D_i(real) - D_i(fake)||_2^2``, i.e. the mean squared error, summed over layers and discriminators.
  ``norm="l1"`` gives the pix2pixHD variant (mean absolute error). Real features are detached.
- :func:`generalized_dice_loss` -- Sudre et al. 2017 (eq. 3 is its single-class form).
- :func:`shape_consistency_loss` -- ``L_C`` (eq. 4) = GDL(x, U(y)) + GDL(x, U(G(x))).
- :func:`generator_objective` (eq. 5) and :func:`discriminator_objective`.
- :func:`smooth_channels` -- an in-plane Gaussian on some channels: what the discriminators see of a sequence
  acquired far coarser than its voxels (``TrainConfig.d_smooth_sequences``).

Training split of eq. 4 (what the trainer does): the U-Net is trained on real images with
``generalized_dice_loss(U(y), x)``; the generator gets ``GDL(x, U(G(x)))`` through ``generator_objective(...,
seg_fake=U(G(x)))`` (the U(y) term carries no gradient to G).

Example:
    >>> import torch
    >>> d_fake = [[torch.randn(2, 8, 4, 4), torch.randn(2, 1, 4, 4)] for _ in range(6)]
    >>> d_real = [[torch.randn(2, 8, 4, 4), torch.randn(2, 1, 4, 4)] for _ in range(6)]
    >>> losses = generator_objective(d_fake, d_real)
    >>> sorted(losses)
    ['fm', 'gan', 'lc', 'total']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "DiscriminatorOutputs",
    "adversarial_loss",
    "discriminator_objective",
    "feature_matching_loss",
    "generalized_dice_loss",
    "generator_objective",
    "shape_consistency_loss",
    "smooth_channels",
]

GanMode = Literal["lsgan", "bce", "hinge"]
#: One discriminator's features (last = prediction), a list of those, or a bare prediction tensor.
DiscriminatorOutputs = torch.Tensor | Sequence[torch.Tensor | Sequence[torch.Tensor]]
_GAN_MODES = ("lsgan", "bce", "hinge")


def _as_nested(outputs: DiscriminatorOutputs, what: str) -> list[list[torch.Tensor]]:
    """Normalise to ``[[feat_1, ..., prediction], ...]``; a bare tensor entry is a prediction without features."""
    if isinstance(outputs, torch.Tensor):
        return [[outputs]]
    if not isinstance(outputs, Sequence) or len(outputs) == 0:
        raise ValueError(
            f"{what} must be a non-empty list (one entry per discriminator) of lists of feature tensors "
            f"whose last element is the prediction; got {type(outputs).__name__}"
        )
    nested = []
    for k, entry in enumerate(outputs):
        feats = [entry] if isinstance(entry, torch.Tensor) else list(entry)
        if not feats or not all(isinstance(f, torch.Tensor) for f in feats):
            raise ValueError(
                f"{what}[{k}] must be a tensor or a non-empty list of tensors (features, last = prediction)"
            )
        nested.append(feats)
    return nested


def adversarial_loss(
    predictions: DiscriminatorOutputs,
    target_is_real: bool,
    mode: GanMode = "lsgan",
    for_discriminator: bool = True,
) -> torch.Tensor:
    """GAN loss summed over discriminators (eq. 1's ``sum_k``), averaged over batch and patch positions.

    Only the last tensor of each discriminator entry (its prediction map) is used.

    - ``lsgan``: ``mean((x - 1)^2)`` for real targets, ``mean(x^2)`` for fake ones (both D and G).
    - ``bce``: ``BCEWithLogits(x, 1 or 0)``: eq. 1 on logits; the generator uses the non-saturating form
      (``target_is_real=True``).
    - ``hinge``: discriminator ``mean(relu(1 - x))`` (real) / ``mean(relu(1 + x))`` (fake); generator
      (``for_discriminator=False``) ``-mean(x)``, which requires ``target_is_real=True``.

    Example:
        >>> adversarial_loss([[torch.ones(1, 1, 2, 2)]], target_is_real=True).item()
        0.0
    """
    if mode not in _GAN_MODES:
        raise ValueError(f"unknown GAN mode {mode!r}; use one of {_GAN_MODES}")
    if mode == "hinge" and not for_discriminator and not target_is_real:
        raise ValueError("the hinge generator loss is -mean(D(G(x))): call it with target_is_real=True")
    total = None
    for feats in _as_nested(predictions, "predictions"):
        x = feats[-1]
        if mode == "lsgan":
            loss = ((x - 1.0) ** 2).mean() if target_is_real else (x**2).mean()
        elif mode == "bce":
            target = torch.ones_like(x) if target_is_real else torch.zeros_like(x)
            loss = F.binary_cross_entropy_with_logits(x, target)
        elif for_discriminator:
            loss = F.relu(1.0 - x).mean() if target_is_real else F.relu(1.0 + x).mean()
        else:
            loss = -x.mean()
        total = loss if total is None else total + loss
    assert total is not None
    return total


def feature_matching_loss(
    real_features: DiscriminatorOutputs,
    fake_features: DiscriminatorOutputs,
    norm: Literal["l2", "l1"] = "l2",
) -> torch.Tensor:
    """Feature matching ``L_FM`` (eq. 2) summed over discriminators and their intermediate layers.

    Each layer contributes ``1/N_i ||D_i(real) - D_i(fake)||^2`` -- the mean squared error, exactly eq. 2 --
    or with ``norm="l1"`` the mean absolute error of pix2pixHD (which further weights layers; we do not).
    The final prediction map is excluded; real features are detached so gradients reach only the fake branch.

    Example:
        >>> real = [[torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)]]
        >>> fake = [[torch.full((1, 1, 2, 2), 2.0), torch.zeros(1, 1, 1, 1)]]
        >>> feature_matching_loss(real, fake).item()
        4.0
    """
    if norm not in ("l2", "l1"):
        raise ValueError(f"unknown feature-matching norm {norm!r}; use 'l2' (eq. 2) or 'l1' (pix2pixHD)")
    real = _as_nested(real_features, "real_features")
    fake = _as_nested(fake_features, "fake_features")
    if len(real) != len(fake):
        raise ValueError(f"{len(real)} real vs {len(fake)} fake discriminator outputs; pass both from the same D")
    ref = fake[0][-1]
    total = ref.new_zeros((), dtype=torch.promote_types(ref.dtype, torch.float32))
    for k, (rf, ff) in enumerate(zip(real, fake, strict=True)):
        if len(rf) != len(ff):
            raise ValueError(f"discriminator {k}: {len(rf)} real vs {len(ff)} fake feature tensors")
        for i, (r, f) in enumerate(zip(rf[:-1], ff[:-1], strict=True)):
            if r.shape != f.shape:
                raise ValueError(
                    f"discriminator {k} layer {i}: real features {tuple(r.shape)} vs fake {tuple(f.shape)}"
                )
            diff = f - r.detach()
            total = total + (diff.abs().mean() if norm == "l1" else (diff**2).mean())
    return total


def generalized_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    weighting: Literal["sudre", "uniform"] = "sudre",
    eps: float = 1e-6,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """Generalized Dice Loss (Sudre et al. 2017) of ``(B, C, *spatial)`` probabilities against a one-hot target.

    Per sample: ``GDL = 1 - (2 sum_c w_c sum_i r_ci s_ci + eps) / (sum_c w_c sum_i (r_ci + s_ci) + eps)``
    with ``w_c = 1 / (sum_i r_ci)^2`` (``weighting="sudre"``) or ``w_c = 1`` (``"uniform"``); then averaged
    (``reduction="mean"``), summed, or returned per sample (``"none"``). With one class it is eq. 3.

    Details:
        - The weights are rescaled per sample so that the largest is 1 (``w_c = (min_r / r_c)^2``). The ratio is
          unchanged, but ``eps`` then stays negligible against the O(voxel-count) terms even for 3D volumes,
          where raw Sudre weights (~1e-10) would make any fixed ``eps`` dominate.
        - Empty classes (``sum_i r_ci = 0``, infinite Sudre weight) get the largest finite weight of the sample
          (MONAI's replacement rule): probability put on a class absent from the target is still penalised as a
          false positive of the rarest present class. A sample whose target is entirely empty uses uniform weights;
          it scores 0 if the prediction is empty too and tends to 1 otherwise, always with finite gradients.
        - ``probs`` must already be probabilities (apply softmax or sigmoid first); logits raise an error.
          ``target`` is a one-hot (or soft) tensor of the same shape, or an integer label map ``(B, *spatial)``.

    Example:
        >>> t = torch.zeros(1, 2, 2, 2); t[:, 0, 0] = 1; t[:, 1, 1] = 1
        >>> generalized_dice_loss(t, t).item()
        0.0
    """
    if weighting not in ("sudre", "uniform"):
        raise ValueError(f"unknown GDL weighting {weighting!r}; use 'sudre' or 'uniform'")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'")
    if probs.dim() < 3:
        raise ValueError(f"probs must be (B, C, *spatial), got shape {tuple(probs.shape)}")
    if not target.is_floating_point() and target.dim() == probs.dim() - 1:
        n_cls = probs.shape[1]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n_cls):
            raise ValueError(f"label target has values outside 0..{n_cls - 1} for {n_cls}-channel probs")
        target = F.one_hot(target.long(), n_cls).movedim(-1, 1)
    if target.shape != probs.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match probs {tuple(probs.shape)}; pass a one-hot target "
            "(B, C, *spatial) or an integer label map (B, *spatial)"
        )
    with torch.no_grad():
        if not torch.isfinite(probs).all():
            raise ValueError("probs contain NaN or inf")
        if probs.numel() and (probs.min() < -1e-4 or probs.max() > 1 + 1e-4):
            raise ValueError(
                f"probs must lie in [0, 1] (found {float(probs.min()):.3g}..{float(probs.max()):.3g}); "
                "apply torch.softmax(logits, 1) (or sigmoid) first"
            )
    if probs.dtype in (torch.float16, torch.bfloat16):
        probs = probs.float()  # voxel sums in half precision lose too much
    target = target.to(probs.dtype)
    dims = tuple(range(2, probs.dim()))
    ref_sum = target.sum(dims)  # (B, C)
    intersection = (target * probs).sum(dims)
    union = ref_sum + probs.sum(dims)
    if weighting == "uniform":
        weights = torch.ones_like(ref_sum)
    else:
        with torch.no_grad():
            present = ref_sum > 0
            min_ref = torch.where(present, ref_sum, torch.full_like(ref_sum, float("inf"))).amin(1, keepdim=True)
            safe = torch.where(present, ref_sum, torch.ones_like(ref_sum))
            weights = torch.where(present, (min_ref / safe) ** 2, torch.ones_like(ref_sum))
    numerator = 2.0 * (weights * intersection).sum(1) + eps
    denominator = (weights * union).sum(1) + eps
    loss = 1.0 - numerator / denominator
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def shape_consistency_loss(
    mask_onehot: torch.Tensor,
    seg_real: torch.Tensor | None,
    seg_fake: torch.Tensor | None,
    *,
    weighting: Literal["sudre", "uniform"] = "sudre",
) -> torch.Tensor:
    """Lesion shape-consistency loss ``L_C`` (eq. 4) = ``GDL(x, U(y)) + GDL(x, U(G(x)))``.

    ``seg_real`` = U(y) and ``seg_fake`` = U(G(x)) are PROBABILITIES (this function applies no softmax: pass
    ``torch.softmax(unet(images), 1)``) with the same channels as ``mask_onehot`` (x). Either term may be ``None``
    to compute only the other (the generator needs only the fake term; the U-Net trains on the real one).

    Example:
        >>> x = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 8, 8)), 5).movedim(-1, 1).float()
        >>> shape_consistency_loss(x, x, x).item()
        0.0
    """
    if seg_real is None and seg_fake is None:
        raise ValueError("pass seg_real (U(y)), seg_fake (U(G(x))) or both")
    terms = [generalized_dice_loss(s, mask_onehot, weighting=weighting) for s in (seg_real, seg_fake) if s is not None]
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]


def generator_objective(
    d_fake: DiscriminatorOutputs,
    d_real: DiscriminatorOutputs | None,
    *,
    seg_fake: torch.Tensor | None = None,
    mask_onehot: torch.Tensor | None = None,
    seg_real: torch.Tensor | None = None,
    lambda_fm: float = 5.0,
    lambda_lc: float = 1.0,
    gan_mode: GanMode = "lsgan",
    fm_norm: Literal["l2", "l1"] = "l2",
) -> dict[str, torch.Tensor]:
    """The generator's multi-task loss (eq. 5): ``gan + lambda_fm * fm + lambda_lc * lc``.

    Args:
        d_fake: Discriminator outputs on (mask, G(mask)) -- NOT detached, gradients flow to G.
        d_real: Discriminator outputs on (mask, real images) for feature matching (detached here);
            ``None`` or ``lambda_fm=0`` skips feature matching (``fm`` = 0).
        seg_fake: U(G(x)) probabilities; with ``mask_onehot`` gives ``lc`` = GDL(x, U(G(x))). ``None`` (the
            no-LC ablation) gives ``lc`` = 0.
        seg_real: Optional U(y) probabilities: adds GDL(x, U(y)) to ``lc`` (full eq. 4; that term only trains U).
        lambda_fm, lambda_lc: Paper values 5 and 1.
        gan_mode: ``lsgan``, ``bce`` or ``hinge`` (see :func:`adversarial_loss`).
        fm_norm: ``l2`` (eq. 2) or ``l1`` (pix2pixHD).

    Returns:
        ``{"gan", "fm", "lc", "total"}`` scalar tensors (``fm`` and ``lc`` unweighted).

    Example:
        >>> d = [[torch.zeros(1, 4, 2, 2), torch.ones(1, 1, 2, 2)]]
        >>> generator_objective(d, d)["total"].item()
        0.0
    """
    gan = adversarial_loss(d_fake, target_is_real=True, mode=gan_mode, for_discriminator=False)
    zero = gan.new_zeros(())
    fm = feature_matching_loss(d_real, d_fake, norm=fm_norm) if d_real is not None and lambda_fm != 0 else zero
    if seg_fake is not None or seg_real is not None:
        if mask_onehot is None:
            raise ValueError("seg_fake/seg_real given without mask_onehot: pass the one-hot mask x for L_C")
        lc = shape_consistency_loss(mask_onehot, seg_real, seg_fake)
    else:
        lc = zero
    total = gan + lambda_fm * fm + lambda_lc * lc
    return {"gan": gan, "fm": fm, "lc": lc, "total": total}


def discriminator_objective(
    d_real: DiscriminatorOutputs,
    d_fake: DiscriminatorOutputs,
    *,
    gan_mode: GanMode = "lsgan",
) -> dict[str, torch.Tensor]:
    """The discriminators' loss: ``total = 0.5 * (real + fake)`` (halved as in pix2pix/pix2pixHD, so D learns at
    half the generator's rate), each term summed over discriminators.

    ``d_fake`` must come from DETACHED generator outputs (``G(x).detach()``) so this loss does not reach G.

    Returns:
        ``{"real", "fake", "total"}`` scalar tensors.

    Example:
        >>> d = [[torch.zeros(1, 1, 2, 2)]]
        >>> discriminator_objective(d, d)["total"].item()
        0.5
    """
    real = adversarial_loss(d_real, target_is_real=True, mode=gan_mode, for_discriminator=True)
    fake = adversarial_loss(d_fake, target_is_real=False, mode=gan_mode, for_discriminator=True)
    return {"real": real, "fake": fake, "total": 0.5 * (real + fake)}


def smooth_channels(x: torch.Tensor, channels: Sequence[int], sigma: float) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` with ``channels`` blurred in-plane by a Gaussian of ``sigma`` pixels: separable,
    truncated at ``int(3 sigma + 0.5)`` pixels like scipy's ``gaussian_filter``, whole-sample reflection at the
    edges (a constant image stays constant). The other channels are returned as they are; gradients flow through
    both. ``channels`` empty: ``x`` itself.

    Example:
        >>> x = torch.zeros(1, 2, 9, 9)
        >>> x[0, :, 4, 4] = 1.0
        >>> y = smooth_channels(x, [1], sigma=1.0)
        >>> float(y[0, 0, 4, 4]), round(float(y[0, 1].sum()), 4), round(float(y[0, 1, 4, 4]), 3)
        (1.0, 1.0, 0.159)
    """
    chans = sorted({int(c) for c in channels})
    if not chans:
        return x
    if x.dim() != 4:
        raise ValueError(f"smooth_channels needs (B, C, H, W) images, got shape {tuple(x.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (pixels), got {sigma}")
    if chans[0] < 0 or chans[-1] >= x.shape[1]:
        raise ValueError(f"channels {chans} out of range for {x.shape[1]} channels")
    radius = max(1, int(3.0 * sigma + 0.5))
    radius = min(radius, x.shape[-2] - 1, x.shape[-1] - 1)  # reflect padding needs pad < size
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    g = torch.exp(-(t**2) / (2.0 * sigma**2))
    g = (g / g.sum()).to(x.dtype)
    sel = x[:, chans]
    n = len(chans)
    sel = F.conv2d(
        F.pad(sel, (radius, radius, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n
    )
    sel = F.conv2d(
        F.pad(sel, (0, 0, radius, radius), mode="reflect"), g.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n
    )
    out = x.clone()
    out[:, chans] = sel
    return out
