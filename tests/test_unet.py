"""UNet: shapes, gradients, errors, parameter count by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samraug.models.unet import UNet


@pytest.mark.parametrize(
    ("depth", "norm", "up_mode", "size"),
    [
        (0, "batch", "transpose", 8),
        (1, "none", "bilinear", 16),
        (3, "instance", "transpose", 32),
        (4, "batch", "bilinear", 64),
    ],
)
def test_shapes(depth: int, norm: str, up_mode: str, size: int) -> None:
    torch.manual_seed(0)
    net = UNet(4, 5, depth=depth, base_channels=4, norm=norm, up_mode=up_mode)
    x = torch.randn(2, 4, size, size + 2**depth)
    y = net(x)
    assert y.shape == (2, 5, size, size + 2**depth)
    assert bool(torch.isfinite(y).all())


@pytest.mark.parametrize("up_mode", ["transpose", "bilinear"])
def test_gradients_reach_every_parameter(up_mode: str) -> None:
    torch.manual_seed(0)
    net = UNet(3, 2, depth=3, base_channels=4, up_mode=up_mode).train()
    y = net(torch.randn(2, 3, 16, 16))
    (y * torch.randn_like(y)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_parameter_count_by_hand() -> None:
    net = UNet(1, 2, depth=1, base_channels=2, norm="none")
    inc = (1 * 2 * 9 + 2) + (2 * 2 * 9 + 2)  # 58
    down = (2 * 4 * 9 + 4) + (4 * 4 * 9 + 4)  # 224
    up = (4 * 2 * 2 * 2 + 2) + (4 * 2 * 9 + 2) + (2 * 2 * 9 + 2)  # transposed 2x2, then double conv on 2 + 2
    head = 2 * 2 + 2
    assert sum(p.numel() for p in net.parameters()) == inc + down + up + head == 434


def test_channel_cap() -> None:
    net = UNet(1, 1, depth=4, base_channels=8, max_channels=16)
    widths = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert max(widths) == 16
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_skip_connections_carry_detail() -> None:
    # with skips, a one-pixel input change shows up at that pixel of the output
    torch.manual_seed(0)
    net = UNet(1, 1, depth=2, base_channels=4, norm="none").eval()
    x = torch.zeros(1, 1, 64, 64)
    x2 = x.clone()
    x2[0, 0, 5, 7] = 1.0
    with torch.no_grad():
        diff = (net(x2) - net(x)).abs()[0, 0]
    assert float(diff[5, 7]) > 0
    assert float(diff[60, 60]) == 0  # outside the receptive field (radius ~25 px at depth 2; no norm coupling)


def test_errors() -> None:
    net = UNet(2, 3, depth=3, base_channels=4)
    with pytest.raises(ValueError, match=r"20x24.*multiple of 2\*\*3 = 8"):
        net(torch.zeros(1, 2, 20, 24))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        net(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"up_mode"):
        UNet(1, 1, up_mode="nearest")
    with pytest.raises(ValueError, match=r"unknown norm"):
        UNet(1, 1, norm="layer")
