"""Tiny BLIP-2 and InstructBLIP checkpoints built from configs (seeded), for the Q-Former route offline.

Real transformers classes with small untrained weights: they make the Q-Former route runnable and let tests
check it token for token against `Blip2ForConditionalGeneration.generate`. Their answers mean nothing.
The OPT language model inside is what vLLM serves (head size 64, a size vLLM's CPU attention accepts), and
`extract_language_model` writes it out alone, as a user would serve the LLM of a real BLIP-2 checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import processors

from vqagraph.models.tiny import _bpe_tokenizer, _save_bert_tokenizer

NUM_QUERY_TOKENS = 8  # BLIP-2 uses 32 (docs/methods.md §2); 8 keeps tests fast, the code never assumes 32
IMAGE_SIZE = 96


def _opt_tokenizer(out: Path) -> Any:
    """An OPT-style tokenizer: `</s>` is BOS and EOS and is prepended, `<image>` is a placeholder token."""
    from transformers import PreTrainedTokenizerFast

    raw = _bpe_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<image>"], vocab_size=700)
    raw.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.save_pretrained(out)
    return tokenizer


def _image_processor() -> Any:
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _vision_and_qformer() -> tuple[dict[str, Any], dict[str, Any]]:
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": IMAGE_SIZE, "patch_size": 8}
    qformer = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "encoder_hidden_size": 32, "cross_attention_frequency": 1, "max_position_embeddings": 64}
    return vision, qformer


def _opt_text(vocab_size: int) -> dict[str, Any]:
    return {"model_type": "opt", "vocab_size": vocab_size, "hidden_size": 64, "word_embed_proj_dim": 64,
            "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 1, "max_position_embeddings": 512,
            "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1,
            "init_std": 0.3}  # a wide init: untrained outputs vary with the soft prompt, so parity tests bite


def build_blip2(out: Path, seed: int = 4) -> None:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    tokenizer = _opt_tokenizer(out)
    vision, qformer = _vision_and_qformer()
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=_opt_text(len(tokenizer)),
                         num_query_tokens=NUM_QUERY_TOKENS,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(config).save_pretrained(out)
    Blip2Processor(image_processor=_image_processor(), tokenizer=tokenizer,
                   num_query_tokens=NUM_QUERY_TOKENS).save_pretrained(out)


def build_instructblip(out: Path, seed: int = 5) -> None:
    from transformers import (
        AutoTokenizer,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    tokenizer = _opt_tokenizer(out)
    ids = _save_bert_tokenizer(out / "qformer_tokenizer")
    qformer_tokenizer = AutoTokenizer.from_pretrained(out / "qformer_tokenizer")
    vision, qformer = _vision_and_qformer()
    qformer = {**qformer, "vocab_size": ids["vocab_size"], "pad_token_id": ids["pad_token_id"]}
    config = InstructBlipConfig(vision_config=vision, qformer_config=qformer,
                                text_config=_opt_text(len(tokenizer)), num_query_tokens=NUM_QUERY_TOKENS,
                                image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config)
    # The same OPT as tiny-blip2's, so one served LLM (tiny-blip2-opt) checks both bridges.
    from transformers import Blip2ForConditionalGeneration

    from vqagraph.models.tiny import ensure_builtin

    blip2 = Blip2ForConditionalGeneration.from_pretrained(ensure_builtin("tiny-blip2", out.parent))
    model.language_model.load_state_dict(blip2.language_model.state_dict())
    model.save_pretrained(out)
    InstructBlipProcessor(image_processor=_image_processor(), tokenizer=tokenizer,
                          qformer_tokenizer=qformer_tokenizer,
                          num_query_tokens=NUM_QUERY_TOKENS).save_pretrained(out)


def build_qformer_for_hidden(out: Path, hidden_size: int, seed: int = 6) -> None:
    """A BLIP-2 checkpoint whose projection feeds an LLM of `hidden_size` (its own LLM is a 1-layer stand-in)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    tokenizer = _opt_tokenizer(out)
    vision, qformer = _vision_and_qformer()
    text = {**_opt_text(len(tokenizer)), "hidden_size": hidden_size, "word_embed_proj_dim": hidden_size,
            "num_attention_heads": hidden_size // 64, "num_hidden_layers": 1}
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                         num_query_tokens=NUM_QUERY_TOKENS,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(config).save_pretrained(out)
    Blip2Processor(image_processor=_image_processor(), tokenizer=tokenizer,
                   num_query_tokens=NUM_QUERY_TOKENS).save_pretrained(out)


def extract_language_model(checkpoint: Path, out: Path) -> Path:
    """Write a BLIP-2/InstructBLIP checkpoint's LLM (and tokenizer) alone, to serve it with prompt embeddings."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    config = AutoConfig.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, config=config)
    language_model: Any = model.language_model  # the causal LM, lm_head included
    if not hasattr(language_model, "lm_head"):
        raise ValueError(f"{checkpoint}: its language model has no lm_head to save on its own")
    language_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    return out


def _extracted(name: str) -> Any:
    def build(out: Path) -> None:
        from vqagraph.models.tiny import ensure_builtin

        extract_language_model(ensure_builtin(name, out.parent), out)

    return build


BUILDERS = {
    "tiny-blip2": build_blip2,
    "tiny-instructblip": build_instructblip,
    "tiny-blip2-opt": _extracted("tiny-blip2"),  # also tiny-instructblip's LLM: they share it
    "tiny-qformer-576": lambda out: build_qformer_for_hidden(out, 576),
}
