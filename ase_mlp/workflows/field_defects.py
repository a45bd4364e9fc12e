"""Defect formation energy versus a static applied field (relaxation under a field).

:func:`defect_energy_vs_field` relaxes the positions of a pristine and a defective cell
under uniform fields ``E = E_k ê_d`` (magnitudes ``fields`` along ``directions``) with
:class:`ase_mlp.dynamics.FieldCalculator` around any ASE calculator, and tabulates

``E_f(E) = H_def(E) - H_prist(E) - Σ_s Δn_s μ_s``,  ``H(E) = min_r [E_pot(r) + U(r)]``,

with ``U = -Σ_i F_ext,i·(r_i - r_ref,i)`` the field energy (methods 3.3) and ``Δn_s`` the
number of atoms of element ``s`` in the defective cell minus the pristine one.

Reference positions ``r_ref`` (what "zero field energy" means):

* ``reference="initial"`` (default): the structures as passed in. Give the ideal lattice and
  the *unrelaxed* defect cut from it (same origin): ``U`` then includes the dipole of the
  defect's own relaxation, ``-E·ΔP_0``, the linear term of ``E_f(E)``, which vanishes by
  symmetry for a centrosymmetric defect (``E_f`` is then quadratic at small field,
  ``-½ E·Δα·E``, with ``Δα`` the difference of the ionic polarisabilities).
* ``reference="relaxed"``: each cell's zero-field relaxed positions: only the field-induced
  relaxation counts (``E_f`` is quadratic at small field for any defect).

The permanent dipole of a periodic cell (origin-dependent for a charged cell, multivalued
for a neutral one) never enters. A charged cell (``Σ q ≠ 0`` after removing or adding ions
with fixed charges) would be pushed bodily by the field; with ``remove_net_force=True``
(default) the mean external force is removed from every atom, the force on the compensating
uniform background. No charge-state corrections (``q E_F``, image charges) are applied.
Relaxations are of positions only, at fixed cell: the field term carries no stress.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from ase_mlp.calculators.field import FieldCalculator
from ase_mlp.dynamics.fields import FieldCoupling, _check_max_field, _direction
from ase_mlp.workflows.phases import _optimizer_class


__all__ = ["FieldDefectResult", "defect_energy_vs_field"]


@dataclass
class FieldDefectResult:
    """Output of :func:`defect_energy_vs_field`; arrays are ``(n_directions, n_fields)``.

    Attributes
    ----------
    fields : (n_fields,) magnitudes (V/Å); directions : (n_directions, 3) unit vectors.
    formation_energy : ``E_f(E)`` (eV).
    formation_energy_zero_field : ``E_f(0)`` (eV), from the field-free relaxations.
    energy_pristine, energy_defective : ``H(E) = E_pot + U`` at the relaxed positions (eV).
    field_energy_pristine, field_energy_defective : the ``U`` parts (eV).
    dipole_pristine, dipole_defective : (..., 3) ``ΔP = Σ q̃_i (r_i - r_ref,i)`` (e·Å), with
        ``q̃`` the charges less the net-force correction.
    chemical_potential_term : ``Σ_s Δn_s μ_s`` (eV). delta_n : {element: Δn}.
    reference : ``"initial"`` or ``"relaxed"``.
    """

    fields: np.ndarray
    directions: np.ndarray
    formation_energy: np.ndarray
    formation_energy_zero_field: float
    energy_pristine: np.ndarray
    energy_defective: np.ndarray
    field_energy_pristine: np.ndarray
    field_energy_defective: np.ndarray
    dipole_pristine: np.ndarray
    dipole_defective: np.ndarray
    chemical_potential_term: float
    delta_n: dict = field(default_factory=dict)
    reference: str = "initial"


def _charges_pair(charges, pristine, defective):
    if charges is None or isinstance(charges, Mapping):
        return charges, charges
    if isinstance(charges, tuple) and len(charges) == 2:
        return charges
    raise ValueError("charges must be None (initial charges), a dict {symbol: charge} or a "
                     "tuple (charges_pristine, charges_defective)")


def _relax(atoms, calc, E, charges, r_ref, remove_net_force, opt_cls, fmax, steps, what):
    fc = FieldCalculator(calc, E, charges=charges, reference_positions=r_ref,
                         remove_net_force=remove_net_force, max_field=np.inf)
    atoms.calc = fc
    opt = opt_cls(atoms, logfile=None)
    if not opt.run(fmax=fmax, steps=steps):
        g = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
        raise RuntimeError(f"defect_energy_vs_field: {what} not relaxed in {steps} steps at "
                           f"E = {np.round(E, 6).tolist()} V/Å: max force {g:.3g} eV/Å "
                           f"(fmax {fmax:g}); raise steps or loosen fmax")
    return atoms.get_potential_energy(), fc.get_field_energy(atoms)


def defect_energy_vs_field(pristine: Atoms, defective: Atoms, calc, charges, fields, *,
                           directions: Sequence = ("z",), reference: str = "initial",
                           chemical_potentials: Mapping[str, float] | None = None,
                           remove_net_force: bool = True, fmax: float = 1e-4,
                           steps: int = 1000, optimizer="BFGS",
                           max_field: float | None = None) -> FieldDefectResult:
    """Defect formation energy versus a static field along chosen directions.

    Parameters
    ----------
    pristine, defective : ase.Atoms
        The host cell and the defective cell (same cell; left untouched).
    calc : ase Calculator, or a callable returning one
        Field-free energies and forces (any ASE calculator; shared by both cells).
    charges : None, dict {symbol: charge} or (array, array)
        Fixed charges (e) of the field coupling: per element for both cells, one array per
        cell, or ``None`` for each cell's ``get_initial_charges()``.
    fields : sequence of float
        Field magnitudes (V/Å, signed); ``0`` may be included.
    directions : sequence of "x" / "y" / "z" / 3-vectors
        Field directions (normalised).
    reference : {"initial", "relaxed"}
        Positions at which the field energy is zero (see the module docstring).
    chemical_potentials : dict {symbol: μ (eV)}, optional
        Needed for every element whose count differs between the cells.
    remove_net_force : bool
        Remove the mean external force (uniform compensating background of charged cells).
    fmax, steps, optimizer
        Relaxation settings (``optimizer``: a name in :mod:`ase.optimize` or a class).
    max_field : float, optional
        Bound on ``|E|`` (V/Å, default 10).

    Returns
    -------
    FieldDefectResult

    Raises
    ------
    RuntimeError
        If a relaxation does not reach ``fmax`` within ``steps``.
    """
    if reference not in ("initial", "relaxed"):
        raise ValueError(f"reference must be 'initial' or 'relaxed', got {reference!r}")
    mags = np.atleast_1d(np.asarray(fields, dtype=float))
    if mags.ndim != 1 or not np.all(np.isfinite(mags)):
        raise ValueError("fields must be a 1D sequence of finite magnitudes (V/Å)")
    limit = _check_max_field(max_field)
    if np.abs(mags).max(initial=0.0) > limit:
        raise ValueError(f"|E| = {np.abs(mags).max():g} V/Å exceeds max_field = {limit:g} V/Å; "
                         f"fields are in V/Å (1 MV/cm = 0.01 V/Å); pass max_field= to allow it")
    if isinstance(directions, str):
        directions = [directions]
    dirs = np.array([_direction(d) for d in directions])
    if len(dirs) == 0:
        raise ValueError("directions must not be empty")
    if not np.allclose(pristine.cell.array, defective.cell.array, atol=1e-8):
        raise ValueError("pristine and defective cells must have the same cell")
    q_p, q_d = _charges_pair(charges, pristine, defective)
    for atoms, q, name in ((pristine, q_p, "pristine"), (defective, q_d, "defective")):
        try:
            FieldCoupling(atoms, q)                              # validate early
        except ValueError as exc:
            raise ValueError(f"{name} cell: {exc}") from None
    if calc is not None and not hasattr(calc, "get_property") and callable(calc):
        calc = calc()
    opt_cls = _optimizer_class(optimizer)

    n_p = Counter(pristine.get_chemical_symbols())
    n_d = Counter(defective.get_chemical_symbols())
    delta_n = {s: n_d[s] - n_p[s] for s in sorted(set(n_p) | set(n_d)) if n_d[s] != n_p[s]}
    mu = dict(chemical_potentials or {})
    missing = [s for s in delta_n if s not in mu]
    if missing:
        raise ValueError(f"chemical_potentials needed for {missing} (atom counts differ by "
                         f"{ {s: delta_n[s] for s in missing} })")
    mu_term = float(sum(dn * mu[s] for s, dn in delta_n.items()))

    zero = np.zeros(3)
    base = {}
    for key, atoms0, q in (("p", pristine, q_p), ("d", defective, q_d)):
        a = atoms0.copy()
        e0, _ = _relax(a, calc, zero, q, None, remove_net_force, opt_cls, fmax, steps,
                       "pristine cell" if key == "p" else "defective cell")
        r_ref = atoms0.positions.copy() if reference == "initial" else a.positions.copy()
        base[key] = (a.positions.copy(), r_ref, q, atoms0)
    shape = (len(dirs), len(mags))
    out = {k: np.zeros(shape) for k in ("Hp", "Hd", "Up", "Ud")}
    dip = {k: np.zeros(shape + (3,)) for k in ("p", "d")}
    for i, d in enumerate(dirs):
        for j, m in enumerate(mags):
            E = m * d
            for key in ("p", "d"):
                r_start, r_ref, q, atoms0 = base[key]
                a = atoms0.copy()
                a.positions = r_start
                h, u = _relax(a, calc, E, q, r_ref, remove_net_force, opt_cls, fmax, steps,
                              "pristine cell" if key == "p" else "defective cell")
                out["H" + key][i, j] = h
                out["U" + key][i, j] = u
                coupling = FieldCoupling(a, q)
                disp = a.positions - r_ref
                dP = coupling.dipole(disp)
                if remove_net_force:
                    dP = dP - coupling.net_charge * disp.mean(axis=0)
                dip[key][i, j] = dP
    ef = out["Hd"] - out["Hp"] - mu_term

    # zero-field formation energy (plain relaxations, field energy relative to r_ref)
    ef0 = []
    for key in ("p", "d"):
        r_start, r_ref, q, atoms0 = base[key]
        a = atoms0.copy()
        a.positions = r_start
        a.calc = calc
        ef0.append(a.get_potential_energy())
    return FieldDefectResult(
        fields=mags, directions=dirs, formation_energy=ef,
        formation_energy_zero_field=float(ef0[1] - ef0[0] - mu_term),
        energy_pristine=out["Hp"], energy_defective=out["Hd"],
        field_energy_pristine=out["Up"], field_energy_defective=out["Ud"],
        dipole_pristine=dip["p"], dipole_defective=dip["d"],
        chemical_potential_term=mu_term, delta_n=delta_n, reference=reference)
