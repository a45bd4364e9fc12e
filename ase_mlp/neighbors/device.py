"""Neighbour lists on the model's device (GPU or CPU) with vesin-torch: no host copies.

:func:`device_batch_neighbors` builds the full lists of several periodic systems from torch
tensors and returns torch tensors on the same device, with global atom indices, ready for
:class:`ase_mlp.neighbors.Graph`. It needs ``pip install vesin-torch`` and fully periodic
cells (open and mixed boundaries go through :func:`ase_mlp.neighbors.batch_neighbor_list`
on the host, which also works around vesin's issues with large open extents). The lists
hold every pair closer than ``cutoff`` (one radius for all species pairs); models select
the edges within their own per-pair cutoffs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch


__all__ = ["choose_neighbors", "device_batch_neighbors", "have_device_neighbors"]


@functools.cache
def have_device_neighbors() -> bool:
    """Whether vesin-torch is installed (looked up once per process)."""
    try:
        import vesin_torch  # noqa: F401
    except ImportError:
        return False
    return True


def device_batch_neighbors(positions: torch.Tensor, cells: torch.Tensor,
                           sizes: Sequence[int], cutoff: float):
    """Full neighbour lists of periodic systems, computed where the tensors live.

    Parameters
    ----------
    positions : torch.Tensor (n_atoms, 3)
        Concatenated positions of all systems (Å), any float dtype, any device.
    cells : torch.Tensor (n_systems, 3, 3)
        Lattice vectors as rows (Å).
    sizes : sequence of int
        Atoms per system, in order.
    cutoff : float
        Radius (Å).

    Returns
    -------
    edge_index : torch.LongTensor (2, n_edges)
        Global ``i`` (centre) and ``j`` (neighbour).
    shifts : torch.Tensor (n_edges, 3)
        Integer cell shifts (dtype of ``positions``): ``r_ij = x_j - x_i + S @ cell``.
    """
    try:
        from vesin_torch import NeighborList
    except ImportError as err:
        raise ImportError("neighbour lists on the device need vesin-torch: pip install "
                          "vesin-torch") from err
    if cells.shape[0] != len(sizes) or positions.shape[0] != sum(sizes):
        raise ValueError(f"{len(sizes)} systems with {sum(sizes)} atoms do not match "
                         f"{cells.shape[0]} cells and {positions.shape[0]} positions")
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    ii, jj, ss = [], [], []
    start = 0
    for k, n in enumerate(sizes):
        if n == 0:
            continue
        i, j, S = nl.compute(positions[start:start + n], cells[k], True, quantities="ijS")
        ii.append(i.to(torch.int64) + start)
        jj.append(j.to(torch.int64) + start)
        ss.append(S.to(positions.dtype))
        start += n
    if not ii:
        return (torch.zeros((2, 0), dtype=torch.int64, device=positions.device),
                positions.new_zeros((0, 3)))
    return torch.stack([torch.cat(ii), torch.cat(jj)]), torch.cat(ss)


def choose_neighbors(neighbors: str, periodic: bool, device) -> str:
    """Where to build lists: ``"auto"`` gives ``"device"`` on a CUDA device with vesin-torch
    and periodic cells, else ``"host"``; an explicit ``"device"`` is checked to be possible."""
    if neighbors not in ("auto", "host", "device"):
        raise ValueError(f"neighbors must be 'auto', 'host' or 'device', got {neighbors!r}")
    if neighbors == "host":
        return neighbors
    have = have_device_neighbors()
    if neighbors == "auto":
        return "device" if have and periodic and torch.device(device).type == "cuda" \
            else "host"
    if neighbors == "device":
        if not have:
            raise ImportError("neighbors='device' needs vesin-torch: pip install vesin-torch "
                              "(or use neighbors='host')")
        if not periodic:
            raise ValueError("neighbors='device' needs fully periodic cells; use "
                             "neighbors='host' for open or mixed boundaries")
    return neighbors
