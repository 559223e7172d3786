"""The one plan -> edit -> paint path: :func:`augment_view`, called by every front-end (the TorchIO transforms, the
dataset, the MONAI transform). A front-end only reads its item into an :class:`~samraug.augment.views.ItemView`
(:mod:`samraug.augment.views`) and gets the item back in its own format and types.

Example (the bundled whole-image demo weights; an item on their atlas grid with a brain in two slices):
    >>> from samraug.augment.views import output_item, plain_view
    >>> from samraug.editing import LesionEditor
    >>> from samraug.hub import BUNDLED_WHOLE_WEIGHTS
    >>> from samraug.synthesis import get_synthesizer
    >>> synth = get_synthesizer(BUNDLED_WHOLE_WEIGHTS, device="cpu")
    >>> X, Y, Z = synth.atlas.shape
    >>> images = torch.zeros(len(synth.sequences), X, Y, Z); images[:, 30:60, 30:60, 40:42] = 100.0
    >>> label = torch.zeros(X, Y, Z, dtype=torch.uint8); label[40:48, 40:48, 40:42] = 2
    >>> item = {"image": images, "label": label}
    >>> view = plain_view(item, label_key="label", image_key="image", sequences=synth.sequences,
    ...                   mapping={s: i for i, s in enumerate(synth.sequences)})
    >>> out = augment_view(view, item=output_item(item, view), scheme="brats2021", synthesizer=synth,
    ...                    editor=LesionEditor("brats2021"), generator=torch.Generator().manual_seed(0))
    >>> out.item["image"].shape == images.shape, out.record["edit"]["op"], out.item["image"] is images
    (True, 'random', False)
    >>> again = augment_view(view, item=output_item(item, view), scheme="brats2021", synthesizer=synth,
    ...                      editor=LesionEditor("brats2021"), replay=out.record["edit"])  # replayed exactly
    >>> torch.equal(again.item["image"], out.item["image"])
    True
    >>> augment_view(view, scheme="brats2021", synthesizer=synth, painter="labels-to-image", mode="local")
    Traceback (most recent call last):
    ...
    ValueError: mode='local' belongs to the SAMR painter (painter='samr'); the 'labels-to-image' painter has no mode
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from samraug.augment.core import (
    PendingSample,
    _edit,
    _make_pending,
    _plain,
    _replay,
    _set_label,
    _set_mask,
    scheme_from_plain,
)
from samraug.augment.painters import Donor, Painter, SAMRPainter, get_painter
from samraug.augment.views import ItemView
from samraug.editing import EditResult
from samraug.labels import LabelScheme

if TYPE_CHECKING:
    from samraug.synthesis import Synthesizer

__all__ = ["EDIT_KINDS", "Augmented", "CarveEdit", "augment_view", "draw_edit_kind", "edit_mixture"]

#: How a dataset edits its label maps (``SAMRAugmentedDataset(edits=...)``): the editor's random edits, or
#: CarveMix's (:class:`CarveEdit`: another real item's lesion added where it lies).
EDIT_KINDS: tuple[str, ...] = ("random", "carve")


def edit_mixture(edits: str | Mapping[str, float]) -> dict[str, float]:
    """``{kind: probability}`` (kinds of :data:`EDIT_KINDS`, in that order, probabilities summing to 1) of an
    ``edits`` argument: one kind, or a mapping of kinds to non-negative weights (normalised).

    Example:
        >>> edit_mixture("carve"), edit_mixture({"carve": 1, "random": 3})
        ({'carve': 1.0}, {'random': 0.75, 'carve': 0.25})
    """
    if isinstance(edits, str):
        if edits not in EDIT_KINDS:
            raise ValueError(f"edits must be one of {EDIT_KINDS} or a mapping of them to weights, got {edits!r}")
        return {edits: 1.0}
    if not isinstance(edits, Mapping) or not edits:
        raise ValueError(f"edits must be one of {EDIT_KINDS} or a mapping of them to weights, got {edits!r}")
    unknown = sorted(set(edits) - set(EDIT_KINDS))
    if unknown:
        raise ValueError(f"edits has unknown kinds {unknown}; the kinds are {EDIT_KINDS}")
    weights = {k: edits[k] for k in EDIT_KINDS if k in edits}
    for k, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"edits[{k!r}]={w!r} must be a finite weight >= 0")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"edits={dict(edits)} gives every kind weight 0; give one a positive weight")
    return {k: float(w) / total for k, w in weights.items() if w > 0}


def draw_edit_kind(mixture: Mapping[str, float], generator: torch.Generator) -> str:
    """One kind of an :func:`edit_mixture`; a single kind draws nothing from ``generator``.

    Example:
        >>> draw_edit_kind({"carve": 1.0}, torch.Generator())
        'carve'
    """
    kinds = list(mixture)
    if len(kinds) == 1:
        return kinds[0]
    u = float(torch.rand((), generator=generator, dtype=torch.float64).item())
    acc = 0.0
    for k in kinds[:-1]:
        acc += mixture[k]
        if u < acc:
            return k
    return kinds[-1]


@dataclass(frozen=True)
class Augmented:
    """What :func:`augment_view` returns.

    Attributes:
        item: The item with the edited label map and the painted images, in its own format (a tuple for a tuple;
            the front-end's ``post`` applied); None when ``defer=True``. When the painter skips the sample (its
            record's ``"skipped"``: e.g. a local region too close to the image edge), the item keeps its real images
            *and* its real label map.
        label: The edited label map (the item's scheme); the unedited one when the painter skipped.
        record: Plain values: the caller's ``record`` entries, ``"edit"`` (the edit's record, None without an edit)
            and, for a painter other than whole-image SAMR, ``"paint"`` (its record; absent when deferred).
        pending: With ``defer=True``, the :class:`~samraug.augment.core.PendingSample` that finishes the item
            (:meth:`~samraug.augment.core.PendingSample.complete`, or batched by
            :func:`~samraug.augment.batched.synthesize_pending`); else None.
    """

    item: Any
    label: np.ndarray
    record: dict[str, Any]
    pending: PendingSample | None = None


@dataclass(frozen=True)
class CarveEdit:
    """CarveMix's edit (the copy-paste painter's): the donor's lesion labels pasted where they lie.

    Has the editor interface :func:`augment_view` calls (``random_edit``); its record is
    ``{"op": "carve", "donor": donor}``. ``within_brain``: only the donor lesion's voxels inside the item's brain
    mask are added (a painter that paints lesions, such as SAMR's, refuses a lesion outside the brain); the record
    then also counts the voxels left out (``"outside_brain"``). Copy-paste pastes them all (CarveMix).

    Example:
        >>> donor = np.zeros((2, 2), np.uint8); donor[0, 0] = 2; donor[1, 1] = 1
        >>> res = CarveEdit(donor, 3).random_edit(np.zeros((2, 2), np.uint8), None)
        >>> res.label.tolist(), res.record
        ([[2, 0], [0, 1]], {'op': 'carve', 'donor': 3})
        >>> brain = np.array([[True, True], [True, False]])
        >>> res = CarveEdit(donor, 3, within_brain=True).random_edit(np.zeros((2, 2), np.uint8), brain)
        >>> res.label.tolist(), res.record
        ([[2, 0], [0, 0]], {'op': 'carve', 'donor': 3, 'outside_brain': 1})
    """

    donor_label: np.ndarray
    donor: int
    what: str = "the donor"
    within_brain: bool = False

    def random_edit(
        self, label: np.ndarray, brain: Any = None, *, donors: Any = None, generator: torch.Generator | None = None
    ) -> EditResult:
        donor_label = np.asarray(self.donor_label)
        if donor_label.shape != label.shape:
            raise ValueError(f"{self.what} has shape {donor_label.shape}, the item {label.shape}")
        lesion = donor_label != 0
        record: dict[str, Any] = {"op": "carve", "donor": int(self.donor)}
        if self.within_brain:
            if brain is None:
                raise ValueError("CarveEdit(within_brain=True) needs the item's brain mask")
            inside = np.asarray(brain, dtype=bool)
            if inside.shape != label.shape:
                raise ValueError(f"the brain mask has shape {inside.shape}, the item {label.shape}")
            record["outside_brain"] = int((lesion & ~inside).sum())
            lesion &= inside
        edited = np.where(lesion, donor_label, label).astype(label.dtype)
        return EditResult(edited, record)


def _resolve_painter(painter: str | Painter | None, mode: str | None, synthesizer: Synthesizer) -> Painter | None:
    """None for the whole-image SAMR generator path (batched generator calls), else the painter (local-mode weights:
    the local SAMR painter)."""
    if painter is None and mode is None and synthesizer.config.get("mode", "whole") == "whole":
        return None
    if isinstance(painter, Painter):
        return get_painter(painter, mode=mode)  # refuses mode= for another painter than SAMR
    name = "samr" if painter is None else painter
    if name == "samr":
        chosen = get_painter("samr", mode=mode, synthesizer=synthesizer)
        return None if isinstance(chosen, SAMRPainter) and chosen.mode == "whole" else chosen
    return get_painter(name, mode=mode)


def _default_item(view: ItemView) -> dict[Any, Any]:
    """A dict to write into when the caller has no item: the label map and the images under the view's keys."""
    item: dict[Any, Any] = {"label" if view.label_key is None else view.label_key: view.label}
    channels: dict[Any, list[tuple[int, torch.Tensor]]] = {}
    for key, channel, data in view.images.values():
        if channel is None:
            item[key] = data
        else:
            channels.setdefault(key, []).append((channel, data))
    for key, parts in channels.items():
        stack = torch.zeros(max(c for c, _ in parts) + 1, *parts[0][1].shape)
        for c, data in parts:
            stack[c] = data.float()
        item[key] = stack
    return item


def augment_view(
    view: ItemView,
    *,
    scheme: str | LabelScheme | Mapping[str, Any],
    synthesizer: Synthesizer,
    editor: Any = None,
    generator: torch.Generator | None = None,
    donors: Sequence[Any] | None = None,
    replay: Mapping[str, Any] | None = None,
    painter: str | Painter | None = None,
    mode: str | None = None,
    donor: Donor | None = None,
    paint_seed: int | None = None,
    item: Any = None,
    as_tuple: bool = False,
    intensity: str = "match",
    z: int | None = None,
    atlas: torch.Tensor | None = None,
    post: Callable[[Any], Any] | None = None,
    record: Mapping[str, Any] | None = None,
    defer: bool = False,
) -> Augmented:
    """Edit a view's label map and paint images for it: the plan -> edit -> paint path of every front-end.

    Args:
        view: The item as read by :func:`~samraug.augment.views.subject_view` or
            :func:`~samraug.augment.views.plain_view`.
        scheme: The label scheme of the item.
        synthesizer: The SAMR :class:`~samraug.synthesis.Synthesizer` (its ``sequences`` index the view's images;
            whole-image SAMR paints with it).
        editor: A :class:`~samraug.editing.LesionEditor` (or :class:`CarveEdit`); None: no edit.
        generator: The edit's random generator (``editor.random_edit(..., generator=)``).
        donors: Label maps a swap may paste a lesion from.
        replay: A recorded edit to replay (``editor.replay``) instead of drawing one.
        painter: None or ``"samr"`` (whole: the batched generator path; local), ``"copy-paste"``,
            ``"labels-to-image"`` or a :class:`~samraug.augment.painters.Painter`.
        mode: SAMR only (``"whole"`` / ``"local"``); refused with another painter.
        donor: The copy-paste painter's donor.
        paint_seed: Seed of the painter's generator.
        item: The output item to write into (a copy the caller owns: a ``tio.Subject``, a dict, or a list for a
            tuple); None: a new dict with the label under the view's ``label_key`` (``"label"``) and the images
            under their keys.
        as_tuple: The item is a tuple written into as a list (``item`` as a tuple is copied to a list and also
            comes back as a tuple).
        intensity: ``"match"`` (the item's scale) or ``"model"`` ([-1, 1]); whole-image SAMR.
        z, atlas: 2D items: the axial atlas slice, or the item's own atlas stack.
        post: Applied to the finished item.
        record: Plain values put first in the result's record (e.g. source and seed).
        defer: Return the pending sample instead of painting (the dataset's batched path).

    Returns:
        :class:`Augmented`: the item (or the pending sample), the edited label map and the record.

    Example: see the module docstring.
    """
    scheme = scheme_from_plain(scheme)
    chosen = _resolve_painter(painter, mode, synthesizer)
    if intensity not in ("match", "model"):
        raise ValueError(f"intensity must be 'match' (the item's scale) or 'model' ([-1, 1]), got {intensity!r}")
    if replay is not None and editor is None:
        raise ValueError("replay= needs the editor= that made the record (e.g. LesionEditor(scheme))")
    as_tuple = as_tuple or isinstance(item, tuple)
    out: Any = _default_item(view) if item is None else (list(item) if isinstance(item, tuple) else item)
    scheme.validate(view.label, "label map" if view.label_key is None else f"label map {view.label_key!r}")
    if replay is not None:
        edited, edit_record = _replay(editor, view.label, view.brain, replay, donors), _plain(replay)
    elif editor is not None:
        edited, edit_record = _edit(editor, view.label, view.brain, generator, donors)
    else:
        edited, edit_record = view.label, None
    label_at = None
    if view.label_key is not None or item is None:
        label_at = "label" if view.label_key is None else view.label_key
        _set_label(out, label_at, edited, out[label_at])
    mask_before = None
    if view.mask_key is not None:
        mask_before = out[view.mask_key]
        _set_mask(out, view.mask_key, edited, view.brain, scheme, synthesizer)
    full_record = {**_plain(dict(record or {})), "edit": edit_record}
    pending = _make_pending(
        out,
        view,
        edited,
        scheme,
        intensity=intensity,
        z=z,
        atlas_stack=atlas,
        as_tuple=as_tuple,
        synth=synthesizer,
        record=full_record,
        post=post,
        painter=chosen,
        donor=donor,
        paint_seed=paint_seed,
        label_at=label_at,
        mask_before=mask_before,
    )
    if defer:
        return Augmented(None, edited, full_record, pending)
    finished, paint_record = pending.completed(synthesizer)
    if paint_record is not None:
        full_record = {**full_record, "paint": paint_record}
        if paint_record.get("skipped"):  # the painter left the item real: its label map is the unedited one
            edited = view.label
    return Augmented(finished, edited, full_record)
