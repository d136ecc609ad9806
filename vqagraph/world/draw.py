"""Pixels from a Scene: the rendered picture and each object's visible mask, both pure functions of the scene.

Shapes are anti-aliased (4×4 coverage per pixel) and composited in order over the background, so a pixel the
shape covers fully has exactly the object's RGB; the mask is the pixels it covers at least half of that no later
object covers at least half of.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vqagraph.world.scene import Scene, SceneError, background_pixels, full_mask, object_coverage


def render_scene(scene: Scene) -> Image.Image:
    """The scene's RGB picture; the same scene always gives the same pixels."""
    pixels = background_pixels(scene).copy()
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        alpha = object_coverage(obj)[..., None]
        region = pixels[y0:y1, x0:x1]
        pixels[y0:y1, x0:x1] = region * (1 - alpha) + np.array(obj.rgb, dtype=np.float32) * alpha
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def visible_masks(scene: Scene) -> list[np.ndarray]:
    """Every object's visible pixels (bool, H×W), computed top-down in one pass."""
    covered = np.zeros((scene.height, scene.width), dtype=bool)
    masks: list[np.ndarray] = []
    for obj in reversed(scene.objects):
        mask = full_mask(obj, scene.width, scene.height)
        masks.append(mask & ~covered)
        covered |= mask
    return masks[::-1]


def object_mask(scene: Scene, index: int) -> np.ndarray:
    """Object `index`'s visible pixels (bool, H×W): those it covers at least half of, minus later objects' masks."""
    if not 0 <= index < len(scene.objects):
        raise SceneError(f"scene {scene.id!r} has {len(scene.objects)} object(s); there is no object {index}")
    mask = full_mask(scene.objects[index], scene.width, scene.height)
    for later in scene.objects[index + 1:]:
        mask &= ~full_mask(later, scene.width, scene.height)
    return mask


def object_areas(scene: Scene) -> list[int]:
    """Each object's whole pixel count, occlusion ignored: what "bigger" compares."""
    return [int(full_mask(obj, scene.width, scene.height).sum()) for obj in scene.objects]


def png_bytes(image: Image.Image) -> bytes:
    """PNG bytes with fixed settings and no metadata, so the same picture always gives the same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()
