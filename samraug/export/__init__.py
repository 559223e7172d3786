"""Export to nnU-Net v2: raw datasets with leak-free splits, labels back to BraTS, an on-the-fly trainer.

``samraug.export.trainer`` (``nnUNetTrainerSAMR``) needs the ``nnunet`` extra and is not imported here.

Example:
    >>> from samraug.export import export_nnunet, labels_to_scheme
    >>> labels_to_scheme([0, 3], "brats2021").tolist()
    [0, 4]
"""

from __future__ import annotations

from .labels import NnunetLabels, labels_to_scheme
from .nnunet import ExportResult, check_splits_leak_free, export_nnunet, make_splits
from .predictions import predictions_to_scheme

__all__ = [
    "ExportResult",
    "NnunetLabels",
    "check_splits_leak_free",
    "export_nnunet",
    "labels_to_scheme",
    "make_splits",
    "predictions_to_scheme",
]
