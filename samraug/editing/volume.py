"""Reading label maps: validation, the lesion mask and its bounding box, the brain, donors.

A :class:`LabelReader` turns a user's label map (numpy or torch, any integer or integer-valued float dtype) and
brain mask into a :class:`Volume` with a handful of vectorised passes over the volume (min/max, one comparison
per value outside the scheme, the lesion mask, the bounding box); everything after works on the lesion's box.

Example:
    >>> import numpy as np
    >>> from samraug.editing.validity import class_lut
    >>> from samraug.labels import get_scheme
    >>> scheme = get_scheme("brats2021")
    >>> reader = LabelReader(scheme, class_lut(scheme), min_fragment=1)
    >>> seg = np.zeros((6, 6), np.uint8); seg[2:4, 1:3] = 4
    >>> vol = reader.volume(seg, np.ones((6, 6), bool))
    >>> vol.lo.tolist(), vol.hi.tolist(), vol.crop().tolist()
    ([2, 1], [4, 3], [[4, 4], [4, 4]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from samraug.labels import BACKGROUND, EDEMA, LabelScheme

from .policy import randint
from .validity import as_numpy, tumour_edema_contact

__all__ = ["BrainInfo", "Donor", "LabelReader", "Volume", "bbox", "change_boxes", "slices"]


@dataclass
class BrainInfo:
    """Brain-mask summaries, computed on demand."""

    mask: np.ndarray
    _profiles: dict[int, np.ndarray] = field(default_factory=dict)

    def profile(self, axis: int) -> np.ndarray:
        if axis not in self._profiles:
            others = tuple(a for a in range(self.mask.ndim) if a != axis)
            self._profiles[axis] = np.count_nonzero(self.mask, axis=others)
        return self._profiles[axis]

    def centroid(self, axis: int) -> float:
        p = self.profile(axis)
        return float((np.arange(len(p)) * p).sum() / p.sum())

    def extent(self, axis: int) -> int:
        nz = np.flatnonzero(self.profile(axis))
        return int(nz[-1] - nz[0] + 1)

    def sample_voxel(self, generator: torch.Generator | None) -> list[int]:
        """A brain voxel drawn uniformly (one ``torch.randint``), found without listing all brain voxels."""
        cum = np.cumsum(self.profile(0))
        k = randint(generator, 0, int(cum[-1]))
        x = int(np.searchsorted(cum, k, side="right"))
        k -= int(cum[x - 1]) if x else 0
        rest = np.unravel_index(int(np.flatnonzero(self.mask[x])[k]), self.mask.shape[1:])
        return [x, *(int(i) for i in rest)]


@dataclass
class Volume:
    """A validated label map: numpy values, brain, lesion mask and lesion bounding box."""

    arr: np.ndarray  # the user's values (original dtype, never modified)
    ints: np.ndarray  # the same values as integers
    brain: BrainInfo
    lesion: np.ndarray
    lo: np.ndarray | None  # lesion bounding box [lo, hi), None without lesion
    hi: np.ndarray | None
    kind: tuple[bool, Any, Any]  # (is_torch, device, dtype)
    _contact: Any = False  # cached tumour/edema contact (False: not computed yet)

    def crop(self) -> np.ndarray:
        """The lesion values on its bounding box, ``-1`` where there is no lesion."""
        box = slices(self.lo, self.hi)
        return np.where(self.lesion[box], self.ints[box].astype(np.int64), -1)

    def contact(self, lut: np.ndarray, min_fragment: int) -> tuple[bool, bool] | None:
        """The lesion's tumour/edema contact (rule 7 of :mod:`samraug.editing.validity`), computed once."""
        if self._contact is False:
            self._contact = None if self.lo is None else tumour_edema_contact(lut[self.crop()], min_fragment)
        return self._contact


@dataclass
class Donor:
    """A donor's lesion crop (``-1`` outside the lesion), its position, grid and tumour/edema contact."""

    crop: np.ndarray | None
    lo: np.ndarray | None
    shape: tuple[int, ...]
    contact: tuple[bool, bool] | None  # tumour/edema contact of the donor lesion (the edema rule's reference)


def slices(lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...]:
    """The index of the box ``[lo, hi)``."""
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def change_boxes(shape: np.ndarray, *bboxes: tuple[Any, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes (lesion bounding boxes grown by one voxel) that hold every change of an edit: one box when the
    grown boxes overlap, else one per box, so distant old and new lesions are not checked on a huge box."""
    boxes = [(np.maximum(lo - 1, 0), np.minimum(hi + 1, shape)) for lo, hi in bboxes if lo is not None]
    if len(boxes) == 2 and np.all(np.maximum(boxes[0][0], boxes[1][0]) < np.minimum(boxes[0][1], boxes[1][1])):
        boxes = [(np.minimum(boxes[0][0], boxes[1][0]), np.maximum(boxes[0][1], boxes[1][1]))]
    return boxes


def bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Bounding box ``[lo, hi)`` of a mask; each axis is searched within the box found so far."""
    lo, hi = np.zeros(mask.ndim, dtype=np.int64), np.array(mask.shape, dtype=np.int64)
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(np.any(mask[slices(lo, hi)], axis=others))
        if len(nz) == 0:
            return None, None
        lo[axis], hi[axis] = lo[axis] + nz[0], lo[axis] + nz[-1] + 1
    return lo, hi


class LabelReader:
    """Validates and reads the label maps of one scheme (see the module docstring)."""

    def __init__(self, scheme: LabelScheme, lut: np.ndarray, min_fragment: int) -> None:
        self.scheme = scheme
        self._lut = lut
        self.min_fragment = min_fragment
        self._lesion_values = [v for v in scheme.values if scheme.samr_of(v) >= EDEMA]
        self._other_values = [v for v in scheme.values if scheme.samr_of(v) < EDEMA]
        self._background_values = [v for v in scheme.values if scheme.samr_of(v) == BACKGROUND]

    def volume(self, label: Any, brain: Any, what: str = "label map") -> Volume:
        """Validate a label map and its brain mask; raise a ``ValueError`` that says what to fix."""
        if not isinstance(label, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(label).__name__}")
        kind = (True, label.device, label.dtype) if isinstance(label, torch.Tensor) else (False, None, label.dtype)
        arr = as_numpy(label)
        ints = self.values(arr, what)
        lesion = self.lesion(ints)
        mask = self.brain(brain, ints, lesion)
        lo, hi = bbox(lesion)
        return Volume(arr, ints, BrainInfo(mask), lesion, lo, hi, kind)

    def values(self, arr: np.ndarray, what: str) -> np.ndarray:
        """Integer values of ``arr``, checked against the scheme in a few vectorised passes."""
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise ValueError(f"{what} must be a non-empty 2D (X, Y) or 3D (X, Y, Z) array, got shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                self._reject(arr, what)
            ints = arr.astype(np.int64)
            if not np.array_equal(ints, arr):
                self._reject(arr, what)
        elif arr.dtype.kind in "iu":
            ints = arr
        else:
            raise ValueError(f"{what} has dtype {arr.dtype}; pass integer label values of scheme {self.scheme.name!r}")
        mn, mx = int(ints.min()), int(ints.max())
        allowed = set(self.scheme.values)
        if mn < 0 or mx > max(allowed) or any((ints == v).any() for v in range(mn, mx + 1) if v not in allowed):
            self._reject(arr, what)
        return ints

    def _reject(self, arr: np.ndarray, what: str) -> None:
        self.scheme.validate(arr, what)  # raises with the offending values
        raise ValueError(f"{what} holds values that are not labels of scheme {self.scheme.name!r}")

    def lesion(self, ints: np.ndarray) -> np.ndarray:
        """The lesion mask (SAMR edema, cavity or tumour), with one comparison when the values allow it."""
        if not self._lesion_values:
            return np.zeros(ints.shape, dtype=bool)
        if self._other_values and max(self._other_values) < min(self._lesion_values):
            return ints > max(self._other_values)
        lesion = np.zeros(ints.shape, dtype=bool)
        for v in self._lesion_values:
            lesion |= ints == v
        return lesion

    def brain(self, brain: Any, ints: np.ndarray, lesion: np.ndarray) -> np.ndarray:
        """The boolean brain mask: the given one, or the labels' own for schemes that encode normal brain."""
        s = self.scheme
        derived = None
        if s.has_brain_label:
            derived = np.ones(ints.shape, dtype=bool)
            for v in self._background_values:
                derived &= ints != v
        if brain is None:
            if derived is None:
                raise ValueError(
                    f"scheme {s.name!r} does not encode normal brain: pass brain=<boolean brain mask of shape "
                    f"{tuple(ints.shape)}> (e.g. the non-zero voxels of the images)"
                )
            mask = derived
        else:
            mask = self.bool_mask(brain, ints.shape)
            if derived is not None:
                n = int(np.count_nonzero(derived != (mask | lesion)))
                if n:
                    raise ValueError(
                        f"brain mask disagrees with the brain encoded in the {s.name!r} labels at {n} voxels; "
                        "pass brain=None to read the brain from the labels"
                    )
        if not mask.any():
            raise ValueError("brain mask is empty; pass the brain of this volume (e.g. the non-zero image voxels)")
        return mask

    @staticmethod
    def bool_mask(brain: Any, shape: tuple[int, ...], what: str = "brain mask") -> np.ndarray:
        """A boolean (or 0/1) mask of ``shape`` as a numpy bool array."""
        if not isinstance(brain, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(brain).__name__}")
        b = as_numpy(brain)
        if b.shape != tuple(shape):
            raise ValueError(f"{what} shape {b.shape} does not match label map shape {tuple(shape)}")
        if b.dtype == bool:
            return b
        if b.dtype.kind not in "iuf":
            raise ValueError(f"{what} has dtype {b.dtype}; pass a boolean mask")
        if b.dtype.kind == "f" and not np.isfinite(b).all():
            raise ValueError(f"{what} contains NaN or inf; pass a boolean mask (e.g. image != 0)")
        if not np.all((b == 0) | (b == 1)):
            raise ValueError(
                f"{what} must be boolean or 0/1, got values in [{b.min()}, {b.max()}]; pass e.g. brain=image != 0"
            )
        return b != 0

    def donor(self, label: Any, brain: Any = None) -> Donor:
        """A donor's lesion crop (its brain mask, if given, is only checked for its shape)."""
        if not isinstance(label, (np.ndarray, torch.Tensor)):
            raise TypeError(f"donor label must be a numpy array or torch tensor, got {type(label).__name__}")
        ints = self.values(as_numpy(label), "donor label map")
        if brain is not None:
            self.bool_mask(brain, ints.shape, "donor brain mask")
        lesion = self.lesion(ints)
        lo, hi = bbox(lesion)
        if lo is None:
            return Donor(None, None, ints.shape, None)
        box = slices(lo, hi)
        crop = np.where(lesion[box], ints[box].astype(np.int64), -1)
        return Donor(crop, lo, ints.shape, tumour_edema_contact(self._lut[crop], self.min_fragment))
