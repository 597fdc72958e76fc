"""Machine-text detectors: one scoring pass per text, one row of scores per text.

Every detector is a function of one per-token table (the ``_raw`` statistics of a scoring model,
DESIGN.md §1), plus, for the cross criteria, the cross-entropy columns of a reference model on the
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

The reference ``A`` of the cross criteria is the raw ``p_A`` of a named model on the scorer's vocabulary.
With ``A = B`` (reference = scorer, the white-box case and the only one on CPU, where the two embedded
models have different vocabularies) ``c_t = H_t`` and ``W_t = V_t`` exactly, so ``fast_detectgpt = -z``
and ``binoculars = l / h``: no second pass is needed and none is made.

Benchmarks (``load_benchmark``): the fast-detect-gpt ``*.raw_data.json`` pairs (human ``original`` vs
machine ``sampled``, which repeats the opening of the original): both texts are scored only after
their shared prefix (cut back to a word boundary), which is fed as context; and the Binoculars PubMed
file (human ``article`` vs Falcon-7B's continuation without its prompt): both scored from their start.
Both texts of a pair are truncated to the same token budget (``max_tokens``).
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .corpora import load_benchmark
from .inference import (
    MIN_TOKENS_CLT,
    binomial_ci,
    calibrated_threshold,
    metric_ci,
    rates,
    z_level,
    z_pvalues,
)
from .models import cached_model
from .sampling import eos_ids
from .score import TokenSpan, check_same_vocabulary, score_ids, tokenize_span
from .stats import standardise
from .text_cache import ScoredTextCache, text_key


@dataclass(frozen=True)
class Detector:
    name: str
    direction: int  # +1: higher = machine-generated; -1: lower = machine-generated
    description: str


DETECTORS: dict[str, Detector] = {d.name: d for d in [
    Detector("z", -1, "typicality z = (l - h)/sigma under the scorer (white-box); machine text is over-typical"),
    Detector("fast_detectgpt", +1, "analytic Fast-DetectGPT (h^(A,B) - l)/sigma^(A,B); with A = B it is -z"),
    Detector("binoculars", -1, "Binoculars l^B / h^(A,B); with A = B it is l / h"),
    Detector("log_likelihood", +1, "mean log2 p(x_t)"),
    Detector("log_rank", -1, "mean log2 rank"),
    Detector("entropy", +1, "mean entropy H_t (orientation of Fast-DetectGPT's baselines)"),
    Detector("gltr_top10", +1, "GLTR: share of tokens of rank <= 10"),
    Detector("gltr_top100", +1, "GLTR: share of tokens of rank <= 100"),
    Detector("gltr_top1000", +1, "GLTR: share of tokens of rank <= 1000"),
    Detector("min_k", +1, "Min-K%: mean log2 p of the k least likely tokens"),
    Detector("min_k_pp", +1, "Min-K%++: mean of the k lowest standardised log-probabilities"),
    Detector("zlib_ratio", -1, "model bits / zlib bits of the scored text"),
]}  # fmt: skip

TOKEN_COLUMNS = ["position", "token_id", "surprisal_raw", "entropy_raw", "varentropy_raw", "rank_raw"]
CROSS_COLUMNS = ["cross_entropy", "cross_varentropy"]


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
    s = tokens["surprisal_raw"].to_numpy(dtype=float)
    ent = tokens["entropy_raw"].to_numpy(dtype=float)
    var = tokens["varentropy_raw"].to_numpy(dtype=float)
    rank = tokens["rank_raw"].to_numpy(dtype=float)
    n = len(s)
    nan = math.nan
    if n == 0:
        return {"n_tokens": 0} | {name: nan for name in DETECTORS}
    cross = all(c in tokens and tokens[c].notna().all() for c in CROSS_COLUMNS)
    c = tokens["cross_entropy"].to_numpy(dtype=float) if cross else ent
    w = tokens["cross_varentropy"].to_numpy(dtype=float) if cross else var
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
    }  # fmt: skip


def machine_scores(scores: pd.DataFrame, detectors=None) -> pd.DataFrame:
    """The detector columns oriented so that *higher = machine* (``direction * value``)."""
    names = [d for d in (detectors or DETECTORS) if d in scores]
    return pd.DataFrame({d: DETECTORS[d].direction * scores[d].astype(float) for d in names}, index=scores.index)


# ---------------------------------------------------------------------------------------------------
# preparing and scoring texts


def score_prepared(model, tokenizer, prep: TokenSpan, reference=None, chunk_size: int | None = None) -> pd.DataFrame:
    """The per-token table of a tokenized text (``score.tokenize_span``) (``TOKEN_COLUMNS``; ``CROSS_COLUMNS`` with a distinct
    reference model on the same vocabulary). A reference that is the scorer itself (or "self") adds
    nothing: its cross statistics equal the scorer's own entropy and varentropy."""
    if reference is not None and (reference is model or reference == "self"):
        reference = None
    df = score_ids(model, prep.ids, prep.first, eos_token_ids=eos_ids(tokenizer, model), chunk_size=chunk_size,
                   reference=reference)
    keep = TOKEN_COLUMNS + (CROSS_COLUMNS if reference is not None else [])
    return df[[c for c in keep if c in df]]


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
):
    """One row of detector scores per row of ``texts`` (columns ``text`` and optional ``prompt``; every
    other column is kept), scored by ``model`` (a name for ``models.cached_model``) with an optional
    ``reference`` model name on the same vocabulary. The model is loaded only when a text is missing
    from ``cache``. With ``return_tokens`` also ``{row index: per-token table}``.
    """
    cache = cache if isinstance(cache, ScoredTextCache) else ScoredTextCache(cache)
    ref_name = None if reference in (None, "", "self", model) else reference
    rows, token_tables, since_flush = [], {}, 0

    def get(name):
        return cached_model(name, device, dtype)

    if ref_name is not None:  # fail early on a vocabulary mismatch
        check_same_vocabulary(get(model)[0], get(ref_name)[0], get(model)[1], get(ref_name)[1])
    items = list(texts.iterrows())
    for idx, row in tqdm(items, disable=not progress, desc=f"score {model}", unit="text", mininterval=5):
        prompt = str(row.get("prompt", "") or "")
        key = text_key(model, ref_name, max_tokens, prompt, str(row["text"]))
        if key not in cache:
            mdl, tok = get(model)
            prep = tokenize_span(tok, str(row["text"]), prompt, max_tokens)
            ref = get(ref_name)[0] if ref_name else None
            df = score_prepared(mdl, tok, prep, reference=ref)
            cache.put(key, df, {"scored_text": prep.scored_text, "n_tokens_available": prep.n_tokens_available})
            since_flush += 1
            if since_flush >= flush_every:
                cache.flush()
                since_flush = 0
        df, meta = cache.tokens[key], cache.texts[key]
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


def run_benchmark(datasets, models, n_texts: int = 0, max_tokens: int = 256, k: float = 0.2,
                  reference: str | None = None, cache_dir: str | os.PathLike | None = None,
                  progress: bool = False) -> pd.DataFrame:
    """Detector scores of every text of ``datasets`` under every model (cached per model and dataset
    under ``cache_dir``): one row per (dataset, pair, label, model)."""
    frames = []
    for model in models:
        for name in datasets:
            texts = load_benchmark(name, n_texts)
            ref = reference if reference not in (None, "", model) else None
            path = cache_path(cache_dir, model, ref, name, max_tokens) if cache_dir else None
            frames.append(score_texts(model, texts, reference=ref, max_tokens=max_tokens, k=k, cache=path,
                                      progress=progress))
    return pd.concat(frames, ignore_index=True)


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


def split_pairs(pairs, calib_frac: float = 0.5, seed: int = 0) -> set:
    """The pair ids of the calibration split (a seeded random ``calib_frac`` of the distinct pairs)."""
    ids = np.array(sorted(set(pairs)))
    rng = np.random.default_rng(seed)
    n = int(round(calib_frac * len(ids)))
    return set(rng.choice(ids, size=n, replace=False).tolist()) if n else set()


def threshold_report(scores: pd.DataFrame, detectors=None, alphas=(0.01, 0.05), by=("dataset", "model"),
                     calib_frac: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """Decision thresholds and the error rates they actually give on held-out texts.

    The pairs of each group are split (seeded) into a calibration and a test half. Rules, each at
    every nominal level ``alpha``:

    - ``calibrated``: threshold = the ``1 - alpha`` quantile of the *human calibration* texts' oriented
      scores (every detector); nominal FPR ``alpha``;
    - ``clt``: for the typicality criteria only, "machine" iff ``fast_detectgpt > z_{1-alpha}`` (the
      text is over-typical at level ``alpha``). Its nominal level is a statement about text sampled
      *from the scorer*; on human text the FPR is whatever the data give, hence measured here.

    Returns, per group, detector, rule and alpha: the threshold (oriented scale), the test FPR with its
    Clopper-Pearson 95% CI, and the test TPR.
    """
    detectors = [d for d in (detectors or DETECTORS) if d in scores]
    rows = []
    for keys, g in scores.groupby(list(by), sort=False):
        calib = split_pairs(g["pair"], calib_frac, seed)
        in_cal = g["pair"].isin(calib)
        oriented = machine_scores(g, detectors)
        human, machine = g["is_machine"] == 0, g["is_machine"] == 1
        base = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        for d in detectors:
            neg_cal = oriented.loc[human & in_cal, d].to_numpy()
            neg, pos = oriented.loc[human & ~in_cal, d].to_numpy(), oriented.loc[machine & ~in_cal, d].to_numpy()
            for alpha in alphas:
                rules = [("calibrated", calibrated_threshold(neg_cal, alpha))]
                if d in ("z", "fast_detectgpt"):
                    rules.append(("clt", z_level(alpha)))  # oriented: -z > z_{1-a}  <=>  fast_detectgpt > z_{1-a}
                for rule, t in rules:
                    r = rates(neg, pos, t)
                    lo, hi = binomial_ci(r["false_positives"], r["n_neg"])
                    rows.append(base | {"detector": d, "rule": rule, "alpha": alpha, "threshold": t,
                                        "n_calibration": int((~np.isnan(neg_cal)).sum()), "n_test_human": r["n_neg"],
                                        "n_test_machine": r["n_pos"], "fpr_test": r["fpr"], "fpr_low": lo,
                                        "fpr_high": hi, "tpr_test": r["tpr"]})
    return pd.DataFrame(rows)


def verdict(scores: dict, alpha: float = 0.05, threshold: float | None = None,
            min_tokens: int = MIN_TOKENS_CLT) -> dict:
    """The decision of ``aep detect`` for one text: "machine" iff ``fast_detectgpt > threshold`` (default
    the CLT level ``z_{1-alpha}``: the text is over-typical at level ``alpha``), with the typicality class of
    the two-sided z-test and a warning below ``min_tokens`` tokens."""
    t = z_level(alpha) if threshold is None else float(threshold)
    crit = scores["fast_detectgpt"]
    p = z_pvalues(scores["z"])
    if not np.isfinite(crit):
        call = "undefined"
    else:
        call = "machine" if crit > t else "human"
    typ = ("typical" if p["p_two_sided"] >= alpha else ("over-typical" if scores["z"] < 0 else "under-typical")) \
        if np.isfinite(scores["z"]) else "undefined"
    return {"verdict": call, "criterion": crit, "threshold": t,
            "threshold_source": "CLT z level" if threshold is None else "given", "alpha": alpha,
            "typicality": typ, "p_two_sided": p["p_two_sided"], "p_over": p["p_over"], "p_under": p["p_under"],
            "clt_ok": scores["n_tokens"] >= min_tokens}


# ---------------------------------------------------------------------------------------------------
# plots


