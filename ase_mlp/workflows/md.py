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

Safety checks:

* inputs: temperature, pressure, timestep, friction and ``taut`` must be finite numbers
  (``inf``/``nan`` are refused with the parameter's name);
* timestep: before a new run, the highest vibrational angular frequency is estimated from
  finite displacements of one atom per element (:func:`estimate_max_frequency`, 6 force
  calls per element) and a timestep with ``omega_max * dt > 1`` (:data:`MAX_OMEGA_DT`) is
  refused for every thermostat (``check_timestep=False`` skips it);
* runaway: a run whose temperature stays above ``max(10 x target, 3000 K)`` and keeps rising
  for 10 steps, or becomes non-finite, stops with :class:`UnstableDynamicsError`; no
  checkpoint is written while the temperature is above that limit, so the last one is sane;
* restarts: ``run.json`` holds the settings of the first run; a restart with another
  temperature, pressure, friction, ``taut`` or cell mode is refused (``allow_changes=True``
  continues with the new temperature, pressure, friction or ``taut``; switching between NVT
  and NPT or the cell mode is always refused). ``md.log`` rows written after the checkpoint
  (and a partial last line) are dropped; a truncated checkpoint or trajectory is reported
  with the file and what to do; temporary ``*.tmp`` files of a failed write are removed on
  failure and on restart.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import time

import numpy as np
from ase import units

from ase_mlp._util import save_npz_atomic, thermalize


THERMOSTATS = ("langevin", "bussi", "qtb", "adqtb")
#: default friction (1/fs) per thermostat (Bussi uses ``taut_fs`` instead)
DEFAULT_FRICTION = {"langevin": 0.01, "bussi": 0.01, "qtb": 0.01, "adqtb": 0.02}
#: largest accepted ``omega_max * dt`` (velocity Verlet is unstable above 2; a tenth of the
#: shortest period, ``omega dt = 0.63``, is the usual choice)
MAX_OMEGA_DT = 1.0
#: runaway guard: stop when T > max(RUNAWAY_FACTOR x target, RUNAWAY_FLOOR_K) and rising
RUNAWAY_FACTOR = 10.0
RUNAWAY_FLOOR_K = 3000.0
RUNAWAY_STEPS = 10
#: settings of ``run.json`` that a restart must keep (``allow_changes`` lets the first four
#: change; the ensemble and the cell mode never change)
_RESTART_SETTINGS = ("temperature_K", "pressure_GPa", "friction_per_fs", "taut_fs",
                     "hydrostatic")
_TMP_NAMES = ("checkpoint.npz.tmp", "md.traj.tmp", "md.log.tmp", "run.json.tmp")


class UnstableDynamicsError(ValueError):
    """The dynamics blew up (temperature runaway or non-finite values)."""


class TruncatedFileError(ValueError):
    """An output file of an earlier run is truncated or corrupt."""


def _number(name, value, unit, cli=None) -> float:
    """``value`` as a finite float, or a ValueError naming the parameter."""
    label = name if cli is None else f"{name} ({cli})"
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a number ({unit}), got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{label} must be a finite number ({unit}), got {value}")
    return x


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
        try:
            bad = int(v) != v or v < (0 if name == "steps" else 1)
        except (TypeError, ValueError, OverflowError):
            bad = True
        if bad:
            raise ValueError(f"{name} must be an integer >= {0 if name == 'steps' else 1}, "
                             f"got {v}")
    if _number("temperature_K", temperature_K, "K", "--temperature") < 0:
        raise ValueError(f"temperature_K (--temperature) must be >= 0 K, got {temperature_K}")
    if pressure_GPa is not None:
        _number("pressure_GPa", pressure_GPa, "GPa", "--pressure")
    if not _number("timestep_fs", timestep_fs, "fs", "--timestep") > 0:
        raise ValueError(f"timestep_fs (--timestep) must be > 0 fs, got {timestep_fs}")


def estimate_max_frequency(atoms, calc=None, *, delta: float = 0.01) -> tuple[float, int]:
    """Cheap estimate of the highest vibrational angular frequency of ``atoms``.

    For the first atom of each element, the 3x3 on-site force-constant block ``Phi_ii`` is
    taken from central differences of its force (displacements of ``delta`` Å along x, y,
    z: 6 force calls per element); ``omega_i^2 = 2 lambda_max(Phi_ii) / m_i`` (exact for the
    zone-boundary mode of a chain with nearest-neighbour springs, an upper estimate for a
    light atom bonded to heavy ones). The largest ``omega_i`` is returned.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (not modified; its calculator is used unless ``calc`` is given).
    calc : ASE calculator, optional
    delta : float
        Displacement (Å).

    Returns
    -------
    (float, int)
        ``omega_max`` in rad / ASE time (0 if no atom has a positive stiffness) and the
        index of the atom that gives it (-1 if none).
    """
    probe = atoms.copy()
    probe.set_constraint()
    probe.calc = atoms.calc if calc is None else calc
    symbols = probe.get_chemical_symbols()
    firsts = sorted({s: i for i, s in reversed(list(enumerate(symbols)))}.values())
    masses = probe.get_masses()
    x0 = probe.get_positions()
    best, where = 0.0, -1
    for i in firsts:
        phi = np.zeros((3, 3))
        for a in range(3):
            f = []
            for sign in (1.0, -1.0):
                x = x0.copy()
                x[i, a] += sign * delta
                probe.set_positions(x)
                f.append(probe.get_forces()[i])
            phi[:, a] = -(f[0] - f[1]) / (2.0 * delta)
        lam = float(np.max(np.linalg.eigvalsh(0.5 * (phi + phi.T))))
        if np.isfinite(lam) and lam > 0:
            omega = math.sqrt(2.0 * lam / masses[i])
            if omega > best:
                best, where = omega, i
    return best, where


def check_stable_timestep(atoms, calc, timestep_fs: float, *, limit: float = MAX_OMEGA_DT) -> float:
    """Refuse a timestep with ``omega_max * dt > limit`` (see :func:`estimate_max_frequency`).

    Returns the largest accepted timestep (fs; ``inf`` when no vibration was found).
    """
    omega, i = estimate_max_frequency(atoms, calc)
    if omega <= 0:
        return math.inf
    w_fs = omega * units.fs                   # rad / fs
    dt_max = limit / w_fs
    if timestep_fs > dt_max:
        period = 2 * math.pi / w_fs
        raise ValueError(
            f"timestep_fs (--timestep) {timestep_fs:g} fs is beyond the stability limit "
            f"{dt_max:.3g} fs: the stiffest vibration (estimated from finite displacements "
            f"of atom {i}, {atoms.get_chemical_symbols()[i]}) has omega_max = {w_fs:.3g} "
            f"rad/fs (period {period:.3g} fs), and omega_max * dt = "
            f"{w_fs * timestep_fs:.3g} > {limit:g}; use a timestep <= {dt_max:.3g} fs (about "
            f"{period / 10:.2g} fs, a tenth of the period, is the usual choice; "
            f"--no-timestep-check or check_timestep=False skips this check)")
    return dt_max


@contextlib.contextmanager
def _cleanup_tmp(path):
    """Remove ``<path>.tmp`` if the atomic write of ``path`` inside fails (e.g. ENOSPC)."""
    tmp = pathlib.Path(path)
    tmp = tmp.with_name(tmp.name + ".tmp")
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_stale_tmp(out: pathlib.Path, names, log) -> None:
    for name in names:
        tmp = out / name
        if tmp.exists():
            tmp.unlink()
            log(f"removed {tmp} (left by an interrupted write)")


def _check_npz(path, what: str = "checkpoint") -> None:
    """Raise :class:`TruncatedFileError` (naming the file) unless ``path`` reads completely."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                z[key]
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error, KeyError) as err:
        raise TruncatedFileError(
            f"{what} {path} is truncated or corrupt ({type(err).__name__}: {err}), so the run "
            f"cannot be restarted from it: start a new run (without --restart), e.g. from "
            f"the last frame of the trajectory, or put back an intact copy of {path}") from None


def _write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _trim_md_log(path: pathlib.Path, time_ps: float) -> int:
    """Drop ``md.log`` rows after ``time_ps`` (the checkpoint's time) and a partial last line.

    MDLogger prints the time in ps with 4 decimals: rows are told apart when ``interval x
    timestep`` exceeds 0.1 fs.
    """
    if not path.exists():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = []
    for k, ln in enumerate(lines):
        if not ln.endswith("\n"):
            continue                                  # partial last line of a crashed run
        head = ln.split()
        if not head:
            keep.append(ln)
            continue
        try:
            t = float(head[0])
        except ValueError:
            if k == 0:
                keep.append(ln)                       # the header
            continue
        if t <= time_ps + 0.5e-4:
            keep.append(ln)
    if len(keep) < len(lines):
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text("".join(keep), encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return len(lines) - len(keep)


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
    """Checkpoint ``dyn`` to ``path`` (``.npz``, atomic write; the temporary file is removed
    if the write fails); see :func:`load_checkpoint`."""
    with _cleanup_tmp(path):
        _save_checkpoint(dyn, path, thermostat)


def _save_checkpoint(dyn, path, thermostat) -> None:
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
        # our langevin/bussi checkpoints name their thermostat; QTB.save_state's do not
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        kind = meta.get("thermostat", "qtb")
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
    try:
        with Trajectory(path) as tr:
            frames = list(tr)
    except Exception as err:    # ULM/JSON readers raise many kinds on a cut-off file
        what = "step" if key == "md_step" else key
        raise TruncatedFileError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}); move it aside "
            f"(e.g. rename it to {path.name}.bad) and restart again: the run continues from "
            f"the checkpoint at {what} {last_step} in a new {path.name}") from None
    keep = [a for a in frames if a.info.get(key, -1) <= last_step]
    if len(keep) < len(frames):
        tmp = path.with_name(path.name + ".tmp")
        try:
            with Trajectory(tmp, "w") as tw:
                for a in keep:
                    tw.write(a)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return len(frames) - len(keep)


def _check_restart_settings(path: pathlib.Path, mine: dict, allow: bool, log) -> dict:
    """Compare ``mine`` with the first run's ``run.json``; return the changed settings."""
    if not path.exists():
        log(f"note: {path} not found; cannot check that the settings match the first run")
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise TruncatedFileError(f"{path} is truncated or corrupt ({err}); remove it to "
                                 f"restart without checking the settings") from None
    diff = {k: (saved.get(k), mine[k]) for k in _RESTART_SETTINGS
            if k in saved and saved[k] != mine[k]
            and not (k == "taut_fs" and mine["thermostat"] != "bussi")
            and not (k == "friction_per_fs" and mine["thermostat"] == "bussi")}

    def show(k, v):
        unit = {"temperature_K": " K", "pressure_GPa": " GPa", "friction_per_fs": " /fs",
                "taut_fs": " fs"}.get(k, "")
        return "none (NVT)" if v is None else f"{v}{unit}"

    text = "; ".join(f"{k} {show(k, a)} (first run, {path}) vs {show(k, b)} now"
                     for k, (a, b) in diff.items())
    fixed = [k for k, (a, b) in diff.items()
             if k == "hydrostatic" or (k == "pressure_GPa" and (a is None or b is None))]
    if fixed:
        raise ValueError(f"restart: {text}; a restart cannot switch between NVT and NPT or "
                         f"change the cell mode (hydrostatic): start a new run")
    if diff and not allow:
        raise ValueError(f"restart: {text}; restart with the same settings (--allow-changes, "
                         f"or run_md(..., allow_changes=True), continues with the new ones)")
    if diff:
        log(f"restart with changed settings: {text}")
    return diff


def run_md(atoms, calc, *, thermostat="langevin", temperature_K=300.0, steps=1000,
           timestep_fs=1.0, friction_per_fs=None, taut_fs=100.0, pressure_GPa=None,
           hydrostatic=True, output="md", interval=10, rng=None, checkpoint_interval=1000,
           restart=False, progress=True, log=print, check_timestep=True,
           allow_changes=False) -> dict:
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
    check_timestep : refuse (new runs) a timestep with ``omega_max * dt > 1``
        (:func:`check_stable_timestep`)
    allow_changes : on restart, continue with a temperature, pressure, friction or ``taut``
        other than the first run's (``run.json``) instead of refusing

    Raises
    ------
    ValueError
        Bad or non-finite parameters, a timestep beyond the stability limit, a restart
        with changed settings or another thermostat.
    TruncatedFileError
        (a ValueError) The checkpoint or trajectory to continue is truncated.
    UnstableDynamicsError
        (a ValueError) The temperature ran away or became non-finite.
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
    if not _number("friction_per_fs", friction_per_fs, "1/fs", "--friction") > 0:
        raise ValueError(f"friction_per_fs (--friction) must be > 0 (1/fs), got "
                         f"{friction_per_fs}")
    if thermostat == "bussi" and not _number("taut_fs", taut_fs, "fs", "--taut") > 0:
        raise ValueError(f"taut_fs (--taut) must be > 0 fs, got {taut_fs}")
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
    settings_path = out / "run.json"
    settings = {"thermostat": thermostat, "temperature_K": float(temperature_K),
                "pressure_GPa": None if pressure_GPa is None else float(pressure_GPa),
                "hydrostatic": bool(hydrostatic), "friction_per_fs": float(friction_per_fs),
                "taut_fs": float(taut_fs), "timestep_fs": float(timestep_fs)}
    changed = {}
    if restart:
        if not ckpt.exists():
            raise FileNotFoundError(f"no checkpoint to restart from: {ckpt}")
        _remove_stale_tmp(out, _TMP_NAMES, log)
        changed = _check_restart_settings(settings_path, settings, allow_changes, log)
        _check_npz(ckpt)
        start = _read_atoms_state(ckpt, atoms, thermostat)
        dropped = _trim_trajectory(traj_path, start)
        if dropped:
            log(f"dropped {dropped} frames written after the checkpoint (step {start})")
        dropped = _trim_md_log(log_path, start * timestep_fs / 1000.0)
        if dropped:
            log(f"dropped {dropped} lines of {log_path} written after the checkpoint "
                f"(step {start})")
        if changed:
            _write_json(settings_path, settings)
    else:
        start = 0
        for p in (traj_path, log_path, ckpt, settings_path):
            p.unlink(missing_ok=True)
        _remove_stale_tmp(out, _TMP_NAMES, log)
        if check_timestep:
            check_stable_timestep(atoms, calc, timestep_fs)
        _write_json(settings_path, settings)
        thermalize(atoms, temperature_K, rng)  # Maxwell-Boltzmann, centre of mass at rest
    dt = timestep_fs * units.fs
    dyn = _dynamics(atoms, thermostat, dt=dt, temperature_K=temperature_K,
                    friction=friction_per_fs / units.fs, taut=taut_fs * units.fs,
                    pressure_GPa=pressure_GPa, hydrostatic=hydrostatic, rng=rng)
    if restart:
        load_checkpoint(dyn, ckpt)
        if _is_qtb(dyn) and dyn.temperature_K != temperature_K:
            if not (allow_changes or changed):
                raise ValueError(f"restart: temperature_K {dyn.temperature_K:g} K (checkpoint "
                                 f"{ckpt}) vs {temperature_K:g} K now; restart with the same "
                                 f"temperature (--allow-changes, or run_md(..., "
                                 f"allow_changes=True), continues with the new one)")
            dyn.set_temperature(temperature_K)    # the checkpoint held the old temperature
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
    t_limit = max(RUNAWAY_FACTOR * temperature_K, RUNAWAY_FLOOR_K)
    hot = {"first": None, "n": 0, "saved": start if restart else None}

    def guard():
        T = atoms.get_temperature()
        if math.isfinite(T) and T <= t_limit:
            hot["first"], hot["n"] = None, 0
            return
        if math.isfinite(T):
            if hot["first"] is None:
                hot["first"], hot["n"] = T, 0
                return
            hot["n"] += 1
            if hot["n"] < RUNAWAY_STEPS or T <= hot["first"]:
                return
        where = ("no checkpoint was written" if hot["saved"] is None else
                 f"the last checkpoint ({ckpt}) is at step {hot['saved']}")
        what = (f"the temperature is {T:g} K" if not math.isfinite(T) else
                f"the temperature ran away: T = {T:.0f} K, above {t_limit:.0f} K (10x the "
                f"target {temperature_K:g} K, at least {RUNAWAY_FLOOR_K:.0f} K) and rising "
                f"for {hot['n']} steps")
        raise UnstableDynamicsError(
            f"MD stopped at step {dyn.nsteps}: {what}; the timestep {timestep_fs:g} fs is "
            f"probably too long for this model and structure (or the structure or model is "
            f"broken): use a shorter --timestep; {where}")

    try:
        with tqdm(total=steps, desc=f"MD {thermostat}", unit="step",
                  disable=not progress) as bar:
            def observe():
                if dyn.nsteps == start:
                    return
                bar.update(1)
                guard()
                if dyn.nsteps % interval == 0:
                    T, e, _ = record()
                    bar.set_postfix_str(f"T={T:6.0f} K  Epot={e:.4f} eV/atom")
                if dyn.nsteps % checkpoint_interval == 0 and hot["first"] is None:
                    save_checkpoint(dyn, ckpt, thermostat)    # never a runaway state
                    hot["saved"] = dyn.nsteps

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
