"""ase_mlp.dynamics: integrators no other ASE package ships.

* :class:`~ase_mlp.dynamics.qtb.QTB`: quantum thermal bath and adaptive QTB (NVT, NPT).
"""

from ase_mlp.dynamics.qtb import QTB, deconvolve_theta, qtb_filter


__all__ = ["QTB", "deconvolve_theta", "qtb_filter"]
