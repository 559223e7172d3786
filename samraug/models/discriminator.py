"""Multi-scale label-wise PatchGAN discriminators (paper section 2, Fig. 1b).

For each ROI k (background, normal brain, lesion; :func:`samraug.labels.roi_masks`) the input is
``c_k * cat([mask_onehot, images])``; a PatchGAN sees it at the original scale and each further scale sees it
2x average-pooled again. Pooling is pix2pixHD's ``AvgPool2d(3, stride=2, padding=1, count_include_pad=False)`` and
is applied AFTER masking, so the discriminators of ROI k only ever see ROI k: changing the images outside ROI k
leaves them unchanged. With 3 ROIs x 2 scales there are 6 discriminators, returned ROI-major
``[bg s1, bg s2, brain s1, brain s2, lesion s1, lesion s2]``. ``label_wise=False`` gives pix2pixHD's
``n_scales`` global discriminators on the unmasked input (the ablation).

The output is a list with one entry per discriminator, each a list of that discriminator's intermediate feature
maps whose last element is the PatchGAN prediction map (raw scores, no sigmoid): exactly what
:mod:`samraug.losses` consumes for the adversarial and feature-matching losses. Inputs are never modified.

Example:
    >>> import torch
    >>> from samraug.labels import one_hot
    >>> d = LabelWiseDiscriminators(base_channels=8, n_layers=2)
    >>> mask = one_hot(torch.randint(0, 5, (2, 64, 64)))
    >>> out = d(mask, torch.rand(2, 5, 64, 64) * 2 - 1)
    >>> len(out), len(out[0]), out[0][-1].shape
    (6, 4, torch.Size([2, 1, 19, 19]))
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from samraug.labels import N_CLASSES, ROI_NAMES, roi_masks
from samraug.models.blocks import norm_layer

__all__ = ["LabelWiseDiscriminators", "PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """pix2pixHD ``NLayerDiscriminator``: 4x4 convs (padding 2), LeakyReLU 0.2, ``n_layers`` stride-2 convs, one
    stride-1 conv and a 1-channel stride-1 output conv. Returns the ``n_layers + 2`` feature maps, the last being
    the prediction map.

    Example:
        >>> feats = PatchDiscriminator(10, base_channels=8, n_layers=3)(torch.zeros(1, 10, 64, 64))
        >>> [f.shape[-1] for f in feats]
        [33, 17, 9, 10, 11]
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 64,
        n_layers: int = 3,
        norm: Literal["instance", "batch", "none"] = "instance",
        max_channels: int = 512,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        k, pad = 4, math.ceil((4 - 1) / 2)
        bias = norm == "none"
        groups: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, base_channels, k, 2, pad), nn.LeakyReLU(0.2, inplace=True))
        ]
        nf = base_channels
        for i in range(1, n_layers + 1):
            prev, nf = nf, min(nf * 2, max_channels)
            stride = 2 if i < n_layers else 1
            groups.append(
                nn.Sequential(
                    nn.Conv2d(prev, nf, k, stride, pad, bias=bias),
                    norm_layer(norm, nf),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
        groups.append(nn.Sequential(nn.Conv2d(nf, 1, k, 1, pad)))
        self.groups = nn.ModuleList(groups)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for group in self.groups:
            x = group(x)
            feats.append(x)
        return feats


class LabelWiseDiscriminators(nn.Module):
    """The SAMR discriminators: ROI-masked (or global) multi-scale PatchGANs.

    Args:
        n_labels: Channels of the one-hot mask: any class count of :meth:`samraug.labels.LabelScheme.classes`
            (channel 0 background, 1 normal brain, 2.. lesion classes: the ROIs are built from that layout).
        n_sequences: Image channels.
        base_channels: Channels of the first conv of each PatchGAN.
        n_layers: Stride-2 layers per PatchGAN (pix2pixHD: 3).
        label_wise: One set of ``n_scales`` discriminators per ROI (True) or ``n_scales`` global ones (False).
        n_scales: Scales per set (the first is the original resolution).
        norm: ``"instance"`` (pix2pixHD), ``"batch"`` or ``"none"``.
        max_channels: Channel cap of the PatchGANs.

    Example:
        >>> d = LabelWiseDiscriminators(label_wise=False, base_channels=8)
        >>> len(d(torch.zeros(1, 5, 32, 32), torch.zeros(1, 5, 32, 32)))
        2
    """

    def __init__(
        self,
        n_labels: int = N_CLASSES,
        n_sequences: int = 5,
        base_channels: int = 64,
        n_layers: int = 3,
        label_wise: bool = True,
        n_scales: int = 2,
        norm: Literal["instance", "batch", "none"] = "instance",
        max_channels: int = 512,
    ) -> None:
        super().__init__()
        if label_wise and n_labels < 3:
            raise ValueError(
                f"label-wise discriminators build their ROIs from background (channel 0), normal brain (1) and "
                f"lesion classes (2..), so they need n_labels >= 3, got {n_labels}; use label_wise=False"
            )
        if n_scales < 1 or n_sequences < 1:
            raise ValueError(f"n_scales and n_sequences must be >= 1, got {n_scales}, {n_sequences}")
        self.n_labels = n_labels
        self.n_sequences = n_sequences
        self.label_wise = bool(label_wise)
        self.n_scales = n_scales
        self.rois: tuple[str, ...] = ROI_NAMES if self.label_wise else ("global",)
        self.names: tuple[str, ...] = tuple(f"{roi} s{s + 1}" for roi in self.rois for s in range(n_scales))
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(n_labels + n_sequences, base_channels, n_layers, norm, max_channels) for _ in self.names
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, mask_onehot: torch.Tensor, images: torch.Tensor) -> list[list[torch.Tensor]]:
        """``mask_onehot (B, n_labels, H, W)``, ``images (B, n_sequences, H, W)`` -> one feature list per
        discriminator (order: :attr:`names`), each ending with the prediction map."""
        if mask_onehot.dim() != 4 or mask_onehot.shape[1] != self.n_labels:
            raise ValueError(
                f"mask_onehot must be (B, {self.n_labels}, H, W), got {tuple(mask_onehot.shape)}; "
                "use samraug.labels.one_hot"
            )
        if images.dim() != 4 or images.shape[1] != self.n_sequences:
            raise ValueError(f"images must be (B, {self.n_sequences}, H, W), got {tuple(images.shape)}")
        if mask_onehot.shape[0] != images.shape[0] or mask_onehot.shape[2:] != images.shape[2:]:
            raise ValueError(
                f"mask_onehot {tuple(mask_onehot.shape)} and images {tuple(images.shape)} differ in batch or size"
            )
        x = torch.cat([mask_onehot.to(images.dtype), images], dim=1)
        if self.label_wise:
            rois = roi_masks(mask_onehot).to(images.dtype)
            inputs = [x * rois[:, k : k + 1] for k in range(len(self.rois))]
        else:
            inputs = [x]
        out: list[list[torch.Tensor]] = []
        i = 0
        for xk in inputs:
            for s in range(self.n_scales):
                if s:
                    xk = self.downsample(xk)
                out.append(self.discriminators[i](xk))
                i += 1
        return out
