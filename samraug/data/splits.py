"""Patient-level train/validation/test splits, seeded, saved as JSON.

BraTS 2023/2024 case ids ``BraTS-GLI-XXXXX-YYY`` share the patient ``BraTS-GLI-XXXXX`` across time points
``YYY``; every case of a patient lands in the same split so no patient leaks between training and testing.

Example:
    >>> split = patient_split(["BraTS-GLI-00001-000", "BraTS-GLI-00001-001", "BraTS-GLI-00002-000"],
    ...                       test_fraction=0.5, seed=0)
    >>> sorted(map(len, split.values()))
    [0, 1, 2]
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["SPLIT_NAMES", "check_split", "load_split", "patient_id", "patient_split", "save_split", "select_subjects"]

#: The keys of every split dict, in this order.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

_TIMEPOINT = re.compile(r"^(BraTS-[A-Za-z]+-\d+)-\d+$")


def patient_id(case_id: str) -> str:
    """The patient a case belongs to: ``BraTS-GLI-00042-001`` -> ``BraTS-GLI-00042``; any other id is its own.

    Example:
        >>> patient_id("BraTS-GLI-00042-001"), patient_id("BraTS2021_00042")
        ('BraTS-GLI-00042', 'BraTS2021_00042')
    """
    m = _TIMEPOINT.match(case_id)
    return m.group(1) if m else case_id


def _n_of(fraction: float, n: int, what: str) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return 0
    return max(1, round(fraction * n))


def patient_split(
    ids: Iterable[str],
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
    group: Callable[[str], str] = patient_id,
) -> dict[str, list[str]]:
    """Split case ids into ``train``/``val``/``test`` by patient, deterministically for a seed.

    Fractions are of patients (not cases); a non-zero fraction gets at least one patient. The result does not
    depend on the order of ``ids``. Every key of :data:`SPLIT_NAMES` is present (possibly empty); ids are sorted.

    Args:
        ids: Case ids (e.g. ``[s["subject_id"] for s in subjects]``); duplicates are an error.
        test_fraction, val_fraction: Share of patients in the test and validation splits.
        seed: Seed of the permutation (a ``torch.Generator``, so the same on every platform).
        group: Maps a case id to its patient id (default :func:`patient_id`).

    Example:
        >>> s = patient_split([f"BraTS2021_{i:05d}" for i in range(10)], test_fraction=0.2, val_fraction=0.1)
        >>> [len(s[k]) for k in SPLIT_NAMES]
        [7, 1, 2]
    """
    ids = [str(i) for i in ids]
    dups = sorted(i for i, k in Counter(ids).items() if k > 1)
    if dups:
        raise ValueError(f"duplicate case ids {dups[:5]}; each case must appear once")
    patients: dict[str, list[str]] = {}
    for i in ids:
        patients.setdefault(group(i), []).append(i)
    names = sorted(patients)
    n = len(names)
    n_test = _n_of(test_fraction, n, "test_fraction")
    n_val = _n_of(val_fraction, n, "val_fraction")
    if n_test + n_val >= n:
        raise ValueError(
            f"{n} patients cannot be split into test={n_test}, val={n_val} and a non-empty train set; "
            "lower test_fraction/val_fraction or add data"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    shuffled = [names[k] for k in order]
    parts = {"test": shuffled[:n_test], "val": shuffled[n_test : n_test + n_val], "train": shuffled[n_test + n_val :]}
    return {k: sorted(c for p in parts[k] for c in patients[p]) for k in SPLIT_NAMES}


def check_split(split: Mapping[str, Sequence[str]], group: Callable[[str], str] = patient_id) -> None:
    """Raise ``ValueError`` if ``split`` is not a ``{train, val, test}`` dict of disjoint, patient-grouped ids."""
    if not isinstance(split, Mapping):
        raise ValueError(f"a split must be a dict with keys {list(SPLIT_NAMES)}, got {type(split).__name__}")
    unknown = sorted(set(split) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"split has unknown keys {unknown}; allowed: {list(SPLIT_NAMES)}")
    owner: dict[str, str] = {}
    for name in SPLIT_NAMES:
        cases = split.get(name, [])
        if isinstance(cases, str) or not all(isinstance(c, str) for c in cases):
            raise ValueError(f"split[{name!r}] must be a list of case id strings")
        for c in cases:
            if c in owner:
                raise ValueError(f"case {c!r} is in both {owner[c]!r} and {name!r}; splits must be disjoint")
            owner[c] = name
    by_patient: dict[str, str] = {}
    for c, name in owner.items():
        p = group(c)
        if by_patient.setdefault(p, name) != name:
            raise ValueError(
                f"patient {p!r} has cases in both {by_patient[p]!r} and {name!r} (e.g. {c!r}); "
                "split by patient (patient_split) so no patient leaks between splits"
            )


def save_split(split: Mapping[str, Sequence[str]], path: str | Path) -> Path:
    """Write a split as JSON (after :func:`check_split`) and return the path.

    Example:
        >>> import tempfile, os
        >>> p = save_split({"train": ["a"], "test": ["b"]}, os.path.join(tempfile.mkdtemp(), "split.json"))
        >>> load_split(p)
        {'train': ['a'], 'val': [], 'test': ['b']}
    """
    check_split(split)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: list(split.get(k, [])) for k in SPLIT_NAMES}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split written by :func:`save_split` (checked: disjoint, by patient); missing keys become empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found; create one with patient_split + save_split")
    try:
        data: Any = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"split file {path} is not valid JSON: {e}") from None
    try:
        check_split(data)
    except ValueError as e:
        raise ValueError(f"split file {path}: {e}") from None
    return {k: list(data.get(k, [])) for k in SPLIT_NAMES}


def select_subjects(subjects: Iterable[Any], ids: Iterable[str], key: str = "subject_id") -> list[Any]:
    """The subjects whose ``subject[key]`` is in ``ids``, in the order of ``ids``; unknown ids are an error.

    Example:
        >>> select_subjects([{"subject_id": "a"}, {"subject_id": "b"}], ["b"])
        [{'subject_id': 'b'}]
    """
    by_id = {s[key]: s for s in subjects}
    ids = list(ids)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(
            f"{len(missing)} ids of the split are not among the subjects (e.g. {missing[:3]}); "
            "use the split made for these subjects, or make one with patient_split"
        )
    return [by_id[i] for i in ids]
