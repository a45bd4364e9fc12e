"""Neighbour lists (vesin-backed) for one or many structures, and the batched graph."""

from ase_mlp.neighbors.graph import Graph, graph_from_neighbors


__all__ = ["Graph", "graph_from_neighbors"]
