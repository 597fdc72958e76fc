"""Run a whole ``params.Grid`` into the store: locally, batch after batch, or as Ray tasks."""

from __future__ import annotations

import pandas as pd

from ..engine.model_map import Placement, placement_from
from ..store.run_store import RunStore
from .generations import execute_local, plan_generations
from .ray_executor import execute_ray


def grid_placement(grid) -> Placement | None:
    """The grid's placement (``device_map``, ``max_memory``) for every model of it, or None (then each model
    takes the model map's, if any)."""
    return placement_from(getattr(grid, "device_map", "") or None, getattr(grid, "max_memory", None) or None,
                          where="grid")


def ensure_grid(store: RunStore, grid, executor: str = "local", address: str | None = None,
                progress: bool = True, **ray_options) -> pd.DataFrame:
    """Every run of a ``params.Grid`` (models × prompts × seeds × warps × lengths) in ``store``.

    ``executor``: ``local`` (this process, batch after batch) or ``ray`` (one Ray task per
    model-batch on the cluster at ``address``, a local Ray instance when None; see
    ``aep_lib.runs.ray_executor``). A grid with a ``device_map`` (and ``max_memory``) loads each model across
    devices through accelerate (a Ray task then asks for the GPUs that placement names). Returns the grid's
    run rows. A grid with a run too large for memory is refused at planning, before any model loads
    (``generations.check_plan_fits``: ``MemoryEstimateError``).
    """
    plan = plan_generations(store, grid.models, grid.prompts, grid.seeds, grid.samplings, grid.all_lengths,
                            grid.batch_size, grid.device, grid.dtype, placement=grid_placement(grid))
    if executor == "local":
        execute_local(store, plan, grid.device, grid.dtype, progress=progress)
    elif executor == "ray":
        execute_ray(store, plan, grid.device, grid.dtype, address=address, progress=progress, **ray_options)
    else:
        raise ValueError(f"unknown executor {executor!r}; available: local, ray")
    return store.runs(run_id=[s["run_id"] for s in plan.specs])
