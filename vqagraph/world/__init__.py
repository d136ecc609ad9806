"""The Shapes world: seeded scenes of coloured shapes with exact ground truth, their pictures, captions and
unambiguous questions — training data for the offline `shapes` profile's models and a test set whose answers
are certain. `foreign` draws the same kinds of scenes with independent code, to catch generator quirks."""

from vqagraph.world.captions import region_caption, scene_captions
from vqagraph.world.dataset import Example, iter_examples, write_dataset
from vqagraph.world.draw import object_mask, png_bytes, render_scene, visible_masks
from vqagraph.world.foreign import foreign_example, foreign_examples, write_foreign_dataset
from vqagraph.world.questions import FAMILIES, WorldQuestion, generate_questions
from vqagraph.world.scene import (
    COLOURS,
    SHAPES,
    SIZE_WORDS,
    Background,
    Scene,
    SceneError,
    WorldObject,
    generate_scene,
    load_scene,
)

__all__ = [
    "COLOURS", "FAMILIES", "SHAPES", "SIZE_WORDS", "Background", "Example", "Scene", "SceneError", "WorldObject",
    "WorldQuestion", "foreign_example", "foreign_examples", "generate_questions", "generate_scene", "iter_examples",
    "load_scene", "object_mask", "png_bytes", "region_caption", "render_scene", "scene_captions", "visible_masks",
    "write_dataset", "write_foreign_dataset",
]
