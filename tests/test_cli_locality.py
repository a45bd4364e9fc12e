"""``ase-mlp locality`` against :func:`ase_mlp.workflows.locality_test` (embedded GaN model).

The default NN-SNAP (cutoff 3.1 Å, local many-body) must give an exactly zero force change
for R > 2 x 3.1 + delta = 6.3 Å and a non-zero one below.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read, write

from ase_mlp.calculators import MLPCalculator
from ase_mlp.cli import default_model_path, main
from ase_mlp.workflows import locality_test
from ase_mlp.workflows.phases import wurtzite


REPEAT = (7, 4, 4)        # 896 atoms, widths 22.3 x 22.1 x 20.8 Å > 2 (6.5 + 3.1)


@pytest.fixture(scope="module")
def gan_file(tmp_path_factory):
    cell = wurtzite(("Ga", "N"), orthohexagonal=True)
    cell.rattle(0.03, rng=np.random.default_rng(5))
    path = tmp_path_factory.mktemp("gan") / "gan.xyz"
    write(path, cell)
    return path   # positions to 1e-8 Å: compare with what is read back


def test_locality_cli_json_equals_api(gan_file, tmp_path, capsys, one_thread):
    path = gan_file
    out = tmp_path / "loc.json"
    rc = main(["locality", str(path), "--repeat", *map(str, REPEAT), "--radii", "4", "2",
               "6.5", "--trials", "2", "--seed", "1", "--device", "cpu", "--tol", "1e-3",
               "--output", str(out), "--plot", str(tmp_path / "loc.png")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "exactly zero expected beyond R = 6.3000" in text
    assert "RMS below 0.001 eV/Å from R = 4 Å on" in text
    assert (tmp_path / "loc.png").stat().st_size > 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["radii"] == [2.0, 4.0, 6.5] and doc["mode"] == "random"
    rms = np.array(doc["rms"])
    assert rms[0] > rms[1] > 0 and rms[2] == 0.0
    assert doc["zero_beyond"] == pytest.approx(6.3)
    calc = MLPCalculator.from_file(default_model_path(), device="cpu")
    api = locality_test(read(path).repeat(REPEAT), calc, [2, 4, 6.5], trials=2, rng=1)
    np.testing.assert_allclose(np.array(doc["values"]), api.values, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(np.array(doc["n_perturbed"]), api.n_perturbed)


def test_locality_cli_csv_and_errors(gan_file, tmp_path, capsys, one_thread):
    path = gan_file
    out = tmp_path / "loc.csv"
    rc = main(["locality", str(path), "--repeat", *map(str, REPEAT), "--radii", "3",
               "--trials", "1", "--center", "0", "9", "--device", "cpu", "--quiet",
               "--output", str(out)])
    assert rc == 0
    assert capsys.readouterr().out == ""
    table = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)
    assert out.read_text(encoding="utf-8").startswith("R_A,rms_eV_per_A,max_eV_per_A")
    assert table.shape == (1, 4) and table[0, 0] == 3.0 and table[0, 2] >= table[0, 1] > 0

    frames = [read(path) for _ in range(2)]
    for k, f in enumerate(frames):
        f.rattle(0.02, rng=np.random.default_rng(k))
    write(tmp_path / "snaps.xyz", frames)
    rc = main(["locality", str(path), "--repeat", *map(str, REPEAT), "--radii", "3",
               "--snapshots", str(tmp_path / "snaps.xyz"), "--device", "cpu", "--quiet",
               "--output", str(tmp_path / "snap.json")])
    assert rc == 0
    doc = json.loads((tmp_path / "snap.json").read_text(encoding="utf-8"))
    assert doc["mode"] == "snapshots" and np.shape(doc["values"]) == (1, 2, 1)
    assert 0.02 < doc["delta"] < 0.15 and doc["rms"][0] > 0

    rc = main(["locality", str(path), "--radii", "3", "--device", "cpu"])   # 8-atom cell
    assert rc == 2
    err = capsys.readouterr().err
    assert "perpendicular widths" in err and "atoms.repeat(" in err
    rc = main(["locality", str(path), "--radii", "3", "--output", str(tmp_path / "x.txt")])
    assert rc == 2
    assert ".json or .csv" in capsys.readouterr().err
