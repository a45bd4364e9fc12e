"""Diffusive regime of an MSD fit and the signal band of a VDOS (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from ase_mlp.analysis import diffusion_coefficient, vdos
from ase_mlp.analysis.diffusion import PLATEAU_ALPHA
from ase_mlp.analysis.spectra import signal_cutoff


T = np.arange(0, 2001, 10.0)      # fs


def test_linear_msd_is_diffusive():
    D = 1e-4                                        # Å^2/fs
    fit = diffusion_coefficient(T, 6 * D * T + 0.02)
    assert fit.is_diffusive() and fit.regime() == "diffusive"
    assert fit.D == pytest.approx(D)
    assert 0.85 < fit.alpha <= 1.0                  # the offset bends it slightly below 1


def test_plateau_is_not_diffusion():
    """A crystal: the MSD saturates at the vibrational amplitude; the fitted D is noise."""
    rng = np.random.default_rng(0)
    plateau = 0.042
    y = plateau * (1 - np.exp(-T / 30.0)) + rng.normal(0, 2e-4, T.size)
    y[0] = 0.0
    fit = diffusion_coefficient(T, y)
    assert not fit.is_diffusive() and fit.regime() == "plateau"
    assert abs(fit.alpha) < PLATEAU_ALPHA
    assert fit.msd_window_mean == pytest.approx(plateau, rel=0.02)
    # a slightly falling plateau gives D < 0: never diffusive
    fit = diffusion_coefficient(T, plateau - 1e-6 * T)
    assert fit.D < 0 and fit.regime() == "plateau"


def test_ballistic_and_subdiffusive_are_not_linear():
    assert diffusion_coefficient(T, 1e-3 * T**2).regime() == "superdiffusive"
    fit = diffusion_coefficient(T, 0.01 * T**0.5)
    assert fit.regime() == "subdiffusive" and fit.alpha == pytest.approx(0.5, abs=1e-9)
    assert not fit.is_diffusive()
    assert fit.is_diffusive(tol=0.6)              # the tolerance is a parameter


def test_block_msd_has_a_regime():
    D = 2e-4
    blocks = np.array([6 * D * T * f for f in (0.9, 1.0, 1.1)])
    fit = diffusion_coefficient(T, blocks)
    assert fit.method == "blocks" and fit.is_diffusive()
    assert fit.alpha == pytest.approx(1.0)


def _harmonic_velocities(omega0, n_frames=2000, n_atoms=4, dt=1.0):
    rng = np.random.default_rng(1)
    t = np.arange(n_frames) * dt
    phase = rng.uniform(0, 2 * np.pi, (n_atoms, 3))
    return np.cos(omega0 * t[:, None, None] + phase[None])


def test_vdos_signal_cutoff_and_trimmed_plot():
    omega0 = 0.05                                   # rad/fs, ~8 THz; Nyquist pi rad/fs
    v = _harmonic_velocities(omega0)
    omega, g = vdos(v, masses=np.ones(4), dt_fs=1.0)
    top = signal_cutoff(omega, g)
    assert omega0 < top < 0.1 * omega[-1]           # the line, not the Nyquist range
    assert signal_cutoff(omega, {"a": g, "b": g}) == top
    assert signal_cutoff(omega, np.ones_like(omega)) == omega[-1]   # no decay: all of it
    with pytest.raises(ValueError, match="rel"):
        signal_cutoff(omega, g, rel=2.0)
    pytest.importorskip("matplotlib")
    from ase_mlp.analysis.plots import plot_vdos

    fig = plot_vdos(omega, g, unit="rad/fs")
    assert fig.axes[0].get_xlim() == pytest.approx((0.0, 1.1 * top))
    fig = plot_vdos(omega, g, unit="rad/fs", trim=None)
    assert fig.axes[0].get_xlim()[1] >= omega[-1]
