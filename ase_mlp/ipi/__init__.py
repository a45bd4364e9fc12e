"""i-PI coupling: a batched socket driver, i-PI input templates and a run helper.

* :class:`IPIDriver`: i-PI socket client (unix or TCP, plain or batched protocol) for any
  ase_mlp model (all beads in one model call) or any ASE calculator;
* ``ase-mlp ipi-driver``: the same from the command line;
* :func:`run`: a local i-PI server plus the driver, returning parsed outputs;
* :func:`ipi_input`: input templates (PILE-L/G, SVR, Langevin, GLE, PIGLET);
* :mod:`ase_mlp.ipi.pes`: a PES module for i-PI's own ``i-pi-driver-py -m custom``.

See ``docs/ipi.md``.
"""

from ase_mlp.ipi.driver import DriverStats, IPIDriver, parse_address
from ase_mlp.ipi.evaluate import AtomsMismatch, Evaluator
from ase_mlp.ipi.inputs import ipi_input
from ase_mlp.ipi.outputs import read_extxyz_trajectory, read_properties
from ase_mlp.ipi.protocol import IPIProtocolError, IPITimeout, ServerDisconnected
from ase_mlp.ipi.workflow import IPIRun, IPIRunError, run


__all__ = ["AtomsMismatch", "DriverStats", "Evaluator", "IPIDriver", "IPIProtocolError", "IPIRun",
           "IPIRunError", "IPITimeout", "ServerDisconnected", "ipi_input", "parse_address",
           "read_extxyz_trajectory", "read_properties", "run"]
