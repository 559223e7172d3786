"""Fix the segmenter's step budget: the validation curve of real-only training at the smallest data fraction.

The augmentation benchmark trains every arm for the same number of optimiser steps. That budget is fixed once, where
the real-only segmenter's validation score stops rising at the smallest data fraction (the low-data setting every
arm shares): fewer steps would compare under-trained segmenters, more only cost time. This script draws that curve.

Protocol: the benchmark's data and patient-level split (same preset and overrides as
``benchmarks/augmentation.py``); the segmenter trains on the real slices of ``fraction`` of the training subjects
(:func:`benchmarks.augmentation.fraction_subset`, the same subset the benchmark uses) for ``--max-steps`` steps and
is scored every ``--every`` steps on *validation* subjects: the training subjects left out by the fraction (never a
test subject). Score: mean lesion Dice (:mod:`benchmarks.stats`), averaged over validation subjects, per seed.
The chosen budget is the first checkpoint whose mean over seeds is within ``--tolerance`` of the curve's maximum.

Note: the learning rate follows the schedule of the full ``--max-steps`` run (constant for the first half, then
linear decay), so an intermediate checkpoint approximates a shorter run; the chosen budget is then confirmed with
the benchmark itself.

Outputs (``--out``): ``step_budget.json`` (every checkpoint per seed and subject, the choice, machine, command),
``step_budget.md`` and ``step_budget.png``.

Example:
    python benchmarks/step_budget.py --preset standard --max-steps 1500 --every 250 --seeds 0 --out /tmp/steps
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.augmentation import (
    PRESETS,
    REGIONS,
    BenchmarkConfig,
    fraction_subset,
    load_subjects,
    machine_info,
    prepare_context,
    prepare_volume,
    torch_threads,
)
from benchmarks.stats import mean_lesion_dice
from samraug.outputs import write_atomic

__all__ = ["choose_budget", "main", "run_curve"]


def choose_budget(steps: Sequence[int], scores: Any, tolerance: float = 0.01) -> int:
    """The first step count whose mean score (over seeds, rows of ``scores``) is within ``tolerance`` of the
    maximum mean score.

    Example:
        >>> choose_budget([100, 200, 300, 400], [[0.2, 0.5, 0.59, 0.6]], tolerance=0.02)
        300
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if scores.shape[1] != len(steps) or not len(steps):
        raise ValueError(f"scores {scores.shape} do not match {len(steps)} checkpoints")
    mean = np.nanmean(scores, axis=0)
    if not np.isfinite(mean).any():
        raise ValueError("no checkpoint has a finite validation score")
    best = np.nanmax(mean)
    return int(steps[int(np.flatnonzero(mean >= best - tolerance)[0])])


def run_curve(
    config: BenchmarkConfig, max_steps: int, every: int, log: Any = print, command: str | None = None
) -> dict[str, Any]:
    """Train real-only at ``config.fraction`` for ``max_steps`` per seed, scoring validation subjects every
    ``every`` steps; returns the JSON-able curve."""
    from dataclasses import replace

    from samraug.training.segmentation import evaluate_segmenter, train_segmenter

    if every < 1 or max_steps < every:
        raise ValueError(f"need 1 <= --every <= --max-steps, got every={every}, max_steps={max_steps}")
    start = time.perf_counter()
    machine = machine_info()
    ctx = prepare_context(config, [], log)
    train = fraction_subset(ctx.real, config.fraction, seed=config.split_seed)
    val_ids = [s for s in ctx.real.subjects if s not in set(train.subjects)]
    if not val_ids:
        raise ValueError(
            f"fraction {config.fraction:g} leaves no training subject out for validation; lower --fraction"
        )
    subjects = _subjects_by_id(config, val_ids)
    val = [prepare_volume(subjects[i], ctx.sequences, ctx.scheme)[0] for i in val_ids]
    log(f"step budget: train on {len(train.subjects)} subjects ({len(train)} slices), validate on {len(val)}")
    curve: dict[str, Any] = {}
    for seed in config.seeds:
        points: list[dict[str, Any]] = []

        def score(n: int, model: Any, points: list[dict[str, Any]] = points, seed: int = seed) -> None:
            per = evaluate_segmenter(model, val, regions=REGIONS)
            lesion = [mean_lesion_dice(v, REGIONS) for v in per.values()]
            points.append({"steps": n, "mean_lesion_dice": float(np.nanmean(lesion)), "subjects": per})
            log(f"  seed {seed}: {n:>6} steps, validation mean lesion Dice {points[-1]['mean_lesion_dice']:.3f}")

        cfg = replace(config.segmenter(seed), steps=max_steps)
        t0 = time.perf_counter()
        train_segmenter(train, cfg, checkpoint=score, checkpoint_every=every)
        curve[str(seed)] = {"points": points, "seconds": round(time.perf_counter() - t0, 1)}
    steps = [p["steps"] for p in next(iter(curve.values()))["points"]]
    scores = [[p["mean_lesion_dice"] for p in c["points"]] for c in curve.values()]
    return {
        "benchmark": "segmenter step budget (real-only, smallest data fraction, validation subjects)",
        "command": command,
        "machine": machine,
        "config": config.to_dict(),
        "train_subjects": train.subjects,
        "validation_subjects": val_ids,
        "steps": steps,
        "mean_curve": [float(x) for x in np.nanmean(np.asarray(scores), axis=0)],
        "curve": curve,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def _subjects_by_id(config: BenchmarkConfig, ids: Sequence[str]) -> dict[str, Any]:
    subjects, _, _, _ = load_subjects(config, lambda m: None)
    by_id = {s["subject_id"]: s for s in subjects}
    return {i: by_id[i] for i in ids}


def format_report(results: Mapping[str, Any], tolerance: float) -> str:
    lines = [
        "# Segmenter step budget",
        "",
        f"Real-only at data fraction {results['config']['fraction']:g} "
        f"({len(results['train_subjects'])} training subjects), validation on "
        f"{len(results['validation_subjects'])} left-out training subjects; mean lesion Dice.",
        "",
        "| Steps | " + " | ".join(f"seed {s}" for s in results["curve"]) + " | mean |",
        "|---:|" + "---:|" * (len(results["curve"]) + 1),
    ]
    for k, n in enumerate(results["steps"]):
        cells = [f"{c['points'][k]['mean_lesion_dice']:.3f}" for c in results["curve"].values()]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {results['mean_curve'][k]:.3f} |")
    lines += [
        "",
        f"Chosen budget (first checkpoint within {tolerance:g} of the best mean): **{results['chosen_steps']} steps**.",
        "",
        f"Command: `{results['command']}`; wall time {results['wall_seconds'] / 60:.1f} min; load average "
        f"{results['machine'].get('load_average_start')}.",
    ]
    return "\n".join(lines) + "\n"


def plot_curve(results: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, c in results["curve"].items():
        ax.plot(results["steps"], [p["mean_lesion_dice"] for p in c["points"]], "o-", alpha=0.5, label=f"seed {seed}")
    ax.plot(results["steps"], results["mean_curve"], "k-", lw=2, label="mean")
    ax.axvline(results["chosen_steps"], color="tab:red", ls="--", label=f"budget {results['chosen_steps']}")
    ax.set_xlabel("optimiser steps")
    ax.set_ylabel("validation mean lesion Dice")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="standard")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--tolerance", type=float, default=0.01, help="within this of the best mean = stopped rising")
    p.add_argument("--seeds", default=None, help="comma-separated segmenter seeds (default: the preset's)")
    p.add_argument("--subjects", dest="n_subjects", type=int, default=None)
    p.add_argument("--test-subjects", dest="n_test", type=int, default=None)
    p.add_argument("--fraction", type=float, default=None)
    p.add_argument("--phantom-seed", type=int, default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace the outputs already in --out")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if not math.isfinite(args.tolerance) or args.tolerance < 0:
        raise SystemExit(f"--tolerance must be a finite number >= 0, got {args.tolerance}")
    out = Path(args.out)
    names = ("step_budget.json", "step_budget.md", "step_budget.png")
    existing = [n for n in names if (out / n).exists()]
    if existing and not args.overwrite:
        raise SystemExit(f"{out} already holds {existing}; pass --overwrite or choose another --out")
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    overrides = {
        "seeds": seeds,
        "n_subjects": args.n_subjects,
        "n_test": args.n_test,
        "fraction": args.fraction,
        "phantom_seed": args.phantom_seed,
        "cache_dir": args.cache_dir,
        "threads": args.threads,
    }
    config = BenchmarkConfig.from_preset(args.preset, **overrides)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/step_budget.py " + " ".join(shlex.quote(a) for a in argv_list)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    with warnings.catch_warnings(), torch_threads(config.threads):
        warnings.filterwarnings("ignore", message=".*trained on simulated.*")
        results = run_curve(config, args.max_steps, args.every, log, command)
    scores = [[q["mean_lesion_dice"] for q in c["points"]] for c in results["curve"].values()]
    results["tolerance"] = args.tolerance
    results["chosen_steps"] = choose_budget(results["steps"], scores, args.tolerance)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / names[0], lambda q: q.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n"))
    write_atomic(out / names[1], lambda q: q.write_text(format_report(results, args.tolerance)))
    write_atomic(out / names[2], lambda q: plot_curve(results, q))
    print(format_report(results, args.tolerance))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
