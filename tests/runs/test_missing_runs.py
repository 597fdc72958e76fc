"""Scoring runs stored a group of texts at a time: the same records as one at a time, failures kept per text."""

import numpy as np
import pandas as pd
import pytest
from _tiny import build_tiny_model

from aep_lib.core.sampling import Sampling, Variant, pair_label
from aep_lib.engine.memory import MemoryEstimateError
from aep_lib.engine.models import ModelPool
from aep_lib.runs import comparisons
from aep_lib.runs.missing_runs import write_missing_runs
from aep_lib.store.run_store import RunStore

STATS = ["surprisal_raw", "entropy_raw", "varentropy_raw"]


def _spec(i: int) -> dict:
    return {"run_id": f"r{i}", "kind": "score", "model": "m", "label": f"t{i}"}


def _tokens(n: int) -> pd.DataFrame:
    return pd.DataFrame({"position": range(n), "surprisal_raw": np.full(n, 1.5)})


def test_a_group_is_stored_with_its_size_time_shares_and_each_failure_apart(tmp_path):
    store = RunStore(tmp_path / "store")
    specs = [(_spec(i), i) for i in range(5)]
    calls = []

    def many(items):
        calls.append(list(items))
        return [ValueError(f"text {i} is bad") if i == 3 else ({"x": i}, _tokens(2 + 2 * i)) for i in items]

    runs = write_missing_runs(store, specs, lambda i: pytest.fail("scored alone"), many, group_size=3)
    assert calls == [[0, 1, 2], [3, 4]]
    by_id = runs.set_index("run_id")
    assert by_id.loc["r3", "status"] == "failed" and by_id.loc["r3", "error"].startswith("ValueError: text 3 is bad")
    assert (by_id.drop("r3")["status"] == "ok").all()
    assert by_id["batch_size"].tolist() == [3, 3, 3, 2, 2]
    # a group's time shared by token counts: 2, 4 and 6 tokens take 1/6, 2/6 and 3/6 of it
    first = by_id.loc[["r0", "r1", "r2"], "elapsed_s"].to_numpy()
    np.testing.assert_allclose(first / first.sum(), [1 / 6, 2 / 6, 3 / 6])
    # a rerun scores only what is not stored ok
    calls.clear()
    write_missing_runs(store, specs, lambda i: ({"x": i}, _tokens(3)), many, group_size=3)
    assert calls == [] and store.runs(run_id=["r3"])["status"].tolist() == ["ok"]  # one left: scored alone


def test_a_group_whose_scoring_raises_is_scored_one_text_at_a_time(tmp_path):
    store = RunStore(tmp_path / "store")

    def many(items):
        raise RuntimeError("one text of the group is longer than the context")

    def alone(i):
        if i == 1:
            raise ValueError("text 1 is longer than the context")
        return {"x": i}, _tokens(4)

    runs = write_missing_runs(store, [(_spec(i), i) for i in range(3)], alone, many).set_index("run_id")
    assert runs["status"].tolist() == ["ok", "failed", "ok"]
    assert "text 1 is longer than the context" in runs.loc["r1", "error"]


def test_work_refused_for_memory_is_raised_and_nothing_stored(tmp_path):
    store = RunStore(tmp_path / "store")

    def many(items):
        raise MemoryEstimateError("a window of 9,000 tokens needs 40 GiB")

    with pytest.raises(MemoryEstimateError, match="40 GiB"):
        write_missing_runs(store, [(_spec(i), i) for i in range(3)], lambda i: ({}, _tokens(1)), many)
    assert store.runs().empty


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two tiny networks on one vocabulary, and a third with another tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    return [str(build_tiny_model(root / "a", seed=0)), str(build_tiny_model(root / "b", seed=1)),
            str(build_tiny_model(root / "c", vocab_size=300, seed=2))]


def test_comparisons_scored_in_groups_equal_each_scored_alone(tiny_models, tmp_path):
    a, b, c = (Variant(m, Sampling()) for m in tiny_models)
    a_top_p = Variant(tiny_models[0], Sampling(top_p=0.9))
    pairs = [(a, b), (b, a), (a, a), (a_top_p, b), (a, a_top_p), (a, c)]
    store = RunStore(tmp_path / "store")
    pool = ModelPool("cpu", "float32")
    records = comparisons.ensure_comparisons(store, [a, b, c, a_top_p], ["p01", "p02"], [0, 1, 2], 24, pairs=pairs,
                                             pool=pool)
    assert len(records) == 6 * 6 and (records["status"] == "ok").all(), records["error"].dropna().tolist()
    assert (records["batch_size"] > 1).all() and records["z_cross"].notna().any()
    assert set(records.loc[records["scorer"] == tiny_models[2], "mode"]) == {"retokenize"}
    assert set(records.loc[records["scorer"] != tiny_models[2], "mode"]) == {"joint"}
    sources = store.runs(kind="generate").set_index("run_id")
    scorers = {pair_label(x, y): y for x, y in pairs}
    for _, rec in records.iterrows():
        source_row = sources.loc[rec["source_run_id"]].to_dict() | {"run_id": rec["source_run_id"]}
        scorer = scorers[rec["pair"]]
        fields, alone = comparisons.score_comparison(source_row, store.tokens(rec["source_run_id"]), scorer, pool)
        batched = store.tokens(rec["run_id"])
        assert len(batched) == len(alone) == rec["n_tokens"] == fields["n_tokens"]
        cols = STATS + (["cross_entropy", "cross_varentropy", "kl", "surprisal_samp"] if rec["mode"] == "joint" else [])
        for col in cols:
            np.testing.assert_allclose(batched[col], alone[col], atol=1e-4, err_msg=col)
        assert batched["rank_raw"].tolist() == alone["rank_raw"].tolist()
        for key in ("z_samp", "z_cross") if rec["mode"] == "joint" else ("z_samp",):
            assert rec[key] == pytest.approx(fields[key], abs=1e-4, nan_ok=True), key


def test_texts_and_in_context_passages_scored_in_groups_equal_each_scored_alone(tiny_models, tmp_path):
    from aep_lib.analysis import membership
    from aep_lib.corpora import ExternalText

    pool = ModelPool("cpu", "float32")
    model, tok = pool.model(tiny_models[0])
    store = RunStore(tmp_path / "store")
    words = "the lighthouse keeper painted the robot while ocean currents moved heat under the hill".split()
    items = [ExternalText(f"t{i}", "news", " ".join(words[i:] + words[:i]) * (1 + i % 3), "x") for i in range(5)]
    items.append(ExternalText("short", "news", "Fire on a hill.", "x"))  # shorter than one window: no windows
    texts = comparisons.ensure_text_scores(store, tiny_models[0], items, 16, 3, pool=pool).set_index("text_id")
    assert (texts["status"] == "ok").all() and texts.loc["short", "n_windows"] == 0
    assert (texts["batch_size"] == len(items)).all()
    for item in items:
        alone = comparisons.score_windows(model, tok, item.text, 16, 3)
        batched = store.tokens(texts.loc[item.text_id, "run_id"])
        assert len(batched) == len(alone) and batched["window"].tolist() == alone["window"].tolist()
        for col in STATS if len(alone) else []:
            np.testing.assert_allclose(batched[col], alone[col], atol=1e-4, err_msg=col)
    filler = "Ocean currents move heat. " * 20
    passages = membership.ensure_in_context_scores(store, tiny_models[0], items[:3], filler, 10, [0, 6], pool=pool)
    assert len(passages) == 12 and (passages["status"] == "ok").all() and (passages["batch_size"] == 12).all()
    for rec in passages.itertuples():
        item = next(i for i in items if i.text_id == rec.text_id)
        fields, alone = membership.score_in_context(model, tok, item.text, filler, rec.condition, 10,
                                                    int(rec.filler_tokens))
        batched = store.tokens(rec.run_id)
        assert fields["context_tokens"] == rec.context_tokens and len(batched) == len(alone) == rec.n_tokens
        for col in STATS:
            np.testing.assert_allclose(batched[col], alone[col], atol=1e-4, err_msg=col)
        assert rec.z == pytest.approx(fields["z"], abs=1e-4, nan_ok=True)
