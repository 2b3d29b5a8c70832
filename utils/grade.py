"""`python -m utils.grade NOTEBOOK.ipynb`: a learner's progress report.

Runs a copy of the notebook headless (the learner's file is never written), then prints one row per
exercise: its id, ✓ or ✗, and the first line of what its check said. Exits 0 only if every exercise passes.

    exercise            status  message
    layer_norm          ✓       LayerNorm matches the reference (random-mini) on 3 inputs
    attention           ✗       not implemented yet
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
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


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def cell_result(cell, exercise: str) -> Row:
    """Read a test cell's outputs: an error means ✗ (NotImplementedError: not implemented yet), else ✓."""
    stdout = ""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            name, value = out.get("ename", ""), _first_line(out.get("evalue", ""))
            if name in ("NotImplementedError", "NotImplementedYet"):
                return Row(exercise, False, "not implemented yet")
            if name == "CellTimeoutError" or "timed out" in value.lower():
                return Row(exercise, False, f"timed out after {CELL_TIMEOUT} s")
            return Row(exercise, False, f"{name}: {value}" if name != "AssertionError" else value)
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            stdout += out.get("text", "")
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


def table(rows: list[Row]) -> str:
    width = max(len("exercise"), *(len(r.exercise) for r in rows)) + 2
    lines = [f"{'exercise':<{width}}status  message"]
    for r in rows:
        lines.append(f"{r.exercise:<{width}}{'✓' if r.ok else '✗':<8}{r.message[:160]}")
    passed = sum(r.ok for r in rows)
    lines.append(f"{passed} of {len(rows)} exercises pass")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grade", description="A learner's progress report.")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        print(f"{args.notebook}: no such notebook.")
        return 2
    try:
        rows = grade(args.notebook, args.timeout)
    except SystemExit as exc:
        print(exc)
        return 2
    print(table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
