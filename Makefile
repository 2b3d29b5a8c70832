# Everything a learner or instructor runs. `make lab` and `make test` create .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The reference loader (TFS_REFERENCE=auto) uses real GPT-2 small when it is in the Hugging Face cache or the
# hub answers, and otherwise a seeded random stand-in at once. HF_HUB_OFFLINE=1 (what CI sets) skips the hub.
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= disabled

.PHONY: help env lab test build check-build grade bench clean
help:
	@echo "make lab    - create .venv if missing, then open JupyterLab on chapters/"
	@echo "make test   - create .venv if missing, then run every test"
	@echo "make build  - regenerate chapters/ and utils/reference/ from solutions/"
	@echo "make grade NB=chapters/02_components.ipynb - progress report for one notebook"
	@echo "make bench  - speed figures against TransformerLens/transformers (bench/results/latest.md)"
	@echo "make class-report - after make autograde: what the class got wrong (class-report/)"
	@echo "make progress FOLDER=... - live students x exercises table for a session"

env: $(STAMP)
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Containers and CI run as root, where Jupyter refuses to start without --allow-root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=chapters $(ROOT_FLAG) $(LAB_ARGS)

# Two pytest workers (pytest-xdist) keep both cores busy while notebooks wait on their kernels; each worker and
# its kernels use one thread (tests/conftest.py). Tests that share an expensive fixture (the executed solutions,
# a graded class) are grouped onto one worker, and the two longest groups start first (tests/conftest.py). TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder) $(PYTEST_ARGS)

build: $(STAMP)
	$(PY) -m utils.build

check-build: $(STAMP)
	$(PY) -m utils.build --check

grade: $(STAMP)
	$(PY) -m utils.grade $(NB)

# Speed figures beside their peers (bench/run.py); writes bench/results/latest.{md,json}.
# BENCH_ARGS="--only generation" or "--students 6" for a shorter run.
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# ---- Grading with nbgrader (docs/instructors.md). CH="02_components 03_assembly" limits a step to chapters;
# SUBMISSIONS is a folder holding <student>/<chapter>.ipynb; WORKERS submissions are graded at a time (default:
# the number of cores). Submissions run sandboxed (bubblewrap).
.PHONY: release collect autograde feedback export grading-bench class-report progress
release: $(STAMP)
	$(PY) -m utils.grading release $(CH)

collect: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make collect SUBMISSIONS=folder/with/<student>/<chapter>.ipynb"; exit 2; }
	$(PY) -m utils.grading collect $(SUBMISSIONS) $(CH)

autograde: $(STAMP)
	$(PY) -m utils.grading autograde $(if $(WORKERS),--workers $(WORKERS)) $(CH)

feedback: $(STAMP)
	$(PY) -m utils.grading feedback $(CH)

export: $(STAMP)
	$(PY) -m utils.grading export

grading-bench: $(STAMP)
	$(PY) -m utils.grading.bench --students $(or $(STUDENTS),30) $(if $(CH),--chapters $(CH)) $(if $(WORKERS),--workers $(WORKERS))

# After `make autograde`: per exercise, how many passed and which catalogued mistakes the failures named
# (class-report/report.md, .html, .csv). Reads the autograded notebooks; runs no student code.
class-report: $(STAMP)
	$(PY) -m utils.grading.class_report $(CH)

# A live session: FOLDER of learners' notebooks -> students x exercises (runs copies, unsandboxed; see docs).
progress: $(STAMP)
	@test -n "$(FOLDER)" || { echo "usage: make progress FOLDER=shared/folder [PROGRESS_ARGS='--html progress.html --every 120']"; exit 2; }
	$(PY) -m utils.progress $(FOLDER) $(PROGRESS_ARGS)
