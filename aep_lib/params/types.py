"""The parts every parameter schema is made of: the annotated types (comma lists, prompt ids, variant specs,
dtype, ...), the generation ``Grid``, the registry of notebook schemas (``NOTEBOOK_SCHEMAS``, filled by
``figure_params`` and ``phenomena_params``) and ``validate`` with one-line errors (``ParamsError``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..corpora import ParamsError, load_prompts
from ..core.sampling import Sampling, Strict, Variant


def split_commas(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    raise TypeError(f"expected a comma-separated string or a list, got {type(value).__name__}")


def _known_prompt_ids(ids: list[str]) -> list[str]:
    known = load_prompts()
    unknown = [p for p in ids if p not in known]
    if unknown:
        raise ValueError(f"unknown prompt id(s) {unknown}; known: {', '.join(known)}")
    return ids


def check_variant_specs(specs: list[str]) -> list[str]:
    return [Variant.parse(spec) and spec.strip() for spec in specs]  # ValueError with the expected syntax


def whole_windows(params):
    """``window_tokens`` must fit in ``max_new_tokens``: the self-generated baseline needs whole windows."""
    if params.window_tokens > params.max_new_tokens:
        raise ValueError(f"window_tokens ({params.window_tokens}) must be at most max_new_tokens "
                         f"({params.max_new_tokens}): the self-generated baseline needs whole windows")
    return params


def check_setting_specs(specs: list[str]) -> list[str]:
    """Decoding settings as a variant writes them after ``@`` (t<temperature>, k<top_k>, p<top_p>, combined:
    t0.7p0.9); ValueError with the expected syntax."""
    for spec in specs:
        Variant.parse(f"m@{spec}")
    return specs


# The types every schema shares. Lists come as comma-separated strings (papermill injects scalars).
CommaList = Annotated[list[str], BeforeValidator(split_commas), Field(min_length=1)]
PromptIds = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(_known_prompt_ids), Field(min_length=1)]
VariantSpecs = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(check_variant_specs)]
SettingSpecs = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(check_setting_specs),
                        Field(min_length=1)]
DType = Literal["auto", "float32", "bfloat16", "float16"]  # auto: float32 on CPU, bfloat16 on CUDA
OnEos = Literal["suppress", "stop", "continue"]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
NSeeds = Annotated[int, Field(ge=1, le=100_000)]


class Grid(Strict):
    """Models × prompts × seeds × warps × lengths.

    One sampling setting and length by default (``temperature``, ``top_k``, ``top_p``, ``on_eos``,
    ``max_new_tokens``); ``warps`` (a list of mappings with those sampling keys) and ``lengths``
    (a list of ints, or "256,1024") replace them with several.
    """

    models: CommaList
    prompts: PromptIds
    n_seeds: NSeeds = 1
    seed_offset: int = Field(0, ge=0)
    max_new_tokens: int = Field(256, ge=1, le=1_000_000)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    on_eos: OnEos = "suppress"
    batch_size: BatchSize = 8
    device: str = "auto"
    dtype: DType = "auto"
    warps: list[Sampling] | None = Field(None, min_length=1)
    lengths: list[int] | None = Field(None, min_length=1)

    @field_validator("lengths", mode="before")
    @classmethod
    def _comma_ints(cls, v):
        return split_commas(v) if isinstance(v, str) else v

    @field_validator("lengths")
    @classmethod
    def _positive_lengths(cls, v):
        if v is not None and any(n < 1 or n > 1_000_000 for n in v):
            raise ValueError(f"every length must be between 1 and 1000000, got {v}")
        return v

    @model_validator(mode="after")
    def _one_way_to_say_it(self):
        clash = self.model_fields_set & {"temperature", "top_k", "top_p", "on_eos"} if self.warps else set()
        if clash:
            raise ValueError(f"give either warps or {sorted(clash)}, not both")
        if self.lengths and "max_new_tokens" in self.model_fields_set:
            raise ValueError("give either lengths or max_new_tokens, not both")
        return self

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.n_seeds))

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


# --- per-notebook schemas: the fields are exactly the names of the notebook's parameters cell ------

NOTEBOOK_SCHEMAS: dict[str, type[BaseModel]] = {}


def notebook_schema(*names: str):
    """Register a schema class under the notebook names whose parameters cells it describes (several
    notebooks can share one schema when their parameters are the same)."""

    def register(cls):
        for name in names:
            NOTEBOOK_SCHEMAS[name] = cls
        return cls

    return register


class NotebookParams(Strict):
    profile: str = "cpu"


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
