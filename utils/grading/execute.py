"""nbgrader's Execute step, hardened: a sandboxed kernel, a time limit for the whole notebook, a cap on output,
and a kernel that dies (crash, memory or CPU limit, `os._exit`) costing only the cells it did not run.

Stock nbgrader aborts the whole submission when the kernel dies and records no grade at all; here every cell
from the one that killed the kernel onwards gets an error output, so it scores 0 and the rest is graded.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from nbgrader.utils import is_grade
from traitlets import Integer

from utils.grading import boundary
from utils.grading.sandbox import SandboxedKernelManager, require_sandbox, sandbox_enabled


def error_output(ename: str, message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"])


class LocalKernelManager(AsyncKernelManager):
    """The unsandboxed kernel (TFS_SANDBOX=off), given the probe package and its folders when the chapter is
    judged outside (boundary.py); not protected, like everything unsandboxed."""

    async def _async_pre_start_kernel(self, **kw):
        cmd, kw = await super()._async_pre_start_kernel(**kw)
        probe = boundary.current()
        if probe is not None:
            kw["env"] = {**kw.get("env", os.environ), **probe.kernel_env(str(probe.plans), str(probe.out), str(probe.package))}
        return cmd, kw


class SafeExecute(Execute):
    """Execute each notebook in its own sandboxed kernel with per-cell and per-notebook time limits."""

    notebook_timeout = Integer(
        1200, help="Seconds for the whole notebook; cells that would start later are not run (score 0)."
    ).tag(config=True)
    max_output_bytes = Integer(
        200_000, help="Output kept per cell; the rest is dropped, with one line saying so."
    ).tag(config=True)

    def __init__(self, *args, **kwargs):
        if sandbox_enabled():
            require_sandbox()
            kwargs["kernel_manager_class"] = SandboxedKernelManager
        else:
            kwargs["kernel_manager_class"] = LocalKernelManager
        # Every cell's outputs and probe results are collected as it finishes, so nothing is lost by killing the
        # kernel at the end instead of waiting ~2.5 s for it to shut down (torch's and ipykernel's exit handlers).
        kwargs.setdefault("shutdown_kernel", "immediate")
        super().__init__(*args, **kwargs)
        self._reset()

    def _reset(self) -> None:
        self._deadline = time.monotonic() + self.notebook_timeout
        self._died_in: int | None = None
        self._out_bytes: dict[int, int] = defaultdict(int)
        self._truncated: set[int] = set()

    def preprocess(self, nb, resources=None, km=None):
        self._reset()
        chapter = (resources or {}).get("nbgrader", {}).get("assignment", "")
        with boundary.session(chapter) as probe:
            self._probe = probe
            if probe is not None:
                resources["tfs_probe"] = probe  # for TrustedJudge, which judges what the test cells wrote
            return super().preprocess(nb, resources, km=km)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type != "code" or not cell.source.strip():
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        if self._died_in is not None:
            cell.outputs = [error_output("KernelDied", f"not run: the kernel died in cell {self._died_in}.")]
            return cell
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            cell.outputs = [error_output("NotebookTimeout", f"not run: the notebook's {self.notebook_timeout} s "
                                         "time limit was reached before this cell.")]
            return cell
        cell_timeout = self.timeout
        self.timeout = max(1, math.ceil(min(cell_timeout or remaining, remaining)))
        probe = getattr(self, "_probe", None) if is_grade(cell) else None
        if probe is not None:
            probe.clear()  # results are the test cell's own: nothing an earlier cell wrote
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except DeadKernelError:
            self._died_in = cell_index
            cell.outputs.append(error_output(
                "KernelDied", "the kernel died while running this cell (a crash, or the sandbox's memory or CPU "
                "limit); later cells were not run."))
            return cell
        finally:
            self.timeout = cell_timeout
            if probe is not None:
                probe.collect(cell_index)

    # nbclient binds its synchronous wrapper to its own coroutine; nbconvert calls the wrapper
    execute_cell = run_sync(async_execute_cell)

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
        self._out_bytes[cell_index] += size
        if self._out_bytes[cell_index] > self.max_output_bytes:
            if cell_index not in self._truncated:
                self._truncated.add(cell_index)
                outs.append(NotebookNode(output_type="stream", name="stdout",
                                         text=f"\n[output truncated by the grader after {self.max_output_bytes} bytes]\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)
