"""2D U-Net (Ronneberger et al. 2015): the lesion shape-consistency module of SAMR and the benchmark segmenter.

``UNet`` returns logits; apply ``softmax`` over the channel axis for probabilities. The pix2pix baseline
generator (:class:`samraug.models.generator.Pix2PixGenerator`) is this network with a ``tanh`` on top.

Example:
    >>> import torch
    >>> net = UNet(in_channels=5, out_channels=5, depth=4, base_channels=16)
    >>> net(torch.randn(2, 5, 64, 64)).shape
    torch.Size([2, 5, 64, 64])
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from samraug.models.blocks import DoubleConv, channel_plan, check_divisible

__all__ = ["UP_MODES", "UNet"]

UP_MODES: tuple[str, ...] = ("transpose", "bilinear", "resize_conv")


class _Up(nn.Module):
    """Up-sample by 2, concatenate the skip connection, double conv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, *, norm: str, up_mode: str) -> None:
        super().__init__()
        if up_mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, skip_channels, 2, stride=2)
        elif up_mode == "resize_conv":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(in_channels, skip_channels, 3, padding=1, padding_mode="reflect"),
            )
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, skip_channels, 1),
            )
        self.conv = DoubleConv(2 * skip_channels, out_channels, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """2D U-Net: double-conv blocks, ``depth`` max-pool down-samplings, transposed-conv (or bilinear) up-sampling,
    skip concatenation, and a 1x1 output convolution giving logits.

    Args:
        in_channels: Input channels (e.g. number of MR sequences).
        out_channels: Output channels (e.g. number of classes).
        depth: Number of 2x down-samplings; inputs must have H and W divisible by ``2**depth``.
        base_channels: Channels of the first level; doubled at every level, capped at ``max_channels``.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        up_mode: ``"transpose"`` (2x2 transposed convolution), ``"bilinear"`` (bilinear up-sampling + 1x1 conv) or
            ``"resize_conv"`` (nearest up-sampling + 3x3 conv: no checkerboard).
        max_channels: Channel cap per level (``None`` for no cap).

    Example:
        >>> net = UNet(4, 5, depth=3, base_channels=8, norm="instance", up_mode="bilinear")
        >>> net(torch.zeros(1, 4, 32, 32)).shape
        torch.Size([1, 5, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 4,
        base_channels: int = 32,
        norm: Literal["batch", "instance", "none"] = "batch",
        up_mode: Literal["transpose", "bilinear", "resize_conv"] = "transpose",
        max_channels: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if up_mode not in UP_MODES:
            raise ValueError(f"unknown up_mode {up_mode!r}; use one of {UP_MODES}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        chans = channel_plan(base_channels, max_channels, depth + 1)
        self.inc = DoubleConv(in_channels, chans[0], norm=norm)
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(DoubleConv(chans[i], chans[i + 1], norm=norm) for i in range(depth))
        self.up = nn.ModuleList(
            _Up(chans[i + 1], chans[i], chans[i], norm=norm, up_mode=up_mode) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, out_channels, H, W)`` logits."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}; "
                f"check the number of input channels (in_channels={self.in_channels})"
            )
        check_divisible(x, self.depth, "UNet input")
        x = self.inc(x)
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(self.pool(x))
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(x, skip)
        return self.head(x)
