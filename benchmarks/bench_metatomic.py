"""Cost of a metatomic model run through ase_mlp vs through ``metatomic_ase``.

Run by hand (not a test)::

    python benchmarks/bench_metatomic.py [--model lj|snap] [--threads 1] [--sizes 108 864]
                                         [--repeats 20] [--quick] [--json out.json]

Models, exported to a TorchScript ``.pt`` and loaded back, float64 on the CPU:

* ``lj``: the two-element Lennard-Jones of :func:`ase_mlp.models.metatomic.lennard_jones`
  (cutoff 7 Å, half neighbour list) on rattled fcc Ar/Kr (a = 5.4 Å);
* ``snap``: a linear SNAP (W/Be, twojmax 6, random coefficients) written by
  :func:`ase_mlp.io.metatomic_export.export_metatomic`, on rattled bcc W/Be
  (a = 3.17 Å); the extra case ``ase_mlp native`` runs the original ``LinearSNAP``
  (compiled kernels) for comparison.
Cases, each in a fresh process (multiprocessing spawn), time per evaluation of
energy, forces and stress, median over ``--repeats`` calls after two warm-up calls
(each call moves one atom by 1e-3 Å so nothing is cached):

* ``metatomic_ase``: ``MetatomicCalculator(path)`` on one structure (vesin neighbour
  lists, one backward pass);
* ``ase_mlp``: ``MLPCalculator.from_file``-equivalent (``MetatomicModel.from_file``) on
  one structure (Verlet list with skin 1 Å, edges converted to metatomic neighbour lists);
* ``ase_mlp batch``: ``calculate_batch`` of 8 copies (reported per structure).

Also reported: the largest difference of the forces between the two calculators.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from _harness import run_isolated


def _atoms(n: int, seed: int = 0, model: str = "lj"):
    import numpy as np
    from ase.build import bulk

    if model == "lj":
        base, other, per_cell = bulk("Ar", "fcc", a=5.4, cubic=True), "Kr", 4
    else:
        base, other, per_cell = bulk("W", "bcc", a=3.17, cubic=True), "Be", 2
    reps = max(1, round((n / per_cell) ** (1 / 3)))
    atoms = base.repeat(reps)
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


def _child(path, model, case, n, repeats, threads, q):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    atoms = _atoms(n, model=model)
    if case == "ase_mlp native":
        from ase_mlp.calculators import MLPCalculator

        calc = MLPCalculator(_snap(), device="cpu", threads=threads)
    elif case == "metatomic_ase":
        from metatomic_ase import MetatomicCalculator

        calc = MetatomicCalculator(path)
    else:
        from ase_mlp.calculators import MLPCalculator
        from ase_mlp.models.metatomic import MetatomicModel

        calc = MLPCalculator(MetatomicModel.from_file(path), device="cpu", threads=threads)
    times = []
    forces = None
    for k in range(repeats + 2):
        atoms.positions[k % len(atoms), 0] += 1e-3
        t = time.perf_counter()
        if case == "ase_mlp batch":
            res = calc.calculate_batch([atoms] * 8, ("energy", "forces", "stress"))
            f = res[0]["forces"]
        else:
            atoms.calc = calc
            f = atoms.get_forces()
            atoms.get_stress()
        dt = time.perf_counter() - t
        if k >= 2:
            times.append(dt / (8 if case == "ase_mlp batch" else 1))
        forces = np.array(f)
    q.put({"case": case, "atoms": len(atoms), "median_ms": 1e3 * statistics.median(times),
           "min_ms": 1e3 * min(times), "forces": forces.tolist()})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("lj", "snap"), default="lj")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[108, 864])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="sizes 32 and 256, 5 repeats")
    p.add_argument("--json")
    args = p.parse_args(argv)
    sizes, repeats = ([32, 256], 5) if args.quick else (args.sizes, args.repeats)
    from ase_mlp.io.metatomic_export import export_metatomic
    from ase_mlp.models.metatomic import lennard_jones

    rows = []
    cases = ["metatomic_ase", "ase_mlp", "ase_mlp batch"]
    with tempfile.TemporaryDirectory(prefix="bench_metatomic_") as tmp:
        path = os.path.join(tmp, f"{args.model}.pt")
        if args.model == "lj":
            lennard_jones(["Ar", "Kr"], [[3.40, 3.55], [3.55, 3.65]],
                          [[0.0104, 0.0125], [0.0125, 0.0140]], 7.0).save(path)
        else:
            export_metatomic(_snap(), path)
            cases.append("ase_mlp native")
        for n in sizes:
            res = {c: run_isolated(_child, path, args.model, c, n, repeats, args.threads)
                   for c in cases}
            import numpy as np

            diff = float(np.abs(np.array(res["ase_mlp"]["forces"])
                                - np.array(res["metatomic_ase"]["forces"])).max())
            for c, r in res.items():
                r.pop("forces")
                rows.append({**r, "max_force_diff_eV_A": diff})
                print(f"{r['atoms']:6d} atoms  {c:15s} {r['median_ms']:9.2f} ms/structure "
                      f"(min {r['min_ms']:.2f})  |dF|max={diff:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "threads": args.threads, "rows": rows}, fh,
                      indent=1)


if __name__ == "__main__":
    main()
