"""What the photos profile's frozen LLM answers when the captioner is perfect: the ceiling of issue 33's targets.

`benchmarks/llm_ceiling.py` asks it for the Shapes world; here every question of the photo dev set is put to the
`photos` profile's LLM with what the photo shows written by hand (`benchmarks/photos/true_captions.json`, in the
profile's caption style: `a photo of a lemon`, `the apple is red and orange`, `the text reads "HOTEL"`), and scored
as `vqagraph eval` scores it:

1. the engine as it is (its own captions: ImageNet tags, colours, OCR), as `vqagraph eval` runs it;
2. the true captions through the rest of the text route as the profile runs it: answer candidates, template
   exemplars, the prompt in the LLM's chat template;
3. the true captions alone (no exemplars) in the chat template.

Whatever arm 2 misses is lost in the LLM (or the exemplars), whatever the captioner learns; the gap between arms 1
and 2 is the captioner's. The held-back photos get no true captions: they stay a check, never a development set.

    python benchmarks/photos/fetch.py --out data/photos
    python benchmarks/photo_ceiling.py data/photos [--llm builtin:NAME] [--arms 1,2,3] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from vqagraph import Engine
from vqagraph.eval.metric import vqa_accuracy
from vqagraph.tools.answer_candidates import extract_candidates
from vqagraph.tools.llm.base import GenerationParams
from vqagraph.tools.llm.postprocess import postprocess_answer
from vqagraph.tools.prompts import build_prompt, chat_template_of, select_exemplars

TRUE_CAPTIONS = Path(__file__).parent / "photos" / "true_captions.json"
ARMS = ("the engine's own captions", "true captions + template exemplars", "true captions, no exemplars")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="the dev set's folder (benchmarks/photos/fetch.py --out)")
    parser.add_argument("--profile", default="photos")
    parser.add_argument("--llm", default=None, help="another frozen LLM than the profile's (e.g. builtin:NAME)")
    parser.add_argument("--arms", default="1,2,3", help="which arms to run, by number (default all)")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    engine = Engine.from_profile(args.profile, **({"llm": args.llm} if args.llm else {}))
    tools, settings = engine.tools, engine.profile.img2llm
    llm = tools.llm
    chat = chat_template_of(llm.tokenizer, llm.name)
    params = GenerationParams(max_new_tokens=settings.answer_max_new_tokens, min_new_tokens=1, stop=settings.stop)
    budget = min(settings.llm_context_length, llm.context_length) - settings.answer_reserve_tokens
    truth: dict[str, list[str]] = json.loads(TRUE_CAPTIONS.read_text())
    items = [json.loads(line) for line in (args.photos / "questions.jsonl").read_text().splitlines() if line.strip()]
    items = items[: args.limit]
    wanted = {ARMS[int(n) - 1] for n in args.arms.split(",")}

    scores: dict[str, dict[str, list[float]]] = {arm: defaultdict(list) for arm in ARMS}
    answers: dict[str, list[str]] = defaultdict(list)
    for item in items:
        captions = truth[item["image"]]
        found = extract_candidates(captions, tools.extractor, top=settings.num_candidates)
        exemplars = select_exemplars(tools.question_generator.templates(found.answers, found.pos),
                                     settings.max_exemplars, settings.exemplar_max_answer_words,
                                     settings.unique_exemplar_questions)
        prompts = {ARMS[1]: build_prompt(item["question"], captions, exemplars, llm.count_tokens, budget,
                                         chat=chat).text,
                   ARMS[2]: build_prompt(item["question"], captions, [], llm.count_tokens, budget, chat=chat).text}
        replies: dict[str, str] = {}
        if ARMS[0] in wanted:
            replies[ARMS[0]] = engine.ask(str(args.photos / item["image"]), item["question"]).answer
        for arm, prompt in prompts.items():
            if arm in wanted:
                (generation,) = llm.generate([prompt], params)
                replies[arm] = postprocess_answer(generation.text)
        for arm, answer in replies.items():
            scores[arm][item["family"]].append(vqa_accuracy(answer, item["answers"]))
            answers[arm].append(f"{item['question']} -> {answer}")

    families = list(dict.fromkeys(item["family"] for item in items))
    print(f"\n{len(items)} questions of {args.photos}, profile {args.profile}, LLM {engine.profile.llm.id}: "
          "VQA accuracy %")
    print(f"{'arm':<40}" + "".join(f"{f:>9}" for f in families) + f"{'overall':>9}")
    for arm in ARMS:
        if scores[arm]:
            row = "".join(f"{statistics.mean(scores[arm][f]):>9.1f}" for f in families)
            print(f"{arm:<40}{row}{statistics.mean([s for f in families for s in scores[arm][f]]):>9.1f}")
    counted: dict[str, Any] = next(scores[arm] for arm in ARMS if scores[arm])
    print(f"{'n':<40}" + "".join(f"{len(counted[f]):>9}" for f in families))
    for arm in ARMS:
        if answers[arm]:
            print(f"\n{arm}:\n  " + "\n  ".join(answers[arm]))


if __name__ == "__main__":
    main()
