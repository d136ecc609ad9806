"""LLaMA-Adapter (Zhang et al., "LLaMA-Adapter: Efficient Fine-tuning of Language Models with Zero-init Attention",
2023; docs/methods.md §9): K learnable adaption prompts in the top L layers of a frozen Llama-architecture LLM.

In each adapted layer the tokens' queries also attend to that layer's prompts, through the layer's own frozen key,
value and output projections: the prompts' scores get their own softmax, scaled by a gate per head that starts at
zero ("zero-init attention"), so an untrained adapter leaves the frozen LLM's outputs exactly as they were. The
multimodal variant adds the projected visual feature to every layer's prompts (LLaMA-Adapter V2's
`adapter + visual_query`); here the visual feature is a Q-Former's projected query outputs.

The mechanism is PEFT's `AdaptionPromptConfig` for Llama (prompt keys without rotary positions, a softmax of
their own, the gate times it, `o_proj`, added to the attention's output), with two differences the paper's
multimodal code has: a gate per head (PEFT keeps one per layer) and a prompt per image (the visual feature added).
tests/test_llama_adapter.py checks it against PEFT's own module, logit for logit, with the visual feature zeroed.

The LLM is never modified: `attach` puts an inert forward hook on each attention module, which acts only inside
`with adapted(prompts):` (a context variable, so concurrent threads never see each other's prompts; `generate`
checks its keyword arguments, so they cannot travel that way); every other call (the other routes, sharing the
same served LLM) computes exactly what it computed before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # runs in every adapted layer's forward

# Not PEFT's adapter_config.json: transformers would read the folder as a PEFT adapter.
CONFIG_NAME = "llama_adapter_config.json"
WEIGHTS_NAME = "llama_adapter.safetensors"
MODEL_TYPE = "vqagraph-llama-adapter"
_HOOKED = "_vqagraph_adaption_hooks"


class LlamaAdapterConfig(BaseModel):
    """The adapter's shape; the LLM's numbers must match the LLM it is attached to."""

    model_config = ConfigDict(extra="forbid")

    model_type: str = MODEL_TYPE
    adapter_layers: int = Field(ge=1, description="L: adapted layers, counted from the top (the paper: 30 of 32)")
    adapter_len: int = Field(ge=1, description="K: adaption prompts per layer (the paper: 10)")
    hidden_size: int = Field(ge=1, description="the LLM's hidden size")
    num_attention_heads: int = Field(ge=1, description="the LLM's heads (one gate each)")
    num_hidden_layers: int = Field(ge=1, description="the LLM's layers")
    visual_size: int = Field(0, ge=0, description="width of the visual feature added to the prompts; 0: text only")
    llm: str = Field("", description="the frozen LLM it was trained against")

    @property
    def first_layer(self) -> int:
        return self.num_hidden_layers - self.adapter_layers


def llm_numbers(config: Any) -> dict[str, int]:
    """The Llama config's numbers an adapter must agree with."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return {"hidden_size": int(text.hidden_size), "num_attention_heads": int(text.num_attention_heads),
            "num_hidden_layers": int(text.num_hidden_layers)}


@dataclass(frozen=True)
class AdaptionPrompts:
    """One call's prompts: `prompts` (batch or 1, L, K, hidden) for layers `first_layer`…, `gates` (L, heads)."""

    prompts: torch.Tensor
    gates: torch.Tensor
    first_layer: int

    @staticmethod
    def cat(parts: list[AdaptionPrompts]) -> AdaptionPrompts:
        """Several questions' prompts (from one adapter) as one batch, in order."""
        first = parts[0]
        if any(p.gates is not first.gates or p.first_layer != first.first_layer for p in parts):
            raise ValueError("adaption prompts of different adapters cannot share a batch")
        return AdaptionPrompts(torch.cat([p.prompts for p in parts]), first.gates, first.first_layer)


class LlamaAdapter(nn.Module):
    """The adapter's parameters: prompts (L, K, hidden), gates (L, heads), and the visual projection."""

    def __init__(self, config: LlamaAdapterConfig) -> None:
        super().__init__()
        self.config = config
        # As PEFT and the official code (an nn.Embedding): prompts drawn from N(0, 1).
        self.adaption_prompt = nn.Parameter(torch.randn(config.adapter_layers, config.adapter_len, config.hidden_size))
        self.adaption_gate = nn.Parameter(torch.zeros(config.adapter_layers, config.num_attention_heads))
        # LLaMA-Adapter V2's `visual_proj` and `visual_proj_norm`: the visual feature at the prompts' unit scale.
        self.visual_projection = nn.Linear(config.visual_size, config.hidden_size) if config.visual_size else None
        self.visual_norm = nn.LayerNorm(config.hidden_size) if config.visual_size else None

    def prompts(self, visual: torch.Tensor | None = None) -> AdaptionPrompts:
        """The prompts of a batch of images: `visual` (batch, Q, visual_size) projected and added to every layer's
        K prompts (Q = K: one to one, as LLaMA-Adapter V2; otherwise their mean to each, as V1's global feature)."""
        base = self.adaption_prompt.unsqueeze(0)
        if visual is None or self.visual_projection is None or self.visual_norm is None:
            return AdaptionPrompts(base, self.adaption_gate, self.config.first_layer)
        weight = self.visual_projection.weight
        added = self.visual_norm(self.visual_projection(visual.to(weight.device, weight.dtype)))
        if added.shape[1] != self.config.adapter_len:
            added = added.mean(dim=1, keepdim=True)
        return AdaptionPrompts(base + added.unsqueeze(1), self.adaption_gate, self.config.first_layer)

    def gate_magnitudes(self) -> list[float]:
        """Mean |gate| per adapted layer, bottom to top: how much each layer has learned to listen (the trace)."""
        return [round(float(v), 4) for v in self.adaption_gate.detach().abs().mean(dim=1)]

    def check_llm(self, llm_config: Any, name: str) -> None:
        numbers = llm_numbers(llm_config)
        ours = {k: getattr(self.config, k) for k in numbers}
        if ours != numbers:
            from vqagraph.errors import ModelMismatchError

            raise ModelMismatchError(f"the adapter was trained for an LLM with {ours}; {name!r} has {numbers}: use "
                                     "the adapter trained for this LLM")

    def save_pretrained(self, out: str | Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, source: str | Path, revision: str | None = None, **_: Any) -> LlamaAdapter:
        """A local folder or a Hub repository holding `llama_adapter_config.json` and `llama_adapter.safetensors`."""
        from vqagraph.errors import ModelMismatchError

        folder = Path(source).expanduser()
        if folder.is_dir() or str(source).startswith(("/", ".", "~")):
            config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
            if not config_path.exists():
                raise ModelMismatchError(f"{folder} has no {CONFIG_NAME}: not a LLaMA-Adapter checkpoint")
        else:
            from huggingface_hub import hf_hub_download

            config_path = Path(hf_hub_download(str(source), CONFIG_NAME, revision=revision))
            weights_path = Path(hf_hub_download(str(source), WEIGHTS_NAME, revision=revision))
        config = LlamaAdapterConfig.model_validate(json.loads(config_path.read_text()))
        adapter = cls(config)
        adapter.load_state_dict(load_file(str(weights_path)))
        return adapter.eval()


def adapted_attention(attn: Any, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                      prompt: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """What one Llama attention module adds for its prompts: `o_proj(gate · softmax(q kᵀ/√d) v)`, the queries with
    their rotary positions, the prompts' keys and values without (they have no position), as PEFT computes it."""
    batch, length, _ = hidden.shape
    heads, kv_heads = attn.config.num_attention_heads, attn.config.num_key_value_heads
    d = attn.head_dim
    query = attn.q_proj(hidden).view(batch, length, heads, d).transpose(1, 2)
    cos, sin = position_embeddings
    query, _ = apply_rotary_pos_emb(query, query, cos, sin)
    rows, k_len = prompt.shape[0], prompt.shape[1]
    prompt = prompt.to(hidden.dtype)
    key = attn.k_proj(prompt).view(rows, k_len, kv_heads, d).transpose(1, 2)
    value = attn.v_proj(prompt).view(rows, k_len, kv_heads, d).transpose(1, 2)
    key = key.repeat_interleave(heads // kv_heads, dim=1).expand(batch, -1, -1, -1)
    value = value.repeat_interleave(heads // kv_heads, dim=1).expand(batch, -1, -1, -1)
    scores = torch.matmul(query, key.transpose(2, 3)) / math.sqrt(d)
    scores = gate.view(1, heads, 1, 1).to(hidden.dtype) * F.softmax(scores, dim=-1, dtype=torch.float32).to(
        hidden.dtype)
    out = torch.matmul(scores, value).transpose(1, 2).reshape(batch, length, heads * d)
    return attn.o_proj(out)


_ACTIVE: ContextVar[AdaptionPrompts | None] = ContextVar("vqagraph_adaption", default=None)


@contextmanager
def adapted(prompts: AdaptionPrompts) -> Iterator[None]:
    """The hooked LLM's forward passes inside this block (in this thread or task) attend to `prompts`."""
    token = _ACTIVE.set(prompts)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _hook(attn: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    adaption = _ACTIVE.get()
    if adaption is None:
        return None  # no adapter in this call: the frozen LLM's own output
    slot = int(attn.layer_idx) - adaption.first_layer  # type: ignore[arg-type]
    if slot < 0:
        return None
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    added = adapted_attention(attn, hidden, kwargs["position_embeddings"], adaption.prompts[:, slot],
                              adaption.gates[slot])
    return (output[0] + added, *output[1:])


def attach(model: Any) -> None:
    """Hook every attention module of a Llama-architecture causal LM (once): inert outside `adapted(...)`. Other
    architectures get a clear error: the mechanism is Llama's attention."""
    from vqagraph.errors import ModelMismatchError

    if getattr(model, _HOOKED, False):
        return
    config = model.config.get_text_config()
    if config.model_type not in ("llama", "mistral", "qwen2"):
        raise ModelMismatchError(f"LLaMA-Adapter needs a Llama-architecture LLM; this one is {config.model_type!r}")
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(_hook, with_kwargs=True)
    setattr(model, _HOOKED, True)
