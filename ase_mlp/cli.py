"""Command line: ``ase-mlp demo | eval | fit | convert | info``."""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from importlib.resources import files


def default_model_path() -> pathlib.Path:
    """The embedded default model (Ta06A SNAP + ZBL, see ``ase_mlp/data/README.md``)."""
    return pathlib.Path(str(files("ase_mlp") / "data" / "Ta06A.pt"))


def _calculator(paths, device, dtype):
    import torch

    from ase_mlp.calculators import MLPCalculator

    dt = {"float64": torch.float64, "float32": torch.float32}[dtype]
    if not paths:
        paths = [default_model_path()]
    return MLPCalculator.from_file(*paths, device=device, dtype=dt)


def cmd_demo(args) -> int:
    """Load the embedded model, evaluate, relax, run MD, and batch-evaluate."""
    import numpy as np
    from ase import units
    from ase.build import bulk
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import BFGS
    from tqdm.auto import tqdm

    rng = np.random.default_rng(args.seed)
    calc = _calculator(args.model, args.device, args.dtype)
    print(f"model: {calc.model.__class__.__name__} for {calc.elements}, cutoff "
          f"{calc.model.cutoff:.3f} Å, device {calc.device}, {calc.dtype}")

    atoms = bulk("Ta", "bcc", a=3.30, cubic=True).repeat((args.size,) * 3)
    atoms.calc = calc
    t = time.perf_counter()
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    s = atoms.get_stress()
    print(f"bcc Ta, {len(atoms)} atoms: E = {e:.6f} eV ({e / len(atoms):.6f} eV/atom), "
          f"max|F| = {np.abs(f).max():.2e} eV/Å, P = {-s[:3].mean() / units.GPa:.3f} GPa "
          f"[{time.perf_counter() - t:.2f} s]")

    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    opt = BFGS(atoms, logfile=None)
    opt.run(fmax=args.fmax, steps=200)
    print(f"relaxed a rattled cell in {opt.nsteps} BFGS steps: E = "
          f"{atoms.get_potential_energy():.6f} eV, max|F| = {np.abs(atoms.get_forces()).max():.1e}")

    MaxwellBoltzmannDistribution(atoms, temperature_K=2 * args.temperature, rng=rng)
    md = Langevin(atoms, timestep=2 * units.fs, temperature_K=args.temperature,
                  friction=0.02 / units.fs, rng=rng)
    temps = []
    with tqdm(total=args.steps, desc="Langevin MD", unit="step", disable=args.quiet) as bar:
        def tick():  # ASE also calls observers before the first step
            temps.append(atoms.get_temperature())
            if md.nsteps > 0:
                bar.update(1)
        md.attach(tick, interval=1)
        t = time.perf_counter()
        md.run(args.steps)
        dt = time.perf_counter() - t
    print(f"MD: {args.steps} steps in {dt:.1f} s ({dt / max(args.steps, 1) * 1e3:.0f} ms/step), "
          f"<T> over the last half = {np.mean(temps[len(temps) // 2:]):.0f} K "
          f"(target {args.temperature:.0f} K)")

    images = []
    for k in range(16):
        im = bulk("Ta", "bcc", a=3.30 + 0.01 * k, cubic=True).repeat((2, 2, 2))
        im.positions += rng.normal(scale=0.05, size=im.positions.shape)
        images.append(im)
    t = time.perf_counter()
    batch = calc.calculate_batch(images)
    tb = time.perf_counter() - t
    t = time.perf_counter()
    single = []
    for im in images:
        im.calc = calc
        single.append(im.get_potential_energy())
    ts = time.perf_counter() - t
    dev = max(abs(b["energy"] - s) for b, s in zip(batch, single, strict=False))
    print(f"batch of {len(images)} structures: {tb * 1e3:.0f} ms in one call vs {ts * 1e3:.0f} ms "
          f"one by one (max |ΔE| = {dev:.1e} eV)")
    return 0


def cmd_eval(args) -> int:
    """Evaluate structures from any file ASE reads; print a table, optionally write extxyz.

    With ``--data``, read labelled files (as ``ase-mlp fit`` does) and print the
    error metrics table (RMSE/MAE, per group).
    """
    if args.structures is None and not args.data:
        raise ValueError("give a structure file to evaluate, or labelled files with --data")
    calc = _calculator(args.model, args.device, args.dtype)
    if args.structures is not None:
        _eval_structures(args, calc)
    if args.data:
        _eval_metrics(args, calc)
    return 0


def _eval_metrics(args, calc) -> None:
    """Error metrics of ``calc`` on labelled data files, as ``ase-mlp fit`` prints them."""
    import json

    from ase_mlp.training.data import LabelSpec, read_frames
    from ase_mlp.training.metrics import compute_metrics, format_table

    spec = LabelSpec(stress_unit=args.stress_unit, stress_sign=args.stress_sign)
    frames = read_frames(list(args.data), index=args.index, spec=spec)
    metrics = compute_metrics(calc, frames, progress=not args.quiet)
    name = pathlib.Path(args.data[0]).name if len(args.data) == 1 else "all"
    print(format_table({name: metrics}, groups=True))
    if args.metrics:
        pathlib.Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n",
                                              encoding="utf-8")
        print(f"wrote {args.metrics}")


def _eval_structures(args, calc) -> None:
    import numpy as np
    from ase.io import read, write

    images = read(args.structures, index=args.index)
    if not isinstance(images, list):
        images = [images]
    props = ("energy", "forces", "stress") if all(a.cell.rank == 3 for a in images) \
        else ("energy", "forces")
    results = calc.calculate_batch(images, properties=props)
    print(f"{'#':>4} {'natoms':>7} {'energy (eV)':>18} {'eV/atom':>12} {'max|F| eV/Å':>12}")
    for k, (a, r) in enumerate(zip(images, results, strict=False)):
        print(f"{k:4d} {len(a):7d} {r['energy']:18.8f} {r['energy'] / len(a):12.6f} "
              f"{np.abs(r['forces']).max():12.5f}")
    if args.output:
        from ase.calculators.singlepoint import SinglePointCalculator

        for a, r in zip(images, results, strict=False):
            a.calc = SinglePointCalculator(a, **{k: v for k, v in r.items() if k != "stresses"})
        write(args.output, images)
        print(f"wrote {args.output}")


def cmd_fit(args) -> int:
    """Fit a model from a configuration file (see docs/training.md)."""
    from ase_mlp.training.config import load_config
    from ase_mlp.training.workflow import run_fit

    config = load_config(args.config)
    run_fit(config, resume=args.resume, progress=not args.quiet, plots=not args.no_plots)
    return 0


def cmd_convert(args) -> int:
    """Convert between ase_mlp's format and LAMMPS SNAP / ML-IAP files."""
    from ase_mlp.calculators import load_model

    model = load_model(*args.inputs)
    out = [pathlib.Path(p) for p in args.outputs]
    if len(out) == 1:
        model.save(out[0])
    else:
        from ase_mlp.io import lammps as lio

        names = "".join(p.name for p in out)
        if "snapcoeff" in names or "snapparam" in names:
            coeff = next(p for p in out if "snapcoeff" in p.name)
            param = next(p for p in out if p is not coeff)
            lio.write_snap(model, coeff, param)
        else:
            desc = next((p for p in out if "descriptor" in p.name), out[1])
            mod = next(p for p in out if p is not desc)
            lio.write_mliap(model, mod, desc)
    print(f"wrote {' '.join(map(str, out))}")
    return 0


def cmd_info(args) -> int:
    calc = _calculator(args.model, "cpu", "float64")
    print(calc.model)
    print(f"elements: {calc.elements}")
    print(f"cutoff: {calc.model.cutoff} Å")
    print(f"parameters: {sum(p.numel() for p in calc.model.parameters())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ase-mlp", description="Machine-learning potentials for ASE")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, model_nargs="*"):
        sp.add_argument("--model", nargs=model_nargs, default=[], metavar="PATH",
                        help="model file(s): ours, or a LAMMPS .snapcoeff/.snapparam or ML-IAP "
                             "pair (default: the embedded Ta06A model)")
        sp.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
        sp.add_argument("--dtype", default="float64", choices=["float64", "float32"])

    d = sub.add_parser("demo", help="run the main job on the embedded default model")
    common(d)
    d.add_argument("--size", type=int, default=4, help="bcc supercell repeat (4: 128 atoms)")
    d.add_argument("--steps", type=int, default=50, help="MD steps")
    d.add_argument("--temperature", type=float, default=300.0, help="K")
    d.add_argument("--fmax", type=float, default=0.01, help="eV/Å for the relaxation")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("eval", help="evaluate structures from a file (any format ASE reads), "
                       "or error metrics on labelled data (--data)")
    common(e)
    e.add_argument("structures", nargs="?", default=None,
                   help="structures to evaluate (energies and forces table)")
    e.add_argument("--index", default=":", help="ASE index string (default ':' = all frames)")
    e.add_argument("-o", "--output", help="write structures with results (e.g. out.extxyz)")
    e.add_argument("--data", nargs="+", default=[], metavar="PATH",
                   help="labelled files (extxyz, ASE db, DeePMD dirs...): print RMSE/MAE of "
                        "energy, forces and stress, overall and per group")
    e.add_argument("--stress-unit", default="eV/A^3",
                   help="unit of the stress labels in --data: eV/A^3 (default), GPa, kbar, bar")
    e.add_argument("--stress-sign", default="ase", choices=["ase", "compressive"],
                   help="sign of the stress labels in --data (compressive: VASP/LAMMPS)")
    e.add_argument("--metrics", metavar="JSON", help="also write the --data metrics as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    f = sub.add_parser("fit", help="fit a model from a TOML/YAML configuration "
                       "(see docs/training.md)")
    f.add_argument("config", help="configuration file (.toml, .yaml/.yml, .json)")
    f.add_argument("--resume", action="store_true",
                   help="NN-SNAP: continue from <output>/checkpoint.pt")
    f.add_argument("--no-plots", action="store_true", help="do not write parity/learning plots")
    f.add_argument("--quiet", action="store_true", help="no progress bars or messages "
                   "(the metrics table is still printed)")
    f.set_defaults(func=cmd_fit)

    c = sub.add_parser("convert", help="convert model files (ours <-> LAMMPS SNAP / ML-IAP)")
    c.add_argument("--inputs", nargs="+", required=True)
    c.add_argument("--outputs", nargs="+", required=True)
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="describe a model")
    common(i)
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"ase-mlp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
