"""Item readers: an item read into the one view the augmentation core works on (:class:`ItemView`).

Every front-end reads its items here and nowhere else: :func:`subject_view` reads a ``tio.Subject``,
:func:`plain_view` a dict of tensors / arrays / MONAI ``MetaTensor``\\ s or an ``(image, label, ...)`` tuple (images
one key per sequence, or stacked channel-first in one key). Both apply the same checks and the same brain rule:
images share the label map's shape and affine; the brain is the brain mask when one is given, else the voxels
non-zero in any image, plus the lesion; a lesion entirely outside the brain is refused.

Example:
    >>> import numpy as np, torch
    >>> item = {"image": torch.ones(2, 4, 4), "label": torch.zeros(4, 4, dtype=torch.uint8)}
    >>> view = plain_view(item, label_key="label", image_key="image", mapping={"t1n": 0, "t2f": 1},
    ...                   sequences=("t1n", "t1c", "t2w", "t2f"))
    >>> sorted(view.images), view.brain.all()
    ([0, 3], np.True_)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchio as tio

from samraug.subjects import AFFINE_ATOL, affines_agree, affines_match, format_affine

__all__ = [
    "ItemView",
    "affine_of",
    "check_lesion_in_brain",
    "check_sequence_map",
    "default_sequence_map",
    "output_item",
    "plain_view",
    "subject_view",
]


@dataclass(frozen=True)
class ItemView:
    """The parts of an item the augmentation core needs.

    Attributes:
        label: The lesion label map (the item's scheme), spatial shape.
        brain: Boolean brain mask (lesion included), spatial shape.
        images: ``{model sequence index: (key, channel, spatial tensor)}``: where each image lives in the item
            (``channel`` None: the key holds this sequence alone) and its data.
        affine: The 4x4 voxel-to-world affine (None: unknown; painters then use the identity).
        label_key: Where the label map is in the item (the edited one is written there), or None.
        mask_key: Key of a one-hot SAMR mask the item carries (samraug's 2D instances): rewritten for the edit.
    """

    label: np.ndarray
    brain: np.ndarray
    images: dict[int, tuple[Any, int | None, torch.Tensor]]
    affine: np.ndarray | None = None
    label_key: Any = None
    mask_key: Any = None


def check_lesion_in_brain(label: np.ndarray, brain: np.ndarray, what: str) -> None:
    """Refuse a label map whose lesion lies entirely outside the brain (where the images are background): painting
    it would put a lesion outside the head.

    Example:
        >>> brain = np.zeros((4, 4), bool); brain[:2] = True
        >>> label = np.zeros((4, 4), np.uint8); label[3, 3] = 2
        >>> check_lesion_in_brain(label, brain, "seg")
        Traceback (most recent call last):
        ...
        ValueError: seg: its 1 lesion voxel(s) all lie outside the brain ...
    """
    lesion = np.asarray(label) != 0
    if lesion.any() and not (lesion & np.asarray(brain, dtype=bool)).any():
        raise ValueError(
            f"{what}: its {int(lesion.sum())} lesion voxel(s) all lie outside the brain (where the images are "
            "background); the label map and the images do not match: check that they belong to the same case and "
            "grid, or pass brain_key= with the right brain mask"
        )


def default_sequence_map(sequences: Sequence[str], keys: Sequence[str]) -> dict[str, str]:
    """Each model sequence whose name is one of ``keys``, mapped to itself.

    Example:
        >>> default_sequence_map(["t1n", "t2f"], ["t2f", "seg"])
        {'t2f': 't2f'}
    """
    return {s: s for s in sequences if s in keys}


def check_sequence_map(
    sequence_map: Mapping[str, Any] | None, sequences: Sequence[str], available: Sequence[Any], what: str
) -> dict[str, Any]:
    """``{model sequence: key or channel}`` restricted to ``available``, in the model's order (default: the
    sequences named like an available key); refuses names the model does not make and an empty result."""
    if sequence_map is None:
        mapping = default_sequence_map(sequences, [a for a in available if isinstance(a, str)])
    else:
        unknown = sorted(set(sequence_map) - set(sequences))
        if unknown:
            raise ValueError(
                f"sequence_map names {unknown}, which the model does not make; its sequences are {list(sequences)}"
            )
        mapping = {s: sequence_map[s] for s in sequences if s in sequence_map and sequence_map[s] in available}
    if not mapping:
        raise ValueError(
            f"none of the model's sequences {list(sequences)} maps to the {what} {list(available)}; pass "
            "sequence_map={model_sequence: your_key}, e.g. sequence_map={'t1c': 't1ce', 't2f': 'flair'}"
        )
    return mapping


def _brain(label: np.ndarray, brain: np.ndarray | None, images: Mapping[int, Any], label_what: str, what: str) -> Any:
    """The brain rule of every reader: the mask (else non-zero voxels of the images), lesion checked and added."""
    if brain is None:
        brain = np.zeros(label.shape, dtype=bool)
        for _, _, data in images.values():
            brain |= data.numpy() != 0
    check_lesion_in_brain(label, brain, label_what)
    brain = brain | (label != 0)
    if not brain.any():
        raise ValueError(f"{what} has an empty brain (all images zero and no lesion); pass brain_key= (a brain mask)")
    return brain


# ---------------------------------------------------------------------------------------------- tio.Subject
def _check_same_grid(image: tio.Image, ref: tio.Image, what: str, ref_what: str) -> None:
    """Refuse an image whose shape or affine differs from the label map's (a misaligned image would be painted
    with the wrong anatomy and returned with its wrong affine)."""
    if tuple(image.spatial_shape) != tuple(ref.spatial_shape):
        raise ValueError(
            f"{what} has shape {tuple(image.spatial_shape)} but {ref_what} has {tuple(ref.spatial_shape)}; "
            "resample it onto the label map's grid first (e.g. tio.Resample(<label key>))"
        )
    if not affines_match(np.asarray(image.affine), np.asarray(ref.affine)):
        raise ValueError(
            f"{what} has affine {format_affine(image.affine)} but {ref_what} has {format_affine(ref.affine)} "
            f"(tolerance {AFFINE_ATOL}); resample it onto the label map's grid first (e.g. tio.Resample(<label key>))"
        )


def subject_view(
    subject: tio.Subject,
    *,
    label_key: str,
    brain_key: str | None,
    mapping: Mapping[str, str],
    sequences: Sequence[str],
) -> ItemView:
    """A ``tio.Subject`` as a view: ``mapping`` is ``{model sequence: image key}`` (single-channel images).

    Example:
        >>> s = tio.Subject(t1n=tio.ScalarImage(tensor=torch.ones(1, 4, 4, 4)),
        ...                 seg=tio.LabelMap(tensor=torch.zeros(1, 4, 4, 4, dtype=torch.uint8)))
        >>> subject_view(s, label_key="seg", brain_key=None, mapping={"t1n": "t1n"}, sequences=["t1n"]).affine.shape
        (4, 4)
    """
    label_img = subject[label_key]
    if label_img.data.shape[0] != 1:
        raise ValueError(f"label map {label_key!r} has {label_img.data.shape[0]} channels; expected 1")
    label = label_img.data[0].numpy()
    images = {}
    for seq, key in mapping.items():
        img = subject[key]
        if img.data.shape[0] != 1:
            raise ValueError(
                f"image {key!r} has {img.data.shape[0]} channels; SAMRSynthesize replaces single-sequence images "
                "(one ScalarImage per sequence)"
            )
        _check_same_grid(img, label_img, f"image {key!r}", f"the label map {label_key!r}")
        images[sequences.index(seq)] = (key, None, img.data[0])
    brain = None
    if brain_key is not None:
        if brain_key not in subject:
            raise ValueError(f"subject has no brain mask {brain_key!r} (keys: {list(subject.keys())}); pass brain_key=")
        _check_same_grid(subject[brain_key], label_img, f"brain mask {brain_key!r}", f"the label map {label_key!r}")
        brain = subject[brain_key].data[0].numpy() != 0
    brain = _brain(label, brain, images, f"label map {label_key!r}", "the subject")
    return ItemView(label, brain, images, np.asarray(label_img.affine, dtype=np.float64), label_key)


# ---------------------------------------------------------------------------------------------- dicts and tuples
def as_tensor(x: Any) -> torch.Tensor:
    """A tensor sharing the data of a ``tio.Image``, array or tensor (a ``MetaTensor`` stays one)."""
    if isinstance(x, tio.Image):
        return x.data
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return torch.as_tensor(x)


def spatial(x: Any, ndim: int | None, what: str) -> torch.Tensor:
    """``x`` without a leading channel of 1 (when the result has ``ndim`` dims, or 2/3 when ``ndim`` is None).

    Example:
        >>> tuple(spatial(np.zeros((1, 3, 4, 5)), 3, "seg").shape)
        (3, 4, 5)
    """
    t = as_tensor(x)
    want = (ndim,) if ndim is not None else (2, 3)
    if t.dim() not in want and t.dim() - 1 in want and t.shape[0] == 1:
        t = t[0]
    if t.dim() not in want:
        raise ValueError(f"{what} has shape {tuple(t.shape)}; expected a {' or '.join(f'{n}D' for n in want)} map")
    return t


def affine_of(x: Any) -> np.ndarray | None:
    """The affine a ``tio.Image`` or MONAI ``MetaTensor`` carries (None for plain arrays/tensors)."""
    aff = getattr(x, "affine", None)
    if aff is None:
        return None
    return np.asarray(torch.as_tensor(aff).detach().cpu().double().numpy())


def plain_view(
    item: Mapping[Any, Any] | Sequence[Any],
    *,
    label_key: Any,
    image_key: Any,
    mapping: Mapping[str, Any],
    sequences: Sequence[str],
    brain_key: Any = None,
    ndim: int | None = None,
    affine: np.ndarray | None = None,
    mask_key: Any = None,
) -> ItemView:
    """A dict or tuple item as a view.

    Args:
        item: The item (a tuple is indexed by position: ``label_key=1``, ``image_key=0``).
        label_key: Where the label map is (spatial, or with a leading channel of 1).
        image_key: Where the stacked images are (channel-first), for the int entries of ``mapping``.
        mapping: ``{model sequence: channel of image_key (int) or key of a single image}``.
        sequences: The model's sequence names (they index the view's images).
        brain_key: A brain mask (non-zero = brain); None: the voxels non-zero in any image.
        ndim: The spatial dims (2 or 3; None: whichever the label map has).
        affine: The view's affine (the front-end's; e.g. the item's ``"affine"`` entry).
        mask_key: A one-hot SAMR mask to rewrite for the edit (kept only when the item has it).

    Images with an affine (``tio.Image``, ``MetaTensor``) must match the label map's, when it has one.
    """
    label_ref = item[label_key]
    label = spatial(label_ref, ndim, f"label map {label_key!r}").numpy()
    ndim = label.ndim
    label_affine = affine_of(label_ref)
    images: dict[int, tuple[Any, int | None, torch.Tensor]] = {}
    for seq, src in mapping.items():
        if isinstance(src, (int, np.integer)):
            key, channel = image_key, int(src)
            stack = as_tensor(item[image_key])
            if stack.dim() != ndim + 1 or stack.shape[0] <= channel:
                need = max(int(c) for c in mapping.values() if isinstance(c, (int, np.integer))) + 1
                raise ValueError(
                    f"image {image_key!r} has shape {tuple(stack.shape)} ({stack.shape[0]} channels); "
                    f"the items need at least {need} channels, channel-first, like the first item"
                )
            data = stack[channel]
        else:
            key, channel = src, None
            data = spatial(item[src], ndim, f"image {src!r}")
        aff = affine_of(item[key])
        if not affines_agree(aff, label_affine):
            raise ValueError(
                f"image {key!r} has affine {format_affine(aff)} but the label map {label_key!r} has "
                f"{format_affine(label_affine)} (tolerance {AFFINE_ATOL}); resample it onto the label map's grid first"
            )
        if tuple(data.shape) != tuple(label.shape):
            raise ValueError(f"image {key!r} has spatial shape {tuple(data.shape)} but the label map {label.shape}")
        images[sequences.index(seq)] = (key, channel, data)
    brain = None
    if brain_key is not None:
        brain = spatial(item[brain_key], ndim, f"brain mask {brain_key!r}").numpy() != 0
    brain = _brain(label, brain, images, f"label map {label_key!r}", "the item")
    has_mask = isinstance(item, Mapping) and mask_key is not None and mask_key in item and mask_key != label_key
    return ItemView(label, brain, images, affine, label_key, mask_key if has_mask else None)


def float_copy(x: Any) -> Any:
    """A float copy of an array or tensor (its dtype kept when floating; a ``MetaTensor`` keeps its meta data)."""
    if isinstance(x, np.ndarray):
        return x.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32, copy=True)
    t = torch.as_tensor(x)
    return t.clone() if t.is_floating_point() else t.float()


def output_item(item: Any, view: ItemView) -> Any:
    """The container a dict or tuple item's result is written into: a shallow copy (a list for a tuple) whose
    stacked image keys are float copies, so writing a sequence's channel never touches the input item."""
    out: Any = list(item) if isinstance(item, (tuple, list)) else copy.copy(item)
    for key in {k for k, ch, _ in view.images.values() if ch is not None}:
        out[key] = float_copy(item[key])
    return out
