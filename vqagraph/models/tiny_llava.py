"""A tiny LLaVA checkpoint built from a config (seeded), for the projection route offline.

A real `LlavaForConditionalGeneration` with small untrained weights: it makes the projection route runnable and
lets tests check it token for token against the checkpoint's own `generate`. Its answers mean nothing. The Llama
inside is what a backend serves (head size 64, a size vLLM's CPU attention accepts); `tiny-llava-llm` is that
LLM written out alone, as a user would serve the LLM of a real LLaVA checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import processors

from vqagraph.models.tiny import _bpe_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8  # 4x4 patches + CLS; LLaVA's `default` strategy drops CLS: 16 image tokens
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2


def _tokenizer(out: Path) -> Any:
    """A Llama-style tokenizer with `<s>` prepended and `<image>` as a special token, as LLaVA's has."""
    from transformers import PreTrainedTokenizerFast

    raw = _bpe_tokenizer(["<s>", "</s>", "<pad>", "<unk>", "<image>"], vocab_size=700)
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    tokenizer.save_pretrained(out)
    return tokenizer


def build_llava(out: Path, seed: int = 8) -> None:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = _tokenizer(out)
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "projection_dim": 32}
    text = {"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 1, "num_key_value_heads": 1,
            "max_position_embeddings": 512, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
            "tie_word_embeddings": False,
            "initializer_range": 0.3}  # a wide init: untrained outputs vary with the image, so parity tests bite
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                         image_seq_length=IMAGE_TOKENS, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    with torch.no_grad():  # the projector's init is small; scale it so the image visibly steers the answer
        model.model.multi_modal_projector.linear_2.weight.mul_(8.0)
    model.save_pretrained(out)
    CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                          crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(out)


def extract_llava_llm(out: Path) -> None:
    """tiny-llava's Llama (and tokenizer) alone, as a causal LM a backend can serve."""
    from transformers import AutoTokenizer, LlamaForCausalLM, LlavaForConditionalGeneration

    from vqagraph.models.tiny import ensure_builtin

    source = ensure_builtin("tiny-llava", out.parent)
    llava = LlavaForConditionalGeneration.from_pretrained(source)
    llm = LlamaForCausalLM(llava.config.text_config)
    llm.model.load_state_dict(llava.model.language_model.state_dict())
    llm.lm_head.load_state_dict(llava.lm_head.state_dict())
    llm.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)


BUILDERS = {"tiny-llava": build_llava, "tiny-llava-llm": extract_llava_llm}
