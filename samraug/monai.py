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

import torch

try:
    from monai.config import KeysCollection
    from monai.transforms import MapTransform, Randomizable
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("samraug.monai needs MONAI: pip install 'samraug[monai]'") from e

from samraug.augment.core import _make_editor, scheme_from_plain
from samraug.augment.donors import DonorPool
from samraug.augment.edits import draw_edit_kind, pool_edit, transform_edits
from samraug.augment.pipeline import augment_view
from samraug.augment.views import affine_of, check_sequence_map, output_item, plain_view
from samraug.labels import LabelScheme
from samraug.synthesis import Synthesizer, get_synthesizer

__all__ = ["SAMRSynthesized"]


class SAMRSynthesized(Randomizable, MapTransform):
    """With probability ``ratio``, edit ``label_key`` and replace the images under ``keys`` by SAMR synthesis.

    Args:
        keys: The image keys (one per sequence, or one stacked key).
        label_key: The lesion label map (``(1, X, Y, Z)``, in ``scheme``).
        ratio: Probability that an item is made synthetic.
        weights: None (the bundled demo weights, local mode), a weights folder, ``"org/name[@revision]"`` or a
            :class:`~samraug.synthesis.Synthesizer` (cloned: never shared).
        scheme: Label scheme of the items (``"brats2021"``, ``"brats2023"``, ``"brats2024"``, ``"samr"``, ...).
        sequence_map: ``{model_sequence: key}`` (per-sequence keys) or ``{model_sequence: channel}`` (stacked).
        brain_key: Key of a brain mask (default: the voxels non-zero in any image).
        policy, editor: The :class:`~samraug.editing.EditPolicy` of a default editor, or an editor.
        donors: Label maps a swap may paste a lesion from (None: no swap), and the carve edits' donors.
        edits: How the label map is edited: None or ``"random"``, ``"carve"``, ``"carve+random"`` or a mapping of
            kinds to weights drawn per item (see :class:`~samraug.transforms.SAMRSynthesize`; the carve kinds need
            ``donors`` on the items' grid, co-registered with them).
        device, dtype: Where the generator runs.
        allow_missing_keys: As for every MONAI ``MapTransform``.

    The last sample's plain-value record (seed and edit; with local-mode weights also ``"paint"``, the painter's
    record, whose ``"skipped"`` says why a sample was left real, label map included) is in :attr:`last_record` (None
    when it stayed real by the ratio's draw).

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
        edits: str | Mapping[str, float] | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must be a probability in [0, 1], got {ratio!r}")
        if editor is not None and policy is not None:
            raise ValueError("pass either editor= or policy= (the policy of a default editor), not both")
        #: ``{kind: probability}`` of the edit kinds (:mod:`samraug.augment.edits`)
        self.edit_mixture = transform_edits(edits, donors, editor is not None or policy is not None)
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
        self._kind = next(iter(self.edit_mixture))
        self.last_record: dict[str, Any] | None = None

    def randomize(self, data: Any = None) -> None:
        self._apply = bool(self.R.random_sample() < self.ratio)
        self._seed = int(self.R.randint(0, 2**31 - 1))
        self._kind = draw_edit_kind(self.edit_mixture, self.R)  # a single kind draws nothing

    def _mapping(self, d: Mapping[Hashable, Any]) -> tuple[Hashable | None, dict[str, Any]]:
        """(the stacked image key or None, ``{model sequence: channel of it, or image key}``) of this item."""
        sequences = self.synthesizer.sequences
        keys = [k for k in self.key_iterator(d)]
        if not keys:
            raise ValueError(f"none of the image keys {list(self.keys)} is in the item (keys: {list(d)})")
        first = torch.as_tensor(d[keys[0]])
        if len(keys) == 1 and first.dim() == 4 and first.shape[0] > 1:  # one stacked key
            n = int(first.shape[0])
            mapping = self.sequence_map if self.sequence_map is not None else {s: i for i, s in enumerate(sequences)}
            if self.sequence_map is None and n != len(sequences):
                raise ValueError(
                    f"image {keys[0]!r} has {n} channels but the model makes {len(sequences)} sequences "
                    f"{list(sequences)}; pass sequence_map={{model_sequence: channel}}"
                )
            mapping = check_sequence_map(mapping, sequences, list(range(n)), f"channels of {keys[0]!r}")
            return keys[0], {seq: int(ch) for seq, ch in mapping.items()}
        return None, check_sequence_map(self.sequence_map, sequences, keys, "image keys")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        self.last_record = None
        if not self._apply:
            return d
        if self.label_key not in d:
            raise ValueError(f"the item has no label map {self.label_key!r} (keys: {list(d)}); pass label_key=")
        synth = self.synthesizer
        image_key, mapping = self._mapping(d)
        label_affine = affine_of(d[self.label_key])
        view = plain_view(
            d,
            label_key=self.label_key,
            image_key=image_key,
            mapping=mapping,
            sequences=synth.sequences,
            brain_key=self.brain_key,
            ndim=3,
            affine=label_affine,
        )
        if synth.config.get("mode", "whole") == "local" and label_affine is None:
            raise ValueError(
                f"item {self.label_key!r} has no affine, which local-mode weights need (the voxel spacing sets the "
                "painted region): load it as a MetaTensor with its affine (LoadImaged), or pass whole-image weights"
            )
        if synth.config.get("mode", "whole") == "whole":  # local-mode weights have no atlas: any grid
            grid_affine = label_affine if label_affine is not None else synth.atlas.affine  # unknown: the shape only
            synth.atlas.check_grid(view.label.shape, grid_affine, "item")
        done = augment_view(
            view,
            item=output_item(d, view),
            scheme=self.scheme,
            synthesizer=synth,
            editor=pool_edit(self._kind, self.editor, self.donors, self._seed, affine=label_affine),
            generator=torch.Generator().manual_seed(self._seed),
            donors=self.donors,
            paint_seed=self._seed + 1,
        )
        self.last_record = {"seed": self._seed, "edit": done.record["edit"]}
        if "paint" in done.record:  # local painting's record (``"skipped"``: the item was left real, label included)
            self.last_record["paint"] = done.record["paint"]
        return done.item
