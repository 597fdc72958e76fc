"""
The run store: one folder per run, Parquet files inside, DuckDB views on top.

Every run (a generation, or a scoring of a text) is one row of a runs table and its tokens are
rows of a tokens table (one row per token, the column names of docs/science.md). On disk:

    <root>/<kind>/<model>/<prompt_id>/<label>__<run_id>/run.parquet      one row
    <root>/<kind>/<model>/<prompt_id>/<label>__<run_id>/tokens.parquet   one row per token (optional)
    <root>/.tmp/                                                         writes in progress
    <root>/.locks/<run_id>.lock                                          claims of runs being generated (OS locks)

The folder names are for humans (sanitised to [A-Za-z0-9._=-]); the identity of a run is its
run_id, the last "__"-separated part of its folder name. A run is written into .tmp/ first, read
back and hashed (store_integrity), and renamed into place, so a reader sees a whole verified run or
none of it; the run row records the tokens file's sha256 ("tokens_sha256") and a digest of its own
fields ("row_sha256": an edited run.parquet is a corrupt file at the next read). Readers never raise
because of one bad file: a run whose file is corrupt (its checksum differs, or it does not read)
shows up in runs() as a row with status "failed" and an error naming the file, has_ok_run() says
False (so a rerun regenerates it), tokens() skips it with a StoreWarning and the DuckDB views
leave it out. verify() re-checks every file from the disk. Temporary entries left in .tmp/ by a
killed writer are removed when a store is opened, once they are an hour old.

    store = RunStore("outputs/cpu/store")
    store.write_run({"run_id": rid, "kind": "generate", "model": "smollm2-135m",
                     "prompt_id": "p01", "label": "s3_t1.0", "status": "ok"}, tokens_df)
    store.runs(kind="generate", status="ok")                      # pandas, one row per run
    store.connect().sql("SELECT run_id, avg(surprisal_raw) FROM tokens GROUP BY run_id")
    with store.claim(run_ids) as mine:                            # the ids this process may generate
        ...
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
from filelock import FileLock, Timeout

from .integrity import (
    ROW_SHA256,
    RUN_FILE,
    SEP,
    TOKENS_FILE,
    TOKENS_SHA256,
    CheckedFiles,
    StoreError,
    check_writable_folder,
    remove_entries,
    row_value,
    run_row_table,
    tokens_schema,
    write_parquet_verified,
)
from .views import duckdb_views

__all__ = ["RunStore", "StoreError", "StoreWarning", "canonical_run_id", "sanitize"]

TMP_DIR = ".tmp"
LOCKS_DIR = ".locks"
TMP_MAX_AGE_S = 3600.0  # a .tmp entry older than this (seconds) is a killed writer's, removed on open

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")
_RUN_ID = re.compile(r"[A-Za-z0-9.=-]+")  # no "_" so that "<label>__<run_id>" splits unambiguously
_MAX_COMPONENT = 120  # characters per path component (file systems allow 255 bytes)
_BASE_COLUMNS = ["run_id", "kind", "model", "status", "error"]  # always present in runs()


class StoreWarning(UserWarning):
    """Some runs were left out of a query because their files cannot be read (runs() lists them failed)."""


def canonical_run_id(params: dict, n: int = 16) -> str:
    """
    First n hex chars of sha256 over the canonical JSON of params: keys sorted at every level,
    separators (",", ":"), floats written by repr. Same params -> same id, on any machine.

    Types matter: {"temperature": 1} and {"temperature": 1.0} give different ids (JSON "1" vs
    "1.0"), as do True and 1, and a tuple is the same as a list. Normalise params (e.g. through the
    validated Params model) before hashing. Only JSON types are accepted (dict with str keys, list,
    tuple, str, int, float, bool, None); anything else raises TypeError, so that an id never depends
    on some object's str().
    """
    if not 1 <= n <= 64:
        raise ValueError(f"n must be in 1..64, got {n}")
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def sanitize(component: Any) -> str:
    """One path component: characters outside [A-Za-z0-9._=-] become "-", no leading ".", not empty."""
    s = _UNSAFE.sub("-", str(component))[:_MAX_COMPONENT]
    if s == "" or s.startswith("."):
        s = "_" + s  # never "", ".", ".." or a hidden name like ".tmp"
    return s


def release_all(locks: dict[str, FileLock]) -> None:
    """Release every lock of a claim."""
    for lock in locks.values():
        lock.release()


class RunStore:
    """Runs and their tokens as Parquet files under one root folder (created on first write).

    Opening a store removes what killed writers left in ``.tmp/`` more than ``TMP_MAX_AGE_S`` ago
    (nothing when the folder is missing or cannot be written)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._index: dict[str, Path] = {}  # run_id -> run folder, refreshed on a miss
        self._files = CheckedFiles()  # reads and checks of the run files, memoised per file state
        try:
            self.clean_tmp(older_than_s=TMP_MAX_AGE_S)
        except OSError:  # a read-only store is still readable
            pass

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # ------------------------------------------------------------------ layout

    def run_relpath(self, run: dict) -> Path:
        """<kind>/<model>/<prompt_id>/<label>__<run_id>, relative to root, every part sanitised."""
        run_id = self._check_run_id(run.get("run_id"))
        return Path(
            sanitize(run["kind"]),
            sanitize(run["model"]),
            sanitize(run.get("prompt_id") or "_"),
            sanitize(run.get("label") or "run") + SEP + run_id,
        )

    @staticmethod
    def _check_run_id(run_id: Any) -> str:
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise StoreError(f"run_id must be a non-empty str of [A-Za-z0-9.=-] (e.g. hex), got {run_id!r}")
        return run_id

    def _scan(self) -> dict[str, list[Path]]:
        """All run folders by run_id (several only after an interrupted replace), .tmp skipped."""
        found: dict[str, list[Path]] = {}

        def subdirs(path):
            try:
                with os.scandir(path) as it:
                    return sorted(e.path for e in it if e.is_dir() and not e.name.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                return []

        for kind in subdirs(self.root):
            for model in subdirs(kind):
                for prompt in subdirs(model):
                    for run_dir in subdirs(prompt):
                        name = os.path.basename(run_dir)
                        if SEP in name:
                            found.setdefault(name.rsplit(SEP, 1)[1], []).append(Path(run_dir))
        return found

    @staticmethod
    def _newest(dirs: list[Path]) -> Path:
        """The most recently written of several folders of one run_id."""
        def mtime(d: Path) -> int:
            try:
                return d.stat().st_mtime_ns
            except FileNotFoundError:
                return -1
        return max(dirs, key=mtime) if len(dirs) > 1 else dirs[0]

    def refresh_index(self) -> dict[str, Path]:
        """Rescan the disk; returns (and keeps) run_id -> folder, the newest folder if several."""
        self._index = {rid: self._newest(dirs) for rid, dirs in self._scan().items()}
        return self._index

    def _find(self, run_id: str) -> Path | None:
        """The folder of run_id: the in-memory index if still valid, else a rescan."""
        path = self._index.get(run_id)
        if path is not None and path.is_dir():
            return path
        return self.refresh_index().get(run_id)

    def _dirs_of(self, run_id: str) -> list[Path]:
        """Every folder holding run_id, straight from the disk."""
        self._check_run_id(run_id)
        return [p for p in self.root.glob(f"*/*/*/*{SEP}{run_id}") if not p.parts[-4].startswith(".")]

    def _trash(self, path: Path) -> None:
        """Take a folder out of view at once (rename into .tmp), then delete it."""
        tmp = self.root / TMP_DIR / f"old-{path.name}-{uuid.uuid4().hex}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, tmp)
        shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ writing

    def write_run(self, run: dict, tokens: pd.DataFrame | pa.Table | None) -> Path:
        """
        Store one run atomically; returns its folder. Replaces any stored run with the same run_id.

        run: must hold "run_id" (str of [A-Za-z0-9.=-]), "kind", "model", "status" ("ok"|"failed");
            optional "prompt_id" and "label" name the folder. Values are str/int/float/bool/None;
            dict/list/tuple values are stored as JSON strings; a "path" key is dropped (readers add
            it). "n_tokens" is the number of token rows: added when tokens are given, a StoreError
            if it says otherwise (runs() uses it to notice a lost tokens file).
        tokens: one row per token, any columns and dtypes (float32 stays float32); a "run_id"
            column is added if absent. None: no tokens file (e.g. a failed run).

        Each file is read back whole before the run is moved into view (StoreError if it does not
        read back as written); the sha256 of the tokens file is stored as "tokens_sha256" (set here,
        whatever the run says; absent without tokens), and the digest of the row's other fields as
        "row_sha256" (integrity.row_digest; checked at every read of the row).
        """
        for key in ("run_id", "kind", "model", "status"):
            if key not in run:
                raise StoreError(f"run is missing {key!r}")
        run_id = self._check_run_id(run["run_id"])
        if run["status"] not in ("ok", "failed"):
            raise StoreError(f"run status must be 'ok' or 'failed', got {run['status']!r}")
        row = {k: row_value(k, v) for k, v in run.items() if k not in ("path", TOKENS_SHA256, ROW_SHA256)}

        table = None
        if tokens is not None:
            table = tokens if isinstance(tokens, pa.Table) else pa.Table.from_pandas(tokens, preserve_index=False)
            if "run_id" in table.column_names:
                ids = set(table.column("run_id").to_pylist())
                if ids - {run_id}:
                    raise StoreError(f"tokens carry run_id {sorted(map(str, ids - {run_id}))[:3]}, expected {run_id!r}")
            else:
                table = table.add_column(0, "run_id", pa.array([run_id] * table.num_rows, pa.string()))
            if row.setdefault("n_tokens", table.num_rows) != table.num_rows:
                raise StoreError(f"run says n_tokens={row['n_tokens']} but tokens has {table.num_rows} rows")

        dest = self.root / self.run_relpath(run)
        tmp = self.root / TMP_DIR / f"{run_id}-{uuid.uuid4().hex}"
        try:
            tmp.mkdir(parents=True)
            if table is not None:
                row[TOKENS_SHA256] = write_parquet_verified(table, tmp / TOKENS_FILE, compression="zstd")
            # One row: no compression or dictionary (a 1-row zstd file reads ~3x slower, for nothing).
            write_parquet_verified(run_row_table(row), tmp / RUN_FILE, compression="none", use_dictionary=False)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():  # same folder: move the old one aside first (a rename cannot overwrite a folder)
                self._trash(dest)
            os.replace(tmp, dest)
        except OSError as err:  # a full disk, a read-only store: nothing of the run is left behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot write run {run_id} into the store {self.root}: "
                             f"{err.strerror or err}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self._dirs_of(run_id):  # the same run_id under another label/prompt/model
            if old != dest:
                self._trash(old)
        self._index[run_id] = dest
        return dest

    def delete_run(self, run_id: str) -> bool:
        """Remove every folder of run_id; True if there was one."""
        dirs = self._dirs_of(run_id)
        for d in dirs:
            self._trash(d)
        self._index.pop(run_id, None)
        return bool(dirs)

    def clean_tmp(self, older_than_s: float | None = None) -> int:
        """
        Delete what interrupted writes left in <root>/.tmp; returns how many entries were removed.
        older_than_s: only entries last modified more than this many seconds ago (a write in
        progress touches its folder within seconds). None: every entry; only call it so while no
        other process is writing to this store (it would remove their work).
        """
        return remove_entries(self.root / TMP_DIR, older_than_s)

    def check_writable(self) -> None:
        """StoreError naming the path unless a probe file can be created (and removed) in <root>/.tmp
        (created if missing): the check to make before hours of work whose results go here."""
        check_writable_folder(self.root / TMP_DIR, self.root)

    @contextmanager
    def claim(self, run_ids: Iterable[str]) -> Iterator[list[str]]:
        """
        Claim runs to generate: yields the run_ids (in the order given, duplicates once) that this
        process now holds; the others are claimed by another process (or another claim in this one).
        Released on exit. Each claim is an OS lock on <root>/.locks/<run_id>.lock (``filelock``), which
        the kernel releases when its holder dies, so a killed process never blocks the next one;
        StoreError if the lock files cannot be written. Check what is stored ok after claiming (a run
        finished elsewhere may have been released meanwhile):

            with store.claim(ids) as mine:
                todo = [r for r in mine if not store.has_ok_run(r)]
        """
        ids = [self._check_run_id(r) for r in dict.fromkeys(run_ids)]
        folder = self.root / LOCKS_DIR
        held: dict[str, FileLock] = {}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for run_id in ids:
                lock = FileLock(folder / f"{run_id}.lock")
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue  # held by another claim
                held[run_id] = lock
        except OSError as e:
            release_all(held)
            raise StoreError(f"cannot claim runs in {folder}: {e.strerror or e}: {e.filename or folder}") from None
        except BaseException:
            release_all(held)
            raise
        try:
            yield list(held)
        finally:
            release_all(held)

    # ------------------------------------------------------------------ reading

    def get_run(self, run_id: str) -> dict | None:
        """The run row of run_id as a dict (as runs() shows it, with "path"), or None if not stored."""
        run_dir = self._find(self._check_run_id(run_id))
        return None if run_dir is None else self._files.load(run_dir)[0]

    def has_ok_run(self, run_id: str) -> bool:
        """True if run_id is stored with status "ok" and its files pass their checks (checksum)."""
        row = self.get_run(run_id)
        return row is not None and row.get("status") == "ok"

    def runs(self, **filters: Any) -> pd.DataFrame:
        """
        One row per stored run, columns unioned over runs (missing -> NA), plus "path" (the folder).
        Always has the columns run_id, kind, model, status, error, path. Bad files give "failed" rows.

        filters: column=value keeps rows equal to value; a list/tuple/set keeps rows in it; None
        keeps rows where the column is missing. A column no run has matches nothing.
        """
        rows = [self._files.load(d)[0] for _, d in sorted(self.refresh_index().items(), key=lambda kv: str(kv[1]))]
        df = pd.DataFrame(rows)
        for col in _BASE_COLUMNS + ["path"]:
            if col not in df.columns:
                df[col] = None
        df = df[[c for c in df.columns if c != "path"] + ["path"]]
        for col, value in filters.items():
            if col not in df.columns:
                keep = pd.Series(value is None, index=df.index)
            elif value is None:
                keep = df[col].isna()
            elif isinstance(value, (list, tuple, set, frozenset)):
                keep = df[col].isin(list(value))
            else:
                keep = df[col] == value
            df = df[keep.fillna(False).astype(bool)]
        return df.reset_index(drop=True)

    def tokens(self, run_ids: Iterable[str] | str, columns: list[str] | None = None,
               errors: str | None = None) -> pd.DataFrame:
        """
        Token rows of the given runs: runs in the order given (duplicates dropped), each sorted by
        "position" if it has that column. columns: the columns to return ("run_id" is always added
        first); a column some runs lack is NA for them. A run stored without tokens (n_tokens absent
        or 0, or status "failed") contributes no rows.

        errors: what a run whose files cannot be read (corrupt, or a missing tokens file) does:
        "skip" leaves it out with one StoreWarning naming the runs and why (runs() lists them as
        failed, a rerun regenerates them); "raise" raises StoreError. Default: "skip" for a list of
        runs (the query returns the rest), "raise" for one run_id given as a str (there is no rest).
        Always StoreError: an unknown run_id, or a column that none of the runs read has.
        """
        errors = errors or ("raise" if isinstance(run_ids, str) else "skip")
        if errors not in ("skip", "raise"):
            raise ValueError(f"errors must be 'skip' or 'raise', got {errors!r}")
        ids = [run_ids] if isinstance(run_ids, str) else list(dict.fromkeys(run_ids))
        tables, skipped = [], []
        for run_id in ids:
            run_dir = self._find(self._check_run_id(run_id))
            if run_dir is None:
                raise StoreError(f"no stored run {run_id!r} in {self.root}")
            table, problem = self._files.read_tokens(run_dir, columns)
            if problem is not None:
                if errors == "raise":
                    raise StoreError(problem)
                skipped.append(f"{run_id} ({problem})")
            elif table is not None:
                tables.append(table)
        if skipped:
            warnings.warn(StoreWarning(
                f"tokens of {len(skipped)} of {len(ids)} runs left out, their files cannot be read (runs() lists "
                f"them as failed; a rerun regenerates them): {'; '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}"
            ), stacklevel=2)
        if columns is not None:
            present = set().union(*(t.column_names for t in tables)) if tables else set()
            missing = [c for c in columns if c not in present]
            if tables and missing:
                raise StoreError(f"no tokens column {missing} in runs {ids[:5]}{'...' if len(ids) > 5 else ''}")
        if not tables:
            return pd.DataFrame(columns=["run_id", *(c for c in (columns or []) if c != "run_id")])
        try:
            df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        except pa.ArrowTypeError as e:
            raise StoreError(f"tokens of runs {ids[:5]} have clashing column types: {e}") from e
        if columns is not None:
            df = df[list(dict.fromkeys(["run_id", *columns]))]
        return df.reset_index(drop=True)

    def verify(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """
        Check the files of every stored run (or of run_ids) from the disk, memo bypassed: run.parquet
        read whole, its fields against its row_sha256; tokens.parquet hashed against the recorded sha256
        and read whole (every page decoded), its rows against n_tokens; the summaries an ok run's row
        carries (l_samp, ..., z_raw, z_cross, z_mean, ...) recomputed from its tokens
        (store.summary_checks), a difference beyond float rounding a problem naming the column. One row
        per run: run_id, path, checked ("sha256", or "read" for a run stored before checksums, "no
        tokens", "run file" when that one is bad) and problem (None when intact), sorted by path.
        runs() agrees afterwards.
        """
        wanted = None if run_ids is None else set(run_ids)
        rows = [self._files.verify_run(run_dir) for run_id, run_dir in sorted(self.refresh_index().items(),
                                                                             key=lambda kv: str(kv[1]))
                if wanted is None or run_id in wanted]
        return pd.DataFrame(rows, columns=["run_id", "path", "checked", "problem"])

    def connect(self) -> duckdb.DuckDBPyConnection:
        """
        A new in-memory DuckDB connection with views `runs` and `tokens` over the intact runs
        (checksums checked; runs() lists the others as "failed"). A snapshot: connect again after writing.

        runs:   the run rows plus "path", registered from memory (runs() has read them anyway, and
                a query then does not reopen thousands of tiny files).
        tokens: read_parquet over the tokens files (footers checked, memoised on path, mtime, size),
                one scan per schema joined by UNION ALL BY NAME: what union_by_name=true gives,
                without DuckDB reading every footer at each query. Columns a run lacks are NULL.
        Both views exist, with no rows, in an empty store.
        """
        tables, paths, by_schema = [], [], {}
        for _, run_dir in sorted(self.refresh_index().items(), key=lambda kv: str(kv[1])):
            _, table = self._files.load(run_dir)
            if table is None:
                continue
            tok = run_dir / TOKENS_FILE
            if tok.exists():
                try:
                    by_schema.setdefault(self._files.cached(tok, tokens_schema), []).append(tok)
                except Exception:  # noqa: BLE001, S112 - changed since it was checked: leave the run out
                    continue
            tables.append(table)
            paths.append(str(run_dir))
        return duckdb_views(tables, paths, list(by_schema.values()))

