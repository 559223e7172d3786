"""Pickle-free, atomic training checkpoints.

A checkpoint is a folder ``ROOT/step-000000123/`` holding two files:

- ``tensors.safetensors``: every tensor of the state (model parameters and buffers, optimizer moments, RNG
  byte tensors, ...), named by its path in the state tree (``models/G/encoder.0.weight``);
- ``state.json``: the non-tensor structure (nested dicts, lists, tuples, numbers, strings; tensors replaced by
  ``{"__tensor__": name}``, numpy arrays stored as lists with their dtype), plus the SHA-256 of the tensor file.

Nothing is pickled: :func:`flatten_state` / :func:`unflatten_state` turn any nested state dict (``nn.Module``,
``torch.optim`` and ``GradScaler`` state dicts, numpy / Python RNG states) into those two parts and back exactly,
key types (the integer keys of optimizer states) and tuples included.

Writes are atomic: the folder is written as ``ROOT/.tmp-...``, every file and the folder are fsync'ed, the
folder is renamed into place with :func:`os.replace`, and only then is the ``ROOT/latest`` pointer replaced
(again write-temp, fsync, rename). A crash at any point leaves the previous checkpoint and pointer intact;
stale temporary folders are ignored on load and removed by the next save. The last ``keep_last`` checkpoints
are kept.

Example:
    >>> import tempfile, torch
    >>> root = tempfile.mkdtemp()
    >>> manager = CheckpointManager(root, keep_last=2)
    >>> path = manager.save({"w": torch.ones(2), "step": 3, "betas": (0.5, 0.999)}, step=3)
    >>> state = manager.load()
    >>> state["step"], state["betas"], state["w"].tolist()
    (3, (0.5, 0.999), [1.0, 1.0])
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from samraug.serialization import fsync_file, sha256_file, write_safetensors

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "flatten_state",
    "load_checkpoint",
    "save_checkpoint",
    "step_of",
    "unflatten_state",
    "verify_checkpoint",
]

FORMAT = "samraug-checkpoint"
VERSION = 1
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
LATEST = "latest"
_PREFIX = "step-"
_TMP = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete, corrupt or of an unknown format."""


# ----------------------------------------------------------------------------------------------------- state tree
def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into ``(tensors, structure)``: a flat name -> tensor dict and a JSON-able tree.

    Supported leaves: tensors, numpy arrays and scalars, ``int``, ``float`` (nan / inf included), ``bool``,
    ``str``, ``None``; containers: ``dict`` (any hashable JSON-scalar keys), ``list``, ``tuple``.

    Example:
        >>> tensors, tree = flatten_state({"state": {0: {"m": torch.zeros(1)}}, "b": (1, 2)})
        >>> sorted(tensors), tree["b"]
        (['state/0/m'], {'__tuple__': [1, 2]})
    """
    tensors: dict[str, torch.Tensor] = {}

    def name_for(path: str) -> str:
        name, i = path or "_", 1
        while name in tensors:
            name, i = f"{path}#{i}", i + 1
        return name

    def enc(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            name = name_for(path)
            # clone: safetensors refuses views that share storage; the copy also detaches from the device
            tensors[name] = obj.detach().to("cpu", copy=True).contiguous()
            return {"__tensor__": name}
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
        if isinstance(obj, np.generic):
            return obj.item()
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        if isinstance(obj, tuple):
            return {"__tuple__": [enc(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [enc(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            plain = all(isinstance(k, str) and not k.startswith("__") for k in obj)
            if plain:
                return {k: enc(v, f"{path}/{k}" if path else k) for k, v in obj.items()}
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, bool | int | float | str)):
                    raise TypeError(f"checkpoint state key {k!r} at {path or '/'} is not a JSON scalar")
                items.append([k, enc(v, f"{path}/{k}" if path else str(k))])
            return {"__dict__": items}
        raise TypeError(
            f"checkpoint state at {path or '/'} holds a {type(obj).__name__}, which cannot be stored without "
            "pickle; convert it to tensors / numbers / strings / lists / dicts first"
        )

    return tensors, enc(state, "")


def unflatten_state(structure: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`.

    Example:
        >>> t, s = flatten_state({"a": (torch.ones(1), 2)})
        >>> unflatten_state(s, t)["a"][1]
        2
    """

    def dec(obj: Any) -> Any:
        if isinstance(obj, list):
            return [dec(v) for v in obj]
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                name = obj["__tensor__"]
                if name not in tensors:
                    raise CheckpointError(f"checkpoint structure names tensor {name!r} missing from {TENSORS_FILE}")
                return tensors[name]
            if "__ndarray__" in obj:
                return np.asarray(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
            if "__tuple__" in obj:
                return tuple(dec(v) for v in obj["__tuple__"])
            if "__dict__" in obj:
                return {k: dec(v) for k, v in obj["__dict__"]}
            return {k: dec(v) for k, v in obj.items()}
        return obj

    return dec(structure)


# ----------------------------------------------------------------------------------------------------- file I/O
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    write_safetensors(tensors, path, {"format": FORMAT})


def _write_json(obj: Any, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(state: Any, folder: str | os.PathLike) -> Path:
    """Write ``state`` into a NEW folder ``folder`` atomically (it must not exist yet); returns its path.

    Most users want :class:`CheckpointManager`, which also names, rotates and points to checkpoints.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"checkpoint folder {folder} already exists; remove it or choose another name")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f"{_TMP}{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors, structure = flatten_state(state)
        _write_tensors(tensors, tmp / TENSORS_FILE)
        fsync_file(tmp / TENSORS_FILE)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "files": {
                TENSORS_FILE: {"sha256": sha256_file(tmp / TENSORS_FILE), "bytes": (tmp / TENSORS_FILE).stat().st_size}
            },
            "structure": structure,
        }
        _write_json(meta, tmp / STATE_FILE)
        _fsync_dir(tmp)
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def verify_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint folder (format, files, checksum) and return its ``state.json``; raise CheckpointError."""
    folder = Path(folder)
    state_file = folder / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{folder} is not a complete checkpoint: {STATE_FILE} is missing")
    try:
        meta = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{state_file} is corrupt ({e}); resume from an earlier checkpoint") from e
    if meta.get("format") != FORMAT or int(meta.get("version", -1)) > VERSION:
        raise CheckpointError(f"{folder} is not a {FORMAT} v{VERSION} checkpoint (found {meta.get('format')!r})")
    for name, info in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
            raise CheckpointError(f"{path} is missing or its checksum does not match; the checkpoint is corrupt")
    return meta


def load_checkpoint(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint folder written by :func:`save_checkpoint` (verified) and return the state tree."""
    folder = Path(folder)
    meta = verify_checkpoint(folder)
    tensors = load_file(str(folder / TENSORS_FILE), device=str(map_location))
    return unflatten_state(meta["structure"], tensors)


# ------------------------------------------------------------------------------------------------------ manager
def step_of(folder: str | os.PathLike) -> int:
    """The training step of a checkpoint folder ``step-XXXXXXXXX``.

    Example:
        >>> step_of("/runs/a/checkpoints/step-000001200")
        1200
    """
    step = _parse_step(Path(folder).name)
    if step is None:
        raise ValueError(f"{folder} is not a checkpoint folder (step-XXXXXXXXX)")
    return step


def _parse_step(name: str) -> int | None:
    """The step of a checkpoint folder name ``step-XXXXXXXXX``; None for any other name."""
    digits = name[len(_PREFIX) :]
    return int(digits) if name.startswith(_PREFIX) and digits.isdigit() else None


class CheckpointManager:
    """Numbered, rotated, atomically written checkpoints under one root folder.

    Args:
        root: Folder holding ``step-XXXXXXXXX/`` checkpoints and the ``latest`` pointer (created on demand).
        keep_last: How many of the newest checkpoints to keep (>= 1).
        keep_every: Also keep every checkpoint whose step is a multiple of this (0: none), e.g. the validation
            interval, so that the checkpoint a validation curve favours is still there to export.

    Example:
        >>> import tempfile, torch
        >>> m = CheckpointManager(tempfile.mkdtemp(), keep_last=1)
        >>> _ = m.save({"x": torch.zeros(1)}, step=1); _ = m.save({"x": torch.ones(1)}, step=2)
        >>> [p.name for p in m.checkpoints()], m.load()["x"].item()
        (['step-000000002'], 1.0)
        >>> m = CheckpointManager(tempfile.mkdtemp(), keep_last=1, keep_every=2)
        >>> for step in (1, 2, 3, 4, 5):
        ...     _ = m.save({"x": torch.zeros(1)}, step=step)
        >>> [p.name for p in m.checkpoints()]
        ['step-000000002', 'step-000000004', 'step-000000005']
    """

    def __init__(self, root: str | os.PathLike, keep_last: int = 3, keep_every: int = 0) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        if keep_every < 0:
            raise ValueError(f"keep_every must be >= 0 (0: keep only the last keep_last), got {keep_every}")
        self.root = Path(root)
        self.keep_last = int(keep_last)
        self.keep_every = int(keep_every)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders (by name; not verified), oldest first."""
        if not self.root.is_dir():
            return []
        found = [(step, p) for p in self.root.iterdir() if p.is_dir() and (step := _parse_step(p.name)) is not None]
        return [p for _, p in sorted(found)]

    def save(self, state: Any, step: int) -> Path:
        """Write ``state`` as checkpoint ``step``, move ``latest`` to it, drop the oldest beyond ``keep_last``."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f"{_TMP}*"):  # left by a crash of an earlier save
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        final = self.root / f"{_PREFIX}{int(step):09d}"
        if final.exists():  # re-saving the same step (e.g. the end-of-training save right after a periodic one)
            old = self.root / f"{_TMP}old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            try:
                save_checkpoint(state, final)
            except BaseException:
                os.replace(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            save_checkpoint(state, final)
        self._point_latest(final.name)
        keep = self.checkpoints()[-self.keep_last :]
        for p in self.checkpoints():
            if p not in keep and not (self.keep_every and step_of(p) % self.keep_every == 0):
                shutil.rmtree(p, ignore_errors=True)
        return final

    def _point_latest(self, name: str) -> None:
        tmp = self.root / f"{_TMP}{LATEST}-{uuid.uuid4().hex[:8]}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / LATEST)
        _fsync_dir(self.root)

    def latest(self) -> Path | None:
        """The newest loadable checkpoint: the ``latest`` pointer if it verifies, else the newest that does.

        Skipping a corrupt or missing checkpoint is never silent: a ``UserWarning`` names each one skipped (and
        why) and the one used. Returns None when the root holds no checkpoint at all.

        Raises:
            CheckpointError: checkpoints exist but none verifies (the message names the root and the fix).
        """
        pointer = self.root / LATEST
        candidates: list[Path] = []
        if pointer.is_file():
            name = pointer.read_text(encoding="utf-8").strip()
            if name:
                candidates.append(self.root / name)
        candidates += [p for p in reversed(self.checkpoints()) if p not in candidates]
        skipped: list[str] = []
        for path in candidates:
            try:
                verify_checkpoint(path)
            except CheckpointError as e:
                skipped.append(f"{path.name} ({e})")
                continue
            if skipped:
                warnings.warn(
                    f"skipped {len(skipped)} corrupt or missing checkpoint(s) under {self.root}: {'; '.join(skipped)}; "
                    f"using the older checkpoint {path.name} -- the steps after it will be trained again",
                    UserWarning,
                    stacklevel=2,
                )
            return path
        if skipped:
            raise CheckpointError(
                f"no loadable checkpoint under {self.root}: every one is corrupt or missing ({'; '.join(skipped)}). "
                "Nothing was deleted. Resume from a backup copy of the checkpoint folder, or start a new run "
                "(a new --out/--log-dir, or --overwrite to replace this run)"
            )
        return None

    def load(self, path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> Any:
        """Load ``path`` (a checkpoint folder) or, by default, :meth:`latest`."""
        if path is None:
            path = self.latest()
            if path is None:
                raise FileNotFoundError(
                    f"no loadable checkpoint under {self.root}; check the path or start without --resume"
                )
        return load_checkpoint(path, map_location=map_location)
