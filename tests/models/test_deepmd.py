"""DeepPot-SE read from DeePMD-kit ``.dp`` files against deepmd-kit's own NumPy backend.

The models are made with deepmd's NumPy backend (``deepmd.dpmodel``) from a standard
input config, their weights and statistics randomised with a seeded rng (so nothing is
trivially near zero), and written with deepmd's own serialisation
(:func:`ase_mlp.testing.make_deepmd_se`; O and H, rcut 4 Å, sel (20, 40) unless a test
says otherwise). Energies and atomic energies are compared with deepmd's NumPy backend;
forces and stress with the same deepmd code run on torch arrays (the NumPy backend has no
gradients: it returns NaN forces), differentiated by autograd, after checking that its
energies equal NumPy's.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from ase import Atoms


deepmd = pytest.importorskip("deepmd.dpmodel")
pytest.importorskip("h5py")

from deepmd.dpmodel.model.base_model import BaseModel  # noqa: E402
from deepmd.dpmodel.utils.serialization import load_dp_model, save_dp_model  # noqa: E402

from ase_mlp.calculators import MLPCalculator  # noqa: E402
from ase_mlp.models.deepmd import DeepmdFormat, DeepmdFormatError, DeepPotSE  # noqa: E402
from ase_mlp.testing import make_deepmd_se  # noqa: E402


DATA = pathlib.Path("/work/shared/data/water-deepmd/data_0")
if not DATA.is_dir():  # pragma: no cover
    DATA = pathlib.Path(__file__).resolve().parents[3] / "shared/data/water-deepmd/data_0"
TYPE_MAP = ["O", "H"]
RTOL = 1e-10


def water_frames(n=1, start=0) -> list[Atoms]:
    coord = np.load(DATA / "set.000/coord.npy")
    box = np.load(DATA / "set.000/box.npy")
    types = np.loadtxt(DATA / "type.raw", dtype=int)
    tmap = (DATA / "type_map.raw").read_text().split()
    return [Atoms([tmap[t] for t in types], positions=coord[k].reshape(-1, 3),
                  cell=box[k].reshape(3, 3), pbc=True) for k in range(start, start + n)]


def _to_torch(obj, seen=None):
    """Replace the NumPy arrays held by a deepmd dpmodel object by torch tensors."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for k, v in list(getattr(obj, "__dict__", {}).items()):
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            setattr(obj, k, torch.as_tensor(v))
        elif isinstance(v, (list, tuple)):
            for x in v:
                _to_torch(x, seen)
        elif isinstance(v, dict):
            for x in v.values():
                _to_torch(x, seen)
        elif hasattr(v, "__dict__") and not isinstance(v, type):
            _to_torch(v, seen)


def reference(path, images) -> list[dict]:
    """deepmd's results: energy/energies from the NumPy backend; forces and stress from
    the same dpmodel code run on torch arrays with autograd (its energy must equal
    NumPy's)."""
    data = load_dp_model(str(path))["model"]
    np_model = BaseModel.deserialize(data)
    pt_model = BaseModel.deserialize(load_dp_model(str(path))["model"])
    _to_torch(pt_model)
    out = []
    for atoms in images:
        atype = np.array([TYPE_MAP.index(s) for s in atoms.get_chemical_symbols()])[None]
        periodic = bool(atoms.pbc.all())
        coord = atoms.positions[None]
        box = atoms.cell.array.reshape(1, 9) if periodic else None
        r = np_model.call(coord, atype, box)
        eps = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
        x = torch.tensor(coord, requires_grad=True)
        defo = torch.eye(3, dtype=torch.float64) + eps
        b = None if box is None else (torch.tensor(box).view(3, 3) @ defo).view(1, 9)
        rt = pt_model.call(x @ defo, torch.as_tensor(atype), b)
        e_t = rt["energy"].sum()
        e_np = float(r["energy"].sum())
        assert abs(e_t.item() - e_np) <= 1e-12 * abs(e_np), "dpmodel on torch differs"
        gx, ge = torch.autograd.grad(e_t, (x, eps))
        res = {"energy": float(r["energy"].sum()),
               "energies": np.asarray(r["atom_energy"]).reshape(-1),
               "forces": -gx.numpy()[0]}
        if periodic:
            g = ge.numpy()
            res["stress"] = 0.5 * (g + g.T) / atoms.get_volume()
        out.append(res)
    return out


def _pyproject_entry_point():
    """The ``deepmd`` entry point as pyproject.toml declares it (no tomllib on 3.10)."""
    import re
    from importlib.metadata import EntryPoint

    text = (pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."ase_mlp.model_formats"]', 1)[1]
    value = re.search(r'^deepmd\s*=\s*"([^"]+)"', section.split("\n[", 1)[0], re.M)
    assert value, "pyproject.toml declares no 'deepmd' model format"
    return EntryPoint(name="deepmd", value=value.group(1), group="ase_mlp.model_formats")


@pytest.fixture(autouse=True)
def _deepmd_entry_point(monkeypatch):
    """``MLPCalculator.from_file`` through the entry point declared in pyproject.toml, also
    before the package metadata is regenerated (``test_entry_point_installed`` checks it)."""
    from ase_mlp.calculators import mlp

    installed = mlp.model_formats()
    if "deepmd" not in installed:
        formats = dict(installed, deepmd=_pyproject_entry_point())
        monkeypatch.setattr(mlp, "model_formats", lambda: formats)


def test_entry_point_installed():
    """The installed metadata registers the format (run ``pip install -e .`` after
    changing pyproject.toml)."""
    from importlib.metadata import entry_points

    assert _pyproject_entry_point().load() is DeepmdFormat
    eps = {ep.name: ep for ep in entry_points(group="ase_mlp.model_formats")}
    assert "deepmd" in eps, "entry point 'deepmd' not installed: reinstall the package"
    assert eps["deepmd"].load() is DeepmdFormat


def _compare(got, ref, what, rtol=RTOL):
    got, ref = np.asarray(got), np.asarray(ref)
    err = np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-300)
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("deepmd")
    return {"one_side": make_deepmd_se(d / "one_side.dp", type_one_side=True, seed=1),
            "two_side": make_deepmd_se(d / "two_side.dp", type_one_side=False, seed=2),
            "atom_ener": make_deepmd_se(d / "atom_ener.dp", seed=4, atom_ener=[-1.0, None]),
            "small_sel": make_deepmd_se(d / "small_sel.dp", seed=5, sel=(3, 6)),
            "md": make_deepmd_se(d / "md.dp", seed=6, type_one_side=False, out_scale=0.05)}


def _evaluate(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
           "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress(voigt=False)
    return out


@pytest.mark.parametrize("name", ["one_side", "two_side", "atom_ener"])
def test_matches_deepmd_numpy_backend(models, name):
    """Energy, atomic energies, forces and stress equal deepmd's to 1e-10 (float64)."""
    path = models[name]
    calc = MLPCalculator.from_file(path, device="cpu")
    assert isinstance(calc.model, DeepPotSE)
    atoms = water_frames(1, start=3)[0]
    atoms.rattle(0.05, seed=7)
    ref = reference(path, [atoms])[0]
    got = _evaluate(calc, atoms)
    assert abs(got["energy"] - ref["energy"]) <= RTOL * abs(ref["energy"])
    for key in ("energies", "forces", "stress"):
        _compare(got[key], ref[key], f"{name} {key}")
    # not trivially small: forces of a few eV/Å, stress visibly non-zero
    assert np.abs(got["forces"]).max() > 0.1
    assert np.abs(got["stress"]).max() > 1e-3


@pytest.mark.parametrize("activation", ["gelu", "relu", "softplus", "sigmoid", "silu", "relu6",
                                        "linear"])
def test_activations_match_numpy_energies(tmp_path, activation):
    """Every supported activation gives deepmd's NumPy energies and atomic energies (the
    torch-array route is not an oracle here: deepmd's gelu constant is float32 on torch)."""
    path = make_deepmd_se(tmp_path / "a.dp", seed=4, activation=activation,
                          atom_ener=[None, 2.0])
    atoms = water_frames(1, start=5)[0]
    model = BaseModel.deserialize(load_dp_model(path)["model"])
    atype = np.array([TYPE_MAP.index(s) for s in atoms.get_chemical_symbols()])[None]
    r = model.call(atoms.positions[None], atype, atoms.cell.array.reshape(1, 9))
    got = _evaluate(MLPCalculator.from_file(path, device="cpu"), atoms)
    assert abs(got["energy"] - r["energy"].sum()) <= RTOL * abs(r["energy"].sum())
    _compare(got["energies"], r["atom_energy"].reshape(-1), f"{activation} energies")


def _mixed_images():
    rng = np.random.default_rng(11)
    images = []
    for k, atoms in enumerate(water_frames(8, start=10)):
        keep = np.sort(rng.choice(len(atoms), size=int(rng.integers(60, 192)), replace=False))
        atoms = atoms[keep]
        strain = np.eye(3) + rng.normal(0.0, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        if k == 7:  # an open cluster: the 40 atoms nearest to the first one
            d = atoms.get_distances(0, range(len(atoms)), mic=True, vector=True)
            near = np.argsort(np.linalg.norm(d, axis=1))[:40]
            atoms = Atoms(atoms.symbols[near], positions=atoms.positions[0] + d[near],
                          pbc=False)
        images.append(atoms)
    return images


def test_mixed_batch_equals_one_by_one_and_deepmd(models):
    """A batch of 8 structures (60..191 atoms, strained cells, one open cluster) equals
    one-by-one calls and deepmd's results."""
    path = models["two_side"]
    calc = MLPCalculator.from_file(path, device="cpu")
    images = _mixed_images()
    assert len({len(a) for a in images}) == len(images)
    batch = calc.calculate_batch(images, properties=("energy", "forces", "stress"))
    refs = reference(path, images)
    for k, (atoms, res, ref) in enumerate(zip(images, batch, refs, strict=True)):
        single = _evaluate(calc, atoms)
        np.testing.assert_allclose(res["energy"], single["energy"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(res["forces"], single["forces"], rtol=0, atol=1e-11)
        assert abs(res["energy"] - ref["energy"]) <= RTOL * abs(ref["energy"]), k
        _compare(res["forces"], ref["forces"], f"structure {k} forces")
        if atoms.pbc.all():
            from ase.stress import voigt_6_to_full_3x3_stress

            _compare(voigt_6_to_full_3x3_stress(res["stress"]), ref["stress"],
                     f"structure {k} stress")
        else:
            assert "stress" not in res


def test_isolated_atoms_and_molecule(models):
    """Atoms without neighbours (only empty slots) and an isolated molecule in vacuum."""
    path = models["two_side"]
    calc = MLPCalculator.from_file(path, device="cpu")
    lone = Atoms("OH", positions=[[0, 0, 0], [5.0, 0, 0]], pbc=False)
    water = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], pbc=False)
    for atoms in (lone, water):
        ref = reference(path, [atoms])[0]
        got = _evaluate(calc, atoms)
        assert abs(got["energy"] - ref["energy"]) <= RTOL * abs(ref["energy"])
        _compare(got["energies"], ref["energies"], "energies")
        np.testing.assert_allclose(got["forces"], ref["forces"], rtol=0, atol=1e-12)
    assert np.all(_evaluate(calc, lone)["forces"] == 0.0)


def test_finite_differences_conformance(models):
    from ase_mlp.testing import check_forces, check_stress

    calc = MLPCalculator.from_file(models["one_side"], device="cpu")
    atoms = water_frames(1, start=20)[0][:96]
    atoms.rattle(0.02, seed=3)
    atoms.calc = calc
    check_forces(atoms, calc, indices=6, rng=0)
    check_stress(atoms, calc)


def test_sel_overflow_is_refused(models):
    """deepmd silently drops neighbours beyond sel; we refuse with a precise message."""
    calc = MLPCalculator.from_file(models["small_sel"], device="cpu")
    atoms = water_frames(1)[0]
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"structure 0, atom \d+ \([OH]\): \d+ [OH] neighbours "
                                         r"within rcut=4 Å, more than sel\[\d\]="):
        atoms.get_potential_energy()


def test_format_detection_and_errors(models, tmp_path):
    path = models["one_side"]
    assert DeepmdFormat.can_load([pathlib.Path(path)])
    assert not DeepmdFormat.can_load([pathlib.Path(path), pathlib.Path(path)])
    other = tmp_path / "x.dp"
    other.write_bytes(b"PK\x03\x04 not hdf5")
    assert not DeepmdFormat.can_load([other])
    # an unsupported descriptor gets a message naming the file and the key
    data = load_dp_model(path)
    data["model"]["descriptor"]["type"] = "se_atten"
    bad = tmp_path / "bad.dp"
    save_dp_model(str(bad), data)
    with pytest.raises(DeepmdFormatError, match=r"bad\.dp: model\.descriptor\.type is "
                                                 r"'se_atten'"):
        MLPCalculator.from_file(bad)
    data = load_dp_model(path)
    data["model"]["fitting"]["var_name"] = "dipole"
    save_dp_model(str(bad), data)
    with pytest.raises(DeepmdFormatError, match="only energy models"):
        DeepPotSE.from_dp(bad)


def test_properties_and_units(models, tmp_path):
    from ase.calculators.calculator import PropertyNotImplementedError

    model = DeepPotSE.from_dp(models["one_side"])
    assert model.units == {"energy": "eV", "length": "Angstrom"}
    DeepPotSE.check_properties(["energy", "forces", "stress"])
    with pytest.raises(PropertyNotImplementedError, match="dipole"):
        model.check_properties(["energy", "dipole"])
    # saved in ase_mlp's own format and back: same energies
    model.save(tmp_path / "m.pt")
    from ase_mlp.models import load

    again = load(tmp_path / "m.pt")
    atoms = water_frames(1)[0]
    e1 = _evaluate(MLPCalculator(model, device="cpu"), atoms)["energy"]
    e2 = _evaluate(MLPCalculator(again, device="cpu"), atoms)["energy"]
    assert e1 == e2


@pytest.mark.slow
def test_resident_md_runs(models):
    """200 NVE steps of ResidentMD (two systems side by side): energy conserved. Cold and
    gentle: a randomised model has no short-range repulsion (atoms would collapse)."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from ase_mlp.dynamics import ResidentMD

    calc = MLPCalculator.from_file(models["md"], device="cpu")
    images = [water_frames(1, start=0)[0], water_frames(1, start=1)[0][:120]]
    for k, atoms in enumerate(images):
        MaxwellBoltzmannDistribution(atoms, temperature_K=50, rng=np.random.default_rng(k))
    md = ResidentMD(calc, images, timestep=0.2 * units.fs)

    def total():
        out = []
        for atoms in md.get_images():
            atoms.calc = calc
            out.append(atoms.get_total_energy())
        return np.array(out)

    e0 = total()
    md.run(200)
    assert md.nsteps == 200
    drift = np.abs(total() - e0)
    assert np.all(drift < 1e-6 * np.array([len(a) for a in images])), drift


@pytest.mark.slow
def test_qtb_runs(models):
    """200 steps of QTB at 300 K with the DeepPot-SE calculator."""
    from ase import units

    from ase_mlp.dynamics import QTB

    atoms = water_frames(1, start=2)[0]
    atoms.calc = MLPCalculator.from_file(models["md"], device="cpu")
    md = QTB(atoms, timestep=0.2 * units.fs, temperature_K=50, friction=0.01 / units.fs,
             rng=np.random.default_rng(1))
    md.run(200)
    assert md.nsteps == 200
    assert np.isfinite(atoms.positions).all()
    assert 0 < atoms.get_temperature() < 1000
