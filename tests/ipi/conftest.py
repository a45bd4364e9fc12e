"""Fixtures of the i-PI tests: unique socket names, process cleanup, a small GaN model.

Every subprocess started through ``procs`` is killed at the end of its test, and every
socket file named by ``sock_name`` is removed, whatever the outcome.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from ase.build import bulk


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def sock_name():
    """A unique, short unix socket name (i-PI's default prefix /tmp/ipi_)."""
    name = f"amt{os.getpid() % 10000}{uuid.uuid4().hex[:8]}"
    yield name
    path = f"/tmp/ipi_{name}"
    if os.path.exists(path):
        os.unlink(path)


@pytest.fixture
def procs():
    """A list to register subprocesses in; they are killed after the test."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


@pytest.fixture(scope="session")
def gan_calc():
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.cli import default_model_path

    return MLPCalculator.from_file(default_model_path(), device="cpu")


@pytest.fixture
def gan_atoms():
    """32-atom wurtzite GaN, rattled."""
    atoms = bulk("GaN", "wurtzite", a=3.19, c=5.19).repeat((2, 2, 2))
    atoms.rattle(0.03, seed=3)
    return atoms


@pytest.fixture
def start_ipi(procs):
    """``start_ipi(workdir, input_name="input.xml")``: i-PI in ``workdir``, log ``ipi.log``."""
    from ase_mlp.ipi.workflow import ipi_script

    def _start(workdir, input_name="input.xml") -> subprocess.Popen:
        with open(workdir / "ipi.log", "a") as fh:
            p = subprocess.Popen([sys.executable, ipi_script(), input_name], cwd=workdir,
                                 stdout=fh, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    return _start
