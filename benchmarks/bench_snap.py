"""SNAP energy+forces: ase_mlp's CPU calculator vs LAMMPS ``pair_style snap``.

Run by hand (not a test)::

    python benchmarks/bench_snap.py [--threads 1] [--repeats 3] [--quick]

Cases (same structures, same thread count for both codes):
  * bcc Ta, 2 000 and 16 000 atoms, Ta06A (2J = 6)
  * bcc W/Be (50/50), 2 000 atoms, WBe_Wood_PRB2019 (2J = 8, two elements)
  * GaN wurtzite, 1 920 atoms, the embedded NN-SNAP (chemflag, 2J = 4) vs the same model
    exported with ``export_lammps`` to ``pair_style mliap model nn ... descriptor sna``
  * batched throughput: 64 structures of 64 atoms, one ``calculate_batch`` vs 64 calls

Every measurement runs in a fresh subprocess, so the peak RSS reported is that
code's own. "ours" times a calculator call once its Verlet neighbour list
exists (positions unchanged, as in MD between rebuilds), the same state in which
LAMMPS's ``run N`` is timed (no neighbour rebuilds); "ours cold" includes the
neighbour list build. Ratio = t_LAMMPS / t_ours (>= 1 means we are faster).
"""

from __future__ import annotations

import argparse
import json
import time

from _harness import peak_mb as _peak_mb
from _harness import run_isolated


CASES = {
    "Ta bcc 2000 (2J=6)": ("Ta06A", ["Ta"], 3.30, 10),
    "Ta bcc 16000 (2J=6)": ("Ta06A", ["Ta"], 3.30, 20),
    "WBe bcc 2000 (2J=8)": ("WBe_Wood_PRB2019", ["W", "Be"], 3.17, 10),
}


def _structure(elements, a, rep, seed=0):
    import numpy as np
    from ase.build import bulk

    atoms = bulk("W", "bcc", a=a, cubic=True).repeat((rep, rep, rep))
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.set_chemical_symbols([elements[k % len(elements)] for k in range(len(atoms))])
    return atoms



def _ours(case, threads, repeats, q):
    import torch

    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    torch.set_num_threads(threads)
    name, elements, a, rep = CASES[case]
    P = lammps_potentials_dir()
    calc = MLPCalculator.from_file(P / f"{name}.snapcoeff", P / f"{name}.snapparam", device="cpu")
    atoms = _structure(elements, a, rep)
    atoms.calc = calc
    t = time.perf_counter()
    atoms.get_forces()
    cold = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        calc.results.clear()  # force a new evaluation; the Verlet list is kept (no rebuild)
        t = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        times.append(time.perf_counter() - t)
    q.put({"t": min(times), "cold": cold, "rss": _peak_mb(), "natoms": len(atoms)})


def _lammps(case, threads, repeats, q):
    from ase_mlp.io.lammps_runner import LammpsEvaluator, lammps_potentials_dir

    name, elements, a, rep = CASES[case]
    P = lammps_potentials_dir()
    atoms = _structure(elements, a, rep)
    lmp = LammpsEvaluator("snap", [f"pair_coeff * * {P}/{name}.snapcoeff {P}/{name}.snapparam "
                                   f"{' '.join(elements)}"], elements, threads=threads)
    t = lmp.time_steps(atoms, repeats)
    q.put({"t": t, "rss": _peak_mb(), "omp": getattr(lmp, "omp_active", False)})
    lmp.close()


def _gan_structure():
    import numpy as np

    from ase_mlp.workflows.phases import wurtzite

    atoms = wurtzite(orthohexagonal=True).repeat((8, 5, 6))  # 1 920 atoms
    atoms.positions += np.random.default_rng(0).normal(scale=0.03, size=atoms.positions.shape)
    return atoms


def _ours_gan(threads, repeats, q):
    import torch

    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.cli import default_model_path

    torch.set_num_threads(threads)
    calc = MLPCalculator.from_file(default_model_path(), device="cpu")
    atoms = _gan_structure()
    atoms.calc = calc
    atoms.get_forces()
    times = []
    for _ in range(repeats):
        calc.results.clear()
        t = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        times.append(time.perf_counter() - t)
    q.put({"t": min(times), "cold": times[0], "rss": _peak_mb(), "natoms": len(atoms)})


def _lammps_gan(threads, repeats, q):
    import tempfile

    from ase_mlp.cli import default_model_path
    from ase_mlp.io.export import export_lammps
    from ase_mlp.io.lammps_runner import LammpsEvaluator
    from ase_mlp.models import load

    model = load(default_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        cmds = export_lammps(model, tmp, "gan").commands(absolute=True)
        lmp = LammpsEvaluator(cmds[0].split(None, 1)[1], cmds[1:], model.elements,
                              threads=threads)
        t = lmp.time_steps(_gan_structure(), repeats)
        q.put({"t": t, "rss": _peak_mb()})
        lmp.close()


def _batch(threads, q):
    import numpy as np
    import torch
    from ase.build import bulk

    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps import read_lammps_potential
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    images = []
    for k in range(64):
        im = bulk("Ta", "bcc", a=3.25 + 0.002 * k, cubic=True).repeat((4, 4, 2))
        im.positions += rng.normal(scale=0.05, size=im.positions.shape)
        images.append(im)
    assert all(len(im) == 64 for im in images)
    calc = MLPCalculator(read_lammps_potential(lammps_potentials_dir() / "Ta06A.snap"),
                         device="cpu")
    calc.calculate_batch(images[:2])
    t = time.perf_counter()
    res = calc.calculate_batch(images, properties=("energy", "forces"))
    tb = time.perf_counter() - t
    t = time.perf_counter()
    one = []
    for im in images:
        c = MLPCalculator(calc.model, device="cpu")  # as a user would: one calculator per structure
        im.calc = c
        one.append(im.get_potential_energy())
        im.get_forces()
    ts = time.perf_counter() - t
    dev = max(abs(r["energy"] - e) for r, e in zip(res, one, strict=False))
    q.put({"batched": tb, "one_by_one": ts, "max_dE": dev, "rss": _peak_mb()})


_run = run_isolated


def _report(case, lmp, ours) -> dict:
    """Print one table row and return it as a dict (ratio = t_LAMMPS / t_ours)."""
    ratio = lmp["t"] / ours["t"]
    print(f"{case:24s} {lmp['t']:9.3f} {ours['t']:9.3f} {ours['cold']:8.3f} {ratio:6.2f} "
          f"{ours['rss']:11.0f} {lmp['rss']:13.0f}", flush=True)
    return {"case": case, "lammps_s": lmp["t"], "ours_s": ours["t"], "ours_cold_s": ours["cold"],
            "ratio": ratio, "rss_ours_mb": ours["rss"], "rss_lammps_mb": lmp["rss"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 16 000-atom case")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    rows = []
    print(f"threads: {args.threads} (torch intra-op threads / LAMMPS OpenMP threads)")
    print(f"{'case':24s} {'LAMMPS s':>9s} {'ours s':>9s} {'cold s':>8s} {'ratio':>6s} "
          f"{'RSS ours MB':>11s} {'RSS LAMMPS MB':>13s}")
    for case in CASES:
        if args.quick and "16000" in case:
            continue
        lmp = _run(_lammps, case, args.threads, args.repeats)
        ours = _run(_ours, case, args.threads, args.repeats)
        rows.append(_report(case, lmp, ours))
    rows.append(_report("GaN NN-SNAP 1920 (embedded, mliap nn)",
                        _run(_lammps_gan, args.threads, args.repeats),
                        _run(_ours_gan, args.threads, args.repeats)))
    b = _run(_batch, args.threads)
    print(f"batched 64 x 64 atoms (Ta06A+ZBL): one call {b['batched']:.3f} s, 64 calls "
          f"{b['one_by_one']:.3f} s, speed-up {b['one_by_one'] / b['batched']:.1f}x, "
          f"max |dE| {b['max_dE']:.1e} eV, peak RSS {b['rss']:.0f} MB")
    rows.append({"case": "batch 64x64", **b})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
