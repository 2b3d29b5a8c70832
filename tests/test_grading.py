"""nbgrader end to end: release equals chapters/, full / zero / partial marks for every chapter, and a corpus of
broken and hostile submissions graded in the sandbox with the expected points.

Every grading run happens once per module, in temporary course directories, two nbgrader runs at a time;
the tests then read the gradebook and the autograded notebooks. The hostile corpus needs bubblewrap
(`apt-get install -y bubblewrap`; .ci/run installs it) and is skipped, saying so, without it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from tests.grading_corpus import OUTSIDE_MARKER, Layout, clean, corpus, partial
from utils.grading.config import REPO, chapters
from utils.grading.course import Course, release_differences
from utils.grading.integrity import scan
from utils.grading.sandbox import missing_tools

pytestmark = pytest.mark.slow
HOSTILE_CHAPTER = "02_components"
CELL_TIMEOUT_S = 120  # the course's own limit: chapter 05's training cell needs it on a loaded machine
NOTEBOOK_TIMEOUT_S = 400
SETTINGS = f"c.Execute.timeout = {CELL_TIMEOUT_S}\nc.SafeExecute.notebook_timeout = {NOTEBOOK_TIMEOUT_S}\n"
SANDBOXED = not missing_tools()
NO_SANDBOX = ("bubblewrap is not installed (`apt-get install -y bubblewrap`): the hostile corpus only runs "
              "sandboxed, so it is skipped here; CI installs it in .ci/run")


def layout(course: Course, chapter: str) -> Layout:
    release = nbformat.read(str(course.root / "release" / chapter / f"{chapter}.ipynb"), as_version=4)
    return Layout.of(nbformat.read(str(REPO / "solutions" / f"{chapter}.ipynb"), as_version=4), release)


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not str(p.relative_to(root)).startswith(skip)}


def chapters_under_test() -> list[str]:
    """Every chapter, or those in TFS_GRADING_CHAPTERS (space-separated) for a quicker local run."""
    wanted = os.environ.get("TFS_GRADING_CHAPTERS", "").split()
    return [c for c in chapters() if not wanted or c in wanted]


# A half-done submission scores exactly its exercises' points and 0 for the rest, so it proves both directions
# for every chapter; full and untouched submissions of every chapter (3 kernels each) are the full matrix,
# kept for TFS_GRADING_FULL=1 to hold `make test` inside its time budget. The solutions' full marks are also
# proven by tests/test_notebooks.py, which runs every check of every solution.
FULL_MATRIX = os.environ.get("TFS_GRADING_FULL", "") == "1"


def grade_chapters(base: Path) -> dict:
    """Full, zero and partial submissions for every chapter, in one course directory."""
    course = Course.temporary(base / "chapters", settings=SETTINGS)
    results = {}
    for chapter in chapters_under_test():
        course.release(chapter)
        lay = layout(course, chapter)
        expected = {}
        if chapter == HOSTILE_CHAPTER or FULL_MATRIX or len(lay.groups) <= 1:
            course.submit("solution", chapter, nbformat.writes(clean(lay.solution)))
            course.submit("untouched", chapter, nbformat.writes(clean(lay.release)))
            expected = {"solution": set(lay.points), "untouched": set()}
        if len(lay.groups) > 1:
            nb, passing = partial(lay, filled=len(lay.groups) // 2)
            course.submit("partial", chapter, nbformat.writes(nb))
            expected["partial"] = passing
        run = course.autograde(chapter)
        results[chapter] = (course, lay, expected, run)
    return results


def grade_corpus(base: Path) -> dict:
    course = Course.temporary(base / "corpus", settings=SETTINGS)
    course.release(HOSTILE_CHAPTER)
    lay = layout(course, HOSTILE_CHAPTER)
    bystander = course.submit("bystander", HOSTILE_CHAPTER, nbformat.writes(clean(lay.solution)))
    decoy = base / "decoy-solutions"  # destructive attempts aim at copies; the repository only gets new files
    shutil.copytree(REPO / "solutions", decoy)
    decoy_before = tree_digest(decoy)
    outside = {"gradebook": str(course.root / "gradebook.db"), "other_submission": str(bystander),
               "submitted_dir": str(course.root / "submitted"), "release": str(course.root / "release"),
               "config": str(course.root / "nbgrader_config.py"), "solutions_copy": str(decoy),
               "repo_solutions": str(REPO / "solutions" / OUTSIDE_MARKER),
               "course_package": str(REPO / "utils" / "checks" / OUTSIDE_MARKER)}
    secret = {"other_student": str(bystander), "hidden_tests": str(REPO / "solutions" / f"{HOSTILE_CHAPTER}.ipynb"),
              "gradebook": str(course.root / "gradebook.db"), "git_history": str(REPO / ".git"),
              "own_autograded_copy": str(course.root / "autograded" / "reads_other_students_and_hidden_tests")}
    cases = corpus(outside, secret)
    for case in cases:
        built = case.build(lay)
        course.submit(case.name, HOSTILE_CHAPTER, built if isinstance(built, bytes) else nbformat.writes(built))
    before = tree_digest(course.root, skip=("autograded", "gradebook.db"))
    run = course.autograde(HOSTILE_CHAPTER)
    return {"course": course, "layout": lay, "cases": cases, "run": run, "before": before, "outside": outside,
            "decoy_before": decoy_before}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    env_before = os.environ.get("TFS_SANDBOX")
    # sandboxed whenever bubblewrap is there (the corpus never runs without it: it tries to do damage);
    # without it, full/zero/partial still run unsandboxed and the corpus is skipped
    os.environ["TFS_SANDBOX"] = "on" if SANDBOXED else "off"
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            chapters_job = pool.submit(grade_chapters, base)
            corpus_job = pool.submit(grade_corpus, base) if SANDBOXED else None
            return {"chapters": chapters_job.result(), "corpus": corpus_job.result() if corpus_job else None}
    finally:
        if env_before is None:
            os.environ.pop("TFS_SANDBOX", None)
        else:
            os.environ["TFS_SANDBOX"] = env_before


# ------------------------------------------------------------------------------------------------ chapters


@pytest.mark.parametrize("chapter", chapters_under_test())
def test_release_equals_chapters(graded, chapter):
    course = graded["chapters"][chapter][0]
    release = course.root / "release" / chapter / f"{chapter}.ipynb"
    assert release_differences(release, REPO / "chapters" / f"{chapter}.ipynb") == []


@pytest.mark.parametrize("chapter", chapters_under_test())
def test_full_zero_partial_marks(graded, chapter):
    course, lay, expected, run = graded["chapters"][chapter]
    assert run.returncode == 0, run.log[-3000:]
    scores = course.scores(chapter)
    for student, passing in expected.items():
        want = {g: (p if g in passing else 0.0) for g, p in lay.points.items()}
        assert scores[student] == want, f"{chapter}/{student}"
    if "solution" in expected:
        assert sum(scores["solution"].values()) == lay.total > 0
        assert sum(scores["untouched"].values()) == 0
    if "partial" in expected:
        assert 0 < sum(scores["partial"].values()) < lay.total


def test_export_and_feedback(graded):
    chapter = HOSTILE_CHAPTER if HOSTILE_CHAPTER in chapters_under_test() else chapters_under_test()[0]
    course, _, expected, _ = graded["chapters"][chapter]
    student = "solution" if "solution" in expected else "partial"
    assert course.feedback(chapter).returncode == 0
    assert (course.root / "feedback" / student / chapter / f"{chapter}.html").exists()
    rows = course.export().read_text().splitlines()
    assert rows[0].startswith("assignment,duedate,timestamp,student_id")
    assert any(f",{student}," in row for row in rows)


# -------------------------------------------------------------------------------------------------- corpus


def corpus_case_names():
    return [case.name for case in corpus({}, {})]


def test_corpus_is_large_enough():
    assert len(corpus_case_names()) >= 15


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
@pytest.mark.parametrize("name", corpus_case_names())
def test_hostile_submission_graded_as_expected(graded, name):
    data = graded["corpus"]
    lay, run = data["layout"], data["run"]
    case = next(c for c in data["cases"] if c.name == name)
    scores = data["course"].scores(HOSTILE_CHAPTER)[name]
    zero = case.zero(lay)
    assert scores == {g: (0.0 if g in zero else p) for g, p in lay.points.items()}
    assert run.per_student[name] < NOTEBOOK_TIMEOUT_S + CELL_TIMEOUT_S, "a submission ran past its time limits"


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_corpus_run_completes_and_bystander_keeps_full_marks(graded):
    data = graded["corpus"]
    assert data["run"].returncode == 0, data["run"].log[-3000:]
    assert sum(data["course"].scores(HOSTILE_CHAPTER)["bystander"].values()) == data["layout"].total


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_nothing_outside_a_submission_changed(graded):
    data = graded["corpus"]
    root = data["course"].root
    after = tree_digest(root, skip=("autograded", "gradebook.db"))
    changed = {k for k in set(after) | set(data["before"]) if after.get(k) != data["before"].get(k)}
    # the only change the grader itself makes in submitted/: the unreadable notebook is kept as .invalid
    assert changed <= {f"submitted/invalid_json/{HOSTILE_CHAPTER}/{HOSTILE_CHAPTER}.ipynb",
                       f"submitted/invalid_json/{HOSTILE_CHAPTER}/{HOSTILE_CHAPTER}.ipynb.invalid"}
    planted = [REPO / "solutions" / OUTSIDE_MARKER, REPO / "utils" / "checks" / OUTSIDE_MARKER]
    leaked = [p for p in planted if p.exists()]
    for p in leaked:
        p.unlink()
    assert not leaked
    assert tree_digest(root.parent / "decoy-solutions") == data["decoy_before"]
    assert not list(Path("/tmp").glob(f"*/{OUTSIDE_MARKER}")) and not (Path("/tmp") / OUTSIDE_MARKER).exists()
    output = autograded_output(root, "damages_files_outside")
    assert "DAMAGED" not in output and output.count("blocked") >= 3 * len(data["outside"])


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_secrets_are_not_readable(graded):
    output = autograded_output(graded["corpus"]["course"].root, "reads_other_students_and_hidden_tests")
    assert "LEAK" not in output and "blocked" in output


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_output_is_capped_and_reasons_are_shown(graded):
    root = graded["corpus"]["course"].root
    loud = root / "autograded" / "ten_megabytes_of_output" / HOSTILE_CHAPTER / f"{HOSTILE_CHAPTER}.ipynb"
    assert loud.stat().st_size < 2_000_000
    assert "GradingIntegrityError" in autograded_output(root, "imports_reference_solution")
    assert "reference solution" in autograded_output(root, "imports_reference_solution")
    assert "KernelDied" in autograded_output(root, "kernel_crash")
    assert (root / "submitted" / "invalid_json" / HOSTILE_CHAPTER / f"{HOSTILE_CHAPTER}.ipynb.invalid").exists()


def autograded_output(root: Path, student: str) -> str:
    path = root / "autograded" / student / HOSTILE_CHAPTER / f"{HOSTILE_CHAPTER}.ipynb"
    return json.dumps([cell.get("outputs", []) for cell in nbformat.read(str(path), as_version=4).cells])


# ---------------------------------------------------------------------------------------- the static scan


def _scan(*sources: str, release_sources: tuple[str, ...] = ()):
    nb, release = nbformat.v4.new_notebook(), nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    release.cells = [nbformat.v4.new_code_cell(s) for s in release_sources]
    test = nbformat.v4.new_code_cell("checks.layer_norm(LayerNorm)")
    test.metadata["nbgrader"] = {"grade": True, "grade_id": "layer_norm", "locked": True, "points": 1,
                                 "solution": False, "schema_version": 3}
    release.cells.append(test)
    return [(f.kind, f.what) for f in scan(nb, release)]


@pytest.mark.parametrize("source, kind", [
    ("from utils.reference.components import LayerNorm", "reference"),
    ("import utils.reference.components as ref", "reference"),
    ("from utils import reference", "reference"),
    ("from transformer_lens.components import LayerNorm", "reference"),
    ("m = __import__('importlib').import_module('utils.reference.components')", "reference"),
    ("checks.layer_norm = lambda *a: None", "tamper"),
    ("checks = None", "tamper"),
    ("import torch\ntorch.allclose = lambda *a, **k: True", "tamper"),
    ("t.isclose = lambda *a, **k: True", "tamper"),
    ("setattr(t, 'isclose', print)", "tamper"),
    ("import sys\nsys.modules['utils.checks'] = None", "tamper"),
    ("exec('x = 1')", "tamper"),
    ("%env A=1", "tamper"),
    ("import inspect", "tamper"),
    ("def f():\n    return sys._getframe().f_back.f_locals", "tamper"),
    ("class T(t.Tensor):\n    @classmethod\n    def __torch_function__(cls, *a, **k):\n        return True", "tamper"),
    ("x = checks.ch02_components.ref", "tamper"),
])
def test_scan_flags(source, kind):
    assert kind in {k for k, _ in _scan(source)}


@pytest.mark.parametrize("source", [
    "class LayerNorm(nn.Module):\n    def forward(self, x):\n        return (x - x.mean(-1, keepdim=True))",
    "checks.layer_norm(LayerNorm)",
    "setattr(self, 'w', nn.Parameter(t.ones(3)))",
    "for module in model.modules():\n    print(module)",
    "x = t.einsum('ij,jk->ik', a, b)",
    "def broken(:",
])
def test_scan_accepts_honest_code(source):
    assert _scan(source) == []


def test_scan_ignores_given_code_from_the_release():
    given = "from utils.reference.components import Attention, LayerNorm"
    assert _scan(given, release_sources=(given,)) == []
    assert _scan(given + "\nclass Mine(LayerNorm):\n    pass", release_sources=(given,)) == []
    assert _scan("from utils.reference.components import MLP", release_sources=(given,)) != []


# ----------------------------------------------------------------------------------- execution limits


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_notebook_time_limit_and_dead_kernel_score_only_later_cells(tmp_path):
    from utils.grading.execute import SafeExecute

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in
                ["x = 1", "import time\ntime.sleep(300)", "print('late')", "import os\nos._exit(3)"]]
    timed, _ = SafeExecute(timeout=300, notebook_timeout=25).preprocess(
        copy.deepcopy(nb), {"metadata": {"path": str(tmp_path)}})
    assert timed.cells[0].outputs == []
    assert [o.get("ename") for o in timed.cells[1].outputs][0] == "KeyboardInterrupt"
    assert [o.get("ename") for o in timed.cells[2].outputs + timed.cells[3].outputs] == ["NotebookTimeout"] * 2
    nb.cells = [nb.cells[0], nb.cells[3], nb.cells[2]]
    died, _ = SafeExecute(timeout=60).preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert [o.get("ename") for c in died.cells[1:] for o in c.outputs] == ["KernelDied", "KernelDied"]
