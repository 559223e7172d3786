"""The SAMR GAN trainer (paper eq. 5): generator, label-wise discriminators, shape-consistency U-Net.

One optimisation step of :class:`GANTrainer` (``train_step``), on a batch of 2D instances
(:mod:`samraug.data.slices`: ``mask`` x, ``image`` y, ``atlas``; ``_inputs`` turns a batch into a
:class:`StepInputs`, which the local trainer overrides). The classes of ``x`` are those of the data's label scheme
under ``config.conditioning`` (``native``: the scheme's own lesion labels; ``samr``: the paper's 5 classes):

0. ``fake = G(x, atlas)`` (one generator forward, reused below).
1. **Discriminators**: ``discriminator_objective(D(x, y), D(x, fake.detach()))``; Adam step on D.
2. **U-Net** (shape consistency on): ``GDL(x, softmax(U(y)))`` on REAL images; Adam step on U.
3. **Generator**: ``generator_objective``: ``GAN(D(x, fake)) + lambda_fm * FM(D(x, y), D(x, fake)) +
   lambda_lc * GDL(x, softmax(U(fake)))`` (+ ``lambda_l1 * |fake - y|``, an L1 reconstruction term: 100 for
   pix2pix, and ``lambda_l2 * (fake - y)^2``, a squared-error one; the local task
   (:mod:`samraug.training.local`) counts both inside the painted region only). D and U are frozen for this
   step (``requires_grad_(False)`` on their parameters, and their plain modules are called, not their DDP
   wrappers), so no gradient accumulates into them; only G's optimizer steps. D's real
   features are taken with the D of step 1 after its update, the same D that scores the fake. U stays in
   train mode (batch statistics, as it was trained), so its BatchNorm running statistics also see the
   synthetic batch.
4. The three learning-rate schedules advance (:class:`~samraug.training.schedule.LinearDecaySchedule`:
   constant for the first ``decay_start`` fraction of the steps, then linear to 0; per step, not per epoch).

Runtime: on CUDA, autocast in bf16 when supported (else fp16 with a ``GradScaler``) and channels-last tensors;
on CPU, fp32. Everything is seeded (``config.seed``): model initialisation, the data order (a
``DistributedSampler`` seeded with ``(seed, epoch)``, also in a single process), DataLoader workers
(per-epoch ``torch.Generator`` + :func:`seed_worker`).

Checkpoints (:mod:`samraug.training.checkpoint`) hold models, optimizers, schedules, the GradScaler, the RNG
states (torch CPU/CUDA, numpy, python) and the position (step, epoch, batches done in the epoch): resuming
re-creates the epoch's sampler and skips the batches already done, so on CPU a resumed run is bitwise the run
that was never interrupted (with ``num_workers=0``, or a dataset without randomness of its own). Under DDP only
rank 0 writes (between barriers) and its RNG state is restored on every rank on resume.

Seeding (:mod:`samraug.training.seeding`), data preparation (:mod:`samraug.training.data`) and image metrics
(:mod:`samraug.metrics`) live in their own modules; their names stay importable from here.

Example:
    >>> from samraug.training import GANTrainer, preset_config
    >>> trainer = GANTrainer(preset_config("tiny", epochs=1, batch_size=2), sequences=("t1n", "t2f"))
    >>> # trainer.fit(train_dataset, val_dataset=val_dataset, out_dir="/tmp/run")   # see recipes/train_samr.py
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from samraug.hub import (
    config_conditioning,
    read_config,
    resolve_weights,
    save_weights,
    scheme_from_config,
)
from samraug.intensity import Normalization
from samraug.labels import EDEMA, LabelScheme, get_scheme
from samraug.losses import discriminator_objective, generalized_dice_loss, generator_objective, smooth_channels
from samraug.metrics import image_metrics, ssim_map
from samraug.models.discriminator import LabelWiseDiscriminators
from samraug.models.generator import build_generator, generator_from_config
from samraug.models.unet import UNet
from samraug.serialization import (
    MODEL_NAME,
    load_state_dict_strict,
    read_safetensors,
)
from samraug.training.checkpoint import LATEST, STATE_FILE, CheckpointManager, load_checkpoint
from samraug.training.config import TrainConfig
from samraug.training.data import GANData, SyntheticSliceDataset, prepare_gan_data
from samraug.training.distributed import (
    DistEnv,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    init_distributed,
    unwrap,
    wrap_model,
)
from samraug.training.logging import TrainLogger, sample_grid, write_png
from samraug.training.schedule import LinearDecaySchedule
from samraug.training.seeding import SkipSampler, epoch_generator, seed_everything, seed_worker

__all__ = [
    "GANData",
    "GANTrainer",
    "StepInputs",
    "SyntheticSliceDataset",
    "TrainResult",
    "image_metrics",
    "is_checkpoint_source",
    "locate_init_source",
    "prepare_gan_data",
    "saved_config",
    "seed_everything",
    "seed_worker",
    "ssim_map",
]

STATE_FORMAT = "samraug-gan-trainer/1"
#: TrainConfig fields that may differ between a run and its resumption (they do not change the numbers).
RESUME_FREE_FIELDS = (
    "num_workers",
    "checkpoint_every",
    "keep_last",
    "log_every",
    "grid_samples",
    "validate_every",
    "val_max_batches",
)
#: TrainConfig fields that fix the models' architecture (``--init-from`` a checkpoint must match them).
ARCHITECTURE_FIELDS = (
    "model_type",
    "generator_preset",
    "generator",
    "discriminator",
    "unet",
    "stretch_out",
    "label_wise_d",
    "use_atlas",
    "shape_consistency",
    "n_scales",
    "conditioning",
)


def saved_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's training config, with the defaults of fields added since it was written (a field's default is
    the behaviour before it existed), so that older checkpoints resume and initialise unchanged."""
    return {**TrainConfig().to_dict(), **dict(state["config"])}


def is_checkpoint_source(path: Path) -> bool:
    """Whether ``path`` is a run's checkpoint (``step-XXXXXXXXX``) or a checkpoints root holding some."""
    return path.is_dir() and ((path / STATE_FILE).is_file() or bool(CheckpointManager(path).checkpoints()))


def locate_init_source(source: str | Path) -> str | Path:
    """Check an ``--init-from`` source before anything is read or written; returns what to load from.

    A checkpoint (``step-XXXXXXXXX``), a checkpoints root or its ``latest`` pointer file give that checkpoint's
    folder (the root: itself, its newest verified one is taken at load time); a weights folder or
    ``"org/name[@revision]"`` is returned as given (resolved by :func:`samraug.hub.resolve_weights`, which
    downloads a Hub repository once).

    Raises:
        FileNotFoundError / ValueError: a path that is neither (the message names it and what was expected).

    Example:
        >>> locate_init_source("/nonexistent/run")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: --init-from /nonexistent/run: no such file or folder; ...
    """
    path = Path(str(source)).expanduser()
    if path.is_file() and path.name == LATEST:  # the checkpoints root's pointer file
        return path.parent
    if is_checkpoint_source(path):
        return path
    if not path.exists() and (str(source).startswith((".", "/", "~")) or str(source).count("/") != 1):
        raise FileNotFoundError(
            f"--init-from {source}: no such file or folder; pass a weights folder (config.json, model.safetensors), "
            "a run's checkpoint (step-XXXXXXXXX, its checkpoints folder or latest file) or org/name[@rev]"
        )
    read_config(resolve_weights(source))  # a weights folder or Hub repository: its own clear error if not
    return source


# ---------------------------------------------------------------------------------------------------- trainer
@dataclass
class StepInputs:
    """What one training step needs from a batch (on the device).

    Attributes:
        generator_args: Positional arguments of the generator (whole slices: ``(mask, atlas)``; local:
            ``(mask, context)``).
        mask: ``(B, K, H, W)`` one-hot classes the discriminators and the shape-consistency U-Net see.
        real: ``(B, S, H, W)`` real images in [-1, 1] (the target).
        l1_weight: ``(B, 1, H, W)`` where the L1 reconstruction term counts (None: everywhere).
    """

    generator_args: tuple[Any, ...]
    mask: torch.Tensor
    real: torch.Tensor
    l1_weight: torch.Tensor | None = None


@dataclass
class TrainResult:
    """What :meth:`GANTrainer.fit` returns: steps done, last logged losses, validation numbers, wall time."""

    steps: int
    epochs: float
    losses: dict[str, float]
    validation: dict[str, float]
    seconds: float


def batch_to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """The tensors of ``batch`` on ``device`` (4D ones channels-last when asked); other values as they are."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


class GANTrainer:
    """Trains a SAMR generator (or a baseline) with label-wise discriminators and the shape-consistency U-Net.

    Args:
        config: The run's :class:`~samraug.training.config.TrainConfig`.
        sequences: Sequence names of the data, in the model's output order.
        label_scheme: Label scheme of the data; with ``config.conditioning`` it fixes the model classes
            (``n_labels = len(scheme.classes(conditioning))``: the generator's mask channels, the discriminators'
            mask channels, the U-Net's outputs). ``"samr"`` (default) has the 5 SAMR classes either way.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``/None; ignored under ``torchrun`` (each rank uses its GPU).
        env: A :class:`~samraug.training.distributed.DistEnv` (default: :func:`init_distributed` with ``device``).

    Attributes:
        generator, discriminator, unet: The plain modules (``unet`` is None without shape consistency).
        scheme, classes, n_labels: The label scheme and the model classes.
        step, epoch, batch_in_epoch: Training position.

    Example:
        >>> t = GANTrainer(preset_config("tiny"), sequences=("t1n", "t1c"))  # doctest: +SKIP
        >>> result = t.fit(train_ds, val_dataset=val_ds, out_dir="/tmp/samr-run")  # doctest: +SKIP
        >>> t.export("/tmp/samr-weights", atlas, card={"data": "phantom", "simulated": True})  # doctest: +SKIP
    """

    def __init__(
        self,
        config: TrainConfig,
        sequences: Sequence[str],
        *,
        label_scheme: str | LabelScheme = "samr",
        device: str | torch.device | None = None,
        env: DistEnv | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.sequences = tuple(sequences)
        if not self.sequences:
            raise ValueError("sequences is empty; pass the data's sequence names, e.g. ('t1n', 't1c', 't2w', 't2f')")
        unknown = [s for s in config.d_smooth_sequences if s not in self.sequences]
        if unknown:
            raise ValueError(
                f"d_smooth_sequences {unknown} are not among the data's sequences {list(self.sequences)}; "
                "name sequences the model makes"
            )
        self._d_smooth_channels = [self.sequences.index(s) for s in config.d_smooth_sequences]
        self.scheme = get_scheme(label_scheme)
        self.classes: tuple[str, ...] = self.scheme.classes(config.conditioning)
        self.n_labels = len(self.classes)
        self.env = env if env is not None else init_distributed(device)
        self.device = self.env.device
        cuda = self.device.type == "cuda"
        self.channels_last = bool(config.channels_last and cuda)
        self.amp_dtype = self._amp_dtype()

        seed_everything(config.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        modules = self.build_models()
        generator, unet = modules["G"], modules.get("U")
        self.use_atlas = bool(getattr(generator, "use_atlas", False))
        #: H and W of the instances must be multiples of this (generator and U-Net down-samplings).
        self.size_multiple = max(int(getattr(generator, "size_multiple", 1)), 2**unet.depth if unet is not None else 1)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self._models: dict[str, nn.Module] = {}
        for name, m in modules.items():
            m.to(self.device, memory_format=memory_format)
            self._models[name] = wrap_model(m, self.env, sync_bn=config.sync_bn)
        self.optimizers = {
            name: torch.optim.Adam(m.parameters(), lr=config.lr, betas=config.betas) for name, m in self._models.items()
        }
        self.schedulers: dict[str, LinearDecaySchedule] = {}
        self.scaler = torch.amp.GradScaler(
            "cuda" if cuda else "cpu", enabled=bool(cuda and self.amp_dtype == torch.float16)
        )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.total_steps: int | None = None
        self.steps_per_epoch: int | None = None
        self._saved_step: int | None = None
        #: Where the models were initialised from (:meth:`init_from`), newest first; empty for a fresh start.
        self.lineage: list[str] = []

    # ------------------------------------------------------------------ models
    def build_models(self) -> dict[str, nn.Module]:
        """The untrained ``{"G": generator, "D": discriminators[, "U": U-Net]}`` of this config (seeded by the
        caller). Subclasses (the local trainer) override it."""
        cfg = self.config
        generator = build_generator(
            cfg.generator_preset,
            model_type=cfg.model_type,
            sequences=self.sequences,
            n_labels=self.n_labels,
            **cfg.generator_kwargs(),
        )
        discriminator = LabelWiseDiscriminators(
            n_labels=self.n_labels, n_sequences=len(self.sequences), **cfg.discriminator_kwargs()
        )
        unet = UNet(len(self.sequences), self.n_labels, **cfg.unet) if cfg.uses_unet else None
        return {"G": generator, "D": discriminator, **({"U": unet} if unet is not None else {})}

    @property
    def generator(self) -> nn.Module:
        """The plain generator module (not its DDP wrapper)."""
        return unwrap(self._models["G"])

    @property
    def discriminator(self) -> nn.Module:
        """The plain discriminators module."""
        return unwrap(self._models["D"])

    @property
    def unet(self) -> nn.Module | None:
        """The plain shape-consistency U-Net (None when shape consistency is off)."""
        return unwrap(self._models["U"]) if "U" in self._models else None

    def _amp_dtype(self) -> torch.dtype | None:
        mode = self.config.amp
        if self.device.type != "cuda" or mode == "off":
            if mode in ("bf16", "fp16") and self.device.type != "cuda":
                warnings.warn(f"amp={mode!r} is only used on CUDA; training in fp32 on {self.device}", stacklevel=3)
            return None
        if mode == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if mode == "bf16" else torch.float16

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # ------------------------------------------------------------------ one step
    def setup_schedule(self, total_steps: int, steps_per_epoch: int | None = None) -> None:
        """Create the learning-rate schedules for a run of ``total_steps`` optimisation steps."""
        self.total_steps = int(total_steps)
        self.steps_per_epoch = steps_per_epoch
        decay_start = round(self.config.decay_start * self.total_steps)
        self.schedulers = {
            name: LinearDecaySchedule(opt, self.total_steps, decay_start) for name, opt in self.optimizers.items()
        }

    def _inputs(self, batch: Mapping[str, Any]) -> StepInputs:
        """Device tensors of a batch: what G is called with, the one-hot mask D and U see, the real images and
        where the L1 term counts. Subclasses (the local trainer) override it."""
        for key in ("mask", "image"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r}; expected SliceDataset instances (keys mask, image, atlas, ...)")
        b = batch_to_device(
            {k: batch[k] for k in ("mask", "image", "atlas", "mask_stack") if k in batch},
            self.device,
            self.channels_last,
        )
        mask, real = b["mask"].float(), b["image"].float()
        self._check_mask(mask)
        g_mask = mask
        slices = int(getattr(self.generator, "mask_slices", 1))
        if slices > 1:
            if "mask_stack" not in b:
                raise KeyError(
                    f"the generator sees {slices} adjacent mask slices but the batch has no 'mask_stack'; build the "
                    f"data with mask_slices={slices} (prepare_gan_data / SliceDataset)"
                )
            g_mask = b["mask_stack"].float()
        for key in ("image", "atlas"):
            if key in b and not bool(torch.isfinite(b[key]).all()):
                ids = batch.get("subject_id", "?")
                raise ValueError(
                    f"batch {key!r} contains NaN/inf (subjects {ids}); fix the input volumes (e.g. np.nan_to_num) "
                    "before training"
                )
        self._check_sequences(real)
        atlas = None
        if self.use_atlas:
            if "atlas" not in b:
                raise KeyError("the generator uses an atlas but the batch has no 'atlas'; build the data with an atlas")
            atlas = b["atlas"].float()
        return StepInputs(generator_args=(g_mask, atlas), mask=mask, real=real)

    def _check_mask(self, mask: torch.Tensor) -> None:
        if mask.dim() != 4 or mask.shape[1] != self.n_labels:
            raise ValueError(
                f"batch masks have shape {tuple(mask.shape)} but the trainer expects (B, {self.n_labels}, H, W): the "
                f"{self.config.conditioning!r} classes of label scheme {self.scheme.name!r} {list(self.classes)}; "
                "build the GANTrainer with label_scheme=<the data's scheme> and the data with the same conditioning "
                "(prepare_gan_data(..., conditioning=config.conditioning))"
            )

    def _check_sequences(self, real: torch.Tensor) -> None:
        if real.shape[1] != len(self.sequences):
            raise ValueError(
                f"batch images have {real.shape[1]} sequences but the trainer was built for {len(self.sequences)} "
                f"{self.sequences}; build the data set with the same sequences"
            )

    def _d_view(self, images: torch.Tensor) -> torch.Tensor:
        """What the discriminators see of ``images``: ``config.d_smooth_sequences`` blurred in-plane
        (:func:`samraug.losses.smooth_channels`), the other sequences as they are."""
        return smooth_channels(images, self._d_smooth_channels, self.config.d_smooth_sigma)

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One D, U and G update on ``batch``; returns detached scalar losses (see the module docstring)."""
        if not self.schedulers:
            raise RuntimeError("call setup_schedule(total_steps) (or fit) before train_step")
        cfg = self.config
        inputs = self._inputs(batch)
        mask, real = inputs.mask, inputs.real
        G, D = self._models["G"], self._models["D"]
        U = self._models.get("U")
        for m in self._models.values():
            m.train()
        with self._autocast():
            fake = G(*inputs.generator_args)
        out: dict[str, torch.Tensor] = {}

        # (1) discriminators on real vs detached fake (both smoothed on cfg.d_smooth_sequences)
        real_d = self._d_view(real)
        with self._autocast():
            ld = discriminator_objective(D(mask, real_d), D(mask, self._d_view(fake.detach())), gan_mode=cfg.gan_mode)
        self.optimizers["D"].zero_grad(set_to_none=True)
        self.scaler.scale(ld["total"]).backward()
        self.scaler.step(self.optimizers["D"])
        out.update(d_real=ld["real"], d_fake=ld["fake"], d_total=ld["total"])

        # (2) shape-consistency U-Net on REAL images
        if U is not None:
            with self._autocast():
                logits = U(real)
            lu = generalized_dice_loss(torch.softmax(logits.float(), 1), mask)
            self.optimizers["U"].zero_grad(set_to_none=True)
            self.scaler.scale(lu).backward()
            self.scaler.step(self.optimizers["U"])
            out["u_gdl"] = lu

        # (3) generator; D and U frozen (plain modules: no DDP reducer involved)
        frozen = [unwrap(D)] + ([unwrap(U)] if U is not None else [])
        for m in frozen:
            m.requires_grad_(False)
        try:
            d_net = unwrap(D)
            with self._autocast():
                d_fake = d_net(mask, self._d_view(fake))
                d_real = None
                if cfg.lambda_fm > 0:
                    with torch.no_grad():
                        d_real = d_net(mask, real_d)
                seg_fake = None
                if U is not None:
                    seg_fake = torch.softmax(unwrap(U)(fake).float(), 1)
            lg = generator_objective(
                d_fake,
                d_real,
                seg_fake=seg_fake,
                mask_onehot=mask if seg_fake is not None else None,
                lambda_fm=cfg.lambda_fm,
                lambda_lc=cfg.lambda_lc,
                gan_mode=cfg.gan_mode,
                fm_norm=cfg.fm_norm,
            )
            diff = fake.float() - real
            err, sq = diff.abs(), diff.square()
            if inputs.l1_weight is None:
                l1, l2 = err.mean(), sq.mean()
            else:  # mean over the weighted pixels (the region), all sequences
                w = inputs.l1_weight.to(err.dtype).expand_as(err)
                l1 = (err * w).sum() / w.sum().clamp_min(1.0)
                l2 = (sq * w).sum() / w.sum().clamp_min(1.0)
            total = lg["total"]
            if cfg.lambda_l1 > 0:
                total = total + cfg.lambda_l1 * l1
            if cfg.lambda_l2 > 0:
                total = total + cfg.lambda_l2 * l2
            self.optimizers["G"].zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizers["G"])
        finally:
            for m in frozen:
                m.requires_grad_(True)
        self.scaler.update()
        for sched in self.schedulers.values():
            sched.step()
        self.step += 1
        out.update(g_gan=lg["gan"], g_fm=lg["fm"], g_lc=lg["lc"], g_total=total, l1=l1, l2=l2)
        return {k: v.detach().float() for k, v in out.items()}

    # ------------------------------------------------------------------ data
    def make_loader(self, dataset: Dataset, epoch: int, skip_batches: int = 0) -> DataLoader:
        """The DataLoader of ``epoch``: sharded, shuffled by ``(seed, epoch)``, skipping ``skip_batches``."""
        sampler = self._sampler(dataset)
        sampler.set_epoch(epoch)
        use = SkipSampler(sampler, skip_batches * self.config.batch_size) if skip_batches else sampler
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=use,
            drop_last=True,
            num_workers=workers,
            worker_init_fn=seed_worker if workers > 0 else None,
            generator=epoch_generator(self.config.seed, epoch, self.env.rank),
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _sampler(self, dataset: Dataset) -> DistributedSampler:
        return DistributedSampler(
            dataset,
            num_replicas=self.env.world_size,
            rank=self.env.rank,
            shuffle=True,
            seed=self.config.seed,
            drop_last=False,
        )

    def plan(self, dataset: Dataset) -> tuple[int, int]:
        """``(steps_per_epoch, total_steps)`` for ``dataset`` under this config (``max_steps`` wins over epochs)."""
        per_rank = len(self._sampler(dataset))
        steps_per_epoch = per_rank // self.config.batch_size
        if steps_per_epoch < 1:
            raise ValueError(
                f"the data set has {len(dataset)} instances ({per_rank} per process), fewer than one batch of "
                f"{self.config.batch_size}; lower --batch-size or add subjects"
            )
        total = self.config.max_steps or self.config.epochs * steps_per_epoch
        return steps_per_epoch, int(total)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (tensors + JSON-able values; see :mod:`samraug.training.checkpoint`)."""
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),  # noqa: NPY002
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "sequences": list(self.sequences),
            "label_scheme": self.scheme.name,
            "lineage": list(self.lineage),
            "models": {name: unwrap(m).state_dict() for name, m in self._models.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "progress": {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch,
                "world_size": self.env.world_size,
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checked against this trainer's config and sequences)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a GANTrainer checkpoint (format {state.get('format')!r}, expected {STATE_FORMAT!r})")
        saved = saved_config(state)
        mine = self.config.to_dict()
        diff = sorted(k for k in set(saved) | set(mine) if k not in RESUME_FREE_FIELDS and saved.get(k) != mine.get(k))
        if diff:
            details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {mine.get(k)!r}" for k in diff)
            raise ValueError(
                f"the checkpoint was trained with a different configuration ({details}); resume with the same "
                "arguments (only workers / checkpoint / logging settings may change) or start a new run"
            )
        if tuple(state["sequences"]) != self.sequences:
            raise ValueError(f"checkpoint sequences {state['sequences']} differ from the data's {list(self.sequences)}")
        if state.get("label_scheme", "samr") != self.scheme.name:
            raise ValueError(
                f"the checkpoint was trained on label scheme {state.get('label_scheme', 'samr')!r}, this run has "
                f"{self.scheme.name!r}; resume with the same data"
            )
        progress = state["progress"]
        if int(progress.get("world_size", 1)) != self.env.world_size:
            raise ValueError(
                f"the checkpoint was written by {progress.get('world_size')} processes, this run has "
                f"{self.env.world_size}; resume with the same number of processes (the data order depends on it)"
            )
        names = set(self._models)
        if set(state["models"]) != names:
            raise ValueError(f"checkpoint models {sorted(state['models'])} differ from this trainer's {sorted(names)}")
        for name, m in self._models.items():
            unwrap(m).load_state_dict({k: v.to(self.device) for k, v in state["models"][name].items()}, strict=True)
            self.optimizers[name].load_state_dict(state["optimizers"][name])
        total = progress.get("total_steps")
        if total is not None:
            self.setup_schedule(int(total), progress.get("steps_per_epoch"))
            for name, s in self.schedulers.items():
                s.load_state_dict(state["schedulers"][name])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])  # noqa: NPY002
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.lineage = list(state.get("lineage") or [])
        self.step = int(progress["step"])
        self.epoch = int(progress["epoch"])
        self.batch_in_epoch = int(progress["batch_in_epoch"])

    def save_checkpoint(self, manager: CheckpointManager) -> Path | None:
        """Write a checkpoint on rank 0 (all ranks wait at barriers around the write); returns its path."""
        self.sync_buffers()
        barrier(self.env)
        path = manager.save(self.state_dict(), self.step) if self.env.is_main else None
        barrier(self.env)
        self._saved_step = self.step
        return path

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics); a no-op in one process."""
        for m in self._models.values():
            broadcast_buffers(m, self.env)

    def resume(self, manager: CheckpointManager, path: str | Path | None = None) -> Path:
        """Load ``path`` or the latest checkpoint of ``manager`` (on every rank); returns the folder used."""
        folder = Path(path) if path is not None else manager.latest()
        if folder is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {manager.root}; start without --resume")
        self.load_state_dict(manager.load(folder))
        self._saved_step = self.step
        return folder

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train_dataset: Dataset,
        *,
        val_dataset: Dataset | None = None,
        out_dir: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool | str | Path = False,
        stop_at_step: int | None = None,
        progress: bool = True,
        validate: bool = True,
        grids: bool = True,
    ) -> TrainResult:
        """Train until ``total_steps`` (``config.max_steps`` or ``epochs`` x steps per epoch).

        Args:
            train_dataset: Training instances (:class:`samraug.data.slices.SliceDataset` or the same dicts).
            val_dataset: Validation instances: validation numbers at the end, the grid samples.
            out_dir: Where ``log.csv``, ``grids/epoch-XXXX.png`` and (by default) ``checkpoints/`` go; None keeps
                nothing on disk.
            checkpoint_dir: Checkpoint root (default ``out_dir/checkpoints``); every ``config.checkpoint_every``
                steps and at the end.
            resume: True (latest checkpoint of ``checkpoint_dir``), a checkpoint folder, or False.
            stop_at_step: Stop at this step without changing the schedule: checkpoint, validate and return (a
                time-boxed session to be resumed later, or a run stopped where validation stopped improving). With
                ``resume`` and a step at or below the checkpoint's, nothing is trained.
            progress: tqdm progress bar on rank 0.
            validate: Run :meth:`evaluate` on ``val_dataset`` at the end.
            grids: Write the per-epoch PNG grid.
        """
        start = time.perf_counter()
        cfg = self.config
        steps_per_epoch, total_steps = self.plan(train_dataset)
        out = Path(out_dir) if out_dir is not None else None
        ckpt_root = Path(checkpoint_dir) if checkpoint_dir is not None else (out / "checkpoints" if out else None)
        manager = (
            CheckpointManager(ckpt_root, keep_last=cfg.keep_last, keep_every=cfg.keep_every)
            if ckpt_root is not None
            else None
        )
        self.setup_schedule(total_steps, steps_per_epoch)
        if resume:
            if manager is None:
                raise ValueError("resume needs a checkpoint_dir (or out_dir); pass --out of the interrupted run")
            self.resume(manager, None if resume is True else resume)
            if self.total_steps != total_steps or self.steps_per_epoch != steps_per_epoch:
                raise ValueError(
                    f"the checkpoint planned {self.total_steps} steps of {self.steps_per_epoch} per epoch, but this "
                    f"data/config gives {total_steps} of {steps_per_epoch}; resume with the same data and arguments"
                )
        is_main = self.env.is_main
        # Resumed only to stop at or before the checkpoint (an export): nothing is trained, so the run's log keeps
        # every row (a later checkpoint's rows included) and only the final validation is appended.
        export_only = bool(resume) and stop_at_step is not None and stop_at_step <= self.step
        keep_rows = sys.maxsize if export_only else self.step
        logger = (
            TrainLogger(out, enabled=is_main, resume_step=keep_rows if resume else None) if out is not None else None
        )
        grid_batch = self._grid_batch(val_dataset if val_dataset is not None else train_dataset)
        bar = None
        if progress and is_main:
            bar = tqdm(
                total=total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr
            )
        end = min(total_steps, stop_at_step) if stop_at_step is not None else total_steps
        running: dict[str, torch.Tensor] = {}
        n_running = 0
        last: dict[str, float] = {}
        while self.step < end:
            for batch in self.make_loader(train_dataset, self.epoch, self.batch_in_epoch):
                losses = self.train_step(batch)
                self.batch_in_epoch += 1
                for k, v in losses.items():
                    running[k] = running.get(k, 0.0) + v
                n_running += 1
                if self.step % cfg.log_every == 0 or self.step == end:
                    last = {k: float(v) / n_running for k, v in running.items()}
                    last = all_reduce_mean(last, self.env)
                    bad = [k for k, v in last.items() if not math.isfinite(v)]
                    if bad:
                        raise FloatingPointError(
                            f"non-finite losses {bad} at step {self.step}: training diverged; lower --lr, check the "
                            "data (NaN in images?), or use --amp off"
                        )
                    last["lr"] = self.schedulers["G"].get_last_lr()[0]
                    if logger is not None:
                        logger.log(self.step, last, epoch=self.epoch)
                    if bar is not None:
                        bar.set_postfix({k: f"{last[k]:.3g}" for k in ("d_total", "g_total", "l1") if k in last})
                    running, n_running = {}, 0
                if bar is not None:
                    bar.update(1)
                epoch_done = self.batch_in_epoch >= steps_per_epoch
                if epoch_done:
                    if grids and out is not None and is_main and grid_batch is not None:
                        self.save_grid(out / "grids" / f"epoch-{self.epoch:04d}.png", grid_batch, logger)
                    self.epoch += 1
                    self.batch_in_epoch = 0
                if (
                    cfg.validate_every
                    and val_dataset is not None
                    and self.step % cfg.validate_every == 0
                    and self.step < total_steps
                ):
                    if is_main:
                        periodic = self.evaluate(val_dataset, max_batches=cfg.val_max_batches or None)
                        if logger is not None:
                            finite = {f"val/{k}": v for k, v in periodic.items() if math.isfinite(v)}
                            logger.log(self.step, finite, epoch=self.epoch)
                    barrier(self.env)
                if manager is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint(manager)
                if self.step >= end or epoch_done:
                    break
        if bar is not None:
            bar.close()
        self.sync_buffers()
        if manager is not None and self._saved_step != self.step:
            self.save_checkpoint(manager)
        validation: dict[str, float] = {}
        if validate and val_dataset is not None and self.step >= end:
            if is_main:
                validation = self.evaluate(val_dataset)
                if logger is not None:
                    logger.log(self.step, {f"val/{k}": v for k, v in validation.items()}, epoch=self.epoch)
            barrier(self.env)
        if grids and out is not None and is_main and grid_batch is not None and self.step >= end:
            self.save_grid(out / "grids" / "final.png", grid_batch, None)
        if logger is not None:
            logger.close()
        return TrainResult(
            steps=self.step,
            epochs=self.step / steps_per_epoch,
            losses=last,
            validation=validation,
            seconds=time.perf_counter() - start,
        )

    # ------------------------------------------------------------------ evaluation and pictures
    def _grid_batch(self, dataset: Dataset) -> dict[str, Any] | None:
        """``grid_samples`` fixed instances, evenly spread, preferring slices with lesion."""
        k = self.config.grid_samples
        if k == 0 or len(dataset) == 0:
            return None
        n = len(dataset)
        candidates = sorted({int(i) for i in np.linspace(0, n - 1, min(n, 8 * k))})
        items = [dataset[i] for i in candidates]
        lesion = [int((it["label"] >= EDEMA).sum()) if "label" in it else 0 for it in items]
        with_lesion = [i for i, v in enumerate(lesion) if v > 0]
        pool = with_lesion if len(with_lesion) >= k else list(range(len(items)))
        picks = [pool[int(j)] for j in np.linspace(0, len(pool) - 1, min(k, len(pool)))]
        return torch.utils.data.default_collate([items[i] for i in picks])

    @torch.inference_mode()
    def synthesize(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generator output (eval mode) for ``batch`` and, with a U-Net, its segmentation of the output."""
        inputs = self._inputs(batch)
        g = self.generator
        was = g.training
        g.eval()
        try:
            with self._autocast():
                fake = g(*inputs.generator_args).float()
            seg = None
            if self.unet is not None:
                u = self.unet
                u_was = u.training
                u.eval()
                with self._autocast():
                    seg = u(fake).float().argmax(1)
                u.train(u_was)
        finally:
            g.train(was)
        return fake, seg

    def save_grid(self, path: str | Path, batch: Mapping[str, Any], logger: TrainLogger | None = None) -> Path:
        """PNG grid of ``batch``: mask / real sequences over U(G(mask)) / synthetic sequences (see logging)."""
        fake, seg = self.synthesize(batch)
        label = batch["label"] if "label" in batch else batch["mask"].argmax(1)
        grid = sample_grid(label.cpu(), batch["image"].cpu(), fake.cpu(), None if seg is None else seg.cpu())
        if logger is not None:
            logger.log_image("samples", grid, self.step)
        return write_png(path, grid)

    @torch.inference_mode()
    def evaluate(
        self, dataset: Dataset, batch_size: int | None = None, max_batches: int | None = None
    ) -> dict[str, float]:
        """Validation numbers of the generator on ``dataset`` (eval mode, no gradient).

        Returns a flat dict: ``l1/<seq>``, ``psnr/<seq>``, ``ssim/<seq>`` (inside the brain, images in [-1, 1],
        see :func:`image_metrics`; mean over instances) and their ``/mean`` over sequences; with a U-Net also
        ``dice_synth/<class>`` (U-Net segmentation of G(mask) vs the mask) and ``dice_real/<class>`` (the U-Net on
        the real images, for reference), per lesion class of the conditioning (:meth:`dice_groups`: e.g.
        ``NETC``, ``SNFH``, ``ET``, ``RC`` for native brats2024, ``edema``, ``cavity``, ``tumor`` for SAMR) and
        ``lesion`` (all of them), Dice pooled over all instances (NaN when the class is absent from both).
        """
        loader = DataLoader(dataset, batch_size=batch_size or self.config.batch_size, shuffle=False, num_workers=0)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        groups = self.dice_groups()
        dice_acc = {src: torch.zeros(len(groups), 3, dtype=torch.float64) for src in ("synth", "real")}
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            fake, seg = self.synthesize(batch)
            real = batch["image"].to(self.device).float()
            label = (batch["label"] if "label" in batch else batch["mask"].argmax(1)).to(self.device)
            brain = batch["brain"].to(self.device) if "brain" in batch else label > 0
            metrics = image_metrics(fake, real, brain)
            for name, values in metrics.items():
                for s, seq in enumerate(self.sequences):
                    v = values[:, s]
                    ok = torch.isfinite(v)
                    key = f"{name}/{seq}"
                    sums[key] = sums.get(key, 0.0) + float(v[ok].sum())
                    counts[key] = counts.get(key, 0) + int(ok.sum())
            if self.unet is not None:
                u = self.unet
                u.eval()
                with self._autocast():
                    seg_real = u(real).float().argmax(1)
                u.train()
                for src, pred in (("synth", seg), ("real", seg_real)):
                    for j, classes in enumerate(groups.values()):
                        gt = torch.isin(label, torch.tensor(classes, device=label.device))
                        pr = torch.isin(pred, torch.tensor(classes, device=pred.device))
                        dice_acc[src][j] += torch.tensor(
                            [float((gt & pr).sum()), float((~gt & pr).sum()), float((gt & ~pr).sum())],
                            dtype=torch.float64,
                        )
        result: dict[str, float] = {}
        for name in ("l1", "psnr", "ssim"):
            per_seq = []
            for seq in self.sequences:
                key = f"{name}/{seq}"
                value = sums[key] / counts[key] if counts.get(key) else float("nan")
                result[key] = value
                per_seq.append(value)
            result[f"{name}/mean"] = float(np.nanmean(per_seq)) if any(math.isfinite(v) for v in per_seq) else math.nan
        if self.unet is not None:
            for src in ("synth", "real"):
                for j, group in enumerate(groups):
                    tp, fp, fn = dice_acc[src][j].tolist()
                    denom = 2 * tp + fp + fn
                    result[f"dice_{src}/{group}"] = 2 * tp / denom if denom > 0 else math.nan
        return result

    def dice_groups(self) -> dict[str, tuple[int, ...]]:
        """Evaluation groups of model classes: each lesion class by name, then ``lesion`` (all lesion classes).

        Example:
            >>> GANTrainer(preset_config("tiny"), ("t1n",), label_scheme="brats2024").dice_groups()  # doctest: +SKIP
            {'NETC': (2,), 'SNFH': (3,), 'ET': (4,), 'RC': (5,), 'lesion': (2, 3, 4, 5)}
        """
        lesion = tuple(range(2, self.n_labels))
        groups = {name.replace("/", "-"): (2 + i,) for i, name in enumerate(self.classes[2:])}
        groups["lesion"] = lesion
        return groups

    # ------------------------------------------------------------------ export
    def export(
        self,
        folder: str | Path,
        atlas: Any,
        *,
        label_scheme: str | LabelScheme | None = None,
        card: Mapping[str, Any] | None = None,
        fp16: bool = False,
        atlas_space: str | None = None,
    ) -> Path:
        """Write the generator as a weights folder (:func:`samraug.hub.save_weights`) on rank 0.

        ``atlas_space`` (with an atlas): the template space the atlas and the training data live in (e.g.
        ``"MNI152"``), so subjects declared in it on another grid are resampled rather than refused.

        The config records ``conditioning`` and ``label_scheme`` (the trainer's; ``label_scheme``, if given, must
        be the same scheme) and ``lineage`` (``--init-from`` sources, newest first). With ``fp16=True`` the
        generator tensors and the atlas are stored in float16 (loading casts back to float32); the folder then is
        about half the size.
        """
        if label_scheme is not None and get_scheme(label_scheme) != self.scheme:
            raise ValueError(
                f"export(label_scheme={get_scheme(label_scheme).name!r}) differs from the trainer's scheme "
                f"{self.scheme.name!r}; build the GANTrainer with label_scheme= the data's scheme"
            )
        folder = Path(folder)
        if self.env.is_main:
            save_weights(
                folder,
                self.generator,
                atlas,
                label_scheme=self.scheme,
                conditioning=self.config.conditioning,
                card=dict(card or {}),
                dtype=torch.float16 if fp16 else None,
                atlas_dtype=torch.float16 if fp16 and atlas is not None else None,
                lineage=self.lineage or None,
                atlas_space=atlas_space,
                normalization=Normalization.named(self.config.normalization).to_config(),
                **self.export_extras(),
            )
        barrier(self.env)
        return folder

    def export_extras(self) -> dict[str, Any]:
        """Extra :func:`samraug.hub.save_weights` keys of this trainer's weights (none for whole slices)."""
        return {}

    # ------------------------------------------------------------------ initialisation from earlier weights
    def init_from(self, source: str | Path) -> list[str]:
        """Initialise from earlier training before :meth:`fit` (fine-tuning; the run starts at step 0).

        ``source`` is a weights folder, ``"org/name[@revision]"`` (:func:`samraug.hub.resolve_weights`): the
        generator only; or a checkpoint folder of a run (``step-XXXXXXXXX``, or a ``checkpoints`` root: its
        latest): generator, discriminators, U-Net and their optimiser states. The architecture (config,
        sequences, label scheme, conditioning) must match this trainer's, else ``ValueError`` naming what differs;
        one exception: weights of a generator that sees fewer mask slices (``mask_slices``) initialise one that
        sees more (:meth:`samraug.models.generator.SAMRGenerator.widen_from`: it starts painting exactly what the
        weights painted, from the central slice). Returns and records :attr:`lineage`: ``[source, *source's own
        lineage]`` (written to the exported config and model card).

        Example:
            >>> trainer.init_from("my-org/samr-tiny@v1")  # doctest: +SKIP
            ['my-org/samr-tiny@v1']
        """
        located = locate_init_source(source)
        if isinstance(located, Path) and is_checkpoint_source(located):
            lineage = self._init_from_checkpoint(located)
        else:
            lineage = self._init_from_weights(located)
        self.lineage = [str(source), *lineage]
        return list(self.lineage)

    def _init_from_weights(self, source: str | Path) -> list[str]:
        folder = resolve_weights(source)
        config = read_config(folder)
        mine = {"model_type": self.generator.model_type, **self.generator.config}
        theirs = {"model_type": config["model_type"], **generator_from_config(config).config}
        free = set(getattr(self.generator, "parameter_free_options", ()))
        widen = int(theirs.get("mask_slices", 1)) < int(mine.get("mask_slices", 1))
        if widen:  # a single-slice generator becomes one that sees adjacent mask slices (SAMRGenerator.widen_from)
            free.add("mask_slices")
        diff = sorted(k for k in (set(mine) | set(theirs)) - free if mine.get(k) != theirs.get(k))
        what = []
        if diff:
            what.append(", ".join(f"{k}: weights {theirs.get(k)!r} vs this run {mine.get(k)!r}" for k in diff))
        if config.get("mode", "whole") != getattr(self.generator, "mode", "whole"):
            what.append(f"mode: weights {config.get('mode', 'whole')!r} vs this run {self.generator.mode!r}")
        if config_conditioning(config) != self.config.conditioning:
            what.append(
                f"conditioning: weights {config_conditioning(config)!r} vs this run {self.config.conditioning!r}"
            )
        if "label_scheme" in config and scheme_from_config(config["label_scheme"]) != self.scheme:
            what.append(
                f"label_scheme: weights {scheme_from_config(config['label_scheme']).name!r} vs this run "
                f"{self.scheme.name!r}"
            )
        if what:
            raise ValueError(
                f"--init-from {source}: the architecture does not match this run ({'; '.join(what)}); use the same "
                "preset / generator options / --conditioning / data as the source, or start from scratch"
            )
        tensors, _ = read_safetensors(folder / MODEL_NAME, "generator weights")
        if widen:
            narrow = generator_from_config(config)
            load_state_dict_strict(narrow, tensors, source=str(folder / MODEL_NAME))
            self.generator.widen_from(narrow)
        else:
            load_state_dict_strict(self.generator, tensors, source=str(folder / MODEL_NAME))
        if getattr(self.generator, "residual", False) and not theirs.get("residual", False):
            # weights that painted absolute values become a residual generator that starts at the context's fill
            self.generator.zero_output_()
        return list(config.get("lineage") or [])

    def _init_from_checkpoint(self, path: Path) -> list[str]:
        if not (path / STATE_FILE).is_file():
            latest = CheckpointManager(path).latest()
            if latest is None:
                raise FileNotFoundError(f"--init-from {path}: no loadable checkpoint in it")
            path = latest
        state = load_checkpoint(path)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"--init-from {path}: not a GANTrainer checkpoint (format {state.get('format')!r})")
        saved, mine = saved_config(state), self.config.to_dict()
        diff = sorted(k for k in ARCHITECTURE_FIELDS if saved.get(k) != mine.get(k))
        what = [f"{k}: checkpoint {saved.get(k)!r} vs this run {mine.get(k)!r}" for k in diff]
        if tuple(state["sequences"]) != self.sequences:
            what.append(f"sequences: checkpoint {state['sequences']} vs this run {list(self.sequences)}")
        if state.get("label_scheme", "samr") != self.scheme.name:
            what.append(
                f"label_scheme: checkpoint {state.get('label_scheme', 'samr')!r} vs this run {self.scheme.name!r}"
            )
        if set(state["models"]) != set(self._models):
            what.append(f"models: checkpoint {sorted(state['models'])} vs this run {sorted(self._models)}")
        if what:
            raise ValueError(
                f"--init-from {path}: the architecture does not match this run ({'; '.join(what)}); use the same "
                "preset / switches / --conditioning / data as the checkpoint's run, or start from scratch"
            )
        for name, m in self._models.items():
            load_state_dict_strict(unwrap(m), state["models"][name], source=f"{path} ({name})")
            self.optimizers[name].load_state_dict(state["optimizers"][name])
            for group in self.optimizers[
                name
            ].param_groups:  # this run's learning rate, not the end of the old schedule
                group["lr"] = self.config.lr
                group["initial_lr"] = self.config.lr
        return list(state.get("lineage") or [])
