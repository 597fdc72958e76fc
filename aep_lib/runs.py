"""Runs: from parameters to stored generations, and back to statistics.

``ensure_generations`` expands models × prompts × seeds at one sampling setting into run specs,
skips those already stored (status ok), generates the rest batched per model (one load, sequences
batched) and writes each run atomically. ``generation_runs`` / ``run_summaries`` /
``running_stats`` are the query side the notebooks use.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import platform
import subprocess
import time
import traceback

import numpy as np
import pandas as pd

from .params import Sampling, prompt_text
from .paths import project_root
from .stats import running, summarize
from .store import RunStore, canonical_run_id

ENGINE_VERSION = 1  # bump when a change alters what a stored run contains
DISTRIBUTIONS = ("samp", "raw")


# --- provenance -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """Git SHA and package versions, recorded with every run."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True,
                             timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        sha = "unknown"
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "numpy", "pandas", "aep-lib"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    versions["python"] = platform.python_version()
    return {"git_sha": sha, "versions_json": json.dumps(versions, sort_keys=True)}


# --- loaded models, shared within one process -------------------------------------------------------


@functools.lru_cache(maxsize=4)
def cached_model(name: str, device: str = "auto", dtype: str = "auto"):
    """``load_model`` once per process per (name, device, dtype)."""
    from .models import load_model

    return load_model(name, device=device, dtype=dtype)


def resolved_dtype(device: str = "auto", dtype: str = "auto") -> str:
    from .models import resolve_device, resolve_dtype

    return str(resolve_dtype(dtype, resolve_device(device))).replace("torch.", "")


# --- generation runs --------------------------------------------------------------------------------


def generation_spec(model: str, prompt_id: str, seed: int, sampling: Sampling, max_new_tokens: int,
                    dtype: str = "float32", prompt: str | None = None) -> dict:
    """The canonical parameters of one generation run, its ``run_id`` and folder label."""
    prompt = prompt if prompt is not None else prompt_text(prompt_id)
    params = {"kind": "generate", "engine": ENGINE_VERSION, "model": model, "prompt_id": prompt_id,
              "prompt_text": prompt, "seed": int(seed), **sampling.as_dict(),
              "max_new_tokens": int(max_new_tokens), "dtype": dtype}
    return params | {
        "run_id": canonical_run_id(params),
        "label": f"s{seed}_{sampling.label}_n{max_new_tokens}",
        "params_json": json.dumps(params, sort_keys=True),
    }


def _summary_columns(tokens: pd.DataFrame) -> dict:
    out = {}
    for dist in DISTRIBUTIONS:
        cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
        if all(c in tokens for c in cols):
            s = summarize(*(tokens[c].to_numpy() for c in cols))
            out |= {f"{k}_{dist}": s[k] for k in ("l", "h", "D", "sigma", "z")}
    return out


def ensure_generations(
    store: RunStore,
    models: list[str],
    prompt_ids: list[str],
    seeds: list[int],
    sampling: Sampling,
    max_new_tokens: int,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Make sure every (model, prompt, seed) generation exists in ``store``; return their run rows.

    Stored ok runs are reused, missing or failed ones are generated, ``batch_size`` sequences at a
    time per model. A batch that raises is stored as failed runs (with the error) and the others go on.
    """
    from .generate import generate

    dtype_name = resolved_dtype(device, dtype)
    specs = [generation_spec(m, p, s, sampling, max_new_tokens, dtype_name)
             for m in models for p in prompt_ids for s in seeds]
    missing = [s for s in specs if not store.has_ok_run(s["run_id"])]
    for model_name in models:
        todo = sorted((s for s in missing if s["model"] == model_name), key=lambda s: (len(s["prompt_text"]), s["seed"]))
        if not todo:
            continue
        model, tokenizer = cached_model(model_name, device, dtype)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            t0 = time.perf_counter()
            try:
                results = generate(model, tokenizer, [s["prompt_text"] for s in batch], [s["seed"] for s in batch],
                                   sampling, max_new_tokens, progress=progress)
                error = None
            except Exception as err:  # stored as failed runs; the grid goes on
                results, error = [None] * len(batch), f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
            elapsed = time.perf_counter() - t0
            for spec, res in zip(batch, results):
                row = spec | model.aep_identity | provenance() | {
                    "model": model_name, "started_at": started, "elapsed_s": elapsed, "batch_size": len(batch),
                }
                if res is None:
                    store.write_run(row | {"status": "failed", "error": error}, None)
                    continue
                n = len(res.token_ids)
                row |= {"status": "ok", "error": None, "n_prompt_tokens": len(res.prompt_ids), "n_tokens": n,
                        "stop_reason": res.stop_reason, "text": res.text,
                        "tokens_per_s": len(batch) * max_new_tokens / elapsed if elapsed else None}
                row |= _summary_columns(res.tokens)
                store.write_run(row, res.tokens)
    runs = store.runs(run_id=[s["run_id"] for s in specs])
    return runs


# --- the query side ----------------------------------------------------------------------------------


def run_summaries(store: RunStore, runs: pd.DataFrame, burn_in: int = 0) -> pd.DataFrame:
    """One row per (run, distribution): final ``l, h, D, sigma, z`` and the shares of positions
    (after ``burn_in``) within ±1σ and ±2σ, joined to the run's model, prompt and seed."""
    rows = []
    keep = [c for c in ("run_id", "model", "prompt_id", "seed", "temperature", "top_k", "top_p") if c in runs]
    tokens = store.tokens(runs["run_id"].tolist()) if len(runs) else pd.DataFrame()
    for run_id, group in tokens.groupby("run_id", sort=False):
        meta = runs.loc[runs["run_id"] == run_id, keep].iloc[0].to_dict()
        for dist in DISTRIBUTIONS:
            cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
            if all(c in group for c in cols):
                rows.append(meta | {"dist": dist} | summarize(*(group[c].to_numpy() for c in cols), burn_in=burn_in))
    return pd.DataFrame(rows)


def running_stats(store: RunStore, run_ids, dist: str = "samp") -> pd.DataFrame:
    """Long table of running ``l_n, h_n, D_n, sigma_n, z_n`` per run (``dist``: 'samp' or 'raw')."""
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    cols = [f"surprisal_{dist}", f"entropy_{dist}", f"varentropy_{dist}"]
    tokens = store.tokens(list(run_ids), columns=["run_id", "position", *cols])
    frames = []
    for run_id, group in tokens.groupby("run_id", sort=False):
        r = running(*(group[c].to_numpy() for c in cols))
        frames.append(pd.DataFrame({"run_id": run_id, **r}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["run_id", "n", "l_n", "h_n", "D_n", "sigma_n", "z_n"])


def share_within(values, bound: float) -> float:
    """Share of finite-or-infinite, non-NaN ``values`` with ``|v| <= bound``."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(np.mean(np.abs(v) <= bound)) if len(v) else float("nan")
