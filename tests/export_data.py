"""Tiny BraTS-2021-style subjects on the tiny test atlas grid (32x32x8), shared by the nnU-Net export tests."""

from __future__ import annotations

import torch
import torchio as tio
from tiny_model import AFFINE, SEQS, SHAPE, tiny_brain

from samraug.editing import EditPolicy

#: Every edit is a lesion swap (so donors are used and recorded).
SWAP_ALWAYS = EditPolicy(p_swap=1.0, p_remove=0.0)


def tiny_subject(index: int, keys: tuple[str, ...] = SEQS, scheme: str = "brats2021") -> tio.Subject:
    """Case ``P{index // 2}-{index % 2}``-style ids: two time points per patient (BraTS 2023 naming)."""
    g = torch.Generator().manual_seed(index)
    brain = tiny_brain(slice(1, 7))
    seg = torch.zeros(SHAPE, dtype=torch.uint8)
    shift = index % 4
    seg[9 + shift : 19 + shift, 10:19, 2:6] = 2
    seg[11 + shift : 17 + shift, 12:17, 2:6] = 4 if scheme == "brats2021" else 3
    seg[13 + shift : 15 + shift, 13:16, 3:5] = 1
    images = {
        k: tio.ScalarImage(
            tensor=torch.where(brain, 40.0 * (i + 1) + 30 * torch.rand(SHAPE, generator=g), 0.0)[None], affine=AFFINE
        )
        for i, k in enumerate(keys)
    }
    case = f"BraTS-GLI-{index // 2:05d}-{index % 2:03d}"
    return tio.Subject(**images, seg=tio.LabelMap(tensor=seg[None], affine=AFFINE), scheme=scheme, subject_id=case)


def tiny_subjects(n: int, **kwargs) -> list[tio.Subject]:
    return [tiny_subject(i, **kwargs) for i in range(n)]
