"""The schemas of the study's notebooks (registered in ``NOTEBOOK_SCHEMAS`` by name): the smoke test, the
cross-model figures, the applications (detection, attribution, membership, sampling sensitivity), the
self-convergence figures on one shared generation grid, and the detection calibration.

The fields are exactly the names of each notebook's ``parameters`` cell."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ..corpora import BENCHMARKS
from .types import (
    BatchSize,
    CommaList,
    DType,
    NotebookParams,
    NSeeds,
    OnEos,
    PromptIds,
    SettingSpecs,
    VariantSpecs,
    check_variant_specs,
    notebook_schema,
    split_commas,
    whole_windows,
)
from ..core.sampling import Variant


@notebook_schema("00_smoke")
class SmokeParams(NotebookParams):
    models: CommaList
    prompt: str = "p01"
    max_new_tokens: int = Field(12, ge=1, le=512)


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


@notebook_schema("fig03_cross_scatter", "fig07_cross_running")
class CrossPairParams(CrossGridParams):
    """One ordered pair: ``source`` (A, generates) and ``scorer`` (B), as variant specs
    ``<model>[@t<temperature>][k<top_k>][p<top_p>]``."""

    source: str
    scorer: str

    @field_validator("source", "scorer")
    @classmethod
    def _variant(cls, v):
        return check_variant_specs([v])[0]

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


@notebook_schema("fig08_cross_entropy_profile", "fig10_entropy_vs_perplexity")
class CrossWindowParams(CrossPairParams):
    """One ordered pair, its statistics smoothed over ``window`` positions."""

    window: int = Field(16, ge=1, le=100_000)


class HumanTextParams(NotebookParams):
    """Human texts scored in windows: classic texts (``classics``) and ``n_human`` texts from each of a news
    and an essays benchmark file, ``n_windows`` windows of ``window_tokens`` tokens each."""

    classics: CommaList
    news_file: str = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"
    essays_file: str = "benchmarks/fast-detect-gpt/exp_main/writing_gpt2-xl.raw_data.json"
    n_human: int = Field(4, ge=0, le=10_000)
    window_tokens: int = Field(64, ge=8, le=100_000)
    n_windows: int = Field(2, ge=1, le=10_000)
    reflow: bool = True


@notebook_schema("memorised_texts")
class MemorisedParams(CrossGridParams, HumanTextParams):
    models: CommaList

    _window_fits = model_validator(mode="after")(whole_windows)


# --- applications: detection, attribution, membership, sampling sensitivity --------------------------


class BenchmarkScoringParams(NotebookParams):
    """The texts of benchmark sets (``datasets``, the first ``n_texts`` pairs of each; 0: all) scored by each of
    ``models`` (with ``reference`` as the second model of the detectors that need one)."""

    models: CommaList
    reference: str = ""
    datasets: CommaList
    n_texts: int = Field(12, ge=0, le=100_000)
    max_tokens: int = Field(128, ge=8, le=100_000)
    min_k: float = Field(0.2, gt=0.0, le=1.0)
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


@notebook_schema("app_detection_benchmark")
class DetectionBenchmarkParams(BenchmarkScoringParams):
    n_resamples: int = Field(1000, ge=10, le=1_000_000)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    calib_frac: float = Field(0.5, gt=0.0, lt=1.0)


@notebook_schema("app_attribution")
class AttributionParams(NotebookParams):
    variants: Annotated[VariantSpecs, Field(min_length=2)]
    prompts: PromptIds
    n_seeds: NSeeds = 2
    lengths: Annotated[list[int], BeforeValidator(split_commas), Field(min_length=1)]
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

    _window_fits = model_validator(mode="after")(whole_windows)


@notebook_schema("app_sampling_sensitivity")
class SamplingSensitivityParams(NotebookParams):
    models: CommaList
    scorers: Annotated[list[str], BeforeValidator(split_commas), Field(min_length=2)]
    settings: SettingSpecs
    prompts: PromptIds
    n_seeds: NSeeds = 2
    max_new_tokens: int = Field(64, ge=8, le=1_000_000)
    batch_size: BatchSize = 8
    device: str = "auto"
    dtype: DType = "auto"


# --- self-convergence notebooks: one shared generation grid -------------------------------------------


@notebook_schema("fig01_self_convergence", "fig05_convergence_all_models", "length_scaling", "typical_set_size")
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


@notebook_schema("fig04_final_differences", "fig09_diagnostics")
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


@notebook_schema("fig12_prompt_scatter")
class Fig12Params(SelfGridParams):
    """One figure per prompt id (Figs 12-15): ``prompt`` must be one of ``prompts``."""

    prompt: str = "p01"

    @model_validator(mode="after")
    def _check_prompt(self):
        if self.prompt not in self.prompts:
            raise ValueError(f"prompt: {self.prompt!r} is not one of prompts {self.prompts}")
        return self


# --- detection calibration (aep_lib.analysis.calibration): thresholds per length bin on human texts -------------


@notebook_schema("detection_calibration")
class DetectionCalibrationParams(BenchmarkScoringParams):
    """Calibrations built from the human texts of the benchmark sets, and the shipped calibrations of
    ``shipped_models`` shown beside them."""

    max_tokens: int = Field(128, ge=20, le=100_000)
    heldout_frac: float = Field(0.5, gt=0.0, lt=1.0)
    fpr: float = Field(0.05, gt=0.0, le=0.5)
    shipped_models: Annotated[list[str], BeforeValidator(split_commas)] = []
    write_dir: str = ""
