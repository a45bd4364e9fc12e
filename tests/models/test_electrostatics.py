"""``Electrostatics``: Madelung constants, LAMMPS/matscipy parity, smearing limits, gradients.

Reference numbers: ``docs/methods.md`` section 4.5 (E1-E4). Tolerances: Madelung
constants to 1e-6 (the issue's target; the sums are converged to ~1e-9), oracle parity to 1e-6
relative (LAMMPS tabulates erfc to ~1e-7), finite differences to 1e-6 eV/Å with central
differences of 1e-4 Å (truncation ~h^2 |F''| ~ 1e-8).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.integrate import quad

from ase_mlp.calculators import MLPCalculator
from ase_mlp.io.lammps_runner import lammps_available
from ase_mlp.models import ZBL, Electrostatics, LinearSNAP, SumModel, load
from ase_mlp.models import _coulomb as C


KE = C.COULOMB_CONSTANT
NACL = {"Na": 1, "Cl": -1}


def calc(model, **kw):
    return MLPCalculator(model, device="cpu", **kw)


def rattled_nacl(rng, repeat=2, amp=0.1, shear=0.3):
    at = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    at.rattle(amp, rng=rng)
    at.cell[0, 1] += shear  # triclinic
    return at


def with_charges(at, charges=NACL):
    at.set_initial_charges([charges[s] for s in at.get_chemical_symbols()])
    return at


# ------------------------------------------------------------------ E1, E2: point charges
@pytest.mark.parametrize("name, atoms, madelung", [
    ("NaCl", bulk("NaCl", "rocksalt", a=5.64), 1.747565),
    ("CsCl", bulk("CsCl", "cesiumchloride", a=4.11), 1.762675),
    ("ZnS", bulk("ZnS", "zincblende", a=5.41), 1.638055),
])
def test_madelung_constants(name, atoms, madelung):
    sym = list(dict.fromkeys(atoms.get_chemical_symbols()))
    atoms.calc = calc(Electrostatics({sym[0]: 1, sym[1]: -1}))
    d = atoms.get_all_distances(mic=True)
    r_nn = d[d > 0].min()
    m = -atoms.get_potential_energy() * r_nn / KE
    assert m == pytest.approx(madelung, rel=1e-6)
    assert np.abs(atoms.get_forces()).max() < 1e-12  # ideal sites
    # a homogeneous degree -1 energy: sigma = -E / 3V, isotropic
    s = atoms.get_stress()
    np.testing.assert_allclose(s[:3], -atoms.get_potential_energy() / (3 * atoms.get_volume()),
                               rtol=1e-6)
    assert np.abs(s[3:]).max() < 1e-12


def test_nacl_cubic_cell_reference():
    at = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    at.calc = calc(Electrostatics(NACL))
    assert at.get_potential_energy() == pytest.approx(-35.694056, abs=2e-6)
    np.testing.assert_allclose(at.get_stress()[:3], 0.0663189, rtol=2e-6)


def test_energy_independent_of_splitting(rng):
    """The Ewald splitting (alpha, from the real-space cutoff) is a convergence parameter."""
    at = rattled_nacl(rng)
    res = [calc(Electrostatics(NACL, cutoff=rc)).calculate_batch([at])[0] for rc in (7.0, 12.0)]
    assert res[0]["energy"] == pytest.approx(res[1]["energy"], rel=1e-9)
    np.testing.assert_allclose(res[0]["forces"], res[1]["forces"], atol=1e-7)
    np.testing.assert_allclose(res[0]["stress"], res[1]["stress"], atol=1e-9)


# ------------------------------------------------------------------ oracles
@pytest.mark.lammps
@pytest.mark.skipif(not lammps_available(), reason="LAMMPS (pip install lammps mpich) missing")
def test_matches_lammps_ewald(rng):
    """Rattled triclinic 64-atom NaCl: LAMMPS coul/long + kspace_style ewald. LAMMPS's
    default erfc table (2^12 points) is good to ~1e-6 only: ``pair_modify table 16``."""
    from ase_mlp.io.lammps_runner import LammpsEvaluator

    at = with_charges(rattled_nacl(rng))
    with LammpsEvaluator("coul/long 10.0", ["pair_coeff * *"], ["Na", "Cl"],
                         atom_style="charge",
                         extra_commands=["kspace_style ewald 1e-14",
                                         "pair_modify table 16"]) as lmp:
        ref = lmp.evaluate(at)
    ours = calc(Electrostatics(NACL, accuracy=1e-12)).calculate_batch([at])[0]
    assert ours["energy"] == pytest.approx(ref["energy"], rel=1e-8)  # measured 7e-10
    err = np.linalg.norm(ours["forces"] - ref["forces"]) / np.linalg.norm(ref["forces"])
    assert err < 1e-6  # measured 1.4e-7
    assert np.abs(ours["stress"] - ref["stress"]).max() < 1e-7 * np.abs(ref["stress"]).max()
    np.testing.assert_allclose(ours["energies"], ref["energies"], atol=1e-6)


def test_matches_matscipy_ewald(rng):
    """Cubic rattled NaCl against matscipy's Ewald (its parameters passed explicitly:
    matscipy 1.3.1 cannot pick them itself on NumPy >= 1.24, methods.md section 4.4)."""
    from matscipy.calculators.ewald import Ewald

    at = with_charges(rattled_nacl(rng, shear=0.0))
    model = Electrostatics(NACL, accuracy=1e-10, cutoff=9.0)
    ref_calc = Ewald()
    n = int(math.ceil(model.kcut * at.cell[0, 0] / (2 * math.pi)))
    ref_calc.set(cutoff=9.0, accuracy=1e-10, verbose=False,
                 kspace={"alpha": model.alpha, "nbk_c": [n, n, n], "cutoff": model.kcut})
    ref_at = at.copy()
    ref_at.set_array("charge", at.get_initial_charges())
    ref_at.calc = ref_calc
    ours = calc(model).calculate_batch([at])[0]
    assert ours["energy"] == pytest.approx(ref_at.get_potential_energy(), rel=1e-7)
    np.testing.assert_allclose(ours["forces"], ref_at.get_forces(), atol=1e-6)
    np.testing.assert_allclose(ours["stress"], ref_at.get_stress(), atol=1e-8)


# ------------------------------------------------------------------ E3, smearing
@pytest.mark.parametrize("sigma, excl, incl", [(0.5, -8.921474, 7.326786),
                                               (1.0, -7.705327, 0.418803)])
def test_gaussian_smeared_nacl(sigma, excl, incl):
    at = bulk("NaCl", "rocksalt", a=5.64)
    for include, ref in ((False, excl), (True, incl)):
        at.calc = calc(Electrostatics(NACL, density="gaussian", width=sigma,
                                      include_self_energy=include))
        assert at.get_potential_energy() == pytest.approx(ref, abs=2e-6)


def test_self_energies():
    q = torch.tensor([1.0])
    assert KE * float(C.self_energy(q, "gaussian", torch.tensor([1.0]))) == pytest.approx(
        4.062065, abs=1e-6)
    assert KE * float(C.self_energy(q, "slater", torch.tensor([0.5]))) == pytest.approx(
        4.499889, abs=1e-6)  # lambda = 2 / Å


def _fourier_pair(r, la, lb):
    """(2/pi) int_0^inf sin(kr)/(kr) F_a F_b dk, F = l^4/(l^2+k^2)^2: the Slater clouds'
    interaction from its Fourier integral, by quadrature."""
    f = lambda k: math.sin(k * r) / (k * r) * la**4 / (la**2 + k * k) ** 2 * lb**4 / (  # noqa
        lb**2 + k * k) ** 2
    val, _ = quad(f, 0, np.inf, limit=400, epsabs=1e-13, epsrel=1e-12)
    return 2 / math.pi * val


@pytest.mark.parametrize("wa, wb", [(0.5, 0.5), (0.4, 0.7), (1.0, 0.3)])
def test_slater_pair_matches_fourier_integral(wa, wb):
    r = torch.tensor([0.3, 1.0, 2.5, 5.0], dtype=torch.float64)
    ours = 1 / r + C.pair_correction(r, "slater", torch.full_like(r, wa), torch.full_like(r, wb))
    ref = [_fourier_pair(float(x), 1 / wa, 1 / wb) for x in r]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-9)


@pytest.mark.parametrize("density, width", [("gaussian", 0.7), ("slater", 0.5),
                                            ("slater", {"Na": 0.4, "Cl": 0.6})])
def test_smeared_pair_limits(density, width):
    """An open Na-Cl pair: point-charge energy at large separation; finite at zero."""
    model = Electrostatics(NACL, density=density, width=width)
    c = calc(model, min_distance=0)  # the d -> 0 limit is the point of this test
    far = Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 40 * 0.7]])
    assert c.get_potential_energy(far) == pytest.approx(-KE / (40 * 0.7), rel=1e-12)
    e = [c.get_potential_energy(Atoms("NaCl", positions=[[0, 0, 0], [0, 0, d]]))
         for d in (1e-3, 1e-5)]
    wa, wb = (width["Na"], width["Cl"]) if isinstance(width, dict) else (width, width)
    if density == "gaussian":
        limit = -KE * math.sqrt(2 / math.pi) / math.hypot(wa, wb)
    else:
        limit = -KE * _fourier_pair(1e-6, 1 / wa, 1 / wb)
    assert np.isfinite(e).all()
    assert e[1] == pytest.approx(limit, rel=1e-6)
    assert abs(e[0] - limit) < 1e-4 * abs(limit)
    if density == "slater" and wa == wb:
        assert limit == pytest.approx(-KE * 5 / (16 * wa), rel=1e-9)  # 5 lambda / 16


# ------------------------------------------------------------------ E4, gradients
def _fd_forces(c, at, atoms_idx, h=1e-4):
    out = np.zeros((len(atoms_idx), 3))
    for n, i in enumerate(atoms_idx):
        for d in range(3):
            e = []
            for s in (h, -h):
                b = at.copy()
                b.positions[i, d] += s
                e.append(c.calculate_batch([b], ("energy",))[0]["energy"])
            out[n, d] = -(e[0] - e[1]) / (2 * h)
    return out


def _fd_stress(c, at, h=1e-5):
    out = np.zeros(6)
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    for n, (a, b) in enumerate(pairs):
        e = []
        for s in (h, -h):
            eps = np.eye(3)
            eps[a, b] += s / (2 if a != b else 1)
            eps[b, a] += s / 2 if a != b else 0
            x = at.copy()
            x.set_cell(at.cell.array @ eps, scale_atoms=True)
            e.append(c.calculate_batch([x], ("energy",))[0]["energy"])
        out[n] = (e[0] - e[1]) / (2 * h) / at.get_volume()
    return out


@pytest.mark.parametrize("kw", [dict(), dict(density="gaussian", width=0.8),
                                dict(density="slater", width={"Na": 0.35, "Cl": 0.5}),
                                dict(method="pme", pme_order=6)])
def test_forces_and_stress_by_finite_differences(rng, kw):
    """Tight accuracy: the truncated sums jump by ~accuracy when a pair crosses the cutoff
    under the FD strain, which the 1e-5 strain step would amplify by 1/(2 h V)."""
    at = rattled_nacl(rng)
    c = calc(Electrostatics(NACL, accuracy=1e-12, **kw))
    r = c.calculate_batch([at])[0]
    idx = [0, 17, 40]
    np.testing.assert_allclose(r["forces"][idx], _fd_forces(c, at, idx), atol=1e-6)
    np.testing.assert_allclose(r["stress"], _fd_stress(c, at), atol=1e-8)
    assert np.abs(r["forces"].sum(0)).max() < 1e-10  # Newton's third law, k-space included
    np.testing.assert_allclose(r["stresses"].sum(0), r["stress"], atol=1e-12)


def test_open_cluster_direct_sum(rng):
    """Open structures: the all-pairs sum, checked pair by pair, with FD forces."""
    at = Atoms("Na4Cl4", positions=rng.uniform(0, 6, (8, 3)))
    q = np.array([1.0] * 4 + [-1.0] * 4)
    c = calc(Electrostatics(NACL))
    d = at.get_all_distances()
    iu = np.triu_indices(8, 1)
    ref = KE * np.sum(np.outer(q, q)[iu] / d[iu])
    r = c.calculate_batch([at], ("energy", "forces"))[0]
    assert r["energy"] == pytest.approx(ref, rel=1e-13)
    np.testing.assert_allclose(r["forces"][[1, 6]], _fd_forces(c, at, [1, 6]), atol=1e-6)
    assert np.abs(r["forces"].sum(0)).max() < 1e-10


def test_batch_mixes_open_and_periodic(rng):
    structures = [rattled_nacl(rng), Atoms("NaCl", positions=[[0, 0, 0], [2.0, 0.5, 0]]),
                  bulk("NaCl", "rocksalt", a=5.5)]
    c = calc(Electrostatics(NACL))
    batch = c.calculate_batch(structures)
    for at, r in zip(structures, batch, strict=True):
        single = c.calculate_batch([at])[0]
        assert r["energy"] == pytest.approx(single["energy"], rel=1e-12)
        np.testing.assert_allclose(r["forces"], single["forces"], atol=1e-12)


# ------------------------------------------------------------------ PME, dtype, per-atom
def test_pme_agrees_with_ewald(rng):
    """Smooth PME (our B-spline mesh, analytic forces and virial) converges to Ewald."""
    at = rattled_nacl(rng, repeat=3)
    ew = calc(Electrostatics(NACL, method="ewald")).calculate_batch([at])[0]
    for kw, tol in ((dict(), 2e-6), (dict(mesh_spacing=0.4, pme_order=10), 1e-8),
                    (dict(pme_order=5, mesh_spacing=0.4), 1e-4)):
        pm = calc(Electrostatics(NACL, method="pme", **kw)).calculate_batch([at])[0]
        assert pm["energy"] == pytest.approx(ew["energy"], rel=tol)
        err = np.linalg.norm(pm["forces"] - ew["forces"]) / np.linalg.norm(ew["forces"])
        assert err < 10 * tol, kw
        assert np.abs(pm["stress"] - ew["stress"]).max() < 10 * tol * np.abs(ew["stress"]).max()
        assert np.abs(pm["forces"].sum(0)).max() < 1e-5 * np.abs(pm["forces"]).max()
    # without stress (MD at constant volume) the virial is skipped: same forces
    for method in ("pme", "ewald"):
        full = calc(Electrostatics(NACL, method=method)).calculate_batch([at])
        fast = calc(Electrostatics(NACL, method=method)).calculate_batch(
            [at], ("energy", "forces"))
        assert "stress" not in fast[0]
        np.testing.assert_allclose(fast[0]["forces"], full[0]["forces"], rtol=0, atol=1e-12)
        assert fast[0]["energy"] == pytest.approx(full[0]["energy"], rel=1e-14)


def test_pme_bspline_partition_of_unity():
    from ase_mlp.models import _pme

    w = torch.linspace(0, 0.999, 50, dtype=torch.float64)
    for order in (2, 4, 5, 8):
        v, dv = _pme.bspline(w, order)
        np.testing.assert_allclose(v.sum(1).numpy(), 1.0, atol=1e-14)  # sum_k M_p(w + k) = 1
        np.testing.assert_allclose(dv.sum(1).numpy(), 0.0, atol=1e-13)
        h = 1e-6  # derivative by finite differences
        vp, _ = _pme.bspline(w + h, order)
        vm, _ = _pme.bspline(w - h, order)
        np.testing.assert_allclose(dv[1:-1].numpy(), ((vp - vm) / (2 * h))[1:-1].numpy(),
                                   atol=1e-8)


def test_float32_and_per_atom_charges(rng):
    at = rattled_nacl(rng)
    q = np.array([NACL[s] for s in at.get_chemical_symbols()], dtype=float)
    ref = calc(Electrostatics(NACL)).calculate_batch([at])[0]
    per_atom = calc(Electrostatics(q, elements=["Na", "Cl"])).calculate_batch([at])[0]
    assert per_atom["energy"] == pytest.approx(ref["energy"], rel=1e-13)
    f32 = calc(Electrostatics(NACL), dtype=torch.float32).calculate_batch([at])[0]
    assert f32["energy"] == pytest.approx(ref["energy"], rel=1e-5)
    np.testing.assert_allclose(f32["forces"], ref["forces"], atol=1e-3)


def test_charged_cell_background(rng):
    """A charged cell with a neutralising background: energy independent of alpha."""
    at = rattled_nacl(rng)
    charges = {"Na": 1.0, "Cl": -0.8}
    with pytest.raises(ValueError, match="net charge"):
        calc(Electrostatics(charges)).calculate_batch([at])
    e = [calc(Electrostatics(charges, neutralize=True, cutoff=rc)).calculate_batch([at])[0]
         for rc in (7.0, 12.0)]
    assert e[0]["energy"] == pytest.approx(e[1]["energy"], rel=1e-9)
    np.testing.assert_allclose(e[0]["stress"], e[1]["stress"], atol=1e-9)
    pme = calc(Electrostatics(charges, neutralize=True, method="pme", mesh_spacing=0.4,
                              pme_order=10)).calculate_batch([at])[0]
    assert pme["energy"] == pytest.approx(e[0]["energy"], rel=1e-8)


# ------------------------------------------------------------------ composition, persistence
def test_sum_with_ml_model_and_round_trip(rng, tmp_path):
    from ase_mlp.descriptors.bispectrum import Bispectrum

    desc = Bispectrum(["Na", "Cl"], twojmax=2, rcutfac=4.0, radii=[0.5, 0.5], bzeroflag=False)
    coef = rng.normal(size=(2, 1 + desc.n_descriptors)) * 0.05
    snap = LinearSNAP(desc, coef)
    es = Electrostatics(NACL, density="gaussian", width=0.9)
    zbl = ZBL(["Na", "Cl"], 1.0, 2.0)
    total = SumModel(zbl, es, snap)
    at = rattled_nacl(rng)
    r = calc(total).calculate_batch([at])[0]
    parts = [calc(m).calculate_batch([at])[0] for m in (zbl, es, snap)]
    for key in ("energy", "forces", "stress", "energies"):
        np.testing.assert_allclose(r[key], sum(p[key] for p in parts), rtol=1e-12, atol=1e-12)
    total.save(tmp_path / "m.pt")
    again = calc(load(tmp_path / "m.pt")).calculate_batch([at])[0]
    np.testing.assert_allclose(again["forces"], r["forces"], atol=0)
    assert again["energy"] == r["energy"]


def test_ml_part_fitted_on_the_residual(rng):
    """Delta-learning: labels = Ewald baseline + a random linear SNAP; fitting
    SumModel(Electrostatics, LinearSNAP) holds the baseline fixed and recovers the SNAP."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ase_mlp.descriptors.bispectrum import Bispectrum
    from ase_mlp.training import fit

    desc = Bispectrum(["Na", "Cl"], twojmax=2, rcutfac=4.0, radii=[0.5, 0.5], bzeroflag=False)
    coef = rng.normal(size=(2, 1 + desc.n_descriptors)) * 0.05
    es = Electrostatics(NACL, density="slater", width=0.5)
    truth = SumModel(es, LinearSNAP(desc, coef))
    frames = [rattled_nacl(rng, repeat=1, amp=0.15, shear=rng.uniform(0, 0.3))
              for _ in range(6)]
    for at, r in zip(frames, calc(truth).calculate_batch(frames), strict=True):
        at.calc = SinglePointCalculator(at, energy=r["energy"], forces=r["forces"],
                                        stress=r["stress"])
    fitted = fit(SumModel(es, LinearSNAP(desc)), frames, stress_weight=1.0,
                 regularization=0.0)
    assert isinstance(fitted.models[0], Electrostatics)
    got = fitted.models[1].coefficients.detach().numpy()
    # stoichiometric frames fix only the sum of the two per-element constants
    np.testing.assert_allclose(got[:, 1:], coef[:, 1:], rtol=1e-6, atol=1e-8)
    assert got[:, 0].sum() == pytest.approx(coef[:, 0].sum(), abs=1e-8)


# ------------------------------------------------------------------ bad input
def test_bad_input(rng):
    at = rattled_nacl(rng)
    with pytest.raises(ValueError, match="no entry for element"):
        Electrostatics({"Na": 1}, elements=["Na", "Cl"])
    with pytest.raises(ValueError, match="needs a width"):
        Electrostatics(NACL, density="gaussian")
    with pytest.raises(ValueError, match="only used with"):
        Electrostatics(NACL, width=1.0)
    with pytest.raises(ValueError, match="density must be"):
        Electrostatics(NACL, density="slab")
    with pytest.raises(ValueError, match="less than 1%"):
        Electrostatics(NACL, density="slater", width={"Na": 0.5, "Cl": 0.502})
    with pytest.raises(ValueError, match="too short"):
        Electrostatics(NACL, density="gaussian", width=2.0, cutoff=6.0)
    with pytest.raises(ValueError, match="must be finite"):
        Electrostatics({"Na": float("nan"), "Cl": -1})
    with pytest.raises(ValueError, match="need the element list"):
        Electrostatics([1.0, -1.0])
    with pytest.raises(ValueError, match="has length 2 but structure 0 has 64 atoms"):
        calc(Electrostatics([1.0, -1.0], elements=["Na", "Cl"])).calculate_batch([at])
    slab = at.copy()
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="pbc"):
        calc(Electrostatics(NACL)).calculate_batch([slab])
    with pytest.raises(ValueError, match="not known to this model"):
        calc(Electrostatics(NACL)).calculate_batch([bulk("Cu")])
    with pytest.raises(TypeError, match="reciprocal-space"):
        SumModel(Electrostatics(NACL)).compute(None, None, True)
