"""Neighbour lists (vesin-backed) for one or many structures, and the batched graph."""

from ase_mlp.neighbors.device import device_batch_neighbors, have_device_neighbors
from ase_mlp.neighbors.graph import Graph, edges_within, graph_from_neighbors
from ase_mlp.neighbors.lists import (
    MAX_PERIODIC_IMAGES,
    BatchNeighbors,
    batch_neighbor_list,
    check_cell,
    neighbor_list,
)
from ase_mlp.neighbors.verlet import VerletNeighborList


__all__ = ["Graph", "graph_from_neighbors", "edges_within", "neighbor_list",
           "batch_neighbor_list", "BatchNeighbors", "VerletNeighborList",
           "device_batch_neighbors", "have_device_neighbors", "check_cell",
           "MAX_PERIODIC_IMAGES"]
