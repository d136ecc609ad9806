"""Shapes-world bridge training: a `--quick` run lowers the LM loss through the frozen LLM, and the shipped
BLIP-2 / InstructBLIP bridges load through the real classes, project to SmolLM2's width and answer an easy
colour question through the embedding route (transformers backend, greedy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vqagraph.eval.bridge_training import NAMES, train_bridge
from vqagraph.eval.bridge_training.cli import WEIGHTS_DIR
from vqagraph.tools.qformer import PARTS

SHIPPED = {kind: WEIGHTS_DIR / name for kind, name in NAMES.items()}
VISION = [WEIGHTS_DIR / "shapes-blip-captioner", WEIGHTS_DIR / "shapes-blip-itm"]
shipped = pytest.mark.skipif(not all((d / "config.json").exists() for d in SHIPPED.values()),
                             reason="no trained Shapes-world bridges under vqagraph/eval/weights")
has_vision = pytest.mark.skipif(not all((d / "config.json").exists() for d in VISION),
                                reason="no trained Shapes-world vision model under vqagraph/eval/weights")
SMOLLM2_HIDDEN = 576


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    return train_bridge(tmp_path_factory.mktemp("bridge-train"), seed=0, quick=True, progress=False)


@has_vision
def test_quick_bridge_training_lowers_the_loss(quick: dict[str, Any]) -> None:
    probe = quick["probe"]  # the LM loss of fixed questions through the frozen LLM, before and after
    assert probe["stage2_after"] < probe["stage2_before"], probe
    assert probe["instruct_after"] < probe["instruct_before"], probe
    assert quick["losses"]["stage1_itg"]["last"] < quick["losses"]["stage1_itg"]["first"], quick["losses"]
    assert quick["knowledge_in_training"] is False and "knowledge" not in quick["families"]
    for directory in quick["models"].values():
        from vqagraph.tools.qformer import QFormerBridge

        assert QFormerBridge.from_pretrained(directory).output_size == SMOLLM2_HIDDEN


def _only_qformer_parts(directory: Path) -> None:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    assert index["weight_map"] and all(k.startswith(PARTS) for k in index["weight_map"])
    assert max(p.stat().st_size for p in directory.rglob("*") if p.is_file()) < 10 * 2**20


@shipped
@pytest.mark.parametrize("kind", ["blip2", "instructblip"])
def test_shipped_bridge_loads_and_projects_to_smollm2(kind: str) -> None:
    from transformers import AutoConfig

    from vqagraph.tools.qformer import QFormerBridge

    directory = SHIPPED[kind]
    _only_qformer_parts(directory)
    config = AutoConfig.from_pretrained(directory)
    assert config.text_config.model_type == "llama" and config.text_config.hidden_size == SMOLLM2_HIDDEN
    bridge = QFormerBridge.from_pretrained(str(directory))
    assert bridge.output_size == SMOLLM2_HIDDEN
    assert bridge.conditioned == (kind == "instructblip")
    notes = json.loads((directory / "training.json").read_text())
    assert notes["knowledge_in_training"] is False


def _easy_colour_scene() -> Any:
    """One large object on the picture: the clearest colour question there is."""
    from vqagraph.eval.world import generate_scene

    seed = 5000
    while True:
        scene = generate_scene(seed, n_objects=1)
        if scene.objects[0].size_word == "large":
            return scene
        seed += 1


@shipped
@pytest.mark.parametrize("kind", ["blip2", "instructblip"])
def test_shipped_bridge_answers_an_easy_colour_question(kind: str, model_cache: Path) -> None:
    from vqagraph import Engine
    from vqagraph.eval.world import render_scene

    scene = _easy_colour_scene()
    obj = scene.objects[0]
    engine = Engine.from_profile("tiny", qformer={"id": str(SHIPPED[kind])}, meaningless=False)
    answer = engine.ask(render_scene(scene), f"What colour is the {obj.shape}?", route="bridge")
    assert answer.route == "bridge"
    assert answer.answer in ([obj.colour, "grey"] if obj.colour == "gray" else [obj.colour]), (obj, answer.answer)
    again = engine.ask(render_scene(scene), f"What colour is the {obj.shape}?", route="bridge")
    assert again.answer == answer.answer  # greedy: deterministic


def test_knowledge_never_in_training_families() -> None:
    from vqagraph.eval.bridge_training.data import QA_FAMILIES

    assert "knowledge" not in QA_FAMILIES
    assert np.all([f in ("colour", "shape", "count", "exists", "position", "size", "marked") for f in QA_FAMILIES])
