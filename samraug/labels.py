"""Label schemes: the SAMR classes and the mappings from BraTS 2021 / 2023 / 2024 and custom schemes.

SAMR works on five classes (paper section 2): 0 background, 1 normal brain, 2 edema, 3 surgical cavity and
4 tumor. User data comes in its own scheme (BraTS 2021 marks enhancing tumor with 4, BraTS 2024 marks the
resection cavity with 4), so the scheme is always explicit: nothing here guesses between them.

A :class:`LabelScheme` converts a user label map to SAMR classes (``to_samr``; normal brain comes from a brain
mask) and back (``from_samr``), keeping the user's sub-labels (e.g. ET vs NETC) wherever a voxel keeps its SAMR
class, and giving edited voxels the sub-label of the nearest original voxel of the same class.

Example:
    >>> import numpy as np
    >>> from samraug.labels import get_scheme
    >>> scheme = get_scheme("brats2021")
    >>> seg = np.array([[0, 2, 4], [0, 1, 0]])
    >>> brain = np.array([[0, 1, 1], [1, 1, 0]], dtype=bool)
    >>> scheme.to_samr(seg, brain)
    array([[0, 2, 4],
           [1, 4, 0]])
    >>> scheme.from_samr(scheme.to_samr(seg, brain), original=seg)
    array([[0, 2, 4],
           [0, 1, 0]])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "BACKGROUND",
    "BRAIN",
    "CAVITY",
    "CONDITIONINGS",
    "EDEMA",
    "LESION_CLASSES",
    "N_CLASSES",
    "ROI_GROUPS",
    "ROI_NAMES",
    "SAMR_CLASSES",
    "SCHEMES",
    "TUMOR",
    "LabelScheme",
    "get_scheme",
    "mask_stack",
    "neighbour_slices",
    "one_hot",
    "roi_masks",
    "translate",
]

BACKGROUND, BRAIN, EDEMA, CAVITY, TUMOR = 0, 1, 2, 3, 4
SAMR_CLASSES: tuple[str, ...] = ("background", "normal_brain", "edema", "cavity", "tumor")
N_CLASSES = len(SAMR_CLASSES)
LESION_CLASSES: tuple[int, ...] = (EDEMA, CAVITY, TUMOR)
#: Discriminator ROIs (paper section 2): background, normal brain and lesion, in this order.
ROI_GROUPS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"background": (BACKGROUND,), "brain": (BRAIN,), "lesion": LESION_CLASSES}
)
ROI_NAMES: tuple[str, ...] = tuple(ROI_GROUPS)
#: How a generator is conditioned (``config.json`` key ``conditioning``): ``"native"`` = the weights' label scheme's
#: own lesion classes plus background and normal brain (:meth:`LabelScheme.classes`), so BraTS ET is painted as ET;
#: ``"samr"`` = the paper's 5 SAMR classes (weights written before conditioning existed use this).
CONDITIONINGS: tuple[str, ...] = ("native", "samr")

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _class_index(value: int | str) -> int:
    if isinstance(value, str):
        if value not in SAMR_CLASSES:
            raise ValueError(f"unknown SAMR class {value!r}; expected one of {SAMR_CLASSES}")
        return SAMR_CLASSES.index(value)
    if not 0 <= int(value) < N_CLASSES:
        raise ValueError(f"SAMR class {value} out of range 0..{N_CLASSES - 1} ({SAMR_CLASSES})")
    return int(value)


@dataclass(frozen=True, eq=False)
class LabelScheme:
    """A user label scheme and its mapping to the SAMR classes.

    Args:
        name: Short name used in errors, configs and model cards.
        names: Every allowed label value and its name, background (0) included.
        samr: For every label value, its SAMR class (index or name). Values mapped to ``background`` or
            ``normal_brain`` are "not lesion"; whether such a voxel is background or normal brain is decided by
            the brain mask, unless the scheme has an explicit normal-brain value.
        regions: Evaluation regions as sets of label values (e.g. BraTS WT/TC/ET), used by the metrics.
        defaults: For each SAMR lesion class, the label value given to edited voxels when no original voxel of
            that class exists to copy a sub-label from. Defaults to the smallest value of that class.

    Example:
        >>> s = LabelScheme.custom("mine", {0: "bg", 1: "lesion", 2: "oedema"}, {1: "tumor", 2: "edema"})
        >>> s.samr_of(1), s.samr_of(2)
        (4, 2)
    """

    name: str
    names: Mapping[int, str]
    samr: Mapping[int, int]
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    defaults: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {int(k): str(v) for k, v in self.names.items()}
        if 0 not in names:
            raise ValueError(f"label scheme {self.name!r} must define label 0 (background)")
        if any(k < 0 for k in names):
            raise ValueError(f"label scheme {self.name!r} has negative label values: {sorted(names)}")
        samr = {int(k): _class_index(v) for k, v in self.samr.items()}
        samr.setdefault(0, BACKGROUND)
        missing = sorted(set(names) - set(samr))
        if missing:
            raise ValueError(f"label scheme {self.name!r}: no SAMR class given for label values {missing}")
        extra = sorted(set(samr) - set(names))
        if extra:
            raise ValueError(f"label scheme {self.name!r}: SAMR classes given for undefined values {extra}")
        defaults = {}
        for cls in range(N_CLASSES):
            values = sorted(v for v, c in samr.items() if c == cls)
            if values:
                defaults[cls] = int(self.defaults.get(cls, values[0]))
                if samr.get(defaults[cls]) != cls:
                    raise ValueError(f"label scheme {self.name!r}: default {defaults[cls]} is not of class {cls}")
        regions = {str(k): tuple(sorted(int(x) for x in v)) for k, v in self.regions.items()}
        for region, values in regions.items():
            unknown = sorted(set(values) - set(names))
            if unknown:
                raise ValueError(f"label scheme {self.name!r}: region {region!r} uses undefined values {unknown}")
        lut = np.full(max(names) + 1, -1, dtype=np.int64)
        for value, cls in samr.items():
            lut[value] = cls
        inverse = np.zeros(N_CLASSES, dtype=np.int64)
        for cls in range(N_CLASSES):
            inverse[cls] = defaults.get(cls, 0)
        object.__setattr__(self, "names", MappingProxyType(names))
        object.__setattr__(self, "samr", MappingProxyType(samr))
        object.__setattr__(self, "regions", MappingProxyType(regions))
        object.__setattr__(self, "defaults", MappingProxyType(defaults))
        object.__setattr__(self, "_lut", lut)
        object.__setattr__(self, "_inverse", inverse)

    # ------------------------------------------------------------------ construction
    @classmethod
    def custom(
        cls,
        name: str,
        names: Mapping[int, str],
        samr: Mapping[int, int | str],
        regions: Mapping[str, tuple[int, ...]] | None = None,
        defaults: Mapping[int | str, int] | None = None,
    ) -> LabelScheme:
        """A scheme of your own: ``names`` lists every value, ``samr`` maps lesion values to SAMR classes.

        Values left out of ``samr`` must not exist; label 0 is background unless mapped otherwise.
        """
        samr_full = {int(k): _class_index(v) for k, v in samr.items()}
        defaults_idx = {_class_index(k): int(v) for k, v in (defaults or {}).items()}
        if regions is None:
            regions = {
                SAMR_CLASSES[c]: tuple(v for v, k in samr_full.items() if k == c)
                for c in LESION_CLASSES
                if c in samr_full.values()
            }
        return cls(name=name, names=names, samr=samr_full, regions=regions, defaults=defaults_idx)

    # ------------------------------------------------------------------ queries
    @property
    def values(self) -> tuple[int, ...]:
        """All label values of the scheme, sorted."""
        return tuple(sorted(self.names))

    @property
    def has_brain_label(self) -> bool:
        """Whether the scheme encodes normal brain itself (then no brain mask is needed)."""
        return BRAIN in self.samr.values()

    def samr_of(self, value: int) -> int:
        """The SAMR class of one label value."""
        if int(value) not in self.samr:
            raise ValueError(f"label {value} is not in scheme {self.name!r} (allowed: {list(self.values)})")
        return self.samr[int(value)]

    def values_of(self, samr_class: int | str) -> tuple[int, ...]:
        """The label values that map to one SAMR class."""
        cls = _class_index(samr_class)
        return tuple(v for v in self.values if self.samr[v] == cls)

    def validate(self, label: np.ndarray | torch.Tensor, what: str = "label map") -> None:
        """Raise ``ValueError`` naming the offending values if ``label`` holds values outside the scheme."""
        found = _unique(label)
        _check_integral(found, what)
        unknown = sorted(int(v) for v in found if int(v) not in self.samr)
        if unknown:
            raise ValueError(
                f"{what} has labels {set(unknown)} not in scheme {self.name!r} (allowed: {list(self.values)}); "
                "pass the scheme your data uses (e.g. scheme='brats2021' where 4 is enhancing tumor, "
                "'brats2024' where 4 is the resection cavity) or define one with LabelScheme.custom"
            )

    # ------------------------------------------------------------------ conversions
    def to_samr(self, label: Array, brain: Array | None = None) -> Array:
        """Map a label map in this scheme to SAMR classes (same type, shape and device; int64).

        Args:
            label: Integer label map of any shape, numpy array or torch tensor.
            brain: Boolean brain mask of the same shape. Non-lesion voxels inside it become normal brain,
                the others background; lesion voxels always count as brain. Required unless the scheme encodes
                normal brain itself.
        """
        self.validate(label)
        is_torch = isinstance(label, torch.Tensor)
        lab = label.long() if is_torch else np.asarray(label).astype(np.int64, copy=False)
        lut = torch.as_tensor(self._lut, device=lab.device) if is_torch else self._lut
        out = lut[lab]
        if brain is None:
            if not self.has_brain_label:
                raise ValueError(
                    f"scheme {self.name!r} does not encode normal brain: pass brain=<boolean brain mask> "
                    "(e.g. the non-zero voxels of the images)"
                )
            return out
        if tuple(brain.shape) != tuple(label.shape):
            raise ValueError(
                f"brain mask shape {tuple(brain.shape)} does not match label map shape {tuple(label.shape)}"
            )
        if is_torch:
            b = torch.as_tensor(brain, device=lab.device).bool()
            nonlesion = out < EDEMA
            out = torch.where(nonlesion, torch.where(b, BRAIN, BACKGROUND), out)
        else:
            b = np.asarray(brain).astype(bool, copy=False)
            nonlesion = out < EDEMA
            out = np.where(nonlesion, np.where(b, BRAIN, BACKGROUND), out)
        return out

    def from_samr(self, samr: Array, original: Array | None = None) -> Array:
        """Map SAMR classes back to this scheme (same type as ``samr``; int64).

        Where ``original`` (a label map in this scheme) is given, every voxel whose SAMR lesion class is
        unchanged keeps its original value, so sub-labels such as ET vs NETC survive; an edited lesion voxel
        takes the value of the nearest original voxel of the same class, or the scheme's default for that class
        if the original has none. Non-lesion voxels get the scheme's background or normal-brain value.
        """
        found = _unique(samr)
        _check_integral(found, "SAMR class map")
        bad = sorted(int(v) for v in found if not 0 <= int(v) < N_CLASSES)
        if bad:
            raise ValueError(f"SAMR class map has values {set(bad)}; SAMR classes are 0..4 ({SAMR_CLASSES})")
        is_torch = isinstance(samr, torch.Tensor)
        s = samr.detach().cpu().numpy() if is_torch else np.asarray(samr)
        s = s.astype(np.int64, copy=False)
        out = self._inverse[s]
        if original is not None:
            if tuple(original.shape) != tuple(samr.shape):
                raise ValueError(f"original label map shape {tuple(original.shape)} does not match {tuple(samr.shape)}")
            self.validate(original, "original label map")
            orig = original.detach().cpu().numpy() if isinstance(original, torch.Tensor) else np.asarray(original)
            orig = orig.astype(np.int64, copy=False)
            orig_cls = self._lut[orig]
            for cls in LESION_CLASSES:
                if len(self.values_of(cls)) < 2:
                    continue  # a single value per class: nothing to preserve
                target = s == cls
                if not target.any():
                    continue
                source = orig_cls == cls
                if not source.any():
                    continue
                keep = target & source
                out[keep] = orig[keep]
                fill = target & ~source
                if fill.any():
                    _, idx = ndimage.distance_transform_edt(~source, return_indices=True)
                    nearest = orig[tuple(idx)]
                    out[fill] = nearest[fill]
        if is_torch:
            return torch.as_tensor(out, device=samr.device)
        return out

    # ------------------------------------------------------------------ model conditioning
    @property
    def lesion_values(self) -> tuple[int, ...]:
        """The label values that are lesion (not background, not normal brain), ascending.

        Example:
            >>> get_scheme("brats2021").lesion_values
            (1, 2, 4)
        """
        return tuple(v for v in self.values if self.samr[v] in LESION_CLASSES)

    def classes(self, conditioning: str = "native") -> tuple[str, ...]:
        """The classes a generator conditioned on this scheme sees, in channel order.

        ``"native"``: background, normal brain, then every lesion value's own name (ascending value), so class
        ``2 + i`` is ``lesion_values[i]``. ``"samr"``: the paper's 5 SAMR classes. For the ``samr`` scheme both agree.

        Example:
            >>> get_scheme("brats2024").classes()
            ('background', 'normal_brain', 'NETC', 'SNFH', 'ET', 'RC')
            >>> get_scheme("brats2024").classes("samr")
            ('background', 'normal_brain', 'edema', 'cavity', 'tumor')
        """
        _check_conditioning(conditioning)
        if conditioning == "samr":
            return SAMR_CLASSES
        return (SAMR_CLASSES[BACKGROUND], SAMR_CLASSES[BRAIN], *(self.names[v] for v in self.lesion_values))

    def encode(self, label: Array, brain: Array | None = None, conditioning: str = "native") -> Array:
        """Map a label map in this scheme to model classes (``0..len(classes(conditioning)) - 1``; int64).

        Non-lesion voxels become normal brain inside ``brain`` and background outside it, as in :meth:`to_samr`;
        lesion voxels always count as brain. ``conditioning="samr"`` is :meth:`to_samr`.

        Example:
            >>> import numpy as np
            >>> s = get_scheme("brats2021")
            >>> s.encode(np.array([0, 0, 1, 2, 4]), brain=np.array([0, 1, 1, 1, 1], dtype=bool))
            array([0, 1, 2, 3, 4])
        """
        _check_conditioning(conditioning)
        samr = self.to_samr(label, brain)
        if conditioning == "samr":
            return samr
        is_torch = isinstance(label, torch.Tensor)
        lut = self._native_lut
        lab = label.long() if is_torch else np.asarray(label).astype(np.int64, copy=False)
        lesion = lut[lab] if not is_torch else torch.as_tensor(lut, device=lab.device)[lab]
        is_lesion = lesion >= 2
        if is_torch:
            return torch.where(is_lesion, lesion, samr)
        return np.where(is_lesion, lesion, samr)

    def decode(self, classes: Array, conditioning: str = "native", original: Array | None = None) -> Array:
        """Map model classes back to label values of this scheme (same type as ``classes``; int64).

        ``"native"`` is exact for lesion classes; background and normal brain become the scheme's background value
        (or its normal-brain value where it has one). ``"samr"`` is :meth:`from_samr` (``original`` keeps
        sub-labels).

        Example:
            >>> import numpy as np
            >>> s = get_scheme("brats2021")
            >>> s.decode(np.array([0, 1, 2, 3, 4]))
            array([0, 0, 1, 2, 4])
        """
        _check_conditioning(conditioning)
        if conditioning == "samr":
            return self.from_samr(classes, original)
        inverse = self._native_inverse
        found = _unique(classes)
        _check_integral(found, "class map")
        bad = sorted(int(v) for v in found if not 0 <= int(v) < len(inverse))
        if bad:
            raise ValueError(
                f"class map has values {set(bad)}; scheme {self.name!r} has classes 0..{len(inverse) - 1} "
                f"({', '.join(self.classes())})"
            )
        if isinstance(classes, torch.Tensor):
            return torch.as_tensor(inverse, device=classes.device)[classes.long()]
        return inverse[np.asarray(classes).astype(np.int64, copy=False)]

    @property
    def _native_lut(self) -> np.ndarray:
        lut = np.zeros(max(self.names) + 1, dtype=np.int64)
        for i, v in enumerate(self.lesion_values):
            lut[v] = 2 + i
        return lut

    @property
    def _native_inverse(self) -> np.ndarray:
        brain_values = self.values_of(BRAIN)
        head = [0, brain_values[0] if brain_values else 0]
        return np.asarray(head + list(self.lesion_values), dtype=np.int64)

    def __repr__(self) -> str:
        return f"LabelScheme({self.name!r}, {dict(self.names)})"

    def __reduce__(self):
        # mappingproxy fields cannot be pickled: rebuild from plain dicts (DataLoader workers, deepcopy).
        args = (self.name, dict(self.names), dict(self.samr), dict(self.regions), dict(self.defaults))
        return (type(self), args)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.samr.items())), tuple(sorted(self.regions.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelScheme):
            return NotImplemented
        return (self.name, dict(self.names), dict(self.samr), dict(self.regions), dict(self.defaults)) == (
            other.name,
            dict(other.names),
            dict(other.samr),
            dict(other.regions),
            dict(other.defaults),
        )


def _unique(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Distinct values; a bincount fast path for small non-negative integers (label maps), else a sort."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if not x.is_floating_point() and x.numel() and x.min() >= 0 and x.max() < 2**16:
            return torch.nonzero(torch.bincount(x.reshape(-1).long())).reshape(-1).cpu().numpy()
        return torch.unique(x).cpu().numpy()
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() < 2**16:
        return np.flatnonzero(np.bincount(x.reshape(-1).astype(np.int64, copy=False)))
    return np.unique(x)


def _check_integral(found: np.ndarray, what: str) -> None:
    if np.issubdtype(found.dtype, np.floating):
        if not np.all(np.isfinite(found)):
            raise ValueError(f"{what} contains NaN or inf; label maps must hold integer label values")
        if not np.all(found == np.round(found)):
            bad = sorted(float(x) for x in found[found != np.round(found)])[:5]
            raise ValueError(f"{what} has non-integer values {bad}; label maps must hold integers")


SCHEMES: Mapping[str, LabelScheme] = MappingProxyType(
    {
        "samr": LabelScheme(
            "samr",
            names=dict(enumerate(SAMR_CLASSES)),
            samr={i: i for i in range(N_CLASSES)},
            regions={"edema": (EDEMA,), "cavity": (CAVITY,), "tumor": (TUMOR,), "lesion": LESION_CLASSES},
        ),
        "brats2021": LabelScheme(
            "brats2021",
            names={0: "background", 1: "NCR/NET", 2: "ED", 4: "ET"},
            samr={0: BACKGROUND, 1: TUMOR, 2: EDEMA, 4: TUMOR},
            regions={"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
        ),
        "brats2023": LabelScheme(
            "brats2023",
            names={0: "background", 1: "NCR", 2: "ED", 3: "ET"},
            samr={0: BACKGROUND, 1: TUMOR, 2: EDEMA, 3: TUMOR},
            regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
        ),
        "brats2024": LabelScheme(
            "brats2024",
            names={0: "background", 1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"},
            samr={0: BACKGROUND, 1: TUMOR, 2: EDEMA, 3: TUMOR, 4: CAVITY},
            regions={
                "NETC": (1,),
                "SNFH": (2,),
                "ET": (3,),
                "RC": (4,),
                "TC": (1, 3),
                "WT": (1, 2, 3),
            },
        ),
    }
)


def get_scheme(scheme: str | LabelScheme) -> LabelScheme:
    """Look up a scheme by name (``samr``, ``brats2021``, ``brats2023``, ``brats2024``) or pass one through."""
    if isinstance(scheme, LabelScheme):
        return scheme
    try:
        return SCHEMES[str(scheme).lower()]
    except KeyError:
        raise ValueError(
            f"unknown label scheme {scheme!r}; use one of {sorted(SCHEMES)} or LabelScheme.custom(...)"
        ) from None


def _check_conditioning(conditioning: str) -> None:
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"unknown conditioning {conditioning!r}; use one of {list(CONDITIONINGS)}")


#: Label correspondences between the built-in BraTS schemes (source value -> target value), used by
#: :func:`translate` when no mapping is given. BraTS 2021 -> 2023/2024 renumbers ET 4 -> 3; 2023 -> 2024 is the
#: identity on NCR/NETC, ED/SNFH and ET. Going back from 2024 is only possible without resection cavity.
_KNOWN_TRANSLATIONS: Mapping[tuple[str, str], Mapping[int, int]] = MappingProxyType(
    {
        ("brats2021", "brats2023"): MappingProxyType({0: 0, 1: 1, 2: 2, 4: 3}),
        ("brats2021", "brats2024"): MappingProxyType({0: 0, 1: 1, 2: 2, 4: 3}),
        ("brats2023", "brats2024"): MappingProxyType({0: 0, 1: 1, 2: 2, 3: 3}),
        ("brats2023", "brats2021"): MappingProxyType({0: 0, 1: 1, 2: 2, 3: 4}),
        ("brats2024", "brats2023"): MappingProxyType({0: 0, 1: 1, 2: 2, 3: 3}),
        ("brats2024", "brats2021"): MappingProxyType({0: 0, 1: 1, 2: 2, 3: 4}),
    }
)


def translate(
    label: Array,
    source: str | LabelScheme,
    target: str | LabelScheme,
    mapping: Mapping[int, int] | None = None,
) -> Array:
    """Relabel a map from one scheme to another: explicitly, never by guessing.

    ``mapping`` (source value -> target value) is required unless the schemes are equal or a built-in BraTS
    correspondence exists (2021 <-> 2023 <-> 2024; values without a counterpart, e.g. 2024's resection cavity going
    to 2021, are refused). Every value present in ``label`` must be mapped.

    Example:
        >>> import numpy as np
        >>> translate(np.array([0, 1, 2, 4]), "brats2021", "brats2024")
        array([0, 1, 2, 3])
    """
    src, dst = get_scheme(source), get_scheme(target)
    src.validate(label, f"label map (scheme {src.name!r})")
    if mapping is None:
        if src == dst:
            return label.clone() if isinstance(label, torch.Tensor) else np.array(label, copy=True)
        known = _KNOWN_TRANSLATIONS.get((src.name, dst.name))
        if known is None:
            raise ValueError(
                f"no built-in correspondence from scheme {src.name!r} to {dst.name!r}: pass mapping="
                "{source value: target value} for every label value your data holds"
            )
        mapping = known
    mapping = {int(k): int(v) for k, v in mapping.items()}
    unknown_targets = sorted(v for v in mapping.values() if v not in dst.names)
    if unknown_targets:
        raise ValueError(
            f"mapping targets {unknown_targets} are not labels of scheme {dst.name!r} ({list(dst.values)})"
        )
    present = [int(v) for v in _unique(label)]
    unmapped = sorted(v for v in present if v not in mapping)
    if unmapped:
        names = ", ".join(f"{v} ({src.names[v]})" for v in unmapped)
        raise ValueError(
            f"label values {names} of scheme {src.name!r} have no counterpart in scheme {dst.name!r}; "
            "pass mapping={...} naming a target for each, or remove them"
        )
    lut = np.zeros(max(src.names) + 1, dtype=np.int64)
    for k, v in mapping.items():
        if k < len(lut):
            lut[k] = v
    if isinstance(label, torch.Tensor):
        return torch.as_tensor(lut, device=label.device)[label.long()]
    return lut[np.asarray(label).astype(np.int64, copy=False)]


def one_hot(
    samr: torch.Tensor,
    n_classes: int = N_CLASSES,
    dtype: torch.dtype = torch.float32,
    channel_dim: int | None = None,
) -> torch.Tensor:
    """One-hot encode SAMR classes. The class channel goes to ``channel_dim``: by default 0 for a 2D map
    ``(H, W) -> (C, H, W)`` and 1 otherwise ``(B, H, W) -> (B, C, H, W)``; pass ``channel_dim=0`` for a volume.

    Example:
        >>> one_hot(torch.tensor([[0, 4]])).shape
        torch.Size([5, 1, 2])
    """
    samr = torch.as_tensor(samr).long()
    if samr.numel() and (samr.min() < 0 or samr.max() >= n_classes):
        raise ValueError(f"class map has values outside 0..{n_classes - 1}")
    if channel_dim is None:
        channel_dim = 0 if samr.dim() == 2 else 1
    oh = torch.nn.functional.one_hot(samr, n_classes).to(dtype)
    return oh.movedim(-1, channel_dim).contiguous()


def neighbour_slices(z: torch.Tensor | int, mask_slices: int, depth: int) -> torch.Tensor:
    """Axial indices ``z - c .. z + c`` of each slice ``z`` (``mask_slices = 2c + 1``), clipped to ``0 .. depth - 1``
    (beyond the volume the edge slice repeats): ``(B,)`` -> ``(B, mask_slices)`` int64.

    Example:
        >>> neighbour_slices(torch.tensor([0, 5, 9]), 3, 10).tolist()
        [[0, 0, 1], [4, 5, 6], [8, 9, 9]]
    """
    if mask_slices < 1 or mask_slices % 2 != 1:
        raise ValueError(f"mask_slices must be a positive odd number, got {mask_slices}")
    zs = torch.as_tensor(z, dtype=torch.long).reshape(-1, 1)
    c = mask_slices // 2
    return (zs + torch.arange(-c, c + 1)).clamp_(0, max(int(depth) - 1, 0))


def mask_stack(classes: torch.Tensor, n_classes: int = N_CLASSES, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot stacks of adjacent slices, the input of a generator that sees ``m`` mask slices: class maps
    ``(B, m, H, W)`` (slices ``z - c .. z + c`` of each painted slice ``z``) -> ``(B, m * n_classes, H, W)``,
    slice-major (the ``n_classes`` channels of slice ``z - c`` first).

    Example:
        >>> vol = torch.zeros(4, 4, 6, dtype=torch.long); vol[..., 3] = 1
        >>> idx = neighbour_slices(torch.tensor([2]), 3, 6)  # slices 1, 2, 3
        >>> x = mask_stack(vol[..., idx[0]].permute(2, 0, 1)[None], n_classes=2)
        >>> x.shape, x[0, :, 0, 0].tolist()
        (torch.Size([1, 6, 4, 4]), [1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    """
    c = torch.as_tensor(classes)
    if c.dim() != 4:
        raise ValueError(f"expected class maps (B, m, H, W) of adjacent slices, got shape {tuple(c.shape)}")
    return one_hot(c, n_classes, dtype=dtype, channel_dim=2).flatten(1, 2)


def roi_masks(onehot: torch.Tensor) -> torch.Tensor:
    """The three discriminator ROI masks (background, brain, lesion) from a one-hot class mask.

    Works for every conditioning (:meth:`LabelScheme.classes`): channel 0 is background, channel 1 normal brain and
    every further channel a lesion class. ``(B, C, H, W)`` -> ``(B, 3, H, W)``, or ``(C, H, W)`` -> ``(3, H, W)``,
    ``C >= 3``. Soft one-hots give soft ROIs.

    Example:
        >>> roi_masks(one_hot(torch.tensor([[0, 1, 4]]))).squeeze(1).T
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """
    if onehot.dim() not in (3, 4) or onehot.shape[-3] < 3:
        raise ValueError(f"expected a (B, C, H, W) or (C, H, W) one-hot with C >= 3, got {tuple(onehot.shape)}")
    dim = onehot.dim() - 3
    bg = onehot.narrow(dim, 0, 1)
    brain = onehot.narrow(dim, 1, 1)
    lesion = onehot.narrow(dim, 2, onehot.shape[dim] - 2).sum(dim, keepdim=True)
    return torch.cat([bg, brain, lesion], dim=dim)
