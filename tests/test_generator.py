"""SAMRGenerator, the pix2pix / pix2pixHD baselines and the presets."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from samraug.labels import one_hot
from samraug.models.blocks import OutputConv, ResizeConvNormAct
from samraug.models.generator import (
    DEFAULT_SEQUENCES,
    GENERATOR_PRESETS,
    MODEL_TYPES,
    Pix2PixGenerator,
    SAMRGenerator,
    build_generator,
    generator_class,
    generator_from_config,
)

N_SEQ = len(DEFAULT_SEQUENCES)


def _inputs(batch: int, size: int, n_seq: int = N_SEQ, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = one_hot(torch.randint(0, 5, (batch, size, size), generator=g))
    atlas = torch.rand(batch, 3 * n_seq, size, size, generator=g) * 2 - 1
    return mask, atlas


def _check_output(y: torch.Tensor, batch: int, size: int, n_seq: int = N_SEQ) -> None:
    y = y.detach()
    assert y.shape == (batch, n_seq, size, size)
    assert y.dtype == torch.float32
    assert bool(torch.isfinite(y).all())
    assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0


# ---------------------------------------------------------------------------------------------- shapes / range
@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("size", [32, 64])
def test_tiny_shapes_and_range(model_type: str, size: int) -> None:
    torch.manual_seed(0)
    g = build_generator("tiny", model_type=model_type)
    mask, atlas = _inputs(2, size)
    _check_output(g(mask, atlas), 2, size)  # training mode
    g.eval()
    with torch.inference_mode():
        _check_output(g(mask, atlas), 2, size)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_lite_one_forward(model_type: str) -> None:
    torch.manual_seed(0)
    g = build_generator("lite", model_type=model_type).eval()
    mask, atlas = _inputs(1, 64)
    with torch.inference_mode():
        _check_output(g(mask, atlas), 1, 64)


def test_paper_structure() -> None:
    with torch.device("meta"):  # structure and parameter count only: no memory, no init cost
        g = build_generator("paper")
    assert isinstance(g, SAMRGenerator) and g.model_type == "samr"
    # mask encoder: 6 conv layers, 7x7 stride 1 then five 3x3 stride 2 (paper section 2)
    convs = [m for m in g.mask_encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((7, 7), (1, 1))] + [((3, 3), (2, 2))] * 5
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 512]
    assert [m for m in g.mask_encoder.modules() if isinstance(m, nn.BatchNorm2d)].__len__() == 6
    atlas_convs = [m for m in g.atlas_encoder.modules() if isinstance(m, nn.Conv2d)]
    assert atlas_convs[0].in_channels == 15 and len(atlas_convs) == 6
    assert len(g.trunk) == 9 and g.trunk[0].body[0][0].in_channels == 1024
    assert len(g.decoders) == 5  # stretch-out: one branch per sequence
    for branch in g.decoders:  # default decoders up-sample by resize-convolution: nearest x2 then a 3x3 conv
        ups = [m for m in branch if isinstance(m, ResizeConvNormAct)]
        assert [u[1][0].out_channels for u in ups] == [512, 512, 256, 128, 64]
        assert all(u[1][0].kernel_size == (3, 3) and u[0].mode == "nearest" for u in ups)
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in branch.modules())
        assert isinstance(branch[-1], nn.Tanh) and branch[-2].kernel_size == (7, 7) and branch[-2].out_channels == 1
    n_params = sum(p.numel() for p in g.parameters())
    assert 300e6 < n_params < 340e6
    with torch.device("meta"):
        legacy = build_generator("paper", upsample="transposed")
    for branch in legacy.decoders:
        ups = [m for m in branch.modules() if isinstance(m, nn.ConvTranspose2d)]
        assert [u.out_channels for u in ups] == [512, 512, 256, 128, 64]
    assert sum(p.numel() for p in legacy.parameters()) == n_params  # same 3x3 kernels, same parameter count


def test_parameter_count_by_hand() -> None:
    g = SAMRGenerator(sequences=("a", "b"), base_channels=4, max_channels=8, n_down=2, n_res_blocks=1)
    # channels [4, 8, 8]; convs before BN have no bias; BN has 2 params per channel
    mask_enc = 5 * 4 * 49 + 8 + 4 * 8 * 9 + 16 + 8 * 8 * 9 + 16  # 1884
    atlas_enc = 6 * 4 * 49 + 8 + 4 * 8 * 9 + 16 + 8 * 8 * 9 + 16  # 2080
    res16 = 2 * (16 * 16 * 9 + 32)  # trunk width 2 * 8 = 16
    branch = res16 + (16 * 8 * 9 + 16) + (8 * 4 * 9 + 8) + (4 * 1 * 49 + 1)
    assert sum(p.numel() for p in g.parameters()) == mask_enc + atlas_enc + res16 + 2 * branch == 21302


def test_presets_recorded() -> None:
    assert set(GENERATOR_PRESETS) == {"paper", "lite", "tiny"}
    tiny = build_generator("tiny")
    assert tiny.n_down == 4 and tiny.size_multiple == 16
    n = sum(p.numel() for p in tiny.parameters())
    assert n * 2 < 10e6  # fp16 weights well under 20 MB


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_gradients_reach_every_parameter(model_type: str) -> None:
    torch.manual_seed(0)
    g = build_generator("tiny", model_type=model_type).train()
    mask, atlas = _inputs(2, 32)
    y = g(mask, atlas)
    (y * torch.randn_like(y)).sum().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


# ---------------------------------------------------------------------------------------------- memory format / dtype
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_channels_last_matches_contiguous(model_type: str) -> None:
    torch.manual_seed(0)
    g = build_generator("tiny", model_type=model_type).eval()
    mask, atlas = _inputs(2, 32)
    with torch.inference_mode():
        ref = g(mask, atlas)
        g = g.to(memory_format=torch.channels_last)
        out = g(mask.to(memory_format=torch.channels_last), atlas.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_autocast_bfloat16() -> None:
    torch.manual_seed(0)
    g = build_generator("tiny").eval()
    mask, atlas = _inputs(1, 32)
    with torch.inference_mode():
        ref = g(mask, atlas)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = g(mask, atlas)
    assert out.shape == ref.shape and bool(torch.isfinite(out).all())
    assert float(out.float().abs().max()) <= 1.0
    assert float((out.float() - ref).abs().max()) < 0.1


# ---------------------------------------------------------------------------------------------- semantics
def test_outputs_follow_sequence_order() -> None:
    torch.manual_seed(0)
    g = build_generator("tiny", sequences=("t1n", "t2f", "aptw")).eval()
    branch = g.decoders[1]  # the "t2f" branch
    final = branch[-2]
    with torch.no_grad():
        final.weight.zero_()
        final.bias.fill_(0.5)
    mask, atlas = _inputs(1, 32, n_seq=3)
    with torch.inference_mode():
        y = g(mask, atlas)
    assert torch.allclose(y[:, 1], torch.full_like(y[:, 1], torch.tanh(torch.tensor(0.5)).item()))
    assert float(y[:, 0].std()) > 0 and float(y[:, 2].std()) > 0


def test_shared_decoder_and_no_atlas() -> None:
    g = SAMRGenerator(base_channels=4, max_channels=8, n_down=2, n_res_blocks=1, stretch_out=False, use_atlas=False)
    assert len(g.decoders) == 1 and g.decoders[0][-2].out_channels == N_SEQ
    assert g.atlas_encoder is None and g.model_type == "pix2pixhd"
    g.eval()
    mask, atlas = _inputs(1, 16)
    with torch.inference_mode():
        torch.testing.assert_close(g(mask, None), g(mask, atlas), rtol=0, atol=0)


def test_atlas_changes_output() -> None:
    torch.manual_seed(0)
    g = build_generator("tiny").eval()
    mask, atlas = _inputs(1, 32)
    with torch.inference_mode():
        assert not torch.equal(g(mask, atlas), g(mask, -atlas))


def test_baseline_configs() -> None:
    hd = build_generator("lite", model_type="pix2pixhd")
    assert isinstance(hd, SAMRGenerator) and not hd.stretch_out and not hd.use_atlas
    assert hd.config["decoder_res_blocks"] == 0 and hd.model_type == "pix2pixhd"
    p2p = build_generator("tiny", model_type="pix2pix")
    assert isinstance(p2p, Pix2PixGenerator) and p2p.model_type == "pix2pix"
    assert p2p.config["depth"] == GENERATOR_PRESETS["tiny"]["n_down"] and p2p.size_multiple == 16
    assert p2p.config["base_channels"] == GENERATOR_PRESETS["tiny"]["base_channels"]
    assert generator_class("pix2pixhd") is SAMRGenerator


def test_config_is_json_and_rebuilds() -> None:
    for model_type in MODEL_TYPES:
        g = build_generator("tiny", model_type=model_type, sequences=["t1n", "t2f"])
        config = json.loads(json.dumps({"model_type": g.model_type, **g.config}))
        g2 = generator_from_config(config)
        assert type(g2) is type(g) and g2.sequences == ("t1n", "t2f")
        assert {k: v.shape for k, v in g2.state_dict().items()} == {k: v.shape for k, v in g.state_dict().items()}


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_size_not_divisible_raises(model_type: str) -> None:
    g = build_generator("tiny", model_type=model_type)
    mask, atlas = _inputs(1, 40)
    with pytest.raises(ValueError, match=r"40x40.*multiple of 2\*\*4 = 16.*pad"):
        g(mask, atlas)


def test_too_small_raises() -> None:
    g = build_generator("tiny")
    mask, atlas = _inputs(1, 16)
    with pytest.raises(ValueError, match=r"at least 32x32"):
        g(mask, atlas)


def test_wrong_inputs_raise() -> None:
    g = build_generator("tiny")
    mask, atlas = _inputs(1, 32)
    with pytest.raises(ValueError, match=r"atlas is None.*Atlas.stack"):
        g(mask)
    with pytest.raises(ValueError, match=r"mask must be a \(B, 5, H, W\)"):
        g(mask[:, :4], atlas)
    with pytest.raises(ValueError, match=r"atlas must have shape \(1, 15, 32, 32\)"):
        g(mask, atlas[:, :12])
    with pytest.raises(ValueError, match=r"atlas must have shape"):
        g(mask, torch.cat([atlas, atlas]))
    with pytest.raises(ValueError, match=r"floating point"):
        g(mask.long(), atlas)
    with pytest.raises(ValueError, match=r"mask must be"):
        g(mask[0], atlas)


def test_bad_construction_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'huge'"):
        build_generator("huge")
    with pytest.raises(ValueError, match=r"unknown model_type 'cyclegan'"):
        build_generator("tiny", model_type="cyclegan")
    with pytest.raises(ValueError, match=r"unknown SAMRGenerator arguments \['width'\]"):
        build_generator("tiny", width=3)
    with pytest.raises(ValueError, match=r"unknown Pix2PixGenerator arguments \['n_res_blocks'\]"):
        build_generator({"n_res_blocks": 2}, model_type="pix2pix")
    with pytest.raises(ValueError, match=r"unknown Pix2PixGenerator arguments \['stretch_out'\]"):
        build_generator("tiny", model_type="pix2pix", stretch_out=False)  # overrides are never dropped silently
    assert build_generator("tiny", model_type="pix2pix", n_down=3).config["depth"] == 3
    with pytest.raises(ValueError, match=r"sequences must be"):
        SAMRGenerator(sequences=("t1", "t1"))
    with pytest.raises(ValueError, match=r"the string"):
        SAMRGenerator(sequences="t1n")
    with pytest.raises(ValueError, match=r"n_down must be an integer >= 0"):
        SAMRGenerator(n_down=-1)
    with pytest.raises(ValueError, match=r"unknown norm 'group'"):
        SAMRGenerator(norm="group", base_channels=4, max_channels=8, n_down=1, n_res_blocks=0)
    with pytest.raises(ValueError, match=r"max_channels \(4\) must be >= base_channels \(8\)"):
        SAMRGenerator(base_channels=8, max_channels=4)


def test_output_conv_fast_path_matches_conv() -> None:
    torch.manual_seed(0)
    conv = OutputConv(6, 1, 7)
    x = torch.randn(2, 6, 16, 16)
    reference = nn.functional.conv2d(nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"), conv.weight, conv.bias)
    with torch.inference_mode():
        fast = conv(x)  # depthwise + sum path
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv(x), reference, atol=1e-6, rtol=1e-6)  # autograd path: the plain convolution
    g = build_generator("tiny").eval()
    mask, atlas = _inputs(1, 32)
    with torch.inference_mode():
        fast = g(mask, atlas)
    torch.testing.assert_close(fast, g(mask, atlas).detach(), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- up-sampling
def _checkerboard_index(x: torch.Tensor) -> float:
    """Share of the (mean-removed) spectral energy on the Nyquist row and column: where a stride-2 transposed
    convolution's uneven overlap puts its period-2 pattern."""
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    p = torch.fft.fft2(x.double()).abs() ** 2
    h, w = x.shape[-2:]
    nyquist = p[..., h // 2, :].sum(-1) + p[..., :, w // 2].sum(-1) - p[..., h // 2, w // 2]
    return float((nyquist / p.sum((-2, -1))).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_resize_conv_decoder_has_less_checkerboard_than_transposed(seed: int) -> None:
    labels = torch.zeros(2, 32, 32, dtype=torch.long)  # a smooth mask: blocks, no pixel-level noise
    labels[:, 4:28, 6:26] = 1
    labels[:, 10:18, 12:20] = 2
    mask = one_hot(labels)
    index = {}
    for upsample in ("transposed", "resize_conv"):
        torch.manual_seed(seed)
        kwargs = {"base_channels": 8, "max_channels": 16, "n_down": 3, "n_res_blocks": 1, "use_atlas": False}
        g = SAMRGenerator(sequences=("a", "b"), upsample=upsample, **kwargs).eval()
        assert g.config["upsample"] == upsample
        with torch.no_grad():
            index[upsample] = _checkerboard_index(g(mask))
    assert index["resize_conv"] < index["transposed"] / 4, index


def test_upsample_option_default_legacy_and_errors() -> None:
    assert build_generator("tiny").config["upsample"] == "resize_conv"  # new configs
    assert build_generator("tiny", model_type="pix2pix").config["upsample"] == "resize_conv"
    legacy = {"model_type": "samr", "base_channels": 4, "max_channels": 8, "n_down": 2, "n_res_blocks": 0}
    assert generator_from_config(legacy).config["upsample"] == "transposed"  # configs written before the option
    p2p = generator_from_config({"model_type": "pix2pix", "base_channels": 4, "depth": 2, "up_mode": "transpose"})
    assert p2p.config["upsample"] == "transposed" and "up_mode" not in p2p.config
    with pytest.raises(ValueError, match=r"unknown upsample 'pixelshuffle'"):
        build_generator("tiny", upsample="pixelshuffle")
    with pytest.raises(ValueError, match=r"unknown upsample"):
        build_generator("tiny", model_type="pix2pix", upsample="pixelshuffle")


def test_bundled_whole_weights_are_native_resize_conv_with_skips() -> None:
    """The bundled whole-image folder: scheme-native classes, resize-conv decoders (no transposed convolution),
    U-Net skips, and its atlas space recorded. Legacy folders (no ``conditioning``/``upsample`` keys: the paper's 5
    classes and transposed convolutions) still load: see ``test_upsample_option_default_legacy_and_errors`` and
    ``tests/test_hub.py::test_legacy_folder_without_conditioning_means_samr``."""
    import warnings

    from samraug.hub import BUNDLED_WHOLE_WEIGHTS, load_weights

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # named explicitly: no "bundled default" warning
        w = load_weights(BUNDLED_WHOLE_WEIGHTS)
    assert w.conditioning == "native" and w.mode == "whole" and w.config["atlas_space"] == "MNI152"
    assert w.label_scheme.name == "brats2024"
    assert w.generator.n_labels == len(w.label_scheme.classes("native")) == 6
    assert w.generator.config["upsample"] == "resize_conv" and w.generator.config["skips"] is True
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in w.generator.modules())


def test_models_do_not_import_the_hub() -> None:
    import subprocess
    import sys

    code = "import sys, samraug.models; print('samraug.hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_skips_carry_atlas_detail_at_full_resolution(seed: int) -> None:
    """A one-pixel change of the atlas moves the output mostly near that pixel with U-Net skips, while without
    them it must pass the 2**n_down bottleneck and spreads out (share of the response's energy in the pixel's
    3x3 neighbourhood, random init)."""
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, 4:28, 6:26] = 1
    mask = one_hot(labels)
    atlas = torch.zeros(1, 6, 32, 32)
    bumped = atlas.clone()
    bumped[0, 1, 16, 16] = 1.0
    share = {}
    for skips in (False, True):
        torch.manual_seed(seed)
        kwargs = {"base_channels": 8, "max_channels": 16, "n_down": 3, "n_res_blocks": 1, "norm": "instance"}
        g = SAMRGenerator(sequences=("a", "b"), skips=skips, **kwargs).eval()
        with torch.no_grad():
            r = (g(mask, bumped) - g(mask, atlas)) ** 2
        share[skips] = float(r[..., 15:18, 15:18].sum() / r.sum())
    assert share[True] > 3 * share[False], share


def test_skips_option_config_round_trip_and_layouts() -> None:
    g = build_generator("tiny", skips=True)
    assert g.config["skips"] is True
    again = generator_from_config({"model_type": "samr", **g.config})
    assert again.skips and again.state_dict().keys() == g.state_dict().keys()
    plain = build_generator("tiny")
    assert "skips" not in plain.config and not plain.skips  # configs without the key: the paper's layout
    for use_atlas, stretch_out in ((True, False), (False, True)):
        h = SAMRGenerator(
            sequences=("a", "b", "c"), base_channels=4, max_channels=8, n_down=2, n_res_blocks=0, skips=True,
            use_atlas=use_atlas, stretch_out=stretch_out, decoder_res_blocks=2,
        )  # fmt: skip
        assert h(torch.zeros(2, 5, 16, 16), torch.zeros(2, 9, 16, 16)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="skips"):  # pix2pix is a U-Net already: the option is refused
        build_generator("tiny", model_type="pix2pix", skips=True)
