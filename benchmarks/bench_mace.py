"""MACE through ase_mlp (``ase_mlp.models.mace.MaceModel``) vs MACE's own ASE calculator.

Run by hand (not a test)::

    python benchmarks/bench_mace.py [--pairs 3] [--steps 1] [--n-structures 64]
                                    [--max-batch-atoms N] [--big 1000] [--channels 32]
                                    [--max-L 1] [--json out.json]

Model: a ``ScaleShiftMACE`` built by MACE's own constructor with seeded random weights
(``ase_mlp.models.mace.small_mace``; Al/Cu, r_max 5 Å, ``--channels`` x (0e + 1o) hidden
features for ``--max-L 1`` (scalars only for 0), spherical harmonics to l = 3, correlation
3, 2 interactions, 8 Bessel functions, radial MLP [64, 64, 64], ZBL pair repulsion), saved
with ``torch.save`` and evaluated in float64 on the CPU. Structures: rattled fcc Al/Cu
(a = 4.05 Å, a third of the atoms Cu), about 42 neighbours per atom within r_max;
``--n-structures`` cells of 64 atoms (2x2x4 conventional cells) and one of ``--big`` atoms
(conventional cells repeated to the nearest count).

Every measurement is a fresh spawned child process (``_harness.run_isolated``, one thread:
``MLPCalculator(threads=1)``, ``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``); the two
sides alternate A B A B ..., ``--pairs`` rounds, each timing ``--steps`` evaluations after
one untimed warm-up. Reported per evaluation: min / median / max over the rounds of the
wall and CPU time and the peak *added* memory (peak RSS during the timed evaluations minus
the RSS before the calculator was made); ratio = t_mace / t_ase_mlp of the medians
(> 1: ase_mlp faster).

Sides (energy, forces and stress on both):

* ase_mlp: ``MLPCalculator(MaceModel.from_file(path), threads=1)``; small: one
  ``calculate_batch`` of all the structures (split into model calls of at most
  ``--max-batch-atoms`` atoms, default the calculator's 2048); big: ``calculate`` on the
  one structure;
* mace: ``mace.calculators.MACECalculator(model_paths=path, default_dtype="float64")``,
  one structure at a time (``calculate``), as MACE users run it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile

import numpy as np
from _harness import (
    interleave,
    report_pair,
    rss_mb,
    run_isolated,
    time_evaluations,
)
from ase import Atoms
from ase.build import bulk


ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PROPS = ["energy", "forces", "stress"]


def make_model(path: str, channels: int, max_l: int) -> str:
    import torch

    from ase_mlp.models.mace import small_mace

    model = small_mace(("Al", "Cu"), r_max=5.0, channels=channels, max_L=max_l, max_ell=3,
                       correlation=3, num_interactions=2, num_bessel=8,
                       radial_mlp=(64, 64, 64), avg_num_neighbors=42.0, scale=0.5)
    torch.save(model, path)
    return path


def alloy(n_atoms: int, seed: int) -> Atoms:
    """Rattled fcc Al/Cu of ``n_atoms`` atoms (conventional cells, 4 atoms each)."""
    cells = n_atoms // 4
    nx = max(1, round(cells ** (1.0 / 3.0)))
    while cells % nx:
        nx -= 1
    rest = cells // nx
    ny = max(1, round(rest ** 0.5))
    while rest % ny:
        ny -= 1
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((nx, ny, rest // ny))
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Cu"
    atoms.rattle(0.05, seed=seed)
    return atoms


def _child(side, path, n_structures, big, steps, max_batch_atoms, q):
    """Time one side; put ``{"wall", "cpu", "added_mb", "energies"}`` on ``q``."""
    import warnings

    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    images = ([alloy(64, k) for k in range(n_structures)] if big == 0 else [alloy(big, 0)])
    rss0 = rss_mb()
    if side == "ase_mlp":
        from ase_mlp.calculators import MLPCalculator
        from ase_mlp.models.mace import MaceModel

        calc = MLPCalculator(MaceModel.from_file(path), device="cpu", threads=1,
                             max_batch_atoms=max_batch_atoms)

        def evaluate():
            if big == 0:
                return [r["energy"] for r in calc.calculate_batch(images, properties=PROPS)]
            calc.calculate(images[0].copy(), PROPS)
            return [calc.results["energy"]]
    else:
        from ase.calculators.calculator import all_changes
        from mace.calculators import MACECalculator

        calc = MACECalculator(model_paths=path, device="cpu", default_dtype="float64")

        def evaluate():
            out = []
            for a in images:
                calc.calculate(a.copy(), PROPS, all_changes)
                out.append(calc.results["energy"])
            return out

    q.put(time_evaluations(evaluate, steps, rss0))


def _section(label, big, path, args):
    def side(name):
        return lambda: run_isolated(_child, name, path, args.n_structures, big, args.steps,
                                    args.max_batch_atoms, env=ENV)

    def log(name, k, r):
        print(f"  {label:16s} round {k} {name:8s} {r['wall']:8.3f} s", flush=True)

    res = interleave({"ase_mlp": side("ase_mlp"), "mace": side("mace")}, args.pairs, log=log)
    e_diff = max(abs(a - b) for a, b in zip(res["ase_mlp"][0]["energies"],
                                            res["mace"][0]["energies"], strict=True))
    n_atoms = 64 * args.n_structures if big == 0 else big
    print(f"{label}: |E_ase_mlp - E_mace| max {e_diff:.2e} eV")
    out = report_pair(res, "mace", n_atoms)
    out["max_energy_diff"] = e_diff
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--n-structures", type=int, default=64)
    ap.add_argument("--big", type=int, default=1000,
                    help="atoms of the single structure (0: skip that section)")
    ap.add_argument("--max-batch-atoms", type=int, default=None,
                    help="MLPCalculator(max_batch_atoms=...) of the batched side (default: "
                         "the calculator's)")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--max-L", dest="max_l", type=int, default=1, choices=(0, 1))
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; model "
          f"{args.channels} channels, max_L {args.max_l}; max_batch_atoms "
          f"{args.max_batch_atoms or 'default'}")
    out = {"load_start": os.getloadavg()[0], "sections": {}, "channels": args.channels,
           "max_L": args.max_l, "max_batch_atoms": args.max_batch_atoms}
    with tempfile.TemporaryDirectory(prefix="bench_mace_") as tmp:
        path = make_model(str(pathlib.Path(tmp) / "alloy.model"), args.channels, args.max_l)
        sections = [(f"{args.n_structures} x 64 atoms", 0)]
        sections += [(f"{args.big} atoms", args.big)] if args.big else []
        for label, big in sections:
            out["sections"][label] = _section(label, big, path, args)
    out["load_end"] = os.getloadavg()[0]
    print(f"load at the end {out['load_end']:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
