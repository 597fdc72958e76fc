"""Shared grids: ``params/<profile>/shared/<grid>.yaml`` holds a grid's keys once, merged under each member's file."""

from __future__ import annotations

import pytest

from aep_lib.params import SHARED_GRIDS, ParamsError, load_params_file, read_params_file

SELF = SHARED_GRIDS["self_grid"]
GRID_YAML = ('models: "a,b"\nprompts: "p01,p02"\nn_seeds: 2\nn_seeds_truncated: 1\ntop_p: 0.8\nmax_new_tokens: 32\n'
             "batch_size: 4\ndevice: cpu\ndtype: float32\n")


@pytest.fixture
def profile(tmp_path):
    folder = tmp_path / "cpu"
    (folder / "shared").mkdir(parents=True)
    (folder / "shared" / "self_grid.yaml").write_text(GRID_YAML)
    (folder / "fig04_final_differences.yaml").write_text("profile: cpu\nmodel: b\n")
    return folder


def test_a_member_reads_the_shared_grid_under_its_own_keys(profile):
    values = read_params_file(profile / "fig04_final_differences.yaml")
    assert values["models"] == "a,b" and values["model"] == "b" and list(values)[-1] == "model"
    p = load_params_file(profile / "fig04_final_differences.yaml")
    assert (p.models, p.prompts, p.n_seeds, p.top_p, p.shown_model, p.device) == (["a", "b"], ["p01", "p02"], 2, 0.8,
                                                                                   "b", "cpu")


def test_a_member_file_must_not_repeat_a_shared_key(profile):
    path = profile / "fig04_final_differences.yaml"
    path.write_text("profile: cpu\nmodel: b\nn_seeds: 3\n")
    with pytest.raises(ParamsError, match=r"fig04_final_differences\.yaml: key\(s\) \['n_seeds'\] belong to the "
                                          r"shared self_grid .*self_grid\.yaml"):
        read_params_file(path)
    path.write_text("profile: cpu\n_runs:\n  - {model: a}\n  - {model: b, top_p: 0.5}\n")
    with pytest.raises(ParamsError, match=r"\(_runs entry 2\): key\(s\) \['top_p'\]"):
        read_params_file(path)


def test_a_shared_file_holds_exactly_its_grid_keys(profile):
    shared = profile / "shared" / "self_grid.yaml"
    shared.write_text(GRID_YAML.replace("n_seeds_truncated: 1\n", "") + "model: a\n")
    with pytest.raises(ParamsError, match=r"self_grid\.yaml: the self_grid keys are models, .*unknown key\(s\) "
                                          r"\['model'\]; missing key\(s\) \['n_seeds_truncated'\]"):
        read_params_file(profile / "fig04_final_differences.yaml")


def test_without_a_shared_file_a_member_file_stands_alone_and_others_are_untouched(profile, tmp_path):
    (profile / "shared" / "self_grid.yaml").unlink()
    alone = profile / "fig04_final_differences.yaml"
    alone.write_text(GRID_YAML + "model: a\n")
    assert load_params_file(alone).models == ["a", "b"]
    other = tmp_path / "x.yaml"
    other.write_text("n_seeds: 3\n")
    assert read_params_file(other) == {"n_seeds": 3}
    assert "00_smoke" not in {m for g in SHARED_GRIDS.values() for m in g.members}
