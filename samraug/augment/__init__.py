"""The augmentation core shared by the TorchIO transforms, the dataset and the MONAI transform.

- :mod:`samraug.augment.views`: the item readers (a ``tio.Subject``, a dict or a tuple read into an
  :class:`ItemView`).
- :mod:`samraug.augment.edits`: the edit kinds (random, CarveMix's carve, both) and the replay of a recorded edit.
- :mod:`samraug.augment.pipeline`: :func:`augment_view`, the one plan -> edit -> paint path of every front-end.
- :mod:`samraug.augment.core`: edit adapters, pending samples, writing results back in the item's own format and
  types.
- :mod:`samraug.augment.batched`: the batched generator path (one generator call per batch in the main process).
- :mod:`samraug.augment.donors`: donor pools owned by the object that uses them, found again for replays
  through weak references only.
- :mod:`samraug.augment.painters`: what turns an edited label map into images, behind one interface
  (``"samr"`` whole/local, ``"copy-paste"``, ``"labels-to-image"``).

Example:
    >>> import numpy as np, torch
    >>> view = plain_view({"image": torch.ones(1, 4, 4), "label": np.zeros((4, 4), np.uint8)}, label_key="label",
    ...                   image_key="image", mapping={"t1n": 0}, sequences=["t1n"])
    >>> view.label.shape, view.label_key
    ((4, 4), 'label')
"""

from __future__ import annotations

from .core import PendingSample
from .donors import DonorPool, find_donors
from .edits import CarveEdit
from .painters import PAINTERS, CopyPastePainter, Donor, LabelsToImagePainter, Painter, SAMRPainter, get_painter
from .pipeline import Augmented, augment_view
from .views import ItemView, plain_view, subject_view

__all__ = [
    "PAINTERS",
    "Augmented",
    "CarveEdit",
    "CopyPastePainter",
    "Donor",
    "DonorPool",
    "ItemView",
    "LabelsToImagePainter",
    "Painter",
    "PendingSample",
    "SAMRPainter",
    "augment_view",
    "find_donors",
    "get_painter",
    "plain_view",
    "subject_view",
]
