"""Client of an OpenAI-compatible vLLM server: text prompts and prompt embeddings (docs/methods.md §3).

Embeddings are validated here (shape, hidden size, dtype, finite values, length) before anything is sent:
a wrongly shaped tensor can crash the engine, so it must never reach it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch
from PIL import Image

from vqagraph.errors import LLMError
from vqagraph.tools.batching import InFlight
from vqagraph.tools.llm.base import Generation, GenerationParams, OnToken, OnTokens, row_callbacks
from vqagraph.tools.llm.local_checkpoint import LocalCheckpoint

ACCEPTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def encode_prompt_embeds(embeds: torch.Tensor) -> str:
    """vLLM's wire format: base64 of `torch.save` of a `[seq_len, hidden]` tensor."""
    buffer = io.BytesIO()
    torch.save(embeds.detach().cpu().contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class VLLMClient(LocalCheckpoint):
    """A `FrozenLLM` served by vLLM; the tokenizer and embedding table come from the same model directory."""

    def __init__(
        self,
        base_url: str,
        model_dir: str | Path,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        concurrency: int = 8,
        in_flight: InFlight | None = None,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        # The engine's questions in flight: one waiting for the server's reply is counted as waiting on a model,
        # so the batches of other stages do not wait for it (tools/batching.py).
        self.in_flight = in_flight
        self.base_url = base_url.rstrip("/")
        self.model_dir = Path(model_dir)
        self.name = model or str(model_dir)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        config = AutoConfig.from_pretrained(self.model_dir)
        text_config = config.get_text_config()  # a served BLIP-2 checkpoint: its LLM's config
        self.hidden_size = int(text_config.hidden_size)
        self._eos = {self._tokenizer.eos_token_id} | set(_as_list(getattr(text_config, "eos_token_id", None)))
        self._context_length: int | None = None

    # --- FrozenLLM -------------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        if self._context_length is None:
            self._discover()
        assert self._context_length is not None
        return self._context_length

    def _discover(self) -> None:
        """Ask the server what it serves: its context length, and its model name when it serves just one."""
        models = self._request("GET", "/v1/models")["data"]
        entry = next((m for m in models if m["id"] == self.name), None)
        if entry is None:
            if len(models) != 1:
                served = ", ".join(m["id"] for m in models)
                raise LLMError(f"vLLM server at {self.base_url} does not serve {self.name!r} (it serves: {served})")
            entry = models[0]
            self.name = entry["id"]
        self._context_length = int(entry.get("max_model_len") or 2048)

    def generate(
        self, prompts: list[str], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]:
        """All prompts in one request (vLLM batches them in the engine); streamed prompts go one request each,
        concurrently, so each streams to its own callback."""
        params = params or GenerationParams()
        if self._context_length is None:
            self._discover()
        callbacks = row_callbacks(on_token, len(prompts))
        if any(callbacks):
            sampling = self._sampling(params)
            bodies = [{"model": self.name, "prompt": [p], **sampling} for p in prompts]
            return self._each(bodies, callbacks)
        body = {"model": self.name, "prompt": prompts, **self._sampling(params)}
        choices = sorted(self._request("POST", "/v1/completions", json=body)["choices"], key=lambda c: c["index"])
        return [self._generation(c, params.stop) for c in choices]

    def generate_from_embeddings(
        self, embeds: list[torch.Tensor], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]:
        """One request per sequence, sent concurrently; each tensor is validated before any is sent."""
        params = params or GenerationParams()
        for i, e in enumerate(embeds):
            self.validate_embeds(e, params, where=f"embeds[{i}]")
        sampling = self._sampling(params)
        bodies = [{"model": self.name, "prompt_embeds": encode_prompt_embeds(e), **sampling} for e in embeds]
        return self._each(bodies, row_callbacks(on_token, len(embeds)))

    def _each(self, bodies: list[dict[str, Any]], callbacks: list[OnToken]) -> list[Generation]:
        """One request per body, sent concurrently (vLLM batches them continuously); a body with a callback
        streams to it."""

        def one(body: dict[str, Any], on_token: OnToken) -> Generation:
            if on_token is not None:
                return self._stream(body, on_token)
            return self._generation(self._request("POST", "/v1/completions", json=body)["choices"][0],
                                    body.get("stop", ()))

        with self._waiting():
            if len(bodies) == 1:
                return [one(bodies[0], callbacks[0])]
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
                return list(pool.map(one, bodies, callbacks))

    def generate_with_image(
        self,
        text: str,
        *,
        image: Image.Image | None = None,
        image_embeds: torch.Tensor | None = None,
        params: GenerationParams | None = None,
    ) -> Generation:
        """For a BLIP-2 checkpoint that vLLM serves whole: the image (or its projected query embeddings,
        `[num_query_tokens, hidden]`) and the text; the server places the queries before BOS, as BLIP-2 does."""
        params = params or GenerationParams()
        if (image is None) == (image_embeds is None):
            raise LLMError("send either an image or its projected embeddings")
        if image_embeds is not None:
            self.validate_embeds(image_embeds, params, where="image embeddings")
            part: dict[str, Any] = {"type": "image_embeds", "image_embeds": encode_prompt_embeds(image_embeds)}
        else:
            assert image is not None
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
            part = {"type": "image_url", "image_url": {"url": url}}
        if self._context_length is None:
            self._discover()
        sampling = {**self._sampling(params), "logprobs": True, "top_logprobs": params.top_logprobs}
        body = {"model": self.name, "messages": [{"role": "user", "content": [part, {"type": "text", "text": text}]}],
                "add_special_tokens": True, **sampling}
        with self._waiting():
            choice = self._request("POST", "/v1/chat/completions", json=body)["choices"][0]
        content = (choice.get("logprobs") or {}).get("content") or []
        tokens = [_token_id(c["token"]) for c in content]
        values = [float(c["logprob"]) for c in content]
        first = {_token_id(t["token"]): float(t["logprob"]) for t in content[0].get("top_logprobs") or []} \
            if content and params.top_logprobs else {}
        return self.completion(tokens, values, choice.get("finish_reason"), params.stop, first)

    # --- validation and transport ----------------------------------------------------------------------------
    def validate_embeds(self, embeds: Any, params: GenerationParams, where: str = "prompt embeddings") -> None:
        if not isinstance(embeds, torch.Tensor):
            raise LLMError(f"{where}: expected a torch.Tensor, got {type(embeds).__name__}")
        if embeds.dim() != 2:
            raise LLMError(f"{where}: expected shape [seq_len, {self.hidden_size}], got {list(embeds.shape)}")
        if embeds.shape[1] != self.hidden_size:
            raise LLMError(
                f"{where}: hidden size {embeds.shape[1]} does not match the served LLM's {self.hidden_size}"
            )
        if embeds.shape[0] == 0:
            raise LLMError(f"{where}: empty sequence")
        if embeds.dtype not in ACCEPTED_DTYPES:
            raise LLMError(f"{where}: dtype {embeds.dtype} is not one of float32, float16, bfloat16")
        if not torch.isfinite(embeds).all():
            raise LLMError(f"{where}: contains NaN or infinite values")
        if embeds.shape[0] + params.max_new_tokens > self.context_length:
            raise LLMError(
                f"{where}: {embeds.shape[0]} positions + {params.max_new_tokens} new tokens exceed the served "
                f"context of {self.context_length}"
            )

    @staticmethod
    def _sampling(params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "min_tokens": params.min_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "logprobs": params.top_logprobs,  # the chosen token's log-probability, and this many of the likeliest
            "return_tokens_as_token_ids": True,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _generation(self, choice: dict[str, Any], stop: Sequence[str]) -> Generation:
        logprobs = choice.get("logprobs") or {}
        tokens = [_token_id(t) for t in logprobs.get("tokens") or []]
        values = [float(v) if v is not None else 0.0 for v in logprobs.get("token_logprobs") or []]
        return self.completion(tokens, values, choice.get("finish_reason"), stop, _first_top(logprobs))

    def _stream(self, body: dict[str, Any], on_token: Callable[[str], None]) -> Generation:
        """A streamed completion (server-sent events): text goes to `on_token` chunk by chunk as vLLM writes it.
        Not retried: part of the answer may already have been shown."""
        url = f"{self.base_url}/v1/completions"
        tokens: list[int] = []
        values: list[float] = []
        first: dict[int, float] = {}
        finish: str | None = None
        try:
            with self._http.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise LLMError(f"vLLM server at {url} rejected the request ({response.status_code}): "
                                   f"{_message(response)}")
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choice = json.loads(line[len("data: "):])["choices"][0]
                    logprobs = choice.get("logprobs") or {}
                    tokens += [_token_id(t) for t in logprobs.get("tokens") or []]
                    values += [float(v) if v is not None else 0.0 for v in logprobs.get("token_logprobs") or []]
                    first = first or _first_top(logprobs)
                    if choice.get("text"):
                        on_token(choice["text"])
                    finish = choice.get("finish_reason") or finish
        except httpx.TimeoutException as exc:
            raise LLMError(f"vLLM server at {url} did not answer within {self.timeout:g} s") from exc
        except httpx.TransportError as exc:
            raise LLMError(f"vLLM server at {url} is not reachable ({type(exc).__name__}: {exc})") from exc
        return self.completion(tokens, values, finish, body.get("stop", ()), first)

    def _waiting(self) -> contextlib.AbstractContextManager[None]:
        return self.in_flight.waiting() if self.in_flight is not None else contextlib.nullcontext()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Bounded retries with exponential back-off on connection errors, timeouts and 5xx; 4xx fail at once."""
        url = f"{self.base_url}{path}"
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                last = LLMError(f"vLLM server at {url} did not answer within {self.timeout:g} s")
                last.__cause__ = exc
                continue
            except httpx.TransportError as exc:
                last = LLMError(f"vLLM server at {url} is not reachable ({type(exc).__name__}: {exc})")
                last.__cause__ = exc
                continue
            if response.status_code >= 500:
                last = LLMError(f"vLLM server at {url} answered {response.status_code}: {_message(response)}")
                continue
            if response.status_code >= 400:
                raise LLMError(f"vLLM server at {url} rejected the request ({response.status_code}): "
                               f"{_message(response)}")
            return response.json()
        assert last is not None
        raise last

    def close(self) -> None:
        self._http.close()


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)[:300]
    except ValueError:
        return response.text[:300]


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def _token_id(token: str) -> int:
    """vLLM names a token "token_id:N" when asked to (`return_tokens_as_token_ids`)."""
    return int(token.split(":", 1)[1])


def _first_top(logprobs: dict[str, Any]) -> dict[int, float]:
    """A completion's first new token's likeliest tokens (`top_logprobs[0]`, asked with `logprobs: k`)."""
    tops = logprobs.get("top_logprobs") or []
    return {_token_id(t): float(v) for t, v in (tops[0] or {}).items()} if tops else {}
