"""The workflow as users live it: where a figure goes (aep_lib.report.placement), what its record keeps,
papermill's exit codes on a failing claim, the gallery's marks and links, and an interrupted ``aep figures``.

Notebooks run here are tiny ones written by the tests (no model loads) or stand-ins for papermill; every
output goes to a temporary ``AEP_OUTPUT_DIR``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from pydantic import BaseModel, ConfigDict  # noqa: E402

from aep_lib import paths  # noqa: E402
from aep_lib.params import load_params_file, notebook_params  # noqa: E402
from aep_lib.report import figure_index, figures, gallery, pipeline  # noqa: E402

BIN = Path(sys.executable).parent
PAPERMILL = BIN / "papermill"
SMOKE_PARAMS = paths.params_dir() / "cpu" / "00_smoke.yaml"


def write_notebook(path: Path, parameters: str, code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)
    return path


# A notebook with the parameters of notebooks/00_smoke (so its schema and params/cpu/00_smoke.yaml apply)
# that draws one figure and claims `value >= 1` (no model loads).
SMOKE_PARAMETERS = ('profile = "cpu"\nmodels = "smollm2-135m,gemma-3-270m"\nprompt = "p01"\nmax_new_tokens = 12\n'
                    'value = 2.0')
SMOKE_CODE = """\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import aep_lib.params
from aep_lib.report.figures import claim, save_figure

P = aep_lib.params.notebook_params("00_smoke", {k: v for k, v in globals().items() if k != "value"})
fig, ax = plt.subplots()
ax.plot([0, 1], [0, value])
claim("value at least 1", value, at_least=1)
save_figure(fig, "t_smoke_figure", caption="A line.")
"""


@pytest.fixture
def no_pending_claims(monkeypatch):
    monkeypatch.setattr(figures, "_PENDING", [])


@pytest.fixture
def out(tmp_path, monkeypatch):
    root = tmp_path / "out"
    monkeypatch.setenv("AEP_OUTPUT_DIR", str(root))
    for var in ("AEP_PROFILE", "AEP_NOTEBOOK", "AEP_PARAMS_FILE", "AEP_EXECUTION", "AEP_PARAMS_OVERRIDES",
                "JPY_SESSION_NAME"):
        monkeypatch.delenv(var, raising=False)
    return root


def _papermill(tmp_path: Path, out: Path, notebook: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEP_", "PYTEST_"))}
    env.update(AEP_OUTPUT_DIR=str(out), HF_HUB_OFFLINE="1")
    return subprocess.run([str(PAPERMILL), str(notebook), str(tmp_path / "executed.ipynb"), *args],
                          cwd=paths.project_root(), env=env, capture_output=True, text=True, timeout=300)


# --- where a figure goes ----------------------------------------------------------------------------


def test_papermill_with_profile_scratch_writes_nothing_under_cpu(tmp_path, out):
    nb = write_notebook(tmp_path / "t_smoke.ipynb", SMOKE_PARAMETERS, SMOKE_CODE)
    done = _papermill(tmp_path, out, nb, "-p", "profile", "scratch", "-p", "max_new_tokens", "3")
    assert done.returncode == 0, done.stderr
    assert not (out / "cpu").exists()
    png = out / "scratch" / "scratch" / "figures" / "t_smoke_figure.png"
    assert png.is_file()
    (record,) = json.loads(png.with_suffix(".json").read_text())
    assert record["profile"] == "scratch" and record["matches_profile"] is False
    assert record["parameters"]["max_new_tokens"] == 3 and record["notebook"] == "00_smoke"
    # the run says where the figure and the store went, and ipykernel's TCP warning is gone
    assert f"t_smoke_figure: figure {png}" in done.stderr and f"store {out / 'scratch' / 'store'}" in done.stderr
    assert "without encryption" not in done.stderr


def test_an_interactive_run_with_small_parameters_leaves_the_profile_figure_alone(out, no_pending_claims):
    """fig01 run in JupyterLab with a 1-seed grid: its figure goes to scratch/, the profile's PNG stays."""
    profile_png = out / "cpu" / "figures" / "fig01_self_convergence.png"
    profile_png.parent.mkdir(parents=True)
    profile_png.write_bytes(b"the profile's figure")
    small = notebook_params("fig01_self_convergence", {"profile": "cpu", "models": "smollm2-135m",
                                                       "prompts": "p01", "n_seeds": 1, "max_new_tokens": 8})
    fig = plt.figure()
    namespace = {"P": small, "fig": fig, "save_figure": figures.save_figure}
    exec("save_figure(fig, 'fig01_self_convergence', caption='Convergence.')", namespace)  # a notebook cell
    plt.close(fig)
    assert profile_png.read_bytes() == b"the profile's figure"
    assert not profile_png.with_suffix(".json").exists()
    (record,) = json.loads((out / "cpu" / "scratch" / "figures" / "fig01_self_convergence.json").read_text())
    assert record["notebook"] == "fig01_self_convergence" and record["folder"] == "scratch/figures"
    assert record["parameters"] == small.model_dump(mode="json")
    assert record["matches_profile"] is False
    assert record["profile_params_file"] == "params/cpu/fig01_self_convergence.yaml"
    assert record["differs_from_profile"]["n_seeds"] == [1, 4]
    assert "n_seeds 1 (profile 4)" in record["not_profile_reason"]


def test_a_token_view_follows_the_same_rule_as_the_figures(out):
    """app_detection_benchmark's token view: the profile's parameters write beside the profile's figures,
    a small interactive run beside the scratch figures, never over the profile's page."""
    from aep_lib.report import tokenview

    name = "app_detection_benchmark"
    profile_page = out / "cpu" / "figures" / "tv.html"
    profile_page.parent.mkdir(parents=True)
    profile_page.write_text("the profile's page")
    small = notebook_params(name, {"profile": "cpu", "n_texts": 2})
    namespace = {"P": small, "save_token_view": tokenview.save_token_view}
    exec("path = save_token_view('<p>x</p>', 'tv')", namespace)  # a notebook cell
    assert namespace["path"] == out / "cpu" / "scratch" / "figures" / "tv.html"
    assert profile_page.read_text() == "the profile's page"
    namespace = {"P": load_params_file(paths.params_dir() / "cpu" / f"{name}.yaml"),
                 "save_token_view": tokenview.save_token_view}
    exec("path = save_token_view('<p>y</p>', 'tv')", namespace)
    assert namespace["path"] == profile_page and "<p>y</p>" in profile_page.read_text()


def test_the_profiles_parameters_write_the_profiles_figure_and_a_failing_claim_raises(out, no_pending_claims,
                                                                                       capsys):
    p = load_params_file(paths.params_dir() / "cpu" / "fig01_self_convergence.yaml")
    fig = plt.figure()
    figures.claim("share", 0.5, at_least=0.9)
    with pytest.raises(figures.ClaimNotHeld, match=r"claim 'share' = 0.50 does not hold \(>= 0.9\)"):
        figures.save_figure(fig, "fig01_self_convergence", caption="c", params=p)
    (record,) = json.loads((out / "cpu" / "figures" / "fig01_self_convergence.json").read_text())
    assert record["matches_profile"] is True and record["differs_from_profile"] == {}
    assert record["parameters"] == p.model_dump(mode="json") and record["folder"] == "figures"
    assert "the cpu profile's parameters" in capsys.readouterr().err

    other = p.model_copy(update={"n_seeds": 1})
    figures.claim("share", 0.5, at_least=0.9)
    # not the profile's: no raise; nothing returned (a notebook cell ending with it shows no Out[])
    assert figures.save_figure(fig, "fig01_self_convergence", caption="c", params=other) is None
    plt.close(fig)
    err = capsys.readouterr().err
    assert "FAIL fig01_self_convergence: claim 'share' = 0.50 does not hold (>= 0.9)" in err
    assert len(json.loads((out / "cpu" / "figures" / "fig01_self_convergence.json").read_text())) == 1


def test_papermill_fails_on_a_failing_claim_only_with_the_profiles_parameters(tmp_path, out):
    nb = write_notebook(tmp_path / "t_smoke.ipynb", SMOKE_PARAMETERS, SMOKE_CODE)
    profile_run = _papermill(tmp_path, out, nb, "-f", str(SMOKE_PARAMS), "-p", "value", "0.5")
    assert profile_run.returncode != 0
    assert "ClaimNotHeld" in profile_run.stderr and "does not hold (>= 1)" in profile_run.stderr
    assert (out / "cpu" / "figures" / "t_smoke_figure.png").is_file()  # written, then the run failed

    scratch_run = _papermill(tmp_path, out, nb, "-f", str(SMOKE_PARAMS), "-p", "value", "0.5",
                             "-p", "max_new_tokens", "3")
    assert scratch_run.returncode == 0, scratch_run.stderr
    assert "FAIL t_smoke_figure: claim 'value at least 1' = 0.50 does not hold (>= 1)" in scratch_run.stderr
    assert (out / "cpu" / "scratch" / "figures" / "t_smoke_figure.png").is_file()


# --- aep figures -p, the gallery and the index ---------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str = "cpu"


class FigSchema(_Strict):
    title: str = "a"
    scale: float = 1.0


FIG_CODE = """\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from aep_lib.report.figures import save_figure

fig, ax = plt.subplots()
ax.plot([0, 1], [0, scale])
save_figure(fig, f"fig_{title}", caption=f"A line of slope {scale}.")
"""


@pytest.fixture
def project(tmp_path, out):
    nbs, params = tmp_path / "notebooks", tmp_path / "params" / "cpu"
    nbs.mkdir()
    params.mkdir(parents=True)
    write_notebook(nbs / "t_fig.ipynb", 'profile = "cpu"\ntitle = "a"\nscale = 1.0', FIG_CODE)
    write_notebook(nbs / "t_two.ipynb", 'profile = "cpu"\ntitle = "two"\nscale = 1.0', FIG_CODE)
    (params / "t_fig.yaml").write_text("scale: 2.0\n")
    (params / "t_two.yaml").write_text("title: two\n")
    return dict(notebooks_dir=nbs, params_root=tmp_path / "params",
                schemas={"t_fig": FigSchema, "t_two": FigSchema}), out / "cpu"


def test_aep_figures_with_a_parameter_writes_to_scratch_and_the_gallery_marks_it(project):
    dirs, cpu = project
    (result,) = pipeline.run_figures("cpu", only=["t_fig"], params={"scale": 5.0}, **dirs)
    assert result["status"] == "ok", result["error"]
    assert not (cpu / "figures").exists() and Path(result["output"]).parent == cpu / "scratch"
    (record,) = result["figures"]
    assert record["matches_profile"] is False and record["parameters"]["scale"] == 5.0
    assert record["differs_from_profile"] == {"scale": [5.0, 2.0]}
    page = (cpu / "scratch" / "index.html").read_text()
    assert 'class="card scratch"' in page and "not the profile's parameters</span>" in page
    assert 'src="figures/fig_a.png"' in page and (cpu / "scratch" / "figures" / "fig_a.png").is_file()
    assert "- parameters: **not the profile's**: scale 5.0 (profile 2.0)" in (cpu / "scratch" / "index.md").read_text()

    (plain,) = pipeline.run_figures("cpu", only=["t_fig"], **dirs)  # the profile's own: no mark
    assert plain["figures"][0]["matches_profile"] is True and (cpu / "figures" / "fig_a.png").is_file()
    assert "scratch" not in (cpu / "index.html").read_text().split("<main")[1]
    with pytest.raises(Exception, match="no selected notebook"):
        pipeline.run_figures("cpu", only=["t_fig"], params={"n_sedes": 1}, **dirs)


def test_links_are_relative_paths_and_index_md_escapes(tmp_path):
    out_dir = tmp_path / "cpu"
    (out_dir / "figures").mkdir(parents=True)
    (out_dir / "javascript:alert(4).ipynb").write_text("{}")
    (out_dir / "figures" / "x.png").write_bytes(b"png")
    record = {"name": "x", "caption": "<img src=x onerror=alert(1)> [a](javascript:alert(2))", "numbers": {},
              "run_ids": [], "claims": [], "notebook": "javascript:alert(4)", "params_file": None,
              "git_sha": "abc", "versions": {}, "time": "t"}
    (out_dir / "figures" / "x.json").write_text(json.dumps([record]))
    state = figure_index.state_from_records(out_dir)
    state["<b>run</b>"] = {**state.pop("javascript:alert(4)"), "name": "<b>run</b>"}
    index = figure_index.render_index(out_dir, state).read_text()
    page = (out_dir / "index.html").read_text()
    for target in re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r"(?<!\\)\]\(([^)]*)\)", index):
        assert not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target), target
    assert 'href="javascript%3Aalert%284%29.ipynb"' in page
    assert "<img" not in index and "&lt;img src=x onerror=alert(1)&gt;" in index
    assert "<b>" not in index and "## &lt;b&gt;run&lt;/b&gt;" in index
    assert "\\[a\\](javascript:alert(2))" in index
    assert gallery.relative_href("/etc/passwd") is None
    assert gallery.relative_href("figures/a b.png") == "figures/a%20b.png"


# --- an interrupted aep figures -------------------------------------------------------------------------


def test_an_interrupted_execution_is_marked_in_the_index(project, monkeypatch):
    import papermill

    dirs, cpu = project
    pipeline.run_figures("cpu", **dirs)  # both ok

    def execute(input_path, output_path, parameters, **kw):
        Path(output_path).write_text("{}")  # the half-run notebook
        if Path(input_path).stem == "t_two":
            raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    with pytest.raises(pipeline.Interrupted) as stop:
        pipeline.run_figures("cpu", **dirs)
    assert stop.value.result["name"] == "t_two" and stop.value.result["status"] == "interrupted"
    state = json.loads((cpu / "index.json").read_text())
    assert state["t_two"]["status"] == "interrupted" and state["t_fig"]["status"] == "ok"
    assert "## t_two\n\n- status: **interrupted**" in (cpu / "index.md").read_text()
    assert '<span class="fail">interrupted</span>' in (cpu / "index.html").read_text()
    assert pipeline.interrupted_line(stop.value, "cpu").startswith("interrupted: t_two stopped part-way")


def test_the_cli_prints_one_interrupted_line_and_exits_130(monkeypatch):
    from typer.testing import CliRunner

    from aep_lib.cli import app

    def interrupted(*args, **kwargs):
        raise pipeline.Interrupted({"name": "fig01_self_convergence", "status": "interrupted"})

    monkeypatch.setattr(pipeline, "run_figures", interrupted)
    done = CliRunner().invoke(app, ["figures", "--only", "fig01"])
    assert done.exit_code == 130
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert lines == ["interrupted: fig01_self_convergence stopped part-way; the index of profile cpu marks it "
                     "interrupted"]


RUNNER = """\
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from pydantic import BaseModel, ConfigDict
from aep_lib.report import pipeline

class S(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str = "cpu"

root = Path(sys.argv[1])
try:
    pipeline.run_figures("cpu", notebooks_dir=root / "notebooks", params_root=root / "params",
                         schemas={"t_slow": S}, output_root=root / "out", progress=True)
except KeyboardInterrupt as stop:
    print(pipeline.interrupted_line(stop, "cpu"), file=sys.stderr)
    sys.exit(130)
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_ctrl_c_during_a_real_execution_stops_cleanly(tmp_path):
    """SIGINT while a kernel runs a cell: one ``interrupted`` line, no traceback, the index says so."""
    started = tmp_path / "started"
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "cpu").mkdir(parents=True)
    write_notebook(tmp_path / "notebooks" / "t_slow.ipynb", 'profile = "cpu"',
                   f"import pathlib, time\npathlib.Path({str(started)!r}).write_text('x')\ntime.sleep(600)")
    (tmp_path / "params" / "cpu" / "t_slow.yaml").write_text("profile: cpu\n")
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEP_", "PYTEST_"))}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "runner.py"), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not started.exists():  # the cell is running: the kernel wrote its marker
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "zmq" not in err.lower()
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "interrupted: t_slow stopped part-way; the index of profile cpu marks it interrupted"]
    state = json.loads((tmp_path / "out" / "cpu" / "index.json").read_text())
    assert state["t_slow"]["status"] == "interrupted"
    executed = nbformat.read(tmp_path / "out" / "cpu" / "t_slow.ipynb", 4)
    assert executed.cells[-1].outputs[-1].get("ename") == "KeyboardInterrupt"  # the part that ran
