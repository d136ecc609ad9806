"""vqagraph: frozen LLMs answer questions about images, through a LangGraph graph of vision tool nodes."""

from vqagraph.answer import Answer, Trace
from vqagraph.config import Img2LLMSettings, ModelRef, Profile, load_profile
from vqagraph.engine import Engine
from vqagraph.errors import (
    ImageError,
    ImageTooLargeError,
    LLMError,
    MarkError,
    ModelMismatchError,
    ModelNotAvailableError,
    ProfileError,
    QuestionError,
    VQAGraphError,
)
from vqagraph.graphs import build_graph
from vqagraph.media import ImageRef, image_ref, load_image
from vqagraph.tools.visual_prompt import Mark, render_marks

__all__ = [
    "Answer",
    "Engine",
    "ImageError",
    "ImageRef",
    "ImageTooLargeError",
    "Img2LLMSettings",
    "LLMError",
    "Mark",
    "MarkError",
    "ModelMismatchError",
    "ModelNotAvailableError",
    "ModelRef",
    "Profile",
    "ProfileError",
    "QuestionError",
    "Trace",
    "VQAGraphError",
    "build_graph",
    "image_ref",
    "load_image",
    "load_profile",
    "render_marks",
]
