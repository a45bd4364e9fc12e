"""Defect formation energy versus a static field, on a toy rock-salt ionic model.

The toy: Morse wells between unlike ions, Born-Mayer repulsion between like ions (cosine
switch to zero at 6 Å), charges +-1 in the field coupling only. Checks:

* zero field: the plain relaxed formation energy;
* a vacancy (centrosymmetric): ``E_f(E) - E_f(0) = -1/2 E.(alpha_def - alpha_prist).E`` with
  the ionic polarisabilities ``alpha = q~^T H^+ q~`` from finite-difference Hessians, even in
  E and quadratic (the sign is that of the field energy: without it the change would be
  +1/2 E.dalpha.E);
* a Na-Cl divacancy (polar): the linear term ``-E.dP_0`` from the dipole of its own relaxation
  with ``reference="initial"``, absent with ``reference="relaxed"``.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list
from ase.optimize import BFGS

from ase_mlp.workflows import defect_energy_vs_field


Q = {"Na": 1.0, "Cl": -1.0}
MU = {"Na": -1.0, "Cl": -2.0}
E1 = 0.01                                                       # V/Å = 1 MV/cm


class IonicToy(Calculator):
    """Unlike pairs ``D [(1 - e^{-a(r - r0)})^2 - 1]``, like pairs ``B e^{-r/rho}``, both times
    a cosine switch from ``r_on`` to ``rc``; rock salt with a = 2 r0 is stable."""

    implemented_properties = ("energy", "free_energy", "forces")

    def __init__(self, D=0.5, a=1.2, r0=2.8, B=300.0, rho=0.5, r_on=4.5, rc=6.0, **kw):
        super().__init__(**kw)
        self.p = (D, a, r0, B, rho, r_on, rc)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        D, a, r0, B, rho, r_on, rc = self.p
        i, j, d, vec = neighbor_list("ijdD", self.atoms, rc)
        z = self.atoms.numbers
        unlike = z[i] != z[j]
        ex = np.exp(-a * (d - r0))
        rep = B * np.exp(-d / rho)
        v = np.where(unlike, D * ((1 - ex) ** 2 - 1), rep)
        dv = np.where(unlike, 2 * D * a * (1 - ex) * ex, -rep / rho)
        x = np.clip((d - r_on) / (rc - r_on), 0.0, 1.0)
        s = 0.5 * (1 + np.cos(np.pi * x))
        ds = -0.5 * np.pi / (rc - r_on) * np.sin(np.pi * x)
        g = 0.5 * (dv * s + v * ds)[:, None] * vec / d[:, None]   # each pair listed twice
        f = np.zeros((len(self.atoms), 3))
        np.add.at(f, i, g)
        np.add.at(f, j, -g)
        e = 0.5 * float(np.sum(v * s))
        self.results = {"energy": e, "free_energy": e, "forces": f}


def host():
    return bulk("NaCl", "rocksalt", a=5.6, cubic=True).repeat((2, 1, 1))   # 16 atoms


def relaxed(atoms, calc):
    a = atoms.copy()
    a.calc = calc
    BFGS(a, logfile=None).run(fmax=1e-7, steps=1000)
    return a


def polarizability(atoms, calc, h=1e-4):
    """``q~^T H^+ q~`` (e² Å² / eV) at the relaxed positions, ``q~ = q - mean(q)``."""
    a = relaxed(atoms, calc)
    n = len(a)
    p0 = a.positions.copy()
    H = np.zeros((3 * n, 3 * n))
    for k in range(3 * n):
        for sign in (1, -1):
            p = p0.copy()
            p.flat[k] += sign * h
            a.positions = p
            H[k] -= sign * a.get_forces().ravel() / (2 * h)
    H = 0.5 * (H + H.T)
    q = np.array([Q[s] for s in a.get_chemical_symbols()])
    qt = np.kron((q - q.mean())[:, None], np.eye(3))
    return qt.T @ np.linalg.pinv(H, rcond=1e-8) @ qt


@pytest.fixture(scope="module")
def vacancy():
    prist = host()
    vac = prist.copy()
    del vac[0]                                                   # Na vacancy: charge -1
    calc = IonicToy()
    res = defect_energy_vs_field(prist, vac, calc, Q, [0.0, E1, -E1, 2 * E1],
                                 directions=["x", "y"], chemical_potentials=MU, fmax=1e-6)
    return prist, vac, calc, res


def test_zero_field_is_the_plain_formation_energy(vacancy):
    prist, vac, calc, res = vacancy
    e_p = relaxed(prist, calc).get_potential_energy()
    e_d = relaxed(vac, calc).get_potential_energy()
    plain = e_d - e_p + MU["Na"]                                # one Na removed
    assert res.delta_n == {"Na": -1}
    assert res.chemical_potential_term == pytest.approx(-MU["Na"])
    assert res.formation_energy_zero_field == pytest.approx(plain, abs=1e-9)
    np.testing.assert_allclose(res.formation_energy[:, 0], plain, atol=1e-9)
    assert np.abs(res.field_energy_defective[:, 0]).max() == 0.0
    assert res.formation_energy.shape == (2, 4)


def test_centrosymmetric_vacancy_is_quadratic_linear_response(vacancy):
    prist, vac, calc, res = vacancy
    d = res.formation_energy - res.formation_energy[:, :1]
    np.testing.assert_allclose(d[:, 1], d[:, 2], rtol=1e-4)      # even in E
    np.testing.assert_allclose(d[:, 3] / d[:, 1], 4.0, rtol=2e-3)
    dalpha = polarizability(vac, calc) - polarizability(prist, calc)
    for k, e in enumerate(res.directions):
        pred = -0.5 * E1**2 * e @ dalpha @ e
        assert d[k, 1] == pytest.approx(pred, rel=2e-3), res.directions[k]
    assert abs(d[0, 1] - d[1, 1]) > 0.5 * abs(d[0, 1])            # tetragonal cell: anisotropic
    # the induced dipoles are linear in E, along E (x and y are principal axes here)
    dip = res.dipole_defective
    np.testing.assert_allclose(dip[:, 2], -dip[:, 1], rtol=1e-3, atol=1e-9)
    assert dip[0, 1, 0] > 0 and abs(dip[0, 1, 1]) < 1e-6 * dip[0, 1, 0]


def test_polar_divacancy_has_a_linear_term():
    prist = host()
    div = prist.copy()
    del div[[0, 1]]                                              # Na at 0, Cl at (2.8, 0, 0)
    calc = IonicToy()
    q = np.array([Q[s] for s in div.get_chemical_symbols()])
    dP0 = q @ (relaxed(div, calc).positions - div.positions)     # relaxation dipole, along x
    assert abs(dP0[0]) > 0.01 and np.abs(dP0[1:]).max() < 1e-8
    res = {}
    for ref in ("initial", "relaxed"):
        res[ref] = defect_energy_vs_field(prist, div, calc, Q, [0.0, E1, -E1], directions="x",
                                          chemical_potentials=MU, fmax=1e-6, reference=ref)
    d = res["initial"].formation_energy[0]
    odd = 0.5 * (d[1] - d[2])
    assert odd == pytest.approx(-E1 * dP0[0], rel=2e-3)
    np.testing.assert_allclose(res["initial"].dipole_defective[0, 0], dP0, atol=1e-6)
    d = res["relaxed"].formation_energy[0]
    assert abs(0.5 * (d[1] - d[2])) < 1e-3 * abs(odd)            # only E^3 left
    assert res["relaxed"].formation_energy_zero_field == pytest.approx(
        res["initial"].formation_energy_zero_field, abs=1e-9)


def test_bad_inputs():
    prist = host()
    vac = prist.copy()
    del vac[0]
    calc = IonicToy()
    kw = dict(chemical_potentials=MU, directions="x")
    with pytest.raises(ValueError, match="chemical_potentials needed"):
        defect_energy_vs_field(prist, vac, calc, Q, [0.01], directions="x")
    with pytest.raises(ValueError, match="V/Å"):
        defect_energy_vs_field(prist, vac, calc, Q, [1e8], **kw)          # V/m
    with pytest.raises(ValueError, match="reference"):
        defect_energy_vs_field(prist, vac, calc, Q, [0.01], reference="ideal", **kw)
    with pytest.raises(ValueError, match="defective cell: charges has shape"):
        defect_energy_vs_field(prist, vac, calc, (np.ones(16), np.ones(16)), [0.01], **kw)
    with pytest.raises(ValueError, match="same cell"):
        defect_energy_vs_field(prist, host().repeat((1, 2, 1)), calc, Q, [0.01], **kw)
    with pytest.raises(ValueError, match="direction"):
        defect_energy_vs_field(prist, vac, calc, Q, [0.01], chemical_potentials=MU,
                               directions=["q"])
    with pytest.raises(RuntimeError, match="not relaxed"):
        defect_energy_vs_field(prist, vac, calc, Q, [0.01], fmax=1e-9, steps=2, **kw)
