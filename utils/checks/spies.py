"""A spy argument for chapter 06's greedy check: `temperature=0.0` that notes whether the learner's loop compared it.

Both sides of the trusted grader use it: the checker (ch06_sampling.py) passes one, and the sandbox's stub (a copy
of this file, `utils/checks/_spies.py` there) rebuilds one from the probe plan and reports whether it was seen.
It imports nothing from the course.
"""

from __future__ import annotations


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
