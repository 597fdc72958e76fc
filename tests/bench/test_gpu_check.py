"""The prepared GPU check (``aep bench --target gpu``): its CPU-runnable parts. It was never run on a GPU here."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from aep_lib.bench import gpu
from aep_lib.engine.generate import Generation


def tiny_config():
    cfg = gpu.llama_8b_config(1)
    for k, v in {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "vocab_size": 512, "bos_token_id": 1, "eos_token_id": 2}.items():
        setattr(cfg, k, v)
    return cfg


def test_engines_agree_on_cpu_and_the_table_has_a_row_each():
    res = gpu.bench_gpu(1, quick=True, device="cpu", config=tiny_config(), n_gen=6, n_score=64, smoke=False)
    table = res.details["table"]
    for engine in ("eager", "static"):
        for batch in gpu.BATCHES:
            row = next(line for line in table.splitlines() if line.startswith(f"generate {engine} b{batch} "))
            assert " yes " in row, row  # the same tokens as eager for the same seeds
    assert "score_ids 64 tok (compute roofline)" in table and "plain loop b32" in table
    assert res.holds is None and res.ours > 0 and res.ratio > 0  # nothing is judged off a GPU
    assert not [n for n in res.notes if "differs from eager" in n]


def generation(ids, entropy):
    tokens = pd.DataFrame({c: [float(e)] * len(ids) for c in gpu.STAT_COLUMNS for e in [entropy]})
    return Generation("p", 0, [1], list(ids), "", "length", tokens)


def test_engine_agreement_flags_other_tokens_and_statistics_beyond_the_tolerance():
    ref = [generation([5, 6, 7], 3.0)]
    assert gpu.engine_agreement(ref, [generation([5, 6, 7], 3.004)]) == (True, pytest.approx(0.004))
    assert gpu.engine_agreement(ref, [generation([5, 6, 8], 3.0)])[0] is False
    assert gpu.engine_agreement(ref, [generation([5, 6, 7], math.inf)]) == (False, math.inf)


def row(what, fraction, **extra):
    return {"what": what, "fraction": fraction, "rate": 1.0, "roofline": 1.0 / fraction, **extra}


def test_verdict_names_each_goal_that_is_missed():
    good = [row("generate static b1", 0.45, batch=1, engine="static", tokens_equal=True, stat_gap=0.001),
            row("generate compiled b32", 0.6, batch=32, engine="compiled", tokens_equal=True, stat_gap=0.002),
            row("score_ids 4096 tok (compute roofline)", 0.55),
            row("paper-smoke: 29 of 29 notebooks ok", 1.0, failed=[])]
    assert gpu.verdict(good) == (True, [])
    bad = [dict(good[0], fraction=0.3), dict(good[1], stat_gap=0.02), dict(good[2], fraction=0.2),
           dict(good[3], failed=["fig01_self_convergence"])]
    holds, why = gpu.verdict(bad)
    assert not holds and len(why) == 4
    assert why[0].startswith("generate b1: best engine at 0.3") and "differs from eager" in why[1]
    assert "scoring at 0.2" in why[2] and why[3] == "paper-smoke failed: fig01_self_convergence"


def test_without_cuda_the_check_refuses_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    message = gpu.refusal()
    assert message.startswith("aep bench --target gpu needs a CUDA GPU") and "\n" not in message
    res = gpu.bench_gpu(1, quick=False)
    assert math.isnan(res.ours) and res.holds is None


def test_the_paper_smoke_row_reads_the_pipelines_closing_lines():
    out = "27 ok, 2 failed in 310 s\nFAILED fig01_self_convergence (3.0 s) in cell 4: boom\nFAILED x (1 s)\nindex: i\n"
    row = gpu.smoke_summary(out, 300.0)
    assert row["what"] == "paper-smoke: 27 of 29 notebooks ok" and row["failed"] == ["fig01_self_convergence", "x"]
    assert gpu.smoke_summary("29 ok, 0 failed in 200 s\n", 1.0)["failed"] == []
    crashed = gpu.smoke_summary("Traceback ...\nValueError: no\n", 1.0)
    assert crashed["fraction"] == 0 and crashed["failed"] == ["(the run: ValueError: no)"]
