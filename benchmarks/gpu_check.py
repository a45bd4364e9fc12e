"""GPU check of the compiled SNAP kernels (run by hand on a machine with a CUDA GPU).

    python benchmarks/gpu_check.py [--sizes 10000 100000 1000000] [--quick]

1. compiles the kernels for the current device (NVRTC through CuPy) and reports the
   compile time;
2. checks GPU = CPU (the compiled CPU kernels, themselves checked against the torch
   implementation by the test suite) on energies, per-atom energies, forces and stress:
   single structures and a mixed batch, float64 to 1e-10 and float32 to 1e-5 relative;
3. times energy+forces+stress of Ta06A (2J=6) and WBe (2J=8) at 1e4, 1e5, 1e6 atoms and
   a batch of 512 structures of 64 atoms (CUDA events around the model call, after one
   warm-up; neighbour lists built on the device when vesin-torch is installed), with
   the peak GPU memory.

Exits with status 1 when a parity check fails. Takes a few minutes on an H100.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _structure(elements, a, n_atoms, seed=0):
    from ase.build import bulk

    rep = max(1, round((n_atoms / 2) ** (1 / 3)))
    atoms = bulk("W", "bcc", a=a, cubic=True).repeat(rep)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.set_chemical_symbols([elements[k % len(elements)] for k in range(len(atoms))])
    return atoms


POTENTIALS = {"Ta06A (2J=6)": ("Ta06A", ["Ta"], 3.30),
              "WBe (2J=8)": ("WBe_Wood_PRB2019", ["W", "Be"], 3.17)}


def _calc(name, device, dtype):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    P = lammps_potentials_dir()
    return MLPCalculator.from_file(P / f"{name}.snapcoeff", P / f"{name}.snapparam",
                                   device=device, dtype=dtype, backend="compiled")


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-300))


def parity(failures: list) -> None:
    for label, (name, elements, a) in POTENTIALS.items():
        images = [_structure(elements, a, n, seed=k) for k, n in enumerate((16, 54, 128, 250))]
        for dtype, tol in (("float64", 1e-10), ("float32", 1e-5)):
            cpu = _calc(name, "cpu", dtype).calculate_batch(images)
            gpu_calc = _calc(name, "cuda", dtype)
            batch = gpu_calc.calculate_batch(images)
            single = [gpu_calc.calculate_batch([im])[0] for im in images]
            for what, got in (("batch", batch), ("single", single)):
                worst = max(_rel(c[k], g[k]) for c, g in zip(cpu, got, strict=True)
                            for k in ("energy", "energies", "forces", "stress"))
                ok = worst <= tol
                print(f"parity {label:14s} {dtype} {what:6s}: max rel diff {worst:.1e} "
                      f"(tol {tol:.0e}) {'ok' if ok else 'FAIL'}", flush=True)
                if not ok:
                    failures.append((label, dtype, what, worst))


def timings(sizes) -> None:
    import torch

    for label, (name, elements, a) in POTENTIALS.items():
        calc = _calc(name, "cuda", "float64")
        for n in sizes:
            atoms = _structure(elements, a, n)
            atoms.calc = calc
            atoms.get_forces()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(3):
                calc.results.clear()
                t = time.perf_counter()
                atoms.get_forces()
                atoms.get_stress()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            peak = torch.cuda.max_memory_allocated() / 2**20
            t = min(times)
            print(f"time {label:14s} {len(atoms):8d} atoms: {t * 1e3:9.1f} ms/evaluation, "
                  f"{len(atoms) / t:.3e} atom-steps/s, peak GPU {peak:.0f} MiB", flush=True)
        images = [_structure(elements, a, 64, seed=k) for k in range(512)]
        calc.calculate_batch(images[:8])
        torch.cuda.synchronize()
        t = time.perf_counter()
        calc.calculate_batch(images)
        torch.cuda.synchronize()
        t = time.perf_counter() - t
        print(f"time {label:14s} batch 512 x {len(images[0])}: {t * 1e3:.1f} ms, "
              f"{512 * len(images[0]) / t:.3e} atom-steps/s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="parity only")
    args = ap.parse_args()

    import torch

    from ase_mlp.kernels import gpu

    if not gpu.available():
        print("no CUDA device or no cupy: nothing to check")
        return 0
    t = time.perf_counter()
    gpu.module(torch.cuda.current_device())
    print(f"NVRTC compile: {time.perf_counter() - t:.1f} s on "
          f"{torch.cuda.get_device_name()}", flush=True)
    failures: list = []
    parity(failures)
    if not args.quick:
        timings(args.sizes)
    if failures:
        print(f"{len(failures)} parity checks FAILED: {failures}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
