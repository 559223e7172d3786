"""The classical fills of samraug.seam: the thin-plate spline under tension against an independent dense solve,
exactness on linear images, its advantage over the harmonic fill on curved ones, and its errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import sparse

from samraug.seam import harmonic_fill, reached, spline_fill

FACES = [np.array(f) for f in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]


def dense_spline(image: np.ndarray, region: np.ndarray, known: np.ndarray, tension: float) -> np.ndarray:
    """The spline fill's objective written out voxel by voxel and minimised by dense least squares: the squared
    discrete Laplacian at every voxel next to or in the region whose six neighbours are region or known voxels,
    plus ``tension`` times every squared face difference with a region end and the other end region or known."""
    valid = region | known
    unknowns = [tuple(p) for p in np.argwhere(region)]
    col = {p: i for i, p in enumerate(unknowns)}
    shape = np.array(region.shape)
    rows, rhs = [], []

    def add(terms: list[tuple[tuple[int, ...], float]], weight: float) -> None:
        row, const = np.zeros(len(unknowns)), 0.0
        for p, coef in terms:
            if p in col:
                row[col[p]] += coef
            else:
                const += coef * image[p]
        rows.append(weight * row)
        rhs.append(-weight * const)

    for p in itertools.product(*map(range, region.shape)):
        q = np.array(p)
        near = region[p] or any(np.all((q + f >= 0) & (q + f < shape)) and region[tuple(q + f)] for f in FACES)
        nbs = [tuple(q + f) for f in FACES]
        if valid[p] and near and all(np.all((np.array(n) >= 0) & (np.array(n) < shape)) and valid[n] for n in nbs):
            add([(p, 6.0)] + [(n, -1.0) for n in nbs], 1.0)
    for p in unknowns:
        for f in FACES:
            n = tuple(np.array(p) + f)
            inside = np.all((np.array(n) >= 0) & (np.array(n) < shape))
            if not inside or not valid[n] or (region[n] and n < p):  # each region-region pair once
                continue
            add([(p, 1.0), (n, -1.0)], np.sqrt(tension))
    x = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    out = np.zeros(region.shape)
    out[region] = x
    return out


def test_spline_fill_solves_its_objective() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 7, 6, 6))
    region = np.zeros((7, 6, 6), bool)
    region[2:5, 2:4, 2:4] = True
    region[4, 4, 3] = True
    known = np.ones(region.shape, bool)
    known[0, 0, :] = False  # a hole in the anchors: the Laplacian rows beside it are left out
    for tension in (0.3, 2.0):
        fill = spline_fill(image, region, known, tension=tension)
        for s in range(2):
            np.testing.assert_allclose(fill[s], dense_spline(image[s], region, known & ~region, tension), atol=1e-4)
        assert not fill[:, ~region].any()


def test_spline_fill_multigrid_solve_matches_the_dense_solve_on_a_large_irregular_region() -> None:
    # ~900 unknowns: the multigrid preconditioner builds several levels, and the region meets voxels that are
    # neither region nor known (a slab of "outside the brain"), where the Laplacian term drops out
    rng = np.random.default_rng(3)
    shape = (16, 16, 14)
    grid = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grid))
    region = radius + rng.uniform(-1.0, 1.0, size=shape) < 6.5
    known = ~region
    known[:, :, :3] = False
    region[:, :, :3] = False
    image = np.stack([np.sin(grid[0] / 3.0) * grid[1] + rng.normal(scale=0.1, size=shape), rng.normal(size=shape)])
    assert region.sum() > 700
    fill = spline_fill(image, region, known)
    for s in range(2):
        np.testing.assert_allclose(fill[s], dense_spline(image[s], region, known, 0.3), atol=1e-4)


def test_spline_fill_tolerance_is_the_solves_stopping_residual(monkeypatch) -> None:
    """``tolerance`` is the conjugate gradients' relative residual: a looser one still lands near the dense solve,
    a tighter one on it; out-of-range values are refused."""
    import samraug.seam as seam

    rng = np.random.default_rng(5)
    shape = (14, 14, 12)
    grid = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    region = np.sqrt(sum(g**2 for g in grid)) + rng.uniform(-1.0, 1.0, size=shape) < 5.0
    image = np.stack([np.sin(grid[0] / 3.0) * grid[1] + rng.normal(scale=0.1, size=shape)])
    exact = dense_spline(image[0], region, ~region, 0.3)
    seen = []
    solve = seam._block_cg
    monkeypatch.setattr(seam, "_block_cg", lambda *a: seen.append(a[4]) or solve(*a))
    loose = spline_fill(image, region, ~region, tolerance=1e-3)
    tight = spline_fill(image, region, ~region, tolerance=1e-10)
    assert seen == [1e-3, 1e-10]
    span = np.ptp(image)
    np.testing.assert_allclose(tight[0], exact, atol=1e-7 * span)
    np.testing.assert_allclose(loose[0], exact, atol=1e-2 * span)
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="tolerance"):
            spline_fill(image, region, ~region, tolerance=bad)


@pytest.mark.parametrize("power", [-600, -60, 0, 60, 600])
def test_block_cg_is_exactly_scale_invariant(power: int) -> None:
    """The conjugate gradients solve each column scaled by a power of two: a right-hand side (and start) scaled by
    2**power gives the solution scaled by 2**power bit for bit, converged -- also where the unscaled squares of
    2**-600 or 2**600 would underflow or overflow."""
    import pyamg

    from samraug.seam import _block_cg, _jacobi

    system = pyamg.gallery.poisson((6, 6, 5), format="csr") + 0.1 * sparse.identity(180, format="csr")
    rhs = np.random.default_rng(2).normal(size=(180, 3)) * [1.0, 1e3, 1e-3]
    start = np.zeros_like(rhs)
    base, ok = _block_cg(system, rhs, start, _jacobi(system.diagonal()), 1e-8, 500)
    scaled, ok_scaled = _block_cg(system, np.ldexp(rhs, power), start, _jacobi(system.diagonal()), 1e-8, 500)
    assert ok and ok_scaled
    np.testing.assert_array_equal(scaled, np.ldexp(base, power))
    np.testing.assert_allclose(system @ base, rhs, rtol=0, atol=1e-6 * np.abs(rhs).max())


@pytest.mark.parametrize("n_side", [2, 12])
def test_multigrid_preconditioner_is_pyamgs_own_v_cycle(n_side: int) -> None:
    """The spline's preconditioner applies pyamg's V-cycle itself (without the residual norms around it): on every
    column the same as ``aspreconditioner()`` of the same hierarchy, for a several-level and a one-level hierarchy."""
    import pyamg

    from samraug.seam import _multigrid_preconditioner, _scalar_levels, _v_cycle

    system = pyamg.gallery.poisson((n_side,) * 3, format="csr")
    system = (system @ system + 0.3 * system).tocsr()  # a squared Laplacian under tension, as the spline's
    residual = np.random.default_rng(5).normal(size=(system.shape[0], 3))
    hierarchy = pyamg.smoothed_aggregation_solver(system, strength="symmetric", smooth="energy")
    reference = np.stack([hierarchy.aspreconditioner() @ residual[:, k] for k in range(3)], axis=1)
    assert (len(hierarchy.levels) > 2) == (n_side == 12)
    np.testing.assert_allclose(_multigrid_preconditioner(system)(residual), reference, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_v_cycle(hierarchy, residual[:, 0]), reference[:, 0], rtol=1e-10, atol=1e-12)
    # the preconditioner's hierarchy holds the same operators, the coarse levels' 1x1-block BSR ones as CSR
    original = [{k: getattr(level, k) for k in ("A", "P", "R") if hasattr(level, k)} for level in hierarchy.levels]
    for level, operators in zip(_scalar_levels(hierarchy).levels, original, strict=True):
        for name, op in operators.items():
            assert getattr(level, name).format == "csr" and (getattr(level, name) != op).nnz == 0


def test_spline_fill_falls_back_to_the_diagonal_preconditioner_when_multigrid_stalls(monkeypatch) -> None:
    from samraug import seam

    rng = np.random.default_rng(4)
    image = rng.normal(size=(2, 9, 9, 9))
    region = np.zeros((9, 9, 9), bool)
    region[2:7, 3:6, 2:7] = True
    known = ~region
    expected = spline_fill(image, region, known)
    calls = []

    def stalled(system):
        calls.append(system.shape[0])
        return lambda residual: np.zeros_like(residual)  # no direction: conjugate gradients cannot move

    monkeypatch.setattr(seam, "_multigrid_preconditioner", stalled)
    fill = spline_fill(image, region, known)
    assert calls == [int(region.sum())]
    np.testing.assert_allclose(fill, expected, atol=1e-4)
    for s in range(2):
        np.testing.assert_allclose(fill[s], dense_spline(image[s], region, known, 0.3), atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    gradient=st.tuples(*[st.floats(-5, 5)] * 3),
    offset=st.floats(-100, 100),
    lo=st.tuples(*[st.integers(2, 5)] * 3),
    size=st.tuples(*[st.integers(1, 4)] * 3),
)
@example(gradient=(0.0, 3.7e-163, 3.7e-163), offset=0.0, lo=(2, 2, 2), size=(2, 2, 3))  # squares underflow
def test_spline_fill_is_exact_on_linear_images(gradient, offset, lo, size) -> None:
    grid = np.meshgrid(*[np.arange(12.0)] * 3, indexing="ij")
    image = offset + sum(g * x for g, x in zip(gradient, grid, strict=True))
    region = np.zeros((12, 12, 12), bool)
    region[tuple(slice(a, a + n) for a, n in zip(lo, size, strict=True))] = True
    fill = spline_fill(image[None], region, np.ones(region.shape, bool))
    np.testing.assert_allclose(fill[0][region], image[region], atol=1e-3 * (1 + np.abs(image).max()))


def test_spline_fill_continues_curved_tissue_better_than_the_harmonic_fill() -> None:
    """A smooth curved image (a Gaussian blob's flank and a sinusoid): the harmonic fill flattens towards the border's
    average, the spline carries the slopes in."""
    x, y, z = np.meshgrid(*[np.arange(24.0)] * 3, indexing="ij")
    images = np.stack([np.exp(-((x - 6) ** 2 + (y - 12) ** 2 + (z - 12) ** 2) / 60.0), np.sin(x / 4.0) + 0.1 * y])
    region = (x - 12) ** 2 + (y - 12) ** 2 + (z - 12) ** 2 < 5.5**2
    known = np.ones(region.shape, bool)
    spline, harmonic = spline_fill(images, region, known), harmonic_fill(images, region, known)
    for s in range(2):
        err_s = np.abs(spline[s][region] - images[s][region]).mean()
        err_h = np.abs(harmonic[s][region] - images[s][region]).mean()
        assert err_s < 0.5 * err_h


def test_spline_fill_parts_without_anchor_and_errors() -> None:
    image = np.ones((1, 8, 8, 8))
    region = np.zeros((8, 8, 8), bool)
    region[1:3, 1:3, 1:3] = True  # anchored
    region[5:7, 5:7, 5:7] = True  # no known voxel next to it
    known = np.zeros(region.shape, bool)
    known[0:4, 0:4, 0:4] = True
    fill = spline_fill(image, region, known)
    np.testing.assert_allclose(fill[0][1:3, 1:3, 1:3], 1.0, atol=1e-4)
    assert not fill[0][5:7, 5:7, 5:7].any()
    assert not spline_fill(image, region, np.zeros_like(known)).any()  # nothing known: nothing filled
    with pytest.raises(ValueError, match="tension"):
        spline_fill(image, region, known, tension=0.0)
    with pytest.raises(ValueError, match=r"\(S, X, Y, Z\)"):
        spline_fill(image[0], region, known)
    bad = image.copy()
    bad[0, 0, 1, 1] = np.nan  # next to the region
    with pytest.raises(ValueError, match="NaN"):
        spline_fill(bad, region, known)
    everywhere = ~region
    bad = image.copy()
    bad[0, 4, 1, 1] = np.nan  # two voxels away: the Laplacian at the voxel between reads it
    with pytest.raises(ValueError, match="NaN"):
        spline_fill(bad, region, everywhere)
    far = image.copy()
    far[0, 3, 3, 3] = np.nan  # known but never read: no error, a finite fill
    assert np.isfinite(spline_fill(far, region, known)).all()


def _reached_by_flood(region: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Independent reference of ``reached``: a breadth-first flood over face neighbours from the region voxels next to
    a known voxel."""
    shape = region.shape
    steps = [np.eye(3, dtype=int)[a] * d for a in range(3) for d in (1, -1)]

    def inside(p):
        return all(0 <= c < n for c, n in zip(p, shape, strict=True))

    frontier = [
        tuple(p)
        for p in np.argwhere(region)
        if any(inside(p + s) and known[tuple(p + s)] and not region[tuple(p + s)] for s in steps)
    ]
    seen = np.zeros(shape, bool)
    for p in frontier:
        seen[p] = True
    while frontier:
        p = frontier.pop()
        for s in steps:
            q = tuple(np.asarray(p) + s)
            if inside(q) and region[q] and not seen[q]:
                seen[q] = True
                frontier.append(q)
    return seen


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), density=st.floats(0.2, 0.7), known_share=st.floats(0.0, 0.3))
def test_reached_is_the_flood_from_the_known_voxels_and_what_the_fills_fill(seed, density, known_share) -> None:
    """``reached``: the region's voxels connected (face neighbours, through the region) to one next to a known voxel,
    as a flood fill finds them; the spline and harmonic fills fill exactly those (an image of ones: 1 there, 0
    elsewhere)."""
    rng = np.random.default_rng(seed)
    region = rng.random((7, 6, 5)) < density
    known = ~region & (rng.random(region.shape) < known_share)
    expected = _reached_by_flood(region, known)
    np.testing.assert_array_equal(reached(region, known), expected)
    ones = np.ones((1, *region.shape))
    for fill in (spline_fill(ones, region, known), harmonic_fill(ones, region, known)):
        np.testing.assert_allclose(fill[0][expected], 1.0, atol=1e-3)
        assert not fill[0][region & ~expected].any()


def test_reached_names_mismatched_masks() -> None:
    with pytest.raises(ValueError, match=r"3D \(X, Y, Z\) masks of one shape, got \(3, 3, 3\) and \(3, 3, 4\)"):
        reached(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool))
    with pytest.raises(ValueError, match="3D"):
        reached(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
