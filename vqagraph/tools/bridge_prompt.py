"""The embedding routes' LLM input (BLIP-2, docs/methods.md §2): `[soft prompt ; embed(BOS + "Question: q Answer:")]`.

The queries go before BOS, as BLIP-2 was trained; the text embeddings come from the served LLM's own
input-embedding table, so the same tensor works for the transformers backend and vLLM's `prompt_embeds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vqagraph.errors import ModelMismatchError
from vqagraph.prompt_templates import BLIP2_HISTORY_TURN, LLAVA_IMAGE_PLACEHOLDER


def bridge_text(
    template: str,
    question: str,
    history: Sequence[tuple[str, str]] = (),
    history_template: str = BLIP2_HISTORY_TURN,
) -> str:
    """The text after the soft prompt, e.g. `Question: What colour is it? Answer:`; earlier turns first."""
    turns = [history_template.format(question=q.strip(), answer=a.strip()) for q, a in history]
    return " ".join([*turns, template.format(question=question)])


def bridge_token_ids(tokenizer: Any, text: str, add_bos: bool = True) -> list[int]:
    """Token ids of `text`, starting with BOS when the tokenizer has one and `add_bos` (whether or not the
    tokenizer itself prepends it); without `add_bos`, a BOS the tokenizer adds is removed."""
    ids: list[int] = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is None:
        return ids
    if add_bos and (not ids or ids[0] != bos):
        return [bos, *ids]
    if not add_bos and ids and ids[0] == bos:
        return ids[1:]
    return ids


def check_soft_prompt_size(soft_prompt: torch.Tensor, hidden_size: int, checkpoint: str, llm: str) -> None:
    """The projection must produce vectors of the LLM's width; say which two models disagree, before sending."""
    if soft_prompt.ndim != 2 or soft_prompt.shape[1] != hidden_size:
        raise ModelMismatchError(
            f"the bridge checkpoint {checkpoint!r} projects to {soft_prompt.shape[-1]} dimensions but the LLM "
            f"{llm!r} has hidden size {hidden_size}: use the bridge (BLIP-2, LLaVA) checkpoint trained for this LLM"
        )


def bridge_embeddings(soft_prompt: torch.Tensor, token_ids: list[int], table: torch.Tensor) -> torch.Tensor:
    """`(num_query_tokens + len(token_ids), hidden)`: the queries, then the text tokens' embeddings."""
    ids = torch.tensor(token_ids, dtype=torch.long, device=table.device)
    text = table[ids]
    return torch.cat([soft_prompt.to(device=table.device, dtype=table.dtype), text], dim=0)


def image_token_id(tokenizer: Any, token: str) -> int | None:
    """The token's id when the tokenizer has it, else None. Not `token in get_vocab()`: that builds the whole
    vocabulary as a dict (17 ms for SmolLM2's 49k), twice per projection-route question."""
    found = tokenizer.convert_tokens_to_ids(token)
    if found is None or (found == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return int(found)


def split_at_image(tokenizer: Any, text: str, placeholder: str = LLAVA_IMAGE_PLACEHOLDER, add_bos: bool = True,
                   ) -> tuple[list[int], list[int]]:
    """Token ids before and after the image placeholder of a LLaVA prompt (docs/methods.md §7): the image tokens go
    there. A tokenizer that knows the placeholder (a LLaVA checkpoint's) splits its own ids of the whole prompt, as
    LLaVA's processor does; others tokenize the two sides apart. No placeholder: the image goes first."""
    if placeholder not in text:
        return [], bridge_token_ids(tokenizer, text, add_bos)
    image_id = image_token_id(tokenizer, placeholder)
    if image_id is not None:
        ids = bridge_token_ids(tokenizer, text, add_bos)
        k = ids.index(image_id)
        return ids[:k], ids[k + 1 :]
    before, after = text.split(placeholder, 1)
    head = bridge_token_ids(tokenizer, before, add_bos) if before or add_bos else []
    return head, list(tokenizer(after, add_special_tokens=False)["input_ids"])


def placed_embeddings(soft_prompt: torch.Tensor, before: list[int], after: list[int],
                      table: torch.Tensor) -> torch.Tensor:
    """`(len(before) + image tokens + len(after), hidden)`: text, the image where the prompt put it, text."""
    ids = torch.tensor(before, dtype=torch.long, device=table.device)
    rest = torch.tensor(after, dtype=torch.long, device=table.device)
    return torch.cat([table[ids], soft_prompt.to(device=table.device, dtype=table.dtype), table[rest]], dim=0)
