"""Attribution: which of several candidate models (and decoding settings) wrote a text?

A candidate is a ``cross.Variant``: a model and the warps it samples with (``gemma-3-270m@t0.7``). If
the text was sampled from candidate ``m``'s ``q_m``, its typicality ``z_m`` (computed under ``q_m``) is
approximately N(0, 1) (docs/science.md, the AEP); for any other candidate it drifts (under-typical for
another model's text, over-typical for a higher-temperature candidate scoring low-temperature text).
So candidates are ranked by ``|z_m|``, smallest first, which is the ranking by the CLT likelihood
``phi(z_m)``; the confidence of each is the normalised likelihood ``phi(z_m) / sum_j phi(z_j)`` (a
uniform prior; the ``z_j`` are not independent, so read it as a score in [0, 1], and check its
calibration, as ``app_attribution`` does). A candidate whose ``q`` excludes a token of the text
(a top-k / top-p variant) has ``z = +inf`` and confidence 0.

The text is all the evidence: every candidate re-tokenizes ``prompt + text`` with its own tokenizer and
scores exactly the continuation's characters (source masking), even the model that generated it
(whose sampled ids may be a non-canonical tokenization). Candidates that share a model are scored
from one forward pass (the warps are applied to the same logits).

Evaluation (``attribution_table``): every stored generation, cut to its first ``n`` generated tokens
for each length ``n`` (the cut is a character position, so candidates with other tokenizers score the
same characters), and the z of every candidate at each cut, from one pass per (text, model).

Two decision rules (``decide``): ``min_abs_z`` (the typicality rule above) and ``max_likelihood``
(the candidate under whose ``q`` the text has the fewest bits per byte; its confidence is the
posterior ``2^-bits_m / sum_j 2^-bits_j`` under a uniform prior). When the true source is among the
candidates the likelihood rule is the Bayes rule, so it is the stronger one; the typicality rule needs
no comparison between candidates (each ``z`` is a test of one candidate) and can say "none of them".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.columns import TYPICALITY
from ..core.inference import binomial_ci
from ..core.sampling import Sampling, SamplingWarp, Variant, eos_ids, parse_variants
from ..core.stats import token_stats, z_at_cuts
from ..engine.models import ModelPool, load_tokenizer
from ..engine.batch_score import check_batch_size, logit_blocks, plan_batches, run_batch
from ..engine.score import context_window, forward_spans
from ..engine.score_rows import head_matches, stats_row_block
from ..engine.spans import ScoringError, tokenize_span
from ..store.text_cache import ScoredTextCache, text_key

METHODS = ("min_abs_z", "max_likelihood")


def _variants(candidates):
    if isinstance(candidates, str):
        return parse_variants(candidates)
    return [c if isinstance(c, Variant) else Variant.parse(str(c)) for c in candidates]


def score_variants(model, tokenizer, text: str, prompt: str, samplings: list[Sampling], chunk_size: int | None = None,
                   row_block: int | None = None) -> dict[Sampling, pd.DataFrame]:
    """Per-token ``surprisal``, ``entropy``, ``varentropy`` (bits) of ``text`` under each sampling
    distribution ``q = warp(p)`` of one model, from ONE forward pass; plus ``char_end`` (end of the
    token's span in ``text``) and ``n_bytes_to`` (UTF-8 bytes of the scored span up to it, ``spans.span_bytes``)."""
    return score_variants_many(model, tokenizer, [(text, prompt)], samplings, batch_size=1, chunk_size=chunk_size,
                               row_block=row_block)[0]


def variant_frames(span, blocks: dict) -> dict[Sampling, pd.DataFrame]:
    """The tables of ``score_variants`` from each sampling's list of per-block statistics."""
    out = {}
    for s, parts in blocks.items():
        df = pd.DataFrame({k: np.concatenate([b[k] for b in parts]) if parts else np.zeros(0) for k in TYPICALITY})
        df.insert(0, "char_end", span.char_end)
        df.insert(1, "n_bytes_to", span.byte_end)
        out[s] = df
    return out


def warped_stats(warps: dict, logits, targets, row_block: int) -> dict[Sampling, list[dict]]:
    """``token_stats`` (no rank) of ``[rows, vocab]`` logits under each warp, per block of ``row_block`` rows."""
    out = {s: [] for s in warps}
    for a in range(0, logits.shape[0], row_block):
        block, tb = logits[a : a + row_block].float(), targets[a : a + row_block]
        for s, warp in warps.items():
            st = token_stats(warp(block), tb, with_rank=False)
            out[s].append({k: v.cpu().numpy() for k, v in st.items()})
    return out


def score_variants_many(model, tokenizer, texts: list[tuple[str, str]], samplings: list[Sampling],
                        batch_size: int | None = None, chunk_size: int | None = None,
                        row_block: int | None = None) -> list[dict[Sampling, pd.DataFrame]]:
    """``score_variants`` of every ``(text, prompt)`` of ``texts``, in order: texts within the context window
    in batches of at most ``batch_size`` (``engine.batch_score``; None: as many as memory allows, 1: one at a
    time), longer ones alone in sliding windows of half the context."""
    check_batch_size(batch_size)
    eos = eos_ids(tokenizer, model)
    warps = {s: SamplingWarp(s, eos) for s in dict.fromkeys(samplings)}
    row_block = row_block or stats_row_block(int(model.config.vocab_size))
    n_ctx = context_window(model)
    spans = []
    for text, prompt in texts:
        try:
            spans.append(tokenize_span(tokenizer, text, prompt))
        except ScoringError:  # nothing to score
            spans.append(None)
    blocks: list[dict | None] = [None] * len(texts)
    together = []
    with torch.no_grad():
        for i, span in enumerate(spans):
            if span is None:
                continue
            if batch_size != 1 and len(span.ids) <= n_ctx and head_matches(model):
                together.append(i)
                continue
            ids_t = torch.as_tensor(span.ids, dtype=torch.long)
            blocks[i] = {s: [] for s in warps}
            for targets, logits, _ in forward_spans(model, ids_t, span.first, chunk_size, n_ctx, n_ctx // 2):
                for s, part in warped_stats(warps, logits, ids_t[targets].to(logits.device), row_block).items():
                    blocks[i][s] += part
        for plan in plan_batches([len(spans[i].ids) for i in together], batch_size, model):
            batch = [(torch.as_tensor(spans[together[j]].ids), spans[together[j]].first) for j in plan]
            for j, parts in zip(plan, run_batch(lambda part: variant_batch(model, part, warps, row_block), batch)):
                blocks[together[j]] = parts
    empty = {s: pd.DataFrame(columns=["char_end", *TYPICALITY]) for s in samplings}
    return [empty if span is None else variant_frames(span, blocks[i]) for i, span in enumerate(spans)]


def variant_batch(model, batch, warps: dict, row_block: int) -> list[dict[Sampling, list[dict]]]:
    """Per text of ``batch``, each warp's per-block statistics, from one batched pass."""
    out = [{s: [] for s in warps} for _ in batch]
    for owner, _targets, tgt, logits, _ in logit_blocks(model, batch):
        for b in owner.unique().tolist():
            sel = (owner == b).to(logits.device)
            for s, part in warped_stats(warps, logits[sel], tgt.to(logits.device)[sel], row_block).items():
                out[b][s] += part
    return out


def confidences(z) -> np.ndarray:
    """Normalised CLT likelihoods ``phi(z_m) / sum_j phi(z_j)`` (NaN and inf ``z``: 0; all undefined: NaN)."""
    z = np.asarray(z, dtype=float)
    logl = np.where(np.isfinite(z), -0.5 * z * z, -np.inf)
    if not np.isfinite(logl).any():
        return np.full(z.shape, np.nan)
    w = np.exp(logl - logl[np.isfinite(logl)].max())
    return w / w.sum()


def rank_candidates(z_by_candidate: dict[str, float], bpb_by_candidate: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per candidate: ``z``, ``abs_z``, ``loglik = -z^2/2``, ``confidence``, ``rank`` (1 = smallest
    |z|), and ``bpb`` when given; sorted by rank."""
    names = list(z_by_candidate)
    z = np.array([z_by_candidate[n] for n in names], dtype=float)
    df = pd.DataFrame({"candidate": names, "z": z, "abs_z": np.abs(z),
                       "loglik": np.where(np.isfinite(z), -0.5 * z * z, -np.inf), "confidence": confidences(z)})
    if bpb_by_candidate is not None:
        df["bpb"] = [bpb_by_candidate.get(n, math.nan) for n in names]
    df = df.sort_values("abs_z", na_position="last", kind="stable").reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    return df


def attribute(text: str, candidates, prompt: str = "", pool=None) -> pd.DataFrame:
    """Rank ``candidates`` (variant specs or ``cross.Variant``) as the author of ``text`` (after ``prompt``)."""
    return attribute_many([(text, prompt)], candidates, pool)[0]


def attribute_many(texts: list[tuple[str, str]], candidates, pool=None, batch_size: int | None = None
                   ) -> list[pd.DataFrame]:
    """``attribute`` of every ``(text, prompt)`` of ``texts``: each candidate model scores all the texts in
    batches of at most ``batch_size`` (``score_variants_many``)."""
    pool = pool or ModelPool()
    variants = _variants(candidates)
    zs, bpbs = [{} for _ in texts], [{} for _ in texts]
    for model_name in dict.fromkeys(v.model for v in variants):
        group = [v for v in variants if v.model == model_name]
        model, tokenizer = pool.model(model_name)
        scored = score_variants_many(model, tokenizer, texts, [v.sampling for v in group], batch_size=batch_size)
        for i, ((text, _), by_sampling) in enumerate(zip(texts, scored)):
            for v in group:
                r = z_at_cuts(by_sampling[v.sampling], [len(text)]).iloc[0]
                zs[i][v.label], bpbs[i][v.label] = float(r["z"]), float(r["bpb"])
    return [rank_candidates(z, b) for z, b in zip(zs, bpbs)]


# ---------------------------------------------------------------------------------------------------
# evaluation on stored generations


def cut_positions(tokenizer, token_ids, text: str, lengths) -> dict[int, int]:
    """Character position in ``text`` after the first ``n`` generated tokens, for each ``n`` in
    ``lengths`` the generation reaches (decoded prefix lengths; the decoded prefix must be a prefix
    of ``text``, else that length is skipped)."""
    out = {}
    ids = [int(t) for t in token_ids]
    for n in lengths:
        if n > len(ids):
            continue
        prefix = tokenizer.decode(ids[:n], skip_special_tokens=True)
        if text.startswith(prefix):
            out[int(n)] = len(prefix)
    return out


def attribution_table(store, runs: pd.DataFrame, candidates, lengths, pool=None, cache=None,
                      progress: bool = False, batch_size: int | None = None) -> pd.DataFrame:
    """z of every candidate on every stored generation in ``runs`` (rows of ``store.runs()``; their
    ``variant`` column, or model and warps, name the true source), cut at each length in ``lengths``.

    One row per (run, length, candidate): ``source``, ``candidate``, ``length``, ``n_tokens`` (the
    candidate's tokens in the cut), ``z``, ``bpb``. ``cache``: a ``text_cache.ScoredTextCache`` (or path) keeping
    the per-token scores of each (run, candidate). ``batch_size``: texts scored together at most
    (``score_variants_many``).
    """
    pool = pool or ModelPool()
    cache = cache if isinstance(cache, ScoredTextCache) else ScoredTextCache(cache)
    variants = _variants(candidates)
    models = list(dict.fromkeys(v.model for v in variants))
    ok = runs[runs["status"] == "ok"]
    todo = []  # (run, source, text, prompt, cuts)
    for _, run in tqdm(list(ok.iterrows()), disable=not progress, desc="attribution cuts", unit="text", mininterval=5):
        source = run["variant"] if "variant" in run and isinstance(run["variant"], str) else Variant.of_run(run).label
        text, prompt = str(run["text"]), str(run["prompt_text"])
        src_ids = store.tokens(run["run_id"], columns=["position", "token_id"]).sort_values("position")["token_id"]
        cuts = cut_positions(load_tokenizer(str(run["model"])), src_ids.tolist(), text, lengths)
        if cuts:
            todo.append((run, source, text, prompt, cuts))
    for model_name in models:  # the missing scorings of each model, in batches of texts
        group = [v for v in variants if v.model == model_name]
        missing = [(run, text[: max(cuts.values())], prompt) for run, _, text, prompt, cuts in todo
                   if not all(text_key("attr", run["run_id"], v.label, max(cuts.values())) in cache for v in group)]
        for a in range(0, len(missing), 64):  # flushed after every 64 texts
            part = missing[a : a + 64]
            model, tokenizer = pool.model(model_name)
            scored = score_variants_many(model, tokenizer, [(t, p) for _, t, p in part], [v.sampling for v in group],
                                         batch_size=batch_size)
            for (run, text, _), by_sampling in zip(part, scored):
                for v in group:
                    cache.put(text_key("attr", run["run_id"], v.label, len(text)), by_sampling[v.sampling],
                              {"run_id": run["run_id"], "candidate": v.label})
            cache.flush()
    rows = []
    in_order = [v for m in models for v in variants if v.model == m]
    for run, source, _, _, cuts in todo:
        for v in in_order:
            zc = z_at_cuts(cache.tokens[text_key("attr", run["run_id"], v.label, max(cuts.values()))],
                           list(cuts.values()))
            for (n, _), (_, r) in zip(cuts.items(), zc.iterrows()):
                rows.append({"run_id": run["run_id"], "source": source, "source_model": str(run["model"]),
                             "prompt_id": run.get("prompt_id"), "seed": int(run["seed"]), "length": n,
                             "candidate": v.label, "candidate_model": v.model, "n_tokens": int(r["n_tokens"]),
                             "z": float(r["z"]), "bpb": float(r["bpb"]), "n_bytes": int(r["n_bytes"])})
    cache.flush()
    return pd.DataFrame(rows)


def decide(table: pd.DataFrame, method: str = "min_abs_z") -> pd.DataFrame:
    """One decision per (run, length) from ``attribution_table`` rows: ``predicted`` candidate,
    ``confidence`` (``min_abs_z``: the normalised CLT likelihood of the chosen one; ``max_likelihood``:
    its posterior ``2^-bits / sum 2^-bits``, bits = bits per byte x the cut's bytes),
    ``correct``, and whether the predicted *model* is right (``correct_model``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    out = []
    for (run_id, length), g in table.groupby(["run_id", "length"], sort=False):
        if method == "min_abs_z":
            conf = confidences(g["z"].to_numpy())
            key = np.abs(g["z"].to_numpy(dtype=float))
        else:
            key = g["bpb"].to_numpy(dtype=float)
            bits = key * float(g["n_bytes"].max() if "n_bytes" in g else 1.0)
            logp = np.where(np.isfinite(bits), -bits * math.log(2), -np.inf)
            conf = np.exp(logp - logp[np.isfinite(logp)].max()) if np.isfinite(logp).any() else np.full(len(g), np.nan)
            conf = conf / np.nansum(conf)
        key = np.where(np.isnan(key), np.inf, key)
        i = int(np.argmin(key))
        first = g.iloc[0]
        pred = g.iloc[i]
        out.append({"run_id": run_id, "length": int(length), "source": first["source"],
                    "source_model": first["source_model"], "predicted": pred["candidate"],
                    "predicted_model": pred["candidate_model"], "confidence": float(conf[i]),
                    "correct": pred["candidate"] == first["source"],
                    "correct_model": pred["candidate_model"] == first["source_model"], "method": method})
    return pd.DataFrame(out)


def confusion(decisions: pd.DataFrame, labels=None) -> pd.DataFrame:
    """Confusion matrix (rows: true source, columns: predicted; counts)."""
    labels = list(labels or dict.fromkeys(list(decisions["source"]) + list(decisions["predicted"])))
    m = pd.crosstab(decisions["source"], decisions["predicted"]).reindex(index=labels, columns=labels, fill_value=0)
    m.index.name, m.columns.name = "true source", "predicted"
    return m


def accuracy_by(decisions: pd.DataFrame, by="length", column: str = "correct") -> pd.DataFrame:
    """Accuracy per group with a Clopper-Pearson 95% CI: ``n``, ``accuracy``, ``low``, ``high``."""
    rows = []
    for key, g in decisions.groupby(by, sort=True):
        k, n = int(g[column].sum()), len(g)
        lo, hi = binomial_ci(k, n)
        row = dict(zip(by, key)) if isinstance(by, (list, tuple)) else {by: key}
        rows.append(row | {"n": n, "accuracy": k / n, "low": lo, "high": hi})
    return pd.DataFrame(rows)


