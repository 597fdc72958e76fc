"""A notebook's ``parameters`` cell, read without running it: the names a notebook takes and their defaults.

The cell is the one tagged ``parameters`` in ``notebooks/<name>.py`` (jupytext percent format: the cell
starts at ``# %% tags=["parameters"]``), or in ``notebooks/<name>.ipynb`` when there is no ``.py``. It holds
flat ``name = constant`` lines, one comment each; anything else is a ``ParamsError`` naming the file.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

from .. import paths
from ..corpora import ParamsError

_CELL_MARKER = re.compile(r"^# %%")
_PARAMETERS_TAG = re.compile(r"""tags\s*=\s*\[[^\]]*["']parameters["']""")


def notebook_names(notebooks_dir: Path | None = None) -> list[str]:
    """The notebooks of ``notebooks_dir`` (default the project's): stems of its ``.py`` and ``.ipynb`` files."""
    folder = Path(notebooks_dir or paths.notebooks_dir())
    return sorted({p.stem for p in folder.glob("*.py")} | {p.stem for p in folder.glob("*.ipynb")})


def parameters_cell(name: str, notebooks_dir: Path | None = None) -> dict:
    """``{name: default}`` of the notebook's ``parameters`` cell, in the cell's order (cached per file and
    modification time)."""
    folder = Path(notebooks_dir or paths.notebooks_dir())
    path = folder / f"{name}.py"
    if not path.is_file():
        path = folder / f"{name}.ipynb"
    if not path.is_file():
        raise ParamsError(f"no notebook named {name!r} in {folder}")
    return dict(_read(path, path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _read(path: Path, mtime_ns: int) -> tuple:
    source = _ipynb_cell(path) if path.suffix == ".ipynb" else _percent_cell(path)
    values = []
    try:
        body = ast.parse(source).body
    except SyntaxError as err:
        raise ParamsError(f"{path}: the parameters cell is not valid Python: {err}") from None
    for node in body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)):
            raise ParamsError(f"{path}: the parameters cell must hold `name = constant` lines only, "
                              f"not {ast.unparse(node)!r}")
        values.append((node.targets[0].id, node.value.value))
    return tuple(values)


def _percent_cell(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if _CELL_MARKER.match(line) and _PARAMETERS_TAG.search(line)]
    if len(starts) != 1:
        raise ParamsError(f"{path}: {len(starts)} cells tagged 'parameters', want exactly one")
    end = next((i for i in range(starts[0] + 1, len(lines)) if _CELL_MARKER.match(lines[i])), len(lines))
    return "\n".join(lines[starts[0] + 1:end])


def _ipynb_cell(path: Path) -> str:
    cells = [c for c in json.loads(path.read_text(encoding="utf-8")).get("cells", [])
             if "parameters" in c.get("metadata", {}).get("tags", ())]
    if len(cells) != 1:
        raise ParamsError(f"{path}: {len(cells)} cells tagged 'parameters', want exactly one")
    source = cells[0]["source"]
    return "".join(source) if isinstance(source, list) else source
