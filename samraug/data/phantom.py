"""Digital brain-tumour phantom: SIMULATED multi-sequence MR subjects with glioma-like lesions.

Everything here is a simulation, not patient data. It is the embedded default for tests, demos and the quick
benchmark, so the library runs end to end without downloading BraTS.

How a subject is made (all random choices from ``numpy.random.default_rng(seed)``, so a seed reproduces it):

1. **Anatomy.** Grey- and white-matter fractions and the brain mask of the MNI152 2009 template shipped inside
   nilearn (no download); CSF = brain mask - GM - WM, so the fractions sum to 1 inside the brain. The template is
   loaded once per resolution (1 mm: 197x233x189, 2 mm: 99x117x95) and cached.
2. **Per-subject shape.** A mild global scaling (+-5 % per axis) and a smooth random displacement field (cubic
   B-spline through control points ~32 mm apart, a few mm) applied to the tissue maps with
   ``scipy.ndimage.map_coordinates`` (order 1).
3. **Lesions** (1-3 by default), centred in white matter of the cerebral hemispheres: an irregular tumour core
   (an ellipsoid with a smooth random radial perturbation) with an enhancing rim (ET, 3) around necrosis (NETC, 1),
   patches of non-enhancing rim, edema (SNFH, 2) spreading preferentially along white matter (distance from the
   core thresholded at an extent weighted by the WM fraction) and, with ``cavity_probability``, a resection cavity
   (RC, 4) next to the tumour. Labels follow BraTS 2024 (``samraug.labels.get_scheme("brats2024")``) and lie
   strictly inside the brain. Lesions replace the normal tissue fractions, with partial volume at their borders.
4. **MR signal** per voxel as the fraction-weighted sum of tissue signals (partial volume). PD/T1/T2 per tissue at
   3 T (``TISSUE_PROPERTIES``, from the reference table) vary per subject by up to ~+-10 % (a factor shared by all
   tissues times a small per-tissue factor, so the contrasts keep their order). T1w: spin echo TR 550 / TE 12 ms;
   T2w: TR 5000 / TE 100 ms; FLAIR: inversion recovery TR 9000 / TE 120 ms with TI nulling CSF; Gd-T1w: T1w with
   ``1/T1 += r1 * C`` (r1 = 3.8 /mM/s, C ~ 0.2-0.45 mM in ET, 0 elsewhere); APTw: MTRasym(3.5 ppm) in % per tissue,
   simulated on a coarse 4 x 4 x 6 mm grid, upsampled (linear) and given 0.5 % Gaussian noise.
5. **Acquisition.** A faint anatomical texture, a smooth multiplicative bias field (+-10-20 %), Rician noise
   (magnitude of complex Gaussian noise, SNR 20-40 against the median brain signal), a per-sequence scale (the
   99th brain percentile maps to 1000-2500) and skull stripping: every sequence is 0 outside the brain and never
   exactly 0 inside, so ``brain == (image != 0)``. APTw is signed (in %, it may be negative inside the brain) and
   carries no bias field or Rician noise.

On disk (:func:`write_phantom_dataset`) the phantom uses the BraTS 2024 layout plus an ``aptw`` file,
``ROOT/BraTS-GLI-XXXXX-000/BraTS-GLI-XXXXX-000-{t1n,t1c,t2w,t2f,aptw,seg}.nii.gz``, so the BraTS loader reads it
unchanged, and ``ROOT/phantom.json`` records that it is a simulation and how it was made.

Example:
    >>> from samraug.data.phantom import generate_subject, ensure_phantom_dataset
    >>> subject = generate_subject(0)                    # one 2 mm subject, ~1 s
    >>> subject.images["t2f"].shape, subject.seg.dtype
    ((99, 117, 95), dtype('uint8'))
    >>> root = ensure_phantom_dataset(8)                 # cached under ~/.cache/samraug/phantom/2mm-seed0-n8
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

__all__ = [
    "LABELS",
    "PHANTOM_SEQUENCES",
    "PHANTOM_SPACE",
    "SUPPORTED_RESOLUTIONS",
    "TISSUES",
    "TISSUE_PROPERTIES",
    "PhantomSubject",
    "case_id",
    "dataset_subject",
    "ensure_phantom_dataset",
    "generate_subject",
    "montage",
    "subject_seed",
    "write_phantom_dataset",
    "write_subject",
]

#: Sequences of a phantom subject, in this order: T1w, Gd-T1w, T2w, FLAIR, APTw (BraTS 2024 names + ``aptw``).
PHANTOM_SEQUENCES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f", "aptw")
#: Tissue classes of the fraction maps: normal grey/white matter and CSF, then the four lesion compartments.
TISSUES: tuple[str, ...] = ("gm", "wm", "csf", "snfh", "netc", "et", "rc")
#: BraTS 2024 label value of each lesion compartment.
LABELS: Mapping[str, int] = MappingProxyType({"netc": 1, "snfh": 2, "et": 3, "rc": 4})
#: Nominal 3 T tissue properties (PD relative, T1 ms, T2 ms, APTw MTRasym %): mid values of literature ranges,
#: tabulated in ``docs/phantom.md``.
TISSUE_PROPERTIES: Mapping[str, tuple[float, float, float, float]] = MappingProxyType(
    {
        "gm": (0.80, 1450.0, 95.0, 0.75),
        "wm": (0.68, 950.0, 75.0, 0.25),
        "csf": (1.00, 4250.0, 1900.0, 1.0),
        "snfh": (0.87, 1700.0, 200.0, 1.25),
        "netc": (0.92, 2750.0, 300.0, 2.25),
        "et": (0.85, 1500.0, 125.0, 3.25),
        "rc": (0.97, 3500.0, 1500.0, 0.5),
    }
)
SUPPORTED_RESOLUTIONS: tuple[float, ...] = (1.0, 2.0)
#: The template space the phantom's subjects live in (their anatomy and grid are the MNI152 template's).
PHANTOM_SPACE = "MNI152"

# Acquisition protocol (ms) and contrast agent.
_T1W_TR, _T1W_TE = 550.0, 12.0
_T2W_TR, _T2W_TE = 5000.0, 100.0
_FLAIR_TR, _FLAIR_TE = 9000.0, 120.0
_T1_CSF = TISSUE_PROPERTIES["csf"][1]
#: FLAIR inversion time nulling (nominal) CSF: 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0.
_FLAIR_TI = _T1_CSF * float(np.log(2.0 / (1.0 + np.exp(-_FLAIR_TR / _T1_CSF))))
_R1_GD = 3.8e-3  # relaxivity, 1/(mM ms)
_APT_VOXEL_MM = (4.0, 4.0, 6.0)  # coarse APTw acquisition grid
_APT_NOISE = 0.5  # % (standard deviation)
# Label priority when compartments of different lesions overlap: RC > ET > NETC > SNFH > none.
_RANK = np.array([0, 2, 1, 3, 4], dtype=np.int8)
_PHANTOM_VERSION = 1
_CASE_FILES = (*PHANTOM_SEQUENCES, "seg")


# ---------------------------------------------------------------------------------------------------- the subject
@dataclass
class PhantomSubject:
    """One simulated subject (all arrays ``(X, Y, Z)`` on the MNI152 grid, RAS+).

    Attributes:
        subject_id: Case name, e.g. ``BraTS-GLI-00000-000``.
        images: Sequence name (``PHANTOM_SEQUENCES``) -> float32 volume; 0 outside the brain, non-zero inside.
        seg: uint8 labels in scheme ``brats2024`` (1 NETC, 2 SNFH, 3 ET, 4 RC), 0 elsewhere.
        brain: Boolean brain mask (equals ``images[s] != 0`` for every sequence).
        fractions: Tissue name (``TISSUES``) -> float32 volume fraction; they sum to 1 inside the brain, 0 outside.
        affine: 4x4 voxel-to-world (mm) matrix.
        bias: The multiplicative bias field applied to the magnitude sequences (1 outside the brain).
        seed: The seed that reproduces this subject.
        resolution: Voxel size in mm.
        parameters: What was drawn (tissue properties, lesions, SNR, scales); JSON-serialisable.
    """

    subject_id: str
    images: dict[str, np.ndarray]
    seg: np.ndarray
    brain: np.ndarray
    fractions: dict[str, np.ndarray]
    affine: np.ndarray
    bias: np.ndarray
    seed: int
    resolution: float
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The volume shape ``(X, Y, Z)``."""
        return tuple(self.brain.shape)  # type: ignore[return-value]

    def lesion_slice(self) -> int:
        """The axial index ``z`` with the most tumour or cavity voxels (else lesion voxels, else brain voxels)."""
        for mask in (np.isin(self.seg, (1, 3, 4)), self.seg > 0, self.brain):
            counts = mask.sum(axis=(0, 1))
            if counts.any():
                return int(np.argmax(counts))
        return self.shape[2] // 2


# ---------------------------------------------------------------------------------------------------- template
@dataclass(frozen=True)
class _Template:
    gm: np.ndarray  # float32 fractions, 0 outside the mask
    wm: np.ndarray
    mask: np.ndarray  # float32 0/1
    affine: np.ndarray
    support: np.ndarray  # bool: the mask dilated by one voxel (where interpolation can be non-zero)
    dist_mm: np.ndarray  # distance to the outside of the mask, mm
    centre: np.ndarray  # voxel coordinates of the brain centroid
    candidates: np.ndarray  # (N, 3) voxel coordinates where a lesion may be centred
    candidate_dist: np.ndarray  # (N,) their distance to the outside, mm


def _check_resolution(resolution: float) -> float:
    try:
        res = float(resolution)
    except (TypeError, ValueError):
        raise ValueError(
            f"resolution must be a number of mm, one of {SUPPORTED_RESOLUTIONS}; got {resolution!r}"
        ) from None
    if res not in SUPPORTED_RESOLUTIONS:
        raise ValueError(
            f"phantom resolution {resolution!r} mm is not available; use one of {SUPPORTED_RESOLUTIONS} "
            "(the MNI152 grids shipped with nilearn)"
        )
    return res


@functools.lru_cache(maxsize=len(SUPPORTED_RESOLUTIONS))
def _template(resolution: float) -> _Template:
    """Load the MNI152 2009 template's GM/WM maps and brain mask from nilearn's package data (cached)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nilearn import datasets  # optional (samraug[demo]): only the phantom needs it
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digital phantom needs nilearn for the MNI152 template; install it with "
            "`pip install 'samraug[demo]'` (or `pip install nilearn`)"
        ) from err
    r = int(resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask_img = datasets.load_mni152_brain_mask(resolution=r)
        gm = np.asarray(datasets.load_mni152_gm_template(resolution=r).get_fdata(), dtype=np.float32)
        wm = np.asarray(datasets.load_mni152_wm_template(resolution=r).get_fdata(), dtype=np.float32)
    mask = np.asarray(mask_img.get_fdata()) > 0.5
    affine = np.asarray(mask_img.affine, dtype=np.float64)
    if not mask.any():  # pragma: no cover - a broken nilearn installation
        raise RuntimeError(f"nilearn's MNI152 brain mask at {r} mm is empty; reinstall nilearn")
    gm = np.clip(gm, 0.0, 1.0) * mask
    wm = np.clip(wm, 0.0, 1.0) * mask
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    dist = ndimage.distance_transform_edt(mask, sampling=resolution).astype(np.float32)
    centre = np.argwhere(mask).mean(axis=0)
    # Lesion centres: white matter of the cerebral hemispheres (world z > -20 mm excludes most of the
    # cerebellum and brainstem), at least 6 mm from the brain surface.
    world_z = affine[2, 2] * np.arange(mask.shape[2]) + affine[2, 3]
    ok = (wm > 0.6) & (dist >= 6.0) & (world_z > -20.0)[None, None, :]
    candidates = np.argwhere(ok).astype(np.float64)
    return _Template(
        gm=np.ascontiguousarray(gm, dtype=np.float32),
        wm=np.ascontiguousarray(wm, dtype=np.float32),
        mask=mask.astype(np.float32),
        support=ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), dtype=bool)),
        affine=affine,
        dist_mm=dist,
        centre=centre,
        candidates=candidates,
        candidate_dist=dist[ok],
    )


# ---------------------------------------------------------------------------------------------------- smooth fields
def _bspline(u: np.ndarray) -> np.ndarray:
    """Cubic B-spline kernel at distances ``|u|`` (in control-point units)."""
    u = np.abs(u)
    return np.where(u < 1.0, 2.0 / 3.0 - u**2 + 0.5 * u**3, np.where(u < 2.0, (2.0 - u) ** 3 / 6.0, 0.0))


class _SmoothField:
    """Random smooth fields: cubic B-splines through N(0, 1) control points, unit variance at every voxel.

    The control points lie ``spacing`` voxels apart; the weights are separable, so a full field is three small
    matrix products (cheap even at 1 mm) and values at arbitrary points come from the same weights.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...], spacing: float, n: int = 1) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = max(float(spacing), 1.0)
        self.sizes = tuple(int(np.ceil((s - 1) / self.spacing)) + 4 for s in self.shape)
        self.coef = rng.standard_normal((n, *self.sizes), dtype=np.float32)

    def _weights(self, axis: int, positions: np.ndarray) -> np.ndarray:
        t = np.asarray(positions, dtype=np.float64) / self.spacing + 1.0
        w = _bspline(t[:, None] - np.arange(self.sizes[axis])[None, :])
        w /= np.sqrt((w**2).sum(axis=1, keepdims=True))  # unit variance per voxel
        return w.astype(np.float32)

    def full(self, z: slice = slice(None)) -> np.ndarray:
        """All components on the grid (or the axial slab ``z``): ``(n, X, Y, Z)``."""
        wx = self._weights(0, np.arange(self.shape[0]))
        wy = self._weights(1, np.arange(self.shape[1]))
        wz = self._weights(2, np.arange(self.shape[2])[z])
        out = np.empty((self.coef.shape[0], self.shape[0], self.shape[1], wz.shape[0]), dtype=np.float32)
        for k, c in enumerate(self.coef):
            t = c @ wz.T  # (a, b, Z)
            t = np.tensordot(wy, t, axes=([1], [1]))  # (Y, a, Z)
            out[k] = np.tensordot(wx, t, axes=([1], [1]))  # (X, Y, Z)
        return out

    def at(self, points: np.ndarray) -> np.ndarray:
        """Values at fractional voxel coordinates ``points`` ``(P, 3)``: ``(n, P)``."""
        points = np.atleast_2d(points)
        wx, wy, wz = (self._weights(a, points[:, a]) for a in range(3))
        return np.einsum("pa,pb,pc,kabc->kp", wx, wy, wz, self.coef, optimize=True)


# ---------------------------------------------------------------------------------------------------- anatomy
@dataclass
class _Transform:
    """Subject voxel p -> template voxel ``centre + scale * (p - centre) + amp * field(p)``."""

    centre: np.ndarray
    scale: np.ndarray
    field: _SmoothField
    amp: float  # displacement standard deviation, voxels

    def forward(self, p: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(p)
        return self.centre + self.scale * (p - self.centre) + self.amp * self.field.at(p).T

    def inverse(self, q: np.ndarray, iterations: int = 6) -> np.ndarray:
        q = np.atleast_2d(q)
        p = self.centre + (q - self.centre) / self.scale
        for _ in range(iterations):  # fixed point: the displacement is small and smooth
            p = self.centre + (q - self.centre - self.amp * self.field.at(p).T) / self.scale
        return p


def _warp_anatomy(tpl: _Template, tf: _Transform) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resample the template tissue maps into subject space: ``gm, wm, csf`` fractions and the brain mask.

    Only voxels whose template position lies next to the template brain are interpolated (the rest are 0).
    """
    shape = tpl.mask.shape
    grids = [tf.centre[a] + tf.scale[a] * (np.arange(shape[a], dtype=np.float32) - tf.centre[a]) for a in range(3)]
    warped = [np.zeros(shape, dtype=np.float32) for _ in range(3)]
    slab = max(1, int(2_000_000 // (shape[0] * shape[1])))
    for z0 in range(0, shape[2], slab):
        zs = slice(z0, min(shape[2], z0 + slab))
        coords = tf.field.full(zs)
        coords *= tf.amp
        coords[0] += grids[0][:, None, None]
        coords[1] += grids[1][None, :, None]
        coords[2] += grids[2][None, None, zs]
        nearest = np.rint(coords).astype(np.intp)
        for a in range(3):
            np.clip(nearest[a], 0, shape[a] - 1, out=nearest[a])
        sel = tpl.support[nearest[0], nearest[1], nearest[2]]
        if not sel.any():
            continue
        points = coords[:, sel]
        for src, dst in zip((tpl.gm, tpl.wm, tpl.mask), warped, strict=True):
            dst[:, :, zs][sel] = ndimage.map_coordinates(src, points, order=1, mode="constant", cval=0.0)
    brain = warped[2] >= 0.5
    flat = np.flatnonzero(brain)
    m = warped[2].ravel()[flat]
    gm = np.clip(warped[0].ravel()[flat] / m, 0.0, 1.0)  # fractions given brain (partial volume at the edge)
    wm = np.clip(warped[1].ravel()[flat] / m, 0.0, 1.0)
    total = np.maximum(gm + wm, 1.0)
    gm /= total
    wm /= total
    out = []
    for values in (gm, wm, np.clip(1.0 - gm - wm, 0.0, 1.0)):
        full = np.zeros(brain.size, dtype=np.float32)
        full[flat] = values
        out.append(full.reshape(shape))
    return out[0], out[1], out[2], brain


# ---------------------------------------------------------------------------------------------------- lesions
def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid_radius(rng: np.random.Generator, offsets: list[np.ndarray], radii: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) of a randomly rotated ellipsoid, offsets in mm."""
    rot = _rotation(rng)
    rho2 = 0.0
    for i in range(3):
        u = (rot[0, i] * offsets[0] + rot[1, i] * offsets[1] + rot[2, i] * offsets[2]) / radii[i]
        rho2 = rho2 + u**2
    return np.sqrt(rho2).astype(np.float32)


def _perturb(rng: np.random.Generator, rho: np.ndarray, amp: float, spacing: float) -> np.ndarray:
    """Smooth random radial perturbation: the surface ``rho == 1`` moves by about ``amp`` (relative)."""
    noise = _SmoothField(rng, rho.shape, spacing).full()[0]
    return rho / (1.0 + amp * np.clip(noise, -2.5, 2.5))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _components_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    keep = np.unique(lab[seed & mask])
    return np.isin(lab, keep[keep > 0])


@dataclass
class _Lesion:
    box: tuple[slice, slice, slice]
    labels: np.ndarray  # uint8, BraTS 2024
    edema_strength: np.ndarray  # float32 in [0, 1]: edema volume fraction of an edema voxel
    info: dict[str, Any]


def _make_lesion(
    rng: np.random.Generator,
    centre: np.ndarray,
    radius_mm: float,
    edema_mm: float,
    cavity: bool,
    anatomy: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    res: float,
) -> _Lesion:
    """One glioma-like lesion around voxel ``centre`` (core, rim, necrosis, edema, optional cavity)."""
    _, wm, csf, brain = anatomy
    shape = brain.shape
    radii = radius_mm * rng.uniform(0.75, 1.25, size=3)
    amp = float(rng.uniform(0.12, 0.3))
    cavity_r = rng.uniform(0.5, 0.9) * radius_mm + 2.0 if cavity else 0.0
    cavity_radii = cavity_r * rng.uniform(0.8, 1.2, size=3)
    cavity_d = rng.uniform(0.7, 1.1) * radius_mm if cavity else 0.0
    # Farthest a labelled voxel can be from the centre (perturbations are clipped at 2.5 standard deviations).
    reach = max(radii.max() * (1.0 + 2.5 * amp), cavity_d + cavity_radii.max() * 1.3) + 1.3 * edema_mm
    half = int(np.ceil(reach / res)) + 2
    lo = [max(0, int(np.floor(c)) - half) for c in centre]
    hi = [min(s, int(np.ceil(c)) + half + 1) for c, s in zip(centre, shape, strict=True)]
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    bshape = tuple(h - low for low, h in zip(lo, hi, strict=True))
    offsets = [
        ((np.arange(lo[a], hi[a]) - centre[a]) * res)
        .astype(np.float32)
        .reshape([-1 if b == a else 1 for b in range(3)])
        for a in range(3)
    ]
    in_brain = brain[box]
    wm_b, csf_b = wm[box], csf[box]

    # Tumour core: an irregular ellipsoid; necrosis inside, enhancing rim around it, patches of non-enhancing rim.
    rho = _ellipsoid_radius(rng, offsets, radii)
    spacing = max(2.0, 0.7 * float(radii.mean()) / res)
    core = (_perturb(rng, rho, amp, spacing) < 1.0) & in_brain
    core = _largest_component(core)
    c_idx = tuple(int(np.clip(round(c - low), 0, s - 1)) for c, low, s in zip(centre, lo, bshape, strict=True))
    if not core.any() and in_brain[c_idx]:
        core[c_idx] = True
    necrosis_p = 0.85 if radius_mm > 8.0 else 0.3
    has_necrosis = bool(rng.random() < necrosis_p)
    necrosis_f = float(rng.uniform(0.5, 0.8))
    necrosis = core & (_perturb(rng, rho, 0.2, spacing) < necrosis_f) if has_necrosis else np.zeros_like(core)
    rim = core & ~necrosis
    patchy = _SmoothField(rng, bshape, max(2.0, 4.0 / res)).full()[0] > 1.3
    netc = necrosis | (rim & patchy)
    et = rim & ~patchy

    # Resection cavity next to the tumour (it may take part of the tumour: a partial resection).
    cav = np.zeros_like(core)
    if cavity:
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        shift = direction * cavity_d
        cav_offsets = [offsets[a] - np.float32(shift[a]) for a in range(3)]
        cav_rho = _ellipsoid_radius(rng, cav_offsets, cavity_radii)
        cav = (_perturb(rng, cav_rho, 0.12, max(2.0, 0.7 * cavity_r / res)) < 1.0) & in_brain
        cav = _largest_component(cav)

    # Edema: distance from the core thresholded at an extent weighted by the white-matter fraction.
    solid = core | cav
    dist = ndimage.distance_transform_edt(~solid, sampling=res).astype(np.float32) if solid.any() else None
    labels = np.zeros(bshape, dtype=np.uint8)
    strength = np.zeros(bshape, dtype=np.float32)
    if dist is not None:
        noise = np.clip(_SmoothField(rng, bshape, max(2.0, 6.0 / res)).full()[0], -2.0, 2.0)
        weight = np.clip((0.25 + 0.85 * wm_b) * (1.0 - csf_b) * (1.0 + 0.2 * noise), 0.0, 1.3)
        extent = edema_mm * weight
        edema = in_brain & ~solid & (dist <= extent)
        edema = _components_touching(edema | solid, solid) & ~solid
        strength = np.where(edema, np.clip(1.0 - 0.45 * dist / np.maximum(extent, 1e-3), 0.55, 1.0), 0.0)
        labels[edema] = LABELS["snfh"]
    labels[netc] = LABELS["netc"]
    labels[et] = LABELS["et"]
    labels[cav] = LABELS["rc"]
    labels[~in_brain] = 0
    info = {
        "centre_voxel": [round(float(c), 2) for c in centre],
        "radius_mm": round(float(radius_mm), 2),
        "edema_mm": round(float(edema_mm), 2),
        "necrosis": has_necrosis,
        "cavity": bool(cavity),
        "cavity_radius_mm": round(float(cavity_r), 2),
    }
    return _Lesion(box=box, labels=labels, edema_strength=strength.astype(np.float32), info=info)


def _draw_range(rng: np.random.Generator, value: float | tuple[float, float], name: str) -> float:
    if isinstance(value, tuple | list):
        if len(value) != 2 or not 0 < value[0] <= value[1]:
            raise ValueError(f"{name} must be a positive number or a (low, high) range with low <= high; got {value}")
        return float(rng.uniform(value[0], value[1]))
    if not value > 0:
        raise ValueError(f"{name} must be positive; got {value}")
    return float(value)


def _place_lesions(
    rng: np.random.Generator,
    count: int,
    tpl: _Template,
    tf: _Transform,
    anatomy: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    res: float,
    radius_range: float | tuple[float, float],
    edema_range: float | tuple[float, float],
    cavity_probability: float,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Draw ``count`` lesions; return the BraTS 2024 label map, the edema strength map and the lesion records."""
    brain = anatomy[3]
    seg = np.zeros(brain.shape, dtype=np.uint8)
    strength = np.zeros(brain.shape, dtype=np.float32)
    placed: list[tuple[np.ndarray, float]] = []
    infos: list[dict[str, Any]] = []
    for k in range(count):
        radius = _draw_range(rng, radius_range, "lesion_radius_mm") * (1.0 if k == 0 else rng.uniform(0.5, 1.0))
        edema = _draw_range(rng, edema_range, "edema_mm")
        cavity = bool(rng.random() < cavity_probability)
        centre = None
        for _attempt in range(60):
            need = radius * float(np.max(tf.scale)) + 4.0
            ok = np.flatnonzero(tpl.candidate_dist >= need)
            if ok.size == 0:
                radius = max(3.0, float(tpl.candidate_dist.max()) - 4.0)
                continue
            q = tpl.candidates[ok[rng.integers(ok.size)]]
            p = tf.inverse(q)[0]
            pi = tuple(round(float(v)) for v in p)
            if (
                not all(0 <= v < s for v, s in zip(pi, brain.shape, strict=True))
                or not brain[pi]
                or anatomy[1][pi] < 0.3
            ):
                continue
            if any(np.linalg.norm((p - c) * res) < 0.8 * (radius + r) + 4.0 for c, r in placed):
                continue
            centre = p
            break
        if centre is None:  # very unlikely: no room left for another lesion
            continue
        lesion = _make_lesion(rng, centre, radius, edema, cavity, anatomy, res)
        box_seg = seg[lesion.box]
        update = _RANK[lesion.labels] > _RANK[box_seg]
        box_seg[update] = lesion.labels[update]
        np.maximum(strength[lesion.box], lesion.edema_strength, out=strength[lesion.box])
        placed.append((centre, radius))
        infos.append(lesion.info)
    seg[~brain] = 0
    return seg, strength, infos


def _tissue_fractions(
    anatomy: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], seg: np.ndarray, strength: np.ndarray
) -> dict[str, np.ndarray]:
    """Fractions of every tissue: lesions replace the normal tissue, with partial volume at their borders."""
    gm, wm, csf, brain = anatomy
    fractions = {"gm": gm, "wm": wm, "csf": csf}
    fractions.update({name: np.zeros(brain.shape, dtype=np.float32) for name in ("snfh", "netc", "et", "rc")})
    if seg.any():
        idx = np.argwhere(seg > 0)
        lo = np.maximum(idx.min(axis=0) - 2, 0)
        hi = np.minimum(idx.max(axis=0) + 3, brain.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        seg_b, brain_b = seg[box], brain[box]
        lesion_total = np.zeros(seg_b.shape, dtype=np.float32)
        for name in ("snfh", "netc", "et", "rc"):
            ind = (seg_b == LABELS[name]).astype(np.float32)
            if name == "snfh":
                ind *= strength[box]
            soft = ndimage.gaussian_filter(ind, sigma=0.5, mode="nearest", truncate=3.0) * brain_b
            fractions[name][box] = soft
            lesion_total += soft
        keep = 1.0 - np.clip(lesion_total, 0.0, 1.0)
        for name in ("gm", "wm", "csf"):
            fractions[name][box] *= keep
    return fractions


# ---------------------------------------------------------------------------------------------------- MR signal
def _spin_echo(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, tr: float, te: float) -> np.ndarray:
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)


def _inversion_recovery(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, tr: float, te: float, ti: float) -> np.ndarray:
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def _tissue_signals(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-tissue signal of every sequence (vectors over ``TISSUES``) with per-subject jittered properties."""
    base = np.array([TISSUE_PROPERTIES[t] for t in TISSUES], dtype=np.float64)
    shared = rng.uniform(0.92, 1.08, size=3)  # PD, T1, T2 factor shared by all tissues: keeps contrast order
    own = rng.uniform(0.98, 1.02, size=(len(TISSUES), 3))
    pd, t1, t2 = (base[:, :3] * shared * own).T
    apt = base[:, 3] * rng.uniform(0.9, 1.1, size=len(TISSUES))
    gd = np.zeros(len(TISSUES))
    gd[TISSUES.index("et")] = rng.uniform(0.2, 0.45)  # mM; intact blood-brain barrier elsewhere
    t1_post = 1.0 / (1.0 / t1 + _R1_GD * gd)
    signals = {
        "t1n": _spin_echo(pd, t1, t2, _T1W_TR, _T1W_TE),
        "t1c": _spin_echo(pd, t1_post, t2, _T1W_TR, _T1W_TE),
        "t2w": _spin_echo(pd, t1, t2, _T2W_TR, _T2W_TE),
        "t2f": _inversion_recovery(pd, t1, t2, _FLAIR_TR, _FLAIR_TE, _FLAIR_TI),
        "aptw": apt,
    }
    record = {
        "tissues": {
            t: {
                "pd": round(float(pd[i]), 4),
                "t1_ms": round(float(t1[i]), 1),
                "t2_ms": round(float(t2[i]), 1),
                "aptw_percent": round(float(apt[i]), 3),
                "gd_mM": round(float(gd[i]), 3),
            }
            for i, t in enumerate(TISSUES)
        },
        "protocol_ms": {
            "t1n": {"tr": _T1W_TR, "te": _T1W_TE},
            "t1c": {"tr": _T1W_TR, "te": _T1W_TE, "r1_per_mM_s": _R1_GD * 1e3},
            "t2w": {"tr": _T2W_TR, "te": _T2W_TE},
            "t2f": {"tr": _FLAIR_TR, "te": _FLAIR_TE, "ti": round(_FLAIR_TI, 1)},
            "aptw": {"voxel_mm": list(_APT_VOXEL_MM), "noise_percent": _APT_NOISE},
        },
    }
    return {k: v.astype(np.float32) for k, v in signals.items()}, record


def _block_mean(volume: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    pad = [(0, (-s) % f) for s, f in zip(volume.shape, factors, strict=True)]
    v = np.pad(volume, pad)
    shp = []
    for s, f in zip(v.shape, factors, strict=True):
        shp += [s // f, f]
    return v.reshape(shp).mean(axis=(1, 3, 5))


def _aptw(
    true_apt: np.ndarray,
    brain: np.ndarray,
    res: float,
    rng: np.random.Generator,
    noise_rng: np.random.Generator | None = None,
    noise_free: bool = False,
) -> np.ndarray:
    """Simulate the coarse APTw acquisition: block average inside the brain, linear upsampling, Gaussian noise
    (from ``noise_rng`` when given, none when ``noise_free``; ``rng`` advances the same either way)."""
    factors = tuple(max(1, round(v / res)) for v in _APT_VOXEL_MM)
    num = _block_mean(true_apt * brain, factors)
    den = _block_mean(brain.astype(np.float32), factors)
    valid = den > 0.05
    coarse = np.where(valid, num / np.maximum(den, 1e-6), 0.0)
    if not valid.all():  # extend brain values outwards so the upsampling does not darken the brain edge
        _, nearest = ndimage.distance_transform_edt(~valid, return_indices=True)
        coarse = coarse[tuple(nearest)]
    fine = ndimage.zoom(coarse.astype(np.float32), factors, order=1, mode="nearest", grid_mode=True)
    fine = fine[: brain.shape[0], : brain.shape[1], : brain.shape[2]]
    noise = rng.standard_normal(int(brain.sum()), dtype=np.float32)
    if noise_rng is not None:
        noise = noise_rng.standard_normal(noise.size, dtype=np.float32)
    if noise_free:
        return fine[brain]
    return fine[brain] + _APT_NOISE * noise


# ---------------------------------------------------------------------------------------------------- public API
def case_id(index: int) -> str:
    """The BraTS-2024-style case name of the ``index``-th phantom subject, e.g. ``BraTS-GLI-00003-000``."""
    if not 0 <= int(index) < 100_000:
        raise ValueError(f"phantom case index must be in 0..99999 (five digits in the BraTS name); got {index}")
    return f"BraTS-GLI-{int(index):05d}-000"


def subject_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th subject of a data set made with ``seed`` (independent streams per subject)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def generate_subject(
    seed: int,
    *,
    resolution: float = 2.0,
    n_lesions: int | tuple[int, int] = (1, 3),
    cavity_probability: float = 0.5,
    lesion_radius_mm: float | tuple[float, float] = (6.0, 22.0),
    edema_mm: float | tuple[float, float] = (4.0, 20.0),
    snr: float | tuple[float, float] = (20.0, 40.0),
    bias: float = 0.15,
    deformation_mm: float = 2.5,
    scaling: float = 0.05,
    subject_id: str | None = None,
    noise_seed: int | None = None,
    noise_free: bool = False,
) -> PhantomSubject:
    """Simulate one subject (see the module docstring for the model). Deterministic per ``seed``.

    Args:
        seed: Non-negative integer; the same seed (and arguments) gives identical arrays.
        resolution: Voxel size in mm, 2.0 (99x117x95, ~0.5 s) or 1.0 (197x233x189, ~5 s) on one free core.
        n_lesions: Number of lesions, or an inclusive ``(low, high)`` range to draw it from; 0 gives a healthy subject.
        cavity_probability: Probability that a lesion comes with a resection cavity (label 4).
        lesion_radius_mm: Tumour-core radius (mm), or a range to draw it from (further lesions are smaller).
        edema_mm: Edema extent beyond the core in white matter (mm), or a range.
        snr: Signal-to-noise ratio of the magnitude sequences (median brain signal / noise sigma), or a range.
        bias: Bias-field strength: the log bias field has standard deviation ``bias / 2``, so most of the brain
            lies within +-``bias`` (0.15 -> +-15 %).
        deformation_mm: Standard deviation of the smooth random displacement (mm).
        scaling: Maximum relative global scaling per axis.
        subject_id: Case name; defaults to ``phantom-<seed>``.
        noise_seed: None (the subject's own noise) or a non-negative integer: the same anatomy, lesions, contrasts,
            bias field and intensity scale, with another realisation of the acquisition noise (Rician and APTw)
            drawn from ``(seed, noise_seed)``: a noise reference for image-quality metrics.
        noise_free: The same subject (anatomy, lesions, contrasts, bias field, intensity scale and APTw grid) with
            no acquisition noise: the noiseless magnitude and APTw signal, for references such as the anatomy's own
            slice-to-slice change. The intensity scale still comes from the subject's noisy images.

    Example:
        >>> s = generate_subject(3, cavity_probability=1.0)
        >>> set(np.unique(s.seg).tolist()) <= {0, 1, 2, 3, 4}
        True
        >>> bool(((s.images["t1n"] != 0) == s.brain).all())
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if noise_seed is not None and (
        isinstance(noise_seed, bool) or not isinstance(noise_seed, int | np.integer) or noise_seed < 0
    ):
        raise ValueError(f"noise_seed must be None or a non-negative integer; got {noise_seed!r}")
    if not isinstance(noise_free, bool | np.bool_):
        raise ValueError(f"noise_free must be True or False; got {noise_free!r}")
    if noise_free and noise_seed is not None:
        raise ValueError("noise_free=True renders no noise: pass noise_seed=None with it")
    res = _check_resolution(resolution)
    if not 0.0 <= float(cavity_probability) <= 1.0:
        raise ValueError(f"cavity_probability must be in [0, 1]; got {cavity_probability}")
    if isinstance(n_lesions, tuple | list):
        if len(n_lesions) != 2 or not 0 <= int(n_lesions[0]) <= int(n_lesions[1]):
            raise ValueError(
                f"n_lesions must be an int >= 0 or a (low, high) range with 0 <= low <= high; got {n_lesions}"
            )
    elif int(n_lesions) < 0:
        raise ValueError(f"n_lesions must be >= 0; got {n_lesions}")
    for name, value in (("lesion_radius_mm", lesion_radius_mm), ("edema_mm", edema_mm), ("snr", snr)):
        _draw_range(np.random.default_rng(0), value, name)  # validates
    for name, value in (("bias", bias), ("deformation_mm", deformation_mm)):
        if not 0.0 <= float(value) < 1e3 or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    if not 0.0 <= float(scaling) < 0.5:
        raise ValueError(f"scaling must be in [0, 0.5); got {scaling}")

    tpl = _template(res)
    rng = np.random.default_rng(int(seed))
    # Another noise realisation: the main stream advances exactly as without it, so everything else is identical.
    noise_rng = None if noise_seed is None else np.random.default_rng([int(seed), int(noise_seed)])
    shape = tpl.mask.shape

    # Anatomy: global scaling and a smooth displacement of the template.
    scale = rng.uniform(1.0 - scaling, 1.0 + scaling, size=3)
    field_ = _SmoothField(rng, shape, spacing=32.0 / res, n=3)
    tf = _Transform(centre=tpl.centre, scale=scale, field=field_, amp=float(deformation_mm) / res)
    anatomy = _warp_anatomy(tpl, tf)
    brain = anatomy[3]
    if not brain.any():  # pragma: no cover - only with absurd deformations
        raise ValueError("the deformed brain is empty; use smaller deformation_mm / scaling")

    # Lesions.
    if isinstance(n_lesions, tuple | list):
        count = int(rng.integers(int(n_lesions[0]), int(n_lesions[1]) + 1))
    else:
        count = int(n_lesions)
    seg, strength, lesion_info = _place_lesions(
        rng, count, tpl, tf, anatomy, res, lesion_radius_mm, edema_mm, float(cavity_probability)
    )
    fractions = _tissue_fractions(anatomy, seg, strength)

    # MR signal: partial volume = fraction-weighted sum of tissue signals, on brain voxels only.
    signals, record = _tissue_signals(rng)
    flat = np.flatnonzero(brain)
    frac = np.stack([fractions[t].ravel()[flat] for t in TISSUES])  # (n_tissues, n_brain)
    texture = 1.0 + 0.03 * np.clip(_SmoothField(rng, shape, 6.0 / res).full()[0].ravel()[flat], -3.0, 3.0)
    bias_field = np.exp(0.5 * float(bias) * _SmoothField(rng, shape, 64.0 / res).full()[0])
    bias_flat = bias_field.ravel()[flat]
    images: dict[str, np.ndarray] = {}
    snrs: dict[str, float] = {}
    gains: dict[str, float] = {}
    for name in PHANTOM_SEQUENCES:
        out = np.zeros(brain.size, dtype=np.float32)
        if name == "aptw":
            true_apt = np.zeros(brain.size, dtype=np.float32)
            true_apt[flat] = signals[name] @ frac
            values = _aptw(true_apt.reshape(shape), brain, res, rng, noise_rng, noise_free=noise_free)
            values[values == 0] = np.float32(1e-3)
        else:
            clean = (signals[name] @ frac) * texture * bias_flat
            snrs[name] = _draw_range(rng, snr, "snr")
            sigma = float(np.median(clean)) / snrs[name]
            noise = rng.standard_normal((2, flat.size), dtype=np.float32) * np.float32(sigma)
            values = np.hypot(clean + noise[0], noise[1])  # Rician magnitude
            # the scale comes from the subject's own noise, so a second noise seed keeps it
            gains[name] = float(rng.uniform(1000.0, 2500.0)) / float(np.percentile(values, 99.0))
            if noise_rng is not None:
                noise = noise_rng.standard_normal((2, flat.size), dtype=np.float32) * np.float32(sigma)
                values = np.hypot(clean + noise[0], noise[1])
            if noise_free:
                values = clean
            values = np.maximum(values * np.float32(gains[name]), np.float32(1e-3))
        out[flat] = values
        images[name] = out.reshape(shape)
    bias_field = np.where(brain, bias_field, 1.0).astype(np.float32)

    parameters = {
        "simulation": True,
        "seed": int(seed),
        "noise_seed": None if noise_seed is None else int(noise_seed),
        **({"noise_free": True} if noise_free else {}),
        "resolution_mm": res,
        "scale": [round(float(s), 4) for s in scale],
        "deformation_mm": float(deformation_mm),
        "lesions": lesion_info,
        "snr": {k: round(v, 2) for k, v in snrs.items()},
        "gain": {k: round(v, 3) for k, v in gains.items()},
        **record,
    }
    return PhantomSubject(
        subject_id=subject_id if subject_id is not None else f"phantom-{int(seed)}",
        images=images,
        seg=seg,
        brain=brain,
        fractions=fractions,
        affine=tpl.affine.copy(),
        bias=bias_field,
        seed=int(seed),
        resolution=res,
        parameters=parameters,
    )


def dataset_subject(index: int, *, seed: int = 0, resolution: float = 2.0, **kwargs: Any) -> PhantomSubject:
    """The ``index``-th subject of the data set made with ``seed`` (what :func:`write_phantom_dataset` writes).

    Example:
        >>> dataset_subject(0).subject_id
        'BraTS-GLI-00000-000'
    """
    return generate_subject(subject_seed(seed, index), resolution=resolution, subject_id=case_id(index), **kwargs)


def _case_files(case_dir: Path) -> list[Path]:
    return [case_dir / f"{case_dir.name}-{name}.nii.gz" for name in _CASE_FILES]


def _is_complete(case_dir: Path) -> bool:
    return all(p.is_file() and p.stat().st_size > 0 for p in _case_files(case_dir))


def write_subject(subject: PhantomSubject, root: str | os.PathLike[str]) -> Path:
    """Write one subject as ``root/<id>/<id>-{t1n,t1c,t2w,t2f,aptw,seg}.nii.gz`` (gzip NIfTI, its affine).

    The case folder appears atomically (written under a hidden temporary name, then renamed), so a complete-looking
    case is always complete. An existing case of the same name is replaced. Returns the case folder.

    Example:
        >>> case = write_subject(generate_subject(0, subject_id="BraTS-GLI-00000-000"), "/tmp/phantom")
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    case = root / subject.subject_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{subject.subject_id}.tmp-", dir=root))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private
        arrays = {**subject.images, "seg": subject.seg.astype(np.uint8)}
        for name in _CASE_FILES:
            img = nib.Nifti1Image(np.asarray(arrays[name]), subject.affine)
            img.header.set_xyzt_units("mm")
            img.set_qform(subject.affine, code=4)  # MNI152 space
            img.set_sform(subject.affine, code=4)
            img.header["descrip"] = b"samraug digital phantom (simulation)"
            nib.save(img, tmp / f"{subject.subject_id}-{name}.nii.gz")
        if case.exists():
            shutil.rmtree(case)
        os.replace(tmp, case)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return case


def _write_case(index: int, seed: int, resolution: float, root: str, kwargs: dict[str, Any]) -> str:
    subject = dataset_subject(index, seed=seed, resolution=resolution, **kwargs)
    return str(write_subject(subject, root))


def write_phantom_dataset(
    root: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    resolution: float = 2.0,
    workers: int = 1,
    progress: bool = False,
    **kwargs: Any,
) -> Path:
    """Write ``n`` simulated subjects in the BraTS 2024 layout (+ ``aptw``) under ``root``; returns ``root``.

    Complete cases already there are skipped (so an interrupted run resumes); ``root/phantom.json`` records the
    generator settings, and writing into a folder made with other settings is refused. Subject ``i`` is
    ``dataset_subject(i, seed=seed, resolution=resolution, **kwargs)``, so a larger ``n`` extends a smaller one.

    Args:
        root: Output folder (created).
        n: Number of subjects (>= 1).
        seed: Data-set seed.
        resolution: 2.0 or 1.0 mm.
        workers: Processes generating subjects in parallel.
        progress: Show a tqdm progress bar.
        **kwargs: Further :func:`generate_subject` arguments (JSON-serialisable), e.g. ``cavity_probability``.

    Example:
        >>> write_phantom_dataset("/tmp/phantom", 4, seed=1)
        PosixPath('/tmp/phantom')
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive number of subjects; got {n!r}")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}")
    res = _check_resolution(resolution)
    case_id(n - 1)  # validates the size
    root = Path(root)
    try:
        settings = json.loads(json.dumps({"seed": int(seed), "resolution_mm": res, "options": dict(kwargs)}))
    except TypeError as err:
        raise ValueError(f"generator options must be JSON-serialisable to be recorded: {kwargs!r}") from err
    meta_path = root / "phantom.json"
    n_before = 0
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        old_settings = {k: old.get(k) for k in settings}
        if old_settings != settings:
            raise ValueError(
                f"{root} holds a phantom data set made with {old_settings}, not {settings}; "
                "write into another folder or delete this one"
            )
        n_before = int(old.get("n", 0))
    elif root.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        raise ValueError(
            f"{root} already holds folders but no phantom.json, so it is not a phantom data set; "
            "write the phantom into an empty or new folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root, prefix=".BraTS-GLI-")  # left by an interrupted write_subject
    _write_metadata(root, settings, max(n, n_before))  # first, so a resumed run into this folder is checked
    todo = [i for i in range(n) if not _is_complete(root / case_id(i))]
    bar = None
    if progress:
        bar = tqdm(total=n, initial=n - len(todo), desc="phantom", unit="subject")
    try:
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                _write_case(i, int(seed), res, str(root), dict(kwargs))
                if bar is not None:
                    bar.update(1)
        else:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(int(workers), len(todo)), mp_context=ctx) as pool:
                futures = [pool.submit(_write_case, i, int(seed), res, str(root), dict(kwargs)) for i in todo]
                for future in as_completed(futures):
                    future.result()
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    n_total = max([n, *(int(p.name.split("-")[2]) + 1 for p in root.glob("BraTS-GLI-*-000") if _is_complete(p))])
    _write_metadata(root, settings, n_total)
    return root


def _write_metadata(root: Path, settings: dict[str, Any], n: int) -> None:
    meta = {
        "description": "samraug digital phantom: SIMULATED MR subjects with glioma-like lesions, not patient data",
        "generator": "samraug.data.phantom",
        "version": _PHANTOM_VERSION,
        **settings,
        "n": n,
        "label_scheme": "brats2024",
        "sequences": list(PHANTOM_SEQUENCES),
        "subjects": {case_id(i): subject_seed(settings["seed"], i) for i in range(n)},
    }
    tmp = root / f".phantom.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, root / "phantom.json")


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("SAMRAUG_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "samraug") / "phantom"


def ensure_phantom_dataset(
    n: int,
    *,
    seed: int = 0,
    resolution: float = 2.0,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """A cached phantom data set of ``n`` subjects: generated once, reused afterwards; returns its folder.

    The folder is ``<cache_dir>/<res>mm-seed<seed>-n<n>``; ``cache_dir`` defaults to ``$SAMRAUG_CACHE/phantom`` or
    ``~/.cache/samraug/phantom``. It is generated in a hidden temporary folder and renamed into place, so an
    interrupted run never leaves a half data set that looks complete (concurrent callers are safe too).

    Example:
        >>> root = ensure_phantom_dataset(4)            # first call writes, later calls return at once
        >>> sorted(p.name for p in root.iterdir())[:1]
        ['BraTS-GLI-00000-000']
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive number of subjects; got {n!r}")
    res = _check_resolution(resolution)
    parent = _cache_root(cache_dir)
    target = parent / f"{res:g}mm-seed{int(seed)}-n{int(n)}"
    if target.exists():
        if not (target / "phantom.json").is_file() or not all(_is_complete(target / case_id(i)) for i in range(n)):
            raise FileExistsError(
                f"{target} exists but is not a complete phantom data set (was it edited by hand?); delete it and "
                "call ensure_phantom_dataset again"
            )
        return target
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(parent, prefix=".tmp-")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private
        write_phantom_dataset(tmp, n, seed=seed, resolution=res, workers=workers, progress=progress)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "phantom.json").is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_stale_temporaries(parent: Path, prefix: str, max_age_s: float = 6 * 3600.0) -> None:
    now = time.time()
    for path in parent.glob(f"{prefix}*"):
        try:
            if ".tmp-" in path.name and path.is_dir() and now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------- montage
_LABEL_COLOURS = {1: ("NETC", "#e41a1c"), 2: ("SNFH", "#4daf4a"), 3: ("ET", "#ffd92f"), 4: ("RC", "#377eb8")}
_TITLES = {"t1n": "T1w", "t1c": "Gd-T1w", "t2w": "T2w", "t2f": "FLAIR", "aptw": "APTw (%)"}


def montage(
    subject: PhantomSubject,
    path: str | os.PathLike[str],
    *,
    z: int | None = None,
    sequences: Iterable[str] | None = None,
) -> Path:
    """Save a PNG of one axial slice (through the lesion by default): each sequence, then the labels in colour.

    Example:
        >>> montage(generate_subject(0), "/tmp/phantom.png")
        PosixPath('/tmp/phantom.png')
    """
    # matplotlib is optional (samraug[demo]): only the montage needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = tuple(sequences) if sequences is not None else tuple(subject.images)
    missing = [s for s in names if s not in subject.images]
    if missing:
        raise ValueError(f"subject has no sequences {missing}; available: {sorted(subject.images)}")
    z = subject.lesion_slice() if z is None else int(z)
    if not 0 <= z < subject.shape[2]:
        raise ValueError(f"slice z={z} is outside the volume (0..{subject.shape[2] - 1})")
    brain2d = subject.brain[:, :, z]
    if brain2d.any():
        idx = np.argwhere(brain2d)
        lo, hi = np.maximum(idx.min(0) - 3, 0), np.minimum(idx.max(0) + 4, brain2d.shape)
    else:
        lo, hi = np.zeros(2, int), np.array(brain2d.shape)
    crop = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))

    def view(a: np.ndarray) -> np.ndarray:  # (X, Y) -> rows = anterior up, columns = x (neurological view)
        return a[:, :, z][crop].T

    fig = Figure(figsize=(2.6 * (len(names) + 1), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names) + 1)
    for ax, name in zip(axes[:-1], names, strict=True):
        img = view(subject.images[name])
        inside = img[view(subject.brain)]
        if name == "aptw":
            shown = ax.imshow(
                np.ma.masked_where(~view(subject.brain), img), cmap="magma", origin="lower", vmin=-1.0, vmax=5.0
            )
            ax.set_facecolor("black")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        else:
            vmax = float(np.percentile(inside, 99.5)) if inside.size else 1.0
            ax.imshow(img, cmap="gray", origin="lower", vmin=0.0, vmax=vmax)
        ax.set_title(_TITLES.get(name, name))
    ax = axes[-1]
    base = view(subject.images[names[0]]) if names else view(subject.brain.astype(np.float32))
    ax.imshow(base, cmap="gray", origin="lower")
    seg = view(subject.seg)
    colours = ListedColormap([_LABEL_COLOURS[v][1] for v in sorted(_LABEL_COLOURS)])
    ax.imshow(
        np.ma.masked_where(seg == 0, seg),
        cmap=colours,
        vmin=0.5,
        vmax=4.5,
        origin="lower",
        interpolation="nearest",
        alpha=0.85,
    )
    ax.set_title("labels (BraTS 2024)")
    ax.legend(
        handles=[Patch(color=c, label=n) for n, c in _LABEL_COLOURS.values()],
        loc="lower right",
        fontsize=6,
        framealpha=0.6,
    )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"samraug digital phantom (SIMULATION) - {subject.subject_id}, axial z={z}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
