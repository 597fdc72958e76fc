"""The model map: a model name pointed at a local folder or a stand-in, used by every loader and command.

A tiny random model (tests/_tiny.py) stands in for the folder; a stand-in (engine.standins) for the
``standin:`` entries. Every way a map can be wrong is a one-line error.
"""

from __future__ import annotations

import pytest
from _tiny import build_tiny_model
from typer.testing import CliRunner

from aep_lib.core.sampling import Sampling
from aep_lib.engine.model_map import (
    MODEL_MAP_VAR,
    ModelMapError,
    Placement,
    identity_fields,
    parse_max_memory,
    placement_from,
    read_map,
)
from aep_lib.engine.models import cached_model, load_model, load_tokenizer
from aep_lib.runs.generations import generation_spec, model_config

HUB_ID = "acme/Big-Model-8B"  # a hub id that exists nowhere: only the map can resolve it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def mapped(tiny, tmp_path, monkeypatch):
    path = tmp_path / "map.yaml"
    path.write_text(f"models:\n  {HUB_ID}: {tiny}\n")
    monkeypatch.setenv(MODEL_MAP_VAR, str(path))
    return path


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_a_mapped_hub_id_loads_from_its_folder_and_records_both(tiny, mapped):
    model, tokenizer = load_model(HUB_ID, device="cpu")
    ident = model.aep_identity
    assert ident["model"] == HUB_ID and ident["model_source"] == "local"
    assert ident["model_resolved"] == str(tiny) and ident["model_revision"] == str(tiny.resolve())
    reference, _ = load_model(str(tiny), device="cpu")
    assert "model_resolved" not in reference.aep_identity
    assert load_tokenizer(HUB_ID).get_vocab() == tokenizer.get_vocab()
    assert model_config(HUB_ID).vocab_size == model.config.vocab_size
    assert cached_model(HUB_ID, "cpu", "float32")[0].aep_identity["model_resolved"] == str(tiny)


def test_run_ids_change_only_for_mapped_models(tiny, mapped, monkeypatch):
    spec = generation_spec(HUB_ID, "p01", 0, Sampling(), 8)
    assert spec["model_resolved"] == str(tiny) and identity_fields(HUB_ID) == {"model_resolved": str(tiny)}
    unmapped = generation_spec("smollm2-135m", "p01", 0, Sampling(), 8)
    assert "model_resolved" not in unmapped
    monkeypatch.delenv(MODEL_MAP_VAR)
    assert generation_spec("smollm2-135m", "p01", 0, Sampling(), 8)["run_id"] == unmapped["run_id"]
    assert generation_spec(HUB_ID, "p01", 0, Sampling(), 8)["run_id"] != spec["run_id"]


def test_relative_paths_resolve_against_the_map_file_and_later_files_win(tiny, tmp_path, monkeypatch):
    (tmp_path / "weights").symlink_to(tiny)
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(f"models:\n  {HUB_ID}: weights\n  other/model: weights\n")
    second.write_text(f"models:\n  {HUB_ID}: {{standin: llama-3.1-8b}}\n")
    assert read_map(first)[HUB_ID].path == str(tmp_path / "weights")
    monkeypatch.setenv(MODEL_MAP_VAR, f"{first}:{second}")
    assert identity_fields(HUB_ID) == {"model_resolved": "standin:llama-3.1-8b/v1"}
    assert identity_fields("other/model") == {"model_resolved": str(tmp_path / "weights")}


@pytest.mark.parametrize("text, message", [
    ("models: [a, b]\n", "must hold one key, models"),
    ("mdoels: {}\n", "must hold one key, models"),
    ("models:\n  a/b: {path: x, standin: gemma-3-1b}\n", "exactly one of path"),
    ("models:\n  a/b: {folder: x}\n", "unknown key(s) ['folder']"),
    ("models:\n  a/b: {standin: llama-9}\n", "unknown stand-in 'llama-9'"),
    ("models:\n  a/b: 3\n", "give a folder, or a mapping with path or standin"),
    ("models:\n  a/b: {path: ''}\n", "path must be a folder name"),
    ("models:\n  a/b: {path: x, device_map: everywhere}\n", "device_map 'everywhere' is not one of"),
    ("models:\n  a/b: {path: x, device_map: auto, max_memory: {gpu0: 1GiB}}\n", "unknown device 'gpu0'"),
    ("models:\n  a/b: {path: x, device_map: auto, max_memory: {cpu: lots}}\n", "size 'lots' of device cpu"),
    ("models:\n  a/b: {path: x, max_memory: {cpu: 1GiB}}\n", "max_memory needs a device_map"),
    ("models:\n  a/b: {path: x\n", "not valid YAML"),
])
def test_a_map_file_with_a_bad_entry_is_a_one_line_error(tmp_path, text, message):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(ModelMapError) as err:
        read_map(path)
    assert message in one_line(err) and str(path) in str(err.value)


def test_a_mapped_folder_that_is_missing_or_holds_no_weights_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    path = tmp_path / "map.yaml"
    path.write_text("models:\n  a/missing: nowhere\n  a/empty: empty\n")
    monkeypatch.setenv(MODEL_MAP_VAR, str(path))
    with pytest.raises(ModelMapError) as err:
        load_model("a/missing", device="cpu")
    assert one_line(err).endswith(f"a/missing -> {tmp_path / 'nowhere'}: no such folder")
    with pytest.raises(ModelMapError) as err:
        load_tokenizer("a/empty")
    assert "holds no model weights" in one_line(err)
    monkeypatch.setenv(MODEL_MAP_VAR, str(tmp_path / "absent.yaml"))
    with pytest.raises(ModelMapError) as err:
        load_model("a/missing", device="cpu")
    assert one_line(err) == f"model map {tmp_path / 'absent.yaml'}: no such file"


def test_placement_values():
    assert parse_max_memory("0=70GiB, cpu=200GiB,disk=1TB") == ((0, "70GiB"), ("cpu", "200GiB"), ("disk", "1TB"))
    assert parse_max_memory({"cuda:1": "5GB", "cpu": "51000000"}) == ((1, "5GB"), ("cpu", 51_000_000))
    two_gpus = placement_from("auto", {0: "70GiB", 1: "70GiB", "cpu": "100GiB"})
    assert two_gpus.gpus == 2 and two_gpus.kwargs()["max_memory"] == {0: "70GiB", 1: "70GiB", "cpu": "100GiB"}
    by_modules = placement_from({"model.layers.0": 0, "model.layers.1": "cuda:1", "lm_head": "cpu"})
    assert by_modules.gpus == 2 and by_modules.kwargs()["device_map"]["model.layers.1"] == "cuda:1"
    assert placement_from("auto", {"cpu": "51MB"}).gpus == 0 and placement_from("") is None
    assert hash(two_gpus) == hash(Placement("auto", ((0, "70GiB"), (1, "70GiB"), ("cpu", "100GiB"))))


def test_cli_model_map_option_reaches_score_and_rejects_a_bad_map(tiny, tmp_path, monkeypatch):
    from aep_lib.cli import app

    monkeypatch.setenv(MODEL_MAP_VAR, "")  # the CLI sets it: restored after the test
    good, bad = tmp_path / "map.yaml", tmp_path / "bad.yaml"
    good.write_text(f"models:\n  {HUB_ID}: {tiny}\n")
    bad.write_text("models:\n  a/b: {standin: nothing}\n")
    text = tmp_path / "t.txt"
    text.write_text("The history of the lighthouse begins with fire on a hill.")
    result = CliRunner().invoke(app, ["--model-map", str(good), "score", str(text), "--model", HUB_ID])
    assert result.exit_code == 0, result.output
    assert f"{HUB_ID}: 29 tokens" in result.output
    monkeypatch.setenv(MODEL_MAP_VAR, "")  # the CLI sets it: restored after the test
    result = CliRunner().invoke(app, ["--model-map", str(bad), "score", str(text), "--model", HUB_ID])
    assert result.exit_code == 2 and "unknown stand-in 'nothing'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_run_with_a_model_map_stores_runs_of_the_name_resolved_to_the_folder(tiny, tmp_path, monkeypatch):
    from aep_lib.cli import app
    from aep_lib.store.run_store import RunStore

    monkeypatch.setenv(MODEL_MAP_VAR, "")  # the CLI sets it: restored after the test
    path = tmp_path / "map.yaml"
    path.write_text(f"models:\n  {HUB_ID}: {tiny}\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"models: {HUB_ID}\nprompts: p01\nn_seeds: 2\nmax_new_tokens: 4\ndevice: cpu\n")
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["--model-map", str(path), "run", str(grid), "--store", str(store)])
    assert result.exit_code == 0, result.output
    runs = RunStore(store).runs()
    assert len(runs) == 2 and set(runs["model"]) == {HUB_ID} and set(runs["model_resolved"]) == {str(tiny)}
    assert set(runs["model_source"]) == {"local"}
