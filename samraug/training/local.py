"""Trainer of the local generator (region painting), on :mod:`samraug.training.local_data` crops.

:class:`LocalGANTrainer` is the :class:`~samraug.training.gan.GANTrainer` (same step, checkpoints, resume, DDP,
logging, ``--init-from`` and export machinery) with the local generator: per step, ``(mask, context)`` come from
:func:`samraug.models.local.build_local_inputs` (the one function inference uses too), the generator paints the
central slice's region and composites it into the known image, and the objective is

    lambda_l1 * L1 inside the region (dominant) + GAN(label-wise D on the crop) + lambda_fm * FM
    + lambda_lc * GDL(classes, U(painted))

where D and the shape-consistency U-Net see the central slice's one-hot classes and the (composited) crop.

Validation (:meth:`LocalGANTrainer.evaluate`): PSNR, SSIM and L1 inside the region of held-out subjects' crops,
intensities scaled to [0, 1] per subject and sequence (the normalised [-1, 1] images mapped linearly), per
sequence and averaged; ``psnr_meanfill`` is the same PSNR for the baseline that fills the region with the mean of
the known brain voxels of the crop (per sequence), so a model that has learnt anything beats it. Per kind:
``psnr_lesion`` (lesion painting) and ``psnr_blob`` (pseudo-healthy inpainting).

Example:
    >>> cfg = preset_config("tiny", task="local", lambda_l1=10.0)  # doctest: +SKIP
    >>> t = LocalGANTrainer(cfg, sequences, label_scheme="brats2024", voxel_size=(2.0, 2.0, 2.0))  # doctest: +SKIP
    >>> t.fit(data.train, val_dataset=data.val, out_dir="/tmp/run")  # doctest: +SKIP
    >>> t.export("/tmp/local-weights", None, card={"data": "phantom"})  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from samraug.labels import LabelScheme
from samraug.metrics import ssim_map
from samraug.models.discriminator import LabelWiseDiscriminators
from samraug.models.local import build_local_generator, build_local_inputs
from samraug.models.unet import UNet
from samraug.training.config import TrainConfig
from samraug.training.distributed import DistEnv
from samraug.training.gan import GANTrainer, StepInputs, batch_to_device
from samraug.training.local_data import BLOB_KIND, LESION_KIND

__all__ = ["LocalGANTrainer", "class_balanced_weight", "region_metrics"]

#: Generator kwargs of the whole-slice model that have no meaning for the local generator.
_WHOLE_ONLY = ("stretch_out", "use_atlas", "atlas_slices", "decoder_res_blocks")


def class_balanced_weight(classes: torch.Tensor, region: torch.Tensor, n_labels: int) -> torch.Tensor:
    """Per-pixel L1 weights inside ``region`` that give every class present there the same total weight.

    ``classes`` ``(B, H, W)`` long, ``region`` ``(B, H, W)`` bool. A pixel of class ``k`` gets
    ``n / (K * n_k)`` (``n`` region pixels of the batch, ``n_k`` of them of class ``k``, ``K`` classes present), 0
    outside the region: the weights sum to ``n`` like the plain region mask, so the L1 term keeps its scale.

    Example:
        >>> cls = torch.tensor([[[1, 1, 1, 4]]]); reg = torch.ones(1, 1, 4, dtype=torch.bool)
        >>> (class_balanced_weight(cls, reg, 6) * 3).round().tolist()  # 3 normal-brain pixels share what 1 ET has
        [[[2.0, 2.0, 2.0, 6.0]]]
    """
    if classes.shape != region.shape:
        raise ValueError(f"classes {tuple(classes.shape)} and region {tuple(region.shape)} differ")
    counts = torch.bincount(classes[region].flatten(), minlength=n_labels).to(torch.float32)
    present = int((counts > 0).sum())
    if present == 0:
        return region.to(torch.float32)
    per_class = torch.where(counts > 0, counts.sum() / (present * counts.clamp_min(1.0)), torch.zeros_like(counts))
    return per_class[classes] * region.to(torch.float32)


def region_metrics(
    fake: torch.Tensor, real: torch.Tensor, region: torch.Tensor, brain: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-image, per-sequence metrics inside ``region`` for images in [-1, 1], scaled to [0, 1] first.

    ``fake``/``real`` ``(B, S, H, W)``, ``region`` ``(B, H, W)`` bool. Returns ``{"l1", "psnr", "ssim"}`` each
    ``(B, S)`` (PSNR: data range 1, MSE floored at 1e-10; SSIM: the map of :func:`samraug.metrics.ssim_map` with
    data range 1, averaged over the region), and with ``brain`` (the crop's brain, ``(B, H, W)``) also
    ``psnr_meanfill``: the PSNR of filling the region with the mean of the known brain voxels (brain outside the
    region) per sequence. Images without region pixels give NaN.

    Example:
        >>> x = torch.rand(1, 2, 16, 16) * 2 - 1; r = torch.zeros(1, 16, 16, dtype=torch.bool); r[:, 4:8, 4:8] = True
        >>> m = region_metrics(x, x, r)
        >>> m["l1"].tolist(), m["ssim"].round(decimals=4).tolist()
        ([[0.0, 0.0]], [[1.0, 1.0]])
    """
    f01 = (fake.float() + 1) / 2
    r01 = (real.float() + 1) / 2
    w = region[:, None].to(f01.dtype).expand_as(f01)
    n = w.sum((2, 3))
    n_safe = n.clamp_min(1)
    l1 = ((f01 - r01).abs() * w).sum((2, 3)) / n_safe
    mse = (((f01 - r01) ** 2) * w).sum((2, 3)) / n_safe
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
    ssim = (ssim_map(f01, r01, data_range=1.0) * w).sum((2, 3)) / n_safe
    out = {"l1": l1, "psnr": psnr, "ssim": ssim}
    if brain is not None:
        known = (brain & ~region)[:, None].to(f01.dtype).expand_as(f01)
        fill = (r01 * known).sum((2, 3)) / known.sum((2, 3)).clamp_min(1)
        mse_fill = (((fill[..., None, None] - r01) ** 2) * w).sum((2, 3)) / n_safe
        out["psnr_meanfill"] = 10 * torch.log10(1.0 / mse_fill.clamp_min(1e-10))
    empty = n == 0
    nan = torch.full_like(l1, float("nan"))
    return {k: torch.where(empty, nan, v) for k, v in out.items()}


class LocalGANTrainer(GANTrainer):
    """:class:`~samraug.training.gan.GANTrainer` for the local generator (``config.task == "local"``).

    Args:
        config: The run's config; ``generator_preset`` names a local preset (``tiny``, ``lite``), ``generator``
            overrides its kwargs, ``context_slices`` and ``crop_size`` fix the input (crops must be multiples of
            the generator's and U-Net's down-sampling).
        sequences, label_scheme, device, env: As in :class:`~samraug.training.gan.GANTrainer`.
        voxel_size: The training grid in mm (RAS), recorded in the exported config.

    Example:
        >>> from samraug.training.config import preset_config
        >>> cfg = preset_config("tiny", task="local")
        >>> t = LocalGANTrainer(cfg, ("t1n",), label_scheme="brats2024")  # doctest: +SKIP
    """

    def __init__(
        self,
        config: TrainConfig,
        sequences: Sequence[str],
        *,
        label_scheme: str | LabelScheme = "samr",
        voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
        device: str | torch.device | None = None,
        env: DistEnv | None = None,
    ) -> None:
        if config.task != "local":
            raise ValueError(f"LocalGANTrainer needs config.task='local', got {config.task!r}; use GANTrainer")
        if len(voxel_size) != 3 or not all(float(v) > 0 for v in voxel_size):
            raise ValueError(f"voxel_size must be three positive mm values, got {voxel_size}")
        self.voxel_size = tuple(float(v) for v in voxel_size)
        super().__init__(config, sequences, label_scheme=label_scheme, device=device, env=env)
        h, w = config.crop_size
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"crop_size {config.crop_size} must be a multiple of {self.size_multiple} (the generator's and "
                "U-Net's down-sampling); e.g. --crop-size 64 64"
            )

    def build_models(self) -> dict[str, nn.Module]:
        cfg = self.config
        kwargs = {k: v for k, v in cfg.generator.items() if k not in _WHOLE_ONLY}
        generator = build_local_generator(
            cfg.generator_preset,
            sequences=self.sequences,
            n_labels=self.n_labels,
            context_slices=cfg.context_slices,
            **kwargs,
        )
        discriminator = LabelWiseDiscriminators(
            n_labels=self.n_labels, n_sequences=len(self.sequences), **cfg.discriminator_kwargs()
        )
        unet = UNet(len(self.sequences), self.n_labels, **cfg.unet) if cfg.uses_unet else None
        return {"G": generator, "D": discriminator, **({"U": unet} if unet is not None else {})}

    def _inputs(self, batch: Mapping[str, Any]) -> StepInputs:
        for key in ("classes", "images", "region"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r}; expected LocalCropDataset instances (classes, images, region)")
        b = batch_to_device({k: batch[k] for k in ("classes", "images", "region")}, self.device, False)
        classes, images, region = b["classes"].long(), b["images"].float(), b["region"].bool()
        c = self.config.context_slices
        if classes.dim() != 4 or classes.shape[1] != 2 * c + 1:
            raise ValueError(
                f"batch classes have shape {tuple(classes.shape)}, expected (B, {2 * c + 1}, H, W): crops of "
                f"{2 * c + 1} slices (context_slices={c}); build the data with the same context_slices"
            )
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"batch images contain NaN/inf (subjects {batch.get('subject_id', '?')})")
        if images.shape[1] != len(self.sequences):
            raise ValueError(
                f"batch images have {images.shape[1]} sequences but the trainer was built for {len(self.sequences)} "
                f"{self.sequences}; build the data set with the same sequences"
            )
        fill = None
        if self.config.context_fill == "harmonic":
            if "fill" not in batch:
                raise KeyError(
                    "batch has no 'fill' but config.context_fill is 'harmonic'; build the LocalCropDataset with "
                    "context_fill='harmonic'"
                )
            fill = batch["fill"].to(self.device).float()
        mask, context = build_local_inputs(classes, images, region, self.n_labels, c, z=[c], fill=fill)
        if self.channels_last:
            mask = mask.contiguous(memory_format=torch.channels_last)
            context = context.contiguous(memory_format=torch.channels_last)
        centre = classes[:, c]
        onehot = nn.functional.one_hot(centre, self.n_labels).permute(0, 3, 1, 2).to(images.dtype)
        return StepInputs(
            generator_args=(mask, context),
            mask=onehot.contiguous(),
            real=images[:, :, c].contiguous(),
            l1_weight=class_balanced_weight(centre, region[:, c], self.n_labels)[:, None]
            if self.config.l1_class_balance
            else region[:, c : c + 1],
        )

    def export_extras(self) -> dict[str, Any]:
        return {
            "voxel_size": list(self.voxel_size),
            "crop_size": list(self.config.crop_size),
            "context_fill": self.config.context_fill,
        }

    @torch.inference_mode()
    def evaluate(
        self, dataset: Dataset, batch_size: int | None = None, max_batches: int | None = None
    ) -> dict[str, float]:
        """In-region validation numbers on ``dataset`` (see the module docstring): ``psnr/<seq>``,
        ``ssim/<seq>``, ``l1/<seq>`` and their ``/mean``, ``psnr_meanfill/mean``, ``psnr_lesion/mean``,
        ``psnr_blob/mean`` (means over crops)."""
        loader = DataLoader(dataset, batch_size=batch_size or self.config.batch_size, shuffle=False, num_workers=0)
        values: dict[str, list[torch.Tensor]] = {}
        kinds: list[torch.Tensor] = []
        c = self.config.context_slices
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            fake, _ = self.synthesize(batch)
            real = batch["images"][:, :, c].to(self.device).float()
            region = batch["region"][:, c].to(self.device).bool()
            brain = batch["classes"][:, c].to(self.device) > 0
            for name, v in region_metrics(fake, real, region, brain).items():
                values.setdefault(name, []).append(v.cpu())
            kinds.append(torch.as_tensor(batch["kind"]).reshape(-1))
        result: dict[str, float] = {}
        if not values:
            return result
        stacked = {k: torch.cat(v) for k, v in values.items()}
        kind = torch.cat(kinds)
        for name in ("psnr", "ssim", "l1"):
            per_seq = []
            for s, seq in enumerate(self.sequences):
                result[f"{name}/{seq}"] = _nanmean(stacked[name][:, s])
                per_seq.append(result[f"{name}/{seq}"])
            result[f"{name}/mean"] = float(np.nanmean(per_seq)) if any(math.isfinite(v) for v in per_seq) else math.nan
        result["psnr_meanfill/mean"] = _nanmean(stacked["psnr_meanfill"])
        for label, k in (("lesion", LESION_KIND), ("blob", BLOB_KIND)):
            result[f"psnr_{label}/mean"] = _nanmean(stacked["psnr"][kind == k])
        return result


def _nanmean(x: torch.Tensor) -> float:
    ok = torch.isfinite(x)
    return float(x[ok].mean()) if bool(ok.any()) else math.nan
