"""Where things live. Every path the library uses comes from here.

- project root: the folder holding ``pyproject.toml`` above this package (for ``params/``, ``notebooks/``);
- output dir: ``$AEP_OUTPUT_DIR`` or ``<root>/outputs`` (executed notebooks, figures, the run store);
- cache dir: ``$AEP_CACHE_DIR`` or ``~/.cache/aep`` (de-quantized embedded models);
- data dir: ``$AEP_DATA_DIR`` or ``<root>/data``, the project's own copy of the corpora and benchmark
  texts (``corpora/``, ``benchmarks/``, each with a ``MANIFEST.md``; ``aep_lib.corpora`` reads and verifies them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_VAR = "AEP_DATA_DIR"


class DataNotFoundError(FileNotFoundError):
    """A corpus or benchmark file is missing from the data directory."""


def project_root() -> Path:
    return PROJECT_ROOT


def params_dir() -> Path:
    return PROJECT_ROOT / "params"


def notebooks_dir() -> Path:
    return PROJECT_ROOT / "notebooks"


_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_profile_name(profile: str) -> str:
    """``profile`` if it is a plain folder name (letters, digits, ``.``, ``_``, ``-``; not ``.``/``..``),
    else ``ValueError`` naming it: a profile must never lead outside the output directory."""
    if not _PROFILE_NAME.fullmatch(str(profile)) or profile in (".", ".."):
        raise ValueError(f"profile {profile!r} is not a plain name (letters, digits, '.', '_', '-'; no '/' or '..')")
    return profile


def output_dir(profile: str | None = None) -> Path:
    """``outputs/`` (or ``$AEP_OUTPUT_DIR``), or its ``<profile>/`` subfolder (a plain name, checked)."""
    base = Path(os.environ.get("AEP_OUTPUT_DIR") or PROJECT_ROOT / "outputs")
    return base / check_profile_name(profile) if profile else base


def store_dir(profile: str) -> Path:
    """The run store of one profile: ``outputs/<profile>/store``."""
    return output_dir(profile) / "store"


def cache_dir() -> Path:
    return Path(os.environ.get("AEP_CACHE_DIR") or Path.home() / ".cache" / "aep")


def data_dir() -> Path:
    """The folder holding ``corpora/`` and ``benchmarks/``: ``$AEP_DATA_DIR`` when set (non-empty), else the
    project's own ``<root>/data``. Nothing outside the project is consulted."""
    env = os.environ.get(DATA_DIR_VAR)
    return Path(env).expanduser().absolute() if env else PROJECT_ROOT / "data"


def check_data_relative(relative: str) -> str:
    """``relative`` if it is a relative path that stays inside the data directory (no ``..``), else
    ``DataNotFoundError`` naming it."""
    if not str(relative) or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise DataNotFoundError(f"{relative!r} is not a relative path inside the data directory {data_dir()}")
    return relative


def data_file(relative: str, expected_sha256: str | None = None) -> Path:
    """``data_dir() / relative`` if it is a file, else ``DataNotFoundError``: one line naming the file, the
    data directory and where it came from (``$AEP_DATA_DIR`` or the project's ``data/``), and
    ``expected_sha256`` (hex) when the caller knows it. ``relative`` must stay inside the data directory."""
    folder = data_dir()
    path = folder / check_data_relative(relative)
    if path.is_file():
        return path
    checksum = f" (expected sha256 {expected_sha256})" if expected_sha256 else ""
    if os.environ.get(DATA_DIR_VAR):
        missing = "" if folder.is_dir() else " (no such folder)"
        raise DataNotFoundError(f"{relative}{checksum} not found in {DATA_DIR_VAR}={folder}{missing}: "
                                f"copy it there, or unset {DATA_DIR_VAR} to read the project's data/")
    raise DataNotFoundError(f"{relative}{checksum} not found in the project's data directory {folder} "
                            f"({DATA_DIR_VAR} is not set): restore it from the repository, or set "
                            f"{DATA_DIR_VAR} to a folder holding corpora/ and benchmarks/")
