"""Validated parameters, shared by notebooks, params files and the CLI.

Every name is defined once, in ``vocabulary.VOCABULARY`` (type, bounds, meaning). A notebook takes the names
of its ``parameters`` cell, with the cell's values as defaults (``NOTEBOOK_SCHEMAS[name]``); its cross-field
rules and its few narrower limits are in ``notebooks.NOTEBOOK_RULES``. A params file
(``params/<profile>/<notebook>.yaml``) holds flat scalars of those names; lists are comma-separated strings
(``models: "smollm2-135m,gemma-3-270m"``) so that papermill can inject them as scalars. Keys several
notebooks must share (``notebooks.SHARED_GRIDS``) live once per profile in
``params/<profile>/shared/<grid>.yaml``, merged under each member's own file, which must not repeat them.
Everything is checked before any model loads: an unknown key, a wrong type or an impossible value raises
``ParamsError`` naming the key and the file. Prompts are referred to by id; their texts live in
``params/prompts.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from ..corpora import ParamsError, excerpt, read_yaml
from .notebooks import SHARED_GRIDS, SharedGrid, shared_grids_of
from .schemas import NOTEBOOK_SCHEMAS, Grid, NotebookParams, notebook_schema, validate
from .vocabulary import VOCABULARY, CommaList, DType, PromptIds

__all__ = ["NOTEBOOK_SCHEMAS", "SHARED_GRIDS", "VOCABULARY", "CommaList", "DType", "Grid", "NotebookParams",
           "ParamsError", "PromptIds", "RUNS_KEY", "SharedGrid", "load_grid", "load_params_file", "notebook_params",
           "read_params_file", "read_yaml", "shared_file", "validate"]

SHARED_FOLDER = "shared"
RUNS_KEY = "_runs"


def shared_file(params_file: str | Path, grid: SharedGrid) -> Path:
    """Where the profile of ``params_file`` keeps ``grid``: ``<its folder>/shared/<grid>.yaml``."""
    return Path(params_file).parent / SHARED_FOLDER / f"{grid.name}.yaml"


def read_params_file(path: str | Path, notebook: str | None = None) -> dict:
    """The values of a params file as the notebook receives them: the shared grids of ``notebook`` (default:
    the file's stem) that its profile holds (``shared_file``), then the file's own keys (``_runs`` included).

    ``ParamsError`` when a shared file lacks one of its grid's keys or holds another, or when the notebook's
    own file (or one of its ``_runs`` entries) repeats a key of a shared grid.
    """
    path = Path(path)
    own = read_yaml(path)
    merged = {}
    for grid in shared_grids_of(notebook or path.stem):
        shared = shared_file(path, grid)
        if not shared.is_file():
            continue
        values = read_yaml(shared)
        unknown, missing = sorted(set(values) - set(grid.keys)), sorted(set(grid.keys) - set(values))
        if unknown or missing:
            raise ParamsError(f"{shared}: the {grid.name} keys are {', '.join(grid.keys)}"
                              + (f"; unknown key(s) {excerpt(unknown)}" if unknown else "")
                              + (f"; missing key(s) {missing}" if missing else ""))
        runs = own.get(RUNS_KEY) if isinstance(own.get(RUNS_KEY), list) else []
        entries = [(str(path), own)] + [(f"{path} ({RUNS_KEY} entry {i + 1})", run)
                                        for i, run in enumerate(runs) if isinstance(run, dict)]
        for where, keys in entries:
            repeated = sorted(set(keys) & set(grid.keys))
            if repeated:
                raise ParamsError(f"{where}: key(s) {repeated} belong to the shared {grid.name} ({shared}): "
                                  "give them there only")
        merged.update(values)
    return merged | own


def load_params_file(path: str | Path, notebook: str | None = None):
    """Validate ``params/<profile>/<notebook>.yaml`` (its shared grids merged under it) against its notebook."""
    path = Path(path)
    notebook = notebook or path.stem
    if notebook not in NOTEBOOK_SCHEMAS:
        raise ParamsError(f"{path}: no notebook named {notebook!r}; known: {', '.join(sorted(NOTEBOOK_SCHEMAS))}")
    return validate(NOTEBOOK_SCHEMAS[notebook], read_params_file(path, notebook), where=str(path))


def notebook_params(notebook: str, namespace: dict):
    """Validate a notebook's parameters from its namespace (call it right after the parameters cell)."""
    schema = notebook_schema(notebook)
    values = {k: namespace[k] for k in schema.model_fields if k in namespace}
    return validate(schema, values, where=f"notebook {notebook} parameters")


def load_grid(path: str | Path) -> Grid:
    """A grid file for ``aep run`` (the keys of ``Grid``)."""
    return validate(Grid, read_yaml(path), where=str(path))
