"""The statistics of docs/science.md, in bits.

Per position (torch, from logits): surprisal ``s_t``, entropy ``H_t``, varentropy ``V_t``, rank ``r_t``
and greedy token ``g_t`` of one next-token distribution; for two models on a shared vocabulary the
cross-entropy ``c_t``, cross-varentropy ``W_t`` and ``KL_t``.

Running (numpy, over the continuation of one run): ``l_n``, ``h_n``, ``D_n``, ``sigma_n``, ``z_n``, and a
per-run summary.

Conventions: ``0·log 0 = 0``; a token outside the support has surprisal ``+inf`` (never NaN); a
one-hot distribution has ``H = V = 0``; ``z`` is NaN where ``sigma`` is 0 (the summary says why).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .columns import DISTRIBUTIONS, SAMP, TYPICALITY, typicality_columns

LN2 = math.log(2.0)
# y = logit - max of an excluded token (p = 0): finite, so that 0·y and 0·y² stay 0 without masking passes
EXCLUDED = {torch.float64: -1e150, torch.float32: -1e15}


def token_stats(logits: torch.Tensor, tokens: torch.Tensor, with_rank: bool = True,
                row_block: int | None = None, precision: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Statistics of ``[rows, vocab]`` logits at the observed ``[rows]`` tokens.

    Returns ``surprisal``, ``entropy``, ``varentropy`` (``[rows]`` float64, bits) and, with
    ``with_rank``, ``rank`` (``[rows]`` int64, 1 = greedy) and ``greedy`` (``[rows]`` int64 ids).

    With ``y = logit - max`` and ``p = e^y / Z``: ``H = log Z - E_p[y]`` and ``V = Var_p[y]`` (nats,
    then bits), computed in ``precision`` with excluded tokens (``-inf``) as a huge finite negative so
    that ``0 * y`` stays 0 without masking passes.

    ``row_block``: rows per pass (the same numbers, bit for bit: each row is reduced on its own), so that
    the ``[rows, vocab]`` temporaries of one pass stay small (``static_decode.stats_row_block``: within a
    core's cache).

    ``precision``: the dtype of the arithmetic (the results are float64 either way). float32 is for the
    logits of a 16-bit model, whose own rounding is a thousand times the float32 arithmetic's (1e-6 bits
    against float64 on bfloat16-rounded logits, ``tests/core/test_stats.py``).
    """
    if row_block and logits.shape[0] > row_block:
        parts = [token_stats(logits[a : a + row_block], tokens[a : a + row_block], with_rank, precision=precision)
                 for a in range(0, logits.shape[0], row_block)]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    x = logits.to(precision)
    top, greedy = x.max(-1, keepdim=True)
    excluded = EXCLUDED[precision]
    y = (x - top).nan_to_num_(neginf=excluded, nan=excluded)  # excluded tokens: p = 0, finite y (and y^2)
    e = exp_of_kept(y)
    z = e.sum(-1, keepdim=True)
    mean_y = (e * y).sum(-1, keepdim=True) / z
    dev = y - mean_y
    var_y = (e * dev * dev).sum(-1) / z.squeeze(-1)
    log_z = z.log()
    entropy = (log_z - mean_y).squeeze(-1) / LN2
    y_obs = y.gather(-1, tokens.long().unsqueeze(-1))
    surprisal = ((log_z - y_obs).squeeze(-1) / LN2).where(y_obs.squeeze(-1) > excluded / 10, torch.inf)
    varentropy = var_y / (LN2 * LN2)
    out = {"surprisal": surprisal.double(), "entropy": entropy.double(), "varentropy": varentropy.double()}
    if with_rank:
        out["rank"] = 1 + (y > y_obs).sum(-1)
        out["greedy"] = greedy.squeeze(-1)
    return out


def stats_precision(logits_dtype: torch.dtype) -> torch.dtype:
    """The arithmetic of ``token_stats`` for logits of ``logits_dtype``: float64 for float32 (and float64)
    logits, float32 for a 16-bit model's (whose own rounding is far above float32's)."""
    return torch.float64 if logits_dtype in (torch.float32, torch.float64) else torch.float32


def exp_of_kept(y: torch.Tensor) -> torch.Tensor:
    """``exp(y)`` of ``y`` whose excluded tokens are ``EXCLUDED[y.dtype]`` (0 there, bit for bit ``y.exp()``).

    The excluded tokens (most of a truncated ``q``) are exponentiated as ``exp(0)`` and then zeroed, so that
    no argument lies in exp's underflow range (below -745), where it is slow.
    """
    kept = y > EXCLUDED[y.dtype] / 10
    if not torch.compiler.is_compiling() and bool(kept.all()):  # (no data-dependent branch in a compiled step)
        return y.exp()
    return torch.where(kept, y, 0.0).exp_().mul_(kept)


def _shifted(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = logit - max`` in float64 with excluded tokens as a huge finite negative, and ``e = exp(y)``."""
    x = logits.double()
    y = (x - x.max(-1, keepdim=True).values).nan_to_num_(neginf=-1e150, nan=-1e150)
    return y, exp_of_kept(y)


def cross_stats(ref_logits: torch.Tensor, scorer_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross statistics of a reference ``q_A`` against a scorer ``p_B``, both ``[rows, vocab]``.

    ``cross_entropy`` ``c = -sum q_A log2 p_B``, ``cross_varentropy`` ``W = sum q_A (log2 p_B + c)^2``,
    ``entropy_ref`` ``H^A`` and ``kl = c - H^A`` (all ``[rows]`` float64, bits). Where ``q_A`` puts mass
    on a token ``p_B`` excludes, ``c``, ``W`` and ``kl`` are ``+inf``.

    One pass per model, as ``token_stats``: with ``y = logit - max`` of each, ``log p_B = y_B - log Z_B``
    so ``c = log Z_B - E_qA[y_B]``, ``W = Var_qA[y_B]`` and ``H^A = log Z_A - E_qA[y_A]`` (nats, then bits).
    """
    y_a, e_a = _shifted(ref_logits)
    y_b, e_b = _shifted(scorer_logits)
    z_a = e_a.sum(-1, keepdim=True)
    mean_ya = (e_a * y_a).sum(-1, keepdim=True) / z_a
    mean_yb = (e_a * y_b).sum(-1, keepdim=True) / z_a
    dev = y_b - mean_yb
    var_yb = (e_a * dev * dev).sum(-1) / z_a.squeeze(-1)
    entropy_ref = (z_a.log() - mean_ya).squeeze(-1) / LN2
    cross = (e_b.sum(-1, keepdim=True).log() - mean_yb).squeeze(-1) / LN2
    cross_var = var_yb / (LN2 * LN2)
    outside = ((e_a > 0) & (y_b < -1e149)).any(-1)  # q_A's mass on a token p_B excludes
    inf = torch.full_like(cross, torch.inf)
    cross, cross_var = cross.where(~outside, inf), cross_var.where(~outside, inf)
    return {"cross_entropy": cross, "cross_varentropy": cross_var, "entropy_ref": entropy_ref,
            "kl": cross - entropy_ref}


# --- running averages over one run --------------------------------------------------------------------


def running(surprisal, entropy, varentropy) -> dict[str, np.ndarray]:
    """Running ``l_n, h_n, D_n, sigma_n, z_n`` (``n = 1..N``) of one run's per-token arrays.

    For cross-model typicality pass the cross-entropy as ``entropy`` and the cross-varentropy as
    ``varentropy``: then ``h_n`` is ``h^(A,B)_n`` and ``z_n`` is ``z^(A,B)_n``.
    """
    s = np.asarray(surprisal, dtype=np.float64)
    h = np.asarray(entropy, dtype=np.float64)
    v = np.asarray(varentropy, dtype=np.float64)
    n = np.arange(1, len(s) + 1, dtype=np.float64)
    l_n = np.cumsum(s) / n
    h_n = np.cumsum(h) / n
    with np.errstate(invalid="ignore"):
        d_n = l_n - h_n
    sigma_n = np.sqrt(np.cumsum(v)) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        z_n = np.where(sigma_n > 0, d_n / np.where(sigma_n > 0, sigma_n, 1.0), np.nan)
    return {"n": n.astype(np.int64), "l_n": l_n, "h_n": h_n, "D_n": d_n, "sigma_n": sigma_n, "z_n": z_n}


def summarize(surprisal, entropy, varentropy, burn_in: int = 0) -> dict:
    """Final ``l, h, D, sigma, z`` of one run, and the share of positions ``n > burn_in`` with
    ``|z_n| <= 1`` and ``<= 2``. ``z_reason`` explains a NaN ``z``."""
    r = running(surprisal, entropy, varentropy)
    n_tokens = len(r["n"])
    out = {"n_tokens": n_tokens, "burn_in": burn_in, "n_inf_surprisal": int(np.isinf(np.asarray(surprisal)).sum())}
    if n_tokens == 0:
        return out | {"l": np.nan, "h": np.nan, "D": np.nan, "sigma": np.nan, "z": np.nan,
                      "frac_within_1sigma": np.nan, "frac_within_2sigma": np.nan, "z_reason": "no tokens"}
    for key, name in [("l_n", "l"), ("h_n", "h"), ("D_n", "D"), ("sigma_n", "sigma"), ("z_n", "z")]:
        out[name] = float(r[key][-1])
    out["frac_within_1sigma"] = share_within(r["z_n"], 1, burn_in, nan="drop")
    out["frac_within_2sigma"] = share_within(r["z_n"], 2, burn_in, nan="drop")
    if out["sigma"] == 0:
        out["z_reason"] = "zero varentropy (one-hot distributions): z undefined"
    elif out["n_inf_surprisal"]:
        out["z_reason"] = "a token outside the support (infinite surprisal)"
    else:
        out["z_reason"] = ""
    return out


def distribution_summaries(df: pd.DataFrame, reasons: bool = False) -> dict:
    """Final ``l, h, D, sigma, z`` (bits; ``z`` in standard errors) under each of ``DISTRIBUTIONS`` whose
    columns ``df`` has, as ``l_samp, ..., z_raw`` in that order (the column order of stored run rows); with
    ``reasons``, each distribution's ``z_reason_<dist>`` after its ``z``."""
    out = {}
    for dist in DISTRIBUTIONS:
        cols = typicality_columns(dist)
        if all(c in df for c in cols):
            s = summarize(*(df[c].to_numpy() for c in cols))
            out |= {f"{k}_{dist}": s[k] for k in ("l", "h", "D", "sigma", "z")}
            if reasons:
                out[f"z_reason_{dist}"] = s["z_reason"]
    return out


def comparison_summary(df: pd.DataFrame) -> dict:
    """Final statistics of one comparison: B's view (``_samp`` = ``q_B``, ``_raw`` = ``p_B``) and, on a
    shared vocabulary, the cross view (``h_cross = h^(A,B)``, ``z_cross = z^(A,B)``)."""
    out = distribution_summaries(df, reasons=True)
    cross = typicality_columns(SAMP, cross=True)
    if cross[1] in df:
        s = summarize(*(df[c].to_numpy() for c in cross))
        out |= {"h_cross": s["h"], "D_cross": s["D"], "sigma_cross": s["sigma"], "z_cross": s["z"],
                "z_reason_cross": s["z_reason"], "kl_mean": float(df["kl"].mean()),
                "h_ref": float(df["entropy_ref"].mean())}
    return out


def window_summaries(tokens: pd.DataFrame, window_tokens: int, dist: str = "raw") -> pd.DataFrame:
    """Per window: ``l, h, D, sigma, z`` of its ``window_tokens`` tokens (``window`` from ``position``)."""
    rows = []
    cols = typicality_columns(dist)
    for w, g in full_windows(tokens, window_tokens):
        s = summarize(*(g[c].to_numpy() for c in cols))
        rows.append({"window": w, **{k: s[k] for k in ("l", "h", "D", "sigma", "z")}})
    return pd.DataFrame(rows, columns=["window", "l", "h", "D", "sigma", "z"])


def share_within(values, bound: float, burn_in: int = 0, nan: str = "outside") -> float:
    """Share of ``values[burn_in:]`` (e.g. one run's ``z_n``) with ``|v| <= bound``; NaN when there are none.

    The one rule for a NaN value (``z`` undefined: zero varentropy so far): ``nan="outside"`` counts it
    as outside the band (a figure's share of positions within ±kσ), ``nan="drop"`` leaves it out (the
    per-run summary's shares, over the positions where ``z`` is defined).
    """
    if nan not in ("outside", "drop"):
        raise ValueError(f"nan must be 'outside' or 'drop', got {nan!r}")
    v = np.asarray(values, dtype=float)[burn_in:]
    v = v[~np.isnan(v)] if nan == "drop" else np.nan_to_num(v, nan=np.inf)
    return float(np.mean(np.abs(v) <= bound)) if len(v) else float("nan")


def standardise(surprisal, entropy, varentropy) -> np.ndarray:
    """``(s_t - H_t) / sqrt(V_t)`` per token (NaN where ``V_t = 0``; ``+inf`` for an excluded token)."""
    s, h, v = (np.asarray(a, dtype=float) for a in (surprisal, entropy, varentropy))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, (s - h) / np.sqrt(np.where(v > 0, v, 1.0)), np.nan)


def standardised_surprisal(tokens: pd.DataFrame, dist: str = "raw") -> np.ndarray:
    """``standardise`` of a token table's ``surprisal_<dist>``, ``entropy_<dist>``, ``varentropy_<dist>``."""
    return standardise(*(tokens[c].to_numpy(dtype=float) for c in typicality_columns(dist)))


def full_windows(tokens: pd.DataFrame, window_tokens: int):
    """``(window, rows)`` for every window of exactly ``window_tokens`` tokens (``window`` column, else
    ``position // window_tokens``), in order; a last partial window is left out."""
    df = tokens if "window" in tokens else tokens.assign(window=tokens["position"] // window_tokens)
    for w, g in df.groupby("window", sort=True):
        if len(g) == window_tokens:
            yield int(w), g


def z_at_cuts(tokens: pd.DataFrame, cuts) -> pd.DataFrame:
    """Typicality of the tokens whose span ends within each character cut: ``cut``, ``n_tokens``, ``l``,
    ``h``, ``z`` (NaN without tokens; ``+inf`` when a token is outside ``q``), ``bpb`` (bits per byte).

    ``tokens``: one row per token with the ``token_stats`` keys ``surprisal``, ``entropy``, ``varentropy``
    (bits), ``char_end`` (the end of its span, characters) and optionally ``n_bytes_to`` (UTF-8 bytes up to it).
    """
    s, h, v = (tokens[k].to_numpy(dtype=float) for k in TYPICALITY)
    ends = tokens["char_end"].to_numpy()
    cs, ch, cv = np.cumsum(s), np.cumsum(h), np.cumsum(v)
    rows = []
    for cut in cuts:
        n = int(np.searchsorted(ends, cut, side="right"))
        if n == 0:
            rows.append({"cut": cut, "n_tokens": 0, "l": math.nan, "h": math.nan, "z": math.nan, "bpb": math.nan,
                         "n_bytes": 0})
            continue
        l, hh, sig = cs[n - 1] / n, ch[n - 1] / n, math.sqrt(cv[n - 1]) / n
        if math.isinf(l):
            z = math.inf
        else:
            z = (l - hh) / sig if sig > 0 else math.nan
        nb = int(tokens["n_bytes_to"].iloc[n - 1]) if "n_bytes_to" in tokens else 0
        rows.append({"cut": cut, "n_tokens": n, "l": l, "h": hh, "z": z, "bpb": cs[n - 1] / nb if nb else math.nan,
                     "n_bytes": nb})
    return pd.DataFrame(rows)
