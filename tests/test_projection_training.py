"""The projection bridge's trainer (LLaVA stage 1 on cached frozen grids): a quick run lowers the LM loss through
the frozen LLM and writes a plain LLaVA projector the route loads; a stopped run resumes where it was; the shipped
projector loads through the real classes and answers through the projection route."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from vqagraph_lab import projection as P

from vqagraph.tools.projector import ProjectionBridge

PLAN = dataclasses.replace(P.QUICK, lm_steps=8, checkpoint_every=4, eval_every=4)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    return P.train_projection(tmp_path_factory.mktemp("projection-train"), quick=True, progress=False, plan=PLAN)


def test_quick_run_lowers_the_loss_and_writes_a_llava_projector(quick: dict[str, Any]) -> None:
    assert quick["losses"]["align"]["last"] < quick["losses"]["align"]["first"]
    assert quick["losses"]["lm"]["steps"] == PLAN.lm_steps
    assert [h["step"] for h in quick["heldout_accuracy"]] == [0, 4, 8]  # the held-out accuracy curve
    assert quick["knowledge_in_training"] is False and quick["image_encoder"]["frozen"]
    folder = Path(quick["model"])
    notes = json.loads((folder / "training.json").read_text())
    assert notes["prompt"] == P.PROMPT and notes["image_tokens"] == 49
    bridge = ProjectionBridge.from_pretrained(str(folder), vision_tower=False)
    assert bridge.input_size == 112 and bridge.output_size == 576 and bridge.image_seq_length == 49
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        assert all(k.startswith("model.multi_modal_projector.") for k in handle.keys())  # noqa: SIM118


def test_normalisation_folds_into_the_projector() -> None:
    """Trained on standardised features, saved as a projector of the raw ones: the same outputs."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    torch.manual_seed(0)
    config = P.projector_config(_smollm2(), 112, 49)
    projector = LlavaMultiModalProjector(config)
    raw = torch.randn(3, 49, 112) * 4 + 2
    norm = P.Normalised(raw.reshape(-1, 112).mean(0), raw.reshape(-1, 112).std(0))
    folded = LlavaMultiModalProjector(config)
    folded.load_state_dict(norm.fold(projector))
    with torch.no_grad():
        assert torch.allclose(folded(raw), projector(norm(raw)), atol=1e-4)
    unfolded = norm.unfold(norm.fold(projector))  # what a continued run starts from
    assert all(torch.allclose(unfolded[k], v, atol=1e-4) for k, v in projector.state_dict().items())


def test_a_run_continues_from_a_trained_projector(tmp_path: Path, quick: dict[str, Any]) -> None:
    """A longer LM stage without the warm start again: it starts where the saved projector ended, on the same
    held-out questions, and keeps the earlier run's record."""
    plan = dataclasses.replace(PLAN, lm_steps=4, eval_every=4)
    continued = P.train_projection(tmp_path, quick=True, progress=False, plan=plan, continue_from=quick["model"])
    assert continued["heldout_accuracy"][0] == {**quick["heldout_accuracy"][-1], "step": 0}
    assert continued["losses"]["align"] is None and continued["losses"]["lm"]["steps"] == 4
    notes = json.loads((Path(continued["model"]) / "training.json").read_text())
    assert notes["continued_from"]["heldout_accuracy"] == quick["heldout_accuracy"]
    before, after = P.read_projector(quick["model"]), P.read_projector(continued["model"])
    assert not torch.equal(before["linear_2.weight"], after["linear_2.weight"])  # it trained


def test_a_stopped_run_resumes_where_it_was(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                           quick: dict[str, Any]) -> None:
    real, calls = P.lm_loss, []

    def stop_after_six(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "lm_loss", stop_after_six)
    with pytest.raises(KeyboardInterrupt):
        P.train_projection(tmp_path, quick=True, progress=False, plan=PLAN)
    assert (tmp_path / ".projection-checkpoints-seed0-quick" / "state.pt").exists()
    monkeypatch.setattr(P, "lm_loss", real)
    resumed = P.train_projection(tmp_path, quick=True, progress=False, plan=PLAN, resume=True)
    # resumed from step 4 (the last checkpoint): the same losses as the run that was never stopped
    assert resumed["lm_loss_every_50"] == pytest.approx(quick["lm_loss_every_50"], abs=1e-4)
    assert resumed["heldout_accuracy"] == quick["heldout_accuracy"]


def test_shipped_projector_answers_through_the_route(model_cache: Path) -> None:
    from vqagraph import Engine
    from vqagraph.world.splits import split_examples

    folder = P.WEIGHTS_DIR / P.NAME
    notes = json.loads((folder / "training.json").read_text())
    assert notes["quick"] is False and notes["image_tokens"] == 49 and notes["llm"] == P.LLM
    engine = Engine.from_profile("shapes")
    example = next(iter(split_examples("single-large", 1)))
    answer = engine.ask(example.image, "What colour is the shape?", route="projection")
    assert answer.route == "projection" and answer.trace.projection["image_tokens"] == 49 and answer.answer
    again = engine.ask(example.image, "What shape is it?", route="projection")
    assert again.trace.projection["image_encoded"] is False  # the frozen grid and the image tokens were cached


def _smollm2() -> str:
    from vqagraph import hub
    from vqagraph.config import ModelRef

    return hub.resolve(ModelRef(id=P.LLM))


def test_projection_options_need_projection(capsys: pytest.CaptureFixture[str]) -> None:
    from vqagraph_lab.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["--bridge", "--lm-steps", "5", "--continue-from", "somewhere"])
    assert stop.value.code == 2
    assert "--continue-from, --lm-steps only go with --projection" in capsys.readouterr().err
