"""Autograding the course with nbgrader, safely: `make release | collect | autograde | feedback | export`.

- `config`: the nbgrader settings (`nbgrader_config.py` calls `configure`); solutions/ is the source.
- `course`: the steps as nbgrader commands, the release check, and grades.csv with each submission's outcome.
- `collect`: a folder of student notebooks -> submissions, and what was skipped and why.
- `autograde`: one nbgrader run per submission, N at a time; every outcome recorded with its real cause.
- `normalise`: what nbgrader rejects (duplicate or stale metadata, changed cell types, deleted test cells,
  the nbformat version) repaired from the release, in memory.
- `sandbox`: each submission's kernel under bubblewrap, as an unprivileged user, with resource limits.
- `execute`: nbgrader's Execute step with a notebook time limit, an output cap and dead-kernel handling.
- `integrity`: the static scan that zeroes reference imports and tampering; quiet stderr in test cells.
- `bench`: the class-scale run (30 submissions per chapter, parallel vs sequential).

The instructor's guide is docs/instructors.md.
"""
