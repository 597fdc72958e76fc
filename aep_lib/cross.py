"""Cross-model typicality: one model's text under another model (DESIGN.md §1, "Cross-model").

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

    variants = parse_variants("smollm2-135m,gemma-3-270m,gemma-3-270m@t0.7p0.9")
    runs = ensure_comparisons(store, variants, ["p01", "p02"], [0, 1], 128)   # every ordered pair
    records = compare(store)                 # one row per record: usable / skipped / failed, reason
    print(format_report(records))            # per pair and overall; what `aep compare` prints

The training-data side (``ensure_text_scores``): external texts (classics, human news) scored under
a model's raw ``p`` in windows of a fixed number of tokens, ``z`` per window.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .params import Sampling
from .runs import ENGINE_VERSION, cached_model, ensure_generations, provenance, resolved_dtype
from .score import ScoringError, check_same_vocabulary, score_ids, score_text
from .stats import running, summarize
from .store import RunStore, StoreError, canonical_run_id

CROSS_VERSION = 1  # bump when a change alters what a stored comparison contains
COMPARISON_LABEL = "cmp"  # folder labels ("cmp-...") of comparison records start with it (even a corrupt one is attributed)
TEXT_LABEL = "txt"  # folder labels of external-text scorings ("txt-...")

# ---------------------------------------------------------------------------------------------------
# variants


_VARIANT = re.compile(r"(?P<model>[^@\s]+)(@(?P<warps>[^@\s]*))?")
_WARPS = re.compile(r"(t(?P<t>\d+(\.\d+)?))?(k(?P<k>\d+))?(p(?P<p>\d*\.?\d+))?")


@dataclass(frozen=True)
class Variant:
    """A model and its decoding warps: what generates ``q_A``, or what scores with ``q_B``."""

    model: str
    sampling: Sampling

    @property
    def label(self) -> str:
        s, warps = self.sampling, ""
        if s.temperature != 1.0:
            warps += f"t{s.temperature:g}"
        if s.top_k:
            warps += f"k{s.top_k}"
        if s.top_p < 1.0:
            warps += f"p{s.top_p:g}"
        return self.model + (f"@{warps}" if warps else "")

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, spec: str, on_eos: str = "suppress") -> "Variant":
        """``"gemma-3-270m@t0.7p0.9"`` -> ``Variant("gemma-3-270m", Sampling(0.7, top_p=0.9))``."""
        m = _VARIANT.fullmatch(spec.strip())
        w = _WARPS.fullmatch(m.group("warps") or "") if m else None
        if m is None or w is None or (m.group("warps") == ""):
            raise ValueError(
                f"variant {spec!r}: expected <model>[@t<temperature>][k<top_k>][p<top_p>], "
                "e.g. 'gemma-3-270m' or 'gemma-3-270m@t0.7p0.9'"
            )
        sampling = Sampling(
            temperature=float(w.group("t")) if w.group("t") else 1.0,
            top_k=int(w.group("k")) if w.group("k") else 0,
            top_p=float(w.group("p")) if w.group("p") else 1.0,
            on_eos=on_eos,
        )
        return cls(m.group("model"), sampling)

    @classmethod
    def of_run(cls, row) -> "Variant":
        """The variant that generated a stored generation run (its model and warps)."""
        return cls(str(row["model"]), Sampling(temperature=float(row["temperature"]), top_k=int(row["top_k"]),
                                               top_p=float(row["top_p"]), on_eos=str(row["on_eos"])))


def parse_variants(specs, on_eos: str = "suppress") -> list[Variant]:
    """A comma-separated string (or list) of variant specs -> variants (duplicates dropped)."""
    items = [s.strip() for s in specs.split(",")] if isinstance(specs, str) else [str(s).strip() for s in specs]
    return list(dict.fromkeys(Variant.parse(s, on_eos) for s in items if s))


def all_pairs(variants: list[Variant], self_pairs: bool = True) -> list[tuple[Variant, Variant]]:
    """Every ordered pair (A generates, B scores): both directions, and each variant against itself."""
    return [(a, b) for a in variants for b in variants if self_pairs or a != b]


def pair_label(source: Variant | str, scorer: Variant | str) -> str:
    return f"{source} -> {scorer}"


# ---------------------------------------------------------------------------------------------------
# models and tokenizers


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str):
    """The tokenizer of a model without loading its weights (embedded short name, folder or hub id)."""
    from transformers import AutoTokenizer

    from .models import EMBEDDED_MODELS, embedded_cache

    if name in EMBEDDED_MODELS:
        return AutoTokenizer.from_pretrained(embedded_cache(name), local_files_only=True)
    return AutoTokenizer.from_pretrained(name)


class ModelPool:
    """Where models and tokenizers come from: ``cached_model`` by default; ``extra`` maps a name to an
    already loaded ``(model, tokenizer)`` (tests use it for a perturbed copy of a model)."""

    def __init__(self, device: str = "auto", dtype: str = "auto", extra: dict | None = None):
        self.device, self.dtype, self.extra = device, dtype, dict(extra or {})
        self._shared: dict[tuple[str, str], bool] = {}

    def model(self, name: str):
        return self.extra[name] if name in self.extra else cached_model(name, self.device, self.dtype)

    def tokenizer(self, name: str):
        return self.extra[name][1] if name in self.extra else load_tokenizer(name)

    def dtype_name(self, name: str) -> str:
        if name in self.extra:
            return str(next(self.extra[name][0].parameters()).dtype).replace("torch.", "")
        return resolved_dtype(self.device, self.dtype)

    def shared_vocabulary(self, a: str, b: str) -> bool:
        """True iff the two tokenizers map every token to the same id (checked, never assumed)."""
        if a == b:
            return True
        key = tuple(sorted((a, b)))
        if key not in self._shared:
            self._shared[key] = self.tokenizer(a).get_vocab() == self.tokenizer(b).get_vocab()
        return self._shared[key]


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
              "scorer_sampling": scorer.sampling.as_dict(), "dtype": dtype}
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


def _summary(df: pd.DataFrame) -> dict:
    """Final statistics of one comparison: B's view (``_samp`` = ``q_B``, ``_raw`` = ``p_B``) and, on a
    shared vocabulary, the cross view (``h_cross = h^(A,B)``, ``z_cross = z^(A,B)``)."""
    out = {}
    for dist in ("samp", "raw"):
        cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
        if all(c in df for c in cols):
            s = summarize(*(df[c].to_numpy() for c in cols))
            out |= {f"{k}_{dist}": s[k] for k in ("l", "h", "D", "sigma", "z")}
            out[f"z_reason_{dist}"] = s["z_reason"]
    if "cross_entropy" in df:
        s = summarize(df["surprisal_samp"].to_numpy(), df["cross_entropy"].to_numpy(),
                      df["cross_varentropy"].to_numpy())
        out |= {"h_cross": s["h"], "D_cross": s["D"], "sigma_cross": s["sigma"], "z_cross": s["z"],
                "z_reason_cross": s["z_reason"], "kl_mean": float(df["kl"].mean()),
                "h_ref": float(df["entropy_ref"].mean())}
    return out


def _source_prompt_ids(tokenizer, prompt: str, n_prompt_tokens) -> list[int]:
    from .generate import encode_prompt

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
    from .sampling import eos_ids

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
        **_summary(df),
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
    skipped (deterministic run ids); a record whose scoring raises is stored as a failed run with the
    error, and the others go on.
    """
    pool = pool or ModelPool(device, dtype)
    pairs = list(dict.fromkeys(pairs if pairs is not None else all_pairs(variants)))
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
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        record = spec | provenance() | {"started_at": started}
        try:
            tokens = store.tokens(row["run_id"])
            fields, df = score_comparison(row, tokens, scorer, pool)
            record |= fields | {"status": "ok", "error": None, "elapsed_s": time.perf_counter() - t0}
            store.write_run(record, df)
        except Exception as err:  # stored as a failed record; the others go on
            record |= {"status": "failed", "error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}",
                       "elapsed_s": time.perf_counter() - t0}
            record.pop("n_tokens", None)
            store.write_run(record, None)
    return store.runs(run_id=[s["run_id"] for _, _, s in specs])


# ---------------------------------------------------------------------------------------------------
# the query side


def comparison_runs(store: RunStore, pair: str | None = None, status: str | None = "ok") -> pd.DataFrame:
    """Stored comparison records (optionally one pair, one status)."""
    runs = store.runs(kind="score", source_kind="generation")
    if pair is not None:
        runs = runs[runs["pair"] == pair]
    if status is not None:
        runs = runs[runs["status"] == status]
    return runs.reset_index(drop=True)


def comparison_running(store: RunStore, run_id: str, view: str = "scorer") -> pd.DataFrame:
    """Running statistics of one comparison record.

    ``view``: ``scorer`` (B's ``l_n, h_n, z_n`` under ``q_B``), ``scorer_raw`` (under ``p_B``) or
    ``cross`` (``l^B_n``, ``h^(A,B)_n``, ``z^(A,B)_n``; raises ``ScoringError`` when the record was
    scored by re-tokenizing: different vocabularies have no cross-entropy).
    """
    row = store.get_run(run_id)
    if row is None:
        raise StoreError(f"no stored run {run_id!r}")
    if view == "cross":
        if row.get("mode") != "joint":
            raise ScoringError(
                f"vocabulary mismatch: {row.get('source_model')} and {row.get('scorer')} tokenize differently "
                "(this record was scored by re-tokenizing); cross-entropy h^(A,B) needs one shared vocabulary: "
                "compare them by their own l, h, z and bits per byte"
            )
        cols = ["surprisal_samp", "cross_entropy", "cross_varentropy"]
    elif view in ("scorer", "scorer_raw"):
        dist = "samp" if view == "scorer" else "raw"
        cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
    else:
        raise ValueError(f"view must be scorer, scorer_raw or cross, got {view!r}")
    tokens = store.tokens(run_id, columns=cols)
    return pd.DataFrame(running(*(tokens[c].to_numpy() for c in cols)))


# ---------------------------------------------------------------------------------------------------
# aggregation: every comparison record in a store, usable / skipped / failed


_NEEDED = ["surprisal_samp", "entropy_samp", "varentropy_samp", "surprisal_raw"]
_CROSS = ["cross_entropy", "cross_varentropy", "kl", "entropy_ref"]


def _first_line(text) -> str:
    text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return re.sub(r"(/[^\s:]+)+", lambda m: Path(m.group(0)).name, line)[:160]  # file names, not paths


def _is_comparison(row, root: Path) -> bool:
    if row.get("source_kind") == "generation":
        return True
    try:
        rel = Path(str(row.get("path"))).relative_to(root)
    except ValueError:
        return False
    return len(rel.parts) == 4 and rel.parts[0] == "score" and rel.parts[3].startswith(COMPARISON_LABEL + "-")


def _judge(row, tokens: pd.DataFrame) -> tuple[str, str, dict]:
    """``(status, reason, values)`` of one readable record, recomputed from its token rows."""
    missing = [c for c in _NEEDED if c not in tokens]
    if row.get("mode") == "joint":
        missing += [c for c in _CROSS if c not in tokens]
    if missing:
        return "skipped", f"incomplete: no column {missing}", {}
    n = row.get("n_tokens")
    if n is None or pd.isna(n) or int(n) != len(tokens):
        return "skipped", f"incomplete: {len(tokens)} token rows, the record says {n}", {}
    if len(tokens) == 0:
        return "skipped", "no tokens", {}
    s = _summary(tokens)
    values = {"l": s["l_samp"], "h": s["h_samp"], "D": s["D_samp"], "z": s["z_samp"], "z_raw": s["z_raw"],
              "D_raw": s["D_raw"], "h_cross": s.get("h_cross", math.nan), "z_cross": s.get("z_cross", math.nan),
              "kl": s.get("kl_mean", math.nan), "n_tokens": len(tokens)}
    if np.isinf(tokens["surprisal_samp"]).any():
        return "skipped", "l^B = +inf: B's sampling distribution excludes a token of A's text", values
    if "cross_entropy" in tokens and np.isinf(tokens["cross_entropy"]).any():
        return "skipped", "h^(A,B) = +inf: q_A puts mass on tokens B's sampling distribution excludes", values
    if not all(math.isfinite(values[k]) for k in ("l", "h", "D")):
        return "skipped", "non-finite statistics (NaN)", values
    if not math.isfinite(values["z"]):
        return "skipped", f"z undefined: {s['z_reason_samp'] or 'NaN'}", values
    return "usable", "", values


def compare(store: RunStore, run_ids=None) -> pd.DataFrame:
    """One row per comparison record in ``store`` (only ``run_ids``, when given): ``pair``, ``source``,
    ``scorer``, ``mode``, ``status``
    (usable / skipped / failed), ``reason``, and the record's ``l, h, D = l^B - h^B, z`` (under ``q_B``),
    ``z_raw``, ``h_cross = h^(A,B)``, ``z_cross``, ``kl``, recomputed from its token rows.

    A corrupt or incomplete record (unreadable file, missing columns, a token count that disagrees,
    an infinite statistic) is counted with its reason, never fatal.
    """
    root = Path(store.root)
    runs = store.runs()
    if run_ids is not None:
        runs = runs[runs["run_id"].isin(list(run_ids))]
    rows = []
    for _, run in runs.iterrows():
        row = {k: (None if (not isinstance(v, (list, dict)) and pd.isna(v)) else v) for k, v in run.items()}
        if not _is_comparison(row, root):
            continue
        out = {"run_id": row["run_id"], "pair": row.get("pair") or "(unknown pair)",
               "source": row.get("source_label"), "scorer": row.get("scorer_label"), "mode": row.get("mode"),
               "prompt_id": row.get("prompt_id"), "seed": row.get("seed"), "self_pair": row.get("self_pair")}
        if row.get("status") != "ok":
            rows.append(out | {"status": "failed", "reason": _first_line(row.get("error"))})
            continue
        try:
            tokens = store.tokens(row["run_id"])
        except Exception as err:  # noqa: BLE001 - a corrupt file is a failed record, never fatal
            rows.append(out | {"status": "failed", "reason": _first_line(f"{type(err).__name__}: {err}")})
            continue
        status, reason, values = _judge(row, tokens)
        rows.append(out | values | {"status": status, "reason": reason})
    cols = ["run_id", "pair", "source", "scorer", "mode", "prompt_id", "seed", "self_pair", "status", "reason",
            "n_tokens", "l", "h", "D", "z", "z_raw", "D_raw", "h_cross", "z_cross", "kl"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = np.nan
    return df[cols]


def signed(x, digits: int = 1) -> str:
    """``x`` rounded to ``digits`` with its sign, never "-0.0" (printed claims must not flip on float noise)."""
    x = float(x)
    return f"{round(x, digits) + 0.0:+.{digits}f}" if math.isfinite(x) else f"{x:+}"


def _fixed(x, digits: int = 2) -> str:
    x = float(x)
    return f"{round(x, digits) + 0.0:.{digits}f}" if math.isfinite(x) else str(x)


def _describe(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"n": 0, "mean": math.nan, "median": math.nan, "min": math.nan, "max": math.nan}
    return {"n": len(v), "mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "max": float(v.max())}


def summarize_comparisons(records: pd.DataFrame) -> pd.DataFrame:
    """Per pair and overall (``pair == "overall"``): counts of usable / skipped / failed records, the
    reasons, and mean/median/min/max of ``h^(A,B)``, of ``D = l^B - h^B`` and the mean ``z^B``."""
    out = []
    groups = [(p, g) for p, g in records.groupby("pair", sort=True)] + [("overall", records)]
    for pair, g in groups:
        usable = g[g["status"] == "usable"]
        reasons = g.loc[g["status"] != "usable", ["status", "reason"]].value_counts()
        row = {"pair": pair, "n_records": len(g), "n_usable": len(usable),
               "n_skipped": int((g["status"] == "skipped").sum()), "n_failed": int((g["status"] == "failed").sum()),
               "n_joint": int((g["mode"] == "joint").sum()),
               "reasons": "; ".join(f"{n} {st}: {r}" for (st, r), n in reasons.items())}
        for name, col in (("h_cross", "h_cross"), ("D", "D"), ("z", "z"), ("z_cross", "z_cross"), ("kl", "kl")):
            row |= {f"{name}_{k}": v for k, v in _describe(usable[col].tolist()).items()}
        out.append(row)
    return pd.DataFrame(out)


def format_report(records: pd.DataFrame) -> str:
    """The text ``aep compare`` prints: one paragraph per pair, then the overall line."""
    if records.empty:
        return "no comparison records"
    table = summarize_comparisons(records)

    def stats(r, name, unit):
        if not r[f"{name}_n"]:
            return None
        return ", ".join(f"{k} {_fixed(r[f'{name}_{k}'])}" for k in ("mean", "median", "min", "max")) + unit

    lines = []
    for _, r in table.iterrows():
        overall = r["pair"] == "overall"
        head = (f"overall: {r['n_usable']} usable comparison files, {r['n_skipped'] + r['n_failed']} skipped or failed"
                if overall else f"{r['pair']}: {r['n_usable']} usable, {r['n_skipped']} skipped, {r['n_failed']} failed")
        parts = [head]
        h = stats(r, "h_cross", " bits/token")
        if h:
            parts.append(f"h^(A,B) {h} (n={r['h_cross_n']})")
        else:
            parts.append("h^(A,B) n/a (" + ("no usable record" if r["n_joint"] else "different tokenizers") + ")")
        d = stats(r, "D", " bits/token")
        if d:
            parts.append(f"l^B - h^B {d}; mean z^B {signed(r['z_mean'], 2)}")
        lines.append(("\n" if overall else "") + "; ".join(parts))
        if r["reasons"]:
            lines.append("    " + r["reasons"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# external texts: classics and human writing, in windows of a fixed number of tokens


CLASSIC_OPENINGS = {  # where each corpus' text proper begins (after title pages and contents)
    "carroll-alice": "Alice was beginning to get very tired",
    "fitzgerald-gatsby": "In my younger and more vulnerable years",
    "austen-pride-and-prejudice": "It is a truth universally acknowledged",
    "austen-emma": "Emma Woodhouse, handsome, clever, and rich",
    "melville-moby-dick": "Call me Ishmael",
    "dickens-tale-of-two-cities": "It was the best of times",
    "kjv-genesis": "In the beginning God created",
}


@dataclass(frozen=True)
class ExternalText:
    text_id: str  # e.g. "carroll-alice", "xsum-3"
    group: str  # "classic", "news", "essay", ...
    text: str
    source: str  # the data-dir relative file it came from


def reflow(text: str) -> str:
    """Join hard-wrapped lines of a paragraph with spaces (blank lines stay paragraph breaks)."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p).strip() for p in paragraphs)


def classic_text(name: str, max_chars: int = 20_000, reflowed: bool = True) -> ExternalText:
    """``corpora/<name>.txt`` from its opening line on (``CLASSIC_OPENINGS``, else the file start)."""
    from .paths import data_file

    relative = f"corpora/{name}.txt"
    raw = data_file(relative).read_text(encoding="utf-8")
    start = 0
    if name in CLASSIC_OPENINGS:
        m = re.search(r"\s+".join(map(re.escape, CLASSIC_OPENINGS[name].split())), raw)
        start = m.start() if m else 0
    body = raw[start : start + max_chars]
    return ExternalText(name, "classic", reflow(body) if reflowed else body, relative)


def benchmark_texts(relative: str, group: str, n: int, key: str = "original", prefix: str | None = None) -> list[ExternalText]:
    """The first ``n`` texts of a fast-detect-gpt ``*.raw_data.json`` file (``key``: original = human)."""
    from .paths import data_file

    data = json.loads(data_file(relative).read_text(encoding="utf-8"))
    if key not in data:
        raise KeyError(f"{relative}: no key {key!r}; keys: {sorted(data)}")
    prefix = prefix or Path(relative).name.split("_")[0]
    return [ExternalText(f"{prefix}-{i}", group, t, relative) for i, t in enumerate(data[key][:n])]


def text_spec(item: ExternalText, scorer: str, window_tokens: int, n_windows: int, dtype: str) -> dict:
    digest = hashlib.sha256(item.text.encode("utf-8")).hexdigest()[:16]
    params = {"kind": "score", "engine": ENGINE_VERSION, "cross": CROSS_VERSION, "source_kind": "text",
              "text_sha256": digest, "scorer": scorer, "window_tokens": int(window_tokens),
              "n_windows": int(n_windows), "dtype": dtype}
    return {"run_id": canonical_run_id(params), "kind": "score", "model": scorer, "prompt_id": item.group,
            "label": f"{TEXT_LABEL}-{item.text_id}-w{window_tokens}x{n_windows}", "source_kind": "text",
            "text_id": item.text_id, "group": item.group, "text_source": item.source, "text_sha256": digest,
            "scorer": scorer, "window_tokens": int(window_tokens), "n_windows_asked": int(n_windows),
            "dtype": dtype, "params_json": json.dumps(params, sort_keys=True)}


def score_windows(model, tokenizer, text: str, window_tokens: int, n_windows: int, chunk_size: int | None = None) -> pd.DataFrame:
    """Raw-``p`` statistics of the first ``n_windows`` windows of ``window_tokens`` tokens of ``text``
    (the first text token is context only); a ``window`` column numbers them. Fewer windows when the
    text is shorter; none when it is shorter than one window."""
    enc = tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    lead = next((i for i, s in enumerate(special) if not s), len(ids))  # BOS and friends
    first = max(lead, 1) if lead else 1  # with no BOS the first token has no context
    n_fit = min(n_windows, (len(ids) - first) // window_tokens)
    if n_fit < 1:
        return pd.DataFrame(columns=["window", "position", "token_id", "surprisal_raw", "entropy_raw", "varentropy_raw"])
    ids = ids[: first + n_fit * window_tokens]
    df = score_ids(model, ids, first, chunk_size=chunk_size)
    df.insert(1, "window", df["position"] // window_tokens)
    return df


def window_summaries(tokens: pd.DataFrame, window_tokens: int, dist: str = "raw") -> pd.DataFrame:
    """Per window: ``l, h, D, sigma, z`` of its ``window_tokens`` tokens (``window`` from ``position``)."""
    rows = []
    cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
    df = tokens.assign(window=tokens["position"] // window_tokens) if "window" not in tokens else tokens
    for w, g in df.groupby("window", sort=True):
        if len(g) == window_tokens:
            s = summarize(*(g[c].to_numpy() for c in cols))
            rows.append({"window": int(w), **{k: s[k] for k in ("l", "h", "D", "sigma", "z")}})
    return pd.DataFrame(rows, columns=["window", "l", "h", "D", "sigma", "z"])


def ensure_text_scores(store: RunStore, scorer: str, items: list[ExternalText], window_tokens: int, n_windows: int,
                       pool: ModelPool | None = None, device: str = "auto", dtype: str = "auto") -> pd.DataFrame:
    """Every external text scored under ``scorer``'s raw ``p`` in windows (cached); their run rows."""
    pool = pool or ModelPool(device, dtype)
    dtype_name = pool.dtype_name(scorer)
    specs = [(item, text_spec(item, scorer, window_tokens, n_windows, dtype_name)) for item in items]
    done = set(store.runs(kind="score", status="ok")["run_id"])
    for item, spec in specs:
        if spec["run_id"] in done:
            continue
        t0 = time.perf_counter()
        record = spec | provenance()
        try:
            model, tokenizer = pool.model(scorer)
            df = score_windows(model, tokenizer, item.text, window_tokens, n_windows)
            wins = window_summaries(df, window_tokens)
            record |= {"status": "ok", "error": None, "n_windows": len(wins),
                       "z_mean": float(wins["z"].mean()) if len(wins) else math.nan,
                       "D_mean": float(wins["D"].mean()) if len(wins) else math.nan,
                       "elapsed_s": time.perf_counter() - t0}
            store.write_run(record, df)
        except Exception as err:  # a failed record, never fatal
            record |= {"status": "failed", "error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"}
            store.write_run(record, None)
    return store.runs(run_id=[s["run_id"] for _, s in specs])


def self_baseline_windows(store: RunStore, runs: pd.DataFrame, window_tokens: int, dist: str = "raw") -> pd.DataFrame:
    """Per-window ``z`` of self-generated text (stored generation runs), the baseline for external texts."""
    frames = []
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=["run_id", "model", "window", "l", "h", "D", "sigma", "z"])
    cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
    tokens = store.tokens(ok["run_id"].tolist(), columns=["position", *cols])
    for run_id, g in tokens.groupby("run_id", sort=False):
        w = window_summaries(g, window_tokens, dist)
        frames.append(w.assign(run_id=run_id, model=ok.loc[ok["run_id"] == run_id, "model"].iloc[0]))
    return pd.concat(frames, ignore_index=True)
