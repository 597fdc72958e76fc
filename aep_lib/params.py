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
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError, field_validator, model_validator

from .corpora import BENCHMARKS, ParamsError, load_prompts, read_yaml
from .sampling import Sampling, Strict, Variant


def _split(value: Any) -> list[str]:
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


def _variant_specs(specs: list[str]) -> list[str]:
    return [Variant.parse(spec) and spec.strip() for spec in specs]  # ValueError with the expected syntax


def _whole_windows(params):
    """``window_tokens`` must fit in ``max_new_tokens``: the self-generated baseline needs whole windows."""
    if params.window_tokens > params.max_new_tokens:
        raise ValueError(f"window_tokens ({params.window_tokens}) must be at most max_new_tokens "
                         f"({params.max_new_tokens}): the self-generated baseline needs whole windows")
    return params


# The types every schema shares. Lists come as comma-separated strings (papermill injects scalars).
CommaList = Annotated[list[str], BeforeValidator(_split), Field(min_length=1)]
PromptIds = Annotated[list[str], BeforeValidator(_split), AfterValidator(_known_prompt_ids), Field(min_length=1)]
VariantSpecs = Annotated[list[str], BeforeValidator(_split), AfterValidator(_variant_specs)]
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
        return _split(v) if isinstance(v, str) else v

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


def notebook_schema(name: str):
    def register(cls):
        NOTEBOOK_SCHEMAS[name] = cls
        return cls

    return register


class NotebookParams(Strict):
    profile: str = "cpu"


@notebook_schema("00_smoke")
class SmokeParams(NotebookParams):
    models: CommaList
    prompt: str = "p01"
    max_new_tokens: int = Field(12, ge=1, le=512)


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


# --- cross-model notebooks: one model's text under another ------------------------------------------


class CrossGridParams(NotebookParams):
    """The source generations every cross-model notebook shares: variants × prompts × seeds × length."""

    prompts: PromptIds
    n_seeds: NSeeds = 2
    max_new_tokens: int = Field(128, ge=2, le=1_000_000)
    on_eos: OnEos = "suppress"
    batch_size: BatchSize = 8
    device: str = "auto"
    dtype: DType = "auto"

    @property
    def seeds(self) -> list[int]:
        return list(range(self.n_seeds))


class CrossPairParams(CrossGridParams):
    """One ordered pair: ``source`` (A, generates) and ``scorer`` (B), as variant specs
    ``<model>[@t<temperature>][k<top_k>][p<top_p>]``."""

    source: str
    scorer: str

    @field_validator("source", "scorer")
    @classmethod
    def _variant(cls, v):
        return _variant_specs([v])[0]

    def pair(self):
        return Variant.parse(self.source, self.on_eos), Variant.parse(self.scorer, self.on_eos)


@notebook_schema("fig02_single_sequence_divergence")
class Fig02Params(CrossPairParams):
    prompt: str = "p01"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _in_grid(self):
        if self.prompt not in self.prompts or self.seed >= self.n_seeds:
            raise ValueError(f"prompt {self.prompt!r} / seed {self.seed} must lie in the grid "
                             f"(prompts {self.prompts}, seeds 0..{self.n_seeds - 1})")
        return self


@notebook_schema("fig03_cross_scatter")
class Fig03Params(CrossPairParams):
    pass


@notebook_schema("fig06_cross_entropy_histogram")
class Fig06Params(CrossGridParams):
    variants: Annotated[VariantSpecs, Field(min_length=1)]
    low_below: float = Field(2.0, gt=0)
    high_above: float = Field(4.0, gt=0)
    bins: int = Field(20, ge=2, le=500)

    @model_validator(mode="after")
    def _regimes(self):
        if self.low_below >= self.high_above:
            raise ValueError(f"low_below ({self.low_below}) must be below high_above ({self.high_above})")
        return self


@notebook_schema("fig07_cross_running")
class Fig07Params(CrossPairParams):
    pass


@notebook_schema("fig08_cross_entropy_profile")
class Fig08Params(CrossPairParams):
    window: int = Field(16, ge=1, le=100_000)


@notebook_schema("fig10_entropy_vs_perplexity")
class Fig10Params(CrossPairParams):
    window: int = Field(16, ge=1, le=100_000)


@notebook_schema("memorised_texts")
class MemorisedParams(CrossGridParams):
    models: CommaList
    classics: CommaList
    news_file: str = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"
    essays_file: str = "benchmarks/fast-detect-gpt/exp_main/writing_gpt2-xl.raw_data.json"
    n_human: int = Field(4, ge=0, le=10_000)
    window_tokens: int = Field(64, ge=8, le=100_000)
    n_windows: int = Field(2, ge=1, le=10_000)
    reflow: bool = True

    _window_fits = model_validator(mode="after")(_whole_windows)


# --- applications: detection, attribution, membership, sampling sensitivity --------------------------


@notebook_schema("app_detection_benchmark")
class DetectionBenchmarkParams(NotebookParams):
    models: CommaList
    reference: str = ""
    datasets: CommaList
    n_texts: int = Field(12, ge=0, le=100_000)
    max_tokens: int = Field(128, ge=8, le=100_000)
    min_k: float = Field(0.2, gt=0.0, le=1.0)
    n_resamples: int = Field(1000, ge=10, le=1_000_000)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    calib_frac: float = Field(0.5, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0)
    device: str = "auto"
    dtype: DType = "auto"

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, v):
        unknown = [d for d in v if d not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(BENCHMARKS)}")
        return v


@notebook_schema("app_attribution")
class AttributionParams(NotebookParams):
    variants: Annotated[VariantSpecs, Field(min_length=2)]
    prompts: PromptIds
    n_seeds: NSeeds = 2
    lengths: Annotated[list[int], BeforeValidator(_split), Field(min_length=1)]
    batch_size: BatchSize = 8
    device: str = "auto"
    dtype: DType = "auto"

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, v):
        if any(n < 1 or n > 100_000 for n in v):
            raise ValueError(f"every length must be between 1 and 100000, got {v}")
        return sorted(set(v))


@notebook_schema("app_membership")
class MembershipParams(NotebookParams):
    models: CommaList
    classics: CommaList
    news_file: str = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"
    n_news: int = Field(8, ge=1, le=10_000)
    window_tokens: int = Field(32, ge=8, le=100_000)
    n_windows: int = Field(2, ge=1, le=10_000)
    prompts: PromptIds
    n_seeds: NSeeds = 2
    max_new_tokens: int = Field(64, ge=8, le=1_000_000)
    min_k: float = Field(0.2, gt=0.0, le=1.0)
    batch_size: BatchSize = 8
    device: str = "auto"
    dtype: DType = "auto"

    _window_fits = model_validator(mode="after")(_whole_windows)


@notebook_schema("app_sampling_sensitivity")
class SamplingSensitivityParams(NotebookParams):
    models: CommaList
    scorers: Annotated[list[str], BeforeValidator(_split), Field(min_length=2)]
    settings: CommaList
    prompts: PromptIds
    n_seeds: NSeeds = 2
    max_new_tokens: int = Field(64, ge=8, le=1_000_000)
    batch_size: BatchSize = 8
    device: str = "auto"
    dtype: DType = "auto"

    @field_validator("settings")
    @classmethod
    def _settings(cls, v):
        for spec in v:
            Variant.parse(f"m@{spec}")  # t<temperature>, k<top_k>, p<top_p>, combined: t0.7p0.9
        return v


# --- self-convergence notebooks: one shared generation grid -------------------------------------------


class SelfGridParams(NotebookParams):
    """The generation grid shared by the self-convergence notebooks (``tables.ensure_self_grid``).

    ``models × prompts × n_seeds`` at temperature 1 without truncation (``q = p``), plus the same
    models and prompts with ``n_seeds_truncated`` seeds at ``top_p`` (``q != p``). Notebooks with
    equal grid values share their runs in the store.
    """

    models: CommaList
    prompts: PromptIds
    n_seeds: NSeeds = 4
    n_seeds_truncated: NSeeds = 2
    top_p: float = Field(0.9, gt=0.0, lt=1.0)
    max_new_tokens: int = Field(256, ge=2, le=1_000_000)
    batch_size: BatchSize = 16
    device: str = "auto"
    dtype: DType = "auto"

    @model_validator(mode="after")
    def _check_grid(self):
        for key in ("models", "prompts"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: repeated entries in {values}")
        return self


class OneModelGridParams(SelfGridParams):
    """A grid notebook that shows one of its models (``model``; empty: the first of ``models``)."""

    model: str = ""

    @model_validator(mode="after")
    def _check_model(self):
        if self.model and self.model not in self.models:
            raise ValueError(f"model: {self.model!r} is not one of models {self.models}")
        return self

    @property
    def shown_model(self) -> str:
        return self.model or self.models[0]


@notebook_schema("fig01_self_convergence")
class Fig01Params(SelfGridParams):
    pass


@notebook_schema("fig04_final_differences")
class Fig04Params(OneModelGridParams):
    pass


@notebook_schema("fig05_convergence_all_models")
class Fig05Params(SelfGridParams):
    pass


@notebook_schema("fig09_diagnostics")
class Fig09Params(OneModelGridParams):
    pass


@notebook_schema("fig12_prompt_scatter")
class Fig12Params(SelfGridParams):
    """One figure per prompt id (Figs 12-15): ``prompt`` must be one of ``prompts``."""

    prompt: str = "p01"

    @model_validator(mode="after")
    def _check_prompt(self):
        if self.prompt not in self.prompts:
            raise ValueError(f"prompt: {self.prompt!r} is not one of prompts {self.prompts}")
        return self


@notebook_schema("length_scaling")
class LengthScalingParams(SelfGridParams):
    pass


@notebook_schema("typical_set_size")
class TypicalSetParams(SelfGridParams):
    pass


# --- detection calibration (aep_lib.calibration): thresholds per length bin on human texts -------------


@notebook_schema("detection_calibration")
class DetectionCalibrationParams(NotebookParams):
    """Calibrations built from the human texts of benchmark sets (``datasets``, the first ``n_texts`` pairs
    of each; 0: all), and the shipped calibrations of ``shipped_models`` shown beside them."""

    models: CommaList
    reference: str = ""
    datasets: CommaList
    n_texts: int = Field(12, ge=0, le=100_000)
    max_tokens: int = Field(128, ge=20, le=100_000)
    min_k: float = Field(0.2, gt=0.0, le=1.0)
    heldout_frac: float = Field(0.5, gt=0.0, lt=1.0)
    fpr: float = Field(0.05, gt=0.0, le=0.5)
    seed: int = Field(0, ge=0)
    shipped_models: Annotated[list[str], BeforeValidator(_split)] = []
    write_dir: str = ""
    device: str = "auto"
    dtype: DType = "auto"

    @field_validator("datasets")
    @classmethod
    def _known_benchmarks(cls, v):
        unknown = [d for d in v if d not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(BENCHMARKS)}")
        return v


# --- length dynamics and the in-context positive control (aep_lib.dynamics, aep_lib.membership) ----------


def _token_counts(v) -> list[int]:
    """Comma-separated (or a list of, or one) token counts -> sorted distinct ints in 0..1,000,000."""
    counts = sorted({int(x) for x in _split(v if not isinstance(v, int) else str(v))})
    if any(n < 0 or n > 1_000_000 for n in counts):
        raise ValueError(f"every token count must be between 0 and 1000000, got {counts}")
    return counts


@notebook_schema("control_in_context_memorisation")
class InContextControlParams(NotebookParams):
    """A passage seen once in the prompt and scored as the continuation of a second copy, against the same
    passage without the first copy: ``n_passages`` passages of the human texts of ``passages_file`` (its
    ``original`` texts, consecutive ones joined until long enough: ``membership.in_context_passages``), each
    cut to ``passage_tokens`` tokens of the scorer, with ``filler_tokens`` tokens of the classic
    ``filler_classic`` between the copies (one scoring per filler length)."""

    models: CommaList
    passages_file: str = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"
    n_passages: int = Field(6, ge=2, le=10_000)
    passage_tokens: int = Field(128, ge=8, le=100_000)
    filler_classic: str = "melville-moby-dick"
    filler_tokens: Annotated[list[int], BeforeValidator(_token_counts), Field(min_length=1)]
    device: str = "auto"
    dtype: DType = "auto"

    @property
    def filler_chars(self) -> int:
        """Characters of the classic to read: enough for the longest filler (under 8 characters a token)."""
        return max(20_000, 8 * max(self.filler_tokens))


@notebook_schema("entropy_rate_drift")
class EntropyDriftParams(SelfGridParams):
    """The self-convergence grid (``tables.ensure_self_grid``: the same values share its runs), read for the
    per-position entropy ``H_t`` in ``n_bins`` log-spaced position bins, with ``n_resamples`` bootstrap
    resamples of the runs for each slope's CI."""

    n_bins: int = Field(12, ge=2, le=200)
    n_resamples: int = Field(2000, ge=100, le=1_000_000)


@notebook_schema("boredom_confusion")
class BoredomConfusionParams(NotebookParams):
    """Generations of ``models`` at each decoding setting of ``settings`` (``t<temperature>``,
    ``k<top_k>``, ``p<top_p>``, combined as ``t0.7p0.9``); a greedy setting (``k1``, ``t0``) is generated
    for the first seed only (every seed gives the same text). ``l_n`` counts as flat when the slope of its
    second half lies within ``tolerance`` bits/token per 100 tokens; repetition is the share of repeated
    ``n_gram``-grams of token ids in a trailing ``window`` of tokens."""

    models: CommaList
    settings: CommaList
    prompts: PromptIds
    n_seeds: NSeeds = 2
    max_new_tokens: int = Field(256, ge=16, le=1_000_000)
    n_gram: int = Field(4, ge=1, le=64)
    window: int = Field(64, ge=2, le=100_000)
    tolerance: float = Field(0.05, gt=0.0, le=100.0)
    batch_size: BatchSize = 8
    device: str = "auto"
    dtype: DType = "auto"

    @field_validator("settings")
    @classmethod
    def _settings(cls, v):
        for spec in v:
            Variant.parse(f"m@{spec}")  # ValueError with the expected syntax
        if len(set(v)) != len(v):
            raise ValueError(f"repeated settings in {v}")
        return v

    @model_validator(mode="after")
    def _window_fits(self):
        if not self.n_gram <= self.window <= self.max_new_tokens:
            raise ValueError(f"need n_gram ({self.n_gram}) <= window ({self.window}) <= max_new_tokens "
                             f"({self.max_new_tokens})")
        return self

    @property
    def samplings(self) -> dict[str, Sampling]:
        """Setting spec -> its ``Sampling`` (end-of-text suppressed: every run reaches its length)."""
        return {spec: Variant.parse(f"m@{spec}").sampling for spec in self.settings}

    @property
    def seeds(self) -> list[int]:
        return list(range(self.n_seeds))


# --- entropy rates: calibration, adversarial prompts, the refined typical set (aep_lib.entropy_rate) ------


def _temperatures(v) -> list[float]:
    """Comma-separated (or a list of) sampling temperatures -> at least two distinct floats in (0, 100], sorted."""
    try:
        values = sorted({float(x) for x in _split(str(v) if isinstance(v, (int, float)) else v)})
    except ValueError:
        raise ValueError(f"temperatures must be numbers, got {v!r}") from None
    if len(values) < 2 or any(not 0 < t <= 100 for t in values):
        raise ValueError(f"need at least two distinct temperatures in (0, 100], got {values}")
    return values


def _distinct_models(params):
    if len(set(params.models)) < 2 or len(set(params.models)) != len(params.models):
        raise ValueError(f"models: need at least two distinct models, got {params.models}")
    return params


@notebook_schema("entropy_rate_calibration")
class EntropyRateCalibrationParams(SelfGridParams):
    """The self grid (its untruncated runs give each model's entropy rate; equal grid values share its runs),
    human texts scored as ``memorised_texts`` scores them (equal values share the scorings), and a
    temperature sweep: ``n_seeds_sweep`` seeds per prompt at each of ``temperatures``, ``rate_tokens`` =
    ``window_tokens × n_windows`` tokens each (temperature 1: the grid's runs, cut there)."""

    classics: CommaList
    news_file: str = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"
    essays_file: str = "benchmarks/fast-detect-gpt/exp_main/writing_gpt2-xl.raw_data.json"
    n_human: int = Field(4, ge=0, le=10_000)
    window_tokens: int = Field(64, ge=8, le=100_000)
    n_windows: int = Field(2, ge=1, le=10_000)
    reflow: bool = True
    temperatures: Annotated[list[float], BeforeValidator(_temperatures)]
    n_seeds_sweep: NSeeds = 2

    @model_validator(mode="after")
    def _sweep_fits_the_grid(self):
        if self.rate_tokens > self.max_new_tokens:
            raise ValueError(f"window_tokens x n_windows ({self.rate_tokens}) must be at most max_new_tokens "
                             f"({self.max_new_tokens}): generations are compared over the same positions")
        if 1.0 in self.temperatures and self.n_seeds_sweep > self.n_seeds:
            raise ValueError(f"n_seeds_sweep ({self.n_seeds_sweep}) must be at most n_seeds ({self.n_seeds}): "
                             "temperature 1 comes from the grid's runs")
        return self

    @property
    def rate_tokens(self) -> int:
        """Positions over which every entropy rate and log-perplexity is measured (tokens)."""
        return self.window_tokens * self.n_windows


@notebook_schema("adversarial_prompts")
class AdversarialPromptsParams(CrossGridParams):
    """Generations of ``models`` (temperature 1) after the adversarial ``prompts`` and the ``baseline_prompts``
    (pooled as the baseline), each scored by the other models; ``alpha``: the risk of the claim that the
    share of runs within ±2σ under q reaches what N(0, 1) guarantees (``entropy_rate.clt_share_bound``)."""

    models: CommaList
    baseline_prompts: PromptIds
    alpha: float = Field(0.01, gt=0.0, lt=0.5)

    _two_models = model_validator(mode="after")(_distinct_models)

    @model_validator(mode="after")
    def _disjoint_prompts(self):
        shared = sorted(set(self.prompts) & set(self.baseline_prompts))
        if shared:
            raise ValueError(f"prompt(s) {shared} are both adversarial (prompts) and baseline (baseline_prompts)")
        return self


@notebook_schema("refined_typical_set")
class RefinedTypicalSetParams(SelfGridParams):
    """The self grid's untruncated runs (equal grid values share them), read as entropy per byte at
    ``byte_points`` common byte lengths; every ordered pair of ``models`` is compared."""

    byte_points: int = Field(24, ge=2, le=1000)

    _two_models = model_validator(mode="after")(_distinct_models)
