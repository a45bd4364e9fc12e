"""NN-SNAP on DeePMD-kit's liquid water data (400 frames of 192 atoms, energies and forces).

Reproduces the water numbers of ``docs/fitting-results.md``: 80/10/10 split inside each
DeePMD system, chemflag bispectrum (twojmax 4, cutoff 4 Å), 112-48-48-1 tanh networks, Adam
in float32 (descriptor gradients stored in float32: ~2 GB), early stopping on validation.
About 25 minutes on one core (not re-measured).

Data (not shipped with ase_mlp): DeePMD-kit's water example, ``examples/water/data/`` of
github.com/deepmodeling/deepmd-kit (LGPL-3.0): DeePMD npy systems, energies and forces.

Run: ``python examples/water/fit_water.py [--data DIR_OF_THE_DEEPMD_SYSTEMS]``
"""

import argparse
import pathlib

import torch

from ase_mlp.descriptors import Bispectrum
from ase_mlp.models import NNSNAP
from ase_mlp.training import compute_metrics, fit, format_table, read_frames, split_frames


def main():
    here = pathlib.Path(__file__).resolve()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(here.parents[3] / "shared" / "data" / "water-deepmd"))
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--out", default="water_nnsnap.pt")
    args = p.parse_args()
    frames = read_frames(args.data)  # DeePMD systems (type_map.raw: O H)
    train, val, test = split_frames(frames, (0.8, 0.1, 0.1), seed=0)
    d = Bispectrum(["O", "H"], twojmax=4, rcutfac=4.0, radii=[0.5, 0.5], chemflag=True)
    model = fit(NNSNAP(d, hidden=[48, 48]), train, val, energy_weight=1.0,
                optimizer="adam", epochs=args.epochs, batch_size=2, lr=1e-3, patience=40,
                lr_patience=10, dtype=torch.float32, progress=True)
    model.save(args.out)
    print(format_table({"NN-SNAP water (test)": compute_metrics(model, test)}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
