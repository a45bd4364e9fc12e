"""Field forces of ``FieldDrivenMD`` against i-PI's ``eda-nve`` regression reference.

i-PI's EDANVE test (``../shared/data/ipi-edanve``; external-cases.md section 2) drives a water
molecule with ``E(t) = A cos(w t)``, A = (0, 0.05, 0) a.u., w = 2 pi 115 THz, through the Born
charges of ``bec.txt`` (3N rows = atom components, 3 columns = dipole directions, i.e. Z*
transposed). Its ``Eforces`` trajectory is the field force per step, which does not depend on
the potential; ours must reproduce it to the file's six printed digits.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
from ase import units
from ase.calculators.emt import EMT
from ase.io import read

from ase_mlp.dynamics import FieldDrivenMD


DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ipi-edanve"
FIELD_AU = units.Hartree / units.Bohr  # 1 a.u. of field in V/Å (51.42)
FORCE_AU = units.Hartree / units.Bohr  # 1 a.u. of force in eV/Å


def _frames(path):
    """Per-step (3, 3) arrays of an i-PI xyz trajectory (atomic units as printed)."""
    lines = path.read_text().splitlines()
    out = []
    k = 0
    while k < len(lines):
        n = int(lines[k])
        out.append(np.array([[float(x) for x in ln.split()[1:4]]
                             for ln in lines[k + 2:k + 2 + n]]))
        k += 2 + n
    return out


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not available: {DATA}")
def test_field_forces_match_ipi_eda_nve():
    bec = np.loadtxt(DATA / "bec.txt")  # (9, 3): row 3i+beta, column alpha
    z = np.stack([bec[3 * i:3 * i + 3].T for i in range(3)])  # Z*_i[alpha, beta]
    atoms = read(DATA / "start.xyz")
    atoms.positions *= units.Bohr
    atoms.pbc = False
    atoms.calc = EMT()
    amp = np.array([0.0, 0.05, 0.0]) * FIELD_AU
    omega = 2 * math.pi * 115e-3 / units.fs  # 115 THz = 0.115 cycles/fs, in rad/ASE time
    dyn = FieldDrivenMD(atoms, 1.0 * units.fs, lambda t: amp * math.cos(omega * t),
                        born_charges=z, acoustic_sum_rule=False)
    ref = _frames(DATA / "ref_simulation.Eforces_0.xyz")
    assert len(ref) >= 10
    got = [dyn.get_external_forces()]
    for _ in range(len(ref) - 1):
        dyn.run(1)
        got.append(dyn.get_external_forces())
    for k, (mine, theirs) in enumerate(zip(got, ref, strict=True)):
        # six significant digits printed: compare to 1e-5 of the largest component
        np.testing.assert_allclose(mine / FORCE_AU, theirs, rtol=0, atol=2e-7,
                                   err_msg=f"step {k}")
    # and the field really oscillates over the 10 fs (not a trivially static check)
    assert np.ptp([g[0, 1] for g in got]) > 0.5 * np.abs(got[0][0, 1])
