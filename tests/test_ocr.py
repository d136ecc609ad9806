"""Text in the image (docs/methods.md §8): RapidOCR's models from its wheel read a sign; a blank image reads nothing."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from vqagraph.tools.ocr import TextLine, TextReader, join_lines, text_caption, unread_answer


def test_words_on_one_line_are_joined_top_to_bottom() -> None:
    words = [TextLine("PARKING", 0.9, (130, 100, 260, 140)), TextLine("NO", 0.99, (60, 102, 110, 140)),
             TextLine("NOTICE", 0.95, (60, 20, 200, 60))]
    assert [(line.text, line.score) for line in join_lines(words)] == [("NOTICE", 0.95), ("NO PARKING", 0.9)]
    assert join_lines(words)[1].box == (60, 100, 260, 140)
    far = [TextLine("LEFT", 0.9, (0, 0, 40, 20)), TextLine("RIGHT", 0.9, (400, 0, 440, 20))]
    assert [line.text for line in join_lines(far)] == ["LEFT", "RIGHT"]  # too far apart for one line
    # the detector's boxes of neighbouring words overlap (a photo of a shop sign, its boxes as read)
    overlapping = [TextLine("copy", 1.0, (191, 547, 402, 631)), TextLine("centre", 1.0, (380, 535, 624, 616)),
                   TextLine("the", 1.0, (128, 569, 199, 616))]
    assert [line.text for line in join_lines(overlapping)] == ["the copy centre"]
    stacked = [TextLine("galleries", 0.96, (287, 174, 339, 195)), TextLine("pRioRY", 0.62, (291, 155, 332, 177))]
    assert [line.text for line in join_lines(stacked)] == ["pRioRY", "galleries"]  # one above the other: two lines
    side = [TextLine("Cantuccini", 1.0, (84, 80, 105, 143)), TextLine("alla Mandorla", 0.98, (99, 68, 117, 151)),
            TextLine("PAN DUCALE", 0.95, (126, 65, 144, 157))]  # set vertically, on the side of a packet
    assert [line.text for line in join_lines(side)] == ["PAN DUCALE", "alla Mandorla", "Cantuccini"]
    assert text_caption(words[2]) == 'the text reads "NOTICE"'


def test_an_answer_about_text_is_text_that_was_read() -> None:
    lines = [TextLine("Let Us C", 0.9, (10, 10, 200, 60)), TextLine("SANTIRAM KAL", 0.9, (10, 200, 150, 220))]
    assert unread_answer("let us c", lines) is None and unread_answer("Santiram", lines) is None  # read: kept
    assert unread_answer("let us c book", lines) is None  # a line that is most of the answer: kept
    shop = [TextLine("the", 1.0, (128, 569, 199, 616)), TextLine("copy centre", 1.0, (191, 535, 624, 631))]
    assert unread_answer("the shop", shop) == shop[1]  # only "the" of it was read: the tallest line instead
    assert unread_answer("the book is let us c", lines) == lines[0]
    assert unread_answer("sign", lines) == lines[0]  # read nowhere: the tallest line
    assert unread_answer("", lines) == lines[0] and unread_answer("sign", []) is None  # nothing read: no line


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader(threads=1)


def test_a_sign_is_read_and_a_blank_image_gets_nothing(reader: TextReader) -> None:
    sign = Image.new("RGB", (520, 220), "white")
    draw = ImageDraw.Draw(sign)
    font = ImageFont.load_default(size=64)  # Pillow's own font: no system font needed
    draw.text((20, 20), "HELLO 42", font=font, fill="black")
    draw.text((20, 120), "NO PARKING", font=font, fill=(200, 0, 0))
    lines = reader(sign)
    assert [line.text for line in lines] == ["HELLO 42", "NO PARKING"]
    assert all(line.score > 0.9 for line in lines) and lines[0].box[3] <= lines[1].box[1] + 5
    assert reader(Image.new("RGB", (200, 100), "white")) == []
