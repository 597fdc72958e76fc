"""Statistical inference for the typicality measurements: p-values, confidence intervals, tests.

Three layers, all plain functions of numpy arrays:

- **per run**: the ``z``-test of docs/science.md. Under the AEP null ("the text was sampled from the
  distribution the statistics were computed under") ``z_n`` is approximately N(0, 1), so a run's ``z``
  has a two-sided p-value and two one-sided ones: *under-typical* (``z > 0``: the text is less likely
  than the model's own samples; another author) and *over-typical* (``z < 0``: more likely than the
  model's own samples; a lower temperature, a stronger model, or memorised text).
- **per group of runs**: bootstrap confidence intervals (``scipy.stats.bootstrap``) of a mean, a median
  or a share; AUROC and TPR at a fixed FPR with bootstrap CIs over texts.
- **between two groups**: Welch's t-test and the Mann-Whitney U test with their effect sizes
  (Cohen's d / Hedges' g, rank-biserial correlation), and Holm's correction over many comparisons.

**The CLT caveat.** ``z_n`` is a martingale CLT statistic: N(0, 1) only asymptotically, and only when
the text really was sampled from the scoring distribution. In practice

- short texts are not normal: the first tokens have small and very uneven varentropies, so one
  surprising token can dominate ``z``. Below ``MIN_TOKENS_CLT`` (64) tokens the p-values are flagged
  ``clt_ok = False``; treat them as descriptive. A burn-in (dropping the first tokens from the running
  shares) changes the shares within ±1σ/±2σ, not the final ``z``, which uses every scored token;
- heavy tails (a token of near-zero probability, rank in the thousands) make the normal tail
  optimistic at very small p (below about 1e-4 the p-value is a ranking, not a calibrated probability);
- for text *not* sampled from the model (human text, another model's text) there is no null: ``z`` is a
  score, and its thresholds must be calibrated on held-out text of the kind to be accepted (see
  ``calibrated_threshold``), and the FPR they actually give reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

MIN_TOKENS_CLT = 64  # below this many scored tokens the normal approximation of z is not trusted


# ---------------------------------------------------------------------------------------------------
# per run: the z-test


def z_pvalues(z) -> dict[str, np.ndarray | float]:
    """p-values of typicality scores ``z`` (scalar or array) under the AEP null ``z ~ N(0, 1)``.

    ``p_two_sided = 2 Φ(-|z|)``; ``p_under = 1 - Φ(z)`` (alternative: under-typical, ``z > 0``);
    ``p_over = Φ(z)`` (alternative: over-typical, ``z < 0``). NaN ``z`` gives NaN p-values; ``+inf``
    (a token outside the support) gives ``p_under = 0``.
    """
    z = np.asarray(z, dtype=float)
    out = {"p_two_sided": 2.0 * st.norm.sf(np.abs(z)), "p_under": st.norm.sf(z), "p_over": st.norm.cdf(z)}
    if z.ndim == 0:
        return {k: float(v) for k, v in out.items()}
    return out


def z_test(z: float, n_tokens: int, alpha: float = 0.05, min_tokens: int = MIN_TOKENS_CLT) -> dict:
    """The z-test of one run: the three p-values, a verdict at level ``alpha`` and whether the CLT applies.

    ``verdict``: ``under-typical`` (two-sided test rejects, ``z > 0``), ``over-typical`` (rejects, ``z < 0``),
    ``typical`` (does not reject), or ``undefined`` (NaN ``z``). ``clt_ok`` is False below ``min_tokens``.
    """
    p = z_pvalues(z)
    if not np.isfinite(z) and np.isnan(z):
        verdict = "undefined"
    elif p["p_two_sided"] < alpha:
        verdict = "under-typical" if z > 0 else "over-typical"
    else:
        verdict = "typical"
    return {"z": float(z), **p, "alpha": alpha, "verdict": verdict, "n_tokens": int(n_tokens),
            "clt_ok": bool(n_tokens >= min_tokens)}


def add_pvalues(runs, z_col: str = "z", n_col: str | None = "n_tokens", alpha: float = 0.05,
                min_tokens: int = MIN_TOKENS_CLT, suffix: str = ""):
    """A copy of a per-run table (``runs.run_summaries`` rows, or any frame with a ``z`` column) with the
    z-test columns ``p_two_sided``, ``p_under``, ``p_over``, ``reject`` (two-sided at ``alpha``) and, when
    ``n_col`` is there, ``clt_ok`` (at least ``min_tokens`` tokens); ``suffix`` is appended to each name."""
    out = runs.copy()
    p = z_pvalues(out[z_col].to_numpy(dtype=float))
    for k, v in p.items():
        out[k + suffix] = v
    out["reject" + suffix] = out["p_two_sided" + suffix] < alpha
    if n_col is not None and n_col in out:
        out["clt_ok" + suffix] = out[n_col] >= min_tokens
    return out


def z_level(alpha: float, sided: str = "one") -> float:
    """The critical value of N(0, 1): ``Φ^{-1}(1 - alpha)`` (one-sided) or ``Φ^{-1}(1 - alpha/2)``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(st.norm.isf(alpha if sided == "one" else alpha / 2))


# ---------------------------------------------------------------------------------------------------
# per group: bootstrap confidence intervals


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def bootstrap_ci(values, statistic=np.mean, confidence: float = 0.95, n_resamples: int = 2000,
                 method: str = "percentile", seed: int = 0) -> Interval:
    """Bootstrap CI of ``statistic`` over ``values`` (one value per run or text; NaNs dropped).

    ``statistic`` must accept ``axis=`` (numpy reductions do). Fewer than two values: the interval is
    NaN; all values equal: the degenerate interval ``[v, v]``.
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    est = float(statistic(v, axis=-1))
    if len(v) < 2:
        return Interval(est, math.nan, math.nan, len(v))
    if np.all(v == v[0]):
        return Interval(est, est, est, len(v))
    res = st.bootstrap((v,), statistic, confidence_level=confidence, n_resamples=n_resamples, method=method,
                       vectorized=True, random_state=np.random.default_rng(seed))
    return Interval(est, float(res.confidence_interval.low), float(res.confidence_interval.high), len(v))


def share(values, axis=-1):
    """Mean of a boolean array (a share), usable as a bootstrap statistic."""
    return np.mean(values, axis=axis)


# ---------------------------------------------------------------------------------------------------
# detection metrics: AUROC and TPR at a fixed FPR, vectorised (bootstrap resamples along an axis)


def _as_pair(negatives, positives):
    neg = np.asarray(negatives, dtype=float)
    pos = np.asarray(positives, dtype=float)
    return neg, pos


def auroc(negatives, positives, axis: int = -1):
    """Area under the ROC curve for scores where *higher means positive* (machine, member).

    The Mann-Whitney form ``P(pos > neg) + P(pos = neg)/2``, equal to ``sklearn.metrics.roc_auc_score``
    with labels 0 for ``negatives`` and 1 for ``positives``; vectorised along ``axis`` (so it is a
    ``scipy.stats.bootstrap`` statistic).
    """
    neg, pos = _as_pair(negatives, positives)
    neg, pos = np.moveaxis(neg, axis, -1), np.moveaxis(pos, axis, -1)
    n0, n1 = neg.shape[-1], pos.shape[-1]
    if n0 == 0 or n1 == 0:
        return np.full(np.broadcast_shapes(neg.shape[:-1], pos.shape[:-1]), np.nan)[()]
    lead = np.broadcast_shapes(neg.shape[:-1], pos.shape[:-1])
    both = np.concatenate([np.broadcast_to(neg, lead + (n0,)), np.broadcast_to(pos, lead + (n1,))], axis=-1)
    ranks = st.rankdata(both, axis=-1)  # average ranks for ties
    u = ranks[..., n0:].sum(-1) - n1 * (n1 + 1) / 2.0
    out = u / (n0 * n1)
    return float(out) if np.ndim(out) == 0 else out


def tpr_at_fpr(negatives, positives, fpr: float, axis: int = -1):
    """Largest TPR among thresholds whose FPR is at most ``fpr`` (the ROC point sklearn's ``roc_curve``
    gives), for *higher = positive* scores; vectorised along ``axis``.

    A text is called positive when its score is ``>= t``. With ``k = floor(fpr * n_neg)`` negatives
    allowed above the threshold, the best threshold lies just above the ``(k+1)``-th largest negative,
    so ``TPR = share of positives strictly above it`` (all positives when ``k >= n_neg``).
    """
    neg, pos = _as_pair(negatives, positives)
    neg, pos = np.moveaxis(neg, axis, -1), np.moveaxis(pos, axis, -1)
    n0 = neg.shape[-1]
    k = int(math.floor(fpr * n0 + 1e-9))
    if k >= n0:
        return np.ones(pos.shape[:-1]) if pos.ndim > 1 else 1.0
    desc = -np.sort(-neg, axis=-1)
    cut = desc[..., k : k + 1]
    out = np.mean(pos > cut, axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def metric_ci(negatives, positives, metric: str = "auroc", fpr: float = 0.05, confidence: float = 0.95,
              n_resamples: int = 1000, seed: int = 0) -> Interval:
    """A detection metric (``auroc`` or ``tpr``) with a percentile bootstrap CI, resampling the negatives
    and the positives independently (stratified: each resample keeps both class sizes)."""
    neg, pos = _as_pair(negatives, positives)
    neg, pos = neg[~np.isnan(neg)], pos[~np.isnan(pos)]  # NaN dropped; +-inf are valid extreme scores
    if metric == "auroc":
        fn = auroc
    elif metric == "tpr":
        def fn(a, b, axis=-1):
            return tpr_at_fpr(a, b, fpr, axis=axis)
    else:
        raise ValueError(f"metric must be 'auroc' or 'tpr', got {metric!r}")
    if len(neg) == 0 or len(pos) == 0:
        return Interval(math.nan, math.nan, math.nan, len(neg) + len(pos))
    est = float(fn(neg, pos))
    if len(neg) < 2 or len(pos) < 2:
        return Interval(est, math.nan, math.nan, len(neg) + len(pos))
    rng = np.random.default_rng(seed)
    i0 = rng.integers(0, len(neg), size=(n_resamples, len(neg)))
    i1 = rng.integers(0, len(pos), size=(n_resamples, len(pos)))
    boot = np.asarray(fn(neg[i0], pos[i1], axis=-1), dtype=float)
    a = (1 - confidence) / 2
    return Interval(est, float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a)), len(neg) + len(pos))


# ---------------------------------------------------------------------------------------------------
# thresholds


def calibrated_threshold(negatives, fpr: float) -> float:
    """The threshold ``t`` that calls a score positive when ``score > t`` with a false-positive rate of at
    most ``fpr`` on ``negatives`` (held-out human text): the ``(k+1)``-th largest negative, ``k =
    floor(fpr * n)``. On new negatives the realised FPR scatters around ``fpr`` (binomial, n of the
    calibration split); report it."""
    neg = np.sort(np.asarray(negatives, dtype=float)[~np.isnan(np.asarray(negatives, dtype=float))])[::-1]
    if not len(neg):
        return math.nan
    k = int(math.floor(fpr * len(neg) + 1e-9))
    return float(neg[k]) if k < len(neg) else -math.inf


def rates(negatives, positives, threshold: float) -> dict:
    """FPR, TPR and their counts of the rule ``score > threshold`` (higher = positive)."""
    neg = np.asarray(negatives, dtype=float)
    pos = np.asarray(positives, dtype=float)
    neg, pos = neg[~np.isnan(neg)], pos[~np.isnan(pos)]
    fp, tp = int((neg > threshold).sum()), int((pos > threshold).sum())
    return {"threshold": float(threshold), "fpr": fp / len(neg) if len(neg) else math.nan,
            "tpr": tp / len(pos) if len(pos) else math.nan, "n_neg": len(neg), "n_pos": len(pos),
            "false_positives": fp, "true_positives": tp}


def binomial_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a rate ``k/n`` (an FPR measured on ``n`` human texts)."""
    if n == 0:
        return (math.nan, math.nan)
    ci = st.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return (float(ci.low), float(ci.high))


# ---------------------------------------------------------------------------------------------------
# two groups: tests and effect sizes


def cohens_d(a, b) -> float:
    """Cohen's d of ``mean(a) - mean(b)`` with the pooled standard deviation (NaN if undefined)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return float((a.mean() - b.mean()) / math.sqrt(pooled)) if pooled > 0 else math.nan


def compare_groups(a, b, alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Is group ``a`` different from group ``b``? (one value per run in each; NaN/inf dropped)

    Returns the means and the mean difference ``a - b`` with a bootstrap CI; Welch's t-test
    (``p_welch``) with Cohen's d and Hedges' g; the Mann-Whitney U test (``p_mannwhitney``) with the
    rank-biserial correlation ``r_rb = 2·P(a > b) - 1`` (in [-1, 1]; 0 = no shift) and the common-language
    effect ``P(a > b)``; ``robust``: both tests reject at ``alpha`` (apply ``holm`` first when many pairs
    are compared).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = {"n_a": len(a), "n_b": len(b), "mean_a": float(a.mean()) if len(a) else math.nan,
           "mean_b": float(b.mean()) if len(b) else math.nan}
    if len(a) < 2 or len(b) < 2:
        return out | {"diff": math.nan, "diff_low": math.nan, "diff_high": math.nan, "p_welch": math.nan,
                      "p_mannwhitney": math.nan, "cohens_d": math.nan, "hedges_g": math.nan, "r_rb": math.nan,
                      "p_a_gt_b": math.nan, "robust": False}
    welch = st.ttest_ind(a, b, equal_var=False)
    mw = st.mannwhitneyu(a, b, alternative="two-sided")
    p_gt = float(mw.statistic) / (len(a) * len(b))
    d = cohens_d(a, b)
    g = d * (1 - 3 / (4 * (len(a) + len(b)) - 9)) if np.isfinite(d) else math.nan
    res = st.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                       n_resamples=n_resamples, method="percentile", vectorized=True,
                       random_state=np.random.default_rng(seed))
    p_welch = float(welch.pvalue) if np.isfinite(welch.pvalue) else math.nan
    return out | {"diff": out["mean_a"] - out["mean_b"], "diff_low": float(res.confidence_interval.low),
                  "diff_high": float(res.confidence_interval.high), "p_welch": p_welch,
                  "p_mannwhitney": float(mw.pvalue), "cohens_d": d, "hedges_g": g, "r_rb": 2 * p_gt - 1,
                  "p_a_gt_b": p_gt,
                  "robust": bool(p_welch < alpha and float(mw.pvalue) < alpha)}


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control over many comparisons); NaN kept."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    vals = p[ok]
    m = len(vals)
    if not m:
        return out
    order = np.argsort(vals)
    adj = np.maximum.accumulate((m - np.arange(m)) * vals[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out
