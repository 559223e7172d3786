"""samraug.batching.default_batch_size: the per-device batch size of the batched synthesis path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from samraug.batching import BEST_BATCH_128, default_batch_size


def test_measured_cpu_choice_is_not_the_slow_batch_of_32() -> None:
    # tiny on a 2-core CPU at 128x128: batch 8 was fastest, 32 slower than eager (see the module docstring)
    assert default_batch_size("cpu", "tiny", (128, 128)) == 8
    assert default_batch_size(torch.device("cpu"), "paper", (128, 128)) == 1
    assert default_batch_size("cuda:1", "tiny", (128, 128)) == BEST_BATCH_128["cuda"]["tiny"]


@given(
    st.sampled_from(["cpu", "cuda"]),
    st.sampled_from(["tiny", "lite", "paper"]),
    st.integers(8, 512),
    st.integers(8, 512),
)
def test_batch_is_a_power_of_two_and_shrinks_with_the_slice(device: str, preset: str, h: int, w: int) -> None:
    b = default_batch_size(device, preset, (h, w))
    assert b >= 1 and b & (b - 1) == 0
    assert b <= max(1, BEST_BATCH_128[device][preset] * 128 * 128 / (h * w))
    assert default_batch_size(device, preset, (2 * h, w)) <= b


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="preset 'huge'"):
        default_batch_size("cpu", "huge", (128, 128))
    with pytest.raises(ValueError, match="slice_shape"):
        default_batch_size("cpu", "tiny", (128,))
    with pytest.raises(ValueError, match="device type 'meta'"):
        default_batch_size("meta", "tiny", (128, 128))
