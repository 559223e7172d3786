"""Multi-process training through ``torchrun``: environment detection, process group, DDP wrapping.

``torchrun --nproc_per_node N recipes/train_samr.py ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them, starts the process group (NCCL on CUDA,
gloo on CPU), and pins each process to ``cuda:LOCAL_RANK``. Without those variables (or with ``WORLD_SIZE=1``)
everything runs in one process and the helpers here are no-ops, so the trainer has one code path.

Only rank 0 logs, writes checkpoints and exports weights (:attr:`DistEnv.is_main`); :func:`barrier` keeps the
other ranks from racing ahead of a checkpoint write. Data sharding uses ``torch.utils.data.DistributedSampler``
(see :class:`samraug.training.gan.GANTrainer`).

Example:
    >>> env = init_distributed("cpu")   # no torchrun variables: a single process
    >>> env.world_size, env.is_main, env.is_distributed
    (1, True, False)
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from samraug.device import resolve_device

__all__ = [
    "DistEnv",
    "all_reduce_mean",
    "barrier",
    "broadcast_buffers",
    "cleanup_distributed",
    "init_distributed",
    "wrap_model",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job: ``rank`` of ``world_size``, ``local_rank`` on its node, its ``device``."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs, checkpoints and exports."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from e


def init_distributed(
    device: str | torch.device | None = None, backend: str | None = None, timeout_s: float = 1800.0
) -> DistEnv:
    """Detect a ``torchrun`` launch and start the process group; return this process's :class:`DistEnv`.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"auto"``/``None`` (CUDA when available).
        backend: Override the backend (default: ``nccl`` on CUDA, ``gloo`` on CPU).
        timeout_s: Collective timeout.

    Example:
        >>> init_distributed("cpu").device
        device(type='cpu')
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistEnv(device=dev)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1={world_size - 1}; check the torchrun launch")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ValueError(f"WORLD_SIZE={world_size} but {var} is not set; launch with torchrun or set it")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, backend=backend)


def wrap_model(module: nn.Module, env: DistEnv, *, sync_bn: bool = False) -> nn.Module:
    """Wrap ``module`` (already on ``env.device``) in ``DistributedDataParallel`` when distributed.

    ``sync_bn=True`` first converts its BatchNorm layers to ``SyncBatchNorm`` (batch statistics over all ranks;
    useful when the per-GPU batch is small; CUDA only). In a single process the module is returned unchanged.
    DDP keeps ``broadcast_buffers=True``: BatchNorm running statistics are rank 0's on every rank.
    """
    if not env.is_distributed:
        return module
    if sync_bn:
        if env.device.type != "cuda":
            raise ValueError(
                f"sync_bn needs CUDA (torch's SyncBatchNorm does not run on {env.device.type}); drop --sync-bn"
            )
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def broadcast_buffers(module: nn.Module, env: DistEnv, src: int = 0) -> None:
    """Copy every buffer (BatchNorm running statistics, ...) of ``module`` from rank ``src`` to all ranks.

    DDP broadcasts buffers at the start of each forward, but the forward then updates them with the local batch,
    so after the last step they differ per rank; call this before exporting or comparing models.
    """
    if not env.is_distributed or not dist.is_initialized():
        return
    for buf in unwrap(module).buffers():
        dist.broadcast(buf.data, src=src)


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op in a single process)."""
    if env.is_distributed and dist.is_initialized():
        if env.backend == "nccl":
            dist.barrier(device_ids=[env.device.index])
        else:
            dist.barrier()


def all_reduce_mean(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Average scalar metrics over ranks (for logging); identity in a single process."""
    if not env.is_distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= env.world_size
    return dict(zip(keys, t.tolist(), strict=True))


def cleanup_distributed() -> None:
    """Destroy the process group if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
