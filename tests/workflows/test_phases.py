"""Structure builders, fixed-pressure relaxation and enthalpies (ase_mlp.workflows.phases)."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list

from ase_mlp.workflows.phases import (
    enthalpy_per_atom,
    phase_enthalpies,
    relax_at_pressure,
    rocksalt,
    wurtzite,
    wurtzite_parameters,
    zincblende,
)


def _first_shell(atoms, cutoff):
    """Per-atom neighbour counts within cutoff, and whether all neighbours are unlike."""
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    counts = np.bincount(i, minlength=len(atoms))
    unlike = bool(np.all(atoms.numbers[i] != atoms.numbers[j]))
    return counts, unlike, d


@pytest.mark.parametrize("ortho", [False, True])
def test_wurtzite_shell(ortho):
    a, c, u = 3.19, 5.19, 0.377
    atoms = wurtzite(a=a, c=c, u=u, orthohexagonal=ortho)
    assert len(atoms) == (8 if ortho else 4)
    assert atoms.get_chemical_symbols() == ["Ga"] * (len(atoms) // 2) + ["N"] * (len(atoms) // 2)
    assert atoms.info["phase"] == "B4"
    np.testing.assert_allclose(atoms.get_volume() / len(atoms), np.sqrt(3) / 8 * a**2 * c)
    counts, unlike, d = _first_shell(atoms, 2.5)
    assert np.all(counts == 4) and unlike
    axial, basal = u * c, np.sqrt(a**2 / 3 + (0.5 - u) ** 2 * c**2)
    np.testing.assert_allclose(np.sort(np.unique(d.round(8))), np.sort([axial, basal]), atol=1e-8)


@pytest.mark.parametrize("cubic", [False, True])
def test_zincblende_and_rocksalt_shells(cubic):
    zb = zincblende(a=4.5, cubic=cubic)
    rs = rocksalt(a=4.2, cubic=cubic)
    for atoms, phase, n_nn, d_nn in ((zb, "B3", 4, np.sqrt(3) / 4 * 4.5), (rs, "B1", 6, 2.1)):
        assert atoms.info["phase"] == phase
        assert len(atoms) == (8 if cubic else 2)
        counts, unlike, d = _first_shell(atoms, 1.1 * d_nn)
        assert np.all(counts == n_nn) and unlike
        np.testing.assert_allclose(d, d_nn)
    np.testing.assert_allclose(zb.get_volume() / len(zb), 4.5**3 / 8)


def test_space_groups():
    spglib = pytest.importorskip("spglib")

    def number(atoms):
        cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
        return spglib.get_symmetry_dataset(cell, symprec=1e-4).number

    assert number(wurtzite()) == 186
    assert number(wurtzite(orthohexagonal=True)) == 186
    assert number(wurtzite(u=0.5, c=4.0)) == 194  # h-MgO (P6_3/mmc)
    assert number(zincblende(cubic=True)) == 216
    assert number(rocksalt()) == 225


@pytest.mark.parametrize("ortho,rep", [(False, (1, 1, 1)), (True, (1, 1, 1)), (True, (2, 2, 3))])
def test_wurtzite_parameters(ortho, rep):
    atoms = wurtzite(a=3.1, c=5.3, u=0.36, orthohexagonal=ortho).repeat(rep)
    p = wurtzite_parameters(atoms)
    np.testing.assert_allclose([p["a"], p["c"], p["u"], p["c_over_a"]],
                               [3.1, 5.3, 0.36, 5.3 / 3.1], rtol=1e-10)


def test_enthalpy_per_atom():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(ValueError, match="calculator"):
        enthalpy_per_atom(atoms, 1.0)
    atoms.calc = EMT()
    e, v = atoms.get_potential_energy(), atoms.get_volume()
    assert enthalpy_per_atom(atoms, 0.0) == pytest.approx(e / 4)
    assert enthalpy_per_atom(atoms, 7.0) == pytest.approx((e + 7.0 * units.GPa * v) / 4, rel=1e-14)


def test_relax_at_pressure_emt_cu(rng):
    start = bulk("Cu", "fcc", a=3.57, cubic=True)
    start.set_cell(start.cell @ (np.eye(3) + 0.01 * rng.standard_normal((3, 3))), scale_atoms=True)
    start.rattle(0.03, rng=rng)
    original = start.copy()
    volumes = []
    for pressure in (0.0, 10.0):
        relaxed = relax_at_pressure(start, EMT(), pressure, fmax=1e-5, smax=2e-5)
        assert start == original and start.calc is None  # input untouched
        stress = relaxed.get_stress(voigt=False) / units.GPa
        np.testing.assert_allclose(stress, -pressure * np.eye(3), atol=1e-4)
        assert np.abs(relaxed.get_forces()).max() < 1e-5
        _, _, d = _first_shell(relaxed, 3.0)
        assert np.ptp(d) < 1e-4  # fcc again: all nearest neighbours at the same distance
        volumes.append(relaxed.get_volume())
    assert volumes[1] < volumes[0]


def test_relax_at_pressure_hydrostatic_and_failure():
    atoms = bulk("Cu", "fcc", a=3.5)
    relaxed = relax_at_pressure(atoms, EMT(), 5.0, hydrostatic_strain=True, smax=1e-5,
                                optimizer="LBFGS")
    np.testing.assert_allclose(relaxed.cell.cellpar()[3:], 60.0, atol=1e-8)  # shape kept
    assert -np.trace(relaxed.get_stress(voigt=False)) / 3 / units.GPa == pytest.approx(5.0,
                                                                                       abs=1e-5)
    with pytest.raises(RuntimeError, match="not converged"):
        relax_at_pressure(atoms, EMT(), 5.0, steps=1)
    with pytest.raises(ValueError, match="optimizer"):
        relax_at_pressure(atoms, EMT(), 5.0, optimizer="NoSuchOptimizer")


def test_phase_enthalpies_emt_cu():
    phases = {"fcc": bulk("Cu", "fcc", a=3.6), "hcp": bulk("Cu", "hcp", a=2.55, c=4.16)}
    pressures = [0.0, 10.0]
    res = phase_enthalpies(EMT(), phases, pressures, fmax=1e-5, smax=1e-5)
    assert set(res) == {"fcc", "hcp"}
    for r in res.values():
        assert "u" not in r
        np.testing.assert_array_equal(r["pressure_GPa"], pressures)
        np.testing.assert_allclose(r["enthalpy"],
                                   r["energy"] + np.array(pressures) * units.GPa * r["volume"])
        v, h = r["volume"], r["enthalpy"]
        assert np.all(np.diff(v) < 0)
        # dH/dP = V and V decreases: V(P2) dP <= H(P2) - H(P1) <= V(P1) dP
        dp = np.diff(pressures) * units.GPa
        assert np.all(v[1:] * dp <= np.diff(h)) and np.all(np.diff(h) <= v[:-1] * dp)
        assert len(r["structures"]) == 2
        s = r["structures"][-1]
        assert isinstance(s.calc, SinglePointCalculator)
        assert s.get_potential_energy() / len(s) == pytest.approx(r["energy"][-1])
        np.testing.assert_allclose(s.get_stress()[:3] / units.GPa, -10.0, atol=1e-4)


def test_phase_enthalpies_reports_wurtzite_parameters():
    """A wurtzite-tagged phase also gets a, c, c/a, u (loose fmax: the structure is kept)."""
    atoms = wurtzite(("Cu", "Ag"), a=3.0, c=4.9, u=0.375)
    res = phase_enthalpies(EMT(), {"w": atoms}, [0.0], fmax=1e3, steps=0)
    r = res["w"]
    for key, val in (("a", 3.0), ("c", 4.9), ("c_over_a", 4.9 / 3.0), ("u", 0.375)):
        assert r[key][0] == pytest.approx(val)
