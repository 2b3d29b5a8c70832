"""Shared fixtures. Tests run offline: the reference model is the seeded random GPT-2 architecture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `make test` runs two pytest workers (pytest-xdist) on a 2-core machine: each worker, and every kernel it starts,
# then uses one thread, because two workers with two threads each wait on each other (10x slower under load).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFS_FAST", "1")  # notebooks shrink their demo training runs under test

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_NOTEBOOKS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="session")
def gpt2_hub(tmp_path_factory) -> Path:
    """An HF_HOME holding a faithful 2-layer GPT-2 small snapshot under `openai-community/gpt2` and `gpt2`
    (tests/gpt2_snapshot.py): the path a learner with real GPT-2 takes. Written once per session (~15 s)."""
    from tests.gpt2_snapshot import write_gpt2_snapshot

    return write_gpt2_snapshot(tmp_path_factory.mktemp("hf_home"), n_layer=2)


@pytest.fixture
def real_gpt2_env(gpt2_hub, monkeypatch):
    """Make this test, and every process it starts (notebook kernels too), see the snapshot as real GPT-2."""
    from tests.gpt2_snapshot import snapshot_env

    for name, value in snapshot_env(gpt2_hub).items():
        monkeypatch.setenv(name, value)
    return gpt2_hub


@pytest.fixture
def one_thread():
    """Tiny models' ops on a busy 2-core machine: two threads fighting over them are far slower than one."""
    import torch as t

    threads = t.get_num_threads()
    t.set_num_threads(1)
    yield
    t.set_num_threads(threads)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def gpt2():
    from utils.reference_model import reference_gpt2

    return reference_gpt2()


@pytest.fixture(scope="session")
def ref_cache():
    from utils.reference_model import reference_cache

    return reference_cache()


@pytest.fixture(scope="session")
def cfg():
    from utils.reference_model import course_config

    return course_config()


@pytest.fixture(scope="session")
def executed_solution():
    """executed_solution(path) -> (executed notebook, grade rows): each solution notebook runs once per session.

    Executing a notebook is the slow part of the suite; tests that need a solution's outputs share one run
    (utils.grade.run_notebook: a copy is executed, nothing is written back)."""
    from utils.grade import run_notebook

    cache = {}

    def get(path: Path):
        if path not in cache:
            cache[path] = run_notebook(path)
        return cache[path]

    return get


# The longest groups start first, one per worker, so the rest fills in around them rather than leaving one
# worker alone at the end: grading a class (~12 min) and the executed solutions. The Makefile passes
# `--no-loadscope-reorder` so xdist keeps this order instead of sorting groups by their number of tests.
LONGEST_FIRST = ("test_grading", "offline-solutions")


def _group(item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    return (marker.args[0] if marker.args else marker.kwargs.get("name")) if marker else None


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: the rest keep their order
