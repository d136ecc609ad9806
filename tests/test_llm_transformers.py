"""The in-process transformers backend: greedy, batched with left padding, text and prompt embeddings agree."""

from __future__ import annotations

import pytest
import torch

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


def test_generation_stops_at_a_stop_string_and_counts_only_the_answer(llm) -> None:  # type: ignore[no-untyped-def]
    """The generation ends at the token completing the stop string; its text, tokens and log-probs are what came
    before it, the prefix of the same generation without a stop (so a confidence is over the answer alone)."""
    params = GenerationParams(max_new_tokens=8)
    (full,) = llm.generate(PROMPTS[:1], params)
    n = len(full.token_ids)
    pieces = [llm.tokenizer.decode(full.token_ids[: i + 1], skip_special_tokens=True) for i in range(n)]
    at = next(i for i in range(2, n) if pieces[i] != pieces[i - 1] and pieces[i][len(pieces[i - 1]):].strip()
              and pieces[i][len(pieces[i - 1]):] not in pieces[i - 1])
    stop = pieces[at][len(pieces[at - 1]):]
    (cut,) = llm.generate(PROMPTS[:1], params.model_copy(update={"stop": [stop]}))
    assert cut.finish_reason == "stop"
    assert cut.token_ids == full.token_ids[:at] and cut.logprobs == pytest.approx(full.logprobs[:at])
    assert cut.text == pieces[at - 1] and stop not in cut.text
    streamed: list[str] = []
    (again,) = llm.generate(PROMPTS[:1], params.model_copy(update={"stop": [stop]}), on_token=streamed.append)
    assert again.token_ids == cut.token_ids and "".join(streamed) == cut.text  # the stop string is never streamed


def test_streamed_text_holds_back_what_may_begin_a_stop_string() -> None:
    """A piece that could be the start of a stop string waits; if the stop never completes, it is sent at the end."""
    from vqagraph.tools.llm.transformers_backend import TokenStreamer

    words = {1: " red", 2: " Ques", 3: "tion", 4: " Q", 5: " blue"}

    class Words:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return "".join(words[i] for i in ids)

    def stream(ids: list[int]) -> list[str]:
        sent: list[str] = []
        streamer = TokenStreamer(Words(), [sent.append], ["Question"])
        streamer.put(torch.tensor([[0, 0]]))  # the prompt
        for i in ids:
            streamer.put(torch.tensor([i]))
        streamer.end()
        return sent

    assert stream([1, 2, 3, 5]) == [" red", " "]  # " Ques" waits; "Question" completes it: nothing more is sent
    assert stream([1, 4, 5]) == [" red", " ", "Q blue"]
    assert stream([1, 2]) == [" red", " ", "Ques"]  # ended without the stop: the held text is the answer's


def test_cut_at_stop() -> None:
    from vqagraph.tools.llm.base import cut_at_stop

    words = {1: " red", 2: "\n", 3: "Question", 4: " blue."}

    def decode(ids: list[int]) -> str:
        return "".join(words[i] for i in ids)

    assert cut_at_stop(decode, [1, 2, 3], [-0.1, -0.2, -0.3], ["\n"]) == (" red", [1], [-0.1], True)
    assert cut_at_stop(decode, [1, 4, 2], [-0.1, -0.2, -0.3], [".", "\n"]) == (" red blue", [1], [-0.1], True)
    assert cut_at_stop(decode, [1, 3], [-0.1, -0.3], ["\n"]) == (" redQuestion", [1, 3], [-0.1, -0.3], False)
    assert cut_at_stop(decode, [1, 2], [-0.1, -0.2], []) == (" red\n", [1, 2], [-0.1, -0.2], False)
