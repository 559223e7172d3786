"""Building blocks shared by the SAMR generator, the baselines, the discriminators and the U-Net.

All blocks are plain ``nn.Module``s that make no assumption on dtype or memory format, so they run under
``torch.autocast`` and with ``channels_last`` tensors.

Example:
    >>> import torch
    >>> block = ResnetBlock(16, norm="batch")
    >>> block(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 16, 8, 8])
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "NORMS",
    "UPSAMPLE_MODES",
    "ArchitectureConfig",
    "ConvNormAct",
    "DoubleConv",
    "LevelEncoder",
    "NormKind",
    "OutputConv",
    "ResizeConvNormAct",
    "ResnetBlock",
    "SkipDecoder",
    "UpConvNormAct",
    "UpsampleKind",
    "channel_plan",
    "check_divisible",
    "norm_layer",
    "up_block",
]

NormKind = Literal["batch", "instance", "none"]
NORMS: tuple[str, ...] = ("batch", "instance", "none")
UpsampleKind = Literal["transposed", "resize_conv"]
#: Decoder up-sampling: ``transposed`` (3x3 stride-2 transposed conv, pix2pixHD; prone to checkerboard artefacts)
#: or ``resize_conv`` (nearest-neighbour x2 then a 3x3 conv, Odena et al. 2016: no uneven kernel overlap).
UPSAMPLE_MODES: tuple[str, ...] = ("transposed", "resize_conv")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A 2D normalisation layer: ``batch`` (BatchNorm2d), ``instance`` (InstanceNorm2d, no affine, as in
    pix2pixHD) or ``none`` (identity)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use one of {NORMS}")


def _check_norm(kind: str) -> str:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; use one of {NORMS}")
    return kind


def channel_plan(base_channels: int, max_channels: int | None, n_levels: int) -> list[int]:
    """Channels per level: ``base * 2**i`` capped at ``max_channels``, for ``i = 0 .. n_levels - 1``.

    Example:
        >>> channel_plan(64, 512, 6)
        [64, 128, 256, 512, 512, 512]
    """
    if base_channels < 1:
        raise ValueError(f"base_channels must be >= 1, got {base_channels}")
    if max_channels is not None and max_channels < base_channels:
        raise ValueError(f"max_channels ({max_channels}) must be >= base_channels ({base_channels}) or None")
    cap = max_channels if max_channels is not None else 1 << 62
    return [min(base_channels * 2**i, cap) for i in range(n_levels)]


def check_divisible(x: torch.Tensor, n_down: int, what: str, min_bottleneck: int = 1) -> None:
    """Raise a ``ValueError`` naming the sizes if ``H, W`` are not multiples of ``2**n_down`` (and at least
    ``min_bottleneck * 2**n_down``)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    factor = 2**n_down
    if h % factor or w % factor or h < min_bottleneck * factor or w < min_bottleneck * factor:
        smallest = min_bottleneck * factor
        raise ValueError(
            f"{what} has spatial size {h}x{w}, but it must be a multiple of 2**{n_down} = {factor} "
            f"(and at least {smallest}x{smallest}); pad the slice (centred) to a multiple of {factor}, e.g. "
            f"samraug.data.slices.pad_or_crop(x, padded_size(x.shape[-2:], {factor})) (BraTS 240 -> 256, "
            "phantom 99x117 -> 128x128)"
        )


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation. ``pad_mode='reflect'`` gives the reflection padding of pix2pixHD.

    The convolution has a bias only when there is no normalisation (a bias before a norm is cancelled by it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        *,
        norm: str = "batch",
        act: Literal["relu", "lrelu", "none"] = "relu",
        pad_mode: Literal["zeros", "reflect"] = "zeros",
    ) -> None:
        _check_norm(norm)
        if padding is None:
            padding = kernel_size // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                padding_mode=pad_mode,
                bias=norm == "none",
            ),
            norm_layer(norm, out_channels),
        ]
        if act == "relu":
            layers.append(nn.ReLU(inplace=True))
        elif act == "lrelu":
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        elif act != "none":
            raise ValueError(f"unknown activation {act!r}; use 'relu', 'lrelu' or 'none'")
        super().__init__(*layers)


class OutputConv(nn.Conv2d):
    """Size-preserving output convolution with reflection padding (a plain ``nn.Conv2d``: same parameters and
    state-dict keys).

    oneDNN runs convolutions with a single output channel about 6x slower than their cost suggests, so for CPU
    inference (no autograd) a one-channel output is computed as a depthwise convolution summed over channels:
    the same result up to float rounding. Training and GPUs use the ordinary convolution.

    Example:
        >>> conv = OutputConv(16, 1, 7)
        >>> x = torch.randn(2, 16, 32, 32)
        >>> with torch.no_grad():
        ...     padded = torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect")
        ...     ref = torch.nn.functional.conv2d(padded, conv.weight, conv.bias)
        ...     torch.allclose(conv(x), ref, atol=1e-5)
        True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_channels != 1 or x.device.type != "cpu" or torch.is_grad_enabled():
            return super().forward(x)
        p = self.kernel_size[0] // 2
        padded = nn.functional.pad(x, (p, p, p, p), mode="reflect")
        weight = self.weight.reshape(self.in_channels, 1, *self.kernel_size)
        y = nn.functional.conv2d(padded, weight.to(padded.dtype), groups=self.in_channels).sum(1, keepdim=True)
        return y + self.bias.to(y.dtype).view(1, 1, 1, 1)


class UpConvNormAct(nn.Sequential):
    """2x up-sampling by a 3x3 transposed convolution (stride 2, output padding 1) -> norm -> ReLU,
    the mirror of a 3x3 stride-2 convolution (pix2pixHD / Johnson et al.)."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batch") -> None:
        _check_norm(norm)
        super().__init__(
            nn.ConvTranspose2d(
                in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=norm == "none"
            ),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class ResizeConvNormAct(nn.Sequential):
    """2x up-sampling by nearest-neighbour resizing then a 3x3 convolution (reflection padding) -> norm -> ReLU.

    Every output pixel sees the same number of input pixels, so unlike a stride-2 transposed convolution it cannot
    produce a checkerboard pattern (Odena, Dumoulin & Olah, Distill 2016).

    Example:
        >>> ResizeConvNormAct(8, 4)(torch.zeros(1, 8, 5, 7)).shape
        torch.Size([1, 4, 10, 14])
    """

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batch") -> None:
        _check_norm(norm)
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvNormAct(in_channels, out_channels, 3, norm=norm, act="relu", pad_mode="reflect"),
        )


def up_block(kind: str, in_channels: int, out_channels: int, *, norm: str = "batch") -> nn.Module:
    """The 2x up-sampling block of a decoder: ``"transposed"`` (:class:`UpConvNormAct`) or ``"resize_conv"``
    (:class:`ResizeConvNormAct`).

    Example:
        >>> type(up_block("resize_conv", 8, 4)).__name__
        'ResizeConvNormAct'
    """
    if kind == "transposed":
        return UpConvNormAct(in_channels, out_channels, norm=norm)
    if kind == "resize_conv":
        return ResizeConvNormAct(in_channels, out_channels, norm=norm)
    raise ValueError(f"unknown upsample {kind!r}; use one of {UPSAMPLE_MODES}")


class ResnetBlock(nn.Module):
    """Residual block ``x + [conv3x3 -> norm -> ReLU -> conv3x3 -> norm](x)`` with reflection padding
    (pix2pixHD ``ResnetBlock``)."""

    def __init__(self, channels: int, *, norm: str = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, 3, norm=norm, act="relu", pad_mode="reflect"),
            ConvNormAct(channels, channels, 3, norm=norm, act="none", pad_mode="reflect"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DoubleConv(nn.Sequential):
    """U-Net double convolution: two ``conv3x3 -> norm -> ReLU`` (zero padding, size preserving)."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batch") -> None:
        super().__init__(
            ConvNormAct(in_channels, out_channels, 3, norm=norm),
            ConvNormAct(out_channels, out_channels, 3, norm=norm),
        )


class LevelEncoder(nn.Module):
    """7x7 conv then ``len(chans) - 1`` stride-2 3x3 convs; returns every level's features (full resolution first),
    for decoders with U-Net skips (:class:`SkipDecoder`).

    Example:
        >>> [tuple(f.shape) for f in LevelEncoder(2, [4, 8], "none")(torch.zeros(1, 2, 8, 8))]
        [(1, 4, 8, 8), (1, 8, 4, 4)]
    """

    def __init__(self, in_channels: int, chans: list[int], norm: str) -> None:
        super().__init__()
        self.stem = ConvNormAct(in_channels, chans[0], 7, norm=norm, pad_mode="reflect")
        self.down = nn.ModuleList(
            ConvNormAct(chans[i], chans[i + 1], 3, stride=2, padding=1, norm=norm) for i in range(len(chans) - 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for layer in self.down:
            feats.append(layer(feats[-1]))
        return feats


class SkipDecoder(nn.Module):
    """One stretch-out branch: ``n_res`` residual blocks, ``len(chans) - 1`` up-samplings (each followed, with
    skips, by a 3x3 conv fusing ``encoders`` encoders' features of that level, :class:`LevelEncoder`), 7x7 conv to
    ``out_channels``, tanh. ``encoders=0``: no skips.

    Example:
        >>> enc = LevelEncoder(2, [4, 8], "none")
        >>> feats = enc(torch.zeros(1, 2, 8, 8))
        >>> SkipDecoder(8, [4, 8], "none", "resize_conv", encoders=1)(feats[-1], feats[:-1]).shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(
        self,
        width: int,
        chans: list[int],
        norm: str,
        upsample: str,
        encoders: int,
        *,
        n_res: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        blocks = [ResnetBlock(width, norm=norm) for _ in range(n_res)]
        self.res = blocks[0] if n_res == 1 else nn.Sequential(*blocks)  # one block: the local weights' layout
        ins = [width, *reversed(chans[1:-1])]
        outs = list(reversed(chans[:-1]))
        self.ups = nn.ModuleList(up_block(upsample, i, o, norm=norm) for i, o in zip(ins, outs, strict=True))
        self.fuse = (
            nn.ModuleList(ConvNormAct((1 + encoders) * o, o, 3, norm=norm, pad_mode="reflect") for o in outs)
            if encoders
            else None
        )
        self.out = nn.Sequential(OutputConv(chans[0], out_channels, 7), nn.Tanh())

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.res(x)
        for i, up in enumerate(self.ups):
            x = up(x)
            if self.fuse is not None:
                x = self.fuse[i](torch.cat([x, skips[-1 - i]], dim=1))
        return self.out(x)


class ArchitectureConfig:
    """What every samraug generator derives from its constructor kwargs (``self._config``), ``n_down`` and
    ``sequences``: the JSON config, the input size multiple, the sequence count and the architecture keys."""

    _config: dict[str, Any]
    n_down: int
    sequences: tuple[str, ...]

    @property
    def config(self) -> dict[str, Any]:
        """The JSON-serialisable constructor kwargs (``type(self)(**g.config)`` rebuilds the architecture)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._config.items()}

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this (``2**n_down``)."""
        return 2**self.n_down

    @property
    def n_sequences(self) -> int:
        return len(self.sequences)

    @classmethod
    def init_keys(cls) -> tuple[str, ...]:
        """The constructor kwargs (the architecture keys of a config)."""
        return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")
