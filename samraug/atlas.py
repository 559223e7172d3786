"""The healthy-anatomy atlas: a voxel-wise mean of co-registered, normalised training subjects.

The generator sees, next to the lesion mask, three adjacent axial slices (z-1, z, z+1) of every sequence of the
atlas (paper section 2), so it knows what healthy tissue looks like at that position.

**Building** (:func:`build_atlas`), one subject at a time (streaming: only running sums are kept):

1. each sequence of each subject is normalised inside the subject's brain with the weights' normalisation
   (:class:`~samraug.intensity.Normalization`; default: p0.5 / p99.5 of the normal-appearing brain -> -0.8 / -0.2,
   clipped to [-1, 1]);
2. the atlas value of a voxel is the mean over the subjects in whose brain it lies and where it is *not*
   lesion (SAMR edema, cavity or tumor), so lesions do not leak into the healthy prior;
3. the atlas brain is the voxels inside the brain of at least half of the subjects (``min_brain_fraction``);
   outside it the atlas is background (-1);
4. fallback: atlas-brain voxels that are lesion in every subject covering them (no healthy sample) take the value
   of the nearest atlas-brain voxel that has one (Euclidean distance in voxels), i.e. the nearest healthy tissue;
   how many voxels were filled is recorded in ``atlas.info["n_filled_voxels"]``.

Example:
    >>> import torch
    >>> atlas = Atlas(torch.zeros(2, 8, 8, 6), np.eye(4), ("t1", "t2"), torch.ones(8, 8, 6, dtype=torch.bool))
    >>> atlas.stack(0).shape, atlas.stack([0, 5]).shape
    (torch.Size([6, 8, 8]), torch.Size([2, 6, 8, 8]))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio
from safetensors import safe_open
from scipy import ndimage

from .intensity import BACKGROUND_VALUE, Normalization
from .labels import EDEMA, LabelScheme, get_scheme
from .serialization import write_safetensors
from .subjects import AFFINE_ATOL, affines_match, format_affine, subject_arrays

__all__ = ["ATLAS_FILENAME", "Atlas", "build_atlas"]

logger = logging.getLogger(__name__)

#: The file an atlas folder holds.
ATLAS_FILENAME = "atlas.safetensors"
_FORMAT = "samraug-atlas/1"


@dataclass(eq=False)
class Atlas:
    """A normalised multi-sequence atlas on a fixed grid.

    Attributes:
        data: ``(n_seq, X, Y, Z)`` float32 in [-1, 1], background -1.
        affine: ``(4, 4)`` float64 voxel-to-world (RAS) matrix.
        sequences: Sequence names, in the order of ``data``.
        brain: ``(X, Y, Z)`` bool atlas brain mask.
        info: JSON-able provenance (number of subjects, normalisation, filled voxels, ...).

    Example:
        >>> atlas = Atlas.load("weights/phantom-tiny")  # doctest: +SKIP
        >>> atlas.stack(torch.tensor([40, 41])).shape  # doctest: +SKIP
        torch.Size([2, 15, 99, 117])
    """

    data: torch.Tensor
    affine: np.ndarray
    sequences: tuple[str, ...]
    brain: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = torch.as_tensor(self.data).to(torch.float32)
        self.brain = torch.as_tensor(self.brain).bool()
        self.affine = np.asarray(self.affine, dtype=np.float64)
        self.sequences = tuple(str(s) for s in self.sequences)
        if self.data.dim() != 4:
            raise ValueError(f"atlas data must be (n_sequences, X, Y, Z), got shape {tuple(self.data.shape)}")
        if len(self.sequences) != self.data.shape[0] or len(set(self.sequences)) != len(self.sequences):
            raise ValueError(
                f"atlas has {self.data.shape[0]} channels but sequences {self.sequences}; give one unique name each"
            )
        if tuple(self.brain.shape) != tuple(self.data.shape[1:]):
            raise ValueError(f"atlas brain shape {tuple(self.brain.shape)} != data shape {tuple(self.data.shape[1:])}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"atlas affine must be 4x4, got shape {self.affine.shape}")
        if not bool(torch.isfinite(self.data).all()):
            raise ValueError("atlas data contains NaN/inf")

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.data.shape[1:])  # type: ignore[return-value]

    @property
    def n_sequences(self) -> int:
        """Number of sequences (the stack has three times as many channels)."""
        return len(self.sequences)

    def check_grid(self, shape: Sequence[int], affine: np.ndarray, what: str = "subject") -> None:
        """Raise ``ValueError`` unless ``shape`` (its last three entries) and ``affine`` are the atlas grid's.

        Example:
            >>> atlas.check_grid(subject["t1n"].shape, subject["t1n"].affine, "subject 'x'")  # doctest: +SKIP
        """
        spatial = tuple(int(s) for s in tuple(shape)[-3:])
        if spatial != self.shape:
            raise ValueError(
                f"{what} is not on the atlas grid: shape {spatial} vs atlas shape {self.shape}; "
                "resample/register it to the atlas grid first (e.g. tio.Resample(atlas.image()) after registration)"
            )
        if not affines_match(np.asarray(affine), self.affine):
            raise ValueError(
                f"{what} is not on the atlas grid: affine {format_affine(affine)} vs atlas affine "
                f"{format_affine(self.affine)} (tolerance {AFFINE_ATOL}); resample/register it to the atlas grid first "
                "(e.g. tio.Resample(atlas.image()) after registration)"
            )

    # ------------------------------------------------------------------ access
    def stack(self, z: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Slices z-1, z, z+1 of every sequence, clamped at the volume's ends, sequence-major.

        ``z`` an int -> ``(3 * n_seq, X, Y)``; a 1D list/tensor of B ints -> ``(B, 3 * n_seq, X, Y)``. Channels are
        ``[s0 z-1, s0 z, s0 z+1, s1 z-1, ...]``.

        Example:
            >>> atlas.stack(torch.arange(4)).shape  # doctest: +SKIP
            torch.Size([4, 15, 99, 117])
        """
        scalar = isinstance(z, (int, np.integer)) or (isinstance(z, torch.Tensor) and z.dim() == 0)
        zt = torch.as_tensor(z, dtype=torch.long).reshape(-1)
        depth = self.shape[2]
        if zt.numel() and (int(zt.min()) < 0 or int(zt.max()) >= depth):
            raise IndexError(f"slice index out of range 0..{depth - 1}: {zt.tolist()[:8]}")
        idx = (zt[:, None] + torch.arange(-1, 2, device=zt.device)).clamp(0, depth - 1).to(self.data.device)  # (B, 3)
        out = self.data[..., idx]  # (n, X, Y, B, 3)
        out = out.permute(3, 0, 4, 1, 2).reshape(zt.numel(), 3 * self.n_sequences, *self.shape[:2])
        return out[0] if scalar else out

    def select(self, sequences: Sequence[str]) -> Atlas:
        """The atlas restricted to (and reordered as) ``sequences``.

        Example:
            >>> atlas.select(["t2w", "t1n"]).sequences  # doctest: +SKIP
            ('t2w', 't1n')
        """
        missing = [s for s in sequences if s not in self.sequences]
        if missing:
            raise ValueError(f"atlas has no sequence {missing} (it has {list(self.sequences)})")
        if tuple(sequences) == self.sequences:
            return self
        idx = [self.sequences.index(s) for s in sequences]
        return Atlas(self.data[idx], self.affine.copy(), tuple(sequences), self.brain, dict(self.info))

    def to(self, device: torch.device | str) -> Atlas:
        """A copy with ``data`` and ``brain`` on ``device``."""
        return Atlas(self.data.to(device), self.affine.copy(), self.sequences, self.brain.to(device), dict(self.info))

    def image(self) -> tio.ScalarImage:
        """The atlas as a ``tio.ScalarImage`` (e.g. the target of ``tio.Resample``)."""
        return tio.ScalarImage(tensor=self.data.cpu(), affine=self.affine)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Write ``folder/atlas.safetensors`` (tensors ``data``, ``affine``, ``brain``; metadata ``sequences``).

        Example:
            >>> atlas.save("/tmp/my_atlas")  # doctest: +SKIP
            PosixPath('/tmp/my_atlas/atlas.safetensors')
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ATLAS_FILENAME
        tensors = {
            "data": self.data.detach().cpu().contiguous(),
            "affine": torch.from_numpy(self.affine.copy()),
            "brain": self.brain.detach().cpu().contiguous(),
        }
        metadata = {"format": _FORMAT, "sequences": json.dumps(list(self.sequences)), "info": json.dumps(self.info)}
        write_safetensors(tensors, path, metadata)
        return path

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> Atlas:
        """Read an atlas written by :meth:`save` (``folder`` or the ``.safetensors`` file itself); strict keys.

        Example:
            >>> Atlas.load("/tmp/my_atlas").sequences  # doctest: +SKIP
            ('t1n', 't1c', 't2w', 't2f')
        """
        folder = Path(folder)
        path = folder if folder.suffix == ".safetensors" else folder / ATLAS_FILENAME
        if not path.is_file():
            raise FileNotFoundError(f"no atlas at {path}; build one with build_atlas(...) and Atlas.save(folder)")
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            keys = set(f.keys())
            expected = {"data", "affine", "brain"}
            if keys != expected:
                raise ValueError(
                    f"{path}: atlas tensors {sorted(keys)} != expected {sorted(expected)} "
                    f"(missing {sorted(expected - keys)}, unexpected {sorted(keys - expected)})"
                )
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in expected}
        if "sequences" not in meta:
            raise ValueError(f"{path}: no 'sequences' metadata; not an atlas written by Atlas.save")
        sequences = tuple(json.loads(meta["sequences"]))
        info = json.loads(meta.get("info", "{}"))
        return cls(tensors["data"], tensors["affine"].cpu().numpy(), sequences, tensors["brain"], info)


def _subject_name(subject: Any, index: int) -> str:
    sid = subject.get("subject_id") if isinstance(subject, Mapping) else None
    return f"subject {sid!r}" if sid is not None else f"subject #{index}"


def build_atlas(
    subjects: Iterable[tio.Subject | Mapping[str, Any]],
    sequences: Sequence[str],
    *,
    scheme: str | LabelScheme | None = None,
    lesion_key: str = "seg",
    brain_key: str = "brain",
    min_brain_fraction: float = 0.5,
    low: float = 0.5,
    high: float = 99.5,
    affine: np.ndarray | None = None,
    normalization: Normalization | None = None,
) -> Atlas:
    """Build an :class:`Atlas` from co-registered subjects (see the module docstring for the rules).

    Args:
        subjects: ``tio.Subject``s (e.g. from :func:`~samraug.data.brats.load_brats`) or mappings of arrays, all on
            one grid (the first subject's, checked for every other). Read one at a time; an iterable/generator
            is fine.
        sequences: The sequences, in atlas channel order.
        scheme: Label scheme of ``lesion_key``; None uses each subject's ``scheme`` attribute. Subjects without
            ``lesion_key`` count as lesion-free.
        lesion_key, brain_key: Keys of the label map and of the brain mask (missing brain: non-zero voxels).
        min_brain_fraction: Share of subjects whose brain must cover a voxel for it to be atlas brain.
        low, high: Normalisation percentiles (of the default ``normalization``).
        normalization: How each subject is normalised (default ``Normalization(low, high)``: percentiles of the
            normal-appearing brain, :class:`samraug.intensity.Normalization`); recorded in ``info``.
        affine: Affine of mapping subjects that carry none (default identity).

    Example:
        >>> atlas = build_atlas(load_brats(root, scheme="brats2024"), ["t1n", "t1c", "t2w", "t2f"])  # doctest: +SKIP
        >>> atlas.save("/tmp/atlas")  # doctest: +SKIP
    """
    if not 0.0 < min_brain_fraction <= 1.0:
        raise ValueError(f"min_brain_fraction must be in (0, 1], got {min_brain_fraction}")
    sequences = tuple(sequences)
    spec = Normalization(low=low, high=high) if normalization is None else normalization
    fixed_scheme = get_scheme(scheme) if scheme is not None else None
    ref: Atlas | None = None  # grid holder for check_grid
    total = healthy = brain_count = None
    n = 0
    for i, subject in enumerate(subjects):
        what = _subject_name(subject, i)
        arrays = subject_arrays(subject, sequences, seg_key=lesion_key, brain_key=brain_key, affine=affine)
        if ref is None:
            shape = arrays.shape
            ref = Atlas(torch.zeros((len(sequences), *shape)), arrays.affine, sequences, torch.zeros(shape, dtype=bool))
            total = np.zeros((len(sequences), *shape), dtype=np.float64)
            healthy = np.zeros(shape, dtype=np.int32)
            brain_count = np.zeros(shape, dtype=np.int32)
        else:
            ref.check_grid(arrays.shape, arrays.affine, what)
        brain = arrays.brain
        lesion = np.zeros_like(brain)
        if arrays.seg is not None:
            s = fixed_scheme
            if s is None:
                if not isinstance(subject, Mapping) or "scheme" not in subject:
                    raise ValueError(f"{what} has no 'scheme' attribute: pass build_atlas(..., scheme=...)")
                s = get_scheme(subject["scheme"])
            samr = s.to_samr(arrays.seg, brain)
            lesion = samr >= EDEMA
            brain = samr > 0  # lesion voxels count as brain
        try:
            norm, _ = spec.normalize_sequences(arrays.images, brain, lesion)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
        keep = brain & ~lesion
        total += np.where(keep, norm, 0.0)
        healthy += keep
        brain_count += brain
        n += 1
        del arrays, norm
    if ref is None or total is None or healthy is None or brain_count is None:
        raise ValueError("build_atlas got no subjects; pass at least one co-registered subject")

    atlas_brain = brain_count >= min_brain_fraction * n
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / np.maximum(healthy, 1)
    source = atlas_brain & (healthy > 0)
    holes = atlas_brain & (healthy == 0)
    n_filled = int(holes.sum())
    if not source.any():
        raise ValueError(
            "no healthy atlas-brain voxel: every voxel is background or lesion in every subject; "
            "check the brain masks and the label scheme"
        )
    if n_filled:
        _, idx = ndimage.distance_transform_edt(~source, return_indices=True)
        nearest = mean[(slice(None), *idx)]
        mean = np.where(holes, nearest, mean)
        logger.info("atlas: %d brain voxels had no healthy sample; filled from the nearest healthy voxel", n_filled)
    data = np.where(atlas_brain, mean, BACKGROUND_VALUE).astype(np.float32)
    info = {
        "n_subjects": n,
        "normalization": spec.to_config(),
        "min_brain_fraction": min_brain_fraction,
        "n_filled_voxels": n_filled,
        "lesion_excluded": True,
    }
    return Atlas(torch.from_numpy(data), ref.affine, sequences, torch.from_numpy(atlas_brain), info)
