"""Time the native DeepPot-SE (``ase_mlp.models.deepmd``) against deepmd-kit's own backend.

Model: the usual water se_e2_a architecture (rcut 6 Å, sel [46, 92], embedding [25, 50, 100],
axis_neuron 16, fitting [240, 240, 240]) built by deepmd-kit's NumPy backend with seeded
random weights and written as ``.dp``. Structures: cubes cut from the DeePMD water data
(liquid density), 64 structures of 64 atoms and one of 1000 atoms.

Reported (seconds, best of ``--repeat``):

* ase_mlp batched: one ``calculate_batch`` call on the 64 structures (energy, forces, stress);
* ase_mlp one-by-one: 64 single-structure calls;
* deepmd one-by-one: ``DeepPot.eval`` of deepmd's NumPy backend per structure (energies
  only: the NumPy backend has no gradients, its forces are NaN), the backend that loads
  beside torch 2.13 (deepmd's torch ops are built for torch 2.11);
* per-atom time at 1000 atoms for both.

Usage: ``python benchmarks/bench_deepmd.py [--device cuda] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np
from ase import Atoms


DATA = pathlib.Path("/work/shared/data/water-deepmd/data_0")


def make_model(path: str, seed: int = 0) -> str:
    from deepmd.dpmodel.model.model import get_model
    from deepmd.dpmodel.utils.serialization import save_dp_model

    cfg = {"type_map": ["O", "H"],
           "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut_smth": 0.5, "rcut": 6.0,
                          "neuron": [25, 50, 100], "resnet_dt": False, "axis_neuron": 16,
                          "type_one_side": False, "precision": "float64", "seed": seed},
           "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True,
                           "precision": "float64", "seed": seed}}
    data = get_model(cfg).serialize()
    rng = np.random.default_rng(seed)

    def randomise(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                node[k] = randomise(v, k)
        elif isinstance(node, list):
            return [randomise(v, key) for v in node]
        elif isinstance(node, np.ndarray) and node.dtype.kind == "f" and key in ("w", "b"):
            return rng.normal(0.0, 1.0 / np.sqrt(node.shape[0]) if key == "w" else 0.3,
                              node.shape)
        return node

    randomise(data)
    data["descriptor"]["@variables"]["davg"][..., 0] = 0.1
    data["descriptor"]["@variables"]["dstd"][...] = 0.3
    save_dp_model(path, {"model": data, "model_def_script": cfg})
    return path


def water_cube(n_atoms: int, frame: int) -> Atoms:
    """The ``n_atoms`` atoms nearest a corner (max-norm) of a water frame tiled 3x3x3, in a
    cubic cell of the liquid's density."""
    coord = np.load(DATA / "set.000/coord.npy")[frame].reshape(-1, 3)
    box = np.load(DATA / "set.000/box.npy")[frame].reshape(3, 3)
    types = np.loadtxt(DATA / "type.raw", dtype=int)
    atoms = Atoms([("O", "H")[t] for t in types], positions=coord, cell=box, pbc=True)
    atoms.wrap()
    big = atoms.repeat(3)
    side = (n_atoms / len(atoms) * atoms.get_volume()) ** (1.0 / 3.0)
    order = np.argsort(np.max(big.positions, axis=1))[:n_atoms]
    cut = big[order]
    cut.set_cell(np.eye(3) * side)
    cut.pbc = True
    return cut


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-structures", type=int, default=64)
    ap.add_argument("--no-deepmd", action="store_true", help="skip deepmd's own timings")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_deepmd_") as tmp:
        run(args, make_model(str(pathlib.Path(tmp) / "water.dp")))


def run(args, path):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.models.deepmd import DeepPotSE

    # (MLPCalculator.from_file(path) once the package metadata has the deepmd entry point)
    calc = MLPCalculator(DeepPotSE.from_dp(path), device=args.device, min_distance=0.0)
    images = [water_cube(64, k % 40) for k in range(args.n_structures)]
    big = water_cube(1000, 0)
    print(f"device {calc.device}, {len(images)} x 64 atoms, model {path}")

    def batched():
        calc.calculate_batch(images, properties=("energy", "forces", "stress"))

    def one_by_one():
        for atoms in images:
            calc.calculate(atoms.copy(), ["energy", "forces", "stress"])

    def single_big():
        calc.calculate(big.copy(), ["energy", "forces", "stress"])

    batched()  # warm-up
    rows = [("ase_mlp batched (E, F, stress)", best(batched, args.repeat)),
            ("ase_mlp one-by-one (E, F, stress)", best(one_by_one, args.repeat))]
    single_big()
    t_big = best(single_big, args.repeat)
    if not args.no_deepmd:
        from deepmd.infer import DeepPot

        dp = DeepPot(path)

        def dp_one_by_one():
            for atoms in images:
                dp.eval(atoms.positions[None], atoms.cell.array.reshape(1, 9),
                        np.array([("O", "H").index(s) for s in atoms.get_chemical_symbols()]))

        dp_one_by_one()
        rows.append(("deepmd NumPy one-by-one (E only)", best(dp_one_by_one, args.repeat)))
        types = np.array([("O", "H").index(s) for s in big.get_chemical_symbols()])
        t_dp_big = best(lambda: dp.eval(big.positions[None], big.cell.array.reshape(1, 9),
                                        types), args.repeat)
    for name, t in rows:
        print(f"{name:36s} {t * 1e3:10.1f} ms  ({t / (64 * len(images)) * 1e6:8.2f} us/atom)")
    print(f"ase_mlp 1000 atoms (E, F, stress)    {t_big * 1e3:10.1f} ms  "
          f"({t_big / len(big) * 1e6:8.2f} us/atom)")
    if not args.no_deepmd:
        print(f"deepmd NumPy 1000 atoms (E only)     {t_dp_big * 1e3:10.1f} ms  "
              f"({t_dp_big / len(big) * 1e6:8.2f} us/atom)")


if __name__ == "__main__":
    sys.exit(main())
