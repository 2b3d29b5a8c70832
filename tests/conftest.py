"""Shared fixtures. Tests run offline: the reference model is the seeded random GPT-2 architecture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFS_FAST", "1")  # notebooks shrink their demo training runs under test

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_NOTEBOOKS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


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
