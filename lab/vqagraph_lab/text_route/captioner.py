"""The BLIP captioner: its vision side (the frozen pretrained encoder's grid through a trained adapter, shared with
the ITM model and the Q-Formers) and its patch-conditioned text decoder.

Stage 1 trains the adapter (and, with `subsets` > 0, the decoder with it). The decoder reads exactly
what the engine gives it
(tools/region_captioner.py): K'=20 patch embeddings gathered from the vision encoder's `last_hidden_state`
(CLS skipped, ids sorted) after the prompt "[DEC] a picture of". Samples concentrated on one object are
captioned with that object's region caption, samples spread over a group of alike objects with the group's
listing, and uniform or all-object samples with a whole-scene caption. Small heads on every patch token (its
object's colour, shape, size word and centre, how much of the cell objects fill, the background, the scene's
counts) and on each object's pooled tokens (colour, shape, size; pooled over its cells and over its box's cells)
teach the adapter what each patch shows; they are thrown away afterwards. The frozen encoder is never trained.

Stage 2 freezes the adapter, caches its features and keeps training the decoder alone, cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqagraph_lab.text_route import data as D

PROMPT = D.CAPTION_PROMPT
COUNT_DIM = 1 + 8 + 11  # objects; per shape; per colour
BACKGROUNDS = ("plain", "gradient", "noisy")


def strip_prompt(text: str) -> str:
    prefix = PROMPT.strip()
    return text[len(prefix):].strip() if text.startswith(prefix + " ") else text


# --- per-patch targets -------------------------------------------------------------------------------------


@dataclass
class PatchTargets:
    colour: np.ndarray  # (P,) int: colour index, len(COLOURS) = background, -100 = ignore
    shape: np.ndarray
    size: np.ndarray
    centre: np.ndarray  # (P, 2) float: the owner's box centre as fractions of the image
    owned: np.ndarray  # (P,) bool: patches with an owner
    counts: np.ndarray  # (COUNT_DIM,) float: scene counts / 6
    background: int  # the background's kind
    pool: np.ndarray  # (objects, P) float: each object's cell coverage, normalised (what the object heads pool)
    box_pool: np.ndarray  # (objects, P) float: uniform over the cells the object's box overlaps
    fill: np.ndarray  # (P,) float: the share of each cell that objects cover
    shape_weight: np.ndarray  # (P,) float: per-patch shape loss weight (outline cells 1, flat insides 0.3)
    labels: np.ndarray  # (objects, 3) int: colour, shape, size-word index of each object


def patch_targets(example: D.Example) -> PatchTargets:
    if "patch_targets" in example.memo:
        return example.memo["patch_targets"]
    shapes, colours, sizes = D.shapes_and_colours()
    owner = D.patch_owner(example.coverage)
    scene = example.scene
    n = D.NUM_PATCHES
    colour = np.full(n, -100, np.int64)
    shape = np.full(n, -100, np.int64)
    size = np.full(n, -100, np.int64)
    centre = np.zeros((n, 2), np.float32)
    bg = owner == -1
    colour[bg], shape[bg], size[bg] = len(colours), len(shapes), len(sizes)
    for i, obj in enumerate(scene.objects):
        mine = owner == i
        colour[mine], shape[mine], size[mine] = colours.index(obj.colour), shapes.index(obj.shape), \
            sizes.index(obj.size_word)
        x0, y0, x1, y1 = obj.box
        centre[mine] = ((x0 + x1) / 2 / scene.width, (y0 + y1) / 2 / scene.height)
    counts = np.zeros(COUNT_DIM, np.float32)
    counts[0] = len(scene.objects)
    for obj in scene.objects:
        counts[1 + shapes.index(obj.shape)] += 1
        counts[1 + len(shapes) + colours.index(obj.colour)] += 1
    kind = BACKGROUNDS.index(scene.background.kind) if scene.background.kind in BACKGROUNDS else 0
    from vqagraph.tools.region_captioner import region_patches

    cov = np.where(example.coverage >= 0.05, example.coverage, 0.0)
    keep = cov.sum(axis=1) > 0
    pool = (cov[keep] / cov[keep].sum(axis=1, keepdims=True)).astype(np.float32)
    boxes = np.stack([region_patches((D.GRID, D.GRID), (scene.width, scene.height), o.box, True).numpy()
                      for o, k in zip(scene.objects, keep, strict=True) if k]).astype(np.float32) \
        if keep.any() else np.zeros((0, n), np.float32)
    box_pool = boxes / np.maximum(boxes.sum(axis=1, keepdims=True), 1.0)
    labels = np.array([[colours.index(o.colour), shapes.index(o.shape), sizes.index(o.size_word)]
                       for o, k in zip(scene.objects, keep, strict=True) if k], dtype=np.int64).reshape(-1, 3)
    total = example.coverage.sum(axis=0) if len(example.coverage) else np.zeros(n, np.float32)
    fill = np.clip(total, 0, 1).astype(np.float32)
    shape_weight = np.where(fill > 0.97, 0.3, 1.0).astype(np.float32)
    out = PatchTargets(colour=colour, shape=shape, size=size, centre=centre, owned=owner >= 0, counts=counts / 6.0,
                       background=kind, pool=pool, box_pool=box_pool, fill=fill, shape_weight=shape_weight,
                       labels=labels)
    example.memo["patch_targets"] = out
    return out


class PatchHeads(nn.Module):
    """Linear probes on patch tokens, per patch and per object (tokens pooled over the object's cells): the
    auxiliary losses of stage 1 (never saved). Shape is an object's property, not a patch's: an inside patch
    is flat colour, so the object head makes the encoder spread the outline's evidence over the object."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        shapes, colours, sizes = D.shapes_and_colours()
        self.sizes = (len(colours) + 1, len(shapes) + 1, len(sizes) + 1, 2, COUNT_DIM, len(BACKGROUNDS), 1)
        self.proj = nn.Linear(dim, sum(self.sizes))
        self.object_sizes = (len(colours), len(shapes), len(sizes))
        # pooled over the object's cells and over its box's cells (a triangle or star leaves much of its box
        # empty, a square none): both views go to the object head
        self.object = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, sum(self.object_sizes)))
        self.stats: dict[str, float] = {}

    def object_loss(self, tokens: torch.Tensor, targets: Sequence[PatchTargets]) -> torch.Tensor:
        pooled = torch.cat([torch.cat([torch.from_numpy(t.pool) @ tokens[b], torch.from_numpy(t.box_pool) @ tokens[b]],
                                      dim=-1) for b, t in enumerate(targets)])  # (objects, 2 * dim)
        labels = torch.from_numpy(np.concatenate([t.labels for t in targets]))
        if len(labels) == 0:
            return tokens.sum() * 0
        c, s, z = self.object(pooled).split(self.object_sizes, dim=-1)
        with torch.no_grad():
            self.stats = {"object_colour_acc": float((c.argmax(-1) == labels[:, 0]).float().mean()),
                          "object_shape_acc": float((s.argmax(-1) == labels[:, 1]).float().mean()),
                          "object_size_acc": float((z.argmax(-1) == labels[:, 2]).float().mean())}
        return (F.cross_entropy(c, labels[:, 0]) + 2.0 * F.cross_entropy(s, labels[:, 1])
                + F.cross_entropy(z, labels[:, 2]))

    def loss(self, tokens: torch.Tensor, targets: Sequence[PatchTargets]) -> torch.Tensor:
        return self.patch_loss(tokens, targets) + self.object_loss(tokens, targets)

    def patch_loss(self, tokens: torch.Tensor, targets: Sequence[PatchTargets]) -> torch.Tensor:
        out = self.proj(tokens)  # (B, P, sum)
        c, s, z, xy, cnt, bg, fill = out.split(self.sizes, dim=-1)
        tc = torch.from_numpy(np.stack([t.colour for t in targets]))
        ts = torch.from_numpy(np.stack([t.shape for t in targets]))
        tz = torch.from_numpy(np.stack([t.size for t in targets]))
        txy = torch.from_numpy(np.stack([t.centre for t in targets]))
        owned = torch.from_numpy(np.stack([t.owned for t in targets])).float()
        tcnt = torch.from_numpy(np.stack([t.counts for t in targets]))[:, None, :].expand_as(cnt)
        sw = torch.from_numpy(np.stack([t.shape_weight for t in targets])).flatten()
        shape_ce = F.cross_entropy(s.flatten(0, 1), ts.flatten(), ignore_index=-100, reduction="none")
        shape_ce = (shape_ce * sw).sum() / (sw * (ts.flatten() != -100)).sum().clamp(min=1)
        tfill = torch.from_numpy(np.stack([t.fill for t in targets]))
        ce = (F.cross_entropy(c.flatten(0, 1), tc.flatten(), ignore_index=-100) + shape_ce
              + 0.5 * F.cross_entropy(z.flatten(0, 1), tz.flatten(), ignore_index=-100)
              + 4.0 * F.mse_loss(torch.sigmoid(fill.squeeze(-1)), tfill))
        tbg = torch.tensor([t.background for t in targets])[:, None].expand(bg.shape[:2])
        ce = ce + 0.25 * F.cross_entropy(bg.flatten(0, 1), tbg.flatten())
        xy_loss = (((xy - txy) ** 2).sum(-1) * owned).sum() / owned.sum().clamp(min=1)
        return ce + 4.0 * xy_loss + 4.0 * F.mse_loss(cnt, tcnt)


# --- caption samples ---------------------------------------------------------------------------------------

def group_captions(scene: Any, ids: Sequence[int], noun: str) -> list[str]:
    """Captions of a group of alike objects, in the world's words: the group counted ("two circles: a red
    circle and a blue circle"), listed, and listed with places (from `scene_captions` of the group alone)."""
    from vqagraph.world.captions import NUMBER_WORDS

    sub = scene.model_copy(update={"objects": [scene.objects[i] for i in ids]})
    caps = [D._clean(c) for c in D.world().scene_captions(sub)]
    things = caps[0].split(": ", 1)[-1]
    count = NUMBER_WORDS[len(ids)] if len(ids) < len(NUMBER_WORDS) else str(len(ids))
    return [f"{count} {noun}: {things}", strip_prompt(caps[1]), caps[4]]


def groups(example: D.Example) -> list[tuple[list[int], list[str]]]:
    """Sets of two or more objects (not all) of one colour or one shape, each with its group captions."""
    from vqagraph.world.captions import PLURALS

    if "groups" in example.memo:
        return example.memo["groups"]
    scene = example.scene
    found: list[tuple[list[int], list[str]]] = []
    for attrs in (("colour",), ("shape",), ("colour", "shape")):
        values: dict[tuple[str, ...], list[int]] = {}
        for i, obj in enumerate(scene.objects):
            values.setdefault(tuple(getattr(obj, a) for a in attrs), []).append(i)
        for value, ids in values.items():
            if 2 <= len(ids) < len(scene.objects) and all(ids != other for other, _ in found):
                noun = " ".join([*value[:-1], PLURALS[value[-1]]]) if attrs[-1] == "shape" else f"{value[0]} shapes"
                found.append((ids, group_captions(scene, ids, noun)))
    example.memo["groups"] = found
    return found


def _pick(options: Sequence[str], rng: np.random.Generator, first: float) -> str:
    """The first option with probability `first`, else any of them."""
    if len(options) == 1 or rng.random() < first:
        return options[0]
    return options[int(rng.integers(len(options)))]


def caption_sample(example: D.Example, rng: np.random.Generator) -> tuple[np.ndarray, str, str]:
    """(patch ids 0-based sorted, target caption, kind) drawn as the engine would sample for some question.

    The canonical phrasing (the region caption naming size, colour, shape and place; the counted scene
    listing) is the target half the time: fewer competing targets, faster learning, and the most informative
    captions for the prompt."""
    n = len(example.scene.objects)
    r = rng.random()
    if r < 0.55 and n:
        i = int(rng.integers(n))
        ids = D.sample_patches(D.focus_weights(example.coverage[i], rng), rng)
        return ids, _pick(example.texts.region[i], rng, 0.5), "region"
    found = groups(example)
    if r < 0.7 and found:
        members, captions = found[int(rng.integers(len(found)))]
        cov = example.coverage[members]
        cov = cov / np.maximum(cov.sum(axis=1, keepdims=True), 1e-6)
        ids = D.sample_patches(D.focus_weights(cov.sum(axis=0), rng), rng)
        return ids, _pick(captions, rng, 0.5), "group"
    ids = D.sample_patches(D.scene_weights(example, rng), rng)
    captions = example.texts.captions
    caption = captions[0] if rng.random() < 0.4 else (captions[-1] if rng.random() < 0.5 else _pick(captions, rng, 0))
    return ids, strip_prompt(caption), "scene"


# --- decoder input and loss ----------------------------------------------------------------------------------


def decoder_batch(tokenizer: Any, texts: Sequence[str], bos_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids `[DEC] a picture of … [SEP]`, attention mask, labels (prompt and padding = -100)."""
    enc = tokenizer([PROMPT + t for t in texts], return_tensors="pt", padding="longest", truncation=True,
                    max_length=78)
    ids = enc.input_ids.clone()
    ids[:, 0] = bos_id  # [DEC] replaces [CLS], as BlipCaptioner does
    prompt_len = len(tokenizer(PROMPT).input_ids) - 1  # [CLS] + prompt words, without [SEP]
    labels = ids.masked_fill(enc.attention_mask == 0, -100)
    labels[:, :prompt_len] = -100
    return ids, enc.attention_mask, labels


def decoder_loss(decoder: Any, tokenizer: Any, bos_id: int, patches: torch.Tensor, texts: Sequence[str],
                 buckets: int = 2) -> torch.Tensor:
    """Mean token cross-entropy; the batch is split into `buckets` by text length so short region captions
    are not padded to the length of whole-scene listings."""
    order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
    size = -(-len(order) // max(1, buckets))
    total = torch.zeros(())
    tokens = 0
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        ids, mask, labels = decoder_batch(tokenizer, [texts[k] for k in chunk], bos_id)
        sub = patches[chunk]
        atts = torch.ones(sub.shape[:-1], dtype=torch.long)
        logits = decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=sub,
                         encoder_attention_mask=atts).logits
        target = labels[:, 1:].flatten()
        total = total + F.cross_entropy(logits[:, :-1].flatten(0, 1), target, ignore_index=-100, reduction="sum")
        tokens += int((target != -100).sum())
    return total / max(tokens, 1)


def gather(features: torch.Tensor, rows: Sequence[int], ids: Sequence[np.ndarray]) -> torch.Tensor:
    """Patch embeddings (len(ids), K, dim) from `features[rows[j]]` at `ids[j] + 1` (index 0 is CLS)."""
    index = torch.from_numpy(np.stack(ids) + 1)
    rows_t = torch.as_tensor(list(rows))
    return features[rows_t[:, None], index]


@torch.no_grad()
def generate(model: Any, tokenizer: Any, patches: torch.Tensor, max_length: int = 60, sample: bool = False,
             seed: int = 0) -> list[str]:
    """Captions from patch embeddings (M, K, dim), prompted as BlipCaptioner prompts; greedy by default."""
    count = patches.shape[0]
    prompt = tokenizer([PROMPT] * count, return_tensors="pt")
    input_ids = prompt.input_ids.clone()
    input_ids[:, 0] = model.config.text_config.bos_token_id
    input_ids = input_ids[:, :-1]
    torch.manual_seed(seed)
    out = model.text_decoder.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), encoder_hidden_states=patches,
        encoder_attention_mask=torch.ones(patches.shape[:-1], dtype=torch.long), do_sample=sample,
        top_k=50 if sample else None, top_p=1.0 if sample else None, num_beams=1, max_length=max_length,
        eos_token_id=model.config.text_config.sep_token_id, pad_token_id=model.config.text_config.pad_token_id)
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    prefix = PROMPT.strip()
    return [" ".join(t.strip().removeprefix(prefix).split()).strip(" .") for t in texts]


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


# --- stage 1: encoder + decoder -----------------------------------------------------------------------------


def train_stage1(model: Any, vision: Any, tokenizer: Any, corpus: D.Corpus, *, steps: int, batch: int, subsets: int,
                 lr: float, seed: int, rows: Sequence[int] | None = None, aux_weight: float = 1.0,
                 report: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """Train the adapter `vision` in place with the patch and object heads, and `model`'s decoder
    (BlipForConditionalGeneration) too on `subsets` patch samples per picture when that is > 0; pictures are
    drawn from `rows` (default: all). Returns the loss curves."""
    rng = np.random.default_rng([seed, 21])
    heads = PatchHeads(vision.config.hidden_size)
    trained = [vision, model.text_decoder] if subsets > 0 else [vision]
    params = [p for m in trained for p in m.parameters()] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    bos = model.config.text_config.bos_token_id
    for m in trained:
        m.train()
    history: dict[str, list[float]] = {"caption": [], "patch": [], "object_shape_acc": []}
    warmup = max(1, steps // 15)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        picked = D.batch_indices(len(corpus) if rows is None else len(rows), batch, rng)
        examples = [corpus.example(i if rows is None else rows[i]) for i in picked]
        hidden = vision(pixel_values=D.grid_batch(examples)).last_hidden_state
        aux = heads.loss(hidden[:, 1:], [patch_targets(e) for e in examples])
        loss = aux_weight * aux
        losses = {"patch": float(aux.detach())}
        if subsets > 0:
            picks = [caption_sample(e, rng) for e in examples for _ in range(subsets)]
            owner = [b for b in range(batch) for _ in range(subsets)]
            patches = gather(hidden, owner, [p[0] for p in picks])
            cap = decoder_loss(model.text_decoder, tokenizer, bos, patches, [p[1] for p in picks])
            loss = loss + cap
            losses["caption"] = float(cap.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.update(heads.stats)
        for key in history:
            if key in losses:
                history[key].append(losses[key])
        if report is not None:
            report(step, losses)
    model.eval()
    vision.eval()
    return history


# --- feature cache and stage 2 ------------------------------------------------------------------------------


@torch.no_grad()
def encode(vision: Any, corpus: D.Corpus, rows: Sequence[int], batch: int = 64,
           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Frozen vision features (len(rows), 1 + P, dim) for corpus examples: the frozen grid through `vision`."""
    vision.eval()
    out = []
    for start in range(0, len(rows), batch):
        chunk = [corpus.example(i) for i in rows[start : start + batch]]
        out.append(vision(pixel_values=D.grid_batch(chunk)).last_hidden_state)
        if progress is not None:
            progress(len(chunk))
    return torch.cat(out)


def train_stage2(model: Any, tokenizer: Any, corpus: D.Corpus, rows: Sequence[int], features: torch.Tensor, *,
                 steps: int, batch: int, lr: float, seed: int,
                 report: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """Decoder only, on cached features (`features[j]` belongs to `corpus.example(rows[j])`)."""
    rng = np.random.default_rng([seed, 22])
    decoder = model.text_decoder
    params = list(decoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    bos = model.config.text_config.bos_token_id
    decoder.train()
    history: dict[str, list[float]] = {"caption": []}
    warmup = max(1, steps // 20)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        which = [int(j) for j in rng.integers(0, len(rows), size=batch)]
        picks = [caption_sample(corpus.example(rows[j]), rng) for j in which]
        patches = gather(features, which, [p[0] for p in picks])
        loss = decoder_loss(decoder, tokenizer, bos, patches, [p[1] for p in picks])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history["caption"].append(float(loss.detach()))
        if report is not None:
            report(step, {"caption": float(loss.detach())})
    model.eval()
    return history
