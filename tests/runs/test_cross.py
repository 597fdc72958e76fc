"""Cross-model typicality on real models: the joint pass, source masking, the aggregation.

SmolLM2 everywhere (short texts); Gemma only where a second tokenizer is the point.
"""

import copy
import math

import numpy as np
import pytest
import torch

from aep_lib.analysis import comparison_tables
from aep_lib.core import sampling
from aep_lib.core.sampling import Sampling, SamplingWarp, eos_ids
from aep_lib.core.stats import running
from aep_lib.engine import models
from aep_lib.engine.generate import generate
from aep_lib.engine.score import ScoringError, check_same_vocabulary, score_ids
from aep_lib.report import figures
from aep_lib.runs import comparisons
from aep_lib.store.run_store import RunStore

pytestmark = pytest.mark.slow
PROMPT = "The history of the lighthouse begins"
WARM = Sampling(temperature=0.8, top_p=0.9)


@pytest.fixture(scope="module")
def smol():
    from aep_lib.engine.models import cached_model

    return cached_model("smollm2-135m", "cpu", "float32")


@pytest.fixture(scope="module")
def gemma():
    from aep_lib.engine.models import cached_model

    return cached_model("gemma-3-270m", "cpu", "float32")


@pytest.fixture(scope="module")
def noisy(smol):
    """A second network on SmolLM2's vocabulary: its weights perturbed by 2% of their spread."""
    model, tokenizer = smol
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02 * float(p.std()))
    return other, tokenizer


@pytest.fixture(scope="module")
def warm_text(smol):
    model, tokenizer = smol
    g = generate(model, tokenizer, [PROMPT], [7], WARM, 32, progress=False)[0]
    return g.prompt_ids + g.token_ids, len(g.prompt_ids)


def test_a_model_against_itself_has_zero_kl_and_h_cross_equal_to_its_entropy(smol, warm_text):
    model, tokenizer = smol
    ids, first = warm_text
    eos = eos_ids(tokenizer, model)
    for reference in ("self", model):  # one forward pass either way
        df = score_ids(model, ids, first, sampling=WARM, eos_token_ids=eos, reference=reference,
                       reference_sampling=WARM, cross_with="samp")
        np.testing.assert_allclose(df["kl"], 0.0, atol=1e-6)
        np.testing.assert_allclose(df["cross_entropy"], df["entropy_samp"], atol=1e-6)
        np.testing.assert_allclose(df["cross_varentropy"], df["varentropy_samp"], atol=1e-5)
        np.testing.assert_allclose(df["entropy_ref"], df["entropy_samp"], atol=1e-6)
        h_cross = running(df["surprisal_samp"], df["cross_entropy"], df["cross_varentropy"])
        h_self = running(df["surprisal_samp"], df["entropy_samp"], df["varentropy_samp"])
        np.testing.assert_allclose(h_cross["h_n"], h_self["h_n"], atol=1e-6)
        np.testing.assert_allclose(h_cross["z_n"], h_self["z_n"], atol=1e-4)
    raw = score_ids(model, ids, first, reference="self")  # p against p
    np.testing.assert_allclose(raw["kl"], 0.0, atol=1e-6)
    np.testing.assert_allclose(raw["cross_entropy"], raw["entropy_raw"], atol=1e-6)


def test_decoding_variants_of_one_network_are_one_pass_with_positive_kl(smol, warm_text):
    model, tokenizer = smol
    ids, first = warm_text
    eos = eos_ids(tokenizer, model)
    calls = []
    # the transformer body runs once (score.forward_spans calls it directly, or through the model's own forward);
    # the once-per-model check that the body plus the output layer give the model's logits is made first
    from aep_lib.engine.score_rows import head_matches

    head_matches(model)
    hook = model.base_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        df = score_ids(model, ids, first, sampling=Sampling(), eos_token_ids=eos, reference="self",
                       reference_sampling=WARM, cross_with="samp", chunk_size=10_000)
    finally:
        hook.remove()
    assert len(calls) == 1  # q_A = warp_A(p) and p_B = p from the same logits
    assert (df["kl"] > -1e-9).all() and df["kl"].mean() > 0.05
    # the truncated q_A leaves out tokens of p: its entropy is lower than B's
    assert (df["entropy_ref"] <= df["entropy_samp"] + 1e-6).all()


def test_joint_pass_equals_two_separate_passes(smol, noisy, warm_text):
    model_a, tokenizer = smol
    model_b, _ = noisy
    ids, first = warm_text
    eos = eos_ids(tokenizer, model_a)
    joint = score_ids(model_b, ids, first, sampling=Sampling(), eos_token_ids=eos, reference=model_a,
                      reference_sampling=WARM, cross_with="samp", chunk_size=8)
    alone_b = score_ids(model_b, ids, first, sampling=Sampling(), eos_token_ids=eos)
    alone_a = score_ids(model_a, ids, first, sampling=WARM, eos_token_ids=eos)
    for col in ("surprisal_raw", "entropy_raw", "surprisal_samp", "entropy_samp", "varentropy_samp"):
        np.testing.assert_allclose(joint[col], alone_b[col], atol=1e-4, err_msg=col)
    np.testing.assert_allclose(joint["entropy_ref"], alone_a["entropy_samp"], atol=1e-4)
    # the cross statistics from the two networks' full logits, computed here by hand
    with torch.no_grad():
        x = torch.tensor([ids])
        la, lb = model_a(x).logits[0, first - 1 : -1].float(), model_b(x).logits[0, first - 1 : -1].float()
    q_a = torch.softmax(SamplingWarp(WARM, eos)(la).double(), -1)
    log2_qb = torch.log_softmax(SamplingWarp(Sampling(), eos)(lb).double(), -1) / math.log(2)
    log2_qb = torch.where(q_a > 0, log2_qb, torch.zeros_like(log2_qb))
    c = -(q_a * log2_qb).sum(-1)
    w = (q_a * log2_qb**2).sum(-1) - c**2
    np.testing.assert_allclose(joint["cross_entropy"], c.numpy(), atol=1e-4)
    np.testing.assert_allclose(joint["cross_varentropy"], w.numpy(), atol=1e-3)
    np.testing.assert_allclose(joint["kl"], joint["cross_entropy"] - joint["entropy_ref"], atol=1e-9)
    assert (joint["kl"] > 0).all()  # two different networks


def test_vocabulary_mismatch_is_a_clear_error(smol, gemma, tmp_path):
    (model_s, tok_s), (model_g, tok_g) = smol, gemma
    with pytest.raises(ScoringError, match="vocabulary mismatch: 262144 vs 49152"):
        check_same_vocabulary(model_g, model_s, tok_g, tok_s)
    with pytest.raises(ScoringError, match="vocabulary mismatch"):
        score_ids(model_g, [2, 818, 4083, 529], 1, reference=model_s)
    # through the comparison layer: asking for h^(A,B) of SmolLM2's text under Gemma
    store = RunStore(tmp_path / "store")
    variants = sampling.parse_variants("smollm2-135m,gemma-3-270m")
    runs = comparisons.ensure_comparisons(store, variants, ["p01"], [0], 12, pairs=[(variants[0], variants[1])],
                                    device="cpu", dtype="float32")
    (row,) = runs.to_dict("records")
    assert row["mode"] == "retokenize" and row["status"] == "ok" and not row["shared_vocab"]
    with pytest.raises(ScoringError, match="vocabulary mismatch"):
        comparison_tables.comparison_running(store, row["run_id"], view="cross")
    source = store.runs(kind="generate").iloc[0]
    with pytest.raises(ScoringError, match="vocabulary mismatch"):
        comparisons.score_comparison(source, store.tokens(source["run_id"]), variants[1], models.ModelPool("cpu", "float32"),
                               mode="joint")


def test_source_masking_scores_exactly_the_continuation_under_another_tokenizer(smol, gemma):
    model_s, tok_s = smol
    g = generate(model_s, tok_s, [PROMPT], [3], Sampling(), 24, progress=False)[0]
    row = {"run_id": "0" * 16, "model": "smollm2-135m", "temperature": 1.0, "top_k": 0, "top_p": 1.0,
           "on_eos": "suppress", "prompt_text": PROMPT, "text": g.text, "n_prompt_tokens": len(g.prompt_ids)}
    fields, df = comparisons.score_comparison(row, g.tokens, sampling.Variant.parse("gemma-3-270m"),
                                        models.ModelPool("cpu", "float32"))
    assert fields["mode"] == "retokenize"
    assert "".join(df["token_text"]) == g.text  # Gemma's scored tokens are exactly A's characters
    assert fields["n_bytes_scored"] == fields["n_bytes_text"] == len(g.text.encode())
    assert fields["bpb_scorer"] == pytest.approx(df["surprisal_raw"].sum() / len(g.text.encode()))
    assert fields["bpb_source"] == pytest.approx(g.tokens["surprisal_raw"].sum() / len(g.text.encode()))
    assert fields["n_tokens"] == len(df) > 0 and np.isfinite(fields["z_samp"])


def test_aggregation_reports_a_corrupt_record_and_aggregates_the_rest(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aep_lib.cli import app

    store = RunStore(tmp_path / "cpu" / "store")
    variants = sampling.parse_variants("smollm2-135m,smollm2-135m@t0.8p0.9")
    runs = comparisons.ensure_comparisons(store, variants, ["p01"], [0, 1], 16, device="cpu", dtype="float32")
    assert len(runs) == 8 and (runs["status"] == "ok").all()
    clean = comparison_tables.compare(store)
    # corrupt one record's token file
    victim = runs[runs["pair"] == "smollm2-135m@t0.8p0.9 -> smollm2-135m"].iloc[0]
    (store.root / store.run_relpath(victim.to_dict()) / "tokens.parquet").write_bytes(b"not parquet")
    records = comparison_tables.compare(store)
    assert len(records) == 8
    bad = records[records["run_id"] == victim["run_id"]].iloc[0]
    assert bad["status"] == "failed" and "corrupt tokens file" in bad["reason"]
    summary = comparison_tables.summarize_comparisons(records).set_index("pair")
    assert summary.loc["overall", "n_failed"] == 1
    # smollm2 (T=1) scoring the truncated text is usable; the reverse has l^B = +inf (outside top-p)
    assert summary.loc["smollm2-135m -> smollm2-135m@t0.8p0.9", "n_skipped"] == 2
    assert "l^B = +inf" in summary.loc["smollm2-135m -> smollm2-135m@t0.8p0.9", "reasons"]
    assert summary.loc["overall", "n_usable"] == 5
    rest = clean[(clean["run_id"] != victim["run_id"]) & (clean["status"] == "usable")]
    assert summary.loc["overall", "h_cross_mean"] == pytest.approx(rest["h_cross"].mean())
    # self pairs: z^(A,A) is z^A and KL is 0
    selfs = records[records["self_pair"].astype(bool) & (records["status"] == "usable")]
    assert len(selfs) == 4 and np.allclose(selfs["kl"], 0, atol=1e-6)
    np.testing.assert_allclose(selfs["z_cross"], selfs["z"], atol=1e-4)
    text = figures.format_report(records)
    assert "overall: 5 usable comparison files, 3 skipped or failed" in text
    assert "1 failed: corrupt tokens file" in text
    within = int((rest["z_cross"].abs() <= 2).sum())
    assert f"|z^(A,B)| <= 2 for {within} of {len(rest)}" in text.split("overall:")[1]
    assert summary.loc["overall", "n_z_cross_within_2"] == within
    # the CLI prints the same report for a profile's store
    monkeypatch.setenv("AEP_OUTPUT_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["compare", "--profile", "cpu"])
    assert result.exit_code == 0, result.output
    assert "overall: 5 usable comparison files, 3 skipped or failed" in result.output
    # a run folder whose run file is unreadable still counts, as failed
    (store.root / store.run_relpath(runs.iloc[0].to_dict()) / "run.parquet").write_bytes(b"junk")
    again = comparison_tables.summarize_comparisons(comparison_tables.compare(store)).set_index("pair")
    assert again.loc["overall", "n_failed"] == 2 and again.loc["overall", "n_records"] == 8


def test_variant_specs_parse_and_fail_clearly():
    v = sampling.Variant.parse("gemma-3-270m@t0.7p0.9")
    assert v.model == "gemma-3-270m" and v.sampling == Sampling(temperature=0.7, top_p=0.9)
    assert v.label == "gemma-3-270m@t0.7p0.9" and sampling.Variant.parse(v.label) == v
    assert sampling.Variant.parse("meta-llama/Llama-3.1-8B").label == "meta-llama/Llama-3.1-8B"
    assert sampling.Variant.parse("m@k40").sampling.top_k == 40
    for bad in ("gemma@", "gemma@x1", "@t1", "a b"):
        with pytest.raises(ValueError, match="expected <model>"):
            sampling.Variant.parse(bad)


def test_running_at_reads_the_cross_aep_at_given_lengths(tmp_path):
    store = RunStore(tmp_path / "store")
    a, b = sampling.parse_variants("smollm2-135m@t0.8p0.9,smollm2-135m")
    runs = comparisons.ensure_comparisons(store, [a], ["p01"], [0, 1], 16, pairs=[(a, b)], device="cpu", dtype="float32")
    records = comparison_tables.compare(store, run_ids=runs["run_id"])
    at = comparison_tables.running_at(store, records, [4, 16, 99])  # 99 > the texts' 16 tokens: no row
    assert sorted(at["n"].unique()) == [4, 16] and len(at) == 2 * len(records)
    for _, rec in records.iterrows():
        cross = comparison_tables.comparison_running(store, rec["run_id"], "cross")
        own = comparison_tables.comparison_running(store, rec["run_id"], "scorer")
        mine = at[at["run_id"] == rec["run_id"]].set_index("n")
        assert mine.loc[4, "z_cross"] == pytest.approx(cross["z_n"].iloc[3])
        assert mine.loc[4, "h_cross"] == pytest.approx(cross["h_n"].iloc[3])
        assert mine.loc[4, "z"] == pytest.approx(own["z_n"].iloc[3])
        # at the end: the record's own final values
        assert mine.loc[16, "z_cross"] == pytest.approx(rec["z_cross"]) and mine.loc[16, "z"] == pytest.approx(rec["z"])
        assert mine.loc[16, "l"] == pytest.approx(rec["l"]) and mine.loc[16, "h_cross"] == pytest.approx(rec["h_cross"])
