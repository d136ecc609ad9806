"""Training data from the Shapes world: rendered scenes, per-patch coverage, texts, patch samples, negatives.

Everything is drawn from one seed. A scene is rendered once; its horizontal/vertical mirror images are free
extra scenes (the pixels and the patch-coverage grid are flipped, the scene's boxes mirrored, and its captions
and questions re-derived from the mirrored scene by the world's own functions).

Patch samples follow what the engine does (tools/region_captioner.py): K' patch ids drawn without replacement
from a distribution over the patch grid, sorted, then gathered from the vision encoder's output (+1: index 0
is the CLS token). An object's distribution is its cell coverage plus a spill onto neighbouring cells and a
small floor, as a smooth GradCAM map looks; the scene's is uniform or spread over all objects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from vqagraph.prompt_templates import IMG2LLM_CAPTION_PROMPT

# The frozen image encoder's input side and the stride of the stage read (EfficientNet-Lite0 stage 4, stride 16):
# a 14×14 grid at 224 px, room for K'=20 samples. Chosen by the linear probe in docs/methods.md §6.1.
IMAGE_SIZE = 224
PATCH_SIZE = 16
GRID = IMAGE_SIZE // PATCH_SIZE
NUM_PATCHES = GRID * GRID
K_PATCHES = 20  # K' of Img2LLM (docs/methods.md §1.2); the engine's `num_patches`
CAPTION_PROMPT = IMG2LLM_CAPTION_PROMPT  # Img2LLMSettings.caption_prompt's default (§1.2)
# Question families whose questions train the models; `knowledge` never does (the issue), and `marked` needs
# marks drawn on the picture, which the region captioner never sees (it gets the rendered image and a region).
TRAIN_FAMILIES = ("colour", "shape", "count", "exists", "position", "size")
FLIPS = (0, 1, 2, 3)  # none, horizontal, vertical, both


def world() -> Any:
    """The Shapes world's public API (imported late: it imports PIL drawing code and pydantic models)."""
    import vqagraph.world as w

    return w


def shapes_and_colours() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    from vqagraph.world.scene import COLOURS, SHAPES, SIZE_WORDS

    return tuple(SHAPES), tuple(COLOURS), tuple(SIZE_WORDS)


def _masks(scene: Any) -> list[np.ndarray]:
    try:
        from vqagraph.world.draw import visible_masks

        return list(visible_masks(scene))
    except ImportError:  # pragma: no cover - the public API only
        return [world().object_mask(scene, i) for i in range(len(scene.objects))]


@dataclass
class Rendered:
    """One scene as the models see it: resized pixels and each object's share of each patch cell."""

    scene: Any
    pixels: np.ndarray  # uint8 (S, S, 3): the picture resized as BlipImageProcessor resizes it
    coverage: np.ndarray  # float32 (objects, GRID, GRID): visible fraction of each cell per object
    areas: list[int]  # each object's whole pixel count, occlusion ignored (what "bigger" compares)


def render(scene: Any) -> Rendered:
    """The picture as the frozen encoder sees it (letterboxed, then resized: media.letterbox), and each object's
    share of each grid cell in the same frame."""
    from vqagraph.media import letterbox

    image = letterbox(world().render_scene(scene).convert("RGB"))
    pixels = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC), dtype=np.uint8)
    cover = []
    for mask in _masks(scene):
        square = letterbox(Image.fromarray(mask.astype(np.uint8) * 255))
        cell = square.resize((GRID, GRID), Image.Resampling.BOX)
        cover.append(np.asarray(cell, dtype=np.float32) / 255.0)
    coverage = np.stack(cover) if cover else np.zeros((0, GRID, GRID), np.float32)
    from vqagraph.world.draw import object_areas

    return Rendered(scene=scene, pixels=pixels, coverage=coverage, areas=object_areas(scene))


def _make(job: tuple[int, int, tuple[int, ...]]) -> tuple[Rendered, dict[int, Texts]]:
    seed, text_seed, flips = job
    rendered = render(world().generate_scene(seed))
    texts = {f: texts_for(flip_scene(rendered.scene, f), seed=text_seed + f, areas=rendered.areas) for f in flips}
    return rendered, texts


def make_corpus(seeds: Sequence[int], seed: int, flips: tuple[int, ...] = FLIPS, workers: int = 1,
                progress: Any = None) -> Corpus:
    """Generate and render scenes and their texts under every flip (in `workers` processes when > 1); the
    result depends on the seeds only."""
    jobs = [(int(s), seed * 1_000_003 + k * 8, flips) for k, s in enumerate(seeds)]
    made: list[tuple[Rendered, dict[int, Texts]]] = []
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as pool:
            for item in pool.map(_make, jobs, chunksize=16):
                made.append(item)
                if progress is not None:
                    progress.update(1)
    else:
        for job in jobs:
            made.append(_make(job))
            if progress is not None:
                progress.update(1)
    corpus = Corpus([r for r, _ in made], seed=seed, flips=flips)
    for base, (_, texts) in enumerate(made):
        for f, t in texts.items():
            corpus.texts[(base, f)] = t
    return corpus


def flip_scene(scene: Any, flip: int) -> Any:
    """The mirror image's scene: boxes mirrored (x for 1, y for 2, both for 3), rotations mirrored too."""
    if flip == 0:
        return scene
    objects = []
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        rotation = obj.rotation
        if flip & 1:
            x0, x1 = scene.width - x1, scene.width - x0
            rotation = -rotation
        if flip & 2:
            y0, y1 = scene.height - y1, scene.height - y0
            rotation = 180.0 - rotation
        objects.append(obj.model_copy(update={"box": (x0, y0, x1, y1), "rotation": float(rotation % 360)}))
    return scene.model_copy(update={"objects": objects, "id": f"{scene.id}-flip{flip}"})


def flip_array(a: np.ndarray, flip: int, axes: tuple[int, int]) -> np.ndarray:
    if flip & 1:
        a = np.flip(a, axis=axes[1])
    if flip & 2:
        a = np.flip(a, axis=axes[0])
    return np.ascontiguousarray(a)


# --- texts -----------------------------------------------------------------------------------------------


@dataclass
class Texts:
    """The world's texts about one (possibly mirrored) scene."""

    scene: Any
    region: list[list[str]]  # per object: its region-caption variants
    captions: list[str]  # whole-scene captions
    questions: list[Any]  # WorldQuestion, training families only

    @cached_property
    def all_region(self) -> set[str]:
        return {c for variants in self.region for c in variants}


def texts_for(scene: Any, seed: int, areas: list[int] | None = None, per_family: int = 3) -> Texts:
    """Every region-caption phrasing per object, the scene captions, and questions of the training families
    (`areas`, each object's whole pixel count, is the same for a scene and its mirror images: pass it once)."""
    w = world()
    rng = np.random.default_rng([seed, 11])
    region = []
    for i in range(len(scene.objects)):
        found = [_clean(w.region_caption(scene, i))]
        for _ in range(12):  # the phrasings are drawn at random: a dozen draws find (nearly) all of them
            text = _clean(w.region_caption(scene, i, rng=rng))
            if text not in found:
                found.append(text)
        region.append(found)
    captions = list(dict.fromkeys(_clean(c) for c in w.scene_captions(scene)))
    questions = w.generate_questions(scene, rng, per_family=per_family, families=TRAIN_FAMILIES,
                                     masks=[], areas=areas)  # masks only serve the `marked` family
    questions = [q for q in questions if q.family in TRAIN_FAMILIES and not q.marks]
    return Texts(scene=scene, region=region, captions=captions, questions=questions)


def _clean(text: str) -> str:
    return " ".join(text.split()).strip().rstrip(".").strip()


@dataclass
class Example:
    """One training picture: a rendered scene under one flip, its pixels, coverage and texts."""

    pixels: np.ndarray  # uint8 (S, S, 3)
    coverage: np.ndarray  # float32 (objects, NUM_PATCHES)
    texts: Texts
    memo: dict[str, Any] = field(default_factory=dict)  # derived targets, computed once by the trainers

    @property
    def scene(self) -> Any:
        return self.texts.scene


@dataclass
class Corpus:
    """Rendered scenes and the texts of each flip, built on demand and kept."""

    rendered: list[Rendered]
    seed: int
    flips: tuple[int, ...] = FLIPS
    texts: dict[tuple[int, int], Texts] = field(default_factory=dict)
    _cache: dict[tuple[int, int], Example] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rendered) * len(self.flips)

    def example(self, index: int) -> Example:
        base, f = divmod(index, len(self.flips))
        flip = self.flips[f]
        key = (base, flip)
        if key not in self._cache:
            r = self.rendered[base]
            scene = flip_scene(r.scene, flip)
            pixels = flip_array(r.pixels, flip, (0, 1))
            coverage = flip_array(r.coverage, flip, (1, 2)).reshape(len(r.coverage), NUM_PATCHES)
            texts = self.texts.get(key)
            if texts is None:
                texts = texts_for(scene, seed=self.seed * 1_000_003 + base * 8 + flip, areas=r.areas)
                self.texts[key] = texts
            self._cache[key] = Example(pixels=pixels, coverage=coverage, texts=texts)
        return self._cache[key]


@dataclass
class TextCorpus:
    """Texts only (no pixels): what the question generator trains on, cheap to send to another process."""

    items: list[Texts]
    _cache: dict[int, Example] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int) -> Example:
        if index not in self._cache:
            empty = np.zeros((0, NUM_PATCHES), np.float32)
            self._cache[index] = Example(pixels=np.zeros((0, 0, 3), np.uint8), coverage=empty, texts=self.items[index])
        return self._cache[index]


def text_corpus(corpus: Corpus) -> TextCorpus:
    items = []
    for index in range(len(corpus)):
        base, f = divmod(index, len(corpus.flips))
        texts = corpus.texts.get((base, corpus.flips[f]))
        items.append(texts if texts is not None else corpus.example(index).texts)
    return TextCorpus(items)


# --- pixels and patch labels ---------------------------------------------------------------------------------

def encoder_settings() -> Any:
    """The frozen encoder every Shapes-world model is trained on (the `shapes` profile's `image_encoder`)."""
    from vqagraph.config import load_profile

    settings = load_profile("shapes").image_encoder
    assert settings is not None and settings.image_size == IMAGE_SIZE and settings.resize == "letterbox"
    return settings


_TOOLS: list[Any] = []


def frozen_encoder() -> Any:
    """The `shapes` profile's frozen encoder as the engine builds it (Toolkit.image_encoder), on the CPU, loaded
    once per process; never trained."""
    if not _TOOLS:
        from vqagraph.config import load_profile
        from vqagraph.toolkit import Toolkit

        encoder_settings()  # the trainers' assumptions about it hold
        _TOOLS.append(Toolkit(load_profile("shapes", device="cpu")))
    return _TOOLS[0].image_encoder


def encoder_notes() -> dict[str, Any]:
    """What `training.json` records of the frozen encoder a model was trained on."""
    return {**encoder_settings().model_dump(mode="json"), "frozen": True, "grid": [GRID, GRID],
            "channels": frozen_encoder().channels}


def cache_grids(corpus: Corpus, rows: Sequence[int], progress: Any = None, chunk: int = 64) -> None:
    """Compute the frozen grids of `corpus.example(rows)` once and keep them on disk too (float16, under
    vqagraph's cache, keyed by the scenes, flips and encoder settings), so a rerun or a resumed run of either
    trainer does not run the encoder again."""
    import hashlib
    import json

    import torch

    from vqagraph import hub

    settings = encoder_settings().model_dump(mode="json")
    ids = [[corpus.rendered[r // len(corpus.flips)].scene.id, corpus.flips[r % len(corpus.flips)]] for r in rows]
    key = hashlib.sha256(json.dumps([settings, ids]).encode()).hexdigest()[:20]
    path = hub.cache_root() / "training-grids" / f"{key}.pt"
    examples = [corpus.example(r) for r in rows]
    if path.exists():
        grids = torch.load(path, weights_only=True)
        if grids.shape[0] == len(examples):
            for e, g in zip(examples, grids, strict=True):
                e.memo["grid"] = g.float()
            if progress is not None:
                progress.update(len(examples))
            return
    for start in range(0, len(examples), chunk):
        grid_batch(examples[start : start + chunk])
        if progress is not None:
            progress.update(len(examples[start : start + chunk]))
    grids = torch.stack([e.memo["grid"] for e in examples]).half()
    for e, g in zip(examples, grids, strict=True):  # train on what a resumed run reads back
        e.memo["grid"] = g.float()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(grids, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)


def grid_batch(examples: Sequence[Example], chunk: int = 32) -> Any:
    """The frozen encoder's grids `(B, C, GRID, GRID)` of these pictures, each computed once and kept on the
    example (the trainers train only what sits on top: BLIP-2 §3)."""
    import torch

    todo = [e for e in examples if "grid" not in e.memo]
    if todo:
        encoder = frozen_encoder()
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            # the pixels are already letterboxed and resized (`render`): the encoder's preprocessing only scales them
            grids = encoder.encode_pixels(encoder.pixels([Image.fromarray(e.pixels) for e in part]))
            for e, g in zip(part, grids, strict=True):
                e.memo["grid"] = g.clone()
    return torch.stack([e.memo["grid"] for e in examples])


def patch_owner(coverage: np.ndarray) -> np.ndarray:
    """Per patch: the object that owns it, -1 for background, -2 when mixed (ignored by the patch losses)."""
    if len(coverage) == 0:
        return np.full(NUM_PATCHES, -1, dtype=np.int64)
    best = coverage.argmax(axis=0)
    top = coverage.max(axis=0)
    total = coverage.sum(axis=0)
    owner = np.where((top >= 0.12) & (top >= 0.6 * total), best, -2)
    return np.where(total < 0.02, -1, owner).astype(np.int64)


# --- patch sampling ------------------------------------------------------------------------------------------


def _dilate(grid: np.ndarray) -> np.ndarray:
    p = np.pad(grid, 1)
    out = np.zeros_like(grid)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= p[dy : dy + GRID, dx : dx + GRID]
    return out


def focus_weights(coverage: np.ndarray, rng: np.random.Generator | None, spill: float = 0.3,
                  floor: float = 1e-3) -> np.ndarray:
    """A GradCAM-like map over the patches for a focus (the coverage of one or more objects, (NUM_PATCHES,)):
    the coverage itself, `spill` on the ring of cells around it (a third of that on the next ring), a floor."""
    if rng is not None:
        spill = float(rng.uniform(0.02, 0.5))
        floor = float(10 ** rng.uniform(-4.5, -1.7))
    g = coverage.reshape(GRID, GRID)
    peak = float(g.max())
    if peak <= 0:
        return np.full(NUM_PATCHES, 1.0 / NUM_PATCHES)
    support = g > 0.02
    ring1 = _dilate(support) & ~support
    ring2 = _dilate(_dilate(support)) & ~support & ~ring1
    w = g / peak + spill * ring1 + spill / 3 * ring2 + floor
    return (w / w.sum()).reshape(NUM_PATCHES)


def sample_patches(weights: np.ndarray, rng: np.random.Generator, k: int = K_PATCHES) -> np.ndarray:
    """k distinct patch ids (0-based, sorted) drawn as torch.multinomial without replacement draws them."""
    k = min(k, int((weights > 0).sum()))
    return np.sort(rng.choice(NUM_PATCHES, size=k, replace=False, p=weights / weights.sum()))


def scene_weights(example: Example, rng: np.random.Generator) -> np.ndarray:
    """Spread samples for whole-scene captions: uniform, or over all objects with spill."""
    if rng.random() < 0.5 or len(example.coverage) == 0:
        return np.full(NUM_PATCHES, 1.0 / NUM_PATCHES)
    per_object = example.coverage / np.maximum(example.coverage.sum(axis=1, keepdims=True), 1e-6)
    return focus_weights(per_object.sum(axis=0), rng)


def attention_target(example: Example, objects: Sequence[int], ring: float = 0.3) -> np.ndarray | None:
    """Where a text about `objects` should look: their coverage (each object equally) plus a ring around."""
    objects = [i for i in objects if 0 <= i < len(example.coverage)]
    if not objects:
        return None
    cov = example.coverage[objects]
    cov = cov / np.maximum(cov.sum(axis=1, keepdims=True), 1e-6)
    g = cov.sum(axis=0).reshape(GRID, GRID)
    if g.max() <= 0:
        return None
    support = g > 0
    w = g / g.max() + ring * (_dilate(support) & ~support)
    return (w / w.sum()).reshape(NUM_PATCHES).astype(np.float32)


# --- hard negatives ------------------------------------------------------------------------------------------

_POSITION_BOXES = ((0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (0.0, 0.5), (0.5, 0.5), (1.0, 0.5), (0.0, 1.0), (0.5, 1.0),
                   (1.0, 1.0))


def _moved(scene: Any, i: int, rng: np.random.Generator) -> Any:
    obj = scene.objects[i]
    x0, y0, x1, y1 = obj.box
    bw, bh = x1 - x0, y1 - y0
    fx, fy = _POSITION_BOXES[int(rng.integers(len(_POSITION_BOXES)))]
    nx0 = round(fx * (scene.width - bw))
    ny0 = round(fy * (scene.height - bh))
    return obj.model_copy(update={"box": (nx0, ny0, nx0 + bw, ny0 + bh)})


def perturbed_object_scene(scene: Any, i: int, rng: np.random.Generator) -> tuple[Any, str]:
    """The scene with object i changed in one way (colour, shape, size word or place)."""
    shapes, colours, sizes = shapes_and_colours()
    obj = scene.objects[i]
    kind = str(rng.choice(["colour", "colour", "shape", "shape", "size", "place"]))
    if kind == "colour":
        new = obj.model_copy(update={"colour": str(rng.choice([c for c in colours if c != obj.colour]))})
    elif kind == "shape":
        new = obj.model_copy(update={"shape": str(rng.choice([s for s in shapes if s != obj.shape]))})
    elif kind == "size":
        new = obj.model_copy(update={"size_word": str(rng.choice([s for s in sizes if s != obj.size_word]))})
    else:
        new = _moved(scene, i, rng)
    objects = list(scene.objects)
    objects[i] = new
    return scene.model_copy(update={"objects": objects}), kind


def region_negative(texts: Texts, i: int, rng: np.random.Generator, tries: int = 4) -> str | None:
    """A caption that is false of object i and of every other object: i with one attribute changed."""
    w = world()
    for _ in range(tries):
        changed, _kind = perturbed_object_scene(texts.scene, i, rng)
        try:
            text = _clean(w.region_caption(changed, i, rng=rng))
        except Exception:
            continue
        if text not in texts.all_region:
            return text
    return None


def scene_negative(texts: Texts, rng: np.random.Generator, tries: int = 4) -> str | None:
    """A whole-scene caption that is false: one object changed, removed or duplicated elsewhere."""
    w = world()
    scene = texts.scene
    truth = set(texts.captions)
    for _ in range(tries):
        n = len(scene.objects)
        choice = rng.random()
        if choice < 0.25 and n > 1:
            drop = int(rng.integers(n))
            changed = scene.model_copy(update={"objects": [o for j, o in enumerate(scene.objects) if j != drop]})
        elif choice < 0.5 and n < 6:
            j = int(rng.integers(n))
            changed = scene.model_copy(update={"objects": [*scene.objects, _moved(scene, j, rng)]})
        else:
            changed, _ = perturbed_object_scene(scene, int(rng.integers(n)), rng)
        try:
            options = [_clean(c) for c in w.scene_captions(changed)]
        except Exception:
            continue
        options = [c for c in options if c not in truth]
        if options:
            return str(options[int(rng.integers(len(options)))])
    return None


_PLURAL = re.compile(r"(es|s)$")


def question_refs(question: str) -> tuple[set[str], set[str]]:
    """The colour and shape words a question names (plurals folded)."""
    shapes, colours, _ = shapes_and_colours()
    words = re.findall(r"[a-z]+", question.lower())
    found_c = {w for w in words if w in colours} | {"gray" for w in words if w == "grey"}
    found_s = set()
    for w in words:
        for cand in (w, _PLURAL.sub("", w), w[:-1]):
            if cand in shapes:
                found_s.add(cand)
    return found_c, found_s


def question_matches(question: str, scene: Any) -> bool | None:
    """Whether the scene has what a question presupposes (an object of the colour and shape it names);
    None when it names neither."""
    cs, ss = question_refs(question)
    if not cs and not ss:
        return None
    return any((not cs or o.colour in cs) and (not ss or o.shape in ss) for o in scene.objects)


def batch_indices(n: int, batch: int, rng: np.random.Generator) -> list[int]:
    return [int(i) for i in rng.integers(0, n, size=batch)]
