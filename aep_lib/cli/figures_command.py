"""``aep figures``: execute a profile's notebooks into ``outputs/<profile>/`` and write the index and gallery."""

from __future__ import annotations

from typing import Optional

import typer

from .app import app, fail


@app.command()
def figures(
    profile: str = typer.Option("cpu", help="cpu (embedded models) | paper (GPU, hub models)"),
    only: Optional[list[str]] = typer.Option(None, help="notebook name or prefix; repeatable"),
    index_only: bool = typer.Option(False, "--index-only",
                                    help="execute nothing: render index.md and index.html again from the "
                                         "figure records already under outputs/<profile>/"),
    dtype: Optional[str] = typer.Option(None, help="run every notebook that has a dtype parameter in this dtype "
                                                   "(bfloat16, float16, float32), into outputs/dtype-<dtype>/"
                                                   "<profile>/: do the claims hold in it?"),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", metavar="KEY=VALUE",
                                              help="replace a params file's value (repeatable; YAML scalar): not "
                                                   "the profile's parameters, so everything goes to "
                                                   "outputs/<profile>/scratch/, never over the profile's figures"),
) -> None:
    """Execute the profile's notebooks with papermill into outputs/<profile>/ and write index.md and index.html.

    Shows a progress bar over the notebooks (and papermill's cell bar) on a terminal, one line per
    notebook otherwise; a failed notebook is named with its cell and error. Exits 1 if any failed.
    Ctrl-C stops the running notebook, marks it interrupted in the index and exits 130.
    """
    from .. import paths
    from ..params import ParamsError
    from ..report.figure_index import rebuild_index
    from ..report.pipeline import dtype_output_root, interrupted_line, run_figures, summary_lines

    if index_only:
        try:
            index = rebuild_index(dtype_output_root(paths.output_dir(), dtype) / paths.check_profile_name(profile))
        except ParamsError as err:
            fail(str(err))
        typer.echo(f"index: {index}\ngallery: {index.with_suffix('.html')}")
        return
    values = parse_params(param or [])
    try:
        results = run_figures(profile, only=only or None, progress=True, dtype=dtype, params=values or None)
    except ParamsError as err:
        fail(str(err))
    except KeyboardInterrupt as stop:
        typer.echo(interrupted_line(stop, profile), err=True)
        raise typer.Exit(130)
    out_dir = dtype_output_root(paths.output_dir(), dtype) / profile / ("scratch" if values else "")
    index = out_dir.resolve() / "index.md"
    for line in summary_lines(results, index):
        typer.echo(line)
    if any(r.get("status") != "ok" for r in results):
        raise typer.Exit(1)


def parse_params(items: list[str]) -> dict:
    """``["n_seeds=1", "models=a,b"]`` -> ``{"n_seeds": 1, "models": "a,b"}`` (each value read as a YAML
    scalar); a malformed item is a one-line error."""
    import yaml

    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"-p {item!r}: give KEY=VALUE (for example -p n_seeds=1)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        values[key.strip()] = value if isinstance(value, (str, int, float, bool)) else raw
    return values
