"""Coordination numbers, phase labels, nuclei, X-ray powder patterns and the metad plot."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, make_supercell

from ase_mlp.analysis.phases import (
    AB_PHASES,
    coordination_numbers,
    find_nuclei,
    nucleus_sizes,
    phase_labels,
    plot_metad,
    powder_pattern,
    read_metad_log,
    xrd_along_trajectory,
    xrd_pattern,
)


def beta_tin(a=4.686, c=2.585, symbol="Si"):
    """Conventional tI4 cell of beta-tin (I4_1/amd, origin choice 1)."""
    return Atoms(symbol * 4, cell=[a, a, c], pbc=True,
                 scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0, 0.5, 0.25), (0.5, 0, 0.75)])


GAN = {
    "wurtzite": bulk("GaN", "wurtzite", a=3.19, c=5.19),
    "zincblende": bulk("GaN", "zincblende", a=4.5),
    "rocksalt": bulk("GaN", "rocksalt", a=4.22),
    "CsCl": bulk("GaN", "cesiumchloride", a=2.66),
}


@pytest.mark.parametrize("phase,cn", [("wurtzite", 4), ("zincblende", 4), ("rocksalt", 6),
                                      ("CsCl", 8)])
def test_gan_phases(phase, cn):
    for atoms in (GAN[phase], GAN[phase].repeat((2, 2, 2))):
        lab = phase_labels(atoms, "AB")
        assert np.all(lab.coordination == cn)
        assert np.all(lab.labels == phase), lab.counts()
        assert lab.names == AB_PHASES
        c = coordination_numbers(atoms)                      # default: covalent radii
        assert np.all(c.of("N")[atoms.numbers == 31] == cn)   # every Ga sees cn N
        assert np.all(c.of("Ga")[atoms.numbers == 7] == cn)
        c = coordination_numbers(atoms, {("Ga", "N"): 2.5})
        assert np.all(c.total == cn) and c.species == ["Ga", "N"]


def test_triclinic_cell_and_rattle():
    # the same zincblende crystal in a skewed (unreduced) supercell, and a rattled wurtzite
    zb = make_supercell(GAN["zincblende"], [[1, 2, 0], [0, 1, 0], [-1, 0, 2]])
    assert abs(zb.cell.angles() - 90).max() > 10
    assert np.all(phase_labels(zb, "AB").labels == "zincblende")
    wz = GAN["wurtzite"].repeat((3, 3, 2))
    wz.rattle(0.05, seed=1)
    assert np.all(phase_labels(wz, "AB").labels == "wurtzite")


def test_group14_diamond_hex_diamond_beta_tin():
    dia = bulk("Si", "diamond", a=5.43).repeat(2)
    lab = phase_labels(dia, "group14")
    assert np.all(lab.coordination == 4) and np.all(lab.labels == "cubic diamond")
    lons = bulk("SiSi", "wurtzite", a=3.84, c=6.27)
    assert np.all(phase_labels(lons, "group14").labels == "hexagonal diamond")
    bt = beta_tin().repeat((2, 2, 3))
    c = coordination_numbers(bt)
    assert np.all(c.total == 6)
    # the 4 + 2 shell: 4 neighbours within 2.5 Å, all 6 within 2.6 Å
    assert np.all(coordination_numbers(bt, 2.5).total == 4)
    lab = phase_labels(bt, "group14")
    assert np.all(lab.labels == "beta-tin")
    # a cutoff between the 4 and the 2 makes beta-tin 4-fold (a flattened diamond network,
    # all bonds staggered) but not tetrahedral: q = 0.69 < q_min
    lab = phase_labels(bt, "group14", 2.5)
    assert np.all(lab.coordination == 4) and np.all(lab.labels == "other")
    assert np.all(phase_labels(bt, "group14", 2.5, q_min=0.6).labels == "cubic diamond")


def polytype(stacking: str, a: float = 3.19) -> Atoms:
    """GaN polytype with ideal tetrahedra from a stacking sequence of A/B/C close-packed layers."""
    d = a * np.sqrt(2 / 3)                                            # layer spacing
    shift = {"A": (0, 0), "B": (1 / 3, 2 / 3), "C": (2 / 3, 1 / 3)}
    cell = np.array([[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, d * len(stacking)]])
    frac = []
    for k, letter in enumerate(stacking):
        x, y = shift[letter]
        frac += [(x, y, k / len(stacking)), (x, y, (k + 0.75) / len(stacking))]
    return Atoms("GaN" * len(stacking), scaled_positions=frac, cell=cell, pbc=True)


@pytest.mark.parametrize("stacking,n_hex", [("ABC", 0), ("AB", 2), ("ABCB", 2), ("ABCACB", 2)])
def test_polytypes_hexagonal_fraction(stacking, n_hex):
    # a layer is hexagonal (wurtzite-like, one eclipsed bond) when its two neighbouring layers
    # have the same letter (Jagodzinski h/c notation): 4H = (hc)2, 6H = (hcc)2
    atoms = polytype(stacking)
    lab = phase_labels(atoms.repeat((2, 2, 2)), "AB")
    assert np.all(lab.coordination == 4)
    n = len(stacking)
    counts = lab.counts()
    assert counts["wurtzite"] == 2 * 8 * n_hex                        # Ga + N, 8 repeats
    assert counts["zincblende"] == 2 * 8 * (n - n_hex)


def test_twin_planes_are_wurtzite_nuclei():
    # zincblende with two twin planes per cell (at layers 0 and 6): each twin plane is one
    # hexagonal layer, i.e. a 2D wurtzite "nucleus" of 2 atoms per in-plane cell
    atoms = polytype("ABCABCACBACB").repeat((3, 3, 1))
    lab = phase_labels(atoms, "AB")
    assert lab.counts()["wurtzite"] == 2 * 2 * 9
    nuclei = find_nuclei(atoms, lab, "wurtzite", cutoff=3.3)
    assert [n.size for n in nuclei] == [18, 18]
    z = atoms.positions[nuclei[0], 2]
    assert np.ptp(z) < 2.0                                            # one layer (Ga + N)
    sizes = nucleus_sizes([atoms, polytype("ABC").repeat((3, 3, 1))], "wurtzite", 3.3)
    assert [list(x) for x in sizes] == [[18, 18], []]


def test_coordination_cutoff_dict_and_errors():
    rs = GAN["rocksalt"].repeat(2)
    c = coordination_numbers(rs, {("N", "Ga"): 2.5, ("Ga", "Ga"): 3.1})
    ga = rs.numbers == 31
    assert np.all(c.of("N")[ga] == 6) and np.all(c.of("Ga")[ga] == 12)
    assert np.all(c.of("Ga")[~ga] == 6) and np.all(c.of("N")[~ga] == 0)  # N-N missing: unbonded
    with pytest.raises(ValueError, match="two species"):
        phase_labels(bulk("Si", "diamond", a=5.43), "AB")
    with pytest.raises(ValueError, match="kind"):
        phase_labels(rs, "ABC")


def test_find_nuclei_and_periodic_join():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((6, 6, 6))   # 864 atoms, NN 2.55 Å
    frac = atoms.get_scaled_positions()
    labels = np.zeros(len(atoms), dtype=int)
    box1 = np.all(np.abs(frac - 0.3) < 0.09, axis=1)                  # cube around the centre
    # a cube that straddles the x = 0 boundary: two halves joined through the periodic wrap
    box2 = (np.minimum(frac[:, 0], 1 - frac[:, 0]) < 0.09) & np.all(
        np.abs(frac[:, 1:] - 0.75) < 0.09, axis=1)
    labels[box1] = 1
    labels[box2] = 1
    clusters = find_nuclei(atoms, labels, 1, cutoff=2.7)
    assert [c.size for c in clusters] == sorted([box1.sum(), box2.sum()], reverse=True)
    assert set(clusters[0]) | set(clusters[1]) == set(np.flatnonzero(labels == 1))
    # the two halves of box2 are disconnected without periodicity along x
    atoms.pbc = [False, True, True]
    assert len(find_nuclei(atoms, labels, 1, cutoff=2.7)) == 3
    assert find_nuclei(atoms, labels, 7, cutoff=2.7) == []


def test_nucleus_sizes_rocksalt_in_zincblende():
    # a rocksalt frame and a zincblende frame: the whole rocksalt cell is one cluster
    frames = [GAN["zincblende"].repeat(2), GAN["rocksalt"].repeat(2)]
    sizes = nucleus_sizes(frames, "rocksalt", cutoff=2.5)
    assert sizes[0].size == 0 and list(sizes[1]) == [16]


def test_powder_pattern_fcc_cu():
    pat = powder_pattern(bulk("Cu", "fcc", a=3.615, cubic=True), (20, 90), 1.5406)
    expected = {(1, 1, 1): 43.32, (2, 0, 0): 50.45, (2, 2, 0): 74.13}
    for hkl, tt in expected.items():
        k = np.argmin(np.abs(pat.peak_two_theta - tt))
        assert abs(pat.peak_two_theta[k] - tt) < 0.05
        assert tuple(sorted(np.abs(pat.peak_hkl[k]), reverse=True)) == hkl
    assert list(pat.multiplicity[:3]) == [8, 6, 12]
    # systematic absences of fcc: (100) at 24.6 deg and (110) at 35.1 deg
    assert pat.intensity_at(24.6, 0.5) == 0 and pat.intensity_at(35.1, 0.5) == 0
    ratio = pat.intensity_at(50.45) / pat.intensity_at(43.32)
    assert 0.4 < ratio < 0.6
    assert pat.intensity.max() == pytest.approx(100)
    # the primitive cell gives the same pattern
    prim = powder_pattern(bulk("Cu", "fcc", a=3.615), (20, 90), 1.5406)
    np.testing.assert_allclose(prim.peak_two_theta, pat.peak_two_theta, atol=1e-5)
    np.testing.assert_allclose(prim.peak_intensity, pat.peak_intensity, rtol=1e-8)


def test_powder_rocksalt_vs_zincblende():
    a = 4.5
    rs = powder_pattern(bulk("GaN", "rocksalt", a=a), (20, 90))
    zb = powder_pattern(bulk("GaN", "zincblende", a=a), (20, 90))
    t111, t200 = 2 * np.degrees(np.arcsin(1.5406 * np.sqrt([3, 4]) / (2 * a)))
    # F(111) = 4 (f_Ga - f_N), F(200) = 4 (f_Ga + f_N) in rocksalt, but
    # |F(111)|^2 = 16 (f_Ga^2 + f_N^2), F(200) = 4 (f_Ga - f_N) in zincblende
    r_rs = rs.intensity_at(t200) / rs.intensity_at(t111)
    r_zb = zb.intensity_at(t200) / zb.intensity_at(t111)
    assert r_rs > 0.8 and r_zb < 0.5
    tt = np.linspace(20, 90, 701)
    xs = xrd_along_trajectory([bulk("GaN", "rocksalt", a=a), bulk("GaN", "zincblende", a=a)], tt)
    assert xs.shape == (2, 701)
    assert np.abs(xs[0] - xs[1]).max() > 20


def test_labels_roundtrip_extxyz(tmp_path):
    from ase.io import read, write

    atoms = GAN["wurtzite"].repeat((2, 2, 1))
    atoms.arrays["phase"] = phase_labels(atoms, "AB").codes
    write(tmp_path / "s.extxyz", atoms)
    back = read(tmp_path / "s.extxyz")
    assert np.all(back.arrays["phase"] == AB_PHASES.index("wurtzite"))


def test_xrd_pattern_powder_grid_and_errors():
    tt = np.linspace(30, 60, 301)
    y = xrd_pattern(bulk("Cu", "fcc", a=3.615), tt)
    assert abs(tt[np.argmax(y)] - 43.32) < 0.11
    with pytest.raises(ValueError, match="method"):
        xrd_pattern(bulk("Cu"), tt, method="laue")
    with pytest.raises(ValueError, match="two_theta_range"):
        powder_pattern(bulk("Cu"), (90, 10))


def test_xrd_debye_cluster():
    cluster = bulk("Cu", "fcc", a=3.615, cubic=True).repeat(3)
    cluster.pbc = False
    tt = np.linspace(30, 60, 121)
    y = xrd_pattern(cluster, tt, method="debye")
    assert y.shape == tt.shape and np.all(np.isfinite(y))
    assert abs(tt[np.argmax(y)] - 43.3) < 1.5                         # (111) of a finite piece
    with pytest.raises(ValueError, match="periodic"):
        powder_pattern(cluster)


def test_plot_metad(tmp_path):
    pytest.importorskip("matplotlib")
    n = 20
    rng = np.random.default_rng(0)
    hist = {"metastep": np.arange(n), "enthalpy": -100 + rng.normal(size=n).cumsum(),
            "volume": 300 - np.arange(n), "cv": rng.normal(size=(n, 6))}
    fig = plot_metad(hist, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 1000
    assert len(fig.axes) == 3 and len(fig.axes[2].lines) == 6
    log = tmp_path / "metad.log"
    cols = np.column_stack([hist["metastep"], hist["enthalpy"], hist["volume"], hist["cv"]])
    np.savetxt(log, cols, header="metastep H(eV) V[A^3] cv1 cv2 cv3 cv4 cv5 cv6")
    h = read_metad_log(log)
    np.testing.assert_allclose(h["enthalpy"], hist["enthalpy"])
    np.testing.assert_allclose(h["cv6"], hist["cv"][:, 5])
    fig = plot_metad(log, tmp_path / "m2.png")
    assert (tmp_path / "m2.png").stat().st_size > 1000
    assert fig.axes[0].get_ylabel() == "H (eV)"


def test_plot_metad_reads_cell_metadynamics_output(tmp_path):
    """The log and the history of a real CellMetadynamics run (EMT Cu, T = 0) plot as is."""
    pytest.importorskip("matplotlib")
    from ase.calculators.emt import EMT

    from ase_mlp.analysis.phases import _history_arrays, plot_metad
    from ase_mlp.dynamics import CellMetadynamics

    atoms = bulk("Cu", "fcc", a=3.7)
    atoms.calc = EMT()
    log = tmp_path / "metad.log"
    dyn = CellMetadynamics(atoms, pressure_GPa=5, thermostat=None, gaussian_height=0.05,
                           gaussian_width=0.05, rng=0, logfile=str(log))
    dyn.run(4)
    for src in (str(log), dyn.history):
        step, enth, vol, cv = _history_arrays(src)
        assert cv.shape == (len(step), 6)
        np.testing.assert_allclose(enth, [r["H"] for r in dyn.history], rtol=1e-6)
        np.testing.assert_allclose(vol, [r["volume"] for r in dyn.history], rtol=1e-6)
    out = plot_metad(dyn.history, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0 and out is not None
