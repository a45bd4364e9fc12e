"""Our PES module inside i-PI's own Python driver (``i-pi-driver-py -m custom -P ...``)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from ase import units
from ase.io import write


pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)

import ase_mlp.ipi.pes as pes  # noqa: E402
from ase_mlp.ipi import ipi_input, read_properties  # noqa: E402
from ase_mlp.ipi.outputs import binary_to_atoms, read_binary_trajectory  # noqa: E402


def test_pes_module_in_ipi_python_driver(tmp_path, gan_calc, gan_atoms, sock_name, procs,
                                         start_ipi):
    script = pathlib.Path(sys.executable).with_name("i-pi-driver-py")
    if not script.is_file():
        pytest.skip("i-pi-driver-py not installed")
    write(tmp_path / "init.extxyz", gan_atoms)
    (tmp_path / "input.xml").write_text(ipi_input(
        "init.extxyz", address=sock_name, nbeads=4, steps=4, timestep_fs=1.0,
        properties=("step", "bead_potentials{atomic_unit}"), properties_stride=4,
        extra_outputs=["<trajectory filename='pos' stride='4' format='bin'> positions "
                       "</trajectory>"]))
    server = start_ipi(tmp_path)
    drv = subprocess.run(
        [sys.executable, str(script), "-u", "-a", sock_name, "-m", "custom", "-P", pes.__file__,
         "-o", f"template={tmp_path / 'init.extxyz'},device=cpu"],
        capture_output=True, text=True, timeout=120)
    assert drv.returncode == 0, drv.stderr[-2000:]
    assert server.wait(timeout=30) == 0
    bp = read_properties(tmp_path / "simulation.out")["bead_potentials"]
    for b in range(4):
        frames = [binary_to_atoms(f) for f in read_binary_trajectory(
            tmp_path / f"simulation.pos_{b}.bin")]
        ref = [r["energy"] for r in gan_calc.calculate_batch(frames)]
        np.testing.assert_allclose(bp[:, b] * units.Hartree, ref, rtol=1e-10)
    assert np.ptp(bp[-1]) > 0


def test_pes_compute_plain_and_batched(gan_calc, gan_atoms, tmp_path):
    """The Dummy_driver interface: i-PI units in, (pot, force, virial, extras) out."""
    write(tmp_path / "t.extxyz", gan_atoms)
    drv = pes.ASEMLPDriver(template=str(tmp_path / "t.extxyz"), device="cpu")
    h = gan_atoms.cell.array.T / units.Bohr
    q = gan_atoms.positions / units.Bohr
    pot, f, vir, extra = drv.compute(h, q)
    r = gan_calc.calculate_batch([gan_atoms])[0]
    assert pot * units.Hartree == pytest.approx(r["energy"], rel=1e-12)
    np.testing.assert_allclose(f * units.Hartree / units.Bohr, r["forces"], atol=1e-10)
    assert f.shape == q.shape and vir.shape == (3, 3) and extra == ""
    out = drv.compute([h, h], [q, q + np.random.default_rng(1).normal(0, 0.02, q.shape)])
    assert len(out) == 2 and out[0][0] == pytest.approx(pot, rel=1e-12)
    assert out[1][0] != out[0][0]
