"""Node adapters: each reads a few state keys, calls one tool, and writes a few keys back.

`READS` and `WRITES` on every node say which keys it touches, so users composing graphs can check wiring; a field
of a nested record (graphs/state.py) is named "record.field", e.g. "img2llm.captions".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from langgraph.runtime import Runtime

from vqagraph.answer import RouteAnswer
from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.models.centernet import Detection
from vqagraph.tools.answer_candidates import extract_candidates
from vqagraph.tools.image_tags import (
    answer_check,
    checked_answer,
    detectable_nouns,
    group_detections,
    photo_captions,
    tags_from_record,
)
from vqagraph.tools.llm.base import Generation, GenerationParams
from vqagraph.tools.llm.calibration import CONTENT_FREE, calibrate_yes_no
from vqagraph.tools.llm.postprocess import postprocess_answer
from vqagraph.tools.ocr import TextLine, text_caption
from vqagraph.tools.prompts import (
    YES_NO_QUESTION,
    build_prompt,
    chat_template_of,
    render_prompt,
    select_context_captions,
    select_exemplars,
)
from vqagraph.tools.question_generator import Exemplar

Node = Callable[[VQAState, Runtime[VQAContext]], dict[str, Any]]


def node(name: str, reads: tuple[str, ...], writes: tuple[str, ...]) -> Callable[[Node], Any]:
    """Declare a node's keys and record its wall time under `timings[name]`."""

    def wrap(fn: Node) -> Node:
        @wraps(fn)
        def run(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
            start = time.perf_counter()
            update = fn(state, runtime)
            update["timings"] = {name: round(time.perf_counter() - start, 4)}
            return update

        run.READS = reads  # type: ignore[attr-defined]
        run.WRITES = writes  # type: ignore[attr-defined]
        run.NAME = name  # type: ignore[attr-defined]
        return run

    return wrap


@node("render_marks", reads=("image_ref", "question", "marks"),
      writes=("image_ref", "question", "visual_prompt.original_image_ref", "visual_prompt.original_question",
              "visual_prompt.phrases", "visual_prompt.boxes", "visual_prompt.notes"))
def render_marks(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """Draw the marks; the routes then see the marked image, and "this"/"here" become the mark's phrase."""
    from vqagraph.tools.referring import refer_to_mark
    from vqagraph.tools.visual_prompt import Mark
    from vqagraph.tools.visual_prompt import render_marks as draw

    tools = runtime.context.tools
    marks = [Mark.model_validate(m) for m in state.get("marks") or []]
    if not marks:
        return {}
    image = tools.images.get(state["image_ref"])
    drawn, rendered = draw(image, marks, seed=tools.profile.img2llm.seed)
    phrases = [r.phrase for r in rendered]
    question, _changed = refer_to_mark(state["question"], phrases)
    return {
        "image_ref": tools.images.add(drawn),
        "question": question,
        "visual_prompt": {
            "original_image_ref": state["image_ref"],
            "original_question": state["question"],
            "phrases": phrases,
            "boxes": [list(r.box) for r in rendered],
            "notes": [r.note for r in rendered if r.note],
        },
    }


def vision_question(state: VQAState) -> str:
    """What the vision tools read: a follow-up with its back-reference resolved, else the question."""
    return state.get("standalone_question") or state["question"]


def recent_turns(state: VQAState, limit: int) -> list[tuple[str, str]]:
    """The newest `limit` earlier turns, oldest first."""
    turns = [(t["question"], t["answer"]) for t in state.get("history") or []]
    return turns[-limit:] if limit else []


@node("resolve_followup", reads=("question", "history"), writes=("standalone_question",))
def resolve_followup(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """A follow-up's pronoun becomes what an earlier turn named, so GradCAM and the router read a whole question."""
    from vqagraph.tools.followup import standalone_question

    earlier = [t["question"] for t in state.get("history") or []]
    text, _referent = standalone_question(state["question"], earlier)
    return {"standalone_question": text}


@node("region_captions", reads=("image_ref", "question", "standalone_question", "visual_prompt.boxes"),
      writes=("img2llm.captions", "img2llm.caption_scores", "img2llm.caption_stats", "img2llm.gradcam",
              "img2llm.grid", "img2llm.patch_ids", "img2llm.image_encoded", "img2llm.tags",
              "img2llm.text_lines", "img2llm.band_colours", "img2llm.black_and_white", "img2llm.objects"))
def region_captions(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    tools = runtime.context.tools
    image = tools.images.get(state["image_ref"])
    if tools.profile.img2llm.captions == "imagenet-tags":
        return _photo_captions(state["image_ref"], image, vision_question(state), tools)
    boxes = state.get("visual_prompt", {}).get("boxes") or []
    # With one mark, sample patches inside it so the captions describe what the user pointed at.
    region = tuple(boxes[0]) if len(boxes) == 1 and tools.profile.img2llm.restrict_to_mark else None
    result = tools.region_captioner(state["image_ref"], image, vision_question(state), region=region)  # type: ignore[arg-type]
    return {"img2llm": {
        "captions": result.captions,
        "caption_scores": result.scores,
        "caption_stats": {
            "kept": len(result.captions),
            "generated": result.generated,
            "rejected_itm": result.rejected_itm,
            "rejected_duplicate": result.rejected_duplicate,
            "rounds": result.rounds,
        },
        "gradcam": result.gradcam,
        "grid": list(result.grid),
        "patch_ids": result.patch_ids,
        "image_encoded": result.image_encoded,
    }}


def _photo_captions(ref: str, image: Any, question: str, tools: Any) -> dict[str, Any]:
    """A real photograph's captions: ImageNet tags over its regions with their colours, the colours of its top,
    middle and bottom, and the text read in it, what the question asks about first (docs/methods.md §8); the record
    keeps each tag's probability as its caption score and the box its activation map covers. The text read and the
    objects detected do not depend on the question: read once per image, kept in the feature cache."""
    settings = tools.profile.img2llm
    reading = tools.image_tagger(image, question)
    lines = tools.features.get_or_compute((ref, "text-lines", settings.text_min_score),
                                          lambda: tools.text_reader(image)) if settings.read_text else []
    detections = tools.features.get_or_compute((ref, "detections", settings.object_detector),
                                               lambda: tools.object_detector(image)) if settings.object_detector else []
    objects = group_detections(detections, image)
    captions, scores = photo_captions(reading, question, [(text_caption(line), line.score) for line in lines],
                                      settings.tag_own_names, objects, settings.object_min_score)
    return {"img2llm": {
        "captions": captions,
        "caption_scores": scores,
        "caption_stats": {"kept": len(captions), "generated": len(captions), "rejected_itm": 0,
                          "rejected_duplicate": 0, "rounds": 1},
        "gradcam": [], "grid": [], "patch_ids": [], "image_encoded": True,
        "tags": [{"name": t.name, "label": t.label, "index": t.index, "probability": t.probability, "region": t.region,
                  "box": list(t.box), "colours": list(t.colours), "asked": t.asked} for t in reading.tags],
        "band_colours": reading.band_colours,
        "black_and_white": reading.black_and_white,
        "text_lines": [{"text": line.text, "score": line.score, "box": list(line.box)} for line in lines],
        "objects": [{"label": d.label, "score": d.score, "box": list(d.box)} for d in detections],
    }}


@node("question_generation", reads=("img2llm.captions",),
      writes=("img2llm.candidates", "img2llm.answer_captions", "img2llm.exemplars"))
def question_generation(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    tools = runtime.context.tools
    settings = tools.profile.img2llm
    captions = state.get("img2llm", {}).get("captions", [])
    found = extract_candidates(captions, tools.extractor, top=settings.num_candidates)
    generator = tools.question_generator
    if settings.question_generation == "neural" and captions:
        exemplars = generator.neural(found.answers, captions)
    else:
        exemplars = generator.templates(found.answers, found.pos)
    where = {a: found.answer_to_captions[a] for a in found.answers if a in found.answer_to_captions}
    return {"img2llm": {"candidates": found.answers, "answer_captions": where,
                        "exemplars": [e.model_dump() for e in exemplars]}}


@node("img2llm_prompt", reads=("question", "history", "img2llm.captions", "img2llm.candidates",
                               "img2llm.answer_captions", "img2llm.exemplars"),
      writes=("img2llm.prompt", "img2llm.prompt_stats", "img2llm.content_free_prompt"))
def img2llm_prompt(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    tools = runtime.context.tools
    settings = tools.profile.img2llm
    record = state.get("img2llm", {})
    captions = record.get("captions", [])
    where = record.get("answer_captions", {})
    if settings.captions == "imagenet-tags":  # a photo's captions come ordered by what the question asks (§8)
        ids = list(range(min(len(captions), settings.max_context_captions)))
    else:
        ids = select_context_captions(record.get("candidates", []), where, len(captions),
                                      settings.max_context_captions)
    exemplars = select_exemplars(
        [Exemplar(**e) for e in record.get("exemplars", [])],
        settings.max_exemplars,
        settings.exemplar_max_answer_words,
        settings.unique_exemplar_questions,
    )
    llm = tools.llm
    budget = min(settings.llm_context_length, llm.context_length) - settings.answer_reserve_tokens
    history = recent_turns(state, tools.profile.conversation.max_history_turns)
    chat = chat_template_of(llm.tokenizer, llm.name) if settings.prompt_format == "chat" else None
    built = build_prompt(state["question"], [captions[i] for i in ids], exemplars, llm.count_tokens, budget, history,
                         chat)
    content_free = ""
    if settings.yes_no_calibration and YES_NO_QUESTION.match(state["question"]):  # the same prompt, contexts "N/A"
        kept_turns = history[len(history) - built.history_turns:]
        content_free = render_prompt(state["question"], [CONTENT_FREE], built.exemplars, kept_turns, chat)
    return {"img2llm": {
        "prompt": built.text,
        "content_free_prompt": content_free,
        "prompt_stats": {
            "tokens": built.tokens,
            "context_captions": len(built.context_captions),
            "exemplars": len(built.exemplars),
            "dropped_exemplars": built.dropped_exemplars,
            "dropped_captions": built.dropped_captions,
            "history_turns": built.history_turns,
            "dropped_turns": built.dropped_turns,
        },
    }}


def token_writer(runtime: Runtime[VQAContext], route: str) -> Callable[[str], None] | None:
    """When the caller streams, each piece of the answer becomes a custom stream event as the LLM writes it."""
    if not runtime.context.stream_tokens:
        return None
    write = runtime.stream_writer
    return lambda text: write({"token": text, "route": route})


def generation_params(state: VQAState, max_new_tokens: int, stop: Sequence[str]) -> GenerationParams:
    """A route's decoding settings under the request's (`state["generation"]`): its cap, or the request's
    `max_tokens` when smaller; its stop strings and the request's; greedy unless the request samples."""
    asked = state.get("generation") or {}
    cap = min(max_new_tokens, asked.get("max_tokens") or max_new_tokens)
    return GenerationParams(max_new_tokens=cap, min_new_tokens=1, stop=[*stop, *asked.get("stop", [])],
                            temperature=asked.get("temperature", 0.0), top_p=asked.get("top_p", 1.0),
                            seed=asked.get("seed"))


def route_answer(generation: Generation) -> RouteAnswer:
    """What a route hands back: the post-processed answer and the LLM's confidence in it."""
    return {
        "answer": postprocess_answer(generation.text),
        "raw_answer": generation.text,
        "token_ids": generation.token_ids,
        "token_logprobs": [round(x, 5) for x in generation.logprobs],
        "mean_logprob": round(generation.mean_logprob, 5) if generation.logprobs else -1e9,
        "finish_reason": generation.finish_reason,
    }


@node("llm_answer", reads=("question", "standalone_question", "img2llm.prompt", "img2llm.content_free_prompt",
                           "img2llm.text_lines", "img2llm.tags", "img2llm.objects", "img2llm.black_and_white"),
      writes=("route_answers",))
def llm_answer(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    tools = runtime.context.tools
    settings = tools.profile.img2llm
    params = generation_params(state, settings.answer_max_new_tokens, settings.stop)
    record = state["img2llm"]
    write = token_writer(runtime, "img2llm")
    greedy = params.temperature == 0  # a sampled answer is the LLM's own draw: neither checked nor calibrated
    question = vision_question(state)
    lines = [TextLine(line["text"], line["score"], tuple(line["box"]))  # type: ignore[arg-type]
             for line in record.get("text_lines", [])]
    detectable = detectable_nouns(tools.object_detector.labels) if settings.object_detector else frozenset()
    check = answer_check(question, settings.answer_checks, lines, detectable) if greedy else None
    calibrate = greedy and check is None and bool(record.get("content_free_prompt"))
    if check is None and not calibrate:
        (generation,) = tools.llm.generate([record["prompt"]], params, on_token=write)
        return {"route_answers": {"img2llm": route_answer(generation)}}
    # The answer is decided after the LLM's, then streamed once (docs/methods.md §8): contextual calibration sends
    # the content-free prompt in the same batched call; a check reads the photo's reading.
    generations = (tools.llm.generate([record["prompt"], record["content_free_prompt"]],
                                      params.model_copy(update={"top_logprobs": 20})) if calibrate
                   else tools.llm.generate([record["prompt"]], params))
    answer = route_answer(generations[0])
    calibration = calibrate_yes_no(tools.llm.tokenizer, *generations) if calibrate else None
    if calibration is not None:
        chosen = calibration.calibrated_p_yes if calibration.answer == "yes" else 1 - calibration.calibrated_p_yes
        answer["answer"], answer["mean_logprob"] = calibration.answer, round(math.log(chosen), 5)
        answer["calibration"] = calibration.model_dump()
    if check is not None:
        objects = group_detections([Detection(o["label"], o["score"], tuple(o["box"]))  # type: ignore[arg-type]
                                    for o in record.get("objects", [])])
        checked = checked_answer(check, question, answer["answer"], tags_from_record(record.get("tags", [])), lines,
                                 objects, detectable, bool(record.get("black_and_white", False)))
        if checked is not None:
            answer["checked"] = {"by": check, "llm_answer": answer["answer"], "why": checked[1]}
            answer["answer"] = checked[0]
    if write is not None:
        write(answer["answer"])
    return {"route_answers": {"img2llm": answer}}
