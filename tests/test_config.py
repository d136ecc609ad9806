"""Profiles (built-in and files) and the hub's loading errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vqagraph import ModelNotAvailableError, ProfileError, load_profile
from vqagraph.config import BUILTIN_PROFILES, ModelRef
from vqagraph.hub import load, resolve


def test_builtin_profiles() -> None:
    real = load_profile("blip-opt")
    assert real.itm.id == "Salesforce/blip-itm-large-coco"
    assert real.captioner.id == "Salesforce/blip-image-captioning-large"
    assert real.img2llm.gradcam_layer == 7 and real.img2llm.num_patches == 20  # docs/methods.md §1.1-1.2
    assert real.img2llm.itm_threshold == 0.5 and real.img2llm.num_candidates == 30
    default = load_profile()  # the offline default reads real photographs (issue 33): tags, colours, text, Qwen
    assert default.name == "photos" and not default.meaningless and default.img2llm.captions == "imagenet-tags"
    assert default.img2llm.read_text and default.llm.id == "builtin:qwen2.5-coder-0.5b-instruct"
    shapes = load_profile("shapes")  # the Shapes world's models, trained here and shipped in the package
    assert shapes.captioner.id == "builtin:shapes-blip-captioner" and shapes.qformer is not None
    assert load_profile("tiny").meaningless
    assert set(BUILTIN_PROFILES) >= {"shapes", "tiny", "blip-opt", "llava-1.5"}
    llava = load_profile("llava-1.5")  # the projection route's real checkpoint; its LLM is LLaVA's own
    assert llava.projector == llava.llm == ModelRef(id="llava-hf/llava-1.5-7b-hf")
    from vqagraph.graphs.registry import ROUTES

    assert ROUTES.available(llava) == ("img2llm", "projection") and ROUTES.available(real) == ("img2llm", "bridge")
    assert llava.projection.prompt_template.startswith("USER: <image>\n")  # LLaVA-1.5's VQA prompt (§7)


def test_unknown_profile() -> None:
    known = r"blip-opt, llava-1\.5, photos, shapes, tiny"
    with pytest.raises(ProfileError, match=rf"unknown profile 'nope'; built-in profiles: {known}"):
        load_profile("nope")


def test_toml_profile_extends_a_builtin_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "models" / "itm").mkdir(parents=True)
    path = tmp_path / "mine.toml"
    path.write_text('extends = "tiny"\nitm = "./models/itm"\n[img2llm]\nnum_captions = 3\n')
    profile = load_profile(path)
    assert profile.name == "mine"
    assert profile.itm.id == str((tmp_path / "models" / "itm").resolve())
    assert profile.captioner.id == "builtin:tiny-blip-captioner"
    assert profile.img2llm.num_captions == 3 and profile.img2llm.gradcam_layer == 1


def test_yaml_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: mine\nitm: a/b\ncaptioner: {id: c/d, revision: main}\nquestion_generator: e/f\n"
                    "llm: g/h\nimg2llm:\n  question_generation: template\n")
    profile = load_profile(path)
    assert profile.captioner == ModelRef(id="c/d", revision="main")
    assert profile.img2llm.question_generation == "template"


@pytest.mark.parametrize(("text", "message"), [
    ('extends = "tiny"\n[img2llm]\nnum_patches = "many"\n', "img2llm.num_patches"),
    ('extends = "tiny"\ncolour = "red"\n', "colour: Extra inputs are not permitted"),
    ('extends = "nope"\n', "unknown profile 'nope'"),
    ("this is = not toml [", "cannot read profile file"),
    ('name = "x"\n', "itm: Field required"),
])
def test_bad_profile_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.toml")


def test_overrides_are_validated() -> None:
    assert load_profile("tiny", img2llm={"seed": 5}).img2llm.seed == 5
    with pytest.raises(ProfileError, match="itm_threshold"):
        load_profile("tiny", img2llm={"itm_threshold": 2})


def test_absent_hub_model_names_itself_and_its_role(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from transformers import BlipForImageTextRetrieval

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load(BlipForImageTextRetrieval, ModelRef(id="Salesforce/blip-itm-large-coco"), "itm")
    message = str(info.value)
    assert "'Salesforce/blip-itm-large-coco'" in message and "itm" in message and "HF_HUB_OFFLINE=1" in message


def test_local_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match=r"has no config\.json"):
        resolve(ModelRef(id=str(tmp_path)))


def test_unknown_builtin() -> None:
    with pytest.raises(ModelNotAvailableError, match="unknown built-in model 'builtin:huge'"):
        resolve(ModelRef(id="builtin:huge"))


def test_models_load_once_per_process() -> None:
    from transformers import AutoTokenizer

    ref = ModelRef(id="builtin:tiny-llama")
    assert load(AutoTokenizer, ref, "llm") is load(AutoTokenizer, ref, "llm")


def test_int8_quantisation_is_for_the_transformers_backend_only() -> None:
    assert load_profile("tiny", llm_backend={"quantize": "int8-dynamic"}).llm_backend.quantize == "int8-dynamic"
    with pytest.raises(ProfileError, match="transformers backend only"):
        load_profile("tiny", llm_backend={"kind": "vllm-engine", "quantize": "int8-dynamic"})
