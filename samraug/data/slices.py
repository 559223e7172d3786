"""2D training instances from 3D subjects: axial slices with their one-hot class mask, atlas stack and stats.

Labels become model classes with :meth:`samraug.labels.LabelScheme.encode` under a ``conditioning``:
``"native"`` (background, normal brain, then each lesion label of the scheme) or ``"samr"`` (the paper's 5
classes; the default here, so existing callers keep SAMR ground truth). Class 0 is always background, 1 normal
brain and 2.. lesion, whatever the conditioning.

An instance (one axial slice ``z``, the last volume axis) is a dict:

- ``"mask"`` ``(K, H, W)`` float32 one-hot model classes (K = number of classes of the conditioning);
  ``"label"`` ``(H, W)`` int64 model classes;
- ``"mask_stack"`` ``(m * K, H, W)`` float32 one-hot classes of slices ``z - c .. z + c`` (slice-major,
  :func:`samraug.labels.mask_stack`; the edge slice repeats beyond the volume), the input of a generator that sees
  ``m = 2c + 1`` mask slices; only with ``mask_slices=m > 1``;
- ``"atlas"`` ``(3n, H, W)`` float32 atlas slices z-1, z, z+1 per sequence (absent when no atlas is given);
- ``"image"`` ``(n, H, W)`` float32 in [-1, 1] (each sequence normalised over the subject's whole brain);
- ``"brain"`` ``(H, W)`` bool (brain mask, lesion included); ``"z"`` int; ``"subject_id"`` str;
- ``"stats"`` ``(n, 2)`` float32 (low, high) per sequence, to map images back (:func:`to_subject_scale`);
- ``"orig_size"`` ``(2,)`` int64, the slice size ``(X, Y)`` before padding (for :func:`unpad`).

``H, W`` is the slice size padded (or cropped), centred, to a multiple of ``multiple`` (BraTS 240 -> 256 for 32;
phantom 2 mm 99x117 -> 128x128). Padding is -1 for images and atlas, background for the mask (channel 0 = 1),
False for the brain. :func:`pad_or_crop` and :func:`unpad` are the one pair used to go to and from that size.

Example:
    >>> import torch
    >>> x = torch.zeros(3, 240, 240)
    >>> y = pad_or_crop(x, padded_size(x.shape[-2:], 32), value=-1.0)
    >>> y.shape, unpad(y, (240, 240)).shape
    (torch.Size([3, 256, 256]), torch.Size([3, 240, 240]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torchio as tio
from torch.utils.data import Dataset

from ..intensity import BACKGROUND_VALUE, Normalization, denormalize_sequences, stats_to_array
from ..labels import (
    BACKGROUND,
    BRAIN,
    EDEMA,
    N_CLASSES,
    SCHEMES,
    LabelScheme,
    get_scheme,
    mask_stack,
    neighbour_slices,
    one_hot,
)
from ..padding import Array, pad_or_crop, padded_size, unpad
from .brats import subject_arrays

if TYPE_CHECKING:  # the atlas module imports samraug.data; a runtime import here would be circular
    from ..atlas import Atlas

__all__ = [
    "PreparedSubject",
    "SliceDataset",
    "make_instance",
    "pad_or_crop",
    "padded_size",
    "paste_slices",
    "prepare_subject",
    "select_slices",
    "slice_instances",
    "to_subject_scale",
    "unpad",
]

Selection = Literal["brain", "lesion", "all"]


# ---------------------------------------------------------------------------------------------- one subject
@dataclass
class PreparedSubject:
    """One subject normalised once, kept for the slices selected from it.

    ``images`` ``(n, X, Y, k)`` float32 normalised, ``label`` ``(X, Y, k)`` uint8 model classes (``n_classes`` of
    them, see ``conditioning``) for the ``k`` kept slices ``z`` (their indices in the full volume); ``stats``
    ``(n, 2)`` float32. ``volume_label`` ``(X, Y, Z)`` uint8: the model classes of every slice, kept only for
    instances with adjacent mask slices (``mask_slices > 1``), else None.
    """

    subject_id: str
    images: torch.Tensor
    label: torch.Tensor
    z: list[int]
    stats: torch.Tensor
    shape: tuple[int, int, int]
    affine: np.ndarray
    conditioning: str = "samr"
    n_classes: int = N_CLASSES
    volume_label: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self._pos = {z: k for k, z in enumerate(self.z)}

    def local(self, z: int) -> int:
        """Position of volume slice ``z`` among the kept slices."""
        try:
            return self._pos[int(z)]
        except KeyError:
            raise IndexError(
                f"slice {z} was not kept for subject {self.subject_id!r} (kept: {self.z[:8]}...)"
            ) from None


def select_slices(
    label: np.ndarray | torch.Tensor,
    selection: Selection = "brain",
    *,
    min_brain_voxels: int = 1,
    min_lesion_voxels: int = 1,
) -> list[int]:
    """Axial slices (last axis) of a SAMR label volume to use.

    ``"brain"``: at least ``min_brain_voxels`` brain voxels (lesion included); ``"lesion"``: that, and at least
    ``min_lesion_voxels`` lesion voxels; ``"all"``: every slice.

    Example:
        >>> lab = np.zeros((4, 4, 3), int); lab[..., 1] = 1; lab[0, 0, 2] = 4
        >>> select_slices(lab, "brain"), select_slices(lab, "lesion"), select_slices(lab, "all")
        ([1, 2], [2], [0, 1, 2])
    """
    lab = torch.as_tensor(label)
    if lab.dim() != 3:
        raise ValueError(f"expected a (X, Y, Z) label volume, got shape {tuple(lab.shape)}")
    if selection == "all":
        return list(range(lab.shape[2]))
    n_brain = (lab > BACKGROUND).sum(dim=(0, 1))
    keep = n_brain >= max(1, int(min_brain_voxels))
    if selection == "lesion":
        keep &= (lab >= EDEMA).sum(dim=(0, 1)) >= max(1, int(min_lesion_voxels))
    elif selection != "brain":
        raise ValueError(f"selection must be 'brain', 'lesion' or 'all', got {selection!r}")
    return torch.nonzero(keep).flatten().tolist()


def _scheme_of(subject: Any, scheme: str | LabelScheme | None) -> LabelScheme | None:
    if scheme is not None:
        return get_scheme(scheme)
    if isinstance(subject, Mapping) and "scheme" in subject:
        return get_scheme(subject["scheme"])
    return None


def prepare_subject(
    subject: tio.Subject | Mapping[str, Any],
    sequences: Sequence[str],
    *,
    scheme: str | LabelScheme | None = None,
    atlas: Atlas | None = None,
    z_indices: Sequence[int] | None = None,
    selection: Selection = "brain",
    min_brain_voxels: int = 1,
    seg_key: str = "seg",
    brain_key: str = "brain",
    conditioning: str = "samr",
    normalization: Normalization | None = None,
    keep_volume_label: bool = False,
) -> PreparedSubject:
    """Read, check and normalise one subject and keep its selected slices (see :func:`slice_instances`); labels
    become model classes of ``conditioning`` (``scheme.encode``). ``normalization`` (default ``Normalization()``)
    takes its percentiles over the normal-appearing brain (classes above normal brain excluded).
    ``keep_volume_label``: also keep every slice's classes (for instances with adjacent mask slices)."""
    arrays = subject_arrays(subject, sequences, seg_key=seg_key, brain_key=brain_key)
    what = f"subject {arrays.subject_id!r}"
    if atlas is not None:
        atlas.check_grid(arrays.shape, arrays.affine, what)
    s = _scheme_of(subject, scheme)
    if s is not None:
        n_classes = len(s.classes(conditioning))
    elif conditioning == "samr":
        n_classes = N_CLASSES
    else:
        raise ValueError(
            f"{what}: conditioning {conditioning!r} needs the label scheme: pass scheme= (e.g. 'brats2024')"
        )
    if arrays.seg is not None:
        if s is None:
            raise ValueError(f"{what} has a label map but no scheme: pass scheme= (e.g. 'brats2021')")
        samr = s.encode(arrays.seg, arrays.brain, conditioning)
    else:
        samr = np.where(arrays.brain, BRAIN, BACKGROUND)
    brain = samr > BACKGROUND
    spec = Normalization() if normalization is None else normalization
    try:
        norm, stats = spec.normalize_sequences(arrays.images, brain, samr > BRAIN)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    depth = arrays.shape[2]
    if z_indices is not None:
        zs = [int(z) for z in z_indices]
        bad = [z for z in zs if not 0 <= z < depth]
        if bad:
            raise IndexError(f"{what}: slice indices {bad[:5]} out of range 0..{depth - 1}")
    else:
        zs = select_slices(samr, selection, min_brain_voxels=min_brain_voxels)
    zi = np.asarray(zs, dtype=np.int64)
    return PreparedSubject(
        subject_id=arrays.subject_id,
        images=torch.from_numpy(np.ascontiguousarray(norm[..., zi])),
        label=torch.from_numpy(np.ascontiguousarray(samr[..., zi].astype(np.uint8))),
        z=zs,
        stats=torch.from_numpy(stats_to_array(stats)),
        shape=arrays.shape,
        affine=arrays.affine,
        conditioning=conditioning,
        n_classes=n_classes,
        volume_label=torch.from_numpy(samr.astype(np.uint8)) if keep_volume_label else None,
    )


def make_instance(
    prepared: PreparedSubject, z: int, atlas: Atlas | None, size: Sequence[int], mask_slices: int = 1
) -> dict[str, Any]:
    """The training instance dict (module docstring) of slice ``z`` of a prepared subject, at ``size``;
    ``mask_slices > 1`` adds ``"mask_stack"`` (the prepared subject must keep its ``volume_label``)."""
    k = prepared.local(z)
    label = pad_or_crop(prepared.label[..., k].long(), size, value=BACKGROUND)
    inst: dict[str, Any] = {
        "mask": one_hot(label, prepared.n_classes),
        "label": label,
        "image": pad_or_crop(prepared.images[..., k].clone(), size, value=BACKGROUND_VALUE),  # never a cache view
        "brain": label > BACKGROUND,
        "z": int(z),
        "subject_id": prepared.subject_id,
        "stats": prepared.stats.clone(),
        "orig_size": torch.tensor(prepared.shape[:2], dtype=torch.int64),
    }
    if mask_slices > 1:
        vol = prepared.volume_label
        if vol is None:
            raise ValueError(
                f"subject {prepared.subject_id!r} was prepared without its volume label; prepare it with "
                "keep_volume_label=True for instances with mask_slices > 1"
            )
        zs = neighbour_slices(int(z), mask_slices, vol.shape[2])[0]
        classes = pad_or_crop(vol[..., zs].long().permute(2, 0, 1), size, value=BACKGROUND)
        inst["mask_stack"] = mask_stack(classes[None], prepared.n_classes)[0]
    if atlas is not None:
        inst["atlas"] = pad_or_crop(atlas.stack(int(z)), size, value=BACKGROUND_VALUE)
    return inst


def _instance_size(shape: Sequence[int], multiple: int, size: Sequence[int] | None) -> tuple[int, int]:
    if size is not None:
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise ValueError(f"size must be two positive ints (H, W), got {size}")
        return int(size[0]), int(size[1])
    h, w = padded_size(shape[:2], multiple)
    return h, w


def _atlas_for(atlas: Atlas | None, sequences: Sequence[str]) -> Atlas | None:
    return None if atlas is None else atlas.select(sequences)


def slice_instances(
    subject: tio.Subject | Mapping[str, Any],
    atlas: Atlas | None,
    *,
    sequences: Sequence[str],
    scheme: str | LabelScheme | None = None,
    z_indices: Sequence[int] | None = None,
    selection: Selection = "brain",
    min_brain_voxels: int = 1,
    multiple: int = 32,
    size: Sequence[int] | None = None,
    conditioning: str = "samr",
    normalization: Normalization | None = None,
    mask_slices: int = 1,
) -> list[dict[str, Any]]:
    """All training instances of one subject (normalised once), in increasing ``z``.

    Args:
        subject: A ``tio.Subject`` (e.g. from ``load_brats``) or a mapping of arrays, with the ``sequences``, an
            optional ``"seg"`` (in ``scheme``) and optional ``"brain"`` (default: non-zero voxels).
        atlas: The atlas (checked to be on the subject's grid; its channels are taken in ``sequences`` order),
            or None for instances without ``"atlas"``.
        sequences: Sequence names, in the model's order.
        scheme: Label scheme of ``"seg"``; None uses the subject's ``scheme`` attribute.
        z_indices: Exactly these slices (``selection`` is then ignored); None selects by ``selection``.
        selection: ``"brain"``, ``"lesion"`` or ``"all"`` (:func:`select_slices`).
        min_brain_voxels: Minimum brain voxels of a ``"brain"``/``"lesion"`` slice.
        multiple: Pad (centred) H and W up to a multiple of this; ``size`` overrides with an explicit (H, W).
        conditioning: ``"samr"`` (5 SAMR classes) or ``"native"`` (the scheme's classes): the mask's classes.
        normalization: How the sequences are normalised (:class:`samraug.intensity.Normalization`; default
            ``Normalization()``: percentiles of the normal-appearing brain).
        mask_slices: ``m = 2c + 1 > 1`` adds each instance's ``"mask_stack"`` (slices ``z - c .. z + c``), the
            input of a generator that sees ``m`` mask slices; 1 (default): none.

    Example:
        >>> inst = slice_instances(subject, atlas, sequences=["t1n", "t2f"], scheme="brats2024")  # doctest: +SKIP
        >>> inst[0]["mask"].shape, inst[0]["atlas"].shape  # doctest: +SKIP
        (torch.Size([5, 256, 256]), torch.Size([6, 256, 256]))
    """
    atl = _atlas_for(atlas, sequences)
    prepared = prepare_subject(
        subject,
        sequences,
        scheme=scheme,
        atlas=atl,
        z_indices=z_indices,
        selection=selection,
        min_brain_voxels=min_brain_voxels,
        conditioning=conditioning,
        normalization=normalization,
        keep_volume_label=_check_mask_slices(mask_slices) > 1,
    )
    hw = _instance_size(prepared.shape, multiple, size)
    return [make_instance(prepared, z, atl, hw, mask_slices) for z in prepared.z]


def _check_mask_slices(mask_slices: int) -> int:
    if not isinstance(mask_slices, int) or isinstance(mask_slices, bool) or mask_slices < 1 or mask_slices % 2 != 1:
        raise ValueError(f"mask_slices must be a positive odd integer (slices z - c .. z + c), got {mask_slices!r}")
    return mask_slices


class SliceDataset(Dataset):
    """Map-style dataset of the 2D training instances of many subjects.

    At construction every subject is read and normalised once to find its selected slices (``index`` lists
    ``(subject position, z)`` pairs in subject order, then ``z``). With ``cache=True`` the normalised selected
    slices are kept in memory: about ``X * Y * n_slices * (4 * n_sequences + 1)`` bytes per subject (BraTS,
    4 sequences, ~130 brain slices: ~130 MB; 2 mm phantom, 5 sequences: ~20 MB), so cache small data sets only.
    With ``cache=False`` only the index is kept and a subject is re-read when an item of another subject than the
    last one is requested: iterate in order (``shuffle=False``) or use a sampler that keeps a subject's slices
    together. Padding/one-hot/atlas stacking happen per item (cheap).

    Args:
        subjects: ``tio.Subject``s or mappings (see :func:`slice_instances`).
        atlas: The atlas, or None (instances then have no ``"atlas"``).
        sequences, scheme, selection, min_brain_voxels, multiple, size, conditioning, normalization, mask_slices:
            as in :func:`slice_instances`. Without
            ``size`` all subjects must share the in-plane shape (they do on an atlas grid).
        cache: Keep the normalised slices in memory.
        transform: Optional callable applied to each instance dict.

    Example:
        >>> subjects = load_brats(root, scheme="brats2024")  # doctest: +SKIP
        >>> ds = SliceDataset(subjects, atlas, sequences=["t1n", "t1c", "t2w", "t2f"])  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        subjects: Sequence[tio.Subject | Mapping[str, Any]],
        atlas: Atlas | None,
        *,
        sequences: Sequence[str],
        scheme: str | LabelScheme | None = None,
        selection: Selection = "brain",
        min_brain_voxels: int = 1,
        multiple: int = 32,
        size: Sequence[int] | None = None,
        cache: bool = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        conditioning: str = "samr",
        normalization: Normalization | None = None,
        mask_slices: int = 1,
    ) -> None:
        self.subjects = list(subjects)
        self.mask_slices = _check_mask_slices(mask_slices)
        self.conditioning = conditioning
        self.normalization = Normalization() if normalization is None else normalization
        self.sequences = tuple(sequences)
        self.atlas = _atlas_for(atlas, self.sequences)
        if isinstance(scheme, LabelScheme) and SCHEMES.get(scheme.name) == scheme:
            scheme = scheme.name  # a name pickles (DataLoader workers); LabelScheme objects may not
        self.scheme = scheme
        self.selection = selection
        self.min_brain_voxels = min_brain_voxels
        self.cache = cache
        self.transform = transform
        self.index: list[tuple[int, int]] = []
        self._cached: dict[int, PreparedSubject] = {}
        self._last: tuple[int, PreparedSubject] | None = None
        sizes = set()
        for i in range(len(self.subjects)):
            prepared = self._prepare(i)
            sizes.add(prepared.shape[:2])
            self.index.extend((i, z) for z in prepared.z)
            if cache:
                self._cached[i] = prepared
        if not self.index:
            raise ValueError(
                f"no slices selected from {len(self.subjects)} subjects with selection={selection!r}; "
                "check the brain masks/labels or use selection='brain'"
            )
        if size is None and len(sizes) > 1:
            raise ValueError(
                f"subjects have different in-plane shapes {sorted(sizes)}; resample them to one grid or pass size="
            )
        self.size = _instance_size(next(iter(sizes)), multiple, size)

    def _prepare(self, i: int) -> PreparedSubject:
        return prepare_subject(
            self.subjects[i],
            self.sequences,
            scheme=self.scheme,
            atlas=self.atlas,
            selection=self.selection,
            min_brain_voxels=self.min_brain_voxels,
            conditioning=self.conditioning,
            normalization=self.normalization,
            keep_volume_label=self.mask_slices > 1,
        )

    def _get(self, i: int) -> PreparedSubject:
        if i in self._cached:
            return self._cached[i]
        if self._last is None or self._last[0] != i:
            self._last = (i, self._prepare(i))
        return self._last[1]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, Any]:
        i, z = self.index[item]
        inst = make_instance(self._get(i), z, self.atlas, self.size, self.mask_slices)
        return self.transform(inst) if self.transform is not None else inst


# ---------------------------------------------------------------------------------------------- back to volumes
def to_subject_scale(
    images: torch.Tensor,
    stats: torch.Tensor | np.ndarray,
    *,
    brain: torch.Tensor | None = None,
    orig_size: Sequence[int] | torch.Tensor | None = None,
    background: float = 0.0,
) -> torch.Tensor:
    """Map normalised slices (e.g. synthetic ones) back to the real subject's intensity scale.

    ``images`` ``(n, H, W)`` with ``stats`` ``(n, 2)``, or a batch ``(B, n, H, W)`` with ``(B, n, 2)`` (an
    instance's or a collated batch's ``"stats"``). ``brain`` (``(H, W)`` / ``(B, H, W)``) sets the background
    to ``background``; ``orig_size`` (an instance's ``"orig_size"``) crops the padding away (:func:`unpad`).

    Example:
        >>> inst = slice_instances(subject, atlas, sequences=seqs)[0]  # doctest: +SKIP
        >>> real = to_subject_scale(  # doctest: +SKIP
        ...     inst["image"], inst["stats"], brain=inst["brain"], orig_size=inst["orig_size"]
        ... )
    """
    out = denormalize_sequences(images, stats, brain=brain, background=background)
    if orig_size is not None:
        sizes = torch.as_tensor(orig_size).reshape(-1, 2)
        if not bool((sizes == sizes[0]).all()):
            raise ValueError(f"instances of one batch have different orig_size {sizes.unique(dim=0).tolist()}")
        out = unpad(out, [int(v) for v in sizes[0]], value=background)
    return out


def paste_slices(volume: Array, slices: Array, z: Sequence[int] | torch.Tensor | np.ndarray) -> Array:
    """A copy of ``volume`` (``(..., X, Y, Z)``) with ``slices`` (``(B, ..., H, W)``) written at axial indices ``z``.

    Padded slices are cropped back to ``(X, Y)`` (:func:`unpad`), so this inverts the instance extraction.

    Example:
        >>> vol = np.zeros((2, 4, 4, 3)); sl = np.ones((1, 2, 8, 8))
        >>> paste_slices(vol, sl, [1]).sum(axis=(0, 1, 2)).tolist()
        [0.0, 32.0, 0.0]
    """
    zs = [int(v) for v in (z.tolist() if hasattr(z, "tolist") else z)]
    if len(zs) != slices.shape[0]:
        raise ValueError(f"{slices.shape[0]} slices but {len(zs)} z indices")
    depth = volume.shape[-1]
    bad = [v for v in zs if not 0 <= v < depth]
    if bad:
        raise IndexError(f"slice indices {bad[:5]} out of range 0..{depth - 1}")
    plane = tuple(volume.shape[-3:-1])
    out = volume.clone() if isinstance(volume, torch.Tensor) else np.array(volume, copy=True)
    for b, v in enumerate(zs):
        sl = unpad(slices[b], plane)
        if tuple(sl.shape) != tuple(out[..., v].shape):
            raise ValueError(f"slice of shape {tuple(sl.shape)} does not fit volume slices {tuple(out[..., v].shape)}")
        out[..., v] = sl
    return out
