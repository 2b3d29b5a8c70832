"""nbgrader autograding at class scale (the issue's figure): 30 submissions per chapter graded by the parallel
workers, wall time, and the speed-up over the sequential run, by running the grading package's own
class-scale script, `python -m utils.grading.bench`, in a child process, in a temporary course. It checks
every score, and that a sample graded sequentially gets the same scores. `make bench` grades chapter 02 (the
whole bench stays under 10 minutes on 2 cores); `make grading-bench` grades every chapter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

STUDENTS = 30
CHAPTER = "02_components"


def run(results: dict, students: int = STUDENTS, chapter: str = CHAPTER, sequential: int = 6) -> None:
    with tempfile.TemporaryDirectory(prefix="tfs-bench-grading-") as tmp:
        out = Path(tmp) / "grading.json"
        proc = subprocess.run(
            [sys.executable, "-m", "utils.grading.bench", "--students", str(students), "--chapters", chapter,
             "--sequential", str(sequential), "--out", str(out)],
            capture_output=True, text=True,
        )
        if not out.exists():  # it failed before writing its report: keep the reason, not a traceback wall
            results["grading"] = {"available": False, "reason": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
            return
        report = json.loads(out.read_text())
    results["grading"] = {
        "available": True, "chapter": ", ".join(report["chapters"]), "submissions": report["submissions"],
        "workers": report["workers"], "release_s": report["release_s"], "autograde_s": report["autograde_s"],
        "per_submission_wall_s": report["per_submission_wall_s"],
        "per_submission_median_s": report["per_submission_s"]["median"],
        "sequential_per_submission_s": report["sequential_per_submission_s"],
        "sequential_sample": report["sequential_sample"], "speedup": report["speedup"],
        "scores_as_expected": proc.returncode == 0 and not report["wrong_scores"] and not report["not_graded"],
        "same_as_sequential": not report["differ_from_sequential"],
        "wrong_scores": report["wrong_scores"] + report["not_graded"],
    }
