"""Claims on names (run ids) shared by processes and hosts: one lock file per name, created atomically.

A claim on ``name`` is the file ``<folder>/<name>.lock``, created with ``O_CREAT | O_EXCL`` (exactly one
creator wins, on a local disk and on NFS v3+) and holding JSON ``{"pid", "host", "time", "token"}``
(``time``: Unix seconds). A lock is **stale**, and taken over, when its holder is a process on this host
that no longer runs, or when it is older than ``stale_after_s`` (a holder on another host cannot be
asked); a file whose content cannot be read is judged by its modification time. Taking over is
guarded by a second lock file, ``<name>.lock.break``, so that of two processes that both find one
stale lock, one removes it and neither removes the fresh lock the other then creates.

    with claim(folder, ["a1", "b2", "c3"]) as mine:   # the names this process holds, in order given
        ...                                            # the others are held elsewhere
    # released on exit (each file removed only if it is still this claim's)
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCK_SUFFIX = ".lock"
BREAK_SUFFIX = ".break"
STALE_AFTER_S = 6 * 3600.0  # a lock older than this is taken over, whoever holds it (seconds)
BREAK_STALE_S = 60.0  # a take-over lock older than this was left by a process that died mid-way
UNREADABLE_GRACE_S = 60.0  # a lock file with no readable content yet: its creator may still be writing it


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: process id, host name, when it was taken (Unix seconds), its claim token."""

    pid: int | None
    host: str | None
    time: float
    token: str | None


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True if a process ``pid`` exists on this host (a zombie not yet reaped counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True
    return True


def read_holder(path: Path) -> tuple[LockHolder, tuple] | None:
    """``(holder, identity)`` of a lock file, or None if it is gone. ``identity`` (inode, mtime, bytes)
    tells this file from a later one at the same path. Unreadable content gives a holder with no pid,
    host or token, dated by the file's modification time."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(data)
        holder = LockHolder(int(info["pid"]), str(info["host"]), float(info["time"]), str(info["token"]))
    except (ValueError, KeyError, TypeError):
        holder = LockHolder(None, None, st.st_mtime, None)
    return holder, (st.st_ino, st.st_mtime_ns, data)


def is_stale(holder: LockHolder, stale_after_s: float, now: float | None = None) -> bool:
    """True if the lock can be taken over: older than ``stale_after_s``, held by a process of this host
    that is gone, or unreadable for longer than a writer needs."""
    age = (time.time() if now is None else now) - holder.time
    if age > stale_after_s:
        return True
    if holder.pid is None:
        return age > UNREADABLE_GRACE_S
    return holder.host == this_host() and not pid_alive(holder.pid)


def create_exclusive(path: Path, content: bytes) -> bool:
    """Create ``path`` holding ``content`` if it does not exist; False if it does."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return True


def take_over_if_stale(path: Path, stale_after_s: float) -> bool:
    """Remove the lock at ``path`` if it is stale (or gone); True if the caller may try to create it."""
    found = read_holder(path)
    if found is None:
        return True
    holder, identity = found
    if not is_stale(holder, stale_after_s):
        return False
    breaker = path.with_name(path.name + BREAK_SUFFIX)
    if not create_exclusive(breaker, f"{os.getpid()} {this_host()}".encode()):
        try:  # another process is taking it over; its breaker is left over if that process died
            if time.time() - breaker.stat().st_mtime > BREAK_STALE_S:
                breaker.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return False
    try:
        again = read_holder(path)
        if again is None:
            return True
        if again[1] != identity:  # someone else took it over meanwhile: theirs is fresh
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        breaker.unlink(missing_ok=True)


def acquire(path: Path, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Take the lock at ``path``: its token (for ``release``), or None if another holder has it."""
    token = uuid.uuid4().hex
    content = json.dumps({"pid": os.getpid(), "host": this_host(), "time": time.time(), "token": token}).encode()
    for _ in range(2):  # once more after a stale lock was taken over
        if create_exclusive(path, content):
            return token
        if not take_over_if_stale(path, stale_after_s):
            return None
    return None


def release(path: Path, token: str) -> bool:
    """Remove the lock at ``path`` if it is still the one taken with ``token``; True if removed."""
    found = read_holder(path)
    if found is None or found[0].token != token:
        return False  # taken over as stale meanwhile: the new holder's file stays
    path.unlink(missing_ok=True)
    return True


def lock_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}{LOCK_SUFFIX}"


def acquire_all(folder: str | os.PathLike, names: Iterable[str], stale_after_s: float = STALE_AFTER_S) -> dict[str, str]:
    """Lock each of ``names`` (duplicates once) under ``folder`` (created if needed): ``{name: token}`` of
    those this process now holds, in the order given. A name held by a live claim elsewhere (another
    process, or another claim of this one) is left out. ``OSError`` if ``folder`` cannot be written
    (nothing stays locked then)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    held: dict[str, str] = {}
    try:
        for name in dict.fromkeys(names):
            token = acquire(lock_path(folder, name), stale_after_s)
            if token is not None:
                held[name] = token
    except BaseException:
        release_all(folder, held)
        raise
    return held


def release_all(folder: str | os.PathLike, held: dict[str, str]) -> None:
    """Release the locks ``acquire_all`` returned (each only if it is still this claim's)."""
    for name, token in held.items():
        release(lock_path(Path(folder), name), token)


@contextmanager
def claim(folder: str | os.PathLike, names: Iterable[str], stale_after_s: float = STALE_AFTER_S) -> Iterator[list[str]]:
    """``acquire_all`` as a context: yields the names this process holds, releases them on exit (also
    on an exception). Names must be valid file names."""
    held = acquire_all(folder, names, stale_after_s)
    try:
        yield list(held)
    finally:
        release_all(folder, held)
