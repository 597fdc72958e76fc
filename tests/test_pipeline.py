"""aep_lib.pipeline: params files -> executed notebooks, figures, index.md (tiny notebooks, no models)."""

from __future__ import annotations

import json

import nbformat
import pytest
from pydantic import BaseModel, ConfigDict

from aep_lib import pipeline
from aep_lib.params import ParamsError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str = "cpu"


class FigSchema(_Strict):
    title: str = "a"
    scale: float = 1.0


class FailSchema(_Strict):
    message: str = "boom"


SCHEMAS = {"t_fig": FigSchema, "t_fail": FailSchema}

FIG_CODE = """\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from aep_lib.pipeline import save_figure

fig, ax = plt.subplots()
ax.plot([0, 1], [0, scale])
save_figure(fig, f"fig_{title}", caption=f"A line of slope {scale}.", numbers={"slope": scale},
            run_ids=[f"run{i}" for i in range(7)])
print(f"slope {scale}")
"""


def _notebook(path, parameters: str, code: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """notebooks/ with t_fig (saves a figure) and t_fail (raises); params/cpu/ runs t_fig twice."""
    monkeypatch.setenv("AEP_OUTPUT_DIR", str(tmp_path / "out"))
    nbs, params = tmp_path / "notebooks", tmp_path / "params" / "cpu"
    nbs.mkdir()
    params.mkdir(parents=True)
    _notebook(nbs / "t_fig.ipynb", 'profile = "cpu"  # profile\ntitle = "a"  # name\nscale = 1.0  # slope', FIG_CODE)
    _notebook(nbs / "t_fail.ipynb", 'profile = "cpu"  # profile\nmessage = "boom"  # error',
              "raise ValueError(message)")
    (params / "t_fig.yaml").write_text("scale: 2.0\n_runs:\n  - {title: a}\n  - {title: b, scale: 3.0}\n")
    (params / "t_fail.yaml").write_text("message: kaboom\n")
    return dict(notebooks_dir=nbs, params_root=tmp_path / "params", schemas=SCHEMAS), tmp_path / "out" / "cpu"


def test_expand_runs(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\n_runs:\n  - {b: p01}\n  - {b: org/model, a: 2}\n")
    assert pipeline.expand_runs(path) == [("x__b=p01", {"a": 1, "b": "p01"}), ("x__b=org-model__a=2", {"a": 2, "b": "org/model"})]
    path.write_text("a: 1\n")
    assert pipeline.expand_runs(path) == [("x", {"a": 1})]
    path.write_text("a: 1\n_runs: {b: 1}\n")
    with pytest.raises(ParamsError, match="_runs"):
        pipeline.expand_runs(path)


def test_run_figures_records_figures_failures_and_index(project):
    dirs, out = project
    results = pipeline.run_figures("cpu", **dirs)
    by_name = {r["name"]: r for r in results}
    assert sorted(by_name) == ["t_fail", "t_fig__title=a", "t_fig__title=b__scale=3.0"]

    fail = by_name["t_fail"]
    assert fail["status"] == "failed" and fail["error"] == "ValueError: kaboom"
    assert (out / "t_fail.ipynb").is_file()  # the partial notebook is kept for inspection

    for title, slope, name in [("a", 2.0, "t_fig__title=a"), ("b", 3.0, "t_fig__title=b__scale=3.0")]:
        r = by_name[name]
        assert r["status"] == "ok", r["error"]
        assert (out / f"{name}.ipynb").is_file()
        assert (out / "figures" / f"fig_{title}.png").stat().st_size > 0
        assert (out / "figures" / f"fig_{title}.svg").is_file()
        (record,) = json.loads((out / "figures" / f"fig_{title}.json").read_text())
        assert record["numbers"] == {"slope": slope} and record["notebook"] == name
        assert record["params_file"].endswith("t_fig.yaml") and record["profile"] == "cpu"
        assert [f["name"] for f in r["figures"]] == [f"fig_{title}"]

    index = (out / "index.md").read_text()
    assert "## t_fail" in index and "**failed**" in index and "ValueError: kaboom" in index
    assert "## t_fig__title=a" in index and "![fig_a](figures/fig_a.png)" in index
    assert "A line of slope 3.0." in index and "slope = 3.0" in index
    assert "(+2 more)" in index  # 7 run ids shortened
    assert "torch" in index and "git `" in index


def test_only_filter_keeps_the_other_index_entries(project):
    dirs, out = project
    pipeline.run_figures("cpu", **dirs)
    results = pipeline.run_figures("cpu", only=["t_fail"], **dirs)
    assert [r["name"] for r in results] == ["t_fail"]
    index = (out / "index.md").read_text()
    assert "## t_fig__title=a" in index and "## t_fail" in index
    assert len(json.loads((out / "figures" / "fig_a.json").read_text())) == 1  # t_fig not re-executed


def test_invalid_params_stop_everything_before_execution(project):
    dirs, out = project
    (dirs["params_root"] / "cpu" / "t_fail.yaml").write_text("mesage: typo\n")
    with pytest.raises(ParamsError, match=r"t_fail\.yaml.*'mesage'"):
        pipeline.run_figures("cpu", **dirs)
    assert not out.exists()  # nothing ran, not even the valid t_fig


def test_unknown_notebook_is_an_error_in_production(project):
    dirs, _ = project
    with pytest.raises(ParamsError, match=r"t_fail\.yaml: no notebook schema named 't_fail'"):
        pipeline.run_figures("cpu", notebooks_dir=dirs["notebooks_dir"], params_root=dirs["params_root"])


def test_profile_mismatch_is_an_error(project):
    dirs, _ = project
    (dirs["params_root"] / "cpu" / "t_fail.yaml").write_text("profile: paper\n")
    with pytest.raises(ParamsError, match="profile"):
        pipeline.plan("cpu", **dirs)


def test_main_exit_code(monkeypatch):
    monkeypatch.setattr(pipeline, "run_figures", lambda *a, **k: [
        {"name": "x", "status": "failed", "error": "E: e", "seconds": 0.1, "output": "/o/cpu/x.ipynb"}])
    assert pipeline.main(["--profile", "cpu"]) == 1
