"""Periodic cells absurdly small for the cutoff are refused before the search (issue 18):
a 1e-5 Å lattice vector used to take 20-90 s and ~1e7 periodic images."""

import time

import numpy as np
import pytest

from ase_mlp.neighbors import VerletNeighborList, batch_neighbor_list, neighbor_list


TINY = np.diag([3.3, 3.3, 1e-5])


@pytest.mark.parametrize("n_atoms", [1, 200])  # compiled small search / vesin
def test_tiny_vector_is_refused_fast(n_atoms):
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 3.3, size=(n_atoms, 3)) * [1, 1, 0]
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"periodic cell vector 2 \[0.0, 0.0, 1e-05\] \(length "
                       r"1e-05 Å, lattice planes 1e-05 Å apart\) is far too short for the cutoff "
                       r"4.8 Å: the neighbour search would need 2.4e\+07 periodic images"):
        neighbor_list(pos, TINY, True, 4.8)
    assert time.perf_counter() - start < 5.0


def test_every_entry_point_is_guarded():
    from ase_mlp.neighbors import check_cell

    pos = np.zeros((1, 3))
    with pytest.raises(ValueError, match="system 1: periodic cell vector 2"):
        batch_neighbor_list([(pos, np.eye(3) * 3, True), (pos, TINY, True)], 4.8)
    with pytest.raises(ValueError, match="periodic cell vector 2"):
        VerletNeighborList(4.0, skin=0.8).update(pos, TINY, True)
    with pytest.raises(ValueError, match="periodic cell vector 2"):
        check_cell(TINY, True, 4.8)
    # along an open direction the row does not matter
    check_cell(TINY, [True, True, False], 4.8)
    assert len(neighbor_list(pos, TINY, [True, True, False], 4.8)[0]) == 8  # 3.3 Å in-plane


def test_sheared_cell_with_long_rows_is_refused():
    """Every row long, but lattice planes 3e-7 Å apart: named by the plane spacing."""
    cell = [[3.0, 0, 0], [0, 3.0, 0], [1e3, 0, 1e-4]]
    with pytest.raises(ValueError, match=r"lattice planes 3e-07 Å apart"):
        neighbor_list(np.zeros((1, 3)), cell, True, 5.0)


def test_ordinary_small_cells_pass():
    """A one-atom bcc cell with a large cutoff stays well inside the limit."""
    from ase_mlp.neighbors import MAX_PERIODIC_IMAGES, check_cell

    cell = 1.65 * (np.ones((3, 3)) - 2 * np.eye(3))  # bcc primitive, a = 3.3
    check_cell(cell, True, 60.0)
    i, _, _ = neighbor_list(np.zeros((1, 3)), cell, True, 12.0)
    assert len(i) > 300
    assert MAX_PERIODIC_IMAGES == 10**6
