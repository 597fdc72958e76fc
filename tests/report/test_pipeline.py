"""aep_lib.report.pipeline: params files -> executed notebooks, figures, index.md (tiny notebooks, no models)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from pydantic import BaseModel, ConfigDict  # noqa: E402

from aep_lib.params import ParamsError  # noqa: E402
from aep_lib.report import figures, pipeline  # noqa: E402


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
from aep_lib.report.figures import claim, save_figure

fig, ax = plt.subplots()
ax.plot([0, 1], [0, scale])
claim("slope at least 1", scale, at_least=1)
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


def test_run_figures_records_figures_failures_and_index(project, capfd):
    dirs, out = project
    log = io.StringIO()  # not a terminal: one line per execution, no bars
    results = pipeline.run_figures("cpu", progress=True, stream=log, **dirs)
    by_name = {r["name"]: r for r in results}
    assert sorted(by_name) == ["t_fail", "t_fig__title=a", "t_fig__title=b__scale=3.0"]

    fail = by_name["t_fail"]
    assert fail["status"] == "failed" and fail["error"] == "ValueError: kaboom"
    # cell 0 holds the defaults, cell 1 papermill's injected parameters, cell 2 the code that raised
    assert fail["cell"] == "cell 2 (In [3]) `raise ValueError(message)`"
    assert (out / "t_fail.ipynb").is_file()  # the partial notebook is kept for inspection

    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 6
    assert lines[0] == "[1/3] t_fail ..."
    assert lines[1].startswith("[1/3] FAILED t_fail (") and lines[1].split(" s) ")[1].startswith(
        "in cell 2 (In [3]) `raise ValueError(message)`: ValueError: kaboom [")
    assert lines[3].startswith("[2/3] ok     t_fig__title=a (")
    # the kernels ran over IPC: ipykernel printed no transport warning on the stderr they inherit
    assert "without encryption" not in capfd.readouterr().err

    for title, slope, name in [("a", 2.0, "t_fig__title=a"), ("b", 3.0, "t_fig__title=b__scale=3.0")]:
        r = by_name[name]
        assert r["status"] == "ok", r["error"]
        assert (out / f"{name}.ipynb").is_file()
        assert (out / "figures" / f"fig_{title}.png").stat().st_size > 0
        assert (out / "figures" / f"fig_{title}.svg").is_file()
        (record,) = json.loads((out / "figures" / f"fig_{title}.json").read_text())
        assert record["numbers"] == {"slope": slope} and record["notebook"] == name
        assert record["claims"] == [{"name": "slope at least 1", "value": slope, "shown": f"{slope:.2f}",
                                     "at_least": 1, "at_most": None, "holds": True}]
        assert record["params_file"].endswith("t_fig.yaml") and record["profile"] == "cpu"
        assert [f["name"] for f in r["figures"]] == [f"fig_{title}"]

    index = (out / "index.md").read_text()
    assert "## t_fail" in index and "**failed**" in index and "ValueError: kaboom" in index
    assert "- status: **failed** in cell 2 (In [3]) `raise ValueError(message)`: `ValueError: kaboom`" in index
    gallery = (out / "index.html").read_text()  # written beside index.md by the same call (tests/report/test_gallery.py)
    assert gallery.count('<article class="card') == 2 and 'src="figures/fig_a.png"' in gallery
    assert "## t_fig__title=a" in index and "![fig_a](figures/fig_a.png)" in index
    assert "A line of slope 3.0." in index and "slope = 3.0" in index
    assert "- claims: 1 of 1 hold" in index and "  - ok: slope at least 1 = 3.00 (>= 1)" in index
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


def test_plan_merges_the_shared_grid_under_each_member_and_refuses_repeats(tmp_path):
    """``params/<profile>/shared/self_grid.yaml`` under the project's own notebooks: every member's execution
    gets its keys (what papermill injects), a ``_runs`` entry included; the shared folder is no notebook."""
    folder = tmp_path / "cpu"
    (folder / "shared").mkdir(parents=True)
    grid = {"models": "a,b", "prompts": "p01,p02", "n_seeds": 2, "n_seeds_truncated": 1, "top_p": 0.8,
            "max_new_tokens": 16, "batch_size": 4, "device": "cpu", "dtype": "float32"}
    (folder / "shared" / "self_grid.yaml").write_text("".join(f"{k}: {v}\n" for k, v in grid.items()))
    (folder / "fig05_convergence_all_models.yaml").write_text("profile: cpu\n")
    (folder / "fig12_prompt_scatter.yaml").write_text("_runs:\n  - {prompt: p01}\n  - {prompt: p02}\n")
    executions = pipeline.plan("cpu", params_root=tmp_path)
    assert [ex.name for ex in executions] == ["fig05_convergence_all_models", "fig12_prompt_scatter__prompt=p01",
                                              "fig12_prompt_scatter__prompt=p02"]
    for ex in executions:
        assert {k: ex.values[k] for k in grid} == grid and ex.values["profile"] == "cpu"
    assert executions[2].values["prompt"] == "p02"
    (folder / "fig05_convergence_all_models.yaml").write_text("profile: cpu\nmax_new_tokens: 32\n")
    with pytest.raises(ParamsError, match=r"fig05_convergence_all_models\.yaml: key\(s\) \['max_new_tokens'\] "
                                          r"belong to the shared self_grid"):
        pipeline.plan("cpu", params_root=tmp_path)


def test_main_exit_code(monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "run_figures", lambda *a, **k: [
        {"name": "x", "status": "failed", "error": "E: e", "seconds": 0.1, "output": "/o/cpu/x.ipynb"}])
    assert pipeline.main(["--profile", "cpu"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["0 ok, 1 failed in 0 s", "FAILED x (0.1 s): E: e", "index: /o/cpu/index.md",
                   "gallery: /o/cpu/index.html"]


# --- progress and the kernel transport ---------------------------------------------------------------


RESULTS = [{"name": "fig01", "status": "ok", "error": None, "seconds": 12.3},
           {"name": "fig02", "status": "failed", "error": "ValueError: boom", "seconds": 4.0,
            "cell": "cell 5 (In [4]) `plot(x)`"}]


def test_result_and_summary_lines():
    assert [pipeline.result_line(r) for r in RESULTS] == [
        "ok     fig01 (12.3 s)", "FAILED fig02 (4.0 s) in cell 5 (In [4]) `plot(x)`: ValueError: boom"]
    assert pipeline.summary_lines(RESULTS, Path("/o/cpu/index.md")) == [
        "1 ok, 1 failed in 16 s", "FAILED fig02 (4.0 s) in cell 5 (In [4]) `plot(x)`: ValueError: boom",
        "index: /o/cpu/index.md", "gallery: /o/cpu/index.html"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_lines_elsewhere():
    term = _Terminal()
    bar = pipeline.Progress(2, stream=term)
    assert bar.tty  # papermill's cell bar is asked for only then (_execute's cell_progress)
    for r in RESULTS:
        bar.start(r["name"])
        bar.done(r)
    bar.close()
    shown = term.getvalue()
    assert "| fig01" in shown and "2/2" in shown and "ok 1 failed 1" in shown  # running name, count, tallies
    assert "\r" in shown  # redrawn in place
    assert "[2/2] FAILED fig02 (4.0 s) in cell 5" in shown  # each finished execution printed above the bar

    log = io.StringIO()
    plain = pipeline.Progress(2, stream=log)
    assert not plain.tty
    plain.start("fig01")
    plain.done(RESULTS[0])
    assert log.getvalue().startswith("[1/2] fig01 ...\n[1/2] ok     fig01 (12.3 s) [")

    quiet = io.StringIO()
    off = pipeline.Progress(2, stream=quiet, enabled=False)
    off.start("fig01")
    off.done(RESULTS[0])
    off.close()
    assert quiet.getvalue() == "" and not off.tty


@pytest.mark.skipif(os.name == "nt", reason="IPC transport is POSIX-only")
def test_kernels_use_ipc_so_ipykernel_has_no_tcp_warning():
    km = pipeline.kernel_manager_class()(kernel_name="python3")
    assert km.transport == "ipc"


@pytest.mark.skipif(os.name == "nt", reason="IPC transport is POSIX-only")
def test_two_kernels_started_at_once_get_sockets_of_their_own():
    """Kernels that two processes start at the same moment (parallel test workers) must not share sockets:
    jupyter_client's default prefix ``kernel-ipc`` in the current folder made them collide."""
    import asyncio

    from jupyter_core.paths import jupyter_runtime_dir

    managers = [pipeline.kernel_manager_class()(kernel_name="python3") for _ in range(2)]
    prefixes = [km.ip for km in managers]
    assert prefixes[0] != prefixes[1]
    assert all(Path(p).parent == Path(jupyter_runtime_dir()) for p in prefixes)

    async def start_both_and_ask_each():
        await asyncio.gather(*(km.start_kernel() for km in managers))
        try:
            for km in managers:
                client = km.client()
                client.start_channels()
                await client.wait_for_ready(timeout=120)
                client.stop_channels()
        finally:
            await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers))

    asyncio.run(start_both_and_ask_each())


# --- claims -----------------------------------------------------------------------------------------


@pytest.fixture
def no_pending_claims(monkeypatch):
    """A fresh list of pending claims (other tests may leave some in this process)."""
    monkeypatch.setattr(figures, "_PENDING", [])


def test_claims_land_in_the_next_figure_record_only(tmp_path, monkeypatch, no_pending_claims):
    monkeypatch.setenv("AEP_OUTPUT_DIR", str(tmp_path))
    fig = plt.figure()
    assert figures.claim("share", 0.9375, at_least=0.8) is True
    assert figures.claim("z", float("nan"), at_most=2) is False
    figures.claim("observed", 1.234)
    figures.save_figure(fig, "f1", caption="c")
    figures.save_figure(fig, "f2", caption="c")
    plt.close(fig)
    # called from a test, not a notebook: no notebook parameters, so not the profile's (placement)
    (f1,) = json.loads((tmp_path / "cpu" / "scratch" / "figures" / "f1.json").read_text())
    assert f1["claims"] == [
        {"name": "share", "value": 0.9375, "shown": "0.94", "at_least": 0.8, "at_most": None, "holds": True},
        {"name": "z", "value": None, "shown": "nan", "at_least": None, "at_most": 2, "holds": False},
        {"name": "observed", "value": 1.234, "shown": "1.23", "at_least": None, "at_most": None, "holds": True}]
    (f2,) = json.loads((tmp_path / "cpu" / "scratch" / "figures" / "f2.json").read_text())
    assert f2["claims"] == []  # recorded once, then forgotten
    assert [figures.claim_failure(c) for c in f1["claims"]] == [None, "claim 'z' = nan does not hold (<= 2)", None]


def test_a_claim_that_does_not_hold_fails_the_execution(project, monkeypatch, no_pending_claims):
    """In-process stand-in for papermill: the notebook prints its claims and saves one figure."""
    import papermill

    def execute(input_path, output_path, parameters, **kw):
        Path(output_path).write_text("{}")
        if Path(input_path).stem == "t_fig":
            fig = plt.figure()
            figures.claim("share within 2σ under q", 0.41, at_least=0.9)
            figures.claim("mean D", 0.01, at_least=-0.25, at_most=0.25)
            figures.save_figure(fig, f"fig_{parameters['title']}", caption="c")
            plt.close(fig)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    dirs, out = project
    results = {r["name"]: r for r in pipeline.run_figures("cpu", **dirs)}
    r = results["t_fig__title=a"]
    assert r["status"] == "failed"
    assert r["error"] == "claim 'share within 2σ under q' = 0.41 does not hold (>= 0.9)"
    assert [c["holds"] for c in r["figures"][0]["claims"]] == [False, True]
    assert results["t_fail"]["status"] == "ok"  # its stand-in raised nothing and claimed nothing
    index = (out / "index.md").read_text()
    assert "does not hold (>= 0.9)" in index and "- claims: 1 of 2 hold" in index
    assert "  - FAIL: share within 2σ under q = 0.41 (>= 0.9)" in index
    assert "  - ok: mean D = 0.01 (>= -0.25 and <= 0.25)" in index
    monkeypatch.setattr(pipeline, "run_figures", lambda *a, **k: list(results.values()))
    assert pipeline.main(["--profile", "cpu"]) == 1


class DtypeSchema(_Strict):
    dtype: str = "auto"


def test_a_dtype_runs_every_notebook_that_has_one_in_it_into_its_own_folder(project):
    """``run_figures(dtype=...)``: the notebooks with a dtype parameter get it, the others run as they are,
    everything lands under ``dtype-<dtype>/``; an unknown dtype is refused before anything runs."""
    dirs, out = project
    nbs = dirs["notebooks_dir"]
    _notebook(nbs / "t_dtype.ipynb", 'profile = "cpu"  # profile\ndtype = "auto"  # model dtype',
              "print(f'dtype is {dtype}')")
    (dirs["params_root"] / "cpu" / "t_dtype.yaml").write_text("dtype: float32\n")
    dirs["schemas"] = {**SCHEMAS, "t_dtype": DtypeSchema}
    results = {r["name"]: r for r in pipeline.run_figures("cpu", only=["t_dtype", "t_fig"], dtype="bfloat16", **dirs)}
    assert set(results) == {"t_dtype", "t_fig__title=a", "t_fig__title=b__scale=3.0"}
    executed = out.parent / "dtype-bfloat16" / "cpu"
    assert all(Path(r["output"]).parent == executed for r in results.values())
    printed = "".join(o.get("text", "") for c in nbformat.read(executed / "t_dtype.ipynb", 4).cells
                      for o in c.get("outputs", []))
    assert "dtype is bfloat16" in printed
    assert (executed / "index.md").is_file() and not (out / "t_dtype.ipynb").exists()
    with pytest.raises(ParamsError, match="dtype 'bf16'"):
        pipeline.run_figures("cpu", only=["t_dtype"], dtype="bf16", **dirs)
