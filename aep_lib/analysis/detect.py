"""Machine-text detectors: one scoring pass per text, one row of scores per text.

Every detector is a function of one per-token table (the ``_raw`` statistics of a scoring model,
docs/science.md), plus, for the cross criteria, the cross-entropy columns of a reference model on the
same vocabulary, and, for the zlib ratio, the scored characters. Scores are in bits.

| detector | value (n scored tokens) | higher means |
| --- | --- | --- |
| ``z`` | typicality ``(l - h) / sigma`` under the scorer's ``p`` | human (−) |
| ``fast_detectgpt`` | analytic Fast-DetectGPT ``(h^(A,B) - l) / (sqrt(sum W_t) / n)`` | machine (+) |
| ``binoculars`` | ``l^B / h^(A,B)`` | human (−) |
| ``log_likelihood`` | ``-l`` (mean ``log2 p(x_t)``) | machine (+) |
| ``log_rank`` | mean ``log2 r_t`` | human (−) |
| ``entropy`` | ``h`` (mean ``H_t``), oriented as in Fast-DetectGPT's baselines | machine (+) |
| ``gltr_top10/100/1000`` | share of tokens of rank ``<= 10 / 100 / 1000`` (GLTR's buckets, cumulative) | machine (+) |
| ``min_k`` | mean ``log2 p`` of the ``k`` share of least likely tokens (Min-K%) | machine (+) |
| ``min_k_pp`` | mean of the ``k`` share lowest ``(log p - E_p log p) / sd_p(log p) = -(s_t - H_t)/sqrt(V_t)`` (Min-K%++) | machine (+) |
| ``zlib_ratio`` | ``sum s_t`` / zlib bits of the scored UTF-8 text | human (−) |
| ``zlib_bpb`` | zlib bits per UTF-8 byte of the scored text (no model: a data-set baseline) | human (−) |

The reference ``A`` of the cross criteria is the raw ``p_A`` of a named model on the scorer's vocabulary.
With ``A = B`` (reference = scorer, the white-box case and the only one on CPU, where the two embedded
models have different vocabularies) ``c_t = H_t`` and ``W_t = V_t`` exactly, so ``fast_detectgpt = -z``
and ``binoculars = l / h``: no second pass is needed and none is made.

Benchmarks (``load_benchmark``): the fast-detect-gpt ``*.raw_data.json`` pairs (human ``original`` vs
machine ``sampled``, which repeats the opening of the original): both texts are scored only after
their shared prefix (cut back to a word boundary), which is fed as context; and the Binoculars PubMed
file (human ``article`` vs Falcon-7B's continuation without its prompt): both scored from their start.
Both texts of a pair are truncated to the same token budget (``max_tokens``); ``matched_length_scores``
goes further and cuts both texts of each pair to the same number of scored tokens, so that an
evaluation measures the detector rather than a length difference between the two classes.

Binoculars: the reference code averages the cross-entropy over one more position than the
log-perplexity (the one whose prediction lies past the end of the text); here both averages run over
the same scored positions, which is the consistent choice, so the values differ from the reference
code's by that one position and agree otherwise to float error (as do Fast-DetectGPT and Min-K%++).

Which direction means "machine", and the unit of each score, are in ``DETECTORS`` (``Detector.direction``,
``Detector.unit``); decisions with stated error rates are made by ``aep_lib.analysis.calibration``.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core.columns import CROSS, RAW, column, typicality_columns
from ..core.inference import MIN_TOKENS_CLT, metric_ci, z_pvalues
from ..core.sampling import eos_ids
from ..core.stats import standardise
from ..corpora import load_benchmark
from ..engine.models import cached_model, load_tokenizer
from ..engine.batch_score import DEFAULT_TEXTS, check_batch_size, score_many
from ..engine.score import check_same_vocabulary, vocabulary_digest
from ..engine.spans import TokenSpan, tokenize_span
from ..store.text_cache import ScoredTextCache, text_key


@dataclass(frozen=True)
class Detector:
    name: str
    direction: int  # +1: higher = machine-generated; -1: lower = machine-generated
    description: str
    unit: str  # the unit of the raw value

    @property
    def direction_text(self) -> str:
        return "higher = more machine-like" if self.direction > 0 else "lower = more machine-like"


DETECTORS: dict[str, Detector] = {d.name: d for d in [
    Detector("z", -1, "typicality z = (l - h)/sigma under the scorer (white-box); machine text is over-typical",
             "standard errors"),
    Detector("fast_detectgpt", +1, "analytic Fast-DetectGPT (h^(A,B) - l)/sigma^(A,B); with A = B it is -z",
             "standard errors"),
    Detector("binoculars", -1, "Binoculars l^B / h^(A,B); with A = B it is l / h", "ratio of bits/token"),
    Detector("log_likelihood", +1, "mean log2 p(x_t)", "bits/token"),
    Detector("log_rank", -1, "mean log2 rank", "log2 rank/token"),
    Detector("entropy", +1, "mean entropy H_t (orientation of Fast-DetectGPT's baselines)", "bits/token"),
    Detector("gltr_top10", +1, "GLTR: share of tokens of rank <= 10", "share of tokens"),
    Detector("gltr_top100", +1, "GLTR: share of tokens of rank <= 100", "share of tokens"),
    Detector("gltr_top1000", +1, "GLTR: share of tokens of rank <= 1000", "share of tokens"),
    Detector("min_k", +1, "Min-K%: mean log2 p of the k least likely tokens", "bits/token"),
    Detector("min_k_pp", +1, "Min-K%++: mean of the k lowest standardised log-probabilities", "standard deviations"),
    Detector("zlib_ratio", -1, "model bits / zlib bits of the scored text", "ratio of bits"),
    Detector("zlib_bpb", -1, "zlib bits per UTF-8 byte of the scored text, no model: what the data alone separate",
             "bits/byte"),
]}  # fmt: skip

# what the detectors read of a scoring (core.columns): the scorer's s_t, H_t, V_t and r_t under its raw p,
# and the c_t and W_t of a reference against it
TOKEN_COLUMNS = ["position", "token_id", *typicality_columns(RAW), column("rank", RAW)]
CROSS_COLUMNS = [column("cross_entropy", CROSS), column("cross_varentropy", CROSS)]


# ---------------------------------------------------------------------------------------------------
# the detectors, from one per-token table


def _lowest_share_mean(values: np.ndarray, k: float) -> float:
    """Mean of the ``max(1, int(k * n))`` smallest of ``values`` (NaN for no values)."""
    v = np.sort(values)
    if not len(v):
        return math.nan
    m = max(1, int(k * len(v)))
    return float(v[:m].mean())


def zlib_bits(text: str) -> int:
    """Bits of the zlib (level 9) compression of ``text``'s UTF-8 bytes."""
    return 8 * len(zlib.compress(text.encode("utf-8"), 9))


def detector_scores(tokens: pd.DataFrame, text: str | None = None, k: float = 0.2) -> dict:
    """Every detector of ``DETECTORS`` for one text, from its per-token table.

    ``tokens``: ``surprisal_raw``, ``entropy_raw``, ``varentropy_raw``, ``rank_raw`` (bits); optional
    ``cross_entropy``/``cross_varentropy`` of a reference (else the reference is the scorer itself).
    ``text``: the scored characters (for ``zlib_ratio``; NaN without). ``k``: the Min-K% share.
    Also returns ``n_tokens``, ``l``, ``h``, ``sigma`` and the z-test p-values ``p_over``/``p_under``.
    """
    if not 0 < k <= 1:
        raise ValueError(f"k (the Min-K% share) must be in (0, 1], got {k}")
    s, ent, var = (tokens[c].to_numpy(dtype=float) for c in typicality_columns(RAW))
    rank = tokens[column("rank", RAW)].to_numpy(dtype=float)
    n = len(s)
    nan = math.nan
    if n == 0:
        return {"n_tokens": 0} | {name: nan for name in DETECTORS}
    cross = all(c in tokens and tokens[c].notna().all() for c in CROSS_COLUMNS)
    c, w = (tokens[col].to_numpy(dtype=float) for col in CROSS_COLUMNS) if cross else (ent, var)
    l, h, hc = s.mean(), ent.mean(), c.mean()
    sigma, sigma_c = math.sqrt(var.sum()) / n, math.sqrt(w.sum()) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (l - h) / sigma if sigma > 0 else nan
        fdg = (hc - l) / sigma_c if sigma_c > 0 else nan
        std_lp = -standardise(s, ent, var)
    std_lp = std_lp[~np.isnan(std_lp)]
    p = z_pvalues(z)
    return {
        "n_tokens": n, "l": float(l), "h": float(h), "sigma": float(sigma), "h_cross": float(hc),
        "cross_reference": bool(cross),
        "z": float(z), "p_over": p["p_over"], "p_under": p["p_under"],
        "fast_detectgpt": float(fdg),
        "binoculars": float(l / hc) if hc > 0 else nan,
        "log_likelihood": float(-l),
        "log_rank": float(np.log2(rank).mean()),
        "entropy": float(h),
        "gltr_top10": float((rank <= 10).mean()),
        "gltr_top100": float((rank <= 100).mean()),
        "gltr_top1000": float((rank <= 1000).mean()),
        "min_k": _lowest_share_mean(-s, k),
        "min_k_pp": _lowest_share_mean(std_lp, k),
        "zlib_ratio": float(s.sum() / zlib_bits(text)) if text else nan,
        "zlib_bpb": zlib_bits(text) / len(text.encode("utf-8")) if text else nan,
    }  # fmt: skip


def prefix_scores(tokens: pd.DataFrame, span: TokenSpan, n: int, k: float = 0.2) -> dict:
    """``detector_scores`` of the first ``n`` scored tokens of a text (``tokens``: its per-token table,
    ``span``: its ``spans.tokenize_span``, one row per scored token): what scoring the text cut to ``n``
    tokens gives, since a causal model's statistics at a position do not depend on later tokens. The
    zlib ratio uses the characters of those ``n`` tokens."""
    total = len(tokens)
    if len(span.char_end) != total:
        raise ValueError(f"the span has {len(span.char_end)} scored tokens, the table {total}: not the same text")
    n = max(0, min(int(n), total))
    if n == 0:
        return detector_scores(tokens.iloc[:0], "", k=k)
    cut = int(span.char_end[total - 1] - span.char_end[n - 1])  # characters after the n-th token
    text = span.scored_text[: len(span.scored_text) - cut]
    return detector_scores(tokens.iloc[:n], text, k=k)


def machine_scores(scores: pd.DataFrame, detectors=None) -> pd.DataFrame:
    """The detector columns oriented so that *higher = machine* (``direction * value``)."""
    names = [d for d in (detectors or DETECTORS) if d in scores]
    return pd.DataFrame({d: DETECTORS[d].direction * scores[d].astype(float) for d in names}, index=scores.index)


# ---------------------------------------------------------------------------------------------------
# preparing and scoring texts


def score_prepared(model, tokenizer, prep: TokenSpan, reference=None, chunk_size: int | None = None,
                   stride: int | None = None) -> pd.DataFrame:
    """The per-token table of a tokenized text (``spans.tokenize_span``) (``TOKEN_COLUMNS``; ``CROSS_COLUMNS`` with a distinct
    reference model on the same vocabulary). A reference that is the scorer itself (or "self") adds
    nothing: its cross statistics equal the scorer's own entropy and varentropy. ``stride``: the
    sliding-window step (tokens) for a text longer than the model's context window."""
    return score_prepared_many(model, tokenizer, [prep], reference, stride, batch_size=1, chunk_size=chunk_size)[0]


def score_prepared_many(model, tokenizer, preps: list[TokenSpan], reference=None, stride: int | None = None,
                        batch_size: int | None = None, chunk_size: int | None = None) -> list[pd.DataFrame]:
    """``score_prepared`` of every tokenized text of ``preps``, in order, scored in batches of at most
    ``batch_size`` texts (``engine.batch_score``; None: as many as memory allows, 1: one at a time)."""
    if reference is not None and (reference is model or reference == "self"):
        reference = None
    frames = score_many(model, [(p.ids, p.first) for p in preps], batch_size=batch_size,
                        eos_token_ids=eos_ids(tokenizer, model), reference=reference, stride=stride,
                        chunk_size=chunk_size)
    keep = TOKEN_COLUMNS + (CROSS_COLUMNS if reference is not None else [])
    return [df[[c for c in keep if c in df]] for df in frames]


def score_texts(
    model: str,
    texts: pd.DataFrame,
    reference: str | None = None,
    max_tokens: int | None = 256,
    k: float = 0.2,
    cache: ScoredTextCache | str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str = "auto",
    flush_every: int = 25,
    progress: bool = False,
    return_tokens: bool = False,
    stride: int | None = None,
    batch_size: int | None = None,
):
    """One row of detector scores per row of ``texts`` (columns ``text`` and optional ``prompt``; every
    other column is kept), scored by ``model`` (a name for ``models.cached_model``) with an optional
    ``reference`` model name on the same vocabulary. The model is loaded only when a text is missing
    from ``cache``. With ``return_tokens`` also ``{row index: per-token table}``. ``stride``: the
    sliding-window step for texts longer than the context window (part of the cache key when set).
    ``batch_size``: texts scored together at most (``engine.batch_score``; None: as many as memory allows,
    1: one at a time); the tables are those of one at a time within float rounding (1e-4 bits).
    """
    check_batch_size(batch_size)
    cache = cache if isinstance(cache, ScoredTextCache) else ScoredTextCache(cache)
    ref_name = None if reference in (None, "", "self", model) else reference
    rows, token_tables = [], {}

    def get(name):
        return cached_model(name, device, dtype)

    if ref_name is not None:  # fail early on a vocabulary mismatch
        check_same_vocabulary(get(model)[0], get(ref_name)[0], get(model)[1], get(ref_name)[1])
    items = list(texts.iterrows())
    keys = {}
    for idx, row in items:
        prompt = str(row.get("prompt", "") or "")
        keys[idx] = text_key(model, ref_name, max_tokens, prompt, str(row["text"]), *([stride] if stride else []))
    missing = [(idx, row) for idx, row in items if keys[idx] not in cache]
    missing = list({keys[idx]: (idx, row) for idx, row in missing}.values())  # a text twice is scored once
    step = max(1, flush_every, batch_size or DEFAULT_TEXTS)  # texts scored (in batches) between two flushes
    with tqdm(total=len(missing), disable=not progress, desc=f"score {model}", unit="text", mininterval=5) as bar:
        for a in range(0, len(missing), step):  # the cache is flushed after every step
            mdl, tok = get(model)
            part = missing[a : a + step]
            preps = [tokenize_span(tok, str(row["text"]), str(row.get("prompt", "") or ""), max_tokens)
                     for _, row in part]
            ref = get(ref_name)[0] if ref_name else None
            frames = score_prepared_many(mdl, tok, preps, reference=ref, stride=stride, batch_size=batch_size)
            for (idx, _), prep, df in zip(part, preps, frames):
                meta = {"scored_text": prep.scored_text, "n_tokens_available": prep.n_tokens_available}
                cache.put(keys[idx], df, meta)
            cache.flush()
            bar.update(len(part))
    for idx, row in items:
        df, meta = cache.tokens[keys[idx]], cache.texts[keys[idx]]
        out = {c: v for c, v in row.items() if c not in ("text", "prompt")}
        out |= {"model": model, "reference": ref_name or model}
        out |= detector_scores(df, meta["scored_text"], k=k)
        out["n_tokens_available"] = int(meta["n_tokens_available"])
        rows.append(out)
        if return_tokens:
            token_tables[idx] = df
    cache.flush()
    scores = pd.DataFrame(rows, index=texts.index)
    return (scores, token_tables) if return_tokens else scores


# ---------------------------------------------------------------------------------------------------
# benchmarks


def reference_for(model: str, reference: str | None) -> str | None:
    """The reference of ``model``'s cross criteria in a benchmark of several scorers: ``reference`` where it shares
    ``model``'s vocabulary (the same token-to-id map), else ``None`` (the scorer itself: the white-box form), so
    that one ``reference`` serves the scorer of its family and leaves the others as they were."""
    if reference in (None, "", model):
        return None
    same = vocabulary_digest(load_tokenizer(model)) == vocabulary_digest(load_tokenizer(reference))
    return reference if same else None


def benchmark_tables(datasets, model: str, n_texts: int = 0, max_tokens: int = 256, k: float = 0.2,
                     reference: str | None = None, cache_dir: str | os.PathLike | None = None,
                     device: str = "auto", dtype: str = "auto", progress: bool = False,
                     labels=("human", "machine")):
    """``(scores, tables, spans)`` of every text of ``datasets`` under one model: the rows of
    ``score_texts`` (index 0..n-1), each text's per-token table and its ``TokenSpan`` by that index
    (for ``prefix_scores``; the spans come from the tokenizer alone, the tables from the cache), and a
    ``text_sha`` column (``text_sha``) to find a text that two sets share. ``labels``: the texts scored."""
    frames, tables = [], {}
    ref = reference_for(model, reference)
    for name in datasets:
        texts = load_benchmark(name, n_texts)
        texts = texts[texts["label"].isin(labels)]
        path = cache_path(cache_dir, model, ref, name, max_tokens) if cache_dir else None
        sc, tok = score_texts(model, texts, reference=ref, max_tokens=max_tokens, k=k, cache=path, device=device,
                              dtype=dtype, progress=progress, return_tokens=True)
        frames.append((texts, sc, tok))
    offset, all_scores, spans = 0, [], {}
    tokenizer = load_tokenizer(model) if frames else None
    for texts, sc, tok in frames:
        for j, idx in enumerate(sc.index):
            tables[offset + j] = tok[idx]
            row = texts.loc[idx]
            spans[offset + j] = tokenize_span(tokenizer, str(row["text"]), str(row.get("prompt", "") or ""), max_tokens)
        sha = [text_sha(p, t) for p, t in zip(texts.loc[sc.index, "prompt"], texts.loc[sc.index, "text"])]
        all_scores.append(sc.assign(text_sha=sha).reset_index(drop=True).set_axis(range(offset, offset + len(sc))))
        offset += len(sc)
    scores = pd.concat(all_scores) if all_scores else pd.DataFrame()
    return scores, tables, spans


def text_sha(prompt: str, text: str) -> str:
    """A short sha256 of a text with its context: equal texts in two data sets have equal ids."""
    return hashlib.sha256(f"{prompt}\0{text}".encode("utf-8")).hexdigest()[:16]


def matched_length_scores(scores: pd.DataFrame, tables: dict, spans: dict, k: float = 0.2,
                          min_tokens: int = 2) -> pd.DataFrame:
    """Detector scores with both texts of each pair cut to the same number of scored tokens.

    ``scores``/``tables``/``spans`` as ``benchmark_tables`` returns them. Per (model, dataset, pair) with a
    human and a machine text, both are scored on their first ``m = min(n_human, n_machine)`` tokens
    (``prefix_scores``); pairs with ``m < min_tokens`` are dropped. The columns of ``scores`` that
    describe the text are kept; ``n_tokens`` is ``m`` and ``n_tokens_full`` the length before matching.
    """
    keep = [c for c in ("dataset", "pair", "label", "is_machine", "model", "reference", "text_sha") if c in scores]
    rows = []
    for _, g in scores.groupby(["model", "dataset", "pair"], sort=False):
        if set(g["label"]) != {"human", "machine"}:
            continue
        m = int(g["n_tokens"].min())
        if m < min_tokens:
            continue
        for idx, row in g.iterrows():
            out = {c: row[c] for c in keep}
            out |= prefix_scores(tables[idx], spans[idx], m, k)
            out["n_tokens_full"] = int(row["n_tokens"])
            rows.append(out)
    return pd.DataFrame(rows)


def cache_path(cache_dir, model: str, reference: str | None, dataset: str, max_tokens: int | None) -> Path:
    """The ``ScoredTextCache`` path of one (scorer, reference, dataset, token budget)."""
    ref = reference if reference not in (None, "", model) else "self"
    return Path(cache_dir) / f"{safe_name(model)}__ref-{safe_name(ref)}__{dataset}__t{max_tokens}"


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in str(name))


# ---------------------------------------------------------------------------------------------------
# evaluation


def evaluate(scores: pd.DataFrame, detectors=None, by=("dataset", "model"), fprs=(0.01, 0.05),
             n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """AUROC and TPR at each FPR in ``fprs`` with 95% bootstrap CIs (texts resampled within each class),
    per group of ``by`` and detector. Scores are oriented by ``DETECTORS[d].direction`` fixed in
    advance (never flipped on the test data), so an AUROC below 0.5 means the detector points the
    wrong way on that data."""
    detectors = [d for d in (detectors or DETECTORS) if d in scores]
    rows = []
    for keys, g in scores.groupby(list(by), sort=False):
        oriented = machine_scores(g, detectors)
        human, machine = g["is_machine"] == 0, g["is_machine"] == 1
        for d in detectors:
            neg, pos = oriented.loc[human, d].to_numpy(), oriented.loc[machine, d].to_numpy()
            a = metric_ci(neg, pos, "auroc", n_resamples=n_resamples, seed=seed)
            row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
            row |= {"detector": d, "n_human": int((~np.isnan(neg)).sum()), "n_machine": int((~np.isnan(pos)).sum()),
                    "auroc": a.estimate, "auroc_low": a.low, "auroc_high": a.high}
            for f in fprs:
                t = metric_ci(neg, pos, "tpr", fpr=f, n_resamples=n_resamples, seed=seed)
                tag = f"tpr_at_{f * 100:g}fpr"
                row |= {tag: t.estimate, f"{tag}_low": t.low, f"{tag}_high": t.high}
            rows.append(row)
    return pd.DataFrame(rows)


def length_summary(scores: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): pairs, median scored tokens of the human and machine texts before matching,
    the share of pairs whose machine text is longer, the median matched length and the share of matched
    pairs whose two texts have equal lengths (1 by construction)."""
    out = []
    for (name, model), g in scores.groupby(["dataset", "model"], sort=False):
        w = g.pivot_table(index="pair", columns="label", values="n_tokens").dropna()
        m = matched[(matched["dataset"] == name) & (matched["model"] == model)]
        mw = m.pivot_table(index="pair", columns="label", values="n_tokens").dropna()
        out.append({"dataset": name, "model": model, "pairs": len(w), "human_tokens": w["human"].median(),
                    "machine_tokens": w["machine"].median(), "machine_longer": (w["machine"] > w["human"]).mean(),
                    "matched_pairs": len(mw), "matched_tokens": mw["human"].median(),
                    "equal_share": (mw["human"] == mw["machine"]).mean() if len(mw) else math.nan})
    return pd.DataFrame(out)


def compare_auroc(unmatched: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """AUROC per (dataset, model, detector) of two ``evaluate`` tables side by side, with the change."""
    keys = ["dataset", "model", "detector"]
    both = unmatched.set_index(keys)[["auroc"]].join(matched.set_index(keys)[["auroc"]], lsuffix="_unmatched",
                                                      rsuffix="_matched")
    return both.assign(change=both["auroc_matched"] - both["auroc_unmatched"])


def typicality_test(scores: dict, model: str, alpha: float = 0.05, min_tokens: int = MIN_TOKENS_CLT) -> dict:
    """The typicality z-test of one text, labelled for what it tests: H0 "this text was sampled from
    ``model``'s raw ``p`` (temperature 1, no truncation)" (docs/science.md). It is the right test for
    *attribution* (did this model, with these settings, write it; see ``aep attribute`` to rank several),
    not for "a human wrote it": human text has no such null, so its level says nothing about the
    false-positive rate on human text (``aep_lib.analysis.calibration`` measures that).

    Returns ``z``, the three p-values, ``typicality`` (typical / over-typical / under-typical /
    undefined at two-sided level ``alpha``), ``clt_ok`` (at least ``min_tokens`` tokens) and ``null``.
    """
    p = z_pvalues(scores["z"])
    if not np.isfinite(scores["z"]):
        typ = "undefined"
    elif p["p_two_sided"] >= alpha:
        typ = "typical"
    else:
        typ = "over-typical" if scores["z"] < 0 else "under-typical"
    return {"z": float(scores["z"]), "typicality": typ, "alpha": alpha, "p_two_sided": p["p_two_sided"],
            "p_over": p["p_over"], "p_under": p["p_under"], "clt_ok": bool(scores["n_tokens"] >= min_tokens),
            "null": f"the text was sampled from {model} at temperature 1 without truncation (its raw p)"}

