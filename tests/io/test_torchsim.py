"""torch-sim runs ase_mlp models exported by ``export_metatomic``.

``torch_sim.models.metatomic.MetatomicModel`` loads the exported ``.pt`` and evaluates a
batched ``SimState`` (one metatomic ``System`` per structure, vesin neighbour lists,
autograd forces and strain stress). The oracle is ase_mlp's ``MLPCalculator`` on the
model that was exported. Same float64 sums in another order: agreement ~1e-15 relative
(measured <= 2e-15), asserted at ``RTOL = 1e-10``. Model: quadratic SNAP (chemflag,
bnormflag) + ZBL, the hybrid/overlay users fit; structures of 16, 24 and 24 atoms, one
with a W-Be pair inside ZBL's inner radius.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.stress import voigt_6_to_full_3x3_stress


pytest.importorskip("metatomic.torch")
ts = pytest.importorskip("torch_sim")

from ase_mlp.calculators import MLPCalculator  # noqa: E402
from ase_mlp.descriptors import Bispectrum  # noqa: E402
from ase_mlp.io.metatomic_export import export_metatomic  # noqa: E402
from ase_mlp.models import QuadraticSNAP  # noqa: E402
from ase_mlp.models.sum import SumModel  # noqa: E402
from ase_mlp.models.zbl import ZBL  # noqa: E402


RTOL = 1e-10
CPU = torch.device("cpu")


def _metatomic_model_class():
    with warnings.catch_warnings():
        # torch-sim 0.3 warns that metatrain (only for .ckpt files and "pet-mad") is absent
        warnings.simplefilter("ignore")
        from torch_sim.models.metatomic import MetatomicModel
    return MetatomicModel


def _model():
    d = Bispectrum(["W", "Be"], 4, 4.8, [0.5, 0.42], [1.0, 0.96], chemflag=True,
                   bnormflag=True)
    K = d.n_descriptors
    rng = np.random.default_rng(7)
    snap = QuadraticSNAP(d, np.concatenate([rng.normal(size=(2, 1 + K)) * 0.02,
                                            rng.normal(size=(2, K * (K + 1) // 2)) * 2e-3], 1))
    return SumModel(snap, ZBL(["W", "Be"], inner=1.6, outer=2.6))


def _wbe(seed, repeat=(2, 2, 2), close=False):
    atoms = bulk("W", "bcc", a=3.17, cubic=True).repeat(repeat)
    atoms.set_chemical_symbols(["W", "Be"] * (len(atoms) // 2))
    atoms.set_cell(atoms.cell.array + [[0, 0.2, 0], [0, 0, 0], [0.1, 0, 0]], scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    if close:   # a W-Be pair at 1.53 Å: ZBL's screened Coulomb
        atoms.positions[1] = atoms.positions[0] + [1.2, 0.9, 0.3]
    return atoms


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _model()
    path = export_metatomic(model, tmp_path_factory.mktemp("ts") / "snap_zbl.pt")
    return model, _metatomic_model_class()(str(path), device="cpu")


def _assert_close(got, ref, what):
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-300)
    assert err < RTOL, f"{what}: relative difference {err:.3g}"


def _oracle(model, images):
    res = MLPCalculator(model, device="cpu").calculate_batch(images,
                                                            ("energy", "forces", "stress"))
    return (np.array([r["energy"] for r in res]), np.concatenate([r["forces"] for r in res]),
            np.stack([voigt_6_to_full_3x3_stress(r["stress"]) for r in res]))


def test_batched_simstate_equals_mlpcalculator(exported, one_thread):
    model, ts_model = exported
    images = [_wbe(1, close=True), _wbe(2, (2, 2, 3)), _wbe(3, (3, 2, 2))]
    out = ts_model(ts.io.atoms_to_state(images, CPU, torch.float64))
    energy, forces, stress = _oracle(model, images)
    _assert_close(out["energy"], energy, "energy")
    _assert_close(out["forces"], forces, "forces")
    _assert_close(out["stress"], stress, "stress")    # torch-sim's (3, 3), ASE's sign
    assert np.abs(forces).max() > 1.0                  # the ZBL pair is felt


def test_nve_and_fire_run_with_the_exported_model(exported, one_thread):
    """10 velocity-Verlet steps of 1 fs at 300 K conserve the energy (drift well under
    kT per structure), and the final state evaluates like MLPCalculator on the same
    positions; 10 FIRE steps lower every energy."""
    model, ts_model = exported
    images = [_wbe(4), _wbe(5, (2, 2, 3))]
    state = ts.io.atoms_to_state(images, CPU, torch.float64)
    kT = 300 * ts.units.MetalUnits.temperature
    init, update = ts.integrators.nve(
        ts_model, dt=torch.tensor(1e-3 * ts.units.MetalUnits.time, dtype=torch.float64),
        kT=torch.tensor(kT, dtype=torch.float64), seed=3)
    md = init(state)

    def total(s):
        return s.energy + ts.quantities.calc_kinetic_energy(
            masses=s.masses, momenta=s.momenta, system_idx=s.system_idx)

    e0 = total(md)
    start = md.positions.clone()
    for _ in range(10):
        md = update(md)
    assert (md.positions - start).abs().max() > 1e-3
    assert (total(md) - e0).abs().max() < 0.05 * kT
    final = ts.io.state_to_atoms(md)
    _assert_close(md.energy, _oracle(model, final)[0], "energy after NVE")

    init, step = ts.optimizers.fire(ts_model)
    relax = init(ts.io.atoms_to_state(images, CPU, torch.float64))
    e_start = relax.energy.clone()
    for _ in range(10):
        relax = step(relax)
    assert (relax.energy < e_start - 1e-3).all()
