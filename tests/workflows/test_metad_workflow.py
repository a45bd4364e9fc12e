"""The cell-metadynamics workflow (:func:`ase_mlp.workflows.metad.run_metad`) and its
configuration files, with ASE's EMT Cu (the ``calc=`` override)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

from ase_mlp.workflows.metad import (
    ConfigError,
    MetadConfig,
    load_metad_config,
    metad_config_from_dict,
    run_metad,
)


P_GPA = 2.0


@pytest.fixture
def cu_dir(tmp_path):
    write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True))
    return tmp_path


def _cfg(d, **kw) -> MetadConfig:
    raw = {"structure": "cu.extxyz", "pressure_GPa": P_GPA, "temperature_K": 300.0,
           "gaussian_height": 0.02, "gaussian_width": 0.03, "metasteps": 3, "md_steps": 8,
           "timestep_fs": 2.0, "friction_per_fs": 0.02, "seed": 5,
           "output": str(d / "out")}
    raw.update(kw)
    return metad_config_from_dict(raw, base_dir=d)


def _quiet(*a):
    return None


def _data_lines(path):
    return [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]


def test_log_history_and_outputs(cu_dir):
    cfg = _cfg(cu_dir, repeat=[2, 1, 1], phases="group14")
    res = run_metad(cfg, calc=EMT(), progress=False, log=_quiet)
    out = cu_dir / "out"
    n = 8
    # the log: a header, then one line per metastep with H = <E_pot> + P V
    lines = (out / "metad.log").read_text().splitlines()
    assert lines[0].startswith("#") and "cn_mean" in lines[0] and "f_beta-tin" in lines[0]
    data = np.loadtxt(out / "metad.log")
    assert data.shape[0] == 3 and len(lines) == 4
    np.testing.assert_array_equal(data[:, 0], [0, 1, 2])
    P = P_GPA * units.GPa
    np.testing.assert_allclose(data[:, 1], data[:, 2] + P * data[:, 4], rtol=1e-6)
    hist = json.loads((out / "history.json").read_text())
    assert [r["metastep"] for r in hist] == [0, 1, 2]
    for row, rec in zip(data, hist, strict=True):
        assert rec["H"] == pytest.approx(rec["epot"] + P * rec["volume"], rel=1e-12)
        np.testing.assert_allclose(row[1:5], [rec["H"], rec["epot"], rec["ekin"],
                                              rec["volume"]], rtol=1e-6)
        assert rec["fingerprint"]["cn_mean"] == pytest.approx(12.0, abs=1.0)  # fcc shell
    # the summary
    assert res["metasteps_run"] == res["metasteps"] == 3 and not res["stopped_early"]
    assert res["stop_metastep"] is None and res["natoms"] == n
    assert res["H_initial_per_atom"] == hist[0]["H"] / n
    assert res["V_final_per_atom"] == hist[-1]["volume"] / n
    assert res["final_fingerprint"] == hist[-1]["fingerprint"]
    # trajectory: the start and one frame per metastep, tagged with the metastep count
    frames = read(out / "metad.traj", ":")
    assert [f.info["metastep"] for f in frames] == [0, 1, 2, 3]
    assert len(frames[0]) == n
    # relax_first (default): the start is relaxed at P (static stress = -P)
    start = frames[0].copy()
    start.calc = EMT()
    np.testing.assert_allclose(start.get_stress()[:3] / units.GPa, -P_GPA, atol=0.05)
    # XRD: the fcc (111) reflection of a ~ 3.60 Å is the strongest, near 43.4 degrees
    xrd = np.loadtxt(out / "xrd.csv", delimiter=",", skiprows=1)
    assert (out / "xrd.csv").read_text().splitlines()[0] == "two_theta_deg,I_start,I_final"
    assert xrd[np.argmax(xrd[:, 1]), 0] == pytest.approx(43.4, abs=0.5)
    for name in ("metad.png", "xrd.png", "checkpoint.npz", "run.json"):
        assert (out / name).stat().st_size > 0
    assert set(res["outputs"]) >= {"log", "trajectory", "checkpoint", "history", "plot",
                                   "xrd_csv", "xrd_png"}
    assert json.loads((out / "run.json").read_text())["pressure_GPa"] == P_GPA


@pytest.mark.parametrize("thermostat,scaling", [("langevin", "none"), ("bussi", "hessian")])
def test_restart_equals_unsplit(cu_dir, thermostat, scaling):
    """3 + 2 metasteps equal 5, also after a 'crash' that left frames past the checkpoint."""
    common = dict(checkpoint_interval=2, thermostat=thermostat, scaling=scaling)
    one = cu_dir / "one"
    two = cu_dir / "two"
    run_metad(_cfg(cu_dir, metasteps=5, output=str(one), **common), calc=EMT(),
              progress=False, plots=False, log=_quiet)
    run_metad(_cfg(cu_dir, metasteps=2, output=str(two), **common), calc=EMT(),
              progress=False, plots=False, log=_quiet)
    shutil.copy(two / "checkpoint.npz", cu_dir / "at2.npz")
    res = run_metad(_cfg(cu_dir, metasteps=3, output=str(two), **common), calc=EMT(),
                    restart=True, progress=False, plots=False, log=_quiet)
    assert res["metasteps_run"] == 1 and res["metasteps"] == 3
    # a run that died after metastep 3 without a checkpoint: back to the one at 2
    shutil.copy(cu_dir / "at2.npz", two / "checkpoint.npz")
    msgs = []
    res = run_metad(_cfg(cu_dir, metasteps=5, output=str(two), **common), calc=EMT(),
                    restart=True, progress=False, plots=False, log=msgs.append)
    assert res["metasteps_run"] == 3
    assert any("dropped 2 log lines/frames" in m for m in msgs)
    h1 = json.loads((one / "history.json").read_text())
    h2 = json.loads((two / "history.json").read_text())
    assert len(h1) == 5 and h1 == h2                     # exactly equal floats
    assert (one / "metad.log").read_text() == (two / "metad.log").read_text()
    assert (two / "metad.log").read_text().count("#") == 1   # one header
    a, b = read(one / "metad.traj", ":"), read(two / "metad.traj", ":")
    assert [f.info["metastep"] for f in b] == [0, 1, 2, 3, 4, 5]
    for fa, fb in zip(a, b, strict=True):
        np.testing.assert_array_equal(fa.positions, fb.positions)
        np.testing.assert_array_equal(fa.cell.array, fb.cell.array)
    np.testing.assert_array_equal(a[-1].get_momenta(), b[-1].get_momenta())
    # nothing left to do: no metastep is run, the outputs stay
    res = run_metad(_cfg(cu_dir, metasteps=5, output=str(two), **common), calc=EMT(),
                    restart=True, progress=False, plots=False, log=_quiet)
    assert res["metasteps_run"] == 0 and res["metasteps"] == 5
    assert json.loads((two / "history.json").read_text()) == h1
    # a restart with other physics is refused, naming the setting
    with pytest.raises(ValueError, match="temperature_K 300.0 .first run. vs 400.0"):
        run_metad(_cfg(cu_dir, metasteps=6, output=str(two), temperature_K=400.0, **common),
                  calc=EMT(), restart=True, progress=False, plots=False, log=_quiet)


def test_stop_when_compression(cu_dir):
    """T = 0, 30 GPa from the zero-pressure cell: the walker compresses the cell; stop as
    soon as the 12 nearest neighbours (2.553 Å at the start) are inside 2.53 Å."""
    cfg = _cfg(cu_dir, thermostat="none", relax_first=False, pressure_GPa=30.0,
               gaussian_width=0.05, metasteps=10, phases="group14", coordination_cutoff=2.53,
               stop_when={"cn_mean": 12, "f_other": "> 0.5"}, xrd=False)
    assert cfg.stop_when == {"cn_mean": (">=", 12.0), "f_other": (">", 0.5)}
    res = run_metad(cfg, calc=EMT(), progress=False, plots=False, log=_quiet)
    hist = json.loads((cu_dir / "out" / "history.json").read_text())
    cn = [r["fingerprint"]["cn_mean"] for r in hist]
    assert res["stopped_early"] and res["stop_metastep"] == len(hist) - 1
    assert 0 < res["stop_metastep"] < 9
    assert cn[-1] == 12.0 and all(c == 0.0 for c in cn[:-1])
    assert len(_data_lines(cu_dir / "out" / "metad.log")) == len(hist)
    vol = [r["volume"] for r in hist]
    assert all(np.diff(vol) < 0)                           # compressed every metastep
    # frame k of the trajectory is the cell of metastep k: nearest-neighbour distances
    frames = read(cu_dir / "out" / "metad.traj", ":")
    nn = [np.sort(f.get_all_distances(mic=True), axis=None)[len(f)] for f in frames]
    assert nn[0] == pytest.approx(3.61 / 2**0.5)
    k = res["stop_metastep"]
    assert nn[k] < 2.53 < nn[k - 1]


def test_config_file_errors_name_every_key(tmp_path):
    write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True))
    bad = tmp_path / "bad.toml"
    bad.write_text('structure = "missing.vasp"\nmodel = "nope.pt"\npressure_GPa = 5\n'
                   'gaussian_hieght = 0.1\ngaussian_width = 0.05\ntemperature_K = "hot"\n'
                   'thermostat = "langevn"\n[stop_when]\ncn_mean = 5\n')
    with pytest.raises(ConfigError) as err:
        load_metad_config(bad)
    msg = str(err.value)
    for part in ("gaussian_hieght: unknown key; did you mean 'gaussian_height'?",
                 "temperature_K: expected a number >= 0, got str 'hot'",
                 "thermostat: 'langevn' is not one of", "did you mean 'langevin'?",
                 "metasteps: required key missing", "gaussian_height: required key missing"):
        assert part in msg, msg
    assert str(bad) in msg
    # the second round (values that parse): files, fingerprint keys, comparisons, ranges
    bad.write_text('structure = "missing.vasp"\nmodel = ["nope.pt"]\npressure_GPa = 5\n'
                   'gaussian_height = 0.1\ngaussian_width = 0.05\nmetasteps = 3\n'
                   'discard = 1.0\nphases = "AB"\n'
                   '[stop_when]\nf_rocksalts = 0.9\ncn_mean = "~ 5"\n')
    with pytest.raises(ConfigError) as err:
        load_metad_config(bad)
    msg = str(err.value)
    for part in ("5 problems", "structure: file not found: 'missing.vasp'",
                 "model[0]: file not found: 'nope.pt'", "discard: expected a number >= 0 "
                 "and < 1", "stop_when.f_rocksalts: unknown fingerprint key",
                 "did you mean 'f_rocksalt'?", "stop_when.cn_mean: expected a number"):
        assert part in msg, msg
    bad.write_text('structure = "cu.extxyz"\npressure_GPa = 5\ngaussian_height = 0.1\n'
                   'gaussian_width = 0.05\nmetasteps = 3\n[stop_when]\ncn_mean = 5\n')
    with pytest.raises(ConfigError, match="stop_when: needs a fingerprint"):
        load_metad_config(bad)
    with pytest.raises(FileNotFoundError, match="configuration file not found"):
        load_metad_config(tmp_path / "absent.toml")
    # JSON works the same; defaults and resolved paths
    good = tmp_path / "sub" / "good.json"
    good.parent.mkdir()
    good.write_text(json.dumps({"structure": "../cu.extxyz", "pressure_GPa": 1.0,
                                "gaussian_height": 0.1, "gaussian_width": 0.05,
                                "metasteps": 4, "coordination_cutoff": {"Cu-Cu": 3.0},
                                "phases": "group14"}))
    cfg = load_metad_config(good)
    assert cfg.structure == (tmp_path / "cu.extxyz").resolve()
    assert cfg.md_steps == 1000 and cfg.thermostat == "langevin" and cfg.relax_first
    assert cfg.coordination_cutoff == {("Cu", "Cu"): 3.0}
    assert str(cfg.output) == "metad" and cfg.model is None and cfg.stop_when is None


def test_bad_input(cu_dir):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.pbc = False
    atoms.cell = None
    write(cu_dir / "cluster.xyz", atoms)
    with pytest.raises(ValueError, match="cluster.xyz: cell metadynamics needs a 3D "
                                         "periodic structure"):
        run_metad(_cfg(cu_dir, structure="cluster.xyz"), calc=EMT(), log=_quiet)
    with pytest.raises(FileNotFoundError, match="no checkpoint to restart from"):
        run_metad(_cfg(cu_dir), calc=EMT(), restart=True, log=_quiet)
    with pytest.raises(ValueError, match="kind='AB' needs exactly two species"):
        run_metad(_cfg(cu_dir, phases="AB"), calc=EMT(), log=_quiet)
    assert not (cu_dir / "out" / "metad.log").exists()     # failed before any work

    class TwoElementEMT(EMT):
        elements = ["Ni", "Al"]

    with pytest.raises(ValueError, match=r"the model covers \['Ni', 'Al'\], not \['Cu'\]"):
        run_metad(_cfg(cu_dir), calc=TwoElementEMT(), log=_quiet)
