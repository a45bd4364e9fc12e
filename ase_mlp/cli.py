"""Command line: ``ase-mlp demo | eval | fit | convert | info``."""

from __future__ import annotations

import argparse
import pathlib
import sys
from importlib.resources import files


def default_model_path() -> pathlib.Path:
    """The embedded default model: NN-SNAP for GaN (see ``ase_mlp/data/README.md``)."""
    return pathlib.Path(str(files("ase_mlp") / "data" / "GaN_nnsnap.pt"))


def _calculator(paths, device, dtype):
    import torch

    from ase_mlp.calculators import MLPCalculator

    dt = {"float64": torch.float64, "float32": torch.float32}[dtype]
    if not paths:
        paths = [default_model_path()]
    return MLPCalculator.from_file(*paths, device=device, dtype=dt)


def cmd_demo(args) -> int:
    """NPT MD of wurtzite GaN with the embedded NN-SNAP (or any GaN model)."""
    from ase_mlp.workflows.demo import run_demo

    calc = _calculator(args.model, args.device, args.dtype)
    missing = {"Ga", "N"} - set(calc.elements)
    if missing:
        raise ValueError(f"the demo simulates GaN; the model covers {calc.elements} "
                         f"(missing {sorted(missing)})")
    if not args.quiet:
        print(f"model: {calc.model.__class__.__name__} for {calc.elements}, cutoff "
              f"{calc.model.cutoff:.3f} Å, device {calc.device}, {calc.dtype}")
    run_demo(calc, repeat=tuple(args.repeat), temperature_K=args.temperature,
             pressure_GPa=args.pressure, steps=args.steps, timestep_fs=args.timestep,
             interval=args.interval, output=args.output, rng=args.seed, quiet=args.quiet,
             plot=not args.no_plot, log=(lambda *a: None) if args.quiet else print)
    return 0


def cmd_eval(args) -> int:
    """Evaluate structures from any file ASE reads; print a table, optionally write extxyz.

    With ``--data``, read labelled files (as ``ase-mlp fit`` does) and print the
    error metrics table (RMSE/MAE, per group).
    """
    inputs = list(args.inputs)
    args.structures = None
    if len(inputs) >= 2 and not args.model:  # ase-mlp eval MODEL DATA...
        args.model = [inputs[0]]
        args.data = list(args.data) + inputs[1:]
    elif len(inputs) == 1:
        args.structures = inputs[0]
    elif len(inputs) > 1:
        raise ValueError("with --model, give one structure file (or labelled files with --data)")
    if args.structures is None and not args.data:
        raise ValueError("give a structure file to evaluate, MODEL DATA..., or labelled files "
                         "with --data")
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
                             "pair (default: the embedded GaN NN-SNAP)")
        sp.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
        sp.add_argument("--dtype", default="float64", choices=["float64", "float32"])

    d = sub.add_parser("demo", help="run the main job on the embedded default model")
    common(d)
    d.add_argument("--repeat", type=int, nargs=3, default=[3, 2, 2], metavar=("NA", "NB", "NC"),
                   help="supercell of the 8-atom orthohexagonal wurtzite cell (3 2 2: 96 atoms)")
    d.add_argument("--steps", type=int, default=300, help="MD steps")
    d.add_argument("--timestep", type=float, default=2.0, help="fs")
    d.add_argument("--temperature", type=float, default=300.0, help="K")
    d.add_argument("--pressure", type=float, default=0.0, help="GPa")
    d.add_argument("--interval", type=int, default=10, help="steps between samples/frames")
    d.add_argument("--output", default="ase_mlp_demo", help="directory for traj, csv, png")
    d.add_argument("--no-plot", action="store_true")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("eval", help="evaluate structures from a file (any format ASE reads), "
                       "or error metrics on labelled data (--data)")
    common(e)
    e.add_argument("inputs", nargs="*", metavar="FILE",
                   help="STRUCTURES: evaluate them (energies and forces table); or MODEL "
                        "DATA...: error metrics of MODEL on the labelled DATA files")
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
