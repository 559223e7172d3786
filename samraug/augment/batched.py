"""The batched generator path: DataLoader workers edit masks and return pending samples, the main process runs
the generator once per batch (:class:`SynthesizingLoader`, :class:`SynthesizingQueue` for TorchIO patch training).

The generator never runs inside DataLoader workers on a GPU (each worker would create its own CUDA context). With
``SAMRAugmentedDataset(..., batched=True)`` the workers return :class:`~samraug.augment.core.PendingSample`\\ s;
:func:`synthesize_pending` finishes them together, and :class:`PendingCollate` leaves batches holding them for the
loader. Importable from :mod:`samraug.dataset` as well.

Example:
    >>> PendingCollate()([torch.zeros(2), torch.ones(2)]).shape  # nothing pending: collated at once
    torch.Size([2, 2])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torchio as tio
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from samraug.augment.core import PendingSample
from samraug.synthesis import Synthesizer

if TYPE_CHECKING:
    from samraug.dataset import SAMRAugmentedDataset

__all__ = [
    "PendingBatch",
    "PendingCollate",
    "SynthesizingLoader",
    "SynthesizingQueue",
    "synthesize_pending",
]


def _is_augmented_dataset(ds: Any) -> bool:
    """Whether ``ds`` serves pending samples like a ``SAMRAugmentedDataset`` (read, not imported: the dataset
    module re-exports this one)."""
    return all(hasattr(ds, a) for a in ("synthesizer", "real_ds", "source_of", "batched", "prepare"))


@dataclass
class PendingBatch:
    """What :class:`PendingCollate` returns for a batch with pending samples: the items, not yet collated."""

    items: list[Any]
    collate_fn: Callable[[list[Any]], Any] | None
    single: bool = False


class PendingCollate:
    """A DataLoader ``collate_fn`` that leaves batches with pending samples for :class:`SynthesizingLoader`.

    Batches without pending samples are collated by ``collate_fn`` (default: torch's ``default_collate``) at once.
    """

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        self.collate_fn = collate_fn

    def __call__(self, batch: Any) -> Any:
        fn = self.collate_fn if self.collate_fn is not None else default_collate
        if isinstance(batch, PendingSample):  # a loader without automatic batching (batch_size=None)
            return PendingBatch([batch], self.collate_fn, single=True)
        if isinstance(batch, list) and any(isinstance(b, PendingSample) for b in batch):
            return PendingBatch(list(batch), self.collate_fn)
        return fn(batch)


def synthesize_pending(
    items: Sequence[Any], synthesizer: Synthesizer, *, slices_per_call: int | None = None
) -> list[Any]:
    """Finish the :class:`~samraug.augment.core.PendingSample`\\ s among ``items`` (others pass through).

    All pending slices of the same size go through the generator together: one call when they are 2D items
    (``slices_per_call=None``), calls of ``slices_per_call`` (default: the synthesizer's ``batch_size``) for
    volumes. A pending sample with its own painter (another painter than whole-image SAMR) is painted alone.

    Example:
        >>> finished = synthesize_pending([mixed.prepare(i) for i in range(10, 14)], mixed.synthesizer)
        ...  # doctest: +SKIP
    """
    out = list(items)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, item in enumerate(items):
        if isinstance(item, PendingSample) and item.painter is not None:
            out[i] = item.complete(synthesizer)
        elif isinstance(item, PendingSample):
            key = (tuple(item.masks.shape[1:]), item.atlas is not None)
            groups.setdefault(key, []).append(i)
    for (_, has_atlas), idx in groups.items():
        pend: list[PendingSample] = [items[i] for i in idx]
        counts = [int(p.masks.shape[0]) for p in pend]
        masks = torch.cat([p.masks for p in pend])
        if masks.shape[0] == 0:
            for i, p in zip(idx, pend, strict=True):
                out[i] = p.finish(torch.zeros(0, len(synthesizer.sequences), *p.masks.shape[1:]))
            continue
        atlas = torch.cat([p.atlas for p in pend]) if has_atlas else None  # type: ignore[misc]
        z = None
        if not has_atlas and all(p.z is not None for p in pend):
            z = torch.cat([p.z for p in pend])  # type: ignore[misc]
        volumes = any(p.is_volume for p in pend)
        bs = slices_per_call or (synthesizer.batch_size if volumes else int(masks.shape[0]))
        nb = None
        if synthesizer.mask_slices > 1:
            nb = torch.cat([p.neighbours(synthesizer.mask_slices) for p in pend])  # type: ignore[misc]
        images = synthesizer.synthesize_slices(masks, atlas, z=z, batch_size=bs, neighbours=nb)
        for i, p, chunk in zip(idx, pend, torch.split(images, counts), strict=True):
            out[i] = p.finish(chunk)
    return out


class SynthesizingQueue(tio.Queue):
    """A ``tio.Queue`` over a ``SAMRAugmentedDataset(..., batched=True)``: its subject loader's workers edit the
    masks, the main process synthesizes each pending subject (one generator pass over its slices, in batches)
    before patches are drawn from it. Same arguments as :class:`torchio.Queue`.

    Example:
        >>> mixed = SAMRAugmentedDataset(subjects, ratio=0.5, batched=True)  # doctest: +SKIP
        >>> queue = SynthesizingQueue(mixed, max_length=64, samples_per_volume=8,
        ...                           sampler=tio.data.UniformSampler((96, 96, 96)), num_workers=4)  # doctest: +SKIP
        >>> loader = tio.SubjectsLoader(queue, batch_size=4, num_workers=0)  # doctest: +SKIP
    """

    def __init__(self, subjects_dataset: SAMRAugmentedDataset, *args: Any, **kwargs: Any) -> None:
        if not _is_augmented_dataset(subjects_dataset):
            raise TypeError(
                f"SynthesizingQueue takes a SAMRAugmentedDataset, got {type(subjects_dataset).__name__}; use tio.Queue"
            )
        super().__init__(subjects_dataset, *args, **kwargs)
        self.synthesizer = subjects_dataset.synthesizer

    @property
    def iterations_per_epoch(self) -> int:
        ds = self.subjects_dataset
        indices = list(self.subject_sampler) if self.subject_sampler is not None else range(len(ds))
        items = [ds.real_ds[ds.source_of(i)] for i in indices]
        return sum(self._get_subject_num_samples(s) for s in items)

    def _get_next_subject(self) -> tio.Subject:
        subject = super()._get_next_subject()
        if isinstance(subject, PendingSample):
            subject = synthesize_pending([subject], self.synthesizer)[0]
        return subject


class SynthesizingLoader:
    """Wrap a DataLoader over a ``SAMRAugmentedDataset(..., batched=True)``: the workers edit masks, the main
    process runs the generator once per batch, then the loader's own collate function builds the batch.

    The wrapped loader's ``collate_fn`` is replaced by a :class:`PendingCollate` around it (in place).

    Args:
        loader: The DataLoader (any ``num_workers``, ``batch_size``, sampler and collate function).
        synthesizer: Default: the dataset's.
        slices_per_call: See :func:`synthesize_pending`.

    Example:
        >>> loader = SynthesizingLoader(DataLoader(mixed, batch_size=16, num_workers=4, pin_memory=True))
        ...  # doctest: +SKIP
        >>> for batch in loader:  # doctest: +SKIP
        ...     loss = train_step(batch)
    """

    def __init__(
        self, loader: DataLoader, synthesizer: Synthesizer | None = None, *, slices_per_call: int | None = None
    ) -> None:
        if not isinstance(loader, DataLoader):
            raise TypeError(f"SynthesizingLoader wraps a torch DataLoader, got {type(loader).__name__}")
        if synthesizer is None:
            dataset = loader.dataset
            synthesizer = getattr(dataset, "synthesizer", None)
            if synthesizer is None:
                raise ValueError(
                    "the loader's dataset is not a SAMRAugmentedDataset; pass synthesizer=mixed.synthesizer"
                )
            if _is_augmented_dataset(dataset) and not dataset.batched and dataset.ratio > 0:
                warnings.warn(
                    "SynthesizingLoader wraps a SAMRAugmentedDataset with batched=False: its workers synthesize "
                    "themselves; pass batched=True to synthesize in the main process",
                    UserWarning,
                    stacklevel=2,
                )
        self.loader = loader
        self.synthesizer = synthesizer
        self.slices_per_call = slices_per_call
        if not isinstance(loader.collate_fn, PendingCollate):
            loader.collate_fn = PendingCollate(loader.collate_fn)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield self.resolve(batch)

    def resolve(self, batch: Any) -> Any:
        """Finish a batch from the wrapped loader (pass-through when nothing is pending)."""
        if not isinstance(batch, PendingBatch):
            return batch
        items = synthesize_pending(batch.items, self.synthesizer, slices_per_call=self.slices_per_call)
        if batch.single:
            return items[0]
        fn = batch.collate_fn if batch.collate_fn is not None else default_collate
        return fn(items)
