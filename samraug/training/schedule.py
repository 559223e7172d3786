"""Learning-rate schedule of the paper: constant, then linear decay to zero.

SAMR (section 3) trains with a constant learning rate for the first half of the epochs, then decays it linearly
to 0. This module implements that schedule **per optimisation step** (not per epoch): with ``total_steps`` steps
and ``decay_start`` (default ``total_steps // 2``), the learning rate used for step ``t`` (0-based) is

    lr(t) = base_lr                                                    for t <  decay_start
    lr(t) = base_lr * (total_steps - t) / (total_steps - decay_start)  for t >= decay_start

so the last step still uses a small positive rate and the rate after the last step is 0. A per-step decay is
the epoch-wise decay of the paper without its staircase; at ``steps_per_epoch == 1`` both are the same. The
schedule's whole state is the step counter, so it checkpoints as plain JSON.

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.Adam([p], lr=2e-4)
    >>> sched = LinearDecaySchedule(opt, total_steps=4)
    >>> [round(f, 2) for f in (sched.factor(t) for t in range(5))]
    [1.0, 1.0, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LinearDecaySchedule", "linear_decay_factor"]


def linear_decay_factor(step: int, total_steps: int, decay_start: int) -> float:
    """Multiplier of the base learning rate at ``step`` (see the module docstring).

    Example:
        >>> linear_decay_factor(3, total_steps=4, decay_start=2)
        0.5
    """
    if step < decay_start:
        return 1.0
    span = max(1, total_steps - decay_start)
    return max(0.0, (total_steps - step) / span)


class LinearDecaySchedule:
    """Sets ``lr`` of every parameter group of ``optimizer`` to ``base_lr * factor(step)``.

    Call :meth:`step` once after every ``optimizer.step()``. The base learning rates are read from the optimizer
    at construction (``initial_lr`` is stored in each group so a rebuilt optimizer keeps them).

    Args:
        optimizer: Any ``torch.optim.Optimizer``.
        total_steps: Number of optimisation steps of the whole training (> 0).
        decay_start: First step of the linear decay; default ``total_steps // 2`` (the paper's "first half").

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([p], lr=1.0)
        >>> sched = LinearDecaySchedule(opt, total_steps=2, decay_start=0)
        >>> opt.param_groups[0]["lr"], (sched.step(), opt.param_groups[0]["lr"])[1]
        (1.0, 0.5)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, decay_start: int | None = None) -> None:
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}; pass the number of training steps")
        if decay_start is None:
            decay_start = total_steps // 2
        if not 0 <= decay_start <= total_steps:
            raise ValueError(f"decay_start={decay_start} must lie in [0, total_steps={total_steps}]")
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.decay_start = int(decay_start)
        self.last_step = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def factor(self, step: int) -> float:
        """Learning-rate multiplier for ``step``."""
        return linear_decay_factor(step, self.total_steps, self.decay_start)

    def _apply(self) -> None:
        f = self.factor(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    def step(self) -> None:
        """Advance one optimisation step and update the learning rates."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """Current learning rate of each parameter group."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {"last_step": self.last_step, "total_steps": self.total_steps, "decay_start": self.decay_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the learning rates are re-applied at once."""
        self.last_step = int(state["last_step"])
        self.total_steps = int(state["total_steps"])
        self.decay_start = int(state["decay_start"])
        self._apply()
