"""Uniform electric fields: field objects and their coupling to charges / Born charges.

Equations: ``docs/methods.md`` section 3 (cited as 3.x). Units: fields in V/Å (1 V/Å = 100 MV/cm,
so 1 MV/cm = 0.01 V/Å), charges and Born effective charges in e, forces in eV/Å, time in ASE
units (``ase.units.fs`` = 0.0982 per fs), angular frequencies in rad per ASE time unit.

* Fields are callables ``E(t) -> ndarray(3)`` (V/Å): :class:`StaticField`,
  :class:`GaussianPulse`, their sums (``pulse1 + pulse2 + static``) or any callable
  (:func:`as_field`).
* Forces (3.1): ``F_i = q_i E`` for fixed charges, ``F_iβ = Σ_α E_α Z*_iαβ`` (``F_i = Z*_iᵀ E``)
  for Born effective charges, with the acoustic sum rule ``Z*_i -= mean_j Z*_j`` by default.
* :class:`~ase_mlp.dynamics.field_md.FieldDrivenMD` adds ``F_ext(t)`` inside velocity
  Verlet (or BAOAB Langevin), at ``t_{n+1}`` together with the new conservative forces
  (3.3), and keeps the work
  ``W_{n+1} = W_n + (dt/2)[F_ext(t_n)·v_n + F_ext(t_{n+1})·v_{n+1}]`` and the dipole change
  ``ΔP = Σ_i q_i Δr_i`` (``Σ_i Z*_i Δr_i``) accumulated from the integrator's own position
  increments (the current ``dt Σ q v_{n+1/2}``), so it is unaffected by wrapping.
* :class:`~ase_mlp.calculators.field.FieldCalculator` wraps a calculator for *static*
  fields only (relaxations): forces
  ``+ F_ext`` and energy ``U = -Σ_i F_ext,i·(r_i - r0_i)`` with unwrapped positions, the
  LAMMPS ``fix efield`` convention ``U = -q E·x`` for ``r0 = 0``. Never put a time-dependent
  field in a calculator: ASE's calculator cache is keyed on positions, not on time, so the
  forces would go stale (3.3).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
from ase import units


__all__ = ["DEFAULT_MAX_FIELD", "MV_per_cm", "V_per_A", "V_per_m", "V_per_nm", "kV_per_cm",
           "CallableField", "Field", "FieldCoupling", "GaussianPulse", "StaticField", "SumField",
           "as_field", "thz_to_angular"]

#: field units, expressed in V/Å
V_per_A = 1.0
V_per_nm = 0.1
MV_per_cm = 0.01
kV_per_cm = 1e-5
V_per_m = 1e-10

#: largest |E| (V/Å) accepted without ``max_field=``: 1 GV/cm, far beyond dielectric breakdown
DEFAULT_MAX_FIELD = 10.0

_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def thz_to_angular(frequency_THz) -> float:
    """Angular frequency (rad per ASE time unit) of an ordinary frequency in THz.

    ``omega = 2 pi nu``; 1 THz = 1e-3 fs⁻¹, so ``omega = 2 pi nu[THz] 1e-3 / units.fs``.
    """
    return 2.0 * np.pi * float(frequency_THz) * 1e-3 / units.fs


def _check_magnitude(vec: np.ndarray, max_field: float, what: str) -> None:
    mag = float(np.linalg.norm(vec))
    if mag > max_field:
        raise ValueError(
            f"{what}: |E| = {mag:.6g} V/Å exceeds max_field = {max_field:g} V/Å. Fields are in "
            f"V/Å (1 V/Å = 100 MV/cm = 1e10 V/m; 1 MV/cm = 0.01 V/Å = "
            f"ase_mlp.dynamics.fields.MV_per_cm); convert your field, or pass max_field= to "
            f"allow a field this strong")


def _vector(value, what: str) -> np.ndarray:
    try:
        vec = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a 3-vector (V/Å), got {value!r}") from None
    if vec.shape != (3,):
        raise ValueError(f"{what} must be a 3-vector (V/Å), got shape {vec.shape}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"{what} contains NaN or inf: {vec}")
    return vec


def _direction(direction) -> np.ndarray:
    """Unit vector from ``"x"``/``"y"``/``"z"`` (``"-x"`` ...) or a nonzero 3-vector."""
    if isinstance(direction, str):
        key = direction.strip().lower()
        sign = -1.0 if key.startswith("-") else 1.0
        if key.lstrip("+-") not in _AXES:
            raise ValueError(f"direction must be 'x', 'y', 'z' or a 3-vector, got {direction!r}")
        return sign * np.array(_AXES[key.lstrip("+-")])
    d = _vector(direction, "direction")
    norm = np.linalg.norm(d)
    if norm == 0:
        raise ValueError("direction must be a nonzero vector")
    return d / norm


def _check_max_field(max_field) -> float:
    if max_field is None:
        return DEFAULT_MAX_FIELD
    m = float(max_field)
    if not m > 0:
        raise ValueError(f"max_field must be > 0 (V/Å), got {max_field}")
    return m


# -----------------------------------------------------------------------------
# field objects
# -----------------------------------------------------------------------------
class Field:
    """A uniform field ``E(t)`` (V/Å) of the time ``t`` (ASE units); ``f + g`` sums fields.

    Subclasses set :attr:`static` (True when ``E`` does not depend on ``t``) and
    :attr:`max_field` (V/Å), the bound :class:`FieldDrivenMD` enforces on ``|E(t)|``.
    """

    static = False
    max_field = DEFAULT_MAX_FIELD

    def __call__(self, t: float) -> np.ndarray:
        raise NotImplementedError

    def __add__(self, other):
        return SumField(self, as_field(other))

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:     # sum([f, g])
            return self
        return SumField(as_field(other), self)


class StaticField(Field):
    """A constant field ``E`` (V/Å).

    Parameters
    ----------
    vector : array (3,)
        Field in V/Å.
    max_field : float, optional
        Accepted ``|E|`` (default :data:`DEFAULT_MAX_FIELD` = 10 V/Å).
    """

    static = True

    def __init__(self, vector, *, max_field=None):
        self.max_field = _check_max_field(max_field)
        self.vector = _vector(vector, "StaticField vector")
        _check_magnitude(self.vector, self.max_field, "StaticField")

    def __call__(self, t: float) -> np.ndarray:
        return self.vector.copy()

    def __repr__(self):
        return f"StaticField({self.vector.tolist()})"


class GaussianPulse(Field):
    """``E(t) = A ê cos(ω t + φ) exp(-(t - t0)² / 2σ²)`` (3.2, the i-PI form).

    The carrier phase is referred to ``t = 0``, not to the pulse centre: ``cos(ω t + φ)``,
    not ``cos(ω (t - t0))`` (use ``phase = -ω t0`` for the latter).

    Parameters
    ----------
    amplitude : float
        Peak field ``A`` (V/Å; may be negative).
    frequency : float
        Angular frequency ``ω`` in rad per ASE time unit (>= 0); see :meth:`from_THz` and
        :func:`thz_to_angular`.
    t0, sigma : float
        Centre and width of the Gaussian envelope (ASE time; ``sigma > 0``). Runs start at
        ``t = 0``: keep ``t0 >= 5 sigma`` or the truncated tail injects energy (a warning).
    direction : "x", "y", "z" or array (3,)
        Polarisation ``ê`` (normalised here).
    phase : float
        Carrier-envelope phase ``φ`` (rad).
    max_field : float, optional
        Accepted ``|A|`` (default 10 V/Å).
    """

    def __init__(self, amplitude, frequency, t0, sigma, direction, phase=0.0, *,
                 max_field=None):
        self.max_field = _check_max_field(max_field)
        vals = {"amplitude": amplitude, "frequency": frequency, "t0": t0, "sigma": sigma,
                "phase": phase}
        for name, v in vals.items():
            if not np.isfinite(float(v)):
                raise ValueError(f"GaussianPulse {name} must be finite, got {v}")
        if frequency < 0:
            raise ValueError(f"GaussianPulse frequency must be >= 0 (rad / ASE time), "
                             f"got {frequency}")
        if not sigma > 0:
            raise ValueError(f"GaussianPulse sigma must be > 0 (ASE time), got {sigma}")
        self.amplitude = float(amplitude)
        self.frequency = float(frequency)
        self.t0 = float(t0)
        self.sigma = float(sigma)
        self.phase = float(phase)
        self.direction = _direction(direction)
        _check_magnitude(self.amplitude * self.direction, self.max_field, "GaussianPulse")
        if self.t0 < 5.0 * self.sigma * (1.0 - 1e-9):
            warnings.warn(
                f"GaussianPulse t0 = {self.t0 / units.fs:.4g} fs < 5 sigma = "
                f"{5 * self.sigma / units.fs:.4g} fs: the pulse is already on at t = 0 and the "
                f"truncated Gaussian tail injects energy (methods 3.2)", UserWarning,
                stacklevel=2)

    @classmethod
    def from_THz(cls, amplitude, frequency_THz, t0_fs, sigma_fs, direction, phase=0.0, *,
                 max_field=None):
        """Pulse from an ordinary frequency in THz and times in fs (amplitude in V/Å)."""
        return cls(amplitude, thz_to_angular(frequency_THz), t0_fs * units.fs,
                   sigma_fs * units.fs, direction, phase, max_field=max_field)

    def envelope(self, t):
        """``A exp(-(t - t0)² / 2σ²)`` (V/Å)."""
        return self.amplitude * np.exp(-0.5 * ((t - self.t0) / self.sigma) ** 2)

    def __call__(self, t: float) -> np.ndarray:
        return (self.envelope(t) * np.cos(self.frequency * t + self.phase)) * self.direction

    def __repr__(self):
        return (f"GaussianPulse(amplitude={self.amplitude}, frequency={self.frequency}, "
                f"t0={self.t0}, sigma={self.sigma}, direction={self.direction.tolist()}, "
                f"phase={self.phase})")


class SumField(Field):
    """The sum of fields (``f + g`` builds one); static when all its terms are."""

    def __init__(self, *fields):
        terms = []
        for f in fields:
            f = as_field(f)
            terms.extend(f.fields if isinstance(f, SumField) else [f])
        if not terms:
            raise ValueError("SumField needs at least one field")
        self.fields = terms
        self.static = all(f.static for f in terms)
        self.max_field = max(f.max_field for f in terms)

    def __call__(self, t: float) -> np.ndarray:
        out = np.zeros(3)
        for f in self.fields:
            out = out + f(t)
        return out

    def __repr__(self):
        return " + ".join(repr(f) for f in self.fields)


class CallableField(Field):
    """Any callable ``t -> E`` (V/Å, shape (3,)), checked at ``t = 0``."""

    def __init__(self, func: Callable, *, max_field=None):
        if not callable(func):
            raise ValueError(f"CallableField needs a callable t -> 3-vector, got {func!r}")
        self.func = func
        self.max_field = _check_max_field(max_field)
        _check_magnitude(self(0.0), self.max_field, "field(0)")

    def __call__(self, t: float) -> np.ndarray:
        return _vector(self.func(t), "the field callable's value")

    def __repr__(self):
        return f"CallableField({self.func!r})"


def as_field(obj, *, max_field=None) -> Field:
    """A :class:`Field` from a field, a 3-vector (static, V/Å) or a callable ``t -> vector``.

    ``max_field`` applies to vectors and callables (a :class:`Field` keeps its own bound).
    """
    if isinstance(obj, Field):
        return obj
    if obj is None or isinstance(obj, (str, bytes)):
        raise ValueError(f"field must be a Field, a 3-vector in V/Å or a callable t -> vector, "
                         f"got {obj!r}")
    if callable(obj):
        return CallableField(obj, max_field=max_field)
    return StaticField(obj, max_field=max_field)


# -----------------------------------------------------------------------------
# coupling: charges or Born effective charges
# -----------------------------------------------------------------------------
class FieldCoupling:
    """Fixed charges ``q`` (N,) or Born effective charges ``Z*`` (N, 3, 3) of a structure.

    Parameters
    ----------
    atoms : ase.Atoms
    charges : None, array (N,) or dict {symbol: charge}
        In e. ``None`` (and no ``born_charges``): ``atoms.get_initial_charges()``.
    born_charges : array (N, 3, 3), optional
        ``Z*_i,αβ = ∂F_iβ / ∂E_α`` (e); the force is ``F_i = Z*_iᵀ E``.
    acoustic_sum_rule : bool
        Replace ``Z*_i`` by ``Z*_i - mean_j Z*_j`` (no net force in a uniform field).
    """

    def __init__(self, atoms, charges=None, born_charges=None, *, acoustic_sum_rule=True):
        n = len(atoms)
        self.natoms = n
        self.q = None
        self.Z = None
        if charges is not None and born_charges is not None:
            raise ValueError("give either charges or born_charges, not both")
        if born_charges is not None:
            Z = np.array(born_charges, dtype=float)
            if Z.shape != (n, 3, 3):
                raise ValueError(f"born_charges has shape {Z.shape}, expected ({n}, 3, 3) "
                                 f"(one 3x3 tensor per atom, Z*_i[alpha, beta] = "
                                 f"dF_i,beta / dE_alpha)")
            if not np.all(np.isfinite(Z)):
                raise ValueError("born_charges contain NaN or inf")
            if acoustic_sum_rule:
                Z = Z - Z.mean(axis=0)
            self.Z = Z
            return
        if charges is None:
            q = np.array(atoms.get_initial_charges(), dtype=float)
            if not np.any(q):
                raise ValueError("no charges: pass charges= (per atom or {symbol: charge}), "
                                 "born_charges=, or set atoms.set_initial_charges()")
        elif isinstance(charges, Mapping):
            symbols = atoms.get_chemical_symbols()
            missing = sorted(set(symbols) - set(charges))
            if missing:
                raise ValueError(f"charges has no entry for elements {missing}")
            q = np.array([float(charges[s]) for s in symbols])
        else:
            q = np.array(charges, dtype=float)
            if q.shape != (n,):
                raise ValueError(f"charges has shape {q.shape}, expected ({n},): one charge "
                                 f"(e) per atom")
        if not np.all(np.isfinite(q)):
            raise ValueError("charges contain NaN or inf")
        self.q = q

    @property
    def net_charge(self) -> np.ndarray:
        """``Σ q_i`` (scalar) or ``Σ Z*_i`` (3x3): what makes the centre of mass accelerate."""
        return self.q.sum() if self.q is not None else self.Z.sum(axis=0)

    def forces(self, E: np.ndarray) -> np.ndarray:
        """``F_i = q_i E`` or ``F_iβ = Σ_α E_α Z*_iαβ`` (eV/Å), shape (N, 3)."""
        if self.q is not None:
            return self.q[:, None] * E[None, :]
        return np.einsum("a,iab->ib", E, self.Z)

    def dipole(self, displacements: np.ndarray) -> np.ndarray:
        """``Σ_i q_i Δr_i`` or ``Σ_i Z*_i Δr_i`` (e·Å) of displacements (N, 3)."""
        if self.q is not None:
            return self.q @ displacements
        return np.einsum("iab,ib->a", self.Z, displacements)

    def array(self) -> np.ndarray:
        return self.q if self.q is not None else self.Z
