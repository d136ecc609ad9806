"""The LLM's input-embedding matrix, read alone from its safetensors: the embedding routes need it on the
client side to build `[soft prompt; text embeddings]` without loading (or serving twice) the whole LLM."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from vqagraph.errors import ModelNotAvailableError

# Names of the input-embedding tensor in common decoder checkpoints (Llama/Mistral/Qwen, OPT, GPT-2, NeoX),
# also under a BLIP-2 checkpoint's `language_model.` prefix.
EMBEDDING_SUFFIXES = (
    "model.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "transformer.wte.weight",
    "gpt_neox.embed_in.weight",
)


def _files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        for name, file in weight_map.items():
            if name.endswith(EMBEDDING_SUFFIXES):
                return [model_dir / file]
    return sorted(model_dir.glob("*.safetensors"))


def read_embedding_table(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`(vocab, hidden)`; only that tensor's bytes are read (safetensors maps the file, it does not load it)."""
    model_dir = Path(model_dir)
    files = _files(model_dir)
    if not files:
        raise ModelNotAvailableError(f"no safetensors files in {model_dir}: cannot read the LLM's embedding table")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open handles are not dicts)
                if name.endswith(EMBEDDING_SUFFIXES):
                    return handle.get_tensor(name).to(dtype)
    raise ModelNotAvailableError(
        f"no input-embedding tensor (…{', …'.join(EMBEDDING_SUFFIXES)}) in {model_dir}'s safetensors"
    )
