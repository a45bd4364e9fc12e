"""Tantalum DFT data (FitSNAP's Ta set, 363 frames): linear SNAP and NN-SNAP fitted here vs Ta06A.

Reproduces the two tables of ``docs/fitting-results.md``:

1. linear SNAP (twojmax 6 on ZBL, Ta06A's descriptor) fitted to all 363 frames
   with FitSNAP's group weights, the protocol of Ta06A itself;
2. 5-fold cross-validation inside every group: each frame is predicted by a
   linear SNAP and an NN-SNAP (32x32, L-BFGS from the linear warm start) that
   never saw it, next to Ta06A (fitted on all frames).

Data (not shipped with ase_mlp): FitSNAP's tantalum DFT set, 363 frames in 12 ``.xyz`` files
(Thompson et al., J. Comput. Phys. 285, 316 (2015)), from the FitSNAP repository
(github.com/FitSNAP/FitSNAP, ``examples/Ta_XYZ/XYZ/``; GPL-2.0); stress in bar, VASP sign.

Run: ``python examples/ta/fit_ta.py [--data DIR_OF_THE_XYZ_FILES] [--folds 5]``
(4 min 11 s measured on this project's machine, 2 shared cores).
"""

import argparse
import json
import pathlib
import time

import numpy as np
import torch

from ase_mlp.descriptors import Bispectrum
from ase_mlp.io.lammps import read_lammps_potential
from ase_mlp.io.lammps_runner import lammps_potentials_dir
from ase_mlp.models import NNSNAP, ZBL, LinearSNAP, SumModel
from ase_mlp.training import (
    FeatureCache,
    LabelSpec,
    compute_metrics,
    fit,
    format_table,
    labels_of,
    read_frames,
    split_frames,
)
from ase_mlp.training.metrics import predictions


#: FitSNAP's Ta example (examples/Ta_Linear_JCP2014/Ta-example.in): (energy, force, stress)
#: weights per group; FitSNAP weights rows, so the loss weights are their squares.
FITSNAP_WEIGHTS = {
    "Displaced_A15": (100, 1, 1e-8), "Displaced_BCC": (100, 1, 1e-8),
    "Displaced_FCC": (100, 1, 1e-8), "Elastic_BCC": (1e-8, 1e-8, 1e-4),
    "Elastic_FCC": (1e-9, 1e-9, 1e-9), "GSF_110": (100, 1, 1e-8), "GSF_112": (100, 1, 1e-8),
    "Liquid": (467, 1, 1e-8), "Surface": (100, 1, 1e-8), "Volume_A15": (1, 1e-9, 1e-9),
    "Volume_BCC": (1, 1e-9, 1e-9), "Volume_FCC": (1, 1e-9, 1e-9)}
GROUP_WEIGHTS = {g: {"energy": e ** 2, "forces": f ** 2, "stress": s ** 2}
                 for g, (e, f, s) in FITSNAP_WEIGHTS.items()}
#: FitSNAP's rows are per-atom energies and force components, unnormalised; our loss is
#: a mean per kind, so the same balance needs energy_weight = n_energy_rows / n_force_rows.
ENERGY_WEIGHT = 363 / 12672


def model(kind):
    d = Bispectrum(["Ta"], twojmax=6, rcutfac=4.67637, radii=[0.5], rfac0=0.99363,
                   bzeroflag=False)
    snap = LinearSNAP(d) if kind == "linear" else NNSNAP(d, hidden=[32, 32])
    return SumModel(ZBL(["Ta"], 4.0, 4.8), snap)


def main():
    here = pathlib.Path(__file__).resolve()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(here.parents[3] / "shared" / "data" / "ta-fitsnap"))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", default="ta_results.json")
    args = p.parse_args()
    spec = LabelSpec(stress_unit="bar", stress_sign="compressive")
    frames = read_frames(sorted(pathlib.Path(args.data).glob("*.xyz")), spec=spec)
    cache = FeatureCache()
    common = dict(energy_weight=ENERGY_WEIGHT, group_weights=GROUP_WEIGHTS, cache=cache)
    ta06a = read_lammps_potential(lammps_potentials_dir() / "Ta06A.snap")

    t = time.perf_counter()
    lin_all = fit(model("linear"), frames, **common)
    print(f"linear SNAP on all {len(frames)} frames: {time.perf_counter() - t:.1f} s")
    table1 = {"Ta06A (LAMMPS wheel)": compute_metrics(ta06a, frames),
              "linear SNAP, ase_mlp": compute_metrics(lin_all, frames)}
    print(format_table(table1, groups=True))

    rng = np.random.default_rng(0)
    groups = np.array([labels_of(a).group for a in frames])
    fold = np.zeros(len(frames), dtype=int)
    for g in sorted(set(groups)):
        idx = np.nonzero(groups == g)[0]
        fold[rng.permutation(idx)] = np.arange(len(idx)) % args.folds
    pred = {"linear": [None] * len(frames), "nn": [None] * len(frames)}
    for k in range(args.folds):
        held = np.nonzero(fold == k)[0]
        rest = [frames[i] for i in np.nonzero(fold != k)[0]]
        train, val, _ = split_frames(rest, (0.9, 0.1, 0.0), seed=k)
        lin = fit(model("linear"), rest, **common)
        t = time.perf_counter()
        nn = fit(model("nn"), train, val, optimizer="lbfgs", max_iter=1500, lbfgs_patience=8,
                 seed=k, **common)
        print(f"fold {k}: NN-SNAP {time.perf_counter() - t:.1f} s")
        held_frames = [frames[i] for i in held]
        for name, m in (("linear", lin), ("nn", nn)):
            for i, r in zip(held, predictions(m, held_frames), strict=True):
                pred[name][i] = r
    table2 = {"Ta06A (fitted on all)": table1["Ta06A (LAMMPS wheel)"],
              f"linear SNAP, {args.folds}-fold held out":
                  compute_metrics(None, frames, results=pred["linear"]),
              f"NN-SNAP 32x32, {args.folds}-fold held out":
                  compute_metrics(None, frames, results=pred["nn"])}
    print(format_table(table2, groups=True))
    json.dump({"all_frames": table1, "cross_validation": table2}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
