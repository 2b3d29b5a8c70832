"""Spy arguments: `SpyZero`, chapter 06's `temperature=0.0` that notes whether the learner's loop compared it, and
`ModelProbe`, chapter 05's model wrapper that notes how the learner's trainer ran the model.

Both sides of the trusted grader use them: the checkers pass one, and the sandbox's stub (a copy of this file,
`utils/checks/_spies.py` there) rebuilds one from the probe plan and reports what it saw. It imports nothing
from the course.
"""

from __future__ import annotations

import torch as t
from torch import Tensor, nn


class SpyZero(float):
    """temperature=0.0 that notes when it is compared: proof that the loop handed it on to sample_next_token."""

    def __new__(cls):
        spy = super().__new__(cls, 0.0)
        spy.seen = False
        return spy

    def _see(self, result):
        self.seen = True
        return result

    def __eq__(self, other):
        return self._see(float(self) == other)

    def __ne__(self, other):
        return self._see(float(self) != other)

    def __lt__(self, other):
        return self._see(float(self) < other)

    def __le__(self, other):
        return self._see(float(self) <= other)

    def __gt__(self, other):
        return self._see(float(self) > other)

    def __ge__(self, other):
        return self._see(float(self) >= other)

    def __bool__(self):
        return self._see(False)

    __hash__ = float.__hash__


class ModelProbe(nn.Module):
    """Wraps a model; records, at each forward call, whether it was in training mode and whether grads were on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, tokens: Tensor) -> Tensor:
        self.calls.append((self.training, t.is_grad_enabled()))
        return self.model(tokens)
