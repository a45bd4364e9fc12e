"""Nuclear quantum effects three ways: PIMD (i-PI + our driver) vs QTB/adQTB vs classical MD.

:func:`compare_quantum_methods` runs, for one system and temperature,

* classical MD: i-PI with one bead (PILE-L = Langevin), the same integrator as the PIMD runs;
* PIMD with each bead count of ``beads`` (PILE-L), to show convergence in P;
* QTB and adaptive QTB (:class:`ase_mlp.dynamics.QTB`, potential-energy estimators);

and returns the mean potential energy per atom (block error bars) and the partial RDFs
(PIMD: over all beads, the quantum pair distribution; not the centroids). Run from the
shell::

    python -m ase_mlp.ipi.compare --output nqe_compare [--quick]

which writes ``nqe_compare/summary.json`` and a table (see ``docs/ipi.md``).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
from ase import units

from ase_mlp._util import thermalize
from ase_mlp.ipi.analysis import block_average
from ase_mlp.ipi.outputs import bead_file, read_extxyz_trajectory, read_properties
from ase_mlp.ipi.workflow import run


def _rdf(frames, rmax, nbins):
    from ase_mlp.analysis import partial_rdf

    r, g = partial_rdf(frames, rmax=rmax, nbins=nbins)
    return r, {f"{a}-{b}": v for (a, b), v in g.items() if a <= b}


def _pimd(atoms, calc, workdir, P, T, steps, dt, stride, skip, seed, reuse):
    workdir = pathlib.Path(workdir)
    out = workdir / "simulation.out"
    if reuse and out.is_file() and len(read_properties(out)["step"]) == steps + 1:
        props = read_properties(out)
    else:
        pos_out = (f"<trajectory filename='pos' stride='{stride}' format='ase'> positions "
                   "</trajectory>")
        props = run(atoms, calc, workdir, nbeads=P, temperature_K=T, steps=steps,
                    timestep_fs=dt, tau_fs=100.0, seed=seed, trajectory_stride=stride,
                    properties=("step", "potential{electronvolt}", "kinetic_cv{electronvolt}",
                                "temperature{kelvin}"), extra_outputs=[pos_out]).properties
    n = len(atoms)
    frames = []
    for b in range(P):
        fr = read_extxyz_trajectory(bead_file(workdir, "pos", b, P, "extxyz"))
        frames += [f for f in fr if f.info.get("step", 0) >= skip]
    epot = props["potential"][skip:] / n
    ekin = props["kinetic_cv"][skip:] / n
    return epot, ekin, frames


def _qtb(atoms, calc, adaptive, T, steps, dt, stride, skip, seed, friction_per_fs):

    from ase_mlp.dynamics import QTB

    a = atoms.copy()
    a.calc = calc
    rng = np.random.default_rng(seed)
    thermalize(a, T, rng)
    dyn = QTB(a, timestep=dt * units.fs, temperature_K=T,
              friction=friction_per_fs / units.fs, adaptive=adaptive, rng=rng)
    epot, frames = [], []

    def sample():
        if dyn.nsteps >= skip:
            epot.append(a.get_potential_energy() / len(a))
            if dyn.nsteps % stride == 0:
                frames.append(a.copy())

    dyn.attach(sample, interval=1)
    dyn.run(steps)
    return np.array(epot), frames


def compare_quantum_methods(atoms, calc, workdir, *, temperature_K=300.0, beads=(8, 16),
                            steps=2000, qtb_steps=None, qtb_skip=None, timestep_fs=0.5,
                            skip=500, stride=20,
                            rmax=5.0, nbins=100, seed=1, qtb_friction_per_fs=0.002,
                            adqtb_friction_per_fs=0.01, reuse=False, log=print) -> dict:
    """Mean potential energy per atom and partial RDFs: classical, PIMD(P), QTB, adQTB.

    ``steps``/``skip`` are the i-PI runs' steps and discarded steps, ``qtb_steps``/
    ``qtb_skip`` those of the QTB runs (the QTB bath needs several ``1 / friction`` to fill
    the zero-point energy in).

    Returns ``{method: {"epot": (mean, sem), "ekin_cv": (mean, sem) (PIMD), "r": r,
    "rdf": {"Ga-N": g, ...}}}`` (eV/atom) and writes ``workdir/summary.json``.
    ``reuse=True`` reads finished i-PI runs found in ``workdir`` instead of repeating them.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    qtb_steps = steps if qtb_steps is None else qtb_steps
    qtb_skip = skip if qtb_skip is None else qtb_skip
    out: dict = {}
    for P in (1, *beads):
        name = "classical" if P == 1 else f"pimd_{P}"
        epot, ekin, frames = _pimd(atoms, calc, workdir / name, P, temperature_K, steps,
                                   timestep_fs, stride, skip, seed, reuse)
        r, g = _rdf(frames, rmax, nbins)
        out[name] = {"epot": block_average(epot), "ekin_cv": block_average(ekin),
                     "r": r, "rdf": g}
        log(f"{name:10s} <E_pot> = {out[name]['epot'][0]:.5f} +- {out[name]['epot'][1]:.5f} "
            f"eV/atom")
    for name, adaptive, fr in (("qtb", False, qtb_friction_per_fs),
                               ("adqtb", True, adqtb_friction_per_fs)):
        epot, frames = _qtb(atoms, calc, adaptive, temperature_K, qtb_steps, timestep_fs,
                            stride, qtb_skip, seed, fr)
        r, g = _rdf(frames, rmax, nbins)
        out[name] = {"epot": block_average(epot), "r": r, "rdf": g}
        log(f"{name:10s} <E_pot> = {out[name]['epot'][0]:.5f} +- {out[name]['epot'][1]:.5f} "
            f"eV/atom")
    ref = out[f"pimd_{max(beads)}"]
    for v in out.values():
        v["rdf_l1_vs_pimd"] = {k: float(np.abs(v["rdf"][k] - ref["rdf"][k]).sum()
                                        / ref["rdf"][k].sum()) for k in v["rdf"]}
    summary = {k: {kk: (vv if not isinstance(vv, np.ndarray) else vv.tolist())
                   for kk, vv in v.items() if kk not in ("rdf", "r")}
               for k, v in out.items()}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    np.savez(workdir / "rdfs.npz", r=r, **{f"{m}:{k}": g for m, v in out.items()
                                           for k, g in v["rdf"].items()})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="PIMD vs QTB/adQTB vs classical MD (GaN)")
    ap.add_argument("--output", default="nqe_compare")
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--beads", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--qtb-steps", type=int, default=None,
                    help="QTB/adQTB steps (default --steps; QTB needs ~5/friction to fill)")
    ap.add_argument("--qtb-skip", type=int, default=None, help="QTB steps discarded")
    ap.add_argument("--reuse", action="store_true", help="reuse finished i-PI runs")
    args = ap.parse_args(argv)
    import torch
    from ase.build import bulk

    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.cli import default_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    atoms = bulk("GaN", "wurtzite", a=3.19, c=5.19).repeat((2, 2, 2))
    calc = MLPCalculator.from_file(default_model_path(), device="cpu")
    kw = dict(steps=60, skip=20, stride=10, beads=(4,)) if args.quick else dict(
        steps=args.steps, beads=tuple(args.beads), qtb_steps=args.qtb_steps,
        qtb_skip=args.qtb_skip)
    compare_quantum_methods(atoms, calc, args.output, temperature_K=args.temperature,
                            reuse=args.reuse, **kw)


if __name__ == "__main__":
    main()
