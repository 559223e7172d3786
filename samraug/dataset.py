"""Mix synthetic samples into any map-style dataset: :class:`SAMRAugmentedDataset` and :class:`SynthesizingLoader`.

``SAMRAugmentedDataset(real_ds, ratio=0.5)`` wraps a dataset of ``tio.Subject``\\ s, dicts of tensors, or
``(image, label)`` tuples. ``ratio`` is the synthetic fraction of the mixed set (the paper's 50 % = 1080 real +
1080 synthetic), so its length is ``round(len(real_ds) / (1 - ratio))``: indices below ``len(real_ds)`` return the
real items unchanged, the others a synthetic sample: a real item drawn at random, its lesion mask edited by a
:class:`~samraug.editing.LesionEditor` (donors: other items of the dataset by default), and its images replaced by
the generator's, in the real item's intensity scale. A synthetic item has the same format as a real one (same
keys, shapes, dtypes, label scheme), so the user's collate function and training loop need no change.

Every random choice of synthetic item ``i`` comes from a ``torch.Generator`` seeded by ``(seed, i)``: the same
seed gives the same samples whatever the worker assignment, the number of workers or the path below.

**GPU training** (docs/architecture.md, "Running the generator"): the generator never runs inside DataLoader workers.
With ``batched=True`` the workers only edit masks and return :class:`~samraug.transforms.PendingSample`\\ s;
wrapping the loader in :class:`SynthesizingLoader` runs one generator call per batch in the main process and hands the
user's collate function finished items. On CPU either path works (and gives the same samples).

Item formats (decided from ``real_ds[0]``):

- ``tio.Subject``: as :class:`~samraug.transforms.SAMRSynthesize` (label map ``label_key``, default ``"seg"``;
  scheme from ``scheme=`` or the subject's ``scheme`` attribute; sequences matched by name or ``sequence_map``).
- dict: ``label_key`` (default ``"label"``) holds the label map, ``(X, Y, Z)`` / ``(H, W)`` (a leading channel of 1
  is kept as is); images either stacked in ``image_key`` (default ``"image"``, ``(n, ...)`` channel-first; channel
  ``i`` is model sequence ``i`` unless ``sequence_map={sequence: channel}``) or one key per sequence
  (``sequence_map={sequence: key}``). Optional keys: ``"brain"`` (brain mask, default: non-zero voxels of the images),
  ``"affine"`` (3D: checked against the atlas grid), ``"atlas"`` (2D: the item's own atlas stack), ``"z"`` (2D: the
  axial atlas slice), ``"mask"`` (a one-hot SAMR mask, updated to the edit). samraug's own 2D training instances
  (:mod:`samraug.data.slices`) work as they are (scheme ``"samr"``; images stay normalised).
- tuple ``(image, label, ...)``: image ``(n, ...)`` channel-first in the model's sequence order (or
  ``sequence_map={sequence: channel}``), label in the user's scheme; further elements are passed through.

**2D items** need the axial atlas slice they come from: the item's ``"atlas"`` stack, else its ``"z"`` entry, else
``z=`` (an int for every item, or a function ``item -> int``). Without any of them the constructor raises.

**Intensities** (``intensity="auto"``): items carrying ``"stats"`` (samraug instances) are already normalised, so
synthetic images stay in [-1, 1] (``"model"``); otherwise each sequence is mapped to the real item's scale
(``"match"``): the p0.5 / p99.5 of the real sequence inside the brain, and its background value outside.

Example:
    >>> from torch.utils.data import DataLoader
    >>> from samraug.dataset import SAMRAugmentedDataset, SynthesizingLoader
    >>> mixed = SAMRAugmentedDataset(real_ds, ratio=0.5, scheme="brats2021", batched=True)  # doctest: +SKIP
    >>> loader = SynthesizingLoader(DataLoader(mixed, batch_size=16, shuffle=True, num_workers=4))  # doctest: +SKIP
    >>> for batch in loader: ...  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchio as tio
from torch.utils.data import Dataset

from samraug.atlas_space import check_space, normalize_space, weights_space
from samraug.augment.batched import (  # re-exported: the batched path lived here
    PendingBatch,
    PendingCollate,
    SynthesizingLoader,
    SynthesizingQueue,
    synthesize_pending,
)
from samraug.augment.core import (
    PendingSample,
    _editor_settings,
    _make_editor,
    _plain,
    scheme_from_plain,
    scheme_to_plain,
)
from samraug.augment.donors import DonorPool, label_array, track
from samraug.augment.edits import (
    CARVE_KINDS,
    CarveEdit,
    check_donor_grid,
    check_editor_use,
    draw_edit_kind,
    edit_mixture,
)
from samraug.augment.painters import CopyPastePainter, Donor, SAMRPainter, get_painter
from samraug.augment.pipeline import augment_view
from samraug.augment.views import (
    ItemView,
    affine_of,
    as_tensor,
    check_sequence_map,
    output_item,
    plain_view,
    spatial,
)
from samraug.labels import LabelScheme, get_scheme
from samraug.synthesis import Synthesizer, get_synthesizer
from samraug.transforms import (
    SAMRSynthesizeFixed,
    _on_atlas_grid,
    _plan_subject,
    read_subject,
    replayable_painter,
)

__all__ = [
    "PendingBatch",
    "PendingCollate",
    "SAMRAugmentedDataset",
    "SynthesizingLoader",
    "SynthesizingQueue",
    "synthesize_pending",
]


class _DatasetDonors(Sequence):
    """The label maps of a dataset's items except one (or all: the donors of carve records, indexed as
    ``real_ds``), loaded only when an edit picks one (lazy)."""

    def __init__(self, owner: SAMRAugmentedDataset, exclude: int | None) -> None:
        self.owner, self.exclude = owner, exclude  # exclude None: every item (the donors of carve records)
        self._affines: dict[int, np.ndarray | None] = {}  # of the items read (a pool lives for one sample)

    def __len__(self) -> int:
        return max(self.owner.n_real - (self.exclude is not None), 0)

    def _item(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return i if self.exclude is None else i + (i >= self.exclude)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        item = self.owner.real_ds[self._item(i)]  # read only: nothing of it is returned
        self._affines[i] = self.owner._known_affine(item)
        return self.owner._label_of(item)

    def donor_affine(self, i: int) -> np.ndarray | None:
        """The affine item ``i`` carries (None: none known); read with its label map."""
        if i not in self._affines:
            self[i]
        return self._affines[i]

    def name_of(self, i: int) -> str:
        """Where donor ``i`` comes from (the editor's errors name it)."""
        return f"real_ds[{self._item(i)}]"


@dataclass
class _Layout:
    """How the items of the wrapped dataset are read (decided once, from the first item)."""

    kind: str  # "subject" | "mapping" | "tuple"
    ndim: int = 3  # spatial dims of the label map
    label_key: Any = None
    brain_key: Any = None
    image_key: Any = None
    mapping: dict[str, Any] | None = None  # model sequence -> key (str) or channel (int)
    scheme_plain: Any = None  # the scheme as a plain value (LabelScheme objects do not pickle)
    intensity: str = "match"
    scheme_arg: Any = None  # subjects: the scheme given by the user (None: each subject's own attribute)

    @property
    def scheme(self) -> LabelScheme:
        return scheme_from_plain(self.scheme_plain)


class SAMRAugmentedDataset(Dataset):
    """A real dataset plus synthetic samples made by editing real masks and running the SAMR generator.

    Args:
        real_ds: A map-style dataset of ``tio.Subject``, dicts or ``(image, label)`` tuples (module docstring).
        ratio: Synthetic fraction of the mixed dataset, in [0, 1); ``len = round(len(real_ds) / (1 - ratio))``.
            0 gives the real dataset unchanged. Default 0.5 (unless ``n_synthetic`` is given).
        n_synthetic: The number of synthetic items instead of a ratio: ``len = len(real_ds) + n_synthetic``.
        weights: None (the bundled demo weights, local mode), a weights folder, ``"org/name[@revision]"``, or a
            :class:`~samraug.synthesis.Synthesizer`.
        scheme: Label scheme of the items (default: a subject's ``scheme`` attribute / a dict's ``"scheme"``
            entry; ``"samr"`` for samraug 2D instances). Required otherwise.
        editor: A :class:`~samraug.editing.LesionEditor`; or ``policy``: the :class:`~samraug.editing.EditPolicy`
            of a default editor.
        donors: ``"dataset"`` (the other real items' lesions; loaded only when a swap is drawn), a list of label
            maps, or None (no swap).
        image_key, label_key, brain_key: Keys of dict items (``label_key`` default ``"label"``, ``"seg"`` for
            subjects; ``brain_key`` default ``"brain"`` when present).
        sequence_map: ``{model_sequence: key or channel}`` (module docstring).
        z: 2D items: the key of their axial atlas slice (default ``"z"``), an int, or a function ``item -> int``.
        intensity: ``"auto"``, ``"match"`` (real item's scale) or ``"model"`` ([-1, 1]).
        seed: Seed of every synthetic choice (with the index).
        batched: Return :class:`~samraug.transforms.PendingSample`\\ s for :class:`SynthesizingLoader` instead of
            synthesizing in ``__getitem__`` (GPU training): every item a SAMR generator paints (whole-image or
            local mode) is finished in the main process; copy-paste and labels-to-image items, which run no model,
            are painted in ``__getitem__`` (in the DataLoader workers).
        device, dtype: Of the generator (``"auto"``: CUDA when available).
        painter: ``"samr"`` (default), ``"copy-paste"`` (CarveMix-style: a random other real item's lesion and
            intensities pasted in; no editor), ``"labels-to-image"`` or a :class:`~samraug.augment.Painter`.
            ``tio.Subject`` items of SAMR on ``weights`` (whole-image, or local with any settings, e.g.
            ``SAMRPainter(weights, healthy="mirror")``) carry a replay record in their history
            (:class:`~samraug.transforms.SAMRSynthesizeFixed`); those of other painters carry none.
        edits: How the label maps are edited. None (default): the painter's own way, ``"carve"`` for copy-paste,
            ``"random"`` for the others. ``"random"``: the editor's random edits (``editor`` / ``policy``).
            ``"carve"``: CarveMix's edit for any painter: a random other real item's lesion labels added where
            they lie. Item for item it draws the same source and donor as copy-paste with the same ``seed``, so a
            SAMR painter given ``edits="carve"`` paints copy-paste's label maps, but for the donor lesion's voxels
            outside the source's brain mask, which only copy-paste adds (a painter refuses a lesion outside the
            brain; the edit record counts them, ``"outside_brain"``). ``"carve+random"``: both on one label map,
            the random edit first, then the same donor's lesion as ``"carve"`` added on top where it lies. A
            mapping of kinds to weights mixes them, drawn per item (e.g. ``{"carve": 0.5, "random": 0.5}``; the
            items of a kind are those of that kind alone with the same ``seed``). Copy-paste takes ``"carve"``
            only. Carve needs the real items on one grid: a donor whose shape or affine differs from the source's is
            refused, named. Whole-image items' histories replay carve edits while the dataset lives (see
            :class:`~samraug.transforms.SAMRSynthesizeFixed`'s ``carve_donors``).
        mode: SAMR painter only: ``"whole"`` or ``"local"`` (default: the weights' ``config["mode"]``, else whole).
        space: Whole-image SAMR: the template space the items are registered to (e.g. ``"MNI152"``). 3D items off
            the atlas grid (with an affine: ``tio.Subject`` or a dict with ``"affine"``) whose space equals the
            weights' ``atlas_space`` are resampled to the atlas grid, painted and resampled back
            (:mod:`samraug.atlas_space`; painted in ``__getitem__``, no replay record); None: items must sit on the
            atlas grid.
        transform: Applied to every item after synthesis (real items too), e.g. a MONAI ``Compose`` of the
            spatial and intensity transforms that must follow the painting (``Spacingd``, crops, label conversion).

    Example:
        >>> mixed = SAMRAugmentedDataset(real_ds, ratio=0.5, weights="my-org/samr-lite", scheme="brats2023")
        ...  # doctest: +SKIP
        >>> len(mixed) == 2 * len(real_ds)  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        real_ds: Any,
        ratio: float | None = None,
        *,
        n_synthetic: int | None = None,
        weights: str | Synthesizer | None = None,
        scheme: str | LabelScheme | None = None,
        editor: Any = None,
        policy: Any = None,
        donors: str | Sequence[Any] | None = "dataset",
        image_key: str = "image",
        label_key: Any = None,
        brain_key: Any = None,
        mask_key: str = "mask",
        atlas_key: str = "atlas",
        sequence_map: Mapping[str, Any] | None = None,
        z: str | int | Callable[[Any], int] | None = "z",
        intensity: str = "auto",
        seed: int = 0,
        batched: bool = False,
        device: str = "auto",
        dtype: str = "auto",
        transform: Callable[[Any], Any] | None = None,
        painter: Any = "samr",
        mode: str | None = None,
        space: str | None = None,
        edits: str | Mapping[str, float] | None = None,
    ) -> None:
        self.space = normalize_space(space)
        self._space_painter: Any = None
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable (e.g. a MONAI Compose), got {type(transform).__name__}")
        self.transform = transform
        if ratio is not None and n_synthetic is not None:
            raise ValueError(
                "pass either ratio= (the synthetic fraction) or n_synthetic= (the number of synthetic items), not both"
            )
        if n_synthetic is not None and (
            isinstance(n_synthetic, bool) or not isinstance(n_synthetic, (int, np.integer)) or n_synthetic < 0
        ):
            raise ValueError(f"n_synthetic must be an integer >= 0 (a count of synthetic items), not {n_synthetic!r}")
        if ratio is None and n_synthetic is None:
            ratio = 0.5
        if ratio is not None and (not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0):
            raise ValueError(
                f"ratio must be in [0, 1) (the synthetic fraction of the mixed dataset), got {ratio!r}; "
                "ratio=0.5 doubles the dataset with as many synthetic samples as real ones"
            )
        if editor is not None and policy is not None:
            raise ValueError("pass either editor= or policy= (the policy of a default editor), not both")
        mixture = None if edits is None else edit_mixture(edits)
        if mixture is not None:
            check_editor_use(mixture, edits, editor is not None or policy is not None)
        if intensity not in ("auto", "match", "model"):
            raise ValueError(f"intensity must be 'auto', 'match' or 'model', got {intensity!r}")
        self.real_ds = real_ds
        self.n_real = len(real_ds)
        if n_synthetic is None:
            n_synthetic = 0 if float(ratio) == 0 else round(self.n_real / (1.0 - float(ratio))) - self.n_real
            if float(ratio) > 0 and n_synthetic == 0:
                warnings.warn(
                    f"ratio={ratio} on {self.n_real} real items gives 0 synthetic items; raise the ratio or pass "
                    "n_synthetic=<the number of synthetic items>",
                    UserWarning,
                    stacklevel=2,
                )
        self.n_synthetic = int(n_synthetic)
        total = self.n_real + self.n_synthetic
        self.ratio = float(ratio) if ratio is not None else (self.n_synthetic / total if total else 0.0)
        self.seed = int(seed)
        self.batched = bool(batched)
        self.editor = editor
        self.policy = policy
        self.mask_key, self.atlas_key = mask_key, atlas_key
        self.z = z
        self._editors: dict[str, Any] = {}
        self._id = uuid.uuid4().hex[:12]
        track(f"dataset:{self._id}", self)  # weakly: replays of its subjects find their lazy donor pools
        if isinstance(weights, Synthesizer):
            self.synthesizer = weights.clone()  # private: never shared with another user
        else:
            self.synthesizer = get_synthesizer(weights, device=device, dtype=dtype)
        if isinstance(donors, str):
            if donors != "dataset":
                raise ValueError(f"donors must be 'dataset', a list of label maps or None, got {donors!r}")
            self.donors: Any = "dataset"
            self._donor_key = None
        elif donors is None:
            self.donors, self._donor_key = None, None
        else:
            self.donors = DonorPool(donors)  # owned here; replays find it weakly by its key
            self._donor_key = self.donors.key
        self._length = self.n_real + self.n_synthetic
        self.layout: _Layout | None = None
        self.painter: Any = None  # None: the SAMR whole-image path (batched generator calls)
        self._own_painter = painter == "samr"  # built here from the weights: a replay record needs no settings
        default_path = painter == "samr" and mode in (None, "whole")
        if default_path and self.n_synthetic > 0:  # the weights' default mode (read only when painting happens)
            default_path = self.synthesizer.config.get("mode", "whole") == "whole"
        if not default_path:
            if painter == "samr":
                self.painter = get_painter("samr", mode=mode, synthesizer=self.synthesizer)
            else:
                self.painter = get_painter(painter, mode=mode)
            if isinstance(self.painter, SAMRPainter) and self.painter.mode == "whole":
                self.painter = None
        copy_paste = isinstance(self.painter, CopyPastePainter)
        if copy_paste and mixture is not None and mixture != {"carve": 1.0}:
            raise ValueError(
                "the copy-paste painter fills a donor's lesion with the donor's intensities, so it takes CarveMix's "
                f"edits only (edits={edits!r}): pass edits='carve' or leave edits out"
            )
        if mixture is None:
            mixture = {"carve": 1.0} if copy_paste else {"random": 1.0}
        #: ``{kind: probability}`` of the edit kinds (one kind: the items never draw it)
        self.edit_mixture = mixture
        self.edits: str | dict[str, float] = next(iter(mixture)) if len(mixture) == 1 else dict(mixture)
        if self.n_synthetic > 0:
            if self.n_real == 0:
                raise ValueError("real_ds is empty; SAMRAugmentedDataset needs real items to edit")
            self.layout = self._detect(real_ds[0], image_key, label_key, brain_key, scheme, sequence_map, intensity)

    # ------------------------------------------------------------------ layout
    def _detect(
        self,
        item: Any,
        image_key: str,
        label_key: Any,
        brain_key: Any,
        scheme: Any,
        sequence_map: Mapping[str, Any] | None,
        intensity: str,
    ) -> _Layout:
        sequences = self.synthesizer.sequences
        if isinstance(item, tio.Subject):
            plan = _plan_subject(
                item,
                self.synthesizer,
                label_key=label_key or "seg",
                brain_key=brain_key,
                scheme=scheme,
                sequence_map=sequence_map,
            )
            if intensity == "model":
                raise ValueError("intensity='model' is not available for tio.Subject items (always their own scale)")
            arg = None if scheme is None else scheme_to_plain(scheme)
            return _Layout(
                "subject",
                3,
                plan.label_key,
                plan.brain_key,
                None,
                dict(plan.mapping),
                scheme_to_plain(plan.scheme),
                "match",
                arg,
            )
        if isinstance(item, Mapping):
            lkey = "label" if label_key is None else label_key
            if lkey not in item:
                raise ValueError(
                    f"dict items have no label map {lkey!r} (keys: {list(item)}); pass label_key=<key of the label map>"
                )
            samraug_instance = "stats" in item and self.mask_key in item
            if scheme is None:
                if "scheme" in item and isinstance(item["scheme"], str):
                    scheme = item["scheme"]
                elif samraug_instance:
                    scheme = "samr"
                else:
                    raise ValueError(
                        "the label scheme of the items is unknown: pass scheme='brats2021' | 'brats2023' | "
                        "'brats2024' | 'samr' (or a LabelScheme)"
                    )
            label = spatial(item[lkey], None, f"label map {lkey!r}")
            ndim = label.dim()
            bkey = brain_key if brain_key is not None else ("brain" if "brain" in item else None)
            if bkey is not None and bkey not in item:
                raise ValueError(f"dict items have no brain mask {bkey!r} (keys: {list(item)})")
            keys = [k for k in item if k not in (lkey, bkey)]
            mapping = self._image_mapping(item, image_key, keys, sequence_map, sequences, ndim)
            mode = intensity if intensity != "auto" else ("model" if "stats" in item else "match")
            layout = _Layout("mapping", ndim, lkey, bkey, image_key, mapping, scheme_to_plain(scheme), mode)
        elif isinstance(item, (tuple, list)):
            if len(item) < 2:
                raise ValueError(f"tuple items must be (image, label, ...), got {len(item)} element(s)")
            if scheme is None:
                raise ValueError("pass scheme= for (image, label) items: the label scheme is not stored in them")
            label = spatial(item[1], None, "label map (tuple element 1)")
            ndim = label.dim()
            mapping = self._image_mapping(item, 0, [], sequence_map, sequences, ndim)
            mode = "match" if intensity == "auto" else intensity
            layout = _Layout("tuple", ndim, 1, None, 0, mapping, scheme_to_plain(scheme), mode)
        else:
            raise TypeError(
                f"real_ds items must be tio.Subject, dict or (image, label) tuples, got {type(item).__name__}"
            )
        layout.scheme.validate(as_tensor(label), "label map of real_ds[0]")
        if ndim == 2:
            self._z_of(item, layout)  # raises if the atlas slice of 2D items cannot be known
        elif ndim == 3:
            self._grid_painter(tuple(label.shape), item, "real_ds[0]", label_key=layout.label_key)
        return layout

    def _grid_painter(self, shape: tuple[int, ...], item: Any, what: str, label_key: Any = None) -> Any:
        """None for a 3D item on the atlas grid (or painted by another painter than whole-image SAMR, which checks
        its own grid); for an item off the grid, the whole-image painter that resamples it, if the item is declared
        in the atlas's space (``space=``) and has an affine; otherwise the error naming the way out. Local-mode
        weights have no atlas grid: any grid is fine (None)."""
        if self.synthesizer.config.get("mode", "whole") == "local":
            self._affine_of(item, label_key)  # local painting needs the item's own voxel grid
            return None
        if self.painter is not None:
            self.synthesizer.atlas.check_grid(shape, self._affine_of(item), what)
            return None
        try:
            self.synthesizer.atlas.check_grid(shape, self._affine_of(item), what)
            return None
        except ValueError:
            pass
        return self._off_grid_painter(what, has_affine=isinstance(item, Mapping) and "affine" in item)

    def _off_grid_painter(self, what: str, has_affine: bool = True) -> Any:
        synth = self.synthesizer
        check_space(self.space, weights_space(synth.config), what)
        if not has_affine:
            raise ValueError(
                f"{what} is not on the atlas grid and has no affine to resample it with; give the items an "
                "'affine' (dict items) or use tio.Subject items"
            )
        if self._space_painter is None:
            self._space_painter = SAMRPainter(synth, mode="whole", space=self.space)
        return self._space_painter

    def _image_mapping(
        self,
        item: Any,
        image_key: Any,
        keys: Sequence[Any],
        sequence_map: Mapping[str, Any] | None,
        sequences: Sequence[str],
        ndim: int,
    ) -> dict[str, Any]:
        has_stack = (isinstance(item, Mapping) and image_key in item) or isinstance(item, (tuple, list))
        n_channels = None
        if has_stack:
            stack = as_tensor(item[image_key])
            if stack.dim() != ndim + 1:
                raise ValueError(
                    f"image {image_key!r} has shape {tuple(stack.shape)}; expected channel-first (n, ...) with "
                    f"{ndim} spatial dims like the label map"
                )
            n_channels = int(stack.shape[0])
        if sequence_map is None:
            if has_stack:
                if n_channels != len(sequences):
                    raise ValueError(
                        f"the images have {n_channels} channels but the model makes {len(sequences)} sequences "
                        f"{list(sequences)}; pass sequence_map={{model_sequence: channel}}, e.g. "
                        f"{ {s: i for i, s in enumerate(sequences[: n_channels or 1])} }"
                    )
                return {s: i for i, s in enumerate(sequences)}
            return check_sequence_map(None, sequences, list(keys), "item's keys")
        ints = {s: v for s, v in sequence_map.items() if isinstance(v, (int, np.integer))}
        if ints and not has_stack:
            raise ValueError(f"sequence_map gives channels {ints} but the items have no image {image_key!r}")
        available: list[Any] = list(range(n_channels or 0)) + [k for k in keys if k != image_key]
        return check_sequence_map(sequence_map, sequences, available, "item's images/channels")

    def _affine_of(self, item: Any, label_key: Any = None) -> np.ndarray:
        if isinstance(item, Mapping) and "affine" in item:
            return np.asarray(as_tensor(item["affine"]).double().numpy())
        if self.synthesizer.config.get("mode", "whole") == "local":
            key = label_key if label_key is not None else (self.layout.label_key if self.layout else None)
            carried = affine_of(item[key]) if isinstance(item, Mapping) and key in item else None
            if carried is not None:  # e.g. a MONAI MetaTensor label map
                return carried
            raise ValueError(
                "3D items without an affine cannot be painted with local-mode weights (they have no atlas grid to "
                "assume, and the voxel spacing sets the painted region): give dict items an 'affine' (4x4) or a "
                "label MetaTensor with its affine, or use tio.Subject items; or pass whole-image weights (e.g. "
                "weights=samraug.hub.BUNDLED_WHOLE_WEIGHTS) "
                "for items on their atlas grid"
            )
        return self.synthesizer.atlas.affine  # unknown: only the shape is checked

    def _z_of(self, item: Any, layout: _Layout) -> int | None:
        """The axial atlas slice of a 2D item (None when the item carries its own atlas stack)."""
        if isinstance(item, Mapping) and self.atlas_key in item:
            return None
        z = self.z
        value: int | None = None
        if callable(z):
            value = int(z(item))
        elif isinstance(z, (int, np.integer)):
            value = int(z)
        elif isinstance(z, str) and isinstance(item, Mapping) and z in item:
            value = int(as_tensor(item[z]).reshape(-1)[0])
        if value is not None:
            depth = self.synthesizer.atlas.shape[-1]
            if not 0 <= value < depth:
                raise ValueError(
                    f"axial atlas slice z={value} is outside the atlas (0..{depth - 1}); the item's z must index the "
                    "atlas grid's last axis"
                )
            return value
        raise ValueError(
            "2D items need the axial atlas slice they come from: give the items an 'atlas' stack or a 'z' entry, "
            "or pass z=<int> (the same slice for all) or z=<function item -> int>"
        )

    # ------------------------------------------------------------------ indexing
    def __len__(self) -> int:
        return self._length

    def is_synthetic(self, index: int) -> bool:
        """Whether item ``index`` is synthetic (indices from ``len(real_ds)`` on)."""
        return self._index(index) >= self.n_real

    def _index(self, index: int) -> int:
        if isinstance(index, torch.Tensor) and index.dim() == 0 and not index.is_floating_point():
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(
                f"SAMRAugmentedDataset index must be an integer, got {index!r} ({type(index).__name__}); "
                "use int(index) if it is a whole number"
            )
        i = int(index)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"index {index} out of range for a dataset of length {self._length}")
        return i

    def generator(self, index: int) -> torch.Generator:
        """The random generator of synthetic item ``index``, seeded from ``(seed, index)``."""
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)

    def source_of(self, index: int) -> int:
        """The real item a synthetic item is made from."""
        i = self._index(index)
        if i < self.n_real:
            return i
        return int(torch.randint(self.n_real, (1,), generator=self.generator(i)).item())

    def __getitem__(self, index: int) -> Any:
        i = self._index(index)
        if i < self.n_real:
            item = self._real_item(i)
            return self.transform(item) if self.transform is not None else item
        pending = self._prepare(i, post=self.transform)
        if self.batched and (pending.painter is None or isinstance(pending.painter, SAMRPainter)):
            return pending  # a generator runs: the main process paints it (SynthesizingLoader / synthesize_pending)
        if pending.painter is not None:  # a model-free painter: here (in the worker when there are workers)
            return pending.complete(self.synthesizer)
        return pending.synthesize(self.synthesizer)

    def _real_item(self, j: int) -> Any:
        """``real_ds[j]``; inside a DataLoader worker a deep copy of it.

        PyTorch moves every tensor a worker returns into shared memory *in place*, in the queue's background thread,
        and frees the tensor's old memory: a tensor the wrapped dataset keeps (an in-memory list of items) and that
        this worker also reads for a later item (the source of a synthetic one) would be read from freed memory. A
        copy keeps what the worker returns apart from what the wrapped dataset holds: items whose contents can be
        returned are read through here (real items, the sources of plain synthetic ones); read-only uses (donor
        labels and images) and subjects, which ``_prepare_subject`` deep-copies, read ``real_ds`` directly.
        """
        item = self.real_ds[j]
        return copy.deepcopy(item) if torch.utils.data.get_worker_info() is not None else item

    def prepare(self, index: int) -> PendingSample:
        """Edit synthetic item ``index`` (no synthesis yet); its ``record`` attribute holds the edit."""
        i = self._index(index)
        if i < self.n_real:
            raise ValueError(f"item {index} is real (indices below {self.n_real}); only synthetic items are prepared")
        return self._prepare(i, post=None)

    def _prepare(self, i: int, post: Callable[[Any], Any] | None) -> PendingSample:
        assert self.layout is not None
        g = self.generator(i)
        src = int(torch.randint(self.n_real, (1,), generator=g).item())
        seed = int(torch.randint(0, 2**31, (1,), generator=g).item())
        edit_gen = torch.Generator().manual_seed(seed)
        # a subject is deep-copied by _prepare_subject; a plain item's contents may be returned as they are
        item = self.real_ds[src] if self.layout.kind == "subject" else self._real_item(src)
        scheme = self.layout.scheme
        if self.layout.kind == "subject" and self.layout.scheme_arg is None and "scheme" in item:
            scheme = get_scheme(item["scheme"])
        editor: Any = self._editor_for(scheme)
        donor: Donor | None = None
        # drawn after the source and the seed: a mixture's carving items are those of edits="carve"
        kind = draw_edit_kind(self.edit_mixture, g)
        if kind in CARVE_KINDS:  # CarveMix: another real item's lesion, as it lies (after the random edit)
            copy_paste = isinstance(self.painter, CopyPastePainter)
            if self.n_real < 2:
                who = "the copy-paste painter" if copy_paste else f"edits={kind!r}"
                raise ValueError(f"{who} needs at least 2 real items (a donor other than the source)")
            # the donor from a generator of its own: a "carve+random" item's random edit is the "random" kind's
            j = int(torch.randint(self.n_real - 1, (1,), generator=torch.Generator().manual_seed(seed)).item())
            j += j >= src
            try:  # read only: the painting makes new images
                donor_item = self.real_ds[j]
                self._check_same_grid(donor_item, item, src)
                if copy_paste:  # its intensities are pasted too
                    donor_view = self._view_of(donor_item)
                    seqs = self.synthesizer.sequences
                    images = {seqs[k]: data.float() for k, (_, _, data) in donor_view.images.items()}
                    donor = Donor(images, donor_view.label, donor_view.brain)
                    donor_label = donor_view.label
                else:  # a painter paints the lesion: only the donor's label map is read
                    donor_label = self._label_of(donor_item)
                    scheme.validate(donor_label, "label map")
            except ValueError as e:
                raise ValueError(f"real_ds[{j}] (the donor of synthetic item {i}): {e}") from None
            # a painter that paints the lesion refuses lesion voxels outside the brain: the carve leaves them out
            then = editor if kind == "carve+random" else None
            editor = CarveEdit(donor_label, j, f"donor real_ds[{j}]", within_brain=not copy_paste, then=then)
        args = {
            "synthesizer": self.synthesizer,
            "editor": editor,
            "generator": edit_gen,
            "donors": self._donors_for(src),
            "donor": donor,
            "paint_seed": seed + 1,
            "post": post,
            "record": {"source": src, "seed": seed},
            "defer": True,
        }
        try:
            if self.layout.kind == "subject":
                return self._prepare_subject(item, src, args)
            return self._prepare_plain(item, args)
        except ValueError as e:  # every item is checked when it is used: name it
            raise ValueError(f"real_ds[{src}] (the source of synthetic item {i}): {e}") from None

    def _known_affine(self, item: Any) -> np.ndarray | None:
        """The affine a 3D item carries (a ``tio.Subject``'s label image, a dict's ``"affine"``, a label
        MetaTensor's), or None (2D items, plain arrays)."""
        layout = self.layout
        assert layout is not None
        if layout.ndim != 3 or not isinstance(item, Mapping):
            return None
        if layout.kind != "subject" and "affine" in item:
            return np.asarray(as_tensor(item["affine"]).double().numpy())
        return affine_of(item[layout.label_key]) if layout.label_key in item else None

    def _check_same_grid(self, donor: Any, source: Any, src: int) -> None:
        """A carve (and copy-paste) donor lies voxel for voxel on the source: its affine must be the source's (where
        both carry one; the shapes are checked by the edit)."""
        check_donor_grid(self._known_affine(donor), self._known_affine(source), "it", f"the source real_ds[{src}]")

    def _view_of(self, item: Any) -> ItemView:
        """The item as the core reads it (label, brain, images), without editing it."""
        layout = self.layout
        assert layout is not None
        if layout.kind == "subject":
            subject = copy.deepcopy(item)  # reading loads its images: never into the real dataset's subject
            plan = _plan_subject(
                subject,
                self.synthesizer,
                label_key=layout.label_key,
                brain_key=layout.brain_key,
                scheme=layout.scheme_arg,
                sequence_map=layout.mapping,
            )
            view = read_subject(subject, self.synthesizer, plan)
            plan.scheme.validate(view.label, f"label map {plan.label_key!r}")
            return view
        view = self._read_plain(item)
        layout.scheme.validate(view.label, f"label map {layout.label_key!r}")
        if layout.ndim == 3:  # the same checks as a source item
            self._grid_painter(tuple(view.label.shape), item, "item")
        else:
            self._z_of(item, layout)
        return view

    def _donors_for(self, src: int) -> Any:
        if self.donors == "dataset":
            return _DatasetDonors(self, src) if self.n_real > 1 else None
        return self.donors

    def _editor_for(self, scheme: LabelScheme) -> Any:
        if self.editor is not None:
            return self.editor
        if scheme.name not in self._editors:
            self._editors[scheme.name] = _make_editor(scheme, self.policy)
        return self._editors[scheme.name]

    def _label_of(self, item: Any) -> np.ndarray:
        layout = self.layout
        assert layout is not None
        if layout.kind == "subject":
            return label_array(item[layout.label_key], "donor label map")
        return spatial(item[layout.label_key], layout.ndim, "donor label map").numpy()

    # ------------------------------------------------------------------ per format
    def _prepare_subject(self, item: tio.Subject, src: int, args: dict[str, Any]) -> PendingSample:
        layout = self.layout
        assert layout is not None
        subject = copy.deepcopy(item)
        plan = _plan_subject(
            subject,
            self.synthesizer,
            label_key=layout.label_key,
            brain_key=layout.brain_key,
            scheme=layout.scheme_arg,
            sequence_map=layout.mapping,
        )
        grid_painter = None
        if self.painter is None and not _on_atlas_grid(subject, self.synthesizer):
            grid_painter = self._off_grid_painter("subject")
        view = read_subject(subject, self.synthesizer, plan, check_grid=grid_painter is None)
        painter = self.painter or grid_painter  # off the atlas grid: resampled by the painter
        done = augment_view(view, item=subject, scheme=plan.scheme, painter=painter, **args)
        assert done.pending is not None
        if painter is not None and not replayable_painter(painter, self.synthesizer):  # no SAMR replay record for it
            return done.pending
        donor_key = self._donor_key
        if self.donors == "dataset":  # a lazy pool, served by this dataset (weakly tracked) for replays
            donor_key = f"dataset:{self._id}:{src}"
        synth = self.synthesizer
        carving = done.record["edit"] is not None and done.record["edit"].get("op") in CARVE_KINDS
        fixed = SAMRSynthesizeFixed(
            edit=done.record["edit"],
            seed=done.record["seed"],
            synthesize=True,
            weights=synth.key,
            scheme=scheme_to_plain(plan.scheme),
            label_key=plan.label_key,
            brain_key=plan.brain_key,
            sequence_map=plan.mapping,
            donors=donor_key,
            carve_donors=f"dataset:{self._id}:all" if carving else None,  # the real items, served while it lives
            editor=_editor_settings(args["editor"].then if isinstance(args["editor"], CarveEdit) else args["editor"]),
            device=synth.device_spec,
            dtype=synth.dtype_spec,
            # a local painter of the caller's own on these weights: its settings (the dataset's own needs none)
            painter=None if painter is None or self._own_painter else painter.local_settings(),
        )
        subject.add_transform(fixed, fixed._get_reproducing_arguments())
        return done.pending

    def _read_plain(self, item: Any) -> ItemView:
        layout = self.layout
        assert layout is not None and layout.mapping is not None
        return plain_view(
            item,
            label_key=layout.label_key,
            image_key=layout.image_key,
            mapping=layout.mapping,
            sequences=self.synthesizer.sequences,
            brain_key=layout.brain_key,
            ndim=layout.ndim,
            affine=self._affine_of(item) if layout.ndim == 3 else None,
            mask_key=None if layout.kind == "tuple" else self.mask_key,
        )

    def _prepare_plain(self, item: Any, args: dict[str, Any]) -> PendingSample:
        layout = self.layout
        assert layout is not None
        view = self._read_plain(item)
        z = atlas = None
        grid_painter = None
        if layout.ndim == 3:
            grid_painter = self._grid_painter(view.label.shape, item, "item")
        else:
            z = self._z_of(item, layout)
            if z is None:
                atlas = as_tensor(item[self.atlas_key]).float()
        done = augment_view(
            view,
            item=output_item(item, view),
            as_tuple=layout.kind == "tuple",
            scheme=layout.scheme,
            painter=self.painter or grid_painter,
            intensity=layout.intensity,
            z=z,
            atlas=atlas,
            **args,
        )
        assert done.pending is not None
        return done.pending

    def donor_pool(self, suffix: str) -> Sequence[Any] | None:
        """The lazy donor pool of real item ``int(suffix)`` (the other items' label maps), or for ``"all"`` every
        real item's label map (the donors of carve records, indexed as ``real_ds``), for replays."""
        if suffix == "all":
            return _DatasetDonors(self, None)
        return self._donors_for(int(suffix))

    def __setstate__(self, state: dict[str, Any]) -> None:  # a copy in another process serves its own replays
        self.__dict__.update(state)
        track(f"dataset:{self._id}", self)

    def dry_iter(self) -> list[Any]:
        """The items without synthesis (each synthetic index gives its real source item), for ``tio.Queue``, which
        reads them only to count patches per subject.

        Example:
            >>> queue = tio.Queue(mixed, max_length=16, samples_per_volume=4, sampler=sampler)  # doctest: +SKIP
        """
        if self.batched:
            raise TypeError(
                "a plain tio.Queue cannot finish the pending samples of SAMRAugmentedDataset(..., batched=True); "
                "use samraug.dataset.SynthesizingQueue(mixed, ...) (same arguments as tio.Queue), which runs the "
                "generator in the main process, or batched=False"
            )
        return [self.real_ds[self.source_of(i)] for i in range(len(self))]

    def describe(self, index: int) -> dict[str, Any]:
        """Plain-value description of item ``index``: real or synthetic, its source item, seed and edit record.

        The record is the edit drawn for the item, made without painting it: a local painter that cannot paint it
        (its region at the image edge) returns the item real, label map included (``"skipped"`` in the painter's
        record of :func:`samraug.augment.augment_view`).
        """
        i = self._index(index)
        if i < self.n_real:
            return {"synthetic": False, "source": i}
        return {"synthetic": True, **_plain(self.prepare(i).record)}
