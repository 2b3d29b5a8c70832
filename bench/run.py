"""`make bench`: the course's speed figures, each beside its peer measured in the same run.

Writes bench/results/latest.md (a Markdown table) and bench/results/latest.json. Not a test: numbers vary
with the machine and its load, so they are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
OUT = Path(__file__).resolve().parent / "results"
SECTIONS = ["machine", "reference", "checkers", "models", "generation", "training", "grading"]


def machine(results: dict) -> None:
    import torch as t

    from bench.timing import matmul_gflops

    results["machine"] = {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": t.get_num_threads(),
        "python": platform.python_version(), "torch": t.__version__,
        "matmul_gflops_fp32": matmul_gflops(),
        "load_avg_1m": os.getloadavg()[0],  # other work on the machine: read the figures with it in mind
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--students", type=int, default=30,
                        help="submissions graded in the grading section (default 30, the issue's class size)")
    parser.add_argument("--new-tokens", type=int, default=256,
                        help="tokens generated in the generation section (default 256, the issue's figure)")
    args = parser.parse_args(argv)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "section_s": {}, "errors": {}}
    from bench import checkers, generation, grading, models, reference, training

    runners = {
        "machine": machine, "reference": reference.run, "checkers": checkers.run, "models": models.run,
        "generation": lambda r: generation.run(r, new_tokens=args.new_tokens), "training": training.run,
        "grading": lambda r: grading.run(r, students=args.students),
    }
    for name in SECTIONS:
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"[bench] {name} …", flush=True)
        try:
            runners[name](results)
        except Exception as exc:  # one broken section must not lose the others' figures; the exit code says so
            traceback.print_exc()
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
        results["section_s"][name] = time.perf_counter() - t0
        print(f"[bench] {name} done in {results['section_s'][name]:.1f} s", flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    from bench.report import markdown

    (OUT / "latest.md").write_text(markdown(results))
    print(markdown(results))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
