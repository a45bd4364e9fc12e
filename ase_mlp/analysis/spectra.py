"""Vibrational density of states (VDOS) from velocities, and quantum temperatures.

Definitions (``docs/methods.md`` section 5)::

    C(t)  = sum_i m_i < v_i(0) . v_i(t) >
    g(w)  = (2 / pi) int_0^inf C(t) / C(0) cos(w t) dt,       int_0^inf g(w) dw = 1

Discrete recipe used by :func:`vdos`: each velocity component series of ``M`` frames is
multiplied by a window, zero-padded to ``2M`` and Fourier transformed;
``S_k = sum_i m_i sum_alpha |FFT(v_i,alpha)|_k^2`` and ``g_k = S_k / (sum_k S_k dw)`` on the
one-sided grid ``w_k = k dw``, ``k = 0..M``, ``dw = pi / (M dt)``.

Units. Angular frequencies ``w`` are in **rad/fs** everywhere (not cycles, not ASE time). An
angular frequency in ASE time units converts as ``w_fs = w_ase * ase.units.fs``. Helpers:
:func:`omega_to_thz` (cycles, THz), :func:`omega_to_mev` (``hbar w`` in meV) and
:func:`omega_to_cm1` (wavenumber). ``hbar = 0.6582120 eV fs`` (:data:`HBAR_EV_FS`).
``g`` is in fs/rad (per mode: integrates to 1).

Quantum temperatures (``k_B`` = :data:`ase.units.kB`)::

    T_zero   = (1/k_B) int g(w) hbar w / 2 dw
    T_eff(T) = (1/k_B) int g(w) (hbar w / 2) coth(hbar w / 2 k_B T) dw  ->  T  for T >> T_zero
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import units
from scipy.integrate import trapezoid
from scipy.signal import get_window

from ase_mlp.analysis._common import (
    as_frames,
    check_finite,
    check_positive,
    species_indices,
)


#: Reduced Planck constant in eV fs.
HBAR_EV_FS = units._hbar * units.J * units.s / units.fs
#: Speed of light in cm/fs.
C_CM_PER_FS = units._c * 100.0 * 1e-15

_FFT_CHUNK = 4_000_000


def omega_to_thz(omega):
    """Angular frequency in rad/fs to ordinary frequency ``nu = w / 2 pi`` in THz."""
    return np.asarray(omega) / (2.0 * np.pi) * 1e3


def omega_to_mev(omega):
    """Angular frequency in rad/fs to the quantum energy ``hbar w`` in meV."""
    return np.asarray(omega) * HBAR_EV_FS * 1e3


def omega_to_cm1(omega):
    """Angular frequency in rad/fs to the wavenumber ``w / (2 pi c)`` in cm^-1."""
    return np.asarray(omega) / (2.0 * np.pi * C_CM_PER_FS)


def _window(window, n: int) -> np.ndarray:
    if window is None:
        return np.ones(n)
    if isinstance(window, str):
        try:
            return get_window(window, n, fftbins=True)
        except ValueError as exc:
            raise ValueError(f"unknown window {window!r}: {exc}") from None
    w = np.asarray(window, dtype=float)
    if w.shape != (n,):
        raise ValueError(
            f"a window array must have shape ({n},) (one value per frame), got {w.shape}"
        )
    check_finite(w, "window")
    return w


def spectral_resolution(n_frames: int, dt_fs: float, window="hann") -> float:
    """Width of the spectral window: equivalent noise bandwidth in rad/fs.

    ``ENBW = M sum(w^2) / (sum w)^2 * 2 pi / (M dt)``: one natural frequency bin
    ``2 pi / (M dt)`` without a window, 1.5 bins for Hann. A line at ``w0`` appears as a
    peak of about this width; two lines closer than this are not resolved. (The output grid
    of :func:`vdos` is twice as fine, ``pi / (M dt)``, because of the zero padding.)

    Parameters
    ----------
    n_frames : int
        Number of frames ``M``.
    dt_fs : float
        Time between frames (fs).
    window : str, array_like or None
        As in :func:`vdos`.
    """
    if int(n_frames) != n_frames or n_frames < 2:
        raise ValueError(f"n_frames must be an integer >= 2, got {n_frames!r}")
    dt_fs = check_positive(dt_fs, "dt_fs")
    w = _window(window, int(n_frames))
    enbw = n_frames * float(w @ w) / float(w.sum()) ** 2
    return enbw * 2.0 * np.pi / (n_frames * dt_fs)


def _velocities(velocities, masses, symbols):
    """Return ``(v (M, N, 3), masses (N,), symbols or None)``."""
    from ase import Atoms

    if isinstance(velocities, Atoms) or (
        isinstance(velocities, (list, tuple)) and len(velocities) > 0
        and isinstance(velocities[0], Atoms)
    ):
        if symbols is not None:
            raise ValueError("symbols must not be given together with ase.Atoms frames")
        frames = as_frames(velocities)
        v = np.array([a.get_velocities() for a in frames], dtype=float)
        if not np.any(v):
            raise ValueError("the frames carry no velocities (all momenta are zero or missing)")
        syms = frames[0].get_chemical_symbols()
        if masses is None:
            masses = frames[0].get_masses()
    else:
        if isinstance(velocities, (list, tuple)) and len(velocities) == 0:
            raise ValueError("velocities is empty: at least two frames are needed")
        v = np.asarray(velocities, dtype=float)
        if v.ndim != 3 or v.shape[2] != 3:
            raise ValueError(
                f"velocities must be ase.Atoms frames or an array of shape (T, N, 3), "
                f"got shape {v.shape}"
            )
        syms = None if symbols is None else [str(s) for s in symbols]
        if syms is not None and len(syms) != v.shape[1]:
            raise ValueError(
                f"symbols has {len(syms)} entries but velocities have {v.shape[1]} atoms"
            )
        if masses is None:
            raise ValueError("masses are required for velocity arrays (amu, shape (N,))")
    if v.shape[0] < 2 or v.shape[1] == 0:
        raise ValueError(f"velocities need at least 2 frames and 1 atom, got shape {v.shape}")
    check_finite(v, "velocities")
    m = np.asarray(masses, dtype=float)
    if m.ndim == 0:
        m = np.full(v.shape[1], float(m))
    if m.shape != (v.shape[1],):
        raise ValueError(f"masses must have shape ({v.shape[1]},), got {m.shape}")
    check_finite(m, "masses")
    if np.any(m <= 0):
        raise ValueError("masses must be positive")
    return v, m, syms


def vdos(
    velocities,
    masses=None,
    dt_fs: float | None = None,
    *,
    window="hann",
    species: str | Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
):
    """Mass-weighted vibrational density of states from velocities.

    Parameters
    ----------
    velocities : sequence of ase.Atoms or array_like
        Frames with momenta (e.g. an MD trajectory file), or velocities of shape
        ``(M, N, 3)`` in any unit (the result is normalised).
    masses : array_like, optional
        ``(N,)`` masses in amu (or a scalar for all atoms). Required for arrays; defaults to
        the masses of Atoms frames.
    dt_fs : float
        Time between frames in fs (required).
    window : str, array_like or None
        Taper applied to each velocity series before the FFT (any
        :func:`scipy.signal.get_window` name, ``(M,)`` weights, or None for none). Hann
        (default) suppresses leakage at the price of a 1.5-bin wide peak, see
        :func:`spectral_resolution`.
    species : str or sequence of str, optional
        None: VDOS of all atoms. A symbol (or ``"all"``): that species only. A sequence of
        symbols: a dict with one VDOS per entry. Each is normalised to unit area.
    symbols : sequence of str, optional
        Chemical symbols for array input (needed for ``species``).

    Returns
    -------
    omega : numpy.ndarray
        ``(M + 1,)`` angular frequencies ``k pi / (M dt)`` in rad/fs.
    g : numpy.ndarray or dict of str to numpy.ndarray
        ``g(omega)`` in fs/rad, one-sided, ``sum(g) * (omega[1] - omega[0]) = 1``.

    Notes
    -----
    A uniform drift of the centre of mass shows up at ``omega = 0``; remove it beforehand if
    unwanted. Velocities, not finite-difference positions, should be used.
    """
    if dt_fs is None:
        raise ValueError("dt_fs (time between frames in fs) is required")
    dt_fs = check_positive(dt_fs, "dt_fs")
    v, m, syms = _velocities(velocities, masses, symbols)
    M, N, _ = v.shape
    w = _window(window, M)
    if species is None:
        groups, single = {"all": np.arange(N)}, True
    else:
        single = isinstance(species, str)
        groups = species_indices(syms, N, species)
    # Per-atom spectra (mass-weighted, summed over xyz), chunked over atoms.
    per_atom = np.empty((M + 1, N))
    width = max(1, _FFT_CHUNK // (6 * M))
    for a0 in range(0, N, width):
        f = np.fft.rfft(v[:, a0:a0 + width] * w[:, None, None], n=2 * M, axis=0)
        per_atom[:, a0:a0 + width] = (f.real**2 + f.imag**2).sum(axis=2) * m[a0:a0 + width]
    domega = np.pi / (M * dt_fs)
    omega = np.arange(M + 1) * domega
    out = {}
    for lab, idx in groups.items():
        s = per_atom[:, idx].sum(axis=1)
        total = s.sum() * domega
        if total <= 0:
            raise ValueError(f"the velocities of species {lab!r} are all zero")
        out[lab] = s / total
    if single:
        return omega, next(iter(out.values()))
    return omega, out


def signal_cutoff(omega, g, rel: float = 1e-3) -> float:
    """Highest frequency at which a spectrum still carries signal.

    The largest ``omega`` where ``g >= rel * max(g)``; beyond it the spectrum has decayed
    below ``rel`` of its maximum up to the end of the grid (the Nyquist frequency of
    :func:`vdos`). With several spectra (a dict), the largest of their cutoffs.

    Parameters
    ----------
    omega : array_like
        Increasing angular frequencies (any unit; the result is in the same unit).
    g : array_like or dict of array_like
        Spectrum or spectra on ``omega``.
    rel : float
        Threshold relative to each spectrum's maximum, in ``(0, 1)``.

    Returns
    -------
    float
        The cutoff frequency (``omega[-1]`` when the spectrum never decays that far).
    """
    if not 0.0 < rel < 1.0:
        raise ValueError(f"rel must be in (0, 1), got {rel!r}")
    omega = np.asarray(omega, dtype=float)
    curves = list(g.values()) if isinstance(g, dict) else [g]
    top = 0.0
    for y in curves:
        y = np.asarray(y, dtype=float)
        if y.shape != omega.shape:
            raise ValueError(f"a spectrum has shape {y.shape}, omega {omega.shape}")
        check_finite(y, "g")
        peak = float(np.max(y))
        if not peak > 0:
            continue
        above = np.nonzero(y >= rel * peak)[0]
        top = max(top, float(omega[above[-1]]))
    return top if top > 0 else float(omega[-1])


def _check_spectrum(omega, g) -> tuple[np.ndarray, np.ndarray, float]:
    omega = np.asarray(omega, dtype=float)
    g = np.asarray(g, dtype=float)
    if omega.ndim != 1 or omega.shape != g.shape:
        raise ValueError(
            f"omega and g must be 1-D arrays of equal length, got {omega.shape} and {g.shape}"
        )
    if omega.size < 2:
        raise ValueError("omega needs at least 2 points")
    check_finite(omega, "omega")
    check_finite(g, "g")
    if np.any(omega < 0):
        raise ValueError("omega must be non-negative (one-sided spectrum, rad/fs)")
    if np.any(np.diff(omega) <= 0):
        raise ValueError("omega must be strictly increasing")
    norm = float(trapezoid(g, omega))
    if not norm > 0:
        raise ValueError(f"g must have a positive integral, got {norm}")
    return omega, g, norm


def zero_point_temperature(omega, g) -> float:
    """Zero-point temperature ``T_zero = (1/k_B) int g(w) hbar w / 2 dw`` in K.

    The kinetic-energy temperature of a quantum harmonic system at ``T = 0``: e.g.
    ``hbar w = 0.1 eV`` gives 580.226 K, a Debye spectrum gives ``(3/8) Theta_D``.

    Parameters
    ----------
    omega : array_like
        Increasing angular frequencies in rad/fs (as from :func:`vdos`).
    g : array_like
        Spectrum on ``omega``. It is renormalised to unit area (trapezoidal rule), so any
        normalisation may be passed.
    """
    omega, g, norm = _check_spectrum(omega, g)
    energy = 0.5 * HBAR_EV_FS * omega
    return float(trapezoid(g * energy, omega) / norm / units.kB)


def effective_temperature(omega, g, T):
    """Effective (quantum kinetic) temperature of harmonic modes at temperature ``T``.

    ``T_eff = (1/k_B) int g(w) (hbar w / 2) coth(hbar w / 2 k_B T) dw``: the temperature
    a classical thermostat must have to give each mode its quantum kinetic energy. It equals
    :func:`zero_point_temperature` at ``T = 0`` and tends to ``T`` for ``T >> T_zero``.

    Parameters
    ----------
    omega, g : array_like
        As in :func:`zero_point_temperature`.
    T : float or array_like
        Temperature(s) in K, ``>= 0``.

    Returns
    -------
    float or numpy.ndarray
        ``T_eff`` in K, with the shape of ``T``.
    """
    omega, g, norm = _check_spectrum(omega, g)
    T_arr = np.asarray(T, dtype=float)
    check_finite(T_arr, "T")
    if np.any(T_arr < 0):
        raise ValueError("T must be >= 0 K")
    e = 0.5 * HBAR_EV_FS * omega                        # hbar w / 2, eV
    kT = units.kB * T_arr.reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = e[None, :] / kT
        small = x < 1e-4
        mode = np.where(
            kT == 0,
            e[None, :],
            np.where(small, kT * (1.0 + x**2 / 3.0), e[None, :] / np.tanh(np.where(small, 1, x))),
        )
    out = trapezoid(g[None, :] * mode, omega, axis=1) / norm / units.kB
    return float(out[0]) if T_arr.ndim == 0 else out.reshape(T_arr.shape)
