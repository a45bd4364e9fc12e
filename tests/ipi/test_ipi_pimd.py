"""PIMD through i-PI and our driver converges to the quantum harmonic energy as P grows.

64 independent H atoms in a 3D harmonic well with hbar*omega = 4 kT at 300 K (192
oscillators). For P beads the exact ring-polymer energy per degree of freedom is
``E_P = kT sum_k omega^2 / (omega^2 + (2 P kT / hbar)^2 sin^2(pi k / P))``: kT for P = 1,
``(hbar omega / 2) coth(hbar omega / 2 kT)`` for P -> infinity (0.7 % below it at P = 16).
The energy is the potential plus the centroid-virial kinetic energy estimator.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units


pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)

from ase_mlp.calculators.oscillators import (  # noqa: E402
    HBAR,
    HarmonicOscillators,
    quantum_mode_energy,
)
from ase_mlp.ipi import run  # noqa: E402
from ase_mlp.ipi.analysis import block_average, ring_polymer_harmonic_energy  # noqa: E402


T = 300.0


@pytest.mark.slow
def test_pimd_harmonic_converges_to_quantum_energy(tmp_path):
    n = 64
    pos = 3.0 * np.array([[i, j, k] for i in range(4) for j in range(4) for k in range(4)],
                         float) + 1.0
    atoms = Atoms(f"H{n}", positions=pos, cell=[14.0] * 3, pbc=False)
    mass = atoms.get_masses()[0]
    omega = 4 * units.kB * T / HBAR
    calc = HarmonicOscillators(mass * omega**2, x0=pos.copy())
    exact_q = float(quantum_mode_energy(omega, T))
    energies = {}
    for P in (1, 4, 16):
        res = run(atoms, calc, tmp_path / f"P{P}", nbeads=P, temperature_K=T, steps=1000,
                  timestep_fs=1.0, tau_fs=20.0, fixcom=False, pbc=False,
                  trajectory_stride=500, properties=("step", "potential{electronvolt}",
                                                     "kinetic_cv{electronvolt}"),
                  wall_timeout=120)
        mean, sem = block_average((res["potential"] + res["kinetic_cv"])[100:] / (3 * n))
        energies[P] = mean
        exact_p = ring_polymer_harmonic_energy(omega, T, P)
        tol = max(4 * sem, 0.01 * exact_p)
        assert abs(mean - exact_p) < tol, (P, mean, exact_p, tol)
    assert energies[1] == pytest.approx(units.kB * T, rel=0.03)          # classical
    assert energies[1] < energies[4] < energies[16]
    assert energies[16] == pytest.approx(exact_q, rel=0.02)              # quantum
    assert abs(energies[16] - exact_q) < 0.25 * abs(energies[4] - exact_q)


@pytest.mark.slow
def test_compare_quantum_methods_smoke(tmp_path, gan_calc, gan_atoms):
    """Short PIMD/QTB/classical comparison: outputs and the sign of the quantum shift."""
    from ase_mlp.ipi.compare import compare_quantum_methods

    out = compare_quantum_methods(gan_atoms, gan_calc, tmp_path, beads=(4,), steps=80,
                                  skip=30, stride=10, log=lambda *a: None)
    assert set(out) == {"classical", "pimd_4", "qtb", "adqtb"}
    # zero-point motion raises <E_pot> (about 20 meV/atom for GaN at 300 K)
    assert out["pimd_4"]["epot"][0] > out["classical"]["epot"][0] + 0.005
    assert set(out["pimd_4"]["rdf"]) == {"Ga-Ga", "Ga-N", "N-N"}
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "rdfs.npz").is_file()
