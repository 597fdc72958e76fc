"""Validated parameters, shared by notebooks, params files and the CLI.

A params file (``params/<profile>/<notebook>.yaml``) holds flat scalars, the same names as the
notebook's ``parameters`` cell. Lists are written as comma-separated strings (``models:
"smollm2-135m,gemma-3-270m"``) so that papermill can inject them as scalars. Everything is checked
before any model loads: an unknown key, a wrong type or an impossible value raises ``ParamsError``
naming the key and the file.

Prompts are referred to by id; their texts live in ``params/prompts.yaml``.

This module is the entry point: the types and ``validate`` (``param_types``), the schemas of every notebook
(``figure_params``, ``phenomena_params``: importing this module registers them all), and the loaders.
"""

from __future__ import annotations

from pathlib import Path

from . import figure_schemas, phenomena_schemas  # noqa: F401  (their schemas register themselves)
from ..corpora import ParamsError, read_yaml
from .figure_schemas import SelfGridParams
from .types import NOTEBOOK_SCHEMAS, CommaList, DType, Grid, PromptIds, validate

__all__ = ["NOTEBOOK_SCHEMAS", "CommaList", "DType", "Grid", "ParamsError", "PromptIds", "SelfGridParams",
           "load_grid", "load_params_file", "notebook_params", "read_yaml", "validate"]


def load_params_file(path: str | Path, notebook: str | None = None):
    """Validate ``params/<profile>/<notebook>.yaml`` against its notebook's schema."""
    path = Path(path)
    notebook = notebook or path.stem
    if notebook not in NOTEBOOK_SCHEMAS:
        raise ParamsError(f"{path}: no notebook named {notebook!r}; known: {', '.join(sorted(NOTEBOOK_SCHEMAS))}")
    return validate(NOTEBOOK_SCHEMAS[notebook], read_yaml(path), where=str(path))


def notebook_params(notebook: str, namespace: dict):
    """Validate a notebook's parameters from its namespace (call it right after the parameters cell)."""
    schema = NOTEBOOK_SCHEMAS[notebook]
    values = {k: namespace[k] for k in schema.model_fields if k in namespace}
    return validate(schema, values, where=f"notebook {notebook} parameters")


def load_grid(path: str | Path) -> Grid:
    """A grid file for ``aep run`` (the keys of ``Grid``)."""
    return validate(Grid, read_yaml(path), where=str(path))
