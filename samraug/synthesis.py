"""The one place the SAMR generator runs: :class:`Synthesizer`.

A :class:`Synthesizer` resolves weights through :func:`samraug.hub.load_weights` (bundled demo weights when none
are given, a local folder, or ``org/name[@revision]`` on the Hugging Face Hub), picks the device and precision
(CUDA: bf16 autocast where supported, else fp16, and ``channels_last``; CPU: float32) and runs the generator in
batches under :func:`torch.inference_mode`. The model is loaded lazily. Loaded models are read-only and shared
through the one process-wide cache, keyed by (weights, device, dtype) and weakly referenced (a model is freed with
the last synthesizer that uses it); synthesizers themselves are never shared (:meth:`Synthesizer.clone` gives a
private one around the same model). A DataLoader worker forked from a process that already holds a CUDA model loads
its own copy (a CPU model is simply shared by the fork).

Two entry points:

* :meth:`Synthesizer.synthesize_slices` - a batch of 2D masks (one-hot ``(B, 5, H, W)`` or SAMR class maps
  ``(B, H, W)``) with their atlas stacks -> ``(B, n, H, W)`` in the model's range [-1, 1].
* :meth:`Synthesizer.synthesize_volume` - a whole 3D subject ``(X, Y, Z)`` on the atlas grid, slice-wise along
  the axial axis (slices without brain skipped) -> one ``(X, Y, Z)`` float32 volume per sequence, mapped back to
  the subject's intensity scale with its per-sequence :class:`~samraug.intensity.IntensityStats` (or left in the
  model's range).

GPU work never happens inside DataLoader workers (each would create its own CUDA context): calling a CUDA
synthesizer in a worker raises a ``RuntimeError`` that points to the main-process batched path
(``SAMRAugmentedDataset(..., batched=True)`` with :class:`samraug.dataset.SynthesizingLoader`).

Example:
    >>> from samraug.hub import BUNDLED_WHOLE_WEIGHTS
    >>> synth = Synthesizer(BUNDLED_WHOLE_WEIGHTS)  # the whole-image demo weights, CPU or CUDA  # doctest: +SKIP
    >>> volumes = synth.synthesize_volume(samr_labels, stats=stats)  # doctest: +SKIP
    >>> volumes["t1c"].shape  # doctest: +SKIP
    (99, 117, 95)
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from samraug.atlas import Atlas
from samraug.batching import default_batch_size, preset_of
from samraug.device import resolve_device
from samraug.hub import load_weights, read_config, resolve_weights, scheme_from_config
from samraug.intensity import BACKGROUND_VALUE, IntensityStats, Normalization, denormalize
from samraug.labels import N_CLASSES, LabelScheme, get_scheme, neighbour_slices, one_hot, translate
from samraug.padding import pad_or_crop

__all__ = ["Synthesizer", "get_synthesizer", "resolve_device", "resolve_dtype"]

_WORKER_MESSAGE = (
    "Synthesizer on {device!r} was called inside a DataLoader worker: GPU work never happens in workers (each "
    "would create its own CUDA context). Use the main-process batched path instead: "
    "SAMRAugmentedDataset(real_ds, ..., batched=True) with loader = samraug.dataset.SynthesizingLoader("
    "DataLoader(dataset, ...)), which edits masks in the workers and runs one generator call per batch in the main "
    "process; or synthesize on the CPU in the workers with device='cpu'."
)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The compute precision: ``"auto"`` -> bf16 on CUDA where supported, else fp16; float32 on CPU.

    Example:
        >>> resolve_dtype("auto", torch.device("cpu"))
        torch.float32
    """
    if isinstance(dtype, torch.dtype):
        out = dtype
    elif str(dtype) == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    elif str(dtype).lower() in _DTYPES:
        out = _DTYPES[str(dtype).lower()]
    else:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    if out not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"unsupported compute dtype {out}; use float32, bfloat16 or float16")
    return out


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


def _to_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be a torch tensor or numpy array, got {type(x).__name__}") from e


def _check_finite(t: torch.Tensor, what: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{what} contains {n} NaN/inf values; replace them (e.g. torch.nan_to_num) first")


def _check_classes(labels: torch.Tensor, what: str, n_labels: int = N_CLASSES) -> torch.Tensor:
    """Model class map as int64, with clear errors for NaN/inf, fractions and classes the model does not know."""
    _check_finite(labels, what)
    if labels.is_floating_point():
        if not bool((labels == labels.round()).all()):
            raise ValueError(f"{what} has non-integer values; a class map holds integers 0..{n_labels - 1}")
    if labels.dtype == torch.bool:
        raise ValueError(f"{what} is boolean; expected model classes 0..{n_labels - 1} (integers)")
    labels = labels.long()
    if labels.numel():
        values = torch.unique(labels)
        bad = sorted(int(v) for v in values if not 0 <= int(v) < n_labels)
        if bad:
            raise ValueError(
                f"{what} has labels {set(bad)} that are not classes 0..{n_labels - 1} of this model; convert your "
                "labels first with synth.encode(label, brain, scheme) (or samraug.labels.get_scheme(<your "
                "scheme>).encode(label, brain, conditioning))"
            )
    return labels


def _next_multiple(n: int, m: int) -> int:
    return -(-n // m) * m


class Synthesizer:
    """Runs a SAMR generator on 2D slices or whole 3D subjects.

    Args:
        weights: ``None`` (the bundled demo weights :data:`samraug.hub.BUNDLED_WEIGHTS`: local mode, no atlas), a
            local weights folder, or ``"org/name"`` /
            ``"org/name@revision"`` on the Hugging Face Hub; resolved by :func:`samraug.hub.load_weights`.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: Compute precision: ``"auto"`` (CUDA: bf16 autocast where supported else fp16; CPU: float32), or
            ``"float32"`` / ``"bfloat16"`` / ``"float16"``.
        batch_size: Slices per generator call; None (default): chosen per device, generator preset (matched from
            the weights' config) and slice size by :func:`samraug.batching.default_batch_size` at each call. An
            int always wins.
        channels_last: Use the ``channels_last`` memory format on CUDA.

    The model is loaded on first use in each process (see the module docstring); :meth:`load` forces it.

    Example:
        >>> import torch
        >>> synth = Synthesizer("path/to/weights", device="cpu")  # doctest: +SKIP
        >>> masks = torch.zeros(4, 128, 128, dtype=torch.long)  # SAMR class maps
        >>> images = synth.synthesize_slices(masks, z=[40, 41, 42, 43])  # doctest: +SKIP
        >>> images.shape  # doctest: +SKIP
        torch.Size([4, 5, 128, 128])
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int | None = None,
        channels_last: bool = True,
    ) -> None:
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ValueError(f"batch_size must be None (chosen per device) or an int >= 1, got {batch_size!r}")
        self.weights: str | None = None if weights is None else str(weights)
        self.device_spec = device if isinstance(device, str) else str(device)
        self.dtype_spec = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
        resolve_dtype(self.dtype_spec, torch.device("cpu"))  # validate early
        self.batch_size: int | None = None if batch_size is None else int(batch_size)
        self.channels_last = bool(channels_last)
        self._model: nn.Module | None = None
        self._atlas: Any = None
        self._config: dict[str, Any] | None = None
        self._pid: int | None = None
        self._loaded_device: torch.device | None = None
        self._memory: tuple[nn.Module, Any, dict[str, Any]] | None = None
        self._memory_key: str | None = None
        self._loaded: _LoadedModel | None = None  # keeps the shared model alive while this synthesizer lives
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(
        cls,
        generator: nn.Module,
        atlas: Any,
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Synthesizer:
        """A synthesizer around an in-memory generator and :class:`~samraug.atlas.Atlas` (tests, benchmarks,
        a model fresh from training). ``config`` defaults to the generator's own ``config`` attribute.

        Its :attr:`key` (``"memory:<id>"``) finds the generator again in this process while the synthesizer (or a
        clone) lives, so that TorchIO histories recorded with it can be replayed.
        """
        self = cls(None, **kwargs)
        cfg = dict(config) if config is not None else dict(getattr(generator, "config", {}) or {})
        if "sequences" not in cfg:
            seqs = getattr(generator, "sequences", None) or getattr(atlas, "sequences", None)
            if seqs is None:
                raise ValueError("from_model needs the generator's sequences: pass config={'sequences': [...]}")
            cfg["sequences"] = list(seqs)
        self._memory = (generator, atlas, cfg)
        self._memory_key = f"memory:{uuid.uuid4().hex[:12]}"
        self._hold_memory()
        return self

    def _hold_memory(self) -> None:
        """Make the in-memory generator findable by its key (weakly: it lives as long as a synthesizer holds it)."""
        assert self._memory is not None and self._memory_key is not None
        found = _MODEL_CACHE.get((self._memory_key, None, None))
        if found is None:
            found = _LoadedModel(*self._memory, pid=os.getpid())
            _MODEL_CACHE[(self._memory_key, None, None)] = found
        self._memory_holder = found

    def clone(self) -> Synthesizer:
        """A private synthesizer with the same weights, device, precision and batch size, sharing the (read-only)
        loaded model: changing one's ``batch_size`` does not change the other's.

        Example:
            >>> a = Synthesizer("path/to/weights", device="cpu", batch_size=8)
            >>> b = a.clone(); b.batch_size = 2
            >>> a.batch_size, b.batch_size
            (8, 2)
        """
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._lock = threading.Lock()
        return new

    @property
    def key(self) -> str | None:
        """A plain-value description of the weights: ``None`` (bundled), a folder, a repo id, or
        ``"memory:<id>"`` for :meth:`from_model` synthesizers (valid in this process and its forks)."""
        return self._memory_key if self._memory is not None else self.weights

    # ------------------------------------------------------------------ loading
    @property
    def device(self) -> torch.device:
        """The resolved device (``"auto"`` -> CUDA when available)."""
        return resolve_device(self.device_spec)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The resolved compute precision on :attr:`device`."""
        return resolve_dtype(self.dtype_spec, self.device)

    def _check_context(self) -> None:
        # the device string alone decides: the guard must fire in a worker before anything touches CUDA
        spec = str(self.device_spec)
        if (spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())) and _in_worker():
            raise RuntimeError(_WORKER_MESSAGE.format(device=str(self.device_spec)))

    def load(self) -> Synthesizer:
        """Load the weights now (otherwise done on first use); returns ``self``."""
        self._check_context()
        pid = os.getpid()
        device = self.device
        if self._model is not None and self._loaded_device == device:
            # A forked worker may keep a CPU model (copy-on-write); a CUDA model must be re-created per process.
            if self._pid == pid or device.type == "cpu":
                return self
        with self._lock:
            key = _cache_key(self.key, str(device), self.dtype_spec, self.channels_last)
            loaded = _MODEL_CACHE.get(key)
            if loaded is None or (device.type == "cuda" and loaded.pid != pid):
                if self._memory is not None:
                    model, atlas, config = self._memory
                else:
                    model, atlas, config = _unpack_loaded(load_weights(self.weights, device="cpu"))
                model = model.eval().to(device)
                if device.type == "cuda" and self.channels_last:
                    model = model.to(memory_format=torch.channels_last)
                loaded = _LoadedModel(model, atlas, dict(config), pid=pid)
                _MODEL_CACHE[key] = loaded
            self._loaded = loaded
            model, atlas = loaded.model, loaded.atlas
            self._model, self._config = model, dict(loaded.config)
            if self._atlas is None:
                self._atlas = atlas
            self._pid, self._loaded_device = pid, device
        return self

    @property
    def model(self) -> nn.Module:
        """The generator (loaded on first access)."""
        return self.load()._model  # type: ignore[return-value]

    @property
    def atlas(self) -> Any:
        """The :class:`~samraug.atlas.Atlas` that travels with the weights."""
        if self._memory is not None:
            return self._memory[1]
        if self._atlas is None:  # without the model: workers need the atlas grid, never the (CUDA) model
            if self.config.get("mode", "whole") == "local":
                raise ValueError(
                    f"the weights {self.weights or 'bundled by default (samraug.hub.BUNDLED_WEIGHTS)'} are local-mode "
                    "weights: they carry no atlas and paint inside the subject's own images on any grid; for atlas "
                    "painting pass whole-image weights, e.g. samraug.hub.BUNDLED_WHOLE_WEIGHTS"
                )
            self._atlas = Atlas.load(resolve_weights(self.weights))
        return self._atlas

    @property
    def config(self) -> dict[str, Any]:
        """The weights' ``config.json`` as a dict (read without loading the model)."""
        if self._memory is not None:
            return self._memory[2]
        if self._config is None:
            self._config = read_config(resolve_weights(self.weights))
        return self._config

    @property
    def sequences(self) -> tuple[str, ...]:
        """The model's output sequences, in output order."""
        return tuple(self.config["sequences"])

    @property
    def normalization(self) -> Normalization:
        """How the weights' images are normalised (``config["normalization"]``; weights written before
        :class:`~samraug.intensity.Normalization` existed: :meth:`~samraug.intensity.Normalization.legacy`).
        Subjects are normalised with it before painting and mapped back with its stats after."""
        return Normalization.from_config(self.config.get("normalization"))

    def subject_stats(
        self, images: Mapping[str, Any], brain: Any, lesion: Any | None = None
    ) -> dict[str, IntensityStats]:
        """Per-sequence :class:`~samraug.intensity.IntensityStats` of a real subject under the weights'
        :attr:`normalization` (what ``synthesize_volume(stats=...)`` maps back with).

        Args:
            images: ``{sequence: (X, Y, Z) array}`` (numpy or torch), the subject's real images.
            brain: Boolean brain mask on their grid.
            lesion: Boolean mask of the lesion *in these images* (the real one, before any edit), left out of the
                percentiles by ``region="normal-brain"`` normalisations; None: the whole brain.

        Example:
            >>> synth.subject_stats({"t1n": t1n}, brain, lesion=label > 0)  # doctest: +SKIP
            {'t1n': IntensityStats(low=..., high=...)}
        """
        spec = self.normalization
        out = {}
        for name, volume in images.items():
            try:
                out[name] = spec.stats(volume, brain, lesion)
            except ValueError as e:
                raise ValueError(f"image {name!r}: {e}") from None
        return out

    @property
    def n_labels(self) -> int:
        """Number of model classes (one-hot channels of the mask), from the weights' config."""
        return int(self.config.get("n_labels", N_CLASSES))

    @property
    def conditioning(self) -> str:
        """``"samr"`` (the paper's 5 classes; also weights without the key) or ``"native"``."""
        return str(self.config.get("conditioning", "samr"))

    @property
    def label_scheme(self) -> LabelScheme:
        """The label scheme the weights were trained on (``config["label_scheme"]``; default ``"samr"``)."""
        value = self.config.get("label_scheme", "samr")
        if isinstance(value, str):
            return get_scheme(value)
        return scheme_from_config(value)

    def encode(
        self,
        label: np.ndarray | torch.Tensor,
        brain: np.ndarray | torch.Tensor | None,
        scheme: str | LabelScheme,
        mapping: Mapping[int, int] | None = None,
    ) -> np.ndarray | torch.Tensor:
        """A label map in ``scheme`` as this model's classes. SAMR-conditioned weights: the scheme's own SAMR
        classes. Native-conditioned weights: translated to the weights' scheme when it differs (built-in BraTS
        correspondences or an explicit ``mapping``; otherwise refused), then encoded natively.

        Example:
            >>> classes = synth.encode(seg, brain, "brats2021")  # doctest: +SKIP
        """
        src, dst = get_scheme(scheme), self.label_scheme
        if self.conditioning == "samr":  # every scheme maps to the 5 SAMR classes itself: no translation needed
            dst = src
        elif src != dst:
            try:
                label = translate(label, src, dst, mapping)
            except ValueError as e:
                raise ValueError(
                    f"the labels are in scheme {src.name!r} but these weights were trained on {dst.name!r}, and {e}"
                ) from None
        classes = dst.encode(label, brain, conditioning=self.conditioning)
        values = np.unique(np.asarray(classes))
        if values.size and (values.min() < 0 or values.max() >= self.n_labels):
            raise ValueError(
                f"encoded classes {sorted(int(v) for v in values)} do not fit this model's {self.n_labels} classes; "
                "the weights' config (label_scheme, conditioning, n_labels) is inconsistent"
            )
        return classes

    @property
    def uses_atlas(self) -> bool:
        """Whether the generator takes the atlas stack as input."""
        return bool(getattr(self.model, "use_atlas", True))

    @property
    def mask_slices(self) -> int:
        """Adjacent mask slices the whole-image generator sees (``2c + 1``; 1 for single-slice weights): pass the
        ``2c`` neighbours of each slice to :meth:`synthesize_slices` (``neighbours=``); whole subjects
        (:meth:`synthesize_volume`) get them from the volume."""
        return int(getattr(self.model, "mask_slices", 1))

    @property
    def size_multiple(self) -> int:
        """Slices are padded (centred) to a multiple of this (at least twice it) before the generator, then
        cropped back."""
        return int(getattr(self.model, "size_multiple", 1))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"] = None
        state.pop("_memory_holder", None)
        state["_loaded"] = None
        if self._memory is None:  # reloaded lazily from the weights in the receiving process
            state.update(_model=None, _atlas=None, _config=None, _pid=None, _loaded_device=None)
        else:  # in-memory model: ship it on the CPU
            gen, atlas, cfg = self._memory
            state["_memory"] = (gen.cpu() if self.device.type == "cpu" else _cpu_copy(gen), atlas, cfg)
            state.update(_model=None, _pid=None, _loaded_device=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        if self._memory is not None:
            self._hold_memory()

    def __repr__(self) -> str:
        return (
            f"Synthesizer(weights={self.key!r}, device={self.device_spec!r}, dtype={self.dtype_spec!r}, "
            f"batch_size={self.batch_size if self.batch_size is not None else 'auto'})"
        )

    def batch_size_for(self, slice_shape: Sequence[int]) -> int:
        """Slices per generator call at ``slice_shape`` (H, W): the explicit ``batch_size`` if one was given, else
        :func:`samraug.batching.default_batch_size` for this device and the weights' preset
        (:func:`samraug.batching.preset_of` of the config).

        Example:
            >>> Synthesizer(None, device="cpu", batch_size=3).batch_size_for((256, 256))
            3
        """
        if self.batch_size is not None:
            return self.batch_size
        return default_batch_size(self.device, preset_of(self.config), tuple(slice_shape)[-2:])

    # ------------------------------------------------------------------ running
    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        device, dtype = self.device, self.compute_dtype
        if dtype == torch.float32:
            yield
            return
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield

    def _forward(self, masks: torch.Tensor, atlas: torch.Tensor | None) -> torch.Tensor:
        """One generator call on a padded chunk; returns float32 on the CPU."""
        model, device = self.model, self.device
        m = masks.to(device, non_blocking=True)
        a = atlas.to(device, non_blocking=True) if atlas is not None else None
        if device.type == "cuda" and self.channels_last:
            m = m.contiguous(memory_format=torch.channels_last)
            a = a.contiguous(memory_format=torch.channels_last) if a is not None else None
        with self._precision():
            y = model(m, a)
        return y.float().cpu()

    def synthesize_slices(
        self,
        mask: torch.Tensor | np.ndarray,
        atlas_stack: torch.Tensor | np.ndarray | None = None,
        *,
        z: int | Sequence[int] | torch.Tensor | None = None,
        batch_size: int | None = None,
        neighbours: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        """Synthesize a batch of 2D slices, in the model's range [-1, 1].

        Args:
            mask: One-hot SAMR masks ``(B, 5, H, W)`` (float) or SAMR class maps ``(B, H, W)`` (integer).
            atlas_stack: The atlas stacks ``(B, 3n, H, W)`` of each slice (``Atlas.stack(z)``, padded like the
                masks), or None with ``z`` given: the stacks are then taken from the weights' atlas and padded or
                cropped (centred) to ``H, W``. Ignored by models without an atlas input.
            z: Axial atlas slice index per mask (an int for all), used when ``atlas_stack`` is None.
            batch_size: Slices per generator call (default: the synthesizer's ``batch_size``).
            neighbours: For weights that see ``m = 2c + 1 > 1`` adjacent mask slices (:attr:`mask_slices`): class
                maps ``(B, 2c, H, W)`` (integer) of slices ``z - c .. z - 1, z + 1 .. z + c`` of each mask's slice
                ``z``. None: each mask is a lone slice, its neighbours taken equal to it (as the edge slices of a
                volume repeat). Ignored by single-slice weights.

        Returns:
            ``(B, n, H, W)`` float32 on the CPU, sequences in :attr:`sequences` order. ``H, W`` need not be a
            multiple of the model's down-sampling factor: slices are padded (centred) and cropped back.

        Example:
            >>> images = synth.synthesize_slices(torch.ones(2, 64, 64, dtype=torch.long), z=10)  # doctest: +SKIP
        """
        self._check_context()
        m = _to_tensor(mask, "mask")
        k = self.n_labels
        if m.dim() == 3:
            m = _check_classes(m, "mask", k)
            is_onehot = False
        elif m.dim() == 4:
            if m.shape[1] != k:
                raise ValueError(
                    f"one-hot mask must be (B, {k}, H, W) for this model, got {tuple(m.shape)}; pass class maps "
                    "(B, H, W) or samraug.labels.one_hot(classes, n_classes, channel_dim=1)"
                )
            _check_finite(m, "mask")
            is_onehot = True
        else:
            raise ValueError(
                f"mask must be a one-hot (B, {k}, H, W) batch or class maps (B, H, W), got shape "
                f"{tuple(m.shape)}; add a batch axis for one slice (mask[None])"
            )
        b, h, w = int(m.shape[0]), int(m.shape[-2]), int(m.shape[-1])
        n_seq = len(self.sequences)
        c = self.mask_slices // 2
        nb: torch.Tensor | None = None
        if neighbours is not None and c > 0:
            nb = _to_tensor(neighbours, "neighbours")
            if nb.dim() != 4 or tuple(nb.shape) != (b, 2 * c, h, w):
                raise ValueError(
                    f"neighbours must be class maps (B={b}, 2c={2 * c}, H={h}, W={w}) of slices z-{c}..z-1, "
                    f"z+1..z+{c} (these weights see {self.mask_slices} mask slices), got {tuple(nb.shape)}"
                )
            nb = _check_classes(nb, "neighbours", k).to(torch.uint8 if k <= 256 else torch.long)
        if b == 0:
            return torch.zeros(0, n_seq, h, w)
        a: torch.Tensor | None = None
        zs: torch.Tensor | None = None
        if self.uses_atlas:
            if atlas_stack is not None:
                a = _to_tensor(atlas_stack, "atlas_stack")
                if a.dim() == 3:
                    a = a.unsqueeze(0).expand(b, -1, -1, -1)
                if a.dim() != 4 or a.shape[0] != b or a.shape[1] != 3 * n_seq or tuple(a.shape[-2:]) != (h, w):
                    raise ValueError(
                        f"atlas_stack must be (B={b}, 3n={3 * n_seq}, H={h}, W={w}) to match the masks, got "
                        f"{tuple(a.shape)}; build it with atlas.stack(z) padded like the masks, or pass z= instead"
                    )
                _check_finite(a, "atlas_stack")
            elif z is not None:
                zs = torch.as_tensor(z, dtype=torch.long).reshape(-1)
                if zs.numel() == 1:
                    zs = zs.expand(b)
                if zs.numel() != b:
                    raise ValueError(f"z has {zs.numel()} entries for {b} masks; give one per mask or a single int")
            else:
                raise ValueError(
                    "this model needs the atlas: pass atlas_stack=(B, 3n, H, W) (e.g. synth.atlas.stack(z)) or the "
                    "axial atlas slice index per mask as z="
                )
        mult = self.size_multiple
        size = (max(_next_multiple(h, mult), 2 * mult), max(_next_multiple(w, mult), 2 * mult))
        bs = int(batch_size or self.batch_size_for(size))
        out = torch.empty(b, n_seq, h, w, dtype=torch.float32)
        with torch.inference_mode():
            for i in range(0, b, bs):
                mc = m[i : i + bs]
                mc = mc.float() if is_onehot else one_hot(mc.long(), k, channel_dim=1)
                mc = _pad_onehot(mc, *size)
                if c > 0:  # one-hot stack of slices z-c .. z+c, slice-major; lone slices repeat
                    if nb is None:
                        mc = mc.repeat(1, 2 * c + 1, 1, 1)
                    else:
                        side = [
                            _pad_onehot(one_hot(nb[i : i + bs, j].long(), k, channel_dim=1), *size)
                            for j in range(2 * c)
                        ]
                        mc = torch.cat([*side[:c], mc, *side[c:]], dim=1)
                if a is not None:
                    ac = pad_or_crop(a[i : i + bs].float(), size, value=BACKGROUND_VALUE)
                elif zs is not None:
                    ac = pad_or_crop(self.atlas.stack(zs[i : i + bs]).float(), size, value=BACKGROUND_VALUE)
                else:
                    ac = None
                y = self._forward(mc, ac)
                if y.shape[1] != n_seq:
                    raise RuntimeError(f"generator returned {y.shape[1]} sequences, config says {n_seq}")
                out[i : i + bs] = pad_or_crop(y, (h, w))
        return out

    def synthesize_volume(
        self,
        samr_labels: torch.Tensor | np.ndarray,
        *,
        affine: np.ndarray | torch.Tensor | None = None,
        stats: Mapping[str, IntensityStats] | Sequence[IntensityStats] | np.ndarray | torch.Tensor | None = None,
        brain: torch.Tensor | np.ndarray | None = None,
        z_axis: int = -1,
        output: str = "auto",
        sequences: Sequence[str] | None = None,
        progress: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Synthesize a whole subject slice-wise along the axial axis.

        Args:
            samr_labels: SAMR class map ``(X, Y, Z)`` (a leading channel of 1 is accepted) on the atlas grid.
            affine: The subject's 4x4 affine, checked against the atlas grid (None: only the shape is checked).
            stats: Per-sequence :class:`~samraug.intensity.IntensityStats` of the real subject (a mapping from
                sequence name, or a sequence / ``(n, 2)`` array in the model's order). Outputs are mapped back to
                that scale (background 0). None: outputs stay in the model's range (background -1).
            brain: Boolean brain mask ``(X, Y, Z)``; defaults to the non-background voxels of ``samr_labels``.
            z_axis: The axial axis of ``samr_labels`` (and of the returned volumes).
            output: ``"subject"`` (needs ``stats``), ``"model"`` ([-1, 1]) or ``"auto"`` (subject when stats given).
            sequences: Which sequences to return (default: all, or the keys of a ``stats`` mapping).
            progress: Show a tqdm bar over the slice batches.

        Returns:
            ``{sequence: (X, Y, Z) float32 tensor}`` on the CPU. Slices without brain stay background.

        Example:
            >>> vols = synth.synthesize_volume(labels, affine=affine, stats=stats)  # doctest: +SKIP
        """
        self._check_context()
        labels = _to_tensor(samr_labels, "samr_labels")
        if labels.dim() == 4 and labels.shape[0] == 1:
            labels = labels[0]
        if labels.dim() != 3:
            if labels.dim() == 2:
                raise ValueError(
                    f"synthesize_volume expects a 3D label map (X, Y, Z), got a 2D tensor of shape "
                    f"{tuple(labels.shape)}; for 2D slices use synthesize_slices"
                )
            raise ValueError(f"synthesize_volume expects a 3D label map (X, Y, Z), got shape {tuple(labels.shape)}")
        labels = _check_classes(labels, "samr_labels", self.n_labels)
        axis = z_axis % 3
        if axis != 2:
            labels = labels.movedim(axis, 2)
        if brain is None:
            brain_t = labels > 0
        else:
            brain_t = _to_tensor(brain, "brain").bool()
            if brain_t.dim() == 4 and brain_t.shape[0] == 1:
                brain_t = brain_t[0]
            if axis != 2:
                brain_t = brain_t.movedim(axis, 2)
            if tuple(brain_t.shape) != tuple(labels.shape):
                raise ValueError(
                    f"brain mask shape {tuple(brain_t.shape)} does not match the label map {tuple(labels.shape)}"
                )
            brain_t = brain_t | (labels > 0)
        aff = None
        if affine is not None:
            aff = np.asarray(affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else affine)
            aff = aff.astype(np.float64)
            if aff.shape != (4, 4) or not np.isfinite(aff).all():
                raise ValueError(f"affine must be a finite 4x4 matrix, got shape {aff.shape}")
            if axis != 2:  # voxel axes moved: permute the affine's columns the same way
                order = [i for i in range(3) if i != axis] + [axis]
                aff = aff[:, [*order, 3]]
        atlas = self.atlas if self.uses_atlas else None
        if atlas is not None:  # without an affine only the shape can be checked
            atlas.check_grid(tuple(labels.shape), aff if aff is not None else atlas.affine, "label map")

        names = self.sequences
        want = _wanted_sequences(names, stats, sequences)
        mode = output
        if mode == "auto":
            mode = "subject" if stats is not None else "model"
        if mode not in ("subject", "model"):
            raise ValueError(f"output must be 'auto', 'subject' or 'model', got {output!r}")
        stats_map = _stats_mapping(names, stats) if mode == "subject" else None
        if mode == "subject" and stats_map is None:
            raise ValueError("output='subject' needs the subject's stats=; pass stats or use output='model'")

        x, y, nz = labels.shape
        vol = torch.full((len(names), x, y, nz), BACKGROUND_VALUE, dtype=torch.float32)
        zs = torch.nonzero(brain_t.flatten(0, 1).any(0)).flatten()
        bs = self.batch_size_for((x, y))
        chunks = range(0, int(zs.numel()), bs)
        if progress:
            chunks = tqdm(chunks, desc="synthesizing", unit="batch")
        for i in chunks:
            zc = zs[i : i + bs]
            masks = labels[:, :, zc].permute(2, 0, 1)
            stack = atlas.stack(zc) if atlas is not None else None
            nb = None
            if self.mask_slices > 1:
                idx = neighbour_slices(zc, self.mask_slices, nz)
                c = self.mask_slices // 2
                idx = torch.cat([idx[:, :c], idx[:, c + 1 :]], dim=1)
                nb = labels[:, :, idx].permute(2, 3, 0, 1)
            out = self.synthesize_slices(masks, stack, batch_size=bs, neighbours=nb)
            vol[:, :, :, zc] = out.permute(1, 2, 3, 0)
        vol = torch.where(brain_t.unsqueeze(0), vol, torch.full_like(vol, BACKGROUND_VALUE))
        result: dict[str, torch.Tensor] = {}
        for i, name in enumerate(names):
            if name not in want:
                continue
            v = vol[i]
            if stats_map is not None:
                v = denormalize(v, stats_map[name], brain_t)
            if axis != 2:
                v = v.movedim(2, axis)
            result[name] = v.contiguous()
        return result

    def paint_local_slices(
        self, mask: torch.Tensor | np.ndarray, context: torch.Tensor | np.ndarray, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Local mode: paint the central slice of each 2.5D input (see ``samraug.models.local``).

        Args:
            mask: ``(B, K * (2c + 1), H, W)`` one-hot model classes of slices ``z - c .. z + c``, slice-major.
            context: ``(B, (S + 1) * (2c + 1), H, W)``: per slice its S normalised sequences with the region set to
                0, then the region mask. ``H, W`` must be multiples of the model's ``size_multiple``.
            batch_size: Slices per model call (default: the synthesizer's ``batch_size``).

        Returns:
            ``(B, S, H, W)`` float32 on the CPU, in [-1, 1], sequences in :attr:`sequences` order.

        Example:
            >>> painted = synth.paint_local_slices(mask, context)  # doctest: +SKIP
        """
        self._check_context()
        m, x = _to_tensor(mask, "mask"), _to_tensor(context, "context")
        model, n_seq = self.model, len(self.sequences)
        n_slices = 2 * int(getattr(model, "context_slices", 0)) + 1
        want_m, want_x = int(model.n_labels) * n_slices, (n_seq + 1) * n_slices
        if m.dim() != 4 or x.dim() != 4 or m.shape[1] != want_m or x.shape[1] != want_x:
            raise ValueError(
                f"mask must be (B, {want_m}, H, W) and context (B, {want_x}, H, W) for this local model, got "
                f"{tuple(m.shape)} and {tuple(x.shape)}; build them with samraug.models.local.build_local_inputs"
            )
        mult = self.size_multiple
        if m.shape[0] != x.shape[0] or m.shape[-2:] != x.shape[-2:] or any(s % mult for s in m.shape[-2:]):
            raise ValueError(
                f"mask {tuple(m.shape)} and context {tuple(x.shape)} must share B, H, W, with H, W multiples of "
                f"{mult}; pad the slices first"
            )
        _check_finite(m, "mask")
        _check_finite(x, "context")
        bs = int(batch_size or self.batch_size_for(tuple(m.shape[-2:])))
        out = torch.empty(int(m.shape[0]), n_seq, *m.shape[-2:], dtype=torch.float32)
        with torch.inference_mode():
            for i in range(0, int(m.shape[0]), bs):
                y = self._forward(m[i : i + bs].float(), x[i : i + bs].float())
                if y.shape[1] != n_seq:
                    raise RuntimeError(f"local model returned {y.shape[1]} sequences, config says {n_seq}")
                out[i : i + bs] = y
        return out


def _cpu_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).cpu()


def _pad_onehot(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad a one-hot batch (centred) with background: channel 0 is 1 in the padding."""
    if tuple(m.shape[-2:]) == (height, width):
        return m
    inside = pad_or_crop(torch.ones(m.shape[-2:], dtype=torch.bool), (height, width), value=False)
    padded = pad_or_crop(m, (height, width), value=0.0)
    padded[:, 0] = torch.where(inside, padded[:, 0], torch.ones_like(padded[:, 0]))
    return padded


def _wanted_sequences(names: Sequence[str], stats: Any, sequences: Sequence[str] | None) -> set[str]:
    if sequences is not None:
        unknown = sorted(set(sequences) - set(names))
        if unknown:
            raise ValueError(f"unknown sequences {unknown}; this model makes {list(names)}")
        return set(sequences)
    if isinstance(stats, Mapping):
        unknown = sorted(set(stats) - set(names))
        if unknown:
            raise ValueError(f"stats given for {unknown}, which this model does not make (it makes {list(names)})")
        return set(stats)
    return set(names)


def _stats_mapping(names: Sequence[str], stats: Any) -> dict[str, IntensityStats] | None:
    if stats is None:
        return None
    if isinstance(stats, Mapping):
        return {k: v if isinstance(v, IntensityStats) else IntensityStats(*v) for k, v in stats.items()}
    if isinstance(stats, torch.Tensor):
        stats = stats.detach().cpu().numpy()
    if isinstance(stats, np.ndarray):
        if stats.shape != (len(names), 2):
            raise ValueError(f"stats array must be (n={len(names)}, 2) (low, high per sequence), got {stats.shape}")
        return {n: IntensityStats(float(lo), float(hi)) for n, (lo, hi) in zip(names, stats, strict=True)}
    stats = list(stats)
    if len(stats) != len(names):
        raise ValueError(f"got {len(stats)} stats for the model's {len(names)} sequences {list(names)}")
    return {n: s if isinstance(s, IntensityStats) else IntensityStats(*s) for n, s in zip(names, stats, strict=True)}


def _unpack_loaded(loaded: Any) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(generator, atlas, config) from what :func:`samraug.hub.load_weights` returns."""
    return loaded.generator, loaded.atlas, dict(loaded.config)


class _LoadedModel:
    """A loaded, read-only generator with its atlas and config (the value type of the weak model cache)."""

    def __init__(self, model: nn.Module, atlas: Any, config: dict[str, Any], *, pid: int) -> None:
        self.model, self.atlas, self.config, self.pid = model, atlas, config, pid


#: The one process-wide cache: loaded read-only models by (weights, device, dtype, channels_last), held weakly
#: (each Synthesizer that uses a model holds it strongly; the last one to go frees it). In-memory generators
#: (Synthesizer.from_model) are found by their ``"memory:<id>"`` key under (key, None, None).
_MODEL_CACHE: weakref.WeakValueDictionary[tuple[Any, ...], _LoadedModel] = weakref.WeakValueDictionary()


def _cache_key(weights: str | None, device: str, dtype: str, channels_last: bool) -> tuple[Any, ...]:
    key = weights
    if key is not None and not key.startswith("memory:") and Path(key).expanduser().is_dir():
        key = str(Path(key).expanduser().resolve())
    return (key, device, dtype, bool(channels_last))


def get_synthesizer(
    weights: str | os.PathLike[str] | Synthesizer | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
) -> Synthesizer:
    """A new :class:`Synthesizer` for ``weights`` (a private clone when given one) sharing any model already
    loaded for the same weights, device and dtype in this process.

    ``"memory:<id>"`` keys refer to :meth:`Synthesizer.from_model` generators still held by a synthesizer in this
    process (or a parent it was forked from, or one it received pickled).

    Example:
        >>> a = get_synthesizer("path/to/weights", device="cpu")
        >>> b = get_synthesizer("path/to/weights", device="cpu")
        >>> a is b  # never shared: each user owns its synthesizer (the loaded model is shared)
        False
    """
    if isinstance(weights, Synthesizer):
        return weights.clone()
    dev = device if isinstance(device, str) else str(device)
    dt = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    key = None if weights is None else str(weights)
    if key is not None and key.startswith("memory:"):
        held = _MODEL_CACHE.get((key, None, None))
        if held is None:
            raise ValueError(
                f"weights {key!r} name an in-memory generator that is not alive in this process (it was made with "
                "Synthesizer.from_model elsewhere, or freed); save it with samraug.hub.save_weights and pass the "
                "folder, or pass the Synthesizer itself"
            )
        synth = Synthesizer(None, device=dev, dtype=dt)
        synth._memory = (held.model, held.atlas, held.config)
        synth._memory_key = key
        synth._memory_holder = held
        return synth
    return Synthesizer(key, device=dev, dtype=dt)
