"""The local generator: paints a region of a slice from the edited label map and the surrounding real images.

Where the whole-slice SAMR generator draws a complete slice from a mask and an atlas, the local generator
repaints only a *region* (a lesion with a margin, or a patch of healthy tissue) and keeps every other voxel: the
paper's atlas encoder is replaced by a *context* encoder that sees the real images with the region blanked out.
Slices are 2.5D: the model sees ``c`` slices on each side of the painted one (``context_slices``).

Inputs (slice-major channel layout, ``K`` classes, ``S`` sequences, ``2c + 1`` slices ``z-c .. z+c``):

- ``mask`` ``(B, K * (2c+1), H, W)``: one-hot model classes of the EDITED label map
  (``scheme.encode(edited, brain)``); slice ``j``'s classes are channels ``j*K .. j*K+K-1``;
- ``context`` ``(B, (S+1) * (2c+1), H, W)``: for slice ``j``, its ``S`` normalised sequences with every voxel of
  the region set to 0, then the region mask (1 inside, 0 outside).

Output ``(B, S, H, W)`` in [-1, 1]: the painted central slice. Outside the central slice's region it is exactly
the context's images (the model composites), so only the region is generated. :func:`build_local_inputs` is the
one function that builds ``(mask, context)`` from volumes, for training and inference alike.

Architecture (SAMR blocks): a mask encoder and a context encoder (7x7 conv + ``n_down`` stride-2 3x3 convs each),
concatenated into ``n_res_blocks`` residual blocks, then one decoder per sequence (stretch-out: a residual block,
``n_down`` resize-convolution up-samplings, 7x7 conv, tanh). With ``skips=True`` every decoder level also receives
both encoders' features of that level (U-Net skips), which carries the surrounding texture to the region border.

Presets (:data:`LOCAL_PRESETS`), parameters for 5 sequences and 6 classes: ``tiny`` (CPU, 64x64 crops; 3.4 M)
and ``lite`` (GPU; 19 M).

Example:
    >>> import torch
    >>> g = build_local_generator("tiny", sequences=("t1n", "t2f"), n_labels=6, context_slices=1)
    >>> classes = torch.randint(0, 6, (1, 5, 32, 32)); images = torch.rand(1, 2, 5, 32, 32) * 2 - 1
    >>> region = torch.zeros(1, 5, 32, 32, dtype=torch.bool); region[:, :, 8:20, 8:20] = True
    >>> mask, context = build_local_inputs(classes, images, region, n_labels=6, c=1)
    >>> mask.shape, context.shape
    (torch.Size([5, 18, 32, 32]), torch.Size([5, 9, 32, 32]))
    >>> g(mask, context).shape
    torch.Size([5, 2, 32, 32])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from samraug.models.blocks import (
    UPSAMPLE_MODES,
    ArchitectureConfig,
    LevelEncoder,
    ResnetBlock,
    SkipDecoder,
    channel_plan,
    check_divisible,
)

__all__ = ["LOCAL_PRESETS", "LocalGenerator", "build_local_generator", "build_local_inputs"]

#: Architecture presets of the local generator (LocalGenerator kwargs).
LOCAL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"base_channels": 16, "max_channels": 64, "n_down": 3, "n_res_blocks": 2},
    "lite": {"base_channels": 32, "max_channels": 128, "n_down": 4, "n_res_blocks": 4},
}


def build_local_inputs(
    classes: torch.Tensor,
    images: torch.Tensor,
    region: torch.Tensor,
    n_labels: int,
    c: int,
    z: Sequence[int] | None = None,
    fill: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slice ``(mask, context)`` batches of the local generator from volumes (see the module docstring).

    Args:
        classes: ``(B, D, H, W)`` integer model classes of the edited label map (``0 .. n_labels - 1``).
        images: ``(B, S, D, H, W)`` normalised images in [-1, 1].
        region: ``(B, D, H, W)`` bool (or 0/1) region to paint.
        n_labels: ``K``, the number of model classes.
        c: Context slices on each side (``>= 0``).
        z: The slices to build, in this order (default: all ``D``). Neighbours beyond the volume edge repeat the
            edge slice (clamped index).
        fill: ``(B, S, D, H, W)`` values shown inside the region instead of 0 (weights with ``context_fill:
            "harmonic"``: :func:`samraug.seam.harmonic_fill`); None: the region is blanked (0).

    Returns:
        ``mask (B * len(z), K * (2c+1), H, W)`` float and ``context (B * len(z), (S+1) * (2c+1), H, W)`` in
        ``images``' dtype, batch-major (``b * len(z) + i`` is volume ``b``, slice ``z[i]``).

    Example:
        >>> classes = torch.zeros(1, 3, 8, 8, dtype=torch.long); images = torch.ones(1, 2, 3, 8, 8)
        >>> region = torch.zeros(1, 3, 8, 8, dtype=torch.bool); region[0, 0, :4] = True
        >>> mask, context = build_local_inputs(classes, images, region, n_labels=3, c=1, z=[0])
        >>> context[0, :3, 0, 0].tolist(), context[0, 3:6, 0, 0].tolist()  # slice -1 = slice 0 (clamped)
        ([0.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    """
    if classes.dim() != 4:
        raise ValueError(f"classes must be (B, D, H, W) model classes, got shape {tuple(classes.shape)}")
    b, d, h, w = classes.shape
    if images.dim() != 5 or images.shape[0] != b or tuple(images.shape[2:]) != (d, h, w):
        raise ValueError(
            f"images must be (B, S, D, H, W) = ({b}, S, {d}, {h}, {w}) like classes, got {tuple(images.shape)}"
        )
    if tuple(region.shape) != (b, d, h, w):
        raise ValueError(f"region must be (B, D, H, W) = {(b, d, h, w)} like classes, got {tuple(region.shape)}")
    if fill is not None and tuple(fill.shape) != tuple(images.shape):
        raise ValueError(f"fill must be shaped like images {tuple(images.shape)}, got {tuple(fill.shape)}")
    if not isinstance(c, int) or isinstance(c, bool) or c < 0:
        raise ValueError(f"c (context slices on each side) must be an integer >= 0, got {c!r}")
    if classes.is_floating_point():
        raise ValueError(f"classes must be an integer class map, got {classes.dtype}; pass scheme.encode(...)")
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= n_labels):
        raise ValueError(
            f"classes hold values {int(classes.min())}..{int(classes.max())} outside 0..{n_labels - 1}; encode the "
            f"label map with the weights' scheme and conditioning (n_labels={n_labels})"
        )
    zs = list(range(d)) if z is None else [int(v) for v in z]
    bad = [v for v in zs if not 0 <= v < d]
    if bad:
        raise IndexError(f"slices {bad[:5]} out of range 0..{d - 1}")
    offsets = torch.arange(-c, c + 1)
    index = (torch.as_tensor(zs)[:, None] + offsets[None]).clamp(0, d - 1)  # (n, 2c+1)
    n, k = len(zs), 2 * c + 1
    cls = classes[:, index]  # (B, n, 2c+1, H, W)
    onehot = nn.functional.one_hot(cls.long(), n_labels).to(images.dtype)  # (B, n, 2c+1, H, W, K)
    mask = onehot.permute(0, 1, 2, 5, 3, 4).reshape(b * n, k * n_labels, h, w)
    reg = region[:, index].to(images.dtype)  # (B, n, 2c+1, H, W)
    img = images[:, :, index]  # (B, S, n, 2c+1, H, W)
    img = img.permute(0, 2, 3, 1, 4, 5) * (1 - reg[:, :, :, None])  # (B, n, 2c+1, S, H, W), region zeroed
    if fill is not None:  # the region shows the fill instead
        img = img + fill.to(images.dtype)[:, :, index].permute(0, 2, 3, 1, 4, 5) * reg[:, :, :, None]
    context = torch.cat([img, reg[:, :, :, None]], dim=3).reshape(b * n, k * (images.shape[1] + 1), h, w)
    return mask.contiguous(), context.contiguous()


class LocalGenerator(ArchitectureConfig, nn.Module):
    """Paints the region of a slice from the edited classes of ``2c+1`` slices and the images around the region.

    Args:
        sequences: Output sequence names, in output order (``S``).
        n_labels: Model classes ``K`` (``len(scheme.classes(conditioning))``).
        context_slices: ``c``, slices on each side of the painted one.
        base_channels, max_channels: Channels of the first level and the cap.
        n_down: Stride-2 down-samplings (H and W must be multiples of ``2**n_down``).
        n_res_blocks: Residual blocks in the trunk.
        skips: Feed both encoders' features of each level to the decoders (U-Net skips).
        norm: ``"instance"`` (default: crops with little background), ``"batch"`` or ``"none"``.
        upsample: ``"resize_conv"`` (default) or ``"transposed"``.
        use_atlas: Always False (recorded in the config so readers see there is no atlas).
        residual: Paint ``clamp(shown + decoder output, -1, 1)`` inside the region, where ``shown`` is what the
            context shows there (the harmonic fill of weights with ``context_fill: "harmonic"``, else 0): the
            decoders paint a residual over the fill, whose absolute level instance normalisation would otherwise
            wash out. No parameters of its own, so ``--init-from`` weights without it is allowed.

    Example:
        >>> g = LocalGenerator(sequences=("t1n",), n_labels=5, context_slices=0, base_channels=4, n_down=2)
        >>> g(torch.zeros(1, 5, 16, 16), torch.zeros(1, 2, 16, 16)).shape
        torch.Size([1, 1, 16, 16])
    """

    model_type = "samr"
    mode = "local"
    use_atlas = False
    #: Options that change no parameter: ``--init-from`` may start from weights that differ in them.
    parameter_free_options = ("residual",)

    def __init__(
        self,
        sequences: Sequence[str] = ("t1n", "t1c", "t2w", "t2f"),
        n_labels: int = 6,
        context_slices: int = 1,
        base_channels: int = 16,
        max_channels: int = 64,
        n_down: int = 3,
        n_res_blocks: int = 2,
        skips: bool = True,
        norm: Literal["batch", "instance", "none"] = "instance",
        upsample: Literal["transposed", "resize_conv"] = "resize_conv",
        use_atlas: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if use_atlas:
            raise ValueError(
                "the local generator uses no atlas (its context encoder sees the real images); use_atlas=False"
            )
        if isinstance(sequences, str):
            raise ValueError(f"sequences must be a list of names, got the string {sequences!r}")
        seq = tuple(sequences)
        if not seq or not all(isinstance(s, str) and s for s in seq) or len(set(seq)) != len(seq):
            raise ValueError(f"sequences must be non-empty, unique sequence names, got {seq!r}")
        for name, value, low in (
            ("n_labels", n_labels, 3),
            ("context_slices", context_slices, 0),
            ("base_channels", base_channels, 1),
            ("max_channels", max_channels, 1),
            ("n_down", n_down, 1),
            ("n_res_blocks", n_res_blocks, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample {upsample!r}; use one of {UPSAMPLE_MODES}")
        self.sequences = seq
        self.n_labels = n_labels
        self.context_slices = context_slices
        self.n_down = n_down
        self.skips = bool(skips)
        self.residual = bool(residual)
        self._config = {
            "sequences": list(seq),
            "n_labels": n_labels,
            "context_slices": context_slices,
            "base_channels": base_channels,
            "max_channels": max_channels,
            "n_down": n_down,
            "n_res_blocks": n_res_blocks,
            "skips": self.skips,
            "norm": norm,
            "upsample": upsample,
            "use_atlas": False,
            "residual": self.residual,
        }
        k = 2 * context_slices + 1
        chans = channel_plan(base_channels, max_channels, n_down + 1)
        self.mask_encoder = LevelEncoder(n_labels * k, chans, norm)
        self.context_encoder = LevelEncoder((len(seq) + 1) * k, chans, norm)
        width = 2 * chans[-1]
        self.trunk = nn.Sequential(*(ResnetBlock(width, norm=norm) for _ in range(n_res_blocks)))
        self.decoders = nn.ModuleList(SkipDecoder(width, chans, norm, upsample, 2 if self.skips else 0) for _ in seq)

    @torch.no_grad()
    def zero_output_(self) -> LocalGenerator:
        """Zero every decoder's output convolution, so a residual generator starts by painting exactly what the
        context shows (how :meth:`~samraug.training.gan.GANTrainer.init_from` turns weights trained without
        ``residual`` into a residual generator). Returns ``self``.

        Example:
            >>> g = LocalGenerator(sequences=("t1n",), n_labels=3, context_slices=0, base_channels=4, n_down=1,
            ...                    residual=True).zero_output_()
            >>> ctx = torch.zeros(1, 2, 4, 4); ctx[:, 0] = 0.3; ctx[:, 1, :2] = 1.0  # region: the top half
            >>> g(torch.zeros(1, 3, 4, 4), ctx).unique().tolist()
            [0.30000001192092896]
        """
        for decoder in self.decoders:
            for p in decoder.out[0].parameters():
                p.zero_()
        return self

    def forward(self, mask: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``mask (B, K*(2c+1), H, W)``, ``context (B, (S+1)*(2c+1), H, W)`` -> ``(B, S, H, W)`` in [-1, 1]."""
        k = 2 * self.context_slices + 1
        want_mask, want_ctx = self.n_labels * k, (len(self.sequences) + 1) * k
        if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[1] != want_mask:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"mask must be (B, {want_mask}, H, W) = {self.n_labels} classes x {k} slices, got {shape}; build it "
                "with samraug.models.local.build_local_inputs"
            )
        if not isinstance(context, torch.Tensor) or context.dim() != 4 or context.shape[1] != want_ctx:
            shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(
                f"context must be (B, {want_ctx}, H, W) = ({len(self.sequences)} sequences + region) x {k} slices, "
                f"got {shape}; build it with samraug.models.local.build_local_inputs"
            )
        if mask.shape[0] != context.shape[0] or mask.shape[2:] != context.shape[2:]:
            raise ValueError(f"mask {tuple(mask.shape)} and context {tuple(context.shape)} differ in batch or size")
        check_divisible(mask, self.n_down, "mask")
        feats_m = self.mask_encoder(mask)
        feats_c = self.context_encoder(context)
        x = self.trunk(torch.cat([feats_m[-1], feats_c[-1]], dim=1))
        skips = [torch.cat([a, b], dim=1) for a, b in zip(feats_m[:-1], feats_c[:-1], strict=True)]
        painted = torch.cat([dec(x, skips) for dec in self.decoders], dim=1)
        # composite: outside the central slice's region the output is the known image
        s = len(self.sequences)
        centre = self.context_slices * (s + 1)
        known = context[:, centre : centre + s]
        region = context[:, centre + s : centre + s + 1]
        if self.residual:  # over what the context shows in the region (its fill, or 0)
            painted = (known + painted).clamp(-1.0, 1.0)
        return region * painted + (1 - region) * known


def build_local_generator(preset: str | Mapping[str, Any] = "tiny", **overrides: Any) -> LocalGenerator:
    """A :class:`LocalGenerator` from a preset name (``tiny``, ``lite``) or a dict of kwargs, with ``overrides``.

    Example:
        >>> build_local_generator("lite", sequences=("t1n",)).n_down
        4
    """
    if isinstance(preset, str):
        if preset not in LOCAL_PRESETS:
            raise ValueError(f"unknown local preset {preset!r}; use one of {list(LOCAL_PRESETS)} or a dict of kwargs")
        kwargs: dict[str, Any] = dict(LOCAL_PRESETS[preset])
    elif isinstance(preset, Mapping):
        kwargs = dict(preset)
    else:
        raise TypeError(f"preset must be a preset name or a dict of kwargs, got {type(preset).__name__}")
    kwargs.update(overrides)
    unknown = sorted(set(kwargs) - set(LocalGenerator.init_keys()))
    if unknown:
        raise ValueError(f"unknown LocalGenerator arguments {unknown}; allowed: {list(LocalGenerator.init_keys())}")
    return LocalGenerator(**kwargs)
