"""LangGraph: the state schema, thin node adapters over the tools, the routes and the main VQA graph."""

from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.graphs.text_route import build_text_route
from vqagraph.graphs.vqa import build_graph

__all__ = ["VQAContext", "VQAState", "build_graph", "build_text_route"]
