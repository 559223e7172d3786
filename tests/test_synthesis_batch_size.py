"""Synthesizer(batch_size=None) picks the slices per generator call from samraug.batching; an explicit int wins."""

from __future__ import annotations

import pytest
import torch

from samraug.batching import BEST_BATCH_128, default_batch_size, preset_of
from samraug.models.generator import GENERATOR_PRESETS
from samraug.synthesis import Synthesizer
from tests.tiny_model import save_tiny_weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_weights(tmp_path_factory.mktemp("w") / "tiny")


def test_presets_are_matched_from_the_architecture() -> None:
    for name, arch in GENERATOR_PRESETS.items():
        assert preset_of({**arch, "sequences": ["t1n"]}) == name
    # narrower than tiny -> tiny; between tiny and lite -> lite; wider than paper -> paper
    assert preset_of({"base_channels": 8, "max_channels": 16, "n_down": 3}) == "tiny"
    assert preset_of({"base_channels": 24, "max_channels": 96}) == "lite"
    assert preset_of({"base_channels": 128, "max_channels": 1024}) == "paper"


def test_default_batch_size_follows_device_preset_and_slice_size(tiny: str) -> None:
    synth = Synthesizer(tiny, device="cpu")
    assert synth.batch_size is None and "batch_size=auto" in repr(synth)
    assert preset_of(synth.config) == "tiny"  # the tiny test model is narrower than the tiny preset
    assert (
        synth.batch_size_for((128, 128))
        == BEST_BATCH_128["cpu"]["tiny"]
        == default_batch_size("cpu", "tiny", (128, 128))
    )
    assert synth.batch_size_for((256, 256)) == BEST_BATCH_128["cpu"]["tiny"] // 4
    assert synth.batch_size_for((32, 32)) == BEST_BATCH_128["cpu"]["tiny"] * 16


def test_explicit_batch_size_wins_and_is_validated(tiny: str) -> None:
    assert Synthesizer(tiny, device="cpu", batch_size=3).batch_size_for((256, 256)) == 3
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="batch_size"):
            Synthesizer(tiny, batch_size=bad)


def test_automatic_batches_paint_what_explicit_batches_paint(tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    auto, one = Synthesizer(tiny, device="cpu"), Synthesizer(tiny, device="cpu", batch_size=1)
    calls: list[int] = []
    forward = type(auto)._forward

    def counting(self: Synthesizer, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(int(args[0].shape[0]))  # type: ignore[union-attr]
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(auto), "_forward", counting)
    masks = torch.zeros(20, 32, 32, dtype=torch.long)
    masks[:, 8:20, 8:20] = 1
    masks[:, 10:14, 10:14] = 4
    z = torch.arange(20) % 8
    a = auto.synthesize_slices(masks, z=z)
    expected = auto.batch_size_for((32, 32))
    assert calls[0] == min(20, expected) and len(calls) == -(-20 // expected)
    calls.clear()
    b = one.synthesize_slices(masks, z=z)
    assert calls == [1] * 20
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # eval mode: batching does not change the images
