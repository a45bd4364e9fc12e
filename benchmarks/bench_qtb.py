"""Cost per MD step of the quantum thermal bath vs ASE's Langevin thermostats.

Run by hand (not a test)::

    python benchmarks/bench_qtb.py [--threads 1] [--pairs 3] [--quick] [--json out.json]

Cases: ``ase_mlp.dynamics.QTB`` (plain and adaptive) against ASE ``Langevin`` and
``LangevinBAOAB`` (the parent class of QTB), timestep 1 fs, 300 K, friction 0.01/fs,
with the same calculator:

* ``HarmonicOscillators(k=2 eV/Å²)`` (ase_mlp.calculators.oscillators) -- almost free,
  so the thermostat's own cost is what is measured -- on 1 000 and 100 000 Cu atoms
  (``--quick``: 1 000 and 20 000);
* ASE ``EMT`` on 1 000 fcc Cu atoms: a cheap but real potential.

Each measurement runs in a fresh subprocess (multiprocessing spawn), and the four
thermostats of a case are interleaved: ``--pairs`` rounds of Langevin, LangevinBAOAB, QTB,
adQTB (same number of steps each). Reported per step, min / median / max over the rounds:
wall seconds and CPU seconds (``time.process_time`` of the child; after a few warm-up
steps; the QTB constructor is not timed; the FFT that makes the coloured force of each block
of ``2 N_f`` noise intervals is timed once and spread over the block's steps), the ratio
t / t_Langevin of the medians, ``dyn.noise_memory_bytes()`` (QTB noise buffers and, for the
adaptive QTB, its segment spectra), the memory the thermostat adds (peak RSS during the
timed steps minus the RSS before the dynamics object was created) and the child's peak
RSS (interpreter, numpy, atoms included). Target: t_QTB / t_Langevin <= 1.2 at 100 000
atoms.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _harness import hwm_mb, interleave, reset_peak, rss_mb, run_isolated, summarize
from _harness import peak_mb as _peak_mb


KINDS = ("Langevin", "LangevinBAOAB", "QTB", "adQTB")



def _atoms(n, calc_name):
    import numpy as np
    from ase import Atoms
    from ase.build import bulk

    if calc_name == "EMT":
        base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((5, 5, 10))   # 1 000 atoms
        assert len(base) == n
        return base
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return Atoms(["Cu"] * n, positions=2.5 * grid[:n], cell=[2.5 * side] * 3, pbc=True)


def _case(kind, n, calc_name, steps, threads, q):
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import numpy as np
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.langevinbaoab import LangevinBAOAB
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    from ase_mlp.calculators.oscillators import HarmonicOscillators
    from ase_mlp.dynamics import QTB

    rng = np.random.default_rng(0)
    atoms = _atoms(n, calc_name)
    atoms.calc = EMT() if calc_name == "EMT" else HarmonicOscillators(2.0)
    thermalize_momenta(atoms, temperature_K=300, rng=rng)
    Stationary(atoms)
    dt, gamma = 1.0 * units.fs, 0.01 / units.fs
    rss0 = rss_mb()
    t0 = time.perf_counter()
    if kind == "Langevin":
        dyn = Langevin(atoms, dt, temperature_K=300, friction=gamma, fixcm=False, rng=rng)
    elif kind == "LangevinBAOAB":
        dyn = LangevinBAOAB(atoms, dt, temperature_K=300, T_tau=1.0 / gamma, rng=rng)
    else:
        dyn = QTB(atoms, dt, 300, gamma, adaptive=kind == "adQTB", rng=rng)
    t_init = time.perf_counter() - t0
    dyn.run(3)
    reset_peak()
    c0, t0 = time.process_time(), time.perf_counter()
    dyn.run(steps)
    wall, cpu = (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
    if isinstance(dyn, QTB):
        # the coloured force of a block of 2 N_f noise intervals is made at its start (FFT):
        # add its cost spread over the block's steps (the timed steps rarely cross one)
        t0, c0 = time.perf_counter(), time.process_time()
        dyn._convolve_block()
        per = 2 * dyn.n_f * dyn.alpha
        wall += (time.perf_counter() - t0) / per
        cpu += (time.process_time() - c0) / per
    added = hwm_mb() - rss0
    mem = dyn.noise_memory_bytes() if isinstance(dyn, QTB) else 0
    q.put({"wall": wall, "cpu": cpu, "init_s": t_init, "noise_mb": mem / 2**20,
           "added_mb": added, "rss_mb": _peak_mb(), "T": float(atoms.get_temperature()),
           "load": os.getloadavg()[0]})


def _run(*args):
    return run_isolated(_case, *args)


def _fmt(s):
    return f"{s['min']:.3e} / {s['median']:.3e} / {s['max']:.3e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads per case")
    ap.add_argument("--quick", action="store_true",
                    help="fewer steps; 1 000 and 20 000 atoms")
    ap.add_argument("--pairs", type=int, default=3,
                    help="interleaved rounds over the four thermostats")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    big = 20_000 if args.quick else 100_000
    cases = [("harmonic", 1_000, 50 if args.quick else 200),
             ("harmonic", big, 10 if args.quick else 30),
             ("EMT", 1_000, 10 if args.quick else 30)]
    print(f"threads {args.threads}; timestep 1 fs; per step after 3 warm-up steps, "
          f"min / median / max over {args.pairs} interleaved rounds; ratio = median t / "
          f"median t_Langevin; noise = dyn.noise_memory_bytes(); added = peak RSS of the timed "
          f"steps - RSS before the thermostat; RSS = peak of the child process")
    print(f"{'calculator':10s} {'atoms':>7} {'steps':>5} {'thermostat':14s} "
          f"{'wall s/step min/med/max':>32} {'cpu s/step median':>17} {'ratio':>6} "
          f"{'init s':>7} {'noise MB':>9} {'added MB':>9} {'RSS MB':>7}")
    results = {}
    for calc_name, n, steps in cases:
        sides = {kind: (lambda kind=kind, n=n, calc_name=calc_name, steps=steps:
                        _run(kind, n, calc_name, steps, args.threads))
                 for kind in KINDS}
        res = interleave(sides, args.pairs)
        ref = summarize(res["Langevin"])["wall"]["median"]
        for kind in KINDS:
            sm = summarize(res[kind])
            last = res[kind][-1]
            r = {**sm, "ratio": sm["wall"]["median"] / ref,
                 "init_s": min(x["init_s"] for x in res[kind]), "noise_mb": last["noise_mb"],
                 "rss_mb": max(x["rss_mb"] for x in res[kind]),
                 "T": [x["T"] for x in res[kind]], "load": [x["load"] for x in res[kind]]}
            results[f"{calc_name} {n} {kind}"] = r
            print(f"{calc_name:10s} {n:7d} {steps:5d} {kind:14s} {_fmt(sm['wall']):>32} "
                  f"{sm['cpu']['median']:17.3e} {r['ratio']:6.2f} {r['init_s']:7.2f} "
                  f"{r['noise_mb']:9.1f} {sm['added_mb']['median']:9.1f} "
                  f"{r['rss_mb']:7.0f}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
