"""Node adapters of the adapter route (LLaMA-Adapter, docs/methods.md §9): Q-Former → adaption prompts inside the
frozen LLM's top layers → the Q-Former route's prompt text → the LLM.

As in the Q-Former route, no tensor enters state: the Q-Former's output is cached per image (and per question for
InstructBLIP), so the answer node fetches it again and the prompts are recomputed from it (one small projection).
"""

from __future__ import annotations

from typing import Any

import torch
from langgraph.runtime import Runtime

from vqagraph.graphs.bridge_nodes import query_prompt
from vqagraph.graphs.nodes import generation_params, node, route_answer, token_writer, vision_question
from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.toolkit import Toolkit
from vqagraph.tools.bridge_prompt import bridge_token_ids


def _prompts(tools: Toolkit, state: VQAState) -> tuple[Any, Any, bool]:
    instruction = tools.profile.adapter.instruction_template.format(question=vision_question(state))
    return tools.llama_adapter(state["image_ref"], tools.images.get(state["image_ref"]), instruction)


@node("adapter_encode", reads=("image_ref", "question", "standalone_question"),
      writes=("adapter.query_tokens", "adapter.conditioned", "adapter.image_encoded", "adapter.visual_norm",
              "adapter.adapter_layers", "adapter.adapter_len", "adapter.gates"))
def adapter_encode(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """Image (+ question, for InstructBLIP) → the Q-Former's queries → every adapted layer's prompts; the
    adapter's gates per layer go in the trace (how much each layer listens to the image)."""
    tools = runtime.context.tools
    encoder = tools.llama_adapter  # refuses a vLLM backend, and an adapter trained for another LLM, here
    _, visual, encoded = _prompts(tools, state)
    config = encoder.adapter.config
    return {"adapter": {
        "query_tokens": int(visual.shape[0]),
        "conditioned": encoder.qformer.bridge.conditioned,
        "image_encoded": encoded,
        "visual_norm": round(float(visual.float().norm(dim=-1).mean()), 4),
        "adapter_layers": config.adapter_layers,
        "adapter_len": config.adapter_len,
        "gates": encoder.adapter.gate_magnitudes(),
    }}


@node("adapter_prompt", reads=("question", "history"), writes=("adapter.prompt", "adapter.prompt_tokens"))
def adapter_prompt(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """The Q-Former route's prompt (BLIP-2's, §2), earlier turns first; no image tokens: the image is in the
    layers."""
    tools = runtime.context.tools
    return {"adapter": query_prompt(state, tools, tools.profile.adapter)}


@node("adapter_answer", reads=("image_ref", "question", "adapter.prompt"), writes=("route_answers",))
def adapter_answer(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """`embed(BOS + text)` → the LLM with the image's adaption prompts active in its top layers (greedy, 10
    tokens)."""
    tools = runtime.context.tools
    settings = tools.profile.adapter
    llm = tools.llm
    prompts, _, _ = _prompts(tools, state)  # the Q-Former's output is a feature-cache hit
    ids = bridge_token_ids(llm.tokenizer, state["adapter"]["prompt"], settings.add_bos)
    table = llm.input_embeddings()
    embeds = table[torch.tensor(ids, dtype=torch.long, device=table.device)]
    params = generation_params(state, settings.max_new_tokens, settings.stop)
    (generation,) = tools.adapted_llm.generate_adapted([embeds], [prompts], params,
                                                       on_token=token_writer(runtime, "adapter"))
    return {"route_answers": {"adapter": route_answer(generation)}}
