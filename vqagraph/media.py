"""Safe image intake, content-addressed `ImageRef`s, and the per-process stores keyed by them.

Graph state holds only `ImageRef` strings; the pixels and every feature computed from them live here.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import os
import re
import stat
import threading
import urllib.parse
import warnings
from collections import OrderedDict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, NewType, Protocol

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vqagraph.errors import ImageError, ImageTooLargeError

ImageRef = NewType("ImageRef", str)
"""`sha256:<hex>` of the normalised RGB pixels (mode, size and bytes), so equal pictures share features."""

ImageInput = str | Path | bytes | Image.Image

DEFAULT_MAX_PIXELS = 40_000_000

DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                      re.IGNORECASE)
IMAGE_REF = re.compile(r"^sha256:[0-9a-f]{64}$")


def decode_data_url(url: str) -> bytes:
    """The bytes of a `data:` URL (base64 or percent-encoded)."""
    match = DATA_URL.match(url)
    if not match:
        raise ImageError("malformed data: URL (expected data:image/png;base64,...)")
    payload = url[match.end():]
    if not match.group("b64"):
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("the data: URL's base64 is invalid") from exc


def image_from_string(text: str, store: ImageStore | None, *, root: str | Path | None = None,
                      fetch: Callable[[str], bytes] | None = None) -> ImageInput:
    """The one parser of an image given as a string, for every front end: a `data:` URL, an http(s) URL (only with
    `fetch`, the caller's allow-listed download), and for local callers (a `store` given) a `sha256:` reference to
    an image taken in before (64 hex digits) or a local path (only inside `root` when one is given). Without a
    store (a remote client over HTTP), nothing on this machine is read."""
    text = text.strip()
    if not text:
        raise ImageError("the image is empty: give a path, a data: URL or a sha256: reference")
    if text[:5].lower() == "data:":
        return decode_data_url(text)
    if store is None:  # a remote client: its URL goes to the caller's fetch, which refuses what it may not get
        if fetch is None:
            raise ImageError("the image must be a data: URL here")
        return fetch(text)
    if text.lower().startswith("sha256:"):
        if not IMAGE_REF.match(text):
            raise ImageError("an image reference is `sha256:` and 64 lowercase hex digits")
        return store.get(text)
    if text.lower().startswith(("http://", "https://")):
        if fetch is None:
            raise ImageError("remote image URLs are not fetched here: send a data: URL or a local path")
        return fetch(text)
    if root is None:
        return Path(text).expanduser()
    path = under_root(text, root)
    if path is None:
        raise ImageError("the image is outside the folder this tool may read")
    return path


def under_root(text: str | Path, root: str | Path) -> Path | None:
    """`text` as a path under `root` (a relative one is taken from `root`), or None when it leads elsewhere once
    resolved (symlinks followed, `..` gone) or is no valid path at all."""
    try:
        folder = Path(root).expanduser().resolve()
        path = Path(text).expanduser()
        path = path if path.is_absolute() else folder / path
        return path if path.resolve().is_relative_to(folder) else None
    except (OSError, ValueError, RuntimeError):  # a NUL or an unencodable character; a symlink loop
        return None


class NotRegularFileError(OSError):
    """A path names a FIFO, a device or a folder, which could block a reader or never end."""


def open_regular(path: str | Path) -> IO[bytes]:
    """A regular file opened for reading, never waited on: O_NONBLOCK makes opening a FIFO (or a file swapped for
    one after the caller's check) return at once, and fstat says what it is. Raises NotRegularFileError for
    anything but a regular file, OSError when it cannot be opened, ValueError for a NUL in the path."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    file = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        file.close()
        raise NotRegularFileError(errno.EINVAL, "not a regular file")
    return file


def load_image(source: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a path, bytes or PIL image into a validated RGB image, with its EXIF orientation applied."""
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, "image")
        try:
            source.load()
            image = ImageOps.exif_transpose(source) or source
            return _to_rgb(image)
        except (OSError, ValueError) as exc:
            raise ImageError(f"image: unreadable, truncated or in an unsupported mode ({exc})") from exc
    name = "image bytes" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError("image bytes are empty")
        stream: Any = io.BytesIO(source)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ImageError(f"image file not found: {path}")
        if not path.is_file():  # a directory, FIFO or device
            raise ImageError(f"image file not found: {path} (not a regular file)")
        if path.stat().st_size == 0:
            raise ImageError(f"image file is empty: {path}")
        stream = None
    # ImageFile.LOAD_TRUNCATED_IMAGES stays False: a truncated file is an error, not a half-grey picture.
    with ExitStack() as files, warnings.catch_warnings():
        if stream is None:
            try:
                stream = files.enter_context(open_regular(path))
            except NotRegularFileError as exc:
                raise ImageError(f"not a regular file: {path}") from exc
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise ImageError(f"image file cannot be opened: {path} ({reason})") from exc
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(stream) as opened:
                _check_size(opened.size, max_pixels, name)
                opened.load()
                image = ImageOps.exif_transpose(opened) or opened
                image.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            # Pillow's own guard fired before ours could read the size: say the size and our limit, not Pillow's.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow will decode"
            raise ImageTooLargeError(f"{name}: image is too large: {pixels}, over the limit of {max_pixels:,}") from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{name}: not an image, or a format Pillow cannot read") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name}: unreadable or truncated image ({exc})") from exc
    try:
        return _to_rgb(image)
    except ValueError as exc:
        raise ImageError(f"{name}: image mode {image.mode} cannot be converted to RGB ({exc})") from exc


def _check_size(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image has {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGBA/LA/P-with-transparency go onto white; 16-bit and float images are rescaled, not clipped."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype("uint8"), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "CMYK":
        return image.convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


LETTERBOX_FILL = (127, 127, 127)  # mid-grey: EfficientNet-Lite's (x - 127) / 128 makes it ~0, like its own padding


def letterbox(image: Image.Image, fill: tuple[int, int, int] = LETTERBOX_FILL) -> Image.Image:
    """The image centred on a square of side max(W, H): a square model input that keeps shapes' proportions (a
    circle stretched to a square input is an ellipse; the Shapes world asks which)."""
    side = max(image.size)
    if image.width == image.height:
        return image
    square = Image.new(image.mode, (side, side), fill if image.mode == "RGB" else 0)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def letterbox_box(size: tuple[int, int], box: tuple[int, int, int, int]) -> tuple[tuple[int, int],
                                                                                     tuple[int, int, int, int]]:
    """(square size, the box in the letterboxed square's pixels): where `letterbox` puts an image's box."""
    width, height = size
    side = max(width, height)
    dx, dy = (side - width) // 2, (side - height) // 2
    x0, y0, x1, y1 = box
    return (side, side), (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


def image_ref(image: Image.Image) -> ImageRef:
    """Content hash of an RGB image: the same pixels always give the same reference."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return ImageRef("sha256:" + digest.hexdigest())


class LRUStore:
    """A small thread-safe LRU map; the image store and the feature cache are two of these."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> Any | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class ImageShelf(Protocol):
    """Where images outlive this process, by reference, as PNG bytes: a folder, or a database every replica reads
    (a Postgres thread store's). Writing a reference already there is a no-op."""

    def has(self, ref: str) -> bool: ...

    def read(self, ref: str) -> bytes | None: ...

    def write(self, ref: str, png: bytes) -> None: ...


class FolderShelf:
    """Images as `<sha256>.png` files in one folder (content-addressed, lossless; written atomically)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FolderShelf) and other.folder == self.folder

    def __hash__(self) -> int:
        return hash(self.folder)

    def path(self, ref: str) -> Path:
        return self.folder / f"{ref.removeprefix('sha256:')}.png"

    def has(self, ref: str) -> bool:
        return self.path(ref).exists()

    def read(self, ref: str) -> bytes | None:
        try:
            return self.path(ref).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, ref: str, png: bytes) -> None:
        path = self.path(ref)
        if path.exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(png)
        partial.replace(path)  # atomic: another process never reads half a file


def shelf_of(place: ImageShelf | str | Path) -> ImageShelf:
    """A folder path as a shelf; a shelf as itself."""
    return FolderShelf(place) if isinstance(place, str | Path) else place


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class ImageStore:
    """Images by reference, so graph nodes receive an `ImageRef` and fetch pixels here.

    With shelves attached (each thread store's: a folder beside a SQLite file, or a Postgres table), a thread's
    image is also written to its store's shelf, so a conversation continued by another process (or replica) finds
    its images; checkpoints only ever hold the reference. `get` looks in memory, then on every attached shelf."""

    def __init__(self, capacity: int = 256, root: str | Path | None = None) -> None:
        self._store = LRUStore(capacity)
        self.shelves: list[ImageShelf] = []
        if root is not None:
            self.attach(root)

    def attach(self, place: ImageShelf | str | Path) -> None:
        """Also keep (and look for) images on `place`: a thread store's shelf, or a folder."""
        shelf = shelf_of(place)
        if shelf not in self.shelves:
            self.shelves.append(shelf)

    def add(self, image: Image.Image, place: ImageShelf | str | Path | None = None) -> ImageRef:
        """Keep the image; write it to `place` (default: the first attached shelf) unless it is there already."""
        ref = image_ref(image)
        self._store.put(ref, image)
        self.copy_to(ref, place, image)
        return ref

    def copy_to(self, ref: str, place: ImageShelf | str | Path | None = None, image: Image.Image | None = None,
                ) -> None:
        """Write an image this store holds to `place` (default: the first attached shelf) unless it is there
        already: no re-hashing, and PNG-encoded only when missing."""
        target = shelf_of(place) if place is not None else (self.shelves[0] if self.shelves else None)
        if target is not None and not target.has(ref):
            target.write(ref, png_bytes(image if image is not None else self.get(ref)))

    def get(self, ref: str) -> Image.Image:
        if not isinstance(ref, str) or not IMAGE_REF.match(ref):  # also keeps a reference from naming a file path
            raise ImageError("an image reference is `sha256:` and 64 lowercase hex digits")
        image = self._store.get(ref)
        for shelf in self.shelves if image is None else []:
            data = shelf.read(ref)
            if data is not None:
                with Image.open(io.BytesIO(data)) as stored:
                    image = stored.convert("RGB")
                self._store.put(ref, image)
                break
        if image is None:  # the message names no folder: a remote client may read it
            raise ImageError(f"image {ref} is neither in this process's memory nor in its thread stores; "
                             "take it in again")
        return image  # type: ignore[no-any-return]


class FeatureCache(LRUStore):
    """Vision features keyed by `(model key, ImageRef)`: an image is encoded once per model and process."""

    def __init__(self, capacity: int = 64) -> None:
        super().__init__(capacity)

    def get_or_compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        """The value kept under `key`, computed and kept on a miss (what an image gives whatever the question)."""
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value


ImageFile.LOAD_TRUNCATED_IMAGES = False
