"""Autograding one submission per nbgrader run, N runs at a time, each outcome recorded with its cause.

One `nbgrader autograde CHAPTER --student=S --force` per submission: whatever one notebook does to nbgrader
(an exception, a metadata error, a hung kernel) ends that run only, and the next submission starts clean.
Runs go `workers` at a time (default: the cores this process may use, capped so that each run has 2 GiB of
memory); every kernel is still its own sandbox (sandbox.py), and the torch threads of each are the cores
divided by the workers, so the machine is not oversubscribed.

Each submission ends as one `Outcome`: graded (with the repairs `normalise` made and what the integrity
scan flagged) or NOT graded, with the real cause: the unreadable file's parse error, or the exception line
of nbgrader's traceback, never the tail of its log. Outcomes are written to
`grading-status/<chapter>/<student>.json`, which `Course.export` adds to grades.csv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import nbformat.reader

from utils.grading.boundary import IN_PROCESS, OUTSIDE, covered, ensure_package, ensure_plans
from utils.grading.integrity import INTEGRITY_TAG
from utils.grading.normalise import REPAIR_TAG

STATUS_DIR = "grading-status"
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_NOTEBOOK_BYTES = 20 * 2**20
RUN_MARGIN_S = 300  # nbgrader's own start, kernel start and gradebook work on top of the notebook's limit


@dataclass
class Outcome:
    chapter: str
    student: str
    graded: bool
    seconds: float
    cause: str = ""  # why it was not graded
    repairs: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)

    def line(self) -> str:
        if not self.graded:
            return f"{self.chapter} {self.student}: NOT GRADED ({self.seconds:.1f} s): {self.cause}"
        notes = ([f"{len(self.repairs)} repair(s)"] if self.repairs else []) + (["integrity flag"] if self.integrity else [])
        return f"{self.chapter} {self.student}: graded in {self.seconds:.1f} s" + (f" ({', '.join(notes)})" if notes else "")


@dataclass
class AutogradeRun:
    outcomes: list[Outcome]
    seconds: float  # wall time of the whole run
    workers: int

    @property
    def returncode(self) -> int:
        return int(any(not o.graded for o in self.outcomes))

    @property
    def per_student(self) -> dict[str, float]:
        return {o.student: o.seconds for o in self.outcomes}

    def outcome(self, student: str, chapter: str | None = None) -> Outcome:
        return next(o for o in self.outcomes if o.student == student and chapter in (None, o.chapter))

    def summary(self) -> list[str]:
        lines = []
        for chapter in sorted({o.chapter for o in self.outcomes}):
            mine = [o for o in self.outcomes if o.chapter == chapter]
            failed = [o for o in mine if not o.graded]
            lines.append(f"{chapter}: {len(mine) - len(failed)} of {len(mine)} submissions graded"
                         + (f", {len(failed)} NOT GRADED" if failed else "")
                         + f"; {sum(o.seconds for o in mine) / max(len(mine), 1):.1f} s each; "
                         + (OUTSIDE if covered(chapter) else IN_PROCESS))
            lines += [f"  NOT GRADED {o.student}: {o.cause}" for o in failed]
            lines += [f"  repaired {o.student}: {r}" for o in mine for r in o.repairs]
            lines += [f"  integrity {o.student}: {r}" for o in mine for r in o.integrity[:1]]
        n = max(len(self.outcomes), 1)
        lines.append(f"{len(self.outcomes)} submissions in {self.seconds:.0f} s with {self.workers} worker(s): "
                     f"{self.seconds / n:.1f} s of wall time each")
        return lines


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = 2.0 * cores
    return max(1, min(cores, int(memory_gib // 2)))


def unreadable(path: Path) -> str:
    """Why `path` is not a notebook nbgrader can read ('' when it is). Reads only; never writes."""
    if path.is_symlink():
        return f"{path.name} is a symbolic link"
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.ipynb"))
        return f"no {path.name} in the submission folder" + (f" (it holds {', '.join(others)})" if others else "")
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return f"{path.name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
    try:
        with warnings.catch_warnings():  # nbformat's note on a duplicate cell id: normalise repairs those
            warnings.simplefilter("ignore")
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        if not isinstance(nb.cells, list) or not all(isinstance(c, dict) and isinstance(c.get("source"), str)
                                                     and isinstance(c.get("cell_type"), str) for c in nb.cells):
            raise ValueError("its cells are not a list of cells with a type and a source")
    except (json.JSONDecodeError, UnicodeDecodeError, nbformat.reader.NotJSONError, ValueError, KeyError,
            TypeError, AttributeError) as exc:
        return f"{path.name} is not a valid notebook: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    links = [p for p in sorted(path.parent.rglob("*")) if p.is_symlink()]
    if links:
        shown = ", ".join(f"{p.relative_to(path.parent)} -> {os.readlink(p)}" for p in links[:3])
        return f"the submission folder holds symbolic links ({shown}), which nbgrader would follow; remove them"
    return ""


def failure_cause(log: str, returncode: int) -> str:
    """The real reason in an nbgrader log: the last exception of its tracebacks, then its specific errors."""
    lines = log.splitlines()
    exceptions = []
    for i, line in enumerate(lines):
        if line.rstrip().endswith("Traceback (most recent call last):"):
            found = _exception_line(lines[i + 1:])
            if found:
                exceptions.append(found)
    generic = ("There was an error processing", "Please see the", "Canceled")
    errors = [m.group(1).strip() for m in (re.search(r"\| ERROR\] (.+)", line) for line in lines)
              if m and not m.group(1).startswith(generic) and not m.group(1).startswith("Traceback")]
    last = exceptions[-1:]
    causes = list(dict.fromkeys(last + [e for e in errors if not any(e in x for x in last)]))
    return "; ".join(causes)[:600] or f"nbgrader exited with status {returncode} without an error message"


def _exception_line(after: list[str]) -> str:
    """The exception that ends a traceback. Python prints it unindented; nbgrader's log indents the whole
    traceback, so there it is the block's least-indented line that is neither a frame nor source."""
    block = []
    for line in after:
        if line and not line[0].isspace():
            if not line.startswith(("[", "Traceback", "During handling", "The above exception")):
                return line.strip()  # a plain traceback: its first unindented line is the exception
            break  # a log record ("[AutogradeApp | ...") or a chained traceback ends the block
        block.append(line)
    body = [l for l in block if l.strip() and not l.strip().startswith(("File ", "^", "~", "Traceback",
                                                                         "During handling", "The above exception"))]
    if not body:
        return ""
    indent = min(len(l) - len(l.lstrip()) for l in body)
    return [l for l in body if len(l) - len(l.lstrip()) == indent][-1].strip()


def _tagged(log: str, tag: str) -> list[str]:
    return [line.split(tag, 1)[1].split(": ", 1)[-1].strip() for line in log.splitlines() if tag in line]


def _env(workers: int) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    limits = json.loads(os.environ.get("TFS_GRADING_LIMITS", "{}") or "{}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limits.setdefault("threads", max(1, cores // workers))
    env["TFS_GRADING_LIMITS"] = json.dumps(limits)
    return env


def grade_one(root: Path, chapter: str, student: str, *, workers: int = 1, timeout_s: float = 1500) -> Outcome:
    """One `nbgrader autograde` run for one submission, in the course directory `root`."""
    t0 = time.monotonic()
    notebook = root / "submitted" / student / chapter / f"{chapter}.ipynb"
    cause = "" if STUDENT_ID.match(student) else f"student id {student!r}: use letters, digits and _ . @ - only"
    cause = cause or unreadable(notebook)
    if cause:
        # a previous version's autograded notebook would otherwise give stale feedback
        shutil.rmtree(root / "autograded" / student / chapter, ignore_errors=True)
        return Outcome(chapter, student, False, time.monotonic() - t0, cause)
    # nbgrader itself, ended without the interpreter's 2 s teardown of torch and the checkers (nbgrader_main.py)
    cmd = [sys.executable, "-m", "utils.grading.nbgrader_main", "autograde", chapter, "--force", f"--student={student}"]
    with subprocess.Popen(cmd, cwd=root, env=_env(workers), text=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, start_new_session=True) as proc:
        try:
            _, log = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # nbgrader and its kernel (bwrap dies with its parent)
            _, log = proc.communicate()
            return Outcome(chapter, student, False, time.monotonic() - t0,
                           f"grading ran past {timeout_s:.0f} s and was stopped")
    seconds = time.monotonic() - t0
    repairs, integrity = _tagged(log, REPAIR_TAG), _tagged(log, INTEGRITY_TAG)
    graded = (root / "autograded" / student / chapter / f"{chapter}.ipynb").exists()
    if proc.returncode == 0 and graded:
        return Outcome(chapter, student, True, seconds, "", repairs, integrity)
    return Outcome(chapter, student, False, seconds, failure_cause(log, proc.returncode), repairs, integrity)


def write_status(root: Path, outcome: Outcome) -> None:
    path = root / STATUS_DIR / outcome.chapter / f"{outcome.student}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(outcome), indent=1) + "\n", encoding="utf-8")


def read_status(root: Path) -> dict[tuple[str, str], Outcome]:
    """{(chapter, student): Outcome} of the latest autograde of every submission."""
    found = {}
    for path in sorted((root / STATUS_DIR).glob("*/*.json")):
        try:
            outcome = Outcome(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            continue
        found[(outcome.chapter, outcome.student)] = outcome
    return found


def autograde(jobs: list[tuple[Path, str, str]], workers: int | None = None, *, timeout_s: float = 1500,
              progress=None) -> AutogradeRun:
    """Grade every (course root, chapter, student) job, `workers` at a time; `progress(outcome)` per result."""
    workers = max(1, workers or default_workers())
    lock = threading.Lock()
    for chapter in sorted({chapter for _, chapter, _ in jobs if covered(chapter)}):
        ensure_plans(chapter)  # once, before the workers start (each would otherwise record its own)
        ensure_package(chapter)

    def one(job):
        root, chapter, student = job
        outcome = grade_one(root, chapter, student, workers=workers, timeout_s=timeout_s)
        write_status(root, outcome)
        if progress is not None:
            with lock:
                progress(outcome)
        return outcome

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(one, jobs))
    return AutogradeRun(outcomes, time.monotonic() - t0, workers)
