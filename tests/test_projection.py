"""The projection route (LLaVA: patch features → `multi_modal_projector` → image tokens where the prompt puts
`<image>` → frozen LLM), checked token for token against `LlavaForConditionalGeneration.generate` on a tiny
checkpoint built from a config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from vqagraph import Engine, hub
from vqagraph.config import ModelRef, load_profile
from vqagraph.errors import ModelMismatchError, ProfileError
from vqagraph.graphs.registry import ROUTES
from vqagraph.tools.bridge_prompt import split_at_image
from vqagraph.tools.projector import ProjectionBridge, grid_tokens

QUESTIONS = ["What colour is the circle?", "Is there a square?"]


def images() -> list[Image.Image]:
    red = Image.new("RGB", (120, 90), "white")
    ImageDraw.Draw(red).ellipse((10, 10, 60, 60), fill="red")
    blue = Image.new("RGB", (90, 140), (20, 20, 20))
    ImageDraw.Draw(blue).rectangle((30, 50, 80, 120), fill="blue")
    return [red, blue]


def reference_generate(checkpoint: str | Path, image: Image.Image, question: str) -> list[int]:
    """What `LlavaForConditionalGeneration.generate` answers greedily for the route's prompt: the processor's
    expansion of `<image>` into `image_seq_length` image tokens, then the checkpoint's own vision tower and
    projector."""
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

    folder = str(checkpoint) if Path(str(checkpoint)).is_dir() else hub.resolve(ModelRef(id=str(checkpoint)))
    model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pixels = AutoImageProcessor.from_pretrained(folder)(images=image, return_tensors="pt")["pixel_values"]
    text = load_profile("tiny").projection.prompt_template.format(question=question)
    before, after = split_at_image(tokenizer, text)
    ids = torch.tensor([before + [model.config.image_token_id] * model.config.image_seq_length + after])
    out = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=10, min_new_tokens=1)
    new = out[0, ids.shape[1] :].tolist()
    eos = model.config.text_config.eos_token_id
    return new[: new.index(eos)] if eos in new else new


def llava_engine(**overrides: object) -> Engine:
    return Engine.from_profile("tiny", llm={"id": "builtin:tiny-llava-llm"}, projector={"id": "builtin:tiny-llava"},
                               **overrides)


@pytest.fixture(scope="module")
def engine(model_cache: Path) -> Engine:
    return llava_engine()


def test_projection_matches_llava_generate(engine: Engine) -> None:
    answers = set()
    for image in images():
        for question in QUESTIONS:
            answer = engine.ask(image, question, route="projection")
            got = answer.trace.route_answers["projection"]
            assert got["token_ids"] == reference_generate("builtin:tiny-llava", image, question), (image, question)
            assert answer.route == "projection" and answer.trace.projection["image_tokens"] == 16
            assert "<image>" in answer.trace.projection["prompt"]
            answers.add(tuple(got["token_ids"]))
    assert len(answers) == 4  # the image and the question both steer the answer: the test can fail


def test_image_tokens_are_reused(engine: Engine) -> None:
    image = images()[0]
    first = engine.ask(image, "What is it?", route="projection")
    second = engine.ask(image, "Is it round?", route="projection")
    assert first.trace.projection["image_encoded"] is True or first.trace.projection["image_encoded"] is False
    assert second.trace.projection["image_encoded"] is False


def test_only_the_vision_tower_and_projector_are_loaded(model_cache: Path) -> None:
    bridge = ProjectionBridge.from_pretrained(hub.resolve(ModelRef(id="builtin:tiny-llava")))
    names = set(bridge.state_dict())
    assert names and all(n.startswith(("vision_tower.", "multi_modal_projector.")) for n in names)
    assert not any("language_model" in n or "lm_head" in n for n in names)
    alone = ProjectionBridge.from_pretrained(hub.resolve(ModelRef(id="builtin:tiny-llava")), vision_tower=False)
    assert alone.vision_tower is None and all(n.startswith("multi_modal_projector.") for n in alone.state_dict())


def test_nested_key_layout_loads_the_same(model_cache: Path, tmp_path: Path) -> None:
    """The Hub's LLaVA checkpoints (and transformers' save) store `vision_tower.*` and `multi_modal_projector.*`
    at the top level; transformers 5's modules nest them under `model.`, and a checkpoint may too."""
    source = Path(hub.resolve(ModelRef(id="builtin:tiny-llava")))
    nested = tmp_path / "nested-layout"
    shutil.copytree(source, nested)
    state = load_file(str(nested / "model.safetensors"))
    renamed = {f"model.{k}" if k.startswith(("vision_tower.", "multi_modal_projector.")) else k: v
               for k, v in state.items()}
    assert set(renamed) != set(state)
    save_file(renamed, str(nested / "model.safetensors"), metadata={"format": "pt"})
    flat = ProjectionBridge.from_pretrained(str(source)).state_dict()
    loaded = ProjectionBridge.from_pretrained(str(nested)).state_dict()
    assert all(torch.equal(flat[k], loaded[k]) for k in flat)


def test_checkpoint_without_projector_weights(model_cache: Path, tmp_path: Path) -> None:
    source = Path(hub.resolve(ModelRef(id="builtin:tiny-llava")))
    broken = tmp_path / "no-projector"
    shutil.copytree(source, broken)
    state = {k: v for k, v in load_file(str(broken / "model.safetensors")).items() if "multi_modal_projector" not in k}
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelMismatchError, match=r"lacks .* projector weight"):
        ProjectionBridge.from_pretrained(str(broken))


def test_a_qformer_checkpoint_is_not_a_llava_checkpoint(model_cache: Path) -> None:
    with pytest.raises(ModelMismatchError, match="not a LLaVA checkpoint"):
        ProjectionBridge.from_pretrained(hub.resolve(ModelRef(id="builtin:tiny-blip2")))


def test_projection_needs_a_projector_in_the_profile(model_cache: Path) -> None:
    plain = Engine.from_profile("tiny")
    assert "projection" not in ROUTES.available(plain.profile)
    with pytest.raises(ProfileError, match="no `projector` checkpoint"):
        plain.ask(images()[0], "What is it?", route="projection")


def test_both_runs_every_route_the_profile_has(model_cache: Path) -> None:
    # tiny-blip2's Q-Former also projects to 64 dimensions: three routes into one tiny Llama
    three = llava_engine(qformer={"id": "builtin:tiny-blip2"})
    assert ROUTES.available(three.profile) == ("img2llm", "bridge", "projection")
    answer = three.ask(images()[0], "What colour is the circle?", route="both")
    assert set(answer.trace.route_answers) == {"img2llm", "bridge", "projection"}
    best = max(answer.trace.route_answers.items(), key=lambda kv: kv[1]["mean_logprob"])[0]
    assert answer.route == best and "projection" in answer.trace.route_reason


def test_a_wrong_width_fails_before_any_request(model_cache: Path) -> None:
    engine = Engine.from_profile("tiny", projector={"id": "builtin:tiny-llava"})  # SmolLM2: 576 wide, not 64
    sent: list[object] = []
    engine.tools.llm.generate_from_embeddings = lambda *a, **k: sent.append(a)  # type: ignore[method-assign]
    with pytest.raises(ModelMismatchError, match=r"projects to 64 dimensions but the LLM .* has hidden size 576"):
        engine.ask(images()[0], "What is it?", route="projection")
    assert not sent


def test_grid_tokens_pool_in_raster_order() -> None:
    grid = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    tokens = grid_tokens(grid, 4)
    assert tokens.shape == (1, 4, 2)
    assert tokens[0, 0, 0] == grid[0, 0, :2, :2].mean() and tokens[0, 1, 0] == grid[0, 0, :2, 2:].mean()
    assert torch.equal(grid_tokens(grid, 16)[0, :, 1], grid[0, 1].flatten())
    with pytest.raises(ModelMismatchError):
        grid_tokens(grid, 5)


def test_split_at_image_without_the_placeholder_token(model_cache: Path) -> None:
    """A tokenizer without `<image>` (SmolLM2) tokenizes the two sides apart; BOS first, image between."""
    engine = Engine.from_profile("tiny")
    tokenizer = engine.tools.llm.tokenizer
    before, after = split_at_image(tokenizer, "USER: <image>\nWhat? ASSISTANT:")
    assert before[0] == tokenizer.bos_token_id and tokenizer.decode(before[1:]) == "USER: "
    assert tokenizer.decode(after) == "\nWhat? ASSISTANT:"
    assert split_at_image(tokenizer, "no image here")[0] == []


def test_profile_file_can_name_a_projector(tmp_path: Path, model_cache: Path) -> None:
    profile = tmp_path / "llava.toml"
    profile.write_text('extends = "tiny"\nprojector = "builtin:tiny-llava"\n[projection]\nmax_new_tokens = 3\n')
    loaded = load_profile(profile)
    assert loaded.projector == ModelRef(id="builtin:tiny-llava") and loaded.projection.max_new_tokens == 3
    assert json.loads(loaded.model_dump_json())["projection"]["image_placeholder"] == "<image>"


def test_a_llava_checkpoint_as_the_llm(model_cache: Path) -> None:
    """LLaVA-1.5 tunes its LLM, so a profile may name the LLaVA checkpoint itself as the LLM (the Hub profile
    `llava-1.5` does): the transformers backend runs it whole, and the answer is the checkpoint's own."""
    whole = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llava"}, projector={"id": "builtin:tiny-llava"})
    image = images()[1]
    got = whole.ask(image, QUESTIONS[0], route="projection").trace.route_answers["projection"]
    assert got["token_ids"] == reference_generate("builtin:tiny-llava", image, QUESTIONS[0])
