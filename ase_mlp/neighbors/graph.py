"""The batched graph every ase_mlp model consumes.

A :class:`Graph` holds one or many structures concatenated: atoms of every
system back to back, edges ``(i, j)`` in global atom indices with their
integer cell shifts, and ``system`` telling which structure each atom belongs
to. The edge vector is ``r_ij = x_j - x_i + shift_ij @ cell[system[i]]``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class Graph:
    """Batched atomic graph (torch tensors on one device and dtype).

    Attributes
    ----------
    positions : (n_atoms, 3) float tensor, Å.
    cells : (n_systems, 3, 3) float tensor, Å, lattice vectors as rows (ASE).
    species : (n_atoms,) long tensor, index into the model's element list.
    system : (n_atoms,) long tensor, the structure each atom belongs to.
    edge_index : (2, n_edges) long tensor, rows ``i`` (centre) and ``j`` (neighbour).
    shifts : (n_edges, 3) float tensor of integer cell shifts.
    n_systems : number of structures.
    pbc : (n_systems, 3) bool tensor, or None (unknown: a 3D cell counts as periodic).
    """

    positions: torch.Tensor
    cells: torch.Tensor
    species: torch.Tensor
    system: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    n_systems: int
    pbc: torch.Tensor | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def edge_vectors(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``r_ij = x_j - x_i + S_ij @ cell`` for every edge, (n_edges, 3)."""
        pos = self.positions if positions is None else positions
        i, j = self.edge_index
        if self.n_edges == 0:
            return pos.new_zeros((0, 3))
        if _compiled_vectors(pos, self):
            from ase_mlp.kernels import sna

            return sna.edge_vectors(self, pos)
        if self.n_systems == 1:  # no per-edge copy of the cell (9 floats per edge)
            offset = self.shifts @ self.cells[0]
        else:
            cell_of_edge = self.cells[self.system[i]]
            offset = torch.bmm(self.shifts.unsqueeze(1), cell_of_edge).squeeze(1)
        return pos[j] - pos[i] + offset

    def to(self, device=None, dtype=None) -> "Graph":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                if v.is_floating_point():
                    v = v.to(device=device, dtype=dtype)
                else:
                    v = v.to(device=device)
            out[f.name] = v
        return Graph(**out)


def _compiled_vectors(pos: torch.Tensor, graph: Graph) -> bool:
    """CPU, no autograd through the positions or the cell, compiled kernels usable."""
    from ase_mlp.kernels import cpu_loop_usable

    return cpu_loop_usable([pos, graph.cells, graph.shifts], [graph.edge_index, graph.system])


def graph_from_neighbors(
    positions: np.ndarray,
    cells: np.ndarray,
    species: np.ndarray,
    system: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    shifts: np.ndarray,
    *,
    dtype: torch.dtype = torch.float64,
    device=None,
    pbc=None,
) -> Graph:
    """Assemble a :class:`Graph` from numpy arrays (global atom indices)."""
    n_systems = int(cells.shape[0])
    return Graph(
        positions=torch.as_tensor(np.ascontiguousarray(positions), dtype=dtype, device=device),
        cells=torch.as_tensor(np.ascontiguousarray(cells), dtype=dtype, device=device),
        species=torch.as_tensor(np.asarray(species, dtype=np.int64), device=device),
        system=torch.as_tensor(np.asarray(system, dtype=np.int64), device=device),
        edge_index=torch.as_tensor(
            np.stack([np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)]),
            device=device,
        ),
        shifts=torch.as_tensor(np.asarray(shifts, dtype=np.float64), dtype=dtype, device=device),
        n_systems=n_systems,
        pbc=None if pbc is None else torch.as_tensor(
            np.asarray(pbc, dtype=bool).reshape(n_systems, 3), device=device),
    )


def edges_within(graph: Graph, vectors: torch.Tensor, cutoffs: torch.Tensor):
    """Select the edges shorter than the per-species-pair ``cutoffs`` matrix.

    Returns ``(index, r)`` where ``index`` are the selected edge ids and ``r``
    their lengths. Mirrors LAMMPS: ``r^2 < rc^2`` and ``r^2 > 1e-20``.
    """
    i, j = graph.edge_index
    rc = cutoffs[graph.species[i], graph.species[j]]
    rsq = (vectors * vectors).sum(dim=1)
    mask = (rsq < rc * rc) & (rsq > 1e-20)
    index = torch.nonzero(mask, as_tuple=False).squeeze(1)
    return index, rsq[index].sqrt()


def short_edges(graph: Graph, threshold: float, vectors: torch.Tensor | None = None):
    """Edges shorter than ``threshold`` (Å), to catch overlapping atoms cheaply.

    One vectorised pass over the edge vectors (computed unless given) and one
    host sync. Returns ``(edges, lengths)``: numpy arrays of the ids of the short
    edges and their lengths, both empty when there are none (the usual case).
    """
    empty = np.zeros(0, dtype=np.int64), np.zeros(0)
    if graph.n_edges == 0 or not threshold > 0.0:
        return empty
    t2 = float(threshold) ** 2
    with torch.no_grad():
        v = graph.edge_vectors() if vectors is None else vectors.detach()
        if v.device.type == "cpu":  # numpy's einsum: one pass, no threads started
            vn = v.numpy()
            rsq = np.einsum("ij,ij->i", vn, vn)
            if not rsq.min() < t2:
                return empty
            edges = np.flatnonzero(rsq < t2)
            return edges.astype(np.int64), np.sqrt(rsq[edges].astype(np.float64))
        rsq = torch.einsum("ij,ij->i", v, v)
        mask = rsq < t2
        if not bool(mask.any()):
            return empty
        edges = torch.nonzero(mask, as_tuple=False).squeeze(1)
        lengths = rsq[edges].sqrt()
    return edges.cpu().numpy(), lengths.double().cpu().numpy()
