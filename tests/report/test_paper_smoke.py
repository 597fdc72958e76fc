"""``params/paper-smoke`` is ``params/paper`` with smaller sizes: the same files, the same keys, the same model
names (the profile's model map points them at the stand-ins), the same values except sizes, each no larger
than the paper's. Any other difference is a defect: the smoke run would prove another profile's code paths.

`make test` runs the profile itself (`aep figures --profile paper-smoke`); this file checks what it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aep_lib import paths
from aep_lib.engine.model_map import read_map
from aep_lib.engine.standins import PAPER_STANDINS, STANDINS
from aep_lib.params import RUNS_KEY, load_params_file
from aep_lib.report import pipeline
from aep_lib.report.profile_settings import (
    PROFILE_FILE,
    notebook_files,
    profile_settings,
)

PAPER, SMOKE = paths.params_dir() / "paper", paths.params_dir() / "paper-smoke"
PROFILE_KEY = "profile"
MODEL_KEYS = {"models", "model", "source", "scorer", "variants", "scorers", "reference", "shipped_models"}
# counts and lengths (a number no larger than the paper's) and sets of texts or prompts (a subset of the paper's)
COUNT_KEYS = {"n_seeds", "n_seeds_truncated", "n_seeds_sweep", "max_new_tokens", "n_texts", "max_tokens", "n_human",
              "n_news", "n_passages", "passage_tokens", "window_tokens", "n_windows", "n_resamples", "byte_points",
              "n_bins", "window"}
SUBSET_KEYS = {"prompts", "baseline_prompts", "classics", "datasets"}
LENGTH_LIST_KEYS = {"lengths", "filler_tokens"}  # at most as many, none longer than the paper's longest
ALL_TEXTS = {"n_texts": 0}  # 0 means every text: any count is smaller


def yaml_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.yaml") if not p.name.startswith("_"))


def items(value) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def size_difference(key: str, paper, smoke) -> str | None:
    """Why ``smoke`` is not a smaller size of ``paper`` for ``key``; None when it is."""
    if key in COUNT_KEYS:
        bigger = paper != ALL_TEXTS.get(key) and smoke > paper
        return f"{smoke} is larger than the paper's {paper}" if bigger or smoke < 0 else None
    if key in SUBSET_KEYS:
        extra = sorted(set(items(smoke)) - set(items(paper)))
        return f"{extra} not among the paper's {paper}" if extra or not items(smoke) else None
    if key in LENGTH_LIST_KEYS:
        ours, theirs = [int(v) for v in items(smoke)], [int(v) for v in items(paper)]
        return None if len(ours) <= len(theirs) and max(ours) <= max(theirs) else f"{smoke} is not within {paper}"
    return f"{smoke!r} differs from the paper's {paper!r} (not a size)" if smoke != paper else None


def differences(paper: dict, smoke: dict, where: str) -> list[str]:
    """Every difference between two params mappings other than a smaller size."""
    found = []
    if list(paper) != list(smoke):
        found.append(f"{where}: keys {list(smoke)} differ from the paper's {list(paper)}")
    for key in set(paper) & set(smoke):
        if key == RUNS_KEY:
            runs_p, runs_s = paper[key], smoke[key]
            if not runs_s or any(r not in runs_p for r in runs_s):
                found.append(f"{where}: {RUNS_KEY} {runs_s} are not among the paper's {runs_p}")
        elif key == PROFILE_KEY:
            if (paper[key], smoke[key]) != ("paper", "paper-smoke"):
                found.append(f"{where}: profile {smoke[key]!r}")
        elif key in MODEL_KEYS:
            if paper[key] != smoke[key]:
                found.append(f"{where}: {key} {smoke[key]!r} differs from the paper's {paper[key]!r} "
                             "(map the name in _model_map.yaml instead)")
        elif (why := size_difference(key, paper[key], smoke[key])) is not None:
            found.append(f"{where}: {key}: {why}")
    return found


def test_paper_smoke_differs_from_paper_only_in_sizes():
    assert yaml_files(SMOKE) == yaml_files(PAPER), "paper-smoke must hold a file for every paper params file"
    found = []
    for rel in yaml_files(PAPER):
        found += differences(yaml.safe_load((PAPER / rel).read_text()), yaml.safe_load((SMOKE / rel).read_text()), rel)
    assert not found, "\n".join(found)


def test_the_comparison_fails_on_any_other_difference():
    paper = {"profile": "paper", "models": "a/b", "n_seeds": 25, "prompts": "p01,p02", "top_p": 0.9,
             "lengths": "64,4096", RUNS_KEY: [{"prompt": "p01"}, {"prompt": "p02"}]}
    smaller = paper | {"profile": "paper-smoke", "n_seeds": 2, "prompts": "p01", "lengths": "16,32",
                       RUNS_KEY: [{"prompt": "p01"}]}
    assert differences(paper, smaller, "f") == []
    for change in ({"top_p": 0.95}, {"models": "c/d"}, {"n_seeds": 26}, {"prompts": "p01,p09"},
                   {"lengths": "16,32,64"}, {RUNS_KEY: [{"prompt": "p03"}]}, {"profile": "cpu"}):
        assert len(differences(paper, smaller | change, "f")) == 1, change
    assert differences(paper, {k: v for k, v in smaller.items() if k != "top_p"}, "f")
    assert differences(paper, smaller | {"dtype": "auto"}, "f")


def test_paper_smoke_maps_every_paper_model_to_its_stand_in():
    settings = profile_settings(SMOKE)
    assert not settings.enforce_claims and settings.model_map == (SMOKE / "_model_map.yaml").resolve()
    entries = read_map(settings.model_map)
    assert {name: e.standin for name, e in entries.items()} == PAPER_STANDINS
    assert set(PAPER_STANDINS.values()) == set(STANDINS)
    split = entries["meta-llama/Llama-3.1-70B"].placement
    assert split is not None and {d for _, d in split.device_map} == {"cpu", "disk"}
    named = set()
    for path in notebook_files(PAPER):
        for _, values in pipeline.expand_runs(path):
            for key in MODEL_KEYS & set(values):
                named |= {v.split("@")[0] for v in items(values[key])}
    assert named - {"smollm2-135m", "gemma-3-270m"} == set(entries)  # 00_smoke and shipped_models: embedded


def test_paper_smoke_plans_every_paper_notebook():
    smoke = pipeline.plan("paper-smoke")
    assert {e.notebook for e in smoke} == {e.notebook for e in pipeline.plan("paper")}
    assert all(e.values["profile"] == "paper-smoke" for e in smoke if "profile" in e.values)
    assert (SMOKE / PROFILE_FILE).is_file() and PROFILE_FILE not in {e.params_file.name for e in smoke}
    p = load_params_file(SMOKE / "fig05_convergence_all_models.yaml")
    assert p.models == load_params_file(PAPER / "fig05_convergence_all_models.yaml").models


@pytest.mark.parametrize("text, message", [
    ("claims: maybe\n", "key 'claims': use one of enforce, record"),
    ("model_map: nowhere.yaml\n", "no such file"),
    ("colour: blue\n", "unknown key(s) ['colour']"),
])
def test_a_bad_profile_file_is_a_one_line_error(tmp_path, text, message):
    from aep_lib.params import ParamsError

    (tmp_path / PROFILE_FILE).write_text(text)
    with pytest.raises(ParamsError) as err:
        profile_settings(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)
