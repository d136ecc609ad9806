"""Hostile inputs at the local front ends: the CLI, the MCP server and the LangChain tool. Each is refused with a
one-line message (exit status 2 at the CLI; the tool's error content for MCP and LangChain) and no traceback, and
the server or tool still answers a valid question afterwards. Drawing limits are what keeps marks cheap: a width,
a coordinate or a point count beyond them never reaches the drawing code."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image, ImageDraw

from vqagraph.agents.langchain_tool import VisualQuestionTool

ROOT = Path(__file__).resolve().parents[1]
PROFILE = """\
extends = "tiny"
llm = "builtin:tiny-llama"
qformer = "builtin:tiny-blip2"
"""
NAN, INF = float("nan"), float("inf")
BOX = [10, 10, 100, 90]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge picture: a decompression bomb as far as any decoder can tell."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@dataclass
class Files:
    """The files the cases point at: a picture and a mask under the tool's folder, hostile ones in and out of it."""

    root: Path  # the LangChain tool's image_root
    picture: Path
    mask: Path  # a valid mask the picture's size, inside root
    outside_mask: Path  # the same mask, outside root
    fifo: Path  # inside root
    corrupt: Path
    text: Path
    bomb: Path
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "images"
    root.mkdir()
    picture = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(picture).ellipse((20, 20, 90, 90), fill=(255, 0, 0))
    picture.save(root / "circle.png")
    mask = Image.new("L", (160, 120), 0)
    ImageDraw.Draw(mask).rectangle((20, 20, 90, 90), fill=255)
    mask.save(root / "mask.png")
    mask.save(base / "outside-mask.png")
    os.mkfifo(root / "fifo.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20)
    (root / "notes.png").write_text("hello, I am text\n")
    (root / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    return Files(root, root / "circle.png", root / "mask.png", base / "outside-mask.png", root / "fifo.png",
                 root / "corrupt.png", root / "notes.png", root / "bomb.png")


@dataclass
class Case:
    """One hostile call: its arguments (built from the files), the words its error must hold, and where it runs."""

    name: str
    args: Callable[[Files], dict[str, Any]]
    words: str
    mcp: bool = True  # also over MCP (the LangChain tool takes every case)
    mcp_words: str | None = None


def ask(f: Files, **changes: Any) -> dict[str, Any]:
    return {"image": str(f.picture), "question": "What colour is it?", "route": "bridge", **changes}


def marked(f: Files, **mark: Any) -> dict[str, Any]:
    return ask(f, marks=[{"shape": "rectangle", "box": BOX} | mark])


CASES = [
    Case("width-1e9", lambda f: marked(f, width=10**9), "over the limit of 1024 pixels"),
    Case("width-3e4", lambda f: marked(f, width=30_000), "over the limit of 1024 pixels"),
    Case("width-over-image", lambda f: marked(f, width=100), "over the limit of 20 pixels for the 160x120 image"),
    Case("radius-over-image", lambda f: ask(f, marks=[{"shape": "point", "point": [50, 50], "width": 21}]),
         "radius 21 is over the limit of 20 pixels"),
    Case("box-1e9", lambda f: marked(f, box=[0, 0, 1e9, 1e9]), "beyond the limit of ±1600 pixels"),
    Case("box-1e308", lambda f: marked(f, shape="ellipse", box=[-1e308, -1e308, 1e308, 1e308]), "beyond the limit"),
    Case("box-nan", lambda f: marked(f, box=[0, 0, NAN, 10]), "finite number", mcp=False),
    Case("box-inf", lambda f: marked(f, shape="triangle", box=[0, 0, INF, 10]), "finite number", mcp=False),
    Case("point-1e9", lambda f: ask(f, marks=[{"shape": "point", "point": [1e9, 5]}]), "beyond the limit"),
    Case("polygon-1e308", lambda f: ask(f, marks=[{"shape": "scribble", "polygon": [[0, 0], [1e308, 0], [0, 9]]}]),
         "beyond the limit"),
    Case("polygon-1001-points",
         lambda f: ask(f, marks=[{"shape": "mask_contour", "polygon": [[i % 160, i % 7] for i in range(1001)]}]),
         "1001 points, over the limit of 1000"),
    Case("nine-marks", lambda f: ask(f, marks=[{"shape": "rectangle", "box": BOX}] * 9),
         "9 marks given; at most 8"),
    Case("mask-etc-passwd", lambda f: ask(f, marks=[{"shape": "mask", "mask_path": "/etc/passwd"}]),
         "outside the folder this tool may read", mcp_words="mask_path is not accepted here"),
    Case("mask-fifo", lambda f: ask(f, marks=[{"shape": "mask", "mask_path": str(f.fifo)}]),
         "is not a regular file", mcp_words="mask_path is not accepted here"),
    Case("mask-outside-root", lambda f: ask(f, marks=[{"shape": "mask_contour", "mask_path": str(f.outside_mask)}]),
         "outside the folder this tool may read", mcp_words="mask_path is not accepted here"),
    Case("mask-dotdot", lambda f: ask(f, marks=[{"shape": "mask", "mask_path": "../outside-mask.png"}]),
         "outside the folder this tool may read", mcp_words="mask_path is not accepted here"),
    Case("sha256-dotdot", lambda f: ask(f, image="sha256:../../outside/secret"), "64 lowercase hex digits"),
    Case("sha256-not-hex", lambda f: ask(f, image="sha256:" + "g" * 64), "64 lowercase hex digits"),
    Case("question-undecodable-byte", lambda f: ask(f, question="what\udcff?"),
         "not valid UTF-8 text (undecodable byte 0xff", mcp=False),  # the MCP client cannot encode it
    Case("question-nul", lambda f: ask(f, question="what\x00colour?"), "control character (U+0000)"),
    Case("question-escape", lambda f: ask(f, question="\x1b[2Jwhat?"), "control character (U+001B)"),
    Case("question-empty", lambda f: ask(f, question="  \n "), "the question is empty"),
    Case("question-overlong", lambda f: ask(f, question="why " * 2000), "over the limit of 1000"),
    Case("question-missing", lambda f: {"image": str(f.picture)}, "question: Field required"),
    Case("question-not-text", lambda f: ask(f, question=123), "question: Input should be a valid string"),
    Case("route-unknown", lambda f: ask(f, route="teleport"),
         "route: unknown route 'teleport'; choose one of auto, img2llm"),
    Case("box-wrong-type", lambda f: marked(f, box="abc"), "box: Input should be a valid"),
    Case("marks-not-a-list", lambda f: ask(f, marks="rectangle"), "marks: Input should be a valid list"),
    Case("colour-overlong", lambda f: marked(f, colour="r" * 10_000), "a colour of 10000 characters"),
    Case("image-corrupt", lambda f: ask(f, image=str(f.corrupt)), "unreadable or truncated image"),
    Case("image-not-an-image", lambda f: ask(f, image=str(f.text)), "not an image"),
    Case("image-bomb", lambda f: ask(f, image=str(f.bomb)), "too large"),
    Case("image-bomb-data-url", lambda f: ask(f, image=data_url(png_claiming(100_000, 100_000))), "too large"),
    Case("image-fifo", lambda f: ask(f, image=str(f.fifo)), "not a regular file"),
    Case("image-outside-root", lambda f: ask(f, image="/etc/passwd"), "outside the folder this tool may read",
         mcp_words="not an image"),
]


def one_line(text: str) -> str:
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# -- the LangChain tool -------------------------------------------------------------------------------------------

def call(tool: VisualQuestionTool, args: dict[str, Any], sync: bool = True) -> Any:
    message = {"name": tool.name, "id": "h", "type": "tool_call", "args": args}
    return tool.invoke(message) if sync else asyncio.run(tool.ainvoke(message))


def check_answers(tool: VisualQuestionTool, f: Files) -> None:
    good = call(tool, ask(f))
    assert good.status == "success" and good.content == good.artifact["answer"], good.content


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_langchain_tool_returns_hostile_input_errors_as_content(engine: Any, files: Files, case: Case) -> None:
    tool = VisualQuestionTool(engine=engine, image_root=files.root, store="memory")
    for sync in (True, False):
        message = call(tool, case.args(files), sync=sync)
        assert message.status == "error", message.content
        assert case.words in one_line(message.content), message.content
        assert str(files.root) not in message.content  # the folder is not the agent's business
    check_answers(tool, files)


def test_langchain_tool_reads_relative_paths_and_masks_under_its_folder(engine: Any, files: Files) -> None:
    tool = VisualQuestionTool(engine=engine, image_root=files.root, store="memory")
    message = call(tool, ask(files, image="circle.png", marks=[{"shape": "mask", "mask_path": "mask.png"}]))
    assert message.status == "success", message.content
    assert message.artifact["trace"]["visual_prompt"]["phrases"] == ["with the red mask"]
    missing = call(tool, ask(files, image="gone.png"))
    assert missing.status == "error" and "<image folder>/gone.png" in missing.content
    assert str(files.root) not in missing.content


# -- the MCP server -----------------------------------------------------------------------------------------------

async def drive_mcp(params: Any, calls: list[tuple[str, dict[str, Any]]], picture: Path,
                    errlog: Any) -> list[tuple[Any, Any]]:
    from mcp import ClientSession, stdio_client

    results = []
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for tool, args in calls:
            hostile = await session.call_tool(tool, args)
            good = await session.call_tool("ask_image", {"image": str(picture), "question": "What is it?",
                                                         "route": "bridge"})
            results.append((hostile, good))
    return results


def test_mcp_server_refuses_hostile_inputs_in_one_line(model_cache: Path, files: Files, tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from mcp import StdioServerParameters

    profile = tmp_path / "fast.toml"
    profile.write_text(PROFILE)
    env = {"VQAGRAPH_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1", "VQAGRAPH_DATA": str(tmp_path / "data"),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    params = StdioServerParameters(command=sys.executable, cwd=ROOT, env=env,
                                   args=["-m", "vqagraph.agents.mcp_server", "--profile", str(profile),
                                         "--store", "memory"])
    cases = [case for case in CASES if case.mcp]
    calls = [("ask_image", case.args(files)) for case in cases]
    calls.append(("render_marks", {"image": str(files.picture),
                                   "marks": [{"shape": "mask", "mask_path": str(files.mask)}]}))
    calls.append(("render_marks", {"image": str(files.picture),
                                   "marks": [{"shape": "rectangle", "box": BOX, "width": 10**9}]}))
    with (tmp_path / "server.log").open("w") as errlog:
        results = anyio.run(drive_mcp, params, calls, files.picture, errlog)
    words = [case.mcp_words or case.words for case in cases] + ["mask_path is not accepted here",
                                                                "over the limit of 1024 pixels"]
    for (tool, args), expected, (hostile, good) in zip(calls, words, results, strict=True):
        assert hostile.is_error, (tool, args, hostile.content)
        text = one_line(hostile.content[0].text)
        assert text.startswith(f"Error executing tool {tool}: ") and expected in text, text
        assert not good.is_error and good.structured_content["answer"], good.content


# -- the CLI ------------------------------------------------------------------------------------------------------

CLI_CASES = [
    ("box-1e9", ["{picture}", "What?", "--mark", "rectangle:0,0,1e9,1e9"], "beyond the limit of ±1600 pixels"),
    ("box-1e308", ["{picture}", "What?", "--mark", "ellipse:-1e308,0,1e308,9"], "beyond the limit"),
    ("box-nan", ["{picture}", "What?", "--mark", "rectangle:0,0,nan,10"], "finite"),
    ("point-inf", ["{picture}", "What?", "--mark", "point:inf,5"], "finite"),
    ("polygon-1001-points", ["{picture}", "What?", "--mark", "scribble:" + ",".join(["5,5"] * 1001)],
     "1001 points, over the limit of 1000"),
    ("nine-marks", ["{picture}", "What?"] + ["--mark", "rectangle:10,10,50,50"] * 9, "9 marks given; at most 8"),
    ("mask-etc-passwd", ["{picture}", "What?", "--mark", "mask:@/etc/passwd"], "cannot be read"),
    ("mask-fifo", ["{picture}", "What?", "--mark", "mask:@{fifo}"], "is not a regular file"),
    ("mask-bomb", ["{picture}", "What?", "--mark", "mask:@{bomb}"], "has far more pixels than the 160x120 image"),
    ("question-undecodable-byte", ["{picture}", "what\udcff?"], "not valid UTF-8 text (undecodable byte 0xff"),
    ("question-nul", ["{picture}", "what\x00?"], "control character (U+0000)"),
    ("question-empty", ["{picture}", " "], "the question is empty"),
    ("question-overlong", ["{picture}", "why " * 2000], "over the limit of 1000"),
    ("image-corrupt", ["{corrupt}", "What?"], "unreadable or truncated image"),
    ("image-not-an-image", ["{text}", "What?"], "not an image"),
    ("image-bomb", ["{bomb}", "What?"], "too large"),
    ("image-fifo", ["{fifo}", "What?"], "not a regular file"),
    ("image-sha256-dotdot", ["sha256:../../outside/secret", "What?"], "not found"),
]


@pytest.mark.parametrize(("argv", "words"), [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_cli_refuses_hostile_inputs_in_one_line(files: Files, capsys: pytest.CaptureFixture[str], argv: list[str],
                                                words: str) -> None:
    from vqagraph.agents.cli import main

    names = {"picture": files.picture, "fifo": files.fifo, "bomb": files.bomb, "corrupt": files.corrupt,
             "text": files.text}
    status = main(["ask", *(a.format(**names) for a in argv), "--profile", "tiny", "--store", "memory"])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    line = one_line(stderr.strip())
    assert line.startswith("vqagraph: error: ") and words in line, line


def test_cli_undecodable_argv_byte_is_one_line(files: Files) -> None:
    """The real thing: a byte that is not UTF-8 on the command line, as a shell passes `$'\\xff'`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "vqagraph", "ask", str(files.picture), b"what\xff?",
                           "--profile", "tiny"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr.strip()) == ("vqagraph: error: the question is not valid UTF-8 text (undecodable "
                                             "byte 0xff at character 5)")


# -- the shared checks every front end calls ----------------------------------------------------------------------

@pytest.mark.parametrize(("question", "words"), [
    ("what\udcff?", "not valid UTF-8 text (undecodable byte 0xff at character 5)"),
    ("what\ud800?", "not valid UTF-8 text (lone surrogate U+D800 at character 5)"),
    ("a\x00b", "control character (U+0000) at character 2"),
    ("a\x7fb", "control character (U+007F)"),
    ("a\x9bb", "control character (U+009B)"),
    (b"what?", "must be text, not bytes"),
    (["what?"], "must be text, not list"),
    (None, "the question is empty"),
    ("\t\n ", "the question is empty"),
    ("x" * 1001, "1001 characters, over the limit of 1000"),
])
def test_validate_question_refuses(question: Any, words: str) -> None:
    from vqagraph.errors import QuestionError
    from vqagraph.request import validate_question

    with pytest.raises(QuestionError) as caught:
        validate_question(question, 1000)
    assert words in one_line(str(caught.value))


def test_validate_question_tidies_ordinary_whitespace() -> None:
    from vqagraph.request import validate_question

    assert validate_question("  What\tcolour\r\nis the\x0bcar?\x0c ", 1000) == "What colour is the car?"
    assert validate_question("¿Qué color tiene el 🚗?", 1000) == "¿Qué color tiene el 🚗?"


def test_validate_marks_refuses_files_for_remote_callers_and_counts_first() -> None:
    from vqagraph.errors import MarkError
    from vqagraph.request import validate_marks
    from vqagraph.tools.visual_prompt import Mark

    assert validate_marks([{"shape": "mask", "mask_path": "m.png"}])[0].mask_path == "m.png"  # a local caller
    for marks in ([{"shape": "mask", "mask_path": "/etc/passwd"}], [Mark(shape="scribble", mask_path="m.png")]):
        with pytest.raises(MarkError, match="mark 0: mask_path is not accepted here"):
            validate_marks(marks, allow_files=False)
    for marks, words in [(["rectangle"], "mark 0: expected an object with a shape and a region, not str"),
                         ([{1: 2}], "mark 0: its field names must be strings"),
                         ("rectangle", "marks must be a list of marks, not str"),
                         ([{"shape": "x"}] * 1_000_000, "1000000 marks given; at most 8")]:
        with pytest.raises(MarkError) as caught:
            validate_marks(marks)  # type: ignore[arg-type]
        assert words in one_line(str(caught.value))


def test_image_store_never_reads_a_path_for_a_reference(tmp_path: Path) -> None:
    from vqagraph.errors import ImageError
    from vqagraph.media import ImageStore

    (tmp_path / "secret.png").write_bytes(png(Image.new("RGB", (4, 4))))
    store = ImageStore(root=tmp_path / "store")
    for ref in ("sha256:../secret", "sha256:" + "0" * 63, "sha256:" + "A" * 64, "../secret.png"):
        with pytest.raises(ImageError, match="64 lowercase hex digits"):
            store.get(ref)
