"""Training: ase_mlp's descriptor stage and fits vs LAMMPS ``compute snap`` (FitSNAP's engine).

Run by hand (not a test)::

    python benchmarks/bench_fit.py [--threads 1] [--quick] [--json out.json]

Data: N structures of bcc Ta, 2x2x2 conventional cells (16 atoms), lattice
constant 3.2-3.4 Å, random symmetric strains of up to ±2 % (shears included),
rattled by a Gaussian of 0.05-0.15 Å; structure ``k`` is drawn from
``default_rng([seed, k])``, so the first N of a larger set are the N-structure
set. They are labelled (energy, forces, stress) with the Ta06A SNAP+ZBL model
through ase_mlp's own ``MLPCalculator.calculate_batch``; labelling is not
timed. N = 1 000 and 10 000 (``--quick``: 100 and 300).

Cases (Ta06A descriptor: 2J = 6, rcutfac 4.67637, R = 0.5, bzeroflag 0):
  * ours, descriptors: ``compute_features(descriptor, frames)`` (neighbour lists,
    bispectrum B and its gradients dB/dr of every frame), time, structures/s,
    atoms/s, peak RSS.
  * ours, design matrix: the above plus the row assembly of every frame
    (``training.linear.frame_columns``: energy row, 3N force rows, 6 stress
    rows), i.e. what LAMMPS ``compute snap`` returns.
  * LAMMPS ``compute snap`` (the engine FitSNAP builds its linear design matrix
    with): one LAMMPS instance, per structure the box and atoms are set, ``run 0``
    with ``pair_style zero``, and the global array (1 + 3N + 6 rows) is copied out
    as a numpy array. Two ways of setting a structure are timed and the faster one
    is used for the ratio: "rebuild" (``clear`` and a fresh box, atoms, pair style
    and compute each time, like FitSNAP's per-configuration setup) and "reuse"
    (box, atoms and pair style kept: ``change_box`` + ``scatter_atoms``, and the
    compute redefined, since ``compute snap`` cannot be initialised twice: its
    helper compute "<ID>_press" clashes). Both include the rotation of the ASE
    cell into LAMMPS's lower-triangular frame and the copy of the array. For
    N > 1 000 (full run) 1 000 structures are timed and the total is scaled
    (marked "scaled" / "*" in the output).
    ``compute snap`` has no OpenMP variant: LAMMPS runs on one thread whatever
    ``--threads`` is. Ratio = t_LAMMPS / t_ours for the design-matrix stage
    (>= 1 means we are faster). Once per run the LAMMPS energy row (sum of B over
    atoms) and force rows (rotated back to the ASE frame) of a few structures are
    compared with ours.
  * ours, linear SNAP fit: ``fit(SumModel(ZBL(["Ta"], 4.0, 4.8), LinearSNAP(d)),
    frames, energy_weight=1, force_weight=1, stress_weight=1)``: total time
    (descriptors, ZBL baseline subtraction, row assembly, QR and the ridge scan),
    time of the solve (row assembly, QR, ridge scan: the report's ``seconds`` minus
    its ``descriptor_seconds``), peak RSS.
  * ours, NN-SNAP: ``fit(SumModel(ZBL(...), NNSNAP(d, hidden=(32, 32))), frames,
    epochs=E, patience=10**9, batch_size=32)``, same loss weights (1, 1, 1),
    E = 5 (quick: 2), float64 and ``dtype=torch.float32``: seconds per epoch
    ((total - descriptor_seconds) / E, which includes standardisation and
    initialisation) and the steady per-epoch time (median interval between epoch
    ends, E >= 2), peak RSS.

Every measurement runs in a fresh subprocess (spawn), so the peak RSS reported
(``ru_maxrss``, the frames loaded from a temporary .npz included) is that
case's own; the LAMMPS process never imports torch. Each subprocess first runs an
untimed warm-up on a few structures. ``--threads`` sets torch's intra-op threads
in the subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from _harness import peak_mb as _peak_mb
from _harness import run_isolated


N_FULL = (1000, 10000)
N_QUICK = (100, 300)
LAMMPS_SUBSET = 1000  # full run: time at most this many structures with LAMMPS, then scale
SEED = 2024
LABEL_BATCH = 64
DESC = dict(elements=["Ta"], twojmax=6, rcutfac=4.67637, radii=[0.5], rfac0=0.99363,
            bzeroflag=False)
SNAP_ARGS = "4.67637 0.99363 6 0.5 1.0 rmin0 0.0 switchflag 1 bzeroflag 0 quadraticflag 0"
MASS_TA = 180.94788



def _structures(n, seed=SEED):
    import numpy as np
    from ase.build import bulk

    out = []
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        atoms = bulk("Ta", "bcc", a=rng.uniform(3.2, 3.4), cubic=True).repeat((2, 2, 2))
        eps = rng.uniform(-0.02, 0.02, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        atoms.positions += rng.normal(scale=rng.uniform(0.05, 0.15), size=(len(atoms), 3))
        out.append(atoms)
    return out


def _label(path, n, threads, q):
    """Make and label ``n`` structures with Ta06A (SNAP + ZBL), save them to ``path``."""
    import numpy as np
    import torch

    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io import read_lammps_potential
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    torch.set_num_threads(threads)
    t = time.perf_counter()
    frames = _structures(n)
    calc = MLPCalculator(read_lammps_potential(lammps_potentials_dir() / "Ta06A.snap"),
                         device="cpu")
    res = []
    for k in range(0, n, LABEL_BATCH):
        res.extend(calc.calculate_batch(frames[k:k + LABEL_BATCH]))
    np.savez(path, positions=np.stack([a.positions for a in frames]),
             cells=np.stack([a.cell.array for a in frames]),
             energy=np.array([r["energy"] for r in res]),
             forces=np.stack([r["forces"] for r in res]),
             stress=np.stack([r["stress"] for r in res]))
    q.put({"seconds": time.perf_counter() - t})


def _load(path, n):
    """The first ``n`` labelled structures (Atoms with a SinglePointCalculator)."""
    import numpy as np
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    d = np.load(path)
    frames = []
    for k in range(n):
        pos = d["positions"][k]
        atoms = Atoms(["Ta"] * len(pos), positions=pos, cell=d["cells"][k], pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=float(d["energy"][k]),
                                           forces=d["forces"][k], stress=d["stress"][k])
        frames.append(atoms)
    return frames


def _descriptor():
    from ase_mlp.descriptors.bispectrum import Bispectrum

    d = dict(DESC)
    return Bispectrum(d.pop("elements"), d.pop("twojmax"), d.pop("rcutfac"), d.pop("radii"),
                      **d)


def _ours_design(path, n, threads, n_check, q):
    import torch

    from ase_mlp.training.features import compute_features
    from ase_mlp.training.linear import frame_columns

    torch.set_num_threads(threads)
    frames = _load(path, n)
    desc = _descriptor()
    for f in compute_features(desc, frames[:4]):  # warm-up (fresh cache below)
        frame_columns(f, 1, False)
    t = time.perf_counter()
    feats = compute_features(desc, frames)
    t_desc = time.perf_counter() - t
    rss_desc = _peak_mb()
    t = time.perf_counter()
    rows = [frame_columns(f, 1, False) for f in feats]
    t_rows = time.perf_counter() - t
    check = [(e.numpy(), fr.numpy()) for e, fr, _ in rows[:n_check]]
    q.put({"desc_s": t_desc, "rows_s": t_rows, "rss_desc": rss_desc, "rss": _peak_mb(),
           "n_atoms": sum(len(a) for a in frames), "n_edges": sum(int(f.ei.numel()) for f in feats),
           "check": check})


def _ours_linear(path, n, threads, q):
    import torch

    from ase_mlp.models import ZBL, LinearSNAP, SumModel
    from ase_mlp.training import fit

    torch.set_num_threads(threads)
    frames = _load(path, n)

    def model():
        return SumModel(ZBL(["Ta"], 4.0, 4.8), LinearSNAP(_descriptor()))

    kw = dict(energy_weight=1, force_weight=1, stress_weight=1, return_report=True)
    fit(model(), frames[:4], **kw)  # warm-up
    t = time.perf_counter()
    _, rep = fit(model(), frames, **kw)
    total = time.perf_counter() - t
    q.put({"total_s": total, "report_s": rep["seconds"], "desc_s": rep["descriptor_seconds"],
           "solve_s": rep["seconds"] - rep["descriptor_seconds"], "lambda": rep["lambda"],
           "rss": _peak_mb()})


def _ours_nn(path, n, threads, epochs, dtype_name, q):
    import torch

    from ase_mlp.models import NNSNAP, ZBL, SumModel
    from ase_mlp.training import fit

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    frames = _load(path, n)

    def model():
        return SumModel(ZBL(["Ta"], 4.0, 4.8), NNSNAP(_descriptor(), hidden=(32, 32)))

    kw = dict(energy_weight=1, force_weight=1, stress_weight=1, patience=10**9, batch_size=32,
              dtype=dtype, return_report=True)
    fit(model(), frames[:4], epochs=1, **kw)  # warm-up
    ends = []
    t = time.perf_counter()
    _, rep = fit(model(), frames, epochs=epochs, log=lambda h: ends.append(time.perf_counter()),
                 **kw)
    total = time.perf_counter() - t
    train = rep["seconds"] - rep["descriptor_seconds"]
    steady = (statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))
              if len(ends) >= 2 else None)
    q.put({"total_s": total, "desc_s": rep["descriptor_seconds"], "train_s": train,
           "epoch_s": train / epochs, "steady_epoch_s": steady, "epochs": rep["epochs"],
           "final_train_loss": rep["history"][-1]["train"], "rss": _peak_mb()})


def _runner():
    """``ase_mlp/io/lammps_runner.py`` loaded on its own: the ``ase_mlp.io`` package
    imports torch, which would inflate the LAMMPS process's RSS."""
    import importlib.util
    import pathlib
    import sys

    spec = importlib.util.find_spec("ase_mlp")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "io" / "lammps_runner.py"
    mspec = importlib.util.spec_from_file_location("_bench_lammps_runner", path)
    mod = importlib.util.module_from_spec(mspec)
    sys.modules[mspec.name] = mod
    mspec.loader.exec_module(mod)
    return mod


def _lammps(path, n, n_time, n_check, q):
    import ctypes

    import numpy as np

    runner = _runner()
    lammps = runner._import_lammps()
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY

    frames = _load(path, n)
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    head = ["units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
            "boundary p p p"]
    tail = [f"mass 1 {MASS_TA}", "pair_style zero 5.0", "pair_coeff * *",
            f"compute snap all snap {SNAP_ARGS}", "thermo_style custom step pe", "thermo 0"]

    def rebuild(atoms):
        fr = runner._Frame(atoms)
        lmp.command("clear")
        lmp.commands_list([*head, fr.region_command(), "create_box 1 box"])
        m = len(atoms)
        lmp.create_atoms(m, list(range(1, m + 1)), [1] * m, fr.positions.ravel().tolist())
        lmp.commands_list([*tail, "run 0 post no"])
        A = np.array(lmp.numpy.extract_compute("snap", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY))
        return A, fr.Q

    state = {}

    def reuse(atoms):
        fr = runner._Frame(atoms)
        m = len(atoms)
        if state.get("n") != m:  # set up once: triclinic box, atoms, pair style, compute
            b = fr.box
            lmp.command("clear")
            lmp.commands_list([*head, f"region box prism 0 {b[0, 0]} 0 {b[1, 1]} 0 {b[2, 2]} "
                               "0 0 0 units box", "create_box 1 box"])
            lmp.create_atoms(m, list(range(1, m + 1)), [1] * m, fr.positions.ravel().tolist())
            lmp.commands_list(tail)
            state["n"] = m
        b = fr.box
        x, y, z, xy, xz, yz = (repr(float(v)) for v in (b[0, 0], b[1, 1], b[2, 2], b[1, 0],
                                                         b[2, 0], b[2, 1]))
        lmp.command(f"change_box all x final 0 {x} y final 0 {y} z final 0 {z} xy final {xy} "
                    f"xz final {xz} yz final {yz} units box")
        lmp.scatter_atoms("x", 1, 3, (ctypes.c_double * (3 * m))(*fr.positions.ravel()))
        if state.get("ran"):
            # compute snap adds a helper compute pressure "<ID>_press" in init() and a second
            # run with it fails ("Reuse of compute ID"): redefine both for each structure
            lmp.commands_list(["uncompute snap", "uncompute snap_press",
                               f"compute snap all snap {SNAP_ARGS}"])
        lmp.command("run 0 post no")
        state["ran"] = True
        A = np.array(lmp.numpy.extract_compute("snap", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY))
        return A, fr.Q

    out = {"n_timed": n_time}
    for name, fn in (("rebuild", rebuild), ("reuse", reuse)):
        out[f"check_{name}"] = [fn(a) for a in frames[:n_check]]  # also the warm-up
        t = time.perf_counter()
        for a in frames[:n_time]:
            fn(a)
        out[f"{name}_s"] = (time.perf_counter() - t) * n / n_time
        state.clear()
    out["rss"] = _peak_mb()
    lmp.close()
    q.put(out)


_run = run_isolated


def _compare(ours, lmp):
    """Max |difference| of energy rows and force rows, and the largest energy-row entry."""
    import numpy as np

    de = df = scale = 0.0
    for (e, f), (A, Q) in zip(ours, lmp, strict=True):
        K = A.shape[1] - 1  # last column: reference potential (pair_style zero)
        n = e[0]  # our energy row: [count, sum_i B_i]
        m = int(round(n))
        de = max(de, float(np.abs(A[0, :K] - e[1:]).max()))
        scale = max(scale, float(np.abs(e[1:]).max()))
        fl = A[1:1 + 3 * m, :K].reshape(m, 3, K)
        fo = np.einsum("nak,ab->nbk", f.reshape(m, 3, -1)[:, :, 1:], Q)  # ASE -> LAMMPS frame
        df = max(df, float(np.abs(fl - fo).max()))
    return de, df, scale


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="N = 100 and 300, 2 NN epochs")
    ap.add_argument("--epochs", type=int, help="NN-SNAP epochs (default 5, quick 2)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--sizes", type=int, nargs="+", help="numbers of structures (overrides the "
                    "default 1000 10000 / quick 100 300)")
    args = ap.parse_args()
    sizes = args.sizes or (N_QUICK if args.quick else N_FULL)
    epochs = args.epochs or (2 if args.quick else 5)
    n_check = 3

    tmp = tempfile.mkdtemp(prefix="bench_fit_")
    path = os.path.join(tmp, "frames.npz")
    try:
        print(f"threads: {args.threads} (torch intra-op threads; LAMMPS compute snap: 1)")
        lab = _run(_label, path, max(sizes), args.threads)
        print(f"labelled {max(sizes)} structures of 16 atoms with Ta06A in {lab['seconds']:.1f} s "
              "(not timed below)", flush=True)
        rows = []
        checked = False
        for n in sizes:
            n_time = n if args.quick else min(n, LAMMPS_SUBSET)
            r = {"n_structures": n, "threads": args.threads}
            d = _run(_ours_design, path, n, args.threads, n_check)
            lm = _run(_lammps, path, n, n_time, n_check)
            if not checked:
                for mode in ("rebuild", "reuse"):
                    de, df, scale = _compare(d["check"], lm[f"check_{mode}"])
                    print(f"check ({mode}, {n_check} structures): max |energy row LAMMPS - ours| "
                          f"{de:.1e} (entries up to {scale:.0f}), max |force rows| {df:.1e}")
                    r[f"check_{mode}"] = {"energy_row_max_abs": de, "force_rows_max_abs": df,
                                          "energy_row_scale": scale}
                checked = True
            design = d["desc_s"] + d["rows_s"]
            t_lmp = min(lm["rebuild_s"], lm["reuse_s"])
            r.update(n_atoms=d["n_atoms"], n_edges=d["n_edges"], desc_s=d["desc_s"],
                     desc_structures_per_s=n / d["desc_s"],
                     desc_atoms_per_s=d["n_atoms"] / d["desc_s"],
                     rows_s=d["rows_s"], design_s=design, rss_desc_mb=d["rss_desc"],
                     rss_design_mb=d["rss"], lammps_rebuild_s=lm["rebuild_s"],
                     lammps_reuse_s=lm["reuse_s"], lammps_s=t_lmp,
                     lammps_mode="reuse" if lm["reuse_s"] <= lm["rebuild_s"] else "rebuild",
                     lammps_ms_per_structure=1e3 * t_lmp / n, lammps_n_timed=n_time,
                     lammps_scaled=n_time < n, rss_lammps_mb=lm["rss"], ratio=t_lmp / design)
            print(f"\nN = {n} structures ({d['n_atoms']} atoms, {d['n_edges']} edges)")
            scaled = f" (scaled from {n_time})" if n_time < n else ""
            print(f"  ours descriptors      {d['desc_s']:8.2f} s  {n / d['desc_s']:8.0f} struct/s "
                  f"{d['n_atoms'] / d['desc_s']:9.0f} atoms/s  peak RSS {d['rss_desc']:6.0f} MB")
            print(f"  ours design matrix    {design:8.2f} s  (rows {d['rows_s']:.2f} s)"
                  f"{'':17s}peak RSS {d['rss']:6.0f} MB")
            print(f"  LAMMPS compute snap   {t_lmp:8.2f} s  {1e3 * t_lmp / n:8.2f} ms/struct "
                  f"[{r['lammps_mode']}; rebuild {lm['rebuild_s']:.2f} s, reuse "
                  f"{lm['reuse_s']:.2f} s]{scaled}  peak RSS {lm['rss']:6.0f} MB")
            print(f"  ratio t_LAMMPS / t_ours (design matrix): {r['ratio']:.2f}", flush=True)

            li = _run(_ours_linear, path, n, args.threads)
            r.update(linear_total_s=li["total_s"], linear_desc_s=li["desc_s"],
                     linear_solve_s=li["solve_s"], linear_lambda=li["lambda"],
                     rss_linear_mb=li["rss"])
            print(f"  linear SNAP fit       {li['total_s']:8.2f} s  (descriptors+baseline "
                  f"{li['desc_s']:.2f} s, solve {li['solve_s']:.2f} s)  peak RSS "
                  f"{li['rss']:6.0f} MB", flush=True)
            for dt in ("float64", "float32"):
                nn = _run(_ours_nn, path, n, args.threads, epochs, dt)
                r.update({f"nn_{dt}_{k}": v for k, v in nn.items()})
                steady = ("-" if nn["steady_epoch_s"] is None
                          else f"{nn['steady_epoch_s']:.2f}")
                print(f"  NN-SNAP {dt}       {nn['epoch_s']:8.2f} s/epoch (steady {steady}, "
                      f"{nn['epochs']} epochs, descriptors {nn['desc_s']:.2f} s)  peak RSS "
                      f"{nn['rss']:6.0f} MB", flush=True)
            rows.append(r)

        print("\nsummary")
        print(f"{'N':>6s} {'desc s':>8s} {'atoms/s':>9s} {'design s':>9s} {'LAMMPS s':>9s} "
              f"{'ratio':>6s} {'lin s':>7s} {'solve s':>8s} {'NN64 s/ep':>10s} "
              f"{'NN32 s/ep':>10s} {'RSS des':>8s} {'RSS lin':>8s} {'RSS NN64':>9s} "
              f"{'RSS NN32':>9s} {'RSS LMP':>8s}")
        for r in rows:
            mark = "*" if r["lammps_scaled"] else " "
            print(f"{r['n_structures']:6d} {r['desc_s']:8.2f} {r['desc_atoms_per_s']:9.0f} "
                  f"{r['design_s']:9.2f} {r['lammps_s']:8.2f}{mark} {r['ratio']:6.2f} "
                  f"{r['linear_total_s']:7.2f} {r['linear_solve_s']:8.2f} "
                  f"{r['nn_float64_epoch_s']:10.2f} {r['nn_float32_epoch_s']:10.2f} "
                  f"{r['rss_design_mb']:8.0f} {r['rss_linear_mb']:8.0f} "
                  f"{r['nn_float64_rss']:9.0f} {r['nn_float32_rss']:9.0f} "
                  f"{r['rss_lammps_mb']:8.0f}")
        if any(r["lammps_scaled"] for r in rows):
            print(f"* LAMMPS timed on the first {LAMMPS_SUBSET} structures and scaled to N")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"threads": args.threads, "quick": args.quick, "epochs": epochs,
                           "label_seconds": lab["seconds"], "rows": rows}, fh, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
