"""Loading causal LMs: the embedded GGUF models, Hugging Face hub ids and local folders.

``load_model(name_or_path)`` returns ``(model, tokenizer)`` in eval mode. The model carries an
``aep_identity`` dict (short name, source, revision, device, dtype) that runs record.

A name the model map points elsewhere (``model_map``: ``$AEP_MODEL_MAP``) loads from its folder or
stand-in, with the map's placement when the caller gives none; the identity then records both the name and
what it resolved to (``model_resolved``). Embedded models come from their cache (``embedded``).
``ModelPool`` / ``cached_model`` keep one ``(model, tokenizer)`` per name (and what it resolves to),
device, dtype and placement for the whole process; ``load_tokenizer`` reads a tokenizer without the weights.

Safety: weights load only from safetensors or GGUF (never pickle), ``trust_remote_code`` is off
unless asked for, and the network is touched only when a hub id is given.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import time
from pathlib import Path

from ..corpora import excerpt
from .embedded import (
    EMBEDDED_MODELS,
    ModelLoadError,
    build_embedded_cache,
    cache_is_complete,
    direct_tokenizer,
    embedded_cache,
    model_cache_dir,
)
from .embedded_files import import_name
from .memory import gc_paused, keep_freed_blocks, mapped_weights_faulted_in
from .model_map import lookup


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA device; use device='cpu'")
    return device


def cpu_features() -> dict:
    """What this CPU offers for bfloat16: torch's vector ``capability`` (``AVX512``, ``AVX2``, ...), ``bf16``
    (native bfloat16 dot products: AVX-512 BF16, AMX or Arm BF16) and ``amx`` (Intel AMX tiles).

    With ``bf16``, bfloat16 weights (``dtype="bfloat16"``) ran SmolLM2's matrix products 6x faster than
    float32 here (oneDNN vs MKL, one core); without it bfloat16 is emulated and slower than float32.
    """
    import platform

    import torch

    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    amx = bool({"amx_bf16", "amx_tile"} & flags)
    bf16 = bool({"avx512_bf16", "amx_bf16"} & flags) or ("bf16" in flags and platform.machine() in ("aarch64", "arm64"))
    return {"capability": torch.backends.cpu.get_cpu_capability(), "bf16": bf16, "amx": amx}


def resolve_dtype(dtype: str = "auto", device: str = "cpu"):
    """'auto' is bfloat16 on CUDA and float32 on CPU (the reproducible reference, whatever the CPU offers:
    ``dtype="bfloat16"`` is the measured faster option where ``cpu_features()["bf16"]``)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of: auto, {', '.join(table)}")
    return table[dtype]


# ---------------------------------------------------------------------------------------------------
# embedded models: GGUF -> cached safetensors


# ---------------------------------------------------------------------------------------------------
# the one entry point


def _unknown_name_message(name: str) -> str:
    return (
        f"unknown model {excerpt(name)}: known short names are {', '.join(EMBEDDED_MODELS)}; "
        "otherwise give a Hugging Face id (org/name) or a local folder"
    )


def out_of_memory(err: BaseException) -> bool:
    """True if ``err`` (or what it was raised from) says that memory ran out: ``MemoryError``, ``ENOMEM``, or
    torch's "can't allocate memory" / "out of memory"."""
    import errno

    while err is not None:
        if isinstance(err, MemoryError) or (isinstance(err, OSError) and err.errno == errno.ENOMEM):
            return True
        text = str(err).lower()
        if "can't allocate memory" in text or "cannot allocate memory" in text or "out of memory" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def is_existing_path(name: str) -> bool:
    """True if ``name`` names an existing file or folder (False for a name the OS cannot take as a path,
    such as one longer than a file name may be)."""
    try:
        return Path(name).expanduser().exists()
    except (OSError, ValueError):
        return False


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def load_model(
    name_or_path: str,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
    bf16_kernels: bool = True,
):
    """Load ``(model, tokenizer)``: an embedded short name, a local folder, or a hub id.

    The model is in eval mode on ``device`` ('auto': CUDA if present) in ``dtype`` ('auto': bfloat16
    on CUDA, float32 on CPU). ``model.aep_identity`` records where it came from.

    A model larger than one device: ``device_map`` (``"auto"``, or a dict from module names to devices:
    ``0``, ``"cuda:1"``, ``"cpu"``, ``"disk"``) spreads it through accelerate, within ``max_memory``
    (``{0: "70GiB", "cpu": "200GiB"}``); ``"disk"`` needs ``offload_folder``. ``generate`` and the scoring
    functions then feed the first device (``input_device``) and get the logits back there.

    ``bf16_kernels``: a bfloat16 model on a CPU with native bfloat16 (``cpu_features``) gets prepacked
    linears and its own one-token attention (``cpu_bf16``; ``model.aep_kernels`` says what was done);
    False loads it as transformers does.
    """
    placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
    entry = lookup(str(name_or_path))
    if device_map is None and entry is not None and entry.placement is not None:
        placement = entry.placement.kwargs()  # the map's placement, when the caller gives none
    with gc_paused():
        return _load_model(name_or_path, device, dtype, trust_remote_code, revision, placement, bf16_kernels)


def _load_model(name_or_path, device, dtype, trust_remote_code, revision, placement, bf16_kernels=True):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .cpu_bf16 import use_bf16_cpu_kernels

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    name = str(name_or_path)
    kwargs = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code)
    device_map = placement["device_map"]
    if device_map is not None:
        kwargs |= {k: v for k, v in placement.items() if v is not None}

    entry = lookup(name)
    if entry is not None:  # the model map points the name at a folder or a stand-in
        folder = entry.folder()
        source, rev = ("standin" if entry.standin else "local"), str(folder.resolve())
        model, tokenizer = local_model(folder, kwargs, direct=entry.standin is not None)
    elif name in EMBEDDED_MODELS:
        spec = EMBEDDED_MODELS[name]
        folder = embedded_cache(name)
        source, rev = "embedded", spec.revision
        try:
            model, tokenizer = _from_folder(folder, kwargs, direct=True)
        except Exception as err:
            if out_of_memory(err):  # not a damaged cache: rebuilding it would not help
                raise ModelLoadError(f"{name}: not enough memory to load the model from {folder} ({err})") from None
            build_embedded_cache(spec)  # damaged despite its marker (e.g. truncated tensor data): rebuild once
            model, tokenizer = _from_folder(folder, kwargs, direct=True)
    elif is_existing_path(name):
        folder = Path(name).expanduser()
        source, rev = "local", str(folder.resolve())
        model, tokenizer = local_model(folder, kwargs)
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

    if device_map is None:
        model.to(device)
    model.eval()
    if device == "cpu" or device_map is not None:
        _own_aligned_weights(model)
        keep_freed_blocks()
    model.aep_kernels = {}
    if (bf16_kernels and device == "cpu" and device_map is None and torch_dtype == torch.bfloat16
            and cpu_features()["bf16"]):
        model.aep_kernels = use_bf16_cpu_kernels(model)  # prepacked linears, one-token attention
    model.aep_tokenizer = tokenizer  # score_text(reference=model) compares the two vocabularies with it
    model.aep_identity = {
        "model": name,
        "model_source": source,
        "model_revision": rev,
        "device": device if device_map is None else placement_label(model),
        "dtype": str(torch_dtype).replace("torch.", ""),
        "vocab_size": int(model.config.vocab_size),
    }
    if entry is not None:
        model.aep_identity["model_resolved"] = entry.target
    return model, tokenizer


def placement_label(model) -> str:
    """``"map:cpu,disk"``: the devices of a model spread by a device map (for its identity)."""
    devices = dict.fromkeys(str(d) for d in getattr(model, "hf_device_map", {}).values())
    return "map:" + ",".join(devices)


def input_device(model):
    """The device a model's inputs go to: its input embedding's, or with accelerate's device map the device
    that embedding runs on (the first device; the logits come back there)."""
    import torch

    embedding = model.get_input_embeddings()
    device = getattr(getattr(embedding, "_hf_hook", None), "execution_device", None)
    if device is None:
        return embedding.weight.device
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


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
            if param.device.type == "cpu" and param.data_ptr() % 64:
                param.data = param.data.clone()


def local_model(folder: Path, kwargs: dict, direct: bool = False):
    """``(model, tokenizer)`` from a local model folder; every way the folder can be wrong (a file, not a
    folder; truncated or unreadable weights; an architecture this transformers does not know; too little
    memory) is a one-line ``ModelLoadError`` naming the folder."""
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is a file, not a model folder (give the folder holding config.json "
                             "and the weights)")
    try:
        return _from_folder(folder, kwargs, direct=direct)
    except ModelLoadError:
        raise
    except Exception as err:  # transformers and safetensors raise many types; all mean "cannot load this"
        if out_of_memory(err):
            raise ModelLoadError(f"{folder}: not enough memory to load the model ({excerpt(str(err), 200)})") from None
        what = type(err).__name__
        detail = " ".join(str(err).split())
        if isinstance(err, (KeyError, ValueError)) and "model_type" in detail or "does not recognize" in detail:
            raise ModelLoadError(f"{folder}: its config.json names a model architecture this transformers does "
                                 f"not know ({excerpt(detail, 200)})") from None
        raise ModelLoadError(f"{folder}: cannot load the model: {what}: {excerpt(detail, 300)} "
                             "(truncated or damaged weights, or not a causal language model)") from None


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


def known_models() -> list[dict]:
    """The embedded models, whether all their packages are installed, whether cached, cache size,
    vocabulary and provenance note (for ``aep models``)."""
    rows = []
    for name, spec in EMBEDDED_MODELS.items():
        folder = model_cache_dir(name)
        cached = cache_is_complete(folder)
        size = sum(p.stat().st_size for p in folder.iterdir()) if cached else 0
        installed = all(importlib.util.find_spec(import_name(pkg)) is not None for pkg in spec.packages)
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
                "note": spec.note,
            }
        )
    return rows


def timed_load(name: str, **kwargs) -> tuple[float, object, object]:
    """``(seconds, model, tokenizer)``: the wall time of one ``load_model`` call."""
    start = time.perf_counter()
    model, tokenizer = load_model(name, **kwargs)
    return time.perf_counter() - start, model, tokenizer


def cached_model(name: str, device: str = "auto", dtype: str = "auto", placement=None):
    """``load_model`` once per process per (name, what the model map resolves it to, device, dtype, placement).

    ``placement``: a ``model_map.Placement`` (a grid's ``device_map`` and ``max_memory``), else the map's."""
    entry = lookup(name)
    return _cached_model(name, entry.target if entry else None, device, dtype, placement)


@functools.lru_cache(maxsize=4)
def _cached_model(name: str, target, device: str, dtype: str, placement):
    return load_model(name, device=device, dtype=dtype, **(placement.kwargs() if placement is not None else {}))


def resolved_dtype(device: str = "auto", dtype: str = "auto") -> str:
    return str(resolve_dtype(dtype, resolve_device(device))).replace("torch.", "")


def load_tokenizer(name: str):
    """The tokenizer of a model without loading its weights (embedded short name, folder or hub id; a name
    the model map points elsewhere: the tokenizer of its folder or stand-in)."""
    entry = lookup(name)
    return _load_tokenizer(name, entry.target if entry else None)


@functools.lru_cache(maxsize=8)
def _load_tokenizer(name: str, target):
    from transformers import AutoTokenizer

    entry = lookup(name) if target is not None else None
    if entry is not None:
        folder = entry.folder()
        if entry.standin is not None:
            return direct_tokenizer(folder)
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if name in EMBEDDED_MODELS:
        return AutoTokenizer.from_pretrained(embedded_cache(name), local_files_only=True)
    return AutoTokenizer.from_pretrained(name)


class ModelPool:
    """Where models and tokenizers come from: ``cached_model`` by default; ``extra`` maps a name to an
    already loaded ``(model, tokenizer)`` (tests use it for a perturbed copy of a model)."""

    def __init__(self, device: str = "auto", dtype: str = "auto", extra: dict | None = None):
        self.device, self.dtype, self.extra = device, dtype, dict(extra or {})
        self._shared: dict[tuple[str, str], bool] = {}

    def model(self, name: str):
        return self.extra[name] if name in self.extra else cached_model(name, self.device, self.dtype)

    def tokenizer(self, name: str):
        return self.extra[name][1] if name in self.extra else load_tokenizer(name)

    def dtype_name(self, name: str) -> str:
        if name in self.extra:
            return str(next(self.extra[name][0].parameters()).dtype).replace("torch.", "")
        return resolved_dtype(self.device, self.dtype)

    def shared_vocabulary(self, a: str, b: str) -> bool:
        """True iff the two tokenizers map every token to the same id (checked, never assumed)."""
        if a == b:
            return True
        key = tuple(sorted((a, b)))
        if key not in self._shared:
            self._shared[key] = self.tokenizer(a).get_vocab() == self.tokenizer(b).get_vocab()
        return self._shared[key]


def cache_kwargs(model, cache) -> dict:
    """The keyword under which this transformers version takes the KV cache."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


def new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()
