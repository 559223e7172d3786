"""How a label map is edited before it is painted, and how a recorded edit is replayed.

Three kinds (``SAMRAugmentedDataset(edits=...)``, :data:`EDIT_KINDS`):

- ``"random"``: the :class:`~samraug.editing.LesionEditor`'s random edit (the paper's: mirror, grow, shrink, move,
  swap; with an :class:`~samraug.editing.EditPolicy` that inserts, the edited lesion beside the own one);
- ``"carve"``: CarveMix's edit (:class:`CarveEdit`): another real item's lesion labels added where they lie;
- ``"carve+random"``: both on one label map: the random edit first, then the donor's lesion added on top, where it
  lies (its labels win where the two overlap). The donor lesion lies where ``"carve"`` puts it.

Example:
    >>> import numpy as np
    >>> donor = np.zeros((2, 3), np.uint8); donor[0, 0] = 2
    >>> edit = CarveEdit(donor, 4)
    >>> res = edit.random_edit(np.zeros((2, 3), np.uint8))
    >>> res.label.tolist(), res.record
    ([[2, 0, 0], [0, 0, 0]], {'op': 'carve', 'donor': 4})
    >>> again = replay_edit(None, np.zeros((2, 3), np.uint8), None, res.record, carve_donors={4: donor})
    >>> np.array_equal(again, res.label)
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from samraug.editing import EditResult
from samraug.subjects import affines_agree, format_affine

__all__ = [
    "CARVE_KINDS",
    "EDITOR_KINDS",
    "EDIT_KINDS",
    "CarveEdit",
    "check_editor_use",
    "draw_edit_kind",
    "edit_mixture",
    "parse_edits",
    "pool_edit",
    "replay_edit",
    "transform_edits",
]

#: How a dataset edits its label maps (``SAMRAugmentedDataset(edits=...)``): the editor's random edits, CarveMix's
#: (:class:`CarveEdit`: another real item's lesion added where it lies), or both on one label map.
EDIT_KINDS: tuple[str, ...] = ("random", "carve", "carve+random")
#: The kinds that add a donor's lesion as it lies (they need a second real item).
CARVE_KINDS: tuple[str, ...] = ("carve", "carve+random")
#: The kinds that draw the editor's random edit (they take ``editor=`` / ``policy=``).
EDITOR_KINDS: tuple[str, ...] = ("random", "carve+random")


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


def parse_edits(text: str, what: str = "edits") -> dict[str, float]:
    """The :func:`edit_mixture` of a command-line value: a kind (``carve``) or ``KIND=WEIGHT,KIND=WEIGHT``.

    Example:
        >>> parse_edits("carve"), parse_edits("carve=1,random=1")
        ({'carve': 1.0}, {'random': 0.5, 'carve': 0.5})
    """
    message = f"{what} must be one of {EDIT_KINDS} or KIND=WEIGHT,... (e.g. carve=0.5,random=0.5), got {text!r}"
    if not isinstance(text, str):
        raise ValueError(message)
    spec: str | dict[str, float] = text
    if "=" in text:
        spec = {}
        for part in text.split(","):
            kind, _, value = part.partition("=")
            try:
                spec[kind.strip()] = float(value)
            except ValueError:
                raise ValueError(message) from None
    try:
        return edit_mixture(spec)
    except ValueError as e:
        raise ValueError(f"{message}: {e}") from None


def draw_edit_kind(mixture: Mapping[str, float], generator: torch.Generator | Any) -> str:
    """One kind of an :func:`edit_mixture`; a single kind draws nothing from ``generator`` (a ``torch.Generator``,
    or a NumPy ``RandomState`` such as a MONAI transform's ``R``).

    Example:
        >>> draw_edit_kind({"carve": 1.0}, torch.Generator())
        'carve'
    """
    kinds = list(mixture)
    if len(kinds) == 1:
        return kinds[0]
    if isinstance(generator, torch.Generator):
        u = float(torch.rand((), generator=generator, dtype=torch.float64).item())
    else:
        u = float(generator.random_sample())
    acc = 0.0
    for k in kinds[:-1]:
        acc += mixture[k]
        if u < acc:
            return k
    return kinds[-1]


@dataclass(frozen=True)
class CarveEdit:
    """CarveMix's edit (the copy-paste painter's): the donor's lesion labels pasted where they lie.

    Has the editor interface :func:`~samraug.augment.augment_view` calls (``random_edit``); its record is
    ``{"op": "carve", "donor": donor}``. ``within_brain``: only the donor lesion's voxels inside the item's brain
    mask are added (a painter that paints lesions, such as SAMR's, refuses a lesion outside the brain); the record
    then also counts the voxels left out (``"outside_brain"``). Copy-paste pastes them all (CarveMix).

    ``then``: an editor (:class:`~samraug.editing.LesionEditor`) whose random edit of the item is made first; the
    donor's lesion is then added on top (kind ``"carve+random"``; record ``{"op": "carve+random", "donor": ...,
    "random": <the editor's record>}``).

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
    then: Any = None

    def random_edit(
        self, label: np.ndarray, brain: Any = None, *, donors: Any = None, generator: torch.Generator | None = None
    ) -> EditResult:
        first = None
        if self.then is not None:
            first = self.then.random_edit(label, brain, donors=donors, generator=generator)
        return self._carve(label, brain, first)

    def replay(self, label: np.ndarray, brain: Any, record: Mapping[str, Any], donors: Any = None) -> EditResult:
        """The edit of ``record`` (made by this edit's ``random_edit`` on the same label, brain and donors) again;
        ValueError when it does not reproduce."""
        first = None
        if self.then is not None:
            if not isinstance(record.get("random"), Mapping):
                raise ValueError(f"the {record.get('op')!r} record {dict(record)} holds no 'random' edit record")
            first = self.then.replay(label, brain, dict(record["random"]), donors=donors)
        res = self._carve(label, brain, first)
        mine = {k: v for k, v in res.record.items() if k != "random"}
        theirs = {k: v for k, v in record.items() if k != "random"}
        if mine != theirs:
            raise ValueError(f"the edit record {theirs} does not reproduce on this item (it gives {mine})")
        return res

    def _carve(self, label: np.ndarray, brain: Any, first: EditResult | None) -> EditResult:
        donor_label = np.asarray(self.donor_label)
        if donor_label.shape != label.shape:
            raise ValueError(f"{self.what} has shape {donor_label.shape}, the item {label.shape}")
        base = label if first is None else np.asarray(first.label)
        lesion = donor_label != 0
        record: dict[str, Any] = {"op": "carve" if first is None else "carve+random", "donor": int(self.donor)}
        if self.within_brain:
            if brain is None:
                raise ValueError("CarveEdit(within_brain=True) needs the item's brain mask")
            inside = np.asarray(brain, dtype=bool)
            if inside.shape != label.shape:
                raise ValueError(f"the brain mask has shape {inside.shape}, the item {label.shape}")
            record["outside_brain"] = int((lesion & ~inside).sum())
            lesion &= inside
        if first is not None:
            record["random"] = first.record
        edited = np.where(lesion, donor_label, base).astype(label.dtype)
        return EditResult(edited, record)


def transform_edits(edits: str | Mapping[str, float] | None, donors: Any, editor_given: bool) -> dict[str, float]:
    """The edit mixture of a transform's ``edits`` argument (None: ``"random"``), checked against its other
    arguments: the carve kinds take their donor lesion from ``donors`` (label maps on the subjects' grid), and the
    editor (``editor=`` / ``policy=``, ``editor_given``) only serves the kinds that draw a random edit.

    Example:
        >>> transform_edits("carve+random", donors=[np.zeros((2, 2), np.uint8)], editor_given=True)
        {'carve+random': 1.0}
        >>> transform_edits("carve", donors=None, editor_given=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: edits='carve' adds a donor's lesion where it lies: pass donors=[...] (label maps of ...)
    """
    mixture = edit_mixture("random" if edits is None else edits)
    if set(mixture) & set(CARVE_KINDS) and (donors is None or len(donors) == 0):
        raise ValueError(
            f"edits={edits!r} adds a donor's lesion where it lies: pass donors=[...] (label maps of other subjects, "
            "on the subjects' grid and co-registered with them)"
        )
    check_editor_use(mixture, edits, editor_given)
    return mixture


def check_editor_use(mixture: Mapping[str, float], edits: Any, editor_given: bool) -> None:
    """Refuse an ``editor=`` / ``policy=`` (``editor_given``) for a mixture of ``edits`` that draws no random edit.

    Example:
        >>> check_editor_use({"carve": 1.0}, "carve", editor_given=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: edits='carve' pastes a donor's lesion labels as they lie and uses no editor: leave out ...
    """
    if editor_given and not set(mixture) & set(EDITOR_KINDS):
        raise ValueError(
            f"edits={edits!r} pastes a donor's lesion labels as they lie and uses no editor: leave out editor= / "
            "policy=, or pass edits='random' or 'carve+random' to use them"
        )


def check_donor_grid(donor_affine: Any, affine: Any, donor: str, source: str) -> None:
    """Refuse a carve donor whose affine differs from its source's (where both are known): carve adds the donor's
    lesion voxel for voxel where it lies, so on another grid it would land somewhere else in the brain.

    Example:
        >>> check_donor_grid(np.eye(4), np.eye(4) + 1e-6, "donors[0]", "the subject")  # float noise: one grid
    """
    if affines_agree(donor_affine, affine):
        return
    raise ValueError(
        f"{donor} has the affine {format_affine(donor_affine)}, {source} {format_affine(affine)}: carve adds a "
        "donor's lesion voxel for voxel where it lies, so donors must share their sources' grid; resample them onto "
        "one grid first (e.g. tio.Resample(reference)) or use edits='random'"
    )


def pool_edit(kind: str, editor: Any, donors: Any, seed: int, affine: Any = None) -> Any:
    """The editor of one sample of ``kind``: ``editor`` for ``"random"``; for a carve kind a :class:`CarveEdit`
    (inside the brain) of ``donors[j]``, ``j`` drawn from ``torch.Generator().manual_seed(seed)`` (``"carve+random"``:
    ``editor``'s random edit first). The record's ``"donor"`` is ``j``: replay it with ``carve_donors=donors``.
    ``affine``: the sample's, checked against the donor's where ``donors`` knows it (a
    :class:`~samraug.augment.donors.DonorPool` of ``tio.LabelMap`` / MetaTensor label maps).

    Example:
        >>> donors = [np.ones((2, 2), np.uint8)]
        >>> pool_edit("carve", None, donors, seed=0).random_edit(np.zeros((2, 2), np.uint8), np.ones((2, 2))).record
        {'op': 'carve', 'donor': 0, 'outside_brain': 0}
    """
    if kind not in CARVE_KINDS:
        return editor
    j = int(torch.randint(len(donors), (1,), generator=torch.Generator().manual_seed(seed)).item())
    donor_affine = getattr(donors, "donor_affine", None)
    check_donor_grid(None if donor_affine is None else donor_affine(j), affine, f"donors[{j}]", "the sample")
    then = editor if kind == "carve+random" else None
    return CarveEdit(np.asarray(donors[j]), j, f"donors[{j}]", within_brain=True, then=then)


def replay_edit(
    editor: Any,
    label: np.ndarray,
    brain: Any,
    record: Mapping[str, Any],
    donors: Any = None,
    carve_donors: Any = None,
) -> np.ndarray:
    """The label map of a recorded edit, made again: ``editor.replay`` for the editor's records; for a carve record
    (``"carve"``, ``"carve+random"``) the donor's label map is ``carve_donors[record["donor"]]`` (indexed as the
    record's donor: for :class:`~samraug.dataset.SAMRAugmentedDataset`, the real items' label maps) and the random
    part is replayed by ``editor`` with ``donors``.
    """
    op = record.get("op") if isinstance(record, Mapping) else None
    if op not in CARVE_KINDS:
        if editor is None:
            raise ValueError("replay= needs the editor= that made the record (e.g. LesionEditor(scheme))")
        return np.asarray(editor.replay(label, brain, dict(record), donors=donors).label)
    if op == "carve+random" and editor is None:
        raise ValueError("replaying a 'carve+random' record needs the editor= that made its random edit")
    if carve_donors is None:
        raise ValueError(
            f"replaying a {op!r} record needs the label maps its donor index {record.get('donor')!r} refers to "
            "(carve_donors=; SAMRAugmentedDataset serves its own while it lives)"
        )
    j = record.get("donor")
    if isinstance(j, bool) or not isinstance(j, int):
        raise ValueError(f"the {op!r} record {dict(record)} holds no integer 'donor'")
    try:
        donor_label = np.asarray(carve_donors[j])
    except (IndexError, KeyError):
        raise ValueError(f"the {op!r} record's donor {j} is not in carve_donors (of {len(carve_donors)})") from None
    carve = CarveEdit(
        donor_label,
        j,
        f"donor {j}",
        within_brain="outside_brain" in record,
        then=editor if op == "carve+random" else None,
    )
    return np.asarray(carve.replay(label, brain, record, donors=donors).label)
