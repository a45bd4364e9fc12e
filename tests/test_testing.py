"""Conformance kit ``ase_mlp.testing``: passes on ASE's own calculators, fails on broken ones."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.geometry import minkowski_reduce

from ase_mlp.testing import (
    check_batch,
    check_calculator,
    check_energies_sum,
    check_forces,
    check_invariance,
    check_stress,
    check_stresses_sum,
    random_structures,
)


LJ_PARAMS = dict(sigma=2.0, epsilon=0.5, rc=5.0, smooth=True)


def make_lj():
    return LennardJones(**LJ_PARAMS)


# ----------------------------------------------------------------------------- calculators
class ScaledForcesLJ(LennardJones):
    """Forces 1% too large."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = self.results["forces"] * 1.01


class WrongSignStressLJ(LennardJones):
    """Stress with the compressive-positive sign (and per-atom stresses left right)."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        if "stress" in self.results:
            self.results["stress"] = -self.results["stress"]


class BrokenEnergiesLJ(LennardJones):
    """Per-atom energies that do not add up to the energy."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["energies"] = self.results["energies"] * 1.001


class ExternalFieldLJ(LennardJones):
    """Consistent energy/forces, but the energy depends on absolute position (field along x)."""

    field = 0.05  # eV/Å

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        x = self.atoms.positions[:, 0]
        self.results["energies"] = self.results["energies"] + self.field * x
        self.results["energy"] = self.results["free_energy"] = (
            self.results["energy"] + self.field * x.sum())
        forces = self.results["forces"].copy()
        forces[:, 0] -= self.field
        self.results["forces"] = forces


class AnisotropicLJ(LennardJones):
    """Translation/permutation invariant, consistent forces, but not rotation invariant."""

    k = 0.01  # eV/Å²

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        x = self.atoms.positions[:, 0]
        dx = x - x.mean()
        self.results["energies"] = self.results["energies"] + self.k * dx**2
        self.results["energy"] = self.results["free_energy"] = (
            self.results["energy"] + self.k * np.sum(dx**2))
        forces = self.results["forces"].copy()
        forces[:, 0] -= 2 * self.k * dx
        self.results["forces"] = forces


class LabelledLJ(LennardJones):
    """Extra spring between atoms 0 and 1 *by index*: breaks only permutation invariance."""

    k = 0.05  # eV/Å²

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        d = self.atoms.positions[0] - self.atoms.positions[1]
        self.results["energy"] = self.results["free_energy"] = (
            self.results["energy"] + self.k * d @ d)
        energies = self.results["energies"].copy()
        energies[:2] += 0.5 * self.k * d @ d
        self.results["energies"] = energies
        forces = self.results["forces"].copy()
        forces[0] -= 2 * self.k * d
        forces[1] += 2 * self.k * d
        self.results["forces"] = forces


class LoopBatchLJ(LennardJones):
    """LennardJones with a ``calculate_batch`` that loops over the structures."""

    def calculate_batch(self, images, properties=("energy", "forces", "stress")):
        out = []
        for atoms in images:
            calc = LennardJones(**self.parameters)
            calc.calculate(atoms, list(properties))
            out.append({p: np.array(calc.results[p]) for p in properties
                        if p in calc.results})
        return out


class BrokenBatchLJ(LoopBatchLJ):
    """Batch result of the second structure has a wrong energy."""

    def calculate_batch(self, images, properties=("energy", "forces", "stress")):
        out = super().calculate_batch(images, properties)
        if "energy" in out[1]:
            out[1]["energy"] = out[1]["energy"] + 1e-6
        return out


# ----------------------------------------------------------------------------- structures
def cu_al(seed=1):
    """Rattled, sheared 8-atom primitive-fcc Cu cell (triclinic) with two Al."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    atoms.set_cell(atoms.cell @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.08, rng=rng)
    atoms.symbols[[1, 4]] = "Al"
    return atoms


def ar(n=7, seed=2, pbc=True):
    return random_structures(["Ar"], 1, rng=seed, sizes=(n, n), density=0.03,
                             min_distance=2.0, pbc=pbc)[0]


def snapshot(atoms):
    return (atoms.positions.copy(), atoms.cell.array.copy(), atoms.pbc.copy(),
            atoms.numbers.copy(), atoms.calc)


def assert_unchanged(atoms, snap):
    pos, cell, pbc, numbers, calc = snap
    np.testing.assert_array_equal(atoms.positions, pos)
    np.testing.assert_array_equal(atoms.cell.array, cell)
    np.testing.assert_array_equal(atoms.pbc, pbc)
    np.testing.assert_array_equal(atoms.numbers, numbers)
    assert atoms.calc is calc


# ----------------------------------------------------------------------------- passing
@pytest.mark.parametrize("order", [2, 4])
def test_forces_emt(order):
    atoms = cu_al()
    assert abs(atoms.cell.angles() - 60).max() > 0.5  # really triclinic
    snap = snapshot(atoms)
    res = check_forces(atoms, EMT(), order=order)
    assert_unchanged(atoms, snap)
    assert res["max_abs_error"] < 1e-6
    assert res["forces"].shape == res["numerical"].shape == (len(atoms), 3)
    assert np.abs(res["forces"]).max() > 0.1  # a non-trivial test


def test_forces_attached_calc_and_indices():
    atoms = cu_al()
    atoms.calc = EMT()
    snap = snapshot(atoms)
    res = check_forces(atoms, indices=3, rng=np.random.default_rng(5))
    assert len(res["indices"]) == 3 and len(set(res["indices"].tolist())) == 3
    res = check_forces(atoms, indices=[0, -1])
    assert res["indices"].tolist() == [0, len(atoms) - 1]
    assert_unchanged(atoms, snap)
    with pytest.raises(ValueError, match="no calculator"):
        check_forces(cu_al())
    with pytest.raises(ValueError, match="order"):
        check_forces(atoms, order=3)


@pytest.mark.parametrize("order", [2, 4])
def test_stress_emt(order):
    atoms = cu_al()
    snap = snapshot(atoms)
    res = check_stress(atoms, EMT(), order=order)
    assert_unchanged(atoms, snap)
    assert res["max_abs_error"] < 1e-8
    assert np.abs(res["stress"][3:]).max() > 1e-3  # shear components are exercised


def test_stress_sign_convention():
    """Stretched cell -> positive (tensile) diagonal stress, as in ASE."""
    atoms = bulk("Cu", "fcc", a=3.9)
    res = check_stress(atoms, EMT())
    assert np.all(res["numerical"][:3] > 0)


def test_stress_needs_3d_periodic_cell():
    atoms = cu_al()
    atoms.pbc = [True, True, False]
    with pytest.raises(ValueError, match="3D periodic"):
        check_stress(atoms, EMT())


def test_sums_emt():
    atoms = cu_al()
    res = check_energies_sum(atoms, EMT())
    assert res["error"] <= 1e-10
    with pytest.raises(PropertyNotImplementedError, match="'stresses'"):
        check_stresses_sum(atoms, EMT())
    res = check_stresses_sum(atoms, EMT(), missing="skip")
    assert res["skipped"] and "EMT" in res["reason"]


def test_invariance_emt_periodic_and_open():
    atoms = cu_al()
    snap = snapshot(atoms)
    res = check_invariance(atoms, EMT(), rng=np.random.default_rng(3))
    assert_unchanged(atoms, snap)
    for name in ("rotation", "translation", "translation_wrapped", "lattice_shift",
                 "permutation"):
        assert set(res[name]) == {"energy", "energies", "forces", "stress"}
    assert res["max_abs_error"] < 1e-10
    cluster = cu_al()
    cluster.pbc = False
    cluster.center(vacuum=4.0)
    res = check_invariance(cluster, EMT())
    assert "translation_wrapped" not in res and "stress" not in res["rotation"]


def test_lj_all_checks():
    lj = make_lj()
    atoms = ar()
    assert check_forces(atoms, lj)["max_abs_error"] < 1e-5
    assert check_stress(atoms, lj)["max_abs_error"] < 1e-8
    assert check_energies_sum(atoms, lj)["error"] < 1e-10
    assert check_stresses_sum(atoms, lj)["max_abs_error"] < 1e-12
    check_invariance(atoms, lj)
    slab = ar(n=6, seed=4, pbc=[True, True, False])
    res = check_invariance(slab, lj)
    assert "translation_wrapped" in res and "stress" not in res["rotation"]


def test_check_calculator():
    atoms = cu_al()
    snap = snapshot(atoms)
    report = check_calculator(atoms, EMT(), forces_indices=4, forces_order=4,
                              stress_atol=1e-7)
    assert_unchanged(atoms, snap)
    assert {"forces", "stress", "energies_sum", "invariance"} <= set(report)
    assert set(report["skipped"]) == {"stresses_sum", "batch"}
    assert report["forces"]["order"] == 4 and len(report["forces"]["indices"]) == 4
    assert report["stress"]["atol"] == 1e-7

    report = check_calculator(ar(n=5), LoopBatchLJ(**LJ_PARAMS))
    assert report["skipped"] == {}
    assert report["batch"]["properties"] == ["energy", "forces", "stress"]

    cluster = ar(n=5, pbc=False)
    report = check_calculator(cluster, make_lj())
    assert {"stress", "stresses_sum", "batch"} == set(report["skipped"])

    with pytest.raises(TypeError, match="unexpected keyword"):
        check_calculator(atoms, EMT(), atoll=1.0)
    with pytest.raises(TypeError, match="calculate_batch"):
        check_calculator(atoms, EMT(), batch_images=[atoms])


# ----------------------------------------------------------------------------- failing
def test_scaled_forces_fail():
    atoms = ar()
    calc = ScaledForcesLJ(**LJ_PARAMS)
    with pytest.raises(AssertionError, match=r"worst atom \d+ \(Ar\) component [xyz]"):
        check_forces(atoms, calc)
    with pytest.raises(AssertionError, match=r"worst atom"):
        check_forces(atoms, calc, order=4, indices=2)
    check_invariance(atoms, calc)  # still symmetric: only the FD check can see it
    with pytest.raises(AssertionError, match=r"\[forces\]"):
        check_calculator(atoms, calc)


def test_wrong_stress_sign_fails():
    atoms = ar()
    calc = WrongSignStressLJ(**LJ_PARAMS)
    pattern = r"stress differs .* worst component (xx|yy|zz|yz|xz|xy)"
    with pytest.raises(AssertionError, match=pattern):
        check_stress(atoms, calc)
    with pytest.raises(AssertionError, match="sum of per-atom stresses"):
        check_stresses_sum(atoms, calc)
    check_forces(atoms, calc, indices=2)


def test_broken_energies_sum_fails():
    with pytest.raises(AssertionError, match="sum of per-atom energies"):
        check_energies_sum(ar(), BrokenEnergiesLJ(**LJ_PARAMS))


def test_position_dependent_energy_fails_invariance():
    atoms = ar()
    calc = ExternalFieldLJ(**LJ_PARAMS)
    check_forces(atoms, calc, indices=3)  # energy and forces are consistent
    with pytest.raises(AssertionError) as err:
        check_invariance(atoms, calc)
    msg = str(err.value)
    assert "translation: energy not invariant" in msg
    assert "rotation: energy not invariant" in msg
    assert "permutation" not in msg
    check_invariance(atoms, calc, transformations=["permutation"])


def test_rotation_only_breaking_fails():
    cluster = ar(n=6, pbc=False)
    calc = AnisotropicLJ(**LJ_PARAMS)
    check_forces(cluster, calc, indices=2)
    check_invariance(cluster, calc, transformations=["translation", "permutation"])
    with pytest.raises(AssertionError, match="rotation: (energy not invariant|forces not rot)"):
        check_invariance(cluster, calc, transformations=["rotation"])


def test_permutation_only_breaking_fails():
    cluster = ar(n=6, pbc=False)
    calc = LabelledLJ(**LJ_PARAMS)
    check_forces(cluster, calc, indices=[0, 1])
    check_invariance(cluster, calc, transformations=["rotation", "translation"])
    with pytest.raises(AssertionError, match="permutation: energy not invariant"):
        check_invariance(cluster, calc, rng=np.random.default_rng(7))


# ----------------------------------------------------------------------------- batch
def batch_images():
    images = random_structures(["Ar"], 3, rng=11, sizes=(2, 6), density=0.03)
    return images


def test_batch_pass_and_fail():
    images = batch_images()
    snaps = [snapshot(a) for a in images]
    res = check_batch(images, LoopBatchLJ(**LJ_PARAMS))
    for a, s in zip(images, snaps, strict=True):
        assert_unchanged(a, s)
    assert res["n_structures"] == 3
    assert max(res["max_abs_error"].values()) <= 1e-12
    res = check_batch(images, LoopBatchLJ(**LJ_PARAMS), properties=["energies", "stresses"])
    assert set(res["max_abs_error"]) == {"energies", "stresses"}

    with pytest.raises(AssertionError, match=r"structure 1 .*'energy'") as err:
        check_batch(images, BrokenBatchLJ(**LJ_PARAMS))
    assert "structure 0" not in str(err.value) and "structure 2" not in str(err.value)
    check_batch(images, BrokenBatchLJ(**LJ_PARAMS), properties=["forces"])


def test_batch_errors():
    images = batch_images()
    with pytest.raises(TypeError, match="calculate_batch"):
        check_batch(images, make_lj())

    class ShortBatch(LoopBatchLJ):
        def calculate_batch(self, images, properties=("energy",)):
            return super().calculate_batch(images[:-1], properties)

    with pytest.raises(AssertionError, match="returned 2 result"):
        check_batch(images, ShortBatch(**LJ_PARAMS))

    class NoStress(LoopBatchLJ):
        def calculate_batch(self, images, properties=("energy",)):
            return super().calculate_batch(images, ["energy", "forces"])

    with pytest.raises(AssertionError, match="lacks 'stress'"):
        check_batch(images, NoStress(**LJ_PARAMS))


# ----------------------------------------------------------------------------- generator
def test_random_structures():
    kw = dict(sizes=(1, 12), density=0.06, min_distance=2.2)
    structs = random_structures(["Cu", "Al"], 6, rng=np.random.default_rng(0), **kw)
    again = random_structures(["Cu", "Al"], 6, rng=np.random.default_rng(0), **kw)
    assert len(structs) == 6
    assert len({len(a) for a in structs}) > 1
    for a, b in zip(structs, again, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        assert 1 <= len(a) <= 12 and a.pbc.all()
        assert np.isclose(len(a) / a.get_volume(), 0.06)
        assert np.abs(a.cell.angles() - 90).max() > 1  # triclinic
        if len(a) >= 2:
            assert set(a.get_chemical_symbols()) == {"Cu", "Al"}
            d = a.get_all_distances(mic=True)
            assert d[np.triu_indices(len(a), 1)].min() >= 2.2
        # periodic self-images are also far enough apart
        reduced, _ = minkowski_reduce(a.cell.array)
        assert np.linalg.norm(reduced, axis=1).min() >= 2.2
    check_forces(structs[1], EMT(), indices=3)

    clusters = random_structures(["Ar"], 2, rng=1, sizes=(4, 4), pbc=False)
    assert all(not c.pbc.any() and len(c) == 4 for c in clusters)

    with pytest.raises(RuntimeError, match="lower the density"):
        random_structures(["Cu"], 1, rng=0, sizes=(8, 8), density=0.5, min_distance=2.5,
                          max_attempts=20)
    with pytest.raises(ValueError):
        random_structures([], 1)
