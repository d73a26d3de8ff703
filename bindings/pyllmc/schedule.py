"""Learning-rate schedules: cosine, linear, constant and wsd (warmup-stable-decay).

Every schedule is a pure function of the 1-based optimizer step ``s`` (so a resumed run
gets exactly the learning rates of an uninterrupted one) and of:

- ``lr``: the peak learning rate;
- ``steps``: the length of the whole run ``N`` (the schedule follows it);
- ``warmup``: ``W`` linear warmup steps: step ``s <= W`` uses ``lr * s / W``;
- ``final_frac``: the last step uses ``final = lr * final_frac`` (ignored by ``constant``);
- ``decay_frac`` (wsd only): the fraction of the post-warmup steps spent decaying.

After warmup the progress is ``p = (s - W - 1) / (N - W - 1)``: 0 at the first step after
warmup (which uses the peak ``lr``), 1 at the last step (which uses ``final``); with a
single post-warmup step ``p = 0``. Then

- constant: ``lr``
- linear:   ``lr + (final - lr) * p``
- cosine:   ``final + (lr - final) * (1 + cos(pi * p)) / 2``
- wsd:      ``lr`` while ``p <= 1 - decay_frac``, then linear from ``lr`` to ``final`` over
            the remaining ``decay_frac`` of the progress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

from .errors import InvalidArgumentError

SCHEDULES = ("cosine", "linear", "constant", "wsd")


@dataclass(frozen=True)
class LRSchedule:
    """A learning-rate schedule; ``schedule(step)`` is the rate for 1-based ``step``."""

    lr: float
    steps: int
    kind: str = "cosine"
    warmup: int = 0
    final_frac: float = 0.1
    decay_frac: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise InvalidArgumentError(f"unknown LR schedule {self.kind!r}; expected one of {', '.join(SCHEDULES)}")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise InvalidArgumentError(f"steps must be an int >= 1, got {self.steps!r}")
        if not (isinstance(self.warmup, int) and 0 <= self.warmup <= self.steps):
            raise InvalidArgumentError(f"warmup must be an int in [0, steps = {self.steps}], got {self.warmup!r}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise InvalidArgumentError(f"lr must be a finite number >= 0, got {self.lr!r}")
        if not 0.0 <= self.final_frac <= 1.0:
            raise InvalidArgumentError(f"final_frac must be in [0, 1], got {self.final_frac!r}")
        if not 0.0 < self.decay_frac <= 1.0:
            raise InvalidArgumentError(f"decay_frac must be in (0, 1], got {self.decay_frac!r}")

    @property
    def final_lr(self) -> float:
        return self.lr if self.kind == "constant" else self.lr * self.final_frac

    def progress(self, step: int) -> float:
        """Post-warmup progress in [0, 1] of 1-based ``step`` (0 during warmup)."""
        n_after = self.steps - self.warmup - 1
        if step <= self.warmup or n_after <= 0:
            return 0.0
        return min(1.0, max(0.0, (step - self.warmup - 1) / n_after))

    def __call__(self, step: int) -> float:
        if step < 1:
            raise InvalidArgumentError(f"steps are 1-based, got {step}")
        if step <= self.warmup:
            return self.lr * step / self.warmup
        p = self.progress(step)
        lr, final = self.lr, self.final_lr
        if self.kind == "constant":
            return lr
        if self.kind == "linear":
            return lr + (final - lr) * p
        if self.kind == "cosine":
            return final + (lr - final) * 0.5 * (1.0 + math.cos(math.pi * p))
        # wsd
        start = 1.0 - self.decay_frac
        if p <= start:
            return lr
        q = (p - start) / self.decay_frac
        return lr + (final - lr) * q

    def values(self) -> List[float]:
        """The rate of every step 1..steps."""
        return [self(s) for s in range(1, self.steps + 1)]


def lr_at(step: int, *, lr: float, steps: int, kind: str = "cosine", warmup: int = 0,
          final_frac: float = 0.1, decay_frac: float = 0.2) -> float:
    """Learning rate of 1-based ``step``; see the module docstring."""
    return LRSchedule(lr=lr, steps=steps, kind=kind, warmup=warmup, final_frac=final_frac,
                      decay_frac=decay_frac)(step)
