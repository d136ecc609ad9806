"""Captions for real photographs from the frozen encoder's own ImageNet head (docs/methods.md §8).

Img2LLM's premise is that any captioner can stand in front of the frozen LLM (§1); offline, with no pretrained
captioner for photographs, the frozen EfficientNet-Lite's 1,000-way ImageNet classifier is one. It reads the whole
photo and overlapping crops at two scales (an object that fills a corner is named too), keeps the classes above a
probability, and names each by the word a person would use (the WordNet basic level: Egyptian cat → cat) with the
classifier's own names beside it. The colours of the photo's middle and of the whole come from a named-colour table
in CIELAB (§8), so "what colour is …?" has something to read.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vqagraph.imagenet_names import ImageNetClass, load

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
    """One class the classifier saw: the word a person would say, its own names, where and how sure."""

    name: str  # the basic-level name ("cat")
    label: str  # the classifier's first name for the class ("Egyptian cat")
    index: int
    probability: float
    region: str
    box: tuple[int, int, int, int]  # in the photo's pixels


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


def colour_shares(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> dict[str, float]:
    """The share of each basic colour term among the pixels of `box` (the nearest term in CIELAB per pixel)."""
    region = image.convert("RGB").crop(box) if box else image.convert("RGB")
    pixels = np.asarray(region.resize((48, 48), Image.Resampling.BILINEAR)).reshape(-1, 3)
    distances = ((srgb_to_lab(pixels)[:, None, :] - _SHADE_LAB[None, :, :]) ** 2).sum(-1)
    shares: dict[str, float] = {}
    for shade, count in enumerate(np.bincount(distances.argmin(1), minlength=len(_SHADE_TERMS))):
        if count:
            shares[_SHADE_TERMS[shade]] = shares.get(_SHADE_TERMS[shade], 0.0) + float(count) / len(pixels)
    return shares


def main_colours(image: Image.Image, box: tuple[int, int, int, int] | None = None, min_share: float = 0.2,
                 most: int = 2) -> list[str]:
    """The colour terms covering at least `min_share` of the region, most first (at most `most`)."""
    shares = sorted(colour_shares(image, box).items(), key=lambda kv: -kv[1])
    return [name for name, share in shares[:most] if share >= min_share]


class ImageTagger:
    """The frozen encoder's ImageNet head over the photo's regions, one batched pass per photo."""

    def __init__(self, model: Any, image_size: int = 224, min_probability: float = 0.1, top_k: int = 3) -> None:
        self.model = model.eval()
        self.image_size = image_size
        self.min_probability = min_probability
        self.top_k = top_k
        self.classes: tuple[ImageNetClass, ...] = load()
        self._lock = threading.Lock()

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> list[Tag]:
        """Each basic-level name once, at its highest probability over the regions, most probable first."""
        from vqagraph.models.efficientnet_lite import preprocess

        rgb = image.convert("RGB")
        boxes = region_boxes(rgb.size)
        pixels = preprocess([rgb.crop(box) for _, box in boxes], self.image_size)
        with self._lock:
            probabilities = self.model(pixels.to(next(self.model.parameters()).device)).softmax(-1).float().cpu()
        best: dict[str, Tag] = {}
        for (region, box), row in zip(boxes, probabilities, strict=True):
            values, indices = row.topk(self.top_k)
            for p, i in zip(values.tolist(), indices.tolist(), strict=True):
                if p < self.min_probability:
                    continue
                cls = self.classes[i]
                if cls.basic not in best or p > best[cls.basic].probability:
                    best[cls.basic] = Tag(cls.basic, cls.names[0], i, round(p, 4), region, box)
        return sorted(best.values(), key=lambda t: -t.probability)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def tag_caption(tag: Tag, own_name: bool = False) -> str:
    """'a photo of a cat': the basic name; with `own_name`, the classifier's own name after it when it says more
    ('a photo of a cat (Egyptian cat)')."""
    where = "" if tag.region == "whole" else f" in the {tag.region}"
    own = f" ({tag.label})" if own_name and tag.label.lower() != tag.name.lower() else ""
    return f"a photo of {_article(tag.name)} {tag.name}{own}{where}"


def colour_captions(image: Image.Image) -> list[str]:
    """'the main colours are yellow and green': of the middle of the photo, then of the whole when it differs."""
    width, height = image.size
    middle = main_colours(image, (width // 4, height // 4, width - width // 4, height - height // 4))
    whole = main_colours(image)
    captions = [f"the main colour{'s are' if len(middle) > 1 else ' is'} {' and '.join(middle)}"] if middle else []
    if whole and set(whole) != set(middle):
        captions.append(f"the colours of the whole picture are {' and '.join(whole)}")
    return captions


def photo_captions(tags: Sequence[Tag], image: Image.Image, own_names: bool = False) -> tuple[list[str], list[float]]:
    """The captions the text route reads for a photo, with each one's confidence (colours: 1.0)."""
    captions = [tag_caption(t, own_names) for t in tags]
    scores = [t.probability for t in tags]
    colours = colour_captions(image)
    return captions + colours, scores + [1.0] * len(colours)
