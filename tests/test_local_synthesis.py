"""paint_local: outside-region voxels bit-identical, any grid, replay exact, skip reasons, clear errors.

The local model here is a small real nn.Module implementing the local-model contract (random init, fixed seed), plus
two analytic ones (a constant painter and a lesion painter) whose outputs are known, to check the geometry.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from samraug.intensity import DEFAULT_NORMALIZATION, IntensityStats
from samraug.labels import get_scheme
from samraug.local_synthesis import paint_local
from samraug.synthesis import Synthesizer

SEQS = ("t1n", "t1c", "t2w", "t2f")
SCHEME = get_scheme("brats2024")
K = len(SCHEME.classes("native"))  # 6


class TinyLocal(nn.Module):
    """Contract-shaped local model: two convs over [mask, context]."""

    def __init__(self, n_labels: int = K, context_slices: int = 1, size_multiple: int = 4, mode: str = "conv"):
        super().__init__()
        self.n_labels, self.sequences = n_labels, SEQS
        self.context_slices, self.size_multiple, self.use_atlas, self.mode = context_slices, size_multiple, False, mode
        n = 2 * context_slices + 1
        self.net = nn.Sequential(
            nn.Conv2d(n * (n_labels + len(SEQS) + 1), 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, len(SEQS), 3, padding=1)
        )

    def forward(self, mask: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h, w = mask.shape[-2:]
        assert h % self.size_multiple == 0 and w % self.size_multiple == 0
        if self.mode == "const":  # 0.5 everywhere -> low + 0.75 (high - low) in the subject's scale
            return torch.full((mask.shape[0], len(SEQS), h, w), 0.5)
        if self.mode == "lesion":  # +1 on the central slice's lesion classes, -1 elsewhere
            k, c = self.n_labels, self.context_slices
            lesion = mask[:, c * k + 2 : (c + 1) * k].sum(1, keepdim=True)
            return (2 * lesion - 1).expand(-1, len(SEQS), -1, -1)
        return torch.tanh(self.net(torch.cat([mask, context], 1)))


def make_synth(
    mode: str = "conv",
    voxel_size=(2.0, 2.0, 2.0),
    weights_mode: str = "local",
    crop_size=(32, 32),
    normalization: dict | None = None,
    **extra,
) -> Synthesizer:
    torch.manual_seed(0)
    model = TinyLocal(mode=mode)
    cfg = {
        "mode": weights_mode,
        "conditioning": "native",
        "label_scheme": "brats2024",
        "sequences": list(SEQS),
        "voxel_size": list(voxel_size),
        "context_slices": 1,
        "crop_size": list(crop_size),
        "use_atlas": False,
    }
    if normalization is not None:
        cfg["normalization"] = normalization
    cfg.update(extra)
    return Synthesizer.from_model(model, None, cfg, device="cpu", dtype="float32")


def ball(shape, centre, radius_mm, spacing):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    return sum((g - c * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True)) <= radius_mm**2


def subject(shape=(40, 44, 36), spacing=(2.0, 2.0, 2.0), dtype=torch.float32, shift=(6, 0, 0)):
    """A box brain, smooth images, a 3-class lesion; the edit moves the lesion by ``shift`` voxels."""
    rng = np.random.default_rng(0)
    brain = np.zeros(shape, bool)
    lo = [max(2, n // 8) for n in shape]
    brain[lo[0] : shape[0] - lo[0], lo[1] : shape[1] - lo[1], lo[2] : shape[2] - lo[2]] = True
    centre = np.array(shape) // 2 - np.array(shift) // 2
    seg = np.zeros(shape, np.uint8)
    seg[ball(shape, centre, 10.0, spacing) & brain] = 2
    seg[ball(shape, centre, 6.0, spacing) & brain] = 1
    seg[ball(shape, centre, 3.0, spacing) & brain] = 3
    edited = np.zeros_like(seg)
    dst = tuple(slice(max(0, s), n + min(0, s)) for s, n in zip(shift, shape, strict=True))
    src = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, shape, strict=True))
    edited[dst] = seg[src]
    edited[~brain] = 0
    images = {}
    for i, name in enumerate((*SEQS, "aptw")):
        base = 500.0 + 300.0 * i + 50.0 * rng.standard_normal(shape)
        v = np.where(brain, base + 200.0 * (seg > 0), 0.0)
        images[name] = torch.from_numpy(v).to(dtype)
    affine = np.diag([*spacing, 1.0])
    return images, seg, edited, brain, affine


def region_of(new, images):
    return {k: (new[k] != images[k]) for k in images}


def test_outside_region_bit_identical_shapes_dtypes_kept():
    images, seg, edited, brain, affine = subject()
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, make_synth())
    assert rec["skipped"] is None and rec["painted_slices"] > 0
    assert set(new) == set(images)
    assert new["aptw"] is images["aptw"]  # not a weights sequence: untouched
    from samraug.region import edit_region

    region = edit_region(seg, edited, lesion_values=SCHEME.lesion_values, spacing=(2.0, 2.0, 2.0), margin_mm=8.0)
    region &= brain | (seg > 0)
    assert rec["region_voxels"] == int(region.sum())
    for name in SEQS:
        assert new[name].shape == images[name].shape and new[name].dtype == images[name].dtype
        out = torch.from_numpy(~region)
        assert torch.equal(new[name][out], images[name][out])
        assert bool((new[name][torch.from_numpy(region)] != images[name][torch.from_numpy(region)]).any())


@pytest.mark.parametrize("dtype", [torch.int16, torch.float64])
def test_integer_and_double_images_keep_dtype(dtype):
    images, seg, edited, brain, affine = subject(dtype=dtype)
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, make_synth())
    assert rec["skipped"] is None
    for name in SEQS:
        assert new[name].dtype == dtype
        changed = new[name] != images[name]
        assert bool(changed.any())


@pytest.mark.parametrize("crop", [(32, 32), (48, 40)])
def test_model_sees_at_least_its_training_crop(crop):
    """A small region is painted on a model grid no smaller in-plane than the weights' training crop (instance
    normalisation and the receptive field were fitted to crops of that size)."""
    images, seg, edited, brain, affine = subject(shift=(0, 0, 0))
    synth = make_synth(crop_size=crop)
    seen = []
    model = synth.model
    model.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape[-2:])))
    _, rec = paint_local(images, seg, edited, brain, affine, SCHEME, synth, margin_mm=0.0, context_mm=2.0)
    assert rec["skipped"] is None and seen
    for part in rec["parts"]:
        assert part["model_grid"][0] >= crop[0] and part["model_grid"][1] >= crop[1]
    assert all(h >= crop[0] and w >= crop[1] for h, w in seen)


def test_replay_is_voxel_exact():
    images, seg, edited, brain, affine = subject()
    synth = make_synth()
    a, ra = paint_local(images, seg, edited, brain, affine, SCHEME, synth)
    b, rb = paint_local(images, seg, edited, brain, affine, SCHEME, synth)
    assert ra == rb
    for name in SEQS:
        assert torch.equal(a[name], b[name])


GRIDS = {
    "2mm": ((40, 44, 36), (2.0, 2.0, 2.0)),
    "1mm": ((72, 76, 64), (1.0, 1.0, 1.0)),
    "1x1x3mm": ((72, 76, 24), (1.0, 1.0, 3.0)),
    "3mm": ((30, 32, 28), (3.0, 3.0, 3.0)),
}


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_const_model_paints_its_value_deep_inside_on_any_grid(grid):
    shape, spacing = GRIDS[grid]
    images, seg, edited, brain, affine = subject(shape, spacing, shift=(round(12 / spacing[0]), 0, 0))
    new, rec = paint_local(
        images, seg, edited, brain, affine, SCHEME, make_synth("const"), feather_mm=2.0, noise="none", seam="none"
    )
    assert rec["skipped"] is None, rec
    from samraug.region import edit_region, feather_weights

    region = edit_region(seg, edited, lesion_values=SCHEME.lesion_values, spacing=spacing) & (brain | (seg > 0))
    deep = feather_weights(region, spacing, 2.0 + 2 * max(spacing)) == 1.0
    assert deep.sum() > 50
    for name in SEQS:
        v = images[name].numpy()[brain]
        lo, hi = np.percentile(v.astype(np.float64), [0.5, 99.5])
        expected = IntensityStats(lo, hi).low + 0.75 * (hi - lo)
        np.testing.assert_allclose(new[name].numpy()[deep], expected, rtol=1e-4)
        assert torch.equal(new[name][torch.from_numpy(~region)], images[name][torch.from_numpy(~region)])


def test_const_model_paints_with_the_weights_normalisation_of_the_normal_brain():
    """Weights that record the default normalisation: the subject's stats leave its real lesion out (p0.5 / p99.5
    of the normal-appearing brain -> -0.8 / -0.2), so the constant 0.5 lands at 2.2 normal ranges above p0.5."""
    shape, spacing = GRIDS["2mm"]
    images, seg, edited, brain, affine = subject(shape, spacing, shift=(round(12 / spacing[0]), 0, 0))
    synth = make_synth("const", normalization=dict(DEFAULT_NORMALIZATION))
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, synth, feather_mm=2.0, noise="none", seam="none")
    assert rec["skipped"] is None, rec
    from samraug.region import edit_region, feather_weights

    region = edit_region(seg, edited, lesion_values=SCHEME.lesion_values, spacing=spacing) & (brain | (seg > 0))
    deep = feather_weights(region, spacing, 2.0 + 2 * max(spacing)) == 1.0
    normal = brain & (seg == 0)
    for name in SEQS:
        lo, hi = np.percentile(images[name].numpy()[normal].astype(np.float64), [0.5, 99.5])
        expected = lo + (0.5 + 0.8) / 0.6 * (hi - lo)
        np.testing.assert_allclose(new[name].numpy()[deep], expected, rtol=1e-4)


def _flip(arr, axes):
    return np.flip(arr, axes).copy()


@pytest.mark.parametrize("grid", ["2mm", "1x1x3mm"])
def test_lesion_model_follows_the_edit_on_flipped_and_lps_grids(grid):
    """The lesion painter paints high exactly where the new lesion is, whatever the orientation: a subject stored
    LPS (x and y flipped, affine adjusted) gives the same painted world, voxel for voxel after flipping back."""
    shape, spacing = GRIDS[grid]
    images, seg, edited, brain, affine = subject(shape, spacing, shift=(round(12 / spacing[0]), 0, 0))
    synth = make_synth("lesion", voxel_size=(2.0, 2.0, 2.0))
    ras, rec = paint_local(images, seg, edited, brain, affine, SCHEME, synth, feather_mm=0.0, noise="none")
    assert rec["skipped"] is None
    from scipy import ndimage

    core_new = ndimage.binary_erosion(edited > 0, iterations=2)
    healed = ndimage.binary_erosion((seg > 0) & (edited == 0), iterations=2)
    assert core_new.sum() > 10 and healed.sum() > 10
    for name in SEQS:
        v = ras[name].numpy()
        assert v[core_new].min() > v[healed].max()

    axes = (0, 1)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = (shape[0] - 1), (shape[1] - 1)  # index map of the flip
    lps_affine = affine @ flip
    lps_images = {k: torch.from_numpy(_flip(v.numpy(), axes)) for k, v in images.items()}
    lps, rec2 = paint_local(
        lps_images,
        _flip(seg, axes),
        _flip(edited, axes),
        _flip(brain, axes),
        lps_affine,
        SCHEME,
        synth,
        feather_mm=0.0,
        noise="none",
    )
    assert rec2["skipped"] is None and rec2["region_voxels"] == rec["region_voxels"]
    for name in SEQS:
        np.testing.assert_allclose(_flip(lps[name].numpy(), axes), ras[name].numpy(), rtol=1e-5, atol=1e-3)


def test_cropped_patch_skips_when_region_reaches_its_edge():
    images, seg, edited, brain, affine = subject()
    crop = (slice(10, 30), slice(0, 44), slice(0, 36))  # cuts through the lesion
    img_c = {k: v[crop].clone() for k, v in images.items()}
    new, rec = paint_local(img_c, seg[crop], edited[crop], brain[crop], affine, SCHEME, make_synth())
    assert "edge" in rec["skipped"]
    assert all(new[k] is img_c[k] for k in img_c)


def test_cropped_patch_with_room_is_painted():
    images, seg, edited, brain, affine = subject((48, 48, 40))
    crop = (slice(2, 46), slice(3, 46), slice(2, 39))
    from samraug.grid import crop_affine

    aff_c = crop_affine(affine, (2, 3, 2))
    img_c = {k: v[crop].clone() for k, v in images.items()}
    new, rec = paint_local(img_c, seg[crop], edited[crop], brain[crop], aff_c, SCHEME, make_synth())
    assert rec["skipped"] is None
    full, _ = paint_local(images, seg, edited, brain, affine, SCHEME, make_synth())
    changed_crop = torch.stack([new[k] != img_c[k] for k in SEQS])
    changed_full = torch.stack([full[k][crop] != images[k][crop] for k in SEQS])
    assert torch.equal(changed_crop, changed_full)  # same region, wherever the patch starts


def test_skip_reasons_empty_and_too_large():
    images, seg, _, brain, affine = subject()
    empty = np.zeros_like(seg)
    new, rec = paint_local(images, empty, empty, brain, affine, SCHEME, make_synth())
    assert rec["skipped"].startswith("empty region")
    assert all(new[k] is images[k] for k in images)
    _, seg, edited, _, _ = subject()
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, make_synth(), max_region_mm=20.0)
    assert "max_region_mm" in rec["skipped"]


def test_other_scheme_is_translated_and_unknown_refused():
    images, seg, edited, brain, affine = subject()
    synth = make_synth()
    ref, _ = paint_local(images, seg, edited, brain, affine, SCHEME, synth)
    to21 = np.array([0, 1, 2, 4, 0], np.uint8)  # brats2024 -> brats2021 (no cavity in this subject)
    out, rec = paint_local(images, to21[seg], to21[edited], brain, affine, get_scheme("brats2021"), synth)
    assert rec["skipped"] is None
    for name in SEQS:
        assert torch.equal(out[name], ref[name])
    from samraug.labels import LabelScheme

    mine = LabelScheme.custom("mine", {0: "bg", 1: "a", 2: "b", 3: "c"}, {1: "tumor", 2: "edema", 3: "tumor"})
    with pytest.raises(ValueError, match="mapping"):
        paint_local(images, seg, edited, brain, affine, mine, synth)


def test_clear_errors():
    images, seg, edited, brain, affine = subject()
    synth = make_synth()
    with pytest.raises(ValueError, match=r"lack the sequences \['t2f'\]"):
        paint_local({k: v for k, v in images.items() if k != "t2f"}, seg, edited, brain, affine, SCHEME, synth)
    bad = dict(images)
    bad["t1c"] = images["t1c"].clone()
    bad["t1c"][3, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"images\['t1c'\] contains NaN"):
        paint_local(bad, seg, edited, brain, affine, SCHEME, synth)
    with pytest.raises(ValueError, match="label_after has labels"):
        paint_local(images, seg, np.where(edited == 1, 7, edited), brain, affine, SCHEME, synth)
    with pytest.raises(ValueError, match="shape"):
        paint_local(images, seg[:-1], edited[:-1], brain[:-1], affine, SCHEME, synth)
    with pytest.raises(ValueError, match=r"images\['t1n'\] has shape"):
        paint_local({**images, "t1n": images["t1n"][:-1]}, seg, edited, brain, affine, SCHEME, synth)
    outside = edited.copy()
    outside[0, 0, 0] = 2
    with pytest.raises(ValueError, match="outside the brain"):
        paint_local(images, seg, outside, brain, affine, SCHEME, synth)
    with pytest.raises(ValueError, match="singular"):
        paint_local(images, seg, edited, brain, np.diag([2.0, 0.0, 2.0, 1.0]), SCHEME, synth)
    with pytest.raises(ValueError, match="local-mode weights"):
        paint_local(images, seg, edited, brain, affine, SCHEME, make_synth(weights_mode="whole"))
    with pytest.raises(ValueError, match="margin_mm"):
        paint_local(images, seg, edited, brain, affine, SCHEME, synth, margin_mm=-1)


def _contract_inputs(  # independent reference of the contract
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


def test_contract_inputs_layout():
    """Slice-major channels, clamped edges, region blanked in the images and appended as a mask."""
    b, d, h, w, s, c = 2, 5, 4, 4, 3, 2
    g = torch.Generator().manual_seed(0)
    classes = torch.randint(0, K, (b, d, h, w), generator=g)
    images = torch.rand(b, s, d, h, w, generator=g) * 2 - 1
    region = (torch.rand(b, d, h, w, generator=g) > 0.5).float()
    mask, ctx = _contract_inputs(classes, images, region, K, c)
    assert mask.shape == (b * d, K * (2 * c + 1), h, w) and ctx.shape == (b * d, (s + 1) * (2 * c + 1), h, w)
    for bi in range(b):
        for z in range(d):
            for j in range(2 * c + 1):
                zz = min(max(z + j - c, 0), d - 1)
                onehot = torch.nn.functional.one_hot(classes[bi, zz], K).permute(2, 0, 1).float()
                assert torch.equal(mask[bi * d + z, j * K : (j + 1) * K], onehot)
                block = ctx[bi * d + z, j * (s + 1) : (j + 1) * (s + 1)]
                assert torch.equal(block[:s], images[bi, :, zz] * (1 - region[bi, zz]))
                assert torch.equal(block[s], region[bi, zz])


@pytest.mark.slow
def test_brats_native_grid_240x240x155():
    shape = (240, 240, 155)
    images, seg, edited, brain, affine = subject(shape, (1.0, 1.0, 1.0), shift=(12, 0, 0))
    affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # BraTS LPS-style
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, make_synth())
    assert rec["skipped"] is None
    from samraug.region import edit_region

    region = edit_region(seg, edited, lesion_values=SCHEME.lesion_values, spacing=(1.0, 1.0, 1.0)) & (brain | (seg > 0))
    for name in SEQS:
        assert torch.equal(new[name][torch.from_numpy(~region)], images[name][torch.from_numpy(~region)])


def test_separate_parts_are_painted_separately_and_all_or_nothing():
    """A lesion moved far away gives two region parts, each cropped on its own; if one part cannot be painted
    (too close to the edge) nothing is."""
    images, seg, _, brain, affine = subject((64, 44, 36))
    edited = np.zeros_like(seg)
    edited[46:50, 20:24, 16:20] = 2  # the lesion removed, a small new one far from it
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, make_synth())
    assert rec["skipped"] is None and len(rec["parts"]) == 2
    assert rec["painted_slices"] == sum(p["painted_slices"] for p in rec["parts"])
    from samraug.region import edit_region

    region = edit_region(seg, edited, lesion_values=SCHEME.lesion_values, spacing=(2.0, 2.0, 2.0)) & (brain | (seg > 0))
    for name in SEQS:
        assert torch.equal(new[name][torch.from_numpy(~region)], images[name][torch.from_numpy(~region)])
    # the new lesion's part ends 8 voxels (16 mm) from the image edge, the old one's 20 voxels (40 mm) away
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, make_synth(), min_context_mm=20.0)
    assert "edge" in rec["skipped"] and all(new[k] is images[k] for k in images)


def test_non_contiguous_images_are_fine():
    images, seg, edited, brain, affine = subject()
    ref, _ = paint_local(images, seg, edited, brain, affine, SCHEME, make_synth())
    # the same volumes held transposed in memory (e.g. after a permute): values and layout-independent result
    strided = {k: v.permute(2, 1, 0).contiguous().permute(2, 1, 0) for k, v in images.items()}
    assert not strided["t1n"].is_contiguous()
    out, _ = paint_local(strided, seg, edited, brain, affine, SCHEME, make_synth())
    for name in SEQS:
        assert torch.equal(out[name], ref[name])


def test_model_package_builder_matches_the_contract():
    """Once samraug.models.local exists, paint_local builds inputs through its build_local_inputs: it must give
    the contract's layout (same as the reference implementation here), for all slices or the central ones."""
    from samraug.models import local

    b, d, h, w, s, c = 1, 6, 8, 8, 4, 1
    g = torch.Generator().manual_seed(1)
    classes = torch.randint(0, K, (b, d, h, w), generator=g)
    images = torch.rand(b, s, d, h, w, generator=g) * 2 - 1
    region = (torch.rand(b, d, h, w, generator=g) > 0.5).float()
    mask, ctx = local.build_local_inputs(classes, images, region, K, c)
    ref_mask, ref_ctx = _contract_inputs(classes, images, region, K, c)
    if mask.shape[0] != ref_mask.shape[0]:  # central slices only
        ref_mask, ref_ctx = ref_mask[c : d - c], ref_ctx[c : d - c]
    assert torch.equal(mask.float(), ref_mask) and torch.equal(ctx.float(), ref_ctx)


def test_paint_local_slices_batches_and_checks_shapes():
    synth = make_synth()
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(5, 3 * K, 8, 12, generator=g)
    ctx = torch.rand(5, 3 * (len(SEQS) + 1), 8, 12, generator=g)
    out = synth.paint_local_slices(mask, ctx, batch_size=2)
    assert out.shape == (5, len(SEQS), 8, 12) and out.dtype == torch.float32
    with torch.no_grad():
        direct = synth.model(mask, ctx)
    assert torch.allclose(out, direct, atol=1e-6)
    with pytest.raises(ValueError, match=r"mask must be \(B, 18, H, W\)"):
        synth.paint_local_slices(mask[:, :5], ctx)
    with pytest.raises(ValueError, match="multiples of 4"):
        synth.paint_local_slices(mask[..., :7], ctx[..., :7])
    bad = ctx.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="context contains"):
        synth.paint_local_slices(mask, bad)


def test_harmonic_context_fill_is_what_the_model_sees():
    """Weights recording context_fill='harmonic' see each slice's region filled from the tissue around it (smooth
    images: close to the real values there); default weights see 0; an unknown fill is refused."""
    images, seg, edited, brain, affine = subject(shift=(6, 0, 0))
    smooth = {k: torch.full_like(v, 700.0) * torch.from_numpy(brain) for k, v in images.items()}
    seen = {}
    for fill in ("zero", "harmonic"):
        synth = make_synth(context_fill=fill)
        synth.model.register_forward_hook(lambda m, args, out, f=fill: seen.update({f: args[1].clone()}))
        _, rec = paint_local(smooth, seg, edited, brain, affine, SCHEME, synth, noise="none", seam="none")
        assert rec["skipped"] is None
    n = len(SEQS) + 1
    for fill, context in seen.items():
        centre = context[:, n : 2 * n]  # c = 1: the painted slice's sequences, then its region
        region = centre[:, -1] > 0
        values = centre[:, :-1].permute(1, 0, 2, 3)[:, region]
        if fill == "zero":
            assert (values == 0).all()
        else:  # the normalised brain level of a constant image, filled in
            outside = centre[:, :-1].permute(1, 0, 2, 3)[:, ~region & (centre[:, 0] != -1)]
            assert float((values - outside.mean()).abs().max()) < 0.05
    with pytest.raises(ValueError, match="context_fill"):
        paint_local(images, seg, edited, brain, affine, SCHEME, make_synth(context_fill="mean"))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("conditioning", ["native", "samr"])
def test_encoding_on_the_model_grid_equals_resampling_the_encoded_subject(seed, conditioning):
    """paint_local encodes the labels after resampling them to the model grid: nearest-neighbour resampling and the
    voxel-wise encoding commute, also at ties (axis-aligned grids with half-voxel origins, odd seeds) and for grid
    points outside the subject (background)."""
    from samraug.grid import ras_grid, resample, world_corners

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(8, 20, size=3))
    aff = np.eye(4)
    if seed % 2:
        aff[:3, :3] = np.diag(rng.choice([-1.0, 1.0], 3) * rng.choice([1.0, 2.0], 3))
        aff[:3, 3] = rng.integers(-20, 20, 3) + 0.5
    else:
        c, s = np.cos(rng.uniform(0, 2 * np.pi)), np.sin(rng.uniform(0, 2 * np.pi))
        aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag(rng.uniform(0.7, 2.5, 3))
        aff[:3, 3] = rng.uniform(-20, 20, 3)
    labels = rng.choice(np.array(SCHEME.values), size=shape)
    brain = rng.random(shape) < 0.7
    corners = world_corners(shape, aff)
    lo = corners.min(0) + rng.uniform(-5, 10, 3)
    grid_shape, grid_aff = ras_grid(lo, lo + rng.uniform(2, 15, 3), (2.0, 2.0, 2.0))
    brain_m = resample(brain, aff, grid_shape, grid_aff, order=0)
    on_grid = SCHEME.encode(resample(labels, aff, grid_shape, grid_aff, order=0), brain_m, conditioning)
    whole = resample(SCHEME.encode(labels, brain, conditioning), aff, grid_shape, grid_aff, order=0)
    np.testing.assert_array_equal(on_grid, whole)


@pytest.mark.parametrize("healthy", ["harmonic", "spline"])
@pytest.mark.parametrize("grid", ["2mm", "1x1x3mm"])
@pytest.mark.parametrize("seam", ["none", "poisson"])
def test_classical_healthy_fill_continues_the_tissue_and_leaves_the_lesion_to_the_model(grid, seam, healthy):
    """healthy="harmonic" / "spline": where the lesion was moved away, the region is the classical fill of the brain
    around it -- exact for images linear in world space (discrete Laplacian 0, gradient constant), whatever the real
    lesion inside -- while the new lesion is still what the model paints (a constant here) and the outside stays
    bit-identical."""
    shape, spacing = GRIDS[grid]
    images, seg, edited, brain, affine = subject(shape, spacing, shift=(round(12 / spacing[0]), 0, 0))
    world = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    linear = {}
    for i, name in enumerate((*SEQS, "aptw")):
        ramp = 1000.0 + 100.0 * i + 5.0 * world[0] - 3.0 * world[1] + 2.0 * world[2]
        linear[name] = ramp
        images[name] = torch.from_numpy(np.where(brain, ramp + 400.0 * (seg > 0), 0.0))  # a bright real lesion
    synth = make_synth("const")
    kw = dict(feather_mm=0.0, noise="none", seam=seam)
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, synth, healthy=healthy, **kw)
    model, _ = paint_local(images, seg, edited, brain, affine, SCHEME, synth, **kw)
    assert rec["skipped"] is None and rec["healthy"] == healthy
    assert sum(p["healthy_voxels"] for p in rec["parts"]) > 0
    from scipy import ndimage

    from samraug.region import edit_region

    region = edit_region(seg, edited, lesion_values=SCHEME.lesion_values, spacing=spacing) & (brain | (seg > 0))
    healed = ndimage.binary_erosion((seg > 0) & (edited == 0), iterations=2)
    core_new = ndimage.binary_erosion(edited > 0, iterations=2)
    assert healed.sum() > 10 and core_new.sum() > 10
    for name in SEQS:
        v = new[name].numpy()
        span = np.ptp(linear[name][brain])
        np.testing.assert_allclose(v[healed], linear[name][healed], atol=2e-3 * span)
        if seam == "none":  # (the seam correction of a constant painting is itself the harmonic fill)
            assert np.abs(model[name].numpy()[healed] - linear[name][healed]).max() > 0.05 * span
        np.testing.assert_array_equal(v[core_new], model[name].numpy()[core_new])  # lesion: the model's painting
        out = torch.from_numpy(~region)
        assert torch.equal(new[name][out], images[name][out])


def _mirrored_tissue_case(grid: str, tilt: float = 0.0):
    """A box brain whose tissue is mirror-symmetric about its centre plane (structure a smooth fill cannot guess) but
    for a left-right ramp of ``tilt`` per mm (a bias field the mirror's guide gets backwards), with a lesion moved
    14 mm along y: ``(spacing, brain, seg, edited, tissue, images, affine, cx)``."""
    shape, spacing = GRIDS[grid]
    world = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    brain = np.zeros(shape, bool)
    lo = [max(2, n // 10) for n in shape]
    brain[lo[0] : shape[0] - lo[0], lo[1] : shape[1] - lo[1], lo[2] : shape[2] - lo[2]] = True
    cx = (shape[0] - 1) / 2 * spacing[0]
    centre = np.array([round(shape[0] * 0.3), shape[1] // 2 - round(6 / spacing[1]), shape[2] // 2])
    seg = np.zeros(shape, np.uint8)
    seg[ball(shape, centre, 8.0, spacing) & brain] = 2
    seg[ball(shape, centre, 4.0, spacing) & brain] = 1
    edited = np.zeros_like(seg)
    step = round(14 / spacing[1])
    edited[:, step:] = seg[:, :-step]
    tissue = {}
    images = {}
    for i, name in enumerate((*SEQS, "aptw")):
        t = 800.0 + 100.0 * i + 150.0 * np.cos(2 * np.pi * np.abs(world[0] - cx) / 16.0) + 3.0 * world[1]
        t = t + 80.0 * np.sin(2 * np.pi * world[2] / 20.0 + i) + tilt * (world[0] - cx)
        tissue[name] = t
        images[name] = torch.from_numpy(np.where(brain, t + 400.0 * (seg > 0), 0.0))
    affine = np.diag([*spacing, 1.0])
    return spacing, brain, seg, edited, tissue, images, affine, cx


@pytest.mark.parametrize("grid", ["2mm", "1x1x3mm"])
def test_mirror_fill_carries_the_other_hemispheres_structure(grid):
    """healthy="mirror": a lesion moved away from a brain whose tissue is mirror-symmetric (structure a smooth fill
    cannot guess) is healed with the structure of the other hemisphere -- several times closer to the truth than the
    spline fill -- the plane is the brain's centroid, the new lesion is still the model's and the outside stays
    bit-identical."""
    spacing, brain, seg, edited, tissue, images, affine, cx = _mirrored_tissue_case(grid)
    synth = make_synth("const")
    kw = dict(feather_mm=0.0, noise="none")
    mirror, rec = paint_local(images, seg, edited, brain, affine, SCHEME, synth, healthy="mirror", **kw)
    spline, _ = paint_local(images, seg, edited, brain, affine, SCHEME, synth, healthy="spline", **kw)
    assert rec["skipped"] is None and rec["healthy"] == "mirror"
    assert rec["mirror_plane_x"] == pytest.approx(cx, abs=1e-6)
    assert all(p["mirror"]["guided"] for p in rec["parts"] if p["healthy_voxels"])
    healed = ndimage.binary_erosion((seg > 0) & (edited == 0), iterations=1)
    core_new = ndimage.binary_erosion(edited > 0, iterations=2)
    assert healed.sum() > 10 and core_new.sum() > 0
    from samraug.region import edit_region

    region = edit_region(seg, edited, lesion_values=SCHEME.lesion_values, spacing=spacing) & (brain | (seg > 0))
    for name in SEQS:
        err_m = np.abs(mirror[name].numpy()[healed] - tissue[name][healed]).mean()
        err_s = np.abs(spline[name].numpy()[healed] - tissue[name][healed]).mean()
        assert err_m < 0.3 * err_s, (name, err_m, err_s)
        np.testing.assert_array_equal(mirror[name].numpy()[core_new], spline[name].numpy()[core_new])
        out = torch.from_numpy(~region)
        assert torch.equal(mirror[name][out], images[name][out])


def test_mirror_fill_heals_a_healthy_pocket_inside_the_new_lesion():
    """A few normal-brain voxels enclosed by the new lesion (as an edit's nearest-neighbour rotation leaves) are
    healed like the rest: the fill reaches them through the lesion around them, whose voxels stay the model's
    painting. The tissue's left-right ramp makes the mirrored guide alone wrong by ~100 there: the spline's
    correction must reach the pocket too."""
    _, brain, seg, edited, tissue, images, affine, _ = _mirrored_tissue_case("2mm", tilt=3.0)
    lesion = np.argwhere(edited == 1)
    pocket = tuple(np.round(lesion.mean(axis=0)).astype(int))  # the middle of the new tumour core
    edited[pocket] = 0
    around = ndimage.binary_dilation(np.pad([[[True]]], 2), iterations=2)  # voxels within 2 face steps
    box = tuple(slice(c - 2, c + 3) for c in pocket)
    assert (edited[box][around] > 0).sum() == around.sum() - 1  # enclosed by the lesion, 2 voxels deep
    synth = make_synth("const")
    kw = dict(feather_mm=0.0, noise="none")
    mirror, rec = paint_local(images, seg, edited, brain, affine, SCHEME, synth, healthy="mirror", **kw)
    model, _ = paint_local(images, seg, edited, brain, affine, SCHEME, synth, **kw)
    assert rec["skipped"] is None
    healed = ndimage.binary_erosion((seg > 0) & (edited == 0), iterations=1)
    core_new = ndimage.binary_erosion(edited > 0, iterations=2)
    for name in SEQS:
        span = np.ptp(tissue[name][brain])
        err_healed = np.abs(mirror[name].numpy()[healed] - tissue[name][healed]).max()
        assert abs(float(mirror[name][pocket]) - tissue[name][pocket]) < max(2 * err_healed, 0.05 * span), name
        np.testing.assert_array_equal(mirror[name].numpy()[core_new], model[name].numpy()[core_new])


def test_healthy_mode_is_checked():
    images, seg, edited, brain, affine = subject()
    with pytest.raises(ValueError, match="healthy must be one of"):
        paint_local(images, seg, edited, brain, affine, SCHEME, make_synth(), healthy="mean")


def test_changed_region_keeps_the_real_lesion_beside_an_inserted_one():
    """region="changed" (an insertion: the real lesion kept, a copy added far from it): only the changed voxels,
    dilated, are repainted -- the real lesion and everything beyond the margin of the new one stay bit-identical;
    the default region repaints the real lesion too."""
    from samraug.region import dilate_mm

    images, seg, _, brain, affine = subject(shape=(72, 44, 36), shift=(0, 0, 0))
    lesion = np.argwhere(seg > 0)
    seg = np.roll(seg, -16, axis=0)  # the real lesion, left of centre
    edited = seg.copy()
    moved = np.roll(seg, 32, axis=0)  # an inserted copy, 64 mm to its right
    edited[moved > 0] = moved[moved > 0]
    assert len(lesion) and np.array_equal(edited[seg > 0], seg[seg > 0])
    synth = make_synth()
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, synth, region="changed")
    assert rec["skipped"] is None and rec["region"] == "changed"
    region = dilate_mm(seg != edited, (2.0, 2.0, 2.0), 8.0) & (brain | (seg > 0) | (edited > 0))
    assert rec["region_voxels"] == int(region.sum()) and not region[seg > 0].any()
    for name in SEQS:
        keep = torch.from_numpy(~region)
        assert torch.equal(new[name][keep], images[name][keep])
        assert bool((new[name][torch.from_numpy(region)] != images[name][torch.from_numpy(region)]).any())
    full, rec_full = paint_local(images, seg, edited, brain, affine, SCHEME, synth)
    assert rec_full["region"] == "lesions" and rec_full["region_voxels"] > rec["region_voxels"]
    real = torch.from_numpy(seg > 0)
    assert bool((full["t1n"][real] != images["t1n"][real]).any())
    # nothing changed: nothing to repaint in the "changed" region, the reason says so
    same, rec_same = paint_local(images, seg, seg, brain, affine, SCHEME, synth, region="changed")
    assert rec_same["skipped"] == "empty region: no label change"
    assert all(same[k] is images[k] or torch.equal(same[k], images[k]) for k in images)
    with pytest.raises(ValueError, match="region must be one of"):
        paint_local(images, seg, edited, brain, affine, SCHEME, synth, region="lesion")


@pytest.mark.parametrize("healthy", ["harmonic", "spline", "mirror"])
def test_a_part_with_no_lesion_is_healed_without_the_model(healthy):
    """A removed lesion healed by a classical fill: the model is never run (nothing of its painting would be kept),
    the part's record says so, the result is the fill (exact for images linear in world space) and the outside stays
    bit-identical; with healthy="model" the same removal is painted by the model."""
    shape, spacing = (40, 44, 36), (2.0, 2.0, 2.0)
    images, seg, _, brain, affine = subject(shape, spacing)
    world = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    linear = {}
    for i, name in enumerate((*SEQS, "aptw")):
        linear[name] = 1000.0 + 100.0 * i + 5.0 * world[0] - 3.0 * world[1] + 2.0 * world[2]
        images[name] = torch.from_numpy(np.where(brain, linear[name] + 400.0 * (seg > 0), 0.0))
    removed = np.zeros_like(seg)
    synth = make_synth("const")
    calls = []
    paint = synth.paint_local_slices
    synth.paint_local_slices = lambda *a, **k: calls.append(1) or paint(*a, **k)
    kw = dict(feather_mm=0.0, noise="none")
    new, rec = paint_local(images, seg, removed, brain, affine, SCHEME, synth, healthy=healthy, **kw)
    assert rec["skipped"] is None and calls == [] and rec["painted_slices"] == 0
    assert all(p["painted_slices"] == 0 and p["seam_offset"] is None for p in rec["parts"])
    from scipy import ndimage

    from samraug.region import edit_region

    region = edit_region(seg, removed, lesion_values=SCHEME.lesion_values, spacing=spacing) & (brain | (seg > 0))
    healed = ndimage.binary_erosion(seg > 0, iterations=2)
    assert healed.sum() > 10
    for name in SEQS:
        span = np.ptp(linear[name][brain])
        np.testing.assert_allclose(new[name].numpy()[healed], linear[name][healed], atol=2e-3 * span)
        out = torch.from_numpy(~region)
        assert torch.equal(new[name][out], images[name][out])
    _, rec = paint_local(images, seg, removed, brain, affine, SCHEME, synth, **kw)
    assert calls and rec["painted_slices"] > 0


@pytest.mark.parametrize("healthy", ["harmonic", "spline", "mirror"])
def test_healthy_fill_runs_beside_the_model_with_more_than_one_thread(healthy, monkeypatch):
    """With more than one torch thread allowed, the classical fill of the healthy voxels runs in a worker thread beside
    the seam correction (neither reads the other's result): the painting and its record are bit-identical to the
    serial run's (one thread allowed: the fill runs in this thread, after the correction)."""
    import threading

    import samraug.local_synthesis as local_synthesis

    _, brain, seg, edited, _, images, affine, _ = _mirrored_tissue_case("2mm")
    synth = make_synth()
    fill_name = {"harmonic": "harmonic_fill", "spline": "spline_fill", "mirror": "mirror_guided_fill"}[healthy]
    fill = getattr(local_synthesis, fill_name)
    threads: list[str] = []

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return fill(*args, **kwargs)

    monkeypatch.setattr(local_synthesis, fill_name, spy)
    runs = {}
    for allowed in (1, 2):  # the decision only: torch's own thread count (and so the model's bits) is left as it is
        monkeypatch.setattr(local_synthesis.torch, "get_num_threads", lambda allowed=allowed: allowed)
        runs[allowed] = paint_local(images, seg, edited, brain, affine, SCHEME, synth, healthy=healthy)
    assert len(threads) == 2 and threads[0] == threading.current_thread().name
    assert threads[1].startswith("samraug-heal")
    (serial, rec_serial), (parallel, rec_parallel) = runs[1], runs[2]
    assert rec_parallel == rec_serial and rec_parallel["painted_slices"] > 0
    assert sum(p["healthy_voxels"] for p in rec_parallel["parts"]) > 0
    for name in images:
        assert torch.equal(parallel[name], serial[name]), name


def test_an_error_in_the_fill_beside_the_model_is_raised(monkeypatch):
    """An exception in the worker thread's fill reaches the caller (after the seam correction has finished)."""
    import samraug.local_synthesis as local_synthesis

    _, brain, seg, edited, _, images, affine, _ = _mirrored_tissue_case("2mm")

    def broken(*args, **kwargs):
        raise RuntimeError("the fill broke")

    monkeypatch.setattr(local_synthesis, "spline_fill", broken)
    monkeypatch.setattr(local_synthesis.torch, "get_num_threads", lambda: 2)
    with pytest.raises(RuntimeError, match="the fill broke"):
        paint_local(images, seg, edited, brain, affine, SCHEME, make_synth(), healthy="spline")


@pytest.mark.parametrize("healthy", ["harmonic", "spline", "mirror"])
def test_healthy_voxels_the_fill_cannot_reach_are_painted_by_the_model(healthy):
    """A brain mask that ends at the region (here: the lesions' neighbourhood only) leaves the classical fill no healthy
    brain around the region to continue (it would paint those voxels a flat 0 of the normalised scale): they keep the
    model's painting, exactly what healthy="model" paints there, and the part's record counts them."""
    images, seg, edited, brain, affine = subject()
    brain = ndimage.binary_dilation((seg > 0) | (edited > 0), iterations=2) & brain
    synth = make_synth()
    kw = dict(feather_mm=0.0, noise="none")
    new, rec = paint_local(images, seg, edited, brain, affine, SCHEME, synth, healthy=healthy, **kw)
    model, rec_model = paint_local(images, seg, edited, brain, affine, SCHEME, synth, **kw)
    assert rec["skipped"] is None and rec_model["region_voxels"] == rec["region_voxels"]
    (part,) = rec["parts"]
    assert part["unreached_voxels"] > 0 and part["healthy_voxels"] == 0 and part["painted_slices"] > 0
    assert rec_model["parts"][0]["unreached_voxels"] == 0
    for name in images:
        assert torch.equal(new[name], model[name]), name


def test_a_healthy_part_the_fill_cannot_reach_is_still_painted():
    """A lesion removed where the brain mask ends at the region: nothing for the fill to continue and no lesion to
    paint, yet the part is not left as it was (the removed lesion would stay): the model paints it."""
    images, seg, _, brain, affine = subject()
    brain = ndimage.binary_dilation(seg > 0, iterations=2) & brain
    removed = np.zeros_like(seg)
    synth = make_synth()
    kw = dict(feather_mm=0.0, noise="none")
    new, rec = paint_local(images, seg, removed, brain, affine, SCHEME, synth, healthy="spline", **kw)
    model, _ = paint_local(images, seg, removed, brain, affine, SCHEME, synth, **kw)
    (part,) = rec["parts"]
    assert part["unreached_voxels"] > 0 and part["painted_slices"] > 0
    for name in images:
        assert torch.equal(new[name], model[name]), name
