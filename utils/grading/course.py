"""The grading flow for a course directory: release, collect, autograde, feedback, export.

Every step is a plain nbgrader command run from the course directory (the repository's root by default,
whose `nbgrader_config.py` holds the settings), plus what nbgrader lacks:
- `collect` copies a folder of student notebooks into nbgrader's `submitted/<student>/<chapter>/` layout;
  a file that is not a readable notebook is kept beside it as `.invalid` and replaced by the untouched
  release with a note, so that it is graded 0 instead of stopping the run;
- `release` checks that nbgrader's release of each chapter equals `chapters/` (the build's output);
- `scores` reads the gradebook (tests and the benchmark use it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import nbformat.reader

from utils.grading.config import REPO, chapters

SANITIZING = re.compile(r"Sanitizing .*[/\\\\]submitted[/\\\\]([^/\\\\]+)[/\\\\]")
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_NOTEBOOK_BYTES = 20 * 2**20


@dataclass
class AutogradeRun:
    returncode: int
    seconds: float  # the whole nbgrader run
    per_student: dict[str, float]  # from one submission's start to the next one's
    log: str


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

    def autograde(self, chapter: str, student: str | None = None) -> "AutogradeRun":
        """`nbgrader autograde CHAPTER --force` over every submission (or one student), timing each one."""
        for path in sorted((self.root / "submitted").glob(f"*/{chapter}/*.ipynb")):
            ensure_readable(path, self.root / "release" / chapter / path.name)
        args = ["autograde", chapter, "--force"] + ([f"--student={student}"] if student else [])
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        started: dict[str, float] = {}
        log: list[str] = []
        t0 = time.monotonic()
        with subprocess.Popen([sys.executable, "-m", "nbgrader", *args], cwd=self.root, env=env, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
            for line in proc.stderr:
                log.append(line)
                found = SANITIZING.search(line)
                if found:
                    started.setdefault(found.group(1), time.monotonic())
        end = time.monotonic()
        order = sorted(started, key=started.get)
        seconds = {s: (started[n] if n else end) - started[s]
                   for s, n in zip(order, [*order[1:], None])}
        return AutogradeRun(proc.returncode, end - t0, seconds, "".join(log))

    def feedback(self, chapter: str) -> subprocess.CompletedProcess:
        return self.nbgrader("generate_feedback", chapter, "--force", check=False)

    def export(self, to: Path | None = None) -> Path:
        to = to or self.root / "grades.csv"
        self.nbgrader("export", f"--to={to}")
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

    def collect(self, folder: Path, chapter_names: list[str] | None = None) -> list[tuple[str, str]]:
        """Copy `folder/<student>/<chapter>.ipynb` (or `folder/<student>/<chapter>/<chapter>.ipynb`) into
        submitted/. Returns the (student, chapter) pairs collected; anything else is reported and skipped."""
        wanted = chapter_names or chapters()
        collected = []
        for student_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
            if not STUDENT_ID.match(student_dir.name):
                print(f"skipped {student_dir}: not a valid student id", file=sys.stderr)
                continue
            for chapter in wanted:
                for candidate in (student_dir / f"{chapter}.ipynb", student_dir / chapter / f"{chapter}.ipynb"):
                    if candidate.is_file() and not candidate.is_symlink():
                        dest = self.submit(student_dir.name, chapter, candidate)
                        ensure_readable(dest, self.root / "release" / chapter / f"{chapter}.ipynb")
                        collected.append((student_dir.name, chapter))
                        break
        return collected

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


def placeholder(release: Path, reason: str):
    """The untouched release with a first cell that says why the submission was replaced."""
    nb = nbformat.read(str(release), as_version=4)
    note = nbformat.v4.new_markdown_cell(f"**Grader:** the submitted file could not be graded ({reason}); it was "
                                         "graded as an empty submission. Its original bytes are kept beside it "
                                         "with the suffix `.invalid`.")
    note.pop("id", None)  # the release is nbformat 4.4: no cell ids
    nb.cells.insert(0, note)
    return nb


def ensure_readable(path: Path, release: Path) -> bool:
    """True when `path` is a valid notebook; otherwise it is replaced by `placeholder` (original kept)."""
    reason = ""
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        reason = f"larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
    else:
        try:
            # readable is enough: nbgrader repairs what it can (ids, metadata) and restores the locked cells
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
            if not isinstance(nb.cells, list) or not all("cell_type" in c and "source" in c for c in nb.cells):
                raise ValueError("cells are not a list of cells")
        except (json.JSONDecodeError, UnicodeDecodeError, nbformat.reader.NotJSONError, ValueError,
                KeyError, TypeError, AttributeError) as exc:
            reason = f"not a valid notebook: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if not reason:
        return True
    shutil.copyfile(path, path.with_suffix(".ipynb.invalid"))
    nbformat.write(placeholder(release, reason), str(path))
    return False


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
