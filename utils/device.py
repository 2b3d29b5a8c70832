"""Which device the course computes on: CUDA when available, else the CPU.

Apple's MPS is used only when asked for (`TFS_DEVICE=mps`): TransformerLens has reported silently wrong
results on it, and a course whose checks compare numbers cannot afford that.
"""

from __future__ import annotations

import os

import torch as t


def get_device() -> t.device:
    requested = os.environ.get("TFS_DEVICE", "").strip().lower()
    if requested:
        if requested == "cuda" and not t.cuda.is_available():
            raise RuntimeError("TFS_DEVICE=cuda, but torch sees no CUDA device; unset TFS_DEVICE to use the CPU.")
        if requested == "mps" and not t.backends.mps.is_available():
            raise RuntimeError("TFS_DEVICE=mps, but this torch build has no MPS support; unset TFS_DEVICE.")
        if requested not in ("cpu", "cuda", "mps"):
            raise ValueError(f"TFS_DEVICE={requested!r} is not one of cpu, cuda, mps.")
        return t.device(requested)
    return t.device("cuda" if t.cuda.is_available() else "cpu")
