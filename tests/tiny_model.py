"""A random-initialised tiny generator + 32x32x8 atlas, shared by the synthesis, transform, dataset and CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from samraug.atlas import Atlas
from samraug.hub import save_weights
from samraug.models.generator import build_generator

SEQS = ("t1n", "t1c", "t2w", "t2f")
SHAPE = (32, 32, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def tiny_brain(z: slice = slice(1, 7)) -> torch.Tensor:
    """The atlas brain: a box inside the 32x32x8 grid."""
    brain = torch.zeros(SHAPE, dtype=torch.bool)
    brain[4:28, 5:27, z] = True
    return brain


def save_tiny_weights(
    folder: Path, card: dict | None = None, atlas_space: str | None = None, mask_slices: int = 1
) -> str:
    """Save the tiny model (seeded) with the real hub writer; returns the folder as a string. ``mask_slices``: a
    generator that sees that many adjacent mask slices."""
    torch.manual_seed(0)
    # upsample="transposed": the decoder of the bundled weights (outputs identical to the fixture's history)
    extra = {"mask_slices": mask_slices} if mask_slices != 1 else {}
    gen = build_generator(
        "tiny",
        sequences=SEQS,
        base_channels=8,
        max_channels=16,
        n_res_blocks=1,
        n_down=3,
        upsample="transposed",
        **extra,
    )
    brain = tiny_brain()
    data = torch.where(brain, torch.rand(len(SEQS), *SHAPE) * 2 - 1, torch.full((len(SEQS), *SHAPE), -1.0))
    save_weights(
        folder,
        gen,
        Atlas(data, AFFINE, SEQS, brain),
        label_scheme="brats2021",
        conditioning="samr",
        card=card,
        atlas_space=atlas_space,
    )
    return str(folder)


def save_tiny_local_weights(folder: Path, scheme: str = "brats2021", residual: bool = False) -> str:
    """Save a random-initialised tiny local generator (mode "local", 2 mm RAS grid, c=1) with the real hub writer;
    ``residual``: one that paints over a harmonic fill of the region."""
    from samraug.labels import get_scheme
    from samraug.models.local import LocalGenerator

    torch.manual_seed(0)
    gen = LocalGenerator(
        sequences=SEQS,
        n_labels=len(get_scheme(scheme).classes()),
        context_slices=1,
        base_channels=8,
        max_channels=16,
        n_down=2,
        n_res_blocks=1,
        residual=residual,
    )
    fill = {"context_fill": "harmonic"} if residual else {}
    save_weights(folder, gen, None, label_scheme=scheme, voxel_size=(2.0, 2.0, 2.0), crop_size=(32, 32), **fill)
    return str(folder)


def subject_range(image: np.ndarray, brain: np.ndarray, lesion: np.ndarray | None = None) -> tuple[float, float]:
    """Independent re-implementation of the default normalisation's contract: the intensities a painted sequence
    can span in the subject's scale (the ones at -1 and +1), given the real image, its brain and its real lesion.

    p0.5 / p99.5 of the normal-appearing brain (brain minus lesion) map to -0.8 / -0.2, linearly."""
    image, brain = np.asarray(image, dtype=np.float64), np.asarray(brain, dtype=bool)
    normal = brain if lesion is None else brain & ~np.asarray(lesion, dtype=bool)
    lo, hi = np.percentile(image[normal], [0.5, 99.5])
    per_unit = (hi - lo) / 0.6
    return float(lo - 0.2 * per_unit), float(lo + 1.8 * per_unit)
