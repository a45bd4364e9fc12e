"""Equation of state and elastic constants from stresses, with any ASE calculator.

* :func:`evaluate_many` evaluates a list of structures, in batches when the calculator has
  a ``calculate_batch`` method (:class:`ase_mlp.calculators.MLPCalculator`), otherwise one
  by one.
* :func:`equation_of_state` fits ``E(V)`` of isotropically scaled cells with
  :class:`ase.eos.EquationOfState`.
* :func:`elastic_constants` fits the 6x6 Voigt stiffness matrix to the stress-strain
  relation of a set of small homogeneous strains.

Units: energies in eV, lengths in Å, volumes in Å^3, moduli and stresses in GPa. Strains
use Voigt order ``xx, yy, zz, yz, xz, xy`` (as ASE's stress) with *engineering* shear
strains (the tensor off-diagonal element is half the Voigt component).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from ase import Atoms, units


_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_EOS_WITH_BPRIME = ("birchmurnaghan", "birch", "murnaghan", "vinet", "pouriertarantola")


# -----------------------------------------------------------------------------
# evaluation
# -----------------------------------------------------------------------------
def evaluate_many(
    images: Sequence[Atoms],
    calc,
    properties: Sequence[str] = ("energy", "stress"),
    *,
    batch_size: int = 64,
) -> list[dict]:
    """Evaluate ``properties`` for many structures.

    Parameters
    ----------
    images : sequence of ase.Atoms
        Structures; they are not modified and no calculator is attached to them.
    calc : calculator
        If it has a ``calculate_batch(images, properties)`` method (e.g.
        :class:`~ase_mlp.calculators.MLPCalculator`) the structures are evaluated in
        chunks of ``batch_size``; otherwise any ASE calculator is attached to a copy of
        each structure in turn.
    properties : sequence of str
        ASE property names (``"energy"``, ``"forces"``, ``"stress"``, ...).
    batch_size : int
        Number of structures per ``calculate_batch`` call.

    Returns
    -------
    list of dict
        One dict per structure with the requested ``properties`` (arrays are copies).
    """
    images = list(images)
    properties = tuple(properties)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results = []
    if hasattr(calc, "calculate_batch"):
        for start in range(0, len(images), batch_size):
            chunk = calc.calculate_batch(images[start:start + batch_size], properties)
            for r in chunk:
                results.append({p: _copy(r[p]) for p in properties if p in r})
        return results
    for atoms in images:
        work = atoms.copy()
        work.calc = calc
        results.append({p: _copy(calc.get_property(p, work)) for p in properties})
    return results


def _copy(value):
    return np.array(value, dtype=float) if isinstance(value, np.ndarray) else float(value)


def _strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    """Copy of ``atoms`` with the cell deformed to ``cell @ (I + eps)`` (atoms follow)."""
    new = atoms.copy()
    new.calc = None
    new.set_cell(np.asarray(atoms.cell) @ (np.eye(3) + eps), scale_atoms=True)
    return new


# -----------------------------------------------------------------------------
# equation of state
# -----------------------------------------------------------------------------
def equation_of_state(
    atoms: Atoms,
    calc,
    *,
    strains: Sequence[float] = np.linspace(-0.04, 0.04, 9),  # noqa: B008 (read-only)
    eos: str = "birchmurnaghan",
) -> dict:
    """Energy-volume equation of state of isotropically scaled copies of ``atoms``.

    Each lattice vector is scaled by ``1 + s`` for ``s`` in ``strains`` (atoms follow,
    ``scale_atoms=True``; no internal relaxation), all structures are evaluated with
    :func:`evaluate_many` and ``E(V)`` is fitted with :class:`ase.eos.EquationOfState`.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic reference structure (left untouched).
    calc : calculator
        Any ASE calculator, or one with ``calculate_batch``.
    strains : sequence of float
        Linear strains ``s`` (volume ``V (1 + s)^3``).
    eos : str
        Equation-of-state form known to :class:`ase.eos.EquationOfState`.

    Returns
    -------
    dict
        ``v0`` (equilibrium volume of the *whole cell*, Å^3), ``v0_per_atom`` (Å^3/atom),
        ``e0`` (cell energy at ``v0``, eV), ``e0_per_atom`` (eV/atom), ``B`` (bulk modulus,
        GPa), ``Bprime`` (its pressure derivative, for the forms that have one), ``a_scale``
        (factor ``(v0 / V)^(1/3)`` to apply to the cell of ``atoms``), ``volumes`` (cell,
        Å^3), ``energies`` (cell, eV) and ``eos``.
    """
    from ase.eos import EquationOfState

    strains = np.asarray(strains, dtype=float)
    images = [_strained(atoms, s * np.eye(3)) for s in strains]
    res = evaluate_many(images, calc, ("energy",))
    volumes = np.array([a.get_volume() for a in images])
    energies = np.array([r["energy"] for r in res])
    fit = EquationOfState(volumes, energies, eos=eos)
    v0, e0, bulk = fit.fit()
    n = len(atoms)
    out = {
        "v0": float(v0),
        "v0_per_atom": float(v0) / n,
        "e0": float(e0),
        "e0_per_atom": float(e0) / n,
        "B": float(bulk) / units.GPa,
        "a_scale": float((v0 / atoms.get_volume()) ** (1.0 / 3.0)),
        "volumes": volumes,
        "energies": energies,
        "eos": eos,
    }
    if eos in _EOS_WITH_BPRIME:
        out["Bprime"] = float(fit.eos_parameters[2])
    return out


# -----------------------------------------------------------------------------
# elastic constants
# -----------------------------------------------------------------------------
def voigt_strain_tensor(j: int, eps: float) -> np.ndarray:
    """Symmetric strain tensor of Voigt component ``j`` (0..5) with value ``eps``.

    Shear components (``j >= 3``) are engineering strains: the two off-diagonal tensor
    elements are ``eps / 2``.
    """
    a, b = _VOIGT[j]
    e = np.zeros((3, 3))
    if a == b:
        e[a, a] = eps
    else:
        e[a, b] = e[b, a] = 0.5 * eps
    return e


def _linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares ``y = c + m x`` for each column of ``y``: intercepts, slopes, std errors."""
    xm = x.mean()
    dx = x - xm
    sxx = float(dx @ dx)
    slope = dx @ (y - y.mean(0)) / sxx
    intercept = y.mean(0) - slope * xm
    resid = y - intercept - np.outer(x, slope)
    dof = len(x) - 2
    err = np.sqrt((resid**2).sum(0) / dof / sxx) if dof > 0 else np.full(y.shape[1], np.nan)
    return intercept, slope, err


def _is_cubic(C: np.ndarray, rtol: float) -> bool:
    tol = rtol * np.abs(C).max()
    diag, off, shear = np.diag(C)[:3], C[:3, :3][~np.eye(3, dtype=bool)], np.diag(C)[3:]
    rest = C.copy()
    rest[:3, :3] = 0.0
    rest[3:, 3:] -= np.diag(shear)
    return bool(np.ptp(diag) < tol and np.ptp(off) < tol and np.ptp(shear) < tol
                and np.abs(rest).max() < tol)


def elastic_constants(
    atoms: Atoms,
    calc,
    *,
    delta: float = 0.005,
    n: int = 5,
    relax_ions: bool = False,
    fmax: float = 1e-4,
    steps: int = 500,
    cubic_rtol: float = 1e-2,
) -> dict:
    """Elastic stiffness matrix from linear fits of stress against strain.

    For each Voigt component ``j`` the strains ``eps`` in ``linspace(-delta, delta, n)``
    are applied as ``cell @ (I + e)`` (``e`` from :func:`voigt_strain_tensor`, engineering
    shear; atoms follow with ``scale_atoms=True``). All ``6 n`` stresses are evaluated in
    one :func:`evaluate_many` call, and each column is fitted as
    ``sigma_i = sigma0_i + C_ij eps_j``. ASE's stress is positive in tension
    (``sigma = (1/V) dE/d(eps)``), so ``C_ij = d sigma_i / d eps_j`` with that sign (C11 > 0
    for a stable crystal). The matrix is returned as fitted (column ``j`` from strain
    ``j``), not symmetrised.

    Parameters
    ----------
    atoms : ase.Atoms
        Reference structure, normally relaxed (positions and cell). A warning is issued if
        ``max |stress| > 0.1 GPa`` (the constants then refer to a prestressed state, where
        stress-strain and energy-strain derivatives differ by stress terms) or if
        ``max |force| > 10 fmax``.
    calc : calculator
        Any ASE calculator, or one with ``calculate_batch``.
    delta : float
        Largest strain magnitude.
    n : int
        Number of strains per component (>= 3 for standard errors; odd includes 0).
    relax_ions : bool
        Relax the atomic positions at fixed strained cell with :class:`ase.optimize.BFGS`
        to ``fmax`` (relaxed-ion constants). The relaxations run one structure at a time
        (no batching); only the final stresses are evaluated together. Not needed when
        every atom is an inversion centre (e.g. fcc/bcc metals).
    fmax : float
        Force threshold (eV/Å) for ``relax_ions`` and the reference-force check.
    steps : int
        Maximum BFGS steps per relaxation.
    cubic_rtol : float
        Relative tolerance (of ``max |C_ij|``) for recognising cubic symmetry.

    Returns
    -------
    dict
        ``C`` (6x6, GPa), ``C_err`` (6x6 standard errors of the slopes, GPa), ``strains``
        (the ``n`` strain values), ``stresses`` (array ``(6, n, 6)``: strained component,
        strain, Voigt stress in GPa), ``reference_stress`` (GPa), ``bulk_modulus`` (Voigt
        average ``(C11+C22+C33 + 2 (C12+C13+C23)) / 9``, GPa), ``cubic`` (bool), and when
        cubic: ``C11``, ``C12``, ``C44`` (averages over the equivalent entries, GPa); for
        cubic crystals ``bulk_modulus = (C11 + 2 C12) / 3``.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    strains = np.linspace(-delta, delta, n)
    images = [atoms.copy()]
    images[0].calc = None
    images += [_strained(atoms, voigt_strain_tensor(j, eps)) for j in range(6) for eps in strains]

    ref = evaluate_many(images[:1], calc, ("forces", "stress"))[0]
    ref_stress = np.asarray(ref["stress"]) / units.GPa
    smax = float(np.abs(ref_stress).max())
    if smax > 0.1:
        warnings.warn(
            f"reference structure not relaxed: residual stress {smax:.3g} GPa; elastic "
            "constants refer to a prestressed state", stacklevel=2)
    f_ref = float(np.linalg.norm(ref["forces"], axis=1).max()) if len(atoms) else 0.0
    if f_ref > 10 * fmax:
        warnings.warn(
            f"reference structure not relaxed: max force {f_ref:.3g} eV/Å > 10 fmax",
            stacklevel=2)

    strained = images[1:]
    if relax_ions:
        strained = [_relax_positions(a, calc, fmax, steps) for a in strained]
    res = evaluate_many(strained, calc, ("stress",))
    stresses = np.array([r["stress"] for r in res]).reshape(6, n, 6) / units.GPa

    C = np.zeros((6, 6))
    C_err = np.zeros((6, 6))
    for j in range(6):
        _, C[:, j], C_err[:, j] = _linear_fit(strains, stresses[j])

    out = {
        "C": C,
        "C_err": C_err,
        "strains": strains,
        "stresses": stresses,
        "reference_stress": ref_stress,
        "bulk_modulus": float((np.trace(C[:3, :3]) + 2 * (C[0, 1] + C[0, 2] + C[1, 2])) / 9),
        "cubic": _is_cubic(C, cubic_rtol),
    }
    if out["cubic"]:
        out["C11"] = float(np.mean(np.diag(C)[:3]))
        out["C12"] = float(np.mean([C[0, 1], C[0, 2], C[1, 2], C[1, 0], C[2, 0], C[2, 1]]))
        out["C44"] = float(np.mean(np.diag(C)[3:]))
    return out


def _relax_positions(atoms: Atoms, calc, fmax: float, steps: int) -> Atoms:
    from ase.optimize import BFGS

    work = atoms.copy()
    work.calc = calc
    opt = BFGS(work, logfile=None)
    if not opt.run(fmax=fmax, steps=steps):
        raise RuntimeError(f"elastic_constants: ionic relaxation not converged in {steps} steps")
    work.calc = None
    return work
