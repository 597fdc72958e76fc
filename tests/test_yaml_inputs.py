"""Params, prompts and grid files (``corpora.read_yaml``) are read strictly: what such a file never needs
and an attacker or a slip would use (anchors and aliases, a key given twice, bytes that are not UTF-8,
a file of megabytes, nesting without end, values Python cannot build) is refused in one line naming the
file and the line, before anything is expanded; an error quotes at most a short excerpt of a value."""

import pytest

from aep_lib.corpora import EXCERPT_CHARS, MAX_YAML_BYTES, MAX_YAML_DEPTH, ParamsError, excerpt, load_prompts, read_yaml
from aep_lib.params import load_grid


def refused(path, *fragments):
    """The one-line ``ParamsError`` that reading ``path`` raises, checked to hold each fragment."""
    with pytest.raises(ParamsError) as caught:
        read_yaml(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_anchors_and_aliases_are_refused_before_anything_expands(tmp_path):
    bomb = tmp_path / "grid.yaml"
    bomb.write_text("models: [&a [x,x,x], &b [*a,*a,*a], &c [*b,*b,*b]]\nprompts: p01\nn_seeds: 1\n")
    refused(bomb, "line 1, column 10: anchors and aliases (&name, *name) are not accepted", "write each value out")
    alias = tmp_path / "alias.yaml"
    alias.write_text("models: smollm2-135m\nprompts: p01\nn_seeds: 1\nother: *x\n")  # an alias with no anchor
    refused(alias, "line 4, column 8: anchors and aliases")
    anchor = tmp_path / "anchor.yaml"
    anchor.write_text("n_seeds: &n 2\n")  # an anchor alone is refused as well: nothing needs it
    refused(anchor, "line 1, column 10: anchors and aliases")
    with pytest.raises(ParamsError, match="anchors and aliases"):
        load_grid(bomb)


@pytest.mark.parametrize(("text", "where"), [
    ("models: smollm2-135m\nn_seeds: 2\nmax_new_tokens: 8\nmax_new_tokens: 999999\n",
     "key 'max_new_tokens' is given twice, on line 3 and on line 4: keep one"),
    ("_runs:\n  - {temperature: 0.5, temperature: 0.7}\n",
     "key 'temperature' is given twice, on line 2 (columns 6 and 24): keep one"),
    ("true: 1\nyes: 2\n", "key True is given twice, on line 1 and on line 2"),  # YAML 1.1: both are True
])
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, text, where):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    refused(path, where)


def test_a_prompt_id_given_twice_is_refused(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text('p01: "The history of the lighthouse"\np02: "Ocean currents"\np01: "Dear diary"\n')
    with pytest.raises(ParamsError, match="key 'p01' is given twice, on line 1 and on line 3"):
        load_prompts(path)


def test_a_file_that_is_not_utf8_is_one_line_naming_the_byte_and_the_line(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_bytes("models: smollm2-135m\nprompts: p01 \u00e9t\u00e9\n".encode("latin-1"))
    refused(path, "not UTF-8: byte 0xe9 at byte offset 34 (line 2); save the file as UTF-8")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffn_seeds: 2\n".encode("utf-8"))  # a UTF-8 byte-order mark is fine
    assert read_yaml(bom) == {"n_seeds": 2}


def test_a_file_too_large_or_nested_too_deep_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"n_seeds: 2\n" + b"#" * MAX_YAML_BYTES)
    refused(big, f"larger than {MAX_YAML_BYTES // 1024} KiB")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "\n")  # PyYAML's own recursion would end in a RecursionError
    refused(deep, f"nested more than {MAX_YAML_DEPTH} levels deep")


@pytest.mark.parametrize(("text", "fragments"), [
    ("when: 2001-13-45\n", ["line 1, column 7: value '2001-13-45' cannot be read: month must be in 1..12"]),
    ("n_seeds: " + "1" * 5000 + "\n", ["line 1, column 10: value '1111", "cannot be read: Exceeds the limit"]),
    ("a: \x00\n", ["not valid YAML: line 1: character U+0000 is not allowed in YAML"]),
    ("a: [1, 2\nb: 3\n", ["not valid YAML: line 2, column 2: expected ',' or ']'"]),
])
def test_values_python_cannot_build_and_bad_yaml_are_one_line(tmp_path, text, fragments):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    message = refused(path, *fragments)
    assert len(message) < 300, message


def test_excerpt_shows_a_short_part_of_any_value():
    assert excerpt("n_seeds") == "'n_seeds'"
    for value in ("x" * 1_000_000, list(range(1_000_000)), {str(i): [i] * 1000 for i in range(1000)}, 10 ** 5000):
        shown = excerpt(value)
        assert len(shown) <= EXCERPT_CHARS, shown
    assert excerpt("y" * 1000, limit=20) == "'yyyyyyyyyyyyyyyy..."
