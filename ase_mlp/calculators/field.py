"""A calculator wrapper adding a *static* uniform electric field (``docs/methods.md`` 3.1, 3.3).

For relaxations under a field; time-dependent fields belong in
:class:`~ase_mlp.dynamics.FieldDrivenMD` (ASE's calculator cache ignores time).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ase_mlp.dynamics.fields import FieldCoupling, as_field


__all__ = ["FieldCalculator"]


# -----------------------------------------------------------------------------
# static-field calculator (relaxations)
# -----------------------------------------------------------------------------
class FieldCalculator(Calculator):
    """Wrap a calculator with a *static* uniform field (for relaxations, not for MD).

    Forces ``F_i + F_ext,i`` and energy ``E + U`` with ``U = -Σ_i F_ext,i·(r_i - r0_i)``
    (3.3), ``F_ext,i = q_i E`` or ``Z*_iᵀ E``. Positions are used as stored, never wrapped:
    keep them unwrapped (ASE optimizers and MD do not wrap). With ``reference_positions=None``
    (``r0 = 0``) this is LAMMPS ``fix efield``'s ``U = -q E·x`` (unwrapped ``x``); for a
    neutral set of charges ``U`` does not depend on the origin. The stress is the wrapped
    calculator's, unchanged: the field term carries no stress (as LAMMPS'
    ``fix_modify virial no`` default), so relax positions only, at fixed cell.

    Time-dependent fields are refused: ASE caches results by positions and cell, not by
    time, so they would go stale; use :class:`FieldDrivenMD`.

    Parameters
    ----------
    calc : ase Calculator
        The field-free calculator.
    field : StaticField or array (3,)
        V/Å.
    charges, born_charges, acoustic_sum_rule
        As :class:`FieldCoupling` (resolved on the atoms of each calculation).
    reference_positions : None or array (N, 3)
        ``r0`` (default: the origin).
    remove_net_force : bool
        Subtract the mean external force from every atom (the compensating uniform
        background of a charged periodic cell; a relaxation of a charged cell in a field
        does not converge otherwise). No effect when ``Σ q = 0`` (or ``Σ Z* = 0``).
    max_field : float, optional
        Bound on ``|E|`` (V/Å) for a vector field (default 10 V/Å).
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(self, calc, field, *, charges=None, born_charges=None,
                 acoustic_sum_rule=True, reference_positions=None, remove_net_force=False,
                 max_field=None, **kwargs):
        super().__init__(**kwargs)
        if calc is None or not hasattr(calc, "get_property"):
            raise ValueError(f"calc must be an ASE calculator, got {calc!r}")
        field = as_field(field, max_field=max_field)
        if not field.static:
            raise ValueError("FieldCalculator takes a static field only: ASE's calculator cache "
                             "ignores time, so a time-dependent field would give stale "
                             "forces; use ase_mlp.dynamics.FieldDrivenMD")
        self.calc = calc
        self.field_vector = field(0.0)
        self.charges = charges
        self.born_charges = born_charges
        self.acoustic_sum_rule = acoustic_sum_rule
        self.reference_positions = (None if reference_positions is None
                                    else np.array(reference_positions, dtype=float))
        self.remove_net_force = bool(remove_net_force)

    def external_forces(self, atoms) -> np.ndarray:
        """``F_ext`` (eV/Å) on ``atoms`` (net force removed if requested)."""
        coupling = FieldCoupling(atoms, self.charges, self.born_charges,
                                 acoustic_sum_rule=self.acoustic_sum_rule)
        F = coupling.forces(self.field_vector)
        if self.remove_net_force:
            F = F - F.mean(axis=0)
        return F

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        n = len(atoms)
        r0 = np.zeros((n, 3)) if self.reference_positions is None else self.reference_positions
        if r0.shape != (n, 3):
            raise ValueError(f"reference_positions has shape {r0.shape}, expected ({n}, 3)")
        fext = self.external_forces(atoms)
        u = -float(np.sum(fext * (atoms.positions - r0)))
        energy = self.calc.get_potential_energy(atoms)
        try:
            free = self.calc.get_potential_energy(atoms, force_consistent=True)
        except Exception:
            free = energy
        self.results = {"energy": energy + u, "free_energy": free + u,
                        "forces": self.calc.get_forces(atoms) + fext, "field_energy": u}
        if "stress" in properties:
            self.results["stress"] = self.calc.get_stress(atoms)

    def get_field_energy(self, atoms=None) -> float:
        """``U = -Σ F_ext,i·(r_i - r0_i)`` (eV) of the last (or this) calculation."""
        self.get_potential_energy(atoms)
        return self.results["field_energy"]
