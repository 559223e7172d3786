"""The data arms of the augmentation-efficacy benchmark (paper Table 2 protocol).

Every arm hands the segmentation trainer a map-style data set of ``{"image": (n, H, W), "label": (H, W)}`` items;
everything else (U-Net, optimiser, step budget) is the same for every arm. The arms:

- ``real``: the real 2D training slices only.
- ``conventional``: real slices + a fixed pool of TorchIO-augmented copies of random real slices (left-right
  flip, in-plane affine, elastic deformation; on 2D slices as ``(C, H, W, 1)`` volumes, displacements in pixels),
  as many as the synthetic arms add. ``conventional_otf`` applies the same transform on the fly to every sample
  instead (the usual practice; TorchIO's elastic deformation costs ~0.3 s per 128x128 slice on one CPU core, so
  it belongs on machines with many DataLoader workers).
- ``labels_to_image``, ``copy_paste``, ``samr_25`` / ``samr_50`` / ``samr_75``, ``samr_local_50`` and, at 50 %, the
  ablations and baselines: real slices + a fixed pool of synthetic slices made through the library's public
  augmentation path, :class:`samraug.dataset.SAMRAugmentedDataset` over the arm's real training subjects with
  ``painter="labels-to-image"`` (TorchIO ``RandomLabelsToImage`` + ``RandomBlur`` around the edit),
  ``"copy-paste"`` (CarveMix-style: another training subject's lesion and intensities) or ``"samr"`` (``mode=
  "whole"``: the generator repaints every slice; ``"local"``: only around the edit) -- the code users run
  (:func:`painted_pool`). Edit and copy-paste donors are the arm's training subjects only.

A fixed synthetic pool (not on-the-fly generation) follows the paper (Table 2: "1080 synthesized + 1080 real"): at
ratio ``r`` the mixed set holds ``round(n_real / (1 - r)) - n_real`` synthetic instances, so 50 % doubles the set and
25 % adds a third. The pool holds the slices whose labels the edit changed, from as many synthetic volumes as needed;
painters given the same seed paint the same edits, which isolates the painter, which is what the table compares.

Example:
    >>> # real = SliceSet(image, label, brain, z, subject_ids, sequences)
    >>> # ds = build_arm("copy_paste", real, seed=0)
    >>> # len(ds) == 2 * len(real)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from samraug.intensity import Normalization
from samraug.labels import BACKGROUND, LESION_CLASSES

#: How the benchmark's segmenter sees every image, real or painted: whole-brain percentiles to [-1, 1] (what every
#: earlier run used, so real-only arms stay identical across runs and pairs across runs stay exact). Independent of
#: the normalisation the SAMR weights use internally: painted images are mapped back to the subject's scale first.
SEGMENTER_NORMALIZATION = Normalization.legacy()

__all__ = [
    "ARMS",
    "PAINTER_OF_KIND",
    "ArmSpec",
    "ConventionalDataset",
    "MixedDataset",
    "SliceSet",
    "conventional_pool",
    "conventional_transform",
    "n_synthetic",
    "painted_pool",
]


# ---------------------------------------------------------------------------------------------------- arms table
@dataclass(frozen=True)
class ArmSpec:
    """One benchmark arm.

    Attributes:
        name: Key used on the command line and in the JSON.
        title: Row label of the table.
        kind: ``real``, ``conventional``, ``conventional_otf``, ``labels_to_image``, ``copy_paste``,
            ``generator`` or ``control`` (real + the subjects the SAMR generator was trained on, as real data).
        ratio: Fraction of added (augmented or synthetic) instances in the mixed set (0: none added).
        variant: For ``generator`` arms, the SAMR variant painting the images (``samr``, ``no_stretch_out``,
            ``no_label_wise_d``, ``no_atlas``, ``no_lc``, ``pix2pix``, ``pix2pixhd``).
        group: Table section (as the paper's Exp. 1-4).
        fraction: Fraction of the training subjects whose real slices the arm uses; None: the benchmark's
            ``fraction`` (the low-data setting every arm shares), a number: a data-fraction sweep point.
        mode: For ``generator`` arms, ``whole`` (paint whole slices) or ``local`` (paint around the lesion only;
            needs the library's local painter).
    """

    name: str
    title: str
    kind: str
    ratio: float = 0.0
    variant: str | None = None
    group: str = ""
    fraction: float | None = None
    mode: str = "whole"


ARMS: dict[str, ArmSpec] = {
    a.name: a
    for a in (
        ArmSpec("real", "Real only", "real", group="Baselines"),
        ArmSpec("conventional", "+ conventional: flip, affine, elastic (50 %)", "conventional", 0.5, group="Baselines"),
        ArmSpec("conventional_otf", "+ conventional, on the fly (every sample)", "conventional_otf", group="Baselines"),
        ArmSpec(
            "labels_to_image", "+ RandomLabelsToImage, edited masks (50 %)", "labels_to_image", 0.5, group="Baselines"
        ),
        ArmSpec("copy_paste", "+ copy-paste, CarveMix-style (50 %)", "copy_paste", 0.5, group="Baselines"),
        ArmSpec("samr_25", "+ SAMR (25 %)", "generator", 0.25, "samr", group="SAMR"),
        ArmSpec("samr_50", "+ SAMR (50 %)", "generator", 0.5, "samr", group="SAMR"),
        ArmSpec("samr_75", "+ SAMR (75 %)", "generator", 0.75, "samr", group="SAMR"),
        ArmSpec("samr_local_25", "+ SAMR local (25 %)", "generator", 0.25, "samr_local", group="SAMR", mode="local"),
        ArmSpec("samr_local_50", "+ SAMR local (50 %)", "generator", 0.5, "samr_local", group="SAMR", mode="local"),
        ArmSpec("samr_local_75", "+ SAMR local (75 %)", "generator", 0.75, "samr_local", group="SAMR", mode="local"),
        ArmSpec(
            "control", "Real + the generator's training subjects (control)", "control", group="Control: SAMR's labels"
        ),
        ArmSpec("real_full", "Real only, all training subjects", "real", group="Data fraction", fraction=1.0),
        ArmSpec("samr_50_full", "+ SAMR (50 %), all training subjects", "generator", 0.5, "samr", "Data fraction", 1.0),
        ArmSpec(
            "samr_local_50_full",
            "+ SAMR local (50 %), all training subjects",
            "generator",
            0.5,
            "samr_local",
            "Data fraction",
            1.0,
            mode="local",
        ),
        ArmSpec("no_stretch_out_50", "+ SAMR w/o stretch-out (50 %)", "generator", 0.5, "no_stretch_out", "Ablations"),
        ArmSpec(
            "no_label_wise_d_50", "+ SAMR w/o label-wise D (50 %)", "generator", 0.5, "no_label_wise_d", "Ablations"
        ),
        ArmSpec("no_atlas_50", "+ SAMR w/o atlas (50 %)", "generator", 0.5, "no_atlas", "Ablations"),
        ArmSpec("no_lc_50", "+ SAMR w/o LC (50 %)", "generator", 0.5, "no_lc", "Ablations"),
        ArmSpec("pix2pix_50", "+ pix2pix (50 %)", "generator", 0.5, "pix2pix", "Generator baselines"),
        ArmSpec("pix2pixhd_50", "+ pix2pixHD (50 %)", "generator", 0.5, "pix2pixhd", "Generator baselines"),
    )
}


def n_synthetic(n_real: int, ratio: float) -> int:
    """Synthetic instances added to ``n_real`` real ones so that they make a fraction ``ratio`` of the mixed set
    (the length rule of :class:`samraug.dataset.SAMRAugmentedDataset`: ``round(n_real / (1 - ratio))`` in all).

    Example:
        >>> n_synthetic(1080, 0.5), n_synthetic(1080, 0.25), n_synthetic(10, 0.0)
        (1080, 360, 0)
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio is the synthetic fraction of the mixed set, in [0, 1), got {ratio}")
    return round(n_real / (1.0 - ratio)) - n_real


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generator seeded, restoring it afterwards.

    TorchIO's random transforms draw from torch's global generator; this makes them reproducible per seed without
    disturbing the caller's stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ---------------------------------------------------------------------------------------------------- slices
@dataclass
class SliceSet(Dataset):
    """2D instances held in memory: normalised images, SAMR labels, brain masks, slice index and subject.

    Attributes:
        image: ``(N, n, H, W)`` float32 in [-1, 1] (background -1).
        label: ``(N, H, W)`` int64 SAMR classes.
        brain: ``(N, H, W)`` bool.
        z: ``(N,)`` int64 axial index of each slice in its (co-registered) volume.
        subject_ids: Subject of each slice (length N).
        sequences: Sequence names of the image channels.
        origin: Free-form provenance per instance (e.g. the edit record), same length or empty.

    Example:
        >>> lab = torch.zeros(2, 4, 4, dtype=torch.long)
        >>> s = SliceSet(torch.zeros(2, 1, 4, 4), lab, lab > -1, torch.tensor([3, 4]), ["a", "b"], ("t1",))
        >>> sorted(s[0]), len(s)
        (['image', 'label'], 2)
    """

    image: torch.Tensor
    label: torch.Tensor
    brain: torch.Tensor
    z: torch.Tensor
    subject_ids: list[str]
    sequences: tuple[str, ...]
    origin: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.image.shape[0]
        if self.image.dim() != 4:
            raise ValueError(f"SliceSet.image must be (N, n, H, W), got {tuple(self.image.shape)}")
        if tuple(self.label.shape) != (n, *self.image.shape[2:]) or tuple(self.brain.shape) != tuple(self.label.shape):
            raise ValueError(
                f"SliceSet: label {tuple(self.label.shape)} / brain {tuple(self.brain.shape)} do not match image "
                f"{tuple(self.image.shape)}"
            )
        if len(self.z) != n or len(self.subject_ids) != n:
            raise ValueError(f"SliceSet: {len(self.z)} z and {len(self.subject_ids)} subject ids for {n} slices")
        if len(self.sequences) != self.image.shape[1]:
            raise ValueError(f"SliceSet: {len(self.sequences)} sequence names for {self.image.shape[1]} channels")
        if self.origin and len(self.origin) != n:
            raise ValueError(f"SliceSet: {len(self.origin)} origin records for {n} slices")
        self.z = torch.as_tensor(self.z, dtype=torch.long)
        self.label = self.label.long()
        self.brain = self.brain.bool()

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[i], "label": self.label[i]}

    @property
    def subjects(self) -> list[str]:
        """Distinct subject ids, in order of first appearance."""
        return list(dict.fromkeys(self.subject_ids))

    @property
    def has_lesion(self) -> torch.Tensor:
        """``(N,)`` bool: the slice holds at least one lesion voxel."""
        return (self.label >= min(LESION_CLASSES)).flatten(1).any(1)

    def subset(self, index: Sequence[int] | torch.Tensor) -> SliceSet:
        """The instances at ``index`` (a new SliceSet sharing no storage with this one)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return SliceSet(
            self.image[idx].clone(),
            self.label[idx].clone(),
            self.brain[idx].clone(),
            self.z[idx].clone(),
            [self.subject_ids[int(i)] for i in idx],
            self.sequences,
            [self.origin[int(i)] for i in idx] if self.origin else [],
        )

    def select_subjects(self, subject_ids: Sequence[str]) -> SliceSet:
        """The instances of the given subjects."""
        keep = set(subject_ids)
        return self.subset([i for i, s in enumerate(self.subject_ids) if s in keep])

    @staticmethod
    def concat(parts: Sequence[SliceSet]) -> SliceSet:
        """Concatenate SliceSets of the same sequences and size."""
        if not parts:
            raise ValueError("nothing to concatenate")
        seqs = {p.sequences for p in parts}
        if len(seqs) != 1:
            raise ValueError(f"SliceSets with different sequences cannot be concatenated: {sorted(seqs)}")
        return SliceSet(
            torch.cat([p.image for p in parts]),
            torch.cat([p.label for p in parts]),
            torch.cat([p.brain for p in parts]),
            torch.cat([p.z for p in parts]),
            [s for p in parts for s in p.subject_ids],
            parts[0].sequences,
            [o for p in parts for o in (p.origin or [{} for _ in range(len(p))])],
        )


class MixedDataset(Dataset):
    """Real instances followed by synthetic ones; ``synthetic_fraction`` is what the mixture really holds.

    Example:
        >>> real = [{"image": torch.zeros(1, 2, 2), "label": torch.zeros(2, 2, dtype=torch.long)}] * 3
        >>> len(MixedDataset(real, real[:1]))
        4
    """

    def __init__(self, real: Dataset | Sequence[Any], synthetic: Dataset | Sequence[Any]) -> None:
        self.real = real
        self.synthetic = synthetic

    def __len__(self) -> int:
        return len(self.real) + len(self.synthetic)

    @property
    def synthetic_fraction(self) -> float:
        return len(self.synthetic) / max(1, len(self))

    def __getitem__(self, i: int) -> Any:
        n = len(self.real)
        return self.real[i] if i < n else self.synthetic[i - n]


# ---------------------------------------------------------------------------------------------------- conventional
def conventional_transform(
    flip_probability: float = 0.5,
    degrees: float = 10.0,
    scales: float = 0.1,
    translation: float = 8.0,
    p_affine: float = 0.5,
    max_displacement: float = 5.0,
    num_control_points: int = 7,
    p_elastic: float = 0.25,
) -> Any:
    """The conventional augmentation arm: TorchIO left-right flip, in-plane affine and elastic deformation.

    Built for 2D slices stored as ``(C, H, W, 1)`` TorchIO volumes with unit spacing (so mm = pixels): rotations
    only about the slice normal, no scaling, translation or displacement along the singleton axis.

    Example:
        >>> t = conventional_transform()
        >>> [type(x).__name__ for x in t.transforms]
        ['RandomFlip', 'RandomAffine', 'RandomElasticDeformation']
    """
    import torchio as tio

    return tio.Compose(
        [
            tio.RandomFlip(axes=(0,), flip_probability=flip_probability),
            tio.RandomAffine(
                scales=(1 - scales, 1 + scales, 1 - scales, 1 + scales, 1, 1),
                degrees=(0, 0, 0, 0, -degrees, degrees),
                translation=(-translation, translation, -translation, translation, 0, 0),
                default_pad_value=-1.0,
                p=p_affine,
            ),
            tio.RandomElasticDeformation(
                num_control_points=(num_control_points, num_control_points, 5),
                max_displacement=(max_displacement, max_displacement, 0),
                locked_borders=2,
                p=p_elastic,
            ),
        ]
    )


def _transform_slice(transform: Any, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torchio as tio

    # Copy the slice: a view keeps its whole parent storage alive, and TorchIO deep-copies the subject, which clones
    # that storage (the full training set) on every call.
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=image.unsqueeze(-1).float().clone()),
        label=tio.LabelMap(tensor=label.unsqueeze(0).unsqueeze(-1).to(torch.int16).clone()),
    )
    out = transform(subject)
    return out["image"].data[..., 0].float().clamp(-1.0, 1.0), out["label"].data[0, ..., 0].long()


class ConventionalDataset(Dataset):
    """Real instances transformed on the fly by :func:`conventional_transform` (fresh randomness per access, from
    torch's global generator, which the segmentation trainer seeds).

    Example:
        >>> base = [{"image": torch.zeros(1, 16, 16), "label": torch.zeros(16, 16, dtype=torch.long)}]
        >>> ConventionalDataset(base)[0]["image"].shape
        torch.Size([1, 16, 16])
    """

    def __init__(self, real: Dataset | Sequence[Any], transform: Any | None = None) -> None:
        self.real = real
        self.transform = transform if transform is not None else conventional_transform()

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.real[i]
        image, label = _transform_slice(self.transform, item["image"], item["label"])
        return {"image": image, "label": label}


def conventional_pool(real: SliceSet, n: int, seed: int, transform: Any | None = None) -> SliceSet:
    """``n`` copies of uniformly drawn real slices, each transformed by :func:`conventional_transform` (seeded).

    Example:
        >>> # pool = conventional_pool(real_train, n=len(real_train), seed=0)
    """
    if n == 0:
        return real.subset([])
    transform = transform if transform is not None else conventional_transform()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(real), (n,), generator=g)
    images, labels = [], []
    with _seeded(seed):
        for i in idx.tolist():
            image, label = _transform_slice(transform, real.image[i], real.label[i])
            images.append(image)
            labels.append(label)
    label = torch.stack(labels)
    return SliceSet(
        torch.stack(images),
        label,
        label > BACKGROUND,
        real.z[idx].clone(),
        [real.subject_ids[i] for i in idx.tolist()],
        real.sequences,
        [{"op": "conventional", "source": i} for i in idx.tolist()],
    )


# ---------------------------------------------------------------------------------------------------- painted pools
#: The library painter of each painting arm kind (``generator`` arms: ``"samr"`` with the arm's mode).
PAINTER_OF_KIND: dict[str, str] = {
    "copy_paste": "copy-paste",
    "labels_to_image": "labels-to-image",
    "generator": "samr",
}


def painted_pool(
    subjects: Sequence[Any],
    real: SliceSet,
    n: int,
    *,
    painter: str,
    synthesizer: Any,
    scheme: str,
    seed: int,
    mode: str | None = None,
    max_volumes: int | None = None,
    healthy: str | None = None,
    region: str | None = None,
    insert: float | None = None,
    n_insert: int | None = None,
    max_region_mm: float | None = None,
    edits: str | Mapping[str, float] | None = None,
) -> tuple[SliceSet, dict[str, Any]]:
    """``n`` synthetic 2D instances made through the library's public path, and what it did.

    ``SAMRAugmentedDataset(subjects, painter=painter, mode=mode, weights=synthesizer, donors="dataset")`` makes
    synthetic volumes from the training ``subjects`` (``tio.Subject``, the arm's real training subjects: every edit
    donor and copy-paste donor is one of them); each synthetic volume is normalised and sliced exactly like the real
    ones (:func:`samraug.data.slices.prepare_subject`), padded to the real slices' size, and its axial slices whose
    label map the edit changed join the pool (in volume order, then ``z``) until it holds ``n``. Painters differ only
    in how they paint: with the same ``seed`` the SAMR and RandomLabelsToImage pools paint the same edits of the same
    source volumes, so the head of a pool is the smaller ratio's pool. Local SAMR painting only (None: the
    library's default): ``healthy``, ``region`` and ``max_region_mm``, the painter's options
    (:class:`samraug.augment.painters.SAMRPainter`), and ``insert``, the edit policy's ``p_insert``
    (:class:`samraug.editing.EditPolicy`: the edited lesion added beside the real one instead of replacing it) and
    ``n_insert``, its ``n_insert`` (lesions an inserting edit adds). ``edits``: the dataset's ``edits`` (None: the
    painter's own; ``"carve"`` with the SAMR painter: copy-paste's label maps with the same ``seed``, inside the
    brain; ``"carve+random"``: those plus the random edit).

    Returns:
        The pool (``origin`` per slice: volume index, source subject, painter, edit) and a description:
        ``volumes`` (synthetic volumes made), ``left_real`` (those of them whose applied edit the painter could not
        paint, e.g. a local region at the image edge: the dataset returns them real, label map included, and they add
        no slice), ``donors`` (subject ids the dataset could take donors from),
        ``edits`` (per volume: its :meth:`~samraug.dataset.SAMRAugmentedDataset.describe` record, source subject,
        donor subject where the record names one, and the slices kept).

    Example:
        >>> # pool, what = painted_pool(train_subjects, real, 100, painter="copy-paste", synthesizer=synth,
        >>> #                           scheme="brats2024", seed=0)
    """
    from samraug.data.slices import pad_or_crop, prepare_subject
    from samraug.dataset import SAMRAugmentedDataset
    from samraug.intensity import BACKGROUND_VALUE

    ids = [str(s["subject_id"]) for s in subjects]
    if len(ids) < 2:
        raise ValueError(f"the {painter!r} arm needs at least two training subjects (donor and source), got {len(ids)}")
    what: dict[str, Any] = {
        "painter": painter,
        "mode": mode,
        "volumes": 0,
        "left_real": 0,
        "donors": sorted(ids),
        "edits": [],
    }
    if edits is not None:
        what["edit_kind"] = edits
    chosen: Any = painter
    policy = None
    options = {
        "healthy": healthy,
        "region": region,
        "max_region_mm": max_region_mm,
        "insert": insert,
        "n_insert": n_insert,
    }
    given = {k: v for k, v in options.items() if v is not None}
    if given:
        if painter != "samr" or mode != "local":
            raise ValueError(f"{given} are options of local SAMR painting, not of {painter!r} ({mode})")
        from samraug.augment.painters import SAMRPainter
        from samraug.editing import EditPolicy

        edit_keys = ("insert", "n_insert")
        painter_options = {k: v for k, v in given.items() if k not in edit_keys}  # the rest: the painter's defaults
        chosen = SAMRPainter(synthesizer, mode="local", **painter_options)
        if insert:
            policy = EditPolicy(p_insert=float(insert), n_insert=int(n_insert or 1))
        what.update(given)
    size = tuple(real.label.shape[-2:])
    if n == 0:
        return _empty(real, size), what
    limit = max_volumes if max_volumes is not None else 4 * n + 8
    ds = SAMRAugmentedDataset(
        list(subjects),
        n_synthetic=limit,
        weights=synthesizer,
        scheme=scheme,
        painter=chosen,
        mode=mode,
        seed=seed,
        donors="dataset",
        policy=policy,
        edits=edits,
    )
    parts: list[SliceSet] = []
    have = 0
    for i in range(ds.n_real, ds.n_real + limit):
        item = ds[i]
        record = ds.describe(i)
        src = int(record["source"])
        before = np.asarray(subjects[src]["seg"].data)[0]
        after = np.asarray(item["seg"].data)[0]
        changed = set(np.nonzero((before != after).any(axis=(0, 1)))[0].tolist())
        entry = {"volume": i - ds.n_real, "source_subject": ids[src], **{k: record[k] for k in ("seed", "edit")}}
        edit = record.get("edit") or {}
        if edit.get("op") in ("carve", "carve+random") and isinstance(edit.get("donor"), int):
            entry["donor_subject"] = ids[int(edit["donor"])]
        if not changed and edit.get("applied", True):  # an applied edit the painter could not paint: left real
            entry["left_real"] = True
            what["left_real"] += 1
        p = prepare_subject(item, real.sequences, scheme=scheme, selection="all", normalization=SEGMENTER_NORMALIZATION)
        keep = [k for k, z in enumerate(p.z) if int(z) in changed][: n - have]
        entry["slices"] = len(keep)
        what["edits"].append(entry)
        what["volumes"] += 1
        if keep:
            image = pad_or_crop(p.images.permute(3, 0, 1, 2)[keep], size, value=BACKGROUND_VALUE)
            label = pad_or_crop(p.label.permute(2, 0, 1)[keep].long(), size, value=0)
            zs = [int(p.z[k]) for k in keep]
            origin = [{"painter": painter, "volume": entry["volume"], "source": ids[src], "z": z} for z in zs]
            parts.append(
                SliceSet(
                    image.contiguous(),
                    label.contiguous(),
                    label > 0,
                    torch.tensor(zs),
                    [ids[src]] * len(keep),
                    real.sequences,
                    origin,
                )
            )
            have += len(keep)
        if have >= n:
            return SliceSet.concat(parts), what
    left_real = f" ({what['left_real']} of them left real by the painter, see the edits' 'left_real')"
    raise ValueError(
        f"the {painter!r} painter changed the labels of only {have} slices in {limit} synthetic volumes"
        f"{left_real if what['left_real'] else ''}; {n} were needed (are there lesions in the training subjects?); "
        "lower the ratio or pass more subjects"
    )


def _empty(real: SliceSet, size: tuple[int, ...]) -> SliceSet:
    h, w = size
    return SliceSet(
        torch.zeros(0, len(real.sequences), h, w),
        torch.zeros(0, h, w, dtype=torch.long),
        torch.zeros(0, h, w, dtype=torch.bool),
        torch.zeros(0, dtype=torch.long),
        [],
        real.sequences,
    )
