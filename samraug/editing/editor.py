"""LesionEditor: mirror, scale, move, rotate, perturb, swap and remove lesions in label maps (2D and 3D).

Conventions and decisions:

* **Arrays.** A label map is a numpy array or torch tensor of shape ``(X, Y)`` or ``(X, Y, Z)`` in a
  :class:`~samraug.labels.LabelScheme`; results have the same type, dtype, shape, device and scheme. Axis 0 is
  left-right (RAS+ volumes as stored in NIfTI, as everywhere in samraug), so the mid-sagittal plane is a plane
  ``x = x0`` of axis 0.
* **Brain.** A boolean brain mask of the same shape is required unless the scheme encodes normal brain
  (``"samr"``), where the brain is read from the labels. Lesion voxels always count as brain.
* **Lesion** = the voxels of SAMR class edema, cavity or tumour. Every operation replaces the whole lesion: the
  old lesion is vacated (it becomes normal brain; in BraTS schemes label 0 inside the brain) and the new one is
  written over normal brain. Voxels that are lesion in neither map keep their value.
* **Sub-labels move with the lesion.** Geometric operations resample the user's label *values* (ET, NETC, ...),
  not SAMR classes, categorically (:mod:`samraug.editing.geometry`): mirrors and integer moves are exact voxel
  permutations; scaling, rotation, sub-voxel moves and perturbations interpolate each value's indicator linearly
  and pick the class, then the value, with the largest weight.
* **Scaling** scales the *whole* lesion (tumour, edema and cavity together) about the tumour centroid by
  ``factor ** (1 / ndim)`` per axis, so the tumour volume scales by ``factor`` and the edema shell and cavity
  follow with the same geometry (paper Fig. 3 d, f).
* **Rotation** is about the tumour centroid; in 3D a single angle rotates within axial slices (about axis 2).
* **Perturbation** warps the lesion only, with a smooth random displacement field (cubic B-spline of random
  control vectors, largest displacement ``strength`` voxels) drawn from a ``torch.Generator`` seeded by ``seed``.
* **Outside the brain: clip, within limits.** Lesion parts that land outside the brain (or the array) are
  clipped, then fragments smaller than ``min_fragment`` voxels are dropped. If that removes more than
  ``max_clip`` of the lesion or of the tumour, the edit is rejected. A rejected edit returns the *unedited*
  input with ``record["applied"] = False`` and the reason; random placements (``swap(at="random")`` and
  :meth:`LesionEditor.random_edit`) first retry up to ``max_retries`` times. Every applied edit passes
  :func:`~samraug.editing.validity.check_valid` before it is returned.
* **Random edits are composed.** :meth:`LesionEditor.random_edit` composes the drawn operations (swap, mirror,
  scale, rotate, perturb, move) into one transform, so the lesion is resampled and validated once: no
  compounding interpolation, and the cost of one edit.
* **Records** are plain JSON-able dicts ``{"op": ..., <parameters>, "applied": bool, "reason": str | None}``
  holding every parameter actually used (e.g. the estimated mirror plane, the drawn perturbation seed), so
  :meth:`LesionEditor.replay` reproduces the output bitwise. Swaps store the donor's index in the ``donors``
  list, never the donor array.
* **Speed.** All resampling runs on the lesion's bounding box (plus a margin), so cost scales with the lesion,
  not the volume; only a few vectorised passes (validation, lesion mask, bounding box, copy) touch the volume.

Example:
    >>> import numpy as np
    >>> from samraug.editing import LesionEditor
    >>> brain = np.zeros((32, 32), bool); brain[4:28, 4:28] = True
    >>> seg = np.zeros((32, 32), np.uint8); seg[8:16, 8:16] = 2; seg[10:14, 10:14] = 4  # brats2021
    >>> editor = LesionEditor("brats2021", min_fragment=4)
    >>> res = editor.mirror(seg, brain)
    >>> res.record
    {'op': 'mirror', 'axis': 0, 'plane': 15.5, 'applied': True, 'reason': None}
    >>> bool((res.label[16:24, 8:16] == seg[8:16, 8:16][::-1]).all()), res.label.dtype
    (True, dtype('uint8'))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from samraug.labels import BACKGROUND, BRAIN, TUMOR, LabelScheme, get_scheme

from .geometry import rotation_matrix, warp
from .policy import (
    MAX_ANGLE,
    MAX_PERTURB_SMOOTHNESS,
    MAX_PERTURB_STRENGTH,
    MAX_SCALE_FACTOR,
    MAX_SHIFT,
    MIN_PERTURB_SMOOTHNESS,
    OP_ORDER,
    EditPolicy,
    randint,
    uniform,
)
from .validity import check_valid, class_lut, full_structure
from .volume import Donor, LabelReader, Volume, bbox, change_boxes, slices

__all__ = ["EditResult", "LesionEditor", "donor_of", "donors_of"]

NO_LESION = "the label map has no lesion"
REMOVE_ONLY = "only remove was drawn: nothing to insert"


@dataclass(frozen=True)
class EditResult:
    """An edited label map (same type, dtype and shape as the input) and the JSON-able record of the edit."""

    label: np.ndarray | torch.Tensor
    record: dict[str, Any]


def donor_of(record: Mapping[str, Any]) -> int | None:
    """The index (into the ``donors`` list) of the donor whose lesion an applied edit used, else ``None``.

    Reads records of :meth:`LesionEditor.random_edit` and of :meth:`LesionEditor.swap` (called with ``donor=``).

    Example:
        >>> donor_of({"op": "random", "swap": {"donor": 2, "at": "donor", "center": None}, "applied": True})
        2
        >>> donor_of({"op": "mirror", "axis": 0, "plane": 60.0, "applied": True, "reason": None}) is None
        True
    """
    if not record.get("applied"):
        return None
    if record.get("op") == "swap":
        return None if record.get("donor") is None else int(record["donor"])
    swap = record.get("swap")
    return None if not swap else int(swap["donor"])


def donors_of(record: Mapping[str, Any]) -> list[int]:
    """The indices of every donor an applied edit used: :func:`donor_of` of the edit itself, then those of the
    further insertions of an inserting edit (``EditPolicy(n_insert=...)``, the record's ``"more"``), each once.

    Example:
        >>> more = {"op": "random", "swap": {"donor": 1, "at": "random", "center": [3, 4, 5]}, "applied": True}
        >>> rec = {"op": "random", "swap": None, "applied": True, "insert": True, "more": [more]}
        >>> donors_of(rec)
        [1]
    """
    if not record.get("applied"):
        return []
    found = [donor_of(record), *(donor_of(r) for r in record.get("more") or ())]
    return list(dict.fromkeys(d for d in found if d is not None))


def _on_grid(donors: Any, idx: int, donor: Donor, shape: tuple[int, ...]) -> bool:
    """Whether a swap may keep donor ``idx``'s lesion at its own place: the donor has the recipient's shape and, where
    the pool can tell (:class:`~samraug.augment.donors.RecipientDonors`), its affine."""
    if tuple(donor.shape) != tuple(shape):
        return False
    on_grid = getattr(donors, "on_grid", None)
    return on_grid is None or bool(on_grid(idx))


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v}")
    return v


def _short(v: float) -> float:
    """Round a sampled float to 6 significant digits: readable records, and what is recorded is what is used."""
    return float(f"{v:.6g}")


#: The parameters every applied :meth:`LesionEditor.random_edit` record holds (None for operations not drawn).
_RANDOM_KEYS: tuple[str, ...] = ("swap", "mirror", "factor", "angles", "perturb", "shift")


class LesionEditor:
    """Edit the lesion of label maps, keeping every output valid (see :mod:`samraug.editing.validity`).

    Args:
        scheme: The label scheme of the maps (``"brats2021"``, ``"brats2023"``, ``"brats2024"``, ``"samr"`` or a
            :class:`~samraug.labels.LabelScheme`). Outputs are in the same scheme.
        min_fragment: Lesion components smaller than this many voxels are dropped from every edit.
        max_retries: Most attempts of a random placement before giving up (returning the input unedited).
        max_clip: Largest fraction of the lesion, or of the tumour, that may be clipped away because it falls
            outside the brain; beyond it the edit is rejected.
        policy: The :class:`EditPolicy` of :meth:`random_edit` (default ``EditPolicy()``).

    Example:
        >>> import numpy as np, torch
        >>> from samraug.editing import LesionEditor
        >>> brain = np.zeros((48, 48), bool); brain[4:44, 4:44] = True
        >>> r = np.hypot(*np.indices((48, 48)) - 24.0)
        >>> seg = np.where(r < 5, 1, np.where(r < 8, 2, 0))  # brats2023: NCR core, edema shell
        >>> editor = LesionEditor("brats2023", min_fragment=4)
        >>> int((seg == 1).sum()), int((editor.scale(seg, brain, factor=2.0).label == 1).sum())
        (69, 145)
        >>> res = editor.random_edit(seg, brain, generator=torch.Generator().manual_seed(0))
        >>> bool((editor.replay(seg, brain, res.record).label == res.label).all())
        True
    """

    def __init__(
        self,
        scheme: str | LabelScheme,
        *,
        min_fragment: int = 10,
        max_retries: int = 20,
        max_clip: float = 0.25,
        policy: EditPolicy | None = None,
    ) -> None:
        self.scheme = get_scheme(scheme)
        if int(min_fragment) < 1:
            raise ValueError(f"min_fragment={min_fragment} must be >= 1 voxel")
        if int(max_retries) < 1:
            raise ValueError(f"max_retries={max_retries} must be >= 1")
        if not 0.0 <= float(max_clip) < 1.0:
            raise ValueError(f"max_clip={max_clip} must be a fraction in [0, 1)")
        if policy is not None and not isinstance(policy, EditPolicy):
            raise ValueError(f"policy must be an EditPolicy, got {type(policy).__name__}")
        self.min_fragment = int(min_fragment)
        self.max_retries = int(max_retries)
        self.max_clip = float(max_clip)
        self.policy = policy if policy is not None else EditPolicy()
        s = self.scheme
        self._lut = class_lut(s)
        self._reader = LabelReader(s, self._lut, self.min_fragment)
        self._normal = s.defaults[BRAIN] if s.has_brain_label else s.defaults[BACKGROUND]

    def __repr__(self) -> str:
        return (
            f"LesionEditor({self.scheme.name!r}, min_fragment={self.min_fragment}, max_retries={self.max_retries}, "
            f"max_clip={self.max_clip}, policy={self.policy})"
        )

    # ------------------------------------------------------------------ public operations
    def mirror(self, label: Any, brain: Any = None, *, axis: int = 0, plane: float | None = None) -> EditResult:
        """Mirror the lesion across the mid-sagittal plane ``x = plane`` of ``axis`` (0: left-right).

        ``plane`` defaults to the brain mask's centroid along ``axis`` (not the array centre), rounded to a
        half voxel so that the mirror is an exact voxel permutation: mirroring twice restores the lesion.
        """
        vol = self._reader.volume(label, brain)
        record = {"op": "mirror", **self._mirror_params(vol, axis, plane)}
        return self._result(vol, *self._edit(vol, record, mirror=record))

    def scale(self, label: Any, brain: Any = None, *, factor: float) -> EditResult:
        """Scale the tumour *volume* by ``factor`` (e.g. 0.5 or 2.0); edema and cavity scale with it.

        The whole lesion is scaled about the tumour centroid by ``factor ** (1 / ndim)`` per axis.
        """
        vol = self._reader.volume(label, brain)
        record = {"op": "scale", "factor": self._factor(factor)}
        return self._result(vol, *self._edit(vol, record, factor=record["factor"]))

    def move(self, label: Any, brain: Any = None, *, shift: Sequence[float]) -> EditResult:
        """Translate the lesion by ``shift`` voxels (one number per axis; integers move it exactly)."""
        vol = self._reader.volume(label, brain)
        record = {"op": "move", "shift": self._shift(shift, vol.ints.ndim)}
        return self._result(vol, *self._edit(vol, record, shift=record["shift"]))

    def rotate(self, label: Any, brain: Any = None, *, angles: float | Sequence[float]) -> EditResult:
        """Rotate the lesion about the tumour centroid by ``angles`` degrees.

        2D: one angle. 3D: one angle (within axial slices, about axis 2) or three (about axes 0, 1, 2).
        """
        vol = self._reader.volume(label, brain)
        record = {"op": "rotate", "angles": self._angles(angles, vol.ints.ndim)}
        return self._result(vol, *self._edit(vol, record, angles=record["angles"]))

    def perturb(
        self,
        label: Any,
        brain: Any = None,
        *,
        strength: float = 2.0,
        smoothness: float = 8.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> EditResult:
        """Deform the lesion's shape smoothly (elastic): largest displacement ``strength`` voxels, control
        points every ``smoothness`` voxels. ``seed`` (drawn from ``generator`` when None) fixes the field."""
        vol = self._reader.volume(label, brain)
        if seed is None:
            seed = randint(generator, 0, 2**31 - 1)
        record = {"op": "perturb", **self._perturb_params(strength, smoothness, seed)}
        return self._result(vol, *self._edit(vol, record, perturb=record))

    def swap(
        self,
        label: Any,
        brain: Any = None,
        donor_label: Any = None,
        donor_brain: Any = None,
        *,
        at: str = "donor",
        center: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        donor: int | None = None,
    ) -> EditResult:
        """Replace the lesion by the lesion of ``donor_label`` (another patient, same scheme).

        Args:
            at: ``"donor"``: at the donor's own voxel location (both maps on the same grid, e.g. co-registered
                BraTS data). ``"random"``: the donor's tumour centroid goes to ``center``, or, when ``center`` is
                None, to a brain voxel drawn from ``generator``, retried up to ``max_retries`` times.
            donor_brain: Optional; only checked for its shape (the donor lesion is read from its labels).
            donor: Index of the donor in the ``donors`` list you will give :meth:`replay`; stored in the record.
        """
        if donor_label is None:
            raise ValueError("swap needs donor_label=<the donor's label map in the same scheme>")
        vol = self._reader.volume(label, brain)
        d = self._reader.donor(donor_label, donor_brain)
        record = {"op": "swap", **self._swap_params(vol, d, donor, at, center)}
        if at == "donor" or center is not None:
            return self._result(vol, *self._edit(vol, record, swap=record, donor=d))
        attempts = 0
        while attempts < self.max_retries:
            attempts += 1
            record["center"] = vol.brain.sample_voxel(generator)
            out, record = self._edit(vol, record, swap=record, donor=d)
            if out is not None:
                break
        record["attempts"] = attempts
        if out is None:
            record.update(center=None, reason=f"no valid placement in {attempts} attempts; last: {record['reason']}")
        return self._result(vol, out, record)

    def remove(self, label: Any, brain: Any = None) -> EditResult:
        """Remove the lesion: every lesion voxel becomes normal brain (a healthy variant)."""
        vol = self._reader.volume(label, brain)
        return self._result(vol, *self._remove(vol))

    # ------------------------------------------------------------------ random policy and replay
    def random_edit(
        self,
        label: Any,
        brain: Any = None,
        *,
        donors: Sequence[Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> EditResult:
        """Apply a random edit drawn from ``self.policy``.

        Each operation of :data:`~samraug.editing.policy.OP_ORDER` is drawn with its probability. ``remove``,
        when drawn, is the whole edit. Otherwise the drawn operations are composed, in the order swap, mirror,
        scale, rotate, perturb, move, into ONE transform of the (donor's or own) lesion, so the lesion is
        resampled and validated once, without compounding interpolation. Their parameters are drawn from the
        policy's ranges, all again on each of up to ``max_retries`` attempts, until the edit is valid; when none
        is, the input comes back unedited with the reason.

        All randomness comes from ``generator`` through ``torch.rand``/``torch.randint`` (torch's global RNG when
        None, which DataLoader seeds per worker). The record, ``{"op": "random", "drawn": [...], "swap": {...},
        "mirror": {...}, "factor": ..., "angles": [...], "perturb": {...}, "shift": [...], "attempts": n,
        "applied": ..., "reason": ...}`` (``None`` for operations not drawn) holds every parameter, and
        :meth:`replay` reproduces the result from it exactly. With ``policy.p_insert > 0`` it also holds
        ``"insert"``: True when the transformed lesion was added beside the own lesion (which is kept as it is; the
        new one fills in around it) instead of replacing it; with ``policy.n_insert > 1`` an applied insertion also
        holds ``"more"``, the records of the further insertions (each a random edit record, ``"insert": True``).

        Args:
            donors: Donor label maps for swaps (same scheme and dimension): a list of label maps or of
                ``(label, brain)`` pairs. The record stores the donor's index in this list. A pool with
                ``on_grid(i)`` (:class:`~samraug.augment.donors.RecipientDonors`) tells which donors share the
                recipient's grid: a swap keeps only their lesions at the donor's place.
        """
        vol = self._reader.volume(label, brain)
        out, rec = self._random_once(vol, generator, donors)
        if out is not None and rec.get("insert") and self.policy.n_insert > 1:
            more = []
            for _ in range(self.policy.n_insert - 1):
                extra, extra_rec = self._random_once(vol, generator, donors, insert=True)
                more.append(extra_rec)
                if extra is not None:
                    out = self._merge_insertion(vol, out, extra)
            rec["more"] = more
        return self._result(vol, out, rec)

    def _random_once(
        self, vol: Volume, g: torch.Generator | None, donors: Sequence[Any] | None, *, insert: bool | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        """One random edit of ``vol``'s own lesion (or a donor's): ``(output or None, record)``. ``insert=True``: a
        further lesion of an inserting edit (the insertion not drawn, a drawn ``remove`` inserts nothing)."""
        drawn = [op for op in OP_ORDER if uniform(g, 0.0, 1.0) < self.policy.probability(op)]
        if "remove" in drawn:
            drawn = ["remove"]
        elif not donors:
            drawn = [op for op in drawn if op != "swap"]
        record: dict[str, Any] = {"op": "random", "drawn": drawn}
        if insert:
            record["insert"] = True
        if not drawn or (insert and drawn == ["remove"]):
            return None, {**record, "applied": False, "reason": "no operation was drawn" if not drawn else REMOVE_ONLY}
        if drawn == ["remove"]:
            out, rec = self._remove(vol)
            return out, {**record, "remove": True, "applied": rec["applied"], "reason": rec["reason"]}
        if insert is None and self.policy.p_insert > 0:  # drawn only then: policies without it keep their stream
            record["insert"] = uniform(g, 0.0, 1.0) < self.policy.p_insert
        if "swap" not in drawn and vol.lo is None:
            return None, {**record, "applied": False, "reason": NO_LESION}
        has_random = any(op in drawn for op in ("scale", "rotate", "perturb", "move")) or (
            "swap" in drawn and (len(donors) > 1 or "random" in self.policy.swap_at)
        )
        cache: dict[int, Donor] = {}
        tries = self.max_retries if has_random else 1
        attempts = 0
        while attempts < tries:
            attempts += 1
            params = self._sample(drawn, vol, g, donors, cache)
            out, rec = self._run({**record, **params}, vol, donors, cache)
            if out is not None:
                break
        rec["attempts"] = attempts
        if out is None:
            rec["reason"] = f"no valid edit in {attempts} attempt(s); last: {rec['reason']}"
        return out, rec

    @staticmethod
    def _merge_insertion(vol: Volume, out: np.ndarray, extra: np.ndarray) -> np.ndarray:
        """``out`` with the lesion another insertion into ``vol`` added where ``out`` still holds ``vol``'s own
        non-lesion values (the own lesion and the lesions inserted before it are kept)."""
        add = (extra != vol.arr) & (out == vol.arr) & ~vol.lesion
        merged = out.copy()
        merged[add] = extra[add]
        return merged

    def replay(
        self, label: Any, brain: Any = None, record: dict[str, Any] | None = None, donors: Sequence[Any] | None = None
    ) -> EditResult:
        """Reproduce an edit exactly from its record (of any operation or of :meth:`random_edit`).

        Needs the same ``label``, ``brain`` and, for swaps, ``donors`` list as the recorded call (a record of a
        direct :meth:`swap` call needs ``donor=<index>`` given there).

        Raises:
            ValueError: If the record is malformed or does not reproduce on these inputs.
        """
        if not isinstance(record, dict) or "op" not in record or "applied" not in record:
            raise ValueError("replay needs record=<the record dict of an EditResult>")
        vol = self._reader.volume(label, brain)
        if not record["applied"]:
            return self._result(vol, None, dict(record))
        if record["op"] == "random" and not record.get("remove"):
            missing = [k for k in _RANDOM_KEYS if k not in record]
            if missing or all(record[k] is None for k in _RANDOM_KEYS):
                raise ValueError(
                    f"the 'random' record {record} says applied but holds no parameters ({missing or 'all None'}); "
                    f"an applied random edit records {list(_RANDOM_KEYS)} (None for the operations not drawn)"
                )
        out = self._rerun(record, vol, donors)
        for sub in record.get("more") or ():  # the further insertions of an inserting edit
            if sub.get("applied"):
                out = self._merge_insertion(vol, out, self._rerun(sub, vol, donors))
        return self._result(vol, out, dict(record))

    def _rerun(self, record: dict[str, Any], vol: Volume, donors: Sequence[Any] | None) -> np.ndarray:
        """The output of an applied recorded edit, or ValueError when it does not apply now."""
        out, rec = self._run(dict(record), vol, donors, {})
        if out is None:
            raise ValueError(
                f"the recorded {record['op']!r} edit was applied but does not apply now ({rec['reason']}); "
                "replay needs the same label, brain and donors as the recorded edit"
            )
        return out

    # ------------------------------------------------------------------ parameters
    def _mirror_params(self, vol: Volume, axis: Any, plane: Any) -> dict[str, Any]:
        ndim = vol.ints.ndim
        if not (isinstance(axis, (int, np.integer)) and 0 <= axis < ndim):
            raise ValueError(f"mirror axis={axis!r} must be an axis index 0..{ndim - 1} (0 is left-right)")
        x0 = vol.brain.centroid(int(axis)) if plane is None else _finite(plane, "mirror plane")
        n = vol.ints.shape[int(axis)]
        if not -0.5 <= x0 <= n - 0.5:
            raise ValueError(f"mirror plane={plane!r} lies outside the grid: axis {axis} spans [-0.5, {n - 0.5}]")
        return {"axis": int(axis), "plane": math.floor(2.0 * x0 + 0.5) / 2.0}  # half voxels: exact permutation

    @staticmethod
    def _factor(factor: Any) -> float:
        f = _finite(factor, "scale factor")
        if f <= 0:
            raise ValueError(f"scale factor={f} must be > 0 (a tumour volume ratio, e.g. 0.5 or 2.0)")
        if not 1.0 / MAX_SCALE_FACTOR <= f <= MAX_SCALE_FACTOR:
            raise ValueError(
                f"scale factor={f} is out of range: tumour volume factors lie in [1/{MAX_SCALE_FACTOR:g}, "
                f"{MAX_SCALE_FACTOR:g}] (e.g. 0.5 or 2.0)"
            )
        return f

    @staticmethod
    def _shift(shift: Any, ndim: int) -> list[float] | list[int]:
        if np.ndim(shift) != 1 or len(shift) != ndim:
            raise ValueError(f"move shift={shift!r} must hold one number per axis ({ndim} numbers)")
        s = [_finite(v, "move shift") for v in shift]
        if any(abs(v) > MAX_SHIFT for v in s):
            raise ValueError(f"move shift={shift!r} is out of range: at most {MAX_SHIFT} voxels along each axis")
        return [int(v) for v in s] if all(v.is_integer() for v in s) else s

    @staticmethod
    def _angles(angles: Any, ndim: int) -> list[float]:
        a = [angles] if np.ndim(angles) == 0 else list(angles)
        a = [_finite(v, "rotation angle") for v in a]
        if any(abs(v) > MAX_ANGLE for v in a):
            raise ValueError(f"rotate angles={angles!r} are out of range: at most {MAX_ANGLE:g} degrees in magnitude")
        if ndim == 3 and len(a) == 1:
            a = [0.0, 0.0, a[0]]
        if len(a) != (1 if ndim == 2 else 3):
            raise ValueError(f"rotate angles={angles!r}: give 1 angle in 2D, 1 or 3 angles (degrees) in 3D")
        return a

    @staticmethod
    def _perturb_params(strength: Any, smoothness: Any, seed: Any) -> dict[str, Any]:
        strength, smoothness = _finite(strength, "perturb strength"), _finite(smoothness, "perturb smoothness")
        if strength < 0 or smoothness <= 0:
            raise ValueError(f"perturb needs strength >= 0 and smoothness > 0 voxels, got {strength}, {smoothness}")
        if strength > MAX_PERTURB_STRENGTH or not MIN_PERTURB_SMOOTHNESS <= smoothness <= MAX_PERTURB_SMOOTHNESS:
            raise ValueError(
                f"perturb strength={strength}, smoothness={smoothness} are out of range: strength lies in "
                f"[0, {MAX_PERTURB_STRENGTH:g}] voxels, smoothness in [{MIN_PERTURB_SMOOTHNESS:g}, "
                f"{MAX_PERTURB_SMOOTHNESS:g}] voxels"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, float, np.integer, np.floating)):
            raise ValueError(f"perturb seed={seed!r} must be an integer")
        if not (math.isfinite(float(seed)) and float(seed).is_integer() and 0 <= int(seed) < 2**63):
            raise ValueError(f"perturb seed={seed!r} must be an integer in [0, 2**63)")
        return {"strength": strength, "smoothness": smoothness, "seed": int(seed)}

    def _swap_params(self, vol: Volume, d: Donor, donor: Any, at: Any, center: Any) -> dict[str, Any]:
        ndim = vol.ints.ndim
        if at not in ("donor", "random"):
            raise ValueError(f"swap at={at!r} must be 'donor' (the donor's location) or 'random'")
        if len(d.shape) != ndim:
            raise ValueError(f"donor is {len(d.shape)}D but the label map is {ndim}D; pass a donor of the same kind")
        if at == "donor" and tuple(d.shape) != tuple(vol.ints.shape):
            raise ValueError(
                f"swap at='donor' needs the donor on the recipient's grid: donor shape {tuple(d.shape)} vs "
                f"{tuple(vol.ints.shape)}; resample it or use at='random'"
            )
        if center is not None:
            if at == "donor":
                raise ValueError("swap center= is only used with at='random'")
            if np.ndim(center) != 1 or len(center) != ndim or any(not float(c).is_integer() for c in center):
                raise ValueError(f"swap center={center!r} must be {ndim} integer voxel coordinates")
            center = [int(c) for c in center]
            if not all(0 <= c < n for c, n in zip(center, vol.ints.shape, strict=True)):
                raise ValueError(f"swap center={center!r} lies outside the grid {tuple(vol.ints.shape)}")
        return {"donor": None if donor is None else int(donor), "at": at, "center": center}

    def _sample(
        self, drawn: list[str], vol: Volume, g: torch.Generator | None, donors: Any, cache: dict[int, Donor]
    ) -> dict[str, Any]:
        """Draw the parameters of a composed random edit (``None`` for operations not drawn)."""
        p = self.policy
        ndim = vol.ints.ndim
        params: dict[str, Any] = dict.fromkeys(("swap", "mirror", "factor", "angles", "perturb", "shift"))
        if "swap" in drawn:
            at = p.swap_at[randint(g, 0, len(p.swap_at))]
            idx = randint(g, 0, len(donors))
            donor = self._donor(donors, idx, cache)
            if at == "donor" and not _on_grid(donors, idx, donor, vol.ints.shape):
                at = "random"  # a donor on another grid can only be placed
            params["swap"] = {"donor": idx, "at": at, "center": vol.brain.sample_voxel(g) if at == "random" else None}
        if "mirror" in drawn:
            params["mirror"] = self._mirror_params(vol, 0, None)
        if "scale" in drawn:
            lo, hi = math.log(p.scale_range[0]), math.log(p.scale_range[1])
            params["factor"] = _short(math.exp(uniform(g, lo, hi)))
        if "rotate" in drawn:
            params["angles"] = [_short(uniform(g, *p.rotation_range)) for _ in range(1 if ndim == 2 else 3)]
        if "perturb" in drawn:
            strength = _short(uniform(g, *p.perturb_range))
            params["perturb"] = self._perturb_params(strength, p.perturb_smoothness, randint(g, 0, 2**31 - 1))
        if "move" in drawn:
            params["shift"] = [
                randint(g, -k, k + 1) for k in (int(p.max_shift * vol.brain.extent(a)) for a in range(ndim))
            ]
        return params

    # ------------------------------------------------------------------ running records
    def _donor(self, donors: Any, idx: Any, cache: dict[int, Donor]) -> Donor:
        if idx is None or not donors or not 0 <= int(idx) < len(donors):
            raise ValueError(
                f"swap needs a donor index into donors (got donor={idx!r} with {len(donors) if donors else 0} "
                "donors); pass the same donors list as the recorded edit"
            )
        idx = int(idx)
        if idx not in cache:
            try:
                cache[idx] = self._reader.donor(*self._split_donor(donors[idx]))
            except ValueError as e:  # a pool that knows where its label maps come from names the donor
                name = donors.name_of(idx) if hasattr(donors, "name_of") else f"donors[{idx}]"
                raise ValueError(f"{name} (a swap donor): {e}") from None
        return cache[idx]

    def _run(self, record: dict[str, Any], vol: Volume, donors: Any, cache: dict[int, Donor]):
        """Run the edit a record describes (parameters already drawn); return ``(output or None, record)``."""
        op = record["op"]
        ndim = vol.ints.ndim
        try:
            if op == "remove" or (op == "random" and record.get("remove")):
                out, rec = self._remove(vol)
                record.update(applied=rec["applied"], reason=rec["reason"])
                return out, record
            if op == "mirror":
                return self._edit(vol, record, mirror=self._mirror_params(vol, record["axis"], record["plane"]))
            if op == "scale":
                return self._edit(vol, record, factor=self._factor(record["factor"]))
            if op == "move":
                return self._edit(vol, record, shift=self._shift(record["shift"], ndim))
            if op == "rotate":
                return self._edit(vol, record, angles=self._angles(record["angles"], ndim))
            if op == "perturb":
                return self._edit(
                    vol, record, perturb=self._perturb_params(record["strength"], record["smoothness"], record["seed"])
                )
            if op == "swap":
                d = self._donor(donors, record["donor"], cache)
                self._swap_params(vol, d, record["donor"], record["at"], record["center"])
                return self._edit(vol, record, swap=record, donor=d)
            if op == "random":
                sw, d = record.get("swap"), None
                if sw is not None:
                    d = self._donor(donors, sw["donor"], cache)
                    self._swap_params(vol, d, sw["donor"], sw["at"], sw["center"])
                mirror = record.get("mirror")
                if mirror is not None:
                    mirror = self._mirror_params(vol, mirror["axis"], mirror["plane"])
                factor = record.get("factor")
                perturb = record.get("perturb")
                if perturb is not None:
                    perturb = self._perturb_params(perturb["strength"], perturb["smoothness"], perturb["seed"])
                return self._edit(
                    vol,
                    record,
                    swap=sw,
                    donor=d,
                    mirror=mirror,
                    factor=1.0 if factor is None else self._factor(factor),
                    angles=None if record.get("angles") is None else self._angles(record["angles"], ndim),
                    perturb=perturb,
                    shift=None if record.get("shift") is None else self._shift(record["shift"], ndim),
                )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed {op!r} record {record}: {err!r}") from None
        raise ValueError(
            f"unknown operation {op!r} in record; expected one of {[*OP_ORDER, 'random']} (see LesionEditor.replay)"
        )

    # ------------------------------------------------------------------ the one geometric edit
    def _edit(
        self,
        vol: Volume,
        record: dict[str, Any],
        *,
        swap: dict[str, Any] | None = None,
        donor: Donor | None = None,
        mirror: dict[str, Any] | None = None,
        factor: float = 1.0,
        angles: list[float] | None = None,
        perturb: dict[str, Any] | None = None,
        shift: list[float] | None = None,
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Transform a lesion (the donor's for a swap, else the map's own) and place it: the composition
        swap -> mirror -> scale and rotation about the tumour centroid -> perturbation -> move."""
        if swap is not None:
            if donor.crop is None:
                return self._skip(record, "the donor has no lesion")
            crop, lo, reference = donor.crop, donor.lo.copy(), donor.contact
            if swap["at"] == "random":
                if swap.get("center") is None:
                    raise ValueError("a swap at='random' needs center=<voxel> (the record of a placed swap has one)")
                anchor = np.round(self._center(crop, lo)).astype(np.int64)
                lo = lo + np.asarray(swap["center"], dtype=np.int64) - anchor
        else:
            if vol.lo is None:
                return self._skip(record, NO_LESION)
            crop, lo, reference = vol.crop(), vol.lo.copy(), None
        ndim = crop.ndim
        mat, off = np.eye(ndim), np.zeros(ndim)  # forward map p -> mat @ p + off
        vals, vals_lo = crop, lo.copy()  # exact (permutation) result while no resampling is needed
        center = self._center(crop, lo)
        if mirror is not None:
            axis, c = mirror["axis"], round(2 * mirror["plane"])
            mat[axis, axis], off[axis] = -1.0, float(c)
            center = mat @ center + off
            vals = np.flip(crop, axis)
            vals_lo[axis] = c - (lo[axis] + crop.shape[axis] - 1)
        rotating = angles is not None and any(a != 0.0 for a in angles)
        if factor != 1.0 or rotating:
            lin = factor ** (1.0 / ndim) * (rotation_matrix(angles, ndim) if rotating else np.eye(ndim))
            mat, off = lin @ mat, lin @ (off - center) + center
        s = np.zeros(ndim) if shift is None else np.asarray(shift, dtype=np.float64)
        off = off + s
        if factor == 1.0 and not rotating and perturb is None and all(float(v).is_integer() for v in s):
            return self._attempt(vol, record, vals, vals_lo + s.astype(np.int64), reference)
        inv = np.linalg.inv(mat)
        p = None if perturb is None else (perturb["strength"], perturb["smoothness"], perturb["seed"])
        new, new_lo = warp(crop, lo, inv, -inv @ off, self._lut, perturb=p)
        return self._attempt(vol, record, new, new_lo, reference)

    def _remove(self, vol: Volume):
        record: dict[str, Any] = {"op": "remove"}
        if vol.lo is None:
            return self._skip(record, NO_LESION)
        box = slices(np.maximum(vol.lo - 1, 0), np.minimum(vol.hi + 1, np.array(vol.ints.shape)))
        les = vol.lesion[box]
        out_box = vol.ints[box].copy()
        out_box[les] = self._normal
        problems = check_valid(
            out_box, vol.brain.mask[box] | les, self.scheme, original=vol.ints[box], min_fragment=self.min_fragment
        )
        if problems:
            return self._skip(record, "; ".join(problems))
        out = vol.arr.copy()
        out[box] = out_box
        record.update(applied=True, reason=None)
        return out, record

    # ------------------------------------------------------------------ placement and validity
    def _attempt(self, vol, record, vals, origin, reference):
        insert = bool(record.get("insert", False))
        out, reason = self._place(vol, vals, np.asarray(origin, dtype=np.int64), reference, insert=insert)
        record.update(applied=out is not None, reason=reason)
        return out, record

    def _place(
        self,
        vol: Volume,
        vals: np.ndarray,
        origin: np.ndarray,
        reference: tuple[bool, bool] | None,
        *,
        insert: bool = False,
    ) -> tuple[np.ndarray | None, str | None]:
        """Replace the lesion of ``vol`` by the crop ``vals`` at ``origin`` (``insert``: add it where the old lesion
        does not lie, the old lesion kept as it is): clip, clean, compose, validate."""
        shape = np.array(vol.ints.shape)
        n_pre = int(np.count_nonzero(vals >= 0))
        t_pre = int(np.count_nonzero(self._lut[vals] == TUMOR))
        if n_pre == 0:
            return None, "the edited lesion is empty"
        lo, hi = np.maximum(origin, 0), np.minimum(origin + vals.shape, shape)
        if np.any(hi <= lo):
            return None, "the edited lesion would lie entirely outside the volume"
        region = slices(lo, hi)
        new = vals[slices(lo - origin, hi - origin)].copy()
        new[~(vol.brain.mask[region] | vol.lesion[region])] = -1
        new = self._drop_fragments(new)
        n_kept = int(np.count_nonzero(new >= 0))
        t_kept = int(np.count_nonzero(self._lut[new] == TUMOR))
        if n_kept == 0:
            return None, "no lesion is left inside the brain after clipping and dropping small fragments"
        lost = max(1 - n_kept / n_pre, 1 - t_kept / t_pre if t_pre else 0.0)
        if lost > self.max_clip:
            return None, (
                f"{100 * lost:.0f}% of the lesion would fall outside the brain or into small fragments "
                f"(max_clip={self.max_clip:g})"
            )
        nlo, nhi = bbox(new >= 0)
        if reference is None:
            reference = vol.contact(self._lut, self.min_fragment)
        out = vol.arr.copy()
        for blo, bhi in change_boxes(shape, (lo + nlo, lo + nhi), (vol.lo, vol.hi)):
            box = slices(blo, bhi)
            orig = vol.ints[box]
            placed = np.full(orig.shape, -1, dtype=np.int64)
            olo, ohi = np.maximum(blo, lo), np.minimum(bhi, hi)
            if np.all(ohi > olo):
                placed[slices(olo - blo, ohi - blo)] = new[slices(olo - lo, ohi - lo)]
            kept, old_lesion = placed >= 0, vol.lesion[box]
            out_box = orig.copy()
            if insert:  # the own lesion stays as it is; the new one fills in around it
                kept &= ~old_lesion
            else:
                out_box[old_lesion & ~kept] = self._normal
            out_box[kept] = placed[kept]
            problems = check_valid(
                out_box,
                vol.brain.mask[box] | old_lesion,
                self.scheme,
                original=orig,
                reference=reference,
                min_fragment=self.min_fragment,
            )
            if problems:
                return None, "the edit breaks the validity rules: " + "; ".join(problems)
            out[box] = out_box
        return out, None

    def _drop_fragments(self, vals: np.ndarray) -> np.ndarray:
        if self.min_fragment <= 1:
            return vals
        comps, n = ndimage.label(vals >= 0, structure=full_structure(vals.ndim))
        if n <= 1:
            return vals if n == 0 or np.count_nonzero(comps) >= self.min_fragment else np.full_like(vals, -1)
        small = np.bincount(comps.ravel(), minlength=n + 1) < self.min_fragment
        small[0] = False
        if small.any():
            vals = vals.copy()
            vals[small[comps]] = -1
        return vals

    def _center(self, crop: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Tumour centroid of a crop (lesion centroid without tumour), in volume coordinates."""
        m = self._lut[crop] == TUMOR
        if not m.any():
            m = crop >= 0
        return np.array([i.mean() for i in np.nonzero(m)]) + lo

    @staticmethod
    def _split_donor(item: Any) -> tuple[Any, Any]:
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise ValueError("each donor must be a label map or a (label, brain) pair")
            return item[0], item[1]
        return item, None

    # ------------------------------------------------------------------ results
    @staticmethod
    def _skip(record: dict[str, Any], reason: str):
        record.update(applied=False, reason=reason)
        return None, record

    @staticmethod
    def _result(vol: Volume, out: np.ndarray | None, record: dict[str, Any]) -> EditResult:
        arr = vol.arr.copy() if out is None else out
        is_torch, device, dtype = vol.kind
        if is_torch:
            return EditResult(torch.from_numpy(arr).to(device=device, dtype=dtype), record)
        return EditResult(arr, record)
