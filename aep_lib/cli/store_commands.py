"""``aep run``, ``aep runs``, ``aep compare``: grids of runs and the run store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from .app import app, fail


def checked_profile(profile: str) -> str:
    """``profile`` if it is a plain folder name; else a one-line error (a profile names a folder under
    the output directory and must never lead outside it)."""
    from ..paths import check_profile_name

    try:
        return check_profile_name(profile)
    except ValueError as err:
        fail(str(err))


def existing_store(store: Optional[Path], profile: str) -> Path:
    """The store folder to read: ``store`` (``--store``), else the profile's. Fails in one line when it does not
    exist (a mistyped path, or a profile nothing was stored under), is not a folder or cannot be read: a
    listing or a verification of nothing must not pass for an empty store or an intact one."""
    from ..paths import store_dir

    root = store if store is not None else store_dir(checked_profile(profile))
    given = f"--store {root}" if store is not None else f"the store of --profile {profile} ({root})"
    try:
        if not root.exists():
            fail(f"{given}: no such folder" + (" (check the path)" if store is not None else
                                              f": nothing has been stored under --profile {profile} yet"))
        if not root.is_dir():
            fail(f"{given}: not a folder (a store is the folder that `aep run` writes runs into)")
        if not os.access(root, os.R_OK | os.X_OK):
            fail(f"{given}: the folder cannot be read (permission denied)")
    except (OSError, ValueError) as err:  # a name too long, an embedded NUL
        fail(f"{given}: not a usable folder name ({getattr(err, 'strerror', None) or err})")
    return root


@app.command()
def run(
    params_file: Path = typer.Argument(..., help="a grid YAML: models, prompts, n_seeds, warps, lengths, ..."),
    profile: str = typer.Option("cpu", help="store under outputs/<profile>/store"),
    executor: str = typer.Option("local", help="local (this process) | ray (one Ray task per model-batch)"),
    address: Optional[str] = typer.Option(None, help="ray: the cluster (host:6379, ray://host:10001, auto); "
                                          "default: start a local Ray instance"),
    store: Optional[Path] = typer.Option(None, help="the store folder (default outputs/<profile>/store); with "
                                         "--address, a path every Ray worker can reach"),
    num_cpus: Optional[int] = typer.Option(None, help="ray without --address: CPUs of the local instance"),
    max_retries: int = typer.Option(3, help="ray: re-runs of a task whose worker died"),
    gpus_per_task: float = typer.Option(1, help="ray: GPUs per task when the cluster has GPUs"),
) -> None:
    """Expand a grid (models × prompts × seeds × warps × lengths) into generation runs; skip stored ones;
    run the rest batched per model, here or on Ray."""
    from ..params import ParamsError, load_grid
    from ..paths import store_dir
    from ..store.run_store import RunStore, StoreError

    checked_profile(profile)
    try:
        grid = load_grid(params_file)
    except ParamsError as err:
        fail(str(err))
    if executor not in ("local", "ray"):
        fail(f"unknown executor {executor!r}; available: local, ray")
    if executor == "local" and address:
        fail("--address needs --executor ray")
    run_store = RunStore(store if store is not None else store_dir(profile))
    try:  # before any model loads: the results of hours of generation must have somewhere to go
        run_store.check_writable()
    except StoreError as err:
        fail(str(err))
    from ..runs.grids import ensure_grid  # torch and transformers: after the checks that need neither

    options = dict(num_cpus=num_cpus, max_retries=max_retries, gpus_per_task=gpus_per_task) if executor == "ray" else {}
    try:
        runs = ensure_grid(run_store, grid, executor=executor, address=address, **options)
    except (ImportError, RuntimeError, StoreError) as err:  # ray missing; Ray tasks failed for good; disk full
        fail(str(err))
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    expected = len(grid.models) * len(grid.prompts) * len(grid.seeds) * len(grid.samplings) * len(grid.all_lengths)
    typer.echo(f"{len(runs)} of {expected} runs of the grid stored: {counts}; store: {run_store.root}")
    if counts.get("failed") or len(runs) < expected:
        raise typer.Exit(1)


@app.command()
def runs(
    profile: str = typer.Option("cpu", help="which profile's store"),
    kind: Optional[str] = typer.Option(None, help="generate | score | ..."),
    model: Optional[str] = typer.Option(None),
    prompt_id: Optional[str] = typer.Option(None),
    status: Optional[str] = typer.Option(None, help="ok | failed"),
    limit: int = typer.Option(50, help="rows to show (0: all)"),
    store: Optional[Path] = typer.Option(None, help="the store folder (default outputs/<profile>/store)"),
    verify: bool = typer.Option(False, "--verify", help="check every file against the checksum recorded when it "
                                "was written (and read it whole); list the bad ones, exit 1 if any"),
) -> None:
    """List stored runs, filtered; with --verify, check their files."""
    import pandas as pd

    from ..store.run_store import RunStore

    run_store = RunStore(existing_store(store, profile))
    if verify:
        verify_store(run_store)
        return
    filters = {k: v for k, v in dict(kind=kind, model=model, prompt_id=prompt_id, status=status).items() if v}
    df = run_store.runs(**filters)
    if df.empty:
        typer.echo("no runs")
        return
    cols = [c for c in ("run_id", "kind", "model", "prompt_id", "seed", "temperature", "top_k", "top_p",
                        "n_tokens", "status", "z_samp", "z_raw", "error") if c in df]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        typer.echo(df[cols].head(limit or len(df)).to_string(index=False))
    typer.echo(f"{len(df)} runs ({df['status'].value_counts().to_dict()})")


def verify_store(run_store) -> None:
    """``aep runs --verify``: every run's files checked from the disk; the bad ones listed, exit 1 if any."""
    checked = run_store.verify()
    bad = checked[checked["problem"].notna()]
    for r in bad.itertuples():
        typer.echo(f"{r.run_id}  {r.problem}")
    counts = checked["checked"].value_counts().to_dict()
    typer.echo(f"{len(checked)} runs checked ({counts}): {len(checked) - len(bad)} intact, {len(bad)} bad; "
               f"store: {run_store.root}" + ("; `aep run` on their grid regenerates the bad ones" if len(bad) else ""))
    if len(bad):
        raise typer.Exit(1)


@app.command()
def compare(
    profile: str = typer.Option("cpu", help="which profile's store: outputs/<profile>/store"),
    pair: Optional[str] = typer.Option(None, help="only this pair, e.g. 'smollm2-135m -> gemma-3-270m'"),
) -> None:
    """Aggregate every cross-model comparison in the store: usable / skipped / failed, h^(A,B), l^B - h^B."""
    from ..analysis.comparison_tables import compare as compare_records
    from ..report.figures import format_report
    from ..store.run_store import RunStore

    store = RunStore(existing_store(None, profile))
    records = compare_records(store)
    if pair is not None:
        records = records[records["pair"] == pair]
    if records.empty:
        typer.echo(f"no comparison records in {store.root}" + (f" for pair {pair!r}" if pair else ""))
        return
    typer.echo(format_report(records))

