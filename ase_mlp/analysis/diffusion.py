"""Mean-squared displacement (MSD), diffusion coefficients and the reordered MSD.

Functions
---------
* :func:`unwrap_positions` undoes periodic wrapping by accumulating minimum-image steps
  between consecutive frames.
* :func:`msd` averages the MSD over all time origins (FFT algorithm, ``O(T log T)`` per
  atom) or over every ``origin_stride``-th origin (direct algorithm), per species.
* :func:`msd_blocks` does the same on consecutive blocks of the trajectory, for an error bar.
* :func:`diffusion_coefficient` fits ``MSD = 2 d D t + c`` in a time window.
* :func:`reordered_msd` is the distance from the nearest relabelling of reference sites
  (Hungarian algorithm per species); :func:`mic_msd` is the plain minimum-image MSD with
  fixed labels.

Units: positions in Å, times in fs (``dt_fs`` is the time between stored frames), MSD in
Å^2, ``D`` in Å^2/fs (``1 Å^2/fs = 0.1 cm^2/s``). To convert an ASE timestep, use
``dt_fs = timestep / ase.units.fs * interval``.

References
----------
* Calandrini, Pellegrini, Calligari, Hinsen, Kneller, "nMoldyn - Interfacing spectroscopic
  experiments, molecular dynamics simulations and models for time correlation functions",
  JDN 12, 201 (2011): the FFT algorithm for the MSD.
* ``docs/methods.md`` section 5 for definitions and the reference tests.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from ase_mlp._util import perpendicular_widths
from ase_mlp.analysis._common import (
    MinimumImage,
    Trajectory,
    as_trajectory,
    check_finite,
    check_positive,
    species_indices,
)


#: 1 Å^2/fs in cm^2/s (1e-16 cm^2 / 1e-15 s).
ANGSTROM2_PER_FS_TO_CM2_PER_S = 0.1

#: Largest ``|alpha - 1|`` of the log-log MSD slope ``alpha`` for which a fit window counts as
#: diffusive (:meth:`DiffusionFit.is_diffusive`).
ALPHA_TOL = 0.3
#: Below this log-log slope (and not diffusive) the MSD counts as a plateau: no diffusion.
PLATEAU_ALPHA = 0.3

_FFT_CHUNK = 4_000_000  # complex elements per FFT chunk (about 64 MB)


# ----------------------------------------------------------------------------- unwrapping


def _unwrap(traj: Trajectory, warn_fraction: float) -> np.ndarray:
    pos = traj.positions
    if traj.cells is None or not traj.pbc.any() or traj.n_frames < 2:
        return pos.copy()
    cells = traj.cells
    steps = pos[1:] - pos[:-1]                                   # (T-1, N, 3)
    inv = np.linalg.inv(cells[1:])                               # cell of the later frame
    frac = np.einsum("tnj,tjk->tnk", steps, inv)
    frac[..., traj.pbc] -= np.round(frac[..., traj.pbc])
    steps = np.einsum("tnj,tjk->tnk", frac, cells[1:])
    # Rounding the fractional step gives the true step when |step| < h_i / 2 for every
    # periodic direction i (|step . b_i| = |s_i| < 1/2 with |b_i| = 1/h_i).
    widths = np.array([perpendicular_widths(c)[traj.pbc].min() for c in cells[1:]])
    lengths = np.linalg.norm(steps, axis=2).max(axis=1)          # (T-1,)
    ratio = lengths / widths
    if np.any(ratio > warn_fraction):
        k = int(np.argmax(ratio))
        warnings.warn(
            f"unwrap_positions: an atom moved {lengths[k]:.3f} Å between frames {k} and "
            f"{k + 1}, i.e. {ratio[k]:.2f} of the smallest perpendicular cell width "
            f"({widths[k]:.3f} Å). Unwrapping is only reliable for steps below half a width; "
            "store frames more often.",
            RuntimeWarning,
            stacklevel=3,
        )
    out = np.empty_like(pos)
    out[0] = pos[0]
    np.cumsum(steps, axis=0, out=out[1:])
    out[1:] += pos[0]
    return out


def unwrap_positions(
    frames, cells=None, *, pbc=None, warn_fraction: float = 0.4
) -> np.ndarray:
    """Unwrap a (possibly wrapped) trajectory.

    The displacement between consecutive frames is replaced by its minimum image and the
    steps are accumulated from the first frame. This is exact as long as no atom moves more
    than half a perpendicular cell width between two stored frames; a larger step is
    indistinguishable from a shorter one in the other direction and cannot be detected.
    A :class:`RuntimeWarning` is issued when any minimum-image step exceeds
    ``warn_fraction`` of the smallest perpendicular width. Trajectories from ASE MD are not
    wrapped unless ``wrap()`` was called; unwrapping them is then a no-op.

    Parameters
    ----------
    frames : sequence of ase.Atoms or array_like
        Trajectory, or positions of shape ``(T, N, 3)`` in Å.
    cells : array_like, optional
        For array input: one ``(3, 3)`` cell or ``(T, 3, 3)`` cells (rows are lattice
        vectors, Å). Atoms input uses each frame's cell. The step between frames ``t`` and
        ``t + 1`` is reduced with the cell of frame ``t + 1``.
    pbc : bool or sequence of 3 bool, optional
        For array input: periodic directions (default: True when ``cells`` is given).
        Non-periodic directions are left untouched.
    warn_fraction : float
        Warning threshold as a fraction of the smallest perpendicular width.

    Returns
    -------
    numpy.ndarray
        ``(T, N, 3)`` unwrapped positions (Å); frame 0 is unchanged.
    """
    traj = as_trajectory(frames, cells=cells, pbc=pbc)
    return _unwrap(traj, check_positive(warn_fraction, "warn_fraction"))


# ----------------------------------------------------------------------------- MSD kernels


def _per_atom_msd_fft(pos: np.ndarray, max_lag: int) -> np.ndarray:
    """All-origin MSD of every atom, ``(max_lag + 1, N)``, by FFT.

    For one coordinate series ``x_k`` (``k = 0..T-1``)::

        MSD(m) = 1/(T-m) sum_{k=0}^{T-m-1} (x_{k+m} - x_k)^2 = S1(m) - 2 S2(m)
        S1(m)  = 1/(T-m) sum_{k=0}^{T-m-1} (x_{k+m}^2 + x_k^2)
        S2(m)  = 1/(T-m) sum_{k=0}^{T-m-1} x_k x_{k+m}     (autocorrelation)

    ``S2`` comes from the FFT of the series zero-padded to ``2T`` (no circular wrap) and
    ``S1`` from cumulative sums of ``x^2``.
    """
    T, N, _ = pos.shape
    x = pos.reshape(T, N * 3)
    x = x - x.mean(axis=0)           # MSD is shift invariant; this limits cancellation
    counts = (T - np.arange(max_lag + 1))[:, None].astype(float)
    out = np.empty((max_lag + 1, N * 3))
    width = max(1, _FFT_CHUNK // (2 * T))
    for c0 in range(0, N * 3, width):
        xc = x[:, c0:c0 + width]
        f = np.fft.rfft(xc, n=2 * T, axis=0)
        s2 = np.fft.irfft(f.real**2 + f.imag**2, n=2 * T, axis=0)[: max_lag + 1]
        d = xc**2
        csum = np.cumsum(d, axis=0)
        rcsum = np.cumsum(d[::-1], axis=0)
        q = np.empty((max_lag + 1, xc.shape[1]))
        q[0] = 2.0 * csum[-1]
        q[1:] = 2.0 * csum[-1] - csum[:max_lag] - rcsum[:max_lag]
        out[:, c0:c0 + width] = (q - 2.0 * s2) / counts
    return out.reshape(max_lag + 1, N, 3).sum(axis=2)


def _per_atom_msd_direct(pos: np.ndarray, max_lag: int, stride: int) -> np.ndarray:
    """MSD of every atom averaged over origins ``0, stride, 2 stride, ...``."""
    T, N, _ = pos.shape
    out = np.zeros((max_lag + 1, N))
    for m in range(1, max_lag + 1):
        origins = np.arange(0, T - m, stride)
        d = pos[origins + m] - pos[origins]
        out[m] = np.einsum("onc,onc->n", d, d) / len(origins)
    return out


def _prepare(traj: Trajectory, *, unwrap: bool, remove_com: bool) -> np.ndarray:
    pos = _unwrap(traj, 0.4) if unwrap else traj.positions.copy()
    if remove_com:
        m = traj.masses if traj.masses is not None else np.ones(traj.n_atoms)
        com = np.einsum("tnc,n->tc", pos, m) / m.sum()
        pos -= com[:, None, :]
    return pos


def _check_lag_args(T: int, max_lag, origin_stride, method: str) -> tuple[int, int, str]:
    if T < 2:
        raise ValueError(f"the MSD needs at least 2 frames, got {T}")
    if max_lag is None:
        max_lag = T - 1
    if int(max_lag) != max_lag or not 1 <= max_lag <= T - 1:
        raise ValueError(f"max_lag must be an integer in [1, {T - 1}] (frames), got {max_lag!r}")
    if int(origin_stride) != origin_stride or origin_stride < 1:
        raise ValueError(f"origin_stride must be a positive integer, got {origin_stride!r}")
    if method not in ("auto", "fft", "direct"):
        raise ValueError(f"method must be 'auto', 'fft' or 'direct', got {method!r}")
    if method == "fft" and origin_stride != 1:
        raise ValueError("method='fft' uses every time origin; it requires origin_stride=1")
    if method == "auto":
        method = "fft" if origin_stride == 1 else "direct"
    return int(max_lag), int(origin_stride), method


def _msd_arrays(pos, groups, max_lag, stride, method) -> dict[str, np.ndarray]:
    if method == "fft":
        per_atom = _per_atom_msd_fft(pos, max_lag)
    else:
        per_atom = _per_atom_msd_direct(pos, max_lag, stride)
    return {lab: per_atom[:, idx].mean(axis=1) for lab, idx in groups.items()}


def msd(
    frames,
    dt_fs: float,
    *,
    species=None,
    remove_com: bool = True,
    max_lag: int | None = None,
    origin_stride: int = 1,
    unwrap: bool = True,
    method: str = "auto",
    cells=None,
    pbc=None,
    symbols=None,
    masses=None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Time-origin averaged mean-squared displacement, per species.

    ``MSD_a(m dt) = < |r_i(t0 + m dt) - r_i(t0)|^2 >``, averaged over the atoms ``i`` of
    species ``a`` and over time origins ``t0``.

    Parameters
    ----------
    frames : sequence of ase.Atoms or array_like
        Trajectory, or positions ``(T, N, 3)`` in Å (then see ``cells``, ``pbc``,
        ``symbols``, ``masses``).
    dt_fs : float
        Time between consecutive frames in fs.
    species : str or sequence of str, optional
        Species to report. Default: every element present plus ``"all"`` (all atoms).
        ``"all"`` may also be requested explicitly. Unknown symbols raise ValueError.
    remove_com : bool
        Subtract the mass-weighted centre of mass of the whole system from every frame
        (removes thermostat or barostat drift). Equal masses are used for arrays without
        ``masses``.
    max_lag : int, optional
        Largest lag in frames (default ``T - 1``). Long lags have few origins and are noisy.
    origin_stride : int
        Use every ``origin_stride``-th frame as a time origin (direct algorithm,
        ``O(T^2 N / stride)``). The default 1 uses all origins with the FFT algorithm.
    unwrap : bool
        Unwrap the positions first (:func:`unwrap_positions`); harmless for unwrapped data.
    method : {"auto", "fft", "direct"}
        ``"auto"`` picks FFT when ``origin_stride == 1``.
    cells, pbc, symbols, masses
        Only for array input (``masses`` also overrides Atoms masses).

    Returns
    -------
    t : numpy.ndarray
        ``(max_lag + 1,)`` lag times in fs, starting at 0.
    msd : dict of str to numpy.ndarray
        ``(max_lag + 1,)`` MSD in Å^2 for every requested species.

    Examples
    --------
    >>> t, m = msd(frames, dt_fs=10.0)                                  # doctest: +SKIP
    >>> fit = diffusion_coefficient(t, m["Ar"], fit_window=(500, 2000)) # doctest: +SKIP
    """
    dt_fs = check_positive(dt_fs, "dt_fs")
    traj = as_trajectory(frames, cells=cells, pbc=pbc, symbols=symbols, masses=masses)
    max_lag, stride, method = _check_lag_args(traj.n_frames, max_lag, origin_stride, method)
    groups = species_indices(traj.symbols, traj.n_atoms, species)
    pos = _prepare(traj, unwrap=unwrap, remove_com=remove_com)
    t = np.arange(max_lag + 1) * dt_fs
    return t, _msd_arrays(pos, groups, max_lag, stride, method)


def msd_blocks(
    frames,
    dt_fs: float,
    n_blocks: int,
    *,
    species=None,
    remove_com: bool = True,
    max_lag: int | None = None,
    unwrap: bool = True,
    cells=None,
    pbc=None,
    symbols=None,
    masses=None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """MSD of ``n_blocks`` consecutive, non-overlapping blocks of the trajectory.

    The whole trajectory is unwrapped first, then cut into blocks of ``T // n_blocks``
    frames (trailing frames are dropped); each block is analysed like :func:`msd` with all
    its time origins. Pass the result to :func:`diffusion_coefficient` to get ``D`` with a
    block standard error.

    Returns
    -------
    t : numpy.ndarray
        ``(max_lag + 1,)`` lag times in fs.
    msd : dict of str to numpy.ndarray
        ``(n_blocks, max_lag + 1)`` MSD in Å^2 per species.
    """
    dt_fs = check_positive(dt_fs, "dt_fs")
    traj = as_trajectory(frames, cells=cells, pbc=pbc, symbols=symbols, masses=masses)
    if int(n_blocks) != n_blocks or n_blocks < 2:
        raise ValueError(f"n_blocks must be an integer >= 2, got {n_blocks!r}")
    n_blocks = int(n_blocks)
    length = traj.n_frames // n_blocks
    if length < 2:
        raise ValueError(
            f"{traj.n_frames} frames cannot be cut into {n_blocks} blocks of >= 2 frames"
        )
    max_lag, _, _ = _check_lag_args(length, max_lag, 1, "fft")
    groups = species_indices(traj.symbols, traj.n_atoms, species)
    pos = _prepare(traj, unwrap=unwrap, remove_com=remove_com)
    per_block = [
        _msd_arrays(pos[b * length:(b + 1) * length], groups, max_lag, 1, "fft")
        for b in range(n_blocks)
    ]
    t = np.arange(max_lag + 1) * dt_fs
    return t, {lab: np.array([blk[lab] for blk in per_block]) for lab in groups}


# ----------------------------------------------------------------------------- diffusion


@dataclass(frozen=True)
class DiffusionFit:
    """Result of :func:`diffusion_coefficient`.

    Attributes
    ----------
    D, D_err : float
        Diffusion coefficient and its standard error, Å^2/fs.
    intercept : float
        Fitted MSD at ``t = 0`` (Å^2); vibrational/ballistic offset.
    fit_window : tuple of float
        ``(t0, t1)`` in fs.
    n_points : int
        Number of MSD points in the window.
    dim : int
        Dimensionality ``d`` in ``MSD = 2 d D t``.
    method : str
        ``"ols"`` (slope error from the least-squares residuals) or ``"blocks"``
        (standard error of the mean over blocks).
    alpha : float
        Log-log slope ``d ln MSD / d ln t`` in the window (least squares; block MSDs are
        averaged first): 1 in the diffusive regime, 2 ballistic, about 0 for a solid whose
        MSD plateaus. NaN when the window has fewer than 2 points with ``t, MSD > 0``.
    msd_window_mean : float
        Mean MSD in the window (Å^2): the plateau height of a solid.
    """

    D: float
    D_err: float
    intercept: float
    fit_window: tuple[float, float]
    n_points: int
    dim: int
    method: str
    alpha: float = float("nan")
    msd_window_mean: float = float("nan")

    def regime(self, tol: float = ALPHA_TOL) -> str:
        """``"diffusive"`` (``D > 0`` and ``|alpha - 1| <= tol``), ``"plateau"``
        (``D <= 0`` or ``alpha <`` :data:`PLATEAU_ALPHA`: no diffusion), else
        ``"subdiffusive"`` or ``"superdiffusive"`` (e.g. still ballistic): the MSD is not
        linear in the window."""
        a = self.alpha
        if not np.isfinite(a) or self.D <= 0:
            return "plateau"
        if abs(a - 1.0) <= tol:
            return "diffusive"
        if a < PLATEAU_ALPHA:
            return "plateau"
        return "subdiffusive" if a < 1.0 else "superdiffusive"

    def is_diffusive(self, tol: float = ALPHA_TOL) -> bool:
        """Whether ``D`` means anything: the MSD is linear (``MSD ~ t^alpha``,
        ``|alpha - 1| <= tol``) and rising in the fit window. A solid's MSD plateaus
        (``alpha ~ 0``) and its fitted ``D`` is noise of either sign."""
        return self.regime(tol) == "diffusive"

    @property
    def D_cm2_s(self) -> float:
        """Diffusion coefficient in cm^2/s."""
        return self.D * ANGSTROM2_PER_FS_TO_CM2_PER_S

    @property
    def D_err_cm2_s(self) -> float:
        """Standard error in cm^2/s."""
        return self.D_err * ANGSTROM2_PER_FS_TO_CM2_PER_S


def diffusion_coefficient(
    t, msd, *, fit_window: tuple[float, float] | None = None, dim: int = 3
) -> DiffusionFit:
    """Fit ``MSD(t) = 2 d D t + c`` in a window of the linear (diffusive) regime.

    Parameters
    ----------
    t : array_like
        ``(L,)`` lag times in fs, as returned by :func:`msd`.
    msd : array_like
        ``(L,)`` MSD in Å^2, or ``(n_blocks, L)`` from :func:`msd_blocks`.
    fit_window : tuple of float, optional
        ``(t0, t1)`` in fs, inclusive. Choose it after the ballistic/vibrational regime and
        before the noisy long lags. Default ``(0.1 t_max, 0.5 t_max)``.
    dim : {1, 2, 3}
        Dimensionality ``d``.

    Returns
    -------
    DiffusionFit
        ``D`` and ``D_err`` in Å^2/fs (``D_cm2_s``, ``D_err_cm2_s`` in cm^2/s).

    Notes
    -----
    Regime. ``alpha``, the log-log slope of the MSD in the window, tells whether the window
    is diffusive (:meth:`DiffusionFit.is_diffusive`, ``alpha ~ 1``); for a solid the MSD
    plateaus and the fitted ``D`` is meaningless (tiny, of either sign).

    Error estimate. For a 1-D ``msd`` the error is the ordinary least-squares standard
    error of the slope, ``sqrt(sum(res^2) / (n - 2) / sum((t - <t>)^2)) / (2 d)``. MSD
    points at different lags are strongly correlated, so this number mostly measures the
    curvature of the MSD in the window and *underestimates* the statistical uncertainty.
    For a statistical error pass ``(n_blocks, L)`` block MSDs: each block is fitted
    separately, ``D`` is the mean and ``D_err`` the standard error of the mean
    (``std(ddof=1) / sqrt(n_blocks)``) of the block values.
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(msd, dtype=float)
    if t.ndim != 1:
        raise ValueError(f"t must be one-dimensional, got shape {t.shape}")
    if y.ndim not in (1, 2) or y.shape[-1] != t.shape[0]:
        raise ValueError(
            f"msd must have shape ({t.shape[0]},) or (n_blocks, {t.shape[0]}) to match t, "
            f"got {y.shape}"
        )
    check_finite(t, "t")
    check_finite(y, "msd")
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim!r}")
    if t.size < 3:
        raise ValueError(f"need at least 3 MSD points, got {t.size}")
    if fit_window is None:
        fit_window = (0.1 * t.max(), 0.5 * t.max())
    try:
        t0, t1 = (float(v) for v in fit_window)
    except (TypeError, ValueError):
        raise ValueError(f"fit_window must be a pair (t0, t1) in fs, got {fit_window!r}") from None
    if not t0 < t1:
        raise ValueError(f"fit_window must satisfy t0 < t1, got ({t0}, {t1})")
    mask = (t >= t0) & (t <= t1)
    n = int(mask.sum())
    if n < 3:
        raise ValueError(
            f"fit_window ({t0}, {t1}) fs contains {n} MSD points; at least 3 are needed "
            f"(t spans {t.min()} to {t.max()} fs)"
        )
    tw = t[mask]
    tc = tw - tw.mean()
    sxx = float(tc @ tc)
    yw = np.atleast_2d(y)[:, mask]
    slopes = (yw - yw.mean(axis=1, keepdims=True)) @ tc / sxx
    intercepts = yw.mean(axis=1) - slopes * tw.mean()
    mean_w = yw.mean(axis=0)
    ok = (tw > 0) & (mean_w > 0)
    if ok.sum() >= 2:
        lt = np.log(tw[ok])
        alpha = float(np.polyfit(lt, np.log(mean_w[ok]), 1)[0])
    else:
        alpha = float("nan")
    if y.ndim == 1:
        res = yw[0] - (intercepts[0] + slopes[0] * tw)
        slope_err = np.sqrt(float(res @ res) / (n - 2) / sxx)
        slope, intercept, method = slopes[0], intercepts[0], "ols"
    else:
        nb = yw.shape[0]
        if nb < 2:
            raise ValueError("block error estimate needs at least 2 blocks")
        slope, intercept, method = slopes.mean(), intercepts.mean(), "blocks"
        slope_err = slopes.std(ddof=1) / np.sqrt(nb)
    return DiffusionFit(
        D=float(slope / (2 * dim)),
        D_err=float(slope_err / (2 * dim)),
        intercept=float(intercept),
        fit_window=(t0, t1),
        n_points=n,
        dim=int(dim),
        method=method,
        alpha=alpha,
        msd_window_mean=float(mean_w.mean()),
    )


# ----------------------------------------------------------------------------- reordered MSD


def _reference(reference, traj: Trajectory) -> tuple[np.ndarray, list[str] | None]:
    from ase import Atoms

    if reference is None:
        return traj.positions[0], traj.symbols
    if isinstance(reference, Atoms):
        ref_pos = np.asarray(reference.positions, dtype=float)
        ref_sym = reference.get_chemical_symbols()
    else:
        ref_pos = np.asarray(reference, dtype=float)
        ref_sym = traj.symbols
    if ref_pos.shape != (traj.n_atoms, 3):
        raise ValueError(
            f"reference must have {traj.n_atoms} atoms like the frames, got positions of "
            f"shape {ref_pos.shape}"
        )
    check_finite(ref_pos, "reference")
    if ref_sym is not None and traj.symbols is not None:
        if sorted(ref_sym) != sorted(traj.symbols):
            raise ValueError("reference and frames have different compositions")
    return ref_pos, ref_sym


def reordered_msd(
    frames,
    reference=None,
    *,
    per_species: bool = False,
    progress: bool = False,
    cells=None,
    pbc=None,
    symbols=None,
):
    """Reordered (permutation-invariant) MSD with respect to reference sites.

    ``MSD_ro(t) = (1/N) min_pi sum_i |mic(r_pi(i)(t) - r_i^ref)|^2``, where ``pi`` only
    permutes atoms of the same species. The minimum is found per species with the
    Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`, ``O(N_a^3)``) on the
    matrix of squared minimum-image distances (exact for any triclinic cell).

    It measures the distance to the nearest relabelling of the reference sites, is
    insensitive to atoms exchanging sites and saturates, so it is a structural
    order parameter (e.g. for melting or amorphisation), not a diffusion measure. No
    centre-of-mass correction is applied.

    Parameters
    ----------
    frames : ase.Atoms, sequence of ase.Atoms, or array_like
        Frames, or positions ``(T, N, 3)`` with ``cells``/``pbc``/``symbols``. The cell of
        each frame is used for the minimum image.
    reference : ase.Atoms or array_like, optional
        Reference sites (default: the first frame). Its atoms may be in a different order
        from the frames (symbols are matched per species).
    per_species : bool
        Also return the per-species values (``(1/N_a) min sum_{i in a}``).
    progress : bool
        Show a tqdm progress bar over frames.

    Returns
    -------
    numpy.ndarray or dict
        ``(T,)`` reordered MSD in Å^2, or, with ``per_species=True``, a dict with one
        ``(T,)`` array per element plus ``"all"``.
    """
    traj = as_trajectory(frames, cells=cells, pbc=pbc, symbols=symbols)
    ref_pos, ref_sym = _reference(reference, traj)
    if traj.symbols is None:
        frame_groups = {"all": np.arange(traj.n_atoms)}
        ref_groups = frame_groups
    else:
        frame_groups = species_indices(traj.symbols, traj.n_atoms, None, allow_all=False)
        ref_groups = species_indices(ref_sym, traj.n_atoms, list(frame_groups), allow_all=False)
    out = {lab: np.empty(traj.n_frames) for lab in frame_groups}
    for k in tqdm(range(traj.n_frames), disable=not progress, desc="reordered MSD"):
        cell = traj.cells[k] if traj.cells is not None else np.zeros((3, 3))
        mic = MinimumImage(cell, traj.pbc if traj.cells is not None else False)
        for lab, idx in frame_groups.items():
            cost = mic.sq_matrix(ref_pos[ref_groups[lab]], traj.positions[k, idx])
            rows, cols = linear_sum_assignment(cost)
            out[lab][k] = cost[rows, cols].sum()
    total = sum(out.values()) / traj.n_atoms
    if not per_species:
        return total
    res = {lab: v / len(frame_groups[lab]) for lab, v in out.items()}
    res["all"] = total
    return res


def mic_msd(frames, reference=None, *, cells=None, pbc=None, symbols=None) -> np.ndarray:
    """Plain minimum-image MSD with fixed atom labels, ``(1/N) sum_i |mic(r_i(t) - r_i^ref)|^2``.

    The counterpart of :func:`reordered_msd` without relabelling (and without unwrapping or
    time-origin averaging): atoms are compared with the reference atom of the same index.

    Returns
    -------
    numpy.ndarray
        ``(T,)`` in Å^2.
    """
    traj = as_trajectory(frames, cells=cells, pbc=pbc, symbols=symbols)
    ref_pos, _ = _reference(reference, traj)
    out = np.empty(traj.n_frames)
    for k in range(traj.n_frames):
        cell = traj.cells[k] if traj.cells is not None else np.zeros((3, 3))
        mic = MinimumImage(cell, traj.pbc if traj.cells is not None else False)
        v = mic.vectors(traj.positions[k] - ref_pos)
        out[k] = np.einsum("ij,ij->", v, v) / traj.n_atoms
    return out
