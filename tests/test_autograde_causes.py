"""The cause a NOT GRADED line gives is the exception that stopped nbgrader, however its log indents it."""

from __future__ import annotations

from utils.grading.autograde import failure_cause

# nbgrader's own log format: the traceback indented under an ERROR line, followed by its generic warnings
NBGRADER_LOG = """\
[AutogradeApp | INFO] Autograding /tmp/c/autograded/s1/01_foundations/01_foundations.ipynb
[AutogradeApp | ERROR] There was an error processing assignment: /tmp/c/submitted/s1/01_foundations
[AutogradeApp | ERROR] Traceback (most recent call last):
      File "/venv/nbgrader/converters/base.py", line 390, in convert_notebooks
        self.convert_single_notebook(notebook_filename)
      File "/repo/utils/grading/sandbox.py", line 75, in require_sandbox
        raise SandboxUnavailable(
    utils.grading.sandbox.SandboxUnavailable: Autograding runs every submission inside bubblewrap, but bwrap is not installed.

[AutogradeApp | WARNING] Removing failed assignment: /tmp/c/autograded/s1/01_foundations
[AutogradeApp | ERROR] There was an error processing assignment '01_foundations' for student 's1'
[AutogradeApp | ERROR] Please see the the above traceback for details on the specific errors on the above failures.
"""

PLAIN_LOG = """\
Traceback (most recent call last):
  File "/venv/nbgrader/apps/autogradeapp.py", line 12, in start
    raise SchemaTooOldError(msg)
nbgrader.nbgraderformat.common.SchemaTooOldError: Notebook metadata is too old
"""


def test_an_indented_nbgrader_traceback_gives_its_exception_not_the_cleanup_warning():
    cause = failure_cause(NBGRADER_LOG, 1)
    assert cause.startswith("utils.grading.sandbox.SandboxUnavailable: Autograding runs every submission"), cause
    assert "Removing failed assignment" not in cause


def test_a_plain_traceback_gives_its_last_line():
    assert failure_cause(PLAIN_LOG, 1) == "nbgrader.nbgraderformat.common.SchemaTooOldError: Notebook metadata is too old"


def test_a_log_without_an_error_says_so():
    assert failure_cause("[AutogradeApp | INFO] nothing to see\n", 3) == "nbgrader exited with status 3 without an error message"


def _run_both(args: list[str], cwd) -> list[tuple[int, str]]:
    import subprocess
    import sys

    runs = []
    for module in ("nbgrader", "utils.grading.nbgrader_main"):
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
        runs.append((proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""))
    return runs


def test_the_quick_exit_wrapper_keeps_nbgraders_exit_status_and_error(tmp_path):
    """The grader runs nbgrader through utils.grading.nbgrader_main (no interpreter teardown): a failing run must
    still exit 1 with nbgrader's own error line, which failure_cause reads."""
    plain, quick = _run_both(["autograde", "no_such_assignment", "--student=x"], tmp_path)
    assert plain == quick and quick[0] == 1 and "No notebooks were matched" in quick[1]
    assert failure_cause(quick[1], quick[0]).startswith("No notebooks were matched by")


def test_the_quick_exit_gives_a_systemexit_message_the_status_and_stderr_python_would(capsys):
    from utils.grading.nbgrader_main import _status

    assert (_status(None), _status(0), _status(2)) == (0, 0, 2)
    assert _status("config file is broken") == 1 and capsys.readouterr().err == "config file is broken\n"
