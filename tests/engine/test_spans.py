"""The first-token rule and the scored span's bytes (``aep_lib.engine.spans``), on tokenizers with and without
a BOS, hand-counted."""

from __future__ import annotations

import copy

import pytest
from tokenizers.processors import TemplateProcessing

from aep_lib.engine import spans
from _tiny import build_tiny_model

TEXT = "héllo wörld"  # 11 characters, 13 UTF-8 bytes (é and ö take two each)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def without_special_tokens(tok):
    bare = copy.deepcopy(tok)
    bare.bos_token = None
    bare.eos_token = None
    return bare


def adding_bos(tok):
    with_bos = copy.deepcopy(tok)
    bos = (with_bos.bos_token, with_bos.bos_token_id)
    with_bos.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos[0]} $A", special_tokens=[bos])
    return with_bos


def test_no_prompt_prefixes_the_start_of_document_token_and_scores_every_text_token(tok):
    plain = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert plain[0] != tok.bos_token_id  # this tokenizer adds no BOS itself
    ids, first, n_bytes = spans.tokenize_with_prompt(tok, "", TEXT)
    assert ids == [tok.bos_token_id, *plain] and first == 1
    assert n_bytes == 13  # every byte of the text
    span = spans.tokenize_span(tok, TEXT)
    assert span.ids == ids and span.first == 1 and span.scored_text == TEXT and span.n_bytes == 13
    assert span.byte_end[-1] == 13 and len(span.byte_end) == len(plain)


def test_a_tokenizer_that_adds_its_bos_gets_no_second_one(tok):
    with_bos = adding_bos(tok)
    ids, first, n_bytes = spans.tokenize_with_prompt(with_bos, "", TEXT)
    assert ids == [tok.bos_token_id, *tok(TEXT, add_special_tokens=False)["input_ids"]]
    assert first == 1 and n_bytes == 13


def test_a_tokenizer_with_neither_bos_nor_eos_leaves_the_first_token_as_context(tok):
    bare = without_special_tokens(tok)
    assert spans.document_start_id(bare) is None
    plain = bare(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    ids, first, n_bytes = spans.tokenize_with_prompt(bare, "", TEXT)
    assert ids == plain["input_ids"] and first == 1
    first_token_chars = plain["offset_mapping"][0][1]
    assert n_bytes == len(TEXT[first_token_chars:].encode("utf-8"))  # the unscored first token's bytes left out
    assert n_bytes < 13


def test_a_prompt_is_context_and_gets_no_start_token(tok):
    prompt = "Say: "
    ids, first, n_bytes = spans.tokenize_with_prompt(tok, prompt, TEXT)
    assert ids == tok(prompt + TEXT)["input_ids"]  # exactly the tokenizer's ids: no start-of-document token
    assert n_bytes == len(prompt + TEXT) - len(prompt) + 2 == 13  # the scored span starts at the text (5 + 13 - 5)
    assert tok.decode(ids[first:]) == TEXT


def test_bits_per_byte_divide_by_the_scored_span(tok, tmp_path):
    import torch

    from aep_lib.engine.score import score_text
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tok.name_or_path)
    with torch.no_grad():
        scored = score_text(model, tok, TEXT)
    assert scored.n_bytes == 13 and len(scored.tokens) == len(tok(TEXT, add_special_tokens=False)["input_ids"])
    assert scored.bits_per_byte == pytest.approx(scored.tokens["surprisal_raw"].sum() / 13, rel=1e-12)


@pytest.mark.parametrize("name,start", [("smollm2-135m", "<|im_start|>"), ("gemma-3-270m", "<bos>"),
                                        ("qwen2.5-coder-0.5b", "<|endoftext|>")])
def test_each_embedded_model_conditions_the_first_token_on_its_start_token(name, start):
    from aep_lib.engine.models import load_tokenizer

    tokenizer = load_tokenizer(name)
    ids, first, n_bytes = spans.tokenize_with_prompt(tokenizer, "", "The lighthouse.")
    assert tokenizer.convert_ids_to_tokens(ids[0]) == start and first == 1
    assert n_bytes == len(b"The lighthouse.")
