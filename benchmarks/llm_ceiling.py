"""What the frozen LLM can answer when the vision is perfect: the routes' ceiling set by the LLM alone.

Every question of a generated split is put to the profile's LLM with the scene's ground truth written as text
(the generator's own captions of the whole scene and of every object, and for a marked question which object
the mark is on), in the routes' own prompt formats, and scored as `vqagraph eval` scores:

1. Img2LLM's prompt (docs/methods.md §1.6) with the true captions and no exemplars;
2. the same with true question-answer exemplars about the same scene (the generator's questions, other than
   the one asked, as many as the profile's `max_exemplars`): what a perfect captioner and question generator give;
3. the projection route's LLaVA prompt (§7) with the true description where `<image>` stands;
4. the same after the true exemplars as earlier turns in the route's history format (the answer's format shown
   in context, which a bridge's LM stage otherwise has to teach);
5. arm 2's content in the LLM's own chat template (`img2llm.prompt_format = "chat"`: the contexts as the system
   turn, the exemplars as earlier turns), for an instruction-tuned LLM that has one.

Generation stops where the routes stop it (the profile's `stop`, a newline); `--llm` and `--quantize` measure
another frozen LLM, or the same one in int8, through the same engine.

No vision model runs, so whatever these miss is lost in the LLM, whatever the image encoder, the captioner or
the bridges learn. A trained soft prompt can do better than words (the LLM's input is trained then): arm 3
and 4 bound what the projection route gets from the LLM reading a description, not what a bridge can learn.

    vqagraph world split test -o /tmp/data/test
    python benchmarks/llm_ceiling.py /tmp/data/test [--limit N] [--profile shapes] [--llm builtin:NAME]
        [--quantize int8-dynamic] [--arms 1,2,5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vqagraph import Engine
from vqagraph.eval.metric import vqa_accuracy
from vqagraph.tools.bridge_prompt import bridge_text
from vqagraph.tools.llm.base import GenerationParams
from vqagraph.tools.llm.postprocess import postprocess_answer
from vqagraph.tools.prompts import chat_template_of, render_prompt, select_exemplars
from vqagraph.tools.question_generator import Exemplar
from vqagraph.world.captions import region_caption
from vqagraph.world.questions import generate_questions
from vqagraph.world.scene import load_scene
from vqagraph.world.splits import VISION_FAMILIES

ARMS = ("img2llm, true captions", "img2llm, true captions + exemplars", "LLaVA prompt, true description",
        "LLaVA prompt, true description + turns", "chat template, true captions + exemplars")


def read_split(folder: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    questions = [json.loads(line) for line in (folder / "questions.jsonl").read_text().splitlines() if line.strip()]
    captions = {}
    for line in (folder / "captions.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            captions[record["image"]] = record
    return questions, captions


def true_captions(item: dict[str, Any], record: dict[str, Any], scene: Any) -> list[str]:
    """The scene's whole-image captions, one caption per object, and the marked object when there is a mark."""
    captions = list(record["captions"]) + [r["caption"] for r in record["regions"]]
    if item["marks"] and item.get("object_ids"):
        captions.append(f"the marked shape is {region_caption(scene, item['object_ids'][0])}")
    return captions


def true_exemplars(item: dict[str, Any], scene: Any, limit: int, seed: int) -> list[Exemplar]:
    """The generator's own questions about the scene (marks and knowledge aside), never the one asked."""
    rng = np.random.default_rng([seed, zlib.crc32(item["image"].encode())])
    pairs = [Exemplar(question=q.question, answer=q.answers[0], source="template")
             for q in generate_questions(scene, rng, per_family=1, families=[f for f in VISION_FAMILIES
                                                                            if f != "marked"])
             if q.question.strip().lower() != item["question"].strip().lower()]
    return select_exemplars(pairs, limit=limit, unique_questions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", type=Path, help="a folder written by `vqagraph world split`")
    parser.add_argument("--profile", default="shapes")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm", default=None, help="another frozen LLM than the profile's (e.g. builtin:NAME)")
    parser.add_argument("--quantize", default="none", choices=["none", "int8-dynamic"])
    parser.add_argument("--arms", default="1,2,3,4,5", help="which arms to run, by number (default all)")
    args = parser.parse_args()

    overrides: dict[str, Any] = {"llm_backend": {"quantize": args.quantize}}
    if args.llm:
        overrides["llm"] = args.llm
    engine = Engine.from_profile(args.profile, **overrides)
    profile = engine.profile
    llm = engine.tools.llm
    wanted = {ARMS[int(n) - 1] for n in args.arms.split(",")}
    chat = chat_template_of(llm.tokenizer, llm.name) if ARMS[4] in wanted and llm.tokenizer.chat_template else None
    params = GenerationParams(max_new_tokens=profile.img2llm.answer_max_new_tokens, min_new_tokens=1,
                              stop=profile.img2llm.stop)
    empty: dict[str, int] = defaultdict(int)
    template = profile.projection.prompt_template if profile.projector is not None else None
    questions, captions = read_split(args.split)
    questions = [q for q in questions if q["family"] != "knowledge"][: args.limit]

    scores: dict[str, dict[str, list[float]]] = {arm: defaultdict(list) for arm in ARMS}
    seconds: dict[str, list[float]] = defaultdict(list)
    for item in questions:
        scene = load_scene(args.split / item["scene"])
        caps = true_captions(item, captions[item["image"]], scene)
        exemplars = true_exemplars(item, scene, profile.img2llm.max_exemplars, args.seed)
        prompts = {ARMS[0]: render_prompt(item["question"], caps, []),
                   ARMS[1]: render_prompt(item["question"], caps, exemplars)}
        if template is not None:
            settings = profile.projection
            described = template.replace(settings.image_placeholder, "; ".join(c.strip().rstrip(".") for c in caps))
            prompts[ARMS[2]] = bridge_text(described, item["question"])
            prompts[ARMS[3]] = bridge_text(described, item["question"], [(e.question, e.answer) for e in exemplars],
                                           settings.history_template)
        if chat is not None:
            prompts[ARMS[4]] = render_prompt(item["question"], caps, exemplars, chat=chat)
        for arm, prompt in prompts.items():
            if arm not in wanted:
                continue
            start = time.perf_counter()
            (generation,) = llm.generate([prompt], params)  # one at a time: padding costs more on a CPU
            seconds[arm].append(time.perf_counter() - start)
            answer = postprocess_answer(generation.text)
            empty[arm] += not answer
            scores[arm][item["family"]].append(vqa_accuracy(answer, item["answers"]))

    families = [f for f in VISION_FAMILIES if any(f in scores[arm] for arm in ARMS)]
    print(f"\n{len(questions)} questions of {args.split} (knowledge excluded), profile {args.profile}, "
          f"LLM {profile.llm.id}: VQA accuracy % with the scene's ground truth as text")
    print(f"{'arm':<42}" + "".join(f"{f:>9}" for f in families) + f"{'overall':>9}{'s/q':>7}{'empty':>7}")
    for arm in ARMS:
        if not scores[arm]:
            continue
        row = "".join(f"{statistics.mean(scores[arm][f]):>9.1f}" for f in families)
        overall = statistics.mean([s for f in families for s in scores[arm][f]])
        print(f"{arm:<42}{row}{overall:>9.1f}{statistics.median(seconds[arm]):>7.2f}{empty[arm]:>7}")
    counted = next(arm for arm in ARMS if scores[arm])
    print(f"{'n':<42}" + "".join(f"{len(scores[counted][f]):>9}" for f in families))


if __name__ == "__main__":
    main()
