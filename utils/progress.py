"""`python -m utils.progress FOLDER`: a live view of a session, students × exercises, ✓ or the named mistake.

    python -m utils.progress FOLDER [--html progress.html] [--every 120] [--timeout 300]

FOLDER holds learners' notebooks, in any of these layouts (a shared drive, or nbgrader's `submitted/`):
`FOLDER/<student>/<chapter>.ipynb`, `FOLDER/<student>/<chapter>/<chapter>.ipynb`, or
`FOLDER/<student>.ipynb` (the chapter is then read from the notebook's setup cell). Each notebook is run
with `utils.grade`, which executes a copy in memory and never writes the learner's file; each test cell's
outputs are then read with utils.outcomes, so a failure shows the catalogued mistake its check named.

Refresh on demand by running the command again, or pass `--every SECONDS` to rescan the folder in a loop:
a notebook whose bytes have not changed since the last pass is not executed again.

The notebooks run in your account, unsandboxed, exactly as `make grade` runs a learner's own notebook: use
it in a room of learners you trust. For submissions you do not trust, use `make autograde` (sandboxed) and
`make class-report`.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from utils.outcomes import MISSING, UNREADABLE, Outcome, graded_cells, read_outcome


@dataclass(frozen=True)
class Submission:
    student: str
    chapter: str
    path: Path


def known_chapters() -> list[str]:
    from utils.grading.config import chapters

    return chapters()


def _chapter_from_setup_cell(path: Path) -> str | None:
    """The chapter a notebook belongs to, from its generated setup cell's grade_id `setup_<chapter>`."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb.get("cells", [])[:4]:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
            if grade_id.startswith("setup_"):
                return grade_id[len("setup_"):]
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return None


def discover(folder: Path) -> list[Submission]:
    """Every learner notebook under `folder` (at most two folders deep), with its student and chapter."""
    chapters = set(known_chapters())
    found: dict[tuple[str, str], Submission] = {}
    for path in sorted(folder.rglob("*.ipynb")):
        rel = path.relative_to(folder)
        if len(rel.parts) > 3 or path.is_symlink() or any(p.startswith(".") for p in rel.parts):
            continue  # .ipynb_checkpoints and hidden folders hold copies, not the learner's work
        if len(rel.parts) == 1:
            student, chapter = path.stem, _chapter_from_setup_cell(path)
        else:
            student = rel.parts[0]
            chapter = path.stem if path.stem in chapters else _chapter_from_setup_cell(path)
        if chapter in chapters:
            found.setdefault((student, chapter), Submission(student, chapter, path))
    return sorted(found.values(), key=lambda s: (s.chapter, s.student))


def exercises_of(chapter: str) -> list[str]:
    from utils.grading.class_report import exercises_of as from_solution

    return from_solution(chapter)


def grade_submission(sub: Submission, timeout: int) -> dict[str, Outcome]:
    """Run a copy of the learner's notebook with utils.grade and read each test cell's outcome."""
    from utils.grade import run_notebook

    wanted = exercises_of(sub.chapter)
    try:
        nb, _ = run_notebook(sub.path, timeout)
    except SystemExit as exc:  # unreadable, or not a course notebook: one line says why
        message = str(exc).replace(str(sub.path), sub.path.name)
        return {e: Outcome(e, MISSING, UNREADABLE, message) for e in wanted}
    cells = graded_cells(nb)
    return {e: read_outcome(cells.get(e), e) for e in wanted}


class Progress:
    """The latest outcome of every notebook in a folder; `refresh()` re-runs only changed notebooks."""

    def __init__(self, folder: Path, timeout: int = 300):
        self.folder, self.timeout = folder, timeout
        self.results: dict[tuple[str, str], dict[str, Outcome]] = {}
        self._seen: dict[tuple[str, str], str] = {}
        self.executed = 0  # notebooks executed by the last refresh

    def refresh(self) -> None:
        self.executed = 0
        current = discover(self.folder)
        keys = {(s.student, s.chapter) for s in current}
        for key in list(self.results):
            if key not in keys:  # a notebook that left the folder leaves the table
                self.results.pop(key)
                self._seen.pop(key, None)
        for sub in current:
            key = (sub.student, sub.chapter)
            try:
                digest = hashlib.sha256(sub.path.read_bytes()).hexdigest()
            except OSError:
                continue
            if self._seen.get(key) == digest:
                continue
            self.results[key] = grade_submission(sub, self.timeout)
            self._seen[key] = digest
            self.executed += 1

    def chapters(self) -> list[str]:
        return sorted({c for _, c in self.results})

    def rows(self, chapter: str) -> list[tuple[str, dict[str, Outcome]]]:
        return sorted((s, r) for (s, c), r in self.results.items() if c == chapter)


def _mark(o: Outcome) -> str:
    return "✓" if o.ok else f"✗ {o.label}"


def text_table(progress: Progress, width: int = 22) -> str:
    out = []
    for chapter in progress.chapters():
        rows = progress.rows(chapter)
        exercises = exercises_of(chapter)
        name_w = max(len("student"), *(len(s) for s, _ in rows)) + 2
        out.append(f"{chapter} ({len(rows)} notebooks)")
        out.append(f"{'student':<{name_w}}" + "".join(f"{e[:width - 1]:<{width}}" for e in exercises))
        for student, row in rows:
            out.append(f"{student:<{name_w}}" + "".join(f"{_mark(row[e])[:width - 1]:<{width}}" for e in exercises))
        passed = [sum(row[e].ok for _, row in rows) for e in exercises]
        out.append(f"{'passed':<{name_w}}" + "".join(f"{f'{p}/{len(rows)}':<{width}}" for p in passed))
        out.append("")
    return "\n".join(out) if out else "No course notebooks found."


def html_page(progress: Progress) -> str:
    parts = [f"<h1>Progress: {html.escape(str(progress.folder))}</h1>",
             f"<p>Refreshed {time.strftime('%H:%M:%S')}. Hover over a cell for the check's message.</p>"]
    for chapter in progress.chapters():
        exercises = exercises_of(chapter)
        head = "".join(f"<th>{html.escape(e)}</th>" for e in exercises)
        body = []
        for student, row in progress.rows(chapter):
            cells = "".join(f"<td class='{'ok' if row[e].ok else 'bad'}' title='{html.escape(row[e].message)}'>"
                            f"{html.escape(_mark(row[e]))}</td>" for e in exercises)
            body.append(f"<tr><td>{html.escape(student)}</td>{cells}</tr>")
        parts.append(f"<h2>{html.escape(chapter)}</h2><table><tr><th>student</th>{head}</tr>{''.join(body)}</table>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Session progress</title><style>"
            "body{font-family:sans-serif} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
            "padding:2px 6px;font-size:13px} .ok{color:#2a9d4b} .bad{color:#b00}</style></head><body>"
            + "".join(parts) + "</body></html>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.progress", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--html", type=Path, help="also write the table as an HTML page")
    parser.add_argument("--every", type=float, default=0, help="rescan every SECONDS until interrupted")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"{args.folder}: no such folder.")
        return 2
    progress = Progress(args.folder, args.timeout)
    while True:
        started = time.monotonic()
        progress.refresh()
        print(text_table(progress))
        print(f"{progress.executed} notebooks run in {time.monotonic() - started:.0f} s")
        if args.html:
            args.html.write_text(html_page(progress), encoding="utf-8")
            print(f"wrote {args.html}")
        if not args.every:
            return 0
        try:
            time.sleep(args.every)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
