"""Field-driven molecular dynamics (``docs/methods.md`` section 3.3): :class:`FieldDrivenMD`.

Velocity Verlet (or BAOAB Langevin) with the external force ``F_ext(t)`` of a uniform,
possibly time-dependent field (:mod:`ase_mlp.dynamics.fields`) evaluated at ``t_{n+1}``
together with the new conservative forces; bookkeeping of the work done by the field, the
dipole change from the current of charges (valid across periodic boundaries) and the
conserved quantity ``E_kin + E_pot - W``.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np
from ase import units
from ase.md.md import MolecularDynamics
from ase.utils import IOContext

from ase_mlp._util import check_checkpoint_meta, save_npz_atomic
from ase_mlp.dynamics.fields import FieldCoupling, _check_magnitude, as_field


__all__ = ["FieldDrivenMD", "FieldLogger"]


# -----------------------------------------------------------------------------
# logger
# -----------------------------------------------------------------------------
class FieldLogger(IOContext):
    """Log lines of a :class:`FieldDrivenMD`: time (fs), E (V/Å), ΔP (e·Å), W, E_tot,
    E_tot - W (eV) and T (K)."""

    columns = ("Ex[V/A]", "Ey[V/A]", "Ez[V/A]", "dPx[eA]", "dPy[eA]", "dPz[eA]", "W[eV]",
               "Etot[eV]", "Etot-W[eV]")
    header = ("# time[fs]" + "".join(f" {c:>13s}" for c in columns) + f" {'T[K]':>9s}\n")

    def __init__(self, dyn, logfile, *, mode="a", header=True):
        self.dyn = dyn
        self.logfile = self.openfile(file=logfile, mode=mode, comm=dyn.comm)
        if header:
            self.logfile.write(self.header)

    def __call__(self):
        d = self.dyn
        atoms = d.atoms
        etot = atoms.get_potential_energy() + atoms.get_kinetic_energy()
        vals = [*d.get_field(), *d.get_polarization_change(), d.get_work(), etot,
                etot - d.get_work()]
        self.logfile.write(f"{d.get_time() / units.fs:10.3f} "
                           + " ".join(f"{v: .6e}" for v in vals)
                           + f" {atoms.get_temperature():9.3f}\n")
        self.logfile.flush()


# -----------------------------------------------------------------------------
# field-driven MD
# -----------------------------------------------------------------------------
class FieldDrivenMD(MolecularDynamics):
    """Velocity Verlet (NVE) or BAOAB Langevin MD in a uniform time-dependent field.

    Parameters
    ----------
    atoms : ase.Atoms
        With masses and a calculator (of the field-free system).
    timestep : float
        ASE time units.
    field : Field, array (3,) or callable ``t -> array (3,)``
        ``E(t)`` in V/Å, ``t`` the simulation time ``nsteps * timestep`` (ASE units).
    charges : None, array (N,) or dict {symbol: charge}
        Fixed charges (e); ``None`` with no ``born_charges``: ``atoms.get_initial_charges()``.
    born_charges : array (N, 3, 3), optional
        Born effective charges ``Z*_i,αβ = ∂F_iβ/∂E_α`` (e): ``F_i = Z*_iᵀ E``.
    acoustic_sum_rule : bool
        Enforce ``Σ_i Z*_i = 0`` on ``born_charges`` (default True; charges are used as given).
    thermostat : None or "langevin"
        ``None``: NVE velocity Verlet. ``"langevin"``: BAOAB with ``temperature_K`` (K) and
        ``friction`` (1/ASE time).
    fixcm : bool
        Langevin only: the random kicks carry no net momentum.
    rng : numpy Generator or int seed
        Langevin noise (``None``: an unseeded generator, with a warning).
    max_field : float, optional
        Bound on ``|E(t)|`` (V/Å) for vectors and callables (default 10 V/Å); checked at
        every step.
    trajectory, logfile, loginterval, append_trajectory
        As :class:`ase.md.md.MolecularDynamics`; the log is a :class:`FieldLogger`
        (time in fs, field, ΔP, W, E_tot, E_tot - W, T).

    Notes
    -----
    Step (3.3): ``p += dt/2 (F(r_n) + F_ext(t_n))``; drift (Langevin: half drift, O, half
    drift); new forces ``F(r_{n+1})`` and ``F_ext(t_{n+1})``; ``p += dt/2 (...)``. ``W`` by the
    trapezoid rule; in NVE ``E_kin + E_pot - W`` is conserved to O(dt²). ``ΔP`` (e·Å) is the
    dipole change ``Σ q_i Δr_i`` integrated from the position increments of the integrator
    (valid across periodic boundaries; divide by the volume for a polarisation).
    """

    def __init__(self, atoms, timestep, field, *, charges=None, born_charges=None,
                 acoustic_sum_rule=True, thermostat=None, temperature_K=None, friction=None,
                 fixcm=True, rng=None, max_field=None, trajectory=None, logfile=None,
                 loginterval=1, append_trajectory=False, **kwargs):
        if timestep is None or not np.isfinite(timestep) or timestep <= 0:
            raise ValueError(f"timestep must be > 0 (ASE time), got {timestep}")
        if len(atoms) == 0:
            raise ValueError("FieldDrivenMD needs at least one atom")
        masses = atoms.get_masses()
        if not np.all(np.isfinite(masses)) or np.any(masses <= 0):
            bad = np.flatnonzero(~(np.isfinite(masses) & (masses > 0)))
            raise ValueError(f"atoms without a positive mass: indices {bad[:10].tolist()}")
        if not np.all(np.isfinite(atoms.positions)):
            raise ValueError("atoms.positions contain NaN or inf")
        self.field = as_field(field, max_field=max_field)
        self.coupling = FieldCoupling(atoms, charges, born_charges,
                                      acoustic_sum_rule=acoustic_sum_rule)
        net = np.abs(self.coupling.net_charge).max()
        if net > 1e-8 and np.any(atoms.pbc):
            warnings.warn(f"net charge (or sum of Born charges) {net:.4g} e in a periodic cell: "
                          f"the uniform field accelerates the centre of mass",
                          UserWarning, stacklevel=2)
        if thermostat is not None:
            thermostat = str(thermostat).lower()
        if thermostat in (None, "nve"):
            if temperature_K is not None or friction is not None:
                raise ValueError("temperature_K/friction given with thermostat=None (NVE); "
                                 "pass thermostat='langevin'")
            self.thermostat = None
        elif thermostat == "langevin":
            if temperature_K is None or not np.isfinite(temperature_K) or temperature_K < 0:
                raise ValueError(f"temperature_K must be >= 0 (K), got {temperature_K}")
            if friction is None or not np.isfinite(friction) or friction <= 0:
                raise ValueError(f"friction must be > 0 (1 / ASE time), got {friction}")
            self.thermostat = "langevin"
        else:
            raise ValueError(f"thermostat must be None or 'langevin', got {thermostat!r}")
        self.temperature_K = None if temperature_K is None else float(temperature_K)
        self.friction = None if friction is None else float(friction)
        self.fixcm = bool(fixcm)
        if rng is None and self.thermostat is not None:
            warnings.warn("rng=None: the Langevin noise is not reproducible; pass rng=seed",
                          UserWarning, stacklevel=2)
        self.rng = np.random.default_rng(rng)
        super().__init__(atoms, timestep, trajectory=trajectory, logfile=None,
                         loginterval=loginterval, append_trajectory=append_trajectory, **kwargs)
        self._work = 0.0
        self._dP = np.zeros(3)
        self._forces = None
        self._forces_at = None
        if logfile:
            self.attach(self.closelater(FieldLogger(self, logfile)), loginterval)

    # ------------------------------------------------------------------ observables
    def get_field(self, t=None) -> np.ndarray:
        """``E(t)`` (V/Å); default the current time ``nsteps * dt``."""
        t = self.get_time() if t is None else float(t)
        E = self.field(t)
        _check_magnitude(E, self.field.max_field, f"field at t = {t / units.fs:.6g} fs")
        return E

    def get_external_forces(self, t=None) -> np.ndarray:
        """``F_ext(t)`` (eV/Å), (N, 3), constraints applied."""
        F = self.coupling.forces(self.get_field(t))
        for c in self.atoms.constraints:
            c.adjust_forces(self.atoms, F)
        return F

    def get_work(self) -> float:
        """Work done by the field since the start (eV), trapezoid rule (3.3)."""
        return self._work

    def get_polarization_change(self) -> np.ndarray:
        """Dipole change ``ΔP = Σ q_i Δr_i`` (or ``Σ Z*_i Δr_i``) since the start (e·Å)."""
        return self._dP.copy()

    def get_field_energy(self) -> float:
        """``-E(t)·ΔP`` (eV): the static-field potential ``U = -Σ F_ext,i·Δr_i``.

        Equals ``-W`` up to O(dt²) only for a static field; for time-dependent fields use
        :meth:`get_work`.
        """
        return -float(self.get_field() @ self._dP)

    def get_conserved_energy(self) -> float:
        """``E_kin + E_pot - W`` (eV): conserved to O(dt²) in NVE."""
        a = self.atoms
        return a.get_kinetic_energy() + a.get_potential_energy() - self._work

    # ------------------------------------------------------------------ integrator
    def _calc_forces(self) -> np.ndarray:
        a = self.atoms
        if (self._forces is None or not np.array_equal(self._forces_at[0], a.positions)
                or not np.array_equal(self._forces_at[1], a.cell.array)):
            self._forces = a.get_forces(md=True)
            self._forces_at = (a.positions.copy(), a.cell.array.copy())
        return self._forces

    def _drift(self, p: np.ndarray, h: float) -> np.ndarray:
        a = self.atoms
        r = a.get_positions()
        a.set_positions(r + h * p / self.masses)
        rn = a.get_positions()
        if a.constraints:                      # first half of RATTLE, as ASE's VelocityVerlet
            p = (rn - r) * self.masses / h
        self._dP += self.coupling.dipole(rn - r)
        return p

    def step(self):
        a = self.atoms
        dt = self.dt
        t0 = self.nsteps * dt
        t1 = (self.nsteps + 1) * dt
        fe0 = self.get_external_forces(t0)
        p = a.get_momenta()
        v0 = p / self.masses
        p = p + 0.5 * dt * (self._calc_forces() + fe0)
        if self.thermostat is None:
            p = self._drift(p, dt)
        else:
            p = self._drift(p, 0.5 * dt)
            c1 = np.exp(-self.friction * dt)
            sd = np.sqrt((1.0 - c1 * c1) * units.kB * self.temperature_K * self.masses)
            kick = sd * self.rng.standard_normal(p.shape)
            if self.fixcm:
                kick -= self.masses * (kick.sum(axis=0) / self.masses.sum())
            a.set_momenta(c1 * p + kick)       # constraints remove kicks on fixed atoms
            p = self._drift(a.get_momenta(), 0.5 * dt)
        a.set_momenta(p, apply_constraint=False)
        self._forces = None
        f = self._calc_forces()
        fe1 = self.get_external_forces(t1)
        a.set_momenta(a.get_momenta() + 0.5 * dt * (f + fe1))
        v1 = a.get_velocities()
        self._work += 0.5 * dt * (float(np.sum(fe0 * v0)) + float(np.sum(fe1 * v1)))
        return f

    # ------------------------------------------------------------------ restart
    def _meta(self) -> dict:
        return {"natoms": len(self.atoms), "dt": self.dt, "thermostat": self.thermostat,
                "temperature_K": self.temperature_K, "friction": self.friction}

    def save_state(self, path) -> None:
        """Checkpoint for a bit-for-bit continuation (atomic write, ``.npz``).

        Positions, momenta, cell, step count, work, ΔP, cached forces, the generator state,
        and the charges and current field (checked on :meth:`load_state`).
        """
        path = pathlib.Path(path)
        f = self._calc_forces()
        state = {
            "positions": self.atoms.get_positions(), "momenta": self.atoms.get_momenta(),
            "cell": self.atoms.cell.array.copy(), "nsteps": np.array(self.nsteps),
            "work": np.array(self._work), "dP": self._dP, "forces": f,
            "coupling": self.coupling.array(), "field_now": self.get_field(),
            "rng": np.array(json.dumps(self.rng.bit_generator.state, default=int)),
            "meta": np.array(json.dumps(self._meta())),
        }
        save_npz_atomic(path, state)

    def load_state(self, path) -> None:
        """Restore a :meth:`save_state` checkpoint into this (identically built) dynamics."""
        with np.load(path, allow_pickle=False) as z:
            meta, mine = json.loads(str(z["meta"])), self._meta()
            check_checkpoint_meta(path, meta, mine, "FieldDrivenMD")
            if not np.array_equal(z["coupling"], self.coupling.array()):
                raise ValueError(f"checkpoint {path} was written with other charges")
            t = int(z["nsteps"]) * self.dt
            here = self.get_field(t)
            if not np.allclose(z["field_now"], here, rtol=1e-12, atol=1e-15):
                raise ValueError(f"checkpoint {path} was written with another field: E = "
                                 f"{z['field_now']} there, {here} here at "
                                 f"t = {t / units.fs:.6g} fs")
            self.nsteps = int(z["nsteps"])
            self.atoms.set_cell(z["cell"], scale_atoms=False)
            self.atoms.set_positions(z["positions"])
            self.atoms.set_momenta(z["momenta"], apply_constraint=False)
            self._work = float(z["work"])
            self._dP = z["dP"].copy()
            self._forces = z["forces"].copy()
            self._forces_at = (self.atoms.positions.copy(), self.atoms.cell.array.copy())
            self.rng.bit_generator.state = json.loads(str(z["rng"]))

    def todict(self):
        d = super().todict()
        d.update(thermostat=self.thermostat, temperature_K=self.temperature_K,
                 friction=self.friction, field=repr(self.field))
        return d
