"""The summaries a run row carries, recomputed from its tokens: what ``RunStore.verify`` compares.

A generation's row carries ``l, h, D, sigma, z`` under ``q`` and ``p`` (``l_samp, ..., z_raw``:
``runs.generations.summary_columns``), a comparison record those and the cross view (``h_cross, ...,
z_cross, kl_mean, h_ref``, the ``z_reason_*`` texts: ``core.stats.comparison_summary``), a scoring of an
external text in windows ``n_windows, z_mean, D_mean`` (the mean over its full windows of
``core.stats.window_summaries``). The store sits below ``runs``, so it recomputes them with the functions
of ``core.stats`` that those summaries are made of: ``comparison_summary`` gives every ``<stat>_<dist>``
of ``summary_columns`` with the same ``summarize`` call on the same columns. A stored value that differs
from the recomputed one by more than float rounding (``same_value``) is a problem naming the column.

    problem = summary_problem(run_dir / "run.parquet", row, run_dir / "tokens.parquet")   # None: agree
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ..core.columns import DISTRIBUTIONS, RAW, SAMP, typicality_columns

REL_TOL = 1e-9  # relative difference of a stored and a recomputed summary taken as float rounding
ABS_TOL = 1e-12  # absolute difference (bits, standard errors) taken as float rounding
WINDOW_SUMMARIES = ("n_windows", "z_mean", "D_mean")  # a windowed text scoring's row (needs window_tokens)


def summary_input_columns() -> list[str]:
    """The tokens columns the summaries are computed from (those a run lacks are left out)."""
    cols = [c for dist in DISTRIBUTIONS for c in typicality_columns(dist)]
    cols += list(typicality_columns(SAMP, cross=True)) + ["entropy_ref", "kl", "position", "window"]
    return list(dict.fromkeys(cols))


def recomputed_summaries(tokens: pd.DataFrame, row: dict) -> dict:
    """Every summary ``core.stats`` computes from ``tokens`` (one row per token, in stored order) that a
    run row of this kind may carry: ``comparison_summary`` (a superset of ``summary_columns``) and, when
    ``row`` has a positive int ``window_tokens`` and tokens have the raw columns, ``WINDOW_SUMMARIES``."""
    from ..core.stats import comparison_summary, window_summaries  # torch: only when verifying

    out = comparison_summary(tokens)
    width = row.get("window_tokens")
    if isinstance(width, int) and not isinstance(width, bool) and width > 0 and "position" in tokens \
            and all(c in tokens for c in typicality_columns(RAW)):
        wins = window_summaries(tokens, width)
        out |= {"n_windows": len(wins), "z_mean": float(wins["z"].mean()) if len(wins) else math.nan,
                "D_mean": float(wins["D"].mean()) if len(wins) else math.nan}
    return out


def same_value(stored, recomputed) -> bool:
    """Whether a stored summary is the recomputed one up to float rounding: numbers within ``REL_TOL`` /
    ``ABS_TOL`` (NaN equals NaN and a missing value, an infinity itself), texts equal."""
    if isinstance(recomputed, str) or isinstance(stored, str):
        return stored == recomputed or (not stored and not recomputed)
    if isinstance(stored, bool) or not isinstance(stored, (int, float, type(None))):
        return False
    a = math.nan if stored is None else float(stored)
    b = float(recomputed)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def excerpt(value, n: int = 24) -> str:
    """A short text of a value for a one-line message (at most about ``n`` characters)."""
    text = f"{value:.10g}" if isinstance(value, float) else repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def summary_problem(run_file: Path, row: dict, tokens_file: Path) -> str | None:
    """Why the summaries of an ok run's row disagree with its tokens, in one line naming the first column
    that differs (and how many others), or None: every summary the row carries that ``recomputed_summaries``
    gives agrees (``same_value``). Only the columns the summaries need are read."""
    wanted = set(summary_input_columns())
    pf = pq.ParquetFile(tokens_file)
    tokens = pf.read(columns=[c for c in pf.schema_arrow.names if c in wanted], use_threads=False).to_pandas()
    recomputed = recomputed_summaries(tokens, row)
    bad = [k for k in recomputed if k in row and not same_value(row[k], recomputed[k])]
    if not bad:
        return None
    first = bad[0]
    more = f" (also {', '.join(bad[1:4])}{' ...' if len(bad) > 4 else ''})" if len(bad) > 1 else ""
    return (f"corrupt run file: {run_file}: {first} = {excerpt(row[first])} stored, {excerpt(recomputed[first])} "
            f"recomputed from its tokens{more}: the summary differs from the tokens it was computed from")

