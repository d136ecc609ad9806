"""The bridge's training data: Shapes-world scenes (the text-route trainer's corpus, mirror images included), the
frozen image encoder's features cached once, and the texts the bridge learns from.

The image encoder is the frozen pretrained EfficientNet-Lite (docs/methods.md §6.1): its grids are computed once
(and kept on disk); the bridge's own adapter, trained in stage 1, turns them into the tokens the Q-Former reads.
Questions come from the training families only: `knowledge` never reaches the bridge's training data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from vqagraph_lab.text_route import data as D

QA_FAMILIES = tuple(f for f in D.TRAIN_FAMILIES if f != "knowledge")
assert "knowledge" not in QA_FAMILIES


def vision_config(source: Path) -> dict[str, Any]:
    """The BLIP vision config of the world's captioner, as a BLIP-2 vision config dict."""
    from transformers import BlipConfig

    cfg = cast(Any, BlipConfig.from_pretrained(source).vision_config)
    return {"hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
            "image_size": cfg.image_size, "patch_size": cfg.patch_size, "layer_norm_eps": cfg.layer_norm_eps,
            "hidden_act": cfg.hidden_act, "qkv_bias": True}


def blip_vision_state(source: Path) -> dict[str, torch.Tensor]:
    """`vision_model.*` weights of a saved BLIP model, without the prefix, in float32."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in sorted(Path(source).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118
                if key.startswith("vision_model."):
                    state[key.removeprefix("vision_model.")] = handle.get_tensor(key).float()
    if not state:
        raise FileNotFoundError(f"{source} holds no vision_model weights")
    return state


@dataclass
class BridgeData:
    """Corpus pictures whose frozen features are cached: `features[j]` is `corpus.example(rows[j])`'s."""

    corpus: D.Corpus
    rows: list[int]
    features: torch.Tensor  # (len(rows), 1 + patches, vision hidden): the grids through the current adapter
    grids: torch.Tensor  # (len(rows), channels, rows, cols): the frozen encoder's, computed once

    @torch.no_grad()
    def refresh(self, adapter: Any, chunk: int = 256) -> None:
        """Recompute `features` after the adapter was trained."""
        adapter.eval()
        self.features = torch.cat([adapter(pixel_values=self.grids[i : i + chunk]).last_hidden_state
                                   for i in range(0, len(self.grids), chunk)])

    def texts(self, j: int) -> D.Texts:
        return self.corpus.example(self.rows[j]).texts

    def __len__(self) -> int:
        return len(self.rows)


def make_data(vision: Any, seed: int, scenes: int, flips: int, workers: int = 1,
              progress: Callable[[str, int], Any] | None = None) -> BridgeData:
    """`scenes` generated scenes under `flips` mirror images each, rendered, and their features encoded once."""
    seeds = [int(s) for s in np.random.default_rng([seed, 71]).integers(2**31, size=scenes)]
    bar = progress("scenes", scenes) if progress else None
    corpus = D.make_corpus(seeds, seed=seed + 7919, flips=D.FLIPS[:flips], workers=workers, progress=bar)
    if bar is not None:
        bar.close()
    rows = list(range(len(corpus)))
    bar = progress("frozen encoder", len(rows)) if progress else None
    D.cache_grids(corpus, rows, progress=bar)
    if bar is not None:
        bar.close()
    grids = torch.stack([corpus.example(r).memo["grid"] for r in rows])
    data = BridgeData(corpus, rows, features=torch.empty(0), grids=grids)
    data.refresh(vision)
    return data


def answer_text(answers: Sequence[str]) -> str:
    """The answer the bridge learns to say: the first acceptable one ("6" of ["6", "six"])."""
    return answers[0]


def qa_sample(data: BridgeData, j: int, rng: np.random.Generator) -> tuple[str, str] | None:
    """(question, answer) about picture j, training families only (never `knowledge`)."""
    questions = [q for q in data.texts(j).questions if q.family in QA_FAMILIES and not q.marks]
    if not questions:
        return None
    q = questions[int(rng.integers(len(questions)))]
    return q.question, answer_text(q.answers)


def caption_sample(data: BridgeData, j: int, rng: np.random.Generator, short: bool = False) -> str:
    """A whole-picture caption of picture j (`short`: the listing without places, or the count)."""
    from vqagraph_lab.text_route.captioner import strip_prompt

    captions = [strip_prompt(c) for c in data.texts(j).captions]
    if short:
        captions = captions[:2] + captions[3:4]
    return captions[int(rng.integers(len(captions)))]
