"""Figures for chapter 04: plotly heatmaps, lines and bars, and circuitsvis attention patterns.

Every helper returns its figure; a notebook cell shows it by ending with it (or `fig.show()`). circuitsvis
views are returned as IPython HTML objects holding circuitsvis's inline (local) source, which works offline;
never save `str(view)`, which loads the bundle from a CDN.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else x


def imshow(values: Tensor, *, x: Sequence | None = None, y: Sequence | None = None, title: str = "",
           labels: dict | None = None, zmid: float | None = 0.0, **kwargs):
    """A heatmap of a 2-D tensor, diverging around `zmid` (pass `zmid=None` for a sequential scale)."""
    import plotly.express as px

    colour = dict(color_continuous_scale="RdBu", color_continuous_midpoint=zmid) if zmid is not None else {}
    fig = px.imshow(_numpy(values), x=list(x) if x is not None else None, y=list(y) if y is not None else None,
                    title=title, labels=labels or {}, aspect="auto", **colour, **kwargs)
    return fig


def line(values: Tensor, *, x: Sequence | None = None, names: Sequence[str] | None = None, title: str = "",
         labels: dict | None = None, **kwargs):
    """One line per row of `values` (a 1-D tensor is one line)."""
    import plotly.graph_objects as go

    rows = _numpy(values if values.dim() == 2 else values[None])
    fig = go.Figure()
    for i, row in enumerate(rows):
        fig.add_scatter(x=list(x) if x is not None else None, y=row, mode="lines",
                        name=names[i] if names else None)
    labels = labels or {}
    fig.update_layout(title=title, xaxis_title=labels.get("x"), yaxis_title=labels.get("y"),
                      showlegend=names is not None, **kwargs)
    return fig


def bar(values: Tensor, names: Sequence[str], *, title: str = "", labels: dict | None = None, **kwargs):
    """A bar per named value."""
    import plotly.express as px

    return px.bar(x=list(names), y=_numpy(values), title=title, labels=labels or {}, **kwargs)


def token_labels(tokens: Tensor, bos: int | None = None) -> list[str]:
    """Unique labels for a 1-D sequence of token ids, e.g. ['BOS', '17 (1)', ...]: circuitsvis needs strings."""
    return [("BOS" if bos is not None and int(tok) == bos else str(int(tok))) + f" ({pos})"
            for pos, tok in enumerate(tokens.tolist())]


def attention_patterns(pattern: Tensor, tokens: Sequence[str], head_names: Sequence[str] | None = None):
    """circuitsvis's interactive view of one sequence's patterns, `pattern` of shape [n_heads query_pos key_pos].

    Return it from the cell. The view always carries circuitsvis's inline JavaScript bundle (about 1.3 MB), so
    it renders offline and in saved outputs; circuitsvis's own `_repr_html_()` switches to a CDN when online."""
    import circuitsvis as cv
    from IPython.display import HTML

    if pattern.dim() != 3:
        raise ValueError(f"attention_patterns: pass one sequence's patterns [n_heads query_pos key_pos], got {tuple(pattern.shape)}")
    names = list(head_names) if head_names is not None else [f"H{h}" for h in range(pattern.shape[0])]
    view = cv.attention.attention_heads(attention=pattern.detach().float().cpu(), tokens=list(tokens),
                                        attention_head_names=names)
    return HTML(view.local_src)


def pattern_heatmap(pattern: Tensor, tokens: Sequence[str], *, title: str = "", max_ticks: int = 40):
    """One head's attention pattern [query_pos key_pos] as a heatmap whose axes show the tokens themselves (repeats
    allowed: the axes are positions, labelled by token), with query, key and weight on hover."""
    import numpy as np
    import plotly.graph_objects as go

    values = _numpy(pattern.detach().float())
    n = values.shape[0]
    if values.shape != (n, n) or len(tokens) != n:
        raise ValueError(f"pattern_heatmap: pass a square [query_pos key_pos] pattern and one label per position, got "
                         f"{tuple(values.shape)} and {len(tokens)} labels")
    hover = np.array([[f"query {q}: {tokens[q]}<br>key {k}: {tokens[k]}" for k in range(n)] for q in range(n)])
    step = max(1, -(-n // max_ticks))  # thin the ticks of long sequences; hover still names every token
    ticks = list(range(0, n, step))
    fig = go.Figure(go.Heatmap(z=values, customdata=hover, colorscale="Blues", zmin=0, zmax=1,
                               hovertemplate="%{customdata}<br>attention %{z:.3f}<extra></extra>"))
    axis = dict(tickmode="array", tickvals=ticks, ticktext=[tokens[i] for i in ticks])
    fig.update_layout(title=title, xaxis=dict(title="key", **axis), yaxis=dict(title="query", autorange="reversed", **axis))
    return fig


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    return [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]


__all__ = ["attention_patterns", "bar", "head_labels", "imshow", "line", "pattern_heatmap", "token_labels"]
