"""One picture that explains an answer at a glance: the marked image, the GradCAM heat map with the sampled
patches (or, for a photo, the boxes of its tags and of the text read in it), and the kept captions with the answer
beside them."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vqagraph.media import letterbox

PANEL = 336  # ViP-LLaVA's reference size (docs/methods.md §4)


def _heat(values: np.ndarray) -> np.ndarray:
    """A small blue→yellow→red colour map, so no plotting library is needed."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    cold, mid, hot = np.array([30, 60, 200]), np.array([250, 220, 40]), np.array([220, 30, 30])
    low = cold + (mid - cold) * np.clip(v * 2, 0, 1)
    return np.where(v < 0.5, low, mid + (hot - mid) * np.clip(v * 2 - 1, 0, 1)).astype(np.uint8)


def _fit(image: Image.Image) -> Image.Image:
    scale = PANEL / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def explain_picture(
    image: Image.Image,
    gradcam: Sequence[float],
    grid: Sequence[int],
    patch_ids: Sequence[Sequence[int]],
    captions: Sequence[str],
    question: str,
    answer: str,
    notes: Sequence[str] = (),
    letterboxed: bool = False,
    tag_boxes: Sequence[tuple[str, Sequence[int]]] = (),
    text_boxes: Sequence[tuple[str, Sequence[int]]] = (),
) -> Image.Image:
    """Three panels side by side: marked image | heat map + sampled patches | question, captions, answer.
    `letterboxed`: the encoder saw the image centred on a square, so that square is shown (the grid covers it).
    `tag_boxes` and `text_boxes` (label, (x0, y0, x1, y1) in the image's pixels) are drawn on the middle panel: a
    photo's tags where their class activation maps are strong (the first in red), and its lines of text in yellow
    (docs/methods.md §8)."""
    image = letterbox(image.convert("RGB")) if letterboxed else image
    shown = _fit(image.convert("RGB"))
    rows, cols = (int(grid[0]), int(grid[1])) if len(grid) == 2 else (1, 1)
    heat_panel = shown.copy()
    if gradcam and rows * cols == len(gradcam):
        cam = np.asarray(gradcam, dtype=np.float64).reshape(rows, cols)
        cam = (cam - cam.min()) / (cam.max() - cam.min() or 1.0)
        heat = Image.fromarray(_heat(cam)).resize(shown.size, Image.Resampling.NEAREST)
        heat_panel = Image.blend(shown, heat, 0.55)
        draw = ImageDraw.Draw(heat_panel)
        cell_w, cell_h = shown.width / cols, shown.height / rows
        counts = np.zeros(rows * cols, dtype=int)
        for ids in patch_ids:
            for i in ids:
                if 0 <= i < counts.size:
                    counts[i] += 1
        for i in np.flatnonzero(counts):
            r, c = divmod(int(i), cols)
            draw.rectangle((c * cell_w, r * cell_h, (c + 1) * cell_w - 1, (r + 1) * cell_h - 1),
                           outline=(255, 255, 255), width=1)
    font = ImageFont.load_default()
    labelled = [(label, box, (220, 30, 30) if k == 0 else (30, 60, 200)) for k, (label, box) in enumerate(tag_boxes)]
    labelled += [(label, box, (250, 220, 40)) for label, box in text_boxes]
    if labelled:
        draw = ImageDraw.Draw(heat_panel)
        scale = shown.width / image.width
        for label, box, colour in labelled:
            x0, y0, x1, y1 = (round(v * scale) for v in box)
            draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=2)
            draw.text((x0 + 3, y0 + 2), label[:40], fill=colour, font=font)
    text_w = 420
    lines = [f"Q: {question}", f"A: {answer}", "", f"kept captions ({len(captions)}):"]
    for caption in list(captions)[:14]:
        lines += textwrap.wrap(f"- {caption}", 64) or ["-"]
    if len(captions) > 14:
        lines.append(f"... and {len(captions) - 14} more")
    for note in notes:
        lines += ["", *textwrap.wrap(f"note: {note}", 64)]
    height = max(PANEL, 14 * len(lines) + 40)
    canvas = Image.new("RGB", (2 * PANEL + text_w + 40, height + 24), (255, 255, 255))
    canvas.paste(shown, (10, 24))
    canvas.paste(heat_panel, (PANEL + 20, 24))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 6), "image as the model saw it", fill=(0, 0, 0), font=font)
    middle = "tags (class activation boxes) and text read" if labelled else \
        "GradCAM heat map, sampled patches outlined"
    draw.text((PANEL + 20, 6), middle, fill=(0, 0, 0), font=font)
    y = 24
    for line in lines:
        draw.text((2 * PANEL + 30, y), line, fill=(0, 0, 0), font=font)
        y += 14
    return canvas
