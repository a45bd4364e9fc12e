"""Quantum thermal bath: harmonic oscillators against exact quantum averages (methods 1.7).

Independent 3D harmonic oscillators (m = 1.008 amu, hbar w0 = 0.1 eV) start from the
exact quantum Gaussian distribution (no equilibration needed). Expected finite-friction
biases (methods 1.1, integrals with the smooth cutoff): E_pot -(gamma/w0)-ish below theta/2,
E_kin + gamma log(w_cut/w0) above it; tolerances are set from those and from the
statistical error (about 0.6 % for 6 000 degrees of freedom over 4 ps at gamma = 2/ps).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_mlp.calculators.oscillators import (
    HBAR,
    HarmonicOscillators,
    harmonic_quantum_averages,
    quantum_mode_energy,
)
from ase_mlp.dynamics import QTB, deconvolve_theta
from ase_mlp.dynamics.qtb import lorentzian_bin_kernel


M = 1.008
W0 = 0.1 / HBAR                       # hbar w0 = 0.1 eV: 0.15193 rad/fs
K = M * W0**2


def _oscillators(n, temperature_K, seed=0):
    """n atoms in the exact quantum (Gaussian) distribution of the oscillators."""
    rng = np.random.default_rng(seed)
    theta = quantum_mode_energy(W0, temperature_K)
    atoms = Atoms(f"H{n}", positions=rng.normal(size=(n, 3)) * np.sqrt(theta / K))
    atoms.set_velocities(rng.normal(size=(n, 3)) * np.sqrt(theta / M))
    atoms.calc = HarmonicOscillators(K, x0=np.zeros((n, 3)))
    return atoms


def _averages(dyn, atoms, steps, every=4):
    ep, ek, x2 = [], [], []
    n = 3 * len(atoms)

    def sample():
        ep.append(atoms.get_potential_energy() / n)
        ek.append(atoms.get_kinetic_energy() / n)
        x2.append(np.mean(atoms.positions**2))

    dyn.attach(sample, interval=every)
    dyn.run(steps)
    return np.mean(ep), np.mean(ek), np.mean(x2)


@pytest.mark.parametrize("ratio", [0.1, 1.0, 10.0])
def test_harmonic_quantum_energies(ratio):
    """<E_pot>, <E_kin> and <x^2> per degree of freedom within 3 % of the quantum values."""
    T = 0.1 / (units.kB * ratio)                 # hbar w0 / kB T = ratio
    atoms = _oscillators(2000, T, seed=int(ratio * 10))
    dyn = QTB(atoms, 1.0 * units.fs, T, 0.002 / units.fs, cutoff_frequency=0.6 / units.fs,
              fixcm=False, rng=7)
    ep, ek, x2 = _averages(dyn, atoms, 3000)
    ref = harmonic_quantum_averages(W0, M, T)
    assert ep == pytest.approx(ref["epot"], rel=0.03)
    assert ek == pytest.approx(ref["ekin"], rel=0.03)
    assert x2 == pytest.approx(ref["x2"], rel=0.03)
    if ratio >= 1.0:   # and measurably not the classical value k_B T / 2
        assert abs(ep - ref["epot"]) < 0.5 * abs(ref["epot"] - 0.5 * units.kB * T)


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [0.3, 3.0])
def test_harmonic_quantum_energies_more(ratio):
    test_harmonic_quantum_energies(ratio)


def test_classical_limit_equals_langevin():
    """At hbar w / kB T = 0.1 QTB, its classical kernel and BAOAB Langevin agree."""
    from ase.md.langevinbaoab import LangevinBAOAB

    T = 0.1 / (units.kB * 0.1)
    out = {}
    for name in ("qtb", "classical", "langevin"):
        atoms = _oscillators(1000, T, seed=3)
        if name == "langevin":
            dyn = LangevinBAOAB(atoms, 1.0 * units.fs, temperature_K=T,
                                T_tau=500 * units.fs, rng=11)
        else:
            dyn = QTB(atoms, 1.0 * units.fs, T, 0.002 / units.fs, fixcm=False, rng=11,
                      kernel="quantum" if name == "qtb" else "classical",
                      cutoff_frequency=0.6 / units.fs)
        out[name] = _averages(dyn, atoms, 2500)
    kT2 = 0.5 * units.kB * T
    theta2 = harmonic_quantum_averages(W0, M, T)["epot"]      # 1.0008 k_B T / 2
    for name, (ep, ek, _) in out.items():
        assert ep == pytest.approx(kT2, rel=0.03), name
        assert ek == pytest.approx(kT2, rel=0.03), name
    assert theta2 / kT2 - 1 < 1e-3


def test_noise_spectrum_is_the_kernel():
    """The sampled random force has PSD 2 m gamma K theta(w) c(w) x sinc-correction^2."""
    n, T, gamma = 300, 100.0, 0.005 / units.fs
    atoms = _oscillators(n, T)
    dyn = QTB(atoms, 0.5 * units.fs, T, gamma, deconvolve=False, rng=1)
    L = 4096                               # more than one block of 2 N_f intervals
    assert L > 2 * dyn.n_f
    R = np.empty((L, 3 * n))
    for i in range(L):
        dyn._new_interval()
        dyn._interval = (dyn._interval + 1) % (2 * dyn.n_f)
        R[i] = dyn._R.reshape(-1)
    psd = (np.abs(np.fft.rfft(R, axis=0)) ** 2).mean(axis=1) * dyn.h / L
    w = 2 * np.pi * np.fft.rfftfreq(L, dyn.h)
    x = w * dyn.h / 2                      # hold of alpha steps: sinc correction
    corr = dyn.alpha * np.sin(x / dyn.alpha) / np.where(x > 0, np.sin(x), 1)
    corr[0] = 1.0
    cut = 1 / (1 + np.exp(np.clip((w - dyn.cutoff_frequency) / (dyn.cutoff_frequency / 100),
                                  -60, 60)))
    expected = 2 * M * gamma * dyn._K * quantum_mode_energy(w, T) * cut * corr**2
    for target in (0.05, 0.15, 0.5, 1.0):          # rad/fs, below the 1.257 cutoff
        sel = np.abs(w * units.fs - target) < 0.03
        assert psd[sel].mean() / expected[sel].mean() == pytest.approx(1.0, abs=0.03)
    above = w > 1.1 * dyn.cutoff_frequency
    assert psd[above].mean() < 1e-3 * expected[~above].max()


def test_deconvolution_removes_the_friction_bias():
    """gamma = 0.02/fs: plain QTB E_pot is ~3.8 % low at 100 K (methods Q2), deconvolved
    theta_d gives theta/2 within 1.5 %."""
    T, gamma = 100.0, 0.02 / units.fs
    ref = harmonic_quantum_averages(W0, M, T)["epot"]
    res = {}
    for dec in (False, True):
        atoms = _oscillators(1000, T, seed=5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dyn = QTB(atoms, 0.5 * units.fs, T, gamma, fixcm=False, rng=3, deconvolve=dec,
                      segment_length=1000 * units.fs)
        res[dec] = _averages(dyn, atoms, 3000)[0] / ref - 1
    assert -0.06 < res[False] < -0.02
    assert abs(res[True]) < 0.015


def test_deconvolve_theta_solves_the_kernel_equation():
    w = np.linspace(0, 1.0, 201) / units.fs
    theta = quantum_mode_energy(w, 100.0)
    gamma = 0.02 / units.fs
    f = deconvolve_theta(w, theta, gamma, n_iter=200)
    got = lorentzian_bin_kernel(w[1:], w, gamma) @ f
    inner = slice(5, 150)                   # away from the upper grid end
    np.testing.assert_allclose(got[inner], 0.5 * theta[1:][inner], rtol=0.01)
    assert np.all(f >= 0)


def test_lorentzian_kernel_is_integrated_over_the_bins():
    """The response of a mode to a flat spectrum is 1/2 on any grid, fine or coarse
    (a point-sampled Lorentzian is off by tens of % when the bin is wider than gamma), and
    the kinetic kernel reproduces the Q2 numbers of methods 1.7."""
    gamma = 0.005 / units.fs
    for dw in (0.0005, 0.025):              # gamma / 10 and 5 gamma (N_f = 100 default grid)
        w = np.arange(0, 3.0, dw) / units.fs
        K = lorentzian_bin_kernel(np.array([0.0304, 0.1519, 0.3]) / units.fs, w, gamma)
        np.testing.assert_allclose(K.sum(axis=1), 0.5, rtol=2e-3)
    # methods Q2: hbar w0 = 0.1 eV, 100 K, gamma 0.005/fs, no deconvolution: E_pot -0.98 %
    w = np.arange(0, 15000 * 2 * np.pi * units._c * 1e2 * 1e-15, 0.0005) / units.fs
    theta = quantum_mode_energy(w, 100.0)
    ep = lorentzian_bin_kernel(W0, w, gamma) @ theta
    assert ep[0] / (0.5 * quantum_mode_energy(W0, 100.0)) - 1 == pytest.approx(-0.0098,
                                                                                abs=5e-4)
    ek = lorentzian_bin_kernel(W0, w, gamma, kinetic=True) @ theta
    assert ek[0] / (0.5 * quantum_mode_energy(W0, 100.0)) - 1 == pytest.approx(0.050,
                                                                                abs=2e-3)


def test_deconvolution_on_the_default_grid_gives_the_quantum_energy():
    """deconvolve=True with the default grid: the spectrum the noise carries gives a
    harmonic mode theta/2 (the old point-sampled kernel on the N_f = 100 grid gave -49 %,
    -73 %, -95 % at gamma = 10, 5, 1 / ps)."""
    a = _oscillators(2, 50.0)
    for gamma in (0.001, 0.005, 0.01):
        dyn = QTB(a, 1.0 * units.fs, 50.0, gamma / units.fs, rng=0)
        w0 = np.array([0.02, 0.05, 0.15]) / HBAR
        ep = dyn.harmonic_energies(w0)["epot"] / (0.5 * quantum_mode_energy(w0, 50.0))
        np.testing.assert_allclose(ep, 1.0, atol=0.005)


def _run(atoms, steps, state=None, friction=0.01 / units.fs, **kw):
    dyn = QTB(atoms, 0.5 * units.fs, 300.0, friction, rng=42, **kw)
    if state is not None:
        dyn.load_state(state)
    dyn.run(steps)
    return dyn


@pytest.mark.parametrize("variant", ["nvt", "adaptive", "npt", "npt_full"])
def test_restart_bit_for_bit(tmp_path, variant):
    # a short default segment (6 pi / friction = 38 fs): blocks and segments end in the run
    kw = {"friction": 0.5 / units.fs}
    if variant == "adaptive":
        kw.update(adaptive=True, adaptation_rate=0.5)
    if variant.startswith("npt"):
        kw.update(externalstress=0.0, hydrostatic=variant == "npt", P_tau=100 * units.fs,
                  P_mass=1e4)

    def system():
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        a.rattle(0.05, seed=1)
        a.calc = EMT()
        return a

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = _run(system(), 120, **kw)
        first = system()
        dyn = _run(first, 50, **kw)
        dyn.save_state(tmp_path / "state.npz")
        second = system()                            # a fresh process would do the same
        rest = _run(second, 70, state=tmp_path / "state.npz", **kw)
    assert rest.nsteps == whole.nsteps == 120
    assert whole.segment_length < 50 * units.fs
    assert np.array_equal(second.positions, whole.atoms.positions)
    assert np.array_equal(second.get_momenta(), whole.atoms.get_momenta())
    assert np.array_equal(second.cell.array, whole.atoms.cell.array)
    assert np.array_equal(rest.gamma_r, whole.gamma_r)
    if variant == "adaptive":
        assert not np.allclose(whole.gamma_r, whole.friction)   # adaptation happened


def test_checkpoint_mismatch_is_an_error(tmp_path):
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.calc = EMT()
    dyn = QTB(a, 0.5 * units.fs, 300.0, 0.01 / units.fs, rng=0)
    dyn.save_state(tmp_path / "s.npz")
    b = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    b.calc = EMT()
    other = QTB(b, 0.5 * units.fs, 300.0, 0.01 / units.fs, rng=0)
    with pytest.raises(ValueError, match="natoms 4 \\(file\\) vs 32"):
        other.load_state(tmp_path / "s.npz")


def test_bad_input():
    a = _oscillators(4, 100.0)
    dt = 0.5 * units.fs
    with pytest.raises(ValueError, match="temperature_K must be >= 0"):
        QTB(a, dt, -1.0, 0.01 / units.fs, rng=0)
    with pytest.raises(ValueError, match="friction must be > 0"):
        QTB(a, dt, 100.0, -0.01 / units.fs, rng=0)
    with pytest.raises(ValueError, match="timestep too long for the cutoff frequency"):
        QTB(a, 5 * units.fs, 100.0, 0.01 / units.fs, cutoff_frequency=1.0 / units.fs, rng=0)
    b = a.copy()
    b.calc = a.calc
    b.set_masses([0.0] * len(b))
    with pytest.raises(ValueError, match="atoms without a positive mass"):
        QTB(b, dt, 100.0, 0.01 / units.fs, rng=0)
    c = a.copy()
    c.positions[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        QTB(c, dt, 100.0, 0.01 / units.fs, rng=0)
    with pytest.raises(ValueError, match="kernel"):
        QTB(a, dt, 100.0, 0.01 / units.fs, kernel="semi", rng=0)
    # the frequency grid must resolve the friction: 2 pi / segment_length <= friction / 3
    with pytest.raises(ValueError, match=r"segment_length 200 fs is too short for friction "
                                         r"0.01 /fs.*>= 6 pi / friction = 1884.96 fs"):
        QTB(a, dt, 100.0, 0.01 / units.fs, segment_length=200 * units.fs, rng=0)
    QTB(a, dt, 100.0, 0.01 / units.fs, segment_length=1900 * units.fs, rng=0)
    with pytest.raises(ValueError, match="temperature_K must be >= 0"):
        dyn = QTB(a, dt, lambda t: 100.0 - t / units.fs, 0.01 / units.fs, rng=0)
        dyn.run(400)


def test_temperature_ramp_rebuilds_the_filter():
    a = _oscillators(200, 50.0)
    ramp = lambda t: 50.0 + 2.0 * t / units.fs          # noqa: E731  50 K -> 450 K
    dyn = QTB(a, 1.0 * units.fs, ramp, 0.01 / units.fs, rng=0)
    h0 = dyn._H.copy()
    dyn.run(200)
    # evaluated at the start of the last noise interval (alpha steps, 2 K per step)
    assert dyn.temperature_K == pytest.approx(ramp(dyn.nsteps * dyn.dt), abs=2.0 * dyn.alpha)
    assert not np.allclose(dyn._H, h0)


def test_diagnostics_and_spectra_files(tmp_path):
    """Plain QTB on harmonic oscillators satisfies the FDT (small residual, no leakage)."""
    a = _oscillators(500, 100.0)
    dyn = QTB(a, 0.5 * units.fs, 100.0, 0.05 / units.fs, diagnostics=True, rng=0,
              fdt_log=tmp_path / "fdt.log")
    dyn.run(4 * 2 * dyn.n_f * dyn.alpha)
    d = dyn.fdt["H"]
    peak = np.argmax(d["CvR"])
    assert abs(d["omega"][peak] - W0) < 2 * (d["omega"][1] - d["omega"][0])
    assert d["residual"] < 0.15
    # at the resonance, m gamma C_vv = Re C_vR within the noise of one segment
    assert d["dFDT"][peak] / d["CvR"][peak] == pytest.approx(0.0, abs=0.15)
    assert len((tmp_path / "fdt.log").read_text().splitlines()) == 4
    paths = dyn.write_spectra(tmp_path / "QTB_spectra")
    assert np.loadtxt(paths[0]).shape == (dyn.n_f + 1, 6)
    assert dyn.noise_memory_bytes() >= 3 * 4 * 2 * dyn.n_f * 3 * 500     # block, segment: float32


def test_qtb_npt_keeps_a_crystal():
    """Isotropic QTB NPT of EMT Cu at 0 pressure: the volume stays within 3 % and rises
    above the classical one (zero-point expansion)."""
    vols = {}
    for kernel in ("quantum", "classical"):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        a.calc = EMT()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dyn = QTB(a, 2.0 * units.fs, 50.0, 0.01 / units.fs, kernel=kernel, rng=1,
                      externalstress=0.0, hydrostatic=True, P_tau=200 * units.fs)
        v = []
        dyn.attach(lambda v=v, a=a: v.append(a.get_volume() / len(a)), interval=5)
        dyn.run(500)
        vols[kernel] = np.mean(v[30:])
    v0 = 3.61**3 / 4
    assert abs(vols["quantum"] / v0 - 1) < 0.03
    assert vols["quantum"] > vols["classical"]


@pytest.mark.slow
def test_adaptive_qtb_reduces_leakage_in_morse_oscillators():
    """Independent 1D Morse oscillators (D = 0.3 eV, hbar w0 = 0.1 eV, m = 1.008) at 50 K,
    exact quantum averages by grid diagonalisation. Plain QTB leaks zero-point energy into
    the soft, anharmonic part of the well (<x> +39 %, <E_pot> +11 % in a long run); adaptive
    QTB is measurably closer, and its FDT residual falls while plain QTB's stays high."""
    from ase_mlp.calculators.oscillators import MorseOscillators, morse_quantum_averages

    D, T = 0.3, 50.0
    a = W0 / np.sqrt(2 * D / M)
    exact = morse_quantum_averages(D, a, M, T)
    out = {}
    for adaptive in (False, True):
        rng = np.random.default_rng(0)
        atoms = Atoms("H200", positions=rng.normal(size=(200, 3)) * 0.1)
        atoms.calc = MorseOscillators(D, a, x0=np.zeros((200, 3)))
        dyn = QTB(atoms, 1.0 * units.fs, T, 0.02 / units.fs, adaptive=adaptive,
                  adaptation_rate=0.3, diagnostics=True, groups="all", rng=1,
                  cutoff_frequency=0.8 / units.fs, segment_length=1000 * units.fs)
        seg = 2 * dyn.n_f * dyn.alpha
        xs, ep, res = [], [], []
        dyn.attach(lambda xs=xs, ep=ep, atoms=atoms: (
            xs.append(atoms.positions.mean()),
            ep.append(atoms.get_potential_energy() / (3 * len(atoms)))), interval=10)
        for _ in range(12):
            dyn.run(seg)
            res.append(dyn.fdt["0"]["residual"])
        h = len(xs) // 2
        out[adaptive] = (np.mean(xs[h:]), np.mean(ep[h:]), res)
    (x_q, e_q, r_q), (x_a, e_a, r_a) = out[False], out[True]
    assert x_q / exact["x"] - 1 > 0.15                       # plain QTB leaks
    assert abs(x_a - exact["x"]) < 0.8 * abs(x_q - exact["x"])
    assert abs(e_a - exact["epot"]) < 0.8 * abs(e_q - exact["epot"])
    assert np.mean(r_a[-4:]) < 0.9 * np.mean(r_a[:2])        # adaptation restores the FDT
    assert np.mean(r_a[-4:]) < 0.9 * np.mean(r_q[-4:])


def test_energy_temperature_zero_point_plateau():
    """E/(3 N kB) of QTB harmonic oscillators: the zero-point plateau hbar w0 / (2 kB)
    (580 K for 0.1 eV) at low T, where classical Langevin would give T."""
    from ase_mlp.dynamics import energy_temperature

    T = 20.0
    atoms = _oscillators(1000, T, seed=2)
    dyn = QTB(atoms, 1.0 * units.fs, T, 0.002 / units.fs, cutoff_frequency=0.6 / units.fs,
              fixcm=False, rng=4)
    ep, ek = [], []
    dyn.attach(lambda: (ep.append(atoms.get_potential_energy()),
                        ek.append(atoms.get_kinetic_energy())), interval=4)
    dyn.run(2000)
    t_est = energy_temperature(ep, ek, len(atoms), 0.0)
    assert t_est == pytest.approx(0.1 / (2 * units.kB), rel=0.03)       # 580.2 K
    t_meas = energy_temperature(ep, ek, len(atoms), 0.0, kinetic="measured")
    assert t_meas > t_est                                  # the kinetic bias is upward
    with pytest.raises(ValueError, match="kinetic"):
        energy_temperature(ep, ek, len(atoms), 0.0, kinetic="nope")
