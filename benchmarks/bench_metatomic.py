"""A metatomic model run through ase_mlp vs through ``metatomic_ase``, interleaved.

Run by hand (not a test)::

    python benchmarks/bench_metatomic.py [--model lj|snap] [--pairs 3] [--steps 3]
                                         [--n-structures 64] [--json out.json]

Models, exported to a TorchScript ``.pt`` and loaded back, float64 on the CPU:

* ``lj``: the two-element Lennard-Jones of :func:`ase_mlp.models.metatomic.lennard_jones`
  (cutoff 7 Å, half neighbour list) on rattled fcc Ar/Kr (a = 5.4 Å, a third Kr);
* ``snap``: a linear SNAP (W/Be, twojmax 6, random coefficients) written by
  :func:`ase_mlp.io.metatomic_export.export_metatomic`, on rattled bcc W/Be (a = 3.17 Å).

Sections: ``--n-structures`` structures of 64 atoms (different rattles), and one
structure of 1 000 atoms. Sides:

* ``ase_mlp``: ``MLPCalculator.from_file(path, threads=1)``; small: one
  ``calculate_batch`` of all the structures; big: ``calculate`` on the one structure;
* ``metatomic_ase``: ``MetatomicCalculator(path)``, ``calculate`` one structure at a time
  (vesin neighbour lists, one backward pass).

Both compute energy, forces and stress (``all_changes``: nothing cached). Every
measurement is a fresh spawned child process (``_harness.run_isolated``, one thread:
``torch.set_num_threads(1)``, ``OPENBLAS_NUM_THREADS=1``); the sides alternate A B A B ...,
``--pairs`` rounds, each timing ``--steps`` evaluations after two untimed warm-ups
(TorchScript profiling). Reported per evaluation: min / median / max over the rounds of
the wall and CPU time, the peak *added* memory (peak RSS during the timed evaluations
minus the RSS before the calculator was made), ratio = t_metatomic_ase / t_ase_mlp of the
medians (> 1: ase_mlp faster), and the largest force difference between the sides.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

from _harness import hwm_mb, interleave, reset_peak, rss_mb, run_isolated, summarize


ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
PROPS = ("energy", "forces", "stress")


def _atoms(n: int, seed: int = 0, model: str = "lj"):
    """``n`` atoms (64 or 1 000) of rattled fcc Ar/Kr (lj) or bcc W/Be (snap)."""
    import numpy as np
    from ase.build import bulk

    if model == "lj":
        base, other, reps = bulk("Ar", "fcc", a=5.4, cubic=True), "Kr", {64: (2, 2, 4),
                                                                        1000: (5, 5, 10)}
    else:
        base, other, reps = bulk("W", "bcc", a=3.17, cubic=True), "Be", {64: (4, 4, 2),
                                                                        1000: (10, 10, 5)}
    atoms = base.repeat(reps[n])
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = other
    atoms.rattle(0.1, seed=seed)
    return atoms


def _snap():
    import numpy as np

    from ase_mlp.descriptors import Bispectrum
    from ase_mlp.models import LinearSNAP

    d = Bispectrum(["W", "Be"], 6, 4.8, [0.5, 0.42], [1.0, 0.96])
    return LinearSNAP(d, np.random.default_rng(0).normal(size=(2, 1 + d.n_descriptors)) * 0.02)


def _child(side, path, model, n_structures, big, steps, q):
    """Time one side; put ``{"wall", "cpu", "added_mb", "forces"}`` on ``q``."""
    import numpy as np
    import torch
    from ase.calculators.calculator import all_changes

    torch.set_num_threads(1)
    images = ([_atoms(64, seed=k, model=model) for k in range(n_structures)] if big == 0
              else [_atoms(big, model=model)])
    rss0 = rss_mb()
    if side == "ase_mlp":
        from ase_mlp.calculators import MLPCalculator

        calc = MLPCalculator.from_file(path, device="cpu", threads=1)

        def evaluate():
            if big == 0:
                return calc.calculate_batch(images, properties=PROPS)[0]["forces"]
            calc.calculate(images[0].copy(), list(PROPS), all_changes)
            return calc.results["forces"]
    else:
        from metatomic_ase import MetatomicCalculator

        calc = MetatomicCalculator(path)

        def evaluate():
            f = None
            for a in images:
                calc.calculate(a.copy(), list(PROPS), all_changes)
                f = calc.results["forces"] if f is None else f
            return f

    for _ in range(2):      # warm-up (TorchScript profiling runs)
        forces = evaluate()
    reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        forces = evaluate()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    q.put({"wall": wall / steps, "cpu": cpu / steps, "added_mb": hwm_mb() - rss0,
           "forces": np.asarray(forces).tolist()})


def _section(label, big, path, args):
    import numpy as np

    def side(name):
        return lambda: run_isolated(_child, name, path, args.model, args.n_structures, big,
                                    args.steps, env=ENV)

    def log(name, k, r):
        print(f"  {label:16s} round {k} {name:14s} {r['wall']:8.4f} s", flush=True)

    res = interleave({"ase_mlp": side("ase_mlp"), "metatomic_ase": side("metatomic_ase")},
                     args.pairs, log=log)
    f_diff = float(np.abs(np.array(res["ase_mlp"][0]["forces"])
                          - np.array(res["metatomic_ase"][0]["forces"])).max())
    summ = {n: summarize(r) for n, r in res.items()}
    ratio = summ["metatomic_ase"]["wall"]["median"] / summ["ase_mlp"]["wall"]["median"]
    n_atoms = 64 * args.n_structures if big == 0 else big
    print(f"{label}: |F_ase_mlp - F_metatomic_ase| max {f_diff:.2e} eV/Å")
    for n, st in summ.items():
        w, c, m = st["wall"], st["cpu"], st["added_mb"]
        print(f"  {n:14s} wall {w['min']:.4f} / {w['median']:.4f} / {w['max']:.4f} s "
              f"({w['median'] / n_atoms * 1e6:.2f} us/atom)  cpu median {c['median']:.4f} s"
              f"  added peak {m['median']:.0f} MB")
    print(f"  ratio metatomic_ase / ase_mlp (medians): {ratio:.2f}")
    return {"summary": summ, "ratio": ratio, "max_force_diff": f_diff, "atoms": n_atoms}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("lj", "snap"), default="lj")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--n-structures", type=int, default=64)
    p.add_argument("--json")
    args = p.parse_args(argv)
    from ase_mlp.io.metatomic_export import export_metatomic
    from ase_mlp.models.metatomic import lennard_jones

    print(f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"model {args.model}")
    out = {"model": args.model, "load_start": os.getloadavg()[0], "sections": {}}
    with tempfile.TemporaryDirectory(prefix="bench_metatomic_") as tmp:
        path = os.path.join(tmp, f"{args.model}.pt")
        if args.model == "lj":
            lennard_jones(["Ar", "Kr"], [[3.40, 3.55], [3.55, 3.65]],
                          [[0.0104, 0.0125], [0.0125, 0.0140]], 7.0).save(path)
        else:
            export_metatomic(_snap(), path)
        for label, big in ((f"{args.n_structures} x 64 atoms", 0), ("1000 atoms", 1000)):
            out["sections"][label] = _section(label, big, path, args)
    out["load_end"] = os.getloadavg()[0]
    print(f"load at the end {out['load_end']:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
