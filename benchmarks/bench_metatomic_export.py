"""Exported metatomic models (``export_metatomic``) against ase_mlp's own evaluation.

Per evaluation of energy, forces and stress (``all_changes``, nothing cached), float64,
one thread, CPU time medians. All four sides run in one process, interleaved per round
(A B C D, A B C D, ...) after two untimed warm-ups per side (TorchScript's profiling
executor re-optimises at the first new shapes):

* ``MLPCalculator(model)`` (compiled kernels),
* ``metatomic_ase.MetatomicCalculator`` on the exported file,
* ``MLPCalculator(MetatomicModel.from_file(file))`` (the round trip),
* torch-sim's ``MetatomicModel`` on a one-structure ``SimState``.

Run by hand from the repository root::

    python benchmarks/bench_metatomic_export.py [--rounds 7]

Models: W/Be, twojmax 6, rcut 4.8 Å, random coefficients; NNSNAP hidden (16, 16); ZBL
inner 1.6, outer 2.6 Å. Structures: rattled bcc W/Be (a = 3.17 Å), 54 and 250 atoms.
Numbers: docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.calculator import all_changes


def _atoms(rep, seed):
    a = bulk("W", "bcc", a=3.17, cubic=True).repeat(rep)
    a.set_chemical_symbols(["W", "Be"] * (len(a) // 2))
    a.rattle(0.1, seed=seed)
    return a


def _models():
    from ase_mlp.descriptors import Bispectrum
    from ase_mlp.models import NNSNAP, LinearSNAP, QuadraticSNAP
    from ase_mlp.models.sum import SumModel
    from ase_mlp.models.zbl import ZBL

    rng = np.random.default_rng(0)
    d = Bispectrum(["W", "Be"], 6, 4.8, [0.5, 0.42], [1.0, 0.96])
    k = d.n_descriptors
    lin = LinearSNAP(d, rng.normal(size=(2, 1 + k)) * 0.02)
    quad = QuadraticSNAP(d, np.concatenate([rng.normal(size=(2, 1 + k)) * 0.02,
                                            rng.normal(size=(2, k * (k + 1) // 2)) * 2e-3], 1))
    zbl = ZBL(["W", "Be"], 1.6, 2.6)
    return {"LinearSNAP": lin, "QuadraticSNAP": quad, "NNSNAP(16,16)": NNSNAP(d, hidden=(16, 16)),
            "ZBL": zbl, "LinearSNAP+ZBL": SumModel(lin, zbl)}


def _timer(fns, structs, rounds):
    """Warm up each side twice, then ``rounds`` of A B C D; CPU-time medians in ms."""
    for f in fns:
        for st in structs[:2]:
            f(st)
    out = [[] for _ in fns]
    for r in range(rounds):
        st = structs[2 + r % (len(structs) - 2)]
        for k, f in enumerate(fns):
            t = time.process_time()
            f(st)
            out[k].append(time.process_time() - t)
    return [statistics.median(o) * 1e3 for o in out]


def _energy_call(calc):
    def run(a):
        calc.calculate(a.copy(), ["energy", "forces", "stress"], all_changes)
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)   # a benchmark script, not library code
    import metatomic_ase
    import torch_sim as ts
    from torch_sim.models.metatomic import MetatomicModel as TorchSimModel

    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.metatomic_export import export_metatomic
    from ase_mlp.models.metatomic import MetatomicModel

    tmp = tempfile.mkdtemp(prefix="bench_mta_export_")
    print(f"torch {torch.__version__}, 1 thread, CPU-time medians of {args.rounds} rounds, ms")
    print("| model | atoms | ase_mlp | metatomic_ase | ase_mlp MetatomicModel | torch-sim "
          "| metatomic_ase / ase_mlp |")
    print("|---|---|---|---|---|---|---|")
    for name, model in _models().items():
        path = str(export_metatomic(model, f"{tmp}/perf_{name}.pt"))
        tsm = TorchSimModel(path, device="cpu")

        def f_ts(a, tsm=tsm):
            tsm(ts.io.atoms_to_state([a], torch.device("cpu"), torch.float64))

        sides = (_energy_call(MLPCalculator(model, device="cpu")),
                 _energy_call(metatomic_ase.MetatomicCalculator(path)),
                 _energy_call(MLPCalculator(MetatomicModel.from_file(path), device="cpu")),
                 f_ts)
        for rep in ((3, 3, 3), (5, 5, 5)):
            structs = [_atoms(rep, s) for s in range(7)]
            t = _timer(sides, structs, args.rounds)
            print(f"| {name} | {len(structs[0])} | {t[0]:.1f} | {t[1]:.1f} | {t[2]:.1f} "
                  f"| {t[3]:.1f} | {t[1] / t[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
