"""A GAP (``gap_fit`` xml, distance_2b) served to a real i-PI by
``ase-mlp ipi-driver --model FILE``; every step's energy and forces equal
``MLPCalculator.from_file(FILE)`` to 1e-8 relative (see test_ipi_plugins.py for why that
tolerance: unit-conversion round-off only, measured <= 2e-14)."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil

import numpy as np
import pytest
from ase.build import bulk


pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)
pytest.importorskip("quippy")  # the same install ships gap_fit, which trains the model
if shutil.which("gap_fit") is None:  # pragma: no cover
    pytest.skip("gap_fit (QUIP/GAP) is not on PATH", allow_module_level=True)

from test_ipi_plugins import check_served  # noqa: E402


def _make_gap(directory) -> pathlib.Path:
    """The model of tests/models/test_gap.py (gap_fit on EMT-labelled Cu/Al cells)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "models" / "test_gap.py"
    spec = importlib.util.spec_from_file_location("_gap_models_for_ipi", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_gap(directory)


def test_gap_model_served_to_real_ipi(tmp_path, sock_name, start_ipi, procs):
    path = _make_gap(tmp_path / "model")
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(2)
    rng = np.random.default_rng(2)
    atoms.symbols[rng.choice(len(atoms), 8, replace=False)] = "Al"
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=2)
    check_served(tmp_path, path, atoms, 1.0, sock_name, start_ipi, procs)
