"""The bridge survey's comparison inside one engine, in the Shapes world (docs/methods.md §1, §2, §7, §9): the text
route, the Q-Former unconditioned (BLIP-2) and conditioned on the question (InstructBLIP), the projection (LLaVA),
and LLaMA-Adapter's gated prompts inside the LLM fed by a Q-Former's queries, all into the same frozen SmolLM2-135M.
The Q-Former arms form the survey's 2×2: BLIP-2 or InstructBLIP queries × at the LLM's input or through adapters
in its layers. The shipped adapter reads InstructBLIP's queries; `--adapter-blip2` names the BLIP-2 cell. On one
budget, the input cells are `vqagraph-lab --adapter --into input` runs (`--input-blip2`, `--input-instructblip`:
the Q-Former's language projection trained on with the adapter's plan); without them the 2×2 shows the shipped
bridges, trained with their own recipe.

1. Per-family VQA accuracy on a held-out split, the soft-prompt length, the trainable parameters and the seconds
   per question of each.
2. Image-to-text retrieval in the LLM's input space: each picture's soft prompt (mean over its tokens) against the
   LLM's input embeddings of every picture's caption (mean over tokens), by cosine similarity; top-k accuracy over
   pictures never trained on (chance: k / N).
3. A PCA view of the image and caption vectors of each bridge (`--plot`).

    vqagraph world split test -o /tmp/data/test
    python benchmarks/compare_bridges.py /tmp/data/test/questions.jsonl --plot docs/bridges-pca.png
    python benchmarks/compare_bridges.py /tmp/data/test/questions.jsonl --text-answers test-img2llm.jsonl  # reuse
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from vqagraph import Engine
from vqagraph.eval.datasets import load_dataset
from vqagraph.eval.harness import evaluate
from vqagraph.eval.report import AnswerRecord, EvalReport

# (arm, route, profile overrides): one engine per arm, all on the `shapes` profile
ARMS: list[tuple[str, str, dict[str, Any]]] = [
    ("text route", "img2llm", {}),
    ("Q-Former (BLIP-2)", "bridge", {"qformer": {"id": "builtin:shapes-blip2"}}),
    ("Q-Former (InstructBLIP)", "bridge", {}),
    ("projection (LLaVA)", "projection", {}),
    ("adapter (InstructBLIP queries)", "adapter", {}),
]
BRIDGES = ARMS[1:4]  # the retrieval test reads soft prompts at the LLM's input
# the survey's 2×2: (queries, where they enter) → arm; the input cells become the same-budget runs when given
CELLS = {("BLIP-2", "input"): "Q-Former (BLIP-2)", ("InstructBLIP", "input"): "Q-Former (InstructBLIP)",
         ("BLIP-2", "adapter"): "adapter (BLIP-2 queries)",
         ("InstructBLIP", "adapter"): "adapter (InstructBLIP queries)"}
SAME_BUDGET = {"BLIP-2": "input, adapter's plan (BLIP-2 queries)",
               "InstructBLIP": "input, adapter's plan (InstructBLIP queries)"}
RETRIEVAL_INSTRUCTION = "What is in the picture?"  # what InstructBLIP's Q-Former reads for retrieval


def soft_prompt(engine: Engine, route: str, image: Image.Image) -> torch.Tensor:
    ref = engine.add_image(image)
    if route == "projection":
        return engine.tools.projector(ref, engine.tools.images.get(ref))[0]
    return engine.tools.qformer(ref, engine.tools.images.get(ref), RETRIEVAL_INSTRUCTION)[0]


def prompt_length(engine: Engine, route: str, image: Image.Image) -> int:
    if route == "adapter":
        ref = engine.add_image(image)
        return int(engine.tools.llama_adapter(ref, engine.tools.images.get(ref), RETRIEVAL_INSTRUCTION)[1].shape[0])
    return int(soft_prompt(engine, route, image).shape[0])


def trainable_parameters(engine: Engine, route: str) -> int:
    """What the arm's own training taught (the frozen encoder's grid adapter included; the LLM never)."""
    tools = engine.tools

    def count(*modules: Any) -> int:
        return sum(p.numel() for m in modules for p in (m.parameters() if hasattr(m, "parameters") else [m]))

    if route == "projection":
        return count(tools.projector.bridge.multi_modal_projector)
    if route == "adapter":
        return count(tools.llama_adapter.adapter)  # its Q-Former is a frozen, already trained bridge's
    if route == "bridge":
        bridge = tools.qformer.bridge
        vision = tools.qformer.vision
        return count(bridge.query_tokens, bridge.qformer, bridge.language_projection,
                     *([vision.adapter] if vision is not None else []))  # type: ignore[attr-defined]
    return 0


def caption_vector(engine: Engine, caption: str) -> torch.Tensor:
    tokenizer = engine.tools.llm.tokenizer
    ids = torch.tensor(tokenizer(caption, add_special_tokens=False)["input_ids"])
    return engine.tools.llm.input_embeddings()[ids].mean(0)


def retrieval_pictures(n: int, seed: int) -> list[tuple[Image.Image, str]]:
    """Pictures of scenes no model was trained on, each with its first whole-scene caption."""
    from vqagraph_lab.text_route import data as D

    seeds = [int(s) for s in np.random.default_rng([seed, 97]).integers(2**31, size=n)]
    corpus = D.make_corpus(seeds, seed=seed + 31, flips=(0,))
    return [(Image.fromarray(corpus.example(k).pixels), corpus.example(k).texts.captions[0]) for k in range(n)]


def retrieval(images: torch.Tensor, texts: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Image → text top-k accuracy (%) by cosine similarity; image i's caption is text i."""
    sims = torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(texts, dim=-1).T
    rank = (sims > sims.diagonal()[:, None]).sum(1)  # captions scored above the right one
    return {f"top{k}": round(100 * float((rank < k).float().mean()), 1) for k in ks}


def pca_panel(images: torch.Tensor, texts: torch.Tensor, title: str, size: int = 360) -> Image.Image:
    """Both sets projected on the first two principal components of their union: image dots blue, captions
    orange, each picture joined to its caption by a grey line."""
    both = torch.cat([images, texts]).double()
    centred = both - both.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].T).numpy()
    lo, hi = xy.min(0), xy.max(0)
    pad = 30
    pts = pad + (xy - lo) / np.maximum(hi - lo, 1e-9) * (size - 2 * pad)
    panel = Image.new("RGB", (size, size + 24), "white")
    draw = ImageDraw.Draw(panel)
    n = len(images)
    for i in range(n):
        draw.line([tuple(pts[i]), tuple(pts[n + i])], fill=(215, 215, 215))
    for i, (x, y) in enumerate(pts):
        colour = (31, 119, 180) if i < n else (255, 127, 14)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    draw.text((8, size + 4), title, fill="black")
    draw.rectangle((0, 0, size - 1, size + 23), outline=(180, 180, 180))
    return panel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", type=Path, help="a held-out split's questions.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="the first N questions (default: all)")
    parser.add_argument("--text-answers", type=Path, default=None,
                        help="an `vqagraph eval --routes img2llm --answers` file of the same questions, reused "
                        "instead of running the text route (~3 s a question)")
    parser.add_argument("--retrieval", type=int, default=200, help="pictures in the retrieval test")
    parser.add_argument("--seed", type=int, default=12345, help="seeds the retrieval pictures (unseen scenes)")
    parser.add_argument("--plot", type=Path, default=None, help="write the PCA view of each bridge here (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--adapter-blip2", default=None,
                        help="an adapter trained on BLIP-2's queries (`vqagraph-lab --adapter --steps 300`): the "
                        "2×2's BLIP-2 adapter cell")
    parser.add_argument("--input-blip2", default=None,
                        help="`vqagraph-lab --adapter --into input --steps 300`'s Q-Former: the BLIP-2 input cell on "
                        "the adapter's budget")
    parser.add_argument("--input-instructblip", default=None,
                        help="the same with `--qformer builtin:shapes-instructblip`")
    args = parser.parse_args(argv)
    arms = list(ARMS)
    cells = dict(CELLS)
    if args.adapter_blip2:
        arms.append((CELLS[("BLIP-2", "adapter")], "adapter", {"llama_adapter": {"id": args.adapter_blip2}}))
    for queries, folder in (("BLIP-2", args.input_blip2), ("InstructBLIP", args.input_instructblip)):
        if folder:
            arms.append((SAME_BUDGET[queries], "bridge", {"qformer": {"id": folder}}))
            cells[(queries, "input")] = SAME_BUDGET[queries]

    # knowledge questions are kept out, as from every overall number (the bridges never train on them)
    items = [i for i in load_dataset(args.questions) if i.family != "knowledge"][: args.limit]
    engines = {name: Engine.from_profile("shapes", **over) for name, _, over in arms}
    records: list[AnswerRecord] = []
    lengths: dict[str, int] = {}
    seconds: dict[str, float] = {}
    parameters: dict[str, int] = {}
    for name, route, _ in arms:
        engine = engines[name]
        if route == "img2llm" and args.text_answers is not None:
            wanted = {(str(i.image), i.question) for i in items}
            got = [AnswerRecord(**json.loads(line)) for line in args.text_answers.read_text().splitlines() if line]
            arm = [r for r in got if (r.image, r.question) in wanted and r.route == "img2llm"]
        else:
            arm = list(evaluate(engine, items, [route], progress=True).records)
        records += [r.model_copy(update={"route": name}) for r in arm]
        seconds[name] = round(statistics.median(r.seconds for r in arm), 3) if arm else float("nan")
        if route != "img2llm":
            lengths[name] = prompt_length(engine, route, Image.open(items[0].image).convert("RGB"))
            parameters[name] = trainable_parameters(engine, route)
        print(f"{name}: {len(arm)} answers, median {seconds[name]} s a question", file=sys.stderr)
    report = EvalReport.from_records(records, [name for name, _, _ in arms])
    print(report.table())
    overall = {name: report.routes[name].overall for name, _, _ in arms}
    print("\nthe survey's 2×2 (overall, trainable parameters):")
    print(f"{'queries':14} {'input':>22} {'adapter':>22}")
    for queries in ("BLIP-2", "InstructBLIP"):
        pair = [cells[(queries, where)] for where in ("input", "adapter")]
        shown = [f"{overall[c]:5.1f} ({parameters[c]:,})" if c in overall else "not trained" for c in pair]
        print(f"{queries:14} {shown[0]:>22} {shown[1]:>22}")

    pictures = retrieval_pictures(args.retrieval, args.seed)
    found: dict[str, dict[str, float]] = {}
    panels = []
    for name, route, _ in BRIDGES:
        engine = engines[name]
        with torch.no_grad():
            images = torch.stack([soft_prompt(engine, route, image).float().mean(0) for image, _ in pictures])
            texts = torch.stack([caption_vector(engine, caption).float() for _, caption in pictures])
        found[name] = retrieval(images, texts)
        panels.append(pca_panel(images, texts, f"{name}: {lengths[name]} tokens"))
    chance = {f"top{k}": round(100 * k / len(pictures), 1) for k in (1, 5, 10)}
    print(f"\nimage → caption retrieval in the LLM's input space, {len(pictures)} unseen pictures (chance {chance}):")
    print(f"{'bridge':26} {'tokens':>6} {'s/q':>6} {'top1':>6} {'top5':>6} {'top10':>6}")
    for name, _, _ in BRIDGES:
        r = found[name]
        print(f"{name:26} {lengths[name]:6d} {seconds[name]:6.2f} {r['top1']:6.1f} {r['top5']:6.1f} {r['top10']:6.1f}")
    print(f"{'text route':26} {'-':>6} {seconds['text route']:6.2f}")
    if args.plot is not None:
        sheet = Image.new("RGB", (sum(p.width for p in panels) + 10 * (len(panels) - 1), panels[0].height + 28),
                          "white")
        ImageDraw.Draw(sheet).text((8, 6), "PCA of image (blue) and caption (orange) vectors in SmolLM2's input space",
                                   fill="black")
        x = 0
        for p in panels:
            sheet.paste(p, (x, 28))
            x += p.width + 10
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.plot)
        print(f"PCA view: {args.plot}")
    if args.json is not None:
        args.json.write_text(json.dumps({"report": report.to_dict(), "tokens": lengths, "seconds": seconds,
                                         "parameters": parameters, "retrieval": found, "chance": chance},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
