"""Networks: the SAMR generator and baselines, the label-wise discriminators and the U-Net."""

from __future__ import annotations

from samraug.models.discriminator import LabelWiseDiscriminators, PatchDiscriminator
from samraug.models.generator import (
    GENERATOR_PRESETS,
    MODEL_TYPES,
    PRESETS,
    Pix2PixGenerator,
    SAMRGenerator,
    build_generator,
    generator_class,
    generator_from_config,
)
from samraug.models.local import LOCAL_PRESETS, LocalGenerator, build_local_generator, build_local_inputs
from samraug.models.unet import UNet

__all__ = [
    "GENERATOR_PRESETS",
    "LOCAL_PRESETS",
    "MODEL_TYPES",
    "PRESETS",
    "LabelWiseDiscriminators",
    "LocalGenerator",
    "PatchDiscriminator",
    "Pix2PixGenerator",
    "SAMRGenerator",
    "UNet",
    "build_generator",
    "build_local_generator",
    "build_local_inputs",
    "generator_class",
    "generator_from_config",
]
