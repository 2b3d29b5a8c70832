"""The path a Colab learner takes, simulated (tests/colab_sim.py): a fresh kernel with only Colab's packages and
`google.colab` loaded; the notebook's own setup cell installs the course from a git URL (a local repository
tagged with this version stands in for the public one). It must succeed, leave torch, numpy and transformers as
Colab had them, and chapter 02's solution must then pass every exercise."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime

import pytest

from utils.course import COLAB_REF
from utils.grade import run_notebook

from .colab_sim import KERNEL_NAME, make_colab_env, pip_freeze, publish_working_tree
from .conftest import ROOT

KEPT = ("torch", "numpy", "transformers")


def _cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return float("nan")
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


@pytest.mark.slow
def test_colab_setup_cell_installs_the_course_and_chapter_02_passes(tmp_path, monkeypatch):
    env = make_colab_env(tmp_path / "colab")
    before = pip_freeze(env)
    repo = tmp_path / "public-repo"
    monkeypatch.setenv("TFS_PACKAGE_URL", publish_working_tree(ROOT, repo, COLAB_REF))
    monkeypatch.setenv("JUPYTER_PATH", str(env / "share" / "jupyter"))
    content = tmp_path / "content"  # Colab's working folder: no checkout of the course in it
    content.mkdir()

    start = time.perf_counter()
    nb, rows = run_notebook(ROOT / "solutions" / "02_components.ipynb", timeout=1200, kernel_name=KERNEL_NAME, cwd=content)
    wall = time.perf_counter() - start

    setup = next(c for c in nb.cells if c.cell_type == "code")
    errors = [o for o in setup.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    after = pip_freeze(env)
    for name in KEPT:
        assert after[name] == before[name], f"the setup cell changed Colab's {name}: {before[name]} -> {after[name]}"
    tagged = subprocess.run(["git", "-C", str(repo), "rev-parse", COLAB_REF], capture_output=True, text=True).stdout.strip()
    assert after["transformer-from-scratch"].endswith(f"@{tagged}"), after["transformer-from-scratch"]  # the tag's commit
    failing = [(r.exercise, r.message) for r in rows if not r.ok]
    assert rows and not failing, failing

    added = sorted(set(after) - set(before))
    upgraded = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    assert not upgraded, f"the setup cell changed Colab's packages: {upgraded}"
    report = {"setup_cell_s": round(_cell_seconds(setup), 1), "notebook_wall_s": round(wall, 1),
              "packages_before": len(before), "added": {n: after[n] for n in added}, "upgraded": upgraded}
    out = ROOT / "test-artifacts" / "colab"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
