"""What a question returns: the short answer and the trace of how it was reached.

The records here are the graph state's own (graphs/state.py nests them): each route that ran writes one, and the
trace carries them as they are, so a route that did not run has no record. They are TypedDicts, plain data that
any LangGraph checkpointer stores, which pydantic still validates inside `Trace`.
"""

from __future__ import annotations

from typing import Any, NotRequired

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic validates TypedDicts from typing_extensions on Python < 3.12


class RouteAnswer(TypedDict):
    """One route's answer and the LLM's confidence in it (mean token log-probability)."""

    answer: str
    raw_answer: str
    token_ids: list[int]
    token_logprobs: list[float]
    mean_logprob: float
    finish_reason: NotRequired[str]  # "stop" (EOS or a stop string) or "length" (a token cap), as vLLM says it
    calibration: NotRequired[dict[str, Any]]  # a calibrated yes/no answer: p(yes) as asked, content-free, calibrated
    checked: NotRequired[dict[str, Any]]  # answer_checks: which check changed the LLM's answer, its answer, and why


class VisualPromptRecord(TypedDict, total=False):
    """What drawing the marks did: the image and question before, each mark's phrase, box and note."""

    original_image_ref: str  # the image before the marks were drawn
    original_question: str  # the question as asked, before a mark's phrase replaced "this"
    phrases: list[str]
    boxes: list[list[int]]
    notes: list[str]  # e.g. a mark clipped to the image


class TextRouteRecord(TypedDict, total=False):
    """The text route's work (Img2LLM, docs/methods.md §1): GradCAM, captions, exemplars, the prompt."""

    gradcam: list[float]
    grid: list[int]
    patch_ids: list[list[int]]  # the patches each kept caption was written from
    captions: list[str]
    caption_scores: list[float]
    caption_stats: dict[str, int]
    image_encoded: bool  # False when the vision features came from the cache
    tags: list[dict[str, Any]]  # imagenet-tags captions: each tag's name, own label, probability, region, box
    text_lines: list[dict[str, Any]]  # read_text: each line of text read, its score and box
    band_colours: dict[str, list[str]]  # imagenet-tags: the main colour terms of the photo's top, middle, bottom
    black_and_white: bool  # imagenet-tags: the photo has (nearly) no chroma
    objects: list[dict[str, Any]]  # object_detector: each detection's COCO label, score and box
    candidates: list[str]
    answer_captions: dict[str, list[int]]
    exemplars: list[dict[str, str]]
    prompt: str  # exactly the text sent to the LLM
    prompt_stats: dict[str, int]
    content_free_prompt: str  # yes_no_calibration: the same prompt with the contexts replaced by "N/A"


class BridgeRecord(TypedDict, total=False):
    """The Q-Former route's work (BLIP-2 / InstructBLIP, docs/methods.md §2); the soft prompt stays in the cache."""

    query_tokens: int  # soft-prompt length (BLIP-2: 32)
    conditioned: bool  # InstructBLIP: the Q-Former read the question
    image_encoded: bool  # False when the Q-Former's output came from the cache
    prompt: str  # the text after the soft prompt
    prompt_tokens: int


class ProjectionRecord(TypedDict, total=False):
    """The projection route's work (LLaVA, docs/methods.md §7); the image tokens stay in the cache."""

    image_tokens: int  # image tokens placed in the prompt (LLaVA-1.5: 576)
    image_encoded: bool  # False when the projector's image tokens came from the cache
    prompt: str  # the prompt, with the image placeholder where the image tokens go
    prompt_tokens: int  # text tokens around the image


class AdapterRecord(TypedDict, total=False):
    """The adapter route's work (LLaMA-Adapter, docs/methods.md §9); the prompts stay in the cache and the model."""

    query_tokens: int  # the Q-Former's queries: the visual feature added to the adaption prompts
    conditioned: bool  # InstructBLIP: the Q-Former read the question
    image_encoded: bool  # False when the Q-Former's output came from the cache
    visual_norm: float  # the visual feature's mean L2 norm per query, before its projection
    adapter_layers: int  # L: the adapted layers, from the top
    adapter_len: int  # K: adaption prompts per layer
    gates: list[float]  # mean |gate| per adapted layer, bottom to top (0: the layer ignores its prompts)
    prompt: str  # the text the LLM reads (no image tokens: the image is inside the layers)
    prompt_tokens: int


class Trace(BaseModel):
    """How the answer was reached. A route registered beyond the built-in three (graphs/registry.py) files its
    record under its own name too, as an extra field (`trace.model_extra`, and in `model_dump()`)."""

    model_config = ConfigDict(extra="allow")

    profile: str
    route: str = Field(description="the route whose answer was kept (a registered route's name)")
    route_reason: str
    requested_route: str = "auto"
    router_policy: str = Field("", description="the policy that chose, when the route was auto")
    route_answers: dict[str, RouteAnswer] = Field(default_factory=dict, description="every route that ran")
    raw_answer: str = ""
    token_logprobs: list[float] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per node")
    path: list[str] = Field(default_factory=list,
                            description="the nodes that ran, in order ('node/inner' inside a subgraph)")
    seen_image_ref: str = Field("", description="the image the routes saw (with its marks drawn)")
    standalone_question: str = Field("", description="what the vision tools read: a follow-up made standalone")
    history_turns: int = Field(0, description="earlier turns of the conversation given to the route")
    generation: dict[str, Any] = Field(default_factory=dict, description="the request's decoding settings that "
                                       "differ from greedy (temperature, top_p, seed, max_tokens, stop)")
    visual_prompt: VisualPromptRecord | None = Field(None, description="the marks drawn, when there were any")
    img2llm: TextRouteRecord | None = Field(None, description="the text route's work, when it ran")
    bridge: BridgeRecord | None = Field(None, description="the Q-Former route's work, when it ran")
    projection: ProjectionRecord | None = Field(None, description="the projection route's work, when it ran")
    adapter: AdapterRecord | None = Field(None, description="the adapter route's work, when it ran")


class Answer(BaseModel):
    answer: str
    question: str
    image_ref: str
    route: str
    meaningless: bool = Field(False, description="the profile's models are untrained: the answer is noise")
    trace: Trace
