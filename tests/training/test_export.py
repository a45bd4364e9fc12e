"""Fitted models exported with ``write_snap`` / ``write_mliap`` run in LAMMPS with our numbers.

Models fitted by :func:`ase_mlp.training.fit` (linear and quadratic SNAP for Ta, a two-element
NN-SNAP for GaN with distinct radii and weights, and linear SNAP on top of ZBL) are written to
LAMMPS files and evaluated by LAMMPS, serially (:class:`LammpsEvaluator`) and on two MPI ranks
(:func:`evaluate_mpi`): energies, forces and stresses equal :class:`MLPCalculator`'s to 1e-8
relative. ``write_snap`` takes SNAP models only; a ``SumModel(ZBL, SNAP)`` is exported as its
SNAP member plus LAMMPS's own ``pair_style hybrid/overlay zbl INNER OUTER snap``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors.bispectrum import Bispectrum
from ase_mlp.io.lammps import write_mliap, write_snap
from ase_mlp.io.lammps_mpi import mpi_available
from ase_mlp.io.lammps_runner import lammps_available
from ase_mlp.models import NNSNAP, ZBL, LinearSNAP, QuadraticSNAP, SumModel
from ase_mlp.training import fit


pytestmark = [
    pytest.mark.lammps,
    pytest.mark.skipif(not lammps_available(), reason="LAMMPS (pip install lammps mpich) is not "
                                                      "installed"),
]
needs_mpi = pytest.mark.skipif(not mpi_available(), reason="LAMMPS with MPI and mpirun "
                                                           "(pip install lammps mpich) missing")

TA = dict(rcutfac=4.67637, radii=[0.5], rfac0=0.99363, bzeroflag=False)
SHEAR = np.array([[1.0, 0.05, -0.03], [0.02, 0.98, 0.04], [-0.01, 0.03, 1.02]])


def rattled(atoms, rng, scale=0.1, shear=True):
    atoms = atoms.copy()
    if shear:
        atoms.set_cell(atoms.cell.array @ SHEAR, scale_atoms=True)
    atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
    return atoms


@pytest.fixture(scope="module")
def ta_frames():
    """12 Ta frames labelled by LAMMPS's Ta06A (SNAP + ZBL) plus noise, so no fit is exact."""
    from ase_mlp.io.lammps_runner import LammpsEvaluator, lammps_potentials_dir

    P = lammps_potentials_dir()
    rng = np.random.default_rng(5)
    frames = []
    with LammpsEvaluator("hybrid/overlay zbl 4 4.8 snap",
                         ["pair_coeff 1 1 zbl 73 73",
                          f"pair_coeff * * snap {P / 'Ta06A.snapcoeff'} "
                          f"{P / 'Ta06A.snapparam'} Ta"], ["Ta"]) as lmp:
        for k in range(12):
            lattice = ("bcc", 3.30) if k % 2 else ("fcc", 4.20)
            at = rattled(bulk("Ta", lattice[0], a=lattice[1], cubic=True).repeat(2), rng,
                         scale=rng.uniform(0.05, 0.15))
            r = lmp.evaluate(at)
            at.calc = SinglePointCalculator(
                at, energy=r["energy"] + rng.normal(scale=0.01 * len(at)),
                forces=r["forces"] + rng.normal(scale=0.05, size=(len(at), 3)),
                stress=r["stress"])
            frames.append(at)
    return frames


def ta_structures(rng):
    """A rattled sheared 54-atom cell with a close contact (ZBL range), and a 1-atom cell."""
    big = rattled(bulk("Ta", "bcc", a=3.30, cubic=True).repeat(3), rng, scale=0.08)
    big.positions[1] = big.positions[0] + np.array([1.6, 0.9, 0.7])
    small = rattled(bulk("Ta", "bcc", a=3.30), rng, scale=0.0)
    return [big, small]


def compare(ours, ref, natoms):
    emax = max(abs(ref["energy"]), natoms * 1e-3)
    assert abs(ours["energy"] - ref["energy"]) <= 1e-8 * emax, (ours["energy"], ref["energy"])
    fscale = max(np.abs(ref["forces"]).max(), 1e-3)
    np.testing.assert_allclose(ours["forces"], ref["forces"], rtol=0, atol=1e-8 * fscale)
    sscale = max(np.abs(ref["stress"]).max(), 1e-6)
    np.testing.assert_allclose(ours["stress"], ref["stress"], rtol=0, atol=1e-8 * sscale)


def check_lammps(model, style, coeffs, elements, structures, mpi=False):
    """Our calculator vs serial LAMMPS on every structure, and vs 2 MPI ranks on the first."""
    from ase_mlp.io.lammps_mpi import evaluate_mpi
    from ase_mlp.io.lammps_runner import LammpsEvaluator

    calc = MLPCalculator(model, device="cpu")
    ours = calc.calculate_batch(structures)
    with LammpsEvaluator(style, coeffs, elements) as lmp:
        for atoms, r in zip(structures, ours, strict=True):
            compare(r, lmp.evaluate(atoms), len(atoms))
    if mpi:
        res = evaluate_mpi(structures[0], style, coeffs, elements, nprocs=2)
        assert res["nprocs"] == 2
        compare(ours[0], res, len(structures[0]))


# ----------------------------------------------------------------------------- linear SNAP
@pytest.fixture(scope="module")
def linear_ta(ta_frames):
    model = fit(LinearSNAP(Bispectrum(["Ta"], twojmax=6, **TA)), ta_frames[:8], ta_frames[8:],
                stress_weight=1.0)
    assert np.abs(model.coefficients.detach().numpy()).max() > 0
    return model


@pytest.mark.parametrize("mpi", [False, pytest.param(True, marks=needs_mpi)],
                         ids=["serial", "mpi"])
def test_linear_snap_write_snap(linear_ta, tmp_path, rng, mpi):
    coeff, param = tmp_path / "fit.snapcoeff", tmp_path / "fit.snapparam"
    write_snap(linear_ta, coeff, param)
    check_lammps(linear_ta, "snap", [f"pair_coeff * * {coeff} {param} Ta"], ["Ta"],
                 ta_structures(rng), mpi=mpi)


def test_linear_snap_write_mliap(linear_ta, tmp_path, rng):
    mfile, dfile = tmp_path / "fit.mliap.model", tmp_path / "fit.mliap.descriptor"
    write_mliap(linear_ta, mfile, dfile)
    check_lammps(linear_ta, f"mliap model linear {mfile} descriptor sna {dfile}",
                 ["pair_coeff * * Ta"], ["Ta"], ta_structures(rng))


def test_quadratic_snap_write_snap_and_mliap(ta_frames, tmp_path, rng):
    model = fit(QuadraticSNAP(Bispectrum(["Ta"], twojmax=2, **TA)), ta_frames[:8])
    K = model.descriptor.n_descriptors
    assert np.abs(model.coefficients.detach().numpy()[:, 1 + K:]).max() > 0
    coeff, param = tmp_path / "q.snapcoeff", tmp_path / "q.snapparam"
    write_snap(model, coeff, param)
    assert "quadraticflag 1" in param.read_text()
    check_lammps(model, "snap", [f"pair_coeff * * {coeff} {param} Ta"], ["Ta"],
                 ta_structures(rng))
    mfile, dfile = tmp_path / "q.mliap.model", tmp_path / "q.mliap.descriptor"
    write_mliap(model, mfile, dfile)
    check_lammps(model, f"mliap model quadratic {mfile} descriptor sna {dfile}",
                 ["pair_coeff * * Ta"], ["Ta"], ta_structures(rng))


# ------------------------------------------------------------------- ZBL + SNAP (hybrid)
@pytest.mark.parametrize("mpi", [False, pytest.param(True, marks=needs_mpi)],
                         ids=["serial", "mpi"])
def test_zbl_plus_snap_as_hybrid_overlay(ta_frames, tmp_path, rng, mpi):
    """write_snap takes the SNAP member; LAMMPS adds its own ZBL with the same settings."""
    model = fit(SumModel(ZBL(["Ta"], 4.0, 4.8), LinearSNAP(Bispectrum(["Ta"], twojmax=4, **TA))),
                ta_frames[:8], stress_weight=1.0)
    coeff, param = tmp_path / "z.snapcoeff", tmp_path / "z.snapparam"
    with pytest.raises(TypeError, match=r"not SumModel.*write the SNAP member"):
        write_snap(model, coeff, param)
    write_snap(model.models[1], coeff, param)
    check_lammps(model, "hybrid/overlay zbl 4.0 4.8 snap",
                 ["pair_coeff 1 1 zbl 73 73", f"pair_coeff * * snap {coeff} {param} Ta"], ["Ta"],
                 ta_structures(rng), mpi=mpi)


# ------------------------------------------------------------------- NN-SNAP, two elements
@pytest.fixture(scope="module")
def gan_frames():
    """GaN frames labelled by a random linear SNAP truth (radii 0.5/0.42, weights 1/0.7)."""
    rng = np.random.default_rng(11)
    desc = Bispectrum(["Ga", "N"], twojmax=4, rcutfac=4.0, radii=[0.5, 0.42],
                      weights=[1.0, 0.7], rfac0=0.99363, bzeroflag=True)
    c = rng.normal(size=(2, 1 + desc.n_descriptors)) * 0.1
    c[:, 0] = [-4.0, -8.0]
    truth = LinearSNAP(desc, c)
    wurtzite = bulk("GaN", "wurtzite", a=3.19, c=5.19)
    frames = [rattled(wurtzite.repeat((2, 2, 1)), rng, scale=0.1, shear=False) for _ in range(6)]
    for at, r in zip(frames, MLPCalculator(truth, device="cpu").calculate_batch(frames),
                     strict=True):
        at.calc = SinglePointCalculator(at, energy=r["energy"], forces=r["forces"],
                                        stress=r["stress"])
    return desc, frames


@pytest.fixture(scope="module")
def nn_gan(gan_frames):
    desc, frames = gan_frames
    model = fit(NNSNAP(desc, hidden=(8, 6)), frames, epochs=5, batch_size=2, lr=1e-2)
    assert not torch.all(model.mean == 0) and not torch.all(model.std == 1)
    return model


def gan_structures(rng):
    wurtzite = bulk("GaN", "wurtzite", a=3.19, c=5.19)
    return [rattled(wurtzite.repeat((3, 3, 2)), rng, scale=0.08), rattled(wurtzite, rng, 0.05)]


@pytest.mark.parametrize("mpi", [False, pytest.param(True, marks=needs_mpi)],
                         ids=["serial", "mpi"])
def test_nn_snap_two_elements_write_mliap(nn_gan, tmp_path, rng, mpi):
    mfile, dfile = tmp_path / "gan.nn.mliap.model", tmp_path / "gan.mliap.descriptor"
    write_mliap(nn_gan, mfile, dfile)
    check_lammps(nn_gan, f"mliap model nn {mfile} descriptor sna {dfile}",
                 ["pair_coeff * * Ga N"], ["Ga", "N"], gan_structures(rng), mpi=mpi)


def test_write_snap_rejects_nn_snap(nn_gan, tmp_path):
    with pytest.raises(TypeError, match="use write_mliap"):
        write_snap(nn_gan, tmp_path / "x.snapcoeff", tmp_path / "x.snapparam")


def test_two_element_linear_snap_write_snap_and_mliap(gan_frames, tmp_path, rng):
    desc, frames = gan_frames
    model = fit(LinearSNAP(desc), frames[:4], frames[4:])
    coeff, param = tmp_path / "gan.snapcoeff", tmp_path / "gan.snapparam"
    write_snap(model, coeff, param)
    check_lammps(model, "snap", [f"pair_coeff * * {coeff} {param} Ga N"], ["Ga", "N"],
                 gan_structures(rng))
    mfile, dfile = tmp_path / "gan.mliap.model", tmp_path / "gan.mliap.descriptor"
    write_mliap(model, mfile, dfile)
    check_lammps(model, f"mliap model linear {mfile} descriptor sna {dfile}",
                 ["pair_coeff * * Ga N"], ["Ga", "N"], gan_structures(rng))


@pytest.mark.parametrize("mpi", [False, pytest.param(True, marks=needs_mpi)],
                         ids=["serial", "mpi"])
def test_export_lammps_zbl_sums(gan_frames, tmp_path, rng, mpi):
    """``ase_mlp.io.export.export_lammps`` writes SumModel(ZBL, SNAP/NN-SNAP) as hybrid/overlay
    (two elements: ZBL between Ga and N too)."""
    export = pytest.importorskip("ase_mlp.io.export")
    desc, frames = gan_frames
    zbl = ZBL(["Ga", "N"], 1.2, 1.8)
    structures = gan_structures(rng)
    structures[0].positions[1] = structures[0].positions[0] + np.array([0.9, 0.6, 0.5])
    for k, snap in enumerate([LinearSNAP(desc), NNSNAP(desc, hidden=(4,))]):
        opts = {"epochs": 2} if isinstance(snap, NNSNAP) else {}
        model = fit(SumModel(zbl, snap), frames[:4], **opts)
        pot = export.export_lammps(model, tmp_path / f"m{k}")
        assert pot.pair_style.startswith("hybrid/overlay zbl")
        style, *coeffs = pot.commands(absolute=True)
        check_lammps(model, style.split(None, 1)[1], coeffs, ["Ga", "N"], structures, mpi=mpi)
