"""Cell metadynamics: cost of the bookkeeping per metastep against the MD it runs.

Run by hand (not a test)::

    python benchmarks/bench_metad.py [--sizes 1000 100000] [--md-steps 20 2]
                                     [--gaussians 200] [--threads 1] [--json out.json]

System: wurtzite GaN (orthohexagonal 8-atom cell repeated to about ``size`` atoms) with the
embedded NN-SNAP (float64, CPU), 300 K, 1 fs, 20 GPa. Each size runs in a fresh process
(peak RSS per size). Measured in the same process:

* ``md_forces``: the peer, ASE ``LangevinBAOAB`` at fixed cell for ``md_steps`` steps with
  forces only (what a plain NVT run costs);
* ``sample``: the MD segment of one metastep (the same integrator, plus the stress at every
  averaged step, which metadynamics needs for the driving force);
* ``bookkeeping``: the rest of a metastep: driving force, CV force, bias and step over
  ``--gaussians`` Gaussians already deposited, scaled CVs (``scaling="hessian"``, set up
  once), new cell with affine rescaling, history and log line;
* ``fingerprint``: :class:`ase_mlp.analysis.PhaseFingerprint` ("AB": coordination and
  phase labels), optional per metastep;
* ``checkpoint``: ``save_state`` (atomic .npz).

Ratios: bookkeeping / sample, (sample - md_forces) / md_forces (the stress overhead).
"""

from __future__ import annotations

import argparse
import json
import time

from _harness import peak_mb, run_isolated


def _measure(size, md_steps, n_gauss, threads, q):
    import tempfile
    import warnings

    import numpy as np
    import torch
    from ase import units
    from ase.md.langevinbaoab import LangevinBAOAB

    from ase_mlp._util import thermalize
    from ase_mlp.analysis import PhaseFingerprint
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.cli import default_model_path
    from ase_mlp.dynamics import CellMetadynamics
    from ase_mlp.workflows.phases import wurtzite

    torch.set_num_threads(threads)
    cell8 = wurtzite(("Ga", "N"), a=3.05, c=4.95, orthohexagonal=True)
    # a near-cubic box of edge L with about `size` atoms
    edges = cell8.cell.lengths()
    L = (size / 8 * np.prod(edges)) ** (1 / 3)
    rep = tuple(int(max(1, round(L / e))) for e in edges)
    atoms = cell8.repeat(rep)
    calc = MLPCalculator.from_file(default_model_path(), device="cpu")
    atoms.calc = calc
    rng = np.random.default_rng(0)
    thermalize(atoms, 300.0, rng)
    dt = 1.0 * units.fs
    out = {"natoms": len(atoms), "repeat": rep, "md_steps": md_steps, "gaussians": n_gauss}

    # peer: plain NVT MD, forces only
    md = LangevinBAOAB(atoms, dt, temperature_K=300.0, T_tau=100 * units.fs, rng=rng)
    md.run(1)                                                       # warm-up
    t = time.perf_counter()
    md.run(md_steps)
    out["md_forces"] = time.perf_counter() - t

    class Timed(CellMetadynamics):
        def _sample(self):
            t0 = time.perf_counter()
            res = super()._sample()
            self.t_sample = time.perf_counter() - t0
            return res

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # the unrelaxed 20 GPa cell need not be a minimum of G: the Hessian warning is moot
        warnings.simplefilter("ignore", UserWarning)
        t = time.perf_counter()
        dyn = Timed(atoms, pressure_GPa=20.0, temperature_K=300.0, gaussian_height=1.0,
                    gaussian_width=0.5, md_steps=md_steps, timestep=dt, scaling="hessian",
                    rng=rng, logfile=f"{tmp}/m.log")
        out["setup_hessian"] = time.perf_counter() - t
        dyn.centers = rng.normal(scale=0.5, size=(n_gauss, 6))     # a late metastep
        t = time.perf_counter()
        dyn.run(1)
        total = time.perf_counter() - t
        out["sample"] = dyn.t_sample
        out["bookkeeping"] = total - dyn.t_sample
        fp = PhaseFingerprint("AB")
        t = time.perf_counter()
        fp(atoms)
        out["fingerprint"] = time.perf_counter() - t
        t = time.perf_counter()
        dyn.save_state(f"{tmp}/state.npz")
        out["checkpoint"] = time.perf_counter() - t
    out["peak_mb"] = peak_mb()
    q.put(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100000])
    p.add_argument("--md-steps", type=int, nargs="+", default=[20, 2],
                   help="MD steps per metastep, one per size (the last one repeats)")
    p.add_argument("--gaussians", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    for k, size in enumerate(args.sizes):
        steps = args.md_steps[min(k, len(args.md_steps) - 1)]
        r = run_isolated(_measure, size, steps, args.gaussians, args.threads)
        rows.append(r)
        print(f"{r['natoms']:>7d} atoms, {steps} MD steps/metastep: plain MD {r['md_forces']:.3f} s"
              f", metastep MD (with stress) {r['sample']:.3f} s "
              f"(+{100 * (r['sample'] / r['md_forces'] - 1):.0f} %), bookkeeping "
              f"{1e3 * r['bookkeeping']:.1f} ms ({100 * r['bookkeeping'] / r['sample']:.2f} % "
              f"of the MD), fingerprint {1e3 * r['fingerprint']:.0f} ms, checkpoint "
              f"{1e3 * r['checkpoint']:.0f} ms, Hessian set-up {r['setup_hessian']:.2f} s, "
              f"peak {r['peak_mb']:.0f} MB", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
