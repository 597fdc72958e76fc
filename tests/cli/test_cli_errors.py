"""Inputs the command line refuses cleanly, in one line (exit 2), before any work: params files an
attacker or a slip made (aliases, repeated keys, other encodings), store folders that are not there,
output files that cannot be written (nothing partial is left), texts read in the wrong encoding. CR LF
line ends are scored as they are, with a note."""

import errno
from pathlib import Path

import pandas as pd
import pytest
from _tiny import build_tiny_model
from typer.testing import CliRunner

from aep_lib.cli import app
from aep_lib.cli.app import MAX_MESSAGE_CHARS

TEXT = "The history of the lighthouse begins with fire on a hill. Ocean currents move heat."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded: the refusal must come first."""
    import aep_lib.engine.models
    import aep_lib.runs.grids

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started although the input was refused")

    monkeypatch.setattr(aep_lib.engine.models, "load_model", must_not_run)
    monkeypatch.setattr(aep_lib.runs.grids, "ensure_grid", must_not_run)


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def messages(result):
    return [line for line in result.stderr.splitlines() if line.strip() and "Loading weights" not in line]


def one_line_error(result, *fragments):
    """Exit code 2, stderr one line 'error: ...' holding each fragment, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = messages(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[:2000]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    return lines[0]


# --- params files ---------------------------------------------------------------------------------------


def test_aep_run_refuses_an_alias_bomb_a_repeated_key_and_a_file_not_utf8(tmp_path, no_model):
    bomb = tmp_path / "bomb.yaml"
    levels = ["&a [x,x,x,x,x,x,x,x,x]"] + [f"&{b} [{','.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    bomb.write_text(f"models: smollm2-135m\nprompts: p01\nn_seeds: [{', '.join(levels)}]\nmax_new_tokens: 8\n")
    assert bomb.stat().st_size < 600  # nine levels: 9**9 items once expanded
    one_line_error(invoke("run", bomb, "--store", tmp_path / "store"),
                   f"{bomb}: line 3, column 11: anchors and aliases (&name, *name) are not accepted")
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text("models: smollm2-135m\nprompts: p01\nn_seeds: 2\nmax_new_tokens: 8\nmax_new_tokens: 999999\n")
    one_line_error(invoke("run", repeated, "--store", tmp_path / "store"),
                   f"{repeated}: line 5, column 1: key 'max_new_tokens' is given twice, on line 4 and on line 5")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("models: smollm2-135m\nprompts: p01 \u00e9t\u00e9\n".encode("latin-1"))
    one_line_error(invoke("run", latin1, "--store", tmp_path / "store"),
                   f"{latin1}: not UTF-8: byte 0xe9 at byte offset 34 (line 2)")
    assert not (tmp_path / "store").exists()


def test_an_error_quoting_a_huge_value_is_cut_short(tmp_path, no_model):
    grid = tmp_path / "grid.yaml"
    grid.write_text("models: smollm2-135m\nprompts: p01\nn_seeds: " + "x" * 500_000 + "\nmax_new_tokens: 8\n")
    line = one_line_error(invoke("run", grid, "--store", tmp_path / "store"), f"{grid}: key 'n_seeds'",
                          "(got 'xxxx", "...")
    assert len(line) < 400, len(line)  # the bad value is shown as a short excerpt


# --- the store ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verify", [[], ["--verify"]])
def test_aep_runs_refuses_a_store_that_is_missing_or_a_file(tmp_path, verify):
    missing = tmp_path / "no-such-store"
    one_line_error(invoke("runs", "--store", missing, *verify), f"--store {missing}: no such folder")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a store")
    one_line_error(invoke("runs", "--store", a_file, *verify), f"--store {a_file}: not a folder")
    empty = tmp_path / "empty-store"
    empty.mkdir()
    result = invoke("runs", "--store", empty, *verify)
    assert result.exit_code == 0, result.output  # an existing store with no runs is fine
    assert not missing.exists()


def test_a_profile_with_no_store_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("AEP_OUTPUT_DIR", str(tmp_path / "outputs"))
    for command in (["runs"], ["runs", "--verify"], ["compare"]):
        one_line_error(invoke(*command, "--profile", "nothing-here"),
                       "the store of --profile nothing-here", "nothing has been stored under --profile nothing-here yet")


# --- output files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--out", "--html"])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_model_loads(tmp_path, option, no_model):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    target = blocker / ("x.csv" if option == "--out" else "x.html")
    one_line_error(invoke("score", text, option, target), f"{option} {target}: {blocker} is not a folder")
    folder = tmp_path / ("dir.csv" if option == "--out" else "dir.html")
    folder.mkdir()
    one_line_error(invoke("score", text, option, folder), f"{option} {folder}: is a folder")


def no_space(path, *args, **kwargs):
    """A write that fills part of the file, then finds the disk full."""
    Path(path).write_bytes(b"position,surprisal")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_nothing_partial(tmp_path, tiny, monkeypatch):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    out = tmp_path / "tables" / "tokens.csv"
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, *args, **kwargs: no_space(path))
    one_line_error(invoke("score", text, "--model", tiny, "--out", out),
                   f"--out {out}: cannot be written: No space left on device")
    assert not (tmp_path / "tables").exists()  # neither the file, nor its temporary, nor the folder made for it
    monkeypatch.undo()
    earlier = tmp_path / "view.html"
    earlier.write_text("the page of an earlier run")
    real_write_text = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: no_space(self) if self.parent == tmp_path
                        else real_write_text(self, *a, **k))
    one_line_error(invoke("score", text, "--model", tiny, "--html", earlier),
                   f"--html {earlier}: cannot be written: No space left on device")
    assert earlier.read_text() == "the page of an earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "view.html"]


# --- texts ----------------------------------------------------------------------------------------------


def test_a_text_read_in_the_wrong_encoding_is_refused(tmp_path, no_model):
    utf8 = tmp_path / "utf8.txt"
    utf8.write_text(TEXT + "\n", encoding="utf-8")  # an even number of bytes: utf-16 decodes it
    one_line_error(invoke("score", utf8, "--encoding", "utf-16"), f"{utf8}: decoded as utf-16, the text is garbled",
                   "the bytes are UTF-8 without a NUL byte; leave --encoding out")
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes(TEXT.encode("utf-16-le"))  # no byte-order mark: valid UTF-8, one NUL in two characters
    one_line_error(invoke("score", utf16), f"{utf16}: decoded as utf-8, the text is garbled: 83 of its 166 "
                   "characters are NUL or U+FFFD", "it looks like UTF-16: pass --encoding utf-16")
    one_line_error(invoke("detect", utf16, "--encoding", "latin-1"), "decoded as latin-1, the text is garbled")
    with_bom = tmp_path / "bom.txt"
    with_bom.write_bytes(TEXT.encode("utf-16"))
    one_line_error(invoke("score", with_bom), "byte 0xff at byte offset 0",
                   "it starts with a utf-16 byte-order mark: pass --encoding utf-16")


def test_crlf_line_ends_are_scored_as_they_are_with_a_note(tmp_path, tiny):
    crlf, lf = tmp_path / "crlf.txt", tmp_path / "lf.txt"
    crlf.write_bytes(b"The history of the lighthouse.\r\nOcean currents move heat.\r\n")
    lf.write_bytes(b"The history of the lighthouse.\nOcean currents move heat.\n")
    noted = invoke("score", crlf, "--model", tiny)
    assert noted.exit_code == 0, noted.output
    assert messages(noted) == [f"note: {crlf}: 2 CR LF (Windows) line end(s), scored as they are; the same text "
                               "with LF line ends scores differently"]
    plain = invoke("score", lf, "--model", tiny)
    assert plain.exit_code == 0 and messages(plain) == []
    assert noted.stdout != plain.stdout  # the note is true: the scores differ


def test_an_overlong_error_line_keeps_its_start_and_end():
    from aep_lib.cli.app import short_message

    line = short_message("start " + "y" * 100_000 + " end")
    assert line.startswith("start ") and line.endswith(" end") and "characters cut]" in line
    assert len(line) < MAX_MESSAGE_CHARS + 100
    assert short_message("short") == "short"
