"""Every parameter name the notebooks and the ``aep run`` grids use, each defined once: its type, its bounds
and what it means (``VOCABULARY``: name -> ``Term``).

Values arrive as flat scalars (a params file, papermill's ``-p``, a notebook's ``parameters`` cell); a list
is a comma-separated string (``models: "smollm2-135m,gemma-3-270m"``) or a YAML list. A notebook may take a
name with a default of its own (its ``parameters`` cell) and a narrower limit of its own
(``aep_lib.params.notebooks``), never another type or meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import AfterValidator, BeforeValidator, Field

from ..core.sampling import Sampling, Variant
from ..corpora import BENCHMARKS, excerpt, load_prompts


def split_commas(value: Any) -> list[str]:
    """``"a, b,c"`` or ``["a", "b"]`` -> ``["a", "b", "c"]`` (stripped, empty entries dropped from a string)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    raise TypeError(f"expected a comma-separated string or a list, got {type(value).__name__}")


def known_prompt_ids(ids: list[str]) -> list[str]:
    known = load_prompts()
    unknown = [p for p in ids if p not in known]
    if unknown:
        raise ValueError(f"unknown prompt id(s) {excerpt(unknown)}; known: {', '.join(known)}")
    return ids


def check_variant_specs(specs: list[str]) -> list[str]:
    """Variant specs ``<model>[@t<temperature>][k<top_k>][p<top_p>]``; ValueError with the expected syntax."""
    return [Variant.parse(spec) and spec.strip() for spec in specs]


def check_setting_specs(specs: list[str]) -> list[str]:
    """Decoding settings as a variant writes them after ``@`` (t<temperature>, k<top_k>, p<top_p>, combined:
    t0.7p0.9); ValueError with the expected syntax."""
    for spec in specs:
        Variant.parse(f"m@{spec}")
    return specs


def known_datasets(names: list[str]) -> list[str]:
    unknown = [d for d in names if d not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {excerpt(unknown)}; known: {', '.join(BENCHMARKS)}")
    return names


def lengths_within(limit: int):
    """A check that every length lies in 1..``limit`` tokens."""

    def check(lengths: list[int]) -> list[int]:
        if any(n < 1 or n > limit for n in lengths):
            raise ValueError(f"every length must be between 1 and {limit}, got {excerpt(lengths)}")
        return lengths

    return check


def token_counts(v) -> list[int]:
    """Comma-separated (or a list of, or one) token counts -> sorted distinct ints in 0..1,000,000."""
    counts = sorted({int(x) for x in split_commas(v if not isinstance(v, int) else str(v))})
    if any(n < 0 or n > 1_000_000 for n in counts):
        raise ValueError(f"every token count must be between 0 and 1000000, got {excerpt(counts)}")
    return counts


def temperature_sweep(v) -> list[float]:
    """Comma-separated (or a list of) sampling temperatures -> at least two distinct floats in (0, 100], sorted."""
    try:
        values = sorted({float(x) for x in split_commas(str(v) if isinstance(v, (int, float)) else v)})
    except ValueError:
        raise ValueError(f"temperatures must be numbers, got {excerpt(v)}") from None
    if len(values) < 2 or any(not 0 < t <= 100 for t in values):
        raise ValueError(f"need at least two distinct temperatures in (0, 100], got {excerpt(values)}")
    return values


MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|B)?", re.IGNORECASE)


def memory_map(value: Any) -> dict:
    """``{0: "70GiB", "cpu": "200GiB"}`` or ``"0=70GiB,cpu=200GiB"`` -> ``{"0": "70GiB", "cpu": "200GiB"}``:
    accelerate's ``max_memory`` (devices 0, 1, ..., cuda:N, cpu, disk; sizes in bytes or with a unit)."""
    if isinstance(value, str):
        items = [v.partition("=") for v in split_commas(value)]
        if any(not sep for _, sep, _ in items):
            raise ValueError(f"give DEVICE=SIZE pairs (0=70GiB,cpu=200GiB), got {excerpt(value)}")
        value = {k.strip(): v.strip() for k, _, v in items}
    if not isinstance(value, dict) or not value:
        raise ValueError(f"give a mapping of device to size ({{0: 70GiB, cpu: 200GiB}}), got {excerpt(value)}")
    out = {}
    for device, size in value.items():
        name = str(device).strip()
        if not (name.isdigit() or re.fullmatch(r"cuda(:\d+)?|cpu|disk|mps", name)):
            raise ValueError(f"unknown device {excerpt(device)} (use 0, 1, ..., cuda:1, cpu, disk)")
        if isinstance(size, bool) or not MEMORY_SIZE.fullmatch(str(size).strip()):
            raise ValueError(f"size {excerpt(size)} of device {name} is not a size (70GiB, 500MB, bytes)")
        out[name] = str(size).strip()
    return out


DEVICE_MAPS = ("", "auto", "balanced", "balanced_low_0", "sequential")


def device_map_strategy(value: str) -> str:
    if value not in DEVICE_MAPS:
        raise ValueError(f"use one of {', '.join(repr(v) for v in DEVICE_MAPS)}, got {excerpt(value)}")
    return value


# The types several names share. Lists come as comma-separated strings (papermill injects scalars).
Names = Annotated[list[str], BeforeValidator(split_commas)]
CommaList = Annotated[Names, Field(min_length=1)]
PromptIds = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(known_prompt_ids), Field(min_length=1)]
VariantSpecs = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(check_variant_specs),
                         Field(min_length=1)]
SettingSpecs = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(check_setting_specs),
                         Field(min_length=1)]
DType = Literal["auto", "float32", "bfloat16", "float16"]  # auto: float32 on CPU, bfloat16 on CUDA
OnEos = Literal["suppress", "stop", "continue"]
DataFile = str  # a path relative to the data dir (aep_lib.paths.data_dir)


def ints(ge=None, le=None):
    return Annotated[int, Field(ge=ge, le=le)]


def share(gt=0.0, lt=None, le=None):
    return Annotated[float, Field(gt=gt, lt=lt, le=le)]


BatchSize = ints(1, 4096)
NSeeds = ints(1, 100_000)
Tokens = ints(8, 100_000)
PromptId = Annotated[str, AfterValidator(lambda p: known_prompt_ids([p])[0])]
OneVariant = Annotated[str, AfterValidator(lambda v: check_variant_specs([v])[0])]


@dataclass(frozen=True)
class Term:
    """One parameter name: ``kind`` (the type as the docs write it), ``annotation`` (the pydantic type with its
    bounds) and ``meaning`` (one line)."""

    kind: str
    annotation: Any
    meaning: str

    @property
    def bounds(self) -> str:
        """The bounds of ``annotation`` as text: ``>= 1, <= 4096``, ``at least 2 entries``, ``one of ...``."""
        choices = getattr(self.annotation, "__origin__", None) is Literal and "one of " + ", ".join(
            self.annotation.__args__)
        return ", ".join(filter(None, [bounds_text(getattr(self.annotation, "__metadata__", ())), choices]))


def bounds_text(metadata) -> str:
    """Pydantic constraints (``Ge``, ``Gt``, ``Le``, ``Lt``, ``MinLen``; a ``Field`` unpacked) as text:
    ``>= 1, <= 4096``; others (validators) are left out."""
    parts = []
    for m in metadata:
        for sub in (m.metadata if hasattr(m, "metadata") else [m]):
            for cls, attr, sign in ((Ge, "ge", ">="), (Gt, "gt", ">"), (Le, "le", "<="), (Lt, "lt", "<")):
                if isinstance(sub, cls):
                    parts.append(f"{sign} {_number(getattr(sub, attr))}")
            if isinstance(sub, MinLen):
                parts.append(f"at least {sub.min_length} {'entry' if sub.min_length == 1 else 'entries'}")
    return ", ".join(parts)


def _number(x) -> str:
    return f"{x:_}".replace("_", ",") if isinstance(x, int) and abs(x) >= 10_000 else f"{x:g}"


T = Term
VOCABULARY: dict[str, Term] = {
    # where and how
    "profile": T("str", str, "the params profile this execution belongs to (cpu, paper, paper-smoke, cpu-full)"),
    "device": T("str", str, "torch device: auto (CUDA if present), cpu, cuda, cuda:1, ..."),
    "dtype": T("str", DType, "model dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16"),
    "batch_size": T("int", BatchSize, "sequences generated together (at most; a model's runs of one length "
                    "share batches whatever their settings)"),
    "device_map": T("str", Annotated[str, AfterValidator(device_map_strategy)],
                    "spread each model across devices through accelerate: auto, balanced, balanced_low_0, "
                    "sequential (empty: one device)"),
    "max_memory": T("mapping of device to size", Annotated[dict[str, str], BeforeValidator(memory_map)],
                    "with device_map: memory per device, 0=70GiB,1=70GiB,cpu=200GiB (the rest offloaded to disk)"),
    # models, prompts, seeds
    "models": T("comma list", CommaList, "model names: embedded short names, hub ids or folders"),
    "model": T("str", str, "the model shown, one of models (empty: the first)"),
    "scorers": T("comma list", Annotated[Names, Field(min_length=2)], "raw models that score every text"),
    "reference": T("str", str, "reference model of Fast-DetectGPT/Binoculars, for the scorers on its vocabulary "
                               "(the others, and empty: the scorer itself)"),
    "shipped_models": T("comma list", Names, "models whose shipped calibration (data dir) is shown"),
    "variants": T("comma list of variant specs", VariantSpecs, "variants <model>[@t<T>][k<K>][p<P>]"),
    "source": T("variant spec", OneVariant, "A, the generator of a cross pair: <model>[@t<T>][k<K>][p<P>]"),
    "scorer": T("variant spec", OneVariant, "B, the scorer of a cross pair (scores with its own q_B)"),
    "prompts": T("comma list of prompt ids", PromptIds, "prompt ids of the generations (params/prompts.yaml)"),
    "baseline_prompts": T("comma list of prompt ids", PromptIds, "ordinary prompt ids, pooled as the baseline"),
    "prompt": T("prompt id", PromptId, "the one prompt id shown (params/prompts.yaml)"),
    "n_seeds": T("int", NSeeds, "generations per model (or variant, setting) and prompt: seeds "
                                "seed_offset..seed_offset+n_seeds-1"),
    "n_seeds_truncated": T("int", NSeeds, "generations per model and prompt of the self grid's top-p setting"),
    "n_seeds_sweep": T("int", NSeeds, "generations per model, prompt and temperature of a temperature sweep"),
    "seed_offset": T("int", ints(0), "the first seed of a grid"),
    "seed": T("int", ints(0), "a seed: of the sequence shown (fig02), or of a bootstrap and a split (detection)"),
    # decoding
    "max_new_tokens": T("int", ints(1, 1_000_000), "tokens per generation"),
    "lengths": T("comma list of ints", Annotated[list[int], BeforeValidator(split_commas),
                                                 AfterValidator(lengths_within(1_000_000)), Field(min_length=1)],
                 "generation (or text) lengths in tokens, each 1..1,000,000"),
    "temperature": T("float", Annotated[float, Field(ge=0.0, le=100.0)], "sampling temperature (0: greedy)"),
    "top_k": T("int", ints(0), "top-k truncation (0: none)"),
    "top_p": T("float", share(le=1.0), "nucleus mass of top-p truncation (1: none)"),
    "on_eos": T("str", OnEos, "end-of-text handling: suppress (a warp, part of q), stop, continue"),
    "warps": T("list of mappings", Annotated[list[Sampling], Field(min_length=1)],
               "sampling settings, each a mapping of temperature, top_k, top_p, on_eos"),
    "settings": T("comma list of setting specs", SettingSpecs,
                  "decoding settings: t<temperature>, k<top_k>, p<top_p>, combined t0.7p0.9"),
    "temperatures": T("comma list of floats", Annotated[list[float], BeforeValidator(temperature_sweep)],
                      "sampling temperatures of a sweep (at least two, each in (0, 100])"),
    # texts
    "classics": T("comma list", CommaList, "corpora/<name>.txt, scored from their opening line"),
    "reflow": T("bool", bool, "join the hard-wrapped lines of the classics into paragraphs"),
    "news_file": T("data file", DataFile, "human news: its \"original\" texts (data dir)"),
    "essays_file": T("data file", DataFile, "human stories/essays: its \"original\" texts (data dir)"),
    "passages_file": T("data file", DataFile, "human texts whose \"original\" texts make the passages (data dir)"),
    "n_human": T("int", ints(0, 10_000), "texts taken from each of news_file and essays_file"),
    "n_news": T("int", ints(1, 10_000), "news texts (the first n)"),
    "n_passages": T("int", ints(2, 10_000), "passages: consecutive texts of passages_file, joined until long enough"),
    "passage_tokens": T("int", Tokens, "tokens per passage (the scorer's own tokenization)"),
    "filler_classic": T("str", str, "corpora/<name>.txt whose opening fills the gap between two copies"),
    "filler_tokens": T("comma list of ints", Annotated[list[int], BeforeValidator(token_counts), Field(min_length=1)],
                       "filler lengths between the two copies, in tokens (sorted, distinct, 0..1,000,000)"),
    "window_tokens": T("int", Tokens, "tokens per window of a text (the scorer's own tokenization)"),
    "n_windows": T("int", ints(1, 10_000), "windows per text, from its start"),
    "datasets": T("comma list of benchmark names", Annotated[CommaList, AfterValidator(known_datasets)],
                  "benchmark sets (aep_lib.corpora.BENCHMARKS)"),
    "n_texts": T("int", ints(0, 100_000), "pairs (human + machine) per benchmark set, the first n; 0: all"),
    "max_tokens": T("int", Tokens, "scored tokens per benchmark text at most"),
    # statistics
    "window": T("int", ints(1, 100_000), "a window along the text, in tokens: of a rolling mean (fig08, fig10) "
                                         "or of the repetition count (boredom_confusion)"),
    "n_gram": T("int", ints(1, 64), "repetition: n-grams of token ids of this length"),
    "tolerance": T("float", share(le=100.0), "flat: |slope of l_n over the second half| at most this many "
                                             "bits/token per 100 tokens"),
    "low_below": T("float", share(), "h^(A,B) below this many bits/token: the low-divergence regime"),
    "high_above": T("float", share(), "h^(A,B) above this many bits/token: the high-divergence regime"),
    "bins": T("int", ints(2, 500), "histogram bins"),
    "n_bins": T("int", ints(2, 200), "log-spaced position bins from the first to the last generated token"),
    "byte_points": T("int", ints(2, 1000), "common text lengths in bytes at which models are compared"),
    "n_resamples": T("int", ints(10, 1_000_000), "bootstrap resamples for each CI"),
    "alpha": T("float", share(lt=1.0), "an error rate: the risk of a claim's bound (adversarial_prompts) or the "
                                       "second target false-positive rate (app_detection_benchmark)"),
    "min_k": T("float", share(le=1.0), "Min-K% and Min-K%++: share of least likely tokens"),
    "calib_frac": T("float", share(lt=1.0), "share of each set's human texts that may calibrate"),
    "heldout_frac": T("float", share(lt=1.0), "share of each set's human texts held out to measure the FPR"),
    "fpr": T("float", share(le=0.5), "target false-positive rate"),
    "write_dir": T("str", str, "folder for written files, relative to the project root (empty: the outputs folder)"),
}
del T


def vocabulary_table() -> str:
    """``VOCABULARY`` as a Markdown table: name, type, bounds, meaning (docs/parameters.md holds it)."""
    rows = ["| name | type | bounds | meaning |", "|---|---|---|---|"]
    for name, t in VOCABULARY.items():
        meaning = t.meaning.replace("|", "\\|")  # a | inside a cell would end it
        rows.append(f"| `{name}` | {t.kind} | {t.bounds} | {meaning} |")
    return "\n".join(rows)
