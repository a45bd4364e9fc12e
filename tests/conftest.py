import pathlib

import numpy as np
import pytest


SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


def potentials_dir():
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    try:
        d = lammps_potentials_dir()
    except Exception:  # noqa: BLE001
        return None
    return d if d.is_dir() else None
