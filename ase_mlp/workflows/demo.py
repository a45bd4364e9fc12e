"""The package's main job in one call: NPT molecular dynamics of GaN with the embedded model.

``ase-mlp demo`` runs :func:`run_demo`: a wurtzite GaN supercell, equilibrated
by Martyna-Tobias-Klein NPT (ASE's :class:`~ase.md.nose_hoover_chain.MTKNPT`,
full cell fluctuations) at a chosen temperature and pressure, with a live
progress bar showing temperature, pressure and energy; it writes the
trajectory (ASE ``.traj``, every ``interval`` steps, flushed as it goes, so an
interrupted run keeps what it wrote) and a plot of T, P, E and volume.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
from ase import units


def _gan_supercell(repeat, pressure_GPa):
    from ase_mlp.workflows.phases import wurtzite

    # lattice roughly compressed for the pressure (B0 ~ 200 GPa) so NPT starts near equilibrium
    s = (1.0 + max(pressure_GPa, 0.0) / 200.0) ** (-1.0 / 3.0)
    cell = wurtzite(("Ga", "N"), a=3.19 * s, c=5.19 * s, u=0.377, orthohexagonal=True)
    return cell.repeat(tuple(repeat))


def run_demo(calc, *, repeat=(3, 2, 2), temperature_K=300.0, pressure_GPa=0.0, steps=300,
             timestep_fs=2.0, interval=10, output="ase_mlp_demo", rng=None, quiet=False,
             plot=True, log=print) -> dict:
    """NPT MD of wurtzite GaN with ``calc``; returns a summary dict.

    Parameters
    ----------
    calc : ASE calculator with stress (e.g. ``MLPCalculator`` on the embedded GaN model)
    repeat : supercell of the 8-atom orthohexagonal wurtzite cell (3x2x2: 96 atoms)
    temperature_K, pressure_GPa : thermostat and barostat targets
    steps, timestep_fs : MD length (ASE ``MTKNPT``, tdamp 100 steps, pdamp 1000 steps)
    interval : steps between trajectory frames and recorded samples
    output : directory for ``demo.traj``, ``demo.csv`` and ``demo.png``
    rng : numpy Generator or seed for the initial velocities
    """
    from ase.io.trajectory import Trajectory
    from ase.md.nose_hoover_chain import MTKNPT
    from ase.md.velocitydistribution import Stationary

    try:  # ASE >= 3.28
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - older ASE
        from ase.md.velocitydistribution import (
            MaxwellBoltzmannDistribution as thermalize_momenta,
        )
    from tqdm.auto import tqdm

    rng = np.random.default_rng(rng)
    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    atoms = _gan_supercell(repeat, pressure_GPa)
    atoms.calc = calc
    n = len(atoms)
    # from the perfect lattice, half the kinetic energy flows into the potential
    # (equipartition), so start at 2T to reach T quickly
    thermalize_momenta(atoms, temperature_K=2 * temperature_K, rng=rng)
    Stationary(atoms)
    dt = timestep_fs * units.fs
    md = MTKNPT(atoms, timestep=dt, temperature_K=temperature_K,
                pressure_au=pressure_GPa * units.GPa, tdamp=100 * dt, pdamp=1000 * dt)
    traj = Trajectory(out / "demo.traj", "w", atoms)
    rows = []

    def sample():
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        p = -atoms.get_stress(include_ideal_gas=True)[:3].mean() / units.GPa
        rows.append((md.nsteps * timestep_fs, atoms.get_temperature(), p, epot / n,
                     (epot + ekin) / n, atoms.get_volume() / n))
        return rows[-1]

    log(f"GaN wurtzite, {n} atoms; NPT (MTK) at {temperature_K:.0f} K and {pressure_GPa:g} GPa, "
        f"{steps} steps of {timestep_fs:g} fs")
    t0 = time.perf_counter()
    with tqdm(total=steps, desc="NPT MD", unit="step", disable=quiet) as bar:
        def observe():
            if md.nsteps == 0:
                return
            bar.update(1)
            if md.nsteps % interval == 0:
                _, T, P, e, etot, v = sample()
                traj.write()
                bar.set_postfix_str(f"T={T:6.0f} K  P={P:7.2f} GPa  E={e:.4f} eV/atom")

        sample()
        traj.write()
        md.attach(observe, interval=1)
        md.run(steps)
    traj.close()
    wall = time.perf_counter() - t0
    data = np.array(rows)
    np.savetxt(out / "demo.csv", data, delimiter=",",
               header="time_fs,temperature_K,pressure_GPa,epot_eV_per_atom,"
                      "etot_eV_per_atom,volume_A3_per_atom", comments="")
    half = data[len(data) // 2:]
    summary = {
        "atoms": n, "steps": steps, "wall_s": wall, "ms_per_step": 1e3 * wall / max(steps, 1),
        "T_mean": float(half[:, 1].mean()), "P_mean": float(half[:, 2].mean()),
        "epot_mean": float(half[:, 3].mean()), "volume_per_atom": float(half[:, 5].mean()),
        "trajectory": str(out / "demo.traj"), "table": str(out / "demo.csv"),
    }
    log(f"{steps} steps in {wall:.1f} s ({summary['ms_per_step']:.0f} ms/step); second half: "
        f"<T> = {summary['T_mean']:.0f} K, <P> = {summary['P_mean']:.2f} GPa, "
        f"<E_pot> = {summary['epot_mean']:.4f} eV/atom, <V> = {summary['volume_per_atom']:.3f} "
        f"Å^3/atom")
    if plot:
        summary["plot"] = _plot(data, out / "demo.png", temperature_K, pressure_GPa, log)
    log(f"wrote {summary['trajectory']} and {summary['table']}")
    return summary


def _plot(data, path, T0, P0, log):
    try:  # the object API: no pyplot state, no global backend change
        from matplotlib.figure import Figure
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    t = data[:, 0] / 1000.0
    fig = Figure(figsize=(9, 6))
    ax = fig.subplots(2, 2, sharex=True)
    ax[0, 0].plot(t, data[:, 1])
    ax[0, 0].axhline(T0, color="k", lw=0.8, ls="--")
    ax[0, 0].set_ylabel("temperature (K)")
    ax[0, 1].plot(t, data[:, 2])
    ax[0, 1].axhline(P0, color="k", lw=0.8, ls="--")
    ax[0, 1].set_ylabel("pressure (GPa)")
    ax[1, 0].plot(t, data[:, 3], label="potential")
    ax[1, 0].plot(t, data[:, 4], label="potential + kinetic")
    ax[1, 0].set_ylabel("energy (eV/atom)")
    ax[1, 0].legend()
    ax[1, 1].plot(t, data[:, 5])
    ax[1, 1].set_ylabel("volume (Å$^3$/atom)")
    for a in ax[1]:
        a.set_xlabel("time (ps)")
    fig.suptitle("ase-mlp demo: GaN NPT MD")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    log(f"wrote {path}")
    return str(path)
