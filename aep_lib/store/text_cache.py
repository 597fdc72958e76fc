"""The scored-text cache: per-token tables of external texts scored by a model, in one Parquet file pair.

The run store (``store``) holds generations and comparisons, one folder per run; texts scored for
detection, attribution or membership are many and small, so they live in this cache beside it,
keyed by ``text_key(scorer, reference, budget, prompt, text)``. Detectors are recomputed from the
cached tokens, so a change of detector code never needs a re-score.

A cache is only a shortcut: files that cannot be read are reported (a ``CacheWarning``) and the cache
starts empty, so the texts are scored again and the next ``flush`` replaces the files. ``flush``
writes each file under a unique temporary name, reads it back (its row count) and then renames it
into place, so a reader never sees half a file and two writers never share a temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path

import pandas as pd


class CacheWarning(UserWarning):
    """The scored-text cache files cannot be read: the cache starts empty (texts are scored again)."""


# Part of every key: 2 since every text token is scored, the first after the start-of-document token
# (engine.spans); tables cached under the earlier rule (first token of a text without BOS unscored) are not reused.
KEY_VERSION = 2


def text_key(*parts) -> str:
    """A short stable hash of the parts that identify one scored text (scorer, reference, budget, text...)."""
    return hashlib.sha256(json.dumps([KEY_VERSION, *parts], sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]


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
            try:
                meta = pd.read_parquet(self._file("texts"))
                tok = pd.read_parquet(self._file("tokens"))
            except Exception as e:  # noqa: BLE001 - a cache that cannot be read is rebuilt, never fatal
                warnings.warn(CacheWarning(f"scored-text cache {self.path} cannot be read ({type(e).__name__}: "
                                           f"{e}); starting empty: its texts are scored again"), stacklevel=2)
                return
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
            tmp = self._file(what).with_name(f"{self._file(what).name}.{uuid.uuid4().hex}.tmp")
            try:
                df.to_parquet(tmp, index=False)
                back = len(pd.read_parquet(tmp, columns=["key"]))
                if back != len(df):
                    raise OSError(f"{tmp} was written with {len(df)} rows but reads back {back}")
                os.replace(tmp, self._file(what))
            finally:
                tmp.unlink(missing_ok=True)
        self.dirty = False
