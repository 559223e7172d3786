"""The augmentation core: the edit adapters, pending samples and writing results back in the item's own format and
types (a MONAI ``MetaTensor`` stays one), shared by every front-end (TorchIO transforms, the dataset, the MONAI
transform), the painters and :func:`samraug.augment.pipeline.augment_view`. Items are read by
:mod:`samraug.augment.views`.

Example:
    >>> _plain({"a": (1, np.int64(2))})
    {'a': [1, 2]}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchio as tio

from samraug.augment.donors import DonorPool, donors_key, label_array
from samraug.augment.views import ItemView, as_tensor, check_lesion_in_brain
from samraug.editing import LesionEditor
from samraug.hub import scheme_from_config, scheme_to_config
from samraug.intensity import BACKGROUND_VALUE, IntensityStats, Normalization, denormalize
from samraug.labels import LabelScheme, get_scheme, neighbour_slices, one_hot

if TYPE_CHECKING:
    from samraug.synthesis import Synthesizer

__all__ = ["PendingSample", "check_lesion_in_brain", "register_donors", "scheme_from_plain", "scheme_to_plain"]


# ---------------------------------------------------------------------------------------------- plain values
def scheme_to_plain(scheme: str | LabelScheme) -> str | dict[str, Any]:
    """A label scheme as a plain value (its name for the built-in schemes, a JSON-able dict otherwise)."""
    return scheme_to_config(scheme)


def scheme_from_plain(value: str | Mapping[str, Any] | LabelScheme) -> LabelScheme:
    """The inverse of :func:`scheme_to_plain`."""
    if isinstance(value, (str, LabelScheme)):
        return get_scheme(value)
    return scheme_from_config(value)


def _plain(value: Any) -> Any:
    """Recursively turn tuples/numpy scalars/arrays/tensors into lists and Python numbers (JSON-able)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------- donors
def register_donors(donors: Sequence[Any] | None) -> str | None:
    """The plain key of a donor pool (a digest of its label maps; the same in every process), or None.

    Nothing is stored: pools are owned by the transform or dataset that uses them (:class:`DonorPool`).

    Example:
        >>> key = register_donors([np.zeros((4, 4, 4), np.uint8)])
        >>> key.startswith("donors:")
        True
    """
    if donors is None:
        return None
    arrays = [label_array(d, f"donor #{i}") for i, d in enumerate(donors)]
    return donors_key(arrays) if arrays else None


def _pool(donors: Any) -> DonorPool | None:
    if donors is None or isinstance(donors, DonorPool):
        return donors
    return DonorPool(donors) if len(donors) else None


# ---------------------------------------------------------------------------------------------- editing adapters
_EDITOR_SETTINGS = ("min_fragment", "max_retries", "max_clip")


def _make_editor(scheme: LabelScheme, policy: Any | None = None, settings: Mapping[str, Any] | None = None) -> Any:
    return LesionEditor(scheme, policy=policy, **dict(settings or {}))


def _editor_settings(editor: Any) -> dict[str, Any]:
    """The editor's replay-relevant settings as plain values."""
    return {k: getattr(editor, k) for k in _EDITOR_SETTINGS if hasattr(editor, k)}


def _edit(
    editor: Any, label: np.ndarray, brain: np.ndarray, generator: torch.Generator, donors: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    res = editor.random_edit(label, brain, donors=donors, generator=generator)
    return np.asarray(res.label), _plain(res.record)


# ---------------------------------------------------------------------------------------------- core
@dataclass
class _Target:
    """Where one model sequence goes in the output item, and how to scale it."""

    seq: int  # index into the model's sequences
    key: Any  # subject/dict key, or tuple position
    channel: int | None  # channel of a stacked image; None: the image is this sequence alone
    low: float | None = None  # subject-scale stats (None: model range)
    high: float | None = None
    background: float = 0.0


@dataclass(frozen=True)
class PendingSample:
    """A sample whose label map is edited but whose images are not painted yet.

    DataLoader workers return these (``SAMRAugmentedDataset(..., batched=True)``); the main process synthesizes
    ``masks`` for many samples in one generator call and calls :meth:`finish` with the images. Everything is set at
    construction (:func:`samraug.augment.pipeline.augment_view` makes them); only the item's contents change when
    it is finished.

    Attributes:
        item: The output item (``tio.Subject``, dict or list for a tuple) with the edited label already in place.
        masks: ``(k, H, W)`` uint8 SAMR class maps of the slices to synthesize.
        z: ``(k,)`` axial atlas indices of those slices (stacks built where the generator runs), or None.
        atlas: ``(k, 3n, H, W)`` explicit atlas stacks (2D items that carry theirs), or None.
        brain: Boolean brain mask, ``(X, Y, Z)`` for volumes or ``(H, W)`` for slices.
        positions: ``(k,)`` axial positions of the slices in the volume (volumes only).
        targets: Where each synthesized sequence goes and its intensity scale.
        as_tuple: Turn ``item`` back into a tuple when finished.
        record: Plain-value description of how the sample was made (source item, seed, edit record).
        post: Applied to the finished item (the dataset's ``transform=``).
        view: The item as read before the edit (label, brain, images).
        edited: The edited label map (the item's scheme).
        scheme: The item's label scheme.
        painter: A painter of :mod:`samraug.augment.painters` that finishes this sample instead of the batched
            generator path (:meth:`complete`), or None.
        donor: The copy-paste painter's donor.
        paint_seed: Seed of the painter's generator.
        label_at: The item key the edited label map was written to (None: none was written).
        mask_before: The item's one-hot mask before the edit rewrote it (``view.mask_key``), or None.
    """

    item: Any
    masks: torch.Tensor
    z: torch.Tensor | None
    atlas: torch.Tensor | None
    brain: torch.Tensor
    positions: torch.Tensor | None
    targets: list[_Target] = field(default_factory=list)
    as_tuple: bool = False
    record: dict[str, Any] | None = None
    post: Callable[[Any], Any] | None = None
    view: ItemView | None = None
    edited: np.ndarray | None = None
    scheme: LabelScheme | None = None
    painter: Any = None
    donor: Any = None
    paint_seed: int | None = None
    label_at: Any = None
    mask_before: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a DataLoader worker returning it): the view's numpy arrays become copies first.

        They may view the memory of tensors this sample also holds (the item's affine, label). PyTorch pickles a
        tensor by moving it into shared memory in place and freeing its old memory, so a view pickled after its
        tensor would be read from freed memory.
        """
        state = dict(self.__dict__)
        view = self.view
        if view is not None:
            copied = {
                k: None if a is None else np.array(a, copy=True)
                for k, a in (("label", view.label), ("brain", view.brain), ("affine", view.affine))
            }
            state["view"] = replace(view, **copied)
        if self.edited is not None:
            state["edited"] = np.array(self.edited, copy=True)
        if isinstance(self.mask_before, np.ndarray):
            state["mask_before"] = np.array(self.mask_before, copy=True)
        return state

    def paint(
        self, painter: Any, sequences: Sequence[str], *, generator: torch.Generator | None = None, donor: Any = None
    ) -> Any:
        """Finish this sample with a painter of :mod:`samraug.augment.painters` instead of the batched generator
        path (``sequences``: the model's sequence names, which index the view's images)."""
        return self.painted(painter, sequences, generator=generator, donor=donor)[0]

    def painted(
        self, painter: Any, sequences: Sequence[str], *, generator: torch.Generator | None = None, donor: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        """:meth:`paint`, also returning the painter's plain-value record."""
        view = self.view
        if view is None or self.edited is None or self.scheme is None:
            raise ValueError("this pending sample was not made by the core (no view): it cannot be painted")
        names = {seq: sequences[seq] for seq in view.images}
        images = {names[seq]: data.float() for seq, (_, _, data) in view.images.items()}
        affine = view.affine if view.affine is not None else np.eye(4)
        out, record = painter.paint(
            images, view.label, self.edited, view.brain, affine, self.scheme, generator=generator, donor=donor
        )
        if record.get("skipped"):  # nothing painted: the item stays real, its label map too (else a silent mislabel)
            self._restore_label()
            return self._done(), _plain({**record, "label": "unedited"})
        for seq, (key, channel, _) in view.images.items():
            _write(self.item, key, channel, out[names[seq]].float())
        return self._done(), _plain(record)

    def _restore_label(self) -> None:
        """Put the item's own label map (and one-hot mask) back where the edit wrote the edited one."""
        view = self.view
        assert view is not None
        if self.label_at is not None:
            _set_label(self.item, self.label_at, view.label, self.item[self.label_at])
        if view.mask_key is not None and self.mask_before is not None:
            self.item[view.mask_key] = self.mask_before

    def complete(self, synthesizer: Synthesizer) -> Any:
        """Finish this sample alone: with its :attr:`painter` when it has one, else by ``synthesizer``."""
        return self.completed(synthesizer)[0]

    def completed(self, synthesizer: Synthesizer) -> tuple[Any, dict[str, Any] | None]:
        """:meth:`complete`, also returning the painter's record (None for the generator path)."""
        if self.painter is None:
            return self.synthesize(synthesizer), None
        generator = None if self.paint_seed is None else torch.Generator().manual_seed(int(self.paint_seed))
        return self.painted(self.painter, synthesizer.sequences, generator=generator, donor=self.donor)

    @property
    def is_volume(self) -> bool:
        return self.positions is not None

    def neighbours(self, mask_slices: int) -> torch.Tensor | None:
        """Class maps ``(k, 2c, H, W)`` of the slices adjacent to each slice of :attr:`masks` (``z - c .. z - 1,
        z + 1 .. z + c``), for weights that see ``mask_slices = 2c + 1`` mask slices; None for single-slice weights.

        Volumes: slices without brain are background (they are not among :attr:`masks`) and the edge slice repeats
        beyond the volume. A 2D item is a lone slice: its neighbours are taken equal to it.
        """
        c = int(mask_slices) // 2
        if c == 0:
            return None
        if not self.is_volume:
            return self.masks[:, None].repeat(1, 2 * c, 1, 1)
        k, depth = int(self.masks.shape[0]), int(self.brain.shape[-1])
        where = torch.full((depth,), k, dtype=torch.long)
        where[self.positions] = torch.arange(k)
        idx = neighbour_slices(self.positions, 2 * c + 1, depth)
        idx = torch.cat([idx[:, :c], idx[:, c + 1 :]], dim=1)
        padded = torch.cat([self.masks, torch.zeros_like(self.masks[:1])])
        return padded[where[idx]]

    def synthesize(self, synthesizer: Synthesizer) -> Any:
        """Synthesize this sample alone and return the finished item."""
        if self.masks.shape[0] == 0:
            return self.finish(torch.zeros(0, len(synthesizer.sequences), *self.masks.shape[1:]))
        nb = self.neighbours(synthesizer.mask_slices)
        images = synthesizer.synthesize_slices(self.masks, self.atlas, z=self.z, neighbours=nb)
        return self.finish(images)

    def finish(self, images: torch.Tensor) -> Any:
        """Write ``images`` (``(k, n, H, W)``, model range, one per slice of :attr:`masks`) into the item."""
        k = int(self.masks.shape[0])
        if images.shape[0] != k:
            raise ValueError(f"finish() got {images.shape[0]} synthesized slices for {k} masks")
        brain = self.brain
        for t in self.targets:
            if self.is_volume:
                v = torch.full(tuple(brain.shape), BACKGROUND_VALUE, dtype=torch.float32)
                if k:
                    v[..., self.positions] = images[:, t.seq].permute(1, 2, 0)
            else:
                v = images[0, t.seq].float()
            if t.low is not None and t.high is not None:
                v = denormalize(v, IntensityStats(t.low, t.high), brain, background=t.background)
            else:
                v = torch.where(brain, v, torch.full_like(v, t.background))
            _write(self.item, t.key, t.channel, v)
        return self._done()

    def _done(self) -> Any:
        out = tuple(self.item) if self.as_tuple else self.item
        return self.post(out) if self.post is not None else out


def _write(item: Any, key: Any, channel: int | None, v: torch.Tensor) -> None:
    ref = item[key]
    if isinstance(ref, tio.Image):
        data = ref.data
        if channel is None:
            new = v.reshape(data.shape).to(_float_dtype(data.dtype))
        else:
            new = data if data.is_floating_point() else data.float()
            new[channel] = v
        ref.set_data(new)
        return
    is_np = isinstance(ref, np.ndarray)
    t = torch.from_numpy(ref) if is_np else ref
    if channel is None:
        new = _like(t, v.reshape(t.shape).to(_float_dtype(t.dtype)))
    else:
        new = t  # already a float copy (made when the pending sample was prepared)
        new[channel] = v.to(new.dtype)
    item[key] = new.numpy() if is_np else new


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) else torch.float32


def _stats_for(
    image: torch.Tensor, brain: np.ndarray, lesion: np.ndarray, spec: Normalization, what: str
) -> IntensityStats:
    try:
        return spec.stats(image.float(), torch.from_numpy(brain), torch.from_numpy(lesion))
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def _background_of(image: torch.Tensor, brain: np.ndarray) -> float:
    """The real image's value outside the brain (its median there; 0 when the brain fills the image)."""
    outside = image[~torch.from_numpy(brain)]
    if outside.numel() == 0:
        return 0.0
    return float(outside.float().median())


def _make_pending(
    item: Any,
    view: ItemView,
    edited: np.ndarray,
    scheme: LabelScheme,
    *,
    intensity: str,
    z: Any = None,
    atlas_stack: torch.Tensor | None = None,
    as_tuple: bool = False,
    synth: Synthesizer | None = None,
    **fields: Any,
) -> PendingSample:
    """A :class:`PendingSample` for an item whose label map was edited to ``edited`` (user scheme); ``fields``: its
    other constructor fields (``record``, ``post``, ``painter``, ``donor``, ``paint_seed``)."""
    brain = view.brain | (edited != 0) | (view.label != 0)
    if synth is not None:  # the weights' classes: n_labels, conditioning and label scheme of the model
        samr = np.asarray(synth.encode(edited, brain, scheme)).astype(np.uint8)
    else:
        samr = scheme.to_samr(edited, brain).astype(np.uint8)
    brain_t = torch.from_numpy(brain)
    # the weights' normalisation (legacy whole-brain percentiles without weights); the real lesion is left out
    spec = synth.normalization if synth is not None else Normalization.legacy()
    real_lesion = np.isin(view.label, scheme.lesion_values) if intensity == "match" else None
    targets = []
    for seq, (key, channel, image) in view.images.items():
        if intensity == "match":
            what = f"image {key!r}" + (f" channel {channel}" if channel else "")
            stats = _stats_for(image, view.brain, real_lesion, spec, what)
            bg = _background_of(image, view.brain)
            targets.append(_Target(seq, key, channel, stats.low, stats.high, bg))
        elif intensity == "model":
            targets.append(_Target(seq, key, channel, None, None, BACKGROUND_VALUE))
        else:
            raise ValueError(f"intensity must be 'match' or 'model', got {intensity!r}")
    if samr.ndim == 3:
        zs = torch.nonzero(brain_t.flatten(0, 1).any(0)).flatten()
        masks = torch.from_numpy(np.ascontiguousarray(np.moveaxis(samr[..., zs.numpy()], -1, 0)))
        return PendingSample(
            item,
            masks,
            zs.clone(),
            None,
            brain_t,
            zs,
            targets,
            as_tuple,
            view=view,
            edited=edited,
            scheme=scheme,
            **fields,
        )
    masks = torch.from_numpy(samr)[None]
    zt = None if z is None else torch.as_tensor([int(z)], dtype=torch.long)
    atlas = None if atlas_stack is None else torch.as_tensor(atlas_stack, dtype=torch.float32)[None]
    return PendingSample(
        item, masks, zt, atlas, brain_t, None, targets, as_tuple, view=view, edited=edited, scheme=scheme, **fields
    )


def _set_label(item: Any, key: Any, edited: np.ndarray, ref: Any) -> None:
    """Put the edited label map in ``item[key]`` with the layout and dtype of ``ref``."""
    if isinstance(ref, tio.Image):
        data = ref.data
        ref.set_data(torch.from_numpy(edited.astype(np.int64)).reshape(data.shape).to(data.dtype))
        return
    if isinstance(ref, np.ndarray):
        item[key] = edited.reshape(ref.shape).astype(ref.dtype)
        return
    t = torch.as_tensor(ref)
    item[key] = _like(t, torch.from_numpy(edited.astype(np.int64)).reshape(t.shape).to(t.dtype))


def _like(ref: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` in the tensor type of ``ref``: a tensor subclass (MONAI ``MetaTensor``) keeps its meta data and
    affine; a plain tensor is returned as is."""
    if type(ref) is torch.Tensor:
        return values
    out = ref.detach().clone().to(values.dtype)
    out.copy_(values)
    return out


def _set_mask(
    item: Any, key: Any, edited: np.ndarray, brain: np.ndarray, scheme: LabelScheme, synth: Synthesizer
) -> None:
    """Rewrite the one-hot SAMR mask ``item[key]`` (samraug's 2D instances carry one) for the edited label map;
    left as is when it is not ``(n_labels, *spatial)``."""
    ref = as_tensor(item[key])
    n_labels = synth.n_labels
    if ref.dim() != edited.ndim + 1 or ref.shape[0] != n_labels:
        return
    samr = torch.from_numpy(np.asarray(synth.encode(edited, brain | (edited != 0), scheme)))
    new = one_hot(samr, n_labels, channel_dim=0).to(ref.dtype if ref.is_floating_point() else torch.float32)
    item[key] = new.numpy() if isinstance(item[key], np.ndarray) else new
