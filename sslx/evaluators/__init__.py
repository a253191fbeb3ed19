"""Evaluators: embeddings of a split, weighted k-NN, export to numpy."""
