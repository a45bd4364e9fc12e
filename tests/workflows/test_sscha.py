"""SSCHA with batched ensembles (python-sscha + cellconstructor, optional extra ``sscha``).

Done-when: on a harmonic force-constant model the SSCHA free energy and frequencies equal the
exact quantum harmonic result; on the anharmonic GaN NN-SNAP crystal the batched ensemble
evaluation equals python-sscha's own one-by-one ``compute_ensemble`` to 1e-10 per
configuration; the anharmonic zone-centre frequencies converge with ensemble size (spread
~ 1/sqrt(N)).
"""

import contextlib
import os

import numpy as np
import pytest


_WHY = ("python-sscha/cellconstructor not importable (pip install 'ase-mlp[sscha]'; they need "
        "gfortran and BLAS/LAPACK, see docs/sscha.md)")
# ImportError too, not only ModuleNotFoundError: a broken Fortran extension also skips
pytest.importorskip("cellconstructor.Phonons", reason=_WHY, exc_type=ImportError)
pytest.importorskip("sscha.Ensemble", reason=_WHY, exc_type=ImportError)

import cellconstructor as CC  # noqa: E402
import sscha.Ensemble  # noqa: E402

from ase_mlp.calculators import MLPCalculator  # noqa: E402
from ase_mlp.cli import default_model_path  # noqa: E402
from ase_mlp.workflows import sscha as S  # noqa: E402
from ase_mlp.workflows.phases import wurtzite  # noqa: E402


class ForceConstantCalculator:
    """E = 1/2 u^T Phi u (eV, Å), u = positions - x0: an exactly harmonic crystal, batched."""

    def __init__(self, atoms, phi):
        self.x0 = atoms.get_positions().copy()
        self.phi = np.asarray(phi, dtype=float)
        self.calls = 0

    def calculate_batch(self, images, properties=("energy", "forces")):
        self.calls += 1
        out = []
        for im in images:
            u = (im.get_positions() - self.x0).reshape(-1)
            f = -self.phi @ u
            out.append({"energy": 0.5 * u @ self.phi @ u, "forces": f.reshape(-1, 3)})
        return out


@contextlib.contextmanager
def numpy_seed(seed):
    """python-sscha draws from NumPy's global generator: seed it here, restore it after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@pytest.fixture(scope="module")
def gan_calc():
    return MLPCalculator.from_file(default_model_path(), device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def gan():
    return wurtzite(("Ga", "N"), a=3.19, c=5.19, u=0.377)


@pytest.fixture(scope="module")
def gan_dyn(gan, gan_calc):
    """Symmetrised harmonic dynamical matrix of the 4-atom wurtzite cell (Gamma only)."""
    dyn = S.dynamical_matrix(gan, S.force_constants(gan, gan_calc))
    with contextlib.redirect_stdout(None):
        dyn.Symmetrize()
    return dyn


def _phi_eV(dyn):
    return np.real(dyn.dynmats[0]) * CC.Units.RY_TO_EV * CC.Units.A_TO_BOHR**2


def _ensemble(dyn, temperature_K, n, seed):
    with numpy_seed(seed):
        ens = sscha.Ensemble.Ensemble(dyn, temperature_K, dyn.GetSupercell())
        ens.generate(n)
    return ens


def test_dynamical_matrix_units_match_numpy_phonons(gan, gan_calc):
    phi = S.force_constants(gan, gan_calc)
    dyn = S.dynamical_matrix(gan, phi)
    w_cc = S._dyn_energies_eV(dyn)
    w_np = S.phonon_energies(phi, gan.get_masses())
    assert w_np[-1] > 0.08                                       # GaN optical ~ 95 meV
    np.testing.assert_allclose(w_cc[3:], w_np[3:], rtol=1e-6)   # CC vs CODATA constants


def test_harmonic_model_gives_exact_quantum_free_energy_and_frequencies(gan, gan_dyn, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)                       # nothing may be written to the cwd
    phi = _phi_eV(gan_dyn)
    calc = ForceConstantCalculator(gan, phi)
    T = 300.0
    w_exact = S.phonon_energies(phi, gan.get_masses())
    f_exact = S.harmonic_free_energy(w_exact, T)
    state = np.random.get_state()
    res = S.relax((gan, 1.5 * phi), calc, T, 40, max_pop=5, seed=1, hessian=True)
    assert np.array_equal(np.random.get_state()[1], state[1])    # global RNG restored
    assert os.listdir(tmp_path) == []
    assert res.converged and res.populations == 1
    assert calc.calls == 1                            # one calculate_batch call per population
    # exact: F = sum_modes [hw/2 + kT ln(1 - exp(-hw/kT))] (translations left out)
    # (1e-7 relative: cellconstructor's Ry and bohr differ from ASE's CODATA 2006 ones)
    assert abs(res.free_energy - f_exact) < 1e-6 * abs(f_exact), (res.free_energy, f_exact)
    assert res.free_energy_error < 1e-8
    np.testing.assert_allclose(res.frequencies[3:], w_exact[3:], rtol=1e-6)
    np.testing.assert_allclose(res.hessian_frequencies[3:], w_exact[3:], rtol=1e-6)
    # the start (1.5 Phi) was far from it
    assert abs(S.harmonic_free_energy(S.phonon_energies(1.5 * phi, gan.get_masses()), T)
               - f_exact) > 1e-2


def test_batched_equals_one_by_one_on_anharmonic_snap_crystal(gan_dyn, gan_calc):
    """GaN NN-SNAP at 1000 K: python-sscha's compute_ensemble (one ASE call per configuration)
    versus one calculate_batch call; same arrays, units and flags."""
    one = _ensemble(gan_dyn, 1000.0, 24, seed=7)
    bat = _ensemble(gan_dyn, 1000.0, 24, seed=7)
    assert np.array_equal(one.xats, bat.xats)
    with contextlib.redirect_stdout(None):
        one.compute_ensemble(gan_calc, compute_stress=True, verbose=False)
    S.compute_ensemble_batched(bat, gan_calc, batch_size=10)          # 3 uneven chunks
    assert bat.force_computed.all() and bat.stress_computed.all() and bat.has_stress
    np.testing.assert_allclose(bat.energies, one.energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(bat.forces, one.forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(bat.stresses, one.stresses, rtol=0, atol=1e-10)
    np.testing.assert_allclose(bat.sscha_forces, one.sscha_forces, rtol=0, atol=1e-10)
    assert bat.get_free_energy() == pytest.approx(one.get_free_energy(), abs=1e-10)
    # anharmonic: the forces are not those of the harmonic sampling matrix
    assert np.abs(bat.forces - bat.sscha_forces).max() > 1e-3
    # units: energies in Ry, forces in Ry/Å, stress in Ry/bohr^3 with sscha's sign
    ry, bohr = sscha.Ensemble.Rydberg, sscha.Ensemble.Bohr
    atoms = bat.structures[5].get_ase_atoms()
    atoms.calc = gan_calc
    assert bat.energies[5] * ry == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(bat.forces[5] * ry, atoms.get_forces(), atol=1e-9)
    np.testing.assert_allclose(-bat.stresses[5] * ry / bohr**3, atoms.get_stress(voigt=False),
                               atol=1e-9)


def test_only_missing_configurations_are_computed(gan_dyn, gan_calc):
    ens = _ensemble(gan_dyn, 600.0, 8, seed=3)
    S.compute_ensemble_batched(ens, gan_calc, compute_stress=False)
    ref = ens.energies.copy()
    ens.force_computed[[2, 5]] = False
    ens.energies[[2, 5]] = 0.0
    calls = []

    class Counting:
        def calculate_batch(self, images, properties):
            calls.append(len(images))
            return gan_calc.calculate_batch(images, properties)

    S.compute_ensemble_batched(ens, Counting(), compute_stress=False)
    assert calls == [2]
    np.testing.assert_allclose(ens.energies, ref, atol=1e-12)
    assert ens.force_computed.all() and not ens.has_stress


@pytest.mark.parametrize("bad, match", [
    ({"calc": object()}, "has no calculate_batch"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
])
def test_bad_input_is_named(gan_dyn, gan_calc, bad, match):
    ens = _ensemble(gan_dyn, 300.0, 4, seed=0)
    kwargs = {"calc": gan_calc, "batch_size": None} | bad
    with pytest.raises((TypeError, ValueError), match=match):
        S.compute_ensemble_batched(ens, kwargs.pop("calc"), **kwargs)


def test_ungenerated_ensemble_and_bad_relax_arguments(gan, gan_dyn, gan_calc):
    ens = sscha.Ensemble.Ensemble(gan_dyn, 300.0, gan_dyn.GetSupercell())
    with pytest.raises(ValueError, match="generate it first"):
        S.compute_ensemble_batched(ens, gan_calc)
    with pytest.raises(ValueError, match="n_configs"):
        S.relax(gan_dyn, gan_calc, 300.0, 1)
    with pytest.raises(ValueError, match="no attribute 'min_stepp_dyn'"):
        S.relax(gan_dyn, gan_calc, 300.0, 4, minimizer_options={"min_stepp_dyn": 1.0})


def test_zone_centre_frequencies_converge_with_ensemble_size(gan_dyn, gan_calc):
    """Anharmonic zone-centre frequencies of GaN at 1000 K from the free-energy Hessian of one
    ensemble: the seed-to-seed spread shrinks ~ 1/sqrt(N) and the mean is shifted from the
    harmonic value by more than the noise (anharmonicity)."""
    T = 1000.0
    modes = slice(3, 6)                         # E2(low) pair and the 40 meV mode
    spread, mean = {}, {}
    for n in (32, 512):
        w = []
        for seed in range(8):
            ens = _ensemble(gan_dyn, T, n, seed=100 + seed)
            S.compute_ensemble_batched(ens, gan_calc, compute_stress=False)
            with contextlib.redirect_stdout(None):
                h = ens.get_free_energy_hessian(include_v4=False, verbose=False)
            w.append(S._dyn_energies_eV(h)[modes])
        w = np.array(w)
        spread[n], mean[n] = w.std(axis=0).mean(), w.mean(axis=0)
    ratio = spread[32] / spread[512]                 # sqrt(512/32) = 4
    assert 2.0 < ratio < 8.0, spread
    w_harm = S._dyn_energies_eV(gan_dyn)[modes]
    shift = mean[512] - w_harm
    assert np.all(np.abs(shift) > 3 * spread[512] / np.sqrt(8)), (shift, spread[512])


@pytest.mark.slow
def test_sscha_relaxed_zone_centre_frequencies_converge_with_ensemble_size(gan_dyn, gan_calc):
    """Full SSCHA relaxations (python-sscha's loop, batched GaN NN-SNAP ensembles) at 1000 K.

    A first relaxation (512 configurations) gives a starting point near the answer, so that
    the final ensembles are sampled close to where they are used (little reweighting). From
    there, 6 seeds at N = 32 and at N = 512: the renormalised low zone-centre modes soften far
    beyond the noise, and the seed-to-seed spread of the relaxed frequencies shrinks
    ~ 1/sqrt(N) (16x more configurations: 4x; measured ~3.3x)."""
    T = 1000.0
    modes = slice(3, 6)                          # E2(low) pair and the ~33 meV mode
    start = S.relax(gan_dyn, gan_calc, T, 512, max_pop=6, seed=99).dyn
    spread, mean = {}, {}
    for n in (32, 512):
        w = []
        for seed in range(6):
            res = S.relax(start, gan_calc, T, n, max_pop=6, seed=seed)
            assert res.converged
            w.append(res.frequencies[modes])
        w = np.array(w)
        spread[n], mean[n] = w.std(axis=0).mean(), w.mean(axis=0)
    print("spread (eV):", spread, "mean (eV):", mean)
    assert 2.0 < spread[32] / spread[512] < 8.0, spread
    shift = mean[512] - S._dyn_energies_eV(gan_dyn)[modes]
    assert np.all(shift < -5 * spread[512] / np.sqrt(6)), (shift, spread[512])


def test_relax_directory_gets_the_files_and_the_cwd_none(gan, gan_dyn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    phi = _phi_eV(gan_dyn)
    res = S.relax(gan_dyn, ForceConstantCalculator(gan, phi), 300.0, 8, max_pop=1, seed=2,
                  directory=tmp_path / "out")
    assert res.populations == 1
    assert sorted(os.listdir(tmp_path)) == ["out"]          # python-sscha writes dyn_pop* here
    files = set(os.listdir(tmp_path / "out"))
    assert {"energies_pop1.npy", "forces_pop1.npy", "xats_pop1.npy", "dyn_final_1"} <= files
    saved = np.load(tmp_path / "out" / "energies_pop1.npy")
    np.testing.assert_allclose(saved, res.ensemble.energies, atol=1e-14)
