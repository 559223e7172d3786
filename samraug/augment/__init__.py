"""The augmentation core shared by the TorchIO transforms, the dataset and the MONAI transform.

- :mod:`samraug.augment.core`: item views, edit adapters, pending samples, writing results back in the item's
  own format and types.
- :mod:`samraug.augment.donors`: donor pools owned by the object that uses them, found again for replays
  through weak references only.
- :mod:`samraug.augment.painters`: what turns an edited label map into images, behind one interface
  (``"samr"`` whole/local, ``"copy-paste"``, ``"labels-to-image"``).
"""

from __future__ import annotations

from .donors import DonorPool, find_donors
from .painters import PAINTERS, CopyPastePainter, Donor, LabelsToImagePainter, Painter, SAMRPainter, get_painter

__all__ = [
    "PAINTERS",
    "CopyPastePainter",
    "Donor",
    "DonorPool",
    "LabelsToImagePainter",
    "Painter",
    "SAMRPainter",
    "find_donors",
    "get_painter",
]
