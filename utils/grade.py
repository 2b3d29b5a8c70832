"""`python -m utils.grade NOTEBOOK.ipynb`: a learner's progress report.

Runs a copy of the notebook headless (the learner's file is never written), then prints one row per
exercise: its id, ✓ or ✗, and what its check said, in full. Cells that are not exercises but failed or were
stopped (a demo that timed out, a `NameError` after it) are listed below the table: a pass is only reported
for what really ran. Exits 0 only if every exercise passes and no other cell failed.

Demos run short (`TFS_FAST=1`: training demos take a slice of the corpus and a few dozen steps) so that a
progress run takes seconds, not minutes; `--full` runs them as written.

    exercise            status  message
    layer_norm          ✓       LayerNorm matches the reference (random-mini) on 3 inputs
    attention           ✗       not implemented yet
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

CELL_TIMEOUT = int(os.environ.get("TFS_CELL_TIMEOUT", "300"))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Row:
    exercise: str
    ok: bool
    message: str


def exercise_cells(nb) -> list[tuple[int, str]]:
    """(cell index, exercise id) of every autograded test cell."""
    found = []
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            found.append((index, meta.get("grade_id", f"cell {index}")))
    return found


def _text(text: str) -> str:
    return " ".join(ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip())


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def cell_result(cell, exercise: str) -> Row:
    """Read a test cell's outputs: an error means ✗ (NotImplementedError: not implemented yet), and so does
    output on stderr, which nbgrader scores as a failed test; else ✓."""
    stdout, stderr = "", ""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            name, value = out.get("ename", ""), _first_line(out.get("evalue", ""))
            if name in ("NotImplementedError", "NotImplementedYet"):
                return Row(exercise, False, "not implemented yet")
            if name == "CellTimeoutError" or "timed out" in value.lower():
                return Row(exercise, False, f"timed out after {CELL_TIMEOUT} s")
            value = _text(out.get("evalue", ""))  # the whole diagnosis: its hint is usually past the first line
            return Row(exercise, False, f"{name}: {value}" if name != "AssertionError" else value)
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            stdout += out.get("text", "")
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            stderr += out.get("text", "")
    if stderr.strip():
        return Row(exercise, False, f"the check cell wrote to stderr, which nbgrader scores as failed: {_first_line(stderr)}")
    ticks = [ln for ln in stdout.splitlines() if ln.startswith("✓")]
    return Row(exercise, True, ticks[-1][1:].strip() if ticks else _first_line(stdout) or "passed")


def _interrupted(cell) -> bool:
    """nbclient interrupts a cell that runs past the timeout; the kernel reports a KeyboardInterrupt."""
    return any(o.get("output_type") == "error" and o.get("ename") == "KeyboardInterrupt" for o in cell.get("outputs", []))


def grade(path: Path, timeout: int = CELL_TIMEOUT) -> list[Row]:
    return run_notebook(path, timeout)[1]


def run_notebook(path: Path, timeout: int = CELL_TIMEOUT, kernel_name: str = "python3", cwd: Path | None = None):
    """Execute a copy of the notebook at `path` (in `cwd`, default its own folder) with the kernel `kernel_name`;
    returns the executed copy and one Row per exercise."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    try:
        nb = nbformat.read(str(path), as_version=4)
    except (OSError, json.JSONDecodeError, nbformat.reader.NotJSONError, nbformat.ValidationError) as exc:
        raise SystemExit(f"{path}: cannot be read as a notebook ({type(exc).__name__}: {_first_line(str(exc))}).")
    except Exception as exc:  # nbformat raises assorted errors on damaged files; the learner needs one line
        raise SystemExit(f"{path}: cannot be read as a notebook ({type(exc).__name__}: {_first_line(str(exc))}).")
    targets = exercise_cells(nb)
    if not targets:
        raise SystemExit(f"{path}: no autograded exercise cells found (is this a course notebook?).")
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True, interrupt_on_timeout=True,
        shutdown_kernel="immediate",  # every output is in `nb` already: no need to wait ~2.5 s for a clean exit
        resources={"metadata": {"path": str((cwd or path.parent).resolve())}},
    )
    try:
        client.execute()
    except (CellTimeoutError, DeadKernelError) as exc:
        print(f"{path}: the kernel stopped ({type(exc).__name__}); exercises after that point count as not run.")
    rows = []
    for index, exercise in targets:
        cell = nb.cells[index]
        stopped = [i for i, c in enumerate(nb.cells[:index]) if _interrupted(c)]
        if cell.get("execution_count") is None and not cell.get("outputs"):
            rows.append(Row(exercise, False, "not run (an earlier cell stopped the kernel)"))
        else:
            row = cell_result(cell, exercise)
            if not row.ok and stopped:
                row.message = f"cell {stopped[-1]} was stopped after {timeout} s (an infinite loop?); then: {row.message}"
            rows.append(row)
    return nb, rows


STUB_ERRORS = ("NotImplementedError", "NotImplementedYet")


def other_failures(nb) -> list[str]:
    """One line for each cell that is not an exercise check and was stopped or raised (stubs aside)."""
    checks = {index for index, _ in exercise_cells(nb)}
    found = []
    for index, cell in enumerate(nb.cells):
        if index in checks or cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") != "error" or out.get("ename") in STUB_ERRORS:
                continue
            if out.get("ename") == "KeyboardInterrupt":
                found.append(f"cell {index} was stopped after its time limit (a long demo or an infinite loop?)")
            else:
                found.append(f"cell {index} failed: {out.get('ename')}: {_first_line(out.get('evalue', ''))}")
    return found


def table(rows: list[Row], others: list[str] = (), width: int = 110) -> str:
    name_width = max(len("exercise"), *(len(r.exercise) for r in rows)) + 2
    indent = " " * (name_width + 8)
    lines = [f"{'exercise':<{name_width}}status  message"]
    for r in rows:
        wrapped = textwrap.wrap(r.message, max(40, width - len(indent))) or [""]
        lines.append(f"{r.exercise:<{name_width}}{'✓' if r.ok else '✗':<8}{wrapped[0]}")
        lines += [indent + more for more in wrapped[1:]]
    passed = sum(r.ok for r in rows)
    summary = f"{passed} of {len(rows)} exercises pass"
    if others:
        lines += ["", "Other cells that did not run cleanly (results after them may be missing):",
                  *(f"  {line}" for line in others)]
        summary += f"; {len(others)} other cell{'s' if len(others) > 1 else ''} failed"
    lines.append(summary)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.grade",
        description="A learner's progress report: runs a copy of NOTEBOOK headless and prints one row per exercise.",
        epilog="Demos run short by default: the notebook's kernel gets TFS_FAST=1 (training demos take a slice of the "
               "corpus and a few dozen steps), unless TFS_FAST is already set or --full is given. Cells outside the "
               "exercises that fail or are stopped are listed under the table and make the run fail.")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell (default %(default)s)")
    parser.add_argument("--full", action="store_true", help="run the demos at full length (sets TFS_FAST=0)")
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        print(f"{args.notebook}: no such notebook.")
        return 2
    os.environ["TFS_FAST"] = "0" if args.full else os.environ.get("TFS_FAST", "1")  # the kernel inherits it
    try:
        nb, rows = run_notebook(args.notebook, args.timeout)
    except SystemExit as exc:
        print(exc)
        return 2
    others = other_failures(nb)
    print(table(rows, others, shutil.get_terminal_size((110, 24)).columns))
    return 0 if all(r.ok for r in rows) and not others else 1


if __name__ == "__main__":
    sys.exit(main())
