"""Is a stored file what was written? Checksums taken at write time, and the checks that use them.

A run's files are written, read back whole (every column decoded, the row count compared) and
hashed (sha256 of the file's bytes) before the run is renamed into view; the run row records the
tokens file's checksum (``tokens_sha256``) and a digest of its own fields (``row_sha256``, ``row_digest``).
A reader recomputes the checksum (about 0.1 ms for a 1,000-token file) and treats any difference as a
corrupt file: damage inside a data page, where the Parquet footer still reads, is found before a query
trips over it. Runs stored before checksums
existed are checked by reading the whole file instead, which finds damage that breaks decoding but
not damage that decodes to other numbers (regenerate such runs to give them a checksum). A run row whose
fields no longer give its ``row_sha256`` (an edited ``run.parquet``) is a corrupt run file, found at every
read of the row; a row stored before row digests is read unverified (``aep runs --verify`` still checks
its summaries against its tokens: ``store.summary_checks``).

    digest = write_parquet_verified(table, tmp / "tokens.parquet", compression="zstd")
    write_parquet_verified(run_row_table(row), tmp / "run.parquet")   # the row and its row_sha256
    problem = tokens_file_problem(path, run_row)   # from the disk: None when intact
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .summary_checks import summary_problem

RUN_FILE = "run.parquet"  # in each run folder: the run row
TOKENS_FILE = "tokens.parquet"  # in each run folder: one row per token (optional)
SEP = "__"  # between label and run_id in a run folder name
TOKENS_SHA256 = "tokens_sha256"  # run-row column: sha256 (hex) of tokens.parquet as written
ROW_SHA256 = "row_sha256"  # run-row column: sha256 (hex) of the row's other fields (row_digest)
UNDIGESTED = (ROW_SHA256, TOKENS_SHA256, "path")  # row fields row_digest leaves out
BLOCK = 1 << 20  # bytes read per step when hashing a file


class StoreError(Exception):
    """A stored file cannot be read, or a run cannot be written as asked."""


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, as 64 hex characters."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_parquet_verified(table: pa.Table, path: Path, **write_options: Any) -> str:
    """Write ``table`` to ``path`` (``pq.write_table`` with ``write_options``), read the file back from
    its bytes and return their sha256 (hex). Raises ``StoreError`` if what reads back is not the table
    written: unreadable (every column is decoded), another row count or other column names. (Types
    are not compared: Parquet may hand back an equivalent one, e.g. string for large_string.)"""
    pq.write_table(table, path, **write_options)
    data = Path(path).read_bytes()
    try:
        back = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    except Exception as e:  # any failure to read back is a failed write
        raise StoreError(f"{path} was written but cannot be read back: {e}") from e
    if back.num_rows != table.num_rows:
        raise StoreError(f"{path} was written with {table.num_rows} rows but reads back {back.num_rows}")
    if back.column_names != table.column_names:
        raise StoreError(f"{path} was written with columns {table.column_names} but reads back {back.column_names}")
    return hashlib.sha256(data).hexdigest()


def row_value(key: str, v: Any) -> Any:
    """A run-row value as stored: str/int/float/bool/None as is, dict/list/tuple as a JSON string."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    raise TypeError(f"run[{key!r}]: cannot store a {type(v).__name__}; use str/int/float/bool/None/dict/list")


def row_digest(row: dict) -> str:
    """sha256 (hex) of a run row's fields as they read back from run.parquet, all but ``UNDIGESTED``
    (``tokens_sha256`` is checked against its own file): canonical JSON, keys sorted, floats by repr
    (NaN and infinities as NaN, Infinity), so any change of a value, a type or a key changes it."""
    content = {k: v for k, v in row.items() if k not in UNDIGESTED}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def run_row_table(row: dict) -> pa.Table:
    """The 1-row table a run.parquet holds: ``row`` (values as ``row_value`` gives them) and its
    ``row_sha256``, the ``row_digest`` of the row as Parquet hands it back."""
    table = pa.Table.from_pylist([{k: v for k, v in row.items() if k != ROW_SHA256}])
    return table.append_column(ROW_SHA256, pa.array([row_digest(table.to_pylist()[0])], pa.string()))


def row_problem(path: Path, row: dict) -> str | None:
    """The error of a run row whose fields differ from the ``row_sha256`` it records, or None (intact, or
    stored before row digests: unverified)."""
    expected = row.get(ROW_SHA256)
    if expected is None or expected == row_digest(row):
        return None
    return (f"corrupt run file: {path}: its fields differ from the {ROW_SHA256} recorded when it was written "
            "(the file was edited after it was written)")


def read_run_file(path: Path) -> tuple[pa.Table, dict]:
    """A run.parquet as (1-row table, row dict); ``StoreError`` if it does not hold one row or if its fields
    differ from the ``row_sha256`` it records (``row_problem``)."""
    table = pq.ParquetFile(path).read(use_threads=False)
    if table.num_rows != 1:
        raise StoreError(f"expected 1 row, found {table.num_rows}")
    row = table.to_pylist()[0]
    problem = row_problem(path, row)
    if problem is not None:
        raise StoreError(problem)
    return table, row


def tokens_schema(path: Path) -> pa.Schema:
    """The Arrow schema in a tokens.parquet footer (reading the footer checks only the footer)."""
    return pq.read_metadata(path).schema.to_arrow_schema().remove_metadata()


def tokens_rows_read(path: Path) -> int:
    """Rows of a tokens.parquet read whole (every page decoded): the check of a file without a checksum."""
    return pq.ParquetFile(path).read(use_threads=False).num_rows


def is_positive(v: Any) -> bool:
    """True if v is a number > 0 (None, NaN and strings are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) and v > 0


def recorded_sha256(row: dict) -> str | None:
    """The tokens checksum a run row records, or None (a run stored before checksums, or without tokens)."""
    value = row.get(TOKENS_SHA256)
    return value if isinstance(value, str) and len(value) == 64 else None


def checksum_problem(path: Path, expected: str, actual: str) -> str | None:
    """The error of a tokens file whose sha256 is ``actual`` where the run recorded ``expected``."""
    if actual == expected:
        return None
    return (f"corrupt tokens file: {path}: sha256 {actual[:16]}... differs from {expected[:16]}... recorded when it "
            "was written (the file changed after it was written)")


def rows_problem(path: Path, rows: int, row: dict) -> str | None:
    """The error of a tokens file of ``rows`` rows whose run row says another ``n_tokens``, or None."""
    expected = row.get("n_tokens")
    if is_positive(expected) and int(expected) != rows:
        return f"corrupt tokens file: {path}: {rows} rows, the run says n_tokens={expected}"
    return None


def tokens_file_problem(path: Path, row: dict) -> str | None:
    """Why the tokens file of a run is unusable, or None, checked from the disk (no memo): missing
    though the run is ok with ``n_tokens > 0``, another sha256 than the recorded one, unreadable when
    read whole, or another row count than ``n_tokens``."""
    if not path.exists():
        if row.get("status") == "ok" and is_positive(row.get("n_tokens")):
            return f"missing tokens file: {path} (n_tokens={row['n_tokens']})"
        return None
    expected = recorded_sha256(row)
    if expected is not None:
        problem = checksum_problem(path, expected, file_sha256(path))
        if problem is not None:
            return problem
    try:
        rows = tokens_rows_read(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not raised
        return f"corrupt tokens file: {path}: {e}"
    return rows_problem(path, rows, row)


def remove_entries(folder: Path, older_than_s: float | None = None) -> int:
    """Remove the entries of ``folder`` (files and folders), or only those last modified more than
    ``older_than_s`` seconds ago; how many were removed (0 when the folder is missing)."""
    if not folder.is_dir():
        return 0
    n = 0
    cutoff = None if older_than_s is None else time.time() - older_than_s
    for entry in folder.iterdir():
        try:
            if cutoff is not None and entry.lstat().st_mtime > cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # removed meanwhile by another process
            continue
        n += 1
    return n


def check_writable_folder(folder: Path, store_root: Path) -> None:
    """Create ``folder`` if needed and a probe file in it, then remove the probe; ``StoreError`` naming
    the path and the reason (read-only file system, permissions, a file where a folder should be)."""
    probe = folder / f"write-probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as e:
        raise StoreError(f"the store {store_root} is not writable: {e.strerror or e}: {e.filename or probe}") from None


def error_text(e: Exception, prefix: str) -> str:
    """The message of a failed check: as raised when it already says "corrupt ...", else prefixed."""
    return str(e) if str(e).startswith(("corrupt", "missing")) else f"{prefix}{e}"


class CheckedFiles:
    """The reads and checks of a store's run folders, memoised on each file's state (path, mtime,
    size, inode): a file is read, hashed or checked again only after it changed."""

    def __init__(self) -> None:
        self.memo: dict[tuple[str, str], tuple[tuple, bool, Any]] = {}  # (path, check) -> (state, ok, value)
        self.bad: dict[str, tuple[tuple, str]] = {}  # path -> (state, error) of a failed full read

    @staticmethod
    def state(path: Path) -> tuple:
        st = path.stat()
        return st.st_mtime_ns, st.st_size, st.st_ino

    def cached(self, path: Path, read: Callable[[Path], Any]) -> Any:
        """read(path), memoised on (path, read, file state); errors are memoised and re-raised, and so
        is a failure that a later full read met (mark_bad) until the file changes."""
        key = self.state(path)
        bad = self.bad.get(str(path))
        if bad is not None and bad[0] == key:
            raise StoreError(bad[1])
        memo = (str(path), read.__name__)
        hit = self.memo.get(memo)
        if hit is None or hit[0] != key:
            try:
                hit = (key, True, read(path))
            except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not raised
                hit = (key, False, e)
            self.memo[memo] = hit
        if not hit[1]:
            raise hit[2]
        return hit[2]

    def mark_bad(self, path: Path, error: str) -> None:
        """Remember that path failed a read (until it changes): its run is listed failed from now on."""
        try:
            self.bad[str(path)] = (self.state(path), error)
        except OSError:
            pass

    def tokens_problem(self, run_dir: Path, row: dict) -> str | None:
        """Why the tokens file of a run is unusable, or None: missing though n_tokens > 0, another sha256
        than the one recorded at write time, or (a run stored before checksums) unreadable when read
        whole or holding another number of rows than n_tokens."""
        path = run_dir / TOKENS_FILE
        if not path.exists():
            return tokens_file_problem(path, row)
        expected = recorded_sha256(row)
        try:
            if expected is not None:
                return checksum_problem(path, expected, self.cached(path, file_sha256))
            return rows_problem(path, self.cached(path, tokens_rows_read), row)
        except Exception as e:  # noqa: BLE001
            return error_text(e, f"corrupt tokens file: {path}: ")

    def load(self, run_dir: Path) -> tuple[dict, pa.Table | None]:
        """
        (row, table) for one run folder. row is the stored run row plus "path"; if a file is bad,
        status is "failed" and "error" says which file (for a corrupt run.parquet the row holds only
        run_id, status, error, path). table is the stored 1-row table, None when a file is bad.
        """
        run_id = run_dir.name.rsplit(SEP, 1)[1]
        path = run_dir / RUN_FILE
        try:
            table, row = self.cached(path, read_run_file)
        except Exception as e:  # noqa: BLE001
            error = error_text(e, f"corrupt run file: {path}: ")
            return {"run_id": run_id, "status": "failed", "error": error, "path": str(run_dir)}, None
        row = dict(row)
        problem = self.tokens_problem(run_dir, row)
        if problem is not None:
            row["status"], row["error"] = "failed", problem
        row["path"] = str(run_dir)
        return row, table if problem is None else None

    def read_tokens(self, run_dir: Path, columns: list[str] | None) -> tuple[pa.Table | None, str | None]:
        """(tokens of one run, sorted by "position" if present, or None; why they cannot be read, or
        None). columns: those to read ("run_id" and "position" added when present); None: all. A run
        stored without tokens gives (None, None)."""
        row, run_table = self.load(run_dir)
        if run_table is None:  # a corrupt file, or tokens expected (n_tokens > 0) and missing
            return None, row["error"]
        path = run_dir / TOKENS_FILE
        if not path.exists():
            return None, None
        try:
            pf = pq.ParquetFile(path)
            wanted = None
            if columns is not None:
                wanted = [c for c in dict.fromkeys(["run_id", *columns, "position"]) if c in pf.schema_arrow.names]
            table = pf.read(columns=wanted)
        except Exception as e:  # noqa: BLE001 - the file changed since it was checked, or does not decode
            error = f"corrupt tokens file: {path}: {e}"
            self.mark_bad(path, error)
            return None, error
        return (table.sort_by("position") if "position" in table.column_names else table), None

    def verify_run(self, run_dir: Path) -> dict:
        """One run folder checked from the disk, memo bypassed: ``{"run_id", "path", "checked", "problem"}``
        (see ``RunStore.verify``): the run row against its ``row_sha256``, the tokens file, and the summaries
        of an ok run's row against those recomputed from its tokens (``summary_checks.summary_problem``). A
        problem found is remembered (mark_bad), so that load agrees."""
        tok, run_file = run_dir / TOKENS_FILE, run_dir / RUN_FILE
        try:
            _, row = read_run_file(run_file)
        except Exception as e:  # noqa: BLE001
            problem, checked = error_text(e, f"corrupt run file: {run_file}: "), "run file"
            self.mark_bad(run_file, problem)
        else:
            problem = tokens_file_problem(tok, row)
            checked = "sha256" if recorded_sha256(row) else ("read" if tok.exists() else "no tokens")
            if problem is not None:
                self.mark_bad(tok, problem)
            elif row.get("status") == "ok" and tok.exists():
                try:
                    problem = summary_problem(run_file, row, tok)
                except Exception as e:  # noqa: BLE001 - a file that changed since it was read, a bad value
                    problem = f"corrupt run file: {run_file}: its summaries cannot be recomputed from its tokens: {e}"
                if problem is not None:
                    self.mark_bad(run_file, problem)
        if problem is None:  # intact now: forget an earlier failed read
            self.bad.pop(str(tok), None), self.bad.pop(str(run_file), None)
        return {"run_id": run_dir.name.rsplit(SEP, 1)[1], "path": str(run_dir), "checked": checked,
                "problem": problem}
