"""Cell metadynamics (``docs/methods.md`` section 2): :class:`CellMetadynamics`.

Martoňák, Laio & Parrinello, PRL 90, 075503 (2003). The collective variables are the six
rotation-free components of the cell; every metastep runs NVT MD at fixed cell, averages the
internal pressure tensor and moves the cell by one Gaussian width along the total force

``phi_t = -dG/ds(s_t) - grad V_t(s_t)``,  ``s_{t+1} = s_t + ds phi_t / |phi_t|``,

after which a Gaussian of height ``W`` and width ``ds`` is added at ``s_t`` (2.3). The driving
force in ASE's row convention (lattice vectors are the rows of ``A = atoms.cell``) is

``-dG/dA = V A^{-T} (p - P 1)``,  ``p = -<sigma_ASE(include_ideal_gas=True)>``  (2.2).

Conventions
-----------
* ``cv="triangular"``: ``s = (A11, A21, A22, A31, A32, A33)`` of the lower-triangular
  standard form (ASE ``cell.standard_form()``); the CV force is ``F[i, j]``, ``i >= j``.
* ``cv="symmetric"``: ``S = (A A^T)^{1/2}``, the symmetric cell reached by a rotation of the
  lattice vectors (``A = S U``, ``U`` orthogonal); ``s = (S11, S22, S33, S12, S13, S23)``
  and the force on an off-diagonal CV is ``F_ij + F_ji``.
* Gaussians and steps use the same Euclidean metric in the six CVs.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import warnings

import numpy as np
from ase import units
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.md import MolecularDynamics
from ase.utils import IOContext

from ase_mlp._util import check_checkpoint_meta, save_npz_atomic, thermalize


__all__ = ["CellMetadynamics", "MetadynamicsLogger", "bias_gradient", "bias_value",
           "cell_from_cv", "cv_force", "cv_from_cell", "cv_hessian", "cv_scaling",
           "supercell_hessian",
           "driving_force", "metastep", "metastep_walk"]

_CV_MODES = ("triangular", "symmetric")
_TRI_IDX = ((0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2))
_SYM_IDX = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
#: |P| above this (eV/Å³, = 160 GPa) is taken as a pressure given in GPa by mistake
_MAX_PRESSURE = 1.0
#: scaled CVs: Hessian eigenvalues are floored at this fraction of the largest one
HESSIAN_FLOOR = 1e-2
_THERMOSTATS = ("langevin", "bussi", "relax", None)


# -----------------------------------------------------------------------------
# pure functions
# -----------------------------------------------------------------------------
def _centers_array(s, centers) -> np.ndarray:
    c = np.asarray(centers, dtype=float)
    if c.size == 0:
        return np.zeros((0, np.size(s)))
    return c.reshape(-1, np.size(s))


def bias_value(s, centers, height: float, width: float) -> float:
    """History-dependent bias ``V(s) = sum_k W exp(-|s - s_k|^2 / (2 ds^2))`` (2.3).

    Parameters
    ----------
    s : array (d,)
        Point at which the bias is evaluated.
    centers : array (n, d)
        Gaussian centres ``s_k`` (may be empty).
    height, width : float
        ``W`` (energy) and ``ds`` (units of ``s``).

    Returns
    -------
    float
    """
    s = np.asarray(s, dtype=float).ravel()
    c = _centers_array(s, centers)
    if len(c) == 0:
        return 0.0
    d2 = np.sum((s - c) ** 2, axis=1)
    return float(height * np.sum(np.exp(-0.5 * d2 / width**2)))


def bias_gradient(s, centers, height: float, width: float) -> np.ndarray:
    """Gradient ``grad V(s) = -sum_k (W / ds^2) (s - s_k) exp(-|s - s_k|^2 / (2 ds^2))``.

    Same arguments as :func:`bias_value`; returns an array of the shape of ``s``.
    """
    s = np.asarray(s, dtype=float)
    flat = s.ravel()
    c = _centers_array(flat, centers)
    if len(c) == 0:
        return np.zeros_like(s)
    diff = flat - c
    g = np.exp(-0.5 * np.sum(diff**2, axis=1) / width**2)
    return (-(height / width**2) * (g @ diff)).reshape(s.shape)


def driving_force(cell, p, pressure: float) -> np.ndarray:
    """``-dG/dA = V A^{-T} (p - P 1)`` in ASE's row convention (2.2), eV/Å.

    Parameters
    ----------
    cell : array (3, 3)
        Lattice vectors as rows (Å).
    p : array (3, 3) or (6,)
        Internal pressure tensor ``p = -sigma_ASE`` (eV/Å³; Voigt xx yy zz yz xz xy).
    pressure : float
        External hydrostatic pressure ``P`` (eV/Å³).

    Returns
    -------
    numpy.ndarray (3, 3)
        ``-dG/dA_ij`` at fixed fractional coordinates.
    """
    A = np.asarray(cell, dtype=float)
    p = np.asarray(p, dtype=float)
    if p.shape == (6,):
        xx, yy, zz, yz, xz, xy = p
        p = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    vol = np.linalg.det(A)
    return abs(vol) * np.linalg.inv(A).T @ (p - pressure * np.eye(3))


def _check_mode(mode: str) -> None:
    if mode not in _CV_MODES:
        raise ValueError(f"cv must be 'triangular' or 'symmetric', got {mode!r}")


def _sym_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def _frame(cell, mode: str):
    """``(C, U)`` with ``cell = C @ U``, ``U`` orthogonal and ``C`` the CV form of the cell."""
    A = np.asarray(cell, dtype=float)
    if mode == "triangular":
        from ase.cell import Cell

        C, U = Cell(A).standard_form()
        return np.asarray(C), np.asarray(U)
    C = _sym_sqrt(A @ A.T)
    U = np.linalg.solve(C, A)
    return C, U


def cv_from_cell(cell, mode: str = "triangular") -> np.ndarray:
    """The six rotation-free CVs of a cell (2.1).

    Parameters
    ----------
    cell : array (3, 3)
        Lattice vectors as rows (Å), right-handed.
    mode : {"triangular", "symmetric"}
        ``(A11, A21, A22, A31, A32, A33)`` of the lower-triangular standard form, or
        ``(S11, S22, S33, S12, S13, S23)`` of ``S = (A A^T)^{1/2}``.

    Returns
    -------
    numpy.ndarray (6,)
    """
    _check_mode(mode)
    C, _ = _frame(cell, mode)
    idx = _TRI_IDX if mode == "triangular" else _SYM_IDX
    return np.array([C[i, j] for i, j in idx])


def cell_from_cv(s, mode: str = "triangular") -> np.ndarray:
    """Inverse of :func:`cv_from_cell`: the lower-triangular or symmetric cell (3, 3)."""
    _check_mode(mode)
    s = np.asarray(s, dtype=float)
    if s.shape != (6,):
        raise ValueError(f"expected 6 cell CVs, got shape {s.shape}")
    C = np.zeros((3, 3))
    if mode == "triangular":
        for k, (i, j) in enumerate(_TRI_IDX):
            C[i, j] = s[k]
    else:
        for k, (i, j) in enumerate(_SYM_IDX):
            C[i, j] = C[j, i] = s[k]
    return C


def cv_force(cell, dGdA, mode: str = "triangular") -> np.ndarray:
    """Project ``F = -dG/dA`` (3, 3, ASE rows) on the six CVs: ``-dG/ds`` (6,).

    ``G`` is rotation invariant, so for ``cell = C U`` the force on the CV form ``C`` is
    ``F U^T``; triangular CVs take ``F_C[i, j]`` (``i >= j``), symmetric CVs take the diagonal
    and ``F_ij + F_ji`` for the off-diagonals.
    """
    _check_mode(mode)
    _, U = _frame(cell, mode)
    F = np.asarray(dGdA, dtype=float) @ U.T
    if mode == "triangular":
        return np.array([F[i, j] for i, j in _TRI_IDX])
    return np.array([F[i, j] if i == j else F[i, j] + F[j, i] for i, j in _SYM_IDX])


def _static_cv_force(atoms, s, mode: str, pressure: float) -> np.ndarray:
    """``-dG/ds`` from the static stress of ``atoms`` with its cell set to ``s`` (a copy)."""
    trial = atoms.copy()
    trial.calc = atoms.calc
    cell = cell_from_cv(s, mode)
    trial.set_cell(cell, scale_atoms=True)
    p = -trial.get_stress(voigt=False)
    return cv_force(cell, driving_force(cell, p, pressure), mode)


def cv_hessian(atoms, pressure: float, mode: str = "triangular", delta: float = 0.01):
    """Hessian ``d^2 G / ds ds`` (eV/Å², 6 x 6) of ``G = E + P V`` in the cell CVs at T = 0.

    Central differences of the static driving force (:func:`driving_force`) with the
    fractional coordinates held fixed (clamped ions), 12 stress evaluations.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure with a calculator giving the stress; not modified.
    pressure : float
        External pressure ``P`` (eV/Å³).
    mode : {"triangular", "symmetric"}
        CV form.
    delta : float
        Finite-difference step on each CV (Å).

    Returns
    -------
    numpy.ndarray (6, 6)
        Symmetrised Hessian.
    """
    _check_mode(mode)
    if not delta > 0:
        raise ValueError(f"delta must be > 0 Å, got {delta}")
    C, U = _frame(atoms.cell.array, mode)
    frame = atoms.copy()
    frame.calc = atoms.calc
    frame.set_cell(C, scale_atoms=False)
    frame.set_positions(atoms.get_positions() @ U.T)
    s0 = cv_from_cell(C, mode)
    hess = np.zeros((6, 6))
    for a in range(6):
        e = np.zeros(6)
        e[a] = delta
        fp = _static_cv_force(frame, s0 + e, mode, pressure)
        fm = _static_cv_force(frame, s0 - e, mode, pressure)
        hess[:, a] = -(fp - fm) / (2.0 * delta)
    return 0.5 * (hess + hess.T)


def supercell_hessian(hessian, repeat, mode: str = "triangular") -> np.ndarray:
    """CV Hessian of a supercell from that of its cell (triangular CVs).

    For ``atoms.repeat((n1, n2, n3))`` the lattice vector ``i`` and the triangular CVs of
    its row scale by ``n_i`` while ``G`` scales by ``N = n1 n2 n3``, so
    ``A_H[k, l] -> N A_H[k, l] / (n_row(k) n_row(l))``. Computing the clamped-ion Hessian
    (12 stress evaluations) on a small cell and scaling it avoids 12 evaluations of a large
    one; pass the result as ``CellMetadynamics(..., scaling=...)``. The small cell must be
    in the frame the supercell will use (the standard form of the repeated cell is the
    repeated standard form).
    """
    _check_mode(mode)
    if mode != "triangular":
        raise ValueError("supercell_hessian needs triangular CVs: the symmetric cell of a "
                         "supercell is not the scaled symmetric cell; compute its Hessian "
                         "with cv_hessian")
    h = np.asarray(hessian, dtype=float)
    n = np.asarray(repeat, dtype=float).reshape(3)
    if h.shape != (6, 6):
        raise ValueError(f"expected a 6 x 6 Hessian, got shape {h.shape}")
    if np.any(n < 1) or np.any(n != np.round(n)):
        raise ValueError(f"repeat must be three integers >= 1, got {repeat}")
    rows = n[[i for i, _ in _TRI_IDX]]
    return np.prod(n) * h / np.outer(rows, rows)


def cv_scaling(hessian, floor: float = HESSIAN_FLOOR):
    """Scaling matrices of the scaled CVs (2.3): ``z = L (s - s0)``, ``L = A_H^{1/2}``.

    ``L`` is the symmetric square root of the Hessian with its eigenvalues replaced by
    ``max(|lambda|, floor * max|lambda|)`` (a saddle or a very soft direction would
    otherwise give an infinite step). Near the minimum ``G ~ |z|^2 / 2``, so ``z`` is in
    eV^{1/2}; forces transform as ``-dG/dz = L^{-1} (-dG/ds)``.

    Returns
    -------
    L, L_inv : numpy.ndarray (6, 6)
    negative : int
        Number of eigenvalues that were <= 0.
    """
    h = np.asarray(hessian, dtype=float)
    if h.shape != (6, 6) or not np.all(np.isfinite(h)):
        raise ValueError(f"the CV Hessian must be a finite 6 x 6 matrix (eV/Å²), got shape "
                         f"{h.shape}")
    if not np.allclose(h, h.T, rtol=1e-6, atol=1e-8 * max(np.abs(h).max(), 1e-300)):
        raise ValueError("the CV Hessian must be symmetric")
    w, v = np.linalg.eigh(0.5 * (h + h.T))
    top = np.abs(w).max()
    if top == 0:
        raise ValueError("the CV Hessian is zero")
    lam = np.maximum(np.abs(w), floor * top)
    L = (v * np.sqrt(lam)) @ v.T
    L_inv = (v / np.sqrt(lam)) @ v.T
    return L, L_inv, int(np.sum(w <= 0))


def metastep(s, phi_G, centers, height: float, width: float, rng, *,
             min_force: float = 1e-12):
    """One metastep (2.3): total force, then the step of length ``width``.

    Parameters
    ----------
    s : array (d,)
        Current CVs ``s_t``.
    phi_G : array (d,)
        ``-dG/ds`` at ``s_t``.
    centers : array (n, d)
        Gaussians deposited before ``t`` (``s_t`` is not among them yet).
    height, width : float
        ``W`` and ``ds``.
    rng : numpy.random.Generator
        Random direction when ``|phi| < min_force`` (an exact stationary point).
    min_force : float
        The ``|phi| < eps`` guard.

    Returns
    -------
    s_new : numpy.ndarray
        ``s_t + ds phi / |phi|``.
    phi : numpy.ndarray
        The total force ``phi_t``.
    """
    s = np.asarray(s, dtype=float)
    phi = np.asarray(phi_G, dtype=float) - bias_gradient(s, centers, height, width)
    norm = float(np.linalg.norm(phi))
    if not np.isfinite(norm):
        raise FloatingPointError(f"non-finite metadynamics force {phi}")
    if norm < min_force:
        direction = rng.standard_normal(s.shape)
        direction /= np.linalg.norm(direction)
    else:
        direction = phi / norm
    return s + width * direction, phi


def metastep_walk(grad_G, s0, height: float, width: float, n: int, rng=None, *,
                  min_force: float = 1e-12):
    """Run ``n`` metasteps on an analytic free energy (no MD): the toy-model driver.

    Parameters
    ----------
    grad_G : callable
        ``s -> dG/ds`` (the gradient, not the force).
    s0 : array (d,)
        Start.
    height, width : float
        ``W`` and ``ds``.
    n : int
        Number of metasteps.
    rng : numpy Generator or seed, optional
        For the ``|phi| < eps`` guard (default seed 0).

    Returns
    -------
    s : numpy.ndarray (n + 1, d)
        ``s_0 .. s_n``; the Gaussians sit at ``s_0 .. s_{n-1}``.
    phi_norm : numpy.ndarray (n,)
        ``|phi_t|``.
    """
    rng = np.random.default_rng(0 if rng is None else rng)
    s = np.atleast_1d(np.asarray(s0, dtype=float)).copy()
    path = [s.copy()]
    norms = []
    for _ in range(int(n)):
        centers = np.array(path[:-1])
        s, phi = metastep(s, -np.asarray(grad_G(s), dtype=float), centers, height, width,
                          rng, min_force=min_force)
        path.append(s.copy())
        norms.append(np.linalg.norm(phi))
    return np.array(path), np.array(norms)


# -----------------------------------------------------------------------------
# logger
# -----------------------------------------------------------------------------
class MetadynamicsLogger(IOContext):
    """Text log, one line per metastep (energies eV, V Å³, CVs Å, stress GPa), then the
    fingerprint columns (e.g. mean coordination and phase fractions), if any.

    The header is written with the first record, when the fingerprint names are known, unless
    the log is appended to a non-empty file (a restart) or ``header=False``.
    """

    columns = ("metastep", "H[eV]", "Epot[eV]", "Ekin[eV]", "V[A^3]",
               "s1", "s2", "s3", "s4", "s5", "s6",
               "sxx[GPa]", "syy[GPa]", "szz[GPa]", "syz[GPa]", "sxz[GPa]", "sxy[GPa]",
               "bias[eV]", "|phi|", "dG_path[eV]")

    def __init__(self, logfile, comm, *, mode="a", header=None):
        if header is None:   # no second header when appending to an existing log
            header = not (isinstance(logfile, (str, os.PathLike)) and mode == "a"
                          and os.path.isfile(logfile) and os.path.getsize(logfile) > 0)
        self.logfile = self.openfile(file=logfile, mode=mode, comm=comm)
        self._need_header = header

    def write_header(self, extra=()):
        names = (*self.columns, *(k.replace(" ", "_") for k in extra))
        self.logfile.write("# " + " ".join(f"{c:>14s}" for c in names) + "\n")
        self.logfile.flush()

    def write_record(self, rec: dict):
        fp = rec.get("fingerprint") or {}
        if self._need_header:
            self.write_header(tuple(fp))
            self._need_header = False
        vals = [rec["H"], rec["epot"], rec["ekin"], rec["volume"], *rec["cv"],
                *rec["stress_GPa"], rec["bias"], rec["phi_norm"], rec["dG_path"],
                *fp.values()]
        self.logfile.write(f"  {rec['metastep']:>14d} "
                           + " ".join(f"{v:14.7e}" for v in vals) + "\n")
        self.logfile.flush()


# -----------------------------------------------------------------------------
# dynamics
# -----------------------------------------------------------------------------
class CellMetadynamics(MolecularDynamics):
    """Martoňák-Laio-Parrinello cell metadynamics; one ``step()`` is one metastep.

    Parameters
    ----------
    atoms : ase.Atoms
        Fully periodic, right-handed cell, with a calculator that gives the stress. The
        atoms are rotated at start into the frame of the CV form of the cell (standard
        form or symmetric cell), positions and velocities alike.
    pressure : float, optional
        External pressure ``P`` in eV/Å³ (``5 * units.GPa``).
    pressure_GPa : float, optional
        The same in GPa; give exactly one of the two.
    temperature_K : float, optional
        MD temperature (K); required with a thermostat.
    gaussian_height : float
        ``W`` (eV, > 0).
    gaussian_width : float
        ``ds`` (> 0), also the metastep length: Å for unscaled CVs, eV^{1/2} for scaled
        ones (``scaling``), where a step of ``ds`` from the minimum raises ``G`` by about
        ``ds^2 / 2`` and ``W ~ ds^2`` is the usual choice (methods 2.3).
    md_steps : int
        Steps per metastep: NVT MD steps (``"langevin"``, ``"bussi"``) or the maximum
        number of FIRE steps (``"relax"``); ignored with ``thermostat=None``.
    discard : float
        Fraction of each MD segment discarded before averaging (0 <= discard < 1).
    timestep : float, optional
        MD time step (ASE time); required with an MD thermostat.
    thermostat : {"langevin", "bussi", "relax", None}
        ``"langevin"``: ASE :class:`~ase.md.langevinbaoab.LangevinBAOAB` at fixed cell with
        ``friction`` (1/ASE time). ``"bussi"``: ASE :class:`~ase.md.bussi.Bussi` stochastic
        velocity rescaling with time constant ``1 / friction``. Both draw their noise from
        ``rng``. ``"relax"``: T = 0, the atoms are relaxed at fixed cell with FIRE to
        ``relax_fmax`` before the static stress is taken (enthalpy-only metadynamics).
        ``None``: T = 0, the static stress of the current configuration (no MD, no
        relaxation). Atoms without momenta start MD from a Maxwell-Boltzmann draw at
        ``temperature_K`` (from ``rng``, centre of mass at rest).
    friction : float
        Langevin friction, or the inverse Bussi time constant (1/ASE time, default
        ``0.01 / units.fs``).
    cv : {"triangular", "symmetric"}
        Collective variables (module docstring).
    scaling : None, "hessian" or array (6, 6)
        ``None``: the walker moves in the CVs themselves (Å). ``"hessian"``: the scaled CVs
        of Martoňák et al. (Z. Kristallogr. 2005), ``z = A_H^{1/2} (s - s0)`` with the
        clamped-ion Hessian ``A_H`` of ``G`` at the starting cell from :func:`cv_hessian`
        (12 stress evaluations; step ``hessian_delta`` Å). An array is taken as ``A_H``
        (eV/Å², e.g. ``k_B T <ds ds^T>^{-1}`` from an NPT run). Eigenvalues are floored at
        :data:`HESSIAN_FLOOR` times the largest (:func:`cv_scaling`). With scaling, stiff
        directions (volume) take small steps in Å and soft ones (shear, tetragonal) large
        ones, so the bias fills the basin evenly.
    fingerprint : callable, optional
        ``atoms -> {name: float}`` after each metastep's sampling (e.g.
        :class:`ase_mlp.analysis.PhaseFingerprint`: mean coordination and phase fractions);
        stored in ``history`` and appended to the log.
    rng : numpy Generator or seed
        Thermostat noise and the random direction of the ``|phi| < eps`` guard. ``None``
        draws a seed, with a warning.
    min_force : float
        The guard ``eps`` on ``|phi|``.
    relax_fmax : float
        Force convergence of ``thermostat="relax"`` (eV/Å).
    logfile : str, path or file, optional
        One line per metastep (:class:`MetadynamicsLogger` columns).
    trajectory : str or Trajectory, optional
        One snapshot per metastep (after the cell update), and the start.
    loginterval : int
        Log/snapshot every ``loginterval`` metasteps.

    Attributes
    ----------
    history : list of dict
        Per metastep ``t``: ``metastep``, ``H`` (= <E_pot> + P V), ``epot``, ``ekin``,
        ``volume``, ``cv`` (s_t, Å), ``stress_GPa`` (averaged ASE stress sigma incl. ideal
        gas, Voigt xx yy zz yz xz xy, GPa; ``p = -sigma``), ``bias`` (V_t at the walker),
        ``phi_norm`` (|phi_t| in the walker's units: eV/Å, or eV^{1/2} when scaled),
        ``dG_path`` (``-sum_{t'<t} phi_G,t' . (s_{t'+1} - s_t')``, eV) and ``fingerprint``.
    centers : numpy.ndarray (n, 6)
        Gaussian centres, in the walker's variables (``s``, or ``z`` when scaled).
    hessian : numpy.ndarray (6, 6) or None
        ``A_H`` of the scaled CVs.
    """

    def __init__(self, atoms, *, pressure=None, pressure_GPa=None, temperature_K=None,
                 gaussian_height, gaussian_width, md_steps=1000, discard=0.5, timestep=None,
                 thermostat="langevin", friction=None, cv="triangular", scaling=None,
                 hessian_delta=0.01, fingerprint=None, rng=None, min_force=1e-10,
                 relax_fmax=0.01, logfile=None, trajectory=None, loginterval=1,
                 append_trajectory=False, **kwargs):
        self.pressure = self._check_pressure(pressure, pressure_GPa)
        _check_mode(cv)
        self.cv_mode = cv
        for name, val in (("gaussian_height", gaussian_height),
                          ("gaussian_width", gaussian_width)):
            if val is None or not np.isfinite(val) or val <= 0:
                raise ValueError(f"{name} must be > 0, got {val}")
        self.height = float(gaussian_height)
        self.width = float(gaussian_width)
        if not 0.0 <= discard < 1.0:
            raise ValueError(f"discard must be in [0, 1), got {discard}")
        self.discard = float(discard)
        if thermostat not in _THERMOSTATS:
            raise ValueError(f"thermostat must be one of {_THERMOSTATS}, got {thermostat!r}")
        self.thermostat = thermostat
        self.friction = None
        self.md_steps = 0
        self.temperature_K = 0.0 if temperature_K is None else float(temperature_K)
        if thermostat is not None:
            if md_steps is None or int(md_steps) != md_steps or md_steps < 1:
                raise ValueError(f"md_steps must be an integer >= 1 with thermostat="
                                 f"{thermostat!r}, got {md_steps}")
            self.md_steps = int(md_steps)
        if thermostat in ("langevin", "bussi"):
            if temperature_K is None or not np.isfinite(temperature_K) or temperature_K < 0:
                raise ValueError(f"temperature_K must be >= 0 with a thermostat, got "
                                 f"{temperature_K}")
            if timestep is None or not np.isfinite(timestep) or timestep <= 0:
                raise ValueError(f"timestep must be > 0 (ASE time) with a thermostat, got "
                                 f"{timestep}")
            friction = 0.01 / units.fs if friction is None else friction
            if not np.isfinite(friction) or friction <= 0:
                raise ValueError(f"friction must be > 0 (1/ASE time), got {friction}")
            self.friction = float(friction)
        elif thermostat == "relax":
            self.temperature_K = 0.0
            if not relax_fmax > 0:
                raise ValueError(f"relax_fmax must be > 0 eV/Å, got {relax_fmax}")
        self.relax_fmax = float(relax_fmax)
        if fingerprint is not None and not callable(fingerprint):
            raise TypeError(f"fingerprint must be callable atoms -> dict, got "
                            f"{type(fingerprint).__name__}")
        self.fingerprint = fingerprint
        self.min_force = float(min_force)
        self._check_atoms(atoms)
        if rng is None:
            seed = secrets.randbits(128)
            warnings.warn(f"CellMetadynamics: no rng given, using seed {seed}", UserWarning,
                          stacklevel=2)
            rng = seed
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        # rotate into the frame of the CV form of the cell
        C, U = _frame(atoms.cell.array, cv)
        vel = atoms.get_velocities() if atoms.has("momenta") else None
        atoms.set_cell(C, scale_atoms=False)
        atoms.set_positions(atoms.get_positions() @ U.T)
        if vel is not None:
            atoms.set_velocities(vel @ U.T)
        super().__init__(atoms, timestep=1.0 if timestep is None else timestep,
                         trajectory=trajectory, logfile=None, loginterval=loginterval,
                         append_trajectory=append_trajectory, **kwargs)
        self.s = cv_from_cell(C, cv)
        self.s0 = self.s.copy()
        self.hessian = None
        self._L = self._L_inv = None
        if scaling is not None:
            if isinstance(scaling, str):
                if scaling != "hessian":
                    raise ValueError(f"scaling must be None, 'hessian' or a 6 x 6 array, "
                                     f"got {scaling!r}")
                self.hessian = cv_hessian(atoms, self.pressure, cv, hessian_delta)
            else:
                self.hessian = np.array(scaling, dtype=float)
            self._L, self._L_inv, neg = cv_scaling(self.hessian)
            if neg:
                warnings.warn(f"CellMetadynamics: the CV Hessian has {neg} non-positive "
                              f"eigenvalue(s): the starting cell is not a minimum of G at "
                              f"this pressure; using |eigenvalues| (floored)", UserWarning,
                              stacklevel=2)
        self.centers = np.zeros((0, 6))
        self.history: list[dict] = []
        self.dG_path = 0.0
        self.loginterval = int(loginterval)
        self._logger = None
        if logfile is not None:
            self._logger = self.closelater(MetadynamicsLogger(logfile, self.comm))

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_pressure(pressure, pressure_GPa) -> float:
        if (pressure is None) == (pressure_GPa is None):
            raise ValueError("give exactly one of pressure= (eV/Å³) and pressure_GPa=")
        if pressure_GPa is not None:
            P = float(pressure_GPa) * units.GPa
        else:
            P = float(pressure)
            if abs(P) > _MAX_PRESSURE:
                raise ValueError(
                    f"pressure={P:g} eV/Å³ = {P / units.GPa:.4g} GPa is implausible; "
                    f"pressure is in eV/Å³: pass pressure_GPa={P:g} or "
                    f"pressure={P:g} * units.GPa")
        if not np.isfinite(P):
            raise ValueError(f"pressure must be finite, got {P}")
        return P

    @staticmethod
    def _check_atoms(atoms) -> None:
        if len(atoms) == 0:
            raise ValueError("CellMetadynamics needs at least one atom")
        if not np.all(atoms.pbc):
            raise ValueError(f"cell metadynamics needs a fully periodic cell, got pbc="
                             f"{atoms.pbc.tolist()}")
        vol = np.linalg.det(atoms.cell.array)
        if not np.isfinite(vol) or abs(vol) < 1e-12:
            raise ValueError("the cell is degenerate (zero volume)")
        if vol < 0:
            raise ValueError("left-handed cell (negative determinant): swap two lattice "
                             "vectors")
        if not np.all(np.isfinite(atoms.positions)):
            raise ValueError("atoms.positions contain NaN or inf")
        masses = atoms.get_masses()
        if not np.all(np.isfinite(masses)) or np.any(masses <= 0):
            raise ValueError("all atoms need a positive mass")

    # ------------------------------------------------------------------ walker
    @property
    def walker(self) -> np.ndarray:
        """The walker's position: ``s`` (Å), or ``z = L (s - s0)`` (eV^{1/2}) when scaled."""
        return self.s.copy() if self._L is None else self._L @ (self.s - self.s0)

    def _to_cv(self, walker) -> np.ndarray:
        return np.asarray(walker, dtype=float) if self._L is None else \
            self.s0 + self._L_inv @ walker

    # ------------------------------------------------------------------ sampling
    def _sample(self):
        """``(<p>, <E_pot>, <E_kin>)`` at the current cell: NVT MD, relaxation or static."""
        atoms = self.atoms
        if self.thermostat in (None, "relax"):
            if self.thermostat == "relax":
                from ase.optimize import FIRE

                with FIRE(atoms, logfile=None) as opt:
                    opt.run(fmax=self.relax_fmax, steps=self.md_steps)
            sigma = atoms.get_stress(voigt=False)
            return -sigma, atoms.get_potential_energy(), atoms.get_kinetic_energy()
        if self.temperature_K > 0 and atoms.get_kinetic_energy() == 0.0:
            # a cold start (e.g. Bussi cannot rescale zero velocities): Maxwell-Boltzmann
            thermalize(atoms, self.temperature_K, self.rng)
        if self.thermostat == "langevin":
            md = LangevinBAOAB(atoms, self.dt, temperature_K=self.temperature_K,
                               T_tau=1.0 / self.friction, rng=self.rng)
        else:
            from ase.md.bussi import Bussi

            md = Bussi(atoms, self.dt, temperature_K=self.temperature_K,
                       taut=1.0 / self.friction, rng=self.rng)
        n_skip = int(np.floor(self.discard * self.md_steps))
        n_skip = min(n_skip, self.md_steps - 1)
        sig = np.zeros((3, 3))
        epot = ekin = 0.0
        n = 0
        for k in range(self.md_steps):
            md.step()
            if k >= n_skip:
                sig += atoms.get_stress(voigt=False, include_ideal_gas=True)
                epot += atoms.get_potential_energy()
                ekin += atoms.get_kinetic_energy()
                n += 1
        return -sig / n, epot / n, ekin / n

    def step(self):
        """One metastep: sample, force, Gaussian at the walker, step, new cell."""
        atoms = self.atoms
        p, epot, ekin = self._sample()
        fingerprint = {}
        if self.fingerprint is not None:
            fingerprint = {str(k): float(v) for k, v in dict(self.fingerprint(atoms)).items()}
        cell = atoms.cell.array.copy()
        vol = abs(np.linalg.det(cell))
        phi_G = cv_force(cell, driving_force(cell, p, self.pressure), self.cv_mode)
        s_old = self.s.copy()
        w_old = self.walker
        phi_w = phi_G if self._L is None else self._L_inv @ phi_G
        bias = bias_value(w_old, self.centers, self.height, self.width)
        w_new, phi = metastep(w_old, phi_w, self.centers, self.height, self.width, self.rng,
                              min_force=self.min_force)
        s_new = self._to_cv(w_new)
        sigma = -p
        voigt = np.array([sigma[0, 0], sigma[1, 1], sigma[2, 2], sigma[1, 2], sigma[0, 2],
                          sigma[0, 1]]) / units.GPa
        rec = {"metastep": int(self.nsteps), "H": float(epot + self.pressure * vol),
               "epot": float(epot), "ekin": float(ekin), "volume": float(vol),
               "cv": s_old.tolist(), "stress_GPa": voigt.tolist(), "bias": bias,
               "phi_norm": float(np.linalg.norm(phi)), "dG_path": float(self.dG_path),
               "fingerprint": fingerprint}
        self.history.append(rec)
        if self._logger is not None and self.nsteps % self.loginterval == 0:
            self._logger.write_record(rec)
        self.dG_path -= float(phi_G @ (s_new - s_old))
        self.centers = np.vstack([self.centers, w_old])
        self.s = s_new
        new_cell = cell_from_cv(s_new, self.cv_mode)
        if np.linalg.det(new_cell) <= 0:
            raise FloatingPointError(f"metastep {self.nsteps}: the cell collapsed "
                                     f"(CVs {s_new}); reduce gaussian_width")
        atoms.set_cell(new_cell, scale_atoms=True)   # fractional coordinates kept

    def _refresh_properties(self):
        # the base class computes forces after each step; stress-only use needs nothing
        return None

    # ------------------------------------------------------------------ restart
    def _meta(self) -> dict:
        return {"natoms": len(self.atoms), "cv": self.cv_mode, "height": self.height,
                "width": self.width, "pressure": self.pressure, "md_steps": self.md_steps,
                "thermostat": self.thermostat, "scaled": self._L is not None,
                "temperature_K": self.temperature_K, "timestep": self.dt,
                "friction": self.friction, "discard": self.discard}

    def save_state(self, path) -> None:
        """Checkpoint (atomic ``.npz``): cell, positions, momenta, CVs, scaling, Gaussians,
        history, ``dG_path``, metastep count and the random-generator state; continuing from
        it is bit-for-bit identical to an unsplit run."""
        state = {
            "cell": self.atoms.cell.array.copy(), "positions": self.atoms.get_positions(),
            "momenta": self.atoms.get_momenta(), "s": self.s, "s0": self.s0,
            "hessian": np.zeros((0, 6)) if self.hessian is None else self.hessian,
            "centers": self.centers,
            "nsteps": np.array(self.nsteps), "dG_path": np.array(self.dG_path),
            "history": np.array(json.dumps(self.history)),
            "rng": np.array(json.dumps(self.rng.bit_generator.state, default=int)),
            "meta": np.array(json.dumps(self._meta())),
        }
        save_npz_atomic(pathlib.Path(path), state)

    def load_state(self, path) -> None:
        """Restore a :meth:`save_state` checkpoint into this (identically built) object.

        The scaling of scaled CVs is taken from the checkpoint, not recomputed."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            mine = self._meta()
            check_checkpoint_meta(path, meta, mine, "CellMetadynamics")
            self.atoms.set_cell(z["cell"], scale_atoms=False)
            self.atoms.set_positions(z["positions"])
            self.atoms.set_momenta(z["momenta"])
            self.s = z["s"].copy()
            self.s0 = z["s0"].copy()
            if self._L is not None:
                self.hessian = z["hessian"].copy()
                self._L, self._L_inv, _ = cv_scaling(self.hessian)
            self.centers = z["centers"].copy().reshape(-1, 6)
            self.nsteps = int(z["nsteps"])
            self.dG_path = float(z["dG_path"])
            self.history = json.loads(str(z["history"]))
            self.rng.bit_generator.state = json.loads(str(z["rng"]))

    def todict(self):
        d = super().todict()
        d.update(pressure=self.pressure, temperature_K=self.temperature_K,
                 gaussian_height=self.height, gaussian_width=self.width,
                 md_steps=self.md_steps, cv=self.cv_mode, thermostat=self.thermostat,
                 scaled=self._L is not None)
        return d
