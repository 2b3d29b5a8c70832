"""`make class-report`: what the class got wrong, read from what `make autograde` already produced.

    python -m utils.grading.class_report [CHAPTER ...] [--root DIR] [--out DIR]

For every chapter it reads `autograded/<student>/<chapter>/<chapter>.ipynb` (the executed notebooks nbgrader
keeps) and classifies each test cell's outputs with utils.outcomes: passed, a catalogued mistake the check
named, or "unnamed" with the message's first line (and: not implemented, timed out, not run, flagged by the
integrity scan). A submission in `submitted/` that has no autograded notebook counts as "not graded" for every
exercise, with the cause `make autograde` recorded when it could not grade it (grading-status/). Nothing
is executed: a partial, broken or hostile submission is only text to read here.

Writes to `class-report/` (git-ignored): `report.md` (per exercise: passed and each failure; then one row per
student), `exercises.csv`, `students.csv`, and `report.html`, one plotly bar chart per chapter with plotly.js
inlined (it opens offline) plus the same tables.
"""

from __future__ import annotations

import argparse
import csv
import html
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from utils.grading.autograde import read_status
from utils.grading.config import REPO, chapters
from utils.outcomes import KINDS, MISSING, NAMED, NOT_GRADED, UNREADABLE, Outcome, graded_cells, read_outcome


@dataclass
class ChapterReport:
    chapter: str
    exercises: list[str]
    rows: dict[str, dict[str, Outcome]] = field(default_factory=dict)  # student -> exercise -> outcome
    notes: dict[str, str] = field(default_factory=dict)  # student -> why the submission was not read

    def passed(self, exercise: str) -> int:
        return sum(row[exercise].ok for row in self.rows.values())

    def failures(self, exercise: str) -> Counter:
        return Counter(row[exercise].key for row in self.rows.values() if not row[exercise].ok)


def exercises_of(chapter: str) -> list[str]:
    """The chapter's exercise ids, in notebook order, from its solution notebook's autograded cells."""
    from utils.grade import exercise_cells

    nb = nbformat.read(str(REPO / "solutions" / f"{chapter}.ipynb"), as_version=4)
    return [exercise for _, exercise in exercise_cells(nb)]


def read_chapter(root: Path, chapter: str) -> ChapterReport:
    report = ChapterReport(chapter, exercises_of(chapter))
    students = {p.parent.name for p in (root / "submitted").glob(f"*/{chapter}") if p.is_dir()}
    students |= {p.parent.name for p in (root / "autograded").glob(f"*/{chapter}") if p.is_dir()}
    status = read_status(root)  # what `make autograde` recorded, with the cause of each submission not graded
    for student in sorted(students):
        path = root / "autograded" / student / chapter / f"{chapter}.ipynb"
        outcome = status.get((chapter, student))
        if not path.is_file() and outcome is not None and not outcome.graded:
            report.notes[student] = f"NOT GRADED: {outcome.cause}"
            report.rows[student] = {e: Outcome(e, MISSING, NOT_GRADED, NOT_GRADED) for e in report.exercises}
            continue
        if not path.is_file():
            report.notes[student] = "submitted but not autograded (run `make autograde`)"
            report.rows[student] = {e: Outcome(e, MISSING, NOT_GRADED, NOT_GRADED) for e in report.exercises}
            continue
        try:
            cells = graded_cells(nbformat.read(str(path), as_version=4))
        except Exception as exc:  # a damaged file must not stop the report; it is one student's row
            report.notes[student] = f"autograded notebook unreadable ({type(exc).__name__})"
            report.rows[student] = {e: Outcome(e, MISSING, UNREADABLE, report.notes[student]) for e in report.exercises}
            continue
        report.rows[student] = {e: read_outcome(cells.get(e), e) for e in report.exercises}
        if (root / "submitted" / student / chapter / f"{chapter}.ipynb.invalid").exists():
            # `make collect` / autograde replaced an unreadable file by the untouched release (course.py)
            report.notes[student] = "the submitted file was not a readable notebook: graded as an empty submission"
    return report


# ------------------------------------------------------------------------------------------------ writing


def _md(text: str) -> str:
    """One markdown table cell: no line breaks, pipes escaped, HTML neutralised."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def _cell(outcome: Outcome) -> str:
    return "✓" if outcome.ok else f"✗ {outcome.label}"


def markdown(reports: list[ChapterReport]) -> str:
    lines = ["# Class report", "",
             "Read from the autograded notebooks; each failure is the catalogued mistake its check named, or "
             "\"unnamed\" with the first line of the message.", ""]
    for r in reports:
        n = len(r.rows)
        lines += [f"## {r.chapter} ({n} submissions)", ""]
        if not n:
            lines += ["No submissions.", ""]
            continue
        lines += ["| exercise | passed | failures (how many) |", "|---|---|---|"]
        for e in r.exercises:
            fails = "; ".join(f"{_md(k)} ({c})" for k, c in r.failures(e).most_common()) or "—"
            lines.append(f"| {e} | {r.passed(e)} of {n} | {fails} |")
        lines += ["", "| student | " + " | ".join(r.exercises) + " | passed |",
                  "|---|" + "---|" * (len(r.exercises) + 1)]
        for student, row in r.rows.items():
            cells = " | ".join(_md(_cell(row[e])) for e in r.exercises)
            lines.append(f"| {_md(student)} | {cells} | {sum(o.ok for o in row.values())} of {len(row)} |")
        for student, note in r.notes.items():
            lines.append(f"\n- {_md(student)}: {_md(note)}")
        lines.append("")
    return "\n".join(lines)


def write_csv(reports: list[ChapterReport], out: Path) -> None:
    with open(out / "exercises.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["chapter", "exercise", "submissions", "outcome", "count"])
        for r in reports:
            for e in r.exercises:
                w.writerow([r.chapter, e, len(r.rows), "passed", r.passed(e)])
                for key, count in r.failures(e).most_common():
                    w.writerow([r.chapter, e, len(r.rows), key, count])
    with open(out / "students.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["chapter", "student", "exercise", "passed", "kind", "mistake", "message"])
        for r in reports:
            for student, row in r.rows.items():
                for e, o in row.items():
                    w.writerow([r.chapter, student, e, int(o.ok), o.kind, o.label if o.kind == NAMED else "",
                                o.message])


def figure(r: ChapterReport):
    """Stacked bars: per exercise, how many passed and how many failed with each named mistake or kind."""
    import plotly.graph_objects as go

    groups: dict[str, list[int]] = {}
    for i, e in enumerate(r.exercises):
        for o in (row[e] for row in r.rows.values()):
            name = o.label if o.kind in (NAMED, MISSING) else o.kind
            groups.setdefault(name, [0] * len(r.exercises))[i] += 1
    order = sorted(groups, key=lambda g: (g != "passed", g in (*KINDS, NOT_GRADED, UNREADABLE), g))
    fig = go.Figure([go.Bar(name=g, x=r.exercises, y=groups[g], marker_color="#2a9d4b" if g == "passed" else None)
                     for g in order])
    fig.update_layout(barmode="stack", title=f"{r.chapter}: outcome of each exercise ({len(r.rows)} submissions)",
                      xaxis_title="exercise", yaxis_title="students", legend_title="passed, or the named mistake")
    return fig


def write_html(reports: list[ChapterReport], out: Path) -> None:
    parts, first = [], True
    for r in reports:
        parts.append(f"<h2>{html.escape(r.chapter)}</h2>")
        if r.rows:
            # plotly.js inlined once, in the first figure: the page needs no network
            parts.append(figure(r).to_html(full_html=False, include_plotlyjs=True if first else False))
            first = False
        parts.append(_html_table(r))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Class report</title><style>"
            "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px} .ok{color:#2a9d4b} .bad{color:#b00}"
            "</style></head><body><h1>Class report</h1>" + "".join(parts) + "</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")


def _html_table(r: ChapterReport) -> str:
    head = "".join(f"<th>{html.escape(e)}</th>" for e in r.exercises)
    rows = []
    for student, row in r.rows.items():
        cells = "".join(f"<td class='{'ok' if o.ok else 'bad'}' title='{html.escape(o.message)}'>"
                        f"{html.escape(_cell(o))}</td>" for o in row.values())
        rows.append(f"<tr><td>{html.escape(student)}</td>{cells}</tr>")
    return f"<table><tr><th>student</th>{head}</tr>{''.join(rows)}</table>"


def build(root: Path, wanted: list[str], out: Path) -> list[ChapterReport]:
    reports = [read_chapter(root, c) for c in wanted]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(reports), encoding="utf-8")
    write_csv(reports, out)
    write_html(reports, out)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grading.class_report", description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="default: every chapter with submissions")
    parser.add_argument("--root", type=Path, default=REPO, help="course directory (default: the repository)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: ROOT/class-report)")
    args = parser.parse_args(argv)
    wanted = args.chapters or [c for c in chapters()
                               if any(next((args.root / d).glob(f"*/{c}"), None) for d in ("submitted", "autograded"))]
    if not wanted:
        print("No submissions found: run `make collect` and `make autograde` first.")
        return 2
    out = args.out or args.root / "class-report"
    for r in build(args.root, wanted, out):
        n = len(r.rows)
        print(f"{r.chapter}: {n} submissions; " + ", ".join(f"{e} {r.passed(e)}/{n}" for e in r.exercises))
    print(f"wrote {out}/report.md, report.html, exercises.csv, students.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
