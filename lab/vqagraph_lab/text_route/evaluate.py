"""Component metrics on held-out scenes: captions, ITM, GradCAM pointing game, question generation.

Captions are greedy here (the engine samples), from patch samples drawn as the engine would draw them for a
question about one object (its cells, a ring around them, a floor) or about the whole picture (uniform).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from vqagraph_lab.text_route import data as D
from vqagraph_lab.text_route.captioner import gather, generate, strip_prompt
from vqagraph_lab.text_route.itm import itm_logits, question_text
from vqagraph_lab.text_route.t5_qg import qg_pair


def held_out(seed: int, count: int, **options: Any) -> D.Corpus:
    """Scenes no training run draws (their seeds come from a separate stream), under no flip."""
    seeds = [int(s) for s in np.random.default_rng([seed, 99]).integers(2**31, size=count * 4)]
    if not options:
        return D.make_corpus(seeds[:count], seed=seed + 7, flips=(0,))
    w = D.world()
    rendered = []
    for s in seeds:
        scene = w.generate_scene(s, **{k: v for k, v in options.items() if k != "size_word"})
        if "size_word" in options and any(o.size_word != options["size_word"] for o in scene.objects):
            continue
        rendered.append(D.render(scene))
        if len(rendered) == count:
            break
    return D.Corpus(rendered, seed=seed + 7, flips=(0,))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _attr_hits(caption: str, obj: Any) -> dict[str, bool | None]:
    shapes, colours, sizes = D.shapes_and_colours()
    words = _words(caption)
    said_c = [w for w in words if w in colours]
    said_s = [w for w in words if w in shapes or w.rstrip("s") in shapes]
    said_z = [w for w in words if w in sizes]
    return {
        "colour": said_c == [obj.colour] if said_c else False,
        "shape": said_s == [obj.shape] if said_s else False,
        "size": (said_z == [obj.size_word]) if said_z else None,
    }


@torch.no_grad()
def caption_metrics(model: Any, tokenizer: Any, corpus: D.Corpus, seed: int, features: torch.Tensor | None = None,
                    max_objects: int | None = None, vision: Any = None) -> dict[str, Any]:
    """Region and scene caption accuracy; `features` are the pictures' vision tokens, or computed by `vision`."""
    from vqagraph.world.captions import POSITION_PHRASES, grid_position

    rng = np.random.default_rng([seed, 51])
    if features is None:
        from vqagraph_lab.text_route.captioner import encode

        features = encode(vision if vision is not None else model.vision_model, corpus, list(range(len(corpus))))
    rows, ids, objects = [], [], []
    for j in range(len(corpus)):
        example = corpus.example(j)
        for i in range(len(example.scene.objects))[:max_objects]:
            rows.append(j)
            ids.append(D.sample_patches(D.focus_weights(example.coverage[i], None), rng))
            objects.append(i)
    region = []
    for start in range(0, len(rows), 64):
        patches = gather(features, rows[start : start + 64], ids[start : start + 64])
        region += generate(model, tokenizer, patches)
    exact = colour = shape = size_ok = size_said = pos_ok = pos_said = 0
    samples: list[dict[str, str]] = []
    for j, i, caption in zip(rows, objects, region, strict=True):
        example = corpus.example(j)
        obj = example.scene.objects[i]
        exact += caption in example.texts.region[i]
        hits = _attr_hits(caption, obj)
        colour += bool(hits["colour"])
        shape += bool(hits["shape"])
        if hits["size"] is not None:
            size_said += 1
            size_ok += bool(hits["size"])
        phrases = [p for p in POSITION_PHRASES.values() if p in caption]
        if phrases:
            pos_said += 1
            pos_ok += POSITION_PHRASES[grid_position(example.scene, i)] in phrases
        if len(samples) < 12:
            samples.append({"object": f"{obj.size_word} {obj.colour} {obj.shape}", "caption": caption})
    n = max(len(region), 1)
    out: dict[str, Any] = {
        "region_captions": len(region), "region_exact": exact / n, "region_colour": colour / n,
        "region_shape": shape / n, "region_size_when_said": size_ok / max(size_said, 1),
        "region_position_when_said": pos_ok / max(pos_said, 1), "region_samples": samples,
    }
    # whole-picture captions from uniform samples
    rows = list(range(len(corpus)))
    ids = [D.sample_patches(np.full(D.NUM_PATCHES, 1.0 / D.NUM_PATCHES), rng) for _ in rows]
    scene_caps = []
    for start in range(0, len(rows), 64):
        scene_caps += generate(model, tokenizer, gather(features, rows[start : start + 64], ids[start : start + 64]))
    from vqagraph.world.captions import NUMBER_WORDS

    s_exact = count_ok = count_said = 0
    s_samples: list[dict[str, str]] = []
    for j, caption in zip(rows, scene_caps, strict=True):
        example = corpus.example(j)
        truth = [strip_prompt(c) for c in example.texts.captions]
        s_exact += caption in truth
        m = re.search(r"\b(" + "|".join(NUMBER_WORDS) + r") shapes?\b", caption)
        if m:
            count_said += 1
            count_ok += NUMBER_WORDS.index(m.group(1)) == len(example.scene.objects)
        if len(s_samples) < 8:
            s_samples.append({"truth": truth[0], "caption": caption})
    out.update({"scene_captions": len(scene_caps), "scene_exact": s_exact / max(len(scene_caps), 1),
                "scene_count_when_said": count_ok / max(count_said, 1), "scene_count_said": count_said,
                "scene_samples": s_samples})
    return out


@torch.no_grad()
def itm_metrics(model: Any, tokenizer: Any, corpus: D.Corpus, features: torch.Tensor, seed: int,
                threshold: float = 0.5) -> dict[str, Any]:
    """Whole picture: a true region caption vs a one-change negative; sampled patches: an object's caption vs
    another object's, on that object's patches."""
    rng = np.random.default_rng([seed, 61])
    pos, neg, rows = [], [], []
    for j in range(len(corpus)):
        texts = corpus.example(j).texts
        for i in range(len(texts.region)):
            negative = D.region_negative(texts, i, rng)
            if negative is not None:
                pos.append(texts.region[i][0])
                neg.append(negative)
                rows.append(j)
    p_pos = _match(model, tokenizer, features[rows], pos)
    p_neg = _match(model, tokenizer, features[rows], neg)
    out: dict[str, Any] = {
        "full_pairs": len(rows),
        "full_pairwise": float((p_pos > p_neg).float().mean()),
        "full_accuracy": float(torch.cat([p_pos >= threshold, p_neg < threshold]).float().mean()),
    }
    # scene captions vs negatives
    spos, sneg, srows = [], [], []
    for j in range(len(corpus)):
        texts = corpus.example(j).texts
        negative = D.scene_negative(texts, rng)
        if negative is not None:
            spos.append(strip_prompt(texts.captions[0]))
            sneg.append(strip_prompt(negative))
            srows.append(j)
    sp = _match(model, tokenizer, features[srows], spos)
    sn = _match(model, tokenizer, features[srows], sneg)
    out["scene_pairwise"] = float((sp > sn).float().mean())
    out["scene_accuracy"] = float(torch.cat([sp >= threshold, sn < threshold]).float().mean())
    # patch subsets: own caption vs another object's caption vs a one-change negative
    own, other, changed, prow, pids = [], [], [], [], []
    for j in range(len(corpus)):
        example = corpus.example(j)
        texts = example.texts
        n = len(texts.region)
        for i in range(n):
            if n < 2:
                continue
            k = (i + 1) % n
            wrong = [t for t in texts.region[k] if t not in texts.region[i]]
            negative = D.region_negative(texts, i, rng)
            if not wrong or negative is None:
                continue
            own.append(texts.region[i][0])
            other.append(wrong[0])
            changed.append(negative)
            prow.append(j)
            pids.append(D.sample_patches(D.focus_weights(example.coverage[i], None), rng))
    patches = gather(features, prow, pids)
    po = _match(model, tokenizer, patches, own)
    pt = _match(model, tokenizer, patches, other)
    pc = _match(model, tokenizer, patches, changed)
    out.update({
        "patch_pairs": len(prow),
        "patch_own_vs_other_pairwise": float((po > pt).float().mean()),
        "patch_own_vs_changed_pairwise": float((po > pc).float().mean()),
        "patch_accuracy": float(torch.cat([po >= threshold, pt < threshold, pc < threshold]).float().mean()),
        "patch_own_accepted": float((po >= threshold).float().mean()),
    })
    return out


def _match(model: Any, tokenizer: Any, embeds: torch.Tensor, texts: list[str]) -> torch.Tensor:
    out = []
    for start in range(0, len(texts), 128):
        logits, _ = itm_logits(model, tokenizer, embeds[start : start + 128], texts[start : start + 128])
        out.append(logits.softmax(-1)[:, 1])
    return torch.cat(out) if out else torch.zeros(0)


def pointing_game(model: Any, tokenizer: Any, corpus: D.Corpus, features: torch.Tensor, layer: int,
                  families: tuple[str, ...] = ("colour", "shape", "size", "position", "exists", "count")
                  ) -> dict[str, Any]:
    """GradCAM (the engine's compute_gradcam) of each held-out question with objects: does its peak patch
    lie in one of the question's objects' boxes? Also the share of the map inside those boxes."""
    from vqagraph.tools.gradcam import compute_gradcam
    from vqagraph.tools.region_captioner import region_patches

    hits: dict[str, list[int]] = {}
    mass: dict[str, list[float]] = {}
    for j in range(len(corpus)):
        example = corpus.example(j)
        scene = example.scene
        for q in example.texts.questions:
            if q.family not in families or not q.object_ids or len(q.object_ids) == len(scene.objects):
                continue
            tokens = tokenizer([question_text(q.question)], return_tensors="pt", padding="longest")
            cam = compute_gradcam(model, features[j : j + 1], tokens.input_ids, tokens.attention_mask, layer)[0]
            inside = torch.zeros(D.NUM_PATCHES, dtype=torch.bool)
            for i in q.object_ids:
                inside |= region_patches((D.GRID, D.GRID), (scene.width, scene.height), scene.objects[i].box,
                                         letterboxed=True)
            hits.setdefault(q.family, []).append(int(inside[int(cam.argmax())]))
            total = float(cam.sum())
            mass.setdefault(q.family, []).append(float(cam[inside].sum()) / total if total > 0 else 0.0)
    every = [h for v in hits.values() for h in v]
    out: dict[str, Any] = {"questions": len(every), "pointing": float(np.mean(every)) if every else 0.0,
                           "mass_in_boxes": float(np.mean([m for v in mass.values() for m in v])) if every else 0.0}
    out["by_family"] = {f: round(float(np.mean(v)), 3) for f, v in sorted(hits.items())}
    return out


@torch.no_grad()
def qg_metrics(model: Any, tokenizer: Any, corpus: D.Corpus, seed: int, count: int = 120) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 71])
    pairs = []
    for j in range(len(corpus)):
        pair = qg_pair(corpus.example(j), rng)
        if pair is not None:
            pairs.append((j, *pair))
        if len(pairs) >= count:
            break
    outs: list[str] = []
    for start in range(0, len(pairs), 32):
        chunk = pairs[start : start + 32]
        enc = tokenizer([p[2] for p in chunk], return_tensors="pt", padding="longest", truncation=True,
                        max_length=384)
        gen = model.generate(**enc, num_beams=3, max_length=30, do_sample=False, early_stopping=True)
        outs += [" ".join(t.split()) for t in tokenizer.batch_decode(gen, skip_special_tokens=True)]
    exact = 0
    answerable = 0
    samples: list[dict[str, str]] = []
    for (j, answer, source, target), out in zip(pairs, outs, strict=True):
        exact += out == target
        # answerable: the generated question is one the world asks of this scene with this answer
        questions = corpus.example(j).texts.questions
        answerable += any(q.question == out and answer in q.answers for q in questions)
        if len(samples) < 10:
            samples.append({"input": source, "target": target, "generated": out})
    n = max(len(pairs), 1)
    return {"pairs": len(pairs), "exact": exact / n, "world_question_with_that_answer": answerable / n,
            "samples": samples}


def gradcam_peak_examples(model: Any, tokenizer: Any, corpus: D.Corpus, features: torch.Tensor, layer: int,
                          count: int = 3) -> list[dict[str, Any]]:
    """A few questions with the grid cell of their GradCAM peak, for the log."""
    from vqagraph.tools.gradcam import compute_gradcam

    out = []
    for j in range(min(count, len(corpus))):
        example = corpus.example(j)
        for q in example.texts.questions[:2]:
            tokens = tokenizer([question_text(q.question)], return_tensors="pt")
            cam = compute_gradcam(model, features[j : j + 1], tokens.input_ids, tokens.attention_mask, layer)[0]
            peak = int(cam.argmax())
            out.append({"question": q.question, "objects": [str(example.scene.objects[i].box) for i in q.object_ids],
                        "peak_cell": [peak // D.GRID, peak % D.GRID],
                        "size": [example.scene.width, example.scene.height]})
    return out


__all__ = ["caption_metrics", "held_out", "itm_metrics", "pointing_game", "qg_metrics", "strip_prompt"]
