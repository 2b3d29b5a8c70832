"""Each checker's latency, first call and warm, at two reference sizes: `random-mini` (2 layers, d_model 128, the
offline default) and GPT-2 small's full size (12 layers, d_model 768), as a faithful real-GPT-2 hub snapshot
(tests/gpt2_snapshot.py: the hub's file layout, tied embeddings, zero b_U), the path a connected learner takes.

Each size runs in a fresh process, so a first call pays for whatever that checker builds and caches, as in a
notebook (loading the reference itself is not counted: the "reference" section times that). Goals: warm ≤ 0.5 s
for every checker, ≤ 1.5 s for chapter 03's whole-model checks at GPT-2 size; first call ≤ 3 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("random-mini", "gpt2-size")  # gpt2-size: the snapshot at full size, else `random-gpt2` (said in `reference`)
CODE = r"""
import contextlib, io, json, time
from bench.timing import median_seconds
from utils.checks.catalogue import reference_calls
from utils.reference_model import reference_cache, reference_info

reference_cache()  # loaded once, as in a notebook; not part of any checker's latency
rows, skipped = {}, []
for call, thunk in reference_calls():
    if thunk is None:
        skipped.append(call.exercise)
        continue
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        thunk()
        first = time.perf_counter() - start
        warm = median_seconds(thunk, repeats=3, warmup=0)
    rows[call.exercise] = {"notebook": call.notebook, "first_s": first, "warm_s": warm}
info = reference_info()
print("RESULT " + json.dumps({"reference": info.kind, "description": info.description, "per_checker": rows,
                              "needs_notebook_state": skipped}))
"""


def warm_goal_s(size: str, notebook: str) -> float:
    """The warm-latency goal: 0.5 s, except chapter 03's whole-model checks at GPT-2 size (1.5 s)."""
    return 1.5 if size != "random-mini" and notebook.startswith("03_") else 0.5


FIRST_CALL_GOAL_S = 3.0


def _measure(env: dict[str, str], timeout_s: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"checker timing exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _gpt2_size(timeout_s: float) -> dict:
    """At GPT-2 size through the real-GPT-2 path (a 12-layer snapshot in a temporary HF_HOME), else random-gpt2."""
    try:
        from tests.gpt2_snapshot import snapshot_env, write_gpt2_snapshot  # the repository's, run from its root
    except ImportError:
        return _measure({"HF_HUB_OFFLINE": "1", "TFS_REFERENCE": "random-gpt2"}, timeout_s)
    with tempfile.TemporaryDirectory(prefix="tfs-bench-gpt2-") as hf_home:
        write_gpt2_snapshot(Path(hf_home), n_layer=12)
        result = _measure(snapshot_env(Path(hf_home)), timeout_s)
    result["via"] = "a faithful 12-layer GPT-2 hub snapshot with random weights (tests/gpt2_snapshot.py)"
    return result


def run(results: dict, sizes: tuple[str, ...] = SIZES, timeout_s: float = 1800.0) -> None:
    results["checkers"] = {}
    for size in sizes:
        if size == "random-mini":
            results["checkers"][size] = _measure({"HF_HUB_OFFLINE": "1", "TFS_REFERENCE": "random-mini"}, timeout_s)
        else:
            results["checkers"][size] = _gpt2_size(timeout_s)
