"""The augmentation benchmark's decision layer: data fraction, control arm, presets, paired CIs in the outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

from benchmarks import augmentation as bench
from benchmarks.arms import ARMS, SliceSet
from benchmarks.stats import paired_bootstrap


def _slices(n_subjects: int, per_subject: int = 3, size: int = 16, prefix: str = "s") -> SliceSet:
    label = torch.ones(n_subjects * per_subject, size, size, dtype=torch.long)
    label[:, 4:8, 4:8] = 2
    ids = [f"{prefix}{i}" for i in range(n_subjects) for _ in range(per_subject)]
    z = torch.arange(per_subject).repeat(n_subjects)
    return SliceSet(torch.zeros(len(ids), 1, size, size), label, label > 0, z, ids, ("t1n",))


def test_fraction_subsets_are_nested_seeded_and_keep_two_subjects() -> None:
    real = _slices(12)
    quarter, half, full = (bench.fraction_subset(real, f, seed=3) for f in (0.25, 0.5, 1.0))
    assert len(quarter.subjects) == 3 and len(half.subjects) == 6 and full is real
    assert set(quarter.subjects) <= set(half.subjects)
    assert bench.fraction_subset(real, 0.25, seed=3).subjects == quarter.subjects
    assert len(bench.fraction_subset(real, 0.01).subjects) == 2  # copy-paste needs a donor and a recipient
    with pytest.raises(ValueError, match="fraction"):
        bench.fraction_subset(real, 0.0)


def test_control_arm_adds_only_the_generator_subjects_the_arm_lacks() -> None:
    real = _slices(4)
    low = bench.fraction_subset(real, 0.5)
    ds, info = bench.build_arm_dataset(ARMS["control"], low, 0, {}, {}, 0, generator_data=real)
    assert isinstance(ds, SliceSet) and set(ds.subjects) == set(real.subjects) and len(ds) == len(real)
    assert info["generator_data_subjects"] == [s for s in real.subjects if s not in low.subjects]
    foreign = _slices(3, prefix="generator-data:s")
    ds, info = bench.build_arm_dataset(ARMS["control"], low, 0, {}, {}, 0, generator_data=foreign)
    assert len(ds) == len(low) + len(foreign) and info["n_generator_data"] == len(foreign)
    with pytest.raises(ValueError, match="training subjects"):
        bench.build_arm_dataset(ARMS["control"], low, 0, {}, {}, 0)


def test_painting_arms_need_the_training_subjects_of_the_public_path() -> None:
    local = ARMS["samr_local_50"]
    assert local.mode == "local" and local.variant == "samr_local"
    with pytest.raises(ValueError, match="SAMRAugmentedDataset"):
        bench.build_arm_dataset(local, _slices(3), 0, {}, {}, 4)


def test_standard_preset_covers_the_protocol() -> None:
    cfg = bench.BenchmarkConfig.from_preset("standard")
    assert cfg.n_subjects >= 20 and cfg.fraction < 1 and not cfg.smoke
    kinds = {ARMS[a].kind for a in cfg.arms}
    assert {"real", "conventional", "labels_to_image", "copy_paste", "generator", "control"} <= kinds
    fractions = {bench.arm_fraction(ARMS[a], cfg) for a in cfg.arms}
    assert fractions == {cfg.fraction, 1.0}  # the low-data fraction and the sweep's 100 %
    generators = [a for a in cfg.arms if ARMS[a].kind == "generator" and ARMS[a].fraction is None]
    local = [a for a in generators if ARMS[a].mode == "local"]
    assert sorted(ARMS[a].ratio for a in local) == [0.25, 0.5, 0.75]  # the ratio sweep of the best SAMR arm
    assert "samr_50" in cfg.arms and ARMS["samr_50"].mode == "whole"  # the whole-image mode at 50 %
    full = [a for a in cfg.arms if ARMS[a].fraction == 1.0]
    assert sorted(ARMS[a].kind for a in full) == ["generator", "real"]  # the data-fraction sweep
    assert bench.BenchmarkConfig.from_preset("quick").smoke
    with pytest.raises(ValueError, match="fraction"):
        bench.BenchmarkConfig.from_preset("standard", fraction=1.5)


def _fake_results(scores: dict[str, np.ndarray], fractions: dict[str, float]) -> dict[str, Any]:
    arms = {}
    for name, m in scores.items():
        seeds = {}
        for s in range(m.shape[0]):
            subjects = {
                f"t{j}": {r: {"dice": float(m[s, j]), "pred_voxels": 1.0, "true_voxels": 1.0} for r in bench.REGIONS}
                for j in range(m.shape[1])
            }
            seeds[str(s)] = {"subjects": subjects}
        spec = {"kind": ARMS[name].kind, "title": ARMS[name].title, "ratio": ARMS[name].ratio}
        arms[name] = {"spec": spec, "fraction": fractions[name], "seeds": seeds}
    return arms


def test_paired_statistics_pair_each_arm_with_real_only_at_its_fraction() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, (3, 5))
    scores = {"real": base, "samr_50": base + 0.05, "real_full": base + 0.1, "samr_50_full": base + 0.12}
    fractions = {"real": 0.25, "samr_50": 0.25, "real_full": 1.0, "samr_50_full": 1.0}
    arms = _fake_results(scores, fractions)
    paired = bench.paired_statistics(arms, ["0", "1", "2"], [f"t{j}" for j in range(5)], n_resamples=500)
    assert paired["real"]["reference"] is None and paired["real"]["difference"] is None
    assert paired["samr_50"]["reference"] == "real" and paired["samr_50_full"]["reference"] == "real_full"
    d = paired["samr_50_full"]["difference"]
    assert d["mean"] == pytest.approx(0.02) and d["half_width"] == pytest.approx(0.0, abs=1e-12)
    assert paired["real"]["mean_lesion_dice"]["mean"] == pytest.approx(base.mean())
    # the interval is the crossed bootstrap of the paired matrix, with the same settings
    ref = paired_bootstrap(scores["samr_50"] - scores["real"], n_resamples=500)
    assert paired["samr_50"]["difference"]["low"] == pytest.approx(ref.low)
    assert np.asarray(paired["samr_50"]["differences"]).shape == (3, 5)


def test_decision_table_marks_intervals_that_include_zero() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.7, (2, 6))
    scores = {"real": base, "copy_paste": base + rng.normal(0, 0.2, (2, 6)), "samr_50": base + 0.1}
    arms = _fake_results(scores, dict.fromkeys(scores, 0.25))
    for arm in arms.values():
        for run in arm["seeds"].values():
            run["n_real_subjects"] = 5
    paired = bench.paired_statistics(arms, ["0", "1"], [f"t{j}" for j in range(6)], n_resamples=500)
    table = bench.format_paired_table({"arms": arms, "paired": paired})
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    assert "reference" in rows[ARMS["real"].title]
    assert "+0.100 [+0.100, +0.100]" in rows[ARMS["samr_50"].title]
    assert ("CI includes 0" in rows[ARMS["copy_paste"].title]) == (
        not paired["copy_paste"]["difference"]["excludes_zero"]
    )


def test_outputs_are_never_overwritten_without_the_flag(tmp_path: Path) -> None:
    (tmp_path / "augmentation.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        bench.check_output_folder(tmp_path)
    bench.check_output_folder(tmp_path, overwrite=True)
    with pytest.raises(FileExistsError, match="--overwrite"):
        bench.main(["--out", str(tmp_path), "--quiet"])  # refused before any work
    assert json.loads((tmp_path / "augmentation.json").read_text()) == {}
