"""Validators built from the vocabulary: one pydantic model per notebook (``NOTEBOOK_SCHEMAS[name]``: the names
and defaults of its ``parameters`` cell, the types and bounds of ``VOCABULARY``, the rules and limits of
``NOTEBOOK_RULES``), the ``aep run`` ``Grid``, and ``validate`` with one-line errors (``ParamsError``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Iterator, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, create_model, model_validator

from .. import paths
from ..core.sampling import Sampling, Strict, Variant
from ..corpora import ParamsError, excerpt
from .cells import notebook_names, parameters_cell
from .notebooks import GRID_DEFAULTS, GRID_RULES, NOTEBOOK_RULES, Rules
from .vocabulary import VOCABULARY


class Params(Strict):
    """Validated parameters (frozen; unknown keys refused; defaults validated like given values), with the
    values derived from them that the notebooks and the library read."""

    model_config = ConfigDict(validate_default=True)

    @property
    def seeds(self) -> list[int]:
        """``seed_offset .. seed_offset + n_seeds - 1`` (``seed_offset`` 0 where a notebook has none)."""
        first = getattr(self, "seed_offset", 0)
        return list(range(first, first + self.n_seeds))


class NotebookParams(Params):
    """A notebook's parameters (``notebook_params``)."""

    def pair(self) -> tuple[Variant, Variant]:
        """``(source, scorer)`` as variants, each with ``on_eos``."""
        return Variant.parse(self.source, self.on_eos), Variant.parse(self.scorer, self.on_eos)

    @property
    def shown_model(self) -> str:
        """``model``, or the first of ``models`` when it is empty."""
        return self.model or self.models[0]

    @property
    def samplings(self) -> dict[str, Sampling]:
        """Setting spec -> its ``Sampling`` (end-of-text suppressed: every run reaches its length)."""
        return {spec: Variant.parse(f"m@{spec}").sampling for spec in self.settings}

    @property
    def rate_tokens(self) -> int:
        """Positions over which every entropy rate and log-perplexity is measured: ``window_tokens x n_windows``."""
        return self.window_tokens * self.n_windows

    @property
    def filler_chars(self) -> int:
        """Characters of the filler classic to read: enough for the longest filler (under 8 characters a token)."""
        return max(20_000, 8 * max(self.filler_tokens))


class GridBase(Params):
    """Models × prompts × seeds × warps × lengths (the keys of an ``aep run`` grid file).

    One sampling setting and length by default (``temperature``, ``top_k``, ``top_p``, ``on_eos``,
    ``max_new_tokens``); ``warps`` (a list of mappings with those sampling keys) and ``lengths``
    (a list of ints, or "256,1024") replace them with several.
    """

    @property
    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, on_eos=self.on_eos)

    @property
    def samplings(self) -> list[Sampling]:
        """The warps of the grid (``warps``, or the one setting of the scalar keys)."""
        return list(dict.fromkeys(self.warps)) if self.warps else [self.sampling]

    @property
    def all_lengths(self) -> list[int]:
        """The lengths of the grid (``lengths``, or ``[max_new_tokens]``)."""
        return list(dict.fromkeys(self.lengths)) if self.lengths else [self.max_new_tokens]


def build_schema(name: str, defaults: dict, rules: Rules = Rules(), base: type[Params] = NotebookParams,
                 where: str = "") -> type[Params]:
    """A pydantic model named ``name`` with one field per key of ``defaults`` (``...``: required; ``None``:
    optional), typed by ``VOCABULARY`` and narrowed by ``rules.limits``; ``rules.checks`` run after the fields."""
    unknown = sorted(set(defaults) - set(VOCABULARY))
    if unknown:
        raise ParamsError(f"{where or name}: parameter(s) {excerpt(unknown)} are not in the vocabulary "
                          "(aep_lib.params.vocabulary.VOCABULARY): define each name there once")
    fields = {}
    for key, default in defaults.items():
        annotation = VOCABULARY[key].annotation
        if key in rules.limits:
            annotation = Annotated[annotation, rules.limits[key]]
        fields[key] = (Optional[annotation] if default is None else annotation, default)
    checks = {f"check_{i}_{fn.__name__}": model_validator(mode="after")(fn) for i, fn in enumerate(rules.checks)}
    return create_model(name, __base__=base, __validators__=checks, **fields)


Grid = build_schema("Grid", GRID_DEFAULTS, GRID_RULES, GridBase)


@functools.lru_cache(maxsize=128)
def _notebook_schema(name: str, notebooks_dir: Path, cell: tuple) -> type[NotebookParams]:
    return build_schema(name, dict(cell), NOTEBOOK_RULES.get(name, Rules()), where=str(notebooks_dir / name))


def notebook_schema(name: str, notebooks_dir: Path | None = None) -> type[NotebookParams]:
    """The validator of notebook ``name``: the names and defaults of its parameters cell (built once per cell)."""
    folder = Path(notebooks_dir or paths.notebooks_dir())
    return _notebook_schema(name, folder, tuple(parameters_cell(name, folder).items()))


class NotebookSchemas(Mapping):
    """Notebook name -> its validator (``notebook_schema``), for every notebook of the project, built on use."""

    def __iter__(self) -> Iterator[str]:
        return iter(notebook_names())

    def __len__(self) -> int:
        return len(notebook_names())

    def __contains__(self, name) -> bool:
        return name in notebook_names()

    def __getitem__(self, name: str) -> type[NotebookParams]:
        if name not in self:
            raise KeyError(name)
        return notebook_schema(name)


NOTEBOOK_SCHEMAS = NotebookSchemas()


def _format_error(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(file)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key {key!r}")
        else:
            got = e.get("input")
            got = "" if isinstance(got, dict) else f" (got {excerpt(got)})"
            lines.append(f"{where}: key {key!r}: {e['msg']}{got}")
    return "; ".join(lines)


def validate(schema: type[BaseModel], values: dict, where: str = "parameters"):
    """``schema`` validated on ``values``, or a ``ParamsError``: one line per problem, each naming the key and
    ``where`` (the file)."""
    try:
        return schema.model_validate(values)
    except ValidationError as err:
        raise ParamsError(_format_error(err, where)) from None
