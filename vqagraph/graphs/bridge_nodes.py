"""Node adapters of the Q-Former route (BLIP-2, docs/methods.md §2): Q-Former → prompt text → frozen LLM.

The soft prompt never enters state: the encoder caches it per image (and per question for InstructBLIP), so
the answer node fetches the same tensor from the feature cache instead of recomputing it.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from vqagraph.config import QueryPromptSettings
from vqagraph.errors import ProfileError
from vqagraph.graphs.nodes import generation_params, node, recent_turns, route_answer, token_writer, vision_question
from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.toolkit import Toolkit
from vqagraph.tools.bridge_prompt import bridge_embeddings, bridge_text, bridge_token_ids, check_soft_prompt_size
from vqagraph.tools.llm.vllm_client import VLLMClient


def _soft_prompt(tools: Toolkit, state: VQAState) -> tuple[Any, bool]:
    instruction = tools.profile.bridge.instruction_template.format(question=vision_question(state))
    return tools.qformer(state["image_ref"], tools.images.get(state["image_ref"]), instruction)


@node("qformer_encode", reads=("image_ref", "question", "standalone_question"),
      writes=("bridge.query_tokens", "bridge.conditioned", "bridge.image_encoded"))
def qformer_encode(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """Image (+ question, for InstructBLIP) → soft prompt; checked against the LLM's width before any request."""
    tools = runtime.context.tools
    soft_prompt, encoded = _soft_prompt(tools, state)
    llm = tools.llm
    check_soft_prompt_size(soft_prompt, int(llm.input_embeddings().shape[1]), tools.qformer.name, llm.name)
    return {"bridge": {
        "query_tokens": int(soft_prompt.shape[0]),
        "conditioned": tools.qformer.bridge.conditioned,
        "image_encoded": encoded,
    }}


def query_prompt(state: VQAState, tools: Toolkit, settings: QueryPromptSettings) -> dict[str, Any]:
    """The text a Q-Former's queries go with (the Q-Former and adapter routes): BLIP-2's VQA prompt, earlier turns
    first, concatenated as LAVIS does (§2); its record fields."""
    turns = recent_turns(state, tools.profile.conversation.max_history_turns)
    text = bridge_text(settings.prompt_template, state["question"], turns, settings.history_template)
    ids = bridge_token_ids(tools.llm.tokenizer, text, settings.add_bos)
    return {"prompt": text, "prompt_tokens": len(ids)}


@node("bridge_prompt", reads=("question", "history"), writes=("bridge.prompt", "bridge.prompt_tokens"))
def bridge_prompt(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """BLIP-2's VQA prompt; in a conversation the earlier turns go first, concatenated as LAVIS does (§2)."""
    tools = runtime.context.tools
    return {"bridge": query_prompt(state, tools, tools.profile.bridge)}


@node("bridge_answer", reads=("image_ref", "question", "bridge.prompt"), writes=("route_answers",))
def bridge_answer(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """`[soft prompt ; embed(BOS + text)]` → the LLM as prompt embeddings (greedy, BLIP-2's 10 tokens)."""
    tools = runtime.context.tools
    settings = tools.profile.bridge
    llm = tools.llm
    params = generation_params(state, settings.max_new_tokens, settings.stop)
    if settings.send == "prompt-embeds":
        soft_prompt, _ = _soft_prompt(tools, state)  # a feature-cache hit: qformer_encode computed it
        ids = bridge_token_ids(llm.tokenizer, state["bridge"]["prompt"], settings.add_bos)
        embeds = bridge_embeddings(soft_prompt, ids, llm.input_embeddings())
        (generation,) = llm.generate_from_embeddings([embeds], params, on_token=token_writer(runtime, "bridge"))
        return {"route_answers": {"bridge": route_answer(generation)}}
    # A BLIP-2 checkpoint served whole by vLLM: send it the image, or the query embeddings projected here.
    if not isinstance(llm, VLLMClient):
        raise ProfileError(f"bridge.send = {settings.send!r} needs a vLLM server serving a BLIP-2 checkpoint whole "
                           "(llm_backend.url); use send = 'prompt-embeds' with other backends")
    if settings.send == "image":
        image = tools.images.get(state["image_ref"])
        generation = llm.generate_with_image(state["bridge"]["prompt"], image=image, params=params)
    else:
        soft_prompt, _ = _soft_prompt(tools, state)
        generation = llm.generate_with_image(state["bridge"]["prompt"], image_embeds=soft_prompt, params=params)
    return {"route_answers": {"bridge": route_answer(generation)}}
