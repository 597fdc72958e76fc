"""Run the notebooks headlessly: ``params/<profile>/*.yaml`` -> ``outputs/<profile>/``.

Each params file ``params/<profile>/<notebook>.yaml`` names a notebook ``notebooks/<notebook>.ipynb``
and holds the values papermill injects into its ``parameters`` cell, merged over the shared grids the
notebook reads (``params/<profile>/shared/<grid>.yaml``, ``aep_lib.params.read_params_file``). A file may
ask for several executions with a top-level ``_runs`` list; each mapping in it is merged over the file's
other keys::

    models: "smollm2-135m"
    _runs:                      # -> 02_x__prompt=p01.ipynb, 02_x__prompt=p02.ipynb
      - {prompt: p01}
      - {prompt: p02}

Every mapping is validated against ``aep_lib.params.NOTEBOOK_SCHEMAS[<notebook>]`` before anything
executes. Notebooks save figures with ``aep_lib.report.figures.save_figure``, which writes ``figures/<name>.png``
and ``.svg`` plus a JSON record holding the claims the notebook checked with ``aep_lib.report.figures.claim``.
An execution fails when its notebook raises or when one of its figures records a claim that does not
hold (the error names the claim). ``outputs/<profile>/index.md`` then lists every executed notebook with
its status and its figures (caption, numbers, claims with ok/FAIL, params file, run ids, git SHA,
package versions), and ``index.html`` renders the same as a gallery (``aep_lib.report.gallery``).

While it runs, a progress bar over the executions (name, elapsed time, ok/failed so far) and papermill's
cell bar when stderr is a terminal; one line per finished execution otherwise. The kernels talk over IPC
sockets (POSIX), so ipykernel has no reason to warn "Kernel is running over TCP without encryption"
(``kernels``). Ctrl-C stops the running notebook, which the index then marks ``interrupted``.

Where each figure goes is the notebook's own decision (``placement``): values given with ``params``
(``aep figures -p KEY=VALUE``) are not the profile's, so those executions, their index and their figures
go to ``outputs/<profile>/scratch/``.

    results = run_figures("cpu")                  # or: python -m aep_lib.report.pipeline --profile cpu
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .. import paths
from ..params import NOTEBOOK_SCHEMAS, RUNS_KEY, DType, ParamsError, read_params_file, validate
from ..store.provenance import utc_now
from .figure_index import write_index
from .figures import claim_failure
from .kernels import kernel_manager_class, run_interruptibly, tracked
from .placement import OVERRIDES_VAR, SCRATCH
from .profile_settings import ProfileSettings, execution_env, notebook_files, profile_settings


def _rel(path: Path) -> str:
    """``path`` relative to the project root when it lies inside it (as index.md shows it)."""
    try:
        return str(Path(path).resolve().relative_to(paths.project_root()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------
# planning: params files -> validated executions


@dataclass(frozen=True)
class Execution:
    name: str  # output name: the notebook name, or <notebook>__<key>=<value> for a _runs entry
    notebook: str
    notebook_path: Path
    params_file: Path
    values: dict  # injected into the parameters cell as they are in the files (flat scalars, shared grids merged)


def _safe(value) -> str:
    return re.sub(r"[^A-Za-z0-9._,=-]+", "-", str(value))


def expand_runs(path: Path) -> list[tuple[str, dict]]:
    """``[(output name, values)]``: one per ``_runs`` entry, or the file's values once (shared grids merged
    under them: ``read_params_file``)."""
    data = read_params_file(path)
    runs = data.pop(RUNS_KEY, None)
    if runs is None:
        return [(path.stem, data)]
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) and r for r in runs):
        raise ParamsError(f"{path}: {RUNS_KEY!r} must be a non-empty list of non-empty mappings")
    out = [(path.stem + "".join(f"__{_safe(k)}={_safe(v)}" for k, v in run.items()), {**data, **run}) for run in runs]
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ParamsError(f"{path}: {RUNS_KEY!r} entries must differ (output names {names})")
    return out


def plan(
    profile: str,
    only: list[str] | None = None,
    notebooks_dir: Path | None = None,
    params_root: Path | None = None,
    schemas: Mapping[str, type] | None = None,
    overrides: Mapping[str, object] | None = None,
    params: Mapping[str, object] | None = None,
) -> list[Execution]:
    """Every execution that ``params/<profile>/*.yaml`` asks for, all validated (or ``ParamsError``).
    ``overrides``: values that replace the files' for every notebook whose schema has that parameter.
    ``params``: the same, asked for by the user (``aep figures -p KEY=VALUE``): ``ParamsError`` for a key
    that none of the selected notebooks has, and for ``profile``."""
    notebooks_dir = Path(notebooks_dir or paths.notebooks_dir())
    folder = Path(params_root or paths.params_dir()) / profile
    schemas = NOTEBOOK_SCHEMAS if schemas is None else schemas
    files = notebook_files(folder)  # not _profile.yaml and the like (profile_settings)
    if not files:
        raise ParamsError(f"{folder}: no params files for profile {profile!r}")
    if only:
        files = [f for f in files if any(f.stem.startswith(o) for o in only)]
        if not files:
            raise ParamsError(f"{folder}: no params file matches {only}")
    if params and "profile" in params:
        raise ParamsError("-p profile=...: choose the profile with --profile")
    unused = set(params or {}) - {k for f in files if f.stem in schemas for k in schemas[f.stem].model_fields}
    if unused:
        raise ParamsError(f"parameter(s) {sorted(unused)}: no selected notebook of {folder} has them")
    executions = []
    for path in files:
        notebook = path.stem
        if notebook not in schemas:
            raise ParamsError(f"{path}: no notebook schema named {notebook!r}; known: {', '.join(sorted(schemas))}")
        nb_path = notebooks_dir / f"{notebook}.ipynb"
        if not nb_path.is_file():
            raise ParamsError(f"{path}: its notebook {nb_path} does not exist")
        schema = schemas[notebook]
        for name, values in expand_runs(path):
            if "profile" in schema.model_fields:
                values.setdefault("profile", profile)
                if values["profile"] != profile:
                    raise ParamsError(f"{path}: key 'profile' is {values['profile']!r} but the file is under {profile!r}")
            given = {**(overrides or {}), **(params or {})}
            values.update({k: v for k, v in given.items() if k in schema.model_fields})
            validate(schema, values, where=str(path) + (f" ({name})" if name != notebook else ""))
            executions.append(Execution(name, notebook, nb_path, path, values))
    return executions


# ---------------------------------------------------------------------------------------------------
# execution


@contextlib.contextmanager
def _environ(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _failed_cell(err) -> str:
    """``cell 3 (In [4]) `raise ValueError(message)``` from a ``PapermillExecutionError``: where it failed."""
    first = next((line.strip() for line in (err.source or "").splitlines() if line.strip()), "")
    first = first if len(first) <= 60 else first[:57] + "..."
    return f"cell {err.cell_index} (In [{err.exec_count}])" + (f" `{first}`" if first else "")


def _execute(ex: Execution, profile: str, out_dir: Path, output_root: Path, kernel_name: str,
             cell_progress: bool = False, variant: Mapping[str, object] | None = None,
             settings: ProfileSettings | None = None) -> dict:
    import papermill

    settings = settings or ProfileSettings()

    output = out_dir / f"{ex.name}.ipynb"
    execution_id = uuid.uuid4().hex[:12]
    result = {"name": ex.name, "notebook": ex.notebook, "params_file": _rel(ex.params_file), "output": str(output),
              "execution": execution_id, "status": "ok", "error": None, "cell": None, "time": utc_now()}
    start, wall_start = time.perf_counter(), time.time()
    env = dict(AEP_PROFILE=profile, AEP_OUTPUT_DIR=str(output_root), AEP_NOTEBOOK=ex.name,
               AEP_PARAMS_FILE=_rel(ex.params_file), AEP_EXECUTION=execution_id,
               **{OVERRIDES_VAR: json.dumps(dict(variant or {}))}, **execution_env(settings))
    bar = {"desc": ex.name, "leave": False, "unit": "cell"} if cell_progress else False
    try:
        managers: list = []
        with _environ(**env):
            run_interruptibly(lambda: papermill.execute_notebook(
                str(ex.notebook_path), str(output), parameters=ex.values, kernel_name=kernel_name,
                cwd=str(ex.notebook_path.parent), progress_bar=bar, log_output=False,
                kernel_manager_class=tracked(kernel_manager_class(), managers)), managers)
    except papermill.PapermillExecutionError as err:
        if err.ename == "KeyboardInterrupt":  # the kernel got the terminal's Ctrl-C first
            result.update(status=INTERRUPTED, error=INTERRUPTED_ERROR, cell=_failed_cell(err))
            _finish(result, start, output_root / profile, execution_id, wall_start, settings.enforce_claims)
            raise Interrupted(result) from None
        result.update(status="failed", error=f"{err.ename}: {err.evalue}", cell=_failed_cell(err))
    except KeyboardInterrupt:
        result.update(status=INTERRUPTED, error=INTERRUPTED_ERROR)
        _finish(result, start, output_root / profile, execution_id, wall_start, settings.enforce_claims)
        raise Interrupted(result) from None
    except Exception as err:  # the kernel died, the notebook is unreadable, ...
        result.update(status="failed", error=f"{type(err).__name__}: {err}")
    _finish(result, start, output_root / profile, execution_id, wall_start, settings.enforce_claims)
    return result


INTERRUPTED = "interrupted"
INTERRUPTED_ERROR = "interrupted (Ctrl-C): the executed notebook is the part that ran"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during an execution; ``result`` is that execution's, marked ``interrupted``."""

    def __init__(self, result: dict):
        super().__init__(result["name"])
        self.result = result


def _finish(result: dict, start: float, profile_dir: Path, execution_id: str, wall_start: float,
            enforce_claims: bool = True) -> None:
    """Time, figures (in the profile's ``figures/`` or ``scratch/figures/``), token views and claims of a
    finished or interrupted execution. A claim that does not hold fails the execution, unless the profile
    only records its claims (``profile_settings``: ``claims: record``; then ``claims_failed`` lists them)."""
    result["seconds"] = round(time.perf_counter() - start, 1)
    folders = [profile_dir / "figures", profile_dir / SCRATCH / "figures"]
    result["figures"] = [f for folder in folders for f in _figures_of(folder, execution_id)]
    result["token_views"] = sorted({v for folder in folders for v in _token_views_since(folder, wall_start)})
    failed = failed_claims(result["figures"])
    if failed and not enforce_claims:
        result["claims_failed"] = failed
    elif failed and result["status"] == "ok":
        result.update(status="failed", error="; ".join(failed))


def _token_views_since(folder: Path, since: float) -> list[str]:
    """Names of the token views (``figures/<name>.html``, ``tokenview.save_token_view``) written since ``since``."""
    return sorted(p.stem for p in folder.glob("*.html") if p.stat().st_mtime >= since - 1)


def failed_claims(figures: list[dict]) -> list[str]:
    """One message per claim recorded in ``figures`` (figure records) that does not hold."""
    return [msg for fig in figures for c in fig.get("claims") or [] if (msg := claim_failure(c))]


def _figures_of(folder: Path, execution_id: str) -> list[dict]:
    found = []
    for log in sorted(folder.glob("*.json")):
        try:
            records = json.loads(log.read_text())
        except ValueError:
            continue
        found += [r for r in records if r.get("execution") == execution_id]
    return found


def run_figures(
    profile: str = "cpu",
    only: list[str] | None = None,
    output_root: Path | None = None,
    kernel_name: str = "python3",
    notebooks_dir: Path | None = None,
    params_root: Path | None = None,
    schemas: Mapping[str, type] | None = None,
    progress: bool = False,
    stream=None,
    dtype: str | None = None,
    params: Mapping[str, object] | None = None,
) -> list[dict]:
    """Execute the notebooks of one profile into ``<output_root>/<profile>/``; write ``index.md`` and ``index.html``.

    ``only``: notebook names or prefixes. ``output_root``: default ``$AEP_OUTPUT_DIR`` or ``outputs/``.
    ``dtype``: every notebook with a ``dtype`` parameter runs its models in that dtype, into
    ``<output_root>/dtype-<dtype>/<profile>/`` (its own store and figures): whether the claims hold in
    another dtype (``aep figures --dtype bfloat16``).
    ``params``: values that replace the params files' (``aep figures -p KEY=VALUE``): the executions are
    not the profile's, so they and their index go to ``<output_root>/<profile>/scratch/`` and their figures
    to ``scratch/figures/`` (``placement``), never over the profile's.
    ``notebooks_dir``, ``params_root`` and ``schemas`` default to the project's (tests inject their own).
    ``progress``: report on ``stream`` (default stderr) as it goes (``Progress``): a bar and papermill's
    cell bar on a terminal, one line per execution otherwise.
    All params are validated first; a failing notebook is recorded as failed and the rest still run.
    On Ctrl-C the execution that was running is recorded as ``interrupted`` in the index (the others keep
    their entries) and ``Interrupted`` is raised with it.
    Returns one dict per execution: name, notebook, params_file, output, status, error, cell (where a
    notebook raised), seconds, figures, token_views.
    """
    output_root = dtype_output_root(Path(output_root or paths.output_dir()).resolve(), dtype)
    variant = {"dtype": dtype} if dtype else None
    executions = plan(profile, only, notebooks_dir, params_root, schemas, variant, params)
    settings = profile_settings(Path(params_root or paths.params_dir()) / profile)
    out_dir = output_root / profile / (SCRATCH if params else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Progress(len(executions), stream=stream, enabled=progress)
    results = []
    try:
        for ex in executions:
            report.start(ex.name)
            results.append(_execute(ex, profile, out_dir, output_root, kernel_name, cell_progress=report.tty,
                                    variant=variant, settings=settings))
            report.done(results[-1])
    except KeyboardInterrupt as stop:  # Interrupted, or Ctrl-C between two executions
        report.close()
        write_index(out_dir, results + ([stop.result] if isinstance(stop, Interrupted) else []), partial=True)
        raise
    finally:
        report.close()
    write_index(out_dir, results, partial=bool(only) or bool(params))
    return results


def dtype_output_root(output_root: Path, dtype: str | None = None) -> Path:
    """Where ``run_figures(dtype=...)`` writes: ``<output_root>/dtype-<dtype>``, or ``output_root`` itself
    for the params' own dtypes; ``ParamsError`` for an unknown dtype."""
    if dtype is None:
        return output_root
    if dtype not in typing.get_args(DType):
        raise ParamsError(f"dtype {dtype!r}: use one of {', '.join(typing.get_args(DType))}")
    return output_root / f"dtype-{dtype}"


def result_line(r: dict) -> str:
    """``ok     fig01 (12.3 s)`` or ``FAILED t_fail (0.8 s) in cell 2 (In [2]) `raise ...`: ValueError: boom``."""
    where = f" in {r['cell']}" if r.get("cell") else ""
    error = f"{where}: {r['error']}" if r.get("error") else ""
    return f"{'ok' if r['status'] == 'ok' else 'FAILED':6} {r['name']} ({r.get('seconds', '?')} s){error}"


def interrupted_line(stop: KeyboardInterrupt, profile: str) -> str:
    """The one line a run stopped by Ctrl-C prints."""
    name = stop.result["name"] if isinstance(stop, Interrupted) else None
    return (f"interrupted: {name} stopped part-way; the index of profile {profile} marks it interrupted"
            if name else f"interrupted between two executions; the index of profile {profile} keeps what finished")


def summary_lines(results: list[dict], index: Path | None) -> list[str]:
    """The closing lines of a run: counts, the failed executions again, and where the index is."""
    failed = [r for r in results if r["status"] != "ok"]
    lines = [f"{len(results) - len(failed)} ok, {len(failed)} failed"
             + (f" in {sum(r.get('seconds') or 0 for r in results):.0f} s" if results else "")]
    lines += [result_line(r) for r in failed]
    recorded = [r for r in results if r.get("claims_failed")]
    if recorded:  # a profile with claims: record (profile_settings)
        lines.append(f"{len(recorded)} ok execution(s) record claims that do not hold (this profile records claims, "
                     "it does not enforce them): " + ", ".join(r["name"] for r in recorded))
    if index is not None:
        lines += [f"index: {index}", f"gallery: {index.with_suffix('.html')}"]
    return lines


class Progress:
    """What ``run_figures`` shows while it runs, on ``stream`` (default stderr).

    On a terminal: a tqdm bar over the executions (``3/20``, elapsed time, ``ok 2 failed 1``, the one
    running) with papermill's cell bar under it, and a line per finished execution above it. Elsewhere
    (a log, CI): one line when an execution starts and one when it ends, no carriage returns.
    """

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and _isatty(self.stream)
        self.ok = self.failed = 0
        self.started = time.perf_counter()
        self.bar = None
        self._stop = threading.Event()
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="notebook", file=self.stream, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}")
            # redraw every second, so that the elapsed time moves while a long notebook runs
            threading.Thread(target=self._tick, daemon=True, name="aep-figures-progress").start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def _postfix(self, running: str | None) -> str:
        return f"ok {self.ok} failed {self.failed}" + (f" | {running}" if running else "")

    def start(self, name: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(name))
        else:
            print(f"[{self.ok + self.failed + 1}/{self.total}] {name} ...", file=self.stream, flush=True)

    def done(self, result: dict) -> None:
        if result["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
        if not self.enabled:
            return
        line = f"[{self.ok + self.failed}/{self.total}] {result_line(result)}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.set_postfix_str(self._postfix(None), refresh=False)
            self.bar.update(1)
        else:
            print(line + f" [{time.perf_counter() - self.started:.0f} s in all]", file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self.bar is not None:
            self.bar.close()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aep_lib.report.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", action="append", help="notebook name or prefix (repeatable)")
    parser.add_argument("--output-root", type=Path, default=None, help="default $AEP_OUTPUT_DIR or outputs/")
    parser.add_argument("--kernel", default="python3")
    args = parser.parse_args(argv)
    try:
        results = run_figures(args.profile, args.only, args.output_root, args.kernel, progress=True)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(interrupted_line(stop, args.profile), file=sys.stderr)
        return 130
    out_dir = Path(results[0]["output"]).parent if results else None
    for line in summary_lines(results, out_dir / "index.md" if out_dir else None):
        print(line)
    return 1 if any(r["status"] != "ok" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
