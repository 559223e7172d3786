"""Validity rules that every edited label map satisfies, as one checkable function.

The rules (each one is measurable; :func:`check_valid` returns the violated ones):

1. **Labels within the scheme**: every value belongs to the label scheme.
2. **Lesion only inside the brain**: lesion voxels (SAMR edema, cavity, tumour) lie in the brain mask. Lesion
   voxels of the *original* map count as brain (as in :meth:`~samraug.labels.LabelScheme.to_samr`), so a mask
   whose annotation spills slightly over the brain mask is still editable.
3. **Background stays background**: outside the brain nothing changes (needs ``original``).
4. **Vacated area becomes normal brain**: voxels that were lesion and are no longer lesion hold normal brain
   (label 0 inside the brain for BraTS schemes, the normal-brain value for schemes that encode it).
5. **Untouched voxels keep their value**: a voxel that is lesion in neither map keeps its value (needs
   ``original``), so normal-brain sub-labels and everything outside the lesion survive an edit.
6. **No small fragments**: every connected lesion component (full connectivity: 8 neighbours in 2D, 26 in 3D)
   has at least ``min_fragment`` voxels. An output equal to its original is exempt (the editor returns the
   unedited input when an edit fails, and does not clean what it did not edit).
7. **Tumour keeps its edema**: tumour components are the full-connectivity components of the tumour class; one
   *touches edema* when one of its voxels is face-adjacent to an edema voxel. If some tumour of the reference
   (the original, or the donor for a swap) touched edema, some tumour of the output touches edema; if every
   tumour component of at least ``min_fragment`` voxels of the reference touched edema, so does every such
   component of the output. An output without tumour passes (``remove``).

Example:
    >>> import numpy as np
    >>> from samraug.editing import check_valid
    >>> brain = np.zeros((8, 8), bool); brain[1:7, 1:7] = True
    >>> seg = np.zeros((8, 8), np.int64); seg[2:5, 2:5] = 2; seg[3, 3] = 4
    >>> check_valid(seg, brain, "brats2021", original=seg)
    []
    >>> moved = np.roll(seg, 4, axis=0)  # pushes the lesion out of the brain
    >>> check_valid(moved, brain, "brats2021", original=seg)[0]
    '6 lesion voxels lie outside the brain'
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from samraug.labels import BACKGROUND, BRAIN, EDEMA, TUMOR, LabelScheme, get_scheme

__all__ = ["as_numpy", "check_valid", "class_lut", "full_structure", "tumour_edema_contact"]


def full_structure(ndim: int) -> np.ndarray:
    """Full connectivity (8 neighbours in 2D, 26 in 3D), used for lesion fragments and tumour components."""
    return ndimage.generate_binary_structure(ndim, ndim)


def class_lut(scheme: LabelScheme) -> np.ndarray:
    """Look-up table ``value -> SAMR class`` of a scheme (``-1`` for values outside the scheme).

    The table has one extra trailing entry so that index ``-1`` (the editor's "no lesion" sentinel) maps to
    ``-1`` too.
    """
    lut = np.full(max(scheme.values) + 2, -1, dtype=np.int64)
    for value in scheme.values:
        lut[value] = scheme.samr_of(value)
    return lut


def _face_dilate(mask: np.ndarray) -> np.ndarray:
    """Binary dilation with face connectivity (4 neighbours in 2D, 6 in 3D), by slicing."""
    out = mask.copy()
    for axis in range(mask.ndim):
        lead = [slice(None)] * mask.ndim
        trail = [slice(None)] * mask.ndim
        lead[axis], trail[axis] = slice(1, None), slice(None, -1)
        out[tuple(lead)] |= mask[tuple(trail)]
        out[tuple(trail)] |= mask[tuple(lead)]
    return out


def tumour_edema_contact(cls: np.ndarray, min_fragment: int = 1) -> tuple[bool, bool] | None:
    """Whether tumour touches edema in a SAMR class map: ``(any, all)`` or ``None`` without tumour.

    ``any``: some tumour voxel is face-adjacent to edema. ``all``: every tumour component (full connectivity)
    of at least ``min_fragment`` voxels touches edema (``True`` when there is no such component).
    """
    tumour = cls == TUMOR
    if not tumour.any():
        return None
    box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in ndimage.find_objects(tumour.view(np.uint8))[0])
    cls, tumour = cls[box], tumour[box]  # only the tumour's surroundings matter
    touch = _face_dilate(cls == EDEMA) & tumour
    if not touch.any():
        return False, False
    comps, n = ndimage.label(tumour, structure=full_structure(cls.ndim))
    if n == 1:
        return True, True
    sizes = np.bincount(comps.ravel(), minlength=n + 1)
    touching = np.zeros(n + 1, dtype=bool)
    touching[comps[touch]] = True
    big = sizes >= min_fragment
    big[0] = False
    return True, bool(np.all(touching[big]))


def as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _classes(label: np.ndarray, scheme: LabelScheme, lut: np.ndarray, what: str) -> np.ndarray:
    """SAMR classes of a label map, raising the scheme's error for values outside it (fast path: one gather)."""
    if label.dtype.kind in "iu" and label.size:
        mn, mx = int(label.min()), int(label.max())
        if mn >= 0 and mx < len(lut) - 1:
            cls = lut[label]
            if cls.min() >= 0:
                return cls
    scheme.validate(label, what)
    if label.dtype.kind not in "iuf":
        raise ValueError(f"{what} has dtype {label.dtype}; label maps hold integer values")
    return lut[label.astype(np.int64, copy=False)]


def check_valid(
    label: np.ndarray | torch.Tensor,
    brain: np.ndarray | torch.Tensor | None,
    scheme: str | LabelScheme,
    *,
    original: np.ndarray | torch.Tensor | None = None,
    reference: np.ndarray | torch.Tensor | tuple[bool, bool] | None = None,
    min_fragment: int = 1,
) -> list[str]:
    """Check an edited label map against the validity rules (module docstring); return the violations.

    Args:
        label: The edited label map in ``scheme`` (numpy or torch, 2D or 3D).
        brain: Boolean brain mask of the same shape. ``None`` only for schemes that encode normal brain
            (e.g. ``"samr"``); the brain is then read from ``original`` (or from ``label`` without original).
        scheme: Scheme name or :class:`~samraug.labels.LabelScheme`.
        original: The label map before the edit. Rules 3-5 and 7 compare against it; without it only the
            rules on ``label`` alone (1, 2, 6) are checked.
        reference: The map whose tumour/edema contact rule 7 compares with (any shape; e.g. the donor of a
            swap), or its precomputed :func:`tumour_edema_contact` summary. Defaults to ``original``.
        min_fragment: Smallest allowed lesion component, in voxels.

    Returns:
        One message per violated rule; an empty list means the map is valid.

    Raises:
        ValueError: If the arguments cannot be compared (shapes differ, no brain for a scheme without
            normal brain, an invalid ``original``).
    """
    scheme = get_scheme(scheme)
    lut = class_lut(scheme)
    lab = as_numpy(label)
    try:
        cls = _classes(lab, scheme, lut, "edited label map")
    except ValueError as err:
        return [str(err)]
    lesion = cls >= EDEMA
    orig = cls_o = lesion_o = None
    if original is not None:
        orig = as_numpy(original)
        if orig.shape != lab.shape:
            raise ValueError(f"original shape {orig.shape} does not match label shape {lab.shape}")
        cls_o = _classes(orig, scheme, lut, "original label map")
        lesion_o = cls_o >= EDEMA
    if brain is None:
        if not scheme.has_brain_label:
            raise ValueError(f"scheme {scheme.name!r} does not encode normal brain: pass brain=<boolean brain mask>")
        b = (cls_o if cls_o is not None else cls) != BACKGROUND
    else:
        b = as_numpy(brain).astype(bool)
        if b.shape != lab.shape:
            raise ValueError(f"brain mask shape {b.shape} does not match label shape {lab.shape}")
    if lesion_o is not None:
        b = b | lesion_o

    problems: list[str] = []
    n = int(np.count_nonzero(lesion & ~b))
    if n:
        problems.append(f"{n} lesion voxels lie outside the brain")
    if scheme.has_brain_label:
        n = int(np.count_nonzero(b & (cls == BACKGROUND)))
        if n:
            problems.append(f"{n} voxels inside the brain are labelled background")
    unedited = False
    if orig is not None:
        unedited = bool(np.array_equal(lab, orig))
        n = int(np.count_nonzero((lab != orig) & ~b))
        if n:
            problems.append(f"{n} voxels outside the brain changed (background must stay background)")
        vacated = lesion_o & ~lesion
        if scheme.has_brain_label:
            n = int(np.count_nonzero(vacated & (cls != BRAIN)))
            if n:
                problems.append(f"{n} vacated lesion voxels are not normal brain")
        n = int(np.count_nonzero(~lesion_o & ~lesion & (lab != orig)))
        if n:
            problems.append(f"{n} voxels that are lesion in neither map changed value")
    if min_fragment > 1 and not unedited and lesion.any():
        comps, ncomp = ndimage.label(lesion, structure=full_structure(lab.ndim))
        sizes = np.bincount(comps.ravel(), minlength=ncomp + 1)[1:]
        small = int(np.count_nonzero(sizes < min_fragment))
        if small:
            problems.append(f"{small} lesion fragments smaller than min_fragment={min_fragment} voxels")
    if not unedited and (reference is not None or cls_o is not None):
        if isinstance(reference, tuple):
            ref_contact = reference
        elif reference is not None:
            ref_cls = _classes(as_numpy(reference), scheme, lut, "reference label map")
            ref_contact = tumour_edema_contact(ref_cls, min_fragment)
        else:
            ref_contact = tumour_edema_contact(cls_o, min_fragment)
        out_contact = tumour_edema_contact(cls, min_fragment) if ref_contact else None
        if ref_contact is not None and out_contact is not None:
            if ref_contact[0] and not out_contact[0]:
                problems.append("the tumour lost its edema: no tumour voxel touches edema, the reference's did")
            elif ref_contact[1] and not out_contact[1]:
                problems.append(
                    "a tumour component has no edema around it, while every tumour component of the reference had"
                )
    return problems
