"""Runs: from parameters to stored generations, and back to statistics.

``plan_generations`` expands models × prompts × seeds × warps × lengths into run specs, skips those
already stored (status ok) and groups the rest into model-batches; ``execute_batch`` runs one of them
(one model load, the sequences batched, each with its own warps) and writes each run atomically.
``ensure_generations`` and ``ensure_samplings`` (one length) put the two together; ``runs.grids.ensure_grid``
does it for a ``params.Grid``, locally or on Ray. A generation run's row carries its summary (``summary_columns``: final ``l, h, D, sigma, z``
under ``q`` and ``p``); ``analysis.tables`` (``run_summaries``, ``running_stats``) reads runs back.

Nothing impossible is stored as ok: a generation (or, in ``comparisons``, a scoring) whose token
statistics no healthy model can produce (``impossible_statistics``: NaN, non-finite entropies, every
token outside ``q``) is stored as failed with the reason, so that a rerun makes it again. Work too large
for memory is refused before it starts (``memory.MemoryEstimateError``): at planning from the model's
config where it is at hand (``check_plan_fits``), else after the load, and never stored as a failed run.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core.columns import RAW, SAMP, bits_columns, column, finite_columns
from ..core.sampling import Sampling
from ..core.stats import distribution_summaries
from ..corpora import prompt_text
from ..engine.memory import MemoryEstimateError, check_generation_fits
from ..engine.model_map import Placement, identity_fields, lookup, placement_of
from ..engine.models import cached_model, resolve_device, resolved_dtype
from ..store.provenance import run_provenance, utc_now
from ..store.run_store import RunStore, canonical_run_id

ENGINE_VERSION = 1  # bump when a change alters what a stored run contains
# --- generation runs --------------------------------------------------------------------------------


def generation_spec(model: str, prompt_id: str, seed: int, sampling: Sampling, max_new_tokens: int,
                    dtype: str = "float32", prompt: str | None = None) -> dict:
    """The canonical parameters of one generation run, its ``run_id`` and folder label.

    A model the model map points elsewhere adds what it resolved to (``model_resolved``: a folder, a
    stand-in), so that its runs are not taken for the hub model's; an unmapped model's run id is unchanged.
    Where the model is placed (a device map) is not part of the identity: split or whole, it is the same run.
    """
    prompt = prompt if prompt is not None else prompt_text(prompt_id)
    params = {"kind": "generate", "engine": ENGINE_VERSION, "model": model, "prompt_id": prompt_id,
              "prompt_text": prompt, "seed": int(seed), **sampling.as_dict(),
              "max_new_tokens": int(max_new_tokens), "dtype": dtype} | identity_fields(model)
    return params | {
        "run_id": canonical_run_id(params),
        "label": f"s{seed}_{sampling.label}_n{max_new_tokens}",
        "params_json": json.dumps(params, sort_keys=True),
    }


def summary_columns(tokens: pd.DataFrame) -> dict:
    """The summary a generation run's row carries: ``l, h, D, sigma, z`` (bits; ``z`` in standard errors)
    under each of ``core.columns.DISTRIBUTIONS`` whose columns ``tokens`` has, as ``l_samp, ..., z_raw``."""
    return distribution_summaries(tokens)


def spec_sampling(spec: dict) -> Sampling:
    """The ``Sampling`` of a generation run's spec (or stored row)."""
    return Sampling(**{k: spec[k] for k in Sampling.model_fields})


@dataclass(frozen=True)
class GenerationBatch:
    """One model-batch: up to ``batch_size`` runs sharing a model and a length, each sampled its own way.

    The unit of execution: one process loads ``model`` once and generates ``specs`` in one batch, each
    run with its spec's warps (``samplings``; ``aep run --executor ray`` makes one Ray task of each).
    ``placement``: where the model's layers go (a grid's ``device_map``/``max_memory``, else the model
    map's; None: one device).
    """

    model: str
    max_new_tokens: int
    specs: tuple[dict, ...]
    placement: Placement | None = None

    @property
    def run_ids(self) -> list[str]:
        return [s["run_id"] for s in self.specs]

    @property
    def samplings(self) -> list[Sampling]:
        return [spec_sampling(s) for s in self.specs]


@dataclass
class GenerationPlan:
    """A grid expanded into run specs, and the missing ones grouped into model-batches."""

    specs: list[dict]
    batches: list[GenerationBatch]

    @property
    def n_missing(self) -> int:
        return sum(len(b.specs) for b in self.batches)


def stored_ok(store: RunStore, run_ids) -> set[str]:
    """The subset of ``run_ids`` stored with status ok, with one scan of the store.

    (``has_ok_run`` rescans the disk on every miss: one call per missing run of a large grid
    would rescan it once per run.)
    """
    index = store.refresh_index()
    return {rid for rid in run_ids if rid in index and store.has_ok_run(rid)}


def plan_generations(
    store: RunStore,
    models: list[str],
    prompt_ids: list[str],
    seeds: list[int],
    samplings: list[Sampling],
    lengths: list[int],
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    placement: Placement | None = None,
) -> GenerationPlan:
    """Expand models × prompts × seeds × warps × lengths into run specs; batch the missing ones.

    Batches never mix models or lengths; they do mix warps (a step of 8 rows costs little more than one of
    4 on a CPU: docs/engine.md). Within one model and length, runs are sorted by warps (in the order given),
    prompt length and seed (similar prompts pad less) and cut into ``batch_size`` sequences: a setting whose
    runs fill whole batches is batched as it would be alone, and the runs left over share a batch with the
    next setting's. ``placement`` (a grid's) places
    every model across devices; without it a model takes the model map's placement, if any.
    """
    dtype_name = resolved_dtype(device, dtype)
    texts = {p: prompt_text(p) for p in dict.fromkeys(prompt_ids)}
    specs = [generation_spec(m, p, s, w, n, dtype_name, prompt=texts[p])
             for m in models for w in samplings for n in lengths for p in prompt_ids for s in seeds]
    return plan_specs(store, specs, batch_size, device, dtype_name, placement)


def plan_specs(store: RunStore, specs: list[dict], batch_size: int = 8, device: str = "auto",
               dtype_name: str = "float32", placement: Placement | None = None) -> GenerationPlan:
    """The plan of run ``specs`` (``generation_spec``): the missing ones batched as ``plan_generations`` says."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    done = stored_ok(store, [s["run_id"] for s in specs])
    setting = {w: i for i, w in enumerate(dict.fromkeys(spec_sampling(s) for s in specs))}
    batches, seen = [], set()
    for model in dict.fromkeys(s["model"] for s in specs):
        for n in dict.fromkeys(s["max_new_tokens"] for s in specs):
            todo = [s for s in specs if s["model"] == model and s["max_new_tokens"] == n
                    and s["run_id"] not in done and s["run_id"] not in seen]
            seen.update(s["run_id"] for s in todo)
            todo.sort(key=lambda s: (setting[spec_sampling(s)], len(s["prompt_text"]), s["seed"]))
            where = placement or placement_of(model)
            for a in range(0, len(todo), batch_size):
                batches.append(GenerationBatch(model, int(n), tuple(todo[a : a + batch_size]), where))
    check_plan_fits(batches, device, dtype_name)
    return GenerationPlan(specs=specs, batches=batches)


def model_config(name: str):
    """A model's config (a transformers ``PretrainedConfig``, its text part) read without its weights: from an
    embedded model's built cache, a mapped model's folder (``model_map``), a local folder or the hub's local
    cache; None when not at hand without building, downloading or loading anything."""
    from ..engine.embedded import EMBEDDED_MODELS, cache_is_complete, model_cache_dir

    try:
        from transformers import AutoConfig

        entry = lookup(name)
        if entry is not None:
            config = AutoConfig.from_pretrained(entry.folder(), local_files_only=True)
        elif name in EMBEDDED_MODELS:
            folder = model_cache_dir(name)
            if not cache_is_complete(folder):
                return None
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        else:
            config = AutoConfig.from_pretrained(name, local_files_only=True)
        return config.get_text_config() if hasattr(config, "get_text_config") else config
    except Exception:  # no config at hand: the check after the load decides
        return None


def check_plan_fits(batches, device: str, dtype_name: str) -> None:
    """Refuse a plan before any model loads (``MemoryEstimateError``) when one sequence of a batch cannot fit
    in memory even with a one-token prompt (``memory.check_generation_fits``, from the model's config: a
    lower bound; the check after the load counts the real prompts). Models whose config is not at hand
    are left to that check."""
    lengths: dict[str, int] = {}
    for batch in batches:
        lengths[batch.model] = max(lengths.get(batch.model, 0), int(batch.max_new_tokens))
    if not lengths:
        return
    where = resolve_device(device)
    bytes_per = 4 if dtype_name == "float32" else 2
    for name, n in lengths.items():
        config = model_config(name)
        if config is not None:
            try:
                check_generation_fits(config, bytes_per, n + 1, 1, where, prompt_known=False)
            except MemoryEstimateError as err:
                raise MemoryEstimateError(f"{name}: {err}") from None


CLAIM_POLL_S = 1.0  # how often a process waits for runs another process is generating (seconds)
HELD = "held"  # execute_batch(wait=False): a run another process is generating now


def execute_batch(
    store: RunStore,
    batch: GenerationBatch,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
    on_written=None,
    wait: bool = True,
) -> list[tuple[str, str]]:
    """Generate one model-batch and write each of its runs atomically; ``[(run_id, status)]``.

    Idempotent: runs already stored ok are skipped, so a batch that is re-executed after a crash
    (a retried Ray task) writes each run exactly once. Concurrent processes share the work: the runs
    to generate are claimed first (``RunStore.claim``: a lock file per run), runs claimed by another
    process are left to it and waited for (a claim whose holder died is taken over), so two ``aep run``
    on one grid and store generate each run once between them. A batch whose generation raises is
    stored as failed runs with the error (a ``MemoryEstimateError``, raised before anything is generated,
    is raised, not stored); a run is attempted at most once per call. ``on_written(run_id)``
    is called after each write. A batch larger than the free memory holds
    (``generate.batch_size_for_memory``) runs as several smaller ones. ``wait=False``: generate what can
    be claimed now and return the runs another process holds as ``HELD`` instead of waiting for them.
    """
    status: dict[str, str] = {}
    attempted: set[str] = set()
    while True:
        status |= dict.fromkeys(stored_ok(store, batch.run_ids), "ok")
        waiting = [rid for rid in batch.run_ids if rid not in status and rid not in attempted]
        if not waiting:
            break
        with store.claim(waiting) as mine:
            done_meanwhile = stored_ok(store, mine)  # finished by another process before we claimed it
            specs = [s for s in batch.specs if s["run_id"] in mine and s["run_id"] not in done_meanwhile]
            attempted |= {s["run_id"] for s in specs}
            status |= dict(_generate_claimed(store, batch, specs, device, dtype, progress, on_written))
        if not mine:  # every run left is being generated by another process
            if not wait:
                return [(rid, status.get(rid, HELD)) for rid in batch.run_ids]
            wait_for_other_processes()
    return [(rid, status.get(rid, "failed")) for rid in batch.run_ids]


def wait_for_other_processes() -> None:
    """One pause of ``execute_batch`` while other processes generate the runs it waits for."""
    time.sleep(CLAIM_POLL_S)


def _generate_claimed(store, batch, specs, device, dtype, progress, on_written) -> list[tuple[str, str]]:
    from ..engine.generate import encode_prompt
    from ..engine.memory import batch_size_for_memory

    if not specs:
        return []
    model, tokenizer = cached_model(batch.model, device, dtype, batch.placement)
    # the planned batch is an upper bound: split it so that its KV caches and step temporaries fit in
    # the memory free now (a GPU shared with other work, a long paper-profile length)
    longest_prompt = max(len(encode_prompt(tokenizer, s["prompt_text"])) for s in specs)
    fits = batch_size_for_memory(model, longest_prompt + batch.max_new_tokens, len(specs), prompt_tokens=longest_prompt)
    out = []
    for a in range(0, len(specs), fits):
        out += _generate_and_store(store, batch, specs[a : a + fits], model, tokenizer, progress, on_written)
    return out


def failure(err: BaseException) -> dict:
    """The fields of a run stored as failed: ``status`` and an ``error`` with the exception and where it
    came from (a rerun regenerates failed runs)."""
    where = "".join(traceback.format_tb(err.__traceback__, limit=3)) if err.__traceback__ else ""
    return {"status": "failed", "error": f"{type(err).__name__}: {err}\n{where}"}


class ImpossibleStatisticsError(ValueError):
    """A run's token statistics are impossible for a healthy model (``impossible_statistics``)."""


STATISTIC_COLUMNS = frozenset(bits_columns())  # never NaN (a token outside the support has +inf)
FINITE_COLUMNS = frozenset(finite_columns())  # of a distribution over a finite vocabulary: always finite


def impossible_statistics(tokens: pd.DataFrame, sampled_from_q: bool = True) -> str | None:
    """Why a run's per-token table (one row per continuation token) cannot come from a healthy model, in
    one line; None when nothing is impossible.

    Impossible: a NaN in any statistic in bits (``STATISTIC_COLUMNS``: surprisals, entropies, varentropies,
    the cross columns; the stats convention is ``+inf``, never NaN, for a token outside the support); an
    infinite or negative entropy or varentropy (``FINITE_COLUMNS``; a distribution over a finite vocabulary
    has finite ones); every token infinitely surprising under the raw ``p``; and, when ``sampled_from_q``
    (the tokens were drawn from this table's ``q``: a generation, or a variant scoring its own text), every
    token outside ``q``. A scorer's truncated ``q`` may exclude every token of another model's text: not impossible.
    NaN logits (NaN weights, a damaged weights file) give NaN entropies and infinite surprisals.
    """
    n = len(tokens)
    if n == 0:
        return None
    columns = [c for c in tokens.columns if c in STATISTIC_COLUMNS]
    for col in columns:
        values = tokens[col].to_numpy(dtype=float)
        if np.isnan(values).any():
            return f"{col} is NaN at {int(np.isnan(values).sum())} of {n} tokens (non-finite logits?)"
        if col in FINITE_COLUMNS and not np.isfinite(values).all():
            return f"{col} is infinite at {int(np.isinf(values).sum())} of {n} tokens (non-finite logits?)"
        if col in FINITE_COLUMNS and (values < -1e-9).any():
            return f"{col} is negative at {int((values < -1e-9).sum())} of {n} tokens"
    outside = [column("surprisal", RAW)] + ([column("surprisal", SAMP)] if sampled_from_q else [])
    for col in (c for c in outside if c in tokens):
        if np.isposinf(tokens[col].to_numpy(dtype=float)).all():
            return f"{col} is +inf at every one of the {n} tokens (each outside the distribution it was drawn from)"
    return None


def checked_statistics(tokens: pd.DataFrame, sampled_from_q: bool = True) -> pd.DataFrame:
    """``tokens`` itself, or ``ImpossibleStatisticsError`` with the reason (``impossible_statistics``)."""
    reason = impossible_statistics(tokens, sampled_from_q)
    if reason is not None:
        raise ImpossibleStatisticsError(f"impossible statistics, not stored as ok: {reason}")
    return tokens


def _generate_and_store(store, batch, specs, model, tokenizer, progress, on_written) -> list[tuple[str, str]]:
    from ..engine.generate import generate

    started = utc_now()
    t0 = time.perf_counter()
    try:
        results = generate(model, tokenizer, [s["prompt_text"] for s in specs], [s["seed"] for s in specs],
                           [spec_sampling(s) for s in specs], batch.max_new_tokens, progress=progress)
        failed = None
    except MemoryEstimateError:  # refused before anything was generated: not a failed run
        raise
    except Exception as err:  # stored as failed runs; the grid goes on
        results, failed = [None] * len(specs), failure(err)
    elapsed = time.perf_counter() - t0
    out = []
    for spec, res in zip(specs, results):
        row = spec | model.aep_identity | run_provenance() | {
            "model": batch.model, "started_at": started, "elapsed_s": elapsed, "batch_size": len(specs),
        } | ({"placement": batch.placement.as_dict()} if batch.placement is not None else {})
        row_failed = failed
        if res is not None:
            try:
                tokens = checked_statistics(res.tokens)
            except ImpossibleStatisticsError as err:  # stored as failed, regenerated by a rerun
                res, row_failed = None, failure(err)
        if res is None:
            row |= row_failed
            store.write_run(row, None)
        else:
            n = len(res.token_ids)
            row |= {"status": "ok", "error": None, "n_prompt_tokens": len(res.prompt_ids), "n_tokens": n,
                    "stop_reason": res.stop_reason, "text": res.text,
                    "tokens_per_s": len(specs) * batch.max_new_tokens / elapsed if elapsed else None}
            row |= summary_columns(tokens)
            store.write_run(row, tokens)
        out.append((spec["run_id"], row["status"]))
        if on_written is not None:
            on_written(spec["run_id"])
    return out


def execute_local(store: RunStore, plan: GenerationPlan, device: str = "auto", dtype: str = "auto",
                  progress: bool = True) -> None:
    """Run a plan's batches in this process, with a progress bar over the grid: first what no other process
    is generating, then (waiting for them) the runs other processes held. Two processes on one grid and
    store (two notebooks, two ``aep run``) so share its batches; waiting at the first batch another process
    held, each would otherwise have found the next one taken as well, and only one of them generated."""
    bar = tqdm(total=len(plan.specs), initial=len(plan.specs) - plan.n_missing, unit="run", desc="grid",
               disable=not progress or not plan.batches)
    with bar:
        held = []
        for batch in plan.batches:
            elsewhere = {rid for rid, st in execute_batch(store, batch, device, dtype, progress, wait=False)
                         if st == HELD}
            if elsewhere:
                held.append(replace(batch, specs=tuple(s for s in batch.specs if s["run_id"] in elsewhere)))
            bar.update(len(batch.specs) - len(elsewhere))
        for batch in held:
            execute_batch(store, batch, device, dtype, progress=progress)
            bar.update(len(batch.specs))


def ensure_generations(
    store: RunStore,
    models: list[str],
    prompt_ids: list[str],
    seeds: list[int],
    sampling: Sampling | list[Sampling],
    max_new_tokens: int,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Make sure every (model, prompt, seed, sampling) generation exists in ``store``; return their run rows.

    ``sampling``: one ``Sampling``, or several (every model at each; their runs share batches: see
    ``ensure_samplings``). Stored ok runs are reused, missing or failed ones are generated, ``batch_size``
    sequences at a time per model. A batch that raises is stored as failed runs (with the error) and the
    others go on.
    """
    samplings = [sampling] if isinstance(sampling, Sampling) else list(sampling)
    return ensure_samplings(store, models, prompt_ids, {s: list(seeds) for s in samplings}, max_new_tokens,
                            batch_size, device, dtype, progress)


def ensure_samplings(
    store: RunStore,
    models: list[str],
    prompt_ids: list[str],
    seeds_by_sampling: dict[Sampling, list[int]],
    max_new_tokens: int,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """``ensure_generations`` with its own seeds per sampling (``seeds_by_sampling``: ``Sampling -> seeds``):
    every model × prompt at each sampling and its seeds. The runs of all the samplings are planned together,
    so a model's runs at several settings fill its batches (``plan_specs``); ``sampled_with`` picks one
    setting's rows out of the result."""
    dtype_name = resolved_dtype(device, dtype)
    texts = {p: prompt_text(p) for p in dict.fromkeys(prompt_ids)}
    specs = [generation_spec(m, p, s, w, max_new_tokens, dtype_name, prompt=texts[p])
             for m in models for w, ws in seeds_by_sampling.items() for p in prompt_ids for s in ws]
    plan = plan_specs(store, specs, batch_size, device, dtype_name)
    execute_local(store, plan, device, dtype, progress=progress)
    return store.runs(run_id=[s["run_id"] for s in plan.specs])


def sampled_with(runs: pd.DataFrame, sampling: Sampling) -> pd.Series:
    """Which of the run rows ``runs`` were sampled with ``sampling`` (a boolean mask)."""
    mask = pd.Series(True, index=runs.index)
    for key, value in sampling.as_dict().items():
        mask &= runs[key] == value
    return mask
