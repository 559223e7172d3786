"""BraTS folders: discovery, header checks, label-scheme validation, and one ``tio.Subject`` per case.

Two layouts are recognised (``.nii.gz`` or ``.nii``):

- ``brats2021``: ``ROOT/BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``
- ``brats2023`` (BraTS 2023 and 2024, any cohort such as GLI):
  ``ROOT/BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz``

**Label scheme.** The naming gives only a default: ``brats2021`` naming -> scheme ``"brats2021"`` (4 = ET);
``brats2023`` naming -> scheme ``"brats2023"`` (3 = ET), unless the root holds a file of :data:`SCHEME_FILES`
(the phantom's ``phantom.json``) that declares ``"label_scheme"``. BraTS 2024 post-treatment data uses the same
naming but adds label 4 (resection cavity): pass ``scheme="brats2024"`` for it. The scheme is never guessed from
the data; instead every segmentation is validated against the scheme (``validate=True``), so a label 4 under
``"brats2023"`` is an error that says to pass ``scheme="brats2024"``. Labels 1-3 mean the same SAMR classes in
2023 and 2024, so the default cannot map a voxel wrongly. The scheme used is logged and stored on every subject.

**Sequences.** ``sequences=None`` takes the layout's four; extra sequences (``extra_sequences``, e.g. ``aptw``)
are added when their file exists in *every* case, so all subjects have the same keys (a warning names the cases
without it when only some have it; pass it in ``sequences`` to require it).

**Subjects.** Each ``tio.Subject`` has one ``tio.ScalarImage`` per sequence keyed by the file suffix, ``"seg"``
(``tio.LabelMap``; absent when ``require_seg=False`` and the file is missing), ``"brain"`` (``tio.LabelMap``:
voxels non-zero in any sequence, computed lazily by its reader when first accessed -- it then reads all the
sequences of the case), and the attributes ``subject_id``, ``patient_id``, ``scheme`` (the scheme's name),
``layout`` and ``case_dir``. Images stay lazy; shapes and affines of all files are checked from their NIfTI
headers at discovery (cheap), labels when ``validate=True`` (reads each segmentation once). Every file is read
by :func:`read_nifti` (nibabel), which raises on NaN/inf naming the case and file (TorchIO's default SimpleITK
reader silently turns NaN into 0); with a custom reader TorchIO reads the data (not just the header) when
``image.shape`` or ``image.affine`` is first asked for.

Example:
    >>> subjects = load_brats("/data/BraTS2021")  # doctest: +SKIP
    >>> subjects[0]["t1ce"], subjects[0]["scheme"]  # doctest: +SKIP
    (ScalarImage(...), 'brats2021')
"""

from __future__ import annotations

import functools
import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torchio as tio

from ..labels import LabelScheme, get_scheme
from ..subjects import (
    AFFINE_ATOL,
    SubjectArrays,
    _check_finite,
    _image_tensor,
    affines_match,
    format_affine,
    read_brain_mask,
    read_nifti,
    subject_arrays,
)
from .splits import patient_id

__all__ = [
    "AFFINE_ATOL",
    "LAYOUTS",
    "SCHEME_FILES",
    "SEQUENCE_ALIASES",
    "BratsCase",
    "BratsLayout",
    "SubjectArrays",
    "affines_match",
    "check_scheme_layout",
    "discover_brats",
    "format_affine",
    "label_hint",
    "layout_of_name",
    "load_brats",
    "read_brain_mask",
    "read_nifti",
    "subject_arrays",
    "validate_subject",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BratsLayout:
    """A BraTS folder naming convention."""

    name: str
    pattern: re.Pattern[str]
    separator: str
    sequences: tuple[str, ...]
    default_scheme: str
    example: str


LAYOUTS: Mapping[str, BratsLayout] = {
    "brats2021": BratsLayout(
        "brats2021",
        re.compile(r"^BraTS2021_\d+$"),
        "_",
        ("t1", "t1ce", "t2", "flair"),
        "brats2021",
        "BraTS2021_00000/BraTS2021_00000_t1.nii.gz",
    ),
    "brats2023": BratsLayout(
        "brats2023",
        re.compile(r"^BraTS-[A-Za-z]+-\d+-\d+$"),
        "-",
        ("t1n", "t1c", "t2w", "t2f"),
        "brats2023",
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz",
    ),
}

_EXTENSIONS = (".nii.gz", ".nii")
_RESERVED = ("seg", "brain")

#: The same four MR contrasts under their BraTS 2023/2024 names (keys) and BraTS 2021 names (values).
SEQUENCE_ALIASES: Mapping[str, str] = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}


def layout_of_name(name: str) -> str | None:
    """The BraTS naming convention (``"brats2021"`` or ``"brats2023"``) a case id or file suffix belongs to.

    Case ids match the layouts' folder patterns (``BraTS2021_00000``, ``BraTS-GLI-00000-000``); sequence suffixes
    are the 2021 names (``t1ce``, ``flair``, ...) or the 2023/2024 names (``t1c``, ``t2f``, ...). None if neither.

    Example:
        >>> layout_of_name("BraTS2021_00012"), layout_of_name("t2f"), layout_of_name("case7")
        ('brats2021', 'brats2023', None)
    """
    for layout in LAYOUTS.values():
        if layout.pattern.match(name) or name in layout.sequences:
            return layout.name
    return None


def check_scheme_layout(
    scheme: str | LabelScheme, layout: str | None, where: str, *, arg: str = "scheme", hint: str = ""
) -> None:
    """Refuse a label scheme that contradicts a BraTS naming convention.

    BraTS 2021 names (``BraTS2021_*`` cases, ``t1ce``/``flair`` files) come with the ``brats2021`` labels
    (4 = enhancing tumour); BraTS 2023/2024 names with ``brats2023`` (3 = ET) or ``brats2024`` (3 = ET,
    4 = resection cavity). ``where`` names what showed the convention, ``arg`` the argument that gives the scheme,
    ``hint`` how to override.

    Example:
        >>> check_scheme_layout("brats2024", "brats2021", "case 'BraTS2021_00001'")
        Traceback (most recent call last):
        ...
        ValueError: scheme 'brats2024' contradicts the BraTS 2021 naming of case 'BraTS2021_00001': ...
    """
    name = get_scheme(scheme).name
    if layout == "brats2021" and name in ("brats2023", "brats2024"):
        raise ValueError(
            f"scheme {name!r} contradicts the BraTS 2021 naming of {where}: BraTS 2021 data uses scheme "
            f"'brats2021' (4 = enhancing tumour; under {name!r} label 4 would be read as "
            f"{'resection cavity' if name == 'brats2024' else 'invalid'}); pass {arg} brats2021{hint}"
        )
    if layout == "brats2023" and name == "brats2021":
        raise ValueError(
            f"scheme 'brats2021' contradicts the BraTS 2023/2024 naming of {where}: that data uses scheme "
            "'brats2023' (3 = enhancing tumour) or 'brats2024' (3 = ET, 4 = resection cavity; under 'brats2021' "
            f"label 4 would be read as enhancing tumour); pass {arg} brats2023 or brats2024{hint}"
        )


@dataclass
class BratsCase:
    """One case folder: its id, layout, and the file of each sequence (and of the segmentation)."""

    case_id: str
    layout: str
    directory: Path
    images: dict[str, Path]
    seg: Path | None
    shape: tuple[int, int, int] = (0, 0, 0)
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))

    @property
    def patient_id(self) -> str:
        """The patient of this case (time points of one patient share it)."""
        return patient_id(self.case_id)


def _files_by_suffix(case_dir: Path, case_id: str, sep: str) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    prefix = case_id + sep
    for p in sorted(case_dir.iterdir()):
        if not p.is_file() or not p.name.startswith(prefix):
            continue
        for ext in _EXTENSIONS:
            if p.name.endswith(ext):
                found.setdefault(p.name[len(prefix) : -len(ext)], []).append(p)
                break
    return found


def _header(path: Path, case_id: str) -> tuple[tuple[int, ...], np.ndarray]:
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for broken files
        raise ValueError(f"case {case_id!r}: cannot read {path} as NIfTI ({e}); re-export or remove the file") from e
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"case {case_id!r}: {path} has shape {shape}; expected a 3D volume (one channel per file)")
    return shape, np.asarray(img.affine, dtype=np.float64)


def _check_headers(case: BratsCase) -> None:
    files = [*case.images.values(), *([case.seg] if case.seg is not None else [])]
    ref = files[0]
    ref_shape, ref_affine = _header(ref, case.case_id)
    for p in files[1:]:
        shape, affine = _header(p, case.case_id)
        if shape != ref_shape:
            raise ValueError(
                f"case {case.case_id!r}: shape {shape} of {p.name} differs from shape {ref_shape} of {ref.name}; "
                "all files of a case must share one grid (resample them onto the same grid)"
            )
        if not affines_match(affine, ref_affine):
            raise ValueError(
                f"case {case.case_id!r}: affine of {p.name} {format_affine(affine)} differs from the affine of "
                f"{ref.name} {format_affine(ref_affine)} (tolerance {AFFINE_ATOL}); all files of a case must share "
                "one grid (fix the headers or resample)"
            )
    case.shape = ref_shape  # type: ignore[assignment]
    case.affine = ref_affine


def discover_brats(
    root: str | Path,
    *,
    sequences: Sequence[str] | None = None,
    extra_sequences: Sequence[str] = ("aptw",),
    require_seg: bool = True,
    check_headers: bool = True,
) -> list[BratsCase]:
    """Find the BraTS cases under ``root`` (sorted by id) and check their files (see the module docstring).

    Raises:
        FileNotFoundError: ``root`` missing, no case folder, or a case without a required file (the message
            lists the missing sequences and the files found).
        ValueError: mixed layouts, or files of a case that disagree in shape or affine (naming both files).

    Example:
        >>> cases = discover_brats("/data/BraTS2021")  # doctest: +SKIP
        >>> cases[0].images["flair"]  # doctest: +SKIP
        PosixPath('/data/BraTS2021/BraTS2021_00000/BraTS2021_00000_flair.nii.gz')
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"BraTS root {root} is not a directory; pass the folder that holds the case folders")
    dirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    by_layout: dict[str, list[Path]] = {}
    for d in dirs:
        for layout in LAYOUTS.values():
            if layout.pattern.match(d.name):
                by_layout.setdefault(layout.name, []).append(d)
    if not by_layout:
        hint = ""
        if any(lay.pattern.match(root.name) for lay in LAYOUTS.values()):
            hint = f" ({root.name} looks like a case folder itself: pass its parent)"
        raise FileNotFoundError(
            f"no BraTS case folders in {root}{hint}; expected e.g. "
            f"{' or '.join(lay.example for lay in LAYOUTS.values())}; "
            f"found folders: {[d.name for d in dirs[:5]]}{' ...' if len(dirs) > 5 else ''}"
        )
    if len(by_layout) > 1:
        counts = {k: len(v) for k, v in by_layout.items()}
        raise ValueError(
            f"{root} mixes BraTS layouts {counts}; their label schemes differ, so keep one layout per root"
        )
    layout = LAYOUTS[next(iter(by_layout))]
    seqs = tuple(sequences) if sequences is not None else layout.sequences
    if not seqs or len(set(seqs)) != len(seqs) or any(s in _RESERVED for s in seqs):
        raise ValueError(f"sequences must be non-empty, unique and not {_RESERVED}; got {seqs}")
    extras = tuple(e for e in dict.fromkeys(extra_sequences) if e not in seqs and e not in _RESERVED)

    cases: list[BratsCase] = []
    has_extra: dict[str, list[str]] = {e: [] for e in extras}
    for d in by_layout[layout.name]:
        cid = d.name
        found = _files_by_suffix(d, cid, layout.separator)
        dup = {k: [p.name for p in v] for k, v in found.items() if len(v) > 1}
        if dup:
            raise ValueError(f"case {cid!r}: several files for one sequence {dup}; keep one per sequence")
        required = [*seqs, *(["seg"] if require_seg else [])]
        missing = [s for s in required if s not in found]
        if missing:
            names = sorted(p.name for p in d.iterdir())
            raise FileNotFoundError(
                f"case {cid!r} in {d}: missing {missing} (expected e.g. {cid}{layout.separator}{missing[0]}.nii.gz); "
                f"found files: {names}; pass sequences= for the sequences your data has"
            )
        images = {s: found[s][0] for s in seqs}
        for e in extras:
            if e in found:
                has_extra[e].append(cid)
                images[e] = found[e][0]
        seg = found["seg"][0] if "seg" in found else None
        cases.append(BratsCase(cid, layout.name, d, images, seg))

    for e, with_e in has_extra.items():
        if 0 < len(with_e) < len(cases):
            without = [c.case_id for c in cases if c.case_id not in set(with_e)]
            warnings.warn(
                f"extra sequence {e!r} exists in {len(with_e)} of {len(cases)} cases (missing e.g. in {without[:3]}); "
                f"it is left out of every subject so all subjects have the same sequences. Pass "
                f"sequences=(..., {e!r}) to require it",
                stacklevel=2,
            )
        if len(with_e) < len(cases):
            for c in cases:
                c.images.pop(e, None)
    if check_headers:
        for c in cases:
            _check_headers(c)
    return cases


#: Files in a data-set root that may declare its label scheme (JSON with a ``"label_scheme"`` key), e.g. the
#: digital phantom's ``phantom.json``. An explicit declaration by the data's writer, not a guess from the labels.
SCHEME_FILES: tuple[str, ...] = ("phantom.json",)


def _declared_scheme(root: Path) -> tuple[str, Path] | None:
    for name in SCHEME_FILES:
        path = root / name
        if path.is_file():
            try:
                declared = json.loads(path.read_text()).get("label_scheme")
            except (json.JSONDecodeError, AttributeError) as e:
                raise ValueError(f"{path} is not a JSON object ({e}); fix or remove it") from None
            if declared is not None:
                return str(declared), path
    return None


def _resolve_scheme(scheme: str | LabelScheme | None, layout: BratsLayout, root: Path) -> LabelScheme:
    if scheme is None:
        declared = _declared_scheme(root)
        if declared is not None:
            logger.info("label scheme %r declared by %s", declared[0], declared[1])
            return get_scheme(declared[0])
        s = get_scheme(layout.default_scheme)
        extra = ""
        if layout.name == "brats2023":
            extra = " (BraTS 2024 post-treatment data with resection cavity label 4: pass scheme='brats2024')"
        logger.info("layout %s: using the default label scheme %r%s", layout.name, s.name, extra)
        return s
    return get_scheme(scheme)


def _case_subject(case: BratsCase, scheme: LabelScheme) -> tio.Subject:
    reader = functools.partial(read_nifti, case_id=case.case_id)
    kwargs: dict[str, Any] = {s: tio.ScalarImage(p, reader=reader) for s, p in case.images.items()}
    if case.seg is not None:
        kwargs["seg"] = tio.LabelMap(case.seg, reader=functools.partial(read_nifti, case_id=case.case_id, label=True))
    paths = tuple(str(p) for p in case.images.values())
    kwargs["brain"] = tio.LabelMap(
        paths[0], reader=functools.partial(read_brain_mask, paths=paths, case_id=case.case_id)
    )
    kwargs.update(
        subject_id=case.case_id,
        patient_id=case.patient_id,
        scheme=scheme.name,
        layout=case.layout,
        case_dir=str(case.directory),
    )
    return tio.Subject(**kwargs)


def load_brats(
    root: str | Path,
    *,
    scheme: str | LabelScheme | None = None,
    sequences: Sequence[str] | None = None,
    extra_sequences: Sequence[str] = ("aptw",),
    require_seg: bool = True,
    validate: bool = True,
) -> list[tio.Subject]:
    """One ``tio.Subject`` per BraTS case under ``root``, sorted by case id (see the module docstring).

    Args:
        root: Folder holding the case folders.
        scheme: Label scheme of the segmentations; None takes the scheme declared in the root's ``phantom.json``
            if any, else the layout's default (``brats2021`` or ``brats2023``). Pass ``"brats2024"`` for
            post-treatment data (label 4 = resection cavity).
        sequences: Required sequences (file suffixes), in order; None for the layout's four.
        extra_sequences: Optional sequences added when present in every case.
        require_seg: Whether a missing segmentation is an error (False for unlabelled data).
        validate: Read every segmentation and check its labels against the scheme (:func:`validate_subject`).

    Example:
        >>> subjects = load_brats("/data/BraTS2024-GLI", scheme="brats2024")  # doctest: +SKIP
        >>> [k for k in subjects[0].keys()][:5]  # doctest: +SKIP
        ['t1n', 't1c', 't2w', 't2f', 'seg']
    """
    cases = discover_brats(root, sequences=sequences, extra_sequences=extra_sequences, require_seg=require_seg)
    label_scheme = _resolve_scheme(scheme, LAYOUTS[cases[0].layout], Path(root))
    subjects = [_case_subject(c, label_scheme) for c in cases]
    if validate:
        for s in subjects:
            validate_subject(s, scheme=label_scheme)
    logger.info(
        "loaded %d %s cases from %s with label scheme %r", len(subjects), cases[0].layout, root, label_scheme.name
    )
    return subjects


def _unique_labels(arr: np.ndarray) -> np.ndarray:
    """The distinct values of a label array (fast path through bincount for small non-negative integers)."""
    flat = arr.reshape(-1)
    if np.issubdtype(flat.dtype, np.floating):
        if not np.isfinite(flat).all() or not np.array_equal(flat, np.round(flat)):
            return np.unique(flat)  # let the scheme's validation name the bad values
        flat = flat.astype(np.int64)
    if flat.size and np.issubdtype(flat.dtype, np.integer) and flat.min() >= 0 and flat.max() < 2**16:
        return np.flatnonzero(np.bincount(flat.astype(np.int64, copy=False)))
    return np.unique(flat)


def label_hint(unknown: set[int], scheme: LabelScheme) -> str:
    """A hint for labels ``unknown`` to ``scheme`` that belong to another BraTS scheme (else ``""``)."""
    if scheme.name == "brats2023" and 4 in unknown:
        return "; label 4 is the resection cavity (RC) of BraTS 2024 post-treatment data: pass scheme='brats2024'"
    if scheme.name == "brats2021" and 3 in unknown:
        return "; label 3 is enhancing tumor in BraTS 2023/2024 (not 4): pass scheme='brats2023' or 'brats2024'"
    return ""


def validate_subject(
    subject: tio.Subject,
    *,
    scheme: str | LabelScheme | None = None,
    images: bool = False,
    seg_key: str = "seg",
) -> None:
    """Check a subject's segmentation labels against its scheme (and, with ``images=True``, NaN/inf in images).

    ``scheme=None`` uses the subject's ``scheme`` attribute. Raises ``ValueError`` naming the case, the file,
    the offending values and the scheme. Reads the files without keeping them in the subject.

    Example:
        >>> validate_subject(subjects[0], scheme="brats2024")  # doctest: +SKIP
    """
    cid = subject.get("subject_id", "subject")
    if scheme is None:
        if "scheme" not in subject:
            raise ValueError(f"case {cid!r} has no 'scheme' attribute; pass scheme=")
        scheme = subject["scheme"]
    label_scheme = get_scheme(scheme)
    if seg_key in subject:
        seg = subject[seg_key]
        data, _ = _image_tensor(seg)
        where = f"case {cid!r}: segmentation {seg.path or seg_key}"
        values = _unique_labels(data.numpy())
        try:
            label_scheme.validate(values, what=where)
        except ValueError as e:
            unknown = {int(v) for v in values if np.isfinite(v) and float(v).is_integer()} - set(label_scheme.values)
            raise ValueError(f"{e}{label_hint(unknown, label_scheme)}") from None
    if images:
        for key, img in subject.get_images_dict(intensity_only=True).items():
            data, _ = _image_tensor(img)
            _check_finite(data, f"case {cid!r}: image {img.path or key}")
