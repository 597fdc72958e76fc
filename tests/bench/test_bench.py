"""The benchmark code runs and prints its fields (tiny sizes; no timings are asserted)."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from aep_lib.bench import common, gpu, run_bench, startup
from aep_lib.cli import app
from aep_lib.engine.memory import kv_cache_bytes


def test_store_bench_quick_prints_its_fields(capsys):
    (res,) = run_bench(["store"], repeats=1, quick=True)
    out = capsys.readouterr().out
    assert res.target == "store" and res.ours > 0 and res.baseline > 0 and isinstance(res.holds, bool)
    for field in ("layout", "bytes per token row", "query over one compacted file", "holds", "ratio"):
        assert field in out
    assert "target" in out.splitlines()[-3] and out.splitlines()[-1].startswith("store")


def test_gpu_bench_code_runs_on_cpu_with_a_tiny_config():
    cfg = gpu.llama_8b_config(1)
    for k, v in dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                     vocab_size=512, bos_token_id=1, eos_token_id=2).items():
        setattr(cfg, k, v)
    res = gpu.bench_gpu(1, quick=True, device="cpu", config=cfg, n_gen=4, n_score=64)
    assert res.ours > 0 and res.baseline > 0 and res.holds is None
    assert any(k.startswith("generate batch 32") for k in res.details)
    assert any(k.startswith("score_ids") for k in res.details)


def test_gpu_target_without_cuda_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    res = gpu.bench_gpu(1, quick=True)
    assert res.holds is None and math.isnan(res.ours) and "not measured" in res.notes[0]


def test_flops_and_kv_bytes_count_windows():
    from transformers import Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=4)
    assert cfg.layer_types.count("full_attention") == 1
    # 5 sliding layers hold 4 tokens, the full layer holds all 10: K and V, 1 head of 32, float32
    assert kv_cache_bytes(cfg, 10) == 2 * 32 * 4 * (5 * 4 + 10)

    class M:
        config = cfg

        def parameters(self):
            import torch

            return [torch.zeros(3, 5), torch.zeros(7)]

    weights, attention = common.flops_per_token(M(), 8)
    assert weights == 2 * 15
    mean_ctx = 5 * sum(min(i + 1, 4) for i in range(8)) / 8 + sum(range(1, 9)) / 8
    assert attention == pytest.approx(4 * 2 * 32 * mean_ctx)


# What each model target of `aep bench` prints (one test per target, so parallel test workers share them).
TARGET_FIELDS = {
    "generation": ("ours batch 1", "today's eager engine", "roofline"),
    "batch": ("roofline", "FLOP per token"),
    "bf16": ("roofline", "transformers generate(), no statistics"),
    "pair": ("joint pair pass",),
    "scoring": ("FLOP per token", "bfloat16: matmul", "float32: matmul"),
    "memory": ("growth 16->64 tok",),
    "long": ("stride 256: tok/s", "every token scored once (rows = tokens, positions continuous): True"),
    "loglik": ("float32: ours tok/s", "float32: plain baseline tok/s", "peak above load"),
    "texts": ("batched / one at a time / plain batched tok/s", "max |batched - one at a time| (bits)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGET_FIELDS))
def test_cli_bench_quick_runs_the_model_target(target):
    result = CliRunner().invoke(app, ["bench", "--quick", "--repeats", "1", "--threads", "1", "--target", target])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"== {target}" in out
    assert any(line.startswith(target) for line in out.splitlines()), f"{target} missing from the table"
    for field in TARGET_FIELDS[target]:
        assert field in out, field


def test_decode_flops_count_weights_and_the_mean_context():
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=1)

    class M:
        config = cfg

        def parameters(self):
            import torch

            return [torch.zeros(4, 5), torch.zeros(6)]

    # weights 2 x 20; attention 4 x 2 heads x 4 dims x 3 layers x (prompt 10 + 8 new / 2)
    assert common.decode_flops_per_token(M(), 10, 8) == 40 + 4 * 2 * 4 * 3 * 14


def test_timed_counts_cpu_seconds_of_work_not_of_sleep():
    import time

    with common.Timed() as slept:
        time.sleep(0.2)
    with common.Timed() as worked:
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
    assert slept.wall >= 0.2 and slept.cpu < 0.1
    assert worked.cpu >= 0.2 and worked.wall >= worked.cpu - 0.01


@pytest.mark.slow
def test_startup_bench_times_until_the_model_is_loaded_not_the_exit():
    res = startup.bench_startup(repeats=1, quick=True)
    d = res.details
    for label in ("smollm2-135m", "gemma-3-270m", "floor"):
        (ready,), (whole,) = d[f"{label} ready (s, each repeat)"], d[f"{label} process exit (s, each repeat)"]
        assert 0 < ready <= whole, label  # one child's clock: READY is read before its own teardown and exit
    worst = max(d["smollm2-135m ready (s, each repeat)"][0], d["gemma-3-270m ready (s, each repeat)"][0])
    assert res.ours == pytest.approx(worst, abs=0.006)  # details are rounded to 0.01 s
    assert res.holds == (res.ours < 5.0)


def test_cli_bench_rejects_unknown_targets():
    result = CliRunner().invoke(app, ["bench", "--target", "nope"])
    assert result.exit_code == 2 and "unknown bench target" in result.output
