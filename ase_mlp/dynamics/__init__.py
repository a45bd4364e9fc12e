"""ase_mlp.dynamics: integrators no other ASE package ships.

* :class:`~ase_mlp.dynamics.qtb.QTB`: quantum thermal bath and adaptive QTB (NVT, NPT).
* :func:`~ase_mlp.dynamics.estimators.energy_temperature`: ``E / (3 N k_B)`` curves.
"""

from ase_mlp.dynamics.estimators import energy_temperature
from ase_mlp.dynamics.qtb import QTB, deconvolve_theta, qtb_filter


__all__ = ["QTB", "deconvolve_theta", "energy_temperature", "qtb_filter"]
