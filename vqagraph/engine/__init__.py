"""The engine layer: `Engine` (a profile's tools and the compiled VQA graph behind one `ask`), the conversation
threads it opens (`conversation.py`) and the store that keeps them (`threads.py`)."""

from vqagraph.engine.core import Engine
from vqagraph.request import validate_marks, validate_question

__all__ = ["Engine", "validate_marks", "validate_question"]
