"""Device-resident MD (ResidentMD) against ASE's VelocityVerlet + MLPCalculator.

Run by hand (not a test)::

    python benchmarks/bench_resident.py [--device cpu|cuda] [--steps 20] [--threads 1]

Ta06A (bcc Ta, SNAP 2J = 6), float64, NVE, 2 fs, skin 1 Å. In the same process:

* one 1024-atom system: seconds per step of ASE ``VelocityVerlet`` with ``MLPCalculator``
  (the peer) and of ``ResidentMD``, and the model's own time per step (a bare model call on
  the same graph), so ``1 - model / step`` is the share of the step spent outside the model
  (issue 9 target on a GPU: < 10 %);
* 64 systems of 54 atoms: ``ResidentMD`` with all 64 in one batch against 64 ASE
  ``VelocityVerlet`` runs one after the other (atom-steps per second).

Peak RSS at the end. GPU rows need ``--device cuda`` on a machine with one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _harness import peak_mb
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from ase_mlp._util import thermalize
from ase_mlp.calculators import MLPCalculator
from ase_mlp.dynamics import ResidentMD
from ase_mlp.io.lammps import read_lammps_potential
from ase_mlp.io.lammps_runner import lammps_potentials_dir


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = read_lammps_potential(lammps_potentials_dir() / "Ta06A.snap")
    calc = MLPCalculator(model, device=args.device)
    dt = 2 * units.fs
    rng = np.random.default_rng(0)

    big = bulk("Ta", "bcc", a=3.31, cubic=True).repeat(8)
    thermalize(big, 300, rng)
    ref = big.copy()
    ref.calc = calc
    vv = VelocityVerlet(ref, dt)
    vv.run(2)
    t = time.perf_counter()
    vv.run(args.steps)
    t_ase = (time.perf_counter() - t) / args.steps

    md = ResidentMD(calc, big, dt, skin=1.0)
    md.run(2)
    _sync(args.device)
    t = time.perf_counter()
    md.run(args.steps)
    _sync(args.device)
    t_res = (time.perf_counter() - t) / args.steps
    graph = md._graph
    with torch.no_grad():
        model_on = calc.model
        model_on(graph, forces=True, stress=False)
        _sync(args.device)
        t = time.perf_counter()
        for _ in range(args.steps):
            model_on(graph, forces=True, stress=False)
        _sync(args.device)
    t_model = (time.perf_counter() - t) / args.steps
    n = len(big)
    print(f"{n} atoms, {args.device}: ASE VelocityVerlet {t_ase * 1e3:.1f} ms/step, "
          f"ResidentMD {t_res * 1e3:.1f} ms/step ({t_ase / t_res:.2f}x), model alone "
          f"{t_model * 1e3:.1f} ms -> {100 * (1 - t_model / t_res):.1f} % of the step outside "
          f"the model (ASE: {100 * (1 - t_model / t_ase):.1f} %)")

    small = []
    for k in range(64):
        a = bulk("Ta", "bcc", a=3.31, cubic=True).repeat(3)
        a.rattle(0.02, seed=k)
        thermalize(a, 300, rng)
        small.append(a)
    batch = ResidentMD(calc, small, dt, skin=1.0)
    batch.run(1)
    _sync(args.device)
    t = time.perf_counter()
    batch.run(args.steps)
    _sync(args.device)
    t_batch = time.perf_counter() - t
    t = time.perf_counter()
    for a in small:
        b = a.copy()
        b.calc = calc
        VelocityVerlet(b, dt).run(args.steps)
    t_one = time.perf_counter() - t
    atom_steps = 64 * len(small[0]) * args.steps
    print(f"64 x {len(small[0])} atoms, {args.device}: batched ResidentMD "
          f"{atom_steps / t_batch:.3g} atom-steps/s, one-by-one ASE "
          f"{atom_steps / t_one:.3g} atom-steps/s ({t_one / t_batch:.2f}x); "
          f"peak RSS {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
