"""Export real and SAMR-synthesized cases as an nnU-Net v2 raw dataset with leak-free patient-level folds.

:func:`export_nnunet` writes ``OUT/DatasetXXX_Name/``:

- ``imagesTr/{case}_{XXXX}.nii.gz``: one file per channel (``XXXX`` = the channel's index in ``channel_names``);
- ``labelsTr/{case}.nii.gz``: the label map with consecutive values (:class:`~samraug.export.labels.NnunetLabels`);
- ``dataset.json``: ``channel_names``, ``labels`` (region-based ``WT``/``TC``/``ET`` (+``RC``) with
  ``regions_class_order`` for the BraTS schemes), ``numTraining``, ``file_ending`` and samraug's own entries;
- ``provenance.json``: for every synthetic case its source case, donor cases, edit record, weights and seed;
- ``splits_final.json``: k folds split by patient; validation folds hold only real cases, and a fold never trains
  on a synthetic case whose source or donor patient is in its validation fold. The same file is written to
  ``PREPROCESSED/DatasetXXX_Name/splits_final.json``, where nnU-Net reads it (otherwise it draws random folds);
- ``.samraug/``: the export's manifest (its arguments, to resume or refuse) and one record per finished case.

Synthetic cases are made through the public TorchIO transform :class:`~samraug.transforms.SAMRSynthesize`
(``ratio=1``): the source's lesion mask is edited (donors for lesion swaps come from the source's own fold, so a
synthetic case is excluded from at most the one fold that validates its source) and its sequences are painted in
the source's intensity scale. Each case is written under temporary names and renamed when complete; an interrupted
export resumes where it stopped. Under ``torchrun`` rank ``r`` writes cases ``r::world_size`` and rank 0 writes
``dataset.json``, the provenance and the splits once every rank is done.

Example:
    >>> from samraug.data.brats import load_brats
    >>> subjects = load_brats("/data/BraTS2021")  # doctest: +SKIP
    >>> result = export_nnunet(subjects, "/data/nnUNet_raw", dataset_id=501, name="BraTS21SAMR", per_case=2)
    ...  # doctest: +SKIP
    >>> result.dataset_dir, result.splits_paths  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torchio as tio
from tqdm.auto import tqdm

from ..data.brats import load_brats
from ..data.splits import patient_id as default_patient_id
from ..editing import donors_of
from ..labels import LabelScheme, get_scheme
from ..synthesis import Synthesizer, get_synthesizer
from ..transforms import SAMRSynthesize, SAMRSynthesizeFixed
from .labels import NnunetLabels

__all__ = [
    "BRATS2021_SEQUENCE_MAP",
    "ExportResult",
    "check_splits_leak_free",
    "export_nnunet",
    "make_splits",
    "plan_cases",
]

FILE_ENDING = ".nii.gz"
WORK_DIR = ".samraug"
MANIFEST = "manifest.json"
PROVENANCE = "provenance.json"
SPLITS = "splits_final.json"
#: BraTS 2021 file suffixes for the model's sequence names (used when the subjects have these keys).
BRATS2021_SEQUENCE_MAP: Mapping[str, str] = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------- plain helpers
def _write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temporary name in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); remove it or export again with overwrite=True") from None


def _case_seed(seed: int, case: str, j: int) -> int:
    digest = hashlib.sha256(f"samraug-export:{seed}:{case}:{j}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class CasePlan:
    """One output case: a real case (``j is None``) or the ``j``-th synthetic case made from ``source``."""

    name: str
    source: str
    patient: str
    j: int | None = None
    seed: int | None = None

    @property
    def synthetic(self) -> bool:
        return self.j is not None


def plan_cases(
    sources: Sequence[str],
    patients: Sequence[str],
    *,
    per_case: int = 0,
    n_synthetic: int | None = None,
    seed: int = 0,
) -> list[CasePlan]:
    """Every output case, in writing order: each real case followed by its synthetic ones.

    ``per_case`` synthetic cases per real case, or ``n_synthetic`` in total (the first ``n_synthetic % n`` real
    cases get one more). Synthetic case ``j`` of ``CASE`` is named ``CASE-synthJJJ``.

    Example:
        >>> [c.name for c in plan_cases(["a", "b"], ["a", "b"], n_synthetic=3)]
        ['a', 'a-synth000', 'a-synth001', 'b', 'b-synth000']
    """
    n = len(sources)
    if n_synthetic is not None and per_case:
        raise ValueError("pass per_case (synthetic cases per real case) or n_synthetic (in total), not both")
    if per_case < 0 or (n_synthetic is not None and n_synthetic < 0):
        raise ValueError(f"per_case and n_synthetic must be >= 0, got {per_case} and {n_synthetic}")
    counts = [per_case] * n if n_synthetic is None else [n_synthetic // n + (i < n_synthetic % n) for i in range(n)]
    out: list[CasePlan] = []
    for src, pat, k in zip(sources, patients, counts, strict=True):
        out.append(CasePlan(src, src, pat))
        out.extend(CasePlan(f"{src}-synth{j:03d}", src, pat, j, _case_seed(seed, src, j)) for j in range(k))
    return out


def _patient_folds(patients: Iterable[str], folds: int, seed: int) -> dict[str, int]:
    unique = sorted(set(patients))
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if len(unique) < folds:
        raise ValueError(f"{folds} folds need at least {folds} patients, got {len(unique)}; pass fewer folds (--folds)")
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[int(p)]: i % folds for i, p in enumerate(order)}


def make_splits(
    real: Mapping[str, str],
    synthetic: Mapping[str, Mapping[str, Any]],
    *,
    folds: int = 5,
    seed: int = 0,
    fold_of: Mapping[str, int] | None = None,
) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json``: ``folds`` folds by patient, validation real-only and leak-free.

    Args:
        real: ``{case: patient}`` of the real cases.
        synthetic: ``{case: provenance}`` of the synthetic cases; each provenance names ``source_patient`` and
            ``donor_patients`` (the patients whose masks went into it).
        folds, seed: Number of folds and the seed of the patient shuffle.
        fold_of: ``{patient: fold}`` to use instead of drawing one (the export fixes it before painting).

    Example:
        >>> real = {"a": "a", "b": "b"}
        >>> syn = {"a-synth000": {"source_patient": "a", "donor_patients": []}}
        >>> make_splits(real, syn, folds=2, fold_of={"a": 0, "b": 1})
        [{'train': ['b'], 'val': ['a']}, {'train': ['a', 'a-synth000'], 'val': ['b']}]
    """
    fold_of = dict(fold_of) if fold_of is not None else _patient_folds(real.values(), folds, seed)
    missing = sorted(set(real.values()) - set(fold_of))
    if missing:
        raise ValueError(f"fold_of has no fold for patients {missing[:5]}")
    splits = []
    for f in range(folds):
        val_patients = {p for p, k in fold_of.items() if k == f}
        val = sorted(c for c, p in real.items() if p in val_patients)
        train = sorted(c for c, p in real.items() if p not in val_patients)
        for case, prov in synthetic.items():
            used = {prov["source_patient"], *prov.get("donor_patients", [])}
            if not used & val_patients:
                train.append(case)
        splits.append({"train": sorted(train), "val": val})
    return splits


def check_splits_leak_free(splits: Sequence[Mapping[str, Sequence[str]]], provenance: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless every fold validates on real cases only and trains on no synthetic case made
    from a validation patient's mask (as source or donor), judged from ``provenance.json``'s content.

    Example:
        >>> prov = {"real": {"a": {"patient": "a"}, "b": {"patient": "b"}},
        ...         "synthetic": {"s": {"source_patient": "a", "donor_patients": ["b"]}}}
        >>> check_splits_leak_free([{"train": ["a"], "val": ["b"]}, {"train": ["b"], "val": ["a"]}], prov)
        >>> check_splits_leak_free([{"train": ["a", "s"], "val": ["b"]}], prov)
        Traceback (most recent call last):
        ...
        ValueError: fold 0 trains on synthetic case 's' made from validation patients ['b']
    """
    real = {c: v["patient"] for c, v in provenance["real"].items()}
    synthetic = provenance["synthetic"]
    for f, split in enumerate(splits):
        val, train = list(split["val"]), list(split["train"])
        unknown = sorted(set(val + train) - set(real) - set(synthetic))
        if unknown:
            raise ValueError(f"fold {f} names cases {unknown[:5]} that are not in the provenance")
        fake = sorted(set(val) & set(synthetic))
        if fake:
            raise ValueError(f"fold {f} validates on synthetic cases {fake[:5]}")
        val_patients = {real[c] for c in val}
        for c in train:
            if c in real and real[c] in val_patients:
                raise ValueError(f"fold {f} trains on {c!r} of validation patient {real[c]!r}")
            if c in synthetic:
                used = {synthetic[c]["source_patient"], *synthetic[c].get("donor_patients", [])}
                if used & val_patients:
                    raise ValueError(
                        f"fold {f} trains on synthetic case {c!r} made from validation patients "
                        f"{sorted(used & val_patients)}"
                    )


# ---------------------------------------------------------------------------------------------- subjects
def _subject_id(subject: tio.Subject, i: int) -> str:
    sid = subject.get("subject_id")
    if sid is None:
        raise ValueError(f"subject #{i} has no 'subject_id'; set subject['subject_id'] (used as the case name)")
    sid = str(sid)
    if not _CASE.match(sid) or re.search(r"_\d{4}$", sid):
        raise ValueError(
            f"subject #{i}: case name {sid!r} is not usable by nnU-Net (letters, digits, '_', '-', '.'; no trailing "
            "'_XXXX' which nnU-Net reads as a channel index); rename its subject_id"
        )
    return sid


def _image_keys(subject: tio.Subject, label_key: str) -> list[str]:
    return [k for k, v in subject.items() if isinstance(v, tio.ScalarImage) and k != label_key]


def _resolve_scheme(subjects: Sequence[tio.Subject], scheme: str | LabelScheme | None) -> LabelScheme:
    if scheme is not None:
        return get_scheme(scheme)
    declared = {s.get("scheme") for s in subjects}
    if None in declared or len(declared) != 1:
        raise ValueError(
            f"the subjects declare label schemes {sorted(map(str, declared))}; pass scheme= (e.g. 'brats2021': "
            "label 4 is ET in BraTS 2021 and the resection cavity in BraTS 2024)"
        )
    return get_scheme(declared.pop())


def _sequence_map(channels: Sequence[str], model_sequences: Sequence[str], given: Mapping[str, str] | None) -> dict:
    """``{model_sequence: subject_key}`` covering every exported channel, or a ``ValueError`` naming the gap."""
    if given is not None:
        mapping = {str(k): str(v) for k, v in given.items()}
    else:
        mapping = {}
        for s in model_sequences:
            if s in channels:
                mapping[s] = s
            elif BRATS2021_SEQUENCE_MAP.get(s) in channels:
                mapping[s] = BRATS2021_SEQUENCE_MAP[s]
    unknown = sorted(set(mapping) - set(model_sequences))
    if unknown:
        raise ValueError(f"sequence_map names {unknown}, which the model does not make (it makes {model_sequences})")
    unpainted = [c for c in channels if c not in mapping.values()]
    if unpainted:
        raise ValueError(
            f"the model makes {list(model_sequences)} but the channels {unpainted} would stay real in the synthetic "
            "cases (not matching the edited mask); map them with sequence_map={'t1c': 't1ce', ...} or export only "
            "the painted channels with sequences=[...]"
        )
    return {k: v for k, v in mapping.items() if v in channels}


# ---------------------------------------------------------------------------------------------- writing
def _image_array(image: tio.Image) -> tuple[np.ndarray, np.ndarray]:
    data = image.data
    if data.shape[0] != 1:
        raise ValueError(f"image {image.path or ''} has {data.shape[0]} channels; export one channel per image")
    return data[0].numpy(), np.asarray(image.affine, dtype=np.float64)


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    nib.save(img, str(path))


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial{os.getpid()}{FILE_ENDING}")


def _case_files(root: Path, name: str, n_channels: int) -> list[Path]:
    return [root / "imagesTr" / f"{name}_{c:04d}{FILE_ENDING}" for c in range(n_channels)] + [
        root / "labelsTr" / f"{name}{FILE_ENDING}"
    ]


def _record_path(root: Path, name: str) -> Path:
    return root / WORK_DIR / "cases" / f"{name}.json"


def _is_done(root: Path, name: str, n_channels: int) -> bool:
    return _record_path(root, name).is_file() and all(p.is_file() for p in _case_files(root, name, n_channels))


def _write_case(
    root: Path, name: str, images: Sequence[tuple[np.ndarray, np.ndarray]], label: np.ndarray, record: dict
) -> None:
    """All files of a case under temporary names first, then renamed; the case record (its completion mark) last."""
    finals = _case_files(root, name, len(images))
    temps = [_temp_path(p) for p in finals]
    try:
        for (arr, aff), tmp in zip(images, temps, strict=False):
            _save_nifti(np.asarray(arr, dtype=np.float32), aff, tmp)
        _save_nifti(label.astype(np.uint8), images[0][1], temps[-1])
        for tmp, final in zip(temps, finals, strict=True):
            os.replace(tmp, final)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    _write_json(_record_path(root, name), record)


# ---------------------------------------------------------------------------------------------- distributed
def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _dist()[1] > 1:
        torch.distributed.barrier()


def _agree(error: str | None) -> None:
    """Share rank 0's error (if any) with every rank, so that all raise it instead of waiting for each other."""
    if _dist()[1] > 1:
        box = [error]
        torch.distributed.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise ValueError(error)


# ---------------------------------------------------------------------------------------------- result
@dataclass
class ExportResult:
    """What :func:`export_nnunet` wrote (paths are absolute)."""

    dataset_dir: Path
    dataset_json: Path
    provenance: Path
    splits_paths: list[Path]
    n_real: int
    n_synthetic: int
    written: int
    skipped: int
    channel_names: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"wrote nnU-Net dataset {self.dataset_dir} ({self.n_real} real + {self.n_synthetic} synthetic cases; "
            f"{self.written} written now, {self.skipped} already done)",
            f"channels: {self.channel_names}",
            f"provenance: {self.provenance}",
        ]
        for p in self.splits_paths:
            lines.append(f"splits_final.json: {p}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- export
def _weights_digest(synth: Any) -> str:
    h = hashlib.sha256()
    for key, value in sorted(synth.model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _dataset_dir(out: Path, dataset_id: int, name: str) -> Path:
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset_id must be in 1..999 (nnU-Net's DatasetXXX), got {dataset_id}")
    if not _NAME.match(name):
        raise ValueError(f"dataset name {name!r} must be letters, digits, '_' or '-' (it becomes DatasetXXX_{name})")
    return out / f"Dataset{int(dataset_id):03d}_{name}"


def _clashing(parent: Path | None, folder: str, dataset_id: int) -> list[Path]:
    if parent is None or not parent.is_dir():
        return []
    return [p for p in parent.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder]


def export_nnunet(
    subjects: Sequence[tio.Subject] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dataset_id: int,
    name: str,
    scheme: str | LabelScheme | None = None,
    sequences: Sequence[str] | None = None,
    per_case: int = 0,
    n_synthetic: int | None = None,
    folds: int = 5,
    seed: int = 0,
    weights: Any = None,
    policy: Any = None,
    donors_per_case: int = 4,
    sequence_map: Mapping[str, str] | None = None,
    transform_kwargs: Mapping[str, Any] | None = None,
    region_based: bool | None = None,
    label_key: str = "seg",
    preprocessed_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    device: str = "auto",
    patient_of: Callable[[str], str] = default_patient_id,
    progress: bool = True,
) -> ExportResult:
    """Write real and synthetic cases as ``OUT/DatasetXXX_Name/`` for nnU-Net v2 (see the module docstring).

    Args:
        subjects: ``tio.Subject``s (each with ``subject_id``, the images and ``label_key``) or a BraTS folder
            (2021 / 2023 / 2024 layouts, read by :func:`samraug.data.brats.load_brats`).
        out: The nnU-Net raw folder (e.g. ``$nnUNet_raw``); the dataset goes to ``OUT/DatasetXXX_Name``.
        dataset_id, name: nnU-Net's dataset id (1-999) and name.
        scheme: Label scheme of the subjects; default: their ``scheme`` attribute (must agree).
        sequences: Channels, in order (subject keys); default: the first subject's scalar images in its order.
        per_case / n_synthetic: Synthetic cases per real case, or in total (not both).
        folds, seed: Number of cross-validation folds; seed of the fold draw and of every synthetic case.
        weights: SAMR weights for :class:`~samraug.transforms.SAMRSynthesize` (None: the bundled demo weights, local
            mode; a folder; ``org/name[@rev]``; a :class:`~samraug.synthesis.Synthesizer`).
        policy: An :class:`~samraug.editing.EditPolicy` (edit probabilities and ranges) for the transform.
        donors_per_case: Size of the donor pool of lesion swaps: real cases from the source's own fold (0: none).
        sequence_map: ``{model_sequence: subject_key}``; default: same names, or BraTS 2021's ``t1, t1ce, t2,
            flair``. Every exported channel must be painted.
        transform_kwargs: Further keyword arguments of ``SAMRSynthesize`` (e.g. ``brain_key``, ``dtype``).
        region_based: ``dataset.json`` with BraTS regions (default for the BraTS schemes) or plain labels.
        label_key: Key of the label map in the subjects.
        preprocessed_dir: nnU-Net's preprocessed folder (default ``$nnUNet_preprocessed``); the splits also go to
            ``PREPROCESSED/DatasetXXX_Name/splits_final.json``. None and no variable: only beside the raw data.
        overwrite: Replace an existing dataset folder made with other arguments (default: refuse; the same
            arguments resume it).
        device: Where the generator runs (``"auto"``: CUDA when available; under torchrun, this rank's GPU).
        patient_of: Patient of a case id (default: BraTS ``BraTS-GLI-XXXXX-YYY`` -> ``BraTS-GLI-XXXXX``).
        progress: Show a tqdm progress bar.

    Returns:
        An :class:`ExportResult` (on every rank).
    """
    rank, world = _dist()
    if world > 1 and device == "auto" and torch.cuda.is_available():  # torchrun: one GPU per process
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    if isinstance(subjects, (str, os.PathLike)):
        subjects = load_brats(subjects, scheme=scheme)
    subjects = list(subjects)
    if not subjects:
        raise ValueError("no subjects to export")
    out = Path(out).expanduser().resolve()
    root = _dataset_dir(out, dataset_id, name)
    if preprocessed_dir is None and os.environ.get("nnUNet_preprocessed"):
        preprocessed_dir = os.environ["nnUNet_preprocessed"]
    pre = None if preprocessed_dir is None else Path(preprocessed_dir).expanduser().resolve()

    # ---- validate everything before writing anything
    case_ids = [_subject_id(s, i) for i, s in enumerate(subjects)]
    dup = sorted({c for c in case_ids if case_ids.count(c) > 1})
    if dup:
        raise ValueError(f"duplicate subject_id values {dup[:5]}; every case needs its own name")
    label_scheme = _resolve_scheme(subjects, scheme)
    labels = NnunetLabels.from_scheme(label_scheme, region_based=region_based)
    channels = list(sequences) if sequences is not None else _image_keys(subjects[0], label_key)
    if not channels:
        raise ValueError("the subjects have no scalar images to export; pass sequences=[...]")
    for i, s in enumerate(subjects):
        missing = [k for k in [*channels, label_key] if k not in s]
        if missing:
            raise ValueError(f"subject {case_ids[i]!r} lacks {missing} (has {list(s.keys())}); pass sequences=[...]")
    patients = [str(patient_of(c)) for c in case_ids]
    plan = plan_cases(case_ids, patients, per_case=per_case, n_synthetic=n_synthetic, seed=seed)
    fold_of = _patient_folds(patients, folds, seed)
    n_syn = sum(c.synthetic for c in plan)
    if donors_per_case < 0:
        raise ValueError(f"donors_per_case must be >= 0, got {donors_per_case}")

    synth = None
    mapping: dict[str, str] = {}
    weights_info: dict[str, Any] | None = None
    if n_syn:
        synth = weights if isinstance(weights, Synthesizer) else get_synthesizer(weights, device=device)
        mapping = _sequence_map(channels, synth.sequences, sequence_map)
        first = subjects[0][label_key]
        if synth.config.get("mode", "whole") == "whole":  # local-mode weights have no atlas: any grid
            synth.atlas.check_grid(first.shape, first.affine, f"subject {case_ids[0]!r}")
        weights_info = {"weights": synth.key, "sha256": _weights_digest(synth), "sequences": list(synth.sequences)}
    policy_plain = dataclasses.asdict(policy) if dataclasses.is_dataclass(policy) else policy
    manifest = {
        "format": 1,
        "dataset": root.name,
        "cases": [dataclasses.asdict(c) for c in plan],
        "channels": channels,
        "labels": labels.to_plain(),
        "folds": int(folds),
        "seed": int(seed),
        "fold_of": fold_of,
        "weights": weights_info,
        "policy": policy_plain,
        "donors_per_case": int(donors_per_case),
        "sequence_map": mapping,
        "transform_kwargs": {str(k): repr(v) for k, v in (transform_kwargs or {}).items()},
        "label_key": label_key,
    }

    # ---- refuse, resume or start (rank 0 decides, every rank follows)
    error = None
    if rank == 0:
        clash = _clashing(out, root.name, dataset_id) + _clashing(pre, root.name, dataset_id)
        manifest_path = root / WORK_DIR / MANIFEST
        if clash:
            error = (
                f"dataset id {dataset_id} is already used by {[str(p) for p in clash]}; nnU-Net finds datasets by id, "
                "so pick another --dataset-id"
            )
        elif root.exists() and not overwrite:
            if not manifest_path.is_file():
                error = f"{root} exists and was not written by samraug export; pass overwrite=True (--overwrite)"
            elif _read_json(manifest_path) != json.loads(json.dumps(manifest)):
                error = (
                    f"{root} holds an export made with other arguments (see {manifest_path}); pass overwrite=True "
                    "(--overwrite) to replace it, or repeat the original arguments to resume it"
                )
        elif (
            pre is not None
            and (pre / root.name / SPLITS).is_file()
            and not overwrite
            and not (manifest_path.is_file() and _read_json(manifest_path) == json.loads(json.dumps(manifest)))
        ):
            error = (
                f"{pre / root.name / SPLITS} exists from another export or nnU-Net run; pass overwrite=True "
                "(--overwrite) to replace it"
            )
        if error is None:
            if (
                root.exists()
                and overwrite
                and (not manifest_path.is_file() or _read_json(manifest_path) != json.loads(json.dumps(manifest)))
            ):
                shutil.rmtree(root)
            for sub in ("imagesTr", "labelsTr", f"{WORK_DIR}/cases"):
                (root / sub).mkdir(parents=True, exist_ok=True)
                for stale in (root / sub).glob(".*.partial*"):  # left by an interrupted run
                    stale.unlink()
            _write_json(manifest_path, manifest)
    _agree(error)
    _barrier()

    # ---- this rank's share
    by_id = dict(zip(case_ids, subjects, strict=True))
    mine = plan[rank::world]
    transforms: dict[int, Any] = {}
    written = skipped = 0
    bar = tqdm(mine, desc=f"export rank {rank}" if world > 1 else "export", disable=not progress, unit="case")
    for case in bar:
        if _is_done(root, case.name, len(channels)):
            skipped += 1
            continue
        subject = by_id[case.source]
        if not case.synthetic:
            images = [_image_array(subject[k]) for k in channels]
            label = labels.to_consecutive(_label_array(subject, label_key, case.name))
            record = {"case": case.name, "synthetic": False, "source": case.source, "patient": case.patient}
        else:
            fold = fold_of[case.patient]
            if fold not in transforms:
                transforms[fold] = _fold_transform(
                    fold, fold_of, case_ids, patients, by_id, synth, label_scheme, mapping, policy,
                    donors_per_case, transform_kwargs, label_key, seed,
                )  # fmt: skip
            transform, donor_ids = transforms[fold]
            images, label, record = _paint(subject, case, transform, donor_ids, channels, label_key, labels)
            record.update(patient=case.patient, source_patient=case.patient, weights=weights_info)
            record["donor_patients"] = sorted({str(patient_of(d)) for d in record["donors"]})
        _write_case(root, case.name, images, label, record)
        _unload(subject)  # images read from files are read again when needed: memory stays flat
        written += 1
    _barrier()

    # ---- rank 0: dataset.json, provenance, splits
    real = {c.name: c.patient for c in plan if not c.synthetic}
    names = [c.name for c in plan]
    records = {n: _read_json(_record_path(root, n)) for n in names} if rank == 0 else {}
    provenance = {
        "real": {n: {"patient": p, "fold": fold_of[p]} for n, p in real.items()},
        "synthetic": {n: r for n, r in records.items() if r.get("synthetic")},
    }
    splits = make_splits(real, provenance["synthetic"], folds=folds, fold_of=fold_of) if rank == 0 else []
    split_paths = [root / SPLITS] + ([pre / root.name / SPLITS] if pre is not None else [])
    channel_names = {str(i): c for i, c in enumerate(channels)}
    if rank == 0:
        check_splits_leak_free(splits, provenance)
        dataset_json = {
            "channel_names": channel_names,
            **labels.dataset_json_entries(),
            "numTraining": len(names),
            "file_ending": FILE_ENDING,
            "name": root.name,
            "description": "real and SAMR-synthesized cases exported by samraug",
            "samraug": {
                "label_scheme": label_scheme.name,
                "scheme_values": list(labels.values),
                "n_real": len(real),
                "n_synthetic": n_syn,
                "provenance": PROVENANCE,
                "splits": SPLITS,
            },
        }
        _write_json(root / PROVENANCE, provenance)
        for p in split_paths:
            _write_json(p, splits)
        _write_json(root / "dataset.json", dataset_json)
    _barrier()
    return ExportResult(
        dataset_dir=root,
        dataset_json=root / "dataset.json",
        provenance=root / PROVENANCE,
        splits_paths=split_paths,
        n_real=len(real),
        n_synthetic=n_syn,
        written=written,
        skipped=skipped,
        channel_names=channel_names,
    )


def _unload(subject: tio.Subject) -> None:
    for image in subject.get_images(intensity_only=False):
        if image.path is not None and getattr(image, "_loaded", False):
            image.unload()


def _label_array(subject: tio.Subject, label_key: str, case: str) -> np.ndarray:
    data = subject[label_key].data
    if data.shape[0] != 1:
        raise ValueError(f"case {case!r}: label map {label_key!r} has {data.shape[0]} channels, expected 1")
    return data[0].numpy()


def _fold_transform(
    fold: int,
    fold_of: Mapping[str, int],
    case_ids: Sequence[str],
    patients: Sequence[str],
    by_id: Mapping[str, tio.Subject],
    synth: Any,
    scheme: LabelScheme,
    mapping: Mapping[str, str],
    policy: Any,
    donors_per_case: int,
    transform_kwargs: Mapping[str, Any] | None,
    label_key: str,
    seed: int,
) -> tuple[Any, list[str]]:
    """The SAMRSynthesize transform of one fold: its donor pool is drawn from that fold's real cases only."""
    pool = [c for c, p in zip(case_ids, patients, strict=True) if fold_of[p] == fold]
    rng = np.random.default_rng([seed, fold])
    donor_ids = sorted(rng.choice(pool, size=min(donors_per_case, len(pool)), replace=False).tolist())
    donors = [by_id[d][label_key].data[0] for d in donor_ids] or None
    kwargs = dict(transform_kwargs or {})
    transform = SAMRSynthesize(
        ratio=1.0,
        weights=synth,
        scheme=scheme,
        label_key=label_key,
        sequence_map=dict(mapping),
        policy=policy,
        donors=donors,
        **kwargs,
    )
    return transform, donor_ids


def _paint(
    subject: tio.Subject,
    case: CasePlan,
    transform: Any,
    donor_ids: Sequence[str],
    channels: Sequence[str],
    label_key: str,
    labels: NnunetLabels,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, dict[str, Any]]:
    """One synthetic case: the public transform on a copy of the source subject, seeded for this case."""
    keep = {k: subject[k] for k in [*channels, label_key, *(["brain"] if "brain" in subject else [])]}
    copy = tio.Subject(**{k: type(v)(tensor=v.data.clone(), affine=v.affine) for k, v in keep.items()})
    copy["subject_id"] = case.source
    state = torch.random.get_rng_state()
    torch.manual_seed(int(case.seed or 0))
    try:
        painted = transform(copy)
    except ValueError as e:
        raise ValueError(f"case {case.source!r} (synthetic {case.name!r}): {e}") from None
    finally:
        torch.random.set_rng_state(state)
    fixed = [t for t in painted.get_composed_history() if isinstance(t, SAMRSynthesizeFixed)][-1]
    edit = fixed.edit
    donors = donors_of(edit) if edit else []
    images = [_image_array(painted[k]) for k in channels]
    label = labels.to_consecutive(_label_array(painted, label_key, case.name))
    record = {
        "case": case.name,
        "synthetic": True,
        "source": case.source,
        "donors": [donor_ids[d] for d in donors],
        "donor_pool": list(donor_ids),
        "edit": edit,
        "seed": fixed.seed,
        "case_seed": case.seed,
        "sequence_map": fixed.sequence_map,
    }
    return images, label, record
