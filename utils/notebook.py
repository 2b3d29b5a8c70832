"""What every notebook's setup cell calls: figure renderers that work offline, and quiet libraries."""

from __future__ import annotations

import logging
import sys
import warnings

# The name under which `setup_notebook()` registers plotly's offline HTML renderer.
OFFLINE_HTML_RENDERER = "tfs_offline_html"


def in_colab() -> bool:
    return "google.colab" in sys.modules


def _offline_html_renderer():
    """plotly's `notebook` renderer without the MathJax <script> it fetches from a CDN for every figure.

    The renderer's global init (once per kernel, in the first cell that shows a figure) inlines plotly.js
    itself, so saved outputs and exported HTML pages draw without a network; each figure is then a <div>
    plus the script that calls `Plotly.newPlot`."""
    import plotly.io as pio
    from plotly.io.base_renderers import NotebookRenderer

    class OfflineHtmlRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict):
            html = pio.to_html(fig_dict, config=self.config, auto_play=self.auto_play, include_plotlyjs=False,
                               include_mathjax=False, post_script=self.post_script, full_html=False,
                               animation_opts=self.animation_opts, default_width="100%", default_height=525,
                               validate=False)
            return {"text/html": html}

    return OfflineHtmlRenderer()


def _circuitsvis_inline(view) -> str:
    # circuitsvis's own `_repr_html_()` returns a page that imports its bundle from unpkg.com whenever the
    # kernel is online, which draws nothing offline and leaves saved outputs depending on a CDN.
    return view.local_src


def _show_circuitsvis_inline() -> None:
    """Make every circuitsvis view render from its inline JavaScript bundle (about 1.3 MB per view).

    IPython consults a printer registered for a type before the type's `_repr_html_()`; registering it by
    name does not import circuitsvis."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    html = shell.display_formatter.formatters["text/html"]
    html.for_type_by_name("circuitsvis.utils.render", "RenderedHTML", _circuitsvis_inline)


def setup_notebook() -> None:
    """Configure figures for the current front end and silence library chatter on stderr.

    plotly: every figure carries two representations. JupyterLab draws the plotly mimetype with its
    bundled extension (offline); an exported HTML page or an old front end uses the HTML one, whose
    plotly.js is inlined once per kernel (no CDN). Colab has its own renderer. circuitsvis views always use
    their inline bundle.
    """
    import plotly.io as pio

    if in_colab():
        pio.renderers.default = "colab"
    else:
        pio.renderers[OFFLINE_HTML_RENDERER] = _offline_html_renderer()
        pio.renderers.default = f"plotly_mimetype+{OFFLINE_HTML_RENDERER}"
    _show_circuitsvis_inline()
    # transformers and TransformerLens log advice to stderr on every model load; nbgrader scores a cell
    # with stderr output as failed, and a learner cannot act on it anyway.
    from utils.reference_model import CHATTY_LOGGERS

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformer_lens")
