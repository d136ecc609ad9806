"""`vqagraph` command line. Errors print one line and exit with status 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from vqagraph.agents.options import add_engine_options, engine_overrides, quiet_libraries, run_command
from vqagraph.graphs.registry import ROUTES, route_lines
from vqagraph.request import AskRequest, Generation


def _marks(engine: object, image: Any, specs: list[str]) -> list[object]:
    """Parse `--mark` specs against the image's size (fractions are fractions of it)."""
    if not specs:
        return []
    from vqagraph.media import load_image
    from vqagraph.tools.visual_prompt import parse_mark

    size = load_image(image, max_pixels=engine.profile.limits.max_image_pixels).size  # type: ignore[attr-defined]
    return [parse_mark(spec, size) for spec in specs]


def _ask_batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vqagraph.agents.batch import run_batch, write_submission
    from vqagraph.engine import Engine
    from vqagraph.errors import QuestionError
    from vqagraph.eval.datasets import load_dataset

    if args.inputs or args.thread or args.mark or args.explain:
        raise QuestionError("--batch reads its questions from the file: give no IMAGE QUESTION, --thread, --mark "
                            "or --explain with it")
    if not args.out:
        raise QuestionError("--batch needs --out OUT.jsonl (the answers, one a line; a rerun resumes it)")
    if args.route == "both" or args.batch_size < 1:
        raise QuestionError(f"--batch takes one route ({', '.join(r for r in ROUTES.requested() if r != 'both')}) "
                            "and --batch-size >= 1")
    items = load_dataset(args.batch, images=args.images, annotations=args.annotations, scored=False)
    graph = None
    if args.graph:
        from vqagraph.graphs.graph_cli import load_graph

        graph = load_graph(args.graph)
    engine = Engine.from_profile(args.profile, graph=graph, **engine_overrides(args))
    engine.check_route(args.route, args.router)
    out = Path(args.out)
    answered, skipped = run_batch(engine, items, args.route, out, args.batch_size)
    print(f"answers: {out} ({answered} answered now, {skipped} already there)", file=sys.stderr)
    if args.submission:
        count = write_submission(out, items, Path(args.submission))
        print(f"submission: {args.submission} ({count} answers, VQAv2/EvalAI format)", file=sys.stderr)
    return 0


def _ask(args: argparse.Namespace) -> int:
    from vqagraph.engine import Engine
    from vqagraph.errors import QuestionError

    if args.batch:
        return _ask_batch(args)
    if not args.inputs or len(args.inputs) > 2:
        raise QuestionError("give an image and a question (or --batch FILE for many)")
    if len(args.inputs) == 1 and not args.thread:
        raise QuestionError("give an image and a question (or --thread ID to continue a conversation)")
    image, question = (None, args.inputs[0]) if len(args.inputs) == 1 else args.inputs
    graph = None
    if args.graph:
        from vqagraph.graphs.graph_cli import load_graph

        graph = load_graph(args.graph)
    engine = Engine.from_profile(args.profile, graph=graph, **engine_overrides(args))
    marks_image = image
    if args.thread and image is None:  # marks in fractions are fractions of the thread's image
        ref = engine.conversation(args.thread, store=args.store).image_ref
        marks_image = engine.tools.images.get(ref) if ref else None
    marks = _marks(engine, marks_image, args.mark) if args.mark and marks_image is not None else []
    answer = engine.answer(AskRequest(question=question, image=image, marks=marks, route=args.route,
                                      router=args.router, thread=args.thread, store=args.store,
                                      generation=generation_of(args)))
    if args.thread:
        turns = len(engine.conversation(args.thread, store=args.store).history())
        print(f"thread: {args.thread} (turn {turns})", file=sys.stderr)
    trace = answer.trace
    if args.explain:
        picture = engine.explain(answer)
        if picture is None:
            print(f"explain: nothing to draw, the text route did not run (route {answer.route})", file=sys.stderr)
        else:
            picture.save(args.explain)
    if args.json:
        print(answer.model_dump_json(indent=2))
        return 0
    print(f"answer: {answer.answer}")
    print(f"route:  {answer.route} ({trace.route_reason})")
    if args.graph and trace.path:
        print(f"path:   {' → '.join(trace.path)}")
    marked = trace.visual_prompt or {}
    if answer.question != marked.get("original_question", answer.question):
        print(f"asked:  {answer.question}")
    for note in marked.get("notes", []):
        print(f"mark:   {note}")
    if len(trace.route_answers) > 1:
        for name, result in trace.route_answers.items():
            print(f"  {name}: {result['answer']!r} (mean log-prob {result['mean_logprob']:.3f})")
    for line in route_lines(trace):  # each route's own line about its record
        print(line)
    if answer.meaningless:
        print(f"note: profile {engine.profile.name!r} uses untrained placeholder models; this answer is meaningless")
    return 0


def _render(args: argparse.Namespace) -> int:
    from vqagraph.config import load_profile
    from vqagraph.engine import Engine

    engine = Engine(load_profile(args.profile))
    engine.render(args.image, _marks(engine, args.image, args.mark)).save(args.out)  # type: ignore[arg-type]
    print(args.out)
    return 0


def _llm_prepare(args: argparse.Namespace) -> int:
    from vqagraph import hub
    from vqagraph.config import load_profile

    profile = load_profile(args.profile)
    print(hub.resolve(profile.llm))
    return 0


def _llm_serve(args: argparse.Namespace) -> int:
    """Start vLLM for the profile's LLM, print its URL, and keep it up until a signal stops it (SIGINT, SIGTERM,
    SIGHUP), stopping vLLM's whole process group however this process ends."""
    import contextlib
    import signal
    import threading

    from vqagraph import hub
    from vqagraph.config import load_profile
    from vqagraph.errors import LLMError
    from vqagraph.tools.llm.vllm_server import VLLMServer

    profile = load_profile(args.profile)
    backend = profile.llm_backend
    model_dir = hub.resolve(profile.llm)
    server = VLLMServer(model_dir, host=args.host, port=args.port, served_name=profile.llm.id,
                        max_model_len=args.max_model_len or backend.max_model_len,
                        extra_args=tuple(backend.serve_args) + tuple(a for a in args.vllm_args if a != "--"),
                        work_dir=hub.cache_root() / "vllm")
    server.check_port()  # before saying "starting"
    print(f"starting vLLM for {profile.llm.id} ({model_dir}); log: {server.log_path}", flush=True)
    print(" ".join(server.command()), flush=True)

    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    class StopRequested(BaseException):
        """A stop signal arrived: unwind to the code that stops vLLM (no `except Exception` may swallow it)."""

    def hurry(_signum: int, _frame: object) -> None:
        server.kill()  # a second signal while vLLM stops: no more grace

    def handle(handler: Any) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
            return {}
        return {each: signal.signal(each, handler) for each in stop_signals}

    def request_stop(signum: int, _frame: object) -> None:
        handle(hurry)
        raise StopRequested(signum)

    previous: dict[int, Any] = {}
    try:
        previous.update(handle(request_stop))
        server.start()
        print(f"ready: {server.url}  (use: vqagraph ask IMAGE QUESTION --llm-url {server.url})", flush=True)
        assert server.process is not None
        status = server.process.wait()
        how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
        raise LLMError(f"the vLLM server on port {server.port} {how} on its own; its log: {server.log_path}")
    except StopRequested as stop:
        with contextlib.suppress(OSError):  # SIGHUP: the terminal may be gone
            print(f"stopping vLLM ({signal.Signals(stop.args[0]).name})", flush=True)
        return 0
    finally:
        handle(hurry)  # a signal now must not cut the stop short
        server.stop()  # also registered with atexit by start(), for an exit that skips this
        for each, handler in previous.items():
            signal.signal(each, handler)


def _profiles(_args: argparse.Namespace) -> int:
    from vqagraph.config import BUILTIN_PROFILES, DEFAULT_PROFILE

    for name, data in BUILTIN_PROFILES.items():
        mark = " (default)" if name == DEFAULT_PROFILE else ""
        print(f"{name}{mark}: {data.get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqagraph", description="Frozen LLMs answer questions about images.")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer one question about one image, or a file of them (--batch)")
    ask.add_argument("inputs", nargs="*", metavar="[IMAGE] QUESTION",
                     help="the image and the question; with --thread the image may be left out (the thread's)")
    ask.add_argument("--batch", default=None, metavar="IN",
                     help="answer every question of IN (the eval formats; answers optional) in batches")
    ask.add_argument("--out", default=None, metavar="OUT.jsonl",
                     help="--batch: one answer a line, written as each finishes; a rerun skips what OUT holds")
    ask.add_argument("--batch-size", type=int, default=16, metavar="N",
                     help="--batch: questions in flight at once, their model calls batched (default 16)")
    ask.add_argument("--images", default=None, metavar="DIR", help="--batch: the COCO image folder (VQAv2)")
    ask.add_argument("--annotations", default=None, metavar="FILE",
                     help="--batch: a VQAv2 annotations file, to score the answers too")
    ask.add_argument("--submission", default=None, metavar="OUT.json",
                     help="--batch: also write VQAv2/EvalAI's results file [{question_id, answer}]")
    ask.add_argument("--graph", default=None, metavar="FILE",
                     help="answer with a custom graph spec (YAML/JSON; see examples/graphs)")
    ask.add_argument("--thread", default=None, metavar="ID",
                     help="add this question to a conversation thread (created if new, continued if not)")
    add_engine_options(ask)
    ask.add_argument("--route", default="auto", choices=list(ROUTES.requested()),
                     help="auto: the router decides; "
                     + "; ".join(f"{r.name}: {r.title}" for r in ROUTES) + "; both: every route the profile has")
    ask.add_argument("--router", default=None, choices=["rules", "cascade", "both"],
                     help="the router's policy for --route auto (default: the profile's)")
    add_generation_options(ask)
    ask.add_argument("--json", action="store_true", help="print the answer with its full trace as JSON")
    ask.add_argument("--mark", action="append", default=[], metavar="SHAPE:COORDS[:COLOUR]",
                     help="draw a visual prompt, e.g. rectangle:10,20,120,90:red or point:0.5,0.5 (repeatable)")
    ask.add_argument("--explain", default=None, metavar="OUT.png",
                     help="write a picture: marked image, GradCAM heat map, sampled patches, captions, answer")

    render = sub.add_parser("render", help="draw marks on an image: what the model will see")
    render.add_argument("image")
    render.add_argument("--mark", action="append", default=[], metavar="SHAPE:COORDS[:COLOUR]", required=True)
    render.add_argument("-o", "--out", required=True, help="output PNG")
    render.add_argument("--profile", default=None)
    render.set_defaults(func=_render)
    ask.set_defaults(func=_ask)

    from vqagraph.agents.demo import add_demo_command

    add_demo_command(sub)

    llm = sub.add_parser("llm", help="the frozen LLM: prepare its weights, serve it with vLLM")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True)
    prepare = llm_sub.add_parser("prepare", help="make the profile's LLM available locally; print its directory")
    prepare.add_argument("--profile", default=None)
    prepare.set_defaults(func=_llm_prepare)
    serve = llm_sub.add_parser(
        "serve", help="start a vLLM OpenAI-compatible server for the profile's LLM (prompt embeddings on)",
        description="Extra vLLM flags go after `--`, e.g. `-- --tensor-parallel-size 2`.")
    serve.add_argument("--profile", default=None)
    serve.add_argument("--host", default="127.0.0.1", help="loopback by default; prompt embeddings are for trusted"
                       " clients only")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-model-len", type=int, default=None)
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER, help="extra flags passed to vLLM after --")
    serve.set_defaults(func=_llm_serve)

    from vqagraph.agents.chat import add_chat_command
    from vqagraph.agents.models_cli import add_models_command
    from vqagraph.agents.serve_cli import add_serve_commands
    from vqagraph.eval.cli import add_eval_command
    from vqagraph.graphs.graph_cli import add_graph_commands
    from vqagraph.world.cli import add_world_commands

    add_chat_command(sub)
    add_eval_command(sub)
    add_world_commands(sub)
    add_graph_commands(sub)
    add_serve_commands(sub)
    add_models_command(sub)

    profiles = sub.add_parser("profiles", help="list the built-in profiles")
    profiles.set_defaults(func=_profiles)
    return parser


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """How the LLM decodes the answer (`request.Generation`; greedy by default), as an OpenAI client sets it."""
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); above: sampling")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (with --temperature)")
    parser.add_argument("--seed", type=int, default=None, help="seeds sampling: the same answer again")
    parser.add_argument("--max-tokens", type=int, default=None, help="cut the answer at this many tokens")
    parser.add_argument("--stop", action="append", default=[], help="end the answer before this text (repeatable)")


def generation_of(args: argparse.Namespace) -> Generation:
    return Generation.checked(temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                              max_tokens=args.max_tokens, stop=args.stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
