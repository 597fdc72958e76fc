"""The texts the project reads: prompts, classic texts and the human/machine benchmark sets.

One loader for everything under the data directory (``paths.data_file``) and for the prompts of
``params/prompts.yaml``:

- ``load_prompts`` / ``prompt_text``: prompt id -> text;
- ``classic_text`` / ``benchmark_texts``: external texts (``ExternalText``) for the training-data side;
- ``BENCHMARKS`` / ``load_benchmark``: paired human and machine texts of the detection benchmarks.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .paths import data_file, params_dir


class ParamsError(ValueError):
    """Invalid parameters; the message names the key and where it came from."""


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



CLASSIC_OPENINGS = {  # where each corpus' text proper begins (after title pages and contents)
    "carroll-alice": "Alice was beginning to get very tired",
    "fitzgerald-gatsby": "In my younger and more vulnerable years",
    "austen-pride-and-prejudice": "It is a truth universally acknowledged",
    "austen-emma": "Emma Woodhouse, handsome, clever, and rich",
    "melville-moby-dick": "Call me Ishmael",
    "dickens-tale-of-two-cities": "It was the best of times",
    "kjv-genesis": "In the beginning God created",
}


@dataclass(frozen=True)
class ExternalText:
    text_id: str  # e.g. "carroll-alice", "xsum-3"
    group: str  # "classic", "news", "essay", ...
    text: str
    source: str  # the data-dir relative file it came from


def reflow(text: str) -> str:
    """Join hard-wrapped lines of a paragraph with spaces (blank lines stay paragraph breaks)."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p).strip() for p in paragraphs)


def classic_text(name: str, max_chars: int = 20_000, reflowed: bool = True) -> ExternalText:
    """``corpora/<name>.txt`` from its opening line on (``CLASSIC_OPENINGS``, else the file start)."""
    relative = f"corpora/{name}.txt"
    raw = data_file(relative).read_text(encoding="utf-8")
    start = 0
    if name in CLASSIC_OPENINGS:
        m = re.search(r"\s+".join(map(re.escape, CLASSIC_OPENINGS[name].split())), raw)
        start = m.start() if m else 0
    body = raw[start : start + max_chars]
    return ExternalText(name, "classic", reflow(body) if reflowed else body, relative)


def benchmark_texts(relative: str, group: str, n: int, key: str = "original", prefix: str | None = None) -> list[ExternalText]:
    """The first ``n`` texts of a fast-detect-gpt ``*.raw_data.json`` file (``key``: original = human)."""
    data = json.loads(data_file(relative).read_text(encoding="utf-8"))
    if key not in data:
        raise KeyError(f"{relative}: no key {key!r}; keys: {sorted(data)}")
    prefix = prefix or Path(relative).name.split("_")[0]
    return [ExternalText(f"{prefix}-{i}", group, t, relative) for i, t in enumerate(data[key][:n])]



FDG = "benchmarks/fast-detect-gpt"


BENCHMARKS: dict[str, str] = {
    **{f"{d}_{g}": f"{FDG}/exp_gpt3to4/{d}_{g}.raw_data.json"
       for g in ("gpt-4", "gpt-3.5-turbo") for d in ("xsum", "writing", "pubmed")},
    **{f"{d}_{g}": f"{FDG}/exp_main/{d}_{g}.raw_data.json"
       for g in ("gpt2-xl", "gpt-neo-2.7B") for d in ("xsum", "writing", "squad")},
    "pubmed_falcon-7b": "benchmarks/binoculars/pubmed-falcon7.jsonl",
}  # fmt: skip


BINOCULARS_MACHINE_KEY = "-fs-cml-models-Falcon-falcon-7b_generated_text_wo_prompt"


def shared_prefix(a: str, b: str) -> str:
    """The longest common prefix of ``a`` and ``b``, cut back to end just before a whitespace character
    (so the first scored token of each text starts a word); "" when they share no whole word."""
    n = len(os.path.commonprefix([a, b]))
    while n > 0 and not (a[n:n + 1].isspace() and b[n:n + 1].isspace()):
        n -= 1
    return a[:n]


def load_benchmark(name: str, n_texts: int = 0, max_chars: int = 6000) -> pd.DataFrame:
    """Human and machine texts of one benchmark, two rows per pair: ``dataset``, ``pair``, ``label``
    (human / machine), ``is_machine`` (0/1), ``prompt`` (the context not scored), ``text``.

    ``n_texts``: the first n pairs (0: all). Texts are cut to ``max_chars`` characters (only to bound
    tokenization; the token budget of ``score_texts`` is the real truncation).
    """
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    path = data_file(BENCHMARKS[name])
    rows = []
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        pairs = [("", r["article"], r[BINOCULARS_MACHINE_KEY]) for r in records]
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = []
        for human, machine in zip(data["original"], data["sampled"]):
            prefix = shared_prefix(human, machine)
            pairs.append((prefix, human[len(prefix):], machine[len(prefix):]))
    kept = 0
    for i, (prefix, human, machine) in enumerate(pairs):
        if not human.strip() or not machine.strip():
            continue  # nothing left after the shared prefix
        for label, text in (("human", human), ("machine", machine)):
            rows.append({"dataset": name, "pair": i, "label": label, "is_machine": int(label == "machine"),
                         "prompt": prefix, "text": text[:max_chars]})
        kept += 1
        if n_texts and kept >= n_texts:
            break
    return pd.DataFrame(rows)
