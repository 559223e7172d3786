"""Robust intensity normalisation of MR sequences, and its inverse.

Every sequence of every subject is normalised on its own, inside the brain: the 0.5th percentile of the brain
voxels maps to -1, the 99.5th to +1, linearly, then values are clipped to [-1, 1] and the background is set to -1.
The two percentiles are kept as :class:`IntensityStats` so that an image in [-1, 1] (e.g. a synthetic one) can be
mapped back to the real subject's scale: ``x_real = (x + 1) / 2 * (high - low) + low`` inside the brain, and the
background value (0) outside it. Voxels that were clipped do not come back (they map to ``low`` or ``high``).

Every function takes numpy arrays or torch tensors and returns the same type (on the same device).

Example:
    >>> import numpy as np
    >>> vol = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    >>> brain = vol > 99
    >>> x, stats = robust_normalize(vol, brain)
    >>> float(x.min()), float(x.max())
    (-1.0, 1.0)
    >>> back = denormalize(x, stats, brain)
    >>> bool(np.allclose(back[brain][10:-10], vol[brain][10:-10], atol=1e-2))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "BACKGROUND_VALUE",
    "DEFAULT_NORMALIZATION",
    "IntensityStats",
    "denormalize",
    "denormalize_sequences",
    "normalize_with",
    "robust_normalize",
    "robust_normalize_sequences",
    "stats_to_array",
]

#: Value of the background (outside the brain) in normalised images.
BACKGROUND_VALUE = -1.0

#: The normalisation recorded in model cards and configs (JSON-able).
DEFAULT_NORMALIZATION: dict[str, Any] = {
    "method": "percentile",
    "low": 0.5,
    "high": 99.5,
    "range": [-1.0, 1.0],
    "background": BACKGROUND_VALUE,
}

Array = TypeVar("Array", np.ndarray, torch.Tensor)

# torch.quantile refuses inputs with more elements than this; larger ones go through numpy.
_TORCH_QUANTILE_MAX = 2**24


@dataclass(frozen=True)
class IntensityStats:
    """The intensities of one sequence of one subject that map to -1 (``low``) and +1 (``high``).

    Example:
        >>> IntensityStats(10.0, 250.0).as_tuple()
        (10.0, 250.0)
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = float(self.low), float(self.high)
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"IntensityStats must be finite, got low={low}, high={high}")
        if high < low:
            raise ValueError(f"IntensityStats needs high >= low, got low={low}, high={high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def as_tuple(self) -> tuple[float, float]:
        """``(low, high)``."""
        return (self.low, self.high)


def stats_to_array(stats: Sequence[IntensityStats]) -> np.ndarray:
    """Stack per-sequence stats into the ``(n, 2)`` float32 array (low, high) used in training instances.

    Example:
        >>> stats_to_array([IntensityStats(0, 1), IntensityStats(2, 5)]).tolist()
        [[0.0, 1.0], [2.0, 5.0]]
    """
    return np.asarray([s.as_tuple() for s in stats], dtype=np.float32).reshape(len(stats), 2)


def _is_torch(x: object) -> bool:
    return isinstance(x, torch.Tensor)


def _as_bool_mask(brain: Any, like: Array, what: str = "brain mask") -> Array:
    if _is_torch(like):
        b = torch.as_tensor(brain, device=like.device)
        return b.bool() if b.dtype != torch.bool else b
    b = brain.detach().cpu().numpy() if _is_torch(brain) else np.asarray(brain)
    return b.astype(bool, copy=False)


def _float_dtype(x: Array) -> Any:
    if _is_torch(x):
        return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    return np.float64 if np.asarray(x).dtype == np.float64 else np.float32


def _percentiles(values: Array, low: float, high: float) -> tuple[float, float]:
    if _is_torch(values):
        if values.numel() <= _TORCH_QUANTILE_MAX:
            q = torch.tensor([low / 100.0, high / 100.0], dtype=torch.float64, device=values.device)
            lo, hi = torch.quantile(values.double(), q).tolist()
            return float(lo), float(hi)
        values = values.detach().cpu().numpy()
    lo, hi = np.percentile(np.asarray(values, dtype=np.float64), [low, high])
    return float(lo), float(hi)


def _check_inputs(volume: Array, brain: Any | None) -> Array:
    """The brain mask as a boolean of the volume's type and device (non-zero voxels when ``brain`` is None)."""
    if brain is None:
        return volume != 0
    if tuple(brain.shape) != tuple(volume.shape):
        raise ValueError(
            f"brain mask shape {tuple(brain.shape)} does not match the image shape {tuple(volume.shape)}; "
            "pass a brain mask on the image's grid"
        )
    return _as_bool_mask(brain, volume)


def normalize_with(volume: Array, stats: IntensityStats, brain: Any | None = None) -> Array:
    """Map ``volume`` to [-1, 1] with given stats (``low`` -> -1, ``high`` -> +1), clip, background -1.

    A constant image (``high == low``) maps to 0 inside the brain. ``brain=None`` means the non-zero voxels.

    Example:
        >>> import numpy as np
        >>> normalize_with(np.array([0.0, 1.0, 3.0, 9.0]), IntensityStats(1.0, 5.0)).tolist()
        [-1.0, -1.0, 0.0, 1.0]
    """
    mask = _check_inputs(volume, brain)
    dtype = _float_dtype(volume)
    scale = stats.high - stats.low
    if _is_torch(volume):
        x = volume.to(dtype)
        if scale > 0:
            y = ((x - stats.low) * (2.0 / scale) - 1.0).clamp(-1.0, 1.0)
        else:
            y = torch.zeros_like(x)
        return torch.where(mask, y, torch.full_like(y, BACKGROUND_VALUE))
    x = np.asarray(volume).astype(dtype, copy=False)
    if scale > 0:
        y = np.clip((x - dtype(stats.low)) * dtype(2.0 / scale) - dtype(1.0), -1.0, 1.0)
    else:
        y = np.zeros_like(x)
    return np.where(mask, y, dtype(BACKGROUND_VALUE)).astype(dtype, copy=False)


def robust_normalize(
    volume: Array, brain: Any | None, *, low: float = 0.5, high: float = 99.5
) -> tuple[Array, IntensityStats]:
    """Normalise one sequence inside the brain: percentile ``low`` -> -1, ``high`` -> +1, clip, background -1.

    Args:
        volume: Image of any shape (numpy or torch); float32 (float64 stays float64) output of the same type.
        brain: Boolean brain mask of the same shape, or None for the non-zero voxels of ``volume``.
        low, high: Percentiles (0..100) of the brain voxels mapped to -1 and +1.

    Returns:
        The normalised image and its :class:`IntensityStats` (the two percentile values). A constant image
        (``high == low``) maps to 0 inside the brain, and :func:`denormalize` gives the constant back.

    Raises:
        ValueError: empty brain mask, NaN/inf inside the brain, shape mismatch, bad percentiles.

    Example:
        >>> import torch
        >>> vol = torch.linspace(0, 100, 1001)
        >>> x, stats = robust_normalize(vol, vol > 0)
        >>> round(stats.low, 2), round(stats.high, 2)
        (0.6, 99.5)
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
    mask = _check_inputs(volume, brain)
    values = volume[mask]
    n_values = values.numel() if _is_torch(values) else values.size
    if n_values == 0:
        raise ValueError(
            f"brain mask is empty: no brain voxel in an image of shape {tuple(volume.shape)}; "
            "pass brain= or check the images are skull-stripped (background 0)"
        )
    finite = torch.isfinite(values).all() if _is_torch(values) else np.isfinite(values).all()
    if not bool(finite):
        n_bad = int((~torch.isfinite(values)).sum()) if _is_torch(values) else int((~np.isfinite(values)).sum())
        raise ValueError(
            f"image has {n_bad} NaN/inf voxels inside the brain; fix or replace them (e.g. np.nan_to_num) first"
        )
    lo, hi = _percentiles(values, low, high)
    stats = IntensityStats(lo, max(hi, lo))
    return normalize_with(volume, stats, mask), stats


def denormalize(x: Array, stats: IntensityStats, brain: Any | None = None, background: float = 0.0) -> Array:
    """Map a normalised image back to a subject's scale: ``(x + 1) / 2 * (high - low) + low``.

    Voxels outside ``brain`` (when given) are set to ``background``; with ``brain=None`` every voxel is mapped.

    Example:
        >>> import numpy as np
        >>> denormalize(np.array([-1.0, 0.0, 1.0]), IntensityStats(10.0, 30.0)).tolist()
        [10.0, 20.0, 30.0]
    """
    dtype = _float_dtype(x)
    scale = stats.high - stats.low
    if _is_torch(x):
        y = (x.to(dtype) + 1.0) * (scale / 2.0) + stats.low
        if brain is not None:
            y = torch.where(_check_inputs(x, brain), y, torch.full_like(y, background))
        return y
    y = ((np.asarray(x).astype(dtype, copy=False) + dtype(1.0)) * dtype(scale / 2.0) + dtype(stats.low)).astype(dtype)
    if brain is not None:
        y = np.where(_check_inputs(x, brain), y, dtype(background)).astype(dtype, copy=False)
    return y


def robust_normalize_sequences(
    volumes: Array, brain: Any | None, *, low: float = 0.5, high: float = 99.5
) -> tuple[Array, list[IntensityStats]]:
    """:func:`robust_normalize` for each sequence of a ``(n, *spatial)`` stack, with one brain mask for all.

    ``brain`` has the spatial shape (or None: each sequence's own non-zero voxels). Returns the normalised stack
    and one :class:`IntensityStats` per sequence.

    Example:
        >>> import numpy as np
        >>> vols = np.stack([np.arange(64.0).reshape(4, 4, 4), 10 * np.arange(64.0).reshape(4, 4, 4)])
        >>> x, stats = robust_normalize_sequences(vols, np.ones((4, 4, 4), bool))
        >>> x.shape, len(stats)
        ((2, 4, 4, 4), 2)
    """
    if volumes.ndim < 2:
        raise ValueError(f"expected a (n_sequences, *spatial) stack, got shape {tuple(volumes.shape)}")
    if brain is not None and tuple(brain.shape) != tuple(volumes.shape[1:]):
        raise ValueError(
            f"brain mask shape {tuple(brain.shape)} does not match the spatial shape {tuple(volumes.shape[1:])} "
            "of the sequences"
        )
    outs, stats = [], []
    for i in range(volumes.shape[0]):
        try:
            y, s = robust_normalize(volumes[i], brain, low=low, high=high)
        except ValueError as e:
            raise ValueError(f"sequence {i}: {e}") from None
        outs.append(y)
        stats.append(s)
    out = torch.stack(outs) if _is_torch(volumes) else np.stack(outs)
    return out, stats


def _stats_array(stats: Sequence[IntensityStats] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(stats, torch.Tensor):
        return stats.detach().cpu().double().numpy()
    if isinstance(stats, np.ndarray):
        return stats.astype(np.float64, copy=False)
    return np.asarray([s.as_tuple() for s in stats], dtype=np.float64).reshape(len(stats), 2)


def denormalize_sequences(
    x: Array,
    stats: Sequence[IntensityStats] | np.ndarray | torch.Tensor,
    brain: Any | None = None,
    background: float = 0.0,
) -> Array:
    """:func:`denormalize` for stacks: ``x`` of shape ``(*lead, *spatial)`` with ``stats`` of shape ``(*lead, 2)``.

    ``lead`` is ``(n,)`` for one subject's sequences (stats a list of :class:`IntensityStats` or an ``(n, 2)``
    array), or ``(B, n)`` for a batch of training instances (stats ``(B, n, 2)``). ``brain`` (optional) broadcasts
    against ``x`` after a sequence axis is inserted: ``(*spatial)`` or ``(B, *spatial)`` for a batch.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((2, 3, 3), np.float32)
        >>> denormalize_sequences(x, np.array([[0.0, 2.0], [10.0, 30.0]]))[:, 0, 0].tolist()
        [1.0, 20.0]
    """
    s = _stats_array(stats)
    if s.ndim < 2 or s.shape[-1] != 2 or tuple(s.shape[:-1]) != tuple(x.shape[: s.ndim - 1]):
        raise ValueError(
            f"stats of shape {tuple(s.shape)} do not fit images of shape {tuple(x.shape)}: expected "
            "(*lead, 2) where the images are (*lead, *spatial), e.g. (n, 2) for (n, H, W)"
        )
    n_spatial = x.ndim - (s.ndim - 1)
    if brain is not None:
        expected = tuple(x.shape[: s.ndim - 2]) + tuple(x.shape[s.ndim - 1 :])
        if tuple(brain.shape) != expected:
            raise ValueError(
                f"brain mask shape {tuple(brain.shape)} does not fit images of shape {tuple(x.shape)}: "
                f"expected {expected} (the image shape without the sequence axis)"
            )
    lo = s[..., 0].reshape(s.shape[:-1] + (1,) * n_spatial)
    scale = (s[..., 1] - s[..., 0]).reshape(lo.shape)
    dtype = _float_dtype(x)
    if _is_torch(x):
        lo_t = torch.as_tensor(lo, dtype=dtype, device=x.device)
        sc_t = torch.as_tensor(scale, dtype=dtype, device=x.device)
        y = (x.to(dtype) + 1.0) * (sc_t / 2.0) + lo_t
        if brain is not None:
            b = _as_bool_mask(brain, x).unsqueeze(s.ndim - 2)
            y = torch.where(b, y, torch.full_like(y, background))
        return y
    y = ((np.asarray(x).astype(dtype, copy=False) + 1.0) * (scale / 2.0) + lo).astype(dtype)
    if brain is not None:
        b = np.expand_dims(_as_bool_mask(brain, x), s.ndim - 2)
        y = np.where(b, y, dtype(background)).astype(dtype, copy=False)
    return y
