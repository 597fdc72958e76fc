"""Run the notebooks headlessly: ``params/<profile>/*.yaml`` -> ``outputs/<profile>/``.

Each params file ``params/<profile>/<notebook>.yaml`` names a notebook ``notebooks/<notebook>.ipynb``
and holds the values papermill injects into its ``parameters`` cell. A file may ask for several
executions with a top-level ``_runs`` list; each mapping in it is merged over the file's other keys::

    models: "smollm2-135m"
    _runs:                      # -> 02_x__prompt=p01.ipynb, 02_x__prompt=p02.ipynb
      - {prompt: p01}
      - {prompt: p02}

Every mapping is validated against ``aep_lib.params.NOTEBOOK_SCHEMAS[<notebook>]`` before anything
executes. Notebooks save figures with ``aep_lib.report.save_figure``, which writes ``figures/<name>.png``
and ``.svg`` plus a JSON record holding the claims the notebook checked with ``aep_lib.report.claim``.
An execution fails when its notebook raises or when one of its figures records a claim that does not
hold (the error names the claim). ``outputs/<profile>/index.md`` then lists every executed notebook with
its status and its figures (caption, numbers, claims with ok/FAIL, params file, run ids, git SHA,
package versions).

    results = run_figures("cpu")                  # or: python -m aep_lib.pipeline --profile cpu
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from . import paths
from .params import NOTEBOOK_SCHEMAS, ParamsError, read_yaml, validate
from .provenance import git_sha, package_versions, utc_now
from .report import claim_failure, jsonable

RUNS_KEY = "_runs"


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
    values: dict  # injected into the parameters cell as they are in the file (flat scalars)


def _safe(value) -> str:
    return re.sub(r"[^A-Za-z0-9._,=-]+", "-", str(value))


def expand_runs(path: Path) -> list[tuple[str, dict]]:
    """``[(output name, values)]``: one per ``_runs`` entry, or the file's values once."""
    data = read_yaml(path)
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
) -> list[Execution]:
    """Every execution that ``params/<profile>/*.yaml`` asks for, all validated (or ``ParamsError``)."""
    notebooks_dir = Path(notebooks_dir or paths.notebooks_dir())
    folder = Path(params_root or paths.params_dir()) / profile
    schemas = NOTEBOOK_SCHEMAS if schemas is None else schemas
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ParamsError(f"{folder}: no params files for profile {profile!r}")
    if only:
        files = [f for f in files if any(f.stem.startswith(o) for o in only)]
        if not files:
            raise ParamsError(f"{folder}: no params file matches {only}")
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


def _execute(ex: Execution, profile: str, out_dir: Path, output_root: Path, kernel_name: str) -> dict:
    import papermill

    output = out_dir / f"{ex.name}.ipynb"
    execution_id = uuid.uuid4().hex[:12]
    result = {"name": ex.name, "notebook": ex.notebook, "params_file": _rel(ex.params_file), "output": str(output),
              "execution": execution_id, "status": "ok", "error": None, "time": utc_now()}
    start = time.perf_counter()
    env = dict(AEP_PROFILE=profile, AEP_OUTPUT_DIR=str(output_root), AEP_NOTEBOOK=ex.name,
               AEP_PARAMS_FILE=_rel(ex.params_file), AEP_EXECUTION=execution_id)
    try:
        with _environ(**env):
            papermill.execute_notebook(str(ex.notebook_path), str(output), parameters=ex.values,
                                       kernel_name=kernel_name, cwd=str(ex.notebook_path.parent),
                                       progress_bar=False, log_output=False)
    except papermill.PapermillExecutionError as err:
        result.update(status="failed", error=f"{err.ename}: {err.evalue}")
    except Exception as err:  # the kernel died, the notebook is unreadable, ...
        result.update(status="failed", error=f"{type(err).__name__}: {err}")
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["figures"] = _figures_of(out_dir / "figures", execution_id)
    failed = failed_claims(result["figures"])
    if failed and result["status"] == "ok":
        result.update(status="failed", error="; ".join(failed))
    return result


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
) -> list[dict]:
    """Execute the notebooks of one profile into ``<output_root>/<profile>/`` and write ``index.md``.

    ``only``: notebook names or prefixes. ``output_root``: default ``$AEP_OUTPUT_DIR`` or ``outputs/``.
    ``notebooks_dir``, ``params_root`` and ``schemas`` default to the project's (tests inject their own).
    All params are validated first; a failing notebook is recorded as failed and the rest still run.
    Returns one dict per execution: name, notebook, params_file, output, status, error, seconds, figures.
    """
    executions = plan(profile, only, notebooks_dir, params_root, schemas)
    output_root = Path(output_root or paths.output_dir()).resolve()
    out_dir = output_root / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [_execute(ex, profile, out_dir, output_root, kernel_name) for ex in executions]
    write_index(out_dir, results, partial=bool(only))
    return results


# ---------------------------------------------------------------------------------------------------
# index.md


def _short(ids: list[str], keep: int = 5) -> str:
    if not ids:
        return "-"
    shown = ", ".join(f"`{i}`" for i in ids[:keep])
    return shown + (f" (+{len(ids) - keep} more)" if len(ids) > keep else "")


def _claim_lines(claims: list[dict]) -> list[str]:
    """``- claims: k of n hold`` and one indented line per claim: ok / FAIL / observed (no bound)."""
    if not claims:
        return []
    bounded = [c for c in claims if c.get("at_least") is not None or c.get("at_most") is not None]
    lines = [f"- claims: {sum(bool(c['holds']) for c in bounded)} of {len(bounded)} hold"]
    for c in claims:
        bounds = " and ".join(f"{op} {c[k]:g}" for op, k in ((">=", "at_least"), ("<=", "at_most"))
                              if c.get(k) is not None)
        verdict = ("ok" if c["holds"] else "FAIL") if bounds else "observed"
        lines.append(f"  - {verdict}: {c['name']} = {c.get('shown', c.get('value'))}" + (f" ({bounds})" if bounds else ""))
    return lines


def write_index(out_dir: Path, results: list[dict], partial: bool = False) -> Path:
    """Write ``index.json`` (kept across partial runs) and render it as ``index.md``."""
    state_file = out_dir / "index.json"
    state = {}
    if partial and state_file.is_file():
        try:
            state = json.loads(state_file.read_text())
        except ValueError:
            state = {}
    state.update({r["name"]: r for r in results})
    state_file.write_text(json.dumps(state, indent=1, default=jsonable))

    lines = [f"# Outputs of profile `{out_dir.name}`", "",
             f"Generated by `aep_lib.pipeline` at git `{git_sha()}`; "
             + ", ".join(f"{k} {v}" for k, v in package_versions().items()) + ".", ""]
    for name in sorted(state):
        r = state[name]
        lines += [f"## {name}", "", f"- status: **{r['status']}**" + (f": `{r['error']}`" if r["error"] else ""),
                  f"- notebook: [{Path(r['output']).name}]({Path(r['output']).name}), "
                  f"params `{r['params_file']}`, {r.get('seconds', '?')} s, {r['time']}", ""]
        for fig in r.get("figures", []):
            numbers = ", ".join(f"{k} = {v}" for k, v in fig["numbers"].items()) or "-"
            versions = ", ".join(f"{k} {v}" for k, v in fig["versions"].items())
            lines += [f"### {fig['name']}", "", f"![{fig['name']}](figures/{fig['name']}.png)", "",
                      fig["caption"], "",
                      f"- numbers: {numbers}", *_claim_lines(fig.get("claims") or []),
                      f"- params: `{fig['params_file']}`", f"- runs: {_short(fig['run_ids'])}",
                      f"- git `{fig['git_sha']}`; {versions}; {fig['time']}", ""]
    index = out_dir / "index.md"
    index.write_text("\n".join(lines))
    return index


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aep_lib.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", action="append", help="notebook name or prefix (repeatable)")
    parser.add_argument("--output-root", type=Path, default=None, help="default $AEP_OUTPUT_DIR or outputs/")
    parser.add_argument("--kernel", default="python3")
    args = parser.parse_args(argv)
    try:
        results = run_figures(args.profile, args.only, args.output_root, args.kernel)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r['status']:6} {r['name']} ({r['seconds']} s)" + (f": {r['error']}" if r["error"] else ""))
    failed = [r for r in results if r["status"] != "ok"]
    out_dir = Path(results[0]["output"]).parent if results else None
    print(f"{len(results) - len(failed)} ok, {len(failed)} failed; index: {out_dir / 'index.md' if out_dir else '-'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
