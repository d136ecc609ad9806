"""Text in the image (docs/methods.md §8): RapidOCR's PP-OCR detection and recognition models, which ship inside
its wheel, run by ONNX Runtime on the CPU. Each line of text read becomes a caption, so questions about signs,
titles and numbers have something to read; an image without text gets no caption, never an invented one."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class TextLine:
    """One line of text, how sure the recogniser is, and where it is (x0, y0, x1, y1 in the image's pixels)."""

    text: str
    score: float
    box: tuple[int, int, int, int]


def _same_line(a: TextLine, b: TextLine) -> bool:
    """b continues a's line: they overlap vertically by half the smaller height and b starts within a height and a
    half of a's end, or up to half a height before it (the detector's boxes of neighbouring words overlap: "the
    copy centre" came as three boxes, each reaching 8-22 px into the next). Text set vertically (a box taller than
    wide, more than two characters: the side of a packet) is not joined: its boxes' heights are its lines' lengths."""
    if any(w.box[3] - w.box[1] > w.box[2] - w.box[0] and len(w.text) > 2 for w in (a, b)):
        return False
    overlap = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
    height = min(a.box[3] - a.box[1], b.box[3] - b.box[1])
    line_height = max(a.box[3] - a.box[1], 1)
    return overlap >= height / 2 and -0.5 * line_height <= b.box[0] - a.box[2] <= 1.5 * line_height


def join_lines(words: list[TextLine]) -> list[TextLine]:
    """Words the detector split (wide gaps) joined into lines, top to bottom, left to right."""
    lines: list[TextLine] = []
    for word in sorted(words, key=lambda w: (w.box[0], w.box[1])):  # left to right, so a line grows rightwards
        host = next((i for i, line in enumerate(lines) if _same_line(line, word)), None)
        if host is None:
            lines.append(word)
            continue
        line = lines[host]
        lines[host] = TextLine(f"{line.text} {word.text}", min(line.score, word.score),
                               (line.box[0], min(line.box[1], word.box[1]), word.box[2], max(line.box[3], word.box[3])))
    return sorted(lines, key=lambda w: (w.box[1], w.box[0]))


class TextReader:
    """RapidOCR, loaded once; one photo at a time (ONNX Runtime's session is shared)."""

    def __init__(self, min_score: float = 0.6, threads: int = 2) -> None:
        from rapidocr import RapidOCR

        self.min_score = min_score
        self.engine: Any = RapidOCR(params={"Global.log_level": "warning",
                                            "EngineConfig.onnxruntime.intra_op_num_threads": threads})
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # "the detection result is empty" is no warning here
        self._lock = threading.Lock()

    def __call__(self, image: Image.Image) -> list[TextLine]:
        """The lines of text read, top to bottom; a line read twice (the detector's overlapping boxes) once."""
        with self._lock:
            out = self.engine(image.convert("RGB"))
        if out.boxes is None or out.txts is None:
            return []
        words = []
        for text, score, box in zip(out.txts, out.scores, out.boxes.tolist(), strict=True):
            xs, ys = [p[0] for p in box], [p[1] for p in box]
            if score >= self.min_score and text.strip():
                words.append(TextLine(text.strip(), round(float(score), 4),
                                      (round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys)))))
        kept: dict[str, TextLine] = {}
        for line in join_lines(words):
            kept.setdefault(line.text, line)
        return list(kept.values())


def text_caption(line: TextLine) -> str:
    return f'the text reads "{line.text}"'


def _letters(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def unread_answer(answer: str, lines: Sequence[TextLine]) -> TextLine | None:
    """For a question about text: None when `answer` is text that was read (in a line, or a line that is at least
    half of it, letters and digits compared: "hotel sign" holds "HOTEL", "the shop" holds only "the"); else the line
    to answer with, the most prominent one (the tallest, as titles and signs are). The 0.5B LLM answered "What word
    is on the sign?" with "sign" beside `the text reads "HOTEL"` (§8)."""
    if not lines:
        return None
    key = _letters(answer)
    if key and any(key in read or (read and read in key and 2 * len(read) >= len(key))
                   for read in (_letters(line.text) for line in lines)):
        return None
    return max(lines, key=lambda line: line.box[3] - line.box[1])
