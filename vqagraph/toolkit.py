"""The tools of one profile, loaded once: what graph nodes reach through LangGraph's runtime context."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vqagraph import hub
from vqagraph.config import CPU_ENCODER_CHUNK, CPU_STAGE_LIMITS, ModelRef, Profile
from vqagraph.errors import ProfileError
from vqagraph.media import FeatureCache, ImageStore
from vqagraph.tools.answer_candidates import Extractor, default_extractor
from vqagraph.tools.batching import BatchPolicy, InFlight
from vqagraph.tools.gradcam import BlipMatcher
from vqagraph.tools.image_encoder import ADAPTER_FOLDER, AdaptedVision, FrozenImageEncoder, GridAdapter, Vision
from vqagraph.tools.llm.base import FrozenLLM
from vqagraph.tools.llm.batched import BatchedLLM
from vqagraph.tools.llm.vllm_client import VLLMClient
from vqagraph.tools.projector import ProjectionBridge, ProjectionEncoder
from vqagraph.tools.qformer import QFormerBridge, QFormerEncoder
from vqagraph.tools.question_generator import QuestionGenerator
from vqagraph.tools.region_captioner import BlipCaptioner, RegionCaptioner

if TYPE_CHECKING:
    from vqagraph.models.centernet import CenterNetDetector
    from vqagraph.tools.image_tags import ImageTagger
    from vqagraph.tools.llama_adapter import AdapterEncoder
    from vqagraph.tools.ocr import TextReader

_LOADING = threading.RLock()


class loaded_once(cached_property):
    """cached_property that loads under one process-wide lock: the two routes of `both` run in threads and may
    reach the same role (the LLM) at once, and transformers' lazy imports fail when raced (ImportError seen)."""

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        with _LOADING:
            return super().__get__(instance, owner)


@dataclass
class Toolkit:
    """Lazily loads each role's model on first use, so a route that is not taken loads nothing."""

    profile: Profile
    images: ImageStore = field(default_factory=ImageStore)
    features: FeatureCache = field(default_factory=FeatureCache)
    in_flight: InFlight = field(default_factory=InFlight)  # questions running now (the engine counts them)
    batch_observers: list[Callable[[str, int], None]] = field(default_factory=list)  # (stage, size): metrics
    # On a CPU, every batch of every stage runs on this one thread (tools/batching.py says why).
    runner: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "vqagraph-models"))

    @loaded_once
    def batching(self) -> BatchPolicy:
        """How concurrent questions share model calls (tools/batching.py; the profile's `batching`)."""
        settings = self.profile.batching
        on_cpu = self.device.type == "cpu"
        exclusive = on_cpu if settings.one_stage_at_a_time is None else settings.one_stage_at_a_time
        limits = settings.stage_max_batch if settings.stage_max_batch is not None else \
            (CPU_STAGE_LIMITS if on_cpu else {})
        return BatchPolicy(settings.max_batch, settings.window_ms / 1000, self.in_flight, self._observe_batch,
                           self.runner if exclusive else None, limits)

    def _observe_batch(self, stage: str, size: int) -> None:
        for observe in list(self.batch_observers):
            observe(stage, size)

    @loaded_once
    def device(self):  # type: ignore[no-untyped-def]
        return hub.pick_device(self.profile.device)

    @loaded_once
    def image_encoder(self) -> FrozenImageEncoder | None:
        """The profile's frozen pretrained encoder, shared by every vision model (None: each reads pixels)."""
        settings = self.profile.image_encoder
        if settings is None:
            return None
        from vqagraph.models.efficientnet_lite import EfficientNetLiteModel

        model = hub.load(EfficientNetLiteModel, settings.model, "image_encoder", device=self.device)
        return FrozenImageEncoder(model, settings.image_size, settings.stages, self.features, settings.model.id,
                                  letterbox=settings.resize == "letterbox", policy=self.batching,
                                  chunk=CPU_ENCODER_CHUNK if self.device.type == "cpu" else None)

    def vision(self, role: str) -> Vision | None:
        """The frozen encoder through `role`'s own trained adapter, or None when the checkpoint reads pixels."""
        encoder = self.image_encoder
        if encoder is None:
            return None
        adapter = hub.load(GridAdapter, getattr(self.profile, role), role, device=self.device,
                           subfolder=ADAPTER_FOLDER)
        return AdaptedVision(encoder, adapter)

    def _blip(self, cls: type, role: str):  # type: ignore[no-untyped-def]
        from transformers import AutoTokenizer, BlipImageProcessorPil

        ref = getattr(self.profile, role)
        model = hub.load(cls, ref, role, device=self.device)
        tokenizer = hub.load(AutoTokenizer, ref, role)
        processor = hub.load(BlipImageProcessorPil, ref, role)
        return model, tokenizer, processor, self.vision(role)

    @loaded_once
    def matcher(self) -> BlipMatcher:
        from transformers import BlipForImageTextRetrieval

        return BlipMatcher(*self._blip(BlipForImageTextRetrieval, "itm"))

    @loaded_once
    def captioner(self) -> BlipCaptioner:
        from transformers import BlipForConditionalGeneration

        return BlipCaptioner(*self._blip(BlipForConditionalGeneration, "captioner"))

    @loaded_once
    def region_captioner(self) -> RegionCaptioner:
        return RegionCaptioner(self.matcher, self.captioner, self.profile.img2llm, self.features, self.batching)

    @loaded_once
    def image_tagger(self) -> ImageTagger:
        """The frozen encoder's own ImageNet head as a photo's captioner (docs/methods.md §8)."""
        from vqagraph.tools.image_tags import ImageTagger

        encoder = self.image_encoder
        if encoder is None:
            raise ProfileError(f"img2llm.captions = 'imagenet-tags' needs an `image_encoder` (profile "
                               f"{self.profile.name!r} has none)")
        settings = self.profile.img2llm
        return ImageTagger(encoder.model, encoder.image_size, settings.tag_min_probability, settings.tag_top_k,
                           settings.tag_question_min_probability)

    @loaded_once
    def object_detector(self) -> CenterNetDetector:
        """The COCO object detector of a photo's captions (docs/methods.md §8), fetched once into the cache."""
        from vqagraph.models.centernet import CenterNetDetector

        settings = self.profile.img2llm
        if settings.object_detector is None:
            raise ProfileError(f"profile {self.profile.name!r} names no img2llm.object_detector")
        folder = Path(hub.resolve(ModelRef(id=settings.object_detector)))
        return CenterNetDetector(folder, settings.object_question_min_score)

    @loaded_once
    def text_reader(self) -> TextReader:
        """RapidOCR's detection and recognition models, from its wheel (docs/methods.md §8)."""
        from vqagraph.tools.ocr import TextReader

        return TextReader(self.profile.img2llm.text_min_score)

    @loaded_once
    def question_generator(self) -> QuestionGenerator:
        settings = self.profile.img2llm
        if settings.question_generation == "template":
            return QuestionGenerator()
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        ref = self.profile.question_generator
        model = hub.load(AutoModelForSeq2SeqLM, ref, "question_generator", device=self.device)
        tokenizer = hub.load(AutoTokenizer, ref, "question_generator")
        return QuestionGenerator(model, tokenizer, self.batching, num_beams=settings.qg_num_beams,
                                 max_length=settings.qg_max_length)

    @loaded_once
    def qformer(self) -> QFormerEncoder:
        """The Q-Former route's encoder: only the Q-Former parts of the checkpoint are loaded."""
        if self.profile.qformer is None:
            raise ProfileError(f"profile {self.profile.name!r} has no `qformer` checkpoint: the Q-Former route "
                               "(bridge) needs a BLIP-2 or InstructBLIP checkpoint")
        return self._qformer_encoder("qformer")

    def _qformer_encoder(self, role: str) -> QFormerEncoder:
        from transformers import AutoTokenizer, BlipImageProcessorPil

        ref = getattr(self.profile, role)
        bridge = hub.load(QFormerBridge, ref, role, device=self.device).keep_qformer_fp32()
        processor = hub.load(BlipImageProcessorPil, ref, role)
        instruction_tokenizer = None
        if bridge.conditioned:
            instruction_tokenizer = hub.load(AutoTokenizer, ref, role, subfolder="qformer_tokenizer")
        return QFormerEncoder(bridge, processor, self.features, ref.id, instruction_tokenizer, self.vision(role),
                              self.batching)

    @loaded_once
    def llama_adapter(self) -> AdapterEncoder:
        """The adapter route's encoder: the checkpoint's frozen Q-Former and its adaption prompts, checked against
        the profile's LLM, whose attention modules get the (inert) adapter hooks."""
        from vqagraph.models.llama_adapter import LlamaAdapter
        from vqagraph.tools.llama_adapter import AdapterEncoder

        if self.profile.llama_adapter is None:
            raise ProfileError(f"profile {self.profile.name!r} has no `llama_adapter` checkpoint: the adapter route "
                               "needs a LLaMA-Adapter checkpoint")
        adapter = hub.load(LlamaAdapter, self.profile.llama_adapter, "llama_adapter", device=self.device)
        backend = self.adapted_llm.llm
        adapter.check_llm(backend.model.config, backend.name)  # type: ignore[attr-defined]
        return AdapterEncoder(self._qformer_encoder("llama_adapter"), adapter)

    @loaded_once
    def adapted_llm(self) -> BatchedLLM:
        """The profile's LLM (batched as `llm`), its in-process model hooked for adaption prompts (the adapter
        route); the other routes' calls on the same model are untouched. vLLM runs no such hooks, so a vLLM backend
        is refused here."""
        from vqagraph.tools.llm.transformers_backend import TransformersLLM

        backend = self.profile.llm_backend
        if backend.kind != "transformers" or backend.url:
            raise ProfileError(f"the adapter route runs on the transformers backend only (vLLM cannot run "
                               f"LLaMA-Adapter's gated adaption prompts); profile {self.profile.name!r} uses "
                               f"{backend.url or backend.kind}")
        llm = self.llm
        if not isinstance(llm, BatchedLLM) or not isinstance(llm.llm, TransformersLLM):
            raise ProfileError(f"the adapter route needs the transformers backend, not {type(llm).__name__}")
        llm.llm.enable_adaption()
        return llm

    @loaded_once
    def projector(self) -> ProjectionEncoder:
        """The projection route's encoder: a LLaVA checkpoint's vision tower and projector (the projector alone
        when the profile's frozen image encoder gives the patch features)."""
        from transformers import AutoImageProcessor

        ref = self.profile.projector
        if ref is None:
            raise ProfileError(f"profile {self.profile.name!r} has no `projector` checkpoint: the projection route "
                               "needs a LLaVA-family checkpoint")
        encoder = self.image_encoder
        bridge = hub.load(ProjectionBridge, ref, "projector", device=self.device, vision_tower=encoder is None)
        processor = None if encoder is not None else hub.load(AutoImageProcessor, ref, "projector")
        return ProjectionEncoder(bridge, processor, self.features, ref.id, encoder, self.batching)

    @loaded_once
    def extractor(self) -> Extractor:
        return default_extractor()

    @loaded_once
    def llm(self) -> FrozenLLM:
        """The profile's backend; concurrent questions' calls are batched (a vLLM server batches them itself:
        they reach it as concurrent requests)."""
        llm = self._backend()
        if isinstance(llm, VLLMClient):
            return llm
        return BatchedLLM(llm, self.batching)

    def _backend(self) -> FrozenLLM:
        """The profile's backend; the server and engine backends read the tokenizer from the local model dir."""
        from vqagraph.tools.llm.transformers_backend import TransformersLLM

        backend = self.profile.llm_backend
        ref = self.profile.llm
        if backend.kind == "vllm-server" or backend.url:
            if not backend.url:
                raise ProfileError("llm_backend.kind = 'vllm-server' needs llm_backend.url (see `vqagraph llm serve`)")
            return VLLMClient(backend.url, hub.resolve(ref), model=ref.id, api_key=backend.api_key,
                              timeout=backend.timeout, max_retries=backend.max_retries, in_flight=self.in_flight)
        if backend.kind == "vllm-engine":
            from vqagraph.tools.llm.vllm_engine import VLLMEngineLLM

            return VLLMEngineLLM(hub.resolve(ref), max_model_len=backend.max_model_len)
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        # LLaVA-1.5 tunes its LLM in its second stage, so the projection route needs the checkpoint's own language
        # model: a LLaVA checkpoint named as the LLM runs whole here, answering from prompt embeddings alone.
        config = hub.load(AutoConfig, ref, "llm")
        cls = AutoModelForImageTextToText if config.model_type == "llava" else AutoModelForCausalLM
        model = hub.load(cls, ref, "llm", device=self.device)
        tokenizer = hub.load(AutoTokenizer, ref, "llm")
        if backend.quantize == "int8-dynamic":
            model = hub.quantized_int8(model, ref)
        return TransformersLLM(model, tokenizer, name=ref.id)
