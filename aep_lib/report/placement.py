"""Where a figure goes, decided by the parameters of the execution that draws it.

One rule for ``aep figures``, papermill, nbval and JupyterLab:

- the profile is the notebook's ``profile`` parameter (the validated parameters ``P`` that
  ``aep_lib.params.notebook_params`` returned, found in the calling notebook's namespace);
- the parameters are *the profile's* when they equal the values of ``params/<profile>/<notebook>.yaml``
  with its shared grids merged under it (``aep_lib.params.read_params_file``), or those of one of its
  ``_runs`` entries, both validated by the notebook's schema;
- the profile's figures go to ``outputs/<profile>/figures/``; every other execution (the notebook's
  defaults, parameters edited in JupyterLab, ``papermill -p``, ``aep figures -p``) goes to
  ``outputs/<profile>/scratch/figures/`` and never replaces a figure of the profile;
- the runs go to the profile's store either way (``outputs/<profile>/store``: a run is stored under
  an id made of its parameters, never replaced).

``aep figures`` runs the notebooks with ``AEP_PARAMS_FILE`` (the params file compared with) and, for
``--dtype``, ``AEP_PARAMS_OVERRIDES`` (a JSON mapping of values that the variant imposes over the file,
which its own output root keeps apart).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..params import RUNS_KEY, NotebookParams, ParamsError, read_params_file

SCRATCH = "scratch"
PARAMS_FILE_VAR = "AEP_PARAMS_FILE"
OVERRIDES_VAR = "AEP_PARAMS_OVERRIDES"


@dataclass(frozen=True)
class Placement:
    """Where one execution's figures go and why."""

    profile: str
    notebook: str | None
    params: dict  # the execution's parameter values, as JSON values
    params_file: str | None  # the profile's params file they were compared with (None: none found)
    matches_profile: bool
    differences: dict = field(default_factory=dict)  # key -> [this execution's value, the profile's]
    reason: str = ""  # why they are not the profile's, one phrase ("" when they are)

    @property
    def folder(self) -> str:
        """The figures folder relative to ``outputs/<profile>/``: ``figures`` or ``scratch/figures``."""
        return "figures" if self.matches_profile else f"{SCRATCH}/figures"

    def figures_dir(self) -> Path:
        return paths.output_dir(self.profile) / self.folder

    def store_dir(self) -> Path:
        return paths.store_dir(self.profile)

    def describe(self) -> str:
        """``the cpu profile's parameters`` or ``not the cpu profile's parameters: n_seeds 1 (profile 4)``."""
        if self.matches_profile:
            return f"the {self.profile} profile's parameters ({self.params_file})"
        return f"not the {self.profile} profile's parameters: {self.reason}"


def find_params(depth: int = 2) -> NotebookParams | None:
    """The validated parameters of the notebook that called (``P = notebook_params(...)``): the first
    ``NotebookParams`` in the globals of the calling frames, innermost first (``P`` preferred)."""
    frame = inspect.currentframe()
    for _ in range(depth):
        frame = frame.f_back if frame is not None else None
    while frame is not None:
        namespace = frame.f_globals
        if isinstance(namespace.get("P"), NotebookParams):
            return namespace["P"]
        found = [v for v in list(namespace.values()) if isinstance(v, NotebookParams)]
        if found:
            return found[0]
        frame = frame.f_back
    return None


def caller_namespace(depth: int = 2) -> dict:
    """The globals of the frame ``depth`` calls up (a notebook's namespace when a notebook cell called)."""
    frame = inspect.currentframe()
    for _ in range(depth):
        frame = frame.f_back if frame is not None else None
    return frame.f_globals if frame is not None else {}


def _params_file_from_env() -> Path | None:
    value = os.environ.get(PARAMS_FILE_VAR)
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else paths.project_root() / path


def _overrides() -> dict:
    try:
        value = json.loads(os.environ.get(OVERRIDES_VAR) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def profile_entries(path: Path, notebook: str | None = None) -> list[dict]:
    """The value sets a params file asks for: the file's values once, or one per ``_runs`` entry (shared
    grids merged under them), each with ``profile`` defaulting to the file's folder name."""
    data = read_params_file(path, notebook)
    runs = data.pop(RUNS_KEY, None)
    entries = [{**data, **run} for run in runs if isinstance(run, dict)] if isinstance(runs, list) else [data]
    return [{"profile": Path(path).parent.name, **entry} for entry in entries]


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(paths.project_root()))
    except ValueError:
        return str(path)


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _short(value, limit: int = 40) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def place(params: NotebookParams | None = None, namespace: dict | None = None) -> Placement:
    """Where the figures of the execution with ``params`` go (``Placement``).

    ``params``: the notebook's validated parameters (default: ``find_params()``). Without them (a
    notebook without a schema, a script) the profile is ``namespace["profile"]`` (default cpu), and the
    values compared are those of ``namespace`` under the params file's keys (``$AEP_PARAMS_FILE``).
    """
    params = params if params is not None else find_params(2)
    namespace = namespace if namespace is not None else caller_namespace(2)
    if params is not None:
        notebook = type(params).__name__
        values = _jsonable(params.model_dump(mode="json"))
        profile = str(values.get("profile") or namespace.get("profile") or "cpu")
    else:
        notebook = None
        profile = namespace.get("profile") if isinstance(namespace.get("profile"), str) else "cpu"
        values = {}
    paths.check_profile_name(profile)
    path = _params_file_from_env()
    if path is None and notebook:
        path = paths.params_dir() / profile / f"{notebook}.yaml"
    if path is None or not path.is_file():
        reason = (f"no params file {_rel(path)}" if path is not None else
                  "no notebook parameters found (an execution without `P = notebook_params(...)`)")
        return Placement(profile, notebook, values, None, False, {}, reason)
    try:
        entries = profile_entries(path, notebook)
        overrides = _overrides()
        entries = [{**e, **{k: v for k, v in overrides.items() if params is None or k in type(params).model_fields}}
                   for e in entries]
        if params is not None:
            expected = [_jsonable(type(params).model_validate(e).model_dump(mode="json")) for e in entries]
        else:
            expected = [_jsonable(e) for e in entries]
            values = {k: _jsonable(namespace[k]) for e in entries for k in e if k in namespace}
    except (ParamsError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Placement(profile, notebook, values, _rel(path), False, {}, f"{_rel(path)} does not validate: {first}")
    best: dict | None = None
    for entry in expected:
        diff = {k: [values.get(k), v] for k, v in entry.items() if values.get(k) != v}
        if not diff:
            return Placement(profile, notebook, values, _rel(path), True)
        if best is None or len(diff) < len(best):
            best = diff
    reason = ", ".join(f"{k} {_short(mine)} (profile {_short(theirs)})" for k, (mine, theirs) in best.items())
    return Placement(profile, notebook, values, _rel(path), False, best, reason)


# ---------------------------------------------------------------------------------------------------
# the line that says where a figure went


def under_pipeline() -> bool:
    """Whether ``aep figures`` runs this execution (it reports every execution itself)."""
    return bool(os.environ.get("AEP_EXECUTION"))


def in_jupyter_session() -> bool:
    """Whether a Jupyter server (JupyterLab) started this kernel for a notebook it shows."""
    return bool(os.environ.get("JPY_SESSION_NAME"))


def tell(line: str) -> None:
    """Write ``line`` where the person who started the execution reads it: the notebook in JupyterLab;
    the terminal of ``papermill``/``jupyter nbconvert``/nbval otherwise, never the notebook's outputs
    (which nbval compares with the committed ones). ipykernel (6+) captures the kernel's file descriptor
    2 into the notebook; the terminal's is the copy it keeps (``_original_stdstream_copy``)."""
    if in_jupyter_session():
        print(line, flush=True)
        return
    stream = sys.stderr
    if type(stream).__module__.startswith("ipykernel"):
        fd = getattr(stream, "_original_stdstream_copy", None) if getattr(stream, "_should_watch", False) else 2
        if isinstance(fd, int):
            try:
                os.write(fd, (line + "\n").encode("utf-8", "replace"))
                return
            except OSError:
                pass
    print(line, file=sys.__stderr__ if stream is None else stream, flush=True)
