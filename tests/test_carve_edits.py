"""``SAMRAugmentedDataset(edits="carve")``: CarveMix's edit (another real item's lesion labels added where they lie)
for any painter. With the same seed a SAMR painter gets exactly the label maps copy-paste fills with a donor's
intensities, so the two differ only in how the lesion is painted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from test_dataset import _case
from tiny_model import AFFINE, SEQS

from samraug.augment.painters import SAMRPainter
from samraug.dataset import SAMRAugmentedDataset
from samraug.editing import EditPolicy
from samraug.synthesis import Synthesizer


def _subject(i: int) -> tio.Subject:
    images, seg, brain = _case(i)
    return tio.Subject(
        **{s: tio.ScalarImage(tensor=images[k : k + 1], affine=AFFINE) for k, s in enumerate(SEQS)},
        seg=tio.LabelMap(tensor=seg[None], affine=AFFINE),
        brain=tio.LabelMap(tensor=brain[None].to(torch.uint8), affine=AFFINE),
    )


@pytest.fixture(scope="module")
def subjects() -> list[tio.Subject]:
    return [_subject(i) for i in range(3)]  # lesions at three x offsets: every carve changes the label map


def _local(tiny_local_weights: str) -> SAMRPainter:
    # the tiny case is 8 slices deep: a small margin leaves the region room to be painted (never skipped)
    return SAMRPainter(Synthesizer(tiny_local_weights, device="cpu"), margin_mm=0.5, feather_mm=1.0)


def test_samr_local_paints_copy_paste_label_maps(subjects: list[tio.Subject], tiny_local_weights: str) -> None:
    kw = {"n_synthetic": 4, "weights": Synthesizer(tiny_local_weights, device="cpu"), "scheme": "brats2021", "seed": 7}
    pasted = SAMRAugmentedDataset(subjects, painter="copy-paste", **kw)
    painted = SAMRAugmentedDataset(subjects, painter=_local(tiny_local_weights), edits="carve", **kw)
    assert pasted.edits == painted.edits == "carve"
    donors = set()
    for i in range(3, 7):
        a, b = pasted.describe(i), painted.describe(i)
        assert a["source"] == b["source"] and a["edit"] == {"op": "carve", "donor": b["edit"]["donor"]}, i
        assert b["edit"] == {"op": "carve", "donor": a["edit"]["donor"], "outside_brain": 0}, i
        assert b["edit"]["donor"] != b["source"], i
        donors.add((b["source"], b["edit"]["donor"]))
        pa, pb = pasted[i], painted[i]
        src = subjects[b["source"]]
        assert torch.equal(pa["seg"].data, pb["seg"].data), i  # the same label map
        donor_lesion = subjects[b["edit"]["donor"]]["seg"].data[0] != 0
        expected = torch.where(donor_lesion, subjects[b["edit"]["donor"]]["seg"].data[0], src["seg"].data[0])
        assert torch.equal(pb["seg"].data[0], expected), i  # the donor's lesion added where it lies
        new = pb["seg"].data[0] != src["seg"].data[0]
        assert new.any(), i
        for s in SEQS:  # the new lesion painted, not pasted; far from it the source's own voxels
            assert not torch.equal(pa[s].data[0][new], pb[s].data[0][new]), (i, s)
            far = torch.from_numpy(np.asarray(painted_far(new)))
            assert torch.equal(pb[s].data[0][far], src[s].data[0][far]), (i, s)
    assert len(donors) > 1  # the draws vary


def painted_far(changed: torch.Tensor) -> np.ndarray:
    """Voxels more than 4 voxels (in x and y) from any changed one: outside every painted region of the tiny case
    (margin 0.5 mm, feather 1 mm, 2 mm voxels)."""
    from scipy import ndimage

    near = ndimage.binary_dilation(changed.numpy(), structure=np.ones((9, 9, 1), bool))
    return ~near


def test_carve_leaves_out_donor_lesion_outside_the_brain_for_a_painter(tiny_local_weights: str) -> None:
    """The source's brain ends where the donor's lesion goes on: copy-paste pastes all of it (CarveMix), the SAMR
    painter gets the lesion inside the brain only (it refuses a lesion outside the brain) and the record counts the
    rest."""
    source, donor = _subject(0), _subject(2)  # the donor's lesion lies 2 voxels further along x
    brain = source["brain"].data.clone()
    brain[0, 19:] = 0  # the source's own lesion ends at x = 18
    source["brain"] = tio.LabelMap(tensor=brain, affine=AFFINE)
    kw = {"n_synthetic": 6, "weights": Synthesizer(tiny_local_weights, device="cpu"), "scheme": "brats2021"}
    pasted = SAMRAugmentedDataset([source, donor], painter="copy-paste", **kw)
    painted = SAMRAugmentedDataset([source, donor], painter=_local(tiny_local_weights), edits="carve", **kw)
    donor_lesion = donor["seg"].data[0] != 0
    outside = donor_lesion & (brain[0] == 0)
    assert outside.any()
    checked = 0
    for i in range(2, 8):
        rec = painted.describe(i)
        if rec["source"] != 0:
            continue
        checked += 1
        assert rec["edit"]["outside_brain"] == int(outside.sum()), i
        a, b = pasted[i]["seg"].data[0], painted[i]["seg"].data[0]
        assert torch.equal(a[outside], donor["seg"].data[0][outside]), i  # pasted, outside the brain too
        assert not b[outside].any(), i  # left out
        assert torch.equal(a[~outside], b[~outside]), i  # the rest is the same edit
    assert checked


def test_whole_image_samr_takes_carve_edits(subjects: list[tio.Subject], tiny_weights: str) -> None:
    ds = SAMRAugmentedDataset(
        subjects, n_synthetic=2, weights=Synthesizer(tiny_weights, device="cpu"), scheme="brats2021", edits="carve"
    )
    for i in (3, 4):
        rec = ds.describe(i)
        item = ds[i]
        donor = subjects[rec["edit"]["donor"]]["seg"].data[0]
        src = subjects[rec["source"]]["seg"].data[0]
        assert torch.equal(item["seg"].data[0], torch.where(donor != 0, donor, src)), i


def test_carve_edit_arguments_are_checked(subjects: list[tio.Subject], tiny_local_weights: str) -> None:
    synth = Synthesizer(tiny_local_weights, device="cpu")
    with pytest.raises(ValueError, match="edits must be one of"):
        SAMRAugmentedDataset(subjects, weights=synth, scheme="brats2021", edits="mix")
    with pytest.raises(ValueError, match=r"unknown kinds \['swap'\]"):
        SAMRAugmentedDataset(subjects, weights=synth, scheme="brats2021", edits={"swap": 1.0})
    with pytest.raises(ValueError, match="weight 0"):
        SAMRAugmentedDataset(subjects, weights=synth, scheme="brats2021", edits={"carve": 0, "random": 0})
    with pytest.raises(ValueError, match=r"edits\['carve'\]=-1 must be a finite weight"):
        SAMRAugmentedDataset(subjects, weights=synth, scheme="brats2021", edits={"carve": -1})
    with pytest.raises(ValueError, match=r"copy-paste painter .* CarveMix's edits only"):
        SAMRAugmentedDataset(
            subjects, weights=synth, scheme="brats2021", painter="copy-paste", edits={"carve": 1, "random": 1}
        )
    with pytest.raises(ValueError, match=r"copy-paste painter .* takes CarveMix's edits only"):
        SAMRAugmentedDataset(subjects, weights=synth, scheme="brats2021", painter="copy-paste", edits="random")
    with pytest.raises(ValueError, match=r"edits='carve' .* leave out editor= / policy="):
        SAMRAugmentedDataset(subjects, weights=synth, scheme="brats2021", edits="carve", policy=EditPolicy())
    one = SAMRAugmentedDataset(subjects[:1], n_synthetic=1, weights=synth, scheme="brats2021", edits="carve")
    with pytest.raises(ValueError, match=r"edits='carve' needs at least 2 real items"):
        one[1]
    bad = _subject(1)
    seg = bad["seg"].data.clone()
    seg[seg == 2] = 3  # not a BraTS 2021 label
    bad["seg"] = tio.LabelMap(tensor=seg, affine=AFFINE)
    for painter in (_local(tiny_local_weights), "copy-paste"):  # read for its label map only, or whole
        ds = SAMRAugmentedDataset(
            [subjects[0], bad], n_synthetic=4, weights=synth, scheme="brats2021", painter=painter, edits="carve"
        )
        i = next(i for i in range(2, 6) if ds.source_of(i) == 0)
        with pytest.raises(ValueError, match=r"real_ds\[1\] \(the donor of synthetic item \d+\): .*label"):
            ds[i]
    # random edits: a swap donor outside the scheme is named as the donor, beside the source it was drawn for
    ds = SAMRAugmentedDataset([subjects[0], bad], n_synthetic=12, weights=synth, scheme="brats2021", seed=1,
                              policy=EditPolicy(p_swap=1.0), painter=_local(tiny_local_weights))  # fmt: skip
    i = next(i for i in range(2, 14) if ds.source_of(i) == 0)
    named = r"real_ds\[0\] \(the source .*real_ds\[1\] \(a swap donor\): donor label map has labels \{3\}"
    with pytest.raises(ValueError, match=named):
        ds[i]
    # the default is the painter's own: random edits for SAMR, carve for copy-paste
    assert SAMRAugmentedDataset(subjects, weights=synth, scheme="brats2021").edits == "random"
    assert SAMRAugmentedDataset(subjects, weights=synth, scheme="brats2021", painter="copy-paste").edits == "carve"


def _moved(subject: tio.Subject, affine: np.ndarray) -> tio.Subject:
    """The subject's voxels on another affine."""
    return tio.Subject(**{k: type(im)(tensor=im.data.clone(), affine=affine) for k, im in subject.items()})


def test_a_carve_donor_on_another_grid_is_refused_with_its_name(
    subjects: list[tio.Subject], tiny_local_weights: str
) -> None:
    """Carve (and copy-paste) adds the donor's lesion voxel for voxel where it lies: a donor of the same shape on
    another affine would put it somewhere else in the brain, so it is refused, named, with the fix; float noise in
    the affine is not a different grid."""
    synth = Synthesizer(tiny_local_weights, device="cpu")
    shifted = np.array(AFFINE, dtype=float)
    shifted[:3, 3] += 10.0  # the same voxels 10 mm away
    for painter in (_local(tiny_local_weights), "copy-paste"):
        for edits in ("carve", "carve+random") if painter != "copy-paste" else ("carve",):
            ds = SAMRAugmentedDataset(
                [subjects[0], _moved(subjects[1], shifted)],
                n_synthetic=4, weights=synth, scheme="brats2021", painter=painter, edits=edits,
            )  # fmt: skip
            i = next(i for i in range(2, 6) if ds.source_of(i) == 0)
            named = r"real_ds\[1\] \(the donor of synthetic item \d+\): it has the affine .*, the source real_ds\[0\]"
            with pytest.raises(ValueError, match=named + r".*one grid first \(e\.g\. tio\.Resample"):
                ds[i]
    noisy = np.array(AFFINE, dtype=float)
    noisy[:3, :3] += 1e-7
    ds = SAMRAugmentedDataset(
        [subjects[0], _moved(subjects[1], noisy)], n_synthetic=4, weights=synth, scheme="brats2021", edits="carve",
        painter=_local(tiny_local_weights),
    )  # fmt: skip
    i = next(i for i in range(2, 6) if ds.source_of(i) == 0)
    assert ds.describe(i)["edit"]["donor"] == 1 and not torch.equal(ds[i]["seg"].data, subjects[0]["seg"].data)


def test_a_mixture_draws_carve_and_random_items_as_the_pure_kinds_do(
    subjects: list[tio.Subject], tiny_local_weights: str
) -> None:
    """edits={"carve": w, "random": 1 - w}: each item is the item of edits="carve" or of edits="random" at the same
    index and seed (the kind drawn after the source and the seed), so a mixture's carving items pair with
    copy-paste's; a policy applies to its random part."""
    synth = Synthesizer(tiny_local_weights, device="cpu")
    kw = {"n_synthetic": 12, "weights": synth, "scheme": "brats2021", "seed": 3}
    policy = EditPolicy(p_insert=1.0)
    mixed = SAMRAugmentedDataset(subjects, edits={"carve": 1, "random": 1}, policy=policy, **kw)
    carve = SAMRAugmentedDataset(subjects, edits="carve", **kw)
    rand = SAMRAugmentedDataset(subjects, edits="random", policy=policy, **kw)
    assert mixed.edits == {"random": 0.5, "carve": 0.5} and mixed.edit_mixture == mixed.edits
    kinds = []
    for i in range(3, 15):
        rec = mixed.describe(i)
        kind = "carve" if rec["edit"]["op"] == "carve" else "random"
        kinds.append(kind)
        assert rec == (carve if kind == "carve" else rand).describe(i), i
        if kind == "random":
            assert rec["edit"]["insert"] is True or not rec["edit"]["applied"], i  # the policy's insertion
    assert 2 <= kinds.count("carve") <= 10  # both kinds drawn (12 fair coin flips)


def test_carve_plus_random_adds_carves_donor_lesion_to_the_random_edit(
    subjects: list[tio.Subject], tiny_local_weights: str
) -> None:
    """edits="carve+random": the random edit of edits="random" (same policy, index and seed), then the donor lesion
    of edits="carve" added on top where it lies; the painted images keep the source's voxels far from the edit."""
    synth = Synthesizer(tiny_local_weights, device="cpu")
    kw = {"n_synthetic": 6, "weights": synth, "scheme": "brats2021", "seed": 5}
    # mirrored in-plane insertions only: a lesion rotated, scaled or moved reaches the 8-slice case's edge slices,
    # where the painter leaves the item real
    policy = EditPolicy(p_remove=0, p_swap=0, p_mirror=1, p_scale=0, p_rotate=0, p_perturb=0, p_move=0, p_insert=1.0)
    both = SAMRAugmentedDataset(subjects, painter=_local(tiny_local_weights), edits="carve+random", policy=policy, **kw)
    rand = SAMRAugmentedDataset(subjects, painter=_local(tiny_local_weights), edits="random", policy=policy, **kw)
    carve = SAMRAugmentedDataset(subjects, painter=_local(tiny_local_weights), edits="carve", **kw)
    assert both.edits == "carve+random"
    painted = 0
    for i in range(3, 9):
        b, r, c = both.describe(i), rand.describe(i), carve.describe(i)
        assert b["source"] == r["source"] == c["source"] and b["seed"] == r["seed"], i
        assert b["edit"]["op"] == "carve+random" and b["edit"]["random"] == r["edit"], i
        assert {k: v for k, v in b["edit"].items() if k not in ("op", "random")} == {
            k: v for k, v in c["edit"].items() if k != "op"
        }, i
        assert r["edit"]["applied"] and r["edit"]["insert"], i  # the policy inserts: the own lesion stays
        donor = torch.as_tensor(subjects[b["edit"]["donor"]]["seg"].data[0])
        random_label = torch.as_tensor(rand.prepare(i).edited)
        expected = torch.where(donor != 0, donor, random_label)  # the donor's lesion on top of the random edit
        assert torch.equal(torch.as_tensor(both.prepare(i).edited), expected), i
        item, src = both[i], subjects[b["source"]]
        if torch.equal(item["seg"].data, src["seg"].data):  # the painter left it real: its region at the edge
            continue
        painted += 1
        assert torch.equal(item["seg"].data[0], expected), i
        far = torch.from_numpy(painted_far(item["seg"].data[0] != src["seg"].data[0]))
        for s in SEQS:
            assert torch.equal(item[s].data[0][far], src[s].data[0][far]), (i, s)
            assert not torch.equal(item[s].data, src[s].data), (i, s)
    assert painted


@pytest.mark.parametrize("edits", ["carve", "carve+random"])
def test_whole_image_carve_items_replay_from_their_history(
    subjects: list[tio.Subject], tiny_weights: str, edits: str
) -> None:
    """A whole-image item's history replays its carve edit: through the live dataset (its key), and elsewhere with
    the real items' label maps passed as carve_donors."""
    from samraug.transforms import SAMRSynthesizeFixed

    policy = EditPolicy(p_insert=1.0) if edits == "carve+random" else None
    kw = {"n_synthetic": 2, "weights": Synthesizer(tiny_weights, device="cpu"), "scheme": "brats2021"}
    ds = SAMRAugmentedDataset(subjects, edits=edits, policy=policy, **kw)
    for i in (3, 4):
        item = ds[i]
        history = item.get_composed_history()
        assert [t.name for t in history] == ["SAMRSynthesizeFixed"]
        source = subjects[ds.source_of(i)]
        again = history(source)
        fixed = item.history[-1]
        args = {name: getattr(fixed, name) for name in fixed.args_names}
        assert args["edit"]["op"] == edits and args["carve_donors"].endswith(":all")
        args["carve_donors"] = [s["seg"].data for s in subjects]  # a replay in another process
        if edits == "carve+random":
            args["donors"] = [subjects[k]["seg"].data for k in range(len(subjects)) if k != ds.source_of(i)]
        elsewhere = SAMRSynthesizeFixed(**args)(source)
        for key in [*SEQS, "seg"]:
            assert torch.equal(again[key].data, item[key].data), (i, key)
            assert torch.equal(elsewhere[key].data, item[key].data), (i, key)


def test_carve_records_are_checked_on_replay() -> None:
    from samraug.augment.edits import replay_edit

    donor = np.zeros((2, 3), np.uint8)
    donor[0, 0] = 2
    label = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError, match="needs the label maps its donor index 1"):
        replay_edit(None, label, None, {"op": "carve", "donor": 1})
    with pytest.raises(ValueError, match="donor 5 is not in carve_donors"):
        replay_edit(None, label, None, {"op": "carve", "donor": 5}, carve_donors=[donor])
    brain = np.ones((2, 3), bool)
    brain[0, 0] = False
    with pytest.raises(ValueError, match="does not reproduce"):  # the recorded count no longer holds
        replay_edit(None, label, brain, {"op": "carve", "donor": 0, "outside_brain": 0}, carve_donors=[donor])
    with pytest.raises(ValueError, match="needs the editor="):
        replay_edit(None, label, None, {"op": "carve+random", "donor": 0, "random": {}}, carve_donors=[donor])
    with pytest.raises(ValueError, match="needs the editor="):
        replay_edit(None, label, None, {"op": "random", "applied": False})
    out = replay_edit(None, label, brain, {"op": "carve", "donor": 0, "outside_brain": 1}, carve_donors=[donor])
    assert not out.any()  # the donor voxel outside the brain left out, as recorded


# mirrored in-plane insertions: they stay inside the tiny case's slices (see above)
MIRROR_INSERT = EditPolicy(p_remove=0, p_swap=0, p_mirror=1, p_scale=0, p_rotate=0, p_perturb=0, p_move=0, p_insert=1)


@pytest.mark.parametrize("edits", ["carve", "carve+random"])
def test_torchio_transform_carves_from_its_donors_and_replays(
    subjects: list[tio.Subject], tiny_weights: str, edits: str
) -> None:
    """SAMRSynthesize(edits=...): the donor lesion comes from donors= (a label map drawn per sample), added where it
    lies on top of the random edit the same global seed gives edits="random"; the history replays it."""
    from samraug.transforms import SAMRSynthesize

    synth = Synthesizer(tiny_weights, device="cpu")
    donors = [s["seg"] for s in subjects[1:]]
    policy = MIRROR_INSERT if edits == "carve+random" else None
    carve = SAMRSynthesize(1.0, weights=synth, scheme="brats2021", donors=donors, policy=policy, edits=edits)
    plain = SAMRSynthesize(1.0, weights=synth, scheme="brats2021", donors=donors, policy=MIRROR_INSERT)
    picked = set()
    for seed in range(4):
        torch.manual_seed(seed)
        out = carve(subjects[0])
        torch.manual_seed(seed)
        rand = plain(subjects[0])
        fixed = out.history[-1]
        assert fixed.name == "SAMRSynthesizeFixed" and fixed.edit["op"] == edits, seed
        j = fixed.edit["donor"]
        picked.add(j)
        donor = subjects[1 + j]["seg"].data[0]
        base = rand["seg"].data[0] if edits == "carve+random" else subjects[0]["seg"].data[0]
        if edits == "carve+random":
            assert fixed.edit["random"] == rand.history[-1].edit, seed  # the same random edit
        assert torch.equal(out["seg"].data[0], torch.where(donor != 0, donor, base)), seed
        again = out.get_composed_history()(subjects[0])
        for key in [*SEQS, "seg"]:
            assert torch.equal(again[key].data, out[key].data), (seed, key)
    assert len(picked) == 2  # both donors drawn over the seeds


def test_torchio_transform_mixes_kinds_and_checks_its_arguments(subjects: list[tio.Subject], tiny_weights: str) -> None:
    from samraug.transforms import SAMRSynthesize

    synth = Synthesizer(tiny_weights, device="cpu")
    donors = [s["seg"] for s in subjects[1:]]
    with pytest.raises(ValueError, match=r"edits='carve' adds a donor's lesion where it lies: pass donors="):
        SAMRSynthesize(1.0, weights=synth, scheme="brats2021", edits="carve")
    with pytest.raises(ValueError, match=r"uses no editor: leave out editor= / policy="):
        SAMRSynthesize(1.0, weights=synth, scheme="brats2021", donors=donors, edits="carve", policy=EditPolicy())
    with pytest.raises(ValueError, match="edits must be one of"):
        SAMRSynthesize(1.0, weights=synth, scheme="brats2021", edits="paste")
    assert SAMRSynthesize(1.0, weights=synth, scheme="brats2021").edit_mixture == {"random": 1.0}
    mixed = SAMRSynthesize(1.0, weights=synth, scheme="brats2021", donors=donors, edits={"carve": 1, "random": 1})
    torch.manual_seed(0)
    ops = [mixed(subjects[0]).history[-1].edit["op"] for _ in range(12)]
    assert {"carve", "random"} <= set(ops)  # drawn per sample
    # donors that carry their affine (tio.LabelMap) are checked against the subject's: another grid is refused
    shifted = np.array(AFFINE, dtype=float)
    shifted[:3, 3] += 10.0
    moved = [tio.LabelMap(tensor=s["seg"].data.clone(), affine=shifted) for s in subjects[1:]]
    for edits in ("carve", "carve+random"):
        t = SAMRSynthesize(1.0, weights=synth, scheme="brats2021", donors=moved, edits=edits)
        with pytest.raises(ValueError, match=r"donors\[\d\] has the affine .*, the sample .*tio\.Resample"):
            t(subjects[0])
    ok = [tio.LabelMap(tensor=s["seg"].data.clone(), affine=AFFINE) for s in subjects[1:]]
    out = SAMRSynthesize(1.0, weights=synth, scheme="brats2021", donors=ok, edits="carve")(subjects[0])
    assert out.history[-1].edit["op"] == "carve"  # the subjects' own grid: carved


def test_monai_transform_carves_from_its_donors(subjects: list[tio.Subject], tiny_weights: str) -> None:
    pytest.importorskip("monai")
    from monai.data import MetaTensor

    from samraug.monai import SAMRSynthesized

    def item(s: tio.Subject) -> dict:
        aff = torch.as_tensor(AFFINE)
        images = torch.cat([s[k].data for k in SEQS])
        return {"image": MetaTensor(images, affine=aff), "label": MetaTensor(s["seg"].data, affine=aff)}

    donors = [s["seg"].data for s in subjects[1:]]
    synth = Synthesizer(tiny_weights, device="cpu")
    t = SAMRSynthesized(keys="image", ratio=1.0, weights=synth, scheme="brats2021", donors=donors, edits="carve")
    t.set_random_state(seed=0)
    for _ in range(3):
        out = t(item(subjects[0]))
        rec = t.last_record["edit"]
        assert rec["op"] == "carve" and rec["outside_brain"] == 0
        donor = donors[rec["donor"]][0]
        expected = torch.where(donor != 0, donor, subjects[0]["seg"].data[0])
        assert torch.equal(out["label"].as_tensor()[0], expected)
    with pytest.raises(ValueError, match="pass donors="):
        SAMRSynthesized(keys="image", weights=synth, scheme="brats2021", edits="carve+random")
    shifted = torch.as_tensor(AFFINE).clone()
    shifted[:3, 3] += 10.0
    moved = [MetaTensor(s["seg"].data, affine=shifted) for s in subjects[1:]]
    t = SAMRSynthesized(keys="image", ratio=1.0, weights=synth, scheme="brats2021", donors=moved, edits="carve")
    with pytest.raises(ValueError, match=r"donors\[\d\] has the affine .*, the sample"):
        t(item(subjects[0]))
