"""Native torch GAP (``ase_mlp.models.gap``) vs QUIP's own ASE calculator (quippy), interleaved.

Run by hand (not a test)::

    python benchmarks/bench_gap.py [--pairs 3] [--steps 1] [--n-structures 64]
                                   [--big 1000] [--no-soap] [--json out.json]

Model: trained here by ``gap_fit`` (``tests/models/test_gap.py``'s ``make_gap``: Cu/Al fcc
cells labelled with ASE's EMT) with a ``distance_2b`` (cutoff 4 Å, 15 sparse points per
element pair) and, unless ``--no-soap``, a ``soap`` descriptor (cutoff 4 Å, n_max 6, l_max 4,
atom_sigma 0.5, dot_product zeta 2, 50 sparse points per centre element). Structures:
``--n-structures`` rattled 64-atom fcc Cu/Al cells (2x2x4 cubic, 30 % Al) and one of
``--big`` atoms (a cubic fcc supercell, 1000 = 5x5x10).

Every measurement is a fresh spawned child process (``_harness.run_isolated``, one thread:
``MLPCalculator(threads=1)``, ``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``); the two
sides alternate A B A B ..., ``--pairs`` rounds, each timing ``--steps`` evaluations after
one untimed warm-up. Reported per evaluation: min / median / max over the rounds of the wall
and CPU time, and the peak added memory; ratio = t_quip / t_ase_mlp of the medians (> 1:
ase_mlp faster).

Sides (energy, forces and stress on both):

* ase_mlp: ``MLPCalculator.from_file(xml)``; small: one ``calculate_batch`` of all the
  structures; big: ``calculate`` on the one structure;
* quip: ``quippy.potential.Potential(param_filename=xml)``, one structure at a time.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np
from _harness import (
    interleave,
    report_pair,
    rss_mb,
    run_isolated,
    time_evaluations,
)


ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
SOAP = ("soap cutoff=4.0 cutoff_transition_width=1.0 n_max=6 l_max=4 atom_sigma=0.5 "
        "covariance_type=dot_product zeta=2 delta=0.2 n_sparse=50 sparse_method=cur_points")


def _tests_module():
    path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "models" / "test_gap.py"
    spec = importlib.util.spec_from_file_location("_gap_models_for_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_model(directory: str, soap: bool) -> str:
    mod = _tests_module()
    descriptors = (mod.D2B, SOAP) if soap else (mod.D2B,)
    return str(mod.make_gap(directory, descriptors=descriptors))


def structures(n_structures: int, big: int):
    from ase.build import bulk

    rng = np.random.default_rng(0)

    def cell(reps):
        atoms = bulk("Cu", "fcc", a=3.62, cubic=True) * reps
        atoms.symbols[rng.choice(len(atoms), int(0.3 * len(atoms)), replace=False)] = "Al"
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        return atoms

    if big == 0:
        return [cell((2, 2, 4)) for _ in range(n_structures)]
    if big == 1000:
        return [cell((5, 5, 10))]
    n = max(1, round((big / 4) ** (1 / 3)))
    return [cell((n, n, max(1, round(big / (4 * n * n)))))]


def _child(side, path, n_structures, big, steps, q):
    import torch

    torch.set_num_threads(1)
    images = structures(n_structures, big)
    rss0 = rss_mb()
    if side == "ase_mlp":
        from ase_mlp.calculators import MLPCalculator

        calc = MLPCalculator.from_file(path, device="cpu", threads=1)

        def evaluate():
            if big == 0:
                res = calc.calculate_batch(images, properties=("energy", "forces", "stress"))
                return [r["energy"] for r in res]
            calc.calculate(images[0].copy(), ["energy", "forces", "stress"])
            return [calc.results["energy"]]
    else:
        from quippy.potential import Potential

        # always_required: otherwise quippy returns its cached results for the same atoms
        pot = Potential(param_filename=path, calculation_always_required=True)

        def evaluate():
            out = []
            for a in images:
                pot.calculate(a.copy(), properties=["energy", "forces", "stress"])
                out.append(pot.results["energy"])
            return out

    q.put({**time_evaluations(evaluate, steps, rss0), "atoms": sum(len(a) for a in images)})


def _section(label, big, path, args):
    def side(name):
        return lambda: run_isolated(_child, name, path, args.n_structures, big, args.steps,
                                    env=ENV)

    def log(name, k, r):
        print(f"  {label:16s} round {k} {name:8s} {r['wall']:8.3f} s", flush=True)

    res = interleave({"ase_mlp": side("ase_mlp"), "quip": side("quip")}, args.pairs, log=log)
    e_diff = max(abs(a - b) for a, b in zip(res["ase_mlp"][0]["energies"],
                                            res["quip"][0]["energies"], strict=True))
    n_atoms = res["ase_mlp"][0]["atoms"]
    print(f"{label} ({n_atoms} atoms): |E_ase_mlp - E_quip| max {e_diff:.2e} eV")
    out = report_pair(res, "quip", n_atoms)
    out["max_energy_diff"] = e_diff
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--n-structures", type=int, default=64)
    ap.add_argument("--big", type=int, default=1000, help="atoms of the single structure")
    ap.add_argument("--no-soap", action="store_true", help="distance_2b only")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    out = {"load_start": os.getloadavg()[0], "sections": {}}
    with tempfile.TemporaryDirectory(prefix="bench_gap_") as tmp:
        t0 = time.perf_counter()
        path = make_model(tmp, soap=not args.no_soap)
        print(f"gap_fit: {time.perf_counter() - t0:.1f} s")
        for label, big in ((f"{args.n_structures} x 64 atoms", 0), (f"{args.big} atoms",
                                                                    args.big)):
            out["sections"][label] = _section(label, big, path, args)
    out["load_end"] = os.getloadavg()[0]
    print(f"load at the end {out['load_end']:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
