"""Training: the SAMR GAN trainer, its configuration and presets, checkpoints, DDP helpers, logs.

Example:
    >>> from samraug.training import GANTrainer, preset_config
    >>> cfg = preset_config("tiny", max_steps=100)
    >>> trainer = GANTrainer(cfg, sequences=("t1n", "t1c", "t2w", "t2f"))  # doctest: +SKIP
    >>> trainer.fit(train_dataset, val_dataset=val_dataset, out_dir="/tmp/run")  # doctest: +SKIP
"""

from __future__ import annotations

from samraug.training.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from samraug.training.config import (
    MODEL_TYPES,
    PRESETS,
    TRAINING_PRESETS,
    TrainConfig,
    model_defaults,
    preset_config,
)
from samraug.training.distributed import DistEnv, init_distributed
from samraug.training.gan import GANTrainer, TrainResult, image_metrics
from samraug.training.local import LocalGANTrainer
from samraug.training.logging import TrainLogger, sample_grid
from samraug.training.schedule import LinearDecaySchedule

__all__ = [
    "MODEL_TYPES",
    "PRESETS",
    "TRAINING_PRESETS",
    "CheckpointManager",
    "DistEnv",
    "GANTrainer",
    "LinearDecaySchedule",
    "LocalGANTrainer",
    "TrainConfig",
    "TrainLogger",
    "TrainResult",
    "image_metrics",
    "init_distributed",
    "load_checkpoint",
    "model_defaults",
    "preset_config",
    "sample_grid",
    "save_checkpoint",
]
