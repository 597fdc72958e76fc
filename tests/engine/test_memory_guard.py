"""Work too large for memory is refused before it starts, from the estimate alone.

Nothing here allocates what it is refused: the memory the process can get (``memory.memory_limit_bytes``)
is replaced by a small number, or the length asked for needs more than this machine has. The tiny
model of ``tests/_tiny.py`` (2 layers, 1 KV head of 16 dims, float32) holds 256 bytes of KV cache per
position; its step temporaries add 12 float32 rows of its vocabulary and 16 of its hidden size. A scoring
pass over n tokens holds n x 1,664 bytes of activations (``memory.activation_bytes``) and its rows of logits.
"""

from __future__ import annotations

import psutil
import pytest
from _tiny import build_tiny_model
from typer.testing import CliRunner

from aep_lib.core.sampling import Sampling, Variant
from aep_lib.engine import generate as generate_module
from aep_lib.engine import memory
from aep_lib.engine.generate import generate
from aep_lib.engine.memory import MemoryEstimateError
from aep_lib.engine.models import ModelPool, load_model
from aep_lib.engine.score import ScoringError, ScoringMemoryError, score_ids
from aep_lib.params import Grid
from aep_lib.runs import comparisons, generations
from aep_lib.runs.grids import ensure_grid
from aep_lib.store.run_store import RunStore

KV_PER_POSITION = 2 * 2 * 16 * 4  # 2 (keys, values) x 2 layers x 16 dims x 4 bytes
# 4 x hidden 32 + 3 x (2 heads x 16 dims) + 3 x intermediate 64, float32
ACTIVATIONS_PER_POSITION = (4 * 32 + 3 * 2 * 16 + 3 * 64) * 4
POSITIONS_THAT_FIT = 100


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_model(tiny, device="cpu", dtype="float32")


def fixed_part(config) -> int:
    return memory.STEP_ROWS_PER_SEQUENCE * config.vocab_size * 4 + 16 * config.hidden_size * 4


def limit_for(n_bytes: int) -> int:
    """A memory limit whose planning budget (``MEMORY_FRACTION`` of it) is ``n_bytes``."""
    return int(n_bytes / memory.MEMORY_FRACTION) + 1


@pytest.fixture
def small_memory(loaded, monkeypatch):
    """Room for one sequence of ``POSITIONS_THAT_FIT`` positions of the tiny model, and no more."""
    config = loaded[0].config
    limit = limit_for(KV_PER_POSITION * POSITIONS_THAT_FIT + fixed_part(config))
    monkeypatch.setattr(memory, "memory_limit_bytes", lambda device: limit)
    return limit


@pytest.fixture
def no_decoder(monkeypatch):
    """Every decoder of ``generate`` replaced by one that fails the test: nothing may be allocated."""
    def refuse(*args, **kwargs):
        raise AssertionError("a decoder was built: the refusal must come before anything is allocated")

    monkeypatch.setattr(generate_module, "DECODERS", {k: refuse for k in generate_module.DECODERS})


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model by name fails the test (the refusal must come at planning)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(generations, "cached_model", refuse)
    monkeypatch.setattr(ModelPool, "model", refuse)


def test_one_sequence_that_does_not_fit_is_refused_not_batched_as_one(loaded, small_memory):
    model, _ = loaded
    # fits: a batch is planned from the free memory as before (never below one sequence)
    assert memory.batch_size_for_memory(model, POSITIONS_THAT_FIT, requested=8, free_bytes=10) == 1
    with pytest.raises(MemoryEstimateError) as err:
        memory.batch_size_for_memory(model, 1000, requested=8, prompt_tokens=10)
    message = str(err.value)
    assert "\n" not in message
    assert "max_new_tokens=990 does not fit in memory" in message
    assert f"at most max_new_tokens={POSITIONS_THAT_FIT - 10} fits (the prompt takes 10)" in message
    assert " MB " in message and "available on cpu" in message


def test_generate_refuses_a_length_that_does_not_fit_and_names_the_one_that_does(loaded, small_memory, no_decoder):
    model, tok = loaded
    with pytest.raises(MemoryEstimateError, match="does not fit in memory") as err:
        generate(model, tok, ["The history of"], [0], Sampling(), 999_999, progress=False)
    fit = int(str(err.value).split("at most max_new_tokens=")[1].split()[0].replace(",", ""))
    assert 0 < fit < POSITIONS_THAT_FIT
    with pytest.raises(MemoryEstimateError):  # one token more than the named length: refused too
        generate(model, tok, ["The history of"], [0], Sampling(), fit + 1, progress=False)
    with pytest.raises(AssertionError, match="a decoder was built"):  # the named length passes the check
        generate(model, tok, ["The history of"], [0], Sampling(), fit, progress=False)


def test_the_compiled_engine_is_refused_by_the_cache_it_allocates(loaded, small_memory, no_decoder):
    model, tok = loaded
    width = len(tok("The history of")["input_ids"])
    n = 64 - width + 1  # 65 positions: a static cache of 65 slots fits, the compiled engine's 128 do not
    with pytest.raises(AssertionError, match="a decoder was built"):
        generate(model, tok, ["The history of"], [0], Sampling(), n, progress=False, engine="static")
    with pytest.raises(MemoryEstimateError) as err:
        generate(model, tok, ["The history of"], [0], Sampling(), n, progress=False, engine="compiled")
    assert f"at most max_new_tokens={64 - width} fits" in str(err.value)  # 64 slots, the largest bucket that fits


def test_a_length_beyond_this_machines_memory_is_refused_by_the_estimate(loaded, no_decoder):
    model, tok = loaded
    n = 4 * psutil.virtual_memory().total // KV_PER_POSITION  # a KV cache of 4x the machine's RAM
    with pytest.raises(MemoryEstimateError, match=f"max_new_tokens={n:,} does not fit in memory"):
        generate(model, tok, ["The history of"], [0], Sampling(), n, progress=False)


def test_a_grid_too_long_for_memory_is_refused_at_planning_and_nothing_is_stored(tiny, small_memory, no_model_load,
                                                                               tmp_path):
    store = RunStore(tmp_path / "store")
    grid = Grid(models=[tiny], prompts=["p01"], n_seeds=2, max_new_tokens=999_999, batch_size=2, device="cpu",
                dtype="float32")
    with pytest.raises(MemoryEstimateError) as err:
        ensure_grid(store, grid, executor="local", progress=False)
    message = str(err.value)
    assert message.startswith(f"{tiny}: max_new_tokens=999,999 does not fit in memory") and "\n" not in message
    assert f"at most {POSITIONS_THAT_FIT:,} positions (prompt and new tokens) fit" in message
    assert len(store.runs()) == 0


def test_a_refusal_after_the_load_is_raised_not_stored_as_a_failed_run(tiny, small_memory, monkeypatch, tmp_path):
    monkeypatch.setattr(generations, "model_config", lambda name: None)  # planning cannot estimate: the load must
    store = RunStore(tmp_path / "store")
    with pytest.raises(MemoryEstimateError, match="does not fit in memory"):
        generations.ensure_generations(store, [tiny], ["p01"], [0], Sampling(), 5000, device="cpu",
                                       dtype="float32", progress=False)
    assert len(store.runs()) == 0  # neither ok nor failed: nothing was generated


def test_scoring_a_text_whose_window_does_not_fit_is_refused_and_a_window_that_fits_scores(loaded, monkeypatch):
    model, _ = loaded
    ids = list(range(1, 201))
    vocab = model.config.vocab_size
    # room for a window of 60 tokens in one pass: its activations and 60 rows of float32 logits (no cache)
    monkeypatch.setattr(memory, "memory_limit_bytes",
                        lambda device: limit_for(60 * (ACTIVATIONS_PER_POSITION + vocab * 4)))
    with pytest.raises(ScoringMemoryError) as err:
        score_ids(model, ids, 1)
    message = str(err.value)
    assert isinstance(err.value, ScoringError) and isinstance(err.value, MemoryEstimateError)
    assert message.startswith("text of 200 tokens does not fit in memory: one window of 200 tokens needs")
    assert "at most 60 tokens fit in one window" in message and "max_context=60 with stride=<tokens>" in message
    df = score_ids(model, ids, 1, max_context=60, stride=30)  # the sliding window it names fits
    assert len(df) == 199


def test_aep_score_prints_the_refusal_in_one_line(tiny, tmp_path, monkeypatch):
    from aep_lib.cli import app

    monkeypatch.setattr(memory, "memory_limit_bytes", lambda device: 1000)
    text = tmp_path / "t.txt"
    text.write_text("The history of the lighthouse begins with fire on a hill. " * 3)
    result = CliRunner().invoke(app, ["score", str(text), "--model", tiny])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if "does not fit in memory" in line]
    assert line.startswith(f"error: {text}: text of ") and "not even two tokens fit" in line


def test_comparisons_too_long_for_memory_are_refused_before_any_model_loads(loaded, tiny, monkeypatch, tmp_path):
    config = loaded[0].config
    # a generation of up to 60 positions fits (KV + step rows); scoring 31 does not (activations + 31 rows of logits)
    budget = KV_PER_POSITION * 60 + fixed_part(config)
    assert 31 * (ACTIVATIONS_PER_POSITION + config.vocab_size * 4) > budget
    monkeypatch.setattr(memory, "memory_limit_bytes", lambda device: limit_for(budget))
    store = RunStore(tmp_path / "store")
    variant = Variant(tiny, Sampling())
    with monkeypatch.context() as m:
        m.setattr(ModelPool, "model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a model was loaded")))
        m.setattr(generations, "cached_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
        with pytest.raises(MemoryEstimateError, match="does not fit in memory") as err:
            comparisons.ensure_comparisons(store, [variant], ["p01"], [0], 39, device="cpu", dtype="float32")
    assert "one window of 40 tokens" in str(err.value)
    assert len(store.runs()) == 0
    # without a config at hand the scoring itself refuses, before its first forward pass, and stores nothing
    monkeypatch.setattr(comparisons, "model_config", lambda name: None)
    with pytest.raises(MemoryEstimateError, match="does not fit in memory"):
        comparisons.ensure_comparisons(store, [variant], ["p01"], [0], 30, device="cpu", dtype="float32")
    assert len(store.runs(kind="score")) == 0 and set(store.runs()["status"]) == {"ok"}  # the source generation


def test_the_memory_limit_honours_the_address_space_limit(monkeypatch):
    import resource

    used = psutil.Process().memory_info().vms
    monkeypatch.setattr(resource, "getrlimit", lambda which: (used + 5_000_000, resource.RLIM_INFINITY))
    assert memory.memory_limit_bytes("cpu") <= 5_000_000 + 100_000_000  # the headroom, give or take what runs meanwhile


def test_the_memory_limit_honours_a_cgroup_limit(tmp_path):
    (tmp_path / "memory.max").write_text("3000000000\n")
    (tmp_path / "memory.current").write_text("1000000000\n")
    assert memory.cgroup_headroom_bytes(str(tmp_path)) == 2_000_000_000
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.cgroup_headroom_bytes(str(tmp_path)) is None


def test_a_scoring_pass_holds_its_activations_and_a_cache_only_when_the_window_takes_several_passes(loaded):
    config = loaded[0].config
    assert memory.activation_bytes(config, 10) == 10 * ACTIVATIONS_PER_POSITION == 16_640
    logits = 8 * config.vocab_size * 4
    one_pass = memory.scoring_bytes(config, 100, 8, 4)
    assert one_pass == memory.scoring_bytes(config, 100, 8, 4, pass_tokens=100) == 100 * ACTIVATIONS_PER_POSITION + logits
    chunked = memory.scoring_bytes(config, 100, 8, 4, pass_tokens=25)
    assert chunked == 100 * KV_PER_POSITION + 25 * ACTIVATIONS_PER_POSITION + logits
    # sliding-window layers (Gemma 3): two [queries, keys] masks of 4 bytes; causal-only layers: none
    from types import SimpleNamespace

    assert memory.attention_mask_bytes(SimpleNamespace(layer_types=["sliding_attention", "full_attention"]), 10, 30) == 2400
    assert memory.attention_mask_bytes(SimpleNamespace(layer_types=["full_attention"]), 10, 30) == 0
    assert memory.attention_mask_bytes(config, 10, 30) == 0
