"""Ordinary bad input to the command line is a one-line error (exit 2), never a traceback: profiles that
lead outside the output folder, an unwritable store, texts that cannot or should not be scored.
``aep runs --verify`` lists corrupt runs; ``aep score --html`` writes the token view."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from _tiny import build_tiny_model
from typer.testing import CliRunner

from aep_lib.cli import app
from aep_lib.cli.inputs import control_characters, read_texts
from aep_lib.store.run_store import RunStore


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def one_line_error(result, *fragments):
    """Exit code 2, stderr one line 'error: ...' holding each fragment, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = messages(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))


def messages(result):
    """The lines of stderr that the command wrote (not the progress bars of model loading)."""
    return [line for line in result.stderr.splitlines() if line.strip() and "Loading weights" not in line]


# --- profiles and the store ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["run", "grid.yaml"], ["runs"], ["compare"]])
def test_a_profile_that_leads_outside_the_output_folder_is_refused(command, tmp_path, monkeypatch):
    monkeypatch.setenv("AEP_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text("models: smollm2-135m\nprompts: p01\nn_seeds: 2\nmax_new_tokens: 8\n")
    result = invoke(*command, "--profile", "../x")
    one_line_error(result, "profile '../x' is not a plain name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]  # nothing written anywhere


def test_aep_run_stops_before_any_model_loads_when_the_store_cannot_be_written(tmp_path, monkeypatch):
    import aep_lib.runs.grids

    def must_not_run(*args, **kwargs):
        raise AssertionError("the grid ran although the store cannot be written")

    monkeypatch.setattr(aep_lib.runs.grids, "ensure_grid", must_not_run)
    grid = tmp_path / "grid.yaml"
    grid.write_text("models: smollm2-135m\nprompts: p01\nn_seeds: 2\nmax_new_tokens: 8\n")
    (tmp_path / "a-file").write_text("a file where the store's parent folder should be")
    store = tmp_path / "a-file" / "store"
    one_line_error(invoke("run", grid, "--store", store), f"the store {store} is not writable", "Not a directory")


def test_aep_runs_verify_lists_the_corrupt_runs(tmp_path):
    st = RunStore(tmp_path / "store")
    for seed in range(3):
        st.write_run({"run_id": f"{seed:016x}", "kind": "generate", "model": "m", "prompt_id": "p01",
                      "label": f"s{seed}", "status": "ok"},
                     pd.DataFrame({"position": np.arange(500), "surprisal_raw": np.linspace(0, 9, 500)}))
    ok = invoke("runs", "--store", st.root, "--verify")
    assert ok.exit_code == 0 and "3 runs checked ({'sha256': 3}): 3 intact, 0 bad" in ok.stdout
    path = Path(st.get_run(f"{1:016x}")["path"]) / "tokens.parquet"
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 50)
    bad = invoke("runs", "--store", st.root, "--verify")
    assert bad.exit_code == 1
    assert re.search(rf"^{1:016x}  corrupt tokens file: .*sha256", bad.stdout, re.M)
    assert "3 runs checked ({'sha256': 3}): 2 intact, 1 bad" in bad.stdout
    listed = invoke("runs", "--store", st.root)
    assert listed.exit_code == 0 and "3 runs ({'ok': 2, 'failed': 1})" in listed.stdout


# --- aep score: the text ------------------------------------------------------------------------------


def test_a_file_in_another_encoding_names_the_byte_and_the_option(tmp_path, tiny):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Caf\u00e9 au lait, s'il vous pla\u00eet.".encode("latin-1"))
    one_line_error(invoke("score", path, "--model", tiny), f"{path}: not valid utf-8: byte 0xe9 at byte offset 3 "
                   "(invalid continuation byte)", "--encoding latin-1")
    good = invoke("score", path, "--model", tiny, "--encoding", "latin-1")
    assert good.exit_code == 0, good.output
    assert re.search(r"tokens  l=\d", good.stdout)
    one_line_error(invoke("score", path, "--encoding", "klingon"), "--encoding 'klingon': unknown encoding")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the text is empty"),
    (b"  \n\t \n", "the text is only whitespace (6 characters)"),
])
def test_an_empty_or_blank_text_is_refused(tmp_path, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    one_line_error(invoke("score", path), message)


def test_prompt_chars_must_leave_something_to_score(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("The history of the lighthouse.   ")
    one_line_error(invoke("score", path, "--prompt-chars=-20"), "--prompt-chars must be 0 or more, got -20")
    one_line_error(invoke("score", path, "--prompt-chars", "30"), "--prompt-chars 30 leaves nothing to score "
                   "(the text has 33 characters, the rest is whitespace)")
    one_line_error(invoke("score", path, "--prompt-chars", "99"), "(the text has 33 characters)")


def test_too_few_scorable_tokens_is_an_error_that_says_how_many(tmp_path, tiny):
    path = tmp_path / "one.txt"
    path.write_text("a")  # one token, scored after the start-of-document token
    one_line_error(invoke("score", path, "--model", tiny), "1 scorable token(s)", "fewer than --min-tokens 2")
    path.write_text("Hello")  # 4 tokens of the tiny tokenizer, every one scored
    one_line_error(invoke("score", path, "--model", tiny, "--min-tokens", "5"), "4 scorable token(s)")
    assert invoke("score", path, "--model", tiny, "--min-tokens", "4").exit_code == 0
    one_line_error(invoke("score", path, "--min-tokens", "0"), "--min-tokens must be at least 1")


def test_control_characters_are_scored_with_a_warning(tmp_path, tiny):
    path = tmp_path / "nul.txt"
    path.write_bytes(b"The history\x00 of the\x1b lighthouse.\r\n")
    result = invoke("score", path, "--model", tiny)
    assert result.exit_code == 0, result.output
    assert messages(result) == [(f"warning: {path}: 2 control character(s), the first U+0000 at character 11; "
                                   "they are scored as they are (is this a binary file?)")]
    assert control_characters("tab\tnew\nline\r\x7f\x85") == [(13, "\x7f"), (14, "\x85")]


def test_score_reads_stdin_and_writes_the_token_view(tmp_path, tiny):
    page, table = tmp_path / "views" / "view.html", tmp_path / "tokens.csv"
    text = "The history of the lighthouse begins with fire on a hill."
    result = invoke("score", "-", "--model", tiny, "--prompt-chars", "11", "--html", page, "--out", table,
                    input=text.encode("utf-8"))
    assert result.exit_code == 0, result.output
    tokens = pd.read_csv(table, keep_default_na=False)
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and f"<title>&lt;stdin&gt; under {tiny}: {len(tokens)} tokens" in html
    spans = re.findall(r'<span class="tok" style="background:rgb\(\d+,\d+,\d+\)" title="[^"]*">([^<]*)</span>', html)
    assert "".join(spans) == text[11:] and len(spans) == len(tokens)  # every scored token, in order
    assert "<span style='color:#888'>The history</span>" in html  # the prompt, greyed, not scored
    assert f"token view: {page}" in result.stdout
    one_line_error(invoke("score", "-", "--out", tmp_path / "t.xlsx", input=b"x y"), "must end in .csv or .parquet")


def test_read_texts_keeps_its_signature_and_checks_the_texts(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffA file with a byte-order mark.".encode("utf-8"))
    assert read_texts(["a literal text", str(path)]) == [("<text 1>", "a literal text"),
                                                           (str(path), "A file with a byte-order mark.")]
    path.write_bytes("na\u00efve".encode("latin-1"))
    assert read_texts([str(path)], encoding="latin-1") == [(str(path), "na\u00efve")]
    for bad in (["   "], [str(path)]):  # blank; not UTF-8
        with pytest.raises(typer.Exit) as caught:
            read_texts(bad)
        assert caught.value.exit_code == 2


def test_an_empty_argument_and_a_text_too_long_for_a_file_name_are_texts():
    """``""`` is an empty text (not the current folder); a literal longer than a file name can be is scored as
    text (looking it up as a file raised 'File name too long')."""
    long_text = "The lighthouse keeper wrote every night. " * 20  # 820 characters, over NAME_MAX
    assert read_texts([long_text]) == [("<text 1>", long_text)]
    with pytest.raises(typer.Exit) as caught:
        read_texts([""])
    assert caught.value.exit_code == 2
    one_line_error(invoke("detect", ""), "the text is empty")
