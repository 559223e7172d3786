"""Bad input to the augmentation front-ends is refused before anything is painted (issue 12, items 6, 8, 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from test_dataset import Dict2D, TupleDS, _case
from test_transforms import NO_EDIT, make_subject
from tiny_model import AFFINE, SEQS, SHAPE

from samraug.dataset import SAMRAugmentedDataset
from samraug.synthesis import Synthesizer
from samraug.transforms import SAMRSynthesize


@pytest.fixture(scope="module")
def synth(tiny_weights: str) -> Synthesizer:
    return Synthesizer(tiny_weights, device="cpu")


# ------------------------------------------------------------------ item 6: image/label geometry
def test_image_with_shifted_affine_is_refused_naming_it(synth: Synthesizer) -> None:
    subject = make_subject(thin=True)
    shifted = AFFINE.copy()
    shifted[0, 3] += 10.0  # 10 mm off
    subject["t2w"] = tio.ScalarImage(tensor=subject["t2w"].data.clone(), affine=shifted)
    transform = SAMRSynthesize(ratio=1.0, weights=synth, policy=NO_EDIT)
    with pytest.raises(ValueError, match=r"'t2w'.*affine"):
        transform(subject)


def test_image_with_other_shape_is_refused_naming_it(synth: Synthesizer) -> None:
    subject = make_subject(thin=True)
    subject["t1c"] = tio.ScalarImage(tensor=torch.zeros(1, 32, 30, 8), affine=AFFINE)
    transform = SAMRSynthesize(ratio=1.0, weights=synth, policy=NO_EDIT)
    with pytest.raises(ValueError, match=r"'t1c'.*shape"):
        transform(subject)


def test_dict_item_image_affine_mismatch_is_refused(synth: Synthesizer) -> None:
    class PerKeyShifted:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            images, seg, _ = _case(i)
            shifted = AFFINE.copy()
            shifted[1, 3] -= 10.0
            return {
                "t1n": tio.ScalarImage(tensor=images[0:1], affine=shifted),
                "seg": tio.LabelMap(tensor=seg[None], affine=AFFINE),
            }

    with pytest.raises(ValueError, match=r"'t1n'.*affine"):
        mixed = SAMRAugmentedDataset(PerKeyShifted(), ratio=0.5, weights=synth, scheme="brats2021", label_key="seg")
        mixed[len(mixed) - 1]


# ------------------------------------------------------------------ item 8: lesion outside the brain
def _outside_subject() -> tio.Subject:
    subject = make_subject(thin=True)
    seg = torch.zeros(SHAPE, dtype=torch.uint8)
    seg[0:3, 0:3, 3:5] = 2  # the corner: images are 0 there (outside the brain box)
    seg[0:2, 0:2, 3:5] = 4
    subject["seg"] = tio.LabelMap(tensor=seg[None], affine=AFFINE)
    return subject


def test_lesion_entirely_outside_brain_is_refused(synth: Synthesizer) -> None:
    subject = _outside_subject()
    before = {k: subject[k].data.clone() for k in SEQS}
    transform = SAMRSynthesize(ratio=1.0, weights=synth, policy=NO_EDIT)
    with pytest.raises(ValueError, match="outside the brain"):
        transform(subject)
    for k in SEQS:  # nothing painted
        assert torch.equal(subject[k].data, before[k])


def test_lesion_outside_brain_refused_for_dataset_items(synth: Synthesizer) -> None:
    class Outside:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            images, _, _ = _case(i)
            seg = torch.zeros(SHAPE, dtype=torch.uint8)
            seg[0:3, 0:3, 3:5] = 2
            return images, seg

    with pytest.raises(ValueError, match=r"real_ds\[\d\].*outside the brain"):
        mixed = SAMRAugmentedDataset(Outside(), ratio=0.5, weights=synth, scheme="brats2021", donors=None)
        for i in range(len(mixed)):
            mixed[i]


# ------------------------------------------------------------------ item 14: dataset items checked lazily
class OneBadItem(TupleDS):
    """Item 2 has 3 channels instead of 4."""

    def __getitem__(self, i: int):
        images, seg = super().__getitem__(i)
        return (images[:3], seg) if i == 2 else (images, seg)


def test_bad_later_item_names_its_index(synth: Synthesizer) -> None:
    mixed = SAMRAugmentedDataset(OneBadItem(), n_synthetic=12, weights=synth, scheme="brats2021", donors=None)
    synthetic = [i for i in range(mixed.n_real, len(mixed)) if mixed.source_of(i) == 2]
    assert synthetic, "seed draws no synthetic item from item 2; pick another seed"
    with pytest.raises(ValueError, match=r"real_ds\[2\].*3 channels"):
        mixed[synthetic[0]]


def test_out_of_range_z_names_the_item(synth: Synthesizer) -> None:
    class FarZ(Dict2D):
        def __getitem__(self, i: int):
            item = super().__getitem__(i)
            item["z"] = 3 if i != 1 else 99
            return item

    mixed = SAMRAugmentedDataset(FarZ(), n_synthetic=12, weights=synth, scheme="brats2021", donors=None)
    synthetic = [i for i in range(mixed.n_real, len(mixed)) if mixed.source_of(i) == 1]
    assert synthetic
    with pytest.raises(ValueError, match=r"real_ds\[1\].*z=99"):
        mixed[synthetic[0]]


def test_float_index_is_refused(synth: Synthesizer) -> None:
    mixed = SAMRAugmentedDataset(TupleDS(), ratio=0.5, weights=synth, scheme="brats2021")
    with pytest.raises(TypeError, match="integer"):
        mixed[1.7]
    assert mixed[np.int64(1)] is not None  # numpy integers are fine


def test_ratio_giving_no_synthetic_item_warns(synth: Synthesizer) -> None:
    with pytest.warns(UserWarning, match="0 synthetic"):
        mixed = SAMRAugmentedDataset(TupleDS(), ratio=0.1, weights=synth, scheme="brats2021")
    assert len(mixed) == 4


def test_n_synthetic_alternative_to_ratio(synth: Synthesizer) -> None:
    mixed = SAMRAugmentedDataset(TupleDS(), n_synthetic=3, weights=synth, scheme="brats2021")
    assert len(mixed) == 7 and mixed.n_synthetic == 3
    assert [mixed.is_synthetic(i) for i in range(7)] == [False] * 4 + [True] * 3
    with pytest.raises(ValueError, match=r"ratio=.*or n_synthetic=.*not both"):
        SAMRAugmentedDataset(TupleDS(), ratio=0.5, n_synthetic=3, weights=synth, scheme="brats2021")
    with pytest.raises(ValueError, match="n_synthetic"):
        SAMRAugmentedDataset(TupleDS(), n_synthetic=-1, weights=synth, scheme="brats2021")


# ------------------------------------------------------------------ no module-global state
def test_del_of_a_dataset_frees_it(synth: Synthesizer) -> None:
    import gc
    import weakref

    from test_dataset import SubjectDS

    ds = SAMRAugmentedDataset(SubjectDS(), 0.5, weights=synth)
    item = ds[len(ds) - 1]  # a subject whose history names the dataset's lazy donor pool
    ref = weakref.ref(ds)
    del ds
    gc.collect()
    assert ref() is None
    fixed = item.get_composed_history()[0]
    assert fixed.donors.startswith("dataset:")  # its lazy pool died with the dataset
    with pytest.raises(ValueError, match="pass the donors explicitly"):
        fixed(item)


def test_transform_and_dataset_do_not_share_a_synthesizer(synth: Synthesizer) -> None:
    t = SAMRSynthesize(ratio=1.0, weights=synth)
    ds = SAMRAugmentedDataset(TupleDS(), 0.5, weights=synth, scheme="brats2021")
    assert t.synthesizer is not ds.synthesizer and t.synthesizer is not synth
    t.synthesizer.batch_size = 1
    assert ds.synthesizer.batch_size == synth.batch_size != 1


def test_replay_in_another_process_takes_donors_explicitly(synth: Synthesizer) -> None:
    from samraug.editing import EditPolicy
    from samraug.transforms import SAMRSynthesizeFixed

    donor = make_subject(shift=6)["seg"]
    torch.manual_seed(6)
    t = SAMRSynthesize(ratio=1.0, weights=synth, donors=[donor], policy=EditPolicy(p_swap=1.0, p_remove=0.0))
    subject = make_subject()
    out = t(subject)
    fixed = out.get_composed_history()[0]
    assert "swap" in str(fixed.edit)
    args = {name: getattr(fixed, name) for name in fixed.args_names}
    args["donors"] = [donor.data.clone()]  # what another process would pass
    again = SAMRSynthesizeFixed(**args)(subject)
    assert torch.equal(again["seg"].data, out["seg"].data)
