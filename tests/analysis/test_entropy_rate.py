"""Entropy rates (``aep_lib.analysis.entropy_rate``): calibration against human text, adversarial prompts, the refined
typical set; their parameter schemas; and the three notebooks under the paper params with stand-in models.

The statistics are checked on stores and tables built by hand, with answers computed by hand: the binomial
bound on the share of runs within ±2σ, the interpolated closing temperature, the gap and the per-byte
entropy of known token rows, the relative typical-set size of known per-byte entropies.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from aep_lib.analysis import entropy_rate
from aep_lib.params import NOTEBOOK_SCHEMAS, ParamsError, read_params_file, validate
from aep_lib.paths import params_dir
from aep_lib.store.run_store import RunStore


def _write(store: RunStore, run_id: str, tokens: dict, **meta) -> None:
    run = {"run_id": run_id, "kind": meta.pop("kind", "generate"), "model": meta.pop("model", "m"), "status": "ok"}
    store.write_run(run | meta, pd.DataFrame(tokens))


# --- calibration --------------------------------------------------------------------------------------


def test_generation_rates_cut_at_n_and_text_rates(tmp_path):
    store = RunStore(tmp_path / "store")
    _write(store, "g1", {"position": [0, 1, 2, 3], "surprisal_samp": [1.0, 3.0, 5.0, 7.0],
                         "entropy_samp": [2.0, 2.0, 4.0, 8.0]}, prompt_id="p01", seed=0, temperature=1.0)
    _write(store, "t1", {"window": [0, 0, 1], "position": [0, 1, 2], "surprisal_raw": [1.0, 2.0, 6.0],
                         "entropy_raw": [1.0, 1.0, 4.0]}, kind="score", text_id="alice", group="classic")
    runs = store.runs(kind="generate")
    full = entropy_rate.generation_rates(store, runs)
    assert full.iloc[0][["n_tokens", "h", "l"]].tolist() == [4, 4.0, 4.0]  # (2+2+4+8)/4, (1+3+5+7)/4
    cut = entropy_rate.generation_rates(store, runs, n=2)
    assert cut.iloc[0][["n_tokens", "h", "l"]].tolist() == [2, 2.0, 2.0]
    assert list(cut.columns) == ["run_id", "model", "prompt_id", "seed", "temperature", "n_tokens", "h", "l"]
    human = entropy_rate.text_rates(store, store.runs(kind="score"))
    assert human.iloc[0].tolist() == ["m", "alice", "classic", 3, 3.0, 2.0]
    assert entropy_rate.generation_rates(store, runs.assign(status="failed")).empty


def test_calibration_gap_by_hand():
    gen = pd.DataFrame({"model": ["a", "a", "b", "b"], "h": [3.0, 5.0, 1.0, 1.0]})
    human = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 2, "l": [2.0, 2.0, 2.0, 3.0, 3.0]})
    gap = entropy_rate.calibration_gap(gen, human).set_index("model")
    assert gap.loc["a", ["h_gen", "l_human", "gap", "ratio"]].tolist() == [4.0, 2.0, 2.0, 2.0]
    assert gap.loc["a", "n_runs"] == 2 and gap.loc["a", "n_texts"] == 3
    assert 1.0 <= gap.loc["a", "gap_low"] <= 2.0 <= gap.loc["a", "gap_high"] <= 3.0  # h resamples within [3, 5]
    assert gap.loc["b", ["gap", "h_low", "h_high"]].tolist() == [-2.0, 1.0, 1.0]  # constant: a degenerate CI


def test_calibration_comparison_puts_the_paper_table_beside_the_gap():
    gap = pd.DataFrame({"model": ["a"], "h_gen": [3.0], "l_human": [2.0], "gap": [1.0]})
    t = entropy_rate.calibration_comparison(gap)
    assert t["source"].tolist() == ["Braverman et al."] * 4 + ["embedded"]
    gpt2 = t.set_index("model").loc["GPT-2"]
    assert (gpt2["ppl_human"], gpt2["ppl_generations"]) == (23.7, 61.2)
    assert gpt2["gap_bits"] == pytest.approx(1.36864, abs=1e-5)  # log2(61.2 / 23.7)
    assert t.set_index("model").loc["AWD-LSTM", "gap_bits"] == pytest.approx(0.67529, abs=1e-5)  # log2(93.1 / 58.3)
    assert t.iloc[-1][["ppl_human", "ppl_generations", "gap_bits"]].tolist() == [4.0, 8.0, 1.0]  # 2^2, 2^3


def test_sign_verdict():
    assert [entropy_rate.sign_verdict(*ci) for ci in [(0.1, 2.0), (-1.0, -0.2), (-0.5, 0.5), (0.0, 1.0),
                                                      (math.nan, 1.0)]] == [
        "holds", "reversed", "not shown", "not shown", "undetermined"]


def test_crossing_interpolates_and_never_extrapolates():
    assert entropy_rate.crossing([0.8, 1.0, 1.2], [2.0, 3.0, 5.0], 4.0) == pytest.approx(1.1)
    assert entropy_rate.crossing([0.8, 1.0, 1.2], [2.0, 3.0, 5.0], 3.0) == 1.0
    assert entropy_rate.crossing([0.8, 1.2], [5.0, 1.0], 2.0) == pytest.approx(1.1)  # a falling curve too
    assert math.isnan(entropy_rate.crossing([0.8, 1.0, 1.2], [2.0, 3.0, 5.0], 1.0))
    assert math.isnan(entropy_rate.crossing([0.8, 1.0, 1.2], [2.0, 3.0, 5.0], 6.0))


def test_closing_temperature_and_temperature_curve():
    gen = pd.DataFrame({"model": ["a"] * 6 + ["b"] * 4, "temperature": [0.8, 0.8, 1.0, 1.0, 1.2, 1.2, 0.8, 0.8, 1.2, 1.2],
                        "h": [2.0, 2.0, 3.0, 3.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0]})
    human = pd.DataFrame({"model": ["a", "a", "b"], "l": [4.0, 4.0, 4.0]})
    t = entropy_rate.closing_temperature(gen, human, n_resamples=50).set_index("model")
    assert t.loc["a", ["temperature", "low", "high", "share_defined"]].tolist() == pytest.approx([1.1, 1.1, 1.1, 1.0])
    assert t.loc["a", "where"] == "inside"
    assert math.isnan(t.loc["b", "temperature"]) and t.loc["b", "where"] == "below" and t.loc["b", "share_defined"] == 0
    curve = entropy_rate.temperature_curve(gen.sample(frac=1.0, random_state=1))
    assert curve[["model", "temperature", "n_runs", "h"]].values.tolist() == [
        ["a", 0.8, 2, 2.0], ["a", 1.0, 2, 3.0], ["a", 1.2, 2, 5.0], ["b", 0.8, 2, 6.0], ["b", 1.2, 2, 7.0]]


def test_running_means_by_hand():
    running = pd.DataFrame({"model": "a", "run_id": ["r1", "r2", "r1", "r2"], "n": [1, 1, 2, 2],
                            "h_n": [1.0, 3.0, 2.0, 2.0]})
    m = entropy_rate.running_means(running, "h_n")
    assert m["mean"].tolist() == [2.0, 2.0] and m["n_runs"].tolist() == [2, 2]
    assert m["half_width"].tolist() == pytest.approx([1.96 * math.sqrt(2.0) / math.sqrt(2.0), 0.0])


def test_temperature_sweep_needs_the_grid_to_cover_temperature_1(tmp_path):
    grid = pd.DataFrame({"model": ["a"], "prompt_id": ["p01"], "seed": [0], "top_p": [1.0], "temperature": [1.0],
                         "max_new_tokens": [64], "status": ["ok"], "run_id": ["r"]})
    store = RunStore(tmp_path / "store")
    ok = entropy_rate.ensure_temperature_sweep(store, ["a"], ["p01"], [0], [1.0], 64, grid_runs=grid)
    assert ok["run_id"].tolist() == ["r"]
    with pytest.raises(ValueError, match="128 tokens"):  # the grid's runs are too short
        entropy_rate.ensure_temperature_sweep(store, ["a"], ["p01"], [0], [1.0], 128, grid_runs=grid)
    with pytest.raises(ValueError, match="2 seeds"):
        entropy_rate.ensure_temperature_sweep(store, ["a"], ["p01"], [0, 1], [1.0], 64, grid_runs=grid)


# --- adversarial prompts ------------------------------------------------------------------------------


def test_clt_share_bound_by_hand():
    # Binomial(8, 0.9545): P(X = 8) = 0.689, P(X = 7) = 0.263, P(X = 6) = 0.044, so P(X <= 5) = 0.004 < 0.01
    # <= P(X <= 6) = 0.048 < 0.05 <= P(X <= 7): the 1% quantile is 6, the 5% quantile 7.
    assert entropy_rate.clt_share_bound(8) == 0.75
    assert entropy_rate.clt_share_bound(8, alpha=0.05) == 0.875
    assert entropy_rate.clt_share_bound(1) == 0.0  # one run may fall outside with probability 0.046 > 0.01
    assert entropy_rate.clt_share_bound(1, alpha=0.05) == 1.0
    with pytest.raises(ValueError, match="at least 1"):
        entropy_rate.clt_share_bound(0)


def test_prompt_shares_by_hand():
    finals = pd.DataFrame({"prompt_group": ["x"] * 4 + ["y"] * 2, "z": [0.5, 3.0, -1.0, np.nan, 0.1, -0.2],
                           "D": [0.0] * 6, "frac_within_2sigma": [1.0, 0.5, 0.5, 0.0, 1.0, 1.0]})
    s = entropy_rate.prompt_shares(finals, by=["prompt_group"]).set_index("prompt_group")
    assert s.loc["x", ["n_runs", "share_z2", "share_z1", "share_positions"]].tolist() == [4, 0.5, 0.5, 0.5]
    assert s.loc["y", ["share_z2", "share_positions"]].tolist() == [1.0, 1.0]
    assert s.loc["x", "expected_at_least"] == entropy_rate.clt_share_bound(4)


def test_cross_view_and_label_prompts():
    sources = pd.DataFrame({"run_id": ["s1", "s2", "s3"], "status": ["ok", "ok", "failed"], "model": ["a", "b", "a"],
                            "prompt_id": ["p01", "p07", "p01"], "seed": [0, 0, 1], "z_samp": [0.5, -1.0, 9.0],
                            "z_raw": [0.4, -1.1, 9.0]})
    records = pd.DataFrame({"source_run_id": ["s1", "s1", "s2", "s2"], "status": ["ok", "ok", "ok", "failed"],
                            "self_pair": [True, False, False, False], "z_samp": [0.0, 6.0, 4.0, 99.0],
                            "z_raw": [0.0, 5.0, 3.0, 99.0], "bpb_source": [1.0, 1.0, 0.8, 0.8],
                            "bpb_scorer": [1.0, 1.5, 1.6, 9.0]})
    v = entropy_rate.cross_view(sources, records)
    assert v["run_id"].tolist() == ["s1", "s2"]  # the failed generation left out
    assert v[["z_own_q", "z_own_p", "z_other_q", "z_other_p"]].values.tolist() == [[0.5, 0.4, 6.0, 5.0],
                                                                                   [-1.0, -1.1, 4.0, 3.0]]
    assert v["bpb_gap"].tolist() == pytest.approx([0.5, 0.8])  # self pair and failed record ignored
    labelled = entropy_rate.label_prompts(v.drop(columns="prompt_id"), sources, ["p01", "p02"])
    assert labelled["prompt_group"].tolist() == ["baseline", "p07"]


# --- the refined typical set ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def test_byte_entropy_counts_the_bytes_of_the_decoded_prefix(tmp_path, tiny):
    from aep_lib.engine.models import load_tokenizer

    text = "The history of the lighthouse begins with fire on a hill."
    ids = load_tokenizer(tiny)(text, add_special_tokens=False)["input_ids"]
    store = RunStore(tmp_path / "store")
    _write(store, "r1", {"position": np.arange(len(ids)), "token_id": ids, "entropy_samp": np.full(len(ids), 0.5)},
           model=tiny, text=text)
    curves = entropy_rate.byte_entropy(store, store.runs(), points=4)
    tok = load_tokenizer(tiny)
    expected_n = sorted({1, len(ids), *np.linspace(1, len(ids), 4).round().astype(int).tolist()})
    assert curves["n"].tolist() == expected_n
    assert curves["n_bytes"].tolist() == [len(tok.decode(ids[:n])) for n in expected_n]  # ASCII: bytes = chars
    assert curves["n_bytes"].iloc[-1] == len(text)
    assert curves["bits"].tolist() == [0.5 * n for n in expected_n]
    assert curves["h_byte"].iloc[-1] == pytest.approx(0.5 * len(ids) / len(text))


def test_at_byte_lengths_interpolates_the_cumulative_bits():
    curves = pd.DataFrame({"run_id": ["r", "r", "q", "q"], "model": ["a", "a", "b", "b"], "n_bytes": [10, 30, 10, 20],
                           "bits": [10.0, 20.0, 5.0, 10.0]})
    at = entropy_rate.at_byte_lengths(curves, [10, 20, 30])
    assert at[["run_id", "N", "h_byte"]].values.tolist() == [["q", 10, 0.5], ["q", 20, 0.5], ["r", 10, 1.0],
                                                            ["r", 20, 0.75], ["r", 30, 20.0 / 30]]
    assert entropy_rate.common_byte_lengths(curves, points=3).tolist() == [10, 15, 20]


def test_relative_typical_set_by_hand():
    per_run = pd.DataFrame({"model": ["a", "a", "b", "b"] * 2, "N": [100] * 4 + [200] * 4,
                            "h_byte": [1.0, 1.2, 0.5, 0.5] * 2, "run_id": ["1", "2", "3", "4"] * 2})
    rel = entropy_rate.relative_typical_set(per_run, [("a", "b"), ("b", "a")])
    ab = rel[rel["model"] == "a"].set_index("N")
    assert ab.loc[100, ["h_byte", "h_byte_other", "log2_typical", "log2_plausible"]].tolist() == pytest.approx(
        [1.1, 0.5, 110.0, 50.0])
    assert ab["log2_relative"].tolist() == pytest.approx([60.0, 120.0])  # N (1.1 - 0.5)
    assert 50.0 - 1e-9 <= ab.loc[100, "low"] <= 60.0 <= ab.loc[100, "high"] <= 70.0 + 1e-9  # the a runs span 1.0-1.2
    ba = rel[rel["model"] == "b"]
    assert ba["log2_relative"].tolist() == pytest.approx([-60.0, -120.0])
    assert len(entropy_rate.ASSUMPTIONS) >= 5 and any("per byte" in a for a in entropy_rate.ASSUMPTIONS)


# --- parameters -----------------------------------------------------------------------------------------


def test_schemas_reject_impossible_values():
    base = {"models": "a,b", "prompts": "p01,p02"}
    cal = NOTEBOOK_SCHEMAS["entropy_rate_calibration"]
    ok = validate(cal, base | {"classics": "x", "temperatures": "1.2,0.8,1.0"})
    assert ok.temperatures == [0.8, 1.0, 1.2] and ok.rate_tokens == 128
    for bad, match in [({"temperatures": "1.0"}, "two distinct"), ({"temperatures": "0,1"}, "two distinct"),
                       ({"temperatures": "hot,cold"}, "numbers"),
                       ({"temperatures": "0.8,1", "window_tokens": 200}, "max_new_tokens"),
                       ({"temperatures": "0.8,1", "n_seeds_sweep": 9}, "n_seeds_sweep")]:
        with pytest.raises(ParamsError, match=match):
            validate(cal, base | {"classics": "x"} | bad)
    adv = NOTEBOOK_SCHEMAS["adversarial_prompts"]
    assert validate(adv, {"models": "a,b", "prompts": "p07,p10", "baseline_prompts": "p01"}).seeds == [0, 1]
    with pytest.raises(ParamsError, match="both adversarial"):
        validate(adv, {"models": "a,b", "prompts": "p07,p01", "baseline_prompts": "p01"})
    with pytest.raises(ParamsError, match="two distinct models"):
        validate(adv, {"models": "a", "prompts": "p07", "baseline_prompts": "p01"})
    with pytest.raises(ParamsError, match="two distinct models"):
        validate(NOTEBOOK_SCHEMAS["refined_typical_set"], {"models": "a", "prompts": "p01"})


def test_cpu_params_share_the_self_grid_and_the_human_scorings():
    def load(name):
        return read_params_file(params_dir() / "cpu" / f"{name}.yaml")

    grid_keys = ["models", "prompts", "n_seeds", "n_seeds_truncated", "top_p", "max_new_tokens", "device", "dtype"]
    fig01 = load("fig01_self_convergence")
    for name in ("entropy_rate_calibration", "refined_typical_set"):
        assert {k: load(name)[k] for k in grid_keys} == {k: fig01[k] for k in grid_keys}, name
    memorised, calibration = load("memorised_texts"), load("entropy_rate_calibration")
    text_keys = ["classics", "news_file", "essays_file", "n_human", "window_tokens", "n_windows", "reflow"]
    assert {k: calibration[k] for k in text_keys} == {k: memorised[k] for k in text_keys}
    adversarial, cross = load("adversarial_prompts"), load("fig06_cross_entropy_histogram")
    assert adversarial["baseline_prompts"] == cross["prompts"]
    assert [adversarial[k] for k in ("n_seeds", "max_new_tokens", "on_eos")] == [cross[k] for k in
                                                                                  ("n_seeds", "max_new_tokens", "on_eos")]
