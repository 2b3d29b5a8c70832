# nbgrader's configuration for this course: `make release | collect | autograde | feedback | export`
# (docs/instructors.md) or plain `nbgrader ...` commands run from the repository's root.
# solutions/NN_name.ipynb is nbgrader's source: it is copied to a `source/` tree in a temporary directory,
# never into the repository. Every autograded notebook runs sandboxed (utils/grading/sandbox.py).
from utils.grading.config import configure

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
configure(c)
