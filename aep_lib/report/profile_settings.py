"""Settings of a profile itself, not of one notebook: ``params/<profile>/_profile.yaml`` (optional).

A params folder holds one ``<notebook>.yaml`` per notebook; files whose name starts with ``_`` are not
notebooks. ``_profile.yaml`` may say:

- ``model_map``: a model map file (``aep_lib.engine.model_map``), relative to the profile's folder, that
  every execution of the profile uses (``aep figures`` puts it in ``$AEP_MODEL_MAP`` for the kernels, before
  a map the user set, whose entries win);
- ``claims``: ``enforce`` (the default: an execution whose figure records a claim that does not hold fails)
  or ``record`` (such claims are recorded and shown as FAIL in the index, and the execution stays ok). A
  profile of random stand-in models (``paper-smoke``) proves code paths, not the science: ``record``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..corpora import ParamsError, excerpt, read_yaml
from ..engine.model_map import MODEL_MAP_VAR, ModelMapError, check_map_files

PROFILE_FILE = "_profile.yaml"
CLAIMS = ("enforce", "record")


@dataclass(frozen=True)
class ProfileSettings:
    model_map: Path | None = None
    claims: str = "enforce"

    @property
    def enforce_claims(self) -> bool:
        return self.claims == "enforce"

    def model_map_env(self, current: str | None = None) -> str | None:
        """What ``$AEP_MODEL_MAP`` is for the profile's executions: its map, then ``current`` (the user's)."""
        parts = [str(self.model_map)] if self.model_map else []
        parts += [current] if current else []
        return os.pathsep.join(parts) or None


def notebook_files(folder: Path) -> list[Path]:
    """The notebooks' params files of a profile folder: ``*.yaml``, not those starting with ``_``."""
    return sorted(p for p in Path(folder).glob("*.yaml") if not p.name.startswith("_"))


def profile_settings(folder: Path) -> ProfileSettings:
    """The settings of the profile in ``folder`` (defaults without ``_profile.yaml``); ``ParamsError`` in one line
    for an unknown key, a bad value, or a model map that is missing or has a bad entry."""
    path = Path(folder) / PROFILE_FILE
    if not path.is_file():
        return ProfileSettings()
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: give a mapping with model_map and/or claims")
    unknown = sorted(set(data) - {"model_map", "claims"})
    if unknown:
        raise ParamsError(f"{path}: unknown key(s) {excerpt(unknown)}; known: model_map, claims")
    claims = data.get("claims", "enforce")
    if claims not in CLAIMS:
        raise ParamsError(f"{path}: key 'claims': use one of {', '.join(CLAIMS)} (got {excerpt(claims)})")
    model_map = None
    if data.get("model_map"):
        model_map = (path.parent / str(data["model_map"])).resolve()
        try:
            check_map_files(str(model_map))
        except ModelMapError as err:
            raise ParamsError(f"{path}: {err}") from None
    return ProfileSettings(model_map, claims)


def execution_env(settings: ProfileSettings) -> dict:
    """The environment an execution of the profile adds: ``$AEP_MODEL_MAP`` when the profile has a map."""
    value = settings.model_map_env(os.environ.get(MODEL_MAP_VAR))
    return {MODEL_MAP_VAR: value} if value else {}
