"""Force locality test (methods section 6): exact zeros, decay, table magnitudes, inputs.

Reference table (fcc Cu 6x6x6 cubic, rattled 0.05 Å, delta = 0.1 Å, 5 trials): the random
draws here differ from the table's, so magnitudes are compared within a factor of 3; the
exactness rule (pair: zero for R > r_c + delta; local many-body: only for R > 2 r_c + delta)
is asserted exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from ase_mlp.calculators import MLPCalculator
from ase_mlp.models import ZBL
from ase_mlp.workflows import (
    LocalityResult,
    locality_test,
    plot_locality,
    suggest_cutoff,
)
from ase_mlp.workflows.locality import exact_zero_radius


LJ_TABLE = {3.0: 5.6e-2, 4.0: 2.5e-2, 5.0: 3.1e-3}
EMT_TABLE = {3.0: 2.3e-2, 6.0: 4.3e-5, 8.0: 1.9e-7, 10.0: 5.4e-10}


def _lj():
    return LennardJones(sigma=2.3, epsilon=0.4, rc=5.0, smooth=True)


@pytest.fixture(scope="module")
def cu():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(6)       # 864 atoms, L = 21.66 Å
    atoms.rattle(0.05, rng=np.random.default_rng(7))
    return atoms


@pytest.fixture(scope="module")
def lj_result(cu):
    return locality_test(cu, _lj(), [3, 4, 4.8, 5.0, 5.2, 6, 8], delta=0.1, trials=5,
                         rng=np.random.default_rng(11))


@pytest.fixture(scope="module")
def emt_result(cu):
    return locality_test(cu, EMT(), [3, 4, 5, 6, 8, 10], delta=0.1, trials=5, rng=12)


def _within_factor(value, ref, factor=3.0):
    return ref / factor < value < ref * factor


def test_lennard_jones_exact_zero_beyond_rc_plus_delta(lj_result):
    res = lj_result
    rms = dict(zip(res.radii.tolist(), res.rms, strict=True))
    assert res.values.shape == (7, 5, 1)
    for r in (3.0, 4.0, 4.8):
        assert rms[r] > 1e-3                       # atoms inside r_c were moved
    for r in (5.2, 6.0, 8.0):                      # R > r_c + delta: bit-for-bit unchanged
        assert np.all(res.values[res.radii == r] == 0.0)
    for r, ref in LJ_TABLE.items():
        assert _within_factor(rms[r], ref), (r, rms[r], ref)
    assert np.all(np.diff(res.rms) <= 0)
    assert res.zero_beyond is None                 # ASE calculator: form not known
    assert np.all(res.max >= res.rms)


def test_emt_decays_monotonically(emt_result):
    res = emt_result
    rms = dict(zip(res.radii.tolist(), res.rms, strict=True))
    assert np.all(np.diff(res.rms) < 0)
    assert rms[10.0] < 1e-8
    assert rms[6.0] > 1e-6                          # many-body: beyond the LJ-like range
    assert np.all(res.values > 0)
    for r, ref in EMT_TABLE.items():
        assert _within_factor(rms[r], ref), (r, rms[r], ref)


def test_counts_use_minimum_image_in_a_triclinic_cell():
    """Unrattled fcc primitive supercell (60 degree cell): shells of 1, 12, 6, 24, 12 atoms."""
    atoms = bulk("Cu", "fcc", a=3.61).repeat(7)      # triclinic, widths 7 a / sqrt(3)
    assert not np.allclose(atoms.cell.angles(), 90)
    centre = 200
    res = locality_test(atoms, _lj(), [2.0, 3.0, 4.0, 5.2], center=[0, centre], trials=2,
                        rng=0)
    n = len(atoms)
    np.testing.assert_array_equal(res.n_perturbed, [[n - 1] * 2, [n - 13] * 2,
                                                    [n - 19] * 2, [n - 55] * 2])
    assert np.all(res.values[3] == 0.0)
    assert np.all(res.values[:3] > 0)
    np.testing.assert_allclose(res.reference_forces, 0.0, atol=1e-10)  # perfect crystal


def test_centres_share_the_perturbations(cu):
    radii = [3.0, 4.0]
    both = locality_test(cu, _lj(), radii, center=[5, 100], trials=2, rng=3)
    one = locality_test(cu, _lj(), radii, center=100, trials=2, rng=3)
    assert both.values.shape == (2, 2, 2)
    np.testing.assert_array_equal(both.values[:, :, 1], one.values[:, :, 0])
    again = locality_test(cu, _lj(), radii, center=100, trials=2,
                          rng=np.random.default_rng(3))
    np.testing.assert_array_equal(again.values, one.values)
    other = locality_test(cu, _lj(), radii, center=100, trials=2, rng=4)
    assert not np.array_equal(other.values, one.values)


def test_no_global_seeding(cu):
    state = np.random.get_state()[1].copy()
    locality_test(cu, _lj(), [4.0], trials=1, rng=None)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_snapshots_mode_wrapped_positions(cu, rng):
    snaps = []
    for _ in range(3):
        s = cu.copy()
        s.positions += rng.normal(scale=0.04, size=s.positions.shape)
        snaps.append(s)
    wrapped = [s.copy() for s in snaps]
    for s in wrapped:
        s.wrap()
    assert any(not np.allclose(a.positions, b.positions) for a, b in
               zip(snaps, wrapped, strict=True))
    res = locality_test(cu, _lj(), [3.0, 4.0, 6.0], mode=wrapped)
    plain = locality_test(cu, _lj(), [3.0, 4.0, 6.0], mode=snaps)
    assert res.mode == "snapshots" and res.values.shape == (3, 3, 1)
    np.testing.assert_allclose(res.values, plain.values, rtol=1e-9, atol=1e-12)
    assert 0.04 < res.delta < 0.3                  # largest displacement of a moved atom
    assert np.all(res.values[:2] > 0) and np.all(res.values[2] == 0.0)  # 6 > 5 + delta
    two = locality_test(cu, _lj(), [3.0], mode=wrapped, trials=2)
    np.testing.assert_allclose(two.values[0], res.values[0, :2], rtol=1e-12)


def test_pair_model_zero_beyond_rc(rng, one_thread):
    """An ase_mlp pair model (ZBL, r_c = 3 Å): exact zero for R > r_c + delta."""
    calc = MLPCalculator(ZBL(["Ta"], 2.0, 3.0), device="cpu")
    assert exact_zero_radius(calc) == pytest.approx(3.0)
    ta = bulk("Ta", "bcc", a=3.30, cubic=True).repeat(4)   # width/2 = 6.6 > 3.2 + 3
    ta.rattle(0.05, rng=rng)
    res = locality_test(ta, calc, [2.5, 2.95, 3.2], trials=2, rng=rng)
    assert res.zero_beyond == pytest.approx(3.1)
    assert np.all(res.values[:2] > 0)
    assert np.all(res.values[2] == 0.0)


def test_ta06a_snap_many_body_range(ta06a_path, rng, one_thread):
    """Ta06A (ZBL 4.8 Å + SNAP r_c = 4.67637 Å): zero only beyond 2 r_c + delta."""
    calc = MLPCalculator.from_file(ta06a_path, device="cpu")
    rc_snap = 4.67637
    assert calc.model.cutoff == pytest.approx(4.8)           # the ZBL part
    assert exact_zero_radius(calc) == pytest.approx(2 * rc_snap)
    ta = bulk("Ta", "bcc", a=3.30, cubic=True).repeat(9)    # 1458 atoms, width/2 = 14.85
    ta.rattle(0.05, rng=rng)
    calls = []
    batch = calc.calculate_batch

    def spy(images, properties):
        calls.append(len(images))
        return batch(images, properties)

    calc.calculate_batch = spy
    radii = [4.0, 6.0, 8.0, 9.2, 9.5]
    res = locality_test(ta, calc, radii, trials=2, rng=rng)
    assert calls[0] == 1 and sum(calls[1:]) == 10 and len(calls) < 11  # batched
    assert res.zero_beyond == pytest.approx(2 * rc_snap + 0.1)
    rms = dict(zip(res.radii.tolist(), res.rms, strict=True))
    # beyond r_c + delta a pair potential is exactly 0; the many-body SNAP is not
    for r in (6.0, 8.0, 9.2):
        assert np.all(res.values[res.radii == r] > 0)
    assert rms[4.0] > rms[6.0] > rms[8.0] > rms[9.2] > 0
    assert rms[6.0] > 1e-3
    assert np.all(res.values[res.radii == 9.5] == 0.0)       # > 2 r_c + delta = 9.45


def test_suggest_cutoff(emt_result):
    assert suggest_cutoff(emt_result, 1e-6) == 8.0
    assert emt_result.suggest_cutoff(1.0) == 3.0
    assert suggest_cutoff(emt_result, 1e-14) is None
    fake = LocalityResult(radii=np.array([2.0, 3.0, 4.0, 5.0]),
                          rms=np.array([1e-2, 1e-7, 1e-5, 0.0]), max=np.zeros(4),
                          values=np.zeros((4, 1, 1)), reference_forces=np.zeros((1, 3)),
                          centers=np.array([0]), n_perturbed=np.zeros((4, 1), dtype=int),
                          mode="random", delta=0.1)
    assert suggest_cutoff(fake, 1e-6) == 5.0       # must stay below: not 3.0
    with pytest.raises(ValueError, match="tol"):
        suggest_cutoff(fake, 0.0)


def test_plot_and_dict(lj_result, tmp_path):
    pytest.importorskip("matplotlib")
    fig = plot_locality(lj_result, tmp_path / "loc.png")
    assert (tmp_path / "loc.png").stat().st_size > 0
    assert fig.axes[0].get_yscale() == "log"
    doc = lj_result.as_dict()
    assert doc["radii"] == lj_result.radii.tolist() and doc["mode"] == "random"


def test_bad_input(cu):
    lj = _lj()
    with pytest.raises(ValueError, match=r"perpendicular widths \[21\.66"):
        locality_test(cu, lj, [3.0, 11.0])
    with pytest.raises(ValueError, match="repeat"):           # suggests a supercell
        locality_test(bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), lj, [4.0])
    with pytest.raises(ValueError, match=r"2 \(R_max \+ cutoff\)"):   # + model cutoff
        locality_test(bulk("Ta", "bcc", a=3.3, cubic=True).repeat(4),
                      MLPCalculator(ZBL(["Ta"], 2.0, 3.0), device="cpu"), [4.0])
    with pytest.raises(ValueError, match="delta"):
        locality_test(cu, lj, [3.0], delta=-0.1)
    with pytest.raises(ValueError, match="radii"):
        locality_test(cu, lj, [0.0, 3.0])
    with pytest.raises(ValueError, match="radii"):
        locality_test(cu, lj, [-1.0])
    with pytest.raises(ValueError, match="radii"):
        locality_test(cu, lj, [])
    with pytest.raises(ValueError, match="out of range"):
        locality_test(cu, lj, [3.0], center=len(cu))
    with pytest.raises(ValueError, match="out of range"):
        locality_test(cu, lj, [3.0], center=[0, -len(cu) - 1])
    with pytest.raises(ValueError, match="trials"):
        locality_test(cu, lj, [3.0], trials=0)
    with pytest.raises(ValueError, match="mode"):
        locality_test(cu, lj, [3.0], mode="thermal")
    with pytest.raises(ValueError, match="snapshot 0"):
        locality_test(cu, lj, [3.0], mode=[cu[:-1]])
