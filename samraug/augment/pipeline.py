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
    _set_label,
    _set_mask,
    scheme_from_plain,
)
from samraug.augment.donors import RecipientDonors
from samraug.augment.edits import replay_edit
from samraug.augment.painters import Donor, Painter, SAMRPainter, get_painter
from samraug.augment.views import ItemView
from samraug.labels import LabelScheme

if TYPE_CHECKING:
    from samraug.synthesis import Synthesizer

__all__ = ["Augmented", "augment_view"]


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
    carve_donors: Any = None,
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
        replay: A recorded edit to replay (:func:`~samraug.augment.edits.replay_edit`) instead of drawing one.
        carve_donors: The label maps a carve record's ``"donor"`` indexes (replays of ``"carve"`` and
            ``"carve+random"`` records).
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
    as_tuple = as_tuple or isinstance(item, tuple)
    out: Any = _default_item(view) if item is None else (list(item) if isinstance(item, tuple) else item)
    scheme.validate(view.label, "label map" if view.label_key is None else f"label map {view.label_key!r}")
    if replay is not None:
        edited = replay_edit(editor, view.label, view.brain, replay, donors, carve_donors)
        edit_record = _plain(replay)
    elif editor is not None:
        # a swap keeps a donor's lesion at its own place only where the donor shares the item's grid
        seen = donors if donors is None or view.affine is None else RecipientDonors(donors, view.affine)
        edited, edit_record = _edit(editor, view.label, view.brain, generator, seen)
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
