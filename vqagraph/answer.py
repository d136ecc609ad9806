"""What a question returns: the short answer and the trace of how it was reached."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RouteResult(BaseModel):
    """One route's answer and the LLM's confidence in it (mean token log-probability)."""

    answer: str
    raw_answer: str
    token_ids: list[int] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    mean_logprob: float


class Trace(BaseModel):
    profile: str
    route: str = Field(description="the route whose answer was kept: img2llm, bridge or projection")
    route_reason: str
    requested_route: str = "auto"
    router_policy: str = Field("", description="the policy that chose, when the route was auto")
    route_answers: dict[str, RouteResult] = Field(default_factory=dict, description="every route that ran")
    captions: list[str] = Field(default_factory=list)
    caption_scores: list[float] = Field(default_factory=list)
    caption_stats: dict[str, int] = Field(default_factory=dict)
    candidates: list[str] = Field(default_factory=list)
    exemplars: list[dict[str, str]] = Field(default_factory=list)
    prompt: str = Field("", description="exactly the text sent to the LLM")
    prompt_stats: dict[str, int] = Field(default_factory=dict)
    raw_answer: str = ""
    token_logprobs: list[float] = Field(default_factory=list)
    gradcam: list[float] = Field(default_factory=list)
    grid: list[int] = Field(default_factory=list)
    patch_ids: list[list[int]] = Field(default_factory=list, description="patches behind each kept caption")
    image_encoded: bool = Field(True, description="False when the vision features came from the cache")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per node")
    original_question: str = Field("", description="the question as asked, before a mark's phrase replaced 'this'")
    mark_phrases: list[str] = Field(default_factory=list)
    mark_notes: list[str] = Field(default_factory=list, description="e.g. a mark clipped to the image")
    seen_image_ref: str = Field("", description="the image the routes saw (with its marks drawn)")
    path: list[str] = Field(default_factory=list,
                            description="the nodes that ran, in order ('node/inner' inside a subgraph)")
    standalone_question: str = Field("", description="what the vision tools read: a follow-up made standalone")
    history_turns: int = Field(0, description="earlier turns of the conversation given to the route")
    query_tokens: int = Field(0, description="embedding route: soft-prompt length (BLIP-2: 32)")
    bridge_prompt: str = Field("", description="embedding route: the text after the soft prompt")
    bridge_prompt_tokens: int = 0
    bridge_conditioned: bool = Field(False, description="InstructBLIP: the Q-Former read the question")
    bridge_image_encoded: bool = Field(True, description="False when the Q-Former's image features were cached")
    projection_tokens: int = Field(0, description="projection route: image tokens in the prompt (LLaVA-1.5: 576)")
    projection_prompt: str = Field("", description="projection route: the prompt, image placeholder included")
    projection_prompt_tokens: int = 0
    projection_image_encoded: bool = Field(True, description="False when the projector's image tokens were cached")


class Answer(BaseModel):
    answer: str
    question: str
    image_ref: str
    route: str
    meaningless: bool = Field(False, description="the profile's models are untrained: the answer is noise")
    trace: Trace
