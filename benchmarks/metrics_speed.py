"""Speed and agreement of samraug.metrics against independent implementations.

On 240x240x155 cases (synthetic glioma-like label maps by default; ``--phantom``: 1 mm digital-phantom subjects,
197x233x189, BraTS 2024 labels; ``--data``: the ``*seg.nii.gz`` files of a BraTS-layout folder) it times
``compute_metrics`` (Dice, HD95, sensitivity, specificity for every region; target < 0.5 s per case on one CPU
core) with and without lesion-wise metrics, and compares HD95 with:

- the brute-force pairwise reference :func:`samraug.metrics.hd95_bruteforce` (explicit face-neighbour surfaces,
  all surface pairs) on the full-size cases (``--no-full-bruteforce`` skips it) and on many small random cases
  with random anisotropic spacing;
- MONAI's ``compute_hausdorff_distance`` / ``compute_dice`` and MedPy's ``hd95`` / ``dc`` where importable
  (neither is a dependency; skipped otherwise). MedPy's hd95 takes the percentile of the POOLED distances of
  both directions, so small disagreements with it are expected.

Prints a markdown table and writes JSON (``--out``). Timings are informative; nothing is asserted.

Usage:
    python benchmarks/metrics_speed.py --cases 5 --out outputs/metrics_speed.json
    python benchmarks/metrics_speed.py --phantom --cases 3 --out outputs/metrics_speed_phantom.json
    python benchmarks/metrics_speed.py --data /path/to/BraTS2024 --scheme brats2024 --cases 10
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import scipy
from scipy import ndimage

from samraug.labels import LabelScheme, get_scheme
from samraug.metrics import compute_metrics, hd95, hd95_bruteforce


# ---------------------------------------------------------------------------------------------- cases
def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, scale: int = 4) -> np.ndarray:
    coarse = ndimage.gaussian_filter(rng.standard_normal(tuple(-(-n // scale) for n in shape)), 2.0)
    fine = ndimage.zoom(coarse, scale, order=1)[tuple(slice(0, n) for n in shape)]
    return fine / (fine.std() + 1e-12)


def synthetic_case(shape: tuple[int, int, int], rng: np.random.Generator, scheme: LabelScheme) -> np.ndarray:
    """A glioma-like label map: a lumpy edema blob around a tumour core with an enhancing rim, plus sometimes a
    satellite lesion, in the scheme's values (edema, necrosis = first tumor value, enhancing = last)."""
    edema = scheme.values_of("edema")[0]
    tumor = scheme.values_of("tumor")
    necrosis, enhancing = tumor[0], tumor[-1]
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    centre = [rng.uniform(0.35, 0.65) * n for n in shape]
    axes = rng.uniform(0.8, 1.25, size=3)
    r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes, strict=True)))
    r = r + 3.0 * _smooth_noise(shape, rng)
    radius = rng.uniform(22, 34)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[r < radius] = edema
    seg[r < 0.6 * radius] = enhancing
    seg[r < 0.45 * radius] = necrosis
    if rng.random() < 0.5:  # satellite lesion
        c2 = [c + rng.choice([-1, 1]) * rng.uniform(1.3, 1.6) * radius for c in centre]
        r2 = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, c2, strict=True)))
        seg[(r2 < rng.uniform(4, 8)) & (seg == 0)] = enhancing
    return seg


def perturbed(gt: np.ndarray, rng: np.random.Generator, scheme: LabelScheme) -> np.ndarray:
    """A plausible prediction: shifted by up to 2 voxels, lesion grown or shrunk by one voxel, one false blob."""
    edema = scheme.values_of("edema")[0]
    pred = np.roll(gt, tuple(int(s) for s in rng.integers(-2, 3, size=gt.ndim)), axis=tuple(range(gt.ndim)))
    lesion = pred > 0
    if rng.random() < 0.5:
        pred[ndimage.binary_dilation(lesion) & ~lesion] = edema
    else:
        pred[lesion & ~ndimage.binary_erosion(lesion)] = 0
    grid = np.ogrid[tuple(slice(0, n) for n in gt.shape)]
    centre = [rng.uniform(0.2, 0.8) * n for n in gt.shape]
    blob = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) < rng.uniform(3, 6) ** 2
    pred[blob & (pred == 0)] = edema
    return pred


def load_cases(data: Path, n: int) -> list[tuple[str, np.ndarray, tuple[float, ...]]]:
    import nibabel as nib

    files = sorted(data.rglob("*seg.nii.gz"))[:n]
    if not files:
        raise FileNotFoundError(f"no *seg.nii.gz under {data}; pass a BraTS-layout folder (or omit --data)")
    out = []
    for f in files:
        img = nib.load(str(f))
        seg = np.asarray(img.dataobj)
        out.append((f.name, np.rint(seg).astype(np.int16), tuple(float(z) for z in img.header.get_zooms()[:3])))
    return out


# ---------------------------------------------------------------------------------------------- references
def _monai():
    if importlib.util.find_spec("monai") is None:
        return None
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    def run(p: np.ndarray, g: np.ndarray, spacing):
        pt = torch.from_numpy(p)[None, None].float()
        gtt = torch.from_numpy(g)[None, None].float()
        hd = compute_hausdorff_distance(pt, gtt, include_background=True, percentile=95, spacing=spacing)
        return float(compute_dice(pt, gtt, include_background=True)), float(hd)

    return run


def _medpy():
    if importlib.util.find_spec("medpy") is None:
        return None
    from medpy.metric import binary

    def run(p: np.ndarray, g: np.ndarray, spacing):
        return float(binary.dc(p, g)), float(binary.hd95(p, g, voxelspacing=spacing))

    return run


def _timed(fn, repeats: int):
    """Result, median wall time and median CPU time (process time: less sensitive to a shared, loaded machine)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, statistics.median(walls), statistics.median(cpus)


def small_case_agreement(n: int, rng: np.random.Generator) -> dict:
    """HD95 of our EDT implementation vs the pairwise brute force on small random 2D/3D blobs and noise."""
    worst, worst_rel, done = 0.0, 0.0, 0
    for i in range(n):
        ndim = 2 if i % 3 == 0 else 3
        shape = tuple(int(s) for s in rng.integers(6, 25 if ndim == 3 else 40, size=ndim))
        spacing = tuple(float(s) for s in rng.choice([0.5, 0.8, 1.0, 1.5, 3.0], size=ndim))
        if i % 2:
            a, b = rng.random(shape) < 0.3, rng.random(shape) < 0.3
        else:
            a = ndimage.gaussian_filter(rng.standard_normal(shape), 2) > 0.1
            b = ndimage.gaussian_filter(rng.standard_normal(shape), 2) > 0.1
        if not a.any() or not b.any():
            continue
        ours, ref = hd95(a, b, spacing=spacing), hd95_bruteforce(a, b, spacing=spacing)
        worst = max(worst, abs(ours - ref))
        worst_rel = max(worst_rel, abs(ours - ref) / max(ref, 1e-12))
        done += 1
    return {"cases": done, "max_abs_diff_mm": worst, "max_rel_diff": worst_rel}


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5, help="number of full-size cases")
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155), help="synthetic case shape")
    parser.add_argument("--scheme", default="brats2021", help="label scheme of the cases")
    parser.add_argument("--data", type=Path, default=None, help="BraTS-layout folder with *seg.nii.gz (optional)")
    parser.add_argument(
        "--phantom", action="store_true", help="use 1 mm digital-phantom subjects (samraug.data.phantom, brats2024)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats per case (median reported)")
    parser.add_argument("--small-cases", type=int, default=60, help="small random cases vs the brute force")
    parser.add_argument("--no-full-bruteforce", action="store_true", help="skip the brute force on full cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/metrics_speed.json"))
    args = parser.parse_args(argv)

    scheme = get_scheme("brats2024" if args.phantom else args.scheme)
    rng = np.random.default_rng(args.seed)
    if args.phantom:
        from samraug.data.phantom import generate_subject

        cases = []
        for i in range(args.cases):
            subject = generate_subject(args.seed + i, resolution=1.0)
            cases.append((subject.subject_id, subject.seg, (subject.resolution,) * 3))
    elif args.data is not None:
        cases = [(name, seg, sp) for name, seg, sp in load_cases(args.data, args.cases)]
    else:
        shape = tuple(args.shape)
        cases = [(f"synthetic-{i}", synthetic_case(shape, rng, scheme), (1.0, 1.0, 1.0)) for i in range(args.cases)]
    others = {name: fn for name, fn in (("monai", _monai()), ("medpy", _medpy())) if fn is not None}

    rows = []
    for name, gt, spacing in cases:
        pred = perturbed(gt, rng, scheme)
        metrics, t_ours, c_ours = _timed(
            lambda p=pred, g=gt, s=spacing: compute_metrics(p, g, scheme=scheme, spacing=s), args.repeats
        )
        _, t_lesion, c_lesion = _timed(
            lambda p=pred, g=gt, s=spacing: compute_metrics(p, g, scheme=scheme, spacing=s, lesion_wise=True),
            args.repeats,
        )
        row = {
            "case": name,
            "shape": list(gt.shape),
            "spacing": list(spacing),
            "ours_s": t_ours,
            "ours_cpu_s": c_ours,
            "ours_lesion_wise_s": t_lesion,
            "ours_lesion_wise_cpu_s": c_lesion,
            "metrics": metrics,
        }
        region_masks = {r: (np.isin(pred, v), np.isin(gt, v)) for r, v in scheme.regions.items()}
        if not args.no_full_bruteforce:
            diffs, t_bf = [], 0.0
            for r, (p, g) in region_masks.items():
                if p.any() and g.any():
                    t0 = time.perf_counter()
                    ref = hd95_bruteforce(p, g, spacing=spacing)
                    t_bf += time.perf_counter() - t0
                    diffs.append(abs(ref - metrics[r]["hd95"]))
            row["bruteforce_s"] = t_bf
            row["bruteforce_max_abs_hd95_diff"] = max(diffs) if diffs else 0.0
        for other, fn in others.items():
            t0 = time.perf_counter()
            d_hd, d_dice = [], []
            for r, (p, g) in region_masks.items():
                if p.any() and g.any():
                    dc, hd = fn(p, g, spacing)
                    d_hd.append(abs(hd - metrics[r]["hd95"]))
                    d_dice.append(abs(dc - metrics[r]["dice"]))
            row[f"{other}_s"] = time.perf_counter() - t0
            row[f"{other}_max_abs_hd95_diff"] = max(d_hd, default=0.0)
            row[f"{other}_max_abs_dice_diff"] = max(d_dice, default=0.0)
        rows.append(row)

    small = small_case_agreement(args.small_cases, rng)
    summary = {
        "median_ours_s": statistics.median(r["ours_s"] for r in rows),
        "max_ours_s": max(r["ours_s"] for r in rows),
        "median_ours_cpu_s": statistics.median(r["ours_cpu_s"] for r in rows),
        "max_ours_cpu_s": max(r["ours_cpu_s"] for r in rows),
        "median_ours_lesion_wise_s": statistics.median(r["ours_lesion_wise_s"] for r in rows),
        "median_ours_lesion_wise_cpu_s": statistics.median(r["ours_lesion_wise_cpu_s"] for r in rows),
        "target_s": 0.5,
        "small_cases_vs_bruteforce": small,
    }
    if not args.no_full_bruteforce:
        summary["full_cases_max_abs_hd95_diff_vs_bruteforce"] = max(r["bruteforce_max_abs_hd95_diff"] for r in rows)
    for other in others:
        summary[f"max_abs_hd95_diff_vs_{other}"] = max(r[f"{other}_max_abs_hd95_diff"] for r in rows)
        summary[f"max_abs_dice_diff_vs_{other}"] = max(r[f"{other}_max_abs_dice_diff"] for r in rows)
    result = {
        "benchmark": "metrics_speed",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "scheme": scheme.name,
        "data": "phantom-1mm" if args.phantom else str(args.data) if args.data else "synthetic",
        "references": ["bruteforce"]
        + list(others)
        + [f"{m} (not installed)" for m in ("monai", "medpy") if m not in others],
        "cases": rows,
        "summary": summary,
    }

    cols = ["case", "ours wall (s)", "ours CPU (s)", "+ lesion-wise wall (s)", "+ lesion-wise CPU (s)"]
    if not args.no_full_bruteforce:
        cols += ["brute force (s)", "max |ΔHD95| vs brute force (mm)"]
    for other in others:
        cols += [f"{other} (s)", f"max |ΔHD95| vs {other}", f"max |ΔDice| vs {other}"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        vals = [r["case"], f"{r['ours_s']:.3f}", f"{r['ours_cpu_s']:.3f}"]
        vals += [f"{r['ours_lesion_wise_s']:.3f}", f"{r['ours_lesion_wise_cpu_s']:.3f}"]
        if not args.no_full_bruteforce:
            vals += [f"{r['bruteforce_s']:.2f}", f"{r['bruteforce_max_abs_hd95_diff']:.2e}"]
        for other in others:
            vals += [
                f"{r[other + '_s']:.3f}",
                f"{r[other + '_max_abs_hd95_diff']:.2e}",
                f"{r[other + '_max_abs_dice_diff']:.2e}",
            ]
        print("| " + " | ".join(vals) + " |")
    print(
        f"\nmedian per case: wall {summary['median_ours_s']:.3f} s, CPU {summary['median_ours_cpu_s']:.3f} s "
        f"(target < 0.5 s); with lesion-wise: wall {summary['median_ours_lesion_wise_s']:.3f} s, CPU "
        f"{summary['median_ours_lesion_wise_cpu_s']:.3f} s; small random cases vs brute force: {small['cases']} "
        f"cases, max |ΔHD95| = {small['max_abs_diff_mm']:.2e} mm"
    )
    missing = [m for m in ("monai", "medpy") if m not in others]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
