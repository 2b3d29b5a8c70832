"""`python -m utils.grading STEP`: the instructor's grading flow (what the Makefile's targets run).

    release   [CHAPTER ...]          nbgrader generate_assignment, then check release/ equals chapters/
    collect   FOLDER [CHAPTER ...]   FOLDER/<student>/<chapter>.ipynb -> submitted/<student>/<chapter>/
    autograde [CHAPTER ...]          nbgrader autograde --force, sandboxed, with a time per submission
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
        for student, chapter in course.collect(folder, wanted or None):
            print(f"collected {student}/{chapter}")
    elif opts.step == "autograde":
        if sandbox_enabled():
            require_sandbox()
        for chapter in _released(course, args):
            run = course.autograde(chapter)
            for student, seconds in sorted(run.per_student.items()):
                print(f"{chapter} {student}: {seconds:.1f} s")
            n = max(len(run.per_student), 1)
            print(f"{chapter}: {len(run.per_student)} submissions in {run.seconds:.0f} s "
                  f"({run.seconds / n:.1f} s each), exit {run.returncode}")
            if run.returncode != 0:
                sys.stderr.write(run.log[-4000:])
                status = 1
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
