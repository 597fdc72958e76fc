"""The model map: a model name (a hub id such as ``meta-llama/Llama-3.1-8B``) pointed at a local folder.

Clusters keep weights in shared folders; a map lets every command, grid and notebook keep the study's names
while the weights come from there. The map is a YAML file named by ``$AEP_MODEL_MAP`` (several files joined
by ``os.pathsep``: a later file's entry wins), which ``aep --model-map FILE`` and ``aep figures`` (the
profile's own map) set, so that it reaches every notebook kernel without touching the notebooks::

    models:
      meta-llama/Llama-3.1-8B: /shared/weights/Llama-3.1-8B        # a folder (relative: to this file)
      google/gemma-3-1b-pt: {standin: gemma-3-1b}                   # a seeded random stand-in (standins)
      meta-llama/Llama-3.1-70B:                                     # a folder, placed across devices
        path: /shared/weights/Llama-3.1-70B
        device_map: auto
        max_memory: {0: 75GiB, 1: 75GiB, cpu: 200GiB}

An entry is a folder (a string, or ``path:``) or a stand-in (``standin:``), with an optional placement
(``device_map``, ``max_memory``, ``offload_folder``: ``Placement``) that ``models.load_model`` uses when the
caller gives none. Resolution happens inside model and tokenizer loading (``models.load_model``,
``models.load_tokenizer``), so every path gets it. A mapped model's runs record both the name and what it
resolved to (``identity_fields``: ``model_resolved``), which enters their run ids; unmapped names keep theirs.

Every way a map can be wrong is a one-line ``ModelMapError`` naming the file and the entry: a file that is
missing or not YAML, an entry with unknown keys or both/neither of ``path`` and ``standin``, an unknown
stand-in, a folder that does not exist or holds no weights (checked when the name is used).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..corpora import ParamsError, excerpt, read_yaml
from .embedded_files import ModelLoadError

MODEL_MAP_VAR = "AEP_MODEL_MAP"
ENTRY_KEYS = ("path", "standin", "device_map", "max_memory", "offload_folder")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)


class ModelMapError(ModelLoadError):
    """A model map that cannot be used (one line: the file, the entry, what is wrong)."""


@dataclass(frozen=True)
class Placement:
    """Where a model's layers go when it is larger than one device (accelerate's ``device_map``).

    ``device_map``: ``auto`` (or another accelerate strategy), or a tuple of ``(module, device)`` pairs;
    ``max_memory``: ``((device, size), ...)`` with devices ``0, 1, ...`` (GPUs), ``cpu``, ``disk``
    and sizes such as ``70GiB``; ``offload_folder``: where weights offloaded to disk go.
    Hashable, so that a model pool can key a loaded model by it.
    """

    device_map: str | tuple = "auto"
    max_memory: tuple = ()
    offload_folder: str | None = None

    def kwargs(self) -> dict:
        """The keyword arguments of ``load_model`` (``device_map``, ``max_memory``, ``offload_folder``)."""
        device_map = dict(self.device_map) if isinstance(self.device_map, tuple) else self.device_map
        return {"device_map": device_map, "max_memory": dict(self.max_memory) or None,
                "offload_folder": self.offload_folder}

    @property
    def gpus(self) -> int:
        """How many GPUs the placement asks for: the GPU devices its ``max_memory`` (or ``device_map``) names."""
        devices = [d for d, _ in self.max_memory]
        if isinstance(self.device_map, tuple):
            devices += [d for _, d in self.device_map]
        return len({gpu_index(d) for d in devices if gpu_index(d) is not None})

    def as_dict(self) -> dict:
        """A JSON-able record of the placement (what a run row keeps)."""
        return {k: v for k, v in self.kwargs().items() if v is not None}


def gpu_index(device) -> int | None:
    """``0`` for ``0``, ``"0"``, ``"cuda"``, ``"cuda:0"``; None for ``cpu``, ``disk``, ``meta``."""
    text = str(device)
    if text.isdigit():
        return int(text)
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    return None


def parse_max_memory(value, where: str = "max_memory") -> tuple:
    """``{0: "70GiB", "cpu": "200GiB"}`` or ``"0=70GiB,cpu=200GiB"`` -> ``((0, "70GiB"), ("cpu", "200GiB"))``
    (GPU indices as ints); ``ValueError`` naming ``where`` for a device or size accelerate would not take."""
    if isinstance(value, str):
        pairs = []
        for item in (v.strip() for v in value.split(",") if v.strip()):
            device, sep, size = item.partition("=")
            if not sep:
                raise ValueError(f"{where}: {excerpt(item)} is not DEVICE=SIZE (e.g. 0=70GiB,cpu=200GiB)")
            pairs.append((device.strip(), size.strip()))
    else:
        pairs = list(value.items()) if isinstance(value, dict) else [(None, value)]
    out = []
    for device, size in pairs:
        if device is None:
            raise ValueError(f"{where}: give a mapping of device to size ({{0: 70GiB, cpu: 200GiB}}), got {excerpt(size)}")
        index = gpu_index(device)
        if index is None and str(device) not in ("cpu", "disk", "mps"):
            raise ValueError(f"{where}: unknown device {excerpt(device)} (use 0, 1, ..., cuda:1, cpu, disk)")
        if isinstance(size, bool) or not (isinstance(size, int) or _SIZE.fullmatch(str(size))):
            raise ValueError(f"{where}: size {excerpt(size)} of device {device} is not a size (70GiB, 500MB, bytes)")
        size = int(size) if isinstance(size, int) or str(size).strip().isdigit() else str(size).strip()
        out.append((index if index is not None else str(device), size))
    return tuple(out)


def placement_from(device_map, max_memory=None, offload_folder=None, where: str = "placement") -> Placement | None:
    """A ``Placement`` from a map entry's or a grid's values (None when ``device_map`` is empty);
    ``ValueError`` naming ``where`` when a value is not one accelerate takes."""
    if device_map in (None, "", "none"):
        if max_memory:
            raise ValueError(f"{where}: max_memory needs a device_map (auto)")
        return None
    if isinstance(device_map, dict):
        dm = tuple((str(k), v) for k, v in device_map.items())
    elif device_map in DEVICE_MAPS:
        dm = device_map
    else:
        raise ValueError(f"{where}: device_map {excerpt(device_map)} is not one of {', '.join(DEVICE_MAPS)} "
                         "or a mapping of module names to devices")
    memory = parse_max_memory(max_memory, f"{where}: max_memory") if max_memory else ()
    return Placement(dm, memory, str(offload_folder) if offload_folder else None)


@dataclass(frozen=True)
class MapEntry:
    """One entry of a model map: ``name`` -> a folder (``path``) or a stand-in (``standin``), with a placement."""

    name: str
    source: str  # the map file that holds it
    path: str | None = None
    standin: str | None = None
    placement: Placement | None = None

    @property
    def target(self) -> str:
        """What the name resolves to, as runs record it: ``standin:<name>/v<version>`` or the absolute folder."""
        if self.standin is not None:
            from .standins import standin_label

            return standin_label(self.standin)
        return self.path

    def folder(self) -> Path:
        """The model folder, checked (a stand-in is written on first use); ``ModelMapError`` otherwise."""
        if self.standin is not None:
            from .standins import standin_folder

            return standin_folder(self.standin)
        folder = Path(self.path)
        where = f"model map {self.source}: {self.name} -> {folder}"
        if not folder.exists():
            raise ModelMapError(f"{where}: no such folder")
        if not folder.is_dir():
            raise ModelMapError(f"{where}: a file, not a model folder")
        if not any(p.suffix in (".safetensors", ".gguf") for p in folder.iterdir()):
            raise ModelMapError(f"{where}: the folder holds no model weights (.safetensors or .gguf)")
        return folder


def _entry(name, value, source: Path) -> MapEntry:
    where = f"model map {source}: entry {excerpt(name)}"
    if not isinstance(name, str) or not name.strip():
        raise ModelMapError(f"{where}: a model name must be a non-empty string")
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise ModelMapError(f"{where}: give a folder, or a mapping with path or standin, got {excerpt(value)}")
    unknown = sorted(set(map(str, value)) - set(ENTRY_KEYS))
    if unknown:
        raise ModelMapError(f"{where}: unknown key(s) {unknown}; known: {', '.join(ENTRY_KEYS)}")
    if ("path" in value) == ("standin" in value):
        raise ModelMapError(f"{where}: give exactly one of path (a folder) and standin")
    path, standin = value.get("path"), value.get("standin")
    if standin is not None:
        from .standins import STANDINS

        if standin not in STANDINS:
            raise ModelMapError(f"{where}: unknown stand-in {excerpt(standin)}; known: {', '.join(STANDINS)}")
    else:
        if not isinstance(path, str) or not path.strip():
            raise ModelMapError(f"{where}: path must be a folder name, got {excerpt(path)}")
        path = str((source.parent / Path(path).expanduser()).absolute())
    try:
        placement = placement_from(value.get("device_map"), value.get("max_memory"), value.get("offload_folder"), where)
    except ValueError as err:
        raise ModelMapError(str(err)) from None
    return MapEntry(name.strip(), str(source), path, standin, placement)


def read_map(path: str | os.PathLike) -> dict[str, MapEntry]:
    """The entries of one map file (validated whole: ``ModelMapError`` on the first bad entry)."""
    source = Path(path).expanduser().absolute()
    if not source.is_file():
        raise ModelMapError(f"model map {source}: " + ("not a file" if source.exists() else "no such file"))
    try:
        data = read_yaml(source)
    except ParamsError as err:
        raise ModelMapError(f"model map {err}") from None
    if not isinstance(data, dict) or set(data) != {"models"} or not isinstance(data["models"], dict):
        raise ModelMapError(f"model map {source}: the file must hold one key, models, a mapping of model name to "
                            "a folder or {path: ..., standin: ..., device_map: ..., max_memory: ...}")
    return {e.name: e for e in (_entry(k, v, source) for k, v in data["models"].items())}


_READ: dict[tuple, dict[str, MapEntry]] = {}


def active_map() -> dict[str, MapEntry]:
    """The entries of the files ``$AEP_MODEL_MAP`` names (a later file's entry wins); read again when a file
    changes."""
    files = [f for f in os.environ.get(MODEL_MAP_VAR, "").split(os.pathsep) if f.strip()]
    if not files:
        return {}
    key = tuple((f, _mtime(f)) for f in files)
    if key not in _READ:
        merged: dict[str, MapEntry] = {}
        for f in files:
            merged |= read_map(f)
        _READ.clear()
        _READ[key] = merged
    return _READ[key]


def _mtime(path: str) -> float | None:
    try:
        return os.stat(os.path.expanduser(path)).st_mtime
    except OSError:
        return None


def lookup(name: str) -> MapEntry | None:
    """The map's entry for ``name``, or None when it is not mapped (or no map is active)."""
    return active_map().get(str(name))


def identity_fields(name: str) -> dict:
    """What a run of ``name`` adds to its identity: ``{"model_resolved": target}`` when the name is mapped,
    nothing otherwise (so unmapped models keep their run ids)."""
    entry = lookup(name)
    return {} if entry is None else {"model_resolved": entry.target}


def placement_of(name: str) -> Placement | None:
    """The placement the map gives ``name``, if any."""
    entry = lookup(name)
    return None if entry is None else entry.placement


def check_map_files(value: str) -> str:
    """Read every file of ``value`` (an ``os.pathsep``-joined list) now: ``ModelMapError`` for the first bad one;
    returns the absolute paths joined (what ``$AEP_MODEL_MAP`` is set to)."""
    files = [str(Path(f).expanduser().absolute()) for f in value.split(os.pathsep) if f.strip()]
    for f in files:
        read_map(f)
    return os.pathsep.join(files)
