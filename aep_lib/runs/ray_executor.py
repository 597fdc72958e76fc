"""Running a grid on a Ray cluster: one task per model-batch, each writing into a shared store.

``execute_ray(store, plan)`` submits every batch of a ``runs.GenerationPlan`` as one Ray task. A task
loads its model (once per worker process: ``runs.cached_model``), generates its batch and writes
each run atomically into ``store.root``, which must be a path that every worker can reach (a
network file system on a real cluster; any local folder for a local Ray instance).

Exactly once: a task first skips the runs of its batch already stored ok and a run becomes visible
only when its folder is renamed into place, so a task that a killed worker leaves half done is simply
retried by Ray (``max_retries``) and writes the rest. Tasks ask for one GPU each when the cluster
has GPUs (``num_gpus=gpus_per_task``, 1 by default), else ``cpus_per_task`` CPUs; a batch whose model is
placed across several GPUs (its ``placement``: a grid's ``device_map``/``max_memory`` or the model map's)
asks for as many as the placement names (``task_resources``), and loads the model across them. The model
map (``$AEP_MODEL_MAP``) travels to the workers in the tasks' environment.

    ray start --head                       # on the head node; `ray start --address HEAD:6379` on the others
    aep run params/paper/grid.yaml --executor ray --address HEAD:6379 --store /shared/aep/store
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..store.run_store import RunStore
from .generations import GenerationBatch, GenerationPlan, execute_batch


class RayNotInstalledError(ImportError):
    """Ray is an optional dependency: ``pip install -e '.[ray]'``."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError(
            "the ray executor needs Ray: pip install 'ray>=2.9' (or pip install -e '.[ray]')"
        ) from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None):
    """Join the Ray cluster at ``address`` (``host:port``, ``ray://host:10001`` or ``auto``), or start a
    local instance when ``address`` is None (``start_local``). Reuses a connection the caller already made."""
    ray = _ray()
    if not ray.is_initialized():
        if address is None:
            start_local(num_cpus=num_cpus)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=True, configure_logging=False)
    return ray


# A local instance on a busy machine. Ray 2.60's raylet waits a fixed 15 s for the dashboard agent's
# port files (no setting lengthens that wait: agent_register_timeout_ms does not, checked) and aborts,
# and the agent imports Ray first: on 2 cores at load 13-20 that took it 17-26 s, and 24 of 25 starts
# failed here ("The current node timed out during startup"); at load 5 a start took 21 s. The waits that
# are settings are lengthened (SLOW_MACHINE_*), and a failed start is retried until START_TIMEOUT_S:
# that rides out a busy spell, not a machine that stays that busy.
START_TIMEOUT_S = 900.0
SLOW_MACHINE_ENV = {"RAY_gcs_server_port_wait_time_s": "300", "RAY_gcs_server_request_timeout_seconds": "300"}
SLOW_MACHINE_CONFIG = {"worker_register_timeout_seconds": 300, "agent_register_timeout_ms": 300_000}


def start_local(num_cpus: int | None = None, log_to_driver: bool = True, timeout_s: float = START_TIMEOUT_S):
    """Start a local Ray instance with ``num_cpus`` CPUs (all by default), patient with a busy machine.

    The user's own ``RAY_*`` settings win over ``SLOW_MACHINE_ENV``. A failed start is cleaned up (the
    processes it started, by pid) and tried again until ``timeout_s`` seconds have passed; then
    ``RuntimeError`` says how many tries failed, and why the first and the last did. Returns ``ray``.
    """
    for key, value in SLOW_MACHINE_ENV.items():
        os.environ.setdefault(key, value)
    ray = _ray()
    import psutil

    deadline, failures = time.monotonic() + timeout_s, []
    while True:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            # "local": a new instance of our own, never one found in /tmp/ray/ray_current_cluster (the
            # last one started on this machine, by anyone; or the dead one of a failed try)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver,
                     configure_logging=False, _system_config=SLOW_MACHINE_CONFIG)
            return ray
        except Exception as err:  # noqa: BLE001 - retried; the first and last reasons are reported
            failures.append(f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
            ray.shutdown()
            end_children_started_since(before)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"could not start a local Ray instance: {len(failures)} tries in {timeout_s:.0f} s "
                                   f"failed; the first: {failures[0]}; the last: {failures[-1]}") from err
            time.sleep(1.0)


def end_children_started_since(before: set[int], grace_s: float = 10.0) -> list[int]:
    """Terminate (then kill) this process's descendants whose pid is not in ``before``; their pids."""
    import psutil

    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    for proc in started:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(started, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in started]


def _crash_once(marker: str):
    """Fault injection for tests: the first call (across processes: ``marker`` is a file) kills the
    worker process as a node failure would, after the batch has written its first run."""

    def hook(_run_id: str) -> None:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)

    return hook


def task_resources(batch: GenerationBatch, cluster_gpus: float, cpus_per_task: float = 1,
                   gpus_per_task: float = 1) -> dict:
    """The Ray resources of one batch's task: ``num_cpus``, and where the cluster has GPUs ``num_gpus``: the
    GPUs the batch's placement names when it names more than ``gpus_per_task``, else ``gpus_per_task``."""
    if cluster_gpus < 1:
        return {"num_cpus": cpus_per_task}
    wanted = batch.placement.gpus if batch.placement is not None else 0
    if wanted > cluster_gpus:
        raise RuntimeError(f"{batch.model}: its placement names {wanted} GPUs, the cluster has {cluster_gpus:g}")
    return {"num_cpus": cpus_per_task, "num_gpus": max(gpus_per_task, wanted)}


def task_environment() -> dict:
    """The Ray ``runtime_env`` of the tasks: the model map (``$AEP_MODEL_MAP``, absolute paths), if one is set."""
    from ..engine.model_map import MODEL_MAP_VAR, check_map_files

    value = os.environ.get(MODEL_MAP_VAR, "")
    return {"env_vars": {MODEL_MAP_VAR: check_map_files(value)}} if value.strip() else {}


def _run_batch(store_root: str, batch: GenerationBatch, device: str, dtype: str, crash_marker: str | None):
    """The body of one Ray task (module-level so that workers import it from aep_lib)."""
    hook = _crash_once(crash_marker) if crash_marker else None
    return execute_batch(RunStore(store_root), batch, device, dtype, progress=False, on_written=hook)


def execute_ray(
    store: RunStore,
    plan: GenerationPlan,
    device: str = "auto",
    dtype: str = "auto",
    address: str | None = None,
    progress: bool = True,
    num_cpus: int | None = None,
    cpus_per_task: float = 1,
    gpus_per_task: float = 1,
    max_retries: int = 3,
    crash_once: str | os.PathLike | None = None,
) -> list[tuple[str, str]]:
    """Execute ``plan`` with one Ray task per model-batch; ``[(run_id, status)]`` of the executed runs.

    ``address``: the cluster (None: a local instance with ``num_cpus`` CPUs, all by default).
    ``gpus_per_task``: GPUs each task asks for when the cluster has any; a batch placed across more GPUs
    asks for those (``task_resources``).
    ``max_retries``: how often Ray re-runs a task whose worker died. ``crash_once``: a marker file
    path for tests (the first task to write a run kills its worker once). Raises ``RuntimeError``
    after all tasks have ended if some task failed for good (the other runs are stored).
    """
    if not plan.batches:
        return []
    ray = connect(address, num_cpus=num_cpus)
    gpus = ray.cluster_resources().get("GPU", 0)
    options = {"max_retries": max_retries, "retry_exceptions": False}
    env = task_environment()
    if env:
        options["runtime_env"] = env
    task = ray.remote(_run_batch)
    root = str(Path(store.root).resolve())
    marker = str(crash_once) if crash_once else None
    pending = {task.options(**options, **task_resources(batch, gpus, cpus_per_task, gpus_per_task))
               .remote(root, batch, device, dtype, marker): batch for batch in plan.batches}
    results, failures = [], []
    bar = tqdm(total=len(plan.specs), initial=len(plan.specs) - plan.n_missing, unit="run",
               desc=f"grid (ray, {len(pending)} tasks)", disable=not progress)
    with bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                batch = pending.pop(ref)
                try:
                    results.extend(ray.get(ref))
                except Exception as err:  # noqa: BLE001 - reported after the others have finished
                    failures.append(f"{batch.model} ({len(batch.specs)} runs): {type(err).__name__}: {err}")
                bar.update(len(batch.specs))
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(plan.batches)} Ray tasks failed: " + "; ".join(failures))
    return results
