"""Parameter validation: bad input fails before any model loads, naming the key and the file."""

import pytest

from aep_lib.core.sampling import Sampling
from aep_lib.corpora import load_prompts, prompt_text
from aep_lib.params import ParamsError, load_grid, validate


def write(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_a_grid_file_with_comma_lists(tmp_path):
    grid = load_grid(write(tmp_path, 'models: "smollm2-135m, gemma-3-270m"\nprompts: "p01,p02"\nn_seeds: 3\n'
                                     "seed_offset: 10\ntop_p: 0.9\n"))
    assert grid.models == ["smollm2-135m", "gemma-3-270m"] and grid.prompts == ["p01", "p02"]
    assert grid.seeds == [10, 11, 12]
    assert grid.sampling == Sampling(top_p=0.9)


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, 'models: "smollm2-135m"\nprompts: "p01"\ntempreature: 0.7\n')
    with pytest.raises(ParamsError) as err:
        load_grid(path)
    assert str(path) in str(err.value) and "unknown key 'tempreature'" in str(err.value)


@pytest.mark.parametrize("line, key", [("top_p: 1.5", "top_p"), ("temperature: -1", "temperature"),
                                       ("n_seeds: many", "n_seeds"), ("on_eos: maybe", "on_eos"),
                                       ("max_new_tokens: 0", "max_new_tokens")])
def test_wrong_types_and_impossible_values_name_the_key(tmp_path, line, key):
    path = write(tmp_path, f'models: "smollm2-135m"\nprompts: "p01"\n{line}\n')
    with pytest.raises(ParamsError, match=f"key '{key}'"):
        load_grid(path)


def test_unknown_prompt_id_lists_the_known_ones(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown prompt id\(s\) \['p99'\].*p01"):
        load_grid(write(tmp_path, 'models: "smollm2-135m"\nprompts: "p01,p99"\n'))
    with pytest.raises(ParamsError, match="unknown prompt id 'p99'"):
        prompt_text("p99")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_grid(tmp_path / "nope.yaml")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_grid(write(tmp_path, "models: [unclosed\n"))
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_grid(write(tmp_path, "- a\n- b\n"))


def test_sampling_labels_and_degenerate_cases():
    assert Sampling().label == "t1_k0_p1_eos-suppress"
    assert Sampling(temperature=0).greedy and Sampling(top_k=1).greedy and not Sampling().greedy
    with pytest.raises(ParamsError, match="key 'top_k'"):
        validate(Sampling, {"top_k": -1})


def test_prompts_file_has_the_ids_the_profiles_use():
    prompts = load_prompts()
    assert {"p01", "p02", "p03", "p04"} <= set(prompts) and all(prompts.values())


def test_a_grid_may_place_its_models_across_devices(tmp_path):
    from aep_lib.runs.grids import grid_placement

    path = tmp_path / "g.yaml"
    path.write_text("models: a/b\nprompts: p01\ndevice_map: auto\nmax_memory: '0=70GiB, 1=70GiB, cpu=200GiB'\n")
    g = load_grid(path)
    assert g.device_map == "auto" and g.max_memory == {"0": "70GiB", "1": "70GiB", "cpu": "200GiB"}
    placement = grid_placement(g)
    assert placement.gpus == 2 and placement.kwargs()["max_memory"] == {0: "70GiB", 1: "70GiB", "cpu": "200GiB"}
    path.write_text("models: a/b\nprompts: p01\ndevice_map: auto\nmax_memory: {cpu: 51MB, disk: 1TB}\n")
    assert grid_placement(load_grid(path)).gpus == 0
    path.write_text("models: a/b\nprompts: p01\n")
    assert grid_placement(load_grid(path)) is None


@pytest.mark.parametrize("lines, message", [
    ("device_map: everywhere\n", "key 'device_map'"),
    ("device_map: auto\nmax_memory: 'gpu0=1GiB'\n", "unknown device 'gpu0'"),
    ("device_map: auto\nmax_memory: {cpu: lots}\n", "size 'lots' of device cpu"),
    ("device_map: auto\nmax_memory: 'cpu'\n", "DEVICE=SIZE"),
    ("max_memory: {cpu: 1GiB}\n", "max_memory needs a device_map"),
])
def test_a_bad_placement_in_a_grid_is_a_one_line_error(tmp_path, lines, message):
    path = tmp_path / "g.yaml"
    path.write_text("models: a/b\nprompts: p01\n" + lines)
    with pytest.raises(ParamsError) as err:
        load_grid(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
