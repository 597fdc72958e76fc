"""Where a result came from: the project's git commit and the versions of the packages that made it.

- ``run_provenance()``: recorded with every stored run (git SHA, versions of torch, transformers,
  numpy, pandas, this package and Python), computed once per process;
- ``git_sha()`` / ``package_versions()``: recorded with every saved figure (with ``+dirty`` when the
  working tree has uncommitted changes).
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata

from ..paths import project_root

FIGURE_PACKAGES = ("torch", "transformers")  # versions shown beside every figure
RUN_PACKAGES = ("torch", "transformers", "numpy", "pandas", "aep-lib")  # versions stored with every run


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601 (``started_at`` of runs, ``time`` of figures)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, check=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_sha(mark_dirty: bool = True) -> str:
    """``git rev-parse HEAD`` of the project (with ``+dirty`` for uncommitted changes), or "unknown"."""
    sha = _git("rev-parse", "HEAD")
    if not sha:
        return "unknown"
    if mark_dirty:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        if dirty is None:
            return "unknown"
        return sha + ("+dirty" if dirty else "")
    return sha


def package_versions(names=FIGURE_PACKAGES, missing: str | None = "not installed") -> dict[str, str | None]:
    """Installed version of each package (``missing`` for one that is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = missing
    return out


@functools.lru_cache(maxsize=1)
def run_provenance() -> dict:
    """Git SHA and package versions, recorded with every run (``git_sha``, ``versions_json``)."""
    versions = package_versions(RUN_PACKAGES, missing=None)
    versions["python"] = platform.python_version()
    return {"git_sha": git_sha(mark_dirty=False), "versions_json": json.dumps(versions, sort_keys=True)}
