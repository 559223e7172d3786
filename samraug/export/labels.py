"""nnU-Net label maps: a scheme's values as consecutive integers, region-based entries, and the way back.

nnU-Net v2 needs consecutive label values (0, 1, 2, ...). BraTS 2021 marks enhancing tumour with 4 (no 3), so its
values ``0, 1, 2, 4`` become ``0, 1, 2, 3``; BraTS 2023 / 2024 are already consecutive (identity). For the BraTS
schemes the ``dataset.json`` entry is region-based (whole tumour ``WT``, tumour core ``TC``, enhancing tumour ``ET``
and, for BraTS 2024, the resection cavity ``RC`` as a region of its own) with a ``regions_class_order`` such that
nnU-Net's region predictions turn back into exactly one consecutive label per voxel; :func:`labels_to_scheme` maps
those back to the scheme (e.g. BraTS 2021: 3 -> 4) for submission.

Example:
    >>> import numpy as np
    >>> labels = NnunetLabels.from_scheme("brats2021")
    >>> labels.to_consecutive(np.array([0, 1, 2, 4])).tolist()
    [0, 1, 2, 3]
    >>> labels.to_scheme(np.array([0, 1, 2, 3])).tolist()
    [0, 1, 2, 4]
    >>> labels.dataset_json_labels()
    {'background': 0, 'WT': [1, 2, 3], 'TC': [1, 3], 'ET': [3]}
    >>> labels.regions_class_order
    [2, 1, 3]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..labels import LabelScheme, get_scheme

__all__ = ["BRATS_REGIONS", "NnunetLabels", "labels_to_scheme", "regions_class_order"]

#: Region names used for region-based nnU-Net training, in nnU-Net's order (outermost first), when a scheme has them.
BRATS_REGIONS: tuple[str, ...] = ("WT", "TC", "ET", "RC")


def regions_class_order(regions: Sequence[Sequence[int]], foreground: Sequence[int]) -> list[int]:
    """The label each region writes when nnU-Net turns region predictions into a label map, in region order.

    nnU-Net writes label ``order[i]`` wherever region ``i`` is predicted, later regions overwriting earlier ones,
    so region ``i`` must own exactly one label: the one it holds that no later region holds. Raises
    ``ValueError`` when the regions do not allow that (then train label-based instead).

    Example:
        >>> regions_class_order([(1, 2, 3), (1, 3), (3,)], [1, 2, 3])
        [2, 1, 3]
    """
    order: list[int] = []
    for i, region in enumerate(regions):
        later = set().union(*[set(r) for r in regions[i + 1 :]]) if i + 1 < len(regions) else set()
        own = sorted(set(region) - later)
        if len(own) != 1:
            raise ValueError(
                f"region #{i} {list(region)} owns labels {own} once the later regions are written; a region-based "
                "export needs exactly one per region (pass region_based=False for label-based training)"
            )
        order.append(own[0])
    missing = sorted(set(foreground) - set(order))
    if missing or len(set(order)) != len(order):
        raise ValueError(
            f"regions {[list(r) for r in regions]} do not give every foreground label {list(foreground)} exactly "
            f"once (missing {missing}); pass region_based=False for label-based training"
        )
    return order


@dataclass(frozen=True)
class NnunetLabels:
    """A label scheme's mapping to nnU-Net's consecutive labels, and its ``dataset.json`` entries.

    Attributes:
        scheme: The label scheme's name.
        values: The scheme's label values, sorted; ``values[i]`` becomes nnU-Net label ``i``.
        names: Name of each consecutive label.
        regions: ``(name, consecutive labels)`` of each region for region-based training; empty: label-based.
        regions_class_order: The label each region writes (see :func:`regions_class_order`); None: label-based.
    """

    scheme: str
    values: tuple[int, ...]
    names: tuple[str, ...]
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    regions_class_order: list[int] | None = None

    @classmethod
    def from_scheme(cls, scheme: str | LabelScheme, *, region_based: bool | None = None) -> NnunetLabels:
        """The mapping for ``scheme``; ``region_based=None``: region-based when the scheme has WT, TC and ET."""
        s = get_scheme(scheme)
        values = tuple(sorted(s.values))
        index = {v: i for i, v in enumerate(values)}
        names = tuple(s.names[v] for v in values)
        has_brats = all(r in s.regions for r in BRATS_REGIONS[:3])
        if region_based is None:
            region_based = has_brats
        if not region_based:
            return cls(s.name, values, names)
        if not has_brats:
            raise ValueError(
                f"label scheme {s.name!r} has no WT/TC/ET regions (it has {sorted(s.regions)}); use region_based=False"
            )
        regions = []
        for name in BRATS_REGIONS:
            if name in s.regions:
                regions.append((name, tuple(sorted(index[v] for v in s.regions[name]))))
        # a lesion value in no region (e.g. a cavity without an RC region) would be lost: give it its own region
        covered = {v for _, r in regions for v in r}
        for v in values[1:]:
            if index[v] not in covered:
                regions.append((s.names[v], (index[v],)))
        order = regions_class_order([r for _, r in regions], list(range(1, len(values))))
        return cls(s.name, values, names, tuple(regions), order)

    @property
    def region_based(self) -> bool:
        return bool(self.regions)

    def dataset_json_labels(self) -> dict[str, Any]:
        """The ``labels`` entry of ``dataset.json`` (region lists when region-based, else one value per name)."""
        if self.region_based:
            return {"background": 0, **{name: list(r) for name, r in self.regions}}
        out: dict[str, Any] = {}
        for i, name in enumerate(self.names):
            out["background" if i == 0 else _unique_name(name, out)] = i
        return out

    def dataset_json_entries(self) -> dict[str, Any]:
        """``labels`` and, when region-based, ``regions_class_order``."""
        out: dict[str, Any] = {"labels": self.dataset_json_labels()}
        if self.region_based:
            out["regions_class_order"] = list(self.regions_class_order or [])
        return out

    def _lut(self, values: Sequence[int], what: str) -> np.ndarray:
        lut = np.full(max(values) + 1, -1, dtype=np.int64)
        lut[list(values)] = np.arange(len(values)) if what == "to" else np.asarray(self.values)
        return lut

    def to_consecutive(self, label: np.ndarray) -> np.ndarray:
        """Scheme values -> consecutive labels (uint8). Raises ``ValueError`` on values outside the scheme."""
        return _apply(self._lut(self.values, "to"), label, f"scheme {self.scheme!r}", list(self.values))

    def to_scheme(self, label: np.ndarray) -> np.ndarray:
        """nnU-Net's consecutive labels -> scheme values (uint8); the inverse of :meth:`to_consecutive`."""
        consecutive = list(range(len(self.values)))
        return _apply(self._lut(consecutive, "from"), label, f"nnU-Net labels of {self.scheme!r}", consecutive)

    def to_plain(self) -> dict[str, Any]:
        """A JSON-able description (recorded in the export's manifest)."""
        return {
            "scheme": self.scheme,
            "values": list(self.values),
            "names": list(self.names),
            "regions": {name: list(r) for name, r in self.regions},
            "regions_class_order": self.regions_class_order,
        }


def _unique_name(name: str, taken: Mapping[str, Any]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    return out


def _apply(lut: np.ndarray, label: np.ndarray, what: str, allowed: list[int]) -> np.ndarray:
    arr = np.asarray(label)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"label map for {what} has non-integer values; expected integers in {allowed}")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"label map for {what} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    found = np.unique(arr)
    bad = [int(v) for v in found if v < 0 or v >= len(lut) or lut[v] < 0]
    if bad:
        raise ValueError(f"label map has values {bad} that are not labels of {what} (allowed: {allowed})")
    return lut[arr].astype(np.uint8)


def labels_to_scheme(label: np.ndarray, scheme: str | LabelScheme) -> np.ndarray:
    """Map an nnU-Net prediction (consecutive labels) back to ``scheme``'s values, e.g. BraTS 2021 3 -> 4.

    Example:
        >>> labels_to_scheme(np.array([[0, 3], [2, 1]]), "brats2021").tolist()
        [[0, 4], [2, 1]]
    """
    return NnunetLabels.from_scheme(scheme, region_based=False).to_scheme(label)
