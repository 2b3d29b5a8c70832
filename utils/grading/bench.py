"""Class-scale run: N submissions of one chapter graded in ONE `nbgrader autograde` run, timed per submission.

    python -m utils.grading.bench [--chapter 02_components] [--students 30] [--out bench/results/grading.json]

The class is a realistic mix: a third full solutions, a third untouched releases, a third half done. It runs
in a temporary course directory (its own gradebook) and checks every score against what it submitted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbgrader.utils import is_grade, is_solution

from utils.grading.config import REPO
from utils.grading.course import Course


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grading.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", default="02_components")
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grading.json")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tfs-bench-") as tmp:
        course = Course.temporary(Path(tmp) / "course")
        t0 = time.monotonic()
        course.release(opts.chapter)
        release_s = time.monotonic() - t0
        expected = class_of(course, opts.chapter, opts.students)
        run = course.autograde(opts.chapter)
        scores = course.scores(opts.chapter)
        wrong = [s for s, passing in expected.items()
                 if {g for g, v in scores.get(s, {}).items() if v > 0} != passing]
    per = sorted(run.per_student.values())
    report = {
        "chapter": opts.chapter, "submissions": opts.students, "release_s": round(release_s, 1),
        "autograde_s": round(run.seconds, 1), "per_submission_s": {
            "mean": round(run.seconds / opts.students, 2), "median": round(statistics.median(per), 2),
            "min": round(per[0], 2), "max": round(per[-1], 2)},
        "exit": run.returncode, "wrong_scores": wrong,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if run.returncode == 0 and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
