"""Active learning: selection in the trust window, diversity, generations on EMT Cu, resume."""

import json

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md import velocitydistribution as vd
from ase.md.langevin import Langevin

from ase_mlp.calculators.mlp import MLPCalculator
from ase_mlp.descriptors.bispectrum import Bispectrum
from ase_mlp.models import ZBL, Committee, SumModel
from ase_mlp.models.snap import LinearSNAP
from ase_mlp.training import compute_metrics, read_frames
from ase_mlp.training.active import ActiveLearner, score_frames, select_frames
from ase_mlp.training.data import label, labels_of


LOG_KEYS = {"generation", "n_train", "n_train_after", "n_candidates", "n_in_window",
            "n_selected", "n_labelled", "n_stopped", "metric", "window", "disagreement",
            "validation", "selected_error", "fit_seed", "seconds", "rng_state"}
LOWER, UPPER = 0.01, 0.5


def snap():
    return LinearSNAP(Bispectrum(["Cu"], twojmax=4, rcutfac=4.5, radii=[0.5]))


def fcc():
    return bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)


def emt_label(atoms):
    a = atoms.copy()
    a.calc = EMT()
    a.get_potential_energy()
    a.get_stress()
    return label(a, labels_of(a))


@pytest.fixture(scope="module")
def cu_data():
    rng = np.random.default_rng(7)
    train = []
    for _ in range(8):  # ~300 K-like rattles
        a = fcc()
        a.rattle(0.05, rng=rng)
        train.append(emt_label(a))
    # hot reference frames: EMT Langevin MD at 1000 K (validation + a fixed test set)
    hot = fcc()
    hot.calc = EMT()
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(hot, temperature_K=1000, rng=rng)
    vd.Stationary(hot)
    dyn = Langevin(hot, 4 * units.fs, temperature_K=1000, friction=0.05 / units.fs,
                   fixcm=False, rng=rng)
    dyn.run(50)
    frames = []
    for _ in range(12):
        dyn.run(10)
        frames.append(emt_label(hot))
    return {"train": train, "validation": frames[:4], "test": frames[4:]}


@pytest.fixture(scope="module")
def learned(cu_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("active")
    learner = ActiveLearner(snap(), EMT(), cu_data["train"], cu_data["validation"],
                            committee=4, workdir=workdir, rng=1)
    log = learner.run(2, seeds=[fcc()], n_select=6, md_steps=80, temperature_K=1000,
                      timestep=4.0, sample_every=4, lower=LOWER, upper=UPPER, progress=False)
    return learner, log, workdir


# ------------------------------------------------------------------ select_frames
def _structures(n, rng):
    out = []
    for _ in range(n):
        a = fcc()
        a.rattle(0.05, rng=rng)
        out.append(a)
    return out


def test_select_frames_window_and_n_select(rng):
    cands = _structures(8, rng)
    raw = [0.01, 0.06, 0.2, 0.49, 0.5, 0.7, np.nan, 0.3]
    sel, scores = select_frames(cands, None, n_select=2, lower=0.05, upper=0.5,
                                diversity=False, scores=raw, rng=rng)
    assert [a.info["al_index"] for a in sel] == [3, 7]  # highest two inside the window
    assert [a.info["al_score"] for a in sel] == [0.49, 0.3]
    assert np.isinf(scores[6]) and scores[5] == 0.7 and len(scores) == 8
    assert all(a.calc is None for a in sel)
    np.testing.assert_allclose(sel[0].positions, cands[3].positions)
    # more requested than inside the window: all of them, none outside
    sel, _ = select_frames(cands, None, n_select=10, lower=0.05, upper=0.5, scores=raw,
                           rng=rng)
    assert sorted(a.info["al_index"] for a in sel) == [1, 2, 3, 7]
    sel, _ = select_frames(cands, None, n_select=0, scores=raw)
    assert sel == []
    sel, _ = select_frames(cands, None, n_select=3, lower=0.8, upper=1.0, scores=raw)
    assert sel == []
    with pytest.raises(ValueError, match="lower < upper"):
        select_frames(cands, None, n_select=1, lower=0.5, upper=0.5, scores=raw)
    with pytest.raises(ValueError, match="metric"):
        select_frames(cands, None, n_select=1, scores=raw, metric="nope")


@pytest.mark.parametrize("fingerprint", ["bispectrum", "distances"])
def test_select_frames_diversity_prefers_distinct_structures(rng, fingerprint):
    bases = []
    a = fcc()
    a.rattle(0.03, rng=rng)
    bases.append(a)
    b = fcc()
    b.set_cell(b.cell * 1.04, scale_atoms=True)
    b.rattle(0.03, rng=rng)
    bases.append(b)
    c = fcc()
    c.rattle(0.15, rng=rng)
    bases.append(c)
    cands, scores, group = [], [], []
    for g, base in enumerate(bases):
        for k in range(3):  # near-duplicates (consecutive MD frames)
            d = base.copy()
            d.rattle(1e-3, rng=rng)
            cands.append(d)
            scores.append(0.4 - 0.1 * g - 0.01 * k)
            group.append(g)
    model = Committee(snap(), snap())  # descriptors only: coefficients do not matter
    sel, _ = select_frames(cands, model, n_select=3, lower=0.05, upper=0.5, scores=scores,
                           fingerprint=fingerprint, rng=rng)
    picked = [a.info["al_index"] for a in sel]
    assert picked[0] == 0  # FPS starts from the highest disagreement
    assert sorted(group[k] for k in picked) == [0, 1, 2]
    sel, _ = select_frames(cands, model, n_select=3, lower=0.05, upper=0.5, scores=scores,
                           diversity=False)
    assert [a.info["al_index"] for a in sel] == [0, 1, 2]  # all from one structure


def test_scores_from_committee(learned, cu_data):
    learner, _, _ = learned
    calc = MLPCalculator(learner.model, device="cpu")
    frames = cu_data["test"][:3]
    s = score_frames(frames, calc)
    for a, v in zip(frames, s, strict=True):
        b = a.copy()
        b.calc = calc
        assert v == pytest.approx(b.calc.get_property("forces_std", b).max(), rel=1e-10)
    e = score_frames(frames, calc, metric="energy_std")
    assert np.all(e >= 0) and np.all(np.isfinite(e))
    sel, scores = select_frames(frames, calc, n_select=2, lower=0.0, upper=10.0)
    np.testing.assert_allclose(scores, s)
    assert len(sel) == 2


# --------------------------------------------------------------------- generations
def test_active_learning_generations(learned, cu_data):
    learner, log, workdir = learned
    assert len(log) == 2 and [e["generation"] for e in log] == [0, 1]
    for e in log:
        assert set(e) == LOG_KEYS
        assert e["window"] == [LOWER, UPPER]
        assert 0 < e["n_selected"] <= 6 and e["n_labelled"] == e["n_selected"]
        assert e["n_candidates"] >= e["n_in_window"] >= e["n_selected"]
        sel = np.array(e["disagreement"]["selected"])
        assert np.all((sel >= LOWER) & (sel < UPPER))
        assert e["n_train_after"] == e["n_train"] + e["n_labelled"]
        assert e["validation"]["forces"]["rmse"] > 0
        assert e["selected_error"]["n_frames"] == e["n_labelled"]
    assert log[1]["n_train"] == log[0]["n_train_after"]
    assert len(learner.train) == 8 + sum(e["n_labelled"] for e in log)
    # labelled frames are hot configurations, labelled by EMT and saved
    new = learner.train[8:]
    assert all(a.info["group"] == "active" for a in new)
    for a in new[:2]:
        ref = emt_label(a)
        np.testing.assert_allclose(labels_of(a).forces, labels_of(ref).forces, atol=1e-10)
    # files: one log line per generation, every labelled frame on disk
    lines = (workdir / "active_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["generation"] for x in lines] == [0, 1]
    saved = read_frames(workdir / "labelled.extxyz")
    assert len(saved) == len(new)
    np.testing.assert_allclose(labels_of(saved[-1]).forces, labels_of(new[-1]).forces,
                               atol=1e-8)
    assert (workdir / "model_gen1.pt").exists() and (workdir / "model_final.pt").exists()
    # the hot test set (never trained on) gets better: gen-0 committee vs final one
    test = cu_data["test"]
    rmse0 = compute_metrics(learner.committees[0][1], test)["forces"]["rmse"]
    rmse_end = compute_metrics(learner.model, test)["forces"]["rmse"]
    assert rmse_end < rmse0
    assert learner.model is not learner.committees[-1][1]


def test_explore_stops_exploding_trajectory(learned):
    learner, _, _ = learned
    calc = MLPCalculator(learner.model, device="cpu")
    cands, scores, stopped = learner.explore(
        calc, [fcc(), fcc()], md_steps=30, temperature_K=1000, timestep=4.0, sample_every=5,
        upper=1e-3)
    assert stopped == 2
    # each trajectory: the perfect-lattice frame (no disagreement), then the stopping frame
    assert len(cands) == 4 and np.all(scores[1::2] >= 1e-3) and np.all(scores[::2] < 1e-3)
    assert all(a.info["al_step"] < 30 for a in cands)


def test_resume_continues(learned, cu_data):
    learner, log, workdir = learned
    n_labelled = len(learner.train) - 8
    with pytest.raises(FileExistsError, match="resume"):
        ActiveLearner(snap(), EMT(), cu_data["train"], workdir=workdir).run(
            1, seeds=[fcc()], md_steps=4, progress=False)
    again = ActiveLearner(snap(), EMT(), cu_data["train"], cu_data["validation"],
                          workdir=workdir, rng=123).resume()
    assert again.generation == 2 and len(again.log) == 2
    assert len(again.train) == 8 + n_labelled and len(again.labelled) == n_labelled
    assert again.rng.bit_generator.state == log[-1]["rng_state"]
    again.resume()  # a second resume adds nothing twice
    assert len(again.train) == 8 + n_labelled
    new_log = again.run(1, seeds=[fcc()], n_select=2, md_steps=12, temperature_K=1000,
                        timestep=4.0, sample_every=4, lower=LOWER, upper=UPPER,
                        final_fit=False, progress=False)
    assert new_log[0]["generation"] == 2 and new_log[0]["n_train"] == 8 + n_labelled
    lines = (workdir / "active_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["generation"] for x in lines] == [0, 1, 2]
    saved = read_frames(workdir / "labelled.extxyz")
    assert len(saved) == n_labelled + new_log[0]["n_labelled"]
    assert {a.info["al_generation"] for a in saved} <= {0, 1, 2}


def test_sum_model_with_baseline_reports_spread(cu_data):
    """ZBL + committee: the calculator reports the committee's own spread."""
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.training import fit

    committee = fit(snap(), cu_data["train"], committee=3, seed=1)
    fitted = SumModel(ZBL(["Cu"], inner=1.0, outer=2.0), committee)
    frames = cu_data["train"][:2]
    both = MLPCalculator(fitted, device="cpu").calculate_batch(frames, ("energy", "forces"))
    alone = MLPCalculator(committee, device="cpu").calculate_batch(frames, ("energy", "forces"))
    for b, a in zip(both, alone, strict=True):
        np.testing.assert_allclose(b["forces_std"], a["forces_std"], rtol=1e-12, atol=1e-14)
        assert b["energy_std"] == pytest.approx(a["energy_std"], rel=1e-12)
    ActiveLearner(fitted, EMT(), cu_data["train"])  # accepted
