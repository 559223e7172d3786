"""The one subject reader: a subject (``tio.Subject`` or a mapping of arrays) as checked arrays, and grid helpers.

Lower than :mod:`samraug.atlas`, :mod:`samraug.data` and the augmentation core, which all read subjects through
:func:`subject_arrays` and compare grids with :func:`affines_match`. :func:`read_nifti` is the NIfTI reader that
refuses NaN/inf naming the file.

Example:
    >>> import numpy as np
    >>> affines_match(np.eye(4), np.eye(4) + 1e-6)
    True
"""

from __future__ import annotations

import copy
import functools
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torchio as tio
from nibabel.filebasedimages import ImageFileError

__all__ = [
    "AFFINE_ATOL",
    "SubjectArrays",
    "affines_agree",
    "affines_match",
    "format_affine",
    "read_brain_mask",
    "read_nifti",
    "subject_arrays",
]

#: Absolute tolerance when comparing affines (mm for the translation, unitless for the rotation/zoom part).
AFFINE_ATOL = 1e-3


def affines_match(a: np.ndarray, b: np.ndarray, atol: float = AFFINE_ATOL) -> bool:
    """Whether two 4x4 affines agree within ``atol`` (one tolerance used for every grid comparison)."""
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0.0, atol=atol))


def affines_agree(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two affines can be one grid as far as they are known: either is None (unknown), or they match
    (:func:`affines_match`).

    Example:
        >>> affines_agree(None, np.eye(4)), affines_agree(np.eye(4), np.eye(4) * 2)
        (True, False)
    """
    return a is None or b is None or affines_match(a, b)


def format_affine(a: np.ndarray) -> str:
    """A 4x4 affine on one line, for error messages."""
    return np.array2string(np.asarray(a, dtype=np.float64), precision=4, suppress_small=True).replace("\n", "")


def _check_finite(x: torch.Tensor | np.ndarray, what: str) -> None:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating) or a.size == 0:
        return
    if not (np.isfinite(a.max()) and np.isfinite(a.min())):  # exact: max/min propagate NaN, inf shows in one
        n_bad = int((~np.isfinite(a)).sum())
        raise ValueError(f"{what} has {n_bad} NaN/inf voxels; fix or replace them (e.g. np.nan_to_num)")


def read_nifti(path: str | Path, *, case_id: str = "", label: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """TorchIO reader of one NIfTI file with nibabel that refuses NaN/inf, naming the case and the file.

    (TorchIO's default reader goes through SimpleITK, which turns NaN into 0 without a word.) Images come back
    as ``(1, X, Y, Z)`` float32; label maps keep their integer type (integral float maps become uint8 or int64).
    """
    what = f"case {case_id!r}: {'segmentation' if label else 'image'} {path}"
    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj) if label else img.get_fdata(dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError) as e:  # truncated .gz, broken header
        raise ValueError(
            f"{what} cannot be read ({type(e).__name__}: {e}); the file is truncated or corrupt: re-export, "
            "re-download or remove it"
        ) from e
    if label:
        if np.issubdtype(arr.dtype, np.floating):
            _check_finite(arr, what)
            if not np.array_equal(arr, np.round(arr)):
                raise ValueError(f"{what} has non-integer values; label maps must hold integer labels")
            arr = arr.astype(np.uint8 if arr.size and arr.min() >= 0 and arr.max() <= 255 else np.int64)
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.int32)
        elif arr.dtype in (np.uint32, np.uint64):
            arr = arr.astype(np.int64)
    else:
        _check_finite(arr, what)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{what} has shape {arr.shape}; expected a 3D volume")
    return torch.from_numpy(np.ascontiguousarray(arr))[None], np.asarray(img.affine, dtype=np.float64)


def read_brain_mask(path: str | Path, *, paths: Sequence[str], case_id: str = "") -> tuple[torch.Tensor, np.ndarray]:
    """TorchIO reader of the brain mask: voxels non-zero in any of ``paths`` (``path`` is ``paths[0]``).

    Returns a ``(1, X, Y, Z)`` uint8 tensor and the first file's affine; raises ``ValueError`` naming the case and
    file if an image holds NaN/inf.
    """
    brain: torch.Tensor | None = None
    affine = None
    for p in paths:
        tensor, aff = read_nifti(p, case_id=case_id)
        nz = tensor != 0
        if brain is None:
            brain, affine = nz, aff
        elif nz.shape != brain.shape:
            raise ValueError(f"case {case_id!r}: {p} has shape {tuple(nz.shape[1:])}, expected {brain.shape[1:]}")
        else:
            brain |= nz
    assert brain is not None and affine is not None
    return brain.to(torch.uint8), affine


def _image_tensor(image: tio.Image) -> tuple[torch.Tensor, np.ndarray]:
    """The data and affine of a TorchIO image without caching them in ``image`` (reads a copy if unloaded)."""
    tmp = copy.copy(image)
    return tmp.data, np.asarray(tmp.affine, dtype=np.float64)


@dataclass
class SubjectArrays:
    """A subject as arrays: the stacked sequences, the label map, the brain mask and the affine."""

    subject_id: str
    images: np.ndarray  # (n_sequences, X, Y, Z) float32
    seg: np.ndarray | None  # (X, Y, Z) int64, or None without a label map
    brain: np.ndarray  # (X, Y, Z) bool
    affine: np.ndarray  # (4, 4) float64

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def _has_path(image: Any) -> bool:
    return isinstance(image, tio.Image) and isinstance(image.path, Path)


def _lazy_brain_paths(image: Any) -> tuple[str, ...] | None:
    """The sequence files of an unloaded brain mask made by :func:`load_brats` (else None)."""
    if not isinstance(image, tio.Image) or image._loaded:
        return None
    reader = image.reader
    if isinstance(reader, functools.partial) and reader.func is read_brain_mask:
        return tuple(str(Path(p)) for p in reader.keywords["paths"])
    return None


def _as_volume(value: Any, what: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(3D array, affine or None, file/key) of a tio image or an array/tensor of shape (X, Y, Z) or (1, X, Y, Z)."""
    if isinstance(value, tio.Image):
        data, affine = _image_tensor(value)
        arr, src = data.numpy(), str(value.path) if value.path else what
    else:
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        affine, src = None, what
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{what} has shape {tuple(arr.shape)}; expected one 3D volume (X, Y, Z) or (1, X, Y, Z)")
    return arr, affine, src


def subject_arrays(
    subject: tio.Subject | Mapping[str, Any],
    sequences: Sequence[str],
    *,
    seg_key: str = "seg",
    brain_key: str = "brain",
    affine: np.ndarray | None = None,
) -> SubjectArrays:
    """Read a subject into arrays, checking it: NaN/inf, one channel per image, one grid for all its images.

    ``subject`` is a ``tio.Subject`` (images are read without being cached in it, so a list of subjects stays
    small) or a plain mapping of arrays/tensors (and optionally ``tio.Image``s) with optional ``"affine"`` and
    ``"subject_id"``. Without ``brain_key`` the brain is the voxels non-zero in any sequence; without ``seg_key``
    ``seg`` is None. ``affine`` is the fallback for mappings that carry none (default identity).

    Example:
        >>> import numpy as np
        >>> a = subject_arrays({"t1": np.ones((2, 2, 2)), "seg": np.zeros((2, 2, 2))}, ["t1"])
        >>> a.images.shape, a.brain.all()
        ((1, 2, 2, 2), np.True_)
    """
    cid = str(subject.get("subject_id", "subject"))
    if isinstance(subject, tio.Subject):
        names = list(subject.get_images_dict(intensity_only=False))
    else:
        names = [k for k, v in subject.items() if isinstance(v, (np.ndarray, torch.Tensor, tio.Image))]
    missing = [s for s in sequences if s not in subject]
    if missing:
        raise ValueError(
            f"subject {cid!r} has no image {missing} (it has {names}); pass sequences= that match the data"
        )
    ref_affine = None
    ref_shape: tuple[int, ...] | None = None
    ref_src = ""
    vols = []

    def check_grid(arr: np.ndarray, aff: np.ndarray | None, src: str) -> None:
        nonlocal ref_affine, ref_shape, ref_src
        if ref_shape is None:
            ref_shape, ref_affine, ref_src = arr.shape, aff, src
            return
        if arr.shape != ref_shape:
            raise ValueError(
                f"subject {cid!r}: {src} has shape {arr.shape} but {ref_src} has {ref_shape}; "
                "all images of a subject must share one grid"
            )
        if not affines_agree(aff, ref_affine):
            raise ValueError(
                f"subject {cid!r}: affine of {src} {format_affine(aff)} differs from that of {ref_src} "
                f"{format_affine(ref_affine)}; all images of a subject must share one grid"
            )
        if ref_affine is None:
            ref_affine = aff

    for s in sequences:
        arr, aff, src = _as_volume(subject[s], f"subject {cid!r} image {s!r}")
        _check_finite(arr, f"subject {cid!r}: image {src}")
        check_grid(arr, aff, src)
        vols.append(arr.astype(np.float32, copy=False))
    images = np.stack(vols)
    seg = None
    if seg_key in subject:
        arr, aff, src = _as_volume(subject[seg_key], f"subject {cid!r} {seg_key!r}")
        check_grid(arr, aff, src)
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
                raise ValueError(f"subject {cid!r}: label map {src} has NaN/inf or non-integer values")
        seg = arr.astype(np.int64, copy=False)
    lazy_paths = _lazy_brain_paths(subject.get(brain_key))
    if lazy_paths is not None:
        # a brain from load_brats that is not loaded yet: reuse the sequences just read instead of reading twice
        read = {str(Path(subject[s].path)): vols[k] for k, s in enumerate(sequences) if _has_path(subject[s])}
        brain = np.zeros(images.shape[1:], dtype=bool)
        for p in lazy_paths:
            arr = read[p] if p in read else read_nifti(p, case_id=cid)[0][0].numpy()
            check_grid(arr, None, p)
            brain |= arr != 0
    elif brain_key in subject:
        arr, aff, src = _as_volume(subject[brain_key], f"subject {cid!r} {brain_key!r}")
        check_grid(arr, aff, src)
        brain = arr.astype(bool, copy=False)
    else:
        brain = (images != 0).any(axis=0)
    if ref_affine is None:
        given = subject.get("affine") if not isinstance(subject, tio.Subject) else None
        ref_affine = np.asarray(given if given is not None else (affine if affine is not None else np.eye(4)))
    return SubjectArrays(cid, images, seg, brain, np.asarray(ref_affine, dtype=np.float64))
