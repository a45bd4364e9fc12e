"""VDOS, zero-point and effective temperatures (methods.md section 5)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units

from ase_mlp.analysis import (
    HBAR_EV_FS,
    effective_temperature,
    omega_to_cm1,
    omega_to_mev,
    omega_to_thz,
    spectral_resolution,
    vdos,
    zero_point_temperature,
)


EV_PER_AMU_TO_A2_PER_FS2 = units.fs**2      # acceleration of 1 eV/Å on 1 amu, Å/fs^2


def local_maxima(g, n):
    """Indices of the n largest local maxima of g."""
    idx = np.flatnonzero((g[1:-1] > g[:-2]) & (g[1:-1] >= g[2:])) + 1
    return np.sort(idx[np.argsort(g[idx])[::-1][:n]])


def cosine_velocities(rng, freqs, M, dt, N):
    """v_i(t) = sum_k A_ik cos(w_k t + phi_ik), random amplitudes/phases per atom and axis."""
    t = np.arange(M) * dt
    v = np.zeros((M, N, 3))
    for w in freqs:
        amp = rng.uniform(0.5, 1.5, size=(N, 3))
        phase = rng.uniform(0, 2 * np.pi, size=(N, 3))
        v += amp * np.cos(w * t[:, None, None] + phase)
    return v


def ring_chain_velocities(rng, N=8, k=1.0, m=1.0, dt=0.5, n_steps=8000, stride=2):
    """3-D ring of N atoms with nearest-neighbour springs (V = k/2 sum |u_i+1 - u_i|^2),
    integrated with velocity Verlet in fs. Returns velocities every `stride` steps."""
    u = rng.normal(scale=0.05, size=(N, 3))
    v = np.zeros((N, 3))
    scale = EV_PER_AMU_TO_A2_PER_FS2 / m

    def acc(u):
        return -k * (2 * u - np.roll(u, 1, axis=0) - np.roll(u, -1, axis=0)) * scale

    a = acc(u)
    out = []
    for step in range(n_steps):
        if step % stride == 0:
            out.append(v.copy())
        v += 0.5 * dt * a
        u += dt * v
        a = acc(u)
        v += 0.5 * dt * a
    return np.array(out)


def test_cosine_peaks_and_normalisation(rng):
    freqs = [0.05, 0.11, 0.2]                     # rad/fs
    M, dt = 4000, 1.0
    v = cosine_velocities(rng, freqs, M, dt, N=5)
    omega, g = vdos(v, np.full(5, 12.0), dt)
    dw = np.pi / (M * dt)
    assert omega.shape == (M + 1,)
    np.testing.assert_allclose(omega[1] - omega[0], dw)
    assert np.sum(g) * dw == pytest.approx(1.0, abs=1e-12)
    peaks = local_maxima(g, 3)
    np.testing.assert_allclose(omega[peaks], freqs, atol=dw)         # within one bin
    # No window: same peaks, narrower (resolution 2 pi/(M dt) instead of 1.5 times that).
    _, g0 = vdos(v, 12.0, dt, window=None)
    np.testing.assert_allclose(omega[local_maxima(g0, 3)], freqs, atol=dw)
    assert spectral_resolution(M, dt, None) == pytest.approx(2 * np.pi / (M * dt))
    assert spectral_resolution(M, dt, "hann") == pytest.approx(1.5 * 2 * np.pi / (M * dt))


def test_harmonic_ring_chain_normal_modes(rng):
    """Peaks at the analytic dispersion w_n = 2 sqrt(k/m) |sin(pi n / N)| of a ring chain."""
    N, k, m = 8, 1.0, 1.0
    v = ring_chain_velocities(rng, N=N, k=k, m=m)             # dt_frame = 1 fs, 4000 frames
    M, dt = v.shape[0], 1.0
    omega, g = vdos(v, np.full(N, m), dt)
    w0 = np.sqrt(k / m * EV_PER_AMU_TO_A2_PER_FS2)             # rad/fs
    analytic = 2 * w0 * np.sin(np.pi * np.arange(1, N // 2 + 1) / N)
    peaks = local_maxima(g, len(analytic))
    np.testing.assert_allclose(omega[peaks], analytic, atol=np.pi / (M * dt))
    # Nothing above the band edge 2 sqrt(k/m) (beyond the window width).
    edge = 2 * w0 + 3 * spectral_resolution(M, dt)
    assert np.sum(g[omega > edge]) * (omega[1] - omega[0]) < 1e-4
    # The same data as ase.Atoms frames with momenta (ASE velocity units) give the same g.
    frames = []
    for vel in v:
        a = Atoms(f"H{N}", masses=np.full(N, m))
        a.set_velocities(vel / units.fs)                       # Å/fs -> Å/(ASE time)
        frames.append(a)
    omega_f, g_f = vdos(frames, dt_fs=dt)
    np.testing.assert_allclose(omega_f, omega)
    np.testing.assert_allclose(g_f, g, rtol=1e-10, atol=1e-12)


def test_species_and_mass_weighting(rng):
    """Species A (1 amu) at w1 and B (4 amu) at w2 with equal velocity amplitudes: the mass
    weighting makes the B peak carry 4 times the weight of the A peak."""
    M, dt, w1, w2 = 2000, 1.0, 0.08, 0.16
    t = np.arange(M) * dt
    v = np.zeros((M, 4, 3))
    v[:, :2] = np.cos(w1 * t)[:, None, None]
    v[:, 2:] = np.cos(w2 * t + 0.3)[:, None, None]
    symbols = ["H", "H", "He", "He"]
    masses = [1.0, 1.0, 4.0, 4.0]
    omega, g = vdos(v, masses, dt, symbols=symbols)
    dw = omega[1] - omega[0]

    def area(g, w):
        return np.sum(g[np.abs(omega - w) < 0.02]) * dw

    assert area(g, w2) / area(g, w1) == pytest.approx(4.0, rel=1e-3)
    omega, parts = vdos(v, masses, dt, symbols=symbols, species=["H", "He"])
    assert set(parts) == {"H", "He"}
    for lab, w in (("H", w1), ("He", w2)):
        assert np.sum(parts[lab]) * dw == pytest.approx(1.0, abs=1e-12)
        assert area(parts[lab], w) > 0.999
    _, g_he = vdos(v, masses, dt, symbols=symbols, species="He")
    np.testing.assert_allclose(g_he, parts["He"])


def test_zero_point_temperature_reference_numbers():
    w = 0.1 / HBAR_EV_FS                            # hbar w = 0.1 eV
    omega = np.linspace(0, 2 * w, 2001)
    g = np.zeros_like(omega)
    g[1000] = 1.0                                   # single oscillator (any normalisation)
    assert omega[1000] == pytest.approx(w, rel=1e-12)
    assert zero_point_temperature(omega, g) == pytest.approx(580.226, abs=1e-3)
    # Debye spectrum g = 3 w^2 / w_D^3 gives (3/8) Theta_D = 128.62 K for Theta_D = 343 K.
    theta_d = 343.0
    w_d = units.kB * theta_d / HBAR_EV_FS
    omega = np.linspace(0, w_d, 20001)
    g = 3 * omega**2 / w_d**3
    t_zero = zero_point_temperature(omega, g)
    assert t_zero == pytest.approx(128.625, abs=1e-3)
    # T_eff(0) = T_zero; T_eff > T and > T_zero; high-T expansion
    # T_eff = T + hbar^2 <w^2> / (12 k_B^2 T) with <w^2> = (3/5) w_D^2.
    assert effective_temperature(omega, g, 0.0) == pytest.approx(t_zero, rel=1e-12)
    T = np.array([10.0, 100.0, 300.0, 1000.0])
    t_eff = effective_temperature(omega, g, T)
    assert t_eff.shape == T.shape
    assert np.all(t_eff > T) and np.all(t_eff > t_zero) and np.all(np.diff(t_eff) > 0)
    for T_high in (1e4, 1e5):
        expected = T_high + 0.6 * theta_d**2 / (12 * T_high)
        assert effective_temperature(omega, g, T_high) == pytest.approx(expected, abs=2e-3)


def test_zero_point_temperature_from_velocities(rng):
    """An oscillator at hbar w = 0.1 eV sampled as velocities: T_zero = 580.2 K to within the
    spectral resolution (the peak is symmetric, so the error is much smaller)."""
    w = 0.1 / HBAR_EV_FS
    M, dt = 4000, 1.0
    v = cosine_velocities(rng, [w], M, dt, N=3)
    omega, g = vdos(v, 1.0, dt)
    assert zero_point_temperature(omega, g) == pytest.approx(580.226, rel=1e-3)


def test_unit_helpers():
    w = 0.1 / HBAR_EV_FS
    assert HBAR_EV_FS == pytest.approx(0.6582120, rel=1e-6)
    assert omega_to_mev(w) == pytest.approx(100.0, rel=1e-12)
    assert omega_to_cm1(w) == pytest.approx(806.6, abs=0.05)          # methods.md section 0
    assert omega_to_thz(2 * np.pi * 1e-3) == pytest.approx(1.0, rel=1e-12)
    # ASE-time angular frequency -> rad/fs
    assert (1.0 / units.fs) * units.fs == pytest.approx(1.0)


def test_bad_input_messages(rng):
    v = rng.normal(size=(10, 3, 3))
    with pytest.raises(ValueError, match="dt_fs .* is required"):
        vdos(v, np.ones(3))
    with pytest.raises(ValueError, match="masses are required"):
        vdos(v, dt_fs=1.0)
    with pytest.raises(ValueError, match=r"masses must have shape \(3,\), got \(2,\)"):
        vdos(v, [1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match=r"array of shape \(T, N, 3\), got shape \(10, 3\)"):
        vdos(v[:, :, 0], np.ones(3), 1.0)
    with pytest.raises(ValueError, match="velocities is empty"):
        vdos([], np.ones(3), 1.0)
    with pytest.raises(ValueError, match="at least 2 frames"):
        vdos(v[:1], np.ones(3), 1.0)
    bad = v.copy()
    bad[2, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"velocities contains NaN or infinite values"):
        vdos(bad, np.ones(3), 1.0)
    with pytest.raises(ValueError, match="carries no chemical symbols"):
        vdos(v, np.ones(3), 1.0, species="Cu")
    with pytest.raises(ValueError, match=r"unknown species 'Fe'.*present: H, O"):
        vdos(v, np.ones(3), 1.0, symbols=["H", "H", "O"], species=["H", "Fe"])
    with pytest.raises(ValueError, match=r"window array must have shape \(10,\)"):
        vdos(v, np.ones(3), 1.0, window=np.ones(4))
    with pytest.raises(ValueError, match="unknown window 'bogus'"):
        vdos(v, np.ones(3), 1.0, window="bogus")
    with pytest.raises(ValueError, match="carry no velocities"):
        vdos([Atoms("H2"), Atoms("H2")], dt_fs=1.0)
    omega = np.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="equal length"):
        zero_point_temperature(omega, np.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        zero_point_temperature(omega - 0.5, np.ones(5))
    with pytest.raises(ValueError, match="positive integral"):
        zero_point_temperature(omega, np.zeros(5))
    with pytest.raises(ValueError, match="T must be >= 0 K"):
        effective_temperature(omega, np.ones(5), -1.0)
