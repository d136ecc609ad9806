"""`vqagraph mcp`: the server launched over stdio by the official `mcp` SDK's client, as a desktop agent does."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image, ImageDraw

mcp = pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILE = """\
extends = "tiny"
llm = "builtin:tiny-llama"
qformer = "builtin:tiny-blip2"
"""


def scene() -> Image.Image:
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 90, 90), fill=(255, 0, 0))
    image.putpixel((159, 119), (21, 21, 21))
    return image


async def drive(params: StdioServerParameters, picture: Path, errlog: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listed = await session.list_tools()
        seen["tools"] = {tool.name: tool for tool in listed.tools}
        seen["ask"] = await session.call_tool("ask_image", {"image": str(picture), "question": "What colour is it?",
                                                            "thread": "mcp-1", "route": "bridge"})
        seen["turn"] = await session.call_tool("ask_image", {"image": None, "question": "and what shape?",
                                                             "thread": "mcp-1", "route": "bridge",
                                                             "temperature": 0.7, "max_tokens": 2, "seed": 3})
        seen["render"] = await session.call_tool(
            "render_marks", {"image": str(picture), "marks": [{"shape": "rectangle", "box": [10, 10, 100, 100]}]})
        seen["missing"] = await session.call_tool("ask_image", {"image": str(picture.with_name("gone.png")),
                                                                "question": "What?"})
    return seen


def test_stdio_server_lists_and_answers(model_cache: Path, tmp_path: Path) -> None:
    profile = tmp_path / "fast.toml"
    profile.write_text(PROFILE)
    picture = tmp_path / "circle.png"
    scene().save(picture)
    env = {"VQAGRAPH_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1", "VQAGRAPH_DATA": str(tmp_path / "data"),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    params = StdioServerParameters(command=sys.executable, cwd=ROOT, env=env,
                                   args=["-m", "vqagraph.agents.mcp_server", "--profile", str(profile),
                                         "--store", "memory"])
    with (tmp_path / "server.log").open("w") as errlog:
        seen = anyio.run(drive, params, picture, errlog)

    assert {"ask_image", "render_marks"} <= set(seen["tools"])
    schema = seen["tools"]["ask_image"].input_schema
    assert set(schema["required"]) >= {"question"} and "marks" in schema["properties"]
    assert {"temperature", "max_tokens", "seed"} <= set(schema["properties"])  # how the LLM decodes, per call

    ask = seen["ask"]
    assert not ask.is_error, ask.content
    answer = ask.structured_content
    assert answer["route"] == "bridge" and answer["meaningless"] is True and answer["image_ref"].startswith("sha256:")
    assert answer["answer"] in ask.content[0].text  # the same result as JSON text, for clients without structure

    turn = seen["turn"]  # the thread's second turn, about its current image
    assert not turn.is_error, turn.content
    assert turn.structured_content["image_ref"] == answer["image_ref"] and turn.structured_content["thread"] == "mcp-1"

    render = seen["render"]
    assert not render.is_error and render.content[0].type == "image" and render.content[0].mime_type == "image/png"
    drawn = Image.open(io.BytesIO(base64.b64decode(render.content[0].data)))
    assert drawn.size == (160, 120) and drawn.getpixel((10, 50)) != (255, 255, 255)  # the rectangle's edge

    assert seen["missing"].is_error and "not found" in seen["missing"].content[0].text
