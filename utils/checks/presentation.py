"""How a failed check looks in Jupyter and Colab: its message, and only the learner's own lines.

A check that fails raises an `AssertionError` whose message is the diagnosis. IPython would show it under a
28–60-line traceback through `utils/checks/*.py` that a learner cannot act on. IPython asks an exception for
`_render_traceback_()` before formatting one itself, so the checker attaches that method to the exception it
raises: the output keeps its type and message (nbgrader and `utils.grade` read those), and its traceback lists
the frames of the learner's code that led to the failure, then the message.
"""

from __future__ import annotations

import sysconfig
import traceback
from pathlib import Path

_UTILS = Path(__file__).resolve().parent.parent
_LIBRARY_ROOTS = tuple({Path(p).resolve() for p in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                                     sysconfig.get_paths()["platlib"])})
RED, RESET = "\x1b[0;31m", "\x1b[0m"


def _is_learner_frame(filename: str) -> bool:
    """A frame of the learner's own code: a notebook cell or a file outside the course and the libraries."""
    if filename.startswith("<frozen"):
        return False
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return True  # "<ipython-input-...>" and other pseudo-files are notebook code
    if path.is_relative_to(_UTILS) or any(path.is_relative_to(root) for root in _LIBRARY_ROOTS):
        return False
    return True


def learner_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return [f for f in traceback.extract_tb(exc.__traceback__) if _is_learner_frame(f.filename)]


def _where(filename: str) -> str:
    """`Cell In[3]` for a notebook cell, as IPython itself names it; the file name otherwise."""
    try:
        from IPython import get_ipython

        count = get_ipython().compile._filename_map.get(filename)
    except Exception:  # no IPython, or one without the map: the plain file name is still right
        count = None
    return f"Cell In[{count}]" if count is not None else filename


def _format(frames: list[traceback.FrameSummary]) -> list[str]:
    lines = []
    for frame in frames:
        lines.append(f"  {_where(frame.filename)}, line {frame.lineno}, in {frame.name}")
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    return lines


def short_traceback(exc: BaseException) -> list[str]:
    """The lines shown for a failed check: where the learner's code raised (when it did), then the diagnosis."""
    lines = []
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, NotImplementedError):
        frames = learner_frames(cause)
        if frames:
            lines += ["Your code raised this (most recent call last):", *_format(frames),
                      f"{type(cause).__name__}: {cause}", ""]
    lines.append(f"{RED}{type(exc).__name__}{RESET}: {exc}")
    return ["\n".join(lines)]


def attach(exc: BaseException) -> BaseException:
    """Give `exc` the short rendering (IPython looks the method up on the instance)."""
    exc._render_traceback_ = lambda: short_traceback(exc)
    return exc

