"""The self-convergence notebooks (Figs 1, 4, 5, 9, 12-15, length scaling, typical-set size): their params,
their shared computations, their code path; and the tables the other notebooks compute.

- the params files of both profiles validate, and each shared grid (the self-convergence grid among them)
  is defined once per profile, in ``params/<profile>/shared/<grid>.yaml`` (so that its runs are generated once);
- ``aep_lib.analysis.tables`` and ``aep_lib.analysis.comparison_tables`` on constructed inputs with hand-computed
  answers; ``aep_lib.report.figures.claim`` prints and records; ``aep_lib.report.plots`` draws;
- the notebooks run end to end under the ``paper`` params with a tiny random model substituted for
  the hub models (no download), through the pipeline (papermill, ``_runs`` included).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from aep_lib.analysis import comparison_tables, tables  # noqa: E402
from aep_lib.core import stats
from aep_lib.params import (  # noqa: E402
    NOTEBOOK_SCHEMAS,
    SHARED_GRIDS,
    ParamsError,
    load_params_file,
    validate,
)
from aep_lib.paths import params_dir  # noqa: E402
from aep_lib.report import figures, pipeline, plots

NOTEBOOKS = ["fig01_self_convergence", "fig04_final_differences", "fig05_convergence_all_models", "fig09_diagnostics",
             "fig12_prompt_scatter", "length_scaling", "typical_set_size"]
GRID_KEYS = ["models", "prompts", "n_seeds", "n_seeds_truncated", "top_p", "max_new_tokens", "device", "dtype"]
PAPER_MODELS = ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "google/gemma-3-1b-pt", "google/gemma-3-12b-pt"]


# --- params -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["cpu", "paper"])
def test_params_files_validate_and_define_each_shared_grid_once(profile):
    """Every member's merged params validate and name one grid; no member file repeats a shared key; no other
    params file of the profile holds the grid's values: the shared file is the only place they appear."""
    folder = params_dir() / profile
    assert set(NOTEBOOKS) <= set(SHARED_GRIDS["self_grid"].members)
    assert set(GRID_KEYS) <= set(SHARED_GRIDS["self_grid"].keys)
    for grid in SHARED_GRIDS.values():
        shared = yaml.safe_load((folder / "shared" / f"{grid.name}.yaml").read_text())
        assert list(shared) == list(grid.keys), grid.name
        seen = {}
        for name in grid.members:
            path = folder / f"{name}.yaml"
            own = yaml.safe_load(path.read_text())
            for entry in [own, *own.get("_runs", [])]:
                assert not set(entry) & set(grid.keys), f"{path} repeats keys of {grid.name}"
            for _, values in pipeline.expand_runs(path):
                p = validate(NOTEBOOK_SCHEMAS[name], values, where=str(path))
                assert p.profile == profile
                seen[name] = tuple(str(getattr(p, k)) for k in grid.keys)
        assert len(set(seen.values())) == 1, f"the {profile} members of {grid.name} name different grids: {seen}"
        for path in folder.glob("*.yaml"):
            own = yaml.safe_load(path.read_text())
            assert not all(own.get(k, object()) == v for k, v in shared.items()), f"{path} repeats {grid.name}"


def test_paper_profile_is_the_studys_setting():
    p = load_params_file(params_dir() / "paper" / "fig05_convergence_all_models.yaml")
    assert p.models == PAPER_MODELS
    assert p.max_new_tokens == 15_000
    assert p.n_seeds * len(p.prompts) == 100  # generations per model
    prompts = [v["prompt"] for _, v in pipeline.expand_runs(params_dir() / "paper" / "fig12_prompt_scatter.yaml")]
    assert prompts == p.prompts  # one per-prompt figure per prompt: Figs 12-15


def test_cpu_profile_has_the_embedded_models_and_enough_runs():
    p = load_params_file(params_dir() / "cpu" / "fig05_convergence_all_models.yaml")
    assert p.models == ["smollm2-135m", "gemma-3-270m"]
    assert len(p.prompts) >= 4 and p.n_seeds * len(p.prompts) >= 16 and p.max_new_tokens >= 512


def test_schema_rejects_a_shown_model_or_prompt_outside_the_grid():
    base = {"models": "a,b", "prompts": "p01,p02"}
    with pytest.raises(ParamsError, match="model"):
        validate(NOTEBOOK_SCHEMAS["fig04_final_differences"], base | {"model": "c"})
    assert validate(NOTEBOOK_SCHEMAS["fig09_diagnostics"], base).shown_model == "a"
    assert validate(NOTEBOOK_SCHEMAS["fig09_diagnostics"], base | {"model": "b"}).shown_model == "b"
    with pytest.raises(ParamsError, match="prompt"):
        validate(NOTEBOOK_SCHEMAS["fig12_prompt_scatter"], base | {"prompt": "p03"})
    with pytest.raises(ParamsError, match="repeated"):
        validate(NOTEBOOK_SCHEMAS["fig05_convergence_all_models"], {"models": "a,a", "prompts": "p01"})
    with pytest.raises(ParamsError, match="top_p"):
        validate(NOTEBOOK_SCHEMAS["fig01_self_convergence"], base | {"top_p": 1.0})  # no contrast at top_p 1


# --- aep_lib.analysis.tables -----------------------------------------------------------------------------------


def _running() -> pd.DataFrame:
    """Four runs, two prompts, n = 1 and 2 (values chosen so the answers are easy by hand)."""
    return pd.DataFrame({
        "run_id": ["r1", "r2", "r3", "r4"] * 2,
        "prompt_id": ["A", "A", "B", "B"] * 2,
        "n": [1] * 4 + [2] * 4,
        "l_n": [1.0, 3.0, 10.0, 14.0, 2.0, 2.0, 5.0, 5.0],
        "h_n": [1.0, 3.0, 9.0, 15.0, 1.0, 2.0, 3.0, 6.0],
        "D_n": [0.5, -0.5, 1.5, -1.5, 0.1, 0.1, 0.1, 0.1],
        "sigma_n": [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0],
        "z_n": [0.5, -0.5, 1.5, np.nan, 0.2, 0.2, 0.1, 0.1],
    })


def test_length_scaling_by_hand():
    t = tables.length_scaling(_running())
    first = t.iloc[0]
    assert list(t["n"]) == [1, 2] and list(t["n_runs"]) == [4, 4]
    # l_n at n = 1: prompt A {1, 3} (mean 2), B {10, 14} (mean 12): squared deviations 1+1+4+4 = 10, 4 - 2 dof
    assert first["var_l"] == pytest.approx(5.0)
    assert first["var_D"] == pytest.approx(5.0 / 3.0)  # D: ±0.5, ±1.5 around 0 -> (0.25*2 + 2.25*2) / 3
    assert first["mean_sigma2"] == pytest.approx(1.0)
    assert first["share_z1"] == pytest.approx(0.5)  # 0.5, -0.5 in; 1.5 out; NaN counts as out
    assert first["share_z2"] == pytest.approx(0.75)
    assert t.iloc[1]["var_l"] == pytest.approx(0.0) and t.iloc[1]["var_D"] == pytest.approx(0.0)
    assert t.iloc[1]["mean_sigma2"] == pytest.approx((0.25 * 2 + 1 * 2) / 4)
    assert tables.length_scaling(_running(), group=None).iloc[0]["var_l"] == pytest.approx(110.0 / 3.0)
    assert list(tables.length_scaling(_running(), ns=[2])["n"]) == [2]
    two_keys = tables.length_scaling(_running().assign(setting="main"), group=["prompt_id", "setting"])
    assert two_keys.iloc[0]["var_l"] == pytest.approx(5.0)


def test_typical_set_table_by_hand():
    running = pd.DataFrame({"model": ["m", "m", "m", "m"], "run_id": ["a", "b", "a", "b"], "n": [1, 1, 2, 2],
                            "h_n": [0.5, 1.5, 1.0, 2.0]})
    t = tables.typical_set_table(running, {"m": 8})  # log2 V = 3 bits
    row = t[t["n"] == 2].iloc[0]
    assert row["n_runs"] == 2 and row["h_n"] == pytest.approx(1.5)
    assert (row["h_n_min"], row["h_n_max"]) == (1.0, 2.0)
    assert row["log2_typical"] == pytest.approx(3.0)  # 2 tokens x 1.5 bits
    assert row["log2_all"] == pytest.approx(6.0)  # 2 tokens x 3 bits
    assert row["log2_fraction"] == pytest.approx(-3.0)
    with pytest.raises(KeyError, match="m"):
        tables.typical_set_table(running, {"other": 8})


def test_share_table_counts_nan_z_as_outside():
    finals = pd.DataFrame({"model": ["m"] * 4 + ["k"], "setting": "main", "dist": "samp",
                           "z": [0.5, 1.5, -2.5, np.nan, 0.0], "D": [0.1, 0.2, -0.3, 0.0, 0.0]})
    t = tables.share_table(finals).set_index("model")
    assert t.loc["m", "n_runs"] == 4
    assert t.loc["m", "share_z1"] == pytest.approx(0.25) and t.loc["m", "share_z2"] == pytest.approx(0.5)
    assert t.loc["m", "mean_z"] == pytest.approx(-0.5 / 3)
    assert t.loc["m", "mean_D"] == pytest.approx(0.0)
    assert t.loc["k", "share_z2"] == 1.0


def test_small_helpers():
    n = np.array([1, 2, 4, 8])
    assert tables.loglog_slope(n, 3.0 / n) == pytest.approx(-1.0)
    assert tables.loglog_slope(n, 2.0 / np.sqrt(n)) == pytest.approx(-0.5)
    assert math.isnan(tables.loglog_slope([1], [1]))
    assert tables.inverse_n_reference([1, 2, 4], [8.0, np.nan, 2.0]) == pytest.approx([8.0, 4.0, 2.0])
    assert tables.inverse_n_reference([1, 2, 4], [8.0, 1.0, np.nan], anchor="first") == pytest.approx([8.0, 4.0, 2.0])
    grid = tables.log_grid(1000, points=10)
    assert grid[0] == 1 and grid[-1] == 1000 and np.all(np.diff(grid) > 0)
    assert stats.share_within([np.nan, 3.0, 1.0, -1.5], 2, burn_in=1) == pytest.approx(2 / 3)
    assert stats.share_within([np.nan, 0.0], 2) == pytest.approx(0.5)


def test_claim_prints_rounded_values_and_the_verdict(capsys, monkeypatch):
    monkeypatch.setattr(figures, "_PENDING", [])  # claims are kept for the next save_figure
    assert figures.claim("share", 0.9375, at_least=0.8) is True
    assert figures.claim("z", -3.14159, at_most=-2, digits=1) is True
    assert figures.claim("gap", -0.001, at_least=-0.25, at_most=0.25) is True
    assert figures.claim("bad", 0.5, at_least=0.8) is False
    assert figures.claim("nan", float("nan"), at_least=0) is False
    figures.claim("info", 1.234)
    assert capsys.readouterr().out.splitlines() == [
        "share: 0.94 (claim >= 0.8: ok)", "z: -3.1 (claim <= -2: ok)",
        "gap: 0.00 (claim >= -0.25 and <= 0.25: ok)",  # never "-0.00": it would differ by a rounding
        "bad: 0.50 (claim >= 0.8: FAIL)", "nan: nan (claim >= 0: FAIL)", "info: 1.23"]
    assert [(c["name"], c["holds"]) for c in figures.pending_claims()] == [
        ("share", True), ("z", True), ("gap", True), ("bad", False), ("nan", False), ("info", True)]


def test_ensure_self_grid_asks_for_both_settings(monkeypatch):
    calls = []

    def fake_ensure(store, models, prompt_ids, seeds_by_sampling, max_new_tokens, **kw):
        calls.extend((sampling, seeds, max_new_tokens) for sampling, seeds in seeds_by_sampling.items())
        rows = [{"run_id": f"{m}-{p}-{s}-{sampling.top_p}", "model": m, "prompt_id": p, "seed": s, "status": "ok",
                 "error": None, **sampling.as_dict(), "max_new_tokens": max_new_tokens}
                for sampling, seeds in seeds_by_sampling.items() for m in models for p in prompt_ids for s in seeds]
        return pd.DataFrame(rows)

    monkeypatch.setattr(tables, "ensure_samplings", fake_ensure)
    P = validate(NOTEBOOK_SCHEMAS["fig05_convergence_all_models"],
                 {"models": "b,a", "prompts": "p01,p02", "n_seeds": 3, "n_seeds_truncated": 1, "top_p": 0.8,
                  "max_new_tokens": 7})
    runs = tables.ensure_self_grid(None, P)
    assert [(c[0].top_p, c[0].temperature, c[1], c[2]) for c in calls] == [(1.0, 1.0, [0, 1, 2], 7), (0.8, 1.0, [0], 7)]
    assert len(runs) == 2 * 2 * (3 + 1)
    assert runs.groupby("setting").size().to_dict() == {"main": 12, "truncated": 4}
    assert list(runs["model"].drop_duplicates()) == ["b", "a"]  # in the order of the params
    line = tables.describe_grid(runs)
    assert "main (q = p): 12 runs = 2 models x 2 prompts x 3 seeds" in line and "top-p 0.8" in line

    def failing(*args, **kw):
        return fake_ensure(*args, **kw).assign(status="failed", error="boom")

    monkeypatch.setattr(tables, "ensure_samplings", failing)
    with pytest.raises(RuntimeError, match="boom"):
        tables.ensure_self_grid(None, P)


# --- the tables of the application notebooks (decoding settings, membership, memorised texts) --------


def test_decoding_table_joins_z_bpb_gap_and_attribution():
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "model": "a", "setting": ["t1", "p0.9"], "z_samp": [0.5, -0.2],
                         "z_raw": [0.4, -3.0]})
    scores = pd.DataFrame({"run_id": ["r1", "r1", "r1", "r2", "r2", "r2"], "source_model": "a",
                           "candidate_model": ["a", "b", "c"] * 2, "z": [0.5, 3.0, 5.0, -0.2, 1.0, 2.0],
                           "bpb": [1.0, 1.5, 2.5, 0.8, 1.0, 1.2]})
    decisions = pd.DataFrame({"run_id": ["r1", "r2", "r1", "r2"], "method": ["m1", "m1", "m2", "m2"],
                              "correct_model": [True, False, True, True]})
    t = tables.decoding_table(runs, scores, decisions).set_index("run_id")
    assert t.loc["r1", "z_q"] == 0.5 and t.loc["r2", "z_p"] == -3.0
    assert t.loc["r1", "z_other"] == pytest.approx(4.0) and t.loc["r2", "z_other"] == pytest.approx(1.5)
    assert t.loc["r1", "bpb_gap"] == pytest.approx(1.0) and t.loc["r2", "bpb_gap"] == pytest.approx(0.3)
    assert list(t["attributed_m1"]) == [1.0, 0.0] and list(t["attributed_m2"]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="one length"):
        tables.decoding_table(runs, scores, pd.concat([decisions, decisions]))


def test_group_cis_z_test_shares_and_shift_tests():
    df = pd.DataFrame({"model": "a", "setting": ["t1"] * 4 + ["t0.7"] * 4,
                       "z_q": [0.0, 1.0, -1.0, 0.5, 0.2, -0.3, 0.1, 0.0],
                       "z_p": [0.0, 3.0, -1.0, 0.5, -3.0, -4.0, -2.5, -5.0],
                       "hit": [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]})
    cis = tables.group_cis(df, ["model", "setting"], ["z_q", "hit"], shares=["hit"], n_resamples=200)
    assert list(cis.columns) == ["model", "setting", "metric", "mean", "low", "high", "n"]
    row = cis[(cis["setting"] == "t1") & (cis["metric"] == "hit")].iloc[0]
    assert row["mean"] == pytest.approx(0.75) and row["n"] == 4 and row["low"] <= 0.75 <= row["high"]
    t07 = cis[(cis["setting"] == "t0.7") & (cis["metric"] == "hit")].iloc[0]
    assert (t07["low"], t07["high"]) == (1.0, 1.0)  # all equal: a degenerate interval
    shares = tables.z_test_shares(df, ["model", "setting"], {"q": "z_q", "p": "z_p"}).set_index("setting")
    assert shares.loc["t1", "reject_q"] == 0.0 and shares.loc["t1", "reject_p"] == pytest.approx(0.25)
    assert shares.loc["t0.7", "reject_p"] == pytest.approx(1.0) and shares.loc["t0.7", "n"] == 4
    tests = tables.shift_tests(df, "t1", ["t0.7", "t1"], ("z_q", "z_p"))
    assert list(tests[["setting", "metric"]].itertuples(index=False, name=None)) == [("t0.7", "z_q"), ("t0.7", "z_p")]
    assert (tests["p_welch_holm"] >= tests["p_welch"]).all() and tests["robust"].dtype == bool
    assert tests.iloc[1]["diff"] == pytest.approx(-3.625 - 0.625)
    empty = tables.shift_tests(df, "t1", ["t1"])
    assert len(empty) == 0 and {"p_welch_holm", "robust"} <= set(empty.columns)


def _membership_windows() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"model": "m", "group": "self", "window": w, "z": z} for w, z in enumerate(rng.normal(0, 1, 40))]
    rows += [{"model": "m", "group": "classic", "window": w % 2, "z": z} for w, z in enumerate(rng.normal(-3, 1, 10))]
    rows += [{"model": "m", "group": "news", "window": w % 2, "z": z} for w, z in enumerate(rng.normal(0, 1, 10))]
    df = pd.DataFrame(rows)
    return df.assign(over_typicality=-df["z"], min_k_pp=-df["z"] + rng.normal(0, 5, len(df)))


def test_membership_tables():
    w = comparison_tables.membership_windows(_membership_windows())
    assert w["opening"].sum() == 5 and not w.loc[w["group"] != "classic", "opening"].any()
    self_z = np.sort(w.loc[w["group"] == "self", "z"].to_numpy())
    assert w.loc[w["group"] == "self", "baseline_quantile"].max() == 1.0
    assert w["baseline_quantile"].iloc[-1] == pytest.approx(np.mean(self_z <= w["z"].iloc[-1]))
    groups = comparison_tables.membership_groups(w, n_resamples=200).set_index("group")
    assert list(groups.index) == ["self-generated", "classic openings", "classic, all windows", "news"]
    assert groups.loc["classic, all windows", "windows"] == 10 and groups.loc["classic openings", "windows"] == 5
    assert groups.loc["classic, all windows", "z_mean"] == pytest.approx(w.loc[w["group"] == "classic", "z"].mean())
    q05 = np.quantile(self_z, 0.05)
    assert groups.loc["classic, all windows", "below_baseline_5pct"] == pytest.approx(
        np.mean(w.loc[w["group"] == "classic", "z"] < q05))
    assert groups.loc["self-generated", "below_baseline_5pct"] == pytest.approx(0.05)
    (test,) = comparison_tables.membership_tests(w).to_dict("records")
    classic, news = (w.loc[w["group"] == g, "z"].mean() for g in ("classic", "news"))
    assert test["model"] == "m" and test["diff"] == pytest.approx(classic - news) and test["robust"]
    aucs = comparison_tables.membership_aurocs(w, scores=("over_typicality", "min_k_pp"), n_resamples=200)
    assert list(aucs.columns) == ["model", "score", "positives", "AUROC", "low", "high"] and len(aucs) == 4
    top = aucs[(aucs["score"] == "over_typicality") & (aucs["positives"] == "all classic windows")].iloc[0]
    assert top["AUROC"] > 0.9 and top["low"] <= top["AUROC"] <= top["high"]
    means = comparison_tables.window_group_means(w, ["self", "news"]).set_index("group")
    news = w.loc[w["group"] == "news", "z"]
    assert means.loc["news", "mean"] == pytest.approx(news.mean())
    assert means.loc["news", "half_width"] == pytest.approx(1.96 * news.std(ddof=1) / math.sqrt(10))


def test_memorisation_table_by_hand():
    baseline = pd.DataFrame({"model": "m", "z": [-1.0, 0.0, 1.0], "D": [0.1, 0.2, 0.3]})  # mean 0, sd 1
    windows = pd.DataFrame({"model": "m", "text_id": ["alice", "alice", "xsum-0", "writing-0"],
                            "group": ["classic", "classic", "news", "essay"], "z": [-3.0, -5.0, 0.5, 1.0],
                            "D": [-1.0, -2.0, 0.1, 0.2]})
    band = comparison_tables.baseline_band(baseline).iloc[0]
    assert (band["windows"], band["z"], band["z_sd"], band["D"]) == (3, 0.0, 1.0, pytest.approx(0.2))
    t = comparison_tables.memorisation_table(windows, baseline, ["alice"], ("news", "essay")).set_index("text")
    assert list(t.index) == ["alice", "news", "essay", "self-generated"]
    assert (t.loc["alice", "windows"], t.loc["alice", "z"], t.loc["alice", "D"]) == (2, -4.0, -1.5)
    assert t.loc["alice", "sd_from_baseline"] == pytest.approx(-4.0)
    assert t.loc["self-generated", "windows"] == 3 and t.loc["self-generated", "sd_from_baseline"] == 0.0


def test_text_window_summaries_and_record_of():
    class Store:
        def tokens(self, run_id):
            n = 8
            return pd.DataFrame({"position": np.arange(n), "surprisal_raw": np.full(n, 2.0),
                                 "entropy_raw": np.full(n, 2.0), "varentropy_raw": np.full(n, 1.0)})

    text_runs = pd.DataFrame({"run_id": ["a", "b"], "status": ["ok", "failed"], "model": "m", "text_id": ["t1", "t2"],
                              "group": "news"})
    w = comparison_tables.text_window_summaries(Store(), text_runs, 4)
    assert list(w["window"]) == [0, 1] and set(w["text_id"]) == {"t1"} and (w["z"] == 0).all()
    assert list(w.columns) == ["window", "l", "h", "D", "sigma", "z", "model", "text_id", "group"]
    assert comparison_tables.text_window_summaries(Store(), text_runs.iloc[1:], 4).empty
    runs = pd.DataFrame({"pair": ["a->b", "a->b"], "prompt_id": ["p01", "p02"], "seed": [0, 0], "run_id": ["x", "y"]})
    assert comparison_tables.record_of(runs, "a->b", "p02", 0)["run_id"] == "y"
    with pytest.raises(KeyError, match="p03"):
        comparison_tables.record_of(runs, "a->b", "p03", 0)


# --- aep_lib.report.plots ------------------------------------------------------------------------------------


def test_plot_helpers_draw():
    plots.set_style()
    rng = np.random.default_rng(0)
    n = np.arange(1, 65)
    one = pd.DataFrame({"run_id": "r", "n": n, "l_n": 3 + rng.normal(0, 1, 64) / np.sqrt(n), "h_n": np.full(64, 3.0),
                        "sigma_n": 1 / np.sqrt(n)})
    one["z_n"] = (one["l_n"] - one["h_n"]) / one["sigma_n"]
    fig, axes = plt.subplots(2, 3)
    plots.plot_running(axes[0, 0], one, title="t")
    assert len(axes[0, 0].collections) == 2 and len(axes[0, 0].lines) == 2  # two bands, l_n and h_n
    plots.plot_z_trajectories(axes[0, 1], one, label="runs")
    plots.plot_z_hist(axes[0, 2], [0.1, -0.5, 1.2, np.inf, np.nan])
    assert axes[0, 2].get_ylabel() == "runs"
    plots.plot_z_hist(axes[1, 0], [0.1, -0.5], density=True)
    plots.plot_d_hist(axes[1, 0], [0.1, -0.2, 0.05], bins=5)
    plots.plot_final_scatter(axes[1, 1], [3.0, 4.0], [3.1, 3.9], sigma=[0.1, 0.2], label="x")
    lo, hi = axes[1, 1].get_xlim()
    assert axes[1, 1].get_ylim() == (lo, hi)  # the diagonal needs equal axes
    plots.plot_sigma_decay(axes[1, 2], one)
    assert plots.short_name("meta-llama/Llama-3.1-8B") == "Llama-3.1-8B"
    assert list(plots.model_colors(["a", "b", "a"])) == ["a", "b"]
    plots.finish(fig, "title")
    plots.close(fig)
    cells = pd.DataFrame({"model": "m", "setting": ["t1", "t1", "p0.9", "p0.9"], "metric": ["z", "hit"] * 2,
                          "mean": [0.1, 1.0, -3.0, 0.5], "low": [-0.5, 1.0, -4.0, 0.0], "high": [0.6, 1.0, -2.0, 1.0]})
    heat = plots.plot_ci_heatmaps(cells, {"z": "z under q", "hit": "right"}, ["m"], ["t1", "p0.9"], shares=["hit"])
    assert [ax.get_title() for ax in heat.axes] == ["z under q", "right"]
    assert heat.axes[0].texts[1].get_text() == "-3.00\n[-4.0, -2.0]"
    plots.close(heat)
    edges = plots.z_bins((-4.2, 3.1), 0.5)
    assert edges[0] == -4.5 and edges[-1] == 3.5 and 0.0 in edges and 2.0 in edges


def test_pooled_z_is_the_summed_drift_over_the_root_of_the_summed_varentropies():
    # run a: 100 tokens, D = -0.2, sigma = 0.2 (sum of V = 400) -> z -1; run b: 300 tokens, D = -0.1,
    # sigma = 0.1 (sum of V = 900) -> z -1; pooled: (-20 - 30) / sqrt(400 + 900) = -50 / 36.06 = -1.387
    finals = pd.DataFrame({"run_id": ["a", "b"], "D": [-0.2, -0.1], "sigma": [0.2, 0.1]})
    runs = pd.DataFrame({"run_id": ["b", "a"], "n_tokens": [300, 100]})
    assert abs(tables.pooled_z(finals, runs) - (-50 / math.sqrt(1300))) < 1e-12
    assert math.isnan(tables.pooled_z(finals.assign(sigma=0.0), runs))
