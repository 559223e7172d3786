"""Lesion editing: the mask manipulations that make synthetic samples diverse (paper Fig. 3).

:class:`LesionEditor` mirrors, scales, moves, rotates, perturbs, swaps (from a donor) and removes the lesion of a
label map in any supported scheme, 2D or 3D, numpy or torch; every output satisfies the rules of
:func:`check_valid`. :class:`EditPolicy` configures :meth:`LesionEditor.random_edit`, whose records
:meth:`LesionEditor.replay` reproduces exactly.

Example:
    >>> import numpy as np, torch
    >>> from samraug.editing import EditPolicy, LesionEditor, check_valid
    >>> brain = np.zeros((48, 48), bool); brain[6:42, 8:40] = True
    >>> seg = np.zeros((48, 48), np.uint8); seg[12:22, 12:22] = 2; seg[14:20, 14:20] = 1; seg[16:18, 16:18] = 3
    >>> editor = LesionEditor("brats2024", min_fragment=4, policy=EditPolicy(p_move=1.0))
    >>> res = editor.random_edit(seg, brain, generator=torch.Generator().manual_seed(1))
    >>> check_valid(res.label, brain, "brats2024", original=seg, min_fragment=4)
    []
"""

from __future__ import annotations

from .editor import EditResult, LesionEditor, donor_of, donors_of
from .policy import OP_ORDER, EditPolicy
from .validity import check_valid

__all__ = ["OP_ORDER", "EditPolicy", "EditResult", "LesionEditor", "check_valid", "donor_of", "donors_of"]
