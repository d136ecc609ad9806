"""Answer candidates (docs/methods.md §1.4) with the rule tagger, the fallback when spaCy's model is absent."""

from __future__ import annotations

import sys

from vqagraph.tools import answer_candidates
from vqagraph.tools.answer_candidates import RuleTagger, extract_candidates


def test_rule_tagger_finds_open_classes() -> None:
    tags = dict(RuleTagger().tag("a man quickly riding a brown horse past 3 wooden benches"))
    assert tags["man"] == "NOUN" and tags["horse"] == "NOUN" and tags["benches"] == "NOUN"
    assert tags["riding"] == "VERB"
    assert tags["quickly"] == "ADV"
    assert tags["brown"] == "ADJ" and tags["wooden"] == "ADJ"
    assert tags["3"] == "NUM"
    assert tags["a"] == "DET" and tags["past"] == "X"


def test_noun_chunks_end_in_a_noun_and_skip_determiners() -> None:
    phrases = RuleTagger().phrases("two blue squares next to a small red circle")
    chunks = [p.text for p in phrases if p.pos == "CHUNK"]
    assert chunks == ["two blue squares", "small red circle"]


def test_candidates_ranked_by_frequency_with_yes_last() -> None:
    found = extract_candidates(["a red circle", "a small red circle.", "two blue squares"], RuleTagger(), top=30)
    assert found.answers == ["red", "circle", "red circle", "small", "small red circle", "two", "blue", "squares",
                             "two blue squares", "yes"]
    assert found.answer_to_captions["red"] == [0, 1]
    assert found.answer_to_captions["two blue squares"] == [2]
    assert found.counts["circle"] == 2
    assert found.pos["red"] == "ADJ" and found.pos["two"] == "NUM" and found.pos["yes"] == "YES"
    top3 = extract_candidates(["a red circle", "a small red circle."], RuleTagger(), top=3)
    assert top3.answers == ["red", "circle", "red circle", "yes"]


def test_chunks_of_four_words_or_more_are_dropped() -> None:
    found = extract_candidates(["three big old red buses"], RuleTagger())
    assert "three big old red buses" not in found.answers
    assert "buses" in found.answers


def test_without_spacy_the_rule_tagger_is_used(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    answer_candidates.default_extractor.cache_clear()
    try:
        assert answer_candidates.default_extractor().name == "rules"
    finally:
        answer_candidates.default_extractor.cache_clear()
