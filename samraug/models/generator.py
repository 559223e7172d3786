"""Generators: the SAMR generator (paper section 2) and the pix2pix / pix2pixHD baselines, as configs of the same
blocks.

Every generator has ``forward(mask, atlas=None) -> images``: ``mask`` is the ``(B, n_labels, H, W)`` one-hot SAMR
mask (:func:`samraug.labels.one_hot`), ``atlas`` the ``(B, atlas_slices * n_sequences, H, W)`` atlas stack
(:meth:`samraug.atlas.Atlas.stack`; ignored by generators built with ``use_atlas=False``), and the output is
``(B, n_sequences, H, W)`` in [-1, 1] (tanh), in the config's ``sequences`` order. ``H`` and ``W`` must be multiples
of ``size_multiple = 2**n_down`` (pad slices with ``samraug.data.slices``).

All generators are ``huggingface_hub.PyTorchModelHubMixin`` classes built from JSON-serialisable kwargs:
``save_pretrained``, ``from_pretrained(folder or "org/name", revision=...)`` and ``push_to_hub`` work on the
generator alone (safetensors, strict loading). For a full weights folder (generator + atlas + model card) use
:mod:`samraug.hub`.

Presets (:data:`GENERATOR_PRESETS`, :func:`build_generator`), all with 5 sequences, 5 labels, 3 atlas slices,
BatchNorm,
one residual block per decoder branch (params: 5-sequence SAMR generator; GFLOPs: one 256x256 slice, forward):

========  ====  ===  ======  ===  ========  ======  ===============================================================
preset    base  cap  n_down  res  params    GFLOPs  use
========  ====  ===  ======  ===  ========  ======  ===============================================================
paper     64    512  5       9    320 M     107     paper scale (GPU). The cap keeps each encoder at 512 channels,
                                                    so the trunk is 1024 wide like pix2pixHD's global generator
                                                    (uncapped, 5 down-samplings would give 2048 per encoder).
lite      32    128  5       6    17.5 M    18      default for on-the-fly augmentation (a few ms per 256x256
                                                    slice on a GPU); 35 MB in float16.
tiny      16    64   4       3    3.25 M    6.6     CPU: 1.7 GFLOPs per 128x128 slice, ~35-55 ms forward on one
                                                    core, a G+D training step of 8 slices ~1.5-2 s; tests and the
                                                    bundled demo weights; 6.5 MB in float16.
========  ====  ===  ======  ===  ========  ======  ===============================================================

Most parameters sit in the residual blocks at the bottleneck (trunk + one block per decoder branch, all at the
trunk width), most FLOPs in the full-resolution 7x7 convolutions and the last transposed convolutions, which is
why ``lite`` keeps ``base_channels`` and lowers the cap. On CPU, ``channels_last`` runs 1.3-2x faster than the
contiguous format (``benchmarks/model_size.py``).

Baselines (``model_type``): ``"pix2pix"`` is a U-Net generator on the mask only (:class:`Pix2PixGenerator`,
depth = the preset's ``n_down``, same width and cap); ``"pix2pixhd"`` is pix2pixHD's global generator, i.e.
``SAMRGenerator(stretch_out=False, use_atlas=False, decoder_res_blocks=0)``. The paper's ablations are
``stretch_out=False`` (one shared decoder, same structure as a branch) and ``use_atlas=False``.

Example:
    >>> import torch
    >>> from samraug.labels import one_hot
    >>> g = build_generator("tiny")
    >>> mask = one_hot(torch.randint(0, 5, (2, 64, 64)))
    >>> g(mask, torch.zeros(2, 15, 64, 64)).shape
    torch.Size([2, 5, 64, 64])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from samraug.models.blocks import (
    UPSAMPLE_MODES,
    ArchitectureConfig,
    ConvNormAct,
    LevelEncoder,
    OutputConv,
    ResnetBlock,
    SkipDecoder,
    channel_plan,
    check_divisible,
    up_block,
)
from samraug.models.local import LocalGenerator
from samraug.models.unet import UNet
from samraug.serialization import (
    CONFIG_NAME,
    LEGACY_UPSAMPLE,
    META_KEYS,
    MODEL_NAME,
    WeightsError,
    check_format_version,
    is_offline,
    load_state_dict_strict,
    read_safetensors,
    save_state_dict,
)

__all__ = [
    "DEFAULT_SEQUENCES",
    "GENERATOR_PRESETS",
    "MODEL_TYPES",
    "MODES",
    "PRESETS",
    "Pix2PixGenerator",
    "SAMRGenerator",
    "build_generator",
    "generator_class",
    "generator_from_config",
]

DEFAULT_SEQUENCES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f", "aptw")
MODEL_TYPES: tuple[str, ...] = ("samr", "pix2pixhd", "pix2pix")
#: Generator modes of a weights config: ``whole`` (whole slices from a mask + atlas), ``local`` (region painting).
MODES: tuple[str, ...] = ("whole", "local")

#: Architecture presets (SAMRGenerator kwargs); see the module docstring for the reasoning. Not to be confused
#: with the training presets of :mod:`samraug.training.config` (``TRAINING_PRESETS``).
GENERATOR_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"base_channels": 64, "max_channels": 512, "n_down": 5, "n_res_blocks": 9},
    "lite": {"base_channels": 32, "max_channels": 128, "n_down": 5, "n_res_blocks": 6},
    "tiny": {"base_channels": 16, "max_channels": 64, "n_down": 4, "n_res_blocks": 3},
}
#: Former name of :data:`GENERATOR_PRESETS` (kept for existing imports).
PRESETS = GENERATOR_PRESETS

_CARD_TEMPLATE = """
---
{{ card_data }}
---

# samraug generator

A generator of [samraug](https://pypi.org/project/samraug/) (SAMR, MICCAI 2020): one-hot lesion mask (+ atlas
slices) -> co-registered MR slices in [-1, 1]. Saved with `save_pretrained` (generator only); a full weights folder
(generator + atlas + model card) is written by `samraug.hub.save_weights`.
"""


def _check_mask(mask: torch.Tensor, n_labels: int, mask_slices: int = 1) -> None:
    channels = n_labels * mask_slices
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[1] != channels:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        if mask_slices > 1:
            raise ValueError(
                f"mask must be a (B, {channels}, H, W) one-hot stack ({mask_slices} adjacent slices x {n_labels} "
                f"classes, slice-major), got {shape}; build it with samraug.labels.mask_stack"
            )
        raise ValueError(
            f"mask must be a (B, {n_labels}, H, W) one-hot tensor, got {shape}; "
            "build it with samraug.labels.one_hot(samr_classes) (classes on dim 1)"
        )
    if not mask.is_floating_point():
        raise ValueError(f"mask must be floating point (one-hot), got {mask.dtype}; use samraug.labels.one_hot")


class _GeneratorBase(
    ArchitectureConfig,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="samraug",
    license="apache-2.0",
    tags=["samraug", "mri", "image-synthesis"],
    model_card_template=_CARD_TEMPLATE,
):
    """Shared Hub behaviour: safetensors only, strict loading with clear errors, ``model_type`` in the config."""

    _default_model_type: str = "samr"
    model_type: str
    sequences: tuple[str, ...]
    n_labels: int
    n_down: int
    use_atlas: bool

    def _set_config(self, config: dict[str, Any]) -> None:
        self._config = config
        self._hub_mixin_config = {"model_type": self.model_type, **config}

    # ---- PyTorchModelHubMixin hooks
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, local_files_only: bool = False, **kwargs):
        """Load a generator saved with ``save_pretrained`` or ``samraug.hub.save_weights`` (a local folder or a Hub
        repo id; ``revision=``, ``cache_dir=`` as in huggingface_hub). ``HF_HUB_OFFLINE=1`` set at any time keeps
        it to the local cache. Loading is strict (see :func:`samraug.hub.load_state_dict_strict`).

        Example:
            >>> g = SAMRGenerator.from_pretrained("my-org/samr-lite", revision="v1")  # doctest: +SKIP
        """
        return super().from_pretrained(
            pretrained_model_name_or_path, local_files_only=local_files_only or is_offline(), **kwargs
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        save_state_dict(self, Path(save_directory) / MODEL_NAME, metadata={"model_type": self.model_type})

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        config: dict[str, Any] | None = None,
        **model_kwargs: Any,
    ) -> _GeneratorBase:
        if config is None:
            raise FileNotFoundError(
                f"{CONFIG_NAME!r} not found for {model_id!r}; save generators with save_pretrained or "
                "samraug.hub.save_weights (the config holds the architecture)"
            )
        model_type = config.get("model_type", cls._default_model_type)
        source = f"{model_id}/{CONFIG_NAME}"
        check_format_version(config, source)
        try:
            other = generator_class(model_type, config.get("mode", "whole"))
        except ValueError as e:
            raise WeightsError(f"{source}: {e}") from None
        if other is not cls:
            raise WeightsError(
                f"{model_id} holds a {model_type!r} generator, not a {cls.__name__}; load it with "
                f"{other.__name__}.from_pretrained or samraug.hub.load_weights"
            )
        model_kwargs = _legacy_kwargs(cls, {k: v for k, v in model_kwargs.items() if k not in META_KEYS})
        unknown = sorted((set(config) | set(model_kwargs)) - set(cls.init_keys()) - set(META_KEYS) - {"up_mode"})
        if unknown:
            raise WeightsError(
                f"{source} has unknown keys {unknown} for {cls.__name__} (allowed: {list(cls.init_keys())}); the "
                "weights were written by another tool or a newer samraug"
            )
        model = cls(**model_kwargs)
        if Path(model_id).is_dir():
            model_file = Path(model_id) / MODEL_NAME
        else:
            from huggingface_hub import hf_hub_download  # the download client: loaded only for a Hub id

            model_file = Path(
                hf_hub_download(
                    repo_id=model_id,
                    filename=MODEL_NAME,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    token=token,
                    local_files_only=local_files_only,
                )
            )
        tensors, _ = read_safetensors(model_file, "generator weights")
        load_state_dict_strict(model, tensors, source=str(model_file))
        return model.to(map_location).eval()


class SAMRGenerator(_GeneratorBase):
    """The SAMR generator (paper section 2, Fig. 1a).

    Mask encoder: 7x7 stride-1 conv then ``n_down`` 3x3 stride-2 convs, each followed by norm + ReLU, channels
    ``base_channels * 2**i`` capped at ``max_channels``. Atlas encoder: the same with ``atlas_slices * n_sequences``
    inputs. The two latents are concatenated and passed through ``n_res_blocks`` residual blocks. Stretch-out
    decoders (``stretch_out=True``): one branch per sequence, each ``decoder_res_blocks`` residual blocks +
    ``n_down`` 3x3 transposed convs mirroring the encoder + a 7x7 conv to one channel + tanh; outputs are
    concatenated in ``sequences`` order. ``stretch_out=False``: one shared decoder of the same structure with
    ``n_sequences`` outputs. Reflection padding in the 7x7 and residual convs (pix2pixHD), zero padding in the
    strided convs.

    Args:
        sequences: Output sequence names, in output order.
        n_labels: Channels of the one-hot mask (5 SAMR classes).
        atlas_slices: Adjacent atlas slices per sequence (3: z-1, z, z+1).
        mask_slices: Adjacent mask slices the mask encoder sees (odd; 1: the paper's single slice, what configs
            without the key mean; ``2c + 1``: slices ``z - c .. z + c``, one-hot and slice-major, see
            :func:`samraug.labels.mask_stack`), so that what varies through the plane (a lesion ending above the
            slice) is painted consistently from slice to slice.
        base_channels: Channels after the first conv.
        max_channels: Channel cap of the encoders (the trunk has twice this with the atlas).
        n_down: Number of stride-2 down-samplings (inputs must be multiples of ``2**n_down``).
        n_res_blocks: Residual blocks in the trunk.
        stretch_out: One decoder per sequence (True) or one shared decoder (False).
        use_atlas: Use the atlas encoder (False: mask only; ``atlas`` is then ignored).
        decoder_res_blocks: Residual blocks at the start of each decoder (paper: 1; pix2pixHD: 0).
        norm: ``"batch"`` (paper), ``"instance"`` (pix2pixHD) or ``"none"``.
        upsample: Decoder up-sampling: ``"resize_conv"`` (nearest x2 + 3x3 conv; no checkerboard artefacts; the
            default) or ``"transposed"`` (3x3 stride-2 transposed conv, pix2pixHD; what configs written before this
            option mean).
        skips: U-Net skips (not in the paper, whose decoders see only the bottleneck): each decoder level also
            receives both encoders' features of that level, so the atlas's anatomy reaches the output at full
            resolution instead of through the ``2**n_down`` bottleneck. False (the paper's, and what configs
            without the key mean) keeps the original layout.

    Example:
        >>> g = SAMRGenerator(sequences=("t1n", "t2f"), base_channels=8, max_channels=32, n_down=3, n_res_blocks=1)
        >>> g(torch.zeros(1, 5, 32, 32), torch.zeros(1, 6, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
    """

    def __init__(
        self,
        sequences: Sequence[str] = DEFAULT_SEQUENCES,
        n_labels: int = 5,
        atlas_slices: int = 3,
        base_channels: int = 64,
        max_channels: int = 512,
        n_down: int = 5,
        n_res_blocks: int = 9,
        stretch_out: bool = True,
        use_atlas: bool = True,
        decoder_res_blocks: int = 1,
        norm: Literal["batch", "instance", "none"] = "batch",
        upsample: Literal["transposed", "resize_conv"] = "resize_conv",
        skips: bool = False,
        mask_slices: int = 1,
    ) -> None:
        super().__init__()
        sequences = _check_sequences(sequences)
        _check_upsample(upsample)
        for name, value, low in (
            ("n_labels", n_labels, 1),
            ("atlas_slices", atlas_slices, 1),
            ("mask_slices", mask_slices, 1),
            ("base_channels", base_channels, 1),
            ("max_channels", max_channels, 1),
            ("n_down", n_down, 0),
            ("n_res_blocks", n_res_blocks, 0),
            ("decoder_res_blocks", decoder_res_blocks, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if mask_slices % 2 != 1:
            raise ValueError(f"mask_slices must be odd (slices z - c .. z + c), got {mask_slices}")
        self.sequences = sequences
        self.n_labels = n_labels
        self.atlas_slices = atlas_slices
        self.mask_slices = mask_slices
        self.n_down = n_down
        self.stretch_out = bool(stretch_out)
        self.use_atlas = bool(use_atlas)
        self.skips = bool(skips)
        self._set_config(
            {
                "sequences": sequences,
                "n_labels": n_labels,
                "atlas_slices": atlas_slices,
                "base_channels": base_channels,
                "max_channels": max_channels,
                "n_down": n_down,
                "n_res_blocks": n_res_blocks,
                "stretch_out": self.stretch_out,
                "use_atlas": self.use_atlas,
                "decoder_res_blocks": decoder_res_blocks,
                "norm": norm,
                "upsample": upsample,
                **({"skips": True} if self.skips else {}),  # configs without the key: no skips
                **({"mask_slices": mask_slices} if mask_slices != 1 else {}),  # without the key: one slice
            }
        )
        chans = channel_plan(base_channels, max_channels, n_down + 1)
        encoder = (lambda c: LevelEncoder(c, chans, norm)) if self.skips else (lambda c: _encoder(c, chans, norm))
        self.mask_encoder = encoder(n_labels * mask_slices)
        self.atlas_encoder = encoder(self.atlas_channels) if self.use_atlas else None
        width = chans[-1] * (2 if self.use_atlas else 1)
        self.trunk = nn.Sequential(*(ResnetBlock(width, norm=norm) for _ in range(n_res_blocks)))
        n_branches, out_per_branch = (len(sequences), 1) if self.stretch_out else (1, len(sequences))
        encoders = 2 if self.use_atlas else 1
        self.decoders = nn.ModuleList(
            SkipDecoder(width, chans, norm, upsample, encoders, n_res=decoder_res_blocks, out_channels=out_per_branch)
            if self.skips
            else _decoder(width, chans, out_per_branch, decoder_res_blocks, norm, upsample)
            for _ in range(n_branches)
        )

    @property
    def model_type(self) -> str:  # type: ignore[override]
        """``"pix2pixhd"`` for the global-generator configuration (no stretch-out, no atlas), else ``"samr"``."""
        return "pix2pixhd" if not self.stretch_out and not self.use_atlas else "samr"

    @property
    def atlas_channels(self) -> int:
        """Channels of the atlas input: ``atlas_slices * n_sequences``."""
        return self.atlas_slices * len(self.sequences)

    def mask_input_conv(self) -> nn.Conv2d:
        """The mask encoder's first convolution (the only layer that sees the mask slices)."""
        return next(m for m in self.mask_encoder.modules() if isinstance(m, nn.Conv2d))

    @torch.no_grad()
    def widen_from(self, narrow: SAMRGenerator) -> None:
        """Take the weights of ``narrow``, a generator of the same architecture that sees fewer mask slices.

        Every parameter and buffer is copied; the first mask convolution gets ``narrow``'s kernels on the central
        slice's channels and zeros on the added slices' channels, so this generator paints exactly what
        ``narrow`` painted from the central slice until training teaches it to use the others (fine-tuning
        ``--init-from`` weights of a single-slice generator).

        Example:
            >>> from samraug.labels import one_hot
            >>> kw = dict(sequences=("t1n",), n_labels=3, base_channels=4, max_channels=8, n_down=2, n_res_blocks=1)
            >>> one, three = SAMRGenerator(**kw).eval(), SAMRGenerator(**kw, mask_slices=3).eval()
            >>> three.widen_from(one)
            >>> m, a = one_hot(torch.randint(0, 3, (1, 16, 16)), 3), torch.zeros(1, 3, 16, 16)
            >>> bool(torch.allclose(three(m.repeat(1, 3, 1, 1), a), one(m, a)))
            True
        """
        if not isinstance(narrow, SAMRGenerator) or narrow.mask_slices > self.mask_slices:
            raise ValueError("widen_from needs a SAMRGenerator that sees at most as many mask slices as this one")
        mine, theirs = dict(self.config), dict(narrow.config)
        mine.pop("mask_slices", None)
        theirs.pop("mask_slices", None)
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"widen_from: the generators differ in more than mask_slices: {diff}")
        conv, src = self.mask_input_conv(), narrow.mask_input_conv()
        state = narrow.state_dict()
        key = next(k for k, p in narrow.named_parameters() if p is src.weight)
        k, offset = self.n_labels, (self.mask_slices - narrow.mask_slices) // 2 * self.n_labels
        wide = torch.zeros_like(conv.weight)
        wide[:, offset : offset + k * narrow.mask_slices] = src.weight
        state[key] = wide
        self.load_state_dict(state)

    def forward(self, mask: torch.Tensor, atlas: torch.Tensor | None = None) -> torch.Tensor:
        """``mask (B, mask_slices * n_labels, H, W)`` (slice-major, :func:`samraug.labels.mask_stack`),
        ``atlas (B, atlas_slices * n_seq, H, W)`` -> ``(B, n_seq, H, W)``."""
        _check_mask(mask, self.n_labels, self.mask_slices)
        check_divisible(mask, self.n_down, "mask", min_bottleneck=2)
        feats = self.mask_encoder(mask)
        latent = feats[-1] if self.skips else feats
        if self.use_atlas:
            if atlas is None:
                raise ValueError(
                    "this generator uses an atlas (use_atlas=True) but atlas is None; pass "
                    f"atlas=(B, {self.atlas_channels}, H, W), e.g. Atlas.stack(z) of the slices' z indices"
                )
            want = (mask.shape[0], self.atlas_channels, mask.shape[2], mask.shape[3])
            if atlas.dim() != 4 or tuple(atlas.shape) != want:
                raise ValueError(
                    f"atlas must have shape {want} ({self.atlas_slices} slices x {len(self.sequences)} sequences "
                    f"{self.sequences}, same batch and size as the mask), got {tuple(atlas.shape)}"
                )
            atlas_feats = self.atlas_encoder(atlas)
            if self.skips:
                latent = torch.cat([latent, atlas_feats[-1]], dim=1)
                feats = [torch.cat([a, b], dim=1) for a, b in zip(feats, atlas_feats, strict=True)]
            else:
                latent = torch.cat([latent, atlas_feats], dim=1)
        latent = self.trunk(latent)
        if self.skips:
            return torch.cat([decoder(latent, feats[:-1]) for decoder in self.decoders], dim=1)
        return torch.cat([decoder(latent) for decoder in self.decoders], dim=1)


class Pix2PixGenerator(_GeneratorBase):
    """pix2pix baseline: a U-Net (:class:`samraug.models.unet.UNet`) from the one-hot mask to the sequences, with a
    tanh output. It uses no atlas (``atlas`` is accepted and ignored, so it runs wherever a SAMR generator runs).

    Args:
        sequences: Output sequence names, in output order.
        n_labels: Channels of the one-hot mask.
        base_channels: Channels of the first U-Net level.
        max_channels: Channel cap per level.
        depth: Down-samplings (inputs must be multiples of ``2**depth``).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        upsample: ``"resize_conv"`` (nearest x2 + 3x3 conv, the default), ``"transposed"`` (2x2 transposed conv;
            configs without the key) or ``"bilinear"`` (bilinear x2 + 1x1 conv).

    Example:
        >>> g = Pix2PixGenerator(base_channels=8, max_channels=32, depth=3)
        >>> g(torch.zeros(1, 5, 32, 32)).shape
        torch.Size([1, 5, 32, 32])
    """

    _default_model_type = "pix2pix"
    model_type = "pix2pix"
    use_atlas = False

    def __init__(
        self,
        sequences: Sequence[str] = DEFAULT_SEQUENCES,
        n_labels: int = 5,
        base_channels: int = 64,
        max_channels: int = 512,
        depth: int = 5,
        norm: Literal["batch", "instance", "none"] = "batch",
        upsample: Literal["transposed", "resize_conv", "bilinear"] = "resize_conv",
    ) -> None:
        super().__init__()
        sequences = _check_sequences(sequences)
        self.sequences = sequences
        self.n_labels = n_labels
        self.n_down = depth
        self._set_config(
            {
                "sequences": sequences,
                "n_labels": n_labels,
                "base_channels": base_channels,
                "max_channels": max_channels,
                "depth": depth,
                "norm": norm,
                "upsample": upsample,
            }
        )
        if upsample not in _PIX2PIX_UP_MODES:
            raise ValueError(f"unknown upsample {upsample!r}; use one of {tuple(_PIX2PIX_UP_MODES)}")
        up_mode = _PIX2PIX_UP_MODES[upsample]
        self.unet = UNet(n_labels, len(sequences), depth, base_channels, norm, up_mode, max_channels)

    def forward(self, mask: torch.Tensor, atlas: torch.Tensor | None = None) -> torch.Tensor:
        """``mask (B, n_labels, H, W)`` -> ``(B, n_seq, H, W)`` in [-1, 1]; ``atlas`` is ignored."""
        _check_mask(mask, self.n_labels)
        check_divisible(mask, self.n_down, "mask")
        return torch.tanh(self.unet(mask))


_PIX2PIX_UP_MODES = {"transposed": "transpose", "resize_conv": "resize_conv", "bilinear": "bilinear"}


def _check_upsample(upsample: str) -> None:
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsample {upsample!r}; use one of {UPSAMPLE_MODES}")


def _check_sequences(sequences: Sequence[str]) -> tuple[str, ...]:
    if isinstance(sequences, str):
        raise ValueError(f"sequences must be a list of names, got the string {sequences!r}; e.g. ['t1n', 't2f']")
    seq = tuple(sequences)
    if not seq or not all(isinstance(s, str) and s for s in seq) or len(set(seq)) != len(seq):
        raise ValueError(f"sequences must be non-empty, unique sequence names, got {seq!r}")
    return seq


def _encoder(in_channels: int, chans: list[int], norm: str) -> nn.Sequential:
    layers: list[nn.Module] = [ConvNormAct(in_channels, chans[0], 7, norm=norm, pad_mode="reflect")]
    layers += [ConvNormAct(chans[i], chans[i + 1], 3, stride=2, padding=1, norm=norm) for i in range(len(chans) - 1)]
    return nn.Sequential(*layers)


def _decoder(width: int, chans: list[int], out_channels: int, n_res: int, norm: str, upsample: str) -> nn.Sequential:
    layers: list[nn.Module] = [ResnetBlock(width, norm=norm) for _ in range(n_res)]
    ins = [width, *reversed(chans[1:-1])]
    outs = list(reversed(chans[:-1]))
    layers += [up_block(upsample, i, o, norm=norm) for i, o in zip(ins, outs, strict=True)]
    layers += [OutputConv(chans[0], out_channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


_CLASSES: dict[str, type[_GeneratorBase]] = {
    "samr": SAMRGenerator,
    "pix2pixhd": SAMRGenerator,
    "pix2pix": Pix2PixGenerator,
}
_PIX2PIX_FROM_SAMR = {"n_down": "depth"}
_SAMR_ONLY = ("atlas_slices", "mask_slices", "n_res_blocks", "stretch_out", "use_atlas", "decoder_res_blocks", "skips")
_PIX2PIXHD = {"stretch_out": False, "use_atlas": False, "decoder_res_blocks": 0}


def generator_class(model_type: str, mode: str = "whole") -> type[nn.Module]:
    """The generator class of a ``model_type`` (``samr``, ``pix2pixhd``, ``pix2pix``) and ``mode`` (``whole``,
    ``local``: only ``samr``).

    Example:
        >>> generator_class("samr").__name__
        'SAMRGenerator'
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {list(MODES)}")
    if mode == "local":
        if model_type != "samr":
            raise ValueError(f"mode 'local' exists for model_type 'samr' only, got {model_type!r}")
        return LocalGenerator
    try:
        return _CLASSES[model_type]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model_type {model_type!r}; use one of {list(MODEL_TYPES)}") from None


def build_generator(
    preset: str | Mapping[str, Any] = "lite", *, model_type: str = "samr", **overrides: Any
) -> _GeneratorBase:
    """Build a generator from a preset name (``paper``, ``lite``, ``tiny``) or a dict of kwargs.

    ``model_type="pix2pixhd"`` turns the preset into pix2pixHD's global generator (no stretch-out, no atlas, no
    decoder residual block); ``model_type="pix2pix"`` builds a :class:`Pix2PixGenerator` of the preset's width, cap
    and depth (``n_down``). ``overrides`` replace preset values (e.g. ``sequences=("t1n", "t1c", "t2w", "t2f")``).

    Example:
        >>> build_generator("tiny", model_type="pix2pix").model_type
        'pix2pix'
    """
    cls = generator_class(model_type)
    if isinstance(preset, str):
        if preset not in GENERATOR_PRESETS:
            raise ValueError(
                f"unknown preset {preset!r}; use one of {list(GENERATOR_PRESETS)} or pass a dict of kwargs"
            )
        kwargs: dict[str, Any] = dict(GENERATOR_PRESETS[preset])
        if cls is Pix2PixGenerator:  # translate the SAMR preset: same width, cap and depth
            kwargs = {_PIX2PIX_FROM_SAMR.get(k, k): v for k, v in kwargs.items() if k not in _SAMR_ONLY}
    elif isinstance(preset, Mapping):
        kwargs = dict(preset)
    else:
        raise TypeError(f"preset must be a preset name or a dict of kwargs, got {type(preset).__name__}")
    if cls is Pix2PixGenerator:  # n_down (the SAMR name) is accepted as the U-Net depth
        for source in (kwargs, overrides):
            if "n_down" in source:
                n_down = source.pop("n_down")
                if source.get("depth", n_down) != n_down:
                    raise ValueError(f"pass n_down or depth for pix2pix, not both ({n_down=}, depth={source['depth']})")
                source["depth"] = n_down
    kwargs.update(overrides)
    if model_type == "pix2pixhd":
        kwargs.update(_PIX2PIXHD)
    _check_keys(cls, kwargs, f"build_generator(model_type={model_type!r})")
    return cls(**kwargs)


def generator_from_config(config: Mapping[str, Any]) -> _GeneratorBase:
    """Build the (untrained) generator a weights config describes (``config.json`` of a weights folder).

    ``mode: "local"`` builds a :class:`samraug.models.local.LocalGenerator`. A config without ``upsample`` was
    written before the option existed and gets ``"transposed"`` (its tensors are a transposed-conv decoder).

    Example:
        >>> g = generator_from_config({"model_type": "samr", "n_down": 2, "base_channels": 4, "n_res_blocks": 0})
        >>> g.config["upsample"]
        'transposed'
    """
    if "model_type" not in config:
        raise ValueError(f"config has no 'model_type'; expected one of {list(MODEL_TYPES)}")
    cls = generator_class(config["model_type"], config.get("mode", "whole"))
    kwargs = _legacy_kwargs(cls, {k: v for k, v in config.items() if k not in META_KEYS})
    _check_keys(cls, kwargs, "config")
    return cls(**kwargs)


def _legacy_kwargs(cls: type[nn.Module], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs of a stored config, with what configs written before an option existed meant."""
    kwargs = dict(kwargs)
    if cls is Pix2PixGenerator and "up_mode" in kwargs:
        up_mode = kwargs.pop("up_mode")
        kwargs.setdefault("upsample", {"transpose": "transposed"}.get(up_mode, up_mode))
    if cls in (SAMRGenerator, Pix2PixGenerator):
        kwargs.setdefault("upsample", LEGACY_UPSAMPLE)
    return kwargs


def _check_keys(cls: type[nn.Module], kwargs: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(kwargs) - set(cls.init_keys()))
    if unknown:
        raise ValueError(f"{what}: unknown {cls.__name__} arguments {unknown}; allowed: {list(cls.init_keys())}")
