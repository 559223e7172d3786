"""LesionEditor: geometric correctness, sub-labels, donors, retries, reproducibility, records and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samraug.editing import EditPolicy, LesionEditor, check_valid, donor_of, donors_of
from samraug.editing.geometry import rotation_matrix, smooth_field
from samraug.labels import get_scheme

# brats2021: 1 NCR, 2 ED, 4 ET; brats2024: 1 NETC, 2 SNFH, 3 ET, 4 RC


def ball(shape, center, radius) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    return sum((grid[i] - center[i]) ** 2 for i in range(len(shape))) <= radius**2


def ellipsoid(shape, center, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    return sum(((grid[i] - center[i]) / radii[i]) ** 2 for i in range(len(shape))) <= 1.0


def glioma(shape, center, rt, shell, brain, *, et=4, ncr=1, ed=2, dtype=np.uint8) -> np.ndarray:
    """brats2021-style lesion: ET ball of radius rt with an NCR core, edema shell of width ``shell``."""
    label = np.zeros(shape, dtype=dtype)
    label[ball(shape, center, rt + shell) & brain] = ed
    label[ball(shape, center, rt) & brain] = et
    label[ball(shape, center, rt / 2) & brain] = ncr
    return label


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.array([i.mean() for i in np.nonzero(mask)])


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def case(request):
    """A brain symmetric about x = 31 (2D 64x64, 3D 64x48x40) and an off-midline glioma."""
    if request.param == 2:
        shape, bc, radii, lc, rt, shell = (64, 64), (31, 30), (24, 26), (20, 26), 6, 3
    else:
        shape, bc, radii, lc, rt, shell = (64, 48, 40), (31, 23, 19), (24, 20, 16), (20, 22, 18), 4.5, 2.5
    brain = ellipsoid(shape, bc, radii)
    return glioma(shape, lc, rt, shell, brain), brain


def samr_lesion(label: np.ndarray, brain: np.ndarray, scheme: str = "brats2021") -> np.ndarray:
    return get_scheme(scheme).to_samr(np.asarray(label), brain) >= 2


# ---------------------------------------------------------------------------------------------- geometry
def test_mirror_twice_restores_the_lesion_on_a_symmetric_brain(case) -> None:
    label, brain = case
    editor = LesionEditor("brats2021")
    once = editor.mirror(label, brain)
    assert once.record == {"op": "mirror", "axis": 0, "plane": 31.0, "applied": True, "reason": None}
    assert not np.array_equal(once.label, label)
    # the mirror image: x -> 62 - x, sub-labels (ET, NCR, ED) moved together
    np.testing.assert_array_equal(once.label[:-1], label[::-1][1:])
    twice = editor.mirror(once.label, brain)
    np.testing.assert_array_equal(twice.label, label)


def test_mirror_plane_comes_from_the_brain_not_the_array_centre() -> None:
    shape = (80, 48)
    brain = ellipsoid(shape, (30, 24), (18, 20))  # brain centred at x = 30, array centre 39.5
    label = glioma(shape, (20, 24), 4, 2, brain)
    res = LesionEditor("brats2021").mirror(label, brain)
    assert res.record["plane"] == 30.0
    before, after = centroid(label == 4), centroid(res.label == 4)
    assert after[0] == pytest.approx(60 - before[0]) and after[1] == pytest.approx(before[1])


@pytest.mark.parametrize("factor", [2.0, 0.5, 1.5])
def test_scale_changes_tumour_volume_by_the_factor(case, factor: float) -> None:
    label, brain = case
    res = LesionEditor("brats2021").scale(label, brain, factor=factor)
    assert res.record["applied"]
    tumour_in = np.isin(label, (1, 4)).sum()
    tumour_out = np.isin(res.label, (1, 4)).sum()
    assert tumour_out / tumour_in == pytest.approx(factor, rel=0.15)
    # edema follows with the same geometry, and ET / NCR sub-labels survive
    assert (res.label == 2).sum() / (label == 2).sum() == pytest.approx(factor, rel=0.3)
    assert (res.label == 1).sum() > 0 and (res.label == 4).sum() > 0
    # scaled about the tumour centroid
    np.testing.assert_allclose(centroid(np.isin(res.label, (1, 4))), centroid(np.isin(label, (1, 4))), atol=0.6)


def test_scale_by_one_and_rotate_by_zero_are_identities(case) -> None:
    label, brain = case
    editor = LesionEditor("brats2021")
    np.testing.assert_array_equal(editor.scale(label, brain, factor=1.0).label, label)
    np.testing.assert_array_equal(editor.rotate(label, brain, angles=0.0).label, label)
    if label.ndim == 3:
        np.testing.assert_array_equal(editor.rotate(label, brain, angles=[0.0, 0.0, 0.0]).label, label)


def test_move_shifts_the_centroid_by_the_displacement_and_keeps_sub_labels(case) -> None:
    label, brain = case
    shift = [6, -3] if label.ndim == 2 else [6, -3, 2]
    res = LesionEditor("brats2021").move(label, brain, shift=shift)
    assert res.record == {"op": "move", "shift": shift, "applied": True, "reason": None}
    lesion_in, lesion_out = samr_lesion(label, brain), samr_lesion(res.label, brain)
    np.testing.assert_allclose(centroid(lesion_out) - centroid(lesion_in), shift, atol=1e-9)
    # every sub-label moved exactly: ET stays ET, NCR stays NCR, shifted
    np.testing.assert_array_equal(np.roll(label, shift, axis=tuple(range(label.ndim))), res.label)


def test_subvoxel_move_shifts_the_centroid_approximately(case) -> None:
    label, brain = case
    shift = [2.5, -1.5] if label.ndim == 2 else [2.5, -1.5, 0.5]
    res = LesionEditor("brats2021").move(label, brain, shift=shift)
    assert res.record["applied"]
    d = centroid(samr_lesion(res.label, brain)) - centroid(samr_lesion(label, brain))
    np.testing.assert_allclose(d, shift, atol=0.5)
    assert (res.label == 4).any() and (res.label == 1).any()


def test_rotate_by_90_degrees_matches_rot90() -> None:
    shape = (49, 49)
    brain = ball(shape, (24, 24), 22)
    label = np.zeros(shape, np.uint8)
    label[ellipsoid(shape, (24, 24), (9, 5))] = 2
    label[ellipsoid(shape, (24, 24), (5, 2))] = 4  # tumour centroid exactly (24, 24)
    res = LesionEditor("brats2021").rotate(label, brain, angles=90.0)
    np.testing.assert_array_equal(res.label, np.rot90(label))


def test_rotation_matrix_is_orthonormal_and_composes_axes() -> None:
    r = rotation_matrix([10.0, 20.0, 30.0], 3)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rotation_matrix([0.0, 0.0, 90.0], 3) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rotation_matrix([90.0], 2) @ [1, 0], [0, 1], atol=1e-12)


def test_perturb_is_smooth_bounded_and_seeded(case) -> None:
    label, brain = case
    editor = LesionEditor("brats2021")
    a = editor.perturb(label, brain, strength=3.0, seed=7)
    b = editor.perturb(label, brain, strength=3.0, seed=7)
    c = editor.perturb(label, brain, strength=3.0, seed=8)
    assert a.record == {"op": "perturb", "strength": 3.0, "smoothness": 8.0, "seed": 7, "applied": True, "reason": None}
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label) and not np.array_equal(a.label, label)
    lesion_in, lesion_out = samr_lesion(label, brain), samr_lesion(a.label, brain)
    assert lesion_out.sum() / lesion_in.sum() == pytest.approx(1.0, abs=0.35)
    assert np.linalg.norm(centroid(lesion_out) - centroid(lesion_in)) <= 3.0
    np.testing.assert_array_equal(editor.perturb(label, brain, strength=0.0, seed=1).label, label)


def test_smooth_field_largest_displacement_is_the_strength() -> None:
    field = smooth_field((30, 20), spacing=6.0, strength=2.5, seed=3)
    norms = np.sqrt((field**2).sum(0))
    assert field.shape == (2, 30, 20) and norms.max() == pytest.approx(2.5)
    assert np.abs(np.diff(field, axis=1)).max() < 1.0  # smooth: neighbours move alike
    np.testing.assert_array_equal(field, smooth_field((30, 20), spacing=6.0, strength=2.5, seed=3))


def test_remove_gives_a_healthy_map() -> None:
    shape = (32, 32)
    brain = ball(shape, (16, 16), 14)
    label = glioma(shape, (14, 16), 4, 2, brain)
    res = LesionEditor("brats2021").remove(label, brain)
    assert res.record == {"op": "remove", "applied": True, "reason": None}
    assert not res.label.any()
    samr = get_scheme("samr").from_samr(get_scheme("brats2021").to_samr(label, brain))
    out = LesionEditor("samr").remove(samr).label  # the brain is read from the labels
    np.testing.assert_array_equal(out, brain.astype(np.int64))  # vacated -> normal brain (1)


# ---------------------------------------------------------------------------------------------- donors
def test_swap_at_donor_reproduces_the_donor_lesion(case) -> None:
    label, brain = case
    center = (38, 34) if label.ndim == 2 else (40, 26, 20)
    donor = glioma(label.shape, center, 5, 2, brain, dtype=np.int64)
    donor[tuple(c + 1 for c in center)] = 1  # an odd sub-label pattern that must survive
    res = LesionEditor("brats2021").swap(label, brain, donor, brain, at="donor", donor=3)
    assert res.record == {"op": "swap", "donor": 3, "at": "donor", "center": None, "applied": True, "reason": None}
    np.testing.assert_array_equal(res.label, donor.astype(np.uint8))  # recipient lesion vacated, donor's in place


def test_swap_at_donor_clips_the_donor_lesion_to_the_recipient_brain() -> None:
    shape = (40, 40)
    brain = ball(shape, (20, 20), 15)
    donor_brain = ball(shape, (20, 20), 19)
    donor = glioma(shape, (20, 31), 3, 2, donor_brain)  # edema reaches beyond the recipient brain
    label = glioma(shape, (16, 16), 3, 2, brain)
    res = LesionEditor("brats2021", min_fragment=1).swap(label, brain, donor, donor_brain)
    assert res.record["applied"]
    np.testing.assert_array_equal(res.label, np.where(brain, donor, 0))
    assert check_valid(res.label, brain, "brats2021", original=label, reference=donor) == []


def test_swap_at_random_center_places_the_donor_tumour_centroid() -> None:
    shape = (48, 48)
    brain = ball(shape, (24, 24), 20)
    donor = glioma(shape, (14, 30), 4, 2, brain)
    label = glioma(shape, (30, 20), 3, 2, brain)
    res = LesionEditor("brats2021").swap(label, brain, donor, at="random", center=[26, 22])
    assert res.record["applied"] and res.record["center"] == [26, 22]
    np.testing.assert_allclose(centroid(np.isin(res.label, (1, 4))), [26, 22], atol=1e-9)
    np.testing.assert_array_equal(res.label, np.roll(donor, (12, -8), axis=(0, 1)))  # the donor's shape


def test_swap_on_another_grid_needs_random_placement() -> None:
    brain = ball((32, 32), (16, 16), 14)
    donor = glioma((40, 40), (20, 20), 3, 2, ball((40, 40), (20, 20), 18))
    label = glioma((32, 32), (12, 16), 3, 2, brain)
    editor = LesionEditor("brats2021")
    with pytest.raises(ValueError, match="recipient's grid"):
        editor.swap(label, brain, donor)
    res = editor.swap(label, brain, donor, at="random", generator=torch.Generator().manual_seed(0))
    assert res.record["applied"] and check_valid(res.label, brain, "brats2021", original=label, reference=donor) == []


# ---------------------------------------------------------------------------------------------- validity paths
def test_exhausted_retries_return_the_unedited_mask_with_a_reason() -> None:
    shape = (24, 24)
    brain = ball(shape, (12, 12), 6)
    label = glioma(shape, (12, 12), 2, 1, brain)
    big_donor = glioma(shape, (12, 12), 8, 3, np.ones(shape, bool))  # cannot fit in this brain
    editor = LesionEditor("brats2021", max_retries=4, min_fragment=2)
    res = editor.swap(label, brain, big_donor, at="random", generator=torch.Generator().manual_seed(0))
    assert res.record["applied"] is False and res.record["attempts"] == 4
    assert "no valid placement in 4 attempts" in res.record["reason"]
    np.testing.assert_array_equal(res.label, label)
    policy = EditPolicy(  # always far too big for this brain
        p_remove=0, p_swap=0, p_mirror=0, p_scale=1, p_rotate=0, p_perturb=0, p_move=1, scale_range=(20.0, 30.0)
    )
    editor = LesionEditor("brats2021", max_retries=3, min_fragment=2, policy=policy)
    res = editor.random_edit(label, brain, generator=torch.Generator().manual_seed(0))
    assert res.record["applied"] is False and res.record["attempts"] == 3
    assert res.record["reason"].startswith("no valid edit in 3 attempt(s)")
    np.testing.assert_array_equal(res.label, label)
    assert editor.replay(label, brain, res.record).label.tolist() == label.tolist()


def test_an_edit_that_leaves_the_brain_is_rejected() -> None:
    shape = (32, 32)
    brain = ball(shape, (16, 16), 12)
    label = glioma(shape, (16, 16), 3, 2, brain)
    res = LesionEditor("brats2021").move(label, brain, shift=[14, 0])
    assert res.record["applied"] is False and "outside the brain" in res.record["reason"]
    np.testing.assert_array_equal(res.label, label)
    res = LesionEditor("brats2021", max_clip=0.9).move(label, brain, shift=[8, 0])  # clipped, still valid
    assert res.record["applied"] and not (samr_lesion(res.label, brain) & ~brain).any()
    assert check_valid(res.label, brain, "brats2021", original=label) == []


def test_small_fragments_are_dropped() -> None:
    shape = (40, 40)
    brain = ball(shape, (20, 20), 18)
    label = glioma(shape, (15, 20), 4, 2, brain)
    label[28, 20] = 2  # a 1-voxel fragment
    res = LesionEditor("brats2021", min_fragment=5).move(label, brain, shift=[3, 0])
    expected = np.roll(glioma(shape, (15, 20), 4, 2, brain), 3, axis=0)
    np.testing.assert_array_equal(res.label, expected)


def test_lesion_spilling_over_the_brain_mask_counts_as_brain() -> None:
    shape = (40, 40)
    brain = ball(shape, (20, 20), 12)
    label = glioma(shape, (20, 30), 3, 2, np.ones(shape, bool))  # partly outside the brain mask
    editor = LesionEditor("brats2021", max_clip=0.5)
    res = editor.mirror(label, brain)
    assert res.record["applied"]
    assert check_valid(res.label, brain, "brats2021", original=label) == []


def test_tumour_without_edema_neighbour_is_rejected_by_check_valid() -> None:
    shape = (20, 20)
    brain = np.ones(shape, bool)
    label = glioma(shape, (8, 10), 3, 2, brain)
    bad = label.copy()
    bad[label == 2] = 0  # the edema is gone
    assert any("lost its edema" in p for p in check_valid(bad, brain, "brats2021", original=label))
    two = label.copy()
    two[15:18, 15:18] = 4  # a second tumour component with no edema
    assert any("no edema around it" in p for p in check_valid(two, brain, "brats2021", original=label))


def test_check_valid_reports_each_broken_rule() -> None:
    shape = (20, 20)
    brain = ball(shape, (10, 10), 7)
    label = glioma(shape, (10, 10), 2, 1, brain)
    ok = check_valid(label, brain, "brats2021", original=label, min_fragment=50)
    assert ok == []  # an unedited map is valid even below min_fragment
    out = label.copy()
    out[0, 0] = 2
    assert "lesion voxels lie outside the brain" in check_valid(out, brain, "brats2021", original=label)[0]
    out = label.copy()
    out[0, 0] = 5
    assert "not in scheme" in check_valid(out, brain, "brats2021")[0]
    samr = get_scheme("samr").from_samr(get_scheme("brats2021").to_samr(label, brain))
    out = samr.copy()
    out[0, 0] = 1  # normal brain outside the brain
    assert any("outside the brain changed" in p for p in check_valid(out, None, "samr", original=samr))
    out = samr.copy()
    out[samr == 2] = 0  # vacated edema becomes background instead of normal brain
    assert any("not normal brain" in p for p in check_valid(out, None, "samr", original=samr))
    out = samr.copy()
    out[np.argwhere(samr == 1)[0][0], np.argwhere(samr == 1)[0][1]] = 0  # a normal-brain voxel set to background
    problems = check_valid(out, brain, "samr", original=samr)
    assert any("labelled background" in p for p in problems)
    assert any("lesion in neither map changed value" in p for p in problems)
    out = label.copy()
    out[3, 10] = 2
    assert any(
        "fragments smaller than min_fragment=2" in p for p in check_valid(out, brain, "brats2021", min_fragment=2)
    )


# ---------------------------------------------------------------------------------------------- policy, seeds, records
def donors_for(brain: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    shape = brain.shape
    return [
        (glioma(shape, (38, 30) if len(shape) == 2 else (40, 24, 18), 4, 2, brain), brain),
        (glioma(shape, (26, 36) if len(shape) == 2 else (26, 28, 22), 3, 3, brain), brain),
    ]


def test_seeds_reproduce_and_differ(case) -> None:
    label, brain = case
    donors = donors_for(brain)
    editor = LesionEditor("brats2021", policy=EditPolicy(p_remove=0.0, p_swap=0.3, p_scale=0.8, p_move=0.8))
    runs = [
        editor.random_edit(label, brain, donors=donors, generator=torch.Generator().manual_seed(s)) for s in range(6)
    ]
    again = editor.random_edit(label, brain, donors=donors, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(again.label, runs[3].label)
    assert again.record == runs[3].record
    assert len({r.label.tobytes() for r in runs}) >= 4
    torch.manual_seed(5)  # generator=None uses torch's global RNG (seeded per DataLoader worker)
    a = editor.random_edit(label, brain, donors=donors)
    torch.manual_seed(5)
    b = editor.random_edit(label, brain, donors=donors)
    np.testing.assert_array_equal(a.label, b.label)


def test_random_edit_record_replays_exactly_through_json(case) -> None:
    label, brain = case
    donors = donors_for(brain)
    policy = EditPolicy(p_remove=0.0, p_swap=0.5, p_mirror=0.5, p_scale=1.0, p_rotate=1.0, p_perturb=1.0, p_move=1.0)
    editor = LesionEditor("brats2021", policy=policy)
    applied = 0
    for seed in range(4):
        res = editor.random_edit(label, brain, donors=donors, generator=torch.Generator().manual_seed(seed))
        record = json.loads(json.dumps(res.record))
        assert record["op"] == "random" and {"scale", "rotate", "perturb", "move"} <= set(record["drawn"])
        assert record["factor"] is not None and record["perturb"]["seed"] >= 0 and len(record["shift"]) == label.ndim
        applied += record["applied"]
        np.testing.assert_array_equal(editor.replay(label, brain, record, donors=donors).label, res.label)
        assert (
            check_valid(
                res.label,
                brain,
                "brats2021",
                original=label,
                reference=None if not record["swap"] else donors[record["swap"]["donor"]][0],
                min_fragment=editor.min_fragment,
            )
            == []
        )
    assert applied >= 3


def test_random_edit_remove_and_nothing_drawn() -> None:
    shape = (32, 32)
    brain = ball(shape, (16, 16), 13)
    label = glioma(shape, (14, 16), 3, 2, brain)
    remover = LesionEditor("brats2021", policy=EditPolicy(p_remove=1.0))
    res = remover.random_edit(label, brain, generator=torch.Generator().manual_seed(0))
    assert res.record["drawn"] == ["remove"] and res.record["applied"] and not res.label.any()
    np.testing.assert_array_equal(remover.replay(label, brain, res.record).label, res.label)
    idle = LesionEditor("brats2021", policy=EditPolicy(*(0.0,) * 7))
    res = idle.random_edit(label, brain, generator=torch.Generator().manual_seed(0))
    assert res.record == {"op": "random", "drawn": [], "applied": False, "reason": "no operation was drawn"}


def test_random_swap_into_a_healthy_map() -> None:
    shape = (40, 40)
    brain = ball(shape, (20, 20), 17)
    healthy = np.zeros(shape, np.uint8)
    donor = glioma(shape, (14, 20), 4, 2, brain)
    editor = LesionEditor(
        "brats2021",
        policy=EditPolicy(
            p_swap=1.0, p_mirror=0, p_scale=0, p_rotate=0, p_perturb=0, p_move=0, p_remove=0, swap_at=("donor",)
        ),
    )
    res = editor.random_edit(healthy, brain, donors=[healthy, donor], generator=torch.Generator().manual_seed(0))
    assert res.record["applied"] and res.record["swap"] == {"donor": 1, "at": "donor", "center": None}
    assert res.record["attempts"] >= 1 and donor_of(res.record) == 1
    np.testing.assert_array_equal(res.label, donor)
    direct = editor.swap(healthy, brain, donor, donor=5)
    assert donor_of(direct.record) == 5 and donor_of(editor.mirror(donor, brain).record) is None


def test_torch_in_torch_out_same_values_as_numpy(case) -> None:
    label, brain = case
    editor = LesionEditor("brats2021")
    t = torch.from_numpy(label.astype(np.int64))
    out = editor.scale(t, torch.from_numpy(brain), factor=1.7)
    assert isinstance(out.label, torch.Tensor) and out.label.dtype == torch.int64
    np.testing.assert_array_equal(out.label.numpy(), editor.scale(label, brain, factor=1.7).label)
    f = editor.mirror(label.astype(np.float32), brain)
    assert f.label.dtype == np.float32 and np.array_equal(f.label, editor.mirror(label, brain).label)


def test_brats2024_cavity_and_sub_labels_travel_together() -> None:
    shape = (48, 48)
    brain = ball(shape, (24, 24), 20)
    label = np.zeros(shape, np.uint8)
    label[ball(shape, (16, 20), 7) & brain] = 2  # SNFH
    label[ball(shape, (16, 20), 4)] = 3  # ET
    label[ball(shape, (16, 20), 2)] = 1  # NETC
    label[ball(shape, (13, 20), 1.5)] = 4  # RC
    res = LesionEditor("brats2024", min_fragment=3).move(label, brain, shift=[10, 4])
    np.testing.assert_array_equal(res.label, np.roll(label, (10, 4), axis=(0, 1)))
    grown = LesionEditor("brats2024", min_fragment=3).scale(label, brain, factor=2.0).label
    assert set(np.unique(grown)) == {0, 1, 2, 3, 4}


# ---------------------------------------------------------------------------------------------- errors
def test_input_errors_are_clear() -> None:
    shape = (16, 16)
    brain = ball(shape, (8, 8), 6)
    label = glioma(shape, (8, 8), 2, 1, brain)
    editor = LesionEditor("brats2021")
    bad = label.copy()
    bad[8, 8] = 3
    with pytest.raises(ValueError, match=r"labels \{3\} not in scheme 'brats2021'"):
        editor.mirror(bad, brain)
    with pytest.raises(ValueError, match="does not encode normal brain: pass brain="):
        editor.mirror(label)
    with pytest.raises(ValueError, match="does not match label map shape"):
        editor.mirror(label, brain[:-1])
    with pytest.raises(ValueError, match="NaN"):
        editor.mirror(np.where(label == 4, np.nan, label.astype(np.float32)), brain)
    with pytest.raises(ValueError, match="brain mask is empty"):
        editor.mirror(label, np.zeros(shape, bool))
    with pytest.raises(ValueError, match="boolean or 0/1"):
        editor.mirror(label, brain * 3)
    with pytest.raises(ValueError, match="2D"):
        editor.mirror(label[None, None], brain[None, None])
    with pytest.raises(ValueError, match="dtype bool"):
        editor.mirror(label > 0, brain)
    with pytest.raises(ValueError, match="must be > 0"):
        editor.scale(label, brain, factor=0.0)
    with pytest.raises(ValueError, match="one number per axis"):
        editor.move(label, brain, shift=[1, 2, 3])
    with pytest.raises(ValueError, match="'donor'"):
        editor.swap(label, brain, label, at="elsewhere")
    with pytest.raises(ValueError, match="same kind"):
        editor.swap(label, brain, label[None], at="random")
    with pytest.raises(ValueError, match="brain mask disagrees"):
        samr = get_scheme("samr").from_samr(get_scheme("brats2021").to_samr(label, brain))
        LesionEditor("samr").mirror(samr, np.ones(shape, bool))
    with pytest.raises(ValueError, match="unknown label scheme"):
        LesionEditor("brats2099")
    with pytest.raises(ValueError, match="min_fragment"):
        LesionEditor("brats2021", min_fragment=0)


def test_replay_errors_are_clear() -> None:
    shape = (32, 32)
    brain = ball(shape, (16, 16), 13)
    label = glioma(shape, (14, 16), 3, 2, brain)
    editor = LesionEditor("brats2021")
    with pytest.raises(ValueError, match="record dict"):
        editor.replay(label, brain, None)
    with pytest.raises(ValueError, match="unknown operation"):
        editor.replay(label, brain, {"op": "teleport", "applied": True})
    res = editor.swap(label, brain, glioma(shape, (18, 16), 3, 2, brain))
    with pytest.raises(ValueError, match="donor index"):
        editor.replay(label, brain, res.record)  # a direct swap without donor= stores no index
    res = editor.move(label, brain, shift=[3, 0])
    with pytest.raises(ValueError, match="does not apply now"):
        editor.replay(np.zeros_like(label), brain, res.record)


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="p_move"):
        EditPolicy(p_move=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        EditPolicy(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="swap_at"):
        EditPolicy(swap_at=("nowhere",))
    with pytest.raises(ValueError, match="max_shift"):
        EditPolicy(max_shift=2.0)


def test_insertion_adds_the_edited_lesion_beside_the_real_one(case) -> None:
    """EditPolicy(p_insert=1): the own lesion is kept voxel for voxel and the transformed lesion fills in around
    it -- the same transformed lesion the replacing edit places (same draws); the record replays exactly."""
    label, brain = case
    ops = dict(p_remove=0.0, p_swap=0.0, p_mirror=1.0, p_scale=1.0, p_rotate=0.0, p_perturb=0.0, p_move=0.0)
    inserting = LesionEditor("brats2021", policy=EditPolicy(**ops, p_insert=1.0))
    replacing = LesionEditor("brats2021", policy=EditPolicy(**ops))
    for seed in range(3):
        ins = inserting.random_edit(label, brain, generator=torch.Generator().manual_seed(seed))
        assert ins.record["applied"] and ins.record["insert"] is True
        out = np.asarray(ins.label)
        own = label > 0
        np.testing.assert_array_equal(out[own], label[own])  # the real lesion, untouched
        assert (out > 0).sum() > own.sum()  # and a second one beside it
        record = json.loads(json.dumps(ins.record))
        np.testing.assert_array_equal(inserting.replay(label, brain, record).label, out)
        # the placed lesion is the replacing edit's with the same parameters, wherever the own lesion is not
        rep = replacing.replay(label, brain, {**record, "insert": False})
        new = np.asarray(rep.label)
        np.testing.assert_array_equal(out[~own], new[~own])
        assert "insert" not in replacing.random_edit(label, brain, generator=torch.Generator().manual_seed(seed)).record


def test_insertion_draw_leaves_policies_without_it_unchanged(case) -> None:
    """p_insert=0 draws nothing: the same generator gives the same edit as before the option existed; p_insert
    between 0 and 1 inserts some edits and replaces others."""
    label, brain = case
    base = dict(p_remove=0.0, p_swap=0.0, p_mirror=0.5, p_scale=1.0, p_rotate=0.5, p_perturb=0.0, p_move=0.5)
    a = LesionEditor("brats2021", policy=EditPolicy(**base))
    b = LesionEditor("brats2021", policy=EditPolicy(**base, p_insert=0.0))
    for seed in range(3):
        ra = a.random_edit(label, brain, generator=torch.Generator().manual_seed(seed))
        rb = b.random_edit(label, brain, generator=torch.Generator().manual_seed(seed))
        assert ra.record == rb.record
        np.testing.assert_array_equal(ra.label, rb.label)
    half = LesionEditor("brats2021", policy=EditPolicy(**base, p_insert=0.5))
    drawn = {
        half.random_edit(label, brain, generator=torch.Generator().manual_seed(s)).record["insert"] for s in range(12)
    }
    assert drawn == {True, False}
    with pytest.raises(ValueError, match="p_insert"):
        EditPolicy(p_insert=1.5)


def test_several_insertions_add_independent_lesions_and_replay(case) -> None:
    """EditPolicy(p_insert=1, n_insert=3): the first lesion is the single insertion's (same draws), each further one
    an independent random edit added where neither the own lesion nor an earlier one lies, inside the brain; the
    record ("more": the further edits) replays exactly after a JSON round trip, and names their donors."""
    label, brain = case
    ops = dict(p_remove=0.0, p_swap=0.5, p_mirror=0.5, p_scale=0.5, p_rotate=0.0, p_perturb=0.0, p_move=1.0)
    donors = [np.flip(label, axis=0).copy(), np.roll(label, 3, axis=1)]
    one = LesionEditor("brats2021", policy=EditPolicy(**ops, p_insert=1.0))
    three = LesionEditor("brats2021", policy=EditPolicy(**ops, p_insert=1.0, n_insert=3))
    own = label > 0
    seen_donors = set()
    for seed in range(4):
        first = one.random_edit(label, brain, donors=donors, generator=torch.Generator().manual_seed(seed))
        res = three.random_edit(label, brain, donors=donors, generator=torch.Generator().manual_seed(seed))
        out, out1 = np.asarray(res.label), np.asarray(first.label)
        assert res.record["applied"] and len(res.record["more"]) == 2
        assert all(r["insert"] is True and "more" not in r for r in res.record["more"])
        assert "more" not in first.record
        np.testing.assert_array_equal(out[own], label[own])  # the real lesion, untouched
        changed1 = out1 != label
        np.testing.assert_array_equal(out[changed1], out1[changed1])  # the first lesion is the single insertion's
        added = (out != label) & ~changed1
        if any(r["applied"] for r in res.record["more"]):
            assert added.any()
        assert not (out > 0)[~(brain | own)].any()  # nothing outside the brain
        record = json.loads(json.dumps(res.record))
        np.testing.assert_array_equal(three.replay(label, brain, record, donors=donors).label, out)
        assert set(donors_of(record)) >= {donor_of(r) for r in record["more"] if donor_of(r) is not None}
        seen_donors.update(donors_of(record))
    assert seen_donors  # some insertion took a donor's lesion


def test_insertion_count_is_validated() -> None:
    for bad in (0, 9, 1.5, True):
        with pytest.raises(ValueError, match="n_insert"):
            EditPolicy(p_insert=1.0, n_insert=bad)
    with pytest.raises(ValueError, match=r"set EditPolicy\.p_insert > 0"):
        EditPolicy(n_insert=2)


def test_a_swap_donor_outside_the_scheme_is_named() -> None:
    """The reader's error on a bad donor label map names the donor: ``donors[k]``, or the pool's own name for it."""
    label = np.zeros((24, 24, 8), np.uint8)
    label[8:14, 8:14, 2:6] = 2
    brain = np.ones(label.shape, bool)
    bad = label.copy()
    bad[9:11, 9:11, 3] = 3  # not a BraTS 2021 label
    editor = LesionEditor("brats2021", policy=EditPolicy(p_remove=0, p_swap=1.0, swap_at=("donor",)))
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"donors\[0\] \(a swap donor\): donor label map has labels \{3\}"):
        editor.random_edit(label, brain, donors=[bad], generator=gen)

    class Named(list):
        def name_of(self, i: int) -> str:
            return f"case {i + 7}"

    with pytest.raises(ValueError, match=r"case 7 \(a swap donor\): donor label map has labels \{3\}"):
        editor.random_edit(label, brain, donors=Named([bad]), generator=torch.Generator().manual_seed(0))
