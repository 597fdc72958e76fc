"""A calibration file is validated whole (types, ranges, finite numbers, bins, known detectors) and checked
against the digest of its content it carries: an edited file (scores shifted by a constant) and a file
without a digest are refused in one line that says how to re-create it; the shipped files carry theirs."""

from __future__ import annotations

import copy
import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aep_lib import corpora
from aep_lib.analysis import calibration as cal_
from aep_lib.analysis import detect, length_bins
from aep_lib.analysis.calibration_files import DIGEST_KEY, CalibrationError, content_digest, load_calibration
from aep_lib.cli import app

EDGES = (16, 24, 32, 48)
IDENT = {"name": "m", "vocab_size": 10, "vocab_sha256": "a" * 64}
SETTINGS = {"max_tokens": 48, "min_k": 0.2, "dtype": "float32", "stride": None, "length_edges": list(EDGES),
            "heldout_frac": 0.5, "seed": 0}


def small_calibration() -> dict:
    """A valid calibration of 40 rows: 10 per split in bins 0 and 2, fast_detectgpt scores 1..40."""
    parts = []
    for split in ("calibration", "heldout"):
        for b in (0, 2):
            low, _ = length_bins.bin_bounds(EDGES, b)
            parts.append(pd.DataFrame({"dataset": "d", "pair": range(10), "split": split, "bin": b, "n_tokens": low}))
    rows = pd.concat(parts, ignore_index=True)
    for d in detect.DETECTORS:
        rows[d] = np.arange(1.0, len(rows) + 1) if d == "fast_detectgpt" else np.nan
    corpus = {"name": "known", "n_texts": 20, "sha256": "0" * 64, "datasets": {"d": 20}, "split": "given"}
    return cal_.build_calibration(rows, IDENT, IDENT, SETTINGS, corpus)


def write_signed(path, cal: dict) -> None:
    """Write ``cal`` as a file whose digest matches its (possibly invalid) content."""
    content = {k: v for k, v in cal.items() if k not in (DIGEST_KEY, "path")}
    path.write_text(json.dumps(content | {DIGEST_KEY: content_digest(content)}))


def refused(path, *fragments) -> str:
    with pytest.raises(CalibrationError) as err:
        load_calibration(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_a_saved_calibration_carries_its_digest_and_loads(tmp_path):
    cal = small_calibration()
    path = cal_.save_calibration(cal, tmp_path / "c.json")
    stored = json.loads(path.read_text())
    assert stored[DIGEST_KEY] == content_digest(cal) and DIGEST_KEY not in cal
    back = load_calibration(path)
    assert back["path"] == str(path) and back["scores"] == cal["scores"] and back["rows"] == cal["rows"]
    cal_.save_calibration(back, tmp_path / "again.json")  # a loaded calibration saved again: the same content
    assert json.loads((tmp_path / "again.json").read_text())[DIGEST_KEY] == stored[DIGEST_KEY]


def test_shifted_scores_and_a_missing_digest_are_refused_with_how_to_recreate_it(tmp_path):
    path = cal_.save_calibration(small_calibration(), tmp_path / "c.json")
    cal = json.loads(path.read_text())
    shifted = tmp_path / "shifted.json"
    cal_shifted = copy.deepcopy(cal)
    cal_shifted["scores"] = {d: [None if v is None else v + 100 for v in vs] for d, vs in cal["scores"].items()}
    shifted.write_text(json.dumps(cal_shifted))  # valid numbers, the old digest
    refused(shifted, f"differs from its {DIGEST_KEY}", "changed after it was written", "aep calibrate")
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text(json.dumps({k: v for k, v in cal.items() if k != DIGEST_KEY}))
    refused(unsigned, f"carries no {DIGEST_KEY}", "re-create it with 'aep calibrate")
    bad_digest = tmp_path / "bad_digest.json"
    bad_digest.write_text(json.dumps(cal | {DIGEST_KEY: "f" * 64}))
    refused(bad_digest, f"differs from its {DIGEST_KEY}")
    other_setting = tmp_path / "seed.json"
    other_setting.write_text(json.dumps(cal | {"settings": cal["settings"] | {"seed": 1}}))
    refused(other_setting, f"differs from its {DIGEST_KEY}")


def changed(cal: dict, where: str, value) -> dict:
    """``cal`` with the value at a dotted path replaced (``rows.n_tokens.3``: the 4th row's length)."""
    out = json.loads(json.dumps(cal))  # no shared objects (model and reference may be one dict)
    *parents, last = where.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return out


@pytest.mark.parametrize("where, value, fragments", [
    ("settings.min_k", "0.2", ["settings.min_k must be a number in (0, 1]", "'0.2'"]),
    ("settings.min_k", 1.5, ["settings.min_k must be a number in (0, 1]"]),
    ("settings.max_tokens", "48", ["settings.max_tokens must be an integer"]),
    ("settings.max_tokens", 20, ["settings.max_tokens must be an integer of at least the last length edge (48)"]),
    ("settings.dtype", 32, ["settings.dtype must be one of"]),
    ("settings.stride", -5, ["settings.stride must be null or a positive integer"]),
    ("settings.heldout_frac", 1.5, ["settings.heldout_frac must be a number in (0, 1)"]),
    ("settings.seed", True, ["settings.seed must be a non-negative integer"]),
    ("settings.length_edges", [16, 48, 32], ["length_edges must be increasing"]),
    ("settings.length_edges", [16, "24", 48], ["length_edges must be increasing"]),
    ("model.vocab_size", True, ["model.vocab_size must be a positive integer"]),
    ("reference.vocab_sha256", "abc", ["reference.vocab_sha256 must be 64 hex digits"]),
    ("corpus.n_texts", -1, ["corpus.n_texts must be a non-negative integer"]),
    ("corpus.sha256", None, ["corpus.sha256 must be 64 hex digits"]),
    ("rows.n_tokens.3", 30, ["rows.n_tokens[3] = 30 is outside its length bin 0 (16-23 tokens)"]),
    ("rows.n_tokens.3", 16.0, ["rows.n_tokens[3] must be an integer"]),
    ("rows.bin.3", 7, ["a row's bin is outside the length bins"]),
    ("rows.split.0", "test", ["rows split must be one of"]),
    ("rows.pair.0", -2, ["rows.pair[0] must be a non-negative integer"]),
    ("rows.dataset.0", 5, ["rows.dataset[0] must be a text"]),
    ("scores.fast_detectgpt.4", "7", ["scores of 'fast_detectgpt' hold a value that is not a number"]),
    ("scores.fast_detectgpt.4", True, ["not a number"]),
    ("scores.gptzero", [1.0] * 40, ["unknown detector 'gptzero' in scores", "known: z, fast_detectgpt"]),
    ("detectors.gptzero", {}, ["unknown detector 'gptzero' in detectors"]),
    ("created", 5, ["created must be a text"]),
])
def test_every_value_is_validated_in_one_line_naming_the_key(tmp_path, where, value, fragments):
    bad = tmp_path / "bad.json"
    write_signed(bad, changed(small_calibration(), where, value))  # a digest that matches: validation must see it
    message = refused(bad, "corrupt calibration file", *fragments)
    assert "\n" not in message and len(message.replace(str(bad), "")) < 300  # short, whatever the path's length


def test_non_finite_constants_and_empty_rows_are_refused(tmp_path):
    cal = small_calibration()
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(cal).replace("[1.0,", "[NaN,", 1).replace("[1.0, ", "[NaN, ", 1))
    refused(nan, "not valid JSON", "NaN")
    huge = tmp_path / "huge.json"
    write_signed(huge, cal)
    huge.write_text(huge.read_text().replace("1.0", "1e400", 1))  # parses as inf
    refused(huge, "scores of 'fast_detectgpt' hold a value that is not finite: inf at row 0")
    empty = changed(cal, "rows", {c: [] for c in cal["rows"]})
    write_signed(tmp_path / "empty.json", empty | {"scores": {}})
    refused(tmp_path / "empty.json", "holds no rows")
    with pytest.raises(ValueError, match="settings.min_k"):  # never written invalid
        cal_.save_calibration(changed(cal, "settings.min_k", "x"), tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma-3-270m"])
def test_shipped_calibrations_carry_their_digest_and_their_manifest_hash(model):
    path = cal_.shipped_calibration(model)  # checked against MANIFEST.md's sha256
    cal = load_calibration(path)
    raw = json.loads(path.read_text())
    assert raw[DIGEST_KEY] == content_digest(raw)
    manifest = (path.parent / "MANIFEST.md").read_text()
    assert f"| {path.name} | {model} |" in manifest
    assert f"`{hashlib.sha256(path.read_bytes()).hexdigest()}`" in manifest
    assert len(cal["rows"]["bin"]) > 3000 and set(cal["scores"]) == set(detect.DETECTORS)


def test_aep_detect_refuses_a_shifted_or_mistyped_calibration_in_one_line(tmp_path):
    """The reproduction: the shipped calibration with every score shifted by +100 (used silently before)."""
    cal = json.loads(cal_.shipped_calibration("smollm2-135m").read_text())
    shifted = copy.deepcopy(cal)
    shifted["scores"] = {d: [None if v is None else v + 100 for v in vs] for d, vs in cal["scores"].items()}
    (tmp_path / "shifted.json").write_text(json.dumps(shifted))
    mistyped = tmp_path / "mistyped.json"
    mistyped.write_text(json.dumps(changed(cal, "settings.min_k", "0.2")))
    runner = CliRunner()
    for path, fragment in [(tmp_path / "shifted.json", f"differs from its {DIGEST_KEY}"),
                           (mistyped, "settings.min_k must be a number in (0, 1]")]:
        out = runner.invoke(app, ["detect", "Some text that would be scored here.", "--calibration", str(path)])
        assert out.exit_code == 2, out.output
        assert out.exception is None or isinstance(out.exception, SystemExit)
        errors = [ln for ln in out.output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0] and str(path) in errors[0], out.output
        assert "Traceback" not in out.output and not re.search(r"threshold|HUMAN|MACHINE", out.output)


def test_the_data_folder_is_the_one_checked(monkeypatch):
    """The shipped files are read through corpora.verified_data_file (MANIFEST sha256), then validated."""
    seen = []
    real = corpora.verified_data_file
    monkeypatch.setattr(cal_, "verified_data_file", lambda name: seen.append(name) or real(name))
    load_calibration(cal_.shipped_calibration("smollm2-135m"))
    assert seen == ["calibration/smollm2-135m.json"]


def test_the_shipped_manifest_keeps_the_command_that_built_each_file(tmp_path):
    old = small_calibration()
    (tmp_path / "MANIFEST.md").write_text("# calibration/ MANIFEST\n\nbuilt by: `papermill old`\n")
    cal_.save_calibration(old, tmp_path / "m.json")
    other = copy.deepcopy(old)
    other["model"] = other["reference"] = IDENT | {"name": "n"}
    cal_.write_shipped(other, tmp_path, "papermill new -p models n")
    manifest = (tmp_path / "MANIFEST.md").read_text()
    assert cal_.manifest_commands(manifest) == {"m.json": "papermill old", "n.json": "papermill new -p models n"}
    assert set(corpora.parse_manifest(manifest)) == {"m.json", "n.json"}
    cal_.write_shipped(old, tmp_path, "papermill again")  # rebuilding one file leaves the other's command
    assert cal_.manifest_commands((tmp_path / "MANIFEST.md").read_text()) == {
        "m.json": "papermill again", "n.json": "papermill new -p models n"}
    assert load_calibration(tmp_path / "n.json")["model"]["name"] == "n"
