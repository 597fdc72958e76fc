"""Grids of runs: planning, the local executor, and the Ray executor with a killed worker.

A tiny random model (tests/_tiny.py) keeps this fast; the Ray tests start a local Ray instance with
2 CPUs and are skipped when Ray is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from _tiny import build_tiny_model

from aep_lib.core.sampling import Sampling
from aep_lib.params import Grid
from aep_lib.runs.generations import plan_generations
from aep_lib.runs.grids import ensure_grid
from aep_lib.store.run_store import RunStore

TOKEN_COLUMNS = ["position", "token_id", "surprisal_raw", "entropy_raw", "varentropy_raw", "rank_raw",
                 "surprisal_samp", "entropy_samp", "varentropy_samp"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def grid(tiny):
    return Grid(models=[tiny], prompts=["p01", "p02"], n_seeds=2, max_new_tokens=8, top_p=0.95, batch_size=2,
                device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def local_store(grid, tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("local") / "store")
    runs = ensure_grid(store, grid, executor="local", progress=False)
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    return store


def _run_folders(store: RunStore) -> list[str]:
    """The run_id of every run folder on disk (a run stored twice would appear twice)."""
    return [p.name.rsplit("__", 1)[1] for p in store.root.glob("*/*/*/*__*")]


def _tokens(store: RunStore) -> dict:
    ids = sorted(store.runs()["run_id"])
    return {rid: store.tokens([rid])[TOKEN_COLUMNS] for rid in ids}


def test_plan_expands_warps_and_lengths_never_mixes_lengths_and_fills_batches_across_warps(tiny, tmp_path):
    warps = [Sampling(top_p=0.95), Sampling(temperature=0.7)]
    plan = plan_generations(RunStore(tmp_path / "s"), [tiny], ["p01", "p02", "p03"], [0, 1], warps, [4, 6],
                            batch_size=4, device="cpu", dtype="float32")
    assert len(plan.specs) == 3 * 2 * 2 * 2 == plan.n_missing
    assert len({s["run_id"] for s in plan.specs}) == 24
    # per length 6 runs of each warp: batches of 4, 4, 4 (the middle one holds 2 of each warp)
    assert [len(b.specs) for b in plan.batches] == [4, 4, 4, 4, 4, 4]
    for batch in plan.batches:
        assert {s["max_new_tokens"] for s in batch.specs} == {batch.max_new_tokens}
        assert [(w.temperature, w.top_p) for w in batch.samplings] == [(s["temperature"], s["top_p"]) for s in batch.specs]
    first, middle = plan.batches[0].samplings, plan.batches[1].samplings
    assert set(first) == {warps[0]} and middle == [warps[0]] * 2 + [warps[1]] * 2  # the warps in the order given
    assert sorted(r for b in plan.batches for r in b.run_ids) == sorted(s["run_id"] for s in plan.specs)


def test_grid_yaml_lists_of_warps_and_lengths(tmp_path):
    from aep_lib.params import ParamsError, load_grid

    path = tmp_path / "g.yaml"
    path.write_text("models: a,b\nprompts: p01\nwarps:\n  - {top_p: 0.9}\n  - {temperature: 0}\nlengths: '8,16'\n")
    g = load_grid(path)
    assert g.samplings == [Sampling(top_p=0.9), Sampling(temperature=0.0)] and g.all_lengths == [8, 16]
    path.write_text("models: a\nprompts: p01\nwarps: [{top_p: 0.9}]\ntop_p: 0.5\n")
    with pytest.raises(ParamsError, match="either warps"):
        load_grid(path)


def test_local_grid_skips_stored_runs(grid, local_store):
    plan = plan_generations(local_store, grid.models, grid.prompts, grid.seeds, grid.samplings, grid.all_lengths,
                            grid.batch_size, grid.device, grid.dtype)
    assert plan.n_missing == 0 and not plan.batches
    assert sorted(_run_folders(local_store)) == sorted(s["run_id"] for s in plan.specs)


def test_cli_run_local_then_nothing_left(tiny, tmp_path):
    from typer.testing import CliRunner

    from aep_lib.cli import app

    grid = tmp_path / "grid.yaml"
    grid.write_text(f"models: {tiny}\nprompts: p01\nn_seeds: 2\nlengths: '3,5'\nbatch_size: 4\ndevice: cpu\n")
    args = ["run", str(grid), "--store", str(tmp_path / "store")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "4 of 4 runs of the grid stored: {'ok': 4}" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "4 of 4 runs" in again.output
    assert len(RunStore(tmp_path / "store").runs()) == 4
    bad = CliRunner().invoke(app, [*args, "--executor", "dask"])
    assert bad.exit_code == 2 and "unknown executor" in bad.output


RAY_START_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPUs, started as ``aep run --executor ray`` starts one: patient with a
    busy machine (``ray_executor.start_local``: longer waits, a failed start retried for 10 minutes).

    Ray 2.60's raylet gives its dashboard agent a fixed 15 s to start, which no setting lengthens; on a
    machine too busy for that during every try, the tests that need Ray are skipped with Ray's reason
    (any other failure to start is an error).
    """
    pytest.importorskip("ray")
    from aep_lib.runs.ray_executor import start_local

    try:
        ray = start_local(num_cpus=2, log_to_driver=False, timeout_s=RAY_START_TIMEOUT_S)
    except RuntimeError as err:
        if "timed out during startup" not in str(err):
            raise
        pytest.skip(f"Ray could not start on this busy machine: {err}")
    yield ray
    ray.shutdown()


class FlakyRay:
    """Stands in for the ``ray`` module: ``init`` fails ``failures`` times as a busy machine made it fail."""

    def __init__(self, failures: int):
        self.failures, self.inits, self.shutdowns, self.kwargs = failures, 0, 0, None

    def init(self, **kwargs):
        self.inits += 1
        if self.inits <= self.failures:
            raise Exception("The current node timed out during startup. This could happen because ...")
        self.kwargs = kwargs

    def shutdown(self):
        self.shutdowns += 1


def test_start_local_retries_a_start_that_timed_out(monkeypatch):
    from aep_lib.runs import ray_executor

    flaky = FlakyRay(failures=2)
    monkeypatch.setattr(ray_executor, "_ray", lambda: flaky)
    monkeypatch.delenv("RAY_gcs_server_port_wait_time_s", raising=False)
    monkeypatch.setenv("RAY_gcs_server_request_timeout_seconds", "77")  # the user's own setting wins
    assert ray_executor.start_local(num_cpus=2, timeout_s=600) is flaky
    assert (flaky.inits, flaky.shutdowns) == (3, 2)
    assert flaky.kwargs["address"] == "local"  # never a cluster found in /tmp/ray/ray_current_cluster
    assert flaky.kwargs["num_cpus"] == 2 and flaky.kwargs["_system_config"] == ray_executor.SLOW_MACHINE_CONFIG
    import os

    assert os.environ["RAY_gcs_server_port_wait_time_s"] == "300"
    assert os.environ["RAY_gcs_server_request_timeout_seconds"] == "77"


def test_start_local_gives_up_after_its_deadline_with_the_reason(monkeypatch):
    from aep_lib.runs import ray_executor

    flaky = FlakyRay(failures=10**6)
    monkeypatch.setattr(ray_executor, "_ray", lambda: flaky)
    with pytest.raises(RuntimeError) as err:
        ray_executor.start_local(timeout_s=0)
    reason = "Exception: The current node timed out during startup. This could happen because ..."
    assert str(err.value) == f"could not start a local Ray instance: 1 tries in 0 s failed; the first: {reason}; the last: {reason}"


def test_a_failed_start_ends_only_the_processes_it_started():
    import subprocess
    import sys

    from aep_lib.runs.ray_executor import end_children_started_since

    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        import psutil

        before = {p.pid for p in psutil.Process().children(recursive=True)}
        newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        assert end_children_started_since(before) == [newer.pid]
        assert newer.wait(timeout=30) is not None and older.poll() is None
    finally:
        older.kill()
        older.wait()


def test_ray_grid_with_a_killed_worker_stores_each_run_once(ray_local, grid, local_store, tmp_path):
    store = RunStore(tmp_path / "store")
    marker = tmp_path / "crashed"
    runs = ensure_grid(store, grid, executor="ray", progress=False, crash_once=marker, max_retries=2)
    assert marker.exists(), "the fault injection did not fire: no worker was killed"
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    folders = _run_folders(store)
    assert len(folders) == len(set(folders)) == 4, "a run is stored twice or is missing"
    assert sorted(folders) == sorted(_run_folders(local_store))
    ours, reference = _tokens(store), _tokens(local_store)
    assert ours.keys() == reference.keys()
    for rid in ours:
        a, b = ours[rid], reference[rid]
        np.testing.assert_array_equal(a["token_id"], b["token_id"])
        np.testing.assert_allclose(a.drop(columns=["token_id"]).to_numpy(float),
                                   b.drop(columns=["token_id"]).to_numpy(float), rtol=1e-4, atol=1e-5)
    # a second pass finds everything stored and submits nothing
    again = ensure_grid(store, grid, executor="ray", progress=False)
    assert sorted(again["run_id"]) == sorted(runs["run_id"])
    assert sorted(_run_folders(store)) == sorted(folders)


def test_batch_size_for_memory_counts_the_kv_cache_and_the_step_rows(tiny):
    from aep_lib.engine.memory import (
        MEMORY_FRACTION,
        STEP_ROWS_PER_SEQUENCE,
        batch_size_for_memory,
        memory_per_sequence,
    )
    from aep_lib.engine.models import load_model

    model, _ = load_model(tiny, device="cpu", dtype="float32")
    cfg = model.config  # 2 layers, 1 KV head of 16 dims, float32: 2 * 2 * 16 * 4 = 256 bytes per position
    per = memory_per_sequence(model, 100)
    assert per == 256 * 100 + STEP_ROWS_PER_SEQUENCE * cfg.vocab_size * 4 + 16 * cfg.hidden_size * 4
    room_for_3 = int(3 * per / MEMORY_FRACTION) + 1
    assert batch_size_for_memory(model, 100, requested=8, free_bytes=room_for_3) == 3
    assert batch_size_for_memory(model, 100, requested=2, free_bytes=room_for_3) == 2
    assert batch_size_for_memory(model, 100, requested=8, free_bytes=10) == 1  # never 0
    assert batch_size_for_memory(model, 100, requested=8) >= 1  # this machine's free RAM


def test_a_batch_larger_than_free_memory_runs_split_with_the_same_tokens(grid, local_store, tmp_path, monkeypatch):
    from aep_lib.engine import memory

    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 1)  # room for one sequence at a time
    store = RunStore(tmp_path / "store")
    runs = ensure_grid(store, grid, executor="local", progress=False)
    assert len(runs) == 4 and set(runs["status"]) == {"ok"} and set(runs["batch_size"]) == {1}
    assert set(local_store.runs()["batch_size"]) == {2}
    split, whole = _tokens(store), _tokens(local_store)
    assert split.keys() == whole.keys()
    for rid in whole:  # each sequence samples with its own noise: its batch-mates do not change it
        assert split[rid]["token_id"].tolist() == whole[rid]["token_id"].tolist()
        np.testing.assert_allclose(split[rid]["entropy_raw"], whole[rid]["entropy_raw"], rtol=1e-4, atol=1e-5)


# --- a model larger than one device: the 70B stand-in split across the CPU and the disk ---------------------


def split_memory() -> dict:
    """A ``max_memory`` under which accelerate cannot keep the 70B stand-in on the CPU: its input embedding
    stays there, its layers and output layer are offloaded to the disk (accelerate keeps room for the largest
    module, the 25 MB output layer, so the CPU budget must hold two of them and less than the whole model)."""
    return {"cpu": "51MB"}


@pytest.fixture(scope="module")
def split_grid():
    base = {"models": ["meta-llama/Llama-3.1-70B"], "prompts": ["p01", "p02"], "n_seeds": 1, "max_new_tokens": 5,
            "batch_size": 4, "device": "cpu", "dtype": "float32"}
    return Grid(**base), Grid(**base, device_map="auto", max_memory=split_memory())


@pytest.fixture
def mapped_70b(tmp_path, monkeypatch):
    from aep_lib.engine.model_map import MODEL_MAP_VAR

    path = tmp_path / "map.yaml"
    path.write_text("models:\n  meta-llama/Llama-3.1-70B: {standin: llama-3.1-70b}\n")
    monkeypatch.setenv(MODEL_MAP_VAR, str(path))
    return path


@pytest.fixture(scope="module")
def whole_store(split_grid, tmp_path_factory):
    """The 70B stand-in's runs, unsplit (one device): what every split run must equal."""
    from aep_lib.engine.model_map import MODEL_MAP_VAR

    root = tmp_path_factory.mktemp("whole")
    (root / "map.yaml").write_text("models:\n  meta-llama/Llama-3.1-70B: {standin: llama-3.1-70b}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODEL_MAP_VAR, str(root / "map.yaml"))
        store = RunStore(root / "store")
        ensure_grid(store, split_grid[0], progress=False)
    assert set(store.runs()["device"]) == {"cpu"} and len(store.runs()) == 2
    return store


def _same_runs(split: RunStore, whole: RunStore) -> None:
    a, b = _tokens(split), _tokens(whole)
    assert a.keys() == b.keys() and len(a) == 2  # split or whole: the same run ids
    for rid in a:
        np.testing.assert_array_equal(a[rid]["token_id"], b[rid]["token_id"])
        np.testing.assert_allclose(a[rid].drop(columns=["token_id"]).to_numpy(float),
                                   b[rid].drop(columns=["token_id"]).to_numpy(float), rtol=1e-5, atol=1e-6)
    rows_a, rows_b = split.runs().set_index("run_id"), whole.runs().set_index("run_id")
    for col in ("l_samp", "h_samp", "z_samp", "l_raw", "h_raw", "z_raw"):
        np.testing.assert_allclose(rows_a[col].sort_index(), rows_b[col].sort_index(), rtol=1e-5)


def test_a_grid_with_a_device_map_splits_the_70b_stand_in_with_the_same_statistics(split_grid, whole_store,
                                                                                     mapped_70b, tmp_path):
    _, split = split_grid
    whole = whole_store
    store = RunStore(tmp_path / "split")
    runs = ensure_grid(store, split, progress=False)
    assert set(runs["status"]) == {"ok"} and set(runs["device"]) == {"map:cpu,disk"}
    assert set(runs["model_resolved"]) == {"standin:llama-3.1-70b/v1"}
    assert set(runs["placement"]) == {'{"device_map": "auto", "max_memory": {"cpu": "51MB"}}'}
    _same_runs(store, whole)


def test_a_model_maps_placement_applies_when_the_grid_gives_none(split_grid, mapped_70b, tmp_path):
    whole_grid, _ = split_grid
    mapped_70b.write_text("models:\n  meta-llama/Llama-3.1-70B: {standin: llama-3.1-70b, device_map: auto, "
                          "max_memory: {cpu: 51MB}}\n")
    plan = plan_generations(RunStore(tmp_path / "s"), whole_grid.models, whole_grid.prompts, whole_grid.seeds,
                            whole_grid.samplings, whole_grid.all_lengths, 4, "cpu", "float32")
    assert {b.placement.kwargs()["max_memory"]["cpu"] for b in plan.batches} == {"51MB"}


def test_a_ray_task_asks_for_the_gpus_its_placement_names():
    from aep_lib.engine.model_map import placement_from
    from aep_lib.runs.generations import GenerationBatch
    from aep_lib.runs.ray_executor import task_resources

    two = GenerationBatch("m", 8, (), placement_from("auto", {0: "70GiB", 1: "70GiB", "cpu": "1TiB"}))
    one = GenerationBatch("m", 8, ())
    assert task_resources(two, cluster_gpus=8) == {"num_cpus": 1, "num_gpus": 2}
    assert task_resources(one, cluster_gpus=8) == {"num_cpus": 1, "num_gpus": 1}
    assert task_resources(two, cluster_gpus=0) == {"num_cpus": 1}  # a CPU cluster: CPUs only
    with pytest.raises(RuntimeError, match="names 2 GPUs, the cluster has 1"):
        task_resources(two, cluster_gpus=1)


def test_ray_runs_the_split_70b_stand_in_with_the_same_statistics(ray_local, split_grid, whole_store, mapped_70b,
                                                                 tmp_path):
    _, split = split_grid
    whole = whole_store
    store = RunStore(tmp_path / "ray")
    runs = ensure_grid(store, split, executor="ray", progress=False)  # the map reaches the workers
    assert set(runs["status"]) == {"ok"} and set(runs["device"]) == {"map:cpu,disk"}
    _same_runs(store, whole)
