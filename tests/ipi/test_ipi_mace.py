"""A MACE model (pickled ``mace-torch`` module) served to a real i-PI by
``ase-mlp ipi-driver --model FILE``; every step's energy and forces equal
``MLPCalculator.from_file(FILE)`` to 1e-8 relative (see test_ipi_plugins.py for why that
tolerance: unit-conversion round-off only, measured <= 2e-14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk


pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)
pytest.importorskip("mace.modules")

from test_ipi_plugins import check_served  # noqa: E402

from ase_mlp.models.mace import small_mace  # noqa: E402


def test_mace_model_served_to_real_ipi(tmp_path, sock_name, start_ipi, procs):
    path = tmp_path / "small.model"
    torch.save(small_mace(["Al", "Cu"]), path)
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    rng = np.random.default_rng(2)
    atoms.symbols[rng.choice(len(atoms), 10, replace=False)] = "Cu"
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=2)
    check_served(tmp_path, path, atoms, 2.0, sock_name, start_ipi, procs)
