"""``VerletNeighborList``: exact equality with ``neighbor_list`` between rebuilds."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ase_mlp.neighbors import VerletNeighborList, neighbor_list


SHEARED = np.array([[7.0, 0.0, 0.0], [5.0, 6.5, 0.0], [-3.0, 2.0, 7.5]])


def system(name):
    """(atoms, cutoff) for the random walks."""
    rng = np.random.default_rng(0)
    if name == "bcc-periodic":
        atoms = bulk("Ta", "bcc", a=3.306, cubic=True).repeat((3, 3, 3))
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        return atoms, 5.0
    if name == "triclinic-periodic":
        frac = rng.uniform(0.0, 1.0, (40, 3))
        return Atoms(positions=frac @ SHEARED, cell=SHEARED, pbc=True), 4.0
    if name == "slab-xy":
        cell = SHEARED.copy()
        cell[2] = 0.0
        positions = rng.uniform(0.0, 1.0, (30, 3)) @ SHEARED
        positions[:, 2] = rng.uniform(0.0, 8.0, 30)
        return Atoms(positions=positions, cell=cell, pbc=[True, True, False]), 4.0
    if name == "open-cluster":
        return Atoms(positions=rng.uniform(0.0, 8.0, (30, 3))), 3.5
    raise KeyError(name)


def assert_same(got, ref):
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype == np.int64


@pytest.mark.parametrize("name", ["bcc-periodic", "triclinic-periodic", "slab-xy", "open-cluster"])
def test_random_walk_matches_neighbor_list(name):
    atoms, cutoff = system(name)
    rng = np.random.default_rng(1)
    nl = VerletNeighborList(cutoff, skin=0.6)
    n_steps = 60
    for _ in range(n_steps):
        atoms.positions += rng.normal(0.0, 0.015, atoms.positions.shape)
        atoms.wrap()  # atoms jump by lattice vectors between builds
        pos, cell = atoms.positions, atoms.cell.array
        nl.update(pos, cell, atoms.pbc)
        assert_same(nl.get(pos, cell), neighbor_list(pos, cell, atoms.pbc, cutoff))
    assert 1 <= nl.n_builds <= n_steps // 5


def test_random_walk_with_pair_cutoffs():
    atoms, _ = system("triclinic-periodic")
    rng = np.random.default_rng(2)
    species = rng.integers(0, 2, len(atoms))
    pair_cutoffs = 1.1 * (np.array([1.5, 2.0])[:, None] + np.array([1.5, 2.0])[None, :])
    nl = VerletNeighborList(None, skin=0.5, pair_cutoffs=pair_cutoffs)
    for _ in range(30):
        atoms.positions += rng.normal(0.0, 0.015, atoms.positions.shape)
        pos, cell = atoms.positions, atoms.cell.array
        nl.update(pos, cell, True, species)
        ref = neighbor_list(pos, cell, True, None, species=species, pair_cutoffs=pair_cutoffs)
        assert_same(nl.get(pos, cell), ref)
    assert nl.n_builds <= 6


def test_rebuild_triggers():
    atoms, cutoff = system("bcc-periodic")
    pos, cell = atoms.positions.copy(), atoms.cell.array.copy()
    nl = VerletNeighborList(cutoff, skin=0.5)
    assert nl.update(pos, cell, True)  # first call
    assert not nl.update(pos, cell, True)
    pos[3] += [0.2, 0.0, 0.0]  # < skin / 2
    assert not nl.update(pos, cell, True)
    pos[3] += [0.1, 0.0, 0.0]  # 0.3 > skin / 2 since the build
    assert nl.update(pos, cell, True)
    assert not nl.update(pos, cell, True)
    assert nl.update(pos, cell * 1.001, True)  # cell change
    assert nl.update(pos, cell * 1.001, [True, True, False])  # pbc change
    assert nl.update(pos, cell * 1.001, [True, True, False], np.zeros(len(pos), int))  # species
    assert nl.update(pos[:-1], cell * 1.001, [True, True, False])  # number of atoms
    assert nl.n_builds == 6
    assert_same(
        nl.get(pos[:-1], cell * 1.001),
        neighbor_list(pos[:-1], cell * 1.001, [True, True, False], cutoff),
    )


def test_lattice_translation_is_not_a_displacement():
    atoms, cutoff = system("triclinic-periodic")
    pos, cell = atoms.positions.copy(), atoms.cell.array
    nl = VerletNeighborList(cutoff, skin=0.4)
    nl.update(pos, cell, True)
    pos[[0, 5, 9]] += np.array([[1, 0, 0], [0, -2, 1], [3, 1, -1]]) @ cell
    assert not nl.update(pos, cell, True)
    assert_same(nl.get(pos, cell), neighbor_list(pos, cell, True, cutoff))
    assert nl.n_builds == 1


def test_get_rebuilds_when_update_was_skipped():
    atoms, cutoff = system("bcc-periodic")
    pos, cell = atoms.positions.copy(), atoms.cell.array
    nl = VerletNeighborList(cutoff, skin=0.3)
    nl.update(pos, cell, True)
    pos[0] += [0.0, 0.0, 1.0]
    assert_same(nl.get(pos, cell), neighbor_list(pos, cell, True, cutoff))
    assert nl.n_builds == 2


def test_zero_skin_rebuilds_on_any_motion():
    atoms, cutoff = system("open-cluster")
    pos = atoms.positions.copy()
    nl = VerletNeighborList(cutoff, skin=0.0)
    assert nl.update(pos, None, False)
    assert not nl.update(pos, None, False)
    pos[0, 0] += 1e-6
    assert nl.update(pos, None, False)
    assert_same(nl.get(pos, None), neighbor_list(pos, None, False, cutoff))


def test_errors():
    with pytest.raises(RuntimeError, match="update"):
        VerletNeighborList(3.0).get(np.zeros((2, 3)), None)
    with pytest.raises(ValueError, match="skin"):
        VerletNeighborList(3.0, skin=-0.1)
    with pytest.raises(ValueError, match="cutoff"):
        VerletNeighborList(0.0)
    with pytest.raises(ValueError, match="cutoff is required"):
        VerletNeighborList(None)
    with pytest.raises(ValueError, match="symmetric"):
        VerletNeighborList(None, pair_cutoffs=[[3.0, 3.5], [3.0, 4.0]])
    with pytest.raises(ValueError, match="needs species"):
        VerletNeighborList(None, pair_cutoffs=[[3.0]]).update(np.zeros((2, 3)), None, False)
    positions = np.zeros((3, 3))
    positions[1] = [np.inf, 0.0, 0.0]
    with pytest.raises(ValueError, match="atom 1"):
        VerletNeighborList(3.0).update(positions, None, False)
    with pytest.raises(ValueError, match="zero volume"):
        VerletNeighborList(3.0).update(np.zeros((2, 3)), np.eye(3) * [1, 1, 0], True)
