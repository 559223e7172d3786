"""Low-level weights serialisation: safetensors files, strict state-dict loading, weights-folder constants.

This module sits below both :mod:`samraug.hub` (weights folders, the Hub) and :mod:`samraug.models` (generators
that save/load themselves), so neither imports the other for these helpers. :mod:`samraug.hub` re-exports the
public names. No pickle: safetensors and JSON only.

Example:
    >>> import torch, tempfile, pathlib
    >>> m = torch.nn.Linear(2, 2)
    >>> path = save_state_dict(m, pathlib.Path(tempfile.mkdtemp()) / "m.safetensors")
    >>> tensors, meta = read_safetensors(path)
    >>> load_state_dict_strict(torch.nn.Linear(2, 2), tensors); sorted(tensors)
    ['bias', 'weight']
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

__all__ = [
    "ATLAS_NAME",
    "CARD_NAME",
    "CONDITIONING_KEY",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "LEGACY_CONDITIONING",
    "LEGACY_UPSAMPLE",
    "META_KEYS",
    "MODEL_NAME",
    "WEIGHT_FILES",
    "WeightsError",
    "cast_safetensors",
    "check_format_version",
    "check_safetensors_header",
    "corrupt_message",
    "fsync_file",
    "is_offline",
    "load_state_dict_strict",
    "read_safetensors",
    "save_state_dict",
    "sha256_file",
    "write_safetensors",
]

CONFIG_NAME = "config.json"
MODEL_NAME = "model.safetensors"
ATLAS_NAME = "atlas.safetensors"
CARD_NAME = "README.md"
WEIGHT_FILES: tuple[str, ...] = (CONFIG_NAME, MODEL_NAME, ATLAS_NAME, CARD_NAME)
FORMAT_VERSION = 1
#: config.json keys that describe the weights rather than the generator architecture.
META_KEYS: tuple[str, ...] = (
    "model_type",
    "mode",
    "conditioning",
    "label_scheme",
    "normalization",
    "atlas",
    "atlas_space",
    "voxel_size",
    "crop_size",
    "context_fill",
    "lineage",
    "samraug_version",
    "format_version",
    "checksums",
)
CONDITIONING_KEY = "conditioning"
#: What a config without ``conditioning`` means: folders written before the key existed used SAMR classes.
LEGACY_CONDITIONING = "samr"
#: What a generator config without ``upsample`` means: decoders before the option used transposed convolutions.
LEGACY_UPSAMPLE = "transposed"


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks (the checksums of weights folders and checkpoints).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(delete=False) as f:
        ...     _ = f.write(b"abc")
        >>> sha256_file(f.name)[:16]
        'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_file(path: str | Path) -> None:
    """Flush a written file to disk (before the rename that publishes it)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def is_offline() -> bool:
    """Whether Hub access is disabled: ``HF_HUB_OFFLINE`` (read now, so setting it after import works) or
    ``huggingface_hub.constants.HF_HUB_OFFLINE``."""
    from huggingface_hub import constants  # the Hub client's settings: loaded only when weights are resolved

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


class WeightsError(ValueError):
    """A weights folder or file is invalid (corrupt file, config that does not match the tensors, ...)."""


def check_format_version(config: Mapping[str, Any], source: str = "config") -> None:
    """Raise :class:`WeightsError` if ``config["format_version"]`` is newer than this samraug understands."""
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(
            f"{source} has format_version {version!r}, newer than this samraug understands ({FORMAT_VERSION}); "
            "upgrade samraug (pip install -U samraug)"
        )


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str]) -> Path:
    """``safetensors.torch.save_file`` with the file mode any other new file gets (the user's umask, e.g. 0644):
    safetensors alone creates 0600 files, unreadable to the other users of a shared weights folder."""
    path = Path(path)
    path.touch()
    mode = path.stat().st_mode & 0o777
    save_file(dict(tensors), str(path), metadata=dict(metadata))
    os.chmod(path, mode)
    return path


def save_state_dict(
    module: nn.Module, path: str | Path, *, dtype: torch.dtype | None = None, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``module.state_dict()`` to a safetensors file (contiguous CPU copies, so ``channels_last`` and GPU
    modules work). ``dtype`` (e.g. ``torch.float16``) casts the floating tensors for compact storage."""
    path = Path(path)
    tensors = {}
    for key, value in module.state_dict().items():
        t = value.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[key] = t.contiguous().clone()
    meta = {"format": "pt", **({k: str(v) for k, v in metadata.items()} if metadata else {})}

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_safetensors(tensors, tmp, meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_safetensors(path: str | Path, what: str = "weights") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor of a safetensors file (on CPU) and its metadata.

    Raises ``FileNotFoundError`` if the file is missing and :class:`WeightsError` if it is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} file {path.name!r} not found in {path.parent}; the weights folder is incomplete"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise WeightsError(corrupt_message(path, e)) from e
    return tensors, metadata


def check_safetensors_header(path: Path, what: str) -> None:
    """Validate a safetensors file's header and size without reading its tensors."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} file {path.name!r} not found in {path.parent}; the weights folder is incomplete"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            list(f.keys())
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise WeightsError(corrupt_message(path, e)) from e


def corrupt_message(path: Path, error: Exception) -> str:
    return (
        f"{path} is corrupt or truncated ({error}); re-download it (load_weights/resolve_weights with "
        f"force_download=True, or huggingface_hub.snapshot_download(..., force_download=True)) or re-export the "
        f"weights with samraug.hub.save_weights"
    )


def load_state_dict_strict(module: nn.Module, tensors: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Load ``tensors`` into ``module`` strictly.

    Missing or unexpected tensors, shape mismatches (a config that does not match the tensors) and non-finite
    values raise :class:`WeightsError` naming the keys. Floating tensors are cast to the module's dtype, so float16
    storage loads into a float32 module.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {_clip_list(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_clip_list(unexpected)}")
        raise WeightsError(
            f"{source} does not match the {type(module).__name__} built from its config: {'; '.join(parts)}. "
            "The config.json and model.safetensors come from different models (or the file was edited): "
            "re-export both together with samraug.hub.save_weights"
        )
    for key, want in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(want.shape):
            raise WeightsError(
                f"{source}: tensor {key!r} has shape {tuple(got.shape)} but the config.json architecture expects "
                f"{tuple(want.shape)}; the config (e.g. base_channels, max_channels, n_down, sequences) does not "
                "match the tensors. Use the config.json saved with these tensors, or re-export with save_weights"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise WeightsError(
                f"{source}: tensor {key!r} contains NaN or inf; the weights are corrupt (or training diverged). "
                "Re-download with force_download=True or re-export from a good checkpoint"
            )
    cast = {k: (v.to(expected[k].dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
    module.load_state_dict(cast, strict=True)


def _clip_list(items: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)} in all)"


def cast_safetensors(path: str | Path, dtype: torch.dtype) -> Path:
    """Rewrite a safetensors file with its float32 tensors cast to ``dtype`` (metadata kept; atomic replace).

    Example:
        >>> import tempfile, pathlib
        >>> p = save_state_dict(torch.nn.Linear(2, 2), pathlib.Path(tempfile.mkdtemp()) / "m.safetensors")
        >>> read_safetensors(cast_safetensors(p, torch.float16))[0]["weight"].dtype
        torch.float16
    """
    path = Path(path)
    tensors, meta = read_safetensors(path)
    cast = {k: (v.to(dtype) if v.dtype == torch.float32 else v).contiguous() for k, v in tensors.items()}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_safetensors(cast, tmp, meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
