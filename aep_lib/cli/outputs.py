"""Writing the files a command is asked for (``--out``, ``--html``, ...): checked before the work, written
whole or not at all.

- ``check_output(path, option)``, before any model loads: a path that is a folder or another non-regular
  file, or under a file, or whose nearest existing folder cannot be written, fails;
- ``write_output(path, option, write)``: missing folders are created, ``write`` fills a temporary file
  beside ``path`` which then replaces ``path`` in one rename; an ``OSError`` on the way (a full disk, a
  read-only folder) fails in one line naming the option, the file and the reason. The temporary file and
  the folders made for it are removed: nothing partial is left, an earlier file of that name stays as it was.

Each failure goes through ``fail``: ``error: <what is wrong>`` on stderr, exit code 2.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

from .app import fail


def nearest_existing(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (the current folder for a relative path)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_output(path: Path, option: str) -> None:
    """Fail unless ``path`` can become a regular file: not a folder, device or other non-regular file, its
    nearest existing ancestor a folder that this process may write into."""
    label = f"{option} {path}"
    try:
        if os.path.lexists(path) and not (path.is_file() or path.is_symlink()):
            fail(f"{label}: {'is a folder' if path.is_dir() else 'not a regular file'}; give a file name")
        folder = nearest_existing(path.parent)
        if not folder.is_dir():
            fail(f"{label}: {folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            fail(f"{label}: the folder {folder} is not writable")
        longest = os.pathconf(folder, "PC_NAME_MAX")
        if len(os.fsencode(path.name)) > longest:
            fail(f"{label}: the file name is longer than the {longest} bytes a name may have here")
    except (OSError, ValueError) as err:  # a name too long, an embedded NUL
        fail(f"{label}: not a usable file name ({getattr(err, 'strerror', None) or err})")


def write_output(path: Path, option: str, write: Callable[[Path], None]) -> None:
    """``write(temporary path)`` then a rename onto ``path`` (its missing folders created first); any
    ``OSError`` fails in one line. On any failure, Ctrl-C included, the temporary file and the folders
    created for it are removed and ``path`` is untouched."""
    check_output(path, option)
    created = [folder for folder in (path.parent, *path.parent.parents) if not os.path.lexists(folder)]
    tmp = path.parent / f".{path.stem[:32]}.{uuid.uuid4().hex[:12]}.tmp{path.suffix[:16]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        for leftover in (tmp, *created):  # the file, then the folders made for it, deepest first
            try:
                leftover.rmdir() if leftover != tmp else leftover.unlink(missing_ok=True)
            except OSError:
                pass
        if isinstance(err, OSError):
            fail(f"{option} {path}: cannot be written: {err.strerror or err}")
        raise
