"""Training logs: a CSV of scalars (TensorBoard too when installed) and PNG grids of real vs synthetic slices.

- :class:`TrainLogger` appends one CSV row per logged step (``step``, ``epoch``, then the scalars); on resume it
  drops rows logged after the checkpoint's step so the log has no duplicates. When ``torch.utils.tensorboard``
  imports (the ``tensorboard`` package is installed) the same scalars go to ``log_dir/tensorboard``.
- :func:`sample_grid` / :func:`save_sample_grid` tile slices into an RGB image and :func:`write_png` writes it
  without any plotting library. Grid layout, two rows per sample::

      [ mask         | real s_1 | real s_2 | ... ]
      [ U(G(mask))   | synth s_1 | synth s_2 | ... ]

  Masks use the SAMR colours of the paper's figures (background black, normal brain grey, edema green,
  cavity blue, tumor yellow); images map [-1, 1] to black..white. Slices are shown with the second array axis
  (anterior in RAS) pointing up.

Example:
    >>> import tempfile, torch
    >>> label = torch.zeros(1, 16, 16, dtype=torch.long); label[:, 4:12, 4:12] = 1
    >>> img = torch.rand(1, 2, 16, 16) * 2 - 1
    >>> grid = sample_grid(label, img, img)
    >>> grid.shape, grid.dtype
    ((34, 52, 3), dtype('uint8'))
"""

from __future__ import annotations

import csv
import math
import os
import struct
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["SAMR_COLORS", "TrainLogger", "sample_grid", "save_sample_grid", "validation_curve", "write_png"]

#: RGB colour of each SAMR class: background, normal brain, edema, cavity, tumor.
SAMR_COLORS = np.array([[0, 0, 0], [128, 128, 128], [40, 200, 40], [40, 90, 230], [240, 220, 30]], dtype=np.uint8)
#: Colours of further classes (native conditioning can have more than 5), cycled: magenta, cyan, orange, red.
_EXTRA_COLORS = np.array([[220, 60, 220], [60, 220, 220], [250, 140, 30], [230, 40, 40]], dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------- PNG
def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` (or ``(H, W)`` grey) uint8 array as a PNG file.

    Example:
        >>> import tempfile
        >>> p = write_png(tempfile.mktemp(suffix=".png"), np.zeros((2, 3, 3), np.uint8))
        >>> p.read_bytes()[:4]
        b'\\x89PNG'
    """
    img = np.asarray(rgb)
    if img.dtype != np.uint8:
        raise ValueError(f"write_png needs a uint8 array, got {img.dtype}; scale to 0..255 and cast first")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"write_png needs (H, W, 3) or (H, W), got {img.shape}")
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def _display(a: np.ndarray) -> np.ndarray:
    """(X, Y) array -> screen orientation (rows = Y descending, i.e. anterior up; cols = X)."""
    return np.flipud(a.T)


def _gray(x: torch.Tensor) -> np.ndarray:
    v = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return np.repeat(_display(v)[..., None], 3, axis=2)


def _colour(label: torch.Tensor) -> np.ndarray:
    lab = _display(label.detach().cpu().long().clamp_min(0).numpy())
    n = len(SAMR_COLORS)
    extra = _EXTRA_COLORS[np.maximum(lab - n, 0) % len(_EXTRA_COLORS)]
    return np.where((lab < n)[..., None], SAMR_COLORS[np.minimum(lab, n - 1)], extra)


def sample_grid(
    label: torch.Tensor,
    real: torch.Tensor,
    fake: torch.Tensor,
    seg_fake: torch.Tensor | None = None,
    pad: int = 2,
) -> np.ndarray:
    """Tile a batch into an RGB uint8 grid (layout in the module docstring).

    Args:
        label: ``(B, H, W)`` SAMR classes (or a ``(B, 5, H, W)`` one-hot).
        real, fake: ``(B, n, H, W)`` images in [-1, 1].
        seg_fake: ``(B, H, W)`` classes predicted on the synthetic images (shown under the mask), or ``None``
            (the mask is shown again).
        pad: White separator width in pixels.
    """
    if label.dim() == 4:
        label = label.argmax(1)
    if seg_fake is not None and seg_fake.dim() == 4:
        seg_fake = seg_fake.argmax(1)
    if real.shape != fake.shape or real.dim() != 4 or label.shape != (real.shape[0], *real.shape[2:]):
        raise ValueError(
            f"sample_grid needs label (B, H, W) and real/fake (B, n, H, W) of matching sizes; got "
            f"{tuple(label.shape)}, {tuple(real.shape)}, {tuple(fake.shape)}"
        )
    b, n, h, w = real.shape
    tile_h, tile_w = w, h  # tiles are transposed for display
    rows, cols = 2 * b, n + 1
    canvas = np.full((rows * tile_h + (rows - 1) * pad, cols * tile_w + (cols - 1) * pad, 3), 255, np.uint8)

    def put(r: int, c: int, tile: np.ndarray) -> None:
        y, x = r * (tile_h + pad), c * (tile_w + pad)
        canvas[y : y + tile_h, x : x + tile_w] = tile

    for i in range(b):
        put(2 * i, 0, _colour(label[i]))
        put(2 * i + 1, 0, _colour(seg_fake[i] if seg_fake is not None else label[i]))
        for s in range(n):
            put(2 * i, s + 1, _gray(real[i, s]))
            put(2 * i + 1, s + 1, _gray(fake[i, s]))
    return canvas


def save_sample_grid(path: str | os.PathLike, *args: Any, **kwargs: Any) -> Path:
    """:func:`sample_grid` written to ``path`` as PNG."""
    return write_png(path, sample_grid(*args, **kwargs))


# --------------------------------------------------------------------------------------------------------- CSV
class TrainLogger:
    """CSV (and optional TensorBoard) scalar log for one training run.

    Args:
        log_dir: Folder of ``log.csv`` (and ``tensorboard/``); created on demand.
        enabled: False on non-zero DDP ranks: every call is then a no-op.
        resume_step: When resuming, rows with ``step > resume_step`` (logged after the checkpoint) are dropped.
        tensorboard: Also write TensorBoard events if ``tensorboard`` is installed.

    Example:
        >>> import tempfile
        >>> log = TrainLogger(tempfile.mkdtemp(), tensorboard=False)
        >>> log.log(1, {"loss_g": 0.5}, epoch=0); log.close()
        >>> log.path.read_text().splitlines()
        ['step,epoch,loss_g', '1,0,0.5']
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        enabled: bool = True,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.path = self.log_dir / "log.csv"
        self.enabled = enabled
        self._fields: list[str] = []
        self._tb: Any = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self._fields = list(reader.fieldnames or [])
                rows = list(reader)
            if resume_step is None:
                rows = []  # a fresh run overwrites an old log
                self._fields = []
            else:
                rows = [r for r in rows if r.get("step") and int(float(r["step"])) <= resume_step]
            self._rewrite(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: the tensorboard package
            except Exception:  # tensorboard not installed: CSV only
                self._tb = None
            else:
                self._tb = SummaryWriter(str(self.log_dir / "tensorboard"), purge_step=resume_step)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if self._fields:
                writer = csv.DictWriter(f, fieldnames=self._fields)
                writer.writeheader()
                writer.writerows(rows)
        os.replace(tmp, self.path)

    def log(self, step: int, scalars: Mapping[str, float], epoch: int | None = None) -> None:
        """Append one row; new scalar names extend the header (the file is rewritten once)."""
        if not self.enabled:
            return
        row: dict[str, Any] = {"step": int(step), "epoch": "" if epoch is None else int(epoch)}
        for k, v in scalars.items():
            v = float(v)
            if not math.isfinite(v):
                warnings.warn(f"non-finite {k}={v} at step {step}", RuntimeWarning, stacklevel=2)
            row[k] = f"{v:.6g}"
        new = [k for k in row if k not in self._fields]
        if new:
            old_rows: list[dict[str, Any]] = []
            if self.path.exists() and self._fields:
                with open(self.path, newline="", encoding="utf-8") as f:
                    old_rows = list(csv.DictReader(f))
            self._fields += new
            self._rewrite(old_rows)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self._fields).writerow(row)
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))

    def log_image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """Send an ``(H, W, 3)`` uint8 image to TensorBoard (no-op without it)."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, rgb, int(step), dataformats="HWC")

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def validation_curve(path: str | os.PathLike, suffixes: tuple[str, ...] = ("/mean", "/lesion")) -> dict[str, Any]:
    """The periodic validation rows of a run's ``log.csv``: ``{"columns": [...], "rows": [[step, ...], ...]}``.

    Columns are the ``val/...`` scalars whose names end with one of ``suffixes`` (the per-sequence means and the
    lesion Dice), in the log's order; rows are in logged order (a final validation of all held-out data after the
    last periodic one repeats its step; an identical repeated row, from exporting the run again, is shown once).
    Empty cells are NaN. A missing log gives no rows.

    Example:
        >>> import tempfile
        >>> log = TrainLogger(tempfile.mkdtemp(), tensorboard=False)
        >>> log.log(10, {"loss": 1.0}); log.log(10, {"val/psnr/t1n": 17.0, "val/psnr/mean": 18.0}); log.close()
        >>> validation_curve(log.path)
        {'columns': ['val/psnr/mean'], 'rows': [[10, 18.0]]}
    """
    path = Path(path)
    if not path.is_file():
        return {"columns": [], "rows": []}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c for c in (reader.fieldnames or []) if c.startswith("val/") and c.endswith(suffixes)]
        rows = []
        for r in reader:
            if not any(r.get(c) for c in columns):
                continue
            row = [int(float(r["step"]))] + [float(r[c]) if r.get(c) else float("nan") for c in columns]
            if not rows or repr(row) != repr(rows[-1]):  # an export re-run at the same step logs the same row again
                rows.append(row)
    return {"columns": columns, "rows": rows}
