"""Equation of state, elastic constants and batched evaluation (ase_mlp.workflows.elastic)."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors import Bispectrum
from ase_mlp.models import LinearSNAP
from ase_mlp.workflows.elastic import (
    elastic_constants,
    equation_of_state,
    evaluate_many,
    voigt_strain_tensor,
)
from ase_mlp.workflows.phases import relax_at_pressure


@pytest.fixture(scope="module")
def cu():
    """EMT fcc Cu (primitive cell), cell relaxed to zero stress."""
    return relax_at_pressure(bulk("Cu", "fcc", a=3.6), EMT(), 0.0, fmax=1e-6, smax=1e-5)


@pytest.fixture(scope="module")
def cu_elastic(cu):
    return elastic_constants(cu, EMT())


def _energy(atoms, eps):
    strained = atoms.copy()
    strained.set_cell(np.asarray(atoms.cell) @ (np.eye(3) + eps), scale_atoms=True)
    strained.calc = EMT()
    return strained.get_potential_energy()


def _energy_fd(atoms, h=0.005):
    """C11, C12, C44 (GPa) from central differences of E(strain) / V0."""
    v0 = atoms.get_volume()
    e0 = _energy(atoms, np.zeros((3, 3)))

    def second(j):
        ep = _energy(atoms, voigt_strain_tensor(j, h))
        em = _energy(atoms, voigt_strain_tensor(j, -h))
        return (ep - 2 * e0 + em) / h**2

    def mixed(j, k, s, t):
        return _energy(atoms, voigt_strain_tensor(j, s * h) + voigt_strain_tensor(k, t * h))

    d12 = (mixed(0, 1, 1, 1) - mixed(0, 1, 1, -1) - mixed(0, 1, -1, 1) + mixed(0, 1, -1, -1)) / (
        4 * h**2)
    scale = 1.0 / (v0 * units.GPa)
    return second(0) * scale, d12 * scale, second(3) * scale


def test_elastic_matches_energy_finite_differences(cu, cu_elastic):
    r = cu_elastic
    assert r["cubic"]
    c11, c12, c44 = _energy_fd(cu)
    assert r["C11"] > 0 and r["C44"] > 0
    np.testing.assert_allclose([r["C11"], r["C12"], r["C44"]], [c11, c12, c44], rtol=0.01)
    np.testing.assert_allclose(r["bulk_modulus"], (r["C11"] + 2 * r["C12"]) / 3, rtol=1e-12)
    assert r["C"].shape == r["C_err"].shape == (6, 6)
    assert r["stresses"].shape == (6, 5, 6)
    # EMT is smooth: the linear fits are nearly exact
    assert np.all(r["C_err"] < 1e-2 * r["C11"])


def test_cubic_symmetry(cu_elastic):
    C = cu_elastic["C"]
    c11, c12, c44 = cu_elastic["C11"], cu_elastic["C12"], cu_elastic["C44"]
    np.testing.assert_allclose(np.diag(C)[:3], c11, rtol=1e-3)
    np.testing.assert_allclose(C[:3, :3][~np.eye(3, dtype=bool)], c12, rtol=1e-3)
    np.testing.assert_allclose(np.diag(C)[3:], c44, rtol=1e-3)
    rest = C.copy()
    rest[:3, :3] = 0.0
    rest[3:, 3:] -= np.diag(np.diag(C)[3:])
    assert np.abs(rest).max() < 1e-3 * c11


def test_eos_bulk_modulus(cu, cu_elastic):
    eos = equation_of_state(cu, EMT())
    np.testing.assert_allclose(eos["B"], cu_elastic["bulk_modulus"], rtol=0.02)
    np.testing.assert_allclose(eos["v0"], cu.get_volume(), rtol=1e-3)
    assert eos["v0_per_atom"] == pytest.approx(eos["v0"] / len(cu))
    assert len(eos["volumes"]) == len(eos["energies"]) == 9
    assert 3 < eos["Bprime"] < 8


def test_unrelaxed_reference_warns(cu):
    strained = cu.copy()
    strained.set_cell(cu.cell * 1.02, scale_atoms=True)
    with pytest.warns(UserWarning, match="not relaxed: residual stress"):
        elastic_constants(strained, EMT(), n=3)


def test_relax_ions_cubic_cell(cu):
    """Conventional 4-atom cube: no internal relaxation, so relaxed-ion = clamped-ion."""
    cube = bulk("Cu", "fcc", a=cu.cell.lengths()[0] * np.sqrt(2), cubic=True)
    clamped = elastic_constants(cube, EMT(), n=3, delta=0.004)
    relaxed = elastic_constants(cube, EMT(), n=3, delta=0.004, relax_ions=True, fmax=1e-5)
    np.testing.assert_allclose(relaxed["C"], clamped["C"], atol=1e-3 * clamped["C11"])


def test_evaluate_many_batch_equals_single():
    rng = np.random.default_rng(0)
    desc = Bispectrum(["Ta"], twojmax=4, rcutfac=4.67637, radii=[0.5])
    model = LinearSNAP(desc, coefficients=1e-2 * rng.standard_normal((1, 1 + desc.n_descriptors)))
    calc = MLPCalculator(model, device="cpu")
    base = bulk("Ta", "bcc", a=3.3, cubic=True)
    images = []
    for k in range(5):
        a = base.repeat((1, 1, 1 + k % 2))
        a.rattle(0.05, seed=k)
        a.set_cell(a.cell * (1 + 0.01 * k), scale_atoms=True)
        images.append(a)
    props = ("energy", "forces", "stress")
    batch = evaluate_many(images, calc, props, batch_size=2)
    assert len(batch) == len(images)
    for atoms, r in zip(images, batch, strict=True):
        single = atoms.copy()
        single.calc = MLPCalculator(model, device="cpu")
        assert r["energy"] == pytest.approx(single.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(r["forces"], single.get_forces(), atol=1e-10)
        np.testing.assert_allclose(r["stress"], single.get_stress(), atol=1e-10)
        assert atoms.calc is None
    # a plain ASE calculator goes one by one and gives the same as get_* calls
    emt = evaluate_many([bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.65)], EMT())
    for a, r in zip((3.6, 3.65), emt, strict=True):
        ref = bulk("Cu", "fcc", a=a)
        ref.calc = EMT()
        assert r["energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(r["stress"], ref.get_stress(), atol=1e-12)
