"""The scored-text cache: per-token tables of external texts scored by a model, in one Parquet file pair.

The run store (``store``) holds generations and comparisons, one folder per run; texts scored for
detection, attribution or membership are many and small, so they live in this cache beside it,
keyed by ``text_key(scorer, reference, budget, prompt, text)``. Detectors are recomputed from the
cached tokens, so a change of detector code never needs a re-score.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd


def text_key(*parts) -> str:
    """A short stable hash of the parts that identify one scored text (scorer, reference, budget, text...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]


class ScoredTextCache:
    """Per-token tables of scored texts in one Parquet file (``<path>.tokens.parquet`` and
    ``<path>.texts.parquet``), keyed by a hash of (scorer, reference, budget, prompt, text).

    Detectors are recomputed from the tokens, so a change of detector code never needs a re-score.
    Each text's row also records the provenance of its scoring (git SHA, package versions) when the
    caller passes it in ``meta``. ``path=None``: in memory only.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.tokens: dict[str, pd.DataFrame] = {}
        self.texts: dict[str, dict] = {}
        self.dirty = False
        if self.path and self._file("texts").is_file():
            meta = pd.read_parquet(self._file("texts"))
            tok = pd.read_parquet(self._file("tokens"))
            self.texts = {r["key"]: r for r in meta.to_dict("records")}
            for key, g in tok.groupby("key", sort=False):
                self.tokens[key] = g.drop(columns="key").reset_index(drop=True)

    def _file(self, what: str) -> Path:
        return self.path.with_name(self.path.name + f".{what}.parquet")

    def __contains__(self, key: str) -> bool:
        return key in self.texts and key in self.tokens

    def put(self, key: str, tokens: pd.DataFrame, meta: dict) -> None:
        self.tokens[key] = tokens.reset_index(drop=True)
        self.texts[key] = {"key": key, **meta}
        self.dirty = True

    def flush(self) -> None:
        if not self.path or not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = [k for k in self.texts if k in self.tokens]
        tok = pd.concat([self.tokens[k].assign(key=k) for k in keys], ignore_index=True)
        meta = pd.DataFrame([self.texts[k] for k in keys])
        for what, df in (("tokens", tok), ("texts", meta)):
            tmp = self._file(what).with_suffix(".tmp")
            df.to_parquet(tmp, index=False)
            os.replace(tmp, self._file(what))
        self.dirty = False
