"""Local synthesis: repaint a lesion's neighbourhood inside the subject's own images, on any voxel grid.

:func:`paint_local` takes a subject's images, its real and edited label maps and a local-mode
:class:`~samraug.synthesis.Synthesizer`, and repaints only the region (:mod:`samraug.region`): the voxels whose label
changed plus the old and the new lesion, dilated by ``margin_mm``. The steps:

1. region -> its bounding box plus ``context_mm`` of surroundings (a region that is empty, larger than
   ``max_region_mm`` or closer than ``min_context_mm`` to the image edge is skipped: inputs unchanged, the reason in
   ``record["skipped"]``);
2. the box is resampled (:mod:`samraug.grid`) to the model's grid: RAS axes, the weights' ``voxel_size``, slices
   along the RAS z axis, in-plane sizes a multiple of the model's ``size_multiple``; labels nearest-neighbour,
   images trilinear;
3. images are normalised with per-sequence statistics of the whole subject's brain (as in training), the edited
   label map is translated to the weights' scheme when needed and encoded to model classes;
4. ``build_local_inputs`` makes the 2.5D (mask, context) slices, the model paints the slices that hold region;
5. the painted slices are mapped back to the subject's scale and grid (trilinear, sampled at the region voxels
   only) and blended with the feather weights. Every voxel outside the region is bit-identical to the input.

Everything is deterministic: the same inputs give the same voxels (history replay is exact).

Example:
    >>> new_images, record = paint_local(images, seg, edited, brain, affine, get_scheme("brats2024"), synth)
    ...  # doctest: +SKIP
    >>> record["skipped"] is None  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from samraug.grid import bounding_box, check_affine, ras_grid, resample, sample_points, voxel_spacing, world_corners
from samraug.intensity import DEFAULT_NORMALIZATION, IntensityStats, denormalize, normalize_with
from samraug.labels import LabelScheme, get_scheme, translate
from samraug.region import edit_region, feather_weights

__all__ = ["DEFAULT_CONTEXT_MM", "DEFAULT_MAX_REGION_MM", "DEFAULT_MIN_CONTEXT_MM", "paint_local"]

#: Surroundings (mm) added around the region's bounding box before resampling.
DEFAULT_CONTEXT_MM = 16.0
#: Largest region extent (mm, along any voxel axis) painted; larger regions are skipped.
DEFAULT_MAX_REGION_MM = 128.0
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
    vs = np.asarray(cfg["voxel_size"], dtype=np.float64).reshape(-1)
    if vs.size != 3 or not (np.isfinite(vs).all() and (vs > 0).all()):
        raise ValueError(f"config voxel_size must be 3 positive numbers (mm), got {cfg['voxel_size']!r}")
    return cfg


def _input_builder() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The model package's ``build_local_inputs`` (one function for training and inference) when present."""
    try:
        from samraug.models.local import build_local_inputs
    except ImportError:
        return _contract_inputs
    return build_local_inputs


def _contract_inputs(
    classes: torch.Tensor, images: torch.Tensor, region: torch.Tensor, n_labels: int, c: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The local-model input contract, for every slice: (B, D, H, W) classes, (B, S, D, H, W) images, (B, D, H, W)
    region -> mask (B*D, K*(2c+1), H, W) and context (B*D, (S+1)*(2c+1), H, W), slice-major, edges clamped."""
    b, d, h, w = classes.shape
    s = images.shape[1]
    onehot = torch.nn.functional.one_hot(classes.long(), n_labels).permute(0, 1, 4, 2, 3).float()  # B, D, K, H, W
    reg = region.float().unsqueeze(2)  # B, D, 1, H, W
    blanked = images.float().permute(0, 2, 1, 3, 4) * (1.0 - reg)  # B, D, S, H, W
    ctx = torch.cat([blanked, reg], dim=2)  # B, D, S+1, H, W
    idx = (torch.arange(d).unsqueeze(1) + torch.arange(-c, c + 1).unsqueeze(0)).clamp(0, d - 1)  # D, 2c+1
    mask = onehot[:, idx].reshape(b * d, (2 * c + 1) * n_labels, h, w)
    context = ctx[:, idx].reshape(b * d, (2 * c + 1) * (s + 1), h, w)
    return mask, context


def _skip(images: Mapping[str, torch.Tensor], record: dict[str, Any], reason: str) -> tuple[dict, dict]:
    record["skipped"] = reason
    return dict(images), record


def _subject_stats(volume: np.ndarray, brain: np.ndarray, low: float, high: float) -> IntensityStats:
    lo, hi = np.percentile(volume[brain].astype(np.float64), [low, high])
    return IntensityStats(float(lo), float(max(hi, lo)))


def _write_back(image: torch.Tensor, flat: np.ndarray, values: np.ndarray) -> torch.Tensor:
    out = image.clone()
    v = torch.from_numpy(values)
    if not out.is_floating_point():
        info = torch.iinfo(out.dtype)
        v = v.round().clamp(info.min, info.max)
    out.view(-1)[torch.from_numpy(flat).to(out.device)] = v.to(out.dtype).to(out.device)
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
        "sequences": list(seqs),
        "voxel_size": [round(float(v), 6) for v in spacing],
    }
    brain_eff = brain_np | lesion_before | lesion_after
    region = edit_region(before, after, lesion_values=lesion_values, spacing=spacing, margin_mm=margin) & brain_eff
    box = bounding_box(region)
    record["region_voxels"] = int(region.sum())
    if box is None:
        return _skip(images, record, "empty region: no lesion and no label change")
    record["region_box"] = [list(b) for b in box]
    extent = np.array([hi - lo for lo, hi in box]) * spacing
    if float(extent.max()) > max_region:
        return _skip(
            images, record, f"region is {float(extent.max()):.1f} mm across, above max_region_mm={max_region:g}"
        )
    for axis, ((lo, hi), n) in enumerate(zip(box, shape, strict=True)):
        room = min(lo, n - hi) * spacing[axis]
        if room < min_context:
            return _skip(
                images,
                record,
                f"region reaches within {room:.1f} mm of the image edge along voxel axis {axis} (below "
                f"min_context_mm={min_context:g}): too little context, e.g. a cropped patch",
            )

    # Crop box with context, then the model's RAS grid around it.
    pad = np.ceil(context / spacing).astype(np.int64)
    start = np.array([max(0, lo - int(p)) for (lo, _), p in zip(box, pad, strict=True)])
    stop = np.array([min(n, hi + int(p)) for (_, hi), p, n in zip(box, pad, shape, strict=True)])
    corners = world_corners(tuple(stop - start), aff) + aff[:3, :3] @ start
    model = synthesizer.model
    mult = int(getattr(model, "size_multiple", 1))
    c = int(getattr(model, "context_slices", cfg.get("context_slices", 0)))
    k = int(model.n_labels)
    if k != len(w_scheme.classes(conditioning)):
        raise ValueError(
            f"local model has n_labels={k} but scheme {w_scheme.name!r} with conditioning {conditioning!r} has "
            f"{len(w_scheme.classes(conditioning))} classes; the weights folder is inconsistent"
        )
    grid_shape, grid_aff = ras_grid(
        corners.min(0), corners.max(0), cfg["voxel_size"], multiple=mult, min_shape=(2 * mult, 2 * mult, 1)
    )
    record["crop_box"] = [[int(a), int(b)] for a, b in zip(start, stop, strict=True)]
    record["model_grid"] = list(grid_shape)

    # Model-grid inputs.
    norm = dict(DEFAULT_NORMALIZATION) | dict(cfg.get("normalization") or {})
    lab_m = resample(after_w, aff, grid_shape, grid_aff, order=0)
    brain_m = resample(brain_eff, aff, grid_shape, grid_aff, order=0)
    region_m = resample(region.astype(np.float32), aff, grid_shape, grid_aff, order=1) > 0.01
    region_m = ndimage.binary_dilation(region_m, iterations=1)
    classes_m = w_scheme.encode(lab_m, brain_m, conditioning)
    stats: dict[str, IntensityStats] = {}
    norm_m = np.empty((len(seqs), *grid_shape), dtype=np.float32)
    for i, name in enumerate(seqs):
        vol = _array(images[name], f"images[{name!r}]")
        stats[name] = _subject_stats(vol, brain_np, float(norm["low"]), float(norm["high"]))
        norm_m[i] = normalize_with(resample(vol, aff, grid_shape, grid_aff, order=1), stats[name], brain_m)
    zs = np.flatnonzero(region_m.any(axis=(0, 1)))
    record["painted_slices"] = int(zs.size)

    # Slices along the RAS z axis: (X, Y, Z) -> (D=Z, H=X, W=Y).
    classes_t = torch.from_numpy(np.ascontiguousarray(classes_m.transpose(2, 0, 1)))[None]
    images_t = torch.from_numpy(np.ascontiguousarray(norm_m.transpose(0, 3, 1, 2)))[None]
    region_t = torch.from_numpy(np.ascontiguousarray(region_m.transpose(2, 0, 1))).float()[None]
    mask_in, context_in = _input_builder()(classes_t, images_t, region_t, k, c)
    d = grid_shape[2]
    offset = 0 if mask_in.shape[0] == d else c  # builders may return only the central D - 2c slices
    sel = torch.from_numpy(zs - offset)
    painted = synthesizer.paint_local_slices(mask_in[sel], context_in[sel]).numpy()  # P, S, X, Y
    syn_m = norm_m.copy()
    syn_m[:, :, :, zs] = painted.transpose(1, 2, 3, 0)
    syn_m = np.where(region_m[None], syn_m, norm_m)

    # Back to the subject: sample at the region voxels only, blend with the feather weights.
    flat = np.flatnonzero(region)
    points = np.stack(np.unravel_index(flat, shape), axis=1)
    weights = feather_weights(region, spacing, feather).reshape(-1)[flat].astype(np.float64)
    out = dict(images)
    for i, name in enumerate(seqs):
        syn_subject = denormalize(syn_m[i], stats[name])
        values = sample_points(syn_subject, grid_aff, points, aff, order=1).astype(np.float64)
        old = _array(images[name], name).reshape(-1)[flat].astype(np.float64)
        new = old + weights * (values - old)
        out[name] = _write_back(images[name], flat, new)
    return out, record
