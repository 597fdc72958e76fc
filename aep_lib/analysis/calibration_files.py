"""Calibration files (``aep_lib.analysis.calibration``): written with a digest of their content, read back
validated whole and checked against that digest.

A calibration is one JSON object: ``format``, ``format_version``, ``created``, ``git_sha``, the ``model``
and ``reference`` identities (``name``, ``vocab_size``, ``vocab_sha256``), the ``settings`` it was made
with (``max_tokens``, ``min_k``, ``dtype``, ``stride``, ``length_edges``, ``heldout_frac``, ``seed``), the
``corpus`` (``name``, ``n_texts``, ``sha256``, ``datasets``, ``split``), the ``detectors`` (their
directions and units), the ``rows`` (columns ``dataset, pair, split, bin, n_tokens``) and the ``scores``
(one list per detector, machine-oriented, null where undefined), and ``content_sha256``: the sha256 of
the canonical JSON of everything else (``content_digest``), written by ``save_calibration``.

``load_calibration`` refuses, with a one-line ``CalibrationError`` naming the file, the key and the value:
a file that is not JSON or not a calibration, another format version, any value of the wrong type, out
of range or not finite (``check_structure``), a row whose length is outside its bin, an unknown
detector, and a file whose content differs from its ``content_sha256`` or that carries none (a file
edited after it was written: scores shifted by a constant change every decision silently).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from .detect import DETECTORS
from .length_bins import bin_bounds

FORMAT = "aep-detection-calibration"
FORMAT_VERSION = 1
DIGEST_KEY = "content_sha256"  # the sha256 of the rest of the file's content (content_digest)
MIN_SCORED_TOKENS = 2  # fewer scored tokens: no score is defined (z needs a sum of varentropies)
SPLITS = ("calibration", "heldout")
ROW_COLUMNS = ("dataset", "pair", "split", "bin", "n_tokens")
DTYPES = ("float32", "float16", "bfloat16", "float64")
RECREATE = "re-create it with 'aep calibrate TEXTS... --model MODEL --out FILE.json' (or the notebook that built it)"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CalibrationError(ValueError):
    """A calibration file that cannot be used as asked; the message is one line saying why."""


def content_digest(cal: dict) -> str:
    """sha256 (hex) of a calibration's content: its canonical JSON (keys sorted, no spaces, floats by
    repr) without ``content_sha256`` and ``path`` (added by ``load_calibration``)."""
    content = {k: v for k, v in cal.items() if k not in (DIGEST_KEY, "path")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_calibration(calibration: dict, path: str | Path) -> Path:
    """Write ``calibration`` (checked by ``check_structure``: ``ValueError`` if it would not load) as JSON
    to ``path`` with its ``content_sha256``; returns the path."""
    check_structure(calibration)
    content = {k: v for k, v in calibration.items() if k not in (DIGEST_KEY, "path")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content | {DIGEST_KEY: content_digest(content)}, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")
    return path


def load_calibration(path: str | Path) -> dict:
    """A calibration file, checked (``CalibrationError``, one line): JSON, a calibration of this format
    version, every value valid (``check_structure``), its content equal to its ``content_sha256``. The
    returned dict has ``path`` added."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such calibration file")
    try:
        cal = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CalibrationError(f"{path}: not a calibration file (not valid JSON: {excerpt(first, 120)})") from None
    except OSError as err:
        raise CalibrationError(f"{path}: cannot read the calibration file: {err.strerror or err}") from None
    if not isinstance(cal, dict) or cal.get("format") != FORMAT:
        raise CalibrationError(f"{path}: not a calibration file (no \"format\": \"{FORMAT}\"); build one with "
                               "aep calibrate")
    if cal.get("format_version") != FORMAT_VERSION:
        raise CalibrationError(f"{path}: calibration format version {excerpt(cal.get('format_version'))}; this aep "
                               f"reads version {FORMAT_VERSION} (rebuild it with aep calibrate)")
    try:
        check_structure(cal)
    except (KeyError, TypeError, ValueError) as err:
        raise CalibrationError(f"{path}: corrupt calibration file ({err})") from None
    recorded = cal.get(DIGEST_KEY)
    if recorded is None:
        raise CalibrationError(f"{path}: the calibration carries no {DIGEST_KEY}, so its numbers cannot be checked; "
                               f"{RECREATE}")
    if recorded != content_digest(cal):
        raise CalibrationError(f"{path}: the calibration's content differs from its {DIGEST_KEY} (the file was "
                               f"changed after it was written); {RECREATE}")
    cal["path"] = str(path)
    return cal


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number a calibration may hold")


def excerpt(value, n: int = 40) -> str:
    """A short repr of ``value`` for a one-line message (at most ``n`` characters)."""
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(ok: bool, where: str, what: str, value) -> None:
    if not ok:
        raise ValueError(f"{where} must be {what}, got {excerpt(value)}")


def check_identity(role: str, ident) -> None:
    """A model or reference identity: ``name`` (text), ``vocab_size`` (a positive int), ``vocab_sha256``."""
    for key in ("name", "vocab_size", "vocab_sha256"):
        if key not in ident:
            raise ValueError(f"the model or reference identity lacks {key!r}")
    _need(isinstance(ident["name"], str) and ident["name"] != "", f"{role}.name", "a non-empty text", ident["name"])
    _need(is_int(ident["vocab_size"]) and ident["vocab_size"] > 0, f"{role}.vocab_size", "a positive integer",
          ident["vocab_size"])
    _need(isinstance(ident["vocab_sha256"], str) and bool(_SHA256.fullmatch(ident["vocab_sha256"])),
          f"{role}.vocab_sha256", "64 hex digits", ident["vocab_sha256"])


def check_settings(s: dict) -> list:
    """The settings of a calibration (see the module docstring); returns its ``length_edges``."""
    edges = s.get("length_edges")
    if not isinstance(edges, list) or len(edges) < 2 or any(not is_int(e) for e in edges) \
            or edges != sorted(set(edges)) or edges[0] < 1:
        raise ValueError(f"length_edges must be increasing positive integers, got {excerpt(edges)}")
    _need(is_int(s.get("max_tokens")) and s["max_tokens"] >= edges[-1], "settings.max_tokens",
          f"an integer of at least the last length edge ({edges[-1]})", s.get("max_tokens"))
    _need(is_number(s.get("min_k")) and 0 < s["min_k"] <= 1, "settings.min_k", "a number in (0, 1]", s.get("min_k"))
    _need(s.get("dtype") in DTYPES, "settings.dtype", f"one of {', '.join(DTYPES)}", s.get("dtype"))
    _need(s.get("stride") is None or (is_int(s["stride"]) and s["stride"] > 0), "settings.stride",
          "null or a positive integer", s.get("stride"))
    if "heldout_frac" in s:
        _need(is_number(s["heldout_frac"]) and 0 < s["heldout_frac"] < 1, "settings.heldout_frac",
              "a number in (0, 1)", s["heldout_frac"])
    if "seed" in s:
        _need(is_int(s["seed"]) and s["seed"] >= 0, "settings.seed", "a non-negative integer", s["seed"])
    return edges


def check_corpus(c: dict) -> None:
    """The corpus identity: ``name`` (text), ``n_texts`` (an int >= 0), ``sha256``; ``datasets`` (data set ->
    count) and ``split`` (text) when present."""
    _need(isinstance(c.get("name"), str), "corpus.name", "a text", c.get("name"))
    _need(is_int(c.get("n_texts")) and c["n_texts"] >= 0, "corpus.n_texts", "a non-negative integer", c.get("n_texts"))
    _need(isinstance(c.get("sha256"), str) and bool(_SHA256.fullmatch(c["sha256"])), "corpus.sha256",
          "64 hex digits", c.get("sha256"))
    if "datasets" in c:
        d = c["datasets"]
        _need(isinstance(d, dict) and all(isinstance(k, str) and is_int(v) and v >= 0 for k, v in d.items()),
              "corpus.datasets", "a map of data set names to counts", d)
    if "split" in c:
        _need(isinstance(c["split"], str), "corpus.split", "a text", c["split"])


def check_rows(rows: dict, edges: list) -> int:
    """The rows: ``ROW_COLUMNS`` as lists of one length (returned, at least 1), data set names, pair numbers,
    splits of ``SPLITS``, bins of ``edges`` and lengths inside their bin."""
    n = len(rows.get("dataset", []) if isinstance(rows.get("dataset"), list) else [])
    for c in ROW_COLUMNS:
        if not isinstance(rows.get(c), list) or len(rows[c]) != n:
            got = len(rows[c]) if isinstance(rows.get(c), list) else excerpt(rows.get(c))
            raise ValueError(f"rows column {c!r} has {got} values, expected {n}")
    if n == 0:
        raise ValueError("the calibration holds no rows")
    checks = {"dataset": (lambda v: isinstance(v, str), "a text"),
              "pair": (lambda v: is_int(v) and v >= 0, "a non-negative integer"),
              "split": (lambda v: v in SPLITS, f"one of {SPLITS}"),
              "bin": (lambda v: is_int(v) and 0 <= v < len(edges) - 1, f"a length bin in 0..{len(edges) - 2}"),
              "n_tokens": (is_int, "an integer")}
    for c, (ok, what) in checks.items():
        bad = next((i for i, v in enumerate(rows[c]) if not ok(v)), None)
        if bad is not None:
            if c == "bin":
                raise ValueError(f"a row's bin is outside the length bins (rows.bin[{bad}] = {excerpt(rows[c][bad])})")
            if c == "split":
                raise ValueError(f"rows split must be one of {SPLITS}, got {excerpt(rows[c][bad])} at row {bad}")
            _need(False, f"rows.{c}[{bad}]", what, rows[c][bad])
    for i, (b, length) in enumerate(zip(rows["bin"], rows["n_tokens"])):
        low, high = bin_bounds(edges, b)
        if not low <= length <= high:
            raise ValueError(f"rows.n_tokens[{i}] = {length} is outside its length bin {b} ({low}-{high} tokens)")
    return n


def check_structure(cal: dict) -> None:
    """Raise ``ValueError`` naming the first invalid value of a parsed calibration (the key, the value):
    its identities, settings, corpus, detectors (known names), rows and scores (finite numbers or null,
    one per row, of known detectors)."""
    for key in ("model", "reference", "settings", "corpus", "rows", "scores"):
        if not isinstance(cal.get(key), dict):
            raise ValueError(f"missing or malformed {key!r}")
    for key in ("created", "git_sha"):
        _need(cal.get(key) is None or isinstance(cal[key], str), key, "a text", cal.get(key))
    check_identity("model", cal["model"])
    check_identity("reference", cal["reference"])
    edges = check_settings(cal["settings"])
    check_corpus(cal["corpus"])
    if "detectors" in cal:
        _need(isinstance(cal["detectors"], dict), "detectors", "a map of detector names", cal["detectors"])
        unknown = [d for d in cal["detectors"] if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector {excerpt(unknown[0])} in detectors; known: {', '.join(DETECTORS)}")
    n = check_rows(cal["rows"], edges)
    for d, values in cal["scores"].items():
        if d not in DETECTORS:
            raise ValueError(f"unknown detector {excerpt(d)} in scores; known: {', '.join(DETECTORS)}")
        if not isinstance(values, list) or len(values) != n:
            raise ValueError(f"scores of {d!r} are not a list of {n} values")
        bad = next((i for i, v in enumerate(values) if v is not None and not is_number(v)), None)
        if bad is not None:
            what = "not finite" if isinstance(values[bad], float) else "not a number"
            raise ValueError(f"scores of {d!r} hold a value that is {what}: {excerpt(values[bad])} at row {bad}")
    if DIGEST_KEY in cal:
        _need(isinstance(cal[DIGEST_KEY], str) and bool(_SHA256.fullmatch(cal[DIGEST_KEY])), DIGEST_KEY,
              "64 hex digits", cal[DIGEST_KEY])
