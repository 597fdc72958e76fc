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
from dataclasses import dataclass

import pandas as pd

from ..core.columns import RAW, typicality_columns
from ..core.sampling import Variant, all_pairs, pair_label
from ..core.stats import comparison_summary, window_summaries
from ..corpora import ExternalText
from ..engine.memory import MemoryEstimateError, check_scoring_fits
from ..engine.models import ModelPool, resolve_device
from ..engine.batch_score import score_many
from ..engine.score import ScoringError, check_same_vocabulary, score_ids, scored_text
from ..engine.model_map import identity_fields
from ..engine.spans import SPAN_RULE, masked_encoding, tokenize_with_prompt
from ..store.run_store import RunStore, canonical_run_id
from .generations import ENGINE_VERSION, checked_statistics, ensure_generations, model_config, sampled_with
from .missing_runs import guarded, write_missing_runs

CROSS_VERSION = 1  # bump when a change alters what a stored comparison contains
COMPARISON_LABEL = "cmp"  # folder labels ("cmp-...") of comparison records start with it (even a corrupt one is attributed)
TEXT_LABEL = "txt"  # folder labels of external-text scorings ("txt-...")

# ---------------------------------------------------------------------------------------------------
# source generations


def ensure_sources(store: RunStore, variants: list[Variant], prompt_ids: list[str], seeds: list[int],
                   max_new_tokens: int, batch_size: int = 8, device: str = "auto", dtype: str = "auto",
                   progress: bool = False) -> pd.DataFrame:
    """The stored generations of every variant (generated when missing; a model's variants share its
    batches); a ``variant`` column added."""
    variants = list(dict.fromkeys(variants))
    runs = {}
    for model in dict.fromkeys(v.model for v in variants):
        samplings = [v.sampling for v in variants if v.model == model]
        runs[model] = ensure_generations(store, [model], list(prompt_ids), list(seeds), samplings, max_new_tokens,
                                         batch_size=batch_size, device=device, dtype=dtype, progress=progress)
    frames = [runs[v.model][sampled_with(runs[v.model], v.sampling)].assign(variant=v.label) for v in variants]
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


@dataclass
class ComparisonInput:
    """What one comparison feeds its scorer: ``ids`` (the prompt's and the text's), the first scored index,
    the bytes of the scored characters, and the ``score_ids``/``score_many`` keyword arguments, which are
    the same for every source generation of one (source variant, scorer) pair."""

    mode: str  # "joint" (A's own token ids, with the cross statistics) or "retokenize" (B's tokens of the text)
    ids: list[int]
    first: int
    scored_bytes: int
    shared_vocab: bool  # the two tokenizers' token-to-id maps are identical
    kwargs: dict


def comparison_input(source_row, src: pd.DataFrame, scorer: Variant, pool: ModelPool,
                     mode: str = "auto") -> ComparisonInput:
    """The scorer's input for one stored generation (``src``: its token rows sorted by position); see
    ``score_comparison`` for ``mode``."""
    from ..core.sampling import eos_ids

    if mode not in ("auto", "joint", "retokenize"):
        raise ValueError(f"mode must be auto, joint or retokenize, got {mode!r}")
    source = Variant.of_run(source_row)
    prompt, text = str(source_row["prompt_text"]), str(source_row["text"])
    shared = pool.shared_vocabulary(source.model, scorer.model)
    if mode == "joint" and not shared:
        check_same_vocabulary(pool.model(scorer.model)[0], pool.model(source.model)[0],
                              pool.tokenizer(scorer.model), pool.tokenizer(source.model))
        raise ScoringError(f"vocabulary mismatch: {source.model} and {scorer.model} tokenize differently; "
                           "cross-entropy h^(A,B) needs one shared vocabulary")
    model_b, tok_b = pool.model(scorer.model)
    if not shared or mode == "retokenize":
        ids, first, n_bytes = tokenize_with_prompt(tok_b, prompt, text)
        if first >= len(ids):
            raise ScoringError("nothing to score: the continuation is empty after tokenization")
        return ComparisonInput("retokenize", ids, first, n_bytes, shared,
                               {"sampling": scorer.sampling, "eos_token_ids": eos_ids(tok_b, model_b),
                                "tokenizer": tok_b})
    tok_a = pool.tokenizer(source.model)
    prompt_ids = _source_prompt_ids(tok_a, prompt, source_row.get("n_prompt_tokens"))
    if source.model == scorer.model:
        reference, ref_eos = "self", None
    else:
        model_a = pool.model(source.model)[0]
        check_same_vocabulary(model_b, model_a, tok_b, tok_a)
        reference, ref_eos = model_a, eos_ids(tok_a, model_a)
    return ComparisonInput("joint", prompt_ids + [int(t) for t in src["token_id"]], len(prompt_ids),
                           len(text.encode("utf-8")), shared,
                           {"sampling": scorer.sampling, "eos_token_ids": eos_ids(tok_b, model_b),
                            "reference": reference, "reference_sampling": source.sampling,
                            "reference_eos_token_ids": ref_eos, "cross_with": "samp"})


def comparison_result(source_row, src: pd.DataFrame, inp: ComparisonInput, df: pd.DataFrame, pool: ModelPool,
                      scorer: Variant) -> tuple[dict, pd.DataFrame]:
    """``(summary fields, per-token table)`` of one comparison from the scorer's table ``df`` of ``inp``."""
    if inp.mode == "joint":
        if df["token_id"].tolist() != src["token_id"].astype(int).tolist():
            raise ScoringError("the joint pass did not score exactly the generated tokens")
    else:
        df = scored_text(pool.tokenizer(scorer.model), df, inp.ids, inp.first, inp.scored_bytes).tokens
    text_bytes = len(str(source_row["text"]).encode("utf-8"))
    bits_source, bits_scorer = float(src["surprisal_raw"].sum()), float(df["surprisal_raw"].sum())
    fields = {
        "mode": inp.mode, "shared_vocab": inp.shared_vocab,
        "n_tokens": len(df), "n_source_tokens": len(src),
        "n_bytes_text": text_bytes, "n_bytes_scored": inp.scored_bytes,
        "bpb_source": bits_source / text_bytes if text_bytes else math.nan,
        "bpb_scorer": bits_scorer / inp.scored_bytes if inp.scored_bytes else math.nan,
        **comparison_summary(df),
    }
    return fields, df


def score_comparison(source_row, source_tokens: pd.DataFrame, scorer: Variant, pool: ModelPool,
                     mode: str = "auto", chunk_size: int | None = None) -> tuple[dict, pd.DataFrame]:
    """Score one stored generation of A (its run row and token rows) under ``scorer``.

    ``mode``: ``auto`` (joint pass when the tokenizers' token-to-id maps are identical, re-tokenize
    otherwise), ``joint`` (``h^(A,B)`` asked for: raises ``ScoringError`` "vocabulary mismatch" on
    different tokenizers) or ``retokenize``. Returns ``(summary fields, per-token table)``.
    """
    src = source_tokens.sort_values("position")
    inp = comparison_input(source_row, src, scorer, pool, mode)
    df = score_ids(pool.model(scorer.model)[0], inp.ids, inp.first, chunk_size=chunk_size, **inp.kwargs)
    return comparison_result(source_row, src, inp, df, pool, scorer)


def score_comparisons(items, pool: ModelPool, batch_size: int | None = None) -> list:
    """``score_comparison`` of every ``(source run row, its token rows, scorer)`` of ``items``, the source
    generations of one (source variant, scorer) pair scored together (``batch_score.score_many``); one
    ``(fields, tokens)`` or the exception raised per item, in order (``missing_runs.write_missing_runs``)."""
    out: list = [None] * len(items)
    groups: dict = {}
    for i, (row, tokens, scorer) in enumerate(items):
        src = tokens.sort_values("position")
        inp = guarded(comparison_input, row, src, scorer, pool)
        if isinstance(inp, BaseException):  # this text's failure, not its group's
            out[i] = inp
            continue
        groups.setdefault((Variant.of_run(row), scorer), []).append((i, src, inp))
    for (_, scorer), members in groups.items():
        model = pool.model(scorer.model)[0]
        frames = score_many(model, [(inp.ids, inp.first) for _, _, inp in members], batch_size=batch_size,
                            **members[0][2].kwargs)
        for (i, src, inp), df in zip(members, frames):
            out[i] = guarded(comparison_result, items[i][0], src, inp, df, pool, scorer)
    return out


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
    each one against itself). Source generations are ensured first (cached), ``batch_size`` sequences
    a batch. Stored ok records are skipped (deterministic run ids); the others are scored in groups of
    texts (``score_comparisons``; a group's records are stored as soon as it is scored). A record whose
    scoring raises, or whose statistics are impossible (``runs.impossible_statistics``), is stored as a
    failed run with the reason, and the others go on. A scoring too large for memory is refused before
    any model loads where the scorer's config is at hand (``check_comparisons_fit``), else before its
    first forward pass, and is never stored.
    """
    pool = pool or ModelPool(device, dtype)
    pairs = list(dict.fromkeys(pairs if pairs is not None else all_pairs(variants)))
    check_comparisons_fit(pairs, max_new_tokens, pool)
    sources = ensure_sources(store, list(dict.fromkeys(a for a, _ in pairs)), prompt_ids, seeds, max_new_tokens,
                             batch_size=batch_size, device=device, dtype=dtype, progress=progress)
    ok_sources = sources[sources["status"] == "ok"]
    specs = []
    for a, b in pairs:
        for _, row in ok_sources[ok_sources["variant"] == a.label].iterrows():
            spec = comparison_spec(row, b, pool.dtype_name(b.model))
            specs.append((spec, (row, b, bool(spec["self_pair"]))))
    # one scorer's work together (one model load), and within it one source variant's (one group of texts)
    specs.sort(key=lambda t: (t[1][1].model, t[1][0]["model"], t[1][1].label, t[1][0]["variant"]))

    def checked(result, self_pair: bool):  # impossible statistics: an ImpossibleStatisticsError, stored as failed
        return (result[0], checked_statistics(result[1], sampled_from_q=self_pair))

    def compute(item):
        row, scorer, self_pair = item
        return checked(score_comparison(row, store.tokens(row["run_id"]), scorer, pool), self_pair)

    def compute_many(items):
        results = score_comparisons([(row, store.tokens(row["run_id"]), scorer) for row, scorer, _ in items], pool)
        return [r if isinstance(r, BaseException) else guarded(checked, r, self_pair)
                for (_, _, self_pair), r in zip(items, results)]

    return write_missing_runs(store, specs, compute, compute_many)


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


def window_ids(tokenizer, text: str, window_tokens: int, n_windows: int) -> tuple[list[int], int] | None:
    """``(ids, first scored)`` of the first ``n_windows`` whole windows of ``window_tokens`` tokens of
    ``text`` (every text token, the first conditioned on the start-of-document token: ``spans.masked_encoding``);
    None when the text is shorter than one window."""
    ids, _offsets, _special, first = masked_encoding(tokenizer, "", text)  # the first-token rule of engine.spans
    n_fit = min(n_windows, (len(ids) - first) // window_tokens)
    return (ids[: first + n_fit * window_tokens], first) if n_fit >= 1 else None


def numbered_windows(df: pd.DataFrame | None, window_tokens: int) -> pd.DataFrame:
    """A scored table with a ``window`` column (``position // window_tokens``); empty for None."""
    if df is None:
        return pd.DataFrame(columns=["window", "position", "token_id", *typicality_columns(RAW)])
    df.insert(1, "window", df["position"] // window_tokens)
    return df


def score_windows(model, tokenizer, text: str, window_tokens: int, n_windows: int, chunk_size: int | None = None) -> pd.DataFrame:
    """Raw-``p`` statistics of the first ``n_windows`` windows of ``window_tokens`` tokens of ``text``
    (``window_ids``); a ``window`` column numbers them. Fewer windows when the text is shorter; none when it
    is shorter than one window."""
    found = window_ids(tokenizer, text, window_tokens, n_windows)
    return numbered_windows(None if found is None else score_ids(model, found[0], found[1], chunk_size=chunk_size),
                            window_tokens)


def ensure_text_scores(store: RunStore, scorer: str, items: list[ExternalText], window_tokens: int, n_windows: int,
                       pool: ModelPool | None = None, device: str = "auto", dtype: str = "auto") -> pd.DataFrame:
    """Every external text scored under ``scorer``'s raw ``p`` in windows (cached; the texts of a group
    scored together); their run rows."""
    pool = pool or ModelPool(device, dtype)
    dtype_name = pool.dtype_name(scorer)

    def result(df):
        df = checked_statistics(df, sampled_from_q=False)
        wins = window_summaries(df, window_tokens)
        return {"n_windows": len(wins), "z_mean": float(wins["z"].mean()) if len(wins) else math.nan,
                "D_mean": float(wins["D"].mean()) if len(wins) else math.nan}, df

    def scored(item):
        model, tokenizer = pool.model(scorer)
        return result(score_windows(model, tokenizer, item.text, window_tokens, n_windows))

    def scored_many(items):
        model, tokenizer = pool.model(scorer)
        found = [window_ids(tokenizer, item.text, window_tokens, n_windows) for item in items]
        frames = iter(score_many(model, [f for f in found if f is not None]))
        return [guarded(result, numbered_windows(None if f is None else next(frames), window_tokens)) for f in found]

    specs = [(text_spec(item, scorer, window_tokens, n_windows, dtype_name), item) for item in items]
    return write_missing_runs(store, specs, scored, scored_many)

