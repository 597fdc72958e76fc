"""The stand-ins of the paper's models: their architectures, shared vocabularies and the same bytes everywhere."""

from __future__ import annotations

import json

import pytest

from aep_lib.engine import standins
from aep_lib.engine.embedded import file_sha256
from aep_lib.engine.model_map import MODEL_MAP_VAR
from aep_lib.engine.models import ModelPool, load_model


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """A Llama stand-in written into an empty cache (its tokenizer then comes from SmolLM2's GGUF, not from a
    de-quantized cache entry), and a Gemma stand-in from the usual cache."""
    gemma = standins.standin_folder("gemma-3-1b")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEP_CACHE_DIR", str(cache))
        llama = standins.standin_folder("llama-3.1-8b")
    return {"llama-3.1-8b": llama, "gemma-3-1b": gemma, "cache": cache}


def test_stand_ins_are_the_same_bytes_on_every_machine(fresh_cache):
    for name in ("llama-3.1-8b", "gemma-3-1b"):
        folder = fresh_cache[name]
        assert file_sha256(folder / "model.safetensors") == standins.STANDIN_WEIGHTS_SHA256[name], name
        marker = json.loads((folder / standins.MARKER).read_text())
        assert marker["standin"] == name and marker["version"] == standins.STANDIN_VERSION
        assert standins.standin_problem(folder) is None


def test_a_damaged_stand_in_is_written_again(fresh_cache, monkeypatch):
    monkeypatch.setenv("AEP_CACHE_DIR", str(fresh_cache["cache"]))  # damaging it there harms no other test
    folder = fresh_cache["llama-3.1-8b"]
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"junk")
    assert "another size" in standins.standin_problem(folder)
    assert standins.standin_folder("llama-3.1-8b") == folder
    assert file_sha256(folder / "model.safetensors") == standins.STANDIN_WEIGHTS_SHA256["llama-3.1-8b"]


def test_llama_stand_ins_have_llama_3_1s_configuration_and_share_a_tokenizer():
    config_8b = standins.standin_config(standins.STANDINS["llama-3.1-8b"], 49_152)
    config_70b = standins.standin_config(standins.STANDINS["llama-3.1-70b"], 49_152)
    for config, ratio in ((config_8b, 4), (config_70b, 8)):  # the real models' query heads per KV head
        assert config.model_type == "llama" and not config.tie_word_embeddings
        assert config.num_attention_heads // config.num_key_value_heads == ratio
        assert config.rope_parameters == standins.LLAMA31_ROPE and config.max_position_embeddings == 131_072
    assert config_70b.num_hidden_layers > config_8b.num_hidden_layers and config_70b.hidden_size > config_8b.hidden_size


def test_gemma_stand_ins_have_sliding_window_layers():
    for name, window in (("gemma-3-1b", 32), ("gemma-3-12b", 64)):
        config = standins.standin_config(standins.STANDINS[name], 262_144)
        assert config.model_type == "gemma3_text" and config.tie_word_embeddings
        assert config.sliding_window == window
        assert config.layer_types[:6] == ["sliding_attention"] * 5 + ["full_attention"]
        assert config.rope_parameters["sliding_attention"]["rope_theta"] == 10_000.0
    assert standins.standin_config(standins.STANDINS["gemma-3-12b"], 262_144).rope_parameters["full_attention"][
        "rope_type"] == "linear"


def test_mapped_stand_ins_load_with_their_families_vocabularies(tmp_path, monkeypatch):
    path = tmp_path / "map.yaml"
    path.write_text("models:\n" + "".join(f"  {hub}: {{standin: {name}}}\n"
                                          for hub, name in standins.PAPER_STANDINS.items()))
    monkeypatch.setenv(MODEL_MAP_VAR, str(path))
    model, tokenizer = load_model("google/gemma-3-1b-pt", device="cpu")
    assert model.config.vocab_size == 262_144 == len(tokenizer)
    assert model.aep_identity["model_resolved"] == "standin:gemma-3-1b/v1"
    assert model.aep_identity["model_source"] == "standin"
    llama, llama_tok = load_model("meta-llama/Llama-3.1-8B", device="cpu")
    assert llama.config.vocab_size == 49_152 == len(llama_tok)
    assert llama_tok("Hello")["input_ids"][0] == llama_tok.bos_token_id  # a BOS, as Llama 3.1 adds
    pool = ModelPool(device="cpu")
    assert pool.shared_vocabulary("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B")
    assert pool.shared_vocabulary("google/gemma-3-1b-pt", "google/gemma-3-12b-pt")
    assert not pool.shared_vocabulary("meta-llama/Llama-3.1-8B", "google/gemma-3-12b-pt")


def test_cli_standins_lists_them():
    from typer.testing import CliRunner

    from aep_lib.cli import app

    result = CliRunner().invoke(app, ["standins"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == len(standins.STANDINS)
    assert lines[2].startswith("llama-3.1-70b") and "meta-llama/Llama-3.1-70B" in lines[2]
