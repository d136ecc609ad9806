"""Captions for real photographs from the frozen encoder's own ImageNet head (docs/methods.md §8).

Img2LLM's premise is that any captioner can stand in front of the frozen LLM (§1); offline, with no pretrained
captioner for photographs, the frozen EfficientNet-Lite's 1,000-way ImageNet classifier is one. It reads the whole
photo and overlapping crops at two scales (an object that fills a corner is named too), keeps the classes above a
probability, and names each by the word a person would use (the WordNet basic level: Egyptian cat → cat) with the
classifier's own names beside it. Each class's activation map says where it is and so what colour it is; the
photo's top, middle and bottom get their colours from a named-colour table in CIELAB (§8), so "what colour is …?"
has something to read. The question orders the captions and says which of them it needs.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from vqagraph.imagenet_names import ImageNetClass, load
from vqagraph.models.centernet import Detection
from vqagraph.tools.ocr import TextLine, unread_answer
from vqagraph.tools.prompts import TEXT_CUE, YES_NO_QUESTION

# The regions the classifier reads, as fractions of the photo (x0, y0, x1, y1): the whole, its middle, and four
# overlapping corner crops of two thirds.
REGIONS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("whole", (0.0, 0.0, 1.0, 1.0)),
    ("middle", (1 / 6, 1 / 6, 5 / 6, 5 / 6)),
    ("top left", (0.0, 0.0, 2 / 3, 2 / 3)),
    ("top right", (1 / 3, 0.0, 1.0, 2 / 3)),
    ("bottom left", (0.0, 1 / 3, 2 / 3, 1.0)),
    ("bottom right", (1 / 3, 1 / 3, 1.0, 1.0)),
)

# Basic colour terms (Berlin & Kay's eleven, the words VQA answers use), each with a few sRGB shades as photographs
# show it (in light, in shade): the first is the term's prototype.
COLOUR_SHADES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "black": ((20, 20, 20), (45, 45, 50)),
    "white": ((245, 245, 245), (220, 220, 225)),
    "gray": ((128, 128, 128), (90, 90, 95), (175, 175, 180)),
    "red": ((200, 30, 35), (150, 20, 25), (230, 70, 60)),
    "green": ((40, 150, 50), (30, 90, 40), (120, 190, 90)),
    "yellow": ((240, 210, 30), (250, 235, 120), (200, 170, 40)),
    "blue": ((30, 70, 200), (20, 40, 120), (100, 150, 230)),
    "brown": ((120, 75, 35), (80, 50, 25), (160, 110, 70)),
    "orange": ((245, 135, 20), (210, 100, 30), (250, 170, 80)),
    "pink": ((240, 160, 190), (220, 100, 150)),
    "purple": ((130, 50, 160), (90, 30, 110), (170, 120, 210)),
}
COLOUR_TERMS = {name: shades[0] for name, shades in COLOUR_SHADES.items()}


@dataclass(frozen=True)
class Tag:
    """One class the classifier saw: the word a person would say, its own names, where, how sure and what colour."""

    name: str  # the basic-level name ("cat")
    label: str  # the classifier's first name for the class ("Egyptian cat")
    index: int
    probability: float
    region: str  # the region whose crop saw it best
    box: tuple[int, int, int, int]  # where its class activation map is strong, in the photo's pixels
    colours: tuple[str, ...] = ()  # the main colour terms under that map, most first
    asked: bool = False  # below the caption threshold, kept because the question names it


@dataclass(frozen=True)
class PhotoReading:
    """What the photo captioner saw in one photo: its tags, the colours of its top, middle and bottom, whether it
    is dark, whether it is black and white. Captions, answer candidates and exemplars are all written from this one
    reading."""

    tags: list[Tag]
    band_colours: dict[str, list[str]] = field(default_factory=dict)  # "top" / "middle" / "bottom" → terms
    dark: bool = False
    black_and_white: bool = False


def region_boxes(size: tuple[int, int]) -> list[tuple[str, tuple[int, int, int, int]]]:
    width, height = size
    return [(name, (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)))
            for name, (x0, y0, x1, y1) in REGIONS]


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255, ..., 3) → CIELAB (D65), the perceptual space where colour distances are compared."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_SHADE_TERMS = [name for name, shades in COLOUR_SHADES.items() for _ in shades]
_SHADE_LAB = srgb_to_lab(np.array([shade for shades in COLOUR_SHADES.values() for shade in shades]))


def colour_shares(image: Image.Image, box: tuple[int, int, int, int] | None = None,
                  mask: np.ndarray | None = None) -> dict[str, float]:
    """The share of each basic colour term among the pixels of `box` (the nearest term in CIELAB per pixel); with
    `mask` (a boolean grid over the box, any size), among the pixels it covers."""
    region = image.convert("RGB").crop(box) if box else image.convert("RGB")
    pixels = np.asarray(region.resize((48, 48), Image.Resampling.BILINEAR)).reshape(-1, 3)
    if mask is not None and mask.any():
        cells = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((48, 48), Image.Resampling.NEAREST))
        pixels = pixels[cells.reshape(-1) > 0]
    distances = ((srgb_to_lab(pixels)[:, None, :] - _SHADE_LAB[None, :, :]) ** 2).sum(-1)
    shares: dict[str, float] = {}
    for shade, count in enumerate(np.bincount(distances.argmin(1), minlength=len(_SHADE_TERMS))):
        if count:
            shares[_SHADE_TERMS[shade]] = shares.get(_SHADE_TERMS[shade], 0.0) + float(count) / len(pixels)
    return shares


def main_colours(image: Image.Image, box: tuple[int, int, int, int] | None = None, min_share: float = 0.2,
                 most: int = 2, mask: np.ndarray | None = None) -> list[str]:
    """The colour terms covering at least `min_share` of the region, most first (at most `most`)."""
    shares = sorted(colour_shares(image, box, mask).items(), key=lambda kv: -kv[1])
    return [name for name, share in shares[:most] if share >= min_share]


# Question words that name no thing in the photo, though a class's names or kinds may hold them.
_NOT_THINGS = frozenset({"picture", "photo", "image", "thing", "object", "colour", "color", "kind", "type", "one",
                         "this", "that", "it", "is", "are", "the", "a", "an", "there", "what", "which"})
DARK_LIGHTNESS = 30.0  # mean CIELAB L* (0-100) under which the photo is called dark
# A photo is black and white when under 1% of its pixels reach CIELAB chroma C* 8: on the dev photos the grey ones
# (a scan, grey PNGs) have none, the dullest colour photos (an aerial view, a desk) 8-21% (docs/methods.md §8).
GREY_CHROMA, GREY_MAX_SHARE = 8.0, 0.01


def _singular(word: str) -> str:
    for end, repl in (("'s", ""), ("s'", ""), ("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("xes", "x"), ("s", "")):
        if word.endswith(end) and len(word) > len(end) + 2:
            return word[: -len(end)] + repl
    return word


@functools.cache
def _vocabulary() -> dict[str, tuple[int, ...]]:
    """Every word or phrase a question may use for a class (its basic name, own names and WordNet kinds) → the
    classes it names."""
    vocab: dict[str, list[int]] = {}
    for cls in load():
        for phrase in {cls.basic, *cls.names, *cls.kinds}:
            key = phrase.lower()
            if key not in _NOT_THINGS and key not in COLOUR_SHADES:
                vocab.setdefault(key, []).append(cls.index)
    return {k: tuple(v) for k, v in vocab.items()}


def named_phrases(question: str) -> list[str]:
    """The phrases of `question` (one to three words, singular too) that name ImageNet classes or their kinds,
    longest first."""
    words = re.findall(r"[a-z]+(?:'[a-z]*)?", question.lower())
    vocab = _vocabulary()
    found: list[str] = []
    for n in (3, 2, 1):
        for i in range(len(words) - n + 1):
            gram = words[i:i + n]
            for phrase in (" ".join(gram), " ".join([*gram[:-1], _singular(gram[-1])])):
                if phrase in vocab and phrase not in found and not any(phrase in f.split() for f in found):
                    found.append(phrase)
    return found


def names_tag(phrase: str, tag: Tag) -> bool:
    """The question's phrase names this tag: its basic name, one of the class's own names or one of its kinds."""
    return tag.index in _vocabulary().get(phrase, ())


class ImageTagger:
    """The frozen encoder's ImageNet head over the photo's regions, one batched pass per photo; each tag's class
    activation map (CAM) says where it is and so what colour it is."""

    def __init__(self, model: Any, image_size: int = 224, min_probability: float = 0.1, top_k: int = 3,
                 question_min_probability: float = 0.03) -> None:
        self.model = model.eval()
        self.image_size = image_size
        self.min_probability = min_probability
        self.top_k = top_k
        self.question_min_probability = question_min_probability
        self.classes: tuple[ImageNetClass, ...] = load()
        self._lock = threading.Lock()

    @torch.no_grad()
    def __call__(self, image: Image.Image, question: str = "") -> PhotoReading:
        """Each basic-level name once, at its highest probability over the regions, most probable first; a class a
        yes/no question names is kept from `question_min_probability` (so "is there a lemon?" reads a weak lemon;
        open questions got wrong answers from weak classes of the kind they name: "what animal?" → monkey)."""
        from vqagraph.models.efficientnet_lite import preprocess

        rgb = image.convert("RGB")
        boxes = region_boxes(rgb.size)
        pixels = preprocess([rgb.crop(box) for _, box in boxes], self.image_size)
        with self._lock:
            logits, maps = self.model.class_activation_maps(pixels.to(next(self.model.parameters()).device))
        probabilities, maps = logits.softmax(-1).float().cpu(), maps.float().cpu()
        best: dict[str, tuple[float, int, int, bool]] = {}  # basic name → probability, class, region, asked

        def keep(p: float, index: int, region: int, asked: bool) -> None:
            basic = self.classes[index].basic
            if basic not in best or p > best[basic][0]:
                best[basic] = (p, index, region, asked)

        for region, row in enumerate(probabilities):
            values, indices = row.topk(self.top_k)
            for p, i in zip(values.tolist(), indices.tolist(), strict=True):
                if p >= self.min_probability:
                    keep(p, i, region, False)
        phrases = named_phrases(question) if question_kind(question) == "yes/no" else []
        for phrase in phrases:  # "is there a lemon?": the lemon classes, however weak (not every fruit's)
            named = [i for i in _vocabulary()[phrase]
                     if phrase in {n.lower() for n in (self.classes[i].basic, *self.classes[i].names)}]
            if not named:
                continue
            p_region, region = probabilities[:, named].max(dim=1)[0].max(dim=0)
            i = named[int(probabilities[int(region), named].argmax())]
            p = float(p_region)
            if p >= self.question_min_probability and self.classes[i].basic not in best:
                keep(p, i, int(region), True)
        tags = [self._tag(rgb, boxes[r], maps[r, i], p, i, asked) for p, i, r, asked in best.values()]
        width, height = rgb.size
        bands = {"top": (0, 0, width, max(1, height // 3)),
                 "middle": (width // 4, height // 4, width - width // 4, height - height // 4),
                 "bottom": (0, height - max(1, height // 3), width, height)}
        lab = srgb_to_lab(np.asarray(rgb.resize((48, 48), Image.Resampling.BILINEAR)))
        chromatic = float((np.hypot(lab[..., 1], lab[..., 2]) >= GREY_CHROMA).mean())
        return PhotoReading(tags=sorted(tags, key=lambda t: (t.asked, -t.probability)),
                            band_colours={name: main_colours(rgb, box) for name, box in bands.items()},
                            dark=bool(lab[..., 0].mean() < DARK_LIGHTNESS),
                            black_and_white=chromatic < GREY_MAX_SHARE)

    def _tag(self, image: Image.Image, region: tuple[str, tuple[int, int, int, int]], cam: torch.Tensor, p: float,
             index: int, asked: bool) -> Tag:
        """The class's map over its region, cut at half its peak: the cells where it was seen, their bounding box
        in the photo, and the colours of the pixels under them."""
        name, (x0, y0, x1, y1) = region
        mask = (cam.clamp(min=0) >= 0.5 * cam.max().clamp(min=1e-6)).numpy()
        if not mask.any():
            mask = np.ones_like(mask)
        rows, cols = np.nonzero(mask)
        h, w = mask.shape
        box = (x0 + round(cols.min() / w * (x1 - x0)), y0 + round(rows.min() / h * (y1 - y0)),
               x0 + round((cols.max() + 1) / w * (x1 - x0)), y0 + round((rows.max() + 1) / h * (y1 - y0)))
        cls = self.classes[index]
        return Tag(cls.basic, cls.names[0], index, round(p, 4), name, box,
                   tuple(main_colours(image, (x0, y0, x1, y1), mask=mask)), asked)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _terms(colours: Sequence[str]) -> str:
    return " and ".join(colours)


def tag_caption(tag: Tag, own_name: bool = False) -> str:
    """'a photo of a cat': the basic name; with `own_name`, the classifier's own name after it when it says more
    ('a photo of a cat (Egyptian cat)')."""
    where = "" if tag.region == "whole" else f" in the {tag.region}"
    own = f" ({tag.label})" if own_name and tag.label.lower() != tag.name.lower() else ""
    return f"a photo of {_article(tag.name)} {tag.name}{own}{where}"


def tag_colour_caption(tag: Tag) -> str | None:
    """'the cat is gray and white': the colours under the tag's activation map."""
    return f"the {tag.name} is {_terms(tag.colours)}" if tag.colours else None


def band_captions(reading: PhotoReading) -> list[str]:
    """'the top of the picture is blue': the main colours of its top, middle and bottom, for what no tag names
    (the sky, grass, a wall); what the whole photo is (`photo_captions`)."""
    return [f"the {band} of the picture is {_terms(colours)}"
            for band, colours in reading.band_colours.items() if colours]


def whole_photo_captions(reading: PhotoReading) -> list[str]:
    """What the whole photo is, read for every question: 'the picture is dark' (a night or unlit photo), 'the
    picture is black and white'."""
    return [caption for caption, seen in (("the picture is black and white", reading.black_and_white),
                                          ("the picture is dark", reading.dark)) if seen]


# COCO's labels as a person says them ("sports ball" → ball), and their plurals where "s" is wrong.
OBJECT_NOUNS = {"sports ball": "ball", "dining table": "table", "potted plant": "plant", "cell phone": "phone",
                "tv": "television", "hair drier": "hair dryer"}
PLURALS = {"person": "people", "bus": "buses", "knife": "knives", "mouse": "mice", "sheep": "sheep", "skis": "skis",
           "scissors": "scissors", "wine glass": "wine glasses", "couch": "couches", "toothbrush": "toothbrushes",
           "sandwich": "sandwiches", "bench": "benches", "glass": "glasses"}
# Words a question uses for a person, which no COCO label spells.
PERSON_WORDS = frozenset({"person", "people", "persons", "man", "men", "woman", "women", "boy", "boys", "girl", "girls",
                          "child", "children", "kid", "kids", "player", "players", "soldier", "soldiers", "guy",
                          "guys", "lady", "ladies", "someone", "anyone", "somebody", "anybody", "human", "humans"})
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


# The ellipse inscribed in a box, on a 16 × 16 grid: an object fills the middle of its box, the corners are what is
# behind it (a ball's box is a fifth grass).
_GRID = (np.arange(16) + 0.5) / 8 - 1
INSCRIBED_ELLIPSE = (_GRID[None, :] ** 2 + _GRID[:, None] ** 2) <= 1


@dataclass(frozen=True)
class SeenObjects:
    """The detections of one COCO class in a photo: the noun a person uses, every detection's score (surest
    first), the surest one's box, and the colours inside that box."""

    noun: str
    scores: tuple[float, ...]
    box: tuple[int, int, int, int]
    colours: tuple[str, ...] = ()

    @property
    def score(self) -> float:
        return self.scores[0]

    @property
    def plural(self) -> str:
        return PLURALS.get(self.noun, self.noun + "s")

    def count(self, min_score: float = 0.0) -> int:
        return sum(score >= min_score for score in self.scores)


def detectable_nouns(labels: Sequence[str]) -> frozenset[str]:
    """The nouns of the detector's classes, as a question says them."""
    return frozenset(OBJECT_NOUNS.get(label, label) for label in labels)


def group_detections(detections: Sequence[Detection], image: Image.Image | None = None) -> list[SeenObjects]:
    """Detections grouped by class, surest first; with `image`, each group's colours are read inside its surest box
    (a box holds its object far more tightly than a 7 × 7 activation map does)."""
    groups: dict[str, list[Detection]] = {}
    for detection in sorted(detections, key=lambda d: -d.score):
        groups.setdefault(OBJECT_NOUNS.get(detection.label, detection.label), []).append(detection)
    return [SeenObjects(noun, tuple(d.score for d in found), found[0].box,
                        tuple(main_colours(image, found[0].box, mask=INSCRIBED_ELLIPSE)) if image is not None else ())
            for noun, found in groups.items()]


def names_objects(question: str, seen: SeenObjects) -> bool:
    """The question names this class: its noun or plural, or any word for a person when it is people."""
    text = " ".join(re.findall(r"[a-z]+", question.lower()))
    if seen.noun == "person" and set(text.split()) & PERSON_WORDS:
        return True
    return any(re.search(rf"\b{re.escape(form)}\b", text) for form in (seen.noun, seen.plural))


def object_captions(seen: SeenObjects, colour: bool = False, min_score: float = 0.0) -> list[str]:
    """'a photo of a person', 'a photo of three people' (the detections from `min_score` up); 'the ball is yellow'
    for a question about colour."""
    count = max(seen.count(min_score), 1)
    if count == 1:
        captions = [f"a photo of {_article(seen.noun)} {seen.noun}"]
    else:
        number = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
        captions = [f"a photo of {number} {seen.plural}"]
    if colour and seen.colours:
        name = seen.noun if count == 1 else seen.plural
        captions.append(f"the {name} {'is' if count == 1 else 'are'} {_terms(seen.colours)}")
    return captions


COLOUR_WORDS = frozenset({"colour", "color", "colours", "colors"})
HOW_MANY = re.compile(r"^\s*how\s+many\b", re.IGNORECASE)


def asks_colour(question: str) -> bool:
    """The question asks for a colour or names one ("is there a blue candy?"): colour captions are worth reading."""
    words = set(re.findall(r"[a-z]+", question.lower()))
    return bool(words & {*COLOUR_WORDS, *COLOUR_SHADES})


def asks_text(question: str) -> bool:
    """The question asks what the photo's text says (TEXT_CUE), not what colour or how many: "What colour is the
    sign?" and "How many lines of text are there?" read the tags and the text like any other question, and their
    answers are not text."""
    words = set(re.findall(r"[a-z]+", question.lower()))
    return bool(TEXT_CUE.search(question)) and not words & COLOUR_WORDS and not HOW_MANY.match(question)


def photo_captions(reading: PhotoReading, question: str = "", text_captions: Sequence[tuple[str, float]] = (),
                   own_names: bool = False, objects: Sequence[SeenObjects] = (),
                   object_min_score: float = 0.5) -> tuple[list[str], list[float]]:
    """The captions the text route reads for a photo, with each one's confidence (colours: 1.0), what the question
    asks about first: the tags it names, then the rest. A question about text that found text reads that text
    alone: next to tags the 0.5B LLM answers with a tag's word ("What word is on the sign?" → "street"; the photo
    dev set's text questions 14.3 → 28.6, docs/methods.md §8). Colour captions only for a question about colour:
    it answers "black" to "what word is on the sign?" next to "the sign is black"."""
    phrases = named_phrases(question)
    named = [t for t in reading.tags if any(names_tag(p, t) for p in phrases)]
    colour = asks_colour(question)
    tagged: list[tuple[str, float]] = []
    boxed = {o.noun for o in objects if o.colours}  # a detection's box reads a colour better than a tag's map
    for tag in named + [t for t in reading.tags if t not in named]:
        tagged.append((tag_caption(tag, own_names), tag.probability))
        coloured = tag_colour_caption(tag) if colour and tag.name not in boxed else None
        if coloured:
            tagged.append((coloured, tag.probability))
    bands = [(c, 1.0) for c in (band_captions(reading) if colour else [])] + \
        [(c, 1.0) for c in whole_photo_captions(reading)]
    texts = list(text_captions)
    # A class the question names ("how many people?", "what colour is the ball?") is read from every detection the
    # detector kept, first; another only when its surest detection reaches `object_min_score`.
    asked = [o for o in objects if names_objects(question, o)]
    first = [(c, o.score) for o in asked for c in object_captions(o, colour)]
    detected = [(c, o.score) for o in objects if o not in asked and o.score >= object_min_score
                for c in object_captions(o, colour, object_min_score)]
    if asks_text(question):
        pairs = texts or first + tagged + detected + bands
    elif colour and not named and not asked:
        pairs = bands + tagged + detected + texts
    else:
        pairs = first + tagged + detected + bands + texts
    return [c for c, _ in pairs], [s for _, s in pairs]


# "Is there a lemon?", "Is this a dog?", "Are there any cats in the picture?": whether one named thing is there.
EXISTENCE_QUESTION = re.compile(r"^\s*(?:is|are)\s+(?:there|this|that|it|these|those)\s+(?:an?\s+|any\s+|some\s+)?"
                                r"(?P<thing>[a-z][a-z' -]*?)\s*(?:in\s+(?:the|this)\s+(?:picture|photo|image))?"
                                r"\s*\??\s*$", re.IGNORECASE)
# "Is this a black and white photo?", "Is the picture in colour?": what the whole photo is (a photo word must be
# there: "Is the car black and white?" is about the car).
PHOTO_COLOUR_QUESTION = re.compile(
    r"^\s*(?:is|was)\s+(?:this|that|it|the)\s+(?:(?P<before>photo|picture|image|photograph|pic|shot)\s+)?"
    r"(?:(?:taken|shot)\s+)?(?:in\s+)?(?:an?\s+)?(?P<kind>black\s*(?:and|&|-)\s*white|b\s*&\s*w|gr[ae]y\s*scale|"
    r"monochrome|full[ -]colou?r|colou?r(?:ed)?)\s*(?P<after>photo|picture|image|photograph|pic|shot)?\s*\??\s*$",
    re.IGNORECASE)
AnswerCheck = Literal["text", "existence", "black-and-white"]


def tags_from_record(records: Sequence[dict[str, Any]]) -> list[Tag]:
    """The tags as the trace keeps them (plain data in the graph state) → `Tag`s again."""
    return [Tag(name=r["name"], label=r["label"], index=int(r["index"]), probability=float(r["probability"]),
                region=r["region"], box=(int(r["box"][0]), int(r["box"][1]), int(r["box"][2]), int(r["box"][3])),
                colours=tuple(r.get("colours", ())), asked=bool(r.get("asked", False))) for r in records]


def _names_a_class(phrase: str) -> bool:
    """The phrase is some class's own name or basic name, not only a kind ("an animal"): no tag of a kind is weak
    evidence that there is none, no tag of a dog is strong. A person is neither: ImageNet-1k has no class for one,
    only a ballplayer, a groom and a scuba diver (named "person"), so the words for people are left to the
    detector."""
    return any(phrase in {cls.basic.lower(), *(n.lower() for n in cls.names)}
               for cls in (load()[i] for i in _vocabulary().get(phrase, ())))


def existence_phrase(question: str, detectable: Collection[str] = ()) -> str | None:
    """The thing an existence question asks about, when it is all one phrase that is an ImageNet class's name ("Is
    there a lemon?" → lemon; not a kind: "an animal") or a class the object detector knows (`detectable`, its
    nouns: "Is there a person?"); None for any other question ("Is there a pen on the table?", "a blue candy?")."""
    match = EXISTENCE_QUESTION.match(question)
    if match is None:
        return None
    words = match["thing"].lower().split()
    forms = [" ".join(words), " ".join([*words[:-1], _singular(words[-1])])] if words else []
    named = next((p for p in named_phrases(" ".join(words))
                  if p in forms and p not in PERSON_WORDS and _names_a_class(p)), None)
    if named is not None:
        return named
    return next((f for f in forms if f in detectable or ("person" in detectable and f in PERSON_WORDS)), None)


def asks_black_and_white(question: str) -> bool | None:
    """True for "Is this a black and white photo?", False for "Is the picture in colour?", None for any other."""
    match = PHOTO_COLOUR_QUESTION.match(question)
    if match is None or not (match["before"] or match["after"]):
        return None
    return "colo" not in match["kind"].lower()  # colour, color, coloured, full colour: not black and white


def answer_check(question: str, checks: Sequence[AnswerCheck], text_lines: Sequence[TextLine],
                 detectable: Collection[str] = ()) -> AnswerCheck | None:
    """Which check the LLM's answer to `question` goes through (docs/methods.md §8), if any: `text` for a question
    about text (not a yes/no one) in a photo where text was read, `existence` for "is there a <thing>?",
    `black-and-white` for whether the photo is."""
    if "text" in checks and text_lines and asks_text(question) and not YES_NO_QUESTION.match(question):
        return "text"
    if "black-and-white" in checks and asks_black_and_white(question) is not None:
        return "black-and-white"
    if "existence" in checks and existence_phrase(question, detectable) is not None:
        return "existence"
    return None


def checked_answer(check: AnswerCheck, question: str, answer: str, tags: Sequence[Tag],
                   text_lines: Sequence[TextLine], objects: Sequence[SeenObjects] = (),
                   detectable: Collection[str] = (), black_and_white: bool = False) -> tuple[str, str] | None:
    """The answer the reading gives instead of the LLM's, and why; None when the LLM's stands. `text`: an answer
    read in no line becomes the tallest line (the 0.5B LLM answered "What word is on the sign?" with "sign" beside
    `the text reads "HOTEL"`). `existence`: yes when a tag or a detection names the thing, else no (it answered "no"
    to "Is there a lemon in the picture?" beside `a photo of a lemon`). `black-and-white`: from the photo's chroma
    (it answered "no" to "Is this a black and white photo?" about a grey one)."""
    if check == "text":
        line = unread_answer(answer, text_lines)
        return None if line is None else (" ".join(line.text.lower().split()), f'the text reads "{line.text}"')
    if check == "black-and-white":
        asked = asks_black_and_white(question)
        if asked is None:
            return None
        seen = "yes" if asked == black_and_white else "no"
        why = ("the picture is black and white" if black_and_white else
               f"the picture is in colour (at least {GREY_MAX_SHARE:.0%} of its pixels reach chroma {GREY_CHROMA:g})")
        return None if answer == seen else (seen, why)
    phrase = existence_phrase(question, detectable)
    if phrase is None:
        return None
    evidence = [tag_caption(t) for t in tags if names_tag(phrase, t)]
    evidence += [object_captions(o)[0] for o in objects if names_objects(phrase, o)]
    seen = "yes" if evidence else "no"
    if answer == seen:
        return None
    return seen, (f"seen: {', '.join(evidence)}" if evidence else f"nothing seen is {_article(phrase)} {phrase}")


def question_kind(question: str) -> str:
    """What a question about a photo asks for: text, yes/no, colour or an object."""
    if asks_text(question):
        return "text"
    if YES_NO_QUESTION.match(question):
        return "yes/no"
    return "colour" if asks_colour(question) else "object"
