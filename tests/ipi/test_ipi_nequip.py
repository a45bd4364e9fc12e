"""A compiled NequIP model (``*.nequip.pth``) served to a real i-PI by ``ase-mlp ipi-driver``.

The model is the tiny float64 NequIP of ``tests/models/test_nequip.py`` (nequip's own
builder, fixed seed, written as nequip-compile's TorchScript file); the check is
``test_ipi_plugins.check_served``: i-PI's record of every step (binary positions and
forces, ``%.16e`` potential) against ``MLPCalculator.from_file`` on the same frames, to
1e-8 relative (the reasons for that tolerance are in test_ipi_plugins.py).
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest


pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)
pytest.importorskip("nequip")

from test_ipi_plugins import check_served  # noqa: E402


def _nequip_tests():
    """The model builders of tests/models/test_nequip.py (one source for both tests)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "models" / "test_nequip.py"
    spec = importlib.util.spec_from_file_location("_ase_mlp_test_nequip_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nequip_served_to_real_ipi(tmp_path, sock_name, start_ipi, procs):
    models = _nequip_tests()
    path = models.write_torchscript(tmp_path / "tiny.nequip.pth", "nequip")
    atoms = models._alloy(11, rattle=0.05)    # 32-atom triclinic Cu/Au
    check_served(tmp_path, path, atoms, 1.0, sock_name, start_ipi, procs)
