"""The ``aep`` command line: models, grids of runs, the store, texts, the figures pipeline.

One module per group of commands (each registers its commands on ``app``); heavy imports stay inside
the commands so that ``aep --help`` answers at once.
"""

from __future__ import annotations

import sys

# each module registers its commands on ``app``; this order is the order of ``aep --help``
# isort: off
from . import models_command, store_commands, figures_command, score_command  # noqa: F401
from . import detect_commands, bench_command  # noqa: F401
# isort: on
from .app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
