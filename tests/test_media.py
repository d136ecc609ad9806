"""Image intake (`load_image`), content references (`image_ref`) and the per-process stores."""

from __future__ import annotations

import io
import random
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from vqagraph.errors import ImageError, ImageTooLargeError
from vqagraph.media import FeatureCache, ImageStore, LRUStore, image_ref, load_image

# --------------------------------------------------------------------------- helpers


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Deterministic noisy RGB image: compresses badly, so half of its file is half of its pixel data."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))


def _png_with_header_size(width: int, height: int) -> bytes:
    """A valid 4x4 PNG whose IHDR is patched to declare `width` x `height` (CRC fixed up)."""
    data = bytearray(_encode(Image.new("RGB", (4, 4), "red"), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


@contextmanager
def _raises_exactly(error_type: type[Exception], fragment: str) -> Iterator[pytest.ExceptionInfo[Exception]]:
    """Like pytest.raises(..., match=fragment), but a subclass (ImageTooLargeError for ImageError) does not pass."""
    with pytest.raises(error_type, match=re.escape(fragment)) as info:
        yield info
    assert info.type is error_type, f"expected exactly {error_type.__name__}, got {info.type.__name__}"


# --------------------------------------------------------------------------- sources


def test_load_from_path_str_and_path(red_circle_path: Path, red_circle: Image.Image) -> None:
    for source in (red_circle_path, str(red_circle_path)):
        image = load_image(source)
        assert isinstance(image, Image.Image)
        assert image.mode == "RGB"
        assert image.size == (200, 150)
        assert image.getpixel((55, 55)) == (255, 0, 0)
        assert image.tobytes() == red_circle.tobytes()


def test_load_from_bytes(red_circle: Image.Image) -> None:
    image = load_image(_encode(red_circle, "PNG"))
    assert image.mode == "RGB"
    assert image.size == (200, 150)
    assert image.tobytes() == red_circle.tobytes()


def test_load_from_pil_returns_rgb_copy(red_circle: Image.Image) -> None:
    image = load_image(red_circle)
    assert image.mode == "RGB"
    assert image.tobytes() == red_circle.tobytes()
    assert image is not red_circle
    image.putpixel((0, 0), (1, 2, 3))
    assert red_circle.getpixel((0, 0)) == (255, 255, 255)


# --------------------------------------------------------------------------- EXIF orientation


def _oriented_jpeg(orientation: int) -> bytes:
    """64x32 blue picture with a red 16x16 block in its stored top-left corner, tagged with `orientation`."""
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return _encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_6_rotates_clockwise() -> None:
    image = load_image(_oriented_jpeg(6))
    assert image.size == (32, 64)
    # Rotating 90 degrees clockwise moves the stored top-left corner to the top-right.
    assert _close(image.getpixel((31 - 8, 8)), (255, 0, 0), 40)
    assert _close(image.getpixel((8, 8)), (0, 0, 255), 40)
    assert _close(image.getpixel((8, 63 - 8)), (0, 0, 255), 40)


def test_exif_orientation_8_rotates_counterclockwise() -> None:
    image = load_image(_oriented_jpeg(8))
    assert image.size == (32, 64)
    # Rotating 90 degrees counter-clockwise moves the stored top-left corner to the bottom-left.
    assert _close(image.getpixel((8, 63 - 8)), (255, 0, 0), 40)
    assert _close(image.getpixel((8, 8)), (0, 0, 255), 40)
    assert _close(image.getpixel((31 - 8, 8)), (0, 0, 255), 40)


def test_exif_orientation_1_leaves_image_alone() -> None:
    image = load_image(_oriented_jpeg(1))
    assert image.size == (64, 32)
    assert _close(image.getpixel((8, 8)), (255, 0, 0), 40)


# --------------------------------------------------------------------------- mode conversions


@pytest.mark.parametrize("via", ["pil", "png"])
def test_rgba_composited_onto_white(via: str) -> None:
    source = Image.new("RGBA", (3, 1))
    source.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent
    source.putpixel((1, 0), (10, 20, 30, 255))  # opaque
    source.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black
    image = load_image(source if via == "pil" else _encode(source, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (10, 20, 30)
    assert _close(image.getpixel((2, 0)), (127, 127, 127), 1)


def test_la_composited_onto_white() -> None:
    source = Image.new("LA", (2, 1))
    source.putpixel((0, 0), (0, 0))
    source.putpixel((1, 0), (40, 255))
    image = load_image(_encode(source, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (40, 40, 40)


def _palette_image() -> Image.Image:
    source = Image.new("P", (2, 1))
    source.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    source.putpixel((0, 0), 0)  # red
    source.putpixel((1, 0), 1)  # green
    return source


@pytest.mark.parametrize("via", ["pil", "png"])
def test_palette_without_transparency(via: str) -> None:
    source = _palette_image()
    image = load_image(source if via == "pil" else _encode(source, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((1, 0)) == (0, 255, 0)


@pytest.mark.parametrize("via", ["pil", "png"])
def test_palette_with_transparency_goes_onto_white(via: str) -> None:
    source = _palette_image()
    source.info["transparency"] = 0  # the red entry is transparent
    image = load_image(source if via == "pil" else _encode(source, "PNG", transparency=0))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (0, 255, 0)


def test_grayscale_l() -> None:
    source = Image.new("L", (2, 2), 77)
    image = load_image(_encode(source, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (77, 77, 77)


def test_bilevel_mode_1() -> None:
    source = Image.new("1", (2, 1), 0)
    source.putpixel((1, 0), 1)
    image = load_image(source)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((1, 0)) == (255, 255, 255)


def _cmyk_image() -> Image.Image:
    source = Image.new("CMYK", (32, 16), (0, 0, 0, 0))  # white
    source.paste((0, 255, 255, 0), (16, 0, 32, 16))  # red
    return source


def test_cmyk_tiff() -> None:
    data = _encode(_cmyk_image(), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = load_image(data)
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == (255, 255, 255)
    assert image.getpixel((24, 4)) == (255, 0, 0)


def test_cmyk_jpeg() -> None:
    data = _encode(_cmyk_image(), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = load_image(data)
    assert image.mode == "RGB"
    assert _close(image.getpixel((4, 4)), (255, 255, 255), 20)
    assert _close(image.getpixel((24, 8)), (255, 0, 0), 20)


def _sixteen_bit() -> Image.Image:
    array = np.array([[1000, 2000], [5000, 1000]], dtype=np.uint16)
    return Image.fromarray(array)


@pytest.mark.parametrize("via", ["pil", "png"])
def test_16bit_grayscale_rescaled(via: str) -> None:
    source = _sixteen_bit()
    data = _encode(source, "PNG")
    if via == "png":
        assert Image.open(io.BytesIO(data)).mode in {"I;16", "I"}
    image = load_image(source if via == "pil" else data)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 0, 0)  # min -> 0
    assert image.getpixel((0, 1)) == (255, 255, 255)  # max -> 255
    assert image.getpixel((1, 0)) == (64, 64, 64)  # 1000/4000 of the range
    assert image.getpixel((1, 1)) == (0, 0, 0)


def test_16bit_flat_image_becomes_black() -> None:
    source = Image.fromarray(np.full((2, 2), 3000, dtype=np.uint16))
    image = load_image(source)
    assert image.mode == "RGB"
    assert image.getextrema() == ((0, 0), (0, 0), (0, 0))


def test_float_image_rescaled() -> None:
    source = Image.fromarray(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32))
    image = load_image(source)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


# --------------------------------------------------------------------------- rejections


def test_missing_file(tmp_path: Path) -> None:
    with _raises_exactly(ImageError, "not found"):
        load_image(tmp_path / "nope.png")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with _raises_exactly(ImageError, "not found"):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with _raises_exactly(ImageError, "is empty"):
        load_image(path)


def test_empty_bytes() -> None:
    with _raises_exactly(ImageError, "image bytes are empty"):
        load_image(b"")


def test_non_image_bytes() -> None:
    with _raises_exactly(ImageError, "not an image"):
        load_image(b"hello")


def test_non_image_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with _raises_exactly(ImageError, "not an image"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_bytes(fmt: str) -> None:
    data = _encode(_noise((64, 64)), fmt)
    with _raises_exactly(ImageError, "unreadable or truncated"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    data = _encode(_noise((64, 64)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with _raises_exactly(ImageError, "unreadable or truncated"):
        load_image(path)


@pytest.mark.parametrize("size", [(0, 5), (5, 0), (0, 0)])
def test_zero_sized_pil_image(size: tuple[int, int]) -> None:
    with _raises_exactly(ImageError, "zero size"):
        load_image(Image.new("RGB", size))


def test_zero_width_png_header() -> None:
    # Pillow refuses a PNG declaring width 0 when opening it; it must still be an ImageError, not a crash.
    with _raises_exactly(ImageError, "image bytes"):
        load_image(_png_with_header_size(0, 4))


def test_over_max_pixels_from_path(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(path)
    with _raises_exactly(ImageTooLargeError, "over the limit of 100"):
        load_image(path, max_pixels=100)


def test_over_max_pixels_from_bytes() -> None:
    data = _encode(Image.new("RGB", (20, 20)), "PNG")
    with _raises_exactly(ImageTooLargeError, "20x20 = 400 pixels"):
        load_image(data, max_pixels=100)


def test_over_max_pixels_from_pil() -> None:
    with _raises_exactly(ImageTooLargeError, "over the limit of 100"):
        load_image(Image.new("RGB", (20, 20)), max_pixels=100)


def test_exactly_max_pixels_is_accepted() -> None:
    image = load_image(_encode(Image.new("RGB", (10, 10)), "PNG"), max_pixels=100)
    assert image.size == (10, 10)


def test_too_large_is_an_image_error() -> None:
    assert issubclass(ImageTooLargeError, ImageError)


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every ImageFile.load (pixel decoding) call made while a test runs."""
    calls: list[object] = []
    original = ImageFile.ImageFile.load

    def recording_load(self):  # type: ignore[no-untyped-def]
        calls.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return calls


def test_header_over_max_pixels_rejected_before_decoding(decode_calls: list[object]) -> None:
    # 7000x7000 is over the default limit but under Pillow's own bomb threshold: our own check must catch it.
    data = _png_with_header_size(7000, 7000)
    with _raises_exactly(ImageTooLargeError, "7000x7000"):
        load_image(data)
    assert decode_calls == []


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_decompression_bomb_header_rejected_before_decoding(decode_calls: list[object], side: int) -> None:
    # 10000^2 trips Pillow's bomb warning, 100000^2 its bomb error; both must become ImageTooLargeError.
    data = _png_with_header_size(side, side)
    with _raises_exactly(ImageTooLargeError, "too large"):
        load_image(data, max_pixels=10**12)
    assert decode_calls == []


def test_decompression_bomb_header_file(tmp_path: Path, decode_calls: list[object]) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header_size(100_000, 100_000))
    with _raises_exactly(ImageTooLargeError, str(path)):
        load_image(path)
    assert decode_calls == []


# --------------------------------------------------------------------------- image_ref


def test_image_ref_format(red_circle: Image.Image) -> None:
    ref = image_ref(load_image(red_circle))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", ref)


def test_image_ref_same_pixels_same_ref(red_circle: Image.Image, red_circle_path: Path) -> None:
    from_pil = image_ref(load_image(red_circle))
    from_png_file = image_ref(load_image(red_circle_path))
    from_png_bytes = image_ref(load_image(red_circle_path.read_bytes()))
    assert from_pil == from_png_file == from_png_bytes
    assert image_ref(load_image(red_circle)) == from_pil  # stable across calls


def test_image_ref_one_pixel_change(red_circle: Image.Image) -> None:
    before = image_ref(load_image(red_circle))
    changed = red_circle.copy()
    changed.putpixel((199, 149), (254, 255, 255))
    assert image_ref(load_image(changed)) != before


def test_image_ref_depends_on_shape() -> None:
    wide = Image.new("RGB", (3, 2), "blue")
    tall = Image.new("RGB", (2, 3), "blue")
    assert wide.tobytes() == tall.tobytes()
    assert image_ref(wide) != image_ref(tall)


# --------------------------------------------------------------------------- stores


def test_image_store_round_trip(red_circle: Image.Image) -> None:
    store = ImageStore()
    image = load_image(red_circle)
    ref = store.add(image)
    assert ref == image_ref(image)
    assert store.get(ref) is image
    assert store.add(load_image(red_circle)) == ref  # equal pictures share one reference


def test_image_store_unknown_ref() -> None:
    store = ImageStore()
    with _raises_exactly(ImageError, "neither in this process's memory nor in its thread stores"):
        store.get("sha256:" + "0" * 64)


def test_image_store_writes_each_thread_stores_images_to_its_folder(red_circle: Image.Image, tmp_path: Path) -> None:
    """An engine with two thread stores: a thread's image goes to its own store's folder (where another process
    continuing that thread looks), and a fresh store finds it in any attached folder; errors name no folder."""
    first, second = tmp_path / "a", tmp_path / "b"
    store = ImageStore(root=first)
    store.attach(second)
    ref = store.add(load_image(red_circle), second)
    assert (second / f"{ref.removeprefix('sha256:')}.png").exists() and not first.exists()
    fresh = ImageStore()
    fresh.attach(first)
    fresh.attach(second)
    assert fresh.get(ref).tobytes() == load_image(red_circle).tobytes()
    with pytest.raises(ImageError) as raised:
        ImageStore(root=first).get(ref)
    assert str(first) not in str(raised.value)


def test_image_store_evicts_beyond_capacity() -> None:
    store = ImageStore(capacity=1)
    first = store.add(Image.new("RGB", (1, 1), "red"))
    second = store.add(Image.new("RGB", (1, 1), "green"))
    assert store.get(second).getpixel((0, 0)) == (0, 128, 0)
    with _raises_exactly(ImageError, first):
        store.get(first)


def test_lru_evicts_least_recently_used() -> None:
    lru = LRUStore(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the most recently used
    lru.put("c", 3)  # evicts "b"
    assert "b" not in lru
    assert "a" in lru and "c" in lru
    assert lru.get("b") is None
    assert lru.get("c") == 3


def test_lru_put_refreshes_existing_key() -> None:
    lru = LRUStore(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.put("a", 10)  # overwrite and refresh "a"
    lru.put("c", 3)  # evicts "b"
    assert lru.get("a") == 10
    assert "b" not in lru


def test_lru_counts_hits_and_misses() -> None:
    lru = LRUStore(2)
    assert (lru.hits, lru.misses) == (0, 0)
    lru.put("a", 1)
    lru.get("a")
    lru.get("a")
    lru.get("zzz")
    assert (lru.hits, lru.misses) == (2, 1)
    assert "a" in lru  # membership is not a lookup
    assert (lru.hits, lru.misses) == (2, 1)


def test_lru_clear() -> None:
    lru = LRUStore(4)
    lru.put("a", 1)
    lru.clear()
    assert "a" not in lru
    assert lru.get("a") is None


def test_feature_cache_is_an_lru_keyed_by_model_and_ref() -> None:
    cache = FeatureCache(capacity=1)
    cache.put(("clip", "sha256:x"), "features")
    assert cache.get(("clip", "sha256:x")) == "features"
    cache.put(("clip", "sha256:y"), "other")
    assert cache.get(("clip", "sha256:x")) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_exif_orientation_applied_to_an_opened_pil_image() -> None:
    opened = Image.open(io.BytesIO(_oriented_jpeg(6)))
    assert load_image(opened).size == (32, 64)


def test_truncated_pil_image_is_an_image_error() -> None:
    data = _encode(Image.new("RGB", (64, 64), (10, 200, 30)), "PNG")
    opened = Image.open(io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(ImageError, match="unreadable, truncated"):
        load_image(opened)


def test_one_parser_for_image_strings(tmp_path: Path) -> None:
    """Every front end parses an image string with media.image_from_string: references, data: URLs, URLs only
    through the caller's fetch, paths only for local callers and only inside their root."""
    import base64
    import io

    import pytest

    from vqagraph.errors import ImageError
    from vqagraph.media import ImageStore, image_from_string

    store = ImageStore()
    picture = Image.new("RGB", (8, 6), "red")
    ref = store.add(picture)
    assert image_from_string(f"  {ref} ", store).size == (8, 6)
    with pytest.raises(ImageError, match="64 lowercase hex"):
        image_from_string("sha256:../../outside/secret", store)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert image_from_string(url, None) == buffer.getvalue() == image_from_string(url, store)
    with pytest.raises(ImageError, match="not fetched here"):
        image_from_string("https://example.com/a.png", store)
    assert image_from_string("https://example.com/a.png", None, fetch=lambda u: b"x" + u.encode()).startswith(b"x")
    with pytest.raises(ImageError, match="must be a data: URL"):
        image_from_string("/etc/passwd", None)  # a remote client never names a file on this machine
    with pytest.raises(ValueError, match="refused"):  # the caller's fetch decides which URLs it may get
        image_from_string("ftp://example.com/a.png", None, fetch=lambda u: (_ for _ in ()).throw(ValueError("refused")))
    inside = tmp_path / "images" / "a.png"
    assert image_from_string(str(inside), store, root=tmp_path / "images") == inside
    with pytest.raises(ImageError, match="outside the folder"):
        image_from_string(str(tmp_path / "images" / ".." / "secret.png"), store, root=tmp_path / "images")
    with pytest.raises(ImageError, match="empty"):
        image_from_string("   ", store)
