"""Broken and hostile submissions for the grading tests, generated from a chapter's solution and release.

Each `Case` builds one submitted notebook (or raw bytes) and says which exercises it must score 0 on; every
other exercise must get its full points. Cases are written against the notebook's structure (its first and
last solution cells, the test cells after them), not against one chapter's exercise names.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Callable

import nbformat
from nbgrader.utils import is_grade, is_solution

OUTSIDE_MARKER = "tfs-hostile-was-here"


@dataclass
class Layout:
    """Where a chapter's exercises sit: solution cells in order, and the test cells each one is checked by."""

    solution: object  # the solution notebook
    release: object  # the learner's notebook (stubs)
    points: dict[str, float]  # test cell grade_id -> points
    groups: list[tuple[int, list[str]]]  # (index of a solution cell, grade_ids of the test cells after it)

    @classmethod
    def of(cls, solution, release) -> "Layout":
        points, groups = {}, []
        for i, cell in enumerate(release.cells):
            if cell.cell_type != "code":
                continue
            if is_solution(cell):
                groups.append((i, []))
            elif is_grade(cell):
                points[cell.metadata.nbgrader["grade_id"]] = float(cell.metadata.nbgrader["points"])
                if groups:
                    groups[-1][1].append(cell.metadata.nbgrader["grade_id"])
        return cls(solution, release, points, [g for g in groups if g[1]])

    @property
    def total(self) -> float:
        return sum(self.points.values())

    def first(self) -> tuple[int, list[str]]:
        return self.groups[0]

    def last(self) -> tuple[int, list[str]]:
        return self.groups[-1]


def clean(nb):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.pop("id", None)
    nb.nbformat_minor = 4
    return nb


def class_name(source: str) -> str:
    names = re.findall(r"^class (\w+)", source, flags=re.M)
    return names[-1]


def code(source: str):
    cell = nbformat.v4.new_code_cell(source)
    cell.pop("id", None)
    return cell


def edit_solution(nb, index: int, fn: Callable[[str], str]):
    nb = clean(nb)
    nb.cells[index].source = fn(nb.cells[index].source)
    return nb


def insert(nb, index: int, source: str):
    nb = clean(nb)
    nb.cells.insert(index, code(source))
    return nb


def wrap_forward(cls: str, body: str) -> str:
    """Code that replaces `cls.forward` by a wrapper running `body` (which may call `_original`)."""
    return (f"\n\n_original = {cls}.forward\n\n\ndef _wrapped(self, *args, **kwargs):\n"
            + "".join(f"    {line}\n" for line in body.splitlines()) + f"\n\n{cls}.forward = _wrapped\n")


@dataclass
class Case:
    name: str
    build: Callable[[Layout], object]  # a notebook, or bytes written as they are
    zero: Callable[[Layout], set[str]] = lambda layout: set()  # exercises that must score 0
    notes: dict = field(default_factory=dict)


def _all(layout: Layout) -> set[str]:
    return set(layout.points)


def _last(layout: Layout) -> set[str]:
    return set(layout.last()[1])


def _first_and_after(layout: Layout) -> set[str]:
    return set(layout.points)


def _first(layout: Layout) -> set[str]:
    return set(layout.first()[1])


# Chapter 02's checks of a part's users run the part's own check first (utils/checks/ch02_components.py,
# `_SUB_CHECKS` and `_uses_passing`): a broken LayerNorm also zeroes TransformerBlock, as it should.
USERS = {"layer_norm": {"transformer_block"}, "attention": {"transformer_block"}, "mlp": {"transformer_block"},
         "causal_mask": {"attention", "transformer_block"}}


def _first_and_its_users(layout: Layout) -> set[str]:
    first = set(layout.first()[1])
    users = set().union(*(USERS.get(grade_id, set()) for grade_id in first))
    return first | (users & set(layout.points))


# Cheats the static scan does not catch (an alias taken through a call): judged in the learner's process they
# passed; judged outside (chapters 01 and 02, utils/grading/trusted.py), the wrong numbers score 0.
LYING_TENSOR = """

_Base = getattr(t, "Tensor")


class _Liar(_Base):
    def all(self, *args, **kwargs):
        return True

    def __eq__(self, other):
        return True

    def __bool__(self):
        return True
"""
PATCHED_TENSOR_ALL = """
_op = getattr(t, "Tensor")
_op.all = lambda self, *args, **kwargs: True
"""
SWAPPED_CHECKS = """
import sys, types
_fake = types.ModuleType("utils.checks")
_fake.__getattr__ = lambda name: (lambda *args, **kwargs: print("✓ passed"))
sys.modules["utils.checks"] = _fake
checks = _fake
"""


def hostile_to_checkers() -> list[Case]:
    """The cheats that faked a pass inside the learner's process; scored 0 wherever they change a result."""

    def first_cls(layout):
        return class_name(layout.solution.cells[layout.first()[0]].source)

    return [
        Case("lying_tensor_subclass",  # a Tensor subclass whose all(), == and bool() say yes to everything
             lambda L: edit_solution(L.solution, L.first()[0], lambda s: s + LYING_TENSOR + wrap_forward(
                 first_cls(L), "return (0 * _original(self, *args, **kwargs)).as_subclass(_Liar)")), _first_and_its_users),
        Case("patched_tensor_all_unscanned",  # Tensor.all patched through an alias the scan cannot follow
             lambda L: edit_solution(L.solution, L.first()[0], lambda s: s + PATCHED_TENSOR_ALL + wrap_forward(
                 first_cls(L), "return 0 * _original(self, *args, **kwargs)")), _first_and_its_users),
        Case("swapped_checks_registry",  # sys.modules['utils.checks'] replaced by a module that prints ✓
             lambda L: edit_solution(L.release, L.first()[0], lambda s: s + SWAPPED_CHECKS), _all),
    ]


def damage_outside(paths: dict[str, str]) -> str:
    """A cell that tries to delete and overwrite everything it should not reach; it reports, never raises."""
    return f'''import os, shutil, glob
targets = {paths!r}
for what, path in targets.items():
    for action in ("rmtree", "remove", "write"):
        try:
            if action == "rmtree":
                shutil.rmtree(path)
            elif action == "remove":
                os.remove(path)
            else:
                with open(path, "w") as f:
                    f.write("{OUTSIDE_MARKER}")
            print("DAMAGED", what, action)
        except Exception as exc:
            print("blocked", what, action, type(exc).__name__)
for path in glob.glob("/tmp/*") + glob.glob("/home/*"):
    try:
        with open(os.path.join(path, "{OUTSIDE_MARKER}"), "w") as f:
            f.write("x")
    except Exception:
        pass
'''


def read_others(paths: dict[str, str]) -> str:
    return f'''import os
for what, path in {paths!r}.items():
    try:
        if os.path.isdir(path):
            print("LEAK", what, os.listdir(path)[:3])
        else:
            with open(path, "rb") as f:
                print("LEAK", what, len(f.read()))
    except Exception as exc:
        print("blocked", what, type(exc).__name__)
'''


def corpus(paths_outside: dict[str, str], paths_secret: dict[str, str]) -> list[Case]:
    """At least 15 broken or hostile submissions. `paths_outside`: files and folders a submission must not
    change; `paths_secret`: files it must not read (another student's notebook, solutions/, the gradebook)."""

    def last_cls(layout):
        return class_name(layout.solution.cells[layout.last()[0]].source)

    def first_cls(layout):
        return class_name(layout.solution.cells[layout.first()[0]].source)

    return [
        Case("syntax_error",
             lambda L: edit_solution(L.solution, L.last()[0], lambda s: "def broken(:\n    pass\n\n" + s), _last),
        Case("exception_in_one_exercise",
             lambda L: edit_solution(L.solution, L.last()[0], lambda s: 'raise ValueError("my bug")\n' + s), _last),
        Case("infinite_loop",
             lambda L: edit_solution(L.solution, L.last()[0],
                                     lambda s: s + wrap_forward(last_cls(L), "while True:\n    pass")), _last),
        Case("nan_outputs",
             lambda L: edit_solution(L.solution, L.last()[0], lambda s: s + wrap_forward(
                 last_cls(L), 'return _original(self, *args, **kwargs) * float("nan")')), _last),
        Case("ten_megabytes_of_output",
             lambda L: insert(edit_solution(L.solution, L.last()[0], lambda s: s + wrap_forward(
                 last_cls(L), 'print("y" * 10_000_000)\nreturn _original(self, *args, **kwargs)')),
                 L.first()[0], 'print("x" * 10_000_000)')),
        Case("deleted_test_cells",
             lambda L: _without(L.solution, set(L.first()[1]) | set(L.last()[1]))),
        Case("edited_test_cells",
             lambda L: _edited_tests(L.release, 'print("all good")'), _all),
        Case("monkeypatched_checker",
             lambda L: edit_solution(L.release, L.first()[0], lambda s: s + "".join(
                 f"\nchecks.{g} = lambda *args, **kwargs: None" for g in L.points)), _all),
        Case("monkeypatched_allclose",
             lambda L: edit_solution(L.solution, L.first()[0], lambda s: s + wrap_forward(
                 first_cls(L), "return args[0]") + "\nimport torch\ntorch.allclose = lambda *a, **k: True\n"
                 "torch.isclose = lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)\n"), _first_and_after),
        Case("imports_reference_solution",
             lambda L: edit_solution(L.solution, L.last()[0], lambda s: _reference_import(L)), _last),
        Case("damages_files_outside", lambda L: insert(L.solution, L.first()[0], damage_outside(paths_outside))),
        Case("reads_other_students_and_hidden_tests",
             lambda L: insert(L.solution, L.first()[0], read_others(paths_secret))),
        Case("allocates_beyond_memory_limit",
             lambda L: insert(insert(L.solution, L.first()[0], "import torch\nhuge = torch.empty(int(1e11))"),
                              L.first()[0] + 1, "hog = bytearray(64 * 2**30)")),
        Case("invalid_json", lambda L: b'{"cells": [{"cell_type": "code", "source": "print(1)"', _all),
        Case("stderr_warnings",
             lambda L: edit_solution(L.solution, L.last()[0], lambda s: s + wrap_forward(
                 last_cls(L), 'import os, sys, warnings\nos.write(2, b"UserWarning: low-level noise\\n")\n'
                 'print("DeprecationWarning: printed", file=sys.stderr)\nwarnings.warn("a warning")\n'
                 "return _original(self, *args, **kwargs)"))),
        Case("kernel_crash",
             lambda L: edit_solution(L.solution, L.last()[0], lambda s: "import os\nos._exit(1)\n" + s), _last),
        Case("frame_inspection",
             lambda L: edit_solution(L.solution, L.last()[0], lambda s: "import inspect\n" + s), _last),
        *hostile_to_checkers(),
    ]


def _without(nb, grade_ids: set[str]):
    nb = clean(nb)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in grade_ids]
    return nb


def _edited_tests(nb, source: str):
    nb = clean(nb)
    for cell in nb.cells:
        if is_grade(cell):
            cell.source = source
    return nb


def _reference_import(layout: Layout) -> str:
    cell = layout.solution.cells[layout.last()[0]]
    module = cell.metadata.get("tfs", {}).get("export", "components")
    return f"from utils.reference.{module} import {class_name(cell.source)}\n"


def partial(layout: Layout, filled: int):
    """The release with the first `filled` solution cells answered; returns (notebook, exercises that pass)."""
    nb = clean(layout.release)
    solution_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and is_solution(c)]
    for i in solution_cells[:filled]:
        nb.cells[i].source = layout.solution.cells[i].source
    cutoff = solution_cells[filled] if filled < len(solution_cells) else len(nb.cells)
    passing = {c.metadata.nbgrader["grade_id"] for c in nb.cells[:cutoff] if is_grade(c)}
    return nb, passing
