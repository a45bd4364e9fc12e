"""Compiled NequIP model (``ase_mlp.models.nequip``) vs nequip's own ASE calculator, interleaved.

Run by hand (not a test)::

    python benchmarks/bench_nequip.py [--pairs 3] [--steps 1] [--n-structures 64]
                                      [--big 1000] [--kind nequip|allegro]
                                      [--jit-optimize] [--json out.json]

Model: a NequIP of nequip's default size (4 layers, l_max 1, 32 features, radial MLP
64 wide, 8 Bessels, r_max 5 Å) or an Allegro (2 layers, l_max 1, 64 scalar / 16 tensor
features, r_max 5 Å), float64, Cu/Au, random weights from nequip's builders (seed 1),
written as nequip-compile's TorchScript ``.nequip.pth`` (``save_torchscript_model``).
Structures: fcc Cu with a third of the sites Au, rattled 0.05 Å; ``--n-structures``
64-atom cells (2x2x4 conventional cells, a = 3.61 Å) and one of about ``--big`` atoms
(n x n x m cells; 5x5x10 = 1000 atoms by default).

Every measurement is a fresh spawned child process (``_harness.run_isolated``, one
thread: ``MLPCalculator(threads=1)``, ``torch.set_num_threads(1)``); the two sides
alternate A B A B ..., ``--pairs`` rounds, each timing ``--steps`` evaluations after one
untimed warm-up. Reported per evaluation: min / median / max over the rounds of the wall
and CPU time, and the peak added memory; ratio = t_nequip / t_ase_mlp of the medians
(> 1: ase_mlp faster).

Sides (energy, forces and stress on both):

* ase_mlp: ``MLPCalculator(NequipModel.from_file(path))``; small: one ``calculate_batch``
  of all the structures (split into model calls of at most ``max_batch_atoms`` atoms,
  default 2048); big: ``calculate`` on the one structure;
* nequip: ``NequIPCalculator.from_compiled_model(path)`` one structure at a time
  (``atoms.calc = ...; get_potential_energy(); get_forces(); get_stress()``: one model
  call per structure), its default neighbour list.
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
import warnings

import numpy as np
from _harness import (
    interleave,
    report_pair,
    rss_mb,
    run_isolated,
    time_evaluations,
)


ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def make_model(path: str, kind: str) -> str:
    """See the module docstring; process-global state set by nequip is fine here (this
    runs in the benchmark's parent process only)."""
    from nequip.model.inference_models.torchscript import save_torchscript_model
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    common = dict(seed=1, model_dtype="float64", type_names=["Cu", "Au"], r_max=5.0,
                  avg_num_neighbors=40.0, per_type_energy_shifts={"Cu": -3.5, "Au": -3.8},
                  per_type_energy_scales={"Cu": 0.3, "Au": 0.3})
    if kind == "nequip":
        from nequip.model import NequIPGNNModel

        model = NequIPGNNModel(num_layers=4, l_max=1, num_features=32, radial_mlp_width=64,
                               num_bessels=8, **common)
    else:
        from allegro.model import AllegroModel

        model = AllegroModel(l_max=1, num_layers=2, num_scalar_features=64,
                             num_tensor_features=16,
                             radial_chemical_embed={
                                 "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                                 "num_bessels": 8},
                             **common)
    meta = {k: str(v) for k, v in model.eval().metadata.items()}
    meta["allow_tf32"] = "0"
    save_torchscript_model(model, meta, path, "cpu")
    return path


def alloy(reps, seed):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Au"
    atoms.rattle(0.05, seed=seed)
    return atoms


def _structures(n_structures, big):
    if big == 0:
        return [alloy((2, 2, 4), k) for k in range(n_structures)]
    n, m = min(((n, max(n, round(big / (4 * n * n)))) for n in range(1, 40)),
               key=lambda nm: (abs(4 * nm[0] ** 2 * nm[1] - big), -nm[0]))
    return [alloy((n, n, m), 0)]


def _child(side, path, n_structures, big, steps, jit_optimize, q):
    import torch

    torch.set_num_threads(1)
    images = _structures(n_structures, big)
    rss0 = rss_mb()
    if side == "ase_mlp":
        from ase_mlp.calculators import MLPCalculator
        from ase_mlp.models.nequip import NequipModel

        calc = MLPCalculator(NequipModel.from_file(path, jit_optimize=jit_optimize),
                             device="cpu", threads=1)

        def evaluate():
            if big == 0:
                res = calc.calculate_batch(images, properties=("energy", "forces", "stress"))
                return [r["energy"] for r in res]
            calc.calculate(images[0].copy(), ["energy", "forces", "stress"])
            return [calc.results["energy"]]
    else:
        from nequip.integrations.ase import NequIPCalculator

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nq = NequIPCalculator.from_compiled_model(path, device="cpu",
                                                      chemical_species_to_atom_type_map=True)
        copies = [a.copy() for a in images]

        def evaluate():
            out = []
            for a in copies:
                a.calc = nq
                nq.reset()
                out.append(a.get_potential_energy())
                a.get_forces()
                a.get_stress()
            return out

    q.put({**time_evaluations(evaluate, steps, rss0), "n_atoms": sum(len(a) for a in images)})


def _section(label, big, path, args):
    def side(name):
        return lambda: run_isolated(_child, name, path, args.n_structures, big, args.steps,
                                    args.jit_optimize, env=ENV)

    def log(name, k, r):
        print(f"  {label:16s} round {k} {name:8s} {r['wall']:8.3f} s", flush=True)

    res = interleave({"ase_mlp": side("ase_mlp"), "nequip": side("nequip")}, args.pairs,
                     log=log)
    e_diff = max(abs(a - b) / abs(b) for a, b in zip(res["ase_mlp"][0]["energies"],
                                                     res["nequip"][0]["energies"],
                                                     strict=True))
    n_atoms = res["ase_mlp"][0]["n_atoms"]
    print(f"{label} ({n_atoms} atoms): |E_ase_mlp - E_nequip| / |E| max {e_diff:.2e}")
    out = report_pair(res, "nequip", n_atoms)
    out["max_energy_rel_diff"] = e_diff
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--n-structures", type=int, default=64)
    ap.add_argument("--big", type=int, default=1000, help="about this many atoms")
    ap.add_argument("--kind", choices=["nequip", "allegro"], default="nequip")
    ap.add_argument("--jit-optimize", action="store_true",
                    help="NequipModel(jit_optimize=True): TorchScript profiling executor")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"model {args.kind}")
    out = {"load_start": os.getloadavg()[0], "kind": args.kind, "sections": {}}
    with tempfile.TemporaryDirectory(prefix="bench_nequip_") as tmp:
        path = make_model(str(pathlib.Path(tmp) / f"{args.kind}.nequip.pth"), args.kind)
        for label, big in ((f"{args.n_structures} x 64 atoms", 0),
                           (f"~{args.big} atoms", args.big)):
            out["sections"][label] = _section(label, big, path, args)
    out["load_end"] = os.getloadavg()[0]
    print(f"load at the end {out['load_end']:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
