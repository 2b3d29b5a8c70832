"""Chapters 02 and 03's checks on the path most learners take: real GPT-2 small (tied embeddings, zero `b_U`).

The same catalogue, alternative and reference tests as tests/test_ch02_components.py and tests/test_ch03_assembly.py
run again in a fresh process whose reference is the faithful hub snapshot (tests/gpt2_snapshot.py): every
catalogued mistake must still be rejected and named, and every accepted alternative still accepted, when the
weights are GPT-2's layout rather than the untied random stand-in's."""

from __future__ import annotations

import subprocess
import sys

import pytest

SELECTED = "mistake or alternative or reference_passes or divergence"


@pytest.mark.slow
def test_chapter_02_and_03_catalogues_hold_under_real_gpt2(real_gpt2_env, root):
    kind = subprocess.run([sys.executable, "-c", "from utils.reference_model import reference_info as r; print(r().kind)"],
                          cwd=root, capture_output=True, text=True, timeout=600).stdout.split()
    assert kind[-1:] == ["gpt2"], kind  # the nested run really compares against the snapshot
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=",
         "tests/test_ch02_components.py", "tests/test_ch03_assembly.py", "-k", SELECTED],
        cwd=root, capture_output=True, text=True, timeout=1800,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
