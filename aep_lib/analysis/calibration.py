"""Calibrated machine-text decisions: thresholds per length bin, with the false-positive rate they carry.

A detector score (``aep_lib.analysis.detect``) is a number; a decision a user can act on needs a threshold and
the rate at which it calls *human* text machine-written, for texts of the kind and length at hand.
The CLT level of the typicality ``z`` is no such threshold: its null is "the text was sampled from the
scorer's own ``q``" (attribution), and human text is under-typical for any model, so its level says
nothing about human text. A **calibration** is data, not a formula:

- a corpus of human-written texts, split (seeded, per data set) into a *calibration* half and a
  *held-out* half;
- each text scored once (at most ``max_tokens`` tokens); its scores at shorter lengths are those of its
  prefixes (``detect.prefix_scores``: exact, a causal model does not look ahead);
- **length bins** ``[e_i, e_(i+1))`` (the last one closed): each text of at least ``e_i`` tokens gives
  one row per bin it reaches, scored on a prefix whose length is drawn (seeded) uniformly within the
  bin, so that a bin holds the scores of texts of the lengths it names. Length matters: for a fixed
  per-token offset ``z`` grows like ``sqrt(n)``, and the spread of every per-token mean shrinks like
  ``1/sqrt(n)``, so one threshold for all lengths has a different FPR at each length (the notebook
  ``detection_calibration`` plots the human scores against length);
- the rows keep every detector's *machine-oriented* score (``detect.machine_scores``: higher = machine).

The rule at a target FPR ``f``: a text of ``n`` scored tokens falls in the bin containing ``n`` (the
first or last bin, with a warning, outside them); it is called machine iff its machine-oriented score
``> t``, the ``j``-th largest of the bin's ``n`` calibration scores, ``j = floor(f * (n + 1))``
(``conformal_threshold``: for new human texts exchangeable with the calibration ones, the chance of a
false positive is then at most ``f``; ``j = 1`` with a warning where ``n`` is too small for ``f``, and
the FPR is then about ``1/(n + 1)``). The FPR it carries is *measured* on the held-out rows of that bin,
with a 95% Clopper-Pearson interval (``inference.binomial_ci``). The file records what it is valid for:
the model and reference (name, vocabulary size, a sha256 of the token-to-id map), the scorer settings
and the corpus (name, size, checksum), and carries a digest of its content; ``calibration_files`` writes,
validates and checks it (``save_calibration``, ``load_calibration``). ``decide`` makes the decision for
one text.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.inference import binomial_ci
from ..corpora import load_benchmark, verified_data_file
from ..engine.models import load_tokenizer
from ..store.provenance import git_sha, utc_now
from .calibration_files import (  # noqa: F401 - the file format, read and written through this module
    FORMAT,
    FORMAT_VERSION,
    MIN_SCORED_TOKENS,
    ROW_COLUMNS,
    SPLITS,
    CalibrationError,
    check_structure,
    content_digest,
    load_calibration,
    save_calibration,
)
from .detect import DETECTORS, prefix_scores, safe_name
from .length_bins import bin_bounds, bin_lengths, bin_of, length_edges

DEFAULT_DETECTOR = "fast_detectgpt"
MIN_TEXTS = 10  # a calibration corpus needs at least this many texts (half calibrate, half measure)


# ---------------------------------------------------------------------------------------------------
# building a calibration


def split_texts(texts: pd.DataFrame, heldout_frac: float = 0.5, seed: int = 0) -> pd.Series:
    """``calibration`` / ``heldout`` per row of ``texts`` (columns ``dataset``, ``pair``): per data set a
    seeded random ``heldout_frac`` of its pairs is held out (the same pairs for any model)."""
    if not 0 < heldout_frac < 1:
        raise ValueError(f"heldout_frac must be in (0, 1), got {heldout_frac}")
    out = pd.Series("calibration", index=texts.index, dtype=object)
    for name, g in texts.groupby("dataset", sort=False):
        pairs = np.array(sorted(set(g["pair"])))
        rng = np.random.default_rng([seed, zlib.crc32(str(name).encode())])
        held = set(rng.choice(pairs, size=int(round(heldout_frac * len(pairs))), replace=False).tolist())
        out[g.index[g["pair"].isin(held)]] = "heldout"
    return out


def calibration_rows(texts: pd.DataFrame, tables: dict, spans: dict, edges, k: float = 0.2,
                     seed: int = 0) -> pd.DataFrame:
    """The rows of a calibration: per text of ``texts`` (columns ``dataset``, ``pair``, ``split``; index
    = the keys of ``tables``/``spans``, each text's per-token table and ``TokenSpan``) and per length bin
    it reaches, the machine-oriented score (higher = machine) of every detector on a prefix of a
    length drawn within the bin. Columns: ``ROW_COLUMNS`` (``text_sha`` too when ``texts`` has it) then
    one per detector."""
    rows = []
    extra = ["text_sha"] if "text_sha" in texts else []
    for idx, t in texts.iterrows():
        n = len(tables[idx])
        key = (seed, zlib.crc32(str(t["dataset"]).encode()), int(t["pair"]))
        for i, length in bin_lengths(n, edges, key):
            s = prefix_scores(tables[idx], spans[idx], length, k)
            row = {"dataset": t["dataset"], "pair": int(t["pair"]), "split": t["split"], "bin": i, "n_tokens": length}
            row |= {c: t[c] for c in extra} | {d: DETECTORS[d].direction * float(s[d]) for d in DETECTORS}
            rows.append(row)
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS) + extra + list(DETECTORS))


def benchmark_calibration(scores: pd.DataFrame, tables: dict, spans: dict, n_texts: int, max_tokens: int,
                          k: float = 0.2, heldout_frac: float = 0.5, seed: int = 0, dtype: str = "float32",
                          stride: int | None = None) -> tuple[dict, pd.DataFrame]:
    """``(calibration, rows)`` from the human texts of benchmark sets scored by one model
    (``detect.benchmark_tables(datasets, model, n_texts, max_tokens, ...)``: ``scores``, ``tables``,
    ``spans``). Half of each set's human texts (``heldout_frac``) is held out to measure the FPR."""
    human = scores[scores["label"] == "human"]
    human = human.assign(split=split_texts(human, heldout_frac, seed))
    edges = length_edges(max_tokens)
    rows = calibration_rows(human, tables, spans, edges, k, seed)
    model, ref = human["model"].iloc[0], human["reference"].iloc[0]
    texts = pd.concat([load_benchmark(d, n_texts) for d in dict.fromkeys(human["dataset"])], ignore_index=True)
    texts = texts[texts["label"] == "human"]
    pairs = f"first {n_texts} pairs" if n_texts else "all pairs"
    name = f"human texts of {', '.join(dict.fromkeys(human['dataset']))} ({pairs})"
    rule = (f"per set, a seeded random {heldout_frac:g} of the human texts (seed {seed}) is held out to measure the "
            "false-positive rate; the rest sets the thresholds; no machine text is used")
    settings = {"max_tokens": max_tokens, "min_k": k, "dtype": dtype, "stride": stride, "length_edges": list(edges),
                "heldout_frac": heldout_frac, "seed": seed}
    ident = model_identity(model, load_tokenizer(model))
    ref_ident = ident if ref == model else model_identity(ref, load_tokenizer(ref))
    return build_calibration(rows, ident, ref_ident, settings, corpus_identity(texts, name, rule)), rows


def vocabulary_sha256(tokenizer) -> str:
    """sha256 of a tokenizer's token-to-id map (sorted JSON): equal iff two tokenizers agree on every id."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def model_identity(name: str, tokenizer) -> dict:
    """``{"name", "vocab_size", "vocab_sha256"}`` of a scoring or reference model (by its tokenizer)."""
    return {"name": str(name), "vocab_size": len(tokenizer.get_vocab()), "vocab_sha256": vocabulary_sha256(tokenizer)}


def corpus_identity(texts: pd.DataFrame, name: str, split_rule: str) -> dict:
    """Name, size, per-data-set counts and a sha256 of the texts (``dataset``, ``pair``, ``prompt``, ``text``
    of every row, in order) of a calibration corpus."""
    digest = hashlib.sha256()
    for r in texts.itertuples():
        digest.update(json.dumps([r.dataset, int(r.pair), getattr(r, "prompt", "") or "", r.text]).encode("utf-8"))
    return {"name": name, "n_texts": len(texts), "sha256": digest.hexdigest(),
            "datasets": {str(k): int(v) for k, v in texts["dataset"].value_counts(sort=False).items()},
            "split": split_rule}


def _number(v) -> float | None:
    v = float(v)
    return float(f"{v:.7g}") if math.isfinite(v) else None


def build_calibration(rows: pd.DataFrame, model: dict, reference: dict, settings: dict, corpus: dict) -> dict:
    """The calibration as a JSON-ready dict: identities (``model_identity``), ``settings`` (``max_tokens``,
    ``min_k``, ``dtype``, ``stride``, ``length_edges``, ``heldout_frac``, ``seed``), ``corpus``
    (``corpus_identity``), the detectors' directions and units, and ``rows`` with the machine-oriented
    ``scores`` (7 significant digits; NaN as null)."""
    missing = [k for k in ("max_tokens", "min_k", "dtype", "length_edges") if k not in settings]
    if missing:
        raise ValueError(f"settings lack {missing}")
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": utc_now(), "git_sha": git_sha(),
        "model": model, "reference": reference, "settings": settings, "corpus": corpus,
        "detectors": {d.name: {"direction": d.direction_text, "unit": d.unit, "description": d.description,
                               "stored": "machine-oriented: direction * value (higher = more machine-like)"}
                      for d in DETECTORS.values()},
        "rows": {c: [int(v) if c in ("pair", "bin", "n_tokens") else str(v) for v in rows[c]] for c in ROW_COLUMNS},
        "scores": {d: [_number(v) for v in rows[d]] for d in DETECTORS if d in rows},
    }  # fmt: skip


def write_shipped(calibration: dict, folder: str | Path, command: str) -> Path:
    """Save ``calibration`` as ``<folder>/<model>.json`` and list every calibration of the folder, with its
    sha256, corpus and the command that built it, in ``<folder>/MANIFEST.md`` (read by
    ``corpora.verified_data_file``): ``command`` for this one, the MANIFEST's earlier ``built by`` for the others."""
    folder = Path(folder)
    target = folder / f"{safe_name(calibration['model']['name'])}.json"
    manifest = folder / "MANIFEST.md"
    built_by = manifest_commands(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    save_calibration(calibration, target)
    built_by[target.name] = command
    lines = ["# calibration/ MANIFEST", "", "Calibrations of `aep detect` for the embedded models "
             "(aep_lib.analysis.calibration; see README.md), each with the command that built it.", "",
             "| file | model | corpus | sha256 | built by |", "|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.json")):
        c = json.loads(path.read_text(encoding="utf-8"))
        corpus = f"{c['corpus']['name']}: {c['corpus']['n_texts']} human texts, sha256 {c['corpus']['sha256'][:12]}"
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        how = built_by.get(path.name, built_by.get("", "not recorded"))
        lines.append(f"| {path.name} | {c['model']['name']} | {corpus} | `{sha}` | `{how}` |")
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def manifest_commands(text: str) -> dict[str, str]:
    """File name -> the command that built it, from a calibration MANIFEST's ``built by`` column; under the
    key ``""`` the command of an older MANIFEST's single ``built by:`` line (then every file's)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("built by: `"):
            out[""] = line[len("built by: `"):].rstrip().rstrip("`")
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 5 and cells[0].endswith(".json"):
            out[cells[0]] = cells[4]
    return out


def shipped_calibration(model: str) -> Path:
    """The calibration the project ships for ``model`` (``<data dir>/calibration/<model>.json``, checked
    against its MANIFEST's sha256); ``DataNotFoundError`` when there is none."""
    return verified_data_file(f"calibration/{safe_name(model)}.json")


def rows_frame(cal: dict) -> pd.DataFrame:
    """The rows of a calibration as a tidy table: ``ROW_COLUMNS`` and one machine-oriented score per detector."""
    df = pd.DataFrame(cal["rows"])
    for d, values in cal["scores"].items():
        df[d] = np.array([np.nan if v is None else v for v in values], dtype=float)
    return df


def compatibility(cal: dict, model: dict, reference: dict, settings: dict, allow_mismatch: bool = False):
    """``(errors, warnings)`` of applying ``cal`` to texts scored by ``model``/``reference`` (identities)
    with ``settings`` (``min_k``, ``dtype``). Another tokenizer is always an error; another model or
    reference name an error unless ``allow_mismatch`` (then a warning: the FPR was measured for another
    model); other settings a warning."""
    errors, warnings = [], []
    where = cal.get("path", "the calibration")
    for role, have, want in (("model", model, cal["model"]), ("reference", reference, cal["reference"])):
        if (have["vocab_size"], have["vocab_sha256"]) != (want["vocab_size"], want["vocab_sha256"]):
            errors.append(f"{where} was calibrated with {role} {want['name']} ({want['vocab_size']} tokens), whose "
                          f"tokenizer differs from {have['name']}'s ({have['vocab_size']} tokens); build a calibration "
                          f"for {have['name']} with aep calibrate")
        elif have["name"] != want["name"]:
            msg = (f"{where} was calibrated with {role} {want['name']}, not {have['name']} (same tokenizer): "
                   "its false-positive rates were measured for the other model")
            (warnings if allow_mismatch else errors).append(msg + ("" if allow_mismatch else " (--allow-mismatch "
                                                                   "to use it anyway)"))
    cs = cal["settings"]
    if "min_k" in settings and not math.isclose(float(settings["min_k"]), float(cs["min_k"])):
        warnings.append(f"Min-K% share {settings['min_k']} differs from the calibration's {cs['min_k']}: "
                        "min_k and min_k_pp thresholds do not apply")
    if settings.get("dtype") and settings["dtype"] != cs["dtype"]:
        warnings.append(f"scored in {settings['dtype']}, calibrated in {cs['dtype']}: scores may differ slightly")
    return errors, warnings


# ---------------------------------------------------------------------------------------------------
# thresholds, measured error rates, decisions


def check_fpr(fpr: float) -> float:
    """``fpr`` if it is a usable target false-positive rate, in (0, 0.5]; else ``ValueError``."""
    fpr = float(fpr)
    if not 0 < fpr <= 0.5:
        raise ValueError(f"the target false-positive rate must be in (0, 0.5], got {fpr:g}")
    return fpr


def conformal_threshold(scores, fpr: float) -> float:
    """The threshold ``t`` of the rule ``score > t`` at target ``fpr``: the ``j``-th largest of the ``n``
    scores (NaN dropped), ``j = max(1, floor(fpr * (n + 1)))``. A new score exchangeable with these
    exceeds the ``j``-th largest with probability ``j / (n + 1) <= fpr`` (split-conformal; the in-sample
    ``(floor(fpr * n) + 1)``-th largest would allow slightly more). NaN without scores."""
    v = np.sort(np.asarray(scores, dtype=float))
    v = v[~np.isnan(v)][::-1]
    if not len(v):
        return math.nan
    j = max(1, math.floor(fpr * (len(v) + 1) + 1e-9))
    return float(v[min(j, len(v)) - 1])


def bin_thresholds(rows: pd.DataFrame, edges, detector: str, fpr: float, fixed: float | None = None) -> pd.DataFrame:
    """Per length bin of ``rows`` (``rows_frame``): the threshold on the machine-oriented ``detector``
    score at target ``fpr`` (from the calibration split; ``fixed``: this one threshold in every bin,
    e.g. the CLT level), and the FPR it gives on the held-out split with its 95% Clopper-Pearson
    interval. Columns: ``bin``, ``low``, ``high`` (tokens, inclusive), ``n_calibration``, ``threshold``,
    ``n_heldout``, ``false_positives``, ``fpr_heldout``, ``fpr_low``, ``fpr_high``, ``datasets`` (the
    calibration texts' data sets)."""
    check_fpr(fpr)
    out = []
    for i in range(len(edges) - 1):
        low, high = bin_bounds(edges, i)
        b = rows[rows["bin"] == i]
        cal = b.loc[b["split"] == "calibration", detector].dropna().to_numpy()
        held = b.loc[b["split"] == "heldout", detector].dropna().to_numpy()
        t = float(fixed) if fixed is not None else conformal_threshold(cal, fpr)
        fp = int((held > t).sum())
        lo, hi = binomial_ci(fp, len(held))
        out.append({"bin": i, "low": low, "high": high, "n_calibration": len(cal), "threshold": t,
                    "n_heldout": len(held), "false_positives": fp,
                    "fpr_heldout": fp / len(held) if len(held) else math.nan, "fpr_low": lo, "fpr_high": hi,
                    "datasets": ",".join(sorted(set(b.loc[b["split"] == "calibration", "dataset"])))})
    return pd.DataFrame(out)


def decide(cal: dict, scores: dict, detector: str = DEFAULT_DETECTOR, fpr: float = 0.05,
           threshold: float | None = None, warnings=(), rows: pd.DataFrame | None = None) -> dict:
    """The decision for one text from its ``detect.detector_scores`` and a calibration.

    Machine iff the machine-oriented ``detector`` score exceeds the threshold of the text's length bin
    at target ``fpr`` (or a given ``threshold``, on the machine-oriented scale). Returned: the verdict,
    the score (raw and oriented), the threshold (both scales), the target FPR and the FPR measured on the
    bin's held-out human texts (with its interval and counts, and ``[false positives, texts]`` per data
    set: the FPR differs between kinds of text), the bin, the share of calibration human texts of the bin
    scoring below this text (``human_percentile``), and the warnings (``warnings`` plus those of length
    coverage and thin bins).
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
    check_fpr(fpr)
    if detector not in cal["scores"]:
        raise CalibrationError(f"{cal.get('path', 'the calibration')} holds no scores of {detector}")
    rows = rows_frame(cal) if rows is None else rows
    edges = cal["settings"]["length_edges"]
    n = int(scores["n_tokens"])
    i, coverage = bin_of(n, edges)
    table = bin_thresholds(rows, edges, detector, fpr).set_index("bin")
    b = table.loc[i]
    t = float(b["threshold"]) if threshold is None else float(threshold)
    held_rows = rows[(rows["bin"] == i) & (rows["split"] == "heldout") & rows[detector].notna()]
    held = held_rows[detector].to_numpy()
    by_set = {str(k): [int((g[detector] > t).sum()), len(g)] for k, g in held_rows.groupby("dataset", sort=False)}
    cal_scores = rows.loc[(rows["bin"] == i) & (rows["split"] == "calibration"), detector].dropna().to_numpy()
    fp = int((held > t).sum())
    lo, hi = binomial_ci(fp, len(held))
    d = DETECTORS[detector]
    raw = float(scores[detector])
    oriented = d.direction * raw
    verdict = "undefined" if not (math.isfinite(oriented) and math.isfinite(t)) else (
        "machine" if oriented > t else "human")
    notes = list(warnings)
    low, high = bin_bounds(edges, i)
    if coverage == "shorter":
        notes.append(f"the text has {n} scored tokens, fewer than the calibration covers ({edges[0]}): the "
                     f"threshold of the shortest bin ({low}-{high}) is used and the stated FPR does not apply")
    elif coverage == "longer":
        notes.append(f"the text has {n} scored tokens, more than the calibration covers ({edges[-1]}): the "
                     f"threshold of the longest bin ({low}-{high}) is used and the stated FPR does not apply")
    if len(cal_scores) and math.floor(fpr * (len(cal_scores) + 1) + 1e-9) == 0 and threshold is None:
        notes.append(f"only {len(cal_scores)} calibration texts in this bin: the threshold is their largest score, "
                     f"whose FPR is about 1/{len(cal_scores) + 1}, above the target {fpr:g}")
    if not len(held):
        notes.append("no held-out human texts in this bin: the FPR is not measured")
    return {
        "verdict": verdict, "detector": detector, "score": raw, "machine_score": oriented,
        "direction": d.direction_text, "unit": d.unit,
        "threshold": t, "threshold_raw": d.direction * t, "threshold_source": "calibration" if threshold is None
        else "given", "fpr_target": fpr if threshold is None else None,
        "fpr_heldout": fp / len(held) if len(held) else math.nan, "fpr_low": lo, "fpr_high": hi,
        "false_positives": fp, "n_heldout": len(held), "heldout_by_dataset": by_set, "n_calibration": len(cal_scores),
        "bin": [low, high], "coverage": coverage, "n_tokens": n,
        "human_percentile": float((cal_scores < oriented).mean()) if len(cal_scores) else math.nan,
        "warnings": notes,
    }  # fmt: skip
