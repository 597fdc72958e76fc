"""The per-token column schema: complete, and equal to what the decoders, the scorer, the store and the
detectors actually write (names, order, dtypes)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from aep_lib.core import columns
from aep_lib.core.columns import BITS, CROSS, NONE, RAW, SAMP
from aep_lib.core.sampling import Sampling
from aep_lib.core.stats import cross_stats, token_stats

# the stored layout: changing one of these changes the bytes of every stored tokens.parquet
GENERATED = ["position", "token_id", "token_text", "ctx_len", "surprisal_raw", "entropy_raw", "varentropy_raw",
             "rank_raw", "greedy_id", "surprisal_samp", "entropy_samp", "varentropy_samp"]
SCORED = ["position", "surprisal_raw", "entropy_raw", "varentropy_raw", "rank_raw", "greedy_id", "surprisal_samp",
          "entropy_samp", "varentropy_samp", "cross_entropy", "cross_varentropy", "entropy_ref", "kl", "token_id",
          "ctx_len"]
SUMMARY = ["l_samp", "h_samp", "D_samp", "sigma_samp", "z_samp", "l_raw", "h_raw", "D_raw", "sigma_raw", "z_raw"]


def assert_schema_dtypes(df: pd.DataFrame) -> None:
    """Every column of ``df`` is in the schema and has its dtype."""
    for name in df.columns:
        want = columns.BY_NAME[name].dtype
        if want == "str":
            assert pd.api.types.is_string_dtype(df[name]), (name, df[name].dtype)
        else:
            assert str(df[name].dtype) == want, (name, df[name].dtype, want)


# --- the schema itself ----------------------------------------------------------------------------------


def test_every_column_has_a_dtype_a_meaning_a_unit_and_a_distribution():
    names = [c.name for c in columns.SCHEMA]
    assert len(names) == len(set(names)) and set(columns.BY_NAME) == set(names)
    for c in columns.SCHEMA:
        assert c.dtype in ("int64", "float64", "str", "object"), c
        assert c.meaning and "\n" not in c.meaning and c.unit, c
        assert c.dist in (RAW, SAMP, CROSS, NONE), c
        assert c.stat is None or c.dist != NONE, c  # a statistic is under a distribution
        assert not c.finite or c.unit == BITS, c
        assert c.unit != BITS or c.dtype == "float64", c


def test_the_layouts_the_store_holds_are_pinned():
    assert columns.generated_columns() == GENERATED
    assert columns.scorer_columns(samp=True, cross=True) == SCORED
    assert columns.scorer_columns() == ["position", "surprisal_raw", "entropy_raw", "varentropy_raw", "rank_raw",
                                        "greedy_id", "token_id", "ctx_len"]
    assert columns.scorer_columns(text=True)[:3] == ["position", "surprisal_raw", "token_text"]
    assert columns.DISTRIBUTIONS == ("samp", "raw")


def test_helpers_select_from_the_schema():
    assert columns.statistic_columns(RAW) == ["surprisal_raw", "entropy_raw", "varentropy_raw", "rank_raw", "greedy_id"]
    assert columns.statistic_columns(SAMP) == ["surprisal_samp", "entropy_samp", "varentropy_samp"]
    assert columns.statistic_columns(CROSS) == ["cross_entropy", "cross_varentropy", "entropy_ref", "kl"]
    assert columns.statistic_columns(NONE) == []
    assert columns.typicality_columns(RAW) == ("surprisal_raw", "entropy_raw", "varentropy_raw")
    assert columns.typicality_columns(SAMP, cross=True) == ("surprisal_samp", "cross_entropy", "cross_varentropy")
    assert columns.column("rank", RAW) == "rank_raw" and columns.column("greedy", RAW) == "greedy_id"
    with pytest.raises(KeyError, match="rank"):
        columns.column("rank", SAMP)
    assert columns.needs_rank(RAW) and not columns.needs_rank(SAMP) and not columns.needs_rank(CROSS)
    assert set(columns.bits_columns()) == {*columns.statistic_columns(SAMP), *columns.statistic_columns(CROSS),
                                           "surprisal_raw", "entropy_raw", "varentropy_raw"}
    assert set(columns.finite_columns()) == {"entropy_raw", "varentropy_raw", "entropy_samp", "varentropy_samp",
                                             "entropy_ref"}


def test_every_statistic_the_formulas_give_has_a_column_and_every_column_a_formula():
    logits = torch.randn(3, 11)
    tokens = torch.tensor([0, 4, 10])
    for dist in (RAW, SAMP):
        stats = token_stats(logits, tokens, with_rank=columns.needs_rank(dist))
        filled = columns.from_stats(stats, dist)  # a column whose stat the formulas lack: KeyError
        assert list(filled) == columns.statistic_columns(dist)
        assert torch.equal(filled[columns.column("surprisal", dist)], stats["surprisal"])
    assert {c.stat for c in columns.SCHEMA if c.dist == RAW and c.stat} == set(token_stats(logits, tokens))
    cross = cross_stats(logits, logits.flip(0))
    assert list(columns.from_stats(cross, CROSS)) == list(cross)  # cross_stats' keys, in its order


# --- what the engine, the store and the detectors write -------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _tiny import build_tiny_model

    from aep_lib.engine.models import load_model

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    model, tokenizer = load_model(str(folder), device="cpu", dtype="float32")
    return str(folder), model, tokenizer


@pytest.mark.parametrize("engine", ["eager", "static"])
def test_generate_writes_the_schemas_columns(tiny, engine):
    from aep_lib.engine.generate import TOKEN_COLUMNS, generate

    _, model, tokenizer = tiny
    g = generate(model, tokenizer, ["The history of the"], [0], Sampling(top_p=0.9), 4, progress=False,
                 engine=engine)[0]
    assert TOKEN_COLUMNS == GENERATED and list(g.tokens.columns) == GENERATED
    assert_schema_dtypes(g.tokens)
    topk = generate(model, tokenizer, ["The history of the"], [0], Sampling(), 3, record_topk=2, progress=False)[0]
    assert list(topk.tokens.columns) == GENERATED + ["topk_ids", "topk_probs"]
    assert_schema_dtypes(topk.tokens)


def test_the_scorer_writes_the_schemas_columns(tiny):
    from aep_lib.engine.score import score_ids, score_text

    _, model, tokenizer = tiny
    ids = tokenizer("In the spring a young doctor arrived in the small mountain village")["input_ids"]
    for samp in (False, True):
        for cross in (False, True):
            df = score_ids(model, ids, 3, sampling=Sampling(top_k=5) if samp else None,
                           reference="self" if cross else None)
            assert list(df.columns) == columns.scorer_columns(samp=samp, cross=cross), (samp, cross)
            assert_schema_dtypes(df)
    scored = score_text(model, tokenizer, " and the robot learns to paint", prompt="In spring", sampling=Sampling())
    assert list(scored.tokens.columns) == columns.scorer_columns(samp=True, text=True)
    assert_schema_dtypes(scored.tokens)


def test_the_detectors_read_schema_columns_and_the_store_keeps_the_generated_layout(tiny, tmp_path):
    from aep_lib.analysis import detect
    from aep_lib.engine.spans import tokenize_span
    from aep_lib.runs.generations import ensure_generations, summary_columns
    from aep_lib.store.run_store import RunStore

    folder, model, tokenizer = tiny
    span = tokenize_span(tokenizer, "Ocean currents move heat. Dear diary, today was the strangest day", "")
    plain = detect.score_prepared(model, tokenizer, span)
    crossed = detect.score_prepared(model, tokenizer, span, reference=model.__class__(model.config).eval())
    assert list(plain.columns) == detect.TOKEN_COLUMNS == ["position", "token_id", "surprisal_raw", "entropy_raw",
                                                           "varentropy_raw", "rank_raw"]
    assert list(crossed.columns) == detect.TOKEN_COLUMNS + detect.CROSS_COLUMNS
    assert_schema_dtypes(crossed)

    store = RunStore(tmp_path / "store")
    runs = ensure_generations(store, [folder], ["p01"], [0], Sampling(), 5, device="cpu", dtype="float32",
                              progress=False)
    assert list(runs["status"]) == ["ok"]
    stored = store.tokens(runs["run_id"].iloc[0])
    assert list(stored.columns) == ["run_id"] + GENERATED
    assert_schema_dtypes(stored.drop(columns="run_id"))
    assert list(summary_columns(stored)) == SUMMARY
    assert all(pd.notna(runs[c].iloc[0]) for c in SUMMARY)


def test_a_new_statistic_is_one_schema_entry(tiny, monkeypatch):
    """A column added to the schema (here a second column of an existing formula's result) is written by
    the decoders and the scorer with no other change."""
    from aep_lib.engine import generate as generate_module
    from aep_lib.engine.score import score_ids

    _, model, tokenizer = tiny
    extra = columns.Column("entropy_copy_samp", "float64", SAMP, "entropy of q, again", BITS, stat="entropy",
                           finite=True)
    monkeypatch.setattr(columns, "SCHEMA", columns.SCHEMA + (extra,))
    monkeypatch.setitem(columns.BY_NAME, extra.name, extra)
    monkeypatch.setattr(generate_module, "TOKEN_COLUMNS", columns.generated_columns())  # (read at import)
    g = generate_module.generate(model, tokenizer, ["The history of the"], [0], Sampling(top_k=9), 4,
                                 progress=False)[0]
    assert list(g.tokens.columns) == GENERATED + ["entropy_copy_samp"]
    pd.testing.assert_series_equal(g.tokens["entropy_copy_samp"], g.tokens["entropy_samp"], check_names=False)
    ids = tokenizer("In the spring a young doctor arrived")["input_ids"]
    df = score_ids(model, ids, 2, sampling=Sampling(top_k=9))
    assert "entropy_copy_samp" in df and (df["entropy_copy_samp"] == df["entropy_samp"]).all()
