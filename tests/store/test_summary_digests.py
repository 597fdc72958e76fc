"""Every stored file of a run is checked: a run row carries a digest of its own fields (an edited
run.parquet is a corrupt run at the next read), and ``verify`` recomputes the summaries an ok run's row
carries from its tokens (a summary that disagrees is named). Rows stored before row digests still load."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aep_lib.cli import app
from aep_lib.core.stats import comparison_summary, window_summaries
from aep_lib.runs.generations import summary_columns
from aep_lib.store.integrity import ROW_SHA256, TOKENS_SHA256, file_sha256, row_digest
from aep_lib.store.run_store import RunStore, StoreWarning, canonical_run_id
from aep_lib.store.summary_checks import recomputed_summaries, summary_problem

N = 300


def tokens(seed: int, n: int = N, cross: bool = False) -> pd.DataFrame:
    """A token table with the raw and sampling columns (and the cross ones), seeded."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"position": np.arange(n, dtype=np.int64), "token_id": rng.integers(0, 1000, n)})
    for dist in ("raw", "samp"):
        df[f"surprisal_{dist}"] = rng.gamma(2.0, 2.0, n)
        df[f"entropy_{dist}"] = rng.gamma(2.0, 2.0, n)
        df[f"varentropy_{dist}"] = rng.gamma(2.0, 3.0, n)
    if cross:
        df["cross_entropy"] = rng.gamma(2.0, 2.5, n)
        df["cross_varentropy"] = rng.gamma(2.0, 3.0, n)
        df["entropy_ref"] = rng.gamma(2.0, 2.0, n)
        df["kl"] = df["cross_entropy"] - df["entropy_ref"]
    return df


def generation_row(seed: int, toks: pd.DataFrame) -> dict:
    """A generation's run row with the summary ``runs.generations`` writes."""
    return {"run_id": canonical_run_id({"seed": seed}), "kind": "generate", "model": "smollm2-135m",
            "prompt_id": "p01", "label": f"s{seed}", "status": "ok", "seed": seed, "temperature": 1.0,
            "text": "x", "error": None} | summary_columns(toks)


@pytest.fixture
def store(tmp_path):
    st = RunStore(tmp_path / "store")
    ids = []
    for seed in range(3):
        toks = tokens(seed)
        row = generation_row(seed, toks)
        st.write_run(row, toks)
        ids.append(row["run_id"])
    return st, ids


def rewrite_row(st: RunStore, run_id: str, **changes) -> Path:
    """Rewrite one run's run.parquet with some fields changed (the digest column kept as it was)."""
    path = Path(st.get_run(run_id)["path"]) / "run.parquet"
    table = pq.read_table(path)
    for key, value in changes.items():
        i = table.column_names.index(key)
        table = table.set_column(i, key, pa.array([value], table.schema.field(key).type))
    pq.write_table(table, path, compression="none", use_dictionary=False)
    return path


@pytest.mark.parametrize("column, value", [("z_samp", 9.5), ("l_raw", 1.25), ("D_samp", -3.0)])
def test_an_edited_summary_is_caught_on_read(store, column, value):
    st, (bad, a, b) = store
    assert st.runs()["status"].tolist() == ["ok"] * 3  # read (and memoised) before the edit
    path = rewrite_row(st, bad, **{column: value})
    df = st.runs().set_index("run_id")
    assert df.loc[bad, "status"] == "failed" and df.loc[a, "status"] == df.loc[b, "status"] == "ok"
    assert df.loc[bad, "error"].startswith(f"corrupt run file: {path}: its fields differ from the row_sha256")
    assert not st.has_ok_run(bad) and st.has_ok_run(a)
    assert RunStore(st.root).get_run(bad)["status"] == "failed"  # a fresh store object too
    con = st.connect()
    assert con.sql("SELECT count(*) FROM runs").fetchall() == [(2,)]
    assert con.sql("SELECT count(DISTINCT run_id) FROM tokens").fetchall() == [(2,)]
    with pytest.warns(StoreWarning, match=f"{bad}.*row_sha256"):
        assert set(st.tokens([bad, a])["run_id"]) == {a}


@pytest.mark.parametrize("column, value", [("z_samp", 9.5), ("l_raw", 1.25), ("D_samp", -3.0)])
def test_an_edited_summary_with_a_recomputed_digest_is_caught_by_verify(store, column, value):
    """Even a row rewritten with a digest that matches: the summary no longer matches the tokens."""
    st, (bad, a, b) = store
    path = rewrite_row(st, bad, **{column: value})
    row = pq.read_table(path).to_pylist()[0]
    rewrite_row(st, bad, **{ROW_SHA256: row_digest(row)})
    assert RunStore(st.root).get_run(bad)["status"] == "ok"  # the digest alone cannot see it ...
    checked = st.verify().set_index("run_id")  # ... the tokens can
    assert checked["problem"].notna().tolist() == [r == bad for r in checked.index]
    problem = checked.loc[bad, "problem"]
    assert problem.startswith(f"corrupt run file: {path}: {column} = ") and "recomputed from its tokens" in problem
    assert "\n" not in problem
    assert st.runs(status="failed")["run_id"].tolist() == [bad]  # runs() agrees afterwards


def test_aep_runs_verify_names_the_run_and_the_column(store):
    st, (bad, _, _) = store
    runner = CliRunner()
    ok = runner.invoke(app, ["runs", "--store", str(st.root), "--verify"])
    assert ok.exit_code == 0 and "3 intact, 0 bad" in ok.stdout  # an untouched store verifies clean
    path = rewrite_row(st, bad, z_samp=9.5)
    rewrite_row(st, bad, **{ROW_SHA256: row_digest(pq.read_table(path).to_pylist()[0])})
    out = runner.invoke(app, ["runs", "--store", str(st.root), "--verify"])
    assert out.exit_code == 1 and "2 intact, 1 bad" in out.stdout
    assert re.search(rf"^{bad}  corrupt run file: .*: z_samp = 9.5 stored, ", out.stdout, re.M)


def test_a_legacy_row_without_a_digest_loads_and_verify_checks_its_summaries(store):
    st, (old, a, _) = store
    folder = Path(st.get_run(old)["path"])
    pq.write_table(pq.read_table(folder / "run.parquet").drop_columns([ROW_SHA256]), folder / "run.parquet")
    fresh = RunStore(st.root)
    assert fresh.get_run(old)["status"] == "ok" and fresh.has_ok_run(old)  # unverified, but it loads
    assert fresh.verify()["problem"].isna().all()
    rewrite_row(fresh, old, l_raw=1.25)  # a legacy row has no digest: only verify can see an edit
    assert RunStore(st.root).get_run(old)["status"] == "ok"
    checked = RunStore(st.root).verify().set_index("run_id")
    assert ": l_raw = 1.25 stored" in checked.loc[old, "problem"] and pd.isna(checked.loc[a, "problem"])


def test_digest_and_recomputation_agree_with_what_the_writers_store(tmp_path):
    """Generations (summary_columns), comparisons (comparison_summary) and windowed text scorings verify
    clean, floats stored as float32 too; the tokens file's bytes and the run id do not depend on the digest."""
    st = RunStore(tmp_path)
    gen = tokens(7)
    row = generation_row(7, gen)
    assert set(summary_columns(gen)) <= set(recomputed_summaries(gen, row))
    assert all(recomputed_summaries(gen, row)[k] == v for k, v in summary_columns(gen).items())
    where = st.write_run(row, gen)
    plain = RunStore(tmp_path / "other").write_run({**row, "seed": 8, "text": "other"}, gen)
    assert file_sha256(where / "tokens.parquet") == file_sha256(plain / "tokens.parquet") == \
        st.get_run(row["run_id"])[TOKENS_SHA256]
    assert where.name.endswith(row["run_id"]) and row["run_id"] == canonical_run_id({"seed": 7})

    cmp = tokens(8, cross=True)
    st.write_run({"run_id": "c0ffee", "kind": "score", "model": "m", "status": "ok"} | comparison_summary(cmp), cmp)
    text = tokens(9, n=250).assign(window=lambda d: d["position"] // 64)
    wins = window_summaries(text, 64)
    st.write_run({"run_id": "7e47", "kind": "score", "model": "m", "status": "ok", "window_tokens": 64,
                  "n_windows": len(wins), "z_mean": float(wins["z"].mean()), "D_mean": float(wins["D"].mean())},
                 text)
    f32 = tokens(10).astype({c: "float32" for c in tokens(10).columns if c.endswith(("_raw", "_samp"))})
    st.write_run(generation_row(10, f32), f32)
    nan_row = generation_row(11, tokens(11).assign(varentropy_raw=0.0))  # sigma 0: z is NaN
    st.write_run(nan_row, tokens(11).assign(varentropy_raw=0.0))
    assert np.isnan(st.get_run(nan_row["run_id"])["z_raw"])
    checked = st.verify()
    assert len(checked) == 5 and checked["problem"].isna().all(), checked["problem"].tolist()
    assert st.runs()["status"].tolist() == ["ok"] * 5

    text_dir = Path(st.get_run("7e47")["path"])
    problem = summary_problem(text_dir / "run.parquet", st.get_run("7e47") | {"z_mean": 50.0},
                              text_dir / "tokens.parquet")
    assert ": z_mean = 50 stored" in problem
    cmp_dir = Path(st.get_run("c0ffee")["path"])
    problem = summary_problem(cmp_dir / "run.parquet", st.get_run("c0ffee") | {"z_cross": 1.0},
                              cmp_dir / "tokens.parquet")
    assert ": z_cross = 1 stored" in problem


def test_a_digest_field_given_to_write_run_is_replaced(tmp_path):
    st = RunStore(tmp_path)
    toks = tokens(3)
    row = generation_row(3, toks)
    st.write_run({**row, ROW_SHA256: "0" * 64}, toks)
    stored = st.get_run(row["run_id"])
    assert stored["status"] == "ok" and stored[ROW_SHA256] == row_digest(stored)
    st.write_run({**stored, "seed": 4}, toks)  # a row read back and written again gets a new digest
    assert st.get_run(row["run_id"])["status"] == "ok" and st.get_run(row["run_id"])["seed"] == 4
