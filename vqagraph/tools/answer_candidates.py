"""Answer candidates from captions (Img2LLM, docs/methods.md §1.4).

With spaCy's `en_core_web_sm` installed this is LAVIS's extraction: open-class tokens, named entities and
noun chunks under four words. Without it, `RuleTagger` tags by closed-class lexicons and suffixes: cruder,
but it still finds the nouns, adjectives, verbs and numbers captions are made of.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

OPEN_POS = ("NOUN", "VERB", "ADJ", "ADV", "NUM")  # §1.4, LAVIS `open_pos`


@dataclass(frozen=True)
class Phrase:
    text: str
    pos: str  # NOUN, VERB, ADJ, ADV, NUM, or CHUNK / ENT for multi-word phrases


class Extractor(Protocol):
    name: str

    def phrases(self, caption: str) -> list[Phrase]: ...


_CLOSED = set(
    "a an the this that these those some any each every all both either neither no its his her their our my "
    "your of in on at to from with without by for into onto over under above below behind between near beside "
    "through across against along around among during before after up down off out about like as than "
    "and or but nor so yet if while because although is are was were be been being am has have had do does "
    "did will would can could should may might must shall it he she they we you i me him them us who whom "
    "what which whose where when why how there here not next past inside outside toward towards upon within then "
    "also very too just".split()
)
_NUMBERS = set("zero one two three four five six seven eight nine ten eleven twelve twenty hundred".split())
_ADJECTIVES = set(
    "red green blue yellow orange purple pink brown black white gray grey gold silver small large big tiny "
    "little huge tall short long wide old new young empty full dark light bright open closed round square "
    "wooden metal plastic top bottom left right middle upper lower front back other same different many few "
    "several single double".split()
)
_VERBS = set("sit sits stand stands hold holds ride rides eat eats play plays walk walks look looks lie lies "
             "fly flies run runs wear wears carry carries".split())
_ADJ_SUFFIXES = ("ous", "ful", "ive", "able", "ible", "al", "ic", "ish", "less", "ary", "y")
_VERB_SUFFIXES = ("ing", "ed")


class RuleTagger:
    """Lexicon-and-suffix POS tagging with noun chunks: the fallback when spaCy's model is absent."""

    name = "rules"

    def tag(self, caption: str) -> list[tuple[str, str]]:
        words = re.findall(r"[A-Za-z]+(?:[-'][A-Za-z]+)*|\d+(?:\.\d+)?", caption)
        tagged = []
        for word in words:
            low = word.lower()
            if low in _CLOSED:
                pos = "DET" if low in {"a", "an", "the", "this", "that", "these", "those"} else "X"
            elif low in _NUMBERS or low[0].isdigit():
                pos = "NUM"
            elif low in _ADJECTIVES:
                pos = "ADJ"
            elif low in _VERBS or (low.endswith(_VERB_SUFFIXES) and len(low) > 4):
                pos = "VERB"
            elif low.endswith("ly") and len(low) > 4:
                pos = "ADV"
            elif low.endswith(_ADJ_SUFFIXES) and len(low) > 5:
                pos = "ADJ"
            else:
                pos = "NOUN"
            tagged.append((word, pos))
        return tagged

    def phrases(self, caption: str) -> list[Phrase]:
        tagged = self.tag(caption)
        out = [Phrase(w, p) for w, p in tagged if p in OPEN_POS]
        # Noun chunks: a run of NUM/ADJ/NOUN words that ends in a noun (det not included, as spaCy's text is).
        run: list[tuple[str, str]] = []
        for word, pos in [*tagged, ("", "END")]:
            if pos in {"NUM", "ADJ", "NOUN"}:
                run.append((word, pos))
                continue
            while run and run[-1][1] != "NOUN":
                run.pop()
            if len(run) > 1:
                out.append(Phrase(" ".join(w for w, _ in run), "CHUNK"))
            run = []
        return out


class SpacyExtractor:
    """LAVIS's extraction with spaCy: tokens, entities, noun chunks."""

    name = "spacy"

    def __init__(self, nlp: Any) -> None:
        self.nlp = nlp

    def phrases(self, caption: str) -> list[Phrase]:
        doc = self.nlp(caption)
        out = [Phrase(t.text, t.pos_) for t in doc if t.pos_ in OPEN_POS]
        out += [Phrase(e.text, "ENT") for e in doc.ents]
        out += [Phrase(c.text, "CHUNK") for c in doc.noun_chunks]
        return out


@lru_cache(maxsize=1)
def default_extractor() -> Extractor:
    """spaCy's English model when it is installed, else the rule tagger."""
    try:
        import spacy

        return SpacyExtractor(spacy.load("en_core_web_sm"))
    except Exception:  # ImportError, or OSError when the model package is missing
        return RuleTagger()


@dataclass
class Candidates:
    answers: list[str]  # most frequent first, `yes` last
    pos: dict[str, str]  # answer -> part of speech (for template questions)
    answer_to_captions: dict[str, list[int]]  # answer -> indices of captions that contain it
    counts: dict[str, int]


def extract_candidates(captions: list[str], extractor: Extractor | None = None, top: int = 30) -> Candidates:
    """§1.4: phrases from every caption (strip "."), lower-cased, counted, top `top` by frequency, then `yes`."""
    extractor = extractor or default_extractor()
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    pos: dict[str, str] = {}
    where: dict[str, list[int]] = {}
    for index, caption in enumerate(captions):
        for phrase in extractor.phrases(caption.strip().strip(".")):
            if phrase.pos in {"CHUNK", "ENT"} and len(phrase.text.split()) >= 4:
                continue  # §1.4: noun chunks under 4 words
            text = phrase.text.lower().strip()
            if not text:
                continue
            counts[text] += 1
            first_seen.setdefault(text, len(first_seen))
            pos.setdefault(text, phrase.pos)
            if index not in where.setdefault(text, []):
                where[text].append(index)
    ranked = sorted(counts, key=lambda a: (-counts[a], first_seen[a]))[:top]
    answers = [a for a in ranked if a != "yes"] + ["yes"]
    pos.setdefault("yes", "YES")
    return Candidates(answers=answers, pos=pos, answer_to_captions=where, counts=dict(counts))
