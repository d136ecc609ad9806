"""The in-process transformers backend: greedy, batched with left padding, text and prompt embeddings agree."""

from __future__ import annotations

import pytest

from vqagraph.tools.llm import FrozenLLM, GenerationParams, postprocess_answer

PROMPTS = ["Question: what colour is the circle? Answer:", "Contexts: a red circle.\nQuestion: what? Answer:",
           "a"]


@pytest.fixture(scope="module")
def llm(engine):  # type: ignore[no-untyped-def]
    return engine.tools.llm


def test_is_a_frozen_llm(llm) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(llm, FrozenLLM)
    assert llm.context_length == 1024
    assert llm.input_embeddings().shape == (len(llm.tokenizer), 64)


def test_greedy_is_deterministic_and_batching_changes_nothing(llm) -> None:  # type: ignore[no-untyped-def]
    params = GenerationParams(max_new_tokens=6)
    batched = llm.generate(PROMPTS, params)
    single = [llm.generate([p], params)[0] for p in PROMPTS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.token_ids for g in batched] == [g.token_ids for g in llm.generate(PROMPTS, params)]
    for g in batched:
        assert 1 <= len(g.token_ids) <= 6 and len(g.logprobs) == len(g.token_ids)
        assert all(lp <= 0 for lp in g.logprobs)
        assert g.finish_reason in {"stop", "length"}
        assert g.text == llm.tokenizer.decode(g.token_ids, skip_special_tokens=True)


def test_embeddings_of_the_token_ids_answer_exactly_as_the_ids(llm) -> None:  # type: ignore[no-untyped-def]
    params = GenerationParams(max_new_tokens=6)
    table = llm.input_embeddings()
    embeds = [table[llm.tokenizer(p, return_tensors="pt").input_ids[0]] for p in PROMPTS]
    from_embeds = llm.generate_from_embeddings(embeds, params)
    from_text = llm.generate(PROMPTS, params)
    assert [g.token_ids for g in from_embeds] == [g.token_ids for g in from_text]


def test_sampling_is_seeded(llm) -> None:  # type: ignore[no-untyped-def]
    params = GenerationParams(max_new_tokens=8, temperature=1.0, seed=3)
    assert llm.generate(PROMPTS[:1], params)[0].token_ids == llm.generate(PROMPTS[:1], params)[0].token_ids


@pytest.mark.parametrize(("raw", "answer"), [
    ("Red. The circle is red.", "red"),
    (" blue\nQuestion: what", "blue"),
    ("The answer is Two.", "two"),
    ("  it is a dog!", "a dog"),
    ("", ""),
])
def test_postprocess(raw: str, answer: str) -> None:
    assert postprocess_answer(raw) == answer
