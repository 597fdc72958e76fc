"""Cross-model typicality: one model's text under another model (docs/science.md, "Cross-model").

A **variant** is a model together with the decoding warps it samples with, written
``<model>[@t<temperature>][k<top_k>][p<top_p>]`` (``gemma-3-270m@t0.7p0.9``; plain ``gemma-3-270m`` is
temperature 1, no truncation). As a generator, variant A's text is drawn from ``q_A``; as a scorer,
variant B scores with its own sampling distribution ``q_B`` (the ``_samp`` columns; its raw ``p_B`` is
in the ``_raw`` columns too). For a temperature-1 variant ``q_B`` is ``p_B`` (with the end-of-text
token suppressed when the profile generates with ``on_eos="suppress"``).

A **comparison record** is a stored scoring run (kind ``"score"``) of one stored generation of A under
scorer B, linked to it (``source_run_id``, ``source_model``, the source warps, ``scorer`` and its warps).

- Shared vocabulary (identical token-to-id maps, checked): one joint pass over A's own token ids gives
  B's ``l, h, z`` and the cross statistics ``c_t, W_t, KL_t`` of ``q_A`` against ``q_B``; when A and B
  are one network (decoding variants) that is ONE forward pass.
- Different tokenizers: B re-tokenizes ``prompt + text`` and scores exactly the continuation's
  characters (source masking); B's own ``l, h, z`` and bits per byte of both models over the same
  characters. ``h^(A,B)`` does not exist there: asking for it raises ``ScoringError`` (vocabulary mismatch).

    variants = sampling.parse_variants("smollm2-135m,gemma-3-270m,gemma-3-270m@t0.7p0.9")
    runs = ensure_comparisons(store, variants, ["p01", "p02"], [0, 1], 128)   # every ordered pair
    records = comparison_tables.compare(store)   # one row per record: usable / skipped / failed, reason
    print(figures.format_report(records))        # per pair and overall; what `aep compare` prints

The training-data side (``ensure_text_scores``): external texts (classics, human news) scored under
a model's raw ``p`` in windows of a fixed number of tokens, ``z`` per window.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import pandas as pd

from ..core.columns import RAW, typicality_columns
from ..core.sampling import Variant, all_pairs, pair_label
from ..core.stats import comparison_summary, window_summaries
from ..corpora import ExternalText
from ..engine.memory import MemoryEstimateError, check_scoring_fits
from ..engine.models import ModelPool, resolve_device
from ..engine.score import ScoringError, check_same_vocabulary, score_ids, score_text
from ..engine.model_map import identity_fields
from ..engine.spans import SPAN_RULE, masked_encoding
from ..store.provenance import run_provenance, utc_now
from ..store.run_store import RunStore, canonical_run_id
from .generations import (
    ENGINE_VERSION,
    checked_statistics,
    ensure_generations,
    failure,
    model_config,
    write_missing_runs,
)

CROSS_VERSION = 1  # bump when a change alters what a stored comparison contains
COMPARISON_LABEL = "cmp"  # folder labels ("cmp-...") of comparison records start with it (even a corrupt one is attributed)
TEXT_LABEL = "txt"  # folder labels of external-text scorings ("txt-...")

# ---------------------------------------------------------------------------------------------------
# source generations


def ensure_sources(store: RunStore, variants: list[Variant], prompt_ids: list[str], seeds: list[int],
                   max_new_tokens: int, batch_size: int = 8, device: str = "auto", dtype: str = "auto",
                   progress: bool = False) -> pd.DataFrame:
    """The stored generations of every variant (generated when missing); a ``variant`` column added."""
    frames = []
    for v in dict.fromkeys(variants):
        runs = ensure_generations(store, [v.model], list(prompt_ids), list(seeds), v.sampling, max_new_tokens,
                                  batch_size=batch_size, device=device, dtype=dtype, progress=progress)
        frames.append(runs.assign(variant=v.label))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------------
# comparison records


def comparison_spec(source_row, scorer: Variant, dtype: str) -> dict:
    """The canonical parameters of scoring one stored generation under ``scorer``, its run id and label."""
    source = Variant.of_run(source_row)
    params = {"kind": "score", "engine": ENGINE_VERSION, "cross": CROSS_VERSION,
              "source_run_id": str(source_row["run_id"]), "scorer": scorer.model,
              "scorer_sampling": scorer.sampling.as_dict(), "dtype": dtype,
              **identity_fields(scorer.model)}  # a mapped scorer's folder (engine.model_map); nothing when unmapped
    return {
        "run_id": canonical_run_id(params), "kind": "score", "model": scorer.model,
        "prompt_id": source_row.get("prompt_id"), "seed": int(source_row["seed"]),
        "label": f"{COMPARISON_LABEL}-{source.label}-s{int(source_row['seed'])}-by-{scorer.label}",
        "source_kind": "generation", "source_run_id": str(source_row["run_id"]), "source_model": source.model,
        "source_label": source.label, **{f"source_{k}": v for k, v in source.sampling.as_dict().items()},
        "scorer": scorer.model, "scorer_label": scorer.label,
        **{f"scorer_{k}": v for k, v in scorer.sampling.as_dict().items()},
        "pair": pair_label(source, scorer), "self_pair": source == scorer, "dtype": dtype,
        "params_json": json.dumps(params, sort_keys=True),
    }


def _source_prompt_ids(tokenizer, prompt: str, n_prompt_tokens) -> list[int]:
    from ..engine.generate import encode_prompt

    ids = encode_prompt(tokenizer, prompt)
    if n_prompt_tokens is not None and not pd.isna(n_prompt_tokens) and len(ids) != int(n_prompt_tokens):
        raise ScoringError(f"the prompt re-encodes to {len(ids)} tokens, the generation recorded {n_prompt_tokens}")
    return ids


def score_comparison(source_row, source_tokens: pd.DataFrame, scorer: Variant, pool: ModelPool,
                     mode: str = "auto", chunk_size: int | None = None) -> tuple[dict, pd.DataFrame]:
    """Score one stored generation of A (its run row and token rows) under ``scorer``.

    ``mode``: ``auto`` (joint pass when the tokenizers' token-to-id maps are identical, re-tokenize
    otherwise), ``joint`` (``h^(A,B)`` asked for: raises ``ScoringError`` "vocabulary mismatch" on
    different tokenizers) or ``retokenize``. Returns ``(summary fields, per-token table)``.
    """
    from ..core.sampling import eos_ids

    if mode not in ("auto", "joint", "retokenize"):
        raise ValueError(f"mode must be auto, joint or retokenize, got {mode!r}")
    source = Variant.of_run(source_row)
    prompt, text = str(source_row["prompt_text"]), str(source_row["text"])
    text_bytes = len(text.encode("utf-8"))
    src = source_tokens.sort_values("position")
    bits_source = float(src["surprisal_raw"].sum())
    shared = pool.shared_vocabulary(source.model, scorer.model)
    if mode == "joint" and not shared:
        check_same_vocabulary(pool.model(scorer.model)[0], pool.model(source.model)[0],
                              pool.tokenizer(scorer.model), pool.tokenizer(source.model))
        raise ScoringError(f"vocabulary mismatch: {source.model} and {scorer.model} tokenize differently; "
                           "cross-entropy h^(A,B) needs one shared vocabulary")
    model_b, tok_b = pool.model(scorer.model)
    if shared and mode != "retokenize":
        tok_a = pool.tokenizer(source.model)
        prompt_ids = _source_prompt_ids(tok_a, prompt, source_row.get("n_prompt_tokens"))
        ids = prompt_ids + [int(t) for t in src["token_id"]]
        if source.model == scorer.model:
            reference, ref_eos = "self", None
        else:
            model_a = pool.model(source.model)[0]
            check_same_vocabulary(model_b, model_a, tok_b, tok_a)
            reference, ref_eos = model_a, eos_ids(tok_a, model_a)
        df = score_ids(model_b, ids, len(prompt_ids), sampling=scorer.sampling, eos_token_ids=eos_ids(tok_b, model_b),
                       chunk_size=chunk_size, reference=reference, reference_sampling=source.sampling,
                       reference_eos_token_ids=ref_eos, cross_with="samp")
        if df["token_id"].tolist() != src["token_id"].astype(int).tolist():
            raise ScoringError("the joint pass did not score exactly the generated tokens")
        scored_bytes, mode_used = text_bytes, "joint"
    else:
        scored = score_text(model_b, tok_b, text, prompt=prompt, sampling=scorer.sampling, chunk_size=chunk_size)
        df, scored_bytes, mode_used = scored.tokens, scored.n_bytes, "retokenize"
    bits_scorer = float(df["surprisal_raw"].sum())
    fields = {
        "mode": mode_used, "shared_vocab": shared, "n_tokens": len(df), "n_source_tokens": len(src),
        "n_bytes_text": text_bytes, "n_bytes_scored": scored_bytes,
        "bpb_source": bits_source / text_bytes if text_bytes else math.nan,
        "bpb_scorer": bits_scorer / scored_bytes if scored_bytes else math.nan,
        **comparison_summary(df),
    }
    return fields, df


def ensure_comparisons(
    store: RunStore,
    variants: list[Variant],
    prompt_ids: list[str],
    seeds: list[int],
    max_new_tokens: int,
    pairs: list[tuple[Variant, Variant]] | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    pool: ModelPool | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Make sure every (pair, source generation) comparison record exists; return their run rows.

    ``pairs``: ``(A, B)`` variants; default every ordered pair of ``variants`` (both directions and
    each one against itself). Source generations are ensured first (cached). Stored ok records are
    skipped (deterministic run ids); a record whose scoring raises, or whose statistics are impossible
    (``runs.impossible_statistics``), is stored as a failed run with the reason, and the others go on.
    A scoring too large for memory is refused before any model loads where the scorer's config is at
    hand (``check_comparisons_fit``), else before its first forward pass, and is never stored.
    """
    pool = pool or ModelPool(device, dtype)
    pairs = list(dict.fromkeys(pairs if pairs is not None else all_pairs(variants)))
    check_comparisons_fit(pairs, max_new_tokens, pool)
    sources = ensure_sources(store, list(dict.fromkeys(a for a, _ in pairs)), prompt_ids, seeds, max_new_tokens,
                             batch_size=batch_size, device=device, dtype=dtype, progress=progress)
    ok_sources = sources[sources["status"] == "ok"]
    done = set(store.runs(kind="score", status="ok")["run_id"])
    specs = []
    for a, b in pairs:
        for _, row in ok_sources[ok_sources["variant"] == a.label].iterrows():
            specs.append((row, b, comparison_spec(row, b, pool.dtype_name(b.model))))
    todo = sorted((t for t in specs if t[2]["run_id"] not in done), key=lambda t: (t[1].model, t[0]["model"]))
    for row, scorer, spec in todo:
        started = utc_now()
        t0 = time.perf_counter()
        record = spec | run_provenance() | {"started_at": started}
        try:
            tokens = store.tokens(row["run_id"])
            fields, df = score_comparison(row, tokens, scorer, pool)
            checked_statistics(df, sampled_from_q=bool(spec["self_pair"]))  # impossible: stored as failed
            record |= fields | {"status": "ok", "error": None, "elapsed_s": time.perf_counter() - t0}
            store.write_run(record, df)
        except MemoryEstimateError:  # refused before it started: not a failed record
            raise
        except Exception as err:  # stored as a failed record; the others go on
            record |= failure(err) | {"elapsed_s": time.perf_counter() - t0}
            record.pop("n_tokens", None)
            store.write_run(record, None)
    return store.runs(run_id=[s["run_id"] for _, _, s in specs])


def check_comparisons_fit(pairs, max_new_tokens: int, pool: ModelPool) -> None:
    """Refuse before any model loads (``MemoryEstimateError``) a comparison whose scoring of one source
    generation cannot fit in memory even by the scorer alone, with ``max_new_tokens`` and a one-token prompt
    (``memory.check_scoring_fits`` from the scorer's config: a lower bound; ``score_ids`` counts the
    real text and a distinct reference before its first forward pass). Scorers whose config is not at
    hand are left to that check."""
    device = resolve_device(pool.device)
    chunk = 2048 if device.startswith("cuda") else 256
    for a, b in pairs:
        config = None if b.model in pool.extra else model_config(b.model)
        if config is None:
            continue
        bytes_per = 4 if pool.dtype_name(b.model) == "float32" else 2
        context = int(getattr(config, "max_position_embeddings", 0) or 2048)
        n = int(max_new_tokens) + 1
        try:
            check_scoring_fits([(config, bytes_per)], n, min(n, context), chunk, device, pass_tokens=chunk)
        except MemoryEstimateError as err:
            raise MemoryEstimateError(f"{pair_label(a, b)}, scoring max_new_tokens={max_new_tokens:,}: {err}") from None


# ---------------------------------------------------------------------------------------------------
# external texts: classics and human writing, in windows of a fixed number of tokens


def text_spec(item: ExternalText, scorer: str, window_tokens: int, n_windows: int, dtype: str) -> dict:
    digest = hashlib.sha256(item.text.encode("utf-8")).hexdigest()[:16]
    params = {"kind": "score", "engine": ENGINE_VERSION, "cross": CROSS_VERSION, "source_kind": "text",
              "spans": SPAN_RULE, "text_sha256": digest, "scorer": scorer, "window_tokens": int(window_tokens),
              "n_windows": int(n_windows), "dtype": dtype, **identity_fields(scorer)}
    return {"run_id": canonical_run_id(params), "kind": "score", "model": scorer, "prompt_id": item.group,
            "label": f"{TEXT_LABEL}-{item.text_id}-w{window_tokens}x{n_windows}", "source_kind": "text",
            "text_id": item.text_id, "group": item.group, "text_source": item.source, "text_sha256": digest,
            "scorer": scorer, "window_tokens": int(window_tokens), "n_windows_asked": int(n_windows),
            "dtype": dtype, "params_json": json.dumps(params, sort_keys=True)}


def score_windows(model, tokenizer, text: str, window_tokens: int, n_windows: int, chunk_size: int | None = None) -> pd.DataFrame:
    """Raw-``p`` statistics of the first ``n_windows`` windows of ``window_tokens`` tokens of ``text``
    (every text token, the first conditioned on the start-of-document token: ``spans.masked_encoding``); a ``window`` column numbers them. Fewer windows when the
    text is shorter; none when it is shorter than one window."""
    ids, _offsets, _special, first = masked_encoding(tokenizer, "", text)  # the first-token rule of engine.spans
    n_fit = min(n_windows, (len(ids) - first) // window_tokens)
    if n_fit < 1:
        return pd.DataFrame(columns=["window", "position", "token_id", *typicality_columns(RAW)])
    ids = ids[: first + n_fit * window_tokens]
    df = score_ids(model, ids, first, chunk_size=chunk_size)
    df.insert(1, "window", df["position"] // window_tokens)
    return df


def ensure_text_scores(store: RunStore, scorer: str, items: list[ExternalText], window_tokens: int, n_windows: int,
                       pool: ModelPool | None = None, device: str = "auto", dtype: str = "auto") -> pd.DataFrame:
    """Every external text scored under ``scorer``'s raw ``p`` in windows (cached); their run rows."""
    pool = pool or ModelPool(device, dtype)
    dtype_name = pool.dtype_name(scorer)

    def scored(item):
        model, tokenizer = pool.model(scorer)
        df = checked_statistics(score_windows(model, tokenizer, item.text, window_tokens, n_windows),
                                sampled_from_q=False)
        wins = window_summaries(df, window_tokens)
        return {"n_windows": len(wins), "z_mean": float(wins["z"].mean()) if len(wins) else math.nan,
                "D_mean": float(wins["D"].mean()) if len(wins) else math.nan}, df

    specs = [(text_spec(item, scorer, window_tokens, n_windows, dtype_name), item) for item in items]
    return write_missing_runs(store, specs, scored)


