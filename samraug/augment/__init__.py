"""The augmentation core shared by the TorchIO transforms, the dataset and the MONAI transform.

- :mod:`samraug.augment.donors`: donor pools owned by the object that uses them, found again for replays
  through weak references only.
"""

from __future__ import annotations

from .donors import DonorPool, find_donors

__all__ = ["DonorPool", "find_donors"]
