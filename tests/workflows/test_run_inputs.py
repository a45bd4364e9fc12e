"""Input validation, stability guards and restart/log robustness of the MD and metadynamics
workflows (:func:`ase_mlp.workflows.md.run_md`, :func:`ase_mlp.workflows.metad.run_metad`),
with ASE's EMT Cu (fast)."""

from __future__ import annotations

import errno
import json
import math

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read

from ase_mlp.workflows.md import (
    TruncatedFileError,
    UnstableDynamicsError,
    estimate_max_frequency,
    run_md,
)


def _quiet(*a):
    return None


@pytest.fixture
def cu():
    return bulk("Cu", "fcc", a=3.6, cubic=True)


def _md(cu, out, calc=None, **kw):
    args = dict(thermostat="langevin", temperature_K=300.0, steps=20, timestep_fs=2.0,
                interval=2, checkpoint_interval=10, rng=7, output=out, progress=False,
                log=_quiet)
    args.update(kw)
    return run_md(cu, EMT() if calc is None else calc, **args)


# --------------------------------------------------------------------------- bullet 3
@pytest.mark.parametrize("kw,name", [
    ({"temperature_K": math.inf}, "temperature_K"),
    ({"temperature_K": math.nan}, "temperature_K"),
    ({"temperature_K": -5.0}, "temperature_K"),
    ({"pressure_GPa": math.nan}, "pressure_GPa"),
    ({"pressure_GPa": math.inf}, "pressure_GPa"),
    ({"timestep_fs": math.inf}, "timestep_fs"),
    ({"friction_per_fs": math.nan}, "friction_per_fs"),
    ({"thermostat": "bussi", "taut_fs": math.inf}, "taut_fs"),
    ({"steps": math.inf}, "steps"),
])
def test_md_refuses_non_finite_and_negative_inputs(cu, tmp_path, kw, name):
    with pytest.raises(ValueError, match=name):
        _md(cu, tmp_path / "o", steps=kw.pop("steps", 4), **kw)
    assert not (tmp_path / "o" / "md.traj").exists()


# --------------------------------------------------------------------------- bullet 2
def test_max_frequency_estimate_matches_cu_phonons(cu):
    """Cu's highest phonon is ~7.3 THz (neutron data; EMT a bit stiffer): the estimate is
    within a factor 1.4 of it."""
    cu.calc = EMT()
    omega, i = estimate_max_frequency(cu)
    nu_thz = omega * units.fs / (2 * np.pi) * 1e3
    assert i == 0
    assert 6.0 < nu_thz < 10.0
    np.testing.assert_array_equal(cu.positions, bulk("Cu", "fcc", a=3.6, cubic=True).positions)


def test_md_refuses_unstable_timestep(cu, tmp_path):
    with pytest.raises(ValueError, match=r"timestep_fs \(--timestep\) 50 fs is beyond the "
                                         r"stability limit") as exc:
        _md(cu, tmp_path / "o", timestep_fs=50.0, steps=4)
    limit = float(str(exc.value).split("stability limit ")[1].split()[0])
    assert 12.0 < limit < 30.0              # 1 / omega_max for ~6-10 THz
    for thermostat in ("bussi", "qtb"):     # every thermostat
        with pytest.raises(ValueError, match="stability limit"):
            _md(cu, tmp_path / thermostat, thermostat=thermostat, timestep_fs=50.0, steps=4)
    assert _md(cu, tmp_path / "ok", timestep_fs=5.0, steps=4)["nsteps"] == 4


def test_md_stops_when_the_temperature_runs_away(cu, tmp_path):
    """60 fs is beyond Verlet's limit omega dt = 2 for Cu: the run stops within a few steps,
    and the checkpoints written every step stop before the runaway."""
    out = tmp_path / "o"
    with pytest.raises(UnstableDynamicsError, match=r"temperature ran away: T = .* K, above "
                                                    r"3000 K .* and rising") as exc:
        _md(cu, out, timestep_fs=60.0, steps=400, check_timestep=False, checkpoint_interval=1)
    msg = str(exc.value)
    assert "timestep 60 fs" in msg
    step = int(msg.split("stopped at step ")[1].split(":")[0])
    saved = int(msg.split("checkpoint.npz) is at step ")[1].split()[0])
    assert saved < step < 100               # stopped early, not run to the end
    with np.load(out / "checkpoint.npz") as z:
        assert int(z["nsteps"]) == saved
        cu.set_momenta(z["momenta"])
    assert cu.get_temperature() < 3000.0


# --------------------------------------------------------------------------- bullet 5
def test_md_restart_refuses_changed_temperature_and_pressure(cu, tmp_path):
    out = tmp_path / "o"
    _md(cu, out, steps=10)
    with pytest.raises(ValueError, match=r"temperature_K 300.0 K \(first run.*\) vs 600.0 K"):
        _md(cu, out, steps=4, restart=True, temperature_K=600.0)
    with pytest.raises(ValueError, match=r"pressure_GPa none \(NVT\).* vs 1.0 GPa.*NVT and NPT"):
        _md(cu, out, steps=4, restart=True, pressure_GPa=1.0, allow_changes=True)
    # the explicit override continues with the new temperature and records it
    res = _md(cu, out, steps=4, restart=True, temperature_K=600.0, allow_changes=True)
    assert res["nsteps"] == 14
    assert json.loads((out / "run.json").read_text())["temperature_K"] == 600.0

    npt = tmp_path / "npt"
    _md(cu, npt, steps=10, pressure_GPa=1.0)
    with pytest.raises(ValueError, match=r"pressure_GPa 1.0 GPa \(first run.*\) vs 2.0 GPa"):
        _md(cu, npt, steps=4, restart=True, pressure_GPa=2.0)


def test_qtb_restart_refuses_changed_temperature_without_settings_file(cu, tmp_path):
    """QTB checkpoints hold the temperature: without run.json the change is still caught."""
    out = tmp_path / "o"
    _md(cu, out, steps=10, thermostat="qtb")
    (out / "run.json").unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"temperature_K 300 K \(checkpoint .*\) vs 450 K"):
        _md(cu, out, steps=4, thermostat="qtb", restart=True, temperature_K=450.0)


# --------------------------------------------------------------------------- bullet 6
class _CrashingEMT(EMT):
    """EMT that raises in the force call after the frame of step ``n`` was recorded (a run
    killed between checkpoints)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def calculate(self, atoms=None, *args, **kwargs):
        if atoms is not None and atoms.info.get("md_step", 0) >= self.n:
            raise RuntimeError("killed")
        super().calculate(atoms, *args, **kwargs)


def test_md_restart_after_a_crash_equals_the_unsplit_run(cu, tmp_path):
    """The crashed run wrote log rows and frames after its checkpoint (step 10), a partial
    last log line and a 0-byte checkpoint.npz.tmp: the restart trims and removes them, and
    log and trajectory equal those of an unsplit run."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    _md(cu, whole, steps=20)
    with pytest.raises(RuntimeError, match="killed"):
        _md(cu, split, calc=_CrashingEMT(14), steps=20)
    rows = (split / "md.log").read_text().splitlines()
    assert float(rows[-1].split()[0]) > 0.020           # rows after the checkpoint
    with open(split / "md.log", "a") as fh:
        fh.write("0.0300     -14.1")                     # cut-off row, no newline
    (split / "checkpoint.npz.tmp").write_bytes(b"")     # ENOSPC leftover
    _md(cu, split, steps=10, restart=True)
    assert (split / "md.log").read_text() == (whole / "md.log").read_text()
    steps = [a.info["md_step"] for a in read(split / "md.traj", ":")]
    assert steps == list(range(0, 22, 2))
    assert not (split / "checkpoint.npz.tmp").exists()
    a, b = read(whole / "md.traj"), read(split / "md.traj")
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)  # EMT: not bitwise


def test_md_failed_checkpoint_write_leaves_no_tmp(cu, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "o"
    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _md(cu, out, steps=10, checkpoint_interval=5)
    assert not (out / "checkpoint.npz.tmp").exists()


def test_md_truncated_checkpoint_or_trajectory_is_named(cu, tmp_path):
    out = tmp_path / "o"
    _md(cu, out, steps=10)
    traj = out / "md.traj"
    good = traj.read_bytes()
    traj.write_bytes(good[:-10])
    with pytest.raises(TruncatedFileError, match=r"md.traj is truncated or corrupt.*rename "
                                                 r"it to md.traj.bad.*checkpoint at step 10"):
        _md(cu, out, steps=4, restart=True)
    traj.write_bytes(good)
    ckpt = out / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(TruncatedFileError, match=r"checkpoint .*checkpoint.npz is truncated or "
                                                 r"corrupt.*without --restart"):
        _md(cu, out, steps=4, restart=True)


# --------------------------------------------------------------------------- metad
def _metad_cfg(d, **kw):
    from ase.io import write

    from ase_mlp.workflows.metad import metad_config_from_dict

    write(d / "cu.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True))
    raw = {"structure": "cu.extxyz", "pressure_GPa": 2.0, "temperature_K": 300.0,
           "gaussian_height": 0.02, "gaussian_width": 0.03, "metasteps": 2, "md_steps": 6,
           "timestep_fs": 2.0, "friction_per_fs": 0.02, "seed": 5, "relax_first": False,
           "xrd": False, "output": str(d / "out")}
    raw.update(kw)
    return metad_config_from_dict(raw, base_dir=d)


def _metad(cfg, **kw):
    from ase_mlp.workflows.metad import run_metad

    return run_metad(cfg, calc=EMT(), progress=False, plots=False, log=_quiet, **kw)


def test_metad_refuses_cutoffs_for_absent_elements(tmp_path):
    cfg = _metad_cfg(tmp_path, phases="group14",
                     coordination_cutoff={"Cu-Cu": 3.0, "Cu-Zn": 2.5})
    with pytest.raises(ValueError, match=r"coordination_cutoff.Cu-Zn: element 'Zn' is not in "
                                         r"the structure .*cu.extxyz"):
        _metad(cfg)
    assert not (tmp_path / "out" / "metad.log").exists()


def test_metad_restart_drops_a_partial_last_log_line(tmp_path):
    """A run died while writing a log line and left "   1" (a cut-off "   12 ...") with no
    newline; it was kept as 1 < 2 (the checkpoint's metastep) and the restart's next row was
    glued to it. Now the partial (and any garbled) line is dropped."""
    import dataclasses

    cfg = _metad_cfg(tmp_path)
    _metad(cfg)
    log = tmp_path / "out" / "metad.log"
    with open(log, "a") as fh:
        fh.write("               1")
    _metad(dataclasses.replace(cfg, metasteps=3), restart=True)
    data = np.loadtxt(log)
    assert data[:, 0].tolist() == [0, 1, 2]         # metastep k: k metasteps done
    with open(log, "a") as fh:
        fh.write("garbled\n")
    _metad(dataclasses.replace(cfg, metasteps=4), restart=True)
    assert np.loadtxt(log)[:, 0].tolist() == [0, 1, 2, 3]


def test_metad_truncated_files_and_failed_writes(tmp_path, monkeypatch):
    cfg = _metad_cfg(tmp_path)
    _metad(cfg)
    out = tmp_path / "out"
    traj = out / "metad.traj"
    good = traj.read_bytes()
    traj.write_bytes(good[:-10])
    with pytest.raises(TruncatedFileError, match=r"metad.traj is truncated or corrupt.*"
                                                 r"checkpoint at metastep 2"):
        _metad(cfg, restart=True)
    traj.write_bytes(good)
    ckpt = out / "checkpoint.npz"
    intact = ckpt.read_bytes()
    ckpt.write_bytes(intact[:300])
    with pytest.raises(TruncatedFileError, match=r"checkpoint.npz is truncated or corrupt"):
        _metad(cfg, restart=True)
    ckpt.write_bytes(intact)
    (out / "checkpoint.npz.tmp").write_bytes(b"")          # left by an earlier ENOSPC

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    import dataclasses

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _metad(dataclasses.replace(cfg, metasteps=3), restart=True)
    assert not (out / "checkpoint.npz.tmp").exists()


# --------------------------------------------------------------------------- ResidentMD
@pytest.mark.parametrize("kw,match", [
    ({"timestep": math.inf}, "timestep"),
    ({"timestep": 1.0, "temperature_K": math.inf, "friction": 0.01, "rng": 0}, "temperature_K"),
    ({"timestep": 1.0, "temperature_K": 300.0, "friction": math.inf, "rng": 0}, "friction"),
    ({"timestep": 1.0, "skin": math.inf}, "skin"),
])
def test_resident_md_refuses_non_finite_inputs(ta06a_path, kw, match):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.dynamics.resident import ResidentMD
    from ase_mlp.io.lammps import read_lammps_potential

    calc = MLPCalculator(read_lammps_potential(ta06a_path), device="cpu")
    kw = dict(kw)
    timestep = kw.pop("timestep")
    with pytest.raises(ValueError, match=match):
        ResidentMD(calc, bulk("Ta", "bcc", a=3.31, cubic=True), timestep, **kw)


def test_failed_atomic_write_leaves_no_tmp(tmp_path, monkeypatch):
    """ase_mlp._util.save_npz_atomic (every checkpoint writer) removes its temporary file
    when the write fails, e.g. with a full disk."""
    from ase_mlp._util import save_npz_atomic

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_npz_atomic(tmp_path / "c.npz", {"x": np.zeros(3)})
    assert list(tmp_path.iterdir()) == []
