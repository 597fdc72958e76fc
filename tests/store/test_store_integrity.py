"""Nothing wrong is ever stored as right: checksums at write time, corrupt files found and skipped, a rerun
regenerates them; old temporary folders cleaned; an unwritable store found out first; runs claimed once."""

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from filelock import FileLock, Timeout

from aep_lib.store.integrity import TOKENS_SHA256, file_sha256
from aep_lib.store.run_store import RunStore, StoreError, StoreWarning, canonical_run_id

N_TOKENS = 2000


def make_run(seed, **extra):
    run = {"run_id": canonical_run_id({"seed": seed}), "kind": "generate", "model": "smollm2-135m",
           "prompt_id": "p01", "label": f"s{seed}", "status": "ok", "seed": seed}
    return run | extra


def make_tokens(n=N_TOKENS, offset=0.0):
    """n token rows; surprisal_raw = position + offset, so that sums are known exactly."""
    rng = np.random.default_rng(n)
    return pd.DataFrame({
        "position": np.arange(n, dtype=np.int64),
        "token_id": rng.integers(0, 49152, n),
        "surprisal_raw": (np.arange(n) + offset).astype(np.float64),
        "entropy_raw": rng.gamma(2.0, 1.5, n), "varentropy_raw": rng.gamma(2.0, 2.0, n),
    })


def damage(path: Path, offset=200, n=2000, seed=0) -> None:
    """Overwrite n random bytes at offset, in place (same size, same inode)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())


@pytest.fixture
def three_runs(tmp_path):
    st = RunStore(tmp_path / "store")
    runs = [make_run(s) for s in range(3)]
    for i, r in enumerate(runs):
        st.write_run(r, make_tokens(offset=1000.0 * i))
    return st, [r["run_id"] for r in runs]


def test_damage_that_still_decodes_gives_wrong_numbers_without_a_checksum(tmp_path):
    """Why a checksum: these 2,000 bytes land in compressed pages that still decode, to other numbers."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pandas(make_tokens(), preserve_index=False), path, compression="zstd")
    damage(path)
    back = pq.read_table(path).to_pandas()  # no error ...
    assert len(back) == N_TOKENS and not back["position"].equals(make_tokens()["position"])  # ... wrong values


def test_damage_inside_a_tokens_file_with_an_intact_footer(three_runs):
    st, (bad, a, b) = three_runs
    path = Path(st.get_run(bad)["path"]) / "tokens.parquet"
    assert path.stat().st_size > 2200 + pq.read_metadata(path).serialized_size  # the damage misses the footer
    damage(path)
    assert pq.read_metadata(path).num_rows == N_TOKENS  # the footer still reads: a footer check passes

    df = st.runs().set_index("run_id")
    assert df.loc[bad, "status"] == "failed" and df.loc[a, "status"] == df.loc[b, "status"] == "ok"
    assert df.loc[bad, "error"].startswith(f"corrupt tokens file: {path}: sha256 ")
    assert not st.has_ok_run(bad) and st.has_ok_run(a)

    con = st.connect()  # the view holds the two intact runs
    (n, mean), = con.sql("SELECT count(*), avg(surprisal_raw) FROM tokens").fetchall()
    assert n == 2 * N_TOKENS and mean == pytest.approx(1999 / 2 + (1000 + 2000) / 2)  # positions + offsets
    assert con.sql("SELECT count(*) FROM (SELECT * FROM tokens)").fetchall() == [(4000,)]
    assert con.sql("SELECT count(*) FROM runs").fetchall() == [(2,)]

    with pytest.warns(StoreWarning, match=f"tokens of 1 of 3 runs left out.*{bad}.*sha256"):
        rest = st.tokens([bad, a, b])
    assert list(rest["run_id"].unique()) == [a, b] and len(rest) == 2 * N_TOKENS
    assert rest["surprisal_raw"].sum() == pytest.approx(2 * 1999 * 2000 / 2 + 2000 * 3000)
    with pytest.raises(StoreError, match="sha256"):
        st.tokens([bad, a], errors="raise")
    with pytest.raises(StoreError, match="sha256"):
        st.tokens(bad)  # asked for that one run: there is no rest to return


def test_queries_of_the_analysis_layer_and_the_rerun_plan_skip_a_corrupt_run(three_runs):
    from aep_lib.analysis import tables
    from aep_lib.core.sampling import Sampling
    from aep_lib.runs.generations import generation_spec, plan_generations, stored_ok

    st, (bad, a, b) = three_runs
    damage(Path(st.get_run(bad)["path"]) / "tokens.parquet")
    with pytest.warns(StoreWarning):
        summaries = tables.run_summaries(st, st.runs())
    assert sorted(summaries["run_id"]) == sorted([a, b])
    with pytest.warns(StoreWarning):
        running = tables.running_stats(st, [bad, a, b], dist="raw")
    assert running.groupby("run_id")["n"].max().to_dict() == {a: N_TOKENS, b: N_TOKENS}
    assert stored_ok(st, [bad, a, b]) == {a, b}

    # a grid whose runs are all stored: after one is damaged, a rerun plans exactly that one again
    spec = [generation_spec("smollm2-135m", "p01", s, Sampling(), 8) for s in range(3)]
    for s in spec:
        st.write_run({**s, "status": "ok"}, make_tokens(8))
    plan = lambda: plan_generations(st, ["smollm2-135m"], ["p01"], [0, 1, 2], [Sampling()], [8], device="cpu")  # noqa: E731
    assert [s["run_id"] for s in plan().specs] == [s["run_id"] for s in spec] and plan().n_missing == 0
    damage(Path(st.get_run(spec[1]["run_id"])["path"]) / "tokens.parquet", offset=100, n=200)
    assert [s["run_id"] for b in plan().batches for s in b.specs] == [spec[1]["run_id"]]


def test_runs_are_read_back_and_their_checksum_recorded_when_written(tmp_path, monkeypatch):
    st = RunStore(tmp_path)
    run = make_run(1)
    where = st.write_run({**run, TOKENS_SHA256: "0" * 64}, make_tokens(10))  # a stale checksum is replaced
    assert st.get_run(run["run_id"])[TOKENS_SHA256] == file_sha256(where / "tokens.parquet")
    assert st.get_run(run["run_id"])["n_tokens"] == 10
    st.write_run({**st.get_run(run["run_id"]), "status": "failed", "n_tokens": None}, None)
    assert TOKENS_SHA256 not in st.get_run(run["run_id"])  # no tokens: no checksum

    real_write = pq.write_table

    def write_truncated(table, where, **kw):  # a writer (or a disk) that loses the end of the file
        real_write(table, where, **kw)
        if Path(where).name == "tokens.parquet":
            os.truncate(where, Path(where).stat().st_size // 2)

    monkeypatch.setattr(pq, "write_table", write_truncated)
    other = make_run(2)
    with pytest.raises(StoreError, match="written but cannot be read back"):
        st.write_run(other, make_tokens(10))
    monkeypatch.undo()
    assert st.get_run(other["run_id"]) is None and not any((tmp_path / ".tmp").iterdir())


def test_verify_finds_damage_that_left_the_file_state_unchanged(three_runs):
    st, (bad, a, b) = three_runs
    assert st.runs()["status"].tolist() == ["ok"] * 3  # read and memoised by this store object
    path = Path(st.get_run(bad)["path"]) / "tokens.parquet"
    before = path.stat()
    damage(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # bit rot: same size, inode and mtime
    assert sorted(st.runs(status="ok")["run_id"]) == sorted([bad, a, b])  # the memo cannot see it

    checked = st.verify().set_index("run_id")
    assert checked["checked"].tolist() == ["sha256"] * 3
    assert checked["problem"].notna().tolist() == [r == bad for r in checked.index]
    assert "sha256" in checked.loc[bad, "problem"]
    assert st.runs(status="failed")["run_id"].tolist() == [bad]  # runs() agrees afterwards


def test_a_run_stored_before_checksums_is_checked_by_reading_it_whole(three_runs):
    st, (old, a, _) = three_runs
    folder = Path(st.get_run(old)["path"])
    row = pq.read_table(folder / "run.parquet").drop_columns([TOKENS_SHA256])  # as written before checksums
    pq.write_table(row, folder / "run.parquet")
    assert st.verify([old])["checked"].tolist() == ["read"] and st.has_ok_run(old)
    # without a checksum only damage that breaks decoding can be seen: here, a page header
    # (random bytes inside compressed pages can also decode to wrong numbers without an error)
    page = pq.read_metadata(folder / "tokens.parquet").row_group(0).column(2).data_page_offset
    with open(folder / "tokens.parquet", "r+b") as f:
        f.seek(page)
        f.write(b"\xff" * 64)
    fresh = RunStore(st.root)
    assert fresh.get_run(old)["status"] == "failed" and "corrupt tokens file" in fresh.get_run(old)["error"]
    assert fresh.verify([old, a])["problem"].notna().tolist() == [True, False]  # sorted by path: s0, s1
    assert fresh.connect().sql("SELECT count(*) FROM tokens").fetchall() == [(2 * N_TOKENS,)]


def test_temporary_folders_older_than_an_hour_are_removed_when_a_store_opens(tmp_path):
    st = RunStore(tmp_path)
    st.write_run(make_run(1), make_tokens(5))
    tmp = tmp_path / ".tmp"
    old, recent = tmp / "0123abcd-deadbeef", tmp / "4567abcd-cafebabe"
    for folder in (old, recent):
        folder.mkdir()
        (folder / "run.parquet").write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    RunStore(tmp_path)
    assert not old.exists() and recent.is_dir()  # a write in progress elsewhere is left alone
    assert RunStore(tmp_path).runs()["status"].tolist() == ["ok"]
    assert RunStore(tmp_path).clean_tmp(older_than_s=60) == 0 and RunStore(tmp_path).clean_tmp() == 1


def test_check_writable_names_the_path(tmp_path, monkeypatch):
    RunStore(tmp_path / "fine").check_writable()
    assert not any((tmp_path / "fine" / ".tmp").iterdir())  # the probe is removed
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(StoreError, match=f"store {tmp_path / 'a-file' / 'store'} is not writable: Not a directory"):
        RunStore(tmp_path / "a-file" / "store").check_writable()

    def read_only(path, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(StoreError, match=r"not writable: Read-only file system: .*fine/\.tmp/write-probe-"):
        RunStore(tmp_path / "fine").check_writable()


# --- claims -------------------------------------------------------------------------------------------

RUN_IDS = [f"{i:016x}" for i in range(6)]


def claim_and_report(root, start, hold, results, name):
    """In a child process: claim RUN_IDS together with the sibling, report, hold until both reported."""
    start.wait()
    with RunStore(root).claim(RUN_IDS) as mine:
        results.put((name, mine))
        hold.wait()


@pytest.mark.parametrize("round_", range(5))
def test_two_processes_claiming_the_same_runs_get_each_run_once(tmp_path, round_):
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: a forked pytest worker (torch, threads) can crash at exit
    start, hold, results = ctx.Barrier(2), ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=claim_and_report, args=(tmp_path, start, hold, results, n)) for n in "AB"]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert not set(got["A"]) & set(got["B"])  # no run claimed twice
    assert sorted(got["A"] + got["B"]) == RUN_IDS  # and every run claimed once
    assert all_free(tmp_path / ".locks", RUN_IDS)  # released


def generate_claimed(root, start, results, name):
    """In a child process, what the runs layer does: plan the runs not stored ok, claim them, check again
    what is stored ok (a run finished elsewhere since the plan), "generate" and write the rest."""
    st = RunStore(root)
    planned = [r for r in RUN_IDS if not st.has_ok_run(r)]
    start.wait()
    with st.claim(planned) as mine:
        todo = [r for r in mine if not st.has_ok_run(r)]
        for r in todo:
            st.write_run({"run_id": r, "kind": "generate", "model": "m", "label": name, "status": "ok"},
                         make_tokens(3))
    results.put((name, todo))


def test_two_grid_runs_on_one_store_generate_each_run_once(tmp_path):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=generate_claimed, args=(tmp_path, start, results, n)) for n in "AB"]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=120)
    assert sorted(got["A"] + got["B"]) == RUN_IDS  # each run generated by exactly one of them
    st = RunStore(tmp_path)
    assert sorted(st.runs(status="ok")["run_id"]) == RUN_IDS
    assert {st.get_run(r)["label"] for r in got["A"]} <= {"A"} and {st.get_run(r)["label"] for r in got["B"]} <= {"B"}
    third = ctx.Process(target=generate_claimed, args=(tmp_path, ctx.Barrier(1), results, "C"))
    third.start()
    assert results.get(timeout=120) == ("C", [])  # a later run of the grid generates nothing
    third.join(timeout=120)


# --- the runs layer: two `aep run` on one grid and store ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from _tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def tiny_plan(store, model, batch_size=2):
    from aep_lib.core.sampling import Sampling
    from aep_lib.runs.generations import plan_generations

    return plan_generations(store, [model], ["p01", "p02"], [1, 2, 3], [Sampling()], [6], batch_size, "cpu", "float32")


def run_grid(root, model, start, results, name):
    """In a child process, what `aep run` does with a grid: plan, then execute every batch; report the runs
    this process wrote."""
    from aep_lib.runs.generations import execute_batch

    st = RunStore(root)
    plan = tiny_plan(st, model)
    written = []
    start.wait()  # both planned every run before either generates one
    for batch in plan.batches:
        execute_batch(st, batch, "cpu", "float32", progress=False, on_written=written.append)
    results.put((name, written))


def test_two_grid_runs_of_the_runs_layer_generate_each_run_once(tmp_path, tiny_model):
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: torch's thread pools do not survive a fork
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=run_grid, args=(tmp_path, tiny_model, start, results, n)) for n in "AB"]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    all_ids = sorted(s["run_id"] for s in tiny_plan(RunStore(tmp_path / "x"), tiny_model).specs)
    assert not set(got["A"]) & set(got["B"])  # no run generated twice
    assert sorted(got["A"] + got["B"]) == all_ids  # every run generated once between them
    assert sorted(RunStore(tmp_path).runs(status="ok")["run_id"]) == all_ids
    assert all_free(tmp_path / ".locks", all_ids)


def test_a_run_claimed_elsewhere_is_waited_for_then_taken_over_if_left_undone(tmp_path, tiny_model, monkeypatch):
    """Deterministic (no race): this test holds the claim on one run of the batch; execute_batch generates the
    others, then waits for that one; released without it being written, it is generated by execute_batch."""
    import threading

    from aep_lib.runs import generations

    monkeypatch.setattr(generations, "CLAIM_POLL_S", 0.05)
    st = RunStore(tmp_path)
    (batch,) = tiny_plan(st, tiny_model, batch_size=6).batches
    held, others = batch.run_ids[0], batch.run_ids[1:]
    written, returned = [], []
    with st.claim([held]) as mine:
        assert mine == [held]
        worker = threading.Thread(target=lambda: returned.extend(
            generations.execute_batch(st, batch, "cpu", "float32", progress=False, on_written=written.append)))
        worker.start()
        deadline = time.monotonic() + 600  # a deadline for a slow machine, not a timing assumption
        while not set(others) <= set(written) and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(written) == sorted(others)  # the held run is left to its holder...
        assert worker.is_alive()  # ...and waited for
    worker.join(timeout=600)
    assert not worker.is_alive()
    assert sorted(written) == sorted(batch.run_ids) and written[-1] == held  # taken over once released
    assert dict(returned) == dict.fromkeys(batch.run_ids, "ok")
    assert generations.execute_batch(st, batch, "cpu", "float32", progress=False, on_written=written.append) == \
        [(r, "ok") for r in batch.run_ids] and len(written) == 6  # a rerun generates nothing


def test_a_grid_generates_the_batches_no_one_holds_before_waiting_for_held_ones(tmp_path, tiny_model, monkeypatch):
    """Deterministic: this test holds the claim on the first batch of a three-batch grid; execute_local
    generates the two others before it waits (the first time it sleeps, they are stored), then generates
    the first batch once the claim is released unwritten. Waiting at the first batch, as before, it had
    stored nothing when it first slept, and a second process on the grid never got a batch of its own."""
    import threading

    from aep_lib.runs import generations

    st = RunStore(tmp_path)
    plan = tiny_plan(st, tiny_model, batch_size=2)
    assert len(plan.batches) == 3
    first, rest = plan.batches[0].run_ids, [r for b in plan.batches[1:] for r in b.run_ids]
    stored_when_waiting, waiting, release = [], threading.Event(), threading.Event()

    def pause():
        if not waiting.is_set():
            stored_when_waiting.extend(sorted(st.runs(status="ok")["run_id"]))
            waiting.set()
        release.wait()

    monkeypatch.setattr(generations, "wait_for_other_processes", pause)
    done = []
    with st.claim(first) as mine:
        assert mine == first
        worker = threading.Thread(target=lambda: done.append(generations.execute_local(st, plan, "cpu", "float32",
                                                                                  progress=False)), daemon=True)
        worker.start()
        assert waiting.wait(600), "execute_local never waited for the held batch"
    release.set()  # the claim is released above, unwritten: the worker takes the batch over
    worker.join(timeout=600)
    assert done == [None]
    assert stored_when_waiting == sorted(rest)
    assert sorted(st.runs(status="ok")["run_id"]) == sorted(first + rest)


def test_claims_within_one_process_and_release(tmp_path):
    st = RunStore(tmp_path)
    with st.claim(RUN_IDS[:4] + RUN_IDS[:2]) as first:
        assert first == RUN_IDS[:4]  # in order, duplicates once
        with st.claim(RUN_IDS) as second:
            assert second == RUN_IDS[4:]  # a live claim of this process is not taken
        with pytest.raises(RuntimeError), st.claim(RUN_IDS[4:]) as third:
            assert third == RUN_IDS[4:]  # released after the inner claim ended
            raise RuntimeError("generation failed")
        assert all_free(tmp_path / ".locks", RUN_IDS[4:])  # released on the exception
        assert not all_free(tmp_path / ".locks", RUN_IDS[:1])  # the outer claim still holds its runs
    assert all_free(tmp_path / ".locks", RUN_IDS)
    with pytest.raises(StoreError, match="run_id"):
        with st.claim(["not/an/id"]):
            pass


def all_free(folder: Path, run_ids) -> bool:
    """True if every run's claim lock can be taken at once by a new lock (the claims were released)."""
    for run_id in run_ids:
        lock = FileLock(folder / f"{run_id}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        lock.release()
    return True


def hold_claim_until_killed(root, ready):
    with RunStore(root).claim(RUN_IDS[:2]):
        ready.set()
        time.sleep(600)


def test_a_claim_of_a_killed_process_is_free_at_once_and_a_live_one_is_not(tmp_path):
    """Claims are OS locks: the kernel releases those of a process killed with SIGKILL (no stale lock to
    wait out or take over); while the holder lives, its runs are not claimed here."""
    import signal

    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=hold_claim_until_killed, args=(tmp_path, ready))
    holder.start()
    try:
        assert ready.wait(120)
        with RunStore(tmp_path).claim(RUN_IDS[:3]) as mine:
            assert mine == RUN_IDS[2:3]  # the live holder keeps its two
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(timeout=120)
        with RunStore(tmp_path).claim(RUN_IDS[:3]) as mine:
            assert mine == RUN_IDS[:3]
    finally:
        holder.kill()


def test_claiming_in_an_unwritable_store_is_a_store_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError, match="cannot claim runs in"):
        with RunStore(tmp_path / "a-file").claim(RUN_IDS):
            pass


# --- the scored-text cache ----------------------------------------------------------------------------


def test_an_unreadable_scored_text_cache_starts_empty_and_is_rewritten(tmp_path):
    from aep_lib.store.text_cache import CacheWarning, ScoredTextCache, text_key

    path = tmp_path / "cache" / "smollm2"
    cache = ScoredTextCache(path)
    key = text_key("smollm2-135m", None, 64, "", "a text")
    cache.put(key, make_tokens(4), {"text": "a text", "n_tokens": 4})
    cache.flush()
    assert sorted(p.name for p in path.parent.iterdir()) == ["smollm2.texts.parquet", "smollm2.tokens.parquet"]
    assert ScoredTextCache(path).tokens[key]["surprisal_raw"].tolist() == [0.0, 1.0, 2.0, 3.0]

    (path.parent / "smollm2.tokens.parquet").write_bytes(b"PAR1 damaged")
    with pytest.warns(CacheWarning, match="cannot be read.*starting empty"):
        broken = ScoredTextCache(path)
    assert key not in broken and not broken.texts
    broken.put(key, make_tokens(2), {"text": "a text", "n_tokens": 2})  # scored again
    broken.flush()
    assert ScoredTextCache(path).tokens[key]["surprisal_raw"].tolist() == [0.0, 1.0]
    assert not list(path.parent.glob("*.tmp"))


def test_a_full_disk_while_writing_a_run_is_a_store_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from aep_lib.store import run_store

    st = RunStore(tmp_path)
    st.write_run(make_run(1), make_tokens())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_store, "write_parquet_verified", full)
    with pytest.raises(StoreError, match="cannot write run .* into the store .*: No space left on device"):
        st.write_run(make_run(2), make_tokens())
    assert not list((tmp_path / ".tmp").iterdir())  # no half-written run left behind
    assert len(RunStore(tmp_path).runs()) == 1  # the run stored before is intact


def test_a_models_settings_share_its_batches_and_each_run_keeps_its_own(tmp_path, tiny_model):
    """Two variants of one model, 2 prompts x 1 seed each: one batch of 4; each stored run has its variant's
    warps and the tokens it gets generated alone with them."""
    from aep_lib.core.sampling import Sampling, Variant
    from aep_lib.engine.generate import generate
    from aep_lib.engine.models import cached_model
    from aep_lib.runs.comparisons import ensure_sources

    st = RunStore(tmp_path / "store")
    variants = [Variant(tiny_model, Sampling()), Variant(tiny_model, Sampling(temperature=0.5, top_k=4))]
    runs = ensure_sources(st, variants, ["p01", "p02"], [3], 5, batch_size=8, device="cpu", dtype="float32")
    assert len(runs) == 4 and set(runs["batch_size"]) == {4} and runs["started_at"].nunique() == 1
    model, tokenizer = cached_model(tiny_model, "cpu", "float32")
    for v in variants:
        mine = runs[runs["variant"] == v.label]
        assert len(mine) == 2 and set(mine["temperature"]) == {v.sampling.temperature}
        assert set(mine["top_k"]) == {v.sampling.top_k}
        for _, row in mine.iterrows():
            alone = generate(model, tokenizer, [row["prompt_text"]], [3], v.sampling, 5, progress=False)[0]
            assert st.tokens(row["run_id"])["token_id"].tolist() == alone.token_ids
