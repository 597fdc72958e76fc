"""Storing the scoring runs that are not stored yet, one at a time or a group of texts at a time.

Every scoring kind of the store (comparison records, windowed external texts, in-context passages) goes
through ``write_missing_runs``: runs already stored ok are skipped (their run ids are deterministic), each
new run is written as soon as its group is scored (an interrupted run loses at most one group), a run
whose scoring raises is stored as failed with the reason and the others go on, and a
``MemoryEstimateError`` (work refused before it started) is raised.

With ``compute_many`` the texts of a group are scored together (``engine.batch_score``: on a GPU the
difference between an idle device and a busy one). If the group's scoring raises anything but a
``MemoryEstimateError``, each of its texts is scored alone instead, so that a failure is the failed
record of the text that caused it, not of its neighbours.
"""

from __future__ import annotations

import time

import pandas as pd

from ..engine.memory import MemoryEstimateError
from ..store.provenance import run_provenance, utc_now
from ..store.run_store import RunStore
from .generations import failure, stored_ok

RUNS_PER_GROUP = 64  # texts scored together at most (engine.batch_score splits them further by memory)


def write_missing_runs(store: RunStore, specs, compute, compute_many=None,
                       group_size: int = RUNS_PER_GROUP) -> pd.DataFrame:
    """Store the runs of ``specs`` (``[(spec, item)]``, ``spec`` a run row with its ``run_id``) that have
    no ok run yet; return the run rows of every spec.

    ``compute(item)`` gives ``(fields, tokens)`` of one item; ``compute_many(items)``, when given, one
    ``(fields, tokens)`` or an exception per item, in order, for up to ``group_size`` items scored together.
    A run is stored with its spec, the provenance, ``started_at``, status ok, ``batch_size`` (the texts
    scored together) and ``elapsed_s`` (a group's time shared out by the runs' token counts); an exception
    as a failed run with its reason (a rerun retries it). ``MemoryEstimateError``: raised, nothing stored.
    """
    done = stored_ok(store, [spec["run_id"] for spec, _ in specs])
    todo = [(spec, item) for spec, item in specs if spec["run_id"] not in done]
    step = max(1, int(group_size)) if compute_many is not None else 1
    for a in range(0, len(todo), step):
        group = todo[a : a + step]
        started, t0 = utc_now(), time.perf_counter()
        results = computed(group, compute, compute_many)
        elapsed = time.perf_counter() - t0
        sizes = [len(r[1]) if isinstance(r, tuple) and r[1] is not None else 0 for r in results]
        for (spec, _), result, size in zip(group, results, sizes):
            record = spec | run_provenance() | {"started_at": started, "batch_size": len(group)}
            if isinstance(result, MemoryEstimateError):
                raise result
            if isinstance(result, BaseException):
                store.write_run(record | failure(result), None)
                continue
            fields, tokens = result
            share = elapsed * size / sum(sizes) if sum(sizes) else elapsed / len(group)
            store.write_run(record | {"status": "ok", "error": None} | fields | {"elapsed_s": share}, tokens)
    return store.runs(run_id=[spec["run_id"] for spec, _ in specs])


def computed(group, compute, compute_many) -> list:
    """``(fields, tokens)`` or the exception, per item of ``group``: together where ``compute_many`` is given
    and the group has several items, else (or where scoring them together raised) one at a time."""
    if compute_many is not None and len(group) > 1:
        try:
            results = list(compute_many([item for _, item in group]))
        except MemoryEstimateError:  # refused before it started: nothing to store, nothing else would fit
            raise
        except Exception:  # scored alone below: each failure is its own text's
            results = None
        if results is not None:
            if len(results) != len(group):
                raise RuntimeError(f"compute_many returned {len(results)} results for {len(group)} items")
            return results
    return [guarded(compute, item) for _, item in group]


def guarded(compute, *args):
    """``compute(*args)``, or the exception it raised (a failed record, never fatal); a ``MemoryEstimateError``
    (work refused before it started) is raised."""
    try:
        return compute(*args)
    except MemoryEstimateError:
        raise
    except Exception as err:
        return err
