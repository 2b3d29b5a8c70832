"""Section timings for a session plan: what a solution notebook's cells cost the machine, per section.

`python -m utils.session_timing [CHAPTER ...]` executes a copy of each solution notebook (offline, with the
demos in fast mode unless `--full`), reads nbclient's own per-cell timestamps, and writes
`docs/session_timings.json`: for every section (a `## ` heading) the machine time of its cells and its
exercises with the time their headings announce (`~15 min`). The solution is executed, so the machine time is
what a learner's correct code costs; the time a learner spends *writing* it is the notebook's own estimate,
not a measurement. `docs/facilitators.md` renders both (utils/facilitators.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
TIMINGS = ROOT / "docs" / "session_timings.json"
_EXERCISE = re.compile(r"^###\s+(?:Exercise|Checkpoint)\s+([\d.]+)\s*[—–-]+\s*(.+?)\s*$", re.M)
_MINUTES = re.compile(r"~\s*(\d+)\s*min")


@dataclass
class Section:
    title: str
    cells: list[int] = field(default_factory=list)
    exercises: list[tuple[str, str, int]] = field(default_factory=list)  # (number, title, announced minutes)
    machine_s: float = 0.0

    @property
    def announced_min(self) -> int:
        return sum(m for _, _, m in self.exercises)


def sections(nb) -> list[Section]:
    """Cells grouped under their `## ` heading (the cells before the first heading form "Introduction")."""
    found = [Section("Introduction")]
    for index, cell in enumerate(nb.cells):
        text = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        if cell.cell_type == "markdown":
            heading = next((ln[3:].strip() for ln in text.splitlines() if ln.startswith("## ")), None)
            if heading:
                found.append(Section(heading))
            for match in _EXERCISE.finditer(text):
                minutes = _MINUTES.search(text[match.end():match.end() + 200])
                found[-1].exercises.append((match.group(1), match.group(2), int(minutes.group(1)) if minutes else 0))
        found[-1].cells.append(index)
    return [s for s in found if s.cells]


def _seconds(cell) -> float:
    """nbclient's record of one executed cell: from the kernel starting it to its reply."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return max(0.0, (parse(end) - parse(start)).total_seconds())


def measure(path: Path, fast: bool = True, timeout: int = 1800) -> dict:
    """Execute a copy of `path` (never written back) and return its sections with machine time per section."""
    import nbformat
    from nbclient import NotebookClient

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["TFS_FAST"] = "1" if fast else "0"
    nb = nbformat.read(str(path), as_version=4)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, record_timing=True,
                   shutdown_kernel="immediate", resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    wall = time.monotonic() - t0
    parts = sections(nb)
    for part in parts:
        part.machine_s = round(sum(_seconds(nb.cells[i]) for i in part.cells if nb.cells[i].cell_type == "code"), 2)
    errors = [i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    return {"notebook": path.name, "wall_s": round(wall, 1), "load_at_start": round(load, 2), "fast": fast,
            "cells_with_errors": errors, "sections": [asdict(p) for p in parts]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.session_timing", description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="e.g. 02_components (default: every chapter)")
    parser.add_argument("--full", action="store_true", help="demos at full size (chapter 05 trains for minutes)")
    args = parser.parse_args(argv)
    paths = [SOLUTIONS / f"{c}.ipynb" for c in args.chapters] or sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))
    data = json.loads(TIMINGS.read_text(encoding="utf-8")) if TIMINGS.exists() else {}
    for path in paths:
        result = measure(path, fast=not args.full)
        result["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        result["machine"] = f"{os.cpu_count()} cores ({platform.machine()})"
        data[path.stem] = result
        print(f"{path.stem}: {result['wall_s']} s wall, load {result['load_at_start']}, "
              f"errors in cells {result['cells_with_errors'] or 'none'}")
        TIMINGS.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
