"""Reference values and statistics for path-integral runs."""

from __future__ import annotations

import numpy as np
from ase import units

from ase_mlp.calculators.oscillators import HBAR


def ring_polymer_harmonic_energy(omega, temperature_K: float, nbeads: int) -> float:
    """Exact mean energy (eV) of one harmonic degree of freedom sampled with ``nbeads`` beads.

    ``E_P = kT sum_k omega^2 / (omega^2 + (2 P kT / hbar)^2 sin^2(pi k / P))``, the
    potential plus the (centroid-)virial kinetic estimator of a P-bead ring polymer: ``kT``
    for ``P = 1`` and ``(hbar omega / 2) coth(hbar omega / 2 kT)`` as ``P`` grows.
    ``omega`` in rad per ASE time unit.
    """
    beta = 1.0 / (units.kB * float(temperature_K))
    k = np.arange(int(nbeads))
    om2 = float(omega) ** 2 + (2 * nbeads / (beta * HBAR)) ** 2 * np.sin(np.pi * k / nbeads) ** 2
    return float(np.sum(float(omega) ** 2 / om2) / beta)


def block_average(x, nblocks: int = 10) -> tuple[float, float]:
    """Mean and block standard error of a correlated time series."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2 * nblocks:
        raise ValueError(f"{len(x)} samples are too few for {nblocks} blocks")
    means = np.array([b.mean() for b in np.array_split(x, nblocks)])
    return float(x.mean()), float(means.std(ddof=1) / np.sqrt(nblocks))
