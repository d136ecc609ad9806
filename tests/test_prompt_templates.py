"""The prompt formats (vqagraph/prompt_templates.py): each one's exact text, read by the runtime and the lab alike.

A change to a template is a change to PINNED below, on purpose: what the models were trained on and what they are
asked is one text. The text route's whole prompt is pinned in tests/test_prompts.py (`test_worked_example`, and the
chat form), the question generator's input in tests/test_question_generator.py, the Q-Former route's with an
earlier turn in tests/test_conversation.py; they are not repeated here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from vqagraph import prompt_templates as T
from vqagraph.config import BridgeSettings, Img2LLMSettings, ProjectionSettings
from vqagraph.tools.bridge_prompt import bridge_text

ROOT = Path(__file__).resolve().parents[1]

PINNED = {
    "IMG2LLM_HEADER": "Please reason the answer of the questions according to the given contexts.\n",
    "IMG2LLM_CONTEXTS": "Contexts:{contexts}",
    "IMG2LLM_EXEMPLAR": "Question:{question}\nAnswer:{answer}\n",
    "IMG2LLM_QUESTION": "Question:{question}\nAnswer:",
    "IMG2LLM_CAPTION_PROMPT": "a picture of ",
    "IMG2LLM_QG_INPUT": "answer: {answer}  context: {context}.",
    "BLIP2_OPT_VQA": "Question: {question} Answer:",
    "BLIP2_FLANT5_VQA": "Question: {question} Short answer:",
    "BLIP2_HISTORY_TURN": "Question: {question} Answer: {answer}.",
    "INSTRUCTBLIP_QFORMER_INSTRUCTION": "{question}",
    "LLAVA_IMAGE_PLACEHOLDER": "<image>",
    "LLAVA15_SHORT_ANSWER": "USER: <image>\n{question}\nAnswer the question using a single word or phrase. ASSISTANT:",
    "LLAVA_HISTORY_TURN": "USER: {question} ASSISTANT: {answer}",
    "LLAVA_BRIEF_CAPTION": "USER: <image>\nDescribe the picture briefly. ASSISTANT:",
}

# Where a template's words may stand for something else: (file, template) → why.
NOT_COPIES = {
    ("vqagraph/world/captions.py", "IMG2LLM_CAPTION_PROMPT"):
        "one of the Shapes world's scene captions reads as a BLIP caption does (world data, not a prompt)",
}


def test_each_template_is_pinned() -> None:
    assert sorted(T.__all__) == sorted(PINNED)
    for name, text in PINNED.items():
        assert getattr(T, name) == text, name


def test_each_template_cites_its_paper() -> None:
    """Every template is under its paper's heading and has a comment naming the docs/methods.md section."""
    source = (ROOT / "vqagraph/prompt_templates.py").read_text()
    assert "Guo et al." in source and "Li et al." in source and "Dai et al." in source and "Liu et al." in source
    lines = source.splitlines()
    for name in PINNED:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name} = "))
        comment = lines[at - 1]
        while not comment.startswith("# §") and lines[at - 2].startswith("# "):
            at -= 1
            comment = lines[at - 1]
        assert re.match(r"# §\d", comment), name


def test_the_settings_defaults_are_the_templates() -> None:
    """A profile may override each one; the defaults are the templates."""
    assert Img2LLMSettings().caption_prompt == T.IMG2LLM_CAPTION_PROMPT
    bridge = BridgeSettings()
    assert bridge.prompt_template == T.BLIP2_OPT_VQA
    assert bridge.history_template == T.BLIP2_HISTORY_TURN
    assert bridge.instruction_template == T.INSTRUCTBLIP_QFORMER_INSTRUCTION
    projection = ProjectionSettings()
    assert projection.prompt_template == T.LLAVA15_SHORT_ANSWER
    assert projection.history_template == T.LLAVA_HISTORY_TURN
    assert projection.image_placeholder == T.LLAVA_IMAGE_PLACEHOLDER
    assert T.LLAVA_IMAGE_PLACEHOLDER in T.LLAVA15_SHORT_ANSWER and T.LLAVA_IMAGE_PLACEHOLDER in T.LLAVA_BRIEF_CAPTION
    assert BridgeSettings(prompt_template=T.BLIP2_FLANT5_VQA).prompt_template == T.BLIP2_FLANT5_VQA


def test_the_projection_route_text_with_an_earlier_turn() -> None:
    """What the projection route sends around the image, earlier turn first (docs/methods.md §7)."""
    settings = ProjectionSettings()
    text = bridge_text(settings.prompt_template, "What colour is it?", [(" Is it big? ", " yes ")],
                       settings.history_template)
    assert text == ("USER: Is it big? ASSISTANT: yes USER: <image>\nWhat colour is it?\n"
                    "Answer the question using a single word or phrase. ASSISTANT:")


def test_the_lab_trains_on_the_same_templates() -> None:
    from vqagraph_lab import projection
    from vqagraph_lab.qformer import instruct, stage2
    from vqagraph_lab.text_route import captioner, data

    assert projection.PROMPT is T.LLAVA15_SHORT_ANSWER
    assert projection.CAPTION_PROMPT is T.LLAVA_BRIEF_CAPTION
    assert stage2.PROMPT is T.BLIP2_OPT_VQA and instruct.PROMPT is T.BLIP2_OPT_VQA
    assert instruct.instructions([("What colour is it?", "red")]) == ["What colour is it?"]
    assert data.CAPTION_PROMPT is T.IMG2LLM_CAPTION_PROMPT and captioner.PROMPT is T.IMG2LLM_CAPTION_PROMPT


def _strings(path: Path) -> list[str]:
    """The string literals of a module, docstrings aside; an f-string both whole, each value as `{}`, and in its
    literal parts."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            found.append(n.value)
        elif isinstance(n, ast.JoinedStr):
            found.append("".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                                 for v in n.values))
    return found


def _copy_patterns(template: str) -> list[re.Pattern[str]]:
    """A literal copy of the template: its text with anything in the placeholders, and each of its fixed pieces of
    20 characters or more on its own. Templates with under 8 fixed characters ("{question}", "<image>") are too
    short to tell a copy from a coincidence: their pinned text above is their guard."""
    pieces = re.split(r"\{[a-z_]+\}", template)
    if len("".join(pieces).strip()) < 8:
        return []
    whole = re.compile(".*?".join(re.escape(p) for p in pieces))
    return [whole, *(re.compile(re.escape(p.strip())) for p in pieces if len(p.strip()) >= 20)]


def test_no_module_copies_a_template() -> None:
    """Only vqagraph/prompt_templates.py spells a prompt out: the runtime and the lab import it."""
    files = [p for top in ("vqagraph", "lab/vqagraph_lab") for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 50
    copies = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel == "vqagraph/prompt_templates.py":
            continue
        strings = _strings(path)
        for name in T.__all__:
            if (rel, name) in NOT_COPIES:
                continue
            for pattern in _copy_patterns(getattr(T, name)):
                copies += [(rel, name, s) for s in strings if pattern.search(s)]
    assert copies == []


def test_the_copy_check_finds_copies() -> None:
    """What the check above catches (each was in the code before the templates), and what it lets be."""
    found = [p for name in T.__all__ for p in _copy_patterns(getattr(T, name))]
    copies = (
        "Question: What is it? Answer: a cat.",
        "Question:{}\nAnswer:{}\n",
        "answer: {}  context: {}.",
        "answer: yes  context: A red circle.",
        "Please reason the answer of the questions according to the given contexts.",
        "Contexts:",
        "USER: <image>\nHow many? Answer the question using a single word or phrase. ASSISTANT:",
    )
    for copy in copies:
        assert any(p.search(copy) for p in found), copy
    assert not any(p.search("Question: {question}\n{facts}\nAnswer the question in one short sentence:")
                   for p in found)
