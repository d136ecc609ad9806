"""Evaluation: VQA metric, dataset readers, the generated Shapes world."""
