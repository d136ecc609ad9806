"""Tool nodes: plain Python with typed inputs and outputs; nothing here imports LangGraph."""
