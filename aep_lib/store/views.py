"""DuckDB views over the run store's files: ``runs`` (the run rows, registered from memory) and ``tokens``
(``read_parquet`` scans of the tokens files, one per schema, joined by ``UNION ALL BY NAME``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from .integrity import RUN_FILE

EMPTY_VIEW = "SELECT NULL::VARCHAR AS run_id WHERE false"


def duckdb_views(run_tables: Sequence[pa.Table], run_dirs: Sequence[str],
                 token_files_by_schema: Sequence[Sequence[Path]]) -> duckdb.DuckDBPyConnection:
    """A new in-memory connection with the views ``runs`` (``run_tables``, one per run, plus a ``path``
    column from ``run_dirs``) and ``tokens`` (each group of tokens files shares one schema; a column one
    group lacks is NULL). Both views exist, with no rows, when there is nothing to show."""
    con = duckdb.connect(":memory:")
    if not run_tables:
        con.execute(f"CREATE VIEW runs AS {EMPTY_VIEW}")
    else:
        try:
            runs = pa.concat_tables(run_tables, promote_options="permissive")
            con.register("runs", runs.append_column("path", pa.array(list(run_dirs), pa.string())))
        except pa.ArrowTypeError:  # one column with clashing types (int here, str there): DuckDB casts
            files = sql_list(Path(p) / RUN_FILE for p in run_dirs)
            con.execute(f"CREATE VIEW runs AS SELECT * EXCLUDE (filename), "
                        f"regexp_replace(filename, '/{RUN_FILE}$', '') AS path FROM read_parquet("
                        f"{files}, union_by_name=true, hive_partitioning=false, filename=true)")
    scans = [f"SELECT * FROM read_parquet({sql_list(files)}, hive_partitioning=false)"
             for files in token_files_by_schema]
    con.execute("CREATE VIEW tokens AS " + (" UNION ALL BY NAME ".join(scans) if scans else EMPTY_VIEW))
    return con


def sql_list(paths: Iterable[Path]) -> str:
    """A SQL list literal of file paths: ['a', 'b']."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
