"""`python -m utils.grading.nbgrader_main ARGS`: nbgrader's own command line, ended without interpreter teardown.

An autograde run imports torch, TransformerLens and the checkers (the trusted judge replays the checkers in
nbgrader's process). After nbgrader has written the gradebook and the autograded notebook and the kernel is
gone, tearing those modules down took about 2 s per submission. Here the process flushes its logs and
output and exits at once, with nbgrader's exit status. Nothing else changes: the arguments, the
configuration and the log are nbgrader's.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback


def _status(code) -> int:
    """The exit status Python gives `SystemExit(code)`; a message is printed to stderr, as Python prints it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main() -> None:
    from nbgrader.apps.nbgraderapp import main as nbgrader

    code = 0
    try:
        nbgrader()
    except SystemExit as exc:
        code = _status(exc.code)
    except BaseException:  # as an uncaught exception would end the interpreter: its traceback, status 1
        traceback.print_exc()
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
