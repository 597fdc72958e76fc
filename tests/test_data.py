"""The project's own data/: every MANIFEST entry is there with its sha256, it is what the loaders read
when AEP_DATA_DIR is unset, and a missing or altered file is a one-line error with the expected checksum.

These are the data-reading code paths of the memorised-texts, membership and detection notebooks
(``classic_text``, ``benchmark_texts``, ``load_benchmark``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aep_lib import corpora, paths

DATA = paths.PROJECT_ROOT / "data"
NEWS = "benchmarks/fast-detect-gpt/exp_main/xsum_gpt2-xl.raw_data.json"
XSUM_GPT4 = "benchmarks/fast-detect-gpt/exp_gpt3to4/xsum_gpt-4.raw_data.json"
ALICE = "corpora/carroll-alice.txt"
ALICE_SHA256 = "21dd81709d74028b745a64245b06ed092cd972cb3a30b84b418f8cea7340f37c"  # corpora/MANIFEST.md
XSUM_GPT4_SHA256 = "b4275bb70331550699bc1867b2c3e244cee4a165cdb24f5eb7e9cef54f05be06"  # benchmarks/MANIFEST.md


@pytest.fixture
def project_data(monkeypatch):
    monkeypatch.delenv(paths.DATA_DIR_VAR, raising=False)


def copy_into(folder: Path, *relatives: str) -> None:
    """The project's copies of ``relatives`` and of their MANIFESTs, into ``folder`` (same layout)."""
    for relative in relatives:
        for source in (DATA / relative, DATA / Path(relative).parts[0] / "MANIFEST.md"):
            target = folder / source.relative_to(DATA)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())


@pytest.mark.parametrize("top, n_files", [("corpora", 7), ("benchmarks", 25)])
def test_every_manifest_entry_is_in_data_with_its_sha256(top, n_files):
    listed = corpora.parse_manifest((DATA / top / "MANIFEST.md").read_text(encoding="utf-8"))
    on_disk = sorted(str(p.relative_to(DATA / top)) for p in (DATA / top).rglob("*")
                     if p.is_file() and p.name != "MANIFEST.md")
    assert sorted(listed) == on_disk and len(on_disk) == n_files  # nothing missing, nothing unlisted
    wrong = {f: sha for f, sha in listed.items() if hashlib.sha256((DATA / top / f).read_bytes()).hexdigest() != sha}
    assert not wrong


def test_the_manifest_parser_reads_the_checksum_tables():
    text = ("# x\n\nprose | with a pipe\n\n| file | bytes | sha256 |\n|---|---|---|\n"
            f"| a.txt | 3 | `{'ab' * 32}` |\n| sub/b.json | 4 | {'CD' * 32} |\n\n"
            "| key | value |\n|---|---|\n| file | nothing |\n")
    assert corpora.parse_manifest(text) == {"a.txt": "ab" * 32, "sub/b.json": "cd" * 32}
    with pytest.raises(corpora.DataIntegrityError, match="'a.txt' has no sha256"):
        corpora.parse_manifest("| file | sha256 |\n|---|---|\n| a.txt | abc |\n")
    with pytest.raises(corpora.DataIntegrityError, match="no checksums found"):
        corpora.parse_manifest("# a manifest\n\njust prose\n")


def test_without_the_variable_the_project_data_is_read(project_data):
    assert paths.data_dir() == paths.PROJECT_ROOT / "data"
    alice = corpora.classic_text("carroll-alice", max_chars=200)
    assert alice.text.startswith("Alice was beginning to get very tired") and alice.source == ALICE
    pairs = corpora.load_benchmark("xsum_gpt-4", n_texts=2)
    assert pairs[["pair", "label"]].values.tolist() == [[0, "human"], [0, "machine"], [1, "human"], [1, "machine"]]
    news = corpora.benchmark_texts(NEWS, "news", 2, prefix="xsum")
    assert [t.text_id for t in news] == ["xsum-0", "xsum-1"] and all(len(t.text) > 200 for t in news)


def test_nothing_outside_the_project_is_read(project_data, monkeypatch, tmp_path):
    """A project without data/ beside a ``shared/`` holding the corpora: the error, not the neighbour's copy."""
    copy_into(tmp_path / "shared", ALICE)
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "project")
    with pytest.raises(paths.DataNotFoundError) as err:
        corpora.classic_text("carroll-alice")
    message = str(err.value)
    assert str(tmp_path / "project" / "data") in message and "AEP_DATA_DIR is not set" in message
    assert "\n" not in message


def test_an_empty_data_dir_names_the_variable_the_file_and_its_checksum(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.DATA_DIR_VAR, str(tmp_path))
    with pytest.raises(corpora.DataNotFoundError) as err:
        corpora.classic_text("carroll-alice")
    message = str(err.value)
    assert message.startswith(f"{ALICE} (expected sha256 {ALICE_SHA256}) not found in AEP_DATA_DIR={tmp_path}:")
    assert "\n" not in message
    with pytest.raises(paths.DataNotFoundError, match=f"{XSUM_GPT4} \\(expected sha256 {XSUM_GPT4_SHA256}\\)"):
        corpora.load_benchmark("xsum_gpt-4", n_texts=2)
    with pytest.raises(paths.DataNotFoundError, match=f"{NEWS} .*AEP_DATA_DIR={tmp_path}"):
        corpora.benchmark_texts(NEWS, "news", 2)
    monkeypatch.setenv(paths.DATA_DIR_VAR, str(tmp_path / "absent"))
    with pytest.raises(paths.DataNotFoundError, match="absent \\(no such folder\\)"):
        corpora.classic_text("carroll-alice")


def test_a_path_out_of_the_data_dir_is_refused(project_data):
    with pytest.raises(paths.DataNotFoundError, match="'../corpora/x.json' is not a relative path inside"):
        corpora.benchmark_texts("../corpora/x.json", "news", 1)


def flip_case_of_one_letter(path: Path) -> None:
    """One byte changed inside the text (a letter's case), the file staying valid JSON or text."""
    data = bytearray(path.read_bytes())
    i = data.index(b"the ", 2000)
    data[i] ^= 0x20  # 't' -> 'T'
    path.write_bytes(bytes(data))


def test_an_altered_copy_is_a_one_line_error_with_the_expected_checksum(monkeypatch, tmp_path):
    copy_into(tmp_path, XSUM_GPT4)
    monkeypatch.setenv(paths.DATA_DIR_VAR, str(tmp_path))
    assert len(corpora.load_benchmark("xsum_gpt-4", n_texts=2)) == 4  # the unaltered copy reads
    altered = tmp_path / XSUM_GPT4
    flip_case_of_one_letter(altered)
    actual = hashlib.sha256(altered.read_bytes()).hexdigest()
    with pytest.raises(corpora.DataIntegrityError) as err:
        corpora.load_benchmark("xsum_gpt-4", n_texts=2)
    message = str(err.value)
    assert message.startswith(f"{XSUM_GPT4} in AEP_DATA_DIR={tmp_path} was altered: sha256 {actual}, "
                              f"expected {XSUM_GPT4_SHA256}")
    assert "\n" not in message


def test_an_own_data_dir_without_manifest_is_read_unverified(monkeypatch, tmp_path):
    copy_into(tmp_path, ALICE)
    (tmp_path / "corpora" / "MANIFEST.md").unlink()
    flip_case_of_one_letter(tmp_path / ALICE)
    monkeypatch.setenv(paths.DATA_DIR_VAR, str(tmp_path))
    text = corpora.classic_text("carroll-alice", max_chars=10**7, reflowed=False).text
    altered = (tmp_path / ALICE).read_text(encoding="utf-8")
    original = (DATA / ALICE).read_text(encoding="utf-8")
    start = altered.index("Alice was beginning")
    assert text == altered[start:] != original[start:]  # the user's bytes, as they are


def test_each_file_version_is_hashed_once_per_process(monkeypatch, tmp_path):
    copy_into(tmp_path, ALICE)
    monkeypatch.setenv(paths.DATA_DIR_VAR, str(tmp_path))
    hashed = []
    real = corpora.file_sha256
    monkeypatch.setattr(corpora, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    for _ in range(3):
        corpora.classic_text("carroll-alice", max_chars=100)
    assert hashed == ["carroll-alice.txt"]
