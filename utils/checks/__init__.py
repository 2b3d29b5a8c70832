"""One checker per exercise: `checks.layer_norm(LayerNorm)` prints one ✓ line or raises a message that says
which mistake was made. `CHECKERS` maps every exercise id of every chapter to its checker.

Each chapter's checkers live in `utils/checks/chNN_*.py` and register themselves with `@checker(...)`;
this package imports them all, which is cheap: no model is loaded until a checker runs.
"""

from __future__ import annotations

import importlib
import pkgutil

from utils.checks.core import REGISTRY, Mistake, NotImplementedYet

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("ch"):
        importlib.import_module(f"{__name__}.{_info.name}")

CHECKERS = {exercise_id: exercise.check for exercise_id, exercise in REGISTRY.items()}
MISTAKES: dict[str, list[Mistake]] = {exercise_id: exercise.mistakes for exercise_id, exercise in REGISTRY.items()}


def __getattr__(name: str):
    try:
        return CHECKERS[name]
    except KeyError:
        raise AttributeError(f"utils.checks has no checker {name!r}; exercises: {', '.join(sorted(CHECKERS))}") from None


__all__ = ["CHECKERS", "MISTAKES", "Mistake", "NotImplementedYet", *CHECKERS]
