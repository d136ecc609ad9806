"""`vqagraph chat`: an interactive terminal conversation about images, one thread, answers streamed.

Each line is a question about the current image; lines starting with `/` are commands (`/help` lists them).
The thread lives in a thread store (SQLite by default), so `vqagraph chat --thread ID` continues it later,
from any process. Run standalone (before the main CLI has the command) with `python -m vqagraph.agents.chat`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from vqagraph.agents.options import add_engine_options, open_engine, quiet_libraries, run_command
from vqagraph.config import DEFAULT_PROFILE
from vqagraph.errors import VQAGraphError
from vqagraph.graphs.registry import ROUTES as REGISTRY

if TYPE_CHECKING:
    from PIL import Image

    from vqagraph.answer import Answer
    from vqagraph.engine import Engine
    from vqagraph.engine.conversation import Conversation
    from vqagraph.tools.visual_prompt import Mark

PROMPT = "vqagraph> "
POLICIES = ("rules", "cascade", "both")

HELP = """\
Type a question about the current image, or a command:
  /image PATH     switch image: the next question is about it
  /mark SPEC      a visual prompt for the next question, e.g. /mark rectangle:10,20,120,90:red
                  (repeat for several; /mark alone lists them; /mark clear drops them)
  /route R        {choices} (now: {route})
  /history        this thread's turns
  /thread         the thread id, and how to continue it later
  /help           this text
  /quit           leave (also Ctrl-D); the thread stays in its store"""


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _short_ref(ref: str | None) -> str:
    return (ref or "").removeprefix("sha256:")[:12]


class ChatSession:
    """The chat loop over one `Conversation`: reads lines, runs commands, streams answers to `out`."""

    def __init__(
        self,
        engine: Engine,
        conversation: Conversation,
        *,
        route: str = "auto",
        router: str | None = None,
        continue_args: Sequence[str] = (),
        out: TextIO | None = None,
        color: bool | None = None,
    ) -> None:
        self.engine = engine
        self.conversation = conversation
        self.route = route
        self.router = router
        self.continue_args = list(continue_args)  # --store/--profile to repeat in "how to continue" hints
        self.out = out or sys.stdout
        if color is None:
            color = self.out.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.pending_image: Image.Image | None = None  # taken in by /image, sent with the next question
        self.pending_label = ""
        self.marks: list[Mark] = []
        self.noted_meaningless = False

    # ---- output -------------------------------------------------------------------------------------------

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.color else text

    # ---- the loop -----------------------------------------------------------------------------------------

    def greet(self) -> None:
        conversation = self.conversation
        turns = conversation.history()
        profile = self.engine.profile
        if turns:
            self.say(f"thread {conversation.thread_id}: {len(turns)} turn(s), image "
                     f"{_short_ref(conversation.image_ref)} (last question: {_short(turns[-1].question, 50)!r})")
        else:
            self.say(f"thread {conversation.thread_id} (new)")
        self.say(self.dim(f"profile {profile.name}; store {conversation.store.url}; route {self.route}; "
                          "/help lists the commands, /quit or Ctrl-D leaves"))
        if self.pending_image is not None:
            self.say(f"image {self.pending_label} ({self.pending_image.width}x{self.pending_image.height}): the "
                     "first question is about it")
        elif conversation.image_ref is None:
            self.say("no image yet: give one with /image PATH")

    def run(self, read: Callable[[str], str] = input) -> int:
        self.greet()
        while True:
            try:
                line = read(PROMPT)
            except EOFError:
                self.say()
                break
            except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, as Python's REPL does
                self.say("^C (Ctrl-D or /quit leaves)")
                continue
            if not self.handle(line):
                break
        self.say(f"bye; continue this thread with: {self.continue_hint()}")
        return 0

    def handle(self, line: str) -> bool:
        """One input line; False when the session should end."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            self.ask(line)
            return True
        command, _, rest = line.partition(" ")
        rest = rest.strip()
        command = command.lower()
        if command in ("/quit", "/exit", "/q"):
            return False
        handlers: dict[str, Callable[[str], None]] = {
            "/image": self.cmd_image, "/mark": self.cmd_mark, "/route": self.cmd_route,
            "/history": self.cmd_history, "/thread": self.cmd_thread, "/help": self.cmd_help,
        }
        handler = handlers.get(command)
        if handler is None:
            self.say(f"unknown command {command}; /help lists them")
            return True
        try:
            handler(rest)
        except VQAGraphError as exc:
            self.say(f"error: {exc}")
        return True

    # ---- commands -----------------------------------------------------------------------------------------

    def current_size(self) -> tuple[int, int] | None:
        """The size of the image the next question is about (the pending one, else the thread's)."""
        if self.pending_image is not None:
            return self.pending_image.size  # type: ignore[no-any-return]
        ref = self.conversation.image_ref
        return None if ref is None else self.engine.tools.images.get(ref).size  # type: ignore[no-any-return]

    def cmd_image(self, rest: str) -> None:
        if not rest:
            if self.pending_image is not None:
                self.say(f"next question: {self.pending_label} ({self.pending_image.width}x"
                         f"{self.pending_image.height})")
            elif self.conversation.image_ref:
                self.say(f"current image: {_short_ref(self.conversation.image_ref)}")
            else:
                self.say("no image yet: /image PATH")
            return
        image = self.take_image(rest)
        dropped = f"; {len(self.marks)} mark(s) dropped (they were for the other image)" if self.marks else ""
        self.marks = []
        self.say(f"image {self.pending_label} ({image.width}x{image.height}): the next question is about it{dropped}")

    def take_image(self, path: str) -> Image.Image:
        """Load (and validate) the image the next question is about; nothing changes if it fails."""
        from vqagraph.media import load_image

        if len(path) > 1 and path[0] == path[-1] and path[0] in "'\"":
            path = path[1:-1]
        path = os.path.expanduser(path)
        image = load_image(path, max_pixels=self.engine.profile.limits.max_image_pixels)
        self.pending_image, self.pending_label = image, path
        return image

    def cmd_mark(self, rest: str) -> None:
        if not rest:
            if not self.marks:
                self.say("no marks for the next question (/mark SHAPE:COORDS[:COLOUR] adds one)")
            for index, mark in enumerate(self.marks):
                self.say(f"  {index}: {mark.model_dump_json(exclude_none=True)}")
            return
        if rest.lower() == "clear":
            self.say(f"{len(self.marks)} mark(s) cleared")
            self.marks = []
            return
        size = self.current_size()
        if size is None:
            self.say("no image yet: /image PATH first, then /mark")
            return
        from vqagraph.tools.visual_prompt import parse_mark

        self.marks.append(parse_mark(rest, size))
        self.say(f"mark {len(self.marks) - 1} for the next question: {rest}")

    def cmd_route(self, rest: str) -> None:
        if not rest:
            self.say(f"route: {self.route} (choose one of {', '.join(REGISTRY.requested())})")
            return
        route = rest.lower()
        if route not in REGISTRY.requested():
            self.say(f"unknown route {rest!r}; choose one of {', '.join(REGISTRY.requested())}")
            return
        self.engine.check_route(route, self.router)  # e.g. a bridge without a Q-Former: ProfileError
        self.route = route
        self.say(f"route: {route}")

    def cmd_history(self, _rest: str = "") -> None:
        turns = self.conversation.history()
        if not turns:
            self.say("no turns yet")
            return
        previous = None
        for turn in turns:
            if turn.image_ref != previous:
                self.say(self.dim(f"  image {_short_ref(turn.image_ref)}"))
                previous = turn.image_ref
            vision = "vision encoded" if turn.vision_encoded else "vision reused"
            marks = f", {len(turn.marks)} mark(s)" if turn.marks else ""
            self.say(f"  #{turn.index} [{turn.route}] {_short(turn.question, 60)} -> {_short(turn.answer, 60)} "
                     f"({vision}{marks}, {turn.seconds:.2f} s)")

    def continue_hint(self) -> str:
        extra = " ".join(shlex.quote(a) for a in self.continue_args)
        extra = f" {extra}" if extra else ""
        thread = self.conversation.thread_id
        return f"vqagraph chat --thread {thread}{extra}  or  vqagraph ask --thread {thread}{extra} \"QUESTION\""

    def cmd_thread(self, _rest: str = "") -> None:
        turns = len(self.conversation.history())
        self.say(f"thread {self.conversation.thread_id}: {turns} turn(s) in {self.conversation.store.url}")
        self.say(f"continue it with: {self.continue_hint()}")

    def cmd_help(self, _rest: str = "") -> None:
        self.say(HELP.format(route=self.route, choices=" | ".join(REGISTRY.requested())))

    # ---- a question ---------------------------------------------------------------------------------------

    def ask(self, question: str) -> None:
        if self.pending_image is None and self.conversation.image_ref is None:
            self.say("no image yet: give one with /image PATH, then ask again")
            return
        printer = _StreamPrinter(self)
        answer: Answer | None = None
        try:
            for kind, value in self.conversation.stream(question, image=self.pending_image, marks=self.marks,
                                                        route=self.route, router=self.router):
                if kind == "node":
                    printer.node(value)
                elif kind == "token":
                    printer.token(value)
                else:
                    answer = value
        except VQAGraphError as exc:
            printer.end()
            self.say(f"error: {exc}")
            return
        except KeyboardInterrupt:
            printer.end()
            self.say("interrupted: this turn was not added to the thread")
            return
        printer.end()
        assert answer is not None
        self.pending_image, self.pending_label, self.marks = None, "", []
        self.report(answer, printer.text())

    def report(self, answer: Answer, streamed: str) -> None:
        from vqagraph.engine.conversation import vision_encoded

        trace = answer.trace
        if " ".join(streamed.split()) != " ".join(answer.answer.split()):
            self.say(f"answer: {answer.answer}")
        marked = trace.visual_prompt or {}
        if answer.question != marked.get("original_question", answer.question):
            self.say(self.dim(f"  asked: {answer.question}"))
        for note in marked.get("notes", []):
            self.say(self.dim(f"  mark: {note}"))
        details = [f"{trace.timings.get('total', 0.0):.2f} s",
                   "vision encoded" if vision_encoded(answer) else "vision reused"]
        if trace.history_turns:
            details.append(f"{trace.history_turns} earlier turn(s)")
        self.say(self.dim(f"  route: {answer.route} ({trace.route_reason}) · {' · '.join(details)}"))
        if answer.meaningless and not self.noted_meaningless:
            self.noted_meaningless = True
            self.say(f"note: profile {self.engine.profile.name!r} uses untrained placeholder models; its answers are "
                     "meaningless")


class _StreamPrinter:
    """Node progress on a dim line, tokens as they arrive. Nodes that finish after the tokens began are held
    back, and shown only if another token stream follows (a cascade falling back to the text route)."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.line: str | None = None  # "nodes" or "tokens": what the open (unterminated) line holds
        self.held: list[str] = []
        self.streams: list[list[str]] = []

    def write(self, text: str) -> None:
        self.session.say(text, end="")

    def node(self, name: str) -> None:
        if name == "turn":  # the thread graph's own node: the whole turn
            return
        if self.line == "tokens":
            self.held.append(name)
        elif self.line == "nodes":
            self.write(self.session.dim(f" · {name}"))
        else:
            self.write(self.session.dim(f"· {name}"))
            self.line = "nodes"

    def token(self, text: str) -> None:
        if self.line == "tokens" and self.held:
            self.write("\n" + self.session.dim("· " + " · ".join(self.held)) + "\n")
            self.held, self.line = [], None
        elif self.line == "nodes":
            self.write("\n")
            self.line = None
        if self.line is None:
            text = text.lstrip()
            self.streams.append([])
            self.line = "tokens"
        self.streams[-1].append(text)
        self.write(text)

    def end(self) -> None:
        if self.line is not None:
            self.write("\n")
        self.line, self.held = None, []

    def text(self) -> str:
        """The last token stream: the answer the LLM wrote (before post-processing)."""
        return "".join(self.streams[-1]) if self.streams else ""


# ---- the command ---------------------------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", nargs="?", default=None, help="the first image (optional with --thread)")
    parser.add_argument("--thread", default=None, metavar="ID", help="continue this thread (its image comes with it)")
    add_engine_options(parser)
    parser.add_argument("--route", default="auto", choices=REGISTRY.requested(),
                        help="auto: the router decides; " + "; ".join(f"{r.name}: {r.title}" for r in REGISTRY)
                        + "; both: every route the profile has")
    parser.add_argument("--router", default=None, choices=POLICIES,
                        help="the router's policy for route auto (default: the profile's)")
    parser.set_defaults(func=run_chat)


def add_chat_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `chat` on the main CLI's subparsers."""
    chat = subparsers.add_parser("chat", help="an interactive conversation about images (a thread, streamed)",
                                 description=__doc__.splitlines()[0] if __doc__ else None)
    _add_arguments(chat)
    return chat


def run_chat(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    print(f"loading profile {args.profile or f'{DEFAULT_PROFILE} (default)'}…", flush=True)
    engine = open_engine(args)
    try:
        engine.check_route(args.route, args.router)
        conversation = engine.conversation(thread_id=args.thread, store=args.store)
        continue_args = [a for flag, value in (("--store", args.store), ("--profile", args.profile)) if value
                         for a in (flag, str(value))]
        session = ChatSession(engine, conversation, route=args.route, router=args.router,
                              continue_args=continue_args)
        if args.image is not None:
            session.take_image(args.image)
        return session.run()
    finally:
        engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vqagraph.agents.chat [IMAGE] [--thread ID] ...`: the chat command alone."""
    parser = argparse.ArgumentParser(prog="vqagraph chat", description=__doc__.splitlines()[0] if __doc__ else None)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    quiet_libraries()
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
