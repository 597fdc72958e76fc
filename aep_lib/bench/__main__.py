"""``python -m aep_lib.bench --child KIND ARGS``: one measurement in a fresh process, its answer printed
as one JSON line (the other side is ``common.run_child``)."""

from __future__ import annotations

import json
import sys

from .long_text import long_child
from .peak_memory import memory_child
from .scoring import scoring_child


def child(argv: list[str]) -> None:
    """Run the child named by ``argv[0]`` with the rest as its arguments; print its answer as JSON."""
    kind, *args = argv
    if kind == "memory":
        out = memory_child(args[0], args[1], int(args[2]))
    elif kind == "scoring":
        out = scoring_child(args[0], int(args[1]), int(args[2]), *args[3:4])
    elif kind == "long":
        out = long_child(args[0], int(args[1]), [int(x) for x in args[2].split(",")], int(args[3]) or None)
    else:
        raise SystemExit(f"unknown child {kind!r}")
    print(json.dumps(out))


if __name__ == "__main__":  # pragma: no cover - the subprocesses of bench_memory / bench_scoring
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        raise SystemExit("use `aep bench`")
