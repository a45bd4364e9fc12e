"""``ase-mlp metad``: cell metadynamics of an 8-atom wurtzite GaN cell with the embedded
default model (tiny settings), restarts, overrides and error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.io import read, write

from ase_mlp.cli import main
from ase_mlp.workflows.phases import wurtzite


CONFIG = """\
structure = "wz.vasp"
device = "cpu"
pressure_GPa = 10.0
temperature_K = 300.0
gaussian_height = 0.05
gaussian_width = 0.1
metasteps = 3
md_steps = 5
timestep_fs = 1.0
thermostat = "langevin"
phases = "AB"
seed = 3
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    cfg = tmp_path / "input"
    cfg.mkdir()
    write(cfg / "wz.vasp", wurtzite(orthohexagonal=True))
    (cfg / "metad.toml").write_text(CONFIG)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)               # output is relative to the working directory
    return tmp_path


def _data(path):
    return [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]


def test_metad_runs_restarts_and_writes_outputs(workdir, capsys):
    cfg = str(workdir / "input" / "metad.toml")
    out = workdir / "run" / "metad"                       # the default output directory
    assert main(["metad", cfg, "--metasteps", "2", "--quiet", "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("2 metasteps (2 run): H/atom ") and "V/atom" in text
    assert len(_data(out / "metad.log")) == 2
    assert not (out / "metad.png").exists() and (out / "xrd.csv").exists()
    # restart up to the configuration's 3 metasteps, with plots
    assert main(["metad", cfg, "--restart"]) == 0
    text = capsys.readouterr().out
    assert "1 metasteps from metastep 2" in text and "wrote " in text
    log = (out / "metad.log").read_text().splitlines()
    assert log[0].startswith("#") and "f_wurtzite" in log[0]
    assert sum(ln.startswith("#") for ln in log) == 1 and len(log) == 4
    hist = json.loads((out / "history.json").read_text())
    assert [r["metastep"] for r in hist] == [0, 1, 2]
    assert hist[0]["fingerprint"]["f_wurtzite"] == 1.0    # relaxed wurtzite, 5 fs at 300 K
    assert hist[0]["fingerprint"]["cn_mean"] == 4.0
    data = np.loadtxt(out / "metad.log")
    P = 10.0 * units.GPa
    np.testing.assert_allclose(data[:, 1], data[:, 2] + P * data[:, 4], rtol=1e-6)
    assert [f.info["metastep"] for f in read(out / "metad.traj", ":")] == [0, 1, 2, 3]
    for name in ("metad.png", "xrd.png", "xrd.csv", "checkpoint.npz", "run.json"):
        assert (out / name).stat().st_size > 0, name
    # --output overrides the configuration's directory (no relaxation, no XRD: faster)
    fast = workdir / "input" / "fast.toml"
    fast.write_text(CONFIG + "relax_first = false\nxrd = false\n")
    other = workdir / "other"
    assert main(["metad", str(fast), "--metasteps", "1", "--output", str(other), "--quiet",
                 "--no-plots"]) == 0
    assert len(_data(other / "metad.log")) == 1
    assert not (other / "xrd.csv").exists()


def test_metad_errors(workdir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["metad"])
    assert exc.value.code == 2
    assert "the following arguments are required: config" in capsys.readouterr().err
    assert main(["metad", str(workdir / "absent.toml")]) == 2
    assert "configuration file not found" in capsys.readouterr().err
    d = workdir / "input"
    (d / "bad.toml").write_text(CONFIG.replace("md_steps", "md_stpes"))
    assert main(["metad", str(d / "bad.toml")]) == 2
    assert "md_stpes: unknown key; did you mean 'md_steps'?" in capsys.readouterr().err
    # elements the model does not cover are named
    write(d / "cu.vasp", bulk("Cu", "fcc", a=3.61, cubic=True))
    (d / "cu.toml").write_text(CONFIG.replace("wz.vasp", "cu.vasp"))
    assert main(["metad", str(d / "cu.toml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the model covers ['Ga', 'N'], not ['Cu']" in err
    # a structure without a cell
    write(d / "mol.xyz", wurtzite(orthohexagonal=True), format="xyz")
    (d / "mol.toml").write_text(CONFIG.replace("wz.vasp", "mol.xyz"))
    assert main(["metad", str(d / "mol.toml"), "--quiet"]) == 2
    assert "needs a 3D periodic structure" in capsys.readouterr().err
    assert main(["metad", str(d / "metad.toml"), "--restart", "--quiet"]) == 2
    assert "no checkpoint to restart from" in capsys.readouterr().err
    assert main(["metad", str(d / "metad.toml"), "--metasteps", "0"]) == 2
    assert "--metasteps must be >= 1" in capsys.readouterr().err
