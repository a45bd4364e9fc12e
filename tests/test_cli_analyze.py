"""``ase-mlp analyze`` on synthetic trajectories with known answers (issue 18): outputs beside
the trajectory, no diffusion coefficient for a crystal, D of a random walk, VDOS band."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from ase_mlp.cli import main


def _frames(positions, dt_fs, velocities=None):
    n = positions.shape[1]
    frames = []
    for k, pos in enumerate(positions):
        a = Atoms(f"Ar{n}", positions=pos, cell=[20.0] * 3, pbc=True)
        if velocities is not None:
            a.set_velocities(velocities[k])
        a.info["time_fs"] = k * dt_fs
        frames.append(a)
    return frames


def _lattice(n_side=4, a=3.0):
    g = np.arange(n_side) * a
    return np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T + 1.0


def _d_line(text: str, label: str) -> float:
    line = next(x for x in text.splitlines() if x.strip().startswith(f"D({label}) = "))
    return float(line.split("=")[1].split()[0])


def test_outputs_beside_the_trajectory(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    sites = _lattice()
    pos = sites + rng.normal(0, 0.05, (20, *sites.shape))
    run = tmp_path / "run"
    run.mkdir()
    write(run / "x.traj", _frames(pos, 10.0))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["analyze", str(run / "x.traj"), "--msd", "--rdf"]) == 0
    assert (run / "x_analysis" / "msd.csv").is_file()
    assert (run / "x_analysis" / "rdf.csv").is_file()
    assert list(cwd.iterdir()) == []
    assert str(run / "x_analysis" / "msd.csv") in capsys.readouterr().out


def test_crystal_reports_no_diffusion(tmp_path, capsys):
    """Atoms vibrating about fixed sites: the MSD plateaus at 6 sigma^2, and no D is printed
    (before: D = +-1e-8 cm^2/s of either sign)."""
    rng = np.random.default_rng(1)
    sites, sigma = _lattice(), 0.05
    pos = sites + rng.normal(0, sigma, (100, *sites.shape))
    write(tmp_path / "c.traj", _frames(pos, 10.0))
    assert main(["analyze", str(tmp_path / "c.traj"), "--msd", "--output",
                 str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "D(Ar)" not in text and "D(all)" not in text
    line = next(x for x in text.splitlines() if x.strip().startswith("Ar: "))
    assert "no diffusion: MSD plateaus at" in line
    plateau = float(line.split("plateaus at")[1].split()[0])
    n = len(sites)
    assert plateau == pytest.approx(6 * sigma**2 * (1 - 1 / n), rel=0.05)


def test_random_walk_reports_d(tmp_path, capsys):
    rng = np.random.default_rng(2)
    sites, step, dt = _lattice(), 0.1, 10.0
    pos = sites + np.cumsum(rng.normal(0, step, (400, *sites.shape)), axis=0)
    write(tmp_path / "w.traj", _frames(pos, dt))
    assert main(["analyze", str(tmp_path / "w.traj"), "--msd", "--output",
                 str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    d_expected = step**2 / (2 * dt) * 0.1                       # Å^2/fs -> cm^2/s
    assert _d_line(text, "Ar") == pytest.approx(d_expected, rel=0.2)


def test_vdos_band_not_nyquist(tmp_path, capsys):
    """Harmonic velocities at 2 THz sampled every fs (Nyquist 500 THz): the reported band and
    the plot stop near 2 THz."""
    rng = np.random.default_rng(3)
    n_frames, dt, nu = 1000, 1.0, 2.0                           # fs, THz
    omega0 = 2 * np.pi * nu * 1e-3                              # rad/fs
    sites = _lattice(2)
    t = np.arange(n_frames) * dt
    phase = rng.uniform(0, 2 * np.pi, sites.shape)
    vel = 0.01 * np.cos(omega0 * t[:, None, None] + phase[None])
    pos = sites + np.zeros((n_frames, *sites.shape))
    write(tmp_path / "v.traj", _frames(pos, dt, velocities=vel))
    assert main(["analyze", str(tmp_path / "v.traj"), "--vdos", "--output",
                 str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    top = float(text.split("VDOS signal up to ")[1].split()[0])
    assert nu < top < 3 * nu
