"""The embedding route (BLIP-2 / InstructBLIP Q-Former → soft prompt → frozen LLM), checked token for token
against transformers' own `generate` on tiny checkpoints built from configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from vqagraph import Engine, hub
from vqagraph.config import ModelRef
from vqagraph.errors import ModelMismatchError, ModelNotAvailableError, ProfileError
from vqagraph.tools.bridge_prompt import bridge_token_ids
from vqagraph.tools.qformer import QFormerBridge

QUESTIONS = ["What colour is the circle?", "Is there a square?"]


def _images() -> list[Image.Image]:
    red = Image.new("RGB", (120, 90), "white")
    ImageDraw.Draw(red).ellipse((10, 10, 60, 60), fill="red")
    blue = Image.new("RGB", (90, 140), (20, 20, 20))
    ImageDraw.Draw(blue).rectangle((30, 50, 80, 120), fill="blue")
    return [red, blue]


def reference_generate(checkpoint: str, image: Image.Image, question: str) -> list[int]:
    """What `Blip2/InstructBlipForConditionalGeneration.generate` answers greedily: image tokens, BOS, prompt."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer, BlipImageProcessorPil

    folder = hub.resolve(ModelRef(id=checkpoint))
    model = AutoModelForImageTextToText.from_pretrained(folder, config=AutoConfig.from_pretrained(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pixels = BlipImageProcessorPil.from_pretrained(folder)(images=image, return_tensors="pt")["pixel_values"]
    text = bridge_token_ids(tokenizer, f"Question: {question} Answer:")
    ids = torch.tensor([[model.config.image_token_index] * model.config.num_query_tokens + text])
    extra = {}
    if model.config.model_type == "instructblip":
        qtok = AutoTokenizer.from_pretrained(folder, subfolder="qformer_tokenizer")(question, return_tensors="pt")
        extra = {"qformer_input_ids": qtok.input_ids, "qformer_attention_mask": qtok.attention_mask}
    out = model.generate(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=10, min_new_tokens=1, **extra)
    new = out[0, ids.shape[1]:].tolist()
    eos = model.config.text_config.eos_token_id
    return new[: new.index(eos)] if eos in new else new


@pytest.fixture(scope="module")
def bridge_engines(model_cache: Path) -> dict[str, Engine]:
    # tiny-blip2 and tiny-instructblip share one OPT, written out alone as tiny-blip2-opt: the served LLM.
    return {name: Engine.from_profile("tiny", llm={"id": "builtin:tiny-blip2-opt"}, qformer={"id": f"builtin:{name}"})
            for name in ("tiny-blip2", "tiny-instructblip")}


@pytest.mark.parametrize("checkpoint", ["tiny-blip2", "tiny-instructblip"])
def test_bridge_matches_transformers_generate(bridge_engines, checkpoint: str) -> None:  # type: ignore[no-untyped-def]
    engine = bridge_engines[checkpoint]
    answers = set()
    for image in _images():
        for question in QUESTIONS:
            answer = engine.ask(image, question, route="bridge")
            got = answer.trace.route_answers["bridge"]
            assert got["token_ids"] == reference_generate(f"builtin:{checkpoint}", image, question)
            assert answer.route == "bridge" and answer.trace.bridge["prompt"] == f"Question: {question} Answer:"
            assert answer.trace.bridge["query_tokens"] == 8 and len(got["token_logprobs"]) == len(got["token_ids"])
            assert answer.trace.bridge["conditioned"] == (checkpoint == "tiny-instructblip")
            answers.add(tuple(got["token_ids"]))
    assert len(answers) > 1  # the soft prompt steers the LLM: the check is not vacuous


def test_image_features_are_reused(bridge_engines) -> None:  # type: ignore[no-untyped-def]
    image = _images()[0].copy()
    image.putpixel((0, 0), (9, 8, 7))
    for engine in bridge_engines.values():
        first = engine.ask(image, QUESTIONS[0], route="bridge")
        second = engine.ask(image, QUESTIONS[1], route="bridge")
        assert first.trace.bridge["image_encoded"] and not second.trace.bridge["image_encoded"]
        assert "qformer_encode" in second.trace.timings and "bridge_answer" in second.trace.timings


def test_only_the_qformer_parts_are_loaded(model_cache: Path) -> None:
    bridge = QFormerBridge.from_pretrained(hub.resolve(ModelRef(id="builtin:tiny-blip2")))
    names = set(bridge.state_dict())
    assert not any(n.startswith("language_model") for n in names)
    assert {"query_tokens", "language_projection.weight"} <= names and bridge.output_size == 64


def test_projection_wider_than_the_llm_fails_before_any_request(model_cache: Path) -> None:
    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-qformer-576"})
    sent = []
    engine.tools.llm.generate_from_embeddings = lambda *a, **k: sent.append(a)  # type: ignore[method-assign]
    with pytest.raises(ModelMismatchError, match=r"projects to 576 dimensions but the LLM .* has hidden size 64"):
        engine.ask(_images()[0], "What colour is it?", route="bridge")
    assert sent == []


def test_checkpoint_without_qformer_weights(model_cache: Path, tmp_path: Path) -> None:
    source = Path(hub.resolve(ModelRef(id="builtin:tiny-blip2")))
    broken = tmp_path / "no-qformer"
    shutil.copytree(source, broken)
    weights = load_file(broken / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("qformer.")}, broken / "model.safetensors")
    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-blip2-opt"}, qformer={"id": str(broken)})
    with pytest.raises(ModelMismatchError, match=r"lacks .* Q-Former weight"):
        engine.ask(_images()[0], "What colour is it?", route="bridge")


def test_a_plain_llm_is_not_a_qformer_checkpoint(model_cache: Path) -> None:
    with pytest.raises(ModelMismatchError, match="not a Q-Former checkpoint"):
        QFormerBridge.from_pretrained(hub.resolve(ModelRef(id="builtin:tiny-llama")))


def test_hub_checkpoint_offline_is_a_clear_error(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match=r"qformer model 'Salesforce/blip2-opt-2\.7b'"):
        hub.load(QFormerBridge, ModelRef(id="Salesforce/blip2-opt-2.7b"), "qformer")


def test_bridge_needs_a_qformer_in_the_profile(model_cache: Path) -> None:
    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer=None)
    with pytest.raises(ProfileError, match="no `qformer` checkpoint"):
        engine.ask(_images()[0], "What colour is it?", route="bridge")
    answer = engine.ask(_images()[0], "What colour is it?")
    assert answer.route == "img2llm" and "no Q-Former" in answer.trace.route_reason
