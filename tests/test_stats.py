"""The benchmark's paired statistics: crossed bootstrap, mean lesion Dice, variance components and design."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

from benchmarks.stats import (
    VarianceComponents,
    crossed_bootstrap,
    design_for_half_width,
    mean_lesion_dice,
    minimal_detectable_difference,
    paired_bootstrap,
    predicted_half_width,
    score_matrix,
    variance_components,
)


def test_one_seed_interval_matches_scipy_percentile_bootstrap() -> None:
    # With one seed the crossed bootstrap is the ordinary bootstrap over subjects: compare with SciPy's.
    d = np.random.default_rng(3).normal(0.04, 0.1, size=25)
    ours = paired_bootstrap(d[None, :], n_resamples=40000, seed=1)
    ref = sps.bootstrap((d,), np.mean, n_resamples=40000, method="percentile", confidence_level=0.95, rng=2)
    assert ours.mean == pytest.approx(d.mean())
    # Monte-Carlo error of a 2.5 % quantile over 40000 resamples is ~1e-3 here.
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=3e-3)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=3e-3)


def _exact_crossed_distribution(d: np.ndarray) -> np.ndarray:
    """Every equally likely (rows, columns) draw of the crossed bootstrap, enumerated."""
    s, j = d.shape
    out = []
    for rows in itertools.product(range(s), repeat=s):
        sub = d[list(rows)]
        for cols in itertools.product(range(j), repeat=j):
            out.append(sub[:, list(cols)].mean())
    return np.asarray(out)


def test_crossed_bootstrap_matches_exhaustive_enumeration() -> None:
    d = np.random.default_rng(0).normal(size=(3, 4)) + np.array([[0.0], [0.5], [-0.3]])
    exact = _exact_crossed_distribution(d)  # 27 x 256 equally likely replicates
    reps = crossed_bootstrap(d, n_resamples=60000, seed=5)
    assert reps.mean() == pytest.approx(exact.mean(), abs=0.01)
    assert reps.var() == pytest.approx(exact.var(), rel=0.03)
    for q in (0.025, 0.5, 0.975):
        assert np.quantile(reps, q) == pytest.approx(np.quantile(exact, q), abs=0.03)


def test_crossed_bootstrap_resamples_seeds_not_only_cells() -> None:
    # A pure seed effect: resampling cells as independent pairs would shrink it by sqrt(J); the crossed bootstrap
    # keeps the between-seed variance of a mean of S seeds (exact: var(rows) / S with the population variance).
    d = np.repeat(np.array([[0.0], [1.0]]), 30, axis=1)
    reps = crossed_bootstrap(d, n_resamples=20000, seed=0)
    assert reps.var() == pytest.approx(0.25 / 2, rel=0.05)


def test_crossed_bootstrap_ignores_missing_cells() -> None:
    d = np.array([[0.1, np.nan], [0.3, 0.5]])
    reps = crossed_bootstrap(d, n_resamples=500, seed=0)
    finite = reps[np.isfinite(reps)]
    assert finite.min() >= 0.1 - 1e-12 and finite.max() <= 0.5 + 1e-12
    assert paired_bootstrap(d, n_resamples=500).mean == pytest.approx(0.3)


def test_bootstrap_coverage_on_simulated_crossed_data() -> None:
    # d = mu + seed effect + subject effect + noise; the 95 % interval must cover mu in about 95 % of the data sets
    # (the crossed bootstrap is slightly conservative; with 8 seeds it must not under-cover much).
    rng = np.random.default_rng(11)
    mu, hits, n = 0.05, 0, 200
    for _ in range(n):
        d = mu + rng.normal(0, 0.05, (8, 1)) + rng.normal(0, 0.1, (1, 20)) + rng.normal(0, 0.05, (8, 20))
        ci = paired_bootstrap(d, n_resamples=600, seed=int(rng.integers(1 << 30)))
        hits += ci.low <= mu <= ci.high
    assert 0.88 <= hits / n <= 1.0


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(2, 8),
    st.floats(-1, 1),
    st.floats(0.5, 3),
)
def test_interval_is_shift_and_scale_equivariant(s: int, j: int, shift: float, scale: float) -> None:
    d = np.random.default_rng(s * 10 + j).normal(size=(s, j))
    a = paired_bootstrap(d, n_resamples=300, seed=4)
    b = paired_bootstrap(d * scale + shift, n_resamples=300, seed=4)
    assert b.mean == pytest.approx(a.mean * scale + shift, abs=1e-9)
    assert b.low == pytest.approx(a.low * scale + shift, abs=1e-9)
    assert b.high == pytest.approx(a.high * scale + shift, abs=1e-9)
    assert a.low <= a.mean <= a.high or np.isclose(a.low, a.high)


def test_constant_differences_give_a_zero_width_interval() -> None:
    ci = paired_bootstrap(np.full((3, 5), 0.02), n_resamples=200)
    assert (ci.low, ci.high, ci.half_width) == pytest.approx((0.02, 0.02, 0.0))
    assert ci.excludes_zero


def test_bad_input_is_rejected_with_the_argument_named() -> None:
    with pytest.raises(ValueError, match="seeds, subjects"):
        paired_bootstrap(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="no finite"):
        paired_bootstrap(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(np.zeros((2, 2)), level=1.5)


def test_mean_lesion_dice_leaves_out_regions_absent_from_both() -> None:
    scores = {
        "edema": {"dice": 0.6, "pred_voxels": 10.0, "true_voxels": 12.0},
        "cavity": {"dice": 1.0, "pred_voxels": 0.0, "true_voxels": 0.0},  # absent from both: left out
        "tumor": {"dice": 0.0, "pred_voxels": 5.0, "true_voxels": 0.0},  # false positive: counts as 0
    }
    assert mean_lesion_dice(scores) == pytest.approx(0.3)
    empty = {r: {"dice": 1.0, "pred_voxels": 0.0, "true_voxels": 0.0} for r in ("edema", "cavity", "tumor")}
    assert np.isnan(mean_lesion_dice(empty))
    per_seed = {"0": {"a": scores, "b": empty}}
    m = score_matrix(per_seed, ["0"], ["a", "b"])
    assert m.shape == (1, 2) and m[0, 0] == pytest.approx(0.3) and np.isnan(m[0, 1])


def test_variance_components_recover_simulated_values() -> None:
    rng = np.random.default_rng(0)
    est = []
    for _ in range(200):
        d = rng.normal(0, 0.2, (6, 1)) + rng.normal(0, 0.3, (1, 10)) + rng.normal(0, 0.1, (6, 10))
        v = variance_components(d)
        est.append((v.seed, v.subject, v.residual))
    seed, subject, residual = np.mean(est, axis=0)
    assert seed == pytest.approx(0.04, rel=0.15)
    assert subject == pytest.approx(0.09, rel=0.15)
    assert residual == pytest.approx(0.01, rel=0.05)


def test_predicted_half_width_matches_the_bootstrap_on_a_large_design() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0, 0.1, (10, 1)) + rng.normal(0, 0.15, (1, 40)) + rng.normal(0, 0.1, (10, 40))
    predicted = predicted_half_width(variance_components(d), 10, 40)
    assert paired_bootstrap(d, n_resamples=4000).half_width == pytest.approx(predicted, rel=0.25)


def test_minimal_detectable_difference_is_the_power_formula() -> None:
    # z_{0.975} + z_{0.80} = 2.8016 standard errors; SE = half-width / 1.96.
    assert minimal_detectable_difference(0.0196) == pytest.approx(0.01 * 2.8016, rel=1e-3)


def test_design_meets_the_target_cheapest_or_reports_the_best_that_fits() -> None:
    comp = VarianceComponents(seed=0.001, subject=0.004, residual=0.004)
    d = design_for_half_width(
        comp, seconds_per_training=10, seconds_per_evaluation=0.5, n_trainings_per_seed=5, budget_seconds=3600
    )
    assert d.fits and d.half_width <= 0.03 and d.seconds <= 3600
    assert predicted_half_width(comp, d.n_seeds, d.n_subjects) == pytest.approx(d.half_width)
    tight = design_for_half_width(
        comp, seconds_per_training=100, seconds_per_evaluation=0.5, n_trainings_per_seed=5, budget_seconds=1200
    )
    assert not tight.fits and tight.seconds <= 1200
    with pytest.raises(ValueError, match="budget"):
        design_for_half_width(
            comp, seconds_per_training=1000, seconds_per_evaluation=1, n_trainings_per_seed=5, budget_seconds=10
        )


def _pilot(tmp_path: Path) -> Path:
    import json

    rng = np.random.default_rng(2)
    d = rng.normal(0, 0.05, (3, 1)) + rng.normal(0, 0.1, (1, 8)) + rng.normal(0, 0.05, (3, 8))
    runs = {str(s): {"train_seconds": 60.0, "eval_seconds": 8.0} for s in range(3)}
    results = {
        "config": {"steps": 500},
        "data": {"split": {"test": [f"t{j}" for j in range(8)]}},
        "arms": {"real": {"seeds": runs}, "samr_50": {"seeds": runs}},
        "paired": {"real": {"reference": None}, "samr_50": {"reference": "real", "differences": d.tolist()}},
    }
    path = tmp_path / "pilot.json"
    path.write_text(json.dumps(results))
    return path


def test_pilot_components_and_design_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from benchmarks.stats import main, pilot_components

    path = _pilot(tmp_path)
    pilot = pilot_components(json.loads(path.read_text()))
    d = np.asarray(json.loads(path.read_text())["paired"]["samr_50"]["differences"])
    assert pilot["components"] == variance_components(d)
    assert pilot["seconds_per_training"] == 60.0 and pilot["seconds_per_evaluation"] == 1.0
    assert main([str(path), "--budget-s", "3600", "--trainings-per-seed", "4", "--steps", "1000"]) == 0
    out = capsys.readouterr().out
    assert "120 s per training" in out and "test subjects" in out
    with pytest.raises(SystemExit, match="not a file"):
        main([str(tmp_path / "missing.json")])
