"""Robust intensity normalisation of MR sequences, and its inverse.

Every sequence of every subject is normalised on its own, inside the brain: the 0.5th percentile of the brain
voxels maps to -1, the 99.5th to +1, linearly, then values are clipped to [-1, 1] and the background is set to -1.
The two percentiles are kept as :class:`IntensityStats` so that an image in [-1, 1] (e.g. a synthetic one) can be
mapped back to the real subject's scale: ``x_real = (x + 1) / 2 * (high - low) + low`` inside the brain, and the
background value (0) outside it. Voxels that were clipped do not come back (they map to ``low`` or ``high``).

Every function takes numpy arrays or torch tensors and returns the same type (on the same device).

**What a model's weights use** is a :class:`Normalization` (recorded in the weights' ``config.json``): the
percentiles are taken over the *normal-appearing* brain (brain minus lesion) and map to ``maps_to`` (default -0.8 and
-0.2), so that the brain's level does not depend on how much of it is lesion, and lesions brighter or darker than
normal tissue (enhancing tumour on T1c: up to 3x the normal range above its 0.5th percentile) keep their contrast
instead of being clipped at +1. Its :class:`IntensityStats` are still the intensities that map to -1 and +1, so
:func:`normalize_with` and :func:`denormalize` work unchanged. Weights written before it record the plain whole-brain
percentiles (``Normalization.legacy()``) and keep working.

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "BACKGROUND_VALUE",
    "DEFAULT_NORMALIZATION",
    "LEGACY_NORMALIZATION",
    "NORMALIZATIONS",
    "IntensityStats",
    "Normalization",
    "denormalize",
    "denormalize_sequences",
    "normalize_with",
    "robust_normalize",
    "robust_normalize_sequences",
    "stats_to_array",
]

#: Value of the background (outside the brain) in normalised images.
BACKGROUND_VALUE = -1.0

#: The normalisation recorded in model cards and configs of new weights (JSON-able): ``Normalization().to_config()``.
DEFAULT_NORMALIZATION: dict[str, Any] = {
    "method": "percentile",
    "region": "normal-brain",
    "low": 0.5,
    "high": 99.5,
    "maps_to": [-0.8, -0.2],
    "range": [-1.0, 1.0],
    "background": BACKGROUND_VALUE,
}

#: What weights written before :class:`Normalization` existed used (their config has no ``region``).
LEGACY_NORMALIZATION: dict[str, Any] = {
    "method": "percentile",
    "region": "brain",
    "low": 0.5,
    "high": 99.5,
    "maps_to": [-1.0, 1.0],
    "range": [-1.0, 1.0],
    "background": BACKGROUND_VALUE,
}

_REGIONS = ("brain", "normal-brain")

#: Names of :meth:`Normalization.named` (the recipe's ``--normalization``).
NORMALIZATIONS = ("normal-brain", "brain")

Array = TypeVar("Array", np.ndarray, torch.Tensor)

# torch.quantile refuses inputs with more elements than this; larger ones (and CPU tensors) go through numpy.
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
        # on the GPU torch sorts fast; on the CPU numpy's selection (np.partition) beats torch.quantile's full sort
        # several times on a brain's millions of voxels (same linear interpolation)
        if values.device.type != "cpu" and values.numel() <= _TORCH_QUANTILE_MAX:
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
    lo, hi = _percentile_pair(volume, mask, mask, low, high)
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
    return _normalize_stack(volumes, {"brain": brain}, lambda v: robust_normalize(v, brain, low=low, high=high))


def _normalize_stack(
    volumes: Array, masks: Mapping[str, Any], normalize_one: Callable[[Array], tuple[Array, IntensityStats]]
) -> tuple[Array, list[IntensityStats]]:
    """Check a ``(n, *spatial)`` stack and its spatial ``masks`` (None: absent), normalise each sequence with
    ``normalize_one`` (errors name the sequence) and stack the results."""
    if volumes.ndim < 2:
        raise ValueError(f"expected a (n_sequences, *spatial) stack, got shape {tuple(volumes.shape)}")
    for name, m in masks.items():
        if m is not None and tuple(m.shape) != tuple(volumes.shape[1:]):
            raise ValueError(
                f"{name} mask shape {tuple(m.shape)} does not match the spatial shape {tuple(volumes.shape[1:])} "
                "of the sequences"
            )
    outs, stats = [], []
    for i in range(volumes.shape[0]):
        try:
            y, s = normalize_one(volumes[i])
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


@dataclass(frozen=True)
class Normalization:
    """How a model's images are normalised: percentiles ``low`` / ``high`` of ``region`` map to ``maps_to``.

    ``region="normal-brain"`` takes the percentiles over the brain minus the lesion (when a lesion mask is given and
    at least ``min_normal_fraction`` of the brain is left; otherwise over the whole brain), ``"brain"`` over the whole
    brain (what weights written before this class used: :meth:`legacy`). Values are then clipped to [-1, 1] and the
    background is -1, as everywhere in samraug. :meth:`stats` returns the :class:`IntensityStats` (the intensities at
    -1 and +1), so :func:`normalize_with` / :func:`denormalize` apply and invert it.

    Example:
        >>> import numpy as np
        >>> vol = np.concatenate([np.linspace(100, 200, 1000), np.full(50, 600.0)])  # normal brain + a bright lesion
        >>> brain, lesion = np.ones(1050, bool), np.arange(1050) >= 1000
        >>> spec = Normalization()
        >>> x, stats = spec.normalize(vol, brain, lesion)
        >>> round(float(x[:1000].min()), 2), round(float(x[:1000].max()), 2), round(float(x[-1]), 2)
        (-0.8, -0.2, 1.0)
        >>> Normalization.from_config(spec.to_config()) == spec
        True
    """

    low: float = 0.5
    high: float = 99.5
    maps_to: tuple[float, float] = (-0.8, -0.2)
    region: str = "normal-brain"
    min_normal_fraction: float = 0.05

    def __post_init__(self) -> None:
        low, high = float(self.low), float(self.high)
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"normalization percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
        a, b = (float(v) for v in self.maps_to)
        if not -1.0 <= a < b <= 1.0:
            raise ValueError(f"normalization maps_to must satisfy -1 <= a < b <= 1, got {list(self.maps_to)}")
        if self.region not in _REGIONS:
            raise ValueError(f"normalization region must be one of {list(_REGIONS)}, got {self.region!r}")
        if not 0.0 <= float(self.min_normal_fraction) <= 1.0:
            raise ValueError(f"min_normal_fraction must be in [0, 1], got {self.min_normal_fraction}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "maps_to", (a, b))
        object.__setattr__(self, "min_normal_fraction", float(self.min_normal_fraction))

    @classmethod
    def named(cls, name: str) -> Normalization:
        """``"normal-brain"``: the default (:class:`Normalization()`); ``"brain"``: :meth:`legacy`.

        Example:
            >>> Normalization.named("brain").maps_to
            (-1.0, 1.0)
        """
        if name == "normal-brain":
            return cls()
        if name == "brain":
            return cls.legacy()
        raise ValueError(f"unknown normalization {name!r}; use one of {list(NORMALIZATIONS)}")

    @classmethod
    def legacy(cls) -> Normalization:
        """Whole-brain percentiles 0.5 / 99.5 to -1 / +1: what weights without ``region`` in their config used."""
        return cls.from_config(LEGACY_NORMALIZATION)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Normalization:
        """The normalisation a weights config records (``config["normalization"]``); a config without ``region``
        (written before it existed) is the legacy whole-brain one; None is the legacy one too.

        Example:
            >>> Normalization.from_config({"method": "percentile", "low": 0.5, "high": 99.5}).region
            'brain'
        """
        cfg = dict(config or {})
        method = cfg.get("method", "percentile")
        if method != "percentile":
            raise ValueError(
                f"normalization method {method!r} is not known to this samraug version (only 'percentile'); "
                "upgrade samraug or re-export the weights"
            )
        rng = [float(v) for v in cfg.get("range", [-1.0, 1.0])]
        background = float(cfg.get("background", BACKGROUND_VALUE))
        if rng != [-1.0, 1.0] or background != BACKGROUND_VALUE:
            raise ValueError(
                f"normalization range {rng} / background {background} is not samraug's [-1, 1] / -1; "
                "re-export the weights with this samraug version"
            )
        legacy = "region" not in cfg
        maps_to = cfg.get("maps_to", rng if legacy else DEFAULT_NORMALIZATION["maps_to"])
        return cls(
            low=float(cfg.get("low", 0.5)),
            high=float(cfg.get("high", 99.5)),
            maps_to=(float(maps_to[0]), float(maps_to[1])),
            region="brain" if legacy else str(cfg["region"]),
            min_normal_fraction=float(cfg.get("min_normal_fraction", 0.05)),
        )

    def to_config(self) -> dict[str, Any]:
        """The JSON-able record written to weights configs (:meth:`from_config` reads it back)."""
        out = {
            "method": "percentile",
            "region": self.region,
            "low": self.low,
            "high": self.high,
            "maps_to": list(self.maps_to),
            "range": [-1.0, 1.0],
            "background": BACKGROUND_VALUE,
        }
        if self.min_normal_fraction != 0.05:
            out["min_normal_fraction"] = self.min_normal_fraction
        return out

    def reference(self, brain: Any, lesion: Any | None) -> Any:
        """The voxels whose percentiles are taken: the brain, minus ``lesion`` for ``region="normal-brain"`` when
        enough of the brain is left (``min_normal_fraction``)."""
        if self.region == "brain" or lesion is None:
            return brain
        if tuple(lesion.shape) != tuple(brain.shape):
            raise ValueError(
                f"lesion mask shape {tuple(lesion.shape)} does not match the brain mask {tuple(brain.shape)}"
            )
        if _is_torch(brain):
            normal = brain & ~torch.as_tensor(lesion, device=brain.device).bool()
        else:
            normal = brain & ~np.asarray(lesion, dtype=bool)
        n_normal, n_brain = int(normal.sum()), int(brain.sum())
        return normal if n_normal > 0 and n_normal >= self.min_normal_fraction * n_brain else brain

    def stats(self, volume: Array, brain: Any | None, lesion: Any | None = None) -> IntensityStats:
        """The :class:`IntensityStats` of one sequence (intensities at -1 and +1).

        Raises:
            ValueError: empty brain, NaN/inf inside the brain, shape mismatch.
        """
        mask = _check_inputs(volume, brain)
        ref = self.reference(mask, lesion)
        p_lo, p_hi = _percentile_pair(volume, mask, ref, self.low, self.high)
        a, b = self.maps_to
        if p_hi <= p_lo:
            return IntensityStats(p_lo, p_lo)
        per_unit = (p_hi - p_lo) / (b - a)  # intensity per normalised unit
        return IntensityStats(p_lo - (a + 1.0) * per_unit, p_lo + (1.0 - a) * per_unit)

    def normalize(self, volume: Array, brain: Any | None, lesion: Any | None = None) -> tuple[Array, IntensityStats]:
        """``volume`` normalised (clipped to [-1, 1], background -1) and its stats."""
        stats = self.stats(volume, brain, lesion)
        return normalize_with(volume, stats, brain), stats

    def normalize_sequences(
        self, volumes: Array, brain: Any | None, lesion: Any | None = None
    ) -> tuple[Array, list[IntensityStats]]:
        """:meth:`normalize` for each sequence of a ``(n, *spatial)`` stack (one brain and lesion mask for all)."""
        masks = {"brain": brain, "lesion": lesion}
        return _normalize_stack(volumes, masks, lambda v: self.normalize(v, brain, lesion))


def _percentile_pair(volume: Any, mask: Any, ref: Any, low: float, high: float) -> tuple[float, float]:
    """Check the brain voxels of ``volume`` (non-empty, finite) and return the percentiles of its ``ref`` voxels."""
    values = volume[mask]
    n_values = values.numel() if _is_torch(values) else values.size
    if n_values == 0:
        raise ValueError(
            f"brain mask is empty: no brain voxel in an image of shape {tuple(volume.shape)}; "
            "pass brain= or check the images are skull-stripped (background 0)"
        )
    finite = torch.isfinite(values) if _is_torch(values) else np.isfinite(values)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        raise ValueError(
            f"image has {n_bad} NaN/inf voxels inside the brain; fix or replace them (e.g. np.nan_to_num) first"
        )
    return _percentiles(values if ref is mask else volume[ref], low, high)
