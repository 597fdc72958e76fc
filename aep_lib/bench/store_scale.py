"""``store``: 10 million synthetic token rows written in the store's layout (10,000 runs × 1,000 tokens);
the per-run summary query in DuckDB (``store.connect()`` included), against the same rows compacted
into one file. Goal: at most 2× (thousands of run files cost no more than that)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import MIB, Result, median

SUMMARY_SQL = """
SELECT run_id, count(*) AS n, avg(surprisal_raw) AS l, avg(entropy_raw) AS h,
       avg(surprisal_raw) - avg(entropy_raw) AS D, sqrt(sum(varentropy_raw)) / count(*) AS sigma,
       avg(surprisal_samp) AS l_samp, avg(entropy_samp) AS h_samp
FROM tokens GROUP BY run_id
"""


def synthetic_tokens(n: int, seed: int = 0):
    """A ``[n]``-row token table with the columns (and dtypes) ``generate`` stores
    (``core.columns.generated_columns``; a statistic without a synthetic rule of its own: gamma draws)."""
    import numpy as np
    import pyarrow as pa

    from ..core.columns import BY_NAME, generated_columns

    rng = np.random.default_rng(seed)
    ent = rng.gamma(2.0, 1.5, n)
    known = {
        "position": np.arange(n, dtype=np.int64), "token_id": rng.integers(0, 49152, n),
        "token_text": pa.array(rng.choice(np.array([" the", " of", "ing", " and", ".", " a", "ed"]), n)),
        "ctx_len": np.arange(n, dtype=np.int64) + 12,
        "surprisal_raw": ent + rng.normal(0, 1.5, n), "entropy_raw": ent, "varentropy_raw": rng.gamma(2.0, 2.0, n),
        "rank_raw": rng.integers(1, 50, n), "greedy_id": rng.integers(0, 49152, n),
        "surprisal_samp": ent + rng.normal(0, 1.4, n), "entropy_samp": ent * 0.9, "varentropy_samp": rng.gamma(2.0, 1.8, n),
    }  # fmt: skip
    other = {"float64": lambda: rng.gamma(2.0, 1.5, n), "int64": lambda: rng.integers(1, 50, n)}
    return pa.table({c: known[c] if c in known else other[BY_NAME[c].dtype]() for c in generated_columns()})


def write_synthetic_runs(store, n_runs: int, per_run: int) -> tuple[float, list[float]]:
    """``n_runs`` runs of ``per_run`` synthetic tokens written into ``store``: the seconds in all, and the
    ms per run over each fifth of the runs (does writing slow down as the store grows?)."""
    base = synthetic_tokens(per_run)
    models, prompts = ["llama-8b", "llama-70b", "gemma-1b", "gemma-12b"], [f"p{i:03d}" for i in range(25)]
    t = time.perf_counter()
    t_mark, marks = t, []
    for i in range(n_runs):
        run_id = f"{i:016x}"
        store.write_run({"run_id": run_id, "kind": "generate", "model": models[i % 4],
                         "prompt_id": prompts[(i // 4) % 25], "label": f"s{i // 100}", "status": "ok",
                         "seed": i}, base)
        if (i + 1) % max(1, n_runs // 5) == 0:
            now = time.perf_counter()
            marks.append(round((now - t_mark) / max(1, n_runs // 5) * 1000, 2))
            t_mark = now
    return time.perf_counter() - t, marks


def compact_into_one(files: list[Path], one: Path) -> float:
    """The comparison: every token row of ``files`` in one file ``one``, zstd, row groups of 1M rows;
    the seconds it took."""
    import pyarrow.parquet as pq

    t = time.perf_counter()
    writer = None
    for f in files:
        table = pq.read_table(f)
        writer = writer or pq.ParquetWriter(one, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=1_000_000)
    writer.close()
    return time.perf_counter() - t


def time_summary_queries(store, raw, glob: str, one: Path, repeats: int) -> tuple:
    """The summary query, each repeat: ``store.connect()`` + the query (``ours``, split into ``connects``
    and ``queries``), ``read_parquet`` over the run files (``direct``) and over the one file
    (``compacted``). Returns ``(our last answer, {name: seconds of each repeat})``."""
    times: dict[str, list[float]] = {k: [] for k in ("ours", "connects", "queries", "direct", "compacted")}
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        con = store.connect()
        t1 = time.perf_counter()
        out = con.sql(SUMMARY_SQL).to_arrow_table()
        times["ours"].append(time.perf_counter() - t)
        times["connects"].append(t1 - t)
        times["queries"].append(time.perf_counter() - t1)
        t = time.perf_counter()
        raw.sql(SUMMARY_SQL.replace("FROM tokens", f"FROM read_parquet('{glob}')")).to_arrow_table()
        times["direct"].append(time.perf_counter() - t)
        t = time.perf_counter()
        raw.sql(SUMMARY_SQL.replace("FROM tokens", f"FROM read_parquet('{one}')")).to_arrow_table()
        times["compacted"].append(time.perf_counter() - t)
    return out, times


def bench_store(repeats: int, quick: bool, workdir: str | None = None) -> Result:
    import duckdb
    import pyarrow.parquet as pq

    from ..store.run_store import RunStore

    n_runs, per_run = (200, 500) if quick else (10_000, 1_000)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="aep-bench-store-") as tmp:
        store = RunStore(Path(tmp) / "store")
        write_s, marks = write_synthetic_runs(store, n_runs, per_run)
        files = list(store.root.rglob("tokens.parquet"))
        tok_bytes = sum(f.stat().st_size for f in files)
        run_bytes = sum(f.stat().st_size for f in store.root.rglob("run.parquet"))
        meta = pq.read_metadata(files[0])

        t = time.perf_counter()
        store.connect()
        connect_cold = time.perf_counter() - t
        glob = str(store.root / "*" / "*" / "*" / "*" / "tokens.parquet")
        one = Path(tmp) / "compacted.parquet"
        compact_s = compact_into_one(files, one)
        raw = duckdb.connect()
        n_rows = raw.execute(f"SELECT count(*) FROM read_parquet('{one}')").fetchall()[0][0]
        out, q = time_summary_queries(store, raw, glob, one, repeats)
        assert out.num_rows == n_runs and n_rows == n_runs * per_run
        o, c = median(q["ours"]), median(q["compacted"])
        return Result(
            "store", f"s, summary of {n_runs * per_run / 1e6:g}M rows", o, c, "s", o / c, "<= 2x one file",
            o / c <= 2.0,
            details={
                "layout": f"{n_runs} run folders <kind>/<model>/<prompt_id>/<label>__<run_id>/, one tokens.parquet "
                          f"(zstd, {meta.num_row_groups} row group of {meta.row_group(0).num_rows} rows) + one "
                          f"run.parquet each",
                "write (s total, ms per run over each fifth of the runs)": [round(write_s, 1), marks],
                "bytes per token row (tokens files)": round(tok_bytes / (n_runs * per_run), 1),
                "store size (MiB): tokens, run rows": [round(tok_bytes / MIB, 1), round(run_bytes / MIB, 1)],
                "store.connect(): first, then each repeat (s)": [round(connect_cold, 2)]
                + [round(x, 2) for x in q["connects"]],
                "query on the connection (s, each repeat)": [round(x, 2) for x in q["queries"]],
                "connect + query (s, each repeat)": [round(x, 2) for x in q["ours"]],
                "query via read_parquet(glob) over the run files (s)": [round(x, 2) for x in q["direct"]],
                "query over one compacted file (s)": [round(x, 2) for x in q["compacted"]],
                "compaction into one file (s)": round(compact_s, 1),
            },
            notes=["baseline column = the same rows compacted into one Parquet file (1M-row row groups); "
                   "ours = store.connect() + the query"],
        )
