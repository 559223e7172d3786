"""A swap drawn at the donor's place (``EditPolicy(swap_at=("donor", ...))``) keeps the donor's lesion where it lies
only when the donor shares the recipient's grid: a donor of the same shape on another affine has its lesion placed
at random, as one of another shape always had. Donors on the recipient's grid draw exactly as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from test_carve_edits import _moved, _subject
from test_dataset import _case
from tiny_model import AFFINE, SEQS

from samraug.augment.donors import DonorPool, RecipientDonors
from samraug.dataset import SAMRAugmentedDataset
from samraug.editing import EditPolicy, LesionEditor
from samraug.synthesis import Synthesizer

#: Every edit is a swap at the donor's place (nothing else drawn).
SWAP_IN_PLACE = EditPolicy(
    p_remove=0.0, p_swap=1.0, p_mirror=0.0, p_scale=0.0, p_rotate=0.0, p_perturb=0.0, p_move=0.0, swap_at=("donor",)
)


def _shifted(mm: float = 10.0) -> np.ndarray:
    affine = np.array(AFFINE, dtype=float)
    affine[:3, 3] += mm
    return affine


def _swaps(records: list[dict]) -> list[str]:
    return [r["swap"]["at"] for r in records if r.get("swap")]


def test_the_editor_keeps_a_donor_in_place_only_on_the_recipients_grid() -> None:
    _, label, brain = _case(0)
    donors = [_case(1)[1].numpy(), _case(2)[1].numpy()]
    editor = LesionEditor("brats2021", policy=SWAP_IN_PLACE)

    def edits(pool):
        out = []
        for seed in range(6):
            g = torch.Generator().manual_seed(seed)
            res = editor.random_edit(label.numpy(), brain.numpy(), donors=pool, generator=g)
            out.append((res.record, res.label))
        return out

    plain = edits(donors)
    same = edits(RecipientDonors(donors, AFFINE, affines=[AFFINE, np.array(AFFINE) + 1e-7]))
    moved = edits(RecipientDonors(donors, AFFINE, affines=[_shifted(), _shifted(-4.0)]))
    assert _swaps([r for r, _ in plain]) == ["donor"] * 6
    # on the grid (float noise included): the very same draws and label maps as a plain list
    for (r0, l0), (r1, l1) in zip(plain, same, strict=True):
        assert r0 == r1 and np.array_equal(l0, l1)
    # another affine: placed at random, at a brain voxel, and the record replays voxel for voxel with plain donors
    assert _swaps([r for r, _ in moved]) == ["random"] * 6
    for record, out in moved:
        center = record["swap"]["center"]
        assert center is not None and brain.numpy()[tuple(center)]
        again = editor.replay(label.numpy(), brain.numpy(), record, donors=donors).label
        assert np.array_equal(again, out)
    # unknown affines (the recipient's or the donor's): only the shapes decide
    unknown = edits(RecipientDonors(donors, None, affines=[_shifted(), _shifted()]))
    assert _swaps([r for r, _ in unknown]) == ["donor"] * 6
    assert _swaps([r for r, _ in edits(RecipientDonors(donors, AFFINE, affines=[None, None]))]) == ["donor"] * 6


def test_recipient_donors_read_the_pools_affines_and_check_their_count() -> None:
    _, seg, _ = _case(1)
    pool = DonorPool([tio.LabelMap(tensor=seg[None], affine=_shifted()), seg.numpy()])
    seen = RecipientDonors(pool, AFFINE)
    assert len(seen) == 2 and np.array_equal(seen[0], seg.numpy())
    assert seen.on_grid(0) is False and seen.on_grid(1) is True  # a plain array carries no affine
    assert seen.name_of(1) == "donors[1]"
    assert RecipientDonors(pool, _shifted()).on_grid(0) is True
    with pytest.raises(ValueError, match="affines has 1 entries for 2 donors"):
        RecipientDonors(pool, AFFINE, affines=[AFFINE])


def test_dataset_swaps_a_donor_on_another_affine_to_a_random_place(tiny_local_weights: str) -> None:
    synth = Synthesizer(tiny_local_weights, device="cpu")
    kw = {"n_synthetic": 6, "weights": synth, "scheme": "brats2021", "policy": SWAP_IN_PLACE, "seed": 3}
    on_grid = SAMRAugmentedDataset([_subject(0), _subject(1)], **kw)
    off_grid = SAMRAugmentedDataset([_subject(0), _moved(_subject(1), _shifted())], **kw)
    synthetic = range(2, len(on_grid))
    assert _swaps([on_grid.prepare(i).record["edit"] for i in synthetic]) == ["donor"] * 6
    records = [off_grid.prepare(i).record["edit"] for i in synthetic]
    assert _swaps(records) == ["random"] * 6
    # the random edit draws the same donor and then a place: the items still replay from their history
    i = 2
    item = off_grid[i]
    source = off_grid.real_ds[off_grid.source_of(i)]
    replayed = item.get_composed_history()(tio.Subject(**dict(source.items())))
    assert torch.equal(replayed["seg"].data, item["seg"].data)


def test_torchio_transform_swaps_a_donor_on_another_affine_to_a_random_place(tiny_weights: str) -> None:
    from samraug.transforms import SAMRSynthesize

    synth = Synthesizer(tiny_weights, device="cpu")
    subject = _subject(0)
    seg = _subject(1)["seg"].data
    for affine, expected in ((AFFINE, "donor"), (_shifted(), "random")):
        donors = [tio.LabelMap(tensor=seg.clone(), affine=affine)]
        t = SAMRSynthesize(1.0, weights=synth, scheme="brats2021", donors=donors, policy=SWAP_IN_PLACE)
        torch.manual_seed(0)
        assert _swaps([t(subject).history[-1].edit for _ in range(3)]) == [expected] * 3


def test_monai_transform_swaps_a_donor_on_another_affine_to_a_random_place(tiny_weights: str) -> None:
    pytest.importorskip("monai")
    from monai.data import MetaTensor

    from samraug.monai import SAMRSynthesized

    subject = _subject(0)
    aff = torch.as_tensor(AFFINE)
    item = {
        "image": MetaTensor(torch.cat([subject[k].data for k in SEQS]), affine=aff),
        "label": MetaTensor(subject["seg"].data, affine=aff),
    }
    synth = Synthesizer(tiny_weights, device="cpu")
    seg = _subject(1)["seg"].data
    for affine, expected in ((aff, "donor"), (torch.as_tensor(_shifted()), "random")):
        donors = [MetaTensor(seg.clone(), affine=affine)]
        t = SAMRSynthesized(
            keys="image", ratio=1.0, weights=synth, scheme="brats2021", donors=donors, policy=SWAP_IN_PLACE
        )
        t.set_random_state(seed=0)
        records = []
        for _ in range(3):
            t(dict(item))
            records.append(t.last_record["edit"])
        assert _swaps(records) == [expected] * 3
