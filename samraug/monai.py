"""MONAI dictionary transform: :class:`SAMRSynthesized` (install with ``pip install samraug[monai]``).

With probability ``ratio`` it edits the item's lesion label map and replaces the images named by ``keys`` with SAMR
synthesis in the item's own intensity scale, like :class:`~samraug.transforms.SAMRSynthesize` does for TorchIO.
Every output keeps its type: a ``MetaTensor`` stays a ``MetaTensor`` with its meta data and affine (images and
label), so MONAI's ``list_data_collate`` batches real and synthetic items together. It is ``Randomizable``:
``CacheDataset`` caches the transforms before it and never its output. Spatial transforms that change the grid
(``Spacingd``, ``Orientationd``, crops) and label conversions belong after it: the generator paints on the atlas
grid of the weights.

Images: one key per sequence (``(1, X, Y, Z)`` each; ``sequence_map={model_sequence: key}``, default: the keys
named like the model's sequences) or a single key holding all sequences stacked ``(n, X, Y, Z)`` in the model's
order (or ``sequence_map={model_sequence: channel}``).

Example:
    >>> from monai.transforms import Compose, ConvertToMultiChannelBasedOnBratsClassesd
    >>> from samraug.monai import SAMRSynthesized
    >>> pipeline = Compose([
    ...     SAMRSynthesized(keys="image", label_key="label", ratio=0.5, scheme="brats2021"),
    ...     ConvertToMultiChannelBasedOnBratsClassesd(keys="label"),
    ... ])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

try:
    from monai.config import KeysCollection
    from monai.transforms import MapTransform, Randomizable
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("samraug.monai needs MONAI: pip install 'samraug[monai]'") from e

from samraug.augment.donors import DonorPool
from samraug.labels import LabelScheme
from samraug.subjects import AFFINE_ATOL, affines_match, format_affine
from samraug.synthesis import Synthesizer, get_synthesizer
from samraug.transforms import (
    _check_sequence_map,
    _edit,
    _make_editor,
    _make_pending,
    _set_label,
    _View,
    check_lesion_in_brain,
    scheme_from_plain,
)

__all__ = ["SAMRSynthesized"]


def _spatial(x: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"{what} has shape {tuple(t.shape)}; expected (1, X, Y, Z) channel-first or (X, Y, Z)")
    return t


def _affine(x: Any) -> np.ndarray | None:
    aff = getattr(x, "affine", None)
    if aff is None:
        return None
    return np.asarray(torch.as_tensor(aff).detach().cpu().double().numpy())


class SAMRSynthesized(Randomizable, MapTransform):
    """With probability ``ratio``, edit ``label_key`` and replace the images under ``keys`` by SAMR synthesis.

    Args:
        keys: The image keys (one per sequence, or one stacked key).
        label_key: The lesion label map (``(1, X, Y, Z)``, in ``scheme``).
        ratio: Probability that an item is made synthetic.
        weights: None (bundled demo weights), a weights folder, ``"org/name[@revision]"`` or a
            :class:`~samraug.synthesis.Synthesizer` (cloned: never shared).
        scheme: Label scheme of the items (``"brats2021"``, ``"brats2023"``, ``"brats2024"``, ``"samr"``, ...).
        sequence_map: ``{model_sequence: key}`` (per-sequence keys) or ``{model_sequence: channel}`` (stacked).
        brain_key: Key of a brain mask (default: the voxels non-zero in any image).
        policy, editor: The :class:`~samraug.editing.EditPolicy` of a default editor, or an editor.
        donors: Label maps a swap may paste a lesion from (None: no swap).
        device, dtype: Where the generator runs.
        allow_missing_keys: As for every MONAI ``MapTransform``.

    The last sample's plain-value record (seed and edit) is in :attr:`last_record` (None when it stayed real).

    Example:
        >>> t = SAMRSynthesized(keys="image", label_key="label", ratio=1.0, scheme="brats2021")  # doctest: +SKIP
        >>> t.set_random_state(seed=0); out = t(item)  # doctest: +SKIP
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: Hashable = "label",
        ratio: float = 0.5,
        *,
        weights: str | Synthesizer | None = None,
        scheme: str | LabelScheme = "brats2021",
        sequence_map: Mapping[str, Any] | None = None,
        brain_key: Hashable | None = None,
        policy: Any = None,
        editor: Any = None,
        donors: Sequence[Any] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must be a probability in [0, 1], got {ratio!r}")
        if editor is not None and policy is not None:
            raise ValueError("pass either editor= or policy= (the policy of a default editor), not both")
        self.label_key = label_key
        self.ratio = float(ratio)
        self.scheme = scheme_from_plain(scheme)
        self.sequence_map = None if sequence_map is None else dict(sequence_map)
        self.brain_key = brain_key
        self.editor = editor if editor is not None else _make_editor(self.scheme, policy)
        self.donors = None if donors is None else DonorPool(donors)
        if isinstance(weights, Synthesizer):
            self.synthesizer = weights.clone()
        else:
            self.synthesizer = get_synthesizer(weights, device=device, dtype=dtype)
        self._apply = False
        self._seed = 0
        self.last_record: dict[str, Any] | None = None

    def randomize(self, data: Any = None) -> None:
        self._apply = bool(self.R.random_sample() < self.ratio)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def _images(self, d: Mapping[Hashable, Any]) -> dict[int, tuple[Any, int | None, torch.Tensor]]:
        sequences = self.synthesizer.sequences
        keys = [k for k in self.key_iterator(d)]
        if not keys:
            raise ValueError(f"none of the image keys {list(self.keys)} is in the item (keys: {list(d)})")
        images: dict[int, tuple[Any, int | None, torch.Tensor]] = {}
        first = torch.as_tensor(d[keys[0]])
        if len(keys) == 1 and first.dim() == 4 and first.shape[0] > 1:  # one stacked key
            n = int(first.shape[0])
            mapping = self.sequence_map if self.sequence_map is not None else {s: i for i, s in enumerate(sequences)}
            if self.sequence_map is None and n != len(sequences):
                raise ValueError(
                    f"image {keys[0]!r} has {n} channels but the model makes {len(sequences)} sequences "
                    f"{list(sequences)}; pass sequence_map={{model_sequence: channel}}"
                )
            mapping = _check_sequence_map(mapping, sequences, list(range(n)), f"channels of {keys[0]!r}")
            for seq, ch in mapping.items():
                images[sequences.index(seq)] = (keys[0], int(ch), first[int(ch)])
            return images
        mapping = _check_sequence_map(self.sequence_map, sequences, keys, "image keys")
        for seq, key in mapping.items():
            images[sequences.index(seq)] = (key, None, _spatial(d[key], f"image {key!r}"))
        return images

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        self.last_record = None
        if not self._apply:
            return d
        if self.label_key not in d:
            raise ValueError(f"the item has no label map {self.label_key!r} (keys: {list(d)}); pass label_key=")
        label_ref = d[self.label_key]
        label = _spatial(label_ref, f"label map {self.label_key!r}").numpy()
        self.scheme.validate(label, f"label map {self.label_key!r}")
        images = self._images(d)
        label_affine = _affine(label_ref)
        for key, _, data_ in images.values():
            if tuple(data_.shape) != tuple(label.shape):
                raise ValueError(f"image {key!r} has shape {tuple(data_.shape)} but the label map {label.shape}")
            aff = _affine(d[key])
            if aff is not None and label_affine is not None and not affines_match(aff, label_affine):
                raise ValueError(
                    f"image {key!r} has affine {format_affine(aff)} but the label map {self.label_key!r} has "
                    f"{format_affine(label_affine)} (tolerance {AFFINE_ATOL}); resample it onto the label's grid"
                )
        if self.brain_key is not None:
            brain = _spatial(d[self.brain_key], f"brain mask {self.brain_key!r}").numpy() != 0
        else:
            brain = np.zeros(label.shape, dtype=bool)
            for _, _, data_ in images.values():
                brain |= data_.numpy() != 0
        check_lesion_in_brain(label, brain, f"label map {self.label_key!r}")
        brain = brain | (label != 0)
        synth = self.synthesizer
        synth.atlas.check_grid(label.shape, label_affine if label_affine is not None else synth.atlas.affine, "item")
        generator = torch.Generator().manual_seed(self._seed)
        edited, record = _edit(self.editor, label, brain, generator, self.donors)
        out = dict(d)
        for key in {k for k, ch, _ in images.values() if ch is not None}:
            src = d[key]
            if isinstance(src, np.ndarray):
                out[key] = src.astype(src.dtype if np.issubdtype(src.dtype, np.floating) else np.float32, copy=True)
            else:  # a MetaTensor stays one (clone/float keep its meta data)
                out[key] = src.clone() if src.is_floating_point() else src.float()
        _set_label(out, self.label_key, edited, label_ref)
        view = _View(label, brain, images)
        pending = _make_pending(out, view, edited, self.scheme, intensity="match", synth=synth)
        result = pending.synthesize(synth)
        self.last_record = {"seed": self._seed, "edit": record}
        return result
