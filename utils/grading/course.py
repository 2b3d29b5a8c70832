"""The grading flow for a course directory: release, collect, autograde, feedback, export.

Every step is a plain nbgrader command run from the course directory (the repository's root by default,
whose `nbgrader_config.py` holds the settings), plus what nbgrader lacks:
- `collect` copies a folder of student notebooks into nbgrader's `submitted/<student>/<chapter>/` layout and
  says what it skipped and why (collect.py);
- `autograde` runs nbgrader once per submission, several at a time, and records every outcome with its
  cause (autograde.py); a submitted file is never modified;
- `export` adds that outcome to grades.csv;
- `release` checks that nbgrader's release of each chapter equals `chapters/` (the build's output);
- `scores` reads the gradebook (tests and the benchmark use it).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from utils.grading.boundary import IN_PROCESS, covered
from utils.grading.autograde import STATUS_DIR, STUDENT_ID, AutogradeRun, Outcome, autograde, read_status
from utils.grading.collect import Collection, find_submissions
from utils.grading.config import REPO, chapters


@dataclass
class Course:
    """A course directory: `root` holds nbgrader_config.py, release/, submitted/, autograded/, feedback/,
    gradebook.db. `Course()` is the repository itself; `Course.temporary(path)` makes one elsewhere."""

    root: Path = REPO

    @classmethod
    def temporary(cls, root: Path, source_dir: Path | None = None, settings: str = "") -> "Course":
        """A fresh course directory at `root` (tests, benchmark) with its own gradebook; `settings` are extra
        lines for its nbgrader_config.py (e.g. "c.Execute.timeout = 60")."""
        root.mkdir(parents=True, exist_ok=True)
        source_dir = source_dir or root.parent / f"{root.name}-source" / "source"
        (root / "nbgrader_config.py").write_text(
            "from utils.grading.config import configure\n\n"
            f"c = get_config()  # noqa: F821\n"
            f"configure(c, root={str(root)!r}, source_dir={str(source_dir)!r})\n{settings}\n",
            encoding="utf-8",
        )
        return cls(root)

    # ------------------------------------------------------------------------------------------- nbgrader

    def nbgrader(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=self.root, env=env,
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"nbgrader {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc

    def release(self, chapter: str) -> Path:
        self.nbgrader("generate_assignment", chapter, "--force")
        return self.root / "release" / chapter / f"{chapter}.ipynb"

    def jobs(self, chapter: str, students: list[str] | None = None) -> list[tuple[Path, str, str]]:
        """(root, chapter, student) for every submission of `chapter` (or the given students)."""
        found = sorted(p.parent.name for p in (self.root / "submitted").glob(f"*/{chapter}") if p.is_dir())
        gone = self.root / STATUS_DIR / chapter
        for stale in gone.glob("*.json") if gone.is_dir() else ():
            if stale.stem not in found:
                stale.unlink()  # a status for a submission no longer there would reach grades.csv
        return [(self.root, chapter, s) for s in found if students is None or s in students]

    def autograde(self, chapters: str | list[str], students: list[str] | None = None, workers: int | None = None,
                  progress=None) -> AutogradeRun:
        """Every submission of `chapters` (or of the given students), one nbgrader run each, `workers` at a
        time (default: the number of cores); see utils/grading/autograde.py."""
        chapters = [chapters] if isinstance(chapters, str) else chapters
        jobs = [job for chapter in chapters for job in self.jobs(chapter, students)]
        return autograde(jobs, workers, progress=progress)

    def feedback(self, chapter: str) -> subprocess.CompletedProcess:
        return self.nbgrader("generate_feedback", chapter, "--force", check=False)

    def export(self, to: Path | None = None) -> Path:
        """nbgrader's grades.csv plus a `grading` column: graded, graded with repairs, or NOT GRADED with the
        cause (whose score columns are then left empty, never a silent 0)."""
        to = to or self.root / "grades.csv"
        self.nbgrader("export", f"--to={to}")
        add_status(to, read_status(self.root))
        return to

    # ----------------------------------------------------------------------------------------- submissions

    def students(self, chapter: str, exclude: list[str] = ()) -> list[str]:
        return sorted(p.name for p in (self.root / "submitted").glob("*")
                      if (p / chapter).is_dir() and p.name not in exclude)

    def submit(self, student: str, chapter: str, notebook: Path | bytes | str) -> Path:
        """Place one notebook as `submitted/<student>/<chapter>/<chapter>.ipynb` (bytes are written as is)."""
        if not STUDENT_ID.match(student):
            raise ValueError(f"student id {student!r}: use letters, digits, and _ . @ - only")
        dest = self.root / "submitted" / student / chapter / f"{chapter}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(notebook, Path):
            shutil.copyfile(notebook, dest)
        else:
            dest.write_bytes(notebook.encode() if isinstance(notebook, str) else notebook)
        (dest.parent / "timestamp.txt").write_text(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
        return dest

    def collect(self, folder: Path, chapter_names: list[str] | None = None) -> Collection:
        """Copy `folder/<student>/<chapter>.ipynb` (or `.../<chapter>/<chapter>.ipynb`, or a browser's
        `<chapter> (1).ipynb` when it is the only candidate) into submitted/; everything else is reported
        as skipped, with the reason (utils/grading/collect.py)."""
        found = find_submissions(Path(folder), chapter_names or chapters())
        for student, chapter, path in found.collected:
            self.submit(student, chapter, path)
        return found

    # --------------------------------------------------------------------------------------------- results

    def scores(self, chapter: str) -> dict[str, dict[str, float]]:
        """{student: {grade_id: score}} for the test cells of `chapter`, read from the gradebook."""
        from nbgrader.api import Gradebook

        result: dict[str, dict[str, float]] = {}
        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}", course_id="transformer-from-scratch") as gb:
            for submission in gb.assignment_submissions(chapter):
                cells = result.setdefault(submission.student_id, {})
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        cells[grade.name] = float(grade.score)
        return result


def release_differences(release: Path, chapter_file: Path) -> list[str]:
    """Where nbgrader's release differs from the build's chapters/ notebook, compared as JSON: both come from
    the same preprocessors, only the serialisation (indentation, key order) may differ."""
    a, b = json.loads(release.read_text(encoding="utf-8")), json.loads(chapter_file.read_text(encoding="utf-8"))
    diffs = []
    for key in ("metadata", "nbformat", "nbformat_minor"):
        if a.get(key) != b.get(key):
            diffs.append(f"notebook {key}: {a.get(key)!r} != {b.get(key)!r}")
    if len(a["cells"]) != len(b["cells"]):
        diffs.append(f"{len(a['cells'])} cells != {len(b['cells'])}")
    for i, (x, y) in enumerate(zip(a["cells"], b["cells"])):
        x, y = {k: v for k, v in x.items() if k != "id"}, {k: v for k, v in y.items() if k != "id"}
        if x != y:
            keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            diffs.append(f"cell {i}: {', '.join(keys)} differ")
    return diffs


SCORE_COLUMNS = ("raw_score", "late_submission_penalty", "score")


def add_status(csv_path: Path, status: dict[tuple[str, str], Outcome]) -> None:
    """Add the `grading` column to nbgrader's CSV; a submission that was not graded gets empty scores and
    its cause, and one that nbgrader has no row for (it never reached the gradebook) gets a row."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0].keys()) if rows else ["assignment", "duedate", "timestamp", "student_id", "last_name",
                                                "first_name", "email", *SCORE_COLUMNS, "max_score"]
    seen = set()
    for row in rows:
        key = (row["assignment"], row["student_id"])
        seen.add(key)
        outcome = status.get(key)
        if outcome is None:
            row["grading"] = "no submission" if not row.get("timestamp") else "graded"
        elif outcome.graded:
            row["grading"] = "graded" + (f" after {len(outcome.repairs)} repair(s): " + "; ".join(outcome.repairs)
                                         if outcome.repairs else "")
            if not covered(row["assignment"]):  # honest about what the score rests on
                row["grading"] += f"; {IN_PROCESS}"
        else:
            row["grading"] = f"NOT GRADED: {outcome.cause}"
            row.update({k: "" for k in SCORE_COLUMNS})
    for (chapter, student), outcome in sorted(status.items()):
        if (chapter, student) not in seen and not outcome.graded:
            rows.append({**{k: "" for k in fields}, "assignment": chapter, "student_id": student,
                         "grading": f"NOT GRADED: {outcome.cause}"})
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*fields, "grading"])
        writer.writeheader()
        writer.writerows(rows)
