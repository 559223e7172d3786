"""Data: BraTS folders, patient-level splits and 2D training instances (the digital phantom lives in
``samraug.data.phantom``)."""

from __future__ import annotations

from .brats import (
    LAYOUTS,
    BratsCase,
    SubjectArrays,
    discover_brats,
    load_brats,
    read_brain_mask,
    subject_arrays,
    validate_subject,
)
from .slices import (
    PreparedSubject,
    SliceDataset,
    make_instance,
    pad_or_crop,
    padded_size,
    paste_slices,
    prepare_subject,
    select_slices,
    slice_instances,
    to_subject_scale,
    unpad,
)
from .splits import SPLIT_NAMES, check_split, load_split, patient_id, patient_split, save_split, select_subjects

__all__ = [
    "LAYOUTS",
    "SPLIT_NAMES",
    "BratsCase",
    "PreparedSubject",
    "SliceDataset",
    "SubjectArrays",
    "check_split",
    "discover_brats",
    "load_brats",
    "load_split",
    "make_instance",
    "pad_or_crop",
    "padded_size",
    "paste_slices",
    "patient_id",
    "patient_split",
    "prepare_subject",
    "read_brain_mask",
    "save_split",
    "select_slices",
    "select_subjects",
    "slice_instances",
    "subject_arrays",
    "to_subject_scale",
    "unpad",
    "validate_subject",
]
