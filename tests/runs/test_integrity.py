"""Integrity that is checked, not assumed: the model cache's content hashes, runs whose statistics no
healthy model can produce, and a peak-memory measurement that does not depend on a sampler's timing.

The cache tests build small fake entries in a private ``AEP_CACHE_DIR`` (the real cache is never
touched); the model tests use the tiny random model of ``tests/_tiny.py``, once with NaN weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import time

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import build_tiny_model
from typer.testing import CliRunner

from aep_lib.cli import app
from aep_lib.core.sampling import Sampling, Variant
from aep_lib.core.stats import token_stats
from aep_lib.engine import embedded, models
from aep_lib.runs import generations
from aep_lib.runs.comparisons import ensure_comparisons
from aep_lib.runs.generations import ensure_generations, impossible_statistics, plan_generations
from aep_lib.store.run_store import RunStore

MIB = 2**20


# --- the model cache: content hashes ---------------------------------------------------------------


def _fake_entry(monkeypatch, tmp_path, weights_mib: int = 20, with_hashes: bool = True):
    """A cache entry of smollm2-135m in a private cache: a safetensors file (an empty, aligned header and
    ``weights_mib`` MiB of seeded random bytes) and a tokenizer.json; marker format 4 (or 2: no hashes)."""
    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path / "cache"))
    folder = embedded.model_cache_dir("smollm2-135m")
    folder.mkdir(parents=True)
    header = (56).to_bytes(8, "little") + b"{}" + b" " * 54  # 8 + 56 = 64: aligned, nothing to rewrite
    data = np.random.default_rng(0).bytes(weights_mib * MIB)
    (folder / "model.safetensors").write_bytes(header + data)
    (folder / "tokenizer.json").write_text('{"model": {"type": "BPE", "merges": ["a b"]}}')
    spec = embedded.EMBEDDED_MODELS["smollm2-135m"]
    if with_hashes:
        embedded.write_marker(folder, spec)
    else:
        files = {p.name: p.stat().st_size for p in folder.iterdir()}
        (folder / "COMPLETE.json").write_text(json.dumps({"model": spec.name, "format": 2, "files": files}))
    return folder


def _overwrite(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _sampled_offsets(size: int) -> list[int]:
    n, b = embedded.SAMPLE_BLOCKS, embedded.SAMPLE_BLOCK_BYTES
    return [i * (size - b) // (n - 1) for i in range(n)]


def test_marker_records_the_sha256_of_every_file_and_of_the_sampled_blocks(tmp_path, monkeypatch):
    folder = _fake_entry(monkeypatch, tmp_path)
    marker = json.loads((folder / "COMPLETE.json").read_text())
    weights = (folder / "model.safetensors").read_bytes()
    assert marker["format"] == embedded.CACHE_FORMAT == 4
    assert marker["mtime_ns"]["model.safetensors"] == (folder / "model.safetensors").stat().st_mtime_ns
    assert marker["sha256"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert marker["sha256"]["tokenizer.json"] == hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    b = embedded.SAMPLE_BLOCK_BYTES
    sample = b"".join(weights[o: o + b] for o in _sampled_offsets(len(weights)))
    assert len(sample) == 16 * MIB  # 256 blocks of 64 KiB, the first and the last included
    assert sample.startswith(weights[:b]) and sample.endswith(weights[-b:])
    assert marker["sampled_sha256"]["model.safetensors"] == hashlib.sha256(sample).hexdigest()
    # a file no larger than the sample is hashed whole
    assert marker["sampled_sha256"]["tokenizer.json"] == marker["sha256"]["tokenizer.json"]
    assert embedded.cache_problem(folder) is None and embedded.cache_problem(folder, full=True) is None


def test_same_size_overwrite_is_seen_at_load_and_the_entry_is_rebuilt_with_a_note(tmp_path, monkeypatch, capsys):
    """The reproduction in small: 2 MiB of zeros written inside the weights, the size unchanged."""
    folder = _fake_entry(monkeypatch, tmp_path)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    _overwrite(weights, 8 * MIB, bytes(2 * MIB))
    assert weights.stat().st_size == size
    assert embedded.cache_problem(folder) == (
        "model.safetensors differs from the sampled sha256 that COMPLETE.json records")
    assert not embedded.cache_is_complete(folder)
    assert not next(r for r in models.known_models() if r["name"] == "smollm2-135m")["cached"]  # `aep models`
    rebuilt = []
    monkeypatch.setattr(embedded, "build_embedded_cache", lambda spec, **kw: rebuilt.append(spec.name))
    assert embedded.embedded_cache("smollm2-135m") == folder
    assert rebuilt == ["smollm2-135m"]
    err = capsys.readouterr().err
    assert err == (f"note: rebuilding the cache of smollm2-135m in {folder}: "
                   "model.safetensors differs from the sampled sha256 that COMPLETE.json records\n")


def test_a_write_between_the_sampled_blocks_is_seen_at_load_by_the_files_time(tmp_path, monkeypatch):
    """4 KB overwritten where the load-time sample does not look: the file's modification time differs from
    the one recorded at build, so its every byte is hashed at load."""
    folder = _fake_entry(monkeypatch, tmp_path)
    weights = folder / "model.safetensors"
    offsets = _sampled_offsets(weights.stat().st_size)
    gap = offsets[0] + embedded.SAMPLE_BLOCK_BYTES + 100  # between the first two sampled blocks
    assert gap + 4096 < offsets[1]
    stamp = weights.stat().st_mtime_ns
    _overwrite(weights, gap, b"\xff" * 4096)
    if weights.stat().st_mtime_ns == stamp:  # a coarse clock: make the write visible as a later time
        os.utime(weights, ns=(stamp + 10**9, stamp + 10**9))
    assert embedded.cache_problem(folder) == (
        "model.safetensors was written after the cache was built: it differs from the sha256 that COMPLETE.json "
        "records")
    # only touched, same bytes: hashed once and found sound
    folder2 = _fake_entry(monkeypatch, tmp_path / "again")
    os.utime(folder2 / "model.safetensors", ns=(stamp + 2 * 10**9, stamp + 2 * 10**9))
    assert embedded.cache_problem(folder2) is None


def test_damage_between_the_sampled_blocks_is_found_by_verify_which_marks_the_entry(tmp_path, monkeypatch):
    folder = _fake_entry(monkeypatch, tmp_path)
    weights = folder / "model.safetensors"
    offsets = _sampled_offsets(weights.stat().st_size)
    gap = offsets[0] + embedded.SAMPLE_BLOCK_BYTES + 100  # between the first two sampled blocks
    assert gap < offsets[1]
    original = weights.read_bytes()[gap]
    stamp = weights.stat().st_mtime_ns
    _overwrite(weights, gap, bytes([original ^ 0xFF]))  # one byte flipped
    os.utime(weights, ns=(stamp, stamp))  # damage that keeps the file's time (a failing disk, a restored copy)
    assert embedded.cache_problem(folder) is None  # neither the load-time sample nor the time can see it
    assert embedded.verify_embedded_cache("smollm2-135m") == (
        "damaged", "model.safetensors differs from the sha256 that COMPLETE.json records")
    # verify marked it: every later check (and so the next load) sees it as damaged
    assert embedded.cache_problem(folder) == (
        "aep models --verify: model.safetensors differs from the sha256 that COMPLETE.json records")
    assert embedded.verify_embedded_cache("smollm2-135m")[0] == "damaged"
    rebuilt = []
    monkeypatch.setattr(embedded, "build_embedded_cache", lambda spec, **kw: rebuilt.append(spec.name))
    embedded.embedded_cache("smollm2-135m")
    assert rebuilt == ["smollm2-135m"]


def test_an_older_cache_gets_its_hashes_recorded_once(tmp_path, monkeypatch):
    folder = _fake_entry(monkeypatch, tmp_path, weights_mib=1, with_hashes=False)
    assert embedded.cache_problem(folder) is None  # sizes only: it passes and is upgraded
    assert embedded.verify_embedded_cache("smollm2-135m")[0] == "unverified"
    writes = []
    real = embedded.write_marker
    monkeypatch.setattr(embedded, "write_marker", lambda f, spec: writes.append(f) or real(f, spec))
    embedded.embedded_cache("smollm2-135m")
    marker = json.loads((folder / "COMPLETE.json").read_text())
    assert marker["format"] == 4 and len(writes) == 1
    assert marker["sha256"]["model.safetensors"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    embedded.embedded_cache("smollm2-135m")
    assert len(writes) == 1  # once
    assert embedded.verify_embedded_cache("smollm2-135m") == ("ok", None)


def test_cli_models_verify_says_ok_or_damaged_per_model_and_exits_1_on_damage(tmp_path, monkeypatch):
    folder = _fake_entry(monkeypatch, tmp_path, weights_mib=1)
    ok = CliRunner().invoke(app, ["models", "--verify"])
    assert ok.exit_code == 0, ok.output
    lines = [" ".join(line.split()) for line in ok.output.splitlines()]  # columns are padded to the longest name
    assert "smollm2-135m ok" in lines and "gemma-3-270m not cached" in lines
    _overwrite(folder / "model.safetensors", 100, b"\0" * 8)
    bad = CliRunner().invoke(app, ["models", "--verify"])
    assert bad.exit_code == 1
    assert ("smollm2-135m damaged: model.safetensors differs from the sha256 that COMPLETE.json records"
            in [" ".join(line.split()) for line in bad.output.splitlines()])
    assert "error: damaged cache: smollm2-135m; rebuilt at its next load" in bad.output


# --- runs whose statistics are impossible ----------------------------------------------------------


def _table(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"position": range(n), "token_id": [5] * n, **columns})


def test_impossible_statistics_of_hand_made_tables():
    healthy = _table(surprisal_raw=[3.0, 0.5, 7.0], entropy_raw=[2.0, 0.0, 4.0], varentropy_raw=[1.0, 0.0, 2.5],
                     surprisal_samp=[2.5, 0.0, math.inf], entropy_samp=[1.5, 0.0, 3.0],
                     varentropy_samp=[0.8, 0.0, 2.0])
    assert impossible_statistics(healthy) is None  # one token outside q is counted, not impossible
    assert impossible_statistics(healthy.iloc[:0]) is None  # no tokens: nothing to judge
    # what NaN logits give, through the real statistics code
    nan_logits = token_stats(torch.full((3, 10), math.nan), torch.zeros(3, dtype=torch.long))
    garbage = _table(**{f"{k}_{d}": nan_logits[k].numpy() for d in ("raw", "samp")
                        for k in ("surprisal", "entropy", "varentropy")})
    assert np.isposinf(garbage["surprisal_raw"]).all() and garbage["entropy_raw"].isna().all()
    assert impossible_statistics(garbage) == "entropy_raw is NaN at 3 of 3 tokens (non-finite logits?)"
    outside = healthy.assign(surprisal_samp=math.inf)
    assert impossible_statistics(outside) == (
        "surprisal_samp is +inf at every one of the 3 tokens (each outside the distribution it was drawn from)")
    assert impossible_statistics(outside, sampled_from_q=False) is None  # a scorer's truncated q may
    assert "surprisal_raw is +inf at every one" in impossible_statistics(healthy.assign(surprisal_raw=math.inf),
                                                                          sampled_from_q=False)
    assert impossible_statistics(healthy.assign(varentropy_samp=[0.8, math.inf, 2.0])) == (
        "varentropy_samp is infinite at 1 of 3 tokens (non-finite logits?)")
    assert impossible_statistics(healthy.assign(entropy_raw=[2.0, -0.5, 4.0])) == "entropy_raw is negative at 1 of 3 tokens"
    assert impossible_statistics(healthy.assign(surprisal_raw=[3.0, math.nan, 7.0])) == (
        "surprisal_raw is NaN at 1 of 3 tokens (non-finite logits?)")
    cross = healthy.assign(cross_entropy=[math.inf, 2.0, 3.0], cross_varentropy=[math.inf, 1.0, 1.0],
                           kl=[math.inf, 0.1, 0.2], entropy_ref=[1.0, 1.0, 1.0])
    assert impossible_statistics(cross) is None  # q_A's mass on a token q_B excludes: +inf, defined
    assert impossible_statistics(cross.assign(kl=[math.nan, 0.1, 0.2])) == "kl is NaN at 1 of 3 tokens (non-finite logits?)"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def nan_tiny(tiny, tmp_path_factory):
    """The tiny model with every weight NaN, saved in its own folder (same tokenizer)."""
    model, tokenizer = models.load_model(tiny, device="cpu", dtype="float32")
    folder = tmp_path_factory.mktemp("nan") / "model"
    nan_model = type(model)(model.config)
    with torch.no_grad():
        for param in nan_model.parameters():
            param.fill_(math.nan)
    nan_model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_a_generation_with_nan_weights_is_stored_failed_and_rerun(tiny, nan_tiny, tmp_path):
    store = RunStore(tmp_path / "store")
    stored = ensure_generations(store, [nan_tiny], ["p01"], [0, 1], Sampling(), 6, device="cpu", dtype="float32",
                                progress=False)
    assert len(stored) == 2 and set(stored["status"]) == {"failed"}
    for error in stored["error"]:
        assert error.startswith("ImpossibleStatisticsError: impossible statistics, not stored as ok: "
                                "entropy_raw is NaN at 6 of 6 tokens (non-finite logits?)"), error
    plan = plan_generations(store, [nan_tiny], ["p01"], [0, 1], [Sampling()], [6], device="cpu", dtype="float32")
    assert plan.n_missing == 2  # a rerun makes them again
    healthy = ensure_generations(store, [tiny], ["p01"], [0, 1], Sampling(), 6, device="cpu", dtype="float32",
                                 progress=False)
    assert set(healthy["status"]) == {"ok"} and (healthy["n_tokens"] == 6).all()


def test_a_scoring_by_a_nan_scorer_is_stored_failed_and_a_healthy_one_ok(tiny, nan_tiny, tmp_path):
    store = RunStore(tmp_path / "store")
    source, broken = Variant(tiny, Sampling()), Variant(nan_tiny, Sampling())
    records = ensure_comparisons(store, [source], ["p01"], [0], 6, pairs=[(source, source), (source, broken)],
                                 device="cpu", dtype="float32")
    by_scorer = records.set_index("scorer")
    assert by_scorer.loc[tiny, "status"] == "ok" and by_scorer.loc[tiny, "n_tokens"] == 6
    assert by_scorer.loc[nan_tiny, "status"] == "failed"
    assert "impossible statistics, not stored as ok: entropy_raw is NaN at 6 of 6 tokens" in by_scorer.loc[nan_tiny, "error"]


def test_failure_keeps_the_traceback_of_a_raised_error_and_works_without_one():
    try:
        raise ValueError("boom")
    except ValueError as err:
        raised = generations.failure(err)
    assert raised["status"] == "failed" and raised["error"].startswith("ValueError: boom\n")
    assert "test_failure_keeps_the_traceback" in raised["error"]
    assert generations.failure(generations.ImpossibleStatisticsError("why")) == {
        "status": "failed", "error": "ImpossibleStatisticsError: why\n"}


# --- peak memory, measured without depending on a sampler's timing ---------------------------------


def _touched_pages(n_bytes: int) -> mmap.mmap:
    """``n_bytes`` of fresh anonymous pages, every page written: resident memory that no allocator can have
    served from memory it already held (a freed heap block kept by ``memory.keep_freed_blocks`` would)."""
    block = mmap.mmap(-1, n_bytes)
    for offset in range(0, n_bytes, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_peak_rss_sees_an_allocation_through_the_kernel_high_water_mark():
    from aep_lib.bench import common

    with common.PeakRSS() as peak:
        before = common.rss()
        _touched_pages(64 * MIB).close()
    assert peak.peak >= before + 60 * MIB


def test_peak_rss_sampler_sees_an_allocation_held_until_seen(monkeypatch):
    """The sampling fallback (no ``/proc/self/clear_refs``): the block is held until the sampler has seen it,
    with a generous deadline, so a busy machine delays the test but cannot fail it."""
    from aep_lib.bench import common

    def no_clear_refs(path, *args, **kwargs):
        raise PermissionError(path)

    monkeypatch.setattr(common, "open", no_clear_refs, raising=False)
    with common.PeakRSS() as peak:
        assert not peak._hwm
        before = common.rss()
        block = _touched_pages(64 * MIB)
        deadline = time.monotonic() + 120
        while peak.peak < before + 60 * MIB and time.monotonic() < deadline:
            time.sleep(0.01)
        block.close()
    assert peak.peak >= before + 60 * MIB


def test_a_batch_whose_generation_raises_is_stored_failed_and_the_grid_goes_on(tiny, tmp_path, monkeypatch):
    from aep_lib.engine import generate

    def broken(*args, **kwargs):
        raise RuntimeError("the decoding loop broke")

    monkeypatch.setattr(generate, "generate", broken)
    stored = ensure_generations(RunStore(tmp_path / "store"), [tiny], ["p01"], [0, 1], Sampling(), 4, device="cpu",
                                dtype="float32", progress=False)
    assert len(stored) == 2 and set(stored["status"]) == {"failed"}
    assert all(e.startswith("RuntimeError: the decoding loop broke\n") for e in stored["error"])


@pytest.mark.slow
def test_the_reproduction_a_damaged_smollm2_cache_is_refused_twice(tmp_path, monkeypatch, capsys):
    """64 MiB of random bytes written inside a private copy of SmolLM2's cached weights (same size). Loaded
    unchecked (as a local folder) it gives NaN entropies, and those runs are stored failed; loaded by name,
    the sampled hash sees the damage and the entry is rebuilt, byte for byte the original."""
    import shutil

    src = embedded.embedded_cache("smollm2-135m")  # the real cache: only read
    recorded = json.loads((src / "COMPLETE.json").read_text())["sha256"]["model.safetensors"]
    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path / "cache"))
    dst = embedded.model_cache_dir("smollm2-135m")
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    size = weights.stat().st_size
    _overwrite(weights, size // 2, np.random.default_rng(0).bytes(64 * MIB))
    assert weights.stat().st_size == size

    store = RunStore(tmp_path / "store")
    unchecked = ensure_generations(store, [str(dst)], ["p01"], [0, 1], Sampling(), 8, device="cpu", dtype="float32",
                                   progress=False)
    assert set(unchecked["status"]) == {"failed"}
    assert all("impossible statistics, not stored as ok: entropy_raw is NaN at 8 of 8 tokens" in e
               for e in unchecked["error"])

    capsys.readouterr()
    models.load_model("smollm2-135m", device="cpu", dtype="float32")
    assert (f"note: rebuilding the cache of smollm2-135m in {dst}: model.safetensors differs from the sampled "
            "sha256 that COMPLETE.json records") in capsys.readouterr().err.splitlines()
    assert embedded.verify_embedded_cache("smollm2-135m") == ("ok", None)
    assert embedded.file_sha256(weights) == recorded  # the GGUF de-quantizes to the same bytes
    healthy = ensure_generations(store, ["smollm2-135m"], ["p01"], [0, 1], Sampling(), 8, device="cpu",
                                 dtype="float32", progress=False)
    assert set(healthy["status"]) == {"ok"} and np.isfinite(healthy["z_samp"].astype(float)).all()


def test_a_format_3_entry_is_checked_whole_before_its_times_are_recorded(tmp_path, monkeypatch):
    """Recording the files' times vouches for them from then on: an entry of the previous format is first
    hashed whole against the hashes it recorded, and rebuilt if they disagree."""
    folder = _fake_entry(monkeypatch, tmp_path)
    marker = json.loads((folder / "COMPLETE.json").read_text())
    marker.pop("mtime_ns")
    (folder / "COMPLETE.json").write_text(json.dumps(marker | {"format": 3}))
    weights = folder / "model.safetensors"
    gap = _sampled_offsets(weights.stat().st_size)[0] + embedded.SAMPLE_BLOCK_BYTES + 100
    _overwrite(weights, gap, bytes([weights.read_bytes()[gap] ^ 0xFF]))  # one byte flipped
    rebuilt = []
    monkeypatch.setattr(embedded, "build_embedded_cache", lambda spec, **kw: rebuilt.append(spec.name))
    embedded.embedded_cache("smollm2-135m")
    assert rebuilt == ["smollm2-135m"]
    assert "mtime_ns" not in json.loads((folder / "COMPLETE.json").read_text())  # nothing vouched for
