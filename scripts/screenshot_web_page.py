"""The README's picture of the web page (docs/web-page.png): a Shapes-world scene, a rectangle drawn with the mouse
round one object, the question streamed through the text route of the `shapes` profile, the explain panel open.

    .venv/bin/python scripts/screenshot_web_page.py [--out docs/web-page.png] [--seed 20261201]

Starts `vqagraph ui` on a free port (stopped at the end), drives Debian's chromium with Playwright.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from vqagraph.world.draw import render_scene
from vqagraph.world.scene import generate_scene


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/web-page.png")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vqagraph-shot-"))
    scene = generate_scene(args.seed, n_objects=(3, 3), size=(480, 360))
    render_scene(scene).save(work / "scene.png")
    target = max(scene.objects, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
    port = free_port()
    env = {**os.environ, "VQAGRAPH_DATA": str(work / "data")}
    server = subprocess.Popen([sys.executable, "-m", "vqagraph", "ui", "--port", str(port), "--profile", "shapes",
                               "--store", str(work / "threads.sqlite")], env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        chromium = os.environ.get("VQAGRAPH_CHROMIUM") or shutil.which("chromium")
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 760}, bypass_csp=True)
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready=true]")
            page.set_input_files("#file", str(work / "scene.png"))
            page.wait_for_selector("#stage:not([hidden])")
            rect = page.locator("#overlay").bounding_box()
            sx, sy = rect["width"] / scene.width, rect["height"] / scene.height
            # A margin round the object, kept on the picture (a press outside it draws nothing).
            x0, y0 = max(target.box[0] - 8, 2), max(target.box[1] - 8, 2)
            x1, y1 = min(target.box[2] + 8, scene.width - 2), min(target.box[3] + 8, scene.height - 2)
            page.mouse.move(rect["x"] + x0 * sx, rect["y"] + y0 * sy)
            page.mouse.down()
            page.mouse.move(rect["x"] + x1 * sx, rect["y"] + y1 * sy, steps=8)
            page.mouse.up()
            page.wait_for_function("['1', 'error'].includes(document.getElementById('picture').dataset.rendered)")
            if page.is_visible("#error"):
                raise SystemExit(f"the page says: {page.inner_text('#error')}")
            page.select_option("#route", "img2llm")
            page.fill("#question", "What colour is the shape within the red rectangle?")
            page.click("#send")
            page.wait_for_selector("#turns li .meta .route", timeout=300_000)
            page.click("#turns li .explain")
            page.wait_for_selector("#explain-picture:not([hidden])")
            page.wait_for_function("document.getElementById('explain-picture').complete")
            page.screenshot(path=args.out)
            answer = page.locator("#turns li").last.get_attribute("data-answer")
            browser.close()
        print(f"{args.out}: the {target.colour} {target.shape} marked; answer {answer!r}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
