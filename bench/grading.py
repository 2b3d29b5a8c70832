"""nbgrader autograde time per submission for a class of 30 (the issue's figure), by running the grading
package's own class-scale script, `python -m utils.grading.bench`, in a child process: it grades a realistic
mix of submissions in one `nbgrader autograde` run, in a temporary course, and checks every score.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

STUDENTS = 30
CHAPTER = "02_components"


def run(results: dict, students: int = STUDENTS, chapter: str = CHAPTER) -> None:
    with tempfile.TemporaryDirectory(prefix="tfs-bench-grading-") as tmp:
        out = Path(tmp) / "grading.json"
        proc = subprocess.run(
            [sys.executable, "-m", "utils.grading.bench", "--students", str(students), "--chapter", chapter, "--out", str(out)],
            capture_output=True, text=True,
        )
        if not out.exists():  # it failed before writing its report: keep the reason, not a traceback wall
            results["grading"] = {"available": False, "reason": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
            return
        report = json.loads(out.read_text())
    per = report["per_submission_s"]
    results["grading"] = {
        "available": True, "chapter": report["chapter"], "submissions": report["submissions"],
        "release_s": report["release_s"], "autograde_s": report["autograde_s"],
        # The mean includes nbgrader's start-up and gradebook work spread over the class; the median is one notebook.
        "per_submission_mean_s": per["mean"], "per_submission_median_s": per["median"], "per_submission_max_s": per["max"],
        "scores_as_expected": proc.returncode == 0 and not report["wrong_scores"],
        "wrong_scores": report["wrong_scores"],
    }
