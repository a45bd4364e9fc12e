"""Our driver with a real i-PI server (pip install ipi): parity, batching, failures, restart.

The oracle is i-PI itself: what it records (full-precision binary trajectories and
property columns in atomic units) against a direct evaluation of the same frames with the
same calculator, units converted with ``ase.units`` as the driver does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write


pytest.importorskip("ipi.engine")  # "ipi" alone would find tests/ipi (a namespace package)

from ase_mlp.calculators.oscillators import HarmonicOscillators  # noqa: E402
from ase_mlp.cli import default_model_path  # noqa: E402
from ase_mlp.ipi import (  # noqa: E402
    Evaluator,
    IPIDriver,
    IPIRunError,
    ipi_input,
    read_properties,
    run,
)
from ase_mlp.ipi.outputs import binary_to_atoms, read_binary_trajectory  # noqa: E402


BIN_OUTPUTS = ("<trajectory filename='pos' stride='5' format='bin'> positions </trajectory>",
               "<trajectory filename='for' stride='5' format='bin'> forces </trajectory>")
AU_PROPS = ("step", "potential{atomic_unit}", "bead_potentials{atomic_unit}",
            "virial_cv{atomic_unit}", "kinetic_cv{electronvolt}", "conserved{electronvolt}")


def _wait_for_rows(path, n, proc, timeout=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.is_file() and sum(1 for x in open(path) if not x.startswith("#")) >= n:
            return
        assert proc.poll() is None, "i-PI stopped early"
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {n} rows in {timeout} s")


@pytest.mark.parametrize("mode,driver", [("unix", "process"), ("inet", "thread")])
def test_pimd_parity_with_direct_evaluation(tmp_path, gan_calc, gan_atoms, mode, driver):
    """8-bead PILE-L PIMD: i-PI's bead energies, forces and virial = our calculator's."""
    nb = 8
    res = run(gan_atoms, gan_calc if driver == "thread" else None, tmp_path, nbeads=nb,
              steps=10, timestep_fs=1.0, socket_mode=mode, driver=driver,
              model=[default_model_path()], device="cpu", threads=1, properties=AU_PROPS,
              properties_stride=5, extra_outputs=BIN_OUTPUTS, wall_timeout=120)
    P = res.properties
    np.testing.assert_array_equal(P["step"], [0, 5, 10])
    if driver == "thread":
        assert res.driver_stats.batch_sizes == {nb}
    e_err = f_err = 0.0
    virial = np.zeros((3, 6))
    for b in range(nb):
        frames = [binary_to_atoms(f) for f in read_binary_trajectory(
            tmp_path / f"simulation.pos_{b}.bin")]
        forces = read_binary_trajectory(tmp_path / f"simulation.for_{b}.bin")
        assert len(frames) == len(forces) == 3
        assert frames[0].get_chemical_symbols() == gan_atoms.get_chemical_symbols()
        for k, r in enumerate(gan_calc.calculate_batch(frames)):
            e_ipi = P["bead_potentials"][k, b] * units.Hartree
            f_ipi = forces[k]["data"] * units.Hartree / units.Bohr
            e_err = max(e_err, abs(e_ipi - r["energy"]) / abs(r["energy"]))
            f_err = max(f_err, np.abs(f_ipi - r["forces"]).max() / np.abs(r["forces"]).max())
            s = r["stress"]                      # Voigt xx yy zz yz xz xy
            virial[k] -= s[[0, 1, 2, 5, 4, 3]] * units.Bohr**3 / units.Hartree / nb
    assert e_err < 1e-8 and f_err < 1e-8, (e_err, f_err)
    np.testing.assert_allclose(P["virial_cv"], virial, rtol=0,
                               atol=1e-8 * np.abs(virial).max())
    # the beads spread (it is PIMD) and potential is the bead average
    assert np.ptp(P["bead_potentials"][-1]) > 1e-6
    np.testing.assert_allclose(P["potential"], P["bead_potentials"].mean(axis=1), rtol=1e-12)


def _two_runs(tmp_path, calc, atoms, nb, steps, **kw):
    common = dict(nbeads=nb, steps=steps, timestep_fs=2.0, seed=4321, trajectory_stride=steps,
                  properties=("step", "potential{atomic_unit}", "kinetic_cv{atomic_unit}",
                              "conserved{atomic_unit}"), wall_timeout=120, **kw)
    a = run(atoms, calc, tmp_path / "batched", batch_size=nb, batched=True, **common)
    b = run(atoms, calc, tmp_path / "plain", batch_size=1, batched=False, **common)
    assert a.driver_stats.batch_sizes == {nb} and b.driver_stats.batch_sizes == {1}
    return a, b


def test_batched_and_unbatched_identical_trajectories_stateless(tmp_path):
    """A stateless per-structure calculator gives bitwise the same PIMD either way."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    calc = HarmonicOscillators(0.5, x0=atoms.positions.copy())
    atoms.rattle(0.05, seed=2)
    a, b = _two_runs(tmp_path, calc, atoms, 4, 20, pbc=False)
    for key in ("potential", "kinetic_cv", "conserved"):
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a.centroids[-1].positions, b.centroids[-1].positions)
    assert np.ptp(a["potential"]) > 1e-4            # it moved


def test_batched_and_unbatched_identical_trajectories_mlp(tmp_path, gan_calc, gan_atoms):
    """Batched model calls sum in another order (1e-15): trajectories agree to 1e-10."""
    a, b = _two_runs(tmp_path, gan_calc, gan_atoms, 8, 20)
    assert a.driver_stats.model_calls < b.driver_stats.model_calls
    for key in ("potential", "kinetic_cv", "conserved"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10)
    np.testing.assert_allclose(a.centroids[-1].positions, b.centroids[-1].positions,
                               rtol=0, atol=1e-9)
    assert np.ptp(a["potential"]) > 1e-4


def test_several_connections_batched_together(tmp_path, gan_calc, gan_atoms):
    """Plain protocol (batch_size 1), 4 connections from one driver: beads share calls."""
    res = run(gan_atoms, gan_calc, tmp_path, nbeads=4, steps=10, batch_size=1,
              connections=4, properties=("step", "potential{atomic_unit}"), wall_timeout=120)
    st = res.driver_stats
    assert st.batch_sizes == {1} and st.structures == 44      # 11 force evaluations x 4
    assert st.model_calls <= st.structures // 2
    np.testing.assert_array_equal(res["step"], np.arange(11))


class _Recording(Evaluator):
    """The driver's evaluator, keeping every request it is given."""

    def __call__(self, cells, positions):
        self.requests.append((cells.copy(), positions.copy()))
        return super().__call__(cells, positions)


def _served_run(tmp_path, calc, atoms, sock, start_ipi, components):
    """4-bead PIMD through a real i-PI, all beads in one message, the potential split into
    ``components`` equal force components on the same socket (each bead asked that many
    times per step)."""
    nb = 4
    tmp_path.mkdir()
    write(tmp_path / "init.extxyz", atoms)
    text = ipi_input("init.extxyz", address=sock, nbeads=nb, batch_size=nb * components,
                     steps=6, timestep_fs=1.0, seed=7, trajectory_stride=10**6,
                     properties=("step", "potential{atomic_unit}"))
    w = 1.0 / components
    forces = " ".join([f"<force forcefield='ase-mlp' weight='{w}'> </force>"] * components)
    text = text.replace("<force forcefield='ase-mlp'> </force>", forces)
    assert text.count("<force forcefield") == components
    (tmp_path / "input.xml").write_text(text)
    server = start_ipi(tmp_path)
    drv = IPIDriver(calc, atoms, unix=sock, connect_timeout=30)
    drv.evaluator = _Recording(calc, atoms)
    drv.evaluator.requests = []
    stats = drv.serve()
    assert server.wait(timeout=60) == 0
    return stats, drv.evaluator.requests, read_properties(tmp_path / "simulation.out")


def test_real_server_repeats_evaluated_once(tmp_path, gan_calc, gan_atoms, start_ipi):
    """i-PI asks for each bead twice per message (two force components of one socket,
    weights 1/2) and pads partial batches: every distinct structure of a message is computed
    once, and the dynamics equal those of the one-component run."""
    sock = f"amtr{uuid.uuid4().hex[:8]}"
    try:
        st, reqs, P2 = _served_run(tmp_path / "two", gan_calc, gan_atoms, sock, start_ipi, 2)
        _, _, P1 = _served_run(tmp_path / "one", gan_calc, gan_atoms, sock, start_ipi, 1)
    finally:
        if os.path.exists(f"/tmp/ipi_{sock}"):
            os.unlink(f"/tmp/ipi_{sock}")
    keys = [[(c.tobytes(), q.tobytes()) for c, q in zip(*r, strict=True)] for r in reqs]
    distinct = sum(len(set(k)) for k in keys)
    next_to_same = sum(1 + sum(a != b for a, b in zip(k, k[1:], strict=False)) for k in keys)
    assert st.structures == sum(len(k) for k in keys) == len(reqs) * 8
    assert st.evaluated == distinct
    assert distinct < next_to_same          # repeats that are not neighbours were present
    # 7 force evaluations of 4 beads (step 0: 4 copies of the start structure)
    assert distinct <= 1 + 6 * 4 + len(reqs)
    np.testing.assert_array_equal(P2["step"], np.arange(7))
    np.testing.assert_allclose(P2["potential"], P1["potential"], rtol=1e-10)
    assert np.ptp(P2["potential"]) > 1e-5


def _start_cli_driver(procs, sock, structure, tmp_path):
    with open(tmp_path / "driver.log", "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "ase_mlp.cli", "ipi-driver", "--unix", sock,
                              "--structure", str(structure), "--device", "cpu",
                              "--threads", "1"], stdout=fh, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def _write_input(tmp_path, gan_atoms, sock, **kw):
    write(tmp_path / "init.extxyz", gan_atoms)
    (tmp_path / "input.xml").write_text(ipi_input(
        "init.extxyz", address=sock, nbeads=4, timestep_fs=1.0, seed=99,
        properties=("step", "potential{atomic_unit}", "conserved{atomic_unit}"), **kw))


def test_server_killed_driver_exits_with_message(tmp_path, gan_atoms, sock_name, procs,
                                                 start_ipi):
    _write_input(tmp_path, gan_atoms, sock_name, steps=100000)
    server = start_ipi(tmp_path)
    drv = _start_cli_driver(procs, sock_name, tmp_path / "init.extxyz", tmp_path)
    _wait_for_rows(tmp_path / "simulation.out", 3, server)
    server.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    _, err = drv.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert drv.returncode == 1
    assert "ase-mlp ipi-driver: error:" in err and "closed the connection without EXIT" in err


def test_driver_killed_then_restart_continues(tmp_path, gan_calc, gan_atoms, sock_name, procs,
                                              start_ipi):
    """Kill the driver mid-run: i-PI stops with a RESTART; run(restart=True) continues the
    same trajectory (the steps redone after the checkpoint repeat the first run's values)."""
    _write_input(tmp_path, gan_atoms, sock_name, steps=40, checkpoint_stride=5,
                 exit_on_disconnect=True)
    server = start_ipi(tmp_path)
    drv = _start_cli_driver(procs, sock_name, tmp_path / "init.extxyz", tmp_path)
    _wait_for_rows(tmp_path / "simulation.out", 13, server)
    drv.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    try:       # exit_on_disconnect stops i-PI, unless the client died in the middle of a
        server.wait(timeout=5)    # batched message: i-PI 3.3.1's poll thread then dies
    except subprocess.TimeoutExpired:     # and only a signal stops it, as run() does
        server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    log = (tmp_path / "ipi.log").read_text()
    assert time.monotonic() - t0 < 40
    assert "Restartable as is: YES" in log and (tmp_path / "RESTART").is_file(), log[-2000:]
    first = read_properties(tmp_path / "simulation.out")
    last_done = int(first["step"][-1])
    assert 10 <= last_done < 40
    res = run(gan_atoms, gan_calc, tmp_path, restart=True, steps=None, wall_timeout=120)
    steps = res["step"]
    # the restarted run appends to simulation.out, from the last checkpoint (a multiple
    # of 5) on; the steps after it that the first run had done are done again
    n1 = len(first["step"])
    np.testing.assert_array_equal(steps[:n1], first["step"])
    chk = int(steps[n1]) - 1
    assert chk % 5 == 0 and chk <= last_done, (chk, last_done)
    np.testing.assert_array_equal(steps[n1:], np.arange(chk + 1, 41))
    redone = {int(s): v for s, v in zip(steps[n1:], res["potential"][n1:], strict=True)}
    for s, v in zip(first["step"], first["potential"], strict=True):
        if int(s) in redone:
            assert redone[int(s)] == pytest.approx(v, rel=1e-10), s


class _Flaky(EMT):
    """EMT that fails on its 25th call."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def calculate(self, *a, **kw):
        self.calls += 1
        if self.calls == 25:
            raise RuntimeError("simulated driver crash")
        super().calculate(*a, **kw)


def test_run_reports_a_dead_driver_and_stops_ipi(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    t0 = time.monotonic()
    with pytest.raises(IPIRunError, match="(?s)simulated driver crash.*restart=True"):
        run(atoms, _Flaky(), tmp_path, nbeads=2, steps=1000, checkpoint_stride=5,
            wall_timeout=120)
    assert time.monotonic() - t0 < 40
    assert (tmp_path / "RESTART").is_file()
    P = read_properties(tmp_path / "simulation.out")
    assert 5 <= P["step"][-1] < 20
