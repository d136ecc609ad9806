"""LLaMA-Adapter (models/llama_adapter.py) and the adapter route: zero-init gates leave the frozen LLM exact, the
mechanism equals PEFT's `AdaptionPromptConfig` logit for logit (visual feature zeroed), generation with the KV
cache equals step-by-step decoding, and the route answers token for token as transformers' own `generate` with the
same prompts; a vLLM backend is refused in one line and never routed to."""

from __future__ import annotations

import copy
import shutil
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from vqagraph import Engine, hub
from vqagraph.config import ModelRef, load_profile
from vqagraph.errors import ModelMismatchError, ProfileError
from vqagraph.graphs.registry import ROUTES
from vqagraph.graphs.router import rules_route
from vqagraph.models.llama_adapter import (
    AdaptionPrompts,
    LlamaAdapter,
    LlamaAdapterConfig,
    adapted,
    attach,
    llm_numbers,
)
from vqagraph.tools.bridge_prompt import bridge_token_ids

QUESTIONS = ["What colour is the circle?", "Is there a square?"]


def _tiny_llama(seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def _adapter(model: torch.nn.Module, layers: int = 2, length: int = 3, visual: int = 16) -> LlamaAdapter:
    torch.manual_seed(1)
    return LlamaAdapter(LlamaAdapterConfig(adapter_layers=layers, adapter_len=length, visual_size=visual,
                                           **llm_numbers(model.config)))


@torch.no_grad()
def test_zero_gates_leave_the_frozen_llm_exact() -> None:
    """Zero-init attention: at initialisation the adapted LLM's logits are the frozen LLM's, bit for bit."""
    model = _tiny_llama()
    ids = torch.randint(0, 120, (2, 9))
    frozen = model(ids).logits
    attach(model)
    adapter = _adapter(model)
    with adapted(adapter.prompts(torch.randn(2, 3, 16))):
        assert torch.equal(model(ids).logits, frozen)
    with torch.no_grad():
        adapter.adaption_gate.fill_(0.5)
    with adapted(adapter.prompts(torch.randn(2, 3, 16))):
        assert not torch.allclose(model(ids).logits, frozen)  # the gates open: the prompts steer the LLM
    assert torch.equal(model(ids).logits, frozen)  # outside `adapted`, the hooks are inert


@torch.no_grad()
def test_equals_peft_adaption_prompts_with_the_visual_feature_zeroed() -> None:
    """PEFT's AdaptionPrompt (one gate per layer) with the same prompts and every head's gate equal to it."""
    from peft import AdaptionPromptConfig, get_peft_model

    model = _tiny_llama()
    ids = torch.randint(0, 120, (3, 7))
    peft_model = get_peft_model(copy.deepcopy(model), AdaptionPromptConfig(adapter_len=3, adapter_layers=2,
                                                                           task_type="CAUSAL_LM"))
    wrapped = [m for m in peft_model.modules() if type(m).__name__ == "AdaptedAttention"]
    assert len(wrapped) == 2
    attach(model)
    adapter = _adapter(model)
    for slot, (module, gate) in enumerate(zip(wrapped, (0.7, -0.4), strict=True)):
        module.adaption_prompt.copy_(adapter.adaption_prompt[slot][None])
        module.adaption_gate.fill_(gate)
        adapter.adaption_gate[slot].fill_(gate)
    theirs = peft_model(input_ids=ids).logits
    with adapted(adapter.prompts(None)):
        ours = model(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(ours, model(ids).logits)  # not vacuous: the prompts change the logits


@torch.no_grad()
def test_generation_with_the_cache_equals_step_by_step_decoding() -> None:
    model = _tiny_llama()
    attach(model)
    adapter = _adapter(model)
    adapter.adaption_gate.normal_(std=2.0)
    ids = torch.randint(0, 120, (2, 6))
    prompts = adapter.prompts(torch.randn(2, 3, 16))
    with adapted(prompts):
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                   pad_token_id=0)[:, 6:]
        seq = ids
        for _ in range(5):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, seq[:, 6:])
    plain = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                           pad_token_id=0)[:, 6:]
    assert not torch.equal(generated, plain)


@torch.no_grad()
def test_prompts_of_one_thread_never_reach_another() -> None:
    """The active prompts live in a context variable: another thread's forward pass sees the frozen LLM."""
    model = _tiny_llama()
    attach(model)
    adapter = _adapter(model)
    adapter.adaption_gate.fill_(1.0)
    ids = torch.randint(0, 120, (1, 5))
    frozen = model(ids).logits
    seen: list[torch.Tensor] = []
    with adapted(adapter.prompts(None)):
        worker = threading.Thread(target=lambda: seen.append(model(ids).logits))
        worker.start()
        worker.join()
        assert not torch.allclose(model(ids).logits, frozen)
    assert torch.equal(seen[0], frozen)


def test_prompts_add_the_visual_feature_to_every_layer() -> None:
    model = _tiny_llama()
    adapter = _adapter(model, layers=3, length=4)
    visual = torch.randn(2, 4, 16)
    prompts = adapter.prompts(visual)
    assert prompts.prompts.shape == (2, 3, 4, 64) and prompts.first_layer == 1 and prompts.gates.shape == (3, 4)
    added = prompts.prompts - adapter.adaption_prompt[None]
    assert torch.allclose(added[:, 0], added[:, 2], atol=1e-6)  # the same visual vectors in every adapted layer
    assert not torch.allclose(added[0], added[1])  # and each image its own
    mean = adapter.prompts(torch.randn(2, 7, 16)).prompts  # 7 queries for 4 prompts: their mean to each prompt
    assert torch.allclose(mean[:, :, 0] - adapter.adaption_prompt[None, :, 0],
                          mean[:, :, 3] - adapter.adaption_prompt[None, :, 3], atol=1e-6)
    both = AdaptionPrompts.cat([prompts, adapter.prompts(visual[:1])])
    assert both.prompts.shape[0] == 3
    with pytest.raises(ValueError, match="different adapters"):
        AdaptionPrompts.cat([prompts, _adapter(model, layers=3, length=4).prompts(visual)])


def test_an_adapter_saves_loads_and_checks_its_llm(tmp_path: Path) -> None:
    model = _tiny_llama()
    adapter = _adapter(model)
    with torch.no_grad():
        adapter.adaption_gate.normal_()
    adapter.save_pretrained(tmp_path)
    loaded = LlamaAdapter.from_pretrained(tmp_path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in adapter.state_dict().items())
    loaded.check_llm(model.config, "tiny")
    other = copy.deepcopy(model.config)
    other.num_hidden_layers = 6
    with pytest.raises(ModelMismatchError, match="trained for an LLM"):
        loaded.check_llm(other, "other")
    with pytest.raises(ModelMismatchError, match="not a LLaMA-Adapter checkpoint"):
        LlamaAdapter.from_pretrained(tmp_path / "nowhere")


# --- the route ------------------------------------------------------------------------------------------------


def _images() -> list[Image.Image]:
    red = Image.new("RGB", (120, 90), "white")
    ImageDraw.Draw(red).ellipse((10, 10, 60, 60), fill="red")
    blue = Image.new("RGB", (90, 140), (20, 20, 20))
    ImageDraw.Draw(blue).rectangle((30, 50, 80, 120), fill="blue")
    return [red, blue]


@pytest.fixture(scope="module")
def adapter_checkpoint(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-qformer-576 (projects to SmolLM2's width) with an adapter for SmolLM2 whose gates are open."""
    from transformers import AutoConfig

    folder = tmp_path_factory.mktemp("adapter") / "tiny-llama-adapter"
    shutil.copytree(hub.resolve(ModelRef(id="builtin:tiny-qformer-576")), folder)
    llm = AutoConfig.from_pretrained(hub.resolve(ModelRef(id="builtin:smollm2-135m-instruct")))
    torch.manual_seed(3)
    adapter = LlamaAdapter(LlamaAdapterConfig(adapter_layers=4, adapter_len=8, visual_size=576,
                                              **llm_numbers(llm)))
    with torch.no_grad():
        adapter.adaption_gate.normal_(std=0.5)
    adapter.save_pretrained(folder)
    return folder


def reference_generate(folder: Path, image: Image.Image, question: str) -> list[int]:
    """transformers' own `generate` on SmolLM2 with the adapter's prompts for the image: BOS + BLIP-2's prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BlipImageProcessorPil

    from vqagraph.tools.qformer import QFormerBridge

    llm_dir = hub.resolve(ModelRef(id="builtin:smollm2-135m-instruct"))
    model = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    attach(model)
    bridge = QFormerBridge.from_pretrained(str(folder)).keep_qformer_fp32().float()
    pixels = BlipImageProcessorPil.from_pretrained(folder)(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        visual = bridge.soft_prompt(bridge.vision_model(pixel_values=pixels).last_hidden_state)
    adapter = LlamaAdapter.from_pretrained(folder)
    ids = torch.tensor([bridge_token_ids(tokenizer, f"Question: {question} Answer:")])
    with adapted(adapter.prompts(visual)):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=10, min_new_tokens=1, pad_token_id=tokenizer.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    eos = tokenizer.eos_token_id
    return new[: new.index(eos)] if eos in new else new


@pytest.fixture(scope="module")
def engine(adapter_checkpoint: Path) -> Engine:
    return Engine.from_profile("tiny", llama_adapter={"id": str(adapter_checkpoint)})


def test_the_route_matches_transformers_generate(engine: Engine, adapter_checkpoint: Path) -> None:
    answers = set()
    for image in _images():
        for question in QUESTIONS:
            answer = engine.ask(image, question, route="adapter")
            got = answer.trace.route_answers["adapter"]
            reference = reference_generate(adapter_checkpoint, image, question)
            # the route cuts at its stop ("\n"), as every route does; the reference runs to EOS or 10 tokens
            assert got["token_ids"] == reference[: len(got["token_ids"])]
            record = answer.trace.adapter
            assert answer.route == "adapter" and record is not None
            assert record["prompt"] == f"Question: {question} Answer:" and record["query_tokens"] == 8
            assert record["adapter_layers"] == 4 and record["adapter_len"] == 8 and len(record["gates"]) == 4
            assert min(record["gates"]) > 0 and record["visual_norm"] > 0 and not record["conditioned"]
            answers.add(tuple(got["token_ids"]))
    # the image steers the answer through the layers: the check is not vacuous
    assert len(answers) > 1 and max(map(len, answers)) > 0


def test_the_other_routes_are_untouched_by_the_adapter(engine: Engine) -> None:
    """The adapter's hooks sit on the LLM every route shares; the Q-Former route answers as it did without them."""
    image = _images()[0]
    plain = Engine.from_profile("tiny", qformer={"id": "builtin:tiny-qformer-576"})
    before = plain.ask(image, QUESTIONS[0], route="bridge").trace.route_answers["bridge"]["token_ids"]
    engine.ask(image, QUESTIONS[0], route="adapter")  # the hooks are on now
    both = engine.ask(image, QUESTIONS[0], route="both")
    assert both.trace.route_answers["bridge"]["token_ids"] == before
    assert set(both.trace.route_answers) == {"img2llm", "bridge", "adapter"}


def test_a_vllm_backend_refuses_the_adapter_route_in_one_line(adapter_checkpoint: Path) -> None:
    profile = load_profile("tiny", llama_adapter={"id": str(adapter_checkpoint)},
                           llm_backend={"kind": "vllm-server", "url": "http://127.0.0.1:9"})
    assert "adapter" not in ROUTES.available(profile)
    with pytest.raises(ProfileError, match="vLLM cannot run the adapter's gated prompts") as caught:
        ROUTES.check_request("adapter", profile)
    assert "\n" not in str(caught.value)
    # a cue that names the adapter falls back to a route the backend can run
    cued = profile.router.model_copy(update={"cue_routes": {**profile.router.cue_routes, "colour": "adapter"}})
    decision = rules_route("What colour is the circle?", False, cued, ROUTES.available(profile))
    assert decision.route != "adapter"
    from vqagraph.toolkit import Toolkit

    with pytest.raises(ProfileError, match="transformers backend only"):
        _ = Toolkit(profile).adapted_llm


def test_the_route_needs_a_checkpoint(model_cache: Path) -> None:
    engine = Engine.from_profile("tiny")
    with pytest.raises(ProfileError, match="no `llama_adapter` checkpoint"):
        engine.ask(_images()[0], "What colour is it?", route="adapter")
