"""The sandbox every autograded kernel runs in: bubblewrap, an unprivileged user, and resource limits.

nbgrader starts one kernel per submitted notebook. `SandboxedKernelManager` wraps that kernel's command:

    prlimit (CPU time, address space, file size, processes, open files, no core dumps)
      bwrap (new mount, PID, network, IPC and UTS namespaces; dies with the grader)
        setpriv (uid/gid SANDBOX_UID, no supplementary groups, no capabilities)
          sh: copy the submission's non-notebook files into a private tmpfs, cd there
            python -m ipykernel_launcher ...

Inside, the file system holds only what a kernel needs, all read-only: /usr (and the /bin, /lib symlinks),
a few files of /etc, the Python installation and the virtual environment, and the course package `utils`
(bound alone, so the repository around it, `solutions/` with its hidden tests, `.git`, other submissions
and the gradebook do not exist there). Writable: a size-limited tmpfs for /tmp and for the home directory
(which holds the working copy), and the kernel's own socket directory. The network namespace is empty, so
the kernel talks to the grader over Unix sockets (ZeroMQ's `ipc` transport) in that directory.

Run as root, the kernel's user is a dedicated uid (so RLIMIT_NPROC bounds a fork bomb and the kernel owns
nothing outside its sandbox); run as an ordinary user, bwrap maps that user to SANDBOX_UID in a new user
namespace instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

import utils
from utils.grading import boundary

SANDBOX_UID = 61000  # no account of that number exists on a normal system: it owns nothing here
HOME = "/home/student"
WORK = f"{HOME}/work"
SUBMISSION = f"{HOME}/.submission"
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "mime.types")
MAX_COPIED_BYTES = 32 * 2**20  # a submission's extra files (data, helper modules) copied into the sandbox


class SandboxUnavailable(RuntimeError):
    """bubblewrap (or util-linux's prlimit/setpriv) is missing: grading refuses to run unsandboxed code."""


@dataclass(frozen=True)
class Limits:
    """Per-kernel limits. A kernel grades one notebook, so `cpu_s` is that notebook's CPU budget."""

    cpu_s: int = 900  # CPU seconds, all threads together (RLIMIT_CPU: SIGXCPU, then SIGKILL)
    memory_mb: int = 6144  # address space (RLIMIT_AS); torch and its libraries reserve ~2.5 GB of it idle
    file_mb: int = 64  # largest file a kernel may write (RLIMIT_FSIZE)
    tmp_mb: int = 256  # size of each tmpfs (/tmp and the home directory with the working copy)
    processes: int = 256  # processes and threads of the sandbox user (RLIMIT_NPROC)
    open_files: int = 1024
    threads: int = 2  # torch / OpenMP threads

    @classmethod
    def from_env(cls) -> "Limits":
        """Defaults, overridden by TFS_GRADING_LIMITS='{"cpu_s": 300, ...}' (how tests tighten them)."""
        overrides = json.loads(os.environ.get("TFS_GRADING_LIMITS", "{}") or "{}")
        return cls(**{**asdict(cls()), **overrides})


def missing_tools() -> list[str]:
    return [tool for tool in ("bwrap", "prlimit", "setpriv") if shutil.which(tool) is None]


def require_sandbox() -> None:
    missing = missing_tools()
    if missing:
        raise SandboxUnavailable(
            f"Autograding runs every submission inside bubblewrap, but {', '.join(missing)} is not installed. "
            "On Debian or Ubuntu: `sudo apt-get install -y bubblewrap util-linux`. (TFS_SANDBOX=off runs "
            "submissions unsandboxed: only for your own trusted notebooks.)"
        )


def sandbox_enabled() -> bool:
    return os.environ.get("TFS_SANDBOX", "on").strip().lower() not in ("off", "0", "no", "false")


def _parents(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if p != Path("/")]


def package_dir() -> Path:
    """The course package the grader itself imported: the kernel imports this one (through PYTHONPATH), not
    whatever an editable install in the environment points at (another checkout, say)."""
    return Path(utils.__file__).resolve().parent


def kernel_python() -> Path:
    """The environment's interpreter at its real location: a symlinked `.venv`, or one outside the
    repository, is bound at its resolved path, so the path the kernel starts from must be that one."""
    venv = Path(sys.prefix).resolve()
    for name in (Path(sys.executable).name, "python3", "python"):
        if (venv / "bin" / name).exists():
            return venv / "bin" / name
    return Path(sys.executable).resolve()


def _link_dirs(path: Path) -> set[Path]:
    """Folders of every link on the way from `path` to the real interpreter (/etc/alternatives, say): they
    must exist in the sandbox too, or the interpreter's symlink is dangling there."""
    dirs, seen = set(), set()
    while path.is_symlink() and path not in seen:
        seen.add(path)
        target = Path(os.readlink(path))
        path = target if target.is_absolute() else path.parent / target
        dirs.add(Path(os.path.realpath(path.parent)))
    return dirs


def _readonly_roots(package: Path | None = None) -> list[Path]:
    """Directories bound read-only: the Python installation, the venv and the course package, nothing else.
    `package` replaces the course package (a chapter judged outside the sandbox gets the probe package)."""
    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), package or package_dir(),
             *_link_dirs(kernel_python())}
    roots = {r for r in roots if not str(r).startswith("/usr/") and r != Path("/usr")}
    # a root inside another root needs no bind of its own (the venv may hold an installed `utils`)
    return sorted(r for r in roots if not any(o != r and o in r.parents for o in roots))


def sandbox_env(limits: Limits, probe=None) -> dict[str, str]:
    venv_bin = str(kernel_python().parent)
    threads = str(limits.threads)
    return {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": HOME,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": str(package_dir().parent),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "TFS_CACHE": f"{HOME}/.cache/transformer-from-scratch",
        # the graded reference is the offline one: deterministic, and nothing from the host's caches is exposed
        "TFS_REFERENCE": os.environ.get("TFS_GRADING_REFERENCE", "random-mini"),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "NBGRADER_EXECUTION": "autograde",
        # demo cells (chapter 05's training run) shrink to their test size: a grade needs the checks, not the demo
        "TFS_FAST": os.environ.get("TFS_GRADING_FAST", "1"),
        # a chapter judged outside (utils/grading/boundary.py): the probe package, its plans, where it writes
        **(probe.kernel_env(str(probe.plans), str(probe.out), str(probe.package)) if probe is not None else {}),
    }


def sandbox_command(kernel_argv: list[str], *, rundir: Path, limits: Limits, probe=None) -> list[str]:
    """The full command that runs `kernel_argv` sandboxed. `rundir/ipc` holds the connection file and the
    sockets (writable by the kernel); `rundir/files` the submission's non-notebook files (copied in).
    With a `probe` session (boundary.py), the probe package replaces the course package, its plans are
    bound read-only and its results folder writable."""
    tmp_bytes = str(limits.tmp_mb * 2**20)
    cmd = [
        "prlimit", f"--cpu={limits.cpu_s}", f"--as={limits.memory_mb * 2**20}",
        f"--fsize={limits.file_mb * 2**20}", f"--nproc={limits.processes}", f"--nofile={limits.open_files}",
        "--core=0", "--",
        "bwrap", "--die-with-parent", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup-try", "--hostname", "grading", "--clearenv",
        "--ro-bind", "/usr", "/usr",
    ]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        if (Path("/etc") / name).exists():
            cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    cmd += ["--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp",
            "--perms", "1777", "--size", tmp_bytes, "--tmpfs", HOME]
    made: set[Path] = set()
    package = probe.package / "utils" if probe is not None else None
    binds = [(root, "--ro-bind") for root in _readonly_roots(package)] + [(rundir / "ipc", "--bind")]
    if probe is not None:
        binds += [(probe.plans, "--ro-bind"), (probe.out, "--bind")]
    for path, how in binds:
        for parent in _parents(path):
            if parent not in made and parent not in (Path("/usr"), Path("/tmp")):
                cmd += ["--perms", "0755", "--dir", str(parent)]  # bwrap would make them 0700 otherwise
                made.add(parent)
        cmd += [how, str(path), str(path)]
    cmd += ["--ro-bind", str(rundir / "files"), SUBMISSION]
    for key, value in sandbox_env(limits, probe).items():
        cmd += ["--setenv", key, value]
    cmd += ["--chdir", HOME]
    if os.geteuid() == 0:
        cmd += ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    # the working copy: the submission's own extra files in a private, size-limited tmpfs
    cmd += ["/bin/sh", "-c", f'mkdir -p {WORK} && cp -R {SUBMISSION}/. {WORK}/ 2>/dev/null; cd {WORK} && exec "$@"',
            "sandbox", *kernel_argv]
    return cmd


def unprivileged_flags() -> list[str]:
    """Extra bwrap flags when the grader is not root: a user namespace maps the instructor to SANDBOX_UID."""
    return ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--disable-userns"]


def copy_submission_files(src: Path, dest: Path, budget: int = MAX_COPIED_BYTES) -> None:
    """Regular files of the submission folder except notebooks: the autograded notebook holds the restored
    test cells, hidden tests included, so it never enters the sandbox. Symlinks are not followed."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.suffix == ".ipynb":
            continue
        size = path.stat().st_size
        if size > budget:
            continue
        budget -= size
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


class SandboxedKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose kernel runs inside `sandbox_command`, talking over Unix sockets."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        require_sandbox()
        self.limits = Limits.from_env()
        self._rundir = Path(tempfile.mkdtemp(prefix="tfs-kernel-"))
        os.chmod(self._rundir, 0o755)
        ipc = self._rundir / "ipc"
        ipc.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(ipc, SANDBOX_UID, SANDBOX_UID)
        self.transport = "ipc"
        self.ip = str(ipc / "kernel")
        self.connection_file = str(ipc / "kernel.json")
        self._workdir: Path | None = None

    async def _async_pre_start_kernel(self, **kw):
        self._workdir = Path(kw.get("cwd") or os.getcwd())
        # a timeout interrupts the kernel with a message on its control channel: SIGINT sent to the process
        # group would reach bwrap too, and bwrap's death takes the kernel with it
        self.kernel_spec.interrupt_mode = "message"
        return await super()._async_pre_start_kernel(**kw)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        argv = super().format_kernel_cmd(extra_arguments)
        argv[0] = str(kernel_python()) if Path(argv[0]).name.startswith("python") else argv[0]
        copy_submission_files(self._workdir or Path.cwd(), self._rundir / "files")
        if os.geteuid() == 0 and os.path.exists(self.connection_file):
            os.chown(self.connection_file, SANDBOX_UID, SANDBOX_UID)
        cmd = sandbox_command(argv, rundir=self._rundir, limits=self.limits, probe=boundary.current())
        if os.geteuid() != 0:
            at = cmd.index("bwrap") + 1
            cmd[at:at] = unprivileged_flags()
        return cmd

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._rundir, ignore_errors=True)

    def __del__(self):
        rundir = getattr(self, "_rundir", None)
        if rundir is not None and rundir.exists():
            shutil.rmtree(rundir, ignore_errors=True)

