"""Writing the bridges as Blip2/InstructBlip checkpoints that hold only the Q-Former parts.

`config.json` is a full `Blip2Config`/`InstructBlipConfig` whose `text_config` is SmolLM2's Llama config (so
`language_projection` maps to 576), but the weights are only `vision_model.*`, `query_tokens`, `qformer.*` and
`language_projection.*`: the LLM is served separately and never stored here. Weights are float16 safetensors
in shards under 10 MB with an index (the config says float32, so loaders compute in float32), beside the image
processor and, with the frozen encoder, the `image_adapter/` the Q-Former reads through, and, for
InstructBLIP, the Q-Former's word tokenizer in `qformer_tokenizer/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vqagraph.tools.qformer import PARTS

MAX_SHARD_BYTES = 9 * 1024 * 1024


def _set_dtype(config: dict[str, Any]) -> None:
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float32"
    for value in config.values():
        if isinstance(value, dict):
            _set_dtype(value)


def write_checkpoint(bridge: Any, out: Path, image_size: int, qformer_tokenizer: Any = None,
                     notes: dict[str, Any] | None = None, adapter: Any = None) -> Path:
    """The Q-Former parts, config, processor, tokenizer and (with a frozen encoder) the adapter it reads through."""
    from safetensors.torch import save_file
    from transformers import BlipImageProcessorPil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("model*.safetensors*"):
        old.unlink()
    state = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in bridge.state_dict().items()
             if k.startswith(PARTS)}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][key] = state[key]
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        (out / name).chmod(0o644)  # safetensors writes 0600; shipped files must be readable by everyone
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in state.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
    config = bridge.config.to_dict()
    config["architectures"] = ["Blip2ForConditionalGeneration" if bridge.kind == "blip-2"
                               else "InstructBlipForConditionalGeneration"]
    _set_dtype(config)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    BlipImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(out)
    if qformer_tokenizer is not None:
        qformer_tokenizer.save_pretrained(out / "qformer_tokenizer")
    if adapter is not None:

        from vqagraph_lab.text_route.models import save_adapter

        save_adapter(adapter, out)
    if notes is not None:
        (out / "training.json").write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
    return out
