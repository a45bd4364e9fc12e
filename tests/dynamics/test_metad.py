"""Cell metadynamics (methods.md section 2.7, tests M1-M4) and its bookkeeping."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_mlp.dynamics import CellMetadynamics
from ase_mlp.dynamics.metad import (
    bias_gradient,
    bias_value,
    cell_from_cv,
    cv_force,
    cv_from_cell,
    driving_force,
    metastep_walk,
)


PERTURB = np.array([[0.02, 0.01, -0.01], [0.0, 0.03, 0.02], [0.01, -0.02, 0.0]])
M2_REF = np.array([[0.057935, -0.085361, -0.094074],
                   [-0.095046, 0.053517, -0.104104],
                   [-0.090152, -0.084576, 0.066292]])


def _cu_m2():
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.set_cell(atoms.cell.array + PERTURB, scale_atoms=True)
    atoms.calc = EMT()
    return atoms


def _enthalpy(atoms, cell, P):
    b = atoms.copy()
    b.calc = EMT()
    b.set_cell(cell, scale_atoms=True)
    return b.get_potential_energy() + P * b.get_volume()


# ----------------------------------------------------------------------------- M1
def test_m1_bias_sum_and_gradient():
    W, ds = 0.3, 0.07
    rng = np.random.default_rng(3)
    sk = rng.normal(size=6)
    assert bias_value(sk, [sk], W, ds) == pytest.approx(W, rel=1e-14)
    u = rng.normal(size=6)
    u /= np.linalg.norm(u)
    assert bias_value(sk + ds * u, [sk], W, ds) == pytest.approx(W * np.exp(-0.5), rel=1e-12)
    assert W * np.exp(-0.5) == pytest.approx(0.606531 * W, rel=1e-6)
    assert bias_value(sk + 50 * ds * u, [sk], W, ds) < 1e-300
    assert bias_value(sk, np.zeros((0, 6)), W, ds) == 0.0
    # several Gaussians: gradient against central differences
    centers = sk + 1.5 * ds * rng.normal(size=(5, 6))
    s = sk + 0.5 * ds * rng.normal(size=6)
    g = bias_gradient(s, centers, W, ds)
    h = 1e-5 * ds
    fd = np.array([(bias_value(s + h * e, centers, W, ds)
                    - bias_value(s - h * e, centers, W, ds)) / (2 * h) for e in np.eye(6)])
    assert np.linalg.norm(g) > 0.1 * W / ds
    np.testing.assert_allclose(g, fd, rtol=1e-8, atol=1e-8 * np.abs(g).max())


# ----------------------------------------------------------------------------- M2
def test_m2_driving_force_reference_and_fd():
    atoms = _cu_m2()
    P = 5.0 * units.GPa
    A = atoms.cell.array.copy()
    assert atoms.get_volume() == pytest.approx(11.535673, abs=2e-6)
    H = atoms.get_potential_energy() + P * atoms.get_volume()
    assert H == pytest.approx(0.354047, abs=2e-6)
    F = driving_force(A, -atoms.get_stress(voigt=False), P)
    np.testing.assert_allclose(F, M2_REF, atol=1e-6)
    # Voigt input gives the same
    np.testing.assert_allclose(driving_force(A, -atoms.get_stress(), P), F, atol=1e-14)
    eps = 1e-5
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            Ap, Am = A.copy(), A.copy()
            Ap[i, j] += eps
            Am[i, j] -= eps
            fd[i, j] = -(_enthalpy(atoms, Ap, P) - _enthalpy(atoms, Am, P)) / (2 * eps)
    assert np.abs(F - fd).max() < 1e-6
    # the transposed (column-convention) formula is wrong by ~0.02 eV/Å
    wrong = atoms.get_volume() * (-atoms.get_stress(voigt=False) - P * np.eye(3)) \
        @ np.linalg.inv(A).T
    assert np.abs(wrong - fd).max() > 1e-2


def test_m2_sign_compressed_cell_expands():
    atoms = bulk("Cu", "fcc", a=3.45)          # EMT a0 = 3.59: strongly compressed
    atoms.calc = EMT()
    v0 = atoms.get_volume()
    dyn = CellMetadynamics(atoms, pressure=0.0, thermostat=None, gaussian_height=0.01,
                           gaussian_width=0.02, rng=0)
    dyn.run(1)
    assert atoms.get_volume() > v0 + 0.5 * 0.02 * v0 / 3.45
    # and a stretched one contracts
    atoms = bulk("Cu", "fcc", a=3.75)
    atoms.calc = EMT()
    v0 = atoms.get_volume()
    CellMetadynamics(atoms, pressure=0.0, thermostat=None, gaussian_height=0.01,
                     gaussian_width=0.02, rng=0).run(1)
    assert atoms.get_volume() < v0


# ----------------------------------------------------------------------------- CVs
@pytest.mark.parametrize("mode", ["triangular", "symmetric"])
def test_cv_round_trip_and_force(mode):
    atoms = _cu_m2()
    rot = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    rot *= np.sign(np.linalg.det(rot))                  # proper rotation
    A = atoms.cell.array @ rot.T                        # rotated lattice vectors
    s = cv_from_cell(A, mode)
    C = cell_from_cv(s, mode)
    # same metric (rotation removed), same CVs back
    np.testing.assert_allclose(C @ C.T, A @ A.T, atol=1e-12)
    np.testing.assert_allclose(cv_from_cell(C, mode), s, atol=1e-12)
    if mode == "triangular":
        assert np.allclose(np.triu(C, 1), 0.0)
    else:
        np.testing.assert_allclose(C, C.T, atol=1e-14)
    # CV force from the rotated cell vs finite differences of G(cell_from_cv(s))
    P = 3.0 * units.GPa
    b = atoms.copy()
    b.calc = EMT()
    b.set_cell(A, scale_atoms=True)
    phi = cv_force(A, driving_force(A, -b.get_stress(voigt=False), P), mode)
    h = 1e-5
    fd = np.array([-(_enthalpy(atoms, cell_from_cv(s + h * e, mode), P)
                     - _enthalpy(atoms, cell_from_cv(s - h * e, mode), P)) / (2 * h)
                   for e in np.eye(6)])
    assert np.abs(phi).max() > 0.02
    assert np.abs(phi - fd).max() < 1e-6


# ----------------------------------------------------------------------------- M4
def _toy_grad(s, dg=1.0, k=2.0):
    return np.array([4 * dg * s[0] * (s[0] ** 2 - 1), k * s[1]])


@pytest.mark.parametrize("W, crossing, bias_ref", [(0.1, 116, 0.90), (0.2, 102, 0.76)])
def test_m4_toy_fes_crossing(W, crossing, bias_ref):
    path, norms = metastep_walk(_toy_grad, [-0.95, 0.02], W, 0.1, 500)
    assert np.all(np.isfinite(path))
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    np.testing.assert_allclose(steps, 0.1, rtol=1e-12)           # |s_{t+1} - s_t| = ds
    t = int(np.argmax(path[:, 0] > 0))
    assert path[t, 0] > 0 and t <= 500
    assert t == crossing                                           # methods 2.7 reference
    bias = bias_value([-1.0, 0.0], path[:t], W, 0.1)
    assert 0.5 <= bias <= 1.5
    assert bias == pytest.approx(bias_ref, abs=0.01)


def test_m4_guard_at_exact_minimum():
    path, norms = metastep_walk(_toy_grad, [-1.0, 0.0], 0.1, 0.1, 20, rng=5)
    assert norms[0] == 0.0
    assert np.all(np.isfinite(path))
    assert np.linalg.norm(path[1] - path[0]) == pytest.approx(0.1, rel=1e-12)
    # the guard only acts at |phi| < eps: without Gaussians the plain step is along -grad G
    path, _ = metastep_walk(_toy_grad, [-0.95, 0.02], 0.1, 0.1, 1)
    d = path[1] - path[0]
    g = -_toy_grad(np.array([-0.95, 0.02]))
    np.testing.assert_allclose(d, 0.1 * g / np.linalg.norm(g), rtol=1e-12)


# ----------------------------------------------------------------------------- M3
@pytest.mark.parametrize("strain", [-0.02, 0.02])
def test_m3_walker_goes_to_equilibrium(strain):
    a0 = 3.5898                                   # EMT Cu (|dE/da| ~ 0 within 1e-3 Å)
    ref = bulk("Cu", "fcc", a=a0)
    s_eq = cv_from_cell(ref.cell.array, "triangular")
    atoms = bulk("Cu", "fcc", a=a0 * (1 + strain))
    atoms.calc = EMT()
    ds = 0.01
    dyn = CellMetadynamics(atoms, pressure=0.0, thermostat=None, gaussian_height=1e-9,
                           gaussian_width=ds, rng=0)
    dyn.run(30)
    dist = [np.linalg.norm(np.array(h["cv"]) - s_eq) for h in dyn.history]
    assert dist[0] > 5 * ds
    assert np.all(np.diff(dist[:5]) < 0)          # moves toward equilibrium
    assert max(dist[-10:]) < 1.5 * ds              # then oscillates around it
    vols = np.array([h["volume"] for h in dyn.history[-10:]])
    assert np.all(np.abs(vols - ref.get_volume()) < 0.02 * ref.get_volume())


# ----------------------------------------------------------------------------- class
def _cu_md(seed=7):
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True)
    atoms.rattle(0.02, seed=seed)
    atoms.calc = EMT()
    return atoms


def _dyn(atoms, **kw):
    args = dict(pressure_GPa=2.0, temperature_K=300.0, gaussian_height=0.02,
                gaussian_width=0.03, md_steps=6, discard=0.5, timestep=2.0 * units.fs,
                friction=0.02 / units.fs, rng=np.random.default_rng(11))
    args.update(kw)
    return CellMetadynamics(atoms, **args)


def test_restart_equals_unsplit(tmp_path):
    a_full = _cu_md()
    full = _dyn(a_full)
    full.run(6)
    a1 = _cu_md()
    first = _dyn(a1)
    first.run(3)
    first.save_state(tmp_path / "state.npz")
    a2 = _cu_md()
    second = _dyn(a2, rng=np.random.default_rng(999))   # state comes from the file
    second.load_state(tmp_path / "state.npz")
    second.run(3)
    assert second.nsteps == full.nsteps == 6
    assert np.array_equal(a2.positions, a_full.positions)
    assert np.array_equal(a2.get_momenta(), a_full.get_momenta())
    assert np.array_equal(a2.cell.array, a_full.cell.array)
    assert np.array_equal(second.centers, full.centers)
    assert second.history == full.history
    # the run did something
    assert len(full.centers) == 6
    assert not np.allclose(full.history[0]["cv"], full.history[-1]["cv"])
    # a checkpoint from another set-up is refused
    other = _dyn(_cu_md(), gaussian_width=0.05)
    with pytest.raises(ValueError, match="gaussian|width"):
        other.load_state(tmp_path / "state.npz")


def test_history_log_and_trajectory(tmp_path):
    from ase.io import read

    atoms = _cu_md()
    log = tmp_path / "metad.log"
    traj = tmp_path / "metad.traj"
    dyn = _dyn(atoms, logfile=log, trajectory=str(traj))
    dyn.run(3)
    lines = log.read_text().splitlines()
    header = lines[0].lstrip("#").split()
    assert header[:5] == ["metastep", "H[eV]", "Epot[eV]", "Ekin[eV]", "V[A^3]"]
    assert header[-3:] == ["bias[eV]", "|phi|", "dG_path[eV]"]
    data = np.loadtxt(log)
    assert data.shape == (3, 20)
    np.testing.assert_array_equal(data[:, 0], [0, 1, 2])
    P = 2.0 * units.GPa
    for row, rec in zip(data, dyn.history, strict=True):
        assert rec["H"] == pytest.approx(rec["epot"] + P * rec["volume"], rel=1e-12)
        np.testing.assert_allclose(row[1:5], [rec["H"], rec["epot"], rec["ekin"],
                                              rec["volume"]], rtol=1e-6)
        assert rec["volume"] == pytest.approx(np.prod(np.array(rec["cv"])[[0, 2, 5]]))
    assert dyn.history[0]["bias"] == 0.0 and dyn.history[0]["dG_path"] == 0.0
    assert dyn.history[1]["bias"] > 0.0
    # kinetic energy from a 300 K bath: of order 3/2 N kT (short, noisy run)
    assert 0.1 < dyn.history[-1]["ekin"] / (1.5 * len(atoms) * units.kB * 300) < 3
    images = read(traj, ":")
    assert len(images) == 4                                 # start + one per metastep
    np.testing.assert_allclose(images[-1].cell.array, atoms.cell.array)


def test_symmetric_mode_runs_and_keeps_symmetric_cell():
    atoms = _cu_md()
    dyn = _dyn(atoms, cv="symmetric")
    dyn.run(2)
    np.testing.assert_allclose(atoms.cell.array, atoms.cell.array.T, atol=1e-12)


def test_start_rotates_into_standard_form():
    atoms = _cu_md()
    rot = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    rot *= np.sign(np.linalg.det(rot))
    atoms.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    frac = atoms.get_scaled_positions()
    e0 = atoms.get_potential_energy()
    _dyn(atoms)
    assert np.allclose(np.triu(atoms.cell.array, 1), 0.0)
    np.testing.assert_allclose(atoms.get_scaled_positions(), frac, atol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(e0, abs=1e-10)


# ----------------------------------------------------------------------------- bad input
def test_bad_input():
    with pytest.raises(ValueError, match="periodic"):
        a = _cu_md()
        a.pbc = [True, True, False]
        _dyn(a)
    for kw in ({"gaussian_height": 0.0}, {"gaussian_height": -1.0},
               {"gaussian_width": 0.0}, {"gaussian_width": -0.1}):
        with pytest.raises(ValueError, match="gaussian_(height|width) must be > 0"):
            _dyn(_cu_md(), **kw)
    with pytest.raises(ValueError, match=r"pressure_GPa=.*units\.GPa"):
        _dyn(_cu_md(), pressure_GPa=None, pressure=50.0)
    with pytest.raises(ValueError, match="exactly one"):
        _dyn(_cu_md(), pressure=0.1)
    with pytest.raises(ValueError, match="md_steps"):
        _dyn(_cu_md(), md_steps=0)
    with pytest.raises(ValueError, match="cv must be"):
        _dyn(_cu_md(), cv="full")
    with pytest.raises(ValueError, match="thermostat"):
        _dyn(_cu_md(), thermostat="nose")
    with pytest.raises(ValueError, match="discard"):
        _dyn(_cu_md(), discard=1.0)
    # 5 GPa given the right way is accepted
    dyn = _dyn(_cu_md(), pressure_GPa=None, pressure=5 * units.GPa)
    assert dyn.pressure == pytest.approx(5 * units.GPa)


def test_m5_pressure_shrinks_lattice():
    vols = []
    for p_gpa in (0.0, 20.0):
        atoms = bulk("Cu", "fcc", a=3.59)
        atoms.calc = EMT()
        dyn = CellMetadynamics(atoms, pressure_GPa=p_gpa, thermostat=None,
                               gaussian_height=1e-6, gaussian_width=0.01, rng=0)
        dyn.run(30)
        vols.append(np.mean([h["volume"] for h in dyn.history[-10:]]))
        # at the end the static stress balances P to within one step of curvature
        assert -np.mean(dyn.history[-1]["stress_GPa"][:3]) == pytest.approx(p_gpa, abs=3.0)
    # EMT Cu bulk modulus ~ 135 GPa: 20 GPa compress by ~ 13 %
    assert 0.80 < vols[1] / vols[0] < 0.93


# ----------------------------------------------------------------------------- scaled CVs
@pytest.mark.parametrize("mode", ["triangular", "symmetric"])
def test_cv_hessian_equals_second_differences_of_enthalpy(mode):
    from ase_mlp.dynamics.metad import cv_hessian

    atoms = _cu_m2()
    P = 5 * units.GPa
    hess = cv_hessian(atoms, P, mode, delta=0.01)
    s0 = cv_from_cell(atoms.cell.array, mode)

    def H(s):
        return _enthalpy(atoms, cell_from_cv(s, mode), P)

    h = 5e-3
    fd = np.zeros((6, 6))
    for a in range(6):
        for b in range(6):
            ea, eb = h * np.eye(6)[a], h * np.eye(6)[b]
            fd[a, b] = (H(s0 + ea + eb) - H(s0 + ea - eb) - H(s0 - ea + eb)
                        + H(s0 - ea - eb)) / (4 * h * h)
    # O(delta^2) differences of the analytic stress against O(h^2) of the energy
    np.testing.assert_allclose(hess, fd, atol=2e-3 * np.abs(fd).max())
    assert np.all(np.linalg.eigvalsh(hess) > 0)          # a stable (strained) fcc cell


def test_cv_scaling_floors_and_inverts():
    from ase_mlp.dynamics.metad import HESSIAN_FLOOR, cv_scaling

    rng = np.random.default_rng(4)
    q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    lam = np.array([-2.0, 1e-6, 0.5, 1.0, 3.0, 10.0])
    L, L_inv, neg = cv_scaling((q * lam) @ q.T)
    assert neg == 1
    np.testing.assert_allclose(L @ L_inv, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(L, L.T, atol=1e-12)
    used = np.sort(np.linalg.eigvalsh(L @ L))
    np.testing.assert_allclose(used, np.sort(np.maximum(np.abs(lam), HESSIAN_FLOOR * 10)),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="symmetric"):
        cv_scaling(np.triu(np.ones((6, 6))))
    with pytest.raises(ValueError, match="6 x 6"):
        cv_scaling(np.eye(3))


def _cu_equilibrium():
    from scipy.optimize import minimize_scalar

    def e(a):
        at = bulk("Cu", "fcc", a=a, cubic=True)
        at.calc = EMT()
        return at.get_potential_energy()

    a0 = minimize_scalar(e, bounds=(3.5, 3.7), method="bounded",
                         options={"xatol": 1e-10}).x
    atoms = bulk("Cu", "fcc", a=a0, cubic=True)
    atoms.calc = EMT()
    return atoms


def test_scaled_step_raises_enthalpy_by_half_width_squared():
    """Near a minimum G ~ |z|^2 / 2 in scaled CVs: one step of length dz from the
    equilibrium cell raises H by dz^2 / 2, whatever its direction."""
    for seed in range(3):
        atoms = _cu_equilibrium()
        dz = 0.05                                             # eV^(1/2)
        dyn = CellMetadynamics(atoms, pressure=0.0, thermostat=None, gaussian_height=dz**2,
                               gaussian_width=dz, scaling="hessian", min_force=1e-3,
                               rng=seed)
        h0 = atoms.get_potential_energy()
        s0 = dyn.s.copy()
        dyn.run(1)
        assert np.linalg.norm(dyn.walker) == pytest.approx(dz, rel=1e-12)
        np.testing.assert_allclose(dyn.s, s0 + dyn._L_inv @ dyn.walker, atol=1e-14)
        assert atoms.get_potential_energy() - h0 == pytest.approx(0.5 * dz**2, rel=0.03)


# ----------------------------------------------------------------------------- samplers
def test_relax_sampler_relaxes_atoms_at_fixed_cell():
    atoms = _cu_md()
    atoms.rattle(0.05, seed=3)
    dyn = _dyn(atoms, thermostat="relax", md_steps=200, relax_fmax=1e-3)
    cell0 = atoms.cell.array.copy()
    dyn._sample()
    assert np.abs(atoms.get_forces()).max() < 1e-3
    np.testing.assert_array_equal(atoms.cell.array, cell0)
    dyn.run(2)
    assert all(h["ekin"] == 0.0 for h in dyn.history)


@pytest.mark.parametrize("thermostat,scaling", [("bussi", "hessian"), ("langevin", None)])
def test_restart_equals_unsplit_samplers(tmp_path, thermostat, scaling):
    from ase_mlp.analysis import PhaseFingerprint

    kw = dict(thermostat=thermostat, scaling=scaling, fingerprint=PhaseFingerprint(
        "group14", 3.0), gaussian_width=0.03 if scaling is None else 0.05)
    full = _dyn(_cu_md(), **kw)
    full.run(4)
    first = _dyn(_cu_md(), **kw)
    first.run(2)
    first.save_state(tmp_path / "s.npz")
    atoms2 = _cu_md()
    second = _dyn(atoms2, **kw)
    second.load_state(tmp_path / "s.npz")
    second.run(2)
    assert second.history == full.history
    np.testing.assert_array_equal(atoms2.positions, full.atoms.positions)
    fp = full.history[-1]["fingerprint"]
    assert fp["cn_mean"] == pytest.approx(12.0)              # fcc within 3 Å
    assert fp["f_other"] == 1.0
    # the cold start was thermalised (Bussi cannot rescale zero velocities); 4 atoms
    # fluctuate strongly, so only the order of magnitude of 3/2 N kT is checked
    ekin = np.mean([h["ekin"] for h in full.history])
    assert 0.05 < ekin / (1.5 * 4 * units.kB * 300) < 5


def test_fingerprint_columns_in_log(tmp_path):
    from ase_mlp.analysis import PhaseFingerprint, read_metad_log

    log = tmp_path / "m.log"
    dyn = _dyn(_cu_md(), fingerprint=PhaseFingerprint("group14", 3.0), logfile=log)
    dyn.run(2)
    data = read_metad_log(log)
    np.testing.assert_allclose(data["cn_mean"], 12.0)
    np.testing.assert_allclose(data["f_beta-tin"], 0.0)
    np.testing.assert_allclose(data["enthalpy"], [h["H"] for h in dyn.history], rtol=1e-7)


def test_bad_input_scaling_and_fingerprint():
    with pytest.raises(ValueError, match="scaling must be"):
        _dyn(_cu_md(), scaling="elastic")
    with pytest.raises(TypeError, match="fingerprint must be callable"):
        _dyn(_cu_md(), fingerprint={"cn": 4})
    with pytest.raises(ValueError, match="6 x 6"):
        _dyn(_cu_md(), scaling=np.eye(3))
    with pytest.raises(ValueError, match="relax_fmax"):
        _dyn(_cu_md(), thermostat="relax", relax_fmax=0.0)
    # a Hessian that is not positive definite (start not at a minimum) warns
    with pytest.warns(UserWarning, match="non-positive eigenvalue"):
        _dyn(_cu_md(), scaling=np.diag([-5.0, 1, 1, 1, 1, 1]))


def test_supercell_hessian_equals_hessian_of_supercell():
    from ase_mlp.dynamics.metad import cv_hessian, supercell_hessian

    small = _cu_m2()
    P = 5 * units.GPa
    big = small.repeat((2, 1, 3))
    big.calc = EMT()
    expected = cv_hessian(big, P)
    # equal up to the O(delta^2) error of the differences (same 0.01 Å step on both cells)
    np.testing.assert_allclose(supercell_hessian(cv_hessian(small, P), (2, 1, 3)), expected,
                               rtol=0, atol=1e-4 * np.abs(expected).max())
    with pytest.raises(ValueError, match="three integers"):
        supercell_hessian(np.eye(6), (2, 0, 1))
    with pytest.raises(ValueError, match="triangular"):
        supercell_hessian(np.eye(6), (2, 1, 1), mode="symmetric")
