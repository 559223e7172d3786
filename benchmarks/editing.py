"""Benchmark: median time of each LesionEditor operation on a 240 x 240 x 155 label map, one CPU thread.

The mask is synthetic: an ellipsoidal brain of BraTS size and an irregular glioma (necrotic core, enhancing rim,
edema halo; optionally a resection cavity for brats2024) built with numpy, so the benchmark needs no data.
Prints a table and writes JSON to ``--out``; it never asserts timings (target: median < 0.2 s per edit).

Usage:
    python benchmarks/editing.py --repeats 7 --out /tmp/samraug_bench/editing.json
    python benchmarks/editing.py --phantom   # 1 mm digital-phantom subjects (samraug.data.phantom) instead
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from samraug.editing import EditPolicy, LesionEditor  # noqa: E402
from samraug.labels import get_scheme  # noqa: E402

SHAPE = (240, 240, 155)


def synthetic_case(
    scheme: str, center: tuple[int, int, int], seed: int, shape: tuple[int, ...] = SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal brain and one irregular lesion (core, rim, edema; cavity in brats2024), uint8 labels."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    mid = np.array([s / 2 for s in shape], dtype=np.float32)
    radii = np.array([70, 88, 62], dtype=np.float32)
    brain = (((grid - mid[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0
    r = np.sqrt(((grid - np.array(center, dtype=np.float32)[:, None, None, None]) ** 2).sum(0))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 6)
    noise *= 4.0 / np.abs(noise).max()
    r = r + noise
    s = get_scheme(scheme)
    tumour = s.values_of("tumor")
    label = np.zeros(shape, dtype=np.uint8)
    label[(r < 30) & brain] = s.values_of("edema")[0]
    label[(r < 16) & brain] = tumour[-1]  # enhancing rim (ET)
    label[(r < 10) & brain] = tumour[0]  # necrotic core
    if s.values_of("cavity"):
        label[(r < 6) & brain] = s.values_of("cavity")[0]
    return label, brain


def fit(volume: np.ndarray, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Centre-crop or zero-pad ``volume`` to ``shape``."""
    out = np.zeros(shape, dtype=volume.dtype)
    src, dst = [], []
    for n, m in zip(volume.shape, shape, strict=True):
        a, b = max((n - m) // 2, 0), max((m - n) // 2, 0)
        k = min(n, m)
        src.append(slice(a, a + k))
        dst.append(slice(b, b + k))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def phantom_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 1 mm digital-phantom subject (MNI anatomy, one simulated glioma), fitted into 240 x 240 x 155."""
    from samraug.data.phantom import generate_subject

    subject = generate_subject(seed, resolution=1.0, n_lesions=1)
    return fit(subject.seg), fit(subject.brain)


def time_op(fn: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU times of ``repeats`` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheme", default="brats2024", choices=["brats2021", "brats2023", "brats2024"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("/tmp/samraug_bench/editing.json"))
    parser.add_argument(
        "--phantom", action="store_true", help="use 1 mm digital-phantom subjects (brats2024) instead of ellipsoids"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.phantom:
        args.scheme = "brats2024"
        (label, brain), (donor, donor_brain) = phantom_case(0), phantom_case(1)
    else:
        label, brain = synthetic_case(args.scheme, (90, 100, 80), seed=0)
        donor, donor_brain = synthetic_case(args.scheme, (150, 140, 70), seed=1)
    editor = LesionEditor(args.scheme)
    gen = torch.Generator().manual_seed(0)
    ops: dict[str, Callable[[], object]] = {
        "mirror": lambda: editor.mirror(label, brain),
        "scale x2": lambda: editor.scale(label, brain, factor=2.0),
        "scale x0.5": lambda: editor.scale(label, brain, factor=0.5),
        "move (integer)": lambda: editor.move(label, brain, shift=(20, -15, 5)),
        "move (sub-voxel)": lambda: editor.move(label, brain, shift=(20.5, -15.25, 5.0)),
        "rotate (3 angles)": lambda: editor.rotate(label, brain, angles=(10.0, -15.0, 30.0)),
        "perturb": lambda: editor.perturb(label, brain, strength=3.0, seed=0),
        "swap at donor": lambda: editor.swap(label, brain, donor, donor_brain, at="donor"),
        "swap at random": lambda: editor.swap(label, brain, donor, donor_brain, at="random", generator=gen),
        "remove": lambda: editor.remove(label, brain),
    }
    random_editor = LesionEditor(args.scheme, policy=EditPolicy())
    ops["random_edit (default policy)"] = lambda: random_editor.random_edit(
        label, brain, donors=[(donor, donor_brain)], generator=gen
    )
    checks = {
        name: fn().record["applied"] for name, fn in ops.items() if not name.startswith("random")
    }  # every op must really edit
    results = []
    for name, fn in ops.items():
        wall, cpu = time_op(fn, args.repeats)
        results.append(
            {
                "op": name,
                "median_s": statistics.median(wall),
                "min_s": min(wall),
                "max_s": max(wall),
                "median_cpu_s": statistics.median(cpu),
                "applied": checks.get(name),
            }
        )
    lesion = int(np.count_nonzero(label))
    source = "1 mm digital phantom" if args.phantom else "synthetic ellipsoid brain"
    print(f"LesionEditor on {SHAPE} {source} ({args.scheme}, lesion {lesion} voxels, brain {int(brain.sum())} voxels)")
    print(f"one thread, {args.repeats} repeats after a warm-up; target median < 0.2 s\n")
    print(f"{'operation':<30}{'median s':>10}{'min s':>9}{'max s':>9}{'median CPU s':>14}  applied")
    for r in results:
        print(
            f"{r['op']:<30}{r['median_s']:>10.3f}{r['min_s']:>9.3f}{r['max_s']:>9.3f}{r['median_cpu_s']:>14.3f}"
            f"  {r['applied'] if r['applied'] is not None else '-'}"
        )
    payload = {
        "benchmark": "editing",
        "shape": list(SHAPE),
        "scheme": args.scheme,
        "source": "phantom-1mm" if args.phantom else "synthetic",
        "lesion_voxels": lesion,
        "repeats": args.repeats,
        "threads": 1,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
