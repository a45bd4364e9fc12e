"""Molecular dynamics with a choice of thermostat, checkpoints and exact restarts.

``ase-mlp md`` runs :func:`run_md`: NVT (or NPT with ``pressure_GPa``) dynamics of any
structure with

* ``langevin`` -- ASE :class:`~ase.md.langevin.Langevin` (centre of mass held by
  :class:`~ase.constraints.FixCom`); at constant pressure ASE
  :class:`~ase.md.langevinbaoab.LangevinBAOAB` (Langevin-Hoover barostat);
* ``bussi`` -- ASE :class:`~ase.md.bussi.Bussi` stochastic velocity rescaling
  (``taut``; NVT only);
* ``qtb`` / ``adqtb`` -- the quantum thermal bath :class:`ase_mlp.dynamics.QTB`, plain or
  adaptive, NVT or NPT.

Outputs in ``output``: ``md.traj`` (ASE trajectory, one frame every ``interval`` steps,
opened in append mode and flushed per frame, so a crash never loses what was written;
each frame carries ``atoms.info["md_step"]`` and ``atoms.info["time_fs"]``, which
``ase-mlp analyze`` uses for the time between frames), ``md.log`` (ASE
:class:`~ase.md.MDLogger`) and ``checkpoint.npz`` (every ``checkpoint_interval`` steps
and at the end).

Restarts (``restart=True``) continue from ``checkpoint.npz`` for ``steps`` more steps
and append to the trajectory and log (frames written after the checkpoint by a crashed
run are dropped first). They are **bit-for-bit** continuations of an uninterrupted run:
QTB checkpoints with :meth:`~ase_mlp.dynamics.QTB.save_state` (noise buffers and random
state included); for ``langevin`` and ``bussi`` the checkpoint holds positions, momenta,
cell, step count, the barostat state (LangevinBAOAB) and the state of the numpy random
generator (``dyn.rng``). Without the generator state an ASE Langevin restart would only
be statistically, not bitwise, continuous; it is restored here.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import numpy as np
from ase import units

from ase_mlp._util import save_npz_atomic, thermalize


THERMOSTATS = ("langevin", "bussi", "qtb", "adqtb")
#: default friction (1/fs) per thermostat (Bussi uses ``taut_fs`` instead)
DEFAULT_FRICTION = {"langevin": 0.01, "bussi": 0.01, "qtb": 0.01, "adqtb": 0.02}


def _check(thermostat, steps, interval, checkpoint_interval, timestep_fs, temperature_K,
           pressure_GPa):
    if thermostat not in THERMOSTATS:
        raise ValueError(f"unknown thermostat {thermostat!r}: choose one of "
                         f"{', '.join(THERMOSTATS)}")
    if thermostat == "bussi" and pressure_GPa is not None:
        raise ValueError("the bussi thermostat is not supported at constant pressure: use "
                         "--thermostat langevin (LangevinBAOAB barostat) or qtb/adqtb")
    for name, v in (("steps", steps), ("interval", interval),
                    ("checkpoint_interval", checkpoint_interval)):
        if int(v) != v or v < (0 if name == "steps" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'steps' else 1}, "
                             f"got {v}")
    if not timestep_fs > 0:
        raise ValueError(f"timestep must be > 0 fs, got {timestep_fs}")
    if not temperature_K >= 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature_K}")


def _dynamics(atoms, thermostat, *, dt, temperature_K, friction, taut, pressure_GPa,
              hydrostatic, rng):
    """The ASE dynamics object (no logfile/trajectory: :func:`run_md` attaches them)."""
    import warnings

    stress = None if pressure_GPa is None else -float(pressure_GPa) * units.GPa
    # barostat time constant: ASE's default 20 T_tau, given explicitly (no warning)
    p_tau = 20.0 / friction
    with warnings.catch_warnings():
        # the documented heuristic barostat mass (from P_tau) is what we want
        warnings.filterwarnings("ignore", message="Using heuristic P_mass")
        return _build(atoms, thermostat, dt, temperature_K, friction, taut, stress,
                      hydrostatic, p_tau, rng)


def _build(atoms, thermostat, dt, temperature_K, friction, taut, stress, hydrostatic, p_tau,
           rng):
    if thermostat in ("qtb", "adqtb"):
        from ase_mlp.dynamics import QTB

        return QTB(atoms, dt, temperature_K, friction, adaptive=thermostat == "adqtb",
                   rng=rng, externalstress=stress, hydrostatic=hydrostatic,
                   P_tau=None if stress is None else p_tau)
    if thermostat == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, temperature_K=temperature_K, taut=taut, rng=rng)
    if stress is not None:
        from ase.md.langevinbaoab import LangevinBAOAB

        return LangevinBAOAB(atoms, dt, temperature_K=temperature_K, externalstress=stress,
                             hydrostatic=hydrostatic, T_tau=1.0 / friction, P_tau=p_tau,
                             rng=rng)
    from ase.md.langevin import Langevin

    # fixcm=True is deprecated (ASE 3.28): hold the centre of mass with FixCom instead
    return Langevin(atoms, dt, temperature_K=temperature_K, friction=friction, fixcm=False,
                    rng=rng)


def _is_qtb(dyn) -> bool:
    from ase_mlp.dynamics import QTB

    return isinstance(dyn, QTB)


def save_checkpoint(dyn, path, thermostat) -> None:
    """Checkpoint ``dyn`` to ``path`` (``.npz``, atomic write); see :func:`load_checkpoint`."""
    if _is_qtb(dyn):
        dyn.save_state(path)
        return
    from ase.md.langevinbaoab import LangevinBAOAB

    atoms = dyn.atoms
    state = {
        "positions": atoms.get_positions(), "momenta": atoms.get_momenta(),
        "cell": atoms.cell.array.copy(), "nsteps": np.array(dyn.nsteps),
        "rng": np.array(json.dumps(dyn.rng.bit_generator.state, default=int)),
        "meta": np.array(json.dumps({"thermostat": thermostat, "natoms": len(atoms),
                                     "dt": dyn.dt})),
    }
    if isinstance(dyn, LangevinBAOAB):
        state["accel"] = dyn.accel
        if dyn.externalstress is not None:
            state["p_eps"] = np.asarray(dyn.p_eps)
            state["force_eps"] = np.asarray(dyn.force_eps)
    save_npz_atomic(path, state)


def _read_atoms_state(path, atoms, thermostat) -> int:
    """Put the checkpoint's cell, positions and momenta into ``atoms``; return its step."""
    with np.load(path, allow_pickle=False) as z:
        if "white" in z:
            kind = "qtb"
        else:
            kind = json.loads(str(z["meta"]))["thermostat"]
        mine = "qtb" if thermostat in ("qtb", "adqtb") else thermostat
        if (kind == "qtb") != (mine == "qtb") or (mine != "qtb" and kind != mine):
            raise ValueError(f"{path} was written by a {kind} run, not {thermostat}: restart "
                             f"with the same --thermostat")
        if z["positions"].shape != (len(atoms), 3):
            raise ValueError(f"{path} holds {len(z['positions'])} atoms, the structure "
                             f"{len(atoms)}")
        atoms.set_cell(z["cell"], scale_atoms=False)
        atoms.set_positions(z["positions"], apply_constraint=False)
        atoms.set_momenta(z["momenta"], apply_constraint=False)
        return int(z["nsteps"])


def load_checkpoint(dyn, path) -> None:
    """Restore a :func:`save_checkpoint` file into an identically built ``dyn``."""
    if _is_qtb(dyn):
        dyn.load_state(path)
        return
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if not np.isclose(meta["dt"], dyn.dt, rtol=1e-12, atol=0):
            raise ValueError(f"{path}: timestep {meta['dt'] / units.fs:g} fs (file) vs "
                             f"{dyn.dt / units.fs:g} fs")
        atoms = dyn.atoms
        atoms.set_cell(z["cell"], scale_atoms=False)
        atoms.set_positions(z["positions"], apply_constraint=False)
        atoms.set_momenta(z["momenta"], apply_constraint=False)
        dyn.nsteps = int(z["nsteps"])
        dyn.rng.bit_generator.state = json.loads(str(z["rng"]))
        if "accel" in z:
            dyn.accel = z["accel"].copy()
        if "p_eps" in z:
            dyn.p_eps = z["p_eps"].copy() if z["p_eps"].ndim else float(z["p_eps"])
            dyn.force_eps = z["force_eps"].copy() if z["force_eps"].ndim \
                else float(z["force_eps"])


def _trim_trajectory(path, last_step, key: str = "md_step") -> int:
    """Drop frames written after ``last_step`` (by a run that died after its checkpoint);
    a frame's step is ``atoms.info[key]``."""
    from ase.io.trajectory import Trajectory

    if not path.exists() or path.stat().st_size == 0:
        return 0
    with Trajectory(path) as tr:
        frames = list(tr)
    keep = [a for a in frames if a.info.get(key, -1) <= last_step]
    if len(keep) < len(frames):
        tmp = path.with_name(path.name + ".tmp")
        with Trajectory(tmp, "w") as tw:
            for a in keep:
                tw.write(a)
        os.replace(tmp, path)
    return len(frames) - len(keep)


def run_md(atoms, calc, *, thermostat="langevin", temperature_K=300.0, steps=1000,
           timestep_fs=1.0, friction_per_fs=None, taut_fs=100.0, pressure_GPa=None,
           hydrostatic=True, output="md", interval=10, rng=None, checkpoint_interval=1000,
           restart=False, progress=True, log=print) -> dict:
    """Molecular dynamics of ``atoms`` with ``calc``; returns a summary dict.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure (copied). On restart only its symbols/masses are used.
    calc : ASE calculator (with stress for constant pressure)
    thermostat : {"langevin", "bussi", "qtb", "adqtb"}
    temperature_K : float
    steps : int
        Steps to run (on restart: further steps after the checkpoint).
    timestep_fs : float
    friction_per_fs : float, optional
        Langevin / QTB friction (1/fs); default 0.01 (langevin, qtb), 0.02 (adqtb).
    taut_fs : float
        Bussi time constant (fs).
    pressure_GPa : float, optional
        Constant pressure: LangevinBAOAB (langevin) or QTB (qtb/adqtb) with
        ``externalstress = -P``, barostat time 20 / friction. Not with bussi.
    hydrostatic : bool
        Isotropic cell fluctuations (False: full cell).
    output : directory for ``md.traj``, ``md.log``, ``checkpoint.npz``
    interval : steps between trajectory frames and log lines
    rng : numpy Generator or seed (initial velocities and the thermostat noise)
    checkpoint_interval : steps between checkpoints (one is also written at the end)
    restart : continue from ``<output>/checkpoint.npz`` (bit-for-bit)
    progress : tqdm progress bar
    log : callable for messages
    """
    from ase.constraints import FixCom
    from ase.io.trajectory import Trajectory
    from ase.md import MDLogger
    from tqdm.auto import tqdm

    _check(thermostat, steps, interval, checkpoint_interval, timestep_fs, temperature_K,
           pressure_GPa)
    steps, interval, checkpoint_interval = int(steps), int(interval), int(checkpoint_interval)
    if friction_per_fs is None:
        friction_per_fs = DEFAULT_FRICTION[thermostat]
    if not friction_per_fs > 0:
        raise ValueError(f"friction must be > 0 (1/fs), got {friction_per_fs}")
    if thermostat == "bussi" and not taut_fs > 0:
        raise ValueError(f"taut must be > 0 fs, got {taut_fs}")
    if pressure_GPa is not None and atoms.cell.rank != 3:
        raise ValueError("constant pressure needs a 3D periodic cell")
    rng = np.random.default_rng(rng)
    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    traj_path, log_path, ckpt = out / "md.traj", out / "md.log", out / "checkpoint.npz"
    atoms = atoms.copy()
    atoms.calc = calc
    n = len(atoms)
    if thermostat == "langevin" and pressure_GPa is None:
        atoms.set_constraint(FixCom())
    if restart:
        if not ckpt.exists():
            raise FileNotFoundError(f"no checkpoint to restart from: {ckpt}")
        start = _read_atoms_state(ckpt, atoms, thermostat)
        dropped = _trim_trajectory(traj_path, start)
        if dropped:
            log(f"dropped {dropped} frames written after the checkpoint (step {start})")
    else:
        start = 0
        for p in (traj_path, log_path, ckpt):
            p.unlink(missing_ok=True)
        thermalize(atoms, temperature_K, rng)  # Maxwell-Boltzmann, centre of mass at rest
    dt = timestep_fs * units.fs
    dyn = _dynamics(atoms, thermostat, dt=dt, temperature_K=temperature_K,
                    friction=friction_per_fs / units.fs, taut=taut_fs * units.fs,
                    pressure_GPa=pressure_GPa, hydrostatic=hydrostatic, rng=rng)
    if restart:
        load_checkpoint(dyn, ckpt)
    logger = MDLogger(dyn, atoms, str(log_path), header=not restart,
                      stress=pressure_GPa is not None, mode="a" if restart else "w")
    traj = Trajectory(traj_path, "a", atoms)
    samples = []

    def record():
        step = dyn.nsteps
        atoms.info["md_step"] = step
        atoms.info["time_fs"] = step * timestep_fs
        traj.write(atoms)
        logger()
        samples.append((atoms.get_temperature(), atoms.get_potential_energy() / n,
                        atoms.get_volume() / n if atoms.cell.rank == 3 else np.nan))
        return samples[-1]

    what = {"langevin": "Langevin" if pressure_GPa is None else "LangevinBAOAB",
            "bussi": "Bussi", "qtb": "QTB", "adqtb": "adaptive QTB"}[thermostat]
    ens = "NVT" if pressure_GPa is None else f"NPT at {pressure_GPa:g} GPa"
    log(f"{atoms.get_chemical_formula()}, {n} atoms; {what} {ens}, {temperature_K:g} K, "
        f"{steps} steps of {timestep_fs:g} fs" + (f" from step {start}" if restart else ""))
    t0 = time.perf_counter()
    try:
        with tqdm(total=steps, desc=f"MD {thermostat}", unit="step",
                  disable=not progress) as bar:
            def observe():
                if dyn.nsteps == start:
                    return
                bar.update(1)
                if dyn.nsteps % interval == 0:
                    T, e, _ = record()
                    bar.set_postfix_str(f"T={T:6.0f} K  Epot={e:.4f} eV/atom")
                if dyn.nsteps % checkpoint_interval == 0:
                    save_checkpoint(dyn, ckpt, thermostat)

            if not restart:
                record()
            dyn.attach(observe, interval=1)
            dyn.run(steps)
        save_checkpoint(dyn, ckpt, thermostat)
    finally:
        traj.close()
        logger.close()
    wall = time.perf_counter() - t0
    data = np.array(samples) if samples else np.full((1, 3), np.nan)
    summary = {
        "atoms": n, "thermostat": thermostat, "steps": steps, "nsteps": int(dyn.nsteps),
        "wall_s": wall, "ms_per_step": 1e3 * wall / max(steps, 1),
        "T_mean": float(np.mean(data[:, 0])), "epot_mean": float(np.mean(data[:, 1])),
        "volume_per_atom": float(np.mean(data[:, 2])),
        "trajectory": str(traj_path), "log": str(log_path), "checkpoint": str(ckpt),
        "positions": atoms.get_positions(), "momenta": atoms.get_momenta(),
    }
    line = (f"{steps} steps in {wall:.1f} s ({summary['ms_per_step']:.1f} ms/step): "
            f"<T> = {summary['T_mean']:.1f} K, <E_pot> = {summary['epot_mean']:.5f} eV/atom")
    if pressure_GPa is not None:
        line += f", <V> = {summary['volume_per_atom']:.3f} Å^3/atom"
    if _is_qtb(dyn):
        summary["noise_memory_bytes"] = dyn.noise_memory_bytes()
        line += f", QTB noise buffers {summary['noise_memory_bytes'] / 2**20:.2f} MiB"
    log(line)
    log(f"wrote {traj_path}, {log_path}, {ckpt}")
    return summary
