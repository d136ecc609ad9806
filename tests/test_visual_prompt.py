"""ViP-LLaVA visual prompts (docs/methods.md §4), checked pixel by pixel on flat grey pictures."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from vqagraph.errors import MarkError
from vqagraph.tools.visual_prompt import COLOURS, SHAPES, Mark, mark_phrase, parse_mark, render_marks

GREY = 100
BOX = (100.0, 80.0, 220.0, 180.0)
RED = (255, 0, 0)


def grey(width: int = 336, height: int = 252) -> Image.Image:
    return Image.new("RGB", (width, height), (GREY, GREY, GREY))


def blend(colour: tuple[int, int, int], alpha: int = 128) -> np.ndarray:
    return np.array([round((alpha * c + (255 - alpha) * GREY) / 255) for c in colour])


def changed(out: Image.Image, before: Image.Image) -> np.ndarray:
    return (np.asarray(out).astype(int) != np.asarray(before).astype(int)).any(axis=-1)


def is_blended(out: Image.Image, x: float, y: float, colour: tuple[int, int, int] = RED, alpha: int = 128) -> bool:
    pixel = np.asarray(out)[int(y), int(x)].astype(int)
    return bool(np.abs(pixel - blend(colour, alpha)).max() <= 1)


def allowed_area(size: tuple[int, int], box: tuple[float, ...], margin: float) -> np.ndarray:
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    return (xs >= box[0] - margin) & (xs <= box[2] + margin) & (ys >= box[1] - margin) & (ys <= box[3] + margin)


def max_angle(corners: list[tuple[float, float]]) -> float:
    angles = []
    for i in range(3):
        a, b, c = (np.array(corners[(i + k) % 3]) for k in range(3))
        u, v = a - b, c - b
        angles.append(math.degrees(math.acos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v))))
    assert abs(sum(angles) - 180) < 1e-6
    return max(angles)


# -- every shape --------------------------------------------------------------------------------------------------

REACH = {  # how far past BOX each shape may draw on a 336-pixel image
    "rectangle": 3, "triangle": 3, "scribble": 4, "mask": 1, "mask_contour": 3, "point": 0,
    "ellipse": 0.1 * 120 + 4, "arrow": 50 + 3,
}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_blends_its_pixels_and_leaves_the_rest(shape: str) -> None:
    image = grey()
    out, [done] = render_marks(image, [Mark(shape=shape, box=BOX)])
    assert out.mode == "RGB" and out.size == image.size and out is not image
    assert image.tobytes() == grey().tobytes()  # the input is not modified
    diff = changed(out, image)
    assert diff.any()
    # Every changed pixel is exactly one alpha blend of red over grey (docs/methods.md §4: alpha 128).
    assert np.abs(np.asarray(out)[diff].astype(int) - blend(RED)).max() <= 1
    # Nothing changes outside the mark's reach.
    assert not (diff & ~allowed_area(image.size, BOX, REACH[shape])).any()
    assert done.box == (100, 80, 220, 180) and not done.clipped and done.note == ""


def test_rectangle_outline_is_its_width_and_the_inside_is_untouched() -> None:
    image = grey()
    out, [done] = render_marks(image, [Mark(shape="rectangle", box=BOX)])
    assert done.width == 3
    assert all(is_blended(out, x, 130) for x in (100, 101, 102, 218, 219, 220))
    assert not is_blended(out, 103, 130) and not is_blended(out, 99, 130)
    inner = np.asarray(out)[84:177, 104:217]
    assert (inner == GREY).all()


def test_alpha_and_colour_are_per_mark() -> None:
    out, _ = render_marks(grey(), [Mark(shape="rectangle", box=BOX, colour="blue", alpha=200)])
    assert is_blended(out, 100, 130, (0, 0, 255), 200)
    out, _ = render_marks(grey(), [Mark(shape="rectangle", box=BOX, colour=(10, 20, 30), alpha=255)])
    assert tuple(np.asarray(out)[130, 100]) == (10, 20, 30)


def test_mask_fills_a_polygon_and_a_mask_image() -> None:
    triangle = [(60.0, 200.0), (160.0, 40.0), (260.0, 200.0)]
    out, [done] = render_marks(grey(), [Mark(shape="mask", polygon=triangle)])
    assert is_blended(out, 160, 150) and is_blended(out, 100, 190)
    assert not is_blended(out, 70, 60) and done.box == (60, 40, 260, 200)
    mask = np.zeros((252, 336), dtype=bool)
    mask[50:120, 30:90] = True
    mask[150:200, 200:300] = True
    out, [done] = render_marks(grey(), [Mark(shape="mask")], masks={0: mask})
    assert (changed(out, grey()) == mask).all()
    assert np.abs(np.asarray(out)[mask].astype(int) - blend(RED)).max() <= 1
    assert done.box == (30, 50, 300, 200)


def test_mask_contour_is_a_band_on_the_border() -> None:
    mask = np.zeros((252, 336), dtype=bool)
    mask[50:150, 60:200] = True
    out, [done] = render_marks(grey(), [Mark(shape="mask_contour")], masks={0: Image.fromarray(mask)})
    diff = changed(out, grey())
    assert done.width == 2
    assert diff[100, 60] and diff[100, 58] and not diff[100, 57]  # ±2 pixels around the border pixel
    assert not diff[100, 63] and not diff[100, 120]  # the inside is untouched
    out, _ = render_marks(grey(), [Mark(shape="mask_contour", polygon=[(60, 50), (200, 50), (200, 150), (60, 150)])])
    diff = changed(out, grey())
    assert diff[100, 60] and not diff[100, 120] and not diff[100, 40]


def test_point_is_a_dot_at_the_centre_or_the_point() -> None:
    out, [done] = render_marks(grey(), [Mark(shape="point", box=BOX)])
    assert done.anchor == (160.0, 130.0) and done.width == 8
    assert is_blended(out, 160, 130) and is_blended(out, 166, 130) and not is_blended(out, 170, 130)
    out, [done] = render_marks(grey(), [Mark(shape="point", point=(40, 30))])
    assert done.anchor == (40.0, 30.0) and is_blended(out, 40, 30)
    assert done.box == (32, 22, 49, 39)


def test_ellipse_is_the_box_enlarged_about_its_centre() -> None:
    out, _ = render_marks(grey(), [Mark(shape="ellipse", box=BOX)])
    # ×1.2 about the centre (160, 130): x from 88 to 232, y from 70 to 190.
    for x, y in ((88, 130), (232, 130), (160, 70), (160, 190)):
        assert is_blended(out, x, y)
    assert not is_blended(out, 160, 130) and not is_blended(out, 86, 130) and not is_blended(out, 100, 130)


def test_arrow_head_lies_inside_its_region() -> None:
    for seed in range(20):
        image = grey()
        out, [done] = render_marks(image, [Mark(shape="arrow", box=BOX)], seed=seed)
        assert done.anchor is not None
        tip_x, tip_y = done.anchor
        assert BOX[0] <= tip_x <= BOX[2] and BOX[1] <= tip_y <= BOX[3]
        tail, left, tip, right = done.points
        assert tip == done.anchor
        length = math.dist(tail, tip)
        head = math.dist(tip, ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2))
        assert length <= 50 + 1e-9 and 0.2 - 1e-9 <= head / length <= 0.5 + 1e-9
        near = changed(out, image)[int(tip_y) - 4 : int(tip_y) + 5, int(tip_x) - 4 : int(tip_x) + 5]
        assert near.any()
        assert 0 <= tail[0] < 336 and 0 <= tail[1] < 252
        # The shaft runs from the tail to the head's base: the point between them is drawn.
        base = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
        assert changed(out, image)[round((tail[1] + base[1]) / 2), round((tail[0] + base[0]) / 2)]


def test_arrow_on_a_small_region_starts_outside_it() -> None:
    _, [done] = render_marks(grey(), [Mark(shape="arrow", box=(150, 110, 170, 130))], seed=3)
    tail = done.points[0]
    assert not (150 <= tail[0] <= 170 and 110 <= tail[1] <= 130)


def inside_convex(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    signs = []
    for (ax, ay), (bx, by) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        signs.append((bx - ax) * (point[1] - ay) - (by - ay) * (point[0] - ax))
    return all(s >= 0 for s in signs) or all(s <= 0 for s in signs)


def test_scribble_control_points_lie_inside_a_polygon() -> None:
    triangle = [(60.0, 200.0), (160.0, 40.0), (260.0, 200.0)]
    for seed in range(20):
        out, [done] = render_marks(grey(), [Mark(shape="scribble", polygon=triangle)], seed=seed)
        assert len(done.points) == 4 and all(inside_convex(p, triangle) for p in done.points)
        # A Bézier stays in its control points' hull, so the stroke stays within a stroke width of the triangle.
        assert not (changed(out, grey()) & ~allowed_area((336, 252), (60, 40, 260, 200), 3)).any()


def test_scribble_control_points_lie_inside_a_mask_image(tmp_path: Path) -> None:
    mask = np.zeros((252, 336), dtype=np.uint8)
    mask[30:80, 40:100] = 255
    mask[150:230, 200:320] = 7  # non-zero = inside
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)
    for seed in range(10):
        _, [done] = render_marks(grey(), [Mark(shape="scribble")], masks={0: mask}, seed=seed)
        _, [from_file] = render_marks(grey(), [Mark(shape="scribble", mask_path=str(path))], seed=seed)
        assert done.points == from_file.points
        assert all(mask[int(y), int(x)] for x, y in done.points)


def test_triangle_corners_inside_the_box_and_not_flat() -> None:
    for seed in range(30):
        _, [done] = render_marks(grey(), [Mark(shape="triangle", box=BOX)], seed=seed)
        assert len(done.points) == 3
        assert all(BOX[0] <= x <= BOX[2] and BOX[1] <= y <= BOX[3] for x, y in done.points)
        assert max_angle(done.points) < 150


def test_same_seed_same_bytes_other_seed_other_scribble() -> None:
    marks = [Mark(shape=shape, box=BOX, colour=colour) for shape, colour in zip(SHAPES, COLOURS, strict=False)]
    first, _ = render_marks(grey(), marks, seed=7)
    again, _ = render_marks(grey(), marks, seed=7)
    assert first.tobytes() == again.tobytes()
    scribble = [Mark(shape="scribble", box=BOX)]
    assert render_marks(grey(), scribble, seed=1)[0].tobytes() != render_marks(grey(), scribble, seed=2)[0].tobytes()


def test_sizes_scale_with_the_image() -> None:
    small, [a] = render_marks(grey(336, 336), [Mark(shape="rectangle", box=(50, 50, 250, 250))])
    large, [b] = render_marks(grey(672, 672), [Mark(shape="rectangle", box=(100, 100, 500, 500))])
    assert (a.width, b.width) == (3, 6)
    assert changed(small, grey(336, 336))[150, :100].sum() == 3
    assert changed(large, grey(672, 672))[300, :200].sum() == 6
    assert render_marks(grey(672, 672), [Mark(shape="point", point=(10, 10))])[1][0].width == 16
    assert render_marks(grey(100, 80), [Mark(shape="mask_contour", box=(5, 5, 50, 50))])[1][0].width == 1
    assert render_marks(grey(), [Mark(shape="scribble", box=BOX, width=9)])[1][0].width == 9


# -- phrases ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "phrase"), [
    ("rectangle", "within the red rectangle"), ("ellipse", "within the red ellipse"),
    ("triangle", "with the red triangle"), ("point", "at the red point"), ("scribble", "with the red scribble"),
    ("mask_contour", "with the red mask contour"), ("mask", "with the red mask"),
    ("arrow", "pointed to by the red arrow"),
])
def test_phrases(shape: str, phrase: str) -> None:
    mark = Mark(shape=shape, box=BOX)
    assert mark_phrase(mark) == phrase
    assert render_marks(grey(), [mark])[1][0].phrase == phrase


def test_phrase_colours() -> None:
    assert mark_phrase(Mark(shape="rectangle", box=BOX, colour=(10, 20, 30))) == "within the marked rectangle"
    assert mark_phrase(Mark(shape="arrow", box=BOX, colour=(255, 165, 0))) == "pointed to by the orange arrow"
    assert mark_phrase(Mark(shape="point", box=BOX, colour="Gold")) == "at the gold point"
    assert mark_phrase(Mark(shape="mask", box=BOX, colour="#0000ff")) == "with the blue mask"
    assert mark_phrase(Mark(shape="mask", box=BOX, colour="green")) == "with the green mask"
    assert COLOURS["purple"] == (128, 0, 128) and COLOURS["aqua"] == (0, 255, 255) and len(COLOURS) == 9


# -- errors and clipping ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("marks", "masks", "fragment"), [
    ([Mark(shape="rectangle", box=(500, 500, 600, 600))], None, "mark 0 (rectangle): box (500, 500, 600, 600) lies "
     "entirely outside the 336x252 image"),
    ([Mark(shape="point", point=(400, 10))], None, "point (400, 10) lies outside"),
    ([Mark(shape="rectangle", box=BOX), Mark(shape="ellipse", box=(10, 10, 10, 40))], None,
     "mark 1 (ellipse): box (10, 10, 10, 40) has zero or negative area"),
    ([Mark(shape="rectangle", box=(50, 10, 40, 40))], None, "zero or negative area"),
    ([Mark(shape="mask", polygon=[(1, 1), (5, 5)])], None, "at least 3 points enclosing a non-zero area"),
    ([Mark(shape="mask", polygon=[(1, 1), (5, 5), (9, 9)])], None, "at least 3 points enclosing a non-zero area"),
    ([Mark(shape="rectangle", box=BOX, colour="pink")], None, "unknown colour 'pink'; use one of red, lime, blue"),
    ([Mark(shape="mask")], {0: np.ones((10, 10))}, "the mask is 10x10 but must be the image's size, 336x252"),
    ([Mark(shape="mask")], {0: np.zeros((252, 336))}, "the mask is empty"),
    ([Mark(shape="mask")], None, "mark 0 (mask): no region"),
    ([Mark(shape="rectangle", box=BOX)], {0: np.ones((252, 336))}, "a rectangle takes a box or a polygon, not a mask"),
    ([Mark(shape="mask", box=BOX)], {0: np.ones((252, 336))}, "not both"),
    ([Mark(shape="mask", box=BOX)], {3: np.ones((252, 336))}, "a mask was given for mark 3"),
    ([Mark(shape="rectangle", box=BOX)] * 9, None, "9 marks given; at most 8"),
    ([Mark(shape="rectangle", box=BOX, alpha=0)], None, "mark 0 (rectangle): alpha 0 is outside 1..255"),
    ([Mark(shape="rectangle", box=BOX, alpha=256)], None, "alpha 256 is outside 1..255"),
    ([Mark(shape="rectangle", box=BOX, width=0)], None, "width 0 must be at least 1"),
    ([Mark(shape="mask", mask_path="/nonexistent/mask.png")], None, "cannot be read"),
])
def test_errors(marks: list[Mark], masks: dict[int, Any] | None, fragment: str) -> None:
    with pytest.raises(MarkError) as caught:
        render_marks(grey(), marks, masks=masks)
    assert fragment in str(caught.value)


def test_mark_regions_are_checked_when_built() -> None:
    with pytest.raises(MarkError, match="a rectangle takes a box or a polygon, not a point"):
        Mark.create(shape="rectangle", point=(1, 2))
    with pytest.raises(MarkError, match="give one region, not both a box and a polygon"):
        Mark.create(shape="ellipse", box=BOX, polygon=[(0, 0), (1, 0), (0, 1)])
    with pytest.raises(MarkError, match="a point needs a point or a box"):
        Mark.create(shape="point")
    with pytest.raises(MarkError, match="shape: Input should be"):
        Mark.create(shape="hexagram", box=BOX)
    with pytest.raises(ValidationError):
        Mark(shape="arrow", box=BOX, bbox=BOX)  # type: ignore[call-arg]
    assert Mark.create(shape="circle", box=BOX).shape == "ellipse"
    mark = Mark(shape="scribble", polygon=[(0, 0), (9, 0), (0, 9)], colour=(1, 2, 3))
    assert Mark.model_validate(mark.model_dump()) == mark


def test_polygon_marks_use_their_box() -> None:
    _, [done] = render_marks(grey(), [Mark(shape="rectangle", polygon=[(20, 30), (80, 10), (60, 90)])])
    assert done.box == (20, 10, 80, 90)


def test_partly_outside_is_clipped_and_said() -> None:
    image = grey(200, 150)
    out, [done] = render_marks(image, [Mark(shape="rectangle", box=(-20, 5, 60, 40))])
    assert done.clipped and done.box == (0, 5, 60, 40)
    assert done.note == ("mark 0 (rectangle): box (-20, 5, 60, 40) was partly outside the 200x150 image and was "
                         "clipped to (0, 5, 60, 40)")
    assert is_blended(out, 0, 20) and is_blended(out, 30, 5)  # the clipped side is drawn on the picture's edge
    _, [done] = render_marks(image, [Mark(shape="mask", polygon=[(150, 100), (260, 120), (170, 180)])])
    assert done.clipped and done.box == (150, 100, 200, 150) and "the polygon's box" in done.note


# -- parse_mark ---------------------------------------------------------------------------------------------------

def test_parse_mark_pixels_fractions_and_polygons() -> None:
    size = (200, 100)
    assert parse_mark("rectangle:20,30,120,90", size) == Mark(shape="rectangle", box=(20, 30, 120, 90))
    assert parse_mark("box:0.1,0.2,0.5,1", size).box == pytest.approx((20, 20, 100, 100))
    assert parse_mark("point:0.5,0.5:blue", size) == Mark(shape="point", point=(100, 50), colour="blue")
    assert parse_mark("point:150,20", size).point == (150, 20)
    polygon = parse_mark("mask:10,10,90,10,50,80:#00ff00", size)
    assert polygon.polygon == [(10, 10), (90, 10), (50, 80)] and polygon.colour == (0, 255, 0)
    assert mark_phrase(polygon) == "with the lime mask"
    assert parse_mark("mask-contour:0,0,1,0,1,1,0,1", size).polygon == [(0, 0), (200, 0), (200, 100), (0, 100)]
    assert parse_mark("mask_contour:1,1,9,1,9,9", size).shape == "mask_contour"
    assert parse_mark("circle:10,10,50,50:Gold", size).shape == "ellipse"
    assert mark_phrase(parse_mark("arrow:10,10,50,50:#123456", size)) == "pointed to by the marked arrow"


def test_parse_mark_mask_file(tmp_path: Path) -> None:
    mask = np.zeros((100, 200), dtype=np.uint8)
    mask[10:40, 20:60] = 1
    path = tmp_path / "m.png"
    Image.fromarray(mask).save(path)
    mark = parse_mark(f"scribble:@{path}:red", (200, 100))
    assert mark.mask_path == str(path)
    with pytest.raises(MarkError, match="the mask is 200x100 but must be the image's size, 300x100"):
        parse_mark(f"mask:@{path}", (300, 100))


@pytest.mark.parametrize(("spec", "fragment"), [
    ("rectangle", "expected SHAPE:COORDS[:COLOUR]"),
    ("rectangle:1,2,3,4:red:extra", "expected SHAPE:COORDS[:COLOUR]"),
    ("hexagon:1,2,3,4", "unknown shape 'hexagon'"),
    ("rectangle:1,2", "a rectangle takes a box or a polygon, not a point"),
    ("rectangle:1,2,3", "3 coordinates"),
    ("mask:1,2,3,4,5,6,7", "7 coordinates"),
    ("rectangle:a,b,c,d", "must be comma-separated numbers"),
    ("rectangle:1,2,nan,4", "finite"),
    ("rectangle:10,20,5,40", "zero or negative area"),
    ("rectangle:500,500,600,600", "lies entirely outside the 200x100 image"),
    ("rectangle:10,10,50,50:pink", "unknown colour 'pink'"),
    ("rectangle:10,10,50,50:#12345", "unknown colour '#12345'"),
])
def test_parse_mark_bad_specs(spec: str, fragment: str) -> None:
    with pytest.raises(MarkError) as caught:
        parse_mark(spec, (200, 100))
    message = str(caught.value)
    assert message.startswith(f"mark {spec!r}: ") and fragment in message
    assert "SHAPE:COORDS[:COLOUR]" in message  # every error shows the syntax


# -- limits: what a caller may ask to draw ------------------------------------------------------------------------

def region_for(shape: str, value: float) -> list[dict[str, Any]]:
    """Every way a shape takes a region, with `value` as one of its coordinates."""
    from vqagraph.tools.visual_prompt import REGIONS

    kinds = {"box": {"box": (10.0, 10.0, value, 60.0)}, "point": {"point": (value, 10.0)},
             "polygon": {"polygon": [(10.0, 10.0), (value, 20.0), (30.0, 90.0)]},
             "path": {"path": [(10.0, 10.0), (value, 20.0), (30.0, 90.0)][: 2 if shape == "arrow" else 3]}}
    return [kinds[kind] for kind in REGIONS[shape] if kind in kinds]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_coordinate_is_finite_and_near_the_image(shape: str) -> None:
    """Huge, infinite and NaN coordinates are refused for every shape and region (the model refuses NaN and inf
    before any image is known; check_mark refuses what lies beyond ±10 × the image's larger side)."""
    for value in (1e9, -1e9, 1e308, -1e308, 3361.0):
        for region in region_for(shape, value):
            with pytest.raises(MarkError, match=r"beyond the limit of ±3360 pixels \(10 × the larger side"):
                render_marks(grey(), [Mark.create(shape=shape, **region)])
    for value in (math.nan, math.inf, -math.inf):
        for region in region_for(shape, value):
            with pytest.raises(MarkError, match="finite number"):
                Mark.create(shape=shape, **region)
    for region in region_for(shape, 3360.0):  # at the limit: clipped to the image and drawn (a point must be on it)
        if "point" not in region:
            render_marks(grey(), [Mark.create(shape=shape, **region)])


@pytest.mark.parametrize("shape", SHAPES)
def test_widths_are_capped_by_the_image(shape: str) -> None:
    from vqagraph.tools.visual_prompt import MAX_WIDTH, max_width

    image = grey(336, 252)
    assert max_width(image.size) == 42 and max_width((5, 3)) == 1
    _, [drawn] = render_marks(image, [Mark(shape=shape, box=BOX, width=42)])
    assert drawn.width == 42
    what = "radius" if shape == "point" else "width"
    with pytest.raises(MarkError, match=f"{what} 43 is over the limit of 42 pixels for the 336x252 image"):
        render_marks(image, [Mark(shape=shape, box=BOX, width=43)])
    for width in (MAX_WIDTH + 1, 30_000, 10**9):
        with pytest.raises(MarkError, match=f"width: {width} is over the limit of {MAX_WIDTH} pixels"):
            Mark.create(shape=shape, box=BOX, width=width)


def test_points_marks_and_colours_are_counted() -> None:
    from vqagraph.tools.visual_prompt import MAX_MARKS, MAX_POINTS

    ring = [(168 + 80 * math.cos(i / 100), 126 + 80 * math.sin(i / 100)) for i in range(MAX_POINTS)]
    render_marks(grey(), [Mark(shape="mask_contour", polygon=ring, width=42)])
    render_marks(grey(), [Mark(shape="scribble", path=ring, width=42)])
    for kind in ("polygon", "path"):
        with pytest.raises(MarkError, match=f"{kind}: {MAX_POINTS + 1} points, over the limit of {MAX_POINTS}"):
            Mark.create(shape="scribble", **{kind: [*ring, (1.0, 1.0)]})
    with pytest.raises(MarkError, match=f"{MAX_MARKS + 1} marks given; at most {MAX_MARKS}"):
        render_marks(grey(), [Mark(shape="point", point=(5, 5))] * (MAX_MARKS + 1))
    with pytest.raises(MarkError, match="a colour of 33 characters is no name"):
        Mark.create(shape="point", point=(5, 5), colour="x" * 33)


def test_dilation_is_the_square_window_at_any_radius() -> None:
    from vqagraph.tools.visual_prompt import _dilate

    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        mask = rng.random((height, width)) < 0.05
        radius = int(rng.integers(0, 40))
        ys, xs = np.nonzero(mask)
        rows, cols = np.mgrid[0:height, 0:width]
        expected = np.zeros_like(mask)
        for y, x in zip(ys, xs, strict=True):
            expected |= (np.abs(rows - y) <= radius) & (np.abs(cols - x) <= radius)
        assert (_dilate(mask, radius) == expected).all()


def test_mask_files_are_regular_files_of_the_image_size(tmp_path: Path) -> None:
    """A FIFO, a device or a directory is refused without being read (a FIFO would block for ever); a file
    claiming a huge picture is refused before it is decoded."""
    import os
    import struct
    import zlib

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in ((b"IHDR", header), (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b""))))
    text = tmp_path / "notes.png"
    text.write_text("hello")
    for path, fragment in [(fifo, "is not a regular file"), ("/dev/zero", "is not a regular file"),
                           (tmp_path, "is not a regular file"), (bomb, "far more pixels than the 336x252 image"),
                           (text, "cannot be read (not an image"), ("/no/such.png", "cannot be read"),
                           ("mask\0.png", "cannot be read")]:
        with pytest.raises(MarkError, match=re.escape(fragment)):
            render_marks(grey(), [Mark(shape="mask", mask_path=str(path))])
