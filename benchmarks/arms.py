"""The data arms of the augmentation-efficacy benchmark (paper Table 2 protocol).

Every arm hands the segmentation trainer a map-style data set of ``{"image": (n, H, W), "label": (H, W)}`` items;
everything else (U-Net, optimiser, step budget) is the same for every arm. The arms:

- ``real``: the real 2D training slices only.
- ``conventional``: real slices + a fixed pool of TorchIO-augmented copies of random real slices (left-right
  flip, in-plane affine, elastic deformation; on 2D slices as ``(C, H, W, 1)`` volumes, displacements in pixels),
  as many as the synthetic arms add. ``conventional_otf`` applies the same transform on the fly to every sample
  instead (the usual practice; TorchIO's elastic deformation costs ~0.3 s per 128x128 slice on one CPU core, so
  it belongs on machines with many DataLoader workers).
- ``labels_to_image``: real slices + a fixed pool of synthetic slices whose masks are real masks edited by the
  :class:`samraug.editing.LesionEditor` (donors from the training split only) and whose images are painted by
  ``tio.RandomLabelsToImage`` (a random Gaussian intensity per SAMR class and sequence, SynthSeg-style), blurred,
  then normalised like real images (robust percentiles inside the brain -> [-1, 1], background -1).
- ``copy_paste``: real slices + a fixed pool of CarveMix-style slices (Zhang et al. 2021): a donor's lesion plus a
  random margin of surrounding tissue, label AND image content, carved into a recipient slice of another training
  subject at the same position (subjects share one grid, so the same ``z`` is the same anatomy level).
- ``samr_25``, ``samr_50`` and, at 50 %, the ablations and baselines: real slices + a fixed pool of synthetic
  slices whose masks are the *same* edited masks as the ``labels_to_image`` arm (same seed, same editor) and whose
  images are painted by a generator through :class:`samraug.synthesis.Synthesizer` with its atlas slices.

A fixed synthetic pool (not on-the-fly generation) follows the paper (Table 2: "1080 synthesized + 1080 real"): at
ratio ``r`` the mixed set holds ``round(n_real / (1 - r)) - n_real`` synthetic instances, so 50 % doubles the set and
25 % adds a third. Sharing the edited masks between painters isolates the painter, which is what the table compares.

Example:
    >>> # real = SliceSet(image, label, brain, z, subject_ids, sequences)
    >>> # ds = build_arm("copy_paste", real, seed=0)
    >>> # len(ds) == 2 * len(real)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from samraug.labels import BACKGROUND, LESION_CLASSES

__all__ = [
    "ARMS",
    "ArmSpec",
    "ConventionalDataset",
    "EditedMasks",
    "MixedDataset",
    "SliceSet",
    "carve_mix",
    "conventional_pool",
    "conventional_transform",
    "copy_paste_pool",
    "edited_mask_pool",
    "generator_pool",
    "labels_to_image",
    "labels_to_image_pool",
    "n_synthetic",
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
        # SAMR local joins with one line once the library's local painter is merged:
        # ArmSpec("samr_local_50", "+ SAMR local (50 %)", "generator", 0.5, "samr", group="SAMR", mode="local"),
        ArmSpec(
            "control", "Real + the generator's training subjects (control)", "control", group="Control: SAMR's labels"
        ),
        ArmSpec("real_full", "Real only, all training subjects", "real", group="Data fraction", fraction=1.0),
        ArmSpec("samr_50_full", "+ SAMR (50 %), all training subjects", "generator", 0.5, "samr", "Data fraction", 1.0),
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


# ---------------------------------------------------------------------------------------------------- copy-paste
def carve_mix(
    recipient_image: torch.Tensor,
    recipient_label: torch.Tensor,
    donor_image: torch.Tensor,
    donor_label: torch.Tensor,
    margin: float = 3.0,
    recipient_brain: torch.Tensor | None = None,
    donor_brain: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CarveMix-style copy-paste: carve the donor's lesion plus ``margin`` pixels of surrounding tissue, label AND
    image content, into the recipient at the same position.

    The carved region is the donor's lesion (SAMR classes 2-4) grown by ``margin`` pixels (Euclidean), restricted
    outside the lesion to where both slices are brain (so no background is pasted over brain or the reverse). Inside
    it the recipient takes the donor's labels and intensities; outside it nothing changes.

    Args:
        recipient_image, donor_image: ``(n, H, W)`` images (same normalisation).
        recipient_label, donor_label: ``(H, W)`` SAMR class maps.
        margin: Growth of the carved region around the donor lesion, in pixels (>= 0).
        recipient_brain, donor_brain: ``(H, W)`` bool brain masks (default: label > 0).

    Returns:
        ``(image, label, region)``: the mixed image and label and the carved region (bool ``(H, W)``).

    Example:
        >>> lab = torch.zeros(8, 8, dtype=torch.long); lab[1:7, 1:7] = 1
        >>> don = lab.clone(); don[3:5, 3:5] = 4
        >>> img, out, region = carve_mix(torch.zeros(1, 8, 8), lab, torch.ones(1, 8, 8), don, margin=0)
        >>> int((out == 4).sum()), float(img[0, 3, 3]), int(region.sum())
        (4, 1.0, 4)
    """
    if recipient_image.shape != donor_image.shape or recipient_label.shape != donor_label.shape:
        raise ValueError(
            f"recipient ({tuple(recipient_image.shape)}, {tuple(recipient_label.shape)}) and donor "
            f"({tuple(donor_image.shape)}, {tuple(donor_label.shape)}) must have the same shapes"
        )
    if recipient_image.shape[-2:] != recipient_label.shape:
        raise ValueError(
            f"image {tuple(recipient_image.shape)} and label {tuple(recipient_label.shape)} differ in size"
        )
    if not margin >= 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number of pixels >= 0, got {margin}")
    rb = recipient_label > BACKGROUND if recipient_brain is None else recipient_brain.bool()
    db = donor_label > BACKGROUND if donor_brain is None else donor_brain.bool()
    lesion = (donor_label >= min(LESION_CLASSES)).cpu().numpy()
    if margin > 0 and lesion.any():
        dist = ndimage.distance_transform_edt(~lesion)
        grown = torch.from_numpy(dist <= margin)
    else:
        grown = torch.from_numpy(lesion)
    lesion_t = torch.from_numpy(lesion)
    region = (lesion_t | (grown & rb.cpu() & db.cpu())).to(recipient_label.device)
    label = torch.where(region, donor_label, recipient_label)
    image = torch.where(region.unsqueeze(0), donor_image, recipient_image)
    return image, label, region


def copy_paste_pool(
    real: SliceSet, n: int, seed: int, max_margin: float = 4.0, max_dz: int = 2
) -> tuple[SliceSet, set[str]]:
    """``n`` CarveMix-style instances from ``real`` (all of whose subjects must be training subjects).

    Each instance: a random lesion-bearing donor slice, a recipient slice of ANOTHER subject within ``max_dz``
    slices of the donor's ``z`` (any other subject's slice if none is that close), and a margin drawn uniformly from
    [0, ``max_margin``] pixels. Returns the pool and the set of donor subject ids (for the split check).

    Example:
        >>> # pool, donors = copy_paste_pool(real_train, n=len(real_train), seed=0)
    """
    if n == 0:
        return real.subset([]), set()
    g = torch.Generator().manual_seed(seed)
    lesion_idx = torch.nonzero(real.has_lesion).flatten()
    if len(lesion_idx) == 0:
        raise ValueError("copy-paste needs lesion-bearing training slices as donors; none found in the training set")
    if len(real.subjects) < 2:
        raise ValueError("copy-paste needs at least two training subjects (donor and recipient must differ)")
    subj = np.asarray(real.subject_ids)
    z = real.z
    images, labels, brains, zs, ids, origin = [], [], [], [], [], []
    donors: set[str] = set()
    for _ in range(n):
        d = int(lesion_idx[torch.randint(len(lesion_idx), (1,), generator=g)])
        other = torch.from_numpy(subj != subj[d])
        close = other & ((z - z[d]).abs() <= max_dz)
        cand = torch.nonzero(close if close.any() else other).flatten()
        r = int(cand[torch.randint(len(cand), (1,), generator=g)])
        margin = float(torch.rand((), generator=g)) * max_margin
        image, label, region = carve_mix(
            real.image[r], real.label[r], real.image[d], real.label[d], margin, real.brain[r], real.brain[d]
        )
        images.append(image)
        labels.append(label)
        brains.append(torch.where(region, real.brain[d], real.brain[r]))
        zs.append(int(z[r]))
        ids.append(real.subject_ids[r])
        donors.add(real.subject_ids[d])
        origin.append(
            {"op": "copy_paste", "recipient": r, "donor": d, "donor_subject": real.subject_ids[d], "margin": margin}
        )
    pool = SliceSet(
        torch.stack(images), torch.stack(labels), torch.stack(brains), torch.tensor(zs), ids, real.sequences, origin
    )
    return pool, donors


# ---------------------------------------------------------------------------------------------------- edited masks
@dataclass
class EditedMasks:
    """A pool of edited 2D masks shared by every painter (RandomLabelsToImage, SAMR, ablations, baselines).

    Attributes:
        label: ``(N, H, W)`` int64 edited SAMR class maps.
        brain: ``(N, H, W)`` bool brain masks (the recipient's brain; edits stay inside it).
        z: ``(N,)`` axial index of the recipient slice (for the atlas stack).
        subject_ids: Recipient subject of each mask.
        records: The editor's record of each edit (operations and parameters).
        donor_ids: Subjects whose lesions were used as donors.
    """

    label: torch.Tensor
    brain: torch.Tensor
    z: torch.Tensor
    subject_ids: list[str]
    records: list[dict[str, Any]]
    donor_ids: set[str]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def head(self, n: int) -> EditedMasks:
        """The first ``n`` masks (the 25 % arm uses the head of the 50 % pool: same masks, fewer of them)."""
        if n > len(self):
            raise ValueError(f"asked for {n} masks from a pool of {len(self)}")
        return EditedMasks(
            self.label[:n], self.brain[:n], self.z[:n], self.subject_ids[:n], self.records[:n], set(self.donor_ids)
        )


def edited_mask_pool(
    real: SliceSet,
    n: int,
    seed: int,
    editor: Any | None = None,
    n_donors: int = 8,
    max_dz: int = 2,
) -> EditedMasks:
    """``n`` masks made by editing real training masks with :meth:`samraug.editing.LesionEditor.random_edit`.

    Each mask: a uniformly drawn real slice (the recipient), edited by the random policy with up to ``n_donors``
    lesion-bearing slices of OTHER training subjects within ``max_dz`` slices as swap donors (all slices share one
    grid, so a donor lesion lands at its own anatomical position). Every donor comes from ``real``, i.e. from the
    training split; the offered donors' subjects are returned in ``donor_ids`` for the protocol check.

    Example:
        >>> # masks = edited_mask_pool(real_train, n=len(real_train), seed=0)
    """
    from samraug.editing import LesionEditor, donor_of

    editor = editor if editor is not None else LesionEditor("samr", min_fragment=5)
    h, w = real.label.shape[-2:]
    if n == 0:
        return EditedMasks(
            torch.zeros(0, h, w, dtype=torch.long),
            torch.zeros(0, h, w, dtype=torch.bool),
            torch.zeros(0, dtype=torch.long),
            [],
            [],
            set(),
        )
    g = torch.Generator().manual_seed(seed)
    subj = np.asarray(real.subject_ids)
    lesion = real.has_lesion
    labels, records, zs, ids = [], [], [], []
    donor_ids: set[str] = set()
    for _ in range(n):
        r = int(torch.randint(len(real), (1,), generator=g))
        cand = torch.nonzero(
            lesion & torch.from_numpy(subj != subj[r]) & ((real.z - real.z[r]).abs() <= max_dz)
        ).flatten()
        if len(cand) > n_donors:
            cand = cand[torch.randperm(len(cand), generator=g)[:n_donors]]
        donors = [(real.label[int(d)], real.brain[int(d)]) for d in cand]
        res = editor.random_edit(real.label[r], real.brain[r], donors=donors or None, generator=g)
        labels.append(torch.as_tensor(res.label).long())
        donor = donor_of(res.record)
        used = [real.subject_ids[int(cand[donor])]] if donor is not None else []
        donor_ids.update(real.subject_ids[int(d)] for d in cand)
        records.append(
            {"recipient": r, "recipient_subject": real.subject_ids[r], "donor_subjects": used, "edit": res.record}
        )
        zs.append(int(real.z[r]))
        ids.append(real.subject_ids[r])
    label = torch.stack(labels)
    brain = real.brain[[rec["recipient"] for rec in records]] | (label > BACKGROUND)
    return EditedMasks(label, brain, torch.tensor(zs), ids, records, donor_ids)


def generator_pool(masks: EditedMasks, synthesizer: Any, sequences: tuple[str, ...]) -> SliceSet:
    """Paint ``masks`` with a generator (:meth:`samraug.synthesis.Synthesizer.synthesize_slices`, batched, with the
    weights' atlas slices at each mask's ``z``); outside the brain the images are set to the background value -1,
    like real normalised images. Images stay in the model's normalised range [-1, 1]."""
    from samraug.intensity import BACKGROUND_VALUE

    if tuple(synthesizer.sequences) != tuple(sequences):
        raise ValueError(
            f"the generator makes {list(synthesizer.sequences)}, the segmenter uses {list(sequences)}; they must match"
        )
    if len(masks) == 0:
        return _empty_like(masks, sequences)
    images = synthesizer.synthesize_slices(masks.label, z=masks.z)
    images = torch.where(masks.brain.unsqueeze(1), images.clamp(-1.0, 1.0), torch.full_like(images, BACKGROUND_VALUE))
    return _painted(masks, images, sequences, "generator")


# ---------------------------------------------------------------------------------------------------- labels -> image
def labels_to_image(
    label: torch.Tensor, brain: torch.Tensor, n_sequences: int, blur_std: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """Paint a SAMR class map with ``tio.RandomLabelsToImage`` (one draw per sequence) and normalise it.

    Each sequence gets a random Gaussian intensity per class (TorchIO defaults: mean U(0.1, 0.9), std
    U(0.01, 0.1)), a random Gaussian blur (``tio.RandomBlur``), then the library's robust normalisation inside
    ``brain`` ([-1, 1], background -1). Randomness comes from torch's global generator.

    Returns:
        ``(n_sequences, H, W)`` float32.

    Example:
        >>> lab = torch.zeros(16, 16, dtype=torch.long); lab[2:14, 2:14] = 1; lab[6:9, 6:9] = 4
        >>> labels_to_image(lab, lab > 0, 2).shape
        torch.Size([2, 16, 16])
    """
    import torchio as tio

    from samraug.intensity import robust_normalize

    if not brain.any():
        raise ValueError("labels_to_image: the brain mask is empty; cannot normalise the painted image")
    subject = tio.Subject(label=tio.LabelMap(tensor=label.view(1, *label.shape, 1).to(torch.int16)))
    paint = tio.Compose([tio.RandomLabelsToImage(label_key="label", image_key="t"), tio.RandomBlur(std=blur_std)])
    out = []
    for _ in range(n_sequences):
        painted = paint(subject)["t"].data[0, ..., 0].float()
        x, _ = robust_normalize(painted, brain)
        out.append(x)
    return torch.stack(out)


def labels_to_image_pool(masks: EditedMasks, sequences: tuple[str, ...], seed: int) -> SliceSet:
    """Paint every mask of ``masks`` with :func:`labels_to_image` (seeded)."""
    if len(masks) == 0:
        return _empty_like(masks, sequences)
    with _seeded(seed):
        images = torch.stack(
            [labels_to_image(lab, b, len(sequences)) for lab, b in zip(masks.label, masks.brain, strict=True)]
        )
    return _painted(masks, images, sequences, "labels_to_image")


def _painted(masks: EditedMasks, images: torch.Tensor, sequences: tuple[str, ...], painter: str) -> SliceSet:
    """A slice set of ``images`` painted for the edited ``masks`` (labels, brains and records copied)."""
    return SliceSet(
        images,
        masks.label.clone(),
        masks.brain.clone(),
        masks.z.clone(),
        list(masks.subject_ids),
        sequences,
        [dict(r, painter=painter) for r in masks.records],
    )


def _empty_like(masks: EditedMasks, sequences: tuple[str, ...]) -> SliceSet:
    h, w = masks.label.shape[-2:]
    return SliceSet(
        torch.zeros(0, len(sequences), h, w),
        torch.zeros(0, h, w, dtype=torch.long),
        torch.zeros(0, h, w, dtype=torch.bool),
        torch.zeros(0, dtype=torch.long),
        [],
        sequences,
    )
