"""Training-data inference: over-typicality as a membership score.

Text the model has memorised is *over-typical* for it: each token is more likely than the model's
average token at that position, so ``z`` falls below what the model's own samples give (the
self-generated baseline, ``z ~ N(0, 1)``). Two scores per window of ``window_tokens`` tokens:

- ``over_typicality = -z`` and its place in the self-generated baseline, ``baseline_quantile`` = the
  share of the model's own windows with a ``z`` at most this one (small = more member-like);
- Min-K%++ (``detect.detector_scores``): the mean of the ``k`` lowest standardised log-probabilities,
  and Min-K% for reference.

The windows come from ``comparisons.ensure_text_scores`` (the cross-model issue's corpus scoring, cached in
the store) and the baseline from ``cross.self_baseline_windows`` over stored generations; this module
only adds the scores and their AUROC.

The positive control (``ensure_in_context_scores`` ... ``in_context_auroc``): a passage the model has just
read in its prompt, scored as a second copy (``repeated``) and without the first copy (``unseen``), cached
in the store as scorings with ``source_kind`` ``in_context``; the case where membership is known.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd

from ..core import inference
from ..core.columns import RAW, typicality_columns
from ..core.stats import full_windows, running, summarize
from ..corpora import ExternalText, benchmark_texts
from ..engine.models import ModelPool, load_tokenizer
from ..engine.batch_score import score_text_many
from ..engine.score import context_window, score_text
from ..runs.generations import ENGINE_VERSION, checked_statistics
from ..runs.missing_runs import guarded, write_missing_runs
from ..store.run_store import RunStore, canonical_run_id
from .detect import detector_scores

SCORES = {"over_typicality": "-z (over-typical = member-like)", "min_k_pp": "Min-K%++", "min_k": "Min-K%",
          "log_likelihood": "mean log2 p"}


def window_scores(tokens: pd.DataFrame, window_tokens: int, k: float = 0.2, tokenizer=None) -> pd.DataFrame:
    """Per full window of ``window_tokens`` tokens (``window`` column, else from ``position``): ``z``,
    ``over_typicality``, ``min_k``, ``min_k_pp``, ``log_likelihood``, and ``zlib_ratio`` when a
    ``tokenizer`` can decode ``token_id``."""
    rows = []
    for w, g in full_windows(tokens, window_tokens):
        text = tokenizer.decode(g["token_id"].astype(int).tolist()) if tokenizer is not None else None
        s = detector_scores(g, text, k=k)
        rows.append({"window": w, "n_tokens": len(g), "z": s["z"], "over_typicality": -s["z"],
                     "min_k": s["min_k"], "min_k_pp": s["min_k_pp"], "log_likelihood": s["log_likelihood"],
                     "zlib_ratio": s["zlib_ratio"]})
    return pd.DataFrame(rows)


def text_windows(store, text_runs: pd.DataFrame, window_tokens: int, k: float = 0.2) -> pd.DataFrame:
    """``window_scores`` of every ok external-text run (``comparisons.ensure_text_scores`` rows), with the run's
    ``text_id``, ``group`` and scorer ``model``."""
    frames = []
    for _, run in text_runs[text_runs["status"] == "ok"].iterrows():
        tokens = store.tokens(run["run_id"])
        if tokens.empty:
            continue
        w = window_scores(tokens.sort_values("position"), window_tokens, k, load_tokenizer(str(run["model"])))
        frames.append(w.assign(text_id=run["text_id"], group=run["group"], model=run["model"], run_id=run["run_id"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def generation_windows(store, gen_runs: pd.DataFrame, window_tokens: int, k: float = 0.2) -> pd.DataFrame:
    """``window_scores`` of stored generations under their own model's raw ``p`` (the self-generated
    baseline; group "self")."""
    frames = []
    ok = gen_runs[gen_runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    tokens = store.tokens(ok["run_id"].tolist())
    for run_id, g in tokens.groupby("run_id", sort=False):
        model = ok.loc[ok["run_id"] == run_id, "model"].iloc[0]
        w = window_scores(g.sort_values("position"), window_tokens, k, load_tokenizer(str(model)))
        frames.append(w.assign(text_id=run_id, group="self", model=model, run_id=run_id))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def baseline_quantile(z, baseline_z) -> np.ndarray:
    """Share of self-generated baseline windows with ``z`` at most each given ``z`` (NaN-safe)."""
    b = np.sort(np.asarray(baseline_z, dtype=float)[~np.isnan(np.asarray(baseline_z, dtype=float))])
    z = np.asarray(z, dtype=float)
    if not len(b):
        return np.full(z.shape, np.nan)
    return np.where(np.isnan(z), np.nan, np.searchsorted(b, z, side="right") / len(b))


# --- the positive control: a passage the model has just read (in-context memorisation) -----------------
#
# A passage placed once in the prompt and then scored as the continuation of a second copy: the model can
# copy it (induction heads, Olsson et al., arXiv 2209.11895), so the second copy is text the model
# "knows", the case where the answer is known. Conditions: ``repeated`` (context: passage, separator,
# filler, separator; the filler is left out when it has 0 tokens) and ``unseen`` (the same context without
# the first copy). Source masking scores exactly the second copy's characters.

IN_CONTEXT_VERSION = 1  # bump when a change alters what a stored in-context scoring contains
IN_CONTEXT_LABEL = "ctx"  # folder labels of in-context scorings ("ctx-...")
CONDITIONS = ("repeated", "unseen")


def token_prefix(tokenizer, text: str, n_tokens: int) -> str:
    """The characters of ``text`` up to the end of its ``n_tokens``-th token under ``tokenizer`` (special
    tokens not counted; an exact prefix of ``text``); the whole text when it has no more tokens."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be at least 1, got {n_tokens}")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return text if n_tokens >= len(offsets) else text[: offsets[n_tokens - 1][1]]


def joined_texts(items: list[ExternalText], n: int, min_chars: int, separator: str = "\n\n") -> list[ExternalText]:
    """Up to ``n`` passages of at least ``min_chars`` characters, each joining consecutive ``items`` with
    ``separator`` (short texts, such as the ~900-character XSum articles, make longer passages); the ids
    join as ``xsum-0+xsum-1``. Fewer when the items run out."""
    out, parts = [], []
    for item in items:
        parts.append(item)
        if sum(len(p.text) for p in parts) + len(separator) * (len(parts) - 1) >= min_chars:
            out.append(ExternalText("+".join(p.text_id for p in parts), parts[0].group,
                                    separator.join(p.text for p in parts), parts[0].source))
            parts = []
            if len(out) == n:
                break
    return out


CHARS_PER_TOKEN = 6  # more characters than a token of English prose holds (about 4-5 here): a safe bound


def in_context_passages(relative: str, n: int, passage_tokens: int, prefix: str | None = None) -> list[ExternalText]:
    """``n`` human passages of at least ``passage_tokens`` tokens from the ``original`` texts of a
    fast-detect-gpt ``*.raw_data.json`` file (``corpora.benchmark_texts``): consecutive texts joined by a
    paragraph break (``joined_texts``) until each holds ``CHARS_PER_TOKEN · passage_tokens`` characters."""
    items = benchmark_texts(relative, "news", 100_000, prefix=prefix)
    return joined_texts(items, n, CHARS_PER_TOKEN * passage_tokens)


def in_context_prompt(passage: str, filler: str, condition: str, separator: str = "\n\n") -> str:
    """The context before the scored copy: ``repeated``: ``passage + separator [+ filler + separator]``;
    ``unseen``: ``[filler + separator]`` (empty without filler)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    parts = ([passage] if condition == "repeated" else []) + ([filler] if filler else [])
    return "".join(p + separator for p in parts)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def in_context_spec(item: ExternalText, scorer: str, condition: str, passage_tokens: int, filler_tokens: int,
                    filler_sha256: str, separator: str, dtype: str) -> dict:
    """The canonical parameters of one in-context scoring, its run id and folder label."""
    params = {"kind": "score", "engine": ENGINE_VERSION, "in_context": IN_CONTEXT_VERSION,
              "source_kind": "in_context", "text_sha256": _sha(item.text), "passage_tokens": int(passage_tokens),
              "filler_sha256": filler_sha256, "filler_tokens": int(filler_tokens), "condition": condition,
              "separator": separator, "scorer": scorer, "dtype": dtype}
    return {"run_id": canonical_run_id(params), "kind": "score", "model": scorer, "prompt_id": condition,
            "label": f"{IN_CONTEXT_LABEL}-{item.text_id}-n{passage_tokens}-f{filler_tokens}",
            "source_kind": "in_context", "text_id": item.text_id, "group": item.group, "condition": condition,
            "passage_tokens": int(passage_tokens), "filler_tokens": int(filler_tokens), "scorer": scorer,
            "dtype": dtype, "params_json": json.dumps(params, sort_keys=True)}


def in_context_text(tokenizer, text: str, filler_text: str, condition: str, passage_tokens: int,
                    filler_tokens: int, separator: str = "\n\n") -> tuple[str, str]:
    """``(passage, prompt)``: the first ``passage_tokens`` tokens of ``text`` and the context of ``condition``
    before its scored copy (``in_context_prompt``; the filler the first ``filler_tokens`` tokens of ``filler_text``)."""
    passage = token_prefix(tokenizer, text, passage_tokens)
    filler = token_prefix(tokenizer, filler_text, filler_tokens) if filler_tokens else ""
    return passage, in_context_prompt(passage, filler, condition, separator)


def in_context_result(model, scored) -> tuple[dict, pd.DataFrame]:
    """``score_in_context``'s ``(fields, tokens)`` from the ``ScoredText`` of the passage's second copy."""
    tokens = checked_statistics(scored.tokens, sampled_from_q=False)
    s = summarize(*(tokens[c].to_numpy() for c in typicality_columns(RAW)))
    fields = {k: s[k] for k in ("l", "h", "D", "sigma", "z")} | {
        "n_tokens": len(tokens), "rank1_share": float((tokens["rank_raw"] == 1).mean()),
        "context_tokens": int(scored.first_scored), "context_window": context_window(model),
        "bits_per_byte": scored.bits_per_byte}
    return fields, tokens


def score_in_context(model, tokenizer, text: str, filler_text: str, condition: str, passage_tokens: int,
                     filler_tokens: int, separator: str = "\n\n") -> tuple[dict, pd.DataFrame]:
    """Score the first ``passage_tokens`` tokens of ``text`` under the raw ``p`` after the context of
    ``condition`` (``in_context_text``).

    Returns ``(fields, tokens)``: ``tokens`` one row per scored token of the second copy (``score_text``
    columns); ``fields`` its final ``l, h, D, sigma, z`` (bits), ``rank1_share`` (share of tokens that were
    the model's greedy choice), ``context_tokens`` (tokens before the scored copy) and the model's
    ``context_window``. A context longer than the window raises ``ScoringError``: the first copy must be seen.
    """
    passage, prompt = in_context_text(tokenizer, text, filler_text, condition, passage_tokens, filler_tokens,
                                      separator)
    return in_context_result(model, score_text(model, tokenizer, passage, prompt=prompt))


def ensure_in_context_scores(store: RunStore, scorer: str, items: list[ExternalText], filler_text: str,
                             passage_tokens: int, filler_tokens, separator: str = "\n\n",
                             pool: ModelPool | None = None, device: str = "auto", dtype: str = "auto") -> pd.DataFrame:
    """Every (text, filler length, condition) scored under ``scorer`` (``score_in_context``; the passages of a
    group scored together), cached in the store as kind ``score`` runs with ``source_kind`` ``in_context``;
    their run rows. A scoring that raises is stored as failed with the reason (a rerun retries it), and the
    others go on."""
    pool = pool or ModelPool(device, dtype)
    dtype_name, filler_sha = pool.dtype_name(scorer), _sha(filler_text)

    def scored(work):
        item, cond, f = work
        model, tokenizer = pool.model(scorer)
        return score_in_context(model, tokenizer, item.text, filler_text, cond, passage_tokens, f, separator)

    def scored_many(works):
        model, tokenizer = pool.model(scorer)
        texts = [in_context_text(tokenizer, item.text, filler_text, cond, passage_tokens, f, separator)
                 for item, cond, f in works]
        return [guarded(in_context_result, model, s) for s in score_text_many(model, tokenizer, texts)]

    specs = [(in_context_spec(item, scorer, cond, passage_tokens, int(f), filler_sha, separator, dtype_name),
              (item, cond, int(f)))
             for item in items for f in filler_tokens for cond in CONDITIONS]
    return write_missing_runs(store, specs, scored, scored_many)


IN_CONTEXT_META = ["run_id", "model", "text_id", "condition", "filler_tokens", "context_tokens", "n_tokens"]
IN_CONTEXT_COUNTS = ["filler_tokens", "context_tokens", "n_tokens"]


def first_crossing(z_n, level: float = -2.0) -> float:
    """The first length ``n`` (1-based) at which a running ``z_n`` is at or below ``level``; NaN if never."""
    hits = np.flatnonzero(np.asarray(z_n, dtype=float) <= level)
    return float(hits[0] + 1) if len(hits) else math.nan


def in_context_running(store: RunStore, runs: pd.DataFrame, level: float = -2.0):
    """``(running, finals)`` of the ok in-context runs: ``running`` one row per run and length ``n`` (the
    first ``n`` tokens of the second copy) with ``l_n, h_n, D_n, sigma_n, z_n`` under the raw ``p``;
    ``finals`` one row per run with the final ``l, h, D, z``, ``rank1_share``, ``sd_token`` (``sqrt`` of the
    mean varentropy, bits: ``z = D · sqrt(n) / sd_token``), ``over_typicality`` (``-z``), ``log_likelihood``
    (``-l``, bits/token) and ``n_detect`` (``first_crossing`` of ``level``)."""
    # counts as ints whatever else the store holds (other kinds of runs lack these columns: NaN made them float)
    ok = runs[runs["status"] == "ok"].astype({c: "int64" for c in IN_CONTEXT_COUNTS})
    cols = typicality_columns(RAW)
    tokens = store.tokens(ok["run_id"].tolist(), columns=["run_id", "position", *cols])
    frames, detect = [], {}
    for run_id, g in tokens.groupby("run_id", sort=False):
        r = pd.DataFrame(running(*(g[c].to_numpy() for c in cols)))
        detect[run_id] = first_crossing(r["z_n"], level)
        frames.append(r.assign(run_id=run_id))
    run_cols = ["run_id", "n", "l_n", "h_n", "D_n", "sigma_n", "z_n"]
    running_ = pd.concat(frames, ignore_index=True)[run_cols] if frames else pd.DataFrame(columns=run_cols)
    meta = ok[IN_CONTEXT_META]
    finals = ok[IN_CONTEXT_META + ["l", "h", "D", "z", "rank1_share"]].assign(
        sd_token=np.sqrt(ok["sigma"].astype(float) ** 2 * ok["n_tokens"].astype(float)),
        over_typicality=lambda d: -d["z"], log_likelihood=lambda d: -d["l"], n_detect=ok["run_id"].map(detect))
    return running_.merge(meta, on="run_id", how="left"), finals.reset_index(drop=True)


def in_context_summary(finals: pd.DataFrame, by=("model", "condition", "filler_tokens"), level: float = -2.0):
    """Per group of ``by`` (in order of appearance): ``n_runs``, mean and sd of the final ``z``, the share of
    runs with ``z <= level``, mean ``l, h, D`` (bits/token), ``sd_token`` (bits), ``rank1_share``,
    ``context_tokens`` and the median ``n_detect`` (over the runs that cross ``level``)."""
    by = list(by)
    rows = []
    for key, g in finals.groupby(by, sort=False):
        z = g["z"].to_numpy(dtype=float)
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,))) | {
            "n_runs": len(g), "z": float(np.nanmean(z)), "z_sd": float(np.nanstd(z, ddof=1)) if len(g) > 1 else math.nan,
            "share_below": float(np.mean(z <= level)), "l": g["l"].mean(), "h": g["h"].mean(), "D": g["D"].mean(),
            "sd_token": g["sd_token"].mean(), "rank1_share": g["rank1_share"].mean(),
            "context_tokens": g["context_tokens"].mean(),
            "n_detect": float(g["n_detect"].median()) if g["n_detect"].notna().any() else math.nan})
    return pd.DataFrame(rows)


def in_context_auroc(finals: pd.DataFrame, scores=("over_typicality", "log_likelihood"), n_resamples: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Per model and score: the AUROC of repeated (positives) against unseen passages (negatives), higher
    score = member-like (``inference.metric_ci``: bootstrap CI, each class resampled)."""
    rows = []
    for model, g in finals.groupby("model", sort=False):
        pos, neg = g[g["condition"] == "repeated"], g[g["condition"] == "unseen"]
        for score in scores:
            ci = inference.metric_ci(neg[score], pos[score], "auroc", n_resamples=n_resamples, seed=seed)
            rows.append({"model": model, "score": score, "auroc": ci.estimate, "low": ci.low, "high": ci.high,
                         "n_repeated": len(pos), "n_unseen": len(neg)})
    return pd.DataFrame(rows, columns=["model", "score", "auroc", "low", "high", "n_repeated", "n_unseen"])


def in_context_curves(running: pd.DataFrame, finals: pd.DataFrame) -> pd.DataFrame:
    """The mean running ``z_n`` over passages per model, condition, filler length and ``n``, up to the
    shortest copy of the model (every passage counts at every ``n``): ``model, condition, filler_tokens,
    n, z_n, n_runs``."""
    shortest = finals.groupby("model")["n_tokens"].min()
    df = running[running["n"] <= running["model"].map(shortest)]
    out = df.groupby(["model", "condition", "filler_tokens", "n"], sort=False)["z_n"].agg(["mean", "size"])
    return out.reset_index().rename(columns={"mean": "z_n", "size": "n_runs"})
