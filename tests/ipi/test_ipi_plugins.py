"""Foreign model families (metatomic ``.pt``, DeePMD ``.dp``) served to a real i-PI server.

``ase-mlp ipi-driver --model FILE`` (a subprocess, as a user runs it) serves a short
classical NVT run of i-PI (1 bead); the oracle is i-PI's own record of it: the positions
and forces of every step as full-precision binary trajectories and the potential energy
as a ``%.16e`` property column, all in atomic units, against a direct
``MLPCalculator.from_file(FILE)`` evaluation of the same frames.

Tolerance 1e-8 relative (as in test_ipi_server.py): the binary trajectories are exact
float64 and the property column has 17 significant digits, so what is left is the
round-off of the unit conversions (i-PI's Hartree/Bohr constants against ``ase.units``,
measured here: <= 2e-14 in all) and the summation order of batched against single-structure
model calls; 1e-8 leaves room for both, yet catches any wrong unit, species order, cell
convention or stale structure (all >= 1e-3).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.io import write


pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)

from ase_mlp.calculators import MLPCalculator  # noqa: E402
from ase_mlp.ipi import ipi_input, read_properties  # noqa: E402
from ase_mlp.ipi.outputs import binary_to_atoms, read_binary_trajectory  # noqa: E402


STEPS = 6
BIN_OUTPUTS = ("<trajectory filename='pos' stride='1' format='bin'> positions </trajectory>",
               "<trajectory filename='for' stride='1' format='bin'> forces </trajectory>")
WATER = "/work/shared/data/water-deepmd/data_0"
RTOL = 1e-8


# --------------------------------------------------------------------------- models
def make_metatomic_lj(path) -> str:
    """Two-element Lennard-Jones (Ar, Kr) as a metatomic TorchScript ``.pt``."""
    pytest.importorskip("metatomic.torch")
    from ase_mlp.models.metatomic import lennard_jones

    lennard_jones(elements=["Ar", "Kr"], sigma=[[3.40, 3.55], [3.55, 3.65]],
                  epsilon=[[0.0104, 0.0125], [0.0125, 0.0140]], cutoff=7.0).save(str(path))
    return str(path)


def lj_atoms() -> Atoms:
    """32-atom fcc Ar/Kr, strained and rattled."""
    atoms = bulk("Ar", "fcc", a=5.4, cubic=True).repeat(2)
    rng = np.random.default_rng(1)
    atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Kr"
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.1, seed=1)
    return atoms


def make_deepmd_se(path, seed: int = 0) -> str:
    """A small DeePot-SE (O, H; rcut 4 Å, sel (20, 40)) built by deepmd's NumPy backend,
    weights and statistics randomised with a seeded rng, written by deepmd as ``.dp``
    (:func:`ase_mlp.testing.make_deepmd_se`); gentle output layers (``out_scale=0.1``):
    a smooth PES for a few MD steps."""
    pytest.importorskip("deepmd.dpmodel")
    pytest.importorskip("h5py")
    from ase_mlp.testing import make_deepmd_se as build

    return build(path, seed=seed, out_scale=0.1)


def water_atoms() -> Atoms:
    """The first frame of the DeePMD water data (64 H2O, 192 atoms)."""
    import pathlib

    data = pathlib.Path(WATER)
    if not data.is_dir():
        pytest.skip(f"no water data at {data}")
    coord = np.load(data / "set.000/coord.npy")[0].reshape(-1, 3)
    box = np.load(data / "set.000/box.npy")[0].reshape(3, 3)
    types = np.loadtxt(data / "type.raw", dtype=int)
    tmap = (data / "type_map.raw").read_text().split()
    return Atoms([tmap[t] for t in types], positions=coord, cell=box, pbc=True)


MODELS = {"metatomic": ("lj.pt", make_metatomic_lj, lj_atoms, 1.0),
          "deepmd": ("water.dp", make_deepmd_se, water_atoms, 0.25)}


# --------------------------------------------------------------------------- the run
def _serve(tmp_path, model, atoms, sock, start_ipi, procs, timestep_fs):
    write(tmp_path / "init.extxyz", atoms)
    (tmp_path / "input.xml").write_text(ipi_input(
        "init.extxyz", address=sock, nbeads=1, steps=STEPS, timestep_fs=timestep_fs,
        temperature_K=300.0, thermostat="svr", tau_fs=10.0, velocities_K=300.0, seed=17,
        trajectory_stride=10**6, properties=("step", "potential{atomic_unit}"),
        extra_outputs=BIN_OUTPUTS))
    server = start_ipi(tmp_path)
    with open(tmp_path / "driver.log", "w") as fh:
        drv = subprocess.Popen([sys.executable, "-m", "ase_mlp.cli", "ipi-driver",
                                "--model", str(model), "--unix", sock,
                                "--structure", str(tmp_path / "init.extxyz"),
                                "--device", "cpu", "--threads", "1"],
                               stdout=fh, stderr=subprocess.STDOUT)
    procs.append(drv)
    try:
        rc_server = server.wait(timeout=90)
        rc_driver = drv.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - diagnostics
        pytest.fail("i-PI or the driver hung:\n" + (tmp_path / "ipi.log").read_text()[-2000:]
                    + (tmp_path / "driver.log").read_text()[-2000:])
    logs = (tmp_path / "ipi.log").read_text()[-2000:] + (tmp_path / "driver.log").read_text()
    assert rc_server == 0 and rc_driver == 0, logs
    return logs


@pytest.mark.parametrize("family", sorted(MODELS))
def test_foreign_model_served_to_real_ipi(tmp_path, family, sock_name, start_ipi, procs):
    """i-PI's energies and forces of every step = MLPCalculator.from_file on its frames."""
    name, make, structure, timestep_fs = MODELS[family]
    model = make(tmp_path / name)
    check_served(tmp_path, model, structure(), timestep_fs, sock_name, start_ipi, procs)


def check_served(tmp_path, model, atoms, timestep_fs, sock_name, start_ipi, procs):
    """Serve model file ``model`` by ``ase-mlp ipi-driver`` to a real i-PI running a short
    NVT run of ``atoms`` and check every step against ``MLPCalculator.from_file(model)``.

    Other families' i-PI tests (tests/ipi/test_ipi_<family>.py) import this function
    (``from test_ipi_plugins import check_served``) with the fixtures of tests/ipi/conftest.py.
    """
    logs = _serve(tmp_path, model, atoms, sock_name, start_ipi, procs, timestep_fs)
    calc = MLPCalculator.from_file(model, device="cpu")
    assert calc.model.__class__.__name__ in logs          # the driver served this family

    P = read_properties(tmp_path / "simulation.out")
    np.testing.assert_array_equal(P["step"], np.arange(STEPS + 1))
    frames = [binary_to_atoms(f) for f in read_binary_trajectory(tmp_path / "simulation.pos_0.bin")]
    forces = read_binary_trajectory(tmp_path / "simulation.for_0.bin")
    assert len(frames) == len(forces) == STEPS + 1
    assert frames[0].get_chemical_symbols() == atoms.get_chemical_symbols()
    # i-PI stores the cell upper-triangular (the structure rotated): same lengths and angles
    np.testing.assert_allclose(frames[0].cell.cellpar(), atoms.cell.cellpar(), rtol=1e-12)
    e_ipi = P["potential"] * units.Hartree
    e_err = f_err = 0.0
    for k, frame in enumerate(frames):
        frame.calc = calc
        e = frame.get_potential_energy()
        f = frame.get_forces()
        f_ipi = forces[k]["data"].reshape(-1, 3) * units.Hartree / units.Bohr
        e_err = max(e_err, abs(e_ipi[k] - e) / abs(e))
        f_err = max(f_err, np.abs(f_ipi - f).max() / np.abs(f).max())
    assert e_err < RTOL and f_err < RTOL, (e_err, f_err)
    # it moved: the frames are different configurations, not one repeated
    assert np.abs(frames[-1].positions - frames[0].positions).max() > 1e-4
    assert np.ptp(e_ipi) > 1e-6
