"""Length dynamics (aep_lib.analysis.dynamics) and the in-context positive control (aep_lib.analysis.membership), by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aep_lib.analysis import dynamics, membership
from aep_lib.core.sampling import Sampling
from aep_lib.corpora import ExternalText, ParamsError
from aep_lib.params import NOTEBOOK_SCHEMAS, validate
from aep_lib.store.run_store import RunStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class FakeStore:
    """``tokens(run_ids, columns)`` over one token table, as ``RunStore.tokens`` returns it."""

    def __init__(self, tokens: pd.DataFrame):
        self.table = tokens

    def tokens(self, run_ids, columns=None):
        out = self.table[self.table["run_id"].isin(list(run_ids))]
        return out[columns] if columns else out


# --- entropy against position ---------------------------------------------------------------------------


def test_position_bins_and_centres():
    edges = dynamics.position_bins(7, 3)  # geomspace(1, 8, 4) = 1, 2, 4, 8
    assert edges.tolist() == [1, 2, 4, 8]
    np.testing.assert_allclose(dynamics.bin_centres(edges), [1.0, math.sqrt(6), math.sqrt(28)])
    # 513^(k/12) rounded: 513^(9/12) = 107.8, 513^(10/12) = 181.3, 513^(11/12) = 305.0
    assert dynamics.position_bins(512, 12).tolist() == [1, 2, 3, 5, 8, 13, 23, 38, 64, 108, 181, 305, 513]
    assert dynamics.position_bins(3, 12).tolist() == [1, 2, 3, 4]  # equal rounded edges merge
    with pytest.raises(ValueError, match="n_max"):
        dynamics.position_bins(0)


def test_binned_entropy_by_hand():
    tokens = pd.DataFrame({"run_id": "r", "position": range(7), "entropy_raw": [1.0, 2, 4, 3, 3, 5, 9],
                           "entropy_samp": [0.0, 1, 1, 2, 2, 2, 2]})
    b = dynamics.binned_entropy(tokens, [1, 2, 4, 8])
    raw, samp = b[b["dist"] == "raw"], b[b["dist"] == "samp"]
    assert raw["H"].tolist() == [1.0, 3.0, 5.0] and samp["H"].tolist() == [0.0, 1.0, 2.0]
    assert raw["n_positions"].tolist() == [1, 2, 4] and raw["t_lo"].tolist() == [1, 2, 4]
    assert raw["t_hi"].tolist() == [1, 3, 7]
    assert len(dynamics.binned_entropy(tokens, [1, 2, 4])) == 4  # positions beyond the last edge left out


def test_entropy_slopes_recover_known_trends():
    edges = dynamics.position_bins(64, 6)
    t = np.arange(1, 65)
    centre = dynamics.bin_centres(edges)[np.searchsorted(edges, t, side="right") - 1]
    per_doubling = pd.DataFrame({"run_id": "a", "position": t - 1, "entropy_raw": 2.0 + 0.25 * np.log2(centre)})
    linear = pd.DataFrame({"run_id": "b", "position": t - 1, "entropy_raw": 1.0 + 0.002 * t})
    s = dynamics.entropy_slopes(pd.concat([per_doubling, linear]), edges).set_index("run_id")
    assert s.at["a", "slope_doubling"] == pytest.approx(0.25)  # bin means exactly 2 + 0.25 log2 t_mid
    assert s.at["b", "slope_per_1k"] == pytest.approx(2.0)  # 0.002 bits per token
    assert s.at["b", "H_first"] == pytest.approx(1.002) and s.at["b", "H_mean"] == pytest.approx(1.065)
    assert set(s["dist"]) == {"raw"} and s.at["a", "n_bins"] == len(edges) - 1
    assert math.isnan(dynamics.ols_slope([1, 1], [2, 3]))


def test_trend_verdict_and_slope_summary():
    assert [dynamics.trend_verdict(*ci) for ci in [(0.1, 0.3), (-0.3, -0.1), (-0.1, 0.2), (math.nan, 1)]] == [
        "grows", "falls", "flat", "undetermined"]
    slopes = pd.DataFrame({"model": ["m"] * 4 + ["n"] * 4, "slope_doubling": [0.3] * 4 + [-1.0, 1.0, -1.0, 1.0],
                           "slope_per_1k": [-2.0] * 4 + [1.0] * 4})
    s = dynamics.slope_summary(slopes, "model", n_resamples=200).set_index(["model", "metric"])
    assert s.loc[("m", "slope_doubling"), ["mean", "low", "high"]].tolist() == [0.3, 0.3, 0.3]
    assert s.loc[("m", "slope_doubling"), "verdict"] == "grows"
    assert s.loc[("m", "slope_per_1k"), "verdict"] == "falls"
    assert s.loc[("n", "slope_doubling"), "verdict"] == "flat" and s.loc[("n", "slope_doubling"), "n_runs"] == 4


def test_entropy_profile_joins_run_meta_and_profile_means():
    tokens = pd.DataFrame({"run_id": ["r1"] * 3 + ["r2"] * 3, "position": [0, 1, 2] * 2,
                           "entropy_samp": [1.0, 2, 2, 3, 4, 4], "entropy_raw": [1.0, 2, 2, 3, 4, 4]})
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "model": "m", "prompt_id": "p01", "seed": [0, 1], "setting": "main"})
    prof = dynamics.entropy_profile(FakeStore(tokens), runs, [1, 2, 4])
    means = dynamics.profile_means(prof[prof["dist"] == "raw"], ["model", "setting"])
    assert means["H"].tolist() == [2.0, 3.0] and means["n_runs"].tolist() == [2, 2]
    assert means["se"].tolist() == pytest.approx([1.0, 1.0])  # sd sqrt(2) over 2 runs: se sqrt(2)/sqrt(2)
    slopes = dynamics.entropy_slope_table(FakeStore(tokens), runs, [1, 2, 4])
    assert set(slopes["setting"]) == {"main"} and slopes["slope_doubling"].tolist() == pytest.approx(
        [1 / math.log2(math.sqrt(6))] * 4)


# --- boredom and confusion ------------------------------------------------------------------------------


def test_repetition_share_by_hand():
    ids = [1, 2, 1, 2, 1, 2]  # bigrams ending at 1..5: 12 21 12 21 12
    r = dynamics.repetition_share(ids, n=2, window=6)
    assert math.isnan(r[0])
    np.testing.assert_allclose(r[1:], [0.0, 0.0, 1 / 3, 0.5, 0.6])
    r3 = dynamics.repetition_share(ids, n=2, window=3)  # two bigrams inside 3 tokens: never the same
    np.testing.assert_allclose(r3[1:], [0.0, 0.0, 0.0, 0.0, 0.0])
    assert dynamics.repetition_share([5] * 10, n=4, window=8)[-1] == pytest.approx(1 - 1 / 5)
    assert np.nan_to_num(dynamics.repetition_share(range(20), 4, 8)).max() == 0.0
    with pytest.raises(ValueError, match="n <= window"):
        dynamics.repetition_share(ids, n=4, window=3)


def test_late_slope_and_regime():
    n = np.arange(1, 201)
    assert dynamics.late_slope(3.0 - 0.01 * n) == pytest.approx(-1.0)  # bits/token per 100 tokens
    bent = np.where(n < 100, 5.0 - 0.05 * n, 0.5 + 0.002 * n)  # falls, then rises slowly in the second half
    assert dynamics.late_slope(bent) == pytest.approx(0.2)
    assert [dynamics.regime(s, 0.05) for s in (-0.2, 0.03, 0.2, math.nan)] == [
        "boredom", "flat", "confusion", "undetermined"]


def test_decoding_dynamics_and_setting_summary():
    n = 8
    tokens = pd.DataFrame({"run_id": ["a"] * n + ["b"] * n, "position": list(range(n)) * 2,
                           "token_id": [7] * n + list(range(n)),
                           "surprisal_raw": [4.0, 2, 2, 0, 0, 0, 0, 0] + [1.0] * n,
                           "entropy_raw": [1.0] * 2 * n, "varentropy_raw": [1.0] * 2 * n})
    runs = pd.DataFrame({"run_id": ["a", "b"], "model": "m", "setting": ["k1", "t1"]})
    d = dynamics.decoding_dynamics(FakeStore(tokens), runs, n_gram=2, window=4)
    a = d[d["run_id"] == "a"]
    assert a["l_n"].tolist() == pytest.approx([4, 3, 8 / 3, 2, 1.6, 8 / 6, 8 / 7, 1])
    assert a["rep"].iloc[-1] == pytest.approx(2 / 3) and d[d["run_id"] == "b"]["rep"].iloc[-1] == 0.0
    s = dynamics.setting_summary(d, tolerance=1.0).set_index("setting")
    assert s.at["k1", "regime"] == "boredom" and s.at["t1", "regime"] == "flat"
    assert s.at["t1", "slope"] == 0.0 and s.at["k1", "l"] == 1.0 and s.at["k1", "l_half"] == 2.0
    assert s.at["k1", "n_runs"] == 1 and math.isnan(s.at["k1", "slope_low"])  # one run: no CI


def test_turning_points():
    summary = pd.DataFrame({"model": ["m"] * 4 + ["n"] * 2, "setting": ["k1", "p0.5", "t1", "t1.5", "k1", "t1"],
                            "slope": [-0.4, -0.1, 0.0, 0.5, 0.2, 0.3]})
    t = dynamics.turning_points(summary)
    assert t.to_dict("records") == [{"model": "m", "below": "p0.5", "above": "t1", "slope_below": -0.1,
                                     "slope_above": 0.0}]


def test_ensure_setting_runs_generates_greedy_once_and_plans_every_setting_at_once(monkeypatch):
    calls = []

    def fake_ensure(store, models, prompt_ids, seeds_by_sampling, max_new_tokens, **kw):
        calls.append([(w.top_k, w.temperature, seeds) for w, seeds in seeds_by_sampling.items()])
        return pd.DataFrame([{"run_id": f"{m}{p}{s}{w.label}", "model": m, "seed": s, "status": "ok", "error": None,
                              **w.as_dict()}
                             for w, seeds in seeds_by_sampling.items() for m in models for p in prompt_ids
                             for s in seeds])

    monkeypatch.setattr(dynamics, "ensure_samplings", fake_ensure)
    P = validate(NOTEBOOK_SCHEMAS["boredom_confusion"], {"models": "m", "settings": "k1,t1.3", "prompts": "p01,p02",
                                                         "n_seeds": 3, "max_new_tokens": 64})
    runs = dynamics.ensure_setting_runs(None, P.models, P.samplings, P.prompts, P.seeds, P.max_new_tokens)
    assert calls == [[(1, 1.0, [0]), (0, 1.3, [0, 1, 2])]]  # one plan: the settings share batches
    assert runs.groupby("setting").size().to_dict() == {"k1": 2, "t1.3": 6}
    monkeypatch.setattr(dynamics, "ensure_samplings",
                        lambda *a, **k: fake_ensure(*a, **k).assign(status="failed", error="boom\nwhere"))
    with pytest.raises(RuntimeError, match="boom"):
        dynamics.ensure_setting_runs(None, ["m"], {"t1": Sampling()}, ["p01"], [0], 8)


def test_params_of_the_three_notebooks():
    P = validate(NOTEBOOK_SCHEMAS["control_in_context_memorisation"], {"models": "a", "filler_tokens": "512,0,128,0"})
    assert P.filler_tokens == [0, 128, 512] and P.filler_chars == 20_000
    assert validate(NOTEBOOK_SCHEMAS["control_in_context_memorisation"], {"models": "a", "filler_tokens": 4096}
                    ).filler_chars == 8 * 4096
    with pytest.raises(ParamsError, match="filler_tokens"):
        validate(NOTEBOOK_SCHEMAS["control_in_context_memorisation"], {"models": "a", "filler_tokens": "-1"})
    with pytest.raises(ParamsError, match="window"):
        validate(NOTEBOOK_SCHEMAS["boredom_confusion"], {"models": "a", "settings": "t1", "prompts": "p01",
                                                         "max_new_tokens": 32, "window": 64})
    with pytest.raises(ParamsError, match="repeated settings"):
        validate(NOTEBOOK_SCHEMAS["boredom_confusion"], {"models": "a", "settings": "t1,t1", "prompts": "p01"})
    for name in ("boredom_confusion", "app_sampling_sensitivity"):  # one SettingSpecs type for both
        with pytest.raises(ParamsError, match="key 'settings'.*m@zz.*expected"):
            validate(NOTEBOOK_SCHEMAS[name], {"models": "a", "scorers": "a,b", "settings": "t1,zz", "prompts": "p01"})
    drift = validate(NOTEBOOK_SCHEMAS["entropy_rate_drift"], {"models": "a", "prompts": "p01"})
    assert drift.n_bins == 10 and drift.top_p == 0.9  # the defaults of the notebook's parameters cell


# --- the in-context positive control -----------------------------------------------------------------------


def test_in_context_prompt_and_first_crossing():
    assert membership.in_context_prompt("P", "F", "repeated") == "P\n\nF\n\n"
    assert membership.in_context_prompt("P", "", "repeated", separator=" | ") == "P | "
    assert membership.in_context_prompt("P", "F", "unseen") == "F\n\n"
    assert membership.in_context_prompt("P", "", "unseen") == ""
    with pytest.raises(ValueError, match="condition"):
        membership.in_context_prompt("P", "", "seen")
    assert membership.first_crossing([0.5, -1.0, -2.0, -1.5, -3.0]) == 3.0
    assert math.isnan(membership.first_crossing([0.5, -1.9]))


def test_joined_texts():
    items = [ExternalText(f"x-{i}", "news", t, "f") for i, t in enumerate(["aaaa", "bb", "cccccc", "d", "ee"])]
    joined = membership.joined_texts(items, 5, min_chars=6, separator="|")
    assert [(j.text_id, j.text) for j in joined] == [("x-0+x-1", "aaaa|bb"), ("x-2", "cccccc")]  # "d|ee": too short
    assert [j.text_id for j in membership.joined_texts(items, 1, min_chars=1)] == ["x-0"]


def test_in_context_summary_and_auroc_by_hand():
    finals = pd.DataFrame({"model": "m", "condition": ["repeated"] * 3 + ["unseen"] * 3, "filler_tokens": 0,
                           "z": [-3.0, -2.5, -1.0, 1.0, -1.5, 2.0], "l": [0.2, 0.3, 0.4, 5.0, 0.35, 6.0],
                           "h": 1.0, "D": 0.0, "sd_token": 2.0, "rank1_share": 0.5, "context_tokens": 10,
                           "n_detect": [30.0, 60.0, math.nan, math.nan, math.nan, math.nan]})
    finals = finals.assign(over_typicality=-finals["z"], log_likelihood=-finals["l"])
    s = membership.in_context_summary(finals).set_index("condition")
    assert s.at["repeated", "z"] == pytest.approx(-6.5 / 3) and s.at["repeated", "share_below"] == pytest.approx(2 / 3)
    assert s.at["repeated", "n_detect"] == 45.0 and math.isnan(s.at["unseen", "n_detect"])
    a = membership.in_context_auroc(finals, n_resamples=200).set_index("score")
    # -z: repeated 3, 2.5, 1 against unseen -1, 1.5, -2: 8 of 9 pairs ranked right
    assert a.at["over_typicality", "auroc"] == pytest.approx(8 / 9)
    # -l: repeated -0.2, -0.3, -0.4 against -5, -0.35, -6: the unseen -0.35 beats the repeated -0.4 only
    assert a.at["log_likelihood", "auroc"] == pytest.approx(8 / 9) and a.at["log_likelihood", "n_repeated"] == 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _tiny import build_tiny_model

    from aep_lib.engine.models import load_model

    return load_model(str(build_tiny_model(tmp_path_factory.mktemp("tiny"))), device="cpu", dtype="float32")


def test_token_prefix_is_an_exact_prefix(tiny):
    _, tok = tiny
    text = "The history of the lighthouse begins with fire on a hill."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    five = membership.token_prefix(tok, text, 5)
    assert text.startswith(five) and tok(five, add_special_tokens=False)["input_ids"] == ids[:5]
    assert membership.token_prefix(tok, text, len(ids) + 3) == text


def test_ensure_in_context_scores_masks_caches_and_stays_in_the_window(tiny, tmp_path):
    from aep_lib.engine.models import ModelPool

    model, tok = tiny
    pool = ModelPool(extra={"tiny": (model, tok)})
    store = RunStore(tmp_path / "store")
    item = ExternalText("t0", "news", "In the spring a young doctor arrived in the small mountain village.", "x")
    filler = "Ocean currents move heat. " * 40
    runs = membership.ensure_in_context_scores(store, "tiny", [item], filler, 8, [0, 6], pool=pool)
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    passage = membership.token_prefix(tok, item.text, 8)
    r = runs.set_index(["condition", "filler_tokens"])
    assert r.loc[("repeated", 0), "context_tokens"] == len(tok(passage + "\n\n")["input_ids"])
    assert r.loc[("unseen", 6), "context_tokens"] == len(tok(membership.token_prefix(tok, filler, 6) + "\n\n")[
        "input_ids"])
    # the scored tokens are the second copy's: the passage's own tokens (after the context)
    scored = store.tokens(r.loc[("repeated", 6), "run_id"])
    assert tok.decode(scored["token_id"].tolist()).strip() == passage.strip()
    assert (r["context_window"] == 256).all()
    # cached: a second call scores nothing (the rows come back unchanged)
    again = membership.ensure_in_context_scores(store, "tiny", [item], filler, 8, [0, 6], pool=pool)
    assert sorted(again["run_id"]) == sorted(runs["run_id"])
    assert sorted(again["elapsed_s"]) == sorted(runs["elapsed_s"])
    running, finals = membership.in_context_running(store, again.astype({"filler_tokens": float}))  # as a store
    assert all(pd.api.types.is_integer_dtype(finals[c]) for c in membership.IN_CONTEXT_COUNTS)  # holding others
    longest = running.groupby("run_id")["n"].max()
    assert len(finals) == 4 and all(longest[r.run_id] == r.n_tokens for r in finals.itertuples())
    last = running.merge(longest.rename("last"), on="run_id").query("n == last").set_index("run_id")
    assert all(last.at[r.run_id, "z_n"] == pytest.approx(r.z) for r in finals.itertuples())
    assert all(r.z == pytest.approx(r.D * math.sqrt(r.n_tokens) / r.sd_token) for r in finals.itertuples())
    # a filler beyond the context window (256 tokens) is a failed record naming the window, not a silent cut
    long = membership.ensure_in_context_scores(store, "tiny", [item], filler * 4, 8, [300], pool=pool)
    assert set(long["status"]) == {"failed"} and long["error"].str.contains("context window").all()
