"""Conformance kit for ASE calculators.

A small set of checks that any :class:`ase.calculators.calculator.Calculator`
should pass: forces are the negative energy gradient, the stress is the strain
derivative of the energy, per-atom quantities sum to the totals, results are
invariant (or covariant) under rotations, translations and permutations, and
batched evaluation agrees with one-by-one evaluation.  The kit is shipped with
``ase_mlp`` so that users can run it on their own models (and on any other ASE
calculator); ``ase_mlp``'s own test suite uses it as well.  It does not import
torch.

Every ``check_*`` function returns a small ``dict`` with the measured errors and
raises :class:`AssertionError` with an informative message (worst atom /
component, value versus reference, tolerance) when a tolerance is exceeded.
Inputs are never modified: the checks work on copies of the atoms (with
constraints removed, so that raw forces are compared with raw gradients).  When
``calc`` is ``None`` the calculator attached to ``atoms`` is used; it is then
called on those copies, so its cached results afterwards belong to a copy.

Units are ASE's: energies in eV, lengths in Å, forces in eV/Å, stresses in
eV/Å³ in Voigt order ``xx yy zz yz xz xy``, positive in tension.  Default
tolerances assume a float64 calculator with a smooth (at least C1) energy; a
float32 model needs looser ones (typically ``atol`` ~ 1e-3 eV/Å for forces).

Randomness only comes from ``rng`` arguments (a :class:`numpy.random.Generator`
or a seed, default ``np.random.default_rng(0)``); no global seeding.

Examples
--------
>>> from ase.build import bulk
>>> from ase.calculators.emt import EMT
>>> from ase_mlp.testing import check_calculator
>>> atoms = bulk("Cu", cubic=True) * (2, 2, 2)
>>> atoms.rattle(0.05, seed=1)
>>> report = check_calculator(atoms, EMT())  # raises AssertionError on failure
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.geometry import minkowski_reduce
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress


__all__ = [
    "check_batch",
    "check_calculator",
    "check_energies_sum",
    "check_forces",
    "check_invariance",
    "check_stress",
    "check_stresses_sum",
    "random_structures",
]

_XYZ = "xyz"
_VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")
_VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
# central finite-difference stencils: (step multiple, weight); derivative = sum(w E) / h
_STENCILS = {
    2: ((1, 0.5), (-1, -0.5)),
    4: ((2, -1.0 / 12.0), (1, 8.0 / 12.0), (-1, -8.0 / 12.0), (-2, 1.0 / 12.0)),
}


# ----------------------------------------------------------------------------- helpers
def _as_rng(rng) -> np.random.Generator:
    """``None`` -> ``default_rng(0)``; a Generator is returned unchanged; a seed is used."""
    return np.random.default_rng(0) if rng is None else np.random.default_rng(rng)


def _get_calc(atoms: Atoms, calc):
    if calc is None:
        calc = atoms.calc
    if calc is None:
        raise ValueError("no calculator: pass calc=... or attach one to atoms")
    return calc


def _prepare(atoms: Atoms, calc) -> Atoms:
    """A private copy of ``atoms`` without constraints, with ``calc`` attached."""
    if not isinstance(atoms, Atoms):
        raise TypeError(f"expected ase.Atoms, got {type(atoms).__name__}")
    work = atoms.copy()
    work.set_constraint()
    work.calc = calc
    return work


def _is_3d_periodic(atoms: Atoms) -> bool:
    return bool(np.all(atoms.pbc)) and atoms.cell.rank == 3


def _check_order(order: int) -> None:
    if order not in _STENCILS:
        raise ValueError(f"order must be 2 or 4, got {order!r}")


def _energy(atoms: Atoms, force_consistent: bool = False) -> float:
    return float(atoms.get_potential_energy(force_consistent=force_consistent))


def _forces(atoms: Atoms) -> np.ndarray:
    return np.array(atoms.get_forces(apply_constraint=False), dtype=float)


def _voigt(stress) -> np.ndarray:
    s = np.array(stress, dtype=float)
    if s.shape[-2:] == (3, 3):
        s = full_3x3_to_voigt_6_stress(s)
    return s


def _stress(atoms: Atoms) -> np.ndarray:
    return _voigt(atoms.get_stress(voigt=True, apply_constraint=False))


def _optional(fn: Callable[[], np.ndarray]):
    """``fn()``, or ``None`` when the calculator does not implement the property."""
    try:
        return fn()
    except NotImplementedError:  # includes ase's PropertyNotImplementedError
        return None


def _compare(got, ref, *, atol: float, rtol: float, what: str, unit: str,
             describe: Callable[[tuple], str]) -> tuple[dict, str | None]:
    """Element-wise ``|got - ref| <= atol + rtol * |ref|`` with a report.

    Returns ``(stats, message)``; ``message`` is ``None`` when all elements pass.
    """
    got = np.asarray(got, dtype=float)
    ref = np.asarray(ref, dtype=float)
    if got.shape != ref.shape:
        stats = {"max_abs_error": float("inf"), "rel_error": float("inf")}
        return stats, f"{what}: shape {got.shape} differs from reference shape {ref.shape}"
    diff = np.abs(got - ref)
    tol = atol + rtol * np.abs(ref)
    bad = ~(diff <= tol)  # NaN counts as bad
    max_abs = float(np.max(diff)) if diff.size else 0.0
    ref_norm = float(np.linalg.norm(ref))
    rel = float(np.linalg.norm(got - ref) / ref_norm) if ref_norm > 0 else (
        0.0 if max_abs == 0 else float("inf"))
    stats = {"max_abs_error": max_abs, "rel_error": rel}
    if not bad.any():
        return stats, None
    with np.errstate(divide="ignore", invalid="ignore"):
        score = diff / tol
    score = np.where(np.isnan(diff), np.inf, np.where(diff == 0, 0.0, score))
    worst = np.unravel_index(int(np.argmax(score)), score.shape) if score.ndim else ()
    g, r, d, t = (float(x[worst]) for x in (got, ref, diff, tol))
    msg = (f"{what}: {int(bad.sum())} of {bad.size} value(s) out of tolerance; worst "
           f"{describe(worst)}: got {g:.10g} {unit}, reference {r:.10g} {unit}, "
           f"|diff| = {d:.3e} > atol + rtol*|ref| = {t:.3e} (atol={atol:g}, rtol={rtol:g}); "
           f"max |diff| = {max_abs:.3e} {unit}")
    return stats, msg


def _atom_label(atoms: Atoms, indices=None) -> Callable[[tuple], str]:
    symbols = atoms.get_chemical_symbols()

    def describe(k: tuple) -> str:
        i = int(indices[k[0]]) if indices is not None else int(k[0])
        return f"atom {i} ({symbols[i]}) component {_XYZ[k[1]]}"

    return describe


def _atom_scalar_label(atoms: Atoms) -> Callable[[tuple], str]:
    symbols = atoms.get_chemical_symbols()
    return lambda k: f"atom {int(k[0])} ({symbols[int(k[0])]})"


def _voigt_label(k: tuple) -> str:
    return f"component {_VOIGT[k[-1]]}"


def _scalar_label(k: tuple) -> str:
    return "value"


def _select_indices(indices, n: int, rng) -> np.ndarray:
    if indices is None:
        return np.arange(n)
    if isinstance(indices, (int, np.integer)):
        k = int(indices)
        if k < 1:
            raise ValueError(f"indices as a count must be >= 1, got {k}")
        return np.sort(_as_rng(rng).choice(n, size=min(k, n), replace=False))
    idx = np.asarray(indices, dtype=int).ravel()
    if idx.size == 0:
        raise ValueError("indices is empty")
    if np.any(idx >= n) or np.any(idx < -n):
        raise IndexError(f"indices {idx.tolist()} out of range for {n} atoms")
    return idx % n


# ----------------------------------------------------------------------------- forces
def check_forces(atoms: Atoms, calc=None, *, h: float = 1e-4, order: int = 2,
                 atol: float = 1e-5, rtol: float = 1e-4, indices=None, rng=None,
                 force_consistent: bool = False) -> dict:
    """Check forces against central finite differences of the energy.

    For each selected atom ``i`` and Cartesian direction ``c`` the numerical
    force ``-dE/dx_ic`` is evaluated with a central stencil of step ``h`` and
    compared with ``calc``'s forces at the unperturbed geometry.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure (not modified).
    calc : Calculator, optional
        Calculator to test; default ``atoms.calc``.
    h : float
        Finite-difference step in Å.
    order : {2, 4}
        Accuracy order of the central stencil (2: two energies per component,
        truncation error ``h**2/6 E'''``; 4: four energies, ``h**4/30 E^(5)``).
    atol : float
        Absolute tolerance in eV/Å.  Default 1e-5: with ``h = 1e-4`` Å the
        second-order truncation error ``h**2/6 |d3E/dx3|`` is ~2e-7 eV/Å for a
        third derivative of 10 eV/Å³ (typical near equilibrium; ~1e-6 for strongly
        compressed bonds) and float64 round-off ``eps |E| / h`` is ~2e-9 eV/Å
        for ``|E| = 1000`` eV, so 1e-5 eV/Å leaves a margin of one to two decades
        while catching any real error (a 1% force error on a 0.1 eV/Å force is 1e-3).
    rtol : float
        Relative tolerance (to the numerical force); allows for the larger
        truncation error on very large forces.
    indices : None, int or sequence of int
        Atoms to check: all (``None``), that many atoms chosen at random with
        ``rng`` (``int``), or the given indices.
    rng : numpy.random.Generator or int, optional
        Used only when ``indices`` is an ``int``; default ``default_rng(0)``.
    force_consistent : bool
        Differentiate the free energy (``force_consistent=True``) instead of
        ``energy``, for calculators with electronic smearing.

    Returns
    -------
    dict
        ``max_abs_error`` (eV/Å), ``rel_error`` (norm of the difference over the
        norm of the numerical forces), ``worst_atom``, ``worst_component``,
        ``indices``, ``forces`` and ``numerical`` (``(len(indices), 3)``, eV/Å),
        ``h``, ``order``, ``atol``, ``rtol``.

    Raises
    ------
    AssertionError
        If any component differs by more than ``atol + rtol * |numerical|``.
    """
    calc = _get_calc(atoms, calc)
    _check_order(order)
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    work = _prepare(atoms, calc)
    n = len(work)
    if n == 0:
        raise ValueError("check_forces needs at least one atom")
    idx = _select_indices(indices, n, rng)
    forces = _forces(work)[idx]
    pos0 = work.positions.copy()
    numerical = np.empty((len(idx), 3))
    for k, i in enumerate(idx):
        for c in range(3):
            grad = 0.0
            for step, weight in _STENCILS[order]:
                pos = pos0.copy()
                pos[i, c] += step * h
                work.positions = pos
                grad += weight * _energy(work, force_consistent)
            numerical[k, c] = -grad / h
    stats, msg = _compare(forces, numerical, atol=atol, rtol=rtol, unit="eV/Å",
                          what=f"check_forces (central differences, order {order}, h={h:g} Å): "
                               "forces differ from -dE/dx",
                          describe=_atom_label(atoms, idx))
    diff = np.abs(forces - numerical)
    k, c = np.unravel_index(int(np.argmax(diff)), diff.shape)
    result = {**stats, "worst_atom": int(idx[k]), "worst_component": _XYZ[c],
              "indices": idx, "forces": forces, "numerical": numerical,
              "h": h, "order": order, "atol": atol, "rtol": rtol}
    if msg:
        raise AssertionError(msg)
    return result


# ----------------------------------------------------------------------------- stress
def check_stress(atoms: Atoms, calc=None, *, h: float = 1e-5, order: int = 2,
                 atol: float = 1e-6, rtol: float = 1e-5) -> dict:
    """Check the stress against a finite-difference strain derivative of the energy.

    ``sigma_ij = (1/V) dE/d(eps_ij)`` at zero strain, with the symmetric strain
    ``eps`` applied as ``cell' = cell (I + eps)`` and ``r' = r (I + eps)``; for
    off-diagonal components ``eps_ij = eps_ji = t/2`` and the derivative is taken
    with respect to the engineering shear ``t``.  ``V`` is the undeformed volume.
    The result is in ASE's Voigt order ``xx yy zz yz xz xy`` and sign convention
    (positive in tension, i.e. ``sigma = -virial / V``).

    Parameters
    ----------
    atoms : ase.Atoms
        A 3D periodic structure (not modified).
    calc : Calculator, optional
        Calculator to test; default ``atoms.calc``.
    h : float
        Strain step (dimensionless).
    order : {2, 4}
        Accuracy order of the central stencil.
    atol : float
        Absolute tolerance in eV/Å³ (1e-6 eV/Å³ = 0.16 MPa).  The truncation
        error ``h**2/6 |d3E/deps3| / V`` is ~1e-10 eV/Å³ for ``h = 1e-5`` and a
        third strain derivative per volume of ~10 eV/Å³ (several times the bulk
        modulus of a stiff metal), and round-off ``eps |E| / (h V)`` is ~1e-11
        eV/Å³ for an energy density of 0.5 eV/Å³, so 1e-6 is a safe float64 bound.
    rtol : float
        Relative tolerance (to the numerical stress).

    Returns
    -------
    dict
        ``max_abs_error`` (eV/Å³), ``rel_error``, ``worst_component``,
        ``stress`` and ``numerical`` (Voigt, eV/Å³), ``h``, ``order``, ``atol``, ``rtol``.

    Raises
    ------
    ValueError
        If the cell is not 3D periodic (the strain derivative of the energy of
        a molecule or slab is not a bulk stress).
    AssertionError
        If any component differs by more than ``atol + rtol * |numerical|``.
    """
    calc = _get_calc(atoms, calc)
    _check_order(order)
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    if not _is_3d_periodic(atoms):
        raise ValueError("check_stress needs a 3D periodic cell (all pbc True and three "
                         f"non-zero lattice vectors); got pbc={atoms.pbc.tolist()}, "
                         f"cell rank {atoms.cell.rank}")
    work = _prepare(atoms, calc)
    stress = _stress(work)
    cell0 = work.cell.array.copy()
    pos0 = work.positions.copy()
    volume = abs(np.linalg.det(cell0))
    numerical = np.empty(6)
    for v, (i, j) in enumerate(_VOIGT_PAIRS):
        grad = 0.0
        for step, weight in _STENCILS[order]:
            eps = np.zeros((3, 3))
            if i == j:
                eps[i, i] = step * h
            else:
                eps[i, j] = eps[j, i] = 0.5 * step * h
            deform = np.eye(3) + eps
            work.cell = cell0 @ deform
            work.positions = pos0 @ deform
            grad += weight * _energy(work)
        numerical[v] = grad / (h * volume)
    stats, msg = _compare(stress, numerical, atol=atol, rtol=rtol, unit="eV/Å³",
                          what=f"check_stress (strain derivative, order {order}, h={h:g}): "
                               "stress differs from (1/V) dE/deps",
                          describe=_voigt_label)
    worst = int(np.argmax(np.abs(stress - numerical)))
    result = {**stats, "worst_component": _VOIGT[worst], "stress": stress,
              "numerical": numerical, "h": h, "order": order, "atol": atol, "rtol": rtol}
    if msg:
        raise AssertionError(msg)
    return result


# ----------------------------------------------------------------------------- sums
def _missing(calc, prop: str, check: str, missing: str) -> dict:
    reason = (f"{type(calc).__name__} does not implement {prop!r} "
              f"(implemented_properties={list(getattr(calc, 'implemented_properties', []))}); "
              f"{check} does not apply")
    if missing == "skip":
        return {"skipped": True, "reason": reason}
    raise PropertyNotImplementedError(reason)


def _check_missing_arg(missing: str) -> None:
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', got {missing!r}")


def check_energies_sum(atoms: Atoms, calc=None, *, atol: float = 1e-8,
                       missing: str = "raise") -> dict:
    """Check that the per-atom ``energies`` sum to ``energy``.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure (not modified).
    calc : Calculator, optional
        Calculator to test; default ``atoms.calc``.
    atol : float
        Absolute tolerance in eV.  Summation round-off is ``~ N eps max|e_i|``,
        about 2e-10 eV for 1e5 atoms of 10 eV in float64.
    missing : {"raise", "skip"}
        What to do when the calculator has no ``energies``: raise
        :class:`ase.calculators.calculator.PropertyNotImplementedError` (a
        ``NotImplementedError``), or return ``{"skipped": True, "reason": ...}``.

    Returns
    -------
    dict
        ``energy``, ``sum`` (eV), ``error`` (``|sum - energy|``, eV), ``atol``.

    Raises
    ------
    AssertionError
        If ``|sum(energies) - energy| > atol``.
    """
    _check_missing_arg(missing)
    calc = _get_calc(atoms, calc)
    work = _prepare(atoms, calc)
    energies = _optional(lambda: np.array(work.get_potential_energies(), dtype=float))
    if energies is None:
        return _missing(calc, "energies", "check_energies_sum", missing)
    energy = _energy(work)
    if energies.shape != (len(work),):
        raise AssertionError(f"check_energies_sum: 'energies' has shape {energies.shape}, "
                             f"expected ({len(work)},)")
    total = float(np.sum(energies))
    error = abs(total - energy)
    result = {"energy": energy, "sum": total, "error": error, "atol": atol}
    if not error <= atol:
        k = int(np.argmax(np.abs(energies))) if len(energies) else 0
        raise AssertionError(
            f"check_energies_sum: sum of per-atom energies {total:.12g} eV != energy "
            f"{energy:.12g} eV (|diff| = {error:.3e} eV > atol = {atol:g} eV; "
            f"{len(energies)} atoms, largest |e_i| = {abs(energies[k]):.6g} eV at atom {k})")
    return result


def check_stresses_sum(atoms: Atoms, calc=None, *, atol: float = 1e-9,
                       missing: str = "raise") -> dict:
    """Check that the per-atom ``stresses`` sum to ``stress``.

    ASE's convention (used by :class:`ase.calculators.lj.LennardJones` and
    ``ase_mlp``'s calculators) is that per-atom stresses are contributions
    to the cell stress, already divided by the cell volume, so
    ``stresses.sum(axis=0) == stress`` (Voigt, eV/Å³).

    Parameters
    ----------
    atoms : ase.Atoms
        Structure with a 3D cell (not modified).
    calc : Calculator, optional
        Calculator to test; default ``atoms.calc``.
    atol : float
        Absolute tolerance in eV/Å³; float64 summation round-off of per-atom
        stresses of ~1e-2 eV/Å³ is far below 1e-9 for any practical size.
    missing : {"raise", "skip"}
        What to do when the calculator has no ``stresses``: raise
        :class:`ase.calculators.calculator.PropertyNotImplementedError`, or
        return ``{"skipped": True, "reason": ...}``.

    Returns
    -------
    dict
        ``stress``, ``sum`` (Voigt, eV/Å³), ``max_abs_error``, ``rel_error``,
        ``worst_component``, ``atol``.

    Raises
    ------
    ValueError
        If the cell does not have three non-zero lattice vectors.
    AssertionError
        If a component of ``sum(stresses) - stress`` exceeds ``atol``.
    """
    _check_missing_arg(missing)
    calc = _get_calc(atoms, calc)
    if atoms.cell.rank != 3:
        raise ValueError(f"check_stresses_sum needs a 3D cell, got cell rank {atoms.cell.rank}")
    work = _prepare(atoms, calc)
    stresses = _optional(lambda: _voigt(work.get_stresses(voigt=True)))
    if stresses is None:
        return _missing(calc, "stresses", "check_stresses_sum", missing)
    stress = _stress(work)
    if stresses.shape != (len(work), 6):
        raise AssertionError(f"check_stresses_sum: 'stresses' has shape {stresses.shape}, "
                             f"expected ({len(work)}, 6) (Voigt)")
    total = stresses.sum(axis=0)
    stats, msg = _compare(total, stress, atol=atol, rtol=0.0, unit="eV/Å³",
                          what="check_stresses_sum: sum of per-atom stresses != stress",
                          describe=_voigt_label)
    result = {"stress": stress, "sum": total, **stats,
              "worst_component": _VOIGT[int(np.argmax(np.abs(total - stress)))], "atol": atol}
    if msg:
        raise AssertionError(msg)
    return result


# ----------------------------------------------------------------------------- invariance
def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Haar-random proper rotation (det +1) from the QR decomposition of a Gaussian matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _evaluate(atoms: Atoms, want_stress: bool, want_energies: bool) -> dict:
    out = {"energy": _energy(atoms), "forces": _forces(atoms)}
    if want_stress:
        out["stress"] = _stress(atoms)
    if want_energies:
        out["energies"] = np.array(atoms.get_potential_energies(), dtype=float)
    return out


def check_invariance(atoms: Atoms, calc=None, *, rng=None, atol: float = 1e-8,
                     rtol: float = 1e-10,
                     transformations: Sequence[str] = ("rotation", "translation",
                                                       "permutation")) -> dict:
    """Check symmetry of the results under rigid motions and relabelling of atoms.

    Transformations (for each: energy, per-atom energies if implemented, forces,
    and stress for 3D periodic cells if implemented):

    ``rotation``
        A random proper rotation ``R`` applied to positions and cell: energy and
        per-atom energies invariant, forces ``F R^T`` (covariant), stress
        ``R s R^T``.
    ``translation``
        A random rigid translation (of the order of the cell size) without
        wrapping; for systems with any periodic direction additionally the same
        translation followed by wrapping into the cell, and a ``lattice_shift``
        moving every atom by a random integer combination (-1, 0 or 1) of the
        periodic lattice vectors.  Everything invariant.
    ``permutation``
        A random non-identity permutation of the atoms: energy and stress
        invariant, forces and per-atom energies permuted accordingly.

    Works for periodic, mixed and open boundary conditions.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure (not modified).
    calc : Calculator, optional
        Calculator to test; default ``atoms.calc``.
    rng : numpy.random.Generator or int, optional
        Source of the random transformations; default ``default_rng(0)``.
    atol : float
        Absolute tolerance, applied in each quantity's unit: eV for energies,
        eV/Å for forces, eV/Å³ for stresses.  Symmetry holds exactly in exact
        arithmetic; float64 re-ordering and rotation round-off is ~1e-13
        relative, so 1e-8 only fails for a genuine symmetry breaking (or a
        float32 model).
    rtol : float
        Relative tolerance (to the reference value), which covers round-off on
        large totals (e.g. energies of 1e5 eV).
    transformations : sequence of str
        Subset of ``("rotation", "translation", "permutation")`` to run.

    Returns
    -------
    dict
        One entry per transformation run (``rotation``, ``translation``,
        ``translation_wrapped``, ``lattice_shift``, ``permutation``), each a
        dict of maximum absolute errors per quantity; ``max_abs_error`` over
        all; ``rotation_matrix``, ``translation_vector``, ``permutation``.

    Raises
    ------
    AssertionError
        Listing every quantity and transformation that broke the symmetry.
    """
    known = ("rotation", "translation", "permutation")
    unknown = [t for t in transformations if t not in known]
    if unknown:
        raise ValueError(f"unknown transformations {unknown}; choose from {known}")
    calc = _get_calc(atoms, calc)
    rng = _as_rng(rng)
    work = _prepare(atoms, calc)
    n = len(work)
    if n == 0:
        raise ValueError("check_invariance needs at least one atom")
    want_stress = _is_3d_periodic(work) and _optional(lambda: _stress(work)) is not None
    want_energies = _optional(lambda: work.get_potential_energies()) is not None
    ref = _evaluate(work, want_stress, want_energies)
    pos0, cell0 = work.positions.copy(), work.cell.array.copy()

    def variant(positions=None, cell=None, order=None) -> Atoms:
        other = work[order] if order is not None else work.copy()
        other.set_constraint()
        if cell is not None:
            other.cell = cell
        if positions is not None:
            other.positions = positions
        other.calc = calc
        return other

    cases = []  # (name, atoms, expected dict)
    result: dict = {}
    if "rotation" in transformations:
        rot = _random_rotation(rng)
        expected = {"energy": ref["energy"], "forces": ref["forces"] @ rot.T}
        if want_stress:
            s = voigt_6_to_full_3x3_stress(ref["stress"])
            expected["stress"] = full_3x3_to_voigt_6_stress(rot @ s @ rot.T)
        if want_energies:
            expected["energies"] = ref["energies"]
        cases.append(("rotation", variant(pos0 @ rot.T, cell0 @ rot.T), expected))
        result["rotation_matrix"] = rot
    if "translation" in transformations:
        scale = max(5.0, float(np.max(np.linalg.norm(cell0, axis=1))))
        shift = rng.uniform(-1.0, 1.0, 3) * scale
        result["translation_vector"] = shift
        cases.append(("translation", variant(pos0 + shift), ref))
        if np.any(work.pbc):
            wrapped = variant(pos0 + shift)
            wrapped.wrap()
            cases.append(("translation_wrapped", wrapped, ref))
            images = rng.integers(-1, 2, size=(n, 3)) * work.pbc
            cases.append(("lattice_shift", variant(pos0 + images @ cell0), ref))
    if "permutation" in transformations:
        perm = rng.permutation(n)
        if n > 1 and np.all(perm == np.arange(n)):
            perm = np.roll(perm, 1)
        result["permutation"] = perm
        expected = {"energy": ref["energy"], "forces": ref["forces"][perm]}
        if want_stress:
            expected["stress"] = ref["stress"]
        if want_energies:
            expected["energies"] = ref["energies"][perm]
        cases.append(("permutation", variant(order=perm), expected))

    units = {"energy": "eV", "energies": "eV", "forces": "eV/Å", "stress": "eV/Å³"}
    failures = []
    overall = 0.0
    for name, other, expected in cases:
        got = _evaluate(other, want_stress, want_energies)
        errors = {}
        for key, exp in expected.items():
            if key == "forces":
                describe = _atom_label(other)
            elif key == "energies":
                describe = _atom_scalar_label(other)
            elif key == "stress":
                describe = _voigt_label
            else:
                describe = _scalar_label
            extra = (" (atom indices after the permutation)"
                     if name == "permutation" and key in ("forces", "energies") else "")
            stats, msg = _compare(got[key], exp, atol=atol, rtol=rtol, unit=units[key],
                                  what=f"{name}: {key} not {_EXPECTATION[key][name]}{extra}",
                                  describe=describe)
            errors[key] = stats["max_abs_error"]
            overall = max(overall, stats["max_abs_error"])
            if msg:
                failures.append(msg)
        result[name] = errors
    result["max_abs_error"] = overall
    if failures:
        raise AssertionError(f"check_invariance: {len(failures)} symmetry violation(s):\n  "
                             + "\n  ".join(failures))
    return result


_EXPECTATION = {
    "energy": dict.fromkeys(("rotation", "translation", "translation_wrapped",
                             "lattice_shift", "permutation"), "invariant"),
    "energies": {"rotation": "invariant", "translation": "invariant",
                 "translation_wrapped": "invariant", "lattice_shift": "invariant",
                 "permutation": "permuted with the atoms"},
    "forces": {"rotation": "rotated covariantly (F R^T)", "translation": "invariant",
               "translation_wrapped": "invariant", "lattice_shift": "invariant",
               "permutation": "permuted with the atoms"},
    "stress": {"rotation": "rotated as R s R^T", "translation": "invariant",
               "translation_wrapped": "invariant", "lattice_shift": "invariant",
               "permutation": "invariant"},
}


# ----------------------------------------------------------------------------- batch
def check_batch(images: Sequence[Atoms], calc, *, atol: float = 1e-12, rtol: float = 1e-12,
                properties: Sequence[str] = ("energy", "forces", "stress")) -> dict:
    """Check ``calc.calculate_batch`` against one-by-one evaluation.

    ``calc.calculate_batch(images, properties=[...])`` must return a list with
    one dict per structure whose keys are ASE result names (``energy`` in eV,
    ``forces`` ``(n, 3)`` eV/Å, ``stress`` Voigt eV/Å³, ...); every requested
    property is compared with ``calc.get_property(name, atoms)`` on a copy of
    the structure.  ``stress`` and ``stresses`` are only compared for
    structures whose cell has three non-zero lattice vectors.  The batch call
    must not modify the images it is given.

    Parameters
    ----------
    images : sequence of ase.Atoms
        Structures (not modified); mixing sizes is encouraged.
    calc : Calculator
        A calculator with a ``calculate_batch(images, properties)`` method.
    atol, rtol : float
        Element-wise tolerance ``atol + rtol * |single|`` (in each property's
        unit).  Batched and single evaluations of a float64 model differ only
        by summation order, i.e. by a few ulps: 1e-12 absolute plus 1e-12
        relative (which matters for energies of many atoms).
    properties : sequence of str
        ASE property names to request and compare.

    Returns
    -------
    dict
        ``n_structures``, ``properties``, ``max_abs_error`` (per property, over
        all structures), ``per_structure`` (list of dicts of per-property max
        absolute errors).

    Raises
    ------
    TypeError
        If ``calc`` has no ``calculate_batch`` method.
    AssertionError
        On a wrong number of results, a missing property, a changed input, or
        any value out of tolerance (message names structure, atom, component).
    """
    batch = getattr(calc, "calculate_batch", None)
    if not callable(batch):
        raise TypeError(f"{type(calc).__name__} has no calculate_batch(images, properties) "
                        "method; check_batch only applies to batch-capable calculators")
    images = list(images)
    properties = list(properties)
    inputs = []
    for atoms in images:
        if not isinstance(atoms, Atoms):
            raise TypeError(f"images must be ase.Atoms, got {type(atoms).__name__}")
        copy = atoms.copy()
        copy.set_constraint()
        inputs.append(copy)
    results = batch(inputs, properties=properties)
    results = list(results) if results is not None else []
    if len(results) != len(images):
        raise AssertionError(f"check_batch: calculate_batch returned {len(results)} result(s) "
                             f"for {len(images)} structure(s)")
    failures = []
    for k, (atoms, copy) in enumerate(zip(images, inputs, strict=True)):
        if (len(copy) != len(atoms) or not np.array_equal(copy.positions, atoms.positions)
                or not np.array_equal(copy.cell.array, atoms.cell.array)
                or not np.array_equal(copy.numbers, atoms.numbers)):
            failures.append(f"structure {k}: calculate_batch modified its input Atoms")
    units = {"energy": "eV", "free_energy": "eV", "energies": "eV", "forces": "eV/Å",
             "stress": "eV/Å³", "stresses": "eV/Å³"}
    per_structure = []
    max_err = dict.fromkeys(properties, 0.0)
    for k, (atoms, res) in enumerate(zip(images, results, strict=True)):
        errors = {}
        if not isinstance(res, dict):
            failures.append(f"structure {k}: result is {type(res).__name__}, expected dict")
            per_structure.append(errors)
            continue
        single = _prepare(atoms, calc)
        for prop in properties:
            if prop in ("stress", "stresses") and atoms.cell.rank != 3:
                continue
            if prop not in res:
                failures.append(f"structure {k} ({atoms.get_chemical_formula()}): batch "
                                f"result lacks {prop!r} (keys {sorted(res)})")
                continue
            ref = np.asarray(calc.get_property(prop, single), dtype=float)
            got = np.asarray(res[prop], dtype=float)
            if prop in ("stress", "stresses"):
                ref, got = _voigt(ref), _voigt(got)
            if prop in ("forces",):
                describe = _atom_label(atoms)
            elif prop in ("energies", "stresses", "magmoms", "charges"):
                symbols = atoms.get_chemical_symbols()

                def describe(i, symbols=symbols):
                    s = f"atom {int(i[0])} ({symbols[int(i[0])]})" if i else "value"
                    return s + (f" {_VOIGT[i[1]]}" if len(i) > 1 else "")
            elif prop == "stress":
                describe = _voigt_label
            else:
                describe = _scalar_label
            stats, msg = _compare(
                got, ref, atol=atol, rtol=rtol, unit=units.get(prop, ""),
                what=f"structure {k} ({atoms.get_chemical_formula()}) "
                     f"property {prop!r}: batch differs from single evaluation",
                describe=describe)
            errors[prop] = stats["max_abs_error"]
            max_err[prop] = max(max_err[prop], stats["max_abs_error"])
            if msg:
                failures.append(msg)
        per_structure.append(errors)
    if failures:
        raise AssertionError(f"check_batch: {len(failures)} failure(s):\n  "
                             + "\n  ".join(failures))
    return {"n_structures": len(images), "properties": properties,
            "max_abs_error": max_err, "per_structure": per_structure}


# ----------------------------------------------------------------------------- everything
_CHECKS = ("forces", "stress", "energies_sum", "stresses_sum", "invariance", "batch")


def _split_options(options: dict) -> dict:
    out = {name: {} for name in _CHECKS}
    for key, value in options.items():
        # longest check name first so that "stresses_sum_atol" is not read as "stress..."
        for name in sorted(_CHECKS, key=len, reverse=True):
            if key.startswith(name + "_"):
                out[name][key[len(name) + 1:]] = value
                break
        else:
            raise TypeError(f"unexpected keyword {key!r}: options must be named "
                            f"<check>_<argument> with <check> in {_CHECKS}, e.g. 'forces_atol'")
    return out


def check_calculator(atoms: Atoms, calc, *, batch_images: Sequence[Atoms] | None = None,
                     rng=None, **tolerances) -> dict:
    """Run every applicable check on one structure.

    Always: :func:`check_forces` and :func:`check_invariance`.  When the cell
    is 3D periodic and ``stress`` is implemented: :func:`check_stress`.  When
    ``energies`` is implemented: :func:`check_energies_sum`; when the cell is
    3D periodic and ``stresses`` is implemented: :func:`check_stresses_sum`.
    When ``calc`` has ``calculate_batch`` (or ``batch_images`` is given):
    :func:`check_batch` on ``batch_images``, by default ``atoms``, a rattled
    copy and its first half (different sizes).  All checks are run; the
    failures are reported together.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure (not modified).
    calc : Calculator
        Calculator to test.
    batch_images : sequence of ase.Atoms, optional
        Structures for :func:`check_batch`.
    rng : numpy.random.Generator or int, optional
        Randomness for the invariance check and the default batch images;
        default ``default_rng(0)``.
    **tolerances
        Options forwarded to the individual checks, named
        ``<check>_<argument>`` with ``<check>`` one of ``forces``, ``stress``,
        ``energies_sum``, ``stresses_sum``, ``invariance``, ``batch``; e.g.
        ``forces_atol=1e-4, stress_atol=1e-5, forces_indices=8, batch_atol=1e-10``.

    Returns
    -------
    dict
        One entry per check run (its result dict), and ``skipped``: a dict
        mapping each check not run to the reason.

    Raises
    ------
    AssertionError
        If any check failed; the message contains every failure.
    TypeError
        If ``batch_images`` is given but ``calc`` has no ``calculate_batch``,
        or for an unknown option name.
    """
    calc = _get_calc(atoms, calc)
    options = _split_options(tolerances)
    rng = _as_rng(rng)
    probe = _prepare(atoms, calc)
    periodic = _is_3d_periodic(probe)
    has_stress = periodic and _optional(lambda: _stress(probe)) is not None
    has_energies = _optional(lambda: probe.get_potential_energies()) is not None
    has_stresses = periodic and _optional(lambda: probe.get_stresses()) is not None
    has_batch = callable(getattr(calc, "calculate_batch", None))
    if batch_images is not None and not has_batch:
        raise TypeError(f"batch_images given but {type(calc).__name__} has no "
                        "calculate_batch(images, properties) method")
    name = type(calc).__name__
    skipped = {}
    plan = [("forces", lambda: check_forces(atoms, calc, rng=rng, **options["forces"]))]
    if has_stress:
        plan.append(("stress", lambda: check_stress(atoms, calc, **options["stress"])))
    else:
        skipped["stress"] = ("cell is not 3D periodic" if not periodic
                             else f"{name} does not implement 'stress'")
    if has_energies:
        plan.append(("energies_sum",
                     lambda: check_energies_sum(atoms, calc, **options["energies_sum"])))
    else:
        skipped["energies_sum"] = f"{name} does not implement 'energies'"
    if has_stresses:
        plan.append(("stresses_sum",
                     lambda: check_stresses_sum(atoms, calc, **options["stresses_sum"])))
    else:
        skipped["stresses_sum"] = ("cell is not 3D periodic" if not periodic
                                   else f"{name} does not implement 'stresses'")
    plan.append(("invariance",
                 lambda: check_invariance(atoms, calc, rng=rng, **options["invariance"])))
    if has_batch:
        if batch_images is None:
            rattled = atoms.copy()
            rattled.positions += rng.normal(scale=0.02, size=rattled.positions.shape)
            batch_images = [atoms, rattled, atoms[: max(1, len(atoms) // 2)]]
        batch_opts = dict(options["batch"])
        if "properties" not in batch_opts:
            props = ["energy", "forces"]
            if has_stress and all(im.cell.rank == 3 for im in batch_images):
                props.append("stress")
            batch_opts["properties"] = props
        plan.append(("batch", lambda: check_batch(batch_images, calc, **batch_opts)))
    else:
        skipped["batch"] = f"{name} has no calculate_batch method"

    report: dict = {}
    failures = []
    for check, run in plan:
        try:
            report[check] = run()
        except AssertionError as err:
            failures.append(f"[{check}] {err}")
    report["skipped"] = skipped
    if failures:
        raise AssertionError(f"check_calculator({name}): {len(failures)} of {len(plan)} "
                             "check(s) failed:\n" + "\n".join(failures))
    return report


# ----------------------------------------------------------------------------- structures
def _random_cell(rng: np.random.Generator, volume: float, distortion: float) -> np.ndarray:
    deform = np.eye(3) + rng.uniform(-distortion, distortion, (3, 3))
    return deform * (volume / np.linalg.det(deform)) ** (1.0 / 3.0)


def _place_atoms(rng: np.random.Generator, cell: np.ndarray, pbc: np.ndarray, natoms: int,
                 min_distance: float, max_attempts: int, block: int = 32):
    """Random sequential addition with minimum-image distances; ``None`` on failure.

    Distances use a Minkowski-reduced basis of the periodic directions, in which
    wrapping the fractional difference and scanning the 3**k neighbouring images
    finds the minimum image exactly (as :func:`ase.geometry.find_mic` does).
    """
    rcell, _ = minkowski_reduce(cell, pbc) if pbc.any() else (cell, None)
    inv = np.linalg.inv(rcell)
    shifts = np.array(list(itertools.product(*[(-1, 0, 1) if p else (0,) for p in pbc])))
    shifts = shifts @ rcell  # (m, 3) Cartesian image shifts
    positions = np.empty((natoms, 3))
    count = failed = 0
    while count < natoms:
        cand = rng.random((block, 3)) @ cell
        if count == 0 or min_distance <= 0:
            positions[count] = cand[0]
            count += 1
            continue
        frac = (cand[:, None, :] - positions[None, :count]) @ inv
        frac[..., pbc] -= np.round(frac[..., pbc])
        diff = (frac @ rcell)[:, :, None, :] + shifts  # (block, count, m, 3)
        dist = np.sqrt(np.einsum("bcmx,bcmx->bcm", diff, diff)).min(axis=(1, 2))
        ok = np.flatnonzero(dist >= min_distance)
        if ok.size:
            positions[count] = cand[ok[0]]
            count += 1
            failed = 0
        else:
            failed += block
            if failed >= max_attempts:
                return None
    return positions


def random_structures(elements: Sequence[str], n: int, *, rng=None,
                      sizes: tuple[int, int] = (1, 16), density: float = 0.05,
                      pbc=True, min_distance: float = 2.0, distortion: float = 0.25,
                      max_attempts: int = 2000) -> list[Atoms]:
    """Random test structures: mixed sizes, triclinic cells, disordered positions.

    Each structure gets a number of atoms drawn uniformly from ``sizes``
    (inclusive), a triclinic cell ``(I + U) * scale`` with ``U`` uniform in
    ``[-distortion, distortion]`` scaled to the volume ``n_atoms / density``,
    and atoms placed at random (random sequential addition: a fully "rattled"
    amorphous arrangement) such that no two atoms, including periodic images,
    are closer than ``min_distance``; for periodic cells the shortest lattice
    vector is also at least ``min_distance``.  Species are drawn from
    ``elements``; every element occurs when there are enough atoms.

    Parameters
    ----------
    elements : sequence of str
        Chemical symbols.
    n : int
        Number of structures.
    rng : numpy.random.Generator or int, optional
        Source of randomness; default ``default_rng(0)``.
    sizes : (int, int)
        Inclusive range of the number of atoms.
    density : float
        Number density in atoms/Å³ (fcc Cu: 0.085, liquid Ar: 0.021).  The
        default 0.05 with ``min_distance = 2`` Å is a hard-sphere packing
        fraction of 0.21, easily reached by random placement.
    pbc : bool or sequence of 3 bool
        Periodic boundary conditions; with ``False`` the atoms form a cluster
        inside the (still triclinic) box.
    min_distance : float
        Minimum interatomic distance in Å.
    distortion : float
        Maximum off-identity entry of the cell deformation (0 gives cubes).
    max_attempts : int
        Random trials per atom before the structure is restarted (after 20
        restarts a :class:`RuntimeError` suggests a lower ``density``).

    Returns
    -------
    list of ase.Atoms
    """
    rng = _as_rng(rng)
    elements = list(elements)
    if not elements:
        raise ValueError("elements is empty")
    lo, hi = (int(s) for s in sizes)
    if not 1 <= lo <= hi:
        raise ValueError(f"sizes must satisfy 1 <= min <= max, got {sizes}")
    if not density > 0 or not min_distance >= 0 or not 0 <= distortion < 0.5:
        raise ValueError("need density > 0, min_distance >= 0 and 0 <= distortion < 0.5")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    out = []
    for _ in range(int(n)):
        natoms = int(rng.integers(lo, hi + 1))
        for _restart in range(20):
            cell = _random_cell(rng, natoms / density, distortion)
            if pbc.any() and min_distance > 0:
                reduced, _ = minkowski_reduce(cell, pbc)
                if np.min(np.linalg.norm(reduced[pbc], axis=1)) < min_distance:
                    continue
            positions = _place_atoms(rng, cell, pbc, natoms, min_distance, max_attempts)
            if positions is not None:
                break
        else:
            raise RuntimeError(f"could not place {natoms} atoms at density {density} "
                               f"atoms/Å³ with min_distance {min_distance} Å; lower the "
                               "density or min_distance")
        if natoms >= len(elements):
            symbols = elements + list(rng.choice(elements, natoms - len(elements)))
            symbols = [str(symbols[i]) for i in rng.permutation(natoms)]
        else:
            symbols = [str(s) for s in rng.choice(elements, natoms)]
        out.append(Atoms(symbols, positions=positions, cell=cell, pbc=pbc))
    return out


# ----------------------------------------------------------------------------- model files
def make_deepmd_se(path, *, type_map: Sequence[str] = ("O", "H"),
                   sel: Sequence[int] = (20, 40), rcut: float = 4.0, rcut_smth: float = 1.0,
                   neuron: Sequence[int] = (4, 8, 16), axis_neuron: int = 4,
                   fitting_neuron: Sequence[int] = (16, 16), resnet_dt: bool = True,
                   fitting_resnet_dt: bool = True, type_one_side: bool = True,
                   activation: str = "tanh", atom_ener: Sequence[float | None] | None = None,
                   seed: int = 0, out_scale: float = 1.0) -> str:
    """Write a random DeePot-SE (``se_e2_a`` + energy fitting) ``.dp`` file; return its path.

    The model is made by deepmd-kit's NumPy backend (``deepmd.dpmodel``) from a standard
    input config (``neuron``: embedding nets, ``fitting_neuron``: fitting nets,
    ``resnet_dt`` / ``fitting_resnet_dt``: their time-step layers, ``atom_ener``: the
    fitting's per-type vacuum energies), and written by deepmd's own serialisation. A
    freshly built model has near-zero statistics and biases, so the weights and statistics
    are drawn from ``np.random.default_rng(seed)``: weights ``N(0, 1/n_in)`` (the output
    layers, one column, scaled by ``out_scale``: a gentler energy surface for MD), biases
    ``N(0, 0.5^2)``, time steps ``N(0.5, 0.2^2)``, atomic energy biases ``N(-3, 1)``, and a
    different ``davg``/``dstd`` per (centre type, neighbour section), constant over the
    slots of a section as deepmd's statistics are. Same arguments, same file contents.

    Needs ``pip install deepmd-kit h5py`` (both are in the ``test`` extra).
    """
    try:
        from deepmd.dpmodel.model.model import get_model
        from deepmd.dpmodel.utils.serialization import save_dp_model
    except ImportError as err:
        raise ImportError("make_deepmd_se needs deepmd-kit's NumPy backend (deepmd.dpmodel) "
                          f"and h5py: pip install deepmd-kit h5py ({err})") from err
    sel = [int(s) for s in sel]
    if len(sel) != len(type_map):
        raise ValueError(f"sel needs one entry per type of type_map {list(type_map)}, "
                         f"got {sel}")
    cfg = {"type_map": list(type_map),
           "descriptor": {"type": "se_e2_a", "sel": sel, "rcut_smth": float(rcut_smth),
                          "rcut": float(rcut), "neuron": list(neuron),
                          "resnet_dt": bool(resnet_dt), "axis_neuron": int(axis_neuron),
                          "type_one_side": bool(type_one_side),
                          "activation_function": activation, "precision": "float64",
                          "seed": seed},
           "fitting_net": {"neuron": list(fitting_neuron),
                           "resnet_dt": bool(fitting_resnet_dt), "precision": "float64",
                           "activation_function": activation, "seed": seed}}
    if atom_ener is not None:
        cfg["fitting_net"]["atom_ener"] = list(atom_ener)
    data = get_model(cfg).serialize()
    rng = np.random.default_rng(seed)

    def randomise(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                node[k] = randomise(v, k)
        elif isinstance(node, list):
            return [randomise(v, key) for v in node]
        elif isinstance(node, np.ndarray) and node.dtype.kind == "f":
            if key == "w":
                scale = out_scale if node.shape[1] == 1 else 1.0
                return rng.normal(0.0, scale / np.sqrt(node.shape[0]), node.shape)
            if key == "idt":
                return rng.normal(0.5, 0.2, node.shape)
            if key == "b":
                return rng.normal(0.0, 0.5, node.shape)
            if key in ("bias_atom_e", "out_bias"):
                return rng.normal(-3.0, 1.0, node.shape)
        return node

    randomise(data)
    desc = data["descriptor"]["@variables"]
    cum = np.concatenate([[0], np.cumsum(sel)])
    for ti in range(desc["davg"].shape[0]):
        for tj in range(len(sel)):
            section = slice(cum[tj], cum[tj + 1])
            desc["davg"][ti, section] = np.r_[rng.uniform(0.05, 0.3), rng.normal(0, 0.02, 3)]
            desc["dstd"][ti, section] = rng.uniform(0.1, 0.4, 4)
    save_dp_model(str(path), {"model": data, "model_def_script": cfg})
    return str(path)


__all__ += ["make_deepmd_se"]
