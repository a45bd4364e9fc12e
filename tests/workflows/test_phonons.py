"""Phonons through phonopy: batched MLPCalculator forces against phonopy driven by LAMMPS.

Done-when: the phonon frequencies of bcc Ta with the Ta06A SNAP + ZBL model (conventional
cell, 3x3x3 supercell, bcc primitive cell by symmetry) from :func:`phonons` equal those of
phonopy driven by LAMMPS (ASE ``LAMMPSlib``, same potential) to 1e-4 THz at Gamma, H, N, P
and a general q-point.
"""

import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_mlp.calculators import MLPCalculator
from ase_mlp.io.lammps import read_lammps_potential
from ase_mlp.io.lammps_runner import lammps_available, lammps_potentials_dir
from ase_mlp.workflows import phonon_summary, phonons


pytest.importorskip("phonopy")

# fractional coordinates in the reciprocal basis of phonopy's bcc primitive cell
# (rows (-1,1,1)a/2, (1,-1,1)a/2, (1,1,-1)a/2)
QPOINTS = {"G": [0, 0, 0], "H": [0.5, -0.5, 0.5], "N": [0, 0, 0.5], "P": [0.25, 0.25, 0.25],
           "general": [0.1, 0.2, 0.3]}


def _frequencies(phonon, q):
    phonon.run_qpoints([q])
    return np.asarray(phonon.qpoints.frequencies[0])


@pytest.fixture(scope="module")
def ta_calc(ta06a_path):
    return MLPCalculator(read_lammps_potential(ta06a_path), device="cpu")


@pytest.fixture(scope="module")
def ta():
    return bulk("Ta", "bcc", a=3.3, cubic=True)


@pytest.fixture(scope="module")
def ta_phonon(ta, ta_calc):
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # 9.9 Å >= 2 x 4.8 Å: no size warning
        return phonons(ta, ta_calc, 3)


@pytest.mark.lammps
@pytest.mark.skipif(not lammps_available(), reason="LAMMPS (pip install lammps mpich) is not "
                                                   "installed")
def test_ta06a_frequencies_equal_lammps_driven_phonopy(ta, ta_phonon):
    from ase.calculators.lammpslib import LAMMPSlib

    p = lammps_potentials_dir()
    lmp = LAMMPSlib(lmpcmds=["pair_style hybrid/overlay zbl 4 4.8 snap",
                             "pair_coeff 1 1 zbl 73 73",
                             f"pair_coeff * * snap {p}/Ta06A.snapcoeff {p}/Ta06A.snapparam Ta"],
                    atom_types={"Ta": 1}, log_file=None)
    ref = phonons(ta, lmp, 3)                     # one-by-one path of evaluate_many
    assert len(ta_phonon.primitive) == 1 and len(ta_phonon.supercell) == 54
    np.testing.assert_allclose(ref.force_constants, ta_phonon.force_constants, atol=1e-8)
    for name, q in QPOINTS.items():
        ours, theirs = _frequencies(ta_phonon, q), _frequencies(ref, q)
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0, err_msg=name)
    # H is threefold degenerate and the highest mode of bcc Ta
    f_h = _frequencies(ta_phonon, QPOINTS["H"])
    assert np.ptp(f_h) < 1e-6 and 4.5 < f_h[0] < 6.5


def test_ta06a_acoustic_sum_rule_and_summary(ta_phonon, tmp_path):
    assert np.all(np.abs(_frequencies(ta_phonon, [0, 0, 0])) < 1e-3)
    png = tmp_path / "ta.png"
    s = phonon_summary(ta_phonon, mesh=(8, 8, 8), temperatures=(300, 1000), plot=png)
    assert list(s["temperatures"]) == [0.0, 300.0, 1000.0]
    assert s["n_atoms_primitive"] == 1
    # ZPE = sum hbar w / 2 over the mesh, per primitive cell
    assert 0.01 < s["zero_point_energy"] < 0.04
    assert s["zero_point_energy"] == s["free_energy"][0]
    assert s["min_frequency"] > -1e-3 and 4.5 < s["max_frequency"] < 6.5
    # Dulong-Petit: 3 k_B per atom at 1000 K (eV/K)
    assert s["heat_capacity"][-1] == pytest.approx(3 * 8.617333e-5, rel=0.01)
    assert np.all(np.diff(s["free_energy"]) < 0) and s["entropy"][0] == pytest.approx(0, abs=1e-9)
    band = s.get("band")             # None without seekpath
    if band is not None:
        assert len(band["frequencies"]) == len(band["distances"]) == len(band["qpoints"])
        assert band["frequencies"][0].shape[1] == 3
    pytest.importorskip("matplotlib")
    assert png.is_file() and png.stat().st_size > 1000


def test_plain_ase_calculator_emt_cu(tmp_path):
    cu = bulk("Cu", "fcc", a=3.59, cubic=True)
    ph = phonons(cu, EMT(), 2)                    # EMT has no model.cutoff: no size check
    assert len(ph.primitive) == 1
    assert np.all(np.abs(_frequencies(ph, [0, 0, 0])) < 1e-3)
    s = phonon_summary(ph, mesh=(8, 8, 8), band_path=[[[0, 0, 0], [0.5, 0, 0.5]]],
                       temperatures=(300,))
    assert 6.0 < s["max_frequency"] < 8.5
    assert s["zero_point_energy"] > 0
    assert s["band"]["frequencies"][0].shape == (51, 3)


def test_too_small_supercell_warns(ta, ta_calc):
    with pytest.warns(UserWarning, match=r"3\.300 Å < 2 x cutoff = 9\.600 Å"):
        ph = phonons(ta, ta_calc, 1)
    assert ph.force_constants is not None


def test_supercell_argument_checked(ta):
    with pytest.raises(ValueError, match="supercell"):
        phonons(ta, EMT(), [[1, 0], [0, 1]])
