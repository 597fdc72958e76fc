"""Every claim the executed notebooks recorded holds (the claims nbval's run made, read back as data).

``aep_lib.report.figures.claim`` prints a checked number and ``aep_lib.report.figures.save_figure`` records it in the
figure's JSON record (``"claims"``: name, value, bounds, holds). nbval compares the printed text only;
this test reads the records the same run wrote and fails on any claim that does not hold, naming the
figure, the claim, its value and its bound.

Set ``AEP_CLAIMS_DIR`` to the ``AEP_OUTPUT_DIR`` of the notebook run (``make test`` does, right after
nbval): every ``<profile>/figures/*.json`` and ``<profile>/scratch/figures/*.json`` under it is read.
Unset, the test is skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aep_lib.report.figures import claim_failure

CLAIMS_DIR = os.environ.get("AEP_CLAIMS_DIR")


def _records() -> list[tuple[str, dict]]:
    """``(id, figure record)`` for every record of every ``<profile>/figures/*.json`` under ``CLAIMS_DIR``."""
    out = []
    root = Path(CLAIMS_DIR)
    # a notebook run with its defaults (nbval) is not its profile's: its figures are under <profile>/scratch/
    for log in sorted([*root.glob("*/figures/*.json"), *root.glob("*/scratch/figures/*.json")]):
        records = json.loads(log.read_text())
        for i, record in enumerate(records):
            suffix = f"[{i}]" if len(records) > 1 else ""
            out.append((f"{log.parent.parent.relative_to(root)}/{log.stem}{suffix}", record))
    return out


RECORDS = _records() if CLAIMS_DIR else []


def test_claims_dir_holds_figure_records():
    if not CLAIMS_DIR:
        pytest.skip("AEP_CLAIMS_DIR is not set: no notebook run to read the claims of (make test sets it after nbval)")
    assert Path(CLAIMS_DIR).is_dir(), f"AEP_CLAIMS_DIR={CLAIMS_DIR} is not a folder"
    assert RECORDS, f"no figure records (*/figures/*.json, */scratch/figures/*.json) under AEP_CLAIMS_DIR={CLAIMS_DIR}"


@pytest.mark.parametrize("figure,record", RECORDS, ids=[name for name, _ in RECORDS])
def test_every_recorded_claim_holds(figure, record):
    failures = [claim_failure(c) for c in record.get("claims") or []]
    failures = [f"{figure} (notebook {record.get('notebook')}): {f}" for f in failures if f]
    assert not failures, "\n".join(failures)
