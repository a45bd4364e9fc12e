"""Quantum thermal bath (QTB) and adaptive QTB as ASE dynamics, NVT and NPT.

Langevin dynamics whose random force has the quantum spectrum
``theta(w, T) = (hbar w / 2) coth(hbar w / 2 kB T)`` (Dammak et al., PRL 103, 190601,
2009), so that harmonic modes sample their quantum energy, zero point included, at the
cost of classical MD. ``docs/methods.md`` section 1 has the equations cited below as (1.x).

Noise (1.2a, the filter method of Barrat & Rodney, as LAMMPS ``fix qtb``): every degree
of freedom has a stream of Gaussian numbers ``r``, one per noise interval
(``h = alpha dt <= pi / (2 cutoff_frequency)``), and the random force is
``R = sqrt(2 m gamma K / h) sum_m H_m r_{-m}`` (``m = 0 .. 2 N_f - 1``), held for ``alpha``
steps. ``H`` is the time-domain filter whose spectrum is ``sqrt(theta_d)`` (the
deconvolved spectrum, 1.4) times the sinc correction of the hold, on the grid
``dw = 2 pi / (2 N_f h) <= friction / 3``. ``K = (1 - exp(-2 gamma dt)) / (2 gamma dt)``
makes the white-noise (classical) limit equal BAOAB Langevin exactly. The forces of a
block of ``2 N_f`` intervals are computed at its start by one FFT convolution; the white
numbers come from counter-based (Philox) streams keyed by the ``rng``, so only the block's
forces are stored (float32).

Integrator (1.3): ASE's :class:`~ase.md.langevinbaoab.LangevinBAOAB` with its O step's
white noise replaced by the coloured force, ``v <- exp(-gamma dt) v + (dt / m) R``; its
Langevin-Hoover barostat gives the constant-pressure variant (``externalstress``,
isotropic with ``hydrostatic=True`` or full cell). The random force never goes through
the calculator.

Adaptive QTB (1.5, Mangaud et al., JCTC 15, 2863, 2019): for each group of atoms
the velocity and random-force spectra of the last segment (``2 N_f`` noise intervals)
give the fluctuation-dissipation residual
``dFDT(w) = m gamma_r(w) C_vv(w) - Re C_vR(w)``; the noise of the group is scaled by
``gamma_r(w) / gamma`` and ``gamma_r <- gamma_r - a gamma dFDT / theta`` after each
segment (``a = adaptation_rate``), clipped to ``[gamma_r_min, gamma_r_max] * gamma``.
The friction stays ``gamma``. The same spectra are the leakage diagnostic of plain QTB
(``diagnostics=True``).
"""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np
from ase import units
from ase.md.langevinbaoab import LangevinBAOAB

from ase_mlp._util import check_checkpoint_meta, save_npz_atomic
from ase_mlp.calculators.oscillators import quantum_mode_energy


__all__ = ["QTB", "deconvolve_theta", "lorentzian_bin_kernel", "qtb_filter"]

#: default cutoff: LAMMPS ``fix qtb`` f_max = 200 ps^-1 (cycles), as angular frequency
DEFAULT_CUTOFF = 2.0 * np.pi * 0.2 / units.fs


def qtb_filter(theta_k: np.ndarray, alpha: int) -> np.ndarray:
    """Time-domain filter ``H_n`` from the target spectrum on the filter grid (1.2a, 3-4).

    Parameters
    ----------
    theta_k : array (2 N_f,)
        Target energy spectrum (eV) at ``f_k = (k - N_f) / (2 N_f h)``.
    alpha : int
        Steps per noise interval (sinc correction of the hold).

    Returns
    -------
    numpy.ndarray
        ``H_n = (1 / 2 N_f) sum_k Hhat_k cos(pi (k - N_f)(n - N_f) / N_f)``,
        ``n = 0 .. 2 N_f - 1`` (units sqrt(eV)); ``R = sum_m H_m r_{-m}``.
    """
    theta_k = np.asarray(theta_k, dtype=float)
    n2 = len(theta_k)
    nf = n2 // 2
    j = np.arange(n2) - nf
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(j == 0, 1.0,
                        alpha * np.sin(np.pi * j / (2 * alpha * nf)) / np.sin(np.pi * j / (2 * nf)))
    hk = np.sqrt(np.maximum(theta_k, 0.0)) * corr
    # the cosine sum is the inverse DFT of the (even) spectrum placed at j mod 2 N_f
    x = np.fft.ifft(np.roll(hk, -nf)).real          # x[l mod 2 N_f], l = n - N_f
    return np.roll(x, nf)


def _gauss_bins(edges: np.ndarray, n_sub: int, order: int = 4):
    """Gauss-Legendre nodes and weights covering the bins ``edges[j] .. edges[j+1]``
    (``n_sub`` sub-intervals per bin): arrays (n_bins, n_sub * order)."""
    x, wq = np.polynomial.legendre.leggauss(order)
    lo, hi = edges[:-1, None], edges[1:, None]
    s = (np.arange(n_sub)[:, None] + 0.5 * (x[None, :] + 1.0)).reshape(-1) / n_sub
    nodes = lo + (hi - lo) * s[None, :]
    weights = (hi - lo) * np.tile(0.5 * wq, n_sub)[None, :] / n_sub
    return nodes, weights


def lorentzian_bin_kernel(omega0, omega: np.ndarray, gamma: float, *,
                          kinetic: bool = False) -> np.ndarray:
    """Response of harmonic modes to a noise spectrum that is constant over each grid bin.

    For a mode of frequency ``w0`` under friction ``gamma``, ``<E_pot> = sum_j K_j theta_j``
    with ``K_j = (gamma w0^2 / pi) int_{bin j} dw / D(w)``, ``D = (w0^2 - w^2)^2 +
    gamma^2 w^2`` (methods 1.1), the integral taken over the whole bin
    ``[w_j - dw/2, w_j + dw/2]`` of the uniform grid ``omega`` (``omega[0] = 0``: the bin
    ``[0, dw/2]``) by Gauss-Legendre quadrature fine enough to resolve the Lorentzian.
    ``kinetic=True`` gives ``<E_kin>``: ``(gamma / pi) int_{bin j} w^2 dw / D(w)``.

    Returns an array (len(omega0), len(omega)).
    """
    w0 = np.atleast_1d(np.asarray(omega0, dtype=float))
    omega = np.asarray(omega, dtype=float)
    dw = omega[1] - omega[0]
    edges = np.concatenate([[max(omega[0] - 0.5 * dw, 0.0)], omega + 0.5 * dw])
    # sub-intervals no wider than gamma / 3: 4-point Gauss-Legendre is then good to ~1e-5
    n_sub = int(max(1, np.ceil(3.0 * dw / gamma - 1e-9)))
    nodes, weights = _gauss_bins(edges, n_sub)
    nodes, weights = nodes.reshape(-1), weights.reshape(-1)
    nb = len(omega)
    out = np.empty((len(w0), nb))
    chunk = max(1, 4_000_000 // len(nodes))
    for a in range(0, len(w0), chunk):
        wi = w0[a:a + chunk, None]
        d = (wi**2 - nodes[None, :] ** 2) ** 2 + (gamma * nodes[None, :]) ** 2
        num = nodes[None, :] ** 2 if kinetic else wi**2
        vals = num * weights[None, :] / np.maximum(d, 1e-300)
        out[a:a + chunk] = gamma / np.pi * vals.reshape(len(wi), nb, -1).sum(axis=2)
    return out


def deconvolve_theta(omega: np.ndarray, theta: np.ndarray, gamma: float, *,
                     n_iter: int = 20) -> np.ndarray:
    """Richardson-Lucy deconvolution of the potential-energy kernel (1.4).

    Finds ``theta_d >= 0`` on the uniform grid ``omega`` (``omega[0] = 0``) with
    ``sum_j K_ij theta_d(w_j) = theta(w_i) / 2`` for every ``w_i > 0``, where ``K_ij`` is
    the Lorentzian integrated over frequency bin ``j`` (:func:`lorentzian_bin_kernel`), so
    that a harmonic mode of frequency ``w_i`` has ``<E_pot> = theta(w_i) / 2`` at finite
    friction. Integrating over the bins (rather than sampling the Lorentzian at the grid
    points) keeps the kernel normalised on any grid; the deconvolution is only meaningful
    when the grid resolves the Lorentzian, ``dw <= gamma / 3``.
    """
    omega = np.asarray(omega, dtype=float)
    theta = np.asarray(theta, dtype=float)
    if omega.ndim != 1 or len(omega) < 3 or omega[0] != 0.0:
        raise ValueError("deconvolve_theta needs a uniform grid omega[0] = 0, omega[1], ... "
                         f"of at least 3 points, got {omega[:3]!r}")
    K = lorentzian_bin_kernel(omega[1:], omega, gamma)          # (n - 1, n)
    g = 0.5 * theta[1:]
    f = theta.copy()
    ktg = K.T @ g
    for _ in range(n_iter):
        f = f * ktg / np.maximum(K.T @ (K @ f), 1e-300)
    return f


class QTB(LangevinBAOAB):
    """Quantum thermal bath (optionally adaptive), NVT or NPT, for any ASE calculator.

    Parameters
    ----------
    atoms : ase.Atoms
        With masses and a calculator.
    timestep : float
        ASE time units.
    temperature_K : float or callable
        Bath temperature (K, >= 0), or ``f(t) -> K`` of the simulation time ``t`` (ASE
        units, ``nsteps * timestep``), evaluated at every noise interval: temperature
        ramps (the filter is rebuilt when the value changes).
    friction : float
        ``gamma`` (1 / ASE time, > 0); typical 1-5 ps^-1 for QTB, 10-20 ps^-1 for adQTB.
    cutoff_frequency : float, optional
        Angular cutoff ``w_cut`` of the noise spectrum (rad / ASE time), above the highest
        phonon and below ``pi / timestep`` (default ``2 pi x 0.2 fs^-1`` as LAMMPS' f_max,
        lowered to ``pi / (2 timestep)`` if needed). The noise interval is
        ``h = alpha timestep <= pi / (2 w_cut)``.
    segment_length : float, optional
        Memory of the noise filter, ``2 N_f h`` (ASE time): the spectral resolution
        is ``2 pi / segment_length``, which must resolve the friction:
        ``segment_length >= 6 pi / friction`` (default: that, rounded up to whole noise
        intervals; a shorter one is a ``ValueError``). Also the length of the spectra of
        the adaptive/diagnostic segments. Memory: ``2 N_f x 3 N x 4`` bytes.
    adaptive : bool
        Adaptive QTB (per-group ``gamma_r(w)``).
    adaptation_rate : float
        Dimensionless step ``a`` of the ``gamma_r`` update per segment (default 0.5);
        use a large one to equilibrate and a small one for production.
    groups : None, "all" or sequence of int
        Atoms sharing spectra and ``gamma_r``: by chemical symbol (default), all atoms
        together, or one label per atom.
    deconvolve : bool
        Use the deconvolved ``theta_d`` (1.4, default): harmonic ``<E_pot>`` equal to
        ``theta(w) / 2`` at finite friction (the Lorentzian integrated over each frequency
        bin, 20 Richardson-Lucy iterations). ``False``: ``theta`` itself, whose
        ``<E_pot>`` is low by ``~ friction / w`` relative (the Lorentzian broadening).
    diagnostics : bool
        Collect the spectra and the FDT residual of each segment (default: ``adaptive``).
    fixcm : bool
        Remove the centre-of-mass acceleration of the random force (default ``False``):
        ``R_i -= m_i sum_j R_j / M``, mass-weighted, so every atom loses the same
        acceleration. Only for a free centre of mass (e.g. a periodic crystal that must
        not drift); for atoms in external wells (every mode bound) leave it off: it takes
        the noise of the centre-of-mass direction away from bound modes.
    gamma_r_bounds : (float, float)
        Bounds of ``gamma_r / gamma`` for the adaptive update.
    fdt_log : str or path, optional
        Append one line per segment and group: time (fs), group, FDT residual,
        min and max ``gamma_r / gamma``.
    kernel : {"quantum", "classical"}
        ``"classical"`` replaces ``theta`` by ``k_B T`` (coloured-noise machinery, classical
        Langevin statistics): the reference run for quantum/classical comparisons.
    rng : numpy Generator or seed
        Random numbers (required for reproducible runs; ``None`` draws a seed, with a
        warning, as ASE does).
    externalstress, hydrostatic, P_tau, P_mass, P_mass_factor, disable_cell_langevin
        Constant pressure, as :class:`ase.md.langevinbaoab.LangevinBAOAB`
        (``externalstress`` in eV/Å³, negative = compression). The kinetic part of the
        pressure then includes the zero-point kinetic energy.
    **kwargs
        ``logfile``, ``trajectory``, ``loginterval``, ``append_trajectory``.

    Notes
    -----
    Kinetic-energy bias. A harmonic mode ``w0`` under friction ``gamma`` has (1.1)

        ``<E_kin> = (gamma / pi) int_0^inf w^2 theta_t(w) / D(w) dw``,
        ``D = (w0^2 - w^2)^2 + gamma^2 w^2``,

    with ``theta_t`` the spectrum the noise carries (``theta_d`` times the cutoff), while
    the exact value is ``theta(w0) / 2``. Because ``theta ~ hbar w / 2`` at high ``w``,
    ``<E_kin> - theta(w0) / 2 ~ (hbar gamma / 2 pi) ln(w_cut / w0)`` per degree of
    freedom: it grows with the friction and the cutoff (e.g. +49 % for hbar w0 = 0.02 eV
    at 58 K, gamma = 10 / ps, w_cut = 0.5 rad/fs, measured and predicted; +5.0 % for
    hbar w0 = 0.1 eV at 100 K, gamma = 5 / ps, a sharp cutoff at 2.83 rad/fs and no
    deconvolution, methods Q2). :meth:`harmonic_energies` evaluates both integrals for
    this bath. The deconvolution corrects ``<E_pot>`` only, so report quantum observables
    from potential-energy (and virial) estimators; the kinetic temperature and the
    kinetic pressure carry the bias. Never combine QTB with velocity rescaling,
    Nosé-Hoover or path integrals.
    """

    #: Richardson-Lucy iterations of the deconvolution (1.4)
    DECONVOLUTION_ITERATIONS = 20

    def __init__(self, atoms, timestep, temperature_K, friction, *, cutoff_frequency=None,
                 segment_length=None, adaptive=False, adaptation_rate=0.5, groups=None,
                 deconvolve=True, diagnostics=None, fixcm=False,
                 gamma_r_bounds=(0.05, 20.0), fdt_log=None, kernel="quantum", rng=None,
                 externalstress=None, hydrostatic=False, P_tau=None, P_mass=None,
                 P_mass_factor=1.0, disable_cell_langevin=False, **kwargs):
        self._check_inputs(atoms, timestep, friction)
        self._T_of_t = temperature_K if callable(temperature_K) else None
        T0 = float(temperature_K(0.0)) if callable(temperature_K) else float(temperature_K)
        self._check_temperature(T0)
        self.friction = float(friction)
        if cutoff_frequency is None:
            cutoff_frequency = min(DEFAULT_CUTOFF, np.pi / (2.0 * timestep))
        cutoff_frequency = float(cutoff_frequency)
        if not np.isfinite(cutoff_frequency) or cutoff_frequency <= 0:
            raise ValueError(f"cutoff_frequency must be > 0, got {cutoff_frequency}")
        if cutoff_frequency * timestep > np.pi:
            raise ValueError(
                f"timestep too long for the cutoff frequency: timestep "
                f"{timestep / units.fs:.4g} fs > pi / cutoff_frequency = "
                f"{np.pi / cutoff_frequency / units.fs:.4g} fs; use a shorter timestep or a "
                f"cutoff below {np.pi / timestep * units.fs:.4g} rad/fs")
        # noise interval h: its Nyquist frequency pi / h is at least 2 w_cut, so the
        # images of the held noise above pi / h carry (almost) nothing
        self.alpha = max(1, int(np.floor(np.pi / (2.0 * cutoff_frequency * timestep))))
        self.h = self.alpha * timestep
        self.cutoff_frequency = cutoff_frequency
        # frequency grid dw = 2 pi / (2 N_f h) <= friction / 3: the Lorentzian of width
        # friction is resolved (deconvolution, no ripple of the finite filter)
        min_length = 3.0 * 2.0 * np.pi / self.friction
        if segment_length is None:
            nf = max(8, int(np.ceil(min_length / (2 * self.h) - 1e-9)))
        else:
            if not np.isfinite(segment_length) or segment_length <= 0:
                raise ValueError(f"segment_length must be > 0, got {segment_length}")
            nf = max(8, int(round(segment_length / (2 * self.h))))
            if 2 * nf * self.h < min_length * (1 - 1e-9):
                raise ValueError(
                    f"segment_length {2 * nf * self.h / units.fs:.6g} fs is too short for "
                    f"friction {self.friction * units.fs:.4g} /fs: its frequency resolution "
                    f"2 pi / segment_length = {2 * np.pi / (2 * nf * self.h) * units.fs:.4g} "
                    f"rad/fs must be <= friction / 3 (the Lorentzian of the friction must be "
                    f"resolved); use segment_length >= 6 pi / friction = "
                    f"{min_length / units.fs:.6g} fs, or leave it out")
        self.n_f = nf
        self.segment_length = 2 * nf * self.h
        if kernel not in ("quantum", "classical"):
            raise ValueError(f"kernel must be 'quantum' or 'classical', got {kernel!r}")
        self.kernel = kernel
        self.adaptive = bool(adaptive)
        if adaptation_rate < 0:
            raise ValueError(f"adaptation_rate must be >= 0, got {adaptation_rate}")
        self.adaptation_rate = float(adaptation_rate)
        self.deconvolve = bool(deconvolve)
        self.diagnostics = self.adaptive if diagnostics is None else bool(diagnostics)
        self.fixcm = bool(fixcm)
        self.gamma_r_bounds = (float(gamma_r_bounds[0]), float(gamma_r_bounds[1]))
        self.fdt_log = None if fdt_log is None else pathlib.Path(fdt_log)
        self._set_groups(atoms, groups)
        dw = 2 * np.pi / self.segment_length
        # positive frequencies of the filter grid (0 .. pi / h)
        self.omega = np.arange(nf + 1) * dw
        # deconvolution up to where the smooth cutoff has killed the spectrum
        self._n_dec = int(min(nf + 1, np.ceil(1.3 * cutoff_frequency / dw) + 2))
        self._dec_kernel = None
        self.gamma_r = np.full((self.n_groups, nf + 1), self.friction)
        self._T_filter = None
        self._leak_warned = set()
        self.fdt = {}
        super().__init__(atoms, timestep, temperature_K=T0, externalstress=externalstress,
                         hydrostatic=hydrostatic, T_tau=1.0 / self.friction, P_tau=P_tau,
                         P_mass=P_mass, P_mass_factor=P_mass_factor,
                         disable_cell_langevin=disable_cell_langevin, rng=rng, **kwargs)
        n_dof = 3 * len(atoms)
        # The white noise of block b (2 N_f intervals) and dof chunk c is the stream
        # Philox(key, counter (0, 0, c, b)): it is regenerated when needed, never stored.
        # At the start of a block its coloured force is computed from the white noise of
        # this block and the previous one by FFT and kept (float32: the only large array).
        draw = getattr(self.rng, "integers", None) or self.rng.randint    # or RandomState
        self._noise_key = np.asarray(draw(0, 2**62, size=2), dtype=np.uint64)
        self._chunk = max(3, 3 * (400_000 // (3 * 2 * nf)))
        self._block = 0                           # index of the current block (1 = first)
        self._R_block = np.zeros((2 * nf, n_dof), dtype=np.float32)
        self._block_stale = False                 # filter changed inside the block
        self._white_cache = None                  # (prev, cur) while stale
        self._substep = 0                         # steps done in the current interval
        self._interval = 0                        # intervals done in the current block
        self._R = np.zeros((len(atoms), 3))
        if self.diagnostics:
            # the segment's velocities and forces (float32: the spectra are averages)
            self._v_seg = np.zeros((2 * nf, n_dof), dtype=np.float32)
            self._r_seg = np.zeros((2 * nf, n_dof), dtype=np.float32)
            self._v_acc = np.zeros(n_dof)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _check_temperature(T):
        if not np.isfinite(T) or T < 0:
            raise ValueError(f"temperature_K must be >= 0, got {T}")

    @staticmethod
    def _check_inputs(atoms, timestep, friction):
        if not np.isfinite(timestep) or timestep <= 0:
            raise ValueError(f"timestep must be > 0, got {timestep}")
        if friction is None or not np.isfinite(friction) or friction <= 0:
            raise ValueError(f"friction must be > 0 (1 / ASE time), got {friction}")
        masses = atoms.get_masses()
        if len(atoms) == 0:
            raise ValueError("QTB needs at least one atom")
        if not np.all(np.isfinite(masses)) or np.any(masses <= 0):
            bad = np.flatnonzero(~(np.isfinite(masses) & (masses > 0)))
            raise ValueError(f"atoms without a positive mass: indices {bad[:10].tolist()} "
                             f"(masses {masses[bad[:10]].tolist()}); set atoms.set_masses()")
        if not np.all(np.isfinite(atoms.positions)):
            raise ValueError("atoms.positions contain NaN or inf")

    def _set_groups(self, atoms, groups):
        if groups is None:
            labels = np.array(atoms.get_chemical_symbols())
        elif isinstance(groups, str):
            if groups != "all":
                raise ValueError(f"groups must be None, 'all' or one label per atom, got "
                                 f"{groups!r}")
            labels = np.zeros(len(atoms), dtype=int)
        else:
            labels = np.asarray(groups)
            if labels.shape != (len(atoms),):
                raise ValueError(f"groups has shape {labels.shape}, expected ({len(atoms)},)")
        names, index = np.unique(labels, return_inverse=True)
        self.group_names = [str(n) for n in names]
        self.n_groups = len(names)
        self.group_of_atom = index
        order = np.argsort(index, kind="stable")
        self._order = order
        bounds = np.searchsorted(index[order], np.arange(self.n_groups + 1))
        self._dof_slices = [slice(3 * bounds[g], 3 * bounds[g + 1])
                            for g in range(self.n_groups)]
        self._masses = atoms.get_masses()[:, None]          # fixed during the run
        self._mass_dof = np.repeat(self._masses[order, 0], 3)

    # ------------------------------------------------------------------ filter
    def set_temperature(self, temperature_K, from_init=False):
        """Set the bath temperature (K) and rebuild the noise filter."""
        self._check_temperature(float(temperature_K))
        super().set_temperature(float(temperature_K), from_init=from_init)
        self._build_filters()

    def _theta(self) -> np.ndarray:
        if self.kernel == "classical":
            return np.full_like(self.omega, units.kB * self.temperature_K)
        return quantum_mode_energy(self.omega, self.temperature_K)

    def _deconvolve(self, theta: np.ndarray) -> np.ndarray:
        """``deconvolve_theta`` on the grid below ~1.3 w_cut, with a cached kernel (the
        filter is rebuilt at every temperature change of a ramp)."""
        n = self._n_dec
        if self._dec_kernel is None:
            K = lorentzian_bin_kernel(self.omega[1:n], self.omega[:n], self.friction)
            self._dec_kernel = K
        K = self._dec_kernel
        ktg = K.T @ (0.5 * theta[1:n])
        f = theta[:n].copy()
        for _ in range(self.DECONVOLUTION_ITERATIONS):
            f = f * ktg / np.maximum(K.T @ (K @ f), 1e-300)
        out = theta.copy()
        out[:n] = f
        return out

    def _theta_target(self) -> np.ndarray:
        theta = self._theta()
        if self.deconvolve:
            theta = self._deconvolve(theta)
        # smooth cutoff c(w) = 1 / (1 + exp((w - w_cut) / w_s)), w_s = w_cut / 100 (1.2b)
        x = np.clip((self.omega - self.cutoff_frequency) / (self.cutoff_frequency / 100), -60, 60)
        return theta / (1.0 + np.exp(x))

    def _build_filters(self) -> None:
        nf = self.n_f
        theta = self._theta_target()
        a = np.exp(-self.friction * self.dt)
        self._K = (1.0 - a * a) / (2.0 * self.friction * self.dt)
        j = np.abs(np.arange(2 * nf) - nf)
        self._H = np.empty((self.n_groups, 2 * nf))
        for g in range(self.n_groups):
            spec = theta * self.gamma_r[g] / self.friction
            self._H[g] = qtb_filter(spec[j], self.alpha)
        self._amp = np.sqrt(2.0 * self._mass_dof * self.friction * self._K / self.h)
        self._T_filter = self.temperature_K
        self._block_stale = True          # the current block was made with the old filter

    def harmonic_energies(self, omega0, group=0) -> dict:
        """Predicted ``<E_pot>`` and ``<E_kin>`` (eV per degree of freedom) of a harmonic
        mode of angular frequency ``omega0`` (rad / ASE time) under this bath.

        ``E_pot = (gamma w0^2 / pi) int theta_t(w) / D(w) dw`` and
        ``E_kin = (gamma / pi) int w^2 theta_t(w) / D(w) dw`` (methods 1.1), with
        ``D = (w0^2 - w^2)^2 + gamma^2 w^2`` and ``theta_t`` the spectrum the noise
        carries (deconvolved if ``deconvolve``, times the smooth cutoff and
        ``gamma_r / gamma`` of ``group``), integrated over the bins of the noise grid. The
        exact quantum value of both is ``theta(w0) / 2``; ``E_kin`` exceeds it by about
        ``(hbar gamma / 2 pi) ln(w_cut / w0)`` (the ``hbar w / 2`` tail of the spectrum).
        """
        w0 = np.atleast_1d(np.asarray(omega0, dtype=float))
        theta = self._theta_target() * self.gamma_r[group] / self.friction
        out = {}
        for name, kin in (("epot", False), ("ekin", True)):
            val = lorentzian_bin_kernel(w0, self.omega, self.friction, kinetic=kin) @ theta
            out[name] = val if np.ndim(omega0) else float(val[0])
        return out

    # ------------------------------------------------------------------ noise
    def _white(self, block: int, c: int) -> np.ndarray:
        """White noise (2 N_f, width) of block ``block`` (<= 0: the pre-run history) and dof
        chunk ``c`` (group-ordered dofs ``c * chunk ...``)."""
        n_dof = self._R_block.shape[1]
        width = min(self._chunk, n_dof - c * self._chunk)
        ctr = np.array([0, 0, c, block + 2**62], dtype=np.uint64)
        gen = np.random.Generator(np.random.Philox(key=self._noise_key, counter=ctr))
        return gen.standard_normal((2 * self.n_f, width), dtype=np.float32)

    def _convolve_block(self) -> None:
        """Coloured force of the 2 N_f intervals of the current block from the white noise
        of this and the previous block (FFT convolution with the filter: O(log N_f) per
        number instead of O(N_f) for a direct sum)."""
        from scipy import fft

        n2 = 2 * self.n_f
        n_dof = self._R_block.shape[1]
        nfft = fft.next_fast_len(2 * n2, real=True)     # >= 2 n2: no wrap-around
        hf = [fft.rfft(h, nfft).astype(np.complex64) for h in self._H]
        for c, a in enumerate(range(0, n_dof, self._chunk)):
            x = np.concatenate([self._white(self._block - 1, c), self._white(self._block, c)])
            xf = fft.rfft(x, nfft, axis=0)                  # float32 in, complex64 out
            b = a + x.shape[1]
            for g, sl in enumerate(self._dof_slices):
                lo, hi = max(a, sl.start), min(b, sl.stop)
                if lo < hi:
                    y = fft.irfft(xf[:, lo - a:hi - a] * hf[g][:, None], nfft, axis=0)
                    self._R_block[:, lo:hi] = y[n2:2 * n2]
        self._block_stale = False
        self._white_cache = None

    def _direct_force(self, k: int) -> np.ndarray:
        """Coloured force of interval ``k`` of the block, summed directly (the filter
        changed inside the block, e.g. by a temperature ramp)."""
        n2 = 2 * self.n_f
        if self._white_cache is None:
            n_chunks = -(-self._R_block.shape[1] // self._chunk)
            self._white_cache = tuple(
                np.concatenate([self._white(b, c) for c in range(n_chunks)], axis=1)
                for b in (self._block - 1, self._block))
        prev, cur = self._white_cache
        R = np.empty(self._R_block.shape[1])
        for g, sl in enumerate(self._dof_slices):
            hr = self._H[g][::-1]                 # hr[s] multiplies x[k + 1 + s]
            R[sl] = hr[:n2 - k - 1] @ prev[k + 1:, sl] + hr[n2 - k - 1:] @ cur[:k + 1, sl]
        return R

    def _new_interval(self) -> None:
        if self._T_of_t is not None:
            T = float(self._T_of_t(self.nsteps * self.dt))
            if T != self._T_filter:
                self.set_temperature(T)
        k = self._interval
        if k == 0:
            self._block += 1
            self._convolve_block()
        R = self._direct_force(k) if self._block_stale else self._R_block[k].astype(float)
        R *= self._amp
        out = np.empty((len(self._masses), 3))
        out[self._order] = R.reshape(-1, 3)               # back to atom order
        if self.fixcm:
            # mass-weighted: removes the centre-of-mass acceleration of the noise and
            # nothing else (an unweighted mean would drive the light atoms' in-phase
            # mode with the heavy atoms' noise)
            m = self._masses
            out -= m * (out.sum(axis=0) / m.sum())
        self._R = out

    # ------------------------------------------------------------------ O step
    def _BAOAB_OU(self, drag_gamma_mod=0.0):
        if self._substep == 0:
            self._new_interval()
        vel = self.atoms.get_velocities()
        if self.hydrostatic or np.ndim(drag_gamma_mod) == 0:
            decay = np.exp(-(self.gamma + drag_gamma_mod) * self.dt)
            vel = vel * decay
        else:
            from scipy.linalg import expm

            vel = vel @ expm(-(self.gamma * np.identity(3) + drag_gamma_mod) * self.dt).T
        kick = (self.dt / self._masses) * self._R
        if self.diagnostics:
            mid = self.atoms.get_velocities() * np.exp(-0.5 * self.gamma * self.dt) \
                + 0.5 * kick
            self._v_acc += mid[self._order].reshape(-1)
        self.atoms.set_velocities(vel + kick)
        self._substep += 1
        if self._substep == self.alpha:
            self._substep = 0
            k = self._interval
            if self.diagnostics:
                self._v_seg[k] = self._v_acc / self.alpha
                self._r_seg[k] = self._R[self._order].reshape(-1)
                self._v_acc[:] = 0.0
            self._interval = (k + 1) % (2 * self.n_f)
            if self._interval == 0 and self.diagnostics:
                self._end_segment()

    # ------------------------------------------------------------------ spectra
    def _end_segment(self) -> None:
        n2 = 2 * self.n_f
        vh = np.fft.rfft(self._v_seg, axis=0)             # (N_f + 1, n_dof)
        rh = np.fft.rfft(self._r_seg, axis=0)
        norm = self.h / n2
        m = self._mass_dof
        theta = np.maximum(self._theta(), 1e-12)
        below = self.omega < self.cutoff_frequency
        for g, sl in enumerate(self._dof_slices):
            mcvv = norm * np.mean(m[sl] * np.abs(vh[:, sl]) ** 2, axis=1)
            cvr = norm * np.mean((vh[:, sl] * np.conj(rh[:, sl])).real, axis=1)
            crr = norm * np.mean(np.abs(rh[:, sl]) ** 2 / m[sl], axis=1)
            dfdt = self.gamma_r[g] * mcvv - cvr
            scale = np.mean(np.abs(cvr[below])) or 1.0
            residual = float(np.mean(np.abs(dfdt[below])) / scale)
            name = self.group_names[g]
            self.fdt[name] = {"omega": self.omega.copy(), "mCvv": mcvv, "CvR": cvr,
                              "dFDT": dfdt, "gamma_r": self.gamma_r[g].copy(),
                              "CRR": crr, "residual": residual,
                              "time": self.nsteps * self.dt}
            if self.adaptive and self.adaptation_rate > 0:
                lo, hi = self.gamma_r_bounds
                new = self.gamma_r[g] - self.adaptation_rate * self.friction * dfdt / theta
                floor = new <= lo * self.friction
                self.gamma_r[g] = np.clip(new, lo * self.friction, hi * self.friction)
                leaking = floor & below & (dfdt > 0) & (cvr > 0.05 * scale)
                if leaking.sum() >= 2 and name not in self._leak_warned:
                    self._leak_warned.add(name)
                    w = self.omega[leaking] * units.fs
                    warnings.warn(
                        f"adaptive QTB, group {name!r}: gamma_r reached its floor "
                        f"{lo:g} x friction at w = {w.min():.3g}-{w.max():.3g} rad/fs while "
                        f"those modes still hold too much energy (dFDT > 0): the friction "
                        f"{self.friction * units.fs:.3g}/fs is too low to compensate "
                        f"zero-point-energy leakage; increase it", UserWarning, stacklevel=2)
            if self.fdt_log is not None:
                with open(self.fdt_log, "a", encoding="utf-8") as fh:
                    gr = self.gamma_r[g][below] / self.friction
                    fh.write(f"{self.nsteps * self.dt / units.fs:14.3f} {name:>8s} "
                             f"{residual:10.5f} {gr.min():9.4f} {gr.max():9.4f}\n")
        if self.adaptive:
            self._build_filters()

    def write_spectra(self, prefix) -> list[pathlib.Path]:
        """Write the last segment's spectra, one file per group (``<prefix>_<group>.out``).

        Columns: w (rad/fs), m C_vv (eV fs), Re C_vR / (gamma_r/gamma) ... as FeNNol's
        ``QTB_spectra``: w, mC_vv, C_vR/gamma_r, dFDT, gamma_r (1/fs), C_RR.
        """
        if not self.fdt:
            raise RuntimeError("no spectra yet: enable diagnostics and run at least one "
                               f"segment ({2 * self.n_f * self.alpha} steps)")
        paths = []
        for name, d in self.fdt.items():
            path = pathlib.Path(f"{prefix}_{name}.out")
            cols = np.column_stack([d["omega"] * units.fs, d["mCvv"] / units.fs,
                                    d["CvR"] / np.maximum(d["gamma_r"], 1e-300) / units.fs**2,
                                    d["dFDT"] / units.fs, d["gamma_r"] * units.fs,
                                    d["CRR"] / units.fs])
            np.savetxt(path, cols, header="omega_rad_per_fs mCvv CvR_over_gamma_r dFDT "
                       "gamma_r_per_fs CRR")
            paths.append(path)
        return paths

    # ------------------------------------------------------------------ restart
    def save_state(self, path) -> None:
        """Checkpoint everything needed to continue bit-for-bit (atomic write, ``.npz``).

        Atoms (positions, momenta, cell), step count, forces, barostat state, noise
        buffers, random generator state and ``gamma_r``.
        """
        path = pathlib.Path(path)
        state = {
            "positions": self.atoms.get_positions(), "momenta": self.atoms.get_momenta(),
            "cell": self.atoms.cell.array.copy(), "accel": self.accel,
            "nsteps": np.array(self.nsteps), "noise_key": self._noise_key,
            "block": np.array(self._block), "R_block": self._R_block,
            "block_stale": np.array(self._block_stale), "substep": np.array(self._substep),
            "interval": np.array(self._interval), "R": self._R, "gamma_r": self.gamma_r,
            "temperature_K": np.array(self.temperature_K),
            "rng": np.array(json.dumps(self.rng.bit_generator.state, default=int)),
            "meta": np.array(json.dumps({"n_f": self.n_f, "alpha": self.alpha,
                                         "natoms": len(self.atoms), "chunk": self._chunk,
                                         "groups": self.group_names,
                                         "friction": self.friction, "dt": self.dt})),
        }
        if self.externalstress is not None:
            state["p_eps"] = np.asarray(self.p_eps)
            state["force_eps"] = np.asarray(self.force_eps)
        if self.diagnostics:
            state.update(v_seg=self._v_seg, r_seg=self._r_seg, v_acc=self._v_acc)
        save_npz_atomic(path, state)

    def load_state(self, path) -> None:
        """Restore a :meth:`save_state` checkpoint into this (identically built) QTB."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            mine = {"n_f": self.n_f, "alpha": self.alpha, "natoms": len(self.atoms),
                    "groups": self.group_names, "chunk": self._chunk,
                    "friction": self.friction, "dt": self.dt}
            check_checkpoint_meta(path, meta, mine, "QTB")
            self.atoms.set_cell(z["cell"], scale_atoms=False)
            self.atoms.set_positions(z["positions"])
            self.atoms.set_momenta(z["momenta"])
            self.accel = z["accel"].copy()
            self.nsteps = int(z["nsteps"])
            self._noise_key = z["noise_key"].copy()
            self._block = int(z["block"])
            self._R_block = z["R_block"].copy()
            self._white_cache = None
            stale = bool(z["block_stale"])
            self._substep = int(z["substep"])
            self._interval = int(z["interval"])
            self._R = z["R"].copy()
            self.gamma_r = z["gamma_r"].copy()
            self.rng.bit_generator.state = json.loads(str(z["rng"]))
            if self.externalstress is not None:
                self.p_eps = z["p_eps"].copy() if z["p_eps"].ndim else float(z["p_eps"])
                self.force_eps = z["force_eps"].copy() if z["force_eps"].ndim \
                    else float(z["force_eps"])
            if self.diagnostics and "v_seg" in z:
                self._v_seg = z["v_seg"].copy()
                self._r_seg = z["r_seg"].copy()
                self._v_acc = z["v_acc"].copy()
            T = float(z["temperature_K"])
        self.set_temperature(T)
        self._block_stale = stale          # as saved (set_temperature marks it stale)

    # ------------------------------------------------------------------ info
    def noise_memory_bytes(self) -> int:
        """Bytes held by the noise buffers (and the diagnostic segment spectra): about
        ``2 N_f x 3 N x 4`` (three times that with diagnostics or adaptive QTB, and twice
        more while a temperature ramp changes the filter inside a block)."""
        n = self._R_block.nbytes + self._R.nbytes
        if self._white_cache is not None:
            n += sum(w.nbytes for w in self._white_cache)
        if self.diagnostics:
            n += self._v_seg.nbytes + self._r_seg.nbytes + self._v_acc.nbytes
        return int(n)

    def todict(self):
        d = super().todict()
        d.update(friction=self.friction, cutoff_frequency=self.cutoff_frequency,
                 segment_length=self.segment_length, adaptive=self.adaptive,
                 n_f=self.n_f, alpha=self.alpha)
        return d
