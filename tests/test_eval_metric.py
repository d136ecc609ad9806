"""The VQA accuracy and the official answer normalisation (vqaEval.py), rule by rule, with worked examples."""

from __future__ import annotations

import itertools

import pytest

from vqagraph.eval.metric import (
    human_consensus,
    listed_answer,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    vqa_accuracy,
)


def ten(matching: int, answer: str = "red", other: str = "blue") -> list[str]:
    return [answer] * matching + [other] * (10 - matching)


@pytest.mark.parametrize(("matching", "score"), [(0, 0.0), (1, 30.0), (2, 60.0), (3, 90.0), (4, 100.0),
                                                 (7, 100.0), (10, 100.0)])
def test_ten_human_answers_worked_examples(matching: int, score: float) -> None:
    # k of 10 match: leaving out a matching one leaves k-1, any other leaves k; min(·/3, 1) averaged over 10.
    # 2 -> (2·1/3 + 8·2/3)/10 = 0.6; 3 -> (3·2/3 + 7·1)/10 = 0.9 (not 1: one subset in three has only two).
    assert vqa_accuracy("red", ten(matching)) == pytest.approx(score)


def test_consensus_matches_the_literal_leave_one_out_average() -> None:
    """The closed form equals building the ten subsets of nine, as the official script does."""
    for humans in (ten(2), ten(5), ["x y", "c", "x y", "d", "c", "c", "e", "f", "c", "g"]):
        for guess in set(humans):
            literal = sum(min(sum(h == guess for h in rest) / 3, 1.0)
                          for rest in (humans[:i] + humans[i + 1:] for i in range(len(humans)))) / len(humans)
            assert human_consensus(guess, humans) == pytest.approx(100 * literal)


def test_consensus_normalises_the_prediction_not_the_annotation() -> None:
    assert vqa_accuracy("  The RED.\n", ten(2)) == pytest.approx(60.0)
    assert vqa_accuracy("two", ten(3, answer="2")) == pytest.approx(90.0)
    # The script leaves human answers as the annotation files ship them (already normalised) apart from
    # punctuation, so a human "Two" never matches.
    assert vqa_accuracy("2", ten(10, answer="Two")) == 0.0
    assert vqa_accuracy("black white", ten(4, answer="black/white")) == pytest.approx(100.0)


def test_fewer_answers_score_membership() -> None:
    assert vqa_accuracy("red", ["red"]) == 100.0
    assert vqa_accuracy("A red one", ["red", "red 1"]) == 100.0
    assert vqa_accuracy("Three", ["3", "three circles"]) == 100.0
    assert vqa_accuracy("green", ["red", "crimson"]) == 0.0
    assert listed_answer("anything", []) == 0.0
    assert vqa_accuracy("red", ten(1)[:9]) == 100.0  # nine answers: membership, not consensus


@pytest.mark.parametrize(("raw", "expected"), [
    ("yes!", "yes"),  # touching nothing: replaced by a space, then stripped by the split
    ("black/white", "black white"),  # between letters: becomes a space
    ("black / white", "black white"),  # touching a space somewhere: deleted everywhere
    ("(left)", "left"),
    ("t-shirt", "t shirt"),
    ('"stop"', "stop"),
    ("what?", "what"),
    ("1,000", "1000"),  # comma between digits: all punctuation deleted, the number stays one token
    ("red, white", "red white"),
    ("3.5", "3.5"),  # a period followed by a digit is a decimal point and stays
    ("u.s.a.", "usa"),
    ("10.", "10"),
    ("it's", "it's"),  # the apostrophe is not in the punctuation list
])
def test_punctuation(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_punctuation_decides_from_the_original_text() -> None:
    # "," touches a space, so every "," is deleted, including the one between letters.
    assert process_punctuation("a,b ,c") == "ab c"
    # "/" does not touch a space, so it becomes one.
    assert process_punctuation("a/b") == "a b"


@pytest.mark.parametrize(("raw", "expected"), [
    ("a dog", "dog"), ("an apple", "apple"), ("the cat", "cat"), ("The Beach", "beach"),
    ("at the park", "at park"), ("a", ""), ("theater", "theater"),
])
def test_articles(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(("word", "digit"), [
    ("none", "0"), ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"),
    ("six", "6"), ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"),
])
def test_number_words(word: str, digit: str) -> None:
    assert normalize_answer(word) == digit
    assert normalize_answer(word.upper()) == digit


def test_number_words_are_whole_words_only() -> None:
    assert normalize_answer("eleven") == "eleven"
    assert normalize_answer("someone") == "someone"
    assert normalize_answer("two dogs") == "2 dogs"


@pytest.mark.parametrize(("raw", "expected"), [
    ("dont", "don't"), ("whats", "what's"), ("cant", "can't"), ("isnt", "isn't"), ("wont", "won't"),
    ("youre", "you're"), ("oclock", "o'clock"), ("don't", "don't"), ("i dont know", "i don't know"),
])
def test_contractions(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_casing_and_whitespace() -> None:
    assert normalize_answer("  Fire\tHydrant\n ") == "fire hydrant"
    assert normalize_answer("RED") == "red"
    assert process_digit_article("Two  Dogs") == "2 dogs"


def test_normalisation_is_idempotent_on_normal_answers() -> None:
    for raw in ("1,000", "3.5", "the red one", "black/white", "dont", "u.s.a."):
        once = normalize_answer(raw)
        assert normalize_answer(once) == once


def test_scores_are_within_range() -> None:
    for matching, guess in itertools.product(range(11), ("red", "blue", "green")):
        assert 0.0 <= vqa_accuracy(guess, ten(matching)) <= 100.0
