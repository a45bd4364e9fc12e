"""ase_mlp sides of the SNAP benchmarks, each run in a fresh spawned child.

Entry points ``target(spec, q)`` for ``_harness.run_isolated``. torch and ase_mlp are
imported inside the functions only: ``bench_snap.py`` imports this module, and spawned
LAMMPS children re-import ``bench_snap.py``, so nothing heavy may be imported here at
module level.

Memory: ``rss0`` is the RSS after the imports and the structure, just before the
calculator (or descriptor) is created; ``added_mb`` = peak RSS (``VmHWM``, reset before
the timed evaluations) - ``rss0``.
"""

from __future__ import annotations

import os
import time

from _harness import hwm_mb, reset_peak, rss_mb


def _torch_threads(n):
    import torch

    if n is not None:
        torch.set_num_threads(int(n))  # this child process only
    return torch.get_num_threads()


def _kernel_info():
    from ase_mlp import kernels

    try:
        compiled = bool(kernels.available())
    except Exception:  # noqa: BLE001 - report, do not fail the benchmark
        compiled = False
    return {"compiled_available": compiled, "cores": kernels.available_cores()}


def _count_calls(calc):
    """Wrap ``calc.calculate`` to count model evaluations."""
    orig = calc.calculate
    count = [0]

    def counted(*a, **k):
        count[0] += 1
        return orig(*a, **k)

    calc.calculate = counted
    return count


def eval_efv(spec, q):
    """Energy + forces + virial of one structure, ``steps`` times after ``warmup``.

    ``spec``: ``atoms``, ``model`` (file paths for ``MLPCalculator.from_file``),
    ``threads`` (calculator threads), ``torch_threads``, ``backend``, ``steps``, ``warmup``.
    Each timed evaluation is ``calc.results.clear()``, ``get_forces()``,
    ``get_potential_energy()``, ``get_stress()``: one model call (counted and checked),
    because the calculator computes the virial with the forces of a 3D-periodic cell; the
    Verlet neighbour list is kept (atoms do not move), as LAMMPS's ``run`` is timed.
    """
    tt = _torch_threads(spec.get("torch_threads"))
    from ase_mlp.calculators import MLPCalculator

    atoms = spec["atoms"].copy()
    steps, warmup = int(spec["steps"]), int(spec["warmup"])
    rss0 = rss_mb()
    calc = MLPCalculator.from_file(*spec["model"], device="cpu", threads=spec["threads"],
                                   backend=spec.get("backend", "auto"))
    atoms.calc = calc
    count = _count_calls(calc)
    t0 = time.perf_counter()
    atoms.get_forces()
    cold = time.perf_counter() - t0  # neighbour list, kernel library load, first call

    def one():
        calc.results.clear()  # a new evaluation; the Verlet list is kept (no rebuild)
        f = atoms.get_forces()
        e = atoms.get_potential_energy()
        s = atoms.get_stress()
        return e, f, s

    for _ in range(warmup):
        one()
    reset_peak()
    count[0] = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        e, f, s = one()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    hwm = hwm_mb()
    if count[0] != steps:
        raise RuntimeError(f"{count[0]} model calls for {steps} E+F+virial evaluations")
    q.put({"energy": float(e), "forces": f.copy(), "stress": s.copy(), "wall": wall / steps,
           "cpu": cpu / steps, "cold": cold, "rss0_mb": rss0, "added_mb": hwm - rss0,
           "peak_mb": hwm, "torch_threads": tt, "load": os.getloadavg()[0],
           **_kernel_info()})


def design(spec, q):
    """ase_mlp's linear-SNAP design matrix of ``frames``: ``compute_features`` (neighbour
    lists, B and dB/dr through ``descriptor.jacobian``) + ``frame_columns`` (energy row,
    3N force rows, 6 stress rows per frame), ``steps`` times after a warm-up on the first
    frame; one thread (torch and the kernels). Rows of the first frame come back."""
    _torch_threads(1)
    from ase_mlp.descriptors.bispectrum import Bispectrum
    from ase_mlp.kernels import kernel_settings
    from ase_mlp.training.features import compute_features
    from ase_mlp.training.linear import frame_columns

    frames, steps = spec["frames"], int(spec["steps"])
    d = dict(spec["descriptor"])
    rss0 = rss_mb()
    desc = Bispectrum(d.pop("elements"), d.pop("twojmax"), d.pop("rcutfac"), d.pop("radii"),
                      **d)

    def build(fr):
        feats = compute_features(desc, fr)  # a fresh cache each time
        return [frame_columns(f, 1, False) for f in feats]

    with kernel_settings(threads=1):
        first = build(frames[:1])[0]
        reset_peak()
        walls, cpus = [], []
        for _ in range(steps):
            c0, t0 = time.process_time(), time.perf_counter()
            build(frames)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    hwm = hwm_mb()
    e_row, f_rows, _ = first
    q.put({"wall": sum(walls) / steps, "cpu": sum(cpus) / steps, "energy_row": e_row.numpy(),
           "force_rows": f_rows.numpy(), "rss0_mb": rss0, "added_mb": hwm - rss0,
           "peak_mb": hwm, "load": os.getloadavg()[0], **_kernel_info()})


def batch(spec, q):
    """``calculate_batch(images, ("energy", "forces", "stress"))``, one thread, ``steps``
    times after ``warmup`` (neighbour lists built in every call)."""
    _torch_threads(1)
    from ase_mlp.calculators import MLPCalculator

    images, steps, warmup = spec["images"], int(spec["steps"]), int(spec["warmup"])
    rss0 = rss_mb()
    # one model call for the whole batch, as the numbers of docs/performance.md were taken
    # (the default max_batch_atoms=2048 would split 64 x 64 atoms into two calls)
    calc = MLPCalculator.from_file(*spec["model"], device="cpu", threads=1,
                                   max_batch_atoms=spec.get("max_batch_atoms"))
    for _ in range(warmup):
        calc.calculate_batch(images)
    reset_peak()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        res = calc.calculate_batch(images)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    hwm = hwm_mb()
    natoms = sum(len(a) for a in images)
    q.put({"wall": wall / steps, "cpu": cpu / steps, "natoms": natoms,
           "energies": [r["energy"] for r in res], "rss0_mb": rss0, "added_mb": hwm - rss0,
           "peak_mb": hwm, "load": os.getloadavg()[0]})


def gan_demo_cell(repeat=(3, 2, 2)):
    """The ``ase-mlp demo`` cell at 0 GPa (``ase_mlp.workflows.demo._gan_supercell``)."""
    from ase_mlp.workflows.phases import wurtzite

    return wurtzite(("Ga", "N"), a=3.19, c=5.19, u=0.377, orthohexagonal=True).repeat(repeat)


def md_steps(spec, q):
    """MD steps of the ``ase-mlp demo`` set-up: 96-atom wurtzite GaN, embedded NN-SNAP,
    ASE ``MTKNPT`` at 300 K and 0 GPa, 2 fs (the stress is needed every step; the cell
    changes every step, so the neighbour list is rebuilt every step, as in the demo).

    ``spec``: ``model``, ``threads`` (None: the calculator's default), ``backend``,
    ``steps``, ``warmup``, optional ``torch_threads``. Without it torch's thread count is
    left at its default (the old ``backend="torch"`` path runs on torch's own threads)."""
    import numpy as np
    import torch

    if spec.get("torch_threads"):
        torch.set_num_threads(int(spec["torch_threads"]))  # this child only
    from ase import units
    from ase.md.nose_hoover_chain import MTKNPT
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    from ase_mlp.calculators import MLPCalculator

    atoms = gan_demo_cell()
    calc = MLPCalculator.from_file(*spec["model"], device="cpu", threads=spec["threads"],
                                   backend=spec["backend"])
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(0))
    Stationary(atoms)
    dt = 2.0 * units.fs
    md = MTKNPT(atoms, timestep=dt, temperature_K=300.0, pressure_au=0.0, tdamp=100 * dt,
                pdamp=1000 * dt)
    md.run(int(spec["warmup"]))
    steps = int(spec["steps"])
    c0, t0 = time.process_time(), time.perf_counter()
    md.run(steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    q.put({"wall": wall / steps, "cpu": cpu / steps, "natoms": len(atoms),
           "torch_threads": torch.get_num_threads(), "load": os.getloadavg()[0],
           "T": float(atoms.get_temperature()), **_kernel_info()})
