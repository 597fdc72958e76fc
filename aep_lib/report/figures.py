"""What a notebook reports: its figures with their numbers and claims, and the numbers it prints.

- ``setup_notebook``: the first call of every notebook, before its other imports (warnings off,
  transformers quiet, the figure style);
- ``save_figure``: the PNG/SVG of a figure and a JSON record (caption, numbers, claims, run ids,
  parameter values and whether they are the profile's, params file, git SHA, package versions, time)
  under ``outputs/<profile>/figures/``, or ``outputs/<profile>/scratch/figures/`` for parameters that
  are not the profile's (``placement``);
- ``claim``: print one checked number of a figure (rounded, as nbval compares it) and keep it, so that
  the next ``save_figure`` stores it with the figure (``"claims"``: name, value, bounds, holds); the
  pipeline fails an execution whose figure records a claim that does not hold (``claim_failure``);
- ``signed`` / ``fixed``: numbers printed the same on every machine (never "-0.0");
- ``format_report``: the text of ``aep compare``.

This module imports nothing heavy at import time (no torch, transformers or tqdm): a notebook imports
it first and calls ``setup_notebook()`` before the imports whose warnings it silences.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .. import paths
from ..store.provenance import git_sha, package_versions, utc_now

if TYPE_CHECKING:
    import pandas as pd


def setup_notebook(style: str | None = "paper", pandas_width: int | None = None,
                   pandas_max_columns: int | None = None) -> None:
    """What every notebook does first: call it before any other import of the notebook.

    - every warning is ignored, from here on: set before the imports because some warn while being
      imported (``tqdm.auto`` warns that ipywidgets is missing as soon as a module imports it);
    - transformers logs errors only and shows no download or loading progress bars;
    - ``style``: the figure style of ``plots.set_style`` (``None``: matplotlib's defaults);
    - ``pandas_width`` / ``pandas_max_columns``: pandas' ``display.width`` / ``display.max_columns``
      for printed tables (``None``: unchanged).
    """
    import warnings

    warnings.filterwarnings("ignore")

    import transformers  # after the filter: importing it imports tqdm.auto

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if style is not None:
        from . import plots

        plots.set_style(style)
    if pandas_width is not None or pandas_max_columns is not None:
        import pandas as pd

        if pandas_width is not None:
            pd.set_option("display.width", pandas_width)
        if pandas_max_columns is not None:
            pd.set_option("display.max_columns", pandas_max_columns)


def jsonable(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class ClaimNotHeld(AssertionError):
    """A figure drawn with its profile's parameters records a claim that does not hold."""


def per_execution(name: str) -> str:
    """``name`` plus the ``_runs`` suffix of this execution (``__source=...__scorer=...``, as ``aep figures``
    names it), so that the executions of one notebook over a ``_runs`` list keep one figure each; ``name``
    itself outside such an execution (papermill, nbval, JupyterLab, a params file without ``_runs``)."""
    execution = os.environ.get("AEP_NOTEBOOK") or ""
    return name + execution[execution.index("__"):] if "__" in execution else name


def save_figure(fig, name: str, caption: str, numbers: dict | None = None, run_ids: list[str] | None = None,
                params=None) -> None:
    """Write ``<name>.png`` and ``.svg`` and append a JSON record to ``<name>.json`` (returns nothing: a
    notebook cell that ends with it shows no output).

    Where: ``outputs/<profile>/figures/`` when the notebook's parameters are its profile's, else
    ``outputs/<profile>/scratch/figures/`` (``placement``: the profile and the parameters are those of
    ``params``, default the ``P = notebook_params(...)`` of the calling notebook).
    ``numbers``: the few values the figure claims (also print them: nbval ignores images).
    ``run_ids``: the store runs the figure was drawn from. The record's ``claims`` are those made with
    ``claim`` since the previous ``save_figure`` (then forgotten); it also keeps the parameter values
    (``parameters``), whether they are the profile's (``matches_profile``, ``differs_from_profile``) and
    the notebook name, params file and execution id that ``aep figures`` sets.

    Outside ``aep figures`` (which reports every execution itself) one line says where the figure and the
    store went (``placement.tell``), and a claim that does not hold raises ``ClaimNotHeld`` (after the
    figure is written) when the parameters are the profile's, or prints a ``FAIL`` line otherwise.
    """
    from .placement import caller_namespace, find_params, place, tell, under_pipeline

    where = place(params if params is not None else find_params(2), caller_namespace(2))
    folder = where.figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    fig.savefig(folder / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})
    claims = pending_claims()
    record = {
        "name": name,
        "caption": caption,
        "numbers": numbers or {},
        "run_ids": list(run_ids or []),
        "claims": claims,
        "notebook": os.environ.get("AEP_NOTEBOOK") or where.notebook or "interactive",
        "params_file": os.environ.get("AEP_PARAMS_FILE"),
        "execution": os.environ.get("AEP_EXECUTION"),
        "profile": where.profile,
        "folder": where.folder,
        "parameters": where.params,
        "matches_profile": where.matches_profile,
        "profile_params_file": where.params_file,
        "differs_from_profile": where.differences,
        "not_profile_reason": where.reason or None,
        "git_sha": git_sha(),
        "versions": package_versions(),
        "time": utc_now(),
    }
    log = folder / f"{name}.json"
    records = json.loads(log.read_text()) if log.is_file() else []
    records.append(record)
    tmp = log.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=1, default=jsonable))
    os.replace(tmp, log)
    _PENDING.clear()
    if under_pipeline():
        return
    tell(f"{name}: figure {_shown(png)} ({where.describe()}); store {_shown(where.store_dir())}")
    failures = [msg for c in claims if (msg := claim_failure(c))]
    if failures and where.matches_profile:
        raise ClaimNotHeld(f"{name}: " + "; ".join(failures))
    for msg in failures:
        tell(f"FAIL {name}: {msg} (not the profile's parameters: recorded in {_shown(log)}, not raised)")


def _shown(path: Path) -> str:
    """``path`` relative to the project root when inside it, else as it is."""
    try:
        return str(Path(path).resolve().relative_to(paths.project_root()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------
# claims: checked numbers, printed and recorded with the next figure

_PENDING: list[dict] = []  # claims made since the last save_figure, in order


def pending_claims() -> list[dict]:
    """Copies of the claims made since the last ``save_figure`` (what it will record)."""
    return [dict(c) for c in _PENDING]


def _bounds(at_least, at_most) -> str:
    parts = []
    if at_least is not None:
        parts.append(f">= {at_least:g}")
    if at_most is not None:
        parts.append(f"<= {at_most:g}")
    return " and ".join(parts)


def claim(label: str, value: float, at_least: float | None = None, at_most: float | None = None,
          digits: int = 2) -> bool:
    """Print ``label: value (claim >= at_least: ok|FAIL)`` with ``value`` rounded; return whether it holds.

    Rounded on purpose: the printed line is compared across machines (nbval). The claim is also kept
    (``name``, ``value``, ``shown`` as printed, ``at_least``, ``at_most``, ``holds``) until the next
    ``save_figure`` writes it into the figure's record. Without a bound it is an observation: printed
    without a verdict, recorded as holding. A NaN value never holds a bound.
    """
    value = float(value)
    ok = not math.isnan(value)
    if at_least is not None:
        ok &= value >= at_least
    if at_most is not None:
        ok &= value <= at_most
    shown = "nan" if math.isnan(value) else f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.00"
    bounds = _bounds(at_least, at_most)
    tail = f" (claim {bounds}: {'ok' if ok else 'FAIL'})" if bounds else ""
    print(f"{label}: {shown}{tail}")
    _PENDING.append({"name": label, "value": value if math.isfinite(value) else None, "shown": shown,
                     "at_least": at_least, "at_most": at_most, "holds": bool(ok)})
    return bool(ok)


def claim_failure(record: dict) -> str | None:
    """``claim 'name' = value does not hold (>= x)`` for a recorded claim that fails, else ``None``."""
    if record.get("holds", True):
        return None
    return (f"claim {record['name']!r} = {record.get('shown', record.get('value'))} does not hold "
            f"({_bounds(record.get('at_least'), record.get('at_most'))})")


def format_interval(estimate, low, high, digits: int = 2) -> str:
    """``estimate [low, high]`` as ``inference.Interval`` prints it (``0.12 [0.03, 0.25]``)."""
    return f"{float(estimate):.{digits}f} [{float(low):.{digits}f}, {float(high):.{digits}f}]"


def signed(x, digits: int = 1) -> str:
    """``x`` rounded to ``digits`` with its sign, never "-0.0" (printed claims must not flip on float noise)."""
    x = float(x)
    return f"{round(x, digits) + 0.0:+.{digits}f}" if math.isfinite(x) else f"{x:+}"


def fixed(x, digits: int = 2) -> str:
    x = float(x)
    return f"{round(x, digits) + 0.0:.{digits}f}" if math.isfinite(x) else str(x)


def format_report(records: pd.DataFrame) -> str:
    """The text ``aep compare`` prints: one paragraph per pair, then the overall line."""
    from ..analysis.comparison_tables import summarize_comparisons  # not at import time: it imports the engine

    if records.empty:
        return "no comparison records"
    table = summarize_comparisons(records)

    def stats(r, name, unit):
        if not r[f"{name}_n"]:
            return None
        return ", ".join(f"{k} {fixed(r[f'{name}_{k}'])}" for k in ("mean", "median", "min", "max")) + unit

    lines = []
    for _, r in table.iterrows():
        overall = r["pair"] == "overall"
        head = (f"overall: {r['n_usable']} usable comparison files, {r['n_skipped'] + r['n_failed']} skipped or failed"
                if overall else f"{r['pair']}: {r['n_usable']} usable, {r['n_skipped']} skipped, {r['n_failed']} failed")
        parts = [head]
        h = stats(r, "h_cross", " bits/token")
        if h:
            parts.append(f"h^(A,B) {h} (n={r['h_cross_n']})")
            parts.append(f"mean z^(A,B) {signed(r['z_cross_mean'], 2)}, |z^(A,B)| <= 2 for "
                         f"{r['n_z_cross_within_2']} of {r['z_cross_n']}")
        else:
            parts.append("h^(A,B) n/a (" + ("no usable record" if r["n_joint"] else "different tokenizers") + ")")
        d = stats(r, "D", " bits/token")
        if d:
            parts.append(f"l^B - h^B {d}; mean z^B {signed(r['z_mean'], 2)}")
        lines.append(("\n" if overall else "") + "; ".join(parts))
        if r["reasons"]:
            lines.append("    " + r["reasons"])
    return "\n".join(lines)
