"""Per-atom energies and virials of composite models (SumModel, Committee).

``Model.per_atom_energies`` / ``per_atom_virials`` are True for every model built on
``compute``; a metatomic member may lack them (no per-atom energy output, or an energy
that depends on the positions outside its neighbour lists: it finds out during a call).
A sum or committee has them only when all its members do, and ``MLPCalculator`` then
refuses ``energies`` / ``stresses`` with ``PropertyNotImplementedError`` (before, the
sum returned the member's NaN placeholders).

The metatomic member is the Ar/Kr Lennard-Jones of ``ase_mlp.models.metatomic.
lennard_jones`` (per-atom energies), re-exported with a system-level energy only, or
wrapped with a harmonic tether to the origin (uses the positions directly). The sums'
totals are checked against the members evaluated one by one (same code paths, so
1e-12 relative: only the summation order differs), and where per-atom values are
given, their sum against the total (1e-12).

No ``from __future__ import annotations``: the TorchScript module needs real
annotations.
"""

from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError


mta = pytest.importorskip("metatomic.torch")

from metatensor.torch import Labels, TensorBlock, TensorMap  # noqa: E402
from metatomic.torch import ModelOutput, System  # noqa: E402

from ase_mlp.calculators import MLPCalculator  # noqa: E402
from ase_mlp.models import ZBL, Committee, SumModel  # noqa: E402
from ase_mlp.models.base import Model  # noqa: E402
from ase_mlp.models.metatomic import MetatomicModel, lennard_jones  # noqa: E402


ELEMENTS = ["Ar", "Kr"]
SIGMA = [[3.40, 3.55], [3.55, 3.65]]            # Å
EPSILON = [[0.0104, 0.0125], [0.0125, 0.0140]]  # eV
CUTOFF = 7.0
TOL = 1e-12
PROPS = ("energy", "forces", "stress", "energies", "stresses")


class _Tethered(torch.nn.Module):
    """The LJ module plus ``0.01 eV/Å^2 |x_i|^2`` per atom: an energy term outside the
    neighbour lists, so the per-atom virials cannot come from the edge gradients."""

    def __init__(self, lj: torch.nn.Module):
        super().__init__()
        self.lj = lj

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        block = self.lj(systems, outputs, selected_atoms)["energy"].block()
        tether = [0.01 * (s.positions ** 2).sum(dim=1) for s in systems]
        values = block.values + torch.cat(tether).reshape(-1, 1)
        new = TensorBlock(values=values, samples=block.samples,
                          components=block.components, properties=block.properties)
        return {"energy": TensorMap(Labels(["_"], torch.tensor([[0]])), [new])}


def _lj():
    return lennard_jones(ELEMENTS, SIGMA, EPSILON, CUTOFF)


def _rewrap(module, sample_kind="atom"):
    caps = mta.ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind=sample_kind)},
        atomic_types=[18, 36], interaction_range=CUTOFF, length_unit="angstrom",
        supported_devices=["cpu"], dtype="float64")
    return MetatomicModel(mta.AtomisticModel(module.eval(), mta.ModelMetadata(), caps))


def _zbl():
    return ZBL(ELEMENTS, inner=1.0, outer=2.5)


def _solid(seed=0):
    """32 Ar/Kr atoms, strained and rattled, one pair inside the ZBL range."""
    atoms = bulk("Ar", "fcc", a=5.4, cubic=True).repeat(2)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Kr"
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.12, seed=seed)
    atoms.positions[1] = atoms.positions[0] + [1.2, 1.0, 0.0]
    return atoms


def _close(got, ref, what):
    got, ref = np.asarray(got), np.asarray(ref)
    err = np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-300)
    assert err <= TOL, f"{what}: relative difference {err:.2e} > {TOL:g}"


def _parts(members, atoms):
    return [MLPCalculator(m, device="cpu").calculate_batch([atoms], ("energy", "forces",
                                                                     "stress"))[0]
            for m in members]


def _check_totals(total, parts):
    assert abs(parts[1]["energy"]) > 1e-3          # the ZBL pair counts
    for key in ("energy", "forces", "stress"):
        _close(total[key], parts[0][key] + parts[1][key], key)


def test_defaults_and_composites():
    """Class-level defaults on Model; composites combine their members."""
    assert Model.per_atom_energies is True and Model.per_atom_virials is True
    zbl = _zbl()
    assert zbl.per_atom_energies and zbl.per_atom_virials
    committee = Committee(_zbl(), _zbl())
    assert committee.per_atom_energies and committee.per_atom_virials
    committee.models[1].per_atom_virials = False   # as a member that found out in a call
    assert committee.per_atom_energies and not committee.per_atom_virials
    assert not SumModel(_zbl(), committee).per_atom_virials


def test_sum_with_per_atom_lj_gives_everything():
    """LJ (per-atom energies, pair terms only) + ZBL: energies and stresses given, equal to
    the members' sums, and they add up to the totals."""
    lj, zbl = MetatomicModel(_lj()), _zbl()
    atoms = _solid(1)
    total = MLPCalculator(SumModel(lj, zbl), device="cpu").calculate_batch([atoms], PROPS)[0]
    parts = [MLPCalculator(m, device="cpu").calculate_batch([atoms], PROPS)[0]
             for m in (lj, zbl)]
    _check_totals(total, parts)
    for key in ("energies", "stresses"):
        _close(total[key], parts[0][key] + parts[1][key], key)
    _close(total["energies"].sum(), total["energy"], "sum of energies")
    _close(total["stresses"].sum(0), total["stress"], "sum of stresses")


def test_sum_refuses_per_atom_virials_of_a_position_dependent_member():
    """Tethered LJ + ZBL: energy, forces, stress and per-atom energies are given;
    per-atom virials are refused (they were NaN before), in batches of several model
    calls too (the flag is read after the last one)."""
    tethered = _rewrap(_Tethered(_lj().module))
    zbl = _zbl()
    model = SumModel(tethered, zbl)
    assert model.per_atom_virials                  # not known before a call
    atoms = _solid(2)
    calc = MLPCalculator(model, device="cpu", max_batch_atoms=40)
    res = calc.calculate_batch([atoms, _solid(3), _solid(4)], PROPS)
    assert not tethered.per_atom_virials and not calc.model.per_atom_virials
    assert calc.model.per_atom_energies
    _check_totals(res[0], _parts((tethered, zbl), atoms))
    for r in res:
        assert "stresses" not in r and np.isfinite(r["stress"]).all()
        _close(r["energies"].sum(), r["energy"], "sum of energies")
    atoms.calc = MLPCalculator(SumModel(tethered, zbl), device="cpu")
    assert np.isfinite(atoms.get_stress()).all()
    with pytest.raises(PropertyNotImplementedError,
                       match=r"SumModel cannot give per-atom virials \(stresses\)"):
        atoms.get_stresses()


def test_sum_refuses_per_atom_energies_of_a_system_level_member():
    """LJ declaring only a system-level energy + ZBL: ``energies`` refused (they were NaN
    before), per-atom virials still given (pair terms only) and adding up."""
    lj, zbl = _rewrap(_lj().module, sample_kind="system"), _zbl()
    model = SumModel(lj, zbl)
    assert not model.per_atom_energies and model.per_atom_virials
    atoms = _solid(5)
    res = MLPCalculator(model, device="cpu").calculate_batch([atoms], PROPS)[0]
    assert "energies" not in res
    _check_totals(res, _parts((lj, zbl), atoms))
    _close(res["stresses"].sum(0), res["stress"], "sum of stresses")
    atoms.calc = MLPCalculator(model, device="cpu")
    atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError,
                       match=r"SumModel cannot give per-atom energies \(energies\)"):
        atoms.get_potential_energies()


def test_sum_with_a_foreign_member_is_refused_by_save_before_writing(tmp_path):
    """A sum holding a model of another framework cannot be rebuilt from ase_mlp's format:
    save refuses it (naming the class) and writes nothing, instead of a file that fails to
    load later."""
    pytest.importorskip("metatomic.torch")
    from ase_mlp.models.metatomic import MetatomicModel, lennard_jones
    from ase_mlp.models.sum import SumModel
    from ase_mlp.models.zbl import ZBL

    lennard_jones(elements=["Ar", "Kr"], sigma=[[3.4, 3.5], [3.5, 3.6]],
                  epsilon=[[0.01, 0.01], [0.01, 0.01]], cutoff=7.0).save(str(tmp_path / "lj.pt"))
    lj = MetatomicModel.from_file(tmp_path / "lj.pt")
    with pytest.raises(TypeError, match="MetatomicModel cannot be saved"):
        SumModel(lj, ZBL(["Ar", "Kr"], 1.0, 2.0)).save(tmp_path / "sum.pt")
    assert not (tmp_path / "sum.pt").exists()
