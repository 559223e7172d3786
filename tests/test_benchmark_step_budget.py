"""benchmarks/step_budget.py and the segmentation trainer's checkpoint hook and voxel counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of scripts, not installed

from benchmarks.step_budget import choose_budget
from samraug.training.segmentation import EvalVolume, SegmentationConfig, evaluate_segmenter, train_segmenter


def test_budget_is_the_first_checkpoint_within_tolerance_of_the_best_mean() -> None:
    steps = [100, 200, 300, 400]
    assert choose_budget(steps, [[0.2, 0.5, 0.59, 0.6], [0.3, 0.6, 0.61, 0.6]], tolerance=0.01) == 300
    assert choose_budget(steps, [[0.2, 0.5, 0.59, 0.6]], tolerance=0.0) == 400
    assert choose_budget(steps, [[0.9, 0.5, 0.5, 0.5]], tolerance=0.0) == 100
    with pytest.raises(ValueError, match="checkpoints"):
        choose_budget(steps, [[0.1, 0.2]])


def _data() -> list[dict[str, torch.Tensor]]:
    label = torch.ones(16, 16, dtype=torch.long)
    label[4:8, 4:8] = 2
    return [{"image": label[None].float() / 4, "label": label}] * 4


def test_checkpoint_hook_sees_the_model_at_each_interval_and_keeps_the_run_reproducible() -> None:
    cfg = SegmentationConfig(steps=5, batch_size=2, depth=1, base_channels=2, device="cpu")
    seen: list[tuple[int, bool]] = []
    hooked = train_segmenter(_data(), cfg, checkpoint=lambda n, m: seen.append((n, m.training)), checkpoint_every=2)
    assert seen == [(2, False), (4, False), (5, False)]  # every 2 steps and after the last, in eval mode
    plain = train_segmenter(_data(), cfg)
    assert hooked.losses == plain.losses
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_segmenter(_data(), cfg, checkpoint=lambda n, m: None)


def test_evaluation_reports_voxel_counts_per_region() -> None:
    cfg = SegmentationConfig(steps=1, batch_size=2, depth=1, base_channels=2, device="cpu")
    model = train_segmenter(_data(), cfg).model
    label = torch.ones(16, 16, 3, dtype=torch.long)
    label[4:8, 4:8, 1] = 2
    scores = evaluate_segmenter(model, [EvalVolume("a", torch.zeros(1, 16, 16, 3), label, (1.0, 1.0, 1.0))])
    assert scores["a"]["edema"]["true_voxels"] == 16.0 and scores["a"]["tumor"]["true_voxels"] == 0.0
    assert all(scores["a"][r]["pred_voxels"] >= 0 for r in ("edema", "cavity", "tumor"))
