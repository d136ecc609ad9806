"""`vqagraph demo`: the offline walkthrough — Shapes-world scenes, questions of every family through the graph,
each answer beside its truth with the route and why, an explain picture per question, and a small eval table; then
two real photographs through the default profile (what it tagged, what text it read, the answer).

The scenes come from a seed no training run uses, so the table is a (tiny) held-out measurement. The photographs
ship in the package (vqagraph/data/demo, their sources beside them); they are from the photo dev set, never from
the held-back one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vqagraph.config import DEFAULT_PROFILE
from vqagraph.engine import Engine
from vqagraph.graphs.registry import ROUTES

DEMO_SEED = 7_000_001  # never used for training data (lab/vqagraph_lab/text_route uses its own seeds)
DEMO_FAMILIES = ("colour", "shape", "count", "exists", "position", "size", "marked", "knowledge")
SHAPES_PROFILE = "shapes"  # the Shapes world's scenes are asked of the models trained on it
# (photo in vqagraph/data/demo, question, what a person answers)
DEMO_PHOTO_QUESTIONS = (
    ("bee.jpg", "What insect is on the flower?", "bee"),
    ("bee.jpg", "What colour is the flower?", "purple"),
    ("fosters-sign.jpg", "What brand name is shown?", "foster's"),
)


def run_demo(profile: str | None, out: Path, scenes: int = 3, explain: bool = True,
             photo_profile: str | None = DEFAULT_PROFILE) -> int:
    """The Shapes-world part with `profile` (default: shapes), then the photographs with `photo_profile` (None:
    skip them)."""
    start = time.perf_counter()
    run_shapes_demo(profile or SHAPES_PROFILE, out, scenes, explain)
    if photo_profile:
        run_photo_demo(photo_profile, out, explain)
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0


def run_photo_demo(profile: str, out: Path, explain: bool = True) -> None:
    """A few questions about real photographs: the tags and text the profile read, the answer beside a person's."""
    from importlib.resources import as_file, files

    from vqagraph.eval.metric import vqa_accuracy

    engine = Engine.from_profile(profile)
    print(f"\nreal photographs - profile: {engine.profile.name} - {engine.profile.description}")
    for k, (name, question, truth) in enumerate(DEMO_PHOTO_QUESTIONS):
        with as_file(files("vqagraph").joinpath("data/demo", name)) as path:
            answer = engine.ask(path, question)
        score = vqa_accuracy(answer.answer, [truth])
        record = answer.trace.img2llm or {}
        tags = ", ".join(f"{t['name']} {t['probability']:.2f}" for t in record.get("tags", [])[:4]) or "none"
        print(f"\n[photo] {name}: {question}")
        print(f"  route:  {answer.route} - {answer.trace.route_reason}")
        print(f"  tags:   {tags}")
        if record.get("text_lines"):
            print(f"  text:   {[line['text'] for line in record['text_lines']][:4]}")
        print(f"  answer: {answer.answer!r}   a person: {truth!r}   {'right' if score >= 100 else 'wrong'}   "
              f"({answer.trace.timings['total']:.2f} s)")
        picture = engine.explain(answer) if explain else None
        if picture is not None:
            path = out / f"explain-photo-{k}.png"
            picture.save(path)
            print(f"  explain: {path}")
    print("a real measurement (the photo dev set, 96 questions): python benchmarks/photos/fetch.py --out photos && "
          "vqagraph eval photos/questions.jsonl")


def run_shapes_demo(profile: str, out: Path, scenes: int = 3, explain: bool = True) -> None:
    from vqagraph.eval.datasets import load_dataset
    from vqagraph.eval.harness import record_for, request_for, score_answer
    from vqagraph.eval.report import AnswerRecord, EvalReport
    from vqagraph.world import write_dataset

    write_dataset(out, DEMO_SEED, scenes, per_family=1)
    # One question per family, in the families' order, the families dealt round the scenes (family k from scene
    # k mod scenes when it has one) so that every scene is asked about, not only the first.
    everything = [i for i in load_dataset(out / "questions.jsonl") if i.family in DEMO_FAMILIES]
    images = sorted({str(i.image) for i in everything})
    items = []
    for k, family in enumerate(DEMO_FAMILIES):
        pool = [i for i in everything if i.family == family]
        if pool:
            items.append(next((i for i in pool if str(i.image) == images[k % len(images)]), pool[0]))
    engine = Engine.from_profile(profile)
    print(f"profile: {engine.profile.name} - {engine.profile.description}")
    print(f"scenes:  {scenes} generated from seed {DEMO_SEED} in {out}; one question per family")
    records: list[AnswerRecord] = []
    for item in items:
        answer = engine.ask(item.image, item.question, marks=item.marks)
        score = score_answer(answer.answer, item)
        verdict = "right" if score >= 100 else "wrong" if score == 0 else f"{score:.0f}%"
        print(f"\n[{item.family}] {item.image.name}: {answer.question}")
        print(f"  route:  {answer.route} - {answer.trace.route_reason}")
        print(f"  answer: {answer.answer!r}   truth: {item.answers[0]!r}   {verdict}   "
              f"({answer.trace.timings['total']:.2f} s)")
        captions = (answer.trace.img2llm or {}).get("captions", [])
        if captions:
            print(f"  captions ({len(captions)}): {captions[:2]}")
        picture = engine.explain(answer) if explain else None
        if picture is not None:
            path = out / f"explain-{item.family}.png"
            picture.save(path)
            print(f"  explain: {path}")
        base = {"question_id": item.question_id, "image": str(item.image), "question": item.question,
                "family": item.family, "answers": item.answers, "answer": answer.answer, "accuracy": score,
                "reason": answer.trace.route_reason, "seconds": answer.trace.timings["total"]}
        records.append(AnswerRecord(**base, route="auto", route_taken=answer.route))
        # The route auto took answers the same way when asked directly (seeded): reuse it for that column.
        records.append(AnswerRecord(**base, route=answer.route, route_taken=answer.route))
    # Every question through the routes auto did not take, as one batch (the engine batches their model calls).
    others = [(record.question_id, other) for record in records[::2] for other in ROUTES.available(engine.profile)
              if other != record.route_taken]
    by_id = {item.question_id: item for item in items}
    results = engine.answer_batch([request_for(by_id[qid], route) for qid, route in others])
    records += [record_for(by_id[qid], route, result) for (qid, route), result in zip(others, results, strict=True)]
    routes = [*ROUTES.available(engine.profile), "auto"]
    print("\nthe same questions through each route (VQA accuracy, %; one question per family, so 0 or 100):")
    print(EvalReport.from_records(records, routes).table())
    print("a real measurement (300 held-out questions): vqagraph world split test -o heldout && vqagraph eval "
          f"heldout/questions.jsonl --profile {profile} --routes img2llm,bridge,both,auto")
    if engine.profile.meaningless:
        print(f"\nnote: profile {engine.profile.name!r} uses untrained placeholder models built from configs;"
              " its answers are noise. They show the pipeline runs, not that it sees.")


def _demo(args: argparse.Namespace) -> int:
    out = Path(args.out or tempfile.mkdtemp(prefix="vqagraph-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    return run_demo(args.profile, out, scenes=args.scenes, explain=not args.no_explain,
                    photo_profile=None if args.no_photos else args.photo_profile)


def add_demo_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = subparsers.add_parser("demo", help="the offline demo: Shapes-world scenes, questions of every family, "
                                 "answers beside the truth, explain pictures, a small eval table; then two real "
                                 "photographs")
    demo.add_argument("--profile", default=SHAPES_PROFILE, help="profile for the Shapes-world scenes (default "
                      f"{SHAPES_PROFILE})")
    demo.add_argument("--photo-profile", default=DEFAULT_PROFILE, help="profile for the photographs (default "
                      f"{DEFAULT_PROFILE}, the default profile)")
    demo.add_argument("--no-photos", action="store_true", help="skip the photographs")
    demo.add_argument("--out", default=None, help="folder for the scenes and pictures (default: a new temp folder)")
    demo.add_argument("--scenes", type=int, default=3, help="how many scenes to generate (default 3)")
    demo.add_argument("--no-explain", action="store_true", help="skip the explain pictures")
    demo.set_defaults(func=_demo)
