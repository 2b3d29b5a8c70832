"""Class-scale run: N submissions of each chapter, graded by the parallel workers, timed, and compared with
the sequential run (one worker) on a sample.

    python -m utils.grading.bench [--chapters 02_components ...] [--students 30] [--workers N]
                                  [--sequential 3] [--out bench/results/grading.json]

The class is a realistic mix: a third full solutions, a third untouched releases, a third half done. It runs
in a temporary course directory (its own gradebook) and checks every score against what it submitted. Then
`--sequential` submissions per chapter (one of each kind by default; `--sequential 30` is the whole class)
are graded again one at a time: their scores must be the same, and their time per submission gives the
sequential estimate the speed-up is computed from (measured, not estimated, when the sample is the class).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbgrader.utils import is_grade, is_solution

from utils.grading.autograde import autograde
from utils.grading.config import REPO, chapters
from utils.grading.course import Course
from utils.grading.sandbox import SandboxUnavailable, require_sandbox, sandbox_enabled


def _clean(nb):
    for cell in nb.cells:
        cell.pop("id", None)
    return nb


def class_of(course: Course, chapter: str, n: int) -> dict[str, set[str]]:
    """Submit n notebooks; returns {student: grade_ids expected to pass}."""
    solution = _clean(nbformat.read(str(REPO / "solutions" / f"{chapter}.ipynb"), as_version=4))
    release = _clean(nbformat.read(str(course.root / "release" / chapter / f"{chapter}.ipynb"), as_version=4))
    grade_ids = [c.metadata.nbgrader["grade_id"] for c in release.cells if is_grade(c)]
    solutions = [i for i, c in enumerate(release.cells) if c.cell_type == "code" and is_solution(c)]
    half = nbformat.from_dict(json.loads(nbformat.writes(release)))
    for i in solutions[: len(solutions) // 2]:
        half.cells[i].source = solution.cells[i].source
    cutoff = solutions[len(solutions) // 2] if len(solutions) > 1 else len(half.cells)
    half_passing = {c.metadata.nbgrader["grade_id"] for c in half.cells[:cutoff] if is_grade(c)}
    kinds = [(solution, set(grade_ids)), (release, set()), (half, half_passing)]
    expected = {}
    for k in range(n):
        nb, passing = kinds[k % 3]
        student = f"student{k + 1:02d}"
        course.submit(student, chapter, nbformat.writes(nb))
        expected[student] = passing
    return expected


def markdown(report: dict, when: str) -> str:
    """The class-scale figures as the README's table (`grading.md` beside the JSON)."""
    n, seq = report["submissions"], report["sequential_sample"]
    ok = "yes" if not report["wrong_scores"] and not report["not_graded"] else (
        f"no: {len(report['wrong_scores'])} wrong, {len(report['not_graded'])} not graded")
    same = "yes" if not report["differ_from_sequential"] else f"no: {', '.join(report['differ_from_sequential'])}"
    rows = [
        ("class", f"{report['students']} submissions × {len(report['chapters'])} chapters = {n} (a third full, "
                  "a third untouched, a third half done)"),
        (f"parallel autograde, {report['workers']} sandboxed workers", f"{report['autograde_s']:.0f} s "
                  f"({report['per_submission_wall_s']:.2f} s per submission; each one "
                  f"{report['per_submission_s']['median']:.1f} s median)"),
        ("sequential, one worker", f"{report['sequential_per_submission_s']:.2f} s per submission, measured on "
                  f"{seq} of them → {report['sequential_estimate_s'] / 60:.0f} min for the class"),
        ("speed-up", f"{report['speedup']:.2f}×"),
        ("every submission scored as submitted", ok),
        ("sequential scores identical to the parallel run's", same),
    ]
    return "\n".join([f"Measured {when}.", "", "| figure | value |", "|---|---|",
                       *(f"| {a} | {b} |" for a, b in rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grading.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="+", default=None, help="default: every chapter")
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--workers", type=int, default=None, help="default: the number of cores")
    parser.add_argument("--sequential", type=int, default=3, help="submissions per chapter graded sequentially")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grading.json")
    opts = parser.parse_args(argv)
    wanted = opts.chapters or chapters()
    load_at_start = os.getloadavg()[0]
    if sandbox_enabled():
        try:
            require_sandbox()  # one line now, not 210 submissions that each fail for the same reason
        except SandboxUnavailable as exc:
            print(exc, file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="tfs-bench-") as tmp:
        course = Course.temporary(Path(tmp) / "course")
        t0 = time.monotonic()
        for chapter in wanted:
            course.release(chapter)
        release_s = time.monotonic() - t0
        expected = {chapter: class_of(course, chapter, opts.students) for chapter in wanted}
        run = course.autograde(wanted, workers=opts.workers)
        scores = {chapter: course.scores(chapter) for chapter in wanted}
        wrong = [f"{c}/{s}" for c in wanted for s, passing in expected[c].items()
                 if {g for g, v in scores[c].get(s, {}).items() if v > 0} != passing]
        sample = [job for c in wanted for job in course.jobs(c)[:opts.sequential]]
        sequential = autograde(sample, workers=1)
        differ = [f"{c}/{s}" for _, c, s in sample if course.scores(c).get(s) != scores[c].get(s)]
    n = len(run.outcomes)
    seq_each = sequential.seconds / max(len(sample), 1)
    per = sorted(o.seconds for o in run.outcomes)
    report = {
        "chapters": wanted, "students": opts.students, "submissions": n, "workers": run.workers,
        "release_s": round(release_s, 1), "autograde_s": round(run.seconds, 1),
        "per_submission_wall_s": round(run.seconds / n, 2),
        "per_submission_s": {"median": round(statistics.median(per), 2), "min": round(per[0], 2),
                             "max": round(per[-1], 2)},
        "sequential_sample": len(sample), "sequential_per_submission_s": round(seq_each, 2),
        "sequential_estimate_s": round(seq_each * n, 1), "speedup": round(seq_each * n / run.seconds, 2),
        "not_graded": [f"{o.chapter}/{o.student}: {o.cause}" for o in run.outcomes if not o.graded],
        "wrong_scores": wrong, "differ_from_sequential": differ,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2) + "\n")
    when = f"{time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, load average {load_at_start:.1f} at the start"
    opts.out.with_suffix(".md").write_text(markdown(report, when))
    print(json.dumps(report, indent=2))
    return 0 if not report["not_graded"] and not wrong and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
