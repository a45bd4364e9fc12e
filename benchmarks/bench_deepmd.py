"""Native DeepPot-SE (``ase_mlp.models.deepmd``) vs deepmd-kit's NumPy backend, interleaved.

Run by hand (not a test)::

    python benchmarks/bench_deepmd.py [--pairs 3] [--steps 1] [--n-structures 64]
                                      [--big 1000] [--json out.json]
    python benchmarks/bench_deepmd.py --chunks 0 2048 1024 512 [--n-structures 64]

``--chunks``: only ase_mlp's ``calculate_batch`` of the small structures, once per
``MLPCalculator(max_batch_atoms=...)`` value (0: no limit, one model call), each in a fresh
process: wall time and peak added memory per value, and the largest difference of the
energies, forces and stresses from the first value's.

Model: the usual water se_e2_a architecture (rcut 6 Å, sel [46, 92], embedding [25, 50, 100],
axis_neuron 16, fitting [240, 240, 240]) built by deepmd-kit's NumPy backend with seeded
random weights and statistics and written as ``.dp`` (``ase_mlp.testing.make_deepmd_se``, the
builder of the tests). Structures: cubes cut from the DeePMD water data
(liquid density), ``--n-structures`` structures of 64 atoms and one of ``--big`` atoms.

Every measurement is a fresh spawned child process (``_harness.run_isolated``, one thread:
``MLPCalculator(threads=1)``, ``torch.set_num_threads(1)``, ``OPENBLAS_NUM_THREADS=1``);
the two sides alternate A B A B ..., ``--pairs`` rounds, each timing ``--steps``
evaluations after one untimed warm-up. Reported per evaluation: min / median / max over
the rounds of the wall and CPU time, and the peak *added* memory (peak RSS during the timed
evaluations minus the RSS before the calculator was made); ratio = t_deepmd / t_ase_mlp of
the medians (> 1: ase_mlp faster).

Sides:

* ase_mlp: ``MLPCalculator.from_file(path)``; small: one ``calculate_batch`` of all the
  structures (energy, forces, stress; the calculator splits it into model calls of at most
  ``max_batch_atoms`` atoms, default 2048); big: ``calculate`` on the one structure;
* deepmd: ``deepmd.infer.DeepPot(path).eval`` one structure at a time, the NumPy backend
  (the one that loads beside torch 2.13: deepmd's torch ops are built for torch 2.11);
  energies only, since the NumPy backend has no gradients (its forces are NaN), so its
  times are a lower bound for deepmd with forces.
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
import time

import numpy as np
from _harness import (
    hwm_mb,
    interleave,
    report_pair,
    reset_peak,
    rss_mb,
    run_isolated,
    time_evaluations,
)
from ase import Atoms


DATA = pathlib.Path("/work/shared/data/water-deepmd/data_0")
ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def make_model(path: str, seed: int = 0) -> str:
    """The water se_e2_a of deepmd's example input (see the module docstring), random
    weights and statistics (:func:`ase_mlp.testing.make_deepmd_se`)."""
    from ase_mlp.testing import make_deepmd_se

    return make_deepmd_se(path, type_map=("O", "H"), sel=(46, 92), rcut=6.0, rcut_smth=0.5,
                          neuron=(25, 50, 100), resnet_dt=False, axis_neuron=16,
                          type_one_side=False, fitting_neuron=(240, 240, 240),
                          fitting_resnet_dt=True, seed=seed)


def water_cube(n_atoms: int, frame: int) -> Atoms:
    """The ``n_atoms`` atoms nearest a corner (max-norm) of a water frame tiled 3x3x3, in a
    cubic cell of the liquid's density."""
    coord = np.load(DATA / "set.000/coord.npy")[frame].reshape(-1, 3)
    box = np.load(DATA / "set.000/box.npy")[frame].reshape(3, 3)
    types = np.loadtxt(DATA / "type.raw", dtype=int)
    atoms = Atoms([("O", "H")[t] for t in types], positions=coord, cell=box, pbc=True)
    atoms.wrap()
    big = atoms.repeat(3)
    side = (n_atoms / len(atoms) * atoms.get_volume()) ** (1.0 / 3.0)
    order = np.argsort(np.max(big.positions, axis=1))[:n_atoms]
    cut = big[order]
    cut.set_cell(np.eye(3) * side)
    cut.pbc = True
    return cut


def _child(side, path, n_structures, big, steps, q):
    """Time one side; put ``{"wall", "cpu", "added_mb", "energies"}`` on ``q``."""
    import torch

    torch.set_num_threads(1)
    images = ([water_cube(64, k % 40) for k in range(n_structures)] if big == 0
              else [water_cube(big, 0)])
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
        from deepmd.infer import DeepPot

        dp = DeepPot(path)
        types = [np.array([("O", "H").index(s) for s in a.get_chemical_symbols()])
                 for a in images]

        def evaluate():
            return [float(np.ravel(dp.eval(a.positions[None], a.cell.array.reshape(1, 9),
                                           t)[0])[0]) for a, t in zip(images, types, strict=True)]

    q.put(time_evaluations(evaluate, steps, rss0))


def _chunk_child(path, n_structures, limit, q):
    """One ``calculate_batch`` of the small structures with ``max_batch_atoms=limit``
    (0: none); put ``{"wall", "added_mb", "first_added_mb", "results"}`` on ``q``."""
    import torch

    from ase_mlp.calculators import MLPCalculator

    torch.set_num_threads(1)
    images = [water_cube(64, k % 40) for k in range(n_structures)]
    rss0 = rss_mb()
    calc = MLPCalculator.from_file(path, device="cpu", threads=1,
                                   max_batch_atoms=limit or None)
    props = ("energy", "forces", "stress")
    calc.calculate_batch(images, properties=props)   # warm-up
    first = hwm_mb() - rss0
    reset_peak()
    t0 = time.perf_counter()
    res = calc.calculate_batch(images, properties=props)
    wall = time.perf_counter() - t0
    q.put({"wall": wall, "added_mb": hwm_mb() - rss0, "first_added_mb": first,
           "results": [{k: np.asarray(r[k]) for k in ("energy", "forces", "stress")}
                       for r in res]})


def _chunks_section(path, args):
    """ase_mlp's batch of the small structures at each ``--chunks`` limit."""
    rows, ref = {}, None
    n_atoms = 64 * args.n_structures
    print(f"{args.n_structures} x 64 atoms ({n_atoms}) in one calculate_batch, by "
          "max_batch_atoms (0: no limit)")
    for limit in args.chunks:
        r = run_isolated(_chunk_child, path, args.n_structures, limit, env=ENV)
        results = r.pop("results")
        ref = results if ref is None else ref
        diff = max(float(np.max(np.abs(a[k] - b[k]))) for a, b in zip(results, ref, strict=True)
                   for k in a)
        calls = -(-n_atoms // limit) if limit else 1
        rows[str(limit)] = dict(r, max_abs_diff=diff, model_calls=calls)
        print(f"  max_batch_atoms {limit:5d} ({calls:2d} model calls): wall {r['wall']:.2f} s, "
              f"added peak {r['added_mb']:.0f} MB (first call {r['first_added_mb']:.0f} MB), "
              f"max |difference| {diff:.1e}", flush=True)
    return rows


def _section(label, big, path, args):
    def side(name):
        return lambda: run_isolated(_child, name, path, args.n_structures, big, args.steps,
                                    env=ENV)

    def log(name, k, r):
        print(f"  {label:16s} round {k} {name:8s} {r['wall']:8.3f} s", flush=True)

    res = interleave({"ase_mlp": side("ase_mlp"), "deepmd": side("deepmd")}, args.pairs,
                     log=log)
    e_diff = max(abs(a - b) for a, b in zip(res["ase_mlp"][0]["energies"],
                                            res["deepmd"][0]["energies"],
                                            strict=True))
    n_atoms = 64 * args.n_structures if big == 0 else big
    print(f"{label}: |E_ase_mlp - E_deepmd| max {e_diff:.2e} eV")
    out = report_pair(res, "deepmd", n_atoms)
    out["max_energy_diff"] = e_diff
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--n-structures", type=int, default=64)
    ap.add_argument("--big", type=int, default=1000, help="atoms of the single structure")
    ap.add_argument("--chunks", type=int, nargs="+", metavar="MAX_BATCH_ATOMS",
                    help="only ase_mlp's batch, at each max_batch_atoms (0: no limit)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    out = {"load_start": os.getloadavg()[0], "sections": {}}
    with tempfile.TemporaryDirectory(prefix="bench_deepmd_") as tmp:
        path = make_model(str(pathlib.Path(tmp) / "water.dp"))
        if args.chunks:
            out["chunks"] = _chunks_section(path, args)
            sections = ()
        else:
            sections = ((f"{args.n_structures} x 64 atoms", 0),
                        (f"{args.big} atoms", args.big))
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
