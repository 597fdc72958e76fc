"""What the vocabulary leaves to each notebook: the cross-field rules (each written once, attached by notebook
name), the few limits narrower than the vocabulary's, and the shared grids (``SHARED_GRIDS``: which
notebooks read one set of keys from ``params/<profile>/shared/<grid>.yaml``).

A rule takes the validated params and returns them, or raises ``ValueError`` (reported as a ``ParamsError``
naming the file). A limit is extra pydantic metadata on one name for one notebook (it narrows the
vocabulary's bounds, never widens them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pydantic import AfterValidator, Field

from ..corpora import excerpt
from .vocabulary import bounds_text, lengths_within

# --- cross-field rules --------------------------------------------------------------------------------------


def distinct_models_and_prompts(p):
    for key in ("models", "prompts"):
        values = getattr(p, key)
        if len(set(values)) != len(values):
            raise ValueError(f"{key}: repeated entries in {excerpt(values)}")
    return p


def two_distinct_models(p):
    if len(set(p.models)) < 2 or len(set(p.models)) != len(p.models):
        raise ValueError(f"models: need at least two distinct models, got {p.models}")
    return p


def shown_model_in_models(p):
    if p.model and p.model not in p.models:
        raise ValueError(f"model: {p.model!r} is not one of models {p.models}")
    return p


def prompt_in_prompts(p):
    if p.prompt not in p.prompts:
        raise ValueError(f"prompt: {p.prompt!r} is not one of prompts {p.prompts}")
    return p


def sequence_in_grid(p):
    if p.prompt not in p.prompts or p.seed >= p.n_seeds:
        raise ValueError(f"prompt {p.prompt!r} / seed {p.seed} must lie in the grid "
                         f"(prompts {p.prompts}, seeds 0..{p.n_seeds - 1})")
    return p


def whole_windows(p):
    """``window_tokens`` must fit in ``max_new_tokens``: the self-generated baseline needs whole windows."""
    if p.window_tokens > p.max_new_tokens:
        raise ValueError(f"window_tokens ({p.window_tokens}) must be at most max_new_tokens "
                         f"({p.max_new_tokens}): the self-generated baseline needs whole windows")
    return p


def regimes_in_order(p):
    if p.low_below >= p.high_above:
        raise ValueError(f"low_below ({p.low_below}) must be below high_above ({p.high_above})")
    return p


def window_fits(p):
    if not p.n_gram <= p.window <= p.max_new_tokens:
        raise ValueError(f"need n_gram ({p.n_gram}) <= window ({p.window}) <= max_new_tokens ({p.max_new_tokens})")
    return p


def sweep_fits_the_grid(p):
    if p.rate_tokens > p.max_new_tokens:
        raise ValueError(f"window_tokens x n_windows ({p.rate_tokens}) must be at most max_new_tokens "
                         f"({p.max_new_tokens}): generations are compared over the same positions")
    if 1.0 in p.temperatures and p.n_seeds_sweep > p.n_seeds:
        raise ValueError(f"n_seeds_sweep ({p.n_seeds_sweep}) must be at most n_seeds ({p.n_seeds}): "
                         "temperature 1 comes from the grid's runs")
    return p


def disjoint_prompts(p):
    shared = sorted(set(p.prompts) & set(p.baseline_prompts))
    if shared:
        raise ValueError(f"prompt(s) {shared} are both adversarial (prompts) and baseline (baseline_prompts)")
    return p


def one_way_to_say_it(g):
    """A grid gives either ``warps`` or the scalar sampling keys, either ``lengths`` or ``max_new_tokens``;
    ``max_memory`` only with a ``device_map``."""
    if g.max_memory and not g.device_map:
        raise ValueError("max_memory needs a device_map (auto)")
    clash = g.model_fields_set & {"temperature", "top_k", "top_p", "on_eos"} if g.warps else set()
    if clash:
        raise ValueError(f"give either warps or {sorted(clash)}, not both")
    if g.lengths and "max_new_tokens" in g.model_fields_set:
        raise ValueError("give either lengths or max_new_tokens, not both")
    return g


def _distinct(values: list) -> list:
    """distinct entries"""
    if len(set(values)) != len(values):
        raise ValueError(f"repeated settings in {excerpt(values)}")
    return values


def _sorted_lengths(lengths: list[int]) -> list[int]:
    """each <= 100,000; sorted, distinct"""
    return sorted(set(lengths_within(100_000)(lengths)))


# --- per notebook -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """``checks``: cross-field rules, run in order; ``limits``: name -> pydantic metadata narrower than the
    vocabulary's bounds (checked on that name, so the error names it)."""

    checks: tuple[Callable, ...] = ()
    limits: dict = field(default_factory=dict)

    def __add__(self, other: Rules) -> Rules:
        return Rules(self.checks + other.checks, {**self.limits, **other.limits})


SELF_GRID = Rules((distinct_models_and_prompts,), {"top_p": Field(lt=1.0), "max_new_tokens": Field(ge=2)})
CROSS_GRID = Rules(limits={"max_new_tokens": Field(ge=2)})

NOTEBOOK_RULES: dict[str, Rules] = {
    "00_smoke": Rules(limits={"max_new_tokens": Field(le=512)}),
    "fig01_self_convergence": SELF_GRID,
    "fig04_final_differences": SELF_GRID + Rules((shown_model_in_models,)),
    "fig05_convergence_all_models": SELF_GRID,
    "fig09_diagnostics": SELF_GRID + Rules((shown_model_in_models,)),
    "fig12_prompt_scatter": SELF_GRID + Rules((prompt_in_prompts,)),
    "length_scaling": SELF_GRID,
    "typical_set_size": SELF_GRID,
    "entropy_rate_drift": SELF_GRID + Rules(limits={"n_resamples": Field(ge=100)}),
    "entropy_rate_calibration": SELF_GRID + Rules((sweep_fits_the_grid,)),
    "refined_typical_set": SELF_GRID + Rules((two_distinct_models,)),
    "fig02_single_sequence_divergence": CROSS_GRID + Rules((sequence_in_grid,)),
    "fig03_cross_scatter": CROSS_GRID,
    "fig06_cross_entropy_histogram": CROSS_GRID + Rules((regimes_in_order,)),
    "fig07_cross_running": CROSS_GRID,
    "fig08_cross_entropy_profile": CROSS_GRID,
    "fig10_entropy_vs_perplexity": CROSS_GRID,
    "memorised_texts": CROSS_GRID + Rules((whole_windows,)),
    "adversarial_prompts": CROSS_GRID + Rules((two_distinct_models, disjoint_prompts), {"alpha": Field(lt=0.5)}),
    "app_membership": Rules((whole_windows,), {"max_new_tokens": Field(ge=8)}),
    "app_sampling_sensitivity": Rules(limits={"max_new_tokens": Field(ge=8)}),
    "app_attribution": Rules(limits={"variants": Field(min_length=2), "lengths": AfterValidator(_sorted_lengths)}),
    "detection_calibration": Rules(limits={"max_tokens": Field(ge=20)}),
    "boredom_confusion": Rules((window_fits,), {"max_new_tokens": Field(ge=16), "window": Field(ge=2),
                                                "settings": AfterValidator(_distinct)}),
}

GRID_RULES = Rules((one_way_to_say_it,))

# ``aep run`` grid files: their names and defaults (``...``: required).
GRID_DEFAULTS = {"models": ..., "prompts": ..., "n_seeds": 1, "seed_offset": 0, "max_new_tokens": 256,
                 "temperature": 1.0, "top_k": 0, "top_p": 1.0, "on_eos": "suppress", "batch_size": 8,
                 "device": "auto", "dtype": "auto", "warps": None, "lengths": None, "device_map": "",
                 "max_memory": None}


# --- shared grids ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedGrid:
    """Keys several notebooks must give the same values (so that they share runs or scorings), held once per
    profile in ``params/<profile>/shared/<name>.yaml`` and merged under each member's own file."""

    name: str
    keys: tuple[str, ...]
    members: tuple[str, ...]
    meaning: str


SHARED_GRIDS: dict[str, SharedGrid] = {g.name: g for g in [
    SharedGrid("self_grid", ("models", "prompts", "n_seeds", "n_seeds_truncated", "top_p", "max_new_tokens",
                             "batch_size", "device", "dtype"),
               ("fig01_self_convergence", "fig04_final_differences", "fig05_convergence_all_models",
                "fig09_diagnostics", "fig12_prompt_scatter", "length_scaling", "typical_set_size",
                "entropy_rate_drift", "entropy_rate_calibration", "refined_typical_set"),
               "the self-generated grid (tables.ensure_self_grid): models x prompts x seeds, untruncated and top-p"),
    SharedGrid("cross_grid", ("prompts", "n_seeds", "max_new_tokens", "on_eos", "batch_size", "device", "dtype"),
               ("fig02_single_sequence_divergence", "fig03_cross_scatter", "fig06_cross_entropy_histogram",
                "fig07_cross_running", "fig08_cross_entropy_profile", "fig10_entropy_vs_perplexity",
                "memorised_texts"),
               "the source generations of the cross-model notebooks: variants x prompts x seeds"),
    SharedGrid("human_texts", ("classics", "news_file", "essays_file", "n_human", "window_tokens", "n_windows",
                               "reflow"),
               ("memorised_texts", "entropy_rate_calibration"),
               "the human texts scored in windows (the same scorings)"),
    SharedGrid("detection_texts", ("models", "reference", "datasets", "n_texts", "max_tokens", "min_k", "device",
                                   "dtype"),
               ("app_detection_benchmark", "detection_calibration"),
               "the benchmark texts scored by each model (detect.benchmark_tables: one cache)"),
]}


def shared_grids_of(notebook: str) -> list[SharedGrid]:
    """The shared grids ``notebook`` is a member of, in ``SHARED_GRIDS`` order."""
    return [g for g in SHARED_GRIDS.values() if notebook in g.members]


def rules_table() -> str:
    """``NOTEBOOK_RULES`` as a Markdown table: notebook, narrower limits, cross-field rules (docs/parameters.md)."""
    rows = ["| notebook | narrower limits | cross-field rules |", "|---|---|---|"]
    for name, rules in sorted(NOTEBOOK_RULES.items()):
        limits = "; ".join(f"`{k}` {bounds_text([v]) or (v.func.__doc__ or '').strip()}" for k, v in rules.limits.items())
        rows.append(f"| `{name}` | {limits} | {', '.join(f'`{fn.__name__}`' for fn in rules.checks)} |")
    return "\n".join(rows)


def shared_grids_table() -> str:
    """``SHARED_GRIDS`` as a Markdown table: grid, keys, members, meaning (docs/parameters.md)."""
    rows = ["| shared grid | keys | members | what it is |", "|---|---|---|---|"]
    rows += [f"| `{g.name}` | {', '.join(g.keys)} | {', '.join(g.members)} | {g.meaning} |" for g in SHARED_GRIDS.values()]
    return "\n".join(rows)
