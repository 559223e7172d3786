"""Typed configuration of a SAMR GAN training run, its presets, and the baselines / ablations.

:class:`TrainConfig` holds everything the trainer needs besides the data: architecture (generator preset and
overrides, discriminators, shape-consistency U-Net), objective, optimisation, runtime. It round-trips through
JSON (:meth:`TrainConfig.to_dict` / :meth:`TrainConfig.from_dict`), so checkpoints and model cards record it.

Presets (:data:`TRAINING_PRESETS`, :func:`preset_config`): the generator presets of :mod:`samraug.models.generator` plus
discriminators and U-Net of matching size.

========  ==============  =====================  ==================  ======  =====================================
preset    generator       discriminators         U-Net               epochs  use
========  ==============  =====================  ==================  ======  =====================================
paper     ``paper``       base 64, 3 layers      depth 4, base 64    500     paper scale (GPU)
lite      ``lite``        base 32, 3 layers      depth 4, base 16    200     GPU, an order of magnitude cheaper
tiny      ``tiny``        base 16, 3 layers      depth 3, base 8     50      CPU in minutes; tests, demo weights
========  ==============  =====================  ==================  ======  =====================================

All presets: Adam 2e-4, betas (0.5, 0.999) for G, D and U; batch 8; learning rate constant for the first half of
the steps then linear decay to 0 (:mod:`samraug.training.schedule`); lambda_fm = 5, lambda_lc = 1 (eq. 5).

Models (``model_type``) and exactly what each optimises (:func:`model_defaults`):

- ``samr`` (paper, eq. 5): SAMR generator with atlas and stretch-out decoders; 3 ROIs x 2 scales = 6 label-wise
  PatchGANs; generator loss ``GAN + 5 * FM(l2) + 1 * GDL(x, U(G(x)))``; U trained on real images with
  ``GDL(x, U(y))``. The paper writes eq. 1 in the log-likelihood form; we default to its least-squares form
  (``gan_mode="lsgan"``, as in pix2pixHD, on which SAMR builds) for stability; ``gan_mode="bce"`` gives eq. 1.
- ``pix2pixhd``: pix2pixHD's global generator (no atlas, one shared decoder), 2 global multi-scale PatchGANs,
  ``lsgan + 10 * FM(l1)`` (pix2pixHD's defaults, without its VGG loss); no U-Net.
- ``pix2pix``: U-Net generator on the mask, ONE global PatchGAN at one scale, ``bce GAN + 100 * L1(G(x), y)``
  (pix2pix's objective); no feature matching, no U-Net.

Ablations (``samr`` only): ``stretch_out=False`` (one shared decoder), ``label_wise_d=False`` (2 global
multi-scale discriminators), ``use_atlas=False``, ``shape_consistency=False`` (no U-Net, no LC term).

Example:
    >>> cfg = preset_config("tiny", epochs=2, batch_size=4)
    >>> cfg.lr, cfg.betas, cfg.lambda_fm, cfg.batch_size
    (0.0002, (0.5, 0.999), 5.0, 4)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from samraug.intensity import NORMALIZATIONS
from samraug.labels import CONDITIONINGS
from samraug.seam import CONTEXT_FILLS

__all__ = [
    "AMP_MODES",
    "LOCAL_DEFAULTS",
    "MODEL_TYPES",
    "PRESETS",
    "TASKS",
    "TRAINING_PRESETS",
    "TrainConfig",
    "model_defaults",
    "preset_config",
]

MODEL_TYPES: tuple[str, ...] = ("samr", "pix2pix", "pix2pixhd")
AMP_MODES: tuple[str, ...] = ("auto", "bf16", "fp16", "off")
TASKS: tuple[str, ...] = ("whole", "local")

#: Per-preset values (everything not listed takes the TrainConfig default). Not to be confused with the
#: generator architecture presets ``samraug.models.generator.GENERATOR_PRESETS`` they refer to.
TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "generator_preset": "paper",
        "discriminator": {"base_channels": 64, "n_layers": 3},
        "unet": {"depth": 4, "base_channels": 64, "max_channels": 512},
        "epochs": 500,
    },
    "lite": {
        "generator_preset": "lite",
        "discriminator": {"base_channels": 32, "n_layers": 3, "max_channels": 256},
        "unet": {"depth": 4, "base_channels": 16, "max_channels": 128},
        "epochs": 200,
    },
    "tiny": {
        "generator_preset": "tiny",
        "discriminator": {"base_channels": 16, "n_layers": 3, "max_channels": 128},
        "unet": {"depth": 3, "base_channels": 8, "max_channels": 64},
        "epochs": 50,
    },
}

#: Objective of the local task (``--task local``) on top of the preset: the in-region L1 term dominates, the
#: adversarial, feature-matching and shape-consistency terms of the paper keep their weights.
LOCAL_DEFAULTS: dict[str, Any] = {"lambda_l1": 10.0}

#: Former name of :data:`TRAINING_PRESETS` (kept for existing imports).
PRESETS = TRAINING_PRESETS


@dataclass
class TrainConfig:
    """Everything a :class:`~samraug.training.gan.GANTrainer` run needs besides the data.

    Architecture:
        preset: Name recorded in outputs (``paper``, ``lite``, ``tiny`` or ``custom``).
        model_type: ``samr``, ``pix2pix`` or ``pix2pixhd`` (see the module docstring).
        generator_preset: Generator preset of :func:`samraug.models.generator.build_generator`.
        generator: Generator kwargs overriding the preset (e.g. ``{"n_res_blocks": 2}``).
        discriminator: :class:`~samraug.models.discriminator.LabelWiseDiscriminators` kwargs (``base_channels``,
            ``n_layers``, ``norm``, ``max_channels``; ``label_wise``/``n_scales`` come from the switches below).
        unet: :class:`~samraug.models.unet.UNet` kwargs (``depth``, ``base_channels``, ``norm``, ``max_channels``).
        conditioning: The mask classes: ``"native"`` (the data scheme's own lesion labels, default) or ``"samr"``
            (the paper's 5 classes); see :meth:`samraug.labels.LabelScheme.classes`.
        stretch_out, label_wise_d, use_atlas, shape_consistency: The paper's ablation switches.
        n_scales: Scales per discriminator set (2 in the paper; pix2pix uses 1).

    Objective:
        gan_mode: ``lsgan``, ``bce`` or ``hinge`` (:func:`samraug.losses.adversarial_loss`).
        lambda_fm, fm_norm: Feature-matching weight and norm (``l2`` = eq. 2, ``l1`` = pix2pixHD).
        lambda_lc: Weight of GDL(x, U(G(x))) in the generator loss.
        lambda_l1: Weight of an L1 reconstruction term (0 for SAMR; 100 for pix2pix).
        lambda_l2: Weight of a squared-error reconstruction term (same pixels and weights as the L1 term; 0 by
            default). L1 pulls each pixel to the median of what the context allows -- for tissue that may be grey
            or white matter, one of the two, crisp but often wrong; the squared error pulls it to the mean, which
            is what in-region PSNR and SSIM reward (the local task's healthy inpainting).
        d_smooth_sequences, d_smooth_sigma: The discriminators (and the feature-matching term) see these sequences,
            real and generated alike, through an in-plane Gaussian of ``d_smooth_sigma`` voxels: for a sequence
            acquired far coarser than its voxels (APTw), whose voxel-scale texture is acquisition noise, so that the
            adversarial terms stop rewarding painted noise (which changes from slice to slice) while the
            reconstruction terms still see every voxel. Off (``()``) by default.
        l1_class_balance: Local task: every class present in a batch's regions gets the same total weight in the
            L1 term (inverse-frequency weights), so thin, rare classes such as enhancing tumour count as much as
            the normal brain around them; off (plain mean over the region) by default.

    Optimisation:
        lr, betas: Adam for G, D and U.
        batch_size: Per process (DDP: the global batch is ``batch_size * world_size``).
        epochs: Training length; ``max_steps`` (if set) overrides it and the run stops after that many steps.
        decay_start: Fraction of the steps after which the learning rate decays linearly to 0 (0.5 = paper).

    Runtime:
        amp: ``auto`` (CUDA: bf16 if supported else fp16 with a GradScaler; CPU: off), ``bf16``, ``fp16``, ``off``.
        channels_last: Use the channels-last memory format on CUDA.
        seed: Seeds torch / numpy / random, the sampler and the DataLoader workers.
        num_workers: DataLoader workers.
        checkpoint_every: Checkpoint every N steps (0: only at the end); ``keep_last`` checkpoints are kept, plus
            every one at a multiple of ``keep_every`` steps (0: none; e.g. ``validate_every``).
        log_every: Log scalars every N steps.
        grid_samples: Samples in the per-epoch PNG grid.
        sync_bn: Convert BatchNorm to SyncBatchNorm under DDP.
        validate_every: Also validate every N steps and log ``val/...`` to the CSV (0: only at the end).
        val_max_batches: Batches of the periodic validation (0: the whole validation set).

    Task:
        task: ``"whole"`` (whole slices from mask + atlas) or ``"local"`` (region painting,
            :mod:`samraug.training.local`; ``generator_preset`` then names a local preset, ``tiny`` or ``lite``).
        context_slices: Local task: slices on each side of the painted one (2.5D context).
        crop_size: Local task: training crop (H, W) in voxels.
        context_fill: Local task: what the context shows inside the hidden region: ``"zero"`` (blanked, the
            original contract) or ``"harmonic"`` (the region filled in 3D by harmonic interpolation from the brain
            around it, :func:`samraug.seam.harmonic_fill`: with ``residual`` generators the model paints a residual
            over classical inpainting). Recorded in the weights; painting builds the same context.
        normalization: How the images are normalised (:meth:`samraug.intensity.Normalization.named`):
            ``"normal-brain"`` (percentiles of the normal-appearing brain to -0.8 / -0.2, so the brain's level does
            not depend on the lesion and bright lesions are not clipped; what the recipe uses) or ``"brain"``
            (whole-brain percentiles to -1 / +1: the default, what checkpoints written before the field used).
            Recorded in the exported weights' config; painting reads it from there.
    """

    preset: str = "custom"
    model_type: str = "samr"
    generator_preset: str = "tiny"
    generator: dict[str, Any] = field(default_factory=dict)
    discriminator: dict[str, Any] = field(default_factory=dict)
    unet: dict[str, Any] = field(default_factory=dict)
    conditioning: str = "native"
    stretch_out: bool = True
    label_wise_d: bool = True
    use_atlas: bool = True
    shape_consistency: bool = True
    n_scales: int = 2
    gan_mode: Literal["lsgan", "bce", "hinge"] = "lsgan"
    lambda_fm: float = 5.0
    fm_norm: Literal["l2", "l1"] = "l2"
    lambda_lc: float = 1.0
    lambda_l1: float = 0.0
    lambda_l2: float = 0.0
    l1_class_balance: bool = False
    d_smooth_sequences: tuple[str, ...] = ()
    d_smooth_sigma: float = 0.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 8
    epochs: int = 500
    max_steps: int | None = None
    decay_start: float = 0.5
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = True
    seed: int = 0
    num_workers: int = 2
    checkpoint_every: int = 1000
    keep_last: int = 3
    keep_every: int = 0
    log_every: int = 10
    grid_samples: int = 4
    sync_bn: bool = False
    validate_every: int = 0
    val_max_batches: int = 0
    task: str = "whole"
    context_slices: int = 1
    crop_size: tuple[int, int] = (64, 64)
    context_fill: Literal["zero", "harmonic"] = "zero"
    normalization: str = "brain"

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.crop_size = (int(self.crop_size[0]), int(self.crop_size[1]))
        self.d_smooth_sequences = tuple(str(x) for x in self.d_smooth_sequences)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and how to fix it."""
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {self.model_type!r}; use one of {list(MODEL_TYPES)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; use one of {list(TASKS)}")
        if self.context_fill not in CONTEXT_FILLS:
            raise ValueError(f"unknown context_fill {self.context_fill!r}; use one of {list(CONTEXT_FILLS)}")
        if self.context_fill != "zero" and self.task != "local":
            raise ValueError("context_fill is the local task's context (task='local')")
        if int(self.context_slices) < 0 or min(self.crop_size) < 1:
            raise ValueError(
                f"context_slices must be >= 0 and crop_size positive, got {self.context_slices}, {self.crop_size}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; use one of {list(NORMALIZATIONS)}")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {self.conditioning!r}; use one of {list(CONDITIONINGS)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown amp mode {self.amp!r}; use one of {list(AMP_MODES)}")
        if self.gan_mode not in ("lsgan", "bce", "hinge"):
            raise ValueError(f"unknown gan_mode {self.gan_mode!r}; use 'lsgan', 'bce' or 'hinge'")
        if self.fm_norm not in ("l2", "l1"):
            raise ValueError(f"unknown fm_norm {self.fm_norm!r}; use 'l2' or 'l1'")
        for name in ("batch_size", "epochs", "n_scales", "keep_last", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "num_workers",
            "checkpoint_every",
            "keep_every",
            "grid_samples",
            "validate_every",
            "val_max_batches",
        ):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ValueError(f"decay_start is a fraction of the steps in [0, 1], got {self.decay_start}")
        if self.l1_class_balance and self.task != "local":
            raise ValueError("l1_class_balance weights the local task's region by class; use it with task='local'")
        for name in ("lambda_fm", "lambda_lc", "lambda_l1", "lambda_l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if bool(self.d_smooth_sequences) != (self.d_smooth_sigma > 0):
            raise ValueError(
                "d_smooth_sequences and d_smooth_sigma go together: name the sequences the discriminators see "
                f"smoothed and a sigma > 0 (voxels), or neither; got {list(self.d_smooth_sequences)} and "
                f"{self.d_smooth_sigma}"
            )

    # ------------------------------------------------------------------ derived
    @property
    def uses_unet(self) -> bool:
        """Whether a shape-consistency U-Net is trained (and LC enters the generator loss)."""
        return self.shape_consistency and self.lambda_lc > 0

    def generator_kwargs(self) -> dict[str, Any]:
        """Overrides passed to ``build_generator`` (the ablation switches included for ``samr``)."""
        kwargs = dict(self.generator)
        if self.model_type == "samr":
            kwargs.setdefault("stretch_out", self.stretch_out)
            kwargs.setdefault("use_atlas", self.use_atlas)
        return kwargs

    def discriminator_kwargs(self) -> dict[str, Any]:
        """Kwargs of ``LabelWiseDiscriminators`` (without ``n_sequences``)."""
        return {**self.discriminator, "label_wise": self.label_wise_d, "n_scales": self.n_scales}

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["crop_size"] = list(self.crop_size)
        d["d_smooth_sequences"] = list(self.d_smooth_sequences)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; allowed: {sorted(names)}")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        if "crop_size" in data:
            data["crop_size"] = tuple(data["crop_size"])
        if "d_smooth_sequences" in data:
            data["d_smooth_sequences"] = tuple(data["d_smooth_sequences"])
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


def model_defaults(model_type: str) -> dict[str, Any]:
    """The objective / discriminator settings a baseline implies (see the module docstring).

    Example:
        >>> model_defaults("pix2pix")["lambda_l1"]
        100.0
    """
    if model_type == "samr":
        return {}
    if model_type == "pix2pixhd":
        return {
            "use_atlas": False,
            "stretch_out": False,
            "label_wise_d": False,
            "shape_consistency": False,
            "n_scales": 2,
            "gan_mode": "lsgan",
            "lambda_fm": 10.0,
            "fm_norm": "l1",
            "lambda_lc": 0.0,
        }
    if model_type == "pix2pix":
        return {
            "use_atlas": False,
            "stretch_out": False,
            "label_wise_d": False,
            "shape_consistency": False,
            "n_scales": 1,
            "gan_mode": "bce",
            "lambda_fm": 0.0,
            "lambda_lc": 0.0,
            "lambda_l1": 100.0,
        }
    raise ValueError(f"unknown model_type {model_type!r}; use one of {list(MODEL_TYPES)}")


def preset_config(preset: str = "tiny", *, model_type: str = "samr", **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` for a preset and model type, with ``overrides`` applied last.

    Example:
        >>> preset_config("lite", model_type="pix2pixhd").label_wise_d
        False
    """
    if preset not in TRAINING_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {list(TRAINING_PRESETS)}")
    values: dict[str, Any] = {"preset": preset, "model_type": model_type}
    for key, value in TRAINING_PRESETS[preset].items():
        values[key] = dict(value) if isinstance(value, dict) else value
    values.update(model_defaults(model_type))
    values.update(overrides)
    return TrainConfig(**values)
