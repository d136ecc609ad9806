"""Every prompt format vqagraph sends to a model, one named template each, with the paper it comes from.

The runtime (the text route's renderer, the settings' defaults) and every trainer of the lab read these constants;
nothing else spells a prompt out, so what a model is trained on and what it is asked cannot drift apart
(`tests/test_prompt_templates.py` pins each text and looks for copies). Placeholders are `str.format` fields.
A profile may still override the embedding routes' prompts: the settings only take their defaults from here.

A foundation module: it imports nothing from vqagraph, so `vqagraph.config` can use it for its defaults.
"""

from __future__ import annotations

# --- Img2LLM: the text route (Guo et al., From Images to Textual Prompts, CVPR 2023; docs/methods.md §1) ----------

# §1.6, the prompt's first line.
IMG2LLM_HEADER = "Please reason the answer of the questions according to the given contexts.\n"
# §1.6, the contexts line: `contexts` is the chosen captions, each ending with ".", joined by a space.
IMG2LLM_CONTEXTS = "Contexts:{contexts}"
# §1.6, one synthetic question-answer exemplar (an earlier turn of a conversation uses it too).
IMG2LLM_EXEMPLAR = "Question:{question}\nAnswer:{answer}\n"
# §1.6, the user's question, ending where the LLM's answer starts.
IMG2LLM_QUESTION = "Question:{question}\nAnswer:"
# §1.2, the BLIP captioner's decoder prompt (stripped from the captions it writes).
IMG2LLM_CAPTION_PROMPT = "a picture of "
# §1.5, the T5 question generator's input: two spaces before `context:`; `context` is the captions, capitalised,
# joined by ". " (the template's final "." closes the last one).
IMG2LLM_QG_INPUT = "answer: {answer}  context: {context}."

# --- BLIP-2 (Li et al., ICML 2023) and InstructBLIP (Dai et al., NeurIPS 2023): the Q-Former bridge, §2 ----------

# §2, BLIP-2's zero-shot VQA prompt with OPT: the text after the soft prompt (and BOS).
BLIP2_OPT_VQA = "Question: {question} Answer:"
# §2, BLIP-2's zero-shot VQA prompt with FlanT5.
BLIP2_FLANT5_VQA = "Question: {question} Short answer:"
# §2, an earlier turn of a conversation, as LAVIS concatenates them before the question.
BLIP2_HISTORY_TURN = "Question: {question} Answer: {answer}."
# §2, InstructBLIP: the instruction the Q-Former reads beside its queries (here, the question itself).
INSTRUCTBLIP_QFORMER_INSTRUCTION = "{question}"

# --- LLaVA (Liu et al., Visual Instruction Tuning, NeurIPS 2023; LLaVA-1.5, CVPR 2024): the projection bridge, §7 -

# §7, where the image's tokens go in a LLaVA prompt.
LLAVA_IMAGE_PLACEHOLDER = "<image>"
# §7, LLaVA-1.5's short-answer VQA prompt.
LLAVA15_SHORT_ANSWER = "USER: <image>\n{question}\nAnswer the question using a single word or phrase. ASSISTANT:"
# §7, an earlier turn of a conversation, before the prompt, in LLaVA's roles.
LLAVA_HISTORY_TURN = "USER: {question} ASSISTANT: {answer}"
# §7, the captions of LLaVA's first stage (only the projector learns, on image-caption pairs), asked in LLaVA-1.5's
# roles; LLaVA words its brief-description instructions in several ways, this wording is this project's.
LLAVA_BRIEF_CAPTION = "USER: <image>\nDescribe the picture briefly. ASSISTANT:"

__all__ = [
    "BLIP2_FLANT5_VQA",
    "BLIP2_HISTORY_TURN",
    "BLIP2_OPT_VQA",
    "IMG2LLM_CAPTION_PROMPT",
    "IMG2LLM_CONTEXTS",
    "IMG2LLM_EXEMPLAR",
    "IMG2LLM_HEADER",
    "IMG2LLM_QG_INPUT",
    "IMG2LLM_QUESTION",
    "INSTRUCTBLIP_QFORMER_INSTRUCTION",
    "LLAVA15_SHORT_ANSWER",
    "LLAVA_BRIEF_CAPTION",
    "LLAVA_HISTORY_TURN",
    "LLAVA_IMAGE_PLACEHOLDER",
]
