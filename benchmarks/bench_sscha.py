"""SSCHA ensemble evaluation: one calculate_batch call versus python-sscha's one-by-one route.

Run by hand (not a test; needs ``pip install 'ase-mlp[sscha]'``)::

    python benchmarks/bench_sscha.py [--repeat 2 2 1] [--n-configs 100] [--pairs 3]
                                     [--threads 1] [--batch-size N] [--json out.json]

System: the embedded GaN NN-SNAP (float64, CPU) on a wurtzite supercell (``--repeat`` of the
4-atom cell), Gamma-only harmonic dynamical matrix of that supercell, ensemble at 600 K.
A = ``ensemble.compute_ensemble(calc)`` (python-sscha: one ASE calculation per
configuration), B = :func:`ase_mlp.workflows.sscha.compute_ensemble_batched` (one
``calculate_batch``), both with stress, on the same configurations. The two are interleaved
``--pairs`` times (A B A B ...); reported: wall seconds min / median / max of each and the
ratio of the medians A / B, and the largest difference of energies, forces, stresses
(Ry units) between the routes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, nargs=3, default=(2, 2, 1))
    ap.add_argument("--n-configs", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=600.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)           # a script: fine to set here
    import sscha.Ensemble

    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.cli import default_model_path
    from ase_mlp.workflows import sscha as S
    from ase_mlp.workflows.phases import wurtzite

    calc = MLPCalculator.from_file(default_model_path(), device="cpu", dtype="float64")
    atoms = wurtzite(("Ga", "N"), a=3.19, c=5.19, u=0.377).repeat(tuple(args.repeat))
    dyn = S.dynamical_matrix(atoms, S.force_constants(atoms, calc))
    with contextlib.redirect_stdout(None):
        dyn.Symmetrize()

    state = np.random.get_state()
    np.random.seed(12345)
    base = sscha.Ensemble.Ensemble(dyn, args.temperature, dyn.GetSupercell())
    base.generate(args.n_configs)
    np.random.set_state(state)
    n = base.N

    def fresh():
        e = base.split(np.ones(n, dtype=bool))
        e.force_computed[:] = False
        e.stress_computed[:] = False
        return e

    times = {"one_by_one": [], "batched": []}
    last = {}
    for _ in range(args.pairs):
        for kind in ("one_by_one", "batched"):
            ens = fresh()
            t0 = time.perf_counter()
            if kind == "one_by_one":
                with contextlib.redirect_stdout(None):
                    ens.compute_ensemble(calc, True, verbose=False)
            else:
                S.compute_ensemble_batched(ens, calc, batch_size=args.batch_size)
            times[kind].append(time.perf_counter() - t0)
            last[kind] = ens
    a, b = last["one_by_one"], last["batched"]
    diff = {"energy_Ry": float(np.abs(a.energies - b.energies).max()),
            "forces_Ry_per_A": float(np.abs(a.forces - b.forces).max()),
            "stress_Ry_per_bohr3": float(np.abs(a.stresses - b.stresses).max())}
    summary = {k: {"min": min(v), "median": float(np.median(v)), "max": max(v)}
               for k, v in times.items()}
    ratio = summary["one_by_one"]["median"] / summary["batched"]["median"]
    print(f"GaN NN-SNAP, {len(atoms)} atoms, {n} configurations, {args.temperature} K, "
          f"{args.threads} thread(s), {args.pairs} interleaved pairs")
    for k, s in summary.items():
        print(f"  {k:11s} min {s['min']:.3f} s  median {s['median']:.3f} s  "
              f"max {s['max']:.3f} s  ({s['median'] / n * 1e3:.2f} ms/config)")
    print(f"  ratio one-by-one / batched (medians): {ratio:.2f}")
    print(f"  max |difference|: {diff}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"atoms": len(atoms), "n_configs": n, "threads": args.threads,
                       "times_s": times, "summary": summary, "ratio": ratio,
                       "max_difference": diff}, fh, indent=1)
    return ratio


if __name__ == "__main__":
    main()
