"""Neighbour lists on the device (vesin-torch; checked on the CPU device) against the host
lists, and ``MLPCalculator.calculate_batch`` with them."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from ase_mlp.neighbors import batch_neighbor_list, device_batch_neighbors
from ase_mlp.neighbors.device import choose_neighbors


pytest.importorskip("vesin_torch", exc_type=ImportError)


def _systems():
    a = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    a.rattle(0.1, seed=1)
    b = bulk("Ta", "bcc", a=3.31).repeat((3, 2, 4))              # triclinic
    b.rattle(0.05, seed=2)
    b.positions += 7.0                                            # outside the cell
    c = bulk("Ta", "bcc", a=3.3)                                  # 1 atom, cell < cutoff
    return [a, b, c]


def _pairs(i, j, S):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(S).astype(int).tolist()),
                      strict=True))


def test_device_lists_equal_host_lists():
    systems = _systems()
    cutoff = 4.9
    host = batch_neighbor_list(systems, cutoff)
    pos = torch.as_tensor(np.concatenate([a.positions for a in systems]))
    cells = torch.as_tensor(np.stack([a.cell.array for a in systems]))
    edge_index, shifts = device_batch_neighbors(pos, cells, [len(a) for a in systems], cutoff)
    assert edge_index.dtype == torch.int64 and shifts.dtype == pos.dtype
    assert _pairs(edge_index[0], edge_index[1], shifts) == _pairs(host.i, host.j, host.shifts)
    with pytest.raises(ValueError, match="do not match"):
        device_batch_neighbors(pos, cells, [1, 2], cutoff)


def test_calculate_batch_on_device_lists_equals_host(ta06a_path):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps import read_lammps_potential

    model = read_lammps_potential(ta06a_path)
    systems = _systems()
    host = MLPCalculator(model, device="cpu", neighbors="host").calculate_batch(systems)
    dev = MLPCalculator(model, device="cpu", neighbors="device").calculate_batch(systems)
    for h, d in zip(host, dev, strict=True):
        assert d["energy"] == pytest.approx(h["energy"], rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(d["forces"], h["forces"], rtol=0, atol=1e-11)
        np.testing.assert_allclose(d["stress"], h["stress"], rtol=0, atol=1e-13)
    slab = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="fully periodic"):
        MLPCalculator(model, device="cpu", neighbors="device").calculate_batch([slab])


def test_choose_neighbors():
    assert choose_neighbors("auto", True, "cpu") == "host"
    assert choose_neighbors("host", False, "cpu") == "host"
    assert choose_neighbors("device", True, "cpu") == "device"
    with pytest.raises(ValueError, match="neighbors must be"):
        choose_neighbors("gpu", True, "cpu")
