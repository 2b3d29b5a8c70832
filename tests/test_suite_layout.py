"""The suite's own machinery: `make test`'s xdist groups keep a module's tests, and its module fixtures, on one
worker (the graded class of tests/test_grading.py is built once, not once per worker). pytest 9.2 with
pytest-xdist 3.8 broke this silently (every grouped module ran on both workers): constraints.txt pins 9.1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED = '''
import os
import pytest

pytestmark = pytest.mark.xdist_group("one_worker")


@pytest.fixture(scope="module")
def built():
    with open(os.path.join(os.path.dirname(__file__), "built-" + os.environ["PYTEST_XDIST_WORKER"]), "a") as f:
        f.write("x")


@pytest.mark.parametrize("i", range(8))
def test_grouped(built, i):
    pass
'''

OTHERS = '''
import time
import pytest


@pytest.mark.parametrize("i", range(8))
def test_other(i):
    time.sleep(0.05)
'''


def test_a_groups_module_fixture_is_built_on_one_worker(tmp_path: Path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_others.py").write_text(OTHERS)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "-n", "2", "--dist", "loadgroup", "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    built = sorted(p.name for p in tmp_path.glob("built-*"))
    assert len(built) == 1 and (tmp_path / built[0]).read_text() == "x", built
