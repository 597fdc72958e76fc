"""One vocabulary of parameter names: every notebook's parameters cell is typed by it, with the cell's values as
defaults; rules and limits attached by notebook name; docs/parameters.md shows the same table."""

from __future__ import annotations

import json

import pytest

from aep_lib.params import NOTEBOOK_SCHEMAS, SHARED_GRIDS, VOCABULARY, ParamsError, notebook_params, validate
from aep_lib.params.cells import notebook_names, parameters_cell
from aep_lib.params.notebooks import NOTEBOOK_RULES, rules_table, shared_grids_table
from aep_lib.params.schemas import notebook_schema
from aep_lib.params.vocabulary import vocabulary_table
from aep_lib.paths import project_root


def test_every_notebook_parameter_is_a_vocabulary_name_and_defaults_to_its_cell():
    names = notebook_names()
    assert len(names) >= 20 and set(NOTEBOOK_SCHEMAS) == set(names)
    for name in names:
        cell = parameters_cell(name)
        schema = NOTEBOOK_SCHEMAS[name]
        assert list(schema.model_fields) == list(cell), name
        assert set(cell) <= set(VOCABULARY), f"{name}: {sorted(set(cell) - set(VOCABULARY))} not in the vocabulary"
        assert validate(schema, {}) == validate(schema, cell), f"{name}: defaults are not the cell's values"


def test_rules_and_shared_grids_name_existing_notebooks_and_their_parameters():
    names = set(notebook_names())
    assert set(NOTEBOOK_RULES) <= names
    for grid in SHARED_GRIDS.values():
        assert set(grid.keys) <= set(VOCABULARY) and len(grid.members) >= 2
        for member in grid.members:
            assert member in names, member
            assert set(grid.keys) <= set(parameters_cell(member)), f"{member} lacks keys of {grid.name}"


def test_every_term_has_one_line_meaning_and_docs_show_the_table():
    for name, term in VOCABULARY.items():
        assert term.meaning and "\n" not in term.meaning and term.kind, name
    assert VOCABULARY["batch_size"].bounds == ">= 1, <= 4096"
    assert VOCABULARY["dtype"].bounds == "one of auto, float32, bfloat16, float16"
    assert VOCABULARY["scorers"].bounds == "at least 2 entries"
    docs = (project_root() / "docs" / "parameters.md").read_text()
    for table in (vocabulary_table, rules_table, shared_grids_table):
        assert table() in docs, f"docs/parameters.md: paste the output of {table.__module__}.{table.__name__}()"


def test_limits_narrow_one_notebook_only_and_name_the_key():
    with pytest.raises(ParamsError, match="key 'max_new_tokens'.*greater than or equal to 16"):
        validate(NOTEBOOK_SCHEMAS["boredom_confusion"], {"max_new_tokens": 8, "window": 4})
    assert validate(NOTEBOOK_SCHEMAS["fig03_cross_scatter"], {"max_new_tokens": 8}).max_new_tokens == 8
    with pytest.raises(ParamsError, match="key 'max_new_tokens'.*less than or equal to 512"):
        validate(NOTEBOOK_SCHEMAS["00_smoke"], {"max_new_tokens": 513})
    with pytest.raises(ParamsError, match="key 'alpha'.*less than 0.5"):
        validate(NOTEBOOK_SCHEMAS["adversarial_prompts"], {"alpha": 0.5})
    assert validate(NOTEBOOK_SCHEMAS["app_detection_benchmark"], {"alpha": 0.5}).alpha == 0.5
    assert validate(NOTEBOOK_SCHEMAS["app_attribution"], {"lengths": "64,16,64"}).lengths == [16, 64]
    with pytest.raises(ParamsError, match="key 'prompt'.*unknown prompt id"):
        validate(NOTEBOOK_SCHEMAS["00_smoke"], {"prompt": "p99"})


def test_notebook_params_reads_the_namespace_and_refuses_bad_values():
    namespace = {**parameters_cell("fig03_cross_scatter"), "n_seeds": 3, "unrelated": object()}
    P = notebook_params("fig03_cross_scatter", namespace)
    assert P.seeds == [0, 1, 2] and [v.model for v in P.pair()] == ["smollm2-135m", "gemma-3-270m"]
    with pytest.raises(ParamsError, match=r"notebook fig03_cross_scatter parameters: key 'n_seeds'"):
        notebook_params("fig03_cross_scatter", {**namespace, "n_seeds": 0})


def _write_notebook(folder, name, cell: str, ipynb: bool = False):
    if ipynb:
        nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": cell.splitlines(True)},
                        {"cell_type": "code", "metadata": {}, "source": "print(1)"}], "metadata": {}}
        (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    else:
        (folder / f"{name}.py").write_text(f'# %%\nimport x\n\n# %% tags=["parameters"]\n{cell}\n# %%\nprint(1)\n')


def test_cells_are_read_from_py_or_ipynb_and_unknown_names_are_refused(tmp_path):
    _write_notebook(tmp_path, "t_py", 'models = "a,b"  # models\nn_seeds = 2  # seeds\n')
    _write_notebook(tmp_path, "t_nb", 'max_new_tokens = 9  # tokens\nreflow = False  # reflow\n', ipynb=True)
    assert parameters_cell("t_py", tmp_path) == {"models": "a,b", "n_seeds": 2}
    assert parameters_cell("t_nb", tmp_path) == {"max_new_tokens": 9, "reflow": False}
    assert notebook_schema("t_py", tmp_path).model_validate({}).models == ["a", "b"]
    _write_notebook(tmp_path, "t_typo", 'n_sedes = 2  # typo\n')
    with pytest.raises(ParamsError, match=r"t_typo.*\['n_sedes'\] are not in the vocabulary"):
        notebook_schema("t_typo", tmp_path)
    _write_notebook(tmp_path, "t_expr", 'n_seeds = 1 + 1  # not a constant\n')
    with pytest.raises(ParamsError, match=r"t_expr\.py: the parameters cell must hold `name = constant`"):
        parameters_cell("t_expr", tmp_path)
    (tmp_path / "t_none.py").write_text("# %%\nx = 1\n")
    with pytest.raises(ParamsError, match="0 cells tagged 'parameters'"):
        parameters_cell("t_none", tmp_path)
    with pytest.raises(ParamsError, match="no notebook named 'nope'"):
        parameters_cell("nope", tmp_path)
