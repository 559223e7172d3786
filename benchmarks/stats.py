"""Paired statistics of the augmentation benchmark: arm minus real-only per (seed, test subject), with a two-stage
(crossed) bootstrap confidence interval, the smallest detectable difference, and a design helper.

Every arm is trained with the same segmenter seeds as the real-only arm and scored on the same held-out subjects,
so the natural unit is the paired difference ``d[s, j] = score_arm[s, j] - score_real[s, j]`` for seed ``s`` and
test subject ``j``. Seeds and subjects are *crossed* (every seed meets every subject), so the ``S x J`` differences
are not ``S * J`` independent pairs: a hard subject is hard under every seed and an unlucky seed is unlucky on every
subject. The bootstrap therefore resamples both factors: first ``S`` seeds with replacement, then ``J`` subjects
with replacement, and takes the mean of the ``S x J`` sub-matrix they select (the "crossed" or two-way bootstrap).
With one seed it is the ordinary bootstrap over subjects.

The score is the **mean lesion Dice** of one (seed, subject): the mean over the lesion regions (edema, cavity,
tumor) of the 3D Dice, leaving out every region that is absent from both the prediction and the ground truth (its
Dice is undefined; BraTS' legacy convention would count it as 1). A (seed, subject) where every region is absent
from both has no score (NaN) and is left out of the means.

Example:
    >>> import numpy as np
    >>> d = np.array([[0.02, 0.05, -0.01], [0.03, 0.04, 0.00]])  # 2 seeds x 3 subjects
    >>> r = paired_bootstrap(d, n_resamples=2000, seed=0)
    >>> round(r.mean, 4), r.low < r.mean < r.high
    (0.0217, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Z_80_POWER",
    "Z_95",
    "Design",
    "PairedCI",
    "VarianceComponents",
    "crossed_bootstrap",
    "design_for_half_width",
    "main",
    "mean_lesion_dice",
    "minimal_detectable_difference",
    "paired_bootstrap",
    "pilot_components",
    "predicted_half_width",
    "score_matrix",
    "variance_components",
]

#: Two-sided 95 % normal quantile.
Z_95 = 1.959963984540054
#: Normal quantile of 80 % power.
Z_80_POWER = 0.8416212335729143


def mean_lesion_dice(
    regions: Mapping[str, Mapping[str, float]], lesion_regions: Sequence[str] = ("edema", "cavity", "tumor")
) -> float:
    """The mean lesion Dice of one (seed, subject) from its per-region scores.

    ``regions[r]`` holds ``dice`` and the voxel counts ``pred_voxels`` / ``true_voxels`` (as written by
    :func:`samraug.training.segmentation.evaluate_segmenter`). Regions absent from both prediction and truth are left
    out; NaN when every region is. Without voxel counts a region counts as present.

    Example:
        >>> mean_lesion_dice({"edema": {"dice": 0.5, "pred_voxels": 9, "true_voxels": 8},
        ...                   "tumor": {"dice": 1.0, "pred_voxels": 0, "true_voxels": 0}}, ("edema", "tumor"))
        0.5
    """
    values = []
    for name in lesion_regions:
        if name not in regions:
            raise KeyError(f"region {name!r} missing from the scores (has {sorted(regions)})")
        r = regions[name]
        if r.get("pred_voxels", 1) == 0 and r.get("true_voxels", 1) == 0:
            continue
        values.append(float(r["dice"]))
    return float(np.mean(values)) if values else float("nan")


def score_matrix(
    per_seed: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    seeds: Sequence[str],
    subjects: Sequence[str],
    lesion_regions: Sequence[str] = ("edema", "cavity", "tumor"),
) -> np.ndarray:
    """``(S, J)`` mean lesion Dice of ``per_seed[seed][subject][region]`` in the given seed and subject order."""
    out = np.full((len(seeds), len(subjects)), np.nan)
    for a, s in enumerate(seeds):
        for b, j in enumerate(subjects):
            out[a, b] = mean_lesion_dice(per_seed[s][j], lesion_regions)
    return out


def _check_matrix(d: Any) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 1:
        d = d[None, :]
    if d.ndim != 2 or d.shape[0] < 1 or d.shape[1] < 1:
        raise ValueError(f"paired differences must be a (seeds, subjects) matrix, got shape {d.shape}")
    if not np.isfinite(d).any():
        raise ValueError("paired differences hold no finite value (every (seed, subject) lacks a score)")
    return d


def crossed_bootstrap(d: Any, n_resamples: int = 10000, seed: int = 0, chunk: int = 2000) -> np.ndarray:
    """Bootstrap replicates of the mean of a crossed ``(S, J)`` matrix: per replicate, ``S`` seeds (rows) and then
    ``J`` subjects (columns) drawn with replacement; the replicate is the mean (NaN-ignoring) of the selected cells.

    Example:
        >>> crossed_bootstrap(np.ones((2, 3)), n_resamples=4).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    d = _check_matrix(d)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    s, j = d.shape
    rng = np.random.default_rng(seed)
    finite = np.isfinite(d)
    values = np.where(finite, d, 0.0)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        rows = rng.integers(0, s, size=(b, s))
        cols = rng.integers(0, j, size=(b, j))
        # Count how often each row/column is drawn: the mean over the selected cells is a weighted mean.
        wr = np.zeros((b, s))
        wc = np.zeros((b, j))
        np.add.at(wr, (np.arange(b)[:, None], rows), 1.0)
        np.add.at(wc, (np.arange(b)[:, None], cols), 1.0)
        total = np.einsum("bs,sj,bj->b", wr, values, wc)
        count = np.einsum("bs,sj,bj->b", wr, finite.astype(np.float64), wc)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + b] = total / count
    return out


@dataclass(frozen=True)
class PairedCI:
    """Mean paired difference with its 95 % (or ``level``) percentile bootstrap interval.

    Attributes:
        mean: Mean of the finite differences.
        low, high: Interval bounds.
        half_width: ``(high - low) / 2``.
        mdd: Smallest difference this design detects (two-sided 5 %, 80 % power), from the half-width.
        n_seeds, n_subjects: Shape of the crossed design.
        level, n_resamples: The interval's settings.
    """

    mean: float
    low: float
    high: float
    half_width: float
    mdd: float
    n_seeds: int
    n_subjects: int
    level: float
    n_resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"excludes_zero": self.excludes_zero}


def minimal_detectable_difference(half_width: float, level: float = 0.95, power_z: float = Z_80_POWER) -> float:
    """The smallest true difference found significant (two-sided, ``1 - level``) with 80 % power, given the CI's
    half-width: ``(z_{1-alpha/2} + z_power) * SE`` with ``SE = half_width / z_{1-alpha/2}``.

    Example:
        >>> round(minimal_detectable_difference(0.03), 4)
        0.0429
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    return float(half_width * (z + power_z) / z)


def paired_bootstrap(d: Any, n_resamples: int = 10000, level: float = 0.95, seed: int = 0) -> PairedCI:
    """Mean of the ``(S, J)`` paired differences with a percentile interval of :func:`crossed_bootstrap`.

    Example:
        >>> paired_bootstrap([[0.1, 0.1, 0.1]], n_resamples=100).half_width
        0.0
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = _check_matrix(d)
    reps = crossed_bootstrap(d, n_resamples=n_resamples, seed=seed)
    reps = reps[np.isfinite(reps)]
    alpha = (1 - level) / 2
    low, high = (float(x) for x in np.quantile(reps, [alpha, 1 - alpha]))
    half = (high - low) / 2
    return PairedCI(
        mean=float(np.nanmean(d)),
        low=low,
        high=high,
        half_width=half,
        mdd=minimal_detectable_difference(half, level),
        n_seeds=int(d.shape[0]),
        n_subjects=int(d.shape[1]),
        level=level,
        n_resamples=n_resamples,
    )


# ---------------------------------------------------------------------------------------------------- design
@dataclass(frozen=True)
class VarianceComponents:
    """Variance components of a crossed ``(S, J)`` matrix (two-way random effects, one observation per cell):
    ``d[s, j] = mu + a_s + b_j + e_sj`` with variances ``seed``, ``subject`` and ``residual``."""

    seed: float
    subject: float
    residual: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def variance_components(d: Any) -> VarianceComponents:
    """Method-of-moments (ANOVA) estimates of the seed, subject and residual variances, negatives set to 0.

    Needs a complete matrix of at least 2 x 2.

    Example:
        >>> v = variance_components([[0.0, 1.0], [0.0, 1.0]])
        >>> v.seed, v.residual
        (0.0, 0.0)
    """
    d = _check_matrix(d)
    s, j = d.shape
    if s < 2 or j < 2 or not np.isfinite(d).all():
        raise ValueError(f"variance components need a complete matrix of >= 2 seeds x >= 2 subjects, got {d.shape}")
    grand = d.mean()
    row, col = d.mean(1), d.mean(0)
    ms_row = j * ((row - grand) ** 2).sum() / (s - 1)
    ms_col = s * ((col - grand) ** 2).sum() / (j - 1)
    resid = d - row[:, None] - col[None, :] + grand
    ms_res = (resid**2).sum() / ((s - 1) * (j - 1))
    return VarianceComponents(
        seed=max(0.0, float((ms_row - ms_res) / j)),
        subject=max(0.0, float((ms_col - ms_res) / s)),
        residual=float(ms_res),
    )


def predicted_half_width(components: VarianceComponents, n_seeds: int, n_subjects: int) -> float:
    """Normal-approximation 95 % half-width of the mean of an ``n_seeds x n_subjects`` crossed design.

    Example:
        >>> round(predicted_half_width(VarianceComponents(0.01, 0.04, 0.02), 4, 16), 4)
        0.1429
    """
    if n_seeds < 1 or n_subjects < 1:
        raise ValueError(f"need >= 1 seed and subject, got {n_seeds} x {n_subjects}")
    c = components
    var = c.seed / n_seeds + c.subject / n_subjects + c.residual / (n_seeds * n_subjects)
    return float(Z_95 * math.sqrt(var))


@dataclass(frozen=True)
class Design:
    """A (seeds, test subjects) design, its predicted half-width and cost."""

    n_seeds: int
    n_subjects: int
    half_width: float
    seconds: float
    fits: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def design_for_half_width(
    components: VarianceComponents,
    *,
    seconds_per_training: float,
    seconds_per_evaluation: float,
    n_trainings_per_seed: int,
    budget_seconds: float,
    target: float = 0.03,
    max_seeds: int = 20,
    max_subjects: int = 200,
) -> Design:
    """The cheapest design reaching ``target`` within ``budget_seconds``; if none does, the design with the smallest
    predicted half-width that fits (``fits`` tells whether it meets the target).

    Cost model: every seed trains ``n_trainings_per_seed`` segmenters (one per arm) and each of them is evaluated on
    every test subject: ``S * n * (seconds_per_training + J * seconds_per_evaluation)``.

    Example:
        >>> d = design_for_half_width(VarianceComponents(0.0005, 0.003, 0.003), seconds_per_training=60,
        ...     seconds_per_evaluation=1, n_trainings_per_seed=6, budget_seconds=3600)
        >>> d.n_seeds, d.n_subjects, d.fits
        (3, 60, True)
    """
    best: Design | None = None
    for s in range(1, max_seeds + 1):
        for j in range(2, max_subjects + 1):
            cost = s * n_trainings_per_seed * (seconds_per_training + j * seconds_per_evaluation)
            if cost > budget_seconds:
                break
            hw = predicted_half_width(components, s, j)
            cand = Design(s, j, hw, cost, hw <= target)
            if best is None:
                best = cand
            elif cand.fits and (not best.fits or cand.seconds < best.seconds):
                best = cand
            elif not best.fits and not cand.fits and cand.half_width < best.half_width:
                best = cand
    if best is None:
        raise ValueError(
            f"not even 1 seed x 2 subjects fits {budget_seconds:.0f} s; raise the budget or shorten the training"
        )
    return best


# ---------------------------------------------------------------------------------------------------- pilot -> design
def pilot_components(results: Mapping[str, Any]) -> dict[str, Any]:
    """Variance components of the paired differences of a benchmark JSON (``benchmarks/augmentation.py``), pooled
    (averaged) over the arms that have a reference, and its timings per training and per evaluated subject."""
    comps, train_s, eval_s = [], [], []
    n_test = len(results["data"]["split"]["test"])
    for name, entry in results["paired"].items():
        for run in results["arms"][name]["seeds"].values():
            train_s.append(float(run["train_seconds"]))
            eval_s.append(float(run["eval_seconds"]) / max(1, n_test))
        diff = entry.get("differences")
        if diff is None:
            continue
        d = np.asarray([[np.nan if v is None else v for v in row] for row in diff], dtype=np.float64)
        if d.shape[0] >= 2 and d.shape[1] >= 2 and np.isfinite(d).all():
            comps.append(variance_components(d))
    if not comps:
        raise ValueError("the pilot needs >= 2 seeds, >= 2 test subjects and an arm paired with real-only")
    pooled = VarianceComponents(
        seed=float(np.mean([c.seed for c in comps])),
        subject=float(np.mean([c.subject for c in comps])),
        residual=float(np.mean([c.residual for c in comps])),
    )
    return {
        "components": pooled,
        "seconds_per_training": float(np.median(train_s)),
        "seconds_per_evaluation": float(np.median(eval_s)),
        "steps": int(results["config"]["steps"]),
        "n_arms": len(comps),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/stats.py PILOT.json --budget-s 7200 --trainings-per-seed 10 [--steps N]``: the design
    (seeds x test subjects) reaching the target half-width within the budget, estimated from a pilot run."""
    import argparse
    import json
    from pathlib import Path

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("pilot", type=Path, help="augmentation.json of a pilot run (>= 2 seeds, >= 2 test subjects)")
    p.add_argument("--budget-s", type=float, default=7200.0, help="seconds for the trainings and evaluations")
    p.add_argument("--trainings-per-seed", type=int, default=10, help="arms of the planned run")
    p.add_argument("--steps", type=int, default=None, help="planned steps (scales the pilot's training time)")
    p.add_argument("--target", type=float, default=0.03, help="target 95 %% CI half-width")
    p.add_argument(
        "--seconds-per-step", type=float, default=None, help="use this training cost (e.g. measured idle) instead"
    )
    p.add_argument(
        "--seconds-per-evaluation", type=float, default=None, help="per evaluated subject, instead of the pilot's"
    )
    args = p.parse_args(argv)
    if not args.pilot.is_file():
        raise SystemExit(f"{args.pilot} is not a file; pass the augmentation.json of a pilot run")
    pilot = pilot_components(json.loads(args.pilot.read_text()))
    steps = args.steps or pilot["steps"]
    if args.seconds_per_step is not None:
        per_training = args.seconds_per_step * steps
    else:
        per_training = pilot["seconds_per_training"] * steps / pilot["steps"]
    per_eval = (
        args.seconds_per_evaluation if args.seconds_per_evaluation is not None else pilot["seconds_per_evaluation"]
    )
    pilot["seconds_per_evaluation"] = per_eval
    design = design_for_half_width(
        pilot["components"],
        seconds_per_training=per_training,
        seconds_per_evaluation=per_eval,
        n_trainings_per_seed=args.trainings_per_seed,
        budget_seconds=args.budget_s,
        target=args.target,
    )
    c = pilot["components"]
    print(
        f"pilot: variance components seed {c.seed:.5f}, subject {c.subject:.5f}, residual {c.residual:.5f} "
        f"(pooled over {pilot['n_arms']} arms); {per_training:.0f} s per training, "
        f"{pilot['seconds_per_evaluation']:.2f} s per evaluated subject"
    )
    print(
        f"design: {design.n_seeds} seeds x {design.n_subjects} test subjects -> predicted 95 % half-width "
        f"{design.half_width:.3f} (MDD {minimal_detectable_difference(design.half_width):.3f}), "
        f"{design.seconds / 60:.0f} min; {'meets' if design.fits else 'does NOT meet'} the target {args.target}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
