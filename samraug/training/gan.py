"""The SAMR GAN trainer (paper eq. 5): generator, label-wise discriminators, shape-consistency U-Net.

One optimisation step of :class:`GANTrainer` (``train_step``), on a batch of 2D instances
(:mod:`samraug.data.slices`: ``mask`` x, ``image`` y, ``atlas``):

0. ``fake = G(x, atlas)`` (one generator forward, reused below).
1. **Discriminators**: ``discriminator_objective(D(x, y), D(x, fake.detach()))``; Adam step on D.
2. **U-Net** (shape consistency on): ``GDL(x, softmax(U(y)))`` on REAL images; Adam step on U.
3. **Generator**: ``generator_objective``: ``GAN(D(x, fake)) + lambda_fm * FM(D(x, y), D(x, fake)) +
   lambda_lc * GDL(x, softmax(U(fake)))`` (+ ``lambda_l1 * |fake - y|`` for pix2pix). D and U are frozen for
   this step (``requires_grad_(False)`` on their parameters, and their plain modules are called, not their DDP
   wrappers), so no gradient accumulates into them; only G's optimizer steps. D's real features are taken with
   the D of step 1 after its update, the same D that scores the fake. U stays in train mode (batch statistics,
   as it was trained), so its BatchNorm running statistics also see the synthetic batch.
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

Example:
    >>> from samraug.training import GANTrainer, preset_config
    >>> trainer = GANTrainer(preset_config("tiny", epochs=1, batch_size=2), sequences=("t1n", "t2f"))
    >>> # trainer.fit(train_dataset, val_dataset=val_dataset, out_dir="/tmp/run")   # see recipes/train_samr.py
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from samraug.labels import CAVITY, EDEMA, LESION_CLASSES, N_CLASSES, TUMOR
from samraug.losses import discriminator_objective, generalized_dice_loss, generator_objective
from samraug.models.discriminator import LabelWiseDiscriminators
from samraug.models.generator import build_generator
from samraug.models.unet import UNet
from samraug.training.checkpoint import CheckpointManager
from samraug.training.config import TrainConfig
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

__all__ = [
    "GANData",
    "GANTrainer",
    "SyntheticSliceDataset",
    "TrainResult",
    "image_metrics",
    "prepare_gan_data",
    "seed_everything",
    "seed_worker",
    "ssim_map",
]

STATE_FORMAT = "samraug-gan-trainer/1"
#: TrainConfig fields that may differ between a run and its resumption (they do not change the numbers).
RESUME_FREE_FIELDS = ("num_workers", "checkpoint_every", "keep_last", "log_every", "grid_samples")


# ---------------------------------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global RNG user code may rely on)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` in the worker from torch's per-worker seed
    (itself derived from the loader's seeded generator), so augmentations in workers are reproducible."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002
    random.seed(s)


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    mixed = np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(rank)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) % 2**63)


class _SkipSampler(Sampler[int]):
    """Yields the indices of ``sampler`` after the first ``skip`` (to resume inside an epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- metrics
def _gaussian_window(size: int = 11, sigma: float = 1.5, device: torch.device | None = None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03) of ``(B, C, H, W)``
    images, reflect-padded so the map has the input's size.

    Example:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> bool(torch.allclose(ssim_map(x, x), torch.ones(1, 1, 16, 16)))
        True
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"ssim_map needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    c = x.shape[1]
    w = _gaussian_window(window, 1.5, x.device).to(x.dtype).expand(c, 1, window, window)
    pad = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def image_metrics(fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image, per-sequence L1, PSNR and SSIM inside the brain, for images in [-1, 1].

    ``fake``/``real`` ``(B, n, H, W)``, ``brain`` ``(B, H, W)`` bool. Returns ``{"l1", "psnr", "ssim"}`` each
    ``(B, n)``: mean absolute error over brain pixels; ``10 log10(range^2 / MSE)`` with range 2 (MSE floored at
    1e-10); the SSIM map averaged over brain pixels. Images without brain pixels give NaN.

    Example:
        >>> x = torch.rand(1, 2, 16, 16) * 2 - 1
        >>> m = image_metrics(x, x, torch.ones(1, 16, 16, dtype=torch.bool))
        >>> m["l1"].tolist(), m["ssim"].round(decimals=4).tolist()
        ([[0.0, 0.0]], [[1.0, 1.0]])
    """
    fake, real = fake.float(), real.float()
    w = brain[:, None].to(fake.dtype).expand_as(fake)
    n = w.sum((2, 3))
    n_safe = n.clamp_min(1)
    l1 = ((fake - real).abs() * w).sum((2, 3)) / n_safe
    mse = (((fake - real) ** 2) * w).sum((2, 3)) / n_safe
    psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-10))
    ssim = (ssim_map(fake, real) * w).sum((2, 3)) / n_safe
    empty = n == 0
    nan = torch.full_like(l1, float("nan"))
    return {k: torch.where(empty, nan, v) for k, v in (("l1", l1), ("psnr", psnr), ("ssim", ssim))}


# ---------------------------------------------------------------------------------------------------- toy data
class SyntheticSliceDataset(Dataset):
    """Random instances in the :mod:`samraug.data.slices` format, for smoke tests and speed benchmarks.

    NOT anatomy: instance ``i`` is drawn from ``torch.Generator().manual_seed(seed + i)`` (so it is the same on
    every call and in every worker): an elliptic "brain" with a tumor disk, an edema ring around it and, every
    third instance, a cavity; images are a per-class intensity per sequence plus a fraction of the atlas slice
    and a little noise; the atlas is a fixed radial pattern (its 3 slices per sequence are shifted copies).

    Example:
        >>> ds = SyntheticSliceDataset(4, size=32, sequences=("t1n", "t2f"))
        >>> item = ds[0]
        >>> item["mask"].shape, item["image"].shape, item["atlas"].shape, item["label"].dtype
        (torch.Size([5, 32, 32]), torch.Size([2, 32, 32]), torch.Size([6, 32, 32]), torch.int64)
    """

    def __init__(
        self,
        n: int,
        size: int | tuple[int, int] = 64,
        sequences: Sequence[str] = ("t1n", "t1c", "t2w", "t2f"),
        seed: int = 0,
    ) -> None:
        self.n = int(n)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.sequences = tuple(sequences)
        self.seed = int(seed)
        h, w = self.size
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self._grid = (yy, xx)
        k = len(self.sequences)
        base = torch.cos(3 * torch.sqrt(yy**2 + xx**2))[None] * torch.linspace(0.3, 0.8, k)[:, None, None]
        inside = (yy / 0.85) ** 2 + (xx / 0.75) ** 2 <= 1
        atlas = torch.where(inside, base, torch.full_like(base, -1.0))
        self._atlas = torch.stack([atlas.roll(s, dims=1) for s in (-1, 0, 1)], 1).reshape(3 * k, h, w)
        # per-sequence intensity of background, brain, edema, cavity, tumor (distinct contrasts)
        g = torch.Generator().manual_seed(12345)
        self._lut = torch.rand(k, N_CLASSES, generator=g) * 1.4 - 0.7
        self._lut[:, 0] = -1.0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} instances")
        g = torch.Generator().manual_seed(self.seed + int(i))
        yy, xx = self._grid
        r = torch.rand(6, generator=g)
        brain = ((yy - 0.1 * (r[0] - 0.5)) / (0.7 + 0.15 * r[1])) ** 2 + (xx / (0.6 + 0.15 * r[2])) ** 2 <= 1
        cy, cx = 0.5 * (r[3] - 0.5), 0.4 * (r[4] - 0.5)
        d = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        rad = 0.12 + 0.12 * r[5]
        label = torch.where(brain, 1, 0)
        label = torch.where(brain & (d < 1.8 * rad), EDEMA, label)
        label = torch.where(brain & (d < rad), TUMOR, label)
        if i % 3 == 2:
            label = torch.where(brain & ((yy - cy - rad) ** 2 + (xx - cx) ** 2 < (0.5 * rad) ** 2), CAVITY, label)
        label = label.long()
        mask = F.one_hot(label, N_CLASSES).permute(2, 0, 1).float()
        k = len(self.sequences)
        atlas_mid = self._atlas.reshape(k, 3, *self.size)[:, 1]
        image = self._lut[:, label] + 0.3 * torch.where(brain, atlas_mid, torch.zeros_like(atlas_mid))
        image = image + 0.02 * torch.randn(image.shape, generator=g)
        image = torch.where(brain[None], image.clamp(-1, 1), torch.full_like(image, -1.0))
        return {
            "mask": mask,
            "label": label,
            "atlas": self._atlas.clone(),
            "image": image.float(),
            "brain": brain,
            "z": int(i) % 16,
            "subject_id": f"toy-{int(i) // 16:03d}",
            "stats": torch.tensor([[0.0, 1000.0]] * k),
        }


# ---------------------------------------------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    """What :meth:`GANTrainer.fit` returns: steps done, last logged losses, validation numbers, wall time."""

    steps: int
    epochs: float
    losses: dict[str, float]
    validation: dict[str, float]
    seconds: float


def _to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
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
        device: ``"cpu"``, ``"cuda"``, ``"auto"``/None; ignored under ``torchrun`` (each rank uses its GPU).
        env: A :class:`~samraug.training.distributed.DistEnv` (default: :func:`init_distributed` with ``device``).

    Attributes:
        generator, discriminator, unet: The plain modules (``unet`` is None without shape consistency).
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
        device: str | torch.device | None = None,
        env: DistEnv | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.sequences = tuple(sequences)
        if not self.sequences:
            raise ValueError("sequences is empty; pass the data's sequence names, e.g. ('t1n', 't1c', 't2w', 't2f')")
        self.env = env if env is not None else init_distributed(device)
        self.device = self.env.device
        cuda = self.device.type == "cuda"
        self.channels_last = bool(config.channels_last and cuda)
        self.amp_dtype = self._amp_dtype()

        seed_everything(config.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        generator = build_generator(
            config.generator_preset,
            model_type=config.model_type,
            sequences=self.sequences,
            **config.generator_kwargs(),
        )
        discriminator = LabelWiseDiscriminators(
            n_labels=N_CLASSES, n_sequences=len(self.sequences), **config.discriminator_kwargs()
        )
        unet = UNet(len(self.sequences), N_CLASSES, **config.unet) if config.uses_unet else None
        self.use_atlas = bool(getattr(generator, "use_atlas", False))
        #: H and W of the instances must be multiples of this (generator and U-Net down-samplings).
        self.size_multiple = max(int(getattr(generator, "size_multiple", 1)), 2**unet.depth if unet is not None else 1)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        modules = {"G": generator, "D": discriminator, **({"U": unet} if unet is not None else {})}
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

    # ------------------------------------------------------------------ models
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

    def _inputs(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        for key in ("mask", "image"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r}; expected SliceDataset instances (keys mask, image, atlas, ...)")
        b = _to_device({k: batch[k] for k in ("mask", "image", "atlas") if k in batch}, self.device, self.channels_last)
        mask, real = b["mask"].float(), b["image"].float()
        for key in ("image", "atlas"):
            if key in b and not bool(torch.isfinite(b[key]).all()):
                ids = batch.get("subject_id", "?")
                raise ValueError(
                    f"batch {key!r} contains NaN/inf (subjects {ids}); fix the input volumes (e.g. np.nan_to_num) "
                    "before training"
                )
        if real.shape[1] != len(self.sequences):
            raise ValueError(
                f"batch images have {real.shape[1]} sequences but the trainer was built for {len(self.sequences)} "
                f"{self.sequences}; build the data set with the same sequences"
            )
        atlas = None
        if self.use_atlas:
            if "atlas" not in b:
                raise KeyError("the generator uses an atlas but the batch has no 'atlas'; build the data with an atlas")
            atlas = b["atlas"].float()
        return mask, real, atlas

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One D, U and G update on ``batch``; returns detached scalar losses (see the module docstring)."""
        if not self.schedulers:
            raise RuntimeError("call setup_schedule(total_steps) (or fit) before train_step")
        cfg = self.config
        mask, real, atlas = self._inputs(batch)
        G, D = self._models["G"], self._models["D"]
        U = self._models.get("U")
        for m in self._models.values():
            m.train()
        with self._autocast():
            fake = G(mask, atlas)
        out: dict[str, torch.Tensor] = {}

        # (1) discriminators on real vs detached fake
        with self._autocast():
            ld = discriminator_objective(D(mask, real), D(mask, fake.detach()), gan_mode=cfg.gan_mode)
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
                d_fake = d_net(mask, fake)
                d_real = None
                if cfg.lambda_fm > 0:
                    with torch.no_grad():
                        d_real = d_net(mask, real)
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
            l1 = (fake.float() - real).abs().mean()
            total = lg["total"] + cfg.lambda_l1 * l1 if cfg.lambda_l1 > 0 else lg["total"]
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
        out.update(g_gan=lg["gan"], g_fm=lg["fm"], g_lc=lg["lc"], g_total=total, l1=l1)
        return {k: v.detach().float() for k, v in out.items()}

    # ------------------------------------------------------------------ data
    def make_loader(self, dataset: Dataset, epoch: int, skip_batches: int = 0) -> DataLoader:
        """The DataLoader of ``epoch``: sharded, shuffled by ``(seed, epoch)``, skipping ``skip_batches``."""
        sampler = self._sampler(dataset)
        sampler.set_epoch(epoch)
        use = _SkipSampler(sampler, skip_batches * self.config.batch_size) if skip_batches else sampler
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=use,
            drop_last=True,
            num_workers=workers,
            worker_init_fn=seed_worker if workers > 0 else None,
            generator=_epoch_generator(self.config.seed, epoch, self.env.rank),
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
        saved = dict(state["config"])
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
            stop_at_step: Stop (and checkpoint) at this step without changing the schedule (e.g. a time-boxed
                session to be resumed later).
            progress: tqdm progress bar on rank 0.
            validate: Run :meth:`evaluate` on ``val_dataset`` at the end.
            grids: Write the per-epoch PNG grid.
        """
        start = time.perf_counter()
        cfg = self.config
        steps_per_epoch, total_steps = self.plan(train_dataset)
        out = Path(out_dir) if out_dir is not None else None
        ckpt_root = Path(checkpoint_dir) if checkpoint_dir is not None else (out / "checkpoints" if out else None)
        manager = CheckpointManager(ckpt_root, keep_last=cfg.keep_last) if ckpt_root is not None else None
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
        logger = (
            TrainLogger(out, enabled=is_main, resume_step=self.step if resume else None) if out is not None else None
        )
        grid_batch = self._grid_batch(val_dataset if val_dataset is not None else train_dataset)
        bar = None
        if progress and is_main:
            from tqdm.auto import tqdm

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
        if validate and val_dataset is not None and self.step >= total_steps:
            if is_main:
                validation = self.evaluate(val_dataset)
                if logger is not None:
                    logger.log(self.step, {f"val/{k}": v for k, v in validation.items()}, epoch=self.epoch)
            barrier(self.env)
        if grids and out is not None and is_main and grid_batch is not None and self.step >= total_steps:
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
        mask, _, atlas = self._inputs(batch)
        g = self.generator
        was = g.training
        g.eval()
        try:
            with self._autocast():
                fake = g(mask, atlas).float()
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
        the real images, for reference), per lesion class and ``lesion`` (edema + cavity + tumor), Dice pooled
        over all instances (NaN when the class is absent from both).
        """
        loader = DataLoader(dataset, batch_size=batch_size or self.config.batch_size, shuffle=False, num_workers=0)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        dice_acc = {src: torch.zeros(4, 3, dtype=torch.float64) for src in ("synth", "real")}
        groups = {"edema": (EDEMA,), "cavity": (CAVITY,), "tumor": (TUMOR,), "lesion": LESION_CLASSES}
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

    # ------------------------------------------------------------------ export
    def export(
        self,
        folder: str | Path,
        atlas: Any,
        *,
        label_scheme: Any = "samr",
        card: Mapping[str, Any] | None = None,
        fp16: bool = False,
    ) -> Path:
        """Write the generator as a weights folder (:func:`samraug.hub.save_weights`) on rank 0.

        With ``fp16=True`` the generator tensors and the atlas are stored in float16 (loading casts back to
        float32); the folder then is about half the size.
        """
        from samraug.hub import save_weights

        folder = Path(folder)
        if self.env.is_main:
            save_weights(
                folder,
                self.generator,
                atlas,
                label_scheme=label_scheme,
                card=dict(card or {}),
                dtype=torch.float16 if fp16 else None,
                atlas_dtype=torch.float16 if fp16 else None,
            )
        barrier(self.env)
        return folder


# ---------------------------------------------------------------------------------------------------- recipe data
@dataclass
class GANData:
    """Training data of a recipe run (:func:`prepare_gan_data`)."""

    train: Dataset
    val: Dataset | None
    atlas: Any
    split: dict[str, list[str]]
    sequences: tuple[str, ...]
    scheme: str
    description: str
    simulated: bool


def prepare_gan_data(
    data: str | Path = "phantom",
    *,
    scheme: str | None = None,
    n_subjects: int | None = None,
    resolution: float = 2.0,
    phantom_seed: int = 0,
    cache_dir: str | Path | None = None,
    sequences: Sequence[str] | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    split_file: str | Path | None = None,
    multiple: int = 32,
    selection: str = "brain",
    min_brain_voxels: int = 1,
    out_dir: str | Path | None = None,
    workers: int = 1,
) -> GANData:
    """Subjects -> patient-level split -> atlas from the TRAINING split only -> 2D slice data sets.

    Args:
        data: ``"phantom"`` (samraug's simulated phantom, generated once into a cache with
            :func:`samraug.data.phantom.ensure_phantom_dataset`) or a BraTS folder.
        scheme: Label scheme of a BraTS folder (``brats2021``, ``brats2023``, ``brats2024``); required there,
            since label 4 means different things. The phantom is ``brats2024``.
        n_subjects: Phantom: number of subjects (default 30). BraTS: use only the first N cases (sorted by id).
        resolution, phantom_seed, cache_dir, workers: Phantom generation (2 mm -> 99x117 slices padded to 128).
        sequences: Sequences to use, in order (default: all the data has, e.g. t1n, t1c, t2w, t2f[, aptw]).
        split_seed, val_fraction, test_fraction: Patient-level split (:func:`samraug.data.splits.patient_split`);
            or ``split_file`` to reuse a saved split. The split is written to ``out_dir/split.json``.
        multiple: Slices are padded (centred) to a multiple of this (32: phantom -> 128x128, BraTS -> 256x256).
        selection, min_brain_voxels: Which axial slices become instances (:func:`samraug.data.slices.select_slices`).

    The atlas is built from the training subjects only, and records them in ``atlas.info["training_data"]``
    (``subjects``: case ids; phantom: also ``phantom_subject_seeds``), so exported weights declare their training
    data (a benchmark can check that none of its test subjects was seen).

    Example:
        >>> d = prepare_gan_data("phantom", n_subjects=10, out_dir="/tmp/run")  # doctest: +SKIP
        >>> len(d.train), d.sequences  # doctest: +SKIP
        (640, ('t1n', 't1c', 't2w', 't2f', 'aptw'))
    """
    from samraug.atlas import build_atlas
    from samraug.data.brats import load_brats
    from samraug.data.slices import SliceDataset
    from samraug.data.splits import load_split, patient_split, save_split, select_subjects

    if str(data) == "phantom":
        from samraug.data.phantom import PHANTOM_SEQUENCES, ensure_phantom_dataset

        if scheme not in (None, "brats2024"):
            raise ValueError(f"the phantom is labelled in scheme 'brats2024', not {scheme!r}; drop --scheme")
        n = 30 if n_subjects is None else int(n_subjects)
        root = ensure_phantom_dataset(
            n, seed=phantom_seed, resolution=resolution, cache_dir=cache_dir, workers=workers, progress=False
        )
        scheme = "brats2024"
        subjects = load_brats(root, scheme=scheme, sequences=list(sequences or PHANTOM_SEQUENCES))
        description = (
            f"samraug digital phantom (SIMULATED MR, MNI152 anatomy): {n} subjects, {resolution:g} mm, seed "
            f"{phantom_seed}"
        )
        simulated = True
    else:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {root} does not exist; pass a BraTS folder or --data phantom")
        if scheme is None:
            raise ValueError(
                "pass the label scheme of the BraTS folder (--scheme brats2021|brats2023|brats2024): label 4 is "
                "enhancing tumour in 2021 but resection cavity in 2024"
            )
        subjects = load_brats(root, scheme=scheme, sequences=sequences)
        if n_subjects is not None:
            subjects = subjects[: int(n_subjects)]
        description = f"BraTS folder {root.name} ({len(subjects)} cases, label scheme {scheme})"
        simulated = False
    if sequences is None:
        sequences = tuple(subjects[0].get_images_dict(intensity_only=True))
    sequences = tuple(sequences)
    ids = [s["subject_id"] for s in subjects]
    if split_file is not None:
        split = load_split(split_file)
    else:
        split = patient_split(ids, test_fraction=test_fraction, val_fraction=val_fraction, seed=split_seed)
    if out_dir is not None:
        save_split(split, Path(out_dir) / "split.json")
    train_subjects = select_subjects(subjects, split["train"])
    val_subjects = select_subjects(subjects, split["val"])
    atlas = build_atlas(train_subjects, sequences, scheme=scheme)
    # the weights declare what they were trained on (the atlas travels with them): lets a benchmark verify that
    # none of its test subjects was seen (phantom subjects by their per-subject seed, case names repeat)
    training_data: dict[str, Any] = {"subjects": list(split["train"])}
    if simulated:
        seeds = json.loads((root / "phantom.json").read_text())["subjects"]
        training_data = {"phantom_subject_seeds": [int(seeds[i]) for i in split["train"]], **training_data}
    atlas.info["training_data"] = training_data
    common = {
        "sequences": sequences,
        "scheme": scheme,
        "selection": selection,
        "min_brain_voxels": min_brain_voxels,
        "multiple": multiple,
    }
    train = SliceDataset(train_subjects, atlas, **common)
    val = SliceDataset(val_subjects, atlas, **common) if val_subjects else None
    description += (
        f"; split by patient: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test"
    )
    return GANData(train, val, atlas, split, sequences, str(scheme), description, simulated)
