"""Synthesis-quality report: label fidelity, SSIM / PSNR / MAE per sequence, and a real-vs-synthetic grid.

On the held-out test subjects of the benchmark protocol (:mod:`benchmarks.augmentation`: patient-level split; the
generator given or trained on the training split only):

- **Label fidelity.** A U-Net trained on REAL training images (the benchmark's segmenter, same settings) segments
  (a) the real test images and (b) the synthetic images G(mask) made from the test subjects' own masks. Dice of
  (b) against the mask the images were made from, per region (edema, cavity, tumor; 3D, per subject) and its
  ratio to (a), the same U-Net's Dice on the real images. A ratio near 1 means the synthetic lesions look like
  real lesions to a segmenter.
- **Image similarity.** G(real mask) vs the paired real images, per sequence: SSIM (Gaussian window 11, sigma 1.5,
  per axial slice, :func:`samraug.training.gan.ssim_map`, averaged over brain voxels), PSNR (data range 2) and MAE,
  all in the normalised intensity range [-1, 1] (robust percentiles per subject and sequence) and inside the
  brain only. The generator is not asked to reproduce the real image -- only the mask is shared -- so these
  measure closeness to one plausible image, not an upper bound of 1.
- **Atlas alone.** The same similarity for the generator's atlas (the input it starts from), each sequence mapped
  linearly to the subject's brain mean and SD (:func:`samraug.image_stats.match_intensity`), background -1: the
  floor a generator has to beat.
- **Per-class contrast.** For each lesion class of the data's own label scheme (e.g. BraTS 2024: NETC, SNFH, ET,
  RC) and each sequence: (class mean - normal-brain mean) / SD of normal brain
  (:func:`samraug.image_stats.contrast`), on the real test images and on G(mask), mean over subjects.
- **Checkerboard index.** Share of the in-brain spectral energy at the Nyquist frequencies (the 2D DFT's row and
  column at N/2: period-2 patterns) of the axial slices, over the 8 x 8 squares wholly inside the brain with their
  plane removed (:func:`samraug.image_stats.checkerboard_index`): 1 for a pure period-2 checkerboard, ~0 for a
  smooth image, 0.23 for white noise; synthetic vs real and their ratio.
- **Inter-slice consistency.** Mean |v(z+1) - v(z)| over axially adjacent brain voxels of whole subjects
  (:func:`samraug.image_stats.slice_consistency`), synthetic vs real and their ratio (a slice-wise generator that
  ignores its neighbours shows a larger value than real). The real images carry acquisition noise, which adds to
  their change and which a generator does not paint; on the phantom, each test subject is rendered a second time
  without acquisition noise (:func:`anatomy_reference`), and the root-mean-square change of that noise-free anatomy
  (:func:`samraug.image_stats.slice_change_rms`) is the reference for the synthetic images' RMS change. (Earlier
  releases estimated it from a second noise realisation by subtracting the noise's variance; for APTw, whose noise
  dwarfs its anatomy's change, that estimate sat at its resolution limit, 0 for 3 of the 4 quick-preset subjects.)
- **Intensity-matched synthetic.** The atlas-alone row is given each subject's brain mean and SD; the generator is
  not (its global level per subject is a guess: on the phantom, e.g., the T1c brain level depends on the enhancing
  tumour's share of the brain through the percentile normalisation). The same match applied to the synthetic
  images compares the two on the same footing (the unmatched figures stay in the table).
- A PNG grid: for a few test subjects, a lesion slice of each real sequence above the synthetic one, with the mask.

Outputs (``--out DIR``): ``quality.md``, ``quality.json``, ``quality.png``.

Example:
    python benchmarks/quality.py --preset quick --out /tmp/quality_quick
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.augmentation import (
    PRESETS,
    REGIONS,
    BenchmarkConfig,
    BenchmarkContext,
    Painter,
    machine_info,
    prepare_context,
    report_footer,
    torch_threads,
)
from samraug.augment.painters import SAMRPainter
from samraug.data.phantom import dataset_subject
from samraug.image_stats import (
    checkerboard_index,
    contrast_table,
    match_intensity,
    slice_change_rms,
    slice_consistency,
)
from samraug.labels import get_scheme
from samraug.training.segmentation import EvalVolume, evaluate_segmenter, train_segmenter

__all__ = [
    "anatomy_reference",
    "atlas_alone",
    "format_report",
    "image_similarity",
    "image_structure",
    "mae",
    "main",
    "matched",
    "model_classes",
    "plot_grid",
    "psnr",
    "run_quality",
    "ssim",
]

IMAGE_METRICS: tuple[str, ...] = ("ssim", "psnr", "mae")
DATA_RANGE = 2.0  # normalised images live in [-1, 1]


# ---------------------------------------------------------------------------------------------------- metrics
def _check_pair(fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    if fake.shape != real.shape:
        raise ValueError(f"synthetic {tuple(fake.shape)} and real {tuple(real.shape)} images differ in shape")
    if tuple(brain.shape) != tuple(fake.shape[-brain.dim() :]):
        raise ValueError(f"brain mask {tuple(brain.shape)} does not match the images {tuple(fake.shape)}")
    brain = brain.bool()
    if not brain.any():
        raise ValueError("the brain mask is empty: nothing to compare")
    for name, x in (("synthetic", fake), ("real", real)):
        if not torch.isfinite(x).all():
            raise ValueError(f"the {name} images contain NaN or inf")
    return brain


def mae(fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor) -> float:
    """Mean absolute difference over brain voxels (``fake``/``real`` of any shape ending with ``brain``'s).

    Example:
        >>> mae(torch.zeros(4), torch.tensor([1.0, -1.0, 0.0, 0.5]), torch.tensor([True, True, False, False]))
        1.0
    """
    brain = _check_pair(fake, real, brain)
    diff = (fake.float() - real.float()).abs()
    return float(diff[..., brain].mean())


def psnr(fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor, data_range: float = DATA_RANGE) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` with the MSE over brain voxels (inf if equal).

    Example:
        >>> round(psnr(torch.zeros(4), torch.full((4,), 0.2), torch.ones(4, dtype=torch.bool)), 4)  # 10 log10(4 / 0.04)
        20.0
    """
    brain = _check_pair(fake, real, brain)
    mse = float(((fake.float() - real.float()) ** 2)[..., brain].mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor, data_range: float = DATA_RANGE) -> float:
    """SSIM of a volume ``(X, Y, Z)`` (or a slice ``(X, Y)``), computed per axial slice with a Gaussian window
    (:func:`samraug.training.gan.ssim_map`) and averaged over the brain voxels.

    Example:
        >>> x = torch.rand(16, 16, 3)
        >>> round(ssim(x, x, torch.ones(16, 16, 3, dtype=torch.bool)), 6)
        1.0
    """
    from samraug.training.gan import ssim_map

    brain = _check_pair(fake, real, brain)
    if fake.dim() == 2:
        fake, real, brain = fake[..., None], real[..., None], brain[..., None]
    if fake.dim() != 3:
        raise ValueError(f"ssim expects a slice (X, Y) or a volume (X, Y, Z), got {tuple(fake.shape)}")
    keep = torch.nonzero(brain.flatten(0, 1).any(0)).flatten()
    f = fake[..., keep].permute(2, 0, 1)[:, None].float()  # (k, 1, X, Y)
    r = real[..., keep].permute(2, 0, 1)[:, None].float()
    w = brain[..., keep].permute(2, 0, 1)[:, None].float()
    smap = ssim_map(f, r, data_range=data_range)
    return float((smap * w).sum() / w.sum())


def image_similarity(
    fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor, sequences: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{sequence: {"ssim", "psnr", "mae"}}`` for ``(n, X, Y, Z)`` synthetic and real volumes inside ``brain``."""
    if fake.shape[0] != len(sequences):
        raise ValueError(f"{fake.shape[0]} image channels for sequences {list(sequences)}")
    return {
        seq: {
            "ssim": ssim(fake[i], real[i], brain),
            "psnr": psnr(fake[i], real[i], brain),
            "mae": mae(fake[i], real[i], brain),
        }
        for i, seq in enumerate(sequences)
    }


def image_structure(
    fake: torch.Tensor,
    real: torch.Tensor,
    brain: torch.Tensor,
    sequences: Sequence[str],
    anatomy: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """``{sequence: {"checkerboard", "checkerboard_real", "dz", "dz_real", "dz_rms", "dz_rms_real"[,
    "dz_rms_real_signal"]}}`` of ``(n, X, Y, Z)`` volumes inside ``brain``: the checkerboard index, the mean and
    the RMS inter-slice change (:mod:`samraug.image_stats`); with ``anatomy`` (the real subject rendered without
    acquisition noise, :func:`anatomy_reference`) also the real anatomy's own RMS change."""
    if fake.shape[0] != len(sequences) or real.shape[0] != len(sequences):
        raise ValueError(f"{fake.shape[0]} / {real.shape[0]} image channels for sequences {list(sequences)}")
    b = brain.bool().numpy()
    out = {}
    for i, seq in enumerate(sequences):
        m = {
            "checkerboard": checkerboard_index(fake[i], b),
            "checkerboard_real": checkerboard_index(real[i], b),
            "dz": slice_consistency(fake[i], b),
            "dz_real": slice_consistency(real[i], b),
            "dz_rms": slice_change_rms(fake[i], b),
            "dz_rms_real": slice_change_rms(real[i], b),
        }
        if anatomy is not None:
            m["dz_rms_real_signal"] = slice_change_rms(anatomy[i], b)
        out[seq] = m
    return out


def matched(fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """``fake`` ``(n, X, Y, Z)`` mapped per sequence to the real subject's brain mean and SD (the atlas-alone
    row's match); -1 outside the brain.

    Example:
        >>> real = torch.tensor([[[[0.0, 0.5, -1.0]]]]); fake = torch.tensor([[[[-0.5, 0.5, -1.0]]]])
        >>> matched(fake, real, torch.tensor([[[True, True, False]]])).tolist()
        [[[[0.0, 0.5, -1.0]]]]
    """
    if fake.shape != real.shape or brain.shape != real.shape[1:]:
        raise ValueError(
            f"synthetic {tuple(fake.shape)}, real {tuple(real.shape)} and brain {tuple(brain.shape)} differ: pass "
            "volumes (n, X, Y, Z) of one grid and sequence order, and the brain (X, Y, Z)"
        )
    b = brain.bool()
    out = torch.full_like(real, -1.0)
    for i in range(real.shape[0]):
        m = torch.from_numpy(match_intensity(fake[i].numpy(), real[i].numpy(), b.numpy())).to(real.dtype)
        out[i] = torch.where(b, m, out[i])
    return out


def anatomy_reference(config: BenchmarkConfig, vol: EvalVolume, sequences: Sequence[str], scheme: str) -> torch.Tensor:
    """The phantom test subject ``vol`` rendered without acquisition noise (``noise_free=True``: same anatomy,
    lesions, bias and scale), in ``vol``'s own normalisation: ``(n, X, Y, Z)``. Phantom data only.

    The normalisation is a linear map of each sequence clipped to [-1, 1]; it is fitted on ``vol``'s unclipped brain
    voxels against the subject's noisy rendering (the images ``vol`` was made from) and checked to be exact there,
    then applied to the noise-free rendering.
    """
    if config.data is not None:
        raise ValueError("a noise-free anatomy reference exists for the digital phantom only")
    index = int(vol.subject_id.split("-")[2])
    kw = {"seed": config.phantom_seed, "resolution": config.resolution}
    noisy, clean = dataset_subject(index, **kw), dataset_subject(index, **kw, noise_free=True)
    if noisy.subject_id != vol.subject_id:
        raise RuntimeError(f"phantom case {noisy.subject_id!r} is not the test subject {vol.subject_id!r}")
    brain = (vol.label > 0).numpy()
    if noisy.seg.shape != brain.shape or not np.array_equal(noisy.brain | (noisy.seg > 0), brain):
        raise RuntimeError(f"the phantom rendering of {vol.subject_id!r} differs from the test subject's grid or brain")
    out = vol.image.clone()
    for i, q in enumerate(sequences):
        norm = vol.image[i].numpy().astype(np.float64)
        raw = noisy.images[q].astype(np.float64)
        sel = brain & (np.abs(norm) < 0.999)
        slope, offset = np.polyfit(raw[sel], norm[sel], 1)
        if np.abs(slope * raw[sel] + offset - norm[sel]).max() > 1e-3:
            raise RuntimeError(f"{vol.subject_id!r} {q}: the normalisation is not a linear map of the rendering")
        ref = np.clip(slope * clean.images[q].astype(np.float64) + offset, -1.0, 1.0)
        out[i] = torch.from_numpy(np.where(brain, ref, norm).astype(np.float32))
    return out


def atlas_alone(atlas_data: torch.Tensor, real: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """The atlas ``(n, X, Y, Z)`` mapped per sequence to the real subject's brain mean and SD; -1 outside the brain.

    Example:
        >>> real = torch.tensor([[[[0.0, 0.5, -1.0]]]]); atlas = torch.tensor([[[[1.0, 3.0, 0.0]]]])
        >>> atlas_alone(atlas, real, torch.tensor([[[True, True, False]]])).tolist()
        [[[[0.0, 0.5, -1.0]]]]
    """
    if atlas_data.shape != real.shape:
        raise ValueError(
            f"atlas {tuple(atlas_data.shape)} and subject {tuple(real.shape)} differ: the subject must be on the "
            "atlas grid with the atlas's sequences"
        )
    return matched(atlas_data, real, brain)


def model_classes(scheme: str | None, conditioning: str) -> dict[str, tuple[int, ...]]:
    """``{class name: (model class,)}`` of the lesion classes a generator with ``conditioning`` sees (class >= 2)."""
    names = get_scheme(scheme or "samr").classes(conditioning)
    return {name: (k,) for k, name in enumerate(names) if k >= 2}


def native_labels(config: BenchmarkConfig, ctx: BenchmarkContext) -> dict[str, np.ndarray]:
    """``{test subject: (X, Y, Z) native classes}`` (0 background, 1 normal brain, 2.. the data scheme's own lesion
    classes, :meth:`samraug.labels.LabelScheme.classes`), for the per-class contrast table."""
    from benchmarks.augmentation import load_subjects
    from samraug.data.slices import prepare_subject

    subjects, _, _, _ = load_subjects(config, log=lambda m: None)
    by_id = {s["subject_id"]: s for s in subjects}
    out = {}
    for vol in ctx.test:
        p = prepare_subject(
            by_id[vol.subject_id], ctx.sequences, scheme=ctx.scheme, selection="all", conditioning="native"
        )
        if tuple(p.label.shape) != tuple(vol.label.shape):
            raise RuntimeError(f"subject {vol.subject_id!r}: native labels {tuple(p.label.shape)} vs {vol.label.shape}")
        out[vol.subject_id] = p.label.numpy()
    return out


# ---------------------------------------------------------------------------------------------------- run
def synthesize_test_volume(
    painter: Painter,
    vol: EvalVolume,
    affine: np.ndarray,
    native: np.ndarray | None = None,
    scheme: str | None = None,
) -> torch.Tensor:
    """G(real mask) of a held-out subject, ``(n, X, Y, Z)`` in the benchmark's normalised range, background -1.

    ``vol.label`` holds SAMR classes; a natively conditioned generator gets the subject's own classes instead
    (``native``: the data scheme's native classes, re-encoded for the weights' scheme and conditioning)."""
    brain = vol.label > 0
    synth = painter.synthesizer
    if is_local(painter):  # repaint the lesion's neighbourhood inside the subject's own (normalised) images
        if native is None or scheme is None:
            raise ValueError("a local-mode generator needs the subject's native labels and scheme")
        data_scheme = get_scheme(scheme)
        label = np.asarray(data_scheme.decode(native))
        images = {q: vol.image[i] for i, q in enumerate(synth.sequences)}
        out, record = SAMRPainter(synth, mode="local").paint(
            images, label, label, brain.numpy(), affine, data_scheme, generator=torch.Generator().manual_seed(0)
        )
        if record.get("skipped"):
            raise RuntimeError(f"subject {vol.subject_id!r}: local painting skipped: {record['skipped']}")
        return torch.stack([torch.where(brain, out[q].float(), torch.full_like(vol.image[0], -1.0)) for q in images])
    classes = vol.label
    if str(synth.config.get("conditioning", "samr")) != "samr":
        if native is None or scheme is None:
            raise ValueError("a natively conditioned generator needs the subject's native labels and scheme")
        data_scheme = get_scheme(scheme)
        classes = synth.encode(data_scheme.decode(native), brain, data_scheme)
    # G's output goes back to the subject's scale with the weights' own normalisation (stats of the real images,
    # the real lesion left out where the weights say so) -- here the subject's scale is the benchmark's normalised
    # one, so the result is comparable voxel for voxel; clipped to [-1, 1] like the real volumes.
    seqs = painter.synthesizer.sequences
    stats = synth.subject_stats({q: vol.image[i] for i, q in enumerate(seqs)}, brain, vol.label > 1)
    out = synth.synthesize_volume(classes, affine=affine, brain=brain, stats=stats, output="subject")
    return torch.stack([torch.where(brain, out[q].float().clamp(-1.0, 1.0), torch.tensor(-1.0)) for q in seqs])


def is_local(painter: Painter) -> bool:
    """Whether the painter's weights are local-mode weights (they paint a region inside the real images)."""
    return str(painter.synthesizer.config.get("mode", "whole")) == "local"


def _mean(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    return float(v.mean()) if v.size else float("nan")


def _std(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else 0.0 if v.size else float("nan")


def _per_sequence(per_subject: Mapping[str, Mapping[str, Mapping[str, float]]], sequences: Sequence[str]):
    """Mean and std over subjects of ``{subject: {sequence: {metric: value}}}``."""
    metrics = sorted({m for d in per_subject.values() for q in d.values() for m in q})
    return {
        seq: {m: _mean([per_subject[s][seq][m] for s in per_subject]) for m in metrics}
        | {f"{m}_std": _std([per_subject[s][seq][m] for s in per_subject]) for m in metrics}
        for seq in sequences
    }


def _contrast_summary(per_subject: Sequence[Mapping[str, Mapping[str, float]]], key: str, out: dict) -> None:
    for table in per_subject:
        for cls, per_seq in table.items():
            for seq, value in per_seq.items():
                out.setdefault(cls, {}).setdefault(seq, {}).setdefault(key, []).append(value)


def run_quality(
    config: BenchmarkConfig,
    variants: Sequence[str] = ("samr",),
    log: Callable[[str], None] = print,
    command: str | None = None,
    painters: Mapping[str, Painter] | None = None,
    grid_path: str | Path | None = None,
    n_grid: int = 3,
) -> dict[str, Any]:
    """Run the quality report for the given generator ``variants``; returns JSON-able results."""
    with torch_threads(config.threads):
        return _run_quality(config, variants, log, command, painters, grid_path, n_grid)


def _run_quality(
    config: BenchmarkConfig,
    variants: Sequence[str],
    log: Callable[[str], None],
    command: str | None,
    painters: Mapping[str, Painter] | None,
    grid_path: str | Path | None,
    n_grid: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    machine = machine_info()
    ctx: BenchmarkContext = prepare_context(config, list(variants), log, painters)
    seed = int(config.seeds[0])
    trained = train_segmenter(ctx.real, config.segmenter(seed))
    log(f"label-fidelity U-Net trained on {len(ctx.real)} real slices ({trained.seconds:.0f} s)")
    real_scores = evaluate_segmenter(trained.model, ctx.test, regions=REGIONS)
    native = native_labels(config, ctx)
    classes = model_classes(ctx.scheme, "native")
    anatomy_refs = (
        {v.subject_id: anatomy_reference(config, v, ctx.sequences, ctx.scheme) for v in ctx.test}
        if config.data is None
        else {}
    )
    out_variants: dict[str, Any] = {}
    synthetic_examples: dict[str, torch.Tensor] = {}
    for variant in variants:
        painter = ctx.painters[variant]
        t0 = time.perf_counter()
        synth_vols, similarity, similarity_matched, structure, atlas_sim, atlas_struct = [], {}, {}, {}, {}, {}
        conditioning = str(getattr(painter.synthesizer, "config", {}).get("conditioning", "samr"))
        contrasts: dict[str, dict[str, dict[str, list[float]]]] = {}
        local = is_local(painter)
        atlas = None if local else painter.synthesizer.atlas.select(ctx.sequences).data  # local weights: no atlas
        for vol in ctx.test:
            brain = vol.label > 0
            fake = synthesize_test_volume(
                painter, vol, ctx.affines[vol.subject_id], native.get(vol.subject_id), ctx.scheme
            )
            similarity[vol.subject_id] = image_similarity(fake, vol.image, brain, ctx.sequences)
            similarity_matched[vol.subject_id] = image_similarity(
                matched(fake, vol.image, brain), vol.image, brain, ctx.sequences
            )
            structure[vol.subject_id] = image_structure(
                fake, vol.image, brain, ctx.sequences, anatomy_refs.get(vol.subject_id)
            )
            if atlas is not None:
                alone = atlas_alone(atlas, vol.image, brain)
                atlas_sim[vol.subject_id] = image_similarity(alone, vol.image, brain, ctx.sequences)
                atlas_struct[vol.subject_id] = image_structure(alone, vol.image, brain, ctx.sequences)
            label = native[vol.subject_id]
            for key, images in (("real", vol.image), ("synthetic", fake)):
                table = contrast_table(
                    {q: images[i].numpy() for i, q in enumerate(ctx.sequences)},
                    label,
                    brain.numpy(),
                    classes,
                    normal_values=(1,),
                )
                _contrast_summary([table], key, contrasts)
            synth_vols.append(EvalVolume(vol.subject_id, fake, vol.label, vol.spacing))
            if variant == variants[0]:
                synthetic_examples[vol.subject_id] = fake
        synth_scores = evaluate_segmenter(trained.model, synth_vols, regions=REGIONS)
        fidelity: dict[str, Any] = {}
        for region in REGIONS:
            d_syn = [synth_scores[s][region]["dice"] for s in synth_scores]
            d_real = [real_scores[s][region]["dice"] for s in real_scores]
            m_syn, m_real = _mean(d_syn), _mean(d_real)
            fidelity[region] = {
                "dice_synthetic": m_syn,
                "dice_synthetic_std": _std(d_syn),
                "dice_real": m_real,
                "dice_real_std": _std(d_real),
                "ratio": m_syn / m_real if m_real > 0 else float("nan"),
            }
        per_seq = _per_sequence(similarity, ctx.sequences)
        struct = _per_sequence(structure, ctx.sequences)
        for m in struct.values():
            for k in ("checkerboard", "dz", "dz_rms"):
                m[f"{k}_ratio"] = m[k] / m[f"{k}_real"] if m[f"{k}_real"] > 0 else float("nan")
            if "dz_rms_real_signal" in m:  # the anatomy's own change (noise-free rendering) is the reference
                ref = m["dz_rms_real_signal"]
                m["dz_rms_signal_ratio"] = m["dz_rms"] / ref if ref > 0 else float("nan")
        out_variants[variant] = {
            "source": painter.source,
            "mode": "local" if local else "whole",
            "conditioning": conditioning,
            "label_fidelity": fidelity,
            "image_similarity": per_seq,
            "image_similarity_matched": _per_sequence(similarity_matched, ctx.sequences),
            "atlas_alone": _per_sequence(atlas_sim, ctx.sequences) if atlas_sim else None,
            "atlas_alone_structure": _per_sequence(atlas_struct, ctx.sequences) if atlas_struct else None,
            "structure": struct,
            "contrast_sd": {
                c: {q: {k: _mean(v) for k, v in d.items()} | {"n": len(d.get("real", []))} for q, d in per.items()}
                for c, per in contrasts.items()
            },
            "per_subject": {
                s: {
                    "similarity": similarity[s],
                    "similarity_matched": similarity_matched[s],
                    "structure": structure[s],
                    "atlas_alone": atlas_sim.get(s),
                    "dice_synthetic": synth_scores[s],
                    "dice_real": real_scores[s],
                }
                for s in similarity
            },
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log(
            f"{variant}: label fidelity (Dice ratio) "
            + " ".join(f"{r} {fidelity[r]['ratio']:.2f}" for r in REGIONS)
            + " | SSIM "
            + " ".join(f"{q} {per_seq[q]['ssim']:.3f}" for q in ctx.sequences)
        )
    if grid_path is not None and synthetic_examples:
        plot_grid(ctx, synthetic_examples, grid_path, n=n_grid)
    return {
        "benchmark": "synthesis quality",
        "simulated_data": bool(ctx.source.get("simulated")),
        "command": command,
        "machine": machine,
        "config": config.to_dict(),
        "segmenter": trained.config.to_dict(),
        "data": ctx.source | {"split": ctx.split, "sequences": list(ctx.sequences), "n_real_slices": len(ctx.real)},
        "intensity_range": "normalised [-1, 1] per subject and sequence (robust percentiles), inside the brain",
        "protocol": {"check": "passed", "warnings": ctx.warnings},
        "regions": list(REGIONS),
        "variants": out_variants,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


# ---------------------------------------------------------------------------------------------------- outputs
def plot_grid(ctx: BenchmarkContext, synthetic: Mapping[str, torch.Tensor], path: str | Path, n: int = 3) -> Path:
    """For up to ``n`` test subjects: the slice with the most lesion, real sequences (top) over synthetic ones
    (bottom), the mask on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vols = [v for v in ctx.test if v.subject_id in synthetic][:n]
    n_seq = len(ctx.sequences)
    fig, axes = plt.subplots(2 * len(vols), n_seq + 1, figsize=(1.9 * (n_seq + 1), 2.0 * 2 * len(vols)), squeeze=False)
    for k, vol in enumerate(vols):
        z = int(torch.argmax((vol.label >= 2).flatten(0, 1).sum(0)))
        fake = synthetic[vol.subject_id]
        for row, (name, images) in enumerate((("real", vol.image), ("synthetic", fake))):
            ax_row = axes[2 * k + row]
            if row == 0:
                ax_row[0].imshow(vol.label[..., z].T.numpy(), cmap="tab10", vmin=0, vmax=9, origin="lower")
                ax_row[0].set_title(f"{vol.subject_id}\nmask z={z}", fontsize=7)
            ax_row[0].axis("off")
            for i, seq in enumerate(ctx.sequences):
                ax = ax_row[i + 1]
                ax.imshow(images[i, :, :, z].T.numpy(), cmap="gray", vmin=-1, vmax=1, origin="lower")
                ax.set_title(f"{name} {seq}", fontsize=7)
                ax.axis("off")
    title = "Real (top) vs synthetic G(mask) (bottom)"
    if ctx.source.get("simulated"):
        title += " -- digital phantom, simulated"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_report(results: Mapping[str, Any]) -> str:
    """Markdown: the label-fidelity table and the image-similarity table per generator."""
    data = results["data"]
    what = "digital phantom (SIMULATED data)" if results["simulated_data"] else f"BraTS data ({data['root']})"
    lines = [
        "# Synthesis quality",
        "",
        f"Data: {what}; {len(data['split']['test'])} held-out test subjects (never used to train the generator); "
        f"intensities: {results['intensity_range']}.",
        "",
    ]
    for variant, res in results["variants"].items():
        lines += [
            f"## {variant} ({res['source']})",
            "",
            *(
                [
                    "Local mode: each test subject's lesion neighbourhood is repainted from its own mask inside its "
                    "real images (the rest of the brain is untouched, so the whole-brain similarity below is mostly "
                    "the real image; benchmarks/quality_local.py reports the in-region figures).",
                    "",
                ]
                if res.get("mode") == "local"
                else []
            ),
            "Label fidelity: a U-Net trained on real images segments G(test mask); Dice vs that mask, and the same "
            "U-Net's Dice on the real test images (3D, mean ± std over subjects).",
            "",
            "| Region | Dice on synthetic | Dice on real | Ratio |",
            "|---|---:|---:|---:|",
        ]
        for region, f in res["label_fidelity"].items():
            lines.append(
                f"| {region.capitalize()} | {f['dice_synthetic']:.3f} ± {f['dice_synthetic_std']:.3f} | "
                f"{f['dice_real']:.3f} ± {f['dice_real_std']:.3f} | {f['ratio']:.2f} |"
            )
        lines += [
            "",
            "Image similarity to the paired real images (inside the brain); *atlas alone*: the generator's atlas "
            "matched per sequence to the subject's brain mean and SD; *synthetic, matched*: the synthetic images "
            "given the same match (the atlas row knows each subject's level, the generator does not).",
            "",
            "| Sequence | Row | SSIM | PSNR (dB) | MAE |",
            "|---|---|---:|---:|---:|",
        ]
        for seq, m in res["image_similarity"].items():
            rows = (
                ("synthetic", m),
                ("synthetic, matched", (res.get("image_similarity_matched") or {}).get(seq)),
                ("atlas alone", (res.get("atlas_alone") or {}).get(seq)),
            )
            for row, q in rows:
                if q is None:
                    continue
                lines.append(
                    f"| {seq} | {row} | {q['ssim']:.3f} ± {q['ssim_std']:.3f} | {q['psnr']:.2f} ± {q['psnr_std']:.2f} "
                    f"| {q['mae']:.3f} ± {q['mae_std']:.3f} |"
                )
        if res.get("structure"):
            lines += [
                "",
                "Checkerboard index (share of in-brain spectral energy at the Nyquist frequencies of the axial slices, "
                "over the 8x8 squares wholly inside the brain with their plane removed; 1 = pure period-2 "
                "checkerboard, ~0 = smooth, 0.23 = white noise) and inter-slice change (mean |v(z+1) - v(z)| over "
                "axially adjacent brain voxels), synthetic vs real, ratio = synthetic / real.",
                "",
                "| Sequence | Checkerboard synthetic | real | ratio | Mean abs dz synthetic | real | ratio |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for seq, m in res["structure"].items():
                lines.append(
                    f"| {seq} | {m['checkerboard']:.3f} | {m['checkerboard_real']:.3f} | {m['checkerboard_ratio']:.2f} "
                    f"| {m['dz']:.3f} | {m['dz_real']:.3f} | {m['dz_ratio']:.2f} |"
                )
            if any("dz_rms_real_signal" in m for m in res["structure"].values()):
                lines += [
                    "",
                    "RMS inter-slice change: synthetic vs real, and vs the real anatomy's own change (the real "
                    "subject rendered again without acquisition noise, which a generator does not paint); ratio = "
                    "synthetic / real anatomy.",
                    "",
                    "| Sequence | RMS dz synthetic | real (with noise) | real anatomy (noise-free) | ratio |",
                    "|---|---:|---:|---:|---:|",
                ]
                for seq, m in res["structure"].items():
                    lines.append(
                        f"| {seq} | {m['dz_rms']:.3f} | {m['dz_rms_real']:.3f} | {m['dz_rms_real_signal']:.3f} "
                        f"| {m['dz_rms_signal_ratio']:.2f} |"
                    )
        if res.get("contrast_sd"):
            lines += [
                "",
                "Per-class contrast: (class mean - normal-brain mean) / SD of normal brain, for the data scheme's own "
                "lesion classes, mean over the test subjects holding the class (at least 10 voxels).",
                "",
                "| Class | Sequence | Real (SD) | Synthetic (SD) | Same sign |",
                "|---|---|---:|---:|:---:|",
            ]
            for cls, per in res["contrast_sd"].items():
                for seq, c in per.items():
                    same = "yes" if np.sign(c["real"]) == np.sign(c["synthetic"]) else "no"
                    lines.append(f"| {cls} | {seq} | {c['real']:+.2f} | {c['synthetic']:+.2f} | {same} |")
        lines.append("")
    return "\n".join(lines + report_footer(results)) + "\n"


def write_outputs(results: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``quality.md`` and ``quality.json`` into ``out`` (the grid is written by :func:`run_quality`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "quality.md", "json": out / "quality.json"}
    paths["md"].write_text(format_report(results))
    paths["json"].write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
    return paths


# ---------------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.augmentation import VARIANTS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--out", default=None, help="output folder (default /tmp/samraug-bench/quality-<preset>)")
    p.add_argument("--data", default=None, help="BraTS root folder (default: the digital phantom, simulated)")
    p.add_argument("--scheme", default=None)
    p.add_argument("--subjects", dest="n_subjects", type=int, default=None)
    p.add_argument("--test-subjects", dest="n_test", type=int, default=None)
    p.add_argument("--resolution", type=float, default=None)
    p.add_argument("--phantom-seed", type=int, default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--steps", type=int, default=None, help="optimiser steps of the label-fidelity U-Net")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None, help="SAMR weights (default: the bundled whole-image demo weights)")
    p.add_argument(
        "--local-weights", default=None, help="local-mode weights of the samr_local variant (default: bundled)"
    )
    p.add_argument(
        "--variants", default="samr", help=f"comma-separated generator variants: {', '.join(VARIANTS)}, samr_local"
    )
    p.add_argument("--train-samr", action="store_true", default=None)
    p.add_argument("--samr-steps", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    overrides = {
        k: getattr(args, k)
        for k in (
            "data",
            "scheme",
            "n_subjects",
            "n_test",
            "resolution",
            "phantom_seed",
            "cache_dir",
            "steps",
            "weights",
            "local_weights",
            "train_samr",
            "samr_steps",
            "device",
        )
    }
    config = BenchmarkConfig.from_preset(args.preset, seeds=(args.seed,), arms=("real",), **overrides)
    out = Path(args.out or f"/tmp/samraug-bench/quality-{config.preset}")
    config.work_dir = config.work_dir or str(out)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = ("python benchmarks/quality.py " + " ".join(shlex.quote(a) for a in argv_list)).strip()

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trained on simulated.*")
        results = run_quality(config, variants, log=log, command=command, grid_path=out / "quality.png")
    paths = write_outputs(results, out)
    print(format_report(results))
    print(f"wrote {paths['md']}, {paths['json']}, {out / 'quality.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
