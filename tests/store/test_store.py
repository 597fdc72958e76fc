"""Tests of aep_lib.store.run_store: layout, round trips, atomic writes, corrupt files, DuckDB views."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aep_lib.store import run_store
from aep_lib.store.run_store import RunStore, StoreError, canonical_run_id


def make_run(seed, model="smollm2-135m", prompt_id="p01", kind="generate", status="ok", **extra):
    params = {"kind": kind, "model": model, "prompt_id": prompt_id, "seed": seed, "temperature": 1.0}
    run = {"run_id": canonical_run_id(params), "kind": kind, "model": model, "prompt_id": prompt_id,
           "label": f"s{seed}_t1.0", "status": status, "seed": seed, "temperature": 1.0}
    run.update(extra)
    return run


def scalar(con, query):
    """The single value a SQL query returns."""
    (value,), = con.sql(query).fetchall()
    return value


def make_tokens(n, offset=0.0, shuffle=False):
    df = pd.DataFrame({
        "position": np.arange(n, dtype=np.int64),
        "token_id": np.arange(100, 100 + n, dtype=np.int64),
        "surprisal_raw": (np.arange(n) + offset).astype(np.float32),
    })
    return df.iloc[::-1].reset_index(drop=True) if shuffle else df


@pytest.fixture
def two_runs(tmp_path):
    st = RunStore(tmp_path / "store")
    a, b = make_run(3), make_run(4, model="gemma-3-270m", prompt_id="p02", mean_bits=2.5)
    st.write_run(a, make_tokens(5, shuffle=True))
    st.write_run(b, make_tokens(3, offset=10.0))
    return st, a, b


def test_canonical_run_id():
    p = {"model": "smollm2-135m", "seed": 3, "temperature": 1.0, "nested": {"b": 1, "a": [1, 2]}}
    rid = canonical_run_id(p)
    assert rid == canonical_run_id(dict(reversed(list(p.items()))))  # key order does not matter
    assert len(rid) == 16 and int(rid, 16) >= 0
    assert len(canonical_run_id(p, n=8)) == 8 and rid.startswith(canonical_run_id(p, n=8))
    assert canonical_run_id({**p, "seed": 4}) != rid
    assert canonical_run_id({**p, "temperature": 1}) != rid  # int vs float: documented
    with pytest.raises(TypeError):
        canonical_run_id({"x": object()})


def test_root_is_created_lazily(tmp_path):
    st = RunStore(tmp_path / "nope")
    assert not st.root.exists()
    st.runs(), st.has_ok_run("abc"), st.connect()
    assert not st.root.exists()


def test_run_relpath_sanitises(tmp_path):
    st = RunStore(tmp_path)
    run = {"run_id": "abc123", "kind": "score", "model": "meta-llama/Llama 3.1", "label": "x y"}
    assert st.run_relpath(run) == Path("score/meta-llama-Llama-3.1/_/x-y__abc123")
    assert st.run_relpath({**run, "label": None, "model": ".tmp"}) == Path("score/_.tmp/_/run__abc123")
    with pytest.raises(StoreError):
        st.run_relpath({**run, "run_id": "a_b"})  # "_" would make the folder name ambiguous


def test_write_and_read_runs(two_runs):
    st, a, b = two_runs
    df = st.runs()
    assert len(df) == 2
    df = df.set_index("run_id")
    assert df.loc[a["run_id"], "path"] == str(st.root / f"generate/smollm2-135m/p01/s3_t1.0__{a['run_id']}")
    assert (st.root / "generate/gemma-3-270m/p02" / f"s4_t1.0__{b['run_id']}" / "tokens.parquet").is_file()
    assert df.loc[a["run_id"], "seed"] == 3 and df.loc[b["run_id"], "seed"] == 4
    assert df.loc[a["run_id"], "n_tokens"] == 5 and df.loc[b["run_id"], "n_tokens"] == 3  # added by write_run
    assert df.loc[b["run_id"], "mean_bits"] == 2.5 and pd.isna(df.loc[a["run_id"], "mean_bits"])  # union
    assert set(df["status"]) == {"ok"} and df["error"].isna().all()
    assert df["seed"].dtype == np.int64 and df["temperature"].dtype == np.float64
    assert st.get_run(a["run_id"])["label"] == "s3_t1.0"
    assert st.get_run("ffff") is None


def test_tokens_order_and_values(two_runs):
    st, a, b = two_runs
    tok = st.tokens([b["run_id"], a["run_id"]])
    assert list(tok["run_id"]) == [b["run_id"]] * 3 + [a["run_id"]] * 5
    assert list(tok["position"]) == [0, 1, 2, 0, 1, 2, 3, 4]
    assert tok["surprisal_raw"].dtype == np.float32  # not coerced
    assert list(tok["surprisal_raw"]) == [10, 11, 12, 0, 1, 2, 3, 4]
    one = st.tokens(a["run_id"], columns=["surprisal_raw"])
    assert list(one.columns) == ["run_id", "surprisal_raw"]
    assert list(one["surprisal_raw"]) == [0, 1, 2, 3, 4]  # still sorted by position
    with pytest.raises(StoreError, match="no tokens column"):
        st.tokens(a["run_id"], columns=["nope"])
    with pytest.raises(StoreError, match="no stored run"):
        st.tokens(["0123abcd"])


def test_has_ok_run(two_runs, tmp_path):
    st, a, _ = two_runs
    assert st.has_ok_run(a["run_id"])
    assert not st.has_ok_run("deadbeef")
    failed = make_run(9, status="failed", error="CUDA out of memory")
    st.write_run(failed, None)
    assert not st.has_ok_run(failed["run_id"])
    assert st.tokens(failed["run_id"]).empty
    # a second store object on the same root sees the runs (index built from disk)
    assert RunStore(st.root).has_ok_run(a["run_id"])


def test_rewrite_replaces(tmp_path):
    st = RunStore(tmp_path)
    run = make_run(3, status="failed", label="first")
    st.write_run(run, None)
    assert not st.has_ok_run(run["run_id"])
    # retried under another label (another folder): the old folder goes
    p = st.write_run({**run, "status": "ok", "label": "second"}, make_tokens(2))
    df = st.runs()
    assert len(df) == 1 and df.loc[0, "status"] == "ok" and df.loc[0, "label"] == "second"
    assert p.name.startswith("second__") and len(list(p.parent.iterdir())) == 1
    # same folder again
    st.write_run({**run, "status": "ok", "label": "second", "seed": 99}, make_tokens(4))
    df = st.runs()
    assert len(df) == 1 and df.loc[0, "seed"] == 99 and len(st.tokens(run["run_id"])) == 4
    assert st.has_ok_run(run["run_id"])
    # a row read back can be written again ("path" is not stored); n_tokens must match the tokens
    row = st.get_run(run["run_id"])
    with pytest.raises(StoreError, match="n_tokens"):
        st.write_run(row, make_tokens(3))
    st.write_run({**row, "n_tokens": 4}, make_tokens(4))
    assert "path" not in pq.read_schema(Path(row["path"]) / "run.parquet").names
    assert st.delete_run(run["run_id"]) and not st.delete_run(run["run_id"])
    assert st.runs().empty and not st.has_ok_run(run["run_id"])


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    st = RunStore(tmp_path)
    run = make_run(3)
    real_write = pq.write_table
    seen = []

    def write_then_die(table, where, **kw):
        real_write(table, where, **kw)
        seen.append(Path(where))
        if Path(where).name == "run.parquet":
            raise KeyboardInterrupt("killed after run.parquet")

    monkeypatch.setattr(pq, "write_table", write_then_die)  # the module the store writes with
    with pytest.raises(KeyboardInterrupt):
        st.write_run(run, make_tokens(5))
    monkeypatch.undo()
    assert seen and ".tmp" in seen[0].parts
    assert not st.has_ok_run(run["run_id"]) and st.get_run(run["run_id"]) is None
    assert st.runs().empty
    assert scalar(st.connect(), "SELECT count(*) FROM runs") == 0
    # a hard kill leaves the temp folder behind: readers ignore it, clean_tmp removes it
    leftover = st.root / ".tmp" / f"{run['run_id']}-dead"
    leftover.mkdir(parents=True)
    real_write(pq.read_table(RunStore(tmp_path / "other").write_run(run, None) / "run.parquet"),
               leftover / "run.parquet")
    assert st.runs().empty and not st.has_ok_run(run["run_id"])
    assert st.clean_tmp() == 1 and not any((st.root / ".tmp").iterdir())
    st.write_run(run, make_tokens(5))  # the retry works
    assert st.has_ok_run(run["run_id"])


def test_corrupt_run_file(two_runs):
    st, a, b = two_runs
    bad = Path(st.get_run(a["run_id"])["path"]) / "run.parquet"
    bad.write_bytes(b"this is not parquet at all")
    df = st.runs().set_index("run_id")
    assert len(df) == 2
    assert df.loc[a["run_id"], "status"] == "failed"
    assert df.loc[a["run_id"], "error"].startswith(f"corrupt run file: {bad}: ")
    assert df.loc[b["run_id"], "status"] == "ok" and df.loc[b["run_id"], "seed"] == 4
    assert not st.has_ok_run(a["run_id"]) and st.has_ok_run(b["run_id"])
    assert len(st.runs(status="failed")) == 1
    con = st.connect()
    assert scalar(con, "SELECT count(*) FROM runs") == 1
    assert scalar(con, "SELECT count(*) FROM tokens") == 3


def test_corrupt_or_missing_tokens_file(two_runs):
    st, a, b = two_runs
    bad = Path(st.get_run(a["run_id"])["path"]) / "tokens.parquet"
    bad.write_bytes(b"\x00garbage" * 10)
    df = st.runs().set_index("run_id")
    assert df.loc[a["run_id"], "status"] == "failed"
    assert df.loc[a["run_id"], "error"].startswith(f"corrupt tokens file: {bad}")
    assert df.loc[a["run_id"], "seed"] == 3  # the rest of the row is still there
    assert not st.has_ok_run(a["run_id"])
    with pytest.raises(StoreError, match="tokens.parquet"):
        st.tokens([b["run_id"], a["run_id"]], errors="raise")
    with pytest.warns(run_store.StoreWarning, match=f"tokens of 1 of 2 runs left out.*{a['run_id']}"):
        rest = st.tokens([b["run_id"], a["run_id"]])  # the default: the readable runs, and a warning
    assert list(rest["surprisal_raw"]) == [10, 11, 12]
    con = st.connect()
    assert scalar(con, "SELECT count(*) FROM tokens") == 3
    assert scalar(con, "SELECT count(*) FROM runs") == 1
    # missing tokens file while the run says n_tokens > 0
    bad.unlink()
    assert st.runs(run_id=a["run_id"]).loc[0, "error"].startswith("missing tokens file")
    with pytest.raises(StoreError, match="missing tokens file"):
        st.tokens(a["run_id"])  # one run, as a str: nothing else to return, so it raises
    with pytest.warns(run_store.StoreWarning, match="missing tokens file"):
        assert st.tokens([a["run_id"]]).empty


def test_connect_views(two_runs):
    st, a, b = two_runs
    st.write_run(make_run(5, kind="score", scorer_only=True), make_tokens(2).assign(ctx_len=7))
    con = st.connect()
    assert scalar(con, "SELECT count(*) FROM tokens") == 10
    assert scalar(con, "SELECT count(*) FROM runs") == 3
    got = dict(con.sql("SELECT run_id, count(*) FROM tokens GROUP BY run_id").fetchall())
    assert got == {a["run_id"]: 5, b["run_id"]: 3, make_run(5, kind="score")["run_id"]: 2}
    # union_by_name: columns only some files have are NULL elsewhere
    assert scalar(con, "SELECT count(ctx_len) FROM tokens") == 2
    assert scalar(con, "SELECT count(*) FROM runs WHERE scorer_only") == 1
    assert scalar(con, f"SELECT path FROM runs WHERE run_id = '{a['run_id']}'") == st.get_run(a["run_id"])["path"]
    joined = con.sql("""SELECT r.model, sum(t.surprisal_raw) FROM tokens t JOIN runs r USING (run_id)
                        WHERE r.kind = 'generate' GROUP BY r.model ORDER BY r.model""").fetchall()
    assert joined == [("gemma-3-270m", 33.0), ("smollm2-135m", 10.0)]


def test_empty_store(tmp_path):
    st = RunStore(tmp_path / "s")
    df = st.runs()
    assert df.empty and {"run_id", "kind", "model", "status", "error", "path"} <= set(df.columns)
    assert st.runs(kind="generate").empty
    assert st.tokens([]).empty
    con = st.connect()
    assert scalar(con, "SELECT count(*) FROM runs") == 0
    assert scalar(con, "SELECT count(*) FROM tokens") == 0
    assert st.clean_tmp() == 0 and not st.delete_run("abc")


def test_filters(two_runs):
    st, a, b = two_runs
    st.write_run(make_run(5, kind="score"), None)
    assert len(st.runs(kind="generate")) == 2
    assert set(st.runs(model=["smollm2-135m", "gemma-3-270m"], kind="generate").run_id) == {a["run_id"], b["run_id"]}
    assert list(st.runs(kind="generate", model={"gemma-3-270m"}, status="ok").run_id) == [b["run_id"]]
    assert list(st.runs(seed=(3, 5)).sort_values("seed").seed) == [3, 5]
    assert st.runs(no_such_column=1).empty
    assert list(st.runs(mean_bits=None).run_id) == [r for r in st.runs().run_id if r != b["run_id"]]


def test_dict_values_are_json(tmp_path):
    st = RunStore(tmp_path)
    run = make_run(3, params={"top_p": 0.95, "top_k": 0}, prompts=["a", "b"], n=np.int64(7))
    st.write_run(run, None)
    got = st.get_run(run["run_id"])
    assert isinstance(got["params"], str) and json.loads(got["params"]) == {"top_k": 0, "top_p": 0.95}
    assert json.loads(got["prompts"]) == ["a", "b"] and got["n"] == 7
    with pytest.raises(TypeError):
        st.write_run(make_run(4, bad=object()), None)
    with pytest.raises(StoreError, match="status"):
        st.write_run(make_run(4, status="done"), None)


def test_connect_with_clashing_run_column_types(tmp_path):
    st = RunStore(tmp_path)
    a, b = make_run(1, note=7), make_run(2, note="seven")
    st.write_run(a, make_tokens(2))
    st.write_run(b, make_tokens(2).assign(position=lambda d: d.position.astype("int32")))
    con = st.connect()
    rows = dict(con.sql("SELECT run_id, path FROM runs").fetchall())
    assert rows == {r["run_id"]: str(st.root / st.run_relpath(r)) for r in (a, b)}
    assert scalar(con, "SELECT count(*) FROM tokens") == 4
    assert set(st.runs()["note"]) == {7, "seven"}
    assert list(st.tokens([a["run_id"], b["run_id"]])["position"]) == [0, 1, 0, 1]
