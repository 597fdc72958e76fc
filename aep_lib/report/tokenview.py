"""Seeing a text: each token coloured by its standardised surprisal (GLTR-like), with hover details.

The colour of token ``t`` is ``u_t = (s_t - H_t) / sqrt(V_t)`` (docs/science.md, under ``p``): the token's
surprisal against what the model expected, in units of its own spread. Over-typical tokens
(``u < 0``, more likely than the model's average token at that position) are blue, under-typical ones
(``u > 0``) red, clipped at ``±clip``. Hovering a token shows its text, ``s``, ``H``, ``V``, ``u`` and rank.
Under the AEP ``u_t`` has mean 0 and variance 1 for the model's own samples; ``sum u_t sqrt(V_t) /
sqrt(sum V_t)`` is the run's ``z``.

    html = token_view(scored.tokens, title="xsum human #3 under smollm2-135m")
    display(HTML(html))                  # in a notebook (IPython.display.HTML)
    save_token_view(html, "tokenview_xsum_human_3")   # outputs/<profile>/figures/<name>.html
"""

from __future__ import annotations

import html as _html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.columns import typicality_columns
from ..core.stats import standardised_surprisal


def _colour(u: float, clip: float) -> str:
    """Diverging blue (u < 0) - white - red (u > 0), as an rgb() string."""
    if not math.isfinite(u):
        return "rgb(255,170,0)" if u == math.inf else "rgb(230,230,230)"
    x = max(-1.0, min(1.0, u / clip))
    if x >= 0:
        r, g, b = 255, int(255 * (1 - 0.75 * x)), int(255 * (1 - 0.75 * x))
    else:
        r, g, b = int(255 * (1 + 0.75 * x)), int(255 * (1 + 0.45 * x)), 255
    return f"rgb({r},{g},{b})"


def token_view(tokens: pd.DataFrame, title: str = "", clip: float = 3.0, dist: str = "raw", prompt: str = "",
               tokenizer=None) -> str:
    """An HTML fragment of the text of ``tokens`` (one row per scored token: ``token_text`` or, with
    ``tokenizer``, decoded ``token_id``; ``surprisal_``/``entropy_``/``varentropy_<dist>``, optional
    ``rank_raw``), each token a ``<span>`` coloured by its standardised surprisal with a ``title``
    tooltip; ``prompt`` (context, not scored) is shown in grey first."""
    if "token_text" in tokens:
        texts = tokens["token_text"].astype(str).tolist()
    elif tokenizer is not None:
        texts = [tokenizer.decode([int(t)]) for t in tokens["token_id"]]
    else:
        raise ValueError("token_view needs a token_text column or a tokenizer to decode token_id")
    u = standardised_surprisal(tokens, dist)
    s, h, v = (tokens[c].to_numpy(dtype=float) for c in typicality_columns(dist))
    rank = tokens["rank_raw"].to_numpy() if "rank_raw" in tokens else [None] * len(tokens)
    spans = []
    for i, (text, ui, si, hi, vi, ri) in enumerate(zip(texts, u, s, h, v, rank)):
        tip = f"#{i} {text!r}&#10;s = {si:.2f} bits, H = {hi:.2f}, V = {vi:.2f}&#10;(s - H)/sqrt(V) = {ui:+.2f}"
        if ri is not None:
            tip += f"&#10;rank {int(ri)}"
        shown = _html.escape(text).replace("\n", "&#8629;<br>")
        spans.append(f'<span class="tok" style="background:{_colour(ui, clip)}" '
                     f'title="{_html.escape(tip, quote=True).replace("&amp;#10;", "&#10;")}">{shown}</span>')
    finite = u[np.isfinite(u)]
    summary = (f"{len(tokens)} tokens; mean standardised surprisal {finite.mean():+.2f}, "
               f"share |u| > 2: {np.mean(np.abs(finite) > 2):.2f}" if len(finite) else f"{len(tokens)} tokens")
    legend = (f'<span style="background:{_colour(-clip, clip)}">&nbsp;over-typical (u = -{clip:g})&nbsp;</span> '
              f'<span style="background:{_colour(0, clip)}">&nbsp;u = 0&nbsp;</span> '
              f'<span style="background:{_colour(clip, clip)}">&nbsp;under-typical (u = +{clip:g})&nbsp;</span>')
    head = f"<div style='font-weight:bold'>{_html.escape(title)}</div>" if title else ""
    context = f"<span style='color:#888'>{_html.escape(prompt)}</span>" if prompt else ""
    return ("<div class='aep-tokenview' style='font-family:monospace;font-size:12px;line-height:1.7;"
            "max-width:900px;white-space:pre-wrap'>"
            f"{head}<div style='margin:2px 0 6px 0'>{legend} &nbsp; {summary}</div>"
            f"<div>{context}{''.join(spans)}</div></div>")


def save_token_view(html: str, name: str, profile: str | None = None) -> Path:
    """Write ``html`` as a standalone page ``<name>.html`` beside the calling notebook's figures (the same
    rule as ``figures.save_figure``: ``outputs/<profile>/figures/`` for the profile's parameters,
    ``outputs/<profile>/scratch/figures/`` otherwise; ``profile`` given: that profile's figures folder);
    returns the path."""
    from ..paths import output_dir
    from .placement import caller_namespace, find_params, place

    if profile is not None:
        folder = output_dir(profile) / "figures"
    else:
        folder = place(find_params(2), caller_namespace(2)).figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.html"
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + _html.escape(name) + "</title></head><body>"
            + html + "</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
