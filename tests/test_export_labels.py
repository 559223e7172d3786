"""nnU-Net label maps: consecutive values, BraTS regions and the way back (checked against nnU-Net's LabelManager)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from samraug.export.labels import NnunetLabels, labels_to_scheme, regions_class_order
from samraug.labels import get_scheme

SCHEMES = ("brats2021", "brats2023", "brats2024", "samr")


@pytest.mark.parametrize("scheme", SCHEMES)
@given(data=st.data())
def test_round_trip_and_consecutive(scheme: str, data) -> None:
    values = list(get_scheme(scheme).values)
    label = data.draw(arrays(np.uint8, (3, 4, 2), elements=st.sampled_from(values)))
    labels = NnunetLabels.from_scheme(scheme)
    c = labels.to_consecutive(label)
    assert set(np.unique(c)) <= set(range(len(values)))
    assert np.array_equal(labels.to_scheme(c), label)
    assert np.array_equal(labels_to_scheme(c, scheme), label)


def test_golden_values() -> None:
    assert labels_to_scheme(np.array([0, 1, 2, 3]), "brats2021").tolist() == [0, 1, 2, 4]
    assert labels_to_scheme(np.array([0, 1, 2, 3, 4]), "brats2024").tolist() == [0, 1, 2, 3, 4]
    b24 = NnunetLabels.from_scheme("brats2024").dataset_json_entries()
    assert b24 == {
        "labels": {"background": 0, "WT": [1, 2, 3], "TC": [1, 3], "ET": [3], "RC": [4]},
        "regions_class_order": [2, 1, 3, 4],
    }
    plain = NnunetLabels.from_scheme("brats2021", region_based=False).dataset_json_entries()
    assert plain == {"labels": {"background": 0, "NCR/NET": 1, "ED": 2, "ET": 3}}


def test_bad_values_and_regions_raise() -> None:
    with pytest.raises(ValueError, match=r"values \[3\].*brats2021"):
        NnunetLabels.from_scheme("brats2021").to_consecutive(np.array([0, 3]))
    with pytest.raises(ValueError, match="non-integer"):
        NnunetLabels.from_scheme("brats2021").to_consecutive(np.array([0.5]))
    with pytest.raises(ValueError, match="owns labels"):
        regions_class_order([(1, 2), (1, 2)], [1, 2])
    with pytest.raises(ValueError, match="no WT/TC/ET"):
        NnunetLabels.from_scheme("samr", region_based=True)


@pytest.mark.parametrize("scheme", ["brats2021", "brats2023", "brats2024"])
@given(data=st.data())
def test_nnunet_regions_give_back_the_labels(scheme: str, data) -> None:
    """Region targets as nnU-Net builds them, turned back into labels by nnU-Net's own LabelManager."""
    pytest.importorskip("nnunetv2")
    import torch
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    labels = NnunetLabels.from_scheme(scheme)
    entries = labels.dataset_json_entries()
    manager = LabelManager(entries["labels"], regions_class_order=entries["regions_class_order"])
    assert manager.has_regions
    values = list(get_scheme(scheme).values)
    label = data.draw(arrays(np.uint8, (5, 3), elements=st.sampled_from(values)))
    c = labels.to_consecutive(label)
    # one-hot region "probabilities": 1 inside each region, 0 outside
    regions = np.stack([np.isin(c, r) for r in manager.foreground_regions]).astype(np.float32)
    seg = manager.convert_probabilities_to_segmentation(torch.from_numpy(regions))
    assert np.array_equal(labels_to_scheme(np.asarray(seg), scheme), label)
