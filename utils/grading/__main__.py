"""`python -m utils.grading STEP`: the instructor's grading flow (what the Makefile's targets run).

    release   [CHAPTER ...]          nbgrader generate_assignment, then check release/ equals chapters/
    collect   FOLDER [CHAPTER ...]   FOLDER/<student>/<chapter>.ipynb -> submitted/<student>/<chapter>/
    autograde [--workers N] [CHAPTER ...]
                                     nbgrader autograde --force, once per submission, N at a time (default:
                                     the number of cores), sandboxed; a summary of what was not graded and why
    feedback  [CHAPTER ...]          nbgrader generate_feedback --force -> feedback/
    export                           nbgrader export -> grades.csv

CHAPTER defaults to every chapter with a solution notebook (those released, for autograde and feedback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.grading.config import chapters
from utils.grading.course import Course, release_differences
from utils.grading.sandbox import require_sandbox, sandbox_enabled


def _released(course: Course, wanted: list[str]) -> list[str]:
    return [c for c in (wanted or chapters()) if (course.root / "release" / c).is_dir()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grading", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("step", choices=["release", "collect", "autograde", "feedback", "export"])
    parser.add_argument("args", nargs="*", help="FOLDER for collect, then chapters")
    parser.add_argument("--workers", type=int, default=None, help="autograde: submissions graded at a time")
    opts = parser.parse_args(argv)
    course = Course()
    args = list(opts.args)
    status = 0
    if opts.step == "release":
        for chapter in args or chapters():
            release = course.release(chapter)
            diffs = release_differences(release, course.root / "chapters" / f"{chapter}.ipynb")
            print(f"released {release.relative_to(course.root)}" + (": DIFFERS from chapters/" if diffs else ""))
            for line in diffs:
                print(f"  {line} (run `make build`)")
            status |= bool(diffs)
    elif opts.step == "collect":
        if not args:
            parser.error("collect needs a FOLDER holding <student>/<chapter>.ipynb")
        folder, wanted = Path(args[0]), args[1:]
        found = course.collect(folder, wanted or None)
        for student, chapter in found:
            print(f"collected {student}/{chapter}")
        for path, why in found.skipped:
            print(f"skipped {path}: {why}")
        print(f"{len(found)} notebooks collected, {len(found.skipped)} entries skipped")
    elif opts.step == "autograde":
        if sandbox_enabled():
            require_sandbox()
        run = course.autograde(_released(course, args), workers=opts.workers,
                               progress=lambda outcome: print(outcome.line(), flush=True))
        print("\n".join(run.summary()))
        status = run.returncode
    elif opts.step == "feedback":
        for chapter in _released(course, args):
            proc = course.feedback(chapter)
            print(f"feedback for {chapter}: exit {proc.returncode}")
            status |= proc.returncode != 0
    else:
        print(f"wrote {course.export()}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
