"""Every figure of every executed solution notebook draws in a real browser, offline.

Each notebook is executed once (a copy, HF_HUB_OFFLINE=1, TFS_FAST=1), exported with nbconvert's JupyterLab
page and opened in headless Chromium from a server on 127.0.0.1, with every other request blocked and
recorded (tests/browser/chromium.py). Each plotly figure and circuitsvis view must exist with a non-zero
size and hold what its library draws; the page must log no error and request nothing off the machine.
Screenshots of every figure go to test-artifacts/browser/<notebook>/ for a person to look at.

A small notebook built here (one plotly heatmap, one plotly line, one circuitsvis view, through the course's
`setup_notebook()`) proves the harness on its own, and a page built the wrong way (plotly.js and circuitsvis
from their CDNs) proves that it notices a blank figure and a request leaving the machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .browser.chromium import Chromium, RecordingProxy, find_chromium, from_browser_services
from .browser.figures import StaticServer, error_outputs, execute, export_html, figures, render, uses_figures
from .conftest import ROOT, SOLUTION_NOTEBOOKS

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("offline-solutions")]

ARTIFACTS = ROOT / "test-artifacts" / "browser"
# Off-machine requests a page makes for something other than a figure; still blocked, but not a failure.
# The build puts the Colab badge (a markdown image) at the top of every notebook: offline it shows its alt text.
NOT_FIGURES = ("https://colab.research.google.com/assets/colab-badge.svg",)
FIGURE_NOTEBOOKS = [p for p in SOLUTION_NOTEBOOKS if uses_figures(p)]

HARNESS_CELLS = [
    "from utils.notebook import setup_notebook\n\nsetup_notebook()",
    "import plotly.express as px\n\n"
    "fig = px.imshow([[0.0, 1.0, -1.0], [0.5, -0.5, 0.25]], color_continuous_scale='RdBu',\n"
    "                color_continuous_midpoint=0, title='harness: heatmap')\nfig.show()",
    "import plotly.graph_objects as go\n\n"
    "go.Figure(go.Scatter(y=[3.0, 2.1, 1.7, 1.5], mode='lines+markers'), layout_title_text='harness: line')",
    "import circuitsvis as cv\n\n"
    "pattern = [[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]],\n"
    "           [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.1, 0.9]]]\n"
    "cv.attention.attention_patterns(tokens=['The', ' cat', ' sat'], attention=pattern)",
]


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium not found ($TFS_CHROMIUM, chromium, chromium-browser, google-chrome): run "
                    ".ci/install-browser.sh (Debian: apt-get install chromium) to check figures in a real browser")
    proxy = RecordingProxy()
    chromium = Chromium(executable, proxy.port)
    yield chromium, proxy
    chromium.close()
    proxy.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder served on 127.0.0.1, laid out like the repository: solution pages go to solutions/, and
    docs/ is the repository's, so that the notebooks' `../docs/img/...` diagrams resolve as in JupyterLab."""
    folder = tmp_path_factory.mktemp("pages")
    (folder / "solutions").mkdir()
    (folder / "docs").symlink_to(ROOT / "docs", target_is_directory=True)
    server = StaticServer(folder)
    yield folder, server
    server.close()


@pytest.fixture(scope="module")
def harness_notebook(tmp_path_factory) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(src) for src in HARNESS_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path_factory.mktemp("harness") / "harness.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="module")
def rendered(browser, site, executed_solution):
    """rendered(path, name): execute, export and open a notebook once; the results are cached.

    Solution notebooks run through the session's shared `executed_solution` (one run for the whole suite)."""
    chromium, _ = browser
    folder, server = site
    cache = {}

    def get(path: Path, name: str):
        if name not in cache:
            nb = executed_solution(path)[0] if path in SOLUTION_NOTEBOOKS else execute(path)
            found, problems = figures(nb)
            page = f"{path.parent.name}/{name}.html" if path in SOLUTION_NOTEBOOKS else f"{name}.html"
            (folder / page).write_text(export_html(nb, name), encoding="utf-8")
            shots = ARTIFACTS / name
            shutil.rmtree(shots, ignore_errors=True)
            cache[name] = nb, problems, render(chromium, f"{server.url}/{page}", found, shots)
        return cache[name]

    return get


def assert_page_clean(result) -> None:
    external = [url for url in result.external if not url.startswith(NOT_FIGURES)]
    errors = [e for e in result.errors if not any(url in e for url in NOT_FIGURES)]
    assert external == [], f"the page requested resources off the machine: {external}"
    assert errors == [], "the browser logged errors:\n" + "\n".join(errors)


def assert_all_drawn(result) -> None:
    assert result.not_drawn() == [], "figures that did not draw:\n" + "\n".join(result.not_drawn())
    assert len(result.screenshots) == len(result.figures)


# -- the harness on a notebook of its own ---------------------------------------------------------------------
def test_harness_notebook_figures_draw(rendered, harness_notebook):
    nb, problems, result = rendered(harness_notebook, "harness")
    assert error_outputs(nb) == []
    assert problems == []
    assert [f.kind for f in result.figures] == ["plotly", "plotly", "circuitsvis"]
    assert_all_drawn(result)
    heatmap, line, view = result.measurements
    assert heatmap["traces"] == 1 and line["traces"] == 1
    assert view["painted_canvases"] > 0, view  # the pattern itself, not just the view's labels
    assert "Attention Patterns" in view["text"]


def test_harness_notebook_page_stays_offline_and_quiet(rendered, harness_notebook):
    _, _, result = rendered(harness_notebook, "harness")
    assert_page_clean(result)


@pytest.fixture
def own_browser(browser):
    """A second Chromium with a proxy of its own: the CDN page's preconnects must not reach the shared proxy."""
    proxy = RecordingProxy()
    chromium = Chromium(find_chromium(), proxy.port)
    yield chromium, proxy
    chromium.close()
    proxy.close()


def test_harness_catches_cdn_figures(own_browser, site):
    """A page whose figures load their JavaScript from a CDN: the harness sees blank figures and the requests."""
    import circuitsvis as cv
    import plotly.graph_objects as go
    import plotly.io as pio

    from .browser.figures import Figure

    chromium, _ = own_browser
    folder, server = site
    plot = pio.to_html(go.Figure(go.Bar(y=[1, 2])), include_plotlyjs="cdn", full_html=False, div_id="cdn-plot")
    view = str(cv.attention.attention_patterns(tokens=["a", "b"], attention=[[[1.0, 0.0], [0.5, 0.5]]]))
    view_id = view.split('id="', 1)[1].split('"', 1)[0]
    (folder / "cdn.html").write_text(f"<!DOCTYPE html><html><head><link rel='icon' href='data:,'></head>"
                                     f"<body>{plot}{view}</body></html>", encoding="utf-8")
    found = [Figure("plotly", "cdn-plot", 0), Figure("circuitsvis", view_id, 0)]
    result = render(chromium, f"{server.url}/cdn.html", found, None, timeout=3)
    assert len(result.not_drawn()) == 2, result.measurements
    assert any("cdn.plot.ly" in url for url in result.external), result.external
    assert any("unpkg.com" in url for url in result.external), result.external
    assert result.errors, "blocked scripts must show up as errors"


# -- every solution notebook with figures ---------------------------------------------------------------------
@pytest.mark.parametrize("path", FIGURE_NOTEBOOKS, ids=lambda p: p.stem)
def test_solution_figures_draw(rendered, path):
    nb, problems, result = rendered(path, path.stem)
    assert error_outputs(nb) == [], "cells failed, so their figures may be missing"
    assert problems == []
    assert result.figures, f"{path.name} imports a figure library but showed no figure"
    assert_all_drawn(result)


@pytest.mark.parametrize("path", FIGURE_NOTEBOOKS, ids=lambda p: p.stem)
def test_solution_page_stays_offline_and_quiet(rendered, path):
    _, _, result = rendered(path, path.stem)
    assert_page_clean(result)


# -- last: whatever went past the pages' own interception ---------------------------------------------------
def test_nothing_but_chromium_services_reached_the_proxy(browser, rendered, harness_notebook):
    """Requests that bypassed the pages' interception reach the refusing proxy; only Chromium's own may.

    Runs after the notebooks above (file order), so it covers every page this module opened."""
    rendered(harness_notebook, "harness")
    _, proxy = browser
    strangers = [line for line in proxy.seen if not from_browser_services(line)]
    assert strangers == [], f"requests that reached the proxy (refused there): {strangers}"
