"""Tiny models built from configs (seeded), so the whole engine runs offline with no downloaded weights.

They are real transformers classes (BLIP ITM, BLIP captioner, T5, Llama) with small, untrained weights and
tokenizers trained here on a fixed word list: they exercise every code path, and their answers mean nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from vqagraph.prompt_templates import BLIP2_HISTORY_TURN, IMG2LLM_CAPTION_PROMPT, IMG2LLM_CONTEXTS, IMG2LLM_HEADER

VERSION = 3  # bump when a builder changes, so caches of older builds are not reused

WORDS = (
    "a an the this that these those is are was were be being been has have had do does did of in on at to "
    "from with without by for and or but not no yes there here what which who whose where when why how many "
    "much picture image photo scene item object thing things one two three four five six seven eight nine "
    "ten zero red green blue yellow orange purple pink brown black white gray grey gold circle ellipse square "
    "rectangle triangle star pentagon hexagon shape shapes small large big tiny medium left right top bottom "
    "middle center above below next beside near far corner side sides background color colour dog cat man "
    "woman person people car bus train plane table chair cup plate food pizza apple banana fruit tree sky "
    "grass water street road building room wall window door bed sitting standing holding riding eating "
    "playing walking looking lying parked flying white-and-black answer context question item action done "
    "describe same different more less than bigger smaller"
).split()


def _corpus() -> list[str]:
    """Deterministic sentences over WORDS: enough for BPE merges that cover every word, and the prompts' words."""
    sentences = [" ".join(WORDS[i : i + 8]) for i in range(0, len(WORDS), 4)]
    sentences += [f"{IMG2LLM_CAPTION_PROMPT}a {c} {s}" for c in WORDS[60:78] for s in WORDS[78:88]]
    sentences += [IMG2LLM_HEADER.strip(), IMG2LLM_CONTEXTS.format(contexts="")]
    sentences += [BLIP2_HISTORY_TURN.format(question="What is it?", answer="a cat"),
                  "How to describe one item in this picture?"]
    return sentences


def _bpe_tokenizer(specials: list[str], vocab_size: int) -> Tokenizer:
    # Metaspace, not byte-level: every token decodes to readable text, even from an untrained model.
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first")
    alphabet = [chr(c) for c in range(32, 127)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _bert_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
    chars = [chr(c) for c in range(33, 127)]
    pieces = sorted({w.lower() for w in WORDS})
    return specials + chars + ["##" + c for c in chars if c.isalnum()] + [w for w in pieces if len(w) > 1]


def _save_bert_tokenizer(out: Path) -> dict[str, int]:
    return write_bert_tokenizer(_bert_vocab(), out)


def write_bert_tokenizer(vocab: list[str], out: Path, max_length: int | None = None) -> dict[str, int]:
    """A lower-casing `BertTokenizerFast` over `vocab` with BLIP's `[DEC]`/`[ENC]`; returns the ids BLIP's text
    config needs (the tiny profile's and the Shapes world's tokenizers are both made here)."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, bos_token="[DEC]")
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if max_length is not None:
        tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out)
    return {
        "vocab_size": len(vocab),
        "pad_token_id": vocab.index("[PAD]"),
        "bos_token_id": vocab.index("[DEC]"),
        "sep_token_id": vocab.index("[SEP]"),
        "eos_token_id": vocab.index("[SEP]"),
    }


def _blip_config(ids: dict[str, int]):  # type: ignore[no-untyped-def]
    from transformers import BlipConfig

    # 96 px / 8 px patches = a 12x12 grid of 144 patches: room for K'=20 samples.
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 96, "patch_size": 8}
    # Three text layers: GradCAM reads layer 1; the last layer's tokens never reach the ITM head.
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
            "encoder_hidden_size": 32, "max_position_embeddings": 64, **ids}
    return BlipConfig(vision_config=vision, text_config=text, projection_dim=32, image_text_hidden_size=32)


def _save_blip_image_processor(out: Path) -> None:
    from transformers import BlipImageProcessorPil

    BlipImageProcessorPil(size={"height": 96, "width": 96}).save_pretrained(out)


def build_blip_itm(out: Path, seed: int = 0) -> None:
    from transformers import BlipForImageTextRetrieval

    ids = _save_bert_tokenizer(out)
    _save_blip_image_processor(out)
    torch.manual_seed(seed)
    BlipForImageTextRetrieval(_blip_config(ids)).save_pretrained(out)


def build_blip_captioner(out: Path, seed: int = 1) -> None:
    from transformers import BlipForConditionalGeneration

    ids = _save_bert_tokenizer(out)
    _save_blip_image_processor(out)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(_blip_config(ids)).save_pretrained(out)


def build_t5(out: Path, seed: int = 2) -> None:
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    raw = _bpe_tokenizer(["<pad>", "</s>", "<unk>"], vocab_size=700)
    raw.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      pad_token_id=0, eos_token_id=1)
    config.decoder_start_token_id = 0  # T5 starts decoding from <pad>
    T5ForConditionalGeneration(config).save_pretrained(out)


def build_llama(out: Path, seed: int = 3) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = _bpe_tokenizer(["<s>", "</s>", "<pad>", "<unk>"], vocab_size=700)
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    # Head size 64 (64 / 1 head): a size vLLM's CPU attention accepts, so the same model can be served.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=1024,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-blip-itm": build_blip_itm,
    "tiny-blip-captioner": build_blip_captioner,
    "tiny-t5": build_t5,
    "tiny-llama": build_llama,
}


def _deferred(module: str, name: str) -> Callable[[Path], None]:
    """Defer to `tiny_blip2` or `tiny_llava` (which import this module's tokenizer helpers) until the model is
    built."""

    def build(out: Path) -> None:
        import importlib

        importlib.import_module(f"vqagraph.models.{module}").BUILDERS[name](out)

    return build


BUILDERS.update({name: _deferred("tiny_blip2", name) for name in
                 ("tiny-blip2", "tiny-instructblip", "tiny-blip2-opt", "tiny-qformer-576")})
BUILDERS.update({name: _deferred("tiny_llava", name) for name in ("tiny-llava", "tiny-llava-llm")})


def ensure_builtin(name: str, root: Path) -> Path:
    """Build `name` into `root/name` once (atomically, so concurrent processes never see half a model)."""
    if name not in BUILDERS:
        raise KeyError(name)
    target = root / name
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    BUILDERS[name](staging)
    try:
        staging.rename(target)
    except OSError:  # another process won the race; its copy is identical (seeded)
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target
