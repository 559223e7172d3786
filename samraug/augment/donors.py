"""Donor pools: the label maps whose lesions a swap may paste, owned by the transform or dataset that uses them.

A recorded edit names its pool by a plain key (so histories stay JSON-able). Replaying in the process that made the
sample finds the pool through a table of *weak* references: the table never keeps a pool (or the dataset that
serves it) alive, so ``del`` of a transform or dataset frees it. A replay in another process passes the donors
explicitly (``SAMRSynthesizeFixed(..., donors=pool)``).

Example:
    >>> import numpy as np
    >>> pool = DonorPool([np.zeros((4, 4, 4), np.uint8)])
    >>> pool.key.startswith("donors:"), len(pool)
    (True, 1)
    >>> find_donors(pool.key) is pool
    True
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torchio as tio

from samraug.augment.views import affine_of
from samraug.subjects import affines_agree

__all__ = ["DonorPool", "DonorSource", "RecipientDonors", "donors_key", "find_donors", "label_array", "track"]


class DonorSource(Protocol):
    """An object that serves donor pools by the part of a key after its own prefix (e.g. a dataset)."""

    def donor_pool(self, suffix: str) -> Sequence[Any] | None: ...


#: Live donor sources by key prefix, weakly referenced (never keeps a pool or dataset alive).
_LIVE: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def label_array(x: Any, what: str) -> np.ndarray:
    """A 2D/3D label map as a numpy array (a leading channel of 1 dropped; ``tio.Image`` and tensors accepted)."""
    if isinstance(x, tio.Image):
        x = x.data
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"{what} must be a 2D or 3D label map (a leading channel of 1 is fine), got {arr.shape}")
    return arr


def donors_key(arrays: Sequence[np.ndarray]) -> str:
    """A digest of the arrays: the same pool gets the same key in every process."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return f"donors:{h.hexdigest()[:16]}"


class DonorPool(Sequence):
    """A fixed list of donor label maps (in the subjects' scheme) with a content key.

    ``affines``: each donor's affine where it carries one (``tio.LabelMap``, ``MetaTensor``), else None
    (:meth:`donor_affine`); a carve checks it against the sample's, and a swap drawn at the donor's place keeps it
    there only on the sample's grid (:class:`RecipientDonors`). Pickles as its arrays and affines; the copy in the
    receiving process is findable by the same key.
    """

    def __init__(self, donors: Sequence[Any]) -> None:
        self.affines = [affine_of(d) for d in donors]
        self.arrays = [label_array(d, f"donor #{i}") for i, d in enumerate(donors)]
        if not self.arrays:
            raise ValueError("donors is empty; pass at least one label map, or donors=None for no swap")
        self.key = donors_key(self.arrays)
        track(self.key, self)

    def donor_pool(self, suffix: str) -> DonorPool:
        return self

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self.arrays[i]

    def donor_affine(self, i: int) -> np.ndarray | None:
        """Donor ``i``'s affine, or None where it carries none (a plain array)."""
        return self.affines[i]

    def __getstate__(self) -> dict[str, Any]:
        return {"arrays": self.arrays, "key": self.key, "affines": self.affines}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.arrays, self.key = state["arrays"], state["key"]
        self.affines = state.get("affines") or [None] * len(self.arrays)
        track(self.key, self)


class RecipientDonors(Sequence):
    """A donor pool as one recipient sees it: the same label maps, plus :meth:`on_grid`, which the
    :class:`~samraug.editing.LesionEditor` asks before it keeps a swapped lesion at the donor's own place
    (``EditPolicy(swap_at=("donor", ...))``): a donor on another grid has its lesion placed at random instead, as one
    of another shape always had. Where the recipient's or the donor's affine is unknown, only the shapes decide.

    Args:
        donors: The pool (a :class:`DonorPool`, a dataset's lazy pool, any sequence of label maps).
        affine: The recipient's 4x4 affine (None: unknown).
        affines: The donors' affines (None for a donor without one); default: ``donors.donor_affine(i)`` where the
            pool has it, else unknown.

    Example:
        >>> import numpy as np
        >>> shifted = np.eye(4); shifted[0, 3] = 30.0
        >>> seen = RecipientDonors([np.zeros((4, 4, 4), np.uint8)] * 2, np.eye(4), affines=[np.eye(4), shifted])
        >>> len(seen), seen.on_grid(0), seen.on_grid(1)
        (2, True, False)
    """

    def __init__(self, donors: Sequence[Any], affine: Any, affines: Sequence[Any] | None = None) -> None:
        if affines is not None and len(affines) != len(donors):
            raise ValueError(f"affines has {len(affines)} entries for {len(donors)} donors; give one per donor")
        self.donors, self.affine, self.affines = donors, affine, affines

    def __len__(self) -> int:
        return len(self.donors)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        return self.donors[i]

    def name_of(self, i: int) -> str:
        """Where donor ``i`` comes from (the pool's name for it where it has one)."""
        return self.donors.name_of(i) if hasattr(self.donors, "name_of") else f"donors[{i}]"

    def donor_affine(self, i: int) -> np.ndarray | None:
        """Donor ``i``'s affine: from ``affines``, else the pool's ``donor_affine(i)``; None where unknown."""
        if self.affines is not None:
            return self.affines[i]
        pool_affine = getattr(self.donors, "donor_affine", None)
        return None if pool_affine is None else pool_affine(i)

    def on_grid(self, i: int) -> bool:
        """Whether donor ``i`` lies on the recipient's grid as far as the affines tell (shapes: the editor's)."""
        return affines_agree(self.donor_affine(i), self.affine)


def track(prefix: str, source: Any) -> None:
    """Make ``source`` findable under ``prefix`` while it lives (weakly; an existing live source is kept)."""
    if _LIVE.get(prefix) is None:
        _LIVE[prefix] = source


def find_donors(key: str | None) -> Sequence[Any] | None:
    """The donor pool a recorded edit names (None for None), if its owner still lives in this process.

    Keys are ``"donors:<digest>"`` (a :class:`DonorPool`) or ``"<source>:<suffix>"`` served by a tracked source.
    """
    if key is None:
        return None
    if key in _LIVE:
        return _LIVE[key].donor_pool("")
    prefix, _, suffix = key.rpartition(":")
    source = _LIVE.get(prefix) if prefix else None
    if source is None:
        raise ValueError(
            f"donor pool {key!r} is not alive in this process (its transform or dataset was freed, or the sample "
            "was made in another process); pass the donors explicitly: SAMRSynthesizeFixed(..., donors=<the same "
            "list of label maps>) or SAMRSynthesizeFixed(..., donors=DonorPool(...))"
        )
    return source.donor_pool(suffix)
