"""The schemas of the notebooks on what was measured since the study (registered in ``NOTEBOOK_SCHEMAS``):
length dynamics and the in-context positive control, entropy-rate calibration, adversarial prompts and
the refined typical set; their self-generated grids share ``figure_params.SelfGridParams``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .figure_schemas import CrossGridParams, HumanTextParams, SelfGridParams
from .types import (
    BatchSize,
    CommaList,
    DType,
    NotebookParams,
    NSeeds,
    PromptIds,
    SettingSpecs,
    notebook_schema,
    split_commas,
)
from ..core.sampling import Sampling, Variant

# --- length dynamics and the in-context positive control (aep_lib.analysis.dynamics, aep_lib.analysis.membership) ----------


def _token_counts(v) -> list[int]:
    """Comma-separated (or a list of, or one) token counts -> sorted distinct ints in 0..1,000,000."""
    counts = sorted({int(x) for x in split_commas(v if not isinstance(v, int) else str(v))})
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
    settings: SettingSpecs
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


# --- entropy rates: calibration, adversarial prompts, the refined typical set (aep_lib.analysis.entropy_rate) ------


def _temperatures(v) -> list[float]:
    """Comma-separated (or a list of) sampling temperatures -> at least two distinct floats in (0, 100], sorted."""
    try:
        values = sorted({float(x) for x in split_commas(str(v) if isinstance(v, (int, float)) else v)})
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
class EntropyRateCalibrationParams(SelfGridParams, HumanTextParams):
    """The self grid (its untruncated runs give each model's entropy rate; equal grid values share its runs),
    human texts scored as ``memorised_texts`` scores them (equal values share the scorings), and a
    temperature sweep: ``n_seeds_sweep`` seeds per prompt at each of ``temperatures``, ``rate_tokens`` =
    ``window_tokens × n_windows`` tokens each (temperature 1: the grid's runs, cut there)."""

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
