"""MLPCalculator on bad or unusual input (issue 18): overlapping atoms, absurd cells, open
and mixed boundaries with zero cell rows, batches with one bad structure, provenance."""

import time
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule, nanotube
from ase.calculators.calculator import PropertyNotImplementedError

from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors import Bispectrum
from ase_mlp.models import ZBL, LinearSNAP, SumModel


def make_model(rng, cutoff=4.8):
    d = Bispectrum(["W", "Be"], 4, cutoff, [0.5, 0.42], [1.0, 0.96])
    return SumModel(ZBL(["W", "Be"], 1.5, 2.3),
                    LinearSNAP(d, rng.normal(size=(2, 1 + d.n_descriptors)) * 0.02))


@pytest.fixture
def calc(rng):
    return MLPCalculator(make_model(rng), device="cpu")


def bcc(reps=(2, 2, 2)):
    return bulk("W", "bcc", a=3.17, cubic=True).repeat(reps)


# ---------------------------------------------------------------- overlapping atoms
@pytest.mark.parametrize("gap", [0.0, 1e-12, 0.05])
@pytest.mark.parametrize("reps", [(2, 2, 2), (5, 5, 4)])  # compiled small search / vesin
def test_overlapping_atoms_are_refused(calc, gap, reps):
    atoms = bcc(reps)
    atoms.positions[7] = atoms.positions[3] + [gap, 0.0, 0.0]
    with pytest.raises(ValueError, match=rf"atoms 3 and 7 are {gap:.3g} Å apart, closer than "
                       r"min_distance=0.1 Å"):
        calc.get_potential_energy(atoms)


def test_min_distance_threshold_can_be_lowered_or_disabled(rng):
    model = make_model(rng)
    atoms = bcc()
    atoms.positions[1] = atoms.positions[0] + [0.05, 0.0, 0.0]
    with pytest.raises(ValueError, match="atoms 0 and 1 are 0.05 Å apart"):
        MLPCalculator(model, device="cpu").get_potential_energy(atoms)
    e_low = MLPCalculator(model, device="cpu", min_distance=0.01).get_potential_energy(atoms)
    e_off = MLPCalculator(model, device="cpu", min_distance=0).get_potential_energy(atoms)
    assert np.isfinite(e_low) and e_low == e_off
    for bad in (-1.0, float("nan"), "x"):
        with pytest.raises(ValueError, match="min_distance"):
            MLPCalculator(model, device="cpu", min_distance=bad)


def test_atom_overlapping_its_own_periodic_image(calc):
    """A sheared cell whose lattice holds the vector c - a = (0, 0, 0.08) Å though every cell
    row is long: caught on the neighbour-list edges, naming the atom and the shift."""
    atoms = Atoms("W", cell=[[3.0, 0, 0], [0, 3.0, 0], [3.0, 0.0, 0.08]], pbc=True)
    with pytest.raises(ValueError, match=r"atom 0 and its own periodic image \(cell shift "
                       r"\[-?1, 0, -?1\]\) are 0.08 Å apart"):
        calc.get_potential_energy(atoms)


@pytest.mark.parametrize("min_distance", [0.1, 0.0])
def test_tiny_periodic_vector_is_refused_fast(rng, min_distance):
    """A 1e-5 Å lattice vector used to run for 20-90 s and give -6e16 eV."""
    calc = MLPCalculator(make_model(rng), device="cpu", min_distance=min_distance)
    atoms = bcc((1, 1, 1))
    atoms.cell[2] = [0.0, 0.0, 1e-5]
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"periodic cell vector 2 \[0.0, 0.0, 1e-05\]"):
        calc.get_potential_energy(atoms)
    assert time.perf_counter() - start < 5.0


def test_normal_small_cell_still_works(calc):
    """The guard does not touch ordinary small cells (1 atom, cutoff > cell)."""
    assert np.isfinite(calc.get_potential_energy(bulk("W", "bcc", a=3.17)))


def test_nan_weight_is_refused_naming_the_parameter(rng):
    model = make_model(rng)
    with torch.no_grad():
        model.models[1].coefficients[1, 4] = float("nan")
    with pytest.raises(ValueError, match=r"parameter 'models.1.coefficients'.*nan at index "
                       r"\[1, 4\]"):
        MLPCalculator(model, device="cpu")


# ------------------------------------------------ open / mixed boundaries, zero cell rows
def _vacuum(atoms, axes, size=40.0):
    out = atoms.copy()
    cell = out.cell.array.copy()
    for a in axes:
        cell[a] = 0.0
        cell[a, a] = size
    out.set_cell(cell, scale_atoms=False)
    return out


def _same(calc, a, b):
    ea, fa = calc.get_potential_energy(a), calc.get_forces(a)
    eb, fb = calc.get_potential_energy(b), calc.get_forces(b)
    assert ea == pytest.approx(eb, rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(fa, fb, atol=1e-10)
    return ea


def test_nanotube_with_zero_cell_rows(calc):
    tube = nanotube(3, 3, length=2, bond=2.7, symbol="W")
    assert tube.pbc.tolist() == [False, False, True] and tube.cell.rank == 1
    e = _same(calc, tube, _vacuum(tube, (0, 1)))
    assert np.isfinite(e)
    with pytest.raises(PropertyNotImplementedError, match="zero volume"):
        calc.get_stress(tube)
    r = calc.calculate_batch([tube])[0]
    assert r["energy"] == pytest.approx(e, rel=1e-12) and "stress" not in r


def test_slab_with_zero_c(calc, rng):
    slab = bcc((2, 2, 3))
    slab.positions += rng.normal(scale=0.05, size=slab.positions.shape)
    slab.pbc = [True, True, False]
    slab.cell[2] = 0.0
    _same(calc, slab, _vacuum(slab, (2,)))
    with pytest.raises(PropertyNotImplementedError, match="zero volume"):
        calc.get_stress(slab)


def test_molecule_with_zero_cell(calc):
    mol = molecule("CH4")
    mol.set_chemical_symbols(["W"] + ["Be"] * 4)
    mol.positions *= 2.0
    assert not mol.pbc.any() and mol.cell.rank == 0
    _same(calc, mol, _vacuum(mol, (0, 1, 2)))


def test_periodic_zero_row_is_still_refused(calc):
    flat = bcc()
    flat.cell[2] = 0.0
    with pytest.raises(ValueError, match="zero volume: cell vector 2 is periodic"):
        calc.get_potential_energy(flat)


# ---------------------------------------------------------------- batches
def _batch(rng):
    images = [bcc() for _ in range(8)]
    for a in images:
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
    images[3].positions[5] = images[3].positions[2]                 # overlap
    images[5][0].symbol = "Cu"                                      # unknown element
    images[6].cell[1] = 0.0                                          # periodic zero row
    return images


def test_batch_error_names_the_structure(calc, rng):
    images = _batch(rng)
    with pytest.raises(ValueError, match="structure 3 of 5: atoms 2 and 5 are 0 Å apart"):
        calc.calculate_batch(images[:5])
    with pytest.raises(ValueError, match="structure 5 of 8: element 'Cu'"):
        calc.calculate_batch(images)
    with pytest.raises(ValueError, match="structure 0 of 1: .*zero volume"):
        calc.calculate_batch(images[6:7])
    with pytest.raises(ValueError, match="errors must be"):
        calc.calculate_batch(images, errors="ignore")


def test_batch_skip_returns_the_others(calc, rng):
    images = _batch(rng)
    res = calc.calculate_batch(images, errors="skip")
    assert len(res) == 8
    assert res[3] == {"error": res[3]["error"]} and "structure 3 of 8: atoms 2 and 5" in \
        res[3]["error"]
    assert "structure 5 of 8: element 'Cu'" in res[5]["error"]
    assert "structure 6 of 8" in res[6]["error"] and "zero volume" in res[6]["error"]
    good = [k for k in range(8) if k not in (3, 5, 6)]
    alone = calc.calculate_batch([images[k] for k in good])
    for k, r in zip(good, alone, strict=True):
        assert res[k]["energy"] == r["energy"]
        np.testing.assert_array_equal(res[k]["forces"], r["forces"])
        np.testing.assert_array_equal(res[k]["stress"], r["stress"])
    assert all("error" in r for r in calc.calculate_batch(images[3:4], errors="skip"))


# ---------------------------------------------------------------- provenance
def test_parameters_record_the_model(tmp_path, rng):
    from ase_mlp.models.serialization import model_checksum

    model = make_model(rng)
    path = tmp_path / "m.pt"
    model.save(path)
    stored = torch.load(path, weights_only=True)["checksum"]["digest"]
    calc = MLPCalculator.from_file(path, device="cpu", dtype="float32")
    p = calc.todict()
    assert p["model"] == "SumModel" and p["model_file"] == str(path.resolve())
    assert p["model_checksum"] == stored == model_checksum(model)
    assert p["dtype"] == "float32" and p["device"] == "cpu" and p["elements"] == ["W", "Be"]
    assert p["cutoff"] == pytest.approx(float(model.pair_cutoffs().max()))
    text = repr(calc)
    for part in ("MLPCalculator(", "SumModel(ZBL + LinearSNAP)", "['W', 'Be']", "float32",
                 "cpu", str(path.resolve()), stored[:12]):
        assert part in text
    bare = MLPCalculator(model, device="cpu")
    assert bare.parameters["model_file"] is None
    assert bare.parameters["model_checksum"] == stored


def test_provenance_reaches_trajectories_and_databases(tmp_path, rng):
    from ase.db import connect
    from ase.io import read, write

    path = tmp_path / "m.pt"
    make_model(rng).save(path)
    calc = MLPCalculator.from_file(path, device="cpu")
    atoms = bcc()
    atoms.calc = calc
    atoms.get_potential_energy()
    write(tmp_path / "t.traj", atoms)
    again = read(tmp_path / "t.traj")
    assert again.calc.parameters["model_file"] == str(path.resolve())
    with connect(tmp_path / "x.db") as db:
        db.write(atoms)
    row = connect(tmp_path / "x.db").get(id=1)
    assert row.calculator_parameters["model_checksum"] == calc.parameters["model_checksum"]
    assert row.calculator_parameters["dtype"] == "float64"


# ---------------------------------------------------------------- LAMMPS wrapper warning
def _write_pair(tmp_path, rng):
    from ase_mlp.io.lammps import write_snap

    d = Bispectrum(["W"], 4, 4.8, [0.5], [1.0])
    model = LinearSNAP(d, rng.normal(size=(1, 1 + d.n_descriptors)) * 0.02)
    write_snap(model, tmp_path / "W.snapcoeff", tmp_path / "W.snapparam")
    return tmp_path / "W.snapcoeff", tmp_path / "W.snapparam"


def test_pair_beside_zbl_wrapper_warns(tmp_path, rng):
    from ase_mlp.io.lammps import read_snap

    coeff, param = _write_pair(tmp_path, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_snap(coeff, param)  # no wrapper yet: silent
    (tmp_path / "W.snap").write_text(
        "variable zin equal 4\npair_style hybrid/overlay zbl ${zin} 4.8 snap\n"
        "pair_coeff 1 1 zbl 74 74\npair_coeff * * snap W.snapcoeff W.snapparam W\n")
    with pytest.warns(UserWarning, match=r"W.snapcoeff and W.snapparam were read as a bare "
                      r"SNAP model.*/W\.snap beside them.*zbl.*read_lammps_potential\("):
        MLPCalculator.from_file(param, coeff, device="cpu")
    from ase_mlp.io.lammps import read_lammps_potential

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(read_lammps_potential(tmp_path / "W.snap"), SumModel)


def test_pair_beside_plain_snap_wrapper_is_silent(tmp_path, rng):
    coeff, param = _write_pair(tmp_path, rng)
    (tmp_path / "W.snap").write_text("pair_style snap\npair_coeff * * W.snapcoeff W.snapparam W\n")
    (tmp_path / "other.snap").write_text(
        "pair_style hybrid/overlay zbl 4 4.8 snap\npair_coeff 1 1 zbl 74 74\n"
        "pair_coeff * * snap X.snapcoeff X.snapparam W\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MLPCalculator.from_file(coeff, param, device="cpu")


def test_ta06a_quickstart_pair_warns(ta06a_path):
    P = ta06a_path.parent
    with pytest.warns(UserWarning, match="Ta06A.snap beside them"):
        MLPCalculator.from_file(P / "Ta06A.snapparam", P / "Ta06A.snapcoeff", device="cpu")
