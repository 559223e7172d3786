"""nnU-Net predictions (consecutive labels) back to a BraTS label scheme, file by file, for submission.

Example:
    >>> predictions_to_scheme("/preds/Dataset501", "/submission", "brats2021")  # doctest: +SKIP
    [PosixPath('/submission/BraTS2021_00001.nii.gz'), ...]
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ..labels import LabelScheme
from .labels import NnunetLabels

__all__ = ["predictions_to_scheme"]

_ENDINGS = (".nii.gz", ".nii")


def _predictions(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of nnU-Net predictions (*.nii.gz)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_ENDINGS))
    if not files:
        raise FileNotFoundError(f"no *.nii.gz / *.nii predictions in {folder}")
    return files


def predictions_to_scheme(
    predictions: str | os.PathLike[str],
    out: str | os.PathLike[str],
    scheme: str | LabelScheme,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Map every prediction in ``predictions`` to ``scheme``'s values (e.g. BraTS 2021: 3 -> 4) into ``out``.

    Files keep their names, affines and headers; labels are written as uint8. Every file is checked (labels in
    ``0..n-1`` of the scheme, outputs absent or ``overwrite``) before the first is written; each is written under a
    temporary name in ``out`` and renamed. Returns the written paths.
    """
    src, dst = Path(predictions), Path(out)
    labels = NnunetLabels.from_scheme(scheme, region_based=False)
    files = _predictions(src)
    if src.resolve() == dst.resolve():
        raise ValueError(f"--out {dst} is the predictions folder; write the mapped labels to another folder")
    for f in files:
        target = dst / f.name
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
        try:
            labels.to_scheme(np.asarray(nib.load(str(f)).dataobj))
        except ValueError as e:
            raise ValueError(f"{f}: {e}") from None
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        img = nib.load(str(f))
        mapped = labels.to_scheme(np.asarray(img.dataobj))
        header = img.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        target = dst / f.name
        tmp = dst / f".{f.name}.partial{os.getpid()}{'.nii.gz' if f.name.endswith('.gz') else '.nii'}"
        try:
            nib.save(nib.Nifti1Image(mapped, img.affine, header), str(tmp))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return written
