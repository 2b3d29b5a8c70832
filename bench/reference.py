"""How long a notebook waits for the reference model offline: a cold process, imports included."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import time
start = time.perf_counter()
from utils.reference_model import reference_gpt2
model = reference_gpt2({kind!r})
loaded = time.perf_counter() - start
print("LOAD", loaded)
"""


def cold_load_seconds(kind: str) -> tuple[float, float]:
    """(seconds until the one-line report, seconds until loaded) in a fresh interpreter."""
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-u", "-c", CODE.format(kind=kind)], stdout=subprocess.PIPE, text=True, env=env)
    first_line = None
    loaded = float("nan")
    for line in proc.stdout:
        if first_line is None and line.startswith("Reference model:"):
            first_line = time.perf_counter() - start
        if line.startswith("LOAD"):
            loaded = float(line.split()[1])
    proc.wait()
    return first_line or float("nan"), loaded


def run(results: dict) -> None:
    results["reference"] = {}
    for kind in ("random-mini", "random-gpt2"):
        reported, loaded = cold_load_seconds(kind)
        results["reference"][kind] = {"reports_kind_after_s": reported, "loaded_after_s": loaded}
