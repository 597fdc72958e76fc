"""``aep bench``: the performance targets against their baselines."""

from __future__ import annotations

from typing import Optional

import typer

from .app import app, fail


@app.command()
def bench(
    target: Optional[list[str]] = typer.Option(None, help="generation | batch | bf16 | memory | scoring | long | "
                                               "pair | startup | store | gpu | loglik | texts; repeatable "
                                               "(default: all)"),
    repeats: int = typer.Option(3, min=1, help="timed repeats per target (medians are reported)"),
    quick: bool = typer.Option(False, help="tiny sizes: a smoke test of the benchmark code, not a measurement"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default one per core; 1 is steadier "
                                          "on a machine that other work also loads)"),
) -> None:
    """Measure the performance targets against their baselines in this process; print ratios and verdicts."""
    from ..bench import TARGETS, run_bench

    unknown = [t for t in target or [] if t not in TARGETS]
    if unknown:
        fail(f"unknown bench target(s) {unknown}; known: {', '.join(TARGETS)}")
    if target and set(target) == {"gpu"}:
        from ..bench.gpu import refusal

        why = refusal()
        if why is not None:
            fail(why)
    results = run_bench(target or None, repeats=repeats, quick=quick, echo=typer.echo, threads=threads)
    if not quick and any(r.holds is False for r in results):
        raise typer.Exit(1)

