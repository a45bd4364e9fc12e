"""``run``: a local i-PI server plus our driver, for (PI)MD from Python in one call.

i-PI runs as a subprocess in ``workdir``; the driver runs in a thread of this process
(any ASE calculator) or as an ``ase-mlp ipi-driver`` subprocess (model files). If either
side dies, the other is stopped, i-PI writes its RESTART file, and a clear error is raised;
``run(..., restart=True)`` continues from that file.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ase.io import write

from ase_mlp.ipi.driver import IPIDriver
from ase_mlp.ipi.inputs import ipi_input
from ase_mlp.ipi.outputs import read_extxyz_trajectory, read_properties
from ase_mlp.ipi.protocol import unix_path


class IPIRunError(RuntimeError):
    """i-PI or the driver stopped before the run was complete."""


@dataclass
class IPIRun:
    """Outputs of :func:`run`.

    ``properties`` maps i-PI property names (with units, and bare names) to arrays:
    ``potential``, ``kinetic_cv`` (centroid-virial quantum kinetic energy), ``kinetic_td``
    (primitive estimator), ``temperature``, ``conserved`` ... ``centroids`` are the
    centroid frames (``x_centroid``, Å) as ``ase.Atoms`` with ``info['step']``, ready for
    :mod:`ase_mlp.analysis`.
    """

    workdir: pathlib.Path
    properties: dict
    centroids: list
    driver_stats: object = None
    wall_s: float = 0.0
    files: dict = field(default_factory=dict)

    def __getitem__(self, key):
        return self.properties[key]


def ipi_script() -> str:
    """Path of i-PI's ``i-pi`` launcher script (beside this Python, or on ``PATH``)."""
    here = pathlib.Path(sys.executable).with_name("i-pi")
    found = str(here) if here.is_file() else shutil.which("i-pi")
    if not found:
        raise FileNotFoundError("i-PI is not installed (pip install 'ase-mlp[ipi]')")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _restart_socket(restart: pathlib.Path, steps):
    """Socket settings of a RESTART file; optionally move its ``total_steps``."""
    text = restart.read_text()
    root = ET.fromstring(text)
    ff = root.find("ffsocket")
    if ff is None:
        raise IPIRunError(f"{restart}: no <ffsocket> in the RESTART file")
    mode = ff.get("mode", "unix").strip()
    address = ff.findtext("address", "localhost").strip()
    port = int(ff.findtext("port", "31415").strip())
    prefix = root.get("sockets_prefix", "/tmp/ipi_").strip()
    if steps is not None:
        step = int(root.findtext("step", "0").strip())
        text = re.sub(r"<total_steps>\s*\d+\s*</total_steps>",
                      f"<total_steps>{step + int(steps)}</total_steps>", text, count=1)
        restart.write_text(text)
    return mode, address, port, prefix


def _stop(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)      # i-PI: soft exit, writes RESTART
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _tail(path: pathlib.Path, n: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run(atoms, calc=None, workdir=".", *, model=None, nbeads: int = 8,
        temperature_K: float = 300.0, steps: int | None = 1000, timestep_fs: float = 0.5,
        thermostat: str = "pile_l", socket_mode: str = "unix", port: int | None = None,
        connections: int = 1, batched: bool = True, driver: str = "thread",
        device: str | None = None, threads: int | None = None, restart: bool = False,
        wall_timeout: float | None = None,
        exit_on_disconnect: bool = True, log=None, **input_kwargs) -> IPIRun:
    """Run i-PI (PI)MD with our driver and return the parsed outputs.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure (written to ``workdir/init.extxyz``); its symbols tell the driver
        the atom names.
    calc : Calculator, optional
        For ``driver="thread"``: any ASE calculator (``MLPCalculator`` batches beads).
    workdir : path
        Where i-PI runs and writes ``simulation.*``, ``RESTART``, ``ipi.log``.
    model : list of paths, optional
        For ``driver="process"``: model file(s) for ``ase-mlp ipi-driver``.
    device, threads : for ``driver="process"``: torch device and CPU threads of the
        driver process. On a small CPU keep ``threads`` + 1 (i-PI's polling thread)
        within the cores: oversubscribed torch threads slow a step down many times.
    nbeads, temperature_K, steps, timestep_fs, thermostat
        The run (see :func:`ase_mlp.ipi.inputs.ipi_input` for the thermostats and the
        further keywords, e.g. ``tau_fs``, ``gle_A``, ``fixcom``, ``batch_size``).
        With ``restart=True``, ``steps`` are further steps (``None``: finish the
        RESTART file's ``total_steps``).
    socket_mode : ``"unix"`` or ``"inet"`` (TCP on 127.0.0.1, ``port`` or a free one).
    connections : int
        Driver connections (one process; beads of all connections batched together).
    batched : bool
        One model call for all waiting beads (``False``: one call per structure).
    restart : bool
        Continue from ``workdir/RESTART`` (written when a run stops early or ends).
    wall_timeout : float, optional
        Stop everything (and raise) after this many seconds.
    exit_on_disconnect : bool
        i-PI stops when the driver disconnects (default), writing RESTART.

    Raises
    ------
    IPIRunError
        i-PI failed, or the driver stopped before i-PI finished (the message says why
        and where i-PI's log and RESTART file are).
    """
    say = log or (lambda msg: None)
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if driver not in ("thread", "process"):
        raise ValueError(f"driver must be 'thread' or 'process', got {driver!r}")
    if driver == "thread" and calc is None:
        raise ValueError("driver='thread' needs a calculator (calc=...)")
    if driver == "process" and not model:
        raise ValueError("driver='process' needs model file(s) (model=[...])")
    structure = workdir / "init.extxyz"
    if restart:
        input_file = workdir / "RESTART"
        if not input_file.is_file():
            raise FileNotFoundError(f"{input_file}: nothing to restart from")
        mode, address, port, prefix = _restart_socket(input_file, steps)
        if not structure.is_file():
            write(structure, atoms, format="extxyz")
    else:
        write(structure, atoms, format="extxyz")
        for old in [*workdir.glob("simulation.*"), workdir / "RESTART"]:
            if old.exists():
                old.unlink()            # a fresh run: no stale outputs or RESTART
        mode = socket_mode
        prefix = input_kwargs.pop("sockets_prefix", "/tmp/ipi_")
        address = f"amlp{os.getpid() % 100000}{uuid.uuid4().hex[:8]}"
        if mode == "inet":
            port = port or free_port()
            address = "127.0.0.1"
        input_file = workdir / "input.xml"
        input_file.write_text(ipi_input(
            structure.name, address=address, mode=mode, port=port or 31415, host=address,
            nbeads=nbeads, temperature_K=temperature_K, steps=1000 if steps is None else steps,
            timestep_fs=timestep_fs, thermostat=thermostat, sockets_prefix=prefix,
            exit_on_disconnect=exit_on_disconnect, **input_kwargs))
    sock_file = unix_path(address, prefix) if mode == "unix" else None
    if sock_file and os.path.exists(sock_file):
        os.unlink(sock_file)                # stale file of a killed server
    where = dict(unix=address) if mode == "unix" else dict(inet=f"{address}:{port}")

    t0 = time.monotonic()
    ipi_log = workdir / "ipi.log"
    with open(ipi_log, "a") as fh:
        server = subprocess.Popen([sys.executable, ipi_script(), input_file.name],
                                  cwd=workdir, stdout=fh, stderr=subprocess.STDOUT)
    say(f"i-PI started in {workdir} ({mode} socket {address})")
    state: dict = {}
    drv = proc = None
    try:
        if driver == "thread":
            drv = IPIDriver(calc, atoms, connections=connections, batched=batched,
                            sockets_prefix=prefix, connect_timeout=60.0, **where)

            def _serve():
                try:
                    state["stats"] = drv.serve()
                except BaseException as err:  # reported by the main thread
                    state["error"] = err

            thread = threading.Thread(target=_serve, name="ase-mlp-ipi-driver", daemon=True)
            thread.start()
            alive = thread.is_alive
        else:
            cmd = [sys.executable, "-m", "ase_mlp.cli", "ipi-driver", "--model",
                   *[str(m) for m in model], "--structure", str(structure),
                   "--connections", str(connections), "--sockets-prefix", prefix, "--quiet"]
            cmd += ["--unix", address] if mode == "unix" else ["--inet", f"{address}:{port}"]
            cmd += [] if batched else ["--unbatched"]
            cmd += ["--device", device] if device else []
            cmd += ["--threads", str(threads)] if threads else []
            with open(workdir / "driver.log", "a") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
            state["pid"] = proc.pid
            alive = lambda: proc.poll() is None  # noqa: E731
        while True:
            time.sleep(0.05)
            if server.poll() is not None:
                break
            if not alive() and ("stats" in state or (proc is not None and
                                                     proc.returncode == 0)):
                # the driver got EXIT: i-PI is writing its last files
                try:
                    server.wait(timeout=60.0)
                except subprocess.TimeoutExpired:
                    pass
                break
            if not alive():
                # the driver is gone: i-PI stops by itself with exit_on_disconnect,
                # otherwise it would wait for clients forever
                _stop(server, grace=30.0 if exit_on_disconnect else 15.0)
                why = state.get("error") or _tail(workdir / "driver.log", 5) or \
                    f"exit code {proc.returncode if proc else '?'}"
                raise IPIRunError(
                    f"the driver stopped before i-PI finished: {why!s}\n"
                    f"i-PI was stopped; its log is {ipi_log}; continue with "
                    f"run(..., restart=True) from {workdir / 'RESTART'}")
            if wall_timeout is not None and time.monotonic() - t0 > wall_timeout:
                raise IPIRunError(f"wall_timeout of {wall_timeout:g} s exceeded; i-PI was "
                                  f"stopped, see {ipi_log}")
        if server.returncode != 0:
            raise IPIRunError(f"i-PI exited with code {server.returncode}; the end of "
                              f"{ipi_log}:\n{_tail(ipi_log)}")
        if driver == "thread":
            thread.join(timeout=30.0)
            if "error" in state:
                raise IPIRunError(f"driver error: {state['error']}") from state["error"]
        else:
            proc.wait(timeout=30.0)
    finally:
        _stop(server, grace=30.0)
        if drv is not None:
            drv.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if sock_file and os.path.exists(sock_file):
            os.unlink(sock_file)
    wall = time.monotonic() - t0
    props = read_properties(workdir / "simulation.out")
    xc = workdir / "simulation.xc.extxyz"
    centroids = read_extxyz_trajectory(xc) if xc.is_file() and xc.stat().st_size else []
    say(f"i-PI run done in {wall:.1f} s")
    return IPIRun(workdir=workdir, properties=props, centroids=centroids,
                  driver_stats=state.get("stats"), wall_s=wall,
                  files={"input": input_file, "log": ipi_log,
                         "restart": workdir / "RESTART", "properties":
                         workdir / "simulation.out", "centroids": xc})
