"""Augmentation-efficacy benchmark: does synthetic data help a segmenter? (the SAMR paper's Table 2 protocol)

Protocol:

1. Subjects (the digital phantom by default -- SIMULATED data -- or a BraTS folder with ``--data``) are split by
   patient into training and held-out test subjects (:func:`samraug.data.splits.patient_split`).
2. SAMR (and, for their arms, the ablations and pix2pix / pix2pixHD) come from given weights (default: the bundled
   whole-image demo weights :data:`samraug.hub.BUNDLED_WHOLE_WEIGHTS`; the local arm: the bundled local ones) or
   are trained on the training split only (``--train-samr``, same step budget per variant).
   Test subjects are never used to train SAMR nor as editing / copy-paste donors: :func:`check_protocol` enforces
   it (with given weights, on the training data their model card declares; the benchmark's phantom subjects are
   generated with a different data-set seed than the weights' training phantom, and the check verifies that no
   per-subject seed is shared).
3. One 2D U-Net (:mod:`samraug.training.segmentation`) is trained per arm and seed with the same architecture,
   optimiser, schedule, loss, batch size and optimiser-step budget; only the training data differ
   (:mod:`benchmarks.arms`). Every painting arm is made by the library's public augmentation path,
   :class:`samraug.dataset.SAMRAugmentedDataset` over the training subjects with ``painter=`` / ``mode=``.
4. Each segmenter predicts every held-out subject slice-wise; the 3D volumes are scored against the ground truth
   (spacing-aware Dice, HD95, sensitivity, specificity; :mod:`samraug.metrics`, BraTS legacy edge conventions) for
   SAMR's edema, cavity and tumor. Per seed the subject scores are averaged; the per-region table shows mean +- std
   over seeds.
5. The decision table (:mod:`benchmarks.stats`): per arm, the paired difference in *mean lesion Dice* to real-only
   at the same data fraction, per (seed, test subject), with a 95 % bootstrap CI that resamples seeds and then test
   subjects (crossed design), its half-width and the minimal detectable difference (see :data:`STATISTICS_NOTE`).

Low-data protocol: every arm uses the real slices of ``fraction`` of the training subjects (the same subset for
every arm, :func:`fraction_subset`); sweep arms (``real_full``, ``samr_50_full``) use all of them; the generators are
not reduced. The ``control`` arm adds, as real data, the labelled subjects the SAMR generator was trained on
(:func:`generator_training_slices`): a generator trained on extra labelled data brings those labels with it, and
SAMR only helps beyond that if it beats the control.

Outputs (``--out DIR``, never overwritten without ``--overwrite``): ``augmentation.md`` (the decision table, then
the paper-layout table: rows = arms, column groups Dice | HD95 | Sensitivity | Specificity x Edema | Cavity |
Tumor), ``augmentation.json`` (every per-seed and per-subject number, the paired differences and CIs, the
configuration, the machine and the exact command), ``augmentation.png`` and ``augmentation_ci.png`` (the CIs).

Presets: ``quick`` (the README's main command, a SMOKE RUN: <= 10 min on 2 CPU cores; bundled demo weights: whole
and local; real,
conventional, copy-paste, RandomLabelsToImage, SAMR 50 % and SAMR local 50 %; the local arm needs local-mode
weights, ``--local-weights FOLDER``, and is skipped with the reason printed when there are none), ``standard``
(the decision run, about 2 h on 2 CPU cores: 40 phantom subjects, every arm at 25 % of the training subjects, the
control, the data-fraction and ratio sweeps; step budget from ``benchmarks/step_budget.py``, seeds x test subjects
from a pilot through ``benchmarks/stats.py``) and ``full`` (GPU scale: every arm, SAMR and its ablations/baselines
trained on the training split). Every preset value can be overridden from the command line.

Example:
    python benchmarks/augmentation.py --preset quick --out /tmp/bench_quick
    python benchmarks/augmentation.py --preset standard --out outputs/bench_standard
    python benchmarks/augmentation.py --preset full --out outputs/bench_full
    python benchmarks/augmentation.py --data /data/BraTS2024-GLI --scheme brats2024 --train-samr --preset full
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks.arms` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.arms import (
    ARMS,
    PAINTER_OF_KIND,
    SEGMENTER_NORMALIZATION,
    ArmSpec,
    ConventionalDataset,
    MixedDataset,
    SliceSet,
    conventional_pool,
    n_synthetic,
    painted_pool,
)
from benchmarks.stats import mean_lesion_dice, paired_bootstrap, score_matrix
from samraug.augment.edits import CARVE_KINDS, EDITOR_KINDS, parse_edits
from samraug.editing.policy import check_insertion
from samraug.hub import BUNDLED_LOCAL_WEIGHTS, BUNDLED_WHOLE_WEIGHTS
from samraug.local_synthesis import check_max_region_mm
from samraug.outputs import write_atomic
from samraug.region import REGION_SEEDS
from samraug.seam import HEALTHY_MODES
from samraug.training.segmentation import (
    FOREGROUND_SAMPLING,
    EvalVolume,
    SegmentationConfig,
    evaluate_segmenter,
    train_segmenter,
)

__all__ = [
    "METRICS",
    "PRESETS",
    "REGIONS",
    "VARIANTS",
    "BenchmarkConfig",
    "BenchmarkContext",
    "Painter",
    "arm_fraction",
    "check_protocol",
    "format_table",
    "fraction_subset",
    "generator_training_slices",
    "load_subjects",
    "machine_info",
    "main",
    "paired_statistics",
    "plot_results",
    "prepare_context",
    "run_benchmark",
    "torch_threads",
    "write_outputs",
]

REGIONS: tuple[str, ...] = ("edema", "cavity", "tumor")
METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")
METRIC_TITLES = {"dice": "Dice", "hd95": "HD95 (mm)", "sensitivity": "Sensitivity", "specificity": "Specificity"}
#: SAMR variants and the recipe switches that make them (samraug.training / recipes/train_samr.py).
VARIANTS: tuple[str, ...] = ("samr", "no_stretch_out", "no_label_wise_d", "no_atlas", "no_lc", "pix2pix", "pix2pixhd")
#: The local-mode generator of the ``samr_local_50`` arm (``--local-weights``; never trained by ``--train-samr``).
LOCAL_VARIANT = "samr_local"
# Without --weights the samr variant loads the hub's BUNDLED_WHOLE_WEIGHTS (weights=None would mean the bundled
# *local* weights); without --local-weights the local arm loads BUNDLED_LOCAL_WEIGHTS, if that folder exists.

#: The training switches of each variant (samraug.training.preset_config overrides).
VARIANT_SWITCHES: dict[str, dict[str, Any]] = {
    "samr": {},
    "no_stretch_out": {"stretch_out": False},
    "no_label_wise_d": {"label_wise_d": False},
    "no_atlas": {"use_atlas": False},
    "no_lc": {"shape_consistency": False},
    "pix2pix": {"model_type": "pix2pix"},
    "pix2pixhd": {"model_type": "pix2pixhd"},
}

QUICK_ARMS = ("real", "conventional", "labels_to_image", "copy_paste", "samr_50", "samr_local_50")
#: The standard preset's arms. Every arm at the low-data fraction, the control, the data-fraction sweep (real-only and
#: the best SAMR arm at 100 %) and the best SAMR arm's ratio sweep (25 / 50 / 75 %). The best SAMR arm is the local
#: one (the standard run in the README's Results); the whole arm's own sweeps (``samr_50_full``, ``samr_25``,
#: ``samr_75``) stay available with ``--arms``.
STANDARD_ARMS = (
    "real",
    "conventional",
    "labels_to_image",
    "copy_paste",
    "samr_50",
    "samr_local_50",
    "control",
    "real_full",
    "samr_local_50_full",
    "samr_local_25",
    "samr_local_75",
)

#: Printed by smoke-run presets: where the numbers that can decide something come from.
SMOKE_NOTICE = (
    "SMOKE RUN: the quick preset shows that the pipeline runs end to end in minutes; its confidence intervals are too "
    "wide to decide whether an arm helps. The decision numbers come from the standard preset (about 2 h on 2 CPU "
    "cores): python benchmarks/augmentation.py --preset standard (results in the README, section Results)."
)

PRESETS: dict[str, dict[str, Any]] = {
    # A smoke run (<= 10 min on 2 CPU cores): small 2 mm phantom (6 training / 4 test subjects), bundled demo
    # weights, five arms, short trainings (250 steps) on 48x48 patches, pools drawn once.
    "quick": {
        "n_subjects": 10,
        "n_test": 4,
        "resolution": 2.0,
        "arms": QUICK_ARMS,
        "seeds": (0, 1, 2),
        "steps": 250,
        "batch_size": 16,
        "depth": 3,
        "base_channels": 16,
        "crop_size": 48,
        "train_samr": False,
        "samr_preset": "tiny",
        "samr_steps": 2000,
        "resample_pools": False,
        "threads": 1,
        "fraction": 1.0,
        "smoke": True,
    },
    # The decision run (<= 2 h on 2 CPU cores, 1 torch thread): 40 phantom subjects at 2 mm (20 training / 20 test),
    # every arm at 25 % of the training subjects (5 subjects), the control, the data-fraction and ratio sweeps;
    # 4 segmenter seeds x 20 test subjects; pools re-drawn per seed. Steps: 1250, where real-only's validation
    # score stopped rising at 25 % (benchmarks/step_budget.py --max-steps 1500 --every 250: mean lesion Dice 0.552,
    # 0.650, 0.684, 0.699, 0.734, 0.733 at 250..1500 steps, 2 seeds). Seeds x test subjects: a pilot (real and
    # SAMR 50 %, 2 seeds x 20 test subjects, 1000 steps) gave variance components of the paired difference seed
    # 0.00003, subject 0.00007, residual 0.00243 and a CI half-width of 0.022; 4 x 20 predicts 0.013 (target 0.03)
    # and keeps >= 3 seeds so the bootstrap sees seed-to-seed spread; about 80 min of 1-thread CPU time when idle.
    "standard": {
        "n_subjects": 40,
        "n_test": 20,
        "resolution": 2.0,
        "arms": STANDARD_ARMS,
        "seeds": (0, 1, 2, 3),
        "steps": 1250,
        "batch_size": 16,
        "depth": 3,
        "base_channels": 16,
        "crop_size": 48,
        "train_samr": False,
        "samr_preset": "tiny",
        "samr_steps": 2000,
        "resample_pools": True,
        "threads": 1,
        "fraction": 0.25,
        "smoke": False,
    },
    # GPU scale: every arm; SAMR, its ablations and the baselines trained on the training split.
    "full": {
        "n_subjects": 60,
        "n_test": 15,
        "resolution": 1.0,
        "arms": tuple(ARMS),
        "seeds": (0, 1, 2),
        "steps": 6000,
        "batch_size": 16,
        "depth": 4,
        "base_channels": 32,
        "crop_size": None,
        "train_samr": True,
        "samr_preset": "lite",
        "samr_steps": 30000,
        "resample_pools": True,
        "threads": None,
        "num_workers": 8,
        "smoke": False,
    },
}


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class BenchmarkConfig:
    """Everything that defines one benchmark run (a preset plus overrides); written to the JSON.

    Attributes:
        preset: Name of the preset the defaults came from.
        data: BraTS root folder; None for the digital phantom (simulated data).
        scheme: Label scheme of ``data`` (e.g. ``brats2024``); None for the loader's default.
        sequences: Sequences to use; None: the SAMR model's (generator arms) or the data's.
        n_subjects, n_test: Phantom subjects to generate and held-out test subjects (for BraTS: ``n_subjects``
            caps the cases used, 0 = all; ``n_test`` the test patients).
        resolution: Phantom voxel size in mm (2 or 1).
        phantom_seed: Data-set seed of the benchmark's phantom (distinct from the demo weights' training seed).
        cache_dir: Where the phantom is cached (default ``$SAMRAUG_CACHE/phantom`` or ``~/.cache/samraug/phantom``).
        split_seed: Seed of the patient-level split.
        arms: Arm names (:data:`benchmarks.arms.ARMS`).
        seeds: Segmenter seeds (each seed also re-draws every synthetic pool).
        steps, batch_size, lr, depth, base_channels, crop_size: The segmenter (same for every arm).
        foreground_sampling: How the segmenter's foreground patches pick their lesion pixel (``voxel``, the
            default, or ``class``: nnU-Net v2's class-uniform draw; ``SegmentationConfig.foreground_sampling``).
        selection: Training slices: ``brain`` (every slice with brain) or ``lesion``.
        weights: SAMR weights (folder, ``org/name[@rev]``; None = the bundled whole-image demo weights
            :data:`samraug.hub.BUNDLED_WHOLE_WEIGHTS`).
        variant_weights: Weights per ablation/baseline variant when not training them.
        local_weights: Local-mode weights of the ``samr_local_50`` arm (default: :data:`BUNDLED_LOCAL_WEIGHTS` if it
            exists; else the arm is skipped with the reason printed and written to the JSON).
        local_healthy: What paints the healthy voxels of the local arms' regions (``SAMRPainter(healthy=...)``):
            ``model`` (the generator, the painter's default), ``harmonic`` (classical 3D harmonic inpainting) or
            ``spline`` (a thin-plate spline under tension).
        local_region: What seeds the local arms' repainted region (``SAMRPainter(region=...)``): ``lesions`` (the
            changed voxels plus the old and new lesion, the painter's default) or ``changed`` (the changed voxels).
        local_insert: The local arms' ``EditPolicy(p_insert=...)``: the probability that an edit adds the edited
            lesion beside the real one instead of replacing it (0: the paper's edits, the default).
        local_n_insert: The local arms' ``EditPolicy(n_insert=...)``: lesions an inserting edit adds (1: one; more
            needs ``local_insert > 0``).
        local_edits: How the local arms edit the label maps (``SAMRAugmentedDataset(edits=...)``): ``random`` (the
            edit policy's random edits, the default) or ``carve`` (CarveMix's edit: another training subject's lesion
            added where it lies, inside the source's brain; the pool is drawn with copy-paste's pool seed, so the
            local arm paints the label maps the copy-paste arm fills with a donor's intensities, less any donor lesion
            voxels outside the source's brain; no ``local_insert``), ``carve+random`` (both on each volume: the
            random edit with the insertion options, then the donor's lesion of ``carve`` on top), or a mixture
            ``carve=W,random=W`` drawn per synthetic volume (its volumes of a kind are those of that kind alone).
        local_max_region_mm: The local arms' ``SAMRPainter(max_region_mm=...)``: a connected part of a repainted
            region wider than this (mm) leaves its volume real (None: the painter's default,
            :data:`samraug.local_synthesis.DEFAULT_MAX_REGION_MM`).
        train_samr: Train SAMR and the needed variants on the training split (samraug.training).
        samr_preset, samr_steps: Their preset and step budget (the same for every variant).
        device: ``auto``, ``cpu`` or ``cuda``.
        num_workers: DataLoader workers of the segmenter.
        slice_multiple: Slices are padded (centred) to a multiple of this.
        work_dir: Where trained generators go (``--train-samr``); the CLI sets it to ``--out``.
        resample_pools: Draw every augmented/synthetic pool anew for each seed (so the spread over seeds includes
            the pools' randomness); False draws them once (pool seed 0) and only the segmenter seed varies
            (cheaper: the quick preset).
        threads: torch CPU threads (None: torch's default). The quick preset uses 1: on a small shared CPU,
            two OpenMP threads competing with other processes are several times slower than one.
        fraction: The low-data setting: the fraction of the training subjects whose real slices every arm uses
            (arms with their own ``fraction``, the data-fraction sweep, override it). Generators and the control
            arm's extra subjects are not reduced.
        smoke: A smoke-run preset: its output says so and points to the standard preset.
    """

    preset: str = "quick"
    data: str | None = None
    scheme: str | None = None
    sequences: tuple[str, ...] | None = None
    n_subjects: int = 10
    n_test: int = 4
    resolution: float = 2.0
    phantom_seed: int = 2024
    cache_dir: str | None = None
    split_seed: int = 0
    arms: tuple[str, ...] = QUICK_ARMS
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 250
    batch_size: int = 16
    lr: float = 2e-4
    depth: int = 3
    base_channels: int = 16
    crop_size: int | None = 48
    foreground_sampling: str = "voxel"
    selection: str = "brain"
    weights: str | None = None
    variant_weights: dict[str, str] = field(default_factory=dict)
    local_weights: str | None = None
    local_healthy: str = "model"
    local_region: str = "lesions"
    local_insert: float = 0.0
    local_n_insert: int = 1
    local_edits: str = "random"
    local_max_region_mm: float | None = None
    train_samr: bool = False
    samr_preset: str = "tiny"
    samr_steps: int = 2000
    device: str = "auto"
    num_workers: int = 0
    slice_multiple: int = 32
    work_dir: str | None = None
    resample_pools: bool = True
    threads: int | None = None
    fraction: float = 1.0
    smoke: bool = False

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}; choose from {list(ARMS)}")
        if not self.arms:
            raise ValueError("no arms selected; pass e.g. --arms real,samr_50")
        if not self.seeds:
            raise ValueError("no seeds given; pass e.g. --seeds 0,1,2")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.n_test < 1:
            raise ValueError(f"n_test must be >= 1 held-out subject, got {self.n_test}")
        if self.data is None and self.n_subjects < self.n_test + 2:
            raise ValueError(
                f"{self.n_subjects} phantom subjects cannot hold {self.n_test} test subjects and >= 2 training "
                "subjects (copy-paste needs two); raise --subjects or lower --test-subjects"
            )
        bad = sorted(set(self.variant_weights) - set(VARIANTS))
        if bad:
            raise ValueError(f"variant_weights for unknown variants {bad}; variants are {list(VARIANTS)}")
        if not 0 < self.fraction <= 1:
            raise ValueError(
                f"fraction (of the training subjects every arm uses) must be in (0, 1], got {self.fraction}"
            )
        if self.selection not in ("brain", "lesion"):
            raise ValueError(f"selection must be 'brain' or 'lesion', got {self.selection!r}")
        if self.local_healthy not in HEALTHY_MODES:
            raise ValueError(f"local_healthy must be one of {HEALTHY_MODES}, got {self.local_healthy!r}")
        if self.local_region not in REGION_SEEDS:
            raise ValueError(f"local_region must be one of {REGION_SEEDS}, got {self.local_region!r}")
        check_insertion(self.local_insert, self.local_n_insert, "local_insert", "local_n_insert")
        if self.local_max_region_mm is not None:
            check_max_region_mm(self.local_max_region_mm, "local_max_region_mm")
        mixture = local_edit_mixture(self.local_edits)
        if not set(mixture) & set(EDITOR_KINDS) and self.local_insert:
            raise ValueError(
                "local_edits='carve' adds a donor's lesion as it lies and draws no edit policy: leave local_insert at 0"
            )

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> BenchmarkConfig:
        """The preset's values with ``overrides`` (None values are ignored)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {list(PRESETS)}")
        values = dict(PRESETS[preset])
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("arms", "seeds", "sequences"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(preset=preset, **values)

    def segmenter(self, seed: int) -> SegmentationConfig:
        """The segmenter configuration of one seed (identical for every arm)."""
        return SegmentationConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            depth=self.depth,
            base_channels=self.base_channels,
            crop_size=self.crop_size,
            foreground_sampling=self.foreground_sampling,
            seed=int(seed),
            device=self.device,
            num_workers=self.num_workers,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("arms", "seeds", "sequences"):
            if d.get(key) is not None:
                d[key] = list(d[key])
        return d


# ---------------------------------------------------------------------------------------------------- protocol
def check_protocol(
    split: Mapping[str, Sequence[str]],
    *,
    segmenter_subjects: Iterable[str],
    donor_subjects: Iterable[str],
    samr_training: Mapping[str, Iterable[str] | None],
    identities: Mapping[str, str] | None = None,
) -> list[str]:
    """Raise ``ValueError`` if a held-out test subject leaks into training, donors, or SAMR training data.

    Rules: the split is patient-level and disjoint (:func:`samraug.data.splits.check_split`); the segmenter's
    training slices and every editing / copy-paste donor come from the training split only; no SAMR variant was
    trained on a test subject. Subjects are compared by their *data identity* (``identities``: subject id -> e.g.
    ``"phantom-seed:123"`` for phantom subjects, whose case names repeat across data sets, or the patient id for
    BraTS, the default), so a weights folder trained on another data set is checked on what it actually saw.

    Args:
        split: ``{"train": [...], "test": [...]}`` (``val`` allowed) of subject ids.
        segmenter_subjects: Subjects whose slices train the segmenter.
        donor_subjects: Subjects whose lesions were used as editing / copy-paste donors.
        samr_training: Variant name -> data identities its weights were trained on, or None when the weights do
            not declare them (then it cannot be verified: a warning is returned, not raised).
        identities: Subject id -> data identity; default :func:`samraug.data.splits.patient_id`.

    Returns:
        Warnings (unverifiable items); empty when everything was verified.

    Example:
        >>> check_protocol({"train": ["a", "b"], "test": ["c"]}, segmenter_subjects=["a"], donor_subjects=["b"],
        ...                samr_training={"samr": ["a", "b"]})
        []
    """
    from samraug.data.splits import check_split, patient_id

    full = {k: list(split.get(k, [])) for k in ("train", "val", "test")}
    check_split(full)
    if not full["test"]:
        raise ValueError("the split has no test subjects; the benchmark needs held-out subjects")

    def ident(s: str) -> str:
        if identities is not None and s in identities:
            return str(identities[s])
        return patient_id(s)

    train, test = set(full["train"]), set(full["test"])
    test_ids = {ident(s): s for s in test}
    problems: list[str] = []
    for what, subjects in (
        ("segmenter training subjects", segmenter_subjects),
        ("editing/copy-paste donors", donor_subjects),
    ):
        subjects = set(subjects)
        leaked = sorted(subjects & test) + sorted(s for s in subjects - test if ident(s) in test_ids)
        if leaked:
            problems.append(f"test subjects {leaked} are among the {what}")
        outside = sorted(subjects - train - test)
        if outside:
            problems.append(f"{what} {outside[:5]} are not in the training split")
    warn: list[str] = []
    for variant, data in samr_training.items():
        if data is None:
            warn.append(
                f"the training data of the {variant!r} weights is not declared in their model card/config: "
                "cannot verify that no test subject was used to train them"
            )
            continue
        leaked = sorted(test_ids[d] for d in {str(x) for x in data} if d in test_ids)
        if leaked:
            problems.append(f"the {variant!r} generator was trained on test subjects {leaked}")
    if problems:
        raise ValueError(
            "benchmark protocol violated: "
            + "; ".join(problems)
            + ". Test subjects must never train the segmenter or SAMR nor serve as donors: use disjoint data "
            "(e.g. another --phantom-seed than the weights' training data, or --train-samr on the training split)"
        )
    return warn


# ---------------------------------------------------------------------------------------------------- data
def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    zooms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return (float(zooms[0]), float(zooms[1]), float(zooms[2]))


def load_subjects(
    config: BenchmarkConfig, log: Callable[[str], None] = print
) -> tuple[list[Any], dict[str, str], dict[str, Any], str]:
    """The subjects (``tio.Subject``), their data identities, a description of the source, and the label scheme."""
    from samraug.data.brats import load_brats

    if config.data is None:
        from samraug.data.phantom import ensure_phantom_dataset

        t0 = time.perf_counter()
        root = ensure_phantom_dataset(
            config.n_subjects,
            seed=config.phantom_seed,
            resolution=config.resolution,
            cache_dir=config.cache_dir,
            workers=max(1, min(8, os.cpu_count() or 1)),
            progress=False,
        )
        meta = json.loads((root / "phantom.json").read_text())
        identities = {cid: f"phantom-seed:{int(s)}" for cid, s in meta["subjects"].items()}
        seconds = time.perf_counter() - t0
        log(f"phantom: {config.n_subjects} simulated subjects at {config.resolution:g} mm in {root} ({seconds:.0f} s)")
        subjects = load_brats(root, scheme="brats2024", extra_sequences=("aptw",))
        source = {
            "kind": "phantom",
            "simulated": True,
            "root": str(root),
            "dataset_seed": config.phantom_seed,
            "resolution_mm": config.resolution,
            "n_subjects": len(subjects),
        }
        return subjects, identities, source, "brats2024"
    subjects = load_brats(config.data, scheme=config.scheme)
    if config.n_subjects and len(subjects) > config.n_subjects:
        subjects = subjects[: config.n_subjects]
    scheme = subjects[0]["scheme"]
    from samraug.data.splits import patient_id

    identities = {s["subject_id"]: patient_id(s["subject_id"]) for s in subjects}
    source = {
        "kind": "brats",
        "simulated": False,
        "root": str(config.data),
        "scheme": scheme,
        "n_subjects": len(subjects),
    }
    return subjects, identities, source, scheme


def _data_sequences(subject: Any) -> tuple[str, ...]:
    import torchio as tio

    return tuple(k for k, v in subject.items() if isinstance(v, tio.ScalarImage))


def prepare_slices(
    subjects: Sequence[Any],
    sequences: Sequence[str],
    scheme: str,
    *,
    selection: str = "brain",
    multiple: int = 32,
    atlases: Sequence[Any] = (),
) -> SliceSet:
    """The 2D training slices of ``subjects`` (normalised, padded centrally to a multiple of ``multiple``); each
    subject is checked to lie on the grid of every atlas in ``atlases``."""
    from samraug.data.slices import pad_or_crop, padded_size, prepare_subject
    from samraug.intensity import BACKGROUND_VALUE

    parts = []
    for subject in subjects:
        p = prepare_subject(
            subject, sequences, scheme=scheme, selection=selection, normalization=SEGMENTER_NORMALIZATION
        )  # type: ignore[arg-type]
        for atlas in atlases:
            atlas.check_grid(p.shape, p.affine, f"subject {p.subject_id!r}")
        size = padded_size(p.shape[:2], multiple)
        image = pad_or_crop(p.images.permute(3, 0, 1, 2), size, value=BACKGROUND_VALUE)  # (k, n, H, W)
        label = pad_or_crop(p.label.permute(2, 0, 1).long(), size, value=0)
        parts.append(
            SliceSet(
                image.contiguous(),
                label.contiguous(),
                label > 0,
                torch.tensor(p.z),
                [p.subject_id] * len(p.z),
                tuple(sequences),
            )
        )
    return SliceSet.concat(parts)


def prepare_volume(
    subject: Any, sequences: Sequence[str], scheme: str, *, atlases: Sequence[Any] = ()
) -> tuple[EvalVolume, np.ndarray]:
    """A held-out subject as a whole normalised volume with its SAMR ground truth and spacing, and its affine."""
    from samraug.data.slices import prepare_subject

    p = prepare_subject(subject, sequences, scheme=scheme, selection="all", normalization=SEGMENTER_NORMALIZATION)  # type: ignore[arg-type]
    for atlas in atlases:
        atlas.check_grid(p.shape, p.affine, f"subject {p.subject_id!r}")
    return EvalVolume(p.subject_id, p.images.contiguous(), p.label.long(), _spacing(p.affine)), p.affine


# ---------------------------------------------------------------------------------------------------- painters
@dataclass
class Painter:
    """A generator variant that paints edited masks, and what it was trained on.

    Attributes:
        variant: ``samr``, ``no_atlas``, ... (:data:`VARIANTS`).
        synthesizer: The :class:`samraug.synthesis.Synthesizer` running it.
        source: Where the weights came from (folder / repo id / "bundled" / "trained here").
        training_identities: Data identities it was trained on (None: not declared by the weights).
    """

    variant: str
    synthesizer: Any
    source: str
    training_identities: set[str] | None
    info: dict[str, Any] = field(default_factory=dict)


def declared_training_identities(*sources: Mapping[str, Any]) -> set[str] | None:
    """The data identities a weights folder declares it was trained on, or None when it declares none.

    Looks for a ``"training_data"`` entry in each of ``sources`` (e.g. the weights' ``config.json`` and the
    ``info`` of their atlas, which is built from the training subjects only and travels with the weights), first
    found wins. Its forms, most precise first:

    - ``{"phantom_subject_seeds": [...]}``: phantom subjects by their per-subject seed (``phantom-seed:<seed>``);
    - ``{"phantom": {"seed": s, "n": n}}``: every subject of the phantom data set made with seed ``s`` and ``n``
      subjects (conservative: their validation/test subjects count too);
    - ``{"subjects": [...]}``: case ids, compared by patient id (or a ``{case id: phantom seed}`` mapping).

    Example:
        >>> sorted(declared_training_identities({"training_data": {"phantom_subject_seeds": [5, 7]}}))
        ['phantom-seed:5', 'phantom-seed:7']
    """
    from samraug.data.splits import patient_id

    for source in sources:
        data = source.get("training_data") if isinstance(source, Mapping) else None
        if not isinstance(data, Mapping):
            continue
        if "phantom_subject_seeds" in data:
            return {f"phantom-seed:{int(s)}" for s in data["phantom_subject_seeds"]}
        phantom = data.get("phantom")
        if isinstance(phantom, Mapping) and "seed" in phantom and "n" in phantom:
            from samraug.data.phantom import subject_seed

            return {f"phantom-seed:{subject_seed(int(phantom['seed']), i)}" for i in range(int(phantom["n"]))}
        subjects = data.get("subjects")
        if isinstance(subjects, Mapping):
            return {f"phantom-seed:{int(v)}" for v in subjects.values()}
        if isinstance(subjects, list | tuple):
            return {patient_id(str(v)) for v in subjects}
    return None


_CARD_PHANTOM = re.compile(r"samraug digital phantom[^\n]*?(\d+) subjects, ([\d.]+) mm, seed (\d+)")


def card_training_identities(card_text: str) -> set[str] | None:
    """Fallback when the weights declare no ``training_data``: the phantom data set named in the model card's
    data line (as written by ``recipes/train_samr.py``: "samraug digital phantom ...: N subjects, R mm, seed S"),
    all N subjects counted. None when the card names no phantom data set.

    Example:
        >>> ids = card_training_identities("data: samraug digital phantom (SIMULATED): 2 subjects, 2 mm, seed 0")
        >>> len(ids)
        2
    """
    from samraug.data.phantom import subject_seed

    m = _CARD_PHANTOM.search(card_text)
    if m is None:
        return None
    n, seed = int(m.group(1)), int(m.group(3))
    return {f"phantom-seed:{subject_seed(seed, i)}" for i in range(n)}


def weights_training_identities(synthesizer: Any, weights: str | None) -> tuple[set[str] | None, str]:
    """What a loaded generator declares it was trained on, and where that came from."""
    atlas = synthesizer.atlas if synthesizer.config.get("mode", "whole") == "whole" else None  # local: no atlas
    ids = declared_training_identities(synthesizer.config, getattr(atlas, "info", {}) or {})
    if ids is not None:
        return ids, "training_data in the weights"
    from samraug.hub import CARD_NAME, resolve_weights

    try:
        card = resolve_weights(weights) / CARD_NAME
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
    except (OSError, ValueError):
        text = ""
    ids = card_training_identities(text)
    return ids, ("the data line of the model card" if ids is not None else "not declared")


def _weights_digest(weights: str | None) -> str | None:
    """SHA-256 of the weights' ``model.safetensors`` (which exact generator produced the numbers)."""
    from samraug.hub import MODEL_NAME, resolve_weights
    from samraug.serialization import sha256_file

    try:
        return sha256_file(resolve_weights(weights) / MODEL_NAME)
    except (OSError, ValueError):
        return None


def local_edit_mixture(text: str) -> dict[str, float]:
    """The edit mixture of ``--local-edits``: ``random``, ``carve``, ``carve+random`` or ``KIND=WEIGHT,KIND=WEIGHT``
    (:func:`samraug.augment.edits.parse_edits`).

    Example:
        >>> local_edit_mixture("carve"), local_edit_mixture("carve=1,random=1")
        ({'carve': 1.0}, {'random': 0.5, 'carve': 0.5})
    """
    return parse_edits(text, "local_edits")


def _edits_arg(mixture: Mapping[str, float]) -> str | dict[str, float]:
    """``SAMRAugmentedDataset(edits=...)`` of an edit mixture: its kind when it has one, else the mixture."""
    return next(iter(mixture)) if len(mixture) == 1 else dict(mixture)


def resolve_painters(
    config: BenchmarkConfig,
    variants: Sequence[str],
    split: Mapping[str, Sequence[str]] | None = None,
    identities: Mapping[str, str] | None = None,
    scheme: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Painter]:
    """A :class:`Painter` per needed variant: trained on the training split of ``split`` (``config.train_samr``)
    or loaded from ``config.weights`` (``samr``) / ``config.variant_weights``."""
    from samraug.synthesis import Synthesizer

    painters: dict[str, Painter] = {}
    for variant in variants:
        if variant == LOCAL_VARIANT:  # given weights only (local training is recipes/train_samr.py's --task local)
            weights, reason = local_weights(config)
            if weights is None:
                raise ValueError(f"the {LOCAL_VARIANT!r} generator: {reason}")
        elif config.train_samr:
            if split is None or scheme is None:
                raise ValueError("training the generators (train_samr) needs the benchmark's split and scheme")
            painters[variant] = train_painter(variant, config, split, identities or {}, scheme, log)
            continue
        elif variant == "samr":  # the paper's whole-image generator: never the library default (local mode)
            weights = config.weights if config.weights is not None else str(BUNDLED_WHOLE_WEIGHTS)
        elif variant in config.variant_weights:
            weights = config.variant_weights[variant]
        else:
            raise ValueError(
                f"the {variant!r} arm needs generator weights: pass --train-samr to train every variant on the "
                f"training split, or --variant-weights {variant}=FOLDER; or leave its arm out (--arms)"
            )
        synth = Synthesizer(weights, device=config.device)
        synth.load()
        ids, where = weights_training_identities(synth, weights)
        info = {"training_data": where, "model_sha256": _weights_digest(weights)}
        if variant == LOCAL_VARIANT:
            info["healthy"] = config.local_healthy
            info["region"] = config.local_region
            info["insert"] = float(config.local_insert)
            info["n_insert"] = int(config.local_n_insert)
            info["edit_kind"] = config.local_edits
            if config.local_max_region_mm is not None:
                info["max_region_mm"] = float(config.local_max_region_mm)
        source = _source_name(weights)
        painters[variant] = Painter(variant, synth, source, ids, info)
        log(f"{variant}: weights {source}, sequences {list(synth.sequences)}")
    return painters


def _source_name(weights: str | None) -> str:
    """How the results name a generator's weights: the bundled folders by name, others as given.

    Example:
        >>> _source_name(str(BUNDLED_WHOLE_WEIGHTS)), _source_name("org/name@v1")
        ('bundled demo weights samr-tiny-phantom (whole)', 'org/name@v1')
    """
    if weights is None:
        return "bundled demo weights (library default)"
    for folder, mode in ((BUNDLED_WHOLE_WEIGHTS, "whole"), (BUNDLED_LOCAL_WEIGHTS, "local")):
        with contextlib.suppress(OSError, ValueError):
            if Path(weights).resolve() == folder.resolve():
                return f"bundled demo weights {folder.name} ({mode})"
    return str(weights)


def local_weights(config: BenchmarkConfig) -> tuple[str | None, str | None]:
    """The local-mode weights of the ``samr_local_50`` arm and None, or None and why the arm is skipped.

    Example:
        >>> local_weights(BenchmarkConfig(local_weights="/my/local"))
        ('/my/local', None)
    """
    if config.local_weights:
        return config.local_weights, None
    if BUNDLED_LOCAL_WEIGHTS.is_dir():
        return str(BUNDLED_LOCAL_WEIGHTS), None
    return None, (
        f"no local-mode weights: pass --local-weights FOLDER (e.g. trained with recipes/train_samr.py --task local); "
        f"the bundled folder {BUNDLED_LOCAL_WEIGHTS.relative_to(BUNDLED_LOCAL_WEIGHTS.parents[2])} does not exist"
    )


def _whole_atlases(painters: Iterable[Painter]) -> list[Any]:
    """The atlases of the whole-image generators that use one (subjects must lie on their grids); local-mode
    weights carry no atlas."""
    return [
        p.synthesizer.atlas
        for p in painters
        if p.synthesizer.config.get("mode", "whole") == "whole" and p.synthesizer.uses_atlas
    ]


def train_painter(
    variant: str,
    config: BenchmarkConfig,
    split: Mapping[str, Sequence[str]],
    identities: Mapping[str, str],
    scheme: str,
    log: Callable[[str], None] = print,
) -> Painter:
    """Train one SAMR variant on the benchmark's training split only (``--train-samr``), same step budget for all.

    Data go through :func:`samraug.training.gan.prepare_gan_data` with the benchmark's split (saved to
    ``<work_dir>/generators/<variant>/split.json``): the atlas is built from the training subjects only and records
    them (``atlas.info["training_data"]``). The GAN is :class:`samraug.training.GANTrainer` with
    ``preset_config(config.samr_preset, ...)`` plus the variant's switch (:data:`VARIANT_SWITCHES`) and
    ``max_steps = config.samr_steps``. The weights are exported to ``<work_dir>/generators/<variant>/weights``
    (Hub format) and loaded back through :class:`samraug.synthesis.Synthesizer`.
    """
    from samraug.data.splits import patient_id, save_split
    from samraug.synthesis import Synthesizer
    from samraug.training import GANTrainer, preset_config
    from samraug.training.gan import prepare_gan_data

    work = Path(config.work_dir or "/tmp/samraug-bench") / "generators" / variant
    split_file = save_split({k: list(split.get(k, [])) for k in ("train", "val", "test")}, work / "split.json")
    t0 = time.perf_counter()
    if config.data is None:
        data = prepare_gan_data(
            "phantom",
            n_subjects=config.n_subjects,
            resolution=config.resolution,
            phantom_seed=config.phantom_seed,
            cache_dir=config.cache_dir,
            sequences=config.sequences,
            split_file=split_file,
            multiple=config.slice_multiple,
        )
    else:
        data = prepare_gan_data(
            config.data,
            scheme=scheme,
            n_subjects=config.n_subjects or None,
            sequences=config.sequences,
            split_file=split_file,
            multiple=config.slice_multiple,
        )
    switches = dict(VARIANT_SWITCHES[variant])
    model_type = switches.pop("model_type", "samr")
    device = None if config.device == "auto" else config.device
    cfg = preset_config(
        config.samr_preset, model_type=model_type, max_steps=config.samr_steps, num_workers=0, seed=0, **switches
    )
    trainer = GANTrainer(cfg, sequences=data.sequences, device=device, label_scheme=data.scheme)
    result = trainer.fit(data.train, out_dir=work / "run", progress=False, validate=False, grids=True)
    folder = trainer.export(
        work / "weights",
        data.atlas,
        label_scheme=data.scheme,
        card={
            "title": f"SAMR benchmark generator ({variant}), trained on the benchmark's training split",
            "data": data.description,
            "preset": config.samr_preset,
            "steps": result.steps,
            "simulated": data.simulated,
            "training config": json.dumps(cfg.to_dict(), sort_keys=True),
        },
    )
    synth = Synthesizer(folder, device=config.device)
    synth.load()
    ids = list(split["train"])
    seconds = time.perf_counter() - t0
    log(f"{variant}: trained {result.steps} GAN steps on {len(ids)} training subjects ({seconds:.0f} s)")
    declared = declared_training_identities(synth.atlas.info)
    expected = {identities.get(i, patient_id(i)) for i in ids}
    if declared != expected:
        raise RuntimeError(
            f"the {variant!r} weights declare other training data than the benchmark's training split; "
            "check samraug.training.gan.prepare_gan_data's atlas.info['training_data']"
        )
    info = {"steps": result.steps, "train_seconds": round(result.seconds, 1), "weights": str(folder), **cfg.to_dict()}
    return Painter(variant, synth, "trained here on the training split", declared, info)


# ---------------------------------------------------------------------------------------------------- arms
def _arm_cache_keys(arm: ArmSpec, pool_seed: int, n_real: int) -> set[tuple[Any, ...]]:
    """The cached artefacts an arm uses (each kept while a later arm still needs it)."""
    n = n_synthetic(n_real, arm.ratio) if arm.ratio else 0
    if arm.kind == "conventional":
        return {(arm.kind, n, pool_seed)}
    if arm.kind in PAINTER_OF_KIND:
        return {_pool_key(arm, pool_seed)}
    return set()


def _pool_key(arm: ArmSpec, pool_seed: int) -> tuple[Any, ...]:
    return ("painted", arm.kind, arm.variant, arm.mode, pool_seed)


@dataclass
class ArmInputs:
    """What an arm builder may use: the real slices of the arm's data fraction, a pool seed, the generators, the
    cache shared between arms and seeds, the size of the painted pools (the largest any painting arm of this data
    fraction needs), the control arm's extra real slices (the generator's training subjects), the real training
    subjects (``tio.Subject`` by id; the painting arms use those of the arm's slices) and their label scheme."""

    real: SliceSet
    pool_seed: int
    painters: Mapping[str, Painter]
    cache: dict[tuple[Any, ...], Any]
    n_masks: int
    log: Callable[[str], None] = print
    generator_data: SliceSet | None = None
    subjects: Mapping[str, Any] = field(default_factory=dict)
    scheme: str | None = None


# One small builder per arm kind: each returns the arm's training data set and what it adds (sizes, donors).
def _build_real(arm: ArmSpec, x: ArmInputs, info: dict[str, Any]) -> Any:
    return x.real


def _build_conventional_otf(arm: ArmSpec, x: ArmInputs, info: dict[str, Any]) -> Any:
    info["augmented_on_the_fly"] = True
    return ConventionalDataset(x.real)


def _build_conventional(arm: ArmSpec, x: ArmInputs, info: dict[str, Any]) -> Any:
    key = ("conventional", info["n_synthetic"], x.pool_seed)
    if key not in x.cache:
        x.cache[key] = conventional_pool(x.real, info["n_synthetic"], seed=x.pool_seed * 1000 + 4)
    return MixedDataset(x.real, x.cache[key])


#: Pool seeds of the painters: SAMR (whole and local) and RandomLabelsToImage share one, so they paint the same edits.
_PAINT_SEED = {"copy_paste": 1, "labels_to_image": 3, "generator": 3}


def _build_painted(arm: ArmSpec, x: ArmInputs, info: dict[str, Any]) -> Any:
    """A painting arm through ``SAMRAugmentedDataset(subjects, painter=..., mode=...)`` (:func:`painted_pool`)."""
    n = info["n_synthetic"]
    key = _pool_key(arm, x.pool_seed)
    if key not in x.cache:
        missing = [s for s in x.real.subjects if s not in x.subjects]
        if missing or x.scheme is None:
            raise ValueError(
                f"arm {arm.name!r} paints through samraug.dataset.SAMRAugmentedDataset and needs the real training "
                f"subjects (tio.Subject) and their scheme; missing: {missing or 'the scheme'}"
            )
        if arm.kind == "generator":
            variant = str(arm.variant)
            if variant not in x.painters:
                raise ValueError(f"arm {arm.name!r} needs the {variant!r} generator; none was given")
            synth = x.painters[variant].synthesizer
            mode: str | None = arm.mode
            local = x.painters[variant].info if mode == "local" else {}
        else:  # copy-paste / labels-to-image: the SAMR generator's sequences and grid define the items
            owner = x.painters.get("samr") or next(iter(x.painters.values()), None)
            if owner is None:
                raise ValueError(f"arm {arm.name!r} needs a generator (its sequences and grid); pass --weights")
            synth, mode, local = owner.synthesizer, None, {}
        edits = local.get("edit_kind")  # the local options (None: the library's defaults)
        # carve edits: copy-paste's pool seed, so both arms edit the same sources with the same donors
        mixture = None if edits is None else local_edit_mixture(edits)
        seed_kind = "copy_paste" if mixture is not None and set(mixture) & set(CARVE_KINDS) else arm.kind
        t0 = time.perf_counter()
        pool, what = painted_pool(
            [x.subjects[s] for s in x.real.subjects],
            x.real,
            max(n, x.n_masks),
            painter=PAINTER_OF_KIND[arm.kind],
            synthesizer=synth,
            scheme=x.scheme,
            seed=x.pool_seed * 1000 + _PAINT_SEED[seed_kind],
            mode=mode,
            healthy=local.get("healthy"),
            region=local.get("region"),
            insert=local.get("insert"),
            n_insert=local.get("n_insert"),
            max_region_mm=local.get("max_region_mm"),
            edits=None if mixture is None or mixture == {"random": 1.0} else _edits_arg(mixture),
        )
        x.cache[key] = (pool, what)
        x.log(
            f"pool seed {x.pool_seed}: {len(pool)} {what['painter']}"
            + (f" ({mode})" if mode else "")
            + f" slices from {what['volumes']} synthetic volumes ({time.perf_counter() - t0:.0f} s)"
        )
    pool, what = x.cache[key]
    info["donors"] = list(what["donors"])
    info["painter"] = what["painter"]
    info["left_real_volumes"] = what["left_real"]
    info["mode"] = what["mode"]
    for option in ("healthy", "region", "insert", "n_insert", "edit_kind", "max_region_mm"):
        if option in what:
            info[option] = what[option]
    info["public_path"] = "samraug.dataset.SAMRAugmentedDataset"
    used = pool.subset(range(n)) if len(pool) > n else pool
    volumes = sorted({int(o["volume"]) for o in used.origin})
    info["synthetic_volumes"] = len(volumes)
    info["edits"] = [e for e in what["edits"] if e["volume"] in set(volumes)]
    return MixedDataset(x.real, used)


def _build_control(arm: ArmSpec, x: ArmInputs, info: dict[str, Any]) -> Any:
    if x.generator_data is None:
        raise ValueError(f"arm {arm.name!r} needs the generator's training subjects; none were prepared")
    have = set(x.real.subjects)
    extra = x.generator_data.select_subjects([s for s in x.generator_data.subjects if s not in have])
    info["n_generator_data"] = len(extra)
    info["generator_data_subjects"] = extra.subjects
    return SliceSet.concat([x.real, extra]) if len(extra) else x.real


ARM_BUILDERS: dict[str, Callable[[ArmSpec, ArmInputs, dict[str, Any]], Any]] = {
    "real": _build_real,
    "conventional_otf": _build_conventional_otf,
    "conventional": _build_conventional,
    "copy_paste": _build_painted,
    "labels_to_image": _build_painted,
    "generator": _build_painted,
    "control": _build_control,
}


def build_arm_dataset(
    arm: ArmSpec,
    real: SliceSet,
    pool_seed: int,
    painters: Mapping[str, Painter],
    cache: dict[tuple[Any, ...], Any],
    n_masks: int,
    log: Callable[[str], None] = print,
    generator_data: SliceSet | None = None,
    subjects: Mapping[str, Any] | None = None,
    scheme: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The training data set of one arm, its pools drawn with ``pool_seed``, and a description (sizes, donors,
    and for painting arms the painter, mode and per-volume edit records of the public path).

    ``cache`` holds the pools, so a pool drawn once (``resample_pools=False``) serves every seed, and each painter's
    pool of ``n_masks`` slices serves every ratio (the 25 % arm uses the head of the 50 % pool). ``generator_data``:
    the control arm's extra real slices. ``subjects``: the real training subjects by id and ``scheme`` their label
    scheme (painting arms).
    """
    if arm.kind not in ARM_BUILDERS:
        raise ValueError(f"unknown arm kind {arm.kind!r}; known: {sorted(ARM_BUILDERS)}")
    n = n_synthetic(len(real), arm.ratio) if arm.ratio else 0
    info: dict[str, Any] = {
        "n_real": len(real),
        "n_real_subjects": len(real.subjects),
        "n_synthetic": n,
        "donors": [],
        "pool_seed": pool_seed,
    }
    inputs = ArmInputs(real, pool_seed, painters, cache, n_masks, log, generator_data, dict(subjects or {}), scheme)
    return ARM_BUILDERS[arm.kind](arm, inputs, info), info


def fraction_subset(real: SliceSet, fraction: float, seed: int = 0) -> SliceSet:
    """The real slices of ``ceil(fraction * n)`` training subjects (at least 2), drawn by a seeded permutation so
    that smaller fractions are subsets of larger ones.

    Example:
        >>> # fraction_subset(real, 0.25).subjects  # a quarter of the training subjects
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction (of the training subjects) must be in (0, 1], got {fraction}")
    subjects = real.subjects
    if fraction >= 1:
        return real
    order = torch.randperm(len(subjects), generator=torch.Generator().manual_seed(seed)).tolist()
    k = min(len(subjects), max(2, math.ceil(fraction * len(subjects))))
    return real.select_subjects([subjects[i] for i in order[:k]])


def _mean_over_subjects(per_subject: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for region in REGIONS:
        out[region] = {}
        for metric in METRICS:
            vals = [float(s[region][metric]) for s in per_subject.values() if region in s]
            out[region][metric] = float(np.nanmean(vals)) if vals else float("nan")
    return out


def _summary(per_seed: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for region in REGIONS:
        out[region] = {}
        for metric in METRICS:
            v = np.asarray([s[region][metric] for s in per_seed], dtype=np.float64)
            v = v[np.isfinite(v)]
            out[region][metric] = {
                "mean": float(v.mean()) if v.size else float("nan"),
                "std": float(v.std(ddof=1)) if v.size > 1 else 0.0 if v.size else float("nan"),
                "n": int(v.size),
            }
    return out


STATISTICS_NOTE = (
    "Score: mean lesion Dice of one (seed, test subject) = the mean over edema, cavity and tumor of the 3D Dice, "
    "leaving out every region absent from both the prediction and the ground truth (NaN cells, where all are, are "
    "left out of the means). Difference: arm minus its real-only reference (same data fraction, same segmenter "
    "seed, same test subject). 95 % CI: percentile bootstrap of the mean, resampling seeds and then test subjects "
    "with replacement (crossed design, 10000 resamples). MDD: smallest true difference detected at 5 % two-sided "
    "with 80 % power, (1.96 + 0.84) / 1.96 x the CI half-width."
)


def arm_fraction(arm: ArmSpec, config: BenchmarkConfig) -> float:
    """The data fraction an arm trains at: its own (sweep points) or the benchmark's low-data ``fraction``."""
    return float(arm.fraction if arm.fraction is not None else config.fraction)


def reference_arm(name: str, results: Mapping[str, Any]) -> str | None:
    """The real-only arm at the same data fraction as ``name`` (None if the run has none, or ``name`` is it)."""
    frac = results[name]["fraction"]
    for other, r in results.items():
        if r["spec"]["kind"] == "real" and r["fraction"] == frac:
            return None if other == name else other
    return None


def copy_paste_arm(name: str, results: Mapping[str, Any]) -> str | None:
    """The copy-paste arm at the same data fraction as the generator arm ``name`` (None if the run has none, or
    ``name`` is no generator arm): the strongest classical baseline each SAMR arm is also compared with."""
    if results[name]["spec"]["kind"] != "generator":
        return None
    frac = results[name]["fraction"]
    for other, r in results.items():
        if r["spec"]["kind"] == "copy_paste" and r["fraction"] == frac:
            return other
    return None


def paired_statistics(
    results: Mapping[str, Any], seeds: Sequence[str], subjects: Sequence[str], n_resamples: int = 10000
) -> dict[str, Any]:
    """Per arm: its mean lesion Dice and its paired difference to its real-only reference, each with a crossed
    bootstrap 95 % CI (:mod:`benchmarks.stats`; the definitions are in :data:`STATISTICS_NOTE`); a generator arm
    also its paired difference to the copy-paste arm of its data fraction (``"vs_copy_paste"``, when the run has
    one)."""
    matrix = {
        name: score_matrix({s: arm["seeds"][s]["subjects"] for s in seeds}, seeds, subjects, REGIONS)
        for name, arm in results.items()
    }  # each arm's (seed, subject) scores, once: an arm is also every other arm's reference
    out: dict[str, Any] = {}
    for name in results:
        scores = matrix[name]
        entry: dict[str, Any] = {"reference": reference_arm(name, results), "difference": None}
        entry["mean_lesion_dice"] = (
            paired_bootstrap(scores, n_resamples=n_resamples).to_dict() if np.isfinite(scores).any() else None
        )
        ref = entry["reference"]
        if ref is not None:
            diff = scores - matrix[ref]
            if np.isfinite(diff).any():
                entry["difference"] = paired_bootstrap(diff, n_resamples=n_resamples).to_dict()
            entry["differences"] = [[None if not math.isfinite(v) else round(float(v), 5) for v in row] for row in diff]
        cp = copy_paste_arm(name, results)
        if cp is not None:
            d_cp = scores - matrix[cp]
            if np.isfinite(d_cp).any():
                entry["vs_copy_paste"] = {"reference": cp} | paired_bootstrap(d_cp, n_resamples=n_resamples).to_dict()
        out[name] = entry
    return out


def machine_info() -> dict[str, Any]:
    """Platform, CPUs, torch, device and load: the context the timings and numbers were produced in."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    try:
        info["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        pass
    try:
        info["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    import torchio

    info["torchio"] = torchio.__version__
    return info


@dataclass
class BenchmarkContext:
    """The prepared protocol: split, generators, real training slices, held-out volumes (shared by the
    augmentation and quality benchmarks).

    Attributes:
        split: ``{"train", "val", "test"}`` subject ids (patient-level).
        identities: Subject id -> data identity (:func:`check_protocol`).
        painters: Variant -> :class:`Painter`.
        sequences: Image channels, in order (the generators' order).
        real: Real training slices (training subjects only).
        test: Held-out volumes.
        source: Description of the data.
        scheme: Label scheme of the data.
        warnings: Unverifiable protocol items.
        affines: Affine of each test subject.
        subjects: The real training subjects (``tio.Subject``) by id; the painting arms' source and donors.
    """

    split: dict[str, list[str]]
    identities: dict[str, str]
    painters: dict[str, Painter]
    sequences: tuple[str, ...]
    real: SliceSet
    test: list[EvalVolume]
    source: dict[str, Any]
    scheme: str
    warnings: list[str]
    affines: dict[str, np.ndarray] = field(default_factory=dict)
    subjects: dict[str, Any] = field(default_factory=dict)


def prepare_context(
    config: BenchmarkConfig,
    variants: Sequence[str],
    log: Callable[[str], None] = print,
    painters: Mapping[str, Painter] | None = None,
) -> BenchmarkContext:
    """Subjects -> patient-level split -> generators (given or trained on the training split) -> real training
    slices and held-out volumes, with the protocol checked (:func:`check_protocol`)."""
    from samraug.data.splits import patient_split

    subjects, identities, source, scheme = load_subjects(config, log)
    by_id = {s["subject_id"]: s for s in subjects}
    ids = list(by_id)
    n_patients = len({identities.get(i, i) for i in ids})
    if n_patients < config.n_test + 2:
        raise ValueError(f"{n_patients} patients cannot give {config.n_test} test and >= 2 training patients; add data")
    split = patient_split(ids, test_fraction=config.n_test / n_patients, seed=config.split_seed)
    train_subjects = [by_id[i] for i in split["train"]]

    if painters is None:
        painters = resolve_painters(config, variants, split, identities, scheme, log)
    painters = dict(painters)
    missing_painters = [v for v in variants if v not in painters]
    if missing_painters:
        raise ValueError(f"no generator given for the variants {missing_painters} of the selected arms")
    sequences = config.sequences
    for p in painters.values():
        seqs = tuple(p.synthesizer.sequences)
        if sequences is None:
            sequences = seqs
        elif tuple(sequences) != seqs:
            raise ValueError(
                f"the {p.variant!r} generator makes {list(seqs)} but the benchmark uses {list(sequences)}: every "
                "generator must make the segmenter's sequences in the same order"
            )
    available = _data_sequences(subjects[0])
    sequences = tuple(sequences or available)
    missing = [s for s in sequences if s not in available]
    if missing:
        raise ValueError(
            f"the data has no sequence {missing} (it has {list(available)}); pass weights trained on your "
            "sequences (--weights) or train SAMR on your data (--train-samr)"
        )
    # Every subject must be on each generator's atlas grid (checked while preparing them).
    atlases = _whole_atlases(painters.values())
    t0 = time.perf_counter()
    real = prepare_slices(
        train_subjects,
        sequences,
        scheme,
        selection=config.selection,
        multiple=config.slice_multiple,
        atlases=atlases,
    )
    test, affines = [], {}
    for i in split["test"]:
        vol, affine = prepare_volume(by_id[i], sequences, scheme, atlases=atlases)
        test.append(vol)
        affines[i] = affine
    log(
        f"split: {len(split['train'])} training subjects ({len(real)} slices, "
        f"{int(real.has_lesion.sum())} with lesion), {len(test)} test subjects; sequences {list(sequences)} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    warnings_ = check_protocol(
        split,
        segmenter_subjects=real.subjects,
        donor_subjects=real.subjects,
        samr_training={v: p.training_identities for v, p in painters.items()},
        identities=identities,
    )
    for w in warnings_:
        log(f"WARNING: {w}")
    source["scheme"] = scheme
    return BenchmarkContext(
        split,
        identities,
        painters,
        sequences,
        real,
        test,
        source,
        scheme,
        warnings_,
        affines,
        dict(zip(split["train"], train_subjects, strict=True)),
    )


def generator_training_slices(config: BenchmarkConfig, ctx: BenchmarkContext, variant: str = "samr") -> SliceSet:
    """The labelled subjects the ``variant`` generator was trained on, as real training slices (the control arm).

    A generator trained here (``--train-samr``) saw the whole training split: its slices are ``ctx.real``. Given
    weights trained on a phantom data set name it on their model card's data line (``N subjects, R mm, seed S``):
    that data set is generated (cached) and its slices returned, subject ids prefixed ``generator-data:`` (phantom
    case names repeat across data sets). None of them may be a test subject (compared by data identity).
    """
    from samraug.data.brats import load_brats
    from samraug.data.phantom import ensure_phantom_dataset
    from samraug.hub import CARD_NAME, resolve_weights

    painter = ctx.painters.get(variant)
    if painter is None:
        raise ValueError(f"the control arm needs the {variant!r} generator; add a SAMR arm or --weights")
    if config.train_samr:
        return ctx.real
    weights = config.weights if variant == "samr" else config.variant_weights.get(variant)
    card = resolve_weights(weights) / CARD_NAME
    m = _CARD_PHANTOM.search(card.read_text(encoding="utf-8") if card.is_file() else "")
    if m is None:
        raise ValueError(
            f"the control arm needs the data the {variant!r} weights were trained on, but {card} names no samraug "
            "phantom data set; run with --train-samr (the generator then trains on the training split) or drop "
            "the control arm (--arms)"
        )
    n, resolution, seed = int(m.group(1)), float(m.group(2)), int(m.group(3))
    if config.data is not None or resolution != config.resolution:
        raise ValueError(
            f"the {variant!r} weights were trained on {resolution:g} mm phantom subjects; the control arm can only "
            f"add them to a phantom benchmark at the same resolution (this run: "
            f"{'BraTS data' if config.data else f'{config.resolution:g} mm'}); drop the control arm (--arms)"
        )
    root = ensure_phantom_dataset(
        n, seed=seed, resolution=resolution, cache_dir=config.cache_dir, workers=max(1, min(8, os.cpu_count() or 1))
    )
    meta = json.loads((root / "phantom.json").read_text())
    test_ids = {ctx.identities.get(t, t) for t in ctx.split["test"]}
    leaked = sorted(c for c, sd in meta["subjects"].items() if f"phantom-seed:{int(sd)}" in test_ids)
    if leaked:
        raise ValueError(f"the generator's training subjects {leaked} are test subjects of this benchmark")
    atlases = _whole_atlases(ctx.painters.values())
    subjects = load_brats(root, scheme="brats2024", extra_sequences=("aptw",))
    slices = prepare_slices(
        subjects, ctx.sequences, ctx.scheme, selection=config.selection, multiple=config.slice_multiple, atlases=atlases
    )
    slices.subject_ids = [f"generator-data:{s}" for s in slices.subject_ids]
    return slices


def run_benchmark(
    config: BenchmarkConfig,
    log: Callable[[str], None] = print,
    command: str | None = None,
    painters: Mapping[str, Painter] | None = None,
) -> dict[str, Any]:
    """Run the whole protocol and return the JSON-able results (see the module docstring).

    ``painters`` (variant -> :class:`Painter`) replaces weight resolution / training, e.g. for in-memory
    generators in tests; each must declare its training identities for the protocol check.
    """
    with torch_threads(config.threads):
        return _run_benchmark(config, log, command, painters)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (None: unchanged), restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_benchmark(
    config: BenchmarkConfig,
    log: Callable[[str], None],
    command: str | None,
    painters: Mapping[str, Painter] | None,
) -> dict[str, Any]:
    start = time.perf_counter()
    machine = machine_info()
    skipped: dict[str, str] = {}
    if painters is None or LOCAL_VARIANT not in painters:
        _, reason = local_weights(config)
        for name in config.arms:
            if ARMS[name].variant == LOCAL_VARIANT and reason is not None:
                skipped[name] = reason
                log(f"SKIPPED arm {name}: {reason}")
    arms = [ARMS[a] for a in config.arms if a not in skipped]
    if not arms:
        raise ValueError(f"every selected arm was skipped: {skipped}")
    variants = list(dict.fromkeys(a.variant for a in arms if a.kind == "generator" and a.variant))
    if any(a.kind in ("control", "copy_paste", "labels_to_image") for a in arms) and "samr" not in variants:
        # the control arm adds the SAMR generator's training subjects; the copy-paste and RandomLabelsToImage arms
        # paint through SAMRAugmentedDataset, whose items follow the SAMR weights' sequences and grid
        variants.append("samr")
    ctx = prepare_context(config, variants, log, painters)
    split, identities, painters, sequences, real, test = (
        ctx.split,
        ctx.identities,
        ctx.painters,
        ctx.sequences,
        ctx.real,
        ctx.test,
    )
    source, warnings_ = ctx.source, ctx.warnings
    samr_training = {v: p.training_identities for v, p in painters.items()}

    results: dict[str, Any] = {a.name: {"spec": dataclasses.asdict(a), "seeds": {}} for a in arms}
    generator_data = None
    if any(a.kind == "control" for a in arms):
        t0 = time.perf_counter()
        generator_data = generator_training_slices(config, ctx)
        log(
            f"control: {len(generator_data.subjects)} subjects the generator was trained on, {len(generator_data)} "
            f"slices ({time.perf_counter() - t0:.0f} s)"
        )
    fractions = {a.name: arm_fraction(a, config) for a in arms}
    reals = {f: fraction_subset(real, f, seed=config.split_seed) for f in sorted(set(fractions.values()))}
    for f, r in reals.items():
        if f < 1:
            log(f"data fraction {f:g}: {len(r.subjects)} of {len(real.subjects)} training subjects, {len(r)} slices")
    caches: dict[float, dict[tuple[Any, ...], Any]] = {f: {} for f in reals}
    n_masks = {
        f: max(
            (n_synthetic(len(reals[f]), a.ratio) for a in arms if a.kind in PAINTER_OF_KIND and fractions[a.name] == f),
            default=0,
        )
        for f in reals
    }
    for k, arm in enumerate(arms):  # arm-major, so that only the current arm's pools are in memory
        f = fractions[arm.name]
        arm_real = reals[f]
        results[arm.name]["fraction"] = f
        for seed in config.seeds:
            pool_seed = int(seed) if config.resample_pools else 0
            t0 = time.perf_counter()
            dataset, info = build_arm_dataset(
                arm,
                arm_real,
                pool_seed,
                painters,
                caches[f],
                n_masks[f],
                log,
                generator_data,
                subjects=ctx.subjects,
                scheme=ctx.scheme,
            )
            t_data = time.perf_counter() - t0
            check_protocol(
                split,
                segmenter_subjects=arm_real.subjects,
                donor_subjects=info["donors"],
                samr_training=samr_training,
                identities=identities,
            )
            trained = train_segmenter(dataset, config.segmenter(seed))
            t1 = time.perf_counter()
            per_subject = evaluate_segmenter(trained.model, test, regions=REGIONS)
            t_eval = time.perf_counter() - t1
            mean = _mean_over_subjects(per_subject)
            lesion = [mean_lesion_dice(v, REGIONS) for v in per_subject.values()]
            results[arm.name]["seeds"][str(seed)] = {
                "mean": mean,
                "mean_lesion_dice": float(np.nanmean(lesion)) if np.isfinite(lesion).any() else float("nan"),
                "subjects": per_subject,
                **info,
                "data_seconds": round(t_data, 2),
                "train_seconds": round(trained.seconds, 2),
                "eval_seconds": round(t_eval, 2),
                "loss_first": float(np.mean(trained.losses[: max(1, len(trained.losses) // 10)])),
                "loss_last": float(np.mean(trained.losses[-max(1, len(trained.losses) // 10) :])),
            }
            log(
                f"{arm.name:>18} seed {seed}: Dice "
                + " ".join(f"{r} {mean[r]['dice']:.3f}" for r in REGIONS)
                + f" | data {t_data:.0f} s, train {trained.seconds:.0f} s, eval {t_eval:.0f} s"
            )
            del dataset, trained
        pool_seeds = list(config.seeds) if config.resample_pools else [0]
        later: set[tuple[Any, ...]] = set()
        for a in arms[k + 1 :]:
            if fractions[a.name] == f:
                for ps in pool_seeds:
                    later |= _arm_cache_keys(a, int(ps), len(arm_real))
        for key in [key for key in caches[f] if key not in later]:
            del caches[f][key]
    for name in results:
        results[name]["summary"] = _summary([s["mean"] for s in results[name]["seeds"].values()])
    paired = paired_statistics(results, [str(s) for s in config.seeds], [v.subject_id for v in test])
    wall = time.perf_counter() - start
    try:
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    return {
        "benchmark": "augmentation efficacy (SAMR paper Table 2 protocol)",
        "simulated_data": bool(source.get("simulated")),
        "command": command,
        "machine": machine,
        "config": config.to_dict(),
        "segmenter": config.segmenter(config.seeds[0]).to_dict() | {"seed": "per run"},
        "data": source | {"split": split, "sequences": list(sequences), "n_real_slices": len(real)},
        "generators": {
            v: {"source": p.source, "training_data_declared": p.training_identities is not None, **p.info}
            for v, p in painters.items()
        },
        "protocol": {"check": "passed", "warnings": warnings_},
        "regions": list(REGIONS),
        "metrics": list(METRICS),
        "arms": results,
        "skipped_arms": skipped,
        "paired": paired,
        "statistics": STATISTICS_NOTE,
        "wall_seconds": round(wall, 1),
    }


#: Config keys that may differ between runs that are merged (everything else defines the experiment).
_MERGE_FREE_KEYS = ("arms", "work_dir", "local_weights", "weights", "variant_weights")


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ; a key one side lacks reads None there (an option added since the older run
    was made, whose default None leaves the run as it was).

    Example:
        >>> _differing({"steps": 9, "local_max_region_mm": None}, {"steps": 10})
        ['steps']
    """
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _has_local_arm(run: Mapping[str, Any]) -> bool:
    """Whether a run's arms include a local-mode SAMR arm (the only arms its ``local_*`` options act on)."""
    return any(a in ARMS and ARMS[a].kind == "generator" and ARMS[a].mode == "local" for a in run["config"]["arms"])


def merge_results(runs: Sequence[Mapping[str, Any]], n_resamples: int = 10000) -> dict[str, Any]:
    """One report from several runs of the same experiment that ran different arms or seeds (e.g. in parallel
    processes).

    The runs must agree on everything that defines the experiment: the config except its arms and seeds (data,
    split, steps, segmenter, ...), the data and the test subjects. The merged seeds are the union of the runs' (in
    the order they first appear), and every arm must have run every one of them, in one run or several: seeds 0-3
    and 4-7 of the same arms, run side by side, merge into one 8-seed report. The ``local_*`` options (how the
    local arm edits and paints) define only the runs that hold a local arm: a copy-paste or real-only run merges
    with a local run of any local options, and two runs with local arms must agree on them; the merged config keeps
    the local run's. A config key one run lacks (an option added since it was made) counts as None there. An arm
    seed present in several runs must have identical per-subject scores in each (the benchmark is deterministic: a
    difference means the runs are not comparable). The summaries and paired statistics are recomputed over the
    union of the arms and seeds, so an arm is paired with a real-only (and copy-paste) reference from another run.
    ``command`` becomes the list of the runs' commands, ``wall_seconds`` their sum.

    Example:
        >>> merged = merge_results([json.load(open("a/augmentation.json")), json.load(open("b/augmentation.json"))])
        ...  # doctest: +SKIP
    """
    if len(runs) < 2:
        raise ValueError("merge_results needs at least two runs")
    first = runs[0]

    def experiment(r: Mapping[str, Any]) -> dict[str, Any]:
        free = (*_MERGE_FREE_KEYS, "seeds")
        return {k: v for k, v in r["config"].items() if k not in free and not k.startswith("local_")}

    def local_options(r: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r["config"].items() if k.startswith("local_") and k not in _MERGE_FREE_KEYS}

    local_runs = [r for r in runs if _has_local_arm(r)]
    for r in local_runs[1:]:
        key, ref = local_options(r), local_options(local_runs[0])
        diff = _differing(key, ref)
        if diff:
            raise ValueError(
                f"run {runs.index(r)} has other local options than run {runs.index(local_runs[0])} ({diff}), and "
                "both hold a local arm: not the same experiment"
            )

    arms: dict[str, Any] = {}
    generators: dict[str, Any] = {}
    for i, r in enumerate(runs):
        for key, what in ((experiment(r), "config"), (r["data"], "data"), (r["segmenter"], "segmenter")):
            ref = {"config": experiment(first), "data": first["data"], "segmenter": first["segmenter"]}[what]
            diff = _differing(key, ref)
            if diff:
                raise ValueError(f"run {i} differs from run 0 in its {what} ({diff}): not the same experiment")
        for name, arm in r["arms"].items():
            if name not in arms:
                arms[name] = dict(arm) | {"seeds": dict(arm["seeds"])}
                continue
            for seed, run in arm["seeds"].items():
                have = arms[name]["seeds"].get(seed)
                if have is None:
                    arms[name]["seeds"][seed] = run
                elif run["subjects"] != have["subjects"]:
                    raise ValueError(
                        f"arm {name!r} seed {seed} has other per-subject scores in run {i} than in an earlier "
                        "run: the runs are not comparable (different code, weights or machine nondeterminism)"
                    )
        for v, g in r.get("generators", {}).items():
            if v in generators and generators[v].get("model_sha256") != g.get("model_sha256"):
                raise ValueError(f"generator {v!r} has other weights in run {i} than in an earlier run")
            generators.setdefault(v, g)
    order = [a for a in ARMS if a in arms] + [a for a in arms if a not in ARMS]
    seeds = list(dict.fromkeys(str(s) for r in runs for s in r["config"]["seeds"]))
    for name in order:
        missing = [s for s in seeds if s not in arms[name]["seeds"]]
        if missing:
            raise ValueError(
                f"arm {name!r} has no run of seeds {missing} in these runs (seeds {seeds}): merge runs in which every "
                "arm covers every seed, or leave those seeds' runs out"
            )
        arms[name]["seeds"] = {s: arms[name]["seeds"][s] for s in seeds}
        arms[name]["summary"] = _summary([run["mean"] for run in arms[name]["seeds"].values()])
    arms = {a: arms[a] for a in order}
    subjects = list(next(iter(arms.values()))["seeds"][seeds[0]]["subjects"])  # the runs' test order
    config = dict(first["config"]) | (local_options(local_runs[0]) if local_runs else {})
    config |= {"arms": order, "seeds": [int(s) if s.lstrip("-").isdigit() else s for s in seeds]}
    skipped = {a: why for r in runs for a, why in (r.get("skipped_arms") or {}).items() if a not in arms}
    return dict(first) | {
        "command": [r["command"] for r in runs],
        "config": config,
        "generators": generators,
        "arms": arms,
        "skipped_arms": skipped,
        "paired": paired_statistics(arms, seeds, subjects, n_resamples=n_resamples),
        "protocol": {"check": "passed", "warnings": [w for r in runs for w in r["protocol"]["warnings"]]},
        "merged_from": len(runs),
        "wall_seconds": round(sum(float(r["wall_seconds"]) for r in runs), 1),
    }


# ---------------------------------------------------------------------------------------------------- outputs
def _cell(stat: Mapping[str, float], metric: str) -> str:
    mean, std = stat["mean"], stat["std"]
    if not math.isfinite(mean):
        return "n/a"
    digits = 2 if metric == "hd95" else 3
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(results: Mapping[str, Any]) -> str:
    """The markdown table in the paper's Table 2 layout: rows = arms; column groups Dice | HD95 | Sensitivity |
    Specificity, each over Edema | Cavity | Tumor; cells mean ± std over seeds."""
    header = ["Arm"] + [f"{METRIC_TITLES[m]}: {r.capitalize()}" for m in METRICS for r in REGIONS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for arm in results["arms"].values():
        summary = arm["summary"]
        cells = [_cell(summary[r][m], m) for m in METRICS for r in REGIONS]
        lines.append("| " + " | ".join([arm["spec"]["title"], *cells]) + " |")
    return "\n".join(lines)


def _ci(stat: Mapping[str, float] | None, signed: bool = False) -> str:
    if not stat:
        return "n/a"
    sign = "+" if signed else ""
    return f"{stat['mean']:{sign}.3f} [{stat['low']:{sign}.3f}, {stat['high']:{sign}.3f}]"


def format_paired_table(results: Mapping[str, Any]) -> str:
    """The decision table: per arm its data fraction, synthetic ratio, mean lesion Dice with 95 % CI, the paired
    difference to real-only with 95 % CI, the CI half-width and the minimal detectable difference (MDD); when a
    generator arm has a copy-paste arm beside it, a last column with its paired difference to copy-paste."""
    with_cp = any("vs_copy_paste" in p for p in results["paired"].values())
    lines = [
        "| Arm | Subjects | Added | Mean lesion Dice [95 % CI] | Δ vs real-only [95 % CI] | CI half-width | MDD |"
        + (" Δ vs copy-paste [95 % CI] |" if with_cp else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_cp else ""),
    ]
    for name, arm in results["arms"].items():
        p = results["paired"][name]
        d = p["difference"]
        runs = list(arm["seeds"].values())
        subjects = runs[0].get("n_real_subjects", "") if runs else ""
        extra = runs[0].get("n_generator_data", 0) if runs else 0
        subj = f"{subjects} ({arm['fraction']:.0%})" + (
            f" + {len(runs[0]['generator_data_subjects'])}" if extra else ""
        )
        added = f"{arm['spec']['ratio']:.0%}" if arm["spec"]["ratio"] else "–"
        if p["reference"] is not None:
            diff = _ci(d, signed=True)
        else:  # the real-only arm itself, or a run without one at this arm's data fraction
            diff = "reference" if arm["spec"]["kind"] == "real" else "– (no real-only arm)"
        if d and not d["excludes_zero"]:
            diff += " (CI includes 0)"
        hw = f"{d['half_width']:.3f}" if d else "–"
        mdd = f"{d['mdd']:.3f}" if d else "–"
        row = f"| {arm['spec']['title']} | {subj} | {added} | {_ci(p['mean_lesion_dice'])} | {diff} | {hw} | {mdd} |"
        if with_cp:
            vs = p.get("vs_copy_paste")
            cell = "–" if vs is None else _ci(vs, signed=True) + ("" if vs["excludes_zero"] else " (CI includes 0)")
            row += f" {cell} |"
        lines.append(row)
    return "\n".join(lines)


def format_report(results: Mapping[str, Any]) -> str:
    """The markdown report: title, data, table, and how it was produced."""
    cfg, data = results["config"], results["data"]
    n_seeds = len(cfg["seeds"])
    what = "digital phantom (SIMULATED data)" if results["simulated_data"] else f"BraTS data ({data['root']})"
    lines = [
        "# Augmentation efficacy (SAMR paper Table 2 protocol)",
        "",
        f"Data: {what}; {len(data['split']['train'])} training / {len(data['split']['test'])} held-out test "
        f"subjects (patient-level split); {data['n_real_slices']} real training slices; sequences "
        f"{', '.join(data['sequences'])}.",
        f"Segmenter: 2D U-Net (depth {cfg['depth']}, width {cfg['base_channels']}), Adam {cfg['lr']:g}, batch "
        f"{cfg['batch_size']}, {cfg['steps']} steps"
        + (f" on {cfg['crop_size']}² patches" if cfg["crop_size"] else "")
        + (" (foreground patches: a lesion class drawn uniformly)" if cfg.get("foreground_sampling") == "class" else "")
        + f", identical for every arm. Mean ± std over {n_seeds} seeds of the per-seed mean over test subjects; "
        "3D metrics per subject (HD95 in mm; BraTS legacy conventions for empty regions).",
        "",
        "## Paired differences (decision table)",
        "",
        format_paired_table(results),
        "",
        results.get("statistics", STATISTICS_NOTE),
        "",
        "## Per-region scores (paper Table 2 layout)",
        "",
        format_table(results),
        "",
    ]
    lines += [f"Skipped arm `{name}`: {why}" for name, why in results.get("skipped_arms", {}).items()]
    if results.get("skipped_arms"):
        lines.append("")
    lines.insert(
        4,
        "Painting arms (RandomLabelsToImage, copy-paste, SAMR whole and local) are built through the library's public "
        "path, `samraug.dataset.SAMRAugmentedDataset(subjects, painter=..., mode=...)`, over the training subjects.",
    )
    if results["config"].get("smoke"):
        lines = [*lines[:2], SMOKE_NOTICE, "", *lines[2:]]
    return "\n".join(lines + report_footer(results)) + "\n"


def report_footer(results: Mapping[str, Any]) -> list[str]:
    """The command, machine, wall-time and protocol-warning lines closing a markdown report."""
    machine = results["machine"]
    commands = results["command"] if isinstance(results["command"], list) else [results["command"]]
    merged = f" (sum of {len(commands)} merged runs)" if len(commands) > 1 else ""
    lines = [
        *(f"Command: `{c}`" for c in commands),
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, "
        f"{'GPU ' + machine['gpu'] if machine.get('gpu') else 'CPU only'}; "
        f"wall time {results['wall_seconds'] / 60:.1f} min{merged}.",
    ]
    return lines + [f"Warning: {w}" for w in results["protocol"]["warnings"]]


def plot_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bar chart: one panel per metric, regions on the x axis, one bar (mean ± std over seeds) per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results["arms"].values())
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4.2))
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(REGIONS))
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(2, len(arms))))
    for ax, metric in zip(axes, METRICS, strict=True):
        for k, arm in enumerate(arms):
            means = [arm["summary"][r][metric]["mean"] for r in REGIONS]
            stds = [arm["summary"][r][metric]["std"] for r in REGIONS]
            ax.bar(
                x + (k - (len(arms) - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                capsize=2,
                color=colors[k],
                label=arm["spec"]["title"],
            )
        ax.set_xticks(x, [r.capitalize() for r in REGIONS])
        ax.set_title(METRIC_TITLES[metric])
        if metric != "hd95":
            ax.set_ylim(0, 1.05)
    title = "Augmentation efficacy" + (" (digital phantom, simulated)" if results["simulated_data"] else "")
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(4, len(arms)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12 + 0.03 * (len(arms) // 4), 1, 0.95))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_differences(results: Mapping[str, Any], path: str | Path) -> Path:
    """Forest plot: per arm, the paired difference in mean lesion Dice to its real-only reference with its 95 % CI
    (dashed line at 0), and the arm's mean lesion Dice with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["arms"])
    titles = [results["arms"][n]["spec"]["title"] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))[::-1]
    for ax, key, label in (
        (axes[0], "difference", "Δ mean lesion Dice vs real-only (95 % CI)"),
        (axes[1], "mean_lesion_dice", "mean lesion Dice (95 % CI)"),
    ):
        for yi, n in zip(y, names, strict=True):
            st = results["paired"][n][key]
            if not st:
                continue
            color = "tab:green" if key == "difference" and st["excludes_zero"] and st["mean"] > 0 else "tab:blue"
            if key == "difference" and st["excludes_zero"] and st["mean"] < 0:
                color = "tab:red"
            ax.errorbar(
                st["mean"],
                yi,
                xerr=[[st["mean"] - st["low"]], [st["high"] - st["mean"]]],
                fmt="o",
                color=color,
                capsize=3,
            )
        ax.set_xlabel(label)
        if key == "difference":
            ax.axvline(0.0, color="k", ls="--", lw=1)
    axes[0].set_yticks(y, titles, fontsize=8)
    title = "Augmentation efficacy, paired differences" + (
        " (digital phantom, simulated)" if results["simulated_data"] else ""
    )
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


OUTPUT_NAMES = ("augmentation.md", "augmentation.json", "augmentation.png", "augmentation_ci.png")


def check_output_folder(out: str | Path, overwrite: bool = False) -> None:
    """Raise before any work if ``out`` already holds a benchmark's outputs and ``overwrite`` is not set."""
    existing = [n for n in OUTPUT_NAMES if (Path(out) / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds {existing}; pass --overwrite to replace them or choose another --out"
        )


def write_outputs(results: Mapping[str, Any], out: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write ``augmentation.{md,json,png}`` and ``augmentation_ci.png`` into ``out`` (each atomically); returns
    their paths. Existing outputs are only replaced with ``overwrite``."""
    out = Path(out)
    check_output_folder(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / n for k, n in zip(("md", "json", "png", "ci_png"), OUTPUT_NAMES, strict=True)}
    write_atomic(paths["md"], lambda p: p.write_text(format_report(results)))
    write_atomic(paths["json"], lambda p: p.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n"))
    write_atomic(paths["png"], lambda p: plot_results(results, p))
    write_atomic(paths["ci_png"], lambda p: plot_differences(results, p))
    return paths


# ---------------------------------------------------------------------------------------------------- CLI
def _csv(cast: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(cast(x.strip()) for x in text.split(",") if x.strip())

    return parse


def _arms(text: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return tuple(ARMS)
    return _csv(str)(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Example:")[-1],
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="defaults for everything below")
    p.add_argument("--out", default=None, help="output folder (default /tmp/samraug-bench/augmentation-<preset>)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="BraTS root folder (default: the digital phantom, simulated)")
    g.add_argument("--scheme", default=None, help="label scheme of --data (brats2021, brats2023, brats2024)")
    g.add_argument("--sequences", type=_csv(str), default=None, help="comma-separated sequences (default: the model's)")
    g.add_argument("--subjects", dest="n_subjects", type=int, default=None, help="phantom subjects (BraTS: max cases)")
    g.add_argument("--test-subjects", dest="n_test", type=int, default=None, help="held-out test subjects")
    g.add_argument("--resolution", type=float, default=None, help="phantom voxel size in mm (2 or 1)")
    g.add_argument("--phantom-seed", type=int, default=None, help="data-set seed of the benchmark phantom")
    g.add_argument("--cache-dir", default=None, help="phantom cache folder")
    g.add_argument("--split-seed", type=int, default=None)
    g = p.add_argument_group("arms and segmenter")
    g.add_argument("--arms", type=_arms, default=None, help=f"comma-separated arms or 'all': {', '.join(ARMS)}")
    g.add_argument("--seeds", type=_csv(int), default=None, help="comma-separated segmenter seeds")
    g.add_argument("--steps", type=int, default=None, help="optimiser steps per segmenter")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--depth", type=int, default=None)
    g.add_argument("--base-channels", type=int, default=None)
    g.add_argument("--crop-size", type=int, default=None, help="training patch size (0: whole slices)")
    g.add_argument("--selection", choices=("brain", "lesion"), default=None)
    g.add_argument(
        "--foreground-sampling",
        choices=FOREGROUND_SAMPLING,
        default=None,
        help="how a foreground training patch picks its lesion pixel: voxel (default: any lesion pixel, edema "
        "dominates) or class (nnU-Net v2's way: a lesion class present in the slice drawn uniformly, then a pixel)",
    )
    g.add_argument(
        "--fraction", type=float, default=None, help="fraction of the training subjects every arm uses (low-data)"
    )
    g.add_argument(
        "--resample-pools",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw the augmented/synthetic pools anew per seed (full default) or once (quick default)",
    )
    g.add_argument("--device", default=None, help="auto, cpu or cuda")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (quick: 1)")
    g.add_argument("--num-workers", type=int, default=None)
    g = p.add_argument_group("generators")
    g.add_argument(
        "--weights",
        default=None,
        help="SAMR weights: folder or org/name[@rev] (default: the bundled whole-image demo weights "
        "samraug/weights/samr-tiny-phantom)",
    )
    g.add_argument(
        "--variant-weights",
        action="append",
        default=[],
        metavar="VARIANT=WEIGHTS",
        help=f"weights of an ablation/baseline variant ({', '.join(VARIANTS[1:])}); repeatable",
    )
    g.add_argument(
        "--local-weights",
        default=None,
        metavar="FOLDER",
        help="local-mode weights of the samr_local_50 arm (default: samraug/weights/samr-tiny-local if it exists, "
        "else the arm is skipped with the reason printed)",
    )
    g.add_argument(
        "--local-healthy",
        choices=HEALTHY_MODES,
        default=None,
        help="what paints the healthy voxels of the local arms' regions: model (default: the generator), harmonic "
        "(classical 3D harmonic inpainting), spline (thin-plate spline under tension) or mirror (the spline guided by "
        "the other hemisphere; SAMRPainter(healthy=...))",
    )
    g.add_argument(
        "--local-region",
        choices=REGION_SEEDS,
        default=None,
        help="what seeds the local arms' repainted region: lesions (default: the changed voxels plus the old and new "
        "lesion) or changed (the changed voxels alone; SAMRPainter(region=...))",
    )
    g.add_argument(
        "--local-insert",
        type=float,
        default=None,
        metavar="P",
        help="the local arms' EditPolicy(p_insert=P): probability that an edit adds the edited lesion beside the real "
        "one instead of replacing it (default 0, the paper's edits)",
    )
    g.add_argument(
        "--local-n-insert",
        type=int,
        default=None,
        metavar="K",
        help="the local arms' EditPolicy(n_insert=K): lesions an inserting edit adds, each an independent random edit "
        "of the subject's own lesion (default 1; needs --local-insert above 0)",
    )
    g.add_argument(
        "--local-edits",
        default=None,
        metavar="EDITS",
        help="how the local arms edit the label maps: random (default: the edit policy's random edits) or carve "
        "(CarveMix's edit, another training subject's lesion added where it lies: with copy-paste's pool seed, the "
        "label maps the copy-paste arm fills with a donor's intensities, inside the brain; "
        "SAMRAugmentedDataset(edits='carve')), carve+random (both on each volume: the random edit, then carve's "
        "donor lesion on top), or a mixture drawn per synthetic volume, e.g. carve=0.5,random=0.5 (the random "
        "edits with --local-insert / --local-n-insert)",
    )
    g.add_argument(
        "--local-max-region-mm",
        type=float,
        default=None,
        metavar="MM",
        help="the local arms' SAMRPainter(max_region_mm=MM): a connected part of a repainted region wider than MM "
        "leaves its volume real (default: the painter's, 160 mm); raise it when many insertions chain into wide parts",
    )
    g.add_argument(
        "--train-samr", action="store_true", default=None, help="train SAMR and variants on the training split"
    )
    g.add_argument(
        "--no-train-samr",
        dest="train_samr",
        action="store_false",
        default=None,
        help="use given weights (quick default)",
    )
    g.add_argument("--samr-preset", default=None, help="generator preset when training (tiny, lite, paper)")
    g.add_argument("--samr-steps", type=int, default=None, help="GAN steps per variant when training")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs already in --out")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="RUN_DIR",
        help="instead of running: merge finished runs of the same experiment (other arms or other seeds, e.g. run "
        "in parallel processes; every arm must cover every seed) into one report in --out, with the summaries and "
        "paired statistics recomputed over all their arms and seeds",
    )
    p.add_argument("--quiet", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    variant_weights = {}
    for item in args.variant_weights:
        if "=" not in item:
            raise SystemExit(f"--variant-weights expects VARIANT=WEIGHTS, got {item!r}")
        k, v = item.split("=", 1)
        variant_weights[k.strip()] = v.strip()
    crop = args.crop_size
    overrides = {
        k: getattr(args, k)
        for k in (
            "data",
            "scheme",
            "sequences",
            "n_subjects",
            "n_test",
            "resolution",
            "phantom_seed",
            "cache_dir",
            "split_seed",
            "arms",
            "seeds",
            "steps",
            "batch_size",
            "depth",
            "base_channels",
            "selection",
            "foreground_sampling",
            "device",
            "num_workers",
            "weights",
            "local_weights",
            "local_healthy",
            "local_region",
            "local_insert",
            "local_n_insert",
            "local_edits",
            "local_max_region_mm",
            "train_samr",
            "samr_preset",
            "samr_steps",
            "resample_pools",
            "threads",
            "fraction",
        )
    }
    if variant_weights:
        overrides["variant_weights"] = variant_weights
    config = BenchmarkConfig.from_preset(args.preset, **overrides)
    if crop is not None:
        config.crop_size = None if crop == 0 else crop
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.merge:
        return merge_main(args)
    config = config_from_args(args)
    out = Path(args.out or f"/tmp/samraug-bench/augmentation-{config.preset}")
    config.work_dir = config.work_dir or str(out)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/augmentation.py " + " ".join(shlex.quote(a) for a in argv_list)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    check_output_folder(out, args.overwrite)
    if config.smoke:
        print(SMOKE_NOTICE, flush=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trained on simulated.*")
        results = run_benchmark(config, log=log, command=command.strip())
    paths = write_outputs(results, out, overwrite=args.overwrite)
    print(format_paired_table(results))
    if config.smoke:
        print("\n" + SMOKE_NOTICE)
    print(f"\nwall time {results['wall_seconds'] / 60:.1f} min; wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def merge_main(args: argparse.Namespace) -> int:
    """``--merge RUN_DIR ... --out DIR``: one report from runs of the same experiment (:func:`merge_results`)."""
    if not args.out:
        raise SystemExit("--merge needs --out (the folder of the merged report)")
    runs = []
    for folder in args.merge:
        path = Path(folder) / "augmentation.json"
        if not path.is_file():
            raise SystemExit(f"--merge {folder}: no augmentation.json there (a finished benchmark run's --out folder)")
        runs.append(json.loads(path.read_text()))
    try:
        results = merge_results(runs)
    except ValueError as e:
        raise SystemExit(f"--merge: {e}") from None
    paths = write_outputs(results, Path(args.out), overwrite=args.overwrite)
    print(format_paired_table(results))
    print(f"\nmerged {len(runs)} runs; wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
