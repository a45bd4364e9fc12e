"""Independent oscillators with exact quantum answers: the test bed of thermostats.

Every Cartesian component of every atom is an independent 1D oscillator around its
reference position ``x0``:

* :class:`HarmonicOscillators`: ``V = k/2 (x - x0)^2`` (``k`` per atom);
* :class:`MorseOscillators`: ``V = D (1 - exp(-a (x - x0)))^2`` (``D``, ``a`` per atom).

Both are separable, so the quantum thermal averages of each degree of freedom are those of
a 1D oscillator: analytic for the harmonic one (:func:`harmonic_quantum_averages`), by
diagonalising the 1D Hamiltonian on a grid for the Morse one
(:func:`morse_quantum_averages`). No periodic images are involved (``pbc`` is ignored and
positions are used as given).
"""

from __future__ import annotations

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator, all_changes


HBAR = units._hbar * units.J * units.s          # eV * (ASE time)


def _per_atom(value, n: int, name: str) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return arr


class _Oscillators(Calculator):
    implemented_properties = ("energy", "free_energy", "energies", "forces")

    def __init__(self, x0=None, **kwargs):
        super().__init__(**kwargs)
        self.x0 = None if x0 is None else np.array(x0, dtype=float)

    def _displacement(self, atoms):
        if self.x0 is None:
            self.x0 = atoms.get_positions().copy()
        if self.x0.shape != (len(atoms), 3):
            raise ValueError(f"x0 has shape {self.x0.shape}, the atoms need ({len(atoms)}, 3)")
        return atoms.get_positions() - self.x0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        u = self._displacement(self.atoms)
        e, f = self._energy_forces(u)
        self.results = {"energies": e.sum(axis=1), "energy": float(e.sum()),
                        "free_energy": float(e.sum()), "forces": f}


class HarmonicOscillators(_Oscillators):
    """``V = sum_i k_i/2 |r_i - x0_i|^2``: 3 independent harmonic modes per atom.

    Parameters
    ----------
    k : float or array (n_atoms,)
        Spring constants (eV/Å²); the angular frequency is ``sqrt(k/m)`` per ASE time.
    x0 : array (n_atoms, 3), optional
        Reference positions (default: the positions at the first evaluation).
    """

    def __init__(self, k, x0=None, **kwargs):
        super().__init__(x0, **kwargs)
        self.k = np.asarray(k, dtype=float)

    def _energy_forces(self, u):
        k = _per_atom(self.k, len(u), "k")[:, None]
        return 0.5 * k * u**2, -k * u


class MorseOscillators(_Oscillators):
    """``V = sum_{i,alpha} D_i (1 - exp(-a_i (x_i,alpha - x0_i,alpha)))^2``.

    Each Cartesian component is an independent 1D Morse oscillator with harmonic
    frequency ``omega = a sqrt(2 D / m)``.
    """

    def __init__(self, D, a, x0=None, **kwargs):
        super().__init__(x0, **kwargs)
        self.D = np.asarray(D, dtype=float)
        self.a = np.asarray(a, dtype=float)

    def _energy_forces(self, u):
        D = _per_atom(self.D, len(u), "D")[:, None]
        a = _per_atom(self.a, len(u), "a")[:, None]
        ex = np.exp(-a * u)
        return D * (1.0 - ex) ** 2, -2.0 * D * a * (1.0 - ex) * ex


def quantum_mode_energy(omega, temperature_K):
    """``theta(omega, T) = (hbar omega / 2) coth(hbar omega / 2 kB T)`` in eV.

    The mean energy of a quantum harmonic mode (zero point included); ``k_B T`` at
    ``omega = 0`` and ``hbar |omega| / 2`` at ``T = 0``. ``omega`` in rad per ASE time.
    """
    w = np.abs(np.asarray(omega, dtype=float))
    kT = units.kB * float(temperature_K)
    half = 0.5 * HBAR * w
    if kT <= 0:
        return half
    x = half / kT
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(x > 1e-6, half / np.tanh(np.maximum(x, 1e-300)), kT * (1 + x * x / 3))
    return out


def harmonic_quantum_averages(omega, mass, temperature_K) -> dict:
    """Exact quantum averages of a 1D harmonic oscillator (per degree of freedom).

    Returns ``epot`` and ``ekin`` (both ``theta/2``, eV) and ``x2`` (``<x^2>`` in Å²).
    """
    theta = quantum_mode_energy(omega, temperature_K)
    return {"epot": 0.5 * theta, "ekin": 0.5 * theta,
            "x2": theta / (float(mass) * np.asarray(omega, dtype=float) ** 2)}


def morse_quantum_averages(D: float, a: float, mass: float, temperature_K: float, *,
                           n_grid: int = 600) -> dict:
    """Exact quantum thermal averages of a 1D Morse oscillator (grid diagonalisation).

    ``H = -hbar^2/(2m) d^2/dx^2 + D (1 - exp(-a x))^2`` is diagonalised with a
    fourth-order finite-difference Laplacian on ``x`` in ``[-1.5/a, 6/a]`` (hard walls;
    wide enough for the states populated below ``k_B T ~ D/3``). Returns ``epot``,
    ``ekin``, ``etot`` (eV), ``x`` (``<x>``, Å) and ``x2`` (``<x^2>``, Å²) at
    ``temperature_K`` (``T = 0``: the ground state).
    """
    m = float(mass)
    omega = a * np.sqrt(2.0 * D / m)
    # box: from well inside the repulsive wall to where V reaches ~ 3 D on the soft side
    x = np.linspace(-1.5 / a, 6.0 / a, n_grid)
    h = x[1] - x[0]
    V = D * (1.0 - np.exp(-a * x)) ** 2
    c = HBAR**2 / (2.0 * m)
    main = c * 30.0 / (12.0 * h * h) + V
    off1 = -c * 16.0 / (12.0 * h * h)
    off2 = c * 1.0 / (12.0 * h * h)
    H = np.diag(main) + off1 * (np.eye(n_grid, k=1) + np.eye(n_grid, k=-1)) \
        + off2 * (np.eye(n_grid, k=2) + np.eye(n_grid, k=-2))
    E, psi = np.linalg.eigh(H)
    p2 = psi**2
    if temperature_K > 0:
        w = np.exp(-(E - E[0]) / (units.kB * temperature_K))
    else:
        w = np.zeros_like(E)
        w[0] = 1.0
    w /= w.sum()
    epot = float(w @ (p2.T @ V))
    etot = float(w @ E)
    return {"epot": epot, "ekin": etot - epot, "etot": etot, "x": float(w @ (p2.T @ x)),
            "x2": float(w @ (p2.T @ x**2)), "omega": omega,
            "levels": E[:10]}
