"""MACE models (mace-torch pickled modules) run as ase_mlp models.

The reference is MACE's own ASE calculator, ``mace.calculators.MACECalculator``, on the
same file in float64: it builds its own neighbour list (matscipy) and takes forces and
stress by autograd through positions and a symmetric strain, per-atom virials from its
``compute_atomic_stresses`` edge forces. Agreement to 1e-10 relative therefore checks our
edge vectors -> MACE batch conversion (sender/receiver, shifts, one-hot z_table, heads),
the edge-gradient assembly of forces, virial and per-atom virials, and batching. In
float64 both sides are equal to ~1e-15 (rounding of a different summation order).

The model is a small ``ScaleShiftMACE`` built by MACE's constructor with seeded random
weights (``ase_mlp.models.mace.small_mace``: 2 elements, r_max 4.5 Å, 8 channels, L=1,
correlation 2, 2 interactions, MACE's ZBL pair repulsion for a physical core).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet


pytest.importorskip("mace.modules")
mace_calculators = pytest.importorskip("mace.calculators")

from ase_mlp.calculators import MLPCalculator  # noqa: E402
from ase_mlp.calculators import mlp as mlp_module  # noqa: E402
from ase_mlp.dynamics import QTB, ResidentMD  # noqa: E402
from ase_mlp.models.mace import (  # noqa: E402
    MaceFormat,
    MaceFormatError,
    MaceModel,
    is_mace_file,
    small_mace,
)
from ase_mlp.models.serialization import OwnFormat  # noqa: E402
from ase_mlp.testing import check_batch, check_forces, check_stress, random_structures  # noqa: E402,E501


RTOL = 1e-10
ELEMENTS = ["Al", "Cu"]


@pytest.fixture(scope="session")
def mace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mace") / "small.model"
    torch.save(small_mace(ELEMENTS), path)
    return path


@pytest.fixture(scope="session")
def calc(mace_file):
    return MLPCalculator(MaceModel.from_file(mace_file), device="cpu")


@pytest.fixture(scope="session")
def oracle(mace_file):
    return _oracle(mace_file)


def _oracle(path, **kwargs):
    return mace_calculators.MACECalculator(model_paths=str(path), device="cpu",
                                           default_dtype="float64",
                                           compute_atomic_stresses=True, **kwargs)


def _alloy(seed=0, repeat=2, a=4.05, rattle=0.1):
    """Triclinic (strained) Al/Cu fcc cell."""
    atoms = bulk("Al", "fcc", a=a, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Cu"
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def _reference(oracle, atoms):
    ref = atoms.copy()
    ref.calc = oracle
    out = {"energy": ref.get_potential_energy(), "forces": ref.get_forces(),
           "energies": ref.get_potential_energies()}
    if atoms.pbc.all():
        out["stress"] = ref.get_stress()
        out["stresses"] = ref.get_stresses()
    return out


def _rel(got, ref):
    return float(np.abs(np.asarray(got) - np.asarray(ref)).max()
                 / max(np.abs(np.asarray(ref)).max(), 1e-300))


def _assert_matches(result, ref):
    for key in ref:
        err = _rel(result[key], ref[key])
        assert err < RTOL, f"{key}: relative difference {err:.3g}"


# --------------------------------------------------------------------------- agreement
def test_single_structure_equals_mace_calculator(calc, oracle):
    atoms = _alloy()
    ref = _reference(oracle, atoms)
    atoms.calc = calc
    got = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "stress": atoms.get_stress(), "energies": atoms.get_potential_energies(),
           "stresses": atoms.get_stresses()}
    _assert_matches(got, ref)
    # not trivial: forces, stress and the per-atom split are all well away from zero
    assert np.abs(ref["forces"]).max() > 0.02 and np.abs(ref["stress"]).max() > 1e-3
    assert np.ptp(ref["energies"]) > 1e-3


def test_mixed_batch_equals_one_by_one_and_mace(calc, oracle, one_thread):
    """9 periodic structures of 2--24 atoms (random triclinic cells, both elements), a
    strained 32-atom alloy and an open cluster, in one ``calculate_batch`` call."""
    images = random_structures(ELEMENTS, 9, rng=3, sizes=(2, 24), density=0.05,
                               min_distance=2.0)
    images.append(_alloy(4))
    cluster = _alloy(5, repeat=1)
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    images.append(cluster)
    assert len({len(a) for a in images}) >= 6
    check_batch(images, calc, atol=1e-12, rtol=1e-12,
                properties=("energy", "forces", "stress", "energies", "stresses"))
    batch = calc.calculate_batch(images, properties=("energy", "forces", "stress"))
    for k, atoms in enumerate(images):
        ref = _reference(oracle, atoms)
        _assert_matches({key: batch[k][key] for key in ref}, ref)
    assert "stress" not in batch[-1]


def test_finite_differences(calc, one_thread):
    """Central differences (h = 1e-4 Å / 1e-5 strain) of a smooth float64 PES: the
    O(h^2) error is ~1e-8, well inside the default atol 1e-5 eV/Å, 1e-6 eV/Å^3."""
    atoms = _alloy(6, repeat=1)
    atoms.calc = calc
    check_forces(atoms, calc, rng=1)
    check_stress(atoms, calc)


def test_sum_with_a_native_model(mace_file):
    """SumModel adds MACE (edge-decomposable) and ZBL on one shared graph."""
    from ase_mlp.models.sum import SumModel
    from ase_mlp.models.zbl import ZBL

    mace = MaceModel.from_file(mace_file)
    zbl = ZBL(ELEMENTS, inner=1.0, outer=2.5)
    atoms = _alloy(7)
    atoms.positions[1] = atoms.positions[0] + [1.3, 1.0, 0.0]  # inside the ZBL range
    parts = [MLPCalculator(m, device="cpu").calculate_batch(
        [atoms], ("energy", "forces", "stress", "energies", "stresses"))[0] for m in (mace, zbl)]
    total = MLPCalculator(SumModel(mace, zbl), device="cpu").calculate_batch(
        [atoms], ("energy", "forces", "stress", "energies", "stresses"))[0]
    assert abs(parts[1]["energy"]) > 1e-3
    for key in ("energy", "forces", "stress", "energies", "stresses"):
        np.testing.assert_allclose(total[key], parts[0][key] + parts[1][key], rtol=1e-12,
                                   atol=1e-12)


def test_float32_model_under_a_float64_calculator(tmp_path, mace_file):
    """The calculator casts the module, as MACECalculator(default_dtype='float64') does."""
    path = tmp_path / "f32.model"
    torch.save(small_mace(ELEMENTS, dtype=torch.float32), path)
    model = MaceModel.from_file(path)
    atoms = _alloy(8)
    got = MLPCalculator(model, device="cpu").calculate_batch([atoms])[0]
    assert got["forces"].dtype == np.float64
    assert next(model.mace_model.parameters()).dtype == torch.float32  # copied, not cast
    _assert_matches({k: got[k] for k in ("energy", "forces", "stress")},
                    {k: v for k, v in _reference(_oracle(path), atoms).items()
                     if k in ("energy", "forces", "stress")})
    r32 = MLPCalculator(model, device="cpu", dtype="float32").calculate_batch([atoms])[0]
    np.testing.assert_allclose(r32["energy"], got["energy"], rtol=1e-5)
    np.testing.assert_allclose(r32["forces"], got["forces"], atol=1e-4)


def test_multi_head_model_evaluates_the_chosen_head(tmp_path):
    from e3nn import o3
    from mace.modules import ScaleShiftMACE, interaction_classes

    block = interaction_classes["RealAgnosticResidualInteractionBlock"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = ScaleShiftMACE(
            r_max=4.0, num_bessel=4, num_polynomial_cutoff=5, max_ell=1,
            interaction_cls=block, interaction_cls_first=block, num_interactions=1,
            num_elements=2, hidden_irreps=o3.Irreps("4x0e + 4x1o"),
            MLP_irreps=o3.Irreps("4x0e"), gate=torch.nn.functional.silu,
            atomic_energies=np.array([[-1.0, -3.0], [-2.0, -5.0]]), avg_num_neighbors=10.0,
            atomic_numbers=[13, 29], correlation=2, radial_MLP=[8],
            heads=["pbe", "r2scan"], atomic_inter_scale=[0.5, 0.8],
            atomic_inter_shift=[0.0, 0.1]).double()
    path = tmp_path / "heads.model"
    torch.save(model, path)
    atoms = _alloy(9, repeat=1)
    energies = {}
    for head in ("pbe", "r2scan"):
        calc = MLPCalculator(MaceModel.from_file(path, head=head), device="cpu")
        got = calc.calculate_batch([atoms])[0]
        ref = _reference(_oracle(path, head=head), atoms)
        _assert_matches({k: got[k] for k in ("energy", "forces", "stress")},
                        {k: ref[k] for k in ("energy", "forces", "stress")})
        energies[head] = got["energy"]
    assert abs(energies["pbe"] - energies["r2scan"]) > 1.0
    with pytest.raises(ValueError, match=r"several heads \['pbe', 'r2scan'\].*head="):
        MaceModel.from_file(path)
    with pytest.raises(ValueError, match=r"no head 'hse'; its heads are \['pbe', 'r2scan'\]"):
        MaceModel.from_file(path, head="hse")


# --------------------------------------------------------------------------- loading
def test_format_detection_and_from_file(mace_file, tmp_path):

    from ase_mlp.models.zbl import ZBL

    assert is_mace_file(mace_file) and MaceFormat.can_load([mace_file])
    ours = tmp_path / "zbl.pt"
    ZBL(ELEMENTS, inner=1.0, outer=2.0).save(ours)
    assert not MaceFormat.can_load([ours]) and not MaceFormat.can_load([mace_file, ours])
    assert not MaceFormat.can_load([tmp_path / "missing.model"])
    # ase_mlp's own format claims any torch.save archive (to report what is wrong with a
    # damaged file) but is asked last (``fallback``), after MACE's
    assert OwnFormat.fallback and not getattr(MaceFormat, "fallback", False)
    formats = dict(mlp_module.model_formats())
    assert "mace" in formats
    calc = MLPCalculator.from_file(mace_file, device="cpu")
    assert isinstance(calc.model, MaceModel)
    assert calc.parameters["model_file"] == str(mace_file.resolve())
    assert calc.model.per_atom_energies and calc.model.per_atom_virials


def test_entry_point_is_installed():
    assert "mace" in mlp_module.model_formats()


def test_clear_errors(tmp_path, calc, mace_file):
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    assert not MaceFormat.can_load([junk])
    with pytest.raises(MaceFormatError, match="junk.model: cannot load it as a MACE model"):
        MaceModel.from_file(junk)
    state = tmp_path / "state.model"
    torch.save(small_mace(ELEMENTS).state_dict(), state)
    with pytest.raises(MaceFormatError, match="state.model: expected a pickled MACE module, "
                                              "got OrderedDict.*state dict"):
        MaceModel.from_file(state)
    other = tmp_path / "linear.model"
    torch.save(torch.nn.Linear(2, 2), other)
    with pytest.raises(MaceFormatError, match=r"torch.nn.modules.linear.Linear is not "
                                              "supported"):
        MaceModel.from_file(other)
    scripted = tmp_path / "linear_compiled.model"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    with pytest.raises(MaceFormatError, match="linear_compiled.model: a TorchScript archive"):
        MaceModel.from_file(scripted)
    nan = small_mace(ELEMENTS)
    with torch.no_grad():
        next(nan.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(MaceFormatError, match="non-finite"):
        MaceModel(nan)
    with pytest.raises(FileNotFoundError, match="MACE model file not found"):
        MaceModel.from_file(tmp_path / "absent.model")
    with pytest.raises(ValueError, match=r"element 'Ne' \(atom 0\) is not known"):
        calc.calculate_batch([Atoms("NeAl", positions=[[0, 0, 0], [2.5, 0, 0]])])
    with pytest.raises(TypeError, match="keep the MACE .model file"):
        calc.model.save(tmp_path / "x.pt")


def test_e3nn_unpickling_error_names_the_versions(tmp_path, monkeypatch):
    """A model pickled under another e3nn fails in torch.load: the message says so."""
    import sys
    import types

    fake = types.ModuleType("e3nn._ase_mlp_gone")

    class Gone(torch.nn.Module):
        pass

    Gone.__module__ = fake.__name__
    Gone.__qualname__ = "Gone"
    fake.Gone = Gone
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    path = tmp_path / "old.model"
    torch.save(Gone(), path)
    monkeypatch.delitem(sys.modules, fake.__name__)
    with pytest.raises(MaceFormatError, match=r"old.model: cannot unpickle .* installed "
                                              r"e3nn \S+, mace-torch \S+ .*e3nn 0.4.4"):
        MaceModel.from_file(path)


# --------------------------------------------------------------------------- dynamics
def _hot(seed, temperature=300):
    atoms = _alloy(seed, rattle=0.0)
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    return atoms


def test_resident_md_200_steps_conserves_energy(calc, oracle, one_thread):
    """NVE, 2 fs, 32 atoms at 300 K: velocity Verlet's energy error is O(dt^2) and bounded
    on a smooth PES (no drift); |E(t) - E(0)| stays below 1e-3 kT per atom (measured
    ~2e-6 eV in total). The end frame's energy equals MACECalculator's."""
    atoms = _hot(10)
    md = ResidentMD(calc, atoms, 2 * units.fs, skin=0.5)
    e0 = float(md.energy[0] + md.kinetic_energies()[0])
    energies = []
    for _ in range(10):
        md.run(20)
        energies.append(float(md.energy[0] + md.kinetic_energies()[0]))
    out = md.get_images()[0]
    assert md.n_builds >= 1
    assert np.abs(out.positions - _hot(10).positions).max() > 0.05   # it moved
    drift = max(abs(e - e0) for e in energies)
    assert drift < 1e-3 * len(atoms) * units.kB * 300, drift
    ref = _reference(oracle, out)
    assert out.get_potential_energy() == pytest.approx(ref["energy"], rel=RTOL)


@pytest.mark.slow
def test_resident_md_follows_velocity_verlet_on_mace(calc, oracle, one_thread):
    """200 steps of ResidentMD equal ASE's VelocityVerlet on MACECalculator to 1e-8 Å (the
    ~1e-15 force differences grow, but stay far below that in 200 steps)."""
    atoms = _hot(10)
    ref = atoms.copy()
    ref.calc = oracle
    md = ResidentMD(calc, atoms, 2 * units.fs, skin=0.5)
    md.run(200)
    VelocityVerlet(ref, 2 * units.fs).run(200)
    out = md.get_images()[0]
    np.testing.assert_allclose(out.positions, ref.positions, rtol=0, atol=1e-8)
    assert out.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-9)


def test_qtb_200_steps(calc, one_thread):
    atoms = _hot(11)
    atoms.calc = calc
    QTB(atoms, 2 * units.fs, 300.0, 0.01 / units.fs, rng=4).run(200)
    assert np.abs(atoms.positions - _hot(11).positions).max() > 0.05
    assert np.isfinite(atoms.get_potential_energy())
    assert 50 < atoms.get_temperature() < 2000


@pytest.mark.slow
def test_qtb_200_steps_equals_qtb_on_mace_calculator(calc, oracle, one_thread):
    runs = []
    for c in (calc, oracle):
        atoms = _hot(11)
        atoms.calc = c
        QTB(atoms, 2 * units.fs, 300.0, 0.01 / units.fs, rng=4).run(200)
        runs.append(atoms)
    np.testing.assert_allclose(runs[0].positions, runs[1].positions, rtol=0, atol=1e-8)


def test_cpu_batches_default_to_small_calls(mace_file):
    """On the CPU MACE's cost per atom grows with the size of a call, so MLPCalculator's
    ``max_batch_atoms="auto"`` takes the model's ``cpu_batch_atoms`` (128); an explicit value
    wins."""
    from ase_mlp.calculators.mlp import MAX_BATCH_ATOMS

    model = MaceModel.from_file(mace_file)
    assert MLPCalculator(model, device="cpu").max_batch_atoms == MaceModel.cpu_batch_atoms == 128
    assert MLPCalculator(model, device="cpu", max_batch_atoms=4096).max_batch_atoms == 4096
    assert MLPCalculator(model, device="cpu", max_batch_atoms=None).max_batch_atoms is None
    assert MAX_BATCH_ATOMS == 2048
