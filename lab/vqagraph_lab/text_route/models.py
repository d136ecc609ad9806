"""The Shapes-world models' architectures (real transformers classes) and how they are written to disk.

Sizes are chosen for a 2-core CPU and for git: the frozen EfficientNet-Lite0's stride-16 grid at 224 px (14×14,
room for K'=20 samples) through a one-layer adapter into hidden 128 with head size 64, a 3-layer text side of the
same width, and a word-level vocabulary.
Weights are stored as float16 safetensors whose config says float32 (so `from_pretrained` upcasts), so all three
models stay far below the 40 MB budget and every file below 10 MB.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from vqagraph_lab.text_route.data import GRID, IMAGE_SIZE, PATCH_SIZE

# The models see through the frozen pretrained encoder (tools/image_encoder.py) and a trained `GridAdapter` saved
# beside each model in `image_adapter/`; BLIP's classes still build a vision tower, so theirs is a placeholder of
# zero layers reading one 16 px patch (never run with the `shapes` profile; ~100k parameters).
VISION = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 0, "num_attention_heads": 2,
          "image_size": PATCH_SIZE, "patch_size": PATCH_SIZE, "initializer_range": 0.02}
ADAPTER = {"hidden_size": 128, "num_layers": 1, "num_heads": 2}  # the adapter's width is the text side's
TEXT_HIDDEN = 128
CAPTION_LAYERS = 3
ITM_LAYERS = 3  # as many as the caption decoder: the ITM text encoder starts from the trained decoder's weights
GRADCAM_LAYER = 1  # the ITM text-encoder layer whose cross-attention is supervised and read by GradCAM
MAX_TEXT_POSITIONS = 80
T5_SIZE = {"d_model": 128, "d_kv": 64, "num_heads": 2, "d_ff": 512, "num_layers": 3, "num_decoder_layers": 3}
MAX_SHARD = "9MB"


def blip_config(ids: dict[str, int], text_layers: int) -> Any:
    from transformers import BlipConfig

    text = {"hidden_size": TEXT_HIDDEN, "intermediate_size": 4 * TEXT_HIDDEN, "num_hidden_layers": text_layers,
            "num_attention_heads": TEXT_HIDDEN // 64, "encoder_hidden_size": VISION["hidden_size"],
            "max_position_embeddings": MAX_TEXT_POSITIONS, "label_smoothing": 0.0, **ids}
    return BlipConfig(vision_config=dict(VISION), text_config=text, projection_dim=128, image_text_hidden_size=128)


def new_adapter(in_channels: int) -> Any:
    from vqagraph.tools.image_encoder import GridAdapter, GridAdapterConfig

    return GridAdapter(GridAdapterConfig(in_channels=in_channels, grid=(GRID, GRID), **ADAPTER))


def save_adapter(adapter: Any, out: Path) -> None:
    """The adapter in float32 (it is small) under `out/image_adapter/`, where the Toolkit looks for it."""
    from vqagraph.tools.image_encoder import ADAPTER_FOLDER

    adapter.save_pretrained(out / ADAPTER_FOLDER)
    for file in (out / ADAPTER_FOLDER).iterdir():
        file.chmod(0o644)  # safetensors writes 0600; shipped files must be readable by everyone


def new_captioner(ids: dict[str, int]) -> Any:
    from transformers import BlipForConditionalGeneration

    return BlipForConditionalGeneration(blip_config(ids, CAPTION_LAYERS))


def new_itm(ids: dict[str, int]) -> Any:
    from transformers import BlipForImageTextRetrieval

    return BlipForImageTextRetrieval(blip_config(ids, ITM_LAYERS))


def new_t5(ids: dict[str, int]) -> Any:
    from transformers import T5Config, T5ForConditionalGeneration

    # decoder_start_token_id is not in T5Config's typed signature (it reaches the config through its kwargs)
    extra: dict[str, Any] = {"decoder_start_token_id": ids["pad_token_id"], **T5_SIZE}
    config = T5Config(vocab_size=ids["vocab_size"], pad_token_id=ids["pad_token_id"], eos_token_id=ids["eos_token_id"],
                      dropout_rate=0.0, **extra)
    model = T5ForConditionalGeneration(config)
    look_back_at_answer(model)
    return model


ANSWER_OFFSET = -2  # in `"answer: {a}  context: …"` the answer's first word sits two tokens after `answer`
ANSWER_HEAD_BIAS = 8.0


def look_back_at_answer(model: Any, head: int = 0) -> None:
    """Start one encoder head attending two tokens back, so the answer's own tokens (and only they) carry the
    `answer` token: T5's cross-attention has no positions, and without this mark a T5 trained from scratch
    never learned which context word was the answer (it wrote the same question for every candidate; with the
    mark it learns the question type in ~150 steps). Only the initial value of the layer-0 relative bias changes."""
    from transformers.models.t5.modeling_t5 import T5Attention

    attention = model.encoder.block[0].layer[0].SelfAttention
    bucket = T5Attention._relative_position_bucket(
        torch.tensor([ANSWER_OFFSET]), bidirectional=True, num_buckets=attention.relative_attention_num_buckets,
        max_distance=attention.relative_attention_max_distance)
    with torch.no_grad():
        weight = attention.relative_attention_bias.weight
        weight[:, head] = 0.0
        weight[int(bucket), head] = ANSWER_HEAD_BIAS


def save_image_processor(out: Path) -> None:
    from transformers import BlipImageProcessorPil

    BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(out)


def save_model(model: Any, out: Path, notes: dict[str, Any] | None = None) -> None:
    """float16 safetensors in shards under 10 MB, plus `training.json` (how it was trained, what it measured)."""
    out.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to(torch.float16)
    half.save_pretrained(out, max_shard_size=MAX_SHARD, safe_serialization=True)
    # The config names float32, so `from_pretrained(dir)` (dtype "auto") computes in float32 on any device.
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    _set_dtype(config, "float32")
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if notes is not None:
        write_notes(out, notes)


def write_notes(out: Path, notes: dict[str, Any]) -> None:
    (out / "training.json").write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")


def _set_dtype(config: dict[str, Any], dtype: str) -> None:
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = dtype
    for value in config.values():
        if isinstance(value, dict):
            _set_dtype(value, dtype)
