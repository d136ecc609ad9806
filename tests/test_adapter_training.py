"""LLaMA-Adapter's trainer (lab/vqagraph_lab/adapter.py): a quick run on the shipped BLIP-2 Q-Former's queries
opens the gates from zero, records the held-out curve and the gates per layer, writes one folder the adapter
route loads (the Q-Former's checkpoint and the adapter), and a stopped run resumes where it was."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from vqagraph_lab import adapter as A

from vqagraph.models.llama_adapter import LlamaAdapter
from vqagraph.tools.qformer import QFormerBridge

PLAN = dataclasses.replace(A.QUICK, steps=6, eval_every=3, checkpoint_every=3)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    return A.train_adapter(tmp_path_factory.mktemp("adapter-train"), quick=True, progress=False, plan=PLAN)


def test_quick_run_opens_the_gates_and_writes_one_folder(quick: dict[str, Any]) -> None:
    assert quick["losses"]["lm"]["steps"] == PLAN.steps
    assert [h["step"] for h in quick["heldout_accuracy"]] == [0, 3, 6]
    gates = [g["per_layer"] for g in quick["gates"]]
    assert gates[0] == [0.0] * PLAN.adapter_layers  # zero-init: step 0 is the frozen LLM
    assert all(v > 0 for v in gates[-1])
    assert quick["knowledge_in_training"] is False and quick["qformer_kind"] == "blip-2"
    folder = Path(quick["model"])
    notes = json.loads((folder / "training.json").read_text())
    assert notes["trainable_parameters"] == quick["trainable_parameters"] > 0
    assert (folder / "qformer-training.json").exists()  # the Q-Former's own record, kept
    adapter = LlamaAdapter.from_pretrained(folder)
    assert adapter.config.adapter_layers == PLAN.adapter_layers and adapter.config.visual_size == 576
    assert adapter.gate_magnitudes() == gates[-1]
    assert QFormerBridge.from_pretrained(str(folder)).output_size == 576


def test_a_stopped_run_resumes_where_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           quick: dict[str, Any]) -> None:
    real, calls = A.batch_loss, []

    def stop_after_four(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(A, "batch_loss", stop_after_four)
    with pytest.raises(KeyboardInterrupt):
        A.train_adapter(tmp_path, quick=True, progress=False, plan=PLAN)
    monkeypatch.setattr(A, "batch_loss", real)
    resumed = A.train_adapter(tmp_path, quick=True, progress=False, plan=PLAN, resume=True)
    assert resumed["losses"]["lm"]["steps"] == PLAN.steps
    assert resumed["heldout_accuracy"] == quick["heldout_accuracy"]  # the same run, seeded, whatever the stop
    assert resumed["gates"] == quick["gates"]


def test_the_input_cell_trains_only_the_language_projection_on_the_same_plan(tmp_path: Path,
                                                                             model_cache: Path) -> None:
    """The 2×2's input cell (`into="input"`): the same frozen Q-Former and plan, its queries at the LLM's input;
    only the language projection learns, from the bridge's own, and the folder loads as any Q-Former."""
    import torch

    from vqagraph import hub
    from vqagraph.config import ModelRef

    notes = A.train_adapter(tmp_path, quick=True, progress=False, plan=PLAN, into="input")
    folder = Path(notes["model"])
    assert folder.name == A.INPUT_NAME and notes["into"] == "input"
    assert [h["step"] for h in notes["heldout_accuracy"]] == [0, 3, 6]
    source = QFormerBridge.from_pretrained(str(hub.resolve(ModelRef(id=A.QFORMER)))).state_dict()
    trained = QFormerBridge.from_pretrained(str(folder)).state_dict()
    assert trained.keys() == source.keys()
    moved = {k for k in source if not torch.equal(source[k], trained[k])}
    assert moved == {"language_projection.weight", "language_projection.bias"}
    assert notes["trainable_parameters"] == sum(source[k].numel() for k in moved)
    assert (folder / "qformer-training.json").exists()
    with pytest.raises(ValueError, match="into"):
        A.train_adapter(tmp_path, quick=True, progress=False, plan=PLAN, into="output")
