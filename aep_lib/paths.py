"""Where things live. Every path the library uses comes from here.

- project root: the folder holding ``pyproject.toml`` above this package (for ``params/``, ``notebooks/``);
- output dir: ``$AEP_OUTPUT_DIR`` or ``<root>/outputs`` (executed notebooks, figures, the run store);
- cache dir: ``$AEP_CACHE_DIR`` or ``~/.cache/aep`` (de-quantized embedded models);
- data dir: ``$AEP_DATA_DIR`` or, as a convenience for this repository's CI, ``<root>/../shared`` when it
  exists (corpora and benchmark texts; point it at your own copies).
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
    """The folder holding ``corpora/`` and ``benchmarks/`` (``$AEP_DATA_DIR``)."""
    env = os.environ.get(DATA_DIR_VAR)
    if env:
        return Path(env)
    fallback = PROJECT_ROOT.parent / "shared"
    if fallback.is_dir():
        return fallback
    raise DataNotFoundError(
        f"no data directory: set {DATA_DIR_VAR} to the folder that holds corpora/ and benchmarks/"
    )


def data_file(relative: str) -> Path:
    """A file under the data directory, with an error naming the variable when it is missing."""
    path = data_dir() / relative
    if not path.exists():
        raise DataNotFoundError(
            f"{relative} not found in the data directory {data_dir()} "
            f"(set {DATA_DIR_VAR} to the folder that holds corpora/ and benchmarks/)"
        )
    return path
