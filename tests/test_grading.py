"""nbgrader end to end: release equals chapters/, full / zero / partial marks for every chapter, and a corpus of
broken and hostile submissions graded in the sandbox with the expected points.

Every grading run happens once per module, in temporary course directories, three nbgrader runs at a time;
the tests then read the gradebook and the autograded notebooks. The hostile corpus needs bubblewrap
(`apt-get install -y bubblewrap`; .ci/run installs it) and is skipped, saying so, without it.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.grading_corpus import OUTSIDE_MARKER, Layout, clean, corpus, partial
from tests.grading_corpus.metadata import NOT_GRADED, after_markdown, graded_metadata_cases, not_graded_cases
from utils.grading.autograde import STATUS_DIR, autograde, grade_one
from utils.grading.config import REPO, chapters
from utils.grading.course import Course, release_differences
from utils.grading.integrity import scan
from utils.grading.sandbox import missing_tools

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_grading")]
HOSTILE_CHAPTER = "02_components"
CELL_TIMEOUT_S = 120  # the course's own limit: chapter 05's training cell needs it on a loaded machine
NOTEBOOK_TIMEOUT_S = 400
SETTINGS = f"c.Execute.timeout = {CELL_TIMEOUT_S}\nc.SafeExecute.notebook_timeout = {NOTEBOOK_TIMEOUT_S}\n"
CORPUS_CELL_TIMEOUT_S = 60  # chapter 02's cells take a few seconds; the infinite loop costs this much
CORPUS_SETTINGS = f"c.Execute.timeout = {CORPUS_CELL_TIMEOUT_S}\nc.SafeExecute.notebook_timeout = {NOTEBOOK_TIMEOUT_S}\n"
# three nbgrader runs at a time on two cores: a run spends a third of its time waiting (kernel start, ZMQ round
# trips), which a third run fills; the sample below is graded again sequentially
WORKERS = 3
# one partly correct notebook, one repaired before grading, one that cannot be graded: the parallel run's outcomes
# and scores of each kind must come out the same one at a time
SEQUENTIAL_SAMPLE = ("partial", "edited_metadata", "invalid_json")
GRADER_OUTPUTS = ("autograded", "gradebook.db", STATUS_DIR)
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


def submit_chapters(base: Path) -> tuple[Course, dict]:
    """Full, zero and partial submissions for every chapter, in one course directory."""
    course = Course.temporary(base / "chapters", settings=SETTINGS)
    submitted = {}
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
        submitted[chapter] = (course, lay, expected)
    return course, submitted


def place(course: Course, student: str, built) -> None:
    """A built case: a notebook, raw bytes, or {file name (None: the notebook): bytes or ("symlink", target)}."""
    if isinstance(built, nbformat.NotebookNode) or not isinstance(built, dict):
        course.submit(student, HOSTILE_CHAPTER, built if isinstance(built, bytes) else nbformat.writes(built))
        return
    folder = course.root / "submitted" / student / HOSTILE_CHAPTER
    folder.mkdir(parents=True)
    (folder / "timestamp.txt").write_text("2026-01-01 00:00:00 UTC")
    for name, content in built.items():
        path = folder / (name or f"{HOSTILE_CHAPTER}.ipynb")
        if isinstance(content, tuple):
            path.symlink_to(content[1])
        else:
            path.write_bytes(content)


def submit_corpus(base: Path) -> dict:
    course = Course.temporary(base / "corpus", settings=CORPUS_SETTINGS)
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
    cases = all_cases(outside, secret)
    for case in cases:
        place(course, case.name, case.build(lay))
    before = tree_digest(course.root, skip=GRADER_OUTPUTS)
    return {"course": course, "layout": lay, "cases": cases, "before": before, "outside": outside,
            "decoy_before": decoy_before}


def all_cases(outside: dict, secret: dict) -> list:
    return corpus(outside, secret) + graded_metadata_cases() + not_graded_cases()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every chapter's and the corpus's submissions graded in one run, three at a time; then a sample graded
    again one at a time (the sequential run), whose scores must be the same."""
    base = tmp_path_factory.mktemp("grading")
    env_before = os.environ.get("TFS_SANDBOX")
    # sandboxed whenever bubblewrap is there (the corpus never runs without it: it tries to do damage);
    # without it, full/zero/partial still run unsandboxed and the corpus is skipped
    os.environ["TFS_SANDBOX"] = "on" if SANDBOXED else "off"
    try:
        course, chapters_submitted = submit_chapters(base)
        corpus_data = submit_corpus(base) if SANDBOXED else None
        jobs = [job for chapter in chapters_submitted for job in course.jobs(chapter)]
        if corpus_data:
            jobs = corpus_data["course"].jobs(HOSTILE_CHAPTER) + jobs  # the slow ones (time limits) first
        run = autograde(jobs, workers=WORKERS)
        parallel = {(job[0], job[1]): Course(job[0]).scores(job[1]) for job in jobs}
        sample = [j for j in jobs if j[1] == HOSTILE_CHAPTER and j[2] in SEQUENTIAL_SAMPLE]
        sequential = autograde(sample, workers=1)
        return {"chapters": chapters_submitted, "corpus": corpus_data, "run": run, "parallel": parallel,
                "sample": sample, "sequential": sequential}
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
    course, lay, expected = graded["chapters"][chapter]
    for student in expected:
        outcome = graded["run"].outcome(student, chapter)
        assert outcome.graded and not outcome.repairs, outcome
    scores = course.scores(chapter)
    for student, passing in expected.items():
        want = {g: (p if g in passing else 0.0) for g, p in lay.points.items()}
        assert scores[student] == want, f"{chapter}/{student}"
    if "solution" in expected:
        assert sum(scores["solution"].values()) == lay.total > 0
        assert sum(scores["untouched"].values()) == 0
    if "partial" in expected:
        assert 0 < sum(scores["partial"].values()) < lay.total


def test_parallel_scores_equal_sequential(graded):
    assert graded["run"].workers == WORKERS and graded["sequential"].workers == 1
    # "partial" is a chapter 02 submission: a local run of other chapters (TFS_GRADING_CHAPTERS) has only the corpus's
    wanted = set(SEQUENTIAL_SAMPLE) - (set() if HOSTILE_CHAPTER in chapters_under_test() else {"partial"})
    assert sorted(student for _, _, student in graded["sample"]) == sorted(wanted)
    for root, chapter, student in graded["sample"]:
        parallel = graded["parallel"][(root, chapter)].get(student)
        assert Course(root).scores(chapter).get(student) == parallel, student
        assert graded["sequential"].outcome(student).graded == graded["run"].outcome(student, chapter).graded


def test_export_and_feedback(graded):
    chapter = HOSTILE_CHAPTER if HOSTILE_CHAPTER in chapters_under_test() else chapters_under_test()[0]
    course, _, expected = graded["chapters"][chapter]
    student = "solution" if "solution" in expected else "partial"
    assert course.feedback(chapter).returncode == 0
    assert (course.root / "feedback" / student / chapter / f"{chapter}.html").exists()
    rows = course.export().read_text().splitlines()
    assert rows[0].startswith("assignment,duedate,timestamp,student_id") and rows[0].endswith(",grading")
    assert any(f",{student}," in row and row.endswith(",graded") for row in rows)


# -------------------------------------------------------------------------------------------------- corpus


def corpus_case_names():
    return [case.name for case in all_cases({}, {})]


def test_corpus_is_large_enough():
    assert len(corpus_case_names()) >= 25 and set(NOT_GRADED) <= set(corpus_case_names())


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
@pytest.mark.parametrize("name", corpus_case_names())
def test_hostile_submission_graded_as_expected(graded, name):
    data = graded["corpus"]
    lay, outcome = data["layout"], graded["run"].outcome(name, HOSTILE_CHAPTER)
    if name in NOT_GRADED:
        assert not outcome.graded and NOT_GRADED[name] in outcome.cause, outcome
        return
    assert outcome.graded, outcome
    case = next(c for c in data["cases"] if c.name == name)
    scores = data["course"].scores(HOSTILE_CHAPTER)[name]
    zero = case.zero(lay)
    assert scores == {g: (0.0 if g in zero else p) for g, p in lay.points.items()}
    assert outcome.seconds < NOTEBOOK_TIMEOUT_S + CELL_TIMEOUT_S, "a submission ran past its time limits"


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
@pytest.mark.parametrize("name", [c.name for c in graded_metadata_cases()] + ["deleted_test_cells"])
def test_repaired_notebook_has_the_release_structure(graded, name):
    """Every graded cell of the release is there once, in the release's order, with its metadata; what was
    repaired is reported."""
    root, release = graded["corpus"]["course"].root, graded["corpus"]["layout"].release
    path = root / "autograded" / name / HOSTILE_CHAPTER / f"{HOSTILE_CHAPTER}.ipynb"
    nb = nbformat.read(str(path), as_version=4)

    def graded_cells(notebook):
        return [(c.metadata.nbgrader["grade_id"], c.cell_type, c.metadata.nbgrader.get("points"))
                for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id")]

    assert graded_cells(nb) == graded_cells(release)
    assert graded["run"].outcome(name, HOSTILE_CHAPTER).repairs
    if name == "deleted_test_cell_after_markdown":  # back below the hint it follows, not at the top
        grade_id = after_markdown(graded["corpus"]["layout"])
        at = [i for i, c in enumerate(release.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id][0]
        mine = [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id][0]
        assert nb.cells[mine - 1].source == release.cells[at - 1].source and mine > 1


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_rest_of_the_class_is_graded_and_causes_are_exported(graded):
    data = graded["corpus"]
    outcomes = [o for o in graded["run"].outcomes if o.chapter == HOSTILE_CHAPTER and o.student in
                {c.name for c in data["cases"]} | {"bystander"}]
    assert {o.student for o in outcomes if not o.graded} == set(NOT_GRADED)
    assert len(outcomes) == len(data["cases"]) + 1
    assert sum(data["course"].scores(HOSTILE_CHAPTER)["bystander"].values()) == data["layout"].total
    rows = {r["student_id"]: r for r in csv.DictReader(data["course"].export().open())}
    for name, cause in NOT_GRADED.items():
        assert rows[name]["grading"].startswith("NOT GRADED") and cause in rows[name]["grading"]
        assert rows[name]["score"] == ""  # never a silent 0
    assert rows["bystander"]["grading"] == "graded" and float(rows["bystander"]["score"]) == data["layout"].total
    assert rows["edited_metadata"]["grading"].startswith("graded after 7 repair(s): ")
    assert "restored deleted cell" in rows["edited_metadata"]["grading"]  # the renamed test cell


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_a_real_nbgrader_failure_reports_its_cause(graded, tmp_path):
    """nbgrader's own error, not the tail of its log: an unreleased chapter, one run of nbgrader."""
    root = graded["corpus"]["course"].root
    (root / "submitted" / "bystander" / "03_assembly").mkdir()
    shutil.copyfile(REPO / "chapters" / "03_assembly.ipynb", root / "submitted" / "bystander" / "03_assembly" / "03_assembly.ipynb")
    try:
        outcome = grade_one(root, "03_assembly", "bystander")
    finally:
        shutil.rmtree(root / "submitted" / "bystander" / "03_assembly")
    assert not outcome.graded and "No assignment with ID '03_assembly' exists in the database" in outcome.cause
    assert len(outcome.cause) < 600 and "Traceback" not in outcome.cause


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_nothing_outside_a_submission_changed(graded):
    data = graded["corpus"]
    root = data["course"].root
    after = tree_digest(root, skip=GRADER_OUTPUTS)
    changed = {k for k in set(after) | set(data["before"]) if after.get(k) != data["before"].get(k)}
    assert changed <= {"grades.csv"}  # submitted files are never written, not even the unreadable ones
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
    assert graded["run"].outcome("imports_reference_solution", HOSTILE_CHAPTER).integrity
    assert "KernelDied" in autograded_output(root, "kernel_crash")


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
    ("T = t\nT.allclose = lambda *a, **k: True", "tamper"),
    ("g = get_ipython\ng().input_transformers_cleanup.append(lambda lines: [])", "tamper"),
    ("class M(type):\n    def __new__(mcs, n, b, d, s=setattr):\n        return super().__new__(mcs, n, b, d)", "tamper"),
    ("m = importlib.import_module('utils.' + 'refer' + 'ence.components')", "tamper"),
    ("class Liar(t.Tensor):\n    def all(self, *args):\n        return True", "tamper"),
    ("from torch import Tensor\nTensor.all = lambda self, *args: True", "tamper"),
    ("mod = F\nmod.__class__ = object", "tamper"),
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
    "vars = [1, 2]\nprint(vars)",
    "compile = True\nif compile:\n    layer = nn.Linear(3, 3)\n    layer.bias.data = t.zeros(3)",
])
def test_scan_accepts_honest_code(source):
    assert _scan(source) == []


# Cheats the scan does NOT catch; docs/instructors.md lists them. If one starts being caught, move it to
# test_scan_flags and update the docs: they must not promise more, or less, than the scan does. They matter
# only in the chapters judged in the learner's process (03 to 07): in chapters 01 and 02 the verdict is the
# grader's own (utils/grading/trusted.py), and the corpus's `lying_tensor_subclass` and
# `patched_tensor_all_unscanned` prove that two of them score 0 there (test_cheats_the_scan_misses_...).
KNOWN_GAPS = [
    "class LayerNorm(nn.Module):\n    def __init__(self, cfg):\n        super().__init__()\n"
    "        self.inner = gpt2.ln_final\n    def forward(self, x):\n        return self.inner(x)",
    "LN = type(reference_gpt2().ln_final)",
    "from utils import notebook\nm = notebook.importlib",
    "op = getattr(t, 'Tensor')\nop.all = lambda self, *args: True",
    "_Base = getattr(t, 'Tensor')\nclass Liar(_Base):\n    def all(self, *args):\n        return True",
    "import pickle\nf = pickle.loads(b'...')",
]


@pytest.mark.parametrize("source", KNOWN_GAPS)
def test_scan_known_gaps_are_the_documented_ones(source):
    assert _scan(source) == []


def test_cheats_the_scan_misses_are_in_the_corpus_for_a_chapter_judged_outside():
    from tests.grading_corpus import LYING_TENSOR, PATCHED_TENSOR_ALL
    from utils.grading.boundary import covered

    assert covered(HOSTILE_CHAPTER)
    for cheat in (LYING_TENSOR, PATCHED_TENSOR_ALL):
        assert _scan(cheat) == []  # the scan misses it; the corpus expects 0 for the exercise it cheats on
    names = set(corpus_case_names())
    assert {"lying_tensor_subclass", "patched_tensor_all_unscanned", "swapped_checks_registry"} <= names


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


# ------------------------------------------------------------------------------- where the course lives

KERNEL_REPORT = """
import json, tempfile, nbformat
from utils.grading.execute import SafeExecute
nb = nbformat.v4.new_notebook()
nb.cells = [nbformat.v4.new_code_cell("import sys, utils\\nprint(utils.__file__)\\nprint(sys.prefix)")]
out, _ = SafeExecute(timeout=120).preprocess(nb, {"metadata": {"path": tempfile.mkdtemp()}})
print(json.dumps(out.cells[0].outputs))
"""


@pytest.mark.skipif(not SANDBOXED, reason=NO_SANDBOX)
def test_kernel_starts_from_a_symlinked_venv_outside_the_repo_and_another_checkout(tmp_path):
    """The grader runs from a symlinked .venv that lives outside this checkout, and from a second checkout
    whose `utils` is not the one the venv's editable install points at: the kernel starts, and imports
    the grader's own `utils`."""
    venv = tmp_path / "elsewhere" / ".venv"
    venv.parent.mkdir()
    venv.symlink_to(Path(sys.prefix).resolve(), target_is_directory=True)
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "utils", checkout / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "TFS_SANDBOX": "on"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", KERNEL_REPORT], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = json.loads(proc.stdout.splitlines()[-1])
    assert [o["output_type"] for o in outputs] == ["stream"], outputs
    imported, prefix = outputs[0]["text"].split()
    assert imported == str((checkout / "utils" / "__init__.py").resolve())
    assert Path(prefix) == Path(sys.prefix).resolve()
