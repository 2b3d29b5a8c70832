"""Execute a notebook copy, export it as the HTML page a learner would save, and check its figures in Chromium.

A figure is found in the executed notebook's outputs, by the id of the element its HTML draws into:
- plotly: `<div id="…" class="plotly-graph-div">`, which plotly.js turns into `.js-plotly-plot` holding
  `.main-svg` layers;
- circuitsvis: `<div id="circuits-vis-…">`, into which its React bundle renders the view (canvas/SVG/HTML).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from .chromium import Chromium, Page

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLOTLY_DIV = re.compile(r'<div id="([^"]+)" class="plotly-graph-div"')
CIRCUITSVIS_DIV = re.compile(r'<div id="(circuits-vis-[0-9a-f-]+)"')
PLOTLY_MIME = "application/vnd.plotly.v1+json"
# A code cell that imports a figure library (the generated setup cell only names them in a pip line).
FIGURE_IMPORT = re.compile(r"^\s*(?:import|from)\s+(?:plotly|circuitsvis|utils\.plotting)\b"
                           r"|^\s*from\s+utils\s+import\s+.*\bplotting\b", re.MULTILINE)


@dataclass
class Figure:
    kind: str  # "plotly" or "circuitsvis"
    element_id: str
    cell: int

    @property
    def label(self) -> str:
        return f"cell {self.cell} {self.kind} #{self.element_id}"


def uses_figures(path: Path) -> bool:
    """Does the notebook import plotly, circuitsvis or the course's plotting helpers in a code cell?"""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return any(cell.cell_type == "code" and FIGURE_IMPORT.search(cell.source) for cell in nb.cells)


def execute(path: Path, timeout: int = 300):
    """Run a copy of the notebook at `path` in its own folder, offline and in fast mode; returns the copy."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TFS_FAST": "1"}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
                            shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    client.execute(env=env)
    return nb


def error_outputs(nb) -> list[str]:
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue', '')[:200]}" for i, cell in enumerate(nb.cells)
            for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def figures(nb) -> tuple[list[Figure], list[str]]:
    """Every figure in the outputs, and the problems seen without a browser (a plotly figure with no HTML)."""
    found, problems = [], []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            html = data.get("text/html", "")
            html = "".join(html) if isinstance(html, list) else html
            found += [Figure("plotly", i, index) for i in PLOTLY_DIV.findall(html)]
            found += [Figure("circuitsvis", i, index) for i in CIRCUITSVIS_DIV.findall(html)]
            if PLOTLY_MIME in data and not PLOTLY_DIV.search(html):
                problems.append(f"cell {index}: a plotly figure has no HTML rendering (setup_notebook() not run?)")
    return found, problems


def export_html(nb, name: str) -> str:
    """The executed notebook as nbconvert's JupyterLab-style page, minus the page chrome's CDN scripts."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="offline_lab", extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": name}})
    return body


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output (and stderr) clean
        pass


class StaticServer:
    """Serves a folder on 127.0.0.1 (a learner's saved page opened from localhost)."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# Measures one figure in the page; returns a dict (see FigureResult). `id` and `kind` are substituted in.
_MEASURE = r"""
(() => {
  const kind = %(kind)s, el = document.getElementById(%(id)s);
  if (!el) return {exists: false};
  const box = r => ({x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height});
  const sized = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  // a canvas that drew something has pixels that are not all the same
  const painted = c => {
    try {
      const ctx = c.getContext('2d'); if (!ctx || !c.width || !c.height) return false;
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 4; i < d.length; i += 4)
        if (d[i] !== d[0] || d[i+1] !== d[1] || d[i+2] !== d[2] || d[i+3] !== d[3]) return true;
      return false;
    } catch (e) { return false; }
  };
  const out = {exists: true, box: box(el.getBoundingClientRect())};
  if (kind === 'plotly') {
    const svgs = [...el.querySelectorAll('.main-svg')];
    out.plotly = el.classList.contains('js-plotly-plot');
    out.layers = svgs.length;
    out.sized_layers = svgs.filter(sized).length;
    out.traces = (el._fullData || []).length;
    // the marks themselves: heatmap images, bars, lines and markers
    out.marks = el.querySelectorAll(
      '.heatmaplayer image, .imagelayer image, .bars path, .js-line, .points path, .trace path').length;
  } else {
    const canvases = [...el.querySelectorAll('canvas')], svgs = [...el.querySelectorAll('svg')];
    out.elements = el.querySelectorAll('*').length;
    out.canvases = canvases.length;
    out.painted_canvases = canvases.filter(c => sized(c) && painted(c)).length;
    out.svgs = svgs.filter(sized).length;
    out.text = (el.innerText || '').trim().slice(0, 80);
  }
  return out;
})()
"""


# The JavaScript form of `drawn()`'s last condition, polled until every figure on the page meets it.
_READY = {"plotly": "m.sized_layers > 0 && m.traces > 0 && m.marks > 0",
          "circuitsvis": "m.elements > 0 && (m.painted_canvases > 0 || m.svgs > 0)"}


def _js(figure: Figure) -> str:
    return _MEASURE % {"kind": json.dumps(figure.kind), "id": json.dumps(figure.element_id)}


def measure(page: Page, figure: Figure) -> dict:
    return page.evaluate(_js(figure))


def drawn(m: dict) -> bool:
    """Did the figure draw? (The element exists, has a size, and holds its library's marks.)"""
    if not m.get("exists") or m["box"]["width"] <= 0 or m["box"]["height"] <= 0:
        return False
    if "plotly" in m:
        return m["plotly"] and m["sized_layers"] > 0 and m["traces"] > 0 and m["marks"] > 0
    return m["elements"] > 0 and (m["painted_canvases"] > 0 or m["svgs"] > 0)


@dataclass
class Rendered:
    """One page opened in Chromium: its figures, their measurements, the page's log and screenshots."""

    figures: list[Figure]
    measurements: list[dict]
    external: list[str]
    errors: list[str]
    screenshots: list[Path]

    def not_drawn(self) -> list[str]:
        return [f"{f.label}: {m}" for f, m in zip(self.figures, self.measurements) if not drawn(m)]


def render(browser: Chromium, url: str, found: list[Figure], shots: Path | None, settle: float = 1.0,
           timeout: float = 45) -> Rendered:
    """Open `url`, wait until every figure drew (or `timeout`), measure them, screenshot each into `shots`."""
    page = browser.open(url)
    try:
        ready = " && ".join(f"(() => {{ const m = {_js(f)}; return m.exists && m.box.width > 0 && "
                            f"m.box.height > 0 && ({_READY[f.kind]}); }})()" for f in found) or "true"
        page.wait_for(ready, timeout=timeout)
        browser.pump(settle)  # late errors (a failed lazy load) still reach the log
        measurements = [measure(page, f) for f in found]
        saved = []
        if shots is not None:
            viewport = page.evaluate("window.innerHeight")
            for number, (f, m) in enumerate(zip(found, measurements), 1):
                if m.get("exists") and m["box"]["width"] > 0 and m["box"]["height"] > 0:
                    page.evaluate(f"document.getElementById({json.dumps(f.element_id)}).scrollIntoView()")
                    box = measure(page, f)["box"]
                    path = shots / f"{number:02d}-cell{f.cell:03d}-{f.kind}.png"
                    page.screenshot(box, path, beyond_viewport=box["height"] > viewport)
                    saved.append(path)
        browser.pump(0.2)
        return Rendered(found, measurements, page.log.external, list(page.log.errors), saved)
    finally:
        page.close()
