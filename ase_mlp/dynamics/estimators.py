"""Estimators for QTB runs: energy per degree of freedom as a temperature.

Under QTB (and in quantum reality) the total energy per degree of freedom of a crystal,
measured from its minimum, stays at the zero-point plateau as T -> 0 instead of falling
as k_B T: ``E / (3 N k_B)`` against ``T`` is the classic check (Dammak et al. 2009). For
a harmonic crystal with vibrational density of states ``g`` the quantum curve is
:func:`ase_mlp.analysis.effective_temperature` ``(omega, g, T)``.
"""

from __future__ import annotations

import numpy as np
from ase import units


def energy_temperature(epot, ekin, n_atoms: int, e_min: float, *,
                       kinetic: str = "virial") -> float:
    """``(E - E_min) / (3 N k_B)`` in K from time series of a run.

    Parameters
    ----------
    epot, ekin : arrays
        Potential and kinetic energies of the whole system (eV) along the run.
    n_atoms : int
        Number of atoms (3 N degrees of freedom; the 3 of the centre of mass are kept,
        as QTB thermalises them too unless ``fixcm``).
    e_min : float
        Energy of the relaxed structure (eV).
    kinetic : {"virial", "measured"}
        ``"measured"`` uses ``<E_kin>``, which under QTB carries a friction- and
        cutoff-dependent bias (docs/dynamics.md); ``"virial"`` uses ``<E_pot> - E_min`` in
        its place (exact for harmonic modes, the recommended estimator).
    """
    epot = np.asarray(epot, dtype=float)
    ekin = np.asarray(ekin, dtype=float)
    if epot.size == 0 or not np.all(np.isfinite(epot)) or not np.all(np.isfinite(ekin)):
        raise ValueError("epot/ekin must be non-empty and finite")
    if n_atoms <= 0:
        raise ValueError(f"n_atoms must be > 0, got {n_atoms}")
    pot = float(np.mean(epot)) - float(e_min)
    if kinetic == "virial":
        kin = pot
    elif kinetic == "measured":
        kin = float(np.mean(ekin))
    else:
        raise ValueError(f"kinetic must be 'virial' or 'measured', got {kinetic!r}")
    return (pot + kin) / (3 * n_atoms * units.kB)
