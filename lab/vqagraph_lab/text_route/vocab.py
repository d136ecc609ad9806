"""Word-level tokenizers for the Shapes-world models, built from the world's own texts.

BLIP's text side needs a BERT tokenizer (`[CLS]`/`[SEP]`/`[PAD]`, `[DEC]` as bos for the captioner, `[ENC]`);
T5 needs `<pad>`/`</s>`/`<unk>` with `</s>` appended. Both are WordPiece over whole words (every word of the
training texts is one token) with single characters and `##` continuations as a fallback, so a word never
seen in training (a knowledge question's) still tokenizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from vqagraph.models.tiny import WORDS as TINY_WORDS
from vqagraph.models.tiny import write_bert_tokenizer

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
T5_SPECIALS = ["<pad>", "</s>", "<unk>"]

# Common English question and caption words beyond the world's own, so questions outside the world's
# templates tokenize into words rather than characters.
COMMON_WORDS = (
    "is are was were what which who whom whose where when why how many much does do did can could would should "
    "will there here this that these those it its they them their a an the of in on at to from with by for and "
    "or but not no yes any some all both each every other another than more most less least same different "
    "colour color colours colors shape shapes object objects thing things item items picture image photo "
    "left right top bottom middle center centre upper lower above below near next beside between behind front "
    "inside outside corner side edge biggest smallest largest larger smaller bigger size number count total "
    "one two three four five six seven eight nine ten zero first second third last only also very just "
    "usually often typically usual common known called name named kind type made like look looks looking "
    "sky grass sun snow blood fire water leaf night day sea tree banana tomato lemon orange apple coal milk "
    "answer context question"
).split()


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.BertPreTokenizer()  # whitespace, then every punctuation mark on its own


def corpus_words(texts: Iterable[str], lower: bool) -> list[str]:
    """Every word (and punctuation mark) of `texts` as the BERT pre-tokenizer splits them, sorted."""
    pre = _pre_tokenizer()
    words: set[str] = set()
    for text in texts:
        text = text.lower() if lower else text
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    return sorted(words)


def _vocab(specials: list[str], words: Iterable[str]) -> list[str]:
    chars = [chr(c) for c in range(33, 127)]
    vocab = [*specials, *chars, *("##" + c for c in chars if c.isalnum())]
    seen = set(vocab)
    for word in sorted(set(words)):
        if word and word not in seen and len(word) <= 100:
            vocab.append(word)
            seen.add(word)
    return vocab


def save_bert_tokenizer(texts: Iterable[str], out: Path) -> dict[str, int]:
    """A lower-casing `BertTokenizerFast` over the texts' words; returns the ids BLIP's text config needs."""
    words = corpus_words(texts, lower=True) + [w.lower() for w in (*TINY_WORDS, *COMMON_WORDS)]
    return write_bert_tokenizer(_vocab(BERT_SPECIALS, words), out, max_length=128)


def save_t5_tokenizer(texts: Iterable[str], out: Path) -> dict[str, int]:
    """A case-keeping WordPiece tokenizer in T5's conventions (`</s>` appended, `<pad>` = 0, `</s>` = 1)."""
    from transformers import PreTrainedTokenizerFast

    words = [*corpus_words(texts, lower=False), *TINY_WORDS, *COMMON_WORDS, *(w.capitalize() for w in COMMON_WORDS)]
    vocab = _vocab(T5_SPECIALS, words)
    raw = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="<unk>",
                                     max_input_chars_per_word=100))
    raw.normalizer = normalizers.NFKC()
    raw.pre_tokenizer = _pre_tokenizer()
    raw.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    raw.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", vocab.index("</s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        model_max_length=512)
    tokenizer.save_pretrained(out)
    return {"vocab_size": len(vocab), "pad_token_id": vocab.index("<pad>"), "eos_token_id": vocab.index("</s>")}
