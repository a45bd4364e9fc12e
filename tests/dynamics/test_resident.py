"""Device-resident MD (:class:`ase_mlp.dynamics.ResidentMD`), checked on the CPU device:
equality with ASE's velocity Verlet, batches equal separate runs, energy conservation,
Langevin temperature and reproducibility, bad input."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from ase_mlp._util import thermalize
from ase_mlp.dynamics.resident import ResidentMD


@pytest.fixture(scope="module")
def ta_calc(ta06a_path):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps import read_lammps_potential

    return MLPCalculator(read_lammps_potential(ta06a_path), device="cpu")


def _hot(atoms, T, seed):
    thermalize(atoms, T, np.random.default_rng(seed))
    return atoms


def _systems():
    a = _hot(bulk("Ta", "bcc", a=3.31, cubic=True).repeat(2), 900, 1)
    b = bulk("Ta", "bcc", a=3.30, cubic=True).repeat(3)
    b.rattle(0.05, seed=2)
    b = _hot(b, 1500, 2)
    c = _hot(bulk("Ta", "bcc", a=3.32).repeat((3, 2, 4)), 600, 3)   # triclinic primitive
    return [a, b, c]


def test_nve_equals_ase_velocity_verlet_across_rebuilds(ta_calc, one_thread):
    atoms = _hot(bulk("Ta", "bcc", a=3.30, cubic=True).repeat(3), 2500, 0)
    ref = atoms.copy()
    ref.calc = ta_calc
    start = atoms.positions.copy()
    md = ResidentMD(ta_calc, atoms, 2 * units.fs, skin=0.2)
    md.run(60)
    VelocityVerlet(ref, 2 * units.fs).run(60)
    assert md.n_builds > 2                                  # the skin was crossed
    out = md.get_images()[0]
    np.testing.assert_allclose(out.positions, ref.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.get_velocities(), ref.get_velocities(), rtol=0, atol=1e-10)
    assert out.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(out.get_forces(), ref.get_forces(), atol=1e-8)
    # the input Atoms are untouched
    np.testing.assert_array_equal(atoms.positions, start)


def test_batch_equals_separate_runs(ta_calc, one_thread):
    systems = _systems()
    batch = ResidentMD(ta_calc, systems, 2 * units.fs, skin=0.3)
    batch.run(30)
    together = batch.get_images()
    for k, atoms in enumerate(systems):
        alone = ResidentMD(ta_calc, atoms, 2 * units.fs, skin=0.3)
        alone.run(30)
        one = alone.get_images()[0]
        np.testing.assert_allclose(together[k].positions, one.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(together[k].get_velocities(), one.get_velocities(),
                                   rtol=0, atol=1e-10)
        assert together[k].get_potential_energy() == pytest.approx(
            one.get_potential_energy(), abs=1e-9)
        assert len(together[k]) == len(atoms)


def test_nve_conserves_energy_per_system(ta_calc, one_thread):
    md = ResidentMD(ta_calc, _systems(), 1 * units.fs, skin=0.3)
    e0 = (md.energy + md.kinetic_energies()).numpy().copy()
    totals = []
    md.attach(lambda: totals.append((md.energy + md.kinetic_energies()).numpy().copy()), 10)
    md.run(150)
    drift = np.abs(np.array(totals) - e0).max(axis=0)
    n = np.array([16, 54, 24])
    # 1 fs steps of Ta06A at 600-1500 K: fluctuations of ~1e-4 eV/atom
    assert np.all(drift / n < 5e-4), drift / n
    assert len(totals) == 15


def test_langevin_temperature_and_reproducibility(ta_calc, one_thread):
    def run(seed, steps=250):
        reps = [bulk("Ta", "bcc", a=3.31, cubic=True).repeat(2) for _ in range(4)]
        md = ResidentMD(ta_calc, reps, 2 * units.fs, temperature_K=800.0,
                        friction=0.05 / units.fs, rng=seed, skin=0.5)
        temps = []
        md.attach(lambda: temps.append(md.temperatures().numpy().copy()), 1)
        md.run(steps)
        return md, np.array(temps)

    md1, t1 = run(5)
    md2, t2 = run(5, 250)
    np.testing.assert_array_equal(md1.positions.numpy(), md2.positions.numpy())
    mean_t = t1[100:].mean()
    # 4 x 16 atoms, 150 correlated samples: the mean is within ~10 % of 800 K
    assert 680 < mean_t < 920, mean_t
    # the replicas are independent (different noise), not copies of each other
    assert not np.allclose(t1[-1, 0], t1[-1, 1])
    _, t3 = run(6, 20)
    assert not np.array_equal(t1[:20], t3)


def test_langevin_temperature_per_system(ta_calc, one_thread):
    reps = [bulk("Ta", "bcc", a=3.31, cubic=True).repeat(2) for _ in range(2)]
    md = ResidentMD(ta_calc, reps, 2 * units.fs, temperature_K=[300.0, 1200.0],
                    friction=0.1 / units.fs, rng=1, skin=0.5)
    temps = []
    md.attach(lambda: temps.append(md.temperatures().numpy().copy()), 1)
    md.run(150)
    mean = np.array(temps)[50:].mean(axis=0)
    assert 230 < mean[0] < 370 and 950 < mean[1] < 1450, mean
    with pytest.raises(ValueError, match="one per system"):
        ResidentMD(ta_calc, reps, 1.0, temperature_K=[300.0], friction=0.01, rng=0)


def test_device_neighbour_list_equals_host(ta_calc, one_thread):
    pytest.importorskip("vesin_torch", exc_type=ImportError)
    out = {}
    for where in ("host", "device"):
        md = ResidentMD(ta_calc, _systems(), 2 * units.fs, skin=0.2, neighbors=where)
        md.run(40)
        assert md.neighbors == where and md.n_builds > 2
        out[where] = md.get_images()
    for a, b in zip(out["host"], out["device"], strict=True):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
    assert ResidentMD(ta_calc, _systems(), 1.0).neighbors == "host"    # auto on the CPU
    slab = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="fully periodic"):
        ResidentMD(ta_calc, slab, 1.0, neighbors="device")


@pytest.mark.parametrize("langevin", [False, True])
def test_restart_equals_unsplit(ta_calc, tmp_path, langevin, one_thread):
    kw = dict(temperature_K=[500.0, 900.0, 700.0], friction=0.02 / units.fs, rng=3) \
        if langevin else {}
    full = ResidentMD(ta_calc, _systems(), 2 * units.fs, skin=0.2, **kw)
    full.run(40)
    first = ResidentMD(ta_calc, _systems(), 2 * units.fs, skin=0.2, **kw)
    first.run(17)
    first.save_state(tmp_path / "md.npz")
    kw2 = dict(kw, rng=99) if langevin else kw          # the noise state comes from the file
    second = ResidentMD(ta_calc, _systems(), 2 * units.fs, skin=0.2, **kw2)
    second.load_state(tmp_path / "md.npz")
    second.run(23)
    assert second.nsteps == full.nsteps == 40 and full.n_builds > 2
    assert second.n_builds == full.n_builds
    for name in ("positions", "velocities", "forces", "energy"):
        assert torch.equal(getattr(second, name), getattr(full, name)), name
    other = ResidentMD(ta_calc, _systems(), 1 * units.fs, skin=0.2, **kw)
    with pytest.raises(ValueError, match="timestep"):
        other.load_state(tmp_path / "md.npz")


def test_bad_input(ta_calc):
    from ase.calculators.emt import EMT

    ok = bulk("Ta", "bcc", a=3.3, cubic=True)
    with pytest.raises(TypeError, match="MLPCalculator"):
        ResidentMD(EMT(), ok, 1.0)
    with pytest.raises(ValueError, match=r"system 1: elements \['Cu'\]"):
        ResidentMD(ta_calc, [ok, bulk("Cu", "fcc", a=3.6)], 1.0)
    with pytest.raises(ValueError, match="both temperature_K and friction"):
        ResidentMD(ta_calc, ok, 1.0, temperature_K=300)
    with pytest.raises(ValueError, match="rng"):
        ResidentMD(ta_calc, ok, 1.0, temperature_K=300, friction=0.01)
    with pytest.raises(ValueError, match="timestep"):
        ResidentMD(ta_calc, ok, 0.0)
    with pytest.raises(ValueError, match="neighbors must be"):
        ResidentMD(ta_calc, ok, 1.0, neighbors="gpu")
    with pytest.raises(ValueError, match="at least one"):
        ResidentMD(ta_calc, [], 1.0)
    bad = ok.copy()
    bad.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ResidentMD(ta_calc, bad, 1.0)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device exists")
def test_cuda_without_device_is_a_clear_error(ta06a_path):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps import read_lammps_potential

    with pytest.raises(RuntimeError, match="no CUDA device.*device='cpu'"):
        MLPCalculator(read_lammps_potential(ta06a_path), device="cuda")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_resident_md_on_cuda_equals_cpu(ta06a_path):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps import read_lammps_potential

    model = read_lammps_potential(ta06a_path)
    out = {}
    for dev in ("cpu", "cuda"):
        md = ResidentMD(MLPCalculator(model, device=dev), _systems(), 2 * units.fs, skin=0.3)
        md.run(20)
        out[dev] = md.get_images()
    for a, b in zip(out["cpu"], out["cuda"], strict=True):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=1e-10)
