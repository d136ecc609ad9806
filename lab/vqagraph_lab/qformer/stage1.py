"""The BLIP-2 bridge's modules and stage 1 (representation learning, no LLM).

The Q-Former is a BERT-style transformer whose layers cross-attend into the frozen image features; BLIP-2
initialises it from BERT-base, and this one is initialised from the world's ITM text encoder (hidden 192, a
cross-attention in every layer, its vision input the same frozen encoder): self-attention, cross-attention and
the feed-forward of both the query and the text paths. The learned queries start as BLIP-2's do (normal, 0.02).

Stage 1 then trains the queries with BLIP-2's image-grounded text generation loss: a text decoder reads only
the query outputs and must write the picture's captions (every caption phrasing of the world). The decoder is
the world's BLIP captioner decoder, trained along and thrown away afterwards, as BLIP-2 keeps only the
Q-Former; so the queries learn to carry what the picture shows before any LLM sees them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from vqagraph_lab.qformer.data import BridgeData, caption_sample
from vqagraph_lab.text_route.captioner import decoder_loss, lr_at

NUM_QUERY_TOKENS = 8  # BLIP-2 uses 32 (docs/methods.md §2); few queries train faster through the LLM here


def qformer_config(itm_dir: Path) -> dict[str, Any]:
    """A Q-Former the shape of the world's ITM text encoder (so its weights initialise it)."""
    from transformers import BlipConfig

    text = cast(Any, BlipConfig.from_pretrained(itm_dir).text_config)
    return {"hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
            "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
            "encoder_hidden_size": text.encoder_hidden_size, "cross_attention_frequency": 1,
            "vocab_size": text.vocab_size, "pad_token_id": text.pad_token_id,
            "max_position_embeddings": text.max_position_embeddings, "layer_norm_eps": text.layer_norm_eps}


def llm_text_config(llm_dir: Path) -> dict[str, Any]:
    """The frozen LLM's config as the checkpoint's `text_config` (so `language_projection` is → its hidden size)."""
    config = json.loads((Path(llm_dir) / "config.json").read_text())
    skip = ("architectures", "_model_name_or_path", "transformers_version")
    return {k: v for k, v in config.items() if k not in skip}


def new_bridge(kind: str, vision: dict[str, Any], qformer: dict[str, Any], text: dict[str, Any],
               num_query_tokens: int = NUM_QUERY_TOKENS) -> Any:
    """A `QFormerBridge` (the parameter names of Blip2/InstructBlipForConditionalGeneration), untrained."""
    from transformers import Blip2Config, InstructBlipConfig

    from vqagraph.tools.qformer import QFormerBridge

    config_cls = Blip2Config if kind == "blip-2" else InstructBlipConfig
    config = config_cls(vision_config=vision, qformer_config=qformer, text_config=text,
                        num_query_tokens=num_query_tokens)
    bridge = QFormerBridge(config)
    torch.nn.init.normal_(bridge.query_tokens, std=0.02)
    return bridge


def itm_text_state(itm_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in sorted(Path(itm_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118
                if key.startswith("text_encoder."):
                    state[key.removeprefix("text_encoder.")] = handle.get_tensor(key).float()
    return state


def init_qformer_from_itm(qformer: Any, itm: dict[str, torch.Tensor]) -> int:
    """Copy the ITM text encoder into a Blip2/InstructBlip Q-Former; returns how many tensors were copied."""
    target = qformer.state_dict()
    new: dict[str, torch.Tensor] = {}
    for key in target:
        source = key.replace("attention.attention.", "attention.self.")
        source = source.replace("intermediate_query.", "intermediate.").replace("output_query.", "output.")
        if key == "layernorm.weight" or key == "layernorm.bias":  # Blip2: the queries' input LayerNorm
            source = "embeddings.LayerNorm." + key.split(".")[-1]
        source = source.replace("embeddings.layernorm.", "embeddings.LayerNorm.")
        if source in itm and itm[source].shape == target[key].shape:
            new[key] = itm[source]
        elif source in itm and key.endswith("position_embeddings.weight"):
            n = min(len(itm[source]), len(target[key]))
            new[key] = target[key].clone()
            new[key][:n] = itm[source][:n]
    qformer.load_state_dict(new, strict=False)
    return len(new)


def query_outputs(bridge: Any, image_embeds: torch.Tensor, ids: torch.Tensor | None = None,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """The Q-Former's query outputs (B, queries, hidden), with gradients (QFormerBridge.soft_prompt's path)."""
    batch = image_embeds.shape[0]
    queries = bridge.query_tokens.expand(batch, -1, -1)
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
    if bridge.conditioned:
        assert mask is not None, "a conditioned Q-Former needs the text's attention mask"
        query_mask = torch.ones(queries.shape[:-1], dtype=torch.long)
        out = bridge.qformer(input_ids=ids, attention_mask=torch.cat([query_mask, mask], dim=1), query_embeds=queries,
                             encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask, return_dict=True)
        return out.last_hidden_state[:, : queries.shape[1]]
    return bridge.qformer(query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask,
                          return_dict=True).last_hidden_state


def train_stage1(bridge: Any, captioner: Any, tokenizer: Any, data: BridgeData, *, steps: int, batch: int,
                 lr: float, seed: int, report: Callable[[int, dict[str, float]], None] | None = None,
                 adapter: Any = None) -> dict[str, list[float]]:
    """Image-grounded captioning: the captioner's decoder reads the query outputs and writes the captions. With
    `adapter`, it is trained too, on the frozen grids (then `data.features` is refreshed)."""
    rng = np.random.default_rng([seed, 31])
    decoder = captioner.text_decoder
    bos = captioner.config.text_config.bos_token_id
    params = [bridge.query_tokens, *bridge.qformer.parameters()]
    if adapter is not None:
        params += list(adapter.parameters())
        adapter.train()
    opt = torch.optim.AdamW([{"params": params, "lr": lr}, {"params": list(decoder.parameters()), "lr": lr / 2}],
                            weight_decay=0.05, betas=(0.9, 0.98))
    bridge.qformer.train()
    decoder.train()
    history: dict[str, list[float]] = {"itg": []}
    warmup = max(1, steps // 15)
    for step in range(steps):
        scale = lr_at(step, steps, 1.0, warmup)
        opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = lr * scale, lr / 2 * scale
        which = [int(j) for j in rng.integers(0, len(data), size=batch)]
        texts = [caption_sample(data, j, rng) for j in which]
        image_embeds = (adapter(pixel_values=data.grids[which]).last_hidden_state if adapter is not None
                        else data.features[which])
        out = query_outputs(bridge, image_embeds)
        loss = decoder_loss(decoder, tokenizer, bos, out, texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history["itg"].append(float(loss.detach()))
        if report is not None:
            report(step, {"itg": float(loss.detach())})
    bridge.eval()
    decoder.eval()
    if adapter is not None:
        data.refresh(adapter)
    return history
