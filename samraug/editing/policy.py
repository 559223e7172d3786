"""The random edit policy: a probability per operation and a range per parameter.

Example:
    >>> from samraug.editing import EditPolicy
    >>> policy = EditPolicy(p_mirror=1.0, p_scale=0.0, scale_range=(0.5, 1.5))
    >>> policy.p_mirror, policy.scale_range
    (1.0, (0.5, 1.5))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

__all__ = [
    "MAX_ANGLE",
    "MAX_INSERT",
    "MAX_PERTURB_SMOOTHNESS",
    "MAX_PERTURB_STRENGTH",
    "MAX_SCALE_FACTOR",
    "MAX_SHIFT",
    "MIN_PERTURB_SMOOTHNESS",
    "OP_ORDER",
    "EditPolicy",
    "check_insertion",
]

#: The order in which :meth:`LesionEditor.random_edit` draws and composes the operations.
OP_ORDER: tuple[str, ...] = ("remove", "swap", "mirror", "scale", "rotate", "perturb", "move")

# Bounds of every edit parameter (direct calls, policies and replayed records alike): beyond them an edit is
# meaningless for a brain lesion and its memory grows without limit (a factor of 1e9 asks for ~100 GiB).
#: Largest tumour-volume factor of a scale (and 1 / it the smallest): 4x along each axis in 3D.
MAX_SCALE_FACTOR = 64.0
#: Largest move along one axis, in voxels.
MAX_SHIFT = 4096
#: Largest displacement of the elastic perturbation, in voxels.
MAX_PERTURB_STRENGTH = 16.0
#: Smallest and largest control-point spacing of the perturbation, in voxels.
MIN_PERTURB_SMOOTHNESS = 1.0
MAX_PERTURB_SMOOTHNESS = 1024.0
#: Largest absolute rotation angle, in degrees.
MAX_ANGLE = 360.0
#: Most lesions one inserting edit adds.
MAX_INSERT = 8


def check_insertion(
    p_insert: object, n_insert: object, p_name: str = "EditPolicy.p_insert", n_name: str = "EditPolicy.n_insert"
) -> None:
    """The one check of the insertion settings, shared by :class:`EditPolicy` and the front-ends that expose them
    under their own names (the CLI's ``--insert`` / ``--n-insert``, the augmentation benchmark's ``local_insert`` /
    ``local_n_insert``): a ``ValueError`` that names ``p_name`` or ``n_name`` unless ``p_insert`` is a probability
    and ``n_insert`` an integer in ``[1, MAX_INSERT]`` that is 1 when nothing is inserted.

    Example:
        >>> check_insertion(1.0, 3)
        >>> try:
        ...     check_insertion(0.0, 2, "--insert", "--n-insert")
        ... except ValueError as err:
        ...     print(err)
        --n-insert=2 adds lesions only to inserting edits; set --insert > 0 (e.g. --insert=1.0 with --n-insert=2)
    """
    if not (isinstance(p_insert, int | float) and 0.0 <= p_insert <= 1.0):  # the rule of every EditPolicy.p_*
        raise ValueError(f"{p_name} must be a probability in [0, 1], got {p_insert!r}")  # NaN fails too
    if isinstance(n_insert, bool) or not isinstance(n_insert, int) or not 1 <= n_insert <= MAX_INSERT:
        raise ValueError(f"{n_name} must be an integer in [1, {MAX_INSERT}], got {n_insert!r}")
    if n_insert > 1 and p_insert == 0:
        raise ValueError(
            f"{n_name}={n_insert} adds lesions only to inserting edits; set {p_name} > 0 "
            f"(e.g. {p_name}=1.0 with {n_name}={n_insert})"
        )


@dataclass(frozen=True)
class EditPolicy:
    """Probabilities and parameter ranges of :meth:`~samraug.editing.LesionEditor.random_edit`.

    Every operation is drawn independently with its probability; the drawn ones are composed in
    :data:`OP_ORDER` into one transform of the lesion. ``remove`` (the healthy variant), when drawn, replaces
    all the others; ``swap`` needs donors. Nothing drawn means the sample is left unedited.

    ``p_insert`` is not an operation but what becomes of the subject's own lesion: with this probability the
    transformed lesion is *added* to the label map and the own lesion kept wherever the new one does not lie
    (insertion, as in GliGAN or TumorCP: a mirrored, moved or donor lesion beside the real one); otherwise (the
    paper's edits, the default ``p_insert=0``) the transformed lesion replaces the own one. With local painting,
    ``SAMRPainter(region="changed")`` then repaints only around the inserted lesion, so the real one keeps its real
    intensities.

    Attributes:
        p_remove, p_swap, p_mirror, p_scale, p_rotate, p_perturb, p_move: Probability of each operation.
        scale_range: Tumour *volume* factor, drawn log-uniformly (paper Fig. 3: 50 % to 200 %).
        max_shift: Largest move along each axis, as a fraction of the brain's extent along that axis.
        rotation_range: Angle range in degrees; in 3D each of the three angles is drawn from it.
        perturb_range: Largest displacement of the elastic perturbation, in voxels.
        perturb_smoothness: Control-point spacing of the perturbation, in voxels (larger is smoother).
        swap_at: Placement modes a swap draws from: ``"donor"`` (the donor's location) and/or ``"random"``. A
            donor not on the recipient's grid (another shape, or another affine where both are known) is placed at
            random when ``"donor"`` is drawn.
        p_insert: Probability that an edit adds the transformed lesion beside the own one instead of replacing it
            (drawn once per edit, after the operations, only when above 0, so policies without it draw exactly as
            before).
        n_insert: Lesions an inserting edit adds (needs ``p_insert > 0``): the first as above, each further one an
            independent random edit of the own lesion (operations and parameters drawn afresh, placed where
            neither the own lesion nor an earlier inserted one lies). 1 (default): one lesion per edit.
    """

    p_remove: float = 0.05
    p_swap: float = 0.25
    p_mirror: float = 0.5
    p_scale: float = 0.5
    p_rotate: float = 0.3
    p_perturb: float = 0.3
    p_move: float = 0.3
    scale_range: tuple[float, float] = (0.5, 2.0)
    max_shift: float = 0.25
    rotation_range: tuple[float, float] = (-30.0, 30.0)
    perturb_range: tuple[float, float] = (1.0, 3.0)
    perturb_smoothness: float = 8.0
    swap_at: tuple[str, ...] = ("donor", "random")
    p_insert: float = 0.0
    n_insert: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith("p_"):
                p = getattr(self, f.name)
                if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                    raise ValueError(f"EditPolicy.{f.name}={p!r} must be a probability in [0, 1]")
        for name in ("scale_range", "rotation_range", "perturb_range"):
            lo, hi = getattr(self, name)
            object.__setattr__(self, name, (float(lo), float(hi)))
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"EditPolicy.{name}={(lo, hi)} must be finite with low <= high")
        if not 1.0 / MAX_SCALE_FACTOR <= self.scale_range[0] <= self.scale_range[1] <= MAX_SCALE_FACTOR:
            raise ValueError(
                f"EditPolicy.scale_range={self.scale_range} must lie in [1/{MAX_SCALE_FACTOR:g}, {MAX_SCALE_FACTOR:g}] "
                "(tumour volume factors)"
            )
        if not 0 <= self.perturb_range[0] <= self.perturb_range[1] <= MAX_PERTURB_STRENGTH:
            raise ValueError(
                f"EditPolicy.perturb_range={self.perturb_range} must lie in [0, {MAX_PERTURB_STRENGTH:g}] voxels"
            )
        if not -MAX_ANGLE <= self.rotation_range[0] <= self.rotation_range[1] <= MAX_ANGLE:
            raise ValueError(f"EditPolicy.rotation_range={self.rotation_range} must lie in [-360, 360] degrees")
        if not 0.0 <= self.max_shift <= 1.0:
            raise ValueError(f"EditPolicy.max_shift={self.max_shift} must be a fraction of the brain extent in [0, 1]")
        if not MIN_PERTURB_SMOOTHNESS <= self.perturb_smoothness <= MAX_PERTURB_SMOOTHNESS:
            raise ValueError(
                f"EditPolicy.perturb_smoothness={self.perturb_smoothness} must lie in [{MIN_PERTURB_SMOOTHNESS:g}, "
                f"{MAX_PERTURB_SMOOTHNESS:g}] voxels"
            )
        check_insertion(self.p_insert, self.n_insert)
        at = tuple(self.swap_at)
        if not at or any(a not in ("donor", "random") for a in at):
            raise ValueError(f"EditPolicy.swap_at={at!r} must be a non-empty subset of ('donor', 'random')")
        object.__setattr__(self, "swap_at", at)

    def probability(self, op: str) -> float:
        """The probability of operation ``op`` (one of :data:`OP_ORDER`)."""
        if op not in OP_ORDER:
            raise ValueError(f"unknown operation {op!r}; expected one of {OP_ORDER}")
        return float(getattr(self, f"p_{op}"))


def uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    """One float drawn uniformly from ``[low, high)`` with ``torch.rand`` (global RNG when ``generator`` is None)."""
    u = torch.rand((), generator=generator, dtype=torch.float64).item()
    return low + (high - low) * u


def randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """One integer drawn uniformly from ``[low, high)`` with ``torch.randint``."""
    return int(torch.randint(int(low), int(high), (), generator=generator).item())
