"""Compiled NequIP and Allegro models (``nequip-compile`` files) run as ase_mlp models.

The oracle is nequip's own ASE calculator, ``NequIPCalculator.from_compiled_model`` on
the same file: it builds its own neighbour list (vesin or ASE), prunes the per-edge-type
cutoffs and reads the energies, forces and stress the compiled model returns. Agreement
to 1e-10 relative (measured: ~1e-15) checks our edge selection and direction, cell
shifts, species map, stress sign and batching.

The models are tiny float64 NequIP (2 layers, l_max 1, 8 features) and Allegro (1 layer;
asymmetric per-edge-type cutoffs, Au->Cu 3.6 Å) models built by nequip's own model
builders with fixed seeds, random weights, and written by nequip's
``save_torchscript_model`` (what ``nequip-compile --mode torchscript`` does; the CLI
refuses TorchScript on torch >= 2.10, the function still works). Per-type energy
scales of 0.2 keep the random PES gentle enough for MD. The AOTInductor
(``.nequip.pt2``) path is one slow test with a cached compile.

nequip sets process-wide state when it builds or loads a model (default dtype float64,
global seeds): every such call runs inside :func:`nequip_state`, which restores them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.velocitydistribution import thermalize_momenta


nequip = pytest.importorskip("nequip")

from ase_mlp.calculators import MLPCalculator  # noqa: E402
from ase_mlp.calculators import mlp as mlp_module  # noqa: E402
from ase_mlp.dynamics import QTB, ResidentMD  # noqa: E402
from ase_mlp.models.nequip import (  # noqa: E402
    NequipFormat,
    NequipFormatError,
    NequipModel,
    is_nequip_file,
)
from ase_mlp.testing import check_batch, check_forces, check_stress, random_structures  # noqa: E402


RTOL = 1e-10
ELEMENTS = ["Cu", "Au"]


# --------------------------------------------------------------------------- models
@contextlib.contextmanager
def nequip_state():
    """nequip's ``set_global_state`` (run when it builds or loads a model) sets the default
    dtype to float64, seeds every RNG, and changes e3nn, TorchScript-fuser, dynamo and
    multiprocessing settings and two environment variables; its calculator builds float
    tensors in the default dtype. Run nequip inside this and restore all of that after."""
    import random

    import e3nn

    dtype = torch.get_default_dtype()
    rngs = torch.get_rng_state(), np.random.get_state(), random.getstate()
    e3nn_opts = e3nn.get_optimization_defaults()
    dynamo = {k: getattr(torch._dynamo.config, k) for k in
              ("capture_dynamic_output_shape_ops", "capture_scalar_outputs")}
    sharing = torch.multiprocessing.get_sharing_strategy()
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS",
                                         "PYTORCH_JIT_USE_NNC_NOT_NVFUSER")}
    with warnings.catch_warnings():   # deprecated since torch 2.10, still what nequip sets
        warnings.simplefilter("ignore", DeprecationWarning)
        fusion = torch.jit.set_fusion_strategy([("STATIC", 2), ("DYNAMIC", 10)])
        torch.jit.set_fusion_strategy(fusion)
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_rng_state(rngs[0])
        np.random.set_state(rngs[1])
        random.setstate(rngs[2])
        e3nn.set_optimization_defaults(**e3nn_opts)
        for k, v in dynamo.items():
            setattr(torch._dynamo.config, k, v)
        torch.multiprocessing.set_sharing_strategy(sharing)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.set_fusion_strategy(fusion)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_model(kind: str = "nequip", type_names=ELEMENTS, seed: int = 7):
    """A tiny float64 NequIP or Allegro model from nequip's own builders (eager)."""
    from nequip.utils.global_state import set_global_state

    a, b = type_names
    common = dict(seed=seed, model_dtype="float64", type_names=list(type_names), r_max=4.0,
                  avg_num_neighbors=30.0, per_type_energy_shifts={a: -3.5, b: -3.8},
                  per_type_energy_scales={a: 0.2, b: 0.2})
    with nequip_state():
        set_global_state(allow_tf32=False)
        if kind == "nequip":
            from nequip.model import NequIPGNNModel

            model = NequIPGNNModel(num_layers=2, l_max=1, num_features=8,
                                   radial_mlp_width=16, num_bessels=6, **common)
        else:
            pytest.importorskip("allegro")
            from allegro.model import AllegroModel

            model = AllegroModel(
                l_max=1, num_layers=1, num_scalar_features=8, num_tensor_features=4,
                radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                                       "num_bessels": 6},
                radial_chemical_embed_dim=8, scalar_embed_mlp_hidden_layers_width=16,
                allegro_mlp_hidden_layers_width=16, readout_mlp_hidden_layers_width=8,
                per_edge_type_cutoff={a: 4.0, b: {a: 3.6, b: 4.0}}, **common)
    return model.eval()


def metadata(model) -> dict:
    """The metadata nequip-compile stores (model metadata + the TF32 global state)."""
    meta = {k: str(v) for k, v in model.metadata.items()}
    meta["allow_tf32"] = "0"
    return meta


def write_torchscript(path, kind: str = "nequip", **kwargs) -> pathlib.Path:
    """``nequip-compile --mode torchscript`` of a :func:`build_model` model."""
    from nequip.model.inference_models.torchscript import save_torchscript_model

    model = build_model(kind, **kwargs)
    with nequip_state():
        save_torchscript_model(model, metadata(model), str(path), "cpu")
    return pathlib.Path(path)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("nequip")
    return {kind: write_torchscript(d / f"{kind}.nequip.pth", kind)
            for kind in ("nequip", "allegro")}


@pytest.fixture(scope="session")
def calcs(model_files):
    return {k: MLPCalculator(NequipModel.from_file(p), device="cpu")
            for k, p in model_files.items()}


def oracle(path):
    with nequip_state():
        from nequip.integrations.ase import NequIPCalculator

        return NequIPCalculator.from_compiled_model(str(path), device="cpu",
                                                    chemical_species_to_atom_type_map=True)


def reference(path, atoms, calc=None):
    """nequip's results for ``atoms`` (stress only for a 3D cell)."""
    calc = calc or oracle(path)
    atoms = atoms.copy()
    atoms.calc = calc
    with nequip_state():
        out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
               "energies": atoms.get_potential_energies()}
        if atoms.pbc.all():
            out["stress"] = atoms.get_stress()
    return out


def _rel(got, ref) -> float:
    ref = np.asarray(ref)
    return float(np.abs(np.asarray(got) - ref).max() / max(np.abs(ref).max(), 1e-300))


def _alloy(seed=0, repeat=2, a=3.7, rattle=0.1):
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Au"
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))),
                   scale_atoms=True)   # triclinic
    atoms.rattle(rattle, seed=seed)
    return atoms


# --------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("kind", ["nequip", "allegro"])
def test_single_structure_equals_nequip_calculator(model_files, calcs, kind):
    atoms = _alloy(1)
    ref = reference(model_files[kind], atoms)
    got = calcs[kind].calculate_batch([atoms], ("energy", "forces", "stress", "energies"))[0]
    errs = {k: _rel(got[k], ref[k]) for k in ref}
    assert max(errs.values()) < RTOL, errs
    assert np.abs(ref["forces"]).max() > 1e-3 and np.abs(ref["stress"]).max() > 1e-5


@pytest.mark.parametrize("kind", ["nequip", "allegro"])
def test_mixed_batch_equals_one_by_one_and_nequip(model_files, calcs, kind, one_thread):
    """>= 8 structures: random triclinic cells of 2-20 atoms, a strained fcc cell, a
    non-periodic Cu/Au cluster; batch = one by one (1e-12) = nequip (1e-10)."""
    images = random_structures(ELEMENTS, 7, rng=3, sizes=(2, 20), density=0.06,
                               min_distance=2.2)
    images.append(_alloy(2, repeat=1))
    cluster = _alloy(3, repeat=1)
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    images.append(cluster)
    assert len({len(a) for a in images}) >= 5
    calc = calcs[kind]
    props = ("energy", "forces", "stress", "energies")
    check_batch(images, calc, properties=props)
    batch = calc.calculate_batch(images, props)
    # the same batch split into several model calls (max_edges_per_call)
    chunked = MLPCalculator(NequipModel.from_file(model_files[kind], max_edges_per_call=300),
                            device="cpu")
    for got, want in zip(chunked.calculate_batch(images, props), batch, strict=True):
        assert max(_rel(got[k], want[k]) for k in want) < 1e-12
    worst = 0.0
    nq = oracle(model_files[kind])
    for got, atoms in zip(batch, images, strict=True):
        ref = reference(model_files[kind], atoms, nq)
        worst = max(worst, *(_rel(got[k], ref[k]) for k in ref))
    assert worst < RTOL, worst
    assert "stress" not in batch[-1]


def test_finite_differences(calcs, one_thread):
    for kind in ("nequip", "allegro"):
        atoms = _alloy(4)
        atoms.calc = calcs[kind]
        check_forces(atoms, indices=5, rng=1)
        check_stress(atoms)


def test_per_atom_energies_yes_per_atom_virials_refused(calcs):
    atoms = _alloy(5)
    atoms.calc = calcs["nequip"]
    assert calcs["nequip"].model.per_atom_energies
    assert not calcs["nequip"].model.per_atom_virials
    np.testing.assert_allclose(atoms.get_potential_energies().sum(),
                               atoms.get_potential_energy(), rtol=1e-13)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stresses()


def test_declared_units_convert_to_ev_and_angstrom(model_files):
    """A model said to be in kcal/mol and Bohr: ``E = E_model * kcal/mol`` on the
    structure scaled by 1/Bohr; forces scale by (kcal/mol)/Bohr, stress by /Bohr^3."""
    path = model_files["nequip"]
    atoms = _alloy(6, a=3.7 / units.Bohr * 0.5, rattle=0.02)   # coordinates in Bohr
    plain = MLPCalculator(NequipModel.from_file(path), device="cpu")
    conv = MLPCalculator(NequipModel.from_file(path, energy_unit="kcal/mol",
                                               length_unit="Bohr"), device="cpu")
    assert conv.model.cutoff == pytest.approx(4.0 * units.Bohr, rel=1e-14)
    ref = plain.calculate_batch([atoms])[0]
    scaled = atoms.copy()
    scaled.set_cell(atoms.cell.array * units.Bohr, scale_atoms=True)
    got = conv.calculate_batch([scaled])[0]
    e = units.kcal / units.mol
    assert _rel(got["energy"], ref["energy"] * e) < 1e-13
    assert _rel(got["forces"], ref["forces"] * e / units.Bohr) < 1e-12
    assert _rel(got["stress"], ref["stress"] * e / units.Bohr ** 3) < 1e-12
    with pytest.raises(ValueError, match="unknown energy unit 'furlong'"):
        NequipModel.from_file(path, energy_unit="furlong")


def test_type_names_that_are_not_symbols(model_files):
    """The Cu/Au model's file with its metadata's type names relabelled 'A', 'B' (the
    network sees only type indices): loading needs a mapping, and with one it equals
    the Cu/Au model."""
    from ase_mlp.models.nequip import _read_torchscript

    path = model_files["nequip"]
    module, meta = _read_torchscript(path)
    meta = dict(meta, type_names="A B")
    with pytest.raises(ValueError, match=r"not all chemical symbols .*chemical_symbols="):
        NequipModel(module, meta, kind="torchscript", source=str(path))
    atoms = _alloy(7)
    want = MLPCalculator(NequipModel.from_file(path), device="cpu").calculate_batch([atoms])[0]
    for mapping in (["Cu", "Au"], {"Au": "B", "Cu": "A"}):
        model = NequipModel(module, meta, kind="torchscript", chemical_symbols=mapping)
        got = MLPCalculator(model, device="cpu").calculate_batch([atoms])[0]
        assert _rel(got["energy"], want["energy"]) < 1e-14
        assert _rel(got["forces"], want["forces"]) < 1e-13
    only_au = NequipModel(module, meta, kind="torchscript", chemical_symbols={"Au": "B"})
    assert only_au.elements == ["Au"]
    with pytest.raises(ValueError, match=r"type name 'C' \(for Ni\) is not one of"):
        NequipModel(module, meta, kind="torchscript", chemical_symbols={"Ni": "C"})
    with pytest.raises(ValueError, match="3 entries for the 2 types"):
        NequipModel(module, meta, kind="torchscript", chemical_symbols=["Cu", "Au", "Ni"])


# --------------------------------------------------------------------------- loading
def test_from_file_and_entry_point(model_files, tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    path = model_files["allegro"]
    assert is_nequip_file(path) and NequipFormat.can_load([path])
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    assert not NequipFormat.can_load([junk]) and not NequipFormat.can_load([path, path])
    assert not NequipFormat.can_load([tmp_path / "missing.nequip.pth"])
    formats = dict(mlp_module.model_formats())
    formats["nequip"] = EntryPoint("nequip", "ase_mlp.models.nequip:NequipFormat",
                                   "ase_mlp.model_formats")
    monkeypatch.setattr(mlp_module, "model_formats", lambda: formats)
    calc = MLPCalculator.from_file(path, device="cpu")
    assert isinstance(calc.model, NequipModel) and calc.model.kind == "torchscript"
    assert calc.parameters["model_file"] == str(path.resolve())
    assert calc.model.elements == ELEMENTS
    np.testing.assert_allclose(calc.model.pair_cutoffs(), 4.0)   # max of 3.6/4.0 per pair
    with pytest.raises(TypeError, match="keep the nequip-compile file"):
        calc.model.save(tmp_path / "x.pt")


def test_entry_point_is_installed():
    assert "nequip" in mlp_module.model_formats()


def test_clear_errors(tmp_path, calcs):
    bad = tmp_path / "broken.nequip.pth"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(NequipFormatError, match="broken.nequip.pth: not a zip"):
        NequipModel.from_file(bad)
    import zipfile

    fake = tmp_path / "fake.nequip.pth"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("fake/code/x.py", "junk")
    with pytest.raises(NequipFormatError, match="fake.nequip.pth: cannot load it"):
        NequipModel.from_file(fake)
    with pytest.raises(FileNotFoundError):
        NequipModel.from_file(tmp_path / "nothing.nequip.pth")
    with pytest.raises(ValueError, match=r"element 'Ni' \(atom 0\) is not known"):
        calcs["nequip"].calculate_batch([Atoms("NiCu", positions=[[0, 0, 0], [2.5, 0, 0]])])


# --------------------------------------------------------------------------- dynamics
def _hot(seed):
    atoms = _alloy(seed, rattle=0.03)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    return atoms


def test_resident_md_200_steps_conserves_energy(calcs, one_thread):
    """NVE, 1 fs, 32 atoms at 300 K: velocity Verlet's energy error is O(dt^2) and bounded;
    1e-3 of the kinetic energy scale (kT per atom) is far above it for this soft random PES
    and far below any force/energy inconsistency (which drifts linearly)."""
    atoms = _hot(8)
    md = ResidentMD(calcs["nequip"], atoms, 1.0 * units.fs, skin=0.5)
    e0 = float(md.energy[0] + md.kinetic_energies()[0])
    md.run(200)
    e1 = float(md.energy[0] + md.kinetic_energies()[0])
    out = md.get_images()[0]
    assert np.abs(out.positions - atoms.positions).max() > 0.02
    assert abs(e1 - e0) < 1e-3 * len(atoms) * units.kB * 300, (e0, e1)


def test_qtb_200_steps(calcs, model_files, one_thread):
    """200 QTB steps (300 K, 2 fs) with the Allegro model; the last frame's energy and
    forces equal nequip's calculator on it (1e-10 relative)."""
    atoms = _hot(9)
    start = atoms.positions.copy()
    atoms.calc = calcs["allegro"]
    QTB(atoms, 2 * units.fs, 300.0, 0.01 / units.fs, rng=4).run(200)
    assert np.abs(atoms.positions - start).max() > 0.05
    assert np.isfinite(atoms.get_momenta()).all()
    ref = reference(model_files["allegro"], atoms)
    assert _rel(atoms.get_potential_energy(), ref["energy"]) < RTOL
    assert _rel(atoms.get_forces(), ref["forces"]) < RTOL


# --------------------------------------------------------------------------- AOT
def _aot_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "ase_mlp-tests" / "nequip"


def compile_aot(ts_path, out_path, kind="nequip"):
    """``nequip-compile --mode aotinductor --target batch`` of the :func:`build_model`
    model behind ``ts_path`` (same seed), exported on a 2-frame batch as nequip does."""
    from ase.build import bulk as _bulk
    from nequip.data import AtomicDataDict, from_ase
    from nequip.integrations.utils import basic_transforms
    from nequip.scripts._compile_utils import COMPILE_TARGET_DICT
    from nequip.utils.aot import aot_export_model
    from nequip.utils.aoti_metadata import (
        NEQUIP_AOTI_INPUTS_KEY,
        NEQUIP_AOTI_OUTPUTS_KEY,
        serialize_aoti_keys,
    )

    model = build_model(kind)
    meta = metadata(model)
    target = COMPILE_TARGET_DICT["batch"]
    with nequip_state():
        names = meta["type_names"].split()
        atoms = _bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.symbols[[1, 5]] = "Au"
        data = from_ase(atoms)
        for t in basic_transforms(meta, float(meta["r_max"]), names, {n: n for n in names}):
            data = t(data)
        data = target["data_settings"](AtomicDataDict.with_batch_(data))
        dims = {"graph": torch.export.Dim("num_frames", min=2),
                "node": torch.export.Dim("num_nodes", min=2),
                "edge": torch.export.Dim("num_edges", min=2)}
        meta[NEQUIP_AOTI_INPUTS_KEY] = serialize_aoti_keys(target["input"])
        meta[NEQUIP_AOTI_OUTPUTS_KEY] = serialize_aoti_keys(target["output"])
        aot_export_model(model=model, device="cpu", input_fields=target["input"],
                         output_fields=target["output"], data=data,
                         batch_map=target["batch_map_settings"](dims),
                         output_path=str(out_path),
                         inductor_configs={"aot_inductor.metadata": meta}, seed=1)
    return pathlib.Path(out_path)


@pytest.mark.slow
def test_aot_batch_file_equals_torchscript_and_nequip(model_files, one_thread):
    """The .nequip.pt2 path: compiled once (about 10 min on 2 cores) and cached under
    ``$XDG_CACHE_HOME/ase_mlp-tests/nequip`` keyed by the model's weights and the
    nequip/torch versions (TorchScript archives are not byte-reproducible). AOTInductor
    code differs from TorchScript in operation order: 1e-10 relative still holds
    (measured ~1e-15)."""
    ts = model_files["nequip"]
    h = hashlib.sha256(f"{nequip.__version__} {torch.__version__} batch".encode())
    for name, t in sorted(build_model("nequip").state_dict().items()):
        h.update(name.encode() + t.detach().cpu().numpy().tobytes())
    key = h.hexdigest()[:16]
    path = _aot_cache_dir() / f"tiny-{key}.nequip.pt2"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
        compile_aot(ts, tmp)
        os.replace(tmp, path)
    aot = MLPCalculator(NequipModel.from_file(path), device="cpu")
    assert aot.model.kind == "aot" and aot.model.batched
    ts_calc = MLPCalculator(NequipModel.from_file(ts), device="cpu")
    images = random_structures(ELEMENTS, 4, rng=5, sizes=(1, 12), density=0.06,
                               min_distance=2.2) + [_alloy(10)]
    images.append(Atoms("CuAu", positions=[[0, 0, 0], [2.6, 0, 0]]))   # molecule
    props = ("energy", "forces", "stress", "energies")
    a_res = aot.calculate_batch(images, props)
    t_res = ts_calc.calculate_batch(images, props)
    worst = max(_rel(a[k], t[k]) for a, t in zip(a_res, t_res, strict=True) for k in t)
    assert worst < RTOL, worst
    aot.model.max_edges_per_call = 40     # several calls, each with its dummy frame
    c_res = aot.calculate_batch(images, props)
    assert max(_rel(a[k], t[k]) for a, t in zip(c_res, t_res, strict=True) for k in t) < RTOL
    aot.model.max_edges_per_call = 4096
    check_batch(images, aot, properties=props)
    # nequip's own loader and data pipeline on the same file: its NequIPCalculator refuses
    # a --target batch file (input keys differ) and the batch export needs >= 2 frames, so
    # the oracle is the loaded model on a 2-frame batch of nequip's from_ase + transforms
    from ase.stress import full_3x3_to_voigt_6_stress
    from nequip.data import AtomicDataDict, from_ase
    from nequip.integrations.utils import basic_transforms
    from nequip.model.inference_models import load_compiled_model

    frames = [_alloy(10), _alloy(12, repeat=1)]
    with nequip_state():
        model, meta = load_compiled_model(str(path), "cpu")
        names = meta["type_names"]
        steps = basic_transforms(meta, meta["r_max"], names, {n: n for n in names})
        data = []
        for atoms in frames:
            d = from_ase(atoms)
            for t in steps:
                d = t(d)
            data.append(d)
        ref = model(AtomicDataDict.batched_from_list(data))
    got = aot.calculate_batch(frames, props)
    errs = [_rel([g["energy"] for g in got], ref["total_energy"].detach().numpy().ravel()),
            _rel(np.concatenate([g["forces"] for g in got]), ref["forces"].detach().numpy()),
            _rel([g["stress"] for g in got],
                 [full_3x3_to_voigt_6_stress(s) for s in ref["stress"].detach().numpy()])]
    assert max(errs) < RTOL, errs


def test_pt2_file_reaches_the_nequip_format(tmp_path):
    """An AOTInductor package is a zip without TorchScript's ``code/`` folder: ase_mlp's
    own format must not claim it before the nequip format sees it."""
    import zipfile

    from ase_mlp.models.serialization import OwnFormat

    fake = tmp_path / "m.nequip.pt2"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("m.nequip/data/aotinductor/model/x.wrapper.so", b"")
        zf.writestr("m.nequip/archive_format", "pt2")
    assert NequipFormat.can_load([fake])
    assert not OwnFormat.can_load([fake])   # no data.pkl: not a torch.save archive
