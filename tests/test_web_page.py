"""The web page end to end in a real headless Chromium (Debian's `chromium`, driven by Playwright), and its main
path in Firefox (Debian's `firefox-esr`, driven by Mozilla's own Marionette client).

A real server (uvicorn in a thread, the tiny profile, a SQLite thread store) serves the page; the browser uploads
an image, draws marks with the mouse (and a finger), asks, watches the answer stream in, opens the explain panel,
reloads and finds the thread. Every request the page makes is checked to stay on loopback. Each test saves a
screenshot under $VQAGRAPH_SCREENSHOTS (default: the test's tmp_path).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw

uvicorn = pytest.importorskip("uvicorn")
playwright_api = pytest.importorskip("playwright.sync_api")

from vqagraph.agents.openai_server import create_app  # noqa: E402
from vqagraph.tools.llm.vllm_server import free_port  # noqa: E402

KEY = "web-test-key"
OTHER = "another-users-key"
MAX_PIXELS = 3_000_000
CHROMIUM = os.environ.get("VQAGRAPH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FIREFOX = os.environ.get("VQAGRAPH_FIREFOX") or shutil.which("firefox-esr") or shutil.which("firefox")
if CHROMIUM is None and os.environ.get("VQAGRAPH_REQUIRE_BROWSER") != "1":
    pytest.skip("no chromium here (scripts/browsers.sh installs Debian's)", allow_module_level=True)


def scene() -> Image.Image:
    """A 900x600 picture: shown scaled down in the page, so display and image pixels differ."""
    image = Image.new("RGB", (900, 600), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((120, 140, 320, 340), fill=(220, 30, 30))
    draw.rectangle((520, 200, 720, 400), fill=(30, 60, 220))
    return image


@pytest.fixture(scope="module")
def server(engine: Any, tmp_path_factory: pytest.TempPathFactory, serve_app: Any) -> Iterator[str]:
    store = str(tmp_path_factory.mktemp("web-threads") / "threads.sqlite")
    app = create_app(engine, api_keys=[KEY, OTHER], store=store, max_image_pixels=MAX_PIXELS)
    with serve_app(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM is not None, "VQAGRAPH_REQUIRE_BROWSER=1 but no chromium: run scripts/browsers.sh"
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Page:
    """A browser tab on the page, with every request it makes recorded (anything off loopback is aborted)."""

    def __init__(self, browser: Any, base: str, shots: Path, touch: bool = False) -> None:
        # bypass_csp: Playwright's own waits evaluate strings, which the page's CSP (rightly) forbids.
        self.context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True, has_touch=touch)
        self.page = self.context.new_page()
        self.base, self.shots = base, shots
        self.requests: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.context.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        request = route.request
        self.requests.append(request.url)
        if request.url.startswith(("data:", "blob:")) or urlsplit(request.url).hostname == "127.0.0.1":
            if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
                self.bodies.append(json.loads(request.post_data))
            route.continue_()
        else:
            route.abort()

    def open(self, key: str = KEY) -> Any:
        self.page.goto(self.base + "/")
        self.page.wait_for_selector("body[data-ready=true]")
        if key is not None and self.page.input_value("#api-key") != key:
            self.page.fill("#api-key", key)
            self.page.dispatch_event("#api-key", "change")
        return self.page

    def upload(self, image: Image.Image, tmp: Path) -> None:
        path = tmp / "scene.png"
        image.save(path)
        self.page.set_input_files("#file", str(path))
        self.page.wait_for_selector("#stage:not([hidden])")
        self.page.wait_for_function("document.getElementById('picture').dataset.rendered === 'plain'")

    def to_screen(self, x: float, y: float, size: tuple[int, int]) -> tuple[float, float]:
        """Image pixels to the page's CSS pixels, from where the picture is shown and how large."""
        rect = self.page.locator("#overlay").bounding_box()
        return rect["x"] + x * rect["width"] / size[0], rect["y"] + y * rect["height"] / size[1]

    def drag(self, points: list[tuple[float, float]], size: tuple[int, int]) -> None:
        mouse = self.page.mouse
        mouse.move(*self.to_screen(*points[0], size))
        mouse.down()
        for point in points[1:]:
            mouse.move(*self.to_screen(*point, size), steps=4)
        mouse.up()

    def tool(self, name: str) -> None:
        self.page.click(f"#tools [data-tool={name}]")

    def rendered(self, marks: int) -> Image.Image:
        """The picture the page shows once the server has drawn `marks` marks on it."""
        expected = str(marks) if marks else "plain"
        self.page.wait_for_function(f"document.getElementById('picture').dataset.rendered === '{expected}'")
        data = self.page.evaluate("""async () => {
            const blob = await (await fetch(document.getElementById('picture').src)).blob();
            return await new Promise((ok) => { const r = new FileReader(); r.onload = () => ok(r.result);
                                               r.readAsDataURL(blob); });
        }""")
        return Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB")

    def marks(self) -> list[dict[str, Any]]:
        return self.page.evaluate("() => JSON.parse(JSON.stringify(window.vqagraph.state.marks))")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def off_loopback(self) -> list[str]:
        return [u for u in self.requests
                if not u.startswith(("data:", "blob:")) and urlsplit(u).hostname != "127.0.0.1"]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    root = Path(os.environ.get("VQAGRAPH_SCREENSHOTS") or tmp_path)
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def tab(browser: Any, server: str, shots: Path) -> Iterator[Page]:
    opened = Page(browser, server, shots)
    yield opened
    assert not opened.errors, f"script errors in the page: {opened.errors}"
    assert not opened.off_loopback(), f"requests left the machine: {opened.off_loopback()}"
    opened.close()


def near(got: list[float], want: list[float], tolerance: float = 2.0) -> bool:
    return len(got) == len(want) and all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


def test_draw_ask_stream_explain_reload(tab: Page, engine: Any, server: str, tmp_path: Path) -> None:
    picture = scene()
    page = tab.open()
    tab.upload(picture, tmp_path)
    shown = page.locator("#overlay").bounding_box()
    assert shown["width"] < picture.width  # shown scaled: the page must map display pixels to image pixels
    assert abs(shown["width"] / shown["height"] - picture.width / picture.height) < 0.01  # its own aspect ratio

    tab.tool("rectangle")
    tab.drag([(100, 120), (340, 360)], picture.size)
    tab.tool("arrow")
    tab.drag([(820, 520), (640, 320)], picture.size)
    drawn = tab.rendered(2)
    marks = tab.marks()
    assert [m["shape"] for m in marks] == ["rectangle", "arrow"]
    assert near(marks[0]["box"], [100, 120, 340, 360])
    assert near(marks[1]["path"][0], [820, 520]) and near(marks[1]["path"][-1], [640, 320])
    # What the user sees is what the routes see: the page's picture is the engine's rendering, pixel for pixel.
    assert drawn.tobytes() == engine.render(picture, marks).tobytes()
    tab.shot("web-marks")

    page.select_option("#route", "img2llm")
    page.fill("#question", "What colour is the shape within the red rectangle?")
    # Count the answer's text changes as it arrives: streamed means several, not one at the end.
    page.evaluate("""() => { window.vqagraphUpdates = 0;
        new MutationObserver(() => window.vqagraphUpdates++).observe(document.getElementById('turns'),
            {subtree: true, characterData: true, childList: true}); }""")
    page.click("#send")
    page.wait_for_selector("#turns li .meta .route", timeout=120_000)
    answer = page.locator("#turns li").last.get_attribute("data-answer")
    assert answer and page.locator("#turns li .a").last.inner_text() == answer
    assert page.evaluate("window.vqagraphUpdates") > 3
    assert page.locator("#turns li .route").last.inner_text() == "img2llm"
    assert page.is_hidden("#error")

    # The marks that reached the server: the request carried them, and the thread kept them in image pixels.
    sent = tab.bodies[-1]["vqagraph"]
    assert sent["marks"] == marks and sent["route"] == "img2llm"
    thread = sent["thread"]
    headers = {"Authorization": f"Bearer {KEY}"}
    kept = httpx.get(f"{server}/v1/threads/{thread}", headers=headers).json()
    assert [m["shape"] for m in kept["turns"][0]["marks"]] == ["rectangle", "arrow"]
    assert near(kept["turns"][0]["marks"][0]["box"], [100, 120, 340, 360])

    page.click("#turns li .explain")
    page.wait_for_selector("#explain-picture:not([hidden])")
    assert page.evaluate("document.getElementById('explain-picture').naturalWidth") > picture.width
    assert "gradcam" in page.inner_text("#explain-trace")
    tab.shot("web-explain")

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector(f"#threads li[data-thread='{thread}'].current")
    page.wait_for_selector("#turns li .route")
    assert page.locator("#turns li").count() == 1
    assert page.locator("#turns li").first.get_attribute("data-answer") == answer
    tab.rendered(0)  # the thread's image is back on the stage
    assert page.evaluate("window.vqagraph.state.image.width") == picture.width
    tab.shot("web-reloaded")

    # A follow-up without a new image is about the thread's image.
    page.fill("#question", "what shape is it?")
    page.click("#send")
    page.wait_for_function("document.querySelectorAll('#turns li .route').length === 2", timeout=120_000)
    follow_up = tab.bodies[-1]
    assert not any(part.get("type") == "image_url" for part in follow_up["messages"][0]["content"])
    assert len(httpx.get(f"{server}/v1/threads/{thread}", headers=headers).json()["turns"]) == 2


def test_all_shapes_by_mouse_and_touch(browser: Any, server: str, shots: Path, engine: Any, tmp_path: Path) -> None:
    tab = Page(browser, server, shots, touch=True)
    try:
        picture = scene()
        page = tab.open()
        tab.upload(picture, tmp_path)
        size = picture.size
        tab.tool("rectangle")
        tab.drag([(50, 50), (200, 150)], size)
        tab.tool("ellipse")
        tab.drag([(500, 180), (740, 420)], size)
        tab.tool("triangle")
        for corner in [(400, 450), (480, 560), (330, 560)]:
            page.mouse.click(*tab.to_screen(*corner, size))
        tab.tool("point")
        page.mouse.click(*tab.to_screen(220, 240, size))
        tab.tool("arrow")
        tab.drag([(850, 100), (700, 250)], size)
        tab.tool("scribble")
        tab.drag([(600, 60), (650, 90), (700, 60), (750, 90)], size)
        tab.tool("mask")
        tab.drag([(120, 400), (260, 400), (260, 540), (120, 540), (120, 410)], size)
        # The mask contour with a finger: touch events through the browser's own input pipeline.
        tab.tool("mask_contour")
        cdp = tab.context.new_cdp_session(page)
        ring = [(560, 450), (700, 450), (700, 580), (560, 580), (560, 460)]
        for kind, point in [("touchStart", ring[0]), *[("touchMove", p) for p in ring[1:]], ("touchEnd", None)]:
            touches = [] if point is None else [dict(zip(("x", "y"), tab.to_screen(*point, size), strict=True))]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touches})
        drawn = tab.rendered(8)
        marks = tab.marks()
        assert [m["shape"] for m in marks] == ["rectangle", "ellipse", "triangle", "point", "arrow", "scribble",
                                               "mask", "mask_contour"]
        assert near(marks[1]["box"], [500, 180, 740, 420])
        assert near(marks[2]["path"][0], [400, 450]) and len(marks[2]["path"]) == 3
        assert near(marks[3]["point"], [220, 240])
        assert len(marks[5]["path"]) >= 4 and len(marks[6]["polygon"]) >= 4
        xs = [p[0] for p in marks[7]["polygon"]]
        assert near([min(xs), max(xs)], [560, 700])
        assert drawn.tobytes() == engine.render(picture, marks).tobytes()
        tab.shot("web-all-shapes")

        # Select, move, delete, undo.
        tab.tool("select")
        page.mouse.click(*tab.to_screen(125, 100, size))
        assert page.evaluate("window.vqagraph.state.selected") == 0
        tab.drag([(125, 100), (165, 130)], size)
        assert near(tab.marks()[0]["box"], [90, 80, 240, 180])
        page.keyboard.press("Delete")
        assert tab.marks()[0]["shape"] == "ellipse" and len(tab.marks()) == 7
        page.click("#undo")
        page.click("#undo")
        assert near(tab.marks()[0]["box"], [50, 50, 200, 150])
        assert not tab.errors and not tab.off_loopback()
    finally:
        tab.close()


def test_errors_are_one_line_and_the_server_stays_up(tab: Page, server: str, tmp_path: Path) -> None:
    page = tab.open()
    # A file that is not an image: the browser cannot read it.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    page.set_input_files("#file", str(broken))
    page.wait_for_selector("#error:not([hidden])")
    assert "cannot read this image" in page.inner_text("#error")
    # An image the server refuses (over its pixel limit): the server's message, one line.
    big = Image.new("RGB", (2000, 2000), "white")
    tab.upload(big, tmp_path)
    page.fill("#question", "what is this?")
    page.click("#send")
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert "pixels" in message and "\n" not in message and "Traceback" not in message
    assert page.locator("#turns li").count() == 0
    tab.shot("web-error")
    # A wrong key: said in the page.
    page.fill("#api-key", "wrong")
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.getElementById('error').textContent.includes('API key')")
    assert httpx.get(f"{server}/health").status_code == 200


def test_threads_rename_and_delete(tab: Page, server: str, tmp_path: Path) -> None:
    page = tab.open()
    tab.upload(scene(), tmp_path)
    page.fill("#question", "how many shapes are there?")
    page.click("#send")
    page.wait_for_selector("#turns li .route", timeout=120_000)
    thread = tab.bodies[-1]["vqagraph"]["thread"]
    item = f"#threads li[data-thread='{thread}']"
    page.wait_for_selector(item)
    page.once("dialog", lambda dialog: dialog.accept("Two shapes"))
    page.click(f"{item} .rename")
    page.wait_for_function(f"document.querySelector(\"{item} .title\").textContent === 'Two shapes'")
    page.click("#new-thread")
    assert page.locator("#turns li").count() == 0 and page.is_visible("#drop-hint")
    page.click(f"{item} .title")
    page.wait_for_selector("#turns li .route")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{item} .delete")
    page.wait_for_selector(item, state="detached")
    # A page whose remembered thread is gone starts fresh, without an error.
    page.evaluate(f"localStorage.setItem('vqagraph.thread', '{thread}')")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.is_hidden("#error") and page.evaluate("localStorage.getItem('vqagraph.thread')") is None
    gone = httpx.get(f"{server}/v1/threads/{thread}", headers={"Authorization": f"Bearer {KEY}"})
    assert gone.status_code == 404
    tab.shot("web-threads")


def test_threads_belong_to_their_key(server: str, engine: Any) -> None:
    """Each key sees only the threads it started: another key's are neither listed, read, renamed, deleted,
    continued nor explained (all 404, as for a thread that does not exist)."""
    mine, theirs = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {OTHER}"}
    buffer = io.BytesIO()
    scene().save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    asked = httpx.post(f"{server}/v1/chat/completions", headers=mine, timeout=120, json={
        "model": "vqagraph", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What colour is the circle?"}, {"type": "image_url", "image_url": {"url": url}}]}],
        "vqagraph": {"thread": "owned-by-key-1", "route": "img2llm"}})
    assert asked.status_code == 200, asked.text
    listed = httpx.get(f"{server}/v1/threads", headers=mine).json()["data"]
    assert "owned-by-key-1" in [t["thread_id"] for t in listed]
    assert set(listed[0]) == {"thread_id", "title", "created", "updated", "turns"}
    assert "owned-by-key-1" not in [t["thread_id"] for t in httpx.get(f"{server}/v1/threads", headers=theirs)
                                    .json()["data"]]
    base = f"{server}/v1/threads/owned-by-key-1"
    for response in (httpx.get(base, headers=theirs), httpx.get(base + "/image", headers=theirs),
                     httpx.patch(base, headers=theirs, json={"title": "mine now"}),
                     httpx.delete(base, headers=theirs),
                     httpx.get(f"{server}/v1/answers/{asked.json()['id']}/explain.png", headers=theirs),
                     httpx.post(f"{server}/v1/chat/completions", headers=theirs, timeout=120, json={
                         "model": "vqagraph", "messages": [{"role": "user", "content": "and its shape?"}],
                         "vqagraph": {"thread": "owned-by-key-1"}})):
        assert response.status_code == 404, response.text
    assert httpx.get(base, headers=mine).json()["turns"][0]["question"] == "What colour is the circle?"
    explained = httpx.get(f"{server}/v1/answers/{asked.json()['id']}/explain.png", headers=mine)
    assert explained.status_code == 200 and explained.content[:4] == b"\x89PNG"
    assert httpx.get(f"{server}/v1/threads", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_page_assets_are_served_locally(server: str) -> None:
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{server}/static/{asset}").status_code == 200
    assert httpx.get(f"{server}/static/../web.py").status_code == 404
    text = page.text + httpx.get(f"{server}/static/app.js").text + httpx.get(f"{server}/static/style.css").text
    assert "http://" not in text and "https://" not in text  # nothing to fetch from elsewhere


def test_ui_command_prints_the_page_and_serves_it() -> None:
    """`vqagraph ui` listens on loopback, says where the page is, serves it, and stops on Ctrl-C."""
    import signal
    import subprocess
    import sys

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "vqagraph", "ui", "--port", str(port), "--profile", "tiny"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("vqagraph ui: open"):
                break
        assert lines and lines[-1].split()[3] == f"http://127.0.0.1:{port}/", "".join(lines)
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
                time.sleep(0.2)
        assert page.status_code == 200 and "<title>vqagraph</title>" in page.text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    assert process.returncode in (0, 130)  # 130: stopped by Ctrl-C, as a shell reports it


def test_an_unreachable_llm_server_is_one_line_in_the_page(browser: Any, shots: Path, serve_app: Any,
                                                           model_cache: Path, tmp_path: Path) -> None:
    """The LLM server down: the page says so in one line (no backend URL), and the server stays up."""
    from vqagraph import Engine

    down = Engine.from_profile("tiny", llm_backend={"kind": "vllm-server", "url": f"http://127.0.0.1:{free_port()}"})
    try:
        with serve_app(create_app(down, store="memory")) as url:
            tab = Page(browser, url, shots)
            try:
                page = tab.open(key=None)
                tab.upload(scene(), tmp_path)
                page.select_option("#route", "img2llm")
                page.fill("#question", "What colour is the circle?")
                page.click("#send")
                page.wait_for_selector("#error:not([hidden])", timeout=120_000)
                message = page.inner_text("#error")
                assert "LLM server is unavailable" in message and "127.0.0.1" not in message and "\n" not in message
                assert page.locator("#turns li").count() == 0
                tab.shot("web-llm-down")
                assert httpx.get(f"{url}/health").status_code == 200
                assert not tab.errors and not tab.off_loopback()
            finally:
                tab.close()
    finally:
        down.close()


@pytest.mark.skipif(FIREFOX is None and os.environ.get("VQAGRAPH_REQUIRE_BROWSER") != "1",
                    reason="no firefox here (scripts/browsers.sh installs Debian's firefox-esr)")
def test_firefox_draws_asks_and_streams(server: str, shots: Path, tmp_path: Path) -> None:
    """The same page in Firefox: upload, a rectangle and an arrow dragged with the mouse (in image pixels), a
    streamed answer with its route."""
    assert FIREFOX is not None, "VQAGRAPH_REQUIRE_BROWSER=1 but no firefox: run scripts/browsers.sh"
    from marionette_driver.by import By
    from marionette_driver.marionette import Marionette

    picture = scene()
    picture.save(tmp_path / "scene.png")
    firefox = Marionette(host="127.0.0.1", port=free_port(), bin=FIREFOX, headless=True,
                         gecko_log=str(tmp_path / "gecko.log"))  # not the working directory
    firefox.start_session()

    def until(script: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not firefox.execute_script(f"return {script}"):
            assert time.monotonic() < deadline, f"timed out waiting for {script}"
            time.sleep(0.1)

    try:
        firefox.set_window_rect(width=1400, height=900)
        firefox.navigate(server + "/")
        until("document.body.dataset.ready === 'true'")
        firefox.find_element(By.ID, "api-key").send_keys(KEY)
        firefox.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
        firefox.find_element(By.ID, "file").send_keys(str(tmp_path / "scene.png"))
        until("document.getElementById('picture').dataset.rendered === 'plain'")
        left, top, width, height = firefox.execute_script(
            "const r = document.getElementById('overlay').getBoundingClientRect(); "
            "return [r.left, r.top, r.width, r.height]")
        assert width < picture.width

        def drag(start: tuple[int, int], end: tuple[int, int]) -> None:
            x0, y0 = (round(left + start[0] * width / picture.width), round(top + start[1] * height / picture.height))
            x1, y1 = (round(left + end[0] * width / picture.width), round(top + end[1] * height / picture.height))
            firefox.actions.sequence("pointer", "mouse", {"pointerType": "mouse"}).pointer_move(x0, y0) \
                .pointer_down().pointer_move(x1, y1, duration=200).pointer_up().perform()

        drag((100, 120), (340, 360))
        firefox.find_element(By.CSS_SELECTOR, "#tools [data-tool=arrow]").click()
        drag((820, 520), (640, 320))
        until("document.getElementById('picture').dataset.rendered === '2'")
        marks = json.loads(firefox.execute_script("return JSON.stringify(window.wrappedJSObject.vqagraph.state.marks)"))
        assert [m["shape"] for m in marks] == ["rectangle", "arrow"]
        assert near(marks[0]["box"], [100, 120, 340, 360])
        assert near(marks[1]["path"][0], [820, 520]) and near(marks[1]["path"][-1], [640, 320])
        firefox.find_element(By.ID, "question").send_keys("What colour is the shape within the red rectangle?")
        firefox.find_element(By.ID, "send").click()
        until("document.querySelectorAll('#turns li .route').length === 1", 120)
        answer = firefox.execute_script("return document.querySelector('#turns li').dataset.answer")
        assert answer and firefox.execute_script("return document.querySelector('#turns li .a').textContent") == answer
        assert firefox.execute_script("return document.getElementById('error').hidden")
        (shots / "web-firefox.png").write_bytes(firefox.screenshot(format="binary"))
    finally:
        firefox.delete_session()
        firefox.cleanup()


def test_the_page_endpoints_refuse_bad_input_in_one_line(server: str) -> None:
    """The page's own endpoints hold the server's rules: no files named by a client, strict JSON bodies, one-line
    errors, and the server still answers afterwards."""
    headers = {"Authorization": f"Bearer {KEY}"}
    buffer = io.BytesIO()
    scene().save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    cases = [
        (httpx.post(f"{server}/v1/render", headers=headers, json={
            "image": url, "marks": [{"shape": "mask", "mask_path": "/etc/passwd"}]}), 400, "mask_path"),
        (httpx.post(f"{server}/v1/render", headers=headers, json={
            "image": url, "marks": [{"shape": "rectangle", "box": [0, 0, 50, 50], "width": 10**9}]}), 400, "width"),
        (httpx.post(f"{server}/v1/render", headers=headers, json={"image": "/etc/passwd", "marks": []}), 400, "URL"),
        (httpx.post(f"{server}/v1/render", headers=headers, json={"image": url, "marks": [], "x": 1}), 400, "x"),
        (httpx.post(f"{server}/v1/render", headers={**headers, "Content-Type": "text/plain"},
                    content=b'{"image": "", "marks": []}'), 415, "JSON"),
        (httpx.patch(f"{server}/v1/threads/nothing-here", headers=headers, json={"title": 5}), 400, "title"),
        (httpx.get(f"{server}/v1/threads/bad%20id", headers=headers), 404, "no such thread"),
        (httpx.get(f"{server}/v1/answers/unknown/explain.png", headers=headers), 404, "no such"),
        (httpx.get(f"{server}/static/app.js.map"), 404, "not found"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        message = response.json()["error"]["message"]
        assert words in message and "\n" not in message and "Traceback" not in message, message
    assert httpx.get(f"{server}/health").status_code == 200
    assert httpx.post(f"{server}/v1/render", headers=headers, json={"image": url, "marks": [
        {"shape": "point", "point": [100, 100]}]}).content[:4] == b"\x89PNG"
