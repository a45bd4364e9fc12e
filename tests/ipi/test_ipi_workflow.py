"""``ase_mlp.ipi.run`` with the GLE and PIGLET templates; input checks; output readers.

The GLE runs use white-noise (1x1 per mode) drift matrices: a GLE that is a Langevin
thermostat, so the exact answers are known (classical kT for one bead, the P-bead ring
polymer energy for PIGLET-style normal-mode GLEs with the canonical C). Real (coloured)
GLE/PIGLET matrices come from https://gle4md.org and use the same input path.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units

from ase_mlp.calculators.oscillators import HBAR, HarmonicOscillators
from ase_mlp.ipi import ipi_input
from ase_mlp.ipi.analysis import block_average, ring_polymer_harmonic_energy
from ase_mlp.ipi.inputs import AU_TIME_FS, white_noise_gle
from ase_mlp.ipi.outputs import bead_file


T = 300.0
N = 64


def _oscillators():
    pos = 3.0 * np.array([[i, j, k] for i in range(4) for j in range(4) for k in range(4)],
                         float) + 1.0
    atoms = Atoms(f"H{N}", positions=pos, cell=[14.0] * 3, pbc=False)
    omega = 4 * units.kB * T / HBAR
    return atoms, HarmonicOscillators(atoms.get_masses()[0] * omega**2, x0=pos.copy()), omega


def _energy(res, skip=100):
    e = (res["potential"] + res["kinetic_cv"])[skip:] / (3 * N)
    return e.mean()


PROPS = ("step", "potential{electronvolt}", "kinetic_cv{electronvolt}", "temperature{kelvin}")


def test_gle_template_thermalises_classical_oscillators(tmp_path):
    pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)
    from ase_mlp.ipi import run

    atoms, calc, _ = _oscillators()
    res = run(atoms, calc, tmp_path, nbeads=1, steps=800, timestep_fs=1.0,
              thermostat="gle", gle_A=white_noise_gle(20.0), fixcom=False, pbc=False,
              trajectory_stride=400, properties=PROPS, wall_timeout=120)
    # starts with kT/2 per mode (kinetic only): a working thermostat brings it to kT
    assert _energy(res) == pytest.approx(units.kB * T, rel=0.04)
    assert len(res.centroids) == 3 and res.centroids[-1].info["step"] == 800
    assert np.abs(res.centroids[-1].positions - atoms.positions).max() > 0.01
    assert res.centroids[-1].get_chemical_symbols() == ["H"] * N


@pytest.mark.slow
def test_piglet_template_with_canonical_matrices_gives_ring_polymer_energy(tmp_path):
    pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)
    from ase_mlp.ipi import run

    atoms, calc, omega = _oscillators()
    P = 4
    A = np.stack([white_noise_gle(20.0 if k == 0 else 5.0) for k in range(P)])
    res = run(atoms, calc, tmp_path, nbeads=P, steps=1000, timestep_fs=1.0,
              thermostat="piglet", gle_A=A, fixcom=False, pbc=False,
              trajectory_stride=500, properties=PROPS, wall_timeout=120)
    assert _energy(res) == pytest.approx(ring_polymer_harmonic_energy(omega, T, P), rel=0.03)


def test_input_template_checks():
    xml = ipi_input("init.xyz", nbeads=4, thermostat="pile_g", tau_fs=50, batch_size=2,
                    mode="inet", port=4242, host="node7")
    assert "<batch_size> 2 </batch_size>" in xml and "<port> 4242 </port>" in xml
    assert "mode='pile_g'" in xml and "<address> node7 </address>" in xml
    assert "batch_size" not in ipi_input("x.xyz", nbeads=4, batch_size=1)
    with pytest.raises(ValueError, match="unknown thermostat"):
        ipi_input("x.xyz", thermostat="nose")
    with pytest.raises(ValueError, match="gle4md"):
        ipi_input("x.xyz", thermostat="gle")
    with pytest.raises(ValueError, match="one matrix per normal mode"):
        ipi_input("x.xyz", nbeads=4, thermostat="piglet", gle_A=white_noise_gle(10))
    a = white_noise_gle(10.0)
    assert a.shape == (1, 1) and a[0, 0] == pytest.approx(AU_TIME_FS / 10.0)
    assert 0.0241 < AU_TIME_FS < 0.0242
    mean, sem = block_average(np.r_[np.zeros(50), np.ones(50)], nblocks=2)
    assert mean == 0.5 and sem == pytest.approx(0.5)
    assert "<fixcom> False </fixcom>" in ipi_input("x.xyz", fixcom=False)
    assert bead_file("d", "pos", 3, 16, "bin").name == "simulation.pos_03.bin"
    assert bead_file("d", "for", 3, 8, "extxyz").name == "simulation.for_3.extxyz"


def test_run_argument_checks(tmp_path):
    from ase_mlp.ipi import run

    atoms, calc, _ = _oscillators()
    with pytest.raises(ValueError, match="needs a calculator"):
        run(atoms, None, tmp_path)
    with pytest.raises(ValueError, match="model file"):
        run(atoms, None, tmp_path, driver="process")
    with pytest.raises(FileNotFoundError, match="nothing to restart"):
        run(atoms, calc, tmp_path, restart=True)
