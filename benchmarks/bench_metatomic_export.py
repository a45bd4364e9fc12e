"""Per-evaluation cost (energy+forces+stress, all_changes) of exported metatomic models vs
ase_mlp's own evaluation, in one process, sides interleaved per round (7 rounds, 2 untimed
warm-ups per side for TorchScript's profiling executor), CPU-time medians, one thread.

Run by hand from the repository root: ``python benchmarks/bench_metatomic_export.py``.
Sides: MLPCalculator(model), metatomic_ase on the exported file, MLPCalculator(MetatomicModel)
(the round trip), torch-sim's MetatomicModel. Numbers: docs/performance.md.
"""
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch


warnings.simplefilter("ignore")
torch.set_num_threads(1)
import metatomic_ase
import torch_sim as ts
from ase.build import bulk
from ase.calculators.calculator import all_changes
from torch_sim.models.metatomic import MetatomicModel as TSModel

from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors import Bispectrum
from ase_mlp.io.metatomic_export import export_metatomic
from ase_mlp.models import NNSNAP, LinearSNAP, QuadraticSNAP
from ase_mlp.models.metatomic import MetatomicModel
from ase_mlp.models.sum import SumModel
from ase_mlp.models.zbl import ZBL


TMP = tempfile.mkdtemp(prefix="bench_mta_export_")
rng = np.random.default_rng(0)
d = Bispectrum(["W", "Be"], 6, 4.8, [0.5, 0.42], [1.0, 0.96])
K = d.n_descriptors
lin = LinearSNAP(d, rng.normal(size=(2, 1 + K)) * 0.02)
quad = QuadraticSNAP(d, np.concatenate([rng.normal(size=(2, 1 + K)) * 0.02,
                                        rng.normal(size=(2, K * (K + 1) // 2)) * 2e-3], 1))
nn = NNSNAP(d, hidden=(16, 16))
zbl = ZBL(["W", "Be"], 1.6, 2.6)
models = {"LinearSNAP": lin, "QuadraticSNAP": quad, "NNSNAP(16,16)": nn, "ZBL": zbl,
          "LinearSNAP+ZBL": SumModel(lin, zbl)}
def atoms(rep, seed):
    a = bulk("W", "bcc", a=3.17, cubic=True).repeat(rep)
    a.set_chemical_symbols(["W", "Be"] * (len(a) // 2))
    a.rattle(0.1, seed=seed)
    return a
def timer(fns, structs, rounds):
    """Interleaved: warm up each side twice, then rounds of A B C D; CPU ms medians."""
    for f in fns:
        for st in structs[:2]:
            f(st)
    out = [[] for _ in fns]
    for r in range(rounds):
        st = structs[2 + r % (len(structs) - 2)]
        for k, f in enumerate(fns):
            t = time.process_time(); f(st); out[k].append(time.process_time() - t)
    return [statistics.median(o) * 1e3 for o in out]
print(f"torch {torch.__version__}, 1 thread, CPU time (process_time) medians in ms")
print("| model | atoms | MLPCalculator(model) | metatomic_ase(file) | MLPCalculator(MetatomicModel(file)) | torch-sim(file) | ratio mta_ase/ours |")
print("|---|---|---|---|---|---|---|")
for name, m in models.items():
    p = str(export_metatomic(m, f"{TMP}/perf_{name}.pt"))
    ours = MLPCalculator(m, device="cpu")
    back = MLPCalculator(MetatomicModel.from_file(p), device="cpu")
    mase = metatomic_ase.MetatomicCalculator(p)
    tsm = TSModel(p, device="cpu")
    for rep in ((3, 3, 3), (5, 5, 5)):
        S = [atoms(rep, s) for s in range(7)]
        def f_ours(a): ours.calculate(a.copy(), ["energy", "forces", "stress"], all_changes)
        def f_back(a): back.calculate(a.copy(), ["energy", "forces", "stress"], all_changes)
        def f_mase(a): mase.calculate(a.copy(), ["energy", "forces", "stress"], all_changes)
        def f_ts(a): tsm(ts.io.atoms_to_state([a], torch.device("cpu"), torch.float64))
        r = 7
        t = timer((f_ours, f_mase, f_back, f_ts), S, r)
        print(f"| {name} | {len(S[0])} | {t[0]:.1f} | {t[1]:.1f} | {t[2]:.1f} | {t[3]:.1f} | {t[1]/t[0]:.1f} |", flush=True)
