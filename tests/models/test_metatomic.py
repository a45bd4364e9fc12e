"""metatomic models (metatomic-torch .pt files) run as ase_mlp models.

The reference is ``metatomic_ase.MetatomicCalculator`` on the same exported file: it
builds its own neighbour lists (vesin) and takes forces and stress by autograd, so
agreement to 1e-10 checks our edge -> neighbour-list conversion, strain, units and
batching. The model is a truncated, shifted two-element Lennard-Jones pair potential
written as a TorchScript module (``ase_mlp.models.metatomic.lennard_jones``). The export
of ase_mlp models (``export_metatomic``) is tested in tests/io/test_metatomic_export.py.

No ``from __future__ import annotations`` here: the TorchScript module below needs
its real annotations.
"""

from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet


mta = pytest.importorskip("metatomic.torch")
metatomic_ase = pytest.importorskip("metatomic_ase")

from metatensor.torch import Labels, TensorBlock, TensorMap  # noqa: E402
from metatomic.torch import ModelOutput, System  # noqa: E402

from ase_mlp.calculators import MLPCalculator  # noqa: E402
from ase_mlp.calculators import mlp as mlp_module  # noqa: E402
from ase_mlp.dynamics import QTB, ResidentMD  # noqa: E402
from ase_mlp.models.metatomic import (  # noqa: E402
    MetatomicFormat,
    MetatomicModel,
    is_metatomic_file,
    lennard_jones,
)
from ase_mlp.models.serialization import OwnFormat  # noqa: E402
from ase_mlp.testing import check_calculator, random_structures  # noqa: E402


SIGMA = [[3.40, 3.55], [3.55, 3.65]]        # Å: Ar, Kr
EPSILON = [[0.0104, 0.0125], [0.0125, 0.0140]]  # eV
CUTOFF = 7.0
NM, KJ_MOL = 10.0, 0.010364269656262174   # Å per nm, eV per kJ/mol
RTOL = 1e-10


def _save(tmp_path, name="lj.pt", **kwargs):
    opts = dict(elements=["Ar", "Kr"], sigma=SIGMA, epsilon=EPSILON, cutoff=CUTOFF)
    opts.update(kwargs)
    path = tmp_path / name
    lennard_jones(**opts).save(str(path))
    return path


@pytest.fixture(scope="module")
def lj_file(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("metatomic"))


@pytest.fixture(scope="module")
def calc(lj_file):
    return MLPCalculator(MetatomicModel.from_file(lj_file), device="cpu")


def _solid(seed=0, repeat=2, a=5.4):
    atoms = bulk("Ar", "fcc", a=a, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Kr"
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.12, seed=seed)
    return atoms


def _reference(path, atoms):
    """metatomic_ase's results, all from one model call (each call with new outputs
    costs a TorchScript re-optimisation)."""
    from ase.calculators.calculator import all_changes

    calc = metatomic_ase.MetatomicCalculator(str(path))
    props = ["energy", "energies", "forces"] + (["stress"] if atoms.pbc.all() else [])
    calc.calculate(atoms.copy(), props, all_changes)
    return {k: calc.results[k] for k in props}


def _assert_close(got, ref, what):
    scale = max(np.abs(ref).max(), 1e-300)
    err = np.abs(np.asarray(got) - np.asarray(ref)).max() / scale
    assert err < RTOL, f"{what}: relative difference {err:.3g}"


def _assert_matches(result, ref):
    for key in ref:
        _assert_close(result[key], ref[key], key)


# --------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("full_list", [False, True])
def test_single_structure_equals_metatomic_ase(tmp_path, full_list):
    path = _save(tmp_path, full_list=full_list)
    atoms = _solid()
    ref = _reference(path, atoms)
    atoms.calc = MLPCalculator(MetatomicModel.from_file(path), device="cpu")
    got = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "stress": atoms.get_stress(), "energies": atoms.get_potential_energies()}
    _assert_matches(got, ref)
    assert abs(ref["energy"]) > 0.5 and np.abs(ref["forces"]).max() > 0.01  # not trivial


def test_units_come_from_the_capabilities(tmp_path):
    """The same LJ exported in nm and kJ/mol gives the eV/Å numbers (metatomic converts)."""
    plain = _save(tmp_path, "plain.pt")
    scaled = _save(tmp_path, "nm.pt", sigma=np.array(SIGMA) / NM,
                   epsilon=np.array(EPSILON) / KJ_MOL, cutoff=CUTOFF / NM,
                   length_unit="nm", energy_unit="kJ/mol")
    model = MetatomicModel.from_file(scaled)
    assert (model.length_unit, model.energy_unit) == ("nm", "kJ/mol")
    assert model.cutoff == pytest.approx(CUTOFF, rel=1e-14)   # Å, from the nm request
    atoms = _solid(1)
    a = MLPCalculator(MetatomicModel.from_file(plain), device="cpu").calculate_batch([atoms])[0]
    b = MLPCalculator(model, device="cpu").calculate_batch([atoms])[0]
    for key in ("energy", "forces", "stress"):
        _assert_close(b[key], a[key], key)
    _assert_matches(b, _reference(scaled, atoms))


def test_mixed_batch_equals_one_by_one_and_metatomic_ase(calc, lj_file, one_thread):
    images = random_structures(["Ar", "Kr"], 9, rng=3, sizes=(2, 24), density=0.025,
                               min_distance=3.0)
    cluster = _solid(4, repeat=1)
    cluster.pbc = False
    images.append(cluster)
    assert len({len(a) for a in images}) >= 6
    batch = calc.calculate_batch(images, properties=("energy", "forces", "stress"))
    for k, atoms in enumerate(images):
        alone = calc.calculate_batch([atoms], properties=("energy", "forces", "stress"))[0]
        for key in ("energy", "forces", "energies"):
            np.testing.assert_allclose(batch[k][key], alone[key], rtol=0,
                                       atol=1e-13 * max(1.0, np.abs(alone[key]).max()))
        ref = _reference(lj_file, atoms)
        _assert_matches({key: batch[k][key] for key in ref}, ref)
    assert "stress" not in batch[-1] or not cluster.pbc.any()


def test_finite_differences_and_invariance(calc, one_thread):
    atoms = _solid(5)
    atoms.calc = calc
    report = check_calculator(atoms, calc, rng=2, forces_indices=6)
    assert {"forces", "stress", "energies_sum", "stresses_sum", "invariance",
            "batch"} <= set(report)
    assert calc.model.per_atom_virials


def test_sum_with_a_native_model(lj_file):
    """SumModel adds a metatomic member through its forward (edge_decomposable=False)."""
    from ase_mlp.models.sum import SumModel
    from ase_mlp.models.zbl import ZBL

    lj = MetatomicModel.from_file(lj_file)
    zbl = ZBL(["Ar", "Kr"], inner=1.0, outer=2.5)
    atoms = _solid(6)
    atoms.positions[1] = atoms.positions[0] + [1.2, 1.0, 0.0]  # inside the ZBL range
    parts = [MLPCalculator(m, device="cpu").calculate_batch([atoms])[0] for m in (lj, zbl)]
    total = MLPCalculator(SumModel(lj, zbl), device="cpu").calculate_batch([atoms])[0]
    assert abs(parts[1]["energy"]) > 1e-3
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(total[key], parts[0][key] + parts[1][key], rtol=1e-12,
                                   atol=1e-12)


def test_float32_model_under_a_float64_calculator(tmp_path):
    m32 = MetatomicModel.from_file(_save(tmp_path, "f32.pt", dtype="float32"))
    m64 = MetatomicModel.from_file(_save(tmp_path, "f64.pt"))
    assert m32.model_dtype == torch.float32
    atoms = _solid(7)
    r32 = MLPCalculator(m32, device="cpu").calculate_batch([atoms])[0]
    r64 = MLPCalculator(m64, device="cpu").calculate_batch([atoms])[0]
    assert r32["forces"].dtype == np.float64
    np.testing.assert_allclose(r32["energy"], r64["energy"], rtol=1e-5)
    np.testing.assert_allclose(r32["forces"], r64["forces"], atol=1e-5)
    # the float32 weights were not cast by the calculator's .to(dtype=float64)
    assert m32.metatomic_model.capabilities().dtype == "float32"


# --------------------------------------------------------------------------- loading
def test_from_file_picks_metatomic_and_own_format_refuses_torchscript(lj_file, tmp_path,
                                                                      monkeypatch):
    from importlib.metadata import EntryPoint

    assert is_metatomic_file(lj_file) and MetatomicFormat.can_load([lj_file])
    assert not OwnFormat.can_load([lj_file])          # a TorchScript zip is not ours
    ours = tmp_path / "zbl.pt"
    from ase_mlp.models.zbl import ZBL

    ZBL(["Ar"], inner=1.0, outer=2.0).save(ours)
    assert OwnFormat.can_load([ours]) and not MetatomicFormat.can_load([ours])
    # the entry point as pyproject.toml declares it (also before a reinstall)
    formats = dict(mlp_module.model_formats())
    formats["metatomic"] = EntryPoint("metatomic", "ase_mlp.models.metatomic:MetatomicFormat",
                                      "ase_mlp.model_formats")
    monkeypatch.setattr(mlp_module, "model_formats", lambda: formats)
    calc = MLPCalculator.from_file(lj_file, device="cpu")
    assert isinstance(calc.model, MetatomicModel)
    assert calc.parameters["model_file"] == str(lj_file.resolve())
    assert type(MLPCalculator.from_file(ours, device="cpu").model).__name__ == "ZBL"
    atoms = _solid(8)
    atoms.calc = calc
    _assert_close(atoms.get_forces(), _reference(lj_file, atoms)["forces"], "forces")


def test_entry_point_is_installed():
    """Needs the package metadata of this checkout (pip install -e . after the
    pyproject.toml change)."""
    assert "metatomic" in mlp_module.model_formats()


def test_checksum_identifies_the_weights(tmp_path):
    a = MLPCalculator(MetatomicModel.from_file(_save(tmp_path, "a.pt")), device="cpu")
    b = MLPCalculator(MetatomicModel.from_file(_save(tmp_path, "b.pt", epsilon=0.01)),
                      device="cpu")
    assert a.parameters["model_checksum"] != b.parameters["model_checksum"]
    with pytest.raises(TypeError, match="saved by metatomic"):
        a.model.save(tmp_path / "x.pt")


class _NoEnergy(torch.nn.Module):
    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        return {}


class _Tethered(torch.nn.Module):
    """LJ-free toy: harmonic tether of every atom to the origin (uses the positions
    directly, so per-atom virials cannot come from neighbour lists)."""

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        values: List[torch.Tensor] = []
        samples: List[torch.Tensor] = []
        for k, system in enumerate(systems):
            values.append(0.01 * (system.positions ** 2).sum(dim=1))
            ids = torch.arange(len(system), dtype=torch.int32)
            samples.append(torch.stack([torch.full_like(ids, k), ids], 1))
        block = TensorBlock(values=torch.cat(values).reshape(-1, 1),
                            samples=Labels(["system", "atom"], torch.cat(samples)),
                            components=torch.jit.annotate(List[Labels], []),
                            properties=Labels(["energy"], torch.tensor([[0]])))
        return {"energy": TensorMap(Labels(["_"], torch.tensor([[0]])), [block])}


class _NaNWeight(_NoEnergy):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor([1.0, float("nan")], dtype=torch.float64))


def _wrap(module, outputs, interaction_range=3.0, atomic_types=(18,)):
    caps = mta.ModelCapabilities(outputs=outputs, atomic_types=list(atomic_types),
                                 interaction_range=interaction_range, length_unit="angstrom",
                                 supported_devices=["cpu"], dtype="float64")
    return mta.AtomisticModel(module.eval(), mta.ModelMetadata(), caps)


def test_clear_errors(tmp_path, calc):
    energy = {"energy": ModelOutput(unit="eV", sample_kind="atom")}
    with pytest.raises(ValueError, match=r"no 'energy/pbe' output .*check variant="):
        MetatomicModel(_wrap(_NoEnergy(), energy), variant="pbe")
    with pytest.raises(ValueError, match="declares no unit"):
        MetatomicModel(_wrap(_NoEnergy(), {"energy": ModelOutput(sample_kind="atom")}))
    with pytest.raises(ValueError, match="no 'energy' output"):
        MetatomicModel(_wrap(_NoEnergy(), {"feature": ModelOutput(sample_kind="atom")}))
    with pytest.raises(ValueError, match="atomic type 0 is not an atomic number"):
        MetatomicModel(_wrap(_NoEnergy(), energy, atomic_types=(0,)))
    with pytest.raises(ValueError, match=r"buffer 'module.scale' .* 1 non-finite value"):
        MetatomicModel(_wrap(_NaNWeight(), energy))
    not_a_model = tmp_path / "junk.pt"
    not_a_model.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="junk.pt: cannot load it as a metatomic model"):
        MetatomicModel.from_file(not_a_model)
    with pytest.raises(ValueError, match=r"element 'Ne' \(atom 0\) is not known"):
        calc.calculate_batch([Atoms("NeAr", positions=[[0, 0, 0], [3, 0, 0]])])


def test_position_dependent_model_refuses_per_atom_virials():
    model = MetatomicModel(_wrap(_Tethered(), {"energy": ModelOutput(unit="eV",
                                                                     sample_kind="atom")}))
    atoms = Atoms("Ar2", positions=[[0.5, 0, 0], [3.0, 0.2, 0]], cell=[6, 6, 6], pbc=True)
    res = MLPCalculator(model, device="cpu").calculate_batch([atoms],
                                                             ("energy", "forces", "stress"))[0]
    np.testing.assert_allclose(res["forces"], -0.02 * atoms.positions, rtol=1e-14)
    assert not model.per_atom_virials and "stresses" not in res
    assert np.isfinite(res["stress"]).all()
    atoms.calc = MLPCalculator(model, device="cpu")
    assert np.isfinite(atoms.get_stress()).all()
    with pytest.raises(PropertyNotImplementedError, match="cannot give per-atom virials"):
        atoms.get_stresses()


# --------------------------------------------------------------------------- dynamics
def _hot(seed):
    atoms = _solid(seed, repeat=2, a=5.6)
    thermalize_momenta(atoms, temperature_K=60, rng=np.random.default_rng(seed))
    return atoms


def test_resident_md_200_steps_follows_metatomic_ase(calc, lj_file, one_thread):
    atoms = _hot(9)
    ref = atoms.copy()
    ref.calc = metatomic_ase.MetatomicCalculator(str(lj_file))
    md = ResidentMD(calc, atoms, 5 * units.fs, skin=0.5)
    e0 = float(md.energy[0] + md.kinetic_energies()[0])
    md.run(200)
    VelocityVerlet(ref, 5 * units.fs).run(200)
    out = md.get_images()[0]
    assert md.n_builds >= 1
    np.testing.assert_allclose(out.positions, ref.positions, rtol=0, atol=1e-8)
    e1 = float(md.energy[0] + md.kinetic_energies()[0])
    assert abs(e1 - e0) < 2e-3 * len(atoms) * units.kB * 60   # NVE drift
    assert out.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-9)


def test_qtb_200_steps_equals_qtb_on_metatomic_ase(calc, lj_file, one_thread):
    runs = []
    for c in (calc, metatomic_ase.MetatomicCalculator(str(lj_file))):
        atoms = _hot(10)
        atoms.calc = c
        QTB(atoms, 5 * units.fs, 40.0, 0.01 / units.fs, rng=4).run(200)
        runs.append(atoms)
    moved = np.abs(runs[0].positions - _hot(10).positions).max()
    assert moved > 0.05
    np.testing.assert_allclose(runs[0].positions, runs[1].positions, rtol=0, atol=1e-8)
    assert np.isfinite(runs[0].get_potential_energy())
