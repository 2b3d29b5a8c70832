"""A simulated Colab kernel: a fresh virtual environment holding only what Colab preinstalls that matters to
the course (torch, numpy, transformers, pandas, plotly, ipykernel, ipywidgets, tqdm and what they need), with
`google.colab` in `sys.modules` at interpreter start, as Colab's kernel has it.

Colab's packages are placed by hard-linking the installed files of this machine's own distributions (their
`RECORD`s, dist-info included), so building the environment takes seconds and `pip` sees ordinary installed
packages; what the notebook's setup cell then installs goes through pip and the package registry, as on Colab.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

COLAB_PREINSTALLED = ("torch", "numpy", "transformers", "pandas", "plotly", "ipykernel", "ipywidgets", "tqdm")
# Colab ships a current pip (ensurepip's 23.x rejects `name @ git+file://...` requirements): this machine's own.
TOOLS = ("pip",)
KERNEL_NAME = "colab-sim"
# Executed by site.py at start-up in every interpreter of the environment, kernels included. `google.colab` is a
# real (empty) package, not a bare module object: libraries probe it with importlib.util.find_spec, which raises
# on a module without a spec (accelerate does, on import).
COLAB_PTH = "import google.colab\n"


def closure(names=COLAB_PREINSTALLED) -> list:
    """The installed distributions `names` need, their dependencies included (extras and unmet markers left out)."""
    seen, todo, found = set(), list(names), []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        found.append(dist)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _place(dist, site_packages: Path) -> None:
    for file in dist.files or []:
        if file.parts[0] == "..":  # console scripts and data outside site-packages: not needed here
            continue
        src, dst = Path(dist.locate_file(file)), site_packages / file
        if not src.is_file() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def make_colab_env(env: Path) -> Path:
    """Create the environment at `env`, with its Jupyter kernel `colab-sim` under `env/share/jupyter`."""
    venv.create(env, with_pip=False, symlinks=True)
    site_packages = next((env / "lib").glob("python3*/site-packages"))
    for dist in closure((*COLAB_PREINSTALLED, *TOOLS)):
        _place(dist, site_packages)
    colab = site_packages / "google" / "colab"  # `google` is a namespace package (protobuf's) here too
    colab.mkdir(parents=True, exist_ok=True)
    (colab / "__init__.py").write_text('"""Stand-in for Colab\'s own package: only its presence matters."""\n')
    (site_packages / "colab_sim.pth").write_text(COLAB_PTH)
    subprocess.run([str(python_of(env)), "-m", "ipykernel", "install", "--prefix", str(env), "--name", KERNEL_NAME],
                   check=True, capture_output=True)
    return env


def pip_freeze(env: Path) -> dict[str, str]:
    out = subprocess.run([str(python_of(env)), "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                         check=True).stdout
    pins = {}
    for line in out.splitlines():
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[canonicalize_name(name)] = ver
        elif " @ " in line:
            name, ver = line.split(" @ ", 1)
            pins[canonicalize_name(name)] = ver
    return pins


def publish_working_tree(root: Path, dest: Path, tag: str) -> str:
    """A git repository at `dest` holding the course as it is in `root` (tracked and new files, not ignored
    ones), committed and tagged `tag`, standing in for the public repository; returns its pip URL."""
    files = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = root / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git = ["git", "-C", str(dest), "-c", "user.name=course", "-c", "user.email=course@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "course"], check=True)
    subprocess.run([*git, "tag", tag], check=True)
    return f"git+file://{dest}"


if __name__ == "__main__":
    make_colab_env(Path(sys.argv[1]))
    print(f"kernel {KERNEL_NAME}: JUPYTER_PATH={Path(sys.argv[1]) / 'share' / 'jupyter'}")
