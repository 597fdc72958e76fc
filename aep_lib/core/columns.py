"""The per-token columns: one schema for every table of one row per token.

A generation's token table (``engine.generate``), a scoring's (``engine.score``), the detectors' tables
(``analysis.detect``) and everything computed from them (run summaries, comparisons, checks of impossible
statistics) take their column names, order and dtypes from ``SCHEMA``. Each column is under one
distribution (``Column.dist``):

- ``raw``: the model's next-token distribution ``p`` (suffix ``_raw``);
- ``samp``: the sampling distribution ``q``, ``p`` after the decoding warps (suffix ``_samp``);
- ``cross``: a reference's ``q_A`` against a scorer's ``p_B`` (or ``q_B``) on one shared vocabulary;
- ``none``: where the token is and what it is (``position``, ``token_id``, ``token_text``, ``ctx_len``).

A statistic column names the key of the ``core.stats`` result that fills it (``Column.stat``):
``token_stats`` under ``raw`` and ``samp``, ``cross_stats`` under ``cross``. Adding a statistic is one
``Column`` here plus its formula in ``core.stats``: the decoders, the scorer and the checks of
impossible statistics take it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW, SAMP, CROSS, NONE = "raw", "samp", "cross", "none"
DISTRIBUTIONS = (SAMP, RAW)  # the two distributions of a run's summary, in the order its columns are written
BITS = "bits"
TYPICALITY = ("surprisal", "entropy", "varentropy")  # the statistics behind l, h, sigma and z (docs/science.md)
RANK_STATS = ("rank", "greedy")  # what ``stats.token_stats`` computes only with ``with_rank``


@dataclass(frozen=True)
class Column:
    """One per-token column: its ``name``, the ``dtype`` pandas reports for it as written (``str``: text,
    ``object``: one list per token), the distribution it is under (``dist``), what it means and its
    ``unit``, the key of the ``core.stats`` result that fills it (``stat``; None for what is not computed
    from a distribution), and whether a healthy model always gives a finite value (``finite``: an entropy
    or varentropy of a distribution over a finite vocabulary)."""

    name: str
    dtype: str
    dist: str
    meaning: str
    unit: str
    stat: str | None = None
    finite: bool = False


SCHEMA: tuple[Column, ...] = (
    Column("position", "int64", NONE, "index of the token among the scored (generated) tokens, 0 = first", "tokens"),
    Column("token_id", "int64", NONE, "the token's id in the model's vocabulary", "token id"),
    Column("token_text", "str", NONE, "the token decoded on its own", "text"),
    Column("ctx_len", "int64", NONE, "tokens the model conditioned on when predicting this one", "tokens"),
    Column("surprisal_raw", "float64", RAW, "surprisal s_t = -log2 p(x_t); +inf outside the support", BITS,
           stat="surprisal"),
    Column("entropy_raw", "float64", RAW, "entropy H_t of p", BITS, stat="entropy", finite=True),
    Column("varentropy_raw", "float64", RAW, "varentropy V_t = Var_p[log2 p]", BITS, stat="varentropy", finite=True),
    Column("rank_raw", "int64", RAW, "rank r_t of the token under p, 1 = the most probable", "rank", stat="rank"),
    Column("greedy_id", "int64", RAW, "the most probable token g_t = argmax p", "token id", stat="greedy"),
    Column("surprisal_samp", "float64", SAMP, "surprisal -log2 q(x_t); +inf for a token the warps exclude", BITS,
           stat="surprisal"),
    Column("entropy_samp", "float64", SAMP, "entropy of q", BITS, stat="entropy", finite=True),
    Column("varentropy_samp", "float64", SAMP, "varentropy Var_q[log2 q]", BITS, stat="varentropy", finite=True),
    Column("cross_entropy", "float64", CROSS, "cross-entropy c_t = -sum q_A log2 p_B; +inf where q_A has mass "
           "that p_B excludes", BITS, stat="cross_entropy"),
    Column("cross_varentropy", "float64", CROSS, "cross-varentropy W_t = Var_qA[log2 p_B]; +inf as c_t", BITS,
           stat="cross_varentropy"),
    Column("entropy_ref", "float64", CROSS, "entropy H^A_t of the reference's q_A", BITS, stat="entropy_ref",
           finite=True),
    Column("kl", "float64", CROSS, "KL_t = KL(q_A || p_B) = c_t - H^A_t", BITS, stat="kl"),
    Column("topk_ids", "object", RAW, "ids of the k most probable tokens under p (generate's record_topk)",
           "token ids"),
    Column("topk_probs", "object", RAW, "their probabilities under p (generate's record_topk)", "probability"),
    Column("window", "int64", NONE, "the window of a fixed number of tokens the token is in, 0 = first", "windows"),
)
BY_NAME: dict[str, Column] = {c.name: c for c in SCHEMA}


def statistic_columns(dist: str) -> list[str]:
    """The names of the statistic columns under ``dist`` (``raw``, ``samp`` or ``cross``), in schema order."""
    return [c.name for c in SCHEMA if c.dist == dist and c.stat is not None]


def from_stats(stats: dict, dist: str) -> dict:
    """The statistic columns under ``dist`` filled from a ``core.stats`` result (``token_stats`` for ``raw``
    and ``samp``, ``cross_stats`` for ``cross``): ``{name: stats[stat]}`` in schema order."""
    return {c.name: stats[c.stat] for c in SCHEMA if c.dist == dist and c.stat is not None}


def needs_rank(dist: str) -> bool:
    """Whether ``stats.token_stats`` must compute the rank and the greedy token for the columns under ``dist``."""
    return any(c.stat in RANK_STATS for c in SCHEMA if c.dist == dist)


def column(stat: str, dist: str) -> str:
    """The name of the column of statistic ``stat`` under ``dist`` (``column("rank", "raw") == "rank_raw"``)."""
    for c in SCHEMA:
        if c.stat == stat and c.dist == dist:
            return c.name
    raise KeyError(f"no column of statistic {stat!r} under {dist!r}")


def typicality_columns(dist: str, cross: bool = False) -> tuple[str, str, str]:
    """The ``(surprisal, entropy, varentropy)`` columns whose running means give ``l, h, sigma, z`` under
    ``dist`` (``raw`` or ``samp``); with ``cross``, the surprisal under ``dist`` with the cross-entropy and
    cross-varentropy in place of the entropy and varentropy (``h^(A,B)``, ``z^(A,B)``)."""
    if cross:
        return column("surprisal", dist), column("cross_entropy", CROSS), column("cross_varentropy", CROSS)
    s, h, v = (column(stat, dist) for stat in TYPICALITY)
    return s, h, v


def generated_columns() -> list[str]:
    """The columns of a generated token table (``generate``; ``tokens.parquet`` of a generation run after
    the store's ``run_id``), in order: where and what the token is, the statistics under ``p``, under ``q``."""
    return ["position", "token_id", "token_text", "ctx_len", *statistic_columns(RAW), *statistic_columns(SAMP)]


def scorer_columns(samp: bool = False, cross: bool = False, text: bool = False) -> list[str]:
    """The columns a scorer writes, in order: ``position``, the statistics under ``p``, with ``samp`` those
    under a sampling ``q``, with ``cross`` those of a reference against the scorer, then ``token_id`` and
    ``ctx_len`` (``score.score_ids``); with ``text``, ``token_text`` third (``score.score_text``)."""
    names = ["position", *statistic_columns(RAW), *(statistic_columns(SAMP) if samp else []),
             *(statistic_columns(CROSS) if cross else []), "token_id", "ctx_len"]
    if text:
        names.insert(2, "token_text")
    return names


def bits_columns() -> list[str]:
    """The statistic columns in bits (surprisals, entropies, varentropies, the cross statistics): a healthy
    model never gives NaN there (``+inf`` marks a token outside a support)."""
    return [c.name for c in SCHEMA if c.unit == BITS]


def finite_columns() -> list[str]:
    """The columns a healthy model always gives finite, non-negative values in (entropies, varentropies)."""
    return [c.name for c in SCHEMA if c.finite]
