"""Neighbour lists against ASE's own neighbor_list as the oracle; Verlet skin behaviour."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.neighborlist import neighbor_list as ase_nl

from ase_mlp.neighbors import VerletNeighborList, batch_neighbor_list, neighbor_list


def triples(i, j, S):
    return set(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(S).tolist()), strict=False))


def cases(rng):
    tri = bulk("Cu", "fcc", a=3.6).repeat((3, 2, 2))
    tri.set_cell(tri.cell.array @ np.array([[1, 0.3, 0.1], [0, 1, 0.25], [0.2, 0, 1]]),
                 scale_atoms=True)
    tri.positions += rng.normal(scale=0.1, size=tri.positions.shape)
    outside = tri.copy()
    outside.positions += 7.3  # atoms outside the unit cell
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    wire = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 3))
    wire.pbc = (False, False, True)
    cluster = Atoms("Cu6", positions=rng.uniform(0, 6, size=(6, 3)))
    tiny = bulk("W", "bcc", a=3.17)  # 1 atom, cell far shorter than the cutoff
    return {"triclinic": tri, "outside": outside, "slab": slab, "wire": wire,
            "cluster": cluster, "tiny": tiny}


@pytest.mark.parametrize("name", ["triclinic", "outside", "slab", "wire", "cluster", "tiny"])
@pytest.mark.parametrize("cutoff", [3.0, 7.5])
def test_against_ase(name, cutoff, rng):
    atoms = cases(rng)[name]
    ours = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    ref = ase_nl("ijS", atoms, cutoff)
    assert triples(*ours) == triples(*ref)


def test_pair_cutoffs(rng):
    atoms = cases(rng)["triclinic"]
    species = rng.integers(0, 2, len(atoms))
    pc = 1.3 * (np.array([1.6, 2.4])[:, None] + np.array([1.6, 2.4])[None, :])
    i, j, S = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, None,
                            species=species, pair_cutoffs=pc)
    ri, rj, rS, d = ase_nl("ijSd", atoms, pc.max())
    keep = d < pc[species[ri], species[rj]]
    assert triples(i, j, S) == triples(ri[keep], rj[keep], rS[keep])


def test_batch_equals_concatenation(rng):
    systems = list(cases(rng).values())
    nb = batch_neighbor_list(systems, 4.0)
    offsets = np.cumsum([0] + [len(a) for a in systems])
    expect = set()
    for k, a in enumerate(systems):
        i, j, S = neighbor_list(a.positions, a.cell.array, a.pbc, 4.0)
        expect |= triples(i + offsets[k], j + offsets[k], S)
    assert triples(nb.i, nb.j, nb.shifts) == expect
    np.testing.assert_array_equal(nb.offsets, offsets)
    assert (nb.atom_system[nb.i] == nb.edge_system).all()


def test_verlet_skin(rng):
    atoms = cases(rng)["triclinic"]
    vl = VerletNeighborList(4.0, skin=0.6)
    pos = atoms.positions.copy()
    for _ in range(20):
        pos = pos + rng.normal(scale=0.01, size=pos.shape)
        vl.update(pos, atoms.cell.array, atoms.pbc)
        got = vl.get(pos, atoms.cell.array)
        ref = neighbor_list(pos, atoms.cell.array, atoms.pbc, 4.0)
        assert triples(*got) == triples(*ref)
    assert vl.n_builds < 10
    n = vl.n_builds
    pos[0] += 0.5  # more than skin/2: rebuild
    assert vl.update(pos, atoms.cell.array, atoms.pbc)
    assert vl.update(pos, atoms.cell.array * 1.01, atoms.pbc)  # cell change: rebuild
    assert vl.n_builds == n + 2


def test_errors(rng):
    atoms = cases(rng)["triclinic"]
    pos = atoms.positions.copy()
    pos[4, 2] = np.nan
    with pytest.raises(ValueError, match="4"):
        neighbor_list(pos, atoms.cell.array, atoms.pbc, 3.0)
    flat = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="volume|zero|degenerate"):
        neighbor_list(atoms.positions, flat, True, 3.0)
    with pytest.raises(ValueError):
        neighbor_list(atoms.positions, atoms.cell.array, True, -1.0)
