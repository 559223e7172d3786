"""Export to nnU-Net v2: raw datasets with leak-free splits, labels back to BraTS, an on-the-fly trainer.

Example:
    >>> from samraug.export import export_nnunet, labels_to_scheme  # doctest: +SKIP
"""

from __future__ import annotations

from .labels import NnunetLabels, labels_to_scheme
from .nnunet import ExportResult, check_splits_leak_free, export_nnunet, make_splits

__all__ = ["ExportResult", "NnunetLabels", "check_splits_leak_free", "export_nnunet", "labels_to_scheme", "make_splits"]
