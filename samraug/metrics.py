"""BraTS segmentation metrics: Dice, HD95, sensitivity and specificity per region, and lesion-wise Dice/HD95.

All functions take boolean (or 0/1) numpy arrays or torch tensors, 2D or 3D, and a voxel ``spacing`` in mm
(default 1 mm per axis). :func:`compute_metrics` takes two label maps in one :class:`~samraug.labels.LabelScheme`
and evaluates every region of that scheme (``samr``: edema, cavity, tumor, lesion; ``brats2021``/``brats2023``:
WT, TC, ET; ``brats2024``: NETC, SNFH, ET, RC, TC, WT).

Conventions (decisions recorded here):

- **Surface**: the voxels of a mask with at least one face-neighbour outside it, i.e. ``mask & ~erosion(mask)``
  with the face-connected structuring element (6-connectivity in 3D, 4 in 2D; scipy's default, as MONAI's
  ``get_mask_edges``); voxels on the image border count as surface (erosion border value 0).
- **HD95**: the larger of the two directed 95th percentiles of surface-to-surface distances (MONAI's
  ``HausdorffDistanceMetric(percentile=95)``): distances from every surface voxel of one mask to the nearest
  surface voxel of the other, from ``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing`` on the
  masks' joint bounding box (+1 voxel), never from pairwise distances. Percentiles use ``np.percentile``'s
  default linear interpolation. (The BraTS 2023 reference code instead weights surface elements by area via
  DeepMind's ``surface_distance``, so its values can differ slightly from these.)
- **Edge cases**: :class:`EdgeConvention`; the default reproduces the BraTS legacy code: both empty -> Dice 1,
  HD95 0, sensitivity 1; one empty -> Dice 0 and HD95 = the image diagonal in mm (373.13 on the 240x240x155 BraTS
  grid at 1 mm; BraTS code uses the constant 374); empty ground truth with a non-empty prediction -> sensitivity 0;
  a ground truth without negatives -> specificity 0 (``tn / (tn + fp + eps)``). ``EdgeConvention.undefined_as_nan()``
  returns NaN for every undefined value instead, which :func:`aggregate` skips.
- **Lesion-wise** (:func:`lesion_wise_metrics`): the BraTS 2023 rules, see there.

Image section: :func:`ssim_map` (per-pixel SSIM) and :func:`image_metrics` (L1 / PSNR / SSIM inside a region),
used by the trainers' validation and the quality benchmark.

Example:
    >>> import numpy as np
    >>> gt = np.zeros((20, 20, 20), dtype=np.int64); gt[5:15, 5:15, 5:15] = 2; gt[8:12, 8:12, 8:12] = 4
    >>> pred = np.roll(gt, 1, axis=0)
    >>> m = compute_metrics(pred, gt, scheme="samr")
    >>> round(m["edema"]["dice"], 3), m["tumor"]["hd95"]
    (0.876, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from samraug.labels import LabelScheme, get_scheme

__all__ = [
    "METRIC_NAMES",
    "EdgeConvention",
    "LesionScore",
    "LesionWiseResult",
    "aggregate",
    "compute_metrics",
    "dice",
    "hd95",
    "hd95_bruteforce",
    "image_diagonal",
    "image_metrics",
    "lesion_wise_metrics",
    "sensitivity",
    "specificity",
    "ssim_map",
    "surface_distances",
]

METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")
ArrayLike = np.ndarray | torch.Tensor


# ---------------------------------------------------------------------------------------------- conventions
@dataclass(frozen=True)
class EdgeConvention:
    """Values returned where a metric is undefined. Defaults: the BraTS legacy evaluation code.

    Attributes:
        dice_both_empty: Dice when prediction and ground truth are both empty.
        hd95_both_empty: HD95 when both are empty.
        hd95_one_empty: HD95 when exactly one is empty: a number, or ``"diagonal"`` for the image diagonal in mm,
            ``sqrt(sum((shape * spacing)^2))``. Also the lesion-wise penalty for missed and false lesions.
        sensitivity_both_empty: Sensitivity when the ground truth is empty and the prediction too.
        sensitivity_gt_empty: Sensitivity when the ground truth is empty but the prediction is not.
        specificity_no_negatives: Specificity when the ground truth has no negative voxel.

    Example:
        >>> EdgeConvention(hd95_one_empty=374.0).hd95_one_empty
        374.0
    """

    dice_both_empty: float = 1.0
    hd95_both_empty: float = 0.0
    hd95_one_empty: float | Literal["diagonal"] = "diagonal"
    sensitivity_both_empty: float = 1.0
    sensitivity_gt_empty: float = 0.0
    specificity_no_negatives: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.hd95_one_empty, str) and self.hd95_one_empty != "diagonal":
            raise ValueError(f"hd95_one_empty must be a number or 'diagonal', got {self.hd95_one_empty!r}")

    @classmethod
    def brats_legacy(cls) -> EdgeConvention:
        """The default: BraTS legacy values (see the class attributes)."""
        return cls()

    @classmethod
    def undefined_as_nan(cls) -> EdgeConvention:
        """NaN wherever a metric is mathematically undefined (skipped by :func:`aggregate`)."""
        nan = float("nan")
        return cls(nan, nan, nan, nan, nan, nan)

    def one_empty_distance(self, shape: Sequence[int], spacing: Sequence[float]) -> float:
        """The HD95 value (and lesion-wise penalty) used when exactly one mask is empty."""
        if self.hd95_one_empty == "diagonal":
            return image_diagonal(shape, spacing)
        return float(self.hd95_one_empty)


_DEFAULT = EdgeConvention()


def image_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Length in mm of the image diagonal ``sqrt(sum((n_i * s_i)^2))``; 373.13 for 240x240x155 at 1 mm.

    Example:
        >>> round(image_diagonal((240, 240, 155)), 2)
        373.13
    """
    sp = _spacing(spacing, len(shape))
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sp, strict=True))))


# ---------------------------------------------------------------------------------------------- input checks
def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).ravel())
    if len(sp) != ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(sp)} values for a {ndim}D image; give one per axis (mm)")
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be positive and finite, got {sp}")
    return sp


def _to_numpy(x: ArrayLike, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_bool(x: ArrayLike, what: str) -> np.ndarray:
    a = _to_numpy(x, what)
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} has dtype {a.dtype}; pass a boolean mask")
    if not np.all((a == 0) | (a == 1)):
        raise ValueError(
            f"{what} is not binary (values other than 0/1); pass a boolean mask such as `seg == 4`, "
            "or label maps to compute_metrics(pred, gt, scheme=...)"
        )
    return a.astype(bool)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground truth shape {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected 2D or 3D volumes, got {pred.ndim}D shape {pred.shape}")


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels grown by ``margin`` voxels (clipped to the image); None if empty."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(np.any(mask, axis=other))
        if idx.size == 0:
            return None
        slices.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(slices)


# ---------------------------------------------------------------------------------------------- surfaces
def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels with at least one face-neighbour outside the mask (image border counts as outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _distances_to(surface: np.ndarray, query: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Euclidean distance (mm) from every ``query`` voxel to the nearest voxel of ``surface``.

    ``distance_transform_edt(~surface, sampling=spacing)`` evaluated at the query voxels only: the transform's
    nearest-feature indices are computed over the box and the distances just where they are needed (this skips
    the dense float64 distance map, about half of the cost on a large box).
    """
    nearest = ndimage.distance_transform_edt(~surface, sampling=spacing, return_distances=False, return_indices=True)
    idx = np.nonzero(query)
    d2 = np.zeros(idx[0].size)
    for axis, (s, i) in enumerate(zip(spacing, idx, strict=True)):
        d2 += ((nearest[axis][idx] - i) * s) ** 2
    return np.sqrt(d2)


def _directed(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Surface distances pred->gt and gt->pred of two non-empty masks (cropped to their joint box + 1 voxel)."""
    box = _bbox(pred | gt, margin=1)
    assert box is not None
    p, g = pred[box], gt[box]
    sp, sg = _surface(p), _surface(g)
    return _distances_to(sg, sp, spacing), _distances_to(sp, sg, spacing)


def surface_distances(
    pred: ArrayLike, gt: ArrayLike, *, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (each surface voxel of ``pred`` to ``gt``'s surface, and vice versa).

    Both masks must be non-empty. Example:
        >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
        >>> d_pg, d_gp = surface_distances(a, np.roll(a, 1, axis=0))
        >>> float(d_pg.max()), float(d_gp.max())
        (1.0, 1.0)
    """
    p, g = _as_bool(pred, "prediction"), _as_bool(gt, "ground truth")
    _check_pair(p, g)
    if not p.any() or not g.any():
        raise ValueError("surface distances need two non-empty masks; use hd95() for the empty-mask conventions")
    return _directed(p, g, _spacing(spacing, p.ndim))


def _hd(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], percentile: float) -> float:
    d_pg, d_gp = _directed(pred, gt, spacing)
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


# ---------------------------------------------------------------------------------------------- binary metrics
def _binary(
    p: np.ndarray,
    g: np.ndarray,
    *,
    n_total: int,
    full_shape: tuple[int, ...],
    spacing: tuple[float, ...],
    convention: EdgeConvention,
    percentile: float = 95.0,
    which: Sequence[str] = METRIC_NAMES,
) -> dict[str, float]:
    """All metrics of two boolean masks; ``p``/``g`` may be crops that hold every positive voxel of the image."""
    n_p, n_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    tp = int(np.count_nonzero(p & g)) if n_p and n_g else 0
    fp, fn = n_p - tp, n_g - tp
    tn = n_total - n_p - n_g + tp
    out: dict[str, float] = {}
    if "dice" in which:
        out["dice"] = convention.dice_both_empty if n_p + n_g == 0 else 2.0 * tp / (n_p + n_g)
    if "hd95" in which:
        if n_p == 0 and n_g == 0:
            out["hd95"] = float(convention.hd95_both_empty)
        elif n_p == 0 or n_g == 0:
            out["hd95"] = convention.one_empty_distance(full_shape, spacing)
        else:
            out["hd95"] = _hd(p, g, spacing, percentile)
    if "sensitivity" in which:
        if n_g == 0:
            out["sensitivity"] = convention.sensitivity_both_empty if n_p == 0 else convention.sensitivity_gt_empty
        else:
            out["sensitivity"] = tp / (tp + fn)
    if "specificity" in which:
        out["specificity"] = convention.specificity_no_negatives if tn + fp == 0 else tn / (tn + fp)
    return {k: float(v) for k, v in out.items()}


def _one(metric: str, pred, gt, spacing, convention, **kw) -> float:
    p_full = _as_bool(pred, "prediction")
    g_full = _as_bool(gt, "ground truth")
    _check_pair(p_full, g_full)
    sp = _spacing(spacing, p_full.ndim)
    box = _bbox(p_full | g_full, margin=1)
    p, g = (p_full[box], g_full[box]) if box is not None else (p_full, g_full)
    res = _binary(
        p,
        g,
        n_total=p_full.size,
        full_shape=p_full.shape,
        spacing=sp,
        convention=convention or _DEFAULT,
        which=(metric,),
        **kw,
    )
    return res[metric]


def dice(pred: ArrayLike, gt: ArrayLike, *, convention: EdgeConvention | None = None) -> float:
    """Dice coefficient ``2|P & G| / (|P| + |G|)`` of two boolean masks.

    Example:
        >>> a = np.zeros((20, 20, 20), bool); a[0:10, 0:10, 0:10] = True
        >>> dice(a, np.roll(a, 2, axis=0))  # 2 * 800 / 2000
        0.8
    """
    return _one("dice", pred, gt, None, convention)


def hd95(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    spacing: Sequence[float] | None = None,
    percentile: float = 95.0,
    convention: EdgeConvention | None = None,
) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (see the module docstring for the exact definition).

    Example:
        >>> a = np.zeros((20, 20, 20), bool); a[5:15, 5:15, 5:15] = True
        >>> hd95(a, np.roll(a, 2, axis=2), spacing=(1, 1, 3))
        6.0
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    return _one("hd95", pred, gt, spacing, convention, percentile=percentile)


def sensitivity(pred: ArrayLike, gt: ArrayLike, *, convention: EdgeConvention | None = None) -> float:
    """True-positive rate ``TP / (TP + FN)``.

    Example:
        >>> sensitivity(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 0]]))
        0.5
    """
    return _one("sensitivity", pred, gt, None, convention)


def specificity(pred: ArrayLike, gt: ArrayLike, *, convention: EdgeConvention | None = None) -> float:
    """True-negative rate ``TN / (TN + FP)`` over the whole image.

    Example:
        >>> specificity(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]))
        0.6666666666666666
    """
    return _one("specificity", pred, gt, None, convention)


def hd95_bruteforce(
    pred: ArrayLike, gt: ArrayLike, *, spacing: Sequence[float] | None = None, percentile: float = 95.0
) -> float:
    """Slow reference HD95 by explicit pairwise distances (O(n * m), chunked), for tests and benchmarks only.

    Independent of :func:`hd95`'s machinery: surface voxels are found by looking up each voxel's face
    neighbours by coordinate, distances by brute force over all surface pairs; same definition otherwise
    (both masks must be non-empty).
    """
    p, g = _as_bool(pred, "prediction"), _as_bool(gt, "ground truth")
    _check_pair(p, g)
    if not p.any() or not g.any():
        raise ValueError("hd95_bruteforce needs two non-empty masks")
    sp = np.asarray(_spacing(spacing, p.ndim))

    def surface_points(mask: np.ndarray) -> np.ndarray:
        coords = np.argwhere(mask)
        padded = np.pad(mask, 1)
        on_surface = np.zeros(len(coords), dtype=bool)
        for axis in range(mask.ndim):
            for step in (-1, 1):
                nb = coords + 1
                nb[:, axis] += step
                on_surface |= ~padded[tuple(nb.T)]
        return coords[on_surface] * sp

    a, b = surface_points(p), surface_points(g)

    def nearest(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        out = np.empty(len(src))
        for start in range(0, len(src), 256):
            chunk = src[start : start + 256]
            d2 = np.zeros((len(chunk), len(dst)))
            for axis in range(src.shape[1]):
                d2 += (chunk[:, axis, None] - dst[None, :, axis]) ** 2
            out[start : start + 256] = np.sqrt(d2.min(1))
        return out

    return float(max(np.percentile(nearest(a, b), percentile), np.percentile(nearest(b, a), percentile)))


# ---------------------------------------------------------------------------------------------- lesion-wise
@dataclass(frozen=True)
class LesionScore:
    """One ground-truth lesion: its id, volume (mm^3), Dice, HD95, matched predicted components, and whether
    it counts (volume above ``min_volume``)."""

    lesion: int
    volume: float
    dice: float
    hd95: float
    matched: tuple[int, ...]
    counted: bool


@dataclass(frozen=True)
class LesionWiseResult:
    """Lesion-wise Dice and HD95 of one region, with the TP/FN/FP lesion counts and the per-lesion scores."""

    dice: float
    hd95: float
    n_tp: int
    n_fn: int
    n_fp: int
    lesions: tuple[LesionScore, ...]

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _lesion_wise(
    p: np.ndarray,
    g: np.ndarray,
    *,
    full_shape: tuple[int, ...],
    spacing: tuple[float, ...],
    dilation: int,
    min_volume: float,
    convention: EdgeConvention,
    percentile: float = 95.0,
    whole: tuple[float, float] | None = None,
) -> LesionWiseResult:
    """Lesion-wise scores on (cropped) masks; ``whole`` = (Dice, HD95) of the whole masks, reused when the only
    lesion is matched by every predicted component (then the lesion masks ARE the whole masks)."""
    ndim = g.ndim
    full = ndimage.generate_binary_structure(ndim, ndim)
    penalty = convention.one_empty_distance(full_shape, spacing)
    grown = (
        ndimage.binary_dilation(g, structure=ndimage.generate_binary_structure(ndim, min(2, ndim)), iterations=dilation)
        if dilation > 0 and g.any()
        else g
    )
    group, n_gt = ndimage.label(grown, structure=full)
    gt_lab = np.where(g, group, 0)
    pred_lab, n_pred = ndimage.label(p, structure=full)
    voxel_volume = float(np.prod(spacing))
    gt_size = np.bincount(gt_lab.ravel(), minlength=n_gt + 1)
    pred_size = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    inter = np.bincount(gt_lab[p & g], minlength=n_gt + 1)
    hit = (pred_lab > 0) & (group > 0)
    pairs = np.unique(pred_lab[hit].astype(np.int64) * (n_gt + 1) + group[hit])
    pair_pred, pair_gt = pairs // (n_gt + 1), pairs % (n_gt + 1)
    gt_boxes = ndimage.find_objects(gt_lab)
    pred_boxes = ndimage.find_objects(pred_lab)
    lesions = []
    for j in range(1, n_gt + 1):
        matched = tuple(int(k) for k in pair_pred[pair_gt == j])
        volume = float(gt_size[j]) * voxel_volume
        if matched and whole is not None and n_gt == 1 and len(matched) == n_pred:
            score, distance = whole
        elif matched:
            score = 2.0 * inter[j] / (pred_size[list(matched)].sum() + gt_size[j])
            boxes = [gt_boxes[j - 1]] + [pred_boxes[k - 1] for k in matched]
            box = tuple(
                slice(max(min(b[a].start for b in boxes) - 1, 0), min(max(b[a].stop for b in boxes) + 1, g.shape[a]))
                for a in range(ndim)
            )
            lesion_mask = gt_lab[box] == j
            pred_mask = np.isin(pred_lab[box], matched)
            distance = _hd(pred_mask, lesion_mask, spacing, percentile)
        else:
            score, distance = 0.0, penalty
        lesions.append(LesionScore(j, volume, float(score), float(distance), matched, volume > min_volume))
    n_fp = int(n_pred - np.unique(pair_pred).size)
    counted = [s for s in lesions if s.counted]
    n = len(counted) + n_fp
    if n == 0:
        dice_lw, hd_lw = float(convention.dice_both_empty), float(convention.hd95_both_empty)
    else:
        dice_lw = sum(s.dice for s in counted) / n
        hd_lw = (sum(s.hd95 for s in counted) + n_fp * penalty) / n
    n_tp = sum(1 for s in counted if s.matched)
    return LesionWiseResult(dice_lw, hd_lw, n_tp, len(counted) - n_tp, n_fp, tuple(lesions))


def lesion_wise_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    spacing: Sequence[float] | None = None,
    dilation: int = 3,
    min_volume: float = 50.0,
    convention: EdgeConvention | None = None,
) -> LesionWiseResult:
    """Lesion-wise Dice and HD95 of one region, following the BraTS 2023 lesion-wise rules.

    Rules (reimplemented from the BraTS 2023 description and reference code):

    1. Predicted components: connected components of the prediction with full connectivity (26 in 3D, 8 in 2D).
    2. Ground-truth lesions: the ground truth is dilated by ``dilation`` iterations of the 18-connected
       structuring element (8-connected in 2D); each fully connected component of the dilated mask is one lesion,
       made of the ORIGINAL ground-truth voxels inside it (so nearby fragments merge; the voxels never change).
    3. A predicted component is matched to every lesion whose dilated region it overlaps (true positive).
       Lesion Dice and HD95 compare the lesion with the union of its matched components. A lesion without match
       (false negative) scores Dice 0 and HD95 = ``convention.hd95_one_empty`` (the image diagonal; BraTS: 374).
    4. A predicted component matched to no lesion is a false positive: Dice 0 and the same HD95 penalty.
    5. Lesions of volume <= ``min_volume`` mm^3 (BraTS-GLI: 50) are left out of the averages and counts; the
       components matched to them are not false positives.
    6. Lesion-wise Dice = sum(lesion Dice) / (n_lesions + n_fp), HD95 = (sum(lesion HD95) + n_fp * penalty) /
       (n_lesions + n_fp); with nothing to count (no lesion, no false positive) the both-empty values (1, 0).

    Example:
        >>> gt = np.zeros((40, 40, 40), bool); gt[2:8, 2:8, 2:8] = True; gt[20:26, 20:26, 20:26] = True
        >>> pred = np.zeros_like(gt); pred[2:8, 2:8, 2:8] = True; pred[30:36, 2:8, 2:8] = True
        >>> r = lesion_wise_metrics(pred, gt)  # one lesion found, one missed, one false positive
        >>> r.n_tp, r.n_fn, r.n_fp, round(r.dice, 4)
        (1, 1, 1, 0.3333)
    """
    p_full, g_full = _as_bool(pred, "prediction"), _as_bool(gt, "ground truth")
    _check_pair(p_full, g_full)
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0 voxels, got {dilation}")
    sp = _spacing(spacing, p_full.ndim)
    box = _bbox(p_full | g_full, margin=dilation + 1)
    p, g = (p_full[box], g_full[box]) if box is not None else (p_full, g_full)
    return _lesion_wise(
        p,
        g,
        full_shape=p_full.shape,
        spacing=sp,
        dilation=dilation,
        min_volume=min_volume,
        convention=convention or _DEFAULT,
    )


# ---------------------------------------------------------------------------------------------- label maps
def _label_array(x: ArrayLike, scheme: LabelScheme, what: str) -> np.ndarray:
    a = _to_numpy(x, what)
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{what} has dtype {a.dtype}; pass an integer label map")
        scheme.validate(a, what)  # floats: checks finiteness and integrality with a clear error
        a = a.astype(np.int64)
    return a


def _region_codes(a: np.ndarray, scheme: LabelScheme, regions: Mapping[str, tuple[int, ...]], what: str) -> np.ndarray:
    """Per-voxel bit field of region membership (bit r = region r); validates the labels in the same pass."""
    n_bits = len(regions) + 1
    dtype = np.uint8 if n_bits <= 8 else np.uint16 if n_bits <= 16 else np.uint32 if n_bits <= 32 else np.uint64
    invalid = np.array(1 << len(regions), dtype=dtype)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo < 0 or hi > max(scheme.values):
        scheme.validate(a, what)  # raises with the offending values
    lut = np.full(max(scheme.values) + 1, invalid, dtype=dtype)
    for v in scheme.values:
        lut[v] = 0
    for r, values in enumerate(regions.values()):
        for v in values:
            lut[v] |= dtype(1 << r)
    codes = lut[a]
    if a.size and codes.max() >= invalid:
        scheme.validate(a, what)
    return codes


def _resolve_regions(
    scheme: LabelScheme, regions: Sequence[str] | Mapping[str, Sequence[int]] | None
) -> dict[str, tuple[int, ...]]:
    if regions is None:
        if not scheme.regions:
            raise ValueError(f"scheme {scheme.name!r} defines no regions; pass regions={{'name': (values...)}}")
        return dict(scheme.regions)
    if isinstance(regions, Mapping):
        out = {str(k): tuple(int(v) for v in vals) for k, vals in regions.items()}
        for name, vals in out.items():
            unknown = sorted(set(vals) - set(scheme.values))
            if unknown:
                raise ValueError(
                    f"region {name!r} uses values {unknown} not in scheme {scheme.name!r} ({list(scheme.values)})"
                )
        return out
    if isinstance(regions, str):
        regions = [regions]
    unknown = [r for r in regions if r not in scheme.regions]
    if unknown:
        raise ValueError(
            f"unknown regions {unknown} for scheme {scheme.name!r}; available: {list(scheme.regions)} "
            "(or pass a mapping {'name': (label values...)})"
        )
    return {r: scheme.regions[r] for r in regions}


def compute_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    scheme: str | LabelScheme = "samr",
    regions: Sequence[str] | Mapping[str, Sequence[int]] | None = None,
    spacing: Sequence[float] | None = None,
    convention: EdgeConvention | None = None,
    lesion_wise: bool = False,
    dilation: int = 3,
    min_volume: float = 50.0,
) -> dict[str, dict[str, float]]:
    """Dice, HD95, sensitivity and specificity for every region of a scheme, from two label maps.

    Args:
        pred, gt: Integer label maps (numpy or torch, 2D or 3D, same shape), both in ``scheme``.
        scheme: Scheme name or :class:`LabelScheme`; its ``regions`` are evaluated.
        regions: A subset of the scheme's region names, or a mapping ``{name: label values}``.
        spacing: Voxel size in mm per axis (default 1).
        convention: Edge-case values (default BraTS legacy, :class:`EdgeConvention`).
        lesion_wise: Also add ``lesion_dice`` and ``lesion_hd95`` (:func:`lesion_wise_metrics` with
            ``dilation`` and ``min_volume``).

    Returns:
        ``{region: {"dice", "hd95", "sensitivity", "specificity"[, "lesion_dice", "lesion_hd95"]}}`` of floats.

    Example:
        >>> gt = np.zeros((16, 16, 8), dtype=np.uint8); gt[4:12, 4:12, 2:6] = 2; gt[6:10, 6:10, 3:5] = 4
        >>> compute_metrics(gt, gt, scheme="brats2021")["ET"]
        {'dice': 1.0, 'hd95': 0.0, 'sensitivity': 1.0, 'specificity': 1.0}
    """
    scheme = get_scheme(scheme)
    conv = convention or _DEFAULT
    p = _label_array(pred, scheme, "prediction")
    g = _label_array(gt, scheme, "ground truth")
    _check_pair(p, g)
    sp = _spacing(spacing, p.ndim)
    reg = _resolve_regions(scheme, regions)
    margin = dilation + 1 if lesion_wise else 1
    if all(0 not in values for values in reg.values()):
        # Speed: label 0 is valid in every scheme and in no region here, so validating and coding the bounding
        # box of the non-zero voxels covers the whole image (outside it every voxel is 0).
        box = _bbox((p != 0) | (g != 0), margin=margin) or (slice(0, 1),) * p.ndim
        cp = _region_codes(p[box], scheme, reg, "prediction")
        cg = _region_codes(g[box], scheme, reg, "ground truth")
    else:
        cp = _region_codes(p, scheme, reg, "prediction")
        cg = _region_codes(g, scheme, reg, "ground truth")
    box = _bbox(cp | cg, margin=margin)
    if box is not None:
        cp, cg = cp[box], cg[box]
    out: dict[str, dict[str, float]] = {}
    for r, name in enumerate(reg):
        bit = cp.dtype.type(1 << r)
        pm, gm = (cp & bit) != 0, (cg & bit) != 0
        res = _binary(pm, gm, n_total=p.size, full_shape=p.shape, spacing=sp, convention=conv)
        if lesion_wise:
            lw = _lesion_wise(
                pm,
                gm,
                full_shape=p.shape,
                spacing=sp,
                dilation=dilation,
                min_volume=min_volume,
                convention=conv,
                whole=(res["dice"], res["hd95"]),
            )
            res["lesion_dice"], res["lesion_hd95"] = lw.dice, lw.hd95
        out[name] = res
    return out


def aggregate(
    results: Sequence[Mapping[str, Mapping[str, float]]], *, ddof: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, standard deviation and count of every region/metric over cases, ignoring NaN.

    Returns ``{region: {metric: {"mean", "std", "n"}}}`` (``n`` = non-NaN values; mean/std NaN when ``n`` is 0,
    std NaN when ``n <= ddof``).

    Example:
        >>> aggregate([{"WT": {"dice": 0.75}}, {"WT": {"dice": 0.25}}, {"WT": {"dice": float("nan")}}])
        {'WT': {'dice': {'mean': 0.5, 'std': 0.25, 'n': 2}}}
    """
    values: dict[str, dict[str, list[float]]] = {}
    for case in results:
        for region, metrics in case.items():
            for metric, value in metrics.items():
                values.setdefault(region, {}).setdefault(metric, []).append(float(value))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for region, metrics in values.items():
        out[region] = {}
        for metric, vals in metrics.items():
            v = np.asarray(vals, dtype=np.float64)
            v = v[~np.isnan(v)]
            n = int(v.size)
            mean = float(v.mean()) if n else float("nan")
            std = float(v.std(ddof=ddof)) if n > ddof else float("nan")
            out[region][metric] = {"mean": mean, "std": std, "n": n}
    return out


# ---------------------------------------------------------------------------------------------- images
def _gaussian_window(size: int = 11, sigma: float = 1.5, device: torch.device | None = None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03) of ``(B, C, H, W)``
    images, reflect-padded so the map has the input's size.

    Example:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> bool(torch.allclose(ssim_map(x, x), torch.ones(1, 1, 16, 16)))
        True
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"ssim_map needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    c = x.shape[1]
    w = _gaussian_window(window, 1.5, x.device).to(x.dtype).expand(c, 1, window, window)
    pad = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.pad(t, (pad, pad, pad, pad), mode="reflect"), w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def image_metrics(fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image, per-sequence L1, PSNR and SSIM inside the brain, for images in [-1, 1].

    ``fake``/``real`` ``(B, n, H, W)``, ``brain`` ``(B, H, W)`` bool. Returns ``{"l1", "psnr", "ssim"}`` each
    ``(B, n)``: mean absolute error over brain pixels; ``10 log10(range^2 / MSE)`` with range 2 (MSE floored at
    1e-10); the SSIM map averaged over brain pixels. Images without brain pixels give NaN.

    Example:
        >>> x = torch.rand(1, 2, 16, 16) * 2 - 1
        >>> m = image_metrics(x, x, torch.ones(1, 16, 16, dtype=torch.bool))
        >>> m["l1"].tolist(), m["ssim"].round(decimals=4).tolist()
        ([[0.0, 0.0]], [[1.0, 1.0]])
    """
    fake, real = fake.float(), real.float()
    w = brain[:, None].to(fake.dtype).expand_as(fake)
    n = w.sum((2, 3))
    n_safe = n.clamp_min(1)
    l1 = ((fake - real).abs() * w).sum((2, 3)) / n_safe
    mse = (((fake - real) ** 2) * w).sum((2, 3)) / n_safe
    psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-10))
    ssim = (ssim_map(fake, real) * w).sum((2, 3)) / n_safe
    empty = n == 0
    nan = torch.full_like(l1, float("nan"))
    return {k: torch.where(empty, nan, v) for k, v in (("l1", l1), ("psnr", psnr), ("ssim", ssim))}
