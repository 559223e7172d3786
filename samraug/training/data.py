"""Training data of the GAN recipes: the phantom / BraTS preparation (:func:`prepare_gan_data`) and a toy data
set for smoke tests and speed benchmarks (:class:`SyntheticSliceDataset`).

Example:
    >>> ds = SyntheticSliceDataset(2, size=32, sequences=("t1n",))
    >>> ds[0]["mask"].shape
    torch.Size([5, 32, 32])
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from samraug.atlas import build_atlas
from samraug.data.brats import load_brats
from samraug.data.phantom import PHANTOM_SEQUENCES, ensure_phantom_dataset
from samraug.data.slices import SliceDataset
from samraug.data.splits import load_split, patient_split, save_split, select_subjects
from samraug.intensity import Normalization
from samraug.labels import CAVITY, CONDITIONINGS, EDEMA, N_CLASSES, TUMOR, get_scheme

__all__ = ["GANData", "SyntheticSliceDataset", "TrainingSubjects", "load_training_subjects", "prepare_gan_data"]


class SyntheticSliceDataset(Dataset):
    """Random instances in the :mod:`samraug.data.slices` format, for smoke tests and speed benchmarks; their
    classes are the 5 SAMR classes (label scheme ``"samr"``, where native and SAMR conditioning agree).

    NOT anatomy: instance ``i`` is drawn from ``torch.Generator().manual_seed(seed + i)`` (so it is the same on
    every call and in every worker): an elliptic "brain" with a tumor disk, an edema ring around it and, every
    third instance, a cavity; images are a per-class intensity per sequence plus a fraction of the atlas slice
    and a little noise; the atlas is a fixed radial pattern (its 3 slices per sequence are shifted copies).

    Example:
        >>> ds = SyntheticSliceDataset(4, size=32, sequences=("t1n", "t2f"))
        >>> item = ds[0]
        >>> item["mask"].shape, item["image"].shape, item["atlas"].shape, item["label"].dtype
        (torch.Size([5, 32, 32]), torch.Size([2, 32, 32]), torch.Size([6, 32, 32]), torch.int64)
    """

    def __init__(
        self,
        n: int,
        size: int | tuple[int, int] = 64,
        sequences: Sequence[str] = ("t1n", "t1c", "t2w", "t2f"),
        seed: int = 0,
    ) -> None:
        self.n = int(n)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.sequences = tuple(sequences)
        self.seed = int(seed)
        h, w = self.size
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self._grid = (yy, xx)
        k = len(self.sequences)
        base = torch.cos(3 * torch.sqrt(yy**2 + xx**2))[None] * torch.linspace(0.3, 0.8, k)[:, None, None]
        inside = (yy / 0.85) ** 2 + (xx / 0.75) ** 2 <= 1
        atlas = torch.where(inside, base, torch.full_like(base, -1.0))
        self._atlas = torch.stack([atlas.roll(s, dims=1) for s in (-1, 0, 1)], 1).reshape(3 * k, h, w)
        # per-sequence intensity of background, brain, edema, cavity, tumor (distinct contrasts)
        g = torch.Generator().manual_seed(12345)
        self._lut = torch.rand(k, N_CLASSES, generator=g) * 1.4 - 0.7
        self._lut[:, 0] = -1.0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} instances")
        g = torch.Generator().manual_seed(self.seed + int(i))
        yy, xx = self._grid
        r = torch.rand(6, generator=g)
        brain = ((yy - 0.1 * (r[0] - 0.5)) / (0.7 + 0.15 * r[1])) ** 2 + (xx / (0.6 + 0.15 * r[2])) ** 2 <= 1
        cy, cx = 0.5 * (r[3] - 0.5), 0.4 * (r[4] - 0.5)
        d = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        rad = 0.12 + 0.12 * r[5]
        label = torch.where(brain, 1, 0)
        label = torch.where(brain & (d < 1.8 * rad), EDEMA, label)
        label = torch.where(brain & (d < rad), TUMOR, label)
        if i % 3 == 2:
            label = torch.where(brain & ((yy - cy - rad) ** 2 + (xx - cx) ** 2 < (0.5 * rad) ** 2), CAVITY, label)
        label = label.long()
        mask = F.one_hot(label, N_CLASSES).permute(2, 0, 1).float()
        k = len(self.sequences)
        atlas_mid = self._atlas.reshape(k, 3, *self.size)[:, 1]
        image = self._lut[:, label] + 0.3 * torch.where(brain, atlas_mid, torch.zeros_like(atlas_mid))
        image = image + 0.02 * torch.randn(image.shape, generator=g)
        image = torch.where(brain[None], image.clamp(-1, 1), torch.full_like(image, -1.0))
        return {
            "mask": mask,
            "label": label,
            "atlas": self._atlas.clone(),
            "image": image.float(),
            "brain": brain,
            "z": int(i) % 16,
            "subject_id": f"toy-{int(i) // 16:03d}",
            "stats": torch.tensor([[0.0, 1000.0]] * k),
        }


@dataclass
class GANData:
    """Training data of a recipe run (:func:`prepare_gan_data`)."""

    train: Dataset
    val: Dataset | None
    atlas: Any
    split: dict[str, list[str]]
    sequences: tuple[str, ...]
    scheme: str
    description: str
    simulated: bool
    conditioning: str = "native"

    @property
    def n_labels(self) -> int:
        """Classes of the instances' masks: ``len(get_scheme(scheme).classes(conditioning))``."""
        return len(get_scheme(self.scheme).classes(self.conditioning))


def prepare_gan_data(
    data: str | Path = "phantom",
    *,
    scheme: str | None = None,
    n_subjects: int | None = None,
    resolution: float = 2.0,
    phantom_seed: int = 0,
    cache_dir: str | Path | None = None,
    sequences: Sequence[str] | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    split_file: str | Path | None = None,
    multiple: int = 32,
    selection: str = "brain",
    min_brain_voxels: int = 1,
    out_dir: str | Path | None = None,
    workers: int = 1,
    conditioning: str = "native",
    normalization: Normalization | None = None,
    mask_slices: int = 1,
) -> GANData:
    """Subjects -> patient-level split -> atlas from the TRAINING split only -> 2D slice data sets.

    Args:
        data: ``"phantom"`` (samraug's simulated phantom, generated once into a cache with
            :func:`samraug.data.phantom.ensure_phantom_dataset`) or a BraTS folder.
        scheme: Label scheme of a BraTS folder (``brats2021``, ``brats2023``, ``brats2024``); required there,
            since label 4 means different things. The phantom is ``brats2024``.
        n_subjects: Phantom: number of subjects (default 30). BraTS: use only the first N cases (sorted by id).
        resolution, phantom_seed, cache_dir, workers: Phantom generation (2 mm -> 99x117 slices padded to 128).
        sequences: Sequences to use, in order (default: all the data has, e.g. t1n, t1c, t2w, t2f[, aptw]).
        split_seed, val_fraction, test_fraction: Patient-level split (:func:`samraug.data.splits.patient_split`);
            or ``split_file`` to reuse a saved split. The split is written to ``out_dir/split.json``.
        multiple: Slices are padded (centred) to a multiple of this (32: phantom -> 128x128, BraTS -> 256x256).
        selection, min_brain_voxels: Which axial slices become instances (:func:`samraug.data.slices.select_slices`).
        conditioning: The masks' classes: ``"native"`` (the scheme's own lesion labels; phantom brats2024: 6
            classes) or ``"samr"`` (the paper's 5).
        normalization: How the atlas and the slices are normalised (default ``Normalization()``: percentiles of
            the normal-appearing brain, :class:`samraug.intensity.Normalization`).
        mask_slices: Adjacent mask slices of a generator that sees more than one (instances then carry
            ``"mask_stack"``, :class:`samraug.data.slices.SliceDataset`).

    The atlas is built from the training subjects only, and records them in ``atlas.info["training_data"]``
    (``subjects``: case ids; phantom: also ``phantom_subject_seeds``), so exported weights declare their training
    data (a benchmark can check that none of its test subjects was seen).

    Example:
        >>> d = prepare_gan_data("phantom", n_subjects=10, out_dir="/tmp/run")  # doctest: +SKIP
        >>> len(d.train), d.sequences  # doctest: +SKIP
        (640, ('t1n', 't1c', 't2w', 't2f', 'aptw'))
    """
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"unknown conditioning {conditioning!r}; use one of {list(CONDITIONINGS)}")
    loaded = load_training_subjects(
        data,
        scheme=scheme,
        n_subjects=n_subjects,
        resolution=resolution,
        phantom_seed=phantom_seed,
        cache_dir=cache_dir,
        sequences=sequences,
        split_seed=split_seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_file=split_file,
        out_dir=out_dir,
        workers=workers,
    )
    scheme, sequences, split, simulated = loaded.scheme, loaded.sequences, loaded.split, loaded.simulated
    train_subjects, val_subjects, description = loaded.train, loaded.val, loaded.description
    atlas = build_atlas(train_subjects, sequences, scheme=scheme, normalization=normalization)
    # the weights declare what they were trained on (the atlas travels with them): lets a benchmark verify that
    # none of its test subjects was seen (phantom subjects by their per-subject seed, case names repeat)
    training_data: dict[str, Any] = {"subjects": list(split["train"])}
    if loaded.phantom_seeds is not None:
        seeds = loaded.phantom_seeds
        training_data = {"phantom_subject_seeds": [int(seeds[i]) for i in split["train"]], **training_data}
    atlas.info["training_data"] = training_data
    common = {
        "conditioning": conditioning,
        "sequences": sequences,
        "scheme": scheme,
        "selection": selection,
        "min_brain_voxels": min_brain_voxels,
        "multiple": multiple,
        "normalization": normalization,
        "mask_slices": mask_slices,
    }
    train = SliceDataset(train_subjects, atlas, **common)
    val = SliceDataset(val_subjects, atlas, **common) if val_subjects else None
    description += (
        f"; split by patient: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test"
    )
    description += f"; {conditioning} conditioning"
    return GANData(train, val, atlas, split, sequences, str(scheme), description, simulated, conditioning)


@dataclass
class TrainingSubjects:
    """Subjects of a recipe run, split by patient (:func:`load_training_subjects`)."""

    train: list[Any]
    val: list[Any]
    split: dict[str, list[str]]
    sequences: tuple[str, ...]
    scheme: str
    description: str
    simulated: bool
    #: Phantom: the per-subject seeds, indexed by subject id (None for real data).
    phantom_seeds: Mapping[str, int] | None = None


def load_training_subjects(
    data: str | Path = "phantom",
    *,
    scheme: str | None = None,
    n_subjects: int | None = None,
    resolution: float = 2.0,
    phantom_seed: int = 0,
    cache_dir: str | Path | None = None,
    sequences: Sequence[str] | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    split_file: str | Path | None = None,
    out_dir: str | Path | None = None,
    workers: int = 1,
) -> TrainingSubjects:
    """The phantom (generated once into a cache) or a BraTS folder as ``tio.Subject``s, split by patient; the split
    is written to ``out_dir/split.json``. Arguments as in :func:`prepare_gan_data`.

    Example:
        >>> s = load_training_subjects("phantom", n_subjects=8)  # doctest: +SKIP
        >>> len(s.train), s.scheme  # doctest: +SKIP
        (6, 'brats2024')
    """
    phantom_seeds = None
    if str(data) == "phantom":
        if scheme not in (None, "brats2024"):
            raise ValueError(f"the phantom is labelled in scheme 'brats2024', not {scheme!r}; drop --scheme")
        n = 30 if n_subjects is None else int(n_subjects)
        root = ensure_phantom_dataset(
            n, seed=phantom_seed, resolution=resolution, cache_dir=cache_dir, workers=workers, progress=False
        )
        scheme = "brats2024"
        subjects = load_brats(root, scheme=scheme, sequences=list(sequences or PHANTOM_SEQUENCES))
        description = (
            f"samraug digital phantom (SIMULATED MR, MNI152 anatomy): {n} subjects, {resolution:g} mm, seed "
            f"{phantom_seed}"
        )
        simulated = True
        phantom_seeds = json.loads((root / "phantom.json").read_text())["subjects"]
    else:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {root} does not exist; pass a BraTS folder or --data phantom")
        if scheme is None:
            raise ValueError(
                "pass the label scheme of the BraTS folder (--scheme brats2021|brats2023|brats2024): label 4 is "
                "enhancing tumour in 2021 but resection cavity in 2024"
            )
        subjects = load_brats(root, scheme=scheme, sequences=sequences)
        if n_subjects is not None:
            subjects = subjects[: int(n_subjects)]
        description = f"BraTS folder {root.name} ({len(subjects)} cases, label scheme {scheme})"
        simulated = False
    if sequences is None:
        sequences = tuple(subjects[0].get_images_dict(intensity_only=True))
    ids = [s["subject_id"] for s in subjects]
    if split_file is not None:
        split = load_split(split_file)
    else:
        split = patient_split(ids, test_fraction=test_fraction, val_fraction=val_fraction, seed=split_seed)
    if out_dir is not None:
        save_split(split, Path(out_dir) / "split.json")
    return TrainingSubjects(
        train=select_subjects(subjects, split["train"]),
        val=select_subjects(subjects, split["val"]),
        split=split,
        sequences=tuple(sequences),
        scheme=str(scheme),
        description=description,
        simulated=simulated,
        phantom_seeds=phantom_seeds,
    )
