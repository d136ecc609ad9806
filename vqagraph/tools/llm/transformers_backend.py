"""In-process transformers backend: the embedded default on a machine without a GPU or vLLM."""

from __future__ import annotations

from typing import Any

import torch
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from vqagraph.models.llama_adapter import AdaptionPrompts, adapted, attach
from vqagraph.tools.llm.base import Generation, GenerationParams, OnToken, OnTokens, cut_at_stop, row_callbacks
from vqagraph.tools.seeding import seeded


class TokenStreamer(BaseStreamer):
    """Calls each row's callback with each new piece of its decoded text; skips the prompt, which `generate` puts
    first. Rows without a callback (or finished: what follows EOS is padding, decoded to nothing) stay silent. Text
    that may begin a stop string is held back until it cannot, and a stop string and what follows it are never
    sent, so the streamed pieces add up to the final answer's text, as vLLM streams a stopped completion."""

    def __init__(self, tokenizer: Any, callbacks: list[OnToken], stop: list[str] | None = None) -> None:
        self.tokenizer = tokenizer
        self.callbacks = callbacks
        self.stop = [s for s in stop or [] if s]
        self.ids: list[list[int]] = [[] for _ in callbacks]
        self.sent = ["" for _ in callbacks]
        self.stopped = [False for _ in callbacks]
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.callbacks), -1)[:, -1].tolist()):
            if self.callbacks[row] is None or self.stopped[row]:
                continue
            self.ids[row].append(token)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if text.endswith("\ufffd"):  # wait for a whole UTF-8 character
                continue
            hits = [text.find(s) for s in self.stop if s in text]
            if hits:
                self.stopped[row] = True
                self._send(row, text[: min(hits)])
            else:
                held = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
                self._send(row, text[: len(text) - held])

    def _send(self, row: int, text: str) -> None:
        call = self.callbacks[row]
        if call is not None and len(text) > len(self.sent[row]):
            call(text[len(self.sent[row]):])
            self.sent[row] = text

    def end(self) -> None:
        """Generation ended without completing a stop string: what was held back is part of the answer."""
        for row, ids in enumerate(self.ids):
            if not self.stopped[row] and ids:
                self._send(row, self.tokenizer.decode(ids, skip_special_tokens=True))


class StopAtStrings(StoppingCriteria):
    """Ends a row once its new text holds a stop string. transformers' own `stop_strings` rebuilds a table over the
    whole vocabulary on every call (its cache keys on the vocabulary: 151k entries for Qwen2.5), which measured
    longer than the generation it saves; decoding ten new tokens per step is cheap."""

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        done = [any(s in text for s in self.stop) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class TransformersLLM:
    """A causal LM run with `generate`, batched with left padding; greedy unless a temperature is given."""

    def __init__(self, model: Any, tokenizer: Any, name: str = "transformers") -> None:
        self.model = model.eval()
        self._tokenizer = tokenizer
        self.name = name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def context_length(self) -> int:
        config = self.model.config.get_text_config()  # a LLaVA checkpoint run whole: its language model's
        length = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        return int(length or 2048)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text).input_ids)

    def input_embeddings(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight.detach()

    def generate(
        self, prompts: list[str], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]:
        # Left padding by hand: `padding=True` would switch the shared fast tokenizer's padding on and off, which
        # races with other threads' tokenizer calls ("Already borrowed").
        rows = [self._tokenizer(p).input_ids for p in prompts]
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self._tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, longest - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, longest - len(r):] = 1
        return self._generate(params or GenerationParams(), on_token, input_ids=ids.to(self.device),
                              attention_mask=mask.to(self.device))

    def enable_adaption(self) -> None:
        """Hook the model's attention modules for adaption prompts (LLaMA-Adapter, models/llama_adapter.py); the
        hooks act only in `generate_adapted`, so every other call computes what it did before."""
        attach(self.model)

    def generate_adapted(
        self, embeds: list[torch.Tensor], adaption: list[AdaptionPrompts], params: GenerationParams | None = None,
        on_token: OnTokens = None,
    ) -> list[Generation]:
        """`generate_from_embeddings` with each prompt's adaption prompts active in the adapted layers."""
        with adapted(AdaptionPrompts.cat(adaption)):
            return self.generate_from_embeddings(embeds, params, on_token)

    def generate_from_embeddings(
        self, embeds: list[torch.Tensor], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]:
        longest = max(e.shape[0] for e in embeds)
        hidden = embeds[0].shape[-1]
        dtype = next(self.model.parameters()).dtype
        padded = torch.zeros(len(embeds), longest, hidden, dtype=dtype, device=self.device)
        mask = torch.zeros(len(embeds), longest, dtype=torch.long, device=self.device)
        for i, e in enumerate(embeds):
            padded[i, longest - e.shape[0] :] = e.to(self.device, dtype)
            mask[i, longest - e.shape[0] :] = 1
        return self._generate(params or GenerationParams(), on_token, inputs_embeds=padded, attention_mask=mask)

    @torch.no_grad()
    def _generate(self, params: GenerationParams, on_token: OnTokens, **inputs: torch.Tensor) -> list[Generation]:
        sampling = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "min_new_tokens": params.min_new_tokens,
            "do_sample": sampling,
            "pad_token_id": self._tokenizer.pad_token_id,
            "eos_token_id": self.model.generation_config.eos_token_id or self._tokenizer.eos_token_id,
            "return_dict_in_generate": True,
            "output_scores": True,
        }
        if params.stop:  # ends each row at the token that completes a stop string, as vLLM does
            prompt_len = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0
            criteria = StopAtStrings(self._tokenizer, params.stop, prompt_len)
            kwargs["stopping_criteria"] = StoppingCriteriaList([criteria])
        callbacks = row_callbacks(on_token, next(iter(inputs.values())).shape[0])
        if any(callbacks):
            kwargs["streamer"] = TokenStreamer(self._tokenizer, callbacks, params.stop)
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if sampling:
            with seeded(params.seed, self.device):
                out = self.model.generate(**inputs, **kwargs)
        else:  # greedy draws nothing: no lock, so a greedy route never waits for a sampling one
            out = self.model.generate(**inputs, **kwargs)
        prompt_len = 0 if "inputs_embeds" in inputs else inputs["input_ids"].shape[1]
        new_tokens = out.sequences[:, prompt_len:]
        scores = torch.stack(out.scores, dim=1).float().log_softmax(dim=-1)  # (batch, steps, vocab)
        eos = kwargs["eos_token_id"]
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        results = []
        for row, row_scores in zip(new_tokens, scores, strict=True):
            ids: list[int] = []
            logprobs: list[float] = []
            finish: str = "length"
            for step, token in enumerate(row.tolist()):
                if token in eos_ids:
                    finish = "stop"
                    break
                ids.append(token)
                logprobs.append(float(row_scores[step, token]))
            text, ids, logprobs, stopped = cut_at_stop(self._decode, ids, logprobs, params.stop)
            top = row_scores[0].topk(params.top_logprobs) if params.top_logprobs else None
            first = {} if top is None else dict(zip(top.indices.tolist(), top.values.tolist(), strict=True))
            results.append(Generation(text=text, token_ids=ids, logprobs=logprobs, first_top_logprobs=first,
                                      finish_reason="stop" if stopped else finish))  # type: ignore[arg-type]
        return results
