"""Self-supervised training data of the local generator: 2.5D crops with a region to repaint.

Every instance is a crop of ``2c + 1`` adjacent axial slices (RAS z) of one subject around a *region*, of one of
two kinds, drawn with probability ``lesion_fraction`` / ``1 - lesion_fraction``:

- **lesion painting** (``kind = 0``): the region is the subject's lesion dilated by ``margin_mm`` (inside the
  brain), centred on a random lesion voxel; the mask holds the real labels, so the model learns to paint lesions
  from their labels and the surrounding tissue;
- **pseudo-healthy inpainting** (``kind = 1``): the region is a random ellipsoidal blob ``blob_mm`` across in
  healthy tissue (centred at least ``blob / 2`` away from any lesion where possible), the crop's painted slice at
  any height of the blob (painting paints every slice of a region, its thin caps too); its labels are normal brain,
  so the model learns to fill a region with healthy tissue.

The target is always the real image; everything outside the region is given to the model (the context). Items are
deterministic functions of ``(seed, index)`` (the same in every worker and epoch); use many crops per subject for
variety. Subjects are normalised once at construction (per subject and sequence, robust percentiles inside the
brain -> [-1, 1], as for whole slices) and kept in memory (2 mm phantom: ~25 MB per subject).

Item keys: ``classes`` ``(2c+1, H, W)`` int64 model classes; ``images`` ``(S, 2c+1, H, W)`` float32;
``region`` ``(2c+1, H, W)`` bool; ``label`` / ``image`` / ``brain`` the central slice's classes, images and brain
(for grids and metrics); ``kind``, ``z``, ``subject_id``, ``subject_index``.

Example:
    >>> ds = LocalCropDataset(subjects, sequences=("t1n", "t2f"), scheme="brats2024")  # doctest: +SKIP
    >>> item = ds[0]; item["classes"].shape, item["images"].shape  # doctest: +SKIP
    (torch.Size([3, 64, 64]), torch.Size([2, 3, 64, 64]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio
from scipy import ndimage
from torch.utils.data import Dataset

from samraug.data.slices import prepare_subject
from samraug.intensity import Normalization
from samraug.labels import BRAIN, EDEMA, SCHEMES, LabelScheme, get_scheme
from samraug.seam import CONTEXT_FILLS, harmonic_fill
from samraug.training.data import load_training_subjects

__all__ = ["BLOB_KIND", "LESION_KIND", "LocalCropDataset", "LocalData", "prepare_local_data", "voxel_size_of"]

LESION_KIND = 0
BLOB_KIND = 1


def voxel_size_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm (column norms of the affine's 3x3 part).

    Example:
        >>> voxel_size_of(np.diag([2.0, 2.0, 3.0, 1.0]))
        (2.0, 2.0, 3.0)
    """
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((a**2).sum(0)))


def _is_ras(affine: np.ndarray) -> bool:
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    off = a - np.diag(np.diag(a))
    return bool(np.all(np.diag(a) > 0) and np.abs(off).max() <= 1e-3 * np.abs(a).max())


@dataclass
class _Subject:
    subject_id: str
    images: torch.Tensor  # (S, X, Y, Z) float32 normalised
    classes: torch.Tensor  # (X, Y, Z) uint8 model classes
    region: np.ndarray  # (X, Y, Z) bool: lesion dilated by the margin, inside the brain
    lesion_voxels: np.ndarray  # (n, 3) int
    healthy_voxels: np.ndarray  # (m, 3) int: normal brain far enough from lesion for a blob centre
    fill: torch.Tensor | None = None  # (S, X, Y, Z) float16: harmonic fill of ``region`` (context_fill harmonic)


class LocalCropDataset(Dataset):
    """2.5D crops with a region to repaint (see the module docstring).

    Args:
        subjects: ``tio.Subject``s (or mappings of arrays) with a label map in ``scheme``, on an RAS grid
            (axis-aligned, positive diagonal affine: slices are along RAS z).
        sequences: Sequence names, in the model's order.
        scheme: Label scheme of the label maps.
        conditioning: Model classes (``"native"``, the contract of local weights, or ``"samr"``).
        context_slices: ``c``: the crops hold slices ``z-c .. z+c`` (edge slices repeated beyond the volume).
        crop_size: ``(H, W)`` in voxels (a volume smaller than that is padded: images -1, background).
        crops_per_subject: Instances per subject.
        lesion_fraction: Probability of a lesion-painting crop (subjects without lesion always get blobs).
        margin_mm: Dilation of the lesion for the lesion-painting region.
        blob_mm: ``(min, max)`` blob diameter in mm.
        seed: Seed of the draws (item ``i`` uses ``(seed, i)``).
        context_fill: ``"zero"`` or ``"harmonic"``: items also hold ``fill`` ``(S, 2c+1, H, W)``, the region
            filled in 3D by :func:`samraug.seam.harmonic_fill` from the brain around it (the whole lesion region of
            the subject, or the whole blob), as painting fills it for weights with that ``context_fill``.
        normalization: How each subject's sequences are normalised (default ``Normalization()``: percentiles of
            the normal-appearing brain); the weights record it and painting uses the same.

    Example:
        >>> ds = LocalCropDataset(subjects, sequences=["t1n"], scheme="brats2024", crop_size=(64, 64))  # doctest: +SKIP
    """

    def __init__(
        self,
        subjects: Sequence[tio.Subject | Mapping[str, Any]],
        *,
        sequences: Sequence[str],
        scheme: str | LabelScheme,
        conditioning: str = "native",
        context_slices: int = 1,
        crop_size: Sequence[int] = (64, 64),
        crops_per_subject: int = 64,
        lesion_fraction: float = 0.5,
        margin_mm: float = 4.0,
        blob_mm: tuple[float, float] = (10.0, 40.0),
        seed: int = 0,
        normalization: Normalization | None = None,
        context_fill: str = "zero",
    ) -> None:
        if context_fill not in CONTEXT_FILLS:
            raise ValueError(f"context_fill must be one of {CONTEXT_FILLS}, got {context_fill!r}")
        self.context_fill = context_fill
        if not subjects:
            raise ValueError("subjects is empty; pass at least one subject with a label map")
        if int(context_slices) < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        if len(crop_size) != 2 or min(int(s) for s in crop_size) < 1:
            raise ValueError(f"crop_size must be two positive ints (H, W), got {crop_size}")
        if int(crops_per_subject) < 1:
            raise ValueError(f"crops_per_subject must be >= 1, got {crops_per_subject}")
        if not 0.0 <= float(lesion_fraction) <= 1.0:
            raise ValueError(f"lesion_fraction is a probability in [0, 1], got {lesion_fraction}")
        if not (0 < blob_mm[0] <= blob_mm[1]) or margin_mm < 0:
            raise ValueError(f"blob_mm must be 0 < min <= max and margin_mm >= 0, got {blob_mm}, {margin_mm}")
        s = get_scheme(scheme)
        self.scheme = s.name if SCHEMES.get(s.name) == s else s
        self.conditioning = conditioning
        self.n_labels = len(s.classes(conditioning))
        self.sequences = tuple(sequences)
        self.context_slices = int(context_slices)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.crops_per_subject = int(crops_per_subject)
        self.lesion_fraction = float(lesion_fraction)
        self.margin_mm = float(margin_mm)
        self.blob_mm = (float(blob_mm[0]), float(blob_mm[1]))
        self.seed = int(seed)
        self.normalization = Normalization() if normalization is None else normalization
        self.voxel_size: tuple[float, float, float] | None = None
        self._subjects = [self._prepare(subject) for subject in subjects]

    def _prepare(self, subject: tio.Subject | Mapping[str, Any]) -> _Subject:
        p = prepare_subject(
            subject,
            self.sequences,
            scheme=self.scheme,
            selection="all",
            conditioning=self.conditioning,
            normalization=self.normalization,
        )
        what = f"subject {p.subject_id!r}"
        if not _is_ras(p.affine):
            raise ValueError(
                f"{what} is not on an axis-aligned RAS grid (affine diagonal must be positive); reorient it first, "
                "e.g. torchio.ToCanonical()(subject)"
            )
        vox = voxel_size_of(p.affine)
        if self.voxel_size is None:
            self.voxel_size = vox
        elif not np.allclose(vox, self.voxel_size, atol=1e-3):
            raise ValueError(
                f"{what} has voxel size {vox} mm, the first subject {self.voxel_size}; resample to one grid"
            )
        classes = p.label.numpy()
        brain = classes > 0
        lesion = classes >= EDEMA
        margin = [max(0, round(self.margin_mm / v)) for v in vox]
        if lesion.any() and max(margin) > 0:
            structure = _ellipsoid(margin)
            region = ndimage.binary_dilation(lesion, structure=structure) & brain
        else:
            region = lesion.copy()
        # blob centres: normal brain at least half the smallest blob away from any lesion (else any normal brain)
        healthy = classes == BRAIN
        if lesion.any():
            far = ndimage.distance_transform_edt(~lesion, sampling=vox) >= self.blob_mm[0] / 2
            if (healthy & far).any():
                healthy = healthy & far
        if not healthy.any() and not lesion.any():
            raise ValueError(f"{what} has no brain voxels; check its brain mask / labels")
        fill = None
        if self.context_fill == "harmonic":
            fill = torch.from_numpy(harmonic_fill(p.images.numpy(), region, brain)).to(torch.float16)
        return _Subject(
            subject_id=p.subject_id,
            images=p.images,
            classes=p.label,
            region=region,
            lesion_voxels=np.argwhere(lesion).astype(np.int32),
            healthy_voxels=np.argwhere(healthy).astype(np.int32),
            fill=fill,
        )

    @staticmethod
    def _blob_fill(
        subj: _Subject,
        centre: np.ndarray,
        radii: np.ndarray,
        start: tuple[int, int],
        size: tuple[int, int],
        zs: np.ndarray,
    ) -> np.ndarray:
        """The blob's 3D harmonic fill on the crop's grid ``(S, len(zs), H, W)`` (0 off the blob)."""
        values, lo, hi = _box_fill(subj, centre, radii)
        axes = [np.arange(start[0], start[0] + size[0]), np.arange(start[1], start[1] + size[1]), np.asarray(zs)]
        ok = [(a >= lo[k]) & (a < hi[k]) for k, a in enumerate(axes)]
        out = np.zeros((values.shape[0], len(zs), size[0], size[1]), dtype=np.float32)
        picked = values[:, axes[0][ok[0]] - lo[0]][:, :, axes[1][ok[1]] - lo[1]][..., axes[2][ok[2]] - lo[2]]
        index = np.ix_(np.arange(values.shape[0]), np.flatnonzero(ok[2]), np.flatnonzero(ok[0]), np.flatnonzero(ok[1]))
        out[index] = picked.transpose(0, 3, 1, 2)
        return out

    @property
    def subject_ids(self) -> list[str]:
        return [s.subject_id for s in self._subjects]

    def __len__(self) -> int:
        return len(self._subjects) * self.crops_per_subject

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} crops")
        si = index // self.crops_per_subject
        subj = self._subjects[si]
        rng = np.random.default_rng([self.seed, int(index)])
        vox = self.voxel_size or (1.0, 1.0, 1.0)
        lesion_ok = len(subj.lesion_voxels) > 0
        kind = LESION_KIND if lesion_ok and rng.random() < self.lesion_fraction else BLOB_KIND
        shape = tuple(subj.classes.shape)
        if kind == LESION_KIND or len(subj.healthy_voxels) == 0:
            kind = LESION_KIND
            centre = subj.lesion_voxels[rng.integers(len(subj.lesion_voxels))]
        else:
            centre = subj.healthy_voxels[rng.integers(len(subj.healthy_voxels))]
        painted_z = int(centre[2])
        radii = None
        if kind == BLOB_KIND:
            diameter = rng.uniform(*self.blob_mm)
            radii = diameter / 2 * rng.uniform(0.8, 1.2, size=3) / np.asarray(vox)
            # any slice of the blob, not only its middle: painting paints every slice of a region, the thin caps too
            reach = int(np.floor(0.9 * radii[2]))
            painted_z = int(np.clip(painted_z + int(rng.integers(-reach, reach + 1)), 0, shape[2] - 1))
        x0, y0 = (_crop_start(int(centre[a]), shape[a], self.crop_size[a], rng) for a in (0, 1))
        zs = np.clip(np.arange(-self.context_slices, self.context_slices + 1) + painted_z, 0, shape[2] - 1)
        h, w = self.crop_size
        xs = slice(max(x0, 0), min(x0 + h, shape[0]))
        ys = slice(max(y0, 0), min(y0 + w, shape[1]))
        dst = (slice(xs.start - x0, xs.stop - x0), slice(ys.start - y0, ys.stop - y0))
        classes = torch.zeros(len(zs), h, w, dtype=torch.int64)
        images = torch.full((len(self.sequences), len(zs), h, w), -1.0)
        classes[:, dst[0], dst[1]] = subj.classes[xs, ys][..., zs].permute(2, 0, 1).long()
        images[:, :, dst[0], dst[1]] = subj.images[:, xs, ys][..., zs].permute(0, 3, 1, 2)
        region = torch.zeros(len(zs), h, w, dtype=torch.bool)
        fill = torch.zeros(images.shape) if self.context_fill == "harmonic" else None
        if kind == LESION_KIND:
            region[:, dst[0], dst[1]] = torch.from_numpy(subj.region[xs, ys][..., zs]).permute(2, 0, 1)
            if fill is not None and subj.fill is not None:
                fill[:, :, dst[0], dst[1]] = subj.fill[:, xs, ys][..., zs].permute(0, 3, 1, 2).float()
        else:
            assert radii is not None
            blob = _blob_mask(np.arange(x0, x0 + h), np.arange(y0, y0 + w), zs, centre, radii)
            region = torch.from_numpy(blob) & (classes > 0)
            if fill is not None:
                fill[:] = torch.from_numpy(self._blob_fill(subj, centre, radii, (x0, y0), (h, w), zs))
        c = self.context_slices
        return {
            **({"fill": torch.where(region[None], fill, torch.zeros(()))} if fill is not None else {}),
            "classes": classes,
            "images": images.float(),
            "region": region,
            "label": classes[c].clone(),
            "image": images[:, c].clone().float(),
            "brain": classes[c] > 0,
            "kind": kind,
            "z": painted_z,
            "subject_id": subj.subject_id,
            "subject_index": si,
        }


def _blob_mask(xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The ellipsoidal blob (``centre``, ``radii`` in voxels) sampled at voxel indices ``xs``, ``ys``, ``zs``, as
    ``(len(zs), len(xs), len(ys))`` bool: the one definition of a blob for its crop and its fill."""
    gx = (np.asarray(xs) - centre[0]) / radii[0]
    gy = (np.asarray(ys) - centre[1]) / radii[1]
    gz = (np.asarray(zs) - centre[2]) / radii[2]
    return gz[:, None, None] ** 2 + gx[None, :, None] ** 2 + gy[None, None, :] ** 2 <= 1.0


def _box_fill(subj: _Subject, centre: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 3D harmonic fill of a blob (ellipsoid ``centre``/``radii`` in voxels, inside the brain) on its bounding
    box plus one voxel: ``(fill (S, bx, by, bz), box start, box stop)``."""
    shape = np.asarray(subj.classes.shape)
    reach = np.ceil(radii).astype(np.int64) + 1
    lo = np.maximum(np.asarray(centre) - reach, 0)
    hi = np.minimum(np.asarray(centre) + reach + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    inside = _blob_mask(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), centre, radii).transpose(1, 2, 0)
    brain = subj.classes[box].numpy() > 0
    return harmonic_fill(subj.images[(slice(None), *box)].numpy(), inside & brain, brain), lo, hi


def _crop_start(centre: int, size: int, crop: int, rng: np.random.Generator) -> int:
    """Start of a crop of ``crop`` voxels holding ``centre``, jittered by up to a quarter crop, inside the volume
    when it is large enough (else centred, padded)."""
    if size <= crop:
        return (size - crop) // 2
    start = centre - crop // 2 + int(rng.integers(-(crop // 4), crop // 4 + 1))
    return int(min(max(start, 0), size - crop))


def _ellipsoid(radii: Sequence[int]) -> np.ndarray:
    r = [max(int(v), 0) for v in radii]
    grids = np.ogrid[tuple(slice(-v, v + 1) for v in r)]
    total = sum((g / max(v, 1)) ** 2 for g, v in zip(grids, r, strict=True))
    return total <= 1.0


@dataclass
class LocalData:
    """Training data of a local-task recipe run (:func:`prepare_local_data`)."""

    train: LocalCropDataset
    val: LocalCropDataset | None
    split: dict[str, list[str]]
    sequences: tuple[str, ...]
    scheme: str
    description: str
    simulated: bool
    voxel_size: tuple[float, float, float]
    conditioning: str = "native"


def prepare_local_data(
    data: str | Path = "phantom",
    *,
    context_slices: int = 1,
    crop_size: Sequence[int] = (64, 64),
    crops_per_subject: int = 64,
    val_crops_per_subject: int = 16,
    lesion_fraction: float = 0.5,
    margin_mm: float = 4.0,
    blob_mm: tuple[float, float] = (10.0, 40.0),
    conditioning: str = "native",
    seed: int = 0,
    normalization: Normalization | None = None,
    context_fill: str = "zero",
    **subject_kwargs: Any,
) -> LocalData:
    """Subjects (:func:`samraug.training.data.load_training_subjects`; ``subject_kwargs`` as there: ``scheme``,
    ``n_subjects``, ``resolution``, ``sequences``, ``split_seed``, ``val_fraction``, ``split_file``, ``out_dir``, ...)
    -> training and validation :class:`LocalCropDataset`\\ s (validation: fixed crops of the held-out subjects,
    another seed).

    Example:
        >>> d = prepare_local_data("phantom", n_subjects=8, out_dir="/tmp/run")  # doctest: +SKIP
    """
    loaded = load_training_subjects(data, **subject_kwargs)
    common = {
        "sequences": loaded.sequences,
        "scheme": loaded.scheme,
        "conditioning": conditioning,
        "context_slices": context_slices,
        "crop_size": crop_size,
        "lesion_fraction": lesion_fraction,
        "margin_mm": margin_mm,
        "blob_mm": blob_mm,
        "normalization": normalization,
        "context_fill": context_fill,
    }
    train = LocalCropDataset(loaded.train, crops_per_subject=crops_per_subject, seed=seed, **common)
    val = (
        LocalCropDataset(loaded.val, crops_per_subject=val_crops_per_subject, seed=seed + 1_000_003, **common)
        if loaded.val
        else None
    )
    assert train.voxel_size is not None
    split = loaded.split
    description = (
        f"{loaded.description}; split by patient: {len(split['train'])} train / {len(split['val'])} val / "
        f"{len(split['test'])} test; local crops {train.crop_size[0]}x{train.crop_size[1]}, context {context_slices} "
        f"slice(s) each side, {crops_per_subject} per subject, {lesion_fraction:.0%} lesion painting, blobs "
        f"{blob_mm[0]:g}-{blob_mm[1]:g} mm; {conditioning} conditioning; context fill {context_fill}"
    )
    return LocalData(
        train,
        val,
        split,
        loaded.sequences,
        loaded.scheme,
        description,
        loaded.simulated,
        train.voxel_size,
        conditioning,
    )
