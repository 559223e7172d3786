"""Hypothesis property tests of paint_local on random grids: any voxel size (0.8-4 mm, anisotropic), any orientation
(random rotations and axis flips of the voxel -> world affine, so the model grid is oblique to the subject's), every
healthy fill, seam, noise and region option. Whatever the draw:

- every voxel outside the region (``edit_region`` of the real and the edited label map, within the brain or a lesion)
  is bit-identical to the input, and a sequence the weights do not paint is returned as it came;
- a skipped subject comes back unchanged, with its reason; a painted one keeps shapes and dtypes, all finite, and
  its region changed;
- the same call again gives the same voxels and the same record (history replay).

The model is the contract-shaped random-initialised stand-in of ``test_local_synthesis``.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_local_synthesis import SCHEME, SEQS, make_synth, subject

from samraug.local_synthesis import paint_local
from samraug.region import edit_region
from samraug.seam import HEALTHY_MODES, SEAM_MODES

SPACINGS = (0.8, 1.0, 1.5, 2.0, 3.0, 4.0)
EXTENT_MM = 80.0  # the subject's field of view along each axis (its shape follows from the voxel size)


def _rotation(angles: tuple[float, float, float]) -> np.ndarray:
    """The rotation by ``angles`` (radians) about x, then y, then z."""
    out = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


@st.composite
def cases(draw):
    spacing = tuple(draw(st.sampled_from(SPACINGS)) for _ in range(3))
    shape = tuple(max(12, round(EXTENT_MM / s)) for s in spacing)
    shift = tuple(draw(st.integers(-3, 3)) for _ in range(3))
    oblique = draw(st.booleans())
    angles = tuple(draw(st.floats(-np.pi, np.pi)) if oblique else 0.0 for _ in range(3))
    flips = tuple(draw(st.sampled_from((-1.0, 1.0))) for _ in range(3))
    origin = tuple(draw(st.floats(-100, 100)) for _ in range(3))
    options = {
        "healthy": draw(st.sampled_from(HEALTHY_MODES)),
        "seam": draw(st.sampled_from(SEAM_MODES)),
        "noise": draw(st.sampled_from(("match", "none"))),
        "region": draw(st.sampled_from(("lesions", "changed"))),
        "margin_mm": draw(st.sampled_from((0.0, 2.0, 8.0))),
    }
    model_voxel = tuple(draw(st.sampled_from((1.0, 2.0))) for _ in range(3))
    return spacing, shape, shift, angles, flips, origin, options, model_voxel


@settings(max_examples=12)
@given(case=cases())
def test_paint_local_on_random_grids_keeps_its_invariants(case):
    spacing, shape, shift, angles, flips, origin, options, model_voxel = case
    images, seg, edited, brain, _ = subject(shape, spacing, shift=shift)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(angles) @ np.diag(flips) @ np.diag(spacing)
    affine[:3, 3] = origin
    synth = make_synth(voxel_size=model_voxel)

    new, record = paint_local(images, seg, edited, brain, affine, SCHEME, synth, **options)
    again, record_again = paint_local(images, seg, edited, brain, affine, SCHEME, synth, **options)
    event("skipped" if record["skipped"] else "painted")
    assert record == record_again
    assert new["aptw"] is images["aptw"]  # not a sequence of the weights
    region = edit_region(
        seg,
        edited,
        lesion_values=SCHEME.lesion_values,
        spacing=spacing,
        margin_mm=options["margin_mm"],
        seed=options["region"],
    ) & (brain | (seg > 0) | (edited > 0))
    assert record["region_voxels"] == int(region.sum())
    outside = torch.from_numpy(~region)
    for name in SEQS:
        assert torch.equal(new[name], again[name])
        assert new[name].shape == images[name].shape and new[name].dtype == images[name].dtype
        assert torch.equal(new[name][outside], images[name][outside])
        if record["skipped"] is not None:
            assert torch.equal(new[name], images[name])
        else:
            assert bool(torch.isfinite(new[name]).all())
    if record["skipped"] is None:
        assert any(not torch.equal(new[name], images[name]) for name in SEQS)  # something was painted
