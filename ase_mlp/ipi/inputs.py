"""i-PI input templates: NVT (PI)MD with PILE-L/G, SVR, Langevin, GLE or PIGLET thermostats.

:func:`ipi_input` writes the ``input.xml`` that :func:`ase_mlp.ipi.run` starts i-PI with.
Units in the XML are explicit (femtosecond, kelvin, electronvolt, ångström); GLE and
PIGLET matrices are taken as generated for i-PI by the GLE4MD input generator
(https://gle4md.org): ``A`` in atomic units of frequency, ``C`` in kelvin.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np
from ase import units


THERMOSTATS = ("pile_l", "pile_g", "svr", "langevin", "gle", "piglet", "piglet_g", "nve")

#: the properties written by default (``simulation.out``)
DEFAULT_PROPERTIES = (
    "step", "time{picosecond}", "conserved{electronvolt}", "temperature{kelvin}",
    "kinetic_md{electronvolt}", "kinetic_cv{electronvolt}", "kinetic_td{electronvolt}",
    "potential{electronvolt}", "pressure_cv{gigapascal}")

AU_TIME_FS = units._aut * 1e15     # atomic unit of time in fs (ASE's CODATA)


def white_noise_gle(tau_fs: float) -> np.ndarray:
    """The 1x1 GLE drift matrix of plain Langevin friction ``1/tau`` (atomic units).

    A valid (Markovian) GLE; real GLE/PIGLET matrices come from https://gle4md.org.
    """
    if not tau_fs > 0:
        raise ValueError(f"tau_fs must be > 0, got {tau_fs}")
    return np.array([[AU_TIME_FS / float(tau_fs)]])


def _matrix(tag: str, m, unit: str) -> str:
    m = np.asarray(m, dtype=float)
    body = ", ".join(f"{x:.17g}" for x in m.ravel())
    shape = "(" + ",".join(str(s) for s in m.shape) + ")"
    unit_attr = f" units='{unit}'" if unit else ""
    return f"<{tag} shape='{shape}'{unit_attr}> [ {body} ] </{tag}>"


def _thermostat(thermostat: str, tau_fs: float, pile_lambda: float, gle_A, gle_C,
                nbeads: int) -> str:
    if thermostat in ("pile_l", "pile_g"):
        return (f"<thermostat mode='{thermostat}'> <tau units='femtosecond'> {tau_fs:.17g} "
                f"</tau> <pile_lambda> {pile_lambda:.17g} </pile_lambda> </thermostat>")
    if thermostat in ("svr", "langevin"):
        return (f"<thermostat mode='{thermostat}'> <tau units='femtosecond'> {tau_fs:.17g} "
                "</tau> </thermostat>")
    if thermostat in ("gle", "piglet", "piglet_g"):
        if gle_A is None:
            raise ValueError(f"the {thermostat} thermostat needs its drift matrix gle_A "
                             "(atomic units; generate it at https://gle4md.org)")
        A = np.asarray(gle_A, dtype=float)
        mode = {"gle": "gle", "piglet": "nm_gle", "piglet_g": "nm_gle_g"}[thermostat]
        if thermostat != "gle" and (A.ndim != 3 or A.shape[0] != nbeads):
            raise ValueError(f"{thermostat} needs one matrix per normal mode: gle_A of shape "
                             f"({nbeads}, n, n), got {A.shape}")
        if thermostat == "gle" and A.ndim != 2:
            raise ValueError(f"gle needs a square gle_A, got shape {A.shape}")
        parts = [_matrix("A", A, "")]
        if gle_C is not None:
            parts.append(_matrix("C", gle_C, "kelvin"))
        extra = ""
        if thermostat == "piglet_g":
            extra = f" <tau units='femtosecond'> {tau_fs:.17g} </tau>"
        return f"<thermostat mode='{mode}'> {' '.join(parts)}{extra} </thermostat>"
    raise ValueError(f"unknown thermostat {thermostat!r}; choose from {THERMOSTATS}")


def ipi_input(structure: str, *, address: str = "ase-mlp", mode: str = "unix",
              port: int = 31415, host: str = "localhost", nbeads: int = 8,
              temperature_K: float = 300.0, timestep_fs: float = 0.5, steps: int = 1000,
              thermostat: str = "pile_l", tau_fs: float = 100.0, pile_lambda: float = 0.5,
              gle_A=None, gle_C=None, batch_size: int | None = None, seed: int = 31415,
              prefix: str = "simulation", properties=DEFAULT_PROPERTIES,
              properties_stride: int = 1, trajectory_stride: int = 10,
              checkpoint_stride: int = 100, fixcom: bool = True, pbc: bool = True,
              latency: float = 1e-4, timeout: float = 0.0, exit_on_disconnect: bool = False,
              velocities_K: float | None = None, sockets_prefix: str = "/tmp/ipi_",
              floatformat: str = "%.16e", extra_outputs=(), verbosity: str = "low") -> str:
    """The text of an i-PI ``input.xml`` for NVT (path-integral) MD over a socket.

    Parameters
    ----------
    structure : str
        Start structure file that i-PI reads through ASE (``mode='ase'``, e.g. extxyz).
    address, mode, port, host : socket of the ``<ffsocket>``: unix socket name, or
        ``mode='inet'`` with ``host``/``port``.
    nbeads : int
        Beads of the ring polymer (1: classical MD).
    thermostat : str
        ``pile_l`` (default), ``pile_g``, ``svr``, ``langevin``, ``gle`` (one matrix
        ``gle_A`` ``(n, n)``), ``piglet`` (i-PI ``nm_gle``, one matrix per normal mode,
        ``gle_A`` and ``gle_C`` of shape ``(nbeads, n, n)``), ``piglet_g``
        (``nm_gle_g``: PIGLET with a global centroid thermostat of time ``tau_fs``), or
        ``nve``.
    batch_size : int, optional
        i-PI's ``<batch_size>``: structures per socket message (default ``nbeads``;
        1 is the plain protocol).
    fixcom : bool
        Remove the centre-of-mass motion (i-PI's default). Use ``False`` for one particle
        or a small isolated molecule, where the centroid carries real energy.
    pbc : bool
        Let i-PI fold positions into the cell before sending them.
    timeout : float
        i-PI drops a client that takes longer than this (s); 0: never.
    exit_on_disconnect : bool
        i-PI stops (writing its RESTART file) when a client disconnects.
    velocities_K : float, optional
        Initial Maxwell-Boltzmann temperature (default ``temperature_K``).
    floatformat : str
        Number format of i-PI's text outputs and RESTART file (full precision default).
    extra_outputs : sequence of str
        Further ``<trajectory>``/``<properties>`` elements (raw XML).
    """
    if nbeads < 1 or steps < 0:
        raise ValueError(f"need nbeads >= 1 and steps >= 0, got {nbeads}, {steps}")
    if mode not in ("unix", "inet"):
        raise ValueError(f"mode must be 'unix' or 'inet', got {mode!r}")
    batch = nbeads if batch_size is None else int(batch_size)
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    if thermostat == "nve":
        dyn = "<dynamics mode='nve'>"
        thermo = ""
    else:
        dyn = "<dynamics mode='nvt'>"
        thermo = _thermostat(thermostat, tau_fs, pile_lambda, gle_A, gle_C, nbeads)
    vel = temperature_K if velocities_K is None else velocities_K
    props = ", ".join(properties)
    sock_addr = escape(address) if mode == "unix" else escape(host)
    port_xml = f"<port> {int(port)} </port>" if mode == "inet" else ""
    batch_xml = f"<batch_size> {batch} </batch_size>" if batch > 1 else ""
    outputs = "\n    ".join(extra_outputs)
    return f"""<simulation verbosity='{verbosity}' safe_stride='{max(1, checkpoint_stride)}' \
floatformat='{floatformat}' sockets_prefix='{escape(sockets_prefix)}'>
  <output prefix='{escape(prefix)}'>
    <properties stride='{properties_stride}' filename='out'> [ {props} ] </properties>
    <trajectory filename='xc' stride='{trajectory_stride}' format='ase'> \
x_centroid </trajectory>
    <checkpoint stride='{checkpoint_stride}' filename='chk' overwrite='true'/>
    {outputs}
  </output>
  <total_steps> {int(steps)} </total_steps>
  <prng> <seed> {int(seed)} </seed> </prng>
  <ffsocket name='ase-mlp' mode='{mode}' pbc='{str(bool(pbc)).lower()}'>
    <address> {sock_addr} </address> {port_xml}
    <latency> {latency:.6g} </latency> <timeout> {timeout:.6g} </timeout>
    <exit_on_disconnect> {bool(exit_on_disconnect)} </exit_on_disconnect>
    {batch_xml}
  </ffsocket>
  <system>
    <initialize nbeads='{int(nbeads)}'>
      <file mode='ase'> {escape(str(structure))} </file>
      <velocities mode='thermal' units='kelvin'> {vel:.17g} </velocities>
    </initialize>
    <forces> <force forcefield='ase-mlp'> </force> </forces>
    <motion mode='dynamics'>
      <fixcom> {bool(fixcom)} </fixcom>
      {dyn}
        <timestep units='femtosecond'> {timestep_fs:.17g} </timestep>
        {thermo}
      </dynamics>
    </motion>
    <ensemble> <temperature units='kelvin'> {temperature_K:.17g} </temperature> </ensemble>
  </system>
</simulation>
"""
