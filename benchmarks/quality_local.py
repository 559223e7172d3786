"""Local-synthesis quality in the BraTS inpainting challenge's terms, on held-out digital-phantom subjects.

Subjects: phantom data-set subjects ``--first-index .. --first-index + --n-subjects - 1`` (seed ``--data-seed``, 2 mm),
far beyond the subject counts any training run of this project draws (they start at index 0), so never seen in
training. For each subject, its **noise reference** is the same subject simulated with a second noise seed
(``generate_subject(..., noise_seed=1)``: same anatomy, lesions and scale, other noise).

Two tasks, with regions fixed by ``--seed`` and identical for every row:

- **healthy-tissue inpainting**: ``--regions`` regions per subject, each a real (phantom) lesion mask -- a tumour-core
  or whole-lesion component of another held-out subject, 10-40 mm across -- moved into healthy brain (inside the
  brain, at least 4 mm from any lesion). The model repaints the region as normal tissue (the edited label map is the
  real one; the "before" map has the region as a lesion); the truth is the real image.
- **lesion painting**: the region of each subject's lesions (dilated by ``--margin-mm``) repainted from their own
  mask; the truth is the real image.

Rows on the same regions: the local model (``--weights``: a local weights folder or hub id; ``--standin``: a
random-initialised contract-shaped model, a smoke test of the pipeline, NOT a result) as it paints
(``noise="none"``: the prediction the challenge scores), **+ matched noise** (the painters' default
``noise="match"``: the region's noise topped up to the subject's own around it, :mod:`samraug.texture`) and **no
seam correction** (``seam="none"``: without the Poisson blending of :mod:`samraug.seam`, noise none), **harmonic
healthy fill** (``healthy="harmonic"``: the region's voxels that are healthy after the edit filled by the harmonic
fill, the model painting only the lesion classes; noise none), **spline healthy fill** (the same with
``healthy="spline"``) and **mirror-guided healthy fill** (``healthy="mirror"``: the spline guided by the other
hemisphere, :mod:`samraug.mirror_fill`), **harmonic
fill** (classical Laplace inpainting: the harmonic function that meets the real image across the region's border,
:func:`samraug.seam.harmonic_fill`), **spline fill** (a thin-plate spline under tension that also continues the
border's slopes, :func:`samraug.seam.spline_fill`), **mean
fill** (each sequence filled with the mean of the brain ring 2-6 mm around the region: the floor), **copy-paste**
(inpainting only: the intensities of the region mirrored across the brain's mid-sagittal plane; skipped when the
mirror touches a lesion or leaves the brain), the **whole-image mode** (``--whole-weights``, default the bundled
whole-image demo weights; the whole subject painted from the edited mask, scored in the same region; ``--no-whole``
leaves it out), the **noise reference** and the **noise-free ceiling** (the same subject rendered without
acquisition noise, ``generate_subject(..., noise_free=True)``: the expected image given the anatomy up to the Rician
noise's bias, about ``sigma**2 / (2 * signal)``, 0.1 % at the median brain signal at the phantom's SNR of 20-40; the
best PSNR any prediction can score). Metrics inside the region: SSIM (Gaussian window, per axial slice, averaged
over region voxels), PSNR and MSE, with intensities scaled to [0, 1] per subject and sequence (0.5 / 99.5 brain
percentiles of the real image, clipped), and the inter-slice consistency: mean |v(z+1) - v(z)| over axially adjacent
voxel pairs inside the region, of the row and (in brackets) of the real image. The painting uses ``feather_mm=0`` so
the region holds the model's own output.

Also: the per-class contrast table (lesion class vs normal brain, in SD of normal brain, per sequence; real vs
synthetic, lesion task) and a PNG grid (real, region, synthetic) for three subjects. Label fidelity of the local
mode is in ``benchmarks/quality.py --variants samr_local`` (it needs the benchmark's segmenter).

Outputs (``--out DIR``): ``quality_local.json``, ``quality_local.md``, ``quality_local.png``.

Example:
    python benchmarks/quality_local.py --weights path/to/local-weights --out outputs/quality_local
    python benchmarks/quality_local.py --standin --n-subjects 2 --out /tmp/ql   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.quality import ssim
from benchmarks.throughput_local import machine_state, standin_synthesizer
from samraug.augment.painters import SAMRPainter
from samraug.data.phantom import PhantomSubject, dataset_subject, subject_seed
from samraug.grid import bounding_box, voxel_spacing
from samraug.image_stats import contrast, slice_consistency
from samraug.labels import get_scheme
from samraug.outputs import write_atomic
from samraug.region import dilate_mm, edit_region
from samraug.seam import harmonic_fill, spline_fill

__all__ = ["donor_shapes", "harmonic_fill_row", "main", "place_region", "region_metrics", "scale01"]

SCHEME = get_scheme("brats2024")
TASKS = ("inpainting", "lesion")
ROWS = (
    "local model",
    "local model + matched noise",
    "local model, no seam correction",
    "local model, harmonic healthy fill",
    "local model, spline healthy fill",
    "local model, mirror-guided healthy fill",
    "whole-image mode",
    "harmonic fill",
    "spline fill",
    "mean fill",
    "copy-paste",
    "noise reference",
    "noise-free ceiling",
)
METRICS = ("ssim", "psnr", "mse", "dz", "dz_real")
MIN_MM, MAX_MM = 10.0, 40.0
LESION_GAP_MM = 4.0


# ---------------------------------------------------------------------------------------------------- regions
def donor_shapes(subjects: Sequence[PhantomSubject]) -> list[tuple[int, np.ndarray]]:
    """Lesion-shaped masks 10-40 mm across: tumour-core (labels 1, 3) and whole-lesion components of each
    subject, cropped to their bounding boxes, with the index of the subject they come from."""
    out = []
    for k, s in enumerate(subjects):
        spacing = voxel_spacing(s.affine)
        for mask in (np.isin(s.seg, (1, 3)), s.seg > 0):
            comps, n = ndimage.label(mask)
            for i in range(1, n + 1):
                comp = comps == i
                box = bounding_box(comp)
                extent = np.array([hi - lo for lo, hi in box]) * spacing
                if MIN_MM <= extent.max() <= MAX_MM:
                    out.append((k, comp[tuple(slice(lo, hi) for lo, hi in box)].copy()))
    return out


def place_region(
    subject: PhantomSubject, shape_mask: np.ndarray, rng: np.random.Generator, tries: int = 200
) -> np.ndarray | None:
    """Place ``shape_mask`` in healthy brain: inside the brain, at least 4 mm from every lesion voxel."""
    spacing = voxel_spacing(subject.affine)
    forbidden = dilate_mm(subject.seg > 0, spacing, LESION_GAP_MM) | ~subject.brain
    allowed = ~forbidden
    size = np.array(shape_mask.shape)
    hi = np.array(subject.seg.shape) - size
    if (hi < 0).any():
        return None
    candidates = np.argwhere(allowed[: hi[0] + 1, : hi[1] + 1, : hi[2] + 1])
    if len(candidates) == 0:
        return None
    for _ in range(tries):
        start = candidates[rng.integers(len(candidates))]
        sl = tuple(slice(int(a), int(a) + int(n)) for a, n in zip(start, size, strict=True))
        if not (shape_mask & forbidden[sl]).any():
            region = np.zeros(subject.seg.shape, dtype=bool)
            region[sl] = shape_mask
            return region
    return None


def mirror_region(subject: PhantomSubject, region: np.ndarray) -> np.ndarray | None:
    """Voxel indices ``(N, 3)`` of the region mirrored across the brain's mid-sagittal plane (axis 0), or None
    when the mirror leaves the brain or touches a lesion."""
    pts = np.argwhere(region)
    centre = np.argwhere(subject.brain)[:, 0].mean()
    mx = np.round(2 * centre - pts[:, 0]).astype(np.int64)
    if mx.min() < 0 or mx.max() >= region.shape[0]:
        return None
    mirrored = np.stack([mx, pts[:, 1], pts[:, 2]], axis=1)
    sel = tuple(mirrored.T)
    if not subject.brain[sel].all() or (subject.seg[sel] > 0).any() or region[sel].any():
        return None
    return mirrored


# ---------------------------------------------------------------------------------------------------- metrics
def scale01(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``clip((image - lo) / (hi - lo), 0, 1)`` as float32."""
    return np.clip((image.astype(np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)


def region_metrics(pred: np.ndarray, truth: np.ndarray, region: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """SSIM, PSNR (dB) and MSE inside ``region`` with both images scaled to [0, 1] by the truth's brain
    percentiles (0.5, 99.5).

    Example:
        >>> x = np.random.default_rng(0).random((16, 16, 4)).astype(np.float32) + 1
        >>> r = np.zeros(x.shape, bool); r[4:12, 4:12, 1:3] = True
        >>> region_metrics(x, x, r, np.ones(x.shape, bool))["mse"]
        0.0
    """
    lo, hi = np.percentile(truth[brain].astype(np.float64), [0.5, 99.5])
    p, t = scale01(pred, lo, hi), scale01(truth, lo, hi)
    mse = float(((p[region] - t[region]) ** 2).mean())
    pairs = (region[..., 1:] & region[..., :-1]).any()
    return {
        "ssim": ssim(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(region), data_range=1.0),
        "psnr": math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse),
        "mse": mse,
        "dz": slice_consistency(p, region) if pairs else math.nan,
        "dz_real": slice_consistency(t, region) if pairs else math.nan,
    }


def mean_fill(image: np.ndarray, region: np.ndarray, brain: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The image with the region filled by the mean of the brain ring 2-6 mm around it."""
    ring = dilate_mm(region, spacing, 6.0) & ~dilate_mm(region, spacing, 2.0) & brain
    out = image.copy()
    out[region] = image[ring].mean() if ring.any() else image[brain].mean()
    return out


def harmonic_fill_row(
    images: Mapping[str, np.ndarray],
    sequences: Sequence[str],
    region: np.ndarray,
    brain: np.ndarray,
    fill: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = harmonic_fill,
) -> dict[str, np.ndarray]:
    """The harmonic fill reference row: each image with the region replaced by its 3D harmonic interpolation from
    the brain around it (:func:`samraug.seam.harmonic_fill`; ``fill=spline_fill``: the spline fill row).

    Example:
        >>> img = np.full((9, 9, 9), 4.0, np.float32); r = np.zeros(img.shape, bool); r[3:6, 3:6, 3:6] = True
        >>> out = harmonic_fill_row({"t1n": np.where(r, 0.0, img)}, ["t1n"], r, np.ones(r.shape, bool))
        >>> bool(np.allclose(out["t1n"], 4.0))
        True
    """
    stack = np.stack([np.asarray(images[s], dtype=np.float64) for s in sequences])
    filled = fill(stack, region, brain)
    out = {}
    for i, s in enumerate(sequences):
        img = np.asarray(images[s]).copy()
        img[region] = filled[i][region]
        out[s] = img
    return out


# ---------------------------------------------------------------------------------------------------- run
def _paint(painter: Any, subject: PhantomSubject, before: np.ndarray, after: np.ndarray, seed: int = 0):
    """The subject's images painted by ``painter`` (a :class:`~samraug.augment.painters.SAMRPainter`, local or
    whole mode) for the edit ``before`` -> ``after``, with the painter's record (``seed``: the matched noise's)."""
    images = {k: torch.from_numpy(v) for k, v in subject.images.items() if k in painter.synthesizer.sequences}
    brain = subject.brain | (before > 0) | (after > 0)
    generator = torch.Generator().manual_seed(int(seed))
    out, rec = painter.paint(images, before, after, brain, subject.affine, SCHEME, generator=generator)
    return {k: v.numpy() for k, v in out.items()}, rec


def _ceiling(index: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Phantom subject ``index`` rendered without acquisition noise (same anatomy, lesions, bias field and scale),
    per sequence: the expected image given the anatomy (up to the Rician noise's bias, ~0.1 % of the median brain
    signal here)."""
    s = dataset_subject(index, seed=args.data_seed, resolution=args.resolution, noise_free=True)
    return {key: image.astype(np.float32) for key, image in s.images.items()}


def _score(
    raw: Mapping[str, Any],
    preds: Mapping[str, Mapping[str, np.ndarray] | None],
    subject: PhantomSubject,
    region: np.ndarray,
    sequences: Sequence[str],
) -> None:
    """Append every row's in-region metrics of one region to ``raw[row][sequence][metric]`` (rows without a
    prediction skipped)."""
    for row, pred in preds.items():
        if pred is None:
            continue
        for s in sequences:
            m = region_metrics(pred[s], subject.images[s], region, subject.brain)
            for name in METRICS:
                raw[row][s][name].append(m[name])


def _summary(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    return {
        "mean": float(v.mean()) if v.size else float("nan"),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "n": int(v.size),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.time()
    synth = None
    model_source = None
    if args.weights:
        from samraug.synthesis import Synthesizer

        synth = Synthesizer(args.weights, device=args.device)
        model_source = f"weights {args.weights}"
    elif args.standin:
        synth = standin_synthesizer(args.device)
        model_source = "random-initialised contract-shaped stand-in (smoke test only, not a result)"
    sequences = tuple(synth.sequences) if synth is not None else ("t1n", "t1c", "t2w", "t2f")
    # feather 0: the region holds the model's own output; inpainting regions get no margin, lesions --margin-mm
    inpaint: dict[str, SAMRPainter] = {}
    lesion: dict[str, SAMRPainter] = {}
    if synth is not None:
        variants = {
            "local model": {"noise": "none"},
            "local model + matched noise": {"noise": "match"},
            "local model, no seam correction": {"noise": "none", "seam": "none"},
            "local model, harmonic healthy fill": {"noise": "none", "healthy": "harmonic"},
            "local model, spline healthy fill": {"noise": "none", "healthy": "spline"},
            "local model, mirror-guided healthy fill": {"noise": "none", "healthy": "mirror"},
        }
        for row, kw in variants.items():
            inpaint[row] = SAMRPainter(synth, mode="local", margin_mm=0.0, feather_mm=0.0, **kw)
            lesion[row] = SAMRPainter(synth, mode="local", margin_mm=args.margin_mm, feather_mm=0.0, **kw)
    whole = None
    if not args.no_whole:
        from samraug.hub import BUNDLED_WHOLE_WEIGHTS  # weights=None would be the bundled LOCAL weights

        whole_weights = args.whole_weights or str(BUNDLED_WHOLE_WEIGHTS)
        whole = SAMRPainter(whole_weights, mode="whole", device=args.device, space="MNI152")
        missing = sorted(set(sequences) - set(whole.synthesizer.sequences))
        if missing:
            raise SystemExit(f"--whole-weights make {list(whole.synthesizer.sequences)}, not {missing}")
    indices = list(range(args.first_index, args.first_index + args.n_subjects))
    real = [dataset_subject(i, seed=args.data_seed, resolution=args.resolution) for i in indices]
    noise = [
        dataset_subject(i, seed=args.data_seed, resolution=args.resolution, noise_seed=args.noise_seed) for i in indices
    ]
    ceiling = [_ceiling(i, args) for i in indices]
    shapes = donor_shapes(real)
    rng = np.random.default_rng(args.seed)
    raw: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {
        t: {r: {s: {m: [] for m in METRICS} for s in sequences} for r in ROWS} for t in TASKS
    }
    contrasts: dict[str, dict[str, dict[str, list[float]]]] = {}
    skipped: list[dict[str, Any]] = []
    grid: list[dict[str, Any]] = []
    for k, (subj, ref, top) in enumerate(zip(real, noise, ceiling, strict=True)):
        spacing = voxel_spacing(subj.affine)
        others = [sh for j, sh in shapes if j != k] or [sh for _, sh in shapes]
        # Task 1: healthy-tissue inpainting.
        for r_i in range(args.regions):
            region = place_region(subj, others[int(rng.integers(len(others)))], rng) if others else None
            if region is None:
                skipped.append({"subject": subj.subject_id, "task": "inpainting", "reason": "no healthy placement"})
                continue
            preds: dict[str, dict[str, np.ndarray] | None] = {r: None for r in ROWS}
            if synth is not None:
                before = np.where(region & (subj.seg == 0), np.uint8(2), subj.seg)
                painted, rec = _paint(inpaint["local model"], subj, before, subj.seg)
                if rec["skipped"] is None:
                    for row, painter in inpaint.items():
                        preds[row] = painted if row == "local model" else _paint(painter, subj, before, subj.seg, k)[0]
                else:
                    skipped.append({"subject": subj.subject_id, "task": "inpainting", "reason": rec["skipped"]})
            if whole is not None:
                preds["whole-image mode"] = _paint(whole, subj, before, subj.seg)[0]
            preds["mean fill"] = {s: mean_fill(subj.images[s], region, subj.brain, spacing) for s in sequences}
            preds["harmonic fill"] = harmonic_fill_row(subj.images, sequences, region, subj.brain)
            preds["spline fill"] = harmonic_fill_row(subj.images, sequences, region, subj.brain, spline_fill)
            mirrored = mirror_region(subj, region)
            if mirrored is not None:
                cp = {}
                for s in sequences:
                    img = subj.images[s].copy()
                    img[region] = subj.images[s][tuple(mirrored.T)]
                    cp[s] = img
                preds["copy-paste"] = cp
            preds["noise reference"] = {s: ref.images[s] for s in sequences}
            preds["noise-free ceiling"] = top
            _score(raw["inpainting"], preds, subj, region, sequences)
            if r_i == 0 and len(grid) < 3:
                shown = "local model + matched noise" if preds["local model"] is not None else "mean fill"
                grid.append(
                    {
                        "subject": subj,
                        "region": region,
                        "pred": preds[shown],
                        "row": shown,
                    }
                )
        # Task 2: lesion painting from its own mask.
        if not (subj.seg > 0).any():
            continue
        region = edit_region(
            subj.seg, subj.seg, lesion_values=SCHEME.lesion_values, spacing=spacing, margin_mm=args.margin_mm
        ) & (subj.brain | (subj.seg > 0))
        preds = {r: None for r in ROWS}
        if synth is not None:
            painted, rec = _paint(lesion["local model"], subj, subj.seg, subj.seg)
            if rec["skipped"] is None:
                for row, painter in lesion.items():
                    preds[row] = painted if row == "local model" else _paint(painter, subj, subj.seg, subj.seg, k)[0]
            else:
                skipped.append({"subject": subj.subject_id, "task": "lesion", "reason": rec["skipped"]})
        if whole is not None:
            preds["whole-image mode"] = _paint(whole, subj, subj.seg, subj.seg)[0]
        preds["mean fill"] = {s: mean_fill(subj.images[s], region, subj.brain, spacing) for s in sequences}
        preds["noise reference"] = {s: ref.images[s] for s in sequences}
        preds["noise-free ceiling"] = top
        _score(raw["lesion"], preds, subj, region, sequences)
        normal = subj.brain & (subj.seg == 0) & ~region
        for value in SCHEME.lesion_values:
            cls = subj.seg == value
            if cls.sum() < 10:
                continue
            name = SCHEME.names[value]
            for s in sequences:
                entry = contrasts.setdefault(name, {}).setdefault(s, {"real": [], "synthetic": []})
                entry["real"].append(contrast(subj.images[s], cls, normal))
                if preds["local model"] is not None:
                    entry["synthetic"].append(contrast(preds["local model"][s], cls, normal))

    summary = {
        t: {
            r: {s: {m: _summary(raw[t][r][s][m]) for m in METRICS} for s in sequences}
            for r in ROWS
            if any(raw[t][r][s]["ssim"] for s in sequences)
        }
        for t in TASKS
    }
    contrast_table = {
        c: {s: {k: _summary(v)["mean"] for k, v in d.items()} for s, d in per.items()} for c, per in contrasts.items()
    }
    return {
        "benchmark": "quality_local",
        "simulated_data": True,
        "data": {
            "phantom_seed": args.data_seed,
            "resolution_mm": args.resolution,
            "subjects": [s.subject_id for s in real],
            "subject_seeds": [subject_seed(args.data_seed, i) for i in indices],
            "noise_seed": args.noise_seed,
        },
        "model": model_source,
        "region_seed": args.seed,
        "regions_per_subject": args.regions,
        "margin_mm": args.margin_mm,
        "sequences": list(sequences),
        "summary": summary,
        "contrast_sd": contrast_table,
        "skipped": skipped,
        "whole_weights": None if whole is None else (args.whole_weights or "bundled whole-image demo weights"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": machine_state(torch.get_num_threads()),
        "wall_seconds": time.time() - start,
        "_grid": grid,
    }


def plot_grid(grid: Sequence[Mapping[str, Any]], sequences: Sequence[str], path: Path) -> Path:
    """Rows: subjects; columns per sequence: real, region (outlined on the real image), synthetic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seqs = [s for s in ("t1c", "t2f") if s in sequences] or list(sequences[:2])
    fig, axes = plt.subplots(len(grid), 3 * len(seqs), figsize=(2.0 * 3 * len(seqs), 2.2 * len(grid)), squeeze=False)
    for i, g in enumerate(grid):
        subj, region = g["subject"], g["region"]
        z = int(np.argmax(region.sum(axis=(0, 1))))
        for j, s in enumerate(seqs):
            real = subj.images[s][:, :, z].T
            vmax = float(np.percentile(subj.images[s][subj.brain], 99.5))
            shown = np.where(region, g["pred"][s], subj.images[s])[:, :, z].T  # the scored region only
            panels = (("real", real), ("region", real), (g["row"], shown))
            for c, (title, img) in enumerate(panels):
                ax = axes[i, 3 * j + c]
                ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, origin="lower")
                if title == "region":
                    ax.contour(region[:, :, z].T, levels=[0.5], colors="r", linewidths=0.8)
                ax.set_title(f"{subj.subject_id[-9:]} {s} {title}", fontsize=6)
                ax.axis("off")
    fig.suptitle("Healthy-tissue inpainting -- digital phantom, SIMULATED", fontsize=9)
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))
    finally:
        plt.close(fig)
    return path


def format_report(res: Mapping[str, Any]) -> str:
    lines = [
        "# Local synthesis quality (digital phantom, SIMULATED data)",
        "",
        f"Subjects: {', '.join(res['data']['subjects'])}; model: {res['model'] or 'none (reference rows only)'}; "
        f"regions seed {res['region_seed']}. Intensities scaled to [0, 1] per subject and sequence; metrics inside "
        "the region.",
        "",
    ]
    for task in TASKS:
        lines += [
            f"## {task}",
            "",
            "| row | sequence | SSIM | PSNR (dB) | MSE | mean abs dz (real) | n |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for row, per in res["summary"][task].items():
            for s, m in per.items():
                lines.append(
                    f"| {row} | {s} | {m['ssim']['mean']:.3f} ± {m['ssim']['std']:.3f} | "
                    f"{m['psnr']['mean']:.2f} ± {m['psnr']['std']:.2f} | {m['mse']['mean']:.4f} | "
                    f"{m['dz']['mean']:.3f} ({m['dz_real']['mean']:.3f}) | {m['ssim']['n']} |"
                )
        lines.append("")
    lines += ["## contrast (SD of normal brain), real / synthetic", "", "| class | sequence | real | synthetic |"]
    lines.append("|---|---|---:|---:|")
    for c, per in res["contrast_sd"].items():
        for s, v in per.items():
            lines.append(f"| {c} | {s} | {v['real']:+.2f} | {v['synthetic']:+.2f} |")
    lines += [
        "",
        "Label fidelity of the local mode: `python benchmarks/quality.py --variants samr_local` (a segmenter trained "
        "on real images, Dice on images whose lesion neighbourhood was repainted vs on the real ones).",
        f"Command: `{res['command']}`",
    ]
    m = res["machine"]
    lines.append(f"Machine: {m['platform']}, {m['cpu_count']} CPUs, load {m['loadavg_1_5_15']}, torch {m['torch']}.")
    if res["skipped"]:
        lines.append(f"Skipped: {len(res['skipped'])} regions ({res['skipped'][0]['reason']}, ...).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="local weights folder or org/name[@rev] (config mode 'local')")
    p.add_argument("--standin", action="store_true", help="random-initialised stand-in model (smoke test only)")
    p.add_argument(
        "--whole-weights",
        default=None,
        help="whole-image weights of the whole-image row (default: the bundled samraug/weights/samr-tiny-phantom)",
    )
    p.add_argument("--no-whole", action="store_true", help="leave out the whole-image mode row")
    p.add_argument("--n-subjects", type=int, default=6)
    p.add_argument("--first-index", type=int, default=900, help="first held-out phantom subject index")
    p.add_argument("--data-seed", type=int, default=0, help="phantom data-set seed")
    p.add_argument("--noise-seed", type=int, default=1, help="noise seed of the noise reference")
    p.add_argument("--resolution", type=float, default=2.0)
    p.add_argument("--regions", type=int, default=2, help="inpainting regions per subject")
    p.add_argument("--margin-mm", type=float, default=4.0, help="lesion-painting region margin")
    p.add_argument("--seed", type=int, default=0, help="region seed (same regions for every row)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("outputs/quality_local"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    args = p.parse_args(argv)
    if args.weights and args.standin:
        p.error("give --weights or --standin, not both")
    if args.n_subjects < 2:
        p.error("--n-subjects must be >= 2 (regions come from other subjects' lesions)")
    target = args.out / "quality_local.json"
    if target.exists() and not args.overwrite:
        p.error(f"{target} exists; pass --overwrite to replace it or another --out")
    torch.set_num_threads(args.threads)
    res = run(args)
    grid = res.pop("_grid")
    args.out.mkdir(parents=True, exist_ok=True)
    if grid:
        res["png"] = str(plot_grid(grid, res["sequences"], args.out / "quality_local.png"))
    write_atomic(target, json.dumps(res, indent=1, allow_nan=True) + "\n")
    report = format_report(res)
    write_atomic(args.out / "quality_local.md", report)
    print(report)
    return res


if __name__ == "__main__":
    main()
