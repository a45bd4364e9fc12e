"""MLPCalculator: physics checks (finite differences, invariances), batching, errors."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError

from ase_mlp import testing
from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors import Bispectrum
from ase_mlp.models import NNSNAP, ZBL, LinearSNAP, QuadraticSNAP, SumModel


def make_model(kind, rng):
    if kind == "chem":
        d = Bispectrum(["W", "Be"], 4, 1.0, [3.0, 2.6], [1.0, 0.93], chemflag=True,
                       bnormflag=True, wselfallflag=True, switchinnerflag=True,
                       sinner=[1.2, 1.0], dinner=[0.8, 0.7])
        return LinearSNAP(d, rng.normal(size=(2, 1 + d.n_descriptors)) * 0.05)
    d = Bispectrum(["W", "Be"], 6, 4.8, [0.5, 0.42], [1.0, 0.96])
    K = d.n_descriptors
    if kind == "linear":
        return LinearSNAP(d, rng.normal(size=(2, 1 + K)) * 0.02)
    if kind == "quadratic":
        return QuadraticSNAP(d, rng.normal(size=(2, 1 + K + K * (K + 1) // 2)) * 1e-4)
    if kind == "nn":
        torch.manual_seed(0)  # test-local: module init only
        return NNSNAP(d, hidden=[8, 8])
    if kind == "zbl+snap":
        return SumModel(ZBL(["W", "Be"], 1.5, 2.3),
                        LinearSNAP(d, rng.normal(size=(2, 1 + K)) * 0.02))
    raise ValueError(kind)


def wbe(rng, reps=(2, 2, 2)):
    atoms = bulk("W", "bcc", a=3.17, cubic=True).repeat(reps)
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.08, 0], [0, 1, 0.05], [0.04, 0, 1]]),
                   scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.set_chemical_symbols(["W", "Be"] * (len(atoms) // 2))
    return atoms


@pytest.mark.parametrize("kind", ["linear", "quadratic", "nn", "chem", "zbl+snap"])
def test_finite_differences_and_invariance(kind, rng):
    calc = MLPCalculator(make_model(kind, rng), device="cpu")
    atoms = wbe(rng)
    atoms.calc = calc
    testing.check_forces(atoms, calc, h=1e-4, order=4, atol=1e-7, rtol=1e-7, indices=6, rng=rng)
    testing.check_stress(atoms, calc, h=1e-5, order=4, atol=1e-8, rtol=1e-7)
    testing.check_energies_sum(atoms, calc, atol=1e-10)
    testing.check_stresses_sum(atoms, calc, atol=1e-12)
    testing.check_invariance(atoms, calc, rng=rng, atol=1e-9)


def test_batch_equals_one_by_one(rng):
    """16 mixed structures (sizes 1..54, triclinic, open and periodic) in one call."""
    calc = MLPCalculator(make_model("zbl+snap", rng), device="cpu")
    images = testing.random_structures(["W", "Be"], 12, rng=rng, sizes=(1, 24), density=0.04,
                                       min_distance=1.9)
    images += [wbe(rng), wbe(rng, (3, 3, 3)), bulk("W", "bcc", a=3.17)]
    cluster = wbe(rng)[:10]
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    images.append(cluster)
    assert len(images) == 16
    res = testing.check_batch(images, calc, atol=1e-12, rtol=1e-12,
                              properties=("energy", "forces", "stress"))
    assert res is not None


def test_small_cell_many_images(rng):
    """A one-atom cell far shorter than the cutoff equals the same crystal as a supercell."""
    calc = MLPCalculator(make_model("linear", rng), device="cpu")
    prim = bulk("W", "bcc", a=3.17)
    big = prim.repeat((3, 3, 3))
    e1 = calc.get_potential_energy(prim)
    e27 = calc.get_potential_energy(big)
    assert e27 == pytest.approx(27 * e1, rel=1e-12)
    s1 = calc.get_stress(prim)
    np.testing.assert_allclose(calc.get_stress(big), s1, atol=1e-12)


def test_float32_close_to_float64(rng):
    model = make_model("linear", rng)
    atoms = wbe(rng)
    c64 = MLPCalculator(model, device="cpu")
    c32 = MLPCalculator(model, device="cpu", dtype=torch.float32)
    f64 = c64.get_forces(atoms)
    f32 = c32.get_forces(atoms.copy())
    assert next(model.parameters()).dtype == torch.float64  # the user's model is untouched
    np.testing.assert_allclose(f32, f64, atol=1e-4 * np.abs(f64).max())


def test_verlet_skin_rebuilds_rarely(rng):
    calc = MLPCalculator(make_model("linear", rng), device="cpu", skin=1.0)
    atoms = wbe(rng)
    ref = MLPCalculator(make_model("linear", np.random.default_rng(20261123)), device="cpu",
                        skin=0.0)
    ref.model.load_state_dict(calc.model.state_dict())
    for _ in range(6):
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        np.testing.assert_allclose(calc.get_forces(atoms), ref.get_forces(atoms), atol=1e-12)
    assert calc._verlet.n_builds < 6


def test_bad_input(rng):
    calc = MLPCalculator(make_model("linear", rng), device="cpu")
    with pytest.raises(ValueError, match="element 'Cu'.*not known"):
        calc.get_potential_energy(bulk("Cu", "fcc", a=3.6))
    nan = wbe(rng)
    nan.positions[3, 1] = np.nan
    with pytest.raises(ValueError, match="atom 3 has a non-finite position"):
        calc.get_potential_energy(nan)
    flat = Atoms("W2", positions=[[0, 0, 0], [1.5, 1.5, 0]], cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]],
                 pbc=True)
    with pytest.raises(ValueError, match="zero volume"):
        calc.get_potential_energy(flat)
    cluster = Atoms("W2", positions=[[0, 0, 0], [2.5, 0, 0]])
    assert np.isfinite(calc.get_potential_energy(cluster))
    with pytest.raises(PropertyNotImplementedError):
        calc.get_stress(cluster)
    with pytest.raises(TypeError):
        MLPCalculator("not a model")


def test_save_load_roundtrip(tmp_path, rng):
    from ase_mlp.models import load

    atoms = wbe(rng)
    for kind in ("linear", "quadratic", "nn", "chem", "zbl+snap"):
        model = make_model(kind, rng)
        path = tmp_path / f"{kind}.pt"
        model.save(path)
        again = load(path)
        assert type(again) is type(model)
        e0 = MLPCalculator(model, device="cpu").get_potential_energy(atoms.copy())
        calc = MLPCalculator.from_file(path, device="cpu")
        assert calc.get_potential_energy(atoms.copy()) == e0  # bit-identical


def test_load_errors(tmp_path, rng):
    from ase_mlp.models import load
    from ase_mlp.models.serialization import ModelFormatError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFormatError, match="bad.pt"):
        load(bad)
    torch.save({"format": "ase_mlp-model", "version": 1, "elements": ["W"]}, bad)
    with pytest.raises(ModelFormatError, match="missing key 'model'"):
        load(bad)
    torch.save({"format": "ase_mlp-model", "version": 99, "model": {}}, bad)
    with pytest.raises(ModelFormatError, match="version 99"):
        load(bad)
    model = make_model("linear", rng)
    model.save(bad)
    data = torch.load(bad, weights_only=True)
    data["model"]["class"] = "NoSuchModel"
    del data["checksum"]  # a hand-edited file keeping its checksum reads as corrupt instead
    torch.save(data, bad)
    with pytest.raises(ModelFormatError, match="unknown model class 'NoSuchModel'"):
        load(bad)
    with pytest.raises(FileNotFoundError):
        MLPCalculator.from_file(tmp_path / "missing.pt")
