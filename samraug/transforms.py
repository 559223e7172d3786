"""TorchIO transforms: :class:`SAMRSynthesize` (random) and its fixed sibling :class:`SAMRSynthesizeFixed`.

With probability ``ratio``, :class:`SAMRSynthesize` edits the subject's lesion label map with a
:class:`~samraug.editing.LesionEditor` (mirror, scale, move, rotate, perturb, swap a donor's lesion, remove) and
replaces the subject's MR sequences with images that the SAMR generator paints for the edited mask, in the real
subject's intensity scale (per-sequence brain percentiles p0.5 / p99.5; background 0). The label map comes back in
the user's own scheme and dtype, with sub-labels such as ET vs NETC kept wherever the voxels were not edited.

Like every TorchIO random transform it draws from torch's global random generator (a seed per sample), so
DataLoader workers make different samples and ``torch.manual_seed`` makes a whole run reproducible. The seed and
every edit parameter are recorded, as plain values, in the subject's history: ``subject.get_composed_history()``
rebuilds a :class:`SAMRSynthesizeFixed` that reproduces the sample exactly from the original subject.

Sequences are matched by name: ``sequence_map`` maps the model's sequence names (``synth.sequences``, e.g.
``t1n, t1c, t2w, t2f, aptw``) to the subject's image keys; by default each model sequence whose name is a key of
the subject. Only keys present in the subject are replaced. The subject must be on the atlas grid of the weights
(co-registered, same shape and affine), as the generator paints anatomy from the atlas.

Example:
    >>> import torchio as tio
    >>> from samraug.transforms import SAMRSynthesize
    >>> transform = tio.Compose([tio.RandomFlip(axes=("LR",)), SAMRSynthesize(ratio=0.5, scheme="brats2024")])
    >>> augmented = transform(subject)  # doctest: +SKIP
    >>> augmented.get_composed_history()  # doctest: +SKIP
    Compose([Flip(axes=(0,)), SAMRSynthesizeFixed(edit={...}, seed=1234, ...)])
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchio as tio
from torchio.transforms import Transform
from torchio.transforms.augmentation import RandomTransform

from samraug.atlas_space import check_space, normalize_space, weights_space
from samraug.augment.core import (  # noqa: F401  (check_lesion_in_brain: re-exported from its old home)
    PendingSample,
    _editor_settings,
    _make_editor,
    _plain,
    _pool,
    check_lesion_in_brain,
    register_donors,
    scheme_from_plain,
    scheme_to_plain,
)
from samraug.augment.donors import DonorPool, find_donors
from samraug.augment.edits import CARVE_KINDS, draw_edit_kind, pool_edit, transform_edits
from samraug.augment.painters import CopyPastePainter, SAMRPainter, check_local_settings, get_painter
from samraug.augment.pipeline import augment_view
from samraug.augment.views import ItemView, affine_of, check_sequence_map, subject_view
from samraug.labels import LabelScheme
from samraug.synthesis import Synthesizer, get_synthesizer

__all__ = [
    "PendingSample",
    "SAMRSynthesize",
    "SAMRSynthesizeFixed",
    "register_donors",
]


# ---------------------------------------------------------------------------------------------- subjects
def _find_label_key(subject: tio.Subject, label_key: str | None) -> str:
    label_maps = [k for k, v in subject.items() if isinstance(v, tio.LabelMap)]
    if label_key is not None:
        if label_key not in subject or not isinstance(subject[label_key], tio.Image):
            raise ValueError(
                f"subject has no label map {label_key!r} (its label maps: {label_maps}, keys: {list(subject.keys())}); "
                "pass label_key=<the key of the lesion segmentation>"
            )
        return label_key
    candidates = [k for k in label_maps if k != "brain"]
    if len(candidates) != 1:
        raise ValueError(
            f"cannot tell which label map is the lesion segmentation (label maps: {label_maps}); "
            "pass label_key=<its key>" + ("; the subject has no tio.LabelMap" if not label_maps else "")
        )
    return candidates[0]


def _subject_scheme(subject: tio.Subject, scheme: str | LabelScheme | Mapping | None) -> LabelScheme:
    if scheme is not None:
        return scheme_from_plain(scheme)
    if "scheme" in subject and not isinstance(subject["scheme"], tio.Image):
        return scheme_from_plain(subject["scheme"])
    raise ValueError(
        "the label scheme is unknown: pass scheme='brats2021' | 'brats2023' | 'brats2024' | 'samr' (or a "
        "LabelScheme), or give the subject a 'scheme' attribute (samraug.data.brats.load_brats does)"
    )


@dataclass
class _SubjectPlan:
    label_key: str
    brain_key: str | None
    scheme: LabelScheme
    mapping: dict[str, str]


def _plan_subject(
    subject: tio.Subject,
    synth: Synthesizer,
    *,
    label_key: str | None,
    brain_key: str | None,
    scheme: Any,
    sequence_map: Mapping[str, str] | None,
    allowed: Sequence[str] | None = None,
    whole_image: bool = True,
) -> _SubjectPlan:
    if whole_image:
        check_history(subject)
    key = _find_label_key(subject, label_key)
    sch = _subject_scheme(subject, scheme)
    images = [k for k, v in subject.items() if isinstance(v, tio.ScalarImage)]
    if allowed is not None:
        images = [k for k in images if k in allowed]
    mapping = check_sequence_map(sequence_map, synth.sequences, images, "subject's images")
    bkey = brain_key
    if bkey is None and "brain" in subject and isinstance(subject["brain"], tio.Image) and key != "brain":
        bkey = "brain"
    return _SubjectPlan(key, bkey, sch, mapping)


#: TorchIO transforms that move anatomy inside the image without changing its affine: after one of them the subject
#: no longer matches the atlas that whole-image synthesis paints from. Flips and grid changes that keep the affine
#: consistent (Resample, CropOrPad, ...) are fine.
DEFORMING_TRANSFORMS = ("Affine", "ElasticDeformation", "AffineElasticDeformation", "Motion")


def check_history(subject: tio.Subject) -> None:
    """Refuse a subject whose TorchIO history holds a deforming transform (whole-image synthesis would paint the
    atlas anatomy unrotated/undeformed into it).

    Example:
        >>> check_history(tio.Subject(t1=tio.ScalarImage(tensor=torch.zeros(1, 2, 2, 2))))  # nothing applied: fine
    """
    names = [t.name if isinstance(t, Transform) else str(t[0]) for t in subject.history]
    bad = [n for n in names if n in DEFORMING_TRANSFORMS]
    if bad:
        raise ValueError(
            f"the subject went through {bad} before SAMR synthesis: whole-image synthesis paints the atlas anatomy "
            "on the atlas grid, so the painted anatomy would not follow that deformation. Put the deforming "
            "transform after SAMRSynthesize in the tio.Compose (or use local mode, which paints only around the "
            "lesion and keeps the subject's own anatomy)"
        )


def read_subject(subject: tio.Subject, synth: Synthesizer, plan: _SubjectPlan, *, check_grid: bool = True) -> ItemView:
    """``subject`` read into a view with ``plan``'s keys, checked against the atlas grid of whole-image weights
    (``check_grid=False``: the subject may be off the atlas grid; its painter resamples it)."""
    view = subject_view(
        subject, label_key=plan.label_key, brain_key=plan.brain_key, mapping=plan.mapping, sequences=synth.sequences
    )
    # local weights carry no atlas (any grid); whole-image subjects of the atlas's space are resampled by the painter
    if check_grid and synth.config.get("mode", "whole") == "whole":
        synth.atlas.check_grid(view.label.shape, view.affine, "subject")
    return view


def replayable_painter(painter: Any, synth: Synthesizer) -> bool:
    """Whether a :class:`SAMRSynthesizeFixed` record on ``synth``'s weights repaints ``painter``'s sample exactly: a
    local SAMR painter on the same weights (the weights' own painter, or one with other settings, which the record
    carries; local painting is deterministic). Whole-image SAMR has its own record; other painters have none."""
    return isinstance(painter, SAMRPainter) and painter.mode == "local" and painter.synthesizer.key == synth.key


# ---------------------------------------------------------------------------------------------- transforms
class SAMRSynthesizeFixed(Transform):
    """Reproduce a recorded :class:`SAMRSynthesize` sample: replay the edit, synthesize, replace the sequences.

    Built from plain values only (what :class:`SAMRSynthesize` records in ``subject.history``), so
    ``subject.get_composed_history()`` rebuilds it. ``synthesize=False`` records a sample left real (a no-op).

    Args:
        edit: The editor's record of the edit (a dict), or None for no edit (synthesis of the unedited mask).
        seed: The sample's seed (the record alone reproduces the edit; local painting's matched noise is drawn
            from ``seed + 1``, as in the original sample).
        synthesize: Whether the sample was synthesized at all.
        skipped: Why the painter left an applied sample real (e.g. a local region too close to the image edge),
            recorded with ``synthesize=False``: the subject kept its images and its label map. None otherwise.
        weights: The weights (None: the bundled demo weights, local mode; a folder; ``org/name[@rev]``; a
            ``"memory:..."`` key).
        scheme: Label scheme name (or a plain scheme dict).
        label_key, brain_key: Keys of the label map and the brain mask (None: non-zero voxels of the images).
        sequence_map: ``{model_sequence: subject_key}`` of the replaced images.
        donors: The donor pool a swap used: its key (found while the transform or dataset that made the sample
            lives in this process), or the donor label maps themselves (a replay anywhere else), or None.
        editor: The :class:`~samraug.editing.LesionEditor` settings (``min_fragment``, ``max_retries``,
            ``max_clip``) the edit was made with.
        device, dtype: Where and in which precision the generator runs.
        carve_donors: For a carve record (``"carve"`` / ``"carve+random"``, made with ``edits=`` by
            :class:`~samraug.dataset.SAMRAugmentedDataset` or :class:`SAMRSynthesize`): the label maps its
            ``"donor"`` index refers to (the dataset's real items; the transform's ``donors``): a key served while
            the dataset or transform lives in this process, or the label maps themselves (e.g.
            ``[real_ds[k]["seg"] for k in range(len(real_ds))]``, a replay anywhere else).
        painter: The local SAMR painter's settings (:meth:`~samraug.augment.painters.SAMRPainter.local_settings`)
            when the sample was painted by a local painter other than the weights' default one (e.g.
            ``SAMRPainter(weights, healthy="mirror")``); None: the weights' own painter.
        **kwargs: See :class:`torchio.transforms.Transform`.

    Example:
        >>> fixed = augmented.get_composed_history()  # doctest: +SKIP
        >>> again = fixed(original_subject)  # identical to augmented  # doctest: +SKIP
    """

    def __init__(
        self,
        edit: Mapping[str, Any] | None = None,
        seed: int | None = None,
        synthesize: bool = True,
        weights: str | None = None,
        scheme: str | Mapping[str, Any] | None = None,
        label_key: str | None = "seg",
        brain_key: str | None = None,
        sequence_map: Mapping[str, str] | None = None,
        donors: str | Sequence[Any] | None = None,
        editor: Mapping[str, Any] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        skipped: str | None = None,
        carve_donors: str | Sequence[Any] | None = None,
        painter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if painter is not None:
            if not isinstance(painter, Mapping):
                raise TypeError(f"painter must be a mapping of local painter settings or None, got {painter!r}")
            painter = check_local_settings(painter)  # the values too: refused here, not at the first subject
        self.painter = None if painter is None else _plain(dict(painter))
        self._painter: SAMRPainter | None = None
        self._donor_pool: DonorPool | None = None
        if donors is not None and not isinstance(donors, str):  # explicit donors (a replay in another process)
            self._donor_pool = _pool(donors)
            donors = None if self._donor_pool is None else self._donor_pool.key
        self._carve_pool: DonorPool | None = None
        if carve_donors is not None and not isinstance(carve_donors, str):
            self._carve_pool = _pool(carve_donors)
            carve_donors = None if self._carve_pool is None else self._carve_pool.key
        self.editor = None if editor is None else _plain(editor)
        self.edit = None if edit is None else _plain(edit)
        self.seed = None if seed is None else int(seed)
        self.synthesize = bool(synthesize)
        self.skipped = None if skipped is None else str(skipped)
        if self.skipped is not None and self.synthesize:
            raise ValueError(f"skipped={self.skipped!r} records a sample left real: it needs synthesize=False")
        self.weights = None if weights is None else str(weights)
        self.scheme = None if scheme is None else scheme_to_plain(scheme_from_plain(scheme))
        self.label_key = label_key
        self.brain_key = brain_key
        self.sequence_map = None if sequence_map is None else {str(k): str(v) for k, v in sequence_map.items()}
        self.donors = donors
        self.carve_donors = carve_donors
        self.device = str(device)
        self.dtype = str(dtype)
        self.args_names = [
            "edit",
            "seed",
            "synthesize",
            "weights",
            "scheme",
            "label_key",
            "brain_key",
            "sequence_map",
            "donors",
            "editor",
            "device",
            "dtype",
            "skipped",
            "carve_donors",
            "painter",
        ]
        self._synthesizer: Synthesizer | None = None

    def _synth(self) -> Synthesizer:
        if self._synthesizer is None:
            self._synthesizer = get_synthesizer(self.weights, device=self.device, dtype=self.dtype)
        return self._synthesizer

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        if not self.synthesize:
            return subject
        synth = self._synth()
        plan = _plan_for(self, subject, synth, whole_image=synth.config.get("mode", "whole") == "whole")
        editor = _make_editor(plan.scheme, None, self.editor)
        donors = self._donor_pool if self._donor_pool is not None else find_donors(self.donors)
        carve_donors = self._carve_pool if self._carve_pool is not None else find_donors(self.carve_donors)
        view = read_subject(subject, synth, plan)
        if self.painter is not None and self._painter is None:
            self._painter = SAMRPainter(synth, mode="local", **self.painter)
        return augment_view(
            view,
            item=subject,
            scheme=plan.scheme,
            synthesizer=synth,
            editor=None if self.edit is None else editor,
            replay=self.edit,
            donors=donors,
            carve_donors=carve_donors,
            painter=self._painter,
            paint_seed=None if self.seed is None else self.seed + 1,  # the painter's noise, as in the original
        ).item


class SAMRSynthesize(RandomTransform):
    """With probability ``ratio``, edit the lesion mask and replace the subject's sequences with SAMR synthesis.

    Args:
        ratio: Probability that a subject is made synthetic (the synthetic fraction of the samples).
        weights: None (the bundled demo weights, local mode), a weights folder, ``"org/name[@revision]"``, or a
            :class:`~samraug.synthesis.Synthesizer`.
        scheme: The label scheme of the subjects (``"brats2021"``, ``"brats2023"``, ``"brats2024"``, ``"samr"`` or a
            :class:`~samraug.labels.LabelScheme`); default: each subject's ``scheme`` attribute.
        label_key: Key of the lesion label map; None: the subject's single ``tio.LabelMap`` other than ``"brain"``.
        brain_key: Key of a brain mask (non-zero = brain); default ``"brain"`` when the subject has it, else the
            non-zero voxels of the replaced images (skull-stripped data, background 0).
        sequence_map: ``{model_sequence: subject_key}``; default: the model sequences whose names are subject keys.
            Only keys present in the subject are replaced.
        editor: A :class:`~samraug.editing.LesionEditor` (default: one for the scheme with ``policy``).
        policy: An :class:`~samraug.editing.EditPolicy` for the default editor.
        donors: Label maps (arrays, tensors or ``tio.LabelMap``, in the subjects' scheme) whose lesions a swap may
            paste (and the carve edits add, ``edits=``); None: the subject's own lesion only (no swap).
        device, dtype: Where the generator runs (``"auto"``: CUDA when available; inside DataLoader workers use
            ``"cpu"`` or the batched :class:`~samraug.dataset.SAMRAugmentedDataset` path).
        painter: ``"samr"`` (default) or ``"labels-to-image"`` (or a painter instance). Samples of SAMR on
            ``weights`` carry a replay record in the history: whole-image, and local with any settings (e.g.
            ``SAMRPainter(weights, healthy="mirror")``, whose settings the record carries). Samples of other
            painters carry none.
        mode: SAMR only: ``"whole"`` or ``"local"`` (default: the weights' ``config["mode"]``, else whole). A
            deforming transform before whole-image synthesis is refused; local mode keeps the subject's anatomy.
        space: Whole-image mode: the template space the subjects are registered to (e.g. ``"MNI152"``). A subject
            off the atlas grid whose space equals the weights' ``atlas_space`` is resampled to the atlas grid,
            painted and resampled back (:mod:`samraug.atlas_space`; such samples carry no replay record); None:
            subjects must sit on the atlas grid.
        edits: How the label map is edited (:mod:`samraug.augment.edits`): None or ``"random"`` (the editor's random
            edit), ``"carve"`` (CarveMix's edit: the lesion of a label map drawn from ``donors`` added where it lies,
            inside the brain) or ``"carve+random"`` (the random edit, then a donor's lesion on top), or a mapping of
            kinds to weights drawn per sample. The carve kinds need ``donors`` on the subjects' grid, co-registered
            with them (e.g. the other training subjects' label maps in BraTS' SRI24 space), and a place before any
            spatial transform in the pipeline. The best local setting on the augmentation benchmark is
            ``edits="carve+random"`` with ``policy=EditPolicy(p_insert=1.0, n_insert=5)``.
        **kwargs: See :class:`torchio.transforms.Transform`.

    Randomness comes from torch's global generator (one seed per sample, recorded): workers differ, and
    ``torch.manual_seed`` reproduces a whole run. The history gets a :class:`SAMRSynthesizeFixed` with plain values
    (``synthesize=False`` when the sample stays real), so ``subject.get_composed_history()`` replays it.

    Example:
        >>> import torchio as tio
        >>> transform = SAMRSynthesize(ratio=0.5, weights="my-org/samr-lite", scheme="brats2021", device="cpu")
        >>> dataset = tio.SubjectsDataset(subjects, transform=transform)  # doctest: +SKIP
    """

    def __init__(
        self,
        ratio: float = 0.5,
        *,
        weights: str | Synthesizer | None = None,
        scheme: str | LabelScheme | None = None,
        label_key: str | None = "seg",
        brain_key: str | None = None,
        sequence_map: Mapping[str, str] | None = None,
        editor: Any = None,
        policy: Any = None,
        donors: Sequence[Any] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        painter: Any = "samr",
        mode: str | None = None,
        space: str | None = None,
        edits: str | Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must be a probability in [0, 1], got {ratio!r}")
        if editor is not None and policy is not None:
            raise ValueError("pass either editor= or policy= (the policy of a default editor), not both")
        #: ``{kind: probability}`` of the edit kinds (:mod:`samraug.augment.edits`)
        self.edit_mixture = transform_edits(edits, donors, editor is not None or policy is not None)
        self.ratio = float(ratio)
        if isinstance(weights, Synthesizer):
            self.synthesizer = weights.clone()  # private: never shared with another user
        else:
            self.synthesizer = get_synthesizer(weights, device=device, dtype=dtype)
        self.scheme = None if scheme is None else scheme_to_plain(scheme)  # plain: LabelSchemes do not pickle
        self.label_key = label_key
        self.brain_key = brain_key
        self.sequence_map = None if sequence_map is None else dict(sequence_map)
        self.editor = editor
        self.policy = policy
        self._painter_spec = (painter, mode)
        self._painter: Any = None
        self._painter_known = False
        self.space = normalize_space(space)
        self._space_painter: Any = None
        if painter != "samr" or mode is not None:  # validate now; the default mode is read from the weights lazily
            self._resolve_painter()
        self._donor_pool = _pool(donors)  # owned here; replays find it weakly by its key
        self.donor_key = None if self._donor_pool is None else self._donor_pool.key
        self._editors: dict[str, Any] = {}
        self._warned: set[tuple[str, ...]] = set()  # image sets already warned about (once per transform)
        self.args_names = ["ratio", "scheme", "label_key", "brain_key", "sequence_map"]

    def _resolve_painter(self) -> Any:
        """None for whole-image SAMR, else the painter (recorded in the history, replayable: whole-image SAMR and
        local SAMR painters on the transform's weights; other painters leave no replay record)."""
        if not self._painter_known:
            painter, mode = self._painter_spec
            if painter == "samr":
                chosen = get_painter("samr", mode=mode, synthesizer=self.synthesizer)
            else:
                chosen = get_painter(painter, mode=mode)
            if isinstance(chosen, CopyPastePainter):
                raise ValueError(
                    "the copy-paste painter needs donor images, which a transform does not have: use "
                    "SAMRAugmentedDataset(subjects, painter='copy-paste') (donors: the other real subjects)"
                )
            self._painter = None if isinstance(chosen, SAMRPainter) and chosen.mode == "whole" else chosen
            self._painter_known = True
        return self._painter

    def _editor_for(self, scheme: LabelScheme) -> Any:
        if self.editor is not None:
            return self.editor
        if scheme.name not in self._editors:
            self._editors[scheme.name] = _make_editor(scheme, self.policy)
        return self._editors[scheme.name]

    def _fixed(self, synth: Synthesizer | None = None, **values: Any) -> SAMRSynthesizeFixed:
        """The history record of a sample (``synth``: the synthesizer that painted it; default this transform's)."""
        synth = self.synthesizer if synth is None else synth
        fixed = SAMRSynthesizeFixed(
            weights=synth.key,
            label_key=self.label_key,
            brain_key=self.brain_key,
            sequence_map=self.sequence_map,
            donors=self.donor_key,
            device=synth.device_spec,
            dtype=synth.dtype_spec,
            **values,
            **self._get_base_args(),
        )
        fixed._synthesizer = synth
        fixed._donor_pool = self._donor_pool
        return fixed

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        seed = self._get_random_seed()
        applied = bool(torch.rand(1).item() < self.ratio)
        if not applied:
            fixed = self._fixed(synthesize=False, seed=seed)
            subject.add_transform(fixed, fixed._get_reproducing_arguments())
            return subject
        synth = self.synthesizer
        painter = self._resolve_painter()
        whole = painter is None
        off_grid = whole and not _on_atlas_grid(subject, synth)
        if off_grid:  # whole-image mode off the atlas grid: only for a subject declared in the atlas's space
            check_space(self.space, weights_space(synth.config), "subject")
            if self._space_painter is None:
                self._space_painter = SAMRPainter(synth, mode="whole", space=self.space)
            painter = self._space_painter
        plan = _plan_for(self, subject, synth, whole_image=whole)
        _warn_unreplaced(subject, plan, self._warned)
        editor = self._editor_for(plan.scheme)
        kind = draw_edit_kind(self.edit_mixture, torch.default_generator)  # a single kind draws nothing
        generator = torch.Generator().manual_seed(seed)
        view = read_subject(subject, synth, plan, check_grid=not off_grid)
        # after the read: the label image is loaded, so its affine costs no header read
        edit_with = pool_edit(kind, editor, self._donor_pool, seed, affine=affine_of(subject[plan.label_key]))
        done = augment_view(
            view,
            item=subject,
            scheme=plan.scheme,
            synthesizer=synth,
            editor=edit_with,
            generator=generator,
            donors=self._donor_pool,
            painter=painter,
            paint_seed=seed + 1,
        )
        skipped = (done.record.get("paint") or {}).get("skipped")
        if skipped:  # the painter left the subject real (images and label map): a no-op, with the reason
            fixed = self._fixed(synthesize=False, seed=seed, skipped=str(skipped))
            subject = done.item
            subject.add_transform(fixed, fixed._get_reproducing_arguments())
            return subject
        if painter is not None and not replayable_painter(painter, self.synthesizer):  # no replay record for it
            return done.item
        # the painter this transform built from its weights (or whole-image SAMR): the record needs no settings
        own = painter is None or (painter is self._painter and self._painter_spec[0] == "samr")
        fixed = self._fixed(
            synth=None if own else painter.synthesizer,
            painter=None if own else painter.local_settings(),
            edit=done.record["edit"],
            seed=seed,
            scheme=scheme_to_plain(plan.scheme),
            synthesize=True,
            editor=_editor_settings(editor),
            carve_donors=self.donor_key if kind in CARVE_KINDS else None,
        )
        fixed._carve_pool = self._donor_pool if kind in CARVE_KINDS else None
        fixed.label_key = plan.label_key
        fixed.brain_key = plan.brain_key
        fixed.sequence_map = dict(plan.mapping)
        subject = done.item
        subject.add_transform(fixed, fixed._get_reproducing_arguments())
        return subject


def _on_atlas_grid(subject: tio.Subject, synth: Synthesizer) -> bool:
    """Whether the subject's images sit on the synthesizer's atlas grid (shape and affine)."""
    image = subject.get_first_image()
    try:
        synth.atlas.check_grid(tuple(image.spatial_shape), np.asarray(image.affine), "subject")
    except ValueError:
        return False
    return True


def _plan_for(
    transform: tio.Transform, subject: tio.Subject, synth: Synthesizer, whole_image: bool = True
) -> _SubjectPlan:
    """Plan ``subject`` with a SAMR transform's keys, scheme, sequence map and TorchIO include/exclude."""
    return _plan_subject(
        subject,
        synth,
        label_key=transform.label_key,
        brain_key=transform.brain_key,
        scheme=transform.scheme,
        sequence_map=transform.sequence_map,
        allowed=_allowed_keys(subject, transform.include, transform.exclude),
        whole_image=whole_image,
    )


def _allowed_keys(subject: tio.Subject, include: Any, exclude: Any) -> list[str]:
    """The subject's scalar images that TorchIO's ``include`` / ``exclude`` let this transform replace."""
    return list(subject.get_images_dict(intensity_only=True, include=include, exclude=exclude))


def _warn_unreplaced(subject: tio.Subject, plan: _SubjectPlan, warned: set[tuple[str, ...]]) -> None:
    left = tuple(
        sorted(
            k
            for k, v in subject.items()
            if isinstance(v, tio.ScalarImage) and k not in plan.mapping.values() and k != plan.brain_key
        )
    )
    if left and left not in warned:
        warned.add(left)
        warnings.warn(
            f"SAMRSynthesize leaves the images {list(left)} real: the model does not make them (it makes "
            f"{list(plan.mapping)} for this subject); they will not match the edited label map. Map them with "
            "sequence_map= or drop them from the subject",
            UserWarning,
            stacklevel=3,
        )
