"""``startup``: a fresh ``python -c "import aep_lib.engine.models; load_model(<cached embedded>)"``, from launch
until the model is loaded (the exit reported beside it). Goal < 5 s."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ..engine.embedded import embedded_cache

STARTUP_MODELS = ("smollm2-135m", "gemma-3-270m")  # the models whose start-up is measured
from .common import Result, median


def bench_startup(repeats: int, quick: bool) -> Result:
    """Fresh processes: from launch until ``load_model`` returns (the goal), and until the process exits.

    The child prints the system-wide monotonic clock when the model is ready; the parent subtracts
    the clock it read just before launching. The exit (the interpreter tearing down torch and
    freeing the tokenizer, ~1 s) is reported beside it but is not start-up.
    """
    for name in STARTUP_MODELS:
        embedded_cache(name)  # make sure the caches exist (and are up to date): the goal is a cached model
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    clock = "time.clock_gettime(time.CLOCK_MONOTONIC)" if hasattr(time, "CLOCK_MONOTONIC") else None
    now = (lambda: time.clock_gettime(time.CLOCK_MONOTONIC)) if clock else time.perf_counter

    import resource

    cpu_times: dict[str, list[float]] = {}
    exits: dict[str, list[float]] = {}

    def launch(label: str, code: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        script = f"import time\n{code}\n" + (f"print('READY', {clock}, flush=True)\n" if clock else "")
        t0 = now()
        done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env)
        t1 = now()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_times.setdefault(label, []).append(round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2))
        exits.setdefault(label, []).append(round(t1 - t0, 2))
        ready = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("READY ")]
        return float(ready[-1]) - t0 if ready else t1 - t0  # no shared clock: the whole process

    load = "from aep_lib.engine.models import load_model; load_model({!r}, device='cpu')"
    floor = "import torch, transformers; from transformers import AutoModelForCausalLM"
    ready: dict[str, list[float]] = {"smollm2-135m": [], "gemma-3-270m": [], "floor": []}
    for _ in range(repeats):
        for label in ready:
            ready[label].append(launch(label, floor if label == "floor" else load.format(label)))
    worst = max(median(ready["smollm2-135m"]), median(ready["gemma-3-270m"]))
    return Result(
        "startup", "s, launch -> cached model loaded", worst, 5.0, "s", worst / 5.0, "< 5 s", worst < 5.0,
        details={**{f"{label} ready (s, each repeat)": [round(x, 2) for x in v] for label, v in ready.items()},
                 **{f"{label} process exit (s, each repeat)": v for label, v in exits.items()},
                 "CPU seconds (user + sys) of each process": cpu_times,
                 "floor": "python -c 'import torch, transformers; from transformers import AutoModelForCausalLM'"},
        notes=["ours = the slower of the two models (median, launch until load_model returns); "
               "'baseline' column = the 5 s goal; 'process exit' adds the interpreter's teardown; "
               "wall time on a loaded machine: see the load average and the CPU seconds"],
    )
