"""Autograding the course with nbgrader, safely: `make release | collect | autograde | feedback | export`.

- `config`: the nbgrader settings (`nbgrader_config.py` calls `configure`); solutions/ is the source.
- `course`: the steps as nbgrader commands, plus collection of a folder of notebooks and the release check.
- `sandbox`: each submission's kernel under bubblewrap, as an unprivileged user, with resource limits.
- `execute`: nbgrader's Execute step with a notebook time limit, an output cap and dead-kernel handling.
- `integrity`: the static scan that zeroes reference imports and tampering; quiet stderr in test cells;
  deleted test cells restored.
- `bench`: the class-scale run (30 submissions in one autograde run, time per submission).

The instructor's guide is docs/instructors.md.
"""
