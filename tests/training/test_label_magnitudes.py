"""Implausible label magnitudes (unit mistakes) are refused when the data are read
(:func:`ase_mlp.training.data.check_label_magnitudes`)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from ase_mlp.training.data import DataError, LabelSpec, read_frames


TA_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ta-fitsnap"


def _frames(stress_gpa=(5.0, 4.0, 3.0, 0.0, 0.0, 0.0), scale=1.0, forces=None, energy=-11.8):
    frames = []
    for k in range(3):
        a = bulk("Ta", "bcc", a=3.31 * scale, cubic=True).repeat(2)
        a.rattle(0.02, seed=k)
        f = np.zeros((len(a), 3)) if forces is None else forces(len(a))
        a.calc = SinglePointCalculator(a, energy=energy * len(a), forces=f,
                                       stress=np.array(stress_gpa, dtype=float))
        frames.append(a)
    return frames


def test_stress_in_gpa_declared_as_ev_per_a3_is_refused(tmp_path):
    """5 GPa written as the number 5 and read as eV/A^3 (800 GPa): refused with the file,
    the frame and the likely unit; declared as GPa, or with the check off, it is read."""
    write(tmp_path / "gpa.extxyz", _frames())
    with pytest.raises(DataError, match=r"gpa.extxyz: frame 0: stress component 5 eV/Å\^3 .*"
                                        r"probably in GPa.*stress_unit = \"GPa\"; that gives "
                                        r"5 GPa.*check_magnitudes = false"):
        read_frames(tmp_path / "gpa.extxyz")
    good = read_frames(tmp_path / "gpa.extxyz", spec=LabelSpec(stress_unit="GPa"))
    assert good[0].get_stress()[0] == pytest.approx(5.0 * units.GPa)
    raw = read_frames(tmp_path / "gpa.extxyz", spec=LabelSpec(check_magnitudes=False))
    assert raw[0].get_stress()[0] == pytest.approx(5.0)


def test_plausible_stress_and_compressed_cells_pass(tmp_path):
    # 100 GPa at an ordinary volume, in eV/A^3
    write(tmp_path / "ok.extxyz", _frames(stress_gpa=(100 * units.GPa,) * 3 + (0,) * 3))
    assert len(read_frames(tmp_path / "ok.extxyz")) == 3
    # 2000 GPa is no error for a cell compressed to 0.3 of its volume (cf. FitSNAP's Ta)...
    hard = (2000 * units.GPa,) * 3 + (0,) * 3
    write(tmp_path / "squeezed.extxyz", _frames(stress_gpa=hard, scale=0.3 ** (1 / 3)))
    assert len(read_frames(tmp_path / "squeezed.extxyz")) == 3
    # ... but is at the ordinary volume
    write(tmp_path / "wrong.extxyz", _frames(stress_gpa=hard))
    with pytest.raises(DataError, match="wrong.extxyz: frame 0: stress"):
        read_frames(tmp_path / "wrong.extxyz")


@pytest.mark.skipif(not TA_DATA.exists(), reason="shared Ta data not available")
def test_real_ta_data_with_3000_gpa_frames_is_accepted():
    spec = LabelSpec(stress_unit="bar", stress_sign="compressive")
    frames = read_frames(TA_DATA / "Volume_BCC.xyz", spec=spec)
    assert max(np.abs(a.get_stress()).max() for a in frames) > 10.0   # eV/A^3
    with pytest.raises(DataError, match=r"Volume_BCC.xyz: frame \d+: .*probably in bar"):
        read_frames(TA_DATA / "Volume_BCC.xyz", spec=LabelSpec(stress_unit="kbar"))


def test_forces_and_energies_in_the_wrong_unit_are_refused(tmp_path):
    def mev(n):                                     # 2 eV/A written in meV/A
        f = np.zeros((n, 3))
        f[3, 0] = 2000.0
        return f

    write(tmp_path / "f.extxyz", _frames(stress_gpa=(0,) * 6, forces=mev))
    with pytest.raises(DataError, match=r"f.extxyz: frame 0: force 2000 eV/Å on atom 3 \(Ta\) "
                                        r"is implausible.*meV/Å or Hartree/Bohr"):
        read_frames(tmp_path / "f.extxyz")
    write(tmp_path / "e.extxyz", _frames(stress_gpa=(0,) * 6, energy=-11.8e6))   # micro-eV
    with pytest.raises(DataError, match=r"e.extxyz: frame 0: energy .* eV/atom\) is "
                                        r"implausible"):
        read_frames(tmp_path / "e.extxyz")


def test_large_force_at_a_close_contact_passes(tmp_path):
    """A dimer at 0.6 A (short-range data for a ZBL fit): 800 eV/A is physical there."""
    from ase import Atoms

    a = Atoms("Ta2", positions=[[0, 0, 0], [0.6, 0, 0]], cell=[10, 10, 10], pbc=True)
    a.calc = SinglePointCalculator(a, energy=100.0, forces=[[-800, 0, 0], [800, 0, 0]])
    write(tmp_path / "dimer.extxyz", a)
    assert len(read_frames(tmp_path / "dimer.extxyz")) == 1


def test_config_key_turns_the_check_off(tmp_path):
    from ase_mlp.training.config import ConfigError, config_from_dict

    write(tmp_path / "gpa.extxyz", _frames())
    raw = {"data": {"train": ["gpa.extxyz"], "labels": {"check_magnitudes": False}},
           "model": {"type": "linear", "elements": ["Ta"],
                     "descriptor": {"twojmax": 2, "rcutfac": 4.7, "radii": {"Ta": 0.5}}}}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    assert cfg.data.labels.check_magnitudes is False
    assert cfg.to_dict()["data"]["labels"]["check_magnitudes"] is False
    raw["data"]["labels"]["check_magnitudes"] = "no"
    with pytest.raises(ConfigError, match="check_magnitudes"):
        config_from_dict(raw, base_dir=tmp_path)
