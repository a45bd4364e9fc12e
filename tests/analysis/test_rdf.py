"""Partial RDFs, coordination numbers and bond-angle distributions (methods.md section 5: R2)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.geometry.rdf import get_rdf

from ase_mlp.analysis import angle_distribution, coordination_number, partial_rdf, rdf


def random_crystal(rng, n=(20, 15, 10), symbols=("Na", "Cl", "K")):
    cell = np.array([[9.0, 0.0, 0.0], [1.5, 10.0, 0.0], [-1.0, 2.0, 11.0]])
    syms = [s for s, k in zip(symbols, n, strict=True) for _ in range(k)]
    atoms = Atoms(syms, scaled_positions=rng.random((len(syms), 3)), cell=cell, pbc=True)
    return atoms[rng.permutation(len(atoms))]      # interleave the species


def test_r2_nacl_coordination_numbers():
    """R2: NaCl a = 5.64, 3x3x3 cubic: n_NaCl(3.3) = n_ClNa = 6, n_NaNa(4.5) = n_ClCl = 12."""
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(3)
    r, g = partial_rdf(nacl, rmax=5.0, nbins=500)
    rho = 108 / nacl.get_volume()                  # 108 Na and 108 Cl
    for pair, radius, expected in [(("Na", "Cl"), 3.3, 6.0), (("Cl", "Na"), 3.3, 6.0),
                                   (("Na", "Na"), 4.5, 12.0), (("Cl", "Cl"), 4.5, 12.0)]:
        r_n, n = coordination_number(r, g[pair], rho)
        assert np.interp(radius, r_n, n) == pytest.approx(expected, abs=1e-10)
    # No neighbour below the nearest-neighbour distance a/2 = 2.82 Å.
    r_n, n = coordination_number(r, g["Na", "Cl"], rho)
    assert np.all(n[r_n < 2.8] == 0)


def test_partial_rdf_matches_ase(rng):
    a = random_crystal(rng)
    b = a.copy()
    b.rattle(0.3, rng=rng)
    b.wrap()
    frames = [a, b]
    r, g = partial_rdf(frames, rmax=4.0, nbins=80)
    assert len(g) == 9
    for (x, y), gxy in g.items():
        ref, rr = get_rdf(frames, 4.0, 80, elements=(x, y))
        np.testing.assert_allclose(gxy, ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r, rr, atol=1e-14)
    _, gt = rdf(frames, 4.0, 80)
    np.testing.assert_allclose(gt, get_rdf(frames, 4.0, 80)[0], rtol=0, atol=1e-10)


def test_sum_rule_and_symmetry(rng):
    atoms = random_crystal(rng)
    r, g = partial_rdf(atoms, rmax=4.4, nbins=50)
    _, gt = rdf(atoms, 4.4, 50)
    counts = {"Na": 20, "Cl": 15, "K": 10}
    total = sum(counts[x] * counts[y] / 45**2 * gxy for (x, y), gxy in g.items())
    np.testing.assert_allclose(total, gt, atol=1e-12)
    np.testing.assert_array_equal(g["Na", "K"], g["K", "Na"])


def test_ideal_gas_self_pair_limit(rng):
    """Uncorrelated points: g_ab = 1 and g_aa = (N_a - 1)/N_a (LAMMPS/ASE convention)."""
    cell = np.eye(3) * 10.0
    frames = [Atoms("Ar4Kr6", scaled_positions=rng.random((10, 3)), cell=cell, pbc=True)
              for _ in range(2000)]
    r, g = partial_rdf(frames, rmax=4.9, nbins=10, pairs=[("Ar", "Ar"), ("Ar", "Kr")])
    assert list(g) == [("Ar", "Ar"), ("Ar", "Kr")]
    # Shell-volume weighted means pool all pairs: about 11800 Ar-Ar and 23600 Ar-Kr pairs,
    # i.e. standard errors of 0.007 and 0.0065, so 0.03 is a 4-sigma tolerance.
    assert np.average(g["Ar", "Ar"], weights=r**2) == pytest.approx(0.75, abs=0.03)
    assert np.average(g["Ar", "Kr"], weights=r**2) == pytest.approx(1.0, abs=0.03)


def test_rmax_beyond_half_cell_equals_supercell(rng):
    """With periodic images (own images included) a small cell gives the supercell RDF."""
    small = random_crystal(rng, n=(6, 5, 3))
    assert min(small.cell.lengths()) < 2 * 6.0
    r, g = partial_rdf(small, rmax=6.0, nbins=60)
    big = small.repeat(2)
    for (x, y), gxy in g.items():
        ref, _ = get_rdf(big, 6.0, 60, elements=(x, y))
        np.testing.assert_allclose(gxy, ref, rtol=0, atol=1e-10)


def test_coordination_number_grids():
    rho = 0.05
    r = (np.arange(100) + 0.5) * 0.05                  # histogram midpoints
    r_n, n = coordination_number(r, np.ones_like(r), rho)
    np.testing.assert_allclose(r_n, (np.arange(100) + 1) * 0.05)
    np.testing.assert_allclose(n, 4 / 3 * np.pi * rho * r_n**3, rtol=1e-12)
    r2 = np.linspace(0.1, 5.0, 2000)                   # any other grid: trapezoid from 0
    r_n2, n2 = coordination_number(r2, np.ones_like(r2), rho)
    np.testing.assert_array_equal(r_n2, r2)
    np.testing.assert_allclose(n2[-1], 4 / 3 * np.pi * rho * 5.0**3, rtol=1e-5)


def test_angle_distribution_fcc():
    """fcc nearest neighbours: 60, 90, 120, 180 degrees with weights 24 : 12 : 24 : 6 (of 66)."""
    expected = {60: 24 / 66, 90: 12 / 66, 120: 24 / 66, 180: 6 / 66}
    for atoms in (bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2),
                  bulk("Cu", "fcc", a=3.61)):              # 1-atom cell: neighbours are images
        theta, p = angle_distribution(atoms, "Cu", "Cu", rcut=3.0, nbins=180)
        dtheta = theta[1] - theta[0]
        assert np.sum(p) * dtheta == pytest.approx(1.0, abs=1e-12)
        for angle, weight in expected.items():
            window = np.abs(theta - angle) < 2
            assert np.sum(p[window]) * dtheta == pytest.approx(weight, abs=1e-12)


def test_angle_distribution_cross_species():
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    theta, p = angle_distribution(nacl, "Na", "Cl", rcut=3.0, nbins=36)
    dtheta = theta[1] - theta[0]
    # octahedron: 12 pairs at 90 degrees, 3 at 180 degrees
    assert np.sum(p[np.abs(theta - 90) < 5]) * dtheta == pytest.approx(12 / 15, abs=1e-12)
    assert np.sum(p[theta > 170]) * dtheta == pytest.approx(3 / 15, abs=1e-12)
    with pytest.warns(RuntimeWarning, match="no Cl-Na-Cl triplet"):
        _, p0 = angle_distribution(nacl, "Na", "Cl", rcut=2.0)
    assert not p0.any()


def test_bad_input_messages(rng):
    atoms = random_crystal(rng)
    with pytest.raises(ValueError, match=r"unknown species 'Cu' in pairs.*present: "):
        partial_rdf(atoms, 4.0, 10, pairs=[("Na", "Cu")])
    with pytest.raises(ValueError, match="two element symbols"):
        partial_rdf(atoms, 4.0, 10, pairs=[("Na", "Cl", "K")])
    with pytest.raises(ValueError, match="rmax must be a positive number"):
        partial_rdf(atoms, -1.0, 10)
    with pytest.raises(ValueError, match="nbins must be a positive integer"):
        partial_rdf(atoms, 4.0, 0)
    with pytest.raises(ValueError, match="frames is empty"):
        partial_rdf([], 4.0, 10)
    molecule = Atoms("H2O", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="needs a volume"):
        rdf(molecule, 3.0, 10)
    r, g = rdf(molecule, 3.0, 30, volume=100.0)         # explicit volume works
    assert np.sum(g > 0) == 2                           # distances 1 and sqrt(2)
    bad = atoms.copy()
    bad.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        partial_rdf(bad, 4.0, 10)
    with pytest.raises(ValueError, match="need chemical symbols"):
        partial_rdf(np.zeros((1, 3, 3)), 4.0, 10, cells=np.eye(3) * 5)
    with pytest.raises(ValueError, match=r"unknown species 'O' for center"):
        angle_distribution(atoms, "O", "Na", 3.0)
    with pytest.raises(ValueError, match=r"r and g must be 1-D arrays of equal length"):
        coordination_number(np.arange(3.0), np.arange(4.0), 0.1)
    with pytest.raises(ValueError, match="rho_b must be a positive number"):
        coordination_number(np.arange(3.0), np.arange(3.0), 0.0)
