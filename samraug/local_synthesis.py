"""Local synthesis: repaint a lesion's neighbourhood inside the subject's own images, on any voxel grid.

:func:`paint_local` takes a subject's images, its real and edited label maps and a local-mode
:class:`~samraug.synthesis.Synthesizer`, and repaints only the region (:mod:`samraug.region`): the voxels whose label
changed plus the old and the new lesion (or, with ``region="changed"``, the changed voxels alone), dilated by
``margin_mm``. The steps:

1. region -> its bounding box plus ``context_mm`` of surroundings (a region that is empty, larger than
   ``max_region_mm`` or closer than ``min_context_mm`` to the image edge is skipped: inputs unchanged, the reason in
   ``record["skipped"]``);
2. the box is resampled (:mod:`samraug.grid`) to the model's grid: RAS axes, the weights' ``voxel_size``, slices
   along the RAS z axis, in-plane sizes a multiple of the model's ``size_multiple`` and at least the weights'
   training ``crop_size`` (a smaller crop shifts what instance normalisation sees: on held-out phantom subjects it
   cost 0.7-3.3 dB of in-region PSNR); labels nearest-neighbour, images trilinear;
3. images are normalised with per-sequence statistics of the whole subject's brain (as in training), the edited
   label map is translated to the weights' scheme when needed and encoded to model classes;
4. ``build_local_inputs`` makes the 2.5D (mask, context) slices, the model paints the slices that hold region;
5. with ``seam="poisson"`` (default), the painting is corrected on the model grid by the smooth (harmonic) field
   that makes it meet the real image on a one-voxel band around the region, which the model paints too without
   seeing it (:func:`samraug.seam.poisson_correction`; it fixes the region's overall level, which the model gets
   wrong by a few percent, and keeps its structure; residual generators, which paint over a harmonic fill anchored
   on the real voxels right around the region, have no band and need no correction); the painted slices are mapped
   back to the subject's scale and grid (trilinear, sampled at the region voxels only);
6. with ``noise="match"`` (default), per sequence, Gaussian noise tops the region's noise level up to the real
   image's in a ring around it (:func:`samraug.texture.match_noise`; nothing is added where the painting is as
   textured as its surroundings), so a painter that predicts the expected tissue leaves no smooth patch behind;
7. the result is blended with the feather weights. Every voxel outside the region is bit-identical to the input.

Everything is deterministic: the same inputs (and the same ``generator`` seed, for the noise) give the same voxels
(history replay is exact).

Example:
    >>> new_images, record = paint_local(images, seg, edited, brain, affine, get_scheme("brats2024"), synth)
    ...  # doctest: +SKIP
    >>> record["skipped"] is None  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from samraug.grid import (
    bounding_box,
    check_affine,
    crop_affine,
    ras_grid,
    resample,
    sample_points,
    voxel_spacing,
    world_corners,
)
from samraug.intensity import IntensityStats, denormalize, normalize_with
from samraug.labels import LabelScheme, get_scheme, translate
from samraug.mirror_fill import MIRROR_SEARCH, brain_midplane, mirror_guided_fill, reflect_x
from samraug.models.local import build_local_inputs
from samraug.region import REGION_SEEDS, edit_region, feather_weights
from samraug.seam import (
    CONTEXT_FILLS,
    HEALTHY_MODES,
    SEAM_MODES,
    harmonic_fill,
    poisson_correction,
    reached,
    spline_fill,
)
from samraug.texture import NOISE_MODES, match_noise

__all__ = ["DEFAULT_CONTEXT_MM", "DEFAULT_MAX_REGION_MM", "DEFAULT_MIN_CONTEXT_MM", "paint_local"]

#: Surroundings (mm) added around the region's bounding box before resampling.
DEFAULT_CONTEXT_MM = 16.0
#: Largest region extent (mm, along any voxel axis) painted; larger regions are skipped.
DEFAULT_MAX_REGION_MM = 160.0
#: A region closer than this (mm) to the image edge is skipped (e.g. a cropped patch): too little context there.
DEFAULT_MIN_CONTEXT_MM = 4.0


def _array(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")


def _positive(value: Any, name: str, *, allow_zero: bool = True) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number of mm {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def check_max_region_mm(value: Any, what: str = "max_region_mm") -> float:
    """``value`` as a ``max_region_mm`` (a finite length in mm > 0; not a bool or a string), or the error naming
    ``what`` (the argument or flag it came from).

    Example:
        >>> check_max_region_mm(240)
        240.0
    """
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not number or not 0 < value < np.inf:
        raise ValueError(f"{what} must be a finite length in mm > 0, got {value!r}")
    return float(value)


def _local_config(synthesizer: Any) -> dict[str, Any]:
    cfg = dict(synthesizer.config)
    if cfg.get("mode", "whole") != "local":
        raise ValueError(
            f"paint_local needs local-mode weights (config mode 'local'), got mode {cfg.get('mode', 'whole')!r}; "
            "use Synthesizer.synthesize_volume for whole-image weights"
        )
    for key in ("label_scheme", "sequences", "voxel_size"):
        if key not in cfg:
            raise ValueError(f"local weights config lacks {key!r}; re-export the weights with it")
    if cfg.get("context_fill", "zero") not in CONTEXT_FILLS:
        raise ValueError(
            f"local weights config has context_fill {cfg['context_fill']!r}; this samraug knows {CONTEXT_FILLS}"
        )
    vs = np.asarray(cfg["voxel_size"], dtype=np.float64).reshape(-1)
    if vs.size != 3 or not (np.isfinite(vs).all() and (vs > 0).all()):
        raise ValueError(f"config voxel_size must be 3 positive numbers (mm), got {cfg['voxel_size']!r}")
    return cfg


def _skip(images: Mapping[str, torch.Tensor], record: dict[str, Any], reason: str) -> tuple[dict, dict]:
    record["skipped"] = reason
    return dict(images), record


def _write_back(image: torch.Tensor, flat: np.ndarray, values: np.ndarray) -> torch.Tensor:
    """A copy of ``image`` with the voxels at flat indices ``flat`` set to ``values`` (rounded and clipped for
    integer dtypes); any memory layout."""
    out = image.clone()
    v = torch.from_numpy(values)
    if not out.is_floating_point():
        info = torch.iinfo(out.dtype)
        v = v.round().clamp(info.min, info.max)
    index = tuple(torch.from_numpy(i).to(out.device) for i in np.unravel_index(flat, tuple(image.shape)))
    out[index] = v.to(out.dtype).to(out.device)
    return out


def paint_local(
    images: Mapping[str, torch.Tensor],
    label_before: np.ndarray,
    label_after: np.ndarray,
    brain: np.ndarray,
    affine: np.ndarray,
    scheme: LabelScheme,
    synthesizer: Any,
    *,
    margin_mm: float = 8.0,
    feather_mm: float = 3.0,
    context_mm: float = DEFAULT_CONTEXT_MM,
    max_region_mm: float = DEFAULT_MAX_REGION_MM,
    min_context_mm: float = DEFAULT_MIN_CONTEXT_MM,
    noise: str = "match",
    generator: torch.Generator | None = None,
    seam: str = "poisson",
    healthy: str = "model",
    region: str = "lesions",
) -> tuple[dict[str, torch.Tensor], dict]:
    """Repaint the region around a lesion edit with a local-mode synthesizer (see the module docstring).

    Args:
        images: ``{sequence: (X, Y, Z) tensor}`` in the subject's own scale; must hold every sequence of the weights
            (extra ones are returned untouched).
        label_before, label_after: The real and the edited label map ``(X, Y, Z)`` in ``scheme``.
        brain: Boolean brain mask ``(X, Y, Z)``.
        affine: The subject's 4x4 voxel -> world (RAS mm) affine; any orientation and voxel size.
        scheme: The label scheme of the label maps (translated to the weights' scheme when they differ).
        synthesizer: A :class:`~samraug.synthesis.Synthesizer` with local weights (config ``mode: "local"``).
        margin_mm: Dilation of the changed voxels and lesions that makes the region.
        feather_mm: Width of the blend ramp inside the region's border.
        context_mm: Surroundings added around the region before resampling to the model grid.
        max_region_mm: Regions wider than this along any axis are skipped.
        min_context_mm: Regions closer than this to the image edge are skipped.
        noise: ``"match"``: add Gaussian noise that brings the region's noise level up to the real image's around
            it (:mod:`samraug.texture`); ``"none"``: the model's painting as it is (what in-region PSNR/SSIM
            benchmarks score).
        generator: Draws the matched noise (default: a generator seeded with 0, so a call is deterministic).
        seam: ``"poisson"``: correct the painting so it continues the real image across the region's border
            (:mod:`samraug.seam`); ``"none"``: the model's painting as it is.
        healthy: What paints the region's voxels that are healthy in ``label_after``: ``"model"`` (the generator),
            ``"harmonic"`` (classical 3D harmonic inpainting from the real brain around the region; on held-out
            phantom subjects it scores higher in-region PSNR/SSIM on healthy tissue than the bundled generator),
            ``"spline"`` (a thin-plate spline under tension, :func:`samraug.seam.spline_fill`, which continues the
            border's slopes into the region: higher still) or ``"mirror"`` (the spline guided by the other
            hemisphere, :mod:`samraug.mirror_fill`: the structure at the mirrored place, reflected about the brain
            mask's mid-sagittal plane, world ``x``, shifted to match the ring around the region; highest). With
            any of the three a connected part of the region that holds no lesion voxel is not painted by the model
            at all (its record's ``painted_slices`` is 0), and when torch allows more than one thread
            (``torch.get_num_threads()``) the fill runs in a worker thread beside the seam correction: the same
            voxels, sooner. Healthy voxels the fill cannot reach from healthy brain around the region (e.g. a brain
            mask that ends at the region) keep the model's painting; each part's record counts them
            (``unreached_voxels``).
        region: What seeds the region before ``margin_mm``: ``"lesions"`` (the changed voxels plus the old and the
            new lesion) or ``"changed"`` (the changed voxels alone: lesion voxels the edit kept, e.g. the subject's
            own lesion beside an inserted one, stay real beyond the margin; :func:`samraug.region.edit_region`).

    Returns:
        ``(new_images, record)``: the images (same keys, shapes, dtypes, devices; sequences outside the weights are
        the input tensors themselves) and a JSON-able record with ``skipped`` (None or the reason).

    Example:
        >>> out, rec = paint_local(images, seg, edited, brain, affine, scheme, synth, margin_mm=6.0)  # doctest: +SKIP
    """
    cfg = _local_config(synthesizer)
    data_scheme = get_scheme(scheme)
    w_scheme = get_scheme(cfg["label_scheme"])
    conditioning = str(cfg.get("conditioning", "samr"))
    seqs = tuple(cfg["sequences"])
    margin = _positive(margin_mm, "margin_mm")
    feather = _positive(feather_mm, "feather_mm")
    context = _positive(context_mm, "context_mm")
    max_region = _positive(max_region_mm, "max_region_mm", allow_zero=False)
    min_context = _positive(min_context_mm, "min_context_mm")
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if seam not in SEAM_MODES:
        raise ValueError(f"seam must be one of {SEAM_MODES}, got {seam!r}")
    if healthy not in HEALTHY_MODES:
        raise ValueError(f"healthy must be one of {HEALTHY_MODES}, got {healthy!r}")
    if region not in REGION_SEEDS:
        raise ValueError(f"region must be one of {REGION_SEEDS}, got {region!r}")
    aff = check_affine(_array(affine, "affine"), "affine")

    before = _array(label_before, "label_before")
    after = _array(label_after, "label_after")
    if before.ndim != 3:
        raise ValueError(f"label_before must be a 3D label map (X, Y, Z), got shape {before.shape}")
    shape = before.shape
    if after.shape != shape:
        raise ValueError(f"label_after has shape {after.shape}, label_before {shape}; pass both on the same grid")
    brain_np = _array(brain, "brain")
    if brain_np.shape != shape:
        raise ValueError(f"brain has shape {brain_np.shape}, the label maps {shape}; pass the brain on the same grid")
    if brain_np.dtype != bool:
        raise ValueError(f"brain must be a boolean mask, got dtype {brain_np.dtype}; pass brain.astype(bool)")
    if not isinstance(images, Mapping):
        raise TypeError(f"images must be a mapping {{sequence: tensor}}, got {type(images).__name__}")
    missing = [s for s in seqs if s not in images]
    if missing:
        raise ValueError(
            f"images lack the sequences {missing} the local weights paint (they need {list(seqs)}, got "
            f"{sorted(images)}); pass every sequence, renamed to the weights' names"
        )
    for name in seqs:
        img = images[name]
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"images[{name!r}] must be a torch tensor, got {type(img).__name__}")
        if tuple(img.shape) != shape:
            raise ValueError(
                f"images[{name!r}] has shape {tuple(img.shape)}, the label maps {shape}; resample them onto one grid"
            )
        if img.is_floating_point() and not bool(torch.isfinite(img).all()):
            raise ValueError(f"images[{name!r}] contains NaN/inf; replace them (e.g. torch.nan_to_num) first")
    data_scheme.validate(before, "label_before")
    data_scheme.validate(after, "label_after")
    lesion_values = np.asarray(data_scheme.lesion_values, dtype=np.int64)
    lesion_before, lesion_after = np.isin(before, lesion_values), np.isin(after, lesion_values)
    outside = lesion_after & ~brain_np & ~lesion_before
    if outside.any():
        raise ValueError(
            f"label_after puts {int(outside.sum())} new lesion voxels outside the brain mask; keep edits inside the "
            "brain (LesionEditor does) or pass the right brain mask"
        )
    after_w = after if w_scheme == data_scheme else translate(after, data_scheme, w_scheme)

    spacing = voxel_spacing(aff)
    record: dict[str, Any] = {
        "mode": "local",
        "skipped": None,
        "margin_mm": margin,
        "feather_mm": feather,
        "context_mm": context,
        "noise": noise,
        "seam": seam,
        "healthy": healthy,
        "region": region,
        "sequences": list(seqs),
        "voxel_size": [round(float(v), 6) for v in spacing],
    }
    brain_eff = brain_np | lesion_before | lesion_after
    seed = region
    region = (
        edit_region(before, after, lesion_values=lesion_values, spacing=spacing, margin_mm=margin, seed=seed)
        & brain_eff
    )
    record["region_voxels"] = int(region.sum())
    box = bounding_box(region)
    if box is None:
        why = "no label change" if seed == "changed" else "no lesion and no label change"
        return _skip(images, record, f"empty region: {why}")
    record["region_box"] = [list(b) for b in box]
    # Each connected part of the region (e.g. a lesion moved far away) is cropped and painted on its own; if one
    # cannot be painted, none is (a half-done edit would not match the edited labels).
    # (labelled on the region's bounding box: a whole 240x240x155 volume would cost more than the painting)
    in_box = tuple(slice(lo, hi) for lo, hi in box)
    parts = np.zeros(shape, dtype=np.int32)
    parts[in_box] = ndimage.label(region[in_box], structure=np.ones((3, 3, 3), dtype=bool))[0]
    boxes = [
        tuple(slice(x.start + lo, x.stop + lo) for x, (lo, _) in zip(b, box, strict=True))
        for b in ndimage.find_objects(parts[in_box])
    ]
    for sl in boxes:
        extent = np.array([x.stop - x.start for x in sl]) * spacing
        if float(extent.max()) > max_region:
            return _skip(
                images,
                record,
                f"region is {float(extent.max()):.1f} mm across, above max_region_mm={max_region:g} (raise "
                "max_region_mm to paint it)",
            )
        for axis, (x, n) in enumerate(zip(sl, shape, strict=True)):
            room = min(x.start, n - x.stop) * spacing[axis]
            if room < min_context:
                return _skip(
                    images,
                    record,
                    f"region reaches within {room:.1f} mm of the image edge along voxel axis {axis} (below "
                    f"min_context_mm={min_context:g}): too little context, e.g. a cropped patch",
                )
    model = synthesizer.model
    if seam == "poisson" and bool(getattr(model, "residual", False)):
        record["seam"] = "none"  # a residual model paints over a fill that already meets the real image
        record["seam_skipped"] = "residual weights: the fill they paint over is anchored on the real voxels"
    k = int(model.n_labels)
    if k != len(w_scheme.classes(conditioning)):
        raise ValueError(
            f"local model has n_labels={k} but scheme {w_scheme.name!r} with conditioning {conditioning!r} has "
            f"{len(w_scheme.classes(conditioning))} classes; the weights folder is inconsistent"
        )
    # the weights' normalisation, its percentiles over the subject's brain without the lesion in the images
    stats = synthesizer.subject_stats({name: _array(images[name], name) for name in seqs}, brain_np, lesion_before)
    mirror = None
    if healthy == "mirror":
        # the other hemisphere guides the fill: reflected about the brain's mid-sagittal plane, its healthy voxels
        mirror = (brain_midplane(brain_np, aff), brain_np & ~lesion_before & ~lesion_after & ~region)
        record["mirror_plane_x"] = round(mirror[0], 4)
    synthetic = np.empty((len(seqs), int(region.sum())), dtype=np.float64)
    flat = np.flatnonzero(region)
    part_of = parts.reshape(-1)[flat]
    record["parts"] = []
    for i, sl in enumerate(boxes, start=1):
        sel = part_of == i
        points = np.stack(np.unravel_index(flat[sel], shape), axis=1)
        part_record = _paint_part(
            synthesizer,
            images,
            seqs,
            stats,
            (w_scheme, after_w, conditioning),
            brain_eff,
            parts == i,
            sl,
            points,
            aff,
            spacing,
            context,
            cfg,
            seam,
            healthy,
            mirror,
        )
        synthetic[:, sel] = part_record.pop("values")
        record["parts"].append(part_record)
    record["painted_slices"] = int(sum(p["painted_slices"] for p in record["parts"]))

    if noise == "match":
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        added, infos = match_noise([images[name] for name in seqs], synthetic, region, brain_eff, spacing, gen)
        synthetic += added
        record["noise_sd"] = {name: round(float(info["sd"]), 6) for name, info in zip(seqs, infos, strict=True)}

    # Blend with the feather weights, at the region voxels only.
    weights = feather_weights(region, spacing, feather).reshape(-1)[flat].astype(np.float64)
    out = dict(images)
    for i, name in enumerate(seqs):
        old = _array(images[name], name).reshape(-1)[flat].astype(np.float64)
        out[name] = _write_back(images[name], flat, old + weights * (synthetic[i] - old))
    return out, record


def _paint_part(
    synthesizer: Any,
    images: Mapping[str, torch.Tensor],
    seqs: tuple[str, ...],
    stats: Mapping[str, IntensityStats],
    labels: tuple[LabelScheme, np.ndarray, str],
    brain: np.ndarray,
    part: np.ndarray,
    box: tuple[slice, ...],
    points: np.ndarray,
    aff: np.ndarray,
    spacing: np.ndarray,
    context: float,
    cfg: Mapping[str, Any],
    seam: str = "poisson",
    healthy: str = "model",
    mirror: tuple[float, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Paint one connected part of the region: crop + context -> model grid -> model -> values at ``points``
    (subject scale, ``(S, N)``), with the part's record. ``labels`` is ``(weights' scheme, edited label map in
    it, conditioning)``: they are encoded to model classes on the model grid. ``mirror`` (``healthy="mirror"``):
    the mid-sagittal plane's world x and the subject's healthy-brain mask the guide may read."""
    shape = part.shape
    model = synthesizer.model
    mult = int(getattr(model, "size_multiple", 1))
    c = int(getattr(model, "context_slices", cfg.get("context_slices", 0)))
    k = int(model.n_labels)
    pad = np.ceil(context / spacing).astype(np.int64)
    start = np.array([max(0, x.start - int(p)) for x, p in zip(box, pad, strict=True)])
    stop = np.array([min(n, x.stop + int(p)) for x, p, n in zip(box, pad, shape, strict=True)])
    corners = world_corners(tuple(stop - start), aff) + aff[:3, :3] @ start
    # In-plane, the model sees at least the crop size it was trained on (instance normalisation and the receptive
    # field were fitted to crops of that size; a smaller crop shifts the painted intensities).
    crop = [int(x) for x in (cfg.get("crop_size") or (0, 0))][:2]
    grid_shape, grid_aff = ras_grid(
        corners.min(0),
        corners.max(0),
        cfg["voxel_size"],
        multiple=mult,
        min_shape=(max(2 * mult, crop[0]), max(2 * mult, crop[1]), 1),
    )
    # Model-grid inputs: classes and brain nearest-neighbour, images trilinear then normalised with subject stats.
    brain_m = resample(brain, aff, grid_shape, grid_aff, order=0)
    # Nearest-neighbour resampling commutes with the voxel-wise class encoding (outside the subject: label 0 and no
    # brain, i.e. background), so the labels are encoded on the model grid, not over the whole subject.
    w_scheme, after_w, conditioning = labels
    classes_m = w_scheme.encode(resample(after_w, aff, grid_shape, grid_aff, order=0), brain_m, conditioning)
    core_m = resample(part.astype(np.float32), aff, grid_shape, grid_aff, order=1) > 0.01
    residual = bool(getattr(model, "residual", False))
    # painted (and hidden from the model): the part, plus a one-voxel band the seam correction anchors on -- not for
    # residual generators, which paint over a fill anchored on the real voxels right around the part (a band would
    # move the fill's anchors a voxel out and hide real tissue the fill needs)
    region_m = core_m if residual else ndimage.binary_dilation(core_m, iterations=1)
    norm_m = np.empty((len(seqs), *grid_shape), dtype=np.float32)
    for i, name in enumerate(seqs):
        vol = resample(_array(images[name], name), aff, grid_shape, grid_aff, order=1)
        norm_m[i] = normalize_with(vol, stats[name], brain_m)
    # The part's healthy voxels the classical fill heals: those it reaches from the healthy brain around them (classes
    # 0 and 1 are background and normal brain in every conditioning, LabelScheme.encode); the model paints the rest,
    # as with healthy="model" (a fill leaves a part with nothing around it to continue at 0).
    healthy_m = core_m & (classes_m < 2)
    unreached = np.zeros_like(healthy_m)
    mirrored = healthy == "mirror" and mirror is not None
    if healthy != "model":
        # the mirror fits and anchors on healthy brain only (a lesion beside the part neither anchors nor fits); the
        # harmonic and spline fills on the real brain right around the part
        fill_known = brain_m & (classes_m < 2) if mirrored else brain_m
        unreached = healthy_m & ~reached(core_m, fill_known)
        healthy_m &= ~unreached
    # The slices the model paints: none for a part with no lesion voxel whose healthy voxels the classical fill all
    # reaches, as it then replaces every voxel of the part (the model's band around it is read only by the resampling
    # back, where the real values serve as well).
    heal_only = healthy != "model" and not (core_m & (classes_m >= 2)).any() and not unreached.any()
    zs = np.flatnonzero(region_m.any(axis=(0, 1)) & (not heal_only))
    syn_m = norm_m.copy()
    if zs.size:
        # Slices along the RAS z axis: (X, Y, Z) -> (D=Z, H=X, W=Y).
        classes_t = torch.from_numpy(np.ascontiguousarray(classes_m.transpose(2, 0, 1)))[None]
        images_t = torch.from_numpy(np.ascontiguousarray(norm_m.transpose(0, 3, 1, 2)))[None]
        region_t = torch.from_numpy(np.ascontiguousarray(region_m.transpose(2, 0, 1))).float()[None]
        fill_t = None
        if cfg.get("context_fill", "zero") == "harmonic":  # the context the weights were trained with
            fill = harmonic_fill(norm_m, region_m, brain_m)
            fill_t = torch.from_numpy(np.ascontiguousarray(fill.transpose(0, 3, 1, 2)))[None]
        mask_in, context_in = build_local_inputs(classes_t, images_t, region_t, k, c, z=zs.tolist(), fill=fill_t)
        painted = synthesizer.paint_local_slices(mask_in, context_in).numpy()  # P, S, X, Y
        syn_m[:, :, :, zs] = painted.transpose(1, 2, 3, 0)
        syn_m = np.where(region_m[None], syn_m, norm_m)
    corrected = seam == "poisson" and not residual and zs.size > 0  # (zs is empty when nothing was painted)

    def correct() -> list[float] | None:
        """The seam correction of the painting's level, in place: its mean per sequence (None without one)."""
        if not corrected:
            return None
        # the band's real values are known: they anchor the correction of the painting's level
        correction = poisson_correction(syn_m, norm_m, region_m, region_m & ~core_m & brain_m)
        syn_m[:, region_m] += correction.astype(syn_m.dtype)
        return [round(float(c.mean()), 5) for c in correction]

    def heal() -> tuple[np.ndarray | None, dict[str, Any] | None]:
        """The classical fill of the part's healthy voxels: ``(fill or None, the mirror's info)``."""
        if healthy == "model" or not healthy_m.any():
            return None, None
        if mirrored:
            guide, guide_known = _mirror_guide(images, seqs, stats, mirror, aff, grid_shape, grid_aff)
            return mirror_guided_fill(norm_m, core_m, fill_known, guide, guide_known)
        fill_fn = harmonic_fill if healthy == "harmonic" else spline_fill
        return fill_fn(norm_m, core_m, fill_known), None

    # Neither reads the other's result: with more than one thread allowed (torch.get_num_threads(); DataLoader
    # workers allow one) the fill runs in a worker thread beside the seam correction, whose sparse products release
    # the GIL. (Not beside the model too: its OpenMP threads spin between operations and took the core the fill
    # needed, so that overlap saved nothing on the spline fill.) The same voxels either way.
    offsets, (fill, mirror_info) = _run_both(
        correct, heal, parallel=corrected and healthy != "model" and torch.get_num_threads() > 1
    )
    n_healthy = 0 if healthy == "model" else int(healthy_m.sum())
    if fill is not None:
        syn_m[:, healthy_m] = fill[:, healthy_m]

    # Back to the subject's scale and grid, sampled at the part's voxels only.
    values = np.stack(
        [
            sample_points(denormalize(syn_m[i], stats[name]), grid_aff, points, aff, order=1)
            for i, name in enumerate(seqs)
        ]
    )
    return {
        "values": values.astype(np.float64),
        "region_box": [[x.start, x.stop] for x in box],
        "crop_box": [[int(a), int(b)] for a, b in zip(start, stop, strict=True)],
        "model_grid": list(grid_shape),
        "painted_slices": int(zs.size),
        "seam_offset": offsets,
        "healthy_voxels": n_healthy,
        "unreached_voxels": int(unreached.sum()),
        **({"mirror": mirror_info} if mirror_info is not None else {}),
    }


def _run_both(first: Callable[[], Any], second: Callable[[], Any], parallel: bool) -> tuple[Any, Any]:
    """``(first(), second())``; with ``parallel``, ``second`` runs in a worker thread while ``first`` runs in this
    one (an exception from either is raised here, after both have stopped).

    Example:
        >>> _run_both(lambda: 1, lambda: 2, parallel=True)
        (1, 2)
    """
    if not parallel:
        return first(), second()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="samraug-heal") as pool:
        job = pool.submit(second)
        return first(), job.result()


def _mirror_guide(
    images: Mapping[str, torch.Tensor],
    seqs: tuple[str, ...],
    stats: Mapping[str, IntensityStats],
    mirror: tuple[float, np.ndarray],
    aff: np.ndarray,
    grid_shape: tuple[int, ...],
    grid_aff: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The normalised images reflected about the plane ``x = mirror[0]`` on the model grid padded by
    :data:`~samraug.mirror_fill.MIRROR_SEARCH` voxels, and where the reflected voxel is healthy brain."""
    plane, healthy_brain = mirror
    pad = MIRROR_SEARCH
    shape = tuple(int(n) + 2 * pad for n in grid_shape)
    reflected = reflect_x(plane) @ crop_affine(grid_aff, [-pad] * 3)
    known = resample(healthy_brain, aff, shape, reflected, order=0)
    guide = np.empty((len(seqs), *shape), dtype=np.float32)
    for i, name in enumerate(seqs):
        vol = resample(_array(images[name], name), aff, shape, reflected, order=1)
        guide[i] = normalize_with(vol, stats[name], known)
    return guide, known
