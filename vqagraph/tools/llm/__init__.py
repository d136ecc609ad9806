"""The frozen LLM boundary: one interface, several backends."""

from vqagraph.tools.llm.base import FrozenLLM, Generation, GenerationParams
from vqagraph.tools.llm.postprocess import postprocess_answer

__all__ = ["FrozenLLM", "Generation", "GenerationParams", "postprocess_answer"]
