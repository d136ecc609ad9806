"""The standard VQA accuracy and the official answer normalisation.

Numbers must be comparable with published VQAv2 / OK-VQA / A-OKVQA results, so both pieces follow the official
evaluation script, `vqaEval.py` (Agrawal et al.; github.com/GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py), in the form the EvalAI challenge server and the common
reimplementations (LAVIS, which BLIP-2 and Img2LLM were evaluated with; MMF's `EvalAIAnswerProcessor`) use:

* **Punctuation** (`processPunctuation`): each mark in `PUNCTUATION` is deleted when, in the original text, it
  touches a space or the text contains a comma between digits ("1,000"); otherwise it becomes a space
  ("black/white" -> "black white"). Then every period *not followed by a digit* is deleted, so decimals survive
  ("3.5") while "u.s.a." becomes "usa". (The script's pattern is `(?!<=\\d)(\\.)(?!\\d)`: its first group was
  meant as a look-behind but is a no-op look-ahead, so only "not followed by a digit" counts. We keep that
  behaviour, and drop the script's accidental cap of 32 substitutions, `re.UNICODE` passed as `count`.)
* **Digits and articles** (`processDigitArticle`): lower-case, split on whitespace, number words "none",
  "zero".."ten" -> digits, articles "a", "an", "the" removed, then the contractions map ("dont" -> "don't").
  The original map mixes typographic and ASCII apostrophes by accident; like EvalAI's we use ASCII.
* **Accuracy**: with the ten human answers of VQA, min(#humans who gave the answer / 3, 1), averaged over the
  ten leave-one-out subsets of nine. Worked out, k matching humans of ten score
  (k · min((k-1)/3, 1) + (10-k) · min(k/3, 1)) / 10: 0 -> 0, 1 -> 30, 2 -> 60, 3 -> 90, 4 or more -> 100.
  As in the script, the human answers are only punctuation-processed (and only when they disagree): the
  official annotation files ship them already normalised.
* **Generated data** lists a few acceptable answers instead of ten human ones: the prediction scores 100 when
  its normalised form equals the normalised form of any listed answer, else 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

HUMAN_ANSWERS = 10  # VQAv2, OK-VQA and A-OKVQA collect ten answers per question

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}


def process_punctuation(text: str) -> str:
    """`processPunctuation`: delete or space out punctuation, delete periods that are not decimal points."""
    digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # The test looks at the *original* text, as the script does, not at the text being rewritten.
        if digit_comma or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_DECIMAL.sub("", out)


def process_digit_article(text: str) -> str:
    """`processDigitArticle`: lower-case; number words to digits; drop articles; restore contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """A prediction as the official script compares it: whitespace folded, punctuation, digits, articles."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def human_consensus(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy in [0, 100] against human answers: min(matches / 3, 1) over the leave-one-out subsets.

    Only the count of matches matters, so instead of building the N subsets the sum is taken in closed form:
    leaving out one of the k matching answers leaves k - 1 matches, leaving out any other leaves k.
    """
    if not answers:
        return 0.0
    guess = normalize_answer(prediction)
    humans = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(humans)) > 1:
        humans = [process_punctuation(a) for a in humans]
    k = sum(1 for a in humans if a == guess)
    total = k * min((k - 1) / 3, 1.0) + (len(humans) - k) * min(k / 3, 1.0)
    return 100.0 * total / len(humans)


def listed_answer(prediction: str, answers: Sequence[str]) -> float:
    """100 when the normalised prediction is one of the normalised acceptable answers, else 0."""
    guess = normalize_answer(prediction)
    return 100.0 if any(normalize_answer(a) == guess for a in answers) else 0.0


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The score of one prediction in [0, 100]: human consensus with ten or more answers, else membership."""
    if len(answers) >= HUMAN_ANSWERS:
        return human_consensus(prediction, answers)
    return listed_answer(prediction, answers)
