"""Optional matplotlib figures of the analysis results."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from ase_mlp.analysis import coordination_number, diffusion_coefficient, partial_rdf, vdos


pytest.importorskip("matplotlib")

from ase_mlp.analysis.plots import plot_msd, plot_rdf, plot_vdos  # noqa: E402


def test_plot_msd(tmp_path):
    t = np.arange(0, 1000.0, 10.0)
    m = {"Ar": 6e-3 * t + 0.1}
    fit = diffusion_coefficient(t, m["Ar"], fit_window=(100, 900))
    fig = plot_msd(t, m, fit={"Ar": fit}, filename=tmp_path / "msd.png")
    assert (tmp_path / "msd.png").stat().st_size > 0
    ax = fig.axes[0]
    assert ax.get_xlabel() == "t (fs)"
    assert len(ax.lines) == 2                       # curve + fit
    fig = plot_msd(t, m["Ar"], loglog=True)
    assert fig.axes[0].get_xscale() == "log"


def test_plot_rdf_and_vdos(tmp_path):
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    r, g = partial_rdf(nacl, 5.0, 50)
    cn = {("Na", "Cl"): coordination_number(r, g["Na", "Cl"], 32 / nacl.get_volume())}
    fig = plot_rdf(r, g, coordination=cn, filename=tmp_path / "rdf.pdf")
    assert (tmp_path / "rdf.pdf").exists()
    assert len(fig.axes[0].lines) == 3 + 1           # Na-Na, Na-Cl, Cl-Cl (+ g = 1 line)
    t = np.arange(500.0)
    v = np.cos(0.1 * t)[:, None, None] * np.ones((1, 2, 3))
    omega, gw = vdos(v, [1.0, 2.0], 1.0)
    fig = plot_vdos(omega, gw, unit="meV")
    x, y = fig.axes[0].lines[0].get_data()
    assert np.sum(y) * (x[1] - x[0]) == pytest.approx(1.0, abs=1e-10)   # area kept in meV
    with pytest.raises(ValueError, match="unit must be one of"):
        plot_vdos(omega, gw, unit="Hz")
