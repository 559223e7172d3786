"""The segmentation trainer the benchmarks drive: one 2D U-Net, a fixed optimiser-step budget, BraTS metrics.

The augmentation-efficacy benchmark (paper Table 2) trains the *same* segmenter on every data arm (real only,
real + conventional augmentation, real + synthetic images ...). What differs between arms is only the data set; the
architecture, optimiser, schedule, loss, batch size and number of optimiser steps are fixed by one
:class:`SegmentationConfig`. A step budget (not epochs) keeps arms comparable when their data sets differ in size.

Decisions (recorded here because the paper does not give its segmenter's settings):

- Model: :class:`samraug.models.unet.UNet` on the normalised sequences (``(n, H, W)`` in [-1, 1]) predicting the
  five SAMR classes (background, normal brain, edema, cavity, tumor).
- Optimiser: Adam, learning rate 2e-4, betas (0.9, 0.999); constant for the first half of the steps, then linear
  decay to 0 (:class:`samraug.training.schedule.LinearDecaySchedule`, the schedule of the SAMR paper).
- Loss: cross-entropy + the Generalized Dice Loss (Sudre et al. 2017, :func:`samraug.losses.generalized_dice_loss`)
  on the softmax, so that rare lesion classes are not swamped by background.
- Batches of 16 drawn uniformly *with replacement* from the data set by a seeded sampler, ``steps`` times.
- Seeded: the model initialisation, the sampler and any on-the-fly augmentation drawing from torch's global
  generator are reproducible from ``config.seed`` (on CPU bitwise; CUDA kernels may differ in the last bits).
- CUDA when present (``device="auto"``), with bf16 autocast (fp16 + gradient scaling where bf16 is unsupported)
  and channels_last; CPU otherwise, in float32.

Prediction is slice-wise along the last (axial) axis; a volume is padded centrally with the background value -1 to
a size the U-Net accepts and cropped back, so 3D metrics are computed on the subject's own grid with its spacing.

Example:
    >>> import torch
    >>> from samraug.training.segmentation import SegmentationConfig, train_segmenter, predict_volume
    >>> data = [{"image": torch.randn(2, 32, 32), "label": torch.zeros(32, 32, dtype=torch.long)}] * 4
    >>> cfg = SegmentationConfig(steps=2, batch_size=2, depth=2, base_channels=4, device="cpu")
    >>> result = train_segmenter(data, cfg)
    >>> predict_volume(result.model, torch.randn(2, 30, 30, 5)).shape
    torch.Size([30, 30, 5])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from samraug.device import resolve_device
from samraug.intensity import BACKGROUND_VALUE
from samraug.labels import N_CLASSES, SAMR_CLASSES, get_scheme
from samraug.losses import generalized_dice_loss
from samraug.metrics import compute_metrics
from samraug.models.unet import UNet
from samraug.training.schedule import LinearDecaySchedule

__all__ = [
    "FOREGROUND_SAMPLING",
    "EvalVolume",
    "SegmentationConfig",
    "SegmentationResult",
    "evaluate_segmenter",
    "predict_volume",
    "resolve_device",
    "segmentation_loss",
    "train_segmenter",
]

#: How a foreground patch picks its lesion pixel (:class:`SegmentationConfig` ``foreground_sampling``).
FOREGROUND_SAMPLING = ("voxel", "class")

#: The SAMR lesion classes the benchmark reports, by name.
DEFAULT_REGIONS: tuple[str, ...] = ("edema", "cavity", "tumor")


@dataclass(frozen=True)
class SegmentationConfig:
    """Everything that defines one segmenter training (identical for every benchmark arm but the data).

    Args:
        steps: Optimiser-step budget.
        batch_size: Samples per step.
        lr: Adam learning rate (constant for ``decay_start`` of the steps, then linear decay to 0).
        betas: Adam betas.
        decay_start: Fraction of ``steps`` trained at the constant rate (paper schedule: 0.5).
        depth: U-Net depth (number of down-samplings); inputs are padded to a multiple of ``2**depth``.
        base_channels: U-Net width of the first level.
        n_classes: Output classes (the five SAMR classes by default).
        dice_weight: Weight of the Generalized Dice term added to the cross-entropy.
        seed: Seed of the model initialisation, the batch sampler and torch's global generator.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: Autocast (bf16, or fp16 with gradient scaling) on CUDA; ignored on CPU.
        num_workers: DataLoader workers (0: load in the main process).
        image_key: Key of the ``(n, H, W)`` float image in each data-set item.
        label_key: Key of the ``(H, W)`` int64 SAMR class map in each data-set item.
        crop_size: Train on random ``crop_size`` x ``crop_size`` patches of each slice (a multiple of
            ``2**depth``) instead of whole slices; prediction always runs on whole slices (the U-Net is fully
            convolutional). ``None``: whole slices.
        foreground_fraction: With ``crop_size``, the share of patches centred (with jitter) on a random lesion
            pixel (classes >= 2) when the slice has one (nnU-Net-style foreground oversampling).
        foreground_sampling: How a foreground patch picks its lesion pixel: ``"voxel"`` (any lesion pixel, so the
            largest class -- edema -- dominates) or ``"class"`` (as nnU-Net v2 does: a lesion class drawn uniformly
            among those present in the slice, then a pixel of it, so a small class such as the resection cavity is
            seen as often as the others).
    """

    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    decay_start: float = 0.5
    depth: int = 4
    base_channels: int = 16
    n_classes: int = N_CLASSES
    dice_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    image_key: str = "image"
    label_key: str = "label"
    crop_size: int | None = None
    foreground_fraction: float = 0.5
    foreground_sampling: str = "voxel"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "depth", "base_channels", "n_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SegmentationConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ValueError(
                f"SegmentationConfig.decay_start is a fraction of the steps in [0, 1], got {self.decay_start}"
            )
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"SegmentationConfig.lr must be a positive finite number, got {self.lr}")
        if self.num_workers < 0:
            raise ValueError(f"SegmentationConfig.num_workers must be >= 0, got {self.num_workers}")
        if self.crop_size is not None and (self.crop_size < 1 or self.crop_size % 2**self.depth):
            raise ValueError(
                f"SegmentationConfig.crop_size={self.crop_size} must be a positive multiple of 2**depth="
                f"{2**self.depth}, or None to train on whole slices"
            )
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(
                f"SegmentationConfig.foreground_fraction must be in [0, 1], got {self.foreground_fraction}"
            )
        if self.foreground_sampling not in FOREGROUND_SAMPLING:
            raise ValueError(
                f"SegmentationConfig.foreground_sampling must be one of {FOREGROUND_SAMPLING}, got "
                f"{self.foreground_sampling!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (for benchmark reports)."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


@dataclass
class SegmentationResult:
    """A trained segmenter and how its training went.

    Attributes:
        model: The trained U-Net (in eval mode, on the training device).
        losses: Training loss of every step.
        lrs: Learning rate used at every step.
        config: The configuration it was trained with.
        seconds: Wall time of the training loop.
        device: The device it ran on.
    """

    model: nn.Module
    losses: list[float]
    lrs: list[float]
    config: SegmentationConfig
    seconds: float
    device: str


@dataclass
class EvalVolume:
    """One held-out subject for evaluation: normalised sequences, SAMR class map and voxel spacing.

    Attributes:
        subject_id: Identifier reported with its metrics.
        image: ``(n, X, Y, Z)`` float32 sequences in the model's normalised range ([-1, 1], background -1).
        label: ``(X, Y, Z)`` int64 SAMR classes (ground truth).
        spacing: Voxel size in mm along X, Y, Z.
    """

    subject_id: str
    image: torch.Tensor
    label: torch.Tensor
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.dim() != 4:
            raise ValueError(
                f"EvalVolume {self.subject_id!r}: image must be (n, X, Y, Z), got {tuple(self.image.shape)}"
            )
        if tuple(self.label.shape) != tuple(self.image.shape[1:]):
            raise ValueError(
                f"EvalVolume {self.subject_id!r}: label shape {tuple(self.label.shape)} does not match the image's "
                f"spatial shape {tuple(self.image.shape[1:])}"
            )
        if len(self.spacing) != 3 or not all(float(s) > 0 for s in self.spacing):
            raise ValueError(
                f"EvalVolume {self.subject_id!r}: spacing must be three positive mm values, got {self.spacing}"
            )


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` x Generalized Dice Loss of the softmax, for ``(B, C, H, W)`` logits and
    ``(B, H, W)`` int64 targets. Computed in float32 even under autocast.

    Example:
        >>> logits = torch.zeros(1, 5, 4, 4)
        >>> float(segmentation_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long), dice_weight=0.0))  # log(5)
        1.6094...
    """
    logits = logits.float()
    loss = F.cross_entropy(logits, target)
    if dice_weight:
        loss = loss + dice_weight * generalized_dice_loss(logits.softmax(1), target)
    return loss


def _build_model(config: SegmentationConfig, in_channels: int) -> nn.Module:
    return UNet(
        in_channels=in_channels, out_channels=config.n_classes, depth=config.depth, base_channels=config.base_channels
    )


def _pad_to_multiple(x: torch.Tensor, multiple: int, value: float) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad the last two dims of ``x`` centrally to a multiple of ``multiple``; returns the padding (l, r, t, b)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph or pw:
        x = F.pad(x, pad, value=value)
    return x, pad


def _autocast_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _make_collate(image_key: str, label_key: str) -> Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]]:
    def collate(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for item in items:
            if isinstance(item, Mapping):
                if image_key not in item or label_key not in item:
                    raise KeyError(
                        f"data-set item has keys {sorted(item)}; the segmentation trainer needs {image_key!r} "
                        f"(n, H, W) and {label_key!r} (H, W): pass image_key=/label_key= in SegmentationConfig"
                    )
                image, label = item[image_key], item[label_key]
            else:
                image, label = item
            images.append(torch.as_tensor(image, dtype=torch.float32))
            labels.append(torch.as_tensor(label).long())
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) != 1:
            raise ValueError(f"images in one batch differ in shape: {sorted(shapes)}; pad/crop instances to one size")
        return torch.stack(images), torch.stack(labels)

    return collate


def _random_crops(
    images: torch.Tensor,
    labels: torch.Tensor,
    size: int,
    foreground_fraction: float,
    generator: torch.Generator,
    sampling: str = "voxel",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``size`` x ``size`` patch per sample; a ``foreground_fraction`` of them contain a lesion pixel (any one,
    or with ``sampling="class"`` one of a lesion class drawn uniformly among those in the slice)."""
    b, _, h, w = images.shape
    if size >= h and size >= w:
        return images, labels
    if size > h or size > w:
        raise ValueError(f"crop_size={size} is larger than the slices ({h}, {w}); lower crop_size")
    out_i, out_l = [], []
    for k in range(b):
        top = int(torch.randint(h - size + 1, (1,), generator=generator))
        left = int(torch.randint(w - size + 1, (1,), generator=generator))
        if float(torch.rand((), generator=generator)) < foreground_fraction:
            lesion = labels[k] >= 2
            if sampling == "class" and bool(lesion.any()):
                present = torch.unique(labels[k][lesion])
                lesion = labels[k] == present[int(torch.randint(len(present), (1,), generator=generator))]
            fg = torch.nonzero(lesion)
            if len(fg):
                cy, cx = fg[int(torch.randint(len(fg), (1,), generator=generator))].tolist()
                jy, jx = (torch.randint(size // 2 + 1, (2,), generator=generator) - size // 4).tolist()
                top = min(max(cy - size // 2 + jy, 0), h - size)
                left = min(max(cx - size // 2 + jx, 0), w - size)
        out_i.append(images[k, :, top : top + size, left : left + size])
        out_l.append(labels[k, top : top + size, left : left + size])
    return torch.stack(out_i), torch.stack(out_l)


def _check_batch(images: torch.Tensor, labels: torch.Tensor, n_classes: int, step: int) -> None:
    if (
        images.dim() != 4
        or labels.dim() != 3
        or images.shape[0] != labels.shape[0]
        or images.shape[2:] != labels.shape[1:]
    ):
        raise ValueError(
            f"step {step}: expected images (B, n, H, W) and labels (B, H, W) of matching size, got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if not torch.isfinite(images).all():
        raise ValueError(f"step {step}: the batch's images contain NaN or inf; check the data set / augmentation")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"step {step}: labels range {lo}..{hi} outside the {n_classes} classes 0..{n_classes - 1}")


def train_segmenter(
    dataset: Dataset | Sequence[Any],
    config: SegmentationConfig | None = None,
    in_channels: int | None = None,
    progress: bool | Callable[[int, float], None] = False,
    checkpoint: Callable[[int, nn.Module], None] | None = None,
    checkpoint_every: int = 0,
) -> SegmentationResult:
    """Train a fresh U-Net on ``dataset`` for exactly ``config.steps`` optimiser steps.

    Args:
        dataset: Map-style data set (or list) of dicts with ``config.image_key`` ``(n, H, W)`` float images in
            [-1, 1] and ``config.label_key`` ``(H, W)`` int64 class maps, or of ``(image, label)`` tuples. Every
            item must have the same H, W, divisible by ``2**config.depth``.
        config: Training settings (defaults: :class:`SegmentationConfig`).
        in_channels: Input channels; read from the first item when not given.
        progress: ``True`` for a tqdm bar, or a callback ``f(step, loss)`` called after every step.
        checkpoint: Called as ``checkpoint(n_steps_done, model)`` (model in eval mode, put back in train mode
            afterwards) every ``checkpoint_every`` steps and after the last one, e.g. to draw a validation curve
            (``benchmarks/step_budget.py``). It must not draw from torch's global generator if the run is to stay
            reproducible.

    Returns:
        A :class:`SegmentationResult` with the model in eval mode.

    Example:
        >>> data = [(torch.randn(1, 16, 16), torch.zeros(16, 16, dtype=torch.long))] * 2
        >>> r = train_segmenter(data, SegmentationConfig(steps=1, batch_size=2, depth=1, base_channels=2, device="cpu"))
        >>> len(r.losses)
        1
    """
    config = config or SegmentationConfig()
    if checkpoint is not None and checkpoint_every < 1:
        raise ValueError(
            f"checkpoint_every must be >= 1 step when a checkpoint callback is given, got {checkpoint_every}"
        )
    if len(dataset) == 0:
        raise ValueError("the segmentation data set is empty; check the subject split and slice selection")
    device = resolve_device(config.device)
    collate = _make_collate(config.image_key, config.label_key)
    if in_channels is None:
        in_channels = int(collate([dataset[0]])[0].shape[1])
    torch.manual_seed(config.seed)
    model = _build_model(config, in_channels).to(device)
    use_cuda = device.type == "cuda"
    if use_cuda:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = _autocast_dtype(device) if use_cuda and config.amp else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    schedule = LinearDecaySchedule(optimizer, config.steps, decay_start=round(config.decay_start * config.steps))
    generator = torch.Generator().manual_seed(config.seed)
    crop_generator = torch.Generator().manual_seed(config.seed + 1)
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=config.steps * config.batch_size, generator=generator
    )
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=use_cuda,
        persistent_workers=False,
    )
    bar = None
    if progress is True:
        bar = tqdm(total=config.steps, desc="segmenter", leave=False)
    multiple = 2**config.depth
    losses: list[float] = []
    lrs: list[float] = []
    model.train()
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        if step == 0 and config.crop_size is None:
            if images.shape[-2] % multiple or images.shape[-1] % multiple:
                raise ValueError(
                    f"instances are {tuple(images.shape[-2:])}; the U-Net of depth {config.depth} needs H and W "
                    f"divisible by {multiple}: pad/crop the slices (samraug.data.slices does) or lower depth"
                )
        _check_batch(images, labels, config.n_classes, step)
        if config.crop_size is not None:
            images, labels = _random_crops(
                images, labels, config.crop_size, config.foreground_fraction, crop_generator, config.foreground_sampling
            )
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if use_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)
        loss = segmentation_loss(logits, labels, config.dice_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"segmentation loss became {float(loss)} at step {step}; lower the learning rate or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        schedule.step()
        value = float(loss.detach())
        losses.append(value)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
        elif callable(progress):
            progress(step, value)
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == config.steps):
            model.eval()
            checkpoint(step + 1, model)
            model.train()
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    return SegmentationResult(model=model, losses=losses, lrs=lrs, config=config, seconds=seconds, device=str(device))


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def predict_slices(
    model: nn.Module, images: torch.Tensor, multiple: int = 16, batch_size: int = 32, amp: bool = True
) -> torch.Tensor:
    """Class map ``(B, H, W)`` int64 of a batch of 2D images ``(B, n, H, W)`` (padded with -1 to ``multiple``)."""
    if images.dim() != 4:
        raise ValueError(f"expected images (B, n, H, W), got {tuple(images.shape)}")
    device = _model_device(model)
    use_amp = amp and device.type == "cuda"
    h, w = images.shape[-2:]
    out = torch.empty(images.shape[0], h, w, dtype=torch.long)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, images.shape[0], batch_size):
            chunk, (pl, _, pt, _) = _pad_to_multiple(images[i : i + batch_size].float(), multiple, -1.0)
            chunk = chunk.to(device)
            with torch.autocast(
                device.type, dtype=_autocast_dtype(device) if use_amp else torch.float32, enabled=use_amp
            ):
                logits = model(chunk)
            pred = logits.argmax(1)[:, pt : pt + h, pl : pl + w]
            out[i : i + batch_size] = pred.cpu()
    model.train(was_training)
    return out


def predict_volume(
    model: nn.Module, image: torch.Tensor, multiple: int | None = None, batch_size: int = 32, amp: bool = True
) -> torch.Tensor:
    """Segment a volume slice-wise along its last (axial) axis.

    Args:
        model: A 2D segmenter mapping ``(B, n, H, W)`` to ``(B, C, H, W)`` logits.
        image: ``(n, X, Y, Z)`` normalised sequences.
        multiple: Pad X and Y to a multiple of this (default ``2**model.depth`` when the model has ``depth``).
        batch_size: Slices per forward pass.

    Returns:
        ``(X, Y, Z)`` int64 class map on the CPU.

    Example:
        >>> from samraug.models.unet import UNet
        >>> predict_volume(UNet(in_channels=2, out_channels=5, depth=2, base_channels=4), torch.zeros(2, 9, 7, 3)).shape
        torch.Size([9, 7, 3])
    """
    image = torch.as_tensor(image)
    if image.dim() != 4:
        raise ValueError(f"expected a volume (n, X, Y, Z), got shape {tuple(image.shape)}; add the channel axis")
    if multiple is None:
        multiple = 2 ** int(getattr(model, "depth", 4))
    slices = image.permute(3, 0, 1, 2)  # (Z, n, X, Y)
    pred = torch.zeros(slices.shape[0], *slices.shape[2:], dtype=torch.long)
    # Slices that are background in every sequence are background: skip them.
    keep = torch.nonzero((slices > BACKGROUND_VALUE + 1e-6).flatten(1).any(1)).flatten()
    if len(keep):
        pred[keep] = predict_slices(model, slices[keep], multiple=multiple, batch_size=batch_size, amp=amp)
    return pred.permute(1, 2, 0).contiguous()


def evaluate_segmenter(
    model: nn.Module,
    volumes: Iterable[EvalVolume],
    regions: Sequence[str] = DEFAULT_REGIONS,
    multiple: int | None = None,
    batch_size: int = 32,
) -> dict[str, dict[str, dict[str, float]]]:
    """BraTS metrics of ``model`` on held-out 3D volumes, per subject.

    Each volume is predicted slice-wise (:func:`predict_volume`) and compared in 3D with its ground truth, with its
    spacing, by :func:`samraug.metrics.compute_metrics` on the SAMR regions named in ``regions``.

    Returns:
        ``{subject_id: {region: {metric: value}}}`` with metrics ``dice``, ``hd95``, ``sensitivity``,
        ``specificity`` (the format of :func:`samraug.metrics.compute_metrics`) and the region's voxel counts
        ``pred_voxels`` / ``true_voxels`` (so a region absent from both can be told from a perfect score).

    Example:
        >>> # scores = evaluate_segmenter(result.model, [EvalVolume("s1", image, label, (2.0, 2.0, 2.0))])
        >>> # scores["s1"]["edema"]["dice"]
    """
    region_labels = get_scheme("samr").regions
    unknown = [r for r in regions if r not in SAMR_CLASSES]
    if unknown:
        raise ValueError(f"unknown SAMR regions {unknown}; use names from {SAMR_CLASSES[2:]}")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for vol in volumes:
        pred = predict_volume(model, vol.image, multiple=multiple, batch_size=batch_size)
        p, g = pred.numpy(), vol.label.numpy()
        scores = compute_metrics(p, g, scheme="samr", regions=list(regions), spacing=vol.spacing)
        for name in regions:
            values = list(region_labels[name])
            scores[name]["pred_voxels"] = float(np.isin(p, values).sum())
            scores[name]["true_voxels"] = float(np.isin(g, values).sum())
        out[vol.subject_id] = scores
    return out
