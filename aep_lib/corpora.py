"""The texts the project reads: prompts, classic texts and the human/machine benchmark sets.

One loader for everything under the data directory (``paths.data_dir``: ``$AEP_DATA_DIR``, else the
project's ``data/``) and for the prompts of ``params/prompts.yaml``:

- ``read_yaml``: the mapping of a params, prompts or grid file, read strictly (``StrictYAMLLoader``: no
  anchors or aliases, no key given twice, UTF-8, at most ``MAX_YAML_BYTES``), or a one-line ``ParamsError``;
- ``excerpt``: a value as an error message may quote it (at most ``EXCERPT_CHARS`` characters);
- ``load_prompts`` / ``prompt_text``: prompt id -> text;
- ``verified_data_file``: a data file, checked against the sha256 of its folder's ``MANIFEST.md``;
- ``classic_text`` / ``benchmark_texts``: external texts (``ExternalText``) for the training-data side;
- ``BENCHMARKS`` / ``load_benchmark``: paired human and machine texts of the detection benchmarks.

Every data file is read through ``verified_data_file``: a missing file raises ``DataNotFoundError``, a
file whose bytes differ from its MANIFEST's sha256 ``DataIntegrityError``, both one line naming the file
and its expected checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .paths import DATA_DIR_VAR, check_data_relative, data_dir, data_file, params_dir, project_root
from .paths import DataNotFoundError as DataNotFoundError  # re-exported: what a missing data file raises


class ParamsError(ValueError):
    """Invalid parameters; the message names the key and where it came from."""


MAX_YAML_BYTES = 1 << 20  # the largest params, prompts or grid file read (1 MiB; the project's are a few KB)
MAX_YAML_DEPTH = 16  # the deepest nesting of lists and mappings in such a file (the project's go 3 deep)
EXCERPT_CHARS = 80  # the most characters of a value that an error message shows


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset, _REPR.maxdict = 2, 8, 8, 8, 6
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = EXCERPT_CHARS


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (``...`` marks the cut), computed without
    formatting more of a long string, list or mapping than the excerpt shows; a value without a repr
    is shown by its type (``<int>``)."""
    try:
        shown = _REPR.repr(value)
    except Exception:  # e.g. an int of more digits than Python converts to text
        shown = f"<{type(value).__name__}>"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class RefusedYAMLError(yaml.MarkedYAMLError):
    """Valid YAML that ``StrictYAMLLoader`` does not accept in a params file, at a line and column."""


class StrictYAMLLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for the project's params, prompts and grid files, refusing what such a file never
    needs and an attacker or a slip would use: anchors and aliases (``&a``, ``*a``: a few hundred bytes of
    them expand to gigabytes), a key given twice in one mapping (the last value would win silently),
    nesting deeper than ``MAX_YAML_DEPTH``, and values Python cannot build (``2001-13-45``, an integer of
    thousands of digits). Each refusal is a ``RefusedYAMLError`` at the line and column concerned."""

    def __init__(self, stream):
        super().__init__(stream)
        self.node_depth = 0  # lists and mappings open around the node being composed

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise RefusedYAMLError(None, None, "anchors and aliases (&name, *name) are not accepted in a params file: "
                                   "write each value out", event.start_mark)
        if self.node_depth >= MAX_YAML_DEPTH:
            raise RefusedYAMLError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
        self.node_depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.node_depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as err:
            raise RefusedYAMLError(None, None, f"value {excerpt(node.value, 40)} cannot be read: {str(err).split(';')[0][:120]}",
                                   node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                mark = key_node.start_mark
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if first is not None:
                    where = (f"on line {first.line + 1} (columns {first.column + 1} and {mark.column + 1})"
                             if first.line == mark.line else f"on line {first.line + 1} and on line {mark.line + 1}")
                    raise RefusedYAMLError(None, None, f"key {excerpt(key)} is given twice, {where}: keep one", mark)
                seen[key] = mark
        return super().construct_mapping(node, deep=deep)


def yaml_error_line(err: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line L, column C: problem (context)``, without the source excerpt that
    PyYAML puts on the following lines."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({err.context})" if err.context else ""
        return f"{where}{err.problem}{context}"
    return " ".join(str(err).split())


def read_yaml(path: str | Path) -> dict:
    """The mapping a params, prompts or grid YAML file holds, read by ``StrictYAMLLoader``.

    ``ParamsError``, one line naming the file, for a file that is missing, unreadable, larger than
    ``MAX_YAML_BYTES``, not UTF-8 (with the byte offset and line), not valid YAML or refused by the loader
    (with the line and column), or whose top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: " + ("not a regular file" if path.exists() else "params file not found"))
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise ParamsError(f"{path}: cannot be read: {err.strerror or err}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ParamsError(f"{path}: larger than {MAX_YAML_BYTES // 1024} KiB: not a params file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ParamsError(f"{path}: not UTF-8: byte 0x{data[err.start]:02x} at byte offset {err.start} (line {line}); "
                          "save the file as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=StrictYAMLLoader)
    except RefusedYAMLError as err:
        raise ParamsError(f"{path}: {yaml_error_line(err)}") from None
    except yaml.reader.ReaderError as err:
        line = text[: err.position].count("\n") + 1
        code = err.character if isinstance(err.character, int) else ord(str(err.character)[:1] or "?")
        raise ParamsError(f"{path}: not valid YAML: line {line}: character U+{code:04X} is not allowed in YAML") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {yaml_error_line(err)}") from None
    except RecursionError:
        raise ParamsError(f"{path}: not valid YAML: nested too deeply") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values, got {type(loaded).__name__}")
    return loaded


def load_prompts(path: str | Path | None = None) -> dict[str, str]:
    """Prompt id -> text from ``params/prompts.yaml``."""
    path = Path(path) if path else params_dir() / "prompts.yaml"
    data = read_yaml(path)
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v]
    if bad:
        raise ParamsError(f"{path}: prompt(s) {bad} must be non-empty strings")
    return {str(k): v for k, v in data.items()}


def prompt_text(prompt_id: str) -> str:
    prompts = load_prompts()
    if prompt_id not in prompts:
        raise ParamsError(f"unknown prompt id {prompt_id!r}; known: {', '.join(prompts)}")
    return prompts[prompt_id]



# ---------------------------------------------------------------------------------------------------
# data files and their MANIFEST checksums

MANIFEST_NAME = "MANIFEST.md"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DataIntegrityError(ValueError):
    """A data file whose sha256 differs from its MANIFEST's, or a MANIFEST with no readable checksum table."""


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as 64 lowercase hex digits (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_manifest(text: str, source: str = MANIFEST_NAME) -> dict[str, str]:
    """File -> sha256 (hex) from the Markdown tables of a MANIFEST whose header names a ``file`` and a
    ``sha256`` column (backticks around cells are dropped; files are relative to the MANIFEST's folder).
    Other tables and prose are ignored; no such row at all, or a malformed checksum, is ``DataIntegrityError``."""
    entries: dict[str, str] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            header = None  # a table ends at the first line outside it
            continue
        cells = [c.strip().strip("`").strip() for c in line.strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
        elif "file" in header and "sha256" in header and not set("".join(cells)) <= set("-: "):
            row = dict(zip(header, cells))
            checksum = row.get("sha256", "").lower()
            if not _SHA256.fullmatch(checksum):
                raise DataIntegrityError(f"{source}: the row of {row['file']!r} has no sha256 of 64 hex digits")
            entries[row["file"]] = checksum
    if not entries:
        raise DataIntegrityError(f"{source}: no checksums found (expected a Markdown table with "
                                 "'file' and 'sha256' columns)")
    return entries


_manifests: dict[tuple[str, int, int], dict[str, str]] = {}
_verified: set[tuple[str, int, int, str]] = set()


def read_manifest(path: Path) -> dict[str, str]:
    """``parse_manifest`` of the file at ``path``, parsed once per process (until the file changes)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _manifests:
        _manifests[key] = parse_manifest(path.read_text(encoding="utf-8"), str(path))
    return _manifests[key]


def manifest_sha256(folder: Path, relative: str) -> tuple[Path | None, str | None]:
    """(the MANIFEST of ``relative``'s top folder under ``folder``, the sha256 it lists for ``relative``);
    ``(None, None)`` without a MANIFEST, ``(manifest, None)`` when it does not list the file."""
    parts = Path(relative).parts
    manifest = folder / parts[0] / MANIFEST_NAME
    if len(parts) < 2 or not manifest.is_file():
        return None, None
    return manifest, read_manifest(manifest).get("/".join(parts[1:]))


def verified_data_file(relative: str) -> Path:
    """The data file ``relative`` (e.g. ``"corpora/carroll-alice.txt"``), its bytes checked against the
    sha256 that ``<data dir>/<top folder>/MANIFEST.md`` lists for it, once per process per file version.

    Missing: ``DataNotFoundError`` naming the file, the data directory and the expected sha256 (from that
    MANIFEST, else the project's own). Altered: ``DataIntegrityError`` naming the file and both checksums.
    A data directory of your own (``$AEP_DATA_DIR``) without a MANIFEST, or a file its MANIFEST does not
    list, is read as it is, without verification.
    """
    folder = data_dir()
    manifest, expected = manifest_sha256(folder, check_data_relative(relative))
    reference = expected or manifest_sha256(project_root() / "data", relative)[1]
    path = data_file(relative, reference)
    if manifest is None or expected is None:
        return path
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, expected)
    if key in _verified:
        return path
    actual = file_sha256(path)
    if actual != expected:
        where = f"{DATA_DIR_VAR}={folder}" if os.environ.get(DATA_DIR_VAR) else f"the project's data directory {folder}"
        raise DataIntegrityError(f"{relative} in {where} was altered: sha256 {actual}, expected {expected} "
                                 f"({manifest}); restore the original file")
    _verified.add(key)
    return path


CLASSIC_OPENINGS = {  # where each corpus' text proper begins (after title pages and contents)
    "carroll-alice": "Alice was beginning to get very tired",
    "fitzgerald-gatsby": "In my younger and more vulnerable years",
    "austen-pride-and-prejudice": "It is a truth universally acknowledged",
    "austen-emma": "Emma Woodhouse, handsome, clever, and rich",
    "melville-moby-dick": "Call me Ishmael",
    "dickens-tale-of-two-cities": "It was the best of times",
    "kjv-genesis": "In the beginning God created",
}


@dataclass(frozen=True)
class ExternalText:
    text_id: str  # e.g. "carroll-alice", "xsum-3"
    group: str  # "classic", "news", "essay", ...
    text: str
    source: str  # the data-dir relative file it came from


def reflow(text: str) -> str:
    """Join hard-wrapped lines of a paragraph with spaces (blank lines stay paragraph breaks)."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p).strip() for p in paragraphs)


def classic_text(name: str, max_chars: int = 20_000, reflowed: bool = True) -> ExternalText:
    """``corpora/<name>.txt`` from its opening line on (``CLASSIC_OPENINGS``, else the file start)."""
    relative = f"corpora/{name}.txt"
    raw = verified_data_file(relative).read_text(encoding="utf-8")
    start = 0
    if name in CLASSIC_OPENINGS:
        m = re.search(r"\s+".join(map(re.escape, CLASSIC_OPENINGS[name].split())), raw)
        start = m.start() if m else 0
    body = raw[start : start + max_chars]
    return ExternalText(name, "classic", reflow(body) if reflowed else body, relative)


def benchmark_texts(relative: str, group: str, n: int, key: str = "original", prefix: str | None = None) -> list[ExternalText]:
    """The first ``n`` texts of a fast-detect-gpt ``*.raw_data.json`` file (``key``: original = human)."""
    data = json.loads(verified_data_file(relative).read_text(encoding="utf-8"))
    if key not in data:
        raise KeyError(f"{relative}: no key {key!r}; keys: {sorted(data)}")
    prefix = prefix or Path(relative).name.split("_")[0]
    return [ExternalText(f"{prefix}-{i}", group, t, relative) for i, t in enumerate(data[key][:n])]



FDG = "benchmarks/fast-detect-gpt"


BENCHMARKS: dict[str, str] = {
    **{f"{d}_{g}": f"{FDG}/exp_gpt3to4/{d}_{g}.raw_data.json"
       for g in ("gpt-4", "gpt-3.5-turbo") for d in ("xsum", "writing", "pubmed")},
    **{f"{d}_{g}": f"{FDG}/exp_main/{d}_{g}.raw_data.json"
       for g in ("gpt2-xl", "gpt-neo-2.7B") for d in ("xsum", "writing", "squad")},
    "pubmed_falcon-7b": "benchmarks/binoculars/pubmed-falcon7.jsonl",
}  # fmt: skip


BINOCULARS_MACHINE_KEY = "-fs-cml-models-Falcon-falcon-7b_generated_text_wo_prompt"


def shared_prefix(a: str, b: str) -> str:
    """The longest common prefix of ``a`` and ``b``, cut back to end just before a whitespace character
    (so the first scored token of each text starts a word); "" when they share no whole word."""
    n = len(os.path.commonprefix([a, b]))
    while n > 0 and not (a[n:n + 1].isspace() and b[n:n + 1].isspace()):
        n -= 1
    return a[:n]


def load_benchmark(name: str, n_texts: int = 0, max_chars: int = 6000) -> pd.DataFrame:
    """Human and machine texts of one benchmark, two rows per pair: ``dataset``, ``pair``, ``label``
    (human / machine), ``is_machine`` (0/1), ``prompt`` (the context not scored), ``text``.

    ``n_texts``: the first n pairs (0: all). Texts are cut to ``max_chars`` characters (only to bound
    tokenization; the token budget of ``score_texts`` is the real truncation).
    """
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    path = verified_data_file(BENCHMARKS[name])
    rows = []
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        pairs = [("", r["article"], r[BINOCULARS_MACHINE_KEY]) for r in records]
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = []
        for human, machine in zip(data["original"], data["sampled"]):
            prefix = shared_prefix(human, machine)
            pairs.append((prefix, human[len(prefix):], machine[len(prefix):]))
    kept = 0
    for i, (prefix, human, machine) in enumerate(pairs):
        if not human.strip() or not machine.strip():
            continue  # nothing left after the shared prefix
        for label, text in (("human", human), ("machine", machine)):
            rows.append({"dataset": name, "pair": i, "label": label, "is_machine": int(label == "machine"),
                         "prompt": prefix, "text": text[:max_chars]})
        kept += 1
        if n_texts and kept >= n_texts:
            break
    return pd.DataFrame(rows)
