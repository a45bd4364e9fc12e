"""Binary AB crystal phases, relaxations at fixed pressure and phase enthalpies.

Pure functions for pressure-dependent phase stability of binary compounds (GaN, AlN, ZnO,
...) with *any* ASE calculator:

* :func:`wurtzite` (B4), :func:`zincblende` (B3) and :func:`rocksalt` (B1) build the
  structures; each is tagged with ``atoms.info["phase"]`` (``"B4"``, ``"B3"``, ``"B1"``).
* :func:`relax_at_pressure` relaxes positions and cell under a hydrostatic pressure with
  :class:`ase.filters.FrechetCellFilter`.
* :func:`enthalpy_per_atom` gives ``(E + P V) / N``.
* :func:`phase_enthalpies` relaxes a set of phases along a list of pressures and tabulates
  enthalpy, energy and volume per atom (and ``a``, ``c``, ``c/a``, ``u`` for wurtzite).

Pressures are in GPa throughout; energies in eV, lengths in Å, volumes in Å^3.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from ase import Atoms, units


_SQRT3 = np.sqrt(3.0)


# -----------------------------------------------------------------------------
# structure builders
# -----------------------------------------------------------------------------
def _check_symbols(symbols) -> tuple[str, str]:
    if isinstance(symbols, str) or len(symbols) != 2:
        raise ValueError(f"symbols must be a pair of chemical symbols, got {symbols!r}")
    return str(symbols[0]), str(symbols[1])


def wurtzite(
    symbols: Sequence[str] = ("Ga", "N"),
    a: float = 3.19,
    c: float = 5.19,
    u: float = 0.377,
    orthohexagonal: bool = False,
) -> Atoms:
    """Wurtzite (B4, space group P6_3mc, No. 186).

    Cation A at Wyckoff 2b ``(1/3, 2/3, 0)``, ``(2/3, 1/3, 1/2)``; anion B at the same
    sites shifted by ``u`` along *c* (the axial A-B bond has length ``u c``).

    Parameters
    ----------
    symbols : pair of str
        Cation and anion symbols.
    a, c : float
        Hexagonal lattice constants (Å).
    u : float
        Internal parameter (ideal: 3/8).
    orthohexagonal : bool
        False: the 4-atom primitive hexagonal cell ``a1 = (a, 0, 0)``,
        ``a2 = (-a/2, sqrt(3) a/2, 0)``, ``a3 = (0, 0, c)``. True: the 8-atom orthohexagonal
        (C-centred orthorhombic) cell ``diag(a, sqrt(3) a, c)``.

    Returns
    -------
    ase.Atoms
        Cations first, then anions; periodic; ``info["phase"] = "B4"``. The *c* axis is
        along the third cell vector (``z``).
    """
    sa, sb = _check_symbols(symbols)
    if orthohexagonal:
        cell = np.diag([a, _SQRT3 * a, c])
        cat = np.array([[0.0, 1 / 3, 0.0], [0.5, 5 / 6, 0.0], [0.5, 1 / 6, 0.5], [0.0, 2 / 3, 0.5]])
    else:
        cell = np.array([[a, 0.0, 0.0], [-0.5 * a, 0.5 * _SQRT3 * a, 0.0], [0.0, 0.0, c]])
        cat = np.array([[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.5]])
    ani = cat + np.array([0.0, 0.0, u])
    n = len(cat)
    atoms = Atoms(
        [sa] * n + [sb] * n,
        scaled_positions=np.vstack([cat, ani]) % 1.0,
        cell=cell,
        pbc=True,
    )
    atoms.info["phase"] = "B4"
    return atoms


def rocksalt(symbols: Sequence[str] = ("Ga", "N"), a: float = 4.22, cubic: bool = False) -> Atoms:
    """Rocksalt (B1, Fm-3m, No. 225): cation at ``(0, 0, 0)``, anion at ``(1/2, 1/2, 1/2)``.

    Parameters
    ----------
    symbols : pair of str
        Cation and anion symbols.
    a : float
        Cubic lattice constant (Å); the nearest-neighbour distance is ``a/2``.
    cubic : bool
        False: the 2-atom fcc primitive cell; True: the 8-atom conventional cube.

    Returns
    -------
    ase.Atoms
        Cations first, then anions; ``info["phase"] = "B1"``.
    """
    return _fcc_binary(symbols, a, cubic, shift=(0.5, 0.5, 0.5), phase="B1")


def zincblende(
    symbols: Sequence[str] = ("Ga", "N"), a: float = 4.51, cubic: bool = False
) -> Atoms:
    """Zincblende (B3, F-43m, No. 216): cation at ``(0, 0, 0)``, anion at ``(1/4, 1/4, 1/4)``.

    Parameters
    ----------
    symbols : pair of str
        Cation and anion symbols.
    a : float
        Cubic lattice constant (Å); the nearest-neighbour distance is ``sqrt(3) a / 4``.
    cubic : bool
        False: the 2-atom fcc primitive cell; True: the 8-atom conventional cube.

    Returns
    -------
    ase.Atoms
        Cations first, then anions; ``info["phase"] = "B3"``.
    """
    return _fcc_binary(symbols, a, cubic, shift=(0.25, 0.25, 0.25), phase="B3")


def _fcc_binary(symbols, a, cubic, shift, phase) -> Atoms:
    sa, sb = _check_symbols(symbols)
    shift = np.asarray(shift, dtype=float)
    if cubic:
        cell = a * np.eye(3)
        cat = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
        pos = np.vstack([cat, cat + shift]) * a
    else:
        cell = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
        pos = np.array([[0.0, 0.0, 0.0], shift * a])
    n = len(pos) // 2
    atoms = Atoms([sa] * n + [sb] * n, positions=pos, cell=cell, pbc=True)
    atoms.wrap()
    atoms.info["phase"] = phase
    return atoms


def wurtzite_parameters(atoms: Atoms, tol: float = 0.1) -> dict[str, float]:
    """Lattice parameters ``a``, ``c``, ``c/a`` and ``u`` of a (relaxed) wurtzite structure.

    Works for any supercell of the cells built by :func:`wurtzite`, as long as the *c* axis
    is along the third cell vector and ``c/a <= 2``. ``c`` is the shortest cation-cation
    translation along that axis, ``a`` the shortest one perpendicular to it, and ``u c`` the
    shortest cation-anion distance along it.

    Parameters
    ----------
    atoms : ase.Atoms
        Wurtzite structure (first species = cation, ``atoms.numbers`` decide the species).
    tol : float
        Tolerance (Å) for "along" / "perpendicular to" the *c* axis.

    Returns
    -------
    dict
        ``{"a": ..., "c": ..., "c_over_a": ..., "u": ...}``.
    """
    from ase.neighborlist import neighbor_list

    cell = np.asarray(atoms.cell)
    chat = cell[2] / np.linalg.norm(cell[2])
    cation = atoms.numbers[0]
    # volume per atom v = sqrt(3)/8 a^2 c, so c = (8 v (c/a)^2 / sqrt(3))^(1/3) <= cutoff
    v = abs(np.linalg.det(cell)) / len(atoms)
    cutoff = 1.1 * (8.0 * v * 2.0**2 / _SQRT3) ** (1.0 / 3.0)
    i, j, d = neighbor_list("ijD", atoms, cutoff)
    along = d @ chat
    perp = np.linalg.norm(d - along[:, None] * chat, axis=1)
    cat_i = atoms.numbers[i] == cation
    same = cat_i & (atoms.numbers[j] == cation)
    other = cat_i & (atoms.numbers[j] != cation)
    c_len = np.min(np.abs(along[same & (perp < tol)]), initial=np.inf)
    a_len = np.min(perp[same & (np.abs(along) < tol)], initial=np.inf)
    uc = np.min(np.abs(along[other & (perp < tol)]), initial=np.inf)
    if not np.all(np.isfinite([a_len, c_len, uc])):
        raise ValueError("not a wurtzite structure with its c axis along the third cell vector")
    return {"a": float(a_len), "c": float(c_len), "c_over_a": float(c_len / a_len),
            "u": float(uc / c_len)}


# -----------------------------------------------------------------------------
# relaxation and enthalpy
# -----------------------------------------------------------------------------
def _optimizer_class(optimizer):
    if not isinstance(optimizer, str):
        return optimizer
    import ase.optimize

    try:
        return getattr(ase.optimize, optimizer)
    except AttributeError:
        raise ValueError(f"unknown ASE optimizer {optimizer!r}") from None


def relax_at_pressure(
    atoms: Atoms,
    calc,
    pressure_GPa: float,
    *,
    fmax: float = 1e-4,
    smax: float | None = None,
    steps: int = 500,
    hydrostatic_strain: bool = False,
    optimizer="BFGS",
    logfile=None,
) -> Atoms:
    """Relax positions and cell of a copy of ``atoms`` under hydrostatic pressure.

    Minimises the enthalpy ``E + P V`` with :class:`ase.filters.FrechetCellFilter`
    (``scalar_pressure = pressure_GPa * ase.units.GPa``).

    Parameters
    ----------
    atoms : ase.Atoms
        Starting structure (left untouched).
    calc : ase.calculators.calculator.Calculator
        Calculator providing energy, forces and stress; attached to the returned copy.
    pressure_GPa : float
        Hydrostatic pressure (GPa, positive = compression).
    fmax : float
        Convergence threshold on the filter's generalised forces: the atomic forces (eV/Å)
        and the cell gradient, which is the virial divided by the number of atoms (eV).
    smax : float, optional
        Additional threshold (GPa) on ``max |sigma_ij + P delta_ij|``, the deviation of the
        stress from the target (ASE sign: stress = -P at equilibrium; with
        ``hydrostatic_strain`` only the mean stress counts). While the ``fmax`` criterion is
        met but this one is not, ``fmax`` is tightened 4-fold and the run continues.
        None: no extra check.
    steps : int
        Maximum number of optimiser steps.
    hydrostatic_strain : bool
        Allow only hydrostatic (shape-preserving) cell deformations.
    optimizer : str or ase.optimize.Optimizer subclass
        ``"BFGS"``, ``"LBFGS"``, ``"FIRE"``, ... (any name in :mod:`ase.optimize`).
    logfile : str, file or None
        Optimiser log (None: silent; ``"-"``: stdout).

    Returns
    -------
    ase.Atoms
        The relaxed copy, with ``calc`` attached (its results are those of the relaxed
        state).

    Raises
    ------
    RuntimeError
        If the criteria are not met within ``steps`` steps.
    """
    from ase.filters import FrechetCellFilter

    relaxed = atoms.copy()
    relaxed.calc = calc
    pressure = pressure_GPa * units.GPa
    filt = FrechetCellFilter(
        relaxed, scalar_pressure=pressure, hydrostatic_strain=hydrostatic_strain
    )
    opt = _optimizer_class(optimizer)(filt, logfile=logfile)

    def stress_residual() -> float:
        stress = relaxed.get_stress(voigt=False)
        if hydrostatic_strain:  # only the mean stress is relaxed
            res = abs(np.trace(stress) / 3.0 + pressure)
        else:
            res = np.abs(stress + pressure * np.eye(3)).max()
        return float(res / units.GPa)

    # the optimiser's own fmax criterion; if the stress is not yet within smax, tighten fmax
    target = fmax
    while True:
        with warnings.catch_warnings():
            # FrechetCellFilter's scipy.linalg.logm reports ~1e-13 round-off as a warning
            warnings.filterwarnings("ignore", message="logm result may be inaccurate",
                                    category=RuntimeWarning)
            converged = opt.run(fmax=target, steps=max(steps - opt.nsteps, 0))
        if not converged or smax is None or stress_residual() < smax:
            break
        target *= 0.25
        if target < 1e-8 * fmax:  # forces vanish but the stress does not: give up
            converged = False
            break
    if not converged:
        g = float(np.linalg.norm(filt.get_forces(), axis=1).max())
        raise RuntimeError(
            f"relax_at_pressure: not converged in {steps} steps at P = {pressure_GPa} GPa "
            f"({relaxed.get_chemical_formula()}): max generalised force {g:.3g} "
            f"(target {target:g}), max |stress + P| {stress_residual():.3g} GPa (smax {smax})"
        )
    return relaxed


def enthalpy_per_atom(atoms: Atoms, pressure_GPa: float) -> float:
    """Enthalpy per atom ``(E + P V) / N`` (eV/atom).

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure with a calculator attached (its potential energy is used).
    pressure_GPa : float
        Pressure (GPa).

    Returns
    -------
    float
    """
    if atoms.calc is None:
        raise ValueError("enthalpy_per_atom: atoms carry no calculator")
    e = atoms.get_potential_energy()
    return float((e + pressure_GPa * units.GPa * atoms.get_volume()) / len(atoms))


def phase_enthalpies(
    calc,
    phases: Mapping[str, Atoms],
    pressures_GPa: Sequence[float],
    **relax_kwargs,
) -> dict[str, dict]:
    """Relaxed enthalpy, energy and volume per atom of several phases at several pressures.

    Each phase is relaxed with :func:`relax_at_pressure` at the pressures in the given
    order, each relaxation starting from the structure relaxed at the previous pressure.

    Parameters
    ----------
    calc : ase.calculators.calculator.Calculator
        Any calculator with energy, forces and stress.
    phases : mapping of str to ase.Atoms
        Name -> starting structure. A structure is treated as wurtzite (extra ``a``, ``c``,
        ``c_over_a``, ``u`` from :func:`wurtzite_parameters`) when
        ``atoms.info["phase"] == "B4"`` (set by :func:`wurtzite`) or its name is ``"B4"`` or
        ``"wurtzite"`` (case-insensitive).
    pressures_GPa : sequence of float
        Pressures (GPa).
    **relax_kwargs
        Passed to :func:`relax_at_pressure` (``fmax``, ``smax``, ``steps``, ...).

    Returns
    -------
    dict
        ``result[name]`` is a dict of arrays aligned with ``pressures_GPa``:
        ``"pressure_GPa"``, ``"enthalpy"`` (eV/atom), ``"energy"`` (eV/atom), ``"volume"``
        (Å^3/atom), for wurtzite also ``"a"``, ``"c"``, ``"c_over_a"``, ``"u"``, plus
        ``"structures"``: the relaxed structures (copies carrying a
        :class:`~ase.calculators.singlepoint.SinglePointCalculator` with energy, forces and
        stress).
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    pressures = [float(p) for p in pressures_GPa]
    out: dict[str, dict] = {}
    for name, start in phases.items():
        is_b4 = start.info.get("phase") == "B4" or name.lower() in ("b4", "wurtzite")
        rows: dict[str, list] = {"pressure_GPa": [], "enthalpy": [], "energy": [], "volume": []}
        if is_b4:
            rows.update({"a": [], "c": [], "c_over_a": [], "u": []})
        structures = []
        current = start
        for p in pressures:
            current = relax_at_pressure(current, calc, p, **relax_kwargs)
            n = len(current)
            rows["pressure_GPa"].append(p)
            rows["enthalpy"].append(enthalpy_per_atom(current, p))
            rows["energy"].append(current.get_potential_energy() / n)
            rows["volume"].append(current.get_volume() / n)
            if is_b4:
                for key, val in wurtzite_parameters(current).items():
                    rows[key].append(val)
            snap = current.copy()
            snap.calc = SinglePointCalculator(
                snap,
                energy=current.get_potential_energy(),
                forces=current.get_forces(),
                stress=current.get_stress(),
            )
            structures.append(snap)
            current = current.copy()  # detach calc for the next start
        res = {k: np.asarray(v, dtype=float) for k, v in rows.items()}
        res["structures"] = structures
        out[name] = res
    return out
