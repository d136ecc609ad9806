"""LangGraph: the state schema, thin node adapters over the tools, the routes (one unit each, registered in
`graphs/registry.py`) and the main VQA graph."""

from vqagraph.graphs.registry import ROUTES, register
from vqagraph.graphs.routes import Route
from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.graphs.vqa import build_graph

__all__ = ["ROUTES", "Route", "VQAContext", "VQAState", "build_graph", "register"]
