"""Centred padding and cropping of the last axes, for numpy arrays and torch tensors.

The one pair used to go to and from a size the generator accepts (a multiple of its down-sampling factor):
:func:`pad_or_crop` and its inverse :func:`unpad`. A low module: anything may import it.

Example:
    >>> import torch
    >>> x = torch.zeros(3, 240, 240)
    >>> y = pad_or_crop(x, padded_size(x.shape[-2:], 32), value=-1.0)
    >>> y.shape, unpad(y, (240, 240)).shape
    (torch.Size([3, 256, 256]), torch.Size([3, 240, 240]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

__all__ = ["pad_or_crop", "padded_size", "unpad"]

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def padded_size(shape: Sequence[int], multiple: int) -> tuple[int, ...]:
    """Each size rounded up to a multiple of ``multiple``.

    Example:
        >>> padded_size((240, 240), 32), padded_size((99, 117), 32)
        ((256, 256), (128, 128))
    """
    if int(multiple) < 1:
        raise ValueError(f"multiple must be a positive integer, got {multiple}")
    m = int(multiple)
    return tuple(int(math.ceil(int(s) / m) * m) for s in shape)


def _offsets(n: int, target: int) -> tuple[int, int]:
    """(start in the source, start in the target) of the centred overlap of lengths n and target."""
    if target >= n:
        return 0, (target - n) // 2
    return (n - target) // 2, 0


def pad_or_crop(x: Array, size: Sequence[int], value: float | bool = 0) -> Array:
    """Pad (with ``value``) or crop the last ``len(size)`` axes of ``x``, centred, to ``size``.

    Padding puts ``(target - n) // 2`` before; cropping starts at ``(n - target) // 2``. With that convention
    :func:`unpad` (the same operation back to the original size) is its exact inverse wherever nothing was
    cropped. Works on numpy arrays and torch tensors of any leading shape.

    Example:
        >>> pad_or_crop(np.arange(3), (6,), value=-1).tolist()
        [-1, 0, 1, 2, -1, -1]
    """
    size = tuple(int(s) for s in size)
    k = len(size)
    if x.ndim < k:
        raise ValueError(f"cannot pad/crop {k} axes of an array of shape {tuple(x.shape)}")
    spatial = tuple(int(s) for s in x.shape[x.ndim - k :])
    if spatial == size:
        return x
    out_shape = tuple(x.shape[: x.ndim - k]) + size
    if isinstance(x, torch.Tensor):
        out = torch.full(out_shape, value, dtype=x.dtype, device=x.device)
    else:
        out = np.full(out_shape, value, dtype=np.asarray(x).dtype)
    src: list[slice] = [slice(None)] * (x.ndim - k)
    dst: list[slice] = [slice(None)] * (x.ndim - k)
    for n, t in zip(spatial, size, strict=True):
        s0, d0 = _offsets(n, t)
        length = min(n, t)
        src.append(slice(s0, s0 + length))
        dst.append(slice(d0, d0 + length))
    out[tuple(dst)] = x[tuple(src)]
    return out


def unpad(y: Array, size: Sequence[int], value: float | bool = 0) -> Array:
    """Undo :func:`pad_or_crop`: back to the original ``size`` (e.g. an instance's ``orig_size``), centred.

    Example:
        >>> unpad(pad_or_crop(np.arange(3), (6,), value=-1), (3,)).tolist()
        [0, 1, 2]
    """
    return pad_or_crop(y, size, value=value)
