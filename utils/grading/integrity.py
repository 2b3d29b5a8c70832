"""Grading integrity: the checks nbgrader's cell checksums cannot make.

nbgrader restores every locked cell (the test cells) from the gradebook, so a test cell cannot be edited or
deleted. But the checkers run in the same Python process as the learner's code, and that code can still
replace a checker, patch `torch.isclose`, return a tensor subclass that lies to comparisons, reach into the
checker's frame for the expected output, or import the reference solution. A checker cannot tell any of
these from honest work, so the grader reads the code instead, before it trusts a pass:

- `scan(notebook, release)` parses every code cell that differs from the release (magics included, through
  IPython's own transformer) and reports the constructs below;
- `FlagIntegrity` (an nbgrader preprocessor run after execution) gives 0 to every test cell that comes after
  a flagged cell, with an error output that names the construct, the cell and the line: the feedback shows it.

Flagged constructs
- reference: importing or naming `utils.reference` (the course's generated solution code) or
  `transformer_lens.components` (TransformerLens's implementations of the same classes). Using them in place
  of one's own code passes every checker by construction; the checkers import them only to compute the
  expected values. Decision: this counts as not doing the exercise. Because an imported class can be
  aliased and used in any later cell, every exercise graded after the import scores 0, not only the nearest
  one; the feedback says why, and an instructor can override with a manual grade.
- tamper: rebinding `checks` or using it other than to call a checker of this notebook; assigning or
  deleting attributes of anything imported or of a plain alias of it (`torch.allclose = ...`,
  `T = t; T.isclose = ...`, `Tensor.all = ...`), or any object's `__class__`; `setattr`/`delattr` on anything
  but `self`; the names `exec`, `eval`, `compile`, `__import__`, `globals`, `vars`, `get_ipython` (and so
  every `%magic` and `!command`), `setattr`, `delattr` and `importlib` in any use, called or not (an alias,
  a default argument), unless the notebook binds that name itself; importing `inspect`, `gc`, `ctypes`,
  `importlib`, `builtins`, `IPython`, `ipykernel`, `signal`, `unittest.mock`, `torch.overrides` or
  `utils.checks`; frame and code internals (`f_back`, `f_locals`, `__globals__`, `__code__`,
  `__subclasses__`, `__dict__`, `sys._getframe`, `sys.modules`, ...); defining `__torch_function__` or
  `__torch_dispatch__`, or a subclass of `Tensor`.

Statements that appear verbatim in the release (given code, e.g. chapter 03's import of the reference
components it builds on) are never flagged. A cell that does not parse is not scanned: it cannot run.
This is a tripwire, not a proof: Python is too dynamic for a static scan to be complete (see
docs/instructors.md for what remains).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from nbformat.notebooknode import NotebookNode
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_grade, is_locked

from utils.grading.normalise import release_notebook

INTEGRITY_TAG = "tfs-integrity:"

REFERENCE_MODULES = ("utils.reference", "transformer_lens.components")
TAMPER_MODULES = ("inspect", "gc", "ctypes", "importlib", "builtins", "IPython", "ipykernel", "signal",
                  "unittest.mock", "torch.overrides", "utils.checks", "sys.monitoring")
TAMPER_CALLS = {"exec", "eval", "compile", "__import__", "globals", "vars", "get_ipython", "breakpoint",
                "setattr", "delattr"}
TAMPER_ATTRS = {"f_back", "f_locals", "f_globals", "f_builtins", "f_code", "tb_frame", "gi_frame", "cr_frame",
                "__globals__", "__closure__", "__code__", "__subclasses__", "__builtins__", "__dict__",
                "__setattr__", "__delattr__", "__torch_function__", "__torch_dispatch__", "__import__",
                "__loader__", "__spec__", "_getframe", "settrace", "setprofile", "meta_path", "path_hooks",
                "excepthook", "displayhook"}
SYS_ATTRS = {"modules"}  # flagged on `sys` only (writing sys.stdout etc. is a module-attribute store)
MODULE_ALIASES = {"t", "torch", "np", "numpy", "F", "nn", "einops", "checks", "utils", "sys", "os", "math",
                  "builtins", "jaxtyping", "transformer_lens", "functools", "warnings", "random"}
TAMPER_DEFS = {"__torch_function__", "__torch_dispatch__"}


@dataclass(frozen=True)
class Finding:
    cell: int  # index in the notebook
    line: int  # 1-based, in the cell's source
    kind: str  # "reference" or "tamper"
    what: str  # the offending code, shortened

    def message(self) -> str:
        why = ("uses the course's reference solution in place of your own code"
               if self.kind == "reference" else "changes or inspects the grading machinery")
        return (f"Not graded: code cell {self.cell} line {self.line} ({self.what!r}) {why}, so this exercise and "
                "every one graded after it score 0. Remove that line and resubmit; ask your instructor if "
                "you believe this is a mistake.")


def python_source(cell_source: str) -> str:
    """The Python that IPython would run for this cell: `%magic` and `!cmd` become `get_ipython()` calls."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(cell_source)


def _parse(cell_source: str) -> ast.Module | None:
    try:
        return ast.parse(python_source(cell_source))
    except (SyntaxError, ValueError):
        return None


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


class _Scanner(ast.NodeVisitor):
    def __init__(self, source: str, checkers: set[str], modules: set[str], bound: frozenset[str] = frozenset()):
        self.source, self.checkers, self.modules = source, checkers, modules
        self.bound = bound  # names the notebook assigns itself (a variable called `vars` is not the builtin)
        self.found: list[tuple[ast.AST, str]] = []
        self._called: set[int] = set()  # ids of `checks.x` nodes that are the function of a call
        self._allowed: set[int] = set()  # ids of `setattr` names in `setattr(self, ...)`

    def flag(self, node: ast.AST, kind: str) -> None:
        self.found.append((node, kind))

    def _import(self, node: ast.AST, module: str) -> None:
        if _matches(module, REFERENCE_MODULES):
            self.flag(node, "reference")
        elif _matches(module, TAMPER_MODULES):
            self.flag(node, "tamper")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._import(node, alias.name)
            if (alias.asname or alias.name.split(".")[0]) == "checks":
                self.flag(node, "tamper")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self._import(node, module)
        for alias in node.names:
            self._import(node, f"{module}.{alias.name}")
            if (alias.asname or alias.name) == "checks" and module != "utils":
                self.flag(node, "tamper")
            if (alias.asname or alias.name) == "checks" and module == "utils" and alias.asname:
                self.flag(node, "tamper")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and any(m in node.value for m in REFERENCE_MODULES):
            self.flag(node, "reference")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in TAMPER_CALLS:
            first = node.args[0] if node.args else None
            if not (func.id in ("setattr", "delattr") and isinstance(first, ast.Name) and first.id == "self"):
                self.flag(node, "tamper")
            self._allowed.add(id(func))  # flagged here, or allowed: not again as a bare name
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "checks":
            self._called.add(id(func))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = node.value
        if node.attr in TAMPER_ATTRS:
            self.flag(node, "tamper")
        elif isinstance(base, ast.Name) and base.id == "sys" and node.attr in SYS_ATTRS:
            self.flag(node, "tamper")
        elif node.attr == "reference" and _root_name(node) in ("utils", "checks"):
            self.flag(node, "reference")
        if isinstance(base, ast.Name) and base.id == "checks":
            if id(node) not in self._called or node.attr not in self.checkers or not isinstance(node.ctx, ast.Load):
                self.flag(node, "tamper")
        if not isinstance(node.ctx, ast.Load) and (_root_name(node) in self.modules or node.attr == "__class__"):
            self.flag(node, "tamper")  # torch.allclose = ..., del t.isclose, F.gelu += ..., m.__class__ = ...
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if not isinstance(node.ctx, ast.Load) and _root_name(node) in self.modules:
            self.flag(node, "tamper")  # sys.modules[...] = ..., torch.__dict__[...] = ...
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "checks" and not isinstance(node.ctx, ast.Load):
            self.flag(node, "tamper")
        if node.id in ("__builtins__", "__import__", "importlib"):
            self.flag(node, "tamper")  # importlib: the setup cell imports it; any use of it in a learner's cell
        elif (node.id in TAMPER_CALLS and isinstance(node.ctx, ast.Load) and id(node) not in self._allowed
              and node.id not in self.bound):
            self.flag(node, "tamper")  # `s = setattr`, `g = get_ipython`, a default argument `f=exec`
        self.generic_visit(node)

    def _binds_checks(self, node: ast.AST, name: str) -> None:
        if name in ("checks",) or name in TAMPER_DEFS:
            self.flag(node, "tamper")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._binds_checks(node, node.name)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._binds_checks(node, node.name)
        for base in node.bases:
            if (base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")) == "Tensor":
                self.flag(node, "tamper")  # its any()/all()/comparisons can lie to a checker
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        if "checks" in node.names:
            self.flag(node, "tamper")


def _statements(tree: ast.Module) -> list[ast.stmt]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.stmt)]


def _enclosing_statement(tree: ast.Module, target: ast.AST) -> ast.stmt | None:
    best = None
    for stmt in _statements(tree):
        if any(node is target for node in ast.walk(stmt)):
            if best is None or (stmt.lineno, -getattr(stmt, "end_lineno", 0)) >= (best.lineno, -best.end_lineno):
                best = stmt
    return best


def _release_index(release) -> tuple[set[str], set[str]]:
    """Normalised sources of the release's code cells, and dumps of every statement in them."""
    sources, statements = set(), set()
    for cell in release.cells:
        if cell.cell_type != "code":
            continue
        sources.add(cell.source.strip())
        tree = _parse(cell.source)
        if tree is not None:
            statements.update(ast.dump(stmt) for stmt in _statements(tree))
    return sources, statements


def _imported_modules(nb) -> set[str]:
    """Names bound to imported things anywhere in the notebook (`import torch as t` -> t, `from torch import
    Tensor` -> Tensor), their plain aliases (`T = t`, `Tensor = t.Tensor`), plus the usual names."""
    names = set(MODULE_ALIASES)
    trees = [_parse(cell.source) for cell in nb.cells if cell.cell_type == "code"]
    nodes = [node for tree in trees if tree is not None for node in ast.walk(tree)]
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update((a.asname or a.name) for a in node.names if a.name != "*")
    for _ in range(3):  # aliases of aliases
        for node in nodes:
            if (isinstance(node, ast.Assign) and isinstance(node.value, (ast.Name, ast.Attribute))
                    and _root_name(node.value) in names):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _bound_names(nb) -> set[str]:
    names = set()
    for cell in nb.cells:
        tree = _parse(cell.source) if cell.cell_type == "code" else None
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
    return names


def scan(nb, release) -> list[Finding]:
    """Every flagged construct in the code cells of `nb` that the learner could have written."""
    sources, authored = _release_index(release)
    checkers = {cell.metadata.nbgrader["grade_id"] for cell in release.cells
                if cell.cell_type == "code" and is_grade(cell)}
    modules = _imported_modules(nb)
    bound = frozenset(_bound_names(nb))
    findings: list[Finding] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or cell.source.strip() in sources or is_locked(cell):
            continue  # unchanged given code, or a locked cell that nbgrader restored from the gradebook
        tree = _parse(cell.source)
        if tree is None:
            continue
        scanner = _Scanner(cell.source, checkers, modules, bound)
        scanner.visit(tree)
        for node, kind in scanner.found:
            stmt = _enclosing_statement(tree, node)
            if stmt is not None and ast.dump(stmt) in authored:
                continue
            text = ast.unparse(stmt if stmt is not None else node).splitlines()[0][:80]
            findings.append(Finding(index, getattr(node, "lineno", 1), kind, text))
    unique = {(f.cell, f.line, f.kind): f for f in findings}
    return sorted(unique.values(), key=lambda f: (f.cell, f.line))


class FlagIntegrity(NbGraderPreprocessor):
    """After execution: a test cell below a flagged cell gets an error output (so nbgrader scores it 0)."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        release = release_notebook(CourseDirectory(config=self.config), info["assignment"], info["notebook"])
        findings = scan(nb, release)
        if not findings:
            return nb, resources
        first = findings[0]
        for index, cell in enumerate(nb.cells):
            if index > first.cell and cell.cell_type == "code" and is_grade(cell):
                cell.outputs.append(NotebookNode(output_type="error", ename="GradingIntegrityError",
                                                 evalue=first.message(),
                                                 traceback=[f"GradingIntegrityError: {first.message()}"]))
        resources.setdefault("tfs_integrity", [f.message() for f in findings])
        self.log.warning("%s %s/%s: %s", INTEGRITY_TAG, info["student"], info["notebook"], first.message())
        return nb, resources


class QuietGradeCells(NbGraderPreprocessor):
    """nbgrader scores a test cell with any stderr output as failed. Warnings printed by libraries or by the
    learner's code are not failures: in a test cell that raised no error, stderr streams are dropped (one
    stdout line says so). A cell with an error output still scores 0."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not is_grade(cell):
            return cell, resources
        if any(out.output_type == "error" for out in cell.outputs):
            return cell, resources
        kept = [out for out in cell.outputs if not (out.output_type == "stream" and out.name == "stderr")]
        if len(kept) != len(cell.outputs):
            kept.append(NotebookNode(output_type="stream", name="stdout",
                                     text="[the grader hid warnings this cell printed to stderr]\n"))
            cell.outputs = kept
        return cell, resources
