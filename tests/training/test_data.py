"""Training data: readers (extxyz, ASE db, DeePMD), labels, unit conversion, checks, splits."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from ase_mlp.training.data import (
    DataError,
    Labels,
    LabelSpec,
    label,
    labels_of,
    read_deepmd,
    read_frames,
    reference_energies_from_isolated,
    split_frames,
    validate_frames,
)


DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
TA = DATA / "ta-fitsnap"
WATER = DATA / "water-deepmd"
TA_SPEC = LabelSpec(stress_unit="bar", stress_sign="compressive")


def _need(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def _labelled(n=4, energy=-1.0, seed=0, group="default", symbol="Cu"):
    atoms = bulk(symbol, "fcc", a=3.6, cubic=True)[:n]
    rng = np.random.default_rng(seed)
    return label(
        atoms,
        Labels(energy=energy, forces=rng.normal(size=(len(atoms), 3)), stress=None, group=group),
    )


# --------------------------------------------------------------------------------------------
# LabelSpec / labels_of / label


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"stress_unit": "Pa"}, "stress_unit"),
        ({"stress_sign": "tensile"}, "stress_sign"),
        ({"source": "file"}, "source"),
        ({"energy": ""}, "energy"),
        ({"forces": None}, "forces"),
        ({"group": 3}, "group"),
    ],
)
def test_labelspec_rejects_bad_fields(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LabelSpec(**kwargs)


@pytest.mark.parametrize(
    "unit, factor",
    [
        ("eV/A^3", 1.0),
        ("eV/Å^3", 1.0),
        ("gpa", units.GPa),
        ("KBAR", 0.1 * units.GPa),
        ("bar", 1e-4 * units.GPa),
    ],
)
def test_stress_units_and_sign(unit, factor):
    atoms = bulk("Cu", cubic=True)
    raw = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    atoms.info["stress"] = raw
    ase_sign = labels_of(atoms, LabelSpec(stress_unit=unit))
    comp = labels_of(atoms, LabelSpec(stress_unit=unit, stress_sign="compressive"))
    np.testing.assert_allclose(ase_sign.stress, raw * factor)
    np.testing.assert_allclose(comp.stress, -raw * factor)


def test_labels_from_info_and_calc_sources():
    atoms = bulk("Cu", cubic=True)
    forces = np.arange(12.0).reshape(4, 3)
    atoms.info.update(energy=-3.0, weight=2.5, config_type="bulk")
    atoms.arrays["forces"] = forces
    atoms.info["stress"] = np.diag([1.0, 2.0, 3.0])  # 3x3 -> Voigt
    lab = labels_of(atoms)
    assert lab.energy == -3.0 and lab.weight == 2.5 and lab.group == "bulk"
    np.testing.assert_array_equal(lab.forces, forces)
    np.testing.assert_array_equal(lab.stress, [1, 2, 3, 0, 0, 0])

    atoms.calc = SinglePointCalculator(atoms, energy=-7.0)
    assert labels_of(atoms).energy == -7.0  # auto: calculator first
    assert labels_of(atoms, LabelSpec(source="info")).energy == -3.0
    assert labels_of(atoms, LabelSpec(source="calc")).forces is None


def test_virial_gives_stress():
    atoms = bulk("Cu", cubic=True)
    virial = np.array([[1.0, 0.1, 0.2], [0.1, 2.0, 0.3], [0.2, 0.3, 3.0]])
    atoms.info["virial"] = virial
    lab = labels_of(atoms)
    v = atoms.get_volume()
    np.testing.assert_allclose(lab.stress, -np.array([1.0, 2.0, 3.0, 0.3, 0.2, 0.1]) / v)
    mol = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])
    mol.info["virial"] = virial
    with pytest.raises(DataError, match="virial"):
        labels_of(mol)


def test_bad_forces_shape_names_frame():
    atoms = bulk("Cu", cubic=True)
    atoms.info["forces"] = np.zeros((3, 3))
    with pytest.raises(DataError, match=r"frame 7: forces have shape \(3, 3\) for 4 atoms"):
        labels_of(atoms, index=7)


def test_label_single_source_of_truth():
    atoms = bulk("Cu", cubic=True)
    atoms.info.update(energy=1.0, stress=np.ones(6), virial=np.ones(9), config_type="old")
    atoms.arrays["forces"] = np.ones((4, 3))
    out = label(atoms, Labels(energy=-2.0, forces=np.zeros((4, 3)), stress=None, group="new"))
    assert "energy" not in out.info and "stress" not in out.info and "virial" not in out.info
    assert "forces" not in out.arrays
    assert out.get_potential_energy() == -2.0
    assert "stress" not in out.calc.results
    assert out.info["group"] == "new" and out.info["weight"] == 1.0
    lab = labels_of(out)
    assert lab.group == "new" and lab.stress is None
    assert atoms.info["energy"] == 1.0 and "forces" in atoms.arrays  # original untouched


# --------------------------------------------------------------------------------------------
# read_frames: extxyz, db, errors


def test_read_ta_extxyz_converts_stress():
    path = _need(TA / "Elastic_BCC.xyz")
    raw = read(path, 3)
    frames = read_frames(path, spec=TA_SPEC)
    assert len(frames) == 100
    f = frames[3]
    expected = -raw.calc.results["stress"] * 1e-4 * units.GPa
    np.testing.assert_allclose(f.get_stress(), expected, rtol=1e-14)
    # this frame is strained: the raw bar numbers are not the ASE ones
    assert not np.allclose(f.get_stress(), raw.calc.results["stress"])
    assert f.get_potential_energy() == raw.get_potential_energy()
    np.testing.assert_array_equal(f.get_forces(), raw.get_forces())
    assert f.info["group"] == "Elastic_BCC" and labels_of(f).group == "Elastic_BCC"
    # reading the standard frames again with the default spec does not convert twice
    np.testing.assert_allclose(labels_of(f).stress, expected, rtol=1e-14)


def test_read_frames_list_groups_and_validate():
    paths = [_need(TA / "Displaced_BCC.xyz"), TA / "Displaced_FCC.xyz"]
    frames = read_frames(paths, spec=TA_SPEC)
    assert len(frames) == 18
    assert [labels_of(a).group for a in frames] == ["Displaced_BCC"] * 9 + ["Displaced_FCC"] * 9
    validate_frames(frames, elements=["Ta"], require=("energy", "forces", "stress"))
    one = read_frames(paths[0], 0, spec=TA_SPEC, group="mine")
    assert len(one) == 1 and labels_of(one[0]).group == "mine"


def test_read_db_keeps_key_value_pairs(tmp_path):
    import ase.db

    atoms = bulk("Cu", cubic=True)
    atoms.calc = SinglePointCalculator(
        atoms, energy=-1.5, forces=np.zeros((4, 3)), stress=np.arange(6.0)
    )
    with ase.db.connect(tmp_path / "d.db") as db:
        db.write(atoms, config_type="bulk", weight=3.0)
    frames = read_frames(tmp_path / "d.db", spec=LabelSpec(stress_unit="GPa"))
    lab = labels_of(frames[0])
    assert lab.group == "bulk" and lab.weight == 3.0 and lab.energy == -1.5
    np.testing.assert_allclose(lab.stress, np.arange(6.0) * units.GPa)


def test_read_frames_custom_info_keys(tmp_path):
    atoms = bulk("Cu", cubic=True)
    atoms.info["dft_energy"] = -4.0
    atoms.info["dft_virial"] = np.eye(3)
    atoms.arrays["dft_forces"] = np.ones((4, 3))
    write(tmp_path / "c.extxyz", atoms)
    spec = LabelSpec(energy="dft_energy", forces="dft_forces", stress=None, virial="dft_virial")
    (f,) = read_frames(tmp_path / "c.extxyz", spec=spec)
    assert f.get_potential_energy() == -4.0
    np.testing.assert_allclose(f.get_stress(), -np.array([1, 1, 1, 0, 0, 0]) / atoms.get_volume())
    assert "dft_energy" not in f.info and "dft_forces" not in f.arrays
    assert f.info["group"] == "c"


def test_read_frames_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        read_frames(tmp_path / "nope.xyz")
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\nthis is not\nan xyz file\n")
    with pytest.raises(DataError, match="bad.xyz"):
        read_frames(bad)
    text = tmp_path / "notes.md"
    text.write_text("# not structures\n")
    with pytest.raises(DataError, match="notes.md"):
        read_frames(text)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="empty_dir"):
        read_frames(tmp_path / "empty_dir")


# --------------------------------------------------------------------------------------------
# DeePMD


def test_read_water_deepmd():
    root = _need(WATER)
    frames = read_frames(root)
    assert len(frames) == 400
    assert {labels_of(a).group for a in frames} == {f"data_{i}" for i in range(4)}
    first = frames[0]
    assert len(first) == 192
    assert first.get_chemical_formula() == "H128O64"
    assert first.get_chemical_symbols()[:64] == ["O"] * 64
    assert all(a.get_forces().shape == (192, 3) for a in frames[::37])
    assert all(a.pbc.all() for a in frames[::37])
    coord = np.load(root / "data_1" / "set.001" / "coord.npy")
    box = np.load(root / "data_1" / "set.001" / "box.npy")
    energy = np.load(root / "data_1" / "set.001" / "energy.npy")
    force = np.load(root / "data_1" / "set.001" / "force.npy")
    sys1 = read_deepmd(root / "data_1")
    assert len(sys1) == 160
    a = sys1[80 + 5]  # set.001, frame 5
    np.testing.assert_array_equal(a.positions, coord[5].reshape(-1, 3))
    np.testing.assert_array_equal(a.cell.array, box[5].reshape(3, 3))
    np.testing.assert_array_equal(a.get_forces(), force[5].reshape(-1, 3))
    assert a.get_potential_energy() == float(energy[5])
    assert -30000 < a.get_potential_energy() < -29900  # total energy, eV
    validate_frames(frames[::50], elements=["H", "O"])
    with pytest.raises(DataError, match="stress"):
        validate_frames(frames[:3], require=("energy", "forces", "stress"))


def _write_system(path, *, virial=True, type_map_file=True, nopbc=False):
    path.mkdir(parents=True)
    (path / "type.raw").write_text("0\n1\n1\n")
    if type_map_file:
        (path / "type_map.raw").write_text("O\nH\n")
    if nopbc:
        (path / "nopbc").write_text("")
    rng = np.random.default_rng(1)
    s = path / "set.000"
    s.mkdir()
    box = np.array([[4.0, 0, 0, 0.5, 5.0, 0, 0, 0, 6.0]] * 2)
    np.save(s / "coord.npy", rng.uniform(0, 4, size=(2, 9)))
    np.save(s / "box.npy", box)
    np.save(s / "energy.npy", np.array([-1.0, -2.0]))
    np.save(s / "force.npy", rng.normal(size=(2, 9)))
    vir = rng.normal(size=(2, 3, 3))
    vir = (vir + vir.transpose(0, 2, 1)).reshape(2, 9)
    if virial:
        np.save(s / "virial.npy", vir)
    return vir, box


def test_deepmd_virial_to_stress(tmp_path):
    vir, box = _write_system(tmp_path / "sys")
    frames = read_deepmd(tmp_path / "sys")
    assert len(frames) == 2 and frames[0].get_chemical_symbols() == ["O", "H", "H"]
    for a, v in zip(frames, vir, strict=True):
        vol = abs(np.linalg.det(box[0].reshape(3, 3)))
        v = v.reshape(3, 3)
        expected = -np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]]) / vol
        np.testing.assert_allclose(a.get_stress(), expected, rtol=1e-12)
    assert labels_of(frames[1]).group == "sys"
    validate_frames(frames, elements=["O", "H"], require=("energy", "forces", "stress"))


def test_deepmd_type_map_and_nopbc(tmp_path):
    _write_system(tmp_path / "a", type_map_file=False, virial=False)
    with pytest.raises(DataError, match="type_map"):
        read_deepmd(tmp_path / "a")
    frames = read_deepmd(tmp_path / "a", type_map=["Si", "C"], group="g")
    assert frames[0].get_chemical_symbols() == ["Si", "C", "C"]
    assert labels_of(frames[0]).group == "g"
    _write_system(tmp_path / "b", nopbc=True, virial=False)
    (nop,) = read_deepmd(tmp_path / "b")[:1]
    assert not nop.pbc.any() and nop.cell.rank == 0
    with pytest.raises(FileNotFoundError):
        read_deepmd(tmp_path / "missing")


# --------------------------------------------------------------------------------------------
# validate_frames


def test_validate_errors():
    good = [_labelled(seed=i) for i in range(3)]
    validate_frames(good, elements=["Cu"])
    with pytest.raises(DataError, match="train: no frames"):
        validate_frames([], name="train")

    no_forces = good + [label(bulk("Cu", cubic=True), Labels(-1.0, None, None))]
    with pytest.raises(DataError, match=r"no forces label \(frames 3\)"):
        validate_frames(no_forces)
    validate_frames(no_forces, require=("energy",))

    nan = good + [_labelled(energy=float("nan"))]
    with pytest.raises(DataError, match="frame 3: non-finite energy"):
        validate_frames(nan)

    alien = good + [_labelled(symbol="Ag")]
    with pytest.raises(DataError, match=r"frame 3: element\(s\) \['Ag'\]"):
        validate_frames(alien, elements=["Cu"])

    with pytest.raises(DataError, match="stress"):
        validate_frames(good, require=("energy", "forces", "stress"))
    with pytest.raises(ValueError, match="unknown label"):
        validate_frames(good, require=("charges",))


# --------------------------------------------------------------------------------------------
# split_frames


def _grouped():
    frames = []
    for g, n in (("a", 20), ("b", 10), ("c", 3)):
        frames += [_labelled(n=1, energy=float(len(frames)), group=g) for _ in range(n)]
    return frames


def test_split_deterministic_and_grouped():
    frames = _grouped()
    np.random.seed(123)  # global numpy state must not matter
    s1 = split_frames(frames, seed=5)
    np.random.seed(999)
    s2 = split_frames(frames, seed=5)
    s3 = split_frames(frames, seed=6)
    ids = [[id(a) for a in part] for part in s1]
    assert ids == [[id(a) for a in part] for part in s2]
    assert ids != [[id(a) for a in part] for part in s3]
    train, val, test = s1
    assert len(train) + len(val) + len(test) == len(frames)
    assert {id(a) for a in train} | {id(a) for a in val} | {id(a) for a in test} == set(
        map(id, frames)
    )
    for part in s1:
        assert {labels_of(a).group for a in part} == {"a", "b", "c"}
        order = [frames.index(a) for a in part]
        assert order == sorted(order)
    counts = {g: [sum(labels_of(a).group == g for a in p) for p in s1] for g in "abc"}
    assert counts == {"a": [16, 2, 2], "b": [8, 1, 1], "c": [1, 1, 1]}

    tr, va, te = split_frames(frames, (0.5, 0.5, 0.0), by_group=False)
    assert (len(tr), len(va), len(te)) == (17, 16, 0)


def test_split_errors():
    frames = _grouped()
    with pytest.raises(ValueError, match="sum to 1"):
        split_frames(frames, (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        split_frames(frames, (1.2, -0.1, -0.1))
    with pytest.raises(ValueError, match="3 entries"):
        split_frames(frames, (0.5, 0.5))
    with pytest.raises(DataError, match="split 'validation' is empty"):
        split_frames(frames[:2], (0.8, 0.1, 0.1))


def test_reference_energies_from_isolated():
    iso = [label(Atoms("H", cell=[9, 9, 9]), Labels(-0.5, np.zeros((1, 3)), None))]
    iso.append(label(Atoms("O"), Labels(-2.0, None, None)))
    frames = iso + [_labelled()]
    assert reference_energies_from_isolated(frames) == {"H": -0.5, "O": -2.0}
    iso.append(label(Atoms("O"), Labels(-3.0, None, None)))
    with pytest.raises(DataError, match="isolated O"):
        reference_energies_from_isolated(iso)
