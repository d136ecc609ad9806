"""Node adapters of the projection route (LLaVA, docs/methods.md §7): projector → prompt text → frozen LLM.

As in the Q-Former route, the soft prompt never enters state: the encoder caches it per image, so the answer node
fetches the same tensor from the feature cache.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from vqagraph.graphs.nodes import generation_params, node, recent_turns, route_answer, token_writer
from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.tools.bridge_prompt import bridge_text, check_soft_prompt_size, placed_embeddings, split_at_image


@node("projection_encode", reads=("image_ref",), writes=("projection.image_tokens", "projection.image_encoded"))
def projection_encode(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """Image → patch features → projector: the image tokens, checked against the LLM's width before any request."""
    tools = runtime.context.tools
    soft_prompt, encoded = tools.projector(state["image_ref"], tools.images.get(state["image_ref"]))
    check_soft_prompt_size(soft_prompt, int(tools.llm.input_embeddings().shape[1]), tools.projector.name,
                           tools.llm.name)
    return {"projection": {"image_tokens": int(soft_prompt.shape[0]), "image_encoded": encoded}}


@node("projection_prompt", reads=("question", "history"), writes=("projection.prompt", "projection.prompt_tokens"))
def projection_prompt(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """LLaVA's prompt with the image placeholder; in a conversation the earlier turns go first."""
    tools = runtime.context.tools
    settings = tools.profile.projection
    turns = recent_turns(state, tools.profile.conversation.max_history_turns)
    text = bridge_text(settings.prompt_template, state["question"], turns, settings.history_template)
    before, after = split_at_image(tools.llm.tokenizer, text, settings.image_placeholder, settings.add_bos)
    return {"projection": {"prompt": text, "prompt_tokens": len(before) + len(after)}}


@node("projection_answer", reads=("image_ref", "projection.prompt"), writes=("route_answers",))
def projection_answer(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """`[embed(text before) ; image tokens ; embed(text after)]` → the LLM as prompt embeddings (greedy)."""
    tools = runtime.context.tools
    settings = tools.profile.projection
    llm = tools.llm
    soft_prompt, _ = tools.projector(state["image_ref"], tools.images.get(state["image_ref"]))  # a cache hit
    before, after = split_at_image(llm.tokenizer, state["projection"]["prompt"], settings.image_placeholder,
                                   settings.add_bos)
    embeds = placed_embeddings(soft_prompt, before, after, llm.input_embeddings())
    params = generation_params(state, settings.max_new_tokens, settings.stop)
    (generation,) = llm.generate_from_embeddings([embeds], params, on_token=token_writer(runtime, "projection"))
    return {"route_answers": {"projection": route_answer(generation)}}
