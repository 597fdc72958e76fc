"""Validated parameters, shared by notebooks, params files and the CLI.

A params file (``params/<profile>/<notebook>.yaml``) holds flat scalars, the same names as the
notebook's ``parameters`` cell. Lists are written as comma-separated strings (``models:
"smollm2-135m,gemma-3-270m"``) so that papermill can inject them as scalars. Everything is checked
before any model loads: an unknown key, a wrong type or an impossible value raises ``ParamsError``
naming the key and the file.

Prompts are referred to by id; their texts live in ``params/prompts.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .paths import params_dir


class ParamsError(ValueError):
    """Invalid parameters; the message names the key and where it came from."""


def _split(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    raise TypeError(f"expected a comma-separated string or a list, got {type(value).__name__}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Sampling(Strict):
    """The decoding warps that turn the raw ``p`` into the sampling distribution ``q``.

    Applied in transformers' order: temperature, then top-k, then top-p. ``temperature=0`` means
    greedy; ``top_k=0`` and ``top_p=1`` mean no truncation. ``on_eos``: ``suppress`` forbids the
    end-of-text token (a warp, part of ``q``) so that runs reach their length; ``stop`` ends the
    run at EOS; ``continue`` samples through it.
    """

    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    on_eos: Literal["suppress", "stop", "continue"] = "suppress"

    @property
    def label(self) -> str:
        return f"t{self.temperature:g}_k{self.top_k}_p{self.top_p:g}_eos-{self.on_eos}"

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def as_dict(self) -> dict:
        return {"temperature": float(self.temperature), "top_k": int(self.top_k), "top_p": float(self.top_p),
                "on_eos": self.on_eos}


class Grid(Strict):
    """Models × prompts × seeds at one sampling setting and length."""

    models: list[str] = Field(min_length=1)
    prompts: list[str] = Field(min_length=1)
    n_seeds: int = Field(1, ge=1, le=100_000)
    seed_offset: int = Field(0, ge=0)
    max_new_tokens: int = Field(256, ge=1, le=1_000_000)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    on_eos: Literal["suppress", "stop", "continue"] = "suppress"
    batch_size: int = Field(8, ge=1, le=4096)
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @field_validator("models", "prompts", mode="before")
    @classmethod
    def _comma_list(cls, v):
        return _split(v)

    @model_validator(mode="after")
    def _check_prompts(self):
        known = load_prompts()
        unknown = [p for p in self.prompts if p not in known]
        if unknown:
            raise ValueError(f"prompts: unknown prompt id(s) {unknown}; known: {', '.join(known)}")
        return self

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.n_seeds))

    @property
    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, on_eos=self.on_eos)


# --- per-notebook schemas: the fields are exactly the names of the notebook's parameters cell ------

NOTEBOOK_SCHEMAS: dict[str, type[BaseModel]] = {}


def notebook_schema(name: str):
    def register(cls):
        NOTEBOOK_SCHEMAS[name] = cls
        return cls

    return register


class NotebookParams(Strict):
    profile: str = "cpu"


@notebook_schema("00_smoke")
class SmokeParams(NotebookParams):
    models: list[str] = Field(min_length=1)
    prompt: str = "p01"
    max_new_tokens: int = Field(12, ge=1, le=512)

    @field_validator("models", mode="before")
    @classmethod
    def _comma_list(cls, v):
        return _split(v)


# --- loading ---------------------------------------------------------------------------------------


def _format_error(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(file)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key {key!r}")
        else:
            got = e.get("input")
            got = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{where}: key {key!r}: {e['msg']}{got}")
    return "; ".join(lines)


def validate(schema: type[BaseModel], values: dict, where: str = "parameters"):
    try:
        return schema.model_validate(values)
    except ValidationError as err:
        raise ParamsError(_format_error(err, where)) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


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


def load_prompts(path: str | Path | None = None) -> dict[str, str]:
    """Prompt id -> text from ``params/prompts.yaml``."""
    path = Path(path) if path else params_dir() / "prompts.yaml"
    data = read_yaml(path)
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v]
    if bad:
        raise ParamsError(f"{path}: prompt(s) {bad} must be non-empty strings")
    return {str(k): v for k, v in data.items()}


def prompt_text(prompt_id: str) -> str:
    prompts = load_prompts()
    if prompt_id not in prompts:
        raise ParamsError(f"unknown prompt id {prompt_id!r}; known: {', '.join(prompts)}")
    return prompts[prompt_id]
