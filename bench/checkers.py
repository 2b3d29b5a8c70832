"""Each checker's latency once the reference is loaded (goal ≤ 0.5 s each, a whole chapter ≤ 5 s)."""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict

from bench.timing import median_seconds


def run(results: dict) -> None:
    from utils.checks.catalogue import reference_calls
    from utils.reference_model import reference_cache

    reference_cache()  # loaded once, as in a notebook; not part of any checker's latency
    per_checker, per_chapter, skipped = {}, defaultdict(float), []
    for call, thunk in reference_calls():
        if thunk is None:
            skipped.append(call.exercise)
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            seconds = median_seconds(thunk, repeats=3, warmup=1)
        per_checker[call.exercise] = seconds
        per_chapter[call.notebook] += seconds
    results["checkers"] = {
        "per_checker_s": per_checker, "per_chapter_s": dict(per_chapter), "max_s": max(per_checker.values(), default=0.0),
        "needs_notebook_state": skipped,
    }
