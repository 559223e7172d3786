"""The one device resolver of samraug (training, segmentation and synthesis all go through it).

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto").type in ("cpu", "cuda")
    True
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else through :class:`torch.device`.

    A CUDA device without an index gets ``cuda:local_rank`` when ``local_rank`` is given (one GPU per
    ``torchrun`` process). Asking for CUDA where there is none, or an unknown device string, raises ``ValueError``
    naming the fix.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device is None or str(device) == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available; pass device='cpu' or 'auto'")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
    return dev
