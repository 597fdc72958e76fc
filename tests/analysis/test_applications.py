"""Detectors, inference, attribution, membership and the token view on hand-computed cases.

Every detector is checked on a per-token table built by hand; the AUROC / TPR-at-FPR code against
scikit-learn; the p-values on known z; the bootstrap CI on a known mean; ``aep detect`` end to end with
SmolLM2.
"""

import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from sklearn.metrics import roc_auc_score, roc_curve

from aep_lib import corpora
from aep_lib.analysis import attribution, detect, membership
from aep_lib.core import inference, stats
from aep_lib.engine import score, spans
from aep_lib.report import tokenview

# --- inference --------------------------------------------------------------------------------------


@pytest.mark.parametrize("z, two, under, over", [
    (0.0, 1.0, 0.5, 0.5),
    (1.959963984540054, 0.05, 0.025, 0.975),
    (-1.6448536269514722, 0.1, 0.95, 0.05),
    (3.0, 0.0026998, 0.0013499, 0.9986501),
])  # fmt: skip
def test_z_pvalues_on_known_z(z, two, under, over):
    p = inference.z_pvalues(z)
    assert p["p_two_sided"] == pytest.approx(two, abs=1e-6)
    assert p["p_under"] == pytest.approx(under, abs=1e-6)
    assert p["p_over"] == pytest.approx(over, abs=1e-6)


def test_z_test_verdicts_and_clt_flag():
    assert inference.z_test(2.5, 200)["verdict"] == "under-typical"
    assert inference.z_test(-2.5, 200)["verdict"] == "over-typical"
    assert inference.z_test(0.3, 200)["verdict"] == "typical"
    assert inference.z_test(float("nan"), 200)["verdict"] == "undefined"
    assert inference.z_test(0.3, 20)["clt_ok"] is False and inference.z_test(0.3, 64)["clt_ok"] is True
    p = inference.z_pvalues(np.array([0.0, np.inf, np.nan]))
    assert p["p_under"][1] == 0.0 and np.isnan(p["p_two_sided"][2])
    runs = inference.add_pvalues(pd.DataFrame({"z": [0.0, 2.5, -3.0], "n_tokens": [100, 100, 10]}))
    assert list(runs["reject"]) == [False, True, True] and list(runs["clt_ok"]) == [True, True, False]
    assert runs["p_over"].iloc[2] == pytest.approx(st.norm.cdf(-3.0))
    assert inference.z_level(0.05) == pytest.approx(1.6448536, abs=1e-6)
    assert inference.z_level(0.05, "two") == pytest.approx(1.959964, abs=1e-6)


def test_bootstrap_ci_covers_a_known_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 1.0, 200)
    ci = inference.bootstrap_ci(x)
    assert ci.low < 5.0 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.25)
    # coverage over repeated samples is near the nominal 95%
    hits = 0
    for i in range(60):
        ci = inference.bootstrap_ci(rng.normal(0, 1, 40), n_resamples=400, seed=i)
        hits += ci.low < 0 < ci.high
    assert 50 <= hits <= 60
    same = inference.bootstrap_ci([2.0, 2.0, 2.0])
    assert (same.estimate, same.low, same.high) == (2.0, 2.0, 2.0)
    assert math.isnan(inference.bootstrap_ci([1.0]).low) and inference.bootstrap_ci([]).n == 0


def test_auroc_and_tpr_at_fpr_match_scikit_learn():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n0, n1 = rng.integers(3, 60), rng.integers(3, 60)
        neg = rng.normal(0, 1, n0).round(1)  # rounded: ties inside and across the classes
        pos = rng.normal(0.8, 1.2, n1).round(1)
        y = np.r_[np.zeros(n0), np.ones(n1)]
        s = np.r_[neg, pos]
        assert inference.auroc(neg, pos) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        for target in (0.0, 0.01, 0.05, 0.1, 0.25, 1.0):
            want = tpr[fpr <= target + 1e-12].max()
            assert inference.tpr_at_fpr(neg, pos, target) == pytest.approx(want, abs=1e-12), (trial, target)
    # vectorised along an axis (bootstrap resamples), row by row the same
    neg2, pos2 = rng.normal(size=(5, 30)), rng.normal(0.5, 1, size=(5, 20))
    np.testing.assert_allclose(inference.auroc(neg2, pos2), [inference.auroc(a, b) for a, b in zip(neg2, pos2)])
    np.testing.assert_allclose(inference.tpr_at_fpr(neg2, pos2, 0.1),
                               [inference.tpr_at_fpr(a, b, 0.1) for a, b in zip(neg2, pos2)])


def test_metric_ci_and_thresholds():
    neg, pos = np.arange(100, dtype=float), np.arange(50, 150, dtype=float)
    a = inference.metric_ci(neg, pos, "auroc", n_resamples=300)
    assert a.estimate == pytest.approx(roc_auc_score(np.r_[np.zeros(100), np.ones(100)], np.r_[neg, pos]))
    assert a.low < a.estimate < a.high
    perfect = inference.metric_ci([0.0, 1.0, 2.0], [5.0, 6.0, 7.0], "tpr", fpr=0.01, n_resamples=200)
    assert (perfect.estimate, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    t = inference.calibrated_threshold(np.arange(1, 101, dtype=float), 0.05)
    assert t == 95.0
    r = inference.rates(np.arange(1, 101, dtype=float), np.array([90.0, 96.0, 200.0]), t)
    assert r["fpr"] == 0.05 and r["tpr"] == pytest.approx(2 / 3)
    lo, hi = inference.binomial_ci(5, 100)
    assert lo < 0.05 < hi


def test_compare_groups_effect_sizes_and_holm():
    out = inference.compare_groups([3.0, 4.0], [1.0, 2.0])
    assert out["r_rb"] == 1.0 and out["p_a_gt_b"] == 1.0
    assert inference.cohens_d([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]) == pytest.approx(-1.0)
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 300)
    out = inference.compare_groups(a, b)
    assert out["robust"] and out["cohens_d"] == pytest.approx(1.0, abs=0.2)
    assert out["diff_low"] < out["diff"] < out["diff_high"]
    assert out["p_welch"] == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)
    assert out["r_rb"] == pytest.approx(2 * roc_auc_score(np.r_[np.zeros(300), np.ones(300)], np.r_[b, a]) - 1)
    same = inference.compare_groups(rng.normal(0, 1, 50), rng.normal(0, 1, 50))
    assert abs(same["r_rb"]) < 0.3
    np.testing.assert_allclose(inference.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    adj = inference.holm([0.2, np.nan, 0.01])
    assert np.isnan(adj[1]) and adj[0] == pytest.approx(0.2) and adj[2] == pytest.approx(0.02)


# --- detectors on a hand-built per-token table ---------------------------------------------------------


def hand_table(cross=False):
    df = pd.DataFrame({
        "position": [0, 1, 2, 3],
        "token_id": [5, 6, 7, 8],
        "surprisal_raw": [1.0, 2.0, 3.0, 6.0],
        "entropy_raw": [2.0, 2.0, 2.0, 2.0],
        "varentropy_raw": [1.0, 4.0, 1.0, 4.0],
        "rank_raw": [1, 8, 64, 2048],
    })  # fmt: skip
    if cross:
        df["cross_entropy"] = 2.5
        df["cross_varentropy"] = 1.0
    return df


def test_each_detector_on_a_hand_computed_table():
    text = "hello hello hello hello"
    s = detect.detector_scores(hand_table(), text, k=0.5)
    # l = 3, h = 2, sigma = sqrt(10)/4
    assert s["n_tokens"] == 4 and s["l"] == 3.0 and s["h"] == 2.0
    assert s["z"] == pytest.approx(4 / math.sqrt(10))
    assert s["fast_detectgpt"] == pytest.approx(-4 / math.sqrt(10))  # A = B: exactly -z
    assert s["binoculars"] == pytest.approx(1.5)
    assert s["log_likelihood"] == -3.0
    assert s["log_rank"] == pytest.approx((0 + 3 + 6 + 11) / 4)
    assert s["entropy"] == 2.0
    assert (s["gltr_top10"], s["gltr_top100"], s["gltr_top1000"]) == (0.5, 0.75, 0.75)
    assert s["min_k"] == pytest.approx(-4.5)  # the 2 least likely tokens: log2 p = -6, -3
    # standardised log-probabilities -(s - H)/sqrt(V): 1, 0, -1, -2 -> the lowest half: -2, -1
    assert s["min_k_pp"] == pytest.approx(-1.5)
    assert s["zlib_ratio"] == pytest.approx(12.0 / (8 * len(zlib.compress(text.encode(), 9))))
    assert s["zlib_bpb"] == 8 * len(zlib.compress(text.encode(), 9)) / len(text)  # no model in it
    assert s["p_over"] == pytest.approx(st.norm.cdf(4 / math.sqrt(10)))
    # with a reference's cross statistics: h^(A,B) = 2.5, sigma^(A,B) = sqrt(4)/4 = 0.5
    c = detect.detector_scores(hand_table(cross=True), text, k=0.5)
    assert c["fast_detectgpt"] == pytest.approx((2.5 - 3.0) / 0.5)
    assert c["binoculars"] == pytest.approx(3.0 / 2.5)
    assert c["z"] == s["z"]  # the scorer's own typicality does not change
    # k = 0.25 keeps one token; no text: zlib undefined
    one = detect.detector_scores(hand_table(), None, k=0.25)
    assert one["min_k"] == -6.0 and one["min_k_pp"] == -2.0 and math.isnan(one["zlib_ratio"])
    with pytest.raises(ValueError, match="Min-K"):
        detect.detector_scores(hand_table(), text, k=0)


def test_detector_edge_cases_are_defined():
    t = hand_table()
    t.loc[1, "varentropy_raw"] = 0.0  # undefined standardised log-probability: left out of Min-K%++
    s = detect.detector_scores(t, None, k=0.5)
    assert s["min_k_pp"] == pytest.approx(-2.0)  # the valid 1, -1, -2: the lowest int(0.5 * 3) = 1 of them
    empty = detect.detector_scores(t.iloc[:0], None)
    assert empty["n_tokens"] == 0 and math.isnan(empty["z"])
    flat = t.assign(varentropy_raw=0.0)
    assert math.isnan(detect.detector_scores(flat, None)["z"])


def test_machine_scores_orientation_and_evaluate():
    scores = pd.DataFrame({"dataset": "d", "model": "m", "pair": [0, 0, 1, 1, 2, 2],
                           "is_machine": [0, 1, 0, 1, 0, 1], "z": [1.0, -1.0, 2.0, -2.0, 0.5, 0.0],
                           "log_likelihood": [-5.0, -3.0, -4.0, -2.0, -6.0, -1.0]})
    oriented = detect.machine_scores(scores)
    assert list(oriented["z"]) == [-1.0, 1.0, -2.0, 2.0, -0.5, -0.0]
    table = detect.evaluate(scores, n_resamples=50)
    assert set(table["detector"]) == {"z", "log_likelihood"}
    assert (table["auroc"] == 1.0).all() and (table["n_human"] == 3).all()
    # every detector names its direction and unit
    assert detect.DETECTORS["z"].direction_text == "lower = more machine-like"
    assert detect.DETECTORS["fast_detectgpt"].direction_text == "higher = more machine-like"
    assert all(d.unit for d in detect.DETECTORS.values())


def test_prefix_scores_equal_scoring_the_cut_text(tmp_path):
    """Scores of a text's first n tokens from its longer per-token table are those of scoring it cut to n."""
    from _tiny import build_tiny_model

    from aep_lib.engine.models import load_model

    model, tok = load_model(str(build_tiny_model(tmp_path / "tiny")), device="cpu", dtype="float32")
    text, prompt = " a young doctor arrived in the small mountain village and the robot learns to paint", "In spring"
    long = spans.tokenize_span(tok, text, prompt, max_tokens=14)
    table = detect.score_prepared(model, tok, long)
    for n in (3, 9, 14):
        cut = spans.tokenize_span(tok, text, prompt, max_tokens=n)
        direct = detect.detector_scores(detect.score_prepared(model, tok, cut), cut.scored_text)
        prefix = detect.prefix_scores(table, long, n)
        for d in detect.DETECTORS:
            assert prefix[d] == pytest.approx(direct[d], rel=1e-6, abs=1e-9), (n, d)
    assert detect.prefix_scores(table, long, 99)["n_tokens"] == 14


def test_matched_length_scores_cut_both_texts_of_a_pair_to_the_shorter():
    t = hand_table()  # 4 tokens
    longer = pd.concat([t, t], ignore_index=True)  # 8 tokens
    span4 = spans.TokenSpan([0] * 5, 1, "abcd", 4, np.array([1, 2, 3, 4]))
    span8 = spans.TokenSpan([0] * 9, 1, "abcdefgh", 8, np.arange(1, 9))
    scores = pd.DataFrame({"model": "m", "dataset": "d", "pair": [0, 0], "label": ["human", "machine"],
                           "is_machine": [0, 1], "n_tokens": [4, 8]})
    out = detect.matched_length_scores(scores, {0: t, 1: longer}, {0: span4, 1: span8}, k=0.5)
    assert list(out["n_tokens"]) == [4, 4] and list(out["n_tokens_full"]) == [4, 8]
    assert out["z"].iloc[1] == pytest.approx(out["z"].iloc[0])  # the machine text's first 4 tokens = the same table
    summary = detect.length_summary(scores, out)
    assert summary.iloc[0]["equal_share"] == 1.0 and summary.iloc[0]["machine_longer"] == 1.0
    assert detect.matched_length_scores(scores, {0: t, 1: longer}, {0: span4, 1: span8}, min_tokens=5).empty


def test_shared_prefix_and_benchmark_loading():
    assert corpora.shared_prefix("The cat sat on the mat", "The cat sat in the hat") == "The cat sat"
    assert corpora.shared_prefix("abc", "xyz") == ""
    assert corpora.shared_prefix("Same words here. Then", "Same words here. Now") == "Same words here."
    b = corpora.load_benchmark("xsum_gpt-4", 3)
    assert len(b) == 6 and list(b["label"]) == ["human", "machine"] * 3
    for _, g in b.groupby("pair"):
        assert g["prompt"].nunique() == 1  # both texts of a pair scored after the same context
        assert not g["text"].str.startswith(g["prompt"].iloc[0][:20]).all() or g["prompt"].iloc[0] == ""
    bino = corpora.load_benchmark("pubmed_falcon-7b", 2, max_chars=500)
    assert len(bino) == 4 and (bino["prompt"] == "").all() and bino["text"].str.len().max() <= 500
    with pytest.raises(KeyError, match="unknown benchmark"):
        corpora.load_benchmark("nope")


def test_typicality_test_names_its_null():
    s = {"fast_detectgpt": 2.0, "z": -2.0, "n_tokens": 100}
    v = detect.typicality_test(s, "m", alpha=0.05)
    assert v["typicality"] == "over-typical" and v["p_over"] == pytest.approx(st.norm.cdf(-2.0)) and v["clt_ok"]
    assert v["null"] == "the text was sampled from m at temperature 1 without truncation (its raw p)"
    assert detect.typicality_test({"z": 1.0, "n_tokens": 10}, "m")["typicality"] == "typical"
    assert detect.typicality_test({"z": 1.0, "n_tokens": 10}, "m")["clt_ok"] is False
    assert detect.typicality_test({"z": float("nan"), "n_tokens": 10}, "m")["typicality"] == "undefined"


# --- attribution and membership -------------------------------------------------------------------------


def test_attribution_ranking_and_confidence():
    ranked = attribution.rank_candidates({"a": 3.0, "b": -0.5, "c": float("inf"), "d": 1.0})
    assert list(ranked["candidate"]) == ["b", "d", "a", "c"]
    conf = ranked.set_index("candidate")["confidence"]
    w = {k: math.exp(-0.5 * z * z) for k, z in {"a": 3.0, "b": -0.5, "d": 1.0}.items()}
    assert conf["b"] == pytest.approx(w["b"] / sum(w.values())) and conf["c"] == 0.0
    assert conf.sum() == pytest.approx(1.0)
    assert np.isnan(attribution.confidences([np.nan, np.inf])).all()


def test_z_at_cuts_counts_tokens_within_each_cut():
    t = pd.DataFrame({"char_end": [3, 7, 10, 15], "n_bytes_to": [3, 7, 10, 15], "surprisal": [1.0, 3.0, 2.0, 2.0],
                      "entropy": [2.0, 2.0, 2.0, 2.0], "varentropy": [1.0, 1.0, 1.0, 1.0]})
    out = stats.z_at_cuts(t, [2, 7, 12, 15]).set_index("cut")
    assert out.loc[2, "n_tokens"] == 0 and math.isnan(out.loc[2, "z"])
    assert out.loc[7, "n_tokens"] == 2 and out.loc[7, "z"] == pytest.approx(0.0)
    assert out.loc[15, "n_tokens"] == 4 and out.loc[15, "bpb"] == pytest.approx(8.0 / 15)
    inf = t.assign(surprisal=[1.0, np.inf, 2.0, 2.0])
    assert stats.z_at_cuts(inf, [15])["z"].iloc[0] == np.inf


def test_decide_confusion_and_accuracy():
    rows = []
    for run, source, zs in [("r1", "A", {"A": 0.2, "B": 3.0}), ("r2", "B", {"A": 0.1, "B": 0.5}),
                            ("r3", "B", {"A": 4.0, "B": -0.3})]:
        for cand, z in zs.items():
            rows.append({"run_id": run, "length": 64, "source": source, "source_model": source, "candidate": cand,
                         "candidate_model": cand, "z": z, "bpb": 1.0 if cand == "A" else 2.0})
    d = attribution.decide(pd.DataFrame(rows))
    assert list(d["predicted"]) == ["A", "A", "B"] and list(d["correct"]) == [True, False, True]
    m = attribution.confusion(d, ["A", "B"])
    assert m.loc["B", "A"] == 1 and m.loc["B", "B"] == 1 and m.loc["A", "A"] == 1
    acc = attribution.accuracy_by(d, "length")
    assert acc["accuracy"].iloc[0] == pytest.approx(2 / 3) and acc["low"].iloc[0] < 2 / 3 < acc["high"].iloc[0]
    ml = attribution.decide(pd.DataFrame(rows).assign(n_bytes=2), "max_likelihood")
    assert list(ml["predicted"]) == ["A", "A", "A"]
    assert ml["confidence"].iloc[0] == pytest.approx(1 / (1 + 2.0 ** -2))  # 2 vs 4 bits


def test_attribute_with_a_tiny_model_scores_variants_in_one_pass(tmp_path):
    from _tiny import build_tiny_model

    from aep_lib.core.sampling import Sampling
    from aep_lib.engine.models import ModelPool, load_model

    folder = build_tiny_model(tmp_path / "tiny")
    model, tok = load_model(str(folder), device="cpu", dtype="float32")
    text = " a young doctor arrived in the small mountain village"
    out = attribution.score_variants(model, tok, text, "In the spring", [Sampling(on_eos="continue"),
                                                                        Sampling(temperature=0.7, on_eos="continue")])
    plain = list(out.values())[0]
    from aep_lib.engine.score import score_text

    ref = score_text(model, tok, text, prompt="In the spring").tokens
    np.testing.assert_allclose(plain["surprisal"], ref["surprisal_raw"], atol=1e-6)
    np.testing.assert_allclose(plain["entropy"], ref["entropy_raw"], atol=1e-6)
    assert plain["char_end"].iloc[-1] == len(text)
    # a reference on the same vocabulary: the cross columns, and the criteria computed from them
    other, other_tok = load_model(str(build_tiny_model(tmp_path / "tiny2", seed=1)), device="cpu", dtype="float32")
    prep = spans.tokenize_span(tok, text, "In the spring", max_tokens=8)
    assert prep.scored_text.strip().startswith("a young") and prep.n_tokens_available > 8
    cross_t = detect.score_prepared(model, tok, prep, reference=other)
    assert len(cross_t) == 8 and {"cross_entropy", "cross_varentropy"} <= set(cross_t.columns)
    sc = detect.detector_scores(cross_t, prep.scored_text)
    l, hc = cross_t["surprisal_raw"].mean(), cross_t["cross_entropy"].mean()
    assert sc["fast_detectgpt"] == pytest.approx((hc - l) / (math.sqrt(cross_t["cross_varentropy"].sum()) / 8))
    assert sc["binoculars"] == pytest.approx(l / hc)
    self_t = detect.score_prepared(model, tok, prep, reference="self")  # A = B: no second pass, c = H, W = V
    assert "cross_entropy" not in self_t
    joint = score_text(model, tok, prep.scored_text, prompt="In the spring", reference="self").tokens.iloc[:8]
    np.testing.assert_allclose(joint["cross_entropy"], joint["entropy_raw"], atol=1e-9)
    np.testing.assert_allclose(joint["cross_varentropy"], joint["varentropy_raw"], atol=1e-9)
    pool = ModelPool(extra={"tiny": (model, tok)})
    ranked = attribution.attribute(text, ["tiny", "tiny@t0.5"], prompt="In the spring", pool=pool)
    assert set(ranked["candidate"]) == {"tiny", "tiny@t0.5"} and ranked["confidence"].sum() == pytest.approx(1.0)


def test_membership_windows_and_baseline_quantile():
    t = pd.concat([hand_table(), hand_table().assign(position=[4, 5, 6, 7])], ignore_index=True)
    w = membership.window_scores(t, 4, k=0.5)
    assert len(w) == 2 and w["z"].iloc[0] == pytest.approx(4 / math.sqrt(10))
    assert w["over_typicality"].iloc[0] == pytest.approx(-4 / math.sqrt(10)) and w["min_k_pp"].iloc[1] == -1.5
    assert len(membership.window_scores(t.iloc[:6], 4)) == 1  # a partial window is dropped
    q = membership.baseline_quantile([-3.0, 0.0, 5.0, np.nan], [-1.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(q[:3], [0.0, 0.5, 1.0]) and np.isnan(q[3])


# --- the token view ---------------------------------------------------------------------------------------


def test_token_view_html(tmp_path, monkeypatch):
    t = hand_table().assign(token_text=["A", " <b>", " c&d", "\n"])
    u = stats.standardised_surprisal(t)
    np.testing.assert_allclose(u, [-1.0, 0.0, 1.0, 2.0])
    html = tokenview.token_view(t, title="demo", prompt="ctx")
    assert html.count('class="tok"') == 4 and "&lt;b&gt;" in html and "c&amp;d" in html
    assert "(s - H)/sqrt(V) = +2.00" in html and "rank 2048" in html and "demo" in html
    monkeypatch.setenv("AEP_OUTPUT_DIR", str(tmp_path))
    path = tokenview.save_token_view(html, "tv", profile="cpu")
    assert path == tmp_path / "cpu" / "figures" / "tv.html" and path.read_text().startswith("<!DOCTYPE html>")


# --- the CLI with SmolLM2 -------------------------------------------------------------------------------------


def test_aep_detect_cli(tmp_path):
    from typer.testing import CliRunner

    from aep_lib.cli import app

    text = tmp_path / "news.txt"
    text.write_text("The council said on Monday that the new bridge would open next spring, two years later "
                    "than planned, after engineers found problems with the foundations.", encoding="utf-8")
    out = tmp_path / "tokens.csv"
    runner = CliRunner()
    r = runner.invoke(app, ["detect", str(text), "--tokens-out", str(out)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "verdict:" in r.output and "at a 5% target false-positive rate" in r.output
    assert "false-positive rate measured on" in r.output and "held-out human texts of 24-31 tokens" in r.output
    assert "(95% Clopper-Pearson)" in r.output and "data/calibration/smollm2-135m.json" in r.output
    assert "typicality z-test (H0: the text was sampled from smollm2-135m at temperature 1" in r.output
    assert "aep attribute" in r.output and "caution: fewer tokens than the CLT needs" in r.output
    score_lines = {ln.split()[0]: ln for ln in lines[lines.index("  scores (value, unit, direction):") + 1:]
                   if ln.strip() and not ln.startswith("per-token")}
    assert set(score_lines) == set(detect.DETECTORS)
    fdg = score_lines["fast_detectgpt"]
    assert "standard errors" in fdg and "higher = more machine-like" in fdg
    assert "lower = more machine-like" in score_lines["z"] and "bits/token" in score_lines["log_likelihood"]
    tokens = pd.read_csv(out)
    assert {"surprisal_raw", "entropy_raw", "varentropy_raw", "rank_raw", "token_text"} <= set(tokens.columns)
    assert len(tokens) > 20
    s = detect.detector_scores(tokens)
    assert f"z = {s['z']:+.2f}" in r.output and f"fast_detectgpt {s['fast_detectgpt']:+.3f}" in r.output
    as_json = runner.invoke(app, ["detect", str(text), "--json", "--fpr", "0.01"])
    assert as_json.exit_code == 0, as_json.output
    (res,) = json.loads(as_json.stdout)
    d = res["decision"]
    assert d["fpr_target"] == 0.01 and d["bin"] == [24, 31] and d["n_heldout"] > 50
    assert d["verdict"] in ("human", "machine")
    assert sum(n for _, n in d["heldout_by_dataset"].values()) == d["n_heldout"]
    assert d["fpr_low"] <= d["fpr_heldout"] <= d["fpr_high"] and res["n_tokens"] == len(tokens)
    assert res["scores"]["z"]["value"] == pytest.approx(s["z"]) and res["typicality"]["z"] == pytest.approx(s["z"])
    given = runner.invoke(app, ["detect", str(text), "--threshold", "-100"])
    assert given.exit_code == 0 and "MACHINE at a given threshold" in given.output
    assert "threshold -100.000" in given.output
    for args, message in [
        ([str(tmp_path / "absent.txt")], "no such file"),
        (["some text to score", "--model", "smollm3-135m"], "unknown model"),
        (["some text to score", "--reference", "gemma-3-270m"], "vocabulary mismatch"),
        ([str(text), "--tokens-out", str(tmp_path / "t.xlsx")], ".csv or .parquet"),
        ([str(text), "--fpr", "0.6"], "(0, 0.5]"),
        ([str(text), "--fpr", "0"], "(0, 0.5]"),
        (["Hello"], "1 scored token(s) under smollm2-135m; a decision needs at least 2"),  # conditioned on <|im_start|>
        ([str(text), "--calibration", str(tmp_path / "none.json")], "no such calibration file"),
    ]:
        bad = runner.invoke(app, ["detect", *args])
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)
        assert len([ln for ln in bad.output.splitlines() if ln.startswith("error:")]) == 1
    empty = runner.invoke(app, ["detect", "-"], input="")
    assert empty.exit_code == 2 and "the text is empty" in empty.output
    from aep_lib.analysis.calibration import shipped_calibration

    gemma_cal = runner.invoke(app, ["detect", str(text), "--calibration", str(shipped_calibration("gemma-3-270m"))])
    assert gemma_cal.exit_code == 2 and "whose tokenizer differs from smollm2-135m's" in gemma_cal.output
    ranked = runner.invoke(app, ["attribute", str(text), "--candidates", "smollm2-135m,smollm2-135m@t0.5"])
    assert ranked.exit_code == 0, ranked.output
    assert "most likely smollm2-135m (confidence" in ranked.output  # human text is far likelier at t=1 than t=0.5
    bad = runner.invoke(app, ["attribute", "some text", "--candidates", "smollm2-135m@x1"])
    assert bad.exit_code == 2 and "expected <model>" in bad.output


def test_attribute_ranks_the_four_embedded_models_by_default():
    from aep_lib.cli.detect_commands import ATTRIBUTION_CANDIDATES
    from aep_lib.engine.embedded import EMBEDDED_MODELS

    assert ATTRIBUTION_CANDIDATES.split(",") == list(EMBEDDED_MODELS) and len(EMBEDDED_MODELS) == 4
